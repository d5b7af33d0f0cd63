//! Conclave's attestation service, compatible with Microsoft Azure Attestation's SEV-SNP API.
//!
//! A TEE posts its evidence (an SEV-SNP report, its certificate chain, and the runtime data the
//! report binds) to `POST /attest/SevSnpVm`. The service verifies the evidence
//! ([`appraisal::appraise`]), checks its own appraisal policy, and answers an RS256 token whose
//! claims carry MAA's names ([`claims`]). Anyone can verify tokens offline with the keys at
//! `GET /certs` ([`verify::TokenVerifier`], or any JWT library).

#![forbid(unsafe_code)]

pub mod appraisal;
pub mod claims;
pub mod keys;
pub mod service;
pub mod vtpm;

/// The wire formats, JWS and token verification live in `conclave-protocol`, shared with the
/// clients; here under their old names.
pub use conclave_protocol::{attestation as api, jws, token as verify};

pub use appraisal::{AppraisalPolicy, PlatformName};
pub use service::{AttestationService, ServiceConfig};
pub use verify::{TokenError, TokenVerifier, VerifiedToken};
