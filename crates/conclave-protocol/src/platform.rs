//! What a TEE hands to an attestation service: which platform it is, its SEV-SNP report and
//! the certificates that verify it, and on Azure confidential VMs the paravisor's runtime
//! claims and a vTPM quote.

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
    pub tpm_quote: Option<TpmQuote>,
}

/// A quote as it travels: the signed `TPMS_ATTEST` bytes, the signature, and the values of the
/// PCRs it selects (SHA-256 bank, in PCR index order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmQuote {
    /// `TPMS_ATTEST` as the TPM returned it in `TPM2B_ATTEST` (without the size).
    pub message: Vec<u8>,
    /// The RSASSA-PKCS1-v1_5 SHA-256 signature: raw (the modulus size), or a marshalled
    /// `TPMT_SIGNATURE` as `tpm2_quote` writes it.
    pub signature: Vec<u8>,
    /// The selected PCRs' SHA-256 values, in index order.
    pub pcrs: Vec<[u8; 32]>,
}
