//! The attestation service's appraisal with an offline KDS cache: evidence that carries no VCEK
//! gets it from the cache (the genuine Milan report then fails only at the runtime-data
//! binding, which a report made for someone else's data must), and without the cache it is
//! refused for want of a certificate.

use conclave_attest::api::{AttestSevSnpVmRequest, SnpEvidence, b64url};
use conclave_attest::appraisal::{AppraisalError, appraise_with_kds};
use conclave_snp::kds::KdsCache;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../conclave-snp/tests/data/milan-virtee-sev"
);

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap()
}

fn request(chain_pem: &[u8]) -> AttestSevSnpVmRequest {
    let evidence = SnpEvidence {
        snp_report: b64url(&read("report.bin")),
        vcek_cert_chain: b64url(chain_pem),
        endorsements: None,
        hcl_runtime_claims: None,
        tpm_quote: None,
    };
    AttestSevSnpVmRequest {
        report: b64url(&serde_json::to_vec(&evidence).unwrap()),
        runtime_data: None,
        nonce: None,
    }
}

#[test]
fn evidence_without_a_vcek_is_completed_from_the_cache() {
    let policy = conclave_attest::AppraisalPolicy::production();
    let roots = conclave_snp::TrustedRoots::amd();
    let outcome = |req: &AttestSevSnpVmRequest, cache: Option<&KdsCache>| {
        appraise_with_kds(req, &roots, &policy, cache)
            .err()
            .unwrap()
    };

    // No certificates, no cache.
    let err = outcome(&request(b""), None);
    assert!(err.to_string().contains("no VCEK/VLEK"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let cache = KdsCache::new(tmp.path());
    let err = outcome(&request(b""), Some(&cache));
    assert!(
        err.to_string().contains("has no VCEK for Milan chip"),
        "{err}"
    );

    let report = conclave_snp::AttestationReport::parse(&read("report.bin")).unwrap();
    let path = cache.vcek_path(conclave_snp::Product::Milan, &report);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, read("vcek.der")).unwrap();
    // The report verifies with the cached VCEK; it was made for other runtime data.
    for chain in [&b""[..], &[read("ask.pem"), read("ark.pem")].concat()] {
        let err = outcome(&request(chain), Some(&cache));
        assert!(matches!(err, AppraisalError::RuntimeDataNotBound), "{err}");
    }
}
