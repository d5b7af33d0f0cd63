//! `conclave attest kds fetch` from a KDS-shaped server on loopback (serving AMD's real Milan
//! certificates at KDS's paths), then verification of evidence that carries no certificates,
//! offline and through the attestation service.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_conclave");

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conclave-snp/tests/data/milan-virtee-sev")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(vectors().join(name)).unwrap()
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A KDS-shaped server: the VCEK only at the report's exact hwid and TCB query, the Milan
/// cert_chain, and `crl` as given (404 when `None`). Counts the requests it answered.
async fn kds_server(crl: Option<Vec<u8>>) -> (String, tokio::sync::oneshot::Sender<()>) {
    use axum::extract::{Path as UrlPath, RawQuery};
    use axum::http::StatusCode;
    let report = conclave_snp::AttestationReport::parse(&read("report.bin")).unwrap();
    let hwid = hex::encode(report.chip_id);
    let vcek = read("vcek.der");
    let chain = [read("ask.pem"), read("ark.pem")].concat();
    let router = axum::Router::new().route(
        "/vcek/v1/Milan/{item}",
        axum::routing::get(
            move |UrlPath(item): UrlPath<String>, RawQuery(query): RawQuery| async move {
                match item.as_str() {
                    "cert_chain" => Ok(chain.clone()),
                    "crl" => crl.clone().ok_or(StatusCode::NOT_FOUND),
                    id if id == hwid
                        && query.as_deref() == Some("blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115") =>
                    {
                        Ok(vcek.clone())
                    }
                    _ => Err(StatusCode::NOT_FOUND),
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                stopped.await.ok();
            })
            .await
            .unwrap();
    });
    (url, stop)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kds_cache_filled_from_a_mirror_verifies_evidence_without_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("kds");
    let report = vectors().join("report.bin");
    let report = report.to_str().unwrap();
    let cache_s = cache.to_str().unwrap();

    // Before fetching: the error names the file and the URL that would supply it.
    let (ok, _, stderr) = run(&[
        "attest",
        "evidence",
        "verify",
        "--report",
        report,
        "--kds-cache",
        cache_s,
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("has no VCEK for") && stderr.contains("https://kdsintf.amd.com/vcek/v1/"),
        "{stderr}"
    );

    // A mirror with no CRL: the VCEK and chain are cached, and the missing CRL is said.
    let (url, _stop) = kds_server(None).await;
    let (ok, _, stderr) = tokio::task::spawn_blocking({
        let (report, cache_s, url) = (report.to_string(), cache_s.to_string(), url.clone());
        move || {
            run(&[
                "attest",
                "kds",
                "fetch",
                "--report",
                &report,
                "--cache",
                &cache_s,
                "--url",
                &url,
                "--product",
                "milan",
            ])
        }
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert!(stderr.contains("no CRL cached"), "{stderr}");
    assert!(cache.join("vcek/v1/Milan/cert_chain.pem").exists());

    let (ok, stdout, stderr) = run(&[
        "attest",
        "evidence",
        "verify",
        "--report",
        report,
        "--kds-cache",
        cache_s,
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("signed by a VCEK"), "{stderr}");
    assert!(stderr.contains("revocation NOT checked"), "{stderr}");
    let decoded: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(decoded["version"], 2);

    // A mirror serving a CRL that AMD's ARK did not sign: refused, not cached.
    let forged_crl = {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let ark = conclave_pki::Cert::parse("ARK-Milan", &read("ark.pem")).unwrap();
        conclave_snp::kds::issue_crl(
            &ark,
            &conclave_pki::x509::CertSigningKey::RsaPssSha384(key),
            &[],
            std::time::SystemTime::now(),
            None,
        )
        .unwrap()
    };
    let (url, _stop2) = kds_server(Some(forged_crl)).await;
    let (ok, _, stderr) = tokio::task::spawn_blocking({
        let (report, cache_s) = (report.to_string(), cache_s.to_string());
        move || {
            run(&[
                "attest",
                "kds",
                "fetch",
                "--report",
                &report,
                "--cache",
                &cache_s,
                "--url",
                &url,
                "--product",
                "milan",
            ])
        }
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        stderr.contains("not signed by a trusted Milan ARK"),
        "{stderr}"
    );
    assert!(!cache.join("vcek/v1/Milan/crl.der").exists());

    // A version 2 report does not say its product: fetching without --product says so.
    let (ok, _, stderr) = run(&[
        "attest",
        "kds",
        "fetch",
        "--report",
        report,
        "--cache",
        cache_s,
        "--url",
        "http://127.0.0.1:9",
    ]);
    assert!(!ok);
    assert!(stderr.contains("--product"), "{stderr}");
}
