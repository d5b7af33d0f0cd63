//! Regression benchmarks for the vault's release path: policy evaluation and key wrapping.
//! `cargo bench -p conclave-kms`.

use std::hint::black_box;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use conclave_kms::crypto::{self, WrapAlgorithm};
use conclave_kms::policy::ReleasePolicy;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const AUTHORITY: &str = "https://127.0.0.1:8401";

/// The shape the demo writes: one authority block per accepted measurement.
fn policy(measurements: usize) -> ReleasePolicy {
    let blocks: Vec<_> = (0..measurements)
        .map(|i| {
            json!({
                "authority": AUTHORITY,
                "allOf": [
                    {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
                    {"claim": "x-ms-compliance-status", "equals": "conclave-compliant"},
                    {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
                    {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": format!("{i:096x}")},
                ]
            })
        })
        .collect();
    ReleasePolicy::from_value(&json!({"version": "1.0.0", "anyOf": blocks})).unwrap()
}

fn claims(measurement: usize) -> serde_json::Value {
    json!({
        "iss": AUTHORITY,
        "x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "conclave-compliant",
        "x-ms-sevsnpvm-is-debuggable": false,
        "x-ms-sevsnpvm-launchmeasurement": format!("{measurement:096x}"),
        "x-ms-sevsnpvm-hostdata": "00".repeat(32),
        "x-ms-runtime": {"keys": [{"kty": "RSA", "kid": "tee-rsa", "n": "AQAB", "e": "AQAB"}]},
    })
}

fn bench(c: &mut Criterion) {
    let one = policy(1);
    let three = policy(3);
    let (hit, last, miss) = (claims(0), claims(2), claims(7));
    c.bench_function("kms/policy_evaluate_1_block_satisfied", |b| {
        b.iter(|| one.evaluate(AUTHORITY, black_box(&hit)).unwrap())
    });
    c.bench_function("kms/policy_evaluate_3_blocks_last_satisfied", |b| {
        b.iter(|| three.evaluate(AUTHORITY, black_box(&last)).unwrap())
    });
    c.bench_function("kms/policy_evaluate_3_blocks_denied", |b| {
        b.iter(|| three.evaluate(AUTHORITY, black_box(&miss)).unwrap_err())
    });

    // The released key (what the vault holds) and the TEE's transfer key (what it wraps to).
    let target = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = target.as_der().unwrap();
    let tee = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki = tee.public_key().as_der().unwrap();
    let (n, e) = conclave_pki::x509::parse_rsa_spki(spki.as_ref()).unwrap();
    let alg = WrapAlgorithm::RsaAesKeyWrap256;
    c.bench_function("kms/key_wrap_rsa2048_to_rsa2048", |b| {
        b.iter(|| crypto::wrap(black_box(pkcs8.as_ref()), &n, &e, alg).unwrap())
    });
    let wrapped = crypto::wrap(pkcs8.as_ref(), &n, &e, alg).unwrap();
    c.bench_function("kms/key_unwrap_in_tee", |b| {
        b.iter(|| crypto::unwrap(black_box(&wrapped), &tee, alg).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
