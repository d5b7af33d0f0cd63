//! Regression benchmark: verifying a real Milan report against its ARK → ASK → VCEK chain.
//! `cargo bench -p conclave-snp` (the attestation service does this once per request).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use conclave_snp::{AttestationReport, Cert, CertChain, TrustedRoots, verify_report};
use criterion::{Criterion, criterion_group, criterion_main};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/milan-virtee-sev");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).expect("the Milan test vector is in tests/data")
}

fn bench(c: &mut Criterion) {
    let raw = read("report.bin");
    let (ark, ask, vcek) = (read("ark.pem"), read("ask.pem"), read("vcek.der"));
    let roots = TrustedRoots::amd();
    // Inside the VCEK's validity window, so expiry is checked as the service checks it.
    let at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600));

    c.bench_function("snp/report_parse", |b| {
        b.iter(|| AttestationReport::parse(black_box(&raw)).unwrap())
    });
    c.bench_function("snp/chain_parse", |b| {
        b.iter(|| CertChain {
            ark: Some(Cert::parse("ARK", black_box(&ark)).unwrap()),
            ask: Some(Cert::parse("ASK", black_box(&ask)).unwrap()),
            asvk: None,
            vcek: Cert::parse("VCEK", black_box(&vcek)).unwrap(),
        })
    });
    let chain = CertChain {
        ark: Some(Cert::parse("ARK", &ark).unwrap()),
        ask: Some(Cert::parse("ASK", &ask).unwrap()),
        asvk: None,
        vcek: Cert::parse("VCEK", &vcek).unwrap(),
    };
    c.bench_function("snp/report_verify_full_chain", |b| {
        b.iter(|| verify_report(black_box(&raw), &chain, &roots, at).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
