//! A key's privacy budget at its vault: set by its owner, debited by the ε each release's token
//! attests (`x-ms-runtime.contract.epsilon`) in the transaction that audits the release, refused
//! with what is left once spent — exactly once per release under concurrent requests, and the
//! same after the vault is killed (`kill -9`) and started again. The vault is a real process; the
//! tokens come from the real attestation service for sim evidence.

mod common;
use common::*;

use std::process::{Child, Command, Stdio};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_conclave");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `conclave kms serve` with its state in `state`, trusting `authority` (whose TLS certificate
/// the CA in `ca_dir` issued).
fn start(state: &Path, ca_dir: &Path, port: u16, authority: &str) -> Child {
    Command::new(BIN)
        .args([
            "kms",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--attestation-authority",
            authority,
        ])
        .arg("--state-dir")
        .arg(state)
        .arg("--ca-dir")
        .arg(ca_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the vault did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The TEE's runtime data with a contract's claims, as a workload attests before a run.
fn contract_runtime(tee: &EphemeralKey, epsilon: Option<f64>) -> Vec<u8> {
    let mut runtime: Value = serde_json::from_slice(&tee.runtime_json()).unwrap();
    let mut contract = json!({"name": "dp-demographics", "digest": "ab".repeat(32), "k": 10});
    if let Some(e) = epsilon {
        contract["epsilon"] = json!(e);
    }
    runtime["contract"] = contract;
    serde_json::to_vec(&runtime).unwrap()
}

/// The audit log's release entries for key `k`: (outcome, reason, ε debited).
async fn releases(admin: &VaultClient) -> Vec<(String, Option<String>, Option<f64>)> {
    admin
        .audit(0)
        .await
        .unwrap()
        .value
        .into_iter()
        .filter(|e| e.event.action == "release" && e.event.key.as_deref() == Some("k"))
        .map(|e| {
            let detail = serde_json::to_value(&e.event).unwrap()["detail"].clone();
            (
                e.event.outcome.clone(),
                e.event.reason.clone(),
                detail["epsilon"].as_f64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_privacy_budget_is_debited_once_per_release_and_refuses_when_spent_across_a_restart() {
    let env = env().await;
    let state = env.dir.join("budget-vault");
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let mut child = start(&state, &env.dir.join("ca"), port, &env.attest_url);
    wait_ready(&env.http, &url).await;
    let admin_token = std::fs::read_to_string(state.join("admin.token")).unwrap();
    let admin = VaultClient::new(env.http.clone(), &url, &admin_token);
    let principal = |name: &'static str| {
        let admin = admin.clone();
        let http = env.http.clone();
        let url = url.clone();
        async move {
            let token = admin.add_principal(name, false).await.unwrap();
            VaultClient::new(http, &url, &token)
        }
    };
    let contoso = principal("contoso").await;
    let woodgrove = principal("woodgrove").await;
    contoso
        .create_key("k", &exportable(&env.policy(&good_measurement()), true))
        .await
        .unwrap();

    // No budget yet: releases are not counted, and the answer says how to set one.
    let (status, message) = refused(contoso.get_privacy_budget("k").await.unwrap_err());
    assert_eq!(status, 404);
    assert!(message.contains("conclave key budget"), "{message}");
    // Only the owner sets it, and only to a finite total from 0 to 10^6.
    let (status, _) = refused(woodgrove.put_privacy_budget("k", 100.0).await.unwrap_err());
    assert!(status == 403 || status == 404, "{status}");
    for bad in [-0.5, 2e6] {
        let (status, message) = refused(contoso.put_privacy_budget("k", bad).await.unwrap_err());
        assert_eq!(status, 400, "{bad}: {message}");
        assert!(message.contains("totalEpsilon"), "{message}");
    }
    let budget = contoso.put_privacy_budget("k", 1.0).await.unwrap();
    assert_eq!(
        (
            budget.total_epsilon,
            budget.spent_epsilon,
            budget.remaining_epsilon,
            budget.releases
        ),
        (1.0, 0.0, 1.0, 0)
    );

    // A token that attests no ε cannot spend the budget.
    let tee = EphemeralKey::generate().unwrap();
    let plain = env.token(&tee.runtime_json(), GOOD_CONFIG, None).await;
    let (status, message) = refused(contoso.release("k", &release_to(plain)).await.unwrap_err());
    assert_eq!(status, 403);
    assert!(message.contains("attests no epsilon"), "{message}");

    // Eight releases at once, ε = 0.3 each, from a budget of 1: exactly three are paid for.
    let token = env
        .token(&contract_runtime(&tee, Some(0.3)), GOOD_CONFIG, None)
        .await;
    let attempts = (0..8).map(|_| {
        let (client, token) = (contoso.clone(), token.clone());
        tokio::spawn(async move { client.release("k", &release_to(token)).await })
    });
    let mut granted = 0;
    for attempt in futures::future::join_all(attempts).await {
        match attempt.unwrap() {
            Ok(jws) => {
                open_release(&jws, env.ca.cert(), tee.private_key()).unwrap();
                granted += 1;
            }
            Err(e) => {
                let (status, message) = refused(e);
                assert_eq!(status, 403);
                assert!(
                    message.contains("privacy budget exhausted")
                        && message.contains("would spend epsilon 0.3")
                        && message.contains("left of 1"),
                    "{message}"
                );
            }
        }
    }
    assert_eq!(granted, 3);
    let budget = contoso.get_privacy_budget("k").await.unwrap();
    assert_eq!(budget.releases, 3);
    assert!((budget.spent_epsilon - 0.9).abs() < 1e-9, "{budget:?}");
    assert!((budget.remaining_epsilon - 0.1).abs() < 1e-9, "{budget:?}");
    let log = releases(&admin).await;
    let paid: Vec<_> = log.iter().filter(|(o, _, _)| o == "granted").collect();
    assert_eq!(paid.len(), 3, "{log:?}");
    assert!(paid.iter().all(|(_, _, eps)| *eps == Some(0.3)), "{log:?}");
    let exhausted = log
        .iter()
        .filter(|(o, r, _)| {
            o == "denied"
                && r.as_deref()
                    .is_some_and(|r| r.contains("privacy budget exhausted"))
        })
        .count();
    assert_eq!(exhausted, 5, "{log:?}");

    // kill -9 and start again: the ledger is as it was, and still refuses…
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = start(&state, &env.dir.join("ca"), port, &env.attest_url);
    wait_ready(&env.http, &url).await;
    let after = contoso.get_privacy_budget("k").await.unwrap();
    assert_eq!(
        (after.spent_epsilon, after.releases),
        (budget.spent_epsilon, 3)
    );
    let (_, message) = refused(
        contoso
            .release("k", &release_to(token.clone()))
            .await
            .unwrap_err(),
    );
    assert!(message.contains("0.1 left of 1"), "{message}");
    // …until its owner raises the total; what was spent stays spent.
    let raised = contoso.put_privacy_budget("k", 1.5).await.unwrap();
    assert!((raised.remaining_epsilon - 0.6).abs() < 1e-9, "{raised:?}");
    for _ in 0..2 {
        contoso
            .release("k", &release_to(token.clone()))
            .await
            .unwrap();
    }
    let (_, message) = refused(contoso.release("k", &release_to(token)).await.unwrap_err());
    assert!(message.contains("left of 1.5"), "{message}");
    let last = contoso.get_privacy_budget("k").await.unwrap();
    assert_eq!(last.releases, 5);
    assert!((last.spent_epsilon - 1.5).abs() < 1e-9, "{last:?}");
    // The budget's changes are audited too.
    let audit = admin.audit(0).await.unwrap().value;
    let set: Vec<_> = audit
        .iter()
        .filter(|e| e.event.action == "privacy-budget" && e.event.outcome == "ok")
        .collect();
    assert_eq!(set.len(), 2);
    child.kill().unwrap();
    child.wait().unwrap();
}
