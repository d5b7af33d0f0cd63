//! Two vault replicas on one PostgreSQL serve one vault: what one writes, the other reads at
//! its next request (a revocation included); one replica killed with SIGKILL loses nothing
//! acknowledged and the other serves on; PostgreSQL restarted under the vault fails requests
//! with a clear 503 while it is down, and they succeed after; the audit chain of both replicas
//! is one and verifies; a vault with another master key is refused the database.

mod cli;
use cli::postgres::Postgres;
use cli::{call, fails, free_port, json, ok, start_vault_with, vault_env};

#[test]
fn replicas_on_postgres_serve_one_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut pg = Postgres::start();
    let master = "ab".repeat(32);
    let env = [
        ("CONCLAVE_VAULT_MASTER_KEY", master.as_str()),
        ("CONCLAVE_VAULT_POSTGRES", pg.url.as_str()),
    ];
    let ca_dir = dir.join("ca");
    let ca_arg = [
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--url",
        "https://vault.example",
    ];
    let (port_a, port_b) = (free_port(), free_port());
    let (state_a, state_b) = (dir.join("a"), dir.join("b"));
    let replica_a = start_vault_with(&state_a, port_a, &ca_arg, &env, true);
    let replica_b = start_vault_with(&state_b, port_b, &ca_arg, &env, false);
    assert!(
        !state_b.join("admin.token").exists(),
        "the second replica joins the vault; it makes no second admin"
    );
    assert!(!state_a.join("vault.redb").exists() && !state_b.join("vault.redb").exists());

    let ca = ca_dir.join("ca.pem").to_str().unwrap().to_string();
    let at = |port: u16, token: &str| vault_env(port, &ca, token);
    let admin = format!("@{}", state_a.join("admin.token").display());
    // A principal made through one replica authenticates on the other.
    let owner = ok(call(&["kms", "principal", "contoso"], &at(port_a, &admin)))
        .trim()
        .to_string();
    ok(call(
        &["kms", "principal", "woodgrove"],
        &at(port_b, &admin),
    ));
    let created = json(call(
        &["key", "create", "contoso-data"],
        &at(port_a, &owner),
    ));
    let got = json(call(&["key", "get", "contoso-data"], &at(port_b, &owner)));
    assert_eq!(got["key"]["kid"], created["key"]["kid"]);
    assert_eq!(got["key"]["n"], created["key"]["n"]);

    // A grant on one replica is seen on the other; a revocation on the other takes effect on
    // the first at its next request.
    ok(call(
        &[
            "key",
            "grant",
            "contoso-data",
            "--to",
            "woodgrove",
            "--permissions",
            "release",
        ],
        &at(port_a, &owner),
    ));
    let grants = json(call(
        &["key", "grants", "contoso-data"],
        &at(port_b, &owner),
    ));
    assert_eq!(grants["value"][0]["principal"], "woodgrove", "{grants}");
    ok(call(
        &["key", "revoke", "contoso-data", "--from", "woodgrove"],
        &at(port_b, &owner),
    ));
    let grants = json(call(
        &["key", "grants", "contoso-data"],
        &at(port_a, &owner),
    ));
    assert_eq!(grants["value"], serde_json::json!([]), "{grants}");

    // Replica A dies mid-flight; B serves on, and every acknowledged write is there.
    drop(replica_a);
    ok(call(
        &["key", "rotate", "contoso-data"],
        &at(port_b, &owner),
    ));
    let versions = json(call(
        &["key", "versions", "contoso-data"],
        &at(port_b, &owner),
    ));
    assert_eq!(versions["value"].as_array().unwrap().len(), 2, "{versions}");

    // PostgreSQL goes away: a clear refusal naming the database, not a hang or a 500.
    pg.stop();
    fails(
        call(&["key", "get", "contoso-data"], &at(port_b, &owner)),
        "the vault's database (PostgreSQL at 127.0.0.1",
    );
    pg.restart();
    // Back: the pool reconnects, nothing half-written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = call(&["key", "get", "contoso-data"], &at(port_b, &owner));
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    ok(call(
        &["key", "rotate", "contoso-data"],
        &at(port_b, &owner),
    ));

    // One audit chain for both replicas, which verifies (read from PostgreSQL while B runs).
    let verified = call(
        &[
            "audit",
            "verify",
            "--state-dir",
            state_a.to_str().unwrap(),
            "--postgres",
            &pg.url,
        ],
        &[("CONCLAVE_VAULT_MASTER_KEY", master.clone())],
    );
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let said = String::from_utf8_lossy(&verified.stderr).to_string();
    assert!(said.contains("audit log verified"), "{said}");
    let shown = ok(call(
        &[
            "audit",
            "show",
            "--state-dir",
            state_a.to_str().unwrap(),
            "--postgres",
            &pg.url,
        ],
        &[("CONCLAVE_VAULT_MASTER_KEY", master.clone())],
    ));
    let actions: Vec<String> = shown
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for a in ["create", "grant", "revoke", "rotate"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    // A vault with another master key is refused the database, before it writes anything.
    let other_key = "ef".repeat(32);
    let state_c = dir.join("c");
    let mut refused = std::process::Command::new(cli::BIN)
        .args([
            "kms",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--attestation-authority",
            "https://attest.example",
            "--state-dir",
            state_c.to_str().unwrap(),
            "--postgres",
            &pg.url,
        ])
        .env("CONCLAVE_VAULT_MASTER_KEY", other_key)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = refused.kill();
            panic!("a vault with another master key was let in: it is serving");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().unwrap(), &mut said).unwrap();
    assert!(!status.success());
    assert!(said.contains("written under another master key"), "{said}");
    drop(replica_b);
}
