//! `conclave tee`: the workload side of attestation, for scripts and for checking a platform.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use conclave_attest::api::{AttestSevSnpVmRequest, attest, report_data_for};
use conclave_tee::Platform;
use conclave_tee::ephemeral::EphemeralKey;

#[derive(Subcommand)]
pub enum TeeCommand {
    /// Get evidence from this TEE, with a fresh ephemeral key in the runtime data, and exchange
    /// it for an attestation token. Prints the token.
    Attest {
        /// sim, snp or azure-vtpm.
        #[arg(long, default_value = "sim")]
        platform: Platform,
        /// Base URL of the attestation service.
        #[arg(long)]
        attestation_url: String,
        /// Nonce to include in the token.
        #[arg(long)]
        nonce: Option<String>,
        /// Write the token here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run(cmd: TeeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TeeCommand::Attest {
            platform,
            attestation_url,
            nonce,
            out,
        } => {
            let source = conclave_tee::source(platform)?;
            let key = EphemeralKey::generate()?;
            let runtime = key.runtime_json();
            let evidence = source.evidence(report_data_for(&runtime)).await?;
            let request = AttestSevSnpVmRequest::new(&evidence, &runtime, nonce);
            let token = attest(&reqwest::Client::new(), &attestation_url, &request).await?;
            match out {
                Some(path) => std::fs::write(&path, &token)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{token}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
