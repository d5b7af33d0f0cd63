//! Evidence from a Linux SEV-SNP guest on AMD hardware.
//!
//! Uses the kernel's configfs-tsm report interface (Linux 6.7 and later, `sev-guest` driver):
//! create a directory under `/sys/kernel/config/tsm/report`, write the 64 bytes of report data to
//! `inblob`, read the report from `outblob` and the certificate table (VCEK, ASK, ARK, as the
//! host provisioned them) from `auxblob`. It needs no ioctl and no unsafe code. When the host
//! provides no certificates, the chain is completed from AMD's KDS by the operator (see the
//! README section on real hardware).

use std::path::PathBuf;

use base64::Engine as _;

use crate::{Evidence, EvidenceFuture, EvidenceSource, Platform, TeeError};

/// Where configfs-tsm lives.
pub const TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";

/// GUIDs of the SEV-SNP extended-report certificate table (GHCB spec, "SNP Extended Guest
/// Request"), in their canonical text form.
pub const GUID_VCEK: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
pub const GUID_VLEK: &str = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";
pub const GUID_ASK: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
pub const GUID_ARK: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";

/// One certificate from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    pub guid: String,
    pub der: Vec<u8>,
}

/// Formats a GUID stored in its mixed-endian binary form.
fn guid_text(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{}-{}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    )
}

/// Parses the certificate table: 24-byte entries (GUID, offset u32, length u32) up to an
/// all-zero entry; offsets are from the start of the table.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<TableEntry>, TeeError> {
    let bad = |m: String| TeeError::Malformed(format!("certificate table: {m}"));
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        let entry = table
            .get(pos..pos + 24)
            .ok_or_else(|| bad("no terminating entry".into()))?;
        if entry.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let guid: [u8; 16] = entry[..16].try_into().expect("16 bytes");
        let offset = u32::from_le_bytes(entry[16..20].try_into().expect("4 bytes")) as usize;
        let length = u32::from_le_bytes(entry[20..24].try_into().expect("4 bytes")) as usize;
        let der = offset
            .checked_add(length)
            .and_then(|end| table.get(offset..end))
            .ok_or_else(|| bad(format!("entry {} points outside the table", out.len())))?;
        out.push(TableEntry {
            guid: guid_text(&guid),
            der: der.to_vec(),
        });
        pos += 24;
    }
}

/// Turns table entries into the PEM bundle the attestation service takes (leaf first).
pub fn table_to_pem(entries: &[TableEntry]) -> String {
    let order = [GUID_VCEK, GUID_VLEK, GUID_ASK, GUID_ARK];
    let mut pem = String::new();
    for guid in order {
        for e in entries.iter().filter(|e| e.guid == guid) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&e.der);
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
    }
    pem
}

/// SEV-SNP guest evidence through configfs-tsm.
pub struct SnpEvidence {
    root: PathBuf,
}

impl Default for SnpEvidence {
    fn default() -> Self {
        Self::new()
    }
}

impl SnpEvidence {
    pub fn new() -> Self {
        SnpEvidence {
            root: PathBuf::from(TSM_REPORT_DIR),
        }
    }

    fn blocking(root: PathBuf, report_data: [u8; 64]) -> Result<Evidence, TeeError> {
        if !root.is_dir() {
            return Err(TeeError::Unavailable(format!(
                "{} does not exist (not an SEV-SNP guest, or a kernel older than 6.7 without configfs-tsm)",
                root.display()
            )));
        }
        let entry = root.join(format!("conclave-{}", std::process::id()));
        std::fs::create_dir(&entry)?;
        let result = (|| {
            let provider = std::fs::read_to_string(entry.join("provider")).unwrap_or_default();
            if !provider.trim().starts_with("sev_guest") {
                return Err(TeeError::Unavailable(format!(
                    "the TSM provider is {:?}, not sev_guest",
                    provider.trim()
                )));
            }
            std::fs::write(entry.join("inblob"), report_data)?;
            let report = std::fs::read(entry.join("outblob"))?;
            let aux = std::fs::read(entry.join("auxblob")).unwrap_or_default();
            let cert_chain_pem = if aux.is_empty() {
                String::new()
            } else {
                table_to_pem(&parse_cert_table(&aux)?)
            };
            Ok(Evidence {
                platform: Platform::Snp,
                report,
                cert_chain_pem,
                hcl_runtime_claims: None,
                tpm_quote: None,
            })
        })();
        let _ = std::fs::remove_dir(&entry);
        result
    }
}

impl EvidenceSource for SnpEvidence {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    fn evidence(&self, report_data: [u8; 64]) -> EvidenceFuture<'_> {
        let root = self.root.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::blocking(root, report_data))
                .await
                .map_err(|e| TeeError::Io(std::io::Error::other(e)))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guid_bytes(text: &str) -> [u8; 16] {
        let hexed: String = text.chars().filter(|c| *c != '-').collect();
        let raw = hex::decode(hexed).unwrap();
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
        b[4..6].copy_from_slice(&[raw[5], raw[4]]);
        b[6..8].copy_from_slice(&[raw[7], raw[6]]);
        b[8..].copy_from_slice(&raw[8..]);
        b
    }

    fn table(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let header = 24 * (entries.len() + 1);
        let mut t = Vec::new();
        let mut data = Vec::new();
        for (guid, der) in entries {
            t.extend_from_slice(&guid_bytes(guid));
            t.extend_from_slice(&((header + data.len()) as u32).to_le_bytes());
            t.extend_from_slice(&(der.len() as u32).to_le_bytes());
            data.extend_from_slice(der);
        }
        t.extend_from_slice(&[0u8; 24]);
        t.extend_from_slice(&data);
        t
    }

    #[test]
    fn parses_a_recorded_shape_table() {
        let vcek = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../conclave-snp/tests/data/milan-virtee-sev/vcek.der"
        ))
        .unwrap();
        let t = table(&[
            (GUID_ARK, b"ark-bytes"),
            (GUID_VCEK, &vcek),
            (GUID_ASK, b"ask"),
        ]);
        let entries = parse_cert_table(&t).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].guid, GUID_ARK);
        assert_eq!(entries[1].der, vcek);
        let pem = table_to_pem(&entries);
        let certs = conclave_pki::Cert::parse_pem_bundle("chain", pem.as_bytes());
        // The ARK/ASK placeholders are not certificates; the VCEK (first) parses.
        assert!(certs.is_err());
        let first = pem
            .split("-----END CERTIFICATE-----")
            .next()
            .unwrap()
            .to_string()
            + "-----END CERTIFICATE-----\n";
        assert_eq!(
            conclave_pki::Cert::parse("vcek", first.as_bytes())
                .unwrap()
                .der,
            vcek
        );
    }

    #[test]
    fn rejects_entries_outside_the_table() {
        let mut t = table(&[(GUID_VCEK, b"abc")]);
        t[20..24].copy_from_slice(&1000u32.to_le_bytes());
        assert!(parse_cert_table(&t).is_err());
        assert!(parse_cert_table(&t[..10]).is_err());
        let mut overflow = table(&[(GUID_VCEK, b"abc")]);
        overflow[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        overflow[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_cert_table(&overflow).is_err());
    }

    #[tokio::test]
    async fn reports_unavailable_outside_a_guest() {
        let src = SnpEvidence {
            root: PathBuf::from("/nonexistent/tsm/report"),
        };
        let err = src.evidence([0; 64]).await.unwrap_err();
        assert!(matches!(err, TeeError::Unavailable(_)), "{err}");
    }
}
