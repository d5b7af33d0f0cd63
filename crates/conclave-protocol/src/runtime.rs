//! The runtime data a workload binds into its evidence (MAA's `runtimeData` of type `JSON`),
//! which the attestation token carries back as the `x-ms-runtime` claim:
//! `{"keys": [JWK, …], "tls": {"pin-sha256": …}}`. The vault wraps released keys to the RSA key
//! marked for encryption (Azure's secure key release grammar), receipts are checked with the
//! P-256 key, and clients pin the workload's TLS key with `tls`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::jwk::Jwk;

/// The `x-ms-runtime` claim.
pub const RUNTIME_CLAIM: &str = "x-ms-runtime";

/// The key of the TLS pin under `tls`: base64 SHA-256 of the TLS key's SPKI (RFC 7469).
pub const TLS_PIN: &str = "pin-sha256";

/// `{"keys": [...], "tls": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RuntimeClaims {
    pub keys: Vec<Jwk>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tls: BTreeMap<String, String>,
}

impl RuntimeClaims {
    /// The bytes a workload attests with (and hashes into its report data).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("runtime claims serialise")
    }

    /// The `x-ms-runtime` claim of verified token claims; `None` when absent. A key that is not
    /// a JWK object is left out (the others still count), as a key of an unknown type is.
    pub fn from_claims(claims: &Value) -> Option<Self> {
        let runtime = claims.get(RUNTIME_CLAIM)?;
        let keys = runtime
            .get("keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| serde_json::from_value(k.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let tls = runtime
            .get("tls")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default();
        Some(RuntimeClaims { keys, tls })
    }

    /// The TEE's encryption key (modulus, exponent): an RSA JWK usable for encryption, marked
    /// as Azure's secure key release grammar documents the environment key (`key_ops`
    /// containing `encrypt`, or `key_use` `enc`), or with RFC 7517's `use` `enc`. Every mark
    /// the key carries must allow encryption (RFC 7517 §4.3: they must agree), and it must carry
    /// at least one.
    pub fn encryption_key(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.keys.iter().find_map(|k| {
            let marks = [
                k.key_ops
                    .as_ref()
                    .map(|ops| ops.iter().any(|o| o == "encrypt")),
                k.key_use.as_ref().map(|u| u == "enc"),
                k.use_.as_ref().map(|u| u == "enc"),
            ];
            let usable = k.kty == "RSA"
                && marks.iter().any(Option::is_some)
                && marks.iter().flatten().all(|ok| *ok);
            if !usable {
                return None;
            }
            let n = crate::b64::b64url_decode(k.n.as_deref()?).ok()?;
            let e = crate::b64::b64url_decode(k.e.as_deref()?).ok()?;
            Some((n, e))
        })
    }

    /// The uncompressed P-256 point (`04 ‖ x ‖ y`) of the EC key `kid`.
    pub fn p256_key(&self, kid: &str) -> Option<Vec<u8>> {
        let k = self.keys.iter().find(|k| {
            k.kid.as_deref() == Some(kid) && k.kty == "EC" && k.crv.as_deref() == Some("P-256")
        })?;
        let x = crate::b64::b64url_decode(k.x.as_deref()?).ok()?;
        let y = crate::b64::b64url_decode(k.y.as_deref()?).ok()?;
        (x.len() == 32 && y.len() == 32).then(|| [&[4u8][..], &x, &y].concat())
    }

    /// The attested TLS pin (`tls.pin-sha256`).
    pub fn tls_pin(&self) -> Option<&str> {
        self.tls.get(TLS_PIN).map(String::as_str)
    }
}

/// The launch measurement (hex) of verified token claims: `x-ms-sevsnpvm-launchmeasurement`,
/// or, for an Azure confidential VM, the paravisor's under `x-ms-isolation-tee`.
pub fn launch_measurement(claims: &Value) -> Option<&str> {
    claims
        .get("x-ms-sevsnpvm-launchmeasurement")
        .or_else(|| {
            claims
                .get("x-ms-isolation-tee")
                .and_then(|t| t.get("x-ms-sevsnpvm-launchmeasurement"))
        })
        .and_then(Value::as_str)
}

/// The platform claim (`x-conclave-platform`): `sim`, `snp` or `azure-vtpm`.
pub fn platform(claims: &Value) -> Option<&str> {
    claims
        .get(crate::claims::PLATFORM_CLAIM)
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa(marks: Value) -> Value {
        let mut k = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
        for (m, v) in marks.as_object().unwrap() {
            k[m] = v.clone();
        }
        k
    }

    #[test]
    fn the_encryption_key_is_the_rsa_key_every_mark_allows() {
        let pick = |keys: Vec<Value>| {
            RuntimeClaims::from_claims(&json!({"x-ms-runtime": {"keys": keys}}))
                .unwrap()
                .encryption_key()
                .is_some()
        };
        assert!(pick(vec![rsa(json!({"key_ops": ["encrypt"]}))]));
        assert!(pick(vec![rsa(json!({"key_use": "enc"}))]));
        assert!(pick(vec![rsa(json!({"use": "enc"}))]));
        assert!(!pick(vec![rsa(json!({}))]), "no mark");
        assert!(
            !pick(vec![rsa(json!({"use": "enc", "key_ops": ["sign"]}))]),
            "marks that disagree"
        );
        assert!(!pick(vec![json!({"kty": "EC", "use": "enc"})]));
        // A malformed key does not hide a good one.
        assert!(pick(vec![
            json!({"kty": "RSA", "key_ops": "encrypt"}),
            rsa(json!({"key_ops": ["encrypt"]}))
        ]));
        assert!(RuntimeClaims::from_claims(&json!({})).is_none());
    }

    #[test]
    fn measurement_and_pin() {
        let c = json!({"x-ms-isolation-tee": {"x-ms-sevsnpvm-launchmeasurement": "ab"},
                       "x-ms-runtime": {"keys": [], "tls": {"pin-sha256": "p"}}});
        assert_eq!(launch_measurement(&c), Some("ab"));
        assert_eq!(RuntimeClaims::from_claims(&c).unwrap().tls_pin(), Some("p"));
    }
}
