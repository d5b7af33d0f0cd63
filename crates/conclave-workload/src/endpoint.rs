//! Checking a workload endpoint from outside: is the server at this URL the attested workload?
//!
//! The client connects without trusting any certificate issuer, records the TLS key the server
//! proved it holds, fetches the server's attestation token (`GET /api/attestation`), verifies
//! the token against the attestation service's keys, and compares the pin in the token's
//! runtime data (`x-ms-runtime.tls.pin-sha256`) with the pin of the recorded key. Only when
//! they are equal is anything the server said trusted. A client then keeps talking to it with
//! [`conclave_net::attested_tls::pinned_client`].

use conclave_net::attested_tls::{capturing_client, certificate_pin};
use conclave_protocol::token::{TokenVerifier, VerifiedToken};
use serde_json::Value;

use crate::identity::RUNTIME_TLS_PIN;

/// Largest attestation answer read from an endpoint (a token is a few kilobytes).
const MAX_EVIDENCE: usize = 1 << 20;

/// Why an endpoint is not the attested workload (or could not be checked).
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} did not present a TLS certificate (use an https:// URL)")]
    NoCertificate { url: String },
    #[error("{url} answered the attestation request with {status}: {detail}")]
    NoEvidence {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the attestation token from {url} is not valid: {detail}")]
    BadToken { url: String, detail: String },
    #[error(
        "the attested token names no TLS key (x-ms-runtime.tls.{RUNTIME_TLS_PIN}): this workload does not bind its TLS key to its attestation"
    )]
    NoAttestedPin,
    #[error(
        "the server's TLS key (pin-sha256 {presented}) is not the attested one ({attested}): something other than the attested workload answers at this address"
    )]
    PinMismatch { presented: String, attested: String },
}

/// What a successful check established.
#[derive(Debug, Clone)]
pub struct VerifiedEndpoint {
    pub url: String,
    /// RFC 7469 pin of the TLS key, equal to the attested one.
    pub pin_sha256: String,
    /// The verified attestation token.
    pub token: VerifiedToken,
}

impl VerifiedEndpoint {
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.token.claims.get(name)
    }

    /// The launch measurement, hex (an Azure CVM's paravisor's under `x-ms-isolation-tee`).
    pub fn measurement(&self) -> Option<&str> {
        conclave_protocol::runtime::launch_measurement(&self.token.claims)
    }

    /// `x-conclave-platform`: `sim`, `snp` or `azure-vtpm`.
    pub fn platform(&self) -> Option<&str> {
        conclave_protocol::runtime::platform(&self.token.claims)
    }
}

/// Checks that `url` (the workload's base URL, `https://host:port`) is served by the workload
/// its attestation token describes, with `verifier` trusting the attestation service's keys.
pub async fn verify_endpoint(
    url: &str,
    verifier: &TokenVerifier,
) -> Result<VerifiedEndpoint, EndpointError> {
    let base = url.trim_end_matches('/');
    let (client, capture) = capturing_client().map_err(|e| EndpointError::Unreachable {
        url: base.into(),
        detail: e.to_string(),
    })?;
    let response = client
        .get(format!("{base}/api/attestation"))
        .send()
        .await
        .map_err(|e| EndpointError::Unreachable {
            url: base.into(),
            detail: error_chain(&e),
        })?;
    let presented = capture
        .presented()
        .ok_or_else(|| EndpointError::NoCertificate { url: base.into() })?;
    let status = response.status();
    if status.is_redirection() {
        return Err(EndpointError::NoEvidence {
            url: base.into(),
            status: status.as_u16(),
            detail: "it redirects elsewhere; the attested workload answers at its own address"
                .into(),
        });
    }
    // Read at most 1 MiB from a server not trusted yet.
    let mut body = Vec::new();
    let mut response = response;
    while let Some(chunk) = response.chunk().await.ok().flatten() {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_EVIDENCE {
            return Err(EndpointError::NoEvidence {
                url: base.into(),
                status: status.as_u16(),
                detail: format!("the answer is larger than {MAX_EVIDENCE} bytes"),
            });
        }
    }
    if !status.is_success() {
        let detail = serde_json::from_slice::<conclave_protocol::vault::AzureError>(&body)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| "no reason given".into());
        return Err(EndpointError::NoEvidence {
            url: base.into(),
            status: status.as_u16(),
            detail,
        });
    }
    let evidence: crate::api::EndpointEvidence =
        serde_json::from_slice(&body).map_err(|e| EndpointError::NoEvidence {
            url: base.into(),
            status: status.as_u16(),
            detail: format!("the answer is not the workload's evidence: {e}"),
        })?;
    let token = evidence.token.as_str();
    let token = verifier
        .verify(token)
        .await
        .map_err(|e| EndpointError::BadToken {
            url: base.into(),
            detail: e.to_string(),
        })?;
    let attested = conclave_protocol::runtime::RuntimeClaims::from_claims(&token.claims)
        .and_then(|r| r.tls_pin().map(String::from))
        .ok_or(EndpointError::NoAttestedPin)?;
    let presented = certificate_pin(&presented).map_err(|e| EndpointError::Unreachable {
        url: base.into(),
        detail: e.to_string(),
    })?;
    if aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), attested.as_bytes())
        .is_err()
    {
        return Err(EndpointError::PinMismatch {
            presented,
            attested,
        });
    }
    Ok(VerifiedEndpoint {
        url: base.into(),
        pin_sha256: presented,
        token,
    })
}

/// An error with its causes, for messages (reqwest's top-level text hides the TLS reason).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
