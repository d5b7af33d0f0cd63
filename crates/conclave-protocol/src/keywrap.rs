//! The secure-key-release wrap, both ends: the vault wraps a key to the TEE's RSA public key,
//! the TEE unwraps it with its private key. `CKM_RSA_AES_KEY_WRAP` (PKCS#11 v2.40 §2.1.21):
//! RSA-OAEP wraps a fresh AES-256 key, AES-KWP (RFC 5649) wraps the PKCS#8 private key; the
//! `enc` names are Azure Key Vault's (`KeyEncryptionAlgorithm`, API version 7.4). All through
//! aws-lc-rs.

use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384, OaepAlgorithm,
    OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use zeroize::Zeroizing;

/// Why a wrap or unwrap failed (never with key material in the message).
#[derive(Debug, thiserror::Error)]
pub enum KeyWrapError {
    #[error("the TEE key in the token is not a usable RSA public key: {0}")]
    BadTeeKey(String),
    #[error("key wrapping failed")]
    Wrap,
    #[error("the wrapped key does not unwrap with this private key")]
    Unwrap,
}

/// The wrapping schemes a release may ask for (`enc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapAlgorithm {
    /// RSA-OAEP (SHA-1) + AES-KWP, PKCS#11's `CKM_RSA_AES_KEY_WRAP`.
    CkmRsaAesKeyWrap,
    /// RSA-OAEP-256 + AES-KWP.
    RsaAesKeyWrap256,
    /// RSA-OAEP-384 + AES-KWP.
    RsaAesKeyWrap384,
}

impl WrapAlgorithm {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CKM_RSA_AES_KEY_WRAP" => Some(Self::CkmRsaAesKeyWrap),
            "RSA_AES_KEY_WRAP_256" => Some(Self::RsaAesKeyWrap256),
            "RSA_AES_KEY_WRAP_384" => Some(Self::RsaAesKeyWrap384),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::CkmRsaAesKeyWrap => "CKM_RSA_AES_KEY_WRAP",
            Self::RsaAesKeyWrap256 => "RSA_AES_KEY_WRAP_256",
            Self::RsaAesKeyWrap384 => "RSA_AES_KEY_WRAP_384",
        }
    }

    fn oaep(self) -> &'static OaepAlgorithm {
        match self {
            Self::CkmRsaAesKeyWrap => &OAEP_SHA1_MGF1SHA1,
            Self::RsaAesKeyWrap256 => &OAEP_SHA256_MGF1SHA256,
            Self::RsaAesKeyWrap384 => &OAEP_SHA384_MGF1SHA384,
        }
    }
}

/// Wraps `pkcs8` to the RSA public key (`n`, `e`): `RSA-OAEP(aes_key) || AES-KWP(aes_key, pkcs8)`.
pub fn wrap(pkcs8: &[u8], n: &[u8], e: &[u8], alg: WrapAlgorithm) -> Result<Vec<u8>, KeyWrapError> {
    let spki = conclave_pki::x509::rsa_spki_from_components(n, e)
        .map_err(|e| KeyWrapError::BadTeeKey(e.to_string()))?;
    let public =
        PublicEncryptingKey::from_der(&spki).map_err(|e| KeyWrapError::BadTeeKey(e.to_string()))?;
    if public.key_size_bits() < 2048 {
        return Err(KeyWrapError::BadTeeKey(format!(
            "{} bits is too small (at least 2048)",
            public.key_size_bits()
        )));
    }
    let oaep =
        OaepPublicEncryptingKey::new(public).map_err(|e| KeyWrapError::BadTeeKey(e.to_string()))?;
    let mut aes_key = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(aes_key.as_mut())
        .map_err(|_| KeyWrapError::Wrap)?;
    let mut wrapped_key = vec![0u8; oaep.ciphertext_size()];
    let wrapped_key = oaep
        .encrypt(alg.oaep(), aes_key.as_ref(), &mut wrapped_key, None)
        .map_err(|_| KeyWrapError::Wrap)?
        .to_vec();
    let kek = AesKek::new(&AES_256, aes_key.as_ref()).map_err(|_| KeyWrapError::Wrap)?;
    let mut out = vec![0u8; pkcs8.len() + 16];
    let wrapped_target = kek
        .wrap_with_padding(pkcs8, &mut out)
        .map_err(|_| KeyWrapError::Wrap)?;
    Ok([wrapped_key.as_slice(), wrapped_target].concat())
}

/// The inverse of [`wrap`], inside the TEE: returns the PKCS#8 private key (wiped when dropped).
pub fn unwrap(
    wrapped: &[u8],
    tee_key: &PrivateDecryptingKey,
    alg: WrapAlgorithm,
) -> Result<Zeroizing<Vec<u8>>, KeyWrapError> {
    let size = tee_key.key_size_bytes();
    if wrapped.len() <= size {
        return Err(KeyWrapError::Unwrap);
    }
    let (wrapped_key, wrapped_target) = wrapped.split_at(size);
    let oaep = OaepPrivateDecryptingKey::new(tee_key.clone()).map_err(|_| KeyWrapError::Unwrap)?;
    let mut aes_key = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
    let aes_key = oaep
        .decrypt(alg.oaep(), wrapped_key, &mut aes_key, None)
        .map_err(|_| KeyWrapError::Unwrap)?;
    let kek = AesKek::new(&AES_256, aes_key).map_err(|_| KeyWrapError::Unwrap)?;
    let mut out = Zeroizing::new(vec![0u8; wrapped_target.len()]);
    let len = kek
        .unwrap_with_padding(wrapped_target, &mut out)
        .map_err(|_| KeyWrapError::Unwrap)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// Re-wraps an AES key (16, 24 or 32 bytes: a Parquet data key or key-encryption key) from
/// one vault key version to another without it leaving this function: RSA-OAEP-256 (RFC 8017
/// §7.1, SHA-256 and MGF1-SHA-256) decrypt of `wrapped` with `from_pkcs8`, then RSA-OAEP-256
/// encrypt to (`to_n`, `to_e`). Anything else under the old key is refused, so the operation is
/// no decryption oracle for other values.
///
/// Errors: [`KeyWrapError::Unwrap`] when `wrapped` does not decrypt or is not an AES key.
pub fn rewrap_oaep256(
    from_pkcs8: &[u8],
    wrapped: &[u8],
    to_n: &[u8],
    to_e: &[u8],
) -> Result<Vec<u8>, KeyWrapError> {
    let from = PrivateDecryptingKey::from_pkcs8(from_pkcs8).map_err(|_| KeyWrapError::Unwrap)?;
    let from = OaepPrivateDecryptingKey::new(from).map_err(|_| KeyWrapError::Unwrap)?;
    let mut plain = Zeroizing::new(vec![0u8; from.min_output_size()]);
    let len = from
        .decrypt(&OAEP_SHA256_MGF1SHA256, wrapped, &mut plain, None)
        .map_err(|_| KeyWrapError::Unwrap)?
        .len();
    if ![16, 24, 32].contains(&len) {
        return Err(KeyWrapError::Unwrap);
    }
    let spki = conclave_pki::x509::rsa_spki_from_components(to_n, to_e)
        .map_err(|e| KeyWrapError::BadTeeKey(e.to_string()))?;
    let to = OaepPublicEncryptingKey::new(
        PublicEncryptingKey::from_der(&spki).map_err(|e| KeyWrapError::BadTeeKey(e.to_string()))?,
    )
    .map_err(|e| KeyWrapError::BadTeeKey(e.to_string()))?;
    let mut out = vec![0u8; to.ciphertext_size()];
    Ok(to
        .encrypt(&OAEP_SHA256_MGF1SHA256, &plain[..len], &mut out, None)
        .map_err(|_| KeyWrapError::Wrap)?
        .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;

    fn target_pkcs8() -> Vec<u8> {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn wrap_round_trips_for_every_scheme() {
        let target = target_pkcs8();
        let tee = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let spki = tee.public_key().as_der().unwrap();
        let (n, e) = conclave_pki::x509::parse_rsa_spki(spki.as_ref()).unwrap();
        for alg in [
            WrapAlgorithm::CkmRsaAesKeyWrap,
            WrapAlgorithm::RsaAesKeyWrap256,
            WrapAlgorithm::RsaAesKeyWrap384,
        ] {
            let wrapped = wrap(&target, &n, &e, alg).unwrap();
            assert_eq!(*unwrap(&wrapped, &tee, alg).unwrap(), target);
            let mut bad = wrapped.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(unwrap(&bad, &tee, alg).is_err());
        }
        let other = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let wrapped = wrap(&target, &n, &e, WrapAlgorithm::CkmRsaAesKeyWrap).unwrap();
        assert!(unwrap(&wrapped, &other, WrapAlgorithm::CkmRsaAesKeyWrap).is_err());
    }

    #[test]
    fn tiny_tee_keys_are_refused() {
        let target = target_pkcs8();
        assert!(matches!(
            wrap(
                &target,
                &[0xC5; 64],
                &[1, 0, 1],
                WrapAlgorithm::RsaAesKeyWrap256
            ),
            Err(KeyWrapError::BadTeeKey(_))
        ));
    }
}
