//! Binding key release to an approved contract.
//!
//! A workload that runs a contract attests it: its runtime data (MAA's `runtimeData`, returned
//! as the token's `x-ms-runtime` claim) carries `contract` = [`ContractClaims`]. Its code and
//! launch config are measured, so the claim says what the workload will run. A data owner's
//! release policy pins it with Azure's grammar, beside the conditions on the platform and the
//! workload's measurement:
//!
//! ```text
//! {"claim": "x-ms-runtime.contract.digest", "equals": "<digest>"}
//! {"claim": "x-ms-runtime.contract.k", "greaterOrEquals": <owner's floor>}
//! {"claim": "x-ms-runtime.contract.epsilon", "lessOrEquals": <owner's ceiling>}   (with DP)
//! ```

use conclave_protocol::release_policy::{Condition, Operator, ReleasePolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The member of the runtime data (and of the `x-ms-runtime` claim) that holds
/// [`ContractClaims`].
pub const RUNTIME_MEMBER: &str = "contract";

/// What a workload attests about the contract it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractClaims {
    /// The contract's name.
    pub name: String,
    /// [`crate::Contract::digest`].
    pub digest: String,
    /// The smallest group the workload releases.
    pub k: u64,
    /// ε of one run, with differential privacy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// δ of one run, with differential privacy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
}

/// An owner's conditions on the contract a workload runs.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerTerms {
    /// The approved contract's digest.
    pub digest: String,
    /// The owner's floor for `k` (at least the contract's; an owner may demand more of a
    /// contract it approves only if the contract meets it).
    pub min_k: u64,
    /// The owner's ceiling for ε per run, if it requires differential privacy.
    pub max_epsilon: Option<f64>,
}

impl OwnerTerms {
    /// The release-policy conditions (claim paths under `x-ms-runtime.contract`).
    pub fn conditions(&self) -> Vec<Condition> {
        let claim = |member: &str| format!("x-ms-runtime.{RUNTIME_MEMBER}.{member}");
        let mut conditions = vec![
            Condition::equals(&claim("digest"), self.digest.as_str()),
            Condition::Claim {
                claim: claim("k"),
                op: Operator::GreaterOrEquals,
                value: Value::from(self.min_k),
            },
        ];
        if let Some(max) = self.max_epsilon {
            conditions.push(Condition::Claim {
                claim: claim("epsilon"),
                op: Operator::LessOrEquals,
                value: Value::from(max),
            });
        }
        conditions
    }

    /// `base` (the policy that pins the workload, e.g. from `conclave measure`) with these
    /// conditions added to every authority's block: a token must meet both.
    pub fn add_to(&self, base: &ReleasePolicy) -> ReleasePolicy {
        let mut policy = base.clone();
        for block in &mut policy.authorities {
            let mut all = match std::mem::replace(&mut block.condition, Condition::AllOf(vec![])) {
                Condition::AllOf(cs) => cs,
                other => vec![other],
            };
            all.extend(self.conditions());
            block.condition = Condition::AllOf(all);
        }
        policy
    }
}
