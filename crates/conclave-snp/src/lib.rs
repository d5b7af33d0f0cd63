//! AMD SEV-SNP evidence: the attestation report (parse and serialise), AMD's certificate chain
//! (ARK → ASK → VCEK/VLEK) and the checks that make a report trustworthy.
//!
//! The same [`verify_report`] checks hardware reports and the simulated platform's reports;
//! only the [`TrustedRoots`] differ, and a [`VerifiedReport`] says which kind of root it chained
//! to, so that nothing downstream can mistake simulated evidence for hardware evidence.

#![forbid(unsafe_code)]

pub mod report;
pub mod x509;

use std::time::SystemTime;

use aws_lc_rs::signature;

pub use report::{AttestationReport, ReportError, TcbParts, TcbVersion};
pub use x509::{Cert, CertError};

/// AMD EPYC generations with SEV-SNP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// Turin moved the SVNs inside a TCB version and added the FMC SVN.
    pub fn is_turin_layout(self) -> bool {
        matches!(self, Product::Turin)
    }
}

/// Where a root of trust comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootKind {
    /// AMD's real root keys: the report comes from AMD hardware.
    Amd,
    /// A locally generated root: the report comes from Conclave's simulated platform and the
    /// workload has no hardware protection.
    Simulated,
}

/// The generation the simulated platform imitates (report version, TCB layout, CPUID).
pub const SIM_PRODUCT: Product = Product::Genoa;

/// A trusted ARK with the ASK it issued.
#[derive(Clone, Debug)]
pub struct TrustedRoot {
    pub product: Product,
    pub kind: RootKind,
    pub ark: Cert,
    /// The ASK, used when the evidence does not carry one.
    pub ask: Option<Cert>,
}

/// The set of roots a verifier accepts.
#[derive(Clone, Debug, Default)]
pub struct TrustedRoots(Vec<TrustedRoot>);

const AMD_ROOTS: [(Product, &[u8], &[u8]); 3] = [
    (
        Product::Milan,
        include_bytes!("../roots/milan-ark.pem"),
        include_bytes!("../roots/milan-ask.pem"),
    ),
    (
        Product::Genoa,
        include_bytes!("../roots/genoa-ark.pem"),
        include_bytes!("../roots/genoa-ask.pem"),
    ),
    (
        Product::Turin,
        include_bytes!("../roots/turin-ark.pem"),
        include_bytes!("../roots/turin-ask.pem"),
    ),
];

impl TrustedRoots {
    /// No roots: every report is rejected until roots are added.
    pub fn empty() -> Self {
        TrustedRoots(Vec::new())
    }

    /// AMD's roots for Milan, Genoa and Turin, shipped in this crate.
    pub fn amd() -> Self {
        let roots = AMD_ROOTS
            .iter()
            .map(|(product, ark, ask)| TrustedRoot {
                product: *product,
                kind: RootKind::Amd,
                ark: Cert::parse(&format!("ARK-{}", product.name()), ark)
                    .expect("shipped ARK parses"),
                ask: Some(
                    Cert::parse(&format!("ASK-{}", product.name()), ask)
                        .expect("shipped ASK parses"),
                ),
            })
            .collect();
        TrustedRoots(roots)
    }

    /// How many roots are trusted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds a root after checking that the ARK is self-signed and signed the ASK.
    pub fn add(&mut self, root: TrustedRoot) -> Result<(), VerifyError> {
        root.ark
            .verify_signed_by(&root.ark)
            .map_err(VerifyError::Chain)?;
        if let Some(ask) = &root.ask {
            ask.verify_signed_by(&root.ark)
                .map_err(VerifyError::Chain)?;
        }
        self.0.push(root);
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = &TrustedRoot> {
        self.0.iter()
    }
}

/// The certificates that come with a report. ARK and ASK may be omitted: the trusted root's
/// own are used then.
#[derive(Clone, Debug)]
pub struct CertChain {
    pub ark: Option<Cert>,
    pub ask: Option<Cert>,
    /// The VCEK (or VLEK) that signed the report.
    pub vcek: Cert,
}

impl CertChain {
    /// Sorts certificates by shape, whatever their order: the P-384 leaf is the VCEK/VLEK, the
    /// self-issued RSA certificate is the ARK, the other RSA certificate is the ASK.
    pub fn from_certs(certs: Vec<Cert>) -> Result<Self, VerifyError> {
        let mut vcek = None;
        let mut ark = None;
        let mut ask = None;
        for c in certs {
            let slot = if c.is_p384() {
                &mut vcek
            } else if c.is_rsa() && c.is_self_issued() {
                &mut ark
            } else if c.is_rsa() {
                &mut ask
            } else {
                return Err(VerifyError::ChainShape(format!(
                    "certificate {} has neither a P-384 nor an RSA key",
                    c.subject()
                )));
            };
            if slot.is_some() {
                return Err(VerifyError::ChainShape(
                    "the chain holds two certificates of the same role".into(),
                ));
            }
            *slot = Some(c);
        }
        let vcek = vcek.ok_or_else(|| {
            VerifyError::ChainShape("the chain holds no VCEK/VLEK (P-384) certificate".into())
        })?;
        Ok(CertChain { ark, ask, vcek })
    }
}

/// Why a report is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed report: {0}")]
    Report(#[from] ReportError),
    #[error("certificate chain: {0}")]
    Chain(CertError),
    #[error("certificate chain: {0}")]
    ChainShape(String),
    #[error(
        "the ARK in the evidence ({0}) is not one of the trusted roots; evidence from another root (or a simulated platform) is not accepted here"
    )]
    UntrustedRoot(String),
    #[error("the VCEK/VLEK does not chain to any trusted root")]
    NoRootSignedVcek,
    #[error("the report is unsigned (signing key field says none)")]
    Unsigned,
    #[error("the report says it was signed by a {report} but the leaf certificate is a {cert}")]
    SigningKeyMismatch {
        report: &'static str,
        cert: &'static str,
    },
    #[error(
        "the VCEK's hwID does not match the report's chip_id: this VCEK belongs to another chip"
    )]
    ChipIdMismatch,
    #[error("the VCEK was issued for TCB {cert:?} but the report claims reported_tcb {report:?}")]
    TcbMismatch { cert: TcbParts, report: TcbParts },
    #[error("the report signature does not verify with the VCEK: the report was altered or forged")]
    BadReportSignature,
}

/// A report whose signature chains to a trusted root. Only [`verify_report`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedReport {
    report: AttestationReport,
    product: Product,
    root_kind: RootKind,
}

impl VerifiedReport {
    pub fn report(&self) -> &AttestationReport {
        &self.report
    }
    pub fn product(&self) -> Product {
        self.product
    }
    pub fn root_kind(&self) -> RootKind {
        self.root_kind
    }
    pub fn reported_tcb(&self) -> TcbParts {
        self.report.reported_tcb.parts(self.product)
    }
}

/// Verifies `raw` (an attestation report) against `chain` and `roots`. With `at`, every
/// certificate must be valid at that time; without, expiry is not checked (an explicit policy
/// decision of the caller).
pub fn verify_report(
    raw: &[u8],
    chain: &CertChain,
    roots: &TrustedRoots,
    at: Option<SystemTime>,
) -> Result<VerifiedReport, VerifyError> {
    let report = AttestationReport::parse(raw)?;
    let root = select_root(chain, roots)?;
    let ask = chain.ask.as_ref().or(root.ask.as_ref()).ok_or_else(|| {
        VerifyError::ChainShape(
            "the evidence carries no ASK and the trusted root has none on file".into(),
        )
    })?;
    ask.verify_signed_by(&root.ark)
        .map_err(VerifyError::Chain)?;
    chain
        .vcek
        .verify_signed_by(ask)
        .map_err(VerifyError::Chain)?;
    if let Some(at) = at {
        for c in [&root.ark, ask, &chain.vcek] {
            c.check_validity(at).map_err(VerifyError::Chain)?;
        }
    }
    check_leaf(&report, &chain.vcek, root.product)?;

    let sig = report
        .signature
        .to_fixed_be()
        .ok_or(VerifyError::BadReportSignature)?;
    signature::UnparsedPublicKey::new(
        &signature::ECDSA_P384_SHA384_FIXED,
        chain.vcek.public_key_bytes(),
    )
    .verify(&raw[..report::SIGNED_LEN], &sig)
    .map_err(|_| VerifyError::BadReportSignature)?;
    Ok(VerifiedReport {
        report,
        product: root.product,
        root_kind: root.kind,
    })
}

fn select_root<'r>(
    chain: &CertChain,
    roots: &'r TrustedRoots,
) -> Result<&'r TrustedRoot, VerifyError> {
    if let Some(ark) = &chain.ark {
        let root = roots
            .iter()
            .find(|r| r.ark.der == ark.der)
            .ok_or_else(|| VerifyError::UntrustedRoot(ark.subject()))?;
        root.ark
            .verify_signed_by(&root.ark)
            .map_err(VerifyError::Chain)?;
        return Ok(root);
    }
    // No ARK supplied: the root is whichever trusted root issued the ASK (or the VCEK).
    let issuer = chain.ask.as_ref().unwrap_or(&chain.vcek);
    roots
        .iter()
        .find(|r| {
            let signer = if chain.ask.is_some() {
                Some(&r.ark)
            } else {
                r.ask.as_ref()
            };
            signer.is_some_and(|s| issuer.verify_signed_by(s).is_ok())
        })
        .ok_or(VerifyError::NoRootSignedVcek)
}

fn check_leaf(
    report: &AttestationReport,
    leaf: &Cert,
    product: Product,
) -> Result<(), VerifyError> {
    let leaf_kind = if leaf.extension(x509::amd_oid::CSP_ID).is_some() {
        "VLEK"
    } else {
        "VCEK"
    };
    match (report.signing_key, leaf_kind) {
        (report::SigningKey::None, _) => return Err(VerifyError::Unsigned),
        (report::SigningKey::Vcek, "VCEK") | (report::SigningKey::Vlek, "VLEK") => {}
        (report::SigningKey::Vcek, cert) => {
            return Err(VerifyError::SigningKeyMismatch {
                report: "VCEK",
                cert,
            });
        }
        (report::SigningKey::Vlek, cert) => {
            return Err(VerifyError::SigningKeyMismatch {
                report: "VLEK",
                cert,
            });
        }
    }
    if leaf_kind == "VCEK" {
        let hw_id = leaf
            .amd_hw_id()
            .map_err(VerifyError::Chain)?
            .ok_or(VerifyError::ChipIdMismatch)?;
        // Turin VCEKs carry 8 bytes: the chip id is those bytes followed by zeros.
        let (head, tail) = report.chip_id.split_at(hw_id.len());
        if head != hw_id.as_slice() || tail.iter().any(|&b| b != 0) {
            return Err(VerifyError::ChipIdMismatch);
        }
    }
    let spl = |oid| leaf.amd_spl(oid).map_err(VerifyError::Chain);
    let cert_tcb = TcbParts {
        fmc: if product.is_turin_layout() {
            spl(x509::amd_oid::FMC_SPL)?
        } else {
            None
        },
        bootloader: spl(x509::amd_oid::BL_SPL)?.unwrap_or(0),
        tee: spl(x509::amd_oid::TEE_SPL)?.unwrap_or(0),
        snp: spl(x509::amd_oid::SNP_SPL)?.unwrap_or(0),
        microcode: spl(x509::amd_oid::UCODE_SPL)?.unwrap_or(0),
    };
    let report_tcb = report.reported_tcb.parts(product);
    if cert_tcb != report_tcb {
        return Err(VerifyError::TcbMismatch {
            cert: cert_tcb,
            report: report_tcb,
        });
    }
    Ok(())
}
