//! `conclave demo` end to end, as a newcomer runs it: started as a subprocess on free ports,
//! driven only through its HTTP APIs, stopped with Ctrl-C, started again on the same state.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conclave_data::generator::{Generator, Party, Record};
use conclave_workload::service::AnalysisState;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_conclave");
const RECORDS: u64 = 300;
const SEEDS: [(Party, u64); 3] = [
    (Party::Contoso, 1),
    (Party::Fabrikam, 1),
    (Party::Woodgrove, 1),
];

/// A base port with the ten after it free.
fn free_ports() -> u16 {
    for attempt in 0..200u32 {
        // Below Linux's ephemeral port range (32768–60999), so that no outgoing connection
        // takes one of these ports between this check and the workloads binding them.
        let base = 20_000 + ((std::process::id() * 7 + attempt * 131) % 1100) as u16 * 11;
        let all_free =
            (0..11).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no eleven consecutive free ports");
}

struct Demo {
    child: Child,
    info: Value,
    http: reqwest::blocking::Client,
    /// A client pinned to each workload's TLS key (from `demo.json`), by workload id.
    workloads: std::collections::BTreeMap<String, reqwest::blocking::Client>,
    /// A client that trusts the demo's CA (the identity provider) and follows no redirect.
    ca_client: reqwest::blocking::Client,
    /// Bearer access tokens by username.
    tokens: std::cell::RefCell<std::collections::HashMap<String, String>>,
    stdout: Vec<String>,
}

/// A PKCE pair (RFC 7636): verifier, S256 challenge.
fn pkce() -> (String, String) {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .unwrap();
    let verifier = conclave_attest::api::b64url(&bytes);
    let challenge = conclave_attest::api::b64url(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
    );
    (verifier, challenge)
}

fn location(r: &reqwest::blocking::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no redirect: {}", r.status()))
        .to_str()
        .unwrap()
        .to_string()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map(str::to_string)
}

/// A blocking client that talks only to the server with this TLS key pin.
fn pinned(pin: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .tls_backend_preconfigured(conclave_net::attested_tls::pinned_tls_config(pin).unwrap())
        .build()
        .unwrap()
}

fn start(state: &Path, port: u16) -> Demo {
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--records",
            &RECORDS.to_string(),
            "--port",
            &port.to_string(),
        ])
        .arg("--state-dir")
        .arg(state)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut stdout = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo did not get ready; it printed {stdout:#?}"));
        let ready = line.contains("Conclave demo ready");
        stdout.push(line);
        if ready {
            break;
        }
    }
    // The rest of the summary.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
        stdout.push(line);
    }
    let info: Value =
        serde_json::from_slice(&std::fs::read(state.join("demo.json")).unwrap()).unwrap();
    let workloads = info["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let pin = w["pin_sha256"]
                .as_str()
                .expect("every workload's pin is known");
            (w["id"].as_str().unwrap().to_string(), pinned(pin))
        })
        .collect();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(info["ca"].as_str().unwrap()).unwrap())
        .unwrap();
    let ca_client = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    Demo {
        child,
        info,
        workloads,
        ca_client,
        tokens: Default::default(),
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        stdout,
    }
}

impl Demo {
    fn workload(&self, id: &str) -> &Value {
        self.info["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id)
            .unwrap()
    }

    fn url(&self, workload: &str) -> String {
        self.workload(workload)["url"].as_str().unwrap().to_string()
    }

    fn client(&self, workload: &str) -> &reqwest::blocking::Client {
        &self.workloads[workload]
    }

    fn password(&self, username: &str) -> (String, String) {
        let u = self.info["sign_in"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == username)
            .unwrap_or_else(|| panic!("no demo user {username}"));
        (
            u["party"].as_str().unwrap().to_string(),
            u["password"].as_str().unwrap().to_string(),
        )
    }

    /// Posts the provider's login form for `authorize_url` (its hidden fields are the
    /// authorization request's query parameters); returns the redirect it answers with.
    fn submit_login(&self, authorize_url: &str, username: &str, password: &str) -> String {
        let form = self.ca_client.get(authorize_url).send().unwrap();
        assert_eq!(form.status(), 200, "{}", form.text().unwrap());
        let query = authorize_url.split_once('?').unwrap().1;
        let r = self
            .ca_client
            .post(authorize_url.split_once('?').unwrap().0)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("{query}&username={username}&password={password}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 303, "{}", r.text().unwrap());
        location(&r)
    }

    /// A bearer access token for a demo user for the genuine workload of the user's party.
    fn token(&self, username: &str) -> String {
        let (party, _) = self.password(username);
        self.token_for(username, &format!("api://conclave-{party}-workload"))
    }

    /// A bearer access token for a demo user, as an API client gets one: authorization code
    /// with PKCE at the party's provider, through the public `conclave-cli` client, for the
    /// API `audience` (RFC 8707 `resource`).
    fn token_for(&self, username: &str, audience: &str) -> String {
        let cache_key = format!("{username} {audience}");
        if let Some(t) = self.tokens.borrow().get(&cache_key) {
            return t.clone();
        }
        let (realm, password) = self.password(username);
        let issuer = format!(
            "{}/{realm}",
            self.info["identity_provider"].as_str().unwrap()
        );
        let (verifier, challenge) = pkce();
        let redirect = "http%3A%2F%2F127.0.0.1%2Fcallback";
        let authorize = format!(
            "{issuer}/authorize?response_type=code&client_id=conclave-cli&redirect_uri={redirect}&scope=openid%20profile&state=st&code_challenge={challenge}&code_challenge_method=S256"
        );
        let back = self.submit_login(&authorize, username, &password);
        assert!(back.starts_with("http://127.0.0.1/callback?"), "{back}");
        assert_eq!(query_param(&back, "state").as_deref(), Some("st"));
        let code = query_param(&back, "code").unwrap();
        let r = self
            .ca_client
            .post(format!("{issuer}/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=authorization_code&code={code}&redirect_uri={redirect}&client_id=conclave-cli&code_verifier={verifier}&resource={}",
                audience.replace(':', "%3A").replace('/', "%2F")
            ))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let token = r.json::<Value>().unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        self.tokens.borrow_mut().insert(cache_key, token.clone());
        token
    }

    /// Signs in through a workload's page, as a browser does; returns the session cookie.
    fn sign_in(&self, workload: &str, username: &str) -> String {
        let (_, password) = self.password(username);
        let pinned = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(
                conclave_net::attested_tls::pinned_tls_config(
                    self.workload(workload)["pin_sha256"].as_str().unwrap(),
                )
                .unwrap(),
            )
            .build()
            .unwrap();
        let r = pinned
            .get(format!("{}auth/login?next=/api/status", self.url(workload)))
            .send()
            .unwrap();
        assert_eq!(r.status(), 303);
        let login_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            login_cookie.starts_with("__Host-conclave-login-"),
            "{login_cookie}"
        );
        let login_cookie = login_cookie.split(';').next().unwrap().to_string();
        let authorize = location(&r);
        assert!(
            authorize.contains("code_challenge_method=S256"),
            "{authorize}"
        );
        let back = self.submit_login(&authorize, username, &password);
        assert!(
            back.starts_with(&format!("{}auth/callback?", self.url(workload))),
            "{back}"
        );
        // The callback without the login cookie (another browser: login CSRF) opens nothing.
        let r = pinned.get(&back).send().unwrap();
        assert_eq!(r.status(), 401, "{}", r.text().unwrap());
        let r = pinned
            .get(&back)
            .header("cookie", &login_cookie)
            .send()
            .unwrap();
        assert_eq!(r.status(), 303, "{}", r.text().unwrap());
        assert_eq!(location(&r), "/api/status");
        let cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| c.starts_with("__Host-conclave-session-"))
            .unwrap();
        for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        cookie.split(';').next().unwrap().to_string()
    }

    /// Who the tests act as by default: the workload's party's member, or Woodgrove's analyst
    /// for analyses and contracts (the snooper and the tampered workload run Woodgrove's
    /// config).
    fn default_user(&self, workload: &str, path: &str) -> String {
        let party = self.workload(workload)["party"]
            .as_str()
            .unwrap()
            .to_string();
        if (path.starts_with("api/analysis") || path.starts_with("api/contracts"))
            && party == "woodgrove"
        {
            format!("{party}-analyst")
        } else {
            format!("{party}-member")
        }
    }

    fn as_user(
        &self,
        method: reqwest::Method,
        workload: &str,
        path: &str,
    ) -> reqwest::blocking::Response {
        let token = self.token_for(
            &self.default_user(workload, path),
            self.workload(workload)["audience"].as_str().unwrap(),
        );
        self.client(workload)
            .request(method, format!("{}{path}", self.url(workload)))
            .bearer_auth(token)
            .send()
            .unwrap()
    }

    fn get(&self, workload: &str, path: &str) -> (u16, Value) {
        let r = self.as_user(reqwest::Method::GET, workload, path);
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    fn get_text(&self, workload: &str, path: &str) -> (u16, String) {
        let r = self.as_user(reqwest::Method::GET, workload, path);
        (r.status().as_u16(), r.text().unwrap())
    }

    fn post(&self, workload: &str, path: &str) -> (u16, Value) {
        let r = self.as_user(reqwest::Method::POST, workload, path);
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    /// Runs contract `id` on `workload` and waits for the run's final view.
    fn run_contract(&self, workload: &str, id: &str) -> Value {
        let (code, started) = self.post(workload, &format!("api/contracts/{id}/run"));
        assert_eq!(code, 202, "{started}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, v) = self.get(workload, "api/contracts/run");
            if analysis_state(&v).is_final() {
                return v;
            }
            assert!(Instant::now() < deadline, "{v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn all_own_records(&self, workload: &str) -> Vec<Record> {
        let mut out = Vec::new();
        loop {
            let (status, page) = self.get(
                workload,
                &format!("api/records?offset={}&limit=200", out.len()),
            );
            assert_eq!(status, 200, "{page}");
            let records: Vec<Record> = serde_json::from_value(page["records"].clone()).unwrap();
            if records.is_empty() {
                return out;
            }
            out.extend(records);
        }
    }

    /// Ctrl-C, and a clean exit.
    fn interrupt(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the demo exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not stop after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn generated(party: Party) -> Vec<Record> {
    let seed = SEEDS.iter().find(|(p, _)| *p == party).unwrap().1;
    Generator::new(party, seed, RECORDS).records().collect()
}

fn reference_analysis(dir: &Path, k: u64, year: i64) -> Value {
    let mut csvs: Vec<PathBuf> = Vec::new();
    for (party, seed) in SEEDS {
        let path = dir.join(format!("{}.csv", party.name()));
        let mut w = arrow_csv::WriterBuilder::new()
            .with_header(true)
            .build(std::fs::File::create(&path).unwrap());
        let mut g = Generator::new(party, seed, RECORDS);
        while let Some(b) = g.next_batch(1000) {
            w.write(&b).unwrap();
        }
        csvs.push(path);
    }
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/reference/analytics.py"
        ))
        .arg(k.to_string())
        .arg(year.to_string())
        .args(&csvs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A query of a contract run's result as the reference's groups: its `labels` columns joined
/// by "/", `records` as the count, and the average salary when the query has one; only the rows
/// whose `column` is `value`, with `only`.
fn contract_groups(
    result: &Value,
    query: &str,
    labels: &[&str],
    only: Option<(&str, &Value)>,
) -> Vec<Value> {
    contract_query(result, query)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| only.is_none_or(|(column, value)| &r[column] == value))
        .map(|r| {
            let label: Vec<&str> = labels.iter().map(|l| r[*l].as_str().unwrap()).collect();
            let mut g = serde_json::json!({"label": label.join("/"), "count": r["records"]});
            if let Some(a) = r.get("average_salary").filter(|a| !a.is_null()) {
                g["average_salary"] = a.clone();
            }
            g
        })
        .collect()
}

fn contract_query<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("no query {name}: {result}"))
}

/// The demographics contract's result equals the reference analysis (shaped as the built-in
/// analysis's result), part by part.
fn assert_demographics_equal(result: &Value, reference: &Value) {
    let top: Vec<Value> = reference["top_countries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| serde_json::json!({"label": c["country"], "count": c["count"]}))
        .collect();
    assert!(!top.is_empty());
    assert_eq!(
        contract_groups(result, "top_countries", &["country"], None),
        top
    );
    assert_eq!(
        contract_query(result, "top_countries")["suppressed_groups"],
        reference["top_countries_suppressed"]
    );
    for c in reference["top_countries"].as_array().unwrap() {
        assert_eq!(
            contract_groups(
                result,
                "top_cities",
                &["city"],
                Some(("country", &c["country"]))
            ),
            c["top_cities"]["groups"].as_array().unwrap().clone(),
            "{}",
            c["country"]
        );
    }
    let companies = contract_query(result, "companies")["rows"]
        .as_array()
        .unwrap();
    let reference_companies = reference["companies"].as_object().unwrap();
    assert_eq!(companies.len(), reference_companies.len());
    for (name, c) in reference_companies {
        let row = companies
            .iter()
            .find(|r| r["company"] == name.as_str())
            .unwrap();
        assert_eq!(row["records"], c["records"], "{name}");
        assert_eq!(row["average_salary"], c["average_salary"], "{name}");
        let company = Value::from(name.as_str());
        for (query, label, table) in [
            ("generations", "generation", "generations"),
            ("eye_colors", "eye_color", "eye_colors"),
            ("favorite_colors", "favorite_color", "favorite_colors"),
        ] {
            assert_eq!(
                contract_groups(result, query, &[label], Some(("company", &company))),
                c[table]["groups"].as_array().unwrap().clone(),
                "{name} {query}"
            );
        }
    }
    for (query, label) in [
        ("salary_by_country", "country"),
        ("salary_by_generation", "generation"),
    ] {
        assert_eq!(
            contract_groups(result, query, &[label], None),
            reference[query]["groups"].as_array().unwrap().clone(),
            "{query}"
        );
        assert_eq!(
            contract_query(result, query)["suppressed_groups"],
            reference[query]["suppressed_groups"],
            "{query}"
        );
    }
}

/// An impostor: a TLS server with its own key that answers `/api/attestation` with a genuine
/// workload's evidence (a relay of its token).
struct Relay {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.take().map(|s| s.send(()));
        self.thread.take().map(|t| t.join());
    }
}

fn relay_server(evidence: Value) -> Relay {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("https://{}/", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let id = conclave_net::attested_tls::TeeTlsIdentity::generate(&["127.0.0.1".into()])
                .unwrap();
            let router = axum::Router::new().route(
                "/api/attestation",
                axum::routing::get(move || async move { axum::Json(evidence) }),
            );
            conclave_net::serve(
                tokio::net::TcpListener::from_std(listener).unwrap(),
                router,
                Some(id.server_config().unwrap()),
                async move {
                    stopped.await.ok();
                },
            )
            .await
            .unwrap();
        });
    });
    Relay {
        url,
        stop: Some(stop),
        thread: Some(thread),
    }
}

fn conclave(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn the_whole_story_through_the_api_then_ctrl_c_then_a_second_start() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let port = free_ports();
    let demo = start(&state, port);
    let summary = demo.stdout.join("\n");
    assert!(summary.contains("SIMULATED SEV-SNP"), "{summary}");
    assert!(
        summary.contains(&format!("http://127.0.0.1:{port}/")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("https://127.0.0.1:{}/", port + 5)),
        "{summary}"
    );
    assert!(summary.contains("Ctrl-C"), "{summary}");

    // A second demo on the same ports says which port is taken and how to choose others.
    let clash = conclave(&[
        "demo",
        "--port",
        &port.to_string(),
        "--state-dir",
        tmp.path().join("other").to_str().unwrap(),
    ]);
    assert!(!clash.status.success());
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(
        err.contains(&format!("port {port} is in use")) && err.contains("--port"),
        "{err}"
    );

    // The genuine parties: attested on the sim platform, own key released.
    let mut kids = Vec::new();
    for party in ["contoso", "fabrikam", "woodgrove"] {
        let (code, s) = demo.get(party, "api/status");
        assert_eq!(code, 200);
        assert_eq!(s["attestation"]["state"], "attested", "{party}: {s}");
        assert_eq!(s["simulated"], true);
        assert_eq!(s["attestation"]["claims"]["x-conclave-platform"], "sim");
        let own = s["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["own"] == true)
            .unwrap();
        assert_eq!(own["release"]["state"], "released", "{party}: {s}");
        kids.push(own["release"]["kid"].as_str().unwrap().to_string());
        // The same answer read as the workload's typed status, as the demo's launcher reads it.
        let typed: conclave_workload::api::WorkloadStatus =
            serde_json::from_value(s.clone()).unwrap();
        assert_eq!(typed.party, party);
        assert_eq!(typed.user.as_ref().map(|u| u.via.as_str()), Some("bearer"));
        assert_eq!(
            typed.analysis_states,
            conclave_workload::api::AnalysisCatalogue::new()
        );
    }

    // Only the right people: nothing but health, readiness and attestation evidence answers
    // without sign-in; a page sends the browser to sign in; tokens are checked for issuer and
    // audience; roles decide records (members) and analyses (analysts).
    let anonymous = |w: &str, path: &str| {
        demo.client(w)
            .get(format!("{}{path}", demo.url(w)))
            .send()
            .unwrap()
    };
    for path in ["healthz", "readyz", "api/attestation"] {
        assert_eq!(anonymous("contoso", path).status(), 200, "{path}");
    }
    for path in [
        "api/status",
        "api/records",
        "api/contracts",
        "api/contracts/run",
        "api/contracts/run/receipt",
        "metrics",
        "api/no-such-api",
    ] {
        let r = anonymous("woodgrove", path);
        assert_eq!(r.status(), 401, "{path}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"]["code"], "Unauthenticated", "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/auth/login")
        );
    }
    let no_redirect = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(
            conclave_net::attested_tls::pinned_tls_config(
                demo.workload("contoso")["pin_sha256"].as_str().unwrap(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let page = no_redirect.get(demo.url("contoso")).send().unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(location(&page), "/auth/login?next=/");
    let with_token = |w: &str, user: &str, method: reqwest::Method, path: &str| {
        demo.client(w)
            .request(method, format!("{}{path}", demo.url(w)))
            .bearer_auth(demo.token(user))
            .send()
            .unwrap()
    };
    // Another party's token (another issuer, another audience) is refused.
    let r = with_token(
        "fabrikam",
        "contoso-member",
        reqwest::Method::GET,
        "api/status",
    );
    assert_eq!(r.status(), 401);
    assert!(r.text().unwrap().contains("bearer token is not accepted"));
    // A forged token (one changed signature byte) is refused.
    let token = demo.token("contoso-member");
    let at = token.rfind('.').unwrap() + 10;
    let mut forged = token.into_bytes();
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let r = demo
        .client("contoso")
        .get(format!("{}api/status", demo.url("contoso")))
        .bearer_auth(forged)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // A token for the snooper's API (what a user's sign-in at the snooper gives it) is refused by
    // the genuine workload.
    let snooper_token = demo.token_for(
        "woodgrove-member",
        demo.workload("snooper")["audience"].as_str().unwrap(),
    );
    let r = demo
        .client("woodgrove")
        .get(format!("{}api/status", demo.url("woodgrove")))
        .bearer_auth(snooper_token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().unwrap().contains("not for"));
    // The analyst never sees records, even its own party's; a member runs no contract.
    let r = with_token(
        "woodgrove",
        "woodgrove-analyst",
        reqwest::Method::GET,
        "api/records",
    );
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("needs the member role"));
    let r = with_token(
        "woodgrove",
        "woodgrove-member",
        reqwest::Method::POST,
        "api/contracts/partner-demographics/run",
    );
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("needs the analyst role"));
    for path in ["api/contracts", "api/contracts/run"] {
        let r = with_token("woodgrove", "woodgrove-member", reqwest::Method::GET, path);
        assert_eq!(r.status(), 403, "{path}");
    }
    // The built-in analysis is off: no owner's key is bound to it.
    let r = with_token(
        "woodgrove",
        "woodgrove-analyst",
        reqwest::Method::POST,
        "api/analysis",
    );
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("AnalysisNotConfigured"));
    let me = with_token(
        "woodgrove",
        "woodgrove-analyst",
        reqwest::Method::GET,
        "api/status",
    )
    .json::<Value>()
    .unwrap();
    assert_eq!(me["user"]["name"], "woodgrove-analyst");
    assert_eq!(me["user"]["roles"], serde_json::json!(["analyst"]));
    assert_eq!(me["user"]["via"], "bearer");
    // A browser session: signed in through the page and the party's provider; a change made
    // with it must come from the workload's own origin; signing out ends it.
    let session = demo.sign_in("contoso", "contoso-member");
    let with_session = |method: reqwest::Method, path: &str, origin: Option<&str>| {
        let mut r = demo
            .client("contoso")
            .request(method, format!("{}{path}", demo.url("contoso")))
            .header("cookie", &session);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send().unwrap()
    };
    let r = with_session(reqwest::Method::GET, "api/records?limit=3", None);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().unwrap()["records"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let own_origin = demo.url("contoso").trim_end_matches('/').to_string();
    let r = with_session(
        reqwest::Method::POST,
        "api/keys/contoso/release",
        Some("https://evil.example"),
    );
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("CrossOrigin"));
    let r = with_session(reqwest::Method::POST, "api/keys/contoso/release", None);
    assert_eq!(r.status(), 403);
    let r = with_session(
        reqwest::Method::POST,
        "api/keys/contoso/release",
        Some(&own_origin),
    );
    assert_eq!(r.status(), 200);
    let r = with_session(reqwest::Method::POST, "auth/logout", Some(&own_origin));
    assert_eq!(r.status(), 200);
    let r = with_session(reqwest::Method::GET, "api/records", None);
    assert_eq!(r.status(), 401);
    // A wrong password gets the form again, with the reason, and no code.
    let (verifier_unused, challenge) = pkce();
    let _ = verifier_unused;
    let authorize = format!(
        "{}/contoso/authorize?response_type=code&client_id=conclave-cli&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcallback&scope=openid&code_challenge={challenge}&code_challenge_method=S256",
        demo.info["identity_provider"].as_str().unwrap()
    );
    let query = authorize.split_once('?').unwrap().1.to_string();
    let r = demo
        .ca_client
        .post(authorize.split_once('?').unwrap().0)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("{query}&username=contoso-member&password=wrong"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().unwrap().contains("Wrong username or password"));

    // Each party sees its own records, exactly the generated ones.
    let contoso = demo.all_own_records("contoso");
    // Every record view is logged with the user (and never with the records).
    let log = std::fs::read_to_string(demo.workload("contoso")["log"].as_str().unwrap()).unwrap();
    let views: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("records viewed"))
        .collect();
    assert!(!views.is_empty(), "{log}");
    assert!(
        views.iter().all(|l| l.contains("contoso-member")),
        "{views:?}"
    );
    assert!(
        log.contains("signed in") && log.contains("signed out"),
        "{log}"
    );
    assert!(!log.contains(&contoso[0].phone));
    assert_eq!(contoso, generated(Party::Contoso));
    assert_eq!(demo.all_own_records("fabrikam"), generated(Party::Fabrikam));
    // Woodgrove's record view is its own records only, never a partner's.
    assert_eq!(
        demo.all_own_records("woodgrove"),
        generated(Party::Woodgrove)
    );
    let (_, found) = demo.get("contoso", "api/records?q=united&limit=200");
    let found: Vec<Record> = serde_json::from_value(found["records"].clone()).unwrap();
    assert!(!found.is_empty());
    assert!(
        found
            .iter()
            .all(|r| format!("{r:?}").to_lowercase().contains("united"))
    );

    // Cross-company release: refused by Fabrikam's vault, with its reason.
    let (code, denied) = demo.post("contoso", "api/keys/fabrikam/release");
    assert_eq!(code, 403);
    assert_eq!(denied["state"], "denied");
    assert_eq!(denied["by"], "vault");
    assert!(
        denied["reason"]
            .as_str()
            .unwrap()
            .contains("no release grant"),
        "{denied}"
    );

    // The snooper: no TEE, Woodgrove's tokens; nothing is released, nothing is shown.
    let (_, s) = demo.get("snooper", "api/status");
    assert_eq!(s["tee"], false);
    assert_eq!(s["attestation"]["state"], "no-tee");
    for company in ["woodgrove", "contoso", "fabrikam"] {
        let (code, d) = demo.post("snooper", &format!("api/keys/{company}/release"));
        assert_eq!(code, 403, "{d}");
        assert_eq!(d["by"], "vault");
        assert!(
            d["reason"]
                .as_str()
                .unwrap()
                .contains("attestation token rejected"),
            "{d}"
        );
    }
    let (code, _) = demo.get("snooper", "api/records");
    assert_eq!(code, 403);

    // The tampered workload: a real (sim) TEE, but the wrong measurement.
    let (_, s) = demo.get("tampered", "api/status");
    assert_eq!(s["attestation"]["state"], "attested");
    let (code, d) = demo.post("tampered", "api/keys/contoso/release");
    assert_eq!(code, 403);
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("x-ms-sevsnpvm-launchmeasurement"),
        "{d}"
    );

    // Woodgrove's workload lists the demo's contracts and who approved each.
    let (code, list) = demo.get("woodgrove", "api/contracts");
    assert_eq!(code, 200, "{list}");
    let listed = |id: &str| {
        list["contracts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{id}: {list}"))
            .clone()
    };
    assert!(list["broken"].as_array().unwrap().is_empty(), "{list}");
    assert_eq!(listed("partner-demographics")["approved"], true);
    assert_eq!(listed("shared-customers")["approved"], true);
    let salaries = listed("contoso-salaries");
    assert_eq!(salaries["approved"], false);
    assert_eq!(salaries["approvals"][0]["party"], "contoso");
    assert_eq!(salaries["approvals"][0]["status"], "not-approved");

    // The partner demographics, as a contract: live progress over SSE, every owner's key
    // released for it, and a result equal to an independent computation.
    let (code, started) = demo.post("woodgrove", "api/contracts/partner-demographics/run");
    assert_eq!(code, 202, "{started}");
    let events = demo.as_user(
        reqwest::Method::GET,
        "woodgrove",
        "api/contracts/run/events",
    );
    assert_eq!(
        events.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut reader = BufReader::new(events);
    let mut last = Value::Null;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(data) = line.trim_end().strip_prefix("data:") {
            last = serde_json::from_str(data.trim()).unwrap();
            if analysis_state(&last).is_final() {
                break;
            }
        }
        line.clear();
    }
    assert_eq!(analysis_state(&last), AnalysisState::Done, "{last}");
    let progress = &last["progress"];
    assert_eq!(progress["stage"], "releasing", "{last}");
    assert_eq!(progress["queries_released"], progress["queries"], "{last}");
    for r in last["releases"].as_array().unwrap() {
        assert_eq!(r["release"]["state"], "released", "{r}");
    }
    for i in last["inputs"].as_array().unwrap() {
        assert_eq!(i["records"], RECORDS, "{i}");
    }
    assert_eq!(
        last["sealed_to"],
        serde_json::json!(["contoso", "fabrikam", "woodgrove"])
    );
    let (_, status) = demo.get("woodgrove", "api/status");
    let year = status["reference_year"].as_i64().unwrap();
    let k = last["result"]["k"].as_u64().unwrap();
    assert_eq!(k, 10, "the contract's k");
    let expected = reference_analysis(tmp.path(), k, year);
    assert_demographics_equal(&last["result"], &expected);

    // The receipt and sealed results verify offline against the attestation service's keys,
    // the contract and Woodgrove's receiver key, and name the genuine Woodgrove measurement; a
    // changed byte breaks it.
    let (code, bundle) = demo.get_text("woodgrove", "api/contracts/run/receipt");
    assert_eq!(code, 200, "{bundle}");
    let receipt_path = tmp.path().join("contract-receipt.json");
    std::fs::write(&receipt_path, &bundle).unwrap();
    let jwks = format!("{}/certs", demo.info["attestation"].as_str().unwrap());
    let ca = demo.info["ca"].as_str().unwrap().to_string();
    let contract_file = state.join("contracts/partner-demographics.toml");
    let receiver_key = state.join("keys/woodgrove-receiver.key");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "receipt",
            "verify",
            receipt_path.to_str().unwrap(),
            "--jwks",
            &jwks,
            "--ca",
            &ca,
        ];
        args.extend_from_slice(extra);
        conclave(&args)
    };
    let out = verify(&[
        "--contract",
        contract_file.to_str().unwrap(),
        "--receiver-key",
        receiver_key.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        verified["measurement"],
        demo.workload("woodgrove")["measurement"]
    );
    assert_eq!(verified["platform"], "sim");
    assert_eq!(verified["inputs"].as_array().unwrap().len(), 3);
    assert_eq!(verified["opened_by"], "woodgrove");
    assert_eq!(verified["result"], last["result"]);
    let other = "ab".repeat(48);
    let out = verify(&["--expect-measurement", &other]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected"));
    let mut forged: Value = serde_json::from_str(&bundle).unwrap();
    let receipt = forged["receipt"].as_str().unwrap().to_string();
    let dot = receipt.find('.').unwrap() + 10;
    let mut bytes = receipt.into_bytes();
    bytes[dot] = if bytes[dot] == b'A' { b'B' } else { b'A' };
    forged["receipt"] = String::from_utf8(bytes).unwrap().into();
    std::fs::write(&receipt_path, forged.to_string()).unwrap();
    let out = verify(&[]);
    assert!(!out.status.success());

    // The cross-party join runs too (Fabrikam and Woodgrove approved it): its groups are
    // released or, at this demo's size, mostly withheld below k, and counted either way.
    let join = demo.run_contract("woodgrove", "shared-customers");
    assert_eq!(analysis_state(&join), AnalysisState::Done, "{join}");
    for q in ["shared_by_country", "shared_favorite_colors"] {
        let q = contract_query(&join["result"], q);
        let groups =
            q["rows"].as_array().unwrap().len() as u64 + q["suppressed_groups"].as_u64().unwrap();
        assert!(groups > 0, "{join}");
    }

    // The contract Contoso did not approve: refused at Contoso's vault, which says why;
    // nothing is released.
    let refused = demo.run_contract("woodgrove", "contoso-salaries");
    assert_eq!(analysis_state(&refused), AnalysisState::Failed, "{refused}");
    assert!(refused["result"].is_null());
    let release = &refused["releases"][0]["release"];
    assert_eq!(release["state"], "denied", "{refused}");
    assert_eq!(release["by"], "vault");
    assert!(
        release["reason"]
            .as_str()
            .unwrap()
            .contains("x-ms-runtime.contract.digest"),
        "{refused}"
    );
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("Contoso's vault refused"),
        "{refused}"
    );

    // The workload's TLS key is the attested one (checked from outside, trusting no CA for it);
    // the snooper has no attestation; a server relaying Woodgrove's genuine token with its own
    // TLS key is refused.
    let verify_endpoint = |url: &str| {
        conclave(&[
            "party",
            "verify-endpoint",
            url,
            "--jwks",
            &jwks,
            "--ca",
            &ca,
            "--json",
        ])
    };
    let out = verify_endpoint(&demo.url("woodgrove"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let endpoint: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        endpoint["pin_sha256"],
        demo.workload("woodgrove")["pin_sha256"]
    );
    assert_eq!(
        endpoint["measurement"],
        demo.workload("woodgrove")["measurement"]
    );
    assert_eq!(endpoint["simulated"], true);
    assert_eq!(demo.workload("woodgrove")["pin_attested"], true);
    let out = verify_endpoint(&demo.url("snooper"));
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("503") && e.contains("--tee none"), "{e}");
    assert_eq!(demo.workload("snooper")["pin_attested"], false);
    let (code, evidence) = demo.get("woodgrove", "api/attestation");
    assert_eq!(code, 200);
    let relay = relay_server(evidence);
    let out = verify_endpoint(&relay.url);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("is not the attested one"), "{e}");
    drop(relay);

    // The snooper cannot even ask: without a TEE it cannot attest a contract.
    let snooped = demo.run_contract("snooper", "partner-demographics");
    assert_eq!(analysis_state(&snooped), AnalysisState::Failed, "{snooped}");
    assert!(snooped["result"].is_null());
    assert!(
        snooped["error"]
            .as_str()
            .unwrap()
            .contains("cannot attest a contract"),
        "{snooped}"
    );

    // No plaintext from any endpoint of the snooper or the tampered workload.
    let secrets: HashSet<String> = [Party::Contoso, Party::Fabrikam, Party::Woodgrove]
        .into_iter()
        .flat_map(generated)
        .flat_map(|r| [r.phone, r.address])
        .collect();
    for w in ["snooper", "tampered"] {
        for path in [
            "api/status",
            "api/records",
            "api/records?limit=200",
            "api/contracts/run",
            "api/contracts/run/receipt",
            "api/keys/woodgrove/release",
        ] {
            let (_, body) = demo.get_text(w, path);
            for s in &secrets {
                assert!(!body.contains(s.as_str()), "{w} {path} leaks {s}");
            }
        }
    }

    // No endpoint of any workload hands out key material.
    for w in ["contoso", "fabrikam", "woodgrove", "snooper", "tampered"] {
        for path in [
            "api/status",
            "api/contracts",
            "api/contracts/run",
            "api/contracts/run/receipt",
            "api/records",
        ] {
            let (_, body) = demo.get_text(w, path);
            for marker in ["PRIVATE KEY", "key_hsm", "\"d\":", "\"p\":", "\"dp\":"] {
                assert!(!body.contains(marker), "{w} {path} contains {marker}");
            }
        }
    }

    // The portal lists everything and serves each vault's audit log.
    let portal = demo.info["portal"].as_str().unwrap().to_string();
    let page = demo.http.get(&portal).send().unwrap().text().unwrap();
    assert!(page.contains("SIMULATED TEE"));
    let layout: Value = demo
        .http
        .get(format!("{portal}api/demo"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(layout["workloads"].as_array().unwrap().len(), 5);
    let audit: Value = demo
        .http
        .get(format!("{portal}api/audit/fabrikam"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let entries = audit["value"].as_array().unwrap();
    assert!(entries.iter().any(|e| {
        let e = e.get("event").unwrap_or(e);
        e["action"] == "release" && e["outcome"] == "denied" && e["principal"] == "contoso"
    }));
    // Contoso's vault audited its refusal of the contract it did not approve, with the reason.
    let audit: Value = demo
        .http
        .get(format!("{portal}api/audit/contoso"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        audit["value"].as_array().unwrap().iter().any(|e| {
            let e = e.get("event").unwrap_or(e);
            e["action"] == "release"
                && e["outcome"] == "denied"
                && e["principal"] == "woodgrove"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("x-ms-runtime.contract.digest"))
        }),
        "{audit}"
    );

    // Ctrl-C: a clean exit; then every vault's audit chain verifies.
    demo.interrupt();
    for party in demo_parties(&state) {
        let out = conclave(&["audit", "verify", "--state-dir", party.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            party.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A second start reuses the state: same keys, same records.
    let again = start(&state, port);
    for (i, party) in ["contoso", "fabrikam", "woodgrove"].iter().enumerate() {
        let (_, s) = again.get(party, "api/status");
        let own = s["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["own"] == true)
            .unwrap()
            .clone();
        assert_eq!(own["release"]["kid"].as_str().unwrap(), kids[i], "{party}");
    }
    assert_eq!(again.all_own_records("contoso"), contoso);

    // Contoso rotates its key. Its dataset still names the old version, which stays releasable:
    // Woodgrove's contract run is released that one. Once Contoso moves the dataset to the new version (the
    // vault re-wraps its data key), Woodgrove is released the new one.
    let vault = kids[0].split("/keys/").next().unwrap().to_string();
    let owner_token = format!(
        "@{}",
        state.join("tokens/contoso-vault.contoso.token").display()
    );
    let ca = again.info["ca"].as_str().unwrap().to_string();
    let as_contoso = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
            .args(args)
            .env("CONCLAVE_VAULT", &vault)
            .env("CONCLAVE_CA", &ca)
            .env("CONCLAVE_VAULT_TOKEN", &owner_token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let rotated = as_contoso(&["key", "rotate", "contoso-data"]);
    let v2 = rotated["key"]["kid"].as_str().unwrap().to_string();
    assert_ne!(v2, kids[0]);
    let released = |expected: &str| {
        let run = again.run_contract("woodgrove", "partner-demographics");
        assert_eq!(analysis_state(&run), AnalysisState::Done, "{run}");
        assert_eq!(run["inputs"][0]["company"], "contoso", "{run}");
        assert_eq!(run["inputs"][0]["key"], expected, "{run}");
    };
    released(&kids[0]);
    let dataset = state.join("storage/contoso.parquet");
    let moved = as_contoso(&["data", "rewrap", dataset.to_str().unwrap()]);
    assert_eq!(moved["to"], v2.as_str());
    released(&v2);
    again.interrupt();
}

fn demo_parties(state: &Path) -> Vec<PathBuf> {
    ["contoso", "fabrikam", "woodgrove"]
        .iter()
        .map(|p| state.join("vaults").join(p))
        .collect()
}

/// The analysis state of a workload's `/api/analysis` view (the workload's own type).
fn analysis_state(view: &Value) -> AnalysisState {
    serde_json::from_value(view["state"].clone()).unwrap_or_else(|e| panic!("{e}: {view}"))
}
