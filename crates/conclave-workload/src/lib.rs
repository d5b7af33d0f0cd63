//! The party workload that runs inside the TEE. So far: the partner analysis ([`analytics`]).

#![forbid(unsafe_code)]

pub mod analysis;
pub mod analytics;
