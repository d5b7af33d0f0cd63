-- Key name -> privacy-budget ledger (total and spent epsilon in millionths, releases debited):
-- see PrivacyBudget in crates/conclave-protocol/src/vault.rs.
CREATE TABLE vault_budgets (k bytea PRIMARY KEY, v bytea NOT NULL);
