//! `conclave attest evidence verify` on real AMD evidence and on simulated evidence.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_conclave");

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conclave-snp/tests/data/milan-virtee-sev")
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn genuine_milan_evidence_verifies_and_is_decoded() {
    let dir = vectors();
    let (ok, stdout, stderr) = run(&[
        "attest",
        "evidence",
        "verify",
        "--report",
        dir.join("report.bin").to_str().unwrap(),
        "--certs",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("Milan root of AMD hardware"), "{stderr}");
    let decoded: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        decoded["measurement"],
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
    );
    assert_eq!(decoded["version"], 2);
    assert_eq!(decoded["policy"]["debug_allowed"], false);
}

#[test]
fn a_flipped_bit_fails_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let mut report = std::fs::read(vectors().join("report.bin")).unwrap();
    report[0x50] ^= 0x01; // report_data
    let bad = tmp.path().join("report.bin");
    std::fs::write(&bad, report).unwrap();
    let (ok, stdout, stderr) = run(&[
        "attest",
        "evidence",
        "verify",
        "--report",
        bad.to_str().unwrap(),
        "--certs",
        vectors().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("report signature does not verify"),
        "{stderr}"
    );
}

#[test]
fn amd_evidence_against_a_sim_root_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, ark, stderr) = run(&[
        "sim-host",
        "root",
        "--state-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run(&[
        "attest",
        "evidence",
        "verify",
        "--report",
        vectors().join("report.bin").to_str().unwrap(),
        "--certs",
        vectors().to_str().unwrap(),
        "--sim-root",
        ark.trim(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("not one of the trusted roots"), "{stderr}");
}

fn vlek_vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conclave-snp/tests/data/milan-trustee-vlek")
}

fn verify_dir(dir: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "attest",
        "evidence",
        "verify",
        "--report",
        dir.join("report.bin").to_str().unwrap(),
        "--certs",
        dir.to_str().unwrap(),
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

/// A folder as AMD KDS names its files for a VLEK (`vlek.der`, `asvk.pem`, `ark.pem`): the
/// report verifies through the ASVK and the output says VLEK.
#[test]
fn vlek_evidence_in_kds_names_verifies_and_says_vlek() {
    // 2025-06-01, inside the VLEK's validity.
    let (ok, stdout, stderr) = verify_dir(&vlek_vectors(), &["--at", "1748736000"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("signed by a VLEK chained through the ASVK to the Milan root"),
        "{stderr}"
    );
    let decoded: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(decoded["version"], 3);
    assert_eq!(decoded["signing_key"], "VLEK");

    // Checked now, the VLEK (valid until 2025-12-10) has expired, and the error names it.
    let (ok, _, stderr) = verify_dir(&vlek_vectors(), &[]);
    assert!(!ok);
    assert!(
        stderr.contains("VLEK") && stderr.contains("not valid at"),
        "{stderr}"
    );

    // The ASVK saved under the ASK's name is still used as the ASVK; a folder with only the
    // VLEK uses the shipped ASVK. Either way the output says VLEK.
    for keep_asvk_as in [Some("ask.pem"), None] {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["report.bin", "vlek.der", "ark.pem"] {
            std::fs::copy(vlek_vectors().join(f), tmp.path().join(f)).unwrap();
        }
        if let Some(name) = keep_asvk_as {
            std::fs::copy(vlek_vectors().join("asvk.pem"), tmp.path().join(name)).unwrap();
        }
        let (ok, _, stderr) = verify_dir(tmp.path(), &["--no-time-check"]);
        assert!(ok, "{keep_asvk_as:?}: {stderr}");
        assert!(stderr.contains("signed by a VLEK"), "{stderr}");
    }

    // The Milan ASK in place of the ASVK: still verified through the shipped ASVK (the ASK is
    // not what certifies a VLEK), never reported as a VCEK.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["report.bin", "vlek.der", "ark.pem"] {
        std::fs::copy(vlek_vectors().join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::copy(vectors().join("ask.pem"), tmp.path().join("ask.pem")).unwrap();
    let (ok, _, stderr) = verify_dir(tmp.path(), &["--no-time-check"]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("VCEK"), "{stderr}");
}

#[test]
fn a_folder_with_both_a_vcek_and_a_vlek_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(vlek_vectors().join("vlek.der"), tmp.path().join("vlek.der")).unwrap();
    std::fs::copy(vectors().join("vcek.der"), tmp.path().join("vcek.der")).unwrap();
    std::fs::copy(vectors().join("report.bin"), tmp.path().join("report.bin")).unwrap();
    let (ok, _, stderr) = verify_dir(tmp.path(), &["--no-time-check"]);
    assert!(!ok);
    assert!(stderr.contains("both a vcek and a vlek"), "{stderr}");
}

/// Genuine Azure CVM evidence (conclave-attest/tests/data/azure-cvm-trustee/evidence-v1.json)
/// as files: hcl-report.bin, quote.msg (TPMS_ATTEST), quote.sig, pcrs.json, certs/vcek.der.
fn azure_files(dir: &Path) {
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../conclave-attest/tests/data/azure-cvm-trustee/evidence-v1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let b64url =
        |v: &serde_json::Value| conclave_attest::api::b64url_decode(v.as_str().unwrap()).unwrap();
    let q = &d["tpm_quote"];
    std::fs::write(dir.join("hcl-report.bin"), b64url(&d["hcl_report"])).unwrap();
    std::fs::write(
        dir.join("quote.msg"),
        hex::decode(q["message"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("quote.sig"),
        hex::decode(q["signature"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("pcrs.json"), q["pcrs"].to_string()).unwrap();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::write(dir.join("certs/vcek.der"), b64url(&d["vcek"])).unwrap();
}

fn verify_azure(dir: &Path, nonce: &str) -> (bool, String, String) {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    run(&[
        "attest",
        "evidence",
        "verify",
        "--hcl-report",
        &p("hcl-report.bin"),
        "--certs",
        &p("certs"),
        "--tpm-quote",
        &p("quote.msg"),
        "--tpm-signature",
        &p("quote.sig"),
        "--pcrs",
        &p("pcrs.json"),
        "--nonce",
        nonce,
    ])
}

#[test]
fn azure_cvm_evidence_with_a_tpm_quote_verifies_offline() {
    let tmp = tempfile::tempdir().unwrap();
    azure_files(tmp.path());
    let (ok, stdout, stderr) = verify_azure(tmp.path(), "challenge");
    assert!(ok, "{stderr}");
    assert!(stderr.contains("vTPM quote verified"), "{stderr}");
    assert!(stderr.contains("signed by a VCEK"), "{stderr}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["vm_unique_id"], "26F8BC30-774E-4290-8E7A-535F3B672AEE");
    assert_eq!(
        out["tpm"]["pcr00"],
        "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"
    );
    assert_eq!(out["vmpl"], 0);
    // The same nonce given as hex.
    let (ok, _, stderr) = verify_azure(tmp.path(), &format!("hex:{}", hex::encode("challenge")));
    assert!(ok, "{stderr}");

    // A wrong nonce, then a changed PCR value: refused with the reason.
    let (ok, _, stderr) = verify_azure(tmp.path(), "challenge2");
    assert!(!ok);
    assert!(stderr.contains("made for nonce \"challenge\""), "{stderr}");
    let mut pcrs: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("pcrs.json")).unwrap())
            .unwrap();
    pcrs[7] = "00".repeat(32);
    std::fs::write(tmp.path().join("pcrs.json"), pcrs.join("\n")).unwrap();
    let (ok, _, stderr) = verify_azure(tmp.path(), "challenge");
    assert!(!ok);
    assert!(stderr.contains("do not match the digest"), "{stderr}");

    // Without a quote, the output says the boot state is not attested.
    let p = |f: &str| tmp.path().join(f).to_str().unwrap().to_string();
    let (ok, _, stderr) = run(&[
        "attest",
        "evidence",
        "verify",
        "--hcl-report",
        &p("hcl-report.bin"),
        "--certs",
        &p("certs"),
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("NOT attested"), "{stderr}");
}
