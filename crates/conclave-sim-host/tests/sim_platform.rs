//! The simulated platform signs real-format reports that the hardware verifier accepts against
//! the sim root, and only for processes it launched.

use conclave_sim_host::{LaunchIdentity, SimHost, measure};
use conclave_snp::{CertChain, RootKind, TrustedRoots, VerifyError, verify_report};
use conclave_tee::sim::SimEvidence;
use conclave_tee::{EvidenceSource, TeeError};

fn identity(debug: bool) -> LaunchIdentity {
    LaunchIdentity {
        measurement: measure(b"binary", &["party".into()], b"config"),
        host_data: conclave_sim_host::host_data(b"config"),
        policy: conclave_snp::report::GuestPolicy(0x3_0000 | if debug { 1 << 19 } else { 0 }),
        report_id: [7; 32],
    }
}

fn chain(pem: &str) -> CertChain {
    CertChain::from_certs(conclave_pki::Cert::parse_pem_bundle("chain", pem.as_bytes()).unwrap())
        .unwrap()
}

#[test]
fn sim_reports_verify_against_the_sim_root_only() {
    let dir = tempfile::tempdir().unwrap();
    let host = SimHost::open(dir.path()).unwrap();
    let platform = host.platform();
    let report = platform.sign_report(&identity(false), [0xAB; 64]).unwrap();
    let chain = chain(&platform.cert_chain_pem());

    let mut roots = TrustedRoots::amd();
    roots.add(platform.trusted_root()).unwrap();
    let verified =
        verify_report(&report, &chain, &roots, Some(std::time::SystemTime::now())).unwrap();
    assert_eq!(verified.root_kind(), RootKind::Simulated);
    assert_eq!(verified.report().report_data, [0xAB; 64]);
    assert_eq!(verified.report().measurement, identity(false).measurement);
    assert!(!verified.report().policy.debug_allowed());

    // A hardware-only verifier does not accept it.
    let err = verify_report(&report, &chain, &TrustedRoots::amd(), None).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot(_)), "{err}");

    // The platform persists: reopening gives the same root, and old reports still verify.
    let reopened = SimHost::open(dir.path()).unwrap();
    assert_eq!(
        reopened.platform().trusted_root().ark.der,
        platform.trusted_root().ark.der
    );
    verify_report(&report, &chain, &roots, None).unwrap();
}

#[test]
fn measurement_covers_binary_arguments_and_config() {
    let base = measure(b"binary", &["a".into()], b"config");
    assert_ne!(base, measure(b"binarY", &["a".into()], b"config"));
    assert_ne!(base, measure(b"binary", &["b".into()], b"config"));
    assert_ne!(base, measure(b"binary", &["a".into()], b"config "));
    // Lengths are framed: moving bytes between fields changes the measurement.
    assert_ne!(measure(b"ab", &[], b"c"), measure(b"a", &[], b"bc"));
}

#[tokio::test]
async fn a_process_the_host_did_not_launch_gets_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let host = SimHost::open(dir.path()).unwrap();
    let listener = host.bind().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let host = host.clone();
        tokio::spawn(async move {
            host.serve(listener, async {
                stopped.await.ok();
            })
            .await
        })
    };
    // This test process asks directly: it was not launched by the host.
    let client = SimEvidence::new(host.socket_path().to_path_buf());
    let err = client.evidence([1; 64]).await.unwrap_err();
    match err {
        TeeError::Refused(msg) => {
            assert!(msg.contains("was not launched by this sim host"), "{msg}")
        }
        other => panic!("expected a refusal, got {other}"),
    }
    stop.send(()).unwrap();
    server.await.unwrap();
}
