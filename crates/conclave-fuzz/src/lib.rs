//! The fuzz targets: one per parser of untrusted bytes, each with seeds made by the real code.

use std::time::Duration;

use conclave_attest::api::{AttestSevSnpVmRequest, report_data_for};
use conclave_attest::service::{AttestationService, ServiceConfig};
use conclave_attest::verify::TokenVerifier;
use conclave_attest::{AppraisalPolicy, PlatformName};
use conclave_kms::api::{CreateKeyRequest, GrantRequest, ReleaseRequest, UpdateKeyRequest};
use conclave_kms::policy::ReleasePolicy;
use conclave_snp::report::AttestationReport;
use conclave_snp::{Cert, CertChain, TrustedRoots, verify_report};
use conclave_tee::sim::{LaunchIdentity, SimHost, host_data, measure};
use conclave_tee::{Evidence, Platform};
use serde_json::json;

use crate::Target;

pub const NAMES: [&str; 7] = [
    "snp-report",
    "cert-chain",
    "jwt",
    "release-policy",
    "key-material",
    "vault-bodies",
    "attest-request",
];

const MILAN_REPORT: &[u8] =
    include_bytes!("../../conclave-snp/tests/data/milan-virtee-sev/report.bin");
const MILAN_ARK: &[u8] = include_bytes!("../../conclave-snp/tests/data/milan-virtee-sev/ark.pem");
const MILAN_ASK: &[u8] = include_bytes!("../../conclave-snp/tests/data/milan-virtee-sev/ask.pem");
const MILAN_VCEK: &[u8] = include_bytes!("../../conclave-snp/tests/data/milan-virtee-sev/vcek.der");

const ISSUER: &str = "https://attest.example";

/// A simulated platform and an attestation service in a temporary directory (kept alive by the
/// returned guard), for seeds made by the real code.
struct Fixture {
    _dir: tempfile::TempDir,
    sim: SimHost,
    service: std::sync::Arc<AttestationService>,
}

fn fixture() -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let sim = SimHost::open(&dir.path().join("sim"))?;
    let mut roots = TrustedRoots::amd();
    roots.add(sim.platform().trusted_root())?;
    let service = AttestationService::new(ServiceConfig {
        issuer: ISSUER.into(),
        roots,
        policy: AppraisalPolicy {
            allowed_platforms: [PlatformName::Sim, PlatformName::Snp].into(),
            allow_debug: false,
            min_tcb: None,
            check_cert_validity: true,
        },
        key_dir: dir.path().join("keys"),
        token_lifetime: Duration::from_secs(600),
    })?;
    Ok(Fixture {
        _dir: dir,
        sim,
        service,
    })
}

fn sim_request(f: &Fixture, runtime: &[u8]) -> anyhow::Result<Vec<u8>> {
    let identity = LaunchIdentity {
        measurement: measure(b"workload", &[], b"party = \"fuzz\"\n"),
        host_data: host_data(b"party = \"fuzz\"\n"),
        policy: conclave_snp::report::GuestPolicy(conclave_tee::sim::POLICY_DEFAULT),
        report_id: [5; 32],
    };
    let evidence = Evidence {
        platform: Platform::Sim,
        report: f
            .sim
            .platform()
            .sign_report(&identity, report_data_for(runtime))?,
        cert_chain_pem: f.sim.platform().cert_chain_pem(),
        hcl_runtime_claims: None,
    };
    Ok(serde_json::to_vec(&AttestSevSnpVmRequest::new(
        &evidence,
        runtime,
        Some("n-1".into()),
    ))?)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

pub fn make(name: &str) -> anyhow::Result<Target> {
    Ok(match name {
        "snp-report" => Target {
            name: "snp-report",
            seeds: vec![MILAN_REPORT.to_vec()],
            run: Box::new(|input| {
                if let Ok(r) = AttestationReport::parse(input) {
                    // What parses serialises back to something that parses to the same report.
                    let again = AttestationReport::parse(&r.to_bytes()).expect("round trip");
                    assert_eq!(again, r);
                }
            }),
        },
        "cert-chain" => {
            let vcek = Cert::parse("VCEK", MILAN_VCEK)?;
            let bundle = [MILAN_ARK, MILAN_ASK, vcek.to_pem().as_bytes()].concat();
            let roots = TrustedRoots::amd();
            Target {
                name: "cert-chain",
                seeds: vec![bundle, MILAN_VCEK.to_vec()],
                run: Box::new(move |input| {
                    let _ = Cert::parse("fuzz", input);
                    if let Ok(certs) = Cert::parse_pem_bundle("fuzz", input)
                        && let Ok(chain) = CertChain::from_certs(certs)
                    {
                        let _ = verify_report(MILAN_REPORT, &chain, &roots, None);
                    }
                }),
            }
        }
        "jwt" => {
            let f = fixture()?;
            let rt = runtime();
            let mut claims = serde_json::Map::new();
            claims.insert("x-ms-attestation-type".into(), "sevsnpvm".into());
            claims.insert(
                "x-ms-runtime".into(),
                json!({"keys": [{"kid": "TeeSigningKey", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}),
            );
            let token = f
                .service
                .issue_token(claims)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let jwks = serde_json::from_value(f.service.jwks())?;
            let verifier = TokenVerifier::with_jwks(Some(ISSUER.into()), &jwks);
            let receipt_seed = format!(
                "eyJhbGciOiJFUzI1NiIsImtpZCI6IlRlZVNpZ25pbmdLZXkifQ.{}.AAAA",
                conclave_attest::api::b64url(
                    json!({"typ": "conclave-analysis-receipt/v1", "iat": 1, "attestation": token})
                        .to_string()
                        .as_bytes()
                )
            );
            Target {
                name: "jwt",
                seeds: vec![token.into_bytes(), receipt_seed.into_bytes()],
                run: Box::new(move |input| {
                    let Ok(text) = std::str::from_utf8(input) else {
                        return;
                    };
                    let _ = conclave_workload::identity::unverified_claims(text);
                    rt.block_on(async {
                        let _ = verifier.verify(text).await;
                        let _ = conclave_workload::receipt::verify(text, &verifier).await;
                    });
                }),
            }
        }
        "release-policy" => {
            let claims = json!({
                "x-ms-attestation-type": "sevsnpvm",
                "x-ms-sevsnpvm-is-debuggable": false,
                "x-ms-sevsnpvm-guestsvn": 3,
                "x-ms-sevsnpvm-launchmeasurement": "ab".repeat(48),
                "x-ms-isolation-tee": {"x-ms-compliance-status": "azure-compliant-cvm"},
                "x-ms-runtime": {"keys": [{"kid": "k"}]},
            });
            let seeds = vec![
                json!({"version": "1.0.0", "anyOf": [{"authority": ISSUER, "allOf": [
                    {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
                    {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
                    {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": "ab".repeat(48)}]}]}),
                json!({"version": "1.0", "anyOf": [{"authority": ISSUER, "anyOf": [
                    {"claim": "x-ms-sevsnpvm-guestsvn", "greaterOrEquals": 2},
                    {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "notEquals": "x"},
                    {"claim": "x-ms-runtime.keys", "exists": true},
                    {"claim": "x-ms-sevsnpvm-guestsvn", "less": 9}]}]}),
            ]
            .into_iter()
            .map(|v| v.to_string().into_bytes())
            .collect();
            Target {
                name: "release-policy",
                seeds,
                run: Box::new(move |input| {
                    if let Ok(p) = ReleasePolicy::parse(input) {
                        let _ = p.evaluate(ISSUER, &claims);
                    }
                }),
            }
        }
        "key-material" => Target {
            name: "key-material",
            seeds: vec![
                json!({"keyMaterialType": "PKMT1", "internalStorage": true, "isFooterKey": true,
                    "kmsInstanceID": "conclave", "kmsInstanceURL": "https://v:1",
                    "masterKeyID": "https://v:1/keys/a/0123", "wrappedDEK": "AAAA",
                    "doubleWrapping": false})
                .to_string()
                .into_bytes(),
            ],
            run: Box::new(|input| {
                let _ = conclave_data::dataset::KeyMaterial::parse(input);
            }),
        },
        "vault-bodies" => {
            let policy = conclave_attest::api::b64url(br#"{"version":"1.0.0","anyOf":[]}"#);
            let seeds = vec![
                json!({"kty": "RSA-HSM", "key_size": 2048, "attributes": {"exportable": true},
                    "release_policy": {"contentType": "application/json", "data": policy, "immutable": true},
                    "tags": {"a": "b"}}),
                json!({"target": "eyJ.eyJ.sig", "nonce": "n", "enc": "CKM_RSA_AES_KEY_WRAP"}),
                json!({"attributes": {"enabled": false, "exp": 1}, "key_ops": ["wrapKey"]}),
                json!({"permissions": ["get", "release"]}),
            ]
            .into_iter()
            .map(|v| v.to_string().into_bytes())
            .collect();
            Target {
                name: "vault-bodies",
                seeds,
                run: Box::new(|input| {
                    use conclave_kms::service::parse_json_body;
                    if let Ok(r) = parse_json_body::<CreateKeyRequest>(input)
                        && let Some(data) = r.release_policy.and_then(|p| p.data)
                        && let Ok(bytes) = conclave_attest::api::b64url_decode(&data)
                    {
                        let _ = ReleasePolicy::parse(&bytes);
                    }
                    let _ = parse_json_body::<ReleaseRequest>(input);
                    let _ = parse_json_body::<UpdateKeyRequest>(input);
                    let _ = parse_json_body::<GrantRequest>(input);
                }),
            }
        }
        "attest-request" => {
            let f = fixture()?;
            let seed = sim_request(&f, br#"{"keys":[]}"#)?;
            let rt = runtime();
            let router = conclave_attest::service::router(f.service.clone());
            Target {
                name: "attest-request",
                seeds: vec![seed],
                run: Box::new(move |input| {
                    let _keep = &f;
                    let request =
                        axum::http::Request::post("/attest/SevSnpVm?api-version=2022-08-01")
                            .header("content-type", "application/json")
                            .body(axum::body::Body::from(input.to_vec()))
                            .expect("a request");
                    let status = rt.block_on(async {
                        use tower::Service as _;
                        router
                            .clone()
                            .call(request)
                            .await
                            .expect("infallible")
                            .status()
                    });
                    assert!(
                        !status.is_server_error(),
                        "a malformed request got {status}"
                    );
                }),
            }
        }
        other => anyhow::bail!("unknown target {other}"),
    })
}
