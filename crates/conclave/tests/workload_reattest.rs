//! The workload re-attests before its token expires: with a six-second token lifetime, a new
//! token replaces the first while the first is still valid.

mod common;
use common::*;

use std::time::Instant;

use conclave_workload::identity::{AttestationState, TeeIdentity};

fn attested(identity: &TeeIdentity) -> Option<(String, u64, u64)> {
    match identity.state() {
        AttestationState::Attested {
            attested_at,
            expires_at,
            ..
        } => Some((identity.token()?, attested_at, expires_at)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_token_arrives_before_the_old_one_expires() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimHost::open(&dir.path().join("sim")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut roots = TrustedRoots::amd();
    roots.add(sim.platform().trusted_root()).unwrap();
    let service = AttestationService::new(ServiceConfig {
        issuer: url.clone(),
        roots,
        policy: AppraisalPolicy {
            allowed_platforms: [PlatformName::Sim].into(),
            allow_debug: false,
            min_tcb: None,
            check_cert_validity: true,
        },
        key_dir: dir.path().join("token-keys"),
        token_lifetime: Duration::from_secs(6),
        kds_cache: None,
    })
    .unwrap();
    tokio::spawn(conclave_net::serve(
        listener,
        conclave_attest::service::router(service),
        None,
        std::future::pending(),
    ));

    let identity = TeeIdentity::generate(Some(Platform::Sim), &[]).unwrap();
    // The runtime data the report binds is exactly the published keys.
    let runtime: serde_json::Value = serde_json::from_slice(identity.runtime_json()).unwrap();
    assert_eq!(runtime["keys"].as_array().unwrap().len(), 2);
    let task = tokio::spawn(identity.clone().keep_attested(
        Arc::new(SignedEvidence {
            sim,
            config: GOOD_CONFIG.to_vec(),
        }),
        conclave_net::client(None).unwrap(),
        url,
    ));

    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(a) = attested(&identity) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "never attested: {:?}",
            identity.state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let second = loop {
        if let Some(a) = attested(&identity)
            && a.0 != first.0
        {
            break a;
        }
        assert!(Instant::now() < deadline, "never re-attested");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        second.1 <= first.2,
        "re-attested at {} after the first token expired at {}",
        second.1,
        first.2
    );
    let claims = conclave_workload::identity::unverified_claims(&second.0).unwrap();
    assert_eq!(claims["x-ms-runtime"], runtime);
    task.abort();
}
