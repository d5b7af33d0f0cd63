//! The verifier accepts only RS256 tokens signed by a published key, within their lifetime,
//! from the expected issuer.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use conclave_attest::api::b64url;
use conclave_attest::jws::sign_rs256;
use conclave_attest::keys::KeyRing;
use conclave_attest::{TokenError, TokenVerifier};
use conclave_protocol::jwk::JwkSet;
use serde_json::{Map, Value, json};

const ISSUER: &str = "https://attest.example";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(iat: i64, nbf: i64, exp: i64, iss: &str) -> Value {
    json!({ "iss": iss, "iat": iat, "nbf": nbf, "exp": exp, "x-conclave-platform": "sim" })
}

fn header(kid: &str) -> Map<String, Value> {
    let mut h = Map::new();
    h.insert("typ".into(), "JWT".into());
    h.insert("kid".into(), kid.into());
    h
}

struct Fixture {
    _dir: tempfile::TempDir,
    ring: KeyRing,
    verifier: TokenVerifier,
}

/// A key set as the JSON an issuer serves.
fn as_json(set: JwkSet) -> Value {
    serde_json::to_value(set).unwrap()
}

/// A key set from JSON.
fn set(v: &Value) -> JwkSet {
    serde_json::from_value(v.clone()).unwrap()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(dir.path()).unwrap();
    let jwks = ring.jwks(std::time::Duration::from_secs(3600));
    let verifier = TokenVerifier::with_jwks(Some(ISSUER.into()), &jwks);
    Fixture {
        _dir: dir,
        ring,
        verifier,
    }
}

fn sign(f: &Fixture, claims: &Value) -> String {
    let k = f.ring.active();
    sign_rs256(header(&k.kid), claims, &k.key).unwrap()
}

#[tokio::test]
async fn a_valid_token_verifies() {
    let f = fixture();
    let t = sign(&f, &claims(now(), now(), now() + 600, ISSUER));
    let v = f.verifier.verify(&t).await.unwrap();
    assert_eq!(v.claims["x-conclave-platform"], "sim");
    assert_eq!(v.kid, f.ring.active().kid);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let f = fixture();
    let head = b64url(
        json!({"alg": "none", "typ": "JWT", "kid": f.ring.active().kid})
            .to_string()
            .as_bytes(),
    );
    let body = b64url(
        claims(now(), now(), now() + 600, ISSUER)
            .to_string()
            .as_bytes(),
    );
    let err = f
        .verifier
        .verify(&format!("{head}.{body}."))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Algorithm(..)), "{err}");
}

#[tokio::test]
async fn hs256_keyed_with_the_public_key_is_refused() {
    let f = fixture();
    let jwks = f.ring.jwks(std::time::Duration::from_secs(3600));
    let public_material = jwks.keys[0].n.clone().unwrap();
    let head = b64url(
        json!({"alg": "HS256", "typ": "JWT", "kid": f.ring.active().kid})
            .to_string()
            .as_bytes(),
    );
    let body = b64url(
        claims(now(), now(), now() + 600, ISSUER)
            .to_string()
            .as_bytes(),
    );
    let input = format!("{head}.{body}");
    let key = hmac::Key::new(hmac::HMAC_SHA256, public_material.as_bytes());
    let sig = b64url(hmac::sign(&key, input.as_bytes()).as_ref());
    let err = f
        .verifier
        .verify(&format!("{input}.{sig}"))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Algorithm(..)), "{err}");
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let f = fixture();
    let expired = sign(
        &f,
        &claims(now() - 7200, now() - 7200, now() - 3600, ISSUER),
    );
    assert_eq!(
        f.verifier.verify(&expired).await.unwrap_err(),
        TokenError::Expired
    );
    let future = sign(&f, &claims(now(), now() + 3600, now() + 7200, ISSUER));
    assert_eq!(
        f.verifier.verify(&future).await.unwrap_err(),
        TokenError::NotYetValid
    );
    // Within the clock-skew allowance both pass.
    let skewed = sign(&f, &claims(now(), now() + 30, now() + 600, ISSUER));
    f.verifier.verify(&skewed).await.unwrap();
}

#[tokio::test]
async fn unknown_kid_wrong_issuer_and_foreign_keys_are_refused() {
    let f = fixture();
    let k = f.ring.active();
    let unknown = sign_rs256(
        header("no-such-key"),
        &claims(now(), now(), now() + 600, ISSUER),
        &k.key,
    )
    .unwrap();
    assert_eq!(
        f.verifier.verify(&unknown).await.unwrap_err(),
        TokenError::UnknownKid("no-such-key".into())
    );

    let other_issuer = sign(
        &f,
        &claims(now(), now(), now() + 600, "https://evil.example"),
    );
    assert!(matches!(
        f.verifier.verify(&other_issuer).await.unwrap_err(),
        TokenError::WrongIssuer { .. }
    ));

    // A different key claiming the published kid (a forged JWKS entry elsewhere).
    let other = fixture();
    let forged = sign_rs256(
        header(&k.kid),
        &claims(now(), now(), now() + 600, ISSUER),
        &other.ring.active().key,
    )
    .unwrap();
    assert!(matches!(
        f.verifier.verify(&forged).await.unwrap_err(),
        TokenError::BadSignature(_)
    ));

    let no_kid = sign_rs256(
        Map::new(),
        &claims(now(), now(), now() + 600, ISSUER),
        &k.key,
    )
    .unwrap();
    assert_eq!(
        f.verifier.verify(&no_kid).await.unwrap_err(),
        TokenError::NoKid
    );
    assert!(matches!(
        f.verifier.verify("garbage").await.unwrap_err(),
        TokenError::Malformed(_)
    ));
}

/// Serves `jwks` (swappable; `null` answers 503) at `http://127.0.0.1:<port>/certs`.
async fn serve_jwks(jwks: std::sync::Arc<std::sync::Mutex<Value>>) -> String {
    use axum::response::IntoResponse as _;
    let app = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let jwks = jwks.lock().unwrap().clone();
            async move {
                if jwks.is_null() {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    axum::Json(jwks).into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    url
}

#[tokio::test]
async fn a_key_the_issuer_withdraws_stops_being_trusted_once_the_cache_expires() {
    let old = fixture();
    let new = fixture();
    let lifetime = std::time::Duration::from_secs(3600);
    let published = std::sync::Arc::new(std::sync::Mutex::new(as_json(old.ring.jwks(lifetime))));
    let url = serve_jwks(published.clone()).await;
    let verifier = TokenVerifier::for_jwks_url(&url, reqwest::Client::new())
        .with_issuer(ISSUER)
        .with_key_lifetime(std::time::Duration::from_secs(3));
    let token = sign(&old, &claims(now(), now(), now() + 600, ISSUER));
    verifier.verify(&token).await.unwrap();

    // The issuer withdraws the old key and publishes only the new one.
    *published.lock().unwrap() = as_json(new.ring.jwks(lifetime));
    // Within the key lifetime the cached key is still used (no fetch per token)...
    verifier.verify(&token).await.unwrap();
    // ...past it, the keys are fetched again and the withdrawn key is unknown.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    assert_eq!(
        verifier.verify(&token).await.unwrap_err(),
        TokenError::UnknownKid(old.ring.active().kid.clone())
    );
    let fresh = sign(&new, &claims(now(), now(), now() + 600, ISSUER));
    verifier.verify(&fresh).await.unwrap();

    // When the keys cannot be fetched after the lifetime, nothing verifies (fail closed).
    *published.lock().unwrap() = Value::Null;
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    assert!(matches!(
        verifier.verify(&fresh).await.unwrap_err(),
        TokenError::KeysUnavailable(_)
    ));
}

#[tokio::test]
async fn a_validly_signed_token_with_an_unknown_critical_header_is_refused() {
    let f = fixture();
    let k = f.ring.active();
    let mut h = header(&k.kid);
    h.insert("crit".into(), json!(["urn:example:must-understand"]));
    h.insert("urn:example:must-understand".into(), true.into());
    let token = sign_rs256(h, &claims(now(), now(), now() + 600, ISSUER), &k.key).unwrap();
    let err = f.verifier.verify(&token).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::CriticalHeader(m) if m.contains("urn:example:must-understand")),
        "{err:?}"
    );
    // The same claims without it verify: the signature was never the problem.
    f.verifier
        .verify(&sign(&f, &claims(now(), now(), now() + 600, ISSUER)))
        .await
        .unwrap();
}

/// An OpenID provider whose `jwks_uri` is not under its issuer (as Microsoft Entra ID's:
/// `…/{tenant}/discovery/v2.0/keys` for the issuer `…/{tenant}/v2.0`): an attestation verifier
/// refuses to take keys from there; one made `with_jwks_anywhere` (OpenID Connect Discovery
/// 1.0 §3) takes them, and still checks issuer, audience and algorithm.
#[tokio::test]
async fn keys_outside_the_issuer_only_for_verifiers_that_allow_them() {
    let f = fixture();
    let jwks = f.ring.jwks(std::time::Duration::from_secs(3600));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let issuer = format!("{base}/tenant/v2.0");
    let config =
        json!({"issuer": issuer, "jwks_uri": format!("{base}/tenant/discovery/v2.0/keys")});
    let router = axum::Router::new()
        .route(
            "/tenant/v2.0/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(config) }),
        )
        .route(
            "/tenant/discovery/v2.0/keys",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let mut c = claims(now(), now(), now() + 600, &issuer);
    c["aud"] = json!("api://workload");
    let token = sign(&f, &c);

    let strict = TokenVerifier::for_issuer(&issuer, reqwest::Client::new());
    let e = strict.verify(&token).await.unwrap_err();
    assert!(e.to_string().contains("is not under the issuer"), "{e}");

    let oidc = TokenVerifier::for_issuer(&issuer, reqwest::Client::new())
        .with_algorithms(&[
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::ES256,
        ])
        .with_audience("api://workload")
        .with_jwks_anywhere();
    assert_eq!(oidc.verify(&token).await.unwrap().issuer(), issuer);
    let other_audience = TokenVerifier::for_issuer(&issuer, reqwest::Client::new())
        .with_audience("api://another")
        .with_jwks_anywhere();
    assert!(matches!(
        other_audience.verify(&token).await.unwrap_err(),
        TokenError::WrongAudience { .. }
    ));
}

/// The JWKS with every key given only as its certificate (`kid`, `kty`, `x5c`: no `n`/`e`), the
/// shape Microsoft Azure Attestation's `GET /certs` publishes.
fn maa_shaped(jwks: &Value) -> Value {
    let mut jwks = jwks.clone();
    for k in jwks["keys"].as_array_mut().unwrap() {
        let k = k.as_object_mut().unwrap();
        k.retain(|name, _| ["kid", "kty", "x5c"].contains(&name.as_str()));
    }
    jwks
}

#[tokio::test]
async fn keys_published_only_as_x5c_certificates_verify_tokens() {
    let f = fixture();
    let jwks = maa_shaped(&as_json(f.ring.jwks(std::time::Duration::from_secs(3600))));
    assert!(jwks["keys"][0].get("n").is_none());
    let token = sign(&f, &claims(now(), now(), now() + 600, ISSUER));
    // Given as a file.
    let fixed = TokenVerifier::with_jwks(Some(ISSUER.into()), &set(&jwks));
    assert_eq!(fixed.verify(&token).await.unwrap().issuer(), ISSUER);
    // Served as MAA serves it: OpenID metadata, then `/certs`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = json!({"issuer": base, "jwks_uri": format!("{base}/certs")});
    let served = jwks.clone();
    let router = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(config) }),
        )
        .route(
            "/certs",
            axum::routing::get(move || async move { axum::Json(served) }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let token = sign(&f, &claims(now(), now(), now() + 600, &base));
    let issuer = TokenVerifier::for_issuer(&base, reqwest::Client::new());
    assert_eq!(issuer.ensure_keys().await.unwrap(), 1);
    assert_eq!(issuer.verify(&token).await.unwrap().issuer(), base);
    // A signature by another key does not verify against the certificate's key.
    let other = fixture();
    let forged = sign_rs256(
        header(&f.ring.active().kid),
        &claims(now(), now(), now() + 600, &base),
        &other.ring.active().key,
    )
    .unwrap();
    assert!(matches!(
        issuer.verify(&forged).await.unwrap_err(),
        TokenError::BadSignature(_)
    ));
}

#[tokio::test]
async fn a_key_whose_parameters_and_certificate_disagree_is_not_used() {
    let f = fixture();
    let other = fixture();
    let mut jwks = f.ring.jwks(std::time::Duration::from_secs(3600));
    let foreign = other.ring.jwks(std::time::Duration::from_secs(3600)).keys[0]
        .x5c
        .clone();
    jwks.keys[0].x5c = foreign;
    let verifier = TokenVerifier::with_jwks(Some(ISSUER.into()), &jwks);
    let token = sign(&f, &claims(now(), now(), now() + 600, ISSUER));
    assert!(matches!(
        verifier.verify(&token).await.unwrap_err(),
        TokenError::UnknownKid(_)
    ));
    // Matching parameters and certificate: used.
    let both = f.ring.jwks(std::time::Duration::from_secs(3600));
    let verifier = TokenVerifier::with_jwks(Some(ISSUER.into()), &both);
    assert!(verifier.verify(&token).await.is_ok());
}
