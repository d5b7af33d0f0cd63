//! `conclave measure aci` and `cvm`: the value to pin and a release policy a real vault accepts.
//! The simulated platform's host_data is the SHA-256 of the launch config, as ACI's is of the
//! container group's security policy, so an `aci` policy computed from a config file releases
//! a key to a sim TEE launched with exactly that config, and to no other.

mod common;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_conclave");

fn measure(args: &[&str]) -> (bool, Value, String) {
    let out = std::process::Command::new(BIN)
        .arg("measure")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aci_policy_releases_only_to_the_security_policy_it_was_computed_from() {
    let env = env().await;
    let rego = env.dir.join("policy.rego");
    std::fs::write(&rego, GOOD_CONFIG).unwrap();
    let (ok, out, err) = measure(&[
        "aci",
        "--rego",
        rego.to_str().unwrap(),
        "--authority",
        &env.attest_url,
        "--json",
    ]);
    assert!(ok, "{err}");
    let host_data = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        GOOD_CONFIG,
    ));
    assert_eq!(out["values"]["x-ms-sevsnpvm-hostdata"], host_data.as_str());
    // The same value from the base64 an ARM template carries, and from the template itself.
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"package policy\n",
    );
    let (ok, from_b64, err) = measure(&[
        "aci",
        "--cce-policy",
        &b64,
        "--authority",
        &env.attest_url,
        "--json",
    ]);
    assert!(ok, "{err}");
    let template = env.dir.join("template.json");
    std::fs::write(
        &template,
        json!({"resources": [{"type": "Microsoft.ContainerInstance/containerGroups", "name": "g",
            "properties": {"confidentialComputeProperties": {"ccePolicy": b64}}}]})
        .to_string(),
    )
    .unwrap();
    let (ok, from_template, err) = measure(&[
        "aci",
        "--arm-template",
        template.to_str().unwrap(),
        "--authority",
        &env.attest_url,
        "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(from_b64["values"], from_template["values"]);
    assert_eq!(
        from_b64["values"]["x-ms-sevsnpvm-hostdata"],
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            b"package policy\n"
        ))
        .as_str()
    );

    // The vault takes the printed policy as it is, and releases to the matching TEE only.
    let owner = env.owner_with_key("contoso", "k", &out["policy"]).await;
    let tee = EphemeralKey::generate().unwrap();
    let genuine = env.token(&tee.runtime_json(), GOOD_CONFIG, None).await;
    let jws = owner.release("k", &release_to(genuine)).await.unwrap();
    open_release(&jws, env.ca.cert(), tee.private_key()).unwrap();
    let other = env
        .token(&tee.runtime_json(), b"party = \"mallory\"\n", None)
        .await;
    let (status, reason) = refused(owner.release("k", &release_to(other)).await.unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("x-ms-sevsnpvm-hostdata"), "{reason}");
}

/// The host data Azure pins for a published ccePolicy (tests/deploy/vectors/README.md).
#[test]
fn aci_host_data_of_a_published_cce_policy() {
    let vectors =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/deploy/vectors");
    let b64 = std::fs::read_to_string(vectors.join("allow-all.ccepolicy.b64")).unwrap();
    let expected = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20";
    let dir = tempfile::tempdir().unwrap();
    let rego = dir.path().join("allow-all.rego");
    std::fs::write(
        &rego,
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim()).unwrap(),
    )
    .unwrap();
    let template = dir.path().join("template.json");
    std::fs::write(
        &template,
        json!({"resources": [{"type": "Microsoft.ContainerInstance/containerGroups",
            "name": "[parameters('name')]",
            "properties": {"confidentialComputeProperties": {"ccePolicy": b64.trim()}}}]})
        .to_string(),
    )
    .unwrap();
    let authority = "https://shared.weu.attest.azure.net";
    for source in [
        ["--cce-policy", b64.trim()],
        ["--rego", rego.to_str().unwrap()],
        ["--arm-template", template.to_str().unwrap()],
    ] {
        let (ok, out, err) = measure(&[
            "aci",
            source[0],
            source[1],
            "--authority",
            authority,
            "--json",
        ]);
        assert!(ok, "{err}");
        assert_eq!(
            out["values"]["x-ms-sevsnpvm-hostdata"], expected,
            "{source:?}"
        );
        let all_of = &out["policy"]["anyOf"][0]["allOf"];
        assert!(
            all_of
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["claim"] == "x-ms-compliance-status"
                    && c["equals"] == "azure-compliant-uvm"),
            "{out}"
        );
    }
}

fn ovmf_fixture(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ovmf")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// `measure snp` prints the launch digest AMD's sequence gives (the value `sev` and
/// `sev-snp-measure` publish for these inputs), and a policy a real vault installs, which a
/// simulated TEE does not meet.
#[tokio::test(flavor = "multi_thread")]
async fn an_snp_policy_pins_the_published_launch_digest() {
    let env = env().await;
    let ovmf = ovmf_fixture("ovmf_AmdSev_suffix.bin");
    let (ok, out, err) = measure(&[
        "snp",
        "--ovmf",
        &ovmf,
        "--kernel",
        "/dev/null",
        "--initrd",
        "/dev/null",
        "--append",
        "console=ttyS0 loglevel=7",
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC-v4",
        "--guest-features",
        "0x21",
        "--authority",
        &env.attest_url,
        "--json",
    ]);
    assert!(ok, "{err}");
    let digest = "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977";
    assert_eq!(out["values"]["x-ms-sevsnpvm-launchmeasurement"], digest);
    let all_of = out["policy"]["anyOf"][0]["allOf"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        all_of
            .iter()
            .any(|c| c["claim"] == "x-conclave-platform" && c["equals"] == "snp")
    );

    let owner = env.owner_with_key("contoso", "snp", &out["policy"]).await;
    let tee = EphemeralKey::generate().unwrap();
    let sim = env.token(&tee.runtime_json(), GOOD_CONFIG, None).await;
    let (status, reason) = refused(owner.release("snp", &release_to(sim)).await.unwrap_err());
    assert_eq!(status, 403);
    assert!(
        reason.contains("x-ms-sevsnpvm-launchmeasurement"),
        "{reason}"
    );

    // With Azure Attestation as the authority there is no platform claim to pin; the text form
    // names the digest and the policy.
    let out = std::process::Command::new(BIN)
        .args([
            "measure",
            "snp",
            "--ovmf",
            &ovmf,
            "--vcpus",
            "4",
            "--vcpu-type",
            "EPYC-v4",
        ])
        .args(["--kernel", "/dev/null", "--initrd", "/dev/null"])
        .args(["--authority", "https://shared.weu.attest.azure.net"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5"), "{text}");
    assert!(!text.contains("x-conclave-platform"), "{text}");

    // Without a kernel the digest names no workload: it says so, and --host-data pins one.
    let host_data = "ab".repeat(32);
    let out = std::process::Command::new(BIN)
        .args([
            "measure",
            "snp",
            "--ovmf",
            &ovmf,
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-v4",
        ])
        .args(["--host-data", &host_data, "--json"])
        .args(["--authority", "https://shared.weu.attest.azure.net"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the disk the guest boots"));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["values"]["x-ms-sevsnpvm-hostdata"], host_data.as_str());
    assert_eq!(
        json["values"]["x-ms-sevsnpvm-launchmeasurement"],
        "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"
    );
}

#[test]
fn measure_snp_refuses_inputs_it_cannot_measure() {
    let authority = "https://shared.weu.attest.azure.net";
    let amd_sev = ovmf_fixture("ovmf_AmdSev_suffix.bin");
    let standard = ovmf_fixture("ovmf_OvmfX64_suffix.bin");
    let base = |ovmf: &str| {
        vec![
            "snp".to_string(),
            "--ovmf".into(),
            ovmf.to_string(),
            "--vcpus".into(),
            "1".into(),
            "--authority".into(),
            authority.into(),
        ]
    };
    for (extra, needle) in [
        (vec!["--vcpu-type", "EPYC-v9"], "unknown vCPU type"),
        (
            vec!["--vcpu-type", "EPYC-v4", "--guest-features", "0x20"],
            "SNPActive",
        ),
        (
            vec!["--vcpu-type", "EPYC-v4", "--guest-features", "zz"],
            "not a hex number",
        ),
        (
            vec!["--vcpu-type", "EPYC-v4", "--append", "quiet"],
            "--kernel",
        ),
        (
            vec!["--vcpu-type", "EPYC-v4", "--ovmf-hash", "00"],
            "96 hex digits",
        ),
        (
            vec!["--vcpu-type", "EPYC-v4", "--host-data", "xyz"],
            "not 64 hex digits",
        ),
    ] {
        let mut args = base(&amd_sev);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = measure(&args);
        assert!(!ok && err.contains(needle), "{extra:?}: {err}");
    }
    let mut args = base(&standard);
    args.extend(["--vcpu-type", "EPYC-v4", "--kernel", "/dev/null"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = measure(&args);
    assert!(!ok && err.contains("AmdSevX64"), "{err}");
    let mut args = base("/nonexistent/OVMF.fd");
    args.extend(["--vcpu-type", "EPYC-v4"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = measure(&args);
    assert!(!ok && err.contains("/nonexistent/OVMF.fd"), "{err}");
}

#[test]
fn measure_refuses_what_is_not_a_policy_and_names_the_problem() {
    let authority = "https://example.attest.azure.net";
    for (args, needle) in [
        (
            vec!["aci", "--cce-policy", "%%%", "--authority", authority],
            "not base64",
        ),
        (
            vec!["aci", "--cce-policy", "aGVsbG8=", "--authority", authority],
            "no `package`",
        ),
        (
            vec![
                "aci",
                "--cce-policy",
                "cGFja2FnZSBw",
                "--authority",
                "http://x",
            ],
            "not an https:// URL",
        ),
        (
            vec!["cvm", "--vm-unique-id", "nope", "--authority", authority],
            "not a VM id",
        ),
        (
            vec![
                "cvm",
                "--vm-unique-id",
                "8c5a6e0d-4e2f-4f0e-9a32-1b2c3d4e5f60",
                "--authority",
                authority,
                "--pcr",
                "7=00",
            ],
            "carry no PCR values",
        ),
        (
            vec![
                "cvm",
                "--vm-unique-id",
                "8c5a6e0d-4e2f-4f0e-9a32-1b2c3d4e5f60",
                "--authority",
                "https://attest.example",
                "--pcr",
                "24=00",
            ],
            "0 to 23",
        ),
        (vec![], "say what to measure"),
    ] {
        let (ok, _, err) = measure(&args);
        assert!(!ok && err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn a_cvm_policy_pins_the_vm_its_isolation_and_its_measured_boot() {
    let pcr7 = "a".repeat(64);
    let (ok, out, err) = measure(&[
        "cvm",
        "--vm-unique-id",
        "8C5A6E0D-4E2F-4F0E-9A32-1B2C3D4E5F60",
        "--authority",
        "https://attest.example",
        "--pcr",
        &format!("7={pcr7}"),
        "--json",
    ]);
    assert!(ok, "{err}");
    let all_of = &out["policy"]["anyOf"][0]["allOf"];
    let has = |claim: &str, value: &Value| {
        all_of
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["claim"] == claim && &c["equals"] == value)
    };
    assert!(has(
        "x-ms-azurevm-vmid",
        &json!("8c5a6e0d-4e2f-4f0e-9a32-1b2c3d4e5f60")
    ));
    assert!(has(
        "x-ms-isolation-tee.x-ms-compliance-status",
        &json!("azure-compliant-cvm")
    ));
    assert!(has(
        "x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable",
        &json!(false)
    ));
    assert!(has("x-conclave-tpm.pcr07", &json!(pcr7)));
}
