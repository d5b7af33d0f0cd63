//! Token-level attacks: what a workload presents to the vault.

use super::*;

pub async fn run(c: &Ctx, m: &mut Matrix) {
    let Ctx {
        env,
        admin,
        contoso,
        runtime,
        genuine,
        stranger,
        ..
    } = c;
    let v = admin;
    // No TEE (the snooper): a token it signs itself, with the claims a genuine workload carries.
    let snooper_key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let genuine_claims: Value =
        serde_json::from_slice(&b64url_decode(genuine.split('.').nth(1).unwrap()).unwrap())
            .unwrap();
    let signing_input = jwt(
        &json!({"alg": "ES256", "typ": "JWT", "kid": "snooper"}),
        &genuine_claims,
    );
    let sig = snooper_key
        .sign(
            &aws_lc_rs::rand::SystemRandom::new(),
            signing_input.as_bytes(),
        )
        .unwrap();
    let snooper = format!("{signing_input}.{}", b64url(sig.as_ref()));
    vault_refusal(
        m,
        "no TEE (snooper presents a self-signed token)",
        v,
        contoso
            .release("contoso-data", &release(snooper, None))
            .await,
        403,
        "attestation token rejected",
        "release",
    )
    .await;

    let tampered = env
        .token(runtime, b"party = \"woodgrove\"\nevil = true\n", None)
        .await;
    vault_refusal(
        m,
        "wrong launch measurement",
        v,
        contoso
            .release("contoso-data", &release(tampered, None))
            .await,
        403,
        "x-ms-sevsnpvm-launchmeasurement",
        "release",
    )
    .await;

    let mut other_host = identity(GOOD_CONFIG);
    other_host.host_data = conclave_sim_host::host_data(b"party = \"mallory\"\n");
    let other_host_token = attest(
        &env.http,
        &env.attest_url,
        &AttestSevSnpVmRequest::new(&evidence(&env.sim, &other_host, runtime), runtime, None),
    )
    .await
    .unwrap();
    vault_refusal(
        m,
        "wrong host_data",
        v,
        contoso
            .release("contoso-data", &release(other_host_token, None))
            .await,
        403,
        "x-ms-sevsnpvm-hostdata",
        "release",
    )
    .await;

    let with_nonce = env.token(runtime, GOOD_CONFIG, Some("nonce-1")).await;
    vault_refusal(
        m,
        "replayed attestation (token for another nonce)",
        v,
        contoso
            .release("contoso-data", &release(with_nonce, Some("nonce-2")))
            .await,
        403,
        "nonce",
        "release",
    )
    .await;

    // Tokens signed with the attestation service's own key, but outside their validity.
    let ring = conclave_attest::keys::KeyRing::open(&env.dir.join("attest/token-keys")).unwrap();
    let active = ring.active();
    let sign_genuine = |claims: &Value| {
        let mut header = serde_json::Map::new();
        header.insert("kid".into(), active.kid.clone().into());
        conclave_attest::jws::sign_rs256(header, claims, &active.key).unwrap()
    };
    let mut expired = genuine_claims.clone();
    expired["iat"] = 1_000_000_000u64.into();
    expired["nbf"] = 1_000_000_000u64.into();
    expired["exp"] = 1_000_000_600u64.into();
    vault_refusal(
        m,
        "expired token",
        v,
        contoso
            .release("contoso-data", &release(sign_genuine(&expired), None))
            .await,
        403,
        "expired",
        "release",
    )
    .await;
    let mut future = genuine_claims.clone();
    future["nbf"] = 4_000_000_000u64.into();
    future["exp"] = 4_000_000_600u64.into();
    vault_refusal(
        m,
        "not-yet-valid token",
        v,
        contoso
            .release("contoso-data", &release(sign_genuine(&future), None))
            .await,
        403,
        "not valid yet",
        "release",
    )
    .await;

    // A real attestation service, but not one this vault trusts (it trusts the stranger's ARK).
    let (stranger_url, _stop_stranger) =
        attestation_service(&env.dir.join("stranger-attest"), &env.ca, stranger).await;
    let foreign = attest(
        &env.http,
        &stranger_url,
        &AttestSevSnpVmRequest::new(
            &evidence(stranger, &identity(GOOD_CONFIG), runtime),
            runtime,
            None,
        ),
    )
    .await
    .unwrap();
    vault_refusal(
        m,
        "token from an untrusted issuer",
        v,
        contoso
            .release("contoso-data", &release(foreign, None))
            .await,
        403,
        "not an attestation authority this vault trusts",
        "release",
    )
    .await;

    // Signed by a key the issuer never published.
    let rogue = conclave_kms::crypto::generate_rsa(2048).unwrap();
    let rogue_key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&rogue.pkcs8).unwrap();
    let mut header = serde_json::Map::new();
    header.insert("kid".into(), "not-a-published-kid".into());
    let unknown_kid =
        conclave_attest::jws::sign_rs256(header, &genuine_claims, &rogue_key).unwrap();
    vault_refusal(
        m,
        "token signed with an unknown kid",
        v,
        contoso
            .release("contoso-data", &release(unknown_kid, None))
            .await,
        403,
        "attestation token rejected",
        "release",
    )
    .await;

    let none = format!(
        "{}.",
        jwt(&json!({"alg": "none", "typ": "JWT"}), &genuine_claims)
    );
    vault_refusal(
        m,
        "alg: none",
        v,
        contoso.release("contoso-data", &release(none, None)).await,
        403,
        "attestation token rejected",
        "release",
    )
    .await;

    // HS256 keyed with the issuer's public RSA key (the classic algorithm confusion).
    let jwks: Value = env
        .http
        .get(format!("{}/certs", env.attest_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published = &jwks["keys"][0];
    let spki = conclave_pki::x509::rsa_spki_from_components(
        &b64url_decode(published["n"].as_str().unwrap()).unwrap(),
        &b64url_decode(published["e"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let hs_input = jwt(
        &json!({"alg": "HS256", "typ": "JWT", "kid": published["kid"]}),
        &genuine_claims,
    );
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &spki),
        hs_input.as_bytes(),
    );
    vault_refusal(
        m,
        "HS256 signed with the RSA public key",
        v,
        contoso
            .release(
                "contoso-data",
                &release(format!("{hs_input}.{}", b64url(mac.as_ref())), None),
            )
            .await,
        403,
        "attestation token rejected",
        "release",
    )
    .await;

    // The genuine kid, but an attacker's key and certificate in x5c and a JWKS URL in jku.
    let evil_ca = LocalCa::load_or_create(&env.dir.join("evil-ca")).unwrap();
    let evil = evil_ca
        .signing_cert(&env.dir.join("evil"), "token-signing")
        .unwrap();
    let evil_key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(
        &conclave_net::read_pkcs8(&evil.key_pk8).unwrap(),
    )
    .unwrap();
    let evil_chain =
        conclave_pki::Cert::parse_pem_bundle("evil", &std::fs::read(&evil.chain_pem).unwrap())
            .unwrap();
    let mut header = serde_json::Map::new();
    header.insert("kid".into(), published["kid"].clone());
    header.insert(
        "x5c".into(),
        evil_chain
            .iter()
            .map(|c| {
                Value::String(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    &c.der,
                ))
            })
            .collect::<Vec<_>>()
            .into(),
    );
    header.insert("jku".into(), "https://127.0.0.1:9/certs".into());
    let forged = conclave_attest::jws::sign_rs256(header, &genuine_claims, &evil_key).unwrap();
    vault_refusal(
        m,
        "forged x5c / JWKS URL",
        v,
        contoso
            .release("contoso-data", &release(forged, None))
            .await,
        403,
        "attestation token rejected",
        "release",
    )
    .await;

    // A vault that accepts hardware TEEs only.
    let (hw_url, _stop_hw) = start_vault(
        &env.dir.join("hw-vault"),
        &env.ca,
        &env.http,
        vec![env.attest_url.clone()],
        true,
    )
    .await;
    let hw_admin = VaultClient::new(
        env.http.clone(),
        &hw_url,
        &std::fs::read_to_string(env.dir.join("hw-vault/admin.token")).unwrap(),
    );
    let hw_owner = VaultClient::new(
        env.http.clone(),
        &hw_url,
        &hw_admin.add_principal("contoso", false).await.unwrap(),
    );
    hw_owner
        .create_key("contoso-data", &exportable(&strict_policy(env), false))
        .await
        .unwrap();
    vault_refusal(
        m,
        "sim evidence against a hardware-only vault",
        &hw_admin,
        hw_owner
            .release("contoso-data", &release(genuine.clone(), None))
            .await,
        403,
        "hardware TEEs only",
        "release",
    )
    .await;
}
