//! The vault over real TLS on loopback, with tokens from the real attestation service (also over
//! TLS, trusting the same local CA), evidence from the simulated platform.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PublicEncryptingKey,
};
use conclave_attest::api::{AttestSevSnpVmRequest, attest, b64url, b64url_decode, report_data_for};
use conclave_attest::service::{AttestationService, ServiceConfig};
use conclave_attest::{AppraisalPolicy, PlatformName};
use conclave_kms::api::{
    CreateKeyRequest, KeyAttributes, ReleasePolicyBody, ReleaseRequest, UpdateKeyRequest,
};
use conclave_kms::client::{ClientError, VaultClient, open_release};
use conclave_kms::store::Permission;
use conclave_net::LocalCa;
use conclave_snp::TrustedRoots;
use conclave_tee::ephemeral::EphemeralKey;
use conclave_tee::sim::{LaunchIdentity, SimHost, measure};
use conclave_tee::{Evidence, Platform};
use serde_json::{Value, json};

struct Env {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ca: LocalCa,
    http: reqwest::Client,
    sim: SimHost,
    attest_url: String,
    vault_url: String,
    admin: String,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

const GOOD_CONFIG: &[u8] = b"party = \"woodgrove\"\n";

fn good_measurement() -> String {
    hex::encode(measure(b"workload", &[], GOOD_CONFIG))
}

async fn spawn_tls(
    router: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(conclave_net::serve(listener, router, Some(tls), async {
        stopped.await.ok();
    }));
    stop
}

async fn attestation_service(
    dir: &Path,
    ca: &LocalCa,
    sim: &SimHost,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let cert = ca
        .server_cert(&dir.join("tls"), "attest", &["127.0.0.1"])
        .unwrap();
    let mut roots = TrustedRoots::amd();
    roots.add(sim.platform().trusted_root()).unwrap();
    let service = AttestationService::new(ServiceConfig {
        issuer: url.clone(),
        roots,
        policy: AppraisalPolicy {
            allowed_platforms: [PlatformName::Sim].into(),
            allow_debug: false,
            min_tcb: None,
            check_cert_validity: true,
        },
        key_dir: dir.join("token-keys"),
        token_lifetime: Duration::from_secs(600),
    })
    .unwrap();
    let tls = conclave_net::server_config(&cert.chain_pem, &cert.key_pk8).unwrap();
    let stop = spawn_tls(conclave_attest::service::router(service), listener, tls).await;
    (url, stop)
}

async fn start_vault(
    dir: &Path,
    ca: &LocalCa,
    http: &reqwest::Client,
    authorities: Vec<String>,
    hardware_only: bool,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let opened = conclave_kms::setup::open(
        conclave_kms::setup::VaultOptions {
            state_dir: dir.to_path_buf(),
            vault_url: url.clone(),
            tls_names: vec!["127.0.0.1".into()],
            authorities,
            http: http.clone(),
            hardware_only,
            master_key_file: None,
        },
        conclave_kms::setup::Certificates::LocalCa(ca),
    )
    .unwrap();
    let stop = spawn_tls(
        conclave_kms::service::router(opened.vault),
        listener,
        opened.tls,
    )
    .await;
    (url, stop)
}

async fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ca = LocalCa::load_or_create(&dir.join("ca")).unwrap();
    let http = conclave_net::client(Some(&ca.cert_path())).unwrap();
    let sim = SimHost::open(&dir.join("sim")).unwrap();
    let (attest_url, stop_a) = attestation_service(&dir.join("attest"), &ca, &sim).await;
    let (vault_url, stop_v) = start_vault(
        &dir.join("vault"),
        &ca,
        &http,
        vec![attest_url.clone()],
        false,
    )
    .await;
    let admin = std::fs::read_to_string(dir.join("vault/admin.token")).unwrap();
    Env {
        _dir: tmp,
        dir,
        ca,
        http,
        sim,
        attest_url,
        vault_url,
        admin,
        _stops: vec![stop_a, stop_v],
    }
}

impl Env {
    fn client(&self, token: &str) -> VaultClient {
        VaultClient::new(self.http.clone(), &self.vault_url, token)
    }

    async fn principal(&self, name: &str) -> VaultClient {
        let token = self
            .client(&self.admin)
            .add_principal(name, false)
            .await
            .unwrap();
        self.client(&token)
    }

    /// A token from the real attestation service for sim evidence with this launch config.
    async fn token(&self, runtime: &[u8], config: &[u8], nonce: Option<&str>) -> String {
        let identity = LaunchIdentity {
            measurement: measure(b"workload", &[], config),
            host_data: conclave_tee::sim::host_data(config),
            policy: conclave_snp::report::GuestPolicy(0x3_0000),
            report_id: [3; 32],
        };
        let evidence = Evidence {
            platform: Platform::Sim,
            report: self
                .sim
                .platform()
                .sign_report(&identity, report_data_for(runtime))
                .unwrap(),
            cert_chain_pem: self.sim.platform().cert_chain_pem(),
            hcl_runtime_claims: None,
        };
        let req = AttestSevSnpVmRequest::new(&evidence, runtime, nonce.map(String::from));
        attest(&self.http, &self.attest_url, &req).await.unwrap()
    }

    fn policy(&self, measurement: &str) -> Value {
        json!({"version": "1.0.0", "anyOf": [{"authority": self.attest_url, "allOf": [
            {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
            {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
            {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": measurement}
        ]}]})
    }

    async fn audit_tail(&self) -> Value {
        let log = self.client(&self.admin).audit(0).await.unwrap();
        log["value"].as_array().unwrap().last().unwrap().clone()
    }
}

fn exportable(policy: &Value, immutable: bool) -> CreateKeyRequest {
    CreateKeyRequest {
        kty: Some("RSA-HSM".into()),
        key_size: Some(2048),
        attributes: Some(KeyAttributes {
            exportable: Some(true),
            ..Default::default()
        }),
        release_policy: Some(ReleasePolicyBody {
            content_type: None,
            data: Some(b64url(policy.to_string().as_bytes())),
            immutable: Some(immutable),
        }),
        ..Default::default()
    }
}

fn refused(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Refused {
            status, message, ..
        } => (status, message),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_get_release_and_use_the_key_in_the_tee() {
    let env = env().await;
    let contoso = env.principal("contoso").await;
    let created = contoso
        .create_key(
            "contoso-data",
            &exportable(&env.policy(&good_measurement()), false),
        )
        .await
        .unwrap();
    let kid = created["key"]["kid"].as_str().unwrap().to_string();
    assert!(kid.starts_with(&format!("{}/keys/contoso-data/", env.vault_url)));
    assert!(
        created["key"].get("d").is_none(),
        "no private part is ever returned"
    );

    let got = contoso.get_key("contoso-data").await.unwrap();
    assert_eq!(got["key"]["kid"], kid.as_str());
    assert_eq!(got["attributes"]["exportable"], true);

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
    let n = b64url_decode(got["key"]["n"].as_str().unwrap()).unwrap();
    let e = b64url_decode(got["key"]["e"].as_str().unwrap()).unwrap();
    let spki = conclave_snp::x509::rsa_spki_from_components(&n, &e).unwrap();
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

    // A token from an attestation service this vault does not trust.
    let stranger_sim = SimHost::open(&env.dir.join("stranger-sim")).unwrap();
    let (stranger_url, _stop) =
        attestation_service(&env.dir.join("stranger"), &env.ca, &stranger_sim).await;
    let identity = LaunchIdentity {
        measurement: measure(b"workload", &[], GOOD_CONFIG),
        host_data: conclave_tee::sim::host_data(GOOD_CONFIG),
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
    let version = created["key"]["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
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
    let v2 = fixed["key"]["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
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
    let audit_len = || async {
        env.client(&env.admin).audit(0).await.unwrap()["value"]
            .as_array()
            .unwrap()
            .len()
    };
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
