//! `conclave`: the operator's command line. Each subcommand is a thin layer over a library
//! crate: `sim-host` and `tee` over conclave-tee, `attest` over conclave-attest and
//! conclave-snp.

#![forbid(unsafe_code)]

mod attest_cmd;
mod bench_cmd;
mod bench_release;
mod contract_cmd;
mod data_cmd;
mod demo;
mod idp_cmd;
mod kms_cmd;
mod launch_digest;
mod measure_cmd;
mod party_cmd;
mod progress;
mod receipt_cmd;
mod shipped_contracts;
mod sim_cmd;
mod tee_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "conclave",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("CONCLAVE_COMMIT"), ")"),
    about = "Confidential multi-party analytics on (simulated) AMD SEV-SNP"
)]
struct Cli {
    /// Log lines as text, or as one JSON object per line (for log collectors); logs go to
    /// standard error.
    #[arg(long, global = true, value_enum, env = "CONCLAVE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The whole multi-party story on this machine: sim host, attestation service, three
    /// vaults, encrypted datasets, the party workloads, a snooper and a tampered workload.
    Demo(demo::DemoArgs),
    /// What a release policy must pin for a workload, and the policy: on the simulated platform
    /// (sim), a bare SEV-SNP guest (snp), ACI confidential containers and AKS virtual nodes
    /// (aci), or Azure confidential VMs (cvm).
    Measure(measure_cmd::MeasureArgs),
    /// The simulated SEV-SNP platform (no hardware protection; for development and demos).
    #[command(subcommand)]
    SimHost(sim_cmd::SimHostCommand),
    /// The attestation service and offline verification tools.
    #[command(subcommand)]
    Attest(attest_cmd::AttestCommand),
    /// Run inside a TEE: get evidence and attest it.
    #[command(subcommand)]
    Tee(tee_cmd::TeeCommand),
    /// A party's key vault (Azure Key Vault-compatible, with secure key release).
    #[command(subcommand)]
    Kms(kms_cmd::KmsCommand),
    /// Manage keys, release policies and grants in a vault.
    #[command(subcommand)]
    Key(kms_cmd::KeyCommand),
    /// Generate, encrypt and inspect datasets.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Benchmarks: figures and ratios measured side by side in one run.
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// A party's workload (runs inside the TEE).
    #[command(subcommand)]
    Party(party_cmd::PartyCommand),
    /// Analysis contracts: write, inspect, approve and verify the analyses data owners allow.
    #[command(subcommand)]
    Contract(contract_cmd::ContractCommand),
    /// Check result receipts.
    #[command(subcommand)]
    Receipt(receipt_cmd::ReceiptCommand),
    /// Check or print a vault's audit log.
    #[command(subcommand)]
    Audit(kms_cmd::AuditCommand),
    /// The development identity provider (OpenID Connect) the demo signs users in with.
    #[command(subcommand)]
    Idp(idp_cmd::IdpCommand),
}

fn init_logging(default: &str, format: LogFormat) {
    // Who viewed records and ran analyses (`conclave::access`) is always logged, whatever the
    // verbosity asked for.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
        .add_directive("conclave::access=info".parse().expect("a valid directive"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        // One object per line: timestamp, level, target, fields (message included) and the
        // request span (method, route, request_id) the line belongs to.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Benchmarks log only warnings by default: per-request logs would be measured too.
    init_logging(
        if matches!(cli.command, Command::Bench(_)) {
            "warn"
        } else {
            "info"
        },
        cli.log_format,
    );
    let result = match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Measure(args) => measure_cmd::run(args),
        Command::SimHost(cmd) => sim_cmd::run(cmd).await,
        Command::Attest(cmd) => attest_cmd::run(cmd).await,
        Command::Tee(cmd) => tee_cmd::run(cmd).await,
        Command::Kms(cmd) => kms_cmd::run_kms(cmd).await,
        Command::Key(cmd) => kms_cmd::run_key(cmd).await,
        Command::Audit(cmd) => kms_cmd::run_audit(cmd).await,
        Command::Data(cmd) => data_cmd::run(cmd).await,
        Command::Bench(cmd) => bench_cmd::run(cmd).await,
        Command::Party(cmd) => party_cmd::run_party(cmd).await,
        Command::Receipt(cmd) => receipt_cmd::run(cmd).await,
        Command::Contract(cmd) => contract_cmd::run(cmd),
        Command::Idp(cmd) => idp_cmd::run(cmd).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves when the process gets Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
