//! Reference data for the record generator: countries with their real largest cities (weights
//! roughly proportional to population, in millions), a plausible median annual salary in US
//! dollars, phone and postal-code formats, and the naming and street conventions used there.
//! The data is `data/world.json`, embedded at build time and read once.
//!
//! Format patterns: `#` is a digit, `A` an upper-case letter, anything else is literal.

use std::collections::BTreeMap;
use std::sync::LazyLock;

/// A naming convention (its first and family names are in the data file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
pub enum Names {
    Anglo,
    German,
    French,
    Hispanic,
    Portuguese,
    Italian,
    Dutch,
    Nordic,
    Slavic,
    Greek,
    Turkish,
    Arabic,
    Hebrew,
    African,
    Indian,
    Chinese,
    Japanese,
    Korean,
    Vietnamese,
    Thai,
    Indonesian,
    Filipino,
}

/// A street-naming convention, and how an address is written there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
pub enum Streets {
    English,
    German,
    French,
    Spanish,
    Portuguese,
    Italian,
    Dutch,
    Nordic,
    Japanese,
    Chinese,
    Indian,
    Korean,
}

/// A country of the reference data.
#[derive(Debug, serde::Deserialize)]
pub struct Country {
    pub name: String,
    pub salary_usd: u32,
    /// Phone number pattern.
    pub phone: String,
    /// Postal-code pattern.
    pub postal: String,
    pub names: Names,
    pub streets: Streets,
    /// (city, weight).
    pub cities: Vec<(String, f64)>,
}

#[derive(Debug, serde::Deserialize)]
struct NamePool {
    first: Vec<String>,
    family: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct World {
    countries: Vec<Country>,
    names: BTreeMap<Names, NamePool>,
    streets: BTreeMap<Streets, Vec<String>>,
    street_suffixes: Vec<String>,
    eye_colors: Vec<(String, f64)>,
    favorite_colors: Vec<(String, f64)>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../data/world.json"))
        .expect("data/world.json is valid (a unit test reads it)")
});

/// Every country, in the data file's order (the generator's country indices refer to it).
pub fn countries() -> &'static [Country] {
    &WORLD.countries
}

/// First names and family names by naming convention.
pub fn names(pool: Names) -> (&'static [String], &'static [String]) {
    let p = &WORLD.names[&pool];
    (&p.first, &p.family)
}

/// Street names of a convention.
pub fn street_names(style: Streets) -> &'static [String] {
    &WORLD.streets[&style]
}

/// Street suffixes (English-style addresses).
pub fn street_suffixes() -> &'static [String] {
    &WORLD.street_suffixes
}

/// Eye colours with their approximate world shares.
pub fn eye_colors() -> &'static [(String, f64)] {
    &WORLD.eye_colors
}

/// Favourite colours, as surveys rank them.
pub fn favorite_colors() -> &'static [(String, f64)] {
    &WORLD.favorite_colors
}

/// An address as it is written in `style`'s countries.
pub fn address(style: Streets, street: &str, number: u32, suffix: &str, city: &str) -> String {
    match style {
        Streets::English => format!("{number} {street} {suffix}"),
        Streets::German => format!("{street}straße {number}"),
        Streets::French => format!("{number} rue {street}"),
        Streets::Spanish => format!("Calle {street} {number}"),
        Streets::Portuguese => format!("Rua {street}, {number}"),
        Streets::Italian => format!("Via {street} {number}"),
        Streets::Dutch => format!("{street}straat {number}"),
        Streets::Nordic => format!("{street} {number}"),
        Streets::Japanese => format!(
            "{street} {}-{}-{}, {city}",
            number % 9 + 1,
            number % 30 + 1,
            number % 20 + 1
        ),
        Streets::Chinese => format!("{number} {street} Road"),
        Streets::Indian => format!("{number}, {street} Road"),
        Streets::Korean => format!("{number} {street}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data file reads, and every convention a country names has its names and streets.
    #[test]
    fn the_reference_data_is_complete() {
        assert!(countries().len() >= 40);
        for c in countries() {
            assert!(!c.cities.is_empty(), "{}", c.name);
            let (first, family) = names(c.names);
            assert!(!first.is_empty() && !family.is_empty(), "{}", c.name);
            assert!(!street_names(c.streets).is_empty(), "{}", c.name);
        }
        assert!(!street_suffixes().is_empty() && !eye_colors().is_empty());
        assert!(!favorite_colors().is_empty());
    }
}
