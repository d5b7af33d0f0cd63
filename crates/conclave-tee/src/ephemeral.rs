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
    pub fn public_jwk(&self) -> conclave_protocol::jwk::Jwk {
        let public = self.key.public_key();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let (n, e) = public_components(&public);
        conclave_protocol::jwk::Jwk {
            kid: Some(TEE_KEY_ID.into()),
            kty: "RSA".into(),
            key_ops: Some(vec!["encrypt".into()]),
            n: Some(b64(&n)),
            e: Some(b64(&e)),
            ..Default::default()
        }
    }

    /// The runtime JSON a workload attests with: `{"keys": [<public JWK>]}`.
    pub fn runtime_json(&self) -> Vec<u8> {
        conclave_protocol::runtime::RuntimeClaims {
            keys: vec![self.public_jwk()],
            tls: Default::default(),
        }
        .to_json()
    }
}

fn public_components(public: &aws_lc_rs::rsa::PublicEncryptingKey) -> (Vec<u8>, Vec<u8>) {
    use aws_lc_rs::encoding::AsDer as _;
    let spki = public.as_der().expect("public key encodes");
    conclave_pki::x509::parse_rsa_spki(spki.as_ref()).expect("an RSA key's own SPKI parses")
}
