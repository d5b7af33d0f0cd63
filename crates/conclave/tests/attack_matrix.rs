//! The attack matrix of SECURITY.md, as one suite against the real services on loopback: the
//! attestation service and the vault over TLS, evidence from the sim platform, datasets in a
//! local object store. Every attack must be refused with its specific reason, and the refusal
//! must be on record: in the vault's audit log (HMAC-chained) for vault requests, in the
//! attestation service's log for evidence it refuses. Everything the services log during the
//! run is captured and scanned at the end for key material, bearer tokens and plaintext.
//!
//! Slow-loris clients are in `conclave-net/tests/slow_clients.rs`; fuzzing is `conclave-fuzz`.

mod common;
use common::*;

use std::io::Write as _;
use std::sync::Mutex;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use conclave_data::dataset::{self, KeyUnwrapper, PrivateKeyUnwrapper, VaultPublicKey};
use conclave_data::generator::{Generator, Party, records_from_batch, schema};
use conclave_data::store::locate;
use futures::StreamExt as _;

/// Everything the services log, at every level, for the scan at the end.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// What the matrix saw, printed as a table at the end.
#[derive(Default)]
struct Matrix {
    rows: Vec<(String, String, String)>,
}

impl Matrix {
    fn row(&mut self, attack: &str, stopped_by: &str, reason: &str) {
        self.rows.push((
            attack.into(),
            stopped_by.into(),
            reason.chars().take(110).collect(),
        ));
    }
}

/// A vault refusal: status, reason naming `needle`, and the audit log's last entry records this
/// refusal (action, outcome `denied`, the same reason).
async fn vault_refusal<T: std::fmt::Debug>(
    m: &mut Matrix,
    attack: &str,
    admin: &VaultClient, // reads the vault's audit log
    result: Result<T, ClientError>,
    status: u16,
    needle: &str,
    action: &str,
) {
    let (got_status, reason) = match result {
        Err(ClientError::Refused {
            status, message, ..
        }) => (status, message),
        other => panic!("{attack}: expected a refusal, got {other:?}"),
    };
    assert_eq!(got_status, status, "{attack}: {reason}");
    assert!(
        reason.contains(needle),
        "{attack}: {reason:?} does not name {needle:?}"
    );
    let log = admin.audit(0).await.unwrap();
    let tail = log["value"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(tail["action"], action, "{attack}: audit entry {tail}");
    assert_eq!(tail["outcome"], "denied", "{attack}: audit entry {tail}");
    assert_eq!(
        tail["reason"].as_str(),
        Some(reason.as_str()),
        "{attack}: audit entry {tail}"
    );
    m.row(attack, "vault (audited)", &reason);
}

/// An attestation refusal: the service answers 4xx naming `needle`, and logs the refusal.
async fn attest_refusal(
    m: &mut Matrix,
    attack: &str,
    env: &Env,
    logs: &Captured,
    url: &str,
    req: &AttestSevSnpVmRequest,
    needle: &str,
) {
    let err = attest(&env.http, url, req)
        .await
        .expect_err(&format!("{attack}: the attestation service issued a token"));
    let reason = format!("{err:#}");
    assert!(
        reason.contains(needle),
        "{attack}: {reason:?} does not name {needle:?}"
    );
    let logged = logs.text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("attestation denied") && l.contains(needle)),
        "{attack}: the refusal is not in the attestation service's log"
    );
    m.row(attack, "attestation service (logged)", &reason);
}

fn identity(config: &[u8]) -> LaunchIdentity {
    LaunchIdentity {
        measurement: measure(b"workload", &[], config),
        host_data: conclave_sim_host::host_data(config),
        policy: conclave_snp::report::GuestPolicy(0x3_0000),
        report_id: [3; 32],
    }
}

fn evidence(sim: &SimHost, id: &LaunchIdentity, report_data_of: &[u8]) -> Evidence {
    Evidence {
        platform: Platform::Sim,
        report: sim
            .platform()
            .sign_report(id, report_data_for(report_data_of))
            .unwrap(),
        cert_chain_pem: sim.platform().cert_chain_pem(),
        hcl_runtime_claims: None,
        tpm_quote: None,
    }
}

fn release(target: String, nonce: Option<&str>) -> ReleaseRequest {
    ReleaseRequest {
        target,
        nonce: nonce.map(String::from),
        enc: None,
    }
}

/// A policy pinning the good measurement and the good host data.
fn strict_policy(env: &Env) -> Value {
    json!({"version": "1.0.0", "anyOf": [{"authority": env.attest_url, "allOf": [
        {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
        {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
        {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": good_measurement()},
        {"claim": "x-ms-sevsnpvm-hostdata", "equals": hex::encode(conclave_sim_host::host_data(GOOD_CONFIG))},
    ]}]})
}

fn jwt(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

async fn read_all(
    url: &str,
    unwrapper: Arc<dyn KeyUnwrapper>,
) -> Result<usize, conclave_data::dataset::DataError> {
    let loc = locate(url).unwrap();
    let mut stream = dataset::read_encrypted(&loc, unwrapper, None, 4096).await?;
    let mut n = 0;
    while let Some(b) = stream.next().await {
        n += b?.num_rows();
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_attack_is_refused_with_its_reason_and_on_record() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let mut m = Matrix::default();

    let env = env().await;
    let admin = env.client(&env.admin);
    let contoso_token = admin.add_principal("contoso", false).await.unwrap();
    let fabrikam_token = admin.add_principal("fabrikam", false).await.unwrap();
    let woodgrove_token = admin.add_principal("woodgrove", false).await.unwrap();
    let (contoso, fabrikam, woodgrove) = (
        env.client(&contoso_token),
        env.client(&fabrikam_token),
        env.client(&woodgrove_token),
    );
    let v = &admin;
    contoso
        .create_key("contoso-data", &exportable(&strict_policy(&env), false))
        .await
        .unwrap();
    fabrikam
        .create_key("fabrikam-data", &exportable(&strict_policy(&env), false))
        .await
        .unwrap();
    let tee = EphemeralKey::generate().unwrap();
    let runtime = tee.runtime_json();
    let genuine = env.token(&runtime, GOOD_CONFIG, None).await;

    // The control: a genuine workload gets its key (so every refusal below is the attack's).
    let jws = contoso
        .release("contoso-data", &release(genuine.clone(), None))
        .await
        .unwrap();
    let released = open_release(&jws, env.ca.cert(), tee.private_key()).unwrap();
    let released_der = released.key.as_der().unwrap().as_ref().to_vec();

    // --- attestation-level attacks: evidence the attestation service refuses -------------------
    let mut debug_guest = identity(GOOD_CONFIG);
    debug_guest.policy = conclave_snp::report::GuestPolicy(0x3_0000 | (1 << 19));
    attest_refusal(
        &mut m,
        "debug-enabled guest policy",
        &env,
        &logs,
        &env.attest_url,
        &AttestSevSnpVmRequest::new(&evidence(&env.sim, &debug_guest, &runtime), &runtime, None),
        "debug policy bit",
    )
    .await;
    attest_refusal(
        &mut m,
        "report_data not bound to the runtime data",
        &env,
        &logs,
        &env.attest_url,
        &AttestSevSnpVmRequest::new(
            &evidence(&env.sim, &identity(GOOD_CONFIG), b"other runtime data"),
            &runtime,
            None,
        ),
        "report_data does not bind the runtime data",
    )
    .await;
    let stranger = SimHost::open(&env.dir.join("stranger-sim")).unwrap();
    attest_refusal(
        &mut m,
        "evidence under an untrusted root",
        &env,
        &logs,
        &env.attest_url,
        &AttestSevSnpVmRequest::new(
            &evidence(&stranger, &identity(GOOD_CONFIG), &runtime),
            &runtime,
            None,
        ),
        "is not one of the trusted roots",
    )
    .await;
    // The trusted ARK in the evidence, but the stranger's ASK and VCEK under it.
    let pems = |sim: &SimHost| {
        conclave_pki::Cert::parse_pem_bundle("chain", sim.platform().cert_chain_pem().as_bytes())
            .unwrap()
    };
    let mut grafted_chain: Vec<_> = pems(&env.sim)
        .into_iter()
        .filter(|c| c.subject().contains("ARK"))
        .collect();
    grafted_chain.extend(
        pems(&stranger)
            .into_iter()
            .filter(|c| !c.subject().contains("ARK")),
    );
    let mut grafted = evidence(&stranger, &identity(GOOD_CONFIG), &runtime);
    grafted.cert_chain_pem = grafted_chain.iter().map(|c| c.to_pem()).collect();
    attest_refusal(
        &mut m,
        "VCEK not chained to the trusted ARK (grafted chain)",
        &env,
        &logs,
        &env.attest_url,
        &AttestSevSnpVmRequest::new(&grafted, &runtime, None),
        "signature",
    )
    .await;
    let mut strict = sim_policy();
    strict.min_tcb = Some(conclave_snp::report::TcbParts {
        fmc: None,
        bootloader: 255,
        tee: 255,
        snp: 255,
        microcode: 255,
    });
    let (strict_url, _stop_strict) =
        attestation_service_with(&env.dir.join("strict-attest"), &env.ca, &env.sim, strict).await;
    attest_refusal(
        &mut m,
        "reported TCB below the policy minimum",
        &env,
        &logs,
        &strict_url,
        &AttestSevSnpVmRequest::new(
            &evidence(&env.sim, &identity(GOOD_CONFIG), &runtime),
            &runtime,
            None,
        ),
        "is below the minimum",
    )
    .await;

    // --- token-level attacks: what a workload presents to the vault ---------------------------
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
        &mut m,
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
        .token(&runtime, b"party = \"woodgrove\"\nevil = true\n", None)
        .await;
    vault_refusal(
        &mut m,
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
        &AttestSevSnpVmRequest::new(&evidence(&env.sim, &other_host, &runtime), &runtime, None),
    )
    .await
    .unwrap();
    vault_refusal(
        &mut m,
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

    let with_nonce = env.token(&runtime, GOOD_CONFIG, Some("nonce-1")).await;
    vault_refusal(
        &mut m,
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
        &mut m,
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
        &mut m,
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
        attestation_service(&env.dir.join("stranger-attest"), &env.ca, &stranger).await;
    let foreign = attest(
        &env.http,
        &stranger_url,
        &AttestSevSnpVmRequest::new(
            &evidence(&stranger, &identity(GOOD_CONFIG), &runtime),
            &runtime,
            None,
        ),
    )
    .await
    .unwrap();
    vault_refusal(
        &mut m,
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
        &mut m,
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
        &mut m,
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
        &mut m,
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
        &mut m,
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
        .create_key("contoso-data", &exportable(&strict_policy(&env), false))
        .await
        .unwrap();
    vault_refusal(
        &mut m,
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

    // --- authorisation: grants, owners, bearer tokens -----------------------------------------
    vault_refusal(
        &mut m,
        "cross-party release with no grant",
        v,
        contoso
            .release("fabrikam-data", &release(genuine.clone(), None))
            .await,
        403,
        "has no release grant",
        "release",
    )
    .await;

    fabrikam
        .grant("fabrikam-data", "woodgrove", &[Permission::Release])
        .await
        .unwrap();
    woodgrove
        .release("fabrikam-data", &release(genuine.clone(), None))
        .await
        .unwrap();
    fabrikam.revoke("fabrikam-data", "woodgrove").await.unwrap();
    vault_refusal(
        &mut m,
        "release after revocation",
        v,
        woodgrove
            .release("fabrikam-data", &release(genuine.clone(), None))
            .await,
        403,
        "has no release grant",
        "release",
    )
    .await;

    let created = contoso.get_key("contoso-data").await.unwrap();
    let version = created["key"]["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let lax = UpdateKeyRequest {
        release_policy: Some(ReleasePolicyBody {
            content_type: None,
            data: Some(b64url(env.policy("00").to_string().as_bytes())),
            immutable: None,
        }),
        ..Default::default()
    };
    vault_refusal(
        &mut m,
        "release policy changed by a non-owner",
        v,
        woodgrove.update_key("contoso-data", &version, &lax).await,
        403,
        "only the key's owner",
        "update",
    )
    .await;

    let fixed = contoso
        .create_key("fixed", &exportable(&strict_policy(&env), true))
        .await
        .unwrap();
    let fixed_version = fixed["key"]["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    vault_refusal(
        &mut m,
        "change of an immutable policy",
        v,
        contoso.update_key("fixed", &fixed_version, &lax).await,
        403,
        "immutable",
        "policy-change",
    )
    .await;

    // Another principal's bearer token gives that principal's rights, not the owner's.
    vault_refusal(
        &mut m,
        "bearer token of another principal (grants on a key it does not own)",
        v,
        fabrikam
            .grant("contoso-data", "fabrikam", &[Permission::Release])
            .await,
        403,
        "owner",
        "grant",
    )
    .await;
    let forged_bearer = env.client("cvt_forged-bearer-token");
    vault_refusal(
        &mut m,
        "forged bearer token",
        v,
        forged_bearer.get_key("contoso-data").await,
        401,
        "the bearer token is not valid for this vault",
        "authenticate",
    )
    .await;

    // --- request-level attacks ------------------------------------------------------------------
    let raw = |path: &str, body: Vec<u8>| {
        env.http
            .post(format!("{}{path}?api-version=7.4", env.vault_url))
            .bearer_auth(&contoso_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (attack, path, body, status, needle) in [
        (
            "path traversal in a key name",
            "/keys/..%2F..%2Fetc%2Fpasswd/create",
            b"{}".to_vec(),
            400,
            "key names",
        ),
        (
            "oversized JSON body",
            "/keys/x/create",
            vec![b' '; 100 * 1024],
            413,
            "limit",
        ),
        (
            "deeply nested JSON body",
            "/keys/x/create",
            format!("{}1{}", "[".repeat(100), "]".repeat(100)).into_bytes(),
            400,
            "nests deeper",
        ),
    ] {
        let resp = raw(path, body).await.unwrap();
        let got = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        let result: Result<(), ClientError> = Err(ClientError::Refused {
            status: got,
            code: body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            message: body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        });
        vault_refusal(&mut m, attack, v, result, status, needle, "create").await;
    }

    // --- data-level attacks: the reader refuses (no service involved, nothing to audit) -------
    let dir = env.dir.join("datasets");
    std::fs::create_dir_all(&dir).unwrap();
    let public_of = |bundle: &Value| VaultPublicKey {
        kid: bundle["key"]["kid"].as_str().unwrap().to_string(),
        n: b64url_decode(bundle["key"]["n"].as_str().unwrap()).unwrap(),
        e: b64url_decode(bundle["key"]["e"].as_str().unwrap()).unwrap(),
    };
    let write = |name: &str, party: Party, public: VaultPublicKey| {
        let path = dir.join(name).to_str().unwrap().to_string();
        async move {
            let mut g = Generator::new(party, 3, 5_000);
            let batches = std::iter::from_fn(move || g.next_batch(1024).map(Ok));
            dataset::write_encrypted(batches, schema(), &locate(&path).unwrap(), &public, |_| {})
                .await
                .unwrap();
            path
        }
    };
    let contoso_file = write("contoso.parquet", Party::Contoso, public_of(&created)).await;
    let fabrikam_bundle = fabrikam.get_key("fabrikam-data").await.unwrap();
    let fabrikam_file = write(
        "fabrikam.parquet",
        Party::Fabrikam,
        public_of(&fabrikam_bundle),
    )
    .await;
    let contoso_reader: Arc<dyn KeyUnwrapper> = Arc::new(
        PrivateKeyUnwrapper::new(
            &released.kid,
            aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&released_der).unwrap(),
        )
        .unwrap(),
    );
    assert_eq!(
        read_all(&contoso_file, contoso_reader.clone())
            .await
            .unwrap(),
        5_000,
        "control: the genuine file reads"
    );
    let bytes = std::fs::read(&contoso_file).unwrap();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let tampered_file = dir.join("tampered.parquet");
    std::fs::write(&tampered_file, &flipped).unwrap();
    let truncated_file = dir.join("truncated.parquet");
    std::fs::write(&truncated_file, &bytes[..bytes.len() * 2 / 3]).unwrap();
    // Made-up records written as plain Parquet under Contoso's file name.
    let forged_file = dir.join("forged-plain.parquet");
    {
        let mut g = Generator::new(Party::Contoso, 99, 5_000);
        let batches = std::iter::from_fn(move || g.next_batch(1024).map(Ok));
        dataset::write_plain(
            batches,
            schema(),
            &locate(forged_file.to_str().unwrap()).unwrap(),
            |_| {},
        )
        .await
        .unwrap();
    }
    for (attack, file, needle) in [
        (
            "tampered ciphertext",
            tampered_file.to_str().unwrap(),
            "it may be tampered with",
        ),
        (
            "truncated ciphertext",
            truncated_file.to_str().unwrap(),
            "it may be tampered with",
        ),
        (
            "swapped ciphertext (another party's file under this name)",
            fabrikam_file.as_str(),
            "is encrypted under",
        ),
        (
            "forged records as a plain Parquet file under this name",
            forged_file.to_str().unwrap(),
            "the dataset is not encrypted",
        ),
    ] {
        let err = read_all(file, contoso_reader.clone())
            .await
            .expect_err(&format!("{attack}: the reader returned records"));
        let reason = err.to_string();
        assert!(reason.contains(needle), "{attack}: {reason}");
        m.row(attack, "dataset reader (no plaintext returned)", &reason);
    }

    // --- the matrix, and the scan of everything logged ----------------------------------------
    let mut table = String::new();
    for (i, (attack, by, reason)) in m.rows.iter().enumerate() {
        table.push_str(&format!("{:>2}. {attack:<62} {by:<38} {reason}\n", i + 1));
    }
    eprintln!("{table}");
    assert!(m.rows.len() >= 25, "only {} attacks", m.rows.len());

    let logged = logs.text();
    assert!(
        logged.contains("release denied") && logged.contains("attestation denied"),
        "the log capture is not working"
    );
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let mut secrets: Vec<(String, String)> = Vec::new();
    for (what, bytes) in [
        ("released private key", released_der.clone()),
        (
            "TEE private key",
            tee.private_key().as_der().unwrap().as_ref().to_vec(),
        ),
        (
            "vault master key",
            std::fs::read(env.dir.join("vault/master.key")).unwrap(),
        ),
    ] {
        // Any 16-byte piece of the key, in hex, base64 or base64url, would be a leak.
        for w in bytes.windows(16).step_by(8) {
            secrets.push((what.into(), hex::encode(w)));
            secrets.push((what.into(), b64(w)[..20].to_string()));
            secrets.push((what.into(), b64url(w)[..20].to_string()));
        }
    }
    for (what, token) in [
        ("admin bearer token", env.admin.trim()),
        ("contoso bearer token", contoso_token.as_str()),
        ("fabrikam bearer token", fabrikam_token.as_str()),
        ("woodgrove bearer token", woodgrove_token.as_str()),
    ] {
        secrets.push((what.into(), token.to_string()));
    }
    let records: Vec<_> = Generator::new(Party::Contoso, 3, 5_000)
        .next_batch(50)
        .map(|b| records_from_batch(&b).unwrap())
        .unwrap();
    for r in &records {
        secrets.push(("a record's name".into(), r.name.clone()));
        secrets.push(("a record's phone".into(), r.phone.clone()));
        secrets.push(("a record's address".into(), r.address.clone()));
    }
    for (what, needle) in &secrets {
        assert!(
            !logged.contains(needle.as_str()),
            "the service logs contain the {what}"
        );
    }
    let mut out = std::fs::File::create(env.dir.join("matrix.txt")).unwrap();
    out.write_all(table.as_bytes()).unwrap();
    eprintln!(
        "scanned {} KiB of service logs for {} secret fragments: none found",
        logged.len() / 1024,
        secrets.len()
    );
}
