//! The partner analysis: cross-company demographics computed inside the TEE, released only as
//! aggregates over groups of at least `k` records.
//!
//! Aggregation is dictionary-aware: low-cardinality columns (country, city, colours) are grouped
//! on their dictionary indices per batch, and only the per-batch totals are folded into maps by
//! label. Partial aggregates merge, so row groups can be aggregated in parallel.

use std::collections::{BTreeMap, HashMap};

use arrow_array::cast::AsArray as _;
use arrow_array::types::{Int32Type, UInt8Type, UInt32Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;

/// Generations by birth year (DESIGN.md).
pub const GENERATIONS: [(&str, i32, i32); 6] = [
    ("Gen Alpha", 2013, i32::MAX),
    ("Gen Z", 1997, 2012),
    ("Millennials", 1981, 1996),
    ("Gen X", 1965, 1980),
    ("Baby Boomers", 1946, 1964),
    ("Silent", i32::MIN, 1945),
];

pub fn generation(birth_year: i32) -> &'static str {
    GENERATIONS[generation_index(birth_year)].0
}

/// The index into [`GENERATIONS`] of a birth year (the ranges are contiguous and descending).
pub fn generation_index(birth_year: i32) -> usize {
    GENERATIONS
        .iter()
        .position(|(_, lo, _)| birth_year >= *lo)
        .unwrap_or(GENERATIONS.len() - 1)
}

/// Count and salary sum of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub count: u64,
    pub salary_sum: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.count += other.count;
        self.salary_sum += other.salary_sum;
    }
}

/// Running aggregates of one company's records (mergeable).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompanyAggregate {
    pub records: u64,
    pub salary_sum: u64,
    pub by_country: HashMap<String, Tally>,
    pub by_city: HashMap<(String, String), u64>,
    /// Indexed like [`GENERATIONS`].
    pub by_generation: [Tally; 6],
    pub eye_colors: HashMap<String, u64>,
    pub favorite_colors: HashMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("the dataset does not have the record schema: {0}")]
pub struct SchemaError(String);

/// A text column grouped by small integer codes: dictionary keys, or codes assigned on the fly
/// for plain strings.
struct Codes {
    codes: Vec<u32>,
    labels: Vec<String>,
}

fn codes(col: &ArrayRef, name: &str) -> Result<Codes, SchemaError> {
    match col.data_type() {
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            let d = col.as_dictionary::<Int32Type>();
            let values = d.values().as_string::<i32>();
            Ok(Codes {
                codes: d.keys().values().iter().map(|&k| k as u32).collect(),
                labels: (0..values.len())
                    .map(|i| values.value(i).to_string())
                    .collect(),
            })
        }
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            let mut index: HashMap<&str, u32> = HashMap::new();
            let mut labels = Vec::new();
            let codes = (0..a.len())
                .map(|i| {
                    *index.entry(a.value(i)).or_insert_with(|| {
                        labels.push(a.value(i).to_string());
                        labels.len() as u32 - 1
                    })
                })
                .collect();
            Ok(Codes { codes, labels })
        }
        other => Err(SchemaError(format!(
            "column {name} is {other}, expected text"
        ))),
    }
}

fn ints(col: &ArrayRef, name: &str) -> Result<Vec<u64>, SchemaError> {
    Ok(match col.data_type() {
        DataType::UInt8 => col
            .as_primitive::<UInt8Type>()
            .values()
            .iter()
            .map(|&v| u64::from(v))
            .collect(),
        DataType::UInt32 => col
            .as_primitive::<UInt32Type>()
            .values()
            .iter()
            .map(|&v| u64::from(v))
            .collect(),
        DataType::Int32 => col
            .as_primitive::<Int32Type>()
            .values()
            .iter()
            .map(|&v| v.max(0) as u64)
            .collect(),
        DataType::Int64 => col
            .as_primitive::<arrow_array::types::Int64Type>()
            .values()
            .iter()
            .map(|&v| v.max(0) as u64)
            .collect(),
        other => {
            return Err(SchemaError(format!(
                "column {name} is {other}, expected an integer"
            )));
        }
    })
}

/// The columns the analysis reads (the others are never decoded).
pub const COLUMNS: [&str; 6] = [
    "age",
    "salary",
    "eye_color",
    "favorite_color",
    "city",
    "country",
];

impl CompanyAggregate {
    /// Adds one batch.
    pub fn add_batch(
        &mut self,
        batch: &RecordBatch,
        reference_year: i32,
    ) -> Result<(), SchemaError> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| SchemaError(format!("no column {name}")))
        };
        let age = ints(col("age")?, "age")?;
        let salary = ints(col("salary")?, "salary")?;
        let country = codes(col("country")?, "country")?;
        let city = codes(col("city")?, "city")?;
        let eye = codes(col("eye_color")?, "eye_color")?;
        let color = codes(col("favorite_color")?, "favorite_color")?;
        if batch.columns().iter().any(|c| c.null_count() > 0) {
            return Err(SchemaError("null values are not allowed in records".into()));
        }

        let n = batch.num_rows();
        let mut country_t = vec![Tally::default(); country.labels.len()];
        let mut eye_c = vec![0u64; eye.labels.len()];
        let mut color_c = vec![0u64; color.labels.len()];
        // (country, city) pairs: a dense table over both dictionaries when it is small (the usual
        // case: tens of countries, hundreds of cities), a map otherwise.
        let cities = city.labels.len();
        let dense = country.labels.len().saturating_mul(cities) <= 1 << 20;
        let mut pair_t = vec![
            0u64;
            if dense {
                country.labels.len() * cities
            } else {
                0
            }
        ];
        let mut pair_map: HashMap<(u32, u32), u64> = HashMap::new();
        let mut generation_t = [Tally::default(); GENERATIONS.len()];
        for i in 0..n {
            let (c, s) = (country.codes[i] as usize, salary[i]);
            country_t[c].count += 1;
            country_t[c].salary_sum += s;
            if dense {
                pair_t[c * cities + city.codes[i] as usize] += 1;
            } else {
                *pair_map
                    .entry((country.codes[i], city.codes[i]))
                    .or_default() += 1;
            }
            eye_c[eye.codes[i] as usize] += 1;
            color_c[color.codes[i] as usize] += 1;
            let g = generation_index(reference_year - age[i] as i32);
            generation_t[g].count += 1;
            generation_t[g].salary_sum += s;
        }
        let city_pairs = pair_t
            .into_iter()
            .enumerate()
            .filter(|(_, n)| *n > 0)
            .map(|(i, n)| (((i / cities.max(1)) as u32, (i % cities.max(1)) as u32), n))
            .chain(pair_map);
        for (mine, t) in self.by_generation.iter_mut().zip(generation_t) {
            mine.add(t);
            self.salary_sum += t.salary_sum;
        }
        self.records += n as u64;
        for (code, t) in country_t
            .into_iter()
            .enumerate()
            .filter(|(_, t)| t.count > 0)
        {
            self.by_country
                .entry(country.labels[code].clone())
                .or_default()
                .add(t);
        }
        for ((co, ci), n) in city_pairs {
            *self
                .by_city
                .entry((
                    country.labels[co as usize].clone(),
                    city.labels[ci as usize].clone(),
                ))
                .or_default() += n;
        }
        for (code, n) in eye_c.into_iter().enumerate().filter(|(_, n)| *n > 0) {
            *self.eye_colors.entry(eye.labels[code].clone()).or_default() += n;
        }
        for (code, n) in color_c.into_iter().enumerate().filter(|(_, n)| *n > 0) {
            *self
                .favorite_colors
                .entry(color.labels[code].clone())
                .or_default() += n;
        }
        Ok(())
    }

    /// Folds another partial aggregate of the same company into this one.
    pub fn merge(&mut self, other: CompanyAggregate) {
        self.records += other.records;
        self.salary_sum += other.salary_sum;
        for (k, t) in other.by_country {
            self.by_country.entry(k).or_default().add(t);
        }
        for (k, n) in other.by_city {
            *self.by_city.entry(k).or_default() += n;
        }
        for (mine, theirs) in self.by_generation.iter_mut().zip(other.by_generation) {
            mine.add(theirs);
        }
        for (k, n) in other.eye_colors {
            *self.eye_colors.entry(k).or_default() += n;
        }
        for (k, n) in other.favorite_colors {
            *self.favorite_colors.entry(k).or_default() += n;
        }
    }
}

/// One released group.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub label: String,
    pub count: u64,
    /// Average annual salary (USD), rounded to a dollar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_salary: Option<u64>,
}

/// A table of groups, with how many groups were withheld for having fewer than `k` records.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Table {
    pub groups: Vec<Group>,
    pub suppressed_groups: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CountryRow {
    pub country: String,
    pub count: u64,
    pub top_cities: Table,
}

/// What leaves the TEE.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnalysisResult {
    pub k: u64,
    pub reference_year: i32,
    pub total_records: u64,
    /// Top 10 countries over all companies, each with its top 3 cities.
    pub top_countries: Vec<CountryRow>,
    pub top_countries_suppressed: u64,
    /// Per company: records, generations, average salary.
    pub companies: BTreeMap<String, CompanyResult>,
    /// Average salary by country, all companies together.
    pub salary_by_country: Table,
    /// Average salary by generation, all companies together.
    pub salary_by_generation: Table,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CompanyResult {
    pub records: u64,
    pub average_salary: Option<u64>,
    pub generations: Table,
    pub eye_colors: Table,
    pub favorite_colors: Table,
}

fn avg(t: Tally) -> Option<u64> {
    // Exact integer rounding, half up.
    (t.count > 0).then(|| (2 * t.salary_sum + t.count) / (2 * t.count))
}

/// Releases groups of at least `k`, ordered by count (then label); counts the rest.
fn table(
    groups: impl IntoIterator<Item = (String, Tally)>,
    k: u64,
    with_salary: bool,
    limit: Option<usize>,
) -> Table {
    let mut all: Vec<(String, Tally)> = groups.into_iter().filter(|(_, t)| t.count > 0).collect();
    all.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
    let suppressed = all.iter().filter(|(_, t)| t.count < k).count() as u64;
    let mut groups: Vec<Group> = all
        .into_iter()
        .filter(|(_, t)| t.count >= k)
        .map(|(label, t)| Group {
            label,
            count: t.count,
            average_salary: if with_salary { avg(t) } else { None },
        })
        .collect();
    if let Some(l) = limit {
        groups.truncate(l);
    }
    Table {
        groups,
        suppressed_groups: suppressed,
    }
}

fn counts(m: &HashMap<String, u64>) -> impl Iterator<Item = (String, Tally)> + '_ {
    m.iter().map(|(k, &n)| {
        (
            k.clone(),
            Tally {
                count: n,
                salary_sum: 0,
            },
        )
    })
}

/// Turns per-company aggregates into the released result.
pub fn finish(
    companies: &BTreeMap<String, CompanyAggregate>,
    k: u64,
    reference_year: i32,
) -> AnalysisResult {
    let k = k.max(1);
    let mut by_country: HashMap<String, Tally> = HashMap::new();
    let mut by_city: HashMap<(String, String), u64> = HashMap::new();
    let mut by_generation = [Tally::default(); 6];
    for agg in companies.values() {
        for (c, t) in &agg.by_country {
            by_country.entry(c.clone()).or_default().add(*t);
        }
        for (pair, n) in &agg.by_city {
            *by_city.entry(pair.clone()).or_default() += n;
        }
        for (mine, theirs) in by_generation.iter_mut().zip(agg.by_generation) {
            mine.add(theirs);
        }
    }
    let countries = table(by_country.clone(), k, false, None);
    let top_countries = countries
        .groups
        .iter()
        .take(10)
        .map(|g| CountryRow {
            country: g.label.clone(),
            count: g.count,
            top_cities: table(
                by_city
                    .iter()
                    .filter(|((c, _), _)| *c == g.label)
                    .map(|((_, city), &n)| {
                        (
                            city.clone(),
                            Tally {
                                count: n,
                                salary_sum: 0,
                            },
                        )
                    }),
                k,
                false,
                Some(3),
            ),
        })
        .collect();
    let gen_groups = |g: &[Tally; 6]| {
        GENERATIONS
            .iter()
            .zip(g)
            .map(|((name, _, _), t)| (name.to_string(), *t))
            .collect::<Vec<_>>()
    };
    AnalysisResult {
        k,
        reference_year,
        total_records: companies.values().map(|a| a.records).sum(),
        top_countries,
        top_countries_suppressed: countries.suppressed_groups,
        companies: companies
            .iter()
            .map(|(name, a)| {
                let total = Tally {
                    count: a.records,
                    salary_sum: a.salary_sum,
                };
                (
                    name.clone(),
                    CompanyResult {
                        records: a.records,
                        average_salary: if a.records >= k { avg(total) } else { None },
                        generations: table(gen_groups(&a.by_generation), k, true, None),
                        eye_colors: table(counts(&a.eye_colors), k, false, None),
                        favorite_colors: table(counts(&a.favorite_colors), k, false, None),
                    },
                )
            })
            .collect(),
        salary_by_country: table(by_country, k, true, None),
        salary_by_generation: table(gen_groups(&by_generation), k, true, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_cut_offs() {
        assert_eq!(generation(2013), "Gen Alpha");
        assert_eq!(generation(2012), "Gen Z");
        assert_eq!(generation(1997), "Gen Z");
        assert_eq!(generation(1996), "Millennials");
        assert_eq!(generation(1981), "Millennials");
        assert_eq!(generation(1980), "Gen X");
        assert_eq!(generation(1965), "Gen X");
        assert_eq!(generation(1964), "Baby Boomers");
        assert_eq!(generation(1946), "Baby Boomers");
        assert_eq!(generation(1945), "Silent");
    }

    #[test]
    fn small_groups_are_suppressed_not_dropped() {
        let t = table(
            [
                (
                    "a".to_string(),
                    Tally {
                        count: 10,
                        salary_sum: 100,
                    },
                ),
                (
                    "b".to_string(),
                    Tally {
                        count: 2,
                        salary_sum: 50,
                    },
                ),
            ],
            5,
            true,
            None,
        );
        assert_eq!(t.groups.len(), 1);
        assert_eq!(t.groups[0].average_salary, Some(10));
        assert_eq!(t.suppressed_groups, 1);
    }
}
