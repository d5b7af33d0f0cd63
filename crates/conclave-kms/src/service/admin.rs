//! Administration: principals (who may call the vault, and who is an admin) and grants (what a
//! principal other than a key's owner may do with it). Every change is audited in the write
//! that makes it.

use super::*;

impl Vault {
    /// `POST /principals/{name}` (admin only): a new principal, or a new token for an existing
    /// one; returns the bearer token, of which the vault keeps only the SHA-256.
    pub fn add_principal(&self, actor: &str, name: &str, admin: bool) -> VResult<String> {
        if !api::valid_name(name) {
            return Err(VaultError::bad(
                "principal names are 1-127 letters, digits and dashes",
            ));
        }
        let token = new_token();
        let p = Principal {
            name: name.into(),
            token_sha256: sha256_hex(token.as_bytes()),
            admin,
        };
        self.store.put_principal(
            &p,
            AuditEvent::new(actor, "principal", None, "ok")
                .detail(json!({"principal": name, "admin": admin})),
        )?;
        Ok(token)
    }

    /// Refuses (and audits) a principal that is not an admin.
    pub(super) fn require_admin(&self, who: &Principal) -> VResult<()> {
        if who.admin {
            return Ok(());
        }
        Err(self.deny(
            who,
            "principal",
            "-",
            "only a vault admin may add principals",
        ))
    }

    /// `GET /keys/{name}/grants` (owner only).
    pub(super) fn list_grants(&self, who: &Principal, name: &str) -> VResult<api::GrantList> {
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("grants", "see its grants"),
            Manager::OwnerOnly,
        )?;
        Ok(api::GrantList {
            owner: rec.owner,
            value: self.store.grants(name)?,
        })
    }

    /// `PUT /keys/{name}/grants/{principal}` (owner only): replaces the principal's grant.
    pub(super) fn put_grant(
        &self,
        who: &Principal,
        name: &str,
        principal: &str,
        req: GrantRequest,
    ) -> VResult<Grant> {
        if !api::valid_name(principal) {
            return Err(VaultError::bad(
                "principal names are 1-127 letters, digits and dashes",
            ));
        }
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("grant", "grant access to it"),
            Manager::OwnerOnly,
        )?;
        let grant = Grant {
            principal: principal.to_string(),
            permissions: req.permissions.into_iter().collect(),
        };
        self.store.put_grant(
            name,
            &grant,
            AuditEvent::new(&who.name, "grant", Some(name), "ok")
                .detail(serde_json::to_value(&grant).map_err(VaultError::internal)?),
        )?;
        Ok(grant)
    }

    /// `DELETE /keys/{name}/grants/{principal}` (owner only); 404 when there is no such grant.
    pub(super) fn revoke_grant(&self, who: &Principal, name: &str, principal: &str) -> VResult<()> {
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("revoke", "revoke access to it"),
            Manager::OwnerOnly,
        )?;
        let event = AuditEvent::new(&who.name, "revoke", Some(name), "ok")
            .detail(json!({ "principal": principal }));
        if self.store.delete_grant(name, principal, event)?.0 {
            Ok(())
        } else {
            Err(VaultError::not_found(&format!(
                "grant of key {name} to {principal}"
            )))
        }
    }
}
