//! Encrypted datasets: Apache Parquet with Parquet Modular Encryption (AES-GCM, footer and every
//! column encrypted) under a fresh data key per file. The data key is wrapped with RSA-OAEP-256
//! under the owner's vault key and stored as the footer's key metadata, in the key-material JSON
//! that PyArrow's and Spark's Parquet encryption use (`PKMT1`, internal storage, no double
//! wrapping), so owners can also write and read these files with those tools.
//!
//! Writing needs only the vault key's public part. Reading needs an unwrapper: the private key,
//! which exists in plaintext only in the vault and in an attested TEE.

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
    Parquet(#[from] parquet::errors::ParquetError),
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

/// Runs one step of the Parquet reader, turning a panic inside it into
/// [`DataError::ReaderFailed`]. The reader can panic on some malformed files (parquet 60.1: an
/// encrypted module shorter than its 4-byte length and 12-byte nonce underflows in
/// `RingGcmBlockDecryptor::decrypt`; found by the `parquet-file` fuzz target), and a file from
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
}

impl KeyMaterial {
    pub fn parse(bytes: &[u8]) -> Result<Self, DataError> {
        let m: KeyMaterial = serde_json::from_slice(bytes).map_err(|e| {
            DataError::Key(format!(
                "the file's key metadata is not PKMT1 key material: {e}"
            ))
        })?;
        if m.key_material_type != "PKMT1" || !m.internal_storage {
            return Err(DataError::Key(format!(
                "unsupported key material {} (internal storage {})",
                m.key_material_type, m.internal_storage
            )));
        }
        if m.double_wrapping {
            return Err(DataError::Key(
                "double-wrapped data keys are not supported; write with double_wrapping=False"
                    .into(),
            ));
        }
        Ok(m)
    }
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
        let spki = conclave_snp::x509::rsa_spki_from_components(&self.n, &self.e)
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

impl KeyUnwrapper for PrivateKeyUnwrapper {
    fn unwrap_dek(&self, m: &KeyMaterial) -> Result<Vec<u8>, DataError> {
        if m.master_key_id != self.kid {
            return Err(DataError::Key(format!(
                "the dataset is encrypted under {}, not under the released key {}",
                m.master_key_id, self.kid
            )));
        }
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&m.wrapped_dek)
            .map_err(|_| DataError::Key("wrappedDEK is not base64".into()))?;
        let mut out = zeroize::Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let dek = self
            .key
            .decrypt(&OAEP_SHA256_MGF1SHA256, &wrapped, &mut out, None)
            .map_err(|_| {
                DataError::Key(format!("the data key does not unwrap with {}", self.kid))
            })?;
        Ok(dek.to_vec())
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

struct Retriever(Arc<dyn KeyUnwrapper>);

impl KeyRetriever for Retriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let m = KeyMaterial::parse(key_metadata)
            .map_err(|e| parquet::errors::ParquetError::General(e.to_string()))?;
        self.0
            .unwrap_dek(&m)
            .map_err(|e| parquet::errors::ParquetError::General(e.to_string()))
    }
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
    let decryption =
        FileDecryptionProperties::with_key_retriever(Arc::new(Retriever(unwrapper))).build()?;
    open(loc, Some(decryption), columns, batch_size).await
}

/// Opens a plaintext Parquet dataset for streaming.
pub async fn read_plain(
    loc: &Location,
    columns: Option<&[&str]>,
    batch_size: usize,
) -> Result<BatchStream, DataError> {
    open(loc, None, columns, batch_size).await
}

/// The number of records in a dataset, from its footer (decrypted with `unwrapper` when given).
pub async fn row_count(
    loc: &Location,
    unwrapper: Option<Arc<dyn KeyUnwrapper>>,
) -> Result<u64, DataError> {
    let reader = StoreReader {
        store: loc.store.clone(),
        path: loc.path.clone(),
    };
    let mut options = ArrowReaderOptions::new();
    if let Some(u) = unwrapper {
        options = options.with_file_decryption_properties(
            FileDecryptionProperties::with_key_retriever(Arc::new(Retriever(u))).build()?,
        );
    }
    let builder = contained_async(async {
        Ok(ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?)
    })
    .await?;
    Ok(u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0))
}

async fn open(
    loc: &Location,
    decryption: Option<Arc<FileDecryptionProperties>>,
    columns: Option<&[&str]>,
    batch_size: usize,
) -> Result<BatchStream, DataError> {
    let reader = StoreReader {
        store: loc.store.clone(),
        path: loc.path.clone(),
    };
    let mut options = ArrowReaderOptions::new();
    if let Some(d) = decryption {
        options = options.with_file_decryption_properties(d);
    }
    let builder = contained_async(async {
        Ok(ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?)
    })
    .await?;
    let builder = match columns {
        Some(cols) => {
            let schema = builder.parquet_schema();
            let indices: Vec<usize> = cols
                .iter()
                .map(|c| {
                    (0..schema.num_columns())
                        .find(|&i| schema.column(i).name() == *c)
                        .ok_or_else(|| DataError::Input(format!("the dataset has no column {c}")))
                })
                .collect::<Result<_, _>>()?;
            let mask = parquet::arrow::ProjectionMask::leaves(schema, indices);
            builder.with_projection(mask)
        }
        None => builder,
    };
    let stream = contained(|| builder.with_batch_size(batch_size).build())??;
    Ok(BatchStream {
        inner: Some(stream),
    })
}

/// What anyone can learn about a dataset without its key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub url: String,
    pub bytes: u64,
    /// `PARE`: footer encrypted; `PAR1`: plaintext footer.
    pub footer: String,
    /// The key material (which vault key it needs), when the footer is encrypted.
    pub key_material: Option<KeyMaterial>,
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
    let key_material = if footer == "PARE" {
        let capture = Arc::new(Capture(std::sync::Mutex::new(None)));
        let props = FileDecryptionProperties::with_key_retriever(capture.clone()).build()?;
        let reader = StoreReader {
            store: loc.store.clone(),
            path: loc.path.clone(),
        };
        let attempt = contained_async(async {
            Ok(ParquetRecordBatchStreamBuilder::new_with_options(
                reader,
                ArrowReaderOptions::new().with_file_decryption_properties(props),
            )
            .await?)
        })
        .await;
        let captured = capture.0.lock().expect("capture lock").take();
        match (captured, attempt) {
            (Some(m), _) => Some(KeyMaterial::parse(&m)?),
            (None, Err(e)) => return Err(e),
            (None, Ok(_)) => {
                return Err(DataError::Input("the encrypted footer names no key".into()));
            }
        }
    } else if footer == "PAR1" {
        None
    } else {
        return Err(DataError::Input(format!(
            "{} does not end with a Parquet magic number",
            loc.url
        )));
    };
    Ok(Inspection {
        url: loc.url.clone(),
        bytes: meta.size,
        footer,
        key_material,
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
