//! A key owner rotates a vault key and moves a dataset to the new version with the CLI: the
//! vault re-wraps the dataset's data key (never handing it out), only the file's tail changes,
//! and nobody but the owner (or an admin) may ask.

mod cli;
use cli::{call, fails, free_port, ok, run, start_vault, vault_env};

#[test]
fn a_dataset_follows_its_key_to_a_new_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let state = dir.join("vault");
    let _vault = start_vault(&state, port, &[]);
    let ca = state.join("ca/ca.pem");
    let admin = format!("@{}", state.join("admin.token").display());
    let env = |token: &str| vault_env(port, ca.to_str().unwrap(), token);
    let admin_env = env(&admin);
    let owner = ok(call(&["kms", "principal", "contoso"], &admin_env))
        .trim()
        .to_string();
    let other = ok(call(&["kms", "principal", "woodgrove"], &admin_env))
        .trim()
        .to_string();
    let owner_env = env(&owner);
    let other_env = env(&other);

    let created: serde_json::Value =
        serde_json::from_str(&ok(call(&["key", "create", "contoso-data"], &owner_env))).unwrap();
    let v1 = created["key"]["kid"].as_str().unwrap().to_string();
    let csv = dir.join("records.csv");
    ok(run(
        &[
            "data",
            "generate",
            "--party",
            "contoso",
            "--records",
            "300",
            "--out",
            csv.to_str().unwrap(),
        ],
        &[],
    ));
    let file = dir.join("contoso.parquet");
    let file_s = file.to_str().unwrap();
    ok(call(
        &[
            "data",
            "encrypt",
            "--key",
            &v1,
            "-i",
            csv.to_str().unwrap(),
            "-o",
            file_s,
        ],
        &owner_env,
    ));
    let before = std::fs::read(&file).unwrap();

    let rotated: serde_json::Value =
        serde_json::from_str(&ok(call(&["key", "rotate", "contoso-data"], &owner_env))).unwrap();
    let v2 = rotated["key"]["kid"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);

    // Another principal may not move the owner's data.
    fails(
        call(&["data", "rewrap", file_s], &other_env),
        "only the key's owner or an admin",
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);

    let summary: serde_json::Value =
        serde_json::from_str(&ok(call(&["data", "rewrap", file_s], &owner_env))).unwrap();
    assert_eq!(
        (summary["from"].as_str(), summary["to"].as_str()),
        (Some(v1.as_str()), Some(v2.as_str()))
    );
    let kept = summary["bytes_unchanged"].as_u64().unwrap() as usize;
    let after = std::fs::read(&file).unwrap();
    assert_eq!(
        after[..kept],
        before[..kept],
        "the data pages are not rewritten"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&ok(run(&["data", "inspect", file_s], &[]))).unwrap();
    assert_eq!(shown["key_material"]["masterKeyID"], v2.as_str());

    // The vault unwraps the new wrapping with the new version: re-wrapping again (to the same,
    // latest, version) succeeds, which it would not if the key were not under it.
    let again: serde_json::Value =
        serde_json::from_str(&ok(call(&["data", "rewrap", file_s], &owner_env))).unwrap();
    assert_eq!(
        (again["from"].as_str(), again["to"].as_str()),
        (Some(v2.as_str()), Some(v2.as_str()))
    );

    // A file that names v1 but whose key is not under it is refused, and left as it was.
    let shown_v1 = std::fs::read(&file).unwrap();
    fails(
        call(&["data", "rewrap", file_s, "--from", &v1], &owner_env),
        "does not unwrap with version",
    );
    assert_eq!(std::fs::read(&file).unwrap(), shown_v1);
}
