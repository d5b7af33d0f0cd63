//! The party workload that runs inside the TEE: it attests with keys that exist only in its
//! memory ([`identity`]), has its vaults release dataset keys to it ([`release`]), shows its own
//! records, runs the partner analysis ([`analysis`], [`analytics`]) with live progress, signs
//! result receipts ([`receipt`]), and serves its page and JSON API ([`service`]).

#![forbid(unsafe_code)]

pub mod analysis;
pub mod analytics;
pub mod api;
pub mod auth;
pub mod config;
pub mod contract_runs;
pub mod endpoint;
pub mod engine;
pub mod identity;
pub mod receipt;
pub mod release;
pub mod service;

use std::future::Future;
use std::sync::Arc;

use conclave_tee::Platform;

use crate::config::PartyConfig;
use crate::identity::TeeIdentity;
use crate::service::Workload;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Tee(#[from] conclave_tee::TeeError),
    #[error(transparent)]
    Net(#[from] conclave_net::NetError),
    #[error("the CA certificate {path}: {detail}")]
    Ca { path: String, detail: String },
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// Runs the workload on `listener` until `shutdown` completes. `platform` is `None` for a
/// workload started without a TEE (it attests nothing, and every release is refused).
pub async fn serve(
    config: PartyConfig,
    platform: Option<Platform>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkloadError> {
    let (pem, source) = config.ca_pem().map_err(|detail| WorkloadError::Ca {
        path: config.ca_file.display().to_string(),
        detail,
    })?;
    let ca_err = |detail: String| WorkloadError::Ca {
        path: source.clone(),
        detail,
    };
    let vault_ca = conclave_pki::Cert::parse_pem_bundle("CA certificate", &pem)
        .map_err(|e| ca_err(e.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| ca_err("no certificate in it".into()))?;
    let http = conclave_net::client_builder_with_ca(&pem, &source)?
        .build()
        .map_err(|e| ca_err(e.to_string()))?;
    let identity = TeeIdentity::generate(platform, &config.certificate_names())?;
    let tls = identity.tls().server_config()?;
    tracing::info!(
        pin_sha256 = identity.tls().pin_sha256(),
        "TLS key made in the TEE; its pin is in the attested runtime data"
    );
    let mut background = Vec::new();
    let evidence: Option<Arc<dyn conclave_tee::EvidenceSource>> = match platform {
        Some(p) => Some(Arc::from(conclave_tee::source(p)?)),
        None => None,
    };
    if let Some(source) = &evidence {
        background.push(tokio::spawn(identity.clone().keep_attested(
            source.clone(),
            http.clone(),
            config.attestation_url.clone(),
        )));
    }
    let authenticator = match &config.auth {
        Some(a) => Some(Arc::new(auth::Authenticator::new(
            a.clone(),
            conclave_net::client_builder_with_ca(&pem, &source)?,
            config.listen,
        )?)),
        None => {
            tracing::warn!(
                "no [auth] in the party config: nothing but health and attestation evidence is served"
            );
            None
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workload = Workload::new(
        Arc::new(config),
        identity,
        evidence,
        http,
        vault_ca,
        authenticator,
        stopped,
    );
    background.push(tokio::spawn(
        workload.clone().release_own_key_when_attested(),
    ));
    let result = conclave_net::serve(listener, service::router(workload), Some(tls), async move {
        shutdown.await;
        stop.send(true).ok();
    })
    .await;
    for task in background {
        task.abort();
    }
    Ok(result?)
}
