//! The wire format of `POST /attest/SevSnpVm`, shaped as Microsoft Azure Attestation accepts it,
//! and a client for it.

pub use crate::b64::{b64url, b64url_decode};
use crate::{Evidence, TpmQuote};

/// Request body of `POST /attest/SevSnpVm`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttestSevSnpVmRequest {
    /// base64url of the JSON [`SnpEvidence`].
    pub report: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_data: Option<RuntimeData>,
    /// Echoed in the token's `nonce` claim. A JSON string; a JSON number is also accepted and
    /// echoed as the exact text it was written with (`123` → `"123"`), as a string-typed
    /// binder reads it; anything else is refused.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nonce_text"
    )]
    pub nonce: Option<String>,
}

/// Reads `nonce` as a string, or a number kept as its literal text (no float rounding: a
/// 30-digit nonce comes back digit for digit).
fn nonce_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::Deserialize as _;
    use serde::de::Error as _;
    let raw = Option::<Box<serde_json::value::RawValue>>::deserialize(d)?;
    let Some(raw) = raw else {
        return Ok(None);
    };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(Some)
            .map_err(D::Error::custom),
        Some(b'-' | b'0'..=b'9') => Ok(Some(text.to_string())),
        Some(b'n') => Ok(None),
        _ => Err(D::Error::custom(
            "nonce must be a JSON string (or a number); an object, array or boolean is not a nonce",
        )),
    }
}

/// Data the TEE chose, bound by the report: `report_data[..32] = SHA-256(data bytes)`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeData {
    /// base64url of the bytes.
    pub data: String,
    /// `JSON` (the claims appear as `x-ms-runtime`) or `Binary`.
    pub data_type: String,
}

/// The evidence inside `report`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SnpEvidence {
    /// base64url of the 1184-byte report.
    #[serde(rename = "SnpReport")]
    pub snp_report: String,
    /// base64url of the PEM chain: VCEK (or VLEK), ASK, ARK.
    #[serde(rename = "VcekCertChain")]
    pub vcek_cert_chain: String,
    #[serde(
        rename = "Endorsements",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub endorsements: Option<String>,
    /// Azure confidential VMs: base64url of the paravisor's runtime claims JSON.
    #[serde(
        rename = "HclRuntimeClaims",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hcl_runtime_claims: Option<String>,
    /// Azure confidential VMs: a vTPM quote signed by the HCL report's attestation key
    /// `HCLAkPub`, attesting the PCRs of the VM's measured boot.
    #[serde(rename = "TpmQuote", default, skip_serializing_if = "Option::is_none")]
    pub tpm_quote: Option<TpmQuoteWire>,
}

/// A vTPM quote on the wire.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TpmQuoteWire {
    /// base64url of the signed `TPMS_ATTEST` (TPM 2.0 Library Part 2 §10.12.12).
    #[serde(rename = "Message")]
    pub message: String,
    /// base64url of the signature: raw RSASSA-PKCS1-v1_5 SHA-256, or a `TPMT_SIGNATURE`.
    #[serde(rename = "Signature")]
    pub signature: String,
    /// Hex SHA-256 values of the PCRs the quote selects, in index order.
    #[serde(rename = "Pcrs")]
    pub pcrs: Vec<String>,
}

impl TpmQuoteWire {
    pub fn new(q: &TpmQuote) -> Self {
        TpmQuoteWire {
            message: b64url(&q.message),
            signature: b64url(&q.signature),
            pcrs: q.pcrs.iter().map(hex::encode).collect(),
        }
    }
}

/// `{"token": "<JWT>"}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub token: String,
}

/// Azure's error body, `{"error": {"code", "message"}}`: the one error shape of every
/// Conclave service (the vault's [`crate::vault::AzureError`]).
pub use crate::vault::{AzureError as ErrorBody, AzureErrorDetail as ErrorDetail};

/// `report_data` that binds `runtime_data`: its SHA-256, then 32 zero bytes.
pub fn report_data_for(runtime_data: &[u8]) -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, runtime_data).as_ref(),
    );
    rd
}

impl AttestSevSnpVmRequest {
    /// Packs evidence and the runtime JSON it binds.
    pub fn new(evidence: &Evidence, runtime_json: &[u8], nonce: Option<String>) -> Self {
        let inner = SnpEvidence {
            snp_report: b64url(&evidence.report),
            vcek_cert_chain: b64url(evidence.cert_chain_pem.as_bytes()),
            endorsements: None,
            hcl_runtime_claims: evidence.hcl_runtime_claims.as_deref().map(b64url),
            tpm_quote: evidence.tpm_quote.as_ref().map(|q| TpmQuoteWire {
                message: b64url(&q.message),
                signature: b64url(&q.signature),
                pcrs: q.pcrs.iter().map(hex::encode).collect(),
            }),
        };
        AttestSevSnpVmRequest {
            report: b64url(&serde_json::to_vec(&inner).expect("evidence serialises")),
            runtime_data: Some(RuntimeData {
                data: b64url(runtime_json),
                data_type: "JSON".into(),
            }),
            nonce,
        }
    }
}

/// An error with its causes (reqwest's own message omits them: "error sending request" alone
/// does not say whether the connection was refused, reset or timed out).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Why the attestation service did not issue a token.
#[derive(Debug, thiserror::Error)]
pub enum AttestClientError {
    #[error("cannot reach the attestation service at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the attestation service refused: {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the attestation service answered something unexpected: {0}")]
    Malformed(String),
}

/// Posts the request to `{base_url}/attest/SevSnpVm` and returns the token.
pub async fn attest(
    client: &reqwest::Client,
    base_url: &str,
    request: &AttestSevSnpVmRequest,
) -> Result<String, AttestClientError> {
    let url = format!(
        "{}/attest/SevSnpVm?api-version=2022-08-01",
        base_url.trim_end_matches('/')
    );
    let resp = client.post(&url).json(request).send().await.map_err(|e| {
        AttestClientError::Unreachable {
            url: url.clone(),
            detail: with_causes(&e),
        }
    })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| AttestClientError::Malformed(e.to_string()))?;
    if status.is_success() {
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| AttestClientError::Malformed(e.to_string()))?;
        return Ok(t.token);
    }
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => Err(AttestClientError::Refused {
            status: status.as_u16(),
            code: e.error.code,
            message: e.error.message,
        }),
        Err(_) => Err(AttestClientError::Malformed(format!("HTTP {status}"))),
    }
}
