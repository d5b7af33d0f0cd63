//! `conclave attest`: run the attestation service; verify tokens and raw evidence offline.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use conclave_attest::keys::KeyRing;
use conclave_attest::service::{AttestationService, ServiceConfig, serve};
use conclave_attest::{AppraisalPolicy, PlatformName, TokenVerifier};
use conclave_snp::{
    AttestationReport, Cert, CertChain, RootKind, SIM_PRODUCT, TcbParts, TrustedRoot, TrustedRoots,
    verify_report,
};

#[derive(Subcommand)]
pub enum AttestCommand {
    /// Print the OpenAPI 3.1 description of the attestation service's HTTP API (JSON).
    Openapi,
    /// Run the attestation service (MAA-compatible `POST /attest/SevSnpVm`).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8400")]
        listen: SocketAddr,
        /// Where the token-signing keys live (`<dir>/token-keys`).
        #[arg(long, env = "CONCLAVE_ATTEST_STATE")]
        state_dir: PathBuf,
        /// Issuer URL put in tokens (default: http://<listen>).
        #[arg(long)]
        issuer: Option<String>,
        /// Also trust a simulated platform's root: its platform directory or its ark.pem.
        /// Tokens for its evidence say `x-conclave-platform: sim`.
        #[arg(long)]
        sim_root: Vec<PathBuf>,
        /// Platforms to accept (default: snp and azure-vtpm, plus sim when --sim-root is given).
        #[arg(long, value_delimiter = ',')]
        allow_platform: Vec<conclave_tee::Platform>,
        /// Accept guests launched with the debug policy bit.
        #[arg(long)]
        allow_debug: bool,
        /// Minimum reported TCB, e.g. `bootloader=3,tee=0,snp=8,microcode=115`.
        #[arg(long)]
        min_tcb: Option<String>,
        /// Token lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        token_lifetime: u64,
        /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Private key (PKCS#8, DER or PEM) for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve HTTPS with a certificate from this local CA directory (created if missing).
        #[arg(long, conflicts_with = "tls_cert")]
        ca_dir: Option<PathBuf>,
        /// AMD KDS responses on disk (filled by `conclave attest kds fetch`): the VCEK for
        /// evidence that carries none, and AMD's CRLs, checked for every report.
        #[arg(long)]
        kds_cache: Option<PathBuf>,
    },
    /// Make a new token-signing key; the old one stays published until its tokens expire. A
    /// running service picks the new key up by itself.
    RotateKey {
        #[arg(long, env = "CONCLAVE_ATTEST_STATE")]
        state_dir: PathBuf,
    },
    /// Verify tokens offline.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Verify raw SEV-SNP evidence offline.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// AMD's Key Distribution Service: fill an offline cache of its certificates and CRLs.
    #[command(subcommand)]
    Kds(KdsCommand),
}

#[derive(Subcommand)]
pub enum KdsCommand {
    /// Fetch what verifying a report needs from AMD KDS (or a mirror) into a cache directory:
    /// the VCEK for the report's chip and TCB (not for VLEK reports: the cloud provider hands
    /// those out), the ASK/ASVK + ARK chain and the CRL of its product.
    Fetch {
        /// The raw 1184-byte report (or an HCL report with --hcl).
        #[arg(long)]
        report: PathBuf,
        /// The report is an Azure HCL report.
        #[arg(long)]
        hcl: bool,
        /// The cache directory (created if missing).
        #[arg(long)]
        cache: PathBuf,
        /// KDS base URL: AMD's, or a mirror serving the same paths.
        #[arg(long, default_value = conclave_snp::kds::AMD_KDS_URL)]
        url: String,
        /// The product (Milan, Genoa, Turin), for a version 2 report that does not say.
        #[arg(long)]
        product: Option<ProductArg>,
        /// Also trust this CA certificate (PEM) for HTTPS to a mirror.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
}

/// An AMD EPYC generation, as named on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProductArg {
    Milan,
    Genoa,
    Turin,
}

impl From<ProductArg> for conclave_snp::Product {
    fn from(p: ProductArg) -> Self {
        match p {
            ProductArg::Milan => conclave_snp::Product::Milan,
            ProductArg::Genoa => conclave_snp::Product::Genoa,
            ProductArg::Turin => conclave_snp::Product::Turin,
        }
    }
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Verify a token's signature, lifetime and issuer, and print its claims.
    Verify {
        /// The token, `@file`, or `-` for stdin.
        token: String,
        /// JWKS: a URL (e.g. http://127.0.0.1:8400/certs) or a file.
        #[arg(long, required_unless_present = "issuer")]
        jwks: Option<String>,
        /// Expected issuer; without --jwks, its keys are found through OpenID discovery.
        #[arg(long)]
        issuer: Option<String>,
        /// Also trust this CA certificate (PEM) for HTTPS to the issuer: e.g. the `ca.pem` of a
        /// service started with --ca-dir.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Check the token's lifetime (exp, nbf) at this instant (Unix seconds) instead of now:
        /// an archived token, verified as of when it was used. The signature is always checked
        /// against the keys published now (or in --jwks).
        #[arg(long)]
        at: Option<u64>,
    },
}

#[derive(Subcommand)]
pub enum EvidenceCommand {
    /// Verify an SEV-SNP report against AMD's roots (or a simulated root) and print it; or an
    /// Azure confidential VM's HCL report, with its vTPM quote.
    Verify {
        /// The raw 1184-byte report.
        #[arg(
            long,
            required_unless_present = "hcl_report",
            conflicts_with = "hcl_report"
        )]
        report: Option<PathBuf>,
        /// An Azure confidential VM's HCL report (vTPM NV index 0x01400001): the SEV-SNP report
        /// and the paravisor's runtime claims it binds.
        #[arg(long)]
        hcl_report: Option<PathBuf>,
        /// The vTPM quote (TPMS_ATTEST, as `tpm2_quote -m` writes it) signed by the HCL
        /// report's attestation key; needs --tpm-signature, --pcrs and --nonce.
        #[arg(long, requires_all = ["hcl_report", "tpm_signature", "pcrs", "nonce"])]
        tpm_quote: Option<PathBuf>,
        /// The quote's signature: raw RSASSA, or TPMT_SIGNATURE (`tpm2_quote -s`).
        #[arg(long, requires = "tpm_quote")]
        tpm_signature: Option<PathBuf>,
        /// The quoted PCRs' SHA-256 values in index order: a JSON array of hex strings, or one
        /// hex value per line.
        #[arg(long, requires = "tpm_quote")]
        pcrs: Option<PathBuf>,
        /// The nonce the quote must have been made for (its extraData): text, or `hex:<hex>`.
        #[arg(long, requires = "tpm_quote")]
        nonce: Option<String>,
        /// Directory with the VCEK (vcek.der/.pem, or vlek.*) and optionally ark.*, ask.*,
        /// asvk.* or cert_chain.pem.
        #[arg(long, required_unless_present = "kds_cache")]
        certs: Option<PathBuf>,
        /// An offline AMD KDS cache (`conclave attest kds fetch`): the VCEK when --certs has none,
        /// and AMD's CRLs, checked.
        #[arg(long)]
        kds_cache: Option<PathBuf>,
        /// The product, for a version 2 report that does not say (looked up in the KDS cache).
        #[arg(long)]
        product: Option<ProductArg>,
        /// Trust this simulated root (ark.pem, or its platform directory) instead of AMD's.
        #[arg(long)]
        sim_root: Option<PathBuf>,
        /// Do not check certificate validity periods (for archived evidence).
        #[arg(long, conflicts_with = "at")]
        no_time_check: bool,
        /// Check certificate validity at this instant (Unix seconds) instead of now: archived
        /// evidence, verified as of when it was made.
        #[arg(long)]
        at: Option<u64>,
    },
}

pub async fn run(cmd: AttestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AttestCommand::Openapi => {
            use utoipa::OpenApi as _;
            println!(
                "{}",
                conclave_attest::service::AttestationApi::openapi().to_pretty_json()?
            );
            Ok(ExitCode::SUCCESS)
        }
        AttestCommand::Serve {
            listen,
            state_dir,
            issuer,
            sim_root,
            allow_platform,
            allow_debug,
            min_tcb,
            token_lifetime,
            tls_cert,
            tls_key,
            ca_dir,
            kds_cache,
        } => {
            let mut roots = TrustedRoots::amd();
            for path in &sim_root {
                roots
                    .add(load_sim_root(path)?)
                    .context("the simulated root is not a valid ARK/ASK pair")?;
            }
            let mut allowed: BTreeSet<PlatformName> =
                allow_platform.into_iter().map(Into::into).collect();
            if allowed.is_empty() {
                allowed = [PlatformName::Snp, PlatformName::AzureVtpm].into();
                if !sim_root.is_empty() {
                    allowed.insert(PlatformName::Sim);
                }
            }
            if allowed.contains(&PlatformName::Sim) && sim_root.is_empty() {
                bail!(
                    "--allow-platform sim needs --sim-root: name the simulated platform to trust"
                );
            }
            let policy = AppraisalPolicy {
                allowed_platforms: allowed.clone(),
                allow_debug,
                min_tcb: min_tcb.as_deref().map(parse_tcb).transpose()?,
                check_cert_validity: true,
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| {
                    format!("cannot listen on {listen} (in use? choose another with --listen)")
                })?;
            let addr = listener.local_addr()?;
            let tls = match (&tls_cert, &tls_key, &ca_dir) {
                (Some(c), Some(k), _) => Some(conclave_net::server_config(c, k)?),
                (_, _, Some(dir)) => {
                    let ca = conclave_net::LocalCa::load_or_create(dir)?;
                    let names = [addr.ip().to_string(), "localhost".to_string()];
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let issued = ca.server_cert(&state_dir.join("tls"), "server", &names)?;
                    tracing::info!(ca = %ca.cert_path().display(), "TLS certificate from the local CA");
                    Some(conclave_net::server_config(
                        &issued.chain_pem,
                        &issued.key_pk8,
                    )?)
                }
                _ => None,
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            let issuer = issuer.unwrap_or_else(|| format!("{scheme}://{addr}"));
            let service = AttestationService::new(ServiceConfig {
                issuer: issuer.clone(),
                roots,
                policy,
                key_dir: state_dir.join("token-keys"),
                token_lifetime: Duration::from_secs(token_lifetime),
                kds_cache: kds_cache.as_deref().map(conclave_snp::kds::KdsCache::new),
            })?;
            // Service banners are log lines, so that --log-format json keeps stderr all JSON.
            tracing::info!(url = %format!("{scheme}://{addr}"), %issuer, "attestation service listening");
            tracing::info!(platforms = ?allowed, debug_guests = allow_debug, "appraisal policy");
            if allowed.contains(&PlatformName::Sim) {
                tracing::warn!(
                    "simulated SEV-SNP evidence is accepted; its tokens say x-conclave-platform: sim"
                );
            }
            serve(listener, service, tls, crate::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        AttestCommand::RotateKey { state_dir } => {
            let mut ring = KeyRing::open(&state_dir.join("token-keys"))?;
            let kid = ring.rotate()?.kid.clone();
            println!("new token-signing key: {kid}");
            Ok(ExitCode::SUCCESS)
        }
        AttestCommand::Token(TokenCommand::Verify {
            token,
            jwks,
            issuer,
            ca,
            at,
        }) => {
            let token = read_token(&token)?;
            let http = conclave_net::client(ca.as_deref())
                .with_context(|| "the HTTPS client (--ca)".to_string())?;
            let verifier = match (jwks, issuer) {
                (Some(src), issuer)
                    if src.starts_with("http://") || src.starts_with("https://") =>
                {
                    let v = TokenVerifier::for_jwks_url(&src, http);
                    (v, issuer)
                }
                (Some(file), issuer) => {
                    let text =
                        std::fs::read(&file).with_context(|| format!("reading JWKS {file}"))?;
                    let set = serde_json::from_slice(&text)
                        .with_context(|| format!("{file} is not a JWKS"))?;
                    (TokenVerifier::with_jwks(None, &set), issuer)
                }
                (None, Some(issuer)) => (TokenVerifier::for_issuer(&issuer, http), None),
                (None, None) => unreachable!("clap requires --jwks or --issuer"),
            };
            let (verifier, expected_issuer) = verifier;
            let verified = match at {
                Some(at) => verifier.verify_at(&token, at).await?,
                None => verifier.verify(&token).await?,
            };
            if let Some(expected) = expected_issuer
                && verified.issuer().trim_end_matches('/') != expected.trim_end_matches('/')
            {
                bail!(
                    "the token was issued by {:?}, expected {expected:?}",
                    verified.issuer()
                );
            }
            match at {
                Some(at) => eprintln!(
                    "token verified (kid {}), its lifetime checked at {at} (Unix seconds), not now",
                    verified.kid
                ),
                None => eprintln!("token verified (kid {})", verified.kid),
            }
            println!("{}", serde_json::to_string_pretty(&verified.claims)?);
            Ok(ExitCode::SUCCESS)
        }
        AttestCommand::Kds(KdsCommand::Fetch {
            report,
            hcl,
            cache,
            url,
            product,
            ca,
        }) => {
            kds_fetch(&report, hcl, &cache, &url, product, ca.as_deref()).await?;
            Ok(ExitCode::SUCCESS)
        }
        AttestCommand::Evidence(EvidenceCommand::Verify {
            report,
            hcl_report,
            tpm_quote,
            tpm_signature,
            pcrs,
            nonce,
            certs,
            kds_cache,
            product,
            sim_root,
            no_time_check,
            at,
        }) => {
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let (raw, hcl) = match (&report, &hcl_report) {
                (Some(r), _) => (read(r)?, None),
                (None, Some(h)) => {
                    let hcl = conclave_tee::azure::parse_hcl_report(&read(h)?)
                        .with_context(|| format!("{} is not an HCL report", h.display()))?;
                    (hcl.snp_report.clone(), Some(hcl))
                }
                (None, None) => unreachable!("clap requires --report or --hcl-report"),
            };
            let cache = kds_cache.as_deref().map(conclave_snp::kds::KdsCache::new);
            let given = match &certs {
                Some(dir) => Some(load_chain_dir(dir)?),
                None => None,
            };
            let chain = match &cache {
                Some(cache) => cache
                    .complete_chain(&raw, given, product.map(Into::into))
                    .context("evidence rejected")?,
                None => given.expect("clap requires --certs or --kds-cache"),
            };
            let roots = match sim_root {
                Some(path) => {
                    let mut roots = TrustedRoots::empty();
                    roots.add(load_sim_root(&path)?)?;
                    roots
                }
                None => TrustedRoots::amd(),
            };
            let at = match (no_time_check, at) {
                (true, _) => None,
                (false, Some(secs)) => Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
                (false, None) => Some(SystemTime::now()),
            };
            let verified = verify_report(&raw, &chain, &roots, at).context("evidence rejected")?;
            if let Some(cache) = &cache {
                match cache
                    .check_revocation(&chain, &roots, at)
                    .context("evidence rejected")?
                {
                    conclave_snp::kds::Revocation::Checked(path) => {
                        eprintln!("not revoked: checked against {}", path.display())
                    }
                    conclave_snp::kds::Revocation::NotChecked(path) => eprintln!(
                        "revocation NOT checked: no CRL of the issuing ARK at {}",
                        path.display()
                    ),
                    conclave_snp::kds::Revocation::NoIssuer => {}
                }
            }
            let kind = match verified.root_kind() {
                RootKind::Amd => "AMD hardware",
                RootKind::Simulated => "SIMULATED platform (no hardware protection)",
            };
            let key = verified.endorsement_key();
            eprintln!(
                "report verified: signed by a {} chained through the {} to the {} root of {kind}",
                key.name(),
                key.intermediate(),
                verified.product().name()
            );
            let mut out = describe(verified.report(), verified.reported_tcb());
            out["signing_key"] = verified.endorsement_key().name().into();
            if let Some(hcl) = hcl {
                let rd = verified.report().report_data;
                let claims = match (&tpm_quote, &tpm_signature, &pcrs, &nonce) {
                    (Some(q), Some(sig), Some(pcrs), Some(nonce)) => {
                        let quote = conclave_attest::vtpm::TpmQuote {
                            message: read(q)?,
                            signature: read(sig)?,
                            pcrs: read_pcrs(pcrs)?,
                        };
                        let nonce = match nonce.strip_prefix("hex:") {
                            Some(h) => hex::decode(h).context("--nonce hex:… is not hex")?,
                            None => nonce.as_bytes().to_vec(),
                        };
                        let claims = conclave_attest::appraisal::check_hcl_report_binding(
                            &rd,
                            &hcl.runtime_claims,
                        )
                        .context("evidence rejected")?;
                        let quoted = conclave_attest::vtpm::verify_quote(&quote, &claims, &nonce)
                            .context("the vTPM quote is rejected")?;
                        eprintln!(
                            "vTPM quote verified: signed by the HCL report's attestation key, made for the nonce given, {} PCRs",
                            quoted.pcrs.len()
                        );
                        out["tpm"] = conclave_attest::vtpm::quote_claims(&quoted);
                        claims
                    }
                    _ => {
                        let claims = conclave_attest::appraisal::check_hcl_report_binding(
                            &rd,
                            &hcl.runtime_claims,
                        )
                        .context("evidence rejected")?;
                        eprintln!(
                            "no vTPM quote given: the VM's boot state (PCRs) is NOT attested"
                        );
                        claims
                    }
                };
                if verified.report().vmpl != 0 {
                    bail!(
                        "evidence rejected: the HCL report's SEV-SNP report comes from VMPL {}, not the paravisor's VMPL 0",
                        verified.report().vmpl
                    );
                }
                eprintln!("HCL runtime claims bound by the report (report_data = SHA-256 of them)");
                out["vm_unique_id"] = claims["vm-configuration"]["vmUniqueId"].clone();
                out["hcl_runtime_claims"] = claims;
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `attest kds fetch`: GETs from KDS into the cache, each response checked before it is kept
/// (a certificate or CRL that does not parse is not written).
async fn kds_fetch(
    report_path: &Path,
    hcl: bool,
    dir: &Path,
    base: &str,
    product: Option<ProductArg>,
    ca: Option<&Path>,
) -> anyhow::Result<()> {
    use conclave_snp::EndorsementKey;
    use conclave_snp::kds;
    let bytes =
        std::fs::read(report_path).with_context(|| format!("reading {}", report_path.display()))?;
    let raw = if hcl {
        conclave_tee::azure::parse_hcl_report(&bytes)?.snp_report
    } else {
        bytes
    };
    let report = AttestationReport::parse(&raw).context("the report")?;
    let product = match (report.product_from_cpuid(), product) {
        (Some(p), _) => p,
        (None, Some(p)) => p.into(),
        (None, None) => bail!(
            "the report (version {}) does not say which AMD product made it: give --product Milan|Genoa|Turin",
            report.version
        ),
    };
    let key = match report.signing_key {
        conclave_snp::report::SigningKey::Vlek => EndorsementKey::Vlek,
        _ => EndorsementKey::Vcek,
    };
    let cache = kds::KdsCache::new(dir);
    let http = conclave_net::client(ca)?;
    let get = |url: String| {
        let http = http.clone();
        async move {
            let resp = http
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = resp.status();
            if !status.is_success() {
                bail!("GET {url}: {status}");
            }
            let body = resp.bytes().await.with_context(|| format!("GET {url}"))?;
            Ok::<_, anyhow::Error>((url, body.to_vec()))
        }
    };
    let save = |path: std::path::PathBuf, bytes: &[u8], url: &str| -> anyhow::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("{url}\n  -> {}", path.display());
        Ok(())
    };
    if key == EndorsementKey::Vcek {
        let (url, der) = get(kds::vcek_url(base, product, &report)).await?;
        Cert::parse("VCEK from KDS", &der)
            .with_context(|| format!("{url} is not a certificate"))?;
        save(cache.vcek_path(product, &report), &der, &url)?;
    } else {
        eprintln!(
            "the report is signed by a VLEK: KDS does not serve VLEKs by chip (the cloud provider hands them to its guests); fetching the ASVK chain and CRL"
        );
    }
    // The chain and CRL are kept only when AMD's pinned ARK vouches for them: a mirror cannot
    // put a root of its own into the cache.
    let roots = TrustedRoots::amd();
    let (url, pem) = get(kds::chain_url(base, key, product)).await?;
    let certs = Cert::parse_pem_bundle("cert_chain", &pem)
        .with_context(|| format!("{url} is not a PEM chain"))?;
    let trusted_ark = roots
        .iter()
        .find(|r| r.product == product)
        .map(|r| r.ark.der.clone());
    let [intermediate, ark] = &certs[..] else {
        bail!(
            "{url} holds {} certificates, not the intermediate and the ARK",
            certs.len()
        );
    };
    if Some(&ark.der) != trusted_ark.as_ref() {
        bail!(
            "{url} does not end with AMD's {} ARK: not kept",
            product.name()
        );
    }
    intermediate
        .verify_signed_by(ark)
        .with_context(|| format!("{url}: not kept"))?;
    save(cache.chain_path(key, product), &pem, &url)?;
    let (url, crl) = match get(kds::crl_url(base, key, product)).await {
        Ok(got) => got,
        Err(e) => {
            eprintln!(
                "warning: {e:#}: no CRL cached, so revocation of the {} will not be checked",
                key.intermediate()
            );
            return Ok(());
        }
    };
    kds::verify_crl(&crl, &roots, product).with_context(|| format!("{url}: not kept"))?;
    let crl_path = cache.crl_path(key, product);
    if let Ok(cached) = std::fs::read(&crl_path) {
        kds::check_not_older(&crl, &cached).with_context(|| format!("{url}: not kept"))?;
    }
    save(crl_path, &crl, &url)?;
    Ok(())
}

/// PCR values: a JSON array of hex strings, or one hex value per line.
fn read_pcrs(path: &Path) -> anyhow::Result<Vec<[u8; 32]>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let values: Vec<String> = match serde_json::from_str::<Vec<String>>(&text) {
        Ok(v) => v,
        Err(_) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
    };
    conclave_attest::vtpm::parse_pcrs(&values)
        .with_context(|| format!("the PCR values in {}", path.display()))
}

fn read_token(arg: &str) -> anyhow::Result<String> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
    } else {
        arg.to_string()
    };
    Ok(text.trim().to_string())
}

fn parse_tcb(s: &str) -> anyhow::Result<TcbParts> {
    let mut tcb = TcbParts {
        fmc: None,
        bootloader: 0,
        tee: 0,
        snp: 0,
        microcode: 0,
    };
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("{part:?}: expected name=value"))?;
        let v: u8 = v
            .trim()
            .parse()
            .with_context(|| format!("{part:?}: SVNs are 0..255"))?;
        match k.trim() {
            "bootloader" => tcb.bootloader = v,
            "tee" => tcb.tee = v,
            "snp" => tcb.snp = v,
            "microcode" => tcb.microcode = v,
            "fmc" => tcb.fmc = Some(v),
            other => {
                bail!("unknown TCB component {other:?}: use bootloader, tee, snp, microcode, fmc")
            }
        }
    }
    Ok(tcb)
}

/// A simulated root from its platform directory or its ark.pem (the ASK beside it is optional).
fn load_sim_root(path: &Path) -> anyhow::Result<TrustedRoot> {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let ark_path = if path.is_dir() {
        dir.join("ark.pem")
    } else {
        path.to_path_buf()
    };
    let ark = Cert::parse(
        "sim ARK",
        &std::fs::read(&ark_path).with_context(|| format!("reading {}", ark_path.display()))?,
    )?;
    let ask = std::fs::read(dir.join("ask.pem"))
        .ok()
        .map(|b| Cert::parse("sim ASK", &b))
        .transpose()?;
    Ok(TrustedRoot {
        product: SIM_PRODUCT,
        kind: RootKind::Simulated,
        ark,
        ask,
        asvk: None,
    })
}

fn find_cert(dir: &Path, stem: &str) -> anyhow::Result<Option<Cert>> {
    for ext in ["der", "pem", "crt", "cer"] {
        let p = dir.join(format!("{stem}.{ext}"));
        if p.exists() {
            let bytes = std::fs::read(&p)?;
            return Ok(Some(
                Cert::parse(stem, &bytes).with_context(|| p.display().to_string())?,
            ));
        }
    }
    Ok(None)
}

/// A folder with AMD KDS's file names: `vcek.*` or `vlek.*`, and optionally `ark.*`, `ask.*`,
/// `asvk.*`, or `cert_chain.pem` (KDS's `/cert_chain` bundle: the intermediate and the ARK).
/// Certificates are sorted by what they are, not by their file names, so an ASVK saved as
/// `ask.pem` is still used as the ASVK.
fn load_chain_dir(dir: &Path) -> anyhow::Result<CertChain> {
    let leaves: Vec<Cert> = ["vcek", "vlek"]
        .into_iter()
        .map(|stem| find_cert(dir, stem))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    if leaves.is_empty() {
        bail!(
            "{} holds no vcek.der/.pem or vlek.der/.pem (AMD KDS's names for the key that signed the report)",
            dir.display()
        );
    }
    if leaves.len() > 1 {
        bail!(
            "{} holds both a vcek and a vlek certificate: keep only the one that signed the report",
            dir.display()
        );
    }
    let mut certs = leaves;
    for stem in ["ark", "ask", "asvk"] {
        certs.extend(find_cert(dir, stem)?);
    }
    let bundle = dir.join("cert_chain.pem");
    if bundle.exists() {
        let pem = std::fs::read(&bundle)?;
        for c in Cert::parse_pem_bundle("cert_chain", &pem)
            .with_context(|| bundle.display().to_string())?
        {
            // The same certificate in a file and in the bundle is counted once.
            if !certs.iter().any(|have| have.der == c.der) {
                certs.push(c);
            }
        }
    }
    CertChain::from_certs(certs).with_context(|| format!("the certificates in {}", dir.display()))
}

fn describe(r: &AttestationReport, tcb: TcbParts) -> serde_json::Value {
    serde_json::json!({
        "version": r.version,
        "guest_svn": r.guest_svn,
        "policy": {
            "raw": format!("{:#x}", r.policy.0),
            "abi": format!("{}.{}", r.policy.abi_major(), r.policy.abi_minor()),
            "debug_allowed": r.policy.debug_allowed(),
            "migrate_ma_allowed": r.policy.migrate_ma_allowed(),
            "smt_allowed": r.policy.smt_allowed(),
            "single_socket_required": r.policy.single_socket_required(),
        },
        "family_id": hex::encode(r.family_id),
        "image_id": hex::encode(r.image_id),
        "vmpl": r.vmpl,
        "signature_algo": r.signature_algo,
        "signing_key": format!("{:?}", r.signing_key),
        "platform_info": {
            "raw": format!("{:#x}", r.platform_info.0),
            "smt_enabled": r.platform_info.smt_enabled(),
            "tsme_enabled": r.platform_info.tsme_enabled(),
            "ecc_enabled": r.platform_info.ecc_enabled(),
        },
        "current_tcb": format!("{:#018x}", r.current_tcb.0),
        "reported_tcb": tcb,
        "committed_tcb": format!("{:#018x}", r.committed_tcb.0),
        "launch_tcb": format!("{:#018x}", r.launch_tcb.0),
        "report_data": hex::encode(r.report_data),
        "measurement": hex::encode(r.measurement),
        "host_data": hex::encode(r.host_data),
        "id_key_digest": hex::encode(r.id_key_digest),
        "author_key_digest": hex::encode(r.author_key_digest),
        "report_id": hex::encode(r.report_id),
        "chip_id": hex::encode(r.chip_id),
        "cpuid": format!("family {:#x} model {:#x} stepping {:#x}", r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step),
        "firmware": format!("{}.{}.{}", r.current_version.major, r.current_version.minor, r.current_version.build),
    })
}
