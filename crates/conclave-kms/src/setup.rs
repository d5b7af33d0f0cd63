//! Opening a vault from its state directory: store, master key, local CA certificates, signing
//! identity, the first admin principal. `conclave kms serve`, `conclave demo` and the tests all
//! go through [`open`].
//!
//! State directory layout:
//! - `vault.redb`: keys (sealed), grants, principals, audit log (unless the store is in
//!   PostgreSQL);
//! - `master.key`: the master key (mode 0600), unless `CONCLAVE_VAULT_MASTER_KEY` is set;
//! - `admin.token`: the first admin's bearer token (mode 0600), written once;
//! - `tls/`: the vault's server and signing certificates from the local CA.

use std::path::PathBuf;
use std::sync::Arc;

use aws_lc_rs::signature::RsaKeyPair;
use conclave_net::LocalCa;
use conclave_protocol::TokenVerifier;

use crate::audit::AuditEvent;
use crate::crypto::MasterKey;
use crate::service::{Authority, FirstAdmin, SigningIdentity, Vault, VaultConfig};
use crate::store::Store;
use crate::store::postgres::PgBackend;

pub struct VaultOptions {
    pub state_dir: PathBuf,
    /// Public URL, e.g. `https://127.0.0.1:8443`.
    pub vault_url: String,
    /// Host names / IPs the TLS certificate must cover.
    pub tls_names: Vec<String>,
    /// Issuer URLs of trusted attestation services.
    pub authorities: Vec<String>,
    /// Client used to fetch the authorities' keys (trusting the local CA when TLS is local).
    pub http: reqwest::Client,
    pub hardware_only: bool,
    /// Master key file (default `<state>/master.key`, created if missing).
    pub master_key_file: Option<PathBuf>,
    /// How long deleted keys stay recoverable, and whether they may be purged before.
    pub deletion: crate::service::DeletionPolicy,
    /// Keep the store in PostgreSQL (connected with [`PgBackend::connect`]) instead of
    /// `<state>/vault.redb`: several vaults with the same master key then serve one vault.
    pub postgres: Option<PgBackend>,
    /// The SHA-256 (hex) of the first admin's token, made and kept by the operator (a
    /// Kubernetes Secret, a key vault): the vault then writes no token file. Used only when the
    /// vault is created.
    pub admin_token_sha256: Option<String>,
}

pub struct OpenedVault {
    pub vault: Arc<Vault>,
    pub tls: Arc<rustls::ServerConfig>,
    /// Where the first admin's token is kept: `None` when the operator gave its hash.
    pub admin_token_path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Net(#[from] conclave_net::NetError),
    #[error(transparent)]
    Pki(#[from] conclave_pki::PkiError),
    #[error("{0}")]
    Other(String),
}

/// Opens (creating on first use) the vault in `opts.state_dir`, with certificates from `ca`.
/// Where the vault's TLS and release-signing certificates come from.
pub enum Certificates<'a> {
    /// Issued (once) by a local CA: a server certificate and a separate signing certificate.
    LocalCa(&'a LocalCa),
    /// Operator-provided certificates: a TLS chain (PEM, leaf first) and its key, and a separate
    /// release-signing chain and RSA PKCS#8 key (the TLS key never signs release responses: a
    /// TLS key lives in more places, such as load balancers, than a signing key should).
    Files {
        chain_pem: PathBuf,
        key: PathBuf,
        signing_chain_pem: PathBuf,
        signing_key: PathBuf,
    },
}

pub fn open(opts: VaultOptions, certs: Certificates<'_>) -> Result<OpenedVault, SetupError> {
    let dir = &opts.state_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| SetupError::Other(format!("{}: {e}", dir.display())))?;
    let master = MasterKey::load(
        &opts
            .master_key_file
            .clone()
            .unwrap_or_else(|| dir.join("master.key")),
        true,
    )?;
    let audit_key = master.derive("conclave audit chain v1");
    let store = match opts.postgres {
        Some(pg) => Store::on_postgres(pg, audit_key)?,
        None => Store::open(&dir.join("vault.redb"), audit_key)?,
    };

    let (tls, signing_chain_pem, signing_key) = match certs {
        Certificates::LocalCa(ca) => {
            let tls_dir = dir.join("tls");
            let names: Vec<&str> = opts.tls_names.iter().map(String::as_str).collect();
            let server = ca.server_cert(&tls_dir, "server", &names)?;
            let tls = conclave_net::server_config(&server.chain_pem, &server.key_pk8)?;
            let signing = ca.signing_cert(&tls_dir, "release-signing")?;
            (tls, signing.chain_pem, signing.key_pk8)
        }
        Certificates::Files {
            chain_pem,
            key,
            signing_chain_pem,
            signing_key,
        } => {
            // Compared by public key, so another encoding of the same key is caught too.
            let tls_public = RsaKeyPair::from_pkcs8(&conclave_net::read_pkcs8(&key)?)
                .ok()
                .map(|k| conclave_protocol::jws::rsa_public_components(&k));
            let signing_public = RsaKeyPair::from_pkcs8(&conclave_net::read_pkcs8(&signing_key)?)
                .ok()
                .map(|k| conclave_protocol::jws::rsa_public_components(&k));
            if tls_public.is_some() && tls_public == signing_public {
                return Err(SetupError::Other(format!(
                    "{} is the TLS key ({}): release responses need a signing key of their own (issue one from your CA for signing, not for TLS)",
                    signing_key.display(),
                    key.display()
                )));
            }
            (
                conclave_net::server_config(&chain_pem, &key)?,
                signing_chain_pem,
                signing_key,
            )
        }
    };
    let key = RsaKeyPair::from_pkcs8(&conclave_net::read_pkcs8(&signing_key)?).map_err(|e| {
        SetupError::Other(format!(
            "{}: the signing key must be an RSA PKCS#8 key: {e}",
            signing_key.display()
        ))
    })?;
    let chain_pem = std::fs::read(&signing_chain_pem)
        .map_err(|e| SetupError::Other(format!("{}: {e}", signing_chain_pem.display())))?;
    let certs = conclave_pki::Cert::parse_pem_bundle("release signing chain", &chain_pem)
        .map_err(|e| SetupError::Other(e.to_string()))?;
    // The chain's leaf must be the signing key's certificate, or every client refuses releases.
    let leaf_key = certs
        .first()
        .and_then(|leaf| conclave_pki::x509::parse_rsa_spki(&leaf.spki_der()).ok());
    if leaf_key != Some(conclave_protocol::jws::rsa_public_components(&key)) {
        return Err(SetupError::Other(format!(
            "the first certificate of {} is not the certificate of the signing key {}",
            signing_chain_pem.display(),
            signing_key.display()
        )));
    }
    let chain = certs.into_iter().map(|c| c.der).collect();

    let authorities = opts
        .authorities
        .iter()
        .map(|issuer| {
            let issuer = issuer.trim_end_matches('/').to_string();
            Authority {
                verifier: TokenVerifier::for_issuer(&issuer, opts.http.clone()),
                issuer,
            }
        })
        .collect();
    let vault = Vault::new(
        VaultConfig {
            vault_url: opts.vault_url.clone(),
            authorities,
            hardware_only: opts.hardware_only,
            signing: SigningIdentity { key, chain },
            deletion: opts.deletion,
        },
        store,
        master,
    );

    let token_file = dir.join("admin.token");
    let admin_token_path = match vault
        .add_first_admin(opts.admin_token_sha256.as_deref())
        .map_err(|e| SetupError::Other(e.message))?
    {
        FirstAdmin::Made { token } => {
            if let Some(token) = token {
                conclave_pki::write_secret(&token_file, token.as_bytes())?;
            }
            vault
                .store()
                .audit(AuditEvent::new("setup", "vault-created", None, "ok"))?;
            opts.admin_token_sha256.is_none().then_some(token_file)
        }
        // An existing vault keeps its admin; a token file is there if it made the token.
        FirstAdmin::Exists => {
            if let Some(hash) = &opts.admin_token_sha256
                && vault.store().principal_by_token_hash(hash)?.is_none()
            {
                tracing::warn!(
                    "the admin token hash given is no principal's: it is used only when a vault is created, and this vault exists (add an admin with an existing admin's token: conclave kms principal <name> --admin)"
                );
            }
            token_file.exists().then_some(token_file)
        }
    };
    Ok(OpenedVault {
        vault,
        tls,
        admin_token_path,
    })
}
