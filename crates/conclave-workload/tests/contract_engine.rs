//! Analysis contracts run by DataFusion over encrypted datasets: the shipped demographics
//! contract gives the built-in analysis's figures, and every output rule is enforced by the
//! workload whatever the SQL says.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use conclave_contract::Contract;
use conclave_data::dataset::{self, KeyUnwrapper, PrivateKeyUnwrapper, VaultPublicKey};
use conclave_data::generator::{Generator, Party, schema};
use conclave_data::store::locate;
use conclave_workload::analytics::{AnalysisResult, CompanyAggregate, Group, finish};
use conclave_workload::engine::{
    ContractInput, ContractProgress, ContractResult, ContractRunError, QueryResult, RuleViolation,
    RunStage, run,
};
use conclave_workload::service::current_year;
use serde_json::Value;

const PARTIES: [(Party, u64); 3] = [
    (Party::Contoso, 12_000),
    (Party::Fabrikam, 8_000),
    (Party::Woodgrove, 4_000),
];

struct Datasets {
    _dir: tempfile::TempDir,
    inputs: Vec<(String, String, Arc<dyn KeyUnwrapper>)>,
}

impl Datasets {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = Vec::new();
        for (party, n) in PARTIES {
            let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
            let spki = private.public_key().as_der().unwrap();
            let (pn, pe) = conclave_pki::x509::parse_rsa_spki(spki.as_ref()).unwrap();
            let kid = format!("https://vault/keys/{}-data/1", party.name());
            let url = dir
                .path()
                .join(format!("{}.parquet", party.name()))
                .to_str()
                .unwrap()
                .to_string();
            let mut g = Generator::new(party, 5, n);
            let batches = std::iter::from_fn(move || g.next_batch(5_000).map(Ok));
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
            let unwrapper: Arc<dyn KeyUnwrapper> =
                Arc::new(PrivateKeyUnwrapper::new(&kid, private).unwrap());
            inputs.push((party.name().to_string(), url, unwrapper));
        }
        Datasets { _dir: dir, inputs }
    }

    fn inputs(&self) -> Vec<ContractInput> {
        self.inputs
            .iter()
            .map(|(table, url, u)| ContractInput {
                table: table.clone(),
                location: locate(url).unwrap(),
                unwrapper: Some(u.clone()),
            })
            .collect()
    }
}

/// The shipped demographics contract, its placeholders filled in.
fn shipped_contract() -> String {
    shipped("partner-demographics")
}

/// A contract of `contracts/`, its placeholders filled in.
fn shipped(name: &str) -> String {
    let path = format!("{}/../../contracts/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(path).unwrap();
    for party in ["contoso", "fabrikam", "woodgrove"] {
        let (_, public) = conclave_contract::approval::generate_key().unwrap();
        let (_, receiver) = conclave_contract::approval::generate_key().unwrap();
        text = text
            .replace(&format!("<{party}'s approval public key (PEM)>"), &public)
            .replace(&format!("<{party}'s receiver public key (PEM)>"), &receiver)
            .replace(
                &format!("<{party}'s vault>"),
                &format!("{party}-vault.example"),
            );
    }
    text.replace("<storage>", "az://demo")
}

async fn run_contract(
    data: &Datasets,
    contract: &Contract,
) -> (
    Result<ContractResult, ContractRunError>,
    Vec<ContractProgress>,
) {
    let events: Arc<Mutex<Vec<ContractProgress>>> = Arc::default();
    let sink = events.clone();
    let (_cancel, watch) = tokio::sync::watch::channel(false);
    let result = run(
        contract,
        data.inputs(),
        Arc::new(move |p| sink.lock().unwrap().push(p)),
        watch,
    )
    .await;
    let events = events.lock().unwrap().clone();
    (result, events)
}

fn query<'a>(r: &'a ContractResult, name: &str) -> &'a QueryResult {
    r.queries.iter().find(|q| q.name == name).unwrap()
}

fn text(row: &serde_json::Map<String, Value>, column: &str) -> String {
    row[column].as_str().unwrap().to_string()
}

fn number(row: &serde_json::Map<String, Value>, column: &str) -> u64 {
    row[column].as_u64().unwrap()
}

/// A query's rows as groups: `label` columns joined by "/", then count and average salary.
fn groups(q: &QueryResult, labels: &[&str]) -> Vec<Group> {
    q.rows
        .iter()
        .map(|row| Group {
            label: labels
                .iter()
                .map(|l| text(row, l))
                .collect::<Vec<_>>()
                .join("/"),
            count: number(row, "records"),
            average_salary: row.get("average_salary").and_then(Value::as_u64),
        })
        .collect()
}

fn builtin(k: u64) -> AnalysisResult {
    let mut companies: BTreeMap<String, CompanyAggregate> = BTreeMap::new();
    for (party, n) in PARTIES {
        let mut g = Generator::new(party, 5, n);
        let agg = companies.entry(party.name().into()).or_default();
        while let Some(b) = g.next_batch(5_000) {
            agg.add_batch(&b, current_year()).unwrap();
        }
    }
    finish(&companies, k, current_year())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demographics_contract_equals_the_builtin_analysis() {
    let data = Datasets::new().await;
    let shipped = Contract::parse(&shipped_contract()).unwrap();
    // As shipped, and with a k large enough that groups at every level are withheld.
    for k in [shipped.output.k, 300] {
        let mut contract = shipped.clone();
        contract.output.k = k;
        demographics_equal_builtin(&data, &contract, k > shipped.output.k).await;
    }
}

async fn demographics_equal_builtin(data: &Datasets, contract: &Contract, some_withheld: bool) {
    let (result, events) = run_contract(data, contract).await;
    let result = result.unwrap();
    assert_eq!(result.digest, contract.digest());
    let k = contract.output.k;
    let want = builtin(k);

    // Top countries, and the top cities of each.
    let countries = query(&result, "top_countries");
    assert_eq!(
        groups(countries, &["country"]),
        want.top_countries
            .iter()
            .map(|c| Group {
                label: c.country.clone(),
                count: c.count,
                average_salary: None,
            })
            .collect::<Vec<_>>()
    );
    let cities = query(&result, "top_cities");
    for row in &want.top_countries {
        let got: Vec<Group> = groups(cities, &["country", "city"])
            .into_iter()
            .filter(|g| g.label.starts_with(&format!("{}/", row.country)))
            .map(|g| Group {
                label: g.label[row.country.len() + 1..].to_string(),
                ..g
            })
            .collect();
        assert_eq!(got, row.top_cities.groups, "{}", row.country);
    }
    // Per company: records, average salary, generations, colours.
    let companies = query(&result, "companies");
    for row in &companies.rows {
        let c = &want.companies[&text(row, "company")];
        assert_eq!(number(row, "records"), c.records);
        assert_eq!(row["average_salary"].as_u64(), c.average_salary);
    }
    assert_eq!(companies.rows.len(), want.companies.len());
    for (name, c) in &want.companies {
        let per = |q: &str, label: &str| -> Vec<Group> {
            groups(query(&result, q), &["company", label])
                .into_iter()
                .filter(|g| g.label.starts_with(&format!("{name}/")))
                .map(|g| Group {
                    label: g.label[name.len() + 1..].to_string(),
                    ..g
                })
                .collect()
        };
        assert_eq!(per("generations", "generation"), c.generations.groups);
        assert_eq!(per("eye_colors", "eye_color"), c.eye_colors.groups);
        assert_eq!(
            per("favorite_colors", "favorite_color"),
            c.favorite_colors.groups
        );
    }
    // All companies together.
    assert_eq!(
        groups(query(&result, "salary_by_country"), &["country"]),
        want.salary_by_country.groups
    );
    assert_eq!(
        query(&result, "salary_by_country").suppressed_groups,
        want.salary_by_country.suppressed_groups
    );
    assert_eq!(
        groups(query(&result, "salary_by_generation"), &["generation"]),
        want.salary_by_generation.groups
    );
    assert_eq!(
        query(&result, "top_countries").suppressed_groups,
        want.top_countries_suppressed
    );
    if some_withheld {
        // Groups were small enough to be withheld, and were counted.
        assert!(want.salary_by_country.suppressed_groups > 0);
        assert!(query(&result, "top_cities").suppressed_groups > 0);
    }

    // Progress read the inputs, then released every query. The demographics' aggregates have
    // no joins, so they share one reader per input: every record is decoded once per run, not
    // once per aggregate (about ten).
    let total: u64 = PARTIES.iter().map(|(_, n)| n).sum();
    let last = events.last().unwrap();
    assert_eq!(last.stage, RunStage::Releasing);
    assert_eq!(last.queries_released, contract.queries.len());
    assert_eq!(
        (last.records, last.records_total),
        (total, total),
        "{last:?}"
    );
    let read = events
        .iter()
        .rposition(|e| e.stage == RunStage::Reading)
        .unwrap();
    assert!(
        events[read + 1..]
            .iter()
            .all(|e| e.stage == RunStage::Releasing),
        "{events:?}"
    );
    assert!(events[..=read].iter().all(|e| e.query.is_none()));
}

/// The shipped contract with its queries replaced by one.
fn with_query(sql: &str, k: u64, forbidden: &[&str]) -> Contract {
    let mut contract = Contract::parse(&shipped_contract()).unwrap();
    contract.queries.truncate(1);
    contract.queries[0].name = "q".into();
    contract.queries[0].sql = sql.into();
    contract.output.k = k;
    contract.output.forbidden_columns = forbidden.iter().map(|s| s.to_string()).collect();
    contract
}

#[tokio::test(flavor = "multi_thread")]
async fn output_rules_are_enforced_whatever_the_sql_says() {
    let data = Datasets::new().await;
    let refused = |r: Result<ContractResult, ContractRunError>| match r {
        Err(ContractRunError::Rule { violation, .. }) => violation,
        other => panic!("expected a refusal, got {other:?}"),
    };

    // Checked before any key is asked for, over empty tables of the declared schemas.
    assert!(matches!(
        conclave_workload::engine::check(&with_query("SELECT name FROM contoso", 1, &[])).await,
        Err(ContractRunError::Rule { .. })
    ));
    conclave_workload::engine::check(&Contract::parse(&shipped_contract()).unwrap())
        .await
        .unwrap();

    // Records themselves: refused before anything is decrypted.
    let (r, events) = run_contract(&data, &with_query("SELECT name FROM contoso", 1, &[])).await;
    assert!(matches!(refused(r), RuleViolation::NotAggregate { table } if table == "contoso"));
    assert!(events.is_empty(), "{events:?}");
    // Also when the records hide in a subquery joined to an aggregate.
    let sql = "SELECT c.country, c.name FROM contoso c JOIN (SELECT country, COUNT(*) AS n FROM fabrikam GROUP BY country) f ON c.country = f.country";
    let (r, _) = run_contract(&data, &with_query(sql, 1, &[])).await;
    assert!(matches!(refused(r), RuleViolation::NotAggregate { .. }));

    // Aggregates that release one record's value.
    for f in [
        "MAX(salary)",
        "MIN(age)",
        "FIRST_VALUE(salary)",
        "ARRAY_AGG(city)",
    ] {
        let sql = format!("SELECT country, {f} AS v FROM contoso GROUP BY country");
        let (r, _) = run_contract(&data, &with_query(&sql, 1, &[])).await;
        assert!(
            matches!(refused(r), RuleViolation::Aggregate { .. }),
            "{f} was not refused"
        );
    }

    // What could let one record's values through allowed aggregates: refused before running.
    for sql in [
        // an aggregate below the release aggregate (one group holding every record's city)
        "SELECT x.dump, COUNT(*) FROM contoso JOIN (SELECT country, string_agg(city, ';') AS dump FROM contoso GROUP BY country) x ON contoso.country = x.country GROUP BY x.dump",
        // a window function below it, picking records by rank
        "SELECT city, SUM(CASE WHEN rn = 1 THEN salary END) AS s FROM (SELECT city, salary, ROW_NUMBER() OVER (PARTITION BY city ORDER BY salary) AS rn FROM contoso) GROUP BY city",
        // generated rows multiplying each record
        "SELECT c.city, c.salary, COUNT(*) FROM contoso c CROSS JOIN generate_series(1, 20) GROUP BY c.city, c.salary",
        // the same table twice
        "SELECT city, salary, COUNT(*) FROM (SELECT city, salary FROM contoso UNION ALL SELECT city, salary FROM contoso) GROUP BY city, salary",
        // a limit picking records
        "SELECT SUM(salary) AS s FROM (SELECT salary FROM contoso ORDER BY salary DESC LIMIT 6)",
        // FILTER, and COUNT of a computed value
        "SELECT country, SUM(salary) FILTER (WHERE age = 30) AS s FROM contoso GROUP BY country",
        "SELECT country, COUNT(CASE WHEN age = 30 THEN 1 END) AS n FROM contoso GROUP BY country",
        // a second review: a 0 for everyone but one record, and a computed column counted
        "SELECT country, SUM(CASE WHEN age = 30 THEN salary ELSE 0 END) AS s FROM contoso GROUP BY country",
        "SELECT country, COUNT(*) AS n, COUNT(b) AS c FROM (SELECT country, CASE WHEN age = 30 THEN NULL ELSE 1 END AS b FROM contoso) GROUP BY country",
    ] {
        let (r, _) = run_contract(&data, &with_query(sql, 5, &[])).await;
        assert!(
            matches!(r, Err(ContractRunError::Rule { .. })),
            "{sql}: {r:?}"
        );
    }

    // Values nulled for most of a group in a subquery are a computed value: refused too.
    let sql = "SELECT country, SUM(s) AS s FROM (SELECT country, CASE WHEN age = 30 THEN salary END AS s FROM contoso) GROUP BY country";
    let (r, _) = run_contract(&data, &with_query(sql, 20, &[])).await;
    assert!(matches!(r, Err(ContractRunError::Rule { .. })), "{r:?}");

    // A DISTINCT aggregate counts the distinct values it covers.
    let sql = "SELECT country, COUNT(*) AS n, SUM(DISTINCT salary) AS sd FROM contoso GROUP BY country ORDER BY country";
    let (r, _) = run_contract(&data, &with_query(sql, 40, &[])).await;
    let released: Vec<String> = r.unwrap().queries[0]
        .rows
        .iter()
        .map(|r| text(r, "country"))
        .collect();
    let mut per_country: BTreeMap<String, (u64, std::collections::BTreeSet<u32>)> = BTreeMap::new();
    for r in records(Party::Contoso) {
        let e = per_country.entry(r.country).or_default();
        e.0 += 1;
        e.1.insert(r.salary);
    }
    let expected: Vec<String> = per_country
        .into_iter()
        .filter(|(_, (n, distinct))| *n >= 40 && distinct.len() >= 40)
        .map(|(c, _)| c)
        .collect();
    assert_eq!(released, expected);

    // A join key equals the other side's: a group key joined to a forbidden column is refused.
    let sql = "SELECT f.age, COUNT(*) AS n FROM contoso c JOIN fabrikam f ON c.salary = f.age GROUP BY f.age";
    let (r, _) = run_contract(&data, &with_query(sql, 1, &["salary"])).await;
    assert!(
        matches!(
            r,
            Err(ContractRunError::Rule {
                violation: RuleViolation::Forbidden { .. },
                ..
            })
        ),
        "{r:?}"
    );

    // Group keys of the same name from two tables (a join of two inputs) are released as such.
    let sql = "SELECT c.country, f.country, COUNT(*) AS n FROM contoso c JOIN fabrikam f ON c.city = f.city GROUP BY c.country, f.country";
    let (r, _) = run_contract(&data, &with_query(sql, 5, &[])).await;
    assert!(!r.unwrap().queries[0].rows.is_empty());

    // Forbidden columns: as a group, inside SUM, through an alias, by name.
    let forbidden = ["name", "phone"];
    for sql in [
        "SELECT phone, COUNT(*) AS records FROM contoso GROUP BY phone",
        "SELECT substr(p, 1, 3) AS prefix, COUNT(*) FROM (SELECT phone AS p FROM fabrikam) GROUP BY 1",
        "SELECT country, SUM(length(name)) AS s FROM contoso GROUP BY country",
    ] {
        let (r, _) = run_contract(&data, &with_query(sql, 1, &forbidden)).await;
        assert!(
            matches!(refused(r), RuleViolation::Forbidden { .. }),
            "{sql}"
        );
    }
    let sql = "SELECT country, COUNT(*) AS phone FROM contoso GROUP BY country";
    let (r, _) = run_contract(&data, &with_query(sql, 1, &forbidden)).await;
    assert!(matches!(refused(r), RuleViolation::ForbiddenName { .. }));
    // COUNT of a forbidden column counts rows and releases no value.
    let sql = "SELECT country, COUNT(DISTINCT phone) AS phones FROM contoso GROUP BY country";
    let (r, _) = run_contract(&data, &with_query(sql, 1, &forbidden)).await;
    r.unwrap();

    // Groups below k are withheld by the workload's own count, even when the SQL claims more.
    let sql = "SELECT city, COUNT(*) * 1000 AS records FROM contoso GROUP BY city ORDER BY city";
    let (small, _) = run_contract(&data, &with_query(sql, 1, &[])).await;
    let small = small.unwrap();
    let (large, _) = run_contract(&data, &with_query(sql, 50, &[])).await;
    let large = large.unwrap();
    let q1 = &small.queries[0];
    let q50 = &large.queries[0];
    assert_eq!(q1.suppressed_groups, 0);
    assert!(q50.suppressed_groups > 0, "the data has no city below 50");
    assert_eq!(
        q50.rows.len() as u64 + q50.suppressed_groups,
        q1.rows.len() as u64
    );
    // Exactly the cities with fewer than 50 customers went.
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut g = Generator::new(Party::Contoso, 5, PARTIES[0].1);
    while let Some(b) = g.next_batch(5_000) {
        for r in conclave_data::generator::records_from_batch(&b).unwrap() {
            *counts.entry(r.city).or_default() += 1;
        }
    }
    let released: Vec<String> = q50.rows.iter().map(|r| text(r, "city")).collect();
    let expected: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n >= 50)
        .map(|(c, _)| c.clone())
        .collect();
    assert_eq!(released, expected);

    // Settings the workload does not apply are refused, not attested.
    let mut rows = with_query(
        "SELECT country, COUNT(*) AS n FROM contoso GROUP BY country",
        1,
        &[],
    );
    rows.output.aggregate_only = false;
    let (r, _) = run_contract(&data, &rows).await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains("aggregate_only"), "{e}");

    // Statements other than one query are not run.
    let (r, _) = run_contract(&data, &with_query("DROP TABLE contoso", 1, &[])).await;
    assert!(matches!(r, Err(ContractRunError::Query { .. })), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dataset_that_is_not_of_the_contracts_schema_is_named() {
    let data = Datasets::new().await;
    let mut contract = with_query(
        "SELECT country, AVG(salary) AS s FROM contoso GROUP BY country",
        1,
        &[],
    );
    contract.inputs[0]
        .schema
        .iter_mut()
        .find(|c| c.name == "salary")
        .unwrap()
        .data_type = "float64".into();
    let (r, _) = run_contract(&data, &contract).await;
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("contoso") && err.contains("salary") && err.contains("float64"),
        "{err}"
    );
}

/// The records of each generated party.
fn records(party: Party) -> Vec<conclave_data::generator::Record> {
    let n = PARTIES.iter().find(|(p, _)| *p == party).unwrap().1;
    Generator::new(party, 5, n).records().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_join_contract_counts_the_shared_customers() {
    let data = Datasets::new().await;
    let contract = Contract::parse(&shipped("shared-customers")).unwrap();
    let (result, events) = run_contract(&data, &contract).await;
    let result = result.unwrap();

    // Aggregates over joins read their inputs on their own (a shared reader could wait on a
    // probe side that waits on its build side): each of the two queries reads both inputs.
    let rows = |p: Party| PARTIES.iter().find(|(q, _)| *q == p).unwrap().1;
    let both = rows(Party::Fabrikam) + rows(Party::Woodgrove);
    let last = events.last().unwrap();
    assert_eq!((last.records, last.records_total), (2 * both, 2 * both));
    // With a query without joins beside them, that one reads through the shared reader.
    let mut mixed = contract.clone();
    let mut alone = mixed.queries[0].clone();
    alone.name = "fabrikam_countries".into();
    alone.sql = "SELECT country, COUNT(*) AS records FROM fabrikam GROUP BY country".into();
    mixed.queries.push(alone);
    let (mixed_result, events) = run_contract(&data, &mixed).await;
    let mixed_result = mixed_result.unwrap();
    assert_eq!(mixed_result.queries[..2], result.queries[..]);
    let last = events.last().unwrap();
    let read = 2 * both + rows(Party::Fabrikam);
    assert_eq!((last.records, last.records_total), (read, read));

    // The same join, computed independently over the generated records: every pair of a
    // Fabrikam customer and a Woodgrove client with the same digits in their phone numbers.
    let normalise = |p: &str| -> String {
        p.chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect()
    };
    let mut salaries: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in records(Party::Woodgrove) {
        salaries
            .entry(normalise(&r.phone))
            .or_default()
            .push(r.salary);
    }
    let mut by_country: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut by_color: BTreeMap<String, u64> = BTreeMap::new();
    for r in records(Party::Fabrikam) {
        for s in salaries.get(&normalise(&r.phone)).into_iter().flatten() {
            let e = by_country.entry(r.country.clone()).or_default();
            e.0 += 1;
            e.1 += u64::from(*s);
            *by_color.entry(r.favorite_color.clone()).or_default() += 1;
        }
    }
    let matched: u64 = by_country.values().map(|(n, _)| n).sum();
    assert!(matched > 500, "only {matched} shared customers");

    let k = contract.output.k;
    let mut want: Vec<Group> = by_country
        .iter()
        .filter(|(_, (n, _))| *n >= k)
        .map(|(c, (n, sum))| Group {
            label: c.clone(),
            count: *n,
            average_salary: Some((2 * sum + n) / (2 * n)),
        })
        .collect();
    want.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
    let got = query(&result, "shared_by_country");
    assert_eq!(groups(got, &["country"]), want);
    assert_eq!(
        got.suppressed_groups,
        by_country.values().filter(|(n, _)| *n < k).count() as u64
    );
    let colors = query(&result, "shared_favorite_colors");
    let got: BTreeMap<String, u64> = colors
        .rows
        .iter()
        .map(|r| (text(r, "favorite_color"), number(r, "records")))
        .collect();
    let want: BTreeMap<String, u64> = by_color.into_iter().filter(|(_, n)| *n >= k).collect();
    assert_eq!(got, want);
}

/// `sql` over Contoso's records as a contract with differential privacy (Laplace).
fn private(sql: &str, epsilon: f64, delta: f64, bounds: &[(&str, f64, f64)]) -> Contract {
    // k = 50: with noise of scale 2, a group of one record reaches 50 with probability
    // about 1e-11, which is the δ the group selection costs.
    let mut contract = with_query(sql, 50, &[]);
    contract.output.differential_privacy = Some(conclave_contract::DifferentialPrivacy {
        mechanism: conclave_contract::Mechanism::Laplace,
        epsilon,
        delta,
        bounds: bounds
            .iter()
            .map(|(c, l, u)| (c.to_string(), [*l, *u]))
            .collect(),
    });
    contract
}

/// Checks a noisy `SELECT country, COUNT(*) AS records, SUM(salary) AS total, AVG(salary) AS
/// average_salary … GROUP BY country` (k = 50, salary bounds [0, 250000]) against the exact
/// (records, total, average) per country: counts within `count_tolerance` and at least k, sums
/// within `sum_tolerance`, averages within the bounds, some count moved, countries in order.
fn assert_noised(
    q: &QueryResult,
    exact: &BTreeMap<String, (f64, f64, f64)>,
    count_tolerance: f64,
    sum_tolerance: f64,
) {
    let mut moved = 0;
    for r in &q.rows {
        let (records, total, _) = exact[&text(r, "country")];
        let n = r["records"].as_f64().unwrap();
        assert!(
            (n - records).abs() <= count_tolerance,
            "count {n} for {records}"
        );
        assert!(n >= 50.0, "a group below k was released: {r:?}");
        let t = r["total"].as_f64().unwrap();
        assert!((t - total).abs() <= sum_tolerance, "sum {t} for {total}");
        let a = r["average_salary"].as_f64().unwrap();
        assert!((0.0..=250_000.0).contains(&a), "average {a}");
        moved += usize::from(n != records);
    }
    assert!(moved > 0, "no count was noised: {q:?}");
    let countries: Vec<String> = q.rows.iter().map(|r| text(r, "country")).collect();
    assert!(countries.is_sorted(), "{countries:?}");
}

/// The (ε, δ) a query's receipt says it spent: "…; epsilon E, delta D spent by this query".
fn spent(noise: &str) -> (f64, f64) {
    let tail = noise.rsplit_once("; epsilon ").expect(noise).1;
    let (epsilon, rest) = tail.split_once(", delta ").expect(noise);
    let delta = rest.split_once(' ').expect(noise).0;
    (epsilon.parse().unwrap(), delta.parse().unwrap())
}

/// Differential privacy: every released value is noised by OpenDP's Laplace or Gaussian
/// mechanism, groups are selected on noisy counts, and what DP cannot bound is refused before
/// anything runs.
/// (The closeness bounds below are many noise scales wide: failing them by chance has a
/// probability of about 1e-8 or less.)
#[tokio::test(flavor = "multi_thread")]
async fn differential_privacy_noises_every_released_value() {
    let data = Datasets::new().await;
    let sql = "SELECT country, COUNT(*) AS records, SUM(salary) AS total, AVG(salary) AS average_salary FROM contoso GROUP BY country";
    let exact = run_contract(&data, &with_query(sql, 10, &[]))
        .await
        .0
        .unwrap();
    let exact: BTreeMap<String, (f64, f64, f64)> = query(&exact, "q")
        .rows
        .iter()
        .map(|r| {
            (
                text(r, "country"),
                (
                    r["records"].as_f64().unwrap(),
                    r["total"].as_f64().unwrap(),
                    r["average_salary"].as_f64().unwrap(),
                ),
            )
        })
        .collect();
    assert!(exact.len() > 10, "{exact:?}");

    // ε = 2 over one aggregation of four noisy measurements (the group count, the sum, and the
    // average's sum and count): 0.5 each, so counts get scale 2 and sums 250000 / 0.5.
    let contract = private(sql, 2.0, 1e-6, &[("salary", 0.0, 250_000.0)]);
    conclave_workload::engine::check(&contract).await.unwrap();
    let noisy = run_contract(&data, &contract).await.0.unwrap();
    let q = query(&noisy, "q");
    assert!(q.noise.starts_with("laplace (OpenDP)"), "{}", q.noise);
    assert!(q.noise.contains("4 noisy measurements"), "{}", q.noise);
    let (epsilon, delta) = spent(&q.noise);
    assert!(epsilon <= 2.0 && epsilon > 1.9, "{}", q.noise);
    assert!(delta <= 1e-6, "{}", q.noise);
    assert_noised(q, &exact, 60.0, 20.0 * 500_000.0);
    for r in &q.rows {
        let (records, _, average) = exact[&text(r, "country")];
        let a = r["average_salary"].as_f64().unwrap();
        // A noisy sum over a noisy count: within 20 sum scales over the count (whose own noise,
        // within 60, moves it a little).
        if records >= 200.0 {
            let tolerance = 20.0 * 500_000.0 / (records - 60.0) + 0.5 * average;
            assert!(
                (a - average).abs() <= tolerance,
                "average {a} for {average}"
            );
        }
    }
    // Groups are kept or withheld on their noisy counts; how many were withheld is not said
    // (the number of groups is exact); the released ones come in the order of their keys
    // (assert_noised).
    let all = run_contract(&data, &with_query(sql, 1, &[]))
        .await
        .0
        .unwrap();
    assert!(q.rows.len() <= query(&all, "q").rows.len());
    assert_eq!(q.suppressed_groups, 0);

    // Without GROUP BY no δ is needed: the one group is noised and released.
    let total = private(
        "SELECT COUNT(*) AS records, AVG(salary) AS average_salary FROM contoso",
        1.0,
        0.0,
        &[("salary", 0.0, 250_000.0)],
    );
    let r = run_contract(&data, &total).await.0.unwrap();
    let row = &query(&r, "q").rows[0];
    let n = row["records"].as_f64().unwrap();
    assert!((n - 12_000.0).abs() <= 200.0, "{n}");

    // Refused before anything runs, each with what to change.
    let refused = |c: Contract| async move {
        match conclave_workload::engine::check(&c).await {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted: {:?}", c.queries),
        }
    };
    let e = refused(private(sql, 2.0, 1e-6, &[])).await;
    assert!(e.contains("needs bounds for salary"), "{e}");
    let e = refused(private(sql, 2.0, 0.0, &[("salary", 0.0, 250_000.0)])).await;
    assert!(
        e.contains("needs output.differential_privacy.delta of about"),
        "{e}"
    );
    let e = refused(private(
        "SELECT country, COUNT(*) AS records FROM contoso GROUP BY ROLLUP(country)",
        2.0,
        1e-6,
        &[],
    ))
    .await;
    assert!(e.contains("ROLLUP"), "{e}");
    let mut join = Contract::parse(&shipped("shared-customers")).unwrap();
    join.output.differential_privacy = private(sql, 2.0, 1e-6, &[("salary", 0.0, 1e6)])
        .output
        .differential_privacy;
    let e = refused(join).await;
    assert!(e.contains("a join under an aggregation"), "{e}");

    // The Gaussian mechanism: discrete Gaussian noise calibrated in zCDP and converted to
    // (ε, δ) by OpenDP. Each of the four measurements gets ε 0.5 and δ 2.5e-5: σ under 9.3 for
    // counts and under 9.3 × 250000 for sums (the bounds below are 8 σ or more). The
    // Gaussian's threshold needs more δ than the Laplace's at this k: its tail is what δ pays
    // for.
    let gaussian = |delta: f64| {
        let mut c = private(sql, 2.0, delta, &[("salary", 0.0, 250_000.0)]);
        c.output.differential_privacy.as_mut().unwrap().mechanism =
            conclave_contract::Mechanism::Gaussian;
        c
    };
    conclave_workload::engine::check(&gaussian(1e-4))
        .await
        .unwrap();
    let noisy = run_contract(&data, &gaussian(1e-4)).await.0.unwrap();
    let q = query(&noisy, "q");
    assert!(q.noise.starts_with("gaussian (OpenDP)"), "{}", q.noise);
    let (epsilon, delta) = spent(&q.noise);
    assert!(epsilon <= 2.0 && epsilon > 1.99, "{}", q.noise);
    assert!(delta <= 1e-4 && delta > 9e-5, "{}", q.noise);
    assert!(!q.rows.is_empty());
    assert_noised(q, &exact, 80.0, 2e7);
    // The threshold's own δ (one record's group passing k) must fit in its share.
    let e = refused(gaussian(1e-6)).await;
    assert!(
        e.contains("needs output.differential_privacy.delta of about"),
        "{e}"
    );
    assert!(e.contains("the contract's is 1.000e-6"), "{e}");
}

/// A run over a tampered input, or a cancelled run, releases nothing and says why, whether its
/// aggregates share readers (the demographics) or read on their own (the join): a failure in a
/// shared reader reaches every aggregate it feeds, and none waits for batches that never come.
#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_or_cancelled_run_releases_nothing() {
    let data = Datasets::new().await;
    let contracts = [
        Contract::parse(&shipped_contract()).unwrap(),
        Contract::parse(&shipped("shared-customers")).unwrap(),
    ];
    let mut clean = Vec::new();
    for contract in &contracts {
        clean.push(run_contract(&data, contract).await.0.unwrap());
    }
    let path = data
        .inputs
        .iter()
        .find(|(t, _, _)| t == "fabrikam")
        .unwrap()
        .1
        .clone();
    let original = std::fs::read(&path).unwrap();
    for (contract, clean) in contracts.iter().zip(&clean) {
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
            // A failure that did not reach every aggregate would hang the run: bounded here.
            let run = tokio::time::timeout(
                std::time::Duration::from_secs(120),
                run_contract(&data, contract),
            );
            match run.await.expect("the run ended").0 {
                Err(ContractRunError::Input { table, detail }) => {
                    assert_eq!(table, "fabrikam", "{detail}");
                    failures += 1;
                }
                Err(other) => panic!("{}: flip at {pos}: unexpected {other}", contract.name),
                // A flip in a column the contract does not read changes nothing.
                Ok(r) => assert_eq!(&r, clean, "a flip at {pos} changed a released figure"),
            }
        }
        assert!(failures >= 1, "{}: no flip was noticed", contract.name);
    }
    std::fs::write(&path, &original).unwrap();

    for contract in &contracts {
        let (cancel, watch) = tokio::sync::watch::channel(true);
        let r = run(contract, data.inputs(), Arc::new(|_| {}), watch).await;
        assert!(
            matches!(r, Err(ContractRunError::Cancelled)),
            "{}: {r:?}",
            contract.name
        );
        drop(cancel);
    }
}
