//! An audit log partners can verify: a key owner fetches the entries about its keys with
//! inclusion proofs against the vault's signed checkpoint, and checks them — and that the log
//! only grew since an earlier bundle — with the vault's public verifier key and nothing secret.

use base64::Engine as _;

mod cli;
use cli::{call, fails, free_port, ok, run, start_vault, vault_env};

#[test]
fn a_partner_verifies_the_audit_entries_about_its_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let state = dir.join("vault");
    let vault = start_vault(&state, port, &[]);
    let ca = state.join("ca/ca.pem").to_str().unwrap().to_string();
    let env = |token: &str| vault_env(port, &ca, token);
    let admin = env(&format!("@{}", state.join("admin.token").display()));
    let contoso = env(ok(call(&["kms", "principal", "contoso"], &admin)).trim());
    let fabrikam = env(ok(call(&["kms", "principal", "fabrikam"], &admin)).trim());
    ok(call(&["key", "create", "contoso-data"], &contoso));
    ok(call(&["key", "create", "fabrikam-data"], &fabrikam));
    ok(call(
        &[
            "key",
            "grant",
            "contoso-data",
            "--to",
            "fabrikam",
            "--permissions",
            "release",
        ],
        &contoso,
    ));

    // The verifier key is the same whoever asks; keep it out of band.
    let vkey = ok(call(&["audit", "key"], &contoso)).trim().to_string();
    assert_eq!(ok(call(&["audit", "key"], &fabrikam)).trim(), vkey);
    assert!(
        vkey.starts_with(&format!("127.0.0.1:{port}/audit+")),
        "{vkey}"
    );

    let bundle = |name: &str, since: Option<&str>| {
        let out = dir.join(name);
        let mut args = vec!["audit", "proofs", "--out", out.to_str().unwrap()];
        if let Some(s) = since {
            args.extend(["--since", s]);
        }
        ok(call(&args, &contoso));
        out.to_str().unwrap().to_string()
    };
    let verify = |b: &str, key: &str, earlier: Option<&str>| {
        let mut args = vec!["audit", "verify", "--checkpoint", b, "--vault-key", key];
        if let Some(e) = earlier {
            args.extend(["--earlier", e]);
        }
        run(&args, &[])
    };
    let first = bundle("first.json", None);
    let shown = ok(verify(&first, &vkey, None));
    let entries: Vec<serde_json::Value> = shown
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Contoso's own actions and those about its key, never Fabrikam's key.
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "create" && e["key"] == "contoso-data")
    );
    assert!(entries.iter().any(|e| e["action"] == "grant"));
    assert!(entries.iter().all(|e| e["key"] != "fabrikam-data"));

    // More happens; a later bundle proves the log only grew since the first.
    ok(call(
        &["key", "revoke", "contoso-data", "--from", "fabrikam"],
        &contoso,
    ));
    let second = bundle("second.json", Some(&first));
    ok(verify(&second, &vkey, Some(&first)));
    // The earlier bundle is not an extension of the later one.
    fails(verify(&first, &vkey, Some(&second)), "the log shrank");

    // An edited entry (a revoke turned into nothing, a grant's outcome changed) is caught.
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&second).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let leaf = doc["entries"][0]["leaf"].as_str().unwrap().to_string();
    let text = String::from_utf8(b64.decode(&leaf).unwrap()).unwrap();
    let edited = text.replacen("contoso", "c0ntoso", 1);
    assert_ne!(edited, text);
    doc["entries"][0]["leaf"] = b64.encode(edited).into();
    let tampered = dir.join("tampered.json");
    std::fs::write(&tampered, doc.to_string()).unwrap();
    fails(
        verify(tampered.to_str().unwrap(), &vkey, None),
        "is not in the tree the checkpoint signs",
    );

    // Another vault's key does not vouch for this vault's checkpoint.
    let other_state = dir.join("other");
    let other_port = free_port();
    let _other = start_vault(&other_state, other_port, &[]);
    let other_admin = vec![
        ("CONCLAVE_VAULT", format!("https://127.0.0.1:{other_port}")),
        (
            "CONCLAVE_CA",
            other_state.join("ca/ca.pem").to_str().unwrap().to_string(),
        ),
        (
            "CONCLAVE_VAULT_TOKEN",
            format!("@{}", other_state.join("admin.token").display()),
        ),
    ];
    let other_key = ok(call(&["audit", "key"], &other_admin)).trim().to_string();
    assert_ne!(other_key, vkey);
    fails(
        verify(&second, &other_key, None),
        "carries no valid signature",
    );

    // After a restart the vault signs with the same key, and its log extends what was seen.
    drop(vault);
    let _vault = start_vault(&state, port, &[]);
    assert_eq!(ok(call(&["audit", "key"], &contoso)).trim(), vkey);
    let third = bundle("third.json", Some(&second));
    ok(verify(&third, &vkey, Some(&second)));
}
