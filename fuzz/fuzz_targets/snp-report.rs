#![no_main]
//! libFuzzer entry of the `snp-report` target (harness: crates/conclave-fuzz).

static HARNESS: std::sync::LazyLock<conclave_fuzz::Harness> = std::sync::LazyLock::new(|| {
    conclave_fuzz::harness("snp-report").expect("the snp-report fixture")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS(data));
