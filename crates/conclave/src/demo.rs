//! `conclave demo`: the whole multi-party story on one machine, in one process tree.
//!
//! Started here, in this process: the simulated SEV-SNP host, the attestation service, and one
//! vault per party (Contoso, Fabrikam Fashion, Woodgrove Bank), each with its own store, master
//! key and principals. Launched through the sim host: the three genuine party workloads, and a
//! tampered Woodgrove workload (its config lowers k to 1). Started without a TEE: a snooper with
//! Woodgrove's vault credentials. Release policies pin the measurements of the genuine
//! workloads, computed here from the very bytes the sim host launches. A portal page shows it
//! all. State is kept under `--state-dir` and reused by the next run unless `--fresh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use conclave_attest::PlatformName;
use conclave_data::generator::{Generator, Party, schema};
use conclave_kms::api::{CreateKeyRequest, KeyAttributes, ReleasePolicyBody, UpdateKeyRequest};
use conclave_kms::client::{ClientError, VaultClient};
use conclave_kms::store::Permission;
use conclave_net::LocalCa;
use conclave_sim_host::{LaunchSpec, SimHost, measure};
use conclave_workload::auth::AuthConfig;
use conclave_workload::config::{DatasetConfig, PartyConfig};
use serde_json::{Value, json};

use conclave_deploy::{self as deploy, Stop, VaultSpec};

#[derive(Args)]
pub struct DemoArgs {
    /// Records generated per party.
    #[arg(long, default_value_t = 800)]
    records: u64,
    /// Where keys, vaults, datasets and logs live (reused by the next run).
    #[arg(long, default_value = ".conclave-demo")]
    state_dir: PathBuf,
    /// First of eleven consecutive ports: portal, attestation service, three vaults, five
    /// workloads, identity provider.
    #[arg(long, default_value_t = 8400)]
    port: u16,
    /// Smallest group the partner analysis releases.
    #[arg(long, default_value_t = 5)]
    k: u64,
    /// Start over: delete the state directory first.
    #[arg(long)]
    fresh: bool,
}

/// A party of the demo: who it is, its records, and whether it is the analytics partner.
struct DemoParty {
    party: Party,
    name: &'static str,
    /// The record generator's seed.
    seed: u64,
    /// What its records are.
    holds: &'static str,
    /// The analytics partner: its workload runs the analysis, is granted every key, and has
    /// the analyst user.
    analyst: bool,
}

/// The three parties, defined once (served to the portal as `parties`).
const PARTIES: [DemoParty; 3] = [
    DemoParty {
        party: Party::Contoso,
        name: "Contoso",
        seed: 1,
        holds: "employer: its staff",
        analyst: false,
    },
    DemoParty {
        party: Party::Fabrikam,
        name: "Fabrikam Fashion",
        seed: 2,
        holds: "retailer: its customers",
        analyst: false,
    },
    DemoParty {
        party: Party::Woodgrove,
        name: "Woodgrove Bank",
        seed: 3,
        holds: "bank and analytics partner: its clients",
        analyst: true,
    },
];

/// The index in [`PARTIES`] of the analytics partner.
fn analyst() -> usize {
    PARTIES
        .iter()
        .position(|p| p.analyst)
        .expect("one party is the analytics partner")
}

/// Arguments every party workload is launched with (measured).
const WORKLOAD_ARGS: [&str; 2] = ["party", "serve"];

/// Attestation tokens live ten minutes; workloads re-attest after about six.
const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

struct Ports {
    portal: u16,
    attest: u16,
    vault: [u16; 3],
    workload: [u16; 3],
    snooper: u16,
    tampered: u16,
    idp: u16,
}

impl Ports {
    fn from(base: u16) -> anyhow::Result<Self> {
        if base > u16::MAX - 10 {
            bail!("--port {base} leaves no room for the eleven ports the demo uses");
        }
        Ok(Ports {
            portal: base,
            attest: base + 1,
            vault: [base + 2, base + 3, base + 4],
            workload: [base + 5, base + 6, base + 7],
            snooper: base + 8,
            tampered: base + 9,
            idp: base + 10,
        })
    }
}

async fn bind(port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!(
                "port {port} is in use (another program, or a demo already running): choose another range with --port"
            )
        })
}

/// Checks a workload's port is free now; the workload binds it itself.
async fn check_free(port: u16) -> anyhow::Result<()> {
    bind(port).await.map(drop)
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    conclave_net::write_file(path, text.as_bytes(), 0o600)?;
    Ok(())
}

fn policy(attest_url: &str, measurements: &[String]) -> Value {
    json!({
        "version": "1.0.0",
        "anyOf": measurements.iter().map(|m| json!({
            "authority": attest_url,
            "allOf": [
                {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
                {"claim": "x-ms-compliance-status", "equals": "conclave-compliant"},
                {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
                {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": m},
            ]
        })).collect::<Vec<_>>(),
    })
}

fn policy_body(p: &Value) -> ReleasePolicyBody {
    ReleasePolicyBody {
        content_type: Some("application/json; charset=utf-8".into()),
        data: Some(conclave_attest::api::b64url(p.to_string().as_bytes())),
        immutable: None,
    }
}

/// Everything the portal and the tests need to know, also written to `<state>/demo.json`.
#[derive(Clone, serde::Serialize)]
struct DemoInfo {
    portal: String,
    attestation: String,
    /// Base URL of the development identity provider (one issuer per party: `{url}/{party}`).
    identity_provider: String,
    /// Who can sign in where (the demo's users and their passwords: `demo.json` is 0600).
    sign_in: Vec<SignIn>,
    ca: PathBuf,
    state_dir: PathBuf,
    records_per_party: u64,
    k: u64,
    parties: Vec<PartyInfo>,
    workloads: Vec<WorkloadInfo>,
}

#[derive(Clone, serde::Serialize)]
struct PartyInfo {
    id: String,
    name: String,
    holds: String,
    /// The analytics partner (see [`DemoParty::analyst`]).
    analyst: bool,
    seed: u64,
    vault: String,
    vault_dir: PathBuf,
    key: String,
    dataset: String,
    #[serde(skip)]
    admin_token: String,
}

/// A demo user.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct SignIn {
    /// The party (and realm of the identity provider) the user belongs to.
    party: String,
    username: String,
    password: String,
    roles: Vec<String>,
}

#[derive(Clone, serde::Serialize)]
struct WorkloadInfo {
    id: String,
    /// The party whose identity provider signs this workload's users in.
    party: String,
    /// The API audience its bearer tokens must name (ask the provider for it with `resource`).
    audience: String,
    name: String,
    url: String,
    role: String,
    measurement: Option<String>,
    log: PathBuf,
    /// RFC 7469 pin of the workload's TLS key (made in its TEE), once seen.
    pin_sha256: Option<String>,
    /// Whether that pin was checked against the workload's verified attestation token.
    pin_attested: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let ports = Ports::from(args.port)?;
    if args.fresh && args.state_dir.exists() {
        std::fs::remove_dir_all(&args.state_dir)
            .with_context(|| format!("removing {}", args.state_dir.display()))?;
    }
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let state = std::fs::canonicalize(&args.state_dir)?;
    for dir in ["logs", "storage", "tokens", "workloads"] {
        std::fs::create_dir_all(state.join(dir))?;
    }
    let portal_listener = bind(ports.portal).await?;
    let idp_listener = bind(ports.idp).await?;
    let attest_listener = bind(ports.attest).await?;
    let mut vault_listeners = Vec::new();
    for p in ports.vault {
        vault_listeners.push(bind(p).await?);
    }
    for p in ports
        .workload
        .iter()
        .chain([&ports.snooper, &ports.tampered])
    {
        check_free(*p).await?;
    }

    let stop = Stop::default();
    let ca = LocalCa::load_or_create(&state.join("ca"))?;
    let http = conclave_net::client(Some(&ca.cert_path()))?;

    // The parties' identity provider (one issuer per party), with the demo's users.
    let sign_in = demo_users(&state)?;
    let portal_secret = random_secret();
    let (idp_url, _) = deploy::identity_provider(
        &state.join("idp"),
        &ca,
        idp_config(&ports, &sign_in, &portal_secret),
        idp_listener,
        &stop,
    )?;
    let portal_tokens = PortalTokens::new(http.clone(), &idp_url, &portal_secret);

    // The simulated secure processor.
    let sim = SimHost::open(&state.join("sim"))?;
    let sim_listener = sim.bind()?;
    let sim_task = {
        let sim = sim.clone();
        let signal = stop.signal();
        tokio::spawn(async move { sim.serve(sim_listener, signal).await })
    };

    let (attest_url, _) = deploy::attestation_service(
        &state.join("attest"),
        &ca,
        &sim,
        deploy::policy_for(&[PlatformName::Sim, PlatformName::Snp]),
        TOKEN_LIFETIME,
        attest_listener,
        &stop,
    )?;

    // What the genuine workloads will be: their configs, hence their measurements.
    let binary_path = std::env::current_exe().context("finding this program's binary")?;
    let binary = std::fs::read(&binary_path)
        .with_context(|| format!("reading {}", binary_path.display()))?;
    let args_measured: Vec<String> = WORKLOAD_ARGS.iter().map(|s| s.to_string()).collect();

    let mut parties = Vec::new();
    for demo_party in PARTIES.iter() {
        let id = demo_party.party.name();
        let vault_dir = state.join("vaults").join(id);
        let (vault_url, admin_path, _) = deploy::vault(
            VaultSpec::new(&vault_dir, &ca, &http, &attest_url),
            vault_listeners.remove(0),
            &stop,
        )?;
        let admin_token = std::fs::read_to_string(&admin_path)
            .with_context(|| format!("reading {}", admin_path.display()))?;
        parties.push(PartyInfo {
            id: id.to_string(),
            name: demo_party.name.to_string(),
            holds: demo_party.holds.to_string(),
            analyst: demo_party.analyst,
            seed: demo_party.seed,
            key: format!("{vault_url}/keys/{id}-data"),
            vault: vault_url,
            vault_dir,
            dataset: format!(
                "file://{}",
                state
                    .join("storage")
                    .join(format!("{id}.parquet"))
                    .display()
            ),
            admin_token,
        });
    }

    // Principals: on each vault, its owner and both other parties; a token file each.
    for vault in &parties {
        let admin = VaultClient::new(http.clone(), &vault.vault, &vault.admin_token);
        for who in &parties {
            let path = token_path(&state, &vault.id, &who.id);
            if !path.exists() {
                let token = admin.add_principal(&who.id, false).await?;
                write_secret(&path, &token)?;
            }
        }
    }

    // Workload configs and measurements.
    let config_of = |me: usize, port: u16, k: u64| -> PartyConfig {
        let p = &parties[me];
        // The analytics partner lists every company's dataset (it is granted them), its own
        // first; the others list their own and the other companies' but the partner's (which
        // they are not granted), to show the refusal.
        let listed: Vec<usize> = std::iter::once(me)
            .chain((0..PARTIES.len()).filter(|&d| d != me && (p.analyst || !PARTIES[d].analyst)))
            .collect();
        PartyConfig {
            party: p.id.clone(),
            display_name: p.name.clone(),
            listen: ([127, 0, 0, 1], port).into(),
            attestation_url: attest_url.clone(),
            ca_file: ca.cert_path(),
            k,
            reference_year: None,
            analysis: p.analyst,
            tls_names: Vec::new(),
            auth: Some(AuthConfig {
                issuer: format!("{idp_url}/{}", p.id),
                client_id: workload_client(&p.id),
                client_secret_file: None,
                public_url: None,
                audience: workload_audience(&p.id),
                roles_claim: "roles".into(),
                member_role: "member".into(),
                analyst_role: "analyst".into(),
            }),
            datasets: listed
                .into_iter()
                .map(|d| DatasetConfig {
                    company: parties[d].id.clone(),
                    display_name: parties[d].name.clone(),
                    url: parties[d].dataset.clone(),
                    key: parties[d].key.clone(),
                    token_file: token_path(&state, &parties[d].id, &p.id),
                })
                .collect(),
        }
    };
    let genuine: Vec<PartyConfig> = (0..3)
        .map(|i| config_of(i, ports.workload[i], args.k))
        .collect();
    let measurement_of =
        |c: &PartyConfig| hex::encode(measure(&binary, &args_measured, c.to_toml().as_bytes()));
    let measurements: Vec<String> = genuine.iter().map(measurement_of).collect();

    // Keys: each owner creates its key (or, on a later run, updates its policy: the genuine
    // workloads' measurements change when the binary or the ports do). Woodgrove's workload
    // may release every key; Contoso's and Fabrikam's only their own.
    let partner = &parties[analyst()];
    for (i, p) in parties.iter().enumerate() {
        let mut allowed = vec![measurements[i].clone()];
        if !p.analyst {
            allowed.push(measurements[analyst()].clone());
        }
        let owner = VaultClient::new(
            http.clone(),
            &p.vault,
            &std::fs::read_to_string(token_path(&state, &p.id, &p.id))?,
        );
        let name = format!("{}-data", p.id);
        let body = policy_body(&policy(&attest_url, &allowed));
        match owner.get_key(&name).await {
            Ok(existing) => {
                let kid = existing["key"]["kid"].as_str().unwrap_or_default();
                let version = kid.rsplit('/').next().unwrap_or_default().to_string();
                owner
                    .update_key(
                        &name,
                        &version,
                        &UpdateKeyRequest {
                            release_policy: Some(body),
                            ..Default::default()
                        },
                    )
                    .await?;
            }
            Err(ClientError::Refused { status: 404, .. }) => {
                owner
                    .create_key(
                        &name,
                        &CreateKeyRequest {
                            kty: Some("RSA-HSM".into()),
                            key_size: Some(2048),
                            attributes: Some(KeyAttributes {
                                exportable: Some(true),
                                ..Default::default()
                            }),
                            release_policy: Some(body),
                            ..Default::default()
                        },
                    )
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
        if !p.analyst {
            owner
                .grant(&name, &partner.id, &[Permission::Release])
                .await?;
        }
        ensure_dataset(&state, p, &owner, &name, args.records).await?;
    }

    // Launch: genuine workloads and the tampered one through the sim host; the snooper without.
    let mut tampered = config_of(analyst(), ports.tampered, 1);
    tampered.display_name = format!("{} (tampered: k = 1)", partner.name);
    registered_apart(&mut tampered, "tampered");
    let mut launches: Vec<(String, PartyConfig, &str)> = genuine
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let role = if parties[i].analyst {
                "analytics partner: releases all three keys, shows only aggregates"
            } else {
                "sees its own records; refused the other company's key"
            };
            (parties[i].id.clone(), c.clone(), role)
        })
        .collect();
    launches.push((
        "tampered".into(),
        tampered,
        "a genuine TEE running a modified config (k = 1): its measurement matches no policy",
    ));
    // The sim host reads and hashes the binary for each launch: do them side by side.
    let launching: Vec<_> = launches
        .into_iter()
        .map(|(id, config, role)| {
            let (sim, binary, state) = (sim.clone(), binary_path.clone(), state.clone());
            tokio::task::spawn_blocking(move || launch(&sim, &binary, &state, &id, &config, role))
        })
        .collect();
    let mut guests = Vec::new();
    let mut workloads = Vec::new();
    for l in launching {
        let (guest, info) = l.await??;
        guests.push(guest);
        workloads.push(info);
    }

    let mut snooper = config_of(analyst(), ports.snooper, args.k);
    registered_apart(&mut snooper, "snooper");
    snooper.display_name = format!("Snooper (no TEE, {}'s credentials)", partner.name);
    let snooper_config = state.join("workloads/snooper.toml");
    std::fs::write(&snooper_config, snooper.to_toml())?;
    let snooper_log = state.join("logs/snooper.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&snooper_log)?;
    let snooper_child = tokio::process::Command::new(&binary_path)
        .args(["party", "serve", "--tee", "none", "--config"])
        .arg(&snooper_config)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the snooper")?;
    workloads.push(WorkloadInfo {
        id: "snooper".into(),
        name: snooper.display_name.clone(),
        url: format!("https://127.0.0.1:{}/", ports.snooper),
        party: partner.id.clone(),
        audience: snooper
            .auth
            .as_ref()
            .map(|a| a.audience.clone())
            .unwrap_or_default(),
        role: format!("the same app started without a TEE, holding {}'s vault tokens: every release is refused", partner.name),
        measurement: None,
        log: snooper_log,
        pin_sha256: None,
        pin_attested: false,
    });

    let mut info = DemoInfo {
        portal: format!("http://127.0.0.1:{}/", ports.portal),
        attestation: attest_url.clone(),
        identity_provider: idp_url.clone(),
        sign_in,
        ca: ca.cert_path(),
        state_dir: state.clone(),
        records_per_party: args.records,
        k: args.k,
        parties,
        workloads,
    };
    // Ready when every workload has attested (or found it cannot), its TLS key has been checked
    // against its attestation, and it has tried its own key.
    let clients = match wait_ready(&http, &portal_tokens, &mut info).await {
        Ok(clients) => clients,
        Err(e) => {
            stop.stop();
            bail!("{e}");
        }
    };
    write_secret(
        &state.join("demo.json"),
        &serde_json::to_string_pretty(&info)?,
    )?;
    let portal_task = tokio::spawn(conclave_net::serve(
        portal_listener,
        portal_router(info.clone(), http.clone(), clients, portal_tokens),
        None,
        stop.signal(),
    ));
    print_summary(&info, started.elapsed());

    let mut snooper_child = snooper_child;
    tokio::select! {
        _ = crate::shutdown_signal() => {}
        status = snooper_child.wait() => eprintln!("the snooper exited ({status:?}); see its log"),
    }
    eprintln!("\nstopping: workloads, portal, vaults, attestation service, sim host …");
    for mut g in guests {
        g.child.kill().await.ok();
    }
    snooper_child.kill().await.ok();
    stop.stop();
    portal_task.await.ok();
    sim_task.abort();
    eprintln!(
        "stopped. State kept in {} (run again to reuse it, or pass --fresh).",
        state.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Points a non-genuine workload's sign-in at its own client and API audience.
fn registered_apart(config: &mut PartyConfig, which: &str) {
    let (client_id, audience) = other_client(&config.party, which);
    if let Some(auth) = config.auth.as_mut() {
        auth.client_id = client_id;
        auth.audience = audience;
    }
}

fn workload_client(party: &str) -> String {
    format!("conclave-{party}-workload")
}

fn workload_audience(party: &str) -> String {
    format!("api://conclave-{party}-workload")
}

/// The portal's client id in every realm (a confidential client with no role).
const PORTAL_CLIENT: &str = "conclave-demo-portal";
/// A public client for scripts and tests: authorization code + PKCE, redirect to loopback.
const CLI_CLIENT: &str = "conclave-cli";
const CLI_REDIRECT: &str = "http://127.0.0.1/callback";

fn random_secret() -> String {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; 18];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    conclave_attest::api::b64url(&bytes)
}

/// The demo's users (kept in `<state>/idp/users.json`, 0600, so passwords survive a restart):
/// a member of each party, and Woodgrove's analyst.
fn demo_users(state: &Path) -> anyhow::Result<Vec<SignIn>> {
    let path = state.join("idp").join("users.json");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(users) = serde_json::from_slice::<Vec<SignIn>>(&bytes)
    {
        return Ok(users);
    }
    std::fs::create_dir_all(state.join("idp"))?;
    let mut users = Vec::new();
    for p in PARTIES.iter() {
        users.push(SignIn {
            party: p.party.name().into(),
            username: format!("{}-member", p.party.name()),
            password: random_secret(),
            roles: vec!["member".into()],
        });
    }
    let partner = PARTIES[analyst()].party.name();
    users.push(SignIn {
        party: partner.into(),
        username: format!("{partner}-analyst"),
        password: random_secret(),
        roles: vec!["analyst".into()],
    });
    write_secret(&path, &serde_json::to_string_pretty(&users)?)?;
    Ok(users)
}

/// The client id and API audience of a workload that is not the party's genuine one (the
/// tampered workload, the snooper): registered apart, so that what a user's sign-in there
/// gives it (its tokens) is never accepted by the genuine workload.
fn other_client(party: &str, which: &str) -> (String, String) {
    (
        format!("conclave-{party}-{which}-workload"),
        format!("api://conclave-{party}-{which}-workload"),
    )
}

/// One realm per party: its workload as a public client (for Woodgrove also the tampered
/// workload and the snooper, each as its own client with its own API audience), the portal,
/// the CLI client, and the party's users.
fn idp_config(ports: &Ports, users: &[SignIn], portal_secret: &str) -> conclave_idp::Config {
    let workload =
        |client_id: String, port: u16, audience: Option<String>| conclave_idp::ClientConfig {
            client_id,
            redirect_uris: vec![format!("https://127.0.0.1:{port}/auth/callback")],
            secret: None,
            roles: Vec::new(),
            audience,
        };
    let realms = PARTIES
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (id, name) = (p.party.name(), p.name);
            let mut clients = vec![workload(workload_client(id), ports.workload[i], None)];
            if p.analyst {
                for (which, port) in [("tampered", ports.tampered), ("snooper", ports.snooper)] {
                    let (client_id, audience) = other_client(id, which);
                    clients.push(workload(client_id, port, Some(audience)));
                }
            }
            conclave_idp::RealmConfig {
                name: id.into(),
                display_name: name.to_string(),
                audience: workload_audience(id),
                token_lifetime_secs: conclave_idp::DEFAULT_TOKEN_LIFETIME_SECS,
                clients: clients
                    .into_iter()
                    .chain([
                        conclave_idp::ClientConfig {
                            client_id: PORTAL_CLIENT.into(),
                            redirect_uris: Vec::new(),
                            secret: Some(portal_secret.into()),
                            roles: Vec::new(),
                            audience: None,
                        },
                        conclave_idp::ClientConfig {
                            client_id: CLI_CLIENT.into(),
                            redirect_uris: vec![CLI_REDIRECT.into()],
                            secret: None,
                            roles: Vec::new(),
                            audience: None,
                        },
                    ])
                    .collect(),
                users: users
                    .iter()
                    .filter(|u| u.party == id)
                    .map(|u| conclave_idp::UserConfig {
                        username: u.username.clone(),
                        password: u.password.clone(),
                        name: format!("{} ({name})", u.username),
                        email: None,
                        roles: u.roles.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    conclave_idp::Config { realms }
}

/// The portal's access tokens (client credentials), one per realm, renewed a minute before
/// they expire.
struct PortalTokens {
    http: reqwest::Client,
    idp: String,
    secret: String,
    cached: Mutex<BTreeMap<(String, String), (String, Instant)>>,
}

impl PortalTokens {
    fn new(http: reqwest::Client, idp: &str, secret: &str) -> Self {
        PortalTokens {
            http,
            idp: idp.to_string(),
            secret: secret.to_string(),
            cached: Mutex::default(),
        }
    }

    /// A token from `realm` for the API `audience` (RFC 8707 `resource`).
    async fn token(&self, realm: &str, audience: &str) -> anyhow::Result<String> {
        let key = (realm.to_string(), audience.to_string());
        if let Some((token, until)) = self.cached.lock().expect("token lock").get(&key)
            && *until > Instant::now()
        {
            return Ok(token.clone());
        }
        let response: Value = self
            .http
            .post(format!("{}/{realm}/token", self.idp))
            .basic_auth(PORTAL_CLIENT, Some(&self.secret))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&resource={}",
                form_encode(audience)
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = response["access_token"]
            .as_str()
            .context("the identity provider returned no access token")?
            .to_string();
        let lifetime = response["expires_in"].as_u64().unwrap_or(60).max(61);
        self.cached.lock().expect("token lock").insert(
            key,
            (
                token.clone(),
                Instant::now() + Duration::from_secs(lifetime - 60),
            ),
        );
        Ok(token)
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn token_path(state: &Path, vault: &str, principal: &str) -> PathBuf {
    state
        .join("tokens")
        .join(format!("{vault}-vault.{principal}.token"))
}

/// Generates and encrypts the party's records, unless the stored dataset already holds the
/// same number under the same key.
async fn ensure_dataset(
    state: &Path,
    p: &PartyInfo,
    owner: &VaultClient,
    key_name: &str,
    records: u64,
) -> anyhow::Result<()> {
    let public = conclave_data::dataset::VaultPublicKey::from_jwk(&owner.get_key(key_name).await?)?;
    let manifest_path = state.join("storage").join(format!("{}.json", p.id));
    let want = json!({"records": records, "seed": p.seed, "kid": public.kid});
    let loc = conclave_data::store::locate(&p.dataset)?;
    if std::fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|m| m == want)
        && conclave_data::dataset::inspect(&loc).await.is_ok()
    {
        return Ok(());
    }
    let party: Party = p.id.parse().map_err(anyhow::Error::msg)?;
    let mut generator = Generator::new(party, p.seed, records);
    let mut bar = crate::progress::Progress::new(&format!("{:<9} records", p.id), records);
    let batches = std::iter::from_fn(move || generator.next_batch(64 * 1024).map(Ok));
    conclave_data::dataset::write_encrypted(batches, schema(), &loc, &public, |n| bar.set(n))
        .await?;
    std::fs::write(&manifest_path, serde_json::to_vec(&want)?)?;
    Ok(())
}

fn launch(
    sim: &SimHost,
    binary: &Path,
    state: &Path,
    id: &str,
    config: &PartyConfig,
    role: &str,
) -> anyhow::Result<(conclave_sim_host::Guest, WorkloadInfo)> {
    let text = config.to_toml();
    std::fs::write(state.join(format!("workloads/{id}.toml")), &text)?;
    let log = state.join(format!("logs/{id}.log"));
    let guest = sim.launch(&LaunchSpec {
        binary: binary.to_path_buf(),
        args: WORKLOAD_ARGS.iter().map(|s| s.to_string()).collect(),
        config: text.into_bytes(),
        debug: false,
        log: Some(log.clone()),
    })?;
    let info = WorkloadInfo {
        id: id.to_string(),
        name: config.display_name.clone(),
        url: format!("https://{}/", config.listen),
        party: config.party.clone(),
        audience: config
            .auth
            .as_ref()
            .map(|a| a.audience.clone())
            .unwrap_or_default(),
        role: role.to_string(),
        measurement: Some(hex::encode(guest.identity.measurement)),
        log,
        pin_sha256: None,
        pin_attested: false,
    };
    Ok((guest, info))
}

/// Waits for each workload: its TLS key checked against its attestation (the snooper, without
/// a TEE, has none: its key is recorded unverified), then its own key release tried. Returns a
/// client pinned to each workload's TLS key, by workload id.
async fn wait_ready(
    http: &reqwest::Client,
    tokens: &PortalTokens,
    info: &mut DemoInfo,
) -> anyhow::Result<BTreeMap<String, reqwest::Client>> {
    use conclave_net::attested_tls::{capturing_client, certificate_pin, pinned_client};
    let deadline = Instant::now() + Duration::from_secs(60);
    let verifier =
        conclave_attest::verify::TokenVerifier::for_issuer(&info.attestation, http.clone());
    let mut clients = BTreeMap::new();
    for w in &mut info.workloads {
        let too_late = |w: &WorkloadInfo, what: &str| {
            anyhow::anyhow!(
                "{} did not {what} within 60 s; its log is {}",
                w.name,
                w.log.display()
            )
        };
        // 1. Its TLS key, against its attestation.
        loop {
            let (probe, capture) = capturing_client()?;
            let answer = probe
                .get(format!("{}api/attestation", w.url))
                .send()
                .await
                .ok();
            let presented = capture.presented().map(|c| certificate_pin(&c));
            match answer.map(|r| r.status().as_u16()) {
                Some(200) => {
                    let v = conclave_workload::endpoint::verify_endpoint(&w.url, &verifier)
                        .await
                        .with_context(|| format!("checking {}'s endpoint", w.name))?;
                    w.pin_sha256 = Some(v.pin_sha256);
                    w.pin_attested = true;
                    break;
                }
                // Not attested, and never will be (no TEE) or not now (attestation failed):
                // the demo shows it as it is, unverified.
                Some(503) if w.measurement.is_none() || Instant::now() > deadline => {
                    w.pin_sha256 = presented.transpose()?;
                    break;
                }
                _ if Instant::now() > deadline => return Err(too_late(w, "start")),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let pin = w
            .pin_sha256
            .clone()
            .ok_or_else(|| anyhow::anyhow!("{} presented no TLS certificate", w.name))?;
        let client = pinned_client(&pin)?;
        // 2. Its own key release tried.
        loop {
            let status: Option<Value> = match client
                .get(format!("{}api/status", w.url))
                .bearer_auth(tokens.token(&w.party, &w.audience).await?)
                .send()
                .await
            {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let ready = status.as_ref().is_some_and(|s| {
                let attested = matches!(
                    s["attestation"]["state"].as_str(),
                    Some("attested" | "no-tee" | "failed")
                );
                let own_tried = s["datasets"]
                    .as_array()
                    .and_then(|d| d.iter().find(|d| d["own"] == true))
                    .is_some_and(|d| d["release"]["state"] != "not-requested");
                attested && own_tried
            });
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(too_late(w, "become ready"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        clients.insert(w.id.clone(), client);
    }
    Ok(clients)
}

fn print_summary(info: &DemoInfo, took: Duration) {
    let w = |id: &str| {
        info.workloads
            .iter()
            .find(|w| w.id == id)
            .map(|w| w.url.clone())
            .unwrap_or_default()
    };
    println!();
    println!(
        "Conclave demo ready in {:.1} s — SIMULATED SEV-SNP: no hardware protection.",
        took.as_secs_f64()
    );
    println!();
    println!("  Portal (start here)       {}", info.portal);
    println!(
        "  Contoso                   {}   its own records; Fabrikam's key is refused",
        w("contoso")
    );
    println!(
        "  Fabrikam Fashion          {}   its own records; Contoso's key is refused",
        w("fabrikam")
    );
    println!(
        "  Woodgrove Bank            {}   click \"Run the analysis\"",
        w("woodgrove")
    );
    println!(
        "  Snooper (no TEE)          {}   every release refused",
        w("snooper")
    );
    println!(
        "  Tampered workload         {}   wrong measurement, refused",
        w("tampered")
    );
    println!();
    println!(
        "  Sign in (each party's own identity provider; passwords are kept in the state dir):"
    );
    for u in &info.sign_in {
        println!(
            "    {:<22} password {:<26} {} at {}",
            u.username,
            u.password,
            u.roles.join(", "),
            info.parties
                .iter()
                .find(|p| p.id == u.party)
                .map(|p| p.name.as_str())
                .unwrap_or(&u.party)
        );
    }
    println!("    (members see their party's records; Woodgrove's analyst runs the analysis)");
    println!();
    println!("  Attestation service       {}", info.attestation);
    println!(
        "  Identity provider         {} (development only: one issuer per party)",
        info.identity_provider
    );
    for p in &info.parties {
        println!("  {:<25} {}", format!("{} vault", p.name), p.vault);
    }
    println!("  Local CA certificate      {}", info.ca.display());
    println!();
    println!(
        "  Workload pages are HTTPS with a key made inside each TEE; no CA can vouch for such a key,"
    );
    println!("  so your browser warns once per page. Check a page is the attested workload with:");
    println!(
        "    conclave party verify-endpoint {} --jwks {}/certs --ca {}",
        w("woodgrove"),
        info.attestation,
        info.ca.display()
    );
    for wl in &info.workloads {
        println!(
            "  {:<25} pin-sha256 {} ({})",
            wl.id,
            wl.pin_sha256.as_deref().unwrap_or("?"),
            if wl.pin_attested {
                "attested"
            } else {
                "NOT attested"
            }
        );
    }
    println!(
        "  State (reused next run)   {}   (--fresh starts over)",
        info.state_dir.display()
    );
    println!();
    println!("Stop with Ctrl-C.");
}

// --- the portal --------------------------------------------------------------------------------

#[derive(Clone)]
struct Portal {
    info: DemoInfo,
    http: reqwest::Client,
    /// A client pinned to each workload's TLS key, by workload id.
    workloads: BTreeMap<String, reqwest::Client>,
    /// The portal's own access tokens (no role: it sees each workload's status only).
    tokens: Arc<PortalTokens>,
}

const PORTAL_HTML: &str = include_str!("portal/index.html");
const PORTAL_JS: &str = include_str!("portal/portal.js");
const PORTAL_CSS: &str = include_str!("portal/portal.css");

fn portal_router(
    info: DemoInfo,
    http: reqwest::Client,
    workloads: BTreeMap<String, reqwest::Client>,
    tokens: PortalTokens,
) -> axum::Router {
    let asset = |ct: &'static str, body: &'static str| {
        move || async move { ([(header::CONTENT_TYPE, ct)], body).into_response() }
    };
    axum::Router::new()
        .route("/", get(asset("text/html; charset=utf-8", PORTAL_HTML)))
        .route(
            "/portal.js",
            get(asset("text/javascript; charset=utf-8", PORTAL_JS)),
        )
        .route(
            "/portal.css",
            get(asset("text/css; charset=utf-8", PORTAL_CSS)),
        )
        .route("/api/demo", get(demo_status))
        .route("/api/audit/{party}", get(audit))
        .with_state(Portal {
            info,
            http,
            workloads,
            tokens: Arc::new(tokens),
        })
}

/// The demo's layout with each workload's live status (fetched here: the pages are on other
/// origins).
async fn demo_status(State(p): State<Portal>) -> Json<Value> {
    let mut workloads = Vec::new();
    for w in &p.info.workloads {
        let Some(client) = p.workloads.get(&w.id) else {
            continue;
        };
        let Ok(token) = p.tokens.token(&w.party, &w.audience).await else {
            continue;
        };
        let status: Value = match client
            .get(format!("{}api/status", w.url))
            .bearer_auth(token)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let mut v = serde_json::to_value(w).expect("JSON");
        v["status"] = status;
        workloads.push(v);
    }
    let mut v = serde_json::to_value(&p.info).expect("JSON");
    v["workloads"] = Value::Array(workloads);
    // Who may sign in, not with what: the passwords stay in the terminal and demo.json.
    if let Some(users) = v["sign_in"].as_array_mut() {
        for u in users {
            u.as_object_mut().map(|o| o.remove("password"));
        }
    }
    Json(v)
}

/// A vault's audit log, read with its admin token (which never leaves this process).
async fn audit(State(p): State<Portal>, UrlPath(party): UrlPath<String>) -> Response {
    let Some(v) = p.info.parties.iter().find(|v| v.id == party) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "NotFound", "message": format!("no party {party:?}")}})),
        )
            .into_response();
    };
    match VaultClient::new(p.http.clone(), &v.vault, &v.admin_token)
        .audit(0)
        .await
    {
        Ok(log) => Json(log).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": {"code": "Vault", "message": e.to_string()}})),
        )
            .into_response(),
    }
}
