//! Reliability of a replicated vault: two `conclave kms serve` replicas on one PostgreSQL, 64
//! concurrent clients for `CONCLAVE_RELIABILITY_SECONDS` (20 s by default; SECURITY.md gives the
//! figures of 60 s runs): grantees releasing a key with real attestation tokens, owners creating
//! keys and granting and revoking on them, every grantee's access to the released key revoked
//! once mid-run; replica A killed with SIGKILL at random moments and restarted, PostgreSQL
//! restarted once under the load. Clients fail over to the other replica.
//!
//! Checked afterwards: no acknowledged write is lost (every acknowledged key exists, every
//! grant's last acknowledged state is the stored one), no release is granted to a request made
//! after its grantee's revocation was acknowledged, and the one audit chain of both replicas
//! verifies. Failed requests must be clean refusals (503 naming the database, or a connection
//! refused by a dead replica), never a 500.

mod cli;
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cli::postgres::Postgres;
use common::*;

/// A vault replica process, restartable.
struct Replica {
    state: PathBuf,
    port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<cli::Vault>,
}

impl Replica {
    fn start(&mut self, admin_token: bool) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.child = Some(cli::start_vault_with(
            &self.state,
            self.port,
            &args,
            &env,
            admin_token,
        ));
    }

    /// SIGKILL (std's `Child::kill`).
    fn kill(&mut self) {
        self.child = None;
    }
}

#[derive(Default)]
struct Tally {
    acknowledged: AtomicU64,
    releases_granted: AtomicU64,
    releases_denied: AtomicU64,
    failed_over: AtomicU64,
    unavailable: AtomicU64,
    unreachable: AtomicU64,
}

/// Calls `op` on the preferred replica, then the other when one cannot be reached. Returns the
/// outcome of the last attempt; 500s fail the test.
async fn with_failover<T, F, Fut>(
    clients: &[VaultClient; 2],
    first: usize,
    tally: &Tally,
    op: F,
) -> Result<T, ClientError>
where
    F: Fn(VaultClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut last = None;
    for attempt in 0..2 {
        let c = clients[(first + attempt) % 2].clone();
        match op(c).await {
            Err(ClientError::Unreachable { .. }) => {
                tally.unreachable.fetch_add(1, Ordering::Relaxed);
                if attempt == 0 {
                    tally.failed_over.fetch_add(1, Ordering::Relaxed);
                }
                last = Some(Err(ClientError::Unreachable {
                    url: String::new(),
                    detail: String::new(),
                }));
            }
            Err(ClientError::Refused {
                status, message, ..
            }) => {
                assert_ne!(
                    status, 500,
                    "a 500 from the vault: {message} (the replicas' logs: replica-a.log, replica-b.log beside their state)"
                );
                if status == 503 {
                    assert!(message.contains("database"), "{message}");
                    tally.unavailable.fetch_add(1, Ordering::Relaxed);
                }
                return Err(ClientError::Refused {
                    status,
                    code: String::new(),
                    message,
                });
            }
            other => return other,
        }
    }
    last.expect("two attempts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_keep_every_acknowledged_write_through_kills_and_a_database_restart() {
    let seconds: u64 = std::env::var("CONCLAVE_RELIABILITY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let env = env().await;
    let mut pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let master = "cd".repeat(32);
    let shared = |state: PathBuf, port: u16| Replica {
        state,
        port,
        args: vec![
            "--ca-dir".into(),
            env.dir.join("ca").to_str().unwrap().into(),
            "--url".into(),
            "https://vault.example".into(),
            "--attestation-authority".into(),
            env.attest_url.clone(),
        ],
        env: vec![
            ("CONCLAVE_VAULT_MASTER_KEY".into(), master.clone()),
            ("CONCLAVE_VAULT_POSTGRES".into(), pg.url.clone()),
        ],
        child: None,
    };
    let mut a = shared(env.dir.join("replica-a"), cli::free_port());
    let mut b = shared(env.dir.join("replica-b"), cli::free_port());
    tokio::task::block_in_place(|| {
        a.start(true);
        b.start(false);
    });
    let url = |r: &Replica| format!("https://127.0.0.1:{}", r.port);
    let (url_a, url_b) = (url(&a), url(&b));
    let client = |token: &str| -> [VaultClient; 2] {
        [
            VaultClient::new(env.http.clone(), &url_a, token),
            VaultClient::new(env.http.clone(), &url_b, token),
        ]
    };
    let admin = std::fs::read_to_string(a.state.join("admin.token")).unwrap();
    let admin_client = VaultClient::new(env.http.clone(), &url_a, &admin);
    let owner_token = admin_client.add_principal("contoso", false).await.unwrap();
    let owner = client(&owner_token);
    owner[0]
        .create_key(
            "released",
            &exportable(&env.policy(&good_measurement()), false),
        )
        .await
        .unwrap();
    const GRANTEES: usize = 8;
    let mut grantees = Vec::new();
    for g in 0..GRANTEES {
        let name = format!("w{g}");
        let token = admin_client.add_principal(&name, false).await.unwrap();
        owner[0]
            .grant("released", &name, &[Permission::Release])
            .await
            .unwrap();
        grantees.push((name, token));
    }

    // 56 releasing clients (7 per grantee, each its own TEE key and token), 8 owner clients.
    let tally = Arc::new(Tally::default());
    let running = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    // When each grantee's revocation was acknowledged.
    let revoked_at: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut releasers = Vec::new();
    for i in 0..56 {
        let (name, token) = grantees[i % GRANTEES].clone();
        let tee = EphemeralKey::generate().unwrap();
        let runtime = tee.runtime_json();
        let attestation = env.token(&runtime, GOOD_CONFIG, None).await;
        let (clients, tally, running, revoked_at) = (
            client(&token),
            tally.clone(),
            running.clone(),
            revoked_at.clone(),
        );
        releasers.push(tokio::spawn(async move {
            let mut violations = Vec::new();
            while running.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let outcome = with_failover(&clients, i % 2, &tally, |c| {
                    let target = attestation.clone();
                    async move {
                        c.release(
                            "released",
                            &ReleaseRequest {
                                target,
                                ..Default::default()
                            },
                        )
                        .await
                    }
                })
                .await;
                match outcome {
                    Ok(_) => {
                        tally.releases_granted.fetch_add(1, Ordering::Relaxed);
                        let revoked = revoked_at.lock().unwrap().get(&name).copied();
                        if revoked.is_some_and(|r| asked > r) {
                            violations.push(format!(
                                "{name} was released the key {:?} after its revocation was acknowledged",
                                asked - revoked.unwrap()
                            ));
                        }
                    }
                    Err(ClientError::Refused { status: 403, .. }) => {
                        tally.releases_denied.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            violations
        }));
    }
    // Owner clients: create keys, grant and revoke on them; remember what was acknowledged.
    let mut owners = Vec::new();
    for i in 0..8 {
        let (clients, tally, running) = (owner.clone(), tally.clone(), running.clone());
        owners.push(tokio::spawn(async move {
            let mut created = Vec::new();
            // (key, principal) → the last operation's acknowledged outcome, or None if the
            // last attempt was not acknowledged (its effect is then unknown).
            let mut grants: HashMap<(String, String), Option<bool>> = HashMap::new();
            let mut n = 0;
            while running.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("churn-{i}-{n}");
                let made = with_failover(&clients, i % 2, &tally, |c| {
                    let key = key.clone();
                    async move { c.create_key(&key, &CreateKeyRequest::default()).await }
                })
                .await;
                if made.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                tally.acknowledged.fetch_add(1, Ordering::Relaxed);
                created.push(key.clone());
                for grant in [true, false, true] {
                    let principal = format!("w{}", n % GRANTEES);
                    let done = with_failover(&clients, (i + n) % 2, &tally, |c| {
                        let (key, principal) = (key.clone(), principal.clone());
                        async move {
                            if grant {
                                c.grant(&key, &principal, &[Permission::Get])
                                    .await
                                    .map(|_| ())
                            } else {
                                c.revoke(&key, &principal).await
                            }
                        }
                    })
                    .await;
                    let acknowledged = done.is_ok();
                    if acknowledged {
                        tally.acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    grants.insert((key.clone(), principal), acknowledged.then_some(grant));
                }
            }
            (created, grants)
        }));
    }

    // The run: revocations of the released key mid-way, kills of replica A, a database restart.
    let step = Duration::from_millis(seconds * 1000 / 10);
    for round in 0..10u64 {
        tokio::time::sleep(step).await;
        if round == 3 || round == 6 {
            tokio::task::block_in_place(|| a.kill());
            tokio::time::sleep(Duration::from_millis(700)).await;
            tokio::task::block_in_place(|| a.start(false));
        }
        if (4..4 + GRANTEES as u64 / 2).contains(&round) {
            for g in [(round - 4) as usize * 2, (round - 4) as usize * 2 + 1] {
                let name = &grantees[g].0;
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "revoking {name} was never acknowledged in 60 s"
                    );
                    let revoked = with_failover(&owner, g % 2, &tally, |c| {
                        let name = name.clone();
                        async move { c.revoke("released", &name).await }
                    })
                    .await;
                    if revoked.is_ok() {
                        revoked_at
                            .lock()
                            .unwrap()
                            .insert(name.clone(), Instant::now());
                        tally.acknowledged.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        if round == 8 {
            let pg_ref = &mut pg;
            tokio::task::block_in_place(|| pg_ref.restart());
        }
    }
    running.store(false, Ordering::Relaxed);
    let mut violations = Vec::new();
    for r in releasers {
        violations.extend(r.await.unwrap());
    }
    let mut created = Vec::new();
    let mut grants = HashMap::new();
    for o in owners {
        let (c, g) = o.await.unwrap();
        created.extend(c);
        grants.extend(g);
    }
    let elapsed = started.elapsed();
    assert!(violations.is_empty(), "{violations:#?}");

    // Every acknowledged write is there, read through either replica.
    let names: std::collections::BTreeSet<String> = {
        let listed = with_failover(&owner, 1, &tally, |c| async move { c.list_keys().await })
            .await
            .unwrap();
        listed
            .value
            .iter()
            .map(|k| k.kid.split('/').nth(4).unwrap().to_string())
            .collect()
    };
    for key in &created {
        assert!(names.contains(key), "acknowledged key {key} was lost");
    }
    let mut checked = 0;
    for ((key, principal), state) in &grants {
        let Some(granted) = state else { continue };
        let list = owner[1].grants(key).await.unwrap();
        let present = list.value.iter().any(|g| &g.principal == principal);
        assert_eq!(
            present, *granted,
            "{key}/{principal}: the last acknowledged grant state was lost"
        );
        checked += 1;
    }
    // Every grantee was revoked, and each is now refused by either replica.
    assert_eq!(revoked_at.lock().unwrap().len(), GRANTEES);
    let tee = EphemeralKey::generate().unwrap();
    let attestation = env.token(&tee.runtime_json(), GOOD_CONFIG, None).await;
    for (name, token) in &grantees {
        for c in client(token) {
            let request = ReleaseRequest {
                target: attestation.clone(),
                ..Default::default()
            };
            match c.release("released", &request).await {
                Err(ClientError::Refused { status: 403, .. }) => {}
                other => panic!(
                    "{name} after its revocation: {:?}",
                    other.map(|_| "released")
                ),
            }
        }
    }

    // One audit chain, which verifies.
    let out = tokio::task::spawn_blocking({
        let (url, state, master) = (pg.url.clone(), a.state.clone(), master.clone());
        move || {
            cli::run(
                &[
                    "audit",
                    "verify",
                    "--state-dir",
                    state.to_str().unwrap(),
                    "--postgres",
                    &url,
                ],
                &[("CONCLAVE_VAULT_MASTER_KEY", &master)],
            )
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = &tally;
    eprintln!(
        "{:.0} s, 64 clients, 2 replicas (A killed twice), PostgreSQL restarted once: {} acknowledged writes ({} keys, {checked} grant states checked), 0 lost; releases {} granted, {} denied, 0 after an acknowledged revocation; {} requests failed over, {} saw a dead replica, {} got 503 (database unavailable); {}",
        elapsed.as_secs_f64(),
        t.acknowledged.load(Ordering::Relaxed),
        created.len(),
        t.releases_granted.load(Ordering::Relaxed),
        t.releases_denied.load(Ordering::Relaxed),
        t.failed_over.load(Ordering::Relaxed),
        t.unreachable.load(Ordering::Relaxed),
        t.unavailable.load(Ordering::Relaxed),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(t.releases_granted.load(Ordering::Relaxed) > 0);
    assert!(
        t.failed_over.load(Ordering::Relaxed) > 0,
        "no request ever failed over"
    );
    drop(b);
}
