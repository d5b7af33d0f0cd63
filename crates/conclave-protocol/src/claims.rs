//! Claim names of attestation tokens that are Conclave's own (the others are Microsoft Azure
//! Attestation's, `x-ms-*`, and appear as MAA names them).

/// Claim that says which kind of platform produced the evidence: `sim`, `snp` or `azure-vtpm`.
pub const PLATFORM_CLAIM: &str = "x-conclave-platform";

/// Claim with the PCRs of a verified vTPM quote (Azure confidential VMs).
pub const TPM_CLAIM: &str = "x-conclave-tpm";

/// Compliance status for evidence this service appraised itself (not Azure's).
pub const COMPLIANT: &str = "conclave-compliant";

/// The differential-privacy loss ε of the run a workload attests (its runtime data's
/// `contract.epsilon`, as conclave-contract's `policy` module writes it): what a key release
/// debits from the key's privacy budget.
pub const CONTRACT_EPSILON_CLAIM: &str = "x-ms-runtime.contract.epsilon";
