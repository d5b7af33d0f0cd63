//! JSON Web Key sets (RFC 7517 §5) as token issuers publish them (`GET /certs` of the
//! attestation service and of Microsoft Azure Attestation, an OpenID provider's `jwks_uri`), and
//! the OpenID provider metadata that points at them (OpenID Connect Discovery 1.0 §3).

use std::collections::BTreeMap;

/// `{"keys": [JWK]}` (RFC 7517 §5).
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// One public JWK (RFC 7517 §4; RSA members RFC 7518 §6.3.1, EC members §6.2.1). Members a
/// verifier does not use are kept in `other`; whether a key is usable (type, members present and
/// agreeing with its certificate) is the verifier's decision, key by key.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct Jwk {
    /// `RSA`, `EC`, …
    #[serde(default)]
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `sig` or `enc` (RFC 7517 §4.2).
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Operations the key is for (RFC 7517 §4.3), e.g. `["encrypt"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// Azure's secure key release grammar's mark of the environment's encryption key (`enc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC curve (`P-256`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC point coordinates, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The key's certificate chain (RFC 7517 §4.7): standard base64 DER, the key's own first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// OpenID provider metadata (OpenID Connect Discovery 1.0 §3), as far as token verification
/// and Conclave's attestation service use it.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub jwks_uri: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_types_supported: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims_supported: Vec<String>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: BTreeMap<String, serde_json::Value>,
}
