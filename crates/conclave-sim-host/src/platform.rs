//! The simulated secure processor: an ARK → ASK → VCEK chain made with AMD's algorithms
//! (RSA-4096 RSASSA-PSS SHA-384 roots, ECDSA P-384 VCEK), persisted in a state directory, and
//! the signing of reports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use conclave_pki::x509::{
    CertSigningKey, CertTemplate, ec_spki_der, int_extension, issue, raw_extension, rsa_spki_der,
};
use conclave_snp::amd_cert::amd_oid;
use conclave_snp::report::{
    AttestationReport, FirmwareVersion, GuestPolicy, PlatformInfo, ReportSignature,
    SIG_ALGO_ECDSA_P384_SHA384, SigningKey,
};
use conclave_snp::{Cert, RootKind, SIM_PRODUCT, TcbParts, TcbVersion, TrustedRoot};

use conclave_tee::TeeError;

/// The TCB the simulated firmware reports (plausible Genoa values).
pub const SIM_TCB: TcbParts = TcbParts {
    fmc: None,
    bootloader: 9,
    tee: 0,
    snp: 23,
    microcode: 72,
};

const ORG: &str = "O=Conclave simulated SEV-SNP (no hardware protection)";

/// What the simulated secure processor knows about one launched guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchIdentity {
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub policy: GuestPolicy,
    pub report_id: [u8; 32],
}

/// The simulated platform's keys and certificates.
pub struct SimPlatform {
    ark: Cert,
    ask: Cert,
    vcek: Cert,
    vcek_key: EcdsaKeyPair,
    chip_id: [u8; 64],
    dir: PathBuf,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> TeeError {
    TeeError::Io(std::io::Error::other(format!("{}: {e}", path.display())))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TeeError> {
    conclave_pki::write_file(path, bytes, 0o600)
        .map_err(|e| TeeError::Io(std::io::Error::other(e.to_string())))
}

impl SimPlatform {
    /// Loads the platform from `dir`, or creates it (two RSA-4096 keys: a few seconds, once).
    pub fn load_or_create(dir: &Path) -> Result<Self, TeeError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        if dir.join("vcek.pk8").exists() {
            Self::load(dir)
        } else {
            Self::create(dir)
        }
    }

    fn load(dir: &Path) -> Result<Self, TeeError> {
        let read =
            |name: &str| std::fs::read(dir.join(name)).map_err(|e| io_err(&dir.join(name), e));
        let cert = |name: &str| {
            Cert::parse(name, &read(name)?).map_err(|e| TeeError::Malformed(e.to_string()))
        };
        let vcek_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &read("vcek.pk8")?)
                .map_err(|e| TeeError::Malformed(format!("sim VCEK key: {e}")))?;
        let chip_id: [u8; 64] = read("chip_id")?
            .try_into()
            .map_err(|_| TeeError::Malformed("sim chip_id must be 64 bytes".into()))?;
        Ok(SimPlatform {
            ark: cert("ark.pem")?,
            ask: cert("ask.pem")?,
            vcek: cert("vcek.pem")?,
            vcek_key,
            chip_id,
            dir: dir.to_path_buf(),
        })
    }

    fn create(dir: &Path) -> Result<Self, TeeError> {
        let gen_err = |e: &dyn std::fmt::Display| TeeError::Refused(format!("key generation: {e}"));
        let ark_key = RsaKeyPair::generate(KeySize::Rsa4096).map_err(|e| gen_err(&e))?;
        let ask_key = RsaKeyPair::generate(KeySize::Rsa4096).map_err(|e| gen_err(&e))?;
        let vcek_pk8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|e| gen_err(&e))?;
        let vcek_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, vcek_pk8.as_ref())
                .map_err(|e| gen_err(&e))?;
        let mut chip_id = [0u8; 64];
        SystemRandom::new()
            .fill(&mut chip_id)
            .map_err(|e| gen_err(&e))?;

        let years = |n: u64| Duration::from_secs(n * 365 * 24 * 3600);
        let ark_spki = rsa_spki_der(&ark_key);
        let ask_spki = rsa_spki_der(&ask_key);
        let ark_signer = CertSigningKey::RsaPssSha384(ark_key);
        let ark = issue(
            CertTemplate {
                subject: format!("CN=ARK-{},{ORG}", SIM_PRODUCT.name()),
                serial: 1,
                validity: years(25),
                is_ca: true,
                extensions: vec![],
            },
            &ark_spki,
            None,
            &ark_signer,
        )
        .map_err(|e| gen_err(&e))?;
        let ask = issue(
            CertTemplate {
                subject: format!("CN=SEV-{},{ORG}", SIM_PRODUCT.name()),
                serial: 2,
                validity: years(25),
                is_ca: true,
                extensions: vec![],
            },
            &ask_spki,
            Some(&ark),
            &ark_signer,
        )
        .map_err(|e| gen_err(&e))?;
        let ask_signer = CertSigningKey::RsaPssSha384(ask_key);
        let tcb = SIM_TCB;
        let vcek = issue(
            CertTemplate {
                subject: format!("CN=SEV-VCEK,{ORG}"),
                serial: 3,
                validity: years(7),
                is_ca: false,
                extensions: vec![
                    int_extension(amd_oid::BL_SPL, tcb.bootloader),
                    int_extension(amd_oid::TEE_SPL, tcb.tee),
                    int_extension(amd_oid::SNP_SPL, tcb.snp),
                    int_extension(amd_oid::UCODE_SPL, tcb.microcode),
                    raw_extension(amd_oid::HW_ID, &chip_id),
                ],
            },
            &ec_spki_der(&vcek_key),
            Some(&ask),
            &ask_signer,
        )
        .map_err(|e| gen_err(&e))?;

        // Only the VCEK key is kept: the ARK and ASK keys are not needed again, and a root key
        // that no longer exists cannot leak.
        write_private(&dir.join("vcek.pk8"), vcek_pk8.as_ref())?;
        write_private(&dir.join("chip_id"), &chip_id)?;
        for (name, c) in [("ark.pem", &ark), ("ask.pem", &ask), ("vcek.pem", &vcek)] {
            write_private(&dir.join(name), c.to_pem().as_bytes())?;
        }
        tracing::info!(dir = %dir.display(), "created a simulated SEV-SNP platform (new ARK/ASK/VCEK)");
        Ok(SimPlatform {
            ark,
            ask,
            vcek,
            vcek_key,
            chip_id,
            dir: dir.to_path_buf(),
        })
    }

    /// The root an attestation service must trust to accept this platform's reports.
    pub fn trusted_root(&self) -> TrustedRoot {
        TrustedRoot {
            product: SIM_PRODUCT,
            kind: RootKind::Simulated,
            ark: self.ark.clone(),
            ask: Some(self.ask.clone()),
            asvk: None,
        }
    }

    /// Path of the ARK certificate (`conclave attest serve --sim-root`).
    pub fn ark_path(&self) -> PathBuf {
        self.dir.join("ark.pem")
    }

    /// VCEK, ASK and ARK as one PEM bundle, as AMD's KDS and Azure's THIM hand them out.
    pub fn cert_chain_pem(&self) -> String {
        format!(
            "{}{}{}",
            self.vcek.to_pem(),
            self.ask.to_pem(),
            self.ark.to_pem()
        )
    }

    /// Signs a version 3 report for `guest` binding `report_data`.
    pub fn sign_report(
        &self,
        guest: &LaunchIdentity,
        report_data: [u8; 64],
    ) -> Result<Vec<u8>, TeeError> {
        let tcb = TcbVersion::from_parts(SIM_TCB, SIM_PRODUCT);
        let fw = FirmwareVersion {
            build: 21,
            minor: 55,
            major: 1,
        };
        let mut report = AttestationReport {
            version: 3,
            guest_svn: 0,
            policy: guest.policy,
            family_id: [0; 16],
            image_id: [0; 16],
            vmpl: 0,
            signature_algo: SIG_ALGO_ECDSA_P384_SHA384,
            current_tcb: tcb,
            platform_info: PlatformInfo(0b101),
            author_key_en: false,
            mask_chip_key: false,
            signing_key: SigningKey::Vcek,
            report_data,
            measurement: guest.measurement,
            host_data: guest.host_data,
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
            report_id: guest.report_id,
            report_id_ma: [0xFF; 32],
            reported_tcb: tcb,
            cpuid_fam_id: 0x19,
            cpuid_mod_id: 0x11,
            cpuid_step: 0x01,
            chip_id: self.chip_id,
            committed_tcb: tcb,
            current_version: fw,
            committed_version: fw,
            launch_tcb: tcb,
            launch_mit_vector: 0,
            current_mit_vector: 0,
            signature: ReportSignature {
                r: [0; 72],
                s: [0; 72],
            },
        };
        let body = report.to_bytes();
        let sig = self
            .vcek_key
            .sign(
                &SystemRandom::new(),
                &body[..conclave_snp::report::SIGNED_LEN],
            )
            .map_err(|e| TeeError::Refused(format!("signing: {e}")))?;
        let fixed: [u8; 96] = sig
            .as_ref()
            .try_into()
            .map_err(|_| TeeError::Refused("unexpected ECDSA signature length".into()))?;
        report.signature = ReportSignature::from_fixed_be(&fixed);
        Ok(report.to_bytes().to_vec())
    }

    #[doc(hidden)]
    pub fn vcek_der(&self) -> Vec<u8> {
        self.vcek.der.clone()
    }
}
