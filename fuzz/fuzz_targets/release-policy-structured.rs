#![no_main]
//! libFuzzer entry of the `release-policy-structured` target (harness: crates/conclave-fuzz).

static HARNESS: std::sync::LazyLock<conclave_fuzz::Harness> = std::sync::LazyLock::new(|| {
    conclave_fuzz::harness("release-policy-structured")
        .expect("the release-policy-structured fixture")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS(data));
