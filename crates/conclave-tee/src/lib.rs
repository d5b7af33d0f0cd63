//! Evidence from inside a TEE: the guest asks its platform for an SEV-SNP attestation report
//! that binds 64 bytes of its choosing (`report_data`), plus the certificates that verify it.
//!
//! Backends, one trait ([`EvidenceSource`]):
//! - [`sim::SimEvidence`]: Conclave's simulated SEV-SNP platform (no hardware protection);
//! - [`snp::SnpEvidence`]: a Linux SEV-SNP guest, through the kernel's configfs-tsm interface;
//! - [`azure::AzureVtpmEvidence`]: an Azure confidential VM, through the paravisor's vTPM.

#![forbid(unsafe_code)]

pub mod azure;
pub mod ephemeral;
pub mod sim;
pub mod snp;

use std::future::Future;
use std::pin::Pin;

pub use conclave_protocol::{Evidence, Platform, TpmQuote};

/// Why evidence could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum TeeError {
    #[error(
        "no TEE: {0}. Run inside an SEV-SNP guest, or launch the workload through `conclave sim-host launch`"
    )]
    Unavailable(String),
    #[error("the platform refused to produce a report: {0}")]
    Refused(String),
    #[error("the platform's answer is malformed: {0}")]
    Malformed(String),
    #[error("talking to the platform failed: {0}")]
    Io(#[from] std::io::Error),
}

pub type EvidenceFuture<'a> = Pin<Box<dyn Future<Output = Result<Evidence, TeeError>> + Send + 'a>>;

/// A source of attestation evidence.
pub trait EvidenceSource: Send + Sync {
    fn platform(&self) -> Platform;
    /// Evidence whose report binds `report_data`.
    fn evidence(&self, report_data: [u8; 64]) -> EvidenceFuture<'_>;
}

/// Picks the backend by name: `sim` (needs `CONCLAVE_SIM_SOCKET`, set by the sim host),
/// `snp`, or `azure-vtpm`.
pub fn source(platform: Platform) -> Result<Box<dyn EvidenceSource>, TeeError> {
    Ok(match platform {
        Platform::Sim => Box::new(sim::SimEvidence::from_env()?),
        Platform::Snp => Box::new(snp::SnpEvidence::new()),
        Platform::AzureVtpm => Box::new(azure::AzureVtpmEvidence::new()),
    })
}
