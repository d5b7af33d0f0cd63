//! Secure key release from the workload's side: present the attestation token to a dataset's
//! vault, open the wrapped key with the TEE's private key, and keep it in memory only. A
//! refusal is kept with the vault's own reason, so the UI can show it as it is.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use conclave_data::dataset::{KeyUnwrapper, PrivateKeyUnwrapper};
use conclave_protocol::vault::ReleaseRequest;
use conclave_protocol::vault_client::{ClientError, VaultClient, open_release};

use crate::config::{DatasetConfig, KeyRef, PartyConfig};
use crate::identity::{TeeIdentity, now};

/// What happened the last time this workload asked for a dataset's key.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ReleaseState {
    NotRequested,
    Released {
        kid: String,
        at: u64,
    },
    Denied {
        /// Who refused: `vault` (with its reason), or `workload` (nothing was sent).
        by: String,
        /// The vault's HTTP status, when it answered.
        status: Option<u16>,
        reason: String,
        at: u64,
    },
}

/// Released keys (in memory only) and the outcome of each request.
pub struct Keyring {
    config: Arc<PartyConfig>,
    identity: Arc<TeeIdentity>,
    http: reqwest::Client,
    vault_ca: conclave_pki::Cert,
    states: Mutex<BTreeMap<String, ReleaseState>>,
    keys: Mutex<HashMap<String, Arc<dyn KeyUnwrapper>>>,
}

impl Keyring {
    pub fn new(
        config: Arc<PartyConfig>,
        identity: Arc<TeeIdentity>,
        http: reqwest::Client,
        vault_ca: conclave_pki::Cert,
    ) -> Self {
        let states = config
            .datasets
            .iter()
            .map(|d| (d.company.clone(), ReleaseState::NotRequested))
            .collect();
        Keyring {
            config,
            identity,
            http,
            vault_ca,
            states: Mutex::new(states),
            keys: Mutex::default(),
        }
    }

    pub fn state(&self, company: &str) -> ReleaseState {
        self.states
            .lock()
            .expect("release state lock")
            .get(company)
            .cloned()
            .unwrap_or(ReleaseState::NotRequested)
    }

    /// The released key of `company`'s dataset, if this workload holds it.
    pub fn key(&self, company: &str) -> Option<Arc<dyn KeyUnwrapper>> {
        self.keys
            .lock()
            .expect("released keys lock")
            .get(company)
            .cloned()
    }

    /// Asks the dataset's vault for its key; records and returns the outcome.
    pub async fn release(&self, dataset: &DatasetConfig) -> ReleaseState {
        let outcome = self.try_release(dataset).await;
        let state = match outcome {
            Ok((kid, key)) => {
                self.keys
                    .lock()
                    .expect("released keys lock")
                    .insert(dataset.company.clone(), key);
                tracing::info!(company = %dataset.company, %kid, "key released to this workload");
                ReleaseState::Released { kid, at: now() }
            }
            Err(denied) => {
                // A refusal also forgets an earlier release: a revoked grant takes effect here.
                self.keys
                    .lock()
                    .expect("released keys lock")
                    .remove(&dataset.company);
                if let ReleaseState::Denied { reason, .. } = &denied {
                    tracing::warn!(company = %dataset.company, "release denied: {reason}");
                }
                denied
            }
        };
        self.states
            .lock()
            .expect("release state lock")
            .insert(dataset.company.clone(), state.clone());
        state
    }

    /// Asks for `dataset`'s key with a token made for one purpose (a contract run's, whose
    /// runtime data names the contract). The key is returned, not kept: it serves that run
    /// only.
    ///
    /// # Errors
    /// The refusal, as [`ReleaseState::Denied`] (by the vault with its reason, or by the
    /// workload when nothing could be asked).
    pub async fn release_with(
        &self,
        dataset: &DatasetConfig,
        token: String,
    ) -> Result<(String, Arc<dyn KeyUnwrapper>), ReleaseState> {
        self.try_release_key(dataset, Some(token)).await
    }

    async fn try_release(
        &self,
        dataset: &DatasetConfig,
    ) -> Result<(String, Arc<dyn KeyUnwrapper>), ReleaseState> {
        self.try_release_key(dataset, None).await
    }

    async fn try_release_key(
        &self,
        dataset: &DatasetConfig,
        token: Option<String>,
    ) -> Result<(String, Arc<dyn KeyUnwrapper>), ReleaseState> {
        let local = |reason: String| ReleaseState::Denied {
            by: "workload".into(),
            status: None,
            reason,
            at: now(),
        };
        let key = KeyRef::parse(&dataset.key).map_err(local)?;
        let token = match (
            token.or_else(|| self.identity.token()),
            self.identity.platform(),
        ) {
            (Some(t), _) => t,
            // Without a TEE there is no token; present what such a workload can make itself,
            // and let the vault say why that is not enough.
            (None, None) => self
                .identity
                .self_issued_token(&self.config.attestation_url),
            (None, Some(_)) => {
                return Err(local(format!(
                    "not requested: {}",
                    self.identity.not_attested_reason()
                )));
            }
        };
        let bearer = std::fs::read_to_string(&dataset.token_file).map_err(|e| {
            local(format!(
                "cannot read the vault token file {}: {e}",
                dataset.token_file.display()
            ))
        })?;
        let vault = VaultClient::new(self.http.clone(), &key.vault, &bearer);
        let request = ReleaseRequest {
            target: token,
            nonce: None,
            enc: None,
        };
        let version = dataset_key_version(dataset, &key).await;
        let jws = vault
            .release_version(&key.name, version.as_deref(), &request)
            .await
            .map_err(|e| ReleaseState::Denied {
                by: "vault".into(),
                status: match &e {
                    ClientError::Refused { status, .. } => Some(*status),
                    _ => None,
                },
                reason: e.reason(),
                at: now(),
            })?;
        let released = open_release(&jws, &self.vault_ca, self.identity.encryption_key())
            .map_err(|e| local(format!("the vault's answer does not open: {e}")))?;
        let kid = released.kid.clone();
        let unwrapper = PrivateKeyUnwrapper::new(&kid, released.key)
            .map_err(|e| local(format!("the released key is unusable: {e}")))?;
        Ok((kid, Arc::new(unwrapper)))
    }
}

/// The version of `key` the dataset's footer key material names (`masterKeyID`
/// `<vault>/keys/<name>/<version>`), so a dataset not yet moved to a rotated key's new version
/// (`conclave data rewrap`) still opens: old versions stay releasable. `None` (the latest) when
/// the dataset cannot be read yet or names the key without a version. The name comes from
/// untrusted storage, but only picks among the versions of the configured key, each released
/// under its own policy and only to this attested workload.
async fn dataset_key_version(dataset: &DatasetConfig, key: &KeyRef) -> Option<String> {
    let loc = conclave_data::store::locate(&dataset.url).ok()?;
    let material = conclave_data::dataset::inspect(&loc)
        .await
        .ok()?
        .key_material?;
    let version = material
        .master_key_id
        .strip_prefix(&format!("{}/keys/{}/", key.vault, key.name))?;
    (!version.is_empty()
        && version.len() <= 64
        && version.bytes().all(|b| b.is_ascii_alphanumeric()))
    .then(|| version.to_string())
}
