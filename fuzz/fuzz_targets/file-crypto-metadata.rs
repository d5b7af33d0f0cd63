#![no_main]
//! libFuzzer entry of the `file-crypto-metadata` target (harness: crates/conclave-fuzz).

static HARNESS: std::sync::LazyLock<conclave_fuzz::Harness> = std::sync::LazyLock::new(|| {
    conclave_fuzz::harness("file-crypto-metadata").expect("the file-crypto-metadata fixture")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS(data));
