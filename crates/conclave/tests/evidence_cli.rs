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
