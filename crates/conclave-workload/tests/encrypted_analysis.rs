//! The analysis over encrypted datasets gives the same figures as over the plaintext records,
//! reports progress to completion, and releases nothing when a dataset is tampered with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use conclave_data::dataset::{self, KeyUnwrapper, PrivateKeyUnwrapper, VaultPublicKey};
use conclave_data::generator::{Generator, Party, schema};
use conclave_data::store::locate;
use conclave_workload::analysis::{AnalysisError, Input, Phase, Progress, analyze};
use conclave_workload::analytics::{CompanyAggregate, finish};

const YEAR: i32 = 2026;

async fn encrypted(dir: &std::path::Path, party: Party, n: u64) -> (String, Arc<dyn KeyUnwrapper>) {
    let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki = private.public_key().as_der().unwrap();
    let (pn, pe) = conclave_pki::x509::parse_rsa_spki(spki.as_ref()).unwrap();
    let kid = format!("https://vault/keys/{}-data/1", party.name());
    let url = dir
        .join(format!("{}.parquet", party.name()))
        .to_str()
        .unwrap()
        .to_string();
    let mut g = Generator::new(party, 5, n);
    let batches = std::iter::from_fn(move || g.next_batch(10_000).map(Ok));
    dataset::write_encrypted(
        batches,
        schema(),
        &locate(&url).unwrap(),
        &VaultPublicKey {
            kid: kid.clone(),
            n: pn,
            e: pe,
        },
        |_| {},
    )
    .await
    .unwrap();
    (
        url,
        Arc::new(PrivateKeyUnwrapper::new(&kid, private).unwrap()),
    )
}

fn inputs(sets: &[(Party, String, Arc<dyn KeyUnwrapper>)]) -> Vec<Input> {
    sets.iter()
        .map(|(p, url, u)| Input {
            company: p.name().into(),
            location: locate(url).unwrap(),
            unwrapper: Some(u.clone()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_analysis_matches_plaintext_and_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let parties = [
        (Party::Contoso, 30_000u64),
        (Party::Fabrikam, 20_000),
        (Party::Woodgrove, 10_000),
    ];
    let mut sets = Vec::new();
    let mut plain: BTreeMap<String, CompanyAggregate> = BTreeMap::new();
    for (p, n) in parties {
        let (url, u) = encrypted(dir.path(), p, n).await;
        sets.push((p, url, u));
        let mut g = Generator::new(p, 5, n);
        let agg = plain.entry(p.name().into()).or_default();
        while let Some(b) = g.next_batch(7000) {
            agg.add_batch(&b, YEAR).unwrap();
        }
    }

    let events: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = events.clone();
    let (_cancel, watch) = tokio::sync::watch::channel(false);
    let result = analyze(
        inputs(&sets),
        5,
        YEAR,
        Arc::new(move |p| sink.lock().unwrap().push(p)),
        watch.clone(),
    )
    .await
    .unwrap();
    assert_eq!(result, finish(&plain, 5, YEAR));
    assert_eq!(result.total_records, 60_000);
    let events = events.lock().unwrap().clone();
    for (p, n) in parties {
        let last = events.iter().rev().find(|e| e.company == p.name()).unwrap();
        assert_eq!((last.phase, last.records), (Phase::Done, n), "{}", p.name());
    }

    // Tampering never changes a released figure: the analysis fails, naming the dataset, or (for
    // bytes of columns the analysis does not read) gives the very same result.
    let path = sets[1].1.clone();
    let original = std::fs::read(&path).unwrap();
    let mut failures = 0;
    for pos in [
        original.len() / 5,
        original.len() / 3,
        original.len() / 2,
        original.len() * 4 / 5,
        original.len() - 200,
    ] {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        match analyze(inputs(&sets), 5, YEAR, Arc::new(|_| {}), watch.clone()).await {
            Err(AnalysisError::Dataset { company, .. }) => {
                assert_eq!(company, "fabrikam");
                failures += 1;
            }
            Err(other) => panic!("unexpected {other}"),
            Ok(r) => assert_eq!(r, result, "a flip at {pos} changed a released figure"),
        }
    }
    assert!(failures >= 1, "a tampered footer must fail the analysis");
    std::fs::write(&path, &original).unwrap();

    // Cancellation stops it.
    let (cancel, watch) = tokio::sync::watch::channel(true);
    let err = analyze(inputs(&sets[..1]), 5, YEAR, Arc::new(|_| {}), watch)
        .await
        .unwrap_err();
    assert!(matches!(err, AnalysisError::Cancelled));
    drop(cancel);
}
