//! The token's claims, named as Microsoft Azure Attestation names them, so release policies
//! written for MAA read Conclave tokens unchanged.

use serde_json::{Map, Value, json};

use crate::appraisal::Appraisal;
use conclave_protocol::Platform;

pub use conclave_protocol::claims::*;

/// The SEV-SNP claims (`x-ms-sevsnpvm-*`) of a verified report.
fn sevsnp_claims(a: &Appraisal) -> Map<String, Value> {
    let r = a.report.report();
    let tcb = a.report.reported_tcb();
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(format!("x-ms-sevsnpvm-{k}"), v);
    };
    put("launchmeasurement", hex::encode(r.measurement).into());
    put("hostdata", hex::encode(r.host_data).into());
    put("reportdata", hex::encode(r.report_data).into());
    put("chipid", hex::encode(r.chip_id).into());
    put("reportid", hex::encode(r.report_id).into());
    put("familyId", hex::encode(r.family_id).into());
    put("imageId", hex::encode(r.image_id).into());
    put("idkeydigest", hex::encode(r.id_key_digest).into());
    put("authorkeydigest", hex::encode(r.author_key_digest).into());
    put("is-debuggable", r.policy.debug_allowed().into());
    put("migration-allowed", r.policy.migrate_ma_allowed().into());
    put("smt-allowed", r.policy.smt_allowed().into());
    put("guestsvn", r.guest_svn.into());
    put("vmpl", r.vmpl.into());
    put("bootloader-svn", tcb.bootloader.into());
    put("tee-svn", tcb.tee.into());
    put("snpfw-svn", tcb.snp.into());
    put("microcode-svn", tcb.microcode.into());
    if let Some(fmc) = tcb.fmc {
        put("fmc-svn", fmc.into());
    }
    put("report-version", r.version.into());
    put("product", a.report.product().name().into());
    m
}

/// All claims of the token, without the time and issuer claims the signer adds.
pub fn token_claims(a: &Appraisal) -> Map<String, Value> {
    let mut claims = Map::new();
    let sevsnp = sevsnp_claims(a);
    match a.platform {
        Platform::AzureVtpm => {
            // MAA's guest attestation shape: TEE facts nest under x-ms-isolation-tee, the VM's
            // configuration (vmUniqueId) appears in x-ms-runtime.
            let mut tee = sevsnp;
            tee.insert("x-ms-attestation-type".into(), "sevsnpvm".into());
            tee.insert(
                "x-ms-compliance-status".into(),
                "azure-compliant-cvm".into(),
            );
            if let Some(hcl) = &a.hcl_claims {
                tee.insert("x-ms-runtime".into(), hcl.clone());
            }
            claims.insert("x-ms-isolation-tee".into(), Value::Object(tee));
            claims.insert("x-ms-attestation-type".into(), "azurevm".into());
            // MAA's name for the VM's id in guest attestation tokens.
            if let Some(id) = a
                .hcl_claims
                .as_ref()
                .and_then(|h| h["vm-configuration"]["vmUniqueId"].as_str())
            {
                claims.insert("x-ms-azurevm-vmid".into(), id.into());
            }
            // The measured boot the vTPM quoted: pcr00…pcr23 (hex SHA-256), for policies that
            // pin boot state (`x-conclave-tpm.pcr07 equals …`).
            if let Some(q) = &a.tpm {
                claims.insert(TPM_CLAIM.into(), crate::vtpm::quote_claims(q));
            }
            let mut runtime = a.runtime.clone().unwrap_or_else(|| json!({}));
            if let (Some(obj), Some(vm)) = (
                runtime.as_object_mut(),
                a.hcl_claims
                    .as_ref()
                    .and_then(|h| h.get("vm-configuration")),
            ) {
                obj.insert("vm-configuration".into(), vm.clone());
            }
            claims.insert("x-ms-runtime".into(), runtime);
        }
        Platform::Sim | Platform::Snp => {
            claims.extend(sevsnp);
            claims.insert("x-ms-attestation-type".into(), "sevsnpvm".into());
            claims.insert("x-ms-compliance-status".into(), COMPLIANT.into());
            if let Some(runtime) = &a.runtime {
                claims.insert("x-ms-runtime".into(), runtime.clone());
            }
        }
    }
    claims.insert(PLATFORM_CLAIM.into(), a.platform.as_str().into());
    claims.insert("x-ms-ver".into(), "1.0".into());
    if let Some(nonce) = &a.nonce {
        claims.insert("nonce".into(), nonce.clone().into());
    }
    claims
}
