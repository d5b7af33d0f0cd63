//! The vault's security domain with the CLI: split the master key among three custodians (any
//! two recover it), lose the master key file, recover it from two custodians' shares, and the
//! vault opens its store and audit chain again. One share is not enough.

use std::path::Path;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use base64::Engine as _;

mod cli;
use cli::{fails, free_port, ok, run, start_vault};

/// A custodian's key pair: public key PEM, private key PKCS#8 DER.
fn custodian(dir: &Path, name: &str) -> (String, String) {
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki = key.public_key().as_der().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        b64.as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let public = dir.join(format!("{name}.pub.pem"));
    let private = dir.join(format!("{name}.pk8"));
    std::fs::write(&public, pem).unwrap();
    let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der = key.as_der().unwrap();
    std::fs::write(&private, pkcs8.as_ref()).unwrap();
    (
        public.to_str().unwrap().to_string(),
        private.to_str().unwrap().to_string(),
    )
}

#[test]
fn a_lost_master_key_is_recovered_from_a_quorum_of_custodians() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let state = dir.join("vault");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let vault = format!("https://127.0.0.1:{port}");
    let ca = state.join("ca/ca.pem");
    let ca_s = ca.to_str().unwrap().to_string();
    let admin = format!("@{}", state.join("admin.token").display());
    let as_admin = [
        ("CONCLAVE_VAULT", vault.as_str()),
        ("CONCLAVE_CA", ca_s.as_str()),
        ("CONCLAVE_VAULT_TOKEN", admin.as_str()),
    ];

    let running = start_vault(&state, port, &[]);
    let owner = ok(run(&["kms", "principal", "contoso"], &as_admin))
        .trim()
        .to_string();
    let as_owner = [
        as_admin[0],
        as_admin[1],
        ("CONCLAVE_VAULT_TOKEN", owner.as_str()),
    ];
    let created: serde_json::Value =
        serde_json::from_str(&ok(run(&["key", "create", "contoso-data"], &as_owner))).unwrap();
    let backup = dir.join("contoso-data.backup");
    ok(run(
        &[
            "key",
            "backup",
            "contoso-data",
            "--out",
            backup.to_str().unwrap(),
        ],
        &as_owner,
    ));
    drop(running);

    let custodians: Vec<(String, String)> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| custodian(dir, n))
        .collect();
    let domain = dir.join("security-domain.json");
    let state_s = state.to_str().unwrap();
    let mut export = vec!["kms", "security-domain", "export", "--state-dir", state_s];
    for (public, _) in &custodians {
        export.extend(["--custodian", public.as_str()]);
    }
    export.extend(["--quorum", "2", "--out", domain.to_str().unwrap()]);
    ok(run(&export, &[]));
    let text = std::fs::read_to_string(&domain).unwrap();
    let original = std::fs::read(state.join("master.key")).unwrap();
    assert!(
        !text.contains(&hex::encode(&original)),
        "the domain holds the key in the clear"
    );

    // The disk with the master key dies.
    std::fs::remove_file(state.join("master.key")).unwrap();

    let share = |i: usize| {
        let out = dir.join(format!("share-{i}.json"));
        ok(run(
            &[
                "kms",
                "security-domain",
                "decrypt-share",
                "--security-domain",
                domain.to_str().unwrap(),
                "--key",
                &custodians[i].1,
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        ));
        out.to_str().unwrap().to_string()
    };
    let (alice, carol) = (share(0), share(2));
    let recovered = state.join("master.key");
    let recovered_s = recovered.to_str().unwrap();

    // One custodian alone recovers nothing.
    fails(
        run(
            &[
                "kms",
                "security-domain",
                "recover",
                "--share",
                &alice,
                "--out",
                recovered_s,
            ],
            &[],
        ),
        "2 are needed",
    );
    assert!(!recovered.exists());

    ok(run(
        &[
            "kms",
            "security-domain",
            "recover",
            "--share",
            &alice,
            "--share",
            &carol,
            "--out",
            recovered_s,
        ],
        &[],
    ));
    assert_eq!(std::fs::read(&recovered).unwrap(), original);
    // It is never written over an existing file.
    fails(
        run(
            &[
                "kms",
                "security-domain",
                "recover",
                "--share",
                &alice,
                "--share",
                &carol,
                "--out",
                recovered_s,
            ],
            &[],
        ),
        "exists",
    );

    // The vault opens its store with the recovered key: the audit chain verifies, and the key
    // is served as before.
    ok(run(&["audit", "verify", "--state-dir", state_s], &[]));
    let _running = start_vault(&state, port, &[]);
    let got: serde_json::Value =
        serde_json::from_str(&ok(run(&["key", "get", "contoso-data"], &as_owner))).unwrap();
    assert_eq!(got["key"]["kid"], created["key"]["kid"]);

    // Restoring a key whose name is taken: refused (409, as Azure).
    fails(
        run(&["key", "restore", backup.to_str().unwrap()], &as_owner),
        "exists in this vault",
    );

    // A second vault of the same security domain (the recovered master key) restores the key
    // with its versions; a vault of another domain cannot open the backup.
    for (name, same_domain) in [("vault-b", true), ("vault-c", false)] {
        let other_state = dir.join(name);
        let other_port = free_port();
        let extra: Vec<&str> = if same_domain {
            vec!["--master-key-file", recovered_s]
        } else {
            vec![]
        };
        let _other = start_vault(&other_state, other_port, &extra);
        let other_url = format!("https://127.0.0.1:{other_port}");
        let other_ca = other_state.join("ca/ca.pem");
        let other_admin = format!("@{}", other_state.join("admin.token").display());
        let env = [
            ("CONCLAVE_VAULT", other_url.as_str()),
            ("CONCLAVE_CA", other_ca.to_str().unwrap()),
            ("CONCLAVE_VAULT_TOKEN", other_admin.as_str()),
        ];
        let contoso = ok(run(&["kms", "principal", "contoso"], &env))
            .trim()
            .to_string();
        let as_contoso = [env[0], env[1], ("CONCLAVE_VAULT_TOKEN", contoso.as_str())];
        let out = run(&["key", "restore", backup.to_str().unwrap()], &as_contoso);
        if same_domain {
            let restored: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
            assert_eq!(restored["key"]["n"], created["key"]["n"]);
            let version = |kid: &serde_json::Value| {
                kid.as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string()
            };
            assert_eq!(
                version(&restored["key"]["kid"]),
                version(&created["key"]["kid"])
            );
        } else {
            fails(out, "another security domain");
        }
    }

    // Someone who is not a custodian cannot decrypt a share.
    let (_, stranger) = custodian(dir, "mallory");
    fails(
        run(
            &[
                "kms",
                "security-domain",
                "decrypt-share",
                "--security-domain",
                domain.to_str().unwrap(),
                "--key",
                &stranger,
                "--out",
                dir.join("x.json").to_str().unwrap(),
            ],
            &[],
        ),
        "not one of the security domain's custodians",
    );
}
