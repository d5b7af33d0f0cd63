//! Result receipts: an analysis result signed inside the TEE (ES256, the key published in the
//! attestation token's `x-ms-runtime.keys`), embedding that token and the ids and SHA-256 of
//! every input. The format and its offline verification are `conclave_protocol::receipt`'s;
//! here the TEE signs, and the result is the workload's [`AnalysisResult`].

use serde_json::json;

pub use conclave_protocol::receipt::{InputDescriptor, RECEIPT_TYPE, ReceiptError};
use conclave_protocol::receipt::{ReceiptPayload, SIGNING_KEY_ID};
use conclave_protocol::token::TokenVerifier;

use crate::analytics::AnalysisResult;
use crate::identity::{TeeIdentity, now};

/// A verified receipt of the workload's analysis.
pub type VerifiedReceipt = conclave_protocol::receipt::VerifiedReceipt<AnalysisResult>;

/// Signs a receipt (compact JWS) for `result`.
pub fn issue(
    identity: &TeeIdentity,
    token: &str,
    party: &str,
    inputs: &[InputDescriptor],
    result: &AnalysisResult,
) -> String {
    issue_as(identity, token, RECEIPT_TYPE, party, inputs, result)
}

/// Signs a receipt (compact JWS) of type `typ` (a `conclave_protocol::receipt` type) for
/// `result`, embedding `token`, the attestation token that publishes the signing key.
pub fn issue_as<R: serde::Serialize + Clone>(
    identity: &TeeIdentity,
    token: &str,
    typ: &str,
    party: &str,
    inputs: &[InputDescriptor],
    result: &R,
) -> String {
    identity.sign_jws(
        &json!({"alg": "ES256", "typ": "JWT", "kid": SIGNING_KEY_ID}),
        &serde_json::to_value(ReceiptPayload {
            typ: typ.into(),
            iat: now(),
            party: party.into(),
            inputs: inputs.to_vec(),
            result: result.clone(),
            attestation: token.into(),
        })
        .expect("a receipt serialises"),
    )
}

/// Checks a receipt of the workload's analysis offline ([`conclave_protocol::receipt::verify`]).
///
/// # Errors
/// [`ReceiptError`], as there.
pub async fn verify(
    receipt: &str,
    verifier: &TokenVerifier,
) -> Result<VerifiedReceipt, ReceiptError> {
    conclave_protocol::receipt::verify(receipt, verifier).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
