//! Who is asking and what they may do: bearer tokens to principals (only their SHA-256 is
//! stored), ownership and grants, and the audited refusals.

use super::*;

/// What [`Vault::add_first_admin`] did.
#[derive(Debug)]
pub enum FirstAdmin {
    /// The vault already had an admin; nothing changed.
    Exists,
    /// The first admin was made, with the token returned here, or with the operator's token
    /// hash (`None`).
    Made { token: Option<String> },
}

/// Reads an admin token's SHA-256 as an operator gives it (`--admin-token-sha256`, what
/// `conclave kms admin-token` printed): surrounding space is ignored and hex digits may be of
/// either case; the result is 64 lowercase hex digits, the form the store keeps.
///
/// # Errors
/// A message naming what is expected, when the input is not 64 hex digits.
pub fn parse_admin_token_sha256(input: &str) -> Result<String, &'static str> {
    let hash = input.trim().to_ascii_lowercase();
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash)
    } else {
        Err(
            "the admin token's SHA-256 must be 64 hex digits, the SHA-256 that conclave kms admin-token printed",
        )
    }
}

impl Vault {
    /// Makes the vault's first admin unless one exists (see [`Store::put_first_admin`]).
    ///
    /// With `token_sha256` (64 lowercase hex digits: the SHA-256 of a token the operator made
    /// and keeps, e.g. with `conclave kms admin-token`), the vault stores that hash and makes no
    /// token; otherwise it makes one and returns it, once.
    pub fn add_first_admin(&self, token_sha256: Option<&str>) -> VResult<FirstAdmin> {
        let (token, hash) = match token_sha256 {
            Some(hash) => (
                None,
                parse_admin_token_sha256(hash).map_err(VaultError::bad)?,
            ),
            None => {
                let token = new_token();
                let hash = sha256_hex(token.as_bytes());
                (Some(token), hash)
            }
        };
        let p = Principal {
            name: "admin".into(),
            token_sha256: hash,
            admin: true,
        };
        let from_operator = token.is_none();
        let event = AuditEvent::new("setup", "principal", None, "ok").detail(
            json!({"principal": "admin", "admin": true, "token": if from_operator { "operator" } else { "generated" }}),
        );
        Ok(if self.store.put_first_admin(&p, event)? {
            FirstAdmin::Made { token }
        } else {
            FirstAdmin::Exists
        })
    }

    pub(super) fn challenge(&self, message: &str) -> VaultError {
        let url = &self.config.vault_url;
        VaultError {
            challenge: Some(format!(
                r#"Bearer authorization="{url}/oauth2/authorize", resource="{url}""#
            )),
            ..VaultError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
        }
    }

    /// The SHA-256 (hex) of the request's bearer token.
    pub(super) fn bearer_hash(&self, headers: &HeaderMap) -> VResult<String> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(
                self.challenge("this request needs a bearer token (Authorization: Bearer <token>)")
            );
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| self.challenge("the Authorization header is not a bearer token"))?;
        Ok(sha256_hex(token.as_bytes()))
    }

    /// 401 for a token no principal has, audited.
    pub(super) fn unknown_token(&self) -> VaultError {
        // The audit entry says what the caller was told.
        let message = "the bearer token is not valid for this vault";
        let _ = self
            .store
            .audit(AuditEvent::new("anonymous", "authenticate", None, "denied").reason(message));
        self.challenge(message)
    }

    pub(super) fn authenticate(&self, headers: &HeaderMap) -> VResult<Principal> {
        let hash = self.bearer_hash(headers)?;
        self.store
            .principal_by_token_hash(&hash)?
            .ok_or_else(|| self.unknown_token())
    }

    /// [`authenticate`](Self::authenticate) and [`key_or_404`](Self::key_or_404) in one read
    /// (one database round trip): the key's record is the caller's to see only once it is
    /// authenticated, so an unknown token gets 401 whether or not the key exists.
    pub(super) fn authenticate_with_key(
        &self,
        headers: &HeaderMap,
        name: &str,
        version: Option<&str>,
    ) -> VResult<(Principal, VResult<KeyRecord>)> {
        let hash = self.bearer_hash(headers)?;
        if !api::valid_name(name) || version.is_some_and(|v| !api::valid_version(v)) {
            // Names are checked after authentication, as key_or_404 does.
            let who = self.authenticate(headers)?;
            return Ok((who, self.key_or_404(name, version)));
        }
        let (who, rec) = self.store.principal_and_key(&hash, name, version)?;
        let who = who.ok_or_else(|| self.unknown_token())?;
        Ok((
            who,
            rec.ok_or_else(|| VaultError::not_found(&format!("key {name}"))),
        ))
    }

    pub(crate) fn permitted(
        &self,
        who: &Principal,
        rec: &KeyRecord,
        perm: Permission,
    ) -> VResult<bool> {
        if rec.owner == who.name {
            return Ok(true);
        }
        let grant = self.store.grant(&rec.name, &who.name)?;
        Ok(grant.is_some_and(|g| {
            g.permissions.contains(&perm)
                || (perm == Permission::Get && g.permissions.contains(&Permission::Release))
        }))
    }

    /// Refuses (403, audited as `action`) anyone but the key's owner, or with
    /// [`Manager::OwnerOrAdmin`] an admin too; `verb` says what was refused ("rotate it").
    pub(super) fn require_owner(
        &self,
        who: &Principal,
        owner: &str,
        name: &str,
        (action, verb): (&str, &str),
        may: Manager,
    ) -> VResult<()> {
        let admin_ok = matches!(may, Manager::OwnerOrAdmin);
        if owner == who.name || (admin_ok && who.admin) {
            return Ok(());
        }
        let whom = if admin_ok {
            "only the key's owner or an admin"
        } else {
            "only the key's owner"
        };
        Err(self.deny(
            who,
            action,
            name,
            &format!("{whom} may {verb} (key {name} belongs to {owner})"),
        ))
    }

    pub(super) fn deny(
        &self,
        who: &Principal,
        action: &str,
        key: &str,
        reason: &str,
    ) -> VaultError {
        if let Err(e) = self
            .store
            .audit(AuditEvent::new(&who.name, action, Some(key), "denied").reason(reason))
        {
            return VaultError::from(e);
        }
        VaultError::forbidden(reason.to_string())
    }
}
