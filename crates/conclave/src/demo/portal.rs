//! The demo's portal: what is running, each party's page, the vaults' audit logs, served on
//! loopback with the demo's admin tokens kept in this process.

use super::*;

#[derive(Clone)]
pub(super) struct Portal {
    pub(super) info: DemoInfo,
    pub(super) http: reqwest::Client,
    /// A client pinned to each workload's TLS key, by workload id.
    pub(super) workloads: BTreeMap<String, reqwest::Client>,
    /// The portal's own access tokens (no role: it sees each workload's status only).
    pub(super) tokens: Arc<PortalTokens>,
}

pub(super) const PORTAL_HTML: &str = include_str!("portal_ui/index.html");

pub(super) const PORTAL_JS: &str = include_str!("portal_ui/portal.js");

pub(super) const PORTAL_CSS: &str = include_str!("portal_ui/portal.css");

pub(super) fn portal_router(
    info: DemoInfo,
    http: reqwest::Client,
    workloads: BTreeMap<String, reqwest::Client>,
    tokens: PortalTokens,
) -> axum::Router {
    let asset = |ct: &'static str, body: &'static str| {
        move || async move { ([(header::CONTENT_TYPE, ct)], body).into_response() }
    };
    axum::Router::new()
        .route("/", get(asset("text/html; charset=utf-8", PORTAL_HTML)))
        .route(
            "/portal.js",
            get(asset("text/javascript; charset=utf-8", PORTAL_JS)),
        )
        .route(
            "/portal.css",
            get(asset("text/css; charset=utf-8", PORTAL_CSS)),
        )
        .route("/api/demo", get(demo_status))
        .route("/api/audit/{party}", get(audit))
        .with_state(Portal {
            info,
            http,
            workloads,
            tokens: Arc::new(tokens),
        })
}

/// What the portal page reads (`GET /api/demo`): the demo's layout without the sign-in
/// passwords (they stay in the terminal and `demo.json`), each workload with its live status.
#[derive(serde::Serialize)]
pub(super) struct DemoView {
    portal: String,
    attestation: String,
    identity_provider: String,
    sign_in: Vec<SignInView>,
    ca: PathBuf,
    state_dir: PathBuf,
    records_per_party: u64,
    k: u64,
    parties: Vec<PartyInfo>,
    workloads: Vec<WorkloadView>,
}

/// Who may sign in where; never the password.
#[derive(serde::Serialize)]
pub(super) struct SignInView {
    party: String,
    username: String,
    roles: Vec<String>,
}

#[derive(serde::Serialize)]
pub(super) struct WorkloadView {
    #[serde(flatten)]
    info: WorkloadInfo,
    /// Its `/api/status`, or null when it does not answer.
    status: Option<conclave_workload::api::WorkloadStatus>,
}

/// An error in the one error shape: `{"error": {"code", "message"}}`.
fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = conclave_kms::api::AzureError {
        error: conclave_kms::api::AzureErrorDetail {
            code: code.to_string(),
            message,
        },
    };
    (status, Json(body)).into_response()
}

/// The demo's layout with each workload's live status (fetched here: the pages are on other
/// origins).
pub(super) async fn demo_status(State(p): State<Portal>) -> Json<DemoView> {
    let mut workloads = Vec::new();
    for w in &p.info.workloads {
        let Some(client) = p.workloads.get(&w.id) else {
            continue;
        };
        let Ok(token) = p.tokens.token(&w.party, &w.audience).await else {
            continue;
        };
        let status = match client
            .get(format!("{}api/status", w.url))
            .bearer_auth(token)
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        workloads.push(WorkloadView {
            info: w.clone(),
            status,
        });
    }
    let info = &p.info;
    Json(DemoView {
        portal: info.portal.clone(),
        attestation: info.attestation.clone(),
        identity_provider: info.identity_provider.clone(),
        sign_in: info
            .sign_in
            .iter()
            .map(|u| SignInView {
                party: u.party.clone(),
                username: u.username.clone(),
                roles: u.roles.clone(),
            })
            .collect(),
        ca: info.ca.clone(),
        state_dir: info.state_dir.clone(),
        records_per_party: info.records_per_party,
        k: info.k,
        parties: info.parties.clone(),
        workloads,
    })
}

/// A vault's audit log, read with its admin token (which never leaves this process).
pub(super) async fn audit(State(p): State<Portal>, UrlPath(party): UrlPath<String>) -> Response {
    let Some(v) = p.info.parties.iter().find(|v| v.id == party) else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no party {party:?}"),
        );
    };
    match VaultClient::new(p.http.clone(), &v.vault, &v.admin_token)
        .audit(0)
        .await
    {
        Ok(log) => Json(log).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, "Vault", e.to_string()),
    }
}
