//! The guest's side of Conclave's simulated SEV-SNP platform: the workload asks the sim host
//! (crate `conclave-sim-host`, which launched it) for reports over a Unix socket, one JSON line
//! each way. The constants and messages here are that platform's interface, shared by both
//! sides.
//!
//! Everything here is honest about being simulated: the chain's names say so, and the
//! attestation service marks tokens from this root with `x-conclave-platform: "sim"`.

use std::path::PathBuf;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::{Evidence, EvidenceFuture, EvidenceSource, Platform, TeeError};

/// Environment variable naming the sim host's socket, set for every launched workload.
pub const SOCKET_ENV: &str = "CONCLAVE_SIM_SOCKET";
/// Environment variable naming the launch config file, set for every launched workload.
pub const CONFIG_ENV: &str = "CONCLAVE_LAUNCH_CONFIG";

/// Guest policy of a normal launch: ABI 0.0, SMT allowed, reserved bit 17 set.
pub const POLICY_DEFAULT: u64 = 0x3_0000;
/// The debug bit: the host may read guest memory.
pub const POLICY_DEBUG: u64 = 1 << 19;

/// Request from a workload, one JSON line on the socket: the 64 bytes to bind, hex-encoded.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ReportRequest {
    pub report_data: String,
}

/// The sim host's answer, one JSON line.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportResponse {
    /// `report`: base64 of the report; `cert_chain_pem`: VCEK, ASK, ARK.
    Ok {
        report: String,
        cert_chain_pem: String,
    },
    Error {
        message: String,
    },
}

/// The workload's side: asks the sim host named by [`SOCKET_ENV`] for reports.
pub struct SimEvidence {
    socket: PathBuf,
}

impl SimEvidence {
    pub fn new(socket: PathBuf) -> Self {
        SimEvidence { socket }
    }

    pub fn from_env() -> Result<Self, TeeError> {
        let socket = std::env::var_os(SOCKET_ENV).ok_or_else(|| {
            TeeError::Unavailable(format!(
                "{SOCKET_ENV} is not set: this process was not launched by a sim host"
            ))
        })?;
        Ok(SimEvidence {
            socket: socket.into(),
        })
    }

    async fn request(&self, report_data: [u8; 64]) -> Result<Evidence, TeeError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            TeeError::Unavailable(format!(
                "cannot reach the sim host at {}: {e}",
                self.socket.display()
            ))
        })?;
        let (read, mut write) = stream.into_split();
        let mut req = serde_json::to_vec(&ReportRequest {
            report_data: hex::encode(report_data),
        })
        .expect("request serialises");
        req.push(b'\n');
        write.write_all(&req).await?;
        let mut line = String::new();
        BufReader::new(read.take(1 << 20))
            .read_line(&mut line)
            .await?;
        match serde_json::from_str(line.trim()) {
            Ok(ReportResponse::Ok {
                report,
                cert_chain_pem,
            }) => Ok(Evidence {
                platform: Platform::Sim,
                report: base64::engine::general_purpose::STANDARD
                    .decode(report)
                    .map_err(|e| TeeError::Malformed(format!("report is not base64: {e}")))?,
                cert_chain_pem,
                hcl_runtime_claims: None,
                tpm_quote: None,
            }),
            Ok(ReportResponse::Error { message }) => Err(TeeError::Refused(message)),
            Err(e) => Err(TeeError::Malformed(format!("sim host answer: {e}"))),
        }
    }
}

impl EvidenceSource for SimEvidence {
    fn platform(&self) -> Platform {
        Platform::Sim
    }

    fn evidence(&self, report_data: [u8; 64]) -> EvidenceFuture<'_> {
        Box::pin(self.request(report_data))
    }
}
