//! Secure key release, as data: the facts of a request ([`ReleaseFacts`]: who asks, the key,
//! what the attestation token proved) go through one pure decision ([`decide`]), whose outcome
//! is a [`Release`] or a [`Refusal`] naming its reason; the vault then wraps the key (which can
//! still refuse a TEE key it cannot wrap to) and audits the outcome in one place
//! (`Vault::audit_release`, called by `Vault::release` for every outcome), so no check can
//! refuse without an audit entry, and none is audited twice.
//!
//! The grammar of the policies is in [`crate::policy`]; the response shape is Azure Key
//! Vault's `POST /keys/{name}/{version}/release` (API version 7.4): a JWS whose payload carries
//! the key with `key_hsm`, the key wrapped to the TEE's key (Azure's BYOK transfer blob).

use axum::http::StatusCode;
use base64::Engine as _;
use conclave_protocol::token::VerifiedToken;
use serde_json::{Value, json};

use crate::api::{self, ReleaseRequest};
use crate::audit::AuditEvent;
use crate::crypto::{self, WrapAlgorithm};
use crate::policy::ReleasePolicy;
use crate::service::{VResult, Vault, VaultError, now};
use crate::store::{BudgetLedger, KeyRecord, Payment, Permission, Principal, ReleaseEntry};

/// The kid the TEE's key carries in `x-ms-runtime.keys` (named in `key_hsm`'s header).
const TEE_KEY_ID: &str = "TeeEncryptionKey";

/// Why a release is refused. Each is audited (`release`, `denied`, with [`reason`](Self::reason))
/// and counted under [`code`](Self::code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The caller neither owns the key nor holds a release grant on it.
    NoGrant {
        principal: String,
        key: String,
        owner: String,
    },
    KeyDisabled,
    /// Outside the key's `nbf`/`exp`.
    KeyNotValidNow,
    /// No release policy, or not exportable.
    NotExportable,
    /// `enc` names an algorithm the vault does not wrap with (400, not 403).
    UnsupportedEnc(String),
    /// The target is not a JWT with an `iss`.
    MalformedToken,
    UntrustedIssuer(String),
    /// The authority's verifier refused the token (signature, expiry, …).
    TokenRejected(String),
    /// A simulated platform's token at a vault that releases to hardware only.
    SimulatedPlatform,
    NonceMismatch,
    PolicyNotSatisfied(String),
    /// The token carries no usable TEE encryption key.
    NoTeeKey,
    /// The TEE key cannot be wrapped to (too small, malformed).
    BadTeeKey(String),
    /// The key has a privacy budget and the token attests no ε for its run
    /// ([`conclave_protocol::claims::CONTRACT_EPSILON_CLAIM`]).
    EpsilonNotAttested,
    /// The run's ε is more than the key's privacy budget has left (millionths of ε).
    BudgetExhausted {
        requested_micros: u64,
        remaining_micros: u64,
        total_micros: u64,
    },
}

/// `micros` millionths of ε, as people write ε.
fn epsilon(micros: u64) -> String {
    format!("{}", conclave_protocol::vault::epsilon_from_micros(micros))
}

impl Refusal {
    /// The label of `conclave_vault_key_releases_total{outcome="denied"}`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoGrant { .. } => "no_grant",
            Refusal::KeyDisabled => "key_disabled",
            Refusal::KeyNotValidNow => "key_not_valid_now",
            Refusal::NotExportable => "not_exportable",
            Refusal::UnsupportedEnc(_) => "unsupported_enc",
            Refusal::MalformedToken => "malformed_token",
            Refusal::UntrustedIssuer(_) => "untrusted_issuer",
            Refusal::TokenRejected(_) => "token_rejected",
            Refusal::SimulatedPlatform => "simulated_platform",
            Refusal::NonceMismatch => "nonce_mismatch",
            Refusal::PolicyNotSatisfied(_) => "policy_not_satisfied",
            Refusal::NoTeeKey => "no_tee_key",
            Refusal::BadTeeKey(_) => "bad_tee_key",
            Refusal::EpsilonNotAttested => "epsilon_not_attested",
            Refusal::BudgetExhausted { .. } => "privacy_budget_exhausted",
        }
    }

    /// What the caller is told and the audit entry records.
    pub fn reason(&self) -> String {
        match self {
            Refusal::NoGrant {
                principal,
                key,
                owner,
            } => format!(
                "principal {principal} has no release grant on key {key}; its owner ({owner}) must grant it"
            ),
            Refusal::KeyDisabled => "the key is disabled".into(),
            Refusal::KeyNotValidNow => "the key is outside its validity period (nbf/exp)".into(),
            Refusal::NotExportable => {
                "the key is not exportable (it has no release policy)".into()
            }
            Refusal::UnsupportedEnc(e) => format!(
                "enc {e} is not supported: use CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256 or RSA_AES_KEY_WRAP_384"
            ),
            Refusal::MalformedToken => "the target is not a JWT with an iss claim".into(),
            Refusal::UntrustedIssuer(issuer) => format!(
                "the token's issuer {issuer} is not an attestation authority this vault trusts"
            ),
            Refusal::TokenRejected(e) => format!("attestation token rejected: {e}"),
            Refusal::SimulatedPlatform => "this vault releases keys to hardware TEEs only; the token is for a simulated platform".into(),
            Refusal::NonceMismatch => {
                "the token's nonce does not match the request's nonce".into()
            }
            Refusal::PolicyNotSatisfied(r) => format!("release policy not satisfied: {r}"),
            Refusal::NoTeeKey => "the token carries no TEE encryption key (an RSA key in x-ms-runtime.keys with key_ops [\"encrypt\"], key_use \"enc\" or use \"enc\")".into(),
            Refusal::BadTeeKey(e) => e.clone(),
            Refusal::EpsilonNotAttested => format!(
                "the key has a privacy budget, and the token attests no epsilon for the run ({}): only a workload running a contract with differential privacy may spend it",
                conclave_protocol::claims::CONTRACT_EPSILON_CLAIM
            ),
            Refusal::BudgetExhausted {
                requested_micros,
                remaining_micros,
                total_micros,
            } => format!(
                "privacy budget exhausted: the run would spend epsilon {} and the key has {} left of {}; its owner can raise the total (conclave key budget)",
                epsilon(*requested_micros),
                epsilon(*remaining_micros),
                epsilon(*total_micros)
            ),
        }
    }

    /// 400 for a malformed request, 403 for every other refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::UnsupportedEnc(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// What the vault knows when it decides: nothing here is fetched by [`decide`].
pub struct ReleaseFacts<'a> {
    pub who: &'a Principal,
    pub rec: &'a KeyRecord,
    /// Whether `who` owns the key or holds a release grant on it.
    pub permitted: bool,
    /// Unix seconds.
    pub now: u64,
    pub req: &'a ReleaseRequest,
    /// The verified token, or why there is none ([`Refusal::MalformedToken`],
    /// [`Refusal::UntrustedIssuer`], [`Refusal::TokenRejected`]).
    pub token: Result<&'a VerifiedToken, Refusal>,
    pub hardware_only: bool,
    /// The key's privacy-budget ledger, if its owner set one, as read before deciding: a
    /// release it cannot pay is refused before anything is wrapped. What is paid is decided
    /// again where it is written ([`crate::store::Store::record_release`]).
    pub budget: Option<BudgetLedger>,
}

/// A wrapped key ready to go, once its release is audited (and paid for).
pub struct Granted {
    jws: String,
    enc: WrapAlgorithm,
    budgeted: bool,
}

/// A release the decision allows: what to wrap, how, and to which key.
#[derive(Debug)]
pub struct Release {
    pub enc: WrapAlgorithm,
    /// The TEE key's RSA modulus and exponent (big-endian).
    pub tee_n: Vec<u8>,
    pub tee_e: Vec<u8>,
    /// Whether the key had a privacy budget when this was decided.
    pub budgeted: bool,
}

/// The ε a token attests for its run, in millionths rounded up: `None` when absent, or not a
/// finite number above 0.
pub fn attested_epsilon_micros(claims: &Value) -> Option<u64> {
    let eps = conclave_protocol::release_policy::claim_at(
        claims,
        conclave_protocol::claims::CONTRACT_EPSILON_CLAIM,
    )?
    .as_f64()?;
    let micros = (eps * conclave_protocol::vault::EPSILON_MICROS).ceil();
    (eps.is_finite() && eps > 0.0 && micros < u64::MAX as f64).then_some(micros as u64)
}

/// The decision: every check of secure key release, in order, on the facts alone.
pub fn decide(f: &ReleaseFacts) -> Result<Release, Refusal> {
    let (enc, stored) = key_checks(f)?;
    let verified = f.token.clone()?;
    let claims = &verified.claims;
    if f.hardware_only
        && claims
            .get(conclave_protocol::claims::PLATFORM_CLAIM)
            .and_then(Value::as_str)
            == Some("sim")
    {
        return Err(Refusal::SimulatedPlatform);
    }
    if let Some(nonce) = &f.req.nonce
        && claims.get("nonce").and_then(Value::as_str) != Some(nonce.as_str())
    {
        return Err(Refusal::NonceMismatch);
    }
    // A stored policy was validated when it was set: failing to read it now is corruption,
    // refused like an unsatisfied policy (never a release).
    let policy = conclave_protocol::b64::b64url_decode(&stored.data)
        .map_err(|e| e.to_string())
        .and_then(|bytes| ReleasePolicy::parse(&bytes).map_err(|e| e.to_string()))
        .map_err(|e| {
            Refusal::PolicyNotSatisfied(format!("the stored policy is unreadable: {e}"))
        })?;
    policy
        .evaluate(verified.issuer(), claims)
        .map_err(|r| Refusal::PolicyNotSatisfied(r.to_string()))?;
    if let Some(ledger) = &f.budget {
        let requested = attested_epsilon_micros(claims).ok_or(Refusal::EpsilonNotAttested)?;
        if !ledger.affords(requested) {
            return Err(Refusal::BudgetExhausted {
                requested_micros: requested,
                remaining_micros: ledger.remaining_micros(),
                total_micros: ledger.total_micros,
            });
        }
    }
    let (tee_n, tee_e) = tee_key(claims).ok_or(Refusal::NoTeeKey)?;
    Ok(Release {
        enc,
        tee_n,
        tee_e,
        budgeted: f.budget.is_some(),
    })
}

/// The checks that need no token (the first of [`decide`]'s): the vault verifies a token only
/// for a request that passes them.
pub fn key_checks<'a>(
    f: &ReleaseFacts<'a>,
) -> Result<(WrapAlgorithm, &'a crate::store::StoredPolicy), Refusal> {
    if !f.permitted {
        return Err(Refusal::NoGrant {
            principal: f.who.name.clone(),
            key: f.rec.name.clone(),
            owner: f.rec.owner.clone(),
        });
    }
    if !f.rec.enabled {
        return Err(Refusal::KeyDisabled);
    }
    if f.rec.nbf.is_some_and(|nbf| f.now < nbf) || f.rec.exp.is_some_and(|exp| f.now > exp) {
        return Err(Refusal::KeyNotValidNow);
    }
    let (Some(stored), true) = (&f.rec.release_policy, f.rec.exportable) else {
        return Err(Refusal::NotExportable);
    };
    let enc = match f.req.enc.as_deref() {
        None => WrapAlgorithm::CkmRsaAesKeyWrap,
        Some(e) => WrapAlgorithm::parse(e).ok_or_else(|| Refusal::UnsupportedEnc(e.into()))?,
    };
    Ok((enc, stored))
}

/// The `iss` of a token, read before verification only to pick the verifier.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = conclave_protocol::b64::b64url_decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some(v.get("iss")?.as_str()?.to_string())
}

/// The launch measurement in a token, wherever its platform puts it.
pub fn measurement_of(claims: &Value) -> Option<String> {
    conclave_protocol::runtime::launch_measurement(claims).map(String::from)
}

/// The TEE's encryption key from `x-ms-runtime.keys` (see
/// [`conclave_protocol::runtime::RuntimeClaims::encryption_key`]).
pub fn tee_key(claims: &Value) -> Option<(Vec<u8>, Vec<u8>)> {
    conclave_protocol::runtime::RuntimeClaims::from_claims(claims)?.encryption_key()
}

impl Vault {
    /// `POST /keys/{name}[/{version}]/release` of `rec` (key `name`, read with the caller's
    /// principal): gathers the facts (the grant, the verified token), decides, wraps, and
    /// audits the outcome, whichever it is. Errors that are not refusals (the store
    /// unavailable, a sealed key that does not open) are not decisions and carry their own
    /// status.
    pub(crate) async fn release(
        &self,
        who: &Principal,
        name: &str,
        rec: VResult<KeyRecord>,
        req: ReleaseRequest,
    ) -> VResult<api::ReleaseResponse> {
        let rec = rec?;
        let permitted = self.permitted(who, &rec, Permission::Release)?;
        let mut facts = ReleaseFacts {
            who,
            rec: &rec,
            permitted,
            now: now(),
            req: &req,
            token: Err(Refusal::MalformedToken),
            hardware_only: self.config().hardware_only,
            budget: self.store().budget(name)?,
        };
        let verified = match key_checks(&facts) {
            Ok(_) => self.verify_target(&req.target).await,
            // Refused before the token matters: decide refuses the same way.
            Err(refusal) => Err(refusal),
        };
        facts.token = verified.as_ref().map_err(Clone::clone);
        let outcome = match decide(&facts) {
            Ok(release) => self.wrap_release(&rec, &req, release)?,
            Err(refusal) => Err(refusal),
        };
        self.audit_release(who, name, &rec, verified.as_ref().ok(), outcome)
    }

    /// Finds the token's authority among those configured (only they are asked) and verifies
    /// it there.
    async fn verify_target(&self, target: &str) -> Result<VerifiedToken, Refusal> {
        let issuer = unverified_issuer(target).ok_or(Refusal::MalformedToken)?;
        let authority = self
            .config()
            .authorities
            .iter()
            .find(|a| a.issuer.eq_ignore_ascii_case(issuer.trim_end_matches('/')))
            .ok_or_else(|| Refusal::UntrustedIssuer(issuer.clone()))?;
        authority
            .verifier
            .verify(target)
            .await
            .map_err(|e| Refusal::TokenRejected(e.to_string()))
    }

    /// Wraps the key to the TEE's key and signs the response; a TEE key that cannot be wrapped
    /// to is a refusal. The outer error is the vault's own failure.
    fn wrap_release(
        &self,
        rec: &KeyRecord,
        req: &ReleaseRequest,
        release: Release,
    ) -> VResult<Result<Granted, Refusal>> {
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&rec.sealed_private)
            .map_err(VaultError::internal)?;
        let pkcs8 = self
            .master()
            .open(format!("{}/{}", rec.name, rec.version).as_bytes(), &sealed)
            .map_err(VaultError::internal)?;
        let wrapped = match crypto::wrap(&pkcs8, &release.tee_n, &release.tee_e, release.enc) {
            Ok(w) => w,
            Err(err @ crypto::KeyWrapError::BadTeeKey(_)) => {
                return Ok(Err(Refusal::BadTeeKey(err.to_string())));
            }
            Err(err) => return Err(VaultError::internal(err)),
        };
        drop(pkcs8);
        Ok(Ok(Granted {
            jws: self.release_jws(rec, req, release.enc, &wrapped)?,
            enc: release.enc,
            budgeted: release.budgeted,
        }))
    }

    /// The one place a release outcome is audited and counted: granted with the version, the
    /// wrapping and the issuer (and, for a key with a privacy budget, the ε debited and what
    /// is left: the debit and the entry commit together); denied with the refusal's reason;
    /// both with the TEE's measurement and platform when a token was verified.
    fn audit_release(
        &self,
        who: &Principal,
        name: &str,
        rec: &KeyRecord,
        verified: Option<&VerifiedToken>,
        outcome: Result<Granted, Refusal>,
    ) -> VResult<api::ReleaseResponse> {
        let with_token = |mut event: AuditEvent| {
            if let Some(c) = verified.map(|v| &v.claims) {
                event.measurement = measurement_of(c);
                event.platform = conclave_protocol::runtime::platform(c).map(String::from);
            }
            event
        };
        let outcome = match outcome {
            Ok(granted) => {
                let detail = json!({"version": rec.version, "enc": granted.enc.name(), "issuer": verified.map(VerifiedToken::issuer)});
                // Paid for (when the key has a budget) in the write that records it: a budget
                // set or spent since `decide` read it counts.
                let epsilon_micros = verified.and_then(|v| attested_epsilon_micros(&v.claims));
                let payment = self.store().record_release(ReleaseEntry {
                    key: name.to_string(),
                    epsilon_micros,
                    budgeted: granted.budgeted,
                    now: now(),
                    event: with_token(
                        AuditEvent::new(&who.name, "release", Some(name), "granted").detail(detail),
                    ),
                })?;
                match payment {
                    Payment::Free(_) | Payment::Paid(..) => Ok(granted.jws),
                    Payment::NotAttested(_) => Err(Refusal::EpsilonNotAttested),
                    // Purged since the decision: its budget went with it, and a key that was
                    // just purged is not released.
                    Payment::BudgetGone => Err(Refusal::KeyDisabled),
                    Payment::Insufficient(ledger) => Err(Refusal::BudgetExhausted {
                        requested_micros: epsilon_micros.unwrap_or_default(),
                        remaining_micros: ledger.remaining_micros(),
                        total_micros: ledger.total_micros,
                    }),
                }
            }
            Err(refusal) => Err(refusal),
        };
        match outcome {
            Ok(jws) => {
                self.count_release("granted", "");
                tracing::info!(principal = %who.name, key = name, "key released to an attested TEE");
                Ok(api::ReleaseResponse { value: jws })
            }
            Err(refusal) => {
                self.count_release("denied", refusal.code());
                let reason = refusal.reason();
                tracing::warn!(principal = %who.name, key = name, "release denied: {reason}");
                self.store().audit(with_token(
                    AuditEvent::new(&who.name, "release", Some(name), "denied")
                        .reason(reason.clone()),
                ))?;
                let mut e = VaultError::new(
                    refusal.status(),
                    if refusal.status() == StatusCode::FORBIDDEN {
                        "Forbidden"
                    } else {
                        "BadParameter"
                    },
                    reason,
                );
                e.audited = true;
                Err(e)
            }
        }
    }

    fn release_jws(
        &self,
        rec: &KeyRecord,
        req: &ReleaseRequest,
        enc: WrapAlgorithm,
        wrapped: &[u8],
    ) -> VResult<String> {
        let b64url = conclave_protocol::b64::b64url;
        let vault_url = &self.config().vault_url;
        let kid = api::kid(vault_url, &rec.name, &rec.version);
        // key_hsm carries the wrapped key in Azure's BYOK transfer-blob shape.
        let key_hsm = api::KeyTransferBlob {
            schema_version: "1.0".into(),
            header: api::KeyTransferHeader {
                kid: TEE_KEY_ID.into(),
                alg: "dir".into(),
                enc: enc.name().into(),
            },
            ciphertext: b64url(wrapped),
            generator: concat!("conclave-kms/", env!("CARGO_PKG_VERSION")).into(),
        };
        let mut key = api::bundle(vault_url, rec, self.recovery());
        key.key.key_hsm = Some(b64url(&serde_json::to_vec(&key_hsm).expect("JSON")));
        let payload = api::KeyReleasePayload {
            request: api::KeyReleaseEcho {
                api_version: "7.4".into(),
                enc: enc.name().into(),
                kid,
                nonce: req.nonce.clone(),
            },
            response: api::KeyReleaseResponse { key },
        };
        let mut header = serde_json::Map::new();
        header.insert(
            "x5c".into(),
            self.config()
                .signing
                .chain
                .iter()
                .map(|c| Value::String(base64::engine::general_purpose::STANDARD.encode(c)))
                .collect::<Vec<_>>()
                .into(),
        );
        header.insert("typ".into(), "JWT".into());
        conclave_protocol::jws::sign_rs256(header, &payload, &self.config().signing.key)
            .map_err(VaultError::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredPolicy;

    const AUTHORITY: &str = "https://attest.example";

    /// One refusal of each kind. The match makes a new variant fail to compile here until it
    /// has an example, which the tests then decide and audit.
    fn every_refusal() -> Vec<Refusal> {
        let all = vec![
            Refusal::NoGrant {
                principal: "woodgrove".into(),
                key: "k".into(),
                owner: "contoso".into(),
            },
            Refusal::KeyDisabled,
            Refusal::KeyNotValidNow,
            Refusal::NotExportable,
            Refusal::UnsupportedEnc("A256GCM".into()),
            Refusal::MalformedToken,
            Refusal::UntrustedIssuer("https://elsewhere.example".into()),
            Refusal::TokenRejected("the token has expired".into()),
            Refusal::SimulatedPlatform,
            Refusal::NonceMismatch,
            Refusal::PolicyNotSatisfied("x".into()),
            Refusal::NoTeeKey,
            Refusal::BadTeeKey("the TEE key is 1024 bits".into()),
            Refusal::EpsilonNotAttested,
            Refusal::BudgetExhausted {
                requested_micros: 500_000,
                remaining_micros: 250_000,
                total_micros: 2_000_000,
            },
        ];
        let mut seen = std::collections::BTreeSet::new();
        for r in &all {
            seen.insert(match r {
                Refusal::NoGrant { .. } => 0,
                Refusal::KeyDisabled => 1,
                Refusal::KeyNotValidNow => 2,
                Refusal::NotExportable => 3,
                Refusal::UnsupportedEnc(_) => 4,
                Refusal::MalformedToken => 5,
                Refusal::UntrustedIssuer(_) => 6,
                Refusal::TokenRejected(_) => 7,
                Refusal::SimulatedPlatform => 8,
                Refusal::NonceMismatch => 9,
                Refusal::PolicyNotSatisfied(_) => 10,
                Refusal::NoTeeKey => 11,
                Refusal::BadTeeKey(_) => 12,
                Refusal::EpsilonNotAttested => 13,
                Refusal::BudgetExhausted { .. } => 14,
            });
        }
        assert_eq!(seen.len(), 15, "one example of each refusal");
        all
    }

    fn principal(name: &str) -> Principal {
        Principal {
            name: name.into(),
            token_sha256: "x".into(),
            admin: false,
        }
    }

    fn record() -> KeyRecord {
        let policy = json!({"version": "1.0.0", "anyOf": [{"authority": AUTHORITY, "allOf": [
            {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": "aa"}]}]});
        KeyRecord {
            name: "k".into(),
            version: "0".repeat(32),
            kty: "RSA-HSM".into(),
            key_size: 2048,
            key_ops: vec![],
            n: String::new(),
            e: String::new(),
            sealed_private: String::new(),
            enabled: true,
            exportable: true,
            created: 1,
            updated: 1,
            nbf: None,
            exp: None,
            release_policy: Some(StoredPolicy {
                content_type: "application/json; charset=utf-8".into(),
                data: conclave_protocol::b64::b64url(policy.to_string().as_bytes()),
                immutable: false,
            }),
            owner: "contoso".into(),
            tags: Default::default(),
            audit_from: None,
        }
    }

    fn token(claims: Value) -> VerifiedToken {
        let mut all = json!({
            "iss": AUTHORITY,
            "x-ms-sevsnpvm-launchmeasurement": "aa",
            "x-ms-attestation-type": "sevsnpvm",
            "nonce": "n1",
            "x-ms-runtime": {"keys": [{"kid": TEE_KEY_ID, "kty": "RSA", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"}]},
        });
        all.as_object_mut()
            .unwrap()
            .extend(claims.as_object().unwrap().clone());
        VerifiedToken {
            kid: "k1".into(),
            claims: all,
        }
    }

    /// Each check refuses on its own fact, in order, and a request that passes them all is
    /// released with the requested wrapping to the token's TEE key.
    #[test]
    fn decide_refuses_on_each_fact_and_releases_when_all_hold() {
        let (owner, other) = (principal("contoso"), principal("woodgrove"));
        let good = token(json!({}));
        let req = ReleaseRequest {
            target: "t".into(),
            nonce: Some("n1".into()),
            enc: Some("RSA_AES_KEY_WRAP_256".into()),
        };
        let rec = record();
        let base = || ReleaseFacts {
            who: &owner,
            rec: &rec,
            permitted: true,
            now: 100,
            req: &req,
            token: Ok(&good),
            hardware_only: false,
            budget: None,
        };
        let released = decide(&base()).unwrap();
        assert_eq!(released.enc.name(), "RSA_AES_KEY_WRAP_256");
        assert_eq!(
            (released.tee_n, released.tee_e),
            (vec![1, 0, 1], vec![1, 0, 1])
        );

        let refused = |f: ReleaseFacts| decide(&f).unwrap_err().code();
        assert_eq!(
            refused(ReleaseFacts {
                who: &other,
                permitted: false,
                ..base()
            }),
            "no_grant"
        );
        let disabled = KeyRecord {
            enabled: false,
            ..record()
        };
        assert_eq!(
            refused(ReleaseFacts {
                rec: &disabled,
                ..base()
            }),
            "key_disabled"
        );
        let expired = KeyRecord {
            exp: Some(50),
            ..record()
        };
        assert_eq!(
            refused(ReleaseFacts {
                rec: &expired,
                ..base()
            }),
            "key_not_valid_now"
        );
        let not_yet = KeyRecord {
            nbf: Some(150),
            ..record()
        };
        assert_eq!(
            refused(ReleaseFacts {
                rec: &not_yet,
                ..base()
            }),
            "key_not_valid_now"
        );
        let no_policy = KeyRecord {
            release_policy: None,
            ..record()
        };
        assert_eq!(
            refused(ReleaseFacts {
                rec: &no_policy,
                ..base()
            }),
            "not_exportable"
        );
        let bad_enc = ReleaseRequest {
            enc: Some("A256GCM".into()),
            ..req.clone()
        };
        assert_eq!(
            refused(ReleaseFacts {
                req: &bad_enc,
                ..base()
            }),
            "unsupported_enc"
        );
        for missing in [
            Refusal::MalformedToken,
            Refusal::UntrustedIssuer("https://elsewhere.example".into()),
            Refusal::TokenRejected("expired".into()),
        ] {
            let code = missing.code();
            assert_eq!(
                refused(ReleaseFacts {
                    token: Err(missing),
                    ..base()
                }),
                code
            );
        }
        let sim = token(json!({(conclave_protocol::claims::PLATFORM_CLAIM): "sim"}));
        assert_eq!(
            refused(ReleaseFacts {
                token: Ok(&sim),
                hardware_only: true,
                ..base()
            }),
            "simulated_platform"
        );
        assert!(
            decide(&ReleaseFacts {
                token: Ok(&sim),
                ..base()
            })
            .is_ok()
        );
        let other_nonce = token(json!({"nonce": "n2"}));
        assert_eq!(
            refused(ReleaseFacts {
                token: Ok(&other_nonce),
                ..base()
            }),
            "nonce_mismatch"
        );
        let other_code = token(json!({"x-ms-sevsnpvm-launchmeasurement": "bb"}));
        assert_eq!(
            refused(ReleaseFacts {
                token: Ok(&other_code),
                ..base()
            }),
            "policy_not_satisfied"
        );
        let no_key = token(json!({"x-ms-runtime": {"keys": []}}));
        assert_eq!(
            refused(ReleaseFacts {
                token: Ok(&no_key),
                ..base()
            }),
            "no_tee_key"
        );
        // With a privacy budget: the token must attest the run's ε, which must fit in what is
        // left (counted in millionths, rounded up).
        let ledger = |total: u64, spent: u64| {
            Some(BudgetLedger {
                total_micros: total,
                spent_micros: spent,
                releases: 0,
                updated: 0,
            })
        };
        assert_eq!(
            refused(ReleaseFacts {
                budget: ledger(1_000_000, 0),
                ..base()
            }),
            "epsilon_not_attested"
        );
        let dp = token(json!({"x-ms-runtime": {
            "keys": [{"kid": TEE_KEY_ID, "kty": "RSA", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"}],
            "contract": {"digest": "d", "k": 10, "epsilon": 0.3000001}}}));
        assert_eq!(attested_epsilon_micros(&dp.claims), Some(300_001));
        decide(&ReleaseFacts {
            token: Ok(&dp),
            budget: ledger(1_000_000, 699_999),
            ..base()
        })
        .unwrap();
        let short = decide(&ReleaseFacts {
            token: Ok(&dp),
            budget: ledger(1_000_000, 700_000),
            ..base()
        })
        .unwrap_err();
        assert_eq!(
            short,
            Refusal::BudgetExhausted {
                requested_micros: 300_001,
                remaining_micros: 300_000,
                total_micros: 1_000_000
            }
        );
        assert!(
            short.reason().contains("epsilon 0.300001"),
            "{}",
            short.reason()
        );
        assert!(
            short.reason().contains("0.3 left of 1"),
            "{}",
            short.reason()
        );
        // Without a budget, an attested ε does not matter.
        decide(&ReleaseFacts {
            token: Ok(&dp),
            ..base()
        })
        .unwrap();
        for bad in [json!(0), json!(-1.0), json!("0.5"), json!(null)] {
            let t = token(json!({"x-ms-runtime": {
                "keys": [{"kid": TEE_KEY_ID, "kty": "RSA", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"}],
                "contract": {"epsilon": bad}}}));
            assert_eq!(
                refused(ReleaseFacts {
                    token: Ok(&t),
                    budget: ledger(1_000_000, 0),
                    ..base()
                }),
                "epsilon_not_attested",
                "{bad}"
            );
        }
        // A refusal that needs no token is decided before the token is looked at.
        assert_eq!(
            refused(ReleaseFacts {
                rec: &disabled,
                token: Err(Refusal::MalformedToken),
                ..base()
            }),
            "key_disabled"
        );
    }

    /// Every refusal, whatever the check that makes it, is audited by the one wrapper (with its
    /// reason, the TEE's measurement and platform when a token was verified) and answered
    /// with its status; a release is audited as granted.
    #[test]
    fn every_refusal_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let v = crate::service::tests::vault_with(dir.path(), Default::default());
        let who = principal("woodgrove");
        let rec = record();
        let verified = token(json!({(conclave_protocol::claims::PLATFORM_CLAIM): "sev-snp"}));
        for (i, refusal) in every_refusal().into_iter().enumerate() {
            let with_token = (i % 2 == 0).then_some(&verified);
            let before = v.store().audit_head().unwrap().map(|(seq, _)| seq);
            let e = v
                .audit_release(&who, "k", &rec, with_token, Err(refusal.clone()))
                .unwrap_err();
            assert_eq!(e.status, refusal.status(), "{refusal:?}");
            assert_eq!(e.message, refusal.reason());
            let (seq, _) = v.store().audit_head().unwrap().unwrap();
            assert_eq!(
                Some(seq),
                before.map_or(Some(0), |b| Some(b + 1)),
                "{refusal:?} not audited"
            );
            let entry = v.store().audit_entries(seq, 1).unwrap().remove(0);
            assert_eq!(
                (
                    entry.event.action.as_str(),
                    entry.event.outcome.as_str(),
                    entry.event.principal.as_str(),
                    entry.event.key.as_deref()
                ),
                ("release", "denied", "woodgrove", Some("k"))
            );
            assert_eq!(
                entry.event.reason.as_deref(),
                Some(refusal.reason().as_str())
            );
            assert_eq!(
                entry.event.measurement.as_deref(),
                with_token.map(|_| "aa"),
                "{refusal:?}"
            );
        }
        v.audit_release(
            &who,
            "k",
            &rec,
            Some(&verified),
            Ok(Granted {
                jws: "jws".into(),
                enc: WrapAlgorithm::CkmRsaAesKeyWrap,
                budgeted: false,
            }),
        )
        .unwrap();
        let (seq, _) = v.store().audit_head().unwrap().unwrap();
        let entry = v.store().audit_entries(seq, 1).unwrap().remove(0);
        assert_eq!(entry.event.outcome, "granted");
        assert_eq!(entry.event.platform.as_deref(), Some("sev-snp"));
    }

    /// What a release costs is decided where it is recorded: a budget the owner set, or a
    /// debit another release made, after `decide` read the ledger still counts.
    #[test]
    fn a_release_is_paid_for_in_the_write_that_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let v = crate::service::tests::vault_with(dir.path(), Default::default());
        let who = principal("woodgrove");
        let rec = record();
        let granted = || {
            Ok(Granted {
                jws: "jws".into(),
                enc: WrapAlgorithm::CkmRsaAesKeyWrap,
                budgeted: false,
            })
        };
        let dp = |eps: f64| {
            token(json!({"x-ms-runtime": {
            "keys": [{"kid": TEE_KEY_ID, "kty": "RSA", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"}],
            "contract": {"digest": "d", "k": 10, "epsilon": eps}}}))
        };
        let last = || {
            let (seq, _) = v.store().audit_head().unwrap().unwrap();
            v.store().audit_entries(seq, 1).unwrap().remove(0).event
        };
        // No budget: granted, nothing debited.
        v.audit_release(&who, "k", &rec, Some(&dp(0.4)), granted())
            .unwrap();
        assert_eq!(last().outcome, "granted");
        assert_eq!(v.store().budget("k").unwrap(), None);

        // The owner sets the first budget after the decision read none: a token without ε is
        // refused, one with ε pays.
        v.store()
            .put_budget(
                "k",
                1_000_000,
                1,
                AuditEvent::new("contoso", "budget", Some("k"), "ok"),
            )
            .unwrap();
        let plain = token(json!({}));
        let err = v
            .audit_release(&who, "k", &rec, Some(&plain), granted())
            .unwrap_err();
        assert!(
            err.message.contains("attests no epsilon"),
            "{}",
            err.message
        );
        assert_eq!(
            (last().outcome.as_str(), last().reason.is_some()),
            ("denied", true)
        );
        for _ in 0..2 {
            v.audit_release(&who, "k", &rec, Some(&dp(0.4)), granted())
                .unwrap();
        }
        let paid = last();
        assert_eq!(paid.outcome, "granted");
        let detail = paid.detail.unwrap();
        assert_eq!(detail["epsilon"], json!(0.4));
        assert_eq!(detail["remainingEpsilon"], json!(0.2));
        let ledger = v.store().budget("k").unwrap().unwrap();
        assert_eq!((ledger.spent_micros, ledger.releases), (800_000, 2));

        // A third run of 0.4 would overspend: refused with what is left, nothing debited.
        let err = v
            .audit_release(&who, "k", &rec, Some(&dp(0.4)), granted())
            .unwrap_err();
        assert!(err.message.contains("0.2 left of 1"), "{}", err.message);
        assert_eq!(last().outcome, "denied");
        assert_eq!(v.store().budget("k").unwrap(), Some(ledger));
    }

    #[test]
    fn the_tee_key_may_be_marked_by_key_ops_key_use_or_use() {
        let with = |mark: Value| {
            let mut jwk =
                json!({"kid": "TeeEncryptionKey", "kty": "RSA", "n": "AQAB", "e": "AQAB"});
            jwk.as_object_mut()
                .unwrap()
                .extend(mark.as_object().unwrap().clone());
            tee_key(&json!({"x-ms-runtime": {"keys": [jwk]}}))
        };
        // Azure's grammar documents key_use "enc" (as Microsoft's SKR tooling writes it).
        assert!(with(json!({"key_use": "enc"})).is_some());
        assert!(with(json!({"key_ops": ["encrypt"]})).is_some());
        assert!(with(json!({"use": "enc"})).is_some());
        assert!(with(json!({"key_use": "sig"})).is_none());
        assert!(with(json!({"key_ops": ["verify"]})).is_none());
        // Marks that disagree (RFC 7517 §4.3) are refused.
        assert!(with(json!({"key_use": "enc", "key_ops": ["verify"]})).is_none());
        assert!(with(json!({"use": "sig", "key_ops": ["encrypt"]})).is_none());
        assert!(with(json!({})).is_none());
    }
}
