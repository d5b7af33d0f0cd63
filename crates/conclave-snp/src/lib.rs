//! AMD SEV-SNP evidence: the attestation report (parse and serialise), AMD's certificate chain
//! (ARK → ASK → VCEK/VLEK) and the checks that make a report trustworthy.
//!
//! The same [`verify_report`] checks hardware reports and the simulated platform's reports;
//! only the [`TrustedRoots`] differ, and a [`VerifiedReport`] says which kind of root it chained
//! to, so that nothing downstream can mistake simulated evidence for hardware evidence.

#![forbid(unsafe_code)]

pub mod amd_cert;
pub mod kds;
pub mod report;

/// X.509 lives in `conclave-pki`; here under its old path, with AMD's extension OIDs.
pub mod x509 {
    pub use crate::amd_cert::amd_oid;
    pub use conclave_pki::x509::*;
}

use std::time::SystemTime;

use aws_lc_rs::signature;

pub use amd_cert::AmdCert;
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

/// The key that signed a report (`SIGNING_KEY` in the report, AMD SEV-SNP firmware ABI
/// Table 23), with the intermediate that certifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EndorsementKey {
    /// Versioned Chip Endorsement Key: one chip at one TCB, certified by the ASK.
    Vcek,
    /// Versioned Loaded Endorsement Key: loaded by a cloud provider (CSP_ID), certified by the
    /// ASVK (`SEV-VLEK-{product}`), not by the ASK.
    Vlek,
}

impl EndorsementKey {
    /// The key a certificate is for: VLEK when it names a cloud provider or is `CN=SEV-VLEK`.
    pub fn of(leaf: &Cert) -> Self {
        if leaf.is_vlek() {
            EndorsementKey::Vlek
        } else {
            EndorsementKey::Vcek
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EndorsementKey::Vcek => "VCEK",
            EndorsementKey::Vlek => "VLEK",
        }
    }

    /// The AMD intermediate that signs this kind of key: ASK for VCEKs, ASVK for VLEKs.
    pub fn intermediate(self) -> &'static str {
        match self {
            EndorsementKey::Vcek => "ASK",
            EndorsementKey::Vlek => "ASVK",
        }
    }
}

/// A trusted ARK with the intermediates it issued: the ASK (signs VCEKs) and the ASVK (signs
/// VLEKs).
#[derive(Clone, Debug)]
pub struct TrustedRoot {
    pub product: Product,
    pub kind: RootKind,
    pub ark: Cert,
    /// The ASK, used when the evidence does not carry one.
    pub ask: Option<Cert>,
    /// The ASVK, used when VLEK evidence does not carry one.
    pub asvk: Option<Cert>,
}

impl TrustedRoot {
    pub(crate) fn intermediate(&self, key: EndorsementKey) -> Option<&Cert> {
        match key {
            EndorsementKey::Vcek => self.ask.as_ref(),
            EndorsementKey::Vlek => self.asvk.as_ref(),
        }
    }
}

/// The set of roots a verifier accepts.
#[derive(Clone, Debug, Default)]
pub struct TrustedRoots(Vec<TrustedRoot>);

/// One generation's PEM certificates: (product, ARK, ASK, ASVK).
type ShippedRoot = (Product, &'static [u8], &'static [u8], &'static [u8]);

/// AMD's roots as AMD KDS serves them (see `roots/README.md`).
const AMD_ROOTS: [ShippedRoot; 3] = [
    (
        Product::Milan,
        include_bytes!("../roots/milan-ark.pem"),
        include_bytes!("../roots/milan-ask.pem"),
        include_bytes!("../roots/milan-asvk.pem"),
    ),
    (
        Product::Genoa,
        include_bytes!("../roots/genoa-ark.pem"),
        include_bytes!("../roots/genoa-ask.pem"),
        include_bytes!("../roots/genoa-asvk.pem"),
    ),
    (
        Product::Turin,
        include_bytes!("../roots/turin-ark.pem"),
        include_bytes!("../roots/turin-ask.pem"),
        include_bytes!("../roots/turin-asvk.pem"),
    ),
];

impl TrustedRoots {
    /// No roots: every report is rejected until roots are added.
    pub fn empty() -> Self {
        TrustedRoots(Vec::new())
    }

    /// AMD's roots for Milan, Genoa and Turin, with their ASKs and ASVKs, shipped in this crate.
    pub fn amd() -> Self {
        let roots = AMD_ROOTS
            .iter()
            .map(|(product, ark, ask, asvk)| TrustedRoot {
                product: *product,
                kind: RootKind::Amd,
                ark: Cert::parse(&format!("ARK-{}", product.name()), ark)
                    .expect("shipped ARK parses"),
                ask: Some(
                    Cert::parse(&format!("ASK-{}", product.name()), ask)
                        .expect("shipped ASK parses"),
                ),
                asvk: Some(
                    Cert::parse(&format!("ASVK-{}", product.name()), asvk)
                        .expect("shipped ASVK parses"),
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

    /// Adds a root after checking that the ARK is self-signed and signed the ASK and ASVK.
    pub fn add(&mut self, root: TrustedRoot) -> Result<(), VerifyError> {
        root.ark
            .verify_signed_by(&root.ark)
            .map_err(VerifyError::Chain)?;
        for intermediate in [&root.ask, &root.asvk].into_iter().flatten() {
            intermediate
                .verify_signed_by(&root.ark)
                .map_err(VerifyError::Chain)?;
        }
        self.0.push(root);
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = &TrustedRoot> {
        self.0.iter()
    }
}

/// The certificates that come with a report. ARK, ASK and ASVK may be omitted: the trusted
/// root's own are used then.
#[derive(Clone, Debug)]
pub struct CertChain {
    pub ark: Option<Cert>,
    /// The ASK (`CN=SEV-{product}`), which signs VCEKs.
    pub ask: Option<Cert>,
    /// The ASVK (`CN=SEV-VLEK-{product}`), which signs VLEKs.
    pub asvk: Option<Cert>,
    /// The VCEK or VLEK that signed the report ([`EndorsementKey::of`] tells which).
    pub vcek: Cert,
}

impl CertChain {
    /// A chain of a leaf alone: the trusted root's intermediates are used.
    pub fn leaf(vcek: Cert) -> Self {
        CertChain {
            ark: None,
            ask: None,
            asvk: None,
            vcek,
        }
    }

    /// Sorts certificates by shape, whatever their order: the P-384 leaf is the VCEK/VLEK, the
    /// self-issued RSA certificate is the ARK, an RSA certificate named `SEV-VLEK-*` is the
    /// ASVK, the other RSA certificate is the ASK. Each is renamed after its role, so that
    /// errors say "VLEK" or "ASVK" rather than a position in a bundle.
    pub fn from_certs(certs: Vec<Cert>) -> Result<Self, VerifyError> {
        let mut vcek = None;
        let mut ark = None;
        let mut ask = None;
        let mut asvk = None;
        for mut c in certs {
            let (slot, role) = if c.is_p384() {
                (&mut vcek, EndorsementKey::of(&c).name())
            } else if c.is_rsa() && c.is_self_issued() {
                (&mut ark, "ARK")
            } else if c.is_asvk() {
                (&mut asvk, "ASVK")
            } else if c.is_rsa() {
                (&mut ask, "ASK")
            } else {
                return Err(VerifyError::ChainShape(format!(
                    "certificate {} has neither a P-384 nor an RSA key",
                    c.subject()
                )));
            };
            if slot.is_some() {
                return Err(VerifyError::ChainShape(format!(
                    "the chain holds two certificates of the same role ({role})"
                )));
            }
            c.what = role.to_string();
            *slot = Some(c);
        }
        let vcek = vcek.ok_or_else(|| {
            VerifyError::ChainShape("the chain holds no VCEK/VLEK (P-384) certificate: send it with the evidence, or give the verifier an AMD KDS cache (--kds-cache)".into())
        })?;
        Ok(CertChain {
            ark,
            ask,
            asvk,
            vcek,
        })
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
    #[error("the {0} does not chain to any trusted root")]
    NoRootSignedLeaf(&'static str),
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
    #[error("the {key} was issued for TCB {cert:?} but the report claims reported_tcb {report:?}")]
    TcbMismatch {
        key: &'static str,
        cert: TcbParts,
        report: TcbParts,
    },
    #[error("revocation: {0}")]
    Revocation(String),
    #[error("the report signature does not verify with the {0}: the report was altered or forged")]
    BadReportSignature(&'static str),
}

/// A report whose signature chains to a trusted root. Only [`verify_report`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedReport {
    report: AttestationReport,
    product: Product,
    root_kind: RootKind,
    endorsement_key: EndorsementKey,
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
    /// Whether a VCEK or a VLEK signed the report.
    pub fn endorsement_key(&self) -> EndorsementKey {
        self.endorsement_key
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
    let key = EndorsementKey::of(&chain.vcek);
    let root = select_root(chain, key, roots)?;
    let intermediate = chain
        .intermediate(key)
        .or(root.intermediate(key))
        .ok_or_else(|| {
            VerifyError::ChainShape(format!(
                "the evidence carries no {} and the trusted root has none on file (a {} is \
                 certified by the {}: AMD KDS /{}/v1/{}/cert_chain)",
                key.intermediate(),
                key.name(),
                key.intermediate(),
                key.name().to_lowercase(),
                root.product.name(),
            ))
        })?;
    intermediate
        .verify_signed_by(&root.ark)
        .map_err(VerifyError::Chain)?;
    chain
        .vcek
        .verify_signed_by(intermediate)
        .map_err(VerifyError::Chain)?;
    if let Some(at) = at {
        for c in [&root.ark, intermediate, &chain.vcek] {
            c.check_validity(at).map_err(VerifyError::Chain)?;
        }
    }
    check_leaf(&report, &chain.vcek, key, root.product)?;

    let sig = report
        .signature
        .to_fixed_be()
        .ok_or(VerifyError::BadReportSignature(key.name()))?;
    signature::UnparsedPublicKey::new(
        &signature::ECDSA_P384_SHA384_FIXED,
        chain.vcek.public_key_bytes(),
    )
    .verify(&raw[..report::SIGNED_LEN], &sig)
    .map_err(|_| VerifyError::BadReportSignature(key.name()))?;
    Ok(VerifiedReport {
        report,
        product: root.product,
        root_kind: root.kind,
        endorsement_key: key,
    })
}

impl CertChain {
    pub(crate) fn intermediate(&self, key: EndorsementKey) -> Option<&Cert> {
        match key {
            EndorsementKey::Vcek => self.ask.as_ref(),
            EndorsementKey::Vlek => self.asvk.as_ref(),
        }
    }
}

fn select_root<'r>(
    chain: &CertChain,
    key: EndorsementKey,
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
    // No ARK supplied: the root is whichever trusted root issued the intermediate (or, without
    // one, the leaf).
    let supplied = chain.intermediate(key);
    let issued = supplied.unwrap_or(&chain.vcek);
    roots
        .iter()
        .find(|r| {
            let signer = if supplied.is_some() {
                Some(&r.ark)
            } else {
                r.intermediate(key)
            };
            signer.is_some_and(|s| issued.verify_signed_by(s).is_ok())
        })
        .ok_or(VerifyError::NoRootSignedLeaf(key.name()))
}

fn check_leaf(
    report: &AttestationReport,
    leaf: &Cert,
    key: EndorsementKey,
    product: Product,
) -> Result<(), VerifyError> {
    let leaf_kind = key.name();
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
            key: leaf_kind,
            cert: cert_tcb,
            report: report_tcb,
        });
    }
    Ok(())
}
