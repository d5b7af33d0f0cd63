//! The TEE's ephemeral encryption key: generated in TEE memory at start, published (public part
//! only) in the runtime data that the report binds, so that a vault can wrap released keys to it.

use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use base64::Engine as _;

/// Key id under which the key appears in `x-ms-runtime.keys`.
pub const TEE_KEY_ID: &str = "TeeEncryptionKey";

/// An RSA-2048 key that exists only in this process's memory.
pub struct EphemeralKey {
    key: PrivateDecryptingKey,
}

impl EphemeralKey {
    pub fn generate() -> Result<Self, crate::TeeError> {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|_| crate::TeeError::Refused("could not generate the TEE key".into()))?;
        Ok(EphemeralKey { key })
    }

    pub fn private_key(&self) -> &PrivateDecryptingKey {
        &self.key
    }

    /// The public key as a JWK with `key_ops: ["encrypt"]`.
    pub fn public_jwk(&self) -> serde_json::Value {
        let public = self.key.public_key();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let (n, e) = public_components(&public);
        serde_json::json!({
            "kid": TEE_KEY_ID,
            "kty": "RSA",
            "key_ops": ["encrypt"],
            "n": b64(&n),
            "e": b64(&e),
        })
    }

    /// The runtime JSON a workload attests with: `{"keys": [<public JWK>]}`.
    pub fn runtime_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": [self.public_jwk()] }))
            .expect("JSON serialises")
    }
}

fn public_components(public: &aws_lc_rs::rsa::PublicEncryptingKey) -> (Vec<u8>, Vec<u8>) {
    use aws_lc_rs::encoding::AsDer as _;
    let spki = public.as_der().expect("public key encodes");
    conclave_pki::x509::parse_rsa_spki(spki.as_ref()).expect("an RSA key's own SPKI parses")
}
