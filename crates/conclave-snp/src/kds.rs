//! AMD's certificates without a network: an offline cache of AMD Key Distribution Service
//! responses, laid out as KDS's URL paths (AMD "Versioned Chip Endorsement Key (VCEK)
//! Certificate and KDS Interface Specification", 57230):
//!
//! ```text
//! <cache>/vcek/v1/<product>/<hwid>/<query>.der   GET /vcek/v1/<product>/<hwid>?<query>
//! <cache>/vcek/v1/<product>/cert_chain.pem       GET /vcek/v1/<product>/cert_chain  (ASK, ARK)
//! <cache>/vcek/v1/<product>/crl.der              GET /vcek/v1/<product>/crl
//! <cache>/vlek/v1/<product>/cert_chain.pem       GET /vlek/v1/<product>/cert_chain  (ASVK, ARK)
//! <cache>/vlek/v1/<product>/crl.der              GET /vlek/v1/<product>/crl
//! ```
//!
//! `<query>` is `blSPL=…&teeSPL=…&snpSPL=…&ucodeSPL=…` (Turin: `fmcSPL=…&` first, and an
//! 8-byte hwid). VLEKs are not served by chip: a cloud provider hands them to its guests.
//!
//! A cached CRL is checked whenever its product's evidence is verified: it must be signed by the
//! trusted ARK, and no certificate of the chain may be on it.

use std::path::{Path, PathBuf};

use der::Decode as _;
use der::Encode as _;
use x509_cert::crl::CertificateList;

use crate::report::AttestationReport;
use crate::{Cert, CertChain, EndorsementKey, Product, TrustedRoots, VerifyError};

/// AMD's KDS.
pub const AMD_KDS_URL: &str = "https://kdsintf.amd.com";

/// The KDS path segment of a key kind.
fn kind_path(key: EndorsementKey) -> &'static str {
    match key {
        EndorsementKey::Vcek => "vcek",
        EndorsementKey::Vlek => "vlek",
    }
}

/// The chip id as KDS names it: 64 bytes of hex, the first 8 on Turin.
pub fn hwid_hex(report: &AttestationReport, product: Product) -> String {
    let len = if product.is_turin_layout() { 8 } else { 64 };
    hex::encode(&report.chip_id[..len])
}

/// The query naming the reported TCB (57230 §4.2; Turin adds `fmcSPL`).
pub fn vcek_query(report: &AttestationReport, product: Product) -> String {
    let t = report.reported_tcb.parts(product);
    let mut q = String::new();
    if let Some(fmc) = t.fmc {
        q.push_str(&format!("fmcSPL={fmc}&"));
    }
    q.push_str(&format!(
        "blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
        t.bootloader, t.tee, t.snp, t.microcode
    ));
    q
}

/// `GET {base}/vcek/v1/{product}/{hwid}?{query}`: the VCEK that signed `report`.
pub fn vcek_url(base: &str, product: Product, report: &AttestationReport) -> String {
    format!(
        "{}/vcek/v1/{}/{}?{}",
        base.trim_end_matches('/'),
        product.name(),
        hwid_hex(report, product),
        vcek_query(report, product)
    )
}

/// `GET {base}/{vcek|vlek}/v1/{product}/cert_chain`: the intermediate and the ARK, PEM.
pub fn chain_url(base: &str, key: EndorsementKey, product: Product) -> String {
    format!(
        "{}/{}/v1/{}/cert_chain",
        base.trim_end_matches('/'),
        kind_path(key),
        product.name()
    )
}

/// `GET {base}/{vcek|vlek}/v1/{product}/crl`: the ARK's CRL, DER.
pub fn crl_url(base: &str, key: EndorsementKey, product: Product) -> String {
    format!(
        "{}/{}/v1/{}/crl",
        base.trim_end_matches('/'),
        kind_path(key),
        product.name()
    )
}

/// Why the cache could not supply what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KdsError {
    #[error(
        "the KDS cache {cache} has no {what} ({path}); fill it with `conclave attest kds fetch` (it comes from {url})"
    )]
    Missing {
        what: String,
        cache: String,
        path: String,
        url: String,
    },
    #[error(
        "the report does not say which AMD product made it (a version {0} report has no CPUID): give the product (Milan, Genoa or Turin)"
    )]
    UnknownProduct(u32),
    #[error("{0}")]
    Unreadable(String),
}

/// An offline directory of KDS responses.
#[derive(Debug, Clone)]
pub struct KdsCache {
    dir: PathBuf,
}

impl KdsCache {
    pub fn new(dir: &Path) -> Self {
        KdsCache {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the VCEK of `report` is (or goes).
    pub fn vcek_path(&self, product: Product, report: &AttestationReport) -> PathBuf {
        self.dir
            .join("vcek/v1")
            .join(product.name())
            .join(hwid_hex(report, product))
            .join(format!("{}.der", vcek_query(report, product)))
    }

    pub fn chain_path(&self, key: EndorsementKey, product: Product) -> PathBuf {
        self.dir
            .join(kind_path(key))
            .join("v1")
            .join(product.name())
            .join("cert_chain.pem")
    }

    pub fn crl_path(&self, key: EndorsementKey, product: Product) -> PathBuf {
        self.dir
            .join(kind_path(key))
            .join("v1")
            .join(product.name())
            .join("crl.der")
    }

    /// The products to look under: the report's own (from its CPUID), or, for a report that
    /// does not say, `hint`, or every product.
    fn products(report: &AttestationReport, hint: Option<Product>) -> Vec<Product> {
        match (report.product_from_cpuid(), hint) {
            (Some(p), _) | (None, Some(p)) => vec![p],
            (None, None) => vec![Product::Milan, Product::Genoa, Product::Turin],
        }
    }

    /// The chain for `raw` (an attestation report) from the cache, completing `given` (the
    /// certificates that came with the evidence, if any): the VCEK by chip and TCB, and the
    /// product's ASK/ASVK and ARK when cached.
    pub fn complete_chain(
        &self,
        raw: &[u8],
        given: Option<CertChain>,
        hint: Option<Product>,
    ) -> Result<CertChain, KdsError> {
        let report = AttestationReport::parse(raw)
            .map_err(|e| KdsError::Unreadable(format!("the report: {e}")))?;
        let products = Self::products(&report, hint);
        let mut chain = match given {
            Some(chain) => chain,
            None if report.signing_key == crate::report::SigningKey::Vlek => {
                return Err(KdsError::Unreadable(
                    "the report is signed by a VLEK, which AMD's KDS does not serve by chip: the VLEK must come with the evidence (the cloud provider hands it to its guests)".into(),
                ));
            }
            None => {
                let mut missing = None;
                let mut found = None;
                for &p in &products {
                    let path = self.vcek_path(p, &report);
                    match std::fs::read(&path) {
                        Ok(der) => {
                            found = Some(Cert::parse("VCEK (KDS cache)", &der).map_err(|e| {
                                KdsError::Unreadable(format!("{}: {e}", path.display()))
                            })?);
                            break;
                        }
                        Err(_) if missing.is_none() => {
                            missing = Some(KdsError::Missing {
                                what: format!(
                                    "VCEK for {} chip {}… at TCB {}",
                                    p.name(),
                                    &hwid_hex(&report, p)[..16],
                                    vcek_query(&report, p)
                                ),
                                cache: self.dir.display().to_string(),
                                path: path.display().to_string(),
                                url: vcek_url(AMD_KDS_URL, p, &report),
                            });
                        }
                        Err(_) => {}
                    }
                }
                match found {
                    Some(vcek) => CertChain::leaf(vcek),
                    None => return Err(missing.expect("at least one product was tried")),
                }
            }
        };
        let key = EndorsementKey::of(&chain.vcek);
        for &p in &products {
            let path = self.chain_path(key, p);
            let Ok(pem) = std::fs::read(&path) else {
                continue;
            };
            let certs = Cert::parse_pem_bundle("cert_chain (KDS cache)", &pem)
                .map_err(|e| KdsError::Unreadable(format!("{}: {e}", path.display())))?;
            let cached = CertChain::from_certs(
                certs
                    .into_iter()
                    .chain(std::iter::once(chain.vcek.clone()))
                    .collect(),
            )
            .map_err(|e| KdsError::Unreadable(format!("{}: {e}", path.display())))?;
            chain.ark = chain.ark.take().or(cached.ark);
            chain.ask = chain.ask.take().or(cached.ask);
            chain.asvk = chain.asvk.take().or(cached.asvk);
            break;
        }
        Ok(chain)
    }

    /// Checks the cached CRL of the root that issued this chain (the trusted ARK that signed its
    /// ASK/ASVK, which signed the leaf): the CRL must be that ARK's (its issuer, its signature;
    /// a CRL nobody trusted signed is refused, not ignored), current at `at` (its `nextUpdate`
    /// not passed; `None` skips the time check, for archived evidence), and must not list the
    /// intermediate the chain goes through. Says whether a CRL was there to check.
    pub fn check_revocation(
        &self,
        chain: &CertChain,
        roots: &TrustedRoots,
        at: Option<std::time::SystemTime>,
    ) -> Result<Revocation, VerifyError> {
        let key = EndorsementKey::of(&chain.vcek);
        // The root and intermediate the leaf chains through.
        let issuer = roots.iter().find_map(|r| {
            let intermediate = chain.intermediate(key).or(r.intermediate(key))?;
            (intermediate.verify_signed_by(&r.ark).is_ok()
                && chain.vcek.verify_signed_by(intermediate).is_ok())
            .then_some((r, intermediate))
        });
        let Some((root, intermediate)) = issuer else {
            return Ok(Revocation::NoIssuer);
        };
        let path = self.crl_path(key, root.product);
        let Ok(der) = std::fs::read(&path) else {
            return Ok(Revocation::NotChecked(path));
        };
        let crl = CertificateList::from_der(&der).map_err(|e| {
            VerifyError::Revocation(format!(
                "{} is not a DER CRL ({e}); delete it or fetch it again",
                path.display()
            ))
        })?;
        if check_crl(&crl, &root.ark).is_err() {
            // Another trusted root of the same product (a simulated one beside AMD's) may have
            // signed it: then it is not this root's CRL. Signed by none: refused.
            let reasons: Vec<String> = roots
                .iter()
                .filter(|r| r.product == root.product)
                .filter_map(|r| check_crl(&crl, &r.ark).err())
                .collect();
            if reasons.len() == roots.iter().filter(|r| r.product == root.product).count() {
                return Err(VerifyError::Revocation(format!(
                    "{} is not signed by a trusted {} ARK ({}); delete it or fetch it again",
                    path.display(),
                    root.product.name(),
                    reasons.join("; ")
                )));
            }
            return Ok(Revocation::NotChecked(path));
        }
        if let (Some(at), Some(next)) = (at, crl.tbs_cert_list.next_update)
            && at > next.to_system_time()
        {
            return Err(VerifyError::Revocation(format!(
                "{} expired at {next} (its nextUpdate): fetch it again with `conclave attest kds fetch`",
                path.display()
            )));
        }
        let listed = crl
            .tbs_cert_list
            .revoked_certificates
            .as_deref()
            .unwrap_or_default();
        let serial = intermediate.cert.tbs_certificate().serial_number();
        if listed.iter().any(|r| r.serial_number == *serial) {
            return Err(VerifyError::Revocation(format!(
                "{} ({}, serial {serial}) is revoked by {}'s CRL ({})",
                intermediate.what,
                intermediate.subject(),
                root.ark.what,
                path.display()
            )));
        }
        Ok(Revocation::Checked(path))
    }
}

/// What [`KdsCache::check_revocation`] could check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The issuing ARK's CRL at this path was checked: the intermediate is not on it.
    Checked(PathBuf),
    /// No CRL of the issuing ARK is cached at this path: revocation was not checked.
    NotChecked(PathBuf),
    /// The chain goes through no trusted root (verification refuses it anyway).
    NoIssuer,
}

/// Refuses to replace a cached CRL with an older one (a mirror rolling revocation back): the
/// new CRL's `thisUpdate` must not be before the cached one's.
pub fn check_not_older(new_der: &[u8], cached_der: &[u8]) -> Result<(), KdsError> {
    let parse = |der: &[u8]| {
        <CertificateList>::from_der(der)
            .map_err(|e| KdsError::Unreadable(format!("not a DER CRL: {e}")))
    };
    let (new, cached) = (parse(new_der)?, parse(cached_der)?);
    let (n, c) = (
        new.tbs_cert_list.this_update.to_system_time(),
        cached.tbs_cert_list.this_update.to_system_time(),
    );
    if n < c {
        return Err(KdsError::Unreadable(format!(
            "the CRL served was issued at {}, before the cached one ({}): an older CRL could hide a revocation, so the cached one is kept",
            new.tbs_cert_list.this_update, cached.tbs_cert_list.this_update
        )));
    }
    Ok(())
}

/// Checks that `der` is a CRL signed by a trusted ARK of `product` (before a fetched CRL is
/// kept).
pub fn verify_crl(der: &[u8], roots: &TrustedRoots, product: Product) -> Result<(), KdsError> {
    let crl = <CertificateList>::from_der(der)
        .map_err(|e| KdsError::Unreadable(format!("not a DER CRL: {e}")))?;
    let reasons: Vec<String> = roots
        .iter()
        .filter(|r| r.product == product)
        .map(|r| check_crl(&crl, &r.ark))
        .filter_map(Result::err)
        .collect();
    if reasons.len() == roots.iter().filter(|r| r.product == product).count() {
        return Err(KdsError::Unreadable(format!(
            "the CRL is not signed by a trusted {} ARK ({})",
            product.name(),
            reasons.join("; ")
        )));
    }
    Ok(())
}

/// Whether `der` parses as an X.509 CRL (RFC 5280 §5), before it is written to a cache.
pub fn check_crl_shape(der: &[u8]) -> Result<(), KdsError> {
    <CertificateList>::from_der(der)
        .map(|_| ())
        .map_err(|e| KdsError::Unreadable(format!("not a DER CRL: {e}")))
}

/// Checks a CRL's signature: RSASSA-PSS SHA-384 by `ark`, as AMD signs its CRLs.
fn check_crl(crl: &CertificateList, ark: &Cert) -> Result<(), String> {
    if crl.tbs_cert_list.issuer != *ark.cert.tbs_certificate().subject() {
        return Err(format!(
            "the CRL's issuer is {}, not {}",
            crl.tbs_cert_list.issuer, ark.what
        ));
    }
    if crl.tbs_cert_list.signature != crl.signature_algorithm {
        return Err("the CRL's inner and outer signature algorithms differ".into());
    }
    let alg = &crl.signature_algorithm;
    if alg.oid != crate::x509::OID_RSASSA_PSS {
        return Err(format!(
            "the CRL is signed with {}, not RSASSA-PSS as AMD signs",
            alg.oid
        ));
    }
    let tbs = crl
        .tbs_cert_list
        .to_der()
        .map_err(|e| format!("the CRL does not re-encode: {e}"))?;
    let sig = crl
        .signature
        .as_bytes()
        .ok_or("the CRL's signature has unused bits")?;
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA384,
        ark.public_key_bytes(),
    )
    .verify(&tbs, sig)
    .map_err(|_| {
        format!(
            "the CRL's signature does not verify with {}'s key",
            ark.what
        )
    })
}

/// Issues a CRL signed by `signer` (RSASSA-PSS SHA-384) for `issuer`, revoking `revoked`
/// serials: for a simulated platform's root, and for tests of revocation.
pub fn issue_crl(
    issuer: &Cert,
    signer: &crate::x509::CertSigningKey,
    revoked: &[&Cert],
    this_update: std::time::SystemTime,
    next_update: Option<std::time::SystemTime>,
) -> Result<Vec<u8>, crate::CertError> {
    use x509_cert::crl::{RevokedCert, TbsCertList};
    use x509_cert::spki::DynSignatureAlgorithmIdentifier as _;
    let err = |e: &dyn std::fmt::Display| crate::CertError::Issue(e.to_string());
    let now = x509_cert::time::Time::try_from(this_update).map_err(|e| err(&e))?;
    let next_update = next_update
        .map(x509_cert::time::Time::try_from)
        .transpose()
        .map_err(|e| err(&e))?;
    let alg = signer
        .signature_algorithm_identifier()
        .map_err(|e| err(&e))?;
    let tbs = TbsCertList {
        version: x509_cert::Version::V2,
        signature: alg.clone(),
        issuer: issuer.cert.tbs_certificate().subject().clone(),
        this_update: now,
        next_update,
        revoked_certificates: (!revoked.is_empty()).then(|| {
            revoked
                .iter()
                .map(|c| RevokedCert {
                    serial_number: c.cert.tbs_certificate().serial_number().clone(),
                    revocation_date: now,
                    crl_entry_extensions: None,
                })
                .collect()
        }),
        crl_extensions: None,
    };
    let tbs_der = tbs.to_der().map_err(|e| err(&e))?;
    let sig = signature::Signer::<crate::x509::RawSignature>::try_sign(signer, &tbs_der)
        .map_err(|e| err(&e))?;
    let crl = CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: alg,
        signature: der::asn1::BitString::from_bytes(&sig.into_bytes()).map_err(|e| err(&e))?,
    };
    crl.to_der().map_err(|e| err(&e))
}
