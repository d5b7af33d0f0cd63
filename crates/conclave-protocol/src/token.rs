//! Verifying JWTs against an issuer's published keys: attestation tokens (RS256 only, the
//! default) and, with [`TokenVerifier::with_algorithms`] and [`TokenVerifier::with_audience`],
//! OAuth access tokens (RFC 9068). Keys come from the issuer's published JWKS (found through its
//! OpenID configuration), cached for [`DEFAULT_KEY_LIFETIME`] and refreshed when an unknown `kid`
//! appears or the cache is older than that, so a key the issuer withdraws stops being trusted
//! within the lifetime. Keys given as a fixed JWKS (a file) never expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::jwk::{Jwk, JwkSet, OpenIdConfiguration};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// How long fetched keys are trusted before they are fetched again.
pub const DEFAULT_KEY_LIFETIME: Duration = Duration::from_secs(600);

/// Why a token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted (this verifier accepts {1})")]
    Algorithm(String, String),
    #[error("the token has no kid; cannot pick a verification key")]
    NoKid,
    #[error("no key with kid {0:?} is published by the attestation service")]
    UnknownKid(String),
    #[error("the token signature does not verify with the published key {0:?}")]
    BadSignature(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the token was issued by {found:?}, expected {expected:?}")]
    WrongIssuer { expected: String, found: String },
    #[error("cannot fetch the attestation service's keys: {0}")]
    KeysUnavailable(String),
    #[error("the token does not satisfy the required claims: {0}")]
    Claims(String),
    #[error("the token is refused: {0}")]
    CriticalHeader(String),
    #[error("the token is for {found}, not for {expected:?}")]
    WrongAudience { expected: String, found: String },
}

/// A token whose signature, lifetime and issuer were checked.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub kid: String,
    pub claims: serde_json::Value,
}

impl VerifiedToken {
    pub fn issuer(&self) -> &str {
        self.claims
            .get("iss")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    }
}

enum KeySource {
    Fixed,
    Issuer {
        http: reqwest::Client,
        config_url: String,
    },
    JwksUrl {
        http: reqwest::Client,
        url: String,
    },
}

/// The keys last fetched, and when.
#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

/// The last attempt to fetch keys: when, and why it failed if it did.
type LastRefresh = Option<(Instant, Option<TokenError>)>;

/// Verifies tokens of one issuer.
pub struct TokenVerifier {
    issuer: Option<String>,
    algorithms: Vec<Algorithm>,
    audience: Option<String>,
    /// Whether the issuer's `jwks_uri` must be under the issuer's URL (attestation authorities);
    /// OpenID providers may publish keys elsewhere.
    jwks_under_issuer: bool,
    source: KeySource,
    keys: Mutex<KeyCache>,
    key_lifetime: Duration,
    /// Held across a refresh, so concurrent verifications of a new kid wait for one fetch
    /// instead of finding the rate limit and failing.
    last_refresh: tokio::sync::Mutex<LastRefresh>,
}

/// The verification keys of a JWKS (RFC 7517), by `kid`. An RSA or EC key may give its public
/// key as parameters (`n`/`e`, `crv`/`x`/`y`), as an X.509 certificate chain (`x5c`, RFC 7517
/// §4.7: standard base64 DER, the key's own certificate first), or both. Microsoft Azure
/// Attestation's `GET /certs` publishes `x5c` alone, and Azure's release-policy grammar documents
/// JWKs that way. When both are given they must agree, or the key is not used. Keys without a
/// `kid`, of other types, or that cannot be read are left out (each with the reason, returned
/// beside the keys).
fn keys_from_jwks(jwks: &JwkSet) -> (HashMap<String, DecodingKey>, Vec<String>) {
    let mut keys = HashMap::new();
    let mut skipped = Vec::new();
    for jwk in &jwks.keys {
        let kid = jwk.kid.as_deref().unwrap_or_default();
        match decoding_key(jwk) {
            Ok(Some(key)) if !kid.is_empty() => {
                keys.insert(kid.to_string(), key);
            }
            Ok(Some(_)) => skipped.push("a key without a kid".to_string()),
            Ok(None) => {}
            Err(e) => skipped.push(format!("key {kid:?}: {e}")),
        }
    }
    (keys, skipped)
}

/// One JWK as a verification key; `None` for a key type tokens here are never signed with.
fn decoding_key(jwk: &Jwk) -> Result<Option<DecodingKey>, String> {
    use base64::Engine as _;
    let b64url = |name: &str, member: &Option<String>| -> Result<Option<Vec<u8>>, String> {
        match member {
            None => Ok(None),
            Some(s) => crate::b64::b64url_decode(s)
                .map(Some)
                .map_err(|_| format!("{name} is not base64url")),
        }
    };
    // The key's own certificate: the first of x5c.
    let leaf = match &jwk.x5c {
        None => None,
        Some(chain) => {
            let first = chain
                .first()
                .ok_or("x5c is not a non-empty array of base64 certificates")?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(first)
                .map_err(|_| "x5c[0] is not standard base64 (RFC 7517 §4.7)")?;
            let cert = conclave_pki::Cert::parse("x5c[0]", &der).map_err(|e| e.to_string())?;
            Some(cert)
        }
    };
    let strip = |b: &[u8]| -> Vec<u8> {
        let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
        b[first..].to_vec()
    };
    match jwk.kty.as_str() {
        "RSA" => {
            let given = match (b64url("n", &jwk.n)?, b64url("e", &jwk.e)?) {
                (Some(n), Some(e)) => Some((n, e)),
                (None, None) => None,
                _ => return Err("has one of n and e without the other".into()),
            };
            let certified = match &leaf {
                Some(cert) => Some(
                    conclave_pki::x509::parse_rsa_spki(&cert.spki_der())
                        .map_err(|_| "the x5c certificate's key is not RSA")?,
                ),
                None => None,
            };
            let (n, e) = match (given, certified) {
                (Some((n, e)), Some((cn, ce))) => {
                    if strip(&n) != strip(&cn) || strip(&e) != strip(&ce) {
                        return Err("n/e and the x5c certificate name different keys".into());
                    }
                    (n, e)
                }
                (Some(ne), None) | (None, Some(ne)) => ne,
                (None, None) => return Err("has neither n/e nor x5c".into()),
            };
            Ok(Some(DecodingKey::from_rsa_raw_components(
                &strip(&n),
                &strip(&e),
            )))
        }
        "EC" => {
            let given = match (b64url("x", &jwk.x)?, b64url("y", &jwk.y)?) {
                (Some(x), Some(y)) => Some((x, y)),
                (None, None) => None,
                _ => return Err("has one of x and y without the other".into()),
            };
            // An uncompressed point, 0x04 || x || y (SEC 1 §2.3.3).
            let certified = match &leaf {
                Some(cert) => {
                    let point = cert.public_key_bytes();
                    if point.first() != Some(&4) || point.len() % 2 != 1 {
                        return Err(
                            "the x5c certificate's key is not an uncompressed EC point".into()
                        );
                    }
                    let half = point.len() / 2;
                    Some((point[1..1 + half].to_vec(), point[1 + half..].to_vec()))
                }
                None => None,
            };
            let (x, y) = match (given, certified) {
                (Some(g), Some(c)) if g != c => {
                    return Err("x/y and the x5c certificate name different keys".into());
                }
                (Some(xy), _) | (None, Some(xy)) => xy,
                (None, None) => return Err("has neither x/y nor x5c".into()),
            };
            DecodingKey::from_ec_components(&crate::b64::b64url(&x), &crate::b64::b64url(&y))
                .map(Some)
                .map_err(|e| e.to_string())
        }
        _ => Ok(None),
    }
}

impl TokenVerifier {
    /// Keys from a JWKS document the caller already has (a file, say).
    pub fn with_jwks(issuer: Option<String>, jwks: &JwkSet) -> Self {
        TokenVerifier {
            issuer,
            source: KeySource::Fixed,
            keys: Mutex::new(KeyCache {
                keys: keys_from_jwks(jwks).0,
                fetched: None,
            }),
            key_lifetime: DEFAULT_KEY_LIFETIME,
            last_refresh: tokio::sync::Mutex::new(None),
            algorithms: vec![Algorithm::RS256],
            audience: None,
            jwks_under_issuer: true,
        }
    }

    /// Keys found through `{issuer}/.well-known/openid-configuration`; tokens must name `issuer`.
    pub fn for_issuer(issuer: &str, http: reqwest::Client) -> Self {
        let issuer = issuer.trim_end_matches('/').to_string();
        TokenVerifier {
            source: KeySource::Issuer {
                http,
                config_url: format!("{issuer}/.well-known/openid-configuration"),
            },
            issuer: Some(issuer),
            keys: Mutex::default(),
            key_lifetime: DEFAULT_KEY_LIFETIME,
            last_refresh: tokio::sync::Mutex::new(None),
            algorithms: vec![Algorithm::RS256],
            audience: None,
            jwks_under_issuer: true,
        }
    }

    /// Keys fetched from a JWKS URL directly; any issuer (the caller checks it).
    pub fn for_jwks_url(url: &str, http: reqwest::Client) -> Self {
        TokenVerifier {
            issuer: None,
            source: KeySource::JwksUrl {
                http,
                url: url.to_string(),
            },
            keys: Mutex::default(),
            key_lifetime: DEFAULT_KEY_LIFETIME,
            last_refresh: tokio::sync::Mutex::new(None),
            algorithms: vec![Algorithm::RS256],
            audience: None,
            jwks_under_issuer: true,
        }
    }

    /// Trust fetched keys for `lifetime` (default [`DEFAULT_KEY_LIFETIME`]) before fetching them
    /// again; past it, a verification fetches first and fails if the keys cannot be fetched.
    pub fn with_key_lifetime(mut self, lifetime: Duration) -> Self {
        self.key_lifetime = lifetime;
        self
    }

    /// Accept these signature algorithms instead of RS256 alone (an OAuth provider's access
    /// tokens are often ES256 or PS256). Never accepts `none` or an HMAC algorithm.
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        self.algorithms = algorithms
            .iter()
            .copied()
            .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            .collect();
        self
    }

    /// Also require `aud` to be (or, as an array, contain) `audience` (RFC 7519 §4.1.3).
    pub fn with_audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_string());
        self
    }

    /// Take the keys from wherever the issuer's OpenID configuration (fetched from the issuer
    /// itself, over TLS) says, even outside the issuer's URL: OpenID Connect Discovery 1.0 §3
    /// does not require `jwks_uri` to be under the issuer, and Microsoft Entra ID's is not
    /// (`…/{tenant}/discovery/v2.0/keys` for the issuer `…/{tenant}/v2.0`). Attestation
    /// authorities keep the stricter default.
    pub fn with_jwks_anywhere(mut self) -> Self {
        self.jwks_under_issuer = false;
        self
    }

    fn accepted(&self) -> String {
        self.algorithms
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Also require tokens to name `issuer`.
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.trim_end_matches('/').to_string());
        self
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(
        http: &reqwest::Client,
        url: &str,
    ) -> Result<T, TokenError> {
        let unavailable = |e: reqwest::Error| TokenError::KeysUnavailable(format!("{url}: {e}"));
        let body = http
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(unavailable)?
            .bytes()
            .await
            .map_err(unavailable)?;
        serde_json::from_slice(&body).map_err(|e| {
            TokenError::KeysUnavailable(format!(
                "{url} does not answer the expected document ({}): {e}",
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("JSON")
            ))
        })
    }

    async fn refresh(&self, kid: &str) -> Result<(), TokenError> {
        if matches!(self.source, KeySource::Fixed) {
            return Ok(());
        }
        let mut last = self.last_refresh.lock().await;
        if self.key(kid).is_some() {
            return Ok(()); // another verification fetched it while this one waited
        }
        // An unknown kid fetches at most once per interval, and so does a failing authority;
        // keys past their lifetime are fetched whenever the last fetch succeeded.
        if let Some((at, outcome)) = &*last
            && at.elapsed() < MIN_REFRESH_INTERVAL
        {
            match outcome {
                Some(e) => return Err(e.clone()),
                None if self.cache_fresh() => return Ok(()),
                None => {}
            }
        }
        let outcome = self.fetch_keys().await;
        *last = Some((Instant::now(), outcome.as_ref().err().cloned()));
        let keys = outcome?;
        *self.keys.lock().expect("key cache lock") = KeyCache {
            keys,
            fetched: Some(Instant::now()),
        };
        Ok(())
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>, TokenError> {
        let (http, jwks_url) = match &self.source {
            KeySource::Fixed => {
                return Err(TokenError::KeysUnavailable(
                    "the keys were given as a fixed set; there is nothing to fetch".into(),
                ));
            }
            KeySource::JwksUrl { http, url } => (http, url.clone()),
            KeySource::Issuer { http, config_url } => {
                let config: OpenIdConfiguration = Self::fetch_json(http, config_url).await?;
                let jwks_uri = config.jwks_uri.as_str();
                // Keys must come from the issuer itself, not wherever its configuration points.
                let issuer = self.issuer.as_deref().unwrap_or_default();
                if self.jwks_under_issuer && !jwks_uri.starts_with(&format!("{issuer}/")) {
                    return Err(TokenError::KeysUnavailable(format!(
                        "jwks_uri {jwks_uri} is not under the issuer {issuer}"
                    )));
                }
                (http, jwks_uri.to_string())
            }
        };
        let jwks: JwkSet = Self::fetch_json(http, &jwks_url).await?;
        let (keys, skipped) = keys_from_jwks(&jwks);
        for reason in &skipped {
            tracing::warn!(jwks = %jwks_url, "a published key is not used: {reason}");
        }
        Ok(keys)
    }

    /// Whether the cached keys are within their lifetime (fixed keys always are).
    fn cache_fresh(&self) -> bool {
        let cache = self.keys.lock().expect("key cache lock");
        match (&self.source, cache.fetched) {
            (KeySource::Fixed, _) => true,
            (_, Some(at)) => at.elapsed() < self.key_lifetime,
            (_, None) => false,
        }
    }

    /// The cached key `kid`, unless the cache has outlived the key lifetime.
    fn key(&self, kid: &str) -> Option<DecodingKey> {
        if !self.cache_fresh() {
            return None;
        }
        self.keys
            .lock()
            .expect("key cache lock")
            .keys
            .get(kid)
            .cloned()
    }

    /// Makes sure keys are at hand (fetching them when none are cached or they are past their
    /// lifetime), and says how many: what a readiness check asks of a trusted authority.
    pub async fn ensure_keys(&self) -> Result<usize, TokenError> {
        if !self.cache_fresh() || self.keys.lock().expect("key cache lock").keys.is_empty() {
            // No kid is cached under the empty name, so this fetches (rate-limited as usual).
            self.refresh("").await?;
        }
        let n = self.keys.lock().expect("key cache lock").keys.len();
        if n == 0 {
            return Err(TokenError::KeysUnavailable(
                "the authority publishes no RSA or EC signing key".into(),
            ));
        }
        Ok(n)
    }

    /// Checks signature (RS256 with a published key), `exp`/`nbf` with [`LEEWAY_SECS`] of skew,
    /// and the issuer.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.verify_valid_at(token, None).await
    }

    /// As [`verify`](Self::verify), but checks `exp`/`nbf` at the given time (Unix seconds)
    /// instead of now: was this token valid when something that embeds it was signed?
    pub async fn verify_at(&self, token: &str, at: u64) -> Result<VerifiedToken, TokenError> {
        self.verify_valid_at(token, Some(at)).await
    }

    async fn verify_valid_at(
        &self,
        token: &str,
        at: Option<u64>,
    ) -> Result<VerifiedToken, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            // An algorithm jsonwebtoken does not know ("none", say) fails here.
            if token_alg(token).is_some_and(|alg| !self.accepted().split(", ").any(|a| a == alg)) {
                TokenError::Algorithm(token_alg(token).unwrap_or_default(), self.accepted())
            } else {
                TokenError::Malformed(e.to_string())
            }
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm(
                format!("{:?}", header.alg),
                self.accepted(),
            ));
        }
        let kid = header.kid.ok_or(TokenError::NoKid)?;
        let key = match self.key(&kid) {
            Some(k) => k,
            None => {
                self.refresh(&kid).await?;
                self.key(&kid)
                    .ok_or_else(|| TokenError::UnknownKid(kid.clone()))?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = at.is_none();
        validation.validate_exp = at.is_none();
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iat"]);
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature(kid.clone()),
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::InvalidAlgorithm => {
                        TokenError::Algorithm(format!("{:?}", header.alg), self.accepted())
                    }
                    ErrorKind::MissingRequiredClaim(c) => {
                        TokenError::Claims(format!("missing {c}"))
                    }
                    other => TokenError::Malformed(format!("{other:?}")),
                }
            })?;
        // After the signature: a forged token is refused as forged, not for its header.
        crate::jws::check_critical_headers(token).map_err(TokenError::CriticalHeader)?;
        if let Some(at) = at {
            let claim = |name: &str| data.claims.get(name).and_then(|v| v.as_u64());
            if claim("exp").is_some_and(|exp| at > exp + LEEWAY_SECS) {
                return Err(TokenError::Expired);
            }
            if claim("nbf").is_some_and(|nbf| at + LEEWAY_SECS < nbf) {
                return Err(TokenError::NotYetValid);
            }
        }
        let verified = VerifiedToken {
            kid,
            claims: data.claims,
        };
        if let Some(expected) = &self.audience {
            let aud = &verified.claims["aud"];
            let names = match aud {
                serde_json::Value::String(a) => a == expected,
                serde_json::Value::Array(list) => list.iter().any(|a| a == expected.as_str()),
                _ => false,
            };
            if !names {
                return Err(TokenError::WrongAudience {
                    expected: expected.clone(),
                    found: if aud.is_null() {
                        "no audience".into()
                    } else {
                        aud.to_string()
                    },
                });
            }
        }
        if let Some(expected) = &self.issuer
            && verified.issuer().trim_end_matches('/') != expected
        {
            return Err(TokenError::WrongIssuer {
                expected: expected.clone(),
                found: verified.issuer().to_string(),
            });
        }
        Ok(verified)
    }
}

/// The `alg` a token's header names, read without trusting anything else in it.
fn token_alg(token: &str) -> Option<String> {
    let header = crate::b64::b64url_decode(token.split('.').next()?).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    Some(v.get("alg")?.as_str()?.to_string())
}
