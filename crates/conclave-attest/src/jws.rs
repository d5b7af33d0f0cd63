//! Compact JWS with RS256 (RSA PKCS#1 v1.5, SHA-256) through aws-lc-rs. Only signing lives here:
//! verification of untrusted tokens goes through the `jsonwebtoken` crate ([`crate::verify`]).

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
    payload: &serde_json::Value,
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
