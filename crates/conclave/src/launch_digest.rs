//! The launch digest of an SEV-SNP guest: the `MEASUREMENT` its attestation reports carry
//! (report offset 0x90, 48 bytes), which a release policy pins as
//! `x-ms-sevsnpvm-launchmeasurement`.
//!
//! For guests launched by QEMU/KVM, which includes Kata Containers and Confidential Containers
//! pod VMs. The secure processor extends the digest with every page the hypervisor adds through
//! `SNP_LAUNCH_UPDATE` (AMD SEV-SNP ABI specification 56860, §8.17, and its page-info structure,
//! Table 67): for a guest booted by QEMU/KVM (or a Kata/CoCo pod VM) those are the OVMF firmware,
//! the metadata pages OVMF's SEV metadata section names (with, for measured direct boot, the
//! table of SHA-256 hashes of the kernel, initrd and kernel command line), and one VMSA page per
//! vCPU, whose contents depend on the vCPU type, the VMM and the guest features.
//!
//! The computation is the `sev` crate's (virtee), a maintained implementation of that sequence;
//! this module gives it validated inputs and errors that say what to change. Its results are
//! tested against the published expected digests of `sev` and `sev-snp-measure` and, in the
//! Python tests, against `sev-snp-measure` itself on other inputs.

use std::path::{Path, PathBuf};

use sev::error::MeasurementError;
use sev::measurement::snp::{SnpMeasurementArgs, snp_calc_launch_digest};
use sev::measurement::vcpu_types::CpuType;
use sev::measurement::vmsa::{GuestFeatures, VMMType};

/// The vCPU types QEMU names (its `-cpu` models) that the VMSA's CPUID signature is taken from.
pub const VCPU_TYPES: &[&str] = &[
    "EPYC",
    "EPYC-v1",
    "EPYC-v2",
    "EPYC-IBPB",
    "EPYC-v3",
    "EPYC-v4",
    "EPYC-Rome",
    "EPYC-Rome-v1",
    "EPYC-Rome-v2",
    "EPYC-Rome-v3",
    "EPYC-Milan",
    "EPYC-Milan-v1",
    "EPYC-Milan-v2",
    "EPYC-Genoa",
    "EPYC-Genoa-v1",
    "EPYC-Turin",
    "EPYC-Turin-v1",
    "EPYC-Turin-v2",
];

/// What a guest is launched with. Paths are read whole; `append` is the kernel command line
/// exactly as the VMM passes it (QEMU's `-append`).
#[derive(Debug, Clone)]
pub struct LaunchInputs {
    /// The OVMF firmware image (`OVMF.fd`; for measured direct boot, edk2's `AmdSevX64` build).
    pub ovmf: PathBuf,
    /// The kernel for measured direct boot (QEMU `-kernel` with `kernel-hashes=on`).
    pub kernel: Option<PathBuf>,
    /// The initrd (needs `kernel`).
    pub initrd: Option<PathBuf>,
    /// The kernel command line (needs `kernel`).
    pub append: Option<String>,
    /// The number of vCPUs, 1 or more: one VMSA page is measured per vCPU.
    pub vcpus: u32,
    /// The vCPU type, one of [`VCPU_TYPES`] (case-insensitive).
    pub vcpu_type: String,
    /// The VMSA's `SEV_FEATURES` (bit 0 SNPActive must be set): `0x1` for QEMU's default.
    pub guest_features: u64,
    /// The digest of OVMF's pages alone (96 hex digits, as `sev-snp-measure --snp-ovmf-hash`
    /// prints it), to skip hashing the firmware; the file is still read for its metadata.
    pub ovmf_hash: Option<String>,
}

/// Why a launch digest could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchDigestError {
    /// The inputs contradict each other or name something that does not exist.
    #[error("{0}")]
    Input(String),
    /// An input file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The `sev` crate refused the inputs (for instance an OVMF without the sections needed).
    #[error("computing the launch digest: {0}")]
    Measurement(String),
}

fn readable(path: &Path) -> Result<(), LaunchDigestError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| LaunchDigestError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// The SEV-SNP launch digest (48 bytes, SHA-384 chaining per the ABI's page-info digest) of a
/// guest launched with `inputs`.
///
/// # Errors
/// [`LaunchDigestError::Input`] for contradictory or out-of-range inputs (no vCPUs, an unknown
/// vCPU type, `initrd`/`append` without `kernel`, SNPActive clear, a malformed `ovmf_hash`),
/// [`LaunchDigestError::Read`] for an unreadable file, and [`LaunchDigestError::Measurement`]
/// when the firmware cannot be measured as given (e.g. a kernel with an OVMF that has no
/// kernel-hashes section).
pub fn launch_digest(inputs: &LaunchInputs) -> Result<[u8; 48], LaunchDigestError> {
    if inputs.vcpus == 0 {
        return Err(LaunchDigestError::Input(
            "the guest needs at least one vCPU".into(),
        ));
    }
    let vcpu_type = CpuType::try_from(inputs.vcpu_type.as_str()).map_err(|_| {
        LaunchDigestError::Input(format!(
            "unknown vCPU type {:?}: use one of {}",
            inputs.vcpu_type,
            VCPU_TYPES.join(", ")
        ))
    })?;
    if inputs.kernel.is_none() && (inputs.initrd.is_some() || inputs.append.is_some()) {
        return Err(LaunchDigestError::Input(
            "an initrd or a kernel command line is measured only with a kernel (measured direct boot): give the kernel too".into(),
        ));
    }
    if let Some(append) = &inputs.append
        && append.trim() != append
    {
        // QEMU hashes the command line byte for byte (with its NUL); the `sev` crate trims it
        // first and sev-snp-measure does not, so a padded line has no single right digest.
        return Err(LaunchDigestError::Input(
            "the kernel command line starts or ends with whitespace: give it without, as the VMM is given it".into(),
        ));
    }
    if inputs.guest_features & 1 == 0 {
        return Err(LaunchDigestError::Input(format!(
            "guest features {:#x} lack bit 0 (SNPActive), which every SEV-SNP guest has set",
            inputs.guest_features
        )));
    }
    if let Some(hash) = &inputs.ovmf_hash
        && (hash.len() != 96 || hex::decode(hash).is_err())
    {
        return Err(LaunchDigestError::Input(format!(
            "the OVMF hash {hash:?} is not 96 hex digits (a SHA-384 launch digest)"
        )));
    }
    readable(&inputs.ovmf)?;
    for path in [&inputs.kernel, &inputs.initrd].into_iter().flatten() {
        readable(path)?;
    }
    // With a kernel and no initrd, QEMU measures an empty initrd (the hash of zero bytes), as
    // sev-snp-measure does; the `sev` crate does the same for a missing initrd.
    let args = SnpMeasurementArgs {
        vcpus: inputs.vcpus,
        vcpu_type,
        ovmf_file: inputs.ovmf.clone(),
        guest_features: GuestFeatures(inputs.guest_features),
        kernel_file: inputs.kernel.clone(),
        initrd_file: inputs.initrd.clone(),
        append: inputs.append.as_deref(),
        ovmf_hash_str: inputs.ovmf_hash.as_deref(),
        // QEMU's VMSA register values. Other VMMs set some registers differently (AWS EC2,
        // Google's, libkrun); their digests are not computed here: the `sev` crate's EC2 VMSA
        // predates AWS's current firmware (RDX 0x600 since April 2026, sev-snp-measure 0.0.13),
        // so it would print a digest no EC2 guest has.
        vmm_type: Some(VMMType::QEMU),
    };
    let digest = snp_calc_launch_digest(args).map_err(|e| match e {
        MeasurementError::InvalidOvmfKernelError | MeasurementError::MissingSection(_) => {
            LaunchDigestError::Measurement(format!(
                "{e}: measured direct boot needs edk2's AmdSevX64 build of OVMF; use it, or leave the kernel out"
            ))
        }
        other => LaunchDigestError::Measurement(other.to_string()),
    })?;
    let bytes: Vec<u8> = digest
        .try_into()
        .map_err(|e: MeasurementError| LaunchDigestError::Measurement(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| LaunchDigestError::Measurement("the digest is not 48 bytes".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixtures and expected digests published with the `sev` crate 8.0.0
    /// (`tests/measurement.rs`) and with `sev-snp-measure` (`tests/test_guest.py`); see
    /// `tests/data/ovmf/README.md`.
    fn amd_sev_ovmf() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ovmf/ovmf_AmdSev_suffix.bin")
    }

    fn inputs(vcpus: u32, features: u64) -> LaunchInputs {
        LaunchInputs {
            ovmf: amd_sev_ovmf(),
            kernel: Some("/dev/null".into()),
            initrd: Some("/dev/null".into()),
            append: None,
            vcpus,
            vcpu_type: "EPYC-v4".into(),
            guest_features: features,
            ovmf_hash: None,
        }
    }

    fn hex_digest(i: &LaunchInputs) -> String {
        hex::encode(launch_digest(i).unwrap())
    }

    #[test]
    fn published_digests() {
        let mut i = inputs(1, 0x1);
        i.append = Some("console=ttyS0 loglevel=7".into());
        assert_eq!(
            hex_digest(&i),
            "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa"
        );
        i.guest_features = 0x21;
        assert_eq!(
            hex_digest(&i),
            "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"
        );
        // From a precomputed OVMF hash.
        let mut i = inputs(1, 0x21);
        i.ovmf_hash = Some("086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74".into());
        assert_eq!(
            hex_digest(&i),
            "329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198"
        );
        // Four vCPUs: four VMSA pages.
        assert_eq!(
            hex_digest(&inputs(4, 0x1)),
            "5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5"
        );
        // edk2's standard OvmfPkgX64 build (no kernel hashes), booted without a kernel.
        let mut i = inputs(1, 0x1);
        i.ovmf = amd_sev_ovmf().with_file_name("ovmf_OvmfX64_suffix.bin");
        i.kernel = None;
        i.initrd = None;
        assert_eq!(
            hex_digest(&i),
            "da0296de8193586a5512078dcd719eccecbd87e2b825ad4148c44f665dc87df21e5b49e21523a9ad993afdb6a30b4005"
        );
        // Without measured direct boot.
        let mut i = inputs(1, 0x1);
        i.kernel = None;
        i.initrd = None;
        assert_eq!(
            hex_digest(&i),
            "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"
        );
    }

    #[test]
    fn each_input_changes_the_digest() {
        let base = hex_digest(&inputs(1, 0x1));
        assert_ne!(hex_digest(&inputs(2, 0x1)), base);
        assert_ne!(hex_digest(&inputs(1, 0x21)), base);
        let mut i = inputs(1, 0x1);
        i.vcpu_type = "EPYC-Milan".into();
        assert_ne!(hex_digest(&i), base);
        i.vcpu_type = "epyc-v4".into();
        assert_eq!(hex_digest(&i), base, "vCPU types are case-insensitive");
        i.append = Some("quiet".into());
        assert_ne!(hex_digest(&i), base);
        i.append = Some("quiet ".into());
        assert!(
            launch_digest(&i)
                .unwrap_err()
                .to_string()
                .contains("whitespace")
        );
    }

    #[test]
    fn bad_inputs_say_what_to_change() {
        let err = |i: &LaunchInputs| launch_digest(i).unwrap_err().to_string();
        assert!(err(&inputs(0, 0x1)).contains("at least one vCPU"));
        assert!(err(&inputs(1, 0x20)).contains("SNPActive"));
        let mut i = inputs(1, 0x1);
        i.vcpu_type = "EPYC-v9".into();
        assert!(err(&i).contains("EPYC-Milan"), "{}", err(&i));
        let mut i = inputs(1, 0x1);
        i.kernel = None;
        assert!(err(&i).contains("give the kernel"));
        let mut i = inputs(1, 0x1);
        i.ovmf = "/nonexistent/OVMF.fd".into();
        assert!(err(&i).contains("/nonexistent/OVMF.fd"));
        let mut i = inputs(1, 0x1);
        i.ovmf_hash = Some("abc".into());
        assert!(err(&i).contains("96 hex digits"));
        // The standard OVMF build has no kernel-hashes section.
        let mut i = inputs(1, 0x1);
        i.ovmf = amd_sev_ovmf().with_file_name("ovmf_OvmfX64_suffix.bin");
        let e = launch_digest(&i).unwrap_err();
        assert!(matches!(e, LaunchDigestError::Measurement(_)), "{e}");
        i.kernel = None;
        i.initrd = None;
        launch_digest(&i).expect("the standard build measures without a kernel");
    }
}
