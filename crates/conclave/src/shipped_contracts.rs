//! The analysis contracts shipped in `contracts/`, compiled in: `conclave demo` fills them in
//! for its parties, `conclave bench analysis` runs them.

use conclave_contract::Contract;

/// A shipped contract: its id (the file stem) and its text, with `<…>` placeholders.
pub struct ShippedContract {
    pub id: &'static str,
    pub template: &'static str,
}

pub const PARTNER_DEMOGRAPHICS: ShippedContract = ShippedContract {
    id: "partner-demographics",
    template: include_str!("../../../contracts/partner-demographics.toml"),
};

pub const SHARED_CUSTOMERS: ShippedContract = ShippedContract {
    id: "shared-customers",
    template: include_str!("../../../contracts/shared-customers.toml"),
};

pub const CONTOSO_SALARIES: ShippedContract = ShippedContract {
    id: "contoso-salaries",
    template: include_str!("../../../contracts/contoso-salaries.toml"),
};

/// One party's fillings: its approval and receiver public keys (SPKI PEM) and its vault's
/// `host:port`.
pub struct PartyFill<'a> {
    pub id: &'a str,
    pub approval_key: &'a str,
    pub receiver_key: &'a str,
    pub vault_host: &'a str,
}

impl ShippedContract {
    /// The contract's text with its placeholders filled: `parties`' keys and vaults, and
    /// `storage` (a URL prefix: the datasets are `<storage>/<party>.parquet`).
    pub fn fill(&self, parties: &[PartyFill<'_>], storage: &str) -> String {
        let mut text = self.template.replace("<storage>", storage);
        for p in parties {
            text = text
                .replace(
                    &format!("<{}'s approval public key (PEM)>", p.id),
                    p.approval_key,
                )
                .replace(
                    &format!("<{}'s receiver public key (PEM)>", p.id),
                    p.receiver_key,
                )
                .replace(&format!("<{}'s vault>", p.id), p.vault_host);
        }
        text
    }

    /// [`Self::fill`]ed with fresh keys and placeholder vaults: a contract to run directly with
    /// the engine (benchmarks), which needs no approval or vault.
    pub fn with_fresh_keys(&self, storage: &str) -> anyhow::Result<Contract> {
        let mut keys = Vec::new();
        for id in ["contoso", "fabrikam", "woodgrove"] {
            let (_, approval) = conclave_contract::approval::generate_key()?;
            let (_, receiver) = conclave_contract::approval::generate_key()?;
            keys.push((id, approval, receiver));
        }
        let fills: Vec<PartyFill<'_>> = keys
            .iter()
            .map(|(id, approval, receiver)| PartyFill {
                id,
                approval_key: approval,
                receiver_key: receiver,
                vault_host: "vault.invalid",
            })
            .collect();
        Ok(Contract::parse(&self.fill(&fills, storage))?)
    }
}
