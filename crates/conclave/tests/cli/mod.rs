//! Shared set-up of the tests that drive the `conclave` binary as a user would: run a command,
//! expect success or a refusal that names its reason, and start a real vault process on
//! loopback. (Each test binary uses only part of it.)
#![allow(dead_code)]

pub mod postgres;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_conclave");

/// Runs `conclave args…` with `env` added to the environment.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The standard output of a command that must succeed.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A command that must fail and say `needle` on standard error.
pub fn fails(out: Output, needle: &str) {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(needle),
        "{stderr:?} does not mention {needle:?}"
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `conclave kms serve` process, killed when dropped.
pub struct Vault(pub Child);

impl Drop for Vault {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a vault on `127.0.0.1:port` with its state in `state` (its CA at `ca/ca.pem`, the
/// admin token at `admin.token`), trusting `https://attest.example`, and waits until it answers.
pub fn start_vault(state: &Path, port: u16, extra: &[&str]) -> Vault {
    start_vault_with(state, port, extra, &[], true)
}

/// [`start_vault`] with `env` added, waiting for the admin token only with `admin_token` (a
/// replica joining a vault whose admin exists writes none).
pub fn start_vault_with(
    state: &Path,
    port: u16,
    extra: &[&str],
    env: &[(&str, &str)],
    admin_token: bool,
) -> Vault {
    let mut cmd = Command::new(BIN);
    cmd.args(["kms", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--attestation-authority", "https://attest.example"])
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .stderr(Stdio::null());
    // Its log beside its state (`<state>.log`), for a failing test to show.
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.with_extension("log"))
    {
        cmd.stderr(log);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (admin_token && !state.join("admin.token").exists())
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the vault exited: {status}");
        }
        assert!(Instant::now() < deadline, "the vault did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Vault(child)
}

/// The environment of a CLI call to the vault at `https://127.0.0.1:<port>` (its CA
/// certificate at `ca`) with bearer `token` (a token, or `@file`).
pub fn vault_env(port: u16, ca: &str, token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CONCLAVE_VAULT", format!("https://127.0.0.1:{port}")),
        ("CONCLAVE_CA", ca.to_string()),
        ("CONCLAVE_VAULT_TOKEN", token.to_string()),
    ]
}

/// [`run`] with an environment of owned values (as [`vault_env`] makes).
pub fn call(args: &[&str], env: &[(&'static str, String)]) -> Output {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run(args, &env)
}

/// The JSON a command that must succeed prints.
pub fn json(out: Output) -> serde_json::Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}
