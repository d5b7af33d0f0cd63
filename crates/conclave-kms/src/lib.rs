pub mod audit;
pub mod crypto;
pub mod policy;
pub mod store;
