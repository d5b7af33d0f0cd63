//! The attestation story end to end on loopback: the real attestation service, the real sim
//! host, and the real `conclave` binary launched as the workload.

use std::path::Path;
use std::time::Duration;

use conclave_attest::api::{AttestSevSnpVmRequest, ErrorBody, report_data_for};
use conclave_attest::service::{AttestationService, ServiceConfig, serve};
use conclave_attest::{AppraisalPolicy, PlatformName, TokenVerifier};
use conclave_sim_host::{LaunchIdentity, LaunchSpec, SimHost, measure};
use conclave_snp::{TcbParts, TrustedRoots};
use conclave_tee::{Evidence, Platform};

const BIN: &str = env!("CARGO_BIN_EXE_conclave");

struct Running {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn sim_policy() -> AppraisalPolicy {
    AppraisalPolicy {
        allowed_platforms: [PlatformName::Sim, PlatformName::Snp].into(),
        allow_debug: false,
        min_tcb: None,
        check_cert_validity: true,
    }
}

async fn start_service(dir: &Path, roots: TrustedRoots, policy: AppraisalPolicy) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service = AttestationService::new(ServiceConfig {
        issuer: url.clone(),
        roots,
        policy,
        key_dir: dir.join("token-keys"),
        token_lifetime: Duration::from_secs(600),
        kds_cache: None,
    })
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, service, None, async {
        stopped.await.ok();
    }));
    Running { url, _stop: stop }
}

fn start_sim_host(dir: &Path) -> SimHost {
    let host = SimHost::open(dir).unwrap();
    let listener = host.bind().unwrap();
    let h = host.clone();
    tokio::spawn(async move { h.serve(listener, std::future::pending()).await });
    host
}

fn roots_with(host: &SimHost) -> TrustedRoots {
    let mut roots = TrustedRoots::amd();
    roots.add(host.platform().trusted_root()).unwrap();
    roots
}

/// Evidence signed by the sim platform directly, to build requests a workload could not.
fn sim_evidence(host: &SimHost, report_data: [u8; 64], debug: bool) -> Evidence {
    let identity = LaunchIdentity {
        measurement: measure(b"workload", &[], b"config"),
        host_data: conclave_sim_host::host_data(b"config"),
        policy: conclave_snp::report::GuestPolicy(0x3_0000 | if debug { 1 << 19 } else { 0 }),
        report_id: [1; 32],
    };
    Evidence {
        platform: Platform::Sim,
        report: host.platform().sign_report(&identity, report_data).unwrap(),
        cert_chain_pem: host.platform().cert_chain_pem(),
        hcl_runtime_claims: None,
        tpm_quote: None,
    }
}

async fn post(url: &str, request: &AttestSevSnpVmRequest) -> Result<String, (u16, ErrorBody)> {
    let resp = reqwest::Client::new()
        .post(format!("{url}/attest/SevSnpVm?api-version=2022-08-01"))
        .json(request)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    if status == 200 {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        Ok(v["token"].as_str().unwrap().to_string())
    } else {
        Err((status, serde_json::from_slice(&body).unwrap()))
    }
}

async fn expect_denied(url: &str, request: &AttestSevSnpVmRequest, needle: &str) {
    match post(url, request).await {
        Ok(_) => panic!("expected a denial mentioning {needle:?}, got a token"),
        Err((status, body)) => {
            assert_eq!(status, 400);
            assert!(
                body.error.message.contains(needle),
                "{:?} does not mention {needle:?}",
                body.error
            );
        }
    }
}

const RUNTIME: &[u8] = br#"{"keys":[{"kid":"TeeEncryptionKey","kty":"RSA","key_ops":["encrypt"],"n":"AQAB","e":"AQAB"}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn launched_workload_gets_a_token_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_sim_host(&dir.path().join("sim"));
    let svc = start_service(dir.path(), roots_with(&host), sim_policy()).await;
    let token_path = dir.path().join("token.jwt");

    let config = b"party = \"contoso\"\n".to_vec();
    let args: Vec<String> = [
        "tee",
        "attest",
        "--attestation-url",
        &svc.url,
        "--nonce",
        "n-42",
        "--out",
        token_path.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let mut guest = host
        .launch(&LaunchSpec {
            binary: BIN.into(),
            args: args.clone(),
            config: config.clone(),
            debug: false,
            log: None,
        })
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), guest.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "workload failed: {status}");

    let token = std::fs::read_to_string(&token_path).unwrap();
    let verifier = TokenVerifier::for_issuer(&svc.url, reqwest::Client::new());
    let verified = verifier.verify(&token).await.unwrap();
    let c = &verified.claims;
    let expected = measure(&std::fs::read(BIN).unwrap(), &args, &config);
    assert_eq!(c["x-ms-sevsnpvm-launchmeasurement"], hex::encode(expected));
    assert_eq!(
        c["x-ms-sevsnpvm-hostdata"],
        hex::encode(conclave_sim_host::host_data(&config))
    );
    assert_eq!(c["x-conclave-platform"], "sim");
    assert_eq!(c["x-ms-attestation-type"], "sevsnpvm");
    assert_eq!(c["x-ms-sevsnpvm-is-debuggable"], false);
    assert_eq!(c["nonce"], "n-42");
    assert_eq!(c["x-ms-runtime"]["keys"][0]["key_ops"][0], "encrypt");
    assert_eq!(c["iss"], svc.url.as_str());

    // The CLI's offline verifier agrees.
    let out = std::process::Command::new(BIN)
        .args([
            "attest",
            "token",
            "verify",
            &format!("@{}", token_path.display()),
            "--jwks",
        ])
        .arg(format!("{}/certs", svc.url))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("x-ms-sevsnpvm-launchmeasurement"));

    // And from a JWKS file in the shape Azure Attestation publishes: each key only as its
    // certificate (kid, kty, x5c; no n/e).
    let mut jwks: serde_json::Value = reqwest::get(format!("{}/certs", svc.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for k in jwks["keys"].as_array_mut().unwrap() {
        k.as_object_mut()
            .unwrap()
            .retain(|name, _| ["kid", "kty", "x5c"].contains(&name.as_str()));
    }
    let jwks_path = dir.path().join("maa-shaped-jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "attest",
            "token",
            "verify",
            &format!("@{}", token_path.display()),
            "--jwks",
        ])
        .arg(&jwks_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A token altered after issue does not verify.
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&conclave_attest::api::b64url_decode(&parts[1]).unwrap()).unwrap();
    claims["x-ms-sevsnpvm-launchmeasurement"] = "00".repeat(48).into();
    parts[1] = conclave_attest::api::b64url(&serde_json::to_vec(&claims).unwrap());
    let forged = parts.join(".");
    assert!(matches!(
        verifier.verify(&forged).await,
        Err(conclave_attest::TokenError::BadSignature(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_not_launched_by_the_sim_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_sim_host(&dir.path().join("sim"));
    let svc = start_service(dir.path(), roots_with(&host), sim_policy()).await;
    let out = tokio::process::Command::new(BIN)
        .args(["tee", "attest", "--attestation-url", &svc.url])
        .env("CONCLAVE_SIM_SOCKET", host.socket_path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("was not launched by this sim host"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn report_data_must_bind_the_runtime_data() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_sim_host(&dir.path().join("sim"));
    let svc = start_service(dir.path(), roots_with(&host), sim_policy()).await;
    let evidence = sim_evidence(&host, report_data_for(b"{\"keys\":[]}"), false);
    expect_denied(
        &svc.url,
        &AttestSevSnpVmRequest::new(&evidence, RUNTIME, None),
        "does not bind the runtime data",
    )
    .await;
    // The matching runtime data gets a token.
    let bound = sim_evidence(&host, report_data_for(RUNTIME), false);
    post(&svc.url, &AttestSevSnpVmRequest::new(&bound, RUNTIME, None))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_guests_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_sim_host(&dir.path().join("sim"));
    let svc = start_service(dir.path(), roots_with(&host), sim_policy()).await;
    let evidence = sim_evidence(&host, report_data_for(RUNTIME), true);
    let request = AttestSevSnpVmRequest::new(&evidence, RUNTIME, None);
    expect_denied(&svc.url, &request, "debug policy bit").await;

    let lenient = start_service(
        &dir.path().join("lenient"),
        roots_with(&host),
        AppraisalPolicy {
            allow_debug: true,
            ..sim_policy()
        },
    )
    .await;
    let token = post(&lenient.url, &request).await.unwrap();
    let claims = TokenVerifier::for_issuer(&lenient.url, reqwest::Client::new())
        .verify(&token)
        .await
        .unwrap()
        .claims;
    assert_eq!(claims["x-ms-sevsnpvm-is-debuggable"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn tcb_below_the_minimum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_sim_host(&dir.path().join("sim"));
    let min = TcbParts {
        snp: conclave_sim_host::SIM_TCB.snp + 1,
        ..conclave_sim_host::SIM_TCB
    };
    let svc = start_service(
        dir.path(),
        roots_with(&host),
        AppraisalPolicy {
            min_tcb: Some(min),
            ..sim_policy()
        },
    )
    .await;
    let evidence = sim_evidence(&host, report_data_for(RUNTIME), false);
    expect_denied(
        &svc.url,
        &AttestSevSnpVmRequest::new(&evidence, RUNTIME, None),
        "below the minimum",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn evidence_from_an_untrusted_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_sim_host(&dir.path().join("sim"));
    // A second simulated platform that the service does not trust.
    let stranger = SimHost::open(&dir.path().join("stranger")).unwrap();
    let svc = start_service(dir.path(), roots_with(&host), sim_policy()).await;
    let evidence = sim_evidence(&stranger, report_data_for(RUNTIME), false);
    expect_denied(
        &svc.url,
        &AttestSevSnpVmRequest::new(&evidence, RUNTIME, None),
        "not one of the trusted roots",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hardware_only_service_refuses_sim_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_sim_host(&dir.path().join("sim"));
    let evidence = sim_evidence(&host, report_data_for(RUNTIME), false);
    let request = AttestSevSnpVmRequest::new(&evidence, RUNTIME, None);
    // Only AMD roots: the sim root is unknown.
    let amd_only = start_service(
        dir.path(),
        TrustedRoots::amd(),
        AppraisalPolicy::production(),
    )
    .await;
    expect_denied(&amd_only.url, &request, "not one of the trusted roots").await;
    // Even with the sim root configured, a hardware-only platform policy refuses it.
    let hw_policy = start_service(
        &dir.path().join("hw"),
        roots_with(&host),
        AppraisalPolicy::production(),
    )
    .await;
    expect_denied(&hw_policy.url, &request, "platform sim is not accepted").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn genuine_amd_evidence_is_verified_and_its_binding_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let vectors =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../conclave-snp/tests/data/milan-virtee-sev");
    let read = |n: &str| std::fs::read(vectors.join(n)).unwrap();
    let vcek = conclave_pki::Cert::parse("vcek", &read("vcek.der")).unwrap();
    let chain = format!(
        "{}{}{}",
        vcek.to_pem(),
        String::from_utf8(read("ask.pem")).unwrap(),
        String::from_utf8(read("ark.pem")).unwrap()
    );
    let evidence = Evidence {
        platform: Platform::Snp,
        report: read("report.bin"),
        cert_chain_pem: chain,
        hcl_runtime_claims: None,
        tpm_quote: None,
    };
    let svc = start_service(
        dir.path(),
        TrustedRoots::amd(),
        AppraisalPolicy::production(),
    )
    .await;
    // The recorded report binds data we do not have: the chain and signature verify, and then
    // the binding check refuses it.
    expect_denied(
        &svc.url,
        &AttestSevSnpVmRequest::new(&evidence, RUNTIME, None),
        "does not bind the runtime data",
    )
    .await;
    // Tampering is caught before that.
    let mut tampered = evidence.clone();
    tampered.report[0x90] ^= 1;
    expect_denied(
        &svc.url,
        &AttestSevSnpVmRequest::new(&tampered, RUNTIME, None),
        "does not verify",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_requests_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start_service(
        dir.path(),
        TrustedRoots::amd(),
        AppraisalPolicy::production(),
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/attest/SevSnpVm?api-version=2022-08-01", svc.url);
    for (body, status, code) in [
        (b"not json".to_vec(), 400, "InvalidRequest"),
        (br#"{"report":"!!!"}"#.to_vec(), 400, "InvalidParameter"),
        (vec![b' '; 300 * 1024], 413, "RequestTooLarge"),
    ] {
        let resp = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
        let err: ErrorBody = resp.json().await.unwrap();
        assert_eq!(err.error.code, code);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_keys_stay_published_until_their_tokens_expire() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_sim_host(&dir.path().join("sim"));
    let svc = start_service(dir.path(), roots_with(&host), sim_policy()).await;
    let request = AttestSevSnpVmRequest::new(
        &sim_evidence(&host, report_data_for(RUNTIME), false),
        RUNTIME,
        None,
    );
    let old_token = post(&svc.url, &request).await.unwrap();

    let out = std::process::Command::new(BIN)
        .args(["attest", "rotate-key", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // mtime granularity: make sure the service sees a change.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let new_token = post(&svc.url, &request).await.unwrap();
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_ne!(
        kid(&old_token),
        kid(&new_token),
        "the service signs with the new key"
    );
    let verifier = TokenVerifier::for_issuer(&svc.url, reqwest::Client::new());
    verifier.verify(&old_token).await.unwrap();
    verifier.verify(&new_token).await.unwrap();
    let jwks: serde_json::Value = reqwest::get(format!("{}/certs", svc.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_verifications_all_succeed() {
    // Regression: concurrent verifications of a not-yet-cached kid used to hit the refresh rate
    // limit while the first fetch was still in flight, and fail with "unknown kid".
    let dir = tempfile::tempdir().unwrap();
    let host = start_sim_host(&dir.path().join("sim"));
    let svc = start_service(dir.path(), roots_with(&host), sim_policy()).await;
    let request = AttestSevSnpVmRequest::new(
        &sim_evidence(&host, report_data_for(RUNTIME), false),
        RUNTIME,
        None,
    );
    let token = post(&svc.url, &request).await.unwrap();
    let verifier = std::sync::Arc::new(TokenVerifier::for_issuer(&svc.url, reqwest::Client::new()));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (v, t) = (verifier.clone(), token.clone());
            tokio::spawn(async move { v.verify(&t).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// Azure's paths are case-insensitive, and Microsoft's clients spell the type `SevSnpVm`;
/// others send it in any case. A JSON number as the nonce is echoed as its exact text; other
/// JSON types are refused with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn route_case_and_nonce_types_as_azure_clients_send_them() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_sim_host(&dir.path().join("sim"));
    let svc = start_service(dir.path(), roots_with(&host), sim_policy()).await;
    let bound = sim_evidence(&host, report_data_for(RUNTIME), false);
    let body = serde_json::to_string(&AttestSevSnpVmRequest::new(&bound, RUNTIME, None)).unwrap();
    let with_nonce = |nonce: &str| format!("{},\"nonce\":{nonce}}}", &body[..body.len() - 1]);
    let client = reqwest::Client::new();
    let verifier = TokenVerifier::for_issuer(&svc.url, client.clone());
    let send = |path: &str, body: String| {
        client
            .post(format!("{}{path}?api-version=2022-08-01", svc.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (path, nonce, echoed) in [
        ("/attest/SevSnpVm", "\"n-1\"", Some("n-1")),
        ("/attest/sevsnpvm", "1234", Some("1234")),
        (
            "/attest/SEVSNPVM",
            "123456789012345678901234567890",
            Some("123456789012345678901234567890"),
        ),
        ("/attest/sevSnpVM", "-5e3", Some("-5e3")),
        ("/attest/SevSnpVm", "null", None),
    ] {
        let resp = send(path, with_nonce(nonce)).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path} {nonce}");
        let token: serde_json::Value = resp.json().await.unwrap();
        let claims = verifier
            .verify(token["token"].as_str().unwrap())
            .await
            .unwrap()
            .claims;
        match echoed {
            Some(text) => assert_eq!(claims["nonce"], text, "{nonce}"),
            None => assert!(claims.get("nonce").is_none(), "{claims}"),
        }
    }
    for nonce in ["{\"a\":1}", "[1]", "true"] {
        let resp = send("/attest/SevSnpVm", with_nonce(nonce)).await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{nonce}");
        let err: ErrorBody = resp.json().await.unwrap();
        assert_eq!(err.error.code, "InvalidRequest");
        assert!(
            err.error.message.contains("nonce must be a JSON string"),
            "{}",
            err.error.message
        );
    }
    // Another attestation type, in any case, is not served.
    let resp = send("/attest/SgxEnclave", body.clone()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let err: ErrorBody = resp.json().await.unwrap();
    assert!(
        err.error.message.contains("SgxEnclave"),
        "{}",
        err.error.message
    );
}
