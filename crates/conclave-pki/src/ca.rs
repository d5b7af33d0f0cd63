//! A local certificate authority for deployments on one machine (`conclave demo`, tests, the
//! bench): an RSA CA whose certificate clients trust, issuing TLS server certificates
//! (RFC 5280 profile: SAN, SKI/AKI, serverAuth) and signing certificates to the services.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::RsaKeyPair;
use der::asn1::Ia5String;
use der::oid::db::rfc5280::ID_KP_SERVER_AUTH;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};

use crate::files::{file_err, write_file};
use crate::x509::{CertSigningKey, CertTemplate, extension, issue, rsa_spki_der, subject_key_id};
use crate::{Cert, PkiError};

/// A certificate with its private key, as files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Leaf certificate followed by the CA certificate, PEM.
    pub chain_pem: PathBuf,
    /// PKCS#8 private key, DER, mode 0600.
    pub key_pk8: PathBuf,
}

/// A local certificate authority for deployments on one machine (`conclave demo`, tests):
/// clients trust its certificate (`ca.pem`) to reach the services over TLS.
pub struct LocalCa {
    dir: PathBuf,
    cert: Cert,
    key_pk8: Vec<u8>,
}

impl LocalCa {
    /// Loads the CA in `dir`, or creates one.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.pk8");
        if cert_path.exists() && key_path.exists() {
            let cert = Cert::parse(
                "local CA",
                &std::fs::read(&cert_path).map_err(|e| file_err(&cert_path, e))?,
            )
            .map_err(|e| PkiError::Cert(e.to_string()))?;
            let key_pk8 = std::fs::read(&key_path).map_err(|e| file_err(&key_path, e))?;
            return Ok(LocalCa {
                dir: dir.to_path_buf(),
                cert,
                key_pk8,
            });
        }
        let key =
            RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| PkiError::Cert(e.to_string()))?;
        let key_pk8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
            .map_err(|e| PkiError::Cert(e.to_string()))?
            .as_ref()
            .to_vec();
        let spki = rsa_spki_der(&key);
        let subject = "CN=Conclave local CA,O=Conclave (local deployment)";
        let cert = issue(
            CertTemplate {
                subject: subject.into(),
                serial: 1,
                validity: Duration::from_secs(10 * 365 * 24 * 3600),
                is_ca: true,
                extensions: vec![
                    extension(
                        subject,
                        &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
                    )?,
                    extension(subject, &subject_key_id(&spki)?)?,
                ],
            },
            &spki,
            None,
            &CertSigningKey::RsaPkcs1Sha256(key),
        )
        .map_err(|e| PkiError::Cert(e.to_string()))?;
        write_file(&key_path, &key_pk8, 0o600)?;
        write_file(&cert_path, cert.to_pem().as_bytes(), 0o644)?;
        Ok(LocalCa {
            dir: dir.to_path_buf(),
            cert,
            key_pk8,
        })
    }

    /// Path of the CA certificate that clients trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// Issues (or reuses, if still valid for the same names) a server certificate for `names`
    /// (DNS names or IP addresses), stored as `<stem>.pem` and `<stem>.pk8` in `dir`.
    pub fn server_cert(&self, dir: &Path, stem: &str, names: &[&str]) -> Result<Issued, PkiError> {
        self.issue_leaf(dir, stem, names, true)
    }

    /// Issues a signing certificate (no server use), e.g. for a vault's release JWS.
    pub fn signing_cert(&self, dir: &Path, stem: &str) -> Result<Issued, PkiError> {
        self.issue_leaf(dir, stem, &[], false)
    }

    fn issue_leaf(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        server: bool,
    ) -> Result<Issued, PkiError> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let issued = Issued {
            chain_pem: dir.join(format!("{stem}.pem")),
            key_pk8: dir.join(format!("{stem}.pk8")),
        };
        let names_path = dir.join(format!("{stem}.names"));
        let wanted = names.join(",");
        if issued.chain_pem.exists()
            && issued.key_pk8.exists()
            && std::fs::read_to_string(&names_path).ok().as_deref() == Some(wanted.as_str())
        {
            return Ok(issued);
        }
        let key =
            RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| PkiError::Cert(e.to_string()))?;
        let key_pk8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
            .map_err(|e| PkiError::Cert(e.to_string()))?;
        let spki = rsa_spki_der(&key);
        let subject = format!(
            "CN={},O=Conclave (local deployment)",
            names.first().copied().unwrap_or(stem)
        );
        let mut extensions = vec![
            extension(&subject, &subject_key_id(&spki)?)?,
            extension(
                &subject,
                &AuthorityKeyIdentifier {
                    key_identifier: Some(subject_key_id(&self.cert.spki_der())?.0),
                    authority_cert_issuer: None,
                    authority_cert_serial_number: None,
                },
            )?,
        ];
        if server {
            let mut sans = Vec::new();
            for n in names {
                sans.push(match n.parse::<IpAddr>() {
                    Ok(ip) => GeneralName::from(ip),
                    Err(_) => GeneralName::DnsName(
                        Ia5String::new(n).map_err(|e| PkiError::Cert(e.to_string()))?,
                    ),
                });
            }
            extensions.push(extension(&subject, &SubjectAltName(sans))?);
            extensions.push(extension(
                &subject,
                &ExtendedKeyUsage(vec![ID_KP_SERVER_AUTH]),
            )?);
            extensions.push(extension(
                &subject,
                &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment),
            )?);
        } else {
            extensions.push(extension(
                &subject,
                &KeyUsage(KeyUsages::DigitalSignature.into()),
            )?);
        }
        let ca_key =
            RsaKeyPair::from_pkcs8(&self.key_pk8).map_err(|e| PkiError::Cert(e.to_string()))?;
        let leaf = issue(
            CertTemplate {
                subject,
                serial: u32::from_be_bytes(
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki).as_ref()[..4]
                        .try_into()
                        .expect("4 bytes"),
                ) & 0x7FFF_FFFF,
                validity: Duration::from_secs(2 * 365 * 24 * 3600),
                is_ca: false,
                extensions,
            },
            &spki,
            Some(&self.cert),
            &CertSigningKey::RsaPkcs1Sha256(ca_key),
        )
        .map_err(|e| PkiError::Cert(e.to_string()))?;
        write_file(&issued.key_pk8, key_pk8.as_ref(), 0o600)?;
        write_file(
            &issued.chain_pem,
            format!("{}{}", leaf.to_pem(), self.cert.to_pem()).as_bytes(),
            0o644,
        )?;
        write_file(&names_path, wanted.as_bytes(), 0o644)?;
        Ok(issued)
    }
}
