//! The service's token-signing keys: RSA-2048 (RS256, as MAA signs), persisted, rotatable.
//!
//! Layout of the key directory:
//! - `<kid>.pk8`: the private key (PKCS#8 DER, mode 0600);
//! - `<kid>.pem`: its self-signed certificate (published as `x5c`);
//! - `keys.json`: which key is active and when the others were retired.
//!
//! A retired key stays in the JWKS until every token it signed has expired, so rotation never
//! invalidates a token early.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::RsaKeyPair;
use base64::Engine as _;
use conclave_pki::Cert;
use conclave_pki::x509::{CertSigningKey, CertTemplate, issue, rsa_spki_der};

use crate::jws;
use conclave_protocol::jwk::{Jwk, JwkSet};

/// One signing key.
pub struct SigningKey {
    pub kid: String,
    pub key: RsaKeyPair,
    pub cert: Cert,
    /// Unix seconds; `None` while active.
    pub retired_at: Option<u64>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct KeyState {
    active: String,
    #[serde(default)]
    retired: Vec<Retired>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Retired {
    kid: String,
    retired_at: u64,
}

/// All keys the service knows: the active one first.
pub struct KeyRing {
    dir: PathBuf,
    keys: Vec<SigningKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("token key store {path}: {detail}")]
    Store { path: String, detail: String },
}

fn store_err(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::Store {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    conclave_net::write_file(path, bytes, mode).map_err(|e| store_err(path, e))
}

/// RFC 7638 JWK thumbprint of an RSA public key: the key id.
pub fn rsa_thumbprint(n: &[u8], e: &[u8]) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let canonical = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n));
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
}

impl KeyRing {
    /// Opens the store in `dir`, creating a first key if there is none.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        std::fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
        let state_path = dir.join("keys.json");
        if !state_path.exists() {
            let mut ring = KeyRing {
                dir: dir.to_path_buf(),
                keys: Vec::new(),
            };
            ring.rotate()?;
            return Ok(ring);
        }
        let state: KeyState = serde_json::from_slice(
            &std::fs::read(&state_path).map_err(|e| store_err(&state_path, e))?,
        )
        .map_err(|e| store_err(&state_path, e))?;
        let mut keys = vec![Self::load_key(dir, &state.active, None)?];
        for r in &state.retired {
            keys.push(Self::load_key(dir, &r.kid, Some(r.retired_at))?);
        }
        Ok(KeyRing {
            dir: dir.to_path_buf(),
            keys,
        })
    }

    fn load_key(dir: &Path, kid: &str, retired_at: Option<u64>) -> Result<SigningKey, KeyError> {
        if kid.is_empty()
            || !kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(store_err(
                dir,
                format!("invalid key id {kid:?} in keys.json"),
            ));
        }
        let pk8_path = dir.join(format!("{kid}.pk8"));
        let pk8 = std::fs::read(&pk8_path).map_err(|e| store_err(&pk8_path, e))?;
        let key = RsaKeyPair::from_pkcs8(&pk8).map_err(|e| store_err(&pk8_path, e))?;
        let pem_path = dir.join(format!("{kid}.pem"));
        let cert = Cert::parse(
            kid,
            &std::fs::read(&pem_path).map_err(|e| store_err(&pem_path, e))?,
        )
        .map_err(|e| store_err(&pem_path, e))?;
        Ok(SigningKey {
            kid: kid.to_string(),
            key,
            cert,
            retired_at,
        })
    }

    /// Makes a new active key; the previous active key is retired now.
    pub fn rotate(&mut self) -> Result<&SigningKey, KeyError> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| store_err(&self.dir, e))?;
        let (n, e) = jws::rsa_public_components(&key);
        let kid = rsa_thumbprint(&n, &e);
        let pk8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
            .map_err(|e| store_err(&self.dir, e))?;
        let signer_key =
            RsaKeyPair::from_pkcs8(pk8.as_ref()).map_err(|e| store_err(&self.dir, e))?;
        let cert = issue(
            CertTemplate {
                subject: format!(
                    "CN=Conclave attestation token signing {},O=Conclave",
                    &kid[..8]
                ),
                serial: u32::try_from(now_secs() & 0x7FFF_FFFF).unwrap_or(1),
                validity: Duration::from_secs(5 * 365 * 24 * 3600),
                is_ca: false,
                extensions: vec![],
            },
            &rsa_spki_der(&key),
            None,
            &CertSigningKey::RsaPkcs1Sha256(signer_key),
        )
        .map_err(|e| store_err(&self.dir, e))?;
        write_atomic(&self.dir.join(format!("{kid}.pk8")), pk8.as_ref(), 0o600)?;
        write_atomic(
            &self.dir.join(format!("{kid}.pem")),
            cert.to_pem().as_bytes(),
            0o644,
        )?;

        let now = now_secs();
        for k in &mut self.keys {
            k.retired_at.get_or_insert(now);
        }
        self.keys.insert(
            0,
            SigningKey {
                kid,
                key,
                cert,
                retired_at: None,
            },
        );
        self.save()?;
        Ok(&self.keys[0])
    }

    fn save(&self) -> Result<(), KeyError> {
        let state = KeyState {
            active: self.keys[0].kid.clone(),
            retired: self
                .keys
                .iter()
                .skip(1)
                .map(|k| Retired {
                    kid: k.kid.clone(),
                    retired_at: k.retired_at.unwrap_or(0),
                })
                .collect(),
        };
        write_atomic(
            &self.dir.join("keys.json"),
            &serde_json::to_vec_pretty(&state).expect("state serialises"),
            0o600,
        )
    }

    pub fn active(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// Keys whose tokens may still be valid: the active one and those retired less than
    /// `token_lifetime` ago.
    pub fn published(&self, token_lifetime: Duration) -> impl Iterator<Item = &SigningKey> {
        let horizon = now_secs().saturating_sub(token_lifetime.as_secs() + 300);
        self.keys
            .iter()
            .filter(move |k| k.retired_at.is_none_or(|t| t >= horizon))
    }

    /// The JWKS document (`GET /certs`).
    pub fn jwks(&self, token_lifetime: Duration) -> JwkSet {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let keys = self
            .published(token_lifetime)
            .map(|k| {
                let (n, e) = jws::rsa_public_components(&k.key);
                Jwk {
                    kty: "RSA".into(),
                    kid: Some(k.kid.clone()),
                    use_: Some("sig".into()),
                    alg: Some("RS256".into()),
                    n: Some(b64(&n)),
                    e: Some(b64(&e)),
                    x5c: Some(vec![
                        base64::engine::general_purpose::STANDARD.encode(&k.cert.der),
                    ]),
                    ..Default::default()
                }
            })
            .collect();
        JwkSet { keys }
    }

    /// Modification time of the state file, to notice rotation by another process.
    pub fn state_mtime(dir: &Path) -> Option<SystemTime> {
        std::fs::metadata(dir.join("keys.json"))
            .and_then(|m| m.modified())
            .ok()
    }
}
