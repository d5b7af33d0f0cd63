//! Analysis contracts this workload can run, and one run at a time.
//!
//! The contracts are the `*.toml` files of the config's `contracts_dir`; the approvals of
//! `<stem>.toml` are the files `<stem>.*.jws` beside it (what `conclave contract approve`
//! writes), verified offline against the keys the contract lists. Neither is trusted: a
//! contract's digest is computed here, and only the data owners' vaults decide.
//!
//! A run: (1) attest the contract — fresh evidence whose runtime data carries the contract's
//! claims (digest, k, ε), which owners' release policies pin; (2) ask each input's vault for its
//! key with that token, recording each answer (a vault's refusal comes with its reason);
//! (3) hash each input's ciphertext and run the contract's queries with [`crate::engine`];
//! (4) seal the result to each result receiver the contract names (HPKE,
//! [`conclave_contract::sealing`]) and sign a receipt binding the contract's digest, the inputs
//! (ciphertext SHA-256, key versions), the privacy parameters, what was withheld and the
//! result's SHA-256 ([`conclave_contract::receipt`]), embedding the token that attested the
//! contract. Nothing is released unless every step succeeds; the plaintext result is shown on
//! this workload's page only when its own party is one of the receivers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use conclave_contract::Contract;
use conclave_contract::approval::ApprovalStatus;
use conclave_contract::receipt::{ContractOutcome, PrivacyParameters, QuerySummary};
use conclave_contract::sealing::SealedResult;
use conclave_data::store::locate;
use conclave_protocol::receipt::{CONTRACT_RECEIPT_TYPE, InputDescriptor};

use crate::config::{DatasetConfig, KeyRef};
use crate::engine::{self, ContractInput, ContractProgress, ContractResult, ContractRunError};
use crate::identity::now;
use crate::release::ReleaseState;
use crate::service::{AnalysisState, Workload};

/// A data provider's approval of a contract, as the page shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProviderApproval {
    pub party: String,
    pub display_name: String,
    /// `approved`, `not-approved`.
    pub status: String,
    /// When approved: the approval's time (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<u64>,
}

/// A contract this workload can run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContractSummary {
    /// The file's stem: how the API names it.
    pub id: String,
    pub name: String,
    pub description: String,
    /// Hex SHA-256 of the canonical JSON (what owners approve and vaults pin).
    pub digest: String,
    pub k: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    pub queries: Vec<String>,
    pub tables: Vec<String>,
    pub approvals: Vec<ProviderApproval>,
    /// Approval files that did not verify, with why.
    pub invalid_approvals: Vec<String>,
    /// Every provider approved (the vaults still decide).
    pub approved: bool,
}

/// A contract file that could not be read, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BrokenContract {
    pub id: String,
    pub error: String,
}

/// What `GET /api/contracts` answers.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ContractList {
    pub contracts: Vec<ContractSummary>,
    pub broken: Vec<BrokenContract>,
}

/// One input's key release in a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InputRelease {
    pub table: String,
    pub provider: String,
    pub display_name: String,
    pub release: ReleaseState,
}

/// The contract run as the page sees it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ContractRunView {
    pub state: AnalysisState,
    pub contract: Option<String>,
    pub digest: Option<String>,
    pub started_at: Option<u64>,
    pub started_by: Option<String>,
    pub finished_at: Option<u64>,
    pub releases: Vec<InputRelease>,
    pub progress: Option<ContractProgress>,
    pub error: Option<String>,
    /// The inputs as the receipt names them (ciphertext SHA-256, key versions), once hashed.
    pub inputs: Vec<InputDescriptor>,
    /// The plaintext result, when this workload's party is one of its receivers.
    pub result: Option<ContractResult>,
    /// Who the result was sealed to (the contract's result receivers).
    pub sealed_to: Vec<String>,
    /// Why the plaintext result is not shown here, when it is not.
    pub result_withheld: Option<String>,
    /// A receipt and sealed results can be downloaded (`/api/contracts/run/receipt`).
    pub receipt_available: bool,
}

/// What a successful run releases.
#[derive(Debug, Clone)]
pub struct ContractRelease {
    pub result: ContractResult,
    pub inputs: Vec<InputDescriptor>,
    /// The receipt and one sealed result per receiver.
    pub bundle: conclave_contract::receipt::ContractReceiptBundle,
}

fn stem(path: &Path) -> Option<String> {
    Some(path.file_stem()?.to_str()?.to_string())
}

/// The contracts in `dir`, each with its approvals checked.
pub fn list(dir: &Path) -> ContractList {
    let mut list = ContractList::default();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            list.broken.push(BrokenContract {
                id: dir.display().to_string(),
                error: format!("cannot read the contracts directory: {e}"),
            });
            return list;
        }
    };
    files.sort();
    for path in files {
        let Some(id) = stem(&path) else { continue };
        match load(dir, &id) {
            Ok((contract, approvals)) => list.contracts.push(summary(&id, &contract, &approvals)),
            Err(error) => list.broken.push(BrokenContract { id, error }),
        }
    }
    list
}

/// The contract `<id>.toml` in `dir` and the approvals beside it.
pub fn load(dir: &Path, id: &str) -> Result<(Contract, Vec<String>), String> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("no contract {id:?}"));
    }
    let path = dir.join(format!("{id}.toml"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let contract = Contract::parse(&text).map_err(|e| e.to_string())?;
    let mut approvals = Vec::new();
    let prefix = format!("{id}.");
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "jws")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix))
            })
            .collect();
        files.sort();
        for f in files {
            if let Ok(text) = std::fs::read_to_string(&f) {
                approvals.push(text.trim().to_string());
            }
        }
    }
    Ok((contract, approvals))
}

fn summary(id: &str, contract: &Contract, approvals: &[String]) -> ContractSummary {
    let status = ApprovalStatus::of(contract, approvals);
    ContractSummary {
        id: id.to_string(),
        name: contract.name.clone(),
        description: contract.description.clone(),
        digest: contract.digest(),
        k: contract.output.k,
        epsilon: contract
            .output
            .differential_privacy
            .as_ref()
            .map(|d| d.epsilon),
        queries: contract.queries.iter().map(|q| q.name.clone()).collect(),
        tables: contract.inputs.iter().map(|i| i.table.clone()).collect(),
        approvals: contract
            .providers()
            .map(|p| {
                let approval = status.approved.iter().find(|a| a.party == p.id);
                ProviderApproval {
                    party: p.id.clone(),
                    display_name: p.display_name.clone(),
                    status: if approval.is_some() {
                        "approved"
                    } else {
                        "not-approved"
                    }
                    .into(),
                    approved_at: approval.map(|a| a.iat),
                }
            })
            .collect(),
        invalid_approvals: status.invalid.iter().map(|(_, e)| e.to_string()).collect(),
        approved: status.complete(),
    }
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunStop {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Engine(#[from] ContractRunError),
}

impl Workload {
    /// Runs `contract` end to end (see the module's documentation), updating the run's view as
    /// it goes.
    pub(crate) async fn run_contract(
        self: Arc<Self>,
        contract: Contract,
        cancel: tokio::sync::watch::Receiver<bool>,
    ) -> Result<ContractRelease, RunStop> {
        // 1. Attest the contract (one this workload honours in full: it attests nothing else).
        engine::check(&contract).await?;
        let source = self.evidence().ok_or_else(|| {
            RunStop::Refused(format!(
                "this workload cannot attest a contract: {}",
                self.identity.not_attested_reason()
            ))
        })?;
        let claims = contract.claims();
        let token = self
            .identity
            .contract_token(
                source.as_ref(),
                self.http(),
                &self.config.attestation_url,
                &claims,
            )
            .await
            .map_err(RunStop::Refused)?;

        // 2. Every input's key, asked for with that token. All vaults are asked, so that the
        // page shows every owner's answer, not only the first refusal.
        let mut inputs = Vec::new();
        let mut descriptors = Vec::new();
        let mut refusals = Vec::new();
        for (i, input) in contract.inputs.iter().enumerate() {
            let dataset = self.contract_dataset(input);
            let state = match dataset {
                Err(reason) => ReleaseState::Denied {
                    by: "workload".into(),
                    status: None,
                    reason,
                    at: now(),
                },
                Ok(dataset) => match self.keyring.release_with(&dataset, token.clone()).await {
                    Ok((kid, key)) => {
                        descriptors.push(InputDescriptor {
                            company: input.provider.clone(),
                            dataset: input.url.clone(),
                            key: kid.clone(),
                            sha256: String::new(),
                            bytes: 0,
                            records: 0,
                        });
                        inputs.push(ContractInput {
                            table: input.table.clone(),
                            location: locate(&input.url)
                                .map_err(|e| RunStop::Refused(format!("{}: {e}", input.table)))?,
                            unwrapper: Some(key),
                        });
                        ReleaseState::Released { kid, at: now() }
                    }
                    Err(denied) => denied,
                },
            };
            if let ReleaseState::Denied { by, reason, .. } = &state {
                let who = contract
                    .party(&input.provider)
                    .map(|p| p.display_name.clone())
                    .unwrap_or_else(|| input.provider.clone());
                refusals.push(if by == "vault" {
                    format!("{who}'s vault refused the key of {}: {reason}", input.table)
                } else {
                    format!("the key of {} was not asked for: {reason}", input.table)
                });
            }
            self.update_contract_run(|v| v.releases[i].release = state);
        }
        if !refusals.is_empty() {
            return Err(RunStop::Refused(refusals.join("; ")));
        }
        if *cancel.borrow() {
            return Err(RunStop::Engine(ContractRunError::Cancelled));
        }

        // 3. Hash each input's ciphertext (the receipt names what was read), then run.
        self.update_contract_run(|v| v.state = AnalysisState::Hashing);
        for (d, input) in descriptors.iter_mut().zip(&inputs) {
            let fail = |e: conclave_data::dataset::DataError| {
                RunStop::Engine(ContractRunError::Input {
                    table: input.table.clone(),
                    detail: e.to_string(),
                })
            };
            (d.sha256, d.bytes) = conclave_data::dataset::digest(&input.location)
                .await
                .map_err(fail)?;
            // With differential privacy an input's exact size is what the noise protects: the
            // receipt does not name it.
            if contract.output.differential_privacy.is_none() {
                d.records =
                    conclave_data::dataset::row_count(&input.location, input.unwrapper.clone())
                        .await
                        .map_err(fail)?;
            }
        }
        self.update_contract_run(|v| {
            v.state = AnalysisState::Running;
            v.inputs = descriptors.clone();
        });
        let me = self.clone();
        let report = Arc::new(move |p: ContractProgress| {
            me.update_contract_run(|v| v.progress = Some(p));
        });
        let result = engine::run(&contract, inputs, report, cancel).await?;

        // 4. Sealed to each receiver; the receipt binds it all.
        let plaintext = serde_jcs::to_vec(&result)
            .map_err(|e| RunStop::Refused(format!("the result does not serialise: {e}")))?;
        let receivers = conclave_contract::receipt::receivers(&contract);
        let digest = contract.digest();
        let sealed: Vec<SealedResult> = receivers
            .iter()
            .map(|p| {
                conclave_contract::sealing::seal(
                    &plaintext,
                    &p.id,
                    p.receiver_key.as_deref().unwrap_or_default(),
                    &digest,
                )
            })
            .collect::<Result<_, _>>()
            .map_err(|e| RunStop::Refused(e.to_string()))?;
        let outcome = ContractOutcome {
            contract: contract.name.clone(),
            digest: digest.clone(),
            privacy: PrivacyParameters {
                k: claims.k,
                epsilon: claims.epsilon,
                delta: claims.delta,
            },
            queries: result
                .queries
                .iter()
                .map(|q| QuerySummary {
                    name: q.name.clone(),
                    rows: q.rows.len() as u64,
                    suppressed_groups: q.suppressed_groups,
                    noise: q.noise.clone(),
                })
                .collect(),
            receivers: receivers.iter().map(|p| p.id.clone()).collect(),
            output_sha256: conclave_contract::receipt::output_digest(&plaintext),
        };
        let receipt = crate::receipt::issue_as(
            &self.identity,
            &token,
            CONTRACT_RECEIPT_TYPE,
            &self.config.party,
            &descriptors,
            &outcome,
        );
        Ok(ContractRelease {
            result,
            inputs: descriptors,
            bundle: conclave_contract::receipt::ContractReceiptBundle { receipt, sealed },
        })
    }

    /// The dataset config a contract's input is released through: the provider's dataset in
    /// this workload's config (which holds the bearer token for that provider's vault), at the
    /// contract's URL and key, which must be in that same vault.
    fn contract_dataset(&self, input: &conclave_contract::Input) -> Result<DatasetConfig, String> {
        let configured = self
            .config
            .datasets
            .iter()
            .find(|d| d.company == input.provider)
            .ok_or_else(|| {
                format!(
                    "this workload has no vault access for {} (no dataset of that company in its config)",
                    input.provider
                )
            })?;
        let (theirs, ours) = (KeyRef::parse(&input.key)?, KeyRef::parse(&configured.key)?);
        if theirs.vault != ours.vault {
            return Err(format!(
                "the contract names vault {} for {}, but this workload's config trusts {}",
                theirs.vault, input.provider, ours.vault
            ));
        }
        Ok(DatasetConfig {
            url: input.url.clone(),
            key: input.key.clone(),
            ..configured.clone()
        })
    }
}
