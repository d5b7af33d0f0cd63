//! What every Conclave service exposes for operations: Prometheus metrics at `GET /metrics`
//! (OpenMetrics text format 1.0.0, through the Prometheus project's `prometheus-client`), and one
//! tracing span per request (tower-http's trace layer) naming the method, the route template and
//! a request id.
//!
//! Metric names start with `conclave_`; every series carries `service` (`attestation`, `vault`,
//! `workload`). Labels are bounded: routes are templates (`/keys/{name}/release`, never a key
//! name), refusal reasons are codes. Nothing in them is secret; a service may still put `/metrics` behind its sign-in (the party
//! workloads do: [`metrics_route`] then their layer, then [`instrument`]).

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// The content type of `GET /metrics` (OpenMetrics 1.0.0 text format).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A histogram family with Conclave's latency buckets.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets in seconds: 0.25 ms to about 8 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// One service's metrics registry, with the HTTP request metrics every service has.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<RouteLabels>,
}

impl Metrics {
    /// A registry whose series carry `service=<service>`, with `conclave_http_requests_total`
    /// (by method, route and status) and `conclave_http_request_duration_seconds` (by method and
    /// route) registered.
    pub fn new(service: &'static str) -> Arc<Self> {
        let mut registry = Registry::with_prefix_and_labels(
            "conclave",
            [(Cow::Borrowed("service"), Cow::Borrowed(service))].into_iter(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = HistogramFamily::<RouteLabels>::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response, by method and route template",
            durations.clone(),
        );
        Arc::new(Metrics {
            registry: Mutex::new(registry),
            requests,
            durations,
        })
    }

    /// Registers a service's own metric (`conclave_<name>`; counters get `_total`).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, metric);
    }

    /// The OpenMetrics text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    fn record(&self, method: &'static str, route: &str, status: StatusCode, started: Instant) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_string(),
                status: status.as_u16(),
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels {
                method,
                route: route.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The request's method as a bounded label: a client may send any method token, and each new
/// one must not add a series.
fn method_of(req: &Request) -> &'static str {
    use axum::http::Method;
    match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route template of a request (`/keys/{name}/release`), or `unmatched` for requests that
/// no route matched (so that arbitrary paths cannot grow the label set).
fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into())
}

async fn record_request(metrics: Arc<Metrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_of(&req);
    let route = route_of(&req);
    let response = next.run(req).await;
    metrics.record(method, &route, response.status(), started);
    response
}

/// Adds to `router`: `GET /metrics`, Azure's error body on every error that is not already JSON
/// ([`crate::azure_error_bodies`]), request metrics for every route, and a tracing span per
/// request (`request` with `method`, `route` and a `request_id`; the query string and body are
/// never logged). Call it last, after the service's own routes and layers.
pub fn observe(router: axum::Router, metrics: Arc<Metrics>) -> axum::Router {
    instrument(metrics_route(router, metrics.clone()), metrics)
}

/// The first half of [`observe`]: adds `GET /metrics` only, so a service can put its own layer
/// (authentication, say) around it and its other routes before [`instrument`] wraps them all.
pub fn metrics_route(router: axum::Router, metrics: Arc<Metrics>) -> axum::Router {
    let exposition = metrics;
    router.route(
        "/metrics",
        axum::routing::get(move || {
            let body = exposition.encode();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
                    )],
                    body,
                )
                    .into_response()
            }
        }),
    )
}

/// The second half of [`observe`]: Azure's error bodies, request metrics and a request span
/// around every route of `router`.
pub fn instrument(router: axum::Router, metrics: Arc<Metrics>) -> axum::Router {
    let recorder = metrics;
    router
        // Every error in Azure's `{"error": {"code", "message"}}` shape, `/metrics` included.
        .layer(axum::middleware::from_fn(crate::azure_error_bodies))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| record_request(recorder.clone(), req, next),
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &Request| {
                static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info_span!(
                    "request",
                    method = method_of(req),
                    route = %route_of(req),
                    request_id = id,
                )
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String) {
        let response = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_status() {
        let metrics = Metrics::new("test");
        let extra = Counter::<u64>::default();
        metrics.register("widgets", "Widgets made", extra.clone());
        let app = observe(
            axum::Router::new().route("/keys/{name}", axum::routing::get(|| async { "ok" })),
            metrics.clone(),
        );
        get(&app, "/keys/contoso-data").await;
        get(&app, "/keys/fabrikam-data").await;
        get(&app, "/no/such/route").await;
        // Methods a client makes up share one label.
        for made_up in ["BREW", "WHEN"] {
            app.clone()
                .oneshot(
                    Request::builder()
                        .method(made_up)
                        .uri("/keys/x")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
        }
        extra.inc();
        let (status, body) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains(
                r#"conclave_http_requests_total{service="test",method="GET",route="/keys/{name}",status="200"} 2"#
            ),
            "{body}"
        );
        assert!(
            body.contains(r#"route="unmatched",status="404"} 1"#),
            "{body}"
        );
        assert!(
            !body.contains("contoso-data"),
            "a key name became a label: {body}"
        );
        assert!(
            !body.contains("BREW"),
            "a made-up method became a label: {body}"
        );
        assert!(
            body.contains(r#"method="other",route="/keys/{name}",status="405"} 2"#),
            "{body}"
        );
        assert!(
            body.contains(r#"conclave_widgets_total{service="test"} 1"#),
            "{body}"
        );
        assert!(
            body.contains("conclave_http_request_duration_seconds_bucket"),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}

#[cfg(test)]
mod error_body_tests {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use tower::ServiceExt as _;

    async fn call(app: &axum::Router, req: Request) -> (StatusCode, serde_json::Value) {
        let response = app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            let allow = response.headers()["allow"].to_str().unwrap();
            assert!(allow.contains("GET"), "{allow}");
        }
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn errors_that_are_not_json_get_azures_error_body() {
        #[derive(serde::Deserialize)]
        struct Q {
            #[allow(dead_code)]
            limit: u32,
        }
        let app = axum::Router::new()
            .route(
                "/audit",
                axum::routing::get(|_: axum::extract::Query<Q>| async { "ok" }),
            )
            .route(
                "/teapot",
                axum::routing::get(|| async { StatusCode::IM_A_TEAPOT }),
            )
            .layer(axum::middleware::from_fn(crate::azure_error_bodies));
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let (status, body) = call(&app, get("/audit?limit=-1")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "BadParameter");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("limit"),
            "{body}"
        );
        let (status, body) =
            call(&app, Request::delete("/audit").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"]["code"], "MethodNotAllowed");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("does not take that method"),
            "{body}"
        );
        let (status, body) = call(&app, get("/teapot")).await;
        assert_eq!(status, StatusCode::IM_A_TEAPOT);
        assert_eq!(body["error"]["message"], "I'm a teapot");
    }
}
