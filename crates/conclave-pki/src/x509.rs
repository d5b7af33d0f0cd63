//! X.509 certificates (RFC 5280): parsing (DER or PEM) with `x509-cert`, signature checks
//! through aws-lc-rs (RSASSA-PSS SHA-384 as AMD signs, RSA PKCS#1 v1.5 SHA-256, ECDSA), issuing
//! certificates with `x509-cert`'s builder, and SPKI helpers. AMD's own extensions are read in
//! `conclave-snp`.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as lc, EcdsaKeyPair, KeyPair, RsaKeyPair};
use der::asn1::{BitString, ObjectIdentifier, OctetString};
use der::{Decode, DecodePem, Encode, Sequence};
use x509_cert::Certificate;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SignatureBitStringEncoding, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef,
};
use x509_cert::time::Validity;

pub const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
pub const OID_SHA256_WITH_RSA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
pub const OID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
pub const OID_ECDSA_WITH_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
pub const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
pub const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub const OID_SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Why a certificate could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{what} is not a valid X.509 certificate (DER or PEM): {detail}")]
    Malformed { what: String, detail: String },
    #[error("{what} is signed with an algorithm Conclave does not accept ({oid})")]
    UnsupportedSignatureAlgorithm { what: String, oid: String },
    #[error("{what}: RSASSA-PSS parameters are not SHA-384 / MGF1-SHA-384 / salt 48 as AMD uses")]
    WrongPssParameters { what: String },
    #[error("{what} has a public key Conclave cannot use here")]
    UnsupportedKey { what: String },
    #[error("the signature on {what} does not verify with {issuer}'s key")]
    BadSignature { what: String, issuer: String },
    #[error("{what} is not valid at {at}: valid from {not_before} to {not_after}")]
    Expired {
        what: String,
        at: String,
        not_before: String,
        not_after: String,
    },
    #[error("{what}: extension {oid} is malformed")]
    BadExtension { what: String, oid: String },
    #[error("could not issue a certificate: {0}")]
    Issue(String),
}

/// RSASSA-PSS-params (RFC 4055); AMD encodes every field explicitly.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct PssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    salt_len: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    trailer: Option<u32>,
}

fn sha384_alg() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: OID_SHA384,
        parameters: Some(der::Any::null()),
    }
}

fn pss_sha384_alg() -> AlgorithmIdentifierOwned {
    let mgf = AlgorithmIdentifierOwned {
        oid: OID_MGF1,
        parameters: Some(der::Any::encode_from(&sha384_alg()).expect("static encoding")),
    };
    let params = PssParams {
        hash: Some(sha384_alg()),
        mask_gen: Some(mgf),
        salt_len: Some(48),
        trailer: Some(1),
    };
    AlgorithmIdentifierOwned {
        oid: OID_RSASSA_PSS,
        parameters: Some(der::Any::encode_from(&params).expect("static encoding")),
    }
}

fn is_pss_sha384(alg: &AlgorithmIdentifierOwned) -> bool {
    let Some(params) = alg.parameters.as_ref() else {
        return false;
    };
    let Ok(p) = params.decode_as::<PssParams>() else {
        return false;
    };
    let hash_ok = p.hash.as_ref().is_some_and(|h| h.oid == OID_SHA384);
    let mgf_ok = p.mask_gen.as_ref().is_some_and(|m| {
        m.oid == OID_MGF1
            && m.parameters
                .as_ref()
                .and_then(|a| a.decode_as::<AlgorithmIdentifierOwned>().ok())
                .is_some_and(|h| h.oid == OID_SHA384)
    });
    hash_ok && mgf_ok && p.salt_len == Some(48) && p.trailer.unwrap_or(1) == 1
}

/// A parsed certificate with the name it is known by in error messages.
#[derive(Clone, Debug)]
pub struct Cert {
    pub what: String,
    pub der: Vec<u8>,
    pub cert: Certificate,
}

impl Cert {
    /// Parses DER, or PEM when the bytes start with `-----BEGIN`.
    pub fn parse(what: &str, bytes: &[u8]) -> Result<Self, CertError> {
        let malformed = |e: der::Error| CertError::Malformed {
            what: what.into(),
            detail: e.to_string(),
        };
        let cert = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            Certificate::from_pem(bytes.trim_ascii()).map_err(malformed)?
        } else {
            Certificate::from_der(bytes).map_err(malformed)?
        };
        let der = cert.to_der().map_err(malformed)?;
        Ok(Cert {
            what: what.to_string(),
            der,
            cert,
        })
    }

    /// Splits a PEM bundle into its certificates, in order.
    pub fn parse_pem_bundle(what: &str, pem: &[u8]) -> Result<Vec<Self>, CertError> {
        let text = std::str::from_utf8(pem).map_err(|_| CertError::Malformed {
            what: what.into(),
            detail: "PEM bundle is not UTF-8 text".into(),
        })?;
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
            let end_marker = "-----END CERTIFICATE-----";
            let Some(end) = rest[start..].find(end_marker) else {
                return Err(CertError::Malformed {
                    what: what.into(),
                    detail: "unterminated PEM block".into(),
                });
            };
            let block = &rest[start..start + end + end_marker.len()];
            out.push(Cert::parse(
                &format!("{what}[{}]", out.len()),
                block.as_bytes(),
            )?);
            rest = &rest[start + end + end_marker.len()..];
        }
        Ok(out)
    }

    pub fn to_pem(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.der);
        let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            s.push('\n');
        }
        s.push_str("-----END CERTIFICATE-----\n");
        s
    }

    fn spki(&self) -> &SubjectPublicKeyInfoOwned {
        self.cert.tbs_certificate().subject_public_key_info()
    }

    /// The raw public key bytes: PKCS#1 `RSAPublicKey` for RSA, the uncompressed point for EC.
    pub fn public_key_bytes(&self) -> &[u8] {
        self.spki().subject_public_key.raw_bytes()
    }

    /// DER `SubjectPublicKeyInfo`.
    pub fn spki_der(&self) -> Vec<u8> {
        self.spki().to_der().expect("parsed SPKI re-encodes")
    }

    pub fn is_rsa(&self) -> bool {
        self.spki().algorithm.oid == OID_RSA_ENCRYPTION
    }

    pub fn is_p384(&self) -> bool {
        let alg = &self.spki().algorithm;
        alg.oid == OID_EC_PUBLIC_KEY
            && alg
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .is_some_and(|c| c == OID_SECP384R1)
    }

    pub fn subject(&self) -> String {
        self.cert.tbs_certificate().subject().to_string()
    }

    /// The subject's common name (the last `CN` attribute, RFC 4519 §2.3), when it is a
    /// UTF8String, PrintableString or IA5String, as AMD's certificates use.
    pub fn common_name(&self) -> Option<String> {
        const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
        self.cert
            .tbs_certificate()
            .subject()
            .iter()
            .filter(|atv| atv.oid == CN)
            .filter_map(|atv| {
                let v = &atv.value;
                v.decode_as::<der::asn1::Utf8StringRef<'_>>()
                    .map(|s| s.to_string())
                    .or_else(|_| {
                        v.decode_as::<der::asn1::PrintableStringRef<'_>>()
                            .map(|s| s.to_string())
                    })
                    .or_else(|_| {
                        v.decode_as::<der::asn1::Ia5StringRef<'_>>()
                            .map(|s| s.to_string())
                    })
                    .ok()
            })
            .last()
    }

    pub fn is_self_issued(&self) -> bool {
        self.cert.tbs_certificate().subject() == self.cert.tbs_certificate().issuer()
    }

    /// Checks that `issuer`'s key signed this certificate, with the algorithm the certificate
    /// names (RSASSA-PSS SHA-384 as AMD uses, or RSA PKCS#1 v1.5 SHA-256 for token keys).
    pub fn verify_signed_by(&self, issuer: &Cert) -> Result<(), CertError> {
        let alg = self.cert.signature_algorithm();
        let verify_alg: &dyn lc::VerificationAlgorithm = if alg.oid == OID_RSASSA_PSS {
            if !is_pss_sha384(alg) {
                return Err(CertError::WrongPssParameters {
                    what: self.what.clone(),
                });
            }
            &lc::RSA_PSS_2048_8192_SHA384
        } else if alg.oid == OID_SHA256_WITH_RSA {
            &lc::RSA_PKCS1_2048_8192_SHA256
        } else {
            return Err(CertError::UnsupportedSignatureAlgorithm {
                what: self.what.clone(),
                oid: alg.oid.to_string(),
            });
        };
        if !issuer.is_rsa() {
            return Err(CertError::UnsupportedKey {
                what: issuer.what.clone(),
            });
        }
        let tbs = self
            .cert
            .tbs_certificate()
            .to_der()
            .map_err(|e| CertError::Malformed {
                what: self.what.clone(),
                detail: e.to_string(),
            })?;
        let sig = self
            .cert
            .signature()
            .as_bytes()
            .ok_or_else(|| CertError::Malformed {
                what: self.what.clone(),
                detail: "signature bit string has unused bits".into(),
            })?;
        lc::UnparsedPublicKey::new(verify_alg, issuer.public_key_bytes())
            .verify(&tbs, sig)
            .map_err(|_| CertError::BadSignature {
                what: self.what.clone(),
                issuer: issuer.what.clone(),
            })
    }

    /// Checks the validity period at `at`.
    pub fn check_validity(&self, at: SystemTime) -> Result<(), CertError> {
        let v = self.cert.tbs_certificate().validity();
        if at < v.not_before.to_system_time() || at > v.not_after.to_system_time() {
            return Err(CertError::Expired {
                what: self.what.clone(),
                at: humantime_utc(at),
                not_before: v.not_before.to_string(),
                not_after: v.not_after.to_string(),
            });
        }
        Ok(())
    }

    /// The value of a non-critical extension, if present.
    pub fn extension(&self, oid: ObjectIdentifier) -> Option<&[u8]> {
        self.cert
            .tbs_certificate()
            .extensions()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// The name the certificate is known by in error messages.
    pub fn what(&self) -> &str {
        &self.what
    }
}

fn humantime_utc(t: SystemTime) -> String {
    match x509_cert::time::Time::try_from(t) {
        Ok(time) => time.to_string(),
        Err(_) => format!("{t:?}"),
    }
}

/// A private key that signs certificates.
pub enum CertSigningKey {
    /// RSASSA-PSS with SHA-384 and a 48-byte salt, as AMD's ARK and ASK sign.
    RsaPssSha384(RsaKeyPair),
    /// RSA PKCS#1 v1.5 with SHA-256 (token-signing certificates, as JOSE RS256 keys use).
    RsaPkcs1Sha256(RsaKeyPair),
    /// ECDSA P-256 with SHA-256 (RFC 5758 §3.2), ASN.1 signatures: self-signed TLS
    /// certificates of keys made inside a TEE. The key must be made for
    /// `ECDSA_P256_SHA256_ASN1_SIGNING`.
    EcdsaP256Sha256(EcdsaKeyPair),
}

/// DER SubjectPublicKeyInfo, for the builder's key type.
#[derive(Clone)]
pub struct SpkiDer(pub Vec<u8>);

impl EncodePublicKey for SpkiDer {
    fn to_public_key_der(&self) -> x509_cert::spki::Result<der::Document> {
        Ok(der::Document::try_from(self.0.as_slice())?)
    }
}

/// A raw signature value, for the builder.
pub struct RawSignature(Vec<u8>);

impl RawSignature {
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl SignatureBitStringEncoding for RawSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl signature::Keypair for CertSigningKey {
    type VerifyingKey = SpkiDer;
    fn verifying_key(&self) -> SpkiDer {
        match self {
            CertSigningKey::RsaPssSha384(k) | CertSigningKey::RsaPkcs1Sha256(k) => {
                SpkiDer(rsa_spki_der(k))
            }
            CertSigningKey::EcdsaP256Sha256(k) => SpkiDer(ec_spki_der(k)),
        }
    }
}

impl DynSignatureAlgorithmIdentifier for CertSigningKey {
    fn signature_algorithm_identifier(&self) -> x509_cert::spki::Result<AlgorithmIdentifierOwned> {
        Ok(match self {
            CertSigningKey::RsaPssSha384(_) => pss_sha384_alg(),
            CertSigningKey::RsaPkcs1Sha256(_) => AlgorithmIdentifierOwned {
                oid: OID_SHA256_WITH_RSA,
                parameters: Some(der::Any::null()),
            },
            // RFC 5758 §3.2: ecdsa-with-SHA256, parameters absent.
            CertSigningKey::EcdsaP256Sha256(_) => AlgorithmIdentifierOwned {
                oid: OID_ECDSA_WITH_SHA256,
                parameters: None,
            },
        })
    }
}

impl signature::Signer<RawSignature> for CertSigningKey {
    fn try_sign(&self, msg: &[u8]) -> Result<RawSignature, signature::Error> {
        let (key, enc): (&RsaKeyPair, &'static dyn lc::RsaEncoding) = match self {
            CertSigningKey::RsaPssSha384(k) => (k, &lc::RSA_PSS_SHA384),
            CertSigningKey::RsaPkcs1Sha256(k) => (k, &lc::RSA_PKCS1_SHA256),
            CertSigningKey::EcdsaP256Sha256(k) => {
                let sig = k
                    .sign(&SystemRandom::new(), msg)
                    .map_err(|_| signature::Error::new())?;
                return Ok(RawSignature(sig.as_ref().to_vec()));
            }
        };
        let mut sig = vec![0u8; key.public_modulus_len()];
        key.sign(enc, &SystemRandom::new(), msg, &mut sig)
            .map_err(|_| signature::Error::new())?;
        Ok(RawSignature(sig))
    }
}

/// DER SubjectPublicKeyInfo of an RSA key pair.
pub fn rsa_spki_der(key: &RsaKeyPair) -> Vec<u8> {
    let der: PublicKeyX509Der<'static> = key.public_key().as_der().expect("RSA public key encodes");
    der.as_ref().to_vec()
}

/// DER SubjectPublicKeyInfo of an ECDSA key pair.
pub fn ec_spki_der(key: &EcdsaKeyPair) -> Vec<u8> {
    let der: PublicKeyX509Der<'static> = key.public_key().as_der().expect("EC public key encodes");
    der.as_ref().to_vec()
}

/// What goes into an issued certificate besides its key.
pub struct CertTemplate {
    /// RFC 4514 distinguished name, e.g. `CN=SEV-VCEK,O=Conclave simulated SEV-SNP`.
    pub subject: String,
    pub serial: u32,
    pub validity: Duration,
    pub is_ca: bool,
    pub extensions: Vec<Extension>,
}

struct Profile {
    subject: Name,
    issuer: Name,
    extensions: Vec<Extension>,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.extensions.clone())
    }
}

/// Issues a certificate for `subject_spki_der` signed by `signer`; `issuer` is `None` for a
/// self-signed certificate.
pub fn issue(
    template: CertTemplate,
    subject_spki_der: &[u8],
    issuer: Option<&Cert>,
    signer: &CertSigningKey,
) -> Result<Cert, CertError> {
    let err = |e: &dyn std::fmt::Display| CertError::Issue(e.to_string());
    let subject = Name::from_str(&template.subject).map_err(|e| err(&e))?;
    let issuer_name = issuer
        .map(|c| c.cert.tbs_certificate().subject().clone())
        .unwrap_or_else(|| subject.clone());
    let mut extensions = template.extensions;
    if template.is_ca {
        let bc = x509_cert::ext::pkix::BasicConstraints {
            ca: true,
            path_len_constraint: None,
        };
        extensions.push(Extension {
            extn_id: ObjectIdentifier::new_unwrap("2.5.29.19"),
            critical: true,
            extn_value: OctetString::new(bc.to_der().map_err(|e| err(&e))?).map_err(|e| err(&e))?,
        });
    }
    let profile = Profile {
        subject,
        issuer: issuer_name,
        extensions,
    };
    let spki = SubjectPublicKeyInfoOwned::from_der(subject_spki_der).map_err(|e| err(&e))?;
    // Certificates start a minute in the past so that a verifier with a slightly slow clock
    // accepts them straight away.
    let now = SystemTime::now() - Duration::from_secs(60);
    let validity = Validity::new(
        x509_cert::time::Time::try_from(now).map_err(|e| err(&e))?,
        x509_cert::time::Time::try_from(now + template.validity).map_err(|e| err(&e))?,
    );
    let builder =
        CertificateBuilder::new(profile, SerialNumber::from(template.serial), validity, spki)
            .map_err(|e| err(&e))?;
    let cert = builder
        .build::<_, RawSignature>(signer)
        .map_err(|e| err(&e))?;
    let der = cert.to_der().map_err(|e| err(&e))?;
    Ok(Cert {
        what: template.subject,
        der,
        cert,
    })
}

/// A standard extension from its typed value (`x509-cert`'s `KeyUsage`, `SubjectAltName`,
/// `SubjectKeyIdentifier`, …): its OID and criticality are those RFC 5280 §4.2.1 gives the type,
/// as `x509-cert` encodes them, for a certificate whose subject is `subject` (RFC 4514 text).
pub fn extension<T>(subject: &str, value: &T) -> Result<Extension, CertError>
where
    T: x509_cert::ext::Criticality + der::oid::AssociatedOid + Encode,
{
    let bad = |detail: String| CertError::Malformed {
        what: format!("the {} extension", T::OID),
        detail,
    };
    let name = Name::from_str(subject).map_err(|e| bad(e.to_string()))?;
    x509_cert::ext::ToExtension::to_extension(value, &name, &[]).map_err(|e| bad(e.to_string()))
}

/// The Subject Key Identifier of a DER SubjectPublicKeyInfo (RFC 5280 §4.2.1.2, method 1: the
/// SHA-1 of the subjectPublicKey bits, as `x509-cert` computes it).
pub fn subject_key_id(
    spki_der: &[u8],
) -> Result<x509_cert::ext::pkix::SubjectKeyIdentifier, CertError> {
    let bad = |e: der::Error| CertError::Malformed {
        what: "a public key".into(),
        detail: e.to_string(),
    };
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).map_err(bad)?;
    x509_cert::ext::pkix::SubjectKeyIdentifier::try_from(spki).map_err(bad)
}

/// An extension holding a DER INTEGER (AMD's SPL extensions).
pub fn int_extension(oid: ObjectIdentifier, value: u8) -> Extension {
    Extension {
        extn_id: oid,
        critical: false,
        extn_value: OctetString::new(u32::from(value).to_der().expect("integer encodes"))
            .expect("small octet string"),
    }
}

/// An extension holding raw bytes (AMD's hwID extension).
pub fn raw_extension(oid: ObjectIdentifier, value: &[u8]) -> Extension {
    Extension {
        extn_id: oid,
        critical: false,
        extn_value: OctetString::new(value.to_vec()).expect("small octet string"),
    }
}

/// PKCS#1 `RSAPublicKey`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct RsaPublicKey {
    modulus: der::asn1::Uint,
    public_exponent: der::asn1::Uint,
}

/// The modulus and exponent (big-endian, no leading zeros) of a DER RSA SubjectPublicKeyInfo.
pub fn parse_rsa_spki(spki_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), der::Error> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)?;
    if spki.algorithm.oid != OID_RSA_ENCRYPTION {
        return Err(der::Tag::ObjectIdentifier.value_error().into());
    }
    let key = RsaPublicKey::from_der(spki.subject_public_key.raw_bytes())?;
    Ok((
        key.modulus.as_bytes().to_vec(),
        key.public_exponent.as_bytes().to_vec(),
    ))
}

/// A DER RSA SubjectPublicKeyInfo from its modulus and exponent (big-endian).
pub fn rsa_spki_from_components(n: &[u8], e: &[u8]) -> Result<Vec<u8>, der::Error> {
    let key = RsaPublicKey {
        modulus: der::asn1::Uint::new(n)?,
        public_exponent: der::asn1::Uint::new(e)?,
    };
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: OID_RSA_ENCRYPTION,
            parameters: Some(der::Any::null()),
        },
        subject_public_key: BitString::from_bytes(&key.to_der()?)?,
    };
    spki.to_der()
}
