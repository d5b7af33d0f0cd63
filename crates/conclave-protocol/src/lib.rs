//! What Conclave's services and their clients share, and nothing of the services themselves:
//! the platform and evidence a TEE presents, the wire formats of the attestation service
//! (Microsoft Azure Attestation's shapes) and of the vault (Azure Key Vault's), with their HTTP
//! clients, the token claims that are Conclave's own, JWS signing and attestation-token
//! verification, result receipts' format and offline verification, Azure's release policy grammar and its evaluation, and the secure-key-release
//! wrap. The attestation service, the vault and the
//! workload each depend on this crate, never on one another (see ARCHITECTURE.md).

#![forbid(unsafe_code)]

pub mod attestation;
pub mod b64;
pub mod claims;
pub mod health;
pub mod jwk;
pub mod jws;
pub mod keywrap;
pub mod platform;
pub mod receipt;
pub mod release_policy;
pub mod runtime;
pub mod token;
pub mod vault;
pub mod vault_client;

pub use platform::{Evidence, Platform, TpmQuote};
pub use token::{TokenError, TokenVerifier, VerifiedToken};
