//! Encrypted datasets: the record generator, Parquet modular encryption under vault keys,
//! object stores.

#![forbid(unsafe_code)]

pub mod dataset;
pub mod generator;
pub mod rewrap;
pub mod store;
pub mod world;
