//! base64url (RFC 4648 §5), as JOSE (RFC 7515 §2) and Microsoft Azure Attestation use it.

use base64::Engine as _;

/// base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, padded or not (MAA clients send both).
pub fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim().trim_end_matches('='))
}
