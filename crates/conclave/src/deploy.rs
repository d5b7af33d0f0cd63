//! Starting the services in this process on bound listeners: the attestation service and a
//! vault, both over TLS with certificates from a local CA. Used by `conclave demo` and
//! `conclave bench release`.

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

/// Serves the attestation service on `listener` with TLS; it trusts AMD's roots and the sim
/// platform's, and accepts `platforms`. Returns its URL.
pub fn attestation_service(
    dir: &Path,
    ca: &LocalCa,
    sim: &SimHost,
    platforms: &[PlatformName],
    token_lifetime: Duration,
    listener: tokio::net::TcpListener,
    stop: &Stop,
) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let url = format!("https://{}", listener.local_addr()?);
    let cert = ca.server_cert(&dir.join("tls"), "attest", &["127.0.0.1", "localhost"])?;
    let mut roots = TrustedRoots::amd();
    roots.add(sim.platform().trusted_root())?;
    let service = AttestationService::new(ServiceConfig {
        issuer: url.clone(),
        roots,
        policy: AppraisalPolicy {
            allowed_platforms: platforms.iter().copied().collect(),
            allow_debug: false,
            min_tcb: None,
            check_cert_validity: true,
        },
        key_dir: dir.join("token-keys"),
        token_lifetime,
        kds_cache: None,
    })?;
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

/// Opens (or creates) a vault in `dir` and serves it on `listener` with TLS, trusting the
/// attestation service at `authority`. Returns its URL and where its admin token is.
pub fn vault(
    dir: &Path,
    ca: &LocalCa,
    http: &reqwest::Client,
    authority: &str,
    listener: tokio::net::TcpListener,
    stop: &Stop,
) -> anyhow::Result<(
    String,
    std::path::PathBuf,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    vault_on(dir, ca, http, authority, listener, stop, None)
}

/// [`vault`], its store in PostgreSQL when `postgres` is given.
pub fn vault_on(
    dir: &Path,
    ca: &LocalCa,
    http: &reqwest::Client,
    authority: &str,
    listener: tokio::net::TcpListener,
    stop: &Stop,
    postgres: Option<conclave_kms::store::postgres::PgBackend>,
) -> anyhow::Result<(
    String,
    std::path::PathBuf,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let url = format!("https://{}", listener.local_addr()?);
    let opened = conclave_kms::setup::open(
        conclave_kms::setup::VaultOptions {
            state_dir: dir.to_path_buf(),
            vault_url: url.clone(),
            tls_names: vec!["127.0.0.1".into(), "localhost".into()],
            authorities: vec![authority.to_string()],
            http: http.clone(),
            hardware_only: false,
            master_key_file: None,
            deletion: Default::default(),
            postgres,
        },
        conclave_kms::setup::Certificates::LocalCa(ca),
    )?;
    let task = tokio::spawn(conclave_net::serve(
        listener,
        conclave_kms::service::router(opened.vault),
        Some(opened.tls),
        stop.signal(),
    ));
    Ok((url, opened.admin_token_path, task))
}
