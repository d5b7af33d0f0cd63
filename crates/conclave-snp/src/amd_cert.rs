//! AMD's extensions of X.509 certificates (AMD spec 57230, "Versioned Chip Endorsement Key"):
//! the TCB's security patch levels, the chip id, the cloud provider of a VLEK, and which of
//! AMD's certificates a certificate is.

use der::Decode as _;
use der::asn1::ObjectIdentifier;

use crate::x509::{Cert, CertError};

/// AMD's VCEK/VLEK extensions (AMD spec 57230, "Versioned Chip Endorsement Key").
pub mod amd_oid {
    use der::asn1::ObjectIdentifier;
    pub const PRODUCT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
    pub const BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
    pub const TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
    pub const SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
    pub const UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
    pub const FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
    pub const HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
    pub const CSP_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.5");
}

/// What AMD's certificates carry beyond RFC 5280.
pub trait AmdCert {
    /// AMD's SEV-VLEK signing key (ASVK).
    fn is_asvk(&self) -> bool;
    /// A Versioned Loaded Endorsement Key certificate.
    fn is_vlek(&self) -> bool;
    /// An AMD SPL extension: a DER INTEGER that fits in a byte.
    fn amd_spl(&self, oid: ObjectIdentifier) -> Result<Option<u8>, CertError>;
    /// AMD's hwID extension: the chip id as raw bytes (64 bytes; 8 on Turin).
    fn amd_hw_id(&self) -> Result<Option<Vec<u8>>, CertError>;
}

impl AmdCert for Cert {
    /// AMD's SEV-VLEK signing key (ASVK): an RSA certificate whose subject is
    /// `CN=SEV-VLEK-{Milan,Genoa,Turin}` (AMD KDS `/vlek/v1/{product}/cert_chain`).
    fn is_asvk(&self) -> bool {
        self.is_rsa()
            && self
                .common_name()
                .is_some_and(|cn| cn.starts_with("SEV-VLEK"))
    }

    /// A Versioned Loaded Endorsement Key certificate: it names the cloud provider it was
    /// loaded for (the CSP_ID extension, AMD SEV-SNP firmware ABI §2.4 / VLEK spec) or its
    /// subject is `CN=SEV-VLEK`.
    fn is_vlek(&self) -> bool {
        self.extension(amd_oid::CSP_ID).is_some()
            || self.common_name().is_some_and(|cn| cn == "SEV-VLEK")
    }

    /// An AMD SPL extension: a DER INTEGER that fits in a byte.
    fn amd_spl(&self, oid: ObjectIdentifier) -> Result<Option<u8>, CertError> {
        let Some(raw) = self.extension(oid) else {
            return Ok(None);
        };
        let bad = || CertError::BadExtension {
            what: self.what().to_string(),
            oid: oid.to_string(),
        };
        let v = u32::from_der(raw).map_err(|_| bad())?;
        u8::try_from(v).map(Some).map_err(|_| bad())
    }

    /// AMD's hwID extension: the chip id as raw bytes (64 bytes; 8 on Turin).
    fn amd_hw_id(&self) -> Result<Option<Vec<u8>>, CertError> {
        let Some(raw) = self.extension(amd_oid::HW_ID) else {
            return Ok(None);
        };
        // AMD stores the chip id bytes directly as the extension value.
        if matches!(raw.len(), 8 | 64) {
            Ok(Some(raw.to_vec()))
        } else {
            Err(CertError::BadExtension {
                what: self.what().to_string(),
                oid: amd_oid::HW_ID.to_string(),
            })
        }
    }
}
