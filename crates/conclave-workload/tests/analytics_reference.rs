//! Every analytics figure equals an independent computation (tests/reference/analytics.py,
//! Python standard library only) over the same generated records, including suppression.

use std::collections::BTreeMap;
use std::process::Command;

use conclave_data::generator::{Generator, Party};
use conclave_workload::analytics::{AnalysisResult, CompanyAggregate, finish};

fn reference(k: u64, year: i32, csvs: &[std::path::PathBuf]) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/reference/analytics.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(k.to_string())
        .arg(year.to_string())
        .args(csvs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn normalise(r: &AnalysisResult) -> serde_json::Value {
    // Same canonical form as the reference's (sorted keys, omitted empty averages).
    let s = serde_json::to_string(r).unwrap();
    serde_json::from_str(&s).unwrap()
}

#[test]
fn figures_match_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let parties = [
        (Party::Contoso, 3000u64),
        (Party::Fabrikam, 2500),
        (Party::Woodgrove, 700),
    ];
    let mut csvs = Vec::new();
    let mut dict_aggs: BTreeMap<String, CompanyAggregate> = BTreeMap::new();
    let year = 2026;
    for (party, n) in parties {
        let path = dir.path().join(format!("{}.csv", party.name()));
        let mut writer = arrow_csv::WriterBuilder::new()
            .with_header(true)
            .build(std::fs::File::create(&path).unwrap());
        let mut g = Generator::new(party, 99, n);
        let mut agg = CompanyAggregate::default();
        // Partial aggregates over separate batches, merged: as parallel row groups do.
        while let Some(batch) = g.next_batch(400) {
            writer.write(&batch).unwrap();
            let mut part = CompanyAggregate::default();
            part.add_batch(&batch, year).unwrap();
            agg.merge(part);
        }
        drop(writer);
        dict_aggs.insert(party.name().to_string(), agg);
        csvs.push(path);
    }
    for k in [1, 5, 150] {
        let expected = reference(k, year, &csvs);
        let got = normalise(&finish(&dict_aggs, k, year));
        assert_eq!(got, expected, "k = {k}");
        if k == 150 {
            assert!(
                got["salary_by_country"]["suppressed_groups"]
                    .as_u64()
                    .unwrap()
                    > 0,
                "k = 150 suppresses small countries"
            );
        }
    }

    // The same figures from plain (non-dictionary) string columns, as read back from CSV.
    let mut plain: BTreeMap<String, CompanyAggregate> = BTreeMap::new();
    for path in &csvs {
        let file = std::fs::File::open(path).unwrap();
        let schema = arrow_csv::reader::Format::default()
            .with_header(true)
            .infer_schema(std::fs::File::open(path).unwrap(), None)
            .unwrap()
            .0;
        let reader = arrow_csv::ReaderBuilder::new(std::sync::Arc::new(schema))
            .with_header(true)
            .build(file)
            .unwrap();
        let mut agg = CompanyAggregate::default();
        for batch in reader {
            agg.add_batch(&batch.unwrap(), year).unwrap();
        }
        plain.insert(path.file_stem().unwrap().to_str().unwrap().to_string(), agg);
    }
    assert_eq!(
        normalise(&finish(&plain, 5, year)),
        reference(5, year, &csvs)
    );
}
