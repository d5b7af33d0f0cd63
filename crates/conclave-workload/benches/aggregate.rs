//! Regression benchmark: the partner analysis's aggregation over decoded batches (dictionary
//! codes as the Parquet reader hands them over), and the final merge into a result.
//! `cargo bench -p conclave-workload`.

use std::hint::black_box;

use arrow_array::RecordBatch;
use conclave_data::dataset;
use conclave_data::generator::{Generator, Party, schema};
use conclave_data::store::locate;
use conclave_workload::analytics::{COLUMNS, CompanyAggregate};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt as _;

const RECORDS: u64 = 131_072;

/// Batches as the analysis sees them: written to Parquet and read back with projection.
fn decoded_batches() -> Vec<RecordBatch> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let loc = locate(dir.path().join("plain.parquet").to_str().unwrap()).unwrap();
    rt.block_on(async {
        let mut g = Generator::new(Party::Fabrikam, 9, RECORDS);
        let batches = std::iter::from_fn(move || g.next_batch(65_536).map(Ok));
        dataset::write_plain(batches, schema(), &loc, |_| {})
            .await
            .unwrap();
        let mut s = dataset::read_plain(&loc, Some(&COLUMNS), 65_536)
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.push(b.unwrap());
        }
        out
    })
}

fn bench(c: &mut Criterion) {
    let batches = decoded_batches();
    let mut g = c.benchmark_group("workload/aggregate");
    g.throughput(Throughput::Elements(RECORDS));
    g.bench_function("add_batches", |b| {
        b.iter(|| {
            let mut agg = CompanyAggregate::default();
            for batch in &batches {
                agg.add_batch(black_box(batch), 2026).unwrap();
            }
            agg
        })
    });
    g.finish();

    let mut parts = Vec::new();
    for batch in &batches {
        let mut agg = CompanyAggregate::default();
        agg.add_batch(batch, 2026).unwrap();
        parts.push(agg);
    }
    c.bench_function("workload/aggregate/merge_partials", |b| {
        b.iter(|| {
            let mut total = CompanyAggregate::default();
            for p in &parts {
                total.merge(black_box(p.clone()));
            }
            total
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
