//! `conclave measure` and `conclave sim-host`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use conclave_sim_host::{LaunchSpec, SimHost, host_data, measure as sim_measure};

/// `conclave measure sim`: what the simulated platform measures.
#[derive(Args)]
pub struct SimMeasureArgs {
    /// The workload binary.
    pub binary: PathBuf,
    /// The launch config file the workload will be given.
    pub config: PathBuf,
    /// Arguments the workload is launched with (they are measured too).
    #[arg(last = true)]
    pub args: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The simulated platform's launch measurement and host data of a workload.
pub fn measure(a: SimMeasureArgs) -> anyhow::Result<ExitCode> {
    let binary =
        std::fs::read(&a.binary).with_context(|| format!("reading {}", a.binary.display()))?;
    let config =
        std::fs::read(&a.config).with_context(|| format!("reading {}", a.config.display()))?;
    let measurement = hex::encode(sim_measure(&binary, &a.args, &config));
    let host_data = hex::encode(host_data(&config));
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "launchmeasurement": measurement, "hostdata": host_data })
        );
    } else {
        println!("x-ms-sevsnpvm-launchmeasurement: {measurement}");
        println!("x-ms-sevsnpvm-hostdata:          {host_data}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum SimHostCommand {
    /// Launch one workload under the simulated platform and serve its report requests until it
    /// exits. Ctrl-C stops the workload.
    Launch {
        /// Where the simulated platform keeps its keys, images and socket.
        #[arg(long, env = "CONCLAVE_SIM_STATE")]
        state_dir: PathBuf,
        /// The launch config (measured; host_data is its SHA-256).
        #[arg(long)]
        config: PathBuf,
        /// Launch with the debug policy bit set.
        #[arg(long)]
        debug: bool,
        /// The workload binary, then its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print the path of the simulated platform's root certificate (ARK), creating the platform
    /// if needed; give it to `conclave attest serve --sim-root`.
    Root {
        #[arg(long, env = "CONCLAVE_SIM_STATE")]
        state_dir: PathBuf,
    },
}

pub async fn run(cmd: SimHostCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SimHostCommand::Root { state_dir } => {
            let host = SimHost::open(&state_dir)?;
            println!("{}", host.platform().ark_path().display());
            Ok(ExitCode::SUCCESS)
        }
        SimHostCommand::Launch {
            state_dir,
            config,
            debug,
            command,
        } => {
            let host = SimHost::open(&state_dir)?;
            let listener = host.bind()?;
            let (binary, args) = command.split_first().context("no workload binary given")?;
            let spec = LaunchSpec {
                binary: binary.into(),
                args: args.to_vec(),
                config: std::fs::read(&config)
                    .with_context(|| format!("reading {}", config.display()))?,
                debug,
                log: None,
            };
            let server = {
                let host = host.clone();
                tokio::spawn(async move { host.serve(listener, std::future::pending()).await })
            };
            let mut guest = host.launch(&spec)?;
            eprintln!(
                "sim host: launched pid {} (SIMULATED SEV-SNP — no hardware protection), measurement {}",
                guest.pid,
                hex::encode(guest.identity.measurement)
            );
            let status = tokio::select! {
                status = guest.child.wait() => status?,
                _ = crate::shutdown_signal() => {
                    guest.child.kill().await.ok();
                    guest.child.wait().await?
                }
            };
            server.abort();
            Ok(match status.code() {
                Some(0) => ExitCode::SUCCESS,
                Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
                None => ExitCode::FAILURE,
            })
        }
    }
}
