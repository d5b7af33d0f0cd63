//! The operator's story with the CLI only: run a vault, add principals, create a key with a
//! release policy, grant, revoke, change the policy, check the audit log.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod cli;
use cli::{BIN, fails, free_port, ok, run, start_vault, start_vault_with};

#[test]
fn manage_a_vault_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let vault = format!("https://127.0.0.1:{port}");
    let state = dir.join("vault");
    let mut running = start_vault(&state, port, &[]);
    let ca = state.join("ca/ca.pem");
    let ca_s = ca.to_str().unwrap();
    let admin = format!("@{}", state.join("admin.token").display());
    let base = [("CONCLAVE_VAULT", vault.as_str()), ("CONCLAVE_CA", ca_s)];
    let as_admin = [base[0], base[1], ("CONCLAVE_VAULT_TOKEN", admin.as_str())];

    let owner = ok(run(&["kms", "principal", "contoso"], &as_admin))
        .trim()
        .to_string();
    ok(run(&["kms", "principal", "woodgrove"], &as_admin));
    let as_owner = [base[0], base[1], ("CONCLAVE_VAULT_TOKEN", owner.as_str())];

    let policy = dir.join("policy.json");
    write_policy(&policy, "aa");
    let created: serde_json::Value = serde_json::from_str(&ok(run(
        &[
            "key",
            "create",
            "contoso-data",
            "--policy",
            policy.to_str().unwrap(),
        ],
        &as_owner,
    )))
    .unwrap();
    assert_eq!(created["attributes"]["exportable"], true);
    let got: serde_json::Value =
        serde_json::from_str(&ok(run(&["key", "get", "contoso-data"], &as_owner))).unwrap();
    assert_eq!(got["key"]["kid"], created["key"]["kid"]);

    // An owner encrypts a dataset with only the key's public part, fetched from the vault by id.
    let csv = dir.join("records.csv");
    ok(run(
        &[
            "data",
            "generate",
            "--party",
            "contoso",
            "--records",
            "50",
            "--out",
            csv.to_str().unwrap(),
        ],
        &[],
    ));
    let kid = created["key"]["kid"].as_str().unwrap();
    let enc = dir.join("store/contoso.parquet");
    let summary: serde_json::Value = serde_json::from_str(&ok(run(
        &[
            "data",
            "encrypt",
            "--key",
            kid,
            "-i",
            csv.to_str().unwrap(),
            "-o",
            enc.to_str().unwrap(),
        ],
        &as_owner,
    )))
    .unwrap();
    assert_eq!(summary["rows"], 50);
    assert_eq!(summary["master_key_id"], kid);
    let inspected: serde_json::Value =
        serde_json::from_str(&ok(run(&["data", "inspect", enc.to_str().unwrap()], &[]))).unwrap();
    assert_eq!(inspected["key_material"]["masterKeyID"], kid);

    let granted = ok(run(
        &[
            "key",
            "grant",
            "contoso-data",
            "--to",
            "woodgrove",
            "--permissions",
            "release",
        ],
        &as_owner,
    ));
    assert!(granted.contains("release"));
    ok(run(
        &["key", "revoke", "contoso-data", "--from", "woodgrove"],
        &as_owner,
    ));

    write_policy(&policy, "bb");
    let updated: serde_json::Value = serde_json::from_str(&ok(run(
        &[
            "key",
            "policy",
            "contoso-data",
            "--policy",
            policy.to_str().unwrap(),
            "--immutable",
        ],
        &as_owner,
    )))
    .unwrap();
    assert_eq!(updated["release_policy"]["immutable"], true);
    write_policy(&policy, "cc");
    fails(
        run(
            &[
                "key",
                "policy",
                "contoso-data",
                "--policy",
                policy.to_str().unwrap(),
            ],
            &as_owner,
        ),
        "immutable",
    );

    // Errors say what was wrong.
    std::fs::write(&policy, "{\"version\": \"1.0.0\"}").unwrap();
    fails(
        run(
            &[
                "key",
                "create",
                "other",
                "--policy",
                policy.to_str().unwrap(),
            ],
            &as_owner,
        ),
        "anyOf",
    );
    fails(
        run(
            &["key", "get", "contoso-data"],
            &[base[0], base[1], ("CONCLAVE_VAULT_TOKEN", "cvt_nope")],
        ),
        "not valid for this vault",
    );
    fails(
        run(
            &["key", "get", "contoso-data"],
            &[base[0], ("CONCLAVE_VAULT_TOKEN", owner.as_str())],
        ),
        "cannot reach the vault",
    );

    // The audit log verifies once the vault is stopped, and names the actions.
    fails(
        run(
            &["audit", "verify", "--state-dir", state.to_str().unwrap()],
            &[],
        ),
        "stop it first",
    );
    let _ = Command::new("kill")
        .args(["-INT", &running.0.id().to_string()])
        .status();
    assert!(
        running.0.wait().unwrap().success(),
        "Ctrl-C stops the vault cleanly"
    );
    ok(run(
        &["audit", "verify", "--state-dir", state.to_str().unwrap()],
        &[],
    ));
    let log = ok(run(
        &["audit", "show", "--state-dir", state.to_str().unwrap()],
        &[],
    ));
    for action in ["\"create\"", "\"grant\"", "\"revoke\"", "\"policy-change\""] {
        assert!(log.contains(action), "the audit log has no {action} entry");
    }
}

fn write_policy(path: &Path, measurement: &str) {
    let p = serde_json::json!({"version": "1.0.0", "anyOf": [{"authority": "https://attest.example", "allOf": [
        {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": measurement}]}]});
    std::fs::write(path, p.to_string()).unwrap();
}

#[test]
fn the_vault_serves_operator_provided_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // An operator's own CA and server certificate (made here with the local CA code).
    let ca = conclave_net::LocalCa::load_or_create(&dir.join("operator-ca")).unwrap();
    let issued = ca
        .server_cert(&dir.join("certs"), "vault", &["127.0.0.1"])
        .unwrap();
    let signing = ca
        .signing_cert(&dir.join("certs"), "vault-release-signing")
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state = dir.join("vault");
    let serve = |signing_cert: &Path, signing_key: &Path| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "kms",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--attestation-authority",
            "https://attest.example",
        ])
        .arg("--state-dir")
        .arg(&state)
        .arg("--tls-cert")
        .arg(&issued.chain_pem)
        .arg("--tls-key")
        .arg(&issued.key_pk8)
        .arg("--signing-cert")
        .arg(signing_cert)
        .arg("--signing-key")
        .arg(signing_key);
        cmd
    };
    // The TLS key does not sign release responses, and one certificate alone is not enough.
    fails(
        serve(&issued.chain_pem, &issued.key_pk8).output().unwrap(),
        "release responses need a signing key of their own",
    );
    // A signing key whose certificate is not the chain's leaf.
    let other_signing = ca
        .signing_cert(&dir.join("certs"), "another-signing-key")
        .unwrap();
    fails(
        serve(&signing.chain_pem, &other_signing.key_pk8)
            .output()
            .unwrap(),
        "is not the certificate of the signing key",
    );
    fails(
        Command::new(BIN)
            .args([
                "kms",
                "serve",
                "--attestation-authority",
                "https://a.example",
            ])
            .arg("--tls-cert")
            .arg(&issued.chain_pem)
            .arg("--tls-key")
            .arg(&issued.key_pk8)
            .output()
            .unwrap(),
        "--signing-cert",
    );
    let mut child = serve(&signing.chain_pem, &signing.key_pk8)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.join("admin.token").exists()
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    {
        assert!(Instant::now() < deadline, "the vault did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !state.join("ca").exists(),
        "no local CA is made when certificates are given"
    );
    let vault = format!("https://127.0.0.1:{port}");
    let admin = format!("@{}", state.join("admin.token").display());
    let ca_path = ca.cert_path();
    let env = [
        ("CONCLAVE_VAULT", vault.as_str()),
        ("CONCLAVE_CA", ca_path.to_str().unwrap()),
        ("CONCLAVE_VAULT_TOKEN", admin.as_str()),
    ];
    let token = ok(run(&["kms", "principal", "contoso"], &env));
    assert!(token.starts_with("cvt_"));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

/// A vault in a shell-less container cannot hand its generated admin token to anyone: the
/// operator makes the token, keeps it, and gives the vault only its SHA-256 (from a Secret).
#[test]
fn the_first_admin_token_can_be_the_operators() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("admin.token");
    let hash = ok(run(
        &["kms", "admin-token", "--out", token_file.to_str().unwrap()],
        &[],
    ))
    .trim()
    .to_string();
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(
        hash,
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            token.as_bytes()
        ))
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    fails(
        run(
            &["kms", "admin-token", "--out", token_file.to_str().unwrap()],
            &[],
        ),
        "never overwritten",
    );

    // A malformed hash is refused before the vault is made.
    let state = tmp.path().join("vault");
    let out = Command::new(BIN)
        .args(["kms", "serve", "--listen", "127.0.0.1:0"])
        .args(["--attestation-authority", "https://attest.example"])
        .arg("--state-dir")
        .arg(&state)
        .env("CONCLAVE_VAULT_ADMIN_TOKEN_SHA256", "abc")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !state.exists(),
        "the vault's state was made before the hash was checked"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be 64 hex digits"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port();
    let _vault = start_vault_with(
        &state,
        port,
        &[],
        &[("CONCLAVE_VAULT_ADMIN_TOKEN_SHA256", &hash.to_uppercase())],
        false,
    );
    assert!(
        !state.join("admin.token").exists(),
        "the vault wrote a token of its own"
    );
    let vault = format!("https://127.0.0.1:{port}");
    let ca = state.join("ca/ca.pem");
    // The port is bound before the vault's CA is made: wait for the CA (there is no token
    // file to wait for).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ca.exists() {
        assert!(Instant::now() < deadline, "the vault made no CA");
        std::thread::sleep(Duration::from_millis(50));
    }
    let admin = format!("@{}", token_file.display());
    let env = |token: &str| {
        [
            ("CONCLAVE_VAULT", vault.clone()),
            ("CONCLAVE_CA", ca.to_str().unwrap().to_string()),
            ("CONCLAVE_VAULT_TOKEN", token.to_string()),
        ]
    };
    let as_admin = env(&admin);
    let as_admin: Vec<(&str, &str)> = as_admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let owner = ok(run(&["kms", "principal", "contoso"], &as_admin));
    assert!(owner.trim().starts_with("cvt_"));
    let forged = env("cvt_not-the-operators-token");
    let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fails(
        run(&["kms", "principal", "mallory"], &forged),
        "not valid for this vault",
    );
}

#[test]
fn help_never_prints_the_vault_token_from_the_environment() {
    let secret = "bearer-token-value-that-must-not-appear";
    for args in [
        &["key", "create", "--help"][..],
        &["data", "encrypt", "--help"][..],
    ] {
        let help = ok(run(args, &[("CONCLAVE_VAULT_TOKEN", secret)]));
        assert!(help.contains("CONCLAVE_VAULT_TOKEN"), "{help}");
        assert!(!help.contains(secret), "{args:?} prints the token: {help}");
    }
}

#[test]
fn json_logs_carry_one_span_per_request() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("vault");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tmp.path().join("vault.log");
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "kms", "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--attestation-authority", "https://attest.example"])
        .arg("--state-dir")
        .arg(&state)
        .env("RUST_LOG", "info,tower_http=debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.join("admin.token").exists()
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    {
        assert!(Instant::now() < deadline, "the vault did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let vault = format!("https://127.0.0.1:{port}");
    let admin = format!("@{}", state.join("admin.token").display());
    let ca = state.join("ca/ca.pem");
    ok(run(
        &["kms", "principal", "contoso"],
        &[
            ("CONCLAVE_VAULT", vault.as_str()),
            ("CONCLAVE_CA", ca.to_str().unwrap()),
            ("CONCLAVE_VAULT_TOKEN", admin.as_str()),
        ],
    ));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    assert!(!lines.is_empty());
    // The handler's own line (it runs on the blocking pool) carries its request's span.
    let request = lines
        .iter()
        .find(|l| l["fields"]["message"] == "principal added")
        .unwrap_or_else(|| panic!("the handler logged nothing: {text}"));
    assert_eq!(request["span"]["route"], "/principals/{name}", "{request}");
    assert_eq!(request["span"]["method"], "POST");
    assert!(request["span"]["request_id"].is_u64(), "{request}");
    assert!(!text.contains("cvt_"), "a bearer token is in the log");
}
