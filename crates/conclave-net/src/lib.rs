//! Conclave's one way to do HTTP: every service is served by [`serve`] (optional TLS through
//! rustls, a handshake and header-read timeout against slow clients, graceful shutdown), every
//! client is made by [`client`], and local deployments get their certificates from a
//! [`LocalCa`]. Every service exposes metrics and request spans through [`observe`].

#![forbid(unsafe_code)]

pub mod attested_tls;
pub mod observe;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::RsaKeyPair;
use conclave_snp::Cert;
use conclave_snp::x509::{CertSigningKey, CertTemplate, issue, rsa_spki_der};
use der::Encode;
use der::asn1::{BitString, Ia5String, ObjectIdentifier, OctetString};
use hyper_util::rt::{TokioIo, TokioTimer};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, ExtendedKeyUsage, SubjectAltName, SubjectKeyIdentifier,
};

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
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> NetError {
    NetError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Writes a file atomically (temporary file, fsync, rename) with the given mode: key files and
/// certificates are never seen half-written.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), NetError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| file_err(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))
}

fn ext(oid: &str, critical: bool, value: impl Encode) -> Result<Extension, NetError> {
    Ok(Extension {
        extn_id: ObjectIdentifier::new(oid).map_err(|e| NetError::Cert(e.to_string()))?,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(|e| NetError::Cert(e.to_string()))?)
            .map_err(|e| NetError::Cert(e.to_string()))?,
    })
}

/// Key identifier: SHA-1 of the subject public key bits (RFC 5280 §4.2.1.2, method 1).
fn key_id(spki_der: &[u8]) -> Result<OctetString, NetError> {
    let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::try_from(spki_der)
        .map_err(|e| NetError::Cert(e.to_string()))?;
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        spki.subject_public_key.raw_bytes(),
    );
    OctetString::new(digest.as_ref().to_vec()).map_err(|e| NetError::Cert(e.to_string()))
}

/// A certificate with its private key, as files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Leaf certificate followed by the CA certificate, PEM.
    pub chain_pem: PathBuf,
    /// PKCS#8 private key, DER, mode 0600.
    pub key_pk8: PathBuf,
}

/// A local certificate authority for deployments on one machine (`conclave demo`, tests):
/// clients trust its certificate (`ca.pem`) to reach the services over TLS.
pub struct LocalCa {
    dir: PathBuf,
    cert: Cert,
    key_pk8: Vec<u8>,
}

impl LocalCa {
    /// Loads the CA in `dir`, or creates one.
    pub fn load_or_create(dir: &Path) -> Result<Self, NetError> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.pk8");
        if cert_path.exists() && key_path.exists() {
            let cert = Cert::parse(
                "local CA",
                &std::fs::read(&cert_path).map_err(|e| file_err(&cert_path, e))?,
            )
            .map_err(|e| NetError::Cert(e.to_string()))?;
            let key_pk8 = std::fs::read(&key_path).map_err(|e| file_err(&key_path, e))?;
            return Ok(LocalCa {
                dir: dir.to_path_buf(),
                cert,
                key_pk8,
            });
        }
        let key =
            RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| NetError::Cert(e.to_string()))?;
        let key_pk8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
            .map_err(|e| NetError::Cert(e.to_string()))?
            .as_ref()
            .to_vec();
        let spki = rsa_spki_der(&key);
        // keyCertSign | cRLSign
        let ku = BitString::new(1, vec![0x06]).map_err(|e| NetError::Cert(e.to_string()))?;
        let cert = issue(
            CertTemplate {
                subject: "CN=Conclave local CA,O=Conclave (local deployment)".into(),
                serial: 1,
                validity: Duration::from_secs(10 * 365 * 24 * 3600),
                is_ca: true,
                extensions: vec![
                    ext("2.5.29.15", true, ku)?,
                    ext("2.5.29.14", false, SubjectKeyIdentifier(key_id(&spki)?))?,
                ],
            },
            &spki,
            None,
            &CertSigningKey::RsaPkcs1Sha256(key),
        )
        .map_err(|e| NetError::Cert(e.to_string()))?;
        write_file(&key_path, &key_pk8, 0o600)?;
        write_file(&cert_path, cert.to_pem().as_bytes(), 0o644)?;
        Ok(LocalCa {
            dir: dir.to_path_buf(),
            cert,
            key_pk8,
        })
    }

    /// Path of the CA certificate that clients trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// Issues (or reuses, if still valid for the same names) a server certificate for `names`
    /// (DNS names or IP addresses), stored as `<stem>.pem` and `<stem>.pk8` in `dir`.
    pub fn server_cert(&self, dir: &Path, stem: &str, names: &[&str]) -> Result<Issued, NetError> {
        self.issue_leaf(dir, stem, names, true)
    }

    /// Issues a signing certificate (no server use), e.g. for a vault's release JWS.
    pub fn signing_cert(&self, dir: &Path, stem: &str) -> Result<Issued, NetError> {
        self.issue_leaf(dir, stem, &[], false)
    }

    fn issue_leaf(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        server: bool,
    ) -> Result<Issued, NetError> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let issued = Issued {
            chain_pem: dir.join(format!("{stem}.pem")),
            key_pk8: dir.join(format!("{stem}.pk8")),
        };
        let names_path = dir.join(format!("{stem}.names"));
        let wanted = names.join(",");
        if issued.chain_pem.exists()
            && issued.key_pk8.exists()
            && std::fs::read_to_string(&names_path).ok().as_deref() == Some(wanted.as_str())
        {
            return Ok(issued);
        }
        let key =
            RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| NetError::Cert(e.to_string()))?;
        let key_pk8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
            .map_err(|e| NetError::Cert(e.to_string()))?;
        let spki = rsa_spki_der(&key);
        let mut extensions = vec![
            ext("2.5.29.14", false, SubjectKeyIdentifier(key_id(&spki)?))?,
            ext(
                "2.5.29.35",
                false,
                AuthorityKeyIdentifier {
                    key_identifier: Some(key_id(&self.cert.spki_der())?),
                    authority_cert_issuer: None,
                    authority_cert_serial_number: None,
                },
            )?,
        ];
        if server {
            let mut sans = Vec::new();
            for n in names {
                sans.push(match n.parse::<IpAddr>() {
                    Ok(ip) => GeneralName::from(ip),
                    Err(_) => GeneralName::DnsName(
                        Ia5String::new(n).map_err(|e| NetError::Cert(e.to_string()))?,
                    ),
                });
            }
            extensions.push(ext("2.5.29.17", false, SubjectAltName(sans))?);
            extensions.push(ext(
                "2.5.29.37",
                false,
                ExtendedKeyUsage(vec![ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1")]),
            )?);
            // digitalSignature | keyEncipherment
            let ku = BitString::new(5, vec![0xA0]).map_err(|e| NetError::Cert(e.to_string()))?;
            extensions.push(ext("2.5.29.15", true, ku)?);
        } else {
            // digitalSignature
            let ku = BitString::new(7, vec![0x80]).map_err(|e| NetError::Cert(e.to_string()))?;
            extensions.push(ext("2.5.29.15", true, ku)?);
        }
        let ca_key =
            RsaKeyPair::from_pkcs8(&self.key_pk8).map_err(|e| NetError::Cert(e.to_string()))?;
        let leaf = issue(
            CertTemplate {
                subject: format!(
                    "CN={},O=Conclave (local deployment)",
                    names.first().copied().unwrap_or(stem)
                ),
                serial: u32::from_be_bytes(
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki).as_ref()[..4]
                        .try_into()
                        .expect("4 bytes"),
                ) & 0x7FFF_FFFF,
                validity: Duration::from_secs(2 * 365 * 24 * 3600),
                is_ca: false,
                extensions,
            },
            &spki,
            Some(&self.cert),
            &CertSigningKey::RsaPkcs1Sha256(ca_key),
        )
        .map_err(|e| NetError::Cert(e.to_string()))?;
        write_file(&issued.key_pk8, key_pk8.as_ref(), 0o600)?;
        write_file(
            &issued.chain_pem,
            format!("{}{}", leaf.to_pem(), self.cert.to_pem()).as_bytes(),
            0o644,
        )?;
        write_file(&names_path, wanted.as_bytes(), 0o644)?;
        Ok(issued)
    }
}

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
