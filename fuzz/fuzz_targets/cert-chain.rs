#![no_main]
//! libFuzzer entry of the `cert-chain` target (harness: crates/conclave-fuzz).

static HARNESS: std::sync::LazyLock<conclave_fuzz::Harness> = std::sync::LazyLock::new(|| {
    conclave_fuzz::harness("cert-chain").expect("the cert-chain fixture")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS(data));
