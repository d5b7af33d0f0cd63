//! Sealed results interoperate with an independent HPKE (RFC 9180) implementation: pyhpke (PyPI,
//! built on `cryptography`), from the test venv that scripts/test makes before the Rust tests.
//! Conclave seals and pyhpke opens; pyhpke seals and Conclave opens; same suite, info and AAD.

use std::path::PathBuf;
use std::process::Command;

use conclave_contract::sealing::{self, INFO, SUITE, SealedResult};

/// pyhpke's side: `open PRIVATE_PEM INFO_HEX AAD ENC CT` prints the plaintext (hex);
/// `seal PUBLIC_PEM INFO_HEX AAD PLAINTEXT_HEX` prints `ENC CT` (base64url, unpadded).
const PYHPKE: &str = r#"
import base64, sys
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

def b64e(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")

suite = CipherSuite.new(KEMId.DHKEM_P256_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
mode, pem, info, aad = sys.argv[1], sys.argv[2].encode(), bytes.fromhex(sys.argv[3]), sys.argv[4].encode()
key = KEMKey.from_pem(pem)
if mode == "open":
    recipient = suite.create_recipient_context(b64d(sys.argv[5]), key, info=info)
    print(recipient.open(b64d(sys.argv[6]), aad=aad).hex())
else:
    enc, sender = suite.create_sender_context(key, info=info)
    print(b64e(enc), b64e(sender.seal(bytes.fromhex(sys.argv[5]), aad=aad)))
"#;

fn python() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let ok = Command::new(&venv)
        .args(["-c", "import pyhpke"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(venv)
}

fn pyhpke(python: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg("-c")
        .arg(PYHPKE)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn pyhpke_opens_what_conclave_seals_and_the_reverse() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the test venv with pyhpke (scripts/test makes .venv first)"
        );
        eprintln!("SKIPPED: no .venv with pyhpke (run scripts/test once to make it)");
        return;
    };
    let (private, public) = conclave_contract::approval::generate_key().unwrap();
    let digest = "5e".repeat(32);
    let info = hex::encode([INFO, digest.as_bytes()].concat());
    let plaintext = br#"{"queries":[{"name":"companies","rows":[{"records":3}]}]}"#;

    // Conclave seals; pyhpke opens with the receiver's PKCS#8 key.
    let sealed = sealing::seal(plaintext, "woodgrove", &public, &digest).unwrap();
    let opened = pyhpke(
        &python,
        &[
            "open",
            &private,
            &info,
            "woodgrove",
            &sealed.enc,
            &sealed.ciphertext,
        ],
    );
    assert_eq!(opened, hex::encode(plaintext));

    // pyhpke seals to the receiver's SPKI key; Conclave opens it.
    let out = pyhpke(
        &python,
        &["seal", &public, &info, "woodgrove", &hex::encode(plaintext)],
    );
    let (enc, ciphertext) = out.split_once(' ').unwrap();
    let theirs = SealedResult {
        receiver: "woodgrove".into(),
        contract_digest: digest.clone(),
        suite: SUITE.into(),
        enc: enc.into(),
        ciphertext: ciphertext.into(),
    };
    assert_eq!(
        sealing::open(&theirs, &private, &digest).unwrap(),
        plaintext
    );
    // Their envelope is bound to the same info and AAD as Conclave's own.
    assert!(sealing::open(&theirs, &private, &"00".repeat(32)).is_err());
    let relabelled = SealedResult {
        receiver: "contoso".into(),
        ..theirs
    };
    assert!(sealing::open(&relabelled, &private, &digest).is_err());
}
