//! The demo's topology: its three parties (defined once), the ports of everything it starts, and the
//! arguments and token lifetime every workload gets.

use super::*;

/// A party of the demo: who it is, its records, and whether it is the analytics partner.
pub(super) struct DemoParty {
    pub(super) party: Party,
    pub(super) name: &'static str,
    /// The record generator's seed: one for all three, so that the customers Fabrikam and
    /// Woodgrove share are the same people (each party's own records still differ: the
    /// generator salts each party's stream).
    pub(super) seed: u64,
    /// What its records are.
    pub(super) holds: &'static str,
    /// The analytics partner: its workload runs the analysis, is granted every key, and has
    /// the analyst user.
    pub(super) analyst: bool,
}

/// The three parties, defined once (served to the portal as `parties`).
pub(super) const PARTIES: [DemoParty; 3] = [
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
        seed: 1,
        holds: "retailer: its customers",
        analyst: false,
    },
    DemoParty {
        party: Party::Woodgrove,
        name: "Woodgrove Bank",
        seed: 1,
        holds: "bank and analytics partner: its clients",
        analyst: true,
    },
];

/// The index in [`PARTIES`] of the analytics partner.
pub(super) fn analyst() -> usize {
    PARTIES
        .iter()
        .position(|p| p.analyst)
        .expect("one party is the analytics partner")
}

/// Arguments every party workload is launched with (measured).
pub(super) const WORKLOAD_ARGS: [&str; 2] = ["party", "serve"];

/// Attestation tokens live ten minutes; workloads re-attest after about six.
pub(super) const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

pub(super) struct Ports {
    pub(super) portal: u16,
    pub(super) attest: u16,
    pub(super) vault: [u16; 3],
    pub(super) workload: [u16; 3],
    pub(super) snooper: u16,
    pub(super) tampered: u16,
    pub(super) idp: u16,
}

impl Ports {
    pub(super) fn from(base: u16) -> anyhow::Result<Self> {
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

pub(super) async fn bind(port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!(
                "port {port} is in use (another program, or a demo already running): choose another range with --port"
            )
        })
}

/// Checks a workload's port is free now; the workload binds it itself.
pub(super) async fn check_free(port: u16) -> anyhow::Result<()> {
    bind(port).await.map(drop)
}

/// The listeners the demo binds itself, bound before anything starts so that a port in use
/// stops the demo before it changes anything; the workloads' ports are checked free (each
/// workload binds its own).
pub(super) struct Listeners {
    pub(super) portal: tokio::net::TcpListener,
    pub(super) idp: tokio::net::TcpListener,
    pub(super) attest: tokio::net::TcpListener,
    /// One per party, in [`PARTIES`] order.
    pub(super) vaults: Vec<tokio::net::TcpListener>,
}

impl Listeners {
    pub(super) async fn bind(ports: &Ports) -> anyhow::Result<Self> {
        // The portal first: it has the range's first port, which a clash with another demo names.
        let portal = bind(ports.portal).await?;
        let idp = bind(ports.idp).await?;
        let attest = bind(ports.attest).await?;
        let mut vaults = Vec::new();
        for p in ports.vault {
            vaults.push(bind(p).await?);
        }
        let listeners = Listeners {
            portal,
            idp,
            attest,
            vaults,
        };
        for p in ports
            .workload
            .iter()
            .chain([&ports.snooper, &ports.tampered])
        {
            check_free(*p).await?;
        }
        Ok(listeners)
    }
}

/// The state directory, emptied first with `--fresh`, with its subdirectories; canonical.
pub(super) fn prepare_state(state_dir: &Path, fresh: bool) -> anyhow::Result<PathBuf> {
    if fresh && state_dir.exists() {
        std::fs::remove_dir_all(state_dir)
            .with_context(|| format!("removing {}", state_dir.display()))?;
    }
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let state = std::fs::canonicalize(state_dir)?;
    for dir in [
        "contracts",
        "keys",
        "logs",
        "storage",
        "tokens",
        "workloads",
    ] {
        std::fs::create_dir_all(state.join(dir))?;
    }
    Ok(state)
}

/// What the later steps share once the shared services run: where state lives, the local CA,
/// a client trusting it, and the attestation service's and identity provider's URLs.
pub(super) struct Site {
    pub(super) state: PathBuf,
    pub(super) ca: LocalCa,
    pub(super) http: reqwest::Client,
    pub(super) attest_url: String,
    pub(super) idp_url: String,
}
