//! Starting Conclave's services in this process on bound listeners, over TLS with certificates
//! from a local CA: the attestation service (trusting AMD's roots and a simulated platform's),
//! a vault, the demo's identity provider. One bring-up shared by `conclave demo`,
//! `conclave bench release`, the binary's tests and the fuzzing harnesses.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use conclave_attest::service::{AttestationService, ServiceConfig};
use conclave_attest::{AppraisalPolicy, PlatformName};
use conclave_net::LocalCa;
use conclave_sim_host::SimHost;
use conclave_snp::TrustedRoots;

/// Stops every server it was handed to, gracefully (also those handed it after the stop).
#[derive(Clone)]
pub struct Stop(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Stop {
    fn default() -> Self {
        Stop(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Stop {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    pub fn signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            rx.wait_for(|s| *s).await.ok();
        }
    }
}

/// An appraisal policy admitting `platforms`: no debug guests, certificates checked, no
/// minimum TCB.
pub fn policy_for(platforms: &[PlatformName]) -> AppraisalPolicy {
    AppraisalPolicy {
        allowed_platforms: platforms.iter().copied().collect(),
        allow_debug: false,
        min_tcb: None,
        check_cert_validity: true,
    }
}

/// The configuration of an attestation service named `issuer` that trusts AMD's roots and, with
/// `sim`, that simulated platform's root; its token keys are kept in `key_dir`.
///
/// Errors: the simulated root cannot be added (a malformed chain in the sim host's state).
pub fn attestation_config(
    issuer: &str,
    sim: Option<&SimHost>,
    policy: AppraisalPolicy,
    key_dir: &Path,
    token_lifetime: Duration,
) -> anyhow::Result<ServiceConfig> {
    let mut roots = TrustedRoots::amd();
    if let Some(sim) = sim {
        roots.add(sim.platform().trusted_root())?;
    }
    Ok(ServiceConfig {
        issuer: issuer.to_string(),
        roots,
        policy,
        key_dir: key_dir.to_path_buf(),
        token_lifetime,
        kds_cache: None,
    })
}

/// Serves an attestation service on `listener` (TLS from `ca`, state in `dir`) until `stop`;
/// returns its URL (the token issuer) and the server task.
pub fn attestation_service(
    dir: &Path,
    ca: &LocalCa,
    sim: &SimHost,
    policy: AppraisalPolicy,
    token_lifetime: Duration,
    listener: tokio::net::TcpListener,
    stop: &Stop,
) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let url = format!("https://{}", listener.local_addr()?);
    let cert = ca.server_cert(&dir.join("tls"), "attest", &["127.0.0.1", "localhost"])?;
    let service = AttestationService::new(attestation_config(
        &url,
        Some(sim),
        policy,
        &dir.join("token-keys"),
        token_lifetime,
    )?)?;
    let tls = conclave_net::server_config(&cert.chain_pem, &cert.key_pk8)?;
    let task = tokio::spawn(conclave_net::serve(
        listener,
        conclave_attest::service::router(service),
        Some(tls),
        stop.signal(),
    ));
    Ok((url, task))
}

/// Starts the development identity provider on `listener` with TLS from `ca`. Returns its base
/// URL (issuers are `{url}/{realm}`).
pub fn identity_provider(
    dir: &Path,
    ca: &LocalCa,
    config: conclave_idp::Config,
    listener: tokio::net::TcpListener,
    stop: &Stop,
) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let url = format!("https://{}", listener.local_addr()?);
    let cert = ca.server_cert(&dir.join("tls"), "idp", &["127.0.0.1", "localhost"])?;
    let provider = conclave_idp::Provider::new(&url, config)?;
    let tls = conclave_net::server_config(&cert.chain_pem, &cert.key_pk8)?;
    let task = tokio::spawn(conclave_net::serve(
        listener,
        conclave_idp::router(provider),
        Some(tls),
        stop.signal(),
    ));
    Ok((url, task))
}

/// What a vault started by [`vault`] is: its state directory, the authorities it trusts, and
/// its store.
pub struct VaultSpec<'a> {
    pub dir: &'a Path,
    pub ca: &'a LocalCa,
    /// The client it reaches attestation authorities with.
    pub http: &'a reqwest::Client,
    pub authorities: Vec<String>,
    pub hardware_only: bool,
    /// The PostgreSQL store (default: the embedded one in `dir`).
    pub postgres: Option<conclave_kms::store::postgres::PgBackend>,
}

impl<'a> VaultSpec<'a> {
    /// A vault in `dir` on the embedded store, trusting `authority`.
    pub fn new(dir: &'a Path, ca: &'a LocalCa, http: &'a reqwest::Client, authority: &str) -> Self {
        VaultSpec {
            dir,
            ca,
            http,
            authorities: vec![authority.to_string()],
            hardware_only: false,
            postgres: None,
        }
    }
}

/// Serves a vault on `listener` until `stop`; returns its URL, the path of its first admin's
/// token (written when the vault is new) and the server task.
pub fn vault(
    spec: VaultSpec<'_>,
    listener: tokio::net::TcpListener,
    stop: &Stop,
) -> anyhow::Result<(
    String,
    std::path::PathBuf,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let url = format!("https://{}", listener.local_addr()?);
    let opened = conclave_kms::setup::open(
        conclave_kms::setup::VaultOptions {
            state_dir: spec.dir.to_path_buf(),
            vault_url: url.clone(),
            tls_names: vec!["127.0.0.1".into(), "localhost".into()],
            authorities: spec.authorities,
            http: spec.http.clone(),
            hardware_only: spec.hardware_only,
            master_key_file: None,
            deletion: Default::default(),
            postgres: spec.postgres,
            admin_token_sha256: None,
        },
        conclave_kms::setup::Certificates::LocalCa(spec.ca),
    )?;
    let task = tokio::spawn(conclave_net::serve(
        listener,
        conclave_kms::service::router(opened.vault),
        Some(opened.tls),
        stop.signal(),
    ));
    let admin_token_path = opened.admin_token_path.ok_or_else(|| {
        anyhow::anyhow!(
            "the vault has no admin token file (its state directory holds a vault made without one)"
        )
    })?;
    Ok((url, admin_token_path, task))
}
