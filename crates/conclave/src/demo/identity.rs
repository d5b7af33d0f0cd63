//! Who signs in where: the demo's users, one identity-provider realm per party with its clients,
//! and the portal's own access tokens.

use super::*;

pub(super) fn workload_client(party: &str) -> String {
    format!("conclave-{party}-workload")
}

pub(super) fn workload_audience(party: &str) -> String {
    format!("api://conclave-{party}-workload")
}

/// The portal's client id in every realm (a confidential client with no role).
pub(super) const PORTAL_CLIENT: &str = "conclave-demo-portal";

/// A public client for scripts and tests: authorization code + PKCE, redirect to loopback.
pub(super) const CLI_CLIENT: &str = "conclave-cli";

pub(super) const CLI_REDIRECT: &str = "http://127.0.0.1/callback";

pub(super) fn random_secret() -> String {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; 18];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    conclave_attest::api::b64url(&bytes)
}

/// The demo's users (kept in `<state>/idp/users.json`, 0600, so passwords survive a restart):
/// a member of each party, and Woodgrove's analyst.
pub(super) fn demo_users(state: &Path) -> anyhow::Result<Vec<SignIn>> {
    let path = state.join("idp").join("users.json");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(users) = serde_json::from_slice::<Vec<SignIn>>(&bytes)
    {
        return Ok(users);
    }
    std::fs::create_dir_all(state.join("idp"))?;
    let mut users = Vec::new();
    for p in PARTIES.iter() {
        users.push(SignIn {
            party: p.party.name().into(),
            username: format!("{}-member", p.party.name()),
            password: random_secret(),
            roles: vec!["member".into()],
        });
    }
    let partner = PARTIES[analyst()].party.name();
    users.push(SignIn {
        party: partner.into(),
        username: format!("{partner}-analyst"),
        password: random_secret(),
        roles: vec!["analyst".into()],
    });
    write_secret(&path, &serde_json::to_string_pretty(&users)?)?;
    Ok(users)
}

/// The client id and API audience of a workload that is not the party's genuine one (the
/// tampered workload, the snooper): registered apart, so that what a user's sign-in there
/// gives it (its tokens) is never accepted by the genuine workload.
pub(super) fn other_client(party: &str, which: &str) -> (String, String) {
    (
        format!("conclave-{party}-{which}-workload"),
        format!("api://conclave-{party}-{which}-workload"),
    )
}

/// One realm per party: its workload as a public client (for Woodgrove also the tampered
/// workload and the snooper, each as its own client with its own API audience), the portal,
/// the CLI client, and the party's users.
pub(super) fn idp_config(
    ports: &Ports,
    users: &[SignIn],
    portal_secret: &str,
) -> conclave_idp::Config {
    let workload =
        |client_id: String, port: u16, audience: Option<String>| conclave_idp::ClientConfig {
            client_id,
            redirect_uris: vec![format!("https://127.0.0.1:{port}/auth/callback")],
            secret: None,
            roles: Vec::new(),
            audience,
        };
    let realms = PARTIES
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (id, name) = (p.party.name(), p.name);
            let mut clients = vec![workload(workload_client(id), ports.workload[i], None)];
            if p.analyst {
                for (which, port) in [("tampered", ports.tampered), ("snooper", ports.snooper)] {
                    let (client_id, audience) = other_client(id, which);
                    clients.push(workload(client_id, port, Some(audience)));
                }
            }
            conclave_idp::RealmConfig {
                name: id.into(),
                display_name: name.to_string(),
                audience: workload_audience(id),
                token_lifetime_secs: conclave_idp::DEFAULT_TOKEN_LIFETIME_SECS,
                clients: clients
                    .into_iter()
                    .chain([
                        conclave_idp::ClientConfig {
                            client_id: PORTAL_CLIENT.into(),
                            redirect_uris: Vec::new(),
                            secret: Some(portal_secret.into()),
                            roles: Vec::new(),
                            audience: None,
                        },
                        conclave_idp::ClientConfig {
                            client_id: CLI_CLIENT.into(),
                            redirect_uris: vec![CLI_REDIRECT.into()],
                            secret: None,
                            roles: Vec::new(),
                            audience: None,
                        },
                    ])
                    .collect(),
                users: users
                    .iter()
                    .filter(|u| u.party == id)
                    .map(|u| conclave_idp::UserConfig {
                        username: u.username.clone(),
                        password: u.password.clone(),
                        name: format!("{} ({name})", u.username),
                        email: None,
                        roles: u.roles.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    conclave_idp::Config { realms }
}

/// The portal's access tokens (client credentials), one per realm, renewed a minute before
/// they expire.
pub(super) struct PortalTokens {
    pub(super) http: reqwest::Client,
    pub(super) idp: String,
    pub(super) secret: String,
    pub(super) cached: Mutex<BTreeMap<(String, String), (String, Instant)>>,
}

impl PortalTokens {
    pub(super) fn new(http: reqwest::Client, idp: &str, secret: &str) -> Self {
        PortalTokens {
            http,
            idp: idp.to_string(),
            secret: secret.to_string(),
            cached: Mutex::default(),
        }
    }

    /// A token from `realm` for the API `audience` (RFC 8707 `resource`).
    pub(super) async fn token(&self, realm: &str, audience: &str) -> anyhow::Result<String> {
        let key = (realm.to_string(), audience.to_string());
        if let Some((token, until)) = self.cached.lock().expect("token lock").get(&key)
            && *until > Instant::now()
        {
            return Ok(token.clone());
        }
        let response: Value = self
            .http
            .post(format!("{}/{realm}/token", self.idp))
            .basic_auth(PORTAL_CLIENT, Some(&self.secret))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&resource={}",
                form_encode(audience)
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = response["access_token"]
            .as_str()
            .context("the identity provider returned no access token")?
            .to_string();
        let lifetime = response["expires_in"].as_u64().unwrap_or(60).max(61);
        self.cached.lock().expect("token lock").insert(
            key,
            (
                token.clone(),
                Instant::now() + Duration::from_secs(lifetime - 60),
            ),
        );
        Ok(token)
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub(super) fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
