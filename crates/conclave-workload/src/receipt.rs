//! Result receipts: an analysis result signed inside the TEE (ES256, the key published in the
//! attestation token's `x-ms-runtime.keys`), embedding that token and the ids and SHA-256 of
//! every input. Anyone holding the attestation service's JWKS checks offline which measured code
//! produced the result, over which ciphertexts.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use conclave_protocol::attestation::b64url_decode;
use conclave_protocol::token::{TokenError, TokenVerifier};
use serde_json::{Value, json};

use crate::analytics::AnalysisResult;
use crate::identity::{SIGNING_KEY_ID, TeeIdentity, now};

/// Value of the receipt's `typ` claim.
pub const RECEIPT_TYPE: &str = "conclave-analysis-receipt/v1";

/// One input of an analysis, as the receipt names it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InputDescriptor {
    pub company: String,
    /// Where the ciphertext was read from.
    pub dataset: String,
    /// The vault key that opened it.
    pub key: String,
    /// SHA-256 of the stored bytes (the ciphertext).
    pub sha256: String,
    pub bytes: u64,
    pub records: u64,
}

/// A receipt's signed payload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReceiptPayload {
    /// [`RECEIPT_TYPE`].
    pub typ: String,
    /// When it was signed (Unix seconds): the attestation token must be valid then.
    pub iat: u64,
    /// The party whose workload ran the analysis.
    pub party: String,
    pub inputs: Vec<InputDescriptor>,
    pub result: AnalysisResult,
    /// The workload's attestation token, which publishes the signing key.
    pub attestation: String,
}

/// Signs a receipt (compact JWS) for `result`.
pub fn issue(
    identity: &TeeIdentity,
    token: &str,
    party: &str,
    inputs: &[InputDescriptor],
    result: &AnalysisResult,
) -> String {
    identity.sign_jws(
        &json!({"alg": "ES256", "typ": "JWT", "kid": SIGNING_KEY_ID}),
        &serde_json::to_value(ReceiptPayload {
            typ: RECEIPT_TYPE.into(),
            iat: now(),
            party: party.into(),
            inputs: inputs.to_vec(),
            result: result.clone(),
            attestation: token.into(),
        })
        .expect("a receipt serialises"),
    )
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
pub struct VerifiedReceipt {
    pub issued_at: u64,
    pub party: String,
    pub inputs: Vec<InputDescriptor>,
    pub result: AnalysisResult,
    /// The verified claims of the embedded attestation token.
    pub token_claims: Value,
}

impl VerifiedReceipt {
    pub fn measurement(&self) -> Option<&str> {
        conclave_protocol::runtime::launch_measurement(&self.token_claims)
    }

    pub fn platform(&self) -> Option<&str> {
        conclave_protocol::runtime::platform(&self.token_claims)
    }
}

fn signing_key(claims: &Value) -> Option<Vec<u8>> {
    conclave_protocol::runtime::RuntimeClaims::from_claims(claims)?.p256_key(SIGNING_KEY_ID)
}

/// Checks a receipt: its token against the attestation service's keys (valid when the receipt
/// was signed), then its signature against the signing key that token attests.
pub async fn verify(
    receipt: &str,
    verifier: &TokenVerifier,
) -> Result<VerifiedReceipt, ReceiptError> {
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
    let payload: ReceiptPayload = serde_json::from_slice(&decode(p, "payload")?)
        .map_err(|e| ReceiptError::Malformed(format!("the payload is not a receipt: {e}")))?;
    if payload.typ != RECEIPT_TYPE {
        return Err(ReceiptError::Malformed(format!(
            "typ is {:?}, expected {RECEIPT_TYPE:?}",
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
    conclave_protocol::jws::check_critical_headers(receipt).map_err(ReceiptError::Malformed)?;
    Ok(VerifiedReceipt {
        issued_at,
        party: payload.party,
        inputs: payload.inputs,
        result: payload.result,
        token_claims: verified.claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://attest.example";

    /// A receipt signed by `identity`, embedding a token only `verifier` accepts, with `header`.
    fn receipt(identity: &TeeIdentity, header: Value) -> String {
        identity.sign_jws(
            &header,
            &json!({
                "typ": RECEIPT_TYPE,
                "iat": now(),
                "party": "woodgrove",
                "inputs": [],
                "result": {"k": 5, "reference_year": 2026, "total_records": 0,
                           "top_countries": [], "top_countries_suppressed": 0, "companies": {},
                           "salary_by_country": {"groups": [], "suppressed_groups": 0},
                           "salary_by_generation": {"groups": [], "suppressed_groups": 0}},
                "attestation": identity.self_issued_token(ISSUER),
            }),
        )
    }

    /// A verifier that trusts the identity's own key as if it were the attestation service's:
    /// enough to reach the receipt's own checks.
    fn verifier(identity: &TeeIdentity) -> TokenVerifier {
        let runtime: Value = serde_json::from_slice(identity.runtime_json()).unwrap();
        let mut key = runtime["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == SIGNING_KEY_ID)
            .unwrap()
            .clone();
        key["kid"] = "self-issued".into();
        key.as_object_mut().unwrap().remove("key_ops");
        TokenVerifier::with_jwks(
            Some(ISSUER.into()),
            &serde_json::from_value(json!({"keys": [key]})).unwrap(),
        )
        .with_algorithms(&[jsonwebtoken::Algorithm::ES256])
    }

    #[tokio::test]
    async fn receipts_with_critical_headers_not_understood_are_refused() {
        let identity = TeeIdentity::generate(None, &["127.0.0.1".into()]).unwrap();
        let verifier = verifier(&identity);
        let plain = receipt(
            &identity,
            json!({"alg": "ES256", "typ": "JWT", "kid": SIGNING_KEY_ID}),
        );
        let verified = verify(&plain, &verifier).await.unwrap();
        assert_eq!(verified.party, "woodgrove");

        // Validly signed by the same key, but marking an extension as critical (RFC 7515
        // §4.1.11): refused, with the name.
        let critical = receipt(
            &identity,
            json!({"alg": "ES256", "typ": "JWT", "kid": SIGNING_KEY_ID,
                   "crit": ["urn:example:must-understand"], "urn:example:must-understand": 1}),
        );
        let err = verify(&critical, &verifier).await.unwrap_err().to_string();
        assert!(
            err.contains("marks \"urn:example:must-understand\" as critical"),
            "{err}"
        );
        // A crit naming a header the JWS does not carry is malformed.
        let dangling = receipt(
            &identity,
            json!({"alg": "ES256", "typ": "JWT", "kid": SIGNING_KEY_ID, "crit": ["exp2"]}),
        );
        let err = verify(&dangling, &verifier).await.unwrap_err().to_string();
        assert!(err.contains("does not carry"), "{err}");
    }
}
