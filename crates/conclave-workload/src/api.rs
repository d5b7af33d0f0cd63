//! The workload's JSON API (`GET /api/status`, `/api/records`, `/api/analysis`, …): one set of
//! types that the workload serves and its Rust clients (the demo's launcher and portal, the
//! tests) read; the page's JavaScript reads the same shapes, and learns the analysis states'
//! names and kinds from [`AnalysisCatalogue`] rather than repeating them.

use std::collections::BTreeMap;

use conclave_data::generator::Record;

use crate::auth::Role;
use crate::identity::AttestationState;
use crate::release::ReleaseState;
pub use crate::service::{AnalysisState, AnalysisView, DatasetProgress};

/// `GET /api/status`: who the workload is, where its attestation and each dataset's key
/// release stand, and who is asking.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkloadStatus {
    /// The party's short id (`woodgrove`).
    pub party: String,
    pub display_name: String,
    /// Whether the workload runs in a TEE (attests at all).
    pub tee: bool,
    /// `sim`, `snp` or `azure-vtpm`; null without a TEE.
    pub platform: Option<String>,
    /// Whether the TEE is Conclave's simulated one (no hardware protection).
    pub simulated: bool,
    pub attestation: AttestationState,
    /// What each token claim means, for the page.
    pub claim_explanations: BTreeMap<String, String>,
    /// Whether this workload runs the partner analysis.
    pub analysis_enabled: bool,
    pub analysis_states: AnalysisCatalogue,
    /// Groups smaller than `k` are withheld from results.
    pub k: u64,
    /// The year ages and generations are counted from.
    pub reference_year: i32,
    pub datasets: Vec<DatasetStatus>,
    /// The signed-in principal (absent only where no one is signed in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserInfo>,
}

/// One dataset the workload reads, and the last release of its key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DatasetStatus {
    pub company: String,
    pub display_name: String,
    /// Where the ciphertext lives.
    pub url: String,
    /// The vault key id.
    pub key: String,
    /// Whether it is the workload's own party's dataset.
    pub own: bool,
    pub release: ReleaseState,
}

/// The analysis states, for the page: which one a workload starts in, which means success,
/// which are active (a run is going) and which final.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnalysisCatalogue {
    pub initial: AnalysisState,
    pub success: AnalysisState,
    pub active: Vec<AnalysisState>,
    #[serde(rename = "final")]
    pub final_: Vec<AnalysisState>,
}

impl AnalysisCatalogue {
    pub fn new() -> Self {
        let names = |keep: fn(AnalysisState) -> bool| {
            AnalysisState::ALL
                .into_iter()
                .filter(|s| keep(*s))
                .collect::<Vec<_>>()
        };
        AnalysisCatalogue {
            initial: AnalysisState::Idle,
            success: AnalysisState::Done,
            active: names(AnalysisState::is_active),
            final_: names(AnalysisState::is_final),
        }
    }
}

impl Default for AnalysisCatalogue {
    fn default() -> Self {
        Self::new()
    }
}

/// The principal a request came from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UserInfo {
    pub name: String,
    /// `sub` at the identity provider.
    pub subject: String,
    pub roles: Vec<Role>,
    /// `session` (browser) or `bearer` (API client).
    pub via: String,
}

/// `GET /api/records?offset&limit&q`: one page of the party's own records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordsPage {
    /// Records matching `query`.
    pub total: u64,
    pub offset: usize,
    pub limit: usize,
    pub query: String,
    pub records: Vec<Record>,
}

/// `GET /api/attestation` (served without sign-in): the workload's current attestation token,
/// whose `x-ms-runtime.tls.pin-sha256` pins the TLS key the answer came over, with the pin and
/// the platform repeated for people reading it. A client trusts only the verified token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EndpointEvidence {
    pub party: String,
    /// `sim`, `snp` or `azure-vtpm`.
    pub platform: Option<String>,
    pub simulated: bool,
    /// `{"pin-sha256": <base64 SHA-256 of the TLS key's SPKI>}`.
    pub tls: BTreeMap<String, String>,
    /// The attestation token (a JWS).
    pub token: String,
}

/// `POST /api/analysis/cancel`: whether a running analysis was asked to stop.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CancelResult {
    pub cancelled: bool,
}

/// `POST /auth/logout`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SignedOut {
    pub signed_out: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_names_each_state_once_by_kind() {
        let c = AnalysisCatalogue::new();
        assert_eq!(c.initial, AnalysisState::Idle);
        assert_eq!(c.success, AnalysisState::Done);
        for s in AnalysisState::ALL {
            let kinds = [c.active.contains(&s), c.final_.contains(&s)];
            assert!(kinds.iter().filter(|k| **k).count() <= 1, "{s:?}");
        }
        assert!(c.final_.contains(&AnalysisState::Done));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["initial"], "idle");
        assert!(json["final"].as_array().unwrap().contains(&"done".into()));
        let back: AnalysisCatalogue = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }
}
