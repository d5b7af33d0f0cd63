//! The guest side of the vTPM quote against a real TPM 2.0 implementation: swtpm (libtpms),
//! provisioned with tpm2-tools as Azure provisions its vTPM (an RSA attestation key persisted at
//! 0x81000003). The quote the guest code makes verifies with the verifier the attestation
//! service uses, for its nonce and PCRs. `scripts/test` installs swtpm and tpm2-tools.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use conclave_attest::vtpm::{QuoteError, TpmQuote, verify_quote};
use conclave_tee::azure::{AK_HANDLE, Tpm, read_quote};

struct Swtpm {
    child: Child,
    port: u16,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port below the ephemeral range, with the next one free too (swtpm's control channel).
fn free_port_pair() -> u16 {
    for port in (20_000u16..30_000)
        .step_by(7)
        .skip((std::process::id() % 1000) as usize)
    {
        let a = std::net::TcpListener::bind(("127.0.0.1", port));
        let b = std::net::TcpListener::bind(("127.0.0.1", port + 1));
        if a.is_ok() && b.is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

fn tool(dir: &Path, port: u16, args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env(
            "TPM2TOOLS_TCTI",
            format!("swtpm:host=127.0.0.1,port={port}"),
        )
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (install tpm2-tools: scripts/test does)", args[0]));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into()
}

fn start_swtpm(dir: &Path) -> Swtpm {
    let port = free_port_pair();
    let mut child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", dir.display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .args(["--flags", "not-need-init,startup-clear"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("swtpm (install it: scripts/test does)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Swtpm { child, port };
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("swtpm did not start on port {port}");
}

/// The AK's public part as the HCL runtime claims publish it.
fn hcl_claims(ak_pem: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(ak_pem);
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine as _;
    let spki = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let (n, e) = conclave_pki::x509::parse_rsa_spki(&spki).unwrap();
    serde_json::json!({"keys": [{
        "kid": "HCLAkPub", "kty": "RSA", "key_ops": ["sign"],
        "n": conclave_attest::api::b64url(&n), "e": conclave_attest::api::b64url(&e),
    }]})
}

#[test]
fn the_guest_quote_from_a_software_tpm_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let tpm_dir = tmp.path().join("tpm");
    std::fs::create_dir_all(&tpm_dir).unwrap();
    let swtpm = start_swtpm(&tpm_dir);
    let port = swtpm.port;
    let work = tmp.path();
    // Azure's vTPM attestation key: a restricted RSA-2048 signing key, RSASSA-SHA256.
    tool(
        work,
        port,
        &[
            "tpm2_createprimary",
            "-C",
            "o",
            "-g",
            "sha256",
            "-G",
            "rsa2048:rsassa-sha256:null",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
            "-c",
            "ak.ctx",
        ],
    );
    tool(
        work,
        port,
        &["tpm2_evictcontrol", "-C", "o", "-c", "ak.ctx", "0x81000003"],
    );
    tool(
        work,
        port,
        &[
            "tpm2_readpublic",
            "-c",
            "0x81000003",
            "-f",
            "pem",
            "-o",
            "ak.pem",
        ],
    );
    let claims = hcl_claims(&std::fs::read(work.join("ak.pem")).unwrap());
    // A measured boot leaves PCR 7 extended.
    let measurement = [0x5Au8; 32];
    tool(
        work,
        port,
        &[
            "tpm2_pcrextend",
            &format!("7:sha256={}", hex::encode(measurement)),
        ],
    );

    let mut tpm = Tpm::open_at(&format!("tcp:127.0.0.1:{port}")).unwrap();
    let nonce = [0x42u8; 32];
    let quote = read_quote(&mut tpm, AK_HANDLE, &nonce)
        .unwrap()
        .expect("an AK at 0x81000003");
    assert_eq!(quote.pcrs.len(), 24);
    let quote = TpmQuote {
        message: quote.message,
        signature: quote.signature,
        pcrs: quote.pcrs,
    };
    let verified = verify_quote(&quote, &claims, &nonce).unwrap();
    // PCR 7 = SHA-256(zeros ‖ measurement), as TPM2_PCR_Extend computes it.
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&[0u8; 32]);
    ctx.update(&measurement);
    assert_eq!(verified.pcrs[&7].as_slice(), ctx.finish().as_ref());
    assert_eq!(verified.pcrs[&0], [0u8; 32]);

    // Another nonce, another PCR value: refused.
    assert!(matches!(
        verify_quote(&quote, &claims, &[0u8; 32]),
        Err(QuoteError::NonceMismatch { .. })
    ));
    let mut changed = quote.clone();
    changed.pcrs[7] = [0u8; 32];
    assert!(matches!(
        verify_quote(&changed, &claims, &nonce),
        Err(QuoteError::PcrDigestMismatch(_))
    ));
    // No key at another handle: no quote, not an error.
    assert!(read_quote(&mut tpm, 0x8100_0099, &nonce).unwrap().is_none());
    drop(swtpm);
}
