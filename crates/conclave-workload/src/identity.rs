//! The workload's TEE identity: three keys that exist only in this process's memory (RSA for keys
//! the vaults release to it, ECDSA P-256 for signing result receipts, ECDSA P-256 for its TLS
//! server), the runtime data that publishes their public parts (the TLS key as its RFC 7469
//! pin), and the attestation token that binds that runtime data to the platform's evidence.
//! Re-attests before the token expires.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use conclave_protocol::attestation::{AttestSevSnpVmRequest, attest, b64url, report_data_for};
use conclave_protocol::jwk::Jwk;
use conclave_protocol::runtime::RuntimeClaims;
use conclave_tee::ephemeral::EphemeralKey;
use conclave_tee::{EvidenceSource, Platform};
use serde_json::{Value, json};

/// Key id of the receipt-signing key in `x-ms-runtime.keys`.
pub use conclave_protocol::receipt::SIGNING_KEY_ID;

/// Name of the TLS key's RFC 7469 pin in the runtime data: `x-ms-runtime.tls.pin-sha256` in
/// the attestation token.
pub const RUNTIME_TLS_PIN: &str = conclave_protocol::runtime::TLS_PIN;

/// Where the workload stands with the attestation service.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum AttestationState {
    /// Asking for evidence and a token.
    Pending,
    Attested {
        #[serde(skip)]
        token: String,
        claims: Value,
        attested_at: u64,
        expires_at: u64,
    },
    Failed {
        reason: String,
        at: u64,
    },
    /// Started with `--tee none`: there is no platform to ask.
    NoTee {
        reason: String,
    },
}

/// The workload's keys and its current attestation.
pub struct TeeIdentity {
    platform: Option<Platform>,
    encryption: EphemeralKey,
    signing: EcdsaKeyPair,
    tls: conclave_net::attested_tls::TeeTlsIdentity,
    runtime_json: Vec<u8>,
    state: Mutex<AttestationState>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub use conclave_protocol::jws::unverified_claims;

impl TeeIdentity {
    /// New keys; `platform` is `None` for a workload started without a TEE. `tls_names` are the
    /// DNS names and IP addresses the TLS certificate names.
    pub fn generate(
        platform: Option<Platform>,
        tls_names: &[String],
    ) -> Result<Arc<Self>, conclave_tee::TeeError> {
        let encryption = EphemeralKey::generate()?;
        let signing = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| {
            conclave_tee::TeeError::Refused("could not generate the signing key".into())
        })?;
        let point = signing.public_key().as_ref();
        let signing_jwk = Jwk {
            kid: Some(SIGNING_KEY_ID.into()),
            kty: "EC".into(),
            crv: Some("P-256".into()),
            key_ops: Some(vec!["verify".into()]),
            x: Some(b64url(&point[1..33])),
            y: Some(b64url(&point[33..65])),
            ..Default::default()
        };
        let tls = conclave_net::attested_tls::TeeTlsIdentity::generate(tls_names)
            .map_err(|e| conclave_tee::TeeError::Refused(format!("the TLS key: {e}")))?;
        let runtime_json = RuntimeClaims {
            keys: vec![encryption.public_jwk(), signing_jwk],
            tls: [(RUNTIME_TLS_PIN.to_string(), tls.pin_sha256().to_string())].into(),
        }
        .to_json();
        let state = match platform {
            Some(_) => AttestationState::Pending,
            None => AttestationState::NoTee {
                reason: "started with --tee none: no platform can vouch for this workload".into(),
            },
        };
        Ok(Arc::new(TeeIdentity {
            platform,
            encryption,
            signing,
            tls,
            runtime_json,
            state: Mutex::new(state),
        }))
    }

    pub fn platform(&self) -> Option<Platform> {
        self.platform
    }

    /// The TLS identity whose pin the runtime data carries.
    pub fn tls(&self) -> &conclave_net::attested_tls::TeeTlsIdentity {
        &self.tls
    }

    pub fn runtime_json(&self) -> &[u8] {
        &self.runtime_json
    }

    pub fn encryption_key(&self) -> &aws_lc_rs::rsa::PrivateDecryptingKey {
        self.encryption.private_key()
    }

    pub fn state(&self) -> AttestationState {
        self.state.lock().expect("attestation lock").clone()
    }

    /// The current token, if attested and not expired.
    pub fn token(&self) -> Option<String> {
        match &*self.state.lock().expect("attestation lock") {
            AttestationState::Attested {
                token, expires_at, ..
            } if *expires_at > now() => Some(token.clone()),
            _ => None,
        }
    }

    /// Why there is no token, for messages.
    pub fn not_attested_reason(&self) -> String {
        match self.state() {
            AttestationState::Pending => "the workload is still attesting".into(),
            AttestationState::Attested { .. } => "the attestation token has expired".into(),
            AttestationState::Failed { reason, .. } => format!("attestation failed: {reason}"),
            AttestationState::NoTee { reason } => reason,
        }
    }

    /// An ES256 JWS over `payload` with the TEE's signing key.
    pub fn sign_jws(&self, header: &Value, payload: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64url(&serde_json::to_vec(header).expect("JSON")),
            b64url(&serde_json::to_vec(payload).expect("JSON"))
        );
        let sig = self
            .signing
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("ECDSA signing works");
        format!("{input}.{}", b64url(sig.as_ref()))
    }

    /// What a workload without a TEE can present instead of an attestation token: the claims a
    /// genuine workload's token would carry, signed with its own key. Vaults must refuse it.
    pub fn self_issued_token(&self, issuer: &str) -> String {
        let runtime: Value = serde_json::from_slice(&self.runtime_json).expect("own JSON");
        let t = now();
        self.sign_jws(
            &json!({"alg": "ES256", "typ": "JWT", "kid": "self-issued"}),
            &json!({
                "iss": issuer, "iat": t, "nbf": t, "exp": t + 600,
                "x-ms-attestation-type": "sevsnpvm",
                "x-ms-compliance-status": "azure-compliant-cvm",
                "x-ms-sevsnpvm-is-debuggable": false,
                "x-ms-runtime": runtime,
            }),
        )
    }

    /// The runtime data this workload attests when it is about to run a contract: its own
    /// (keys, TLS pin) plus `contract` = the contract's claims
    /// ([`conclave_contract::policy::ContractClaims`]), which owners' release policies pin as
    /// `x-ms-runtime.contract.*`.
    pub fn contract_runtime_json(
        &self,
        claims: &conclave_contract::policy::ContractClaims,
    ) -> Vec<u8> {
        let mut runtime: Value = serde_json::from_slice(&self.runtime_json).expect("own JSON");
        runtime[conclave_contract::policy::RUNTIME_MEMBER] =
            serde_json::to_value(claims).expect("contract claims serialise");
        serde_json::to_vec(&runtime).expect("runtime data serialises")
    }

    /// A token for [`Self::contract_runtime_json`]: fresh evidence binding that runtime data,
    /// appraised by the attestation service. Used for the releases of one contract run only;
    /// the workload's own token (without a contract) is unchanged.
    ///
    /// # Errors
    /// Why no evidence or no token could be had, as text for the run's status.
    pub async fn contract_token(
        &self,
        source: &dyn EvidenceSource,
        http: &reqwest::Client,
        attestation_url: &str,
        claims: &conclave_contract::policy::ContractClaims,
    ) -> Result<String, String> {
        let runtime = self.contract_runtime_json(claims);
        let evidence = source
            .evidence(report_data_for(&runtime))
            .await
            .map_err(|e| format!("no evidence from the platform: {e}"))?;
        let request = AttestSevSnpVmRequest::new(&evidence, &runtime, None);
        attest(http, attestation_url, &request)
            .await
            .map_err(|e| format!("the attestation service refused: {e}"))
    }

    /// Gets evidence and a token once.
    pub async fn attest_once(
        &self,
        source: &dyn EvidenceSource,
        http: &reqwest::Client,
        attestation_url: &str,
    ) -> Result<(), String> {
        let result = async {
            let evidence = source
                .evidence(report_data_for(&self.runtime_json))
                .await
                .map_err(|e| e.to_string())?;
            let request = AttestSevSnpVmRequest::new(&evidence, &self.runtime_json, None);
            let token = attest(http, attestation_url, &request)
                .await
                .map_err(|e| e.to_string())?;
            let claims = unverified_claims(&token).ok_or_else(|| {
                "the attestation service returned an unreadable token".to_string()
            })?;
            let expires_at = claims["exp"].as_u64().unwrap_or(0);
            Ok::<_, String>(AttestationState::Attested {
                token,
                claims,
                attested_at: now(),
                expires_at,
            })
        }
        .await;
        let mut state = self.state.lock().expect("attestation lock");
        match result {
            Ok(s) => {
                *state = s;
                Ok(())
            }
            Err(reason) => {
                // A still-valid token stays usable; the failure shows on the status page.
                if !matches!(&*state, AttestationState::Attested { expires_at, .. } if *expires_at > now())
                {
                    *state = AttestationState::Failed {
                        reason: reason.clone(),
                        at: now(),
                    };
                }
                Err(reason)
            }
        }
    }

    /// Attests now and again before each token expires (at two thirds of its lifetime);
    /// retries failures with back-off. Runs until dropped.
    pub async fn keep_attested(
        self: Arc<Self>,
        source: Arc<dyn EvidenceSource>,
        http: reqwest::Client,
        attestation_url: String,
    ) {
        let mut retry = Duration::from_secs(1);
        loop {
            let wait = match self
                .attest_once(source.as_ref(), &http, &attestation_url)
                .await
            {
                Ok(()) => {
                    retry = Duration::from_secs(1);
                    let (iat, exp) = match self.state() {
                        AttestationState::Attested {
                            attested_at,
                            expires_at,
                            ..
                        } => (attested_at, expires_at),
                        _ => (0, 0),
                    };
                    tracing::info!(expires_at = exp, "attested");
                    Duration::from_secs((exp.saturating_sub(iat) * 2 / 3).max(5))
                }
                Err(reason) => {
                    tracing::warn!("attestation failed: {reason}");
                    let wait = retry;
                    retry = (retry * 2).min(Duration::from_secs(60));
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The claim explanations the UI shows beside the token's claims.
pub fn claim_explanations() -> std::collections::BTreeMap<String, String> {
    [
        ("iss", "Who issued this token: the attestation service that checked the evidence."),
        ("iat", "When the token was issued."),
        ("exp", "When the token stops being accepted; the workload attests again before then."),
        ("nbf", "The token is not accepted before this time."),
        ("x-ms-attestation-type", "The kind of TEE: an AMD SEV-SNP confidential VM."),
        ("x-ms-compliance-status", "Whether the evidence met the attestation service's appraisal policy."),
        ("x-conclave-platform", "Where the evidence came from: 'sim' is Conclave's simulated SEV-SNP platform (no hardware protection); 'snp' and 'azure-vtpm' are real AMD hardware."),
        ("x-ms-sevsnpvm-launchmeasurement", "SHA-384 of exactly what was launched (code, arguments and launch config). Key owners pin this value in their release policies."),
        ("x-ms-sevsnpvm-hostdata", "Data the host fixed at launch: here the SHA-256 of the launch config."),
        ("x-ms-sevsnpvm-is-debuggable", "Whether the host could read the VM's memory. Must be false for any key to be released."),
        ("x-ms-sevsnpvm-reportdata", "The 64 bytes the workload bound into the report: the SHA-256 of its runtime data (its public keys)."),
        ("x-ms-sevsnpvm-guestsvn", "The guest's security version number."),
        ("x-ms-sevsnpvm-vmpl", "The privilege level inside the VM that asked for the report (0 is the highest)."),
        ("x-ms-sevsnpvm-chipid", "The identity of the AMD chip (or simulated chip) that signed the report."),
        ("x-ms-sevsnpvm-idkeydigest", "Digest of the key that signed the launch identity block, if any."),
        ("x-ms-sevsnpvm-authorkeydigest", "Digest of the author key of the launch identity block, if any."),
        ("x-ms-sevsnpvm-familyId", "Family id from the launch identity block."),
        ("x-ms-sevsnpvm-imageId", "Image id from the launch identity block."),
        ("x-ms-sevsnpvm-reportid", "A unique id of this VM's launch."),
        ("x-ms-sevsnpvm-bootloader-svn", "Firmware version (TCB) of the boot loader."),
        ("x-ms-sevsnpvm-tee-svn", "Firmware version (TCB) of the PSP OS."),
        ("x-ms-sevsnpvm-snpfw-svn", "Firmware version (TCB) of the SEV-SNP firmware."),
        ("x-ms-sevsnpvm-microcode-svn", "CPU microcode version (TCB)."),
        ("x-ms-sevsnpvm-migration-allowed", "Whether a migration agent may move the VM (and see its memory)."),
        ("x-ms-sevsnpvm-smt-allowed", "Whether the VM may run with simultaneous multithreading enabled."),
        ("x-ms-sevsnpvm-fmc-svn", "Firmware version (TCB) of the first mutable code (Turin and later)."),
        ("x-ms-sevsnpvm-report-version", "Version of the AMD attestation report format."),
        ("x-ms-sevsnpvm-product", "The AMD processor generation that signed the report (or the simulated one)."),
        ("x-ms-isolation-tee", "Azure confidential VMs: the SEV-SNP facts of the VM's paravisor report, nested as Azure Attestation nests them."),
        ("x-ms-runtime", "The workload's runtime data, bound by the report: its public encryption key (vaults wrap released keys to it), its receipt-signing key, and the pin (SHA-256) of the TLS key this page is served with."),
        ("x-ms-ver", "Version of the token format."),
        ("x-ms-policy-hash", "Hash of the appraisal policy that was applied."),
        ("nonce", "A value chosen by the verifier, echoed to prove the token is fresh."),
        ("jti", "A unique id of this token."),
    ]
    .into_iter()
    .map(|(claim, meaning)| (claim.to_string(), meaning.to_string()))
    .collect()
}
