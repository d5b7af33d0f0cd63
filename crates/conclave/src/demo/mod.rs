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
use conclave_kms::api::{CreateKeyRequest, KeyAttributes, UpdateKeyRequest};
use conclave_kms::client::{ClientError, VaultClient};
use conclave_kms::store::Permission;
use conclave_net::LocalCa;
use conclave_sim_host::{LaunchSpec, SimHost, measure};
use conclave_workload::auth::AuthConfig;
use conclave_workload::config::{DatasetConfig, PartyConfig};
use serde_json::{Value, json};

use conclave_deploy::{self as deploy, Stop, VaultSpec};

mod contracts;
mod identity;
mod launch;
mod portal;
mod provisioning;
mod topology;

use contracts::*;
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
    /// The data owners' floor for k: Contoso's and Fabrikam's vaults release their keys only to
    /// a contract whose smallest released group is at least this.
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

/// Runs the demo until Ctrl-C: shared services first (identity provider, sim host,
/// attestation service), then each party's vault, principals, key and dataset, then the
/// workloads; ready once every workload has attested and tried its own key, then the portal.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let ports = Ports::from(args.port)?;
    let state = prepare_state(&args.state_dir, args.fresh)?;
    let listeners = Listeners::bind(&ports).await?;
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
        listeners.idp,
        &stop,
    )?;
    let portal_tokens = PortalTokens::new(http.clone(), &idp_url, &portal_secret);

    // The simulated secure processor, and the attestation service that appraises its evidence.
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
        listeners.attest,
        &stop,
    )?;
    let site = Site {
        state,
        ca,
        http,
        attest_url,
        idp_url,
    };

    // Each party's vault, principals, key (pinning its genuine workloads' measurements) and
    // encrypted dataset.
    let parties = start_vaults(&site, listeners.vaults, &stop)?;
    add_principals(&site, &parties).await?;
    let contracts = write_contracts(&site.state, &parties)?;
    let binary = WorkloadBinary::current()?;
    let genuine: Vec<PartyConfig> = (0..parties.len())
        .map(|i| party_config(&site, &parties, i, ports.workload[i], args.k))
        .collect();
    let measurements: Vec<String> = genuine.iter().map(|c| binary.measurement(c)).collect();
    provision_keys(
        &site,
        &parties,
        &measurements,
        args.records,
        &contracts,
        args.k,
    )
    .await?;

    // The workloads: genuine and tampered through the sim host, the snooper without a TEE.
    let (guests, mut workloads) =
        launch_workloads(&site, &sim, &binary, &parties, &genuine, ports.tampered).await?;
    let (mut snooper, snooper_info) =
        start_snooper(&site, &binary, &parties, ports.snooper, args.k)?;
    workloads.push(snooper_info);

    let mut info = DemoInfo {
        portal: format!("http://127.0.0.1:{}/", ports.portal),
        attestation: site.attest_url.clone(),
        identity_provider: site.idp_url.clone(),
        sign_in,
        ca: site.ca.cert_path(),
        state_dir: site.state.clone(),
        records_per_party: args.records,
        k: args.k,
        parties,
        workloads,
    };
    // Ready when every workload has attested (or found it cannot), its TLS key has been checked
    // against its attestation, and it has tried its own key.
    let clients = match wait_ready(&site.http, &portal_tokens, &mut info).await {
        Ok(clients) => clients,
        Err(e) => {
            stop.stop();
            bail!("{e}");
        }
    };
    write_secret(
        &site.state.join("demo.json"),
        &serde_json::to_string_pretty(&info)?,
    )?;
    let portal_task = tokio::spawn(conclave_net::serve(
        listeners.portal,
        portal_router(info.clone(), site.http.clone(), clients, portal_tokens),
        None,
        stop.signal(),
    ));
    print_summary(&info, started.elapsed());

    tokio::select! {
        _ = crate::shutdown_signal() => {}
        status = snooper.wait() => eprintln!("the snooper exited ({status:?}); see its log"),
    }
    eprintln!("\nstopping: workloads, portal, vaults, attestation service, sim host …");
    for mut g in guests {
        g.child.kill().await.ok();
    }
    snooper.kill().await.ok();
    stop.stop();
    portal_task.await.ok();
    sim_task.abort();
    eprintln!(
        "stopped. State kept in {} (run again to reuse it, or pass --fresh).",
        site.state.display()
    );
    Ok(ExitCode::SUCCESS)
}
