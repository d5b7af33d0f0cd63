//! The vault's security domain: its master key split among N custodians so that any M of them
//! recover it, as Azure Managed HSM protects its security domain with a quorum of custodians'
//! keys. Shamir's secret sharing over GF(256) (the maintained `blahaj` crate) splits the 32-byte
//! master key; each share is encrypted to one custodian's RSA key (RSA-OAEP with SHA-256).
//! M−1 shares carry no information about the key; losing the master key file loses nothing
//! while M custodians remain.
//!
//! The flow: `export` writes the security domain (public: only encrypted shares) →
//! each custodian runs `decrypt-share` with their own private key (a share file, secret) →
//! any M share files `recover` the master key, checked against the domain's vault id.

use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::crypto::MasterKey;

/// `format` of a security domain file.
pub const FORMAT: &str = "conclave-security-domain/v1";
/// `format` of a custodian's decrypted share file.
pub const SHARE_FORMAT: &str = "conclave-security-domain-share/v1";

/// The exported security domain: public, every share encrypted to its custodian.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecurityDomain {
    pub format: String,
    /// The vault's id: a fingerprint derived from the master key (HKDF), which a recovery is
    /// checked against.
    pub vault: String,
    /// How many shares recover the master key.
    pub quorum: u8,
    pub shares: Vec<EncryptedShare>,
}

/// One custodian's share, encrypted to their key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EncryptedShare {
    /// SHA-256 (hex) of the custodian's public key (DER SubjectPublicKeyInfo).
    pub custodian: String,
    /// Standard base64 of RSA-OAEP-SHA256(share).
    pub share: String,
}

/// A custodian's share, decrypted: secret, kept by that custodian alone.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecryptedShare {
    pub format: String,
    pub vault: String,
    pub quorum: u8,
    /// Standard base64 of the share (its x coordinate, then one y byte per key byte).
    pub share: String,
}

impl std::fmt::Debug for DecryptedShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptedShare")
            .field("vault", &self.vault)
            .field("quorum", &self.quorum)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    Invalid(String),
    #[error("{have} share(s) given but {quorum} are needed to recover this vault's master key")]
    TooFewShares { have: usize, quorum: u8 },
    #[error(
        "the shares do not recover this vault's master key: a share is corrupt, or from another security domain"
    )]
    WrongKey,
    #[error("this key is not one of the security domain's custodians ({0})")]
    NotACustodian(String),
    #[error("the share does not decrypt with this custodian key")]
    Decrypt,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The vault id of a master key: 16 bytes of HMAC under a key derived for this purpose.
pub fn vault_id(master: &MasterKey) -> String {
    let key = master.derive("conclave security domain id v1");
    hex::encode(&aws_lc_rs::hmac::sign(&key, b"vault id").as_ref()[..16])
}

fn fingerprint(spki_der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        spki_der,
    ))
}

/// Splits `master` among the custodians whose RSA public keys (DER SubjectPublicKeyInfo, at
/// least 2048 bits) are given, so that any `quorum` of them recover it.
///
/// Errors: a quorum below 2 or above the number of custodians, more than 255 custodians, the
/// same custodian twice, or a key that is not a usable RSA key.
pub fn export(
    master: &MasterKey,
    custodians: &[Vec<u8>],
    quorum: u8,
) -> Result<SecurityDomain, DomainError> {
    let n = custodians.len();
    if n > 255 {
        return Err(DomainError::Invalid("at most 255 custodians".into()));
    }
    if quorum < 2 || usize::from(quorum) > n {
        return Err(DomainError::Invalid(format!(
            "a quorum of {quorum} with {n} custodian(s): the quorum must be at least 2 and at most the number of custodians"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut keys = Vec::new();
    for spki in custodians {
        let id = fingerprint(spki);
        if !seen.insert(id.clone()) {
            return Err(DomainError::Invalid(format!(
                "custodian {id} is given twice: each share needs its own custodian"
            )));
        }
        let key = PublicEncryptingKey::from_der(spki)
            .ok()
            .and_then(|k| OaepPublicEncryptingKey::new(k).ok())
            .ok_or_else(|| {
                DomainError::Invalid(format!(
                    "custodian {id}: not an RSA public key of 2048 bits or more"
                ))
            })?;
        if key.key_size_bits() < 2048 {
            return Err(DomainError::Invalid(format!(
                "custodian {id}: RSA keys below 2048 bits are not accepted"
            )));
        }
        keys.push((id, key));
    }
    let dealer = blahaj::Sharks(quorum);
    let shares: Vec<Vec<u8>> = dealer
        .dealer(master.expose_secret())
        .take(n)
        .map(|s| Vec::from(&s))
        .collect();
    let mut out = Vec::new();
    for ((custodian, key), share) in keys.into_iter().zip(shares) {
        let share = Zeroizing::new(share);
        let mut ct = vec![0u8; key.ciphertext_size()];
        let ct = key
            .encrypt(&OAEP_SHA256_MGF1SHA256, &share, &mut ct, None)
            .map_err(|_| {
                DomainError::Invalid(format!("custodian {custodian}: encryption failed"))
            })?;
        out.push(EncryptedShare {
            custodian,
            share: b64().encode(ct),
        });
    }
    Ok(SecurityDomain {
        format: FORMAT.into(),
        vault: vault_id(master),
        quorum,
        shares: out,
    })
}

/// A custodian decrypts their own share with their private key (PKCS#8).
pub fn decrypt_share(
    domain: &SecurityDomain,
    custodian_key: PrivateDecryptingKey,
) -> Result<DecryptedShare, DomainError> {
    if domain.format != FORMAT {
        return Err(DomainError::Invalid(format!(
            "not a security domain ({FORMAT}): format is {:?}",
            domain.format
        )));
    }
    let public = {
        use aws_lc_rs::encoding::AsDer as _;
        custodian_key
            .public_key()
            .as_der()
            .map_err(|_| DomainError::Decrypt)?
    };
    let id = fingerprint(public.as_ref());
    let entry = domain
        .shares
        .iter()
        .find(|s| s.custodian == id)
        .ok_or_else(|| DomainError::NotACustodian(id.clone()))?;
    let ct = b64()
        .decode(&entry.share)
        .map_err(|_| DomainError::Invalid("a share is not base64".into()))?;
    let key = OaepPrivateDecryptingKey::new(custodian_key).map_err(|_| DomainError::Decrypt)?;
    let mut buf = Zeroizing::new(vec![0u8; key.min_output_size()]);
    let len = key
        .decrypt(&OAEP_SHA256_MGF1SHA256, &ct, &mut buf, None)
        .map_err(|_| DomainError::Decrypt)?
        .len();
    Ok(DecryptedShare {
        format: SHARE_FORMAT.into(),
        vault: domain.vault.clone(),
        quorum: domain.quorum,
        share: b64().encode(&buf[..len]),
    })
}

/// Recovers the master key from at least a quorum of decrypted shares, and checks it against
/// the vault id they name.
pub fn recover(shares: &[DecryptedShare]) -> Result<MasterKey, DomainError> {
    let first = shares
        .first()
        .ok_or(DomainError::TooFewShares { have: 0, quorum: 2 })?;
    for s in shares {
        if s.format != SHARE_FORMAT {
            return Err(DomainError::Invalid(format!(
                "not a decrypted share ({SHARE_FORMAT}): format is {:?}",
                s.format
            )));
        }
        if s.vault != first.vault || s.quorum != first.quorum {
            return Err(DomainError::Invalid(
                "the shares come from different security domains".into(),
            ));
        }
    }
    let mut parsed = Vec::new();
    let mut xs = std::collections::BTreeSet::new();
    for s in shares {
        let bytes = Zeroizing::new(
            b64()
                .decode(&s.share)
                .map_err(|_| DomainError::Invalid("a share is not base64".into()))?,
        );
        let share = blahaj::Share::try_from(bytes.as_slice())
            .map_err(|e| DomainError::Invalid(format!("a share is malformed: {e}")))?;
        // The same share twice counts once.
        if xs.insert(bytes.first().copied()) {
            parsed.push(share);
        }
    }
    if parsed.len() < usize::from(first.quorum) {
        return Err(DomainError::TooFewShares {
            have: parsed.len(),
            quorum: first.quorum,
        });
    }
    let secret = Zeroizing::new(
        blahaj::Sharks(first.quorum)
            .recover(&parsed)
            .map_err(|_| DomainError::WrongKey)?,
    );
    let master = MasterKey::from_bytes(&secret).map_err(|_| DomainError::WrongKey)?;
    if vault_id(&master) != first.vault {
        return Err(DomainError::WrongKey);
    }
    Ok(master)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rsa::KeySize;

    fn custodian() -> (Vec<u8>, PrivateDecryptingKey) {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        (key.public_key().as_der().unwrap().as_ref().to_vec(), key)
    }

    fn master() -> MasterKey {
        MasterKey::from_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn any_quorum_recovers_and_fewer_do_not() {
        let custodians: Vec<_> = (0..3).map(|_| custodian()).collect();
        let publics: Vec<Vec<u8>> = custodians.iter().map(|(p, _)| p.clone()).collect();
        let domain = export(&master(), &publics, 2).unwrap();
        assert_eq!(domain.shares.len(), 3);
        let decrypted: Vec<DecryptedShare> = custodians
            .into_iter()
            .map(|(_, k)| decrypt_share(&domain, k).unwrap())
            .collect();
        for pair in [[0, 1], [0, 2], [1, 2]] {
            let got = recover(&[decrypted[pair[0]].clone(), decrypted[pair[1]].clone()]).unwrap();
            assert_eq!(got.expose_secret(), master().expose_secret(), "{pair:?}");
        }
        // One share (even given twice) is not a quorum.
        for few in [
            vec![decrypted[1].clone()],
            vec![decrypted[1].clone(), decrypted[1].clone()],
        ] {
            assert!(matches!(
                recover(&few),
                Err(DomainError::TooFewShares { have: 1, quorum: 2 })
            ));
        }
        // A corrupted share recovers another key, which the vault id exposes.
        let mut bad = decrypted[0].clone();
        let mut bytes = b64().decode(&bad.share).unwrap();
        bytes[5] ^= 1;
        bad.share = b64().encode(bytes);
        assert!(matches!(
            recover(&[bad, decrypted[2].clone()]),
            Err(DomainError::WrongKey)
        ));
    }

    #[test]
    fn custodians_and_quorums_are_checked() {
        let (a, _) = custodian();
        let (b, _) = custodian();
        for (keys, quorum) in [
            (vec![a.clone(), b.clone()], 1),
            (vec![a.clone(), b.clone()], 3),
            (vec![a.clone(), a.clone()], 2),
            (vec![a.clone(), b"not a key".to_vec()], 2),
        ] {
            assert!(matches!(
                export(&master(), &keys, quorum),
                Err(DomainError::Invalid(_))
            ));
        }
        let domain = export(&master(), &[a, b], 2).unwrap();
        let (_, stranger) = custodian();
        assert!(matches!(
            decrypt_share(&domain, stranger),
            Err(DomainError::NotACustodian(_))
        ));
        // The domain file names no secret: no share decrypts without its custodian's key, and
        // the vault id is a one-way fingerprint.
        let text = serde_json::to_string(&domain).unwrap();
        assert!(!text.contains(&hex::encode([7u8; 32])));
    }
}
