//! Data-level attacks: the dataset reader refuses (no service involved, nothing to audit).

use super::*;
use conclave_kms::api::KeyBundle;

pub async fn run(c: &Ctx, m: &mut Matrix) {
    let Ctx {
        env,
        contoso,
        fabrikam,
        released_kid,
        released_der,
        ..
    } = c;
    let dir = env.dir.join("datasets");
    std::fs::create_dir_all(&dir).unwrap();
    let public_of = |bundle: &KeyBundle| VaultPublicKey {
        kid: bundle.key.kid.clone(),
        n: b64url_decode(&bundle.key.n).unwrap(),
        e: b64url_decode(&bundle.key.e).unwrap(),
    };
    let write = |name: &str, party: Party, public: VaultPublicKey| {
        let path = dir.join(name).to_str().unwrap().to_string();
        async move {
            let mut g = Generator::new(party, 3, 5_000);
            let batches = std::iter::from_fn(move || g.next_batch(1024).map(Ok));
            dataset::write_encrypted(batches, schema(), &locate(&path).unwrap(), &public, |_| {})
                .await
                .unwrap();
            path
        }
    };
    let created = contoso.get_key("contoso-data").await.unwrap();
    let contoso_file = write("contoso.parquet", Party::Contoso, public_of(&created)).await;
    let fabrikam_bundle = fabrikam.get_key("fabrikam-data").await.unwrap();
    let fabrikam_file = write(
        "fabrikam.parquet",
        Party::Fabrikam,
        public_of(&fabrikam_bundle),
    )
    .await;
    let contoso_reader: Arc<dyn KeyUnwrapper> = Arc::new(
        PrivateKeyUnwrapper::new(
            released_kid,
            aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(released_der).unwrap(),
        )
        .unwrap(),
    );
    assert_eq!(
        read_all(&contoso_file, contoso_reader.clone())
            .await
            .unwrap(),
        5_000,
        "control: the genuine file reads"
    );
    let bytes = std::fs::read(&contoso_file).unwrap();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let tampered_file = dir.join("tampered.parquet");
    std::fs::write(&tampered_file, &flipped).unwrap();
    let truncated_file = dir.join("truncated.parquet");
    std::fs::write(&truncated_file, &bytes[..bytes.len() * 2 / 3]).unwrap();
    // Made-up records written as plain Parquet under Contoso's file name.
    let forged_file = dir.join("forged-plain.parquet");
    {
        let mut g = Generator::new(Party::Contoso, 99, 5_000);
        let batches = std::iter::from_fn(move || g.next_batch(1024).map(Ok));
        dataset::write_plain(
            batches,
            schema(),
            &locate(forged_file.to_str().unwrap()).unwrap(),
            |_| {},
        )
        .await
        .unwrap();
    }
    for (attack, file, needle) in [
        (
            "tampered ciphertext",
            tampered_file.to_str().unwrap(),
            "it may be tampered with",
        ),
        (
            "truncated ciphertext",
            truncated_file.to_str().unwrap(),
            "it may be tampered with",
        ),
        (
            "swapped ciphertext (another party's file under this name)",
            fabrikam_file.as_str(),
            "is encrypted under",
        ),
        (
            "forged records as a plain Parquet file under this name",
            forged_file.to_str().unwrap(),
            "the dataset is not encrypted",
        ),
    ] {
        let err = read_all(file, contoso_reader.clone())
            .await
            .expect_err(&format!("{attack}: the reader returned records"));
        let reason = err.to_string();
        assert!(reason.contains(needle), "{attack}: {reason}");
        m.row(attack, "dataset reader (no plaintext returned)", &reason);
    }
}
