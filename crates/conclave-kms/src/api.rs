//! Wire types of the keys API, shaped as Azure Key Vault's (`7.x` API versions), so Azure's own
//! SDKs talk to a Conclave vault.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::store::{KeyRecord, StoredPolicy};

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
    pub permissions: Vec<crate::store::Permission>,
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

pub fn policy_json(p: &StoredPolicy) -> Value {
    json!({ "contentType": p.content_type, "data": p.data, "immutable": p.immutable })
}

fn attributes_json(r: &KeyRecord) -> Value {
    let mut a = json!({
        "enabled": r.enabled,
        "created": r.created,
        "updated": r.updated,
        "recoveryLevel": "Purgeable",
        "exportable": r.exportable,
    });
    if let Some(nbf) = r.nbf {
        a["nbf"] = nbf.into();
    }
    if let Some(exp) = r.exp {
        a["exp"] = exp.into();
    }
    a
}

/// The public JSON Web Key of a record.
pub fn jwk_json(vault_url: &str, r: &KeyRecord) -> Value {
    json!({
        "kid": kid(vault_url, &r.name, &r.version),
        "kty": r.kty,
        "key_ops": r.key_ops,
        "n": r.n,
        "e": r.e,
    })
}

/// A KeyBundle: public key, attributes, release policy, tags. Never the private key.
pub fn bundle_json(vault_url: &str, r: &KeyRecord) -> Value {
    let mut b = json!({
        "key": jwk_json(vault_url, r),
        "attributes": attributes_json(r),
        "tags": r.tags,
    });
    if let Some(p) = &r.release_policy {
        b["release_policy"] = policy_json(p);
    }
    b
}

/// A KeyItem, as listings show it.
pub fn item_json(vault_url: &str, r: &KeyRecord) -> Value {
    json!({
        "kid": kid(vault_url, &r.name, &r.version),
        "attributes": attributes_json(r),
        "tags": r.tags,
    })
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
