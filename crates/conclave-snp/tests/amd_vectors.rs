//! Real evidence from AMD hardware (see tests/data/README.md for provenance).

use std::time::{Duration, SystemTime};

use conclave_snp::AmdCert as _;
use conclave_snp::report::{REPORT_LEN, SIGNED_LEN};
use conclave_snp::{
    AttestationReport, Cert, CertChain, EndorsementKey, Product, ReportError, RootKind,
    TrustedRoots, VerifyError, verify_report,
};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/milan-virtee-sev");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap()
}

fn milan_chain() -> CertChain {
    CertChain {
        ark: Some(Cert::parse("ARK", &read("ark.pem")).unwrap()),
        ask: Some(Cert::parse("ASK", &read("ask.pem")).unwrap()),
        asvk: None,
        vcek: Cert::parse("VCEK", &read("vcek.der")).unwrap(),
    }
}

/// The vector's VCEK is valid from 2023 to 2030; verify at a fixed time inside that window.
fn in_validity() -> Option<SystemTime> {
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)) // 2026-01-01
}

#[test]
fn genuine_milan_report_verifies() {
    let raw = read("report.bin");
    let verified =
        verify_report(&raw, &milan_chain(), &TrustedRoots::amd(), in_validity()).unwrap();
    assert_eq!(verified.product(), Product::Milan);
    assert_eq!(verified.root_kind(), RootKind::Amd);
    let r = verified.report();
    assert_eq!(r.version, 2);
    assert_eq!(
        hex::encode(r.measurement),
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
    );
    assert!(!r.policy.debug_allowed());
    let tcb = verified.reported_tcb();
    assert_eq!(
        (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
        (3, 0, 8, 115)
    );
}

#[test]
fn report_serialises_back_to_its_bytes() {
    let raw = read("report.bin");
    let parsed = AttestationReport::parse(&raw).unwrap();
    assert_eq!(parsed.to_bytes().as_slice(), raw.as_slice());
}

#[test]
fn chain_without_ark_and_ask_uses_shipped_roots() {
    let raw = read("report.bin");
    let chain = CertChain::leaf(milan_chain().vcek);
    let verified = verify_report(&raw, &chain, &TrustedRoots::amd(), in_validity()).unwrap();
    assert_eq!(verified.endorsement_key(), EndorsementKey::Vcek);
}

#[test]
fn chain_order_does_not_matter() {
    let c = milan_chain();
    let chain = CertChain::from_certs(vec![c.ark.unwrap(), c.vcek, c.ask.unwrap()]).unwrap();
    verify_report(
        &read("report.bin"),
        &chain,
        &TrustedRoots::amd(),
        in_validity(),
    )
    .unwrap();
}

#[test]
fn every_flipped_bit_in_the_signed_area_is_detected() {
    let raw = read("report.bin");
    let chain = milan_chain();
    let roots = TrustedRoots::amd();
    for byte in 0..SIGNED_LEN {
        for bit in [0u8, 3, 7] {
            let mut bad = raw.clone();
            bad[byte] ^= 1 << bit;
            let err = verify_report(&bad, &chain, &roots, in_validity())
                .expect_err(&format!("flip of byte {byte:#x} bit {bit} went unnoticed"));
            assert!(
                matches!(
                    err,
                    VerifyError::BadReportSignature(_)
                        | VerifyError::Report(_)
                        | VerifyError::TcbMismatch { .. }
                        | VerifyError::ChipIdMismatch
                        | VerifyError::Unsigned
                        | VerifyError::SigningKeyMismatch { .. }
                ),
                "byte {byte:#x}: unexpected {err}"
            );
        }
    }
}

#[test]
fn flipped_signature_bits_are_detected() {
    let raw = read("report.bin");
    for byte in [
        SIGNED_LEN,
        SIGNED_LEN + 47,
        SIGNED_LEN + 72,
        SIGNED_LEN + 100,
    ] {
        let mut bad = raw.clone();
        bad[byte] ^= 0x10;
        assert_eq!(
            verify_report(&bad, &milan_chain(), &TrustedRoots::amd(), in_validity()).unwrap_err(),
            VerifyError::BadReportSignature("VCEK")
        );
    }
}

#[test]
fn truncated_oversized_and_wrong_version_reports_are_typed_errors() {
    let raw = read("report.bin");
    for len in [0, 1, 100, REPORT_LEN - 1] {
        assert_eq!(
            AttestationReport::parse(&raw[..len]),
            Err(ReportError::Truncated(len))
        );
    }
    let mut long = raw.clone();
    long.push(0);
    assert_eq!(
        AttestationReport::parse(&long),
        Err(ReportError::Oversized(REPORT_LEN + 1))
    );
    for v in [0u32, 1, 6, 0xFFFF_FFFF] {
        let mut bad = raw.clone();
        bad[..4].copy_from_slice(&v.to_le_bytes());
        assert_eq!(
            AttestationReport::parse(&bad),
            Err(ReportError::UnsupportedVersion(v))
        );
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic generator: the parser must return, never panic.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in [0usize, 4, 0x2A0, REPORT_LEN, REPORT_LEN + 3] {
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = AttestationReport::parse(&bytes);
            let _ = Cert::parse("fuzz", &bytes);
        }
    }
}

#[test]
fn untrusted_root_is_rejected() {
    let raw = read("report.bin");
    let err =
        verify_report(&raw, &milan_chain(), &TrustedRoots::empty(), in_validity()).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot(_)), "{err}");
}

#[test]
fn vcek_from_another_generation_does_not_chain() {
    // Genoa's ASK did not sign a Milan VCEK.
    let raw = read("report.bin");
    let genoa_ask = TrustedRoots::amd()
        .iter()
        .find(|r| r.product == Product::Genoa)
        .unwrap()
        .ask
        .clone();
    let chain = CertChain {
        ark: None,
        ask: genoa_ask,
        ..milan_chain()
    };
    let err = verify_report(&raw, &chain, &TrustedRoots::amd(), in_validity()).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Chain(conclave_snp::CertError::BadSignature { .. })
        ),
        "{err}"
    );
    let no_ask = CertChain {
        ark: None,
        ask: None,
        ..milan_chain()
    };
    let genoa_only = {
        let mut roots = TrustedRoots::empty();
        roots
            .add(
                TrustedRoots::amd()
                    .iter()
                    .find(|r| r.product == Product::Genoa)
                    .unwrap()
                    .clone(),
            )
            .unwrap();
        roots
    };
    assert_eq!(
        verify_report(&raw, &no_ask, &genoa_only, in_validity()).unwrap_err(),
        VerifyError::NoRootSignedLeaf("VCEK")
    );
}

#[test]
fn expired_certificates_are_rejected_when_time_is_checked() {
    let raw = read("report.bin");
    let far_future = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000 + 400_000_000);
    let err =
        verify_report(&raw, &milan_chain(), &TrustedRoots::amd(), Some(far_future)).unwrap_err();
    assert!(err.to_string().contains("not valid at"), "{err}");
}

#[test]
fn shipped_roots_are_genuine() {
    let expected = [
        (
            Product::Milan,
            "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
        ),
        (
            Product::Genoa,
            "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
        ),
        (
            Product::Turin,
            "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
        ),
    ];
    let roots = TrustedRoots::amd();
    for (product, fingerprint) in expected {
        let root = roots.iter().find(|r| r.product == product).unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &root.ark.der);
        assert_eq!(
            hex::encode(digest),
            fingerprint,
            "{product:?} ARK fingerprint"
        );
        root.ark.verify_signed_by(&root.ark).unwrap();
        root.ask
            .as_ref()
            .unwrap()
            .verify_signed_by(&root.ark)
            .unwrap();
    }
}

/// AMD's ASVKs (`SEV-VLEK-{product}`, KDS `/vlek/v1/{product}/cert_chain`), pinned by the
/// SHA-256 of their DER, each signed by its generation's ARK.
#[test]
fn shipped_asvks_are_genuine() {
    let expected = [
        (
            Product::Milan,
            "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
        ),
        (
            Product::Genoa,
            "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
        ),
        (
            Product::Turin,
            "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
        ),
    ];
    let roots = TrustedRoots::amd();
    for (product, fingerprint) in expected {
        let root = roots.iter().find(|r| r.product == product).unwrap();
        let asvk = root.asvk.as_ref().unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &asvk.der);
        assert_eq!(
            hex::encode(digest),
            fingerprint,
            "{product:?} ASVK fingerprint"
        );
        assert!(asvk.is_asvk());
        assert_eq!(
            asvk.common_name().unwrap(),
            format!("SEV-VLEK-{}", product.name())
        );
        asvk.verify_signed_by(&root.ark).unwrap();
        // The ASK is not an ASVK, and an ASVK did not sign the ASK.
        assert!(!root.ask.as_ref().unwrap().is_asvk());
    }
}

// --- A VLEK-signed report (AWS, Milan, report version 3): tests/data/milan-trustee-vlek ---

const VLEK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/milan-trustee-vlek");

fn vlek_read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{VLEK_DIR}/{name}")).unwrap()
}

/// The VLEK was valid from 2024-12-10 to 2025-12-10; verify inside that window.
fn in_vlek_validity() -> Option<SystemTime> {
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_748_736_000)) // 2025-06-01
}

fn vlek_chain() -> CertChain {
    CertChain::from_certs(vec![
        Cert::parse("vlek", &vlek_read("vlek.der")).unwrap(),
        Cert::parse("asvk", &vlek_read("asvk.pem")).unwrap(),
        Cert::parse("ark", &vlek_read("ark.pem")).unwrap(),
    ])
    .unwrap()
}

#[test]
fn genuine_vlek_report_verifies_through_the_asvk() {
    let raw = vlek_read("report.bin");
    let chain = vlek_chain();
    assert!(chain.asvk.is_some() && chain.ask.is_none());
    assert_eq!(chain.vcek.what, "VLEK");
    let verified = verify_report(&raw, &chain, &TrustedRoots::amd(), in_vlek_validity()).unwrap();
    assert_eq!(verified.endorsement_key(), EndorsementKey::Vlek);
    assert_eq!(verified.product(), Product::Milan);
    let r = verified.report();
    assert_eq!(r.version, 3);
    assert_eq!(r.vmpl, 1);
    assert_eq!(
        hex::encode(r.measurement),
        "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0"
    );
    // A VLEK names no chip: the report's chip_id is zero and is not compared.
    assert!(r.chip_id.iter().all(|&b| b == 0));
    // Parse → serialise round-trips a version-3 report byte for byte.
    assert_eq!(
        AttestationReport::parse(&raw)
            .unwrap()
            .to_bytes()
            .as_slice(),
        raw.as_slice()
    );
}

#[test]
fn vlek_leaf_alone_uses_the_shipped_asvk() {
    let raw = vlek_read("report.bin");
    let chain = CertChain::leaf(vlek_chain().vcek);
    let verified = verify_report(&raw, &chain, &TrustedRoots::amd(), in_vlek_validity()).unwrap();
    assert_eq!(verified.endorsement_key(), EndorsementKey::Vlek);
}

#[test]
fn vlek_errors_name_the_vlek_and_the_asvk() {
    let raw = vlek_read("report.bin");
    // A flipped bit in the signature: the VLEK, not a VCEK, is named.
    let mut bad = raw.clone();
    bad[SIGNED_LEN + 5] ^= 0x01;
    assert_eq!(
        verify_report(
            &bad,
            &vlek_chain(),
            &TrustedRoots::amd(),
            in_vlek_validity()
        )
        .unwrap_err(),
        VerifyError::BadReportSignature("VLEK")
    );
    // Roots without ASVKs: the error says the ASVK is missing and where AMD serves it.
    let mut no_asvk = TrustedRoots::empty();
    for root in TrustedRoots::amd().iter() {
        no_asvk
            .add(conclave_snp::TrustedRoot {
                asvk: None,
                ..root.clone()
            })
            .unwrap();
    }
    let err = verify_report(
        &raw,
        &CertChain {
            asvk: None,
            ..vlek_chain()
        },
        &no_asvk,
        in_vlek_validity(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no ASVK") && err.contains("/vlek/v1/Milan/cert_chain"),
        "{err}"
    );
    // Genoa's ASVK did not sign this Milan VLEK: the message names both.
    let genoa_asvk = TrustedRoots::amd()
        .iter()
        .find(|r| r.product == Product::Genoa)
        .unwrap()
        .asvk
        .clone()
        .unwrap();
    let chain = CertChain {
        ark: None,
        asvk: Some(genoa_asvk),
        ..vlek_chain()
    };
    let err = verify_report(&raw, &chain, &TrustedRoots::amd(), in_vlek_validity())
        .unwrap_err()
        .to_string();
    assert!(err.contains("VLEK") && err.contains("ASVK-Genoa"), "{err}");
    assert!(!err.contains("ASK-"), "{err}");
    // The VLEK expired on 2025-12-10: checked at a later time it is refused, by name.
    let later = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600); // 2026-01-01
    let err = verify_report(&raw, &vlek_chain(), &TrustedRoots::amd(), Some(later))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("VLEK") && err.contains("not valid at"),
        "{err}"
    );
}

#[test]
fn a_vcek_is_not_accepted_where_the_report_says_vlek() {
    // The Milan VCEK report's signing-key field says VCEK; offering the VLEK as its leaf is a
    // mismatch, whatever the signatures.
    let raw = read("report.bin");
    let chain = CertChain::leaf(vlek_chain().vcek);
    let err = verify_report(&raw, &chain, &TrustedRoots::amd(), in_vlek_validity()).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::SigningKeyMismatch { .. } | VerifyError::BadReportSignature("VLEK")
        ),
        "{err}"
    );
}
