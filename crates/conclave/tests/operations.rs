//! What operators see of the running services: `/readyz` with its checks, Prometheus metrics
//! (requests by route and status, release decisions by reason, attestation outcomes, audit
//! append latency), and JSON logs with a span per request.

mod common;
use common::*;

async fn text(env: &Env, url: &str) -> (u16, String) {
    let r = env.http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// The value of the first sample line that starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_and_metrics_of_the_attestation_service_and_the_vault() {
    let env = env().await;
    // Ready: the vault reaches its authority's keys; the attestation service has its key.
    let (status, body) = text(&env, &format!("{}/readyz", env.vault_url)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("signing keys"), "{body}");
    let (status, body) = text(&env, &format!("{}/readyz", env.attest_url)).await;
    assert_eq!(status, 200, "{body}");

    // One granted release, one refused for want of a grant, one refused by policy.
    let contoso = env.principal("contoso").await;
    let woodgrove = env.principal("woodgrove").await;
    contoso
        .create_key(
            "contoso-data",
            &exportable(&env.policy(&good_measurement()), false),
        )
        .await
        .unwrap();
    let tee = EphemeralKey::generate().unwrap();
    let token = env.token(&tee.runtime_json(), GOOD_CONFIG, None).await;
    let release = |target: String| ReleaseRequest {
        target,
        nonce: None,
        enc: None,
    };
    contoso
        .release("contoso-data", &release(token.clone()))
        .await
        .unwrap();
    woodgrove
        .release("contoso-data", &release(token.clone()))
        .await
        .unwrap_err();
    let tampered = env.token(&tee.runtime_json(), b"k = 1\n", None).await;
    contoso
        .release("contoso-data", &release(tampered))
        .await
        .unwrap_err();

    let (status, vault) = text(&env, &format!("{}/metrics", env.vault_url)).await;
    assert_eq!(status, 200);
    let releases = |labels: &str| {
        sample(
            &vault,
            &format!("conclave_vault_key_releases_total{{service=\"vault\",{labels}}}"),
        )
    };
    assert_eq!(
        releases(r#"outcome="granted",reason="""#),
        Some(1.0),
        "{vault}"
    );
    assert_eq!(
        releases(r#"outcome="denied",reason="no_grant""#),
        Some(1.0),
        "{vault}"
    );
    assert_eq!(
        releases(r#"outcome="denied",reason="policy_not_satisfied""#),
        Some(1.0),
        "{vault}"
    );
    assert!(
        sample(
            &vault,
            r#"conclave_http_requests_total{service="vault",method="POST",route="/keys/{name}/release",status="403"}"#
        ) == Some(2.0),
        "{vault}"
    );
    // Every refusal and the grant went through the audit log: at least three durable appends.
    assert!(
        sample(
            &vault,
            r#"conclave_vault_audit_append_seconds_count{service="vault"}"#
        )
        .is_some_and(|n| n >= 3.0),
        "{vault}"
    );
    assert!(
        !vault.contains("contoso-data"),
        "a key name is a label: {vault}"
    );

    let (_, attest) = text(&env, &format!("{}/metrics", env.attest_url)).await;
    assert!(
        sample(
            &attest,
            r#"conclave_attestations_total{service="attestation",outcome="issued",platform="sim"}"#
        )
        .is_some_and(|n| n >= 2.0),
        "{attest}"
    );
    let garbage = env
        .http
        .post(format!(
            "{}/attest/SevSnpVm?api-version=2022-08-01",
            env.attest_url
        ))
        .json(&serde_json::json!({"report": "not base64url evidence"}))
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 400);
    let (_, attest) = text(&env, &format!("{}/metrics", env.attest_url)).await;
    assert!(
        sample(
            &attest,
            r#"conclave_attestations_total{service="attestation",outcome="InvalidParameter",platform="unverified"}"#
        ) == Some(1.0),
        "{attest}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_whose_authority_is_unreachable_is_not_ready_and_says_why() {
    let env = env().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://{}", l.local_addr().unwrap())
    };
    let (url, _stop) = start_vault(
        &env.dir.join("lonely-vault"),
        &env.ca,
        &env.http,
        vec![dead.clone()],
        false,
    )
    .await;
    let (status, body) = text(&env, &format!("{url}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "not ready");
    assert_eq!(v["checks"]["store"], "ok");
    let why = v["checks"][format!("authority {dead}")].as_str().unwrap();
    assert!(why.contains("cannot fetch"), "{why}");
    // Healthy (the process answers) though not ready.
    assert_eq!(text(&env, &format!("{url}/healthz")).await.0, 200);
}
