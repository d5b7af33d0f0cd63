//! The fuzz targets of every parser that takes untrusted bytes: one harness per target, and the
//! seeds each starts from (made by the real code, or real AMD evidence).
//!
//! The harnesses are driven by libFuzzer through `cargo fuzz` (the crate `fuzz/` at the
//! repository root, one binary per target; `scripts/fuzz` runs them all), and replayed over the
//! committed corpus and every saved crash by this crate's tests on the stable toolchain, so a bug
//! found once stays fixed. A harness must not panic on any input; a panic (or a 5xx from a
//! service router) is a crash.
//!
//! Targets: `snp-report`, `cert-chain`, `hcl-report`, `jwt`, `release-policy`,
//! `release-policy-structured` (structure-aware, `arbitrary`), `key-material`,
//! `file-crypto-metadata`, `parquet-file`, `vault-bodies`, `attest-request`.

#![forbid(unsafe_code)]

mod parquet_target;
mod structured;

use std::time::Duration;

use conclave_attest::PlatformName;
use conclave_attest::api::{AttestSevSnpVmRequest, report_data_for};
use conclave_attest::service::AttestationService;
use conclave_attest::verify::TokenVerifier;
use conclave_kms::api::{CreateKeyRequest, GrantRequest, ReleaseRequest, UpdateKeyRequest};
use conclave_kms::policy::ReleasePolicy;
use conclave_sim_host::{LaunchIdentity, SimHost, host_data, measure};
use conclave_snp::report::AttestationReport;
use conclave_snp::{Cert, CertChain, TrustedRoots, verify_report};
use conclave_tee::{Evidence, Platform};
use serde_json::json;

/// The code under test for one target: called with each input; must not panic.
pub type Harness = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Every target, in the order `scripts/fuzz` runs them.
pub const TARGETS: [&str; 11] = [
    "snp-report",
    "cert-chain",
    "hcl-report",
    "jwt",
    "release-policy",
    "release-policy-structured",
    "key-material",
    "file-crypto-metadata",
    "parquet-file",
    "vault-bodies",
    "attest-request",
];

const MILAN_REPORT: &[u8] =
    include_bytes!("../../conclave-snp/tests/data/milan-virtee-sev/report.bin");
const MILAN_ARK: &[u8] = include_bytes!("../../conclave-snp/tests/data/milan-virtee-sev/ark.pem");
const MILAN_ASK: &[u8] = include_bytes!("../../conclave-snp/tests/data/milan-virtee-sev/ask.pem");
const MILAN_VCEK: &[u8] = include_bytes!("../../conclave-snp/tests/data/milan-virtee-sev/vcek.der");
const MILAN_ASVK: &[u8] =
    include_bytes!("../../conclave-snp/tests/data/milan-trustee-vlek/asvk.pem");
const MILAN_VLEK: &[u8] =
    include_bytes!("../../conclave-snp/tests/data/milan-trustee-vlek/vlek.der");

const ISSUER: &str = "https://attest.example";

/// The runtime claims an Azure paravisor publishes in its HCL report (shape of Azure's
/// `vm-configuration` and `keys`; values made up).
const HCL_CLAIMS: &[u8] = br#"{"keys":[{"kid":"HCLAkPub","kty":"RSA","e":"AQAB","n":"sw"}],"vm-configuration":{"console-enabled":true,"secure-boot":true,"tpm-enabled":true,"vmUniqueId":"6D1A2C0F-3E5B-4A9C-9E1D-0B7F2A4C8E11"},"user-data":"00"}"#;

/// A simulated platform and an attestation service in a temporary directory.
struct Fixture {
    _dir: tempfile::TempDir,
    sim: SimHost,
    service: std::sync::Arc<AttestationService>,
}

fn fixture() -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let sim = SimHost::open(&dir.path().join("sim"))?;
    let service = AttestationService::new(conclave_deploy::attestation_config(
        ISSUER,
        Some(&sim),
        conclave_deploy::policy_for(&[PlatformName::Sim, PlatformName::Snp]),
        &dir.path().join("keys"),
        Duration::from_secs(600),
    )?)?;
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
        tpm_quote: None,
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

fn json_seeds(values: Vec<serde_json::Value>) -> Vec<Vec<u8>> {
    values
        .into_iter()
        .map(|v| v.to_string().into_bytes())
        .collect()
}

/// An attestation token and a receipt-shaped JWS, signed by a fresh attestation service.
fn jwt_seeds(f: &Fixture) -> anyhow::Result<Vec<Vec<u8>>> {
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
    let receipt = format!(
        "eyJhbGciOiJFUzI1NiIsImtpZCI6IlRlZVNpZ25pbmdLZXkifQ.{}.AAAA",
        conclave_attest::api::b64url(
            json!({"typ": "conclave-analysis-receipt/v1", "iat": 1, "attestation": token})
                .to_string()
                .as_bytes()
        )
    );
    Ok(vec![token.into_bytes(), receipt.into_bytes()])
}

fn release_policy_seeds() -> Vec<Vec<u8>> {
    json_seeds(vec![
        json!({"version": "1.0.0", "anyOf": [{"authority": ISSUER, "allOf": [
            {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
            {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
            {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": "ab".repeat(48)}]}]}),
        json!({"version": "1.0", "anyOf": [{"authority": ISSUER, "anyOf": [
            {"claim": "x-ms-sevsnpvm-guestsvn", "greaterOrEquals": 2},
            {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "notEquals": "x"},
            {"claim": "x-ms-runtime.keys", "exists": true},
            {"claim": "x-ms-sevsnpvm-guestsvn", "less": 9}]}]}),
    ])
}

/// The claims a release policy is evaluated against in the `release-policy` target.
fn policy_claims() -> serde_json::Value {
    json!({
        "x-ms-attestation-type": "sevsnpvm",
        "x-ms-sevsnpvm-is-debuggable": false,
        "x-ms-sevsnpvm-guestsvn": 3,
        "x-ms-sevsnpvm-launchmeasurement": "ab".repeat(48),
        "x-ms-isolation-tee": {"x-ms-compliance-status": "azure-compliant-cvm"},
        "x-ms-runtime": {"keys": [{"kid": "k"}], "note": "é".repeat(80)},
    })
}

fn vault_body_seeds() -> Vec<Vec<u8>> {
    let policy = conclave_attest::api::b64url(br#"{"version":"1.0.0","anyOf":[]}"#);
    json_seeds(vec![
        json!({"kty": "RSA-HSM", "key_size": 2048, "attributes": {"exportable": true},
            "release_policy": {"contentType": "application/json", "data": policy, "immutable": true},
            "tags": {"a": "b"}}),
        json!({"target": "eyJ.eyJ.sig", "nonce": "n", "enc": "CKM_RSA_AES_KEY_WRAP"}),
        json!({"attributes": {"enabled": false, "exp": 1}, "key_ops": ["wrapKey"]}),
        json!({"permissions": ["get", "release"]}),
    ])
}

fn key_material_seeds() -> Vec<Vec<u8>> {
    json_seeds(vec![json!({
        "keyMaterialType": "PKMT1", "internalStorage": true, "isFooterKey": true,
        "kmsInstanceID": "conclave", "kmsInstanceURL": "https://v:1",
        "masterKeyID": "https://v:1/keys/a/0123", "wrappedDEK": "AAAA",
        "doubleWrapping": false})])
}

/// `FileCryptoMetaData` as the Parquet writer makes it: taken from the tail of an encrypted file
/// that parquet-rs wrote, and one with every optional field.
fn file_crypto_metadata_seeds() -> anyhow::Result<Vec<Vec<u8>>> {
    use conclave_data::rewrap::{EncryptionAlgorithm, FileCryptoMetaData};
    let mut out = Vec::new();
    for file in parquet_target::seeds()? {
        if file.ends_with(b"PARE") {
            let n = file.len();
            let len = u32::from_le_bytes(file[n - 8..n - 4].try_into()?) as usize;
            let tail = &file[n - 8 - len..n - 8];
            let (_, used) = FileCryptoMetaData::decode(tail)?;
            out.push(tail[..used].to_vec());
        }
    }
    out.push(
        FileCryptoMetaData {
            encryption_algorithm: EncryptionAlgorithm {
                id: 2,
                aad_prefix: Some(b"prefix".to_vec()),
                aad_file_unique: Some(vec![7; 8]),
                supply_aad_prefix: Some(true),
            },
            key_metadata: Some(b"{}".to_vec()),
        }
        .encode(),
    );
    Ok(out)
}

/// The seeds of `target`: real AMD evidence, or inputs the real code made.
pub fn seeds(target: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(match target {
        "snp-report" => vec![MILAN_REPORT.to_vec()],
        "cert-chain" => {
            let vcek = Cert::parse("VCEK", MILAN_VCEK)?;
            let vlek = Cert::parse("VLEK", MILAN_VLEK)?;
            vec![
                [MILAN_ARK, MILAN_ASK, vcek.to_pem().as_bytes()].concat(),
                MILAN_VCEK.to_vec(),
                [MILAN_ARK, MILAN_ASVK, vlek.to_pem().as_bytes()].concat(),
            ]
        }
        "hcl-report" => vec![conclave_tee::azure::build_hcl_report(
            MILAN_REPORT,
            HCL_CLAIMS,
        )],
        "jwt" => jwt_seeds(&fixture()?)?,
        "release-policy" => release_policy_seeds(),
        "release-policy-structured" => structured::seeds(),
        "key-material" => key_material_seeds(),
        "file-crypto-metadata" => file_crypto_metadata_seeds()?,
        "parquet-file" => parquet_target::seeds()?,
        "vault-bodies" => vault_body_seeds(),
        "attest-request" => vec![sim_request(&fixture()?, br#"{"keys":[]}"#)?],
        other => anyhow::bail!(
            "unknown fuzz target {other} (targets: {})",
            TARGETS.join(", ")
        ),
    })
}

/// The harness of `target`, with whatever fixture it needs (a simulated platform, an attestation
/// service, a runtime).
pub fn harness(target: &str) -> anyhow::Result<Harness> {
    Ok(match target {
        "snp-report" => {
            // The genuine Milan chain: a mutated report goes through the whole verification
            // (version, policy, signature algorithm, TCB, signature), not only the parser.
            let vcek = Cert::parse("VCEK", MILAN_VCEK)?;
            let chain = CertChain::from_certs(Cert::parse_pem_bundle(
                "Milan chain",
                &[MILAN_ARK, MILAN_ASK, vcek.to_pem().as_bytes()].concat(),
            )?)?;
            let roots = TrustedRoots::amd();
            let at = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            Box::new(move |input| {
                if let Ok(r) = AttestationReport::parse(input) {
                    // What parses serialises back to something that parses to the same report.
                    let again = AttestationReport::parse(&r.to_bytes()).expect("round trip");
                    assert_eq!(again, r);
                    let verified = verify_report(input, &chain, &roots, Some(at));
                    // Only the genuine report's bytes carry AMD's signature.
                    assert!(
                        verified.is_err() || input == MILAN_REPORT,
                        "a changed report verified"
                    );
                }
            })
        }
        "cert-chain" => {
            let roots = TrustedRoots::amd();
            Box::new(move |input| {
                let _ = Cert::parse("fuzz", input);
                if let Ok(certs) = Cert::parse_pem_bundle("fuzz", input)
                    && let Ok(chain) = CertChain::from_certs(certs)
                {
                    let _ = verify_report(MILAN_REPORT, &chain, &roots, None);
                }
            })
        }
        "hcl-report" => Box::new(|input| {
            if let Ok(hcl) = conclave_tee::azure::parse_hcl_report(input) {
                let rebuilt =
                    conclave_tee::azure::build_hcl_report(&hcl.snp_report, &hcl.runtime_claims);
                assert_eq!(
                    conclave_tee::azure::parse_hcl_report(&rebuilt).expect("rebuilt parses"),
                    hcl
                );
                let _ = AttestationReport::parse(&hcl.snp_report);
                let _ = serde_json::from_slice::<serde_json::Value>(&hcl.runtime_claims);
            }
        }),
        "jwt" => {
            let f = fixture()?;
            let rt = runtime();
            let jwks = f.service.jwks();
            let verifier = TokenVerifier::with_jwks(Some(ISSUER.into()), &jwks);
            Box::new(move |input| {
                let _keep = &f;
                let Ok(text) = std::str::from_utf8(input) else {
                    return;
                };
                let _ = conclave_protocol::jws::unverified_claims(text);
                rt.block_on(async {
                    let _ = verifier.verify(text).await;
                    let _ =
                        conclave_protocol::receipt::verify::<serde_json::Value>(text, &verifier)
                            .await;
                });
            })
        }
        "release-policy" => {
            let claims = policy_claims();
            Box::new(move |input| {
                if let Ok(p) = ReleasePolicy::parse(input) {
                    let _ = p.evaluate(ISSUER, &claims);
                }
            })
        }
        "release-policy-structured" => Box::new(structured::run),
        "key-material" => Box::new(|input| {
            let _ = conclave_data::dataset::KeyMaterial::parse(input);
        }),
        "file-crypto-metadata" => Box::new(|input| {
            use conclave_data::rewrap::FileCryptoMetaData;
            if let Ok((m, used)) = FileCryptoMetaData::decode(input) {
                assert!(used <= input.len());
                // What decodes re-encodes to bytes that decode to the same thing (the bytes
                // themselves may differ: Thrift allows long-form headers and varints).
                let bytes = m.encode();
                let (again, again_used) = FileCryptoMetaData::decode(&bytes).expect("round trip");
                assert_eq!((again, again_used), (m, bytes.len()));
            }
        }),
        "parquet-file" => parquet_target::harness(),
        "vault-bodies" => Box::new(|input| {
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
        "attest-request" => {
            let f = fixture()?;
            let rt = runtime();
            let router = conclave_attest::service::router(f.service.clone());
            Box::new(move |input| {
                let _keep = &f;
                let request = axum::http::Request::post("/attest/SevSnpVm?api-version=2022-08-01")
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
            })
        }
        other => anyhow::bail!(
            "unknown fuzz target {other} (targets: {})",
            TARGETS.join(", ")
        ),
    })
}
