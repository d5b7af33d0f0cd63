//! `conclave measure`: what a release policy must pin for a workload on each platform, and the
//! policy itself (Azure's secure key release grammar, accepted by Conclave's vault and by Azure
//! Key Vault):
//!
//! - `sim` (or the bare form `conclave measure <binary> <config>`): the simulated platform's
//!   launch measurement, a hash of the binary, its arguments and its config;
//! - `snp`: a bare SEV-SNP guest (QEMU/KVM, Kata/CoCo pod VMs): the launch digest of its OVMF,
//!   kernel, initrd, command line and vCPUs, as the secure processor computes it;
//! - `aci`: Azure Container Instances confidential container groups (and AKS virtual nodes):
//!   the report's `host_data` is the SHA-256 of the container group's security policy (its
//!   ccePolicy, base64-decoded), which pins the images, commands and environment;
//! - `cvm`: Azure confidential VMs, whose SEV-SNP measurement is the paravisor's and names no
//!   workload: the VM (`vmUniqueId`), the compliance of its isolation and, with Conclave's
//!   attestation service, the PCRs of its measured boot.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use conclave_kms::policy::{Condition, ReleasePolicy};
use serde_json::Value;

use crate::sim_cmd::SimMeasureArgs;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MeasureArgs {
    #[command(subcommand)]
    target: Option<MeasureTarget>,
    /// The workload binary (the simulated platform; the same as `conclave measure sim`).
    binary: Option<PathBuf>,
    /// The launch config file the workload will be given.
    config: Option<PathBuf>,
    /// Arguments the workload is launched with (they are measured too).
    #[arg(last = true)]
    args: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum MeasureTarget {
    /// The simulated platform: the launch measurement of a binary, its arguments and config.
    Sim(SimMeasureArgs),
    /// A bare SEV-SNP guest launched by QEMU/KVM (also Kata/CoCo pod VMs): its launch digest.
    Snp(SnpArgs),
    /// ACI confidential container groups (and AKS virtual nodes): host_data from the ccePolicy.
    Aci(AciArgs),
    /// Azure confidential VMs: the VM, its isolation's compliance and its measured boot.
    Cvm(CvmArgs),
}

#[derive(Args)]
struct SnpArgs {
    /// The OVMF firmware image the guest boots (`OVMF.fd`; edk2's AmdSevX64 build for measured
    /// direct boot with --kernel).
    #[arg(long)]
    ovmf: PathBuf,
    /// The kernel, for measured direct boot (QEMU `-kernel` with `kernel-hashes=on`).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The initrd (QEMU `-initrd`); with --kernel.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line, exactly as the VMM passes it (QEMU `-append`); with --kernel.
    #[arg(long, requires = "kernel")]
    append: Option<String>,
    /// The number of vCPUs (QEMU `-smp`): one VMSA is measured per vCPU.
    #[arg(long)]
    vcpus: u32,
    /// The vCPU type (QEMU `-cpu`), e.g. EPYC-v4, EPYC-Milan, EPYC-Genoa.
    #[arg(long)]
    vcpu_type: String,
    /// The guest's SEV features (the VMSA's SEV_FEATURES), in hex; bit 0 (SNPActive) is set.
    #[arg(long, default_value = "0x1", value_parser = parse_hex_u64)]
    guest_features: u64,
    /// The launch digest of the OVMF pages alone, if already computed (96 hex digits).
    #[arg(long)]
    ovmf_hash: Option<String>,
    /// The HOST_DATA the guest is launched with (64 hex digits), to pin as well: e.g. the
    /// SHA-256 of a Kata/CoCo pod's policy, where the runtime puts it there.
    #[arg(long)]
    host_data: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
}

fn parse_hex_u64(s: &str) -> Result<u64, String> {
    let digits = s.trim().trim_start_matches("0x").trim_start_matches("0X");
    u64::from_str_radix(digits, 16).map_err(|_| format!("{s:?} is not a hex number such as 0x1"))
}

#[derive(Args)]
struct AciArgs {
    /// The ccePolicy as the ARM template carries it (base64 of the Rego text).
    #[arg(long, group = "source")]
    cce_policy: Option<String>,
    /// The security policy as a Rego file (what `az confcom acipolicygen --print-policy`
    /// decodes to).
    #[arg(long, group = "source")]
    rego: Option<PathBuf>,
    /// An ARM template whose container group carries the ccePolicy (after `az confcom
    /// acipolicygen -a <template>` wrote it in).
    #[arg(long, group = "source")]
    arm_template: Option<PathBuf>,
    /// With --arm-template: the container group's name expression or literal name, when the
    /// template has several confidential groups with different policies.
    #[arg(long, requires = "arm_template")]
    container_group: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Args)]
struct CvmArgs {
    /// The VM's `vmUniqueId` (Azure's VM id; `az vm show --query vmId`), which tokens carry as
    /// `x-ms-azurevm-vmid`.
    #[arg(long)]
    vm_unique_id: String,
    /// A PCR of the VM's measured boot to pin, as INDEX=HEX (SHA-256 bank; repeatable), e.g.
    /// from `tpm2_pcrread sha256:4,7,11` on a reference VM. Only Conclave's attestation service
    /// verifies a vTPM quote and issues them (`x-conclave-tpm.pcrNN`); Azure Attestation's
    /// tokens carry none.
    #[arg(long = "pcr", value_name = "INDEX=HEX")]
    pcrs: Vec<String>,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Args)]
struct PolicyArgs {
    /// The attestation authority whose tokens the policy accepts: Microsoft Azure Attestation
    /// (https://<name>.<region>.attest.azure.net) or a Conclave attestation service.
    #[arg(long)]
    authority: String,
    /// Print JSON ({values, policy}) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: MeasureArgs) -> anyhow::Result<ExitCode> {
    match a.target {
        Some(MeasureTarget::Sim(s)) => crate::sim_cmd::measure(s),
        Some(MeasureTarget::Snp(snp)) => measure_snp(snp),
        Some(MeasureTarget::Aci(aci)) => measure_aci(aci),
        Some(MeasureTarget::Cvm(cvm)) => measure_cvm(cvm),
        None => match (a.binary, a.config) {
            (Some(binary), Some(config)) => crate::sim_cmd::measure(SimMeasureArgs {
                binary,
                config,
                args: a.args,
                json: a.json,
            }),
            _ => bail!(
                "say what to measure: conclave measure sim|snp|aci|cvm … (see conclave measure --help)"
            ),
        },
    }
}

/// Whether `authority` is Microsoft Azure Attestation (its compliance values are Azure's).
fn is_azure_attestation(authority: &str) -> bool {
    url_host(authority).is_some_and(|h| h.ends_with(".attest.azure.net"))
}

fn url_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://")?;
    Some(rest.split(['/', ':']).next().unwrap_or(rest))
}

fn check_authority(authority: &str) -> anyhow::Result<()> {
    if url_host(authority).is_none_or(str::is_empty) {
        bail!("--authority {authority:?} is not an https:// URL of an attestation service");
    }
    Ok(())
}

/// Prints what to pin and the policy; the policy is parsed back first, as the vault will.
fn print(
    values: &[(String, String)],
    policy: &ReleasePolicy,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let text = policy.to_json();
    ReleasePolicy::parse(text.to_string().as_bytes())
        .context("the release policy printed must parse (a bug: please report it)")?;
    if json {
        let values: serde_json::Map<String, Value> = values
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "values": values, "policy": text }))?
        );
    } else {
        for (k, v) in values {
            println!("{k}: {v}");
        }
        println!();
        println!(
            "release policy (conclave key policy <name> --policy <file>, or Azure Key Vault's --policy):"
        );
        println!("{}", serde_json::to_string_pretty(&text)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn measure_snp(a: SnpArgs) -> anyhow::Result<ExitCode> {
    use crate::launch_digest::{LaunchInputs, launch_digest};
    check_authority(&a.policy.authority)?;
    let host_data = a.host_data.map(|h| h.trim().to_ascii_lowercase());
    if let Some(h) = &host_data
        && (h.len() != 64 || hex::decode(h).is_err())
    {
        bail!("--host-data {h:?} is not 64 hex digits (32 bytes, as the report's HOST_DATA)");
    }
    if a.kernel.is_none() {
        eprintln!(
            "note: without --kernel the digest covers the firmware and vCPUs only, not the disk the guest boots: any guest of this firmware and shape has it. Pin the workload too (measured direct boot with a dm-verity root hash on the command line, or --host-data)."
        );
    }
    let digest = hex::encode(launch_digest(&LaunchInputs {
        ovmf: a.ovmf,
        kernel: a.kernel,
        initrd: a.initrd,
        append: a.append,
        vcpus: a.vcpus,
        vcpu_type: a.vcpu_type,
        guest_features: a.guest_features,
        ovmf_hash: a.ovmf_hash.map(|h| h.trim().to_ascii_lowercase()),
    })?);
    let mut conditions = vec![
        Condition::equals("x-ms-attestation-type", "sevsnpvm"),
        Condition::equals("x-ms-sevsnpvm-is-debuggable", false),
        Condition::equals("x-ms-sevsnpvm-launchmeasurement", digest.as_str()),
    ];
    let mut values = vec![("x-ms-sevsnpvm-launchmeasurement".to_string(), digest)];
    if let Some(h) = host_data {
        conditions.push(Condition::equals("x-ms-sevsnpvm-hostdata", h.as_str()));
        values.push(("x-ms-sevsnpvm-hostdata".to_string(), h));
    }
    if !is_azure_attestation(&a.policy.authority) {
        // Conclave's attestation service names the platform it verified: pin real hardware, so
        // that no simulated report is accepted even by a service configured to trust one.
        conditions.push(Condition::equals(
            conclave_protocol::claims::PLATFORM_CLAIM,
            conclave_protocol::Platform::Snp.as_str(),
        ));
    }
    let policy = ReleasePolicy::for_authority(&a.policy.authority, conditions);
    print(&values, &policy, a.policy.json)
}

fn measure_aci(a: AciArgs) -> anyhow::Result<ExitCode> {
    check_authority(&a.policy.authority)?;
    let rego = match (&a.cce_policy, &a.rego, &a.arm_template) {
        (Some(b64), ..) => decode_cce_policy(b64, "--cce-policy")?,
        (_, Some(path), _) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        (.., Some(path)) => {
            let text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let template: Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not an ARM template (JSON)", path.display()))?;
            let policy = cce_policy_of(&template, a.container_group.as_deref())
                .with_context(|| format!("in {}", path.display()))?;
            decode_cce_policy(&policy, "the template's ccePolicy")?
        }
        _ => bail!("give the security policy: --cce-policy, --rego or --arm-template"),
    };
    let host_data = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &rego));
    let compliance = if is_azure_attestation(&a.policy.authority) {
        "azure-compliant-uvm"
    } else {
        conclave_protocol::claims::COMPLIANT
    };
    let policy = ReleasePolicy::for_authority(
        &a.policy.authority,
        vec![
            Condition::equals("x-ms-attestation-type", "sevsnpvm"),
            Condition::equals("x-ms-compliance-status", compliance),
            Condition::equals("x-ms-sevsnpvm-is-debuggable", false),
            Condition::equals("x-ms-sevsnpvm-hostdata", host_data.as_str()),
        ],
    );
    print(
        &[("x-ms-sevsnpvm-hostdata".to_string(), host_data)],
        &policy,
        a.policy.json,
    )
}

/// The Rego text of a base64 ccePolicy.
fn decode_cce_policy(b64: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .with_context(|| {
            format!("{what} is not base64 (ARM templates carry the policy base64-encoded)")
        })?;
    if bytes.is_empty() {
        bail!("{what} is empty: run az confcom acipolicygen first");
    }
    if !bytes.starts_with(b"package ") && !bytes.windows(8).any(|w| w == b"package ") {
        bail!("{what} does not decode to a Rego policy (no `package` declaration)");
    }
    Ok(bytes)
}

/// The ccePolicy of the template's confidential container group (`name` picks one when there
/// are several).
fn cce_policy_of(template: &Value, name: Option<&str>) -> anyhow::Result<String> {
    let groups: Vec<&Value> = template["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter(|r| r["type"] == "Microsoft.ContainerInstance/containerGroups")
                .filter(|r| {
                    r["properties"]["confidentialComputeProperties"]["ccePolicy"].is_string()
                })
                .collect()
        })
        .unwrap_or_default();
    let chosen: Vec<&Value> = groups
        .iter()
        .copied()
        .filter(|g| name.is_none_or(|n| g["name"] == n))
        .collect();
    match chosen.as_slice() {
        [one] => Ok(
            one["properties"]["confidentialComputeProperties"]["ccePolicy"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
        [] if groups.is_empty() => {
            bail!("no container group with confidentialComputeProperties.ccePolicy")
        }
        [] => bail!("no container group named {:?}", name.unwrap_or_default()),
        _ => bail!(
            "{} container groups carry a ccePolicy: choose one with --container-group",
            chosen.len()
        ),
    }
}

fn measure_cvm(a: CvmArgs) -> anyhow::Result<ExitCode> {
    check_authority(&a.policy.authority)?;
    let vm = a.vm_unique_id.trim().to_ascii_lowercase();
    if vm.len() != 36 || !vm.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        bail!("--vm-unique-id {vm:?} is not a VM id (a GUID: az vm show --query vmId)");
    }
    let azure = is_azure_attestation(&a.policy.authority);
    if azure && !a.pcrs.is_empty() {
        bail!(
            "Azure Attestation's tokens carry no PCR values: pin PCRs with Conclave's attestation service (which verifies the vTPM quote), or leave --pcr out"
        );
    }
    let mut conditions = vec![
        Condition::equals("x-ms-attestation-type", "azurevm"),
        Condition::equals("x-ms-isolation-tee.x-ms-attestation-type", "sevsnpvm"),
        Condition::equals(
            "x-ms-isolation-tee.x-ms-compliance-status",
            "azure-compliant-cvm",
        ),
        Condition::equals("x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable", false),
        Condition::equals("x-ms-azurevm-vmid", vm.as_str()),
    ];
    let mut values = vec![("x-ms-azurevm-vmid".to_string(), vm.clone())];
    let mut seen = std::collections::BTreeSet::new();
    for p in &a.pcrs {
        let (index, value) = p
            .split_once('=')
            .with_context(|| format!("--pcr {p:?} is not INDEX=HEX"))?;
        let index: u8 = index
            .trim()
            .parse()
            .ok()
            .filter(|i| *i < 24)
            .with_context(|| format!("--pcr {p:?}: the index must be 0 to 23"))?;
        let value = value.trim().to_ascii_lowercase();
        if value.len() != 64 || hex::decode(&value).is_err() {
            bail!("--pcr {p:?}: the value must be 64 hex digits (a SHA-256 bank PCR)");
        }
        if !seen.insert(index) {
            bail!("--pcr {index} is given twice");
        }
        let claim = format!("{}.pcr{index:02}", conclave_protocol::claims::TPM_CLAIM);
        conditions.push(Condition::equals(&claim, value.as_str()));
        values.push((claim, value));
    }
    let policy = ReleasePolicy::for_authority(&a.policy.authority, conditions);
    print(&values, &policy, a.policy.json)
}
