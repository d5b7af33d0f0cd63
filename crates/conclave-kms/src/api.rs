//! Wire types of the keys API, shaped as Azure Key Vault's (`7.x` API versions), so Azure's own
//! SDKs talk to a Conclave vault.

use serde_json::{Value, json};

use crate::store::{KeyRecord, StoredPolicy};

pub use conclave_protocol::vault::*;

pub fn policy_json(p: &StoredPolicy) -> Value {
    json!({ "contentType": p.content_type, "data": p.data, "immutable": p.immutable })
}

fn attributes_json(r: &KeyRecord) -> Value {
    let mut a = json!({
        "enabled": r.enabled,
        "created": r.created,
        "updated": r.updated,
        "recoveryLevel": "Purgeable",
        "exportable": r.exportable,
    });
    if let Some(nbf) = r.nbf {
        a["nbf"] = nbf.into();
    }
    if let Some(exp) = r.exp {
        a["exp"] = exp.into();
    }
    a
}

/// The public JSON Web Key of a record.
pub fn jwk_json(vault_url: &str, r: &KeyRecord) -> Value {
    json!({
        "kid": kid(vault_url, &r.name, &r.version),
        "kty": r.kty,
        "key_ops": r.key_ops,
        "n": r.n,
        "e": r.e,
    })
}

/// A KeyBundle: public key, attributes, release policy, tags. Never the private key.
pub fn bundle_json(vault_url: &str, r: &KeyRecord) -> Value {
    let mut b = json!({
        "key": jwk_json(vault_url, r),
        "attributes": attributes_json(r),
        "tags": r.tags,
    });
    if let Some(p) = &r.release_policy {
        b["release_policy"] = policy_json(p);
    }
    b
}

/// A KeyItem, as listings show it.
pub fn item_json(vault_url: &str, r: &KeyRecord) -> Value {
    json!({
        "kid": kid(vault_url, &r.name, &r.version),
        "attributes": attributes_json(r),
        "tags": r.tags,
    })
}
