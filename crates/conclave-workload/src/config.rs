//! A party workload's launch config (`party.toml`). On the simulated platform the config is
//! measured with the binary, so everything that decides what the workload does with released
//! keys lives here; secrets (vault bearer tokens) are only named by path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyConfig {
    /// Short id of the party (`woodgrove`); its own dataset has this `company`.
    pub party: String,
    /// Name shown in the UI (`Woodgrove Bank`).
    pub display_name: String,
    /// Where the UI and API listen (HTTPS, with a key made in the TEE).
    pub listen: SocketAddr,
    /// Extra DNS names (or addresses) the TLS certificate names, besides `localhost` and the
    /// listen address: the names clients reach the workload by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_names: Vec<String>,
    /// Base URL of the attestation service.
    pub attestation_url: String,
    /// CA certificate (PEM) trusted for the attestation service's and the vaults' TLS, and as
    /// the issuer of the vaults' release-signing certificates. Give this or `ca_pem`.
    #[serde(default, skip_serializing_if = "path_is_empty")]
    pub ca_file: PathBuf,
    /// The same CA certificate, inline (PEM text): where a platform's security policy pins the
    /// config but not mounted files (confidential containers), this puts the CA the workload
    /// trusts under the policy too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Smallest group released by the partner analysis.
    #[serde(default = "default_k")]
    pub k: u64,
    /// Year ages are counted from (`birth_year = reference_year - age`); the current year when
    /// absent.
    #[serde(default)]
    pub reference_year: Option<i32>,
    /// Whether this workload runs the partner analysis over every dataset it lists.
    #[serde(default)]
    pub analysis: bool,
    /// Where the analysis contracts this workload may run are (`*.toml`, with their approvals
    /// `<stem>.*.jws`); none when absent. The files are not measured: a run attests the digest
    /// of the contract it runs, and owners' vaults decide on that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contracts_dir: Option<PathBuf>,
    /// Datasets this workload knows of: its own, and partners' it may (or may not) be granted.
    pub datasets: Vec<DatasetConfig>,
    /// Sign-in: the party's OpenID Connect provider. Without it the workload serves nothing but
    /// health, readiness and its attestation evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::auth::AuthConfig>,
}

fn default_k() -> u64 {
    5
}

fn path_is_empty(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// One company's encrypted dataset and the vault key that opens it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Short id of the owning company (`contoso`).
    pub company: String,
    pub display_name: String,
    /// Where the ciphertext lives (path, `file://`, `az://`, `s3://`).
    pub url: String,
    /// The vault key: `https://<vault>/keys/<name>`.
    pub key: String,
    /// File holding this workload's bearer token for that vault.
    pub token_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the party config {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("the party config {path} is invalid: {detail}")]
    Invalid { path: String, detail: String },
}

impl PartyConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::parse(&text).map_err(|detail| ConfigError::Invalid {
            path: path.display().to_string(),
            detail,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: PartyConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a party config serialises")
    }

    /// The trusted CA certificate's PEM: `ca_pem`, or the contents of `ca_file`; and where it
    /// came from, for errors.
    pub fn ca_pem(&self) -> Result<(Vec<u8>, String), String> {
        match &self.ca_pem {
            Some(pem) => Ok((pem.as_bytes().to_vec(), "ca_pem".into())),
            None => std::fs::read(&self.ca_file)
                .map(|b| (b, self.ca_file.display().to_string()))
                .map_err(|e| e.to_string()),
        }
    }

    fn check(&self) -> Result<(), String> {
        match (path_is_empty(&self.ca_file), &self.ca_pem) {
            (true, None) => {
                return Err(
                    "give the trusted CA certificate: ca_file (a path) or ca_pem (PEM text)".into(),
                );
            }
            (false, Some(_)) => {
                return Err("give ca_file or ca_pem, not both".into());
            }
            _ => {}
        }
        if !valid_id(&self.party) {
            return Err(format!(
                "party {:?}: use lower-case letters, digits and '-'",
                self.party
            ));
        }
        if self.k == 0 {
            return Err("k must be at least 1".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in &self.datasets {
            if !valid_id(&d.company) {
                return Err(format!(
                    "dataset company {:?}: use lower-case letters, digits and '-'",
                    d.company
                ));
            }
            if !seen.insert(&d.company) {
                return Err(format!("dataset {:?} is listed twice", d.company));
            }
            KeyRef::parse(&d.key).map_err(|e| format!("dataset {:?}: {e}", d.company))?;
        }
        if let Some(auth) = &self.auth {
            if !auth.issuer.starts_with("https://") {
                return Err(format!(
                    "auth.issuer {:?}: the identity provider must be reached over https://",
                    auth.issuer
                ));
            }
            if auth.client_id.is_empty() || auth.audience.is_empty() {
                return Err("auth.client_id and auth.audience must not be empty".into());
            }
            if auth.audience == auth.client_id {
                return Err(format!(
                    "auth.audience must differ from auth.client_id ({:?}): ID tokens are for the client id, and one must never pass as an access token",
                    auth.client_id
                ));
            }
        }
        Ok(())
    }

    /// The names the workload's TLS certificate carries: `localhost`, the listen address when
    /// it is a specific one, and `tls_names`.
    pub fn certificate_names(&self) -> Vec<String> {
        let mut names = vec!["localhost".to_string()];
        if !self.listen.ip().is_unspecified() {
            names.push(self.listen.ip().to_string());
        }
        for n in &self.tls_names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }

    /// The party's own dataset, if it lists one.
    pub fn own(&self) -> Option<&DatasetConfig> {
        self.datasets.iter().find(|d| d.company == self.party)
    }

    pub fn dataset(&self, company: &str) -> Option<&DatasetConfig> {
        self.datasets.iter().find(|d| d.company == company)
    }
}

pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A vault key URL split into the vault's base URL and the key's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub vault: String,
    pub name: String,
}

impl KeyRef {
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = || format!("key {url:?} is not of the form https://<vault>/keys/<name>");
        let rest = url.strip_prefix("https://").ok_or_else(bad)?;
        let (host, path) = rest.split_once('/').ok_or_else(bad)?;
        let name = path.strip_prefix("keys/").ok_or_else(bad)?;
        if host.is_empty() || !conclave_protocol::vault::valid_name(name) {
            return Err(bad());
        }
        Ok(KeyRef {
            vault: format!("https://{host}"),
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
party = "woodgrove"
display_name = "Woodgrove Bank"
listen = "127.0.0.1:8503"
attestation_url = "https://127.0.0.1:8400"
ca_file = "/tmp/ca.pem"
analysis = true

[[datasets]]
company = "woodgrove"
display_name = "Woodgrove Bank"
url = "/tmp/woodgrove.parquet"
key = "https://127.0.0.1:8443/keys/woodgrove-data"
token_file = "/tmp/woodgrove.token"
"#;

    #[test]
    fn parses_and_round_trips() {
        let c = PartyConfig::parse(EXAMPLE).unwrap();
        assert_eq!(c.k, 5);
        assert_eq!(c.own().unwrap().company, "woodgrove");
        assert_eq!(PartyConfig::parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        let e = PartyConfig::parse(&format!("{EXAMPLE}\nexport_plaintext = true\n")).unwrap_err();
        assert!(e.contains("export_plaintext"), "{e}");
        let e = PartyConfig::parse(&EXAMPLE.replace("keys/woodgrove-data", "woodgrove-data"))
            .unwrap_err();
        assert!(e.contains("https://<vault>/keys/<name>"), "{e}");
        let e = PartyConfig::parse(&EXAMPLE.replace("analysis = true", "k = 0")).unwrap_err();
        assert!(e.contains("k must be"), "{e}");
    }

    #[test]
    fn the_trusted_ca_is_a_file_or_inline_pem_not_both_nor_neither() {
        let pem = "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n";
        let inline = EXAMPLE.replace("ca_file = \"/tmp/ca.pem\"", &format!("ca_pem = \"{pem}\""));
        let c = PartyConfig::parse(&inline).unwrap();
        assert_eq!(c.ca_pem().unwrap().1, "ca_pem");
        assert!(
            c.ca_pem()
                .unwrap()
                .0
                .starts_with(b"-----BEGIN CERTIFICATE-----\n")
        );
        assert_eq!(PartyConfig::parse(&c.to_toml()).unwrap(), c);
        let neither = EXAMPLE.replace("ca_file = \"/tmp/ca.pem\"\n", "");
        assert!(
            PartyConfig::parse(&neither)
                .unwrap_err()
                .contains("ca_file (a path) or ca_pem")
        );
        let both = format!("ca_pem = \"{pem}\"\n{EXAMPLE}");
        assert!(PartyConfig::parse(&both).unwrap_err().contains("not both"));
    }

    #[test]
    fn key_refs() {
        let k = KeyRef::parse("https://v.example:8443/keys/contoso-data").unwrap();
        assert_eq!(k.vault, "https://v.example:8443");
        assert_eq!(k.name, "contoso-data");
        assert!(KeyRef::parse("https://v/keys/../etc").is_err());
        assert!(KeyRef::parse("http://v/keys/a").is_err());
    }
}
