//! Regression benchmark: decrypting and decoding the pages of an encrypted dataset (the six
//! columns the analysis reads), beside the same file in plaintext. `cargo bench -p conclave-data`.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use conclave_data::dataset::{self, KeyUnwrapper, PrivateKeyUnwrapper, VaultPublicKey};
use conclave_data::generator::{Generator, Party, schema};
use conclave_data::store::{Location, locate};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt as _;

const RECORDS: u64 = 131_072;
const KID: &str = "https://127.0.0.1:8443/keys/contoso-data/0123456789abcdef0123456789abcdef";
const COLUMNS: [&str; 6] = [
    "age",
    "salary",
    "eye_color",
    "favorite_color",
    "city",
    "country",
];

fn batches(n: u64) -> impl Iterator<Item = Result<arrow_array::RecordBatch, dataset::DataError>> {
    let mut g = Generator::new(Party::Contoso, 5, n);
    std::iter::from_fn(move || g.next_batch(65_536).map(Ok))
}

async fn count(loc: &Location, unwrapper: Option<Arc<dyn KeyUnwrapper>>) -> usize {
    let mut rows = 0;
    match unwrapper {
        Some(u) => {
            let mut s = dataset::read_encrypted(loc, u, Some(&COLUMNS), 65_536)
                .await
                .unwrap();
            while let Some(b) = s.next().await {
                rows += b.unwrap().num_rows();
            }
        }
        None => {
            let mut s = dataset::read_plain(loc, Some(&COLUMNS), 65_536)
                .await
                .unwrap();
            while let Some(b) = s.next().await {
                rows += b.unwrap().num_rows();
            }
        }
    }
    rows
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let enc = locate(dir.path().join("enc.parquet").to_str().unwrap()).unwrap();
    let plain = locate(dir.path().join("plain.parquet").to_str().unwrap()).unwrap();
    let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki = private.public_key().as_der().unwrap();
    let (n, e) = conclave_pki::x509::parse_rsa_spki(spki.as_ref()).unwrap();
    let public = VaultPublicKey {
        kid: KID.into(),
        n,
        e,
    };
    rt.block_on(async {
        dataset::write_encrypted(batches(RECORDS), schema(), &enc, &public, |_| {})
            .await
            .unwrap();
        dataset::write_plain(batches(RECORDS), schema(), &plain, |_| {})
            .await
            .unwrap();
    });
    let unwrapper: Arc<dyn KeyUnwrapper> =
        Arc::new(PrivateKeyUnwrapper::new(KID, private).unwrap());

    let mut g = c.benchmark_group("data/pages_6_columns");
    g.throughput(Throughput::Elements(RECORDS));
    g.sample_size(20);
    g.bench_function("decrypt_and_decode", |b| {
        b.iter(|| {
            let rows = rt.block_on(count(&enc, Some(unwrapper.clone())));
            assert_eq!(rows as u64, RECORDS);
        })
    });
    g.bench_function("decode_plaintext", |b| {
        b.iter(|| {
            let rows = rt.block_on(count(&plain, None));
            assert_eq!(rows as u64, RECORDS);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
