#![no_main]
//! libFuzzer entry of the `hcl-report` target (harness: crates/conclave-fuzz).

static HARNESS: std::sync::LazyLock<conclave_fuzz::Harness> = std::sync::LazyLock::new(|| {
    conclave_fuzz::harness("hcl-report").expect("the hcl-report fixture")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS(data));
