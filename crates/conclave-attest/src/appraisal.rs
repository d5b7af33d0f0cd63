//! Appraisal: turns an attestation request into verified facts, then checks them against the
//! service's own appraisal policy. Evidence checking (is this a genuine report, bound to this
//! runtime data?) is separate from policy (do we accept this platform, TCB, debug state?).

use std::collections::BTreeSet;
use std::time::SystemTime;

use conclave_protocol::Platform;
use conclave_snp::AmdCert as _;
use conclave_snp::{
    Cert, CertChain, RootKind, TcbParts, TrustedRoots, VerifiedReport, verify_report,
};

use crate::api::{AttestSevSnpVmRequest, SnpEvidence, b64url_decode};

/// What the service accepts, beyond "the evidence is genuine".
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AppraisalPolicy {
    /// Platforms whose evidence is accepted. A production service lists only `snp` and/or
    /// `azure-vtpm`: sim evidence is then refused even if its root were configured.
    pub allowed_platforms: BTreeSet<PlatformName>,
    /// Accept guests launched with the debug policy bit (the host can read their memory).
    pub allow_debug: bool,
    /// The reported TCB must be at least this.
    pub min_tcb: Option<TcbParts>,
    /// Check certificate validity periods at the time of appraisal.
    pub check_cert_validity: bool,
}

/// A platform name, ordered for stable serialisation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum PlatformName {
    Sim,
    Snp,
    AzureVtpm,
}

impl From<Platform> for PlatformName {
    fn from(p: Platform) -> Self {
        match p {
            Platform::Sim => PlatformName::Sim,
            Platform::Snp => PlatformName::Snp,
            Platform::AzureVtpm => PlatformName::AzureVtpm,
        }
    }
}

impl AppraisalPolicy {
    /// Hardware only, no debug guests, certificate validity checked.
    pub fn production() -> Self {
        AppraisalPolicy {
            allowed_platforms: [PlatformName::Snp, PlatformName::AzureVtpm].into(),
            allow_debug: false,
            min_tcb: None,
            check_cert_validity: true,
        }
    }
}

/// Why evidence was refused. Messages name the failing check and never echo secrets.
#[derive(Debug, thiserror::Error)]
pub enum AppraisalError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("evidence does not verify: {0}")]
    Evidence(#[from] conclave_snp::VerifyError),
    #[error(
        "report_data does not bind the runtime data: report_data[0..32] must equal SHA-256(runtime data)"
    )]
    RuntimeDataNotBound,
    #[error(
        "the HCL runtime claims are not bound by the report, or do not carry the runtime data: {0}"
    )]
    HclNotBound(String),
    #[error("platform {0} is not accepted by this attestation service's policy")]
    PlatformNotAllowed(&'static str),
    #[error(
        "the guest was launched with the debug policy bit set; this service does not accept debuggable guests"
    )]
    DebugNotAllowed,
    #[error("{0}")]
    Quote(String),
    #[error("reported TCB {have:?} is below the minimum {min:?}")]
    TcbTooLow { have: TcbParts, min: TcbParts },
}

/// Evidence that verified and satisfied the policy.
pub struct Appraisal {
    pub platform: Platform,
    pub report: VerifiedReport,
    /// The runtime JSON (`x-ms-runtime`), when `dataType` is JSON.
    pub runtime: Option<serde_json::Value>,
    /// Azure only: the paravisor's runtime claims.
    pub hcl_claims: Option<serde_json::Value>,
    /// Azure only: the verified vTPM quote, when the evidence carried one.
    pub tpm: Option<crate::vtpm::VerifiedQuote>,
    pub nonce: Option<String>,
}

fn malformed(what: &str, e: impl std::fmt::Display) -> AppraisalError {
    AppraisalError::Malformed(format!("{what}: {e}"))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

/// Verifies and appraises one request.
pub fn appraise(
    request: &AttestSevSnpVmRequest,
    roots: &TrustedRoots,
    policy: &AppraisalPolicy,
) -> Result<Appraisal, AppraisalError> {
    appraise_with_kds(request, roots, policy, None)
}

/// As [`appraise`], with an offline AMD KDS cache: evidence without a VCEK gets it from the
/// cache, and the cache's CRLs are checked.
pub fn appraise_with_kds(
    request: &AttestSevSnpVmRequest,
    roots: &TrustedRoots,
    policy: &AppraisalPolicy,
    kds: Option<&conclave_snp::kds::KdsCache>,
) -> Result<Appraisal, AppraisalError> {
    let evidence_json =
        b64url_decode(&request.report).map_err(|e| malformed("report is not base64url", e))?;
    let evidence: SnpEvidence = serde_json::from_slice(&evidence_json)
        .map_err(|e| malformed("report is not the SNP evidence JSON", e))?;
    let raw = b64url_decode(&evidence.snp_report)
        .map_err(|e| malformed("SnpReport is not base64url", e))?;
    let chain_pem = b64url_decode(&evidence.vcek_cert_chain)
        .map_err(|e| malformed("VcekCertChain is not base64url", e))?;
    let certs = Cert::parse_pem_bundle("VcekCertChain", &chain_pem)
        .map_err(|e| malformed("VcekCertChain", e))?;
    let has_leaf = certs.iter().any(|c| c.is_p384());
    let chain = match (kds, has_leaf) {
        (_, true) => {
            let chain = CertChain::from_certs(certs)?;
            match kds {
                // The cache completes a chain that came without intermediates.
                Some(cache) => cache
                    .complete_chain(&raw, Some(chain), None)
                    .map_err(|e| AppraisalError::Malformed(e.to_string()))?,
                None => chain,
            }
        }
        (Some(cache), false) => {
            // No leaf in the evidence: the VCEK comes from the cache; intermediates that came
            // with the evidence are kept.
            let mut chain = cache
                .complete_chain(&raw, None, None)
                .map_err(|e| AppraisalError::Malformed(e.to_string()))?;
            for c in certs {
                let slot = if c.is_asvk() {
                    &mut chain.asvk
                } else if c.is_self_issued() {
                    &mut chain.ark
                } else {
                    &mut chain.ask
                };
                *slot = Some(c);
            }
            chain
        }
        (None, false) => CertChain::from_certs(certs)?,
    };

    let (runtime_bytes, runtime) = match &request.runtime_data {
        None => (Vec::new(), None),
        Some(rd) => {
            let bytes = b64url_decode(&rd.data)
                .map_err(|e| malformed("runtimeData.data is not base64url", e))?;
            let value = match rd.data_type.as_str() {
                "JSON" => Some(serde_json::from_slice::<serde_json::Value>(&bytes).map_err(
                    |e| malformed("runtimeData is declared JSON but does not parse", e),
                )?),
                "Binary" => None,
                other => {
                    return Err(malformed(
                        "runtimeData.dataType",
                        format!("{other:?} is not JSON or Binary"),
                    ));
                }
            };
            (bytes, value)
        }
    };

    let at = policy.check_cert_validity.then(SystemTime::now);
    let report = verify_report(&raw, &chain, roots, at)?;
    if let Some(cache) = kds
        && let conclave_snp::kds::Revocation::NotChecked(path) =
            cache.check_revocation(&chain, roots, at)?
    {
        tracing::warn!(
            crl = %path.display(),
            "no CRL of the issuing ARK is cached: revocation not checked"
        );
    }
    let rd = report.report().report_data;

    let hcl_bytes = evidence
        .hcl_runtime_claims
        .as_deref()
        .map(b64url_decode)
        .transpose()
        .map_err(|e| malformed("HclRuntimeClaims is not base64url", e))?;
    let quote = evidence
        .tpm_quote
        .as_ref()
        .map(|q| -> Result<crate::vtpm::TpmQuote, AppraisalError> {
            Ok(crate::vtpm::TpmQuote {
                message: b64url_decode(&q.message)
                    .map_err(|e| malformed("TpmQuote.Message is not base64url", e))?,
                signature: b64url_decode(&q.signature)
                    .map_err(|e| malformed("TpmQuote.Signature is not base64url", e))?,
                pcrs: crate::vtpm::parse_pcrs(&q.pcrs)
                    .map_err(|e| malformed("TpmQuote.Pcrs", e))?,
            })
        })
        .transpose()?;
    let (platform, hcl_claims, tpm) = match (report.root_kind(), hcl_bytes) {
        (_, None) if quote.is_some() => {
            return Err(malformed(
                "TpmQuote",
                "a vTPM quote needs HclRuntimeClaims: they publish the attestation key that signed it",
            ));
        }
        (RootKind::Simulated, None) => (Platform::Sim, None, None),
        (RootKind::Amd, None) => (Platform::Snp, None, None),
        (RootKind::Simulated, Some(_)) => {
            return Err(malformed(
                "HclRuntimeClaims",
                "simulated evidence cannot carry Azure HCL claims",
            ));
        }
        (RootKind::Amd, Some(hcl)) => {
            // The paravisor asks for its report at VMPL 0; a report from a lower privilege
            // level (the guest OS) could carry claims the paravisor never made.
            if report.report().vmpl != 0 {
                return Err(AppraisalError::HclNotBound(format!(
                    "the HCL report's SEV-SNP report comes from VMPL {}, not the paravisor's VMPL 0",
                    report.report().vmpl
                )));
            }
            match quote {
                None => (
                    Platform::AzureVtpm,
                    Some(check_hcl_binding(&rd, &hcl, &runtime_bytes)?),
                    None,
                ),
                Some(quote) => {
                    let (claims, verified) = check_quoted_hcl_binding(
                        &rd,
                        &hcl,
                        request
                            .runtime_data
                            .is_some()
                            .then_some(runtime_bytes.as_slice()),
                        request.nonce.as_deref(),
                        &quote,
                    )?;
                    (Platform::AzureVtpm, Some(claims), Some(verified))
                }
            }
        }
    };
    if platform != Platform::AzureVtpm && rd[..32] != sha256(&runtime_bytes) {
        return Err(AppraisalError::RuntimeDataNotBound);
    }

    if !policy.allowed_platforms.contains(&platform.into()) {
        return Err(AppraisalError::PlatformNotAllowed(platform.as_str()));
    }
    if report.report().policy.debug_allowed() && !policy.allow_debug {
        return Err(AppraisalError::DebugNotAllowed);
    }
    if let Some(min) = &policy.min_tcb {
        let have = report.reported_tcb();
        if !have.at_least(min) {
            return Err(AppraisalError::TcbTooLow { have, min: *min });
        }
    }
    Ok(Appraisal {
        platform,
        report,
        runtime,
        hcl_claims,
        tpm,
        nonce: request.nonce.clone(),
    })
}

/// Azure's first hop alone: the report binds the paravisor's runtime claims, which are returned
/// parsed (for offline checks that have no runtime data of their own).
pub fn check_hcl_report_binding(
    report_data: &[u8; 64],
    hcl: &[u8],
) -> Result<serde_json::Value, AppraisalError> {
    if report_data[..32] != sha256(hcl) {
        return Err(AppraisalError::HclNotBound(
            "report_data[0..32] is not SHA-256(HCL runtime claims)".into(),
        ));
    }
    serde_json::from_slice(hcl).map_err(|e| AppraisalError::HclNotBound(e.to_string()))
}

/// Azure with a vTPM quote: the report binds the HCL runtime claims; the quote is signed by
/// their attestation key and made for the request's `nonce` (its UTF-8 bytes) or for SHA-256 of
/// the runtime data (what Conclave's workload quotes: it binds its fresh keys). Runtime data is
/// bound by that quote, or by the HCL claims' `user-data` as without a quote. Evidence with
/// neither a nonce nor runtime data is refused: nothing would show it is fresh.
pub fn check_quoted_hcl_binding(
    report_data: &[u8; 64],
    hcl: &[u8],
    runtime: Option<&[u8]>,
    nonce: Option<&str>,
    quote: &crate::vtpm::TpmQuote,
) -> Result<(serde_json::Value, crate::vtpm::VerifiedQuote), AppraisalError> {
    let claims = check_hcl_report_binding(report_data, hcl)?;
    let candidates: Vec<Vec<u8>> = [
        nonce.map(|n| n.as_bytes().to_vec()),
        runtime.map(|rt| sha256(rt).to_vec()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if candidates.is_empty() {
        return Err(AppraisalError::Malformed(
            "a vTPM quote must answer this request: send a nonce (the quote's extraData) or runtime data (its SHA-256 as extraData)".into(),
        ));
    }
    let mut outcome = Err(crate::vtpm::QuoteError::NoAttestationKey);
    for expected in &candidates {
        outcome = crate::vtpm::verify_quote(quote, &claims, expected);
        if !matches!(outcome, Err(crate::vtpm::QuoteError::NonceMismatch { .. })) {
            break;
        }
    }
    let verified = outcome.map_err(|e| AppraisalError::Quote(e.to_string()))?;
    if let Some(rt) = runtime {
        let by_quote = verified.nonce == sha256(rt);
        let by_user_data = claims
            .get("user-data")
            .and_then(|v| v.as_str())
            .and_then(|s| hex::decode(s).ok())
            .is_some_and(|u| u.get(..32) == Some(sha256(rt).as_slice()));
        if !by_quote && !by_user_data {
            return Err(AppraisalError::RuntimeDataNotBound);
        }
    }
    Ok((claims, verified))
}

/// Azure's two-hop binding: the report binds the paravisor's runtime claims, and those claims
/// carry (as hex `user-data`) the report data that binds our runtime data.
pub fn check_hcl_binding(
    report_data: &[u8; 64],
    hcl: &[u8],
    runtime: &[u8],
) -> Result<serde_json::Value, AppraisalError> {
    if report_data[..32] != sha256(hcl) {
        return Err(AppraisalError::HclNotBound(
            "report_data[0..32] is not SHA-256(HCL runtime claims)".into(),
        ));
    }
    let claims: serde_json::Value =
        serde_json::from_slice(hcl).map_err(|e| AppraisalError::HclNotBound(e.to_string()))?;
    let user_data = claims
        .get("user-data")
        .and_then(|v| v.as_str())
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| AppraisalError::HclNotBound("no hex user-data in the HCL claims".into()))?;
    if user_data.get(..32) != Some(sha256(runtime).as_slice()) {
        return Err(AppraisalError::RuntimeDataNotBound);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::report_data_for;

    #[test]
    fn hcl_binding_needs_both_hops() {
        let runtime = br#"{"keys":[]}"#;
        let hcl = format!(
            r#"{{"vm-configuration":{{"vmUniqueId":"abc"}},"user-data":"{}"}}"#,
            hex::encode_upper(report_data_for(runtime))
        );
        let rd = report_data_for(hcl.as_bytes());
        let claims = check_hcl_binding(&rd, hcl.as_bytes(), runtime).unwrap();
        assert_eq!(claims["vm-configuration"]["vmUniqueId"], "abc");

        // The report does not bind these HCL claims.
        let other_rd = report_data_for(b"other");
        assert!(matches!(
            check_hcl_binding(&other_rd, hcl.as_bytes(), runtime),
            Err(AppraisalError::HclNotBound(_))
        ));
        // The HCL claims carry someone else's report data.
        assert!(matches!(
            check_hcl_binding(&rd, hcl.as_bytes(), b"{}"),
            Err(AppraisalError::RuntimeDataNotBound)
        ));
        // No user-data at all.
        let bare = br#"{"vm-configuration":{}}"#;
        assert!(matches!(
            check_hcl_binding(&report_data_for(bare), bare, runtime),
            Err(AppraisalError::HclNotBound(_))
        ));
    }
}
