//! Key management in Azure Key Vault's shapes (API version 7.4): create, update, rotate and
//! the rotation policy, back up and restore, soft delete, recover and purge, and Conclave's
//! re-wrap of a dataset's data key to the latest version.

use super::*;

/// A key backup as the vault hands it out (base64url of this JSON): opaque to its holder, who
/// can only restore it into a vault of the same security domain.
#[derive(serde::Serialize, serde::Deserialize)]
struct BackupBlob {
    /// [`BACKUP_FORMAT`] (or [`BACKUP_FORMAT_V1`]).
    format: String,
    /// The security domain's id (`security_domain::vault_id`): which vaults can open it.
    vault: String,
    /// [`BackupContents`] sealed under the master key (AAD: the format), base64url.
    sealed: String,
}

/// What a backup seals: the key's name, every version (oldest first) and its privacy-budget
/// ledger, if its owner set one (a key restored without it would have no budget at all).
#[derive(serde::Serialize, serde::Deserialize)]
struct BackupContents {
    name: String,
    versions: Vec<KeyRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    budget: Option<crate::store::BudgetLedger>,
}

impl Vault {
    pub(super) fn key_or_404(&self, name: &str, version: Option<&str>) -> VResult<KeyRecord> {
        if !api::valid_name(name) || version.is_some_and(|v| !api::valid_version(v)) {
            return Err(VaultError::bad(
                "key names are 1-127 letters, digits and dashes; versions are 32 hex digits",
            ));
        }
        self.store
            .key(name, version)?
            .ok_or_else(|| VaultError::not_found(&format!("key {name}")))
    }

    pub(super) fn parse_policy(body: &ReleasePolicyBody) -> VResult<StoredPolicy> {
        let data = body
            .data
            .as_deref()
            .ok_or_else(|| VaultError::bad("release_policy.data is missing"))?;
        let bytes = conclave_protocol::b64::b64url_decode(data)
            .map_err(|_| VaultError::bad("release_policy.data is not base64url"))?;
        ReleasePolicy::parse(&bytes).map_err(|e| VaultError::bad(e.to_string()))?;
        Ok(StoredPolicy {
            content_type: body
                .content_type
                .clone()
                .unwrap_or_else(|| "application/json; charset=utf-8".into()),
            data: conclave_protocol::b64::b64url(&bytes),
            immutable: body.immutable.unwrap_or(false),
        })
    }

    pub(super) fn create_key(
        &self,
        who: &Principal,
        name: &str,
        req: CreateKeyRequest,
    ) -> VResult<api::KeyBundle> {
        if !api::valid_name(name) {
            return Err(VaultError::bad(
                "key names are 1-127 letters, digits and dashes",
            ));
        }
        if self.store.deleted_key(name)?.is_some() {
            return Err(VaultError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "key {name} is deleted but recoverable: recover it (POST /deletedkeys/{name}/recover) or purge it before creating a key of that name"
                ),
            ));
        }
        if let Some(existing) = self.store.key(name, None)?
            && existing.owner != who.name
        {
            return Err(self.deny(
                who,
                "create",
                name,
                "the key exists and belongs to another principal",
            ));
        }
        let kty = req.kty.unwrap_or_else(|| "RSA".into());
        if kty != "RSA" && kty != "RSA-HSM" {
            return Err(VaultError::bad(format!(
                "kty {kty} is not supported: use RSA or RSA-HSM"
            )));
        }
        if req.public_exponent.is_some_and(|e| e != 65537) {
            return Err(VaultError::bad(
                "only the public exponent 65537 is supported",
            ));
        }
        let attributes = req.attributes.unwrap_or_default();
        let exportable = attributes.exportable.unwrap_or(false);
        let release_policy = req
            .release_policy
            .as_ref()
            .map(Self::parse_policy)
            .transpose()?;
        if exportable != release_policy.is_some() {
            return Err(VaultError::bad(
                "an exportable key needs a release policy, and a release policy needs an exportable key",
            ));
        }
        let size = req.key_size.unwrap_or(2048);
        let new = self.new_key_material(name, size)?;
        let t = now();
        let rec = KeyRecord {
            name: name.into(),
            sealed_private: new.sealed_private,
            version: new.version,
            kty,
            key_size: size,
            key_ops: req
                .key_ops
                .unwrap_or_else(|| api::DEFAULT_KEY_OPS.map(String::from).to_vec()),
            n: new.n,
            e: new.e,
            enabled: attributes.enabled.unwrap_or(true),
            exportable,
            created: t,
            updated: t,
            nbf: attributes.nbf,
            exp: attributes.exp,
            release_policy,
            owner: who.name.clone(),
            tags: req.tags.unwrap_or_default(),
            audit_from: None,
        };
        self.store.create_key(
            &rec,
            AuditEvent::new(&who.name, "create", Some(name), "ok").detail(
                json!({"version": rec.version, "exportable": exportable, "key_size": size}),
            ),
        )?;
        Ok(self.bundle(&rec))
    }

    /// `POST /keys/{name}/backup`: every version of the key, sealed under the master key, so
    /// the blob opens only in a vault of the same security domain (Azure Key Vault's backup
    /// semantics: restorable only within the same geography and subscription). Owner only.
    pub(super) fn backup_key(&self, who: &Principal, name: &str) -> VResult<api::BackupKeyResult> {
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("backup", "back it up"),
            Manager::OwnerOnly,
        )?;
        let contents = BackupContents {
            name: name.to_string(),
            versions: self.store.versions(name)?,
            budget: self.store.budget(name)?,
        };
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(&contents).map_err(VaultError::internal)?);
        let blob = BackupBlob {
            format: BACKUP_FORMAT.to_string(),
            vault: crate::security_domain::vault_id(&self.master),
            sealed: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(self.master.seal(BACKUP_FORMAT.as_bytes(), &plain)),
        };
        self.store.audit(
            AuditEvent::new(&who.name, "backup", Some(name), "ok")
                .detail(json!({"versions": contents.versions.len()})),
        )?;
        Ok(api::BackupKeyResult {
            value: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&blob).map_err(VaultError::internal)?),
        })
    }

    /// `POST /keys/restore` with `{"value": <backup>}`: the key comes back with all its
    /// versions, policies and owner. Refused when the backup comes from another security domain
    /// or a key of that name exists (409, as Azure). The key's owner or an admin restores it.
    pub(super) fn restore_key(
        &self,
        who: &Principal,
        req: &api::KeyRestoreParameters,
    ) -> VResult<api::KeyBundle> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let value = &req.value;
        let blob: BackupBlob = b64
            .decode(value.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|b: &BackupBlob| b.format == BACKUP_FORMAT || b.format == BACKUP_FORMAT_V1)
            .ok_or_else(|| VaultError::bad("value is not a Conclave key backup"))?;
        let vault = crate::security_domain::vault_id(&self.master);
        if blob.vault != vault {
            return Err(self.deny(
                who,
                "restore",
                "-",
                "the backup was made by a vault of another security domain: it restores only into a vault holding the same master key (recover that vault's security domain first)",
            ));
        }
        let sealed = b64
            .decode(&blob.sealed)
            .map_err(|_| VaultError::bad("value is not a Conclave key backup"))?;
        let plain = self
            .master
            .open(blob.format.as_bytes(), &sealed)
            .map_err(|_| VaultError::bad("the backup is damaged: it does not decrypt"))?;
        let backup: BackupContents = serde_json::from_slice(&plain)
            .map_err(|e| VaultError::bad(format!("the backup is damaged: {e}")))?;
        // A v1 backup without a ledger may come from before backups carried one: whether the
        // key had a budget is unknown, so the restore says so (a budget set then must be set
        // again; a zero budget instead would refuse every release of a key used without DP).
        let unknown_budget = blob.format == BACKUP_FORMAT_V1 && backup.budget.is_none();
        let name = backup.name.clone();
        if !api::valid_name(&name)
            || backup.versions.is_empty()
            || backup.versions.iter().any(|r| r.name != name)
        {
            return Err(VaultError::bad(
                "the backup is damaged: inconsistent key names",
            ));
        }
        let owner = backup.versions[0].owner.clone();
        self.require_owner(
            who,
            &owner,
            &name,
            ("restore", "restore it"),
            Manager::OwnerOrAdmin,
        )?;
        if self.store.deleted_key(&name)?.is_some() {
            return Err(VaultError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "key {name} is deleted but recoverable in this vault: recover or purge it first"
                ),
            ));
        }
        let mut detail = json!({"versions": backup.versions.len(), "owner": owner});
        if unknown_budget {
            detail["budget"] = json!(
                "this v1 backup has no privacy budget, and may predate backups that carry one: if the key had a budget, its owner sets it again (conclave key budget)"
            );
        }
        let event = AuditEvent::new(&who.name, "restore", Some(&name), "ok").detail(detail);
        match self
            .store
            .restore_key(&backup.versions, backup.budget.as_ref(), event)?
        {
            Some(_) => {
                let latest = self.key_or_404(&name, None)?;
                Ok(self.bundle(&latest))
            }
            None => {
                let message = format!(
                    "a key named {name} exists in this vault: a backup is restored only under a name that is free"
                );
                let _ = self.store.audit(
                    AuditEvent::new(&who.name, "restore", Some(&name), "denied")
                        .reason(message.clone()),
                );
                Err(VaultError::new(StatusCode::CONFLICT, "Conflict", message))
            }
        }
    }

    /// Fresh RSA key material of `size` bits for a new version of `name`: a random 128-bit
    /// version id (hex), the public part, and the private part sealed under the master key
    /// with `name/version` as AAD.
    pub(super) fn new_key_material(&self, name: &str, size: u32) -> VResult<NewKeyMaterial> {
        let new = crypto::generate_rsa(size).map_err(|e| VaultError::bad(e.to_string()))?;
        let mut version = [0u8; 16];
        SystemRandom::new()
            .fill(&mut version)
            .map_err(VaultError::internal)?;
        let version = hex::encode(version);
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Ok(NewKeyMaterial {
            sealed_private: base64::engine::general_purpose::STANDARD.encode(
                self.master
                    .seal(format!("{name}/{version}").as_bytes(), &new.pkcs8),
            ),
            version,
            n: b64(&new.n),
            e: b64(&new.e),
        })
    }

    /// A new version of `name` with fresh key material and the latest version's settings
    /// (exportable, release policy, operations, tags, owner); with a rotation policy's
    /// `expiryTime`, it expires that long after creation. Audited as `by` (a principal, or
    /// `vault` for a scheduled rotation).
    pub(super) fn rotate(&self, by: &str, name: &str, reason: Option<&str>) -> VResult<KeyRecord> {
        let latest = self.key_or_404(name, None)?;
        let new = self.new_key_material(name, latest.key_size)?;
        let t = now();
        let expiry = self
            .store
            .rotation_policy(name)?
            .and_then(|doc| crate::rotation::RotationPolicy::parse(&doc).ok())
            .and_then(|p| p.expiry);
        let rec = KeyRecord {
            sealed_private: new.sealed_private,
            version: new.version,
            n: new.n,
            e: new.e,
            created: t,
            updated: t,
            nbf: None,
            exp: expiry.map(|e| t + e),
            ..latest
        };
        let mut event =
            AuditEvent::new(by, "rotate", Some(name), "ok").detail(json!({"version": rec.version}));
        if let Some(r) = reason {
            event = event.reason(r);
        }
        self.store.create_key(&rec, event)?;
        Ok(rec)
    }

    /// `POST /keys/{name}/{version}/rewrap` (owner or admin; a Conclave operation, not Azure's):
    /// `{"alg": "RSA-OAEP-256", "value": <base64url>}`, an AES key (a dataset's data key or
    /// key-encryption key) wrapped under `version`, comes back as Azure's KeyOperationResult
    /// `{"kid", "value"}` wrapped under the key's latest version, so a dataset follows a
    /// rotation without its data being re-encrypted or its key ever leaving the vault in the
    /// clear (Azure's unwrapKey would hand it to the caller). Refused when the latest version
    /// is disabled or expired, or when `version`'s release policy is immutable and the
    /// latest's differs (that would move the data from under a policy its owner promised not
    /// to change). Audited.
    pub(super) fn rewrap(
        &self,
        who: &Principal,
        name: &str,
        version: &str,
        req: &api::KeyOperationsParameters,
    ) -> VResult<api::KeyOperationResult> {
        let from = self.key_or_404(name, Some(version))?;
        self.require_owner(
            who,
            &from.owner,
            name,
            ("rewrap", "rewrap data keys under it"),
            Manager::OwnerOrAdmin,
        )?;
        if req.alg != "RSA-OAEP-256" {
            return Err(VaultError::bad(format!(
                "alg must be \"RSA-OAEP-256\" (Parquet's key tools wrap with it), not {:?}",
                req.alg
            )));
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let wrapped = b64
            .decode(req.value.trim_end_matches('='))
            .ok()
            .ok_or_else(|| VaultError::bad("value must be the wrapped key, base64url"))?;
        let to = self.key_or_404(name, None)?;
        let t = now();
        if !to.enabled || to.exp.is_some_and(|exp| exp <= t) || to.nbf.is_some_and(|nbf| nbf > t) {
            return Err(self.deny(
                who,
                "rewrap",
                name,
                &format!(
                    "the latest version {} is disabled or outside its validity period: a dataset moved to it could not be opened",
                    to.version
                ),
            ));
        }
        // Data under an immutable policy moves only to a version whose policy is the same and
        // immutable too (a mutable copy could be changed after the move), and no more exportable.
        if from.release_policy.as_ref().is_some_and(|p| p.immutable)
            && (to.release_policy != from.release_policy || to.exportable != from.exportable)
        {
            return Err(self.deny(
                who,
                "rewrap",
                name,
                &format!(
                    "version {version} has an immutable release policy and the latest version {} does not have the same one, immutable: data under it stays under that policy",
                    to.version
                ),
            ));
        }
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&from.sealed_private)
            .map_err(VaultError::internal)?;
        let pkcs8 = self
            .master
            .open(
                format!("{}/{}", from.name, from.version).as_bytes(),
                &sealed,
            )
            .map_err(VaultError::internal)?;
        let n = b64.decode(&to.n).map_err(VaultError::internal)?;
        let e = b64.decode(&to.e).map_err(VaultError::internal)?;
        // A refusal here is audited by the handler (`rejected`), as every client error is.
        let rewrapped = crypto::rewrap_oaep256(&pkcs8, &wrapped, &n, &e).map_err(|_| {
            VaultError::bad(format!(
                "value does not unwrap with version {version} of {name} to an AES key (16, 24 or 32 bytes, RSA-OAEP-256)"
            ))
        })?;
        drop(pkcs8);
        self.store.audit(
            AuditEvent::new(&who.name, "rewrap", Some(name), "ok")
                .detail(json!({"from": from.version, "to": to.version})),
        )?;
        Ok(api::KeyOperationResult {
            kid: api::kid(&self.config.vault_url, name, &to.version),
            value: b64.encode(rewrapped),
        })
    }

    /// `POST /keys/{name}/rotate` (owner only).
    pub(super) fn rotate_key(&self, who: &Principal, name: &str) -> VResult<api::KeyBundle> {
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("rotate", "rotate it"),
            Manager::OwnerOnly,
        )?;
        let new = self.rotate(&who.name, name, None)?;
        Ok(self.bundle(&new))
    }

    /// `GET /keys/{name}/rotationpolicy`: the key's policy, or Azure's empty default.
    pub(super) fn get_rotation_policy(
        &self,
        who: &Principal,
        name: &str,
    ) -> VResult<api::KeyRotationPolicy> {
        let rec = self.key_or_404(name, None)?;
        if !self.permitted(who, &rec, Permission::Get)? {
            return Err(self.deny(who, "get", name, "no get grant on this key"));
        }
        let id = format!("{}/keys/{name}/rotationpolicy", self.config.vault_url);
        Ok(match self.store.rotation_policy(name)? {
            Some(doc) => doc,
            None => api::KeyRotationPolicy {
                id: Some(id),
                lifetime_actions: Some(Vec::new()),
                attributes: Default::default(),
            },
        })
    }

    /// `PUT /keys/{name}/rotationpolicy` (owner only): validated, stored, audited.
    pub(super) fn put_rotation_policy(
        &self,
        who: &Principal,
        name: &str,
        doc: &api::KeyRotationPolicy,
    ) -> VResult<api::KeyRotationPolicy> {
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("rotation-policy", "set its rotation policy"),
            Manager::OwnerOnly,
        )?;
        let policy = crate::rotation::RotationPolicy::parse(doc).map_err(VaultError::bad)?;
        let t = now();
        let created = self
            .store
            .rotation_policy(name)?
            .and_then(|d| d.attributes.created)
            .unwrap_or(t);
        let id = format!("{}/keys/{name}/rotationpolicy", self.config.vault_url);
        let stored = policy.to_document(&id, created, t);
        self.store.put_rotation_policy(
            name,
            &stored,
            AuditEvent::new(&who.name, "rotation-policy", Some(name), "ok")
                .detail(serde_json::to_value(&stored).expect("JSON")),
        )?;
        Ok(stored)
    }

    /// The answer shape of key `name`'s ledger.
    fn budget_document(&self, name: &str, l: &crate::store::BudgetLedger) -> api::PrivacyBudget {
        let eps = api::epsilon_from_micros;
        api::PrivacyBudget {
            id: format!("{}/keys/{name}/privacybudget", self.config.vault_url),
            total_epsilon: eps(l.total_micros),
            spent_epsilon: eps(l.spent_micros),
            remaining_epsilon: eps(l.remaining_micros()),
            releases: l.releases,
            updated: l.updated,
        }
    }

    /// `GET /keys/{name}/privacybudget` (Conclave's): the key's privacy-budget ledger; 404 when
    /// its owner set none.
    pub(super) fn get_privacy_budget(
        &self,
        who: &Principal,
        name: &str,
    ) -> VResult<api::PrivacyBudget> {
        let rec = self.key_or_404(name, None)?;
        if !self.permitted(who, &rec, Permission::Get)? {
            return Err(self.deny(who, "get", name, "no get grant on this key"));
        }
        match self.store.budget(name)? {
            Some(l) => Ok(self.budget_document(name, &l)),
            None => Err(VaultError::new(
                axum::http::StatusCode::NOT_FOUND,
                "PrivacyBudgetNotFound",
                format!(
                    "key {name} has no privacy budget: its releases are not counted; its owner sets one with `conclave key budget`"
                ),
            )),
        }
    }

    /// `PUT /keys/{name}/privacybudget` (owner only): sets the total ε over all releases of the
    /// key, keeping what is spent; audited.
    pub(super) fn put_privacy_budget(
        &self,
        who: &Principal,
        name: &str,
        params: &api::PrivacyBudgetParameters,
    ) -> VResult<api::PrivacyBudget> {
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("privacy-budget", "set its privacy budget"),
            Manager::OwnerOnly,
        )?;
        let total = params.total_epsilon;
        // 10^6 ε is far beyond any meaningful privacy loss, and keeps millionths within u64.
        if !(total.is_finite() && (0.0..=1e6).contains(&total)) {
            return Err(VaultError::bad(format!(
                "totalEpsilon {total} must be a finite number from 0 to 1000000"
            )));
        }
        // Rounded down: the owner's total is never exceeded.
        let micros = (total * api::EPSILON_MICROS).floor() as u64;
        let ledger = self.store.put_budget(
            name,
            micros,
            now(),
            AuditEvent::new(&who.name, "privacy-budget", Some(name), "ok")
                .detail(serde_json::json!({"totalEpsilon": api::epsilon_from_micros(micros)})),
        )?;
        Ok(self.budget_document(name, &ledger))
    }

    /// Rotates every key whose rotation policy says its latest version is due at `now` (Unix
    /// seconds); the vault runs this every minute. Returns the keys rotated.
    pub fn rotate_due(&self, now: u64) -> Result<Vec<String>, VaultError> {
        let mut rotated = Vec::new();
        for (name, doc) in self.store.rotation_policies()? {
            let Ok(policy) = crate::rotation::RotationPolicy::parse(&doc) else {
                continue;
            };
            let Some(latest) = self.store.key(&name, None)? else {
                continue; // deleted keys are not rotated
            };
            if policy.due(latest.created, now) {
                self.rotate("vault", &name, Some("its rotation policy"))?;
                rotated.push(name);
            }
        }
        Ok(rotated)
    }

    /// A KeyBundle of `rec` as this vault answers it.
    pub(crate) fn bundle(&self, rec: &KeyRecord) -> api::KeyBundle {
        api::bundle(&self.config.vault_url, rec, self.recovery())
    }

    /// A DeletedKeyBundle (Azure 7.4).
    pub(super) fn deleted_bundle(&self, d: &DeletedKey) -> api::DeletedKeyBundle {
        api::deleted_bundle(&self.config.vault_url, d, self.recovery())
    }

    /// How this vault's keys are recovered once deleted.
    pub(crate) fn recovery(&self) -> api::Recovery {
        api::Recovery {
            level: self.recovery_level(),
            days: self.config.deletion.retention.as_secs() / 86_400,
        }
    }

    pub(super) fn recovery_level(&self) -> &'static str {
        if self.config.deletion.purge_protection {
            "Recoverable"
        } else {
            "Recoverable+Purgeable"
        }
    }

    /// A deleted key the caller owns (or, as an admin, may manage); one past its retention is
    /// purged now and is gone.
    pub(super) fn deleted_or_404(
        &self,
        who: &Principal,
        name: &str,
        action: &str,
    ) -> VResult<DeletedKey> {
        if !api::valid_name(name) {
            return Err(VaultError::bad(
                "key names are 1-127 letters, digits and dashes",
            ));
        }
        let d = self
            .store
            .deleted_key(name)?
            .ok_or_else(|| VaultError::not_found(&format!("deleted key {name}")))?;
        if d.scheduled_purge <= now() {
            self.store.purge_key(
                name,
                AuditEvent::new("vault", "purge", Some(name), "ok")
                    .reason("its retention period ended"),
            )?;
            return Err(VaultError::not_found(&format!("deleted key {name}")));
        }
        let owner = d
            .versions
            .last()
            .map(|r| r.owner.as_str())
            .unwrap_or_default();
        self.require_owner(
            who,
            owner,
            name,
            (action, &format!("{action} it")),
            Manager::OwnerOrAdmin,
        )?;
        Ok(d)
    }

    /// `DELETE /keys/{name}`: soft delete (owner or admin).
    pub(super) fn delete_key(&self, who: &Principal, name: &str) -> VResult<api::DeletedKeyBundle> {
        let rec = self.key_or_404(name, None)?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("delete", "delete it"),
            Manager::OwnerOrAdmin,
        )?;
        let t = now();
        let purge = t + self.config.deletion.retention.as_secs();
        let (d, _) = self
            .store
            .delete_key(
                name,
                t,
                purge,
                AuditEvent::new(&who.name, "delete", Some(name), "ok")
                    .detail(json!({"scheduled_purge": purge})),
            )?
            .ok_or_else(|| VaultError::not_found(&format!("key {name}")))?;
        Ok(self.deleted_bundle(&d))
    }

    pub(super) fn recover_deleted(&self, who: &Principal, name: &str) -> VResult<api::KeyBundle> {
        self.deleted_or_404(who, name, "recover")?;
        let d = self
            .store
            .recover_key(
                name,
                AuditEvent::new(&who.name, "recover", Some(name), "ok"),
            )?
            .ok_or_else(|| VaultError::not_found(&format!("deleted key {name}")))?;
        let latest = d.versions.last().expect("a deleted key has a version");
        Ok(self.bundle(latest))
    }

    pub(super) fn purge_deleted(&self, who: &Principal, name: &str) -> VResult<()> {
        let d = self.deleted_or_404(who, name, "purge")?;
        if self.config.deletion.purge_protection {
            return Err(self.deny(
                who,
                "purge",
                name,
                &format!(
                    "purge protection is on: deleted key {name} is kept until its scheduled purge date ({} Unix seconds), and purged then",
                    d.scheduled_purge
                ),
            ));
        }
        self.store
            .purge_key(name, AuditEvent::new(&who.name, "purge", Some(name), "ok"))?;
        Ok(())
    }

    pub(super) fn update_key(
        &self,
        who: &Principal,
        name: &str,
        version: &str,
        req: UpdateKeyRequest,
    ) -> VResult<api::KeyBundle> {
        let mut rec = self.key_or_404(name, Some(version))?;
        self.require_owner(
            who,
            &rec.owner,
            name,
            ("update", "change it"),
            Manager::OwnerOnly,
        )?;
        let mut detail = serde_json::Map::new();
        if let Some(body) = &req.release_policy {
            let new = Self::parse_policy(body)?;
            if let Some(old) = &rec.release_policy
                && old.immutable
                && old != &new
            {
                return Err(self.deny(
                    who,
                    "policy-change",
                    name,
                    "the key's release policy is immutable and cannot be changed",
                ));
            }
            if !rec.exportable {
                return Err(VaultError::bad("a release policy needs an exportable key"));
            }
            detail.insert(
                "release_policy".into(),
                serde_json::to_value(api::policy_body(&new)).expect("JSON"),
            );
            rec.release_policy = Some(new);
        }
        if let Some(a) = req.attributes {
            if let Some(e) = a.enabled {
                rec.enabled = e;
            }
            if a.exportable.is_some_and(|e| e != rec.exportable) {
                return Err(VaultError::bad(
                    "exportable cannot be changed after creation",
                ));
            }
            rec.nbf = a.nbf.or(rec.nbf);
            rec.exp = a.exp.or(rec.exp);
            detail.insert("enabled".into(), rec.enabled.into());
        }
        if let Some(ops) = req.key_ops {
            rec.key_ops = ops;
        }
        if let Some(tags) = req.tags {
            rec.tags = tags;
        }
        rec.updated = now();
        let action = if detail.contains_key("release_policy") {
            "policy-change"
        } else {
            "update"
        };
        self.store.update_key(
            &rec,
            AuditEvent::new(&who.name, action, Some(name), "ok").detail(Value::Object(detail)),
        )?;
        Ok(self.bundle(&rec))
    }
}
