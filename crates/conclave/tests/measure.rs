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
    let owner = env.principal("contoso").await;
    owner
        .create_key("k", &exportable(&out["policy"], true))
        .await
        .unwrap();
    let tee = EphemeralKey::generate().unwrap();
    let genuine = env.token(&tee.runtime_json(), GOOD_CONFIG, None).await;
    let req = |target: String| ReleaseRequest {
        target,
        nonce: None,
        enc: None,
    };
    let jws = owner.release("k", &req(genuine)).await.unwrap();
    open_release(&jws, env.ca.cert(), tee.private_key()).unwrap();
    let other = env
        .token(&tee.runtime_json(), b"party = \"mallory\"\n", None)
        .await;
    let (status, reason) = refused(owner.release("k", &req(other)).await.unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("x-ms-sevsnpvm-hostdata"), "{reason}");
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
