//! Encrypted datasets: Apache Parquet with Parquet Modular Encryption (AES-GCM, footer and every
//! column encrypted) under a fresh data key per file. The data key is wrapped with RSA-OAEP-256
//! under the owner's vault key and stored as the footer's key metadata, in the key-material JSON
//! that PyArrow's and Spark's Parquet encryption use (`PKMT1`, internal storage), so owners can
//! also write and read these files with those tools.
//!
//! Writing needs only the vault key's public part. Reading needs an unwrapper: the private key,
//! which exists in plaintext only in the vault and in an attested TEE.
//!
//! Files written by PyArrow (`pyarrow.parquet.encryption`) are read in each of its modes, or
//! refused with a reason that names the mode:
//!
//! | PyArrow `EncryptionConfiguration` | read? |
//! |---|---|
//! | `uniform_encryption=True` (footer key for footer and every column) | yes |
//! | `column_keys={...}` naming the dataset's vault key | yes |
//! | `column_keys` naming another master key | only the columns under the released key; the others are refused by name |
//! | columns left out of `column_keys` (PyArrow stores them in plaintext) | refused: a column an attacker could have written |
//! | `plaintext_footer=True` (`PAR1` magic; footer signed with the footer key, columns encrypted) | yes; the footer's signature is checked |
//! | `double_wrapping=True` (PyArrow's default: data keys under a KEK, the KEK under the master key) | yes |
//! | `internal_key_material=False` (keys in a separate `_KEY_MATERIAL_FOR_*.json`) | refused |
//! | `encryption_algorithm="AES_GCM_CTR_V1"` | refused (the Parquet reader does not implement AES-CTR pages) |
//!
//! Whether a file is encrypted is decided from its metadata (an encryption algorithm, and
//! crypto metadata on every column read), never from its magic bytes: a `PAR1` file can be
//! encrypted, and a file claiming encryption without an authenticated footer is not.

use std::sync::Arc;

use arrow_array::RecordBatch;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::{FutureExt as _, TryFutureExt as _};
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{
    AsyncFileReader, MetadataSuffixFetch, ParquetRecordBatchStream,
};
use parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;

use crate::store::Location;

/// Rows per row group: small enough that a reader decodes row groups in parallel with little
/// memory, large enough for good compression.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Key(String),
    #[error(
        "the dataset cannot be read: {0} (it may be tampered with, truncated, or need another key)"
    )]
    Parquet(parquet::errors::ParquetError),
    /// A Parquet encryption mode this reader does not read; the message names the mode and what
    /// to write instead.
    #[error("{0}")]
    Unsupported(String),
    /// The file, or a column of it, is not encrypted where an encrypted dataset is required.
    #[error("{0}")]
    NotEncrypted(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("{0}")]
    Input(String),
    #[error("cannot write the dataset to {url}: {detail}")]
    Write { url: String, detail: String },
    /// The Parquet reader panicked on the file (see [`BatchStream`]).
    #[error(
        "the dataset cannot be read: the Parquet reader failed on a malformed structure in it (it may be tampered with or truncated)"
    )]
    ReaderFailed,
}

impl From<parquet::errors::ParquetError> for DataError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        // parquet 60 names the algorithm in its "not yet implemented" error.
        if e.to_string().contains("AES_GCM_CTR_V1") {
            return DataError::Unsupported(
                "the dataset is encrypted with AES_GCM_CTR_V1 (PyArrow encryption_algorithm=\"AES_GCM_CTR_V1\"): \
                 the Parquet reader Conclave uses does not implement AES-CTR pages; write it with \
                 AES_GCM_V1, PyArrow's default"
                    .into(),
            );
        }
        DataError::Parquet(e)
    }
}

/// Runs one step of the Parquet reader, turning a panic inside it into
/// [`DataError::ReaderFailed`]. The reader can panic on some malformed files, found by the `parquet-file`
/// fuzz target: an encrypted module shorter than its 4-byte length and 12-byte nonce underflowed
/// in `RingGcmBlockDecryptor::decrypt` (parquet 60.1); an `ARROW:schema` footer entry whose IPC
/// schema has no `fields` panics in `arrow_ipc::convert::fb_to_schema` (arrow-ipc 59.3), and a file from
/// untrusted storage must give an error, never unwind through the workload.
fn contained<T>(step: impl FnOnce() -> T) -> Result<T, DataError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step))
        .map_err(|_| DataError::ReaderFailed)
}

/// [`contained`] for an async step.
async fn contained_async<T>(
    step: impl std::future::Future<Output = Result<T, DataError>>,
) -> Result<T, DataError> {
    std::panic::AssertUnwindSafe(step)
        .catch_unwind()
        .await
        .unwrap_or(Err(DataError::ReaderFailed))
}

/// A dataset's record batches, decrypted and decoded as they stream from storage. A stream that
/// yields an error ends there (pages are authenticated one by one: discard what came before). A
/// panic of the Parquet reader ends it with [`DataError::ReaderFailed`].
pub struct BatchStream {
    inner: Option<ParquetRecordBatchStream<StoreReader>>,
}

impl futures::Stream for BatchStream {
    type Item = Result<RecordBatch, DataError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = match contained(|| inner.poll_next_unpin(cx)) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Some(Ok(batch)))) => return Poll::Ready(Some(Ok(batch))),
            Ok(Poll::Ready(Some(Err(e)))) => Some(Err(DataError::from(e))),
            Ok(Poll::Ready(None)) => None,
            Err(e) => Some(Err(e)),
        };
        this.inner = None;
        Poll::Ready(polled)
    }
}

/// The key material PyArrow and Spark store in an encrypted Parquet file (`PKMT1`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyMaterial {
    #[serde(rename = "keyMaterialType")]
    pub key_material_type: String,
    #[serde(rename = "internalStorage")]
    pub internal_storage: bool,
    #[serde(rename = "isFooterKey")]
    pub is_footer_key: bool,
    #[serde(
        rename = "kmsInstanceID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kms_instance_id: Option<String>,
    #[serde(
        rename = "kmsInstanceURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kms_instance_url: Option<String>,
    /// The vault key that wraps the data key (its full key id).
    #[serde(rename = "masterKeyID")]
    pub master_key_id: String,
    /// Standard base64 of the wrapped data key.
    #[serde(rename = "wrappedDEK")]
    pub wrapped_dek: String,
    #[serde(rename = "doubleWrapping")]
    pub double_wrapping: bool,
    /// Double wrapping: standard base64 of the 16-byte id of the key-encryption key (KEK). The
    /// data key is AES-GCM-encrypted under the KEK with these id bytes as AAD.
    #[serde(
        rename = "keyEncryptionKeyID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub key_encryption_key_id: Option<String>,
    /// Double wrapping: standard base64 of the KEK wrapped under the master key.
    #[serde(
        rename = "wrappedKEK",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub wrapped_kek: Option<String>,
}

impl KeyMaterial {
    /// Parses a file's key metadata (Apache Parquet's key-material format `PKMT1`, as
    /// parquet-mr's and Arrow C++'s `KeyMaterial` write it). External key material is refused
    /// with the reason; double-wrapped material must name its KEK.
    pub fn parse(bytes: &[u8]) -> Result<Self, DataError> {
        let loose: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            DataError::Key(format!(
                "the file's key metadata is not PKMT1 key material (not JSON: {e})"
            ))
        })?;
        if loose.get("keyMaterialType").and_then(|v| v.as_str()) != Some("PKMT1") {
            return Err(DataError::Key(
                "the file's key metadata is not PKMT1 key material (keyMaterialType is not PKMT1): \
                 it was not written by PyArrow's, Spark's or Conclave's Parquet encryption"
                    .into(),
            ));
        }
        if loose.get("internalStorage").and_then(|v| v.as_bool()) == Some(false) {
            return Err(DataError::Unsupported(
                "external key material is not supported (write with internal key material: \
                 PyArrow internal_key_material=True, the default): this file keeps its wrapped \
                 keys in a separate _KEY_MATERIAL_FOR_<file>.json beside it, which can be lost or \
                 swapped apart from the data"
                    .into(),
            ));
        }
        let m: KeyMaterial = serde_json::from_value(loose).map_err(|e| {
            DataError::Key(format!(
                "the file's key metadata is not PKMT1 key material: {e}"
            ))
        })?;
        if m.double_wrapping && (m.key_encryption_key_id.is_none() || m.wrapped_kek.is_none()) {
            return Err(DataError::Key(
                "double-wrapped key material without keyEncryptionKeyID and wrappedKEK".into(),
            ));
        }
        Ok(m)
    }
}

/// Whether `master_key_id` (a file's `masterKeyID`) names the vault key `kid`
/// (`https://<vault>/keys/<name>/<version>`): the full id, the id without its version, or the
/// bare key name. PyArrow cannot put an id with `:` in `column_keys`, so column keys name vault
/// keys by name; a wrong guess only fails to unwrap (RSA-OAEP and AES-GCM both authenticate).
pub fn names_vault_key(master_key_id: &str, kid: &str) -> bool {
    if master_key_id == kid {
        return true;
    }
    let Some((_, rest)) = kid.split_once("/keys/") else {
        return false;
    };
    let name = rest.split('/').next().unwrap_or_default();
    let unversioned = &kid[..kid.len() - rest.len() + name.len()];
    !name.is_empty() && (master_key_id == name || master_key_id == unversioned)
}

/// Decrypts a key wrapped "locally" by Parquet's key tools (double wrapping): standard base64 of
/// nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes), AES-GCM under `kek` with `aad` (Arrow C++
/// `parquet::encryption::internal::DecryptKeyLocally`).
fn decrypt_key_locally(wrapped_b64: &str, kek: &[u8], aad: &[u8]) -> Result<Vec<u8>, DataError> {
    use aws_lc_rs::aead::{
        AES_128_GCM, AES_192_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey,
    };
    let bad = || DataError::Key("the double-wrapped data key does not decrypt with its KEK".into());
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(wrapped_b64)
        .map_err(|_| DataError::Key("wrappedDEK is not base64".into()))?;
    if wrapped.len() < 12 + 16 {
        return Err(bad());
    }
    let alg = match kek.len() {
        16 => &AES_128_GCM,
        24 => &AES_192_GCM,
        32 => &AES_256_GCM,
        n => {
            return Err(DataError::Key(format!(
                "a KEK of {n} bytes is not an AES key"
            )));
        }
    };
    let key = LessSafeKey::new(UnboundKey::new(alg, kek).map_err(|_| bad())?);
    let (nonce, sealed) = wrapped.split_at(12);
    let mut sealed = zeroize::Zeroizing::new(sealed.to_vec());
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut sealed)
        .map_err(|_| bad())?;
    Ok(plain.to_vec())
}

/// The public part of a vault key, enough to encrypt a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultPublicKey {
    /// `https://<vault>/keys/<name>/<version>`.
    pub kid: String,
    pub n: Vec<u8>,
    pub e: Vec<u8>,
}

impl VaultPublicKey {
    /// From a JWK (`{"kid", "kty": "RSA"…, "n", "e"}`) or a KeyBundle (`{"key": JWK}`).
    pub fn from_jwk(v: &serde_json::Value) -> Result<Self, DataError> {
        let jwk = v.get("key").unwrap_or(v);
        let field = |name: &str| {
            jwk.get(name).and_then(|x| x.as_str()).ok_or_else(|| {
                DataError::Key(format!(
                    "the key has no {name:?}: give a public JWK or a vault key bundle"
                ))
            })
        };
        if !field("kty")?.starts_with("RSA") {
            return Err(DataError::Key("the key is not an RSA key".into()));
        }
        let b64 = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|_| DataError::Key("n/e are not base64url".into()))
        };
        Ok(VaultPublicKey {
            kid: field("kid")?.to_string(),
            n: b64(field("n")?)?,
            e: b64(field("e")?)?,
        })
    }

    /// The vault URL part of the key id.
    pub fn vault_url(&self) -> Option<&str> {
        self.kid.find("/keys/").map(|i| &self.kid[..i])
    }

    /// RSA-OAEP-256 wraps `dek`.
    pub fn wrap(&self, dek: &[u8]) -> Result<Vec<u8>, DataError> {
        let spki = conclave_pki::x509::rsa_spki_from_components(&self.n, &self.e)
            .map_err(|e| DataError::Key(format!("bad vault key: {e}")))?;
        let key = OaepPublicEncryptingKey::new(
            PublicEncryptingKey::from_der(&spki)
                .map_err(|e| DataError::Key(format!("bad vault key: {e}")))?,
        )
        .map_err(|e| DataError::Key(format!("bad vault key: {e}")))?;
        let mut out = vec![0u8; key.ciphertext_size()];
        Ok(key
            .encrypt(&OAEP_SHA256_MGF1SHA256, dek, &mut out, None)
            .map_err(|_| DataError::Key("data key wrapping failed".into()))?
            .to_vec())
    }
}

/// Unwraps a file's data key: in a TEE, with a released key.
pub trait KeyUnwrapper: Send + Sync {
    fn unwrap_dek(&self, material: &KeyMaterial) -> Result<Vec<u8>, DataError>;
}

/// An unwrapper holding a vault key's private part.
pub struct PrivateKeyUnwrapper {
    kid: String,
    key: OaepPrivateDecryptingKey,
}

impl PrivateKeyUnwrapper {
    pub fn new(kid: &str, key: PrivateDecryptingKey) -> Result<Self, DataError> {
        Ok(PrivateKeyUnwrapper {
            kid: kid.to_string(),
            key: OaepPrivateDecryptingKey::new(key)
                .map_err(|_| DataError::Key("unusable private key".into()))?,
        })
    }
}

impl PrivateKeyUnwrapper {
    /// RSA-OAEP-256 unwrap of standard-base64 `wrapped` (a data key, or a double wrapping's KEK).
    fn unwrap_rsa(
        &self,
        wrapped: &str,
        what: &str,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, DataError> {
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(wrapped)
            .map_err(|_| DataError::Key(format!("the wrapped {what} is not base64")))?;
        let mut out = zeroize::Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let len = self
            .key
            .decrypt(&OAEP_SHA256_MGF1SHA256, &wrapped, &mut out, None)
            .map_err(|_| DataError::Key(format!("the {what} does not unwrap with {}", self.kid)))?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

impl PrivateKeyUnwrapper {
    /// RSA-OAEP-256 unwrap of raw `wrapped` bytes to an AES key (16, 24 or 32 bytes: a data key
    /// or KEK), for re-wrapping it under another key; anything else is refused.
    pub fn unwrap_aes_key(&self, wrapped: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, DataError> {
        use base64::Engine as _;
        let key = self.unwrap_rsa(
            &base64::engine::general_purpose::STANDARD.encode(wrapped),
            "wrapped key",
        )?;
        if ![16, 24, 32].contains(&key.len()) {
            return Err(DataError::Key(format!(
                "the wrapped key unwraps with {} to {} bytes, not an AES key",
                self.kid,
                key.len()
            )));
        }
        Ok(key)
    }
}

impl KeyUnwrapper for PrivateKeyUnwrapper {
    fn unwrap_dek(&self, m: &KeyMaterial) -> Result<Vec<u8>, DataError> {
        if !names_vault_key(&m.master_key_id, &self.kid) {
            return Err(DataError::Key(format!(
                "{} under {}, not under the released key {}",
                if m.is_footer_key {
                    "the dataset is encrypted"
                } else {
                    "a column key is wrapped"
                },
                m.master_key_id,
                self.kid
            )));
        }
        if !m.double_wrapping {
            return Ok(self.unwrap_rsa(&m.wrapped_dek, "data key")?.to_vec());
        }
        let (Some(kek_id), Some(wrapped_kek)) = (&m.key_encryption_key_id, &m.wrapped_kek) else {
            return Err(DataError::Key(
                "double-wrapped key material without keyEncryptionKeyID and wrappedKEK".into(),
            ));
        };
        let kek = self.unwrap_rsa(wrapped_kek, "key-encryption key (KEK)")?;
        let aad = base64::engine::general_purpose::STANDARD
            .decode(kek_id)
            .map_err(|_| DataError::Key("keyEncryptionKeyID is not base64".into()))?;
        decrypt_key_locally(&m.wrapped_dek, &kek, &aad)
    }
}

/// Reads a Parquet file from an object store: ranged reads for pages, one suffix read for the
/// footer.
#[derive(Clone, Debug)]
pub struct StoreReader {
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
}

fn store_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(store_err)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(store_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_via_suffix_and_finish(self)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

impl MetadataSuffixFetch for &mut StoreReader {
    // Azure Blob Storage has no suffix ranges, so the size is asked first.
    fn fetch_suffix(&mut self, suffix: usize) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            let size = self.store.head(&self.path).await.map_err(store_err)?.size;
            let start = size.saturating_sub(suffix as u64);
            self.store
                .get_range(&self.path, start..size)
                .await
                .map_err(store_err)
        }
        .boxed()
    }
}

/// Hands the Parquet reader its keys, and remembers what it was asked for: whether the footer
/// key was used (the file's metadata names an encryption algorithm: an encrypted footer, or a
/// signed plaintext one), and why a column key could not be had.
struct Retriever {
    unwrapper: Arc<dyn KeyUnwrapper>,
    footer_key_used: std::sync::atomic::AtomicBool,
    /// (masterKeyID, reason) of column keys that did not unwrap.
    column_key_failures: std::sync::Mutex<Vec<(String, String)>>,
    /// The first refusal of the footer key's material (external, unparsable), kept so that the
    /// reader's wrapped error can be replaced by ours.
    refusal: std::sync::Mutex<Option<DataError>>,
}

impl Retriever {
    fn new(unwrapper: Arc<dyn KeyUnwrapper>) -> Arc<Self> {
        Arc::new(Retriever {
            unwrapper,
            footer_key_used: Default::default(),
            column_key_failures: Default::default(),
            refusal: Default::default(),
        })
    }

    fn properties(self: &Arc<Self>) -> Result<Arc<FileDecryptionProperties>, DataError> {
        Ok(FileDecryptionProperties::with_key_retriever(self.clone()).build()?)
    }

    /// Our own reason for a failure, when the retriever refused the key material.
    fn explain(&self, e: DataError) -> DataError {
        self.refusal
            .lock()
            .expect("refusal lock")
            .take()
            .unwrap_or(e)
    }
}

impl KeyRetriever for Retriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let general = |e: &DataError| parquet::errors::ParquetError::General(e.to_string());
        // The reader asks for the footer key first, when it reads metadata that names an
        // encryption algorithm (parquet's FileDecryptor::new), whatever the key material's own
        // isFooterKey says; later calls are for column keys.
        let first = !self
            .footer_key_used
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        let m = match KeyMaterial::parse(key_metadata) {
            Ok(m) => m,
            Err(e) => {
                let err = general(&e);
                if first {
                    self.refusal.lock().expect("refusal lock").get_or_insert(e);
                } else {
                    self.column_key_failures
                        .lock()
                        .expect("failures lock")
                        .push((UNREADABLE_MATERIAL.into(), e.to_string()));
                }
                return Err(err);
            }
        };
        self.unwrapper.unwrap_dek(&m).map_err(|e| {
            if !first {
                self.column_key_failures
                    .lock()
                    .expect("failures lock")
                    .push((m.master_key_id.clone(), e.to_string()));
            }
            general(&e)
        })
    }
}

/// What a column key's master key is called when its key material does not parse.
const UNREADABLE_MATERIAL: &str = "(unreadable key material)";

/// How one column is protected, from its `ColumnCryptoMetaData` (Parquet Modular Encryption
/// spec, "Column metadata"): under the footer key, under its own column key, or not at all.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ColumnProtection {
    /// The column's path in the schema, dot-separated.
    pub column: String,
    /// `footer key`, `column key` or `none` (stored in plaintext).
    pub encryption: &'static str,
    /// For a column key: the master key its key material names (`masterKeyID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_id: Option<String>,
}

/// Every (row group, column) protection of the file, or of `only` those leaf columns.
fn column_protection(
    meta: &ParquetMetaData,
    only: Option<&[usize]>,
) -> Vec<(usize, ColumnProtection)> {
    use parquet::file::column_crypto_metadata::ColumnCryptoMetaData;
    let schema = meta.file_metadata().schema_descr();
    let mut out = Vec::new();
    for rg in meta.row_groups() {
        for (i, col) in rg.columns().iter().enumerate() {
            if only.is_some_and(|o| !o.contains(&i)) {
                continue;
            }
            let column = schema.column(i).path().string();
            let (encryption, master_key_id) = match col.crypto_metadata() {
                None => ("none", None),
                Some(ColumnCryptoMetaData::ENCRYPTION_WITH_FOOTER_KEY) => ("footer key", None),
                Some(ColumnCryptoMetaData::ENCRYPTION_WITH_COLUMN_KEY(k)) => (
                    "column key",
                    Some(
                        k.key_metadata
                            .as_deref()
                            .and_then(|m| KeyMaterial::parse(m).ok())
                            .map(|m| m.master_key_id)
                            .unwrap_or_else(|| UNREADABLE_MATERIAL.into()),
                    ),
                ),
            };
            out.push((
                i,
                ColumnProtection {
                    column,
                    encryption,
                    master_key_id,
                },
            ));
        }
    }
    out
}

/// Refuses a file opened for an encrypted read unless it is encrypted where it is read: its
/// metadata named an encryption algorithm (the footer key was used), and every column read is
/// encrypted in every row group, under a key this reader holds.
fn ensure_encrypted(
    meta: &ParquetMetaData,
    retriever: &Retriever,
    columns: Option<&[usize]>,
) -> Result<(), DataError> {
    if !retriever
        .footer_key_used
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return Err(DataError::NotEncrypted(
            "the dataset is not encrypted: its metadata names no encryption algorithm (a plain \
             Parquet file, which anyone with write access to the storage could have written); \
             encrypt it with conclave data encrypt or PyArrow's Parquet encryption"
                .into(),
        ));
    }
    let failures = retriever.column_key_failures.lock().expect("failures lock");
    for (_, p) in column_protection(meta, columns) {
        match p.encryption {
            "none" => {
                return Err(DataError::NotEncrypted(format!(
                    "column {} is stored in plaintext in this file (PyArrow leaves columns not \
                     named in column_keys unencrypted): anyone with write access to the storage \
                     could have written it; encrypt every column (uniform_encryption=True, or \
                     name it in column_keys)",
                    p.column
                )));
            }
            "column key" => {
                let master = p.master_key_id.unwrap_or_default();
                if let Some((_, reason)) = failures.iter().find(|(m, _)| *m == master) {
                    return Err(DataError::Key(format!(
                        "column {} is encrypted under a column key wrapped by {master}, which this \
                         reader does not hold ({reason})",
                        p.column
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WriteSummary {
    pub url: String,
    pub rows: u64,
    pub bytes: u64,
    pub master_key_id: String,
}

/// Writes `batches` as an encrypted Parquet file at `loc`, under a fresh data key wrapped by
/// `key`. `progress` is told the running row count after each batch.
pub async fn write_encrypted(
    batches: impl Iterator<Item = Result<RecordBatch, DataError>>,
    schema: arrow_schema::SchemaRef,
    loc: &Location,
    key: &VaultPublicKey,
    mut progress: impl FnMut(u64),
) -> Result<WriteSummary, DataError> {
    let mut dek = zeroize::Zeroizing::new(vec![0u8; 32]);
    SystemRandom::new()
        .fill(&mut dek)
        .map_err(|_| DataError::Key("no randomness".into()))?;
    let material = KeyMaterial {
        key_material_type: "PKMT1".into(),
        internal_storage: true,
        is_footer_key: true,
        kms_instance_id: Some("conclave".into()),
        kms_instance_url: key.vault_url().map(String::from),
        master_key_id: key.kid.clone(),
        wrapped_dek: base64::engine::general_purpose::STANDARD.encode(key.wrap(&dek)?),
        double_wrapping: false,
        key_encryption_key_id: None,
        wrapped_kek: None,
    };
    // The Parquet writer takes its own copy of the data key (not wiped by us).
    let encryption = FileEncryptionProperties::builder(dek.to_vec())
        .with_footer_key_metadata(serde_json::to_vec(&material).expect("JSON"))
        .build()?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .with_file_encryption_properties(encryption)
        .build();
    write(batches, schema, loc, props, &mut progress, key.kid.clone()).await
}

/// Writes `batches` as a plaintext Parquet file (for comparisons and for owners' own use).
pub async fn write_plain(
    batches: impl Iterator<Item = Result<RecordBatch, DataError>>,
    schema: arrow_schema::SchemaRef,
    loc: &Location,
    mut progress: impl FnMut(u64),
) -> Result<WriteSummary, DataError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    write(batches, schema, loc, props, &mut progress, String::new()).await
}

async fn write(
    batches: impl Iterator<Item = Result<RecordBatch, DataError>>,
    schema: arrow_schema::SchemaRef,
    loc: &Location,
    props: WriterProperties,
    progress: &mut impl FnMut(u64),
    master_key_id: String,
) -> Result<WriteSummary, DataError> {
    let sink = object_store::buffered::BufWriter::new(loc.store.clone(), loc.path.clone());
    let write_err = |e: parquet::errors::ParquetError| DataError::Write {
        url: loc.url.clone(),
        detail: e.to_string(),
    };
    let mut writer = AsyncArrowWriter::try_new(sink, schema, Some(props)).map_err(write_err)?;
    let mut rows = 0u64;
    for batch in batches {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).await.map_err(write_err)?;
        progress(rows);
    }
    writer.close().await.map_err(write_err)?;
    let bytes = loc.store.head(&loc.path).await?.size;
    Ok(WriteSummary {
        url: loc.url.clone(),
        rows,
        bytes,
        master_key_id,
    })
}

/// Opens an encrypted dataset for streaming: batches of up to `batch_size` rows, only the
/// `columns` asked for (all when `None`). A stream that ends in an error must be discarded as a
/// whole: pages are authenticated one by one as they are read.
pub async fn read_encrypted(
    loc: &Location,
    unwrapper: Arc<dyn KeyUnwrapper>,
    columns: Option<&[&str]>,
    batch_size: usize,
) -> Result<BatchStream, DataError> {
    read_with(
        loc,
        Some(unwrapper),
        columns,
        batch_size,
        Strings::AsWritten,
    )
    .await
}

/// Opens a plaintext Parquet dataset for streaming.
pub async fn read_plain(
    loc: &Location,
    columns: Option<&[&str]>,
    batch_size: usize,
) -> Result<BatchStream, DataError> {
    read_with(loc, None, columns, batch_size, Strings::AsWritten).await
}

/// How string columns are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strings {
    /// As the writer's Arrow schema says (a dictionary, for Conclave's and PyArrow's defaults).
    AsWritten,
    /// As Arrow `Utf8View` ([`string_views`]): 16-byte views into the pages' bytes, the layout
    /// query engines hash, group and compare fastest (DataFusion's own Parquet scan reads
    /// strings so by default, `schema_force_view_types`).
    Views,
}

/// `schema` with every string column (plain, large, or dictionary of strings) as `Utf8View`:
/// the schema [`read_with`] yields with [`Strings::Views`].
pub fn string_views(schema: &arrow_schema::Schema) -> arrow_schema::Schema {
    use arrow_schema::DataType;
    let text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let fields: Vec<arrow_schema::Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, v) if text(v) => {
                f.as_ref().clone().with_data_type(DataType::Utf8View)
            }
            t if text(t) => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    arrow_schema::Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// Opens a dataset for streaming, as [`read_encrypted`] (with `unwrapper`) or [`read_plain`]
/// (without) do, its string columns decoded as `strings` says.
///
/// # Errors
/// As [`read_encrypted`] and [`read_plain`].
pub async fn read_with(
    loc: &Location,
    unwrapper: Option<Arc<dyn KeyUnwrapper>>,
    columns: Option<&[&str]>,
    batch_size: usize,
    strings: Strings,
) -> Result<BatchStream, DataError> {
    let retriever = unwrapper.map(Retriever::new);
    open(loc, retriever.as_ref(), columns, batch_size, strings).await
}

/// What a dataset's footer says of its contents: the number of records and their Arrow schema
/// (as PyArrow wrote it, or as Parquet's logical types map to Arrow).
#[derive(Debug, Clone)]
pub struct Footer {
    pub rows: u64,
    pub schema: arrow_schema::SchemaRef,
}

/// Reads a dataset's footer (decrypted with `unwrapper` when given).
///
/// # Errors
/// [`DataError`] when storage fails, the file is not Parquet, or the key does not open it.
pub async fn footer(
    loc: &Location,
    unwrapper: Option<Arc<dyn KeyUnwrapper>>,
) -> Result<Footer, DataError> {
    let reader = StoreReader {
        store: loc.store.clone(),
        path: loc.path.clone(),
    };
    let mut options = ArrowReaderOptions::new();
    let retriever = unwrapper.map(Retriever::new);
    if let Some(r) = &retriever {
        options = options.with_file_decryption_properties(r.properties()?);
    }
    let builder = contained_async(async {
        Ok(ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?)
    })
    .await
    .map_err(|e| match &retriever {
        Some(r) => r.explain(e),
        None => e,
    })?;
    Ok(Footer {
        rows: u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0),
        schema: builder.schema().clone(),
    })
}

/// The number of records in a dataset, from its footer (decrypted with `unwrapper` when given).
pub async fn row_count(
    loc: &Location,
    unwrapper: Option<Arc<dyn KeyUnwrapper>>,
) -> Result<u64, DataError> {
    Ok(footer(loc, unwrapper).await?.rows)
}

async fn open(
    loc: &Location,
    retriever: Option<&Arc<Retriever>>,
    columns: Option<&[&str]>,
    batch_size: usize,
    strings: Strings,
) -> Result<BatchStream, DataError> {
    let reader = StoreReader {
        store: loc.store.clone(),
        path: loc.path.clone(),
    };
    let mut options = ArrowReaderOptions::new();
    if let Some(r) = retriever {
        options = options.with_file_decryption_properties(r.properties()?);
    }
    let builder = contained_async(async {
        let builder =
            ParquetRecordBatchStreamBuilder::new_with_options(reader, options.clone()).await?;
        if strings == Strings::AsWritten {
            return Ok(builder);
        }
        // The footer read once, decoded again under the schema with string views.
        let views = Arc::new(string_views(builder.schema()));
        let metadata = parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(
            Arc::clone(builder.metadata()),
            options.with_schema(views),
        )?;
        let reader = StoreReader {
            store: loc.store.clone(),
            path: loc.path.clone(),
        };
        Ok(ParquetRecordBatchStreamBuilder::new_with_metadata(
            reader, metadata,
        ))
    })
    .await
    .map_err(|e| match retriever {
        Some(r) => r.explain(e),
        None => e,
    })?;
    let indices: Option<Vec<usize>> = match columns {
        Some(cols) => {
            let schema = builder.parquet_schema();
            Some(
                cols.iter()
                    .map(|c| {
                        (0..schema.num_columns())
                            .find(|&i| schema.column(i).name() == *c)
                            .ok_or_else(|| {
                                DataError::Input(format!("the dataset has no column {c}"))
                            })
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        None => None,
    };
    if let Some(r) = retriever {
        ensure_encrypted(builder.metadata(), r, indices.as_deref())?;
    }
    let builder = match indices {
        Some(indices) => {
            let mask = parquet::arrow::ProjectionMask::leaves(builder.parquet_schema(), indices);
            builder.with_projection(mask)
        }
        None => builder,
    };
    let stream = contained(|| builder.with_batch_size(batch_size).build())??;
    Ok(BatchStream {
        inner: Some(stream),
    })
}

/// What can be learnt about a dataset: without its key, what storage holds; with it, also how
/// each column is protected.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub url: String,
    pub bytes: u64,
    /// The magic number at the end: `PARE` (encrypted footer) or `PAR1` (plaintext footer, which
    /// an encrypted file may also have).
    pub footer: String,
    /// Whether the file is encrypted, from its metadata (an encrypted footer, or a plaintext
    /// footer that names an encryption algorithm and a footer signing key), not from its magic.
    pub encrypted: bool,
    /// How, in PyArrow's terms: `none`, or the footer (`encrypted footer` / `plaintext footer`),
    /// the columns when known (`uniform`, `column keys`, `some columns in plaintext`) and the
    /// key wrapping (`single wrapping` / `double wrapping`).
    pub mode: String,
    /// The footer key's material (which vault key it needs), when the file is encrypted.
    pub key_material: Option<KeyMaterial>,
    /// Each column's protection, when the footer can be read (a plaintext footer, or the key
    /// was given).
    pub columns: Option<Vec<ColumnProtection>>,
}

struct Capture(std::sync::Mutex<Option<Vec<u8>>>);

impl KeyRetriever for Capture {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        *self.0.lock().expect("capture lock") = Some(key_metadata.to_vec());
        Err(parquet::errors::ParquetError::General(
            "no key: inspecting only".into(),
        ))
    }
}

/// Inspects a dataset without decrypting anything.
pub async fn inspect(loc: &Location) -> Result<Inspection, DataError> {
    inspect_inner(loc, None).await
}

/// Inspects a dataset with its key: also each column's protection, for an encrypted footer.
pub async fn inspect_with_key(
    loc: &Location,
    unwrapper: Arc<dyn KeyUnwrapper>,
) -> Result<Inspection, DataError> {
    inspect_inner(loc, Some(unwrapper)).await
}

async fn inspect_inner(
    loc: &Location,
    unwrapper: Option<Arc<dyn KeyUnwrapper>>,
) -> Result<Inspection, DataError> {
    let meta = loc.store.head(&loc.path).await?;
    if meta.size < 12 {
        return Err(DataError::Input(format!(
            "{} is {} bytes: not a Parquet file",
            loc.url, meta.size
        )));
    }
    let tail = loc
        .store
        .get_range(&loc.path, meta.size - 4..meta.size)
        .await?;
    let footer = String::from_utf8_lossy(&tail).to_string();
    if footer != "PARE" && footer != "PAR1" {
        return Err(DataError::Input(format!(
            "{} does not end with a Parquet magic number",
            loc.url
        )));
    }
    let reader = || StoreReader {
        store: loc.store.clone(),
        path: loc.path.clone(),
    };

    // The footer key's material: the reader asks for it when the metadata names an encryption
    // algorithm, whatever the magic.
    let capture = Arc::new(Capture(std::sync::Mutex::new(None)));
    let props = FileDecryptionProperties::with_key_retriever(capture.clone()).build()?;
    let attempt = contained_async(async {
        Ok(ParquetRecordBatchStreamBuilder::new_with_options(
            reader(),
            ArrowReaderOptions::new().with_file_decryption_properties(props),
        )
        .await?)
    })
    .await;
    let captured = capture.0.lock().expect("capture lock").take();
    let key_material = match (captured, attempt) {
        (Some(m), _) => Some(KeyMaterial::parse(&m)?),
        (None, Err(e)) => return Err(e),
        (None, Ok(_)) if footer == "PARE" => {
            return Err(DataError::Input("the encrypted footer names no key".into()));
        }
        (None, Ok(_)) => None,
    };
    let encrypted = key_material.is_some();

    // Each column's protection: from a plaintext footer as it is, or decrypted with the key.
    let metadata: Option<Arc<ParquetMetaData>> = match unwrapper {
        Some(u) => {
            let retriever = Retriever::new(u);
            let props = retriever.properties()?;
            let builder = contained_async(async {
                Ok(ParquetRecordBatchStreamBuilder::new_with_options(
                    reader(),
                    ArrowReaderOptions::new().with_file_decryption_properties(props),
                )
                .await?)
            })
            .await
            .map_err(|e| retriever.explain(e))?;
            Some(builder.metadata().clone())
        }
        None if footer == "PAR1" => {
            let mut r = reader();
            contained_async(async { Ok(r.get_metadata(None).await?) })
                .await
                .ok()
        }
        None => None,
    };
    let columns = metadata.map(|m| {
        let mut by_column: Vec<ColumnProtection> = Vec::new();
        for (i, p) in column_protection(&m, None) {
            match by_column.get_mut(i) {
                // A column is as protected as its weakest row group.
                Some(seen) if p.encryption == "none" => *seen = p,
                Some(_) => {}
                None => by_column.push(p),
            }
        }
        by_column
    });

    let mut mode = Vec::new();
    if encrypted {
        mode.push(if footer == "PARE" {
            "encrypted footer"
        } else {
            "plaintext footer"
        });
        if let Some(cols) = &columns {
            mode.push(if cols.iter().any(|c| c.encryption == "none") {
                "some columns in plaintext"
            } else if cols.iter().any(|c| c.encryption == "column key") {
                "column keys"
            } else {
                "uniform"
            });
        }
        if let Some(m) = &key_material {
            mode.push(if m.double_wrapping {
                "double wrapping"
            } else {
                "single wrapping"
            });
        }
    } else {
        mode.push("none");
    }
    Ok(Inspection {
        url: loc.url.clone(),
        bytes: meta.size,
        footer,
        encrypted,
        mode: mode.join(", "),
        key_material,
        columns,
    })
}

/// Counts the rows of a stream (errors abort the count).
pub async fn count_rows(mut stream: BatchStream) -> Result<u64, DataError> {
    let mut n = 0u64;
    while let Some(batch) = stream.next().await {
        n += batch?.num_rows() as u64;
    }
    Ok(n)
}

/// SHA-256 of a dataset's stored bytes (the ciphertext), and their length: what a result
/// receipt names as its input.
pub async fn digest(loc: &Location) -> Result<(String, u64), DataError> {
    let mut stream = loc.store.get(&loc.path).await?.into_stream();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut len = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        len += chunk.len() as u64;
        ctx.update(&chunk);
    }
    Ok((hex::encode(ctx.finish().as_ref()), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plaintext Parquet file whose `ARROW:schema` footer entry is a well-formed IPC message
    /// holding a Schema table without its `fields` vector.
    fn file_with_fieldless_arrow_schema() -> Vec<u8> {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let schema = arrow_ipc::SchemaBuilder::new(&mut fbb).finish();
        let mut message = arrow_ipc::MessageBuilder::new(&mut fbb);
        message.add_version(arrow_ipc::MetadataVersion::V5);
        message.add_header_type(arrow_ipc::MessageHeader::Schema);
        message.add_header(schema.as_union_value());
        let message = message.finish();
        fbb.finish(message, None);
        let encoded = base64::engine::general_purpose::STANDARD.encode(fbb.finished_data());

        let batch = RecordBatch::try_from_iter([(
            "age",
            Arc::new(arrow_array::Int32Array::from(vec![30, 40])) as arrow_array::ArrayRef,
        )])
        .unwrap();
        let props = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
                "ARROW:schema".into(),
                encoded,
            )]))
            .build();
        let options = parquet::arrow::arrow_writer::ArrowWriterOptions::new()
            .with_properties(props)
            .with_skip_arrow_metadata(true);
        let mut out = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new_with_options(&mut out, batch.schema(), options)
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        out
    }

    /// Found by the `parquet-file` fuzz target: the reader panics inside arrow-ipc on this
    /// footer; every entry point turns that into [`DataError::ReaderFailed`].
    #[tokio::test]
    async fn a_fieldless_arrow_schema_in_the_footer_is_an_error_not_a_panic() {
        use object_store::{ObjectStoreExt as _, PutPayload};
        let store = Arc::new(object_store::memory::InMemory::new());
        let path = object_store::path::Path::from("bad.parquet");
        store
            .put(&path, PutPayload::from(file_with_fieldless_arrow_schema()))
            .await
            .unwrap();
        let loc = Location {
            store,
            path,
            url: "memory:///bad.parquet".into(),
        };
        assert!(matches!(
            footer(&loc, None).await,
            Err(DataError::ReaderFailed)
        ));
        assert!(matches!(
            read_plain(&loc, None, 8).await,
            Err(DataError::ReaderFailed)
        ));
        assert!(matches!(inspect(&loc).await, Err(DataError::ReaderFailed)));
    }

    #[test]
    fn a_master_key_id_names_a_vault_key_by_id_or_name() {
        let kid = "https://v.example:8443/keys/fabrikam-data/00112233445566778899aabbccddeeff";
        for yes in [
            kid,
            "https://v.example:8443/keys/fabrikam-data",
            "fabrikam-data",
        ] {
            assert!(names_vault_key(yes, kid), "{yes}");
        }
        for no in [
            "fabrikam",
            "fabrikam-data/00112233445566778899aabbccddeeff",
            "https://other.example/keys/fabrikam-data",
            "",
            "keys",
        ] {
            assert!(!names_vault_key(no, kid), "{no}");
        }
        assert!(!names_vault_key("x", "not-a-key-id"));
    }

    #[test]
    fn key_material_modes_are_named() {
        let external =
            br#"{"keyMaterialType":"PKMT1","internalStorage":false,"keyReference":"footerKey"}"#;
        let e = KeyMaterial::parse(external).unwrap_err().to_string();
        assert!(e.contains("external key material is not supported"), "{e}");
        assert!(e.contains("internal_key_material=True"), "{e}");

        let other = br#"{"keyMaterialType":"PKMT2","internalStorage":true}"#;
        let e = KeyMaterial::parse(other).unwrap_err().to_string();
        assert!(e.contains("not PKMT1"), "{e}");

        let double_without_kek = br#"{"keyMaterialType":"PKMT1","internalStorage":true,"isFooterKey":true,"masterKeyID":"k","wrappedDEK":"AA==","doubleWrapping":true}"#;
        let e = KeyMaterial::parse(double_without_kek)
            .unwrap_err()
            .to_string();
        assert!(e.contains("keyEncryptionKeyID"), "{e}");

        let double = br#"{"keyMaterialType":"PKMT1","internalStorage":true,"isFooterKey":true,"masterKeyID":"k","wrappedDEK":"AA==","doubleWrapping":true,"keyEncryptionKeyID":"qAG2JvWUgPjd59Lb8pAu/Q==","wrappedKEK":"AA=="}"#;
        let m = KeyMaterial::parse(double).unwrap();
        assert!(m.double_wrapping);
        assert_eq!(
            m.key_encryption_key_id.as_deref(),
            Some("qAG2JvWUgPjd59Lb8pAu/Q==")
        );
    }

    /// A locally wrapped key as Arrow C++'s key tools write it (nonce ‖ ciphertext ‖ tag,
    /// AES-GCM, AAD = the KEK id's bytes); the vector was made with Python's `cryptography`
    /// AESGCM: KEK 00..0f, AAD 64..73, nonce c8..d3, data key 32..41.
    #[test]
    fn locally_wrapped_keys_decrypt_as_arrow_writes_them() {
        let kek: Vec<u8> = (0..16).collect();
        let aad: Vec<u8> = (100..116).collect();
        let wrapped = "yMnKy8zNzs/Q0dLTBBugizgEExDkrJR//14j59LtfkJ3SHc5HSnieeVlOZk=";
        let dek = decrypt_key_locally(wrapped, &kek, &aad).unwrap();
        assert_eq!(dek, (50..66).collect::<Vec<u8>>());
        // Another AAD (the KEK id as text rather than its bytes), another KEK, a cut: refused.
        assert!(decrypt_key_locally(wrapped, &kek, b"qAG2JvWUgPjd59Lb8pAu/Q==").is_err());
        assert!(decrypt_key_locally(wrapped, &[7u8; 16], &aad).is_err());
        assert!(decrypt_key_locally("AAAA", &kek, &aad).is_err());
        assert!(decrypt_key_locally(wrapped, &[0u8; 15], &aad).is_err());
    }
}
