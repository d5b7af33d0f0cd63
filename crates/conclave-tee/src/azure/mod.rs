//! Evidence from an Azure confidential VM (DCasv5/ECasv5 and later, SEV-SNP).
//!
//! On Azure the guest cannot ask the secure processor directly: the paravisor (HCL) does, and
//! publishes its report through the vTPM. The guest writes its 64 bytes of report data to vTPM
//! NV index `0x01400002`; the paravisor then refreshes the HCL report at `0x01400001`, which holds
//! the SNP report and the paravisor's runtime claims JSON (`keys`, `vm-configuration` with
//! `vmUniqueId`, and `user-data`: our 64 bytes). The SNP report's `report_data` is the SHA-256 of
//! that JSON, so the chain of binding is: VCEK signs report → report binds runtime claims →
//! runtime claims carry our report data. The VCEK chain comes from the instance metadata
//! service (THIM).
//!
//! With the HCL report the guest sends a vTPM quote: `TPM2_Quote` by the attestation key Azure
//! persists at handle `0x81000003` (its public part is `HCLAkPub` in the runtime claims) over
//! the SHA-256 PCR bank, with SHA-256 of the runtime data as the nonce, and the PCR values read
//! with `TPM2_PCR_Read`. The attestation service verifies it and exposes the PCRs.
//!
//! The TPM is spoken to with raw TPM 2.0 commands on `/dev/tpmrm0` (a handful of commands, so no
//! TSS library is needed). `CONCLAVE_TPM` names another TPM: a device path, or `tcp:HOST:PORT`
//! for a TPM that takes raw commands over TCP (swtpm's `--server type=tcp`, as the tests use).

use std::io::{Read as _, Write as _};

use crate::{Evidence, EvidenceFuture, EvidenceSource, Platform, TeeError, TpmQuote};

pub const NV_INDEX_HCL_REPORT: u32 = 0x0140_0001;
pub const NV_INDEX_USER_DATA: u32 = 0x0140_0002;
pub const TPM_DEVICE: &str = "/dev/tpmrm0";
/// Where Azure persists the vTPM attestation key (`HCLAkPub`).
pub const AK_HANDLE: u32 = 0x8100_0003;
/// The environment variable naming another TPM than [`TPM_DEVICE`].
pub const TPM_ENV: &str = "CONCLAVE_TPM";
pub const THIM_URL: &str = "http://169.254.169.254/metadata/THIM/amd/certification";

const HCL_MAGIC: &[u8; 4] = b"HCLA";
const HCL_HEADER_LEN: usize = 0x20;
const HCL_RUNTIME_HEADER_LEN: usize = 20;
const HCL_REPORT_TYPE_SNP: u32 = 2;
const HCL_HASH_SHA256: u32 = 1;

/// The parts of an HCL report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HclReport {
    /// The raw SEV-SNP report.
    pub snp_report: Vec<u8>,
    /// The runtime claims JSON bytes, exactly as hashed into the report's `report_data`.
    pub runtime_claims: Vec<u8>,
}

/// Parses an HCL report (as read from NV index `0x01400001`).
pub fn parse_hcl_report(bytes: &[u8]) -> Result<HclReport, TeeError> {
    let bad = |m: &str| TeeError::Malformed(format!("HCL report: {m}"));
    let u32_at = |off: usize| -> Result<u32, TeeError> {
        bytes
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| bad("truncated"))
    };
    if bytes.get(..4) != Some(HCL_MAGIC.as_slice()) {
        return Err(bad("does not start with HCLA"));
    }
    let report_end = HCL_HEADER_LEN + conclave_snp::report::REPORT_LEN;
    let snp_report = bytes
        .get(HCL_HEADER_LEN..report_end)
        .ok_or_else(|| bad("truncated report"))?;
    let report_type = u32_at(report_end + 8)?;
    if report_type != HCL_REPORT_TYPE_SNP {
        return Err(bad(&format!(
            "report type {report_type} is not SEV-SNP (2)"
        )));
    }
    let hash_type = u32_at(report_end + 12)?;
    if hash_type != HCL_HASH_SHA256 {
        return Err(bad(&format!(
            "runtime data hash type {hash_type} is not SHA-256 (1)"
        )));
    }
    let len = u32_at(report_end + 16)? as usize;
    let start = report_end + HCL_RUNTIME_HEADER_LEN;
    let runtime_claims = start
        .checked_add(len)
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| bad("runtime claims run past the end"))?;
    Ok(HclReport {
        snp_report: snp_report.to_vec(),
        runtime_claims: runtime_claims.to_vec(),
    })
}

// --- TPM 2.0 commands ------------------------------------------------------------------------

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_ST_SESSIONS: u16 = 0x8002;
const TPM_CC_NV_DEFINE_SPACE: u32 = 0x0000_012A;
const TPM_CC_NV_WRITE: u32 = 0x0000_0137;
const TPM_CC_NV_READ: u32 = 0x0000_014E;
const TPM_CC_NV_READ_PUBLIC: u32 = 0x0000_0169;
const TPM_CC_QUOTE: u32 = 0x0000_0158;
const TPM_CC_PCR_READ: u32 = 0x0000_017E;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_NULL: u16 = 0x0010;
/// TPM_RC_HANDLE (format one, handle 1): no object at that handle.
const TPM_RC_HANDLE_1: u32 = 0x0000_018B;
/// PCRs 0–23: the platform's PCR bank.
const PCR_COUNT: usize = 24;
const TPM_RH_OWNER: u32 = 0x4000_0001;
const TPM_RS_PW: u32 = 0x4000_0009;
const TPM_RC_NV_UNDEFINED: u32 = 0x0000_028B;
const NV_CHUNK: usize = 1024;

/// Builds a command: header, handles, an empty password session when `auth`, parameters.
pub fn tpm_command(cc: u32, handles: &[u32], auth: bool, params: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for h in handles {
        body.extend_from_slice(&h.to_be_bytes());
    }
    if auth {
        // TPMS_AUTH_COMMAND: handle, empty nonce, attributes 0, empty password.
        let session = [TPM_RS_PW.to_be_bytes().as_slice(), &[0, 0], &[0], &[0, 0]].concat();
        body.extend_from_slice(&(session.len() as u32).to_be_bytes());
        body.extend_from_slice(&session);
    }
    body.extend_from_slice(params);
    let tag = if auth {
        TPM_ST_SESSIONS
    } else {
        TPM_ST_NO_SESSIONS
    };
    let mut cmd = Vec::with_capacity(10 + body.len());
    cmd.extend_from_slice(&tag.to_be_bytes());
    cmd.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    cmd.extend_from_slice(&cc.to_be_bytes());
    cmd.extend_from_slice(&body);
    cmd
}

/// Splits a response into (response code, parameter area). With sessions, the parameter area
/// is preceded by its size.
pub fn tpm_response(resp: &[u8], sessions: bool) -> Result<(u32, &[u8]), TeeError> {
    let bad = || TeeError::Malformed("TPM response is truncated".into());
    if resp.len() < 10 {
        return Err(bad());
    }
    let size = u32::from_be_bytes(resp[2..6].try_into().expect("4 bytes")) as usize;
    let rc = u32::from_be_bytes(resp[6..10].try_into().expect("4 bytes"));
    if size < 10 {
        return Err(bad());
    }
    let resp = resp.get(..size).ok_or_else(bad)?;
    if rc != 0 {
        return Ok((rc, &[]));
    }
    if !sessions {
        return Ok((0, &resp[10..]));
    }
    let psize =
        u32::from_be_bytes(resp.get(10..14).ok_or_else(bad)?.try_into().expect("4")) as usize;
    Ok((0, resp.get(14..14 + psize).ok_or_else(bad)?))
}

fn tpm2b(params: &[u8]) -> Result<&[u8], TeeError> {
    let bad = || TeeError::Malformed("TPM2B field is truncated".into());
    let len = u16::from_be_bytes(params.get(..2).ok_or_else(bad)?.try_into().expect("2")) as usize;
    params.get(2..2 + len).ok_or_else(bad)
}

/// The size of an NV index, from `TPM2_NV_ReadPublic`'s answer, or `None` if undefined.
pub fn nv_size_from_public(rc: u32, params: &[u8]) -> Result<Option<usize>, TeeError> {
    if rc == TPM_RC_NV_UNDEFINED || rc & 0xFFF == 0x18B {
        return Ok(None);
    }
    if rc != 0 {
        return Err(TeeError::Refused(format!(
            "TPM2_NV_ReadPublic failed: rc {rc:#x}"
        )));
    }
    // TPM2B_NV_PUBLIC: index u32, nameAlg u16, attributes u32, authPolicy TPM2B, dataSize u16.
    let public = tpm2b(params)?;
    let policy = tpm2b(public.get(10..).unwrap_or_default())?;
    let at = 10 + 2 + policy.len();
    let size = public
        .get(at..at + 2)
        .ok_or_else(|| TeeError::Malformed("NV public area is truncated".into()))?;
    Ok(Some(
        u16::from_be_bytes(size.try_into().expect("2")) as usize
    ))
}

/// A signed `TPMS_ATTEST` and its `TPMT_SIGNATURE`, as `TPM2_Quote` returns them.
pub type SignedAttest = (Vec<u8>, Vec<u8>);

/// How commands reach the TPM.
enum Link {
    /// A kernel TPM device (`/dev/tpmrm0`): one write per command, one read per response.
    Device(std::fs::File),
    /// Raw commands over TCP (swtpm's server channel).
    Tcp(std::net::TcpStream),
}

/// A TPM to send commands to.
pub struct Tpm(Link);

impl Tpm {
    /// The TPM named by `CONCLAVE_TPM`, or `/dev/tpmrm0`.
    pub fn open() -> Result<Self, TeeError> {
        Self::open_at(&std::env::var(TPM_ENV).unwrap_or_else(|_| TPM_DEVICE.to_string()))
    }

    /// The TPM at `name`: a device path, or `tcp:HOST:PORT`.
    pub fn open_at(name: &str) -> Result<Self, TeeError> {
        if let Some(addr) = name.strip_prefix("tcp:") {
            let stream = std::net::TcpStream::connect(addr)
                .map_err(|e| TeeError::Unavailable(format!("TPM at {addr}: {e}")))?;
            stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
            return Ok(Tpm(Link::Tcp(stream)));
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name)
            .map(|f| Tpm(Link::Device(f)))
            .map_err(|e| {
                TeeError::Unavailable(format!("{name}: {e} (not an Azure confidential VM?)"))
            })
    }

    /// Sends a command and returns the response, resending it (up to 20 times, 10 ms apart)
    /// while the TPM answers with a warning that asks for that: TPM_RC_RETRY, TPM_RC_YIELDED or
    /// TPM_RC_TESTING (TPM 2.0 Library Part 2 §6.6.3).
    fn call(&mut self, cmd: &[u8]) -> Result<Vec<u8>, TeeError> {
        const RETRY: [u32; 3] = [0x922, 0x908, 0x90A];
        let mut resp = self.call_once(cmd)?;
        for _ in 0..20 {
            let rc = resp
                .get(6..10)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
            if !rc.is_some_and(|rc| RETRY.contains(&rc)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            resp = self.call_once(cmd)?;
        }
        Ok(resp)
    }

    fn call_once(&mut self, cmd: &[u8]) -> Result<Vec<u8>, TeeError> {
        match &mut self.0 {
            Link::Device(f) => {
                f.write_all(cmd)?;
                let mut buf = vec![0u8; 4096];
                let n = f.read(&mut buf)?;
                buf.truncate(n);
                Ok(buf)
            }
            Link::Tcp(s) => {
                s.write_all(cmd)?;
                let mut header = [0u8; 10];
                s.read_exact(&mut header)?;
                let size = u32::from_be_bytes(header[2..6].try_into().expect("4 bytes")) as usize;
                if !(10..=4096).contains(&size) {
                    return Err(TeeError::Malformed(format!("TPM response of {size} bytes")));
                }
                let mut buf = header.to_vec();
                buf.resize(size, 0);
                s.read_exact(&mut buf[10..])?;
                Ok(buf)
            }
        }
    }

    /// The SHA-256 values of PCRs 0–23 (`TPM2_PCR_Read`, which answers at most 8 at a time).
    pub fn pcrs_sha256(&mut self) -> Result<Vec<[u8; 32]>, TeeError> {
        let mut values: Vec<Option<[u8; 32]>> = vec![None; PCR_COUNT];
        for _ in 0..PCR_COUNT {
            let wanted: Vec<usize> = (0..PCR_COUNT).filter(|&i| values[i].is_none()).collect();
            if wanted.is_empty() {
                break;
            }
            let resp = self.call(&tpm_command(
                TPM_CC_PCR_READ,
                &[],
                false,
                &pcr_selection(&wanted),
            ))?;
            let (rc, params) = tpm_response(&resp, false)?;
            if rc != 0 {
                return Err(TeeError::Refused(format!(
                    "TPM2_PCR_Read failed: rc {rc:#x}"
                )));
            }
            let (returned, digests) = parse_pcr_read(params)?;
            if returned.is_empty() {
                return Err(TeeError::Refused(
                    "TPM2_PCR_Read returned no SHA-256 PCR (is the SHA-256 bank allocated?)".into(),
                ));
            }
            for (i, d) in returned.into_iter().zip(digests) {
                // Only PCRs that were asked for: a TPM answering others is not trusted here.
                if !wanted.contains(&i) {
                    return Err(TeeError::Malformed(format!(
                        "TPM2_PCR_Read answered PCR {i}, which was not asked for"
                    )));
                }
                values[i] = Some(d);
            }
        }
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.ok_or_else(|| TeeError::Refused(format!("PCR {i} could not be read"))))
            .collect()
    }

    /// `TPM2_Quote` of PCRs 0–23 (SHA-256) by the key at `ak`, for `nonce` (at most 64 bytes),
    /// signed with the key's own scheme. `None` when no key is at `ak`.
    pub fn quote(&mut self, ak: u32, nonce: &[u8]) -> Result<Option<SignedAttest>, TeeError> {
        let mut params = (nonce.len() as u16).to_be_bytes().to_vec();
        params.extend_from_slice(nonce);
        params.extend_from_slice(&TPM_ALG_NULL.to_be_bytes());
        params.extend_from_slice(&pcr_selection(&(0..PCR_COUNT).collect::<Vec<_>>()));
        let resp = self.call(&tpm_command(TPM_CC_QUOTE, &[ak], true, &params))?;
        match tpm_response(&resp, true)? {
            (0, p) => {
                let quoted = tpm2b(p)?.to_vec();
                let signature = p[2 + quoted.len()..].to_vec();
                Ok(Some((quoted, signature)))
            }
            (rc, _) if rc == TPM_RC_HANDLE_1 || rc & 0xFBF == 0x18B => Ok(None),
            (rc, _) => Err(TeeError::Refused(format!("TPM2_Quote failed: rc {rc:#x}"))),
        }
    }

    fn nv_size(&mut self, index: u32) -> Result<Option<usize>, TeeError> {
        let resp = self.call(&tpm_command(TPM_CC_NV_READ_PUBLIC, &[index], false, &[]))?;
        let (rc, params) = tpm_response(&resp, false)?;
        nv_size_from_public(rc, params)
    }

    fn nv_define(&mut self, index: u32, size: u16) -> Result<(), TeeError> {
        // Owner and auth read/write, SHA-256 name, empty auth and policy.
        let attributes: u32 = 0x2 | 0x4 | 0x2_0000 | 0x4_0000;
        let mut public = Vec::new();
        public.extend_from_slice(&index.to_be_bytes());
        public.extend_from_slice(&0x000Bu16.to_be_bytes());
        public.extend_from_slice(&attributes.to_be_bytes());
        public.extend_from_slice(&0u16.to_be_bytes());
        public.extend_from_slice(&size.to_be_bytes());
        let mut params = vec![0, 0];
        params.extend_from_slice(&(public.len() as u16).to_be_bytes());
        params.extend_from_slice(&public);
        let resp = self.call(&tpm_command(
            TPM_CC_NV_DEFINE_SPACE,
            &[TPM_RH_OWNER],
            true,
            &params,
        ))?;
        match tpm_response(&resp, true)? {
            (0, _) => Ok(()),
            (rc, _) => Err(TeeError::Refused(format!(
                "TPM2_NV_DefineSpace failed: rc {rc:#x}"
            ))),
        }
    }

    fn nv_write(&mut self, index: u32, data: &[u8]) -> Result<(), TeeError> {
        let mut params = (data.len() as u16).to_be_bytes().to_vec();
        params.extend_from_slice(data);
        params.extend_from_slice(&0u16.to_be_bytes());
        let resp = self.call(&tpm_command(
            TPM_CC_NV_WRITE,
            &[index, index],
            true,
            &params,
        ))?;
        match tpm_response(&resp, true)? {
            (0, _) => Ok(()),
            (rc, _) => Err(TeeError::Refused(format!(
                "TPM2_NV_Write failed: rc {rc:#x}"
            ))),
        }
    }

    fn nv_read(&mut self, index: u32, size: usize) -> Result<Vec<u8>, TeeError> {
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            let chunk = (size - out.len()).min(NV_CHUNK) as u16;
            let mut params = chunk.to_be_bytes().to_vec();
            params.extend_from_slice(&(out.len() as u16).to_be_bytes());
            let resp = self.call(&tpm_command(TPM_CC_NV_READ, &[index, index], true, &params))?;
            match tpm_response(&resp, true)? {
                (0, p) => out.extend_from_slice(tpm2b(p)?),
                (rc, _) => {
                    return Err(TeeError::Refused(format!(
                        "TPM2_NV_Read failed: rc {rc:#x}"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// `TPML_PCR_SELECTION` of the SHA-256 bank with `pcrs` selected.
fn pcr_selection(pcrs: &[usize]) -> Vec<u8> {
    let mut bitmap = [0u8; 3];
    for &i in pcrs {
        bitmap[i / 8] |= 1 << (i % 8);
    }
    let mut out = 1u32.to_be_bytes().to_vec();
    out.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    out.push(3);
    out.extend_from_slice(&bitmap);
    out
}

/// `TPM2_PCR_Read`'s answer: update counter, the selection actually read, the digests in order.
fn parse_pcr_read(p: &[u8]) -> Result<(Vec<usize>, Vec<[u8; 32]>), TeeError> {
    let bad = |m: &str| TeeError::Malformed(format!("TPM2_PCR_Read response: {m}"));
    let u32_at = |at: usize| -> Result<u32, TeeError> {
        p.get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| bad("truncated"))
    };
    let mut at = 4; // pcrUpdateCounter
    let banks = u32_at(at)? as usize;
    at += 4;
    let mut selected = Vec::new();
    for _ in 0..banks.min(16) {
        let hash = u16::from_be_bytes(
            p.get(at..at + 2)
                .ok_or_else(|| bad("truncated"))?
                .try_into()
                .expect("2"),
        );
        let size = *p.get(at + 2).ok_or_else(|| bad("truncated"))? as usize;
        let bitmap = p
            .get(at + 3..at + 3 + size)
            .ok_or_else(|| bad("truncated"))?;
        if hash == TPM_ALG_SHA256 {
            for (byte, bits) in bitmap.iter().enumerate() {
                for bit in 0..8 {
                    if bits & (1 << bit) != 0 {
                        selected.push(byte * 8 + bit);
                    }
                }
            }
        }
        at += 3 + size;
    }
    let count = u32_at(at)? as usize;
    at += 4;
    let mut digests = Vec::new();
    for _ in 0..count.min(PCR_COUNT) {
        let d = tpm2b(p.get(at..).ok_or_else(|| bad("truncated"))?)?;
        digests.push(<[u8; 32]>::try_from(d).map_err(|_| bad("a digest is not 32 bytes"))?);
        at += 2 + d.len();
    }
    if digests.len() != selected.len() {
        return Err(bad("as many digests as PCRs selected were not returned"));
    }
    Ok((selected, digests))
}

/// A vTPM quote for `nonce` by the attestation key at `ak`, with the PCR values it covers
/// (blocking; TPM I/O). The PCRs are read before and after the quote and must agree (a PCR
/// extended in between would make the values disagree with the quoted digest); it is retried
/// up to three times. `None` when the TPM has no key at `ak`.
pub fn read_quote(tpm: &mut Tpm, ak: u32, nonce: &[u8]) -> Result<Option<TpmQuote>, TeeError> {
    for _ in 0..3 {
        let before = tpm.pcrs_sha256()?;
        let Some((message, signature)) = tpm.quote(ak, nonce)? else {
            return Ok(None);
        };
        if tpm.pcrs_sha256()? == before {
            return Ok(Some(TpmQuote {
                message,
                signature,
                pcrs: before,
            }));
        }
    }
    Err(TeeError::Refused(
        "the PCRs kept changing while they were quoted".into(),
    ))
}

/// Reads an HCL report that binds `report_data` (blocking; TPM I/O).
pub fn read_hcl_report(report_data: [u8; 64]) -> Result<HclReport, TeeError> {
    let mut tpm = Tpm::open()?;
    if tpm.nv_size(NV_INDEX_USER_DATA)?.is_none() {
        tpm.nv_define(NV_INDEX_USER_DATA, 64)?;
    }
    tpm.nv_write(NV_INDEX_USER_DATA, &report_data)?;
    let size = tpm
        .nv_size(NV_INDEX_HCL_REPORT)?
        .ok_or_else(|| TeeError::Unavailable("the vTPM has no HCL report index".into()))?;
    parse_hcl_report(&tpm.nv_read(NV_INDEX_HCL_REPORT, size)?)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThimCertification {
    vcek_cert: String,
    certificate_chain: String,
}

/// Azure confidential VM evidence.
#[derive(Default)]
pub struct AzureVtpmEvidence;

impl AzureVtpmEvidence {
    pub fn new() -> Self {
        AzureVtpmEvidence
    }

    async fn collect(report_data: [u8; 64]) -> Result<Evidence, TeeError> {
        let (hcl, quote) = tokio::task::spawn_blocking(move || {
            let hcl = read_hcl_report(report_data)?;
            // The quote's nonce is what report_data binds: SHA-256 of the runtime data.
            let mut tpm = Tpm::open()?;
            let quote = read_quote(&mut tpm, AK_HANDLE, &report_data[..32])?;
            if quote.is_none() {
                tracing::warn!(
                    "the vTPM has no attestation key at {AK_HANDLE:#x}: evidence without a quote, so the boot PCRs are not attested"
                );
            }
            Ok::<_, TeeError>((hcl, quote))
        })
        .await
        .map_err(|e| TeeError::Io(std::io::Error::other(e)))??;
        let certs: ThimCertification = reqwest::Client::new()
            .get(THIM_URL)
            .header("Metadata", "true")
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| TeeError::Unavailable(format!("instance metadata (THIM): {e}")))?
            .json()
            .await
            .map_err(|e| TeeError::Malformed(format!("THIM certification: {e}")))?;
        Ok(Evidence {
            platform: Platform::AzureVtpm,
            report: hcl.snp_report,
            cert_chain_pem: format!(
                "{}\n{}",
                certs.vcek_cert.trim(),
                certs.certificate_chain.trim()
            ),
            hcl_runtime_claims: Some(hcl.runtime_claims),
            tpm_quote: quote,
        })
    }
}

impl EvidenceSource for AzureVtpmEvidence {
    fn platform(&self) -> Platform {
        Platform::AzureVtpm
    }

    fn evidence(&self, report_data: [u8; 64]) -> EvidenceFuture<'_> {
        Box::pin(Self::collect(report_data))
    }
}

/// Builds an HCL report in Azure's layout (for tests and for the simulated Azure path).
pub fn build_hcl_report(snp_report: &[u8], runtime_claims: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(HCL_MAGIC);
    out.extend_from_slice(&2u32.to_le_bytes()); // version
    let total = HCL_HEADER_LEN + snp_report.len() + HCL_RUNTIME_HEADER_LEN + runtime_claims.len();
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&2u32.to_le_bytes()); // request type
    out.extend_from_slice(&0u32.to_le_bytes()); // status
    out.extend_from_slice(&[0u8; 12]);
    out.extend_from_slice(snp_report);
    out.extend_from_slice(&((HCL_RUNTIME_HEADER_LEN + runtime_claims.len()) as u32).to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // version
    out.extend_from_slice(&HCL_REPORT_TYPE_SNP.to_le_bytes());
    out.extend_from_slice(&HCL_HASH_SHA256.to_le_bytes());
    out.extend_from_slice(&(runtime_claims.len() as u32).to_le_bytes());
    out.extend_from_slice(runtime_claims);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIMS: &[u8] = br#"{"keys":[{"kid":"HCLAkPub","kty":"RSA","e":"AQAB","n":"sw"}],"vm-configuration":{"console-enabled":true,"secure-boot":true,"tpm-enabled":true,"vmUniqueId":"6D1A2C0F-3E5B-4A9C-9E1D-0B7F2A4C8E11"},"user-data":"00"}"#;

    fn milan_report() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../conclave-snp/tests/data/milan-virtee-sev/report.bin"
        ))
        .unwrap()
    }

    #[test]
    fn parses_an_hcl_report() {
        let report = milan_report();
        let hcl = build_hcl_report(&report, CLAIMS);
        let parsed = parse_hcl_report(&hcl).unwrap();
        assert_eq!(parsed.snp_report, report);
        assert_eq!(parsed.runtime_claims, CLAIMS);
        // Trailing padding, as the NV index is larger than the report, is ignored.
        let mut padded = hcl.clone();
        padded.extend_from_slice(&[0u8; 700]);
        assert_eq!(parse_hcl_report(&padded).unwrap(), parsed);
    }

    #[test]
    fn rejects_malformed_hcl_reports() {
        let hcl = build_hcl_report(&milan_report(), CLAIMS);
        assert!(parse_hcl_report(&hcl[..100]).is_err());
        assert!(parse_hcl_report(&hcl[..hcl.len() - 1]).is_err());
        let mut wrong_magic = hcl.clone();
        wrong_magic[0] = b'X';
        assert!(parse_hcl_report(&wrong_magic).is_err());
        let mut tdx = hcl.clone();
        tdx[0x4C0 + 8] = 4;
        assert!(
            parse_hcl_report(&tdx)
                .unwrap_err()
                .to_string()
                .contains("not SEV-SNP")
        );
        let mut huge = hcl;
        huge[0x4C0 + 16..0x4C0 + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_hcl_report(&huge).is_err());
    }

    #[test]
    fn nv_read_command_has_the_tpm_layout() {
        let cmd = tpm_command(
            TPM_CC_NV_READ,
            &[NV_INDEX_HCL_REPORT, NV_INDEX_HCL_REPORT],
            true,
            &[4, 0, 0, 0],
        );
        let expected = concat!(
            "8002", "00000023", "0000014e", "01400001", "01400001", // header and handles
            "00000009", "40000009", "0000", "00", "0000",     // password session
            "04000000"  // size 0x0400, offset 0
        );
        assert_eq!(hex::encode(&cmd), expected);
        assert_eq!(&cmd[..2], &[0x80, 0x02]);
        assert_eq!(
            u32::from_be_bytes(cmd[2..6].try_into().unwrap()) as usize,
            cmd.len()
        );
        assert_eq!(
            u32::from_be_bytes(cmd[6..10].try_into().unwrap()),
            TPM_CC_NV_READ
        );
        assert_eq!(
            u32::from_be_bytes(cmd[18..22].try_into().unwrap()),
            9,
            "auth area size"
        );
        assert_eq!(
            u32::from_be_bytes(cmd[22..26].try_into().unwrap()),
            TPM_RS_PW
        );
        assert_eq!(&cmd[cmd.len() - 4..], &[4, 0, 0, 0]);
    }

    #[test]
    fn parses_nv_public_and_read_responses() {
        // TPM2_NV_ReadPublic answer for a 2600-byte index with an empty auth policy.
        let public = [
            &NV_INDEX_HCL_REPORT.to_be_bytes()[..],
            &0x000Bu16.to_be_bytes(),
            &0x0006_0002u32.to_be_bytes(),
            &0u16.to_be_bytes(),
            &2600u16.to_be_bytes(),
        ]
        .concat();
        let mut params = (public.len() as u16).to_be_bytes().to_vec();
        params.extend_from_slice(&public);
        params.extend_from_slice(&[0, 0]); // name
        let mut resp = vec![0x80, 0x01];
        resp.extend_from_slice(&((10 + params.len()) as u32).to_be_bytes());
        resp.extend_from_slice(&0u32.to_be_bytes());
        resp.extend_from_slice(&params);
        let (rc, p) = tpm_response(&resp, false).unwrap();
        assert_eq!(nv_size_from_public(rc, p).unwrap(), Some(2600));
        assert_eq!(nv_size_from_public(TPM_RC_NV_UNDEFINED, &[]).unwrap(), None);
        assert!(nv_size_from_public(0x101, &[]).is_err());

        // TPM2_NV_Read answer with sessions: parameter size, TPM2B data, session area.
        let data = b"HCLA-chunk";
        let mut p = (data.len() as u16).to_be_bytes().to_vec();
        p.extend_from_slice(data);
        let mut resp = vec![0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
        resp.extend_from_slice(&(p.len() as u32).to_be_bytes());
        resp.extend_from_slice(&p);
        resp.extend_from_slice(&[0, 0, 1, 0, 0]);
        let len = resp.len() as u32;
        resp[2..6].copy_from_slice(&len.to_be_bytes());
        let (rc, p) = tpm_response(&resp, true).unwrap();
        assert_eq!(rc, 0);
        assert_eq!(tpm2b(p).unwrap(), data);
        assert!(tpm_response(&resp[..12], true).is_err());
    }
}
