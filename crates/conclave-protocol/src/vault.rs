//! The vault's wire formats, shared by the vault and its clients: Azure Key Vault's keys API
//! shapes (API version 7.4: `KeyCreateParameters`, `KeyUpdateParameters`,
//! `KeyReleaseParameters`, `KeyReleaseResult`, `KeyVaultError`), and Conclave's extensions
//! (grants, the audit log's proofs).

use std::collections::BTreeMap;

/// `POST /keys/{name}/create`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CreateKeyRequest {
    #[serde(default)]
    pub kty: Option<String>,
    #[serde(default)]
    pub key_size: Option<u32>,
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
    #[serde(default)]
    pub attributes: Option<KeyAttributes>,
    #[serde(default)]
    pub release_policy: Option<ReleasePolicyBody>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub public_exponent: Option<u32>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KeyAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

/// A release policy as Azure sends it: the policy JSON, base64url-encoded, in `data`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ReleasePolicyBody {
    #[serde(rename = "contentType", default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub immutable: Option<bool>,
}

/// `PATCH /keys/{name}/{version}`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UpdateKeyRequest {
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
    #[serde(default)]
    pub attributes: Option<KeyAttributes>,
    #[serde(default)]
    pub release_policy: Option<ReleasePolicyBody>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
}

/// `POST /keys/{name}[/{version}]/release`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ReleaseRequest {
    /// The attestation token.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc: Option<String>,
}

/// `{"value": "<JWS>"}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ReleaseResponse {
    pub value: String,
}

/// `PUT /keys/{name}/grants/{principal}` (Conclave extension).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct GrantRequest {
    pub permissions: Vec<Permission>,
}

/// Azure's error shape, `{"error": {"code", "message"}}`: what every refusal and failure of the
/// vault answers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AzureError {
    pub error: AzureErrorDetail,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AzureErrorDetail {
    /// A stable code (`Forbidden`, `BadParameter`, `KeyNotFound`, `Unauthorized`, …).
    pub code: String,
    /// What was wrong and what to do.
    pub message: String,
}

/// Key operations a new key gets when the request names none.
pub const DEFAULT_KEY_OPS: [&str; 4] = ["encrypt", "decrypt", "wrapKey", "unwrapKey"];

pub fn kid(vault_url: &str, name: &str, version: &str) -> String {
    format!("{vault_url}/keys/{name}/{version}")
}

/// What a grantee may do with a key.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Get,
    Release,
}

/// One audit entry with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProvenEntry {
    /// The entry's index in the log (its `seq`).
    pub seq: u64,
    /// Standard base64 of the entry as stored (JSON), the leaf's exact bytes.
    pub leaf: String,
    /// The inclusion proof (RFC 9162 §2.1.3): standard base64 of each 32-byte hash.
    pub proof: Vec<String>,
}

/// A consistency proof from an earlier tree size (RFC 9162 §2.1.4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Consistency {
    pub from_size: u64,
    pub proof: Vec<String>,
}

/// What `GET /audit/proofs` answers and `conclave audit verify --checkpoint` checks: a signed
/// checkpoint, the caller's entries with inclusion proofs against it, and optionally a
/// consistency proof from an earlier checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditBundle {
    /// The signed checkpoint (a C2SP signed note).
    pub checkpoint: String,
    pub entries: Vec<ProvenEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
}

/// Key and principal names: 1 to 127 letters, digits and dashes (Azure's rule for key names),
/// which also keeps them out of paths and log injection.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Key versions are 32 lowercase hex digits.
pub fn valid_version(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit())
}
