//! `conclave party serve` (the party workload) and `conclave party verify-endpoint`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use conclave_attest::verify::TokenVerifier;
use conclave_tee::Platform;
use conclave_workload::config::PartyConfig;

#[derive(Subcommand)]
pub enum PartyCommand {
    /// Run a party's workload: attest, have its vaults release dataset keys, serve its page and
    /// API. Under the sim host the config comes from the (measured) launch config.
    Serve {
        /// The party config (party.toml).
        #[arg(
            long,
            env = "CONCLAVE_LAUNCH_CONFIG",
            required_unless_present = "config_toml"
        )]
        config: Option<PathBuf>,
        /// The party config's text instead of a file: for confidential containers, whose
        /// security policy pins environment variables (so this config is part of what the
        /// release policy pins) but not the contents of mounted files.
        #[arg(
            long,
            env = "CONCLAVE_PARTY_CONFIG_TOML",
            conflicts_with = "config",
            hide_env_values = true
        )]
        config_toml: Option<String>,
        /// The TEE to get evidence from: sim, snp, azure-vtpm, or none (no TEE: nothing is
        /// attested, every release is refused).
        #[arg(long, default_value = "sim")]
        tee: String,
    },
    /// Check from outside that a workload URL is served by the attested workload: its TLS key
    /// must be the one its attestation token (verified against the attestation service's keys)
    /// names. Prints the pin to use with pinned clients, and the attested facts.
    VerifyEndpoint {
        /// The workload's base URL (https://host:port).
        url: String,
        #[command(flatten)]
        attested_by: AttestedBy,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Who must have attested what is checked: the attestation service's keys, its issuer, the
/// workload's measurement (`party verify-endpoint`, `receipt verify`).
#[derive(clap::Args)]
pub struct AttestedBy {
    /// The attestation service's JWKS: a file, or an https:// URL (`<service>/certs`).
    #[arg(long)]
    pub jwks: String,
    /// Require tokens from this issuer.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Require this launch measurement (hex).
    #[arg(long)]
    pub expect_measurement: Option<String>,
    /// CA certificate to trust when fetching the JWKS over TLS (only for that: a workload's
    /// certificate is trusted through its attestation).
    #[arg(long, env = "CONCLAVE_CA")]
    pub ca: Option<PathBuf>,
}

impl AttestedBy {
    /// The verifier of attestation tokens these arguments describe.
    pub fn verifier(&self) -> anyhow::Result<TokenVerifier> {
        token_verifier(&self.jwks, self.issuer.as_deref(), self.ca.as_deref())
    }
}

fn token_verifier(
    jwks: &str,
    issuer: Option<&str>,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<TokenVerifier> {
    Ok(
        if jwks.starts_with("https://") || jwks.starts_with("http://") {
            let v = TokenVerifier::for_jwks_url(jwks, conclave_net::client(ca)?);
            match issuer {
                Some(i) => v.with_issuer(i),
                None => v,
            }
        } else {
            let text = std::fs::read(jwks).with_context(|| format!("reading {jwks}"))?;
            let set =
                serde_json::from_slice(&text).with_context(|| format!("{jwks} is not a JWKS"))?;
            TokenVerifier::with_jwks(issuer.map(str::to_string), &set)
        },
    )
}

async fn verify_endpoint(
    url: &str,
    verifier: &TokenVerifier,
    expect_measurement: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let verified = match conclave_workload::endpoint::verify_endpoint(url, verifier).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("endpoint REFUSED: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let measurement = verified.measurement().unwrap_or_default().to_string();
    if let Some(want) = expect_measurement
        && !want.eq_ignore_ascii_case(&measurement)
    {
        eprintln!("endpoint REFUSED: it runs measurement {measurement}, expected {want}");
        return Ok(ExitCode::FAILURE);
    }
    let simulated = verified.platform() == Some("sim");
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "url": verified.url,
                "pin_sha256": verified.pin_sha256,
                "platform": verified.platform(),
                "simulated": simulated,
                "measurement": measurement,
                "measurement_checked": expect_measurement.is_some(),
                "issuer": verified.token.issuer(),
                "claims": verified.token.claims,
            }))?
        );
    } else {
        println!("endpoint OK: {} is the attested workload", verified.url);
        println!(
            "  platform:     {}{}",
            verified.platform().unwrap_or("?"),
            if simulated {
                " (SIMULATED: no hardware protection)"
            } else {
                ""
            }
        );
        println!(
            "  measurement:  {measurement}{}",
            if expect_measurement.is_some() {
                " (as expected)"
            } else {
                " (NOT checked: any attested workload passes; give --expect-measurement)"
            }
        );
        println!("  attested by:  {}", verified.token.issuer());
        println!("  TLS key pin:  pin-sha256 {}", verified.pin_sha256);
        println!(
            "  (pinned clients: curl --pinnedpubkey sha256//{} -k …)",
            verified.pin_sha256
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_party(cmd: PartyCommand) -> anyhow::Result<ExitCode> {
    let (config, config_toml, tee) = match cmd {
        PartyCommand::Serve {
            config,
            config_toml,
            tee,
        } => (config, config_toml, tee),
        PartyCommand::VerifyEndpoint {
            url,
            attested_by,
            json,
        } => {
            let verifier = attested_by.verifier()?;
            let expect = attested_by.expect_measurement.as_deref();
            return verify_endpoint(&url, &verifier, expect, json).await;
        }
    };
    let platform = match tee.as_str() {
        "none" => None,
        other => Some(other.parse::<Platform>().map_err(anyhow::Error::msg)?),
    };
    let config = match (config, config_toml) {
        (Some(path), _) => PartyConfig::load(&path)?,
        (None, Some(text)) => PartyConfig::parse(&text).map_err(|detail| {
            anyhow::anyhow!("the party config in CONCLAVE_PARTY_CONFIG_TOML is invalid: {detail}")
        })?,
        (None, None) => bail!("give the party config with --config or CONCLAVE_PARTY_CONFIG_TOML"),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: change `listen` in the party config",
                config.listen
            )
        })?;
    tracing::info!(
        party = %config.display_name,
        url = %format!("https://{}", config.listen),
        tee = match platform {
            None => "NONE: nothing will be released to it",
            Some(Platform::Sim) => "SIMULATED SEV-SNP: no hardware protection",
            Some(_) => "hardware",
        },
        "workload listening"
    );
    conclave_workload::serve(config, platform, listener, crate::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
