//! The SEV-SNP attestation report (AMD SEV-SNP ABI specification 56860, `ATTESTATION_REPORT`).
//!
//! The report is 1184 bytes, little-endian. Versions 2 to 5 occur in the field: version 3 adds
//! the CPUID family/model/stepping bytes, version 5 the launch and current mitigation vectors.
//! Every other byte that the ABI reserves must be zero; [`AttestationReport::to_bytes`] writes
//! them as zero, so a parsed genuine report serialises back to exactly the bytes it came from.

use crate::Product;

/// Length of every attestation report, all versions.
pub const REPORT_LEN: usize = 0x4A0;
/// The signature covers bytes `0..SIGNED_LEN`.
pub const SIGNED_LEN: usize = 0x2A0;
/// The only signature algorithm the ABI defines: ECDSA P-384 with SHA-384.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

/// Report versions this crate understands.
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;

/// Why a byte string is not an attestation report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("an SEV-SNP report is {REPORT_LEN} bytes, this one is {0}: it is truncated")]
    Truncated(usize),
    #[error("an SEV-SNP report is {REPORT_LEN} bytes, this one is {0}: it has trailing bytes")]
    Oversized(usize),
    #[error("report version {0} is not supported (supported: 2 to 5)")]
    UnsupportedVersion(u32),
    #[error(
        "report signature algorithm {0} is not supported (only 1, ECDSA P-384 with SHA-384, is defined)"
    )]
    UnsupportedSignatureAlgorithm(u32),
    #[error("report signing key field {0} is reserved")]
    ReservedSigningKey(u32),
    #[error(
        "byte 0x{offset:03x} of a version {version} report is {found:#04x}, but AMD's ABI reserves it (or some of its bits), and reserved bits must be zero: the report is malformed or was altered"
    )]
    ReservedNotZero {
        offset: usize,
        version: u32,
        found: u8,
    },
}

/// The guest policy the VM was launched with (ABI `GUEST_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    pub fn abi_minor(self) -> u8 {
        self.0 as u8
    }
    pub fn abi_major(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// Simultaneous multithreading allowed.
    pub fn smt_allowed(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// Migration agent allowed.
    pub fn migrate_ma_allowed(self) -> bool {
        self.0 & (1 << 18) != 0
    }
    /// The hypervisor may debug the guest: memory is readable by the host. Never for production.
    pub fn debug_allowed(self) -> bool {
        self.0 & (1 << 19) != 0
    }
    pub fn single_socket_required(self) -> bool {
        self.0 & (1 << 20) != 0
    }
}

/// Facts about the platform (ABI `PLATFORM_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PlatformInfo(pub u64);

impl PlatformInfo {
    pub fn smt_enabled(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn tsme_enabled(self) -> bool {
        self.0 & 2 != 0
    }
    pub fn ecc_enabled(self) -> bool {
        self.0 & 4 != 0
    }
}

/// A TCB version as the 64-bit value the firmware reports. Its byte layout depends on the
/// processor generation, so decoding needs the [`Product`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TcbVersion(pub u64);

/// The security version numbers inside a [`TcbVersion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TcbParts {
    /// Firmware mask-ROM SVN; Turin and later only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl TcbParts {
    /// True when every SVN is at least the one in `min` (an absent FMC in `min` is no constraint).
    pub fn at_least(&self, min: &TcbParts) -> bool {
        let fmc_ok = match (min.fmc, self.fmc) {
            (Some(want), Some(have)) => have >= want,
            (Some(_), None) => false,
            (None, _) => true,
        };
        fmc_ok
            && self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
    }
}

impl TcbVersion {
    pub fn parts(self, product: Product) -> TcbParts {
        let b = self.0.to_le_bytes();
        if product.is_turin_layout() {
            TcbParts {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            }
        } else {
            TcbParts {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            }
        }
    }

    pub fn from_parts(parts: TcbParts, product: Product) -> Self {
        let mut b = [0u8; 8];
        if product.is_turin_layout() {
            b[0] = parts.fmc.unwrap_or(0);
            b[1] = parts.bootloader;
            b[2] = parts.tee;
            b[3] = parts.snp;
        } else {
            b[0] = parts.bootloader;
            b[1] = parts.tee;
            b[6] = parts.snp;
        }
        b[7] = parts.microcode;
        TcbVersion(u64::from_le_bytes(b))
    }
}

/// Which key signed the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key: unique to the chip and its TCB.
    Vcek,
    /// Versioned Loaded Endorsement Key: issued to a cloud provider.
    Vlek,
    /// The report is unsigned.
    None,
}

/// Firmware version triple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FirmwareVersion {
    pub build: u8,
    pub minor: u8,
    pub major: u8,
}

/// ECDSA P-384 signature as the report stores it: R and S little-endian, 72 bytes each.
#[derive(Clone, PartialEq, Eq)]
pub struct ReportSignature {
    pub r: [u8; 72],
    pub s: [u8; 72],
}

impl std::fmt::Debug for ReportSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ReportSignature(r={}, s={})",
            hex::encode(self.r),
            hex::encode(self.s)
        )
    }
}

impl ReportSignature {
    /// The signature as the fixed-width big-endian `r || s` (48 + 48 bytes) that ECDSA
    /// verifiers take, or `None` if either value does not fit in 48 bytes.
    pub fn to_fixed_be(&self) -> Option<[u8; 96]> {
        if self.r[48..].iter().chain(&self.s[48..]).any(|&b| b != 0) {
            return None;
        }
        let mut out = [0u8; 96];
        for i in 0..48 {
            out[i] = self.r[47 - i];
            out[48 + i] = self.s[47 - i];
        }
        Some(out)
    }

    /// The inverse of [`Self::to_fixed_be`].
    pub fn from_fixed_be(sig: &[u8; 96]) -> Self {
        let mut r = [0u8; 72];
        let mut s = [0u8; 72];
        for i in 0..48 {
            r[i] = sig[47 - i];
            s[i] = sig[95 - i];
        }
        ReportSignature { r, s }
    }
}

/// A parsed attestation report. Parsing checks the shape only: trust in its contents comes from
/// [`crate::verify_report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationReport {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: GuestPolicy,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub vmpl: u32,
    pub signature_algo: u32,
    pub current_tcb: TcbVersion,
    pub platform_info: PlatformInfo,
    pub author_key_en: bool,
    pub mask_chip_key: bool,
    pub signing_key: SigningKey,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub report_id_ma: [u8; 32],
    pub reported_tcb: TcbVersion,
    /// CPUID family, model and stepping (version 3 and later; zero before).
    pub cpuid_fam_id: u8,
    pub cpuid_mod_id: u8,
    pub cpuid_step: u8,
    pub chip_id: [u8; 64],
    pub committed_tcb: TcbVersion,
    pub current_version: FirmwareVersion,
    pub committed_version: FirmwareVersion,
    pub launch_tcb: TcbVersion,
    /// Launch and current mitigation vectors (version 5 and later; zero before).
    pub launch_mit_vector: u64,
    pub current_mit_vector: u64,
    pub signature: ReportSignature,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    b[off..off + N].try_into().expect("fixed-size field")
}

impl AttestationReport {
    /// Parses exactly [`REPORT_LEN`] bytes. Every byte the ABI reserves for the report's version
    /// (in the body and in the signature structure, which the signature does not cover) must be
    /// zero, so no unsigned byte of a report can vary: what parses serialises back to the same
    /// bytes. (ECDSA itself also accepts the signature (r, n − s); AMD's signatures are not
    /// normalised, so that one is not refused.)
    pub fn parse(bytes: &[u8]) -> Result<Self, ReportError> {
        let report = Self::parse_fields(bytes)?;
        let canonical = report.to_bytes();
        if let Some(offset) = (0..REPORT_LEN).find(|&i| canonical[i] != bytes[i]) {
            return Err(ReportError::ReservedNotZero {
                offset,
                version: report.version,
                found: bytes[offset],
            });
        }
        Ok(report)
    }

    fn parse_fields(bytes: &[u8]) -> Result<Self, ReportError> {
        if bytes.len() < REPORT_LEN {
            return Err(ReportError::Truncated(bytes.len()));
        }
        if bytes.len() > REPORT_LEN {
            return Err(ReportError::Oversized(bytes.len()));
        }
        let b = bytes;
        let version = u32_at(b, 0x00);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(ReportError::UnsupportedVersion(version));
        }
        let signature_algo = u32_at(b, 0x34);
        if signature_algo != SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(ReportError::UnsupportedSignatureAlgorithm(signature_algo));
        }
        let key_info = u32_at(b, 0x48);
        let signing_key = match (key_info >> 2) & 0b111 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            other => return Err(ReportError::ReservedSigningKey(other)),
        };
        let (cpuid_fam_id, cpuid_mod_id, cpuid_step) = if version >= 3 {
            (b[0x188], b[0x189], b[0x18A])
        } else {
            (0, 0, 0)
        };
        let (launch_mit_vector, current_mit_vector) = if version >= 5 {
            (u64_at(b, 0x1F8), u64_at(b, 0x200))
        } else {
            (0, 0)
        };
        Ok(AttestationReport {
            version,
            guest_svn: u32_at(b, 0x04),
            policy: GuestPolicy(u64_at(b, 0x08)),
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl: u32_at(b, 0x30),
            signature_algo,
            current_tcb: TcbVersion(u64_at(b, 0x38)),
            platform_info: PlatformInfo(u64_at(b, 0x40)),
            author_key_en: key_info & 1 != 0,
            mask_chip_key: key_info & 2 != 0,
            signing_key,
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            report_id_ma: arr(b, 0x160),
            reported_tcb: TcbVersion(u64_at(b, 0x180)),
            cpuid_fam_id,
            cpuid_mod_id,
            cpuid_step,
            chip_id: arr(b, 0x1A0),
            committed_tcb: TcbVersion(u64_at(b, 0x1E0)),
            current_version: FirmwareVersion {
                build: b[0x1E8],
                minor: b[0x1E9],
                major: b[0x1EA],
            },
            committed_version: FirmwareVersion {
                build: b[0x1EC],
                minor: b[0x1ED],
                major: b[0x1EE],
            },
            launch_tcb: TcbVersion(u64_at(b, 0x1F0)),
            launch_mit_vector,
            current_mit_vector,
            signature: ReportSignature {
                r: arr(b, 0x2A0),
                s: arr(b, 0x2E8),
            },
        })
    }

    /// Serialises the report; reserved bytes are written as zero.
    pub fn to_bytes(&self) -> [u8; REPORT_LEN] {
        let mut b = [0u8; REPORT_LEN];
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(0x00, &self.version.to_le_bytes());
        put(0x04, &self.guest_svn.to_le_bytes());
        put(0x08, &self.policy.0.to_le_bytes());
        put(0x10, &self.family_id);
        put(0x20, &self.image_id);
        put(0x30, &self.vmpl.to_le_bytes());
        put(0x34, &self.signature_algo.to_le_bytes());
        put(0x38, &self.current_tcb.0.to_le_bytes());
        put(0x40, &self.platform_info.0.to_le_bytes());
        let key_sel: u32 = match self.signing_key {
            SigningKey::Vcek => 0,
            SigningKey::Vlek => 1,
            SigningKey::None => 7,
        };
        let key_info =
            u32::from(self.author_key_en) | u32::from(self.mask_chip_key) << 1 | key_sel << 2;
        put(0x48, &key_info.to_le_bytes());
        put(0x50, &self.report_data);
        put(0x90, &self.measurement);
        put(0xC0, &self.host_data);
        put(0xE0, &self.id_key_digest);
        put(0x110, &self.author_key_digest);
        put(0x140, &self.report_id);
        put(0x160, &self.report_id_ma);
        put(0x180, &self.reported_tcb.0.to_le_bytes());
        if self.version >= 3 {
            put(
                0x188,
                &[self.cpuid_fam_id, self.cpuid_mod_id, self.cpuid_step],
            );
        }
        put(0x1A0, &self.chip_id);
        put(0x1E0, &self.committed_tcb.0.to_le_bytes());
        let v = self.current_version;
        put(0x1E8, &[v.build, v.minor, v.major]);
        let v = self.committed_version;
        put(0x1EC, &[v.build, v.minor, v.major]);
        put(0x1F0, &self.launch_tcb.0.to_le_bytes());
        if self.version >= 5 {
            put(0x1F8, &self.launch_mit_vector.to_le_bytes());
            put(0x200, &self.current_mit_vector.to_le_bytes());
        }
        put(0x2A0, &self.signature.r);
        put(0x2E8, &self.signature.s);
        b
    }

    /// The product the report says it comes from, when it says (version 3 and later).
    pub fn product_from_cpuid(&self) -> Option<Product> {
        match (self.cpuid_fam_id, self.cpuid_mod_id) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MILAN: &[u8] = include_bytes!("../tests/data/milan-virtee-sev/report.bin");

    /// The bytes AMD's ABI (SEV-SNP ABI specification 56860, Table 23 `ATTESTATION_REPORT`, and
    /// its `SIGNATURE` structure) reserves in a report of `version`, written out here from the
    /// specification rather than derived from the parser. Whole reserved bytes, and for partly
    /// reserved bytes the mask of their reserved bits.
    fn reserved(version: u32) -> Vec<(usize, u8)> {
        let mut r = Vec::new();
        let mut bytes = |range: std::ops::Range<usize>| r.extend(range.map(|i| (i, 0xFF)));
        bytes(0x4C..0x50);
        bytes(if version >= 3 {
            0x18B..0x1A0
        } else {
            0x188..0x1A0
        });
        bytes(0x1EB..0x1EC);
        bytes(0x1EF..0x1F0);
        bytes(if version >= 5 {
            0x208..0x2A0
        } else {
            0x1F8..0x2A0
        });
        // SIGNATURE: R and S are 72 bytes each (0x2A0..0x330); the rest is reserved.
        bytes(0x330..REPORT_LEN);
        // KEY_INFO (0x48, 32 bits): bits 0-4 are defined, 5-31 reserved.
        r.extend([(0x48, 0xE0), (0x49, 0xFF), (0x4A, 0xFF), (0x4B, 0xFF)]);
        r
    }

    fn with_version(version: u32) -> Vec<u8> {
        let mut b = MILAN.to_vec();
        b[0..4].copy_from_slice(&version.to_le_bytes());
        b
    }

    #[test]
    fn a_bit_flipped_in_the_unsigned_signature_reserve_is_refused() {
        // The example from the interoperability issue: offset 0x330, after R and S.
        let mut b = MILAN.to_vec();
        b[0x330] ^= 1;
        let err = AttestationReport::parse(&b).unwrap_err();
        assert_eq!(
            err,
            ReportError::ReservedNotZero {
                offset: 0x330,
                version: 2,
                found: 1
            }
        );
        assert!(err.to_string().contains("0x330"), "{err}");
    }

    #[test]
    fn every_reserved_byte_of_every_version_must_be_zero_and_nothing_else_is_refused_as_reserved() {
        // Version 4 has version 3's layout (CPUID bytes, no mitigation vectors).
        for version in [2, 3, 4, 5] {
            let base = with_version(version);
            let parsed = AttestationReport::parse(&base).unwrap();
            assert_eq!(parsed.to_bytes().to_vec(), base, "v{version} round trip");
            let reserved = reserved(version);
            for offset in 0..REPORT_LEN {
                let mask = reserved
                    .iter()
                    .find(|(o, _)| *o == offset)
                    .map_or(0, |(_, m)| *m);
                for bit in 0..8 {
                    let mut b = base.clone();
                    b[offset] ^= 1 << bit;
                    let outcome = AttestationReport::parse(&b);
                    let refused_as_reserved =
                        matches!(outcome, Err(ReportError::ReservedNotZero { .. }));
                    assert_eq!(
                        refused_as_reserved,
                        mask & (1 << bit) != 0,
                        "v{version}, offset {offset:#x}, bit {bit}: {outcome:?}"
                    );
                    if let Ok(r) = outcome {
                        assert_eq!(
                            r.to_bytes().to_vec(),
                            b,
                            "v{version} {offset:#x} round trip"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn signature_conversion_round_trips() {
        let mut fixed = [0u8; 96];
        for (i, b) in fixed.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let sig = ReportSignature::from_fixed_be(&fixed);
        assert_eq!(sig.r[0], 48);
        assert_eq!(sig.s[0], 96);
        assert_eq!(sig.to_fixed_be().unwrap(), fixed);
    }

    #[test]
    fn oversized_signature_values_are_rejected() {
        let mut sig = ReportSignature {
            r: [0; 72],
            s: [0; 72],
        };
        sig.s[60] = 1;
        assert!(sig.to_fixed_be().is_none());
    }

    #[test]
    fn tcb_layouts_differ_between_generations() {
        let parts = TcbParts {
            fmc: Some(1),
            bootloader: 2,
            tee: 3,
            snp: 4,
            microcode: 5,
        };
        let turin = TcbVersion::from_parts(parts, Product::Turin);
        assert_eq!(turin.0.to_le_bytes(), [1, 2, 3, 4, 0, 0, 0, 5]);
        assert_eq!(turin.parts(Product::Turin), parts);
        let milan = TcbVersion::from_parts(TcbParts { fmc: None, ..parts }, Product::Milan);
        assert_eq!(milan.0.to_le_bytes(), [2, 3, 0, 0, 0, 0, 4, 5]);
        assert_eq!(milan.parts(Product::Milan), TcbParts { fmc: None, ..parts });
    }

    #[test]
    fn minimum_tcb_compares_every_svn() {
        let have = TcbParts {
            fmc: None,
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
        };
        assert!(have.at_least(&have));
        assert!(!have.at_least(&TcbParts { snp: 9, ..have }));
        assert!(!have.at_least(&TcbParts {
            microcode: 116,
            ..have
        }));
        assert!(!have.at_least(&TcbParts {
            fmc: Some(1),
            ..have
        }));
    }
}
