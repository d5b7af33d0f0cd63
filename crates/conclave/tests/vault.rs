//! The vault over real TLS on loopback, with tokens from the real attestation service (also over
//! TLS, trusting the same local CA), evidence from the simulated platform.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn create_get_release_and_use_the_key_in_the_tee() {
    let env = env().await;
    let contoso_token = env
        .client(&env.admin)
        .add_principal("contoso", false)
        .await
        .unwrap();
    let contoso = env.client(&contoso_token);
    let created = contoso
        .create_key(
            "contoso-data",
            &exportable(&env.policy(&good_measurement()), false),
        )
        .await
        .unwrap();
    let kid = created.key.kid.clone();
    assert!(kid.starts_with(&format!("{}/keys/contoso-data/", env.vault_url)));
    // The answer as sent, not as the typed client keeps it.
    let raw: Value = env
        .http
        .get(format!(
            "{}/keys/contoso-data?api-version=7.4",
            env.vault_url
        ))
        .bearer_auth(&contoso_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["key"]["kid"], kid.as_str(), "{raw}");
    for private in ["d", "p", "q", "dp", "dq", "qi", "key_hsm"] {
        assert!(
            raw["key"].get(private).is_none(),
            "no private part is ever returned: {raw}"
        );
    }

    let got = contoso.get_key("contoso-data").await.unwrap();
    assert_eq!(got.key.kid, kid);
    assert_eq!(got.attributes.exportable, Some(true));

    // The TEE: ephemeral key, attest, release, open.
    let tee = EphemeralKey::generate().unwrap();
    let token = env
        .token(&tee.runtime_json(), GOOD_CONFIG, Some("nonce-1"))
        .await;
    let jws = contoso
        .release(
            "contoso-data",
            &ReleaseRequest {
                target: token,
                nonce: Some("nonce-1".into()),
                enc: None,
            },
        )
        .await
        .unwrap();
    let released = open_release(&jws, env.ca.cert(), tee.private_key()).unwrap();
    assert_eq!(released.kid, kid);

    // The released key works: encrypt with the public JWK from GET, decrypt with it.
    let n = b64url_decode(&got.key.n).unwrap();
    let e = b64url_decode(&got.key.e).unwrap();
    let spki = conclave_pki::x509::rsa_spki_from_components(&n, &e).unwrap();
    let public =
        OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&spki).unwrap()).unwrap();
    let mut ct = vec![0u8; public.ciphertext_size()];
    let ct = public
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            b"data key for contoso",
            &mut ct,
            None,
        )
        .unwrap()
        .to_vec();
    let private = OaepPrivateDecryptingKey::new(released.key).unwrap();
    let mut pt = vec![0u8; private.min_output_size()];
    assert_eq!(
        private
            .decrypt(&OAEP_SHA256_MGF1SHA256, &ct, &mut pt, None)
            .unwrap(),
        b"data key for contoso"
    );

    // The JWS cannot be opened by anyone else's TEE key.
    let other = EphemeralKey::generate().unwrap();
    assert!(open_release(&jws, env.ca.cert(), other.private_key()).is_err());

    // The same release re-signed with the vault's own signing key and chain, but with a
    // critical header extension the TEE does not understand (RFC 7515 §4.1.11): not opened.
    let header: Value =
        serde_json::from_slice(&b64url_decode(jws.split('.').next().unwrap()).unwrap()).unwrap();
    let payload: Value =
        serde_json::from_slice(&b64url_decode(jws.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let signing_key = aws_lc_rs::rsa::KeyPair::from_pkcs8(
        &conclave_net::read_pkcs8(&env.dir.join("vault/tls/release-signing.pk8")).unwrap(),
    )
    .unwrap();
    let mut critical_header = header.as_object().unwrap().clone();
    critical_header.insert("crit".into(), json!(["urn:example:must-understand"]));
    critical_header.insert("urn:example:must-understand".into(), true.into());
    let critical =
        conclave_attest::jws::sign_rs256(critical_header, &payload, &signing_key).unwrap();
    // Control: re-signed without crit, it opens.
    let resigned = conclave_attest::jws::sign_rs256(
        header.as_object().unwrap().clone(),
        &payload,
        &signing_key,
    )
    .unwrap();
    open_release(&resigned, env.ca.cert(), tee.private_key()).unwrap();
    let err = open_release(&critical, env.ca.cert(), tee.private_key())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("marks \"urn:example:must-understand\" as critical"),
        "{err}"
    );

    let tail = env.audit_tail().await;
    assert_eq!(tail["action"], "release");
    assert_eq!(tail["outcome"], "granted");
    assert_eq!(tail["measurement"], good_measurement());
    assert_eq!(tail["platform"], "sim");
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_and_revocation_control_cross_party_release() {
    let env = env().await;
    let contoso = env.principal("contoso").await;
    let woodgrove = env.principal("woodgrove").await;
    contoso
        .create_key(
            "contoso-data",
            &exportable(&env.policy(&good_measurement()), false),
        )
        .await
        .unwrap();
    let tee = EphemeralKey::generate().unwrap();
    let release = || async {
        let token = env.token(&tee.runtime_json(), GOOD_CONFIG, None).await;
        woodgrove
            .release(
                "contoso-data",
                &ReleaseRequest {
                    target: token,
                    ..Default::default()
                },
            )
            .await
    };

    let (status, reason) = refused(release().await.unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("no release grant"), "{reason}");
    assert_eq!(env.audit_tail().await["outcome"], "denied");
    let (status, _) = refused(woodgrove.get_key("contoso-data").await.unwrap_err());
    assert_eq!(status, 403);

    contoso
        .grant("contoso-data", "woodgrove", &[Permission::Release])
        .await
        .unwrap();
    let jws = release().await.unwrap();
    open_release(&jws, env.ca.cert(), tee.private_key()).unwrap();
    woodgrove.get_key("contoso-data").await.unwrap();

    // Only the owner manages grants.
    let (status, _) = refused(
        woodgrove
            .grant("contoso-data", "mallory", &[Permission::Release])
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);

    contoso.revoke("contoso-data", "woodgrove").await.unwrap();
    let (status, reason) = refused(release().await.unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("no release grant"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn release_denials_name_the_reason_and_are_audited() {
    let env = env().await;
    let contoso = env.principal("contoso").await;
    contoso
        .create_key("k", &exportable(&env.policy(&good_measurement()), false))
        .await
        .unwrap();
    let tee = EphemeralKey::generate().unwrap();

    async fn expect(env: &Env, c: &VaultClient, target: String, nonce: Option<&str>, needle: &str) {
        let req = ReleaseRequest {
            target,
            nonce: nonce.map(String::from),
            enc: None,
        };
        let (status, reason) = refused(c.release("k", &req).await.unwrap_err());
        assert_eq!(status, 403, "{reason}");
        assert!(
            reason.contains(needle),
            "{reason:?} does not mention {needle:?}"
        );
        let tail = env.audit_tail().await;
        assert_eq!(
            (tail["action"].as_str(), tail["outcome"].as_str()),
            (Some("release"), Some("denied"))
        );
        assert_eq!(tail["reason"].as_str(), Some(reason.as_str()));
    }

    // Wrong measurement (a tampered workload): the policy names the claim, expected and found.
    let tampered = env
        .token(
            &tee.runtime_json(),
            b"party = \"woodgrove\"\nevil = true\n",
            None,
        )
        .await;
    expect(
        &env,
        &contoso,
        tampered,
        None,
        "x-ms-sevsnpvm-launchmeasurement",
    )
    .await;

    // No TEE key in the runtime data.
    let keyless = env.token(br#"{"keys":[]}"#, GOOD_CONFIG, None).await;
    expect(&env, &contoso, keyless, None, "no TEE encryption key").await;

    // Nonce mismatch.
    let t = env.token(&tee.runtime_json(), GOOD_CONFIG, Some("a")).await;
    expect(&env, &contoso, t, Some("b"), "nonce").await;

    // A snooper without a TEE sends something that is not a token from a trusted authority.
    expect(&env, &contoso, "not-a-token".into(), None, "not a JWT").await;

    // alg none and HS256 tokens claiming the trusted issuer.
    let claims = json!({"iss": env.attest_url, "exp": 4_000_000_000u64, "iat": 1, "x-ms-runtime": {"keys": []}});
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    );
    expect(&env, &contoso, none, None, "attestation token rejected").await;
    let hs = format!(
        "{}.{}.c2ln",
        b64url(br#"{"alg":"HS256","typ":"JWT","kid":"x"}"#),
        b64url(claims.to_string().as_bytes())
    );
    expect(&env, &contoso, hs, None, "attestation token rejected").await;

    // Expired token from the trusted issuer (signed with its own key).
    let ring = conclave_attest::keys::KeyRing::open(&env.dir.join("attest/token-keys")).unwrap();
    let k = ring.active();
    let mut header = serde_json::Map::new();
    header.insert("kid".into(), k.kid.clone().into());
    let old = json!({"iss": env.attest_url, "iat": 1_000_000_000u64, "nbf": 1_000_000_000u64, "exp": 1_000_000_600u64});
    let expired = conclave_attest::jws::sign_rs256(header, &old, &k.key).unwrap();
    expect(&env, &contoso, expired, None, "expired").await;

    // A genuine token's claims, validly signed by the trusted issuer, but with a critical header
    // extension the vault does not understand (RFC 7515 §4.1.11): refused, not released.
    let genuine = env.token(&tee.runtime_json(), GOOD_CONFIG, None).await;
    let claims: Value =
        serde_json::from_slice(&b64url_decode(genuine.split('.').nth(1).unwrap()).unwrap())
            .unwrap();
    let mut header = serde_json::Map::new();
    header.insert("kid".into(), k.kid.clone().into());
    header.insert("typ".into(), "JWT".into());
    header.insert("crit".into(), json!(["urn:example:must-understand"]));
    header.insert("urn:example:must-understand".into(), true.into());
    let critical = conclave_attest::jws::sign_rs256(header, &claims, &k.key).unwrap();
    expect(
        &env,
        &contoso,
        critical,
        None,
        "marks \"urn:example:must-understand\" as critical",
    )
    .await;

    // A token from an attestation service this vault does not trust.
    let stranger_sim = SimHost::open(&env.dir.join("stranger-sim")).unwrap();
    let (stranger_url, _stop) =
        attestation_service(&env.dir.join("stranger"), &env.ca, &stranger_sim).await;
    let identity = LaunchIdentity {
        measurement: measure(b"workload", &[], GOOD_CONFIG),
        host_data: conclave_sim_host::host_data(GOOD_CONFIG),
        policy: conclave_snp::report::GuestPolicy(0x3_0000),
        report_id: [4; 32],
    };
    let evidence = Evidence {
        platform: Platform::Sim,
        report: stranger_sim
            .platform()
            .sign_report(&identity, report_data_for(&tee.runtime_json()))
            .unwrap(),
        cert_chain_pem: stranger_sim.platform().cert_chain_pem(),
        hcl_runtime_claims: None,
        tpm_quote: None,
    };
    let foreign = attest(
        &env.http,
        &stranger_url,
        &AttestSevSnpVmRequest::new(&evidence, &tee.runtime_json(), None),
    )
    .await
    .unwrap();
    expect(
        &env,
        &contoso,
        foreign,
        None,
        "not an attestation authority this vault trusts",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hardware_only_vault_refuses_simulated_tokens() {
    let env = env().await;
    let (url, _stop) = start_vault(
        &env.dir.join("hw-vault"),
        &env.ca,
        &env.http,
        vec![env.attest_url.clone()],
        true,
    )
    .await;
    let admin = std::fs::read_to_string(env.dir.join("hw-vault/admin.token")).unwrap();
    let token = VaultClient::new(env.http.clone(), &url, &admin)
        .add_principal("contoso", false)
        .await
        .unwrap();
    let contoso = VaultClient::new(env.http.clone(), &url, &token);
    contoso
        .create_key("k", &exportable(&env.policy(&good_measurement()), false))
        .await
        .unwrap();
    let tee = EphemeralKey::generate().unwrap();
    let t = env.token(&tee.runtime_json(), GOOD_CONFIG, None).await;
    let (status, reason) = refused(
        contoso
            .release(
                "k",
                &ReleaseRequest {
                    target: t,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert!(reason.contains("hardware TEEs only"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_changes_are_owner_only_and_immutable_policies_stay() {
    let env = env().await;
    let contoso = env.principal("contoso").await;
    let mallory = env.principal("mallory").await;
    let created = contoso
        .create_key("k", &exportable(&env.policy(&good_measurement()), false))
        .await
        .unwrap();
    let version = created.key.version().to_string();
    let lax = env.policy("00");
    let update = UpdateKeyRequest {
        release_policy: Some(ReleasePolicyBody {
            content_type: None,
            data: Some(b64url(lax.to_string().as_bytes())),
            immutable: None,
        }),
        ..Default::default()
    };
    let (status, reason) = refused(
        mallory
            .update_key("k", &version, &update)
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert!(reason.contains("only the key's owner"), "{reason}");
    contoso.update_key("k", &version, &update).await.unwrap();
    assert_eq!(env.audit_tail().await["action"], "policy-change");

    let fixed = contoso
        .create_key("fixed", &exportable(&env.policy(&good_measurement()), true))
        .await
        .unwrap();
    let v2 = fixed.key.version().to_string();
    let (status, reason) = refused(contoso.update_key("fixed", &v2, &update).await.unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("immutable"), "{reason}");
    assert_eq!(env.audit_tail().await["outcome"], "denied");

    // A malformed policy is refused at the door.
    let bad = UpdateKeyRequest {
        release_policy: Some(ReleasePolicyBody {
            content_type: None,
            data: Some(b64url(b"{\"version\":\"9\"}")),
            immutable: None,
        }),
        ..Default::default()
    };
    let (status, reason) = refused(contoso.update_key("k", &version, &bad).await.unwrap_err());
    assert_eq!(status, 400);
    assert!(reason.contains("unsupported version"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_and_malformed_requests() {
    let env = env().await;
    let url = format!("{}/keys/x/create?api-version=7.4", env.vault_url);
    let resp = env
        .http
        .post(&url)
        .json(&json!({"kty": "RSA"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Bearer authorization=\"")
            && challenge.contains(&format!("resource=\"{}\"", env.vault_url)),
        "{challenge}"
    );

    let resp = env
        .http
        .post(&url)
        .bearer_auth("cvt_wrong")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(env.audit_tail().await["action"], "authenticate");

    let token = env
        .client(&env.admin)
        .add_principal("contoso", false)
        .await
        .unwrap();
    let post = |path: &str, body: Vec<u8>| {
        env.http
            .post(format!("{}{path}?api-version=7.4", env.vault_url))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/keys/x/create",
            b"{not json".to_vec(),
            400,
            "malformed request body",
        ),
        (
            "/keys/x/create",
            br#"{"kty":"EC"}"#.to_vec(),
            400,
            "not supported",
        ),
        (
            "/keys/x/create",
            br#"{"key_size":1024}"#.to_vec(),
            400,
            "unsupported key size",
        ),
        (
            "/keys/x/create",
            br#"{"attributes":{"exportable":true}}"#.to_vec(),
            400,
            "needs a release policy",
        ),
        (
            "/keys/..%2F..%2Fetc/create",
            b"{}".to_vec(),
            400,
            "key names",
        ),
        ("/keys/x/create", vec![b' '; 100 * 1024], 413, "limit"),
        (
            "/keys/x/create",
            format!("{}1{}", "[".repeat(100), "]".repeat(100)).into_bytes(),
            400,
            "nests deeper",
        ),
    ];
    let audit_len = || async { env.client(&env.admin).audit(0).await.unwrap().value.len() };
    for (path, body, status, needle) in cases {
        let before = audit_len().await;
        let resp = post(path, body).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{path}: {v}"
        );
        // Rejected requests are audited like any other refusal, once.
        assert_eq!(audit_len().await, before + 1, "{path} {status} {needle}");
        let tail = env.audit_tail().await;
        assert_eq!(tail["outcome"], "denied", "{path}");
        assert_eq!(tail["principal"], "contoso", "{path}");
    }
    let (status, _) = refused(env.client(&token).get_key("missing").await.unwrap_err());
    assert_eq!(status, 404);
}

/// Soft delete and recovery read through the typed client: the DeletedKeyBundle, the deleted
/// keys' listing, the recovered KeyBundle, and the rotation policy's default document.
#[tokio::test(flavor = "multi_thread")]
async fn soft_delete_list_and_recover_through_the_typed_client() {
    let env = env().await;
    let contoso = env.principal("contoso").await;
    let fabrikam = env.principal("fabrikam").await;
    let created = contoso
        .create_key("k", &CreateKeyRequest::default())
        .await
        .unwrap();
    let policy = contoso.get_rotation_policy("k").await.unwrap();
    assert_eq!(
        policy.id.as_deref(),
        Some(format!("{}/keys/k/rotationpolicy", env.vault_url).as_str())
    );
    assert_eq!(policy.lifetime_actions, Some(Vec::new()));

    let deleted = contoso.delete_key("k").await.unwrap();
    assert_eq!(
        deleted.recovery_id,
        format!("{}/deletedkeys/k", env.vault_url)
    );
    assert_eq!(deleted.bundle.key.kid, created.key.kid);
    assert!(deleted.scheduled_purge_date > deleted.deleted_date);
    assert_eq!(
        deleted.bundle.attributes.recovery_level.as_deref(),
        Some("Recoverable+Purgeable")
    );
    let (status, _) = refused(contoso.get_key("k").await.unwrap_err());
    assert_eq!(status, 404);
    // Listed for its owner, not for another principal.
    let listed = contoso.deleted_keys().await.unwrap();
    assert_eq!(listed.value.len(), 1);
    assert_eq!(listed.value[0].recovery_id, deleted.recovery_id);
    assert!(fabrikam.deleted_keys().await.unwrap().value.is_empty());
    let (status, _) = refused(fabrikam.recover_deleted("k").await.unwrap_err());
    assert_eq!(status, 403);

    let recovered = contoso.recover_deleted("k").await.unwrap();
    assert_eq!(recovered.key.kid, created.key.kid);
    assert_eq!(contoso.get_key("k").await.unwrap().key.n, created.key.n);
    assert!(contoso.deleted_keys().await.unwrap().value.is_empty());
}
