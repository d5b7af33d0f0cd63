//! Who may use a workload: its party's users, signed in with OpenID Connect against the party's
//! own identity provider (authorization code flow with PKCE, through the `openidconnect` crate),
//! and API clients with bearer access tokens from the same provider (JWTs, RFC 9068, checked
//! against the provider's published keys, issuer and audience).
//!
//! Roles come from a claim of the user's token (`roles` by default, as Microsoft Entra ID puts
//! app roles): a **member** sees the party's own records; an **analyst** runs analyses and sees
//! their results. Any authenticated principal of the provider sees the workload's status.
//! Nothing but health, readiness, the attestation evidence and the sign-in endpoints answers
//! without one. The provider's identity is part of the workload's launch config, so it is
//! measured: a workload pointed at another provider has another measurement and gets no key.
//!
//! Browser sessions are held in memory (a restarted workload has new keys anyway): a random
//! 256-bit id in a `__Host-` cookie (Secure, HttpOnly, SameSite=Lax), only its SHA-256 kept;
//! state-changing requests made with a session must come from the workload's own origin.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use conclave_protocol::token::TokenVerifier;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _,
};
use serde_json::Value;

/// Prefix of the session cookie's name (RFC 6265bis `__Host-` prefix: Secure, Path=/, no
/// Domain). The name ends with the workload's port: cookies are scoped by host, not port, so
/// workloads sharing a host name (the demo's) would otherwise overwrite each other's.
pub const SESSION_COOKIE_PREFIX: &str = "__Host-conclave-session-";
/// How long a browser session lasts after sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Prefix of the cookie that ties a sign-in in progress to the browser that started it (its
/// name ends with the port, as the session cookie's does).
pub const LOGIN_COOKIE_PREFIX: &str = "__Host-conclave-login-";
/// How long a started sign-in may take to come back.
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(600);
/// Sign-ins in progress kept at most (older ones are dropped first).
const MAX_PENDING: usize = 10_000;
/// Longest `next` (the page to return to after sign-in) kept.
const MAX_NEXT: usize = 512;
/// How long the provider's discovered metadata (endpoints and signing keys) is used before it
/// is fetched again, so a key the provider rotates out stops being trusted.
const METADATA_LIFETIME: Duration = Duration::from_secs(600);

/// A client built from discovered metadata: authorization endpoint set, token and user-info
/// endpoints as the provider published them.
type ProviderClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// The `[auth]` section of the party config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The party's OpenID Connect provider: its issuer identifier (discovery at
    /// `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    /// This workload's client id at the provider.
    pub client_id: String,
    /// File holding the client secret, for a confidential client; without it the workload is a
    /// public client and PKCE alone protects the code exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// The URL users reach the workload at; the redirect URI is `{public_url}/auth/callback`.
    /// Default: `https://{listen}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// The `aud` API clients' bearer tokens must carry.
    pub audience: String,
    /// The claim that lists the user's roles.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// The role value that makes a user a member of the party (sees its records).
    #[serde(default = "default_member_role")]
    pub member_role: String,
    /// The role value that makes a user an analyst (runs analyses, sees results).
    #[serde(default = "default_analyst_role")]
    pub analyst_role: String,
}

fn default_roles_claim() -> String {
    "roles".into()
}
fn default_member_role() -> String {
    "member".into()
}
fn default_analyst_role() -> String {
    "analyst".into()
}

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Analyst,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Analyst => "analyst",
        }
    }
}

/// An authenticated user or API client.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Principal {
    /// `sub` at the provider.
    pub subject: String,
    /// A name to show and log (`preferred_username`, `name` or `sub`).
    pub name: String,
    pub roles: Vec<Role>,
    /// `session` (signed in with a browser) or `bearer` (an API client's token).
    pub via: &'static str,
}

impl Principal {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn role_names(&self) -> String {
        if self.roles.is_empty() {
            "no role".into()
        } else {
            self.roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this workload has no identity provider configured ([auth] in its party config): nothing but health and attestation evidence is served"
    )]
    NotConfigured,
    #[error(
        "not signed in: sign in at /auth/login, or send a bearer token from {issuer} for {audience}"
    )]
    Missing { issuer: String, audience: String },
    #[error("the bearer token is not accepted: {0}")]
    BadBearer(String),
    #[error("the session has expired or is unknown: sign in again at /auth/login")]
    SessionExpired,
    #[error("the identity provider {issuer} cannot be used: {detail}")]
    Provider { issuer: String, detail: String },
    #[error("sign-in failed: {0}")]
    Login(String),
}

struct PendingLogin {
    /// SHA-256 of the login cookie given to the browser that started this sign-in.
    browser: String,
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    next: String,
    started: Instant,
}

struct Session {
    principal: Principal,
    expires: Instant,
}

/// The workload's side of sign-in.
pub struct Authenticator {
    config: AuthConfig,
    cookie_name: String,
    redirect_url: RedirectUrl,
    client_secret: Option<String>,
    http: OidcHttp,
    metadata: tokio::sync::Mutex<Option<(CoreProviderMetadata, Instant)>>,
    bearer: TokenVerifier,
    pending: Mutex<HashMap<String, PendingLogin>>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// The workload's reqwest client, as the `openidconnect` crate's HTTP client (it follows no
/// redirects, as an OAuth client must not).
struct OidcHttp(reqwest::Client);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl<'c> openidconnect::AsyncHttpClient<'c> for OidcHttp {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let response = self
                .0
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpError(crate::endpoint::error_chain(&e)))?;
            let mut builder = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = response
                .bytes()
                .await
                .map_err(|e| HttpError(e.to_string()))?;
            builder
                .body(body.to_vec())
                .map_err(|e| HttpError(e.to_string()))
        })
    }
}

/// `next` if it is a plain path on this workload, else `/`: never a URL a browser would take
/// to another origin (`//host`, `/\\host`, control characters), never longer than
/// [`MAX_NEXT`].
pub fn local_path(next: &str) -> String {
    let plain = next.len() <= MAX_NEXT
        && next.starts_with('/')
        && !next.starts_with("//")
        && next
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~%?=&+".contains(&b));
    if plain {
        next.to_string()
    } else {
        "/".to_string()
    }
}

fn random_id() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn session_key(id: &str) -> String {
    hex_digest(id.as_bytes())
}

fn hex_digest(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The claims of a JWT whose signature was already checked.
fn payload(jwt: &str) -> Option<Value> {
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Authenticator {
    /// `http` must trust the provider's TLS certificate; `listen` gives the default public URL.
    pub fn new(
        config: AuthConfig,
        http: reqwest::ClientBuilder,
        listen: std::net::SocketAddr,
    ) -> Result<Self, AuthError> {
        let provider_err = |detail: String| AuthError::Provider {
            issuer: config.issuer.clone(),
            detail,
        };
        let client_secret = match &config.client_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        provider_err(format!("the client secret file {}: {e}", path.display()))
                    })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let public = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("https://{listen}"));
        let port = public
            .trim_end_matches('/')
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap_or(443);
        let http = http
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| provider_err(e.to_string()))?;
        let bearer = TokenVerifier::for_issuer(&config.issuer, http.clone())
            .with_algorithms(&[
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::Algorithm::PS256,
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::Algorithm::ES384,
            ])
            .with_audience(&config.audience)
            .with_jwks_anywhere();
        Ok(Authenticator {
            cookie_name: format!("{SESSION_COOKIE_PREFIX}{port}"),
            redirect_url: RedirectUrl::new(format!(
                "{}/auth/callback",
                public.trim_end_matches('/')
            ))
            .map_err(|e| provider_err(format!("the redirect URI from {public:?}: {e}")))?,
            client_secret,
            http: OidcHttp(http),
            metadata: tokio::sync::Mutex::new(None),
            bearer,
            pending: Mutex::default(),
            sessions: Mutex::default(),
            config,
        })
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The name of the cookie that ties a sign-in in progress to its browser.
    pub fn login_cookie_name(&self) -> String {
        self.cookie_name
            .replacen(SESSION_COOKIE_PREFIX, LOGIN_COOKIE_PREFIX, 1)
    }

    /// The provider's metadata, discovered when none is held, when it is older than
    /// [`METADATA_LIFETIME`], or when `refresh` asks (an ID token named a key it lacks).
    async fn metadata(&self, refresh: bool) -> Result<CoreProviderMetadata, AuthError> {
        let mut cached = self.metadata.lock().await;
        if let Some((m, at)) = &*cached
            && !refresh
            && at.elapsed() < METADATA_LIFETIME
        {
            return Ok(m.clone());
        }
        let issuer =
            IssuerUrl::new(self.config.issuer.clone()).map_err(|e| AuthError::Provider {
                issuer: self.config.issuer.clone(),
                detail: format!("not a URL: {e}"),
            })?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| AuthError::Provider {
                issuer: self.config.issuer.clone(),
                detail: format!("discovery failed: {}", crate::endpoint::error_chain(&e)),
            })?;
        *cached = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    fn roles_of(&self, claims: &Value) -> Vec<Role> {
        let mut roles = Vec::new();
        let listed: Vec<&str> = match &claims[&self.config.roles_claim] {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            Value::String(s) => s.split(' ').collect(),
            _ => Vec::new(),
        };
        if listed.contains(&self.config.member_role.as_str()) {
            roles.push(Role::Member);
        }
        if listed.contains(&self.config.analyst_role.as_str()) {
            roles.push(Role::Analyst);
        }
        roles
    }

    fn principal(&self, claims: &Value, via: &'static str) -> Principal {
        let subject = claims["sub"].as_str().unwrap_or_default().to_string();
        let name = ["preferred_username", "name"]
            .iter()
            .find_map(|c| claims[*c].as_str())
            .unwrap_or(&subject)
            .to_string();
        Principal {
            subject,
            name,
            roles: self.roles_of(claims),
            via,
        }
    }

    /// This workload as a client of the provider `metadata` describes.
    fn client(&self, metadata: CoreProviderMetadata) -> ProviderClient {
        CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect_url.clone())
    }

    /// Starts a sign-in: the provider's authorization URL to send the browser to, and the value
    /// of the login cookie to give that browser (the callback must come back with it). `next`
    /// is where to go afterwards: a path on this workload (anything else goes to `/`).
    pub async fn login_url(&self, next: &str) -> Result<(String, String), AuthError> {
        let metadata = self.metadata(false).await?;
        let client = self.client(metadata);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        let next = local_path(next);
        let browser = random_id();
        let mut pending = self.pending.lock().expect("pending lock");
        pending.retain(|_, p| p.started.elapsed() < LOGIN_LIFETIME);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(
            state.secret().clone(),
            PendingLogin {
                browser: session_key(&browser),
                verifier,
                nonce,
                next,
                started: Instant::now(),
            },
        );
        Ok((url.to_string(), browser))
    }

    /// Finishes a sign-in: checks it comes back to the browser that started it (`browser`: its
    /// login cookie), exchanges the code (with the PKCE verifier), verifies the ID token
    /// (signature, issuer, audience, expiry, nonce) and opens a session. Returns the session id
    /// (for the cookie), the principal and where to go next.
    pub async fn finish_login(
        &self,
        code: &str,
        state: &str,
        browser: Option<&str>,
    ) -> Result<(String, Principal, String), AuthError> {
        let pending = {
            let mut all = self.pending.lock().expect("pending lock");
            let same_browser = all.get(state).is_some_and(|p| {
                browser.is_some_and(|b| {
                    aws_lc_rs::constant_time::verify_slices_are_equal(
                        session_key(b).as_bytes(),
                        p.browser.as_bytes(),
                    )
                    .is_ok()
                })
            });
            if !same_browser {
                return Err(AuthError::Login(
                    "this sign-in was not started by this browser, or is unknown or too old: start again at /auth/login".into(),
                ));
            }
            all.remove(state)
                .filter(|p| p.started.elapsed() < LOGIN_LIFETIME)
                .ok_or_else(|| {
                    AuthError::Login(
                        "this sign-in took too long: start again at /auth/login".into(),
                    )
                })?
        };
        let metadata = self.metadata(false).await?;
        let client = self.client(metadata);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| AuthError::Login(e.to_string()))?
            .set_pkce_verifier(pending.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| {
                AuthError::Login(format!(
                    "the code exchange failed: {}",
                    crate::endpoint::error_chain(&e)
                ))
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| AuthError::Login("the provider returned no ID token".into()))?;
        if let Err(e) = id_token.claims(&client.id_token_verifier(), &pending.nonce) {
            // A key the cached metadata lacks (the provider rotated its keys): discover again,
            // once, and check with the keys published now.
            let fresh = self.metadata(true).await?;
            let client = self.client(fresh);
            id_token
                .claims(&client.id_token_verifier(), &pending.nonce)
                .map_err(|_| AuthError::Login(format!("the ID token is not valid: {e}")))?;
        }
        // Verified above: the same compact JWS, read for the claims the core type leaves out.
        let claims = payload(&id_token.to_string())
            .ok_or_else(|| AuthError::Login("the ID token is unreadable".into()))?;
        let principal = self.principal(&claims, "session");
        let id = random_id();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            session_key(&id),
            Session {
                principal: principal.clone(),
                expires: now + SESSION_LIFETIME,
            },
        );
        Ok((id, principal, pending.next))
    }

    /// Ends a session.
    pub fn logout(&self, session_id: &str) -> Option<Principal> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .remove(&session_key(session_id))
            .map(|s| s.principal)
    }

    /// The principal a session id belongs to.
    pub fn session(&self, session_id: &str) -> Result<Principal, AuthError> {
        let sessions = self.sessions.lock().expect("sessions lock");
        match sessions.get(&session_key(session_id)) {
            Some(s) if s.expires > Instant::now() => Ok(s.principal.clone()),
            _ => Err(AuthError::SessionExpired),
        }
    }

    /// The principal a bearer access token belongs to. An ID token (it carries a `nonce`, or
    /// is for this workload's client id) is not an access token and is refused.
    pub async fn bearer(&self, token: &str) -> Result<Principal, AuthError> {
        let verified = self
            .bearer
            .verify(token)
            .await
            .map_err(|e| AuthError::BadBearer(e.to_string()))?;
        if verified.claims.get("nonce").is_some() {
            return Err(AuthError::BadBearer(
                "this is an ID token (it carries a nonce), not an access token".into(),
            ));
        }
        Ok(self.principal(&verified.claims, "bearer"))
    }

    pub fn missing(&self) -> AuthError {
        AuthError::Missing {
            issuer: self.config.issuer.clone(),
            audience: self.config.audience.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn after_sign_in_only_plain_local_paths() {
        for ok in ["/", "/api/status", "/?q=a%20b&x=1"] {
            assert_eq!(local_path(ok), ok);
        }
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\u{0}",
            "evil",
            "",
            &format!("/{}", "a".repeat(600)),
        ] {
            assert_eq!(local_path(bad), "/", "{bad:?}");
        }
    }
}
