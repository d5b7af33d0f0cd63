//! Shared set-up of the integration tests: a local CA, the sim platform, the real attestation
//! service and a real vault over TLS on loopback. (Each test binary uses only part of it.)
#![allow(dead_code, unused_imports)]

pub use std::path::{Path, PathBuf};
pub use std::sync::Arc;
pub use std::time::Duration;

pub use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PublicEncryptingKey,
};
pub use conclave_attest::api::{
    AttestSevSnpVmRequest, attest, b64url, b64url_decode, report_data_for,
};
pub use conclave_attest::service::{AttestationService, ServiceConfig};
pub use conclave_attest::{AppraisalPolicy, PlatformName};
pub use conclave_kms::api::{
    CreateKeyRequest, KeyAttributes, ReleasePolicyBody, ReleaseRequest, UpdateKeyRequest,
};
pub use conclave_kms::client::{ClientError, VaultClient, open_release};
pub use conclave_kms::store::Permission;
pub use conclave_net::LocalCa;
pub use conclave_sim_host::{LaunchIdentity, SimHost, measure};
pub use conclave_snp::TrustedRoots;
pub use conclave_tee::ephemeral::EphemeralKey;
pub use conclave_tee::{Evidence, Platform};
pub use serde_json::{Value, json};

pub struct Env {
    pub _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub ca: LocalCa,
    pub http: reqwest::Client,
    pub sim: SimHost,
    pub attest_url: String,
    pub vault_url: String,
    pub admin: String,
    pub _stops: Vec<Running>,
}

/// Servers started through `conclave_deploy`, stopped when this is dropped.
pub struct Running(conclave_deploy::Stop);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.stop();
    }
}

pub const GOOD_CONFIG: &[u8] = b"party = \"woodgrove\"\n";

pub fn good_measurement() -> String {
    hex::encode(measure(b"workload", &[], GOOD_CONFIG))
}

pub async fn spawn_tls(
    router: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(conclave_net::serve(listener, router, Some(tls), async {
        stopped.await.ok();
    }));
    stop
}

pub fn sim_policy() -> AppraisalPolicy {
    conclave_deploy::policy_for(&[PlatformName::Sim])
}

pub async fn attestation_service(dir: &Path, ca: &LocalCa, sim: &SimHost) -> (String, Running) {
    attestation_service_with(dir, ca, sim, sim_policy()).await
}

/// An attestation service trusting AMD's roots and `sim`'s, appraising with `policy`.
pub async fn attestation_service_with(
    dir: &Path,
    ca: &LocalCa,
    sim: &SimHost,
    policy: AppraisalPolicy,
) -> (String, Running) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = conclave_deploy::Stop::default();
    let (url, _) = conclave_deploy::attestation_service(
        dir,
        ca,
        sim,
        policy,
        Duration::from_secs(600),
        listener,
        &stop,
    )
    .unwrap();
    (url, Running(stop))
}

pub async fn start_vault(
    dir: &Path,
    ca: &LocalCa,
    http: &reqwest::Client,
    authorities: Vec<String>,
    hardware_only: bool,
) -> (String, Running) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = conclave_deploy::Stop::default();
    let (url, _, _) = conclave_deploy::vault(
        conclave_deploy::VaultSpec {
            authorities,
            hardware_only,
            ..conclave_deploy::VaultSpec::new(dir, ca, http, "")
        },
        listener,
        &stop,
    )
    .unwrap();
    (url, Running(stop))
}

pub async fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ca = LocalCa::load_or_create(&dir.join("ca")).unwrap();
    let http = conclave_net::client(Some(&ca.cert_path())).unwrap();
    let sim = SimHost::open(&dir.join("sim")).unwrap();
    let (attest_url, stop_a) = attestation_service(&dir.join("attest"), &ca, &sim).await;
    let (vault_url, stop_v) = start_vault(
        &dir.join("vault"),
        &ca,
        &http,
        vec![attest_url.clone()],
        false,
    )
    .await;
    let admin = std::fs::read_to_string(dir.join("vault/admin.token")).unwrap();
    Env {
        _dir: tmp,
        dir,
        ca,
        http,
        sim,
        attest_url,
        vault_url,
        admin,
        _stops: vec![stop_a, stop_v],
    }
}

impl Env {
    pub fn client(&self, token: &str) -> VaultClient {
        VaultClient::new(self.http.clone(), &self.vault_url, token)
    }

    pub async fn principal(&self, name: &str) -> VaultClient {
        let token = self
            .client(&self.admin)
            .add_principal(name, false)
            .await
            .unwrap();
        self.client(&token)
    }

    /// A new principal `owner` holding one exportable key `key` under `policy`.
    pub async fn owner_with_key(&self, owner: &str, key: &str, policy: &Value) -> VaultClient {
        let client = self.principal(owner).await;
        client
            .create_key(key, &exportable(policy, true))
            .await
            .unwrap();
        client
    }

    /// A token from the real attestation service for sim evidence with this launch config.
    pub async fn token(&self, runtime: &[u8], config: &[u8], nonce: Option<&str>) -> String {
        let identity = LaunchIdentity {
            measurement: measure(b"workload", &[], config),
            host_data: conclave_sim_host::host_data(config),
            policy: conclave_snp::report::GuestPolicy(0x3_0000),
            report_id: [3; 32],
        };
        let evidence = Evidence {
            platform: Platform::Sim,
            report: self
                .sim
                .platform()
                .sign_report(&identity, report_data_for(runtime))
                .unwrap(),
            cert_chain_pem: self.sim.platform().cert_chain_pem(),
            hcl_runtime_claims: None,
            tpm_quote: None,
        };
        let req = AttestSevSnpVmRequest::new(&evidence, runtime, nonce.map(String::from));
        attest(&self.http, &self.attest_url, &req).await.unwrap()
    }

    pub fn policy(&self, measurement: &str) -> Value {
        json!({"version": "1.0.0", "anyOf": [{"authority": self.attest_url, "allOf": [
            {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
            {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
            {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": measurement}
        ]}]})
    }

    pub async fn audit_tail(&self) -> Value {
        let log = self.client(&self.admin).audit(0).await.unwrap();
        serde_json::to_value(log.value.last().unwrap()).unwrap()
    }
}

/// Evidence signed by the sim platform directly for a workload launched with `config`, whatever
/// process asks: a workload run in a test's own process attests with it.
pub struct SignedEvidence {
    pub sim: SimHost,
    pub config: Vec<u8>,
}

impl conclave_tee::EvidenceSource for SignedEvidence {
    fn platform(&self) -> Platform {
        Platform::Sim
    }

    fn evidence(&self, report_data: [u8; 64]) -> conclave_tee::EvidenceFuture<'_> {
        Box::pin(async move {
            let identity = LaunchIdentity {
                measurement: measure(b"workload", &[], &self.config),
                host_data: conclave_sim_host::host_data(&self.config),
                policy: conclave_snp::report::GuestPolicy(conclave_tee::sim::POLICY_DEFAULT),
                report_id: [7; 32],
            };
            Ok(Evidence {
                platform: Platform::Sim,
                report: self.sim.platform().sign_report(&identity, report_data)?,
                cert_chain_pem: self.sim.platform().cert_chain_pem(),
                hcl_runtime_claims: None,
                tpm_quote: None,
            })
        })
    }
}

/// A release request for this attestation token, with no nonce and the default wrap.
pub fn release_to(target: String) -> ReleaseRequest {
    ReleaseRequest {
        target,
        nonce: None,
        enc: None,
    }
}

pub fn exportable(policy: &Value, immutable: bool) -> CreateKeyRequest {
    CreateKeyRequest {
        kty: Some("RSA-HSM".into()),
        key_size: Some(2048),
        attributes: Some(KeyAttributes {
            exportable: Some(true),
            ..Default::default()
        }),
        release_policy: Some(ReleasePolicyBody {
            content_type: None,
            data: Some(b64url(policy.to_string().as_bytes())),
            immutable: Some(immutable),
        }),
        ..Default::default()
    }
}

pub fn refused(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Refused {
            status, message, ..
        } => (status, message),
        other => panic!("expected a refusal, got {other}"),
    }
}

/// `conclave kms serve` as a process of its own on a free loopback port, so that a test can kill
/// it (`SIGKILL`: nothing flushed) and start it again on the same state. Killed when dropped.
pub struct VaultProcess {
    child: std::process::Child,
    port: u16,
    state: PathBuf,
    ca_dir: PathBuf,
    authority: String,
    /// `https://127.0.0.1:{port}`.
    pub url: String,
}

impl VaultProcess {
    /// Starts the vault with its state in `state`, its TLS certificate from the CA in `ca_dir`
    /// (which it makes if there is none), trusting the attestation authority `authority`.
    pub fn start(state: &Path, ca_dir: &Path, authority: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (state, ca_dir) = (state.to_path_buf(), ca_dir.to_path_buf());
        VaultProcess {
            child: spawn_vault(port, &state, &ca_dir, authority),
            port,
            state,
            ca_dir,
            authority: authority.to_string(),
            url: format!("https://127.0.0.1:{port}"),
        }
    }

    /// Waits (up to 30 s) until `GET {path}` (`/healthz`, or `/readyz` when the vault's
    /// authority is up) answers 2xx.
    pub async fn wait(&self, http: &reqwest::Client, path: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}{path}", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the vault did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `SIGKILL`, and the process reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Reaps the process after something else killed it, and starts it again on the same state
    /// and port.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_vault(self.port, &self.state, &self.ca_dir, &self.authority);
    }

    /// `SIGTERM`; whether it then exited with success.
    pub fn terminate(&mut self) -> bool {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap().success()
    }
}

fn spawn_vault(port: u16, state: &Path, ca_dir: &Path, authority: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["kms", "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--attestation-authority")
        .arg(authority)
        .arg("--state-dir")
        .arg(state)
        .arg("--ca-dir")
        .arg(ca_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

impl Drop for VaultProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
