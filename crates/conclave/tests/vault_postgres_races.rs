//! Replicas racing on one PostgreSQL database, where only the database can decide: two
//! replicas starting together on an empty database make one first admin; two with different
//! master keys starting together are not both let in; two principals creating one key name at
//! once through two replicas do not both win.

mod cli;
use cli::postgres::Postgres;
use cli::{BIN, Vault, call, free_port, json, vault_env};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `conclave kms serve` on `database`, not waited for.
/// Each replica has its own local CA (under its state directory): a client trusts the one of
/// the replica it calls.
fn spawn_vault(state: &Path, port: u16, database: &str, master: &str) -> Child {
    Command::new(BIN)
        .args(["kms", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--attestation-authority", "https://attest.example"])
        .args(["--url", "https://vault.example"])
        .arg("--state-dir")
        .arg(state)
        .args(["--postgres", database])
        .env("CONCLAVE_VAULT_MASTER_KEY", master)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Serving (it logged "vault listening": its store is open) → `Ok`; exited → `Err` with what
/// it said. Its standard error is drained meanwhile and after.
fn settle(child: &mut Child) -> Result<(), String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut said = String::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("vault listening") => return Ok(()),
            Ok(line) => {
                said.push_str(&line);
                said.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                return Err(format!("{status}: {said}"));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        assert!(
            Instant::now() < deadline,
            "a vault neither served nor exited: {said}"
        );
    }
}

#[test]
fn replicas_racing_on_one_database() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pg = Postgres::start();
    let ca_of = |state: &Path| {
        state
            .join("ca")
            .join("ca.pem")
            .to_str()
            .unwrap()
            .to_string()
    };
    let master = "ab".repeat(32);

    // Same master key, started together on an empty database, three times: one first admin
    // each time, and both replicas serve.
    let mut last = None;
    for round in 0..3 {
        let database = pg.create_database(&format!("same_key_{round}"));
        let (port_a, port_b) = (free_port(), free_port());
        let (state_a, state_b) = (dir.join(format!("a{round}")), dir.join(format!("b{round}")));
        let mut a = spawn_vault(&state_a, port_a, &database, &master);
        let mut b = spawn_vault(&state_b, port_b, &database, &master);
        settle(&mut a).expect("replica A refused");
        settle(&mut b).expect("replica B refused");
        let admins: Vec<_> = [&state_a, &state_b]
            .into_iter()
            .filter(|s| s.join("admin.token").exists())
            .collect();
        assert_eq!(
            admins.len(),
            1,
            "round {round}: {} first admins",
            admins.len()
        );
        last = Some((
            Vault(a),
            Vault(b),
            (port_a, ca_of(&state_a)),
            (port_b, ca_of(&state_b)),
            admins[0].join("admin.token"),
        ));
    }

    // Different master keys, started together on an empty database, three times: exactly one
    // serves; the other is refused with the reason.
    for round in 0..3 {
        let database = pg.create_database(&format!("two_keys_{round}"));
        let (port_c, port_d) = (free_port(), free_port());
        let other = "cd".repeat(32);
        let mut c = spawn_vault(&dir.join(format!("c{round}")), port_c, &database, &master);
        let mut d = spawn_vault(&dir.join(format!("d{round}")), port_d, &database, &other);
        let (c_out, d_out) = (settle(&mut c), settle(&mut d));
        let _ = (Vault(c), Vault(d));
        match (&c_out, &d_out) {
            (Ok(()), Err(said)) | (Err(said), Ok(())) => {
                assert!(said.contains("written under another master key"), "{said}")
            }
            _ => {
                panic!("round {round}: expected one vault in and one refused: {c_out:?} {d_out:?}")
            }
        }
    }

    // Two principals create one key name at once, each through its own replica, twenty
    // times: one wins each time, the other is refused (403 when it read the winner's key,
    // 409 when the winner committed between its read and its write), and the key has one
    // version, the winner's.
    let (replica_a, replica_b, (port_a, ca_a), (port_b, ca_b), admin) = last.unwrap();
    let admin = format!("@{}", admin.display());
    let contoso = cli::ok(call(
        &["kms", "principal", "contoso"],
        &vault_env(port_a, &ca_a, &admin),
    ))
    .trim()
    .to_string();
    let fabrikam = cli::ok(call(
        &["kms", "principal", "fabrikam"],
        &vault_env(port_b, &ca_b, &admin),
    ))
    .trim()
    .to_string();
    for i in 0..20 {
        let name = format!("shared-name-{i}");
        let create = |port: u16, ca: &str, token: &str| {
            let (name, env) = (name.clone(), vault_env(port, ca, token));
            std::thread::spawn(move || call(&["key", "create", &name], &env))
        };
        let (by_contoso, by_fabrikam) = (
            create(port_a, &ca_a, &contoso),
            create(port_b, &ca_b, &fabrikam),
        );
        let outcomes = [
            ("contoso", &contoso, by_contoso.join().unwrap()),
            ("fabrikam", &fabrikam, by_fabrikam.join().unwrap()),
        ];
        let winners: Vec<_> = outcomes.iter().filter(|o| o.2.status.success()).collect();
        assert_eq!(
            winners.len(),
            1,
            "{name}: {} principals created it",
            winners.len()
        );
        let (winner, token, _) = winners[0];
        let loser = outcomes.iter().find(|o| !o.2.status.success()).unwrap();
        let said = String::from_utf8_lossy(&loser.2.stderr);
        assert!(
            said.contains("belongs to another principal")
                || said.contains("created meanwhile by another principal"),
            "{name}: the loser was told {said}"
        );
        let versions = json(call(
            &["key", "versions", &name],
            &vault_env(port_b, &ca_b, token),
        ));
        let versions = versions["value"].as_array().unwrap();
        assert_eq!(versions.len(), 1, "{name}: {versions:?}");
        let got = json(call(
            &["key", "get", &name],
            &vault_env(port_a, &ca_a, token),
        ));
        assert!(got["key"]["kid"].as_str().unwrap().contains(&name), "{got}");
        let _ = winner;
    }
    drop((replica_a, replica_b));
}
