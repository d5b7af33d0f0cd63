#![no_main]
//! libFuzzer entry of the `attest-request` target (harness: crates/conclave-fuzz).

static HARNESS: std::sync::LazyLock<conclave_fuzz::Harness> = std::sync::LazyLock::new(|| {
    conclave_fuzz::harness("attest-request").expect("the attest-request fixture")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS(data));
