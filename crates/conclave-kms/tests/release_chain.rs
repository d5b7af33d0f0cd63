//! A release's signing chain is validated as an RFC 5280 path to the vault's CA (rustls-webpki):
//! issuer signatures, validity, CA constraints, and the leaf's extended key usage.

use std::path::Path;
use std::time::Duration;

use conclave_kms::client::{ClientError, verify_signing_chain};
use conclave_net::{Issued, LocalCa};
use rustls_pki_types::UnixTime;

fn chain(issued: &Issued) -> Vec<Vec<u8>> {
    let pem = std::fs::read(&issued.chain_pem).unwrap();
    conclave_pki::Cert::parse_pem_bundle("chain", &pem)
        .unwrap()
        .into_iter()
        .map(|c| c.der)
        .collect()
}

fn refused(outcome: Result<(), ClientError>, needle: &str) {
    let err = outcome.unwrap_err().to_string();
    assert!(err.contains(needle), "{err:?} does not say {needle:?}");
}

fn ca(dir: &Path, name: &str) -> LocalCa {
    LocalCa::load_or_create(&dir.join(name)).unwrap()
}

#[test]
fn a_signing_chain_validates_only_to_its_own_ca_within_its_validity_and_for_signing() {
    let dir = tempfile::tempdir().unwrap();
    let vault_ca = ca(dir.path(), "vault-ca");
    let signing = vault_ca
        .signing_cert(&dir.path().join("certs"), "release-signing")
        .unwrap();
    let now = UnixTime::now();
    verify_signing_chain(&chain(&signing), vault_ca.cert(), now).unwrap();
    // The leaf alone (no CA in x5c) also validates: the CA is the trust anchor.
    verify_signing_chain(&chain(&signing)[..1], vault_ca.cert(), now).unwrap();

    // Issued by another CA.
    let other_ca = ca(dir.path(), "other-ca");
    let foreign = other_ca
        .signing_cert(&dir.path().join("other"), "release-signing")
        .unwrap();
    refused(
        verify_signing_chain(&chain(&foreign), vault_ca.cert(), now),
        "does not chain to the vault's CA",
    );

    // A TLS server certificate of the same CA (extended key usage serverAuth only).
    let server = vault_ca
        .server_cert(&dir.path().join("certs"), "server", &["127.0.0.1"])
        .unwrap();
    refused(
        verify_signing_chain(&chain(&server), vault_ca.cert(), now),
        "as a signing certificate",
    );

    // Past the leaf's validity (issued for two years).
    let later =
        UnixTime::since_unix_epoch(Duration::from_secs(now.as_secs() + 3 * 365 * 24 * 3600));
    refused(
        verify_signing_chain(&chain(&signing), vault_ca.cert(), later),
        "does not chain",
    );
    refused(verify_signing_chain(&[], vault_ca.cert(), now), "empty x5c");
}
