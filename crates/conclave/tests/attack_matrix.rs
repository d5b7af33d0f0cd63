//! The attack matrix of SECURITY.md, as one suite against the real services on loopback: the
//! attestation service and the vault over TLS, evidence from the sim platform, datasets in a
//! local object store. Every attack must be refused with its specific reason, and the refusal
//! must be on record: in the vault's audit log (HMAC-chained) for vault requests, in the
//! attestation service's log for evidence it refuses. Everything the services log during the
//! run is captured and scanned at the end for key material, bearer tokens and plaintext.
//!
//! Slow-loris clients are in `conclave-net/tests/slow_clients.rs`; fuzzing is `conclave-fuzz`.

mod common;
use common::*;

#[path = "attack_matrix/attestation.rs"]
mod attestation;
#[path = "attack_matrix/authorisation.rs"]
mod authorisation;
#[path = "attack_matrix/data.rs"]
mod data;
#[path = "attack_matrix/requests.rs"]
mod requests;
#[path = "attack_matrix/tokens.rs"]
mod tokens;

/// What every attack family works with: the services, the parties' vault clients and tokens,
/// and a genuine workload's key and token (the control).
pub struct Ctx {
    pub env: Env,
    pub admin: VaultClient,
    pub contoso: VaultClient,
    pub fabrikam: VaultClient,
    pub woodgrove: VaultClient,
    pub tee: EphemeralKey,
    pub runtime: Vec<u8>,
    pub genuine: String,
    pub contoso_token: String,
    pub fabrikam_token: String,
    pub woodgrove_token: String,
    /// The service logs captured so far.
    pub logs: Captured,
    /// A second simulated platform, whose root no one trusts.
    pub stranger: SimHost,
    /// The control's released key: its kid, and its DER (to scan the logs for).
    pub released_kid: String,
    pub released_der: Vec<u8>,
}

use std::io::Write as _;
use std::sync::Mutex;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use conclave_data::dataset::{self, KeyUnwrapper, PrivateKeyUnwrapper, VaultPublicKey};
use conclave_data::generator::{Generator, Party, records_from_batch, schema};
use conclave_data::store::locate;
use futures::StreamExt as _;

/// Everything the services log, at every level, for the scan at the end.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// What the matrix saw, printed as a table at the end.
#[derive(Default)]
pub struct Matrix {
    rows: Vec<(String, String, String)>,
}

impl Matrix {
    fn row(&mut self, attack: &str, stopped_by: &str, reason: &str) {
        self.rows.push((
            attack.into(),
            stopped_by.into(),
            reason.chars().take(110).collect(),
        ));
    }
}

/// A vault refusal: status, reason naming `needle`, and the audit log's last entry records this
/// refusal (action, outcome `denied`, the same reason).
async fn vault_refusal<T: std::fmt::Debug>(
    m: &mut Matrix,
    attack: &str,
    admin: &VaultClient, // reads the vault's audit log
    result: Result<T, ClientError>,
    status: u16,
    needle: &str,
    action: &str,
) {
    let (got_status, reason) = match result {
        Err(ClientError::Refused {
            status, message, ..
        }) => (status, message),
        other => panic!("{attack}: expected a refusal, got {other:?}"),
    };
    assert_eq!(got_status, status, "{attack}: {reason}");
    assert!(
        reason.contains(needle),
        "{attack}: {reason:?} does not name {needle:?}"
    );
    let log = admin.audit(0).await.unwrap();
    let tail = serde_json::to_value(log.value.last().unwrap()).unwrap();
    assert_eq!(tail["action"], action, "{attack}: audit entry {tail}");
    assert_eq!(tail["outcome"], "denied", "{attack}: audit entry {tail}");
    assert_eq!(
        tail["reason"].as_str(),
        Some(reason.as_str()),
        "{attack}: audit entry {tail}"
    );
    m.row(attack, "vault (audited)", &reason);
}

/// An attestation refusal: the service answers 4xx naming `needle`, and logs the refusal.
async fn attest_refusal(
    m: &mut Matrix,
    attack: &str,
    env: &Env,
    logs: &Captured,
    url: &str,
    req: &AttestSevSnpVmRequest,
    needle: &str,
) {
    let err = attest(&env.http, url, req)
        .await
        .expect_err(&format!("{attack}: the attestation service issued a token"));
    let reason = format!("{err:#}");
    assert!(
        reason.contains(needle),
        "{attack}: {reason:?} does not name {needle:?}"
    );
    let logged = logs.text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("attestation denied") && l.contains(needle)),
        "{attack}: the refusal is not in the attestation service's log"
    );
    m.row(attack, "attestation service (logged)", &reason);
}

fn identity(config: &[u8]) -> LaunchIdentity {
    LaunchIdentity {
        measurement: measure(b"workload", &[], config),
        host_data: conclave_sim_host::host_data(config),
        policy: conclave_snp::report::GuestPolicy(0x3_0000),
        report_id: [3; 32],
    }
}

fn evidence(sim: &SimHost, id: &LaunchIdentity, report_data_of: &[u8]) -> Evidence {
    Evidence {
        platform: Platform::Sim,
        report: sim
            .platform()
            .sign_report(id, report_data_for(report_data_of))
            .unwrap(),
        cert_chain_pem: sim.platform().cert_chain_pem(),
        hcl_runtime_claims: None,
        tpm_quote: None,
    }
}

fn release(target: String, nonce: Option<&str>) -> ReleaseRequest {
    ReleaseRequest {
        target,
        nonce: nonce.map(String::from),
        enc: None,
    }
}

/// A policy pinning the good measurement and the good host data.
fn strict_policy(env: &Env) -> Value {
    json!({"version": "1.0.0", "anyOf": [{"authority": env.attest_url, "allOf": [
        {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
        {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
        {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": good_measurement()},
        {"claim": "x-ms-sevsnpvm-hostdata", "equals": hex::encode(conclave_sim_host::host_data(GOOD_CONFIG))},
    ]}]})
}

fn jwt(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

async fn read_all(
    url: &str,
    unwrapper: Arc<dyn KeyUnwrapper>,
) -> Result<usize, conclave_data::dataset::DataError> {
    let loc = locate(url).unwrap();
    let mut stream = dataset::read_encrypted(&loc, unwrapper, None, 4096).await?;
    let mut n = 0;
    while let Some(b) = stream.next().await {
        n += b?.num_rows();
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_attack_is_refused_with_its_reason_and_on_record() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let mut m = Matrix::default();

    let env = env().await;
    let admin = env.client(&env.admin);
    let contoso_token = admin.add_principal("contoso", false).await.unwrap();
    let fabrikam_token = admin.add_principal("fabrikam", false).await.unwrap();
    let woodgrove_token = admin.add_principal("woodgrove", false).await.unwrap();
    let (contoso, fabrikam, woodgrove) = (
        env.client(&contoso_token),
        env.client(&fabrikam_token),
        env.client(&woodgrove_token),
    );
    contoso
        .create_key("contoso-data", &exportable(&strict_policy(&env), false))
        .await
        .unwrap();
    fabrikam
        .create_key("fabrikam-data", &exportable(&strict_policy(&env), false))
        .await
        .unwrap();
    let tee = EphemeralKey::generate().unwrap();
    let runtime = tee.runtime_json();
    let genuine = env.token(&runtime, GOOD_CONFIG, None).await;

    // The control: a genuine workload gets its key (so every refusal below is the attack's).
    let jws = contoso
        .release("contoso-data", &release(genuine.clone(), None))
        .await
        .unwrap();
    let released = open_release(&jws, env.ca.cert(), tee.private_key()).unwrap();
    let released_der = released.key.as_der().unwrap().as_ref().to_vec();

    let env_dir = env.dir.clone();
    let c = Ctx {
        env,
        admin,
        contoso,
        fabrikam,
        woodgrove,
        tee,
        runtime,
        genuine,
        contoso_token,
        fabrikam_token,
        woodgrove_token,
        logs: logs.clone(),
        stranger: SimHost::open(&env_dir.join("stranger-sim")).unwrap(),
        released_kid: released.kid.clone(),
        released_der,
    };
    // One run, one family at a time (each in its own module).
    attestation::run(&c, &mut m).await;
    tokens::run(&c, &mut m).await;
    authorisation::run(&c, &mut m).await;
    requests::run(&c, &mut m).await;
    data::run(&c, &mut m).await;
    let Ctx {
        env,
        tee,
        contoso_token,
        fabrikam_token,
        woodgrove_token,
        released_der,
        ..
    } = c;

    // --- the matrix, and the scan of everything logged ----------------------------------------
    let mut table = String::new();
    for (i, (attack, by, reason)) in m.rows.iter().enumerate() {
        table.push_str(&format!("{:>2}. {attack:<62} {by:<38} {reason}\n", i + 1));
    }
    eprintln!("{table}");
    assert!(m.rows.len() >= 25, "only {} attacks", m.rows.len());

    let logged = logs.text();
    assert!(
        logged.contains("release denied") && logged.contains("attestation denied"),
        "the log capture is not working"
    );
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let mut secrets: Vec<(String, String)> = Vec::new();
    for (what, bytes) in [
        ("released private key", released_der.clone()),
        (
            "TEE private key",
            tee.private_key().as_der().unwrap().as_ref().to_vec(),
        ),
        (
            "vault master key",
            std::fs::read(env.dir.join("vault/master.key")).unwrap(),
        ),
    ] {
        // Any 16-byte piece of the key, in hex, base64 or base64url, would be a leak.
        for w in bytes.windows(16).step_by(8) {
            secrets.push((what.into(), hex::encode(w)));
            secrets.push((what.into(), b64(w)[..20].to_string()));
            secrets.push((what.into(), b64url(w)[..20].to_string()));
        }
    }
    for (what, token) in [
        ("admin bearer token", env.admin.trim()),
        ("contoso bearer token", contoso_token.as_str()),
        ("fabrikam bearer token", fabrikam_token.as_str()),
        ("woodgrove bearer token", woodgrove_token.as_str()),
    ] {
        secrets.push((what.into(), token.to_string()));
    }
    let records: Vec<_> = Generator::new(Party::Contoso, 3, 5_000)
        .next_batch(50)
        .map(|b| records_from_batch(&b).unwrap())
        .unwrap();
    for r in &records {
        secrets.push(("a record's name".into(), r.name.clone()));
        secrets.push(("a record's phone".into(), r.phone.clone()));
        secrets.push(("a record's address".into(), r.address.clone()));
    }
    for (what, needle) in &secrets {
        assert!(
            !logged.contains(needle.as_str()),
            "the service logs contain the {what}"
        );
    }
    let mut out = std::fs::File::create(env.dir.join("matrix.txt")).unwrap();
    out.write_all(table.as_bytes()).unwrap();
    eprintln!(
        "scanned {} KiB of service logs for {} secret fragments: none found",
        logged.len() / 1024,
        secrets.len()
    );
}
