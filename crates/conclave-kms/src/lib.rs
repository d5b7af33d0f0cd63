//! A party's key vault with secure key release, compatible with Azure Key Vault's keys API.
//!
//! Keys live in a durable store ([`store`]) sealed under the vault's master key ([`crypto`]);
//! every change and release attempt is recorded in a MAC-chained audit log ([`audit`]). A key
//! is released only to a TEE whose attestation token satisfies the key's release policy
//! ([`policy`]), wrapped to the TEE's own key ([`release`]); [`service`] is the HTTP API.

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub use conclave_protocol::vault_client as client;
pub mod crypto;
/// The release policy grammar (shared: see [`conclave_protocol::release_policy`]).
pub use conclave_protocol::release_policy as policy;
pub mod release;
pub mod rotation;
pub mod security_domain;
pub mod service;
pub mod setup;
pub mod store;
pub mod transparency;
