//! The vTPM quote of an Azure confidential VM, verified as Microsoft Azure Attestation's guest
//! attestation and Trustee's `az-snp-vtpm` verifier check it.
//!
//! On Azure the paravisor publishes, in its HCL report's runtime claims (bound by the SEV-SNP
//! report), the public part of the vTPM's attestation key `HCLAkPub`. A `TPM2_Quote` signed by
//! that key (TPM 2.0 Library Part 3 §18.4) then attests the VM's measured boot: the PCR values
//! it selects (Part 2 §10.12.4 `TPMS_QUOTE_INFO`: the selection and the digest of the selected
//! values) and the caller's nonce (`extraData` of `TPMS_ATTEST`, Part 2 §10.12.12). The
//! structures are read with `tpm2-protocol`.

use std::collections::BTreeMap;

use base64::Engine as _;
use tpm2_protocol::TpmUnmarshal as _;
use tpm2_protocol::data::{TpmAlgId, TpmSt, TpmsAttest, TpmtSignature, TpmuAttest, TpmuSignature};

/// The key id of the vTPM attestation key in the HCL runtime claims.
pub const AK_KID: &str = "HCLAkPub";

pub use conclave_protocol::TpmQuote;

/// What a verified quote attests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    /// `extraData`: the nonce the quote was made for.
    pub nonce: Vec<u8>,
    /// PCR index → SHA-256 value, for every selected PCR.
    pub pcrs: BTreeMap<u8, [u8; 32]>,
}

/// Why a quote is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("the TPM quote is malformed: {0}")]
    Malformed(String),
    #[error(
        "the HCL runtime claims publish no RSA attestation key {AK_KID:?} to check the quote with"
    )]
    NoAttestationKey,
    #[error(
        "the TPM quote's signature does not verify with the attestation key {AK_KID:?} of the HCL report: the quote was altered, or signed by another key"
    )]
    BadSignature,
    #[error(
        "the TPM quote was made for nonce {found}, not {expected}: it answers another request (replayed?)"
    )]
    NonceMismatch { expected: String, found: String },
    #[error(
        "the PCR values given do not match the digest the TPM quoted: PCR {0} (or another selected one) was changed"
    )]
    PcrDigestMismatch(String),
    #[error("the TPM quote selects {selected} PCRs but {given} values were given")]
    PcrCount { selected: usize, given: usize },
}

/// `extraData` and values as text: printable ASCII as is, anything else as hex.
fn show(bytes: &[u8]) -> String {
    if !bytes.is_empty() && bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        format!("hex {}", hex::encode(bytes))
    }
}

/// The RSA attestation key `HCLAkPub` from the HCL runtime claims (`keys`, JWK n/e).
fn attestation_key(hcl_claims: &serde_json::Value) -> Result<(Vec<u8>, Vec<u8>), QuoteError> {
    let key = hcl_claims["keys"]
        .as_array()
        .and_then(|keys| {
            keys.iter()
                .find(|k| k["kid"] == AK_KID && k["kty"] == "RSA")
        })
        .ok_or(QuoteError::NoAttestationKey)?;
    let b64 = |name: &str| {
        key[name]
            .as_str()
            .and_then(|s| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(s.trim_end_matches('='))
                    .ok()
            })
            .ok_or(QuoteError::NoAttestationKey)
    };
    Ok((b64("n")?, b64("e")?))
}

/// The raw RSA signature: as given, or out of a `TPMT_SIGNATURE` (RSASSA with SHA-256 only).
fn raw_signature(signature: &[u8], modulus_len: usize) -> Result<Vec<u8>, QuoteError> {
    if signature.len() == modulus_len {
        return Ok(signature.to_vec());
    }
    let (sig, rest) = TpmtSignature::unmarshal(signature).map_err(|e| {
        QuoteError::Malformed(format!(
            "the signature is neither {modulus_len} raw bytes nor a TPMT_SIGNATURE ({e:?})"
        ))
    })?;
    if !rest.is_empty() {
        return Err(QuoteError::Malformed(
            "bytes after the TPMT_SIGNATURE".into(),
        ));
    }
    match sig.signature {
        TpmuSignature::Rsassa(rsa) if rsa.hash == TpmAlgId::Sha256 => Ok(rsa.sig.to_vec()),
        _ => Err(QuoteError::Malformed(format!(
            "the quote is signed with {:?}; Azure's attestation key signs RSASSA with SHA-256",
            sig.sig_alg
        ))),
    }
}

/// Verifies `quote` against the attestation key in `hcl_claims` (which the caller has already
/// bound to a verified SEV-SNP report), checks that it was made for `expected_nonce`, and that
/// the PCR values given are those the TPM quoted.
///
/// Errors: [`QuoteError`] names the failed check.
pub fn verify_quote(
    quote: &TpmQuote,
    hcl_claims: &serde_json::Value,
    expected_nonce: &[u8],
) -> Result<VerifiedQuote, QuoteError> {
    let (n, e) = attestation_key(hcl_claims)?;
    let modulus_len = n.iter().skip_while(|&&b| b == 0).count();
    let signature = raw_signature(&quote.signature, modulus_len)?;
    aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            &quote.message,
            &signature,
        )
        .map_err(|_| QuoteError::BadSignature)?;

    let (attest, rest) = TpmsAttest::unmarshal(&quote.message)
        .map_err(|e| QuoteError::Malformed(format!("TPMS_ATTEST: {e:?}")))?;
    if !rest.is_empty() {
        return Err(QuoteError::Malformed("bytes after the TPMS_ATTEST".into()));
    }
    if attest.attest_type != TpmSt::AttestQuote {
        return Err(QuoteError::Malformed(format!(
            "the signed structure is a {:?}, not a quote (TPM_ST_ATTEST_QUOTE)",
            attest.attest_type
        )));
    }
    let TpmuAttest::Quote(info) = attest.attested else {
        return Err(QuoteError::Malformed("no TPMS_QUOTE_INFO".into()));
    };
    let nonce = attest.extra_data.to_vec();
    if nonce != expected_nonce {
        return Err(QuoteError::NonceMismatch {
            expected: show(expected_nonce),
            found: show(&nonce),
        });
    }

    // The selected PCRs, bank by bank in the order quoted, each bank's indices ascending.
    let mut selected = Vec::new();
    for bank in info.pcr_select.iter() {
        if bank.hash != TpmAlgId::Sha256 {
            return Err(QuoteError::Malformed(format!(
                "the quote selects PCRs of the {:?} bank; only SHA-256 values are accepted",
                bank.hash
            )));
        }
        for (byte, bits) in bank.pcr_select.iter().enumerate() {
            for bit in 0..8 {
                if bits & (1 << bit) != 0 {
                    selected.push(u8::try_from(byte * 8 + bit).expect("at most 8 * 255"));
                }
            }
        }
    }
    if selected.len() != quote.pcrs.len() {
        return Err(QuoteError::PcrCount {
            selected: selected.len(),
            given: quote.pcrs.len(),
        });
    }
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for value in &quote.pcrs {
        ctx.update(value);
    }
    if ctx.finish().as_ref() != &info.pcr_digest[..] {
        // Which value is wrong cannot be known from one digest; say which were given.
        return Err(QuoteError::PcrDigestMismatch(format!(
            "{}..{}",
            selected.first().copied().unwrap_or_default(),
            selected.last().copied().unwrap_or_default()
        )));
    }
    Ok(VerifiedQuote {
        nonce,
        pcrs: selected
            .into_iter()
            .zip(quote.pcrs.iter().copied())
            .collect(),
    })
}

/// The quote's claims: `pcr00`…`pcr23` (hex SHA-256) and the nonce it was made for.
pub fn quote_claims(q: &VerifiedQuote) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (i, v) in &q.pcrs {
        m.insert(format!("pcr{i:02}"), hex::encode(v).into());
    }
    m.insert("pcr-bank".into(), "sha256".into());
    m.insert("nonce".into(), hex::encode(&q.nonce).into());
    m.insert("ak".into(), AK_KID.into());
    m.into()
}

/// Parses PCR values given as hex strings.
pub fn parse_pcrs(values: &[String]) -> Result<Vec<[u8; 32]>, QuoteError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            hex::decode(v.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    QuoteError::Malformed(format!(
                        "PCR value {i} is not 32 bytes of hex (SHA-256 bank)"
                    ))
                })
        })
        .collect()
}
