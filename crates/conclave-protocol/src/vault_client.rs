//! A client for a Conclave (or Azure) key vault, and the TEE-side opening of a released key.

use aws_lc_rs::rsa::PrivateDecryptingKey;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use serde_json::Value;

use crate::keywrap::{self, WrapAlgorithm};
use crate::vault::{
    AuditBundle, AuditPage, AuditVerifierKey, AzureError, BackupKeyResult, CreateKeyRequest,
    DeletedKeyBundle, DeletedKeyListResult, Grant, GrantList, GrantRequest, KeyBundle,
    KeyListResult, KeyOperationResult, KeyOperationsParameters, KeyReleasePayload,
    KeyRestoreParameters, KeyRotationPolicy, KeyTransferBlob, Permission, PrincipalCreated,
    PrincipalRequest, PrivacyBudget, PrivacyBudgetParameters, ReleaseRequest, ReleaseResponse,
    UpdateKeyRequest,
};

/// API version sent with every request (the vault accepts any).
pub const API_VERSION: &str = "7.4";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the vault at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the vault refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the vault's answer is malformed: {0}")]
    Malformed(String),
    #[error("the released key does not open: {0}")]
    Open(String),
}

impl ClientError {
    /// The vault's reason for a refusal, as shown to users.
    pub fn reason(&self) -> String {
        match self {
            ClientError::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

#[derive(Clone)]
pub struct VaultClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl VaultClient {
    pub fn new(http: reqwest::Client, base: &str, token: &str) -> Self {
        VaultClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request: `body` as JSON, the answer parsed as `T` (`None` for an empty answer), a
    /// refusal in Azure's error shape as [`ClientError::Refused`].
    /// `DELETE {path}`, whose answer (if any) is not needed.
    async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call::<serde::de::IgnoredAny>(reqwest::Method::DELETE, path, NO_BODY)
            .await
            .map(|_| ())
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl serde::Serialize + ?Sized)>,
    ) -> Result<Option<T>, ClientError> {
        let url = format!("{}{path}", self.base);
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut req = self
            .http
            .request(method, format!("{url}{sep}api-version={API_VERSION}"))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            detail: e.to_string(),
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Malformed(e.to_string()))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ClientError::Malformed(format!("{path}: {e}")));
        }
        let (code, message) = match serde_json::from_slice::<AzureError>(&bytes) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => ("Unknown".into(), "no reason given".into()),
        };
        Err(ClientError::Refused {
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// A request whose answer has a body.
    async fn answer<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl serde::Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        self.call(method, path, body)
            .await?
            .ok_or_else(|| ClientError::Malformed(format!("{path}: empty answer")))
    }

    /// `POST /keys/{name}/create`.
    pub async fn create_key(
        &self,
        name: &str,
        req: &CreateKeyRequest,
    ) -> Result<KeyBundle, ClientError> {
        self.answer(
            reqwest::Method::POST,
            &format!("/keys/{name}/create"),
            Some(req),
        )
        .await
    }

    /// `POST /keys/{name}/rotate`: a new version; answers its bundle.
    pub async fn rotate_key(&self, name: &str) -> Result<KeyBundle, ClientError> {
        self.answer(
            reqwest::Method::POST,
            &format!("/keys/{name}/rotate"),
            NO_BODY,
        )
        .await
    }

    /// `POST /keys/{name}/{version}/rewrap`: `wrapped` (an AES key wrapped under `version`
    /// with RSA-OAEP-256) re-wrapped under the key's latest version; answers (the latest
    /// version's kid, the new wrapped bytes).
    pub async fn rewrap(
        &self,
        name: &str,
        version: &str,
        wrapped: &[u8],
    ) -> Result<(String, Vec<u8>), ClientError> {
        let req = KeyOperationsParameters {
            alg: "RSA-OAEP-256".into(),
            value: crate::b64::b64url(wrapped),
        };
        let answer: KeyOperationResult = self
            .answer(
                reqwest::Method::POST,
                &format!("/keys/{name}/{version}/rewrap"),
                Some(&req),
            )
            .await?;
        let value = crate::b64::b64url_decode(&answer.value).map_err(|_| {
            ClientError::Malformed("the rewrap answer's value is not base64url".into())
        })?;
        Ok((answer.kid, value))
    }

    /// `GET /keys/{name}/rotationpolicy`.
    pub async fn get_rotation_policy(&self, name: &str) -> Result<KeyRotationPolicy, ClientError> {
        self.answer(
            reqwest::Method::GET,
            &format!("/keys/{name}/rotationpolicy"),
            NO_BODY,
        )
        .await
    }

    /// `PUT /keys/{name}/rotationpolicy` (Azure's KeyRotationPolicy document).
    pub async fn put_rotation_policy(
        &self,
        name: &str,
        doc: &KeyRotationPolicy,
    ) -> Result<KeyRotationPolicy, ClientError> {
        self.answer(
            reqwest::Method::PUT,
            &format!("/keys/{name}/rotationpolicy"),
            Some(doc),
        )
        .await
    }

    /// `GET /keys/{name}/privacybudget`: the key's privacy-budget ledger (404 when none is set).
    pub async fn get_privacy_budget(&self, name: &str) -> Result<PrivacyBudget, ClientError> {
        self.answer(
            reqwest::Method::GET,
            &format!("/keys/{name}/privacybudget"),
            NO_BODY,
        )
        .await
    }

    /// `PUT /keys/{name}/privacybudget` (owner only): sets the key's total ε.
    pub async fn put_privacy_budget(
        &self,
        name: &str,
        total_epsilon: f64,
    ) -> Result<PrivacyBudget, ClientError> {
        self.answer(
            reqwest::Method::PUT,
            &format!("/keys/{name}/privacybudget"),
            Some(&PrivacyBudgetParameters { total_epsilon }),
        )
        .await
    }

    /// `POST /keys/{name}/backup`: the backup blob (base64url text), restorable only into a
    /// vault of the same security domain.
    pub async fn backup_key(&self, name: &str) -> Result<String, ClientError> {
        let answer: BackupKeyResult = self
            .answer(
                reqwest::Method::POST,
                &format!("/keys/{name}/backup"),
                NO_BODY,
            )
            .await?;
        Ok(answer.value)
    }

    /// `POST /keys/restore`: restores a backup; answers the restored key's bundle.
    pub async fn restore_key(&self, backup: &str) -> Result<KeyBundle, ClientError> {
        let req = KeyRestoreParameters {
            value: backup.trim().to_string(),
        };
        self.answer(reqwest::Method::POST, "/keys/restore", Some(&req))
            .await
    }

    /// `GET /keys`: the keys the caller may see.
    pub async fn list_keys(&self) -> Result<KeyListResult, ClientError> {
        self.answer(reqwest::Method::GET, "/keys", NO_BODY).await
    }

    /// `GET /keys/{name}/versions`: oldest first.
    pub async fn versions(&self, name: &str) -> Result<KeyListResult, ClientError> {
        self.answer(
            reqwest::Method::GET,
            &format!("/keys/{name}/versions"),
            NO_BODY,
        )
        .await
    }

    /// `GET /keys/{name}`: the latest version.
    pub async fn get_key(&self, name: &str) -> Result<KeyBundle, ClientError> {
        self.answer(reqwest::Method::GET, &format!("/keys/{name}"), NO_BODY)
            .await
    }

    /// `PATCH /keys/{name}/{version}`.
    pub async fn update_key(
        &self,
        name: &str,
        version: &str,
        req: &UpdateKeyRequest,
    ) -> Result<KeyBundle, ClientError> {
        self.answer(
            reqwest::Method::PATCH,
            &format!("/keys/{name}/{version}"),
            Some(req),
        )
        .await
    }

    /// `DELETE /keys/{name}`: soft delete.
    pub async fn delete_key(&self, name: &str) -> Result<DeletedKeyBundle, ClientError> {
        self.answer(reqwest::Method::DELETE, &format!("/keys/{name}"), NO_BODY)
            .await
    }

    /// `GET /deletedkeys`.
    pub async fn deleted_keys(&self) -> Result<DeletedKeyListResult, ClientError> {
        self.answer(reqwest::Method::GET, "/deletedkeys", NO_BODY)
            .await
    }

    /// `POST /deletedkeys/{name}/recover`.
    pub async fn recover_deleted(&self, name: &str) -> Result<KeyBundle, ClientError> {
        self.answer(
            reqwest::Method::POST,
            &format!("/deletedkeys/{name}/recover"),
            NO_BODY,
        )
        .await
    }

    /// `DELETE /deletedkeys/{name}`: erases a deleted key for good (refused with purge
    /// protection on).
    pub async fn purge_deleted(&self, name: &str) -> Result<(), ClientError> {
        self.delete(&format!("/deletedkeys/{name}")).await
    }

    /// `PUT /keys/{name}/grants/{principal}`.
    pub async fn grant(
        &self,
        name: &str,
        principal: &str,
        permissions: &[Permission],
    ) -> Result<Grant, ClientError> {
        let body = GrantRequest {
            permissions: permissions.to_vec(),
        };
        self.answer(
            reqwest::Method::PUT,
            &format!("/keys/{name}/grants/{principal}"),
            Some(&body),
        )
        .await
    }

    /// `DELETE /keys/{name}/grants/{principal}`.
    pub async fn revoke(&self, name: &str, principal: &str) -> Result<(), ClientError> {
        self.delete(&format!("/keys/{name}/grants/{principal}"))
            .await
    }

    /// `GET /keys/{name}/grants` (owner only).
    pub async fn grants(&self, name: &str) -> Result<GrantList, ClientError> {
        self.answer(
            reqwest::Method::GET,
            &format!("/keys/{name}/grants"),
            NO_BODY,
        )
        .await
    }

    /// `POST /keys/{name}/release`: the latest version; answers the signed release (JWS).
    pub async fn release(&self, name: &str, req: &ReleaseRequest) -> Result<String, ClientError> {
        self.release_version(name, None, req).await
    }

    /// `POST /keys/{name}/{version}/release`, or the latest version's without `version`.
    pub async fn release_version(
        &self,
        name: &str,
        version: Option<&str>,
        req: &ReleaseRequest,
    ) -> Result<String, ClientError> {
        let path = match version {
            Some(v) => format!("/keys/{name}/{v}/release"),
            None => format!("/keys/{name}/release"),
        };
        let answer: ReleaseResponse = self.answer(reqwest::Method::POST, &path, Some(req)).await?;
        Ok(answer.value)
    }

    /// `GET /audit/proofs`: the caller's audit entries from `from` with inclusion proofs against
    /// a signed checkpoint, and with `since` (an earlier checkpoint's size) a consistency proof.
    pub async fn audit_proofs(
        &self,
        from: u64,
        since: Option<u64>,
    ) -> Result<AuditBundle, ClientError> {
        let mut path = format!("/audit/proofs?from={from}&limit=1000");
        if let Some(s) = since {
            path.push_str(&format!("&since={s}"));
        }
        self.answer(reqwest::Method::GET, &path, NO_BODY).await
    }

    /// `GET /audit/key`: the verifier key of the vault's audit checkpoints.
    pub async fn audit_verifier_key(&self) -> Result<String, ClientError> {
        let answer: AuditVerifierKey = self
            .answer(reqwest::Method::GET, "/audit/key", NO_BODY)
            .await?;
        Ok(answer.verifier_key)
    }

    /// `GET /audit`: the entries from `from` the caller may see.
    pub async fn audit(&self, from: u64) -> Result<AuditPage, ClientError> {
        self.answer(
            reqwest::Method::GET,
            &format!("/audit?from={from}"),
            NO_BODY,
        )
        .await
    }

    /// `POST /principals/{name}` (admin only): the new principal's bearer token.
    pub async fn add_principal(&self, name: &str, admin: bool) -> Result<String, ClientError> {
        let answer: PrincipalCreated = self
            .answer(
                reqwest::Method::POST,
                &format!("/principals/{name}"),
                Some(&PrincipalRequest { admin }),
            )
            .await?;
        Ok(answer.token)
    }
}

/// No request body.
const NO_BODY: Option<&()> = None;

/// A key opened inside the TEE.
pub struct ReleasedKey {
    /// The key's id (`https://<vault>/keys/<name>/<version>`).
    pub kid: String,
    /// The private key.
    pub key: PrivateDecryptingKey,
}

/// `id-kp-documentSigning` (RFC 9336, 1.3.6.1.5.5.7.3.36), DER content octets: a release
/// signing certificate with an extended key usage must allow it (one for TLS servers only, say,
/// does not sign releases).
const EKU_DOCUMENT_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x24];

/// Certificate signature algorithms accepted on a release signing chain.
const SIGNATURE_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ED25519,
];

/// Validates the release's `x5c` chain (leaf first) to `vault_ca` at `now` with RFC 5280 path
/// validation (rustls-webpki): signatures, validity periods, CA basic constraints and key usage
/// of every certificate on the path, and the leaf's extended key usage when it has one.
pub fn verify_signing_chain(
    chain: &[Vec<u8>],
    vault_ca: &conclave_pki::Cert,
    now: UnixTime,
) -> Result<(), ClientError> {
    let open_err = |m: String| ClientError::Open(m);
    let ca = CertificateDer::from(vault_ca.der.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&ca)
        .map_err(|e| open_err(format!("the vault CA certificate is not usable: {e}")))?;
    let leaf = chain.first().ok_or_else(|| open_err("empty x5c".into()))?;
    let leaf = CertificateDer::from(leaf.as_slice());
    let end_entity = webpki::EndEntityCert::try_from(&leaf).map_err(|e| {
        open_err(format!(
            "the release's signing certificate does not parse: {e}"
        ))
    })?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    end_entity
        .verify_for_usage(
            SIGNATURE_ALGORITHMS,
            &[anchor],
            &intermediates,
            now,
            webpki::KeyUsage::required_if_present(EKU_DOCUMENT_SIGNING),
            None,
            None,
        )
        .map_err(|e| {
            open_err(format!(
                "the release's signing certificate does not chain to the vault's CA as a signing certificate: {e}"
            ))
        })?;
    Ok(())
}

/// Checks a release JWS (RS256 by a certificate whose chain validates to `vault_ca`), and
/// unwraps the key it carries with the TEE's private key.
pub fn open_release(
    jws: &str,
    vault_ca: &conclave_pki::Cert,
    tee_key: &PrivateDecryptingKey,
) -> Result<ReleasedKey, ClientError> {
    let open_err = |m: &str| ClientError::Open(m.to_string());
    let header = jsonwebtoken::decode_header(jws).map_err(|e| ClientError::Open(e.to_string()))?;
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(open_err("the release is not signed with RS256"));
    }
    let x5c = header
        .x5c
        .ok_or_else(|| open_err("the release carries no x5c certificate chain"))?;
    let chain = x5c
        .iter()
        .map(|c| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| open_err("x5c is not base64"))?;
    let leaf_der = chain.first().ok_or_else(|| open_err("empty x5c"))?;
    verify_signing_chain(&chain, vault_ca, UnixTime::now())?;
    let leaf = conclave_pki::Cert::parse("vault signing certificate", leaf_der)
        .map_err(|e| ClientError::Open(e.to_string()))?;
    let (n, e) = conclave_pki::x509::parse_rsa_spki(&leaf.spki_der())
        .map_err(|e| ClientError::Open(e.to_string()))?;
    let key = jsonwebtoken::DecodingKey::from_rsa_raw_components(&n, &e);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.set_required_spec_claims::<&str>(&[]);
    let payload = jsonwebtoken::decode::<Value>(jws, &key, &validation)
        .map_err(|_| open_err("the release's signature does not verify"))?
        .claims;
    crate::jws::check_critical_headers(jws)
        .map_err(|e| ClientError::Open(format!("the release is refused: {e}")))?;
    let payload: KeyReleasePayload = serde_json::from_value(payload)
        .map_err(|e| ClientError::Open(format!("the release's payload is malformed: {e}")))?;
    let k = payload.response.key.key;
    let key_hsm =
        crate::b64::b64url_decode(k.key_hsm.as_deref().ok_or_else(|| open_err("no key_hsm"))?)
            .map_err(|_| open_err("key_hsm is not base64url"))?;
    let blob: KeyTransferBlob = serde_json::from_slice(&key_hsm)
        .map_err(|_| open_err("key_hsm is not the transfer-blob JSON"))?;
    let enc = WrapAlgorithm::parse(&blob.header.enc)
        .ok_or_else(|| open_err("key_hsm names no supported wrapping"))?;
    let wrapped = crate::b64::b64url_decode(&blob.ciphertext)
        .map_err(|_| open_err("key_hsm ciphertext is not base64url"))?;
    let kid = k.kid;
    let pkcs8 =
        keywrap::unwrap(&wrapped, tee_key, enc).map_err(|e| ClientError::Open(e.to_string()))?;
    let key = PrivateDecryptingKey::from_pkcs8(&pkcs8)
        .map_err(|_| open_err("the unwrapped key is not an RSA PKCS#8 key"))?;
    Ok(ReleasedKey { kid, key })
}
