//! Claim names of attestation tokens that are Conclave's own (the others are Microsoft Azure
//! Attestation's, `x-ms-*`, and appear as MAA names them).

/// Claim that says which kind of platform produced the evidence: `sim`, `snp` or `azure-vtpm`.
pub const PLATFORM_CLAIM: &str = "x-conclave-platform";

/// Claim with the PCRs of a verified vTPM quote (Azure confidential VMs).
pub const TPM_CLAIM: &str = "x-conclave-tpm";

/// Compliance status for evidence this service appraised itself (not Azure's).
pub const COMPLIANT: &str = "conclave-compliant";
