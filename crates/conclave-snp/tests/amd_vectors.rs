//! Real evidence from AMD hardware (see tests/data/README.md for provenance).

use std::time::{Duration, SystemTime};

use conclave_snp::report::{REPORT_LEN, SIGNED_LEN};
use conclave_snp::{
    AttestationReport, Cert, CertChain, Product, ReportError, RootKind, TrustedRoots, VerifyError,
    verify_report,
};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/milan-virtee-sev");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap()
}

fn milan_chain() -> CertChain {
    CertChain {
        ark: Some(Cert::parse("ARK", &read("ark.pem")).unwrap()),
        ask: Some(Cert::parse("ASK", &read("ask.pem")).unwrap()),
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
    let chain = CertChain {
        ark: None,
        ask: None,
        ..milan_chain()
    };
    verify_report(&raw, &chain, &TrustedRoots::amd(), in_validity()).unwrap();
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
                    VerifyError::BadReportSignature
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
            VerifyError::BadReportSignature
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
        VerifyError::NoRootSignedVcek
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
