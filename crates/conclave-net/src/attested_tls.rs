//! Attested TLS: a server whose TLS key is made inside its TEE and never leaves it, and whose
//! attestation names that key, so a client that checks the attestation knows it is talking to
//! the attested code and not to whoever holds the address.
//!
//! The binding is the key's RFC 7469 pin (`pin-sha256`: base64 of the SHA-256 of the DER
//! SubjectPublicKeyInfo), which the workload puts in the runtime data its attestation report
//! binds. The certificate itself is self-signed: no CA outside the TEE can vouch for a key made
//! inside it; the attestation does. A TLS handshake proves the server holds the private key of the
//! certificate it presents, so "the presented key's pin equals the attested pin" is the whole
//! check ([`PinCapture`] records the presented certificate while still checking the handshake
//! signatures; [`pinned_client`] accepts one pin and nothing else).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use conclave_pki::x509::{CertSigningKey, CertTemplate, ec_spki_der, extension, issue};
use der::asn1::Ia5String;
use der::oid::db::rfc5280::ID_KP_SERVER_AUTH;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName};

use crate::NetError;

/// RFC 7469 §2.4 pin of a DER SubjectPublicKeyInfo: standard base64 of its SHA-256.
pub fn pin_sha256(spki_der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki_der);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The pin of a DER certificate's public key.
pub fn certificate_pin(cert_der: &[u8]) -> Result<String, NetError> {
    let cert = conclave_pki::Cert::parse("the server's TLS certificate", cert_der)
        .map_err(|e| NetError::Cert(e.to_string()))?;
    Ok(pin_sha256(&cert.spki_der()))
}

/// A TLS identity made in this process: an ECDSA P-256 key (held only in memory) and a
/// self-signed certificate for `names`.
pub struct TeeTlsIdentity {
    cert: conclave_pki::Cert,
    key_pk8: zeroize::Zeroizing<Vec<u8>>,
    pin: String,
}

impl TeeTlsIdentity {
    /// A new key and a certificate valid for a year, naming `names` (DNS names or IP addresses)
    /// as subject alternative names and with the TLS server EKU.
    pub fn generate(names: &[String]) -> Result<Self, NetError> {
        let err = |e: &dyn std::fmt::Display| NetError::Cert(e.to_string());
        let rng = SystemRandom::new();
        let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|e| err(&e))?;
        let key_pk8 = zeroize::Zeroizing::new(pk8.as_ref().to_vec());
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key_pk8)
            .map_err(|e| err(&e))?;
        let spki = ec_spki_der(&key);
        let mut sans = Vec::new();
        for n in names {
            sans.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => GeneralName::from(ip),
                Err(_) => GeneralName::DnsName(Ia5String::new(n).map_err(|e| err(&e))?),
            });
        }
        let subject = format!(
            "CN={},O=Conclave workload (key made in the TEE; trust it through its attestation)",
            names.first().map(String::as_str).unwrap_or("workload")
        );
        let mut extensions = vec![
            extension(&subject, &ExtendedKeyUsage(vec![ID_KP_SERVER_AUTH])).map_err(|e| err(&e))?,
        ];
        if !sans.is_empty() {
            extensions.push(extension(&subject, &SubjectAltName(sans)).map_err(|e| err(&e))?);
        }
        extensions.push(
            extension(&subject, &KeyUsage(KeyUsages::DigitalSignature.into()))
                .map_err(|e| err(&e))?,
        );
        let serial = u32::from_be_bytes(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki).as_ref()[..4]
                .try_into()
                .expect("4 bytes"),
        ) & 0x7FFF_FFFF;
        let cert = issue(
            CertTemplate {
                subject,
                serial,
                validity: Duration::from_secs(365 * 24 * 3600),
                is_ca: false,
                extensions,
            },
            &spki,
            None,
            &CertSigningKey::EcdsaP256Sha256(key),
        )
        .map_err(|e| err(&e))?;
        Ok(TeeTlsIdentity {
            cert,
            key_pk8,
            pin: pin_sha256(&spki),
        })
    }

    /// RFC 7469 `pin-sha256` of the key.
    pub fn pin_sha256(&self) -> &str {
        &self.pin
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.to_pem()
    }

    /// A rustls server configuration serving this certificate (HTTP/1.1).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, NetError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pk8.to_vec()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(self.cert.der.clone())], key)
            .map_err(|e| NetError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// How a server certificate is judged: recorded whatever it is, or accepted only for one pin.
#[derive(Debug)]
enum Mode {
    Capture(Mutex<Option<CertificateDer<'static>>>),
    Pinned(String),
}

/// A rustls certificate verifier for attested TLS. It never trusts a certificate for its issuer:
/// [`PinCapture`] mode records the leaf (the caller compares its pin with the attested one
/// before trusting anything it received), pinned mode accepts only a leaf whose key has the
/// given pin. Both check the handshake signature with the leaf's key, so the server must hold
/// that key.
#[derive(Debug)]
pub struct PinCapture {
    mode: Mode,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinCapture {
    fn new(mode: Mode) -> Arc<Self> {
        let provider: CryptoProvider = rustls::crypto::aws_lc_rs::default_provider();
        Arc::new(PinCapture {
            mode,
            algorithms: provider.signature_verification_algorithms,
        })
    }

    /// The leaf certificate the server presented (capture mode), if a handshake happened.
    pub fn presented(&self) -> Option<CertificateDer<'static>> {
        match &self.mode {
            Mode::Capture(seen) => seen.lock().expect("capture lock").clone(),
            Mode::Pinned(_) => None,
        }
    }
}

impl ServerCertVerifier for PinCapture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.mode {
            Mode::Capture(seen) => {
                *seen.lock().expect("capture lock") = Some(end_entity.clone().into_owned());
                Ok(ServerCertVerified::assertion())
            }
            Mode::Pinned(pin) => {
                let found = certificate_pin(end_entity)
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
                if aws_lc_rs::constant_time::verify_slices_are_equal(
                    found.as_bytes(),
                    pin.as_bytes(),
                )
                .is_ok()
                {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "the server's TLS key has pin-sha256 {found}, not the attested {pin}"
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn tls_config(verifier: Arc<PinCapture>) -> Result<rustls::ClientConfig, NetError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// A rustls client configuration that accepts only a server whose TLS key has RFC 7469 pin
/// `pin_sha256`, for clients built elsewhere (a blocking client, say).
pub fn pinned_tls_config(pin_sha256: &str) -> Result<rustls::ClientConfig, NetError> {
    tls_config(PinCapture::new(Mode::Pinned(pin_sha256.to_string())))
}

fn client_with(verifier: Arc<PinCapture>) -> Result<reqwest::Client, NetError> {
    let tls = tls_config(verifier)?;
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        // A redirect would take the request (and the recorded key) to another server than the
        // one asked, or past the pinned one: never follow.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("conclave/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| NetError::Tls(e.to_string()))
}

/// A client that records the certificate of the server it connects to instead of judging it,
/// and the recorder. It follows no redirect (an answer from elsewhere would not be the
/// recorded server's). Use it for one request to one server (the attestation evidence), then
/// compare the recorded key's pin with the pin that evidence attests; trust nothing received
/// before that comparison succeeds.
pub fn capturing_client() -> Result<(reqwest::Client, Arc<PinCapture>), NetError> {
    let verifier = PinCapture::new(Mode::Capture(Mutex::default()));
    Ok((client_with(verifier.clone())?, verifier))
}

/// A client that talks only to a server whose TLS key has RFC 7469 pin `pin_sha256` (whatever
/// its certificate's issuer and names): for API clients of an attested workload, once its pin
/// has been checked against its attestation.
pub fn pinned_client(pin_sha256: &str) -> Result<reqwest::Client, NetError> {
    client_with(PinCapture::new(Mode::Pinned(pin_sha256.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pinned_and_capturing_clients_see_the_tee_key() {
        let id = TeeTlsIdentity::generate(&["127.0.0.1".into(), "localhost".into()]).unwrap();
        assert_eq!(id.pin_sha256().len(), 44, "base64 of 32 bytes");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/", listener.local_addr().unwrap());
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve(
            listener,
            router,
            Some(id.server_config().unwrap()),
            async move {
                stopped.await.ok();
            },
        ));
        // The platform's roots do not know a self-signed key.
        assert!(crate::client(None).unwrap().get(&url).send().await.is_err());
        // Capture: the presented key is the TEE's.
        let (client, capture) = capturing_client().unwrap();
        assert_eq!(
            client.get(&url).send().await.unwrap().text().await.unwrap(),
            "hello"
        );
        let seen = capture.presented().expect("a certificate was presented");
        assert_eq!(certificate_pin(&seen).unwrap(), id.pin_sha256());
        // Pinned: the right pin connects; any other pin is refused at the handshake.
        let ok = pinned_client(id.pin_sha256())
            .unwrap()
            .get(&url)
            .send()
            .await;
        assert_eq!(ok.unwrap().text().await.unwrap(), "hello");
        let other = TeeTlsIdentity::generate(&[]).unwrap();
        let refused = pinned_client(other.pin_sha256())
            .unwrap()
            .get(&url)
            .send()
            .await;
        let e = format!("{:?}", refused.unwrap_err());
        assert!(e.contains("not the attested"), "{e}");
        stop.send(()).ok();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn certificate_is_well_formed() {
        let id = TeeTlsIdentity::generate(&["w.example".into()]).unwrap();
        let pem = id.cert_pem();
        let certs = conclave_pki::Cert::parse_pem_bundle("tls", pem.as_bytes()).unwrap();
        assert_eq!(pin_sha256(&certs[0].spki_der()), id.pin_sha256());
        assert!(certs[0].subject().contains("w.example"));
    }
}
