//! Owners' approvals of a contract: a JWS (RFC 7515, compact serialisation) signed with ES256
//! (ECDSA P-256 with SHA-256, RFC 7518 §3.4) by the party's approval key, whose payload names the
//! contract and its digest. The contract lists each provider's public key, so an approval is
//! checked offline against the contract alone.
//!
//! Header: `{"alg": "ES256", "typ": "conclave-approval+jws"}`. Payload ([`Approval`]):
//! `{"contract": name, "digest": hex, "party": id, "iat": seconds}`.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use conclave_protocol::b64::{b64url, b64url_decode};
use der::{Decode as _, Encode as _};
use serde::{Deserialize, Serialize};

use crate::Contract;

/// The JWS `typ` of an approval.
pub const TYP: &str = "conclave-approval+jws";

/// What an approval says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The contract's name.
    pub contract: String,
    /// The contract's digest ([`Contract::digest`]).
    pub digest: String,
    /// The approving party's id.
    pub party: String,
    /// When it was signed (seconds since the Unix epoch).
    pub iat: u64,
}

/// Why an approval key or an approval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("{0}")]
    Key(String),
    #[error("the approval is malformed: {0}")]
    Malformed(String),
    #[error("the approval is by {party:?}, which is not a data provider of contract {contract:?}")]
    NotAProvider { party: String, contract: String },
    #[error(
        "the approval's signature does not verify with {party:?}'s approval key in the contract"
    )]
    Signature { party: String },
    #[error(
        "the approval is for another contract or version: it approves {approved} ({approved_digest}), this is {contract} ({digest})"
    )]
    OtherContract {
        approved: String,
        approved_digest: String,
        contract: String,
        digest: String,
    },
}

/// A new approval key pair: (PKCS#8 private key PEM, SPKI public key PEM for the contract's
/// `approval_key`).
pub fn generate_key() -> Result<(String, String), ApprovalError> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| ApprovalError::Key("could not generate a P-256 key".into()))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| ApprovalError::Key("the generated key does not load".into()))?;
    let private = der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, pkcs8.as_ref())
        .map_err(|e| ApprovalError::Key(e.to_string()))?;
    let public = der::pem::encode_string(
        "PUBLIC KEY",
        der::pem::LineEnding::LF,
        &conclave_pki::x509::ec_spki_der(&pair),
    )
    .map_err(|e| ApprovalError::Key(e.to_string()))?;
    Ok((private, public))
}

/// The DER SubjectPublicKeyInfo of a PEM public key (any algorithm).
///
/// # Errors
/// [`ApprovalError::Key`] when it is not a PEM "PUBLIC KEY" holding an SPKI.
pub fn parse_public_key(
    pem: &str,
) -> Result<x509_cert::spki::SubjectPublicKeyInfoOwned, ApprovalError> {
    let (label, der) = der::pem::decode_vec(pem.trim().as_bytes())
        .map_err(|e| ApprovalError::Key(format!("not a PEM public key: {e}")))?;
    if label != "PUBLIC KEY" {
        return Err(ApprovalError::Key(format!(
            "a PEM \"PUBLIC KEY\" is needed, not {label:?}"
        )));
    }
    x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(&der)
        .map_err(|e| ApprovalError::Key(format!("not a SubjectPublicKeyInfo: {e}")))
}

/// The SHA-256 (hex) of a PEM public key's DER SubjectPublicKeyInfo: what an owner compares,
/// out of band, with its own key before approving a contract that lists it.
///
/// # Errors
/// As [`parse_public_key`].
pub fn key_fingerprint(pem: &str) -> Result<String, ApprovalError> {
    let der = parse_public_key(pem)?
        .to_der()
        .map_err(|e| ApprovalError::Key(format!("not a SubjectPublicKeyInfo: {e}")))?;
    Ok(hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &der,
    )))
}

/// The uncompressed P-256 point of an approval key given as SPKI PEM.
///
/// # Errors
/// [`ApprovalError::Key`] when it is not PEM, not an SPKI, or not a P-256 EC key.
pub fn parse_approval_key(pem: &str) -> Result<Vec<u8>, ApprovalError> {
    let spki = parse_public_key(pem)?;
    const EC_PUBLIC_KEY: der::oid::ObjectIdentifier =
        der::oid::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const P256: der::oid::ObjectIdentifier =
        der::oid::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::oid::ObjectIdentifier>().ok());
    if spki.algorithm.oid != EC_PUBLIC_KEY || curve != Some(P256) {
        return Err(ApprovalError::Key(
            "an ECDSA P-256 public key is needed (conclave contract keygen makes one)".into(),
        ));
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| ApprovalError::Key("the key's bit string is not whole bytes".into()))?;
    if point.len() != 65 || point[0] != 4 {
        return Err(ApprovalError::Key(
            "the key is not an uncompressed P-256 point".into(),
        ));
    }
    Ok(point.to_vec())
}

/// Signs `party`'s approval of `contract` with its private key (PKCS#8 PEM), at `iat`.
///
/// # Errors
/// [`ApprovalError::Key`] when the key does not load or is not the party's key in the
/// contract; [`ApprovalError::NotAProvider`] when the party provides no data.
pub fn sign(
    contract: &Contract,
    party: &str,
    private_key_pem: &str,
    iat: u64,
) -> Result<String, ApprovalError> {
    let p = contract
        .providers()
        .find(|p| p.id == party)
        .ok_or_else(|| ApprovalError::NotAProvider {
            party: party.into(),
            contract: contract.name.clone(),
        })?;
    let (label, der) = der::pem::decode_vec(private_key_pem.trim().as_bytes())
        .map_err(|e| ApprovalError::Key(format!("the private key is not PEM: {e}")))?;
    if label != "PRIVATE KEY" {
        return Err(ApprovalError::Key(format!(
            "a PKCS#8 \"PRIVATE KEY\" is needed, not {label:?}"
        )));
    }
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .map_err(|_| ApprovalError::Key("the private key is not an ECDSA P-256 key".into()))?;
    let listed = parse_approval_key(p.approval_key.as_deref().unwrap_or_default())?;
    if pair.public_key().as_ref() != listed.as_slice() {
        return Err(ApprovalError::Key(format!(
            "this private key is not {party:?}'s approval key in the contract (its approvals would not verify)"
        )));
    }
    let header = serde_json::json!({"alg": "ES256", "typ": TYP});
    let payload = Approval {
        contract: contract.name.clone(),
        digest: contract.digest(),
        party: party.into(),
        iat,
    };
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(&serde_json::to_vec(&payload).expect("an approval serialises"))
    );
    let signature = pair
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|_| ApprovalError::Key("signing failed".into()))?;
    Ok(format!("{signing_input}.{}", b64url(signature.as_ref())))
}

/// Checks an approval against `contract`: well formed, by one of its data providers, signed
/// with that provider's approval key from the contract, and for this contract's digest.
///
/// # Errors
/// The [`ApprovalError`] that says which of these failed.
pub fn verify(contract: &Contract, jws: &str) -> Result<Approval, ApprovalError> {
    let mut parts = jws.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ApprovalError::Malformed(
            "not a compact JWS (header.payload.signature)".into(),
        ));
    };
    let decode = |part: &str, what: &str| {
        b64url_decode(part)
            .map_err(|_| ApprovalError::Malformed(format!("the {what} is not base64url")))
    };
    let header: serde_json::Value = serde_json::from_slice(&decode(h, "header")?)
        .map_err(|_| ApprovalError::Malformed("the header is not JSON".into()))?;
    if header["alg"] != "ES256" || header["typ"] != TYP {
        return Err(ApprovalError::Malformed(format!(
            "the header must be {{\"alg\": \"ES256\", \"typ\": \"{TYP}\"}}"
        )));
    }
    if header.get("crit").is_some() {
        return Err(ApprovalError::Malformed(
            "critical header parameters are not understood".into(),
        ));
    }
    let approval: Approval = serde_json::from_slice(&decode(p, "payload")?)
        .map_err(|e| ApprovalError::Malformed(format!("the payload: {e}")))?;
    let party = contract
        .providers()
        .find(|x| x.id == approval.party)
        .ok_or_else(|| ApprovalError::NotAProvider {
            party: approval.party.clone(),
            contract: contract.name.clone(),
        })?;
    let key = parse_approval_key(party.approval_key.as_deref().unwrap_or_default())?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(format!("{h}.{p}").as_bytes(), &decode(s, "signature")?)
        .map_err(|_| ApprovalError::Signature {
            party: approval.party.clone(),
        })?;
    let digest = contract.digest();
    if approval.digest != digest || approval.contract != contract.name {
        return Err(ApprovalError::OtherContract {
            approved: approval.contract,
            approved_digest: approval.digest,
            contract: contract.name.clone(),
            digest,
        });
    }
    Ok(approval)
}

/// Who has approved `contract` among `approvals`, and who has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalStatus {
    /// Valid approvals, by provider id (the first valid one of each).
    pub approved: Vec<Approval>,
    /// Providers with no valid approval.
    pub missing: Vec<String>,
    /// Approvals that failed, with why (index into the input, error).
    pub invalid: Vec<(usize, ApprovalError)>,
}

impl ApprovalStatus {
    /// Checks every approval; the contract is approved when no provider is missing and no
    /// approval given was invalid.
    pub fn of(contract: &Contract, approvals: &[String]) -> Self {
        let mut approved: Vec<Approval> = Vec::new();
        let mut invalid = Vec::new();
        for (i, jws) in approvals.iter().enumerate() {
            match verify(contract, jws) {
                Ok(a) if approved.iter().any(|x| x.party == a.party) => {}
                Ok(a) => approved.push(a),
                Err(e) => invalid.push((i, e)),
            }
        }
        let missing = contract
            .providers()
            .filter(|p| !approved.iter().any(|a| a.party == p.id))
            .map(|p| p.id.clone())
            .collect();
        ApprovalStatus {
            approved,
            missing,
            invalid,
        }
    }

    /// Every provider approved, and nothing given was invalid.
    pub fn complete(&self) -> bool {
        self.missing.is_empty() && self.invalid.is_empty()
    }
}
