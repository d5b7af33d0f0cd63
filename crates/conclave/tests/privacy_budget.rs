//! A key's privacy budget at its vault: set by its owner, debited by the ε each release's token
//! attests (`x-ms-runtime.contract.epsilon`) in the transaction that audits the release, refused
//! with what is left once spent — exactly once per release under concurrent requests, and the
//! same after the vault is killed (`kill -9`) and started again. The vault is a real process; the
//! tokens come from the real attestation service for sim evidence.

mod common;
use common::*;

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
    let mut vault = VaultProcess::start(&state, &env.dir.join("ca"), &env.attest_url);
    vault.wait(&env.http, "/readyz").await;
    let url = vault.url.clone();
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
    vault.kill();
    vault.restart();
    vault.wait(&env.http, "/readyz").await;
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
    let (_, message) = refused(
        contoso
            .release("k", &release_to(token.clone()))
            .await
            .unwrap_err(),
    );
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

    // A backup carries the ledger: the key deleted, purged and restored from it comes back
    // with what was spent, and still refuses (a key restored without its budget would have
    // none, and release unpaid).
    let backup = contoso.backup_key("k").await.unwrap();
    contoso.delete_key("k").await.unwrap();
    contoso.purge_deleted("k").await.unwrap();
    let (status, _) = refused(contoso.get_privacy_budget("k").await.unwrap_err());
    assert_eq!(status, 404);
    contoso.restore_key(&backup).await.unwrap();
    let restored = contoso.get_privacy_budget("k").await.unwrap();
    assert_eq!(
        (
            restored.total_epsilon,
            restored.spent_epsilon,
            restored.releases
        ),
        (last.total_epsilon, last.spent_epsilon, 5)
    );
    let (_, message) = refused(contoso.release("k", &release_to(token)).await.unwrap_err());
    assert!(message.contains("left of 1.5"), "{message}");
}
