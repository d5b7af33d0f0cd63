//! Public-key infrastructure shared by every crate that holds or checks keys: X.509
//! certificates (parsing, signature checks, issuance with `x509-cert`'s builder) and SPKI
//! helpers ([`x509`]), a local certificate authority ([`ca`]) and the writing of key files
//! ([`files`]). Nothing here is specific to AMD, Azure or a service.

#![forbid(unsafe_code)]

pub mod ca;
pub mod files;
pub mod x509;

pub use ca::{Issued, LocalCa};
pub use files::{write_file, write_secret};
pub use x509::{Cert, CertError};

/// Why a key or certificate file, or an issuance, failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    #[error("certificate: {0}")]
    Cert(String),
}

impl From<CertError> for PkiError {
    fn from(e: CertError) -> Self {
        PkiError::Cert(e.to_string())
    }
}
