//! The demo's analysis contracts: the three of `contracts/`, filled in for this deployment (its
//! parties' approval and receiver keys, vaults and storage), signed by the parties that approve
//! them, in `<state>/contracts` (the analytics partner's `contracts_dir`); and the terms with
//! which each data owner's key pins the contracts it approved.
//!
//! Contoso and Fabrikam approve the partner demographics, Fabrikam the shared-customers join;
//! nobody approves Contoso's salaries by city, which Woodgrove would like to run: Contoso's
//! vault refuses its key to it, and the page shows why.

use super::*;
use crate::shipped_contracts::{self as shipped, PartyFill, ShippedContract};
use conclave_contract::Contract;
use conclave_contract::policy::OwnerTerms;

/// A shipped contract and who approves it in the demo.
pub(super) struct DemoContract {
    pub(super) contract: ShippedContract,
    /// The data providers that approve it.
    pub(super) approved_by: &'static [&'static str],
}

pub(super) const CONTRACTS: [DemoContract; 3] = [
    DemoContract {
        contract: shipped::PARTNER_DEMOGRAPHICS,
        approved_by: &["contoso", "fabrikam", "woodgrove"],
    },
    DemoContract {
        contract: shipped::SHARED_CUSTOMERS,
        approved_by: &["fabrikam", "woodgrove"],
    },
    DemoContract {
        contract: shipped::CONTOSO_SALARIES,
        approved_by: &[],
    },
];

/// A key pair (PKCS#8 PEM private, SPKI PEM public) kept as `<state>/keys/<name>.key` (0600)
/// and `.pub`: made on the first run, reused by the next.
fn key_pair(state: &Path, name: &str) -> anyhow::Result<(String, String)> {
    let private_path = state.join("keys").join(format!("{name}.key"));
    let public_path = private_path.with_extension("pub");
    if let (Ok(private), Ok(public)) = (
        std::fs::read_to_string(&private_path),
        std::fs::read_to_string(&public_path),
    ) {
        return Ok((private, public));
    }
    let (private, public) = conclave_contract::approval::generate_key()?;
    write_secret(&private_path, &private)?;
    std::fs::write(&public_path, &public)
        .with_context(|| format!("writing {}", public_path.display()))?;
    Ok((private, public))
}

/// Writes the demo's contracts, filled in, into `<state>/contracts` with the approvals of
/// [`DemoContract::approved_by`] (signed anew at every run; other approval files there go).
/// Returns each contract by id.
pub(super) fn write_contracts(
    state: &Path,
    parties: &[PartyInfo],
) -> anyhow::Result<BTreeMap<&'static str, Contract>> {
    let dir = state.join("contracts");
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "jws") {
            std::fs::remove_file(&path)?;
        }
    }
    let mut approval_keys = BTreeMap::new();
    let mut keys = Vec::new();
    for p in parties {
        let (approval_private, approval) = key_pair(state, &format!("{}-approval", p.id))?;
        let (_, receiver) = key_pair(state, &format!("{}-receiver", p.id))?;
        approval_keys.insert(p.id.clone(), approval_private);
        keys.push((approval, receiver));
    }
    let fills: Vec<PartyFill<'_>> = parties
        .iter()
        .zip(&keys)
        .map(|(p, (approval, receiver))| PartyFill {
            id: &p.id,
            approval_key: approval,
            receiver_key: receiver,
            vault_host: p.vault.trim_start_matches("https://"),
        })
        .collect();
    let storage = format!("file://{}", state.join("storage").display());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut contracts = BTreeMap::new();
    for c in &CONTRACTS {
        let id = c.contract.id;
        let text = c.contract.fill(&fills, &storage);
        let contract =
            Contract::parse(&text).with_context(|| format!("the shipped contract {id}"))?;
        std::fs::write(dir.join(format!("{id}.toml")), &text)?;
        for party in c.approved_by {
            let jws =
                conclave_contract::approval::sign(&contract, party, &approval_keys[*party], now)?;
            std::fs::write(dir.join(format!("{id}.{party}.jws")), jws)?;
        }
        contracts.insert(id, contract);
    }
    Ok(contracts)
}

/// What `owner`'s key pins for the analytics partner: one term per contract it approved that
/// reads its data, with the owner's floor `min_k`.
pub(super) fn owner_terms(
    owner: &str,
    contracts: &BTreeMap<&'static str, Contract>,
    min_k: u64,
) -> Vec<OwnerTerms> {
    CONTRACTS
        .iter()
        .filter(|c| c.approved_by.contains(&owner))
        .map(|c| &contracts[c.contract.id])
        .filter(|c| c.inputs.iter().any(|i| i.provider == owner))
        .map(|c| OwnerTerms {
            digest: c.digest(),
            min_k,
            max_epsilon: None,
        })
        .collect()
}
