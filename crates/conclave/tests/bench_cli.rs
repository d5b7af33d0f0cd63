//! `conclave bench analysis` runs end to end on a small input and reports every figure (no
//! timing is asserted: figures are printed, not tested). DuckDB comes from the test venv
//! (`.venv`, which scripts/test makes first); without it the bench says it did not measure it.

mod cli;

#[test]
fn analysis_bench_reports_all_figures() {
    let dir = tempfile::tempdir().unwrap();
    let venv_python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let has_duckdb = std::process::Command::new(&venv_python)
        .args(["-c", "import duckdb"])
        .status()
        .is_ok_and(|s| s.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .env("CONCLAVE_BENCH_PYTHON", &venv_python)
        .args([
            "bench",
            "analysis",
            "--records",
            "3000",
            "--rsa-sample",
            "20",
            "--json",
            "--cache-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "aes_gcm_floor",
        "encrypted_analysis",
        "plaintext_analysis",
        "original_rsa_scheme",
    ] {
        assert!(v["records_per_s"][k].as_f64().unwrap() > 0.0, "{k}");
    }
    assert!(v["speedup_vs_original"].as_f64().is_some());
    // The contract through DataFusion over the encrypted data, and the join contract.
    assert_eq!(v["contract"]["name"], "partner-demographics");
    assert!(
        v["contract"]["records_per_s"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(v["contract"]["vs_builtin_encrypted"].as_f64().unwrap() > 0.0);
    assert_eq!(v["join"]["name"], "shared-customers");
    assert_eq!(
        v["join"]["input_records"], 2000,
        "Fabrikam's and Woodgrove's thirds"
    );
    assert!(v["join"]["records_per_s"].as_f64().unwrap() > 0.0, "{v}");
    if cfg!(target_os = "linux") {
        assert!(v["contract"]["peak_rss_bytes"].as_u64().unwrap() > 0, "{v}");
    }
    // DuckDB ran every query of the contract's SQL over the plaintext data.
    if has_duckdb {
        let duck = &v["duckdb_plaintext"];
        assert!(duck["records_per_s"].as_f64().unwrap() > 0.0, "{v}");
        assert_eq!(duck["rows"].as_object().unwrap().len(), 8, "{v}");
        assert!(v["contract_vs_duckdb"].as_f64().is_some());
    } else {
        assert!(
            v["duckdb_plaintext"]["unavailable"]
                .as_str()
                .unwrap()
                .contains("pip install duckdb"),
            "{v}"
        );
        assert!(v["contract_vs_duckdb"].is_null());
    }
    assert_eq!(v["records"], 3000);
    // The cache is reused: a second run does not regenerate.
    let files: Vec<_> = std::fs::read_dir(dir.path().join("3000"))
        .unwrap()
        .collect();
    assert_eq!(
        files.len(),
        7,
        "three encrypted, three plaintext datasets and the key"
    );
}

#[test]
fn release_bench_runs_cycles_against_real_services() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args([
            "bench",
            "release",
            "--concurrency",
            "2",
            "--seconds",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["cycles"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["crypto_bound_cycles_per_s"].as_f64().unwrap() > 0.0);
}

/// `--store postgres` measures the embedded store and a real PostgreSQL side by side.
#[test]
fn release_bench_compares_the_stores_on_a_real_postgres() {
    let pg = cli::postgres::Postgres::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args([
            "bench",
            "release",
            "--concurrency",
            "2",
            "--seconds",
            "2",
            "--json",
            "--store",
            "postgres",
            "--postgres",
            &pg.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["postgres"]["cycles"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["postgres"]["errors"], 0, "{v}");
    assert!(v["postgres_to_redb"].as_f64().unwrap() > 0.0, "{v}");
    // Without a database to measure, it says what is missing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["bench", "release", "--store", "postgres"])
        .env_remove("CONCLAVE_BENCH_POSTGRES")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--postgres"));
}
