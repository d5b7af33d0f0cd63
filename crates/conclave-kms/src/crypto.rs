//! The vault's cryptography, all through aws-lc-rs: the master key that seals private keys at
//! rest (AES-256-GCM), party key generation, and the secure-key-release wrap
//! (`CKM_RSA_AES_KEY_WRAP`: RSA-OAEP wraps a fresh AES-256 key, AES-KWP (RFC 5649) wraps the
//! PKCS#8 private key).

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use zeroize::Zeroizing;

pub use conclave_protocol::keywrap::{KeyWrapError, WrapAlgorithm, rewrap_oaep256, unwrap, wrap};

/// Environment variable holding the master key (64 hex digits), instead of a file.
pub const MASTER_KEY_ENV: &str = "CONCLAVE_VAULT_MASTER_KEY";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key: {0}")]
    MasterKey(String),
    #[error(
        "a sealed key does not decrypt under this vault's master key (wrong master key, or the store was tampered with)"
    )]
    Unseal,
    #[error("key generation failed")]
    Wrap,
    #[error("unsupported key size {0}: use 2048, 3072 or 4096")]
    KeySize(u32),
}

/// The key that seals party private keys at rest. Never stored in the vault's database.
/// The vault's master key. Its bytes are wiped from memory when it is dropped (aws-lc wipes the
/// AES key schedule it holds itself).
#[derive(zeroize::ZeroizeOnDrop)]
pub struct MasterKey {
    #[zeroize(skip)]
    aead: LessSafeKey,
    raw: [u8; 32],
}

impl MasterKey {
    /// From the environment variable [`MASTER_KEY_ENV`] if set, else from `path`; with `create`,
    /// a missing file is created with a fresh random key (mode 0600).
    pub fn load(path: &Path, create: bool) -> Result<Self, CryptoError> {
        if let Ok(hexed) = std::env::var(MASTER_KEY_ENV) {
            let hexed = Zeroizing::new(hexed);
            let bytes = Zeroizing::new(
                hex::decode(hexed.trim())
                    .map_err(|_| CryptoError::MasterKey(format!("{MASTER_KEY_ENV} is not hex")))?,
            );
            return Self::from_bytes(&bytes);
        }
        match std::fs::read(path).map(Zeroizing::new) {
            Ok(bytes) => Self::from_bytes(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut key = Zeroizing::new([0u8; 32]);
                SystemRandom::new()
                    .fill(key.as_mut())
                    .map_err(|_| CryptoError::MasterKey("no randomness".into()))?;
                conclave_pki::write_secret(path, key.as_ref())
                    .map_err(|e| CryptoError::MasterKey(e.to_string()))?;
                Self::from_bytes(key.as_ref())
            }
            Err(e) => Err(CryptoError::MasterKey(format!(
                "{}: {e} (set {MASTER_KEY_ENV} or give --master-key-file)",
                path.display()
            ))),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| {
            CryptoError::MasterKey(format!("must be 32 bytes, got {}", bytes.len()))
        })?;
        let key = UnboundKey::new(&AES_256_GCM, &raw)
            .map_err(|_| CryptoError::MasterKey("unusable key".into()))?;
        Ok(MasterKey {
            aead: LessSafeKey::new(key),
            raw,
        })
    }

    /// The key's bytes: only for splitting it into a security domain's shares.
    pub(crate) fn expose_secret(&self) -> &[u8; 32] {
        &self.raw
    }

    /// Writes the key to `path` (mode 0600), refusing to replace an existing file.
    pub fn write_new(&self, path: &Path) -> Result<(), CryptoError> {
        if path.exists() {
            return Err(CryptoError::MasterKey(format!(
                "{} exists: a recovered master key is never written over a file",
                path.display()
            )));
        }
        conclave_pki::write_secret(path, &self.raw)
            .map_err(|e| CryptoError::MasterKey(e.to_string()))
    }

    /// `nonce || ciphertext || tag`, bound to `aad` (the key's name and version).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("system randomness");
        let mut buf = plaintext.to_vec();
        self.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .expect("AES-GCM seal of a bounded buffer");
        [nonce.as_slice(), &buf].concat()
    }

    /// The inverse of [`seal`](Self::seal); the plaintext is wiped when dropped.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Unseal);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Unseal)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .aead
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::Unseal)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// 32 bytes derived for one purpose (HKDF-SHA256, as [`derive`](Self::derive)), e.g. the
    /// seed of the audit checkpoints' Ed25519 key; wiped when dropped.
    pub fn derive_seed(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        struct Len32;
        impl aws_lc_rs::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let salt = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, b"conclave-vault");
        let info = [purpose.as_bytes()];
        let mut out = Zeroizing::new([0u8; 32]);
        salt.extract(&self.raw)
            .expand(&info, Len32)
            .and_then(|okm| okm.fill(out.as_mut()))
            .expect("HKDF output length is valid");
        out
    }

    /// A key derived for one purpose (HKDF-SHA256), e.g. the audit chain's MAC key, so the
    /// master key itself is used only for sealing.
    pub fn derive(&self, purpose: &str) -> aws_lc_rs::hmac::Key {
        let salt = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, b"conclave-vault");
        let prk = salt.extract(&self.raw);
        let info = [purpose.as_bytes()];
        let okm = prk
            .expand(&info, aws_lc_rs::hmac::HMAC_SHA256)
            .expect("HKDF output length is valid");
        aws_lc_rs::hmac::Key::from(okm)
    }
}

/// A freshly generated party key.
pub struct NewKey {
    /// PKCS#8 DER of the private key (seal it immediately; wiped when dropped).
    pub pkcs8: Zeroizing<Vec<u8>>,
    pub n: Vec<u8>,
    pub e: Vec<u8>,
}

pub fn generate_rsa(bits: u32) -> Result<NewKey, CryptoError> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        other => return Err(CryptoError::KeySize(other)),
    };
    let key = PrivateDecryptingKey::generate(size).map_err(|_| CryptoError::Wrap)?;
    let pkcs8 = Zeroizing::new(
        AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
            .map_err(|_| CryptoError::Wrap)?
            .as_ref()
            .to_vec(),
    );
    let spki = key.public_key().as_der().map_err(|_| CryptoError::Wrap)?;
    let (n, e) =
        conclave_pki::x509::parse_rsa_spki(spki.as_ref()).map_err(|_| CryptoError::Wrap)?;
    Ok(NewKey { pkcs8, n, e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_is_bound_to_its_label() {
        let mk = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let sealed = mk.seal(b"contoso/v1", b"secret key bytes");
        assert_eq!(
            mk.open(b"contoso/v1", &sealed).unwrap().as_slice(),
            b"secret key bytes"
        );
        assert!(
            mk.open(b"contoso/v2", &sealed).is_err(),
            "a sealed key moved to another name does not open"
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(mk.open(b"contoso/v1", &tampered).is_err());
        assert!(
            MasterKey::from_bytes(&[8u8; 32])
                .unwrap()
                .open(b"contoso/v1", &sealed)
                .is_err()
        );
        assert!(MasterKey::from_bytes(&[1u8; 16]).is_err());
    }

    #[test]
    fn key_material_is_wiped_when_dropped() {
        // The types say it: the master key wipes its bytes on drop, and what is unsealed or
        // unwrapped (private keys in PKCS#8) comes back in buffers that wipe themselves.
        fn wipes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wipes_on_drop::<MasterKey>();
        wipes_on_drop::<Zeroizing<Vec<u8>>>();
        let master = MasterKey::from_bytes(&[7; 32]).unwrap();
        let opened: Zeroizing<Vec<u8>> = master.open(b"a", &master.seal(b"a", b"secret")).unwrap();
        assert_eq!(opened.as_slice(), b"secret");
        let key = generate_rsa(2048).unwrap();
        let _: &Zeroizing<Vec<u8>> = &key.pkcs8;
    }

    #[test]
    fn derived_keys_are_deterministic_and_distinct() {
        let mk = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let tag = |k: &aws_lc_rs::hmac::Key| aws_lc_rs::hmac::sign(k, b"x").as_ref().to_vec();
        assert_eq!(tag(&mk.derive("audit")), tag(&mk.derive("audit")));
        assert_ne!(tag(&mk.derive("audit")), tag(&mk.derive("other")));
    }
}
