//! The vault's wire formats, shared by the vault and its clients: Azure Key Vault's keys API
//! shapes (API version 7.4: `KeyCreateParameters`, `KeyUpdateParameters`,
//! `KeyReleaseParameters`, `KeyReleaseResult`, `KeyVaultError`), and Conclave's extensions
//! (grants, the audit log's proofs).

use std::collections::{BTreeMap, BTreeSet};

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

/// `KeyAttributes`: what a request may set (`enabled`, `exportable`, `nbf`, `exp`, Unix
/// seconds) and what the vault answers besides (`created`, `updated`, `recoveryLevel`,
/// `recoverableDays`). A member a request sets that the vault decides is ignored.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct KeyAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
    /// Not before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expires (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<u64>,
    /// `Recoverable+Purgeable`, or `Recoverable` under purge protection (Azure's
    /// `DeletionRecoveryLevel`).
    #[serde(
        rename = "recoveryLevel",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub recovery_level: Option<String>,
    /// Days a deleted key stays recoverable.
    #[serde(
        rename = "recoverableDays",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub recoverable_days: Option<u64>,
}

/// A JSON Web Key (RFC 7517 §4, RSA members RFC 7518 §6.3.1) as Key Vault answers it: the
/// public part only. `key_hsm` (Azure's transfer blob) appears only in a release's payload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct JsonWebKey {
    /// `https://<vault>/keys/<name>/<version>`.
    pub kid: String,
    /// `RSA` or `RSA-HSM`.
    pub kty: String,
    pub key_ops: Vec<String>,
    /// The modulus, base64url (big-endian, no padding).
    pub n: String,
    /// The public exponent, base64url.
    pub e: String,
    /// base64url of the [`KeyTransferBlob`] JSON carrying the wrapped private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hsm: Option<String>,
}

impl JsonWebKey {
    /// The key's version: the last path segment of its `kid`.
    pub fn version(&self) -> &str {
        self.kid.rsplit('/').next().unwrap_or_default()
    }
}

/// `KeyBundle`: what create, get, update, rotate, restore and recover answer. Never the
/// private key.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KeyBundle {
    pub key: JsonWebKey,
    pub attributes: KeyAttributes,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<ReleasePolicyBody>,
}

/// `DeletedKeyBundle`: a deleted key's latest version, recoverable until
/// `scheduledPurgeDate` (Unix seconds).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeletedKeyBundle {
    #[serde(flatten)]
    pub bundle: KeyBundle,
    /// `https://<vault>/deletedkeys/<name>`.
    #[serde(rename = "recoveryId")]
    pub recovery_id: String,
    /// Unix seconds.
    #[serde(rename = "deletedDate")]
    pub deleted_date: u64,
    /// Unix seconds.
    #[serde(rename = "scheduledPurgeDate")]
    pub scheduled_purge_date: u64,
}

/// `KeyItem`: a key (or version) as listings show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KeyItem {
    pub kid: String,
    pub attributes: KeyAttributes,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// `DeletedKeyItem`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeletedKeyItem {
    #[serde(flatten)]
    pub item: KeyItem,
    #[serde(rename = "recoveryId")]
    pub recovery_id: String,
    #[serde(rename = "deletedDate")]
    pub deleted_date: u64,
    #[serde(rename = "scheduledPurgeDate")]
    pub scheduled_purge_date: u64,
}

/// `KeyListResult`: `GET /keys` and `GET /keys/{name}/versions` (one page: `nextLink` is
/// always null).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KeyListResult {
    pub value: Vec<KeyItem>,
    #[serde(rename = "nextLink", default)]
    pub next_link: Option<String>,
}

/// `DeletedKeyListResult`: `GET /deletedkeys`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeletedKeyListResult {
    pub value: Vec<DeletedKeyItem>,
    #[serde(rename = "nextLink", default)]
    pub next_link: Option<String>,
}

/// `KeyOperationsParameters`: `POST /keys/{name}/{version}/rewrap` (Conclave's re-wrap, in the
/// shape of Azure's wrapKey/unwrapKey).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KeyOperationsParameters {
    /// `RSA-OAEP-256`.
    pub alg: String,
    /// The wrapped key, base64url.
    pub value: String,
}

/// `KeyOperationResult`: the re-wrapped key under the version `kid` names.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KeyOperationResult {
    pub kid: String,
    /// base64url.
    pub value: String,
}

/// `BackupKeyResult`: the backup blob, base64url.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BackupKeyResult {
    pub value: String,
}

/// `KeyRestoreParameters`: `POST /keys/restore` with a [`BackupKeyResult`]'s blob.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KeyRestoreParameters {
    pub value: String,
}

/// Azure's `KeyRotationPolicy` (`GET`/`PUT /keys/{name}/rotationpolicy`).
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct KeyRotationPolicy {
    /// `https://<vault>/keys/<name>/rotationpolicy` (answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "lifetimeActions", default)]
    pub lifetime_actions: Option<Vec<LifetimeAction>>,
    #[serde(default)]
    pub attributes: KeyRotationPolicyAttributes,
}

/// `LifetimeActions`: when (`trigger`) to do what (`action`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LifetimeAction {
    #[serde(default)]
    pub trigger: LifetimeActionTrigger,
    pub action: LifetimeActionType,
}

/// `LifetimeActionsTrigger`: ISO 8601 durations.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct LifetimeActionTrigger {
    #[serde(
        rename = "timeAfterCreate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub time_after_create: Option<String>,
    #[serde(
        rename = "timeBeforeExpiry",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub time_before_expiry: Option<String>,
}

/// `LifetimeActionsType`: `Rotate` or `Notify`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LifetimeActionType {
    #[serde(rename = "type")]
    pub kind: String,
}

/// `KeyRotationPolicyAttributes`.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct KeyRotationPolicyAttributes {
    /// New versions expire this long after creation (ISO 8601 duration).
    #[serde(
        rename = "expiryTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expiry_time: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<u64>,
}

/// The unit of a key's privacy-budget ledger: ε is counted in millionths, each release's ε
/// rounded **up**, so that sums are exact and rounding never lets more through than was set.
pub const EPSILON_MICROS: f64 = 1_000_000.0;

/// ε of `micros` millionths: the nearest double to the decimal (0.3 for 300000), as a person
/// would write it.
pub fn epsilon_from_micros(micros: u64) -> f64 {
    micros as f64 / EPSILON_MICROS
}

/// `PUT /keys/{name}/privacybudget` (Conclave's, not Azure's API): the total differential-privacy
/// loss ε the owner allows over all releases of the key (every version). Releases already made
/// stay spent; a total below what is spent leaves nothing to release.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivacyBudgetParameters {
    /// Finite, at least 0.
    #[serde(rename = "totalEpsilon")]
    pub total_epsilon: f64,
}

/// A key's privacy-budget ledger (`GET`/`PUT /keys/{name}/privacybudget`). With a budget set, the
/// key is released only to a workload that attests the ε of its run
/// (`x-ms-runtime.contract.epsilon`, see conclave-contract's `policy`), and each release debits
/// that ε in the same durable transaction as its audit entry; a release that would overspend is
/// refused, with what remains in the reason.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PrivacyBudget {
    /// `https://<vault>/keys/<name>/privacybudget`.
    pub id: String,
    #[serde(rename = "totalEpsilon")]
    pub total_epsilon: f64,
    /// Spent by the releases so far.
    #[serde(rename = "spentEpsilon")]
    pub spent_epsilon: f64,
    /// `totalEpsilon - spentEpsilon`, at least 0.
    #[serde(rename = "remainingEpsilon")]
    pub remaining_epsilon: f64,
    /// Releases debited.
    pub releases: u64,
    /// Unix seconds of the last change.
    pub updated: u64,
}

/// The signed payload of a release (`KeyReleaseResult.value`, a JWS): the request echoed and the
/// released key, as Azure's secure key release answers it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyReleasePayload {
    pub request: KeyReleaseEcho,
    pub response: KeyReleaseResponse,
}

/// The release request as the vault saw it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyReleaseEcho {
    #[serde(rename = "api-version")]
    pub api_version: String,
    /// The wrapping algorithm ([`crate::keywrap::WrapAlgorithm`]'s name).
    pub enc: String,
    pub kid: String,
    pub nonce: Option<String>,
}

/// `{"key": <the released key's bundle, its JWK carrying key_hsm>}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyReleaseResponse {
    pub key: KeyBundle,
}

/// Azure's BYOK transfer blob, the JSON inside `key_hsm`: the private key (PKCS#8) wrapped to
/// the TEE's key with `header.enc`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyTransferBlob {
    pub schema_version: String,
    pub header: KeyTransferHeader,
    /// base64url of the wrapped key.
    pub ciphertext: String,
    pub generator: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyTransferHeader {
    /// The wrapping key's id (the TEE's key).
    pub kid: String,
    /// `dir`.
    pub alg: String,
    /// `CKM_RSA_AES_KEY_WRAP` or `RSA_OAEP_256`.
    pub enc: String,
}

/// A release policy as Azure sends it: the policy JSON, base64url-encoded, in `data`.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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

/// A principal's grant on a key (Conclave extension).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Grant {
    pub principal: String,
    pub permissions: BTreeSet<Permission>,
}

/// `GET /keys/{name}/grants`: the key's owner and its grants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct GrantList {
    pub owner: String,
    pub value: Vec<Grant>,
}

/// `POST /principals/{name}` (admin only): whether the new principal is an admin.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PrincipalRequest {
    #[serde(default)]
    pub admin: bool,
}

/// The new principal's bearer token, shown once (the vault keeps only its hash).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PrincipalCreated {
    pub token: String,
}

/// `GET /audit`: the entries the caller may see, and the log's head (the last entry's MAC).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub value: Vec<AuditEntry>,
    /// `[seq, mac]` of the log's last entry, or null for an empty log.
    #[schema(value_type = Option<Vec<serde_json::Value>>, min_items = 2, max_items = 2)]
    pub head: Option<(u64, String)>,
}

/// `GET /audit/key`: the C2SP signed-note verifier key of the audit checkpoints.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditVerifierKey {
    pub verifier_key: String,
}

/// What happened: one audited action.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// The authenticated principal, or `anonymous`.
    pub principal: String,
    /// `create`, `update`, `policy-change`, `grant`, `revoke`, `release`, `get`, `principal`, …
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `ok`, `granted` or `denied`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The attestation token's launch measurement and platform, for releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Other details (the grantee, permissions, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

impl AuditEvent {
    /// An event now, by `principal`.
    pub fn new(principal: &str, action: &str, key: Option<&str>, outcome: &str) -> Self {
        AuditEvent {
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            principal: principal.into(),
            action: action.into(),
            key: key.map(Into::into),
            outcome: outcome.into(),
            reason: None,
            measurement: None,
            platform: None,
            detail: None,
        }
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// An entry of the audit log as stored and served: the event, its sequence number and its
/// place in the MAC chain (hex HMAC-SHA-256 over `seq ‖ prev ‖ event`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub prev: String,
    pub mac: String,
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// Azure's error shape, `{"error": {"code", "message"}}`: what every refusal and failure of the
/// vault answers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AzureError {
    pub error: AzureErrorDetail,
}

impl AzureError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        AzureError {
            error: AzureErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ProvenEntry {
    /// The entry's index in the log (its `seq`).
    pub seq: u64,
    /// Standard base64 of the entry as stored (JSON), the leaf's exact bytes.
    pub leaf: String,
    /// The inclusion proof (RFC 9162 §2.1.3): standard base64 of each 32-byte hash.
    pub proof: Vec<String>,
}

/// A consistency proof from an earlier tree size (RFC 9162 §2.1.4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Consistency {
    pub from_size: u64,
    pub proof: Vec<String>,
}

/// What `GET /audit/proofs` answers and `conclave audit verify --checkpoint` checks: a signed
/// checkpoint, the caller's entries with inclusion proofs against it, and optionally a
/// consistency proof from an earlier checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
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
