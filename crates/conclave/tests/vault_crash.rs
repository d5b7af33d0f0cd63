//! `kill -9` of the vault during a stream of creates and grants: after each restart every
//! acknowledged write is there, and at the end the audit chain verifies.

mod common;
use common::VaultProcess;

use std::process::Command;
use std::time::{Duration, Instant};

use conclave_kms::api::CreateKeyRequest;
use conclave_kms::client::VaultClient;
use conclave_kms::store::Permission;

const BIN: &str = env!("CARGO_BIN_EXE_conclave");

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_sigkill() {
    let kill_points: usize = std::env::var("CONCLAVE_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Its authority is never reached: the test releases nothing.
    let mut vault = VaultProcess::start(&dir.join("vault"), &dir.join("ca"), "https://127.0.0.1:9");
    let url = vault.url.clone();
    // The CA exists once the vault has started.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("ca/ca.pem").exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let http = conclave_net::client(Some(&dir.join("ca/ca.pem"))).unwrap();
    vault.wait(&http, "/healthz").await;
    let admin = std::fs::read_to_string(dir.join("vault/admin.token")).unwrap();
    let owner_token = VaultClient::new(http.clone(), &url, &admin)
        .add_principal("owner", false)
        .await
        .unwrap();
    let owner = VaultClient::new(http.clone(), &url, &owner_token);

    let mut acked_keys: Vec<String> = Vec::new();
    let mut acked_grants: Vec<String> = Vec::new();
    let mut n = 0usize;
    for point in 0..kill_points {
        // Writes stream until the kill, which lands at a different moment each round.
        let kill_after = Duration::from_millis(60 + (point as u64 * 97) % 400);
        let started = Instant::now();
        let pid = vault.pid();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(kill_after).await;
            // SIGKILL: no chance to flush anything.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        });
        while started.elapsed() < kill_after + Duration::from_millis(200) {
            let name = format!("k{n}");
            n += 1;
            match owner.create_key(&name, &CreateKeyRequest::default()).await {
                Ok(_) => acked_keys.push(name.clone()),
                Err(_) => break,
            }
            match owner.grant(&name, "reader", &[Permission::Get]).await {
                Ok(_) => acked_grants.push(name),
                Err(_) => break,
            }
        }
        killer.await.unwrap();
        vault.restart();
        vault.wait(&http, "/healthz").await;
        for k in &acked_keys {
            owner
                .get_key(k)
                .await
                .unwrap_or_else(|e| panic!("acknowledged key {k} lost after kill {point}: {e}"));
        }
        for k in &acked_grants {
            let grants = owner.grants(k).await.unwrap();
            assert_eq!(
                grants.value.first().map(|g| g.principal.as_str()),
                Some("reader"),
                "acknowledged grant on {k} lost after kill {point}"
            );
        }
    }
    assert!(
        acked_keys.len() >= kill_points,
        "the test made too few writes to mean anything"
    );

    // Stop cleanly and check the audit chain offline.
    assert!(vault.terminate());
    let out = Command::new(BIN)
        .args(["audit", "verify", "--state-dir"])
        .arg(dir.join("vault"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("audit log verified"));

    // Every acknowledged write left an audit entry.
    let show = Command::new(BIN)
        .args(["audit", "show", "--state-dir"])
        .arg(dir.join("vault"))
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&show.stdout).lines().count();
    assert!(
        lines >= acked_keys.len() + acked_grants.len(),
        "{lines} audit entries for more writes"
    );
    eprintln!(
        "{kill_points} kill points, {} keys and {} grants acknowledged and kept",
        acked_keys.len(),
        acked_grants.len()
    );
}
