//! Analysis contracts: the document every data owner approves before its key is released to a
//! workload that will run it.
//!
//! A contract names the parties and their roles, each input dataset (where it is, the vault key
//! that opens it, the Arrow schema it must have), the analysis as SQL queries over named tables,
//! and the rules every result must pass before it leaves the TEE (aggregates only, a minimum
//! group size `k`, columns that may never appear, optional differential privacy).
//!
//! - [`Contract::parse`] reads one (TOML, or the same shape as JSON) and checks it;
//! - [`Contract::digest`] is its identity: SHA-256 over its RFC 8785 canonical JSON, so that
//!   formatting, comments and key order do not change it and any change of content does;
//! - [`approval`] signs and verifies owners' approvals of a digest (ES256 JWS, RFC 7515);
//! - [`policy`] gives the runtime claim a workload attests for the contract it runs, and the
//!   release-policy conditions with which an owner's key pins it;
//! - [`sealing`] seals a run's result to each result receiver (HPKE, RFC 9180);
//! - [`receipt`] is what a run's signed receipt says, and its check against the contract.

#![forbid(unsafe_code)]

pub mod approval;
pub mod policy;
pub mod receipt;
pub mod sealing;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A contract's format version (`format` in the document).
pub const FORMAT: u32 = 1;

/// An analysis contract (see the crate documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// The document format; [`FORMAT`].
    pub format: u32,
    /// The contract's name: 1-64 lowercase letters, digits and dashes.
    pub name: String,
    /// What the analysis is for, in words the approving owners read.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Everyone involved, each with their roles.
    pub parties: Vec<Party>,
    /// The tables the queries read, one per dataset.
    pub inputs: Vec<Input>,
    /// The analysis: queries run in order, each result checked against `output` before release.
    pub queries: Vec<Query>,
    /// What every result must satisfy.
    pub output: OutputRules,
}

/// A party to the contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// Short id (`contoso`): 1-20 lowercase letters and digits, as in the demo's party ids.
    pub id: String,
    /// The name shown to people (`Contoso`).
    pub display_name: String,
    /// What the party does under this contract.
    pub roles: Vec<Role>,
    /// The public key (SPKI PEM, ECDSA P-256) that verifies this party's approvals. Every data
    /// provider has one: a provider's approval is what its key release is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_key: Option<String>,
    /// The public key (SPKI PEM) results are encrypted to, for a result receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_key: Option<String>,
}

/// A party's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Brings a dataset and decides, by approving, whether its key is released for this
    /// contract.
    DataProvider,
    /// Runs the analysis in its attested workload.
    Analyst,
    /// Receives the results.
    ResultReceiver,
}

/// An input table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The table name the queries use: a SQL identifier (letters, digits, `_`).
    pub table: String,
    /// The data provider (a party id) whose dataset it is.
    pub provider: String,
    /// Where the encrypted dataset is (`az://…`, `s3://…`, `https://…`, `file://…`).
    pub url: String,
    /// The vault key that opens it (`https://<vault>/keys/<name>[/<version>]`).
    pub key: String,
    /// The Arrow schema the dataset must have; a dataset with another is refused.
    pub schema: Vec<Column>,
}

/// A column of an input's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    /// The Arrow type: `bool`, `int8`…`int64`, `uint8`…`uint64`, `float32`, `float64`,
    /// `decimal(P,S)` (P 1-38, S 0-P), `string` (also dictionary-encoded), `date` (days since
    /// the epoch), `timestamp` (microseconds, UTC).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether the column may hold nulls.
    #[serde(default)]
    pub nullable: bool,
}

/// One query of the analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// The result's name: 1-64 lowercase letters, digits and underscores.
    pub name: String,
    /// The SQL (Apache DataFusion's dialect), over the inputs' tables.
    pub sql: String,
}

/// The rules every result must pass before it leaves the TEE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRules {
    /// Only aggregates leave the TEE: every result row is a group with a count.
    pub aggregate_only: bool,
    /// The smallest group released: groups of fewer records are withheld (and counted).
    pub k: u64,
    /// Input columns that may never appear in a result, even aggregated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbidden_columns: Vec<String>,
    /// Noise added to every released aggregate, per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differential_privacy: Option<DifferentialPrivacy>,
}

/// Differential privacy for one run of the contract: every released statistic is noised, and
/// which groups are released is decided on a noisy count, so that one person's records change
/// what comes out only within (ε, δ) (the unit of privacy is one record of one input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DifferentialPrivacy {
    pub mechanism: Mechanism,
    /// The privacy loss ε of one run (over all its queries): finite, above 0.
    pub epsilon: f64,
    /// δ of one run: from 0 (inclusive) to 1 for the Laplace mechanism, where it pays for
    /// releasing which groups exist (a query with GROUP BY needs δ above 0; one without does
    /// not); above 0 and below 1 for the Gaussian.
    #[serde(default)]
    pub delta: f64,
    /// The range `[lower, upper]` each summed or averaged input column is clamped to before it
    /// is aggregated: what bounds one record's effect on a SUM or AVG (its sensitivity). A
    /// query that sums or averages a column without bounds is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bounds: BTreeMap<String, [f64; 2]>,
}

/// Whether `t` (a [`Column::data_type`]) is a number that can be clamped and summed.
pub fn numeric_column_type(t: &str) -> bool {
    t.starts_with("int")
        || t.starts_with("uint")
        || t.starts_with("float")
        || t.starts_with("decimal(")
}

/// A differential-privacy mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// Laplace noise (pure ε-DP).
    Laplace,
    /// Gaussian noise ((ε, δ)-DP).
    Gaussian,
}

/// Why a document is not a valid contract; the message names the field and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid contract: {0}")]
pub struct ContractError(pub String);

fn bad<T>(msg: impl Into<String>) -> Result<T, ContractError> {
    Err(ContractError(msg.into()))
}

fn is_name(s: &str, max: usize, extra: Option<char>) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || Some(c) == extra)
}

/// The largest `k` (2^53 - 1): RFC 8785 writes numbers as IEEE 754 doubles, so a larger one
/// could share its canonical form, and so its digest, with another.
pub const MAX_K: u64 = (1 << 53) - 1;

/// A character that could hide or rewrite what an owner reads before approving: C0/C1 controls
/// (but line feed and tab where `multiline`) and Unicode's bidirectional formatting characters.
fn deceptive(c: char, multiline: bool) -> bool {
    (c.is_control() && !(multiline && (c == '\n' || c == '\t')))
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `t` is one of the column types [`Column::data_type`] lists.
pub fn valid_column_type(t: &str) -> bool {
    match t {
        "bool" | "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16" | "uint32"
        | "uint64" | "float32" | "float64" | "string" | "date" | "timestamp" => true,
        _ => t
            .strip_prefix("decimal(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.split_once(','))
            .and_then(|(p, s)| Some((p.trim().parse::<u8>().ok()?, s.trim().parse::<u8>().ok()?)))
            .is_some_and(|(p, s)| (1..=38).contains(&p) && s <= p),
    }
}

impl Contract {
    /// Reads a contract from TOML (or JSON, when the text starts with `{`) and checks it.
    ///
    /// # Errors
    /// [`ContractError`] naming the first field that is missing, unknown or wrong.
    pub fn parse(text: &str) -> Result<Self, ContractError> {
        let contract: Contract = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| ContractError(format!("{e}")))?
        } else {
            toml::from_str(text).map_err(|e| ContractError(e.to_string()))?
        };
        let mut contract = contract;
        contract.normalise();
        contract.check()?;
        Ok(contract)
    }

    /// Line endings to LF in the multi-line texts (SQL, description, PEM keys), and keys
    /// without surrounding whitespace: a contract saved on another system keeps its digest.
    pub fn normalise(&mut self) {
        let lf = |s: &mut String| {
            if s.contains('\r') {
                *s = s.replace("\r\n", "\n");
            }
        };
        lf(&mut self.description);
        for q in &mut self.queries {
            lf(&mut q.sql);
        }
        for p in &mut self.parties {
            for key in [&mut p.approval_key, &mut p.receiver_key]
                .into_iter()
                .flatten()
            {
                lf(key);
                *key = key.trim().to_string();
            }
        }
    }

    /// Every text of the contract, and whether it may span lines.
    fn texts(&self) -> Vec<(String, &str, bool)> {
        let mut t = vec![
            ("name".to_string(), self.name.as_str(), false),
            ("description".to_string(), self.description.as_str(), true),
        ];
        for p in &self.parties {
            t.push((format!("party {:?}: id", p.id), &p.id, false));
            t.push((
                format!("party {:?}: display_name", p.id),
                &p.display_name,
                false,
            ));
            for key in [&p.approval_key, &p.receiver_key].into_iter().flatten() {
                t.push((format!("party {:?}: key", p.id), key, true));
            }
        }
        for i in &self.inputs {
            for (what, v) in [
                ("table", &i.table),
                ("provider", &i.provider),
                ("url", &i.url),
                ("key", &i.key),
            ] {
                t.push((format!("input {:?}: {what}", i.table), v, false));
            }
            for c in &i.schema {
                t.push((format!("input {:?}: column", i.table), &c.name, false));
                t.push((format!("input {:?}: type", i.table), &c.data_type, false));
            }
        }
        for q in &self.queries {
            t.push((format!("query {:?}: name", q.name), &q.name, false));
            t.push((format!("query {:?}: sql", q.name), &q.sql, true));
        }
        for c in &self.output.forbidden_columns {
            t.push(("output.forbidden_columns".to_string(), c, false));
        }
        t
    }

    /// Checks what serde cannot: names, references between parties and inputs, and ranges.
    ///
    /// # Errors
    /// [`ContractError`] naming the first problem.
    pub fn check(&self) -> Result<(), ContractError> {
        if self.format != FORMAT {
            return bad(format!(
                "format {} is not supported: this version reads format {FORMAT}",
                self.format
            ));
        }
        for (field, text, multiline) in self.texts() {
            if let Some(c) = text.chars().find(|c| deceptive(*c, multiline)) {
                return bad(format!(
                    "{field} holds the character U+{:04X}, which can hide what the text says: remove it",
                    c as u32
                ));
            }
        }
        if !is_name(&self.name, 64, Some('-')) {
            return bad(format!(
                "name {:?} must be 1-64 lowercase letters, digits and dashes, starting with a letter",
                self.name
            ));
        }
        let mut ids = BTreeSet::new();
        let mut approval_keys = BTreeSet::new();
        for p in &self.parties {
            if !is_name(&p.id, 20, None) {
                return bad(format!(
                    "party id {:?} must be 1-20 lowercase letters and digits, starting with a letter",
                    p.id
                ));
            }
            if !ids.insert(p.id.as_str()) {
                return bad(format!("party {:?} is listed twice", p.id));
            }
            if p.roles.is_empty() {
                return bad(format!("party {:?} has no role", p.id));
            }
            if p.roles.contains(&Role::DataProvider) && p.approval_key.is_none() {
                return bad(format!(
                    "party {:?} is a data provider and needs an approval_key (the public key its approvals are verified with: conclave contract keygen)",
                    p.id
                ));
            }
            if let Some(pem) = &p.approval_key {
                let point = approval::parse_approval_key(pem)
                    .map_err(|e| ContractError(format!("party {:?}: approval_key: {e}", p.id)))?;
                if !approval_keys.insert(point) {
                    return bad(format!(
                        "party {:?}: its approval_key is another party's too; each party approves with its own key",
                        p.id
                    ));
                }
            }
            if let Some(pem) = &p.receiver_key {
                approval::parse_approval_key(pem).map_err(|e| {
                    ContractError(format!(
                        "party {:?}: receiver_key: {e}; results are sealed with HPKE DHKEM(P-256) (RFC 9180)",
                        p.id
                    ))
                })?;
            }
            if p.roles.contains(&Role::ResultReceiver) && p.receiver_key.is_none() {
                return bad(format!(
                    "party {:?} receives results and needs a receiver_key (the public key results are encrypted to)",
                    p.id
                ));
            }
        }
        if !self
            .parties
            .iter()
            .any(|p| p.roles.contains(&Role::Analyst))
        {
            return bad("no party is the analyst (roles = [\"analyst\"]): someone must run it");
        }
        if !self
            .parties
            .iter()
            .any(|p| p.roles.contains(&Role::ResultReceiver))
        {
            return bad(
                "no party receives the results (roles = [\"result-receiver\"], with a receiver_key): results leave the TEE only sealed to their receivers",
            );
        }
        if self.inputs.is_empty() {
            return bad("the contract has no inputs");
        }
        let mut tables = BTreeSet::new();
        for i in &self.inputs {
            if !is_identifier(&i.table) {
                return bad(format!(
                    "table name {:?} must be a SQL identifier (letters, digits, _)",
                    i.table
                ));
            }
            if !tables.insert(i.table.to_ascii_lowercase()) {
                return bad(format!("table {:?} is listed twice", i.table));
            }
            match self.party(&i.provider) {
                None => {
                    return bad(format!(
                        "table {:?}: provider {:?} is not a party of the contract",
                        i.table, i.provider
                    ));
                }
                Some(p) if !p.roles.contains(&Role::DataProvider) => {
                    return bad(format!(
                        "table {:?}: party {:?} provides it but is not a data provider (add \"data-provider\" to its roles)",
                        i.table, i.provider
                    ));
                }
                Some(_) => {}
            }
            if !i.key.starts_with("https://") || !i.key.contains("/keys/") {
                return bad(format!(
                    "table {:?}: key {:?} is not a vault key id (https://<vault>/keys/<name>)",
                    i.table, i.key
                ));
            }
            if i.url.is_empty() {
                return bad(format!("table {:?} has no url", i.table));
            }
            if i.schema.is_empty() {
                return bad(format!("table {:?} has an empty schema", i.table));
            }
            let mut columns = BTreeSet::new();
            for c in &i.schema {
                if !is_identifier(&c.name) {
                    return bad(format!(
                        "table {:?}: column name {:?} must be a SQL identifier",
                        i.table, c.name
                    ));
                }
                if !columns.insert(c.name.to_ascii_lowercase()) {
                    return bad(format!(
                        "table {:?}: column {:?} is listed twice",
                        i.table, c.name
                    ));
                }
                if !valid_column_type(&c.data_type) {
                    return bad(format!(
                        "table {:?}: column {:?} has type {:?}; use bool, int8-int64, uint8-uint64, float32, float64, decimal(P,S), string, date or timestamp",
                        i.table, c.name, c.data_type
                    ));
                }
            }
        }
        if self.queries.is_empty() {
            return bad("the contract has no queries");
        }
        let mut names = BTreeSet::new();
        for q in &self.queries {
            if !is_name(&q.name, 64, Some('_')) {
                return bad(format!(
                    "query name {:?} must be 1-64 lowercase letters, digits and underscores",
                    q.name
                ));
            }
            if !names.insert(q.name.as_str()) {
                return bad(format!("query {:?} is listed twice", q.name));
            }
            if q.sql.trim().is_empty() {
                return bad(format!("query {:?} has no SQL", q.name));
            }
        }
        let o = &self.output;
        if o.k == 0 || o.k > MAX_K {
            return bad(format!(
                "output.k must be at least 1 (the smallest group released) and at most {MAX_K}"
            ));
        }
        for c in &o.forbidden_columns {
            let named = self
                .inputs
                .iter()
                .any(|i| i.schema.iter().any(|col| col.name.eq_ignore_ascii_case(c)));
            if !named {
                return bad(format!(
                    "output.forbidden_columns: {c:?} is no input's column (a misspelt name would forbid nothing)"
                ));
            }
        }
        if let Some(dp) = &o.differential_privacy {
            if !(dp.epsilon.is_finite() && dp.epsilon > 0.0) {
                return bad(format!(
                    "output.differential_privacy.epsilon {} must be a finite number above 0",
                    dp.epsilon
                ));
            }
            for (column, [lower, upper]) in &dp.bounds {
                let declared = self.inputs.iter().find_map(|i| {
                    i.schema
                        .iter()
                        .find(|c| c.name.eq_ignore_ascii_case(column))
                });
                match declared {
                    None => {
                        return bad(format!(
                            "output.differential_privacy.bounds: {column:?} is no input's column"
                        ));
                    }
                    Some(c) if !numeric_column_type(&c.data_type) => {
                        return bad(format!(
                            "output.differential_privacy.bounds: column {column:?} is {}, not a number",
                            c.data_type
                        ));
                    }
                    Some(_) => {}
                }
                if !(lower.is_finite() && upper.is_finite() && lower < upper) {
                    return bad(format!(
                        "output.differential_privacy.bounds: {column:?} = [{lower}, {upper}] must be two finite numbers, the lower first"
                    ));
                }
            }
            match dp.mechanism {
                Mechanism::Laplace if !(0.0..1.0).contains(&dp.delta) => {
                    return bad(
                        "output.differential_privacy: the Laplace mechanism needs 0 <= delta < 1",
                    );
                }
                Mechanism::Gaussian if !(dp.delta > 0.0 && dp.delta < 1.0) => {
                    return bad(
                        "output.differential_privacy: the Gaussian mechanism needs 0 < delta < 1",
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The party with id `id`.
    pub fn party(&self, id: &str) -> Option<&Party> {
        self.parties.iter().find(|p| p.id == id)
    }

    /// The data providers: the parties whose approval the contract needs.
    pub fn providers(&self) -> impl Iterator<Item = &Party> {
        self.parties
            .iter()
            .filter(|p| p.roles.contains(&Role::DataProvider))
    }

    /// The contract's canonical form: RFC 8785 JSON of its content (the bytes the digest is
    /// taken over).
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_jcs::to_vec(self).expect("a contract serialises to JSON")
    }

    /// The contract's digest: SHA-256 of [`canonical_json`](Self::canonical_json), 64 lowercase
    /// hex digits. Approvals sign it and release policies pin it.
    pub fn digest(&self) -> String {
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &self.canonical_json(),
        ))
    }

    /// The privacy parameters a workload attests with this contract (see [`policy`]).
    pub fn claims(&self) -> policy::ContractClaims {
        let dp = self.output.differential_privacy.as_ref();
        policy::ContractClaims {
            name: self.name.clone(),
            digest: self.digest(),
            k: self.output.k,
            epsilon: dp.map(|d| d.epsilon),
            delta: dp.map(|d| d.delta),
        }
    }
}

#[cfg(test)]
mod tests;
