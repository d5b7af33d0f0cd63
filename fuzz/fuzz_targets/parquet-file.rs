#![no_main]
//! libFuzzer entry of the `parquet-file` target (harness: crates/conclave-fuzz).

static HARNESS: std::sync::LazyLock<conclave_fuzz::Harness> = std::sync::LazyLock::new(|| {
    conclave_fuzz::harness("parquet-file").expect("the parquet-file fixture")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS(data));
