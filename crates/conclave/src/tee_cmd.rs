//! `conclave tee`: the workload side of attestation, for scripts and for checking a platform.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use conclave_attest::api::{AttestSevSnpVmRequest, attest, report_data_for};
use conclave_tee::Platform;
use conclave_tee::ephemeral::EphemeralKey;

#[derive(Subcommand)]
pub enum TeeCommand {
    /// Get evidence from this TEE, with a fresh ephemeral key in the runtime data, and exchange
    /// it for an attestation token. Prints the token.
    Attest {
        /// sim, snp or azure-vtpm.
        #[arg(long, default_value = "sim")]
        platform: Platform,
        /// Base URL of the attestation service.
        #[arg(long)]
        attestation_url: String,
        /// Nonce to include in the token.
        #[arg(long)]
        nonce: Option<String>,
        /// Write the token here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// CA certificate to trust for the attestation service's TLS.
        #[arg(long, env = "CONCLAVE_CA")]
        ca: Option<PathBuf>,
    },
    /// Get evidence binding the given runtime data and write it as an attestation request
    /// (`POST /attest/SevSnpVm` body), for clients that hold their own TEE key.
    Evidence {
        #[arg(long, default_value = "sim")]
        platform: Platform,
        /// The runtime data (JSON) the report must bind.
        #[arg(long)]
        runtime_data: PathBuf,
        #[arg(long)]
        nonce: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
}

pub async fn run(cmd: TeeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TeeCommand::Evidence {
            platform,
            runtime_data,
            nonce,
            out,
        } => {
            let runtime = std::fs::read(&runtime_data)
                .with_context(|| format!("reading {}", runtime_data.display()))?;
            serde_json::from_slice::<serde_json::Value>(&runtime)
                .context("the runtime data must be JSON")?;
            let evidence = conclave_tee::source(platform)?
                .evidence(report_data_for(&runtime))
                .await?;
            let request = AttestSevSnpVmRequest::new(&evidence, &runtime, nonce);
            std::fs::write(&out, serde_json::to_vec(&request)?)
                .with_context(|| format!("writing {}", out.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        TeeCommand::Attest {
            platform,
            attestation_url,
            nonce,
            out,
            ca,
        } => {
            let source = conclave_tee::source(platform)?;
            let key = EphemeralKey::generate()?;
            let runtime = key.runtime_json();
            let evidence = source.evidence(report_data_for(&runtime)).await?;
            let request = AttestSevSnpVmRequest::new(&evidence, &runtime, nonce);
            let token = attest(
                &conclave_net::client(ca.as_deref())?,
                &attestation_url,
                &request,
            )
            .await?;
            match out {
                Some(path) => std::fs::write(&path, &token)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{token}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
