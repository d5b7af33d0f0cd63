//! Genuine Azure confidential VM evidence with a vTPM quote (tests/data/azure-cvm-trustee):
//! the quote verifies with the attestation key of the HCL report, for its nonce and PCRs, and a
//! changed PCR, a wrong nonce or another signer is refused with the reason.

use base64::Engine as _;
use conclave_attest::vtpm::{QuoteError, TpmQuote, verify_quote};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/azure-cvm-trustee");

pub struct Vector {
    pub hcl_report: Vec<u8>,
    pub quote: TpmQuote,
    pub vcek_der: Vec<u8>,
    pub nonce: Vec<u8>,
}

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => hex::decode(s).unwrap(),
        Value::Array(a) => a.iter().map(|b| b.as_u64().unwrap() as u8).collect(),
        other => panic!("not bytes: {other}"),
    }
}

/// The three layouts of the vectors, read into one shape.
pub fn vector(name: &str) -> Vector {
    let d: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/{name}")).unwrap()).unwrap();
    let b64url = |s: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.as_str().unwrap().trim_end_matches('='))
            .unwrap()
    };
    let (quote, hcl_report, vcek_der) = match d.get("version") {
        Some(_) => (
            &d["tpm_quote"],
            b64url(&d["hcl_report"]),
            b64url(&d["vcek"]),
        ),
        None => {
            let pem = d["vcek"].as_str().unwrap();
            let cert = conclave_pki::Cert::parse("vcek", pem.as_bytes()).unwrap();
            (&d["quote"], bytes(&d["report"]), cert.der)
        }
    };
    let nonce = match name {
        "evidence-v1.json" => b"challenge".to_vec(),
        "evidence-v2.json" => hex::decode("982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef").unwrap(),
        _ => hex::decode("0218488bae25d2509232bf676f1a66a30d7372add909109b36016ef136f2938ca05475f8b46094de6b64270ea35d950f").unwrap(),
    };
    Vector {
        hcl_report,
        quote: TpmQuote {
            message: bytes(&quote["message"]),
            signature: bytes(&quote["signature"]),
            pcrs: quote["pcrs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| bytes(p).try_into().unwrap())
                .collect(),
        },
        vcek_der,
        nonce,
    }
}

fn hcl_claims(v: &Vector) -> Value {
    let hcl = conclave_tee::azure::parse_hcl_report(&v.hcl_report).unwrap();
    serde_json::from_slice(&hcl.runtime_claims).unwrap()
}

#[test]
fn genuine_quotes_verify_with_the_hcl_attestation_key() {
    for name in [
        "evidence-v1.json",
        "evidence-v2.json",
        "evidence-genoa.json",
    ] {
        let v = vector(name);
        let claims = hcl_claims(&v);
        let verified =
            verify_quote(&v.quote, &claims, &v.nonce).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(verified.pcrs.len(), 24, "{name}");
        assert_eq!(verified.nonce, v.nonce);
    }
    // The value Trustee's tests check for PCR 0 of the v1 VM.
    let v = vector("evidence-v1.json");
    let verified = verify_quote(&v.quote, &hcl_claims(&v), b"challenge").unwrap();
    assert_eq!(
        hex::encode(verified.pcrs[&0]),
        "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"
    );
}

#[test]
fn a_changed_pcr_a_wrong_nonce_or_another_signer_is_refused() {
    let v = vector("evidence-v1.json");
    let claims = hcl_claims(&v);

    for pcr in [0usize, 7, 23] {
        let mut q = v.quote.clone();
        q.pcrs[pcr][0] ^= 1;
        assert!(
            matches!(
                verify_quote(&q, &claims, &v.nonce),
                Err(QuoteError::PcrDigestMismatch(_))
            ),
            "PCR {pcr}"
        );
    }
    let mut q = v.quote.clone();
    q.pcrs.pop();
    assert_eq!(
        verify_quote(&q, &claims, &v.nonce).unwrap_err(),
        QuoteError::PcrCount {
            selected: 24,
            given: 23
        }
    );

    let err = verify_quote(&v.quote, &claims, b"another-challenge").unwrap_err();
    assert!(matches!(err, QuoteError::NonceMismatch { .. }), "{err}");
    assert!(err.to_string().contains("\"challenge\""), "{err}");

    // The v2 VM's attestation key did not sign the v1 VM's quote.
    let other = hcl_claims(&vector("evidence-v2.json"));
    assert_eq!(
        verify_quote(&v.quote, &other, &v.nonce).unwrap_err(),
        QuoteError::BadSignature
    );
    // Any flipped bit of the signed structure breaks the signature.
    for at in [0, 10, 40, v.quote.message.len() - 1] {
        let mut q = v.quote.clone();
        q.message[at] ^= 0x20;
        assert_eq!(
            verify_quote(&q, &claims, &v.nonce).unwrap_err(),
            QuoteError::BadSignature,
            "byte {at}"
        );
    }
    // HCL claims without the attestation key.
    assert_eq!(
        verify_quote(&v.quote, &serde_json::json!({"keys": []}), &v.nonce).unwrap_err(),
        QuoteError::NoAttestationKey
    );
}

#[test]
fn a_tpmt_signature_is_read_as_tpm2_quote_writes_it() {
    let v = vector("evidence-v1.json");
    // TPMT_SIGNATURE: sigAlg RSASSA (0x0014), hash SHA-256 (0x000B), TPM2B (size, bytes).
    let mut tpmt = vec![0x00, 0x14, 0x00, 0x0B];
    tpmt.extend_from_slice(&(v.quote.signature.len() as u16).to_be_bytes());
    tpmt.extend_from_slice(&v.quote.signature);
    let q = TpmQuote {
        signature: tpmt.clone(),
        ..v.quote.clone()
    };
    verify_quote(&q, &hcl_claims(&v), &v.nonce).unwrap();
    // An RSASSA-SHA1 TPMT_SIGNATURE is refused by name.
    tpmt[3] = 0x04;
    let q = TpmQuote {
        signature: tpmt,
        ..v.quote.clone()
    };
    let err = verify_quote(&q, &hcl_claims(&v), &v.nonce).unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");
}

// --- Through the attestation service --------------------------------------------------------

use conclave_attest::api::{AttestSevSnpVmRequest, ErrorBody, SnpEvidence, TpmQuoteWire, b64url};

/// The attestation service with AMD's roots and the production policy, on loopback.
async fn service(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service = conclave_attest::AttestationService::new(conclave_attest::ServiceConfig {
        issuer: url.clone(),
        roots: conclave_snp::TrustedRoots::amd(),
        policy: conclave_attest::AppraisalPolicy::production(),
        key_dir: dir.join("token-keys"),
        token_lifetime: std::time::Duration::from_secs(600),
        kds_cache: None,
    })
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(conclave_attest::service::serve(
        listener,
        service,
        None,
        async {
            stopped.await.ok();
        },
    ));
    (url, stop)
}

/// The request an Azure CVM client sends: the HCL report's SNP report, the VCEK, the HCL runtime
/// claims and the quote, with `nonce` and no runtime data.
fn request(v: &Vector, quote: &TpmQuote, nonce: &str) -> AttestSevSnpVmRequest {
    let hcl = conclave_tee::azure::parse_hcl_report(&v.hcl_report).unwrap();
    let vcek = conclave_pki::Cert::parse("vcek", &v.vcek_der).unwrap();
    let evidence = SnpEvidence {
        snp_report: b64url(&hcl.snp_report),
        vcek_cert_chain: b64url(vcek.to_pem().as_bytes()),
        endorsements: None,
        hcl_runtime_claims: Some(b64url(&hcl.runtime_claims)),
        tpm_quote: Some(TpmQuoteWire::new(quote)),
    };
    AttestSevSnpVmRequest {
        report: b64url(&serde_json::to_vec(&evidence).unwrap()),
        runtime_data: None,
        nonce: Some(nonce.into()),
    }
}

async fn post(url: &str, req: &AttestSevSnpVmRequest) -> Result<String, (u16, ErrorBody)> {
    let resp = reqwest::Client::new()
        .post(format!("{url}/attest/SevSnpVm?api-version=2022-08-01"))
        .json(req)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status == 200 {
        let v: Value = resp.json().await.unwrap();
        Ok(v["token"].as_str().unwrap().to_string())
    } else {
        Err((status, resp.json().await.unwrap()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_attests_an_azure_cvm_quote_and_exposes_its_pcrs() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = service(dir.path()).await;
    let v = vector("evidence-v1.json");
    let token = post(&url, &request(&v, &v.quote, "challenge"))
        .await
        .unwrap();
    let verified = conclave_attest::TokenVerifier::for_issuer(&url, reqwest::Client::new())
        .verify(&token)
        .await
        .unwrap();
    let c = &verified.claims;
    assert_eq!(c["x-ms-attestation-type"], "azurevm");
    assert_eq!(c["x-conclave-platform"], "azure-vtpm");
    assert_eq!(
        c["x-ms-azurevm-vmid"],
        "26F8BC30-774E-4290-8E7A-535F3B672AEE"
    );
    assert_eq!(
        c["x-conclave-tpm"]["pcr00"],
        "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"
    );
    assert_eq!(c["x-conclave-tpm"]["nonce"], hex::encode("challenge"));
    assert_eq!(c["nonce"], "challenge");
    assert_eq!(c["x-ms-isolation-tee"]["x-ms-sevsnpvm-vmpl"], 0);

    // A release policy pins the VM and a PCR through the same grammar as any claim.
    assert_eq!(
        conclave_kms_free_claim(c, "x-conclave-tpm.pcr07"),
        Some(hex::encode(v.quote.pcrs[7]))
    );

    // Refusals, each with its reason.
    let mut changed = v.quote.clone();
    changed.pcrs[7][31] ^= 1;
    for (req, needle) in [
        (
            request(&v, &v.quote, "another"),
            "made for nonce \"challenge\"",
        ),
        (
            request(&v, &changed, "challenge"),
            "do not match the digest the TPM quoted",
        ),
        (
            request(&v, &vector("evidence-v2.json").quote, "challenge"),
            "does not verify with the attestation key",
        ),
    ] {
        let (status, body) = post(&url, &req).await.unwrap_err();
        assert_eq!(status, 400);
        assert_eq!(body.error.code, "InvalidEvidence");
        assert!(
            body.error.message.contains(needle),
            "{}",
            body.error.message
        );
    }
    // No nonce and no runtime data: nothing shows the quote is fresh.
    let mut stale = request(&v, &v.quote, "challenge");
    stale.nonce = None;
    let (status, body) = post(&url, &stale).await.unwrap_err();
    assert_eq!(status, 400);
    assert!(
        body.error.message.contains("must answer this request"),
        "{}",
        body.error.message
    );
}

/// A dotted claim path, as release policies address claims.
fn conclave_kms_free_claim(claims: &Value, path: &str) -> Option<String> {
    path.split('.')
        .try_fold(claims, |v, part| v.get(part))
        .and_then(|v| v.as_str())
        .map(String::from)
}
