//! Launching the workloads through the sim host, waiting until each is attested and has its keys,
//! and the summary printed for the user.

use super::*;
use conclave_workload::api::WorkloadStatus;
use conclave_workload::identity::AttestationState;
use conclave_workload::release::ReleaseState;

/// Points a non-genuine workload's sign-in at its own client and API audience.
pub(super) fn registered_apart(config: &mut PartyConfig, which: &str) {
    let (client_id, audience) = other_client(&config.party, which);
    if let Some(auth) = config.auth.as_mut() {
        auth.client_id = client_id;
        auth.audience = audience;
    }
}

pub(super) fn launch(
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
pub(super) async fn wait_ready(
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
            let status: Option<WorkloadStatus> = match client
                .get(format!("{}api/status", w.url))
                .bearer_auth(tokens.token(&w.party, &w.audience).await?)
                .send()
                .await
            {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let ready = status.as_ref().is_some_and(|s| {
                let attested = !matches!(s.attestation, AttestationState::Pending);
                let own_tried = s
                    .datasets
                    .iter()
                    .find(|d| d.own)
                    .is_some_and(|d| d.release != ReleaseState::NotRequested);
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

pub(super) fn print_summary(info: &DemoInfo, took: Duration) {
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
        "  Woodgrove Bank            {}   run an analysis contract (sign in as the analyst)",
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
    println!(
        "    (members see their party's records; Woodgrove's analyst runs the analysis contracts)"
    );
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

/// This program, as the workloads run it: its path, its bytes (measured) and the arguments the
/// sim host launches it with.
pub(super) struct WorkloadBinary {
    pub(super) path: PathBuf,
    bytes: Vec<u8>,
    args: Vec<String>,
}

impl WorkloadBinary {
    pub(super) fn current() -> anyhow::Result<Self> {
        let path = std::env::current_exe().context("finding this program's binary")?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(WorkloadBinary {
            path,
            bytes,
            args: WORKLOAD_ARGS.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The launch measurement (hex) of a workload running `config`: what release policies pin.
    pub(super) fn measurement(&self, config: &PartyConfig) -> String {
        hex::encode(measure(
            &self.bytes,
            &self.args,
            config.to_toml().as_bytes(),
        ))
    }
}

/// The workload config of party `me` listening on `port` with minimum group size `k` (of the
/// built-in analysis, off in the demo). The analytics partner lists every company's dataset
/// (its vault tokens: it is granted them, for the contracts each owner approved), its own
/// first, and runs the contracts of `<state>/contracts`; the others list their own and the
/// other companies' but the partner's (which they are not granted), to show the refusal.
pub(super) fn party_config(
    site: &Site,
    parties: &[PartyInfo],
    me: usize,
    port: u16,
    k: u64,
) -> PartyConfig {
    let p = &parties[me];
    let listed: Vec<usize> = std::iter::once(me)
        .chain((0..parties.len()).filter(|&d| d != me && (p.analyst || !parties[d].analyst)))
        .collect();
    PartyConfig {
        party: p.id.clone(),
        display_name: p.name.clone(),
        listen: ([127, 0, 0, 1], port).into(),
        attestation_url: site.attest_url.clone(),
        ca_file: site.ca.cert_path(),
        ca_pem: None,
        k,
        reference_year: None,
        // The analytics partner runs the approved contracts (`<state>/contracts`); the built-in
        // analysis, which no owner's key is bound to, is off.
        analysis: false,
        contracts_dir: p.analyst.then(|| site.state.join("contracts")),
        tls_names: Vec::new(),
        auth: Some(AuthConfig {
            issuer: format!("{}/{}", site.idp_url, p.id),
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
                token_file: token_path(&site.state, &parties[d].id, &p.id),
            })
            .collect(),
    }
}

/// Launches the genuine workloads (`genuine`, one per party) and a tampered analytics partner
/// (its config lowers k to 1, so its measurement matches no policy) through the sim host, side
/// by side (the sim host reads and hashes the binary for each).
pub(super) async fn launch_workloads(
    site: &Site,
    sim: &SimHost,
    binary: &WorkloadBinary,
    parties: &[PartyInfo],
    genuine: &[PartyConfig],
    tampered_port: u16,
) -> anyhow::Result<(Vec<conclave_sim_host::Guest>, Vec<WorkloadInfo>)> {
    let partner = &parties[analyst()];
    let mut tampered = party_config(site, parties, analyst(), tampered_port, 1);
    tampered.display_name = format!("{} (tampered: k = 1)", partner.name);
    registered_apart(&mut tampered, "tampered");
    let mut launches: Vec<(String, PartyConfig, &str)> = genuine
        .iter()
        .zip(parties)
        .map(|(c, p)| {
            let role = if p.analyst {
                "analytics partner: runs the contracts the owners approved; each key is released for those only"
            } else {
                "sees its own records; refused the other company's key"
            };
            (p.id.clone(), c.clone(), role)
        })
        .collect();
    launches.push((
        "tampered".into(),
        tampered,
        "a genuine TEE running a modified config (k = 1): its measurement matches no policy",
    ));
    let launching: Vec<_> = launches
        .into_iter()
        .map(|(id, config, role)| {
            let (sim, path, state) = (sim.clone(), binary.path.clone(), site.state.clone());
            tokio::task::spawn_blocking(move || launch(&sim, &path, &state, &id, &config, role))
        })
        .collect();
    let mut guests = Vec::new();
    let mut workloads = Vec::new();
    for l in launching {
        let (guest, info) = l.await??;
        guests.push(guest);
        workloads.push(info);
    }
    Ok((guests, workloads))
}

/// Starts the snooper: the same program without a TEE, holding the analytics partner's vault
/// tokens, on `port`. Every release it asks for is refused.
pub(super) fn start_snooper(
    site: &Site,
    binary: &WorkloadBinary,
    parties: &[PartyInfo],
    port: u16,
    k: u64,
) -> anyhow::Result<(tokio::process::Child, WorkloadInfo)> {
    let partner = &parties[analyst()];
    let mut snooper = party_config(site, parties, analyst(), port, k);
    registered_apart(&mut snooper, "snooper");
    snooper.display_name = format!("Snooper (no TEE, {}'s credentials)", partner.name);
    let config = site.state.join("workloads/snooper.toml");
    std::fs::write(&config, snooper.to_toml())?;
    let log_path = site.state.join("logs/snooper.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let child = tokio::process::Command::new(&binary.path)
        .args(["party", "serve", "--tee", "none", "--config"])
        .arg(&config)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the snooper")?;
    let info = WorkloadInfo {
        id: "snooper".into(),
        name: snooper.display_name.clone(),
        url: format!("https://127.0.0.1:{port}/"),
        party: partner.id.clone(),
        audience: snooper
            .auth
            .as_ref()
            .map(|a| a.audience.clone())
            .unwrap_or_default(),
        role: format!(
            "the same app started without a TEE, holding {}'s vault tokens: every release is refused",
            partner.name
        ),
        measurement: None,
        log: log_path,
        pin_sha256: None,
        pin_attested: false,
    };
    Ok((child, info))
}
