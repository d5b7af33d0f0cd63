//! Conclave's one way to do HTTP: every service is served by [`serve`] (optional TLS through
//! rustls, a handshake and header-read timeout against slow clients, graceful shutdown), every
//! client is made by [`client`], and local deployments get their certificates from a
//! [`LocalCa`]. Every service exposes metrics and request spans through [`observe`].

#![forbid(unsafe_code)]

pub mod attested_tls;
pub mod observe;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};

/// A client that sends its request headers slower than this is disconnected.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake slower than this is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    #[error("certificate: {0}")]
    Cert(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error(transparent)]
    Pki(#[from] conclave_pki::PkiError),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> NetError {
    NetError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// The local CA and atomic file writes live in `conclave-pki`; here under their old names.
pub use conclave_pki::ca::{Issued, LocalCa};
pub use conclave_pki::files::write_file;

/// A rustls server configuration from a PEM chain and a PKCS#8 (DER or PEM) key.
pub fn server_config(chain_pem: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, NetError> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain_pem)
        .map_err(|e| file_err(chain_pem, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(chain_pem, e))?;
    let key: PrivateKeyDer<'static> =
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(read_pkcs8(key)?.to_vec()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A PKCS#8 private key file, DER or PEM, as DER (in a buffer that wipes itself when dropped).
pub fn read_pkcs8(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, NetError> {
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use rustls_pki_types::pem::PemObject as _;
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| file_err(path, e))?);
    if bytes.starts_with(b"-----") {
        let key = PrivatePkcs8KeyDer::from_pem_slice(&bytes)
            .map_err(|e| file_err(path, format!("not a PKCS#8 PEM key: {e}")))?;
        Ok(zeroize::Zeroizing::new(key.secret_pkcs8_der().to_vec()))
    } else {
        Ok(bytes)
    }
}

/// Middleware: every error response (4xx, 5xx) that is not already JSON gets Azure's error body,
/// `{"error": {"code", "message"}}`, keeping its status and, as the message, its text (axum's
/// own rejections of a malformed path or query, 405 for a method a route does not take). Clients
/// of Azure's APIs parse errors in that shape only.
pub async fn azure_error_bodies(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "BadParameter",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::REQUEST_TIMEOUT => "RequestTimeout",
        StatusCode::PAYLOAD_TOO_LARGE => "RequestTooLarge",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        StatusCode::TOO_MANY_REQUESTS => "Throttled",
        s if s.is_server_error() => "InternalError",
        _ => "BadRequest",
    };
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        // The router adds the `Allow` header (the methods the endpoint takes) afterwards.
        "this endpoint does not take that method (the Allow header lists those it takes)".into()
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    axum::response::Response::from_parts(parts, axum::body::Body::from(body))
}

/// Serves `router` on `listener` (TLS when `tls` is given) until `shutdown` completes, then
/// lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("connections still open after 10 s; closing"),
    }
    Ok(())
}

/// The HTTP client every Conclave component uses: rustls with the platform's roots plus, when
/// given, a local CA; timeouts on connect and on the whole request.
pub fn client(extra_ca_pem: Option<&Path>) -> Result<reqwest::Client, NetError> {
    client_builder(extra_ca_pem)?
        .build()
        .map_err(|e| NetError::Tls(e.to_string()))
}

/// The builder behind [`client`], for a client that needs one more setting (an OAuth client
/// must not follow redirects, say).
pub fn client_builder(extra_ca_pem: Option<&Path>) -> Result<reqwest::ClientBuilder, NetError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        // Our servers close a keep-alive connection that sends no request within
        // HEADER_READ_TIMEOUT; dropping idle connections well before that keeps the client from
        // sending a request on a connection the server is closing (found by the load test: one
        // failed request in 12,000).
        .pool_idle_timeout(HEADER_READ_TIMEOUT / 2)
        .user_agent(concat!("conclave/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = extra_ca_pem {
        let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| file_err(path, e))?;
        b = b.add_root_certificate(cert);
    }
    Ok(b)
}

/// [`client_builder`] trusting, besides the platform's roots, the CA certificate given as PEM
/// text (`what` names where it came from, in errors).
pub fn client_builder_with_ca(pem: &[u8], what: &str) -> Result<reqwest::ClientBuilder, NetError> {
    let cert = reqwest::Certificate::from_pem(pem)
        .map_err(|e| NetError::Tls(format!("{what} is not a PEM certificate: {e}")))?;
    Ok(client_builder(None)?.add_root_certificate(cert))
}
