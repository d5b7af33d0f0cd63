//! `parquet-file`: a whole stored dataset file, read the way the workload and `conclave data
//! inspect` read one (footer, key metadata, pages), from an in-memory object store.
//!
//! The seeds are encrypted files (encrypted footer, `PARE`) in Conclave's own layout and a
//! plaintext file (`PAR1`). The data key of the encrypted seeds is a fixed fuzzing key, and the
//! harness's unwrapper hands it out for any key material that parses, so the fuzzer reaches the
//! footer decryption, the page decryption and the decoding (not only the key unwrap, which is
//! aws-lc-rs's RSA-OAEP and has its own fuzzing upstream).

use std::sync::Arc;

use base64::Engine as _;
use conclave_data::dataset::{self, DataError, KeyMaterial, KeyUnwrapper};
use conclave_data::generator::{Generator, Party, schema};
use conclave_data::store::Location;
use futures::StreamExt as _;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::WriterProperties;

use crate::Harness;

/// The fixed data key of the encrypted seeds: it protects nothing (fuzzing input only).
const FUZZ_DEK: [u8; 32] = [0x42; 32];
const MASTER_KEY_ID: &str =
    "https://vault.fuzz:8443/keys/fuzz-data/00000000000000000000000000000000";

/// Hands out [`FUZZ_DEK`] for any key material naming [`MASTER_KEY_ID`].
struct FuzzUnwrapper;

impl KeyUnwrapper for FuzzUnwrapper {
    fn unwrap_dek(&self, m: &KeyMaterial) -> Result<Vec<u8>, DataError> {
        if m.master_key_id != MASTER_KEY_ID {
            return Err(DataError::Key("not the fuzzing key".into()));
        }
        base64::engine::general_purpose::STANDARD
            .decode(&m.wrapped_dek)
            .map_err(|_| DataError::Key("wrappedDEK is not base64".into()))?;
        Ok(FUZZ_DEK.to_vec())
    }
}

fn file(records: u64, encrypted: bool, row_group: usize) -> anyhow::Result<Vec<u8>> {
    let material = KeyMaterial {
        key_material_type: "PKMT1".into(),
        internal_storage: true,
        is_footer_key: true,
        kms_instance_id: Some("conclave".into()),
        kms_instance_url: Some("https://vault.fuzz:8443".into()),
        master_key_id: MASTER_KEY_ID.into(),
        wrapped_dek: base64::engine::general_purpose::STANDARD.encode([1u8; 16]),
        double_wrapping: false,
        key_encryption_key_id: None,
        wrapped_kek: None,
    };
    let mut props = WriterProperties::builder().set_max_row_group_row_count(Some(row_group));
    if encrypted {
        props = props.with_file_encryption_properties(
            FileEncryptionProperties::builder(FUZZ_DEK.to_vec())
                .with_footer_key_metadata(serde_json::to_vec(&material)?)
                .build()?,
        );
    }
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema(), Some(props.build()))?;
    let mut generator = Generator::new(Party::Contoso, 7, records);
    while let Some(batch) = generator.next_batch(16) {
        writer.write(&batch)?;
    }
    writer.close()?;
    Ok(out)
}

pub fn seeds() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![
        file(3, true, 2)?,
        file(20, true, 16)?,
        file(3, false, 2)?,
    ])
}

async fn read_all(loc: &Location) {
    let _ = dataset::inspect(loc).await;
    let unwrapper: Arc<dyn KeyUnwrapper> = Arc::new(FuzzUnwrapper);
    let _ = dataset::row_count(loc, Some(unwrapper.clone())).await;
    for columns in [None, Some(&["age", "country"][..])] {
        if let Ok(mut stream) = dataset::read_encrypted(loc, unwrapper.clone(), columns, 8).await {
            while let Some(batch) = stream.next().await {
                match batch {
                    Ok(b) => {
                        let _ = conclave_data::generator::records_from_batch(&b);
                    }
                    Err(_) => break,
                }
            }
        }
    }
    if let Ok(mut stream) = dataset::read_plain(loc, None, 8).await {
        while let Some(Ok(_)) = stream.next().await {}
    }
}

/// Under libFuzzer every panic aborts at once (libfuzzer-sys's panic hook), even one that
/// Conclave catches on purpose: `conclave_data::dataset` contains the Parquet reader's panics on
/// malformed files and turns them into errors. This lets panics raised in the reader's code (the
/// parquet crate and the arrow crates it decodes with, e.g. arrow-ipc for the footer's
/// `ARROW:schema`) unwind to that guard; one that escapes the guard still fails the target
/// (libfuzzer-sys aborts on any panic that leaves the harness).
fn let_parquet_panics_unwind() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .location()
                .is_some_and(|l| l.file().contains("/parquet-") || l.file().contains("/arrow-"))
            {
                return;
            }
            previous(info);
        }));
    });
}

pub fn harness() -> Harness {
    let_parquet_panics_unwind();
    let rt = crate::runtime();
    Box::new(move |input| {
        rt.block_on(async {
            let store = Arc::new(InMemory::new());
            let path = object_store::path::Path::from("fuzz.parquet");
            store
                .put(&path, PutPayload::from(input.to_vec()))
                .await
                .expect("an in-memory put");
            let loc = Location {
                store: store as Arc<dyn ObjectStore>,
                path,
                url: "memory:///fuzz.parquet".into(),
            };
            read_all(&loc).await;
        })
    })
}
