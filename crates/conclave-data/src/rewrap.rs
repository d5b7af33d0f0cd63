//! Moving an encrypted dataset to a new vault key version without re-encrypting its data:
//! only the footer key's material (the data key, or a double wrapping's key-encryption key,
//! wrapped under the vault key) changes, so the file is copied byte for byte up to its
//! crypto metadata and only its tail is rewritten.
//!
//! The tail of a file with an encrypted footer is (Apache Parquet, "Parquet Modular
//! Encryption", §5.3 "Encrypted footer mode"):
//! `FileCryptoMetaData ‖ encrypted FileMetaData ‖ 4-byte little-endian length of both ‖ "PARE"`.
//! `FileCryptoMetaData` (parquet.thrift) is plaintext Thrift compact protocol; the footer key's
//! material is its `key_metadata`, which no AAD covers, so it can change while every
//! encrypted module, footer included, stays as it is. A plaintext-footer file is another
//! matter: its footer, key metadata included, is signed with the footer key, which the vault
//! never hands out, so it cannot be re-wrapped this way.

use std::future::Future;

use futures::StreamExt as _;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use thrift::protocol::{
    TCompactInputProtocol, TCompactOutputProtocol, TFieldIdentifier, TInputProtocol,
    TOutputProtocol, TStructIdentifier, TType,
};

use crate::dataset::{DataError, KeyMaterial};
use crate::store::Location;

/// parquet.thrift `EncryptionAlgorithm` (a union): `AES_GCM_V1` (field 1) or `AES_GCM_CTR_V1`
/// (field 2), each an `AesGcmV1`/`AesGcmCtrV1` struct with the same three optional fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionAlgorithm {
    /// The union's field id: 1 `AES_GCM_V1`, 2 `AES_GCM_CTR_V1`.
    pub id: i16,
    pub aad_prefix: Option<Vec<u8>>,
    pub aad_file_unique: Option<Vec<u8>>,
    pub supply_aad_prefix: Option<bool>,
}

/// parquet.thrift `FileCryptoMetaData`: the plaintext head of an encrypted footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCryptoMetaData {
    pub encryption_algorithm: EncryptionAlgorithm,
    /// The footer key's material (PKMT1 JSON for PyArrow's, Spark's and Conclave's files).
    pub key_metadata: Option<Vec<u8>>,
}

fn malformed(detail: impl std::fmt::Display) -> DataError {
    DataError::Input(format!(
        "the file's FileCryptoMetaData is malformed ({detail}): the file is damaged or was not written by a Parquet encryption library"
    ))
}

impl FileCryptoMetaData {
    /// Decodes the Thrift compact encoding at the start of `bytes`; returns it and its length in
    /// bytes. Unknown fields are refused rather than dropped, so re-encoding loses nothing.
    pub fn decode(bytes: &[u8]) -> Result<(Self, usize), DataError> {
        let config = thrift::TConfiguration::builder()
            .max_string_size(Some(bytes.len()))
            .build()
            .map_err(malformed)?;
        let mut cursor = std::io::Cursor::new(bytes);
        let mut p = TCompactInputProtocol::with_config(&mut cursor, config);
        let decoded = Self::read(&mut p).map_err(malformed)?;
        drop(p);
        Ok((decoded?, cursor.position() as usize))
    }

    fn read(p: &mut impl TInputProtocol) -> thrift::Result<Result<Self, DataError>> {
        let unknown = |what: &str, f: &TFieldIdentifier| {
            Err(malformed(format!(
                "unexpected field {} of type {:?} in {what}",
                f.id.unwrap_or_default(),
                f.field_type
            )))
        };
        let mut algorithm = None;
        let mut key_metadata = None;
        p.read_struct_begin()?;
        loop {
            let f = p.read_field_begin()?;
            match (f.field_type, f.id) {
                (TType::Stop, _) => break,
                (TType::Struct, Some(1)) => {
                    p.read_struct_begin()?;
                    loop {
                        let u = p.read_field_begin()?;
                        match (u.field_type, u.id) {
                            (TType::Stop, _) => break,
                            (TType::Struct, Some(id @ (1 | 2))) if algorithm.is_none() => {
                                let mut a = EncryptionAlgorithm {
                                    id,
                                    aad_prefix: None,
                                    aad_file_unique: None,
                                    supply_aad_prefix: None,
                                };
                                p.read_struct_begin()?;
                                loop {
                                    let g = p.read_field_begin()?;
                                    match (g.field_type, g.id) {
                                        (TType::Stop, _) => break,
                                        (TType::String, Some(1)) => {
                                            a.aad_prefix = Some(p.read_bytes()?)
                                        }
                                        (TType::String, Some(2)) => {
                                            a.aad_file_unique = Some(p.read_bytes()?)
                                        }
                                        (TType::Bool, Some(3)) => {
                                            a.supply_aad_prefix = Some(p.read_bool()?)
                                        }
                                        _ => return Ok(unknown("AesGcmV1", &g)),
                                    }
                                    p.read_field_end()?;
                                }
                                p.read_struct_end()?;
                                algorithm = Some(a);
                            }
                            _ => return Ok(unknown("EncryptionAlgorithm", &u)),
                        }
                        p.read_field_end()?;
                    }
                    p.read_struct_end()?;
                }
                (TType::String, Some(2)) => key_metadata = Some(p.read_bytes()?),
                _ => return Ok(unknown("FileCryptoMetaData", &f)),
            }
            p.read_field_end()?;
        }
        p.read_struct_end()?;
        Ok(match algorithm {
            Some(encryption_algorithm) => Ok(FileCryptoMetaData {
                encryption_algorithm,
                key_metadata,
            }),
            None => Err(malformed("no encryption_algorithm")),
        })
    }

    /// The Thrift compact encoding, as parquet-mr, Arrow C++ and parquet-rs write it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut p = TCompactOutputProtocol::new(&mut out);
        self.write(&mut p).expect("writing to a Vec cannot fail");
        drop(p);
        out
    }

    fn write(&self, p: &mut impl TOutputProtocol) -> thrift::Result<()> {
        let field = |t, id| TFieldIdentifier::new::<Option<String>, String, i16>(None, t, id);
        let a = &self.encryption_algorithm;
        p.write_struct_begin(&TStructIdentifier::new("FileCryptoMetaData"))?;
        p.write_field_begin(&field(TType::Struct, 1))?;
        p.write_struct_begin(&TStructIdentifier::new("EncryptionAlgorithm"))?;
        p.write_field_begin(&field(TType::Struct, a.id))?;
        p.write_struct_begin(&TStructIdentifier::new("AesGcmV1"))?;
        if let Some(v) = &a.aad_prefix {
            p.write_field_begin(&field(TType::String, 1))?;
            p.write_bytes(v)?;
            p.write_field_end()?;
        }
        if let Some(v) = &a.aad_file_unique {
            p.write_field_begin(&field(TType::String, 2))?;
            p.write_bytes(v)?;
            p.write_field_end()?;
        }
        if let Some(v) = a.supply_aad_prefix {
            p.write_field_begin(&field(TType::Bool, 3))?;
            p.write_bool(v)?;
            p.write_field_end()?;
        }
        p.write_field_stop()?;
        p.write_struct_end()?;
        p.write_field_end()?;
        p.write_field_stop()?;
        p.write_struct_end()?;
        p.write_field_end()?;
        if let Some(v) = &self.key_metadata {
            p.write_field_begin(&field(TType::String, 2))?;
            p.write_bytes(v)?;
            p.write_field_end()?;
        }
        p.write_field_stop()?;
        p.write_struct_end()?;
        p.flush()
    }
}

/// The tail of a file with an encrypted footer, split into its parts.
#[derive(Debug, Clone)]
pub struct EncryptedTail {
    /// Offset of the `FileCryptoMetaData` in the file: everything before it is data pages.
    pub offset: u64,
    pub crypto: FileCryptoMetaData,
    /// The encrypted `FileMetaData`, as stored.
    pub encrypted_footer: Vec<u8>,
    /// The whole file's size in bytes.
    pub size: u64,
    /// The object's entity tag when its tail was read (`None` where the store has none): every
    /// later read and the replacement are made against this version only.
    pub e_tag: Option<String>,
}

/// "The object changed while it was being re-wrapped": another writer replaced it.
fn changed_meanwhile(loc: &Location) -> DataError {
    DataError::Write {
        url: loc.url.clone(),
        detail: "the object was changed by another writer while it was being re-wrapped; it was \
                 left as that writer made it: run the re-wrap again"
            .into(),
    }
}

/// Opens `range` of the object at `loc`, only while its entity tag is still `e_tag`.
async fn open_range(
    loc: &Location,
    e_tag: Option<&str>,
    range: std::ops::Range<u64>,
) -> Result<object_store::GetResult, DataError> {
    loc.store
        .get_opts(
            &loc.path,
            object_store::GetOptions {
                range: Some(range.into()),
                if_match: e_tag.map(String::from),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| match e {
            object_store::Error::Precondition { .. } | object_store::Error::NotModified { .. } => {
                changed_meanwhile(loc)
            }
            e => e.into(),
        })
}

async fn read_range(
    loc: &Location,
    e_tag: Option<&str>,
    range: std::ops::Range<u64>,
) -> Result<bytes::Bytes, DataError> {
    Ok(open_range(loc, e_tag, range).await?.bytes().await?)
}

impl EncryptedTail {
    /// Reads and splits the tail of the object at `loc`. A plaintext footer (`PAR1`) is refused
    /// with the reason.
    pub async fn read(loc: &Location) -> Result<Self, DataError> {
        let meta = loc.store.head(&loc.path).await?;
        let (size, e_tag) = (meta.size, meta.e_tag);
        if size < 12 {
            return Err(DataError::Input(format!(
                "{} is {size} bytes: not a Parquet file",
                loc.url
            )));
        }
        let end = read_range(loc, e_tag.as_deref(), size - 8..size).await?;
        match &end[4..] {
            b"PARE" => {}
            b"PAR1" => {
                return Err(if crate::dataset::inspect(loc).await?.encrypted {
                    DataError::Unsupported(
                        "the dataset has a plaintext footer, which is signed with the footer key: \
                         its key material cannot change without that key, which the vault never \
                         hands out. Write it with an encrypted footer (PyArrow \
                         plaintext_footer=False, the default) to re-wrap it later"
                            .into(),
                    )
                } else {
                    DataError::NotEncrypted(format!(
                        "{} is not encrypted: there is no key to re-wrap",
                        loc.url
                    ))
                });
            }
            _ => {
                return Err(DataError::Input(format!(
                    "{} does not end with a Parquet magic number",
                    loc.url
                )));
            }
        }
        let len = u64::from(u32::from_le_bytes(end[..4].try_into().expect("4 bytes")));
        if len + 8 + 4 > size {
            return Err(DataError::Input(format!(
                "{}: the footer length ({len} bytes) exceeds the file ({size} bytes): it is truncated or damaged",
                loc.url
            )));
        }
        let offset = size - 8 - len;
        let tail = read_range(loc, e_tag.as_deref(), offset..size - 8).await?;
        let (crypto, used) = FileCryptoMetaData::decode(&tail)?;
        Ok(EncryptedTail {
            offset,
            crypto,
            encrypted_footer: tail[used..].to_vec(),
            size,
            e_tag,
        })
    }

    /// The tail's bytes: crypto metadata, encrypted footer, length, `PARE`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.crypto.encode();
        out.extend_from_slice(&self.encrypted_footer);
        let len = u32::try_from(out.len()).expect("a footer under 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(b"PARE");
        out
    }
}

/// What [`rewrap_footer_key`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RewrapSummary {
    pub url: String,
    /// `masterKeyID` before and after.
    pub from: String,
    pub to: String,
    /// `single wrapping` (the data key was re-wrapped) or `double wrapping` (the KEK was).
    pub wrapping: &'static str,
    /// Bytes copied unchanged (every data page), and the size of the rewritten tail.
    pub bytes_unchanged: u64,
    pub tail_bytes: u64,
}

/// What a re-wrap asks of the vault: the wrapped key (a data key, or a double wrapping's KEK)
/// and the vault key its material names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The file's `masterKeyID`.
    pub master_key_id: String,
    /// The RSA-OAEP-256 ciphertext.
    pub wrapped: Vec<u8>,
}

/// Re-wraps the footer key of the encrypted dataset at `loc`: `rewrap` receives the wrapped key
/// and returns (the new `masterKeyID`, the key wrapped under it); the file is rewritten with
/// every byte before its crypto metadata unchanged and the new key material in it, then read
/// back to check. Column keys (PyArrow `column_keys`) live inside the encrypted footer and keep
/// the version they name.
///
/// Errors: [`DataError::Unsupported`] for a plaintext footer, [`DataError::NotEncrypted`],
/// [`DataError::Input`] for a damaged tail, the key-material errors of [`KeyMaterial::parse`],
/// and whatever `rewrap` returns (the file is then left as it was).
pub async fn rewrap_footer_key<F, Fut>(
    loc: &Location,
    rewrap: F,
) -> Result<RewrapSummary, DataError>
where
    F: FnOnce(WrappedKey) -> Fut,
    Fut: Future<Output = Result<(String, Vec<u8>), DataError>>,
{
    let std_b64 = base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let mut tail = EncryptedTail::read(loc).await?;
    let raw = tail
        .crypto
        .key_metadata
        .clone()
        .ok_or_else(|| DataError::Key("the encrypted footer names no key".into()))?;
    let material = KeyMaterial::parse(&raw)?;
    let field = if material.double_wrapping {
        "wrappedKEK"
    } else {
        "wrappedDEK"
    };
    let wrapped_b64 = if material.double_wrapping {
        material.wrapped_kek.clone().unwrap_or_default()
    } else {
        material.wrapped_dek.clone()
    };
    let wrapped = std_b64
        .decode(&wrapped_b64)
        .map_err(|_| DataError::Key(format!("{field} is not base64")))?;
    let (new_id, rewrapped) = rewrap(WrappedKey {
        master_key_id: material.master_key_id.clone(),
        wrapped,
    })
    .await?;

    // Edit the JSON as written, so fields this reader does not model are kept.
    let mut doc: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|e| DataError::Key(format!("the key material is not JSON: {e}")))?;
    doc["masterKeyID"] = new_id.clone().into();
    doc[field] = std_b64.encode(&rewrapped).into();
    let new_raw = serde_json::to_vec(&doc).expect("JSON");
    KeyMaterial::parse(&new_raw)?;
    tail.crypto.key_metadata = Some(new_raw.clone());
    let new_tail = tail.encode();

    // Copy the data pages as they are (of the version whose tail was read: a file replaced
    // meanwhile fails the read), then the new tail. The object is replaced only when the upload
    // completes (a rename for files, a block-list commit for blobs), so a failure leaves the
    // old file; just before that, the object must still be the version read, or the upload is
    // abandoned and the other writer's object stays.
    if tail.e_tag.is_none() {
        return Err(DataError::Write {
            url: loc.url.clone(),
            detail: "the store gives the object no entity tag, so a re-wrap could not tell \
                     whether another writer replaced it meanwhile; copy the dataset to a store \
                     that does (a file system, Azure Blob Storage, S3) to re-wrap it"
                .into(),
        });
    }
    // The source first: a failed read leaves no upload behind.
    let mut pages = open_range(loc, tail.e_tag.as_deref(), 0..tail.offset)
        .await?
        .into_stream();
    let upload = loc.store.put_multipart(&loc.path).await?;
    let mut sink = object_store::WriteMultipart::new(upload);
    let copied = async {
        while let Some(chunk) = pages.next().await {
            let chunk = chunk?;
            sink.wait_for_capacity(4).await?;
            sink.write(&chunk);
        }
        sink.write(&new_tail);
        let now = loc.store.head(&loc.path).await?;
        if now.e_tag != tail.e_tag || now.size != tail.size {
            return Err(changed_meanwhile(loc));
        }
        Ok::<_, DataError>(())
    }
    .await;
    match copied {
        Ok(()) => {
            sink.finish().await.map_err(|e| DataError::Write {
                url: loc.url.clone(),
                detail: e.to_string(),
            })?;
        }
        Err(e) => {
            let _ = sink.abort().await;
            return Err(e);
        }
    }

    let check = EncryptedTail::read(loc).await?;
    if check.crypto.key_metadata.as_deref() != Some(new_raw.as_slice())
        || check.offset != tail.offset
        || check.size != tail.offset + new_tail.len() as u64
    {
        return Err(DataError::Write {
            url: loc.url.clone(),
            detail: "the rewritten file does not read back as written (was it changed meanwhile?)"
                .into(),
        });
    }
    Ok(RewrapSummary {
        url: loc.url.clone(),
        from: material.master_key_id,
        to: new_id,
        wrapping: if material.double_wrapping {
            "double wrapping"
        } else {
            "single wrapping"
        },
        bytes_unchanged: tail.offset,
        tail_bytes: new_tail.len() as u64,
    })
}
