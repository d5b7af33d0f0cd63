//! Compact JWS with RS256 (RSA PKCS#1 v1.5, SHA-256) through aws-lc-rs. Signing lives here, and
//! the header rule every verifier applies ([`check_critical_headers`]); verification of
//! untrusted tokens goes through the `jsonwebtoken` crate ([`crate::token`]).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The RSA public modulus and exponent, big-endian without leading zeros.
pub fn rsa_public_components(key: &RsaKeyPair) -> (Vec<u8>, Vec<u8>) {
    let public = key.public_key();
    (
        public.modulus().big_endian_without_leading_zero().to_vec(),
        public.exponent().big_endian_without_leading_zero().to_vec(),
    )
}

/// Signs `payload` as a compact JWS: `base64url(header).base64url(payload).base64url(sig)`.
/// The header gets `"alg": "RS256"` added.
pub fn sign_rs256(
    mut header: serde_json::Map<String, serde_json::Value>,
    payload: &impl serde::Serialize,
    key: &RsaKeyPair,
) -> Result<String, aws_lc_rs::error::Unspecified> {
    header.insert("alg".into(), "RS256".into());
    let signing_input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&header).expect("header serialises")),
        b64(&serde_json::to_vec(payload).expect("payload serialises"))
    );
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )?;
    Ok(format!("{signing_input}.{}", b64(&sig)))
}

/// Header parameters this project understands when a JWS marks them critical: none. Conclave's
/// tokens, release responses and receipts use no extension that needs `crit`.
pub const UNDERSTOOD_CRITICAL_HEADERS: [&str; 0] = [];

/// RFC 7515 §4.1.11: a JWS whose protected header lists in `crit` a parameter the recipient does
/// not understand must be rejected, however good its signature. Checks a compact JWS's header
/// (`header.payload.signature`): `Err` says which names are not understood, or what is malformed
/// about `crit` (it must be a non-empty array of strings, each present in the header, none a
/// parameter the JWS specification itself defines).
pub fn check_critical_headers(jws: &str) -> Result<(), String> {
    let header = jws
        .split('.')
        .next()
        .and_then(|h| crate::b64::b64url_decode(h).ok())
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .ok_or_else(|| "the JWS header is not base64url JSON".to_string())?;
    let Some(crit) = header.get("crit") else {
        return Ok(());
    };
    let names: Vec<&str> = crit
        .as_array()
        .filter(|a| !a.is_empty())
        .and_then(|a| a.iter().map(serde_json::Value::as_str).collect())
        .ok_or_else(|| {
            format!(
                "the header's \"crit\" is {crit}, not a non-empty array of names (RFC 7515 §4.1.11)"
            )
        })?;
    const REGISTERED: [&str; 11] = [
        "alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit",
    ];
    if let Some(n) = names.iter().find(|n| REGISTERED.contains(n)) {
        return Err(format!(
            "the header's \"crit\" lists {n:?}, a parameter the JWS specification defines, which must not be listed (RFC 7515 §4.1.11)"
        ));
    }
    if let Some(n) = names.iter().find(|n| header.get(**n).is_none()) {
        return Err(format!(
            "the header's \"crit\" lists {n:?}, which the header does not carry (RFC 7515 §4.1.11)"
        ));
    }
    let unknown: Vec<&str> = names
        .into_iter()
        .filter(|n| !UNDERSTOOD_CRITICAL_HEADERS.contains(n))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        // Names come from whoever made the token: at most three, each cut short, reach messages
        // and the audit log.
        let shown: Vec<String> = unknown
            .iter()
            .take(3)
            .map(|n| {
                let cut = (0..=n.len().min(64))
                    .rev()
                    .find(|&i| n.is_char_boundary(i))
                    .unwrap_or(0);
                format!("{:?}", &n[..cut])
            })
            .collect();
        let more = if unknown.len() > 3 {
            format!(" and {} more", unknown.len() - 3)
        } else {
            String::new()
        };
        Err(format!(
            "the header marks {}{more} as critical (RFC 7515 §4.1.11), which this verifier does not understand",
            shown.join(", ")
        ))
    }
}

/// The claims of a compact JWS/JWT, read without verifying anything (for display only: a
/// workload showing its own token).
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&crate::attestation::b64url_decode(payload).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jws(header: serde_json::Value) -> String {
        format!("{}.e30.c2ln", b64(header.to_string().as_bytes()))
    }

    #[test]
    fn critical_headers_not_understood_are_refused_with_their_names() {
        assert!(check_critical_headers(&jws(serde_json::json!({"alg": "RS256"}))).is_ok());
        let err = check_critical_headers(&jws(serde_json::json!({
            "alg": "RS256", "crit": ["urn:example:must-understand"],
            "urn:example:must-understand": true
        })))
        .unwrap_err();
        assert!(err.contains("\"urn:example:must-understand\""), "{err}");
        assert!(err.contains("does not understand"), "{err}");
        // Listed but absent, empty, not an array, or a registered name: malformed.
        for (header, says) in [
            (
                serde_json::json!({"alg": "RS256", "crit": ["exp"]}),
                "does not carry",
            ),
            (
                serde_json::json!({"alg": "RS256", "crit": []}),
                "non-empty array",
            ),
            (
                serde_json::json!({"alg": "RS256", "crit": "b64"}),
                "non-empty array",
            ),
            (
                serde_json::json!({"alg": "RS256", "crit": [1]}),
                "non-empty array",
            ),
            (
                serde_json::json!({"alg": "RS256", "crit": ["alg"]}),
                "JWS specification defines",
            ),
        ] {
            let err = check_critical_headers(&jws(header.clone())).unwrap_err();
            assert!(err.contains(says), "{header}: {err}");
        }
    }
}
