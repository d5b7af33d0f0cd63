//! Wire types of the keys API, shaped as Azure Key Vault's (`7.x` API versions), so Azure's own
//! SDKs talk to a Conclave vault: the shared types of [`conclave_protocol::vault`], and their
//! making from stored records.

use crate::store::{DeletedKey, KeyRecord, StoredPolicy};

pub use conclave_protocol::vault::*;

/// How the vault's keys are recovered once deleted: Azure's `DeletionRecoveryLevel` and the
/// days a deleted key stays recoverable.
#[derive(Debug, Clone, Copy)]
pub struct Recovery {
    pub level: &'static str,
    pub days: u64,
}

pub fn policy_body(p: &StoredPolicy) -> ReleasePolicyBody {
    ReleasePolicyBody {
        content_type: Some(p.content_type.clone()),
        data: Some(p.data.clone()),
        immutable: Some(p.immutable),
    }
}

fn attributes(r: &KeyRecord, recovery: Recovery) -> KeyAttributes {
    KeyAttributes {
        enabled: Some(r.enabled),
        exportable: Some(r.exportable),
        nbf: r.nbf,
        exp: r.exp,
        created: Some(r.created),
        updated: Some(r.updated),
        recovery_level: Some(recovery.level.to_string()),
        recoverable_days: Some(recovery.days),
    }
}

/// The public JSON Web Key of a record.
pub fn jwk(vault_url: &str, r: &KeyRecord) -> JsonWebKey {
    JsonWebKey {
        kid: kid(vault_url, &r.name, &r.version),
        kty: r.kty.clone(),
        key_ops: r.key_ops.clone(),
        n: r.n.clone(),
        e: r.e.clone(),
        key_hsm: None,
    }
}

/// A KeyBundle: public key, attributes, release policy, tags. Never the private key.
pub fn bundle(vault_url: &str, r: &KeyRecord, recovery: Recovery) -> KeyBundle {
    KeyBundle {
        key: jwk(vault_url, r),
        attributes: attributes(r, recovery),
        tags: r.tags.clone(),
        release_policy: r.release_policy.as_ref().map(policy_body),
    }
}

/// A KeyItem, as listings show it.
pub fn item(vault_url: &str, r: &KeyRecord, recovery: Recovery) -> KeyItem {
    KeyItem {
        kid: kid(vault_url, &r.name, &r.version),
        attributes: attributes(r, recovery),
        tags: r.tags.clone(),
    }
}

fn recovery_id(vault_url: &str, d: &DeletedKey) -> String {
    format!("{vault_url}/deletedkeys/{}", d.name)
}

/// A DeletedKeyBundle: the latest version's bundle with `recoveryId`, `deletedDate` and
/// `scheduledPurgeDate` (Unix seconds).
pub fn deleted_bundle(vault_url: &str, d: &DeletedKey, recovery: Recovery) -> DeletedKeyBundle {
    let latest = d.versions.last().expect("a deleted key has a version");
    DeletedKeyBundle {
        bundle: bundle(vault_url, latest, recovery),
        recovery_id: recovery_id(vault_url, d),
        deleted_date: d.deleted,
        scheduled_purge_date: d.scheduled_purge,
    }
}

/// A DeletedKeyItem.
pub fn deleted_item(vault_url: &str, d: &DeletedKey, recovery: Recovery) -> DeletedKeyItem {
    let latest = d.versions.last().expect("a deleted key has a version");
    DeletedKeyItem {
        item: item(vault_url, latest, recovery),
        recovery_id: recovery_id(vault_url, d),
        deleted_date: d.deleted,
        scheduled_purge_date: d.scheduled_purge,
    }
}
