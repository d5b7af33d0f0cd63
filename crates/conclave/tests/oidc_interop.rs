//! The workload's sign-in against an identity provider Conclave did not write:
//! node-oidc-provider (OpenID Certified; `tests/oidc/provider.mjs`, installed with npm on first
//! use). A browser-like client signs in through the workload's page (authorization code with
//! PKCE, the provider's own login and consent pages, RS256 ID token), and an API client uses an
//! RFC 9068 JWT access token (ES256) from the provider's client-credentials grant.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_conclave");
const SECRET: &str = "interop-client-secret-0123456789";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port below Linux's ephemeral range (32768–60999), so that no outgoing connection takes
/// it before the server started here binds it.
fn free_port(salt: u32) -> u16 {
    for attempt in 0..500u32 {
        let port = 32_100 + ((std::process::id() * 13 + salt * 211 + attempt * 97) % 600) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 32100..32700");
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out + &format!("-----END {label}-----\n")
}

/// node-oidc-provider's packages, installed from npm the first time.
fn provider_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc");
    if !dir.join("node_modules/oidc-provider").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm (Node) is needed for this test");
        assert!(status.success(), "npm ci in tests/oidc failed");
    }
    dir
}

fn location(r: &reqwest::blocking::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no redirect from {}: {}", r.url(), r.status()))
        .to_str()
        .unwrap()
        .to_string()
}

/// The `action` of the page's form and its fields, from the provider's HTML.
fn form(html: &str) -> (String, Vec<(String, String)>) {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[start..].split('"').next()?.to_string())
    };
    let form_tag = html
        .split("<form")
        .nth(1)
        .expect("a form")
        .split('>')
        .next()
        .unwrap();
    let action = attr(form_tag, "action").expect("a form action");
    let fields = html
        .split("<input")
        .skip(1)
        .filter_map(|t| {
            let tag = t.split('>').next()?;
            Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default()))
        })
        .collect();
    (action, fields)
}

fn form_body(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn sign_in_and_bearer_tokens_work_with_node_oidc_provider() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = conclave_net::LocalCa::load_or_create(&tmp.path().join("ca")).unwrap();
    let issued = ca
        .server_cert(&tmp.path().join("idp"), "idp", &["127.0.0.1"])
        .unwrap();
    let key_pem = tmp.path().join("idp/idp-key.pem");
    std::fs::write(
        &key_pem,
        pem("PRIVATE KEY", &std::fs::read(&issued.key_pk8).unwrap()),
    )
    .unwrap();
    let (idp_port, workload_port) = (free_port(1), free_port(2));
    assert_ne!(idp_port, workload_port);
    let issuer = format!("https://127.0.0.1:{idp_port}");
    let workload = format!("https://127.0.0.1:{workload_port}");

    // The provider's start is retried: two fresh-clone CI runs saw it print nothing for minutes
    // after loading (it starts in a second elsewhere). Each failed start leaves node's
    // diagnostic report (JavaScript and native stacks, written on SIGUSR2) on stderr.
    let mut failures = Vec::new();
    let mut started = None;
    for attempt in 1..=3 {
        let reports = tmp.path().join(format!("node-reports-{attempt}"));
        std::fs::create_dir_all(&reports).unwrap();
        let mut node = Command::new("node")
            .arg("--report-on-signal")
            .arg(format!("--report-directory={}", reports.display()))
            .arg("provider.mjs")
            .current_dir(provider_dir())
            .env("ISSUER", &issuer)
            .env("PORT", idp_port.to_string())
            .env("CERT", &issued.chain_pem)
            .env("KEY", &key_pem)
            .env("REDIRECT_URI", format!("{workload}/auth/callback"))
            .env("CLIENT_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Its output is drained for as long as it runs (a closed pipe would stop it).
        let (tx, rx) = std::sync::mpsc::channel();
        let out = node.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let _ = tx.send(line.unwrap_or_default());
            }
        });
        let err = node.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                eprintln!("node-oidc-provider: {}", line.unwrap_or_default());
            }
        });
        let pid = node.id();
        let node = Killed(node);
        let ready = rx.recv_timeout(Duration::from_secs(90)).unwrap_or_default();
        if ready.trim() == "ready" {
            started = Some(node);
            break;
        }
        let _ = Command::new("kill")
            .args(["-USR2", &pid.to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(3));
        for report in std::fs::read_dir(&reports).into_iter().flatten().flatten() {
            if let Ok(r) = serde_json::from_str::<Value>(
                &std::fs::read_to_string(report.path()).unwrap_or_default(),
            ) {
                eprintln!(
                    "node-oidc-provider did not start (attempt {attempt}): JavaScript stack {}; native stack {}",
                    r["javascriptStack"], r["nativeStack"]
                );
            }
        }
        failures.push(format!("attempt {attempt}: stdout said {ready:?}"));
    }
    let _node = started.unwrap_or_else(|| {
        panic!(
            "node-oidc-provider did not start ({}); its stderr and stacks are above",
            failures.join(", ")
        )
    });

    let config = tmp.path().join("party.toml");
    std::fs::write(
        &config,
        format!(
            r#"party = "contoso"
display_name = "Contoso"
listen = "127.0.0.1:{workload_port}"
attestation_url = "https://127.0.0.1:9"
ca_file = "{ca}"
datasets = []

[auth]
issuer = "{issuer}"
client_id = "conclave-workload"
audience = "api://conclave-workload"
"#,
            ca = ca.cert_path().display()
        ),
    )
    .unwrap();
    let _workload = Killed(
        Command::new(BIN)
            .args(["party", "serve", "--tee", "none", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    // The workload's certificate is made in its (absent) TEE; this test is about sign-in, so it
    // accepts any certificate, and keeps cookies like a browser.
    let browser = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while browser.get(format!("{workload}/healthz")).send().is_err() {
        assert!(Instant::now() < deadline, "the workload did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Sign in as a browser does: the workload, the provider's login and consent pages, back.
    let r = browser
        .get(format!("{workload}/auth/login?next=/api/status"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().unwrap());
    let mut next = location(&r);
    assert!(next.starts_with(&format!("{issuer}/auth?")), "{next}");
    assert!(next.contains("code_challenge_method=S256"), "{next}");
    let mut pages = 0;
    let callback = loop {
        pages += 1;
        assert!(pages < 20, "no way back to the workload");
        if next.starts_with(&format!("{workload}/auth/callback")) {
            break next;
        }
        let url = if next.starts_with('/') {
            format!("{issuer}{next}")
        } else {
            next.clone()
        };
        let r = browser.get(&url).send().unwrap();
        if r.status().is_redirection() {
            next = location(&r);
            continue;
        }
        assert_eq!(r.status(), 200, "{url}");
        let (action, mut fields) = form(&r.text().unwrap());
        for (k, v) in &mut fields {
            match k.as_str() {
                "login" => *v = "alice-member".into(),
                "password" => *v = "any password".into(),
                _ => {}
            }
        }
        let action = if action.starts_with('/') {
            format!("{issuer}{action}")
        } else {
            action
        };
        let r = browser
            .post(&action)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&fields))
            .send()
            .unwrap();
        assert!(r.status().is_redirection(), "{}: {}", action, r.status());
        next = location(&r);
    };
    let r = browser.get(&callback).send().unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().unwrap());
    assert_eq!(location(&r), "/api/status");
    let status: Value = browser
        .get(format!("{workload}/api/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["user"]["name"], "alice-member", "{status}");
    assert_eq!(status["user"]["roles"], serde_json::json!(["member"]));
    assert_eq!(status["user"]["via"], "session");
    // A member's records request passes the role check (this workload lists no dataset).
    let r = browser
        .get(format!("{workload}/api/records"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().unwrap().contains("NoOwnDataset"));
    let r = browser
        .get(format!("{workload}/api/analysis"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // A replayed callback opens no second session: its sign-in is finished (and the browser's
    // login cookie cleared).
    let r = browser.get(&callback).send().unwrap();
    assert_eq!(r.status(), 401);

    // An API client: an RFC 9068 access token (ES256 JWT) by client credentials.
    let idp = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(ca.cert_path()).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let token: Value = idp
        .post(format!("{issuer}/token"))
        .basic_auth("api-client", Some(SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&resource=api%3A%2F%2Fconclave-workload&scope=api")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let access = token["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{token}"));
    let api = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let status: Value = api
        .get(format!("{workload}/api/status"))
        .bearer_auth(access)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["user"]["name"], "api-client", "{status}");
    assert_eq!(status["user"]["via"], "bearer");
    assert_eq!(
        status["user"]["roles"],
        serde_json::json!(["member", "analyst"])
    );
    // Without a token, nothing.
    let r = api.get(format!("{workload}/api/status")).send().unwrap();
    assert_eq!(r.status(), 401);
}
