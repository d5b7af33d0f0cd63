//! Results sealed to their receivers: HPKE (RFC 9180) in base mode with the suite
//! DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM (KEM 0x0010, KDF 0x0001, AEAD 0x0002),
//! through the `hpke` crate. Each result receiver named by a contract gets its own envelope,
//! sealed to its `receiver_key` (an SPKI PEM P-256 key, as `conclave contract keygen` makes).
//!
//! The HPKE `info` is [`INFO`] and the contract's digest; the AAD is the receiver's party id. So
//! an envelope opens only as the result of that contract for that receiver. Base mode does not
//! authenticate the sender: the signed receipt does, by carrying the SHA-256 of the plaintext
//! (its `output_sha256`), which a receiver checks after opening.

use aws_lc_rs::encoding::AsBigEndian as _;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use conclave_protocol::b64::{b64url, b64url_decode};
use hpke::{Deserializable as _, OpModeR, OpModeS, Serializable as _};
use serde::{Deserialize, Serialize};

type Kem = hpke::kem::DhP256HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::AesGcm256;

/// The HPKE suite, as RFC 9180 names its parts (§7.1, §7.2, §7.3).
pub const SUITE: &str = "DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM";

/// The first part of the HPKE `info` (the contract's digest follows).
pub const INFO: &[u8] = b"conclave sealed contract result v1|";

/// One receiver's envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedResult {
    /// The receiving party's id in the contract.
    pub receiver: String,
    /// The contract's digest (part of the HPKE info).
    pub contract_digest: String,
    /// [`SUITE`].
    pub suite: String,
    /// The KEM's encapsulated key (`enc`, RFC 9180 §4), base64url: an uncompressed P-256 point.
    pub enc: String,
    /// The AEAD ciphertext with its tag, base64url.
    pub ciphertext: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealingError {
    #[error("{0}")]
    Key(String),
    #[error("the envelope is malformed: {0}")]
    Malformed(String),
    #[error(
        "the envelope does not open with this key (another receiver's key, another contract's result, or a tampered envelope)"
    )]
    Open,
}

fn info(contract_digest: &str) -> Vec<u8> {
    [INFO, contract_digest.as_bytes()].concat()
}

/// Seals `plaintext` to `receiver`'s key `receiver_key` (SPKI PEM, P-256).
///
/// # Errors
/// [`SealingError::Key`] when the key is not a P-256 public key.
pub fn seal(
    plaintext: &[u8],
    receiver: &str,
    receiver_key: &str,
    contract_digest: &str,
) -> Result<SealedResult, SealingError> {
    let point = crate::approval::parse_approval_key(receiver_key)
        .map_err(|e| SealingError::Key(format!("{receiver}'s receiver_key: {e}")))?;
    let public = <Kem as hpke::Kem>::PublicKey::from_bytes(&point)
        .map_err(|_| SealingError::Key(format!("{receiver}'s receiver_key is not on P-256")))?;
    let (enc, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem>(
        &OpModeS::Base,
        &public,
        &info(contract_digest),
        plaintext,
        receiver.as_bytes(),
    )
    .map_err(|e| SealingError::Key(format!("sealing to {receiver}: {e}")))?;
    Ok(SealedResult {
        receiver: receiver.to_string(),
        contract_digest: contract_digest.to_string(),
        suite: SUITE.into(),
        enc: b64url(&enc.to_bytes()),
        ciphertext: b64url(&ciphertext),
    })
}

/// Opens `sealed` with the receiver's private key `private_key` (PKCS#8 PEM, P-256, as
/// `conclave contract keygen` writes it), for the contract whose digest is `contract_digest`.
///
/// # Errors
/// [`SealingError::Key`] for a key that is not a P-256 PKCS#8 key, [`SealingError::Malformed`]
/// for an envelope that is not one, [`SealingError::Open`] when it does not open.
pub fn open(
    sealed: &SealedResult,
    private_key: &str,
    contract_digest: &str,
) -> Result<Vec<u8>, SealingError> {
    if sealed.suite != SUITE {
        return Err(SealingError::Malformed(format!(
            "suite {:?}; this version opens {SUITE:?} only",
            sealed.suite
        )));
    }
    let (label, der) = der::pem::decode_vec(private_key.trim().as_bytes())
        .map_err(|e| SealingError::Key(format!("not a PEM private key: {e}")))?;
    if label != "PRIVATE KEY" {
        return Err(SealingError::Key(format!(
            "a PEM \"PRIVATE KEY\" (PKCS#8) is needed, not {label:?}"
        )));
    }
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .map_err(|_| SealingError::Key("not a P-256 PKCS#8 private key".into()))?;
    let scalar = pair
        .private_key()
        .as_be_bytes()
        .map_err(|_| SealingError::Key("the private key cannot be read".into()))?;
    let private = <Kem as hpke::Kem>::PrivateKey::from_bytes(scalar.as_ref())
        .map_err(|_| SealingError::Key("the private key is not a P-256 scalar".into()))?;
    let decode = |field: &str, value: &str| {
        b64url_decode(value)
            .map_err(|_| SealingError::Malformed(format!("{field} is not base64url")))
    };
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&decode("enc", &sealed.enc)?)
        .map_err(|_| SealingError::Malformed("enc is not a P-256 point".into()))?;
    hpke::single_shot_open::<Aead, Kdf, Kem>(
        &OpModeR::Base,
        &private,
        &enc,
        &info(contract_digest),
        &decode("ciphertext", &sealed.ciphertext)?,
        sealed.receiver.as_bytes(),
    )
    .map_err(|_| SealingError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_result_opens_only_for_its_receiver_and_contract() {
        let (private, public) = crate::approval::generate_key().unwrap();
        let (other_private, _) = crate::approval::generate_key().unwrap();
        let sealed = seal(b"{\"rows\":[]}", "woodgrove", &public, "ab12").unwrap();
        assert_eq!(sealed.suite, SUITE);
        assert_eq!(open(&sealed, &private, "ab12").unwrap(), b"{\"rows\":[]}");

        assert_eq!(
            open(&sealed, &other_private, "ab12"),
            Err(SealingError::Open)
        );
        assert_eq!(open(&sealed, &private, "ab13"), Err(SealingError::Open));
        let relabelled = SealedResult {
            receiver: "contoso".into(),
            ..sealed.clone()
        };
        assert_eq!(open(&relabelled, &private, "ab12"), Err(SealingError::Open));
        let mut tampered = sealed.clone();
        let mut bytes = b64url_decode(&tampered.ciphertext).unwrap();
        bytes[0] ^= 1;
        tampered.ciphertext = b64url(&bytes);
        assert_eq!(open(&tampered, &private, "ab12"), Err(SealingError::Open));

        let e = seal(b"x", "woodgrove", "not a key", "ab12").unwrap_err();
        assert!(e.to_string().contains("woodgrove's receiver_key"), "{e}");
        let e = open(&sealed, &public, "ab12").unwrap_err();
        assert!(e.to_string().contains("PRIVATE KEY"), "{e}");
    }
}
