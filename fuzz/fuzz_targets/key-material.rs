#![no_main]
//! libFuzzer entry of the `key-material` target (harness: crates/conclave-fuzz).

static HARNESS: std::sync::LazyLock<conclave_fuzz::Harness> = std::sync::LazyLock::new(|| {
    conclave_fuzz::harness("key-material").expect("the key-material fixture")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS(data));
