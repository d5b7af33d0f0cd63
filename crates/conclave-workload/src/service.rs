//! The party workload's HTTP service: the web page (embedded, works offline) and the JSON API
//! it uses (`/api/...`), so scripts can drive everything the page does.
//!
//! Nothing here serves a partner's records: the only record endpoint reads the party's own
//! dataset, with its own released key. A workload without a released key serves nothing but
//! the reasons it was refused.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use conclave_data::generator::{Record, records_from_batch};
use conclave_data::store::locate;
use futures::StreamExt as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::analysis::{self, Input, Phase, Progress};
use crate::analytics::AnalysisResult;
use crate::api;
use crate::auth::{AuthError, Authenticator, Principal, Role, SESSION_LIFETIME};
use crate::config::PartyConfig;
use crate::contract_runs::{self, ContractRunView};
use crate::identity::{AttestationState, TeeIdentity, claim_explanations, now};
use crate::receipt::{self, InputDescriptor};
use crate::release::{Keyring, ReleaseState};
use conclave_protocol::health::Readiness;

/// Largest page of records the API returns.
pub const MAX_PAGE: usize = 200;

/// Everything the handlers share.
pub struct Workload {
    pub config: Arc<PartyConfig>,
    pub identity: Arc<TeeIdentity>,
    pub keyring: Keyring,
    /// Sign-in; `None` when the config names no identity provider (then only public routes
    /// answer).
    pub auth: Option<Arc<Authenticator>>,
    analysis: Mutex<AnalysisView>,
    cancel: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    changed: tokio::sync::watch::Sender<u64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    receipt: Mutex<Option<String>>,
    /// Where contract runs get evidence for their own tokens; `None` without a TEE.
    evidence: Option<Arc<dyn conclave_tee::EvidenceSource>>,
    http: reqwest::Client,
    contract_run: Mutex<ContractRunView>,
    contract_cancel: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    /// The last successful contract run's receipt and sealed results.
    contract_receipt: Mutex<Option<conclave_contract::receipt::ContractReceiptBundle>>,
    metrics: Arc<conclave_net::observe::Metrics>,
    /// `conclave_workload_analyses_total{outcome}`: done, cancelled, failed.
    analyses: Family<OutcomeLabels, Counter>,
    /// `conclave_workload_analysis_records_total`: records decrypted and aggregated.
    analysis_records: Counter,
    /// `conclave_workload_analysis_duration_seconds`: whole runs, release to result.
    analysis_seconds: prometheus_client::metrics::histogram::Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The analysis as the page sees it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AnalysisView {
    pub state: AnalysisState,
    pub started_at: Option<u64>,
    /// Who started the run (the principal's name).
    pub started_by: Option<String>,
    pub finished_at: Option<u64>,
    pub datasets: Vec<DatasetProgress>,
    pub error: Option<String>,
    pub inputs: Vec<InputDescriptor>,
    pub result: Option<AnalysisResult>,
    pub receipt_available: bool,
}

/// Where the partner analysis is. Served as its lower-case name; the page learns which states
/// are active and which final from `/api/status` (`analysis_states`), so the names are defined
/// here only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisState {
    /// No run yet.
    #[default]
    Idle,
    /// Asking each dataset's vault for its key.
    Releasing,
    /// Hashing the input datasets (for the receipt).
    Hashing,
    /// Decrypting and aggregating.
    Running,
    Done,
    Failed,
    Cancelled,
}

impl AnalysisState {
    pub const ALL: [AnalysisState; 7] = [
        AnalysisState::Idle,
        AnalysisState::Releasing,
        AnalysisState::Hashing,
        AnalysisState::Running,
        AnalysisState::Done,
        AnalysisState::Failed,
        AnalysisState::Cancelled,
    ];

    /// A run is under way (another cannot start).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            AnalysisState::Releasing | AnalysisState::Hashing | AnalysisState::Running
        )
    }

    /// A run has ended, one way or another.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            AnalysisState::Done | AnalysisState::Failed | AnalysisState::Cancelled
        )
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DatasetProgress {
    pub company: String,
    pub display_name: String,
    pub phase: Phase,
    pub records: u64,
    pub records_total: u64,
    pub bytes_total: u64,
    /// Records per second since this dataset started.
    pub rate: f64,
    /// 0..=100.
    pub percent: f64,
}

/// An API error: `{"error": {"code", "message"}}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(conclave_protocol::vault::AzureError {
                error: conclave_protocol::vault::AzureErrorDetail {
                    code: self.code.to_string(),
                    message: self.message,
                },
            }),
        )
            .into_response()
    }
}

impl Workload {
    pub fn new(
        config: Arc<PartyConfig>,
        identity: Arc<TeeIdentity>,
        evidence: Option<Arc<dyn conclave_tee::EvidenceSource>>,
        http: reqwest::Client,
        vault_ca: conclave_pki::Cert,
        auth: Option<Arc<Authenticator>>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Self> {
        let metrics = conclave_net::observe::Metrics::new("workload");
        let analyses = Family::<OutcomeLabels, Counter>::default();
        let analysis_records = Counter::default();
        let analysis_seconds = conclave_net::observe::latency_histogram();
        metrics.register(
            "workload_analyses",
            "Analysis runs finished, by outcome (done, cancelled, failed)",
            analyses.clone(),
        );
        metrics.register(
            "workload_analysis_records",
            "Records decrypted and aggregated by analysis runs (throughput: its rate)",
            analysis_records.clone(),
        );
        metrics.register(
            "workload_analysis_duration_seconds",
            "Time of a whole analysis run, from key release to result",
            analysis_seconds.clone(),
        );
        Arc::new(Workload {
            metrics,
            analyses,
            analysis_records,
            analysis_seconds,
            keyring: Keyring::new(config.clone(), identity.clone(), http.clone(), vault_ca),
            evidence,
            http,
            contract_run: Mutex::default(),
            contract_cancel: Mutex::default(),
            contract_receipt: Mutex::default(),
            auth,
            config,
            identity,
            analysis: Mutex::new(AnalysisView {
                state: AnalysisState::Idle,
                ..AnalysisView::default()
            }),
            cancel: Mutex::default(),
            changed: tokio::sync::watch::channel(0).0,
            shutdown,
            receipt: Mutex::default(),
        })
    }

    fn reference_year(&self) -> i32 {
        self.config.reference_year.unwrap_or_else(current_year)
    }

    pub fn status(&self) -> api::WorkloadStatus {
        let platform = self.identity.platform();
        api::WorkloadStatus {
            party: self.config.party.clone(),
            display_name: self.config.display_name.clone(),
            tee: platform.is_some(),
            platform: platform.map(|p| p.as_str().to_string()),
            simulated: platform == Some(conclave_tee::Platform::Sim),
            attestation: self.identity.state(),
            claim_explanations: claim_explanations(),
            analysis_enabled: self.config.analysis,
            analysis_states: api::AnalysisCatalogue::new(),
            k: self.config.k,
            reference_year: self.reference_year(),
            datasets: self
                .config
                .datasets
                .iter()
                .map(|d| api::DatasetStatus {
                    company: d.company.clone(),
                    display_name: d.display_name.clone(),
                    url: d.url.clone(),
                    key: d.key.clone(),
                    own: d.company == self.config.party,
                    release: self.keyring.state(&d.company),
                })
                .collect(),
            user: None,
        }
    }

    fn update(&self, f: impl FnOnce(&mut AnalysisView)) {
        f(&mut self.analysis.lock().expect("analysis lock"));
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn analysis(&self) -> AnalysisView {
        self.analysis.lock().expect("analysis lock").clone()
    }

    pub(crate) fn evidence(&self) -> Option<Arc<dyn conclave_tee::EvidenceSource>> {
        self.evidence.clone()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn update_contract_run(&self, f: impl FnOnce(&mut ContractRunView)) {
        f(&mut self.contract_run.lock().expect("contract run lock"));
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn contract_run(&self) -> ContractRunView {
        self.contract_run.lock().expect("contract run lock").clone()
    }

    /// The contracts this workload can run (`contracts_dir`), with their approvals.
    pub fn contracts(&self) -> Result<contract_runs::ContractList, ApiError> {
        let dir = self.config.contracts_dir.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NoContracts",
                "this workload is not configured for contracts (contracts_dir in its launch config)",
            )
        })?;
        Ok(contract_runs::list(dir))
    }

    /// Starts a run of contract `id` (see [`contract_runs`]); one at a time.
    pub fn start_contract_run(
        self: &Arc<Self>,
        id: &str,
        by: &str,
    ) -> Result<ContractRunView, ApiError> {
        let dir = self.config.contracts_dir.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NoContracts",
                "this workload is not configured for contracts (contracts_dir in its launch config)",
            )
        })?;
        let (contract, _) = contract_runs::load(&dir, id)
            .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "NoSuchContract", e))?;
        {
            let mut view = self.contract_run.lock().expect("contract run lock");
            if view.state.is_active() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "RunInProgress",
                    "a contract is already running; cancel it or wait for it",
                ));
            }
            *view = ContractRunView {
                state: AnalysisState::Releasing,
                contract: Some(contract.name.clone()),
                digest: Some(contract.digest()),
                started_at: Some(now()),
                started_by: Some(by.to_string()),
                releases: contract
                    .inputs
                    .iter()
                    .map(|i| contract_runs::InputRelease {
                        table: i.table.clone(),
                        provider: i.provider.clone(),
                        display_name: contract
                            .party(&i.provider)
                            .map(|p| p.display_name.clone())
                            .unwrap_or_default(),
                        release: ReleaseState::NotRequested,
                    })
                    .collect(),
                ..ContractRunView::default()
            };
        }
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        *self.contract_cancel.lock().expect("cancel lock") = Some(cancel);
        *self.contract_receipt.lock().expect("receipt lock") = None;
        let own_party = self.config.party.clone();
        self.changed.send_modify(|v| *v += 1);
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = me.clone().run_contract(contract, cancelled).await;
            if let Ok(release) = &outcome {
                *me.contract_receipt.lock().expect("receipt lock") = Some(release.bundle.clone());
            }
            me.update_contract_run(|v| {
                v.finished_at = Some(now());
                match outcome {
                    Ok(release) => {
                        v.state = AnalysisState::Done;
                        v.inputs = release.inputs;
                        v.sealed_to = release
                            .bundle
                            .sealed
                            .iter()
                            .map(|s| s.receiver.clone())
                            .collect();
                        v.receipt_available = true;
                        if v.sealed_to.contains(&own_party) {
                            v.result = Some(release.result);
                        } else {
                            v.result_withheld = Some(format!(
                                "the contract's results go to {} only, sealed to their keys; {own_party} is not a result receiver",
                                v.sealed_to.join(", ")
                            ));
                        }
                    }
                    Err(contract_runs::RunStop::Engine(
                        crate::engine::ContractRunError::Cancelled,
                    )) => {
                        v.state = AnalysisState::Cancelled;
                        v.error = Some("the run was cancelled; nothing was released".into());
                    }
                    Err(e) => {
                        v.state = AnalysisState::Failed;
                        v.error = Some(e.to_string());
                    }
                }
            });
        });
        Ok(self.contract_run())
    }

    /// The last successful contract run's receipt and sealed results, if the current run (or
    /// the last) succeeded.
    pub fn contract_receipt(&self) -> Option<conclave_contract::receipt::ContractReceiptBundle> {
        self.contract_receipt.lock().expect("receipt lock").clone()
    }

    pub fn cancel_contract_run(&self) -> bool {
        match &*self.contract_cancel.lock().expect("cancel lock") {
            Some(c) => c.send(true).is_ok(),
            None => false,
        }
    }

    /// Releases the party's own key once attested. Without a TEE it tries once and records the
    /// refusal; while attestation fails, the key shows as not requested, with the reason.
    pub async fn release_own_key_when_attested(self: Arc<Self>) {
        let Some(own) = self.config.own().cloned() else {
            return;
        };
        let mut failure_shown = false;
        while self.identity.platform().is_some() && self.identity.token().is_none() {
            if !failure_shown && matches!(self.identity.state(), AttestationState::Failed { .. }) {
                self.keyring.release(&own).await;
                failure_shown = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.keyring.release(&own).await;
    }

    /// One page of the party's own records, decrypted in memory as they stream by.
    pub async fn records(
        &self,
        offset: usize,
        limit: usize,
        query: &str,
    ) -> Result<(u64, Vec<Record>), ApiError> {
        let own = self.config.own().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NoOwnDataset",
                "this workload's config lists no dataset of its own party",
            )
        })?;
        let key = self.keyring.key(&own.company).ok_or_else(|| {
            let why = match self.keyring.state(&own.company) {
                ReleaseState::Denied { reason, .. } => format!("the key was denied: {reason}"),
                _ => "the key has not been released to this workload yet".into(),
            };
            ApiError::new(StatusCode::FORBIDDEN, "KeyNotReleased", why)
        })?;
        let location = locate(&own.url)
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "Storage", e.to_string()))?;
        let mut stream = conclave_data::dataset::read_encrypted(&location, key, None, 8192)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "Dataset", e.to_string()))?;
        let needle = query.trim().to_lowercase();
        let mut matched = 0u64;
        let mut page = Vec::new();
        while let Some(batch) = stream.next().await {
            // A stream that ends in an error is discarded whole: nothing is shown from it.
            let batch = batch.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "Dataset",
                    format!("{e} (the dataset may be tampered with)"),
                )
            })?;
            let rows = records_from_batch(&batch)
                .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "Dataset", e))?;
            for r in rows {
                if !needle.is_empty() && !matches(&r, &needle) {
                    continue;
                }
                if matched as usize >= offset && page.len() < limit {
                    page.push(r);
                }
                matched += 1;
            }
        }
        Ok((matched, page))
    }

    /// Starts the partner analysis in the background, on behalf of `by` (a principal's name).
    pub fn start_analysis(self: &Arc<Self>, by: &str) -> Result<AnalysisView, ApiError> {
        if !self.config.analysis {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "AnalysisNotConfigured",
                format!(
                    "{}'s workload is not configured for the partner analysis (analysis = true in its launch config)",
                    self.config.display_name
                ),
            ));
        }
        {
            let mut view = self.analysis.lock().expect("analysis lock");
            if view.state.is_active() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "AnalysisRunning",
                    "an analysis is already running; cancel it or wait for it",
                ));
            }
            *view = AnalysisView {
                state: AnalysisState::Releasing,
                started_at: Some(now()),
                started_by: Some(by.to_string()),
                datasets: self
                    .config
                    .datasets
                    .iter()
                    .map(|d| DatasetProgress {
                        company: d.company.clone(),
                        display_name: d.display_name.clone(),
                        phase: Phase::Opening,
                        records: 0,
                        records_total: 0,
                        bytes_total: 0,
                        rate: 0.0,
                        percent: 0.0,
                    })
                    .collect(),
                ..AnalysisView::default()
            };
        }
        *self.receipt.lock().expect("receipt lock") = None;
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        *self.cancel.lock().expect("cancel lock") = Some(cancel);
        self.changed.send_modify(|v| *v += 1);
        let me = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = me.clone().run_analysis(cancelled).await;
            me.analyses
                .get_or_create(&OutcomeLabels {
                    outcome: match &outcome {
                        Ok(()) => "done",
                        Err(analysis::AnalysisError::Cancelled) => "cancelled",
                        Err(_) => "failed",
                    },
                })
                .inc();
            me.analysis_seconds.observe(started.elapsed().as_secs_f64());
            me.analysis_records
                .inc_by(me.analysis().datasets.iter().map(|d| d.records).sum());
            me.update(|v| {
                v.finished_at = Some(now());
                match outcome {
                    Ok(()) => v.state = AnalysisState::Done,
                    Err(analysis::AnalysisError::Cancelled) => {
                        v.state = AnalysisState::Cancelled;
                        v.error = Some("the analysis was cancelled; nothing was released".into());
                    }
                    Err(e) => {
                        v.state = AnalysisState::Failed;
                        v.error = Some(e.to_string());
                    }
                }
            });
        });
        Ok(self.analysis())
    }

    pub fn cancel_analysis(&self) -> bool {
        match &*self.cancel.lock().expect("cancel lock") {
            Some(c) => c.send(true).is_ok(),
            None => false,
        }
    }

    async fn run_analysis(
        self: Arc<Self>,
        cancelled: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), analysis::AnalysisError> {
        let fail = |company: &str, detail: String| analysis::AnalysisError::Dataset {
            company: company.to_string(),
            detail,
        };
        // 1. Every key, fresh from its vault: a revoked grant stops the analysis here.
        let mut keys = BTreeMap::new();
        for d in &self.config.datasets {
            match self.keyring.release(d).await {
                ReleaseState::Released { kid, .. } => {
                    let key = self
                        .keyring
                        .key(&d.company)
                        .expect("a released key is held");
                    keys.insert(d.company.clone(), (kid, key));
                }
                ReleaseState::Denied { reason, .. } => {
                    return Err(fail(
                        &d.display_name,
                        format!("key release denied: {reason}"),
                    ));
                }
                ReleaseState::NotRequested => unreachable!("release always records an outcome"),
            }
        }
        if *cancelled.borrow() {
            return Err(analysis::AnalysisError::Cancelled);
        }
        // 2. What exactly is analysed: the receipt names each ciphertext by its hash.
        self.update(|v| v.state = AnalysisState::Hashing);
        let mut inputs = Vec::new();
        let mut descriptors = Vec::new();
        for d in &self.config.datasets {
            let (kid, key) = keys.remove(&d.company).expect("every key was released");
            let location = locate(&d.url).map_err(|e| fail(&d.display_name, e.to_string()))?;
            let (sha256, bytes) = conclave_data::dataset::digest(&location)
                .await
                .map_err(|e| fail(&d.display_name, e.to_string()))?;
            descriptors.push(InputDescriptor {
                company: d.company.clone(),
                dataset: d.url.clone(),
                key: kid,
                sha256,
                bytes,
                records: 0,
            });
            inputs.push(Input {
                company: d.company.clone(),
                location,
                unwrapper: Some(key),
            });
        }
        // 3. The analysis, with progress.
        self.update(|v| v.state = AnalysisState::Running);
        let started: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
        let me = self.clone();
        let report = Arc::new(move |p: Progress| {
            let since = *started
                .lock()
                .expect("start times lock")
                .entry(p.company.clone())
                .or_insert_with(Instant::now);
            let elapsed = since.elapsed().as_secs_f64();
            me.update(|v| {
                if let Some(d) = v.datasets.iter_mut().find(|d| d.company == p.company) {
                    d.phase = p.phase;
                    d.records = p.records;
                    d.records_total = p.records_total;
                    d.bytes_total = p.bytes_total;
                    d.rate = if elapsed > 0.0 {
                        p.records as f64 / elapsed
                    } else {
                        0.0
                    };
                    d.percent = match (p.phase, p.records_total) {
                        (Phase::Done, _) => 100.0,
                        (_, 0) => 0.0,
                        (_, total) => (p.records as f64 * 100.0 / total as f64).min(100.0),
                    };
                }
            });
        });
        let result = analysis::analyze(
            inputs,
            self.config.k,
            self.reference_year(),
            report,
            cancelled,
        )
        .await?;
        for d in &mut descriptors {
            d.records = result.companies.get(&d.company).map_or(0, |c| c.records);
        }
        // 4. The receipt, signed with the TEE's key and carrying its current token.
        let token = self.identity.token().ok_or_else(|| {
            fail(
                "receipt",
                format!(
                    "cannot sign a receipt: {}",
                    self.identity.not_attested_reason()
                ),
            )
        })?;
        let signed = receipt::issue(
            &self.identity,
            &token,
            &self.config.party,
            &descriptors,
            &result,
        );
        *self.receipt.lock().expect("receipt lock") = Some(signed);
        self.update(|v| {
            v.inputs = descriptors;
            v.result = Some(result);
            v.receipt_available = true;
        });
        Ok(())
    }
}

fn matches(r: &Record, needle: &str) -> bool {
    [
        &r.name,
        &r.phone,
        &r.address,
        &r.postal_code,
        &r.city,
        &r.country,
        &r.eye_color,
        &r.favorite_color,
    ]
    .iter()
    .any(|f| f.to_lowercase().contains(needle))
}

/// The current calendar year (UTC).
pub fn current_year() -> i32 {
    year_of(now())
}

/// The calendar year (UTC) of a Unix time.
fn year_of(unix_secs: u64) -> i32 {
    // Days since 1970 to a civil year (Howard Hinnant's algorithm).
    let days = (unix_secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2)) as i32
}

// --- HTTP --------------------------------------------------------------------------------------

type St = State<Arc<Workload>>;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE_CSS: &str = include_str!("../ui/style.css");
const WORLD_JSON: &str = include_str!("../ui/world-110m.json");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
            ),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn status(State(w): St, Extension(who): Extension<Principal>) -> Json<api::WorkloadStatus> {
    let mut status = w.status();
    status.user = Some(api::UserInfo {
        name: who.name,
        subject: who.subject,
        roles: who.roles,
        via: who.via.to_string(),
    });
    Json(status)
}

/// Refuses a principal without `role`, saying what it was for.
fn require(who: &Principal, role: Role, what: &str) -> Result<(), ApiError> {
    if who.has(role) {
        return Ok(());
    }
    tracing::warn!(
        target: "conclave::access",
        user = %who.name,
        sub = %who.subject,
        roles = %who.role_names(),
        action = what,
        "refused: needs the {} role",
        role.as_str()
    );
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "{what} needs the {} role; {} has {}",
            role.as_str(),
            who.name,
            who.role_names()
        ),
    ))
}

async fn release(
    State(w): St,
    Extension(who): Extension<Principal>,
    Path(company): Path<String>,
) -> Result<Response, ApiError> {
    if !(who.has(Role::Member) || who.has(Role::Analyst)) {
        require(&who, Role::Member, "requesting a key release")?;
    }
    let dataset = w.config.dataset(&company).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "UnknownDataset",
            format!("this workload's config lists no dataset of {company:?}"),
        )
    })?;
    tracing::info!(target: "conclave::access", user = %who.name, sub = %who.subject, via = who.via, company = %company, "key release requested");
    let state = w.keyring.release(&dataset).await;
    let code = match state {
        ReleaseState::Released { .. } => StatusCode::OK,
        _ => StatusCode::FORBIDDEN,
    };
    Ok((code, Json(state)).into_response())
}

#[derive(serde::Deserialize)]
struct RecordsQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    q: String,
}

async fn records(
    State(w): St,
    Extension(who): Extension<Principal>,
    Query(q): Query<RecordsQuery>,
) -> Result<Json<api::RecordsPage>, ApiError> {
    require(&who, Role::Member, "reading the party's records")?;
    let limit = q.limit.unwrap_or(25).clamp(1, MAX_PAGE);
    let (total, records) = w.records(q.offset, limit, &q.q).await?;
    // Who saw what (never the records or the search text: only their extent).
    tracing::info!(
        target: "conclave::access",
        user = %who.name,
        sub = %who.subject,
        via = who.via,
        offset = q.offset,
        shown = records.len(),
        matched = total,
        searched = !q.q.trim().is_empty(),
        "records viewed"
    );
    Ok(Json(api::RecordsPage {
        total,
        offset: q.offset,
        limit,
        query: q.q,
        records,
    }))
}

async fn analysis_get(
    State(w): St,
    Extension(who): Extension<Principal>,
) -> Result<Json<AnalysisView>, ApiError> {
    require(&who, Role::Analyst, "seeing analysis results")?;
    Ok(Json(w.analysis()))
}

async fn analysis_start(
    State(w): St,
    Extension(who): Extension<Principal>,
) -> Result<(StatusCode, Json<AnalysisView>), ApiError> {
    require(&who, Role::Analyst, "running an analysis")?;
    let view = w.start_analysis(&who.name)?;
    tracing::info!(target: "conclave::access", user = %who.name, sub = %who.subject, via = who.via, "analysis started");
    Ok((StatusCode::ACCEPTED, Json(view)))
}

async fn analysis_cancel(
    State(w): St,
    Extension(who): Extension<Principal>,
) -> Result<Json<api::CancelResult>, ApiError> {
    require(&who, Role::Analyst, "cancelling an analysis")?;
    let cancelled = w.cancel_analysis();
    tracing::info!(target: "conclave::access", user = %who.name, sub = %who.subject, via = who.via, cancelled, "analysis cancel requested");
    Ok(Json(api::CancelResult { cancelled }))
}

async fn analysis_receipt(
    State(w): St,
    Extension(who): Extension<Principal>,
) -> Result<Response, ApiError> {
    require(&who, Role::Analyst, "downloading the analysis receipt")?;
    tracing::info!(target: "conclave::access", user = %who.name, sub = %who.subject, via = who.via, "receipt downloaded");
    let receipt = w.receipt.lock().expect("receipt lock").clone();
    let receipt = receipt.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NoReceipt",
            "no analysis has completed yet",
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/jose"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"analysis-receipt.jws\"",
            ),
        ],
        receipt,
    )
        .into_response())
}

/// The last contract run's receipt and sealed results ([`ContractReceiptBundle`] as JSON), for
/// `conclave receipt verify`.
///
/// [`ContractReceiptBundle`]: conclave_contract::receipt::ContractReceiptBundle
async fn contract_run_receipt(
    State(w): St,
    Extension(who): Extension<Principal>,
) -> Result<Response, ApiError> {
    require(&who, Role::Analyst, "downloading a contract run's receipt")?;
    let bundle = w.contract_receipt.lock().expect("receipt lock").clone();
    let bundle = bundle.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NoReceipt",
            "no contract run has completed since the last one started",
        )
    })?;
    tracing::info!(target: "conclave::access", user = %who.name, sub = %who.subject, via = who.via, "contract receipt downloaded");
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"contract-receipt.json\"",
        )],
        Json(bundle),
    )
        .into_response())
}

async fn contracts_list(
    State(w): St,
    Extension(who): Extension<Principal>,
) -> Result<Json<contract_runs::ContractList>, ApiError> {
    require(&who, Role::Analyst, "seeing the analysis contracts")?;
    Ok(Json(w.contracts()?))
}

async fn contract_run_get(
    State(w): St,
    Extension(who): Extension<Principal>,
) -> Result<Json<ContractRunView>, ApiError> {
    require(&who, Role::Analyst, "seeing a contract run")?;
    Ok(Json(w.contract_run()))
}

async fn contract_run_start(
    State(w): St,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<ContractRunView>), ApiError> {
    require(&who, Role::Analyst, "running an analysis contract")?;
    let view = w.start_contract_run(&id, &who.name)?;
    tracing::info!(target: "conclave::access", user = %who.name, sub = %who.subject, via = who.via, contract = %id, "contract run started");
    Ok((StatusCode::ACCEPTED, Json(view)))
}

async fn contract_run_cancel(
    State(w): St,
    Extension(who): Extension<Principal>,
) -> Result<Json<api::CancelResult>, ApiError> {
    require(&who, Role::Analyst, "cancelling a contract run")?;
    let cancelled = w.cancel_contract_run();
    tracing::info!(target: "conclave::access", user = %who.name, sub = %who.subject, via = who.via, cancelled, "contract run cancel requested");
    Ok(Json(api::CancelResult { cancelled }))
}

/// Server-Sent Events: the contract run's view whenever it changes, as for the analysis.
async fn contract_run_events(
    State(w): St,
    Extension(who): Extension<Principal>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    require(&who, Role::Analyst, "following a contract run")?;
    Ok(view_events(w, "contract-run", |w| {
        serde_json::to_value(w.contract_run()).expect("the view serialises")
    }))
}

/// Server-Sent Events: the analysis view whenever it changes (at most ten times a second),
/// until the workload shuts down.
async fn analysis_events(
    State(w): St,
    Extension(who): Extension<Principal>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    require(&who, Role::Analyst, "following an analysis")?;
    Ok(view_events(w, "analysis", |w| {
        serde_json::to_value(w.analysis()).expect("the view serialises")
    }))
}

/// A view as Server-Sent Events named `name`: now, then whenever the workload's state changes
/// (at most ten times a second), until the workload shuts down.
fn view_events(
    w: Arc<Workload>,
    name: &'static str,
    view: fn(&Workload) -> serde_json::Value,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let changes = w.changed.subscribe();
    let shutdown = w.shutdown.clone();
    let stream = futures::stream::unfold(
        (w, changes, shutdown, true),
        move |(w, mut changes, mut shutdown, first)| async move {
            if !first {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tokio::select! {
                    changed = changes.changed() => changed.ok()?,
                    _ = shutdown.wait_for(|s| *s) => return None,
                }
            }
            changes.borrow_and_update();
            let event = Event::default()
                .event(name)
                .json_data(view(&w))
                .expect("the view serialises");
            Some((Ok(event), (w, changes, shutdown, false)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `GET /api/attestation`: the evidence a client checks before trusting this endpoint, served
/// without sign-in: the current attestation token (its `x-ms-runtime.tls.pin-sha256` is the pin
/// of the TLS key this response came over), the pin, and the platform. 503 with the reason while
/// there is no valid token. `conclave party verify-endpoint` checks it.
async fn attestation(State(w): State<Arc<Workload>>) -> Response {
    let platform = w.identity.platform();
    match w.identity.token() {
        Some(token) => Json(api::EndpointEvidence {
            party: w.config.party.clone(),
            platform: platform.map(|p| p.as_str().to_string()),
            simulated: platform == Some(conclave_tee::Platform::Sim),
            tls: [(
                crate::identity::RUNTIME_TLS_PIN.to_string(),
                w.identity.tls().pin_sha256().to_string(),
            )]
            .into(),
            token,
        })
        .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NotAttested",
            format!(
                "this workload holds no valid attestation token: {}",
                w.identity.not_attested_reason()
            ),
        )
        .into_response(),
    }
}

/// `GET /readyz`: ready once the workload is attested (it holds a valid attestation token); 503
/// with the reason otherwise (a workload without a TEE never is).
async fn readyz(State(w): State<Arc<Workload>>) -> (StatusCode, Json<Readiness>) {
    let (ready, finding) = match w.identity.token() {
        Some(_) => (true, "attested".to_string()),
        None => (false, w.identity.not_attested_reason()),
    };
    let readiness = Readiness::new(ready, [("attestation".to_string(), finding)].into());
    (
        StatusCode::from_u16(readiness.status_code()).expect("200 or 503"),
        Json(readiness),
    )
}

// --- sign-in ------------------------------------------------------------------------------------

/// Paths that answer without sign-in: health, readiness, the attestation evidence a client
/// checks before trusting this endpoint, and sign-in itself.
const PUBLIC_PATHS: [&str; 6] = [
    "/healthz",
    "/readyz",
    "/api/attestation",
    "/auth/login",
    "/auth/callback",
    "/auth/logout",
];

fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn unauthenticated(e: &AuthError, bearer_error: bool) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthenticated", e.to_string()).into_response();
    // RFC 6750 §3: the scheme, and why a token that was sent is refused.
    let challenge = if bearer_error {
        "Bearer realm=\"conclave-workload\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"conclave-workload\""
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static(challenge),
    );
    response
}

/// Middleware: every route but [`PUBLIC_PATHS`] needs a principal (a bearer access token or a
/// session cookie), put in the request's extensions for the handlers' role checks. A browser
/// asking for a page without one is sent to sign in. Requests that change something with a
/// session must come from this workload's own origin (`Origin` equal to `https://{Host}`).
async fn authenticate(
    State(w): State<Arc<Workload>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path().to_string();
    if PUBLIC_PATHS.contains(&path.as_str()) {
        return next.run(req).await;
    }
    let Some(auth) = w.auth.clone() else {
        return unauthenticated(&AuthError::NotConfigured, false);
    };
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string());
    let principal = if let Some(token) = bearer {
        match auth.bearer(&token).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(target: "conclave::access", path, "bearer token refused: {e}");
                return unauthenticated(&e, true);
            }
        }
    } else {
        let session = cookie(headers, auth.cookie_name()).map(|id| auth.session(&id));
        match session {
            Some(Ok(p)) => {
                let safe = matches!(
                    *req.method(),
                    axum::http::Method::GET | axum::http::Method::HEAD
                );
                if !safe {
                    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
                    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
                    let same =
                        matches!((origin, host), (Some(o), Some(h)) if o == format!("https://{h}"));
                    if !same {
                        return ApiError::new(
                            StatusCode::FORBIDDEN,
                            "CrossOrigin",
                            "a request that changes something must come from this workload's own page (its Origin header does not match)",
                        )
                        .into_response();
                    }
                }
                p
            }
            other => {
                let wants_page = req.method() == axum::http::Method::GET
                    && !path.starts_with("/api/")
                    && path != "/metrics";
                if wants_page {
                    let next = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "/".into());
                    return axum::response::Redirect::to(&format!(
                        "/auth/login?next={}",
                        url_encode(&next)
                    ))
                    .into_response();
                }
                let e = match other {
                    Some(Err(e)) => e,
                    _ => auth.missing(),
                };
                tracing::info!(target: "conclave::access", path, "refused: not signed in");
                return unauthenticated(&e, false);
            }
        }
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Whether a request comes from this workload's own page: `Origin` equal to `https://{Host}`.
fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    matches!((origin, host), (Some(o), Some(h)) if o == format!("https://{h}"))
}

fn cross_origin(path: &str) -> Response {
    tracing::warn!(target: "conclave::access", path, "refused: a change requested from another origin");
    ApiError::new(
        StatusCode::FORBIDDEN,
        "CrossOrigin",
        "a request that changes something must come from this workload's own page (its Origin header does not match)",
    )
    .into_response()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// `GET /auth/login`: to the party's identity provider (authorization code + PKCE).
async fn login(State(w): St, Query(q): Query<LoginQuery>) -> Response {
    let Some(auth) = w.auth.clone() else {
        return unauthenticated(&AuthError::NotConfigured, false);
    };
    match auth.login_url(q.next.as_deref().unwrap_or("/")).await {
        Ok((url, browser)) => {
            let mut response = axum::response::Redirect::to(&url).into_response();
            let cookie = format!(
                "{}={browser}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
                auth.login_cookie_name(),
                crate::auth::LOGIN_LIFETIME.as_secs()
            );
            response.headers_mut().insert(
                header::SET_COOKIE,
                axum::http::HeaderValue::from_str(&cookie).expect("cookie text is ASCII"),
            );
            response
        }
        Err(e) => ApiError::new(StatusCode::BAD_GATEWAY, "IdentityProvider", e.to_string())
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback`: the provider's answer; opens a session if it comes back to the browser
/// that started the sign-in.
async fn callback(
    State(w): St,
    headers: axum::http::HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(auth) = w.auth.clone() else {
        return unauthenticated(&AuthError::NotConfigured, false);
    };
    if let Some(error) = q.error {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "SignInRefused",
            format!(
                "the identity provider refused the sign-in: {error}{}",
                q.error_description
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        )
        .into_response();
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadCallback",
            "the sign-in answer has no code or state: start again at /auth/login",
        )
        .into_response();
    };
    let browser = cookie(&headers, &auth.login_cookie_name());
    match auth.finish_login(&code, &state, browser.as_deref()).await {
        Ok((session, who, next)) => {
            tracing::info!(target: "conclave::access", user = %who.name, sub = %who.subject, roles = %who.role_names(), "signed in");
            let cookie = format!(
                "{}={session}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
                auth.cookie_name(),
                SESSION_LIFETIME.as_secs()
            );
            let mut response = axum::response::Redirect::to(&next).into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                axum::http::HeaderValue::from_str(&cookie).expect("cookie text is ASCII"),
            );
            let done = format!(
                "{}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
                auth.login_cookie_name()
            );
            response.headers_mut().append(
                header::SET_COOKIE,
                axum::http::HeaderValue::from_str(&done).expect("cookie text is ASCII"),
            );
            response
        }
        Err(e) => {
            tracing::warn!(target: "conclave::access", "{e}");
            ApiError::new(StatusCode::UNAUTHORIZED, "SignInFailed", e.to_string()).into_response()
        }
    }
}

/// `POST /auth/logout`: ends the session (asked from this workload's own page only, so another
/// site cannot sign a user out).
async fn logout(State(w): St, headers: axum::http::HeaderMap) -> Response {
    if !same_origin(&headers) {
        return cross_origin("/auth/logout");
    }
    let mut response = Json(api::SignedOut { signed_out: true }).into_response();
    if let Some(auth) = w.auth.clone() {
        if let Some(id) = cookie(&headers, auth.cookie_name())
            && let Some(who) = auth.logout(&id)
        {
            tracing::info!(target: "conclave::access", user = %who.name, sub = %who.subject, "signed out");
        }
        let expired = format!(
            "{}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
            auth.cookie_name()
        );
        response.headers_mut().insert(
            header::SET_COOKIE,
            axum::http::HeaderValue::from_str(&expired).expect("cookie text is ASCII"),
        );
    }
    response
}

/// The workload's page and API, with health, readiness, metrics and request spans; every route
/// but the public ones behind sign-in (see [`authenticate`]).
pub fn router(w: Arc<Workload>) -> axum::Router {
    let metrics = w.metrics.clone();
    let router = axum::Router::new()
        .route("/", get(index))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/ui/world-110m.json",
            get(|| async { asset("application/json", WORLD_JSON) }),
        )
        .route("/api/status", get(status))
        .route("/api/attestation", get(attestation))
        .route("/api/keys/{company}/release", post(release))
        .route("/api/records", get(records))
        .route("/api/analysis", get(analysis_get).post(analysis_start))
        .route("/api/analysis/cancel", post(analysis_cancel))
        .route("/api/analysis/events", get(analysis_events))
        .route("/api/analysis/receipt", get(analysis_receipt))
        .route("/api/contracts", get(contracts_list))
        .route("/api/contracts/{id}/run", post(contract_run_start))
        .route("/api/contracts/run", get(contract_run_get))
        .route("/api/contracts/run/cancel", post(contract_run_cancel))
        .route("/api/contracts/run/events", get(contract_run_events))
        .route("/api/contracts/run/receipt", get(contract_run_receipt))
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "NotFound", "no such page or API")
        })
        .with_state(w.clone());
    let router = conclave_net::observe::metrics_route(router, metrics.clone())
        .layer(axum::middleware::from_fn_with_state(w, authenticate));
    conclave_net::observe::instrument(router, metrics)
}

#[cfg(test)]
mod tests {
    #[test]
    fn years_of_unix_times() {
        use super::year_of;
        assert_eq!(year_of(0), 1970);
        assert_eq!(year_of(951_782_399), 2000); // 2000-02-28T23:59:59Z
        assert_eq!(year_of(978_307_199), 2000); // 2000-12-31T23:59:59Z
        assert_eq!(year_of(978_307_200), 2001);
        assert_eq!(year_of(1_795_651_200), 2026); // 2026-11-26
        assert_eq!(year_of(4_107_542_400), 2100); // 2100-03-01
    }
}
