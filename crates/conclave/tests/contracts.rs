//! Analysis contracts from the command line, and their binding to key release in a real vault:
//! owners make approval keys, approve a contract's digest, and install the release policy
//! `contract approve` prints; the vault then releases only to a TEE attesting that contract
//! with at least the owner's k, and audits every refusal with its reason.

mod common;
use common::*;

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_conclave");

fn conclave(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The starter contract with its placeholders filled in.
fn write_contract(dir: &Path, sql_suffix: &str) -> (PathBuf, PathBuf, PathBuf) {
    let contract = dir.join(format!("contract{}.toml", sql_suffix.len()));
    // The keys and their public halves, from keygen (below).
    let (ck, fk) = (dir.join("contoso.key"), dir.join("fabrikam.key"));
    let public = |key: &Path| std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let starter = dir.join("starter.toml");
    if !starter.exists() {
        ok(conclave(&[
            "contract",
            "new",
            "--out",
            starter.to_str().unwrap(),
        ]));
    }
    let text = std::fs::read_to_string(&starter)
        .unwrap()
        .replace("<contoso's approval public key (PEM)>", &public(&ck))
        .replace("<fabrikam's approval public key (PEM)>", &public(&fk))
        .replace(
            "<woodgrove's receiver public key (PEM)>",
            &conclave_contract::approval::generate_key().unwrap().1,
        )
        .replace("<container>", "demo")
        .replace("<contoso's vault>", "contoso-vault.example:8443")
        .replace("<fabrikam's vault>", "fabrikam-vault.example:8443")
        .replace("LIMIT 10", &format!("LIMIT 10{sql_suffix}"));
    std::fs::write(&contract, text).unwrap();
    (contract, ck, fk)
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(format!("{name}.key"));
    let public = ok(conclave(&[
        "contract",
        "keygen",
        "--out",
        key.to_str().unwrap(),
    ]));
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    std::fs::write(key.with_extension("pub"), public).unwrap();
    key
}

/// `conclave contract approve CONTRACT --party P --key K --out OUT [extra…]`.
fn approve(
    contract: &str,
    party: &str,
    key: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "contract",
        "approve",
        contract,
        "--party",
        party,
        "--key",
        key.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    conclave(&args)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_approves_a_contract_and_its_vault_releases_only_for_it() {
    let env = env().await;
    let dir = env.dir.join("contracts");
    std::fs::create_dir_all(&dir).unwrap();
    keygen(&dir, "contoso");
    keygen(&dir, "fabrikam");
    let (contract, ck, fk) = write_contract(&dir, "");
    let c = contract.to_str().unwrap();

    // show and digest agree, and the digest is the canonical JSON's SHA-256.
    let digest = ok(conclave(&["contract", "digest", c])).trim().to_string();
    let shown = ok(conclave(&["contract", "show", c]));
    assert!(
        shown.contains(&digest) && shown.contains("contoso") && shown.contains("withheld"),
        "{shown}"
    );
    let canonical = ok(conclave(&["contract", "show", c, "--canonical"]));
    assert_eq!(
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.trim_end().as_bytes()
        )),
        digest
    );

    // Contoso's key pins the workload (here: the sim TEE's launch config, as `measure aci`
    // pins a container group's policy) and the contract.
    let config = dir.join("workload.toml");
    std::fs::write(&config, GOOD_CONFIG).unwrap();
    let base = dir.join("base.json");
    std::fs::write(
        &base,
        ok(conclave(&[
            "measure",
            "aci",
            "--rego",
            config.to_str().unwrap(),
            "--authority",
            &env.attest_url,
            "--json",
        ])),
    )
    .unwrap();
    let approval = dir.join("contoso.approval.jws");
    let policy = ok(approve(
        c,
        "contoso",
        &ck,
        &approval,
        &["--policy", base.to_str().unwrap()],
    ));
    let policy: Value = serde_json::from_str(&policy).unwrap();
    let owner = env.owner_with_key("contoso", "contoso-data", &policy).await;

    // verify: Contoso approved, Fabrikam not yet (exit 1), then both (exit 0).
    let out = conclave(&["contract", "verify", c, approval.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("approved      contoso") && text.contains("not approved  fabrikam"),
        "{text}"
    );
    let fabrikam = dir.join("fabrikam.approval.jws");
    ok(approve(c, "fabrikam", &fk, &fabrikam, &[]));
    let status: Value = serde_json::from_str(&ok(conclave(&[
        "contract",
        "verify",
        c,
        approval.to_str().unwrap(),
        fabrikam.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(status["complete"], true, "{status}");
    // A key that is not the party's in the contract cannot approve for it.
    let out = approve(c, "contoso", &fk, &dir.join("x.jws"), &[]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("not \"contoso\"'s approval key")
    );

    // Releases: the TEE attests the contract it runs in its runtime data.
    let tee = EphemeralKey::generate().unwrap();
    let token_for = |digest: String, k: u64| {
        let mut runtime: Value = serde_json::from_slice(&tee.runtime_json()).unwrap();
        runtime["contract"] = json!({"name": "partner-demographics", "digest": digest, "k": k});
        serde_json::to_vec(&runtime).unwrap()
    };
    let genuine = env
        .token(&token_for(digest.clone(), 10), GOOD_CONFIG, None)
        .await;
    let jws = owner
        .release("contoso-data", &release_to(genuine))
        .await
        .unwrap();
    open_release(&jws, env.ca.cert(), tee.private_key()).unwrap();

    // One character of SQL changed: another digest, no key.
    let (changed, ..) = write_contract(&dir, " ");
    let changed_digest = ok(conclave(&["contract", "digest", changed.to_str().unwrap()]))
        .trim()
        .to_string();
    assert_ne!(changed_digest, digest);
    let other = env
        .token(&token_for(changed_digest, 10), GOOD_CONFIG, None)
        .await;
    let (status, reason) = refused(
        owner
            .release("contoso-data", &release_to(other))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert!(reason.contains("x-ms-runtime.contract.digest"), "{reason}");
    // The approval does not carry over to the changed contract.
    let out = conclave(&[
        "contract",
        "verify",
        changed.to_str().unwrap(),
        approval.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("invalid"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The same contract with a k below the owner's floor: no key.
    let low_k = env
        .token(&token_for(digest.clone(), 2), GOOD_CONFIG, None)
        .await;
    let (_, reason) = refused(
        owner
            .release("contoso-data", &release_to(low_k))
            .await
            .unwrap_err(),
    );
    assert!(reason.contains("x-ms-runtime.contract.k"), "{reason}");

    // Both refusals are in the vault's audit log with their reasons.
    let audit = env.client(&env.admin).audit(0).await.unwrap();
    let denied: Vec<&str> = audit
        .value
        .iter()
        .filter(|e| e.event.action == "release" && e.event.outcome == "denied")
        .filter_map(|e| e.event.reason.as_deref())
        .collect();
    assert!(
        denied
            .iter()
            .any(|r| r.contains("x-ms-runtime.contract.digest")),
        "{denied:?}"
    );
    assert!(
        denied.iter().any(|r| r.contains("x-ms-runtime.contract.k")),
        "{denied:?}"
    );

    // An owner whose floor is above the contract's k is told so instead of getting a policy
    // no workload can meet.
    let out = approve(
        c,
        "contoso",
        &ck,
        &dir.join("y.jws"),
        &["--policy", base.to_str().unwrap(), "--min-k", "50"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("below your floor of 50"));
    assert!(
        !dir.join("y.jws").exists(),
        "an approval was left behind for terms the owner refused"
    );
    let out = approve(
        c,
        "contoso",
        &ck,
        &dir.join("y.jws"),
        &["--policy", base.to_str().unwrap(), "--max-epsilon", "NaN"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("finite number above 0"));
    assert!(!dir.join("y.jws").exists());
}

#[test]
fn contract_commands_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let starter = tmp.path().join("c.toml");
    ok(conclave(&[
        "contract",
        "new",
        "--out",
        starter.to_str().unwrap(),
    ]));
    // The starter is a template: it says what to fill in before it parses.
    let out = conclave(&["contract", "show", starter.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("approval_key") && err.contains("c.toml"),
        "{err}"
    );
    let out = conclave(&["contract", "new", "--out", starter.to_str().unwrap()]);
    assert!(!out.status.success());
    let key = tmp.path().join("k.key");
    ok(conclave(&[
        "contract",
        "keygen",
        "--out",
        key.to_str().unwrap(),
    ]));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = conclave(&["contract", "keygen", "--out", key.to_str().unwrap()]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("never overwritten")
    );
}
