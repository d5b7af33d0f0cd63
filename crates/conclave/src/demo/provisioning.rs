//! What each party sets up before anything runs: release policies pinning the genuine workloads'
//! measurements (and, for the analytics partner's workload, the contracts each owner approved),
//! vault tokens on disk, and the encrypted datasets in storage.

use super::*;
use conclave_kms::policy::{AuthorityBlock, Condition, ReleasePolicy};

pub(super) fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    conclave_net::write_file(path, text.as_bytes(), 0o600)?;
    Ok(())
}

/// The release policy of a party's key: a token of the demo's attestation service for a
/// non-debuggable SEV-SNP guest whose launch measurement is one of `measurements`.
pub(super) fn policy(attest_url: &str, measurements: &[String]) -> ReleasePolicy {
    ReleasePolicy {
        version: "1.0.0".into(),
        authorities: measurements
            .iter()
            .map(|m| AuthorityBlock {
                authority: attest_url.to_string(),
                condition: Condition::AllOf(vec![
                    Condition::equals("x-ms-attestation-type", "sevsnpvm"),
                    Condition::equals("x-ms-compliance-status", "conclave-compliant"),
                    Condition::equals("x-ms-sevsnpvm-is-debuggable", false),
                    Condition::equals("x-ms-sevsnpvm-launchmeasurement", m.as_str()),
                ]),
            })
            .collect(),
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

/// Starts one vault per party (each with its own store and master key) and describes the
/// parties: their vault, key id and dataset location.
pub(super) fn start_vaults(
    site: &Site,
    listeners: Vec<tokio::net::TcpListener>,
    stop: &Stop,
) -> anyhow::Result<Vec<PartyInfo>> {
    let mut parties = Vec::new();
    for (demo_party, listener) in PARTIES.iter().zip(listeners) {
        let id = demo_party.party.name();
        let vault_dir = site.state.join("vaults").join(id);
        let (vault_url, admin_path, _) = deploy::vault(
            VaultSpec::new(&vault_dir, &site.ca, &site.http, &site.attest_url),
            listener,
            stop,
        )?;
        let admin_token = std::fs::read_to_string(&admin_path)
            .with_context(|| format!("reading {}", admin_path.display()))?;
        let dataset = site.state.join("storage").join(format!("{id}.parquet"));
        parties.push(PartyInfo {
            id: id.to_string(),
            name: demo_party.name.to_string(),
            holds: demo_party.holds.to_string(),
            analyst: demo_party.analyst,
            seed: demo_party.seed,
            key: format!("{vault_url}/keys/{id}-data"),
            vault: vault_url,
            vault_dir,
            dataset: format!("file://{}", dataset.display()),
            admin_token,
        });
    }
    Ok(parties)
}

/// Principals: on each vault, its owner and both other parties, with a token file each (kept
/// from an earlier run).
pub(super) async fn add_principals(site: &Site, parties: &[PartyInfo]) -> anyhow::Result<()> {
    for vault in parties {
        let admin = VaultClient::new(site.http.clone(), &vault.vault, &vault.admin_token);
        for who in parties {
            let path = token_path(&site.state, &vault.id, &who.id);
            if !path.exists() {
                let token = admin.add_principal(&who.id, false).await?;
                write_secret(&path, &token)?;
            }
        }
    }
    Ok(())
}

/// Keys and data: each owner creates its key (or, on a later run, updates its policy: the
/// genuine workloads' measurements change when the binary or the ports do), pinning
/// `measurements` (one per party, in order). Each party's own workload may release its key; the
/// analytics partner's workload may release another owner's key only while it attests a
/// contract that owner approved, with `k` at least `min_k` (the owner's floor). Each owner
/// grants the partner release and writes its encrypted dataset of `records` records.
pub(super) async fn provision_keys(
    site: &Site,
    parties: &[PartyInfo],
    measurements: &[String],
    records: u64,
    contracts: &BTreeMap<&'static str, conclave_contract::Contract>,
    min_k: u64,
) -> anyhow::Result<()> {
    let partner = &parties[analyst()];
    for (i, p) in parties.iter().enumerate() {
        let mut release_policy = policy(&site.attest_url, &[measurements[i].clone()]);
        if !p.analyst {
            let partner_pin = policy(&site.attest_url, &[measurements[analyst()].clone()]);
            for terms in owner_terms(&p.id, contracts, min_k) {
                release_policy
                    .authorities
                    .extend(terms.add_to(&partner_pin).authorities);
            }
        }
        let owner = VaultClient::new(
            site.http.clone(),
            &p.vault,
            &std::fs::read_to_string(token_path(&site.state, &p.id, &p.id))?,
        );
        let name = format!("{}-data", p.id);
        let body = release_policy.to_body(false);
        match owner.get_key(&name).await {
            Ok(existing) => {
                let version = existing.key.version().to_string();
                owner
                    .update_key(
                        &name,
                        &version,
                        &UpdateKeyRequest {
                            release_policy: Some(body),
                            ..Default::default()
                        },
                    )
                    .await?;
            }
            Err(ClientError::Refused { status: 404, .. }) => {
                owner
                    .create_key(
                        &name,
                        &CreateKeyRequest {
                            kty: Some("RSA-HSM".into()),
                            key_size: Some(2048),
                            attributes: Some(KeyAttributes {
                                exportable: Some(true),
                                ..Default::default()
                            }),
                            release_policy: Some(body),
                            ..Default::default()
                        },
                    )
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
        if !p.analyst {
            owner
                .grant(&name, &partner.id, &[Permission::Release])
                .await?;
        }
        ensure_dataset(&site.state, p, &owner, &name, records).await?;
    }
    Ok(())
}
