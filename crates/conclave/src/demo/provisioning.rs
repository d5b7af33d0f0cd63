//! What each party sets up before anything runs: release policies pinning the genuine workloads'
//! measurements, vault tokens on disk, and the encrypted datasets in storage.

use super::*;

pub(super) fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    conclave_net::write_file(path, text.as_bytes(), 0o600)?;
    Ok(())
}

pub(super) fn policy(attest_url: &str, measurements: &[String]) -> Value {
    json!({
        "version": "1.0.0",
        "anyOf": measurements.iter().map(|m| json!({
            "authority": attest_url,
            "allOf": [
                {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
                {"claim": "x-ms-compliance-status", "equals": "conclave-compliant"},
                {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
                {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": m},
            ]
        })).collect::<Vec<_>>(),
    })
}

pub(super) fn policy_body(p: &Value) -> ReleasePolicyBody {
    ReleasePolicyBody {
        content_type: Some("application/json; charset=utf-8".into()),
        data: Some(conclave_attest::api::b64url(p.to_string().as_bytes())),
        immutable: None,
    }
}

pub(super) fn token_path(state: &Path, vault: &str, principal: &str) -> PathBuf {
    state
        .join("tokens")
        .join(format!("{vault}-vault.{principal}.token"))
}

/// Generates and encrypts the party's records, unless the stored dataset already holds the
/// same number under the same key.
pub(super) async fn ensure_dataset(
    state: &Path,
    p: &PartyInfo,
    owner: &VaultClient,
    key_name: &str,
    records: u64,
) -> anyhow::Result<()> {
    let bundle = owner.get_key(key_name).await?;
    let public =
        conclave_data::dataset::VaultPublicKey::from_jwk(&serde_json::to_value(&bundle.key)?)?;
    let manifest_path = state.join("storage").join(format!("{}.json", p.id));
    let want = json!({"records": records, "seed": p.seed, "kid": public.kid});
    let loc = conclave_data::store::locate(&p.dataset)?;
    if std::fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|m| m == want)
        && conclave_data::dataset::inspect(&loc).await.is_ok()
    {
        return Ok(());
    }
    let party: Party = p.id.parse().map_err(anyhow::Error::msg)?;
    let mut generator = Generator::new(party, p.seed, records);
    let mut bar = crate::progress::Progress::new(&format!("{:<9} records", p.id), records);
    let batches = std::iter::from_fn(move || generator.next_batch(64 * 1024).map(Ok));
    conclave_data::dataset::write_encrypted(batches, schema(), &loc, &public, |n| bar.set(n))
        .await?;
    std::fs::write(&manifest_path, serde_json::to_vec(&want)?)?;
    Ok(())
}
