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

/// The demo's layout with each workload's live status (fetched here: the pages are on other
/// origins).
pub(super) async fn demo_status(State(p): State<Portal>) -> Json<Value> {
    let mut workloads = Vec::new();
    for w in &p.info.workloads {
        let Some(client) = p.workloads.get(&w.id) else {
            continue;
        };
        let Ok(token) = p.tokens.token(&w.party, &w.audience).await else {
            continue;
        };
        let status: Option<conclave_workload::api::WorkloadStatus> = match client
            .get(format!("{}api/status", w.url))
            .bearer_auth(token)
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let mut v = serde_json::to_value(w).expect("JSON");
        v["status"] = serde_json::to_value(status).expect("JSON");
        workloads.push(v);
    }
    let mut v = serde_json::to_value(&p.info).expect("JSON");
    v["workloads"] = Value::Array(workloads);
    // Who may sign in, not with what: the passwords stay in the terminal and demo.json.
    if let Some(users) = v["sign_in"].as_array_mut() {
        for u in users {
            u.as_object_mut().map(|o| o.remove("password"));
        }
    }
    Json(v)
}

/// A vault's audit log, read with its admin token (which never leaves this process).
pub(super) async fn audit(State(p): State<Portal>, UrlPath(party): UrlPath<String>) -> Response {
    let Some(v) = p.info.parties.iter().find(|v| v.id == party) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "NotFound", "message": format!("no party {party:?}")}})),
        )
            .into_response();
    };
    match VaultClient::new(p.http.clone(), &v.vault, &v.admin_token)
        .audit(0)
        .await
    {
        Ok(log) => Json(log).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": {"code": "Vault", "message": e.to_string()}})),
        )
            .into_response(),
    }
}
