#![no_main]
//! libFuzzer entry of the `vault-bodies` target (harness: crates/conclave-fuzz).

static HARNESS: std::sync::LazyLock<conclave_fuzz::Harness> = std::sync::LazyLock::new(|| {
    conclave_fuzz::harness("vault-bodies").expect("the vault-bodies fixture")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS(data));
