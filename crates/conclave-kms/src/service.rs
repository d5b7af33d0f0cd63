//! The vault's HTTP service: Azure Key Vault's keys API (create, get, list versions, update,
//! release), plus grants, principals and the audit log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::RsaKeyPair;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use conclave_protocol::TokenVerifier;
use serde_json::{Value, json};
use tower_http::timeout::TimeoutLayer;

use crate::api::{
    self, CreateKeyRequest, GrantRequest, ReleasePolicyBody, ReleaseRequest, UpdateKeyRequest,
};
use crate::audit::AuditEvent;
use crate::crypto::{self, MasterKey};
use crate::policy::ReleasePolicy;
use crate::store::{DeletedKey, Grant, KeyRecord, Permission, Principal, Store, StoredPolicy};
use conclave_net::observe::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Largest request body (policies and tokens are a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Deepest JSON nesting accepted in a request body.
pub const MAX_JSON_DEPTH: usize = 32;

/// An attestation service whose tokens this vault accepts (when a key's policy names it).
pub struct Authority {
    pub issuer: String,
    pub verifier: TokenVerifier,
}

/// The vault's certificate chain and key for signing release responses.
pub struct SigningIdentity {
    pub key: RsaKeyPair,
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
}

pub struct VaultConfig {
    /// Public base URL, e.g. `https://127.0.0.1:8443` (key ids start with it).
    pub vault_url: String,
    pub authorities: Vec<Authority>,
    /// Refuse tokens for simulated evidence (`x-conclave-platform: sim`).
    pub hardware_only: bool,
    pub signing: SigningIdentity,
    pub deletion: DeletionPolicy,
}

/// How deleted keys are kept (Azure Key Vault's soft delete): recoverable for `retention`, and
/// with `purge_protection` not purgeable before that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletionPolicy {
    pub retention: Duration,
    pub purge_protection: bool,
}

impl Default for DeletionPolicy {
    /// Azure's default: 90 days, purge allowed.
    fn default() -> Self {
        DeletionPolicy {
            retention: Duration::from_secs(90 * 86_400),
            purge_protection: false,
        }
    }
}

pub struct Vault {
    config: VaultConfig,
    store: Store,
    master: MasterKey,
    metrics: Arc<Metrics>,
    /// `conclave_vault_key_releases_total{outcome, reason}`: `granted`, or `denied` with the
    /// refusal's code.
    releases: Family<ReleaseLabels, Counter>,
    /// Signs the audit log's checkpoints (origin: the vault URL without its scheme, `/audit`).
    log: crate::transparency::NoteSigner,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReleaseLabels {
    outcome: &'static str,
    reason: &'static str,
}

/// An Azure-style error: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct VaultError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    challenge: Option<String>,
}

impl VaultError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        VaultError {
            status,
            code,
            message: message.into(),
            challenge: None,
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }
    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }
    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!("{what} was not found in this vault"),
        )
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("vault internal error: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the vault could not complete the request; see its log",
        )
    }
}

impl From<crate::store::StoreError> for VaultError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            // The database is down or restarting: say so, and that a retry may succeed.
            crate::store::StoreError::Unavailable(message) => VaultError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!(
                    "{message}: the request was not carried out, or not acknowledged; try again"
                ),
            ),
            crate::store::StoreError::Conflict(message) => {
                VaultError::new(StatusCode::CONFLICT, "Conflict", message)
            }
            e => VaultError::internal(e),
        }
    }
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(c) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        resp
    }
}

pub(crate) type VResult<T> = Result<T, VaultError>;

/// What [`Vault::new_key_material`] makes: the fields of a [`KeyRecord`] that a new version
/// does not share with the key's other versions.
struct NewKeyMaterial {
    version: String,
    n: String,
    e: String,
    sealed_private: String,
}

/// The HKDF purpose of the audit checkpoints' Ed25519 seed (derived from the master key, so
/// every replica and a recovered vault sign with the same key).
const AUDIT_LOG_KEY_PURPOSE: &str = "audit-checkpoint-ed25519";

/// Who besides a key's owner may manage it ([`Vault::require_owner`]).
#[derive(Clone, Copy)]
enum Manager {
    OwnerOnly,
    /// Deleting, restoring, recovering and purging: an admin may act for an absent owner.
    OwnerOrAdmin,
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// A fresh bearer token for a principal.
pub fn new_token() -> String {
    let mut raw = [0u8; 32];
    SystemRandom::new()
        .fill(&mut raw)
        .expect("system randomness");
    format!(
        "cvt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// Depth of a JSON text, without parsing it into values (so a deep body cannot exhaust the stack).
fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in body {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn parse_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> VResult<T> {
    let body = body.map_err(|r| {
        let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "RequestTooLarge"
        } else {
            "BadParameter"
        };
        VaultError::new(r.status(), code, format!("{r} (limit {MAX_BODY} bytes)"))
    })?;
    parse_json_body(&body)
}

/// A request body as the vault parses it: nesting depth checked before parsing, then JSON into
/// the request type. (Public for the fuzzer.)
pub fn parse_json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> VResult<T> {
    if json_depth(body) > MAX_JSON_DEPTH {
        return Err(VaultError::bad(format!(
            "the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    serde_json::from_slice(body)
        .map_err(|e| VaultError::bad(format!("malformed request body: {e}")))
}

impl Vault {
    pub fn new(config: VaultConfig, store: Store, master: MasterKey) -> Arc<Self> {
        let mut config = config;
        config.vault_url = config.vault_url.trim_end_matches('/').to_string();
        let metrics = Metrics::new("vault");
        let releases = Family::<ReleaseLabels, Counter>::default();
        metrics.register(
            "vault_key_releases",
            "Secure key release requests decided, by outcome (granted, denied) and refusal reason code",
            releases.clone(),
        );
        let audit_commits = conclave_net::observe::latency_histogram();
        metrics.register(
            "vault_audit_append_seconds",
            "Time an audit-log append takes until its entry is durable (group commit included)",
            audit_commits.clone(),
        );
        store.observe_audit_appends(audit_commits);
        let origin = format!(
            "{}/audit",
            config
                .vault_url
                .split_once("://")
                .map_or(config.vault_url.as_str(), |(_, rest)| rest)
        );
        let log = crate::transparency::NoteSigner::from_seed(
            &origin,
            master.derive_seed(AUDIT_LOG_KEY_PURPOSE).as_ref(),
        )
        .expect("a vault URL has no whitespace or +");
        Arc::new(Vault {
            config,
            store,
            master,
            metrics,
            releases,
            log,
        })
    }

    pub(crate) fn count_release(&self, outcome: &'static str, reason: &'static str) {
        self.releases
            .get_or_create(&ReleaseLabels { outcome, reason })
            .inc();
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn config(&self) -> &VaultConfig {
        &self.config
    }

    pub(crate) fn master(&self) -> &MasterKey {
        &self.master
    }

    pub fn vault_url(&self) -> &str {
        &self.config.vault_url
    }

    /// Creates (or replaces the token of) a principal; returns its new bearer token.
    pub fn add_principal(&self, actor: &str, name: &str, admin: bool) -> VResult<String> {
        if !api::valid_name(name) {
            return Err(VaultError::bad(
                "principal names are 1-127 letters, digits and dashes",
            ));
        }
        let token = new_token();
        let p = Principal {
            name: name.into(),
            token_sha256: sha256_hex(token.as_bytes()),
            admin,
        };
        self.store.put_principal(
            &p,
            AuditEvent::new(actor, "principal", None, "ok")
                .detail(json!({"principal": name, "admin": admin})),
        )?;
        Ok(token)
    }

    /// Makes the vault's first admin unless one exists (see [`Store::put_first_admin`]);
    /// returns its token when made.
    pub fn add_first_admin(&self) -> VResult<Option<String>> {
        let token = new_token();
        let p = Principal {
            name: "admin".into(),
            token_sha256: sha256_hex(token.as_bytes()),
            admin: true,
        };
        let event = AuditEvent::new("setup", "principal", None, "ok")
            .detail(json!({"principal": "admin", "admin": true}));
        Ok(self.store.put_first_admin(&p, event)?.then_some(token))
    }

    fn challenge(&self, message: &str) -> VaultError {
        let url = &self.config.vault_url;
        VaultError {
            challenge: Some(format!(
                r#"Bearer authorization="{url}/oauth2/authorize", resource="{url}""#
            )),
            ..VaultError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
        }
    }

    /// The SHA-256 (hex) of the request's bearer token.
    fn bearer_hash(&self, headers: &HeaderMap) -> VResult<String> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(
                self.challenge("this request needs a bearer token (Authorization: Bearer <token>)")
            );
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| self.challenge("the Authorization header is not a bearer token"))?;
        Ok(sha256_hex(token.as_bytes()))
    }

    /// 401 for a token no principal has, audited.
    fn unknown_token(&self) -> VaultError {
        // The audit entry says what the caller was told.
        let message = "the bearer token is not valid for this vault";
        let _ = self
            .store
            .audit(AuditEvent::new("anonymous", "authenticate", None, "denied").reason(message));
        self.challenge(message)
    }

    fn authenticate(&self, headers: &HeaderMap) -> VResult<Principal> {
        let hash = self.bearer_hash(headers)?;
        self.store
            .principal_by_token_hash(&hash)?
            .ok_or_else(|| self.unknown_token())
    }

    /// [`authenticate`](Self::authenticate) and [`key_or_404`](Self::key_or_404) in one read
    /// (one database round trip): the key's record is the caller's to see only once it is
    /// authenticated, so an unknown token gets 401 whether or not the key exists.
    fn authenticate_with_key(
        &self,
        headers: &HeaderMap,
        name: &str,
        version: Option<&str>,
    ) -> VResult<(Principal, VResult<KeyRecord>)> {
        let hash = self.bearer_hash(headers)?;
        if !api::valid_name(name) || version.is_some_and(|v| !api::valid_version(v)) {
            // Names are checked after authentication, as key_or_404 does.
            let who = self.authenticate(headers)?;
            return Ok((who, self.key_or_404(name, version)));
        }
        let (who, rec) = self.store.principal_and_key(&hash, name, version)?;
        let who = who.ok_or_else(|| self.unknown_token())?;
        Ok((
            who,
            rec.ok_or_else(|| VaultError::not_found(&format!("key {name}"))),
        ))
    }

    fn key_or_404(&self, name: &str, version: Option<&str>) -> VResult<KeyRecord> {
        if !api::valid_name(name) || version.is_some_and(|v| !api::valid_version(v)) {
            return Err(VaultError::bad(
                "key names are 1-127 letters, digits and dashes; versions are 32 hex digits",
            ));
        }
        self.store
            .key(name, version)?
            .ok_or_else(|| VaultError::not_found(&format!("key {name}")))
    }

    pub(crate) fn permitted(
        &self,
        who: &Principal,
        rec: &KeyRecord,
        perm: Permission,
    ) -> VResult<bool> {
        if rec.owner == who.name {
            return Ok(true);
        }
        let grant = self.store.grant(&rec.name, &who.name)?;
        Ok(grant.is_some_and(|g| {
            g.permissions.contains(&perm)
                || (perm == Permission::Get && g.permissions.contains(&Permission::Release))
        }))
    }

    fn parse_policy(body: &ReleasePolicyBody) -> VResult<StoredPolicy> {
        let data = body
            .data
            .as_deref()
            .ok_or_else(|| VaultError::bad("release_policy.data is missing"))?;
        let bytes = conclave_protocol::b64::b64url_decode(data)
            .map_err(|_| VaultError::bad("release_policy.data is not base64url"))?;
        ReleasePolicy::parse(&bytes).map_err(|e| VaultError::bad(e.to_string()))?;
        Ok(StoredPolicy {
            content_type: body
                .content_type
                .clone()
                .unwrap_or_else(|| "application/json; charset=utf-8".into()),
            data: conclave_protocol::b64::b64url(&bytes),
            immutable: body.immutable.unwrap_or(false),
        })
    }

    fn create_key(&self, who: &Principal, name: &str, req: CreateKeyRequest) -> VResult<Value> {
        if !api::valid_name(name) {
            return Err(VaultError::bad(
                "key names are 1-127 letters, digits and dashes",
            ));
        }
        if self.store.deleted_key(name)?.is_some() {
            return Err(VaultError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "key {name} is deleted but recoverable: recover it (POST /deletedkeys/{name}/recover) or purge it before creating a key of that name"
                ),
            ));
        }
        if let Some(existing) = self.store.key(name, None)?
            && existing.owner != who.name
        {
            return Err(self.deny(
                who,
                "create",
                name,
                "the key exists and belongs to another principal",
            ));
        }
        let kty = req.kty.unwrap_or_else(|| "RSA".into());
        if kty != "RSA" && kty != "RSA-HSM" {
            return Err(VaultError::bad(format!(
                "kty {kty} is not supported: use RSA or RSA-HSM"
            )));
        }
        if req.public_exponent.is_some_and(|e| e != 65537) {
            return Err(VaultError::bad(
                "only the public exponent 65537 is supported",
            ));
        }
        let attributes = req.attributes.unwrap_or_default();
        let exportable = attributes.exportable.unwrap_or(false);
        let release_policy = req
            .release_policy
            .as_ref()
            .map(Self::parse_policy)
            .transpose()?;
        if exportable != release_policy.is_some() {
            return Err(VaultError::bad(
                "an exportable key needs a release policy, and a release policy needs an exportable key",
            ));
        }
        let size = req.key_size.unwrap_or(2048);
        let new = self.new_key_material(name, size)?;
        let t = now();
        let rec = KeyRecord {
            name: name.into(),
            sealed_private: new.sealed_private,
            version: new.version,
            kty,
            key_size: size,
            key_ops: req
                .key_ops
                .unwrap_or_else(|| api::DEFAULT_KEY_OPS.map(String::from).to_vec()),
            n: new.n,
            e: new.e,
            enabled: attributes.enabled.unwrap_or(true),
            exportable,
            created: t,
            updated: t,
            nbf: attributes.nbf,
            exp: attributes.exp,
            release_policy,
            owner: who.name.clone(),
            tags: req.tags.unwrap_or_default(),
            audit_from: None,
        };
        self.store.create_key(
            &rec,
            AuditEvent::new(&who.name, "create", Some(name), "ok").detail(
                json!({"version": rec.version, "exportable": exportable, "key_size": size}),
            ),
        )?;
        Ok(api::bundle_json(&self.config.vault_url, &rec))
    }

    /// Parses a request body; a rejected body is recorded in the audit log too.
    fn body<T: serde::de::DeserializeOwned>(
        &self,
        who: &Principal,
        action: &str,
        key: &str,
        body: Result<Bytes, BytesRejection>,
    ) -> VResult<T> {
        parse_body(body).map_err(|e| self.rejected(who, action, key, e))
    }

    /// Records a refused request in the audit log (403s are recorded where they are decided).
    fn rejected(&self, who: &Principal, action: &str, key: &str, e: VaultError) -> VaultError {
        if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN {
            let event =
                AuditEvent::new(&who.name, action, Some(key), "denied").reason(e.message.clone());
            if let Err(err) = self.store.audit(event) {
                return VaultError::from(err);
            }
        }
        e
    }

    /// `POST /keys/{name}/backup`: every version of the key, sealed under the master key, so
    /// the blob opens only in a vault of the same security domain (Azure Key Vault's backup
    /// semantics: restorable only within the same geography and subscription). Owner only.
    fn backup_key(&self, who: &Principal, name: &str) -> VResult<Value> {
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("backup", "back it up"),
            Manager::OwnerOnly,
        )?;
        let versions = self.store.versions(name)?;
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(&json!({"name": name, "versions": versions}))
                .map_err(VaultError::internal)?,
        );
        let sealed = self.master.seal(BACKUP_FORMAT.as_bytes(), &plain);
        let blob = json!({
            "format": BACKUP_FORMAT,
            "vault": crate::security_domain::vault_id(&self.master),
            "sealed": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed),
        });
        self.store.audit(
            AuditEvent::new(&who.name, "backup", Some(name), "ok")
                .detail(json!({"versions": versions.len()})),
        )?;
        Ok(
            json!({"value": base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(blob.to_string())}),
        )
    }

    /// `POST /keys/restore` with `{"value": <backup>}`: the key comes back with all its
    /// versions, policies and owner. Refused when the backup comes from another security domain
    /// or a key of that name exists (409, as Azure). The key's owner or an admin restores it.
    fn restore_key(&self, who: &Principal, req: &Value) -> VResult<Value> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let value = req["value"]
            .as_str()
            .ok_or_else(|| VaultError::bad("the body must be {\"value\": <a key backup>}"))?;
        let blob: Value = b64
            .decode(value.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|b: &Value| b["format"] == BACKUP_FORMAT)
            .ok_or_else(|| VaultError::bad("value is not a Conclave key backup"))?;
        let vault = crate::security_domain::vault_id(&self.master);
        if blob["vault"] != vault.as_str() {
            return Err(self.deny(
                who,
                "restore",
                "-",
                "the backup was made by a vault of another security domain: it restores only into a vault holding the same master key (recover that vault's security domain first)",
            ));
        }
        let sealed = blob["sealed"]
            .as_str()
            .and_then(|s| b64.decode(s).ok())
            .ok_or_else(|| VaultError::bad("value is not a Conclave key backup"))?;
        let plain = self
            .master
            .open(BACKUP_FORMAT.as_bytes(), &sealed)
            .map_err(|_| VaultError::bad("the backup is damaged: it does not decrypt"))?;
        #[derive(serde::Deserialize)]
        struct Backup {
            name: String,
            versions: Vec<KeyRecord>,
        }
        let backup: Backup = serde_json::from_slice(&plain)
            .map_err(|e| VaultError::bad(format!("the backup is damaged: {e}")))?;
        let name = backup.name.clone();
        if !api::valid_name(&name)
            || backup.versions.is_empty()
            || backup.versions.iter().any(|r| r.name != name)
        {
            return Err(VaultError::bad(
                "the backup is damaged: inconsistent key names",
            ));
        }
        let owner = backup.versions[0].owner.clone();
        self.require_owner(
            who,
            &owner,
            &name,
            ("restore", "restore it"),
            Manager::OwnerOrAdmin,
        )?;
        if self.store.deleted_key(&name)?.is_some() {
            return Err(VaultError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "key {name} is deleted but recoverable in this vault: recover or purge it first"
                ),
            ));
        }
        let event = AuditEvent::new(&who.name, "restore", Some(&name), "ok")
            .detail(json!({"versions": backup.versions.len(), "owner": owner}));
        match self.store.restore_key(&backup.versions, event)? {
            Some(_) => {
                let latest = self.key_or_404(&name, None)?;
                Ok(api::bundle_json(&self.config.vault_url, &latest))
            }
            None => {
                let message = format!(
                    "a key named {name} exists in this vault: a backup is restored only under a name that is free"
                );
                let _ = self.store.audit(
                    AuditEvent::new(&who.name, "restore", Some(&name), "denied")
                        .reason(message.clone()),
                );
                Err(VaultError::new(StatusCode::CONFLICT, "Conflict", message))
            }
        }
    }

    /// Fresh RSA key material of `size` bits for a new version of `name`: a random 128-bit
    /// version id (hex), the public part, and the private part sealed under the master key
    /// with `name/version` as AAD.
    fn new_key_material(&self, name: &str, size: u32) -> VResult<NewKeyMaterial> {
        let new = crypto::generate_rsa(size).map_err(|e| VaultError::bad(e.to_string()))?;
        let mut version = [0u8; 16];
        SystemRandom::new()
            .fill(&mut version)
            .map_err(VaultError::internal)?;
        let version = hex::encode(version);
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Ok(NewKeyMaterial {
            sealed_private: base64::engine::general_purpose::STANDARD.encode(
                self.master
                    .seal(format!("{name}/{version}").as_bytes(), &new.pkcs8),
            ),
            version,
            n: b64(&new.n),
            e: b64(&new.e),
        })
    }

    /// A new version of `name` with fresh key material and the latest version's settings
    /// (exportable, release policy, operations, tags, owner); with a rotation policy's
    /// `expiryTime`, it expires that long after creation. Audited as `by` (a principal, or
    /// `vault` for a scheduled rotation).
    fn rotate(&self, by: &str, name: &str, reason: Option<&str>) -> VResult<KeyRecord> {
        let latest = self.key_or_404(name, None)?;
        let new = self.new_key_material(name, latest.key_size)?;
        let t = now();
        let expiry = self
            .store
            .rotation_policy(name)?
            .and_then(|doc| crate::rotation::RotationPolicy::parse(&doc).ok())
            .and_then(|p| p.expiry);
        let rec = KeyRecord {
            sealed_private: new.sealed_private,
            version: new.version,
            n: new.n,
            e: new.e,
            created: t,
            updated: t,
            nbf: None,
            exp: expiry.map(|e| t + e),
            ..latest
        };
        let mut event =
            AuditEvent::new(by, "rotate", Some(name), "ok").detail(json!({"version": rec.version}));
        if let Some(r) = reason {
            event = event.reason(r);
        }
        self.store.create_key(&rec, event)?;
        Ok(rec)
    }

    /// `POST /keys/{name}/{version}/rewrap` (owner or admin; a Conclave operation, not Azure's):
    /// `{"alg": "RSA-OAEP-256", "value": <base64url>}`, an AES key (a dataset's data key or
    /// key-encryption key) wrapped under `version`, comes back as Azure's KeyOperationResult
    /// `{"kid", "value"}` wrapped under the key's latest version, so a dataset follows a
    /// rotation without its data being re-encrypted or its key ever leaving the vault in the
    /// clear (Azure's unwrapKey would hand it to the caller). Refused when the latest version
    /// is disabled or expired, or when `version`'s release policy is immutable and the
    /// latest's differs (that would move the data from under a policy its owner promised not
    /// to change). Audited.
    fn rewrap(&self, who: &Principal, name: &str, version: &str, req: &Value) -> VResult<Value> {
        let from = self.key_or_404(name, Some(version))?;
        self.require_owner(
            who,
            &from.owner,
            name,
            ("rewrap", "rewrap data keys under it"),
            Manager::OwnerOrAdmin,
        )?;
        if req["alg"] != "RSA-OAEP-256" {
            return Err(VaultError::bad(format!(
                "alg must be \"RSA-OAEP-256\" (Parquet's key tools wrap with it), not {}",
                req["alg"]
            )));
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let wrapped = req["value"]
            .as_str()
            .and_then(|v| b64.decode(v.trim_end_matches('=')).ok())
            .ok_or_else(|| VaultError::bad("value must be the wrapped key, base64url"))?;
        let to = self.key_or_404(name, None)?;
        let t = now();
        if !to.enabled || to.exp.is_some_and(|exp| exp <= t) || to.nbf.is_some_and(|nbf| nbf > t) {
            return Err(self.deny(
                who,
                "rewrap",
                name,
                &format!(
                    "the latest version {} is disabled or outside its validity period: a dataset moved to it could not be opened",
                    to.version
                ),
            ));
        }
        // Data under an immutable policy moves only to a version whose policy is the same and
        // immutable too (a mutable copy could be changed after the move), and no more exportable.
        if from.release_policy.as_ref().is_some_and(|p| p.immutable)
            && (to.release_policy != from.release_policy || to.exportable != from.exportable)
        {
            return Err(self.deny(
                who,
                "rewrap",
                name,
                &format!(
                    "version {version} has an immutable release policy and the latest version {} does not have the same one, immutable: data under it stays under that policy",
                    to.version
                ),
            ));
        }
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&from.sealed_private)
            .map_err(VaultError::internal)?;
        let pkcs8 = self
            .master
            .open(
                format!("{}/{}", from.name, from.version).as_bytes(),
                &sealed,
            )
            .map_err(VaultError::internal)?;
        let n = b64.decode(&to.n).map_err(VaultError::internal)?;
        let e = b64.decode(&to.e).map_err(VaultError::internal)?;
        // A refusal here is audited by the handler (`rejected`), as every client error is.
        let rewrapped = crypto::rewrap_oaep256(&pkcs8, &wrapped, &n, &e).map_err(|_| {
            VaultError::bad(format!(
                "value does not unwrap with version {version} of {name} to an AES key (16, 24 or 32 bytes, RSA-OAEP-256)"
            ))
        })?;
        drop(pkcs8);
        self.store.audit(
            AuditEvent::new(&who.name, "rewrap", Some(name), "ok")
                .detail(json!({"from": from.version, "to": to.version})),
        )?;
        Ok(json!({
            "kid": api::kid(&self.config.vault_url, name, &to.version),
            "value": b64.encode(rewrapped),
        }))
    }

    /// `POST /keys/{name}/rotate` (owner only).
    fn rotate_key(&self, who: &Principal, name: &str) -> VResult<Value> {
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("rotate", "rotate it"),
            Manager::OwnerOnly,
        )?;
        let new = self.rotate(&who.name, name, None)?;
        Ok(api::bundle_json(&self.config.vault_url, &new))
    }

    /// `GET /keys/{name}/rotationpolicy`: the key's policy, or Azure's empty default.
    fn get_rotation_policy(&self, who: &Principal, name: &str) -> VResult<Value> {
        let rec = self.key_or_404(name, None)?;
        if !self.permitted(who, &rec, Permission::Get)? {
            return Err(self.deny(who, "get", name, "no get grant on this key"));
        }
        let id = format!("{}/keys/{name}/rotationpolicy", self.config.vault_url);
        Ok(match self.store.rotation_policy(name)? {
            Some(doc) => doc,
            None => json!({"id": id, "lifetimeActions": [], "attributes": {}}),
        })
    }

    /// `PUT /keys/{name}/rotationpolicy` (owner only): validated, stored, audited.
    fn put_rotation_policy(&self, who: &Principal, name: &str, doc: &Value) -> VResult<Value> {
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("rotation-policy", "set its rotation policy"),
            Manager::OwnerOnly,
        )?;
        let policy = crate::rotation::RotationPolicy::parse(doc).map_err(VaultError::bad)?;
        let t = now();
        let created = self
            .store
            .rotation_policy(name)?
            .and_then(|d| d["attributes"]["created"].as_u64())
            .unwrap_or(t);
        let id = format!("{}/keys/{name}/rotationpolicy", self.config.vault_url);
        let stored = policy.to_json(&id, created, t);
        self.store.put_rotation_policy(
            name,
            &stored,
            AuditEvent::new(&who.name, "rotation-policy", Some(name), "ok").detail(stored.clone()),
        )?;
        Ok(stored)
    }

    /// Rotates every key whose rotation policy says its latest version is due at `now` (Unix
    /// seconds); the vault runs this every minute. Returns the keys rotated.
    pub fn rotate_due(&self, now: u64) -> Result<Vec<String>, VaultError> {
        let mut rotated = Vec::new();
        for (name, doc) in self.store.rotation_policies()? {
            let Ok(policy) = crate::rotation::RotationPolicy::parse(&doc) else {
                continue;
            };
            let Some(latest) = self.store.key(&name, None)? else {
                continue; // deleted keys are not rotated
            };
            if policy.due(latest.created, now) {
                self.rotate("vault", &name, Some("its rotation policy"))?;
                rotated.push(name);
            }
        }
        Ok(rotated)
    }

    /// A DeletedKeyBundle (Azure 7.4): the latest version's bundle with `recoveryId`,
    /// `deletedDate` and `scheduledPurgeDate` (Unix seconds).
    fn deleted_json(&self, d: &DeletedKey) -> Value {
        let latest = d.versions.last().expect("a deleted key has a version");
        let mut b = api::bundle_json(&self.config.vault_url, latest);
        b["recoveryId"] = format!("{}/deletedkeys/{}", self.config.vault_url, d.name).into();
        b["deletedDate"] = d.deleted.into();
        b["scheduledPurgeDate"] = d.scheduled_purge.into();
        b["attributes"]["recoveryLevel"] = self.recovery_level().into();
        b["attributes"]["recoverableDays"] =
            (self.config.deletion.retention.as_secs() / 86_400).into();
        b
    }

    fn recovery_level(&self) -> &'static str {
        if self.config.deletion.purge_protection {
            "Recoverable"
        } else {
            "Recoverable+Purgeable"
        }
    }

    /// A deleted key the caller owns (or, as an admin, may manage); one past its retention is
    /// purged now and is gone.
    fn deleted_or_404(&self, who: &Principal, name: &str, action: &str) -> VResult<DeletedKey> {
        if !api::valid_name(name) {
            return Err(VaultError::bad(
                "key names are 1-127 letters, digits and dashes",
            ));
        }
        let d = self
            .store
            .deleted_key(name)?
            .ok_or_else(|| VaultError::not_found(&format!("deleted key {name}")))?;
        if d.scheduled_purge <= now() {
            self.store.purge_key(
                name,
                AuditEvent::new("vault", "purge", Some(name), "ok")
                    .reason("its retention period ended"),
            )?;
            return Err(VaultError::not_found(&format!("deleted key {name}")));
        }
        let owner = d
            .versions
            .last()
            .map(|r| r.owner.as_str())
            .unwrap_or_default();
        self.require_owner(
            who,
            owner,
            name,
            (action, &format!("{action} it")),
            Manager::OwnerOrAdmin,
        )?;
        Ok(d)
    }

    /// `DELETE /keys/{name}`: soft delete (owner or admin).
    fn delete_key(&self, who: &Principal, name: &str) -> VResult<Value> {
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("delete", "delete it"),
            Manager::OwnerOrAdmin,
        )?;
        let t = now();
        let purge = t + self.config.deletion.retention.as_secs();
        let (d, _) = self
            .store
            .delete_key(
                name,
                t,
                purge,
                AuditEvent::new(&who.name, "delete", Some(name), "ok")
                    .detail(json!({"scheduled_purge": purge})),
            )?
            .ok_or_else(|| VaultError::not_found(&format!("key {name}")))?;
        Ok(self.deleted_json(&d))
    }

    fn recover_deleted(&self, who: &Principal, name: &str) -> VResult<Value> {
        self.deleted_or_404(who, name, "recover")?;
        let d = self
            .store
            .recover_key(
                name,
                AuditEvent::new(&who.name, "recover", Some(name), "ok"),
            )?
            .ok_or_else(|| VaultError::not_found(&format!("deleted key {name}")))?;
        let latest = d.versions.last().expect("a deleted key has a version");
        Ok(api::bundle_json(&self.config.vault_url, latest))
    }

    fn purge_deleted(&self, who: &Principal, name: &str) -> VResult<()> {
        let d = self.deleted_or_404(who, name, "purge")?;
        if self.config.deletion.purge_protection {
            return Err(self.deny(
                who,
                "purge",
                name,
                &format!(
                    "purge protection is on: deleted key {name} is kept until its scheduled purge date ({} Unix seconds), and purged then",
                    d.scheduled_purge
                ),
            ));
        }
        self.store
            .purge_key(name, AuditEvent::new(&who.name, "purge", Some(name), "ok"))?;
        Ok(())
    }

    /// Refuses (403, audited as `action`) anyone but the key's owner, or with
    /// [`Manager::OwnerOrAdmin`] an admin too; `verb` says what was refused ("rotate it").
    fn require_owner(
        &self,
        who: &Principal,
        owner: &str,
        name: &str,
        (action, verb): (&str, &str),
        may: Manager,
    ) -> VResult<()> {
        let admin_ok = matches!(may, Manager::OwnerOrAdmin);
        if owner == who.name || (admin_ok && who.admin) {
            return Ok(());
        }
        let whom = if admin_ok {
            "only the key's owner or an admin"
        } else {
            "only the key's owner"
        };
        Err(self.deny(
            who,
            action,
            name,
            &format!("{whom} may {verb} (key {name} belongs to {owner})"),
        ))
    }

    fn deny(&self, who: &Principal, action: &str, key: &str, reason: &str) -> VaultError {
        if let Err(e) = self
            .store
            .audit(AuditEvent::new(&who.name, action, Some(key), "denied").reason(reason))
        {
            return VaultError::from(e);
        }
        VaultError::forbidden(reason.to_string())
    }

    fn update_key(
        &self,
        who: &Principal,
        name: &str,
        version: &str,
        req: UpdateKeyRequest,
    ) -> VResult<Value> {
        let mut rec = self.key_or_404(name, Some(version))?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("update", "change it"),
            Manager::OwnerOnly,
        )?;
        let mut detail = serde_json::Map::new();
        if let Some(body) = &req.release_policy {
            let new = Self::parse_policy(body)?;
            if let Some(old) = &rec.release_policy
                && old.immutable
                && old != &new
            {
                return Err(self.deny(
                    who,
                    "policy-change",
                    name,
                    "the key's release policy is immutable and cannot be changed",
                ));
            }
            if !rec.exportable {
                return Err(VaultError::bad("a release policy needs an exportable key"));
            }
            detail.insert("release_policy".into(), api::policy_json(&new));
            rec.release_policy = Some(new);
        }
        if let Some(a) = req.attributes {
            if let Some(e) = a.enabled {
                rec.enabled = e;
            }
            if a.exportable.is_some_and(|e| e != rec.exportable) {
                return Err(VaultError::bad(
                    "exportable cannot be changed after creation",
                ));
            }
            rec.nbf = a.nbf.or(rec.nbf);
            rec.exp = a.exp.or(rec.exp);
            detail.insert("enabled".into(), rec.enabled.into());
        }
        if let Some(ops) = req.key_ops {
            rec.key_ops = ops;
        }
        if let Some(tags) = req.tags {
            rec.tags = tags;
        }
        rec.updated = now();
        let action = if detail.contains_key("release_policy") {
            "policy-change"
        } else {
            "update"
        };
        self.store.update_key(
            &rec,
            AuditEvent::new(&who.name, action, Some(name), "ok").detail(Value::Object(detail)),
        )?;
        Ok(api::bundle_json(&self.config.vault_url, &rec))
    }

    /// The audit log's signed checkpoint now, as a C2SP signed note, with its size.
    pub fn audit_checkpoint(&self) -> VResult<(u64, String)> {
        let (size, root) = self.store.audit_tree_head()?;
        Ok((size, self.log.checkpoint(size, root)))
    }

    /// The verifier key of the audit checkpoints (C2SP signed-note), to publish.
    pub fn audit_verifier_key(&self) -> String {
        self.log.verifier_key()
    }

    /// `GET /audit/proofs`: the entries from `from` that `who` may see (see
    /// [`audit_for`](Self::audit_for)), each with its inclusion proof against a checkpoint
    /// signed now, and with `since` (an earlier checkpoint's size) the consistency proof from it.
    fn audit_proofs(
        &self,
        who: &Principal,
        from: u64,
        limit: usize,
        since: Option<u64>,
    ) -> VResult<crate::transparency::AuditBundle> {
        use crate::transparency::{AuditBundle, Consistency, ProvenEntry, encode_hashes};
        let (size, checkpoint) = self.audit_checkpoint()?;
        let consistency = match since {
            Some(old) if old > size => {
                return Err(VaultError::bad(format!(
                    "since={old} is beyond the log's size {size}: that checkpoint is not this log's"
                )));
            }
            Some(old) if old > 0 && old < size => Some(Consistency {
                from_size: old,
                proof: encode_hashes(&self.store.audit_consistency(old, size)?),
            }),
            _ => None,
        };
        let visible = self.audit_visibility(who)?;
        let mut entries = Vec::new();
        for (seq, leaf) in self.store.audit_leaves(from, limit)? {
            if seq >= size {
                break; // appended after the checkpoint
            }
            let entry: crate::audit::AuditEntry = serde_json::from_slice(&leaf)
                .map_err(|_| VaultError::internal(format!("audit entry {seq} is corrupt")))?;
            if visible(&entry) {
                entries.push(ProvenEntry {
                    seq,
                    leaf: base64::engine::general_purpose::STANDARD.encode(&leaf),
                    proof: encode_hashes(&self.store.audit_inclusion(seq, size)?),
                });
            }
        }
        Ok(AuditBundle {
            checkpoint,
            entries,
            consistency,
        })
    }

    /// Which audit entries `who` may see: an admin all; anyone else those it made and those
    /// about the keys it owns, from when it came to own them.
    fn audit_visibility(
        &self,
        who: &Principal,
    ) -> VResult<impl Fn(&crate::audit::AuditEntry) -> bool + use<>> {
        // Each owned key with the first entry of its current owner's time (the entries of a
        // purged key of the same name, another owner's, stay hidden).
        let owned: BTreeMap<String, u64> = if who.admin {
            BTreeMap::new()
        } else {
            self.store
                .latest_versions()?
                .into_iter()
                .filter(|r| r.owner == who.name)
                .map(|r| (r.name, r.audit_from.unwrap_or(0)))
                .collect()
        };
        let (admin, name) = (who.admin, who.name.clone());
        Ok(move |e: &crate::audit::AuditEntry| {
            admin
                || e.event.principal == name
                || e.event
                    .key
                    .as_ref()
                    .and_then(|k| owned.get(k))
                    .is_some_and(|from| e.seq >= *from)
        })
    }

    fn audit_for(&self, who: &Principal, from: u64, limit: usize) -> VResult<Value> {
        let entries = self.store.audit_entries(from, limit)?;
        let visible = self.audit_visibility(who)?;
        let visible: Vec<_> = entries.into_iter().filter(|e| visible(e)).collect();
        Ok(json!({ "value": visible, "head": self.store.audit_head()? }))
    }
}

// --- handlers --------------------------------------------------------------------------------

type St = State<Arc<Vault>>;

/// Runs each request on tokio's blocking pool. The store commits durably (an fsync per batch)
/// and its group commit waits on a condition variable; neither may hold one of the runtime's few
/// async worker threads, which would stall every other connection meanwhile. A request's own
/// async steps (verifying a token, which may fetch an authority's keys) run there too, on the
/// runtime's handle.
///
/// At most [`MAX_BLOCKING_REQUESTS`] requests hold a blocking thread at once (the others wait
/// for a permit without holding one), so the pool keeps threads for what requests wait on
/// themselves, such as the DNS lookups of an authority's key fetch. The request's tracing span
/// goes along, so the handler's log lines name their request.
async fn off_the_async_workers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    static PERMITS: tokio::sync::Semaphore =
        tokio::sync::Semaphore::const_new(MAX_BLOCKING_REQUESTS);
    let Ok(_permit) = PERMITS.acquire().await else {
        return VaultError::internal("the request limiter is closed").into_response();
    };
    let handle = tokio::runtime::Handle::current();
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| handle.block_on(next.run(req))))
        .await
    {
        Ok(response) => response,
        Err(e) => VaultError::internal(e).into_response(),
    }
}

/// How long `/readyz` waits for one authority's keys.
pub const READYZ_AUTHORITY_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests running on the blocking pool at once (tokio's pool has 512 threads).
pub const MAX_BLOCKING_REQUESTS: usize = 256;

#[utoipa::path(
    post, path = "/keys/{name}/create", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    request_body = crate::api::CreateKeyRequest,
    responses((status = 200, description = "The new KeyBundle", body = Object), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError))
)]
async fn create_key(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let req: CreateKeyRequest = v.body(&who, "create", &name, body)?;
    v.create_key(&who, &name, req)
        .map_err(|e| v.rejected(&who, "create", &name, e))
        .map(Json)
}

#[utoipa::path(
    delete, path = "/keys/{name}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "The DeletedKeyBundle: recoverable until scheduledPurgeDate", body = Object), (status = 403, description = "Not the owner or an admin (audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn delete_key(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    v.delete_key(&who, &name)
        .map_err(|e| v.rejected(&who, "delete", &name, e))
        .map(Json)
}

#[utoipa::path(
    get, path = "/deletedkeys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, description = "`{value: [DeletedKeyItem], nextLink}`: the caller's deleted keys (all, for an admin)", body = Object), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn list_deleted(State(v): St, headers: HeaderMap) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let t = now();
    let mut items = Vec::new();
    for d in v.store.deleted_keys()? {
        let Some(latest) = d.versions.last() else {
            continue;
        };
        if d.scheduled_purge <= t || (latest.owner != who.name && !who.admin) {
            continue;
        }
        let mut item = api::item_json(v.vault_url(), latest);
        item["recoveryId"] = format!("{}/deletedkeys/{}", v.vault_url(), d.name).into();
        item["deletedDate"] = d.deleted.into();
        item["scheduledPurgeDate"] = d.scheduled_purge.into();
        items.push(item);
    }
    Ok(Json(json!({ "value": items, "nextLink": null })))
}

#[utoipa::path(
    get, path = "/deletedkeys/{name}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "The DeletedKeyBundle", body = Object), (status = 403, description = "Not the owner or an admin (audited)", body = crate::api::AzureError), (status = 404, description = "No such deleted key", body = crate::api::AzureError))
)]
async fn get_deleted(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let d = v.deleted_or_404(&who, &name, "get")?;
    Ok(Json(v.deleted_json(&d)))
}

#[utoipa::path(
    post, path = "/deletedkeys/{name}/recover", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "The recovered key's KeyBundle", body = Object), (status = 403, description = "Not the owner or an admin (audited)", body = crate::api::AzureError), (status = 404, description = "No such deleted key", body = crate::api::AzureError))
)]
async fn recover_deleted(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    v.recover_deleted(&who, &name)
        .map_err(|e| v.rejected(&who, "recover", &name, e))
        .map(Json)
}

#[utoipa::path(
    delete, path = "/deletedkeys/{name}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 204, description = "Purged for good"), (status = 403, description = "Purge protection, or not the owner or an admin (audited)", body = crate::api::AzureError), (status = 404, description = "No such deleted key", body = crate::api::AzureError))
)]
async fn purge_deleted(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<StatusCode> {
    let who = v.authenticate(&headers)?;
    v.purge_deleted(&who, &name)
        .map_err(|e| v.rejected(&who, "purge", &name, e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/keys/{name}/{version}/rewrap", tag = "keys", security(("bearer" = [])),
    params(("name" = String, Path, description = "Key name"), ("version" = String, Path, description = "The version the value is wrapped under")),
    request_body(content = Object, description = "`{\"alg\": \"RSA-OAEP-256\", \"value\": <base64url wrapped AES key>}`"),
    responses((status = 200, description = "KeyOperationResult `{kid, value}`: the same AES key wrapped under the latest version", body = Object), (status = 400, description = "Not an AES key wrapped under that version with RSA-OAEP-256 (audited)", body = crate::api::AzureError), (status = 403, description = "Not the owner or an admin, latest version unusable, or an immutable policy would change (audited)", body = crate::api::AzureError), (status = 404, description = "No such key or version", body = crate::api::AzureError))
)]
async fn rewrap(
    State(v): St,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let req: Value = v.body(&who, "rewrap", &name, body)?;
    v.rewrap(&who, &name, &version, &req)
        .map_err(|e| v.rejected(&who, "rewrap", &name, e))
        .map(Json)
}

#[utoipa::path(
    post, path = "/keys/{name}/rotate", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "The new version's KeyBundle (the latest's settings, fresh key material)", body = Object), (status = 403, description = "Not the owner (audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn rotate_key(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    v.rotate_key(&who, &name)
        .map_err(|e| v.rejected(&who, "rotate", &name, e))
        .map(Json)
}

#[utoipa::path(
    get, path = "/keys/{name}/rotationpolicy", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "Azure's KeyRotationPolicy", body = Object), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn get_rotation_policy(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    v.get_rotation_policy(&who, &name).map(Json)
}

#[utoipa::path(
    put, path = "/keys/{name}/rotationpolicy", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name")),
    request_body = Object,
    responses((status = 200, description = "The stored KeyRotationPolicy", body = Object), (status = 400, description = "A policy Conclave does not carry out (the reason says which part)", body = crate::api::AzureError), (status = 403, description = "Not the owner (audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn put_rotation_policy(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let doc: Value = v.body(&who, "rotation-policy", &name, body)?;
    v.put_rotation_policy(&who, &name, &doc)
        .map_err(|e| v.rejected(&who, "rotation-policy", &name, e))
        .map(Json)
}

/// `format` of a key backup.
pub const BACKUP_FORMAT: &str = "conclave-key-backup/v1";

#[utoipa::path(
    post, path = "/keys/{name}/backup", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    responses((status = 200, description = "`{value: <base64url backup>}`: every version, sealed so that only a vault of the same security domain restores it", body = Object), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Not the key's owner (audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn backup_key(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    v.backup_key(&who, &name)
        .map_err(|e| v.rejected(&who, "backup", &name, e))
        .map(Json)
}

#[utoipa::path(
    post, path = "/keys/restore", tag = "keys", security(("bearer" = [])),
    request_body = Object,
    responses((status = 200, description = "The restored key's latest KeyBundle", body = Object), (status = 400, description = "Not a key backup, or a damaged one", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "A backup from another security domain, or not the key's owner (audited)", body = crate::api::AzureError), (status = 409, description = "A key of that name exists", body = crate::api::AzureError))
)]
async fn restore_key(
    State(v): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let req: Value = v.body(&who, "restore", "-", body)?;
    v.restore_key(&who, &req)
        .map_err(|e| v.rejected(&who, "restore", "-", e))
        .map(Json)
}

#[utoipa::path(
    get, path = "/keys/{name}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    responses((status = 200, description = "The latest version's KeyBundle (public JWK only)", body = Object), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn get_key(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<Value>> {
    get_version(State(v), Path((name, String::new())), headers).await
}

#[utoipa::path(
    get, path = "/keys/{name}/{version}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes"), ("version" = String, Path, description = "Key version: 32 hex digits")),
    responses((status = 200, description = "That version's KeyBundle (public JWK only)", body = Object), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn get_version(
    State(v): St,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let rec = v.key_or_404(&name, (!version.is_empty()).then_some(version.as_str()))?;
    if !v.permitted(&who, &rec, Permission::Get)? {
        return Err(v.deny(
            &who,
            "get",
            &name,
            &format!("principal {} has no get grant on key {name}", who.name),
        ));
    }
    Ok(Json(api::bundle_json(v.vault_url(), &rec)))
}

#[utoipa::path(
    get, path = "/keys/{name}/versions", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    responses((status = 200, description = "`{value: [KeyItem], nextLink}`", body = Object), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn list_versions(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let latest = v.key_or_404(&name, None)?;
    if !v.permitted(&who, &latest, Permission::Get)? {
        return Err(v.deny(
            &who,
            "get",
            &name,
            &format!("principal {} has no get grant on key {name}", who.name),
        ));
    }
    let items: Vec<Value> = v
        .store
        .versions(&name)?
        .iter()
        .map(|r| api::item_json(v.vault_url(), r))
        .collect();
    Ok(Json(json!({ "value": items, "nextLink": null })))
}

#[utoipa::path(
    get, path = "/keys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, description = "The keys the caller may see: `{value: [KeyItem], nextLink}`", body = Object), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn list_keys(State(v): St, headers: HeaderMap) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let mut items = Vec::new();
    for rec in v.store.latest_versions()? {
        if v.permitted(&who, &rec, Permission::Get)? {
            items.push(api::item_json(v.vault_url(), &rec));
        }
    }
    Ok(Json(json!({ "value": items, "nextLink": null })))
}

#[utoipa::path(
    patch, path = "/keys/{name}/{version}", tag = "keys", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes"), ("version" = String, Path, description = "Key version: 32 hex digits")),
    request_body = crate::api::UpdateKeyRequest,
    responses((status = 200, description = "The updated KeyBundle", body = Object), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn update_key(
    State(v): St,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let req: UpdateKeyRequest = v.body(&who, "update", &name, body)?;
    v.update_key(&who, &name, &version, req)
        .map_err(|e| v.rejected(&who, "update", &name, e))
        .map(Json)
}

#[utoipa::path(
    post, path = "/keys/{name}/release", tag = "release", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    request_body = crate::api::ReleaseRequest,
    responses((status = 200, description = "The key wrapped to the attested TEE's key, in a JWS", body = crate::api::ReleaseResponse), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn release_latest(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<Value>> {
    let (who, rec) = v.authenticate_with_key(&headers, &name, None)?;
    let req: ReleaseRequest = v.body(&who, "release", &name, body)?;
    v.release(&who, &name, rec, req)
        .await
        .map(Json)
        .map_err(|e| v.rejected(&who, "release", &name, e))
}

#[utoipa::path(
    post, path = "/keys/{name}/{version}/release", tag = "release", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes"), ("version" = String, Path, description = "Key version: 32 hex digits")),
    request_body = crate::api::ReleaseRequest,
    responses((status = 200, description = "The key wrapped to the attested TEE's key, in a JWS", body = crate::api::ReleaseResponse), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn release_version(
    State(v): St,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<Value>> {
    // Azure's SDKs release the latest version as `/keys/{name}//release`.
    let version = (!version.is_empty()).then_some(version.as_str());
    let (who, rec) = v.authenticate_with_key(&headers, &name, version)?;
    let req: ReleaseRequest = v.body(&who, "release", &name, body)?;
    v.release(&who, &name, rec, req)
        .await
        .map(Json)
        .map_err(|e| v.rejected(&who, "release", &name, e))
}

#[utoipa::path(
    get, path = "/keys/{name}/grants", tag = "grants", security(("bearer" = [])), params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes")),
    responses((status = 200, description = "`{owner, value: [Grant]}` (owner only)", body = Object), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn list_grants(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let rec = v.key_or_404(&name, None)?;
    v.require_owner(
        &who,
        &rec.owner,
        &name,
        ("grants", "see its grants"),
        Manager::OwnerOnly,
    )?;
    Ok(Json(
        json!({ "owner": rec.owner, "value": v.store.grants(&name)? }),
    ))
}

#[utoipa::path(
    put, path = "/keys/{name}/grants/{principal}", tag = "grants", security(("bearer" = [])),
    params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes"), ("principal" = String, Path, description = "The principal granted")),
    request_body = crate::api::GrantRequest,
    responses((status = 200, description = "The grant", body = Object), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key", body = crate::api::AzureError))
)]
async fn put_grant(
    State(v): St,
    Path((name, principal)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    let req: GrantRequest = v.body(&who, "grant", &name, body)?;
    if !api::valid_name(&principal) {
        return Err(VaultError::bad(
            "principal names are 1-127 letters, digits and dashes",
        ));
    }
    let rec = v.key_or_404(&name, None)?;
    v.require_owner(
        &who,
        &rec.owner,
        &name,
        ("grant", "grant access to it"),
        Manager::OwnerOnly,
    )?;
    let grant = Grant {
        principal: principal.clone(),
        permissions: req.permissions.into_iter().collect(),
    };
    v.store.put_grant(
        &name,
        &grant,
        AuditEvent::new(&who.name, "grant", Some(&name), "ok").detail(json!(grant)),
    )?;
    Ok(Json(json!(grant)))
}

#[utoipa::path(
    delete, path = "/keys/{name}/grants/{principal}", tag = "grants", security(("bearer" = [])),
    params(("name" = String, Path, description = "Key name: 1-127 letters, digits and dashes"), ("principal" = String, Path, description = "The principal whose grant is revoked")),
    responses((status = 204, description = "Revoked"), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError), (status = 404, description = "No such key or grant", body = crate::api::AzureError))
)]
async fn delete_grant(
    State(v): St,
    Path((name, principal)): Path<(String, String)>,
    headers: HeaderMap,
) -> VResult<StatusCode> {
    let who = v.authenticate(&headers)?;
    let rec = v.key_or_404(&name, None)?;
    v.require_owner(
        &who,
        &rec.owner,
        &name,
        ("revoke", "revoke access to it"),
        Manager::OwnerOnly,
    )?;
    let event = AuditEvent::new(&who.name, "revoke", Some(&name), "ok")
        .detail(json!({ "principal": principal }));
    let existed = v.store.delete_grant(&name, &principal, event)?.0;
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(VaultError::not_found(&format!(
            "grant of key {name} to {principal}"
        )))
    }
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(
    get, path = "/audit", tag = "audit", security(("bearer" = [])),
    params(("from" = Option<u64>, Query, description = "First sequence number"), ("limit" = Option<u64>, Query, description = "At most this many entries (≤ 10,000)")),
    responses((status = 200, description = "`{value: [entry], head}`: the entries the caller may see", body = Object), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn audit(
    State(v): St,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    v.audit_for(
        &who,
        q.from.unwrap_or(0),
        q.limit.unwrap_or(1000).min(10_000),
    )
    .map(Json)
}

#[derive(serde::Deserialize, Default)]
struct ProofsQuery {
    from: Option<u64>,
    limit: Option<usize>,
    since: Option<u64>,
}

#[utoipa::path(
    get, path = "/audit/checkpoint", tag = "audit", security(("bearer" = [])),
    responses((status = 200, description = "The audit log's head: a C2SP tlog-checkpoint (origin, size, RFC 6962 root) signed as a C2SP signed note with the vault's Ed25519 audit key (text/plain)", body = String), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn audit_checkpoint(State(v): St, headers: HeaderMap) -> VResult<Response> {
    v.authenticate(&headers)?;
    let (_, note) = v.audit_checkpoint()?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        note,
    )
        .into_response())
}

#[utoipa::path(
    get, path = "/audit/key", tag = "audit", security(("bearer" = [])),
    responses((status = 200, description = "`{verifier_key}`: the C2SP signed-note verifier key of the audit checkpoints (`<origin>+<key hash>+<base64 Ed25519 key>`); compare it out of band", body = Object), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn audit_key(State(v): St, headers: HeaderMap) -> VResult<Json<Value>> {
    v.authenticate(&headers)?;
    Ok(Json(json!({ "verifier_key": v.audit_verifier_key() })))
}

#[utoipa::path(
    get, path = "/audit/proofs", tag = "audit", security(("bearer" = [])),
    params(("from" = Option<u64>, Query, description = "First sequence number"), ("limit" = Option<u64>, Query, description = "At most this many entries read (≤ 1,000; page with from)"), ("since" = Option<u64>, Query, description = "The size of an earlier checkpoint: add the consistency proof from it")),
    responses((status = 200, description = "`{checkpoint, entries: [{seq, leaf, proof}], consistency?}`: the entries the caller may see with RFC 9162 inclusion proofs against the signed checkpoint", body = Object), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError))
)]
async fn audit_proofs(
    State(v): St,
    headers: HeaderMap,
    Query(q): Query<ProofsQuery>,
) -> VResult<Json<crate::transparency::AuditBundle>> {
    let who = v.authenticate(&headers)?;
    v.audit_proofs(
        &who,
        q.from.unwrap_or(0),
        q.limit.unwrap_or(1000).min(1000),
        q.since,
    )
    .map(Json)
}

#[derive(serde::Deserialize, Default)]
struct PrincipalRequest {
    #[serde(default)]
    admin: bool,
}

#[utoipa::path(
    post, path = "/principals/{name}", tag = "principals", security(("bearer" = [])),
    params(("name" = String, Path, description = "Principal name: 1-127 letters, digits and dashes")),
    request_body(content = Object, description = "Optional `{admin: bool}`"),
    responses((status = 200, description = "`{token}`: the principal's new bearer token", body = Object), (status = 400, description = "Malformed request", body = crate::api::AzureError), (status = 401, description = "No or unknown bearer token", body = crate::api::AzureError), (status = 403, description = "Refused (the reason says why; audited)", body = crate::api::AzureError))
)]
async fn add_principal(
    State(v): St,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> VResult<Json<Value>> {
    let who = v.authenticate(&headers)?;
    if !who.admin {
        return Err(v.deny(
            &who,
            "principal",
            "-",
            "only a vault admin may add principals",
        ));
    }
    let req: PrincipalRequest = match body {
        Ok(b) if b.is_empty() => PrincipalRequest::default(),
        other => parse_body(other)?,
    };
    let token = v.add_principal(&who.name, &name, req.admin)?;
    tracing::info!(principal = %name, admin = req.admin, by = %who.name, "principal added");
    Ok(Json(json!({ "token": token })))
}

async fn not_found() -> VaultError {
    VaultError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "no such endpoint (the keys API lives under /keys)",
    )
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// The OpenAPI 3.1 description of the vault's HTTP API, generated from its handlers and wire
/// types (`conclave kms openapi` prints it). Every error answers [`crate::api::AzureError`].
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Conclave key vault",
        description = "Azure Key Vault's keys API (7.x shapes) with secure key release, plus grants, principals and the audit log."
    ),
    paths(
        list_keys, get_key, get_version, create_key, backup_key, restore_key, delete_key,
        list_deleted, get_deleted, recover_deleted, purge_deleted, rotate_key,
        get_rotation_policy, put_rotation_policy, list_versions, update_key, release_latest,
        release_version, rewrap, list_grants, put_grant, delete_grant, audit, audit_checkpoint,
        audit_key, audit_proofs, add_principal, healthz,
        readyz
    ),
    components(schemas(crate::api::AzureError, crate::store::Permission)),
    modifiers(&BearerAuth)
)]
pub struct VaultApi;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// `GET /readyz`: ready when the store answers, and every trusted attestation authority's
/// signing keys are at hand (fetched if needed); 503 with the failing checks otherwise. The master
/// key is loaded before the vault exists.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready, with each check", body = Object), (status = 503, description = "Not ready, with the failing checks", body = Object))
)]
async fn readyz(State(v): St) -> (StatusCode, Json<Value>) {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    match v.store.audit_head() {
        Ok(_) => checks.insert("store".into(), "ok".into()),
        Err(e) => {
            ready = false;
            checks.insert("store".into(), format!("unavailable: {e}").into())
        }
    };
    checks.insert("master_key".into(), "loaded".into());
    if v.config.authorities.is_empty() {
        ready = false;
        checks.insert(
            "authorities".into(),
            "none configured: no key can be released".into(),
        );
    }
    // Every authority at once, each within READYZ_AUTHORITY_TIMEOUT, so that one slow
    // authority gives a named check rather than a timeout of the whole answer.
    let outcomes = futures::future::join_all(v.config.authorities.iter().map(|a| async move {
        let outcome =
            tokio::time::timeout(READYZ_AUTHORITY_TIMEOUT, a.verifier.ensure_keys()).await;
        (a.issuer.clone(), outcome)
    }))
    .await;
    for (issuer, outcome) in outcomes {
        let check = match outcome {
            Ok(Ok(n)) => format!("{n} signing keys"),
            Ok(Err(e)) => {
                ready = false;
                e.to_string()
            }
            Err(_) => {
                ready = false;
                format!(
                    "cannot fetch its keys within {} s",
                    READYZ_AUTHORITY_TIMEOUT.as_secs()
                )
            }
        };
        checks.insert(format!("authority {issuer}"), check.into());
    }
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(json!({ "status": if ready { "ready" } else { "not ready" }, "checks": checks })),
    )
}

/// The vault's routes with body limit and timeout, metrics and request spans.
pub fn router(vault: Arc<Vault>) -> Router {
    let metrics = vault.metrics.clone();
    let router = Router::new()
        .route("/keys", get(list_keys))
        .route("/keys/{name}", get(get_key).delete(delete_key))
        .route("/deletedkeys", get(list_deleted))
        .route(
            "/deletedkeys/{name}",
            get(get_deleted).delete(purge_deleted),
        )
        .route("/deletedkeys/{name}/recover", post(recover_deleted))
        // Azure's SDKs ask for the latest version as `/keys/{name}/` (an empty version).
        .route("/keys/{name}/", get(get_key))
        .route("/keys/{name}/create", post(create_key))
        .route("/keys/{name}/backup", post(backup_key))
        .route("/keys/{name}/rotate", post(rotate_key))
        .route(
            "/keys/{name}/rotationpolicy",
            get(get_rotation_policy).put(put_rotation_policy),
        )
        .route("/keys/restore", post(restore_key))
        .route("/keys/{name}/versions", get(list_versions))
        .route("/keys/{name}/release", post(release_latest))
        .route("/keys/{name}/grants", get(list_grants))
        .route(
            "/keys/{name}/grants/{principal}",
            put(put_grant).delete(delete_grant),
        )
        .route("/keys/{name}/{version}", get(get_version).patch(update_key))
        .route("/keys/{name}/{version}/release", post(release_version))
        .route("/keys/{name}/{version}/rewrap", post(rewrap))
        .route("/principals/{name}", post(add_principal))
        .route("/audit", get(audit))
        .route("/audit/checkpoint", get(audit_checkpoint))
        .route("/audit/key", get(audit_key))
        .route("/audit/proofs", get(audit_proofs))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(off_the_async_workers))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(vault);
    conclave_net::observe::observe(router, metrics)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::body::Body;

    use axum::http::Request;
    use tower::ServiceExt as _;

    pub(crate) fn vault_with(dir: &std::path::Path, deletion: DeletionPolicy) -> Arc<Vault> {
        let ca = conclave_net::LocalCa::load_or_create(&dir.join("ca")).unwrap();
        crate::setup::open(
            crate::setup::VaultOptions {
                state_dir: dir.join("vault"),
                vault_url: "https://127.0.0.1:1".into(),
                tls_names: vec!["127.0.0.1".into()],
                authorities: vec![],
                http: reqwest::Client::new(),
                hardware_only: false,
                master_key_file: None,
                deletion,
                postgres: None,
            },
            crate::setup::Certificates::LocalCa(&ca),
        )
        .unwrap()
        .vault
    }

    /// A rotation policy makes a new version once the latest is due, carrying the key's
    /// settings, with the policy's expiry; the old version stays (and stays releasable).
    #[test]
    fn a_rotation_policy_rotates_due_keys_and_keeps_old_versions() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault_with(dir.path(), DeletionPolicy::default());
        let owner = Principal {
            name: "contoso".into(),
            token_sha256: "x".into(),
            admin: false,
        };
        let first = v
            .create_key(&owner, "k", CreateKeyRequest::default())
            .unwrap();
        v.create_key(&owner, "idle", CreateKeyRequest::default())
            .unwrap();
        let stored = v
            .put_rotation_policy(
                &owner,
                "k",
                &json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}],
                        "attributes": {"expiryTime": "P90D"}}),
            )
            .unwrap();
        assert_eq!(
            stored["lifetimeActions"][0]["trigger"]["timeAfterCreate"],
            "P30D"
        );
        assert_eq!(v.get_rotation_policy(&owner, "k").unwrap(), stored);
        // Refused: a Notify action, and another principal.
        let bad = v.put_rotation_policy(
            &owner,
            "k",
            &json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Notify"}}]}),
        );
        assert_eq!(bad.unwrap_err().status, StatusCode::BAD_REQUEST);

        let t = now();
        assert!(v.rotate_due(t + 29 * 86_400).unwrap().is_empty());
        assert_eq!(v.rotate_due(t + 31 * 86_400).unwrap(), ["k"]);
        let versions = v.store.versions("k").unwrap();
        assert_eq!(versions.len(), 2);
        let (old, new) = (&versions[0], &versions[1]);
        assert_ne!(old.n, new.n);
        assert_eq!(new.owner, "contoso");
        assert_eq!(new.exp, Some(new.created + 90 * 86_400));
        assert_eq!(
            first["key"]["kid"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap(),
            old.version
        );
        // The new version is due 30 days after its own creation; manual rotation works too.
        assert!(v.rotate_due(new.created + 29 * 86_400).unwrap().is_empty());
        v.rotate_key(&owner, "idle").unwrap();
        assert_eq!(v.store.versions("idle").unwrap().len(), 2);
    }

    /// Soft delete as Azure Key Vault does it: a deleted key cannot be read or released, its
    /// name is not reused while it is recoverable, recovery brings every version back, and with
    /// purge protection it cannot be purged before its retention ends.
    /// Rewrap moves a data key from an old version to the latest without it leaving the vault
    /// in the clear; only the owner (or an admin) may, only AES keys, and never out from under
    /// an immutable release policy.
    #[test]
    fn rewrap_moves_a_data_key_to_the_latest_version() {
        use aws_lc_rs::rsa::{
            OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
            PrivateDecryptingKey, PublicEncryptingKey,
        };
        let dir = tempfile::tempdir().unwrap();
        let v = vault_with(dir.path(), DeletionPolicy::default());
        let person = |name: &str, admin| Principal {
            name: name.into(),
            token_sha256: "x".into(),
            admin,
        };
        let (owner, other, admin) = (
            person("contoso", false),
            person("woodgrove", false),
            person("ops", true),
        );
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let wrap_to = |rec: &KeyRecord, plain: &[u8]| {
            let spki = conclave_pki::x509::rsa_spki_from_components(
                &b64.decode(&rec.n).unwrap(),
                &b64.decode(&rec.e).unwrap(),
            )
            .unwrap();
            let key = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&spki).unwrap())
                .unwrap();
            let mut out = vec![0u8; key.ciphertext_size()];
            b64.encode(
                key.encrypt(&OAEP_SHA256_MGF1SHA256, plain, &mut out, None)
                    .unwrap(),
            )
        };
        let unwrap_with = |rec: &KeyRecord, wrapped: &str| {
            let sealed = base64::engine::general_purpose::STANDARD
                .decode(&rec.sealed_private)
                .unwrap();
            let pkcs8 = v
                .master
                .open(format!("{}/{}", rec.name, rec.version).as_bytes(), &sealed)
                .unwrap();
            let key =
                OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(&pkcs8).unwrap())
                    .unwrap();
            let mut out = vec![0u8; key.min_output_size()];
            key.decrypt(
                &OAEP_SHA256_MGF1SHA256,
                &b64.decode(wrapped).unwrap(),
                &mut out,
                None,
            )
            .unwrap()
            .to_vec()
        };
        v.create_key(&owner, "k", CreateKeyRequest::default())
            .unwrap();
        let v1 = v.store.key("k", None).unwrap().unwrap();
        let dek = [0x5au8; 32];
        let req = json!({"alg": "RSA-OAEP-256", "value": wrap_to(&v1, &dek)});
        v.rotate_key(&owner, "k").unwrap();
        let v2 = v.store.key("k", None).unwrap().unwrap();
        assert_ne!(v1.version, v2.version);

        let out = v.rewrap(&owner, "k", &v1.version, &req).unwrap();
        assert!(out["kid"].as_str().unwrap().ends_with(&v2.version));
        assert_eq!(unwrap_with(&v2, out["value"].as_str().unwrap()), dek);
        // An admin may too; another principal may not.
        assert!(v.rewrap(&admin, "k", &v1.version, &req).is_ok());
        let e = v.rewrap(&other, "k", &v1.version, &req).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(
            e.message.contains("only the key's owner or an admin"),
            "{}",
            e.message
        );
        // Not an AES key, not under that version, not the right algorithm.
        for (bad, why) in [
            (
                json!({"alg": "RSA-OAEP-256", "value": wrap_to(&v1, b"not an AES key")}),
                "AES key",
            ),
            (
                json!({"alg": "RSA-OAEP-256", "value": wrap_to(&v2, &dek)}),
                "does not unwrap",
            ),
            (
                json!({"alg": "RSA1_5", "value": wrap_to(&v1, &dek)}),
                "RSA-OAEP-256",
            ),
            (json!({"alg": "RSA-OAEP-256", "value": "%%"}), "base64url"),
        ] {
            let e = v.rewrap(&owner, "k", &v1.version, &bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(why), "{why}: {}", e.message);
            assert!(!e.message.contains(&hex::encode(dek)));
        }

        // An immutable release policy holds its data: a latest version with another policy
        // gets no rewrap.
        let policy = |measurement: &str| {
            ReleasePolicyBody {
            content_type: Some("application/json; charset=utf-8".into()),
            data: Some(b64.encode(
                json!({"version": "1.0.0", "anyOf": [{"authority": "https://attest.example", "allOf": [
                    {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": measurement}]}]})
                .to_string(),
            )),
            immutable: Some(true),
        }
        };
        let create = |m: &str| CreateKeyRequest {
            attributes: Some(crate::api::KeyAttributes {
                exportable: Some(true),
                ..Default::default()
            }),
            release_policy: Some(policy(m)),
            ..Default::default()
        };
        v.create_key(&owner, "pinned", create("aa")).unwrap();
        let p1 = v.store.key("pinned", None).unwrap().unwrap();
        let req = json!({"alg": "RSA-OAEP-256", "value": wrap_to(&p1, &dek)});
        v.rotate_key(&owner, "pinned").unwrap();
        let same = v.rewrap(&owner, "pinned", &p1.version, &req).unwrap();
        let p2 = v.store.key("pinned", None).unwrap().unwrap();
        assert_eq!(unwrap_with(&p2, same["value"].as_str().unwrap()), dek);
        v.create_key(&owner, "pinned", create("bb")).unwrap();
        let e = v.rewrap(&owner, "pinned", &p1.version, &req).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(
            e.message.contains("immutable release policy"),
            "{}",
            e.message
        );
        // The same policy but mutable (it could be changed after the move): refused too.
        let mut mutable_copy = create("aa");
        mutable_copy.release_policy.as_mut().unwrap().immutable = Some(false);
        v.create_key(&owner, "pinned", mutable_copy).unwrap();
        let e = v.rewrap(&owner, "pinned", &p1.version, &req).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN, "{}", e.message);

        // Every outcome is in the audit log.
        let log = v.store.audit_entries(0, 1000).unwrap();
        let rewraps: Vec<&str> = log
            .iter()
            .filter(|e| e.event.action == "rewrap")
            .map(|e| e.event.outcome.as_str())
            .collect();
        assert_eq!(rewraps.iter().filter(|r| **r == "ok").count(), 3);
        assert!(rewraps.iter().filter(|r| **r == "denied").count() >= 2);
    }

    #[test]
    fn deleted_keys_are_recoverable_and_purge_protection_holds_them() {
        for purge_protection in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let v = vault_with(
                dir.path(),
                DeletionPolicy {
                    retention: Duration::from_secs(7 * 86_400),
                    purge_protection,
                },
            );
            let owner = Principal {
                name: "contoso".into(),
                token_sha256: "x".into(),
                admin: false,
            };
            let other = Principal {
                name: "woodgrove".into(),
                ..owner.clone()
            };
            let created = v
                .create_key(&owner, "k", CreateKeyRequest::default())
                .unwrap();
            v.create_key(&owner, "k", CreateKeyRequest::default())
                .unwrap(); // a second version
            // Only the owner (or an admin) deletes.
            assert_eq!(
                v.delete_key(&other, "k").unwrap_err().status,
                StatusCode::FORBIDDEN
            );
            let deleted = v.delete_key(&owner, "k").unwrap();
            assert_eq!(deleted["recoveryId"], "https://127.0.0.1:1/deletedkeys/k");
            assert_eq!(
                deleted["scheduledPurgeDate"].as_u64().unwrap()
                    - deleted["deletedDate"].as_u64().unwrap(),
                7 * 86_400
            );
            assert_eq!(
                deleted["attributes"]["recoveryLevel"],
                if purge_protection {
                    "Recoverable"
                } else {
                    "Recoverable+Purgeable"
                }
            );
            // Gone from the key namespace: no get, no release, no reuse of the name.
            assert_eq!(
                v.key_or_404("k", None).unwrap_err().status,
                StatusCode::NOT_FOUND
            );
            let version = created["key"]["kid"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap();
            assert_eq!(
                v.key_or_404("k", Some(version)).unwrap_err().status,
                StatusCode::NOT_FOUND
            );
            assert_eq!(
                v.create_key(&owner, "k", CreateKeyRequest::default())
                    .unwrap_err()
                    .status,
                StatusCode::CONFLICT
            );
            // Recovered with both versions; deleted again, then purged (or not).
            v.recover_deleted(&owner, "k").unwrap();
            assert_eq!(v.store.versions("k").unwrap().len(), 2);
            let grant = Grant {
                principal: "woodgrove".into(),
                permissions: [Permission::Release].into(),
            };
            v.store
                .put_grant(
                    "k",
                    &grant,
                    AuditEvent::new("contoso", "grant", Some("k"), "ok"),
                )
                .unwrap();
            v.put_rotation_policy(
                &owner,
                "k",
                &json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}]}),
            )
            .unwrap();
            v.delete_key(&owner, "k").unwrap();
            let purged = v.purge_deleted(&owner, "k");
            if purge_protection {
                let e = purged.unwrap_err();
                assert_eq!(e.status, StatusCode::FORBIDDEN);
                assert!(e.message.contains("purge protection"), "{}", e.message);
                assert!(v.store.deleted_key("k").unwrap().is_some());
            } else {
                purged.unwrap();
                assert!(v.store.deleted_key("k").unwrap().is_none());
                // A key made later under the name, by anyone, inherits no grant or policy.
                v.create_key(&other, "k", CreateKeyRequest::default())
                    .unwrap();
                assert!(v.store.grants("k").unwrap().is_empty());
                assert!(v.store.rotation_policy("k").unwrap().is_none());
                // Nor the old key's history: its new owner sees the log about "k" from its
                // own creation on (and what it did itself), not contoso's key before.
                v.create_key(&other, "k", CreateKeyRequest::default())
                    .unwrap(); // a second version keeps the same start
                let seen = v.audit_for(&other, 0, 1000).unwrap();
                let seen = seen["value"].as_array().unwrap();
                let actions: Vec<(&str, &str)> = seen
                    .iter()
                    .map(|e| {
                        (
                            e["principal"].as_str().unwrap(),
                            e["action"].as_str().unwrap(),
                        )
                    })
                    .collect();
                assert!(
                    actions.iter().all(|(p, _)| *p == "woodgrove"),
                    "{actions:?}"
                );
                assert_eq!(
                    actions.iter().filter(|(_, a)| *a == "create").count(),
                    2,
                    "{actions:?}"
                );
                // Contoso still sees what it did.
                let theirs = v.audit_for(&owner, 0, 1000).unwrap();
                assert!(
                    theirs["value"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|e| e["action"] == "purge"),
                    "{theirs}"
                );
            }
        }
    }

    /// A request that waits for the audit commit (a slow disk, a busy group commit) must not
    /// hold an async worker: on a one-thread runtime, a health check is answered meanwhile.
    #[test]
    fn a_request_waiting_for_an_audit_commit_leaves_the_runtime_free() {
        let dir = tempfile::tempdir().unwrap();
        let ca = conclave_net::LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
        let opened = crate::setup::open(
            crate::setup::VaultOptions {
                state_dir: dir.path().join("vault"),
                vault_url: "https://127.0.0.1:1".into(),
                tls_names: vec!["127.0.0.1".into()],
                authorities: vec![],
                http: reqwest::Client::new(),
                hardware_only: false,
                master_key_file: None,
                deletion: Default::default(),
                postgres: None,
            },
            crate::setup::Certificates::LocalCa(&ca),
        )
        .unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (let_go_tx, let_go_rx) = std::sync::mpsc::channel::<()>();
        let vault = opened.vault.clone();
        let holder = std::thread::spawn(move || {
            vault.store().with_audit_commits_held(|| {
                held_tx.send(()).unwrap();
                // Bounded, so that a runtime blocked by the request cannot hang the test.
                let _ = let_go_rx.recv_timeout(Duration::from_secs(20));
            })
        });
        held_rx.recv().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let app = router(opened.vault.clone());
            // A bad bearer token is audited, so this request waits for the commit lock.
            let denied = tokio::spawn(
                app.clone().oneshot(
                    Request::get("/keys")
                        .header("authorization", "Bearer not-a-token")
                        .body(Body::empty())
                        .unwrap(),
                ),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            let health = app
                .clone()
                .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(health.status(), StatusCode::OK);
            assert!(
                !denied.is_finished(),
                "the health check waited for another request's audit commit: the commit held the runtime's thread"
            );
            let_go_tx.send(()).unwrap();
            let denied = denied.await.unwrap().unwrap();
            assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        });
        holder.join().unwrap();
        let last = opened.vault.store().audit_entries(0, 100).unwrap();
        assert!(
            last.iter().any(|e| e.event.action == "authenticate"),
            "the refused request is in the audit log"
        );
    }
}
