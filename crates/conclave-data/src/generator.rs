//! A deterministic generator of synthetic party records with realistic distributions: each party
//! has its own mix of countries (an employer's offices, a retailer's customers, a bank's
//! clients), cities weighted by population, ages and salaries shaped by country and age. The same
//! party, seed and count always give the same records, on any machine.

use std::sync::Arc;

use arrow_array::builder::{StringBuilder, StringDictionaryBuilder, UInt8Builder, UInt32Builder};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::world::{self, Country};

/// The three parties of the story.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Party {
    /// An employer: its staff, in its offices' countries.
    Contoso,
    /// A fashion retailer: its customers, worldwide.
    Fabrikam,
    /// A bank: its retail clients, mostly in Europe and North America.
    Woodgrove,
}

impl std::str::FromStr for Party {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "contoso" => Ok(Party::Contoso),
            "fabrikam" => Ok(Party::Fabrikam),
            "woodgrove" => Ok(Party::Woodgrove),
            other => Err(format!(
                "unknown party {other:?}: use contoso, fabrikam or woodgrove"
            )),
        }
    }
}

impl Party {
    pub fn name(self) -> &'static str {
        match self {
            Party::Contoso => "contoso",
            Party::Fabrikam => "fabrikam",
            Party::Woodgrove => "woodgrove",
        }
    }

    /// Country weights for this party.
    fn country_weights(self) -> Vec<(usize, f64)> {
        let table: &[(&str, f64)] = match self {
            Party::Contoso => &[
                ("United States", 35.0),
                ("India", 18.0),
                ("United Kingdom", 8.0),
                ("Germany", 6.0),
                ("Canada", 5.0),
                ("China", 5.0),
                ("Ireland", 4.0),
                ("Japan", 3.0),
                ("Brazil", 3.0),
                ("Australia", 3.0),
                ("Netherlands", 2.0),
                ("Singapore", 2.0),
                ("Israel", 2.0),
                ("Poland", 2.0),
                ("France", 2.0),
                ("Spain", 1.0),
                ("Sweden", 1.0),
                ("South Korea", 1.0),
                ("Mexico", 1.0),
            ],
            Party::Fabrikam => &[
                ("United States", 20.0),
                ("United Kingdom", 8.0),
                ("Germany", 7.0),
                ("France", 7.0),
                ("Italy", 6.0),
                ("Spain", 5.0),
                ("Brazil", 5.0),
                ("Mexico", 4.0),
                ("Japan", 4.0),
                ("Canada", 4.0),
                ("Australia", 3.0),
                ("Poland", 3.0),
                ("South Korea", 3.0),
                ("China", 3.0),
                ("India", 3.0),
                ("Netherlands", 2.0),
                ("Sweden", 2.0),
                ("Turkey", 2.0),
                ("Belgium", 1.5),
                ("Switzerland", 1.5),
                ("Austria", 1.0),
                ("Portugal", 1.0),
                ("Ireland", 1.0),
                ("Denmark", 1.0),
                ("Norway", 1.0),
                ("Argentina", 1.0),
                ("Chile", 1.0),
                ("Colombia", 1.0),
                ("South Africa", 1.0),
                ("Philippines", 1.0),
                ("Thailand", 1.0),
                ("Indonesia", 1.0),
                ("Finland", 0.8),
                ("Nigeria", 0.8),
                ("Vietnam", 0.8),
                ("Czechia", 0.8),
                ("Greece", 0.8),
                ("Romania", 0.8),
                ("Egypt", 0.6),
                ("Israel", 0.6),
                ("New Zealand", 0.6),
                ("Singapore", 0.6),
                ("Kenya", 0.4),
            ],
            Party::Woodgrove => &[
                ("United States", 30.0),
                ("United Kingdom", 12.0),
                ("Canada", 10.0),
                ("Germany", 6.0),
                ("France", 5.0),
                ("Switzerland", 4.0),
                ("Ireland", 3.0),
                ("Netherlands", 3.0),
                ("Spain", 3.0),
                ("Italy", 3.0),
                ("Australia", 3.0),
                ("Belgium", 2.0),
                ("Austria", 2.0),
                ("Sweden", 2.0),
                ("Norway", 2.0),
                ("Denmark", 2.0),
                ("Poland", 2.0),
                ("Mexico", 2.0),
                ("Finland", 1.0),
                ("Portugal", 1.0),
                ("New Zealand", 1.0),
                ("Singapore", 1.0),
                ("Japan", 1.0),
            ],
        };
        table
            .iter()
            .map(|(name, w)| {
                (
                    world::countries()
                        .iter()
                        .position(|c| c.name == *name)
                        .expect("country in the world table"),
                    *w,
                )
            })
            .collect()
    }

    /// Mean and standard deviation of ages, and the allowed range.
    fn ages(self) -> (f64, f64, u8, u8) {
        match self {
            Party::Contoso => (38.0, 10.0, 21, 67),
            Party::Fabrikam => (35.0, 13.0, 18, 80),
            Party::Woodgrove => (47.0, 16.0, 18, 80),
        }
    }

    /// The share of this party's records that are customers of both Fabrikam and Woodgrove.
    pub fn shared_rate(self) -> f64 {
        match self {
            Party::Contoso => 0.0,
            Party::Fabrikam => 0.3,
            Party::Woodgrove => 0.25,
        }
    }

    /// Pay relative to the country median (an employer in tech pays above it).
    fn salary_factor(self) -> f64 {
        match self {
            Party::Contoso => 1.4,
            Party::Fabrikam => 1.0,
            Party::Woodgrove => 1.1,
        }
    }
}

/// SplitMix64: small, fast, and its output is fixed by its definition, so generated data does
/// not change when a dependency changes its generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Cumulative weights for sampling.
#[derive(Debug, Clone)]
struct Weighted(Vec<f64>);

impl Weighted {
    fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut acc = 0.0;
        Weighted(
            weights
                .into_iter()
                .map(|w| {
                    acc += w;
                    acc
                })
                .collect(),
        )
    }
    fn pick(&self, rng: &mut SplitMix64) -> usize {
        let x = rng.unit() * self.0.last().copied().unwrap_or(0.0);
        self.0.partition_point(|&c| c <= x).min(self.0.len() - 1)
    }
}

fn fill(pattern: &str, rng: &mut SplitMix64) -> String {
    pattern
        .chars()
        .map(|c| match c {
            '#' => char::from(b'0' + rng.below(10) as u8),
            'A' => char::from(b'A' + rng.below(26) as u8),
            other => other,
        })
        .collect()
}

/// One record, as the original demo's JSON records had it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub name: String,
    pub phone: String,
    pub age: u8,
    /// Annual salary in US dollars.
    pub salary: u32,
    pub eye_color: String,
    pub favorite_color: String,
    pub address: String,
    pub postal_code: String,
    pub city: String,
    pub country: String,
}

/// The Arrow schema of a batch of records. Low-cardinality columns are dictionary-encoded, so
/// analyses can group on dictionary indices.
pub fn schema() -> SchemaRef {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("phone", DataType::Utf8, false),
        Field::new("age", DataType::UInt8, false),
        Field::new("salary", DataType::UInt32, false),
        Field::new("eye_color", dict(), false),
        Field::new("favorite_color", dict(), false),
        Field::new("address", DataType::Utf8, false),
        Field::new("postal_code", DataType::Utf8, false),
        Field::new("city", dict(), false),
        Field::new("country", dict(), false),
    ]))
}

/// Where a party's people come from: its countries (with weights), their cities, and its age
/// distribution.
struct People {
    countries: Vec<usize>,
    country_pick: Weighted,
    city_picks: Vec<Weighted>,
    ages: (f64, f64, u8, u8),
}

/// Who a record is about; the rest of a record (salary, colours) is the party's own.
struct Person {
    name: String,
    phone: String,
    age: u8,
    address: String,
    postal_code: String,
    city: String,
    country: &'static Country,
}

impl People {
    fn of(party: Party) -> Self {
        let weights = party.country_weights();
        let countries: Vec<usize> = weights.iter().map(|(i, _)| *i).collect();
        let city_picks = countries
            .iter()
            .map(|&i| Weighted::new(world::countries()[i].cities.iter().map(|(_, w)| *w)))
            .collect();
        People {
            country_pick: Weighted::new(weights.iter().map(|(_, w)| *w)),
            countries,
            city_picks,
            ages: party.ages(),
        }
    }

    fn person(&self, rng: &mut SplitMix64) -> Person {
        let ci = self.country_pick.pick(rng);
        let country: &'static Country = &world::countries()[self.countries[ci]];
        let city = country.cities[self.city_picks[ci].pick(rng)].0.as_str();
        let (first, last) = world::names(country.names);
        let name = format!(
            "{} {}",
            first[rng.below(first.len())],
            last[rng.below(last.len())]
        );
        let (mean, sd, lo, hi) = self.ages;
        let age = (mean + sd * rng.normal())
            .round()
            .clamp(f64::from(lo), f64::from(hi)) as u8;
        let streets = world::street_names(country.streets);
        let suffix = &world::street_suffixes()[rng.below(world::street_suffixes().len())];
        let address = world::address(
            country.streets,
            &streets[rng.below(streets.len())],
            1 + rng.below(250) as u32,
            suffix,
            city,
        );
        Person {
            name,
            phone: fill(&country.phone, rng),
            age,
            address,
            postal_code: fill(&country.postal, rng),
            city: city.to_string(),
            country,
        }
    }
}

/// The salt of the stream of people who are customers of both Fabrikam and Woodgrove.
const SHARED_SALT: u64 = 0x5_4A7E_D0C5;

/// Generates records for one party.
///
/// Fabrikam and Woodgrove share customers: a share of each one's records (see
/// [`Party::shared_rate`]) are people drawn, in order, from one common stream, so that the
/// first shared people of both datasets are the same persons (name, phone, address, city,
/// country, age), with each party's own salary and colours. Woodgrove, a bank, keeps phone
/// numbers in E.164 form (`+15551234567`); the others as people write them, so matching them
/// needs normalising.
pub struct Generator {
    party: Party,
    rng: SplitMix64,
    own: People,
    shared: People,
    shared_rng: SplitMix64,
    eye_pick: Weighted,
    color_pick: Weighted,
    remaining: u64,
}

impl Generator {
    pub fn new(party: Party, seed: u64, count: u64) -> Self {
        // Each party's stream differs even with the same seed.
        let party_salt = match party {
            Party::Contoso => 0xC0_7705,
            Party::Fabrikam => 0xFAB_81CA,
            Party::Woodgrove => 0x900D_6807,
        };
        Generator {
            party,
            rng: SplitMix64::new(seed ^ party_salt),
            own: People::of(party),
            shared: People::of(Party::Woodgrove),
            shared_rng: SplitMix64::new(seed ^ SHARED_SALT),
            eye_pick: Weighted::new(world::eye_colors().iter().map(|(_, w)| *w)),
            color_pick: Weighted::new(world::favorite_colors().iter().map(|(_, w)| *w)),
            remaining: count,
        }
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    fn record(&mut self) -> Record {
        let rate = self.party.shared_rate();
        let person = if rate > 0.0 && self.rng.unit() < rate {
            self.shared.person(&mut self.shared_rng)
        } else {
            self.own.person(&mut self.rng)
        };
        let rng = &mut self.rng;
        // Pay grows over the first thirty working years, varies log-normally around the median.
        let experience = (f64::from(person.age) - 18.0).clamp(0.0, 30.0) / 30.0;
        let salary = f64::from(person.country.salary_usd)
            * self.party.salary_factor()
            * (0.6 + 0.6 * experience)
            * (0.45 * rng.normal()).exp();
        let salary = ((salary / 100.0).round() * 100.0).max(100.0) as u32;
        let phone = match self.party {
            Party::Woodgrove => person
                .phone
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect(),
            _ => person.phone,
        };
        Record {
            name: person.name,
            phone,
            age: person.age,
            salary,
            eye_color: world::eye_colors()[self.eye_pick.pick(rng)].0.to_string(),
            favorite_color: world::favorite_colors()[self.color_pick.pick(rng)]
                .0
                .to_string(),
            address: person.address,
            postal_code: person.postal_code,
            city: person.city,
            country: person.country.name.to_string(),
        }
    }

    /// The next batch of up to `max` records, or `None` when done.
    pub fn next_batch(&mut self, max: usize) -> Option<RecordBatch> {
        let n = self.remaining.min(max as u64) as usize;
        if n == 0 {
            return None;
        }
        self.remaining -= n as u64;
        let mut name = StringBuilder::with_capacity(n, n * 14);
        let mut phone = StringBuilder::with_capacity(n, n * 16);
        let mut age = UInt8Builder::with_capacity(n);
        let mut salary = UInt32Builder::with_capacity(n);
        let mut eye = StringDictionaryBuilder::<Int32Type>::new();
        let mut color = StringDictionaryBuilder::<Int32Type>::new();
        let mut address = StringBuilder::with_capacity(n, n * 20);
        let mut postal = StringBuilder::with_capacity(n, n * 7);
        let mut city = StringDictionaryBuilder::<Int32Type>::new();
        let mut country = StringDictionaryBuilder::<Int32Type>::new();
        for _ in 0..n {
            let r = self.record();
            name.append_value(&r.name);
            phone.append_value(&r.phone);
            age.append_value(r.age);
            salary.append_value(r.salary);
            eye.append_value(&r.eye_color);
            color.append_value(&r.favorite_color);
            address.append_value(&r.address);
            postal.append_value(&r.postal_code);
            city.append_value(&r.city);
            country.append_value(&r.country);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(name.finish()),
            Arc::new(phone.finish()),
            Arc::new(age.finish()),
            Arc::new(salary.finish()),
            Arc::new(eye.finish()),
            Arc::new(color.finish()),
            Arc::new(address.finish()),
            Arc::new(postal.finish()),
            Arc::new(city.finish()),
            Arc::new(country.finish()),
        ];
        Some(RecordBatch::try_new(schema(), columns).expect("columns match the schema"))
    }

    /// Records one by one (for tests and small exports).
    pub fn records(mut self) -> impl Iterator<Item = Record> {
        std::iter::from_fn(move || {
            if self.remaining == 0 {
                return None;
            }
            self.remaining -= 1;
            Some(self.record())
        })
    }
}

/// Reads a string column whether it is plain or dictionary-encoded.
pub fn string_column(col: &arrow_array::ArrayRef) -> Option<Box<dyn Fn(usize) -> String + '_>> {
    use arrow_array::cast::AsArray as _;
    match col.data_type() {
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            Some(Box::new(move |i| a.value(i).to_string()))
        }
        DataType::LargeUtf8 => {
            let a = col.as_string::<i64>();
            Some(Box::new(move |i| a.value(i).to_string()))
        }
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            let d = col.as_dictionary::<Int32Type>();
            let values = d.values().as_string::<i32>();
            let keys = d.keys();
            Some(Box::new(move |i| {
                values.value(keys.value(i) as usize).to_string()
            }))
        }
        _ => None,
    }
}

/// Turns a batch (in this crate's schema, or as PyArrow writes it) back into records.
pub fn records_from_batch(batch: &RecordBatch) -> Result<Vec<Record>, String> {
    use arrow_array::cast::AsArray as _;
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| format!("no column {name}"))
    };
    let text = |name: &str| -> Result<Box<dyn Fn(usize) -> String + '_>, String> {
        string_column(col(name)?).ok_or_else(|| format!("column {name} is not text"))
    };
    let int = |name: &str| -> Result<Box<dyn Fn(usize) -> u64 + '_>, String> {
        let c = col(name)?;
        Ok(match c.data_type() {
            DataType::UInt8 => {
                let a = c.as_primitive::<arrow_array::types::UInt8Type>();
                Box::new(move |i| u64::from(a.value(i)))
            }
            DataType::UInt32 => {
                let a = c.as_primitive::<arrow_array::types::UInt32Type>();
                Box::new(move |i| u64::from(a.value(i)))
            }
            DataType::Int32 => {
                let a = c.as_primitive::<arrow_array::types::Int32Type>();
                Box::new(move |i| a.value(i).max(0) as u64)
            }
            DataType::Int64 => {
                let a = c.as_primitive::<arrow_array::types::Int64Type>();
                Box::new(move |i| a.value(i).max(0) as u64)
            }
            other => {
                return Err(format!(
                    "column {name} has type {other}, expected an integer"
                ));
            }
        })
    };
    let (name, phone, address, postal, eye, color, city, country) = (
        text("name")?,
        text("phone")?,
        text("address")?,
        text("postal_code")?,
        text("eye_color")?,
        text("favorite_color")?,
        text("city")?,
        text("country")?,
    );
    let (age, salary) = (int("age")?, int("salary")?);
    Ok((0..batch.num_rows())
        .map(|i| Record {
            name: name(i),
            phone: phone(i),
            age: age(i).min(255) as u8,
            salary: salary(i).min(u64::from(u32::MAX)) as u32,
            eye_color: eye(i),
            favorite_color: color(i),
            address: address(i),
            postal_code: postal(i),
            city: city(i),
            country: country(i),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_party_specific() {
        let a: Vec<_> = Generator::new(Party::Contoso, 7, 50).records().collect();
        let b: Vec<_> = Generator::new(Party::Contoso, 7, 50).records().collect();
        assert_eq!(a, b);
        let c: Vec<_> = Generator::new(Party::Fabrikam, 7, 50).records().collect();
        assert_ne!(a, c);
        let d: Vec<_> = Generator::new(Party::Contoso, 8, 50).records().collect();
        assert_ne!(a, d);
    }

    #[test]
    fn batches_equal_records() {
        let records: Vec<_> = Generator::new(Party::Woodgrove, 1, 300).records().collect();
        let mut g = Generator::new(Party::Woodgrove, 1, 300);
        let mut n = 0;
        while let Some(batch) = g.next_batch(128) {
            let names = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .unwrap();
            for i in 0..batch.num_rows() {
                assert_eq!(names.value(i), records[n].name);
                n += 1;
            }
        }
        assert_eq!(n, 300);
    }

    #[test]
    fn distributions_are_plausible() {
        let records: Vec<_> = Generator::new(Party::Fabrikam, 42, 20_000)
            .records()
            .collect();
        assert!(records.iter().all(|r| (18..=80).contains(&r.age)));
        let countries: std::collections::BTreeSet<_> =
            records.iter().map(|r| r.country.as_str()).collect();
        assert!(
            countries.len() >= 30,
            "a retailer's customers come from {} countries",
            countries.len()
        );
        let us = records
            .iter()
            .filter(|r| r.country == "United States")
            .count() as f64
            / records.len() as f64;
        assert!((0.15..0.25).contains(&us), "US share {us}");
        // Cities belong to their country.
        for r in records.iter().take(500) {
            let c = world::countries()
                .iter()
                .find(|c| c.name == r.country)
                .unwrap();
            assert!(
                c.cities.iter().any(|(name, _)| *name == r.city),
                "{} is not in {}",
                r.city,
                r.country
            );
        }
        let brown =
            records.iter().filter(|r| r.eye_color == "brown").count() as f64 / records.len() as f64;
        assert!((0.5..0.6).contains(&brown), "brown eyes {brown}");
        let us_pay: Vec<u32> = records
            .iter()
            .filter(|r| r.country == "United States")
            .map(|r| r.salary)
            .collect();
        let in_pay: Vec<u32> = records
            .iter()
            .filter(|r| r.country == "India")
            .map(|r| r.salary)
            .collect();
        let mean = |v: &[u32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!(mean(&us_pay) > 4.0 * mean(&in_pay));
        let contoso: Vec<_> = Generator::new(Party::Contoso, 42, 5000).records().collect();
        assert!(
            contoso.iter().all(|r| (21..=67).contains(&r.age)),
            "employees are of working age"
        );
        assert!(
            records
                .iter()
                .take(100)
                .all(|r| r.phone.starts_with('+') && !r.postal_code.contains('#'))
        );
    }
}
