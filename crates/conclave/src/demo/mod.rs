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

mod identity;
mod launch;
mod portal;
mod provisioning;
mod topology;

use identity::*;
use launch::*;
use portal::*;
use provisioning::*;
use topology::*;

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
                let version = existing.key.version().to_string();
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
