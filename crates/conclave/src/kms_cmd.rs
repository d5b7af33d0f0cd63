//! `conclave kms`, `conclave key`, `conclave audit`: run a vault, manage keys and grants, check
//! the audit log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use conclave_kms::api::{CreateKeyRequest, KeyAttributes, ReleasePolicyBody, UpdateKeyRequest};
use conclave_kms::client::VaultClient;
use conclave_kms::crypto::MasterKey;
use conclave_kms::store::{Permission, Store};
use conclave_net::LocalCa;

// Parsed once per process from the command line: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum KmsCommand {
    /// Print the OpenAPI 3.1 description of the vault's HTTP API (JSON).
    Openapi,
    /// Run a key vault (Azure Key Vault keys API with secure key release) over TLS.
    Serve {
        #[arg(long, env = "CONCLAVE_VAULT_STATE")]
        state_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Public URL of the vault (default https://<listen>).
        #[arg(long)]
        url: Option<String>,
        /// Issuer URL of an attestation service whose tokens may release keys (repeatable).
        #[arg(long = "attestation-authority", required = true)]
        authorities: Vec<String>,
        /// Local CA directory: the vault's TLS and signing certificates are issued from it, and
        /// it is trusted when fetching the attestation services' keys.
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// TLS certificate chain (PEM, leaf first) instead of the local CA; needs --tls-key,
        /// --signing-cert and --signing-key.
        #[arg(long, requires_all = ["tls_key", "signing_cert", "signing_key"], conflicts_with = "ca_dir")]
        tls_cert: Option<PathBuf>,
        /// Private key (PKCS#8, DER or PEM) for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Certificate chain (PEM, leaf first) of the key that signs release responses (with
        /// --tls-cert); clients see it in the responses' x5c header.
        #[arg(long, requires = "tls_cert")]
        signing_cert: Option<PathBuf>,
        /// RSA private key (PKCS#8, DER or PEM) for --signing-cert; must not be the TLS key.
        #[arg(long, requires = "tls_cert")]
        signing_key: Option<PathBuf>,
        /// With --tls-cert: a CA certificate (PEM) to trust besides the system's when fetching
        /// the attestation services' keys (a private attestation service's CA).
        #[arg(long, requires = "tls_cert")]
        trust_ca: Option<PathBuf>,
        /// Release keys to hardware TEEs only (refuse tokens for simulated evidence).
        #[arg(long)]
        hardware_only: bool,
        /// Master key file (default <state-dir>/master.key, created if missing); or set
        /// CONCLAVE_VAULT_MASTER_KEY.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// Days a deleted key stays recoverable (Azure: 7 to 90).
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(7..=90))]
        retention_days: u64,
        /// Deleted keys cannot be purged before their retention ends.
        #[arg(long)]
        purge_protection: bool,
        /// Keep the store in PostgreSQL (postgres://user[:password]@host:port/db) instead of
        /// <state>/vault.redb, so that several replicas with the same master key serve one
        /// vault (put them behind one load balancer URL with --url).
        #[arg(long, env = "CONCLAVE_VAULT_POSTGRES", hide_env_values = true)]
        postgres: Option<String>,
        /// When the vault is created: the SHA-256 (hex) of the first admin's token, which the
        /// operator made (`conclave kms admin-token`) and keeps; the vault then writes no token
        /// file. Without it, a new vault writes its admin token to <state-dir>/admin.token.
        #[arg(long, env = "CONCLAVE_VAULT_ADMIN_TOKEN_SHA256")]
        admin_token_sha256: Option<String>,
    },
    /// Make a vault admin token before the vault exists: writes the token to --out (mode 0600)
    /// and prints its SHA-256, for `kms serve --admin-token-sha256` (or the Helm chart's
    /// Secret). The token stays with you; the vault only ever sees its hash.
    AdminToken {
        /// Where to write the token (refused if the file exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// The vault's security domain: its master key split among custodians, any quorum of whom
    /// recover it (as Azure Managed HSM's security domain).
    #[command(subcommand)]
    SecurityDomain(SecurityDomainCommand),
    /// Add a principal (or give an existing one a new token); prints its bearer token.
    Principal {
        #[command(flatten)]
        conn: VaultConn,
        /// The principal's name.
        name: String,
        /// Make it a vault admin.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Subcommand)]
pub enum SecurityDomainCommand {
    /// Split the master key among custodians (their RSA public keys or certificates, PEM) so
    /// that any --quorum of them recover it; writes the security domain (encrypted shares only).
    Export {
        #[arg(long, env = "CONCLAVE_VAULT_STATE")]
        state_dir: PathBuf,
        /// Master key file (default <state-dir>/master.key); or set CONCLAVE_VAULT_MASTER_KEY.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// A custodian's RSA public key or certificate (PEM), repeated once per custodian.
        #[arg(long = "custodian", required = true)]
        custodians: Vec<PathBuf>,
        /// How many custodians must come together to recover the key (at least 2).
        #[arg(long)]
        quorum: u8,
        /// Where to write the security domain (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// A custodian decrypts their share with their private key (PKCS#8, PEM or DER); the share
    /// file is secret (mode 0600) and is given only to the recovery.
    DecryptShare {
        #[arg(long)]
        security_domain: PathBuf,
        /// The custodian's private key.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Recover the master key from a quorum of decrypted shares into a new file (mode 0600),
    /// checked against the vault id the shares name.
    Recover {
        /// A decrypted share file, repeated once per custodian.
        #[arg(long = "share", required = true)]
        shares: Vec<PathBuf>,
        /// The master key file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// An RSA public key (`PUBLIC KEY`) or certificate (`CERTIFICATE`), PEM or DER: its DER SPKI.
fn custodian_spki(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        let b64: String = text
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        return base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim())
            .with_context(|| format!("{}: the PEM is not base64", path.display()));
    }
    let cert =
        conclave_pki::Cert::parse(&path.display().to_string(), &bytes).with_context(|| {
            format!(
                "{}: neither a PEM public key nor a certificate",
                path.display()
            )
        })?;
    Ok(cert.spki_der())
}

async fn run_security_domain(cmd: SecurityDomainCommand) -> anyhow::Result<ExitCode> {
    use conclave_kms::security_domain as sd;
    match cmd {
        SecurityDomainCommand::Export {
            state_dir,
            master_key_file,
            custodians,
            quorum,
            out,
        } => {
            let path = master_key_file.unwrap_or_else(|| state_dir.join("master.key"));
            let master = conclave_kms::crypto::MasterKey::load(&path, false)?;
            let keys = custodians
                .iter()
                .map(|p| custodian_spki(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let domain = sd::export(&master, &keys, quorum)?;
            conclave_net::write_file(
                &out,
                serde_json::to_string_pretty(&domain)?.as_bytes(),
                0o644,
            )?;
            eprintln!(
                "security domain of vault {} written to {}: {} shares, any {quorum} recover the master key",
                domain.vault,
                out.display(),
                domain.shares.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        SecurityDomainCommand::DecryptShare {
            security_domain,
            key,
            out,
        } => {
            let domain: sd::SecurityDomain = serde_json::from_slice(
                &std::fs::read(&security_domain)
                    .with_context(|| format!("reading {}", security_domain.display()))?,
            )
            .with_context(|| format!("{} is not a security domain", security_domain.display()))?;
            let pkcs8 = conclave_net::read_pkcs8(&key)?;
            let private = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8)
                .map_err(|_| anyhow::anyhow!("{} is not an RSA PKCS#8 key", key.display()))?;
            let share = sd::decrypt_share(&domain, private)?;
            conclave_net::write_file(&out, serde_json::to_string(&share)?.as_bytes(), 0o600)?;
            eprintln!(
                "share of vault {} written to {} (secret: hand it only to the recovery)",
                share.vault,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        SecurityDomainCommand::Recover { shares, out } => {
            let shares = shares
                .iter()
                .map(|p| {
                    let bytes = zeroize::Zeroizing::new(
                        std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                    );
                    serde_json::from_slice::<sd::DecryptedShare>(&bytes)
                        .with_context(|| format!("{} is not a decrypted share", p.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let master = sd::recover(&shares)?;
            master.write_new(&out)?;
            eprintln!(
                "master key of vault {} recovered into {}",
                sd::vault_id(&master),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How to reach a vault.
#[derive(Args)]
pub struct VaultConn {
    /// Vault URL.
    #[arg(long, env = "CONCLAVE_VAULT")]
    vault: String,
    /// Bearer token, or @file.
    #[arg(long, env = "CONCLAVE_VAULT_TOKEN", hide_env_values = true)]
    token: String,
    /// CA certificate to trust (the local CA of `conclave kms serve`).
    #[arg(long, env = "CONCLAVE_CA")]
    ca: Option<PathBuf>,
}

impl VaultConn {
    fn client(&self) -> anyhow::Result<VaultClient> {
        let token = match self.token.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading token file {path}"))?,
            None => self.token.clone(),
        };
        Ok(VaultClient::new(
            conclave_net::client(self.ca.as_deref())?,
            &self.vault,
            &token,
        ))
    }
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create an RSA key (a new version if it exists). With --policy the key is exportable and
    /// released only under that policy.
    Create {
        #[command(flatten)]
        conn: VaultConn,
        name: String,
        #[arg(long, default_value_t = 2048)]
        size: u32,
        /// Release policy JSON file (Azure's secure key release grammar).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Make the release policy immutable.
        #[arg(long, requires = "policy")]
        immutable: bool,
    },
    /// Show a key's public part, attributes and release policy.
    Get {
        #[command(flatten)]
        conn: VaultConn,
        name: String,
    },
    /// List a key's versions (oldest first).
    Versions {
        #[command(flatten)]
        conn: VaultConn,
        name: String,
    },
    /// List who may get or release a key (owner only).
    Grants {
        #[command(flatten)]
        conn: VaultConn,
        name: String,
    },
    /// Make a new version of a key (owner only): fresh key material, the latest's settings.
    Rotate {
        #[command(flatten)]
        conn: VaultConn,
        name: String,
    },
    /// Set a key's rotation policy (owner only): a new version when the latest is this old.
    RotationPolicy {
        #[command(flatten)]
        conn: VaultConn,
        name: String,
        /// ISO 8601 duration after a version's creation (at least P7D), e.g. P90D.
        #[arg(long)]
        rotate_after: String,
        /// ISO 8601 duration after which each new version expires, e.g. P2Y.
        #[arg(long)]
        expiry: Option<String>,
    },
    /// Show a key's privacy budget (total, spent and remaining ε), or set its total with
    /// --epsilon (owner only). With a budget, the key is released only to runs that attest their
    /// ε (contracts with differential privacy), each release debiting it; one that would
    /// overspend is refused.
    Budget {
        #[command(flatten)]
        conn: VaultConn,
        name: String,
        /// The total ε over all releases of the key (every version); what is spent stays spent.
        #[arg(long)]
        epsilon: Option<f64>,
    },
    /// Back a key up (owner only): every version, sealed so that only a vault of the same
    /// security domain restores it.
    Backup {
        #[command(flatten)]
        conn: VaultConn,
        name: String,
        /// Where to write the backup.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a key from a backup (refused if a key of that name exists, or the backup comes
    /// from another security domain).
    Restore {
        #[command(flatten)]
        conn: VaultConn,
        /// The backup file.
        backup: PathBuf,
    },
    /// Grant another principal get and/or release on a key (owner only).
    Grant {
        #[command(flatten)]
        conn: VaultConn,
        name: String,
        #[arg(long)]
        to: String,
        #[arg(long, value_delimiter = ',', default_value = "get,release")]
        permissions: Vec<String>,
    },
    /// Revoke a principal's grant (owner only); applies to the next request.
    Revoke {
        #[command(flatten)]
        conn: VaultConn,
        name: String,
        #[arg(long)]
        from: String,
    },
    /// Replace the release policy of a key's latest version (owner only; not if immutable).
    Policy {
        #[command(flatten)]
        conn: VaultConn,
        name: String,
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        immutable: bool,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check an audit log. With --state-dir: a stopped vault's whole MAC chain (needs its master
    /// key). With --checkpoint: a bundle from `audit proofs`, by anyone holding the vault's
    /// verifier key and nothing secret (the signed checkpoint, each entry's inclusion proof,
    /// and with --earlier that the log only grew). Exits non-zero naming what failed.
    Verify {
        #[arg(
            long,
            env = "CONCLAVE_VAULT_STATE",
            required_unless_present = "checkpoint",
            conflicts_with = "checkpoint"
        )]
        state_dir: Option<PathBuf>,
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// The vault's PostgreSQL store (checked while the replicas run).
        #[arg(long, env = "CONCLAVE_VAULT_POSTGRES", hide_env_values = true)]
        postgres: Option<String>,
        /// An audit bundle (JSON, from `conclave audit proofs`).
        #[arg(long, requires = "vault_key")]
        checkpoint: Option<PathBuf>,
        /// The vault's audit verifier key (`conclave audit key`), or @file.
        #[arg(long)]
        vault_key: Option<String>,
        /// An earlier bundle of the same vault: the log must extend it.
        #[arg(long, requires = "checkpoint")]
        earlier: Option<PathBuf>,
    },
    /// Fetch the entries about your keys with inclusion proofs against the vault's signed
    /// checkpoint (an audit bundle), for `audit verify --checkpoint`.
    Proofs {
        #[command(flatten)]
        conn: VaultConn,
        /// An earlier bundle: include the consistency proof from its checkpoint.
        #[arg(long)]
        since: Option<PathBuf>,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Print the vault's audit verifier key (C2SP signed-note), to compare out of band and
    /// give to `audit verify --vault-key`.
    Key {
        #[command(flatten)]
        conn: VaultConn,
    },
    /// Print a stopped vault's audit log (one JSON entry per line) and its head.
    Show {
        #[arg(long, env = "CONCLAVE_VAULT_STATE")]
        state_dir: PathBuf,
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// The vault's PostgreSQL store.
        #[arg(long, env = "CONCLAVE_VAULT_POSTGRES", hide_env_values = true)]
        postgres: Option<String>,
    },
}

fn policy_body(path: &PathBuf, immutable: bool) -> anyhow::Result<ReleasePolicyBody> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    conclave_kms::policy::ReleasePolicy::parse(&bytes)
        .with_context(|| path.display().to_string())?;
    Ok(ReleasePolicyBody {
        content_type: Some("application/json; charset=utf-8".into()),
        data: Some(conclave_attest::api::b64url(&bytes)),
        immutable: Some(immutable),
    })
}

fn print(v: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn run_kms(cmd: KmsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KmsCommand::Openapi => {
            use utoipa::OpenApi as _;
            println!(
                "{}",
                conclave_kms::service::VaultApi::openapi().to_pretty_json()?
            );
            Ok(ExitCode::SUCCESS)
        }
        KmsCommand::Serve {
            state_dir,
            listen,
            url,
            authorities,
            ca_dir,
            tls_cert,
            tls_key,
            signing_cert,
            signing_key,
            trust_ca,
            hardware_only,
            master_key_file,
            retention_days,
            purge_protection,
            postgres,
            admin_token_sha256,
        } => {
            // Checked before anything is made, so that a bad hash leaves no half-made vault.
            let admin_token_sha256 = admin_token_sha256
                .map(|h| conclave_kms::service::parse_admin_token_sha256(&h))
                .transpose()
                .map_err(|e| anyhow!("--admin-token-sha256: {e}"))?;
            let postgres = match postgres {
                Some(url) => Some(
                    conclave_kms::store::postgres::PgBackend::connect(&url)
                        .await
                        .context("opening the vault's PostgreSQL store")?,
                ),
                None => None,
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| {
                    format!("cannot listen on {listen} (in use? choose another with --listen)")
                })?;
            let addr = listener.local_addr()?;
            let url = url.unwrap_or_else(|| format!("https://{addr}"));
            // With operator certificates, attestation services are reached with system roots;
            // otherwise a local CA issues the vault's certificates and is trusted for them.
            let ca = match &tls_cert {
                Some(_) => None,
                None => Some(LocalCa::load_or_create(
                    &ca_dir.unwrap_or_else(|| state_dir.join("ca")),
                )?),
            };
            let certs = match (&ca, tls_cert, tls_key, signing_cert, signing_key) {
                (Some(ca), ..) => conclave_kms::setup::Certificates::LocalCa(ca),
                (None, Some(chain_pem), Some(key), Some(signing_chain_pem), Some(signing_key)) => {
                    conclave_kms::setup::Certificates::Files {
                        chain_pem,
                        key,
                        signing_chain_pem,
                        signing_key,
                    }
                }
                (None, ..) => bail!("--tls-cert needs --tls-key, --signing-cert and --signing-key"),
            };
            let ca_path = ca.as_ref().map(|c| c.cert_path()).or(trust_ca);
            // On the main thread (not an async worker), so waiting on the database here leaves
            // the workers free to drive its connections.
            let opened = conclave_kms::setup::open(
                conclave_kms::setup::VaultOptions {
                    state_dir: state_dir.clone(),
                    vault_url: url.clone(),
                    tls_names: vec![addr.ip().to_string(), "localhost".into()],
                    authorities: authorities.clone(),
                    http: conclave_net::client(ca_path.as_deref())?,
                    hardware_only,
                    master_key_file,
                    deletion: conclave_kms::service::DeletionPolicy {
                        retention: std::time::Duration::from_secs(retention_days * 86_400),
                        purge_protection,
                    },
                    postgres,
                    admin_token_sha256,
                },
                certs,
            )?;
            // Service banners are log lines, so that --log-format json keeps stderr all JSON.
            tracing::info!(
                %url,
                ca_certificate = ca_path.as_ref().map(|p| p.display().to_string()),
                admin_token = %opened.admin_token_path.as_ref().map_or_else(
                    || "the operator's (its SHA-256 was given)".to_string(),
                    |p| p.display().to_string()
                ),
                authorities = %authorities.join(", "),
                hardware_only,
                audit_verifier_key = %opened.vault.audit_verifier_key(),
                "vault listening"
            );
            // Scheduled rotation: keys whose rotation policy says they are due get a new version.
            let rotating = opened.vault.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    let vault = rotating.clone();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    match tokio::task::spawn_blocking(move || vault.rotate_due(now)).await {
                        Ok(Ok(keys)) if !keys.is_empty() => {
                            tracing::info!(keys = %keys.join(", "), "rotated by rotation policy")
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e.message, "scheduled rotation failed")
                        }
                        _ => {}
                    }
                }
            });
            let router = conclave_kms::service::router(opened.vault);
            conclave_net::serve(listener, router, Some(opened.tls), crate::shutdown_signal())
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        KmsCommand::SecurityDomain(cmd) => run_security_domain(cmd).await,
        KmsCommand::AdminToken { out } => {
            if out.exists() {
                bail!(
                    "{} exists: choose another --out (an admin token is never overwritten)",
                    out.display()
                );
            }
            let token = conclave_kms::service::new_token();
            conclave_pki::write_secret(&out, token.as_bytes())?;
            println!(
                "{}",
                hex::encode(aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    token.as_bytes()
                ))
            );
            Ok(ExitCode::SUCCESS)
        }
        KmsCommand::Principal { conn, name, admin } => {
            let token = conn.client()?.add_principal(&name, admin).await?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn run_key(cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::Create {
            conn,
            name,
            size,
            policy,
            immutable,
        } => {
            let release_policy = policy
                .as_ref()
                .map(|p| policy_body(p, immutable))
                .transpose()?;
            let req = CreateKeyRequest {
                kty: Some("RSA-HSM".into()),
                key_size: Some(size),
                attributes: Some(KeyAttributes {
                    exportable: Some(release_policy.is_some()),
                    ..Default::default()
                }),
                release_policy,
                ..Default::default()
            };
            print(&conn.client()?.create_key(&name, &req).await?)
        }
        KeyCommand::Get { conn, name } => print(&conn.client()?.get_key(&name).await?),
        KeyCommand::Versions { conn, name } => print(&conn.client()?.versions(&name).await?),
        KeyCommand::Grants { conn, name } => print(&conn.client()?.grants(&name).await?),
        KeyCommand::Rotate { conn, name } => print(&conn.client()?.rotate_key(&name).await?),
        KeyCommand::RotationPolicy {
            conn,
            name,
            rotate_after,
            expiry,
        } => {
            use conclave_kms::api::{
                KeyRotationPolicy, KeyRotationPolicyAttributes, LifetimeAction,
                LifetimeActionTrigger, LifetimeActionType,
            };
            let doc = KeyRotationPolicy {
                id: None,
                lifetime_actions: Some(vec![LifetimeAction {
                    trigger: LifetimeActionTrigger {
                        time_after_create: Some(rotate_after),
                        time_before_expiry: None,
                    },
                    action: LifetimeActionType {
                        kind: "Rotate".into(),
                    },
                }]),
                attributes: KeyRotationPolicyAttributes {
                    expiry_time: expiry,
                    ..Default::default()
                },
            };
            print(&conn.client()?.put_rotation_policy(&name, &doc).await?)
        }
        KeyCommand::Budget {
            conn,
            name,
            epsilon,
        } => {
            let client = conn.client()?;
            let budget = match epsilon {
                Some(total) => client.put_privacy_budget(&name, total).await?,
                None => client.get_privacy_budget(&name).await?,
            };
            print(&budget)
        }
        KeyCommand::Backup { conn, name, out } => {
            let blob = conn.client()?.backup_key(&name).await?;
            conclave_net::write_file(&out, blob.as_bytes(), 0o600)?;
            eprintln!("backup of {name} written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Restore { conn, backup } => {
            let blob = std::fs::read_to_string(&backup)
                .with_context(|| format!("reading {}", backup.display()))?;
            print(&conn.client()?.restore_key(&blob).await?)
        }
        KeyCommand::Grant {
            conn,
            name,
            to,
            permissions,
        } => {
            let perms = permissions
                .iter()
                .map(|p| match p.as_str() {
                    "get" => Ok(Permission::Get),
                    "release" => Ok(Permission::Release),
                    other => bail!("unknown permission {other:?}: use get and/or release"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            print(&conn.client()?.grant(&name, &to, &perms).await?)
        }
        KeyCommand::Revoke { conn, name, from } => {
            conn.client()?.revoke(&name, &from).await?;
            eprintln!("revoked {from}'s access to {name}");
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Policy {
            conn,
            name,
            policy,
            immutable,
        } => {
            let client = conn.client()?;
            let key = client.get_key(&name).await?;
            let version = key.key.version().to_string();
            let req = UpdateKeyRequest {
                release_policy: Some(policy_body(&policy, immutable)?),
                ..Default::default()
            };
            print(&client.update_key(&name, &version, &req).await?)
        }
    }
}

async fn open_store(
    state_dir: &std::path::Path,
    master_key_file: Option<PathBuf>,
    postgres: Option<String>,
) -> anyhow::Result<Store> {
    let master = MasterKey::load(
        &master_key_file.unwrap_or_else(|| state_dir.join("master.key")),
        false,
    )?;
    if let Some(url) = postgres {
        let pg = conclave_kms::store::postgres::PgBackend::connect(&url)
            .await
            .context("opening the vault's PostgreSQL store")?;
        let audit_key = master.derive("conclave audit chain v1");
        return Store::on_postgres(pg, audit_key).context("reading the vault's PostgreSQL store");
    }
    let db = state_dir.join("vault.redb");
    if !db.exists() {
        bail!(
            "{} does not exist: is {} a vault state directory?",
            db.display(),
            state_dir.display()
        );
    }
    Store::open(&db, master.derive("conclave audit chain v1")).with_context(|| {
        "cannot open the vault store (is the vault still running? stop it first)".to_string()
    })
}

/// The size line of a checkpoint note (its second line), unverified: only to ask the vault for
/// a consistency proof, which `audit verify` then checks against the signed checkpoint.
fn tlog_checkpoint_size(note: &str) -> Option<u64> {
    note.lines().nth(1)?.parse().ok()
}

pub async fn run_audit(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify {
            checkpoint: Some(bundle),
            vault_key: Some(key),
            earlier,
            ..
        } => {
            use conclave_kms::transparency::{AuditBundle, VerifierKey, verify_bundle};
            let read_bundle = |path: &PathBuf| -> anyhow::Result<AuditBundle> {
                let text =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not an audit bundle", path.display()))
            };
            let key = match key.strip_prefix('@') {
                Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?,
                None => key,
            };
            let key = VerifierKey::parse(&key)?;
            let b = read_bundle(&bundle)?;
            let earlier = earlier.as_ref().map(read_bundle).transpose()?;
            let verified = verify_bundle(&b, &key, earlier.as_ref().map(|e| e.checkpoint.as_str()))
                .with_context(|| format!("{} does not verify", bundle.display()))?;
            for e in &verified.entries {
                println!("{}", serde_json::to_string(e)?);
            }
            eprintln!(
                "audit bundle verified: checkpoint of {} signed by {}, {} entries included{}",
                verified.size,
                key.name,
                verified.entries.len(),
                match &earlier {
                    Some(_) => ", and the log extends the earlier checkpoint",
                    None => "",
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            checkpoint: Some(_),
            ..
        } => anyhow::bail!("--checkpoint needs --vault-key"),
        AuditCommand::Proofs { conn, since, out } => {
            let since = match since {
                Some(path) => {
                    let text = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let b: conclave_kms::transparency::AuditBundle = serde_json::from_slice(&text)
                        .with_context(|| format!("{} is not an audit bundle", path.display()))?;
                    let cp = tlog_checkpoint_size(&b.checkpoint).with_context(|| {
                        format!("{}: its checkpoint is malformed", path.display())
                    })?;
                    Some(cp)
                }
                None => None,
            };
            let bundle = conn.client()?.audit_proofs(0, since).await?;
            std::fs::write(&out, serde_json::to_vec_pretty(&bundle)?)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote {} entries with proofs against the checkpoint of size {} to {}",
                bundle.entries.len(),
                tlog_checkpoint_size(&bundle.checkpoint).unwrap_or_default(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Key { conn } => {
            println!("{}", conn.client()?.audit_verifier_key().await?);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            state_dir,
            master_key_file,
            postgres,
            ..
        } => {
            let state_dir = state_dir.context("give --state-dir, or --checkpoint")?;
            let store = open_store(&state_dir, master_key_file, postgres).await?;
            let entries = store.audit_entries(0, usize::MAX)?;
            let head = store.audit_head()?;
            conclave_kms::audit::verify(
                store.audit_key(),
                &entries,
                head.as_ref().map(|(s, m)| (*s, m.as_str())),
            )
            .context("the audit log does not verify")?;
            match head {
                Some((seq, mac)) => eprintln!(
                    "audit log verified: {} entries, head {seq} {mac}",
                    entries.len()
                ),
                None => eprintln!("audit log verified: empty"),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Show {
            state_dir,
            master_key_file,
            postgres,
        } => {
            let store = open_store(&state_dir, master_key_file, postgres).await?;
            for e in store.audit_entries(0, usize::MAX)? {
                println!("{}", serde_json::to_string(&e)?);
            }
            if let Some((seq, mac)) = store.audit_head()? {
                eprintln!("head: {seq} {mac} (keep a copy elsewhere to detect truncation)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
