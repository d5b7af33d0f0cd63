//! The offline KDS cache: VCEKs found by chip and TCB, the paths and URLs KDS uses, and CRLs
//! checked against the trusted ARK.

use std::time::{Duration, SystemTime};

use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use conclave_snp::kds::{self, KdsCache};
use conclave_snp::x509::{CertSigningKey, CertTemplate, issue, rsa_spki_der};
use conclave_snp::{
    AttestationReport, Cert, CertChain, Product, RootKind, TrustedRoot, TrustedRoots, VerifyError,
    verify_report,
};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/milan-virtee-sev");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap()
}

fn in_validity() -> Option<SystemTime> {
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)) // 2026-01-01
}

#[test]
fn vcek_urls_and_paths_follow_kds() {
    let report = AttestationReport::parse(&read("report.bin")).unwrap();
    let url = kds::vcek_url(kds::AMD_KDS_URL, Product::Milan, &report);
    assert!(
        url.starts_with("https://kdsintf.amd.com/vcek/v1/Milan/"),
        "{url}"
    );
    assert!(
        url.ends_with(&format!(
            "{}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115",
            hex::encode(report.chip_id)
        )),
        "{url}"
    );
    // Turin: an 8-byte hwid and fmcSPL first.
    let turin = kds::vcek_url("http://mirror/", Product::Turin, &report);
    assert!(turin.starts_with("http://mirror/vcek/v1/Turin/"), "{turin}");
    assert_eq!(
        turin
            .split('/')
            .nth(6)
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .len(),
        16
    );
    assert!(turin.contains("?fmcSPL="), "{turin}");
    assert_eq!(
        kds::chain_url(
            kds::AMD_KDS_URL,
            conclave_snp::EndorsementKey::Vlek,
            Product::Genoa
        ),
        "https://kdsintf.amd.com/vlek/v1/Genoa/cert_chain"
    );
}

#[test]
fn evidence_without_certificates_verifies_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = KdsCache::new(tmp.path());
    let raw = read("report.bin");
    let report = AttestationReport::parse(&raw).unwrap();

    // Empty cache: the error names the file and the KDS URL that would supply it.
    let err = cache
        .complete_chain(&raw, None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no VCEK for Milan chip"), "{err}");
    assert!(
        err.contains(&kds::vcek_url(kds::AMD_KDS_URL, Product::Milan, &report)),
        "{err}"
    );

    let path = cache.vcek_path(Product::Milan, &report);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, read("vcek.der")).unwrap();
    let chain = cache.complete_chain(&raw, None, None).unwrap();
    assert!(chain.ark.is_none() && chain.ask.is_none());
    verify_report(&raw, &chain, &TrustedRoots::amd(), in_validity()).unwrap();

    // With KDS's cert_chain cached too, the chain is complete.
    let chain_path = cache.chain_path(conclave_snp::EndorsementKey::Vcek, Product::Milan);
    std::fs::write(&chain_path, [read("ask.pem"), read("ark.pem")].concat()).unwrap();
    let chain = cache
        .complete_chain(&raw, None, Some(Product::Milan))
        .unwrap();
    assert!(chain.ark.is_some() && chain.ask.is_some());
    verify_report(&raw, &chain, &TrustedRoots::amd(), in_validity()).unwrap();
    assert!(matches!(
        cache
            .check_revocation(&chain, &TrustedRoots::amd(), in_validity())
            .unwrap(),
        kds::Revocation::NotChecked(_)
    ));
}

/// A root of our own (AMD's ARK key is AMD's): ARK, ASK, a P-384 leaf the ASK signed, and the
/// ARK's signing key.
fn own_root() -> (TrustedRoot, Cert, CertSigningKey) {
    let ark_key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let ask_key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let leaf_key = aws_lc_rs::signature::EcdsaKeyPair::generate(
        &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
    )
    .unwrap();
    let ark_spki = rsa_spki_der(&ark_key);
    let ask_spki = rsa_spki_der(&ask_key);
    let leaf_spki = conclave_snp::x509::ec_spki_der(&leaf_key);
    let ark_signer = CertSigningKey::RsaPssSha384(ark_key);
    let ask_signer = CertSigningKey::RsaPssSha384(ask_key);
    let template = |subject: &str, serial, is_ca| CertTemplate {
        subject: subject.into(),
        serial,
        validity: Duration::from_secs(86_400),
        is_ca,
        extensions: vec![],
    };
    let ark = issue(
        template("CN=ARK-Genoa,O=Test", 1, true),
        &ark_spki,
        None,
        &ark_signer,
    )
    .unwrap();
    let ask = issue(
        template("CN=SEV-Genoa,O=Test", 0x0101, true),
        &ask_spki,
        Some(&ark),
        &ark_signer,
    )
    .unwrap();
    let leaf = issue(
        template("CN=SEV-VCEK,O=Test", 0, false),
        &leaf_spki,
        Some(&ask),
        &ask_signer,
    )
    .unwrap();
    (
        TrustedRoot {
            product: Product::Genoa,
            kind: RootKind::Simulated,
            ark,
            ask: Some(ask),
            asvk: None,
        },
        leaf,
        ark_signer,
    )
}

#[test]
fn a_cached_crl_revokes_an_ask_and_must_be_current_and_signed_by_the_ark() {
    use conclave_snp::kds::Revocation;
    let (root, leaf, ark_signer) = own_root();
    let ask = root.ask.clone().unwrap();
    let mut roots = TrustedRoots::amd();
    roots.add(root.clone()).unwrap();
    let chain = CertChain::leaf(leaf);
    let tmp = tempfile::tempdir().unwrap();
    let cache = KdsCache::new(tmp.path());
    let crl_path = cache.crl_path(conclave_snp::EndorsementKey::Vcek, Product::Genoa);
    std::fs::create_dir_all(crl_path.parent().unwrap()).unwrap();
    let now = SystemTime::now();
    let week = Duration::from_secs(7 * 86_400);
    let crl = |revoked: &[&Cert], next: Option<SystemTime>| {
        kds::issue_crl(&root.ark, &ark_signer, revoked, now, next).unwrap()
    };

    // No CRL: said, not silently passed. An empty current CRL from the ARK: checked.
    assert_eq!(
        cache.check_revocation(&chain, &roots, Some(now)).unwrap(),
        Revocation::NotChecked(crl_path.clone())
    );
    std::fs::write(&crl_path, crl(&[], Some(now + week))).unwrap();
    assert_eq!(
        cache.check_revocation(&chain, &roots, Some(now)).unwrap(),
        Revocation::Checked(crl_path.clone())
    );

    // Past its nextUpdate it is refused (fetch it again); archived evidence (no time) is not.
    let err = cache
        .check_revocation(&chain, &roots, Some(now + 2 * week))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nextUpdate"), "{err}");
    cache.check_revocation(&chain, &roots, None).unwrap();

    // The ARK revokes the ASK.
    std::fs::write(&crl_path, crl(&[&ask], None)).unwrap();
    let err = cache
        .check_revocation(&chain, &roots, Some(now))
        .unwrap_err();
    assert!(matches!(err, VerifyError::Revocation(_)), "{err}");
    assert!(err.to_string().contains("is revoked by"), "{err}");
    assert!(err.to_string().contains("serial 01:01"), "{err}");

    // AMD's Genoa chain is not judged by this root's CRL (same product, another ARK).
    let (_, other_leaf, _) = own_root();
    assert_eq!(
        cache
            .check_revocation(&CertChain::leaf(other_leaf), &roots, Some(now))
            .unwrap(),
        Revocation::NoIssuer
    );

    // A CRL in the ARK's name signed by another key is refused, not ignored.
    let (other, _, other_signer) = own_root();
    std::fs::write(
        &crl_path,
        kds::issue_crl(&other.ark, &other_signer, &[], now, None).unwrap(),
    )
    .unwrap();
    let err = cache
        .check_revocation(&chain, &roots, Some(now))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not signed by a trusted Genoa ARK"),
        "{err}"
    );

    // Garbage in the cache is refused with what to do.
    std::fs::write(&crl_path, b"not a crl").unwrap();
    let err = cache
        .check_revocation(&chain, &roots, Some(now))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a DER CRL"), "{err}");

    // A fetch never replaces a cached CRL with an older one.
    let newer = crl(&[&ask], None);
    let older = kds::issue_crl(&root.ark, &ark_signer, &[], now - week, None).unwrap();
    kds::check_not_older(&newer, &older).unwrap();
    let err = kds::check_not_older(&older, &newer)
        .unwrap_err()
        .to_string();
    assert!(err.contains("before the cached one"), "{err}");
}
