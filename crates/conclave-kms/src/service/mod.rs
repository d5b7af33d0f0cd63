//! The vault's HTTP service: Azure Key Vault's keys API (create, get, list versions, update,
//! release), plus grants, principals and the audit log.
//!
//! [`Vault`] is the state; its behaviour is split by concern: `error` (Azure's error shape),
//! `auth` (bearer tokens to principals, ownership and grant checks, audited refusals), `admin`
//! (principals and grants), `keys` (key management), `audit` (the log as its readers see it),
//! `routes` (the axum handlers, router and OpenAPI description); secure key release is
//! [`crate::release`].

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

mod admin;
mod audit;
mod auth;
mod error;
mod keys;
mod routes;
#[cfg(test)]
pub(crate) mod tests;

pub use auth::{FirstAdmin, parse_admin_token_sha256};
pub(crate) use error::VResult;
pub use error::VaultError;
pub use routes::*;

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

/// What [`Vault::new_key_material`] makes: the fields of a [`KeyRecord`] that a new version
/// does not share with the key's other versions.
pub(super) struct NewKeyMaterial {
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
pub(super) enum Manager {
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
        if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN && !e.audited {
            let event =
                AuditEvent::new(&who.name, action, Some(key), "denied").reason(e.message.clone());
            if let Err(err) = self.store.audit(event) {
                return VaultError::from(err);
            }
        }
        e
    }
}
