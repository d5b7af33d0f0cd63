//! generate → encrypt → store → read back in batches → the same records.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use conclave_data::dataset::{self, KeyUnwrapper, PrivateKeyUnwrapper, VaultPublicKey};
use conclave_data::generator::{Generator, Party, records_from_batch, schema};
use conclave_data::store::locate;
use futures::StreamExt as _;

const KID: &str = "https://127.0.0.1:8443/keys/contoso-data/0123456789abcdef0123456789abcdef";

fn vault_key() -> (VaultPublicKey, PrivateDecryptingKey) {
    let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki = private.public_key().as_der().unwrap();
    let (n, e) = conclave_pki::x509::parse_rsa_spki(spki.as_ref()).unwrap();
    (
        VaultPublicKey {
            kid: KID.into(),
            n,
            e,
        },
        private,
    )
}

fn batches(
    party: Party,
    n: u64,
) -> impl Iterator<Item = Result<arrow_array::RecordBatch, dataset::DataError>> {
    let mut g = Generator::new(party, 11, n);
    std::iter::from_fn(move || g.next_batch(4096).map(Ok))
}

async fn read_all(
    url: &str,
    unwrapper: Arc<dyn KeyUnwrapper>,
) -> Result<Vec<conclave_data::generator::Record>, dataset::DataError> {
    let loc = locate(url).unwrap();
    let mut stream = dataset::read_encrypted(&loc, unwrapper, None, 1000).await?;
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        out.extend(records_from_batch(&b?).unwrap());
    }
    Ok(out)
}

#[tokio::test]
async fn local_round_trip_and_tamper_detection() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir
        .path()
        .join("contoso.parquet")
        .to_str()
        .unwrap()
        .to_string();
    let (public, private) = vault_key();
    let loc = locate(&url).unwrap();
    let mut seen = 0;
    let summary = dataset::write_encrypted(
        batches(Party::Contoso, 20_000),
        schema(),
        &loc,
        &public,
        |n| seen = n,
    )
    .await
    .unwrap();
    assert_eq!((summary.rows, seen), (20_000, 20_000));

    // Nothing in the file is readable without the key.
    let raw = std::fs::read(dir.path().join("contoso.parquet")).unwrap();
    let expected: Vec<_> = Generator::new(Party::Contoso, 11, 20_000)
        .records()
        .collect();
    for needle in [&expected[0].name, &expected[0].phone, &expected[1].address] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} appears in the ciphertext"
        );
    }
    assert_eq!(&raw[raw.len() - 4..], b"PARE");

    let inspected = dataset::inspect(&loc).await.unwrap();
    let material = inspected.key_material.unwrap();
    assert_eq!(material.master_key_id, KID);
    assert_eq!(material.key_material_type, "PKMT1");
    assert!(!material.double_wrapping);
    assert_eq!(
        material.kms_instance_url.as_deref(),
        Some("https://127.0.0.1:8443")
    );

    let unwrapper: Arc<dyn KeyUnwrapper> =
        Arc::new(PrivateKeyUnwrapper::new(KID, private).unwrap());
    let got = read_all(&url, unwrapper.clone()).await.unwrap();
    assert_eq!(got, expected);

    // Column projection reads only what is asked.
    let mut s = dataset::read_encrypted(&loc, unwrapper.clone(), Some(&["country", "age"]), 5000)
        .await
        .unwrap();
    let b = s.next().await.unwrap().unwrap();
    assert_eq!(b.num_columns(), 2);

    // Another key cannot read it.
    let (_, other) = vault_key();
    let wrong: Arc<dyn KeyUnwrapper> = Arc::new(PrivateKeyUnwrapper::new(KID, other).unwrap());
    assert!(read_all(&url, wrong).await.is_err());
    let other_kid: Arc<dyn KeyUnwrapper> =
        Arc::new(PrivateKeyUnwrapper::new("https://x/keys/y/z", vault_key().1).unwrap());
    let err = read_all(&url, other_kid).await.unwrap_err().to_string();
    assert!(err.contains("encrypted under"), "{err}");

    // No flipped byte changes what is read: the read fails, or (for the few bytes the reader
    // never authenticates because they carry nothing — the redundant 4-byte length prefix of a
    // page module, the page index it does not load) yields exactly the original records.
    let mut failed = 0;
    for pos in (4..raw.len() - 4).step_by(509) {
        let mut bad = raw.clone();
        bad[pos] ^= 0x40;
        let path = dir.path().join("tampered.parquet");
        std::fs::write(&path, &bad).unwrap();
        match read_all(path.to_str().unwrap(), unwrapper.clone()).await {
            Err(_) => failed += 1,
            Ok(records) => assert_eq!(
                records, expected,
                "a flip at {pos} changed the data without an error"
            ),
        }
    }
    let tried = (4..raw.len() - 4).step_by(509).count();
    assert!(
        failed * 100 >= tried * 95,
        "only {failed} of {tried} flips were detected"
    );
    // Truncated.
    let path = dir.path().join("truncated.parquet");
    std::fs::write(&path, &raw[..raw.len() / 2]).unwrap();
    assert!(
        read_all(path.to_str().unwrap(), unwrapper.clone())
            .await
            .is_err()
    );
    // Swapped: a file of another party, encrypted under another key, is not accepted as this one.
    let fab_url = dir
        .path()
        .join("fabrikam.parquet")
        .to_str()
        .unwrap()
        .to_string();
    let (fab_public, _) = vault_key();
    let fab_public = VaultPublicKey {
        kid: "https://127.0.0.1:8443/keys/fabrikam-data/00".into(),
        ..fab_public
    };
    dataset::write_encrypted(
        batches(Party::Fabrikam, 100),
        schema(),
        &locate(&fab_url).unwrap(),
        &fab_public,
        |_| {},
    )
    .await
    .unwrap();
    assert!(read_all(&fab_url, unwrapper).await.is_err());
}

/// Untrusted storage swaps an owner's encrypted dataset for a plain Parquet file of made-up
/// records: an encrypted read refuses it (the metadata names no encryption algorithm), rather
/// than analysing whatever was put there.
#[tokio::test]
async fn a_plain_file_in_place_of_an_encrypted_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("swapped.parquet");
    let url = url.to_str().unwrap();
    let loc = locate(url).unwrap();
    dataset::write_plain(batches(Party::Contoso, 100), schema(), &loc, |_| {})
        .await
        .unwrap();
    let (_, private) = vault_key();
    let unwrapper: Arc<dyn KeyUnwrapper> =
        Arc::new(PrivateKeyUnwrapper::new(KID, private).unwrap());
    let err = read_all(url, unwrapper.clone()).await.unwrap_err();
    assert!(matches!(err, dataset::DataError::NotEncrypted(_)), "{err}");
    assert!(err.to_string().contains("not encrypted"), "{err}");
    // Projected reads too.
    let err = dataset::read_encrypted(&loc, unwrapper, Some(&["age"]), 10)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("not encrypted"), "{err}");

    let inspected = dataset::inspect(&loc).await.unwrap();
    assert!(!inspected.encrypted);
    assert_eq!(inspected.mode, "none");
    assert!(inspected.key_material.is_none());
    let columns = inspected.columns.unwrap();
    assert!(columns.iter().all(|c| c.encryption == "none"));
}

/// A dataset moves to a new key version by rewriting its tail only: every byte before the
/// crypto metadata is unchanged, the old key no longer opens it, the new one reads the same
/// records; the crypto metadata re-encodes byte for byte, and a failed re-wrap leaves the file.
#[tokio::test]
async fn rewrap_moves_a_dataset_to_a_new_key_without_touching_its_pages() {
    use aws_lc_rs::rsa::{
        OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
        PublicEncryptingKey,
    };
    use conclave_data::rewrap::{EncryptedTail, FileCryptoMetaData, rewrap_footer_key};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("contoso.parquet");
    let url = path.to_str().unwrap().to_string();
    let (old_public, old_private) = vault_key();
    let (mut new_public, new_private) = vault_key();
    new_public.kid = KID.replace("0123456789abcdef0123456789abcdef", &"f".repeat(32));
    let loc = locate(&url).unwrap();
    dataset::write_encrypted(
        batches(Party::Contoso, 5_000),
        schema(),
        &loc,
        &old_public,
        |_| {},
    )
    .await
    .unwrap();
    let before = std::fs::read(&path).unwrap();
    let expected = read_all(
        &url,
        Arc::new(PrivateKeyUnwrapper::new(KID, old_private.clone()).unwrap()),
    )
    .await
    .unwrap();

    // The crypto metadata decodes and re-encodes to the very same bytes.
    let tail = EncryptedTail::read(&loc).await.unwrap();
    let raw_tail = &before[tail.offset as usize..];
    let (decoded, used) = FileCryptoMetaData::decode(raw_tail).unwrap();
    assert_eq!(decoded.encode(), raw_tail[..used]);
    assert_eq!(tail.encode(), raw_tail);
    assert_eq!(decoded.encryption_algorithm.id, 1, "AES_GCM_V1");

    // A re-wrap the vault refuses leaves the file as it was.
    let refused = rewrap_footer_key(&loc, |_| async {
        Err(dataset::DataError::Key("refused by the vault".into()))
    })
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("refused by the vault"));
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // Another writer replaces the object while the vault re-wraps: the re-wrap fails with the
    // reason and leaves the other writer's object, never old pages under its name.
    let theirs = b"PAR1 another writer's object".to_vec();
    let raced = rewrap_footer_key(&loc, |w| {
        let (path, theirs) = (path.clone(), theirs.clone());
        async move {
            std::fs::write(&path, &theirs).unwrap();
            Ok(("https://vault.example/keys/k/v".into(), w.wrapped))
        }
    })
    .await
    .unwrap_err();
    assert!(
        raced.to_string().contains("changed by another writer"),
        "{raced}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), theirs);
    std::fs::write(&path, &before).unwrap();

    let unwrap_old = OaepPrivateDecryptingKey::new(old_private.clone()).unwrap();
    let spki = conclave_pki::x509::rsa_spki_from_components(&new_public.n, &new_public.e).unwrap();
    let wrap_new =
        OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&spki).unwrap()).unwrap();
    let new_kid = new_public.kid.clone();
    let summary = rewrap_footer_key(&loc, |w| async move {
        assert_eq!(w.master_key_id, KID);
        let mut dek = vec![0u8; unwrap_old.min_output_size()];
        let dek = unwrap_old
            .decrypt(&OAEP_SHA256_MGF1SHA256, &w.wrapped, &mut dek, None)
            .unwrap()
            .to_vec();
        let mut out = vec![0u8; wrap_new.ciphertext_size()];
        let out = wrap_new
            .encrypt(&OAEP_SHA256_MGF1SHA256, &dek, &mut out, None)
            .unwrap()
            .to_vec();
        Ok((new_kid.clone(), out))
    })
    .await
    .unwrap();
    assert_eq!(
        (summary.from.as_str(), summary.to.as_str()),
        (KID, new_public.kid.as_str())
    );
    assert_eq!(summary.wrapping, "single wrapping");

    let after = std::fs::read(&path).unwrap();
    assert_eq!(summary.bytes_unchanged, tail.offset);
    assert_eq!(
        after[..tail.offset as usize],
        before[..tail.offset as usize]
    );
    assert_ne!(
        after[tail.offset as usize..],
        before[tail.offset as usize..]
    );
    assert_eq!(
        dataset::inspect(&loc)
            .await
            .unwrap()
            .key_material
            .unwrap()
            .master_key_id,
        new_public.kid
    );
    let records = read_all(
        &url,
        Arc::new(PrivateKeyUnwrapper::new(&new_public.kid, new_private).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(records, expected);
    let old = read_all(
        &url,
        Arc::new(PrivateKeyUnwrapper::new(KID, old_private).unwrap()),
    )
    .await
    .unwrap_err();
    assert!(
        old.to_string().contains("not under the released key"),
        "{old}"
    );

    // A plain Parquet file has nothing to re-wrap, and says so.
    let plain = dir.path().join("plain.parquet");
    {
        let file = std::fs::File::create(&plain).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema(), None).unwrap();
        for b in batches(Party::Contoso, 10) {
            w.write(&b.unwrap()).unwrap();
        }
        w.close().unwrap();
    }
    let e = rewrap_footer_key(&locate(plain.to_str().unwrap()).unwrap(), |_| async {
        unreachable!("nothing to re-wrap")
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("not encrypted"), "{e}");
}
