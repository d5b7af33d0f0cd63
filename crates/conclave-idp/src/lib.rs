//! A small OpenID Connect provider for development and tests — the identity provider
//! `conclave demo` signs its parties' users in with. **Not for production**: users and passwords
//! come from a config file and its signing key lives only in memory; in a real deployment each
//! party points its workload at its own organisation's provider (Microsoft Entra ID, Keycloak,
//! Okta, …), which the workload talks to through the same standard protocol.
//!
//! What it implements, per realm (one issuer per party, `{base}/{realm}`):
//! - OpenID Connect Discovery 1.0 (`/.well-known/openid-configuration`) and a JWKS (`/jwks`);
//! - the authorization code flow (OpenID Connect Core 1.0 §3.1, RFC 6749 §4.1) with PKCE
//!   required (RFC 7636, `S256` only, as OAuth 2.1 requires), a login form for the user, the
//!   `iss` authorization response parameter (RFC 9207);
//! - the token endpoint (RFC 6749 §3.2) for `authorization_code` and, for confidential
//!   clients, `client_credentials` (§4.4); client authentication by `client_secret_basic` or
//!   `client_secret_post`; public clients by PKCE alone;
//! - ID tokens (ES256) with `nonce`, and access tokens as JWTs in the RFC 9068 profile
//!   (`typ: at+jwt`, `aud` the realm's API audience), both carrying the user's `roles` (the
//!   claim Microsoft Entra ID uses for app roles).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};

/// How long an authorization code may wait for its exchange (RFC 6749 §4.1.2 recommends at most
/// ten minutes; a minute is plenty for a redirect).
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Default lifetime of ID and access tokens.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 900;

/// The provider's configuration (TOML).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub realms: Vec<RealmConfig>,
}

/// One issuer: a party's organisation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmConfig {
    /// Path segment of the issuer (`contoso` → `{base}/contoso`).
    pub name: String,
    /// Shown on the login page.
    pub display_name: String,
    /// `aud` of the access tokens this realm issues: the API they are for.
    pub audience: String,
    #[serde(default = "default_lifetime")]
    pub token_lifetime_secs: u64,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

fn default_lifetime() -> u64 {
    DEFAULT_TOKEN_LIFETIME_SECS
}

/// A registered client (RFC 6749 §2).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    /// Redirection endpoints, matched exactly (RFC 6749 §3.1.2.3).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The secret of a confidential client; a public client has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Roles of the client itself, in tokens from the `client_credentials` grant.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The API (`aud`) this client's access tokens are for, when not the realm's `audience`: a
    /// workload registered as its own client gets tokens only it accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// A user who can sign in.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    pub password: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    #[error("the identity provider config is invalid: {0}")]
    Config(String),
    #[error("cannot make the signing key: {0}")]
    Key(String),
}

struct PendingCode {
    realm: String,
    client_id: String,
    redirect_uri: String,
    username: String,
    nonce: Option<String>,
    scope: String,
    code_challenge: String,
    expires: std::time::Instant,
}

/// A running provider.
pub struct Provider {
    base_url: String,
    realms: BTreeMap<String, RealmConfig>,
    /// One signing key per realm: a token of one realm never verifies with another's keys.
    keys: BTreeMap<String, SigningKey>,
    codes: Mutex<HashMap<String, PendingCode>>,
}

struct SigningKey {
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn generate() -> Result<Self, IdpError> {
        let rng = SystemRandom::new();
        let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| IdpError::Key(e.to_string()))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk8.as_ref())
            .map_err(|e| IdpError::Key(e.to_string()))?;
        let point = pair.public_key().as_ref();
        let kid =
            b64url(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, point).as_ref()[..12]);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
        });
        Ok(SigningKey {
            kid,
            encoding: jsonwebtoken::EncodingKey::from_ec_der(pk8.as_ref()),
            jwk,
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    b64url(&bytes)
}

fn same_secret(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Config {
    pub fn parse(text: &str) -> Result<Self, IdpError> {
        let config: Config = toml::from_str(text).map_err(|e| IdpError::Config(e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for r in &config.realms {
            if !valid_name(&r.name) {
                return Err(IdpError::Config(format!(
                    "realm {:?}: use lower-case letters, digits and '-'",
                    r.name
                )));
            }
            if !seen.insert(&r.name) {
                return Err(IdpError::Config(format!(
                    "realm {:?} is listed twice",
                    r.name
                )));
            }
        }
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the config serialises")
    }
}

impl Provider {
    /// A provider at `base_url` (`https://host:port`, no trailing slash) with a new ES256 key
    /// per realm (kept in memory only).
    pub fn new(base_url: &str, config: Config) -> Result<Arc<Self>, IdpError> {
        let mut keys = BTreeMap::new();
        for r in &config.realms {
            keys.insert(r.name.clone(), SigningKey::generate()?);
        }
        Ok(Arc::new(Provider {
            base_url: base_url.trim_end_matches('/').to_string(),
            realms: config
                .realms
                .into_iter()
                .map(|r| (r.name.clone(), r))
                .collect(),
            keys,
            codes: Mutex::default(),
        }))
    }

    /// The issuer identifier of a realm.
    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/{realm}", self.base_url)
    }

    fn realm(&self, name: &str) -> Result<&RealmConfig, Box<Response>> {
        self.realms.get(name).ok_or_else(|| {
            Box::new(
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "not_found", "error_description": format!("no realm {name:?}")})),
            )
                .into_response())
        })
    }

    fn sign(&self, realm: &str, typ: &str, claims: &Value) -> String {
        let key = &self.keys[realm];
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some(typ.to_string());
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("ES256 signing works")
    }

    fn access_token(
        &self,
        realm: &RealmConfig,
        audience: &str,
        sub: &str,
        client_id: &str,
        scope: &str,
        extra: Value,
    ) -> String {
        let t = now();
        let mut claims = json!({
            "iss": self.issuer(&realm.name), "sub": sub, "aud": audience,
            "client_id": client_id, "scope": scope, "jti": random_token(),
            "iat": t, "nbf": t, "exp": t + realm.token_lifetime_secs,
        });
        if let (Some(c), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            c.extend(extra);
        }
        self.sign(&realm.name, "at+jwt", &claims)
    }
}

// --- HTTP --------------------------------------------------------------------------------------

type St = State<Arc<Provider>>;

/// The provider's routes: `/{realm}/...` for every realm.
pub fn router(provider: Arc<Provider>) -> axum::Router {
    axum::Router::new()
        .route("/{realm}/.well-known/openid-configuration", get(discovery))
        .route("/{realm}/jwks", get(jwks))
        .route(
            "/{realm}/authorize",
            get(authorize_form).post(authorize_login),
        )
        .route("/{realm}/token", axum::routing::post(token))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(provider)
}

async fn discovery(State(p): St, Path(realm): Path<String>) -> Response {
    let r = match p.realm(&realm) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    let issuer = p.issuer(&r.name);
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "name", "email", "preferred_username", "roles"],
        "authorization_response_iss_parameter_supported": true,
    }))
    .into_response()
}

async fn jwks(State(p): St, Path(realm): Path<String>) -> Response {
    match p.realm(&realm) {
        Ok(r) => axum::Json(json!({"keys": [p.keys[&r.name].jwk]})).into_response(),
        Err(e) => *e,
    }
}

/// The authorization request's parameters (RFC 6749 §4.1.1, RFC 7636 §4.3, OIDC Core §3.1.2.1).
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct AuthorizeParams {
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: String,
    // The login form's fields.
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// An error shown to the user, not sent to the client: the client or its redirect URI cannot be
/// trusted (RFC 6749 §4.1.2.1).
fn error_page(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_SECURITY_POLICY, "default-src 'none'")],
        Html(format!(
            "<!doctype html><meta charset=utf-8><title>Sign-in error</title><h1>Sign-in error</h1><p>{}</p>",
            escape(message)
        )),
    )
        .into_response()
}

/// An error sent back to the client's redirect URI (RFC 6749 §4.1.2.1).
fn redirect_error(
    p: &Provider,
    realm: &str,
    params: &AuthorizeParams,
    error: &str,
    why: &str,
) -> Response {
    let mut url = params.redirect_uri.clone();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!(
        "error={error}&error_description={}&iss={}",
        urlencode(why),
        urlencode(&p.issuer(realm))
    ));
    if let Some(state) = &params.state {
        url.push_str(&format!("&state={}", urlencode(state)));
    }
    Redirect::to(&url).into_response()
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks the request; `Err` is the response to give.
fn check_authorize(
    p: &Provider,
    realm: &str,
    params: &AuthorizeParams,
) -> Result<(), Box<Response>> {
    let r = p.realm(realm)?;
    let Some(client) = r.clients.iter().find(|c| c.client_id == params.client_id) else {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            &format!(
                "no client {:?} is registered with {}",
                params.client_id, r.display_name
            ),
        )));
    };
    if !client
        .redirect_uris
        .iter()
        .any(|u| u == &params.redirect_uri)
    {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            &format!(
                "redirect_uri {:?} is not registered for client {:?}",
                params.redirect_uri, params.client_id
            ),
        )));
    }
    if params.response_type != "code" {
        return Err(Box::new(redirect_error(
            p,
            realm,
            params,
            "unsupported_response_type",
            "only response_type=code is supported",
        )));
    }
    if !params.scope.split(' ').any(|s| s == "openid") {
        return Err(Box::new(redirect_error(
            p,
            realm,
            params,
            "invalid_scope",
            "the scope must include openid",
        )));
    }
    if params.code_challenge_method != "S256" || params.code_challenge.len() != 43 {
        return Err(Box::new(redirect_error(
            p,
            realm,
            params,
            "invalid_request",
            "PKCE is required: code_challenge (43 characters) with code_challenge_method=S256 (RFC 7636)",
        )));
    }
    Ok(())
}

const LOGIN_CSS: &str = "body{font:16px system-ui,sans-serif;background:#f4f5f7;margin:0}main{max-width:380px;margin:10vh auto;background:#fff;padding:28px 32px;border-radius:10px;box-shadow:0 2px 10px #0002}h1{font-size:20px;margin:0 0 4px}p.sub{color:#555;margin:0 0 18px;font-size:14px}label{display:block;margin:12px 0 4px;font-size:14px}input{width:100%;box-sizing:border-box;padding:8px;font-size:15px;border:1px solid #bbb;border-radius:6px}button{margin-top:18px;width:100%;padding:10px;font-size:15px;background:#1f4fa3;color:#fff;border:0;border-radius:6px;cursor:pointer}.err{color:#a11;background:#fde8e8;padding:8px;border-radius:6px;font-size:14px}.dev{margin-top:18px;color:#8a5a00;font-size:12px}";

fn login_page(realm: &RealmConfig, params: &AuthorizeParams, error: Option<&str>) -> Response {
    let hidden = [
        ("response_type", params.response_type.as_str()),
        ("client_id", &params.client_id),
        ("redirect_uri", &params.redirect_uri),
        ("scope", &params.scope),
        ("state", params.state.as_deref().unwrap_or("")),
        ("nonce", params.nonce.as_deref().unwrap_or("")),
        ("code_challenge", &params.code_challenge),
        ("code_challenge_method", &params.code_challenge_method),
    ]
    .iter()
    .map(|(k, v)| format!("<input type=hidden name=\"{k}\" value=\"{}\">", escape(v)))
    .collect::<String>();
    let error = error
        .map(|e| format!("<p class=err role=alert>{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content=\"width=device-width\"><title>Sign in to {name}</title><style>{LOGIN_CSS}</style><main><h1>Sign in to {name}</h1><p class=sub>to continue to {client}</p>{error}<form method=post>{hidden}<label for=username>Username</label><input id=username name=username autocomplete=username required autofocus><label for=password>Password</label><input id=password name=password type=password autocomplete=current-password required><button type=submit>Sign in</button></form><p class=dev>Conclave's development identity provider — for demos and tests only.</p></main></html>",
        name = escape(&realm.display_name),
        client = escape(&params.client_id),
    );
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    (
        status,
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(body),
    )
        .into_response()
}

async fn authorize_form(
    State(p): St,
    Path(realm): Path<String>,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    if let Err(e) = check_authorize(&p, &realm, &params) {
        return *e;
    }
    let r = p.realms.get(&realm).expect("checked");
    login_page(r, &params, None)
}

async fn authorize_login(
    State(p): St,
    Path(realm): Path<String>,
    Form(params): Form<AuthorizeParams>,
) -> Response {
    if let Err(e) = check_authorize(&p, &realm, &params) {
        return *e;
    }
    let r = p.realms.get(&realm).expect("checked");
    let (username, password) = (
        params.username.clone().unwrap_or_default(),
        params.password.clone().unwrap_or_default(),
    );
    let user = r.users.iter().find(|u| u.username == username);
    // Compare against something even for an unknown user, so both take as long.
    let ok =
        same_secret(user.map_or("\u{0}", |u| u.password.as_str()), &password) && user.is_some();
    let Some(user) = user.filter(|_| ok) else {
        tracing::info!(
            realm,
            username,
            "sign-in refused: wrong username or password"
        );
        return login_page(r, &params, Some("Wrong username or password."));
    };
    let code = random_token();
    let mut codes = p.codes.lock().expect("codes lock");
    let t = std::time::Instant::now();
    codes.retain(|_, c| c.expires > t);
    codes.insert(
        code.clone(),
        PendingCode {
            realm: realm.clone(),
            client_id: params.client_id.clone(),
            redirect_uri: params.redirect_uri.clone(),
            username: user.username.clone(),
            nonce: params.nonce.clone().filter(|n| !n.is_empty()),
            scope: params.scope.clone(),
            code_challenge: params.code_challenge.clone(),
            expires: t + CODE_LIFETIME,
        },
    );
    tracing::info!(
        realm,
        username = user.username,
        client = params.client_id,
        "signed in"
    );
    let mut url = params.redirect_uri.clone();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("code={code}&iss={}", urlencode(&p.issuer(&realm))));
    if let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) {
        url.push_str(&format!("&state={}", urlencode(state)));
    }
    Redirect::to(&url).into_response()
}

#[derive(Debug, Default, serde::Deserialize)]
struct TokenParams {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    code_verifier: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    /// RFC 8707 resource indicator: the API the access token is for (the realm's audience or
    /// one of its clients' audiences).
    #[serde(default)]
    resource: Option<String>,
}

/// RFC 6749 §5.2 error.
fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `client_secret_basic` (RFC 6749 §2.3.1: form-urlencoded id and secret, then base64).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let decode = |s: &str| -> Option<String> {
        let mut out = Vec::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    };
    Some((decode(id)?, decode(secret)?))
}

async fn token(
    State(p): St,
    Path(realm): Path<String>,
    headers: HeaderMap,
    Form(params): Form<TokenParams>,
) -> Response {
    let r = match p.realm(&realm) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    // Who is asking (RFC 6749 §2.3): Basic, or client_id (+ client_secret) in the body.
    let (client_id, secret) = match basic_credentials(&headers) {
        Some((id, secret)) => (id, Some(secret)),
        None => match &params.client_id {
            Some(id) => (id.clone(), params.client_secret.clone()),
            None => {
                return token_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "no client authentication",
                );
            }
        },
    };
    let Some(client) = r.clients.iter().find(|c| c.client_id == client_id) else {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    };
    match (&client.secret, &secret) {
        (Some(want), Some(got)) if same_secret(want, got) => {}
        (Some(_), _) => {
            return token_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
        (None, Some(_)) => {
            return token_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "a public client has no secret",
            );
        }
        (None, None) => {}
    }
    // The access token's audience: the resource asked for (RFC 8707), else the client's own API,
    // else the realm's.
    let audiences: Vec<&str> = std::iter::once(r.audience.as_str())
        .chain(r.clients.iter().filter_map(|c| c.audience.as_deref()))
        .collect();
    let audience = match params.resource.as_deref() {
        Some(res) if audiences.contains(&res) => res.to_string(),
        Some(res) => {
            return token_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                &format!("resource {res:?} is not an API of this realm"),
            );
        }
        None => client
            .audience
            .clone()
            .unwrap_or_else(|| r.audience.clone()),
    };
    match params.grant_type.as_str() {
        "authorization_code" => {
            let pending = p.codes.lock().expect("codes lock").remove(&params.code);
            let Some(c) = pending.filter(|c| c.expires > std::time::Instant::now()) else {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the code is unknown, used or expired",
                );
            };
            if c.realm != realm || c.client_id != client_id || c.redirect_uri != params.redirect_uri
            {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the code was issued to another client or redirect_uri",
                );
            }
            // RFC 7636 §4.6: BASE64URL(SHA256(code_verifier)) == code_challenge.
            let v = &params.code_verifier;
            let verifier_ok = (43..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            let computed = b64url(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes()).as_ref(),
            );
            if !verifier_ok || !same_secret(&computed, &c.code_challenge) {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the PKCE code_verifier does not match the code_challenge",
                );
            }
            let Some(user) = r.users.iter().find(|u| u.username == c.username) else {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the user no longer exists",
                );
            };
            let profile = json!({
                "name": user.name, "preferred_username": user.username,
                "email": user.email, "roles": user.roles,
            });
            let access = p.access_token(
                r,
                &audience,
                &user.username,
                &client_id,
                &c.scope,
                profile.clone(),
            );
            let t = now();
            let mut id_claims = json!({
                "iss": p.issuer(&realm), "sub": user.username, "aud": client_id,
                "iat": t, "exp": t + r.token_lifetime_secs, "auth_time": t,
            });
            if let Some(nonce) = &c.nonce {
                id_claims["nonce"] = json!(nonce);
            }
            if let (Some(o), Value::Object(extra)) = (id_claims.as_object_mut(), profile) {
                o.extend(extra);
            }
            let id_token = p.sign(&realm, "JWT", &id_claims);
            (
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(json!({
                    "access_token": access, "token_type": "Bearer",
                    "expires_in": r.token_lifetime_secs, "id_token": id_token, "scope": c.scope,
                })),
            )
                .into_response()
        }
        "client_credentials" => {
            if client.secret.is_none() {
                return token_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized_client",
                    "only a confidential client may use client_credentials",
                );
            }
            let scope = params.scope.clone().unwrap_or_default();
            let access = p.access_token(
                r,
                &audience,
                &client_id,
                &client_id,
                &scope,
                json!({"roles": client.roles}),
            );
            (
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(json!({
                    "access_token": access, "token_type": "Bearer",
                    "expires_in": r.token_lifetime_secs, "scope": scope,
                })),
            )
                .into_response()
        }
        other => token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!(
                "grant_type {other:?} is not supported (authorization_code, client_credentials)"
            ),
        ),
    }
}
