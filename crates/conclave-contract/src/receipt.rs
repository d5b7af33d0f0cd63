//! What the signed receipt of a contract run says (the `result` of a
//! [`conclave_protocol::receipt`] receipt whose `typ` is
//! [`conclave_protocol::receipt::CONTRACT_RECEIPT_TYPE`]), and how a receiver checks it against
//! the contract it approved and the result it opened.
//!
//! The receipt's own fields name every input (dataset URL, vault key id with its version, SHA-256
//! of the ciphertext read); its `result` is a [`ContractOutcome`]: the contract's digest, the
//! privacy parameters it ran with, what was withheld or noised, who the result was sealed to
//! ([`crate::sealing`]) and the SHA-256 of the plaintext result, which a receiver compares with
//! what its envelope opened to.

use serde::{Deserialize, Serialize};

use crate::Contract;
use conclave_protocol::receipt::InputDescriptor;

/// The privacy parameters a run was held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyParameters {
    /// Smallest released group (records).
    pub k: u64,
    /// ε and δ of the run, with differential privacy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
}

/// What one query released, in counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySummary {
    pub name: String,
    /// Rows released.
    pub rows: u64,
    /// Groups withheld for having fewer than `k` records.
    pub suppressed_groups: u64,
    /// Noise added: `none`, or the mechanism.
    pub noise: String,
}

/// A contract run's outcome, as its receipt carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractOutcome {
    /// The contract's name and digest ([`Contract::digest`]).
    pub contract: String,
    pub digest: String,
    pub privacy: PrivacyParameters,
    pub queries: Vec<QuerySummary>,
    /// The parties the result was sealed to, in the contract's order.
    pub receivers: Vec<String>,
    /// SHA-256 (hex) of the plaintext result: its RFC 8785 canonical JSON, as sealed.
    pub output_sha256: String,
}

/// SHA-256 (hex) of a plaintext result.
pub fn output_digest(plaintext: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, plaintext).as_ref())
}

/// The parties of `contract` that receive its results, in its order.
pub fn receivers(contract: &Contract) -> Vec<&crate::Party> {
    contract
        .parties
        .iter()
        .filter(|p| p.roles.contains(&crate::Role::ResultReceiver))
        .collect()
}

impl ContractOutcome {
    /// Checks that this outcome is of `contract` (as the checker holds it), over `inputs` (the
    /// receipt's): the same digest and privacy parameters, the contract's receivers, and each
    /// input read from the contract's dataset with a version of the contract's key. Returns
    /// every discrepancy, each said in full; empty when it matches.
    pub fn discrepancies(&self, contract: &Contract, inputs: &[InputDescriptor]) -> Vec<String> {
        let mut problems = Vec::new();
        if self.digest != contract.digest() {
            problems.push(format!(
                "the receipt is of contract digest {}, the contract given has digest {}",
                self.digest,
                contract.digest()
            ));
        }
        let claims = contract.claims();
        let expected = PrivacyParameters {
            k: claims.k,
            epsilon: claims.epsilon,
            delta: claims.delta,
        };
        if self.privacy != expected {
            problems.push(format!(
                "the run's privacy parameters {:?} are not the contract's {:?}",
                self.privacy, expected
            ));
        }
        let named: Vec<String> = receivers(contract).iter().map(|p| p.id.clone()).collect();
        if self.receivers != named {
            problems.push(format!(
                "the result was sealed to {:?}, the contract names {:?}",
                self.receivers, named
            ));
        }
        if inputs.len() != contract.inputs.len() {
            problems.push(format!(
                "the receipt names {} inputs, the contract {}",
                inputs.len(),
                contract.inputs.len()
            ));
        }
        for (i, input) in contract.inputs.iter().enumerate() {
            let Some(read) = inputs.get(i) else { continue };
            if read.dataset != input.url {
                problems.push(format!(
                    "input {}: read from {}, the contract names {}",
                    input.table, read.dataset, input.url
                ));
            }
            let versioned = read
                .key
                .strip_prefix(input.key.trim_end_matches('/'))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if !versioned {
                problems.push(format!(
                    "input {}: opened with key {}, the contract names {}",
                    input.table, read.key, input.key
                ));
            }
        }
        problems
    }
}

/// What a workload hands out after a run: the signed receipt (compact JWS) and one sealed
/// result per receiver. Anyone may hold it; only a receiver opens its envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractReceiptBundle {
    pub receipt: String,
    pub sealed: Vec<crate::sealing::SealedResult>,
}

impl ContractOutcome {
    /// Checks that the attestation token embedded in the receipt (its verified claims) attests
    /// this very contract: its `x-ms-runtime.contract` claim ([`crate::policy::ContractClaims`])
    /// names the same digest and privacy parameters. `None` when it does; else what differs.
    pub fn attestation_discrepancy(&self, token_claims: &serde_json::Value) -> Option<String> {
        let attested = token_claims
            .get("x-ms-runtime")
            .and_then(|r| r.get(crate::policy::RUNTIME_MEMBER))
            .cloned()
            .and_then(|c| serde_json::from_value::<crate::policy::ContractClaims>(c).ok());
        let Some(attested) = attested else {
            return Some(
                "the embedded attestation token attests no contract (x-ms-runtime.contract)".into(),
            );
        };
        let privacy = PrivacyParameters {
            k: attested.k,
            epsilon: attested.epsilon,
            delta: attested.delta,
        };
        if attested.digest != self.digest || privacy != self.privacy {
            return Some(format!(
                "the attested workload declared contract {} with {:?}, the receipt says {} with {:?}",
                attested.digest, privacy, self.digest, self.privacy
            ));
        }
        None
    }
}
