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

/// Which kind of platform produced evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Platform {
    /// Conclave's simulated SEV-SNP: real report format, locally generated root, no protection.
    #[serde(rename = "sim")]
    Sim,
    /// An SEV-SNP guest on AMD hardware.
    #[serde(rename = "snp")]
    Snp,
    /// An Azure confidential VM: the SNP report is the paravisor's, and binds the vTPM's
    /// runtime claims (which carry our report data).
    #[serde(rename = "azure-vtpm")]
    AzureVtpm,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Sim => "sim",
            Platform::Snp => "snp",
            Platform::AzureVtpm => "azure-vtpm",
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sim" => Ok(Platform::Sim),
            "snp" => Ok(Platform::Snp),
            "azure-vtpm" => Ok(Platform::AzureVtpm),
            other => Err(format!(
                "unknown platform {other:?}: expected sim, snp or azure-vtpm"
            )),
        }
    }
}

/// What a TEE hands to the attestation service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub platform: Platform,
    /// The raw 1184-byte SEV-SNP attestation report.
    pub report: Vec<u8>,
    /// PEM certificates that verify the report: VCEK (or VLEK), and usually ASK and ARK.
    pub cert_chain_pem: String,
    /// Azure only: the paravisor's runtime claims JSON, whose SHA-256 is the report's
    /// `report_data`, and which carries the guest's 64 bytes as `user-data`.
    pub hcl_runtime_claims: Option<Vec<u8>>,
    /// Azure only: a vTPM quote of the boot PCRs by the HCL report's attestation key.
    pub tpm_quote: Option<azure::VtpmQuote>,
}

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
