//! `GET /readyz`, as every Conclave service answers it (the attestation service, the vault, the
//! workload): whether it is ready, and each check's finding.

use std::collections::BTreeMap;

/// `{"status": "ready" | "not ready", "checks": {<check>: <finding>}}`, with 200 when ready and
/// 503 when not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    pub status: String,
    pub checks: BTreeMap<String, String>,
}

impl Readiness {
    /// `ready` when every check passed.
    pub fn new(ready: bool, checks: BTreeMap<String, String>) -> Self {
        Readiness {
            status: if ready { "ready" } else { "not ready" }.into(),
            checks,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }

    /// 200 when ready, 503 when not.
    pub fn status_code(&self) -> u16 {
        if self.is_ready() { 200 } else { 503 }
    }
}
