//! Result receipts, as anyone checks them offline: a compact JWS (ES256) signed inside the TEE
//! with the key its attestation token publishes in `x-ms-runtime.keys` (kid
//! [`SIGNING_KEY_ID`]), embedding that token and the ids and SHA-256 of every input. Holding the
//! attestation service's JWKS, a verifier learns which measured code produced the result, over
//! which ciphertexts. The result's own shape is the workload's; here it is a type parameter, so
//! a verifier needs no analysis code.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::attestation::b64url_decode;
use crate::token::{TokenError, TokenVerifier};

/// Value of the `typ` claim of a receipt of the workload's built-in analysis.
pub const RECEIPT_TYPE: &str = "conclave-analysis-receipt/v1";

/// Value of the `typ` claim of a receipt of an analysis contract's run.
pub const CONTRACT_RECEIPT_TYPE: &str = "conclave-contract-receipt/v1";

/// The `kid` of the TEE's receipt-signing key among the attested runtime keys.
pub const SIGNING_KEY_ID: &str = "TeeSigningKey";

/// One input of an analysis, as the receipt names it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InputDescriptor {
    pub company: String,
    /// Where the ciphertext was read from.
    pub dataset: String,
    /// The vault key that opened it.
    pub key: String,
    /// SHA-256 of the stored bytes (the ciphertext), lowercase hex.
    pub sha256: String,
    pub bytes: u64,
    pub records: u64,
}

/// A receipt's signed payload, with the result of type `R`. `typ` says which:
/// [`RECEIPT_TYPE`] or [`CONTRACT_RECEIPT_TYPE`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReceiptPayload<R> {
    /// What kind of receipt this is.
    pub typ: String,
    /// When it was signed (Unix seconds): the attestation token must be valid then.
    pub iat: u64,
    /// The party whose workload ran the analysis.
    pub party: String,
    pub inputs: Vec<InputDescriptor>,
    pub result: R,
    /// The workload's attestation token, which publishes the signing key.
    pub attestation: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("the receipt is not a compact JWS ({0})")]
    Malformed(String),
    #[error("the receipt is signed with {0}; receipts are ES256")]
    Algorithm(String),
    #[error("the embedded attestation token is not valid at the receipt's time: {0}")]
    Token(#[from] TokenError),
    #[error("the attestation token publishes no P-256 signing key {SIGNING_KEY_ID:?}")]
    NoSigningKey,
    #[error("the receipt's signature does not verify with the attested TEE's signing key")]
    BadSignature,
}

/// A receipt whose signature chains to an attested TEE.
#[derive(Debug, Clone)]
pub struct VerifiedReceipt<R> {
    pub issued_at: u64,
    pub party: String,
    pub inputs: Vec<InputDescriptor>,
    pub result: R,
    /// The verified claims of the embedded attestation token.
    pub token_claims: Value,
}

impl<R> VerifiedReceipt<R> {
    pub fn measurement(&self) -> Option<&str> {
        crate::runtime::launch_measurement(&self.token_claims)
    }

    pub fn platform(&self) -> Option<&str> {
        crate::runtime::platform(&self.token_claims)
    }
}

fn signing_key(claims: &Value) -> Option<Vec<u8>> {
    crate::runtime::RuntimeClaims::from_claims(claims)?.p256_key(SIGNING_KEY_ID)
}

/// Checks a receipt: its token against the attestation service's keys (valid when the receipt
/// was signed, RFC 7519 §4.1.4 at `iat`), then its signature (RFC 7515, ES256 per RFC 7518
/// §3.4) against the signing key that token attests, then its `crit` header (RFC 7515
/// §4.1.11).
///
/// # Errors
/// [`ReceiptError`]: not a JWS, not a receipt of the built-in analysis ([`RECEIPT_TYPE`]) with
/// a result of type `R`, another algorithm, a token not valid at the receipt's time, no attested
/// signing key, or a bad signature.
pub async fn verify<R: DeserializeOwned>(
    receipt: &str,
    verifier: &TokenVerifier,
) -> Result<VerifiedReceipt<R>, ReceiptError> {
    verify_as(receipt, RECEIPT_TYPE, verifier).await
}

/// The `typ` claim of a receipt, read without verifying anything (to choose how to verify it).
pub fn receipt_type(receipt: &str) -> Option<String> {
    Some(
        crate::jws::unverified_claims(receipt.trim())?
            .get("typ")?
            .as_str()?
            .to_string(),
    )
}

/// [`verify`] for a receipt whose `typ` must be `typ`.
///
/// # Errors
/// As [`verify`].
pub async fn verify_as<R: DeserializeOwned>(
    receipt: &str,
    typ: &str,
    verifier: &TokenVerifier,
) -> Result<VerifiedReceipt<R>, ReceiptError> {
    let receipt = receipt.trim();
    let parts: Vec<&str> = receipt.split('.').collect();
    let [h, p, s] = parts[..] else {
        return Err(ReceiptError::Malformed("expected three parts".into()));
    };
    let decode = |part: &str, what: &str| {
        b64url_decode(part).map_err(|_| ReceiptError::Malformed(format!("{what} is not base64url")))
    };
    let header: Value = serde_json::from_slice(&decode(h, "header")?)
        .map_err(|_| ReceiptError::Malformed("header is not JSON".into()))?;
    if header["alg"] != "ES256" {
        return Err(ReceiptError::Algorithm(header["alg"].to_string()));
    }
    let payload: ReceiptPayload<R> = serde_json::from_slice(&decode(p, "payload")?)
        .map_err(|e| ReceiptError::Malformed(format!("the payload is not a receipt: {e}")))?;
    if payload.typ != typ {
        return Err(ReceiptError::Malformed(format!(
            "typ is {:?}, expected {typ:?}",
            payload.typ
        )));
    }
    let issued_at = payload.iat;
    let token = payload.attestation.as_str();
    let verified = verifier.verify_at(token, issued_at).await?;
    let key = signing_key(&verified.claims).ok_or(ReceiptError::NoSigningKey)?;
    let signature = decode(s, "signature")?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(format!("{h}.{p}").as_bytes(), &signature)
        .map_err(|_| ReceiptError::BadSignature)?;
    crate::jws::check_critical_headers(receipt).map_err(ReceiptError::Malformed)?;
    Ok(VerifiedReceipt {
        issued_at,
        party: payload.party,
        inputs: payload.inputs,
        result: payload.result,
        token_claims: verified.claims,
    })
}
