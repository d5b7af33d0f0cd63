//! The host's side of Conclave's simulated SEV-SNP platform.
//!
//! A [`SimHost`] stands in for the AMD secure processor and the hypervisor: it launches a
//! workload process, measures exactly what it launched (binary bytes, arguments and launch
//! config), and signs reports for that process only. The workload talks to it over a Unix
//! socket; the host identifies the caller by the socket's peer credentials and by the process
//! start time, so a process it did not launch (or one that reused a dead guest's pid) gets no
//! report. The workload supplies only `report_data`: it can neither choose its measurement nor
//! touch the signing key.
//!
//! Everything here is honest about being simulated: the chain's names say so, and the
//! attestation service marks tokens from this root with `x-conclave-platform: "sim"`.

mod platform;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use conclave_snp::report::GuestPolicy;
use conclave_tee::TeeError;
use conclave_tee::sim::{
    CONFIG_ENV, POLICY_DEBUG, POLICY_DEFAULT, ReportRequest, ReportResponse, SOCKET_ENV,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub use platform::{LaunchIdentity, SIM_TCB, SimPlatform};

const MAX_REQUEST: u64 = 4096;

/// The launch measurement: SHA-384 over everything the host launches.
pub fn measure(binary: &[u8], args: &[String], config: &[u8]) -> [u8; 48] {
    let mut ctx = digest::Context::new(&digest::SHA384);
    ctx.update(b"conclave-sim-launch/v1\0");
    ctx.update(&(binary.len() as u64).to_le_bytes());
    ctx.update(binary);
    ctx.update(&(args.len() as u64).to_le_bytes());
    for a in args {
        ctx.update(&(a.len() as u64).to_le_bytes());
        ctx.update(a.as_bytes());
    }
    ctx.update(&(config.len() as u64).to_le_bytes());
    ctx.update(config);
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-384 is 48 bytes")
}

/// `host_data`: SHA-256 of the launch config.
pub fn host_data(config: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, config)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub binary: PathBuf,
    pub args: Vec<String>,
    /// The launch config; the workload reads it from the file named by [`CONFIG_ENV`].
    pub config: Vec<u8>,
    /// Launch with the debug policy bit set (a verifier should refuse such a guest).
    pub debug: bool,
    /// Append the workload's stdout and stderr to this file instead of inheriting them.
    pub log: Option<PathBuf>,
}

/// A launched workload.
pub struct Guest {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub identity: LaunchIdentity,
}

#[derive(Clone)]
struct Registered {
    identity: LaunchIdentity,
    start_time: u64,
}

/// The simulated secure processor plus the launcher.
#[derive(Clone)]
pub struct SimHost {
    platform: Arc<SimPlatform>,
    guests: Arc<Mutex<HashMap<u32, Registered>>>,
    state_dir: PathBuf,
    socket: PathBuf,
}

/// Start time of a process, in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl SimHost {
    /// Loads or creates the platform under `state_dir/platform`; the socket is
    /// `state_dir/sim-host.sock`.
    pub fn open(state_dir: &Path) -> Result<Self, TeeError> {
        let platform = SimPlatform::load_or_create(&state_dir.join("platform"))?;
        Ok(SimHost {
            platform: Arc::new(platform),
            guests: Arc::default(),
            state_dir: state_dir.to_path_buf(),
            socket: state_dir.join("sim-host.sock"),
        })
    }

    pub fn platform(&self) -> &SimPlatform {
        &self.platform
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Binds the socket (replacing a stale one from an earlier run).
    pub fn bind(&self) -> Result<UnixListener, TeeError> {
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(UnixListener::bind(&self.socket)?)
    }

    /// Answers report requests until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: UnixListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let host = self.clone();
                        tokio::spawn(async move { host.answer(stream).await });
                    }
                    Err(e) => tracing::warn!("sim host: accept failed: {e}"),
                },
            }
        }
    }

    async fn answer(&self, stream: UnixStream) {
        let peer = stream
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok());
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let read_result = BufReader::new(read.take(MAX_REQUEST))
            .read_line(&mut line)
            .await;
        let response = match read_result {
            Ok(_) => self.report_for(peer, &line),
            Err(e) => ReportResponse::Error {
                message: format!("could not read the request: {e}"),
            },
        };
        let mut out = serde_json::to_vec(&response).expect("response serialises");
        out.push(b'\n');
        if let Err(e) = write.write_all(&out).await {
            tracing::debug!("sim host: client went away: {e}");
        }
    }

    fn report_for(&self, peer: Option<u32>, line: &str) -> ReportResponse {
        let refuse = |message: String| {
            tracing::warn!("sim host refused a report: {message}");
            ReportResponse::Error { message }
        };
        let Some(pid) = peer else {
            return refuse("the caller's process id is unknown".into());
        };
        let identity = {
            let mut guests = self.guests.lock().expect("guest table lock");
            guests.retain(|p, g| process_start_time(*p) == Some(g.start_time));
            match guests.get(&pid) {
                Some(g) => g.identity.clone(),
                None => {
                    return refuse(format!(
                        "process {pid} was not launched by this sim host; only launched workloads get reports"
                    ));
                }
            }
        };
        let request: ReportRequest = match serde_json::from_str(line.trim()) {
            Ok(r) => r,
            Err(e) => return refuse(format!("malformed request: {e}")),
        };
        let report_data: [u8; 64] = match hex::decode(&request.report_data)
            .ok()
            .and_then(|v| v.try_into().ok())
        {
            Some(rd) => rd,
            None => return refuse("report_data must be 64 bytes, hex-encoded".into()),
        };
        match self.platform.sign_report(&identity, report_data) {
            Ok(report) => ReportResponse::Ok {
                report: base64::engine::general_purpose::STANDARD.encode(report),
                cert_chain_pem: self.platform.cert_chain_pem(),
            },
            Err(e) => refuse(e.to_string()),
        }
    }

    /// Launches a workload: measures the binary, arguments and config, starts the process from
    /// a content-addressed copy of exactly the measured bytes, and registers it for reports.
    pub fn launch(&self, spec: &LaunchSpec) -> Result<Guest, TeeError> {
        let binary = std::fs::read(&spec.binary).map_err(|e| {
            TeeError::Io(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", spec.binary.display()),
            ))
        })?;
        let measurement = measure(&binary, &spec.args, &spec.config);
        // Held until the process has started: a process forked by a concurrent launch while an
        // image is still open for writing here keeps that descriptor until it execs, and
        // starting the image meanwhile fails with ETXTBSY ("Text file busy").
        let _launching = LAUNCHING.lock().unwrap_or_else(|e| e.into_inner());
        let image = self.store_image(&binary, &measurement)?;
        drop(binary);

        let launch_dir = self.state_dir.join("launches");
        std::fs::create_dir_all(&launch_dir)?;
        let mut report_id = [0u8; 32];
        SystemRandom::new()
            .fill(&mut report_id)
            .map_err(|_| TeeError::Refused("no randomness for the report id".into()))?;
        let config_path = launch_dir.join(format!("{}.config", hex::encode(&report_id[..8])));
        std::fs::write(&config_path, &spec.config)?;

        let mut cmd = tokio::process::Command::new(&image);
        cmd.args(&spec.args)
            .env_clear()
            .env(SOCKET_ENV, &self.socket)
            .env(CONFIG_ENV, &config_path)
            .kill_on_drop(true);
        for passthrough in ["RUST_LOG", "RUST_BACKTRACE"] {
            if let Ok(v) = std::env::var(passthrough) {
                cmd.env(passthrough, v);
            }
        }
        if let Some(log) = &spec.log {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?;
            cmd.stdout(f.try_clone()?).stderr(f);
        }
        let identity = LaunchIdentity {
            measurement,
            host_data: host_data(&spec.config),
            policy: GuestPolicy(POLICY_DEFAULT | if spec.debug { POLICY_DEBUG } else { 0 }),
            report_id,
        };
        // Register before the process can ask: hold the lock across the spawn.
        let mut guests = self.guests.lock().expect("guest table lock");
        let child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| TeeError::Refused("the workload exited at once".into()))?;
        let start_time = process_start_time(pid)
            .ok_or_else(|| TeeError::Refused(format!("cannot read /proc/{pid}/stat")))?;
        guests.insert(
            pid,
            Registered {
                identity: identity.clone(),
                start_time,
            },
        );
        drop(guests);
        tracing::info!(pid, measurement = %hex::encode(measurement), "sim host launched a workload");
        Ok(Guest {
            child,
            pid,
            identity,
        })
    }

    /// Keeps one executable copy per measured binary, so what runs is what was measured even if
    /// the original file changes afterwards.
    fn store_image(&self, binary: &[u8], measurement: &[u8; 48]) -> Result<PathBuf, TeeError> {
        use std::os::unix::fs::PermissionsExt as _;
        let images = self.state_dir.join("images");
        std::fs::create_dir_all(&images)?;
        let file_digest = digest::digest(&digest::SHA384, binary);
        let path = images.join(hex::encode(file_digest.as_ref()));
        let intact = std::fs::read(&path)
            .map(|existing| {
                digest::digest(&digest::SHA384, &existing).as_ref() == file_digest.as_ref()
            })
            .unwrap_or(false);
        if !intact {
            let tmp = path.with_extension(format!("tmp{}", hex::encode(&measurement[..4])));
            std::fs::write(&tmp, binary)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o500))?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(path)
    }
}

/// Serialises writing images and starting processes (see [`SimHost::launch`]).
static LAUNCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
