//! `conclave idp serve`: the development OpenID Connect provider (for demos and tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum IdpCommand {
    /// Run the development OpenID Connect provider: one issuer per realm of the config
    /// (`{url}/{realm}`), users and clients from the config. For demos and tests only: in a
    /// real deployment each party's workload points at its organisation's own provider.
    Serve {
        /// The provider's config (TOML: realms with their clients and users).
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8410")]
        listen: SocketAddr,
        /// Base URL put in issuer identifiers (default: https://<listen>).
        #[arg(long)]
        url: Option<String>,
        /// Certificate chain (PEM) to serve HTTPS with.
        #[arg(long, requires = "tls_key", required_unless_present = "ca_dir")]
        tls_cert: Option<PathBuf>,
        /// Private key (PKCS#8, DER or PEM) for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve HTTPS with a certificate from this local CA directory (created if missing).
        #[arg(long, conflicts_with = "tls_cert")]
        ca_dir: Option<PathBuf>,
    },
}

pub async fn run(cmd: IdpCommand) -> anyhow::Result<ExitCode> {
    let IdpCommand::Serve {
        config,
        listen,
        url,
        tls_cert,
        tls_key,
        ca_dir,
    } = cmd;
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let parsed = conclave_idp::Config::parse(&text)?;
    let tls = match (tls_cert, tls_key, ca_dir) {
        (Some(cert), Some(key), _) => conclave_net::server_config(&cert, &key)?,
        (_, _, Some(dir)) => {
            let ca = conclave_net::LocalCa::load_or_create(&dir)?;
            let ip = listen.ip().to_string();
            let issued = ca.server_cert(&dir.join("tls"), "idp", &[&ip, "localhost"])?;
            conclave_net::server_config(&issued.chain_pem, &issued.key_pk8)?
        }
        _ => anyhow::bail!("give --tls-cert and --tls-key, or --ca-dir"),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let base = url.unwrap_or_else(|| format!("https://{listen}"));
    let realms: Vec<String> = parsed.realms.iter().map(|r| r.name.clone()).collect();
    let provider = conclave_idp::Provider::new(&base, parsed)?;
    for r in &realms {
        tracing::info!(issuer = %provider.issuer(r), "development identity provider: issuer");
    }
    conclave_net::serve(
        listener,
        conclave_idp::router(provider),
        Some(tls),
        crate::shutdown_signal(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
