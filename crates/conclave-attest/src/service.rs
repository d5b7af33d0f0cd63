//! The HTTP service: `POST /attest/SevSnpVm`, `GET /.well-known/openid-configuration`,
//! `GET /certs`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use conclave_snp::TrustedRoots;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;
use tower_http::timeout::TimeoutLayer;

use crate::api::{AttestSevSnpVmRequest, ErrorBody, ErrorDetail, TokenResponse};
use crate::appraisal::{AppraisalError, AppraisalPolicy};
use crate::claims::token_claims;
use crate::jws;
use crate::keys::{KeyError, KeyRing};
use conclave_protocol::health::Readiness;
use conclave_protocol::jwk::{JwkSet, OpenIdConfiguration};

/// Largest request body accepted (an SNP report with its chain is about 8 KiB).
pub const MAX_BODY: usize = 256 * 1024;
/// Longest time one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Configuration of one attestation service.
pub struct ServiceConfig {
    /// The `iss` of every token, and the base of `jku` and `jwks_uri` (e.g. `http://127.0.0.1:8400`).
    pub issuer: String,
    pub roots: TrustedRoots,
    pub policy: AppraisalPolicy,
    pub key_dir: PathBuf,
    pub token_lifetime: Duration,
    /// AMD KDS responses on disk: VCEKs for evidence that carries none, and CRLs checked for
    /// every report of their product.
    pub kds_cache: Option<conclave_snp::kds::KdsCache>,
}

/// The running service's state.
pub struct AttestationService {
    config: ServiceConfig,
    keys: RwLock<KeyRing>,
    keys_mtime: RwLock<Option<SystemTime>>,
    metrics: Arc<conclave_net::observe::Metrics>,
    /// `conclave_attestations_total{outcome, platform}`: `issued` with the verified platform, or
    /// the refusal's error code with platform `unverified`.
    attestations: Family<AttestationLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttestationLabels {
    outcome: &'static str,
    platform: &'static str,
}

impl AttestationService {
    pub fn new(mut config: ServiceConfig) -> Result<Arc<Self>, KeyError> {
        config.issuer = config.issuer.trim_end_matches('/').to_string();
        let keys = KeyRing::open(&config.key_dir)?;
        let metrics = conclave_net::observe::Metrics::new("attestation");
        let attestations = Family::<AttestationLabels, Counter>::default();
        metrics.register(
            "attestations",
            "Attestation requests appraised, by outcome (issued, or the refusal's error code) and claimed platform",
            attestations.clone(),
        );
        Ok(Arc::new(AttestationService {
            metrics,
            attestations,
            keys_mtime: RwLock::new(KeyRing::state_mtime(&config.key_dir)),
            keys: RwLock::new(keys),
            config,
        }))
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Picks up a rotation done by `conclave attest rotate-key` while the service runs.
    fn reload_keys_if_rotated(&self) {
        let current = KeyRing::state_mtime(&self.config.key_dir);
        if *self.keys_mtime.read().expect("mtime lock") == current {
            return;
        }
        match KeyRing::open(&self.config.key_dir) {
            Ok(ring) => {
                tracing::info!(kid = %ring.active().kid, "token signing key rotated");
                *self.keys.write().expect("key lock") = ring;
                *self.keys_mtime.write().expect("mtime lock") = current;
            }
            Err(e) => tracing::error!("token key store changed but cannot be loaded: {e}"),
        }
    }

    /// Issues a token for verified claims.
    pub fn issue_token(
        &self,
        mut claims: serde_json::Map<String, Value>,
    ) -> Result<String, ApiError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut jti = [0u8; 32];
        SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| ApiError::internal("no randomness"))?;
        claims.insert("iss".into(), self.config.issuer.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert(
            "exp".into(),
            (now + self.config.token_lifetime.as_secs()).into(),
        );
        claims.insert("jti".into(), hex::encode(jti).into());
        let keys = self.keys.read().expect("key lock");
        let key = keys.active();
        let mut header = serde_json::Map::new();
        header.insert("typ".into(), "JWT".into());
        header.insert("kid".into(), key.kid.clone().into());
        header.insert("jku".into(), format!("{}/certs", self.config.issuer).into());
        jws::sign_rs256(header, &Value::Object(claims), &key.key)
            .map_err(|_| ApiError::internal("token signing failed"))
    }

    pub fn jwks(&self) -> JwkSet {
        self.keys
            .read()
            .expect("key lock")
            .jwks(self.config.token_lifetime)
    }
}

/// An error answered as `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn internal(message: &str) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalError",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<AppraisalError> for ApiError {
    fn from(e: AppraisalError) -> Self {
        let code = match &e {
            AppraisalError::Malformed(_) => "InvalidParameter",
            AppraisalError::Evidence(_) | AppraisalError::Quote(_) => "InvalidEvidence",
            AppraisalError::RuntimeDataNotBound | AppraisalError::HclNotBound(_) => {
                "RuntimeDataNotBound"
            }
            _ => "PolicyEvaluationFailed",
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: e.to_string(),
        }
    }
}

#[utoipa::path(
    post, path = "/attest/SevSnpVm", tag = "attestation",
    params(("api-version" = Option<String>, Query, description = "Azure Attestation's API version (2022-08-01); accepted and ignored")),
    request_body = crate::api::AttestSevSnpVmRequest,
    responses((status = 200, description = "An RS256 attestation token (JWT) with MAA's claim names", body = crate::api::TokenResponse), (status = 400, description = "Malformed request, or evidence that does not verify or satisfy the appraisal policy (the code and message say which)", body = crate::api::ErrorBody),
        (status = 413, description = "Request too large", body = crate::api::ErrorBody))
)]
async fn attest_sev_snp_vm(
    State(service): State<Arc<AttestationService>>,
    axum::extract::Path(kind): axum::extract::Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenResponse>, ApiError> {
    // Azure's paths are case-insensitive: Microsoft's clients send /attest/SevSnpVm, others
    // /attest/sevsnpvm or /attest/SEVSNPVM. Only this one attestation type is served.
    if !kind.eq_ignore_ascii_case("SevSnpVm") {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "NotFound",
            message: format!(
                "attestation type {:?} is not served here: only POST /attest/SevSnpVm (AMD SEV-SNP)",
                kind.chars().take(64).collect::<String>()
            ),
        });
    }
    let body = body.map_err(|rejection| ApiError {
        status: rejection.status(),
        code: if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "RequestTooLarge"
        } else {
            "InvalidRequest"
        },
        message: format!("{rejection} (limit {MAX_BODY} bytes)"),
    })?;
    let request: AttestSevSnpVmRequest = serde_json::from_slice(&body).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "InvalidRequest",
        message: format!("the body is not an attestation request: {e}"),
    })?;
    service.reload_keys_if_rotated();
    let appraisal = match crate::appraisal::appraise_with_kds(
        &request,
        &service.config.roots,
        &service.config.policy,
        service.config.kds_cache.as_ref(),
    ) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("attestation denied: {e}");
            let e = ApiError::from(e);
            service
                .attestations
                .get_or_create(&AttestationLabels {
                    outcome: e.code,
                    platform: "unverified",
                })
                .inc();
            return Err(e);
        }
    };
    service
        .attestations
        .get_or_create(&AttestationLabels {
            outcome: "issued",
            platform: appraisal.platform.as_str(),
        })
        .inc();
    tracing::info!(
        platform = appraisal.platform.as_str(),
        measurement = %hex::encode(appraisal.report.report().measurement),
        "attestation token issued"
    );
    let token = service.issue_token(token_claims(&appraisal))?;
    Ok(Json(TokenResponse { token }))
}

#[utoipa::path(
    get, path = "/.well-known/openid-configuration", tag = "keys",
    responses((status = 200, description = "OpenID provider metadata: issuer, jwks_uri, claims", body = OpenIdConfiguration))
)]
async fn openid_configuration(
    State(service): State<Arc<AttestationService>>,
) -> Json<OpenIdConfiguration> {
    let issuer = service.issuer();
    let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    Json(OpenIdConfiguration {
        issuer: issuer.to_string(),
        jwks_uri: format!("{issuer}/certs"),
        response_types_supported: strings(&["token", "none"]),
        id_token_signing_alg_values_supported: strings(&["RS256"]),
        revocation_endpoint: Some(format!("{issuer}/revocations")),
        claims_supported: strings(&[
            "iss",
            "iat",
            "nbf",
            "exp",
            "jti",
            "nonce",
            "x-ms-ver",
            "x-ms-attestation-type",
            "x-ms-compliance-status",
            "x-ms-runtime",
            "x-ms-isolation-tee",
            "x-ms-sevsnpvm-launchmeasurement",
            "x-ms-sevsnpvm-hostdata",
            "x-ms-sevsnpvm-is-debuggable",
            "x-ms-sevsnpvm-guestsvn",
            "x-ms-sevsnpvm-reportdata",
            "x-ms-sevsnpvm-chipid",
            "x-ms-sevsnpvm-vmpl",
            "x-ms-sevsnpvm-bootloader-svn",
            "x-ms-sevsnpvm-tee-svn",
            "x-ms-sevsnpvm-snpfw-svn",
            "x-ms-sevsnpvm-microcode-svn",
            crate::claims::PLATFORM_CLAIM,
        ]),
        other: Default::default(),
    })
}

#[utoipa::path(
    get, path = "/certs", tag = "keys",
    responses((status = 200, description = "The token signing keys (JWKS, RSA keys with x5c)", body = JwkSet))
)]
async fn certs(State(service): State<Arc<AttestationService>>) -> Json<JwkSet> {
    service.reload_keys_if_rotated();
    Json(service.jwks())
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "NotFound",
        message: "no such endpoint: try POST /attest/SevSnpVm, GET /certs or GET /.well-known/openid-configuration"
            .into(),
    }
}

/// `GET /readyz`: ready when the token signing key is loaded and at least one root of trust is
/// configured (both are at construction; the check says which key and how many roots).
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready, with each check", body = Readiness), (status = 503, description = "Not ready", body = Readiness))
)]
async fn readyz(State(service): State<Arc<AttestationService>>) -> (StatusCode, Json<Readiness>) {
    service.reload_keys_if_rotated();
    let kid = service
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .active()
        .kid
        .clone();
    let roots = service.config.roots.len();
    let ready = !service.config.roots.is_empty();
    let checks = [
        ("signing_key".to_string(), format!("loaded ({kid})")),
        (
            "trusted_roots".to_string(),
            if ready {
                format!("{roots} loaded")
            } else {
                "none configured".into()
            },
        ),
    ];
    let readiness = Readiness::new(ready, checks.into_iter().collect());
    (
        StatusCode::from_u16(readiness.status_code()).expect("200 or 503"),
        Json(readiness),
    )
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// The OpenAPI 3.1 description of the attestation service's HTTP API, generated from its
/// handlers and wire types (`conclave attest openapi` prints it).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Conclave attestation service",
        description = "Microsoft Azure Attestation's SEV-SNP attestation API shape: evidence in, RS256 token out; OpenID metadata and JWKS."
    ),
    paths(attest_sev_snp_vm, openid_configuration, certs, healthz, readyz),
    components(schemas(crate::api::SnpEvidence, crate::api::ErrorBody))
)]
pub struct AttestationApi;

/// The service's routes with body limit and timeout, metrics and request spans.
pub fn router(service: Arc<AttestationService>) -> axum::Router {
    let metrics = service.metrics.clone();
    let router = axum::Router::new()
        .route("/attest/{kind}", post(attest_sev_snp_vm))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/certs", get(certs))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(service);
    conclave_net::observe::observe(router, metrics)
}

/// Serves on a bound listener (TLS when `tls` is given) until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<AttestationService>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    conclave_net::serve(listener, router(service), tls, shutdown).await
}
