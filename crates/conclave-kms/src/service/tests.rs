use super::*;
use axum::body::Body;

use axum::http::Request;
use tower::ServiceExt as _;

/// A wire type from the JSON a client sends.
fn de<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// A typed answer as the JSON a client receives.
fn js(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

pub(crate) fn vault_with(dir: &std::path::Path, deletion: DeletionPolicy) -> Arc<Vault> {
    let ca = conclave_net::LocalCa::load_or_create(&dir.join("ca")).unwrap();
    crate::setup::open(
        crate::setup::VaultOptions {
            state_dir: dir.join("vault"),
            vault_url: "https://127.0.0.1:1".into(),
            tls_names: vec!["127.0.0.1".into()],
            authorities: vec![],
            http: reqwest::Client::new(),
            hardware_only: false,
            master_key_file: None,
            deletion,
            postgres: None,
            admin_token_sha256: None,
        },
        crate::setup::Certificates::LocalCa(&ca),
    )
    .unwrap()
    .vault
}

/// A rotation policy makes a new version once the latest is due, carrying the key's
/// settings, with the policy's expiry; the old version stays (and stays releasable).
#[test]
fn a_rotation_policy_rotates_due_keys_and_keeps_old_versions() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault_with(dir.path(), DeletionPolicy::default());
    let owner = Principal {
        name: "contoso".into(),
        token_sha256: "x".into(),
        admin: false,
    };
    let first = v
        .create_key(&owner, "k", CreateKeyRequest::default())
        .unwrap();
    v.create_key(&owner, "idle", CreateKeyRequest::default())
        .unwrap();
    let stored = js(v
        .put_rotation_policy(
            &owner,
            "k",
            &de(json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}],
                    "attributes": {"expiryTime": "P90D"}})),
        )
        .unwrap());
    assert_eq!(
        stored["lifetimeActions"][0]["trigger"]["timeAfterCreate"],
        "P30D"
    );
    assert_eq!(js(v.get_rotation_policy(&owner, "k").unwrap()), stored);
    // Refused: a Notify action, and another principal.
    let bad = v.put_rotation_policy(
        &owner,
        "k",
        &de(json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Notify"}}]})),
    );
    assert_eq!(bad.unwrap_err().status, StatusCode::BAD_REQUEST);

    let t = now();
    assert!(v.rotate_due(t + 29 * 86_400).unwrap().is_empty());
    assert_eq!(v.rotate_due(t + 31 * 86_400).unwrap(), ["k"]);
    let versions = v.store.versions("k").unwrap();
    assert_eq!(versions.len(), 2);
    let (old, new) = (&versions[0], &versions[1]);
    assert_ne!(old.n, new.n);
    assert_eq!(new.owner, "contoso");
    assert_eq!(new.exp, Some(new.created + 90 * 86_400));
    assert_eq!(first.key.version(), old.version);
    // The new version is due 30 days after its own creation; manual rotation works too.
    assert!(v.rotate_due(new.created + 29 * 86_400).unwrap().is_empty());
    v.rotate_key(&owner, "idle").unwrap();
    assert_eq!(v.store.versions("idle").unwrap().len(), 2);
}

/// Soft delete as Azure Key Vault does it: a deleted key cannot be read or released, its
/// name is not reused while it is recoverable, recovery brings every version back, and with
/// purge protection it cannot be purged before its retention ends.
/// Rewrap moves a data key from an old version to the latest without it leaving the vault
/// in the clear; only the owner (or an admin) may, only AES keys, and never out from under
/// an immutable release policy.
#[test]
fn rewrap_moves_a_data_key_to_the_latest_version() {
    use aws_lc_rs::rsa::{
        OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
        PrivateDecryptingKey, PublicEncryptingKey,
    };
    let dir = tempfile::tempdir().unwrap();
    let v = vault_with(dir.path(), DeletionPolicy::default());
    let person = |name: &str, admin| Principal {
        name: name.into(),
        token_sha256: "x".into(),
        admin,
    };
    let (owner, other, admin) = (
        person("contoso", false),
        person("woodgrove", false),
        person("ops", true),
    );
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let wrap_to = |rec: &KeyRecord, plain: &[u8]| {
        let spki = conclave_pki::x509::rsa_spki_from_components(
            &b64.decode(&rec.n).unwrap(),
            &b64.decode(&rec.e).unwrap(),
        )
        .unwrap();
        let key =
            OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&spki).unwrap()).unwrap();
        let mut out = vec![0u8; key.ciphertext_size()];
        b64.encode(
            key.encrypt(&OAEP_SHA256_MGF1SHA256, plain, &mut out, None)
                .unwrap(),
        )
    };
    let unwrap_with = |rec: &KeyRecord, wrapped: &str| {
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&rec.sealed_private)
            .unwrap();
        let pkcs8 = v
            .master
            .open(format!("{}/{}", rec.name, rec.version).as_bytes(), &sealed)
            .unwrap();
        let key = OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(&pkcs8).unwrap())
            .unwrap();
        let mut out = vec![0u8; key.min_output_size()];
        key.decrypt(
            &OAEP_SHA256_MGF1SHA256,
            &b64.decode(wrapped).unwrap(),
            &mut out,
            None,
        )
        .unwrap()
        .to_vec()
    };
    v.create_key(&owner, "k", CreateKeyRequest::default())
        .unwrap();
    let v1 = v.store.key("k", None).unwrap().unwrap();
    let dek = [0x5au8; 32];
    let req: api::KeyOperationsParameters =
        de(json!({"alg": "RSA-OAEP-256", "value": wrap_to(&v1, &dek)}));
    v.rotate_key(&owner, "k").unwrap();
    let v2 = v.store.key("k", None).unwrap().unwrap();
    assert_ne!(v1.version, v2.version);

    let out = js(v.rewrap(&owner, "k", &v1.version, &req).unwrap());
    assert!(out["kid"].as_str().unwrap().ends_with(&v2.version));
    assert_eq!(unwrap_with(&v2, out["value"].as_str().unwrap()), dek);
    // An admin may too; another principal may not.
    assert!(v.rewrap(&admin, "k", &v1.version, &req).is_ok());
    let e = v.rewrap(&other, "k", &v1.version, &req).unwrap_err();
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    assert!(
        e.message.contains("only the key's owner or an admin"),
        "{}",
        e.message
    );
    // Not an AES key, not under that version, not the right algorithm.
    for (bad, why) in [
        (
            json!({"alg": "RSA-OAEP-256", "value": wrap_to(&v1, b"not an AES key")}),
            "AES key",
        ),
        (
            json!({"alg": "RSA-OAEP-256", "value": wrap_to(&v2, &dek)}),
            "does not unwrap",
        ),
        (
            json!({"alg": "RSA1_5", "value": wrap_to(&v1, &dek)}),
            "RSA-OAEP-256",
        ),
        (json!({"alg": "RSA-OAEP-256", "value": "%%"}), "base64url"),
    ] {
        let e = v.rewrap(&owner, "k", &v1.version, &de(bad)).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains(why), "{why}: {}", e.message);
        assert!(!e.message.contains(&hex::encode(dek)));
    }

    // An immutable release policy holds its data: a latest version with another policy
    // gets no rewrap.
    let policy = |measurement: &str| {
        ReleasePolicyBody {
        content_type: Some("application/json; charset=utf-8".into()),
        data: Some(b64.encode(
            json!({"version": "1.0.0", "anyOf": [{"authority": "https://attest.example", "allOf": [
                {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": measurement}]}]})
            .to_string(),
        )),
        immutable: Some(true),
    }
    };
    let create = |m: &str| CreateKeyRequest {
        attributes: Some(crate::api::KeyAttributes {
            exportable: Some(true),
            ..Default::default()
        }),
        release_policy: Some(policy(m)),
        ..Default::default()
    };
    v.create_key(&owner, "pinned", create("aa")).unwrap();
    let p1 = v.store.key("pinned", None).unwrap().unwrap();
    let req: api::KeyOperationsParameters =
        de(json!({"alg": "RSA-OAEP-256", "value": wrap_to(&p1, &dek)}));
    v.rotate_key(&owner, "pinned").unwrap();
    let same = js(v.rewrap(&owner, "pinned", &p1.version, &req).unwrap());
    let p2 = v.store.key("pinned", None).unwrap().unwrap();
    assert_eq!(unwrap_with(&p2, same["value"].as_str().unwrap()), dek);
    v.create_key(&owner, "pinned", create("bb")).unwrap();
    let e = v.rewrap(&owner, "pinned", &p1.version, &req).unwrap_err();
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    assert!(
        e.message.contains("immutable release policy"),
        "{}",
        e.message
    );
    // The same policy but mutable (it could be changed after the move): refused too.
    let mut mutable_copy = create("aa");
    mutable_copy.release_policy.as_mut().unwrap().immutable = Some(false);
    v.create_key(&owner, "pinned", mutable_copy).unwrap();
    let e = v.rewrap(&owner, "pinned", &p1.version, &req).unwrap_err();
    assert_eq!(e.status, StatusCode::FORBIDDEN, "{}", e.message);

    // Every outcome is in the audit log.
    let log = v.store.audit_entries(0, 1000).unwrap();
    let rewraps: Vec<&str> = log
        .iter()
        .filter(|e| e.event.action == "rewrap")
        .map(|e| e.event.outcome.as_str())
        .collect();
    assert_eq!(rewraps.iter().filter(|r| **r == "ok").count(), 3);
    assert!(rewraps.iter().filter(|r| **r == "denied").count() >= 2);
}

#[test]
fn deleted_keys_are_recoverable_and_purge_protection_holds_them() {
    for purge_protection in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let v = vault_with(
            dir.path(),
            DeletionPolicy {
                retention: Duration::from_secs(7 * 86_400),
                purge_protection,
            },
        );
        let owner = Principal {
            name: "contoso".into(),
            token_sha256: "x".into(),
            admin: false,
        };
        let other = Principal {
            name: "woodgrove".into(),
            ..owner.clone()
        };
        let created = v
            .create_key(&owner, "k", CreateKeyRequest::default())
            .unwrap();
        v.create_key(&owner, "k", CreateKeyRequest::default())
            .unwrap(); // a second version
        // Only the owner (or an admin) deletes.
        assert_eq!(
            v.delete_key(&other, "k").unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let deleted = js(v.delete_key(&owner, "k").unwrap());
        assert_eq!(deleted["recoveryId"], "https://127.0.0.1:1/deletedkeys/k");
        assert_eq!(
            deleted["scheduledPurgeDate"].as_u64().unwrap()
                - deleted["deletedDate"].as_u64().unwrap(),
            7 * 86_400
        );
        assert_eq!(
            deleted["attributes"]["recoveryLevel"],
            if purge_protection {
                "Recoverable"
            } else {
                "Recoverable+Purgeable"
            }
        );
        // Gone from the key namespace: no get, no release, no reuse of the name.
        assert_eq!(
            v.key_or_404("k", None).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        let version = created.key.version();
        assert_eq!(
            v.key_or_404("k", Some(version)).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            v.create_key(&owner, "k", CreateKeyRequest::default())
                .unwrap_err()
                .status,
            StatusCode::CONFLICT
        );
        // Recovered with both versions; deleted again, then purged (or not).
        v.recover_deleted(&owner, "k").unwrap();
        assert_eq!(v.store.versions("k").unwrap().len(), 2);
        let grant = Grant {
            principal: "woodgrove".into(),
            permissions: [Permission::Release].into(),
        };
        v.store
            .put_grant(
                "k",
                &grant,
                AuditEvent::new("contoso", "grant", Some("k"), "ok"),
            )
            .unwrap();
        v.put_rotation_policy(
            &owner,
            "k",
            &de(json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}]})),
        )
        .unwrap();
        v.delete_key(&owner, "k").unwrap();
        let purged = v.purge_deleted(&owner, "k");
        if purge_protection {
            let e = purged.unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN);
            assert!(e.message.contains("purge protection"), "{}", e.message);
            assert!(v.store.deleted_key("k").unwrap().is_some());
        } else {
            purged.unwrap();
            assert!(v.store.deleted_key("k").unwrap().is_none());
            // A key made later under the name, by anyone, inherits no grant or policy.
            v.create_key(&other, "k", CreateKeyRequest::default())
                .unwrap();
            assert!(v.store.grants("k").unwrap().is_empty());
            assert!(v.store.rotation_policy("k").unwrap().is_none());
            // Nor the old key's history: its new owner sees the log about "k" from its
            // own creation on (and what it did itself), not contoso's key before.
            v.create_key(&other, "k", CreateKeyRequest::default())
                .unwrap(); // a second version keeps the same start
            let seen = js(v.audit_for(&other, 0, 1000).unwrap());
            let seen = seen["value"].as_array().unwrap();
            let actions: Vec<(&str, &str)> = seen
                .iter()
                .map(|e| {
                    (
                        e["principal"].as_str().unwrap(),
                        e["action"].as_str().unwrap(),
                    )
                })
                .collect();
            assert!(
                actions.iter().all(|(p, _)| *p == "woodgrove"),
                "{actions:?}"
            );
            assert_eq!(
                actions.iter().filter(|(_, a)| *a == "create").count(),
                2,
                "{actions:?}"
            );
            // Contoso still sees what it did.
            let theirs = js(v.audit_for(&owner, 0, 1000).unwrap());
            assert!(
                theirs["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["action"] == "purge"),
                "{theirs}"
            );
        }
    }
}

/// A request that waits for the audit commit (a slow disk, a busy group commit) must not
/// hold an async worker: on a one-thread runtime, a health check is answered meanwhile.
#[test]
fn a_request_waiting_for_an_audit_commit_leaves_the_runtime_free() {
    let dir = tempfile::tempdir().unwrap();
    let ca = conclave_net::LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let opened = crate::setup::open(
        crate::setup::VaultOptions {
            state_dir: dir.path().join("vault"),
            vault_url: "https://127.0.0.1:1".into(),
            tls_names: vec!["127.0.0.1".into()],
            authorities: vec![],
            http: reqwest::Client::new(),
            hardware_only: false,
            master_key_file: None,
            deletion: Default::default(),
            postgres: None,
            admin_token_sha256: None,
        },
        crate::setup::Certificates::LocalCa(&ca),
    )
    .unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (let_go_tx, let_go_rx) = std::sync::mpsc::channel::<()>();
    let vault = opened.vault.clone();
    let holder = std::thread::spawn(move || {
        vault.store().with_audit_commits_held(|| {
            held_tx.send(()).unwrap();
            // Bounded, so that a runtime blocked by the request cannot hang the test.
            let _ = let_go_rx.recv_timeout(Duration::from_secs(20));
        })
    });
    held_rx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = router(opened.vault.clone());
        // A bad bearer token is audited, so this request waits for the commit lock.
        let denied = tokio::spawn(
            app.clone().oneshot(
                Request::get("/keys")
                    .header("authorization", "Bearer not-a-token")
                    .body(Body::empty())
                    .unwrap(),
            ),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let health = app
            .clone()
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        assert!(
            !denied.is_finished(),
            "the health check waited for another request's audit commit: the commit held the runtime's thread"
        );
        let_go_tx.send(()).unwrap();
        let denied = denied.await.unwrap().unwrap();
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    });
    holder.join().unwrap();
    let last = opened.vault.store().audit_entries(0, 100).unwrap();
    assert!(
        last.iter().any(|e| e.event.action == "authenticate"),
        "the refused request is in the audit log"
    );
}

/// A release refusal reaches the audit log once, through the HTTP route as well: the route's
/// own auditing of client errors skips what the release already audited.
#[test]
fn a_release_refusal_is_audited_once_through_the_route() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault_with(dir.path(), DeletionPolicy::default());
    let token = v.add_principal("admin", "contoso", false).unwrap();
    let owner = v
        .store()
        .principal_by_token_hash(&sha256_hex(token.as_bytes()))
        .unwrap()
        .unwrap();
    let policy = json!({"version": "1.0.0", "anyOf": [{"authority": "https://attest.example",
        "allOf": [{"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": "aa"}]}]});
    v.create_key(
        &owner,
        "k",
        CreateKeyRequest {
            attributes: Some(crate::api::KeyAttributes {
                exportable: Some(true),
                ..Default::default()
            }),
            release_policy: Some(ReleasePolicyBody {
                content_type: None,
                data: Some(conclave_protocol::b64::b64url(
                    policy.to_string().as_bytes(),
                )),
                immutable: None,
            }),
            ..Default::default()
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let head = |v: &Vault| v.store().audit_head().unwrap().unwrap().0;
    for (enc, status) in [
        ("A256GCM", StatusCode::BAD_REQUEST),
        ("RSA_AES_KEY_WRAP_256", StatusCode::FORBIDDEN),
    ] {
        let before = head(&v);
        let response = rt
            .block_on(
                router(v.clone()).oneshot(
                    Request::post("/keys/k/release")
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .body(Body::from(
                            json!({"target": "not-a-jwt", "enc": enc}).to_string(),
                        ))
                        .unwrap(),
                ),
            )
            .unwrap();
        assert_eq!(response.status(), status, "{enc}");
        assert_eq!(head(&v), before + 1, "{enc}: one audit entry");
        let entry = v.store().audit_entries(before + 1, 1).unwrap().remove(0);
        assert_eq!(
            (entry.event.action.as_str(), entry.event.outcome.as_str()),
            ("release", "denied")
        );
    }
}

/// A v1 backup still restores. Without a ledger it cannot say whether the key had a budget
/// (backups once left it out), so the restore's audit entry says so; with one, the ledger comes
/// back as it was. A v2 backup of a key without a budget restores without one, quietly; an
/// unknown format is refused.
#[test]
fn a_v1_backup_restores_and_says_when_its_budget_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault_with(
        dir.path(),
        DeletionPolicy {
            retention: Duration::from_secs(86_400),
            purge_protection: false,
        },
    );
    let owner = Principal {
        name: "contoso".into(),
        token_sha256: "x".into(),
        admin: false,
    };
    v.create_key(&owner, "k", CreateKeyRequest::default())
        .unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // A backup's contents, re-sealed under another format.
    let as_format = |value: &str, format: &str| {
        let blob: Value = serde_json::from_slice(&b64.decode(value).unwrap()).unwrap();
        assert_eq!(blob["format"], BACKUP_FORMAT);
        let contents = v
            .master
            .open(
                BACKUP_FORMAT.as_bytes(),
                &b64.decode(blob["sealed"].as_str().unwrap()).unwrap(),
            )
            .unwrap();
        api::KeyRestoreParameters {
            value: b64.encode(
                serde_json::to_vec(&json!({
                    "format": format,
                    "vault": blob["vault"],
                    "sealed": b64.encode(v.master.seal(format.as_bytes(), &contents)),
                }))
                .unwrap(),
            ),
        }
    };
    let gone = |v: &Vault| {
        v.delete_key(&owner, "k").unwrap();
        v.purge_deleted(&owner, "k").unwrap();
    };
    let flagged = |v: &Vault| {
        let log = v.store.audit_entries(0, 10_000).unwrap();
        let restored = log.iter().rfind(|e| e.event.action == "restore").unwrap();
        serde_json::to_string(&restored.event)
            .unwrap()
            .contains("may predate backups that carry one")
    };

    let unbudgeted = v.backup_key(&owner, "k").unwrap().value;
    gone(&v);
    v.restore_key(
        &owner,
        &api::KeyRestoreParameters {
            value: unbudgeted.clone(),
        },
    )
    .unwrap();
    assert_eq!(
        v.get_privacy_budget(&owner, "k").unwrap_err().status,
        StatusCode::NOT_FOUND
    );
    assert!(!flagged(&v));

    gone(&v);
    v.restore_key(&owner, &as_format(&unbudgeted, BACKUP_FORMAT_V1))
        .unwrap();
    assert_eq!(
        v.get_privacy_budget(&owner, "k").unwrap_err().status,
        StatusCode::NOT_FOUND
    );
    assert!(flagged(&v));

    // A v1 backup with a ledger (backups carried it before the format said so).
    v.put_privacy_budget(
        &owner,
        "k",
        &api::PrivacyBudgetParameters { total_epsilon: 3.0 },
    )
    .unwrap();
    let budgeted = v.backup_key(&owner, "k").unwrap().value;
    gone(&v);
    v.restore_key(&owner, &as_format(&budgeted, BACKUP_FORMAT_V1))
        .unwrap();
    assert_eq!(
        v.get_privacy_budget(&owner, "k").unwrap().total_epsilon,
        3.0
    );
    assert!(!flagged(&v));

    gone(&v);
    let e = v
        .restore_key(&owner, &as_format(&budgeted, "conclave-key-backup/v3"))
        .unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
}
