//! The development provider over real HTTP: discovery, the code flow with PKCE and its refusals,
//! client credentials, and tokens that verify against its JWKS.

use base64::Engine as _;
use serde_json::Value;

const CONFIG: &str = r#"
[[realms]]
name = "contoso"
display_name = "Contoso"
audience = "api://contoso"

[[realms.clients]]
client_id = "web"
redirect_uris = ["https://app.example/cb"]

[[realms.clients]]
client_id = "svc"
secret = "s3cret"
roles = ["reader"]

[[realms.users]]
username = "alice"
password = "correct horse"
name = "Alice"
roles = ["member"]
"#;

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(jwt: &str) -> (Value, Value) {
    let part = |i: usize| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwt.split('.').nth(i).unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    (part(0), part(1))
}

async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let provider =
        conclave_idp::Provider::new(&base, conclave_idp::Config::parse(CONFIG).unwrap()).unwrap();
    tokio::spawn(async move {
        axum::serve(listener, conclave_idp::router(provider))
            .await
            .unwrap()
    });
    base
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

fn param(url: &str, name: &str) -> Option<String> {
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map(str::to_string)
}

async fn post_form(http: &reqwest::Client, url: &str, body: String) -> reqwest::Response {
    http.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn discovery_code_flow_with_pkce_and_client_credentials() {
    let base = start().await;
    let issuer = format!("{base}/contoso");
    let http = client();
    let meta: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], issuer);
    assert_eq!(
        meta["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    let jwks: Value = http
        .get(meta["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();

    let verifier = "a".repeat(43) + "-verifier";
    let challenge =
        b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref());
    let query = format!(
        "response_type=code&client_id=web&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&scope=openid%20profile&state=xyz&nonce=n-1&code_challenge={challenge}&code_challenge_method=S256"
    );
    // Unregistered redirect URI: an error page, never a redirect (RFC 6749 §4.1.2.1).
    let r = http
        .get(format!(
            "{issuer}/authorize?{}",
            query.replace("app.example", "evil.example")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not registered"));
    // No PKCE: back to the client with invalid_request.
    let r = http
        .get(format!(
            "{issuer}/authorize?{}",
            query.replace("code_challenge_method=S256", "code_challenge_method=plain")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        param(&location(&r), "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(param(&location(&r), "state").as_deref(), Some("xyz"));
    // The login form, a wrong password, then the right one.
    let form = http
        .get(format!("{issuer}/authorize?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let html = form.text().await.unwrap();
    assert!(html.contains("Sign in to Contoso") && html.contains("name=\"code_challenge\""));
    let wrong = post_form(
        &http,
        &format!("{issuer}/authorize"),
        format!("{query}&username=alice&password=wrong"),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong username or password")
    );
    let ok = post_form(
        &http,
        &format!("{issuer}/authorize"),
        format!("{query}&username=alice&password=correct%20horse"),
    )
    .await;
    assert_eq!(ok.status(), 303);
    let back = location(&ok);
    assert!(back.starts_with("https://app.example/cb?"), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("xyz"));
    assert!(param(&back, "iss").is_some(), "RFC 9207 iss");
    let code = param(&back, "code").unwrap();
    let exchange = |verifier: String, code: String| {
        let http = http.clone();
        let url = format!("{issuer}/token");
        async move {
            post_form(
                &http,
                &url,
                format!(
                    "grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&client_id=web&code_verifier={verifier}"
                ),
            )
            .await
        }
    };
    // A wrong verifier fails and uses the code up (the right one then fails too).
    let r = exchange(format!("{verifier}x"), code.clone()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(exchange(verifier.clone(), code).await.status(), 400);
    // A code is bound to its redirect_uri.
    let ok = post_form(
        &http,
        &format!("{issuer}/authorize"),
        format!("{query}&username=alice&password=correct%20horse"),
    )
    .await;
    let code = param(&location(&ok), "code").unwrap();
    let r = post_form(
        &http,
        &format!("{issuer}/token"),
        format!(
            "grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Fapp.example%2Fother&client_id=web&code_verifier={verifier}"
        ),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("another client or redirect_uri")
    );
    let ok = post_form(
        &http,
        &format!("{issuer}/authorize"),
        format!("{query}&username=alice&password=correct%20horse"),
    )
    .await;
    let code = param(&location(&ok), "code").unwrap();
    let r = exchange(verifier.clone(), code.clone()).await;
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.unwrap();
    let again = exchange(verifier.clone(), code).await;
    assert_eq!(again.status(), 400);

    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["web"]);
    v.set_issuer(&[&issuer]);
    let id = jsonwebtoken::decode::<Value>(tokens["id_token"].as_str().unwrap(), &key, &v).unwrap();
    assert_eq!(id.claims["sub"], "alice");
    assert_eq!(id.claims["nonce"], "n-1");
    assert_eq!(id.claims["roles"], serde_json::json!(["member"]));
    v.set_audience(&["api://contoso"]);
    let access = tokens["access_token"].as_str().unwrap();
    let at = jsonwebtoken::decode::<Value>(access, &key, &v).unwrap();
    assert_eq!(claims(access).0["typ"], "at+jwt", "RFC 9068");
    assert_eq!(at.claims["client_id"], "web");
    assert_eq!(at.claims["roles"], serde_json::json!(["member"]));

    // Client credentials: only for a confidential client, with its secret.
    let cc = |auth: Option<(&str, &str)>| {
        let mut r = http
            .post(format!("{issuer}/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials");
        if let Some((id, secret)) = auth {
            r = r.basic_auth(id, Some(secret));
        }
        r.send()
    };
    assert_eq!(cc(Some(("svc", "wrong"))).await.unwrap().status(), 401);
    assert_eq!(cc(Some(("web", ""))).await.unwrap().status(), 401);
    assert_eq!(cc(None).await.unwrap().status(), 401);
    // RFC 8707: a resource the realm does not serve is refused.
    let r = http
        .post(format!("{issuer}/token"))
        .basic_auth("svc", Some("s3cret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&resource=api%3A%2F%2Felsewhere")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_target");
    let svc: Value = cc(Some(("svc", "s3cret")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let at =
        jsonwebtoken::decode::<Value>(svc["access_token"].as_str().unwrap(), &key, &v).unwrap();
    assert_eq!(at.claims["sub"], "svc");
    assert_eq!(at.claims["roles"], serde_json::json!(["reader"]));
}

#[test]
fn configs_that_say_something_wrong_are_refused() {
    let e = conclave_idp::Config::parse(&format!("{CONFIG}\nextra = 1\n")).unwrap_err();
    assert!(e.to_string().contains("extra"), "{e}");
    let e =
        conclave_idp::Config::parse(&CONFIG.replace("\"contoso\"", "\"Contoso!\"")).unwrap_err();
    assert!(e.to_string().contains("lower-case"), "{e}");
    let twice = format!(
        "{CONFIG}\n[[realms]]\nname = \"contoso\"\ndisplay_name = \"x\"\naudience = \"y\"\n"
    );
    let e = conclave_idp::Config::parse(&twice).unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
}
