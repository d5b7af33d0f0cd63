//! A vault whose attestation authority is shaped like Microsoft Azure Attestation: OpenID
//! metadata and a JWKS whose keys are published only as certificates (`kid`, `kty`, `x5c`; no
//! `n`/`e`), over TLS, from a test server; tokens with MAA's SevSnpVm claims and a release policy
//! written as Microsoft's SKR tooling writes it (every value a string).

mod common;

use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use base64::Engine as _;
use common::*;

/// An MAA-shaped authority on loopback: `GET /.well-known/openid-configuration` and
/// `GET /certs` (x5c-only keys), and the RSA key it signs tokens with.
struct MaaAuthority {
    url: String,
    kid: String,
    key: RsaKeyPair,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn maa_authority(dir: &Path, ca: &LocalCa) -> MaaAuthority {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let tls_cert = ca.server_cert(dir, "maa-tls", &["127.0.0.1"]).unwrap();
    let signing = ca.signing_cert(dir, "maa-signing").unwrap();
    let key = RsaKeyPair::from_pkcs8(&std::fs::read(&signing.key_pk8).unwrap()).unwrap();
    let leaf = conclave_pki::Cert::parse_pem_bundle(
        "maa signing chain",
        &std::fs::read(&signing.chain_pem).unwrap(),
    )
    .unwrap()
    .remove(0);
    // MAA's kids are base64 SHA-256 thumbprints of the certificate.
    let kid = base64::engine::general_purpose::STANDARD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &leaf.der,
    ));
    let jwks = json!({"keys": [{
        "kid": kid,
        "kty": "RSA",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&leaf.der)],
    }]});
    let metadata = json!({
        "issuer": url,
        "jwks_uri": format!("{url}/certs"),
        "response_types_supported": ["token"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["x-ms-attestation-type", "x-ms-runtime"],
    });
    let router = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(metadata) }),
        )
        .route(
            "/certs",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    let tls = conclave_net::server_config(&tls_cert.chain_pem, &tls_cert.key_pk8).unwrap();
    let stop = spawn_tls(router, listener, tls).await;
    MaaAuthority {
        url,
        kid,
        key,
        _stop: stop,
    }
}

impl MaaAuthority {
    /// A token with the claims MAA issues for SevSnpVm evidence (as the SKR sidecar gets them
    /// in a confidential container), its TEE key marked `key_use: "enc"`.
    fn token(&self, tee: &EphemeralKey, extra_header: &[(&str, Value)]) -> String {
        let mut jwk = tee.public_jwk();
        jwk.key_ops = None;
        jwk.key_use = Some("enc".into());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({
            "iss": self.url,
            "iat": now, "nbf": now, "exp": now + 28_800,
            "jti": "5ca5b1b1e8f3a7a1d0c54e8c7cc4c1b83d0f5f9a5a7a0bd1c7d0ad1c6c2e9f00",
            "x-ms-ver": "1.0",
            "x-ms-attestation-type": "sevsnpvm",
            "x-ms-compliance-status": "azure-compliant-uvm",
            "x-ms-policy-hash": "9NY0VnTQ-IiBriBplVUpFbczcDaEBUwsiFYAzHu_gco",
            "x-ms-sevsnpvm-is-debuggable": false,
            "x-ms-sevsnpvm-vmpl": 0,
            "x-ms-sevsnpvm-guestsvn": 2,
            "x-ms-sevsnpvm-launchmeasurement": "3b8b8f4e4c2b7a4f1d9f0c8d0b3a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7",
            "x-ms-runtime": {"keys": [jwk]},
        });
        let mut header = serde_json::Map::new();
        header.insert("jku".into(), format!("{}/certs", self.url).into());
        header.insert("kid".into(), self.kid.clone().into());
        header.insert("typ".into(), "JWT".into());
        for (name, value) in extra_header {
            header.insert(name.to_string(), value.clone());
        }
        conclave_attest::jws::sign_rs256(header, &claims, &self.key).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_trusting_an_maa_shaped_authority_releases_to_its_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = LocalCa::load_or_create(&dir.join("ca")).unwrap();
    let http = conclave_net::client(Some(&ca.cert_path())).unwrap();
    let maa = maa_authority(&dir.join("maa"), &ca).await;
    // A hardware-only vault: an MAA token is hardware evidence (it has no sim platform claim).
    let (vault_url, _stop) =
        start_vault(&dir.join("vault"), &ca, &http, vec![maa.url.clone()], true).await;
    let admin = std::fs::read_to_string(dir.join("vault/admin.token")).unwrap();
    let contoso_token = VaultClient::new(http.clone(), &vault_url, &admin)
        .add_principal("contoso", false)
        .await
        .unwrap();
    let contoso = VaultClient::new(http.clone(), &vault_url, &contoso_token);

    // The policy as Microsoft's SKR tooling writes it: every value a string.
    let policy = json!({"version": "1.0.0", "anyOf": [{"authority": maa.url, "allOf": [
        {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
        {"claim": "x-ms-compliance-status", "equals": "azure-compliant-uvm"},
        {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "false"},
        {"claim": "x-ms-sevsnpvm-vmpl", "equals": "0"},
        {"claim": "x-ms-sevsnpvm-guestsvn", "greaterOrEquals": "2"}
    ]}]});
    let created = contoso
        .create_key("contoso-data", &exportable(&policy, false))
        .await
        .unwrap();
    let kid = created.key.kid.clone();

    let tee = EphemeralKey::generate().unwrap();
    let release = |target: String| {
        let contoso = &contoso;
        async move {
            contoso
                .release(
                    "contoso-data",
                    &ReleaseRequest {
                        target,
                        nonce: None,
                        enc: None,
                    },
                )
                .await
        }
    };
    let jws = release(maa.token(&tee, &[])).await.unwrap();
    let released = open_release(&jws, ca.cert(), tee.private_key()).unwrap();
    assert_eq!(released.kid, kid);

    // The same token with a critical header extension the vault does not understand.
    let critical = maa.token(
        &tee,
        &[
            ("crit", json!(["urn:example:must-understand"])),
            ("urn:example:must-understand", json!(true)),
        ],
    );
    let (status, reason) = refused(release(critical).await.unwrap_err());
    assert_eq!(status, 403);
    assert!(
        reason.contains("marks \"urn:example:must-understand\" as critical"),
        "{reason}"
    );

    // A token in the authority's name and kid, signed by another key.
    let impostor = MaaAuthority {
        key: RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
        url: maa.url.clone(),
        kid: maa.kid.clone(),
        _stop: tokio::sync::oneshot::channel().0,
    };
    let (status, reason) = refused(release(impostor.token(&tee, &[])).await.unwrap_err());
    assert_eq!(status, 403);
    assert!(reason.contains("attestation token rejected"), "{reason}");

    // The audit log names the authority's tokens' outcomes.
    let log = VaultClient::new(http.clone(), &vault_url, &admin)
        .audit(0)
        .await
        .unwrap();
    let outcomes: Vec<&str> = log
        .value
        .iter()
        .filter(|e| e.event.action == "release")
        .map(|e| e.event.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["granted", "denied", "denied"]);
}

/// `conclave attest token verify` against the same authority: over TLS with `--ca`, through
/// OpenID discovery (`--issuer`), and at a past instant with `--at`.
#[tokio::test(flavor = "multi_thread")]
async fn token_verify_reaches_a_tls_authority_and_checks_at_a_past_instant() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = LocalCa::load_or_create(&dir.join("ca")).unwrap();
    let maa = maa_authority(&dir.join("maa"), &ca).await;
    let tee = EphemeralKey::generate().unwrap();
    let token = maa.token(&tee, &[]);
    let bin = env!("CARGO_BIN_EXE_conclave");
    let verify = |args: Vec<String>| {
        let out = std::process::Command::new(bin)
            .args(["attest", "token", "verify"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ca_pem = ca.cert_path().to_str().unwrap().to_string();

    // Without --ca, the local CA is not trusted and the error says TLS.
    let (ok, _, stderr) = verify(vec![token.clone(), "--issuer".into(), maa.url.clone()]);
    assert!(!ok);
    assert!(
        stderr.to_lowercase().contains("certificate") || stderr.contains("TLS"),
        "{stderr}"
    );

    // With --ca, through discovery and through the JWKS URL.
    for source in [
        vec!["--issuer".to_string(), maa.url.clone()],
        vec!["--jwks".to_string(), format!("{}/certs", maa.url)],
    ] {
        let mut args = vec![token.clone(), "--ca".into(), ca_pem.clone()];
        args.extend(source);
        let (ok, stdout, stderr) = verify(args);
        assert!(ok, "{stderr}");
        let claims: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(claims["x-ms-attestation-type"], "sevsnpvm");
    }

    // --at: the token (valid from now for 8 hours) was not yet valid a day ago, is valid in an
    // hour, and has expired in two days.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (at, expect_ok, needle) in [
        (now - 86_400, false, "not valid yet"),
        (now + 3_600, true, "checked at"),
        (now + 2 * 86_400, false, "expired"),
    ] {
        let (ok, _, stderr) = verify(vec![
            token.clone(),
            "--ca".into(),
            ca_pem.clone(),
            "--issuer".into(),
            maa.url.clone(),
            "--at".into(),
            at.to_string(),
        ]);
        assert_eq!(ok, expect_ok, "at {at}: {stderr}");
        assert!(stderr.contains(needle), "at {at}: {stderr}");
    }
}
