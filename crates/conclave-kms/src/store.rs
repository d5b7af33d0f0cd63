//! The vault's durable state: keys (private parts sealed under the master key), grants,
//! principals, the audit log and its Merkle tree. Every change and the audit entry that records
//! it commit in one transaction, and a commit returns only once it is durable, so an
//! acknowledged write survives `kill -9`. It lives in an embedded ACID database (redb, the
//! default), or in PostgreSQL so that several vault replicas serve one vault (see
//! [`postgres`]); both sit under one interface ([`backend`]), so everything here is written
//! once.

pub mod backend;
pub mod postgres;

use std::collections::BTreeMap;
use std::path::Path;

use backend::{Backend, Key, Lookup, Table, TreeReader, Tx};

use crate::audit::{AuditEntry, AuditEvent, chain_mac};

/// The audit head (a META key): (seq, MAC) of the last entry.
const AUDIT_HEAD: &str = "audit_head";
/// How many audit entries the tree holds (a META key).
const TREE_SIZE: &str = "audit_tree_size";
/// Which master key the store belongs to (a META key): [`master_key_check`] of it.
const MASTER_KEY_CHECK: &str = "master_key_check";

/// HMAC-SHA-256 under the audit key (derived from the master key) of a fixed label: the same
/// for one master key, different for another, and revealing nothing of either.
fn master_key_check(audit_key: &aws_lc_rs::hmac::Key) -> Vec<u8> {
    aws_lc_rs::hmac::sign(audit_key, b"conclave vault master key check v1")
        .as_ref()
        .to_vec()
}

/// Adds the stored hashes of leaf `seq` (its stored bytes `leaf`) to the audit tree.
fn grow_tree(tx: &mut dyn Tx, seq: u64, leaf: &[u8]) -> Result<(), StoreError> {
    let hashes = TreeReader::run(
        &mut *tx,
        |reader| tlog_tiles::stored_hashes(seq, leaf, reader),
        |e| StoreError::Corrupt(format!("audit tree before entry {seq}: {e}")),
    )?;
    let base = tlog_tiles::stored_hash_index(0, seq);
    for (i, h) in hashes.iter().enumerate() {
        tx.put(Table::Tree, &Key::Int(base + i as u64), &h.0)?;
    }
    tx.put(Table::Meta, &Key::str(TREE_SIZE), &encode(&(seq + 1)))
}

/// The sequence number the next audit entry of this transaction gets.
fn next_audit_seq(tx: &mut dyn Tx) -> Result<u64, StoreError> {
    match tx.get(Table::Meta, &Key::str(AUDIT_HEAD))? {
        Some(v) => Ok(decode::<(u64, String)>("audit head", &v)?.0 + 1),
        None => Ok(0),
    }
}

fn tree_size(tx: &mut dyn Tx) -> Result<u64, StoreError> {
    match tx.get(Table::Meta, &Key::str(TREE_SIZE))? {
        Some(v) => decode("audit tree size", &v),
        None => Ok(0),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("vault store: {0}")]
    Db(String),
    #[error("vault store holds a corrupt record {0}")]
    Corrupt(String),
    /// The database cannot be reached now (PostgreSQL down or restarting); try again.
    #[error("{0}")]
    Unavailable(String),
    /// The write conflicts with what another request (perhaps on another replica) committed
    /// first; nothing was written.
    #[error("{0}")]
    Conflict(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A release policy as stored: the owner's exact bytes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredPolicy {
    pub content_type: String,
    /// base64url of the policy JSON bytes.
    pub data: String,
    pub immutable: bool,
}

/// One version of a key.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyRecord {
    pub name: String,
    pub version: String,
    pub kty: String,
    pub key_size: u32,
    pub key_ops: Vec<String>,
    /// base64url modulus and exponent.
    pub n: String,
    pub e: String,
    /// base64 of the PKCS#8 private key sealed under the master key (AAD: `name/version`).
    pub sealed_private: String,
    pub enabled: bool,
    pub exportable: bool,
    pub created: u64,
    pub updated: u64,
    pub nbf: Option<u64>,
    pub exp: Option<u64>,
    pub release_policy: Option<StoredPolicy>,
    pub owner: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The sequence number of the audit entry that created this key name for its current
    /// owner (its first version, or its restore): the owner sees the log's entries about the
    /// name from there on, not those of a purged key of the same name. Set by the store; `None`
    /// in stores from before it existed (the owner then sees every entry about the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_from: Option<u64>,
}

/// A key's privacy-budget ledger, in millionths of ε (see
/// [`conclave_protocol::vault::EPSILON_MICROS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BudgetLedger {
    pub total_micros: u64,
    pub spent_micros: u64,
    /// Releases debited.
    pub releases: u64,
    /// Unix seconds of the last change.
    pub updated: u64,
}

impl BudgetLedger {
    /// What is left to spend (0 once the total is reached or lowered below what is spent).
    pub fn remaining_micros(&self) -> u64 {
        self.total_micros.saturating_sub(self.spent_micros)
    }

    /// Whether a release of `micros` millionths of ε fits in what is left: the one test of
    /// both the release decision and the payment in the release's own write.
    pub fn affords(&self, micros: u64) -> bool {
        micros <= self.remaining_micros()
    }
}

/// A granted release's audit entry, for [`Store::record_release`]: written only if the key's
/// privacy budget, read in the same write transaction, pays for the run.
#[derive(Debug)]
pub struct ReleaseEntry {
    /// The key released.
    pub key: String,
    /// The ε the token attests for the run (millionths), if any.
    pub epsilon_micros: Option<u64>,
    /// Whether the decision saw a ledger for the key: one gone by the write (the key purged
    /// meanwhile) refuses the release rather than let it go unpaid.
    pub budgeted: bool,
    /// Unix seconds (the ledger's `updated` when it is debited).
    pub now: u64,
    /// The `granted` entry; a debit adds `epsilon` and `remainingEpsilon` to its detail.
    pub event: AuditEvent,
}

/// What [`Store::record_release`] found in the key's ledger, as it wrote (or did not).
#[derive(Debug, Clone, PartialEq)]
pub enum Payment {
    /// The key has no budget: the entry is written, nothing debited.
    Free(AuditEntry),
    /// Debited: the ledger after the debit, and the entry.
    Paid(BudgetLedger, AuditEntry),
    /// Nothing written: the run's ε is more than is left.
    Insufficient(BudgetLedger),
    /// Nothing written: the key has a budget and the token attests no ε.
    NotAttested(BudgetLedger),
    /// Nothing written: the key had a budget when the release was decided, and has none now
    /// (it was purged meanwhile).
    BudgetGone,
}

/// What a group commit appends: an entry as it is, or a release that must be paid for first.
enum Pending {
    Audit(AuditEvent),
    Release(ReleaseEntry),
}

/// A group commit's outcome for one [`Pending`] item.
enum Committed {
    Entry(AuditEntry),
    Release(Payment),
    /// This item alone failed, having written nothing (a key's ledger that does not decode);
    /// the rest of its batch commits.
    Failed(StoreError),
}

/// A soft-deleted key (Azure Key Vault's DeletedKeyBundle): every version, kept until
/// `scheduled_purge` (Unix seconds), recoverable until then.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeletedKey {
    pub name: String,
    pub deleted: u64,
    pub scheduled_purge: u64,
    /// Oldest first; the last is the latest.
    pub versions: Vec<KeyRecord>,
}

pub use conclave_protocol::vault::Permission;

pub use conclave_protocol::vault::Grant;

/// A principal: a name and the SHA-256 of its bearer token (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    pub name: String,
    pub token_sha256: String,
    /// May read the whole audit log and manage principals.
    pub admin: bool,
}

pub struct Store {
    backend: Backend,
    audit_key: aws_lc_rs::hmac::Key,
    group: GroupCommit,
    /// Time of each audit append until durable, when observed (metrics).
    append_latency: std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>,
}

/// Audit-only appends (releases, denials) from concurrent requests share one transaction: the
/// first caller to find no commit in progress becomes the leader and commits everything queued
/// meanwhile, in order (a release paid from a privacy budget sees the debits before it in the
/// batch); the others wait for it. Each caller still returns only after its own entry is on
/// disk, so an acknowledged request is never lost; under load, one fsync serves many requests.
#[derive(Default)]
struct GroupCommit {
    state: std::sync::Mutex<GroupState>,
    done: std::sync::Condvar,
}

impl GroupCommit {
    fn lock(&self) -> std::sync::MutexGuard<'_, GroupState> {
        // A panic while holding the lock leaves the state consistent (plain queue and map).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct GroupState {
    next_ticket: u64,
    queue: Vec<(u64, Pending)>,
    leader: bool,
    results: std::collections::HashMap<u64, Result<Committed, StoreError>>,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|_| StoreError::Corrupt(what.to_string()))
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

fn grant_key(name: &str, principal: &str) -> String {
    format!("{name}\u{0}{principal}")
}

/// The key of version `version` of key `name` in [`Table::Keys`].
fn version_key(name: &str, version: &str) -> Key {
    Key::Str(format!("{name}/{version}"))
}

/// Every stored version of key `name` (the `name/…` range of [`Table::Keys`]).
fn scan_versions(tx: &mut dyn Tx, name: &str) -> Result<Vec<KeyRecord>, StoreError> {
    tx.scan(
        Table::Keys,
        &Key::Str(format!("{name}/")),
        Some(&Key::Str(format!("{name}0"))),
        usize::MAX,
    )?
    .into_iter()
    .map(|(k, v)| decode(k.as_str(), &v))
    .collect()
}

/// The grants of key `name` (the `name\0…` range of [`Table::Grants`]).
fn scan_grants(tx: &mut dyn Tx, name: &str) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
    tx.scan(
        Table::Grants,
        &Key::Str(format!("{name}\u{0}")),
        Some(&Key::Str(format!("{name}\u{1}"))),
        usize::MAX,
    )
}

fn text(v: Vec<u8>, what: &str) -> Result<String, StoreError> {
    String::from_utf8(v).map_err(|_| StoreError::Corrupt(what.to_string()))
}

impl Store {
    /// Opens (or creates) the embedded database at `path`; `audit_key` MACs the audit chain.
    pub fn open(path: &Path, audit_key: aws_lc_rs::hmac::Key) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Db(format!("{}: {e}", dir.display())))?;
        }
        let db = redb::Database::create(path)?;
        Backend::create_redb_tables(&db)?;
        Self::with_backend(Backend::Redb(db), audit_key)
    }

    /// A store on PostgreSQL (connected, its schema migrated: see
    /// [`postgres::PgBackend::connect`]); several vault replicas may share it.
    pub fn on_postgres(
        pg: postgres::PgBackend,
        audit_key: aws_lc_rs::hmac::Key,
    ) -> Result<Self, StoreError> {
        Self::with_backend(Backend::Postgres(pg), audit_key)
    }

    fn with_backend(backend: Backend, audit_key: aws_lc_rs::hmac::Key) -> Result<Self, StoreError> {
        // A store written under another master key (another vault's database, or a replaced
        // master.key) is refused before anything is added to it: its sealed keys would not open
        // and its audit chain would mix two MAC keys. Checked in a write, so of two replicas
        // with different master keys starting on one empty database, the second is refused.
        backend.write(|tx| {
            let wrong_key = || {
                StoreError::Db(
                    "this store was written under another master key (its master-key check or audit chain does not verify with this one): start the vault with the master key of the vault that made it (CONCLAVE_VAULT_MASTER_KEY, --master-key-file, or a recovered security domain)".into(),
                )
            };
            let check = master_key_check(&audit_key);
            match tx.get(Table::Meta, &Key::str(MASTER_KEY_CHECK))? {
                Some(stored) if stored != check => return Err(wrong_key()),
                Some(_) => {}
                None => tx.put(Table::Meta, &Key::str(MASTER_KEY_CHECK), &check)?,
            }
            if let Some(head) = tx.get(Table::Meta, &Key::str(AUDIT_HEAD))? {
                let (seq, mac): (u64, String) = decode("audit head", &head)?;
                let last: AuditEntry = match tx.get(Table::Audit, &Key::Int(seq))? {
                    Some(v) => decode("audit entry", &v)?,
                    None => {
                        return Err(StoreError::Corrupt(format!("audit entry {seq} (the head)")));
                    }
                };
                if chain_mac(&audit_key, last.seq, &last.prev, &last.event) != mac {
                    return Err(wrong_key());
                }
            }
            // A store from before the audit tree existed gets its entries added now, oldest
            // first.
            let size = tree_size(tx)?;
            let missing = tx.scan(Table::Audit, &Key::Int(size), None, usize::MAX)?;
            for (k, leaf) in missing {
                grow_tree(tx, k.as_int(), &leaf)?;
            }
            Ok(())
        })?;
        Ok(Store {
            backend,
            audit_key,
            group: GroupCommit::default(),
            append_latency: std::sync::OnceLock::new(),
        })
    }

    /// Runs `change` and appends `event` to the audit log in one durable transaction.
    fn write<T>(
        &self,
        event: AuditEvent,
        change: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<(T, AuditEntry), StoreError> {
        self.backend.write(|tx| {
            let out = change(tx)?;
            let entry = self.append(tx, event)?;
            Ok((out, entry))
        })
    }

    fn append(&self, tx: &mut dyn Tx, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        let (seq, prev) = match tx.get(Table::Meta, &Key::str(AUDIT_HEAD))? {
            Some(v) => {
                let (seq, mac): (u64, String) = decode("audit head", &v)?;
                (seq + 1, mac)
            }
            None => (0, "0".repeat(64)),
        };
        let mac = chain_mac(&self.audit_key, seq, &prev, &event);
        let entry = AuditEntry {
            seq,
            prev,
            mac: mac.clone(),
            event,
        };
        let leaf = encode(&entry);
        tx.put(Table::Audit, &Key::Int(seq), &leaf)?;
        tx.put(Table::Meta, &Key::str(AUDIT_HEAD), &encode(&(seq, mac)))?;
        grow_tree(tx, seq, &leaf)?;
        Ok(entry)
    }

    /// Appends an audit entry on its own (releases and denials change nothing else). Returns once
    /// the entry is durable; concurrent calls are committed together (see [`GroupCommit`]).
    /// Runs `f` while holding the audit commit lock: every audit append waits meanwhile (tests
    /// use it to stand in for a slow disk).
    #[cfg(test)]
    pub(crate) fn with_audit_commits_held<R>(&self, f: impl FnOnce() -> R) -> R {
        let _held = self.group.lock();
        f()
    }

    /// Records the time every later [`audit`](Self::audit) call takes in `histogram` (seconds).
    pub fn observe_audit_appends(
        &self,
        histogram: prometheus_client::metrics::histogram::Histogram,
    ) {
        let _ = self.append_latency.set(histogram);
    }

    /// Appends `event` to the audit chain; returns after the entry is durable. Concurrent
    /// appends share one commit (see `GroupCommit`).
    pub fn audit(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        match self.append_grouped(Pending::Audit(event))? {
            Committed::Entry(entry) => Ok(entry),
            Committed::Release(_) | Committed::Failed(_) => {
                unreachable!("an audit event commits as an entry or its batch fails")
            }
        }
    }

    /// Records a granted release, paid for when the key has a privacy budget: in one durable
    /// transaction, the key's ledger is read, debited by the run's ε and the entry appended —
    /// or, when the ledger cannot pay (or the token attests no ε for a key with a budget),
    /// nothing is written. The decision is made inside the write, so a budget set or spent by
    /// a concurrent request (on any replica: writes are serialised by redb's single writer or
    /// PostgreSQL's write lock) is always seen. Concurrent calls share a commit, like
    /// [`audit`](Self::audit)'s.
    pub fn record_release(&self, entry: ReleaseEntry) -> Result<Payment, StoreError> {
        match self.append_grouped(Pending::Release(entry))? {
            Committed::Release(payment) => Ok(payment),
            Committed::Entry(_) | Committed::Failed(_) => {
                unreachable!("a release commits as a payment, or fails alone")
            }
        }
    }

    fn append_grouped(&self, item: Pending) -> Result<Committed, StoreError> {
        let started = std::time::Instant::now();
        let outcome = self.commit_grouped(item);
        if let Some(h) = self.append_latency.get() {
            h.observe(started.elapsed().as_secs_f64());
        }
        outcome
    }

    fn commit_grouped(&self, item: Pending) -> Result<Committed, StoreError> {
        let mut st = self.group.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push((ticket, item));
        if st.leader {
            // Another caller is committing; it (or the next leader) takes this entry.
            loop {
                st = self.group.done.wait(st).unwrap_or_else(|p| p.into_inner());
                if let Some(r) = st.results.remove(&ticket) {
                    return r;
                }
                if !st.leader {
                    break; // The leader finished without this entry: lead the next batch.
                }
            }
        }
        st.leader = true;
        let (tickets, items): (Vec<u64>, Vec<Pending>) =
            std::mem::take(&mut st.queue).into_iter().unzip();
        drop(st);
        // A panic in the commit must not leave the followers waiting for a leader that is gone.
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit_batch(items)))
                .unwrap_or_else(|_| Err(StoreError::Db("the audit commit panicked".into())));
        let mut st = self.group.lock();
        match outcome {
            Ok(entries) => {
                st.results.extend(
                    tickets
                        .into_iter()
                        .zip(entries.into_iter().map(|c| match c {
                            Committed::Failed(e) => Err(e),
                            c => Ok(c),
                        })),
                )
            }
            Err(e) => {
                let unavailable = matches!(e, StoreError::Unavailable(_));
                let msg = e.to_string();
                st.results.extend(tickets.into_iter().map(|t| {
                    (
                        t,
                        Err(if unavailable {
                            StoreError::Unavailable(msg.clone())
                        } else {
                            StoreError::Db(msg.clone())
                        }),
                    )
                }));
            }
        }
        // Entries queued meanwhile go to the first waiter to wake, who leads the next batch.
        st.leader = false;
        self.group.done.notify_all();
        st.results
            .remove(&ticket)
            .expect("the leader's own entry is in its batch")
    }

    fn commit_batch(&self, items: Vec<Pending>) -> Result<Vec<Committed>, StoreError> {
        self.backend.write(|tx| {
            items
                .into_iter()
                .map(|item| match item {
                    Pending::Audit(event) => self.append(tx, event).map(Committed::Entry),
                    // A ledger that does not decode fails its own release only: nothing of it
                    // was written yet.
                    Pending::Release(release) => match self.pay(tx, release) {
                        Ok(payment) => Ok(Committed::Release(payment)),
                        Err(e @ StoreError::Corrupt(_)) => Ok(Committed::Failed(e)),
                        Err(e) => Err(e),
                    },
                })
                .collect::<Result<Vec<_>, _>>()
        })
    }

    /// [`record_release`](Self::record_release)'s part of a batch's transaction.
    fn pay(&self, tx: &mut dyn Tx, r: ReleaseEntry) -> Result<Payment, StoreError> {
        let ledger = tx
            .get(Table::Budgets, &Key::str(&r.key))?
            .map(|v| decode::<BudgetLedger>(&r.key, &v))
            .transpose()?;
        let (ledger, micros) = match (ledger, r.epsilon_micros) {
            (None, _) if r.budgeted => return Ok(Payment::BudgetGone),
            (None, _) => return Ok(Payment::Free(self.append(tx, r.event)?)),
            (Some(ledger), None) => return Ok(Payment::NotAttested(ledger)),
            (Some(ledger), Some(micros)) if !ledger.affords(micros) => {
                return Ok(Payment::Insufficient(ledger));
            }
            (Some(ledger), Some(micros)) => (ledger, micros),
        };
        let after = BudgetLedger {
            spent_micros: ledger.spent_micros + micros,
            releases: ledger.releases + 1,
            updated: r.now,
            ..ledger
        };
        tx.put(Table::Budgets, &Key::str(&r.key), &encode(&after))?;
        let mut event = r.event;
        let detail = event.detail.get_or_insert_with(|| serde_json::json!({}));
        let eps = conclave_protocol::vault::epsilon_from_micros;
        detail["epsilon"] = serde_json::json!(eps(micros));
        detail["remainingEpsilon"] = serde_json::json!(eps(after.remaining_micros()));
        Ok(Payment::Paid(after, self.append(tx, event)?))
    }

    /// Stores a new key version, which becomes the key's latest. Refused
    /// ([`StoreError::Conflict`]) when the key exists with another owner, checked in the write
    /// itself, so two principals creating one name at once (on two replicas) cannot both win.
    pub fn create_key(&self, rec: &KeyRecord, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        Ok(self
            .write(event, |tx| {
                let prefix = format!("{}/", rec.name);
                let mut rec = rec.clone();
                match tx.get_through(Table::Latest, &Key::str(&rec.name), Table::Keys, &prefix)? {
                    Some(latest) => {
                        let latest: KeyRecord = decode(&rec.name, &latest)?;
                        if latest.owner != rec.owner {
                            return Err(StoreError::Conflict(format!(
                                "key {} was created meanwhile by another principal",
                                rec.name
                            )));
                        }
                        rec.audit_from = latest.audit_from;
                    }
                    // This write's own audit entry (the creation) is the next.
                    None => rec.audit_from = Some(next_audit_seq(tx)?),
                }
                tx.put(
                    Table::Keys,
                    &version_key(&rec.name, &rec.version),
                    &encode(&rec),
                )?;
                tx.put(Table::Latest, &Key::str(&rec.name), rec.version.as_bytes())
            })?
            .1)
    }

    /// Restores every version of a key from a backup, in one transaction: the newest becomes
    /// the key's latest, and its privacy-budget ledger (as backed up: total, spent, releases)
    /// comes back with it, or none if it had none. Refused (returns `None`, nothing written)
    /// when a key of that name exists.
    pub fn restore_key(
        &self,
        versions: &[KeyRecord],
        budget: Option<&BudgetLedger>,
        event: AuditEvent,
    ) -> Result<Option<AuditEntry>, StoreError> {
        // `versions` comes from `versions()`, latest last; `max_by_key` returns the last of
        // equal maxima, so versions made in the same second restore with the right latest.
        let Some(newest) = versions.iter().max_by_key(|r| r.created) else {
            return Ok(None);
        };
        let (restored, entry) = self.write(event, |tx| {
            if tx.get(Table::Latest, &Key::str(&newest.name))?.is_some() {
                return Ok(false);
            }
            // A new owner of the name here: the log's entries from this restore on are its.
            let audit_from = Some(next_audit_seq(tx)?);
            for rec in versions {
                let rec = KeyRecord {
                    audit_from,
                    ..rec.clone()
                };
                tx.put(
                    Table::Keys,
                    &version_key(&rec.name, &rec.version),
                    &encode(&rec),
                )?;
            }
            tx.put(
                Table::Latest,
                &Key::str(&newest.name),
                newest.version.as_bytes(),
            )?;
            match budget {
                Some(ledger) => tx.put(Table::Budgets, &Key::str(&newest.name), &encode(ledger))?,
                None => drop(tx.remove(Table::Budgets, &Key::str(&newest.name))?),
            }
            Ok(true)
        })?;
        Ok(restored.then_some(entry))
    }

    /// Sets a key's rotation policy (Azure's `rotationpolicy` document, validated by the
    /// caller).
    pub fn put_rotation_policy(
        &self,
        name: &str,
        policy: &conclave_protocol::vault::KeyRotationPolicy,
        event: AuditEvent,
    ) -> Result<AuditEntry, StoreError> {
        Ok(self
            .write(event, |tx| {
                tx.put(Table::Rotation, &Key::str(name), &encode(policy))
            })?
            .1)
    }

    pub fn rotation_policy(
        &self,
        name: &str,
    ) -> Result<Option<conclave_protocol::vault::KeyRotationPolicy>, StoreError> {
        self.backend.read(|tx| {
            tx.get(Table::Rotation, &Key::str(name))?
                .map(|v| decode(name, &v))
                .transpose()
        })
    }

    /// Every key's rotation policy.
    pub fn rotation_policies(
        &self,
    ) -> Result<Vec<(String, conclave_protocol::vault::KeyRotationPolicy)>, StoreError> {
        self.backend.read(|tx| {
            tx.scan(Table::Rotation, &Key::str(""), None, usize::MAX)?
                .into_iter()
                .map(|(k, v)| Ok((k.as_str().to_string(), decode(k.as_str(), &v)?)))
                .collect()
        })
    }

    /// Soft-deletes a key: its versions leave the key namespace (no get, no release) and are
    /// kept as a [`DeletedKey`] until `scheduled_purge`. `None` when there is no such key.
    pub fn delete_key(
        &self,
        name: &str,
        deleted: u64,
        scheduled_purge: u64,
        event: AuditEvent,
    ) -> Result<Option<(DeletedKey, AuditEntry)>, StoreError> {
        let (out, entry) = self.write(event, |tx| {
            if !tx.remove(Table::Latest, &Key::str(name))? {
                return Ok(None);
            }
            let mut versions = scan_versions(tx, name)?;
            for r in &versions {
                tx.remove(Table::Keys, &version_key(&r.name, &r.version))?;
            }
            versions.sort_by_key(|r| r.created);
            let d = DeletedKey {
                name: name.to_string(),
                deleted,
                scheduled_purge,
                versions,
            };
            tx.put(Table::Deleted, &Key::str(name), &encode(&d))?;
            Ok(Some(d))
        })?;
        Ok(out.map(|d| (d, entry)))
    }

    pub fn deleted_key(&self, name: &str) -> Result<Option<DeletedKey>, StoreError> {
        self.backend.read(|tx| {
            tx.get(Table::Deleted, &Key::str(name))?
                .map(|v| decode(name, &v))
                .transpose()
        })
    }

    pub fn deleted_keys(&self) -> Result<Vec<DeletedKey>, StoreError> {
        self.backend.read(|tx| {
            tx.scan(Table::Deleted, &Key::str(""), None, usize::MAX)?
                .into_iter()
                .map(|(k, v)| decode(k.as_str(), &v))
                .collect()
        })
    }

    /// Brings a deleted key back with all its versions. `None` when it is not deleted.
    pub fn recover_key(
        &self,
        name: &str,
        event: AuditEvent,
    ) -> Result<Option<DeletedKey>, StoreError> {
        Ok(self
            .write(event, |tx| {
                let Some(d) = tx
                    .get(Table::Deleted, &Key::str(name))?
                    .map(|v| decode::<DeletedKey>(name, &v))
                    .transpose()?
                else {
                    return Ok(None);
                };
                tx.remove(Table::Deleted, &Key::str(name))?;
                for r in &d.versions {
                    tx.put(Table::Keys, &version_key(&r.name, &r.version), &encode(r))?;
                }
                if let Some(last) = d.versions.last() {
                    tx.put(Table::Latest, &Key::str(name), last.version.as_bytes())?;
                }
                Ok(Some(d))
            })?
            .0)
    }

    /// Sets key `name`'s total ε (millionths), keeping what is spent; creates the ledger.
    pub fn put_budget(
        &self,
        name: &str,
        total_micros: u64,
        now: u64,
        event: AuditEvent,
    ) -> Result<BudgetLedger, StoreError> {
        Ok(self
            .write(event, |tx| {
                let ledger = match tx.get(Table::Budgets, &Key::str(name))? {
                    Some(v) => decode::<BudgetLedger>(name, &v)?,
                    None => BudgetLedger {
                        total_micros: 0,
                        spent_micros: 0,
                        releases: 0,
                        updated: now,
                    },
                };
                let ledger = BudgetLedger {
                    total_micros,
                    updated: now,
                    ..ledger
                };
                tx.put(Table::Budgets, &Key::str(name), &encode(&ledger))?;
                Ok(ledger)
            })?
            .0)
    }

    /// Key `name`'s ledger, if its owner set a budget.
    pub fn budget(&self, name: &str) -> Result<Option<BudgetLedger>, StoreError> {
        self.backend.read(|tx| {
            tx.get(Table::Budgets, &Key::str(name))?
                .map(|v| decode(name, &v))
                .transpose()
        })
    }

    /// Erases a deleted key for good (its sealed private parts with it). `false` when it is not
    /// deleted.
    pub fn purge_key(&self, name: &str, event: AuditEvent) -> Result<bool, StoreError> {
        Ok(self
            .write(event, |tx| {
                if !tx.remove(Table::Deleted, &Key::str(name))? {
                    return Ok(false);
                }
                // Whatever referred to the key goes with it: a key created later under the
                // same name (by anyone) must not inherit its grants or rotation policy.
                for (k, _) in scan_grants(tx, name)? {
                    tx.remove(Table::Grants, &k)?;
                }
                tx.remove(Table::Rotation, &Key::str(name))?;
                tx.remove(Table::Budgets, &Key::str(name))?;
                Ok(true)
            })?
            .0)
    }

    /// Replaces an existing key version's record (attributes, policy, tags).
    pub fn update_key(&self, rec: &KeyRecord, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        Ok(self
            .write(event, |tx| {
                tx.put(
                    Table::Keys,
                    &version_key(&rec.name, &rec.version),
                    &encode(rec),
                )
            })?
            .1)
    }

    pub fn key(&self, name: &str, version: Option<&str>) -> Result<Option<KeyRecord>, StoreError> {
        self.backend.read(|tx| {
            let record = match version {
                Some(v) => tx.get(Table::Keys, &version_key(name, v))?,
                None => tx.get_through(
                    Table::Latest,
                    &Key::str(name),
                    Table::Keys,
                    &format!("{name}/"),
                )?,
            };
            record.map(|v| decode(name, &v)).transpose()
        })
    }

    /// Every version of a key, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<KeyRecord>, StoreError> {
        // One snapshot: the latest pointer must be that of the versions listed.
        self.backend.read_snapshot(|tx| {
            let latest = tx
                .get(Table::Latest, &Key::str(name))?
                .map(|v| text(v, "latest version"))
                .transpose()?;
            let mut out = scan_versions(tx, name)?;
            // Creation times are in seconds, so two versions made in the same second tie: the
            // latest pointer breaks the tie, keeping the latest version last.
            out.sort_by_key(|r| (r.created, latest.as_deref() == Some(r.version.as_str())));
            Ok(out)
        })
    }

    /// The latest version of every key, in name order: two scans, whatever the number of keys.
    pub fn latest_versions(&self) -> Result<Vec<KeyRecord>, StoreError> {
        // One snapshot: the latest pointers must be those of the records scanned.
        self.backend.read_snapshot(|tx| {
            let latest: BTreeMap<String, String> = tx
                .scan(Table::Latest, &Key::str(""), None, usize::MAX)?
                .into_iter()
                .map(|(k, v)| Ok((k.as_str().to_string(), text(v, "latest version")?)))
                .collect::<Result<_, StoreError>>()?;
            let mut out = Vec::with_capacity(latest.len());
            for (k, v) in tx.scan(Table::Keys, &Key::str(""), None, usize::MAX)? {
                let id = k.as_str();
                if let Some((name, version)) = id.split_once('/')
                    && latest.get(name).is_some_and(|l| l == version)
                {
                    out.push(decode(id, &v)?);
                }
            }
            Ok(out)
        })
    }

    pub fn put_grant(
        &self,
        name: &str,
        grant: &Grant,
        event: AuditEvent,
    ) -> Result<AuditEntry, StoreError> {
        let k = Key::Str(grant_key(name, &grant.principal));
        Ok(self
            .write(event, |tx| tx.put(Table::Grants, &k, &encode(grant)))?
            .1)
    }

    /// Removes a grant; `Ok(false)` if there was none.
    pub fn delete_grant(
        &self,
        name: &str,
        principal: &str,
        event: AuditEvent,
    ) -> Result<(bool, AuditEntry), StoreError> {
        let k = Key::Str(grant_key(name, principal));
        self.write(event, |tx| tx.remove(Table::Grants, &k))
    }

    pub fn grant(&self, name: &str, principal: &str) -> Result<Option<Grant>, StoreError> {
        self.backend.read(|tx| {
            tx.get(Table::Grants, &Key::Str(grant_key(name, principal)))?
                .map(|v| decode("grant", &v))
                .transpose()
        })
    }

    pub fn grants(&self, name: &str) -> Result<Vec<Grant>, StoreError> {
        self.backend.read(|tx| {
            scan_grants(tx, name)?
                .into_iter()
                .map(|(_, v)| decode("grant", &v))
                .collect()
        })
    }

    /// Adds or replaces a principal (its old token stops working).
    pub fn put_principal(
        &self,
        p: &Principal,
        event: AuditEvent,
    ) -> Result<AuditEntry, StoreError> {
        Ok(self
            .write(event, |tx| {
                if let Some(old) = tx.get(Table::Principals, &Key::str(&p.name))? {
                    let old: Principal = decode("principal", &old)?;
                    tx.remove(Table::Tokens, &Key::str(&old.token_sha256))?;
                }
                tx.put(Table::Principals, &Key::str(&p.name), &encode(p))?;
                tx.put(Table::Tokens, &Key::str(&p.token_sha256), p.name.as_bytes())
            })?
            .1)
    }

    /// Adds `p` as the vault's first admin unless an admin exists, in one write (replicas
    /// starting together make one admin, not two overwriting each other). Whether it was added.
    pub fn put_first_admin(&self, p: &Principal, event: AuditEvent) -> Result<bool, StoreError> {
        self.backend.write(|tx| {
            for (_, v) in tx.scan(Table::Principals, &Key::str(""), None, usize::MAX)? {
                if decode::<Principal>("principal", &v)?.admin {
                    return Ok(false);
                }
            }
            tx.put(Table::Principals, &Key::str(&p.name), &encode(p))?;
            tx.put(Table::Tokens, &Key::str(&p.token_sha256), p.name.as_bytes())?;
            self.append(tx, event)?;
            Ok(true)
        })
    }

    /// The principal of a token hash and a key's record (its latest version without
    /// `version`), read together: one round trip on PostgreSQL, for the hot path of release.
    pub fn principal_and_key(
        &self,
        hash: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<(Option<Principal>, Option<KeyRecord>), StoreError> {
        let key = match version {
            Some(v) => Lookup::Get(Table::Keys, version_key(name, v)),
            None => Lookup::Through {
                first: Table::Latest,
                key: Key::str(name),
                second: Table::Keys,
                prefix: format!("{name}/"),
            },
        };
        let principal = Lookup::Through {
            first: Table::Tokens,
            key: Key::str(hash),
            second: Table::Principals,
            prefix: String::new(),
        };
        self.backend.read(|tx| {
            let mut found = tx.get_many(&[principal, key])?.into_iter();
            let (p, k) = (found.next().flatten(), found.next().flatten());
            Ok((
                p.map(|v| decode("principal", &v)).transpose()?,
                k.map(|v| decode(name, &v)).transpose()?,
            ))
        })
    }

    pub fn principal_by_token_hash(&self, hash: &str) -> Result<Option<Principal>, StoreError> {
        self.backend.read(|tx| {
            tx.get_through(Table::Tokens, &Key::str(hash), Table::Principals, "")?
                .map(|v| decode("principal", &v))
                .transpose()
        })
    }

    pub fn principals(&self) -> Result<Vec<Principal>, StoreError> {
        self.backend.read(|tx| {
            tx.scan(Table::Principals, &Key::str(""), None, usize::MAX)?
                .into_iter()
                .map(|(_, v)| decode("principal", &v))
                .collect()
        })
    }

    /// Audit entries from `from` on, at most `limit`.
    pub fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_leaves(from, limit)?
            .into_iter()
            .map(|(seq, v)| decode(&format!("audit entry {seq}"), &v))
            .collect()
    }

    /// The last entry's sequence number and MAC, to record outside the vault.
    pub fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.backend.read(|tx| {
            tx.get(Table::Meta, &Key::str(AUDIT_HEAD))?
                .map(|v| decode("audit head", &v))
                .transpose()
        })
    }

    /// The audit tree now: (number of entries, RFC 6962 root hash).
    pub fn audit_tree_head(&self) -> Result<(u64, tlog_tiles::Hash), StoreError> {
        self.backend.read(|tx| {
            let size = tree_size(tx)?;
            let root = TreeReader::run(
                tx,
                |reader| tlog_tiles::tree_hash(size, reader),
                |e| StoreError::Corrupt(format!("audit tree: {e}")),
            )?;
            Ok((size, root))
        })
    }

    /// The entries from `from` (at most `limit`) as stored: (seq, the leaf's exact bytes).
    pub fn audit_leaves(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.backend.read(|tx| {
            Ok(tx
                .scan(Table::Audit, &Key::Int(from), None, limit)?
                .into_iter()
                .map(|(k, v)| (k.as_int(), v))
                .collect())
        })
    }

    /// The inclusion proof of entry `seq` in the tree of `size` entries (RFC 9162 §2.1.3).
    pub fn audit_inclusion(
        &self,
        seq: u64,
        size: u64,
    ) -> Result<Vec<tlog_tiles::Hash>, StoreError> {
        self.backend.read(|tx| {
            TreeReader::run(
                tx,
                |reader| tlog_tiles::prove_record(size, seq, reader),
                |e| {
                    StoreError::Db(format!(
                        "no inclusion proof of entry {seq} in size {size}: {e}"
                    ))
                },
            )
        })
    }

    /// The consistency proof from the tree of `old` entries to that of `size` (RFC 9162 §2.1.4).
    pub fn audit_consistency(
        &self,
        old: u64,
        size: u64,
    ) -> Result<Vec<tlog_tiles::Hash>, StoreError> {
        self.backend.read(|tx| {
            TreeReader::run(
                tx,
                |reader| tlog_tiles::prove_tree(size, old, reader),
                |e| {
                    StoreError::Db(format!(
                        "no consistency proof from size {old} to {size}: {e}"
                    ))
                },
            )
        })
    }

    pub fn audit_key(&self) -> &aws_lc_rs::hmac::Key {
        &self.audit_key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store belongs to the master key that first opened it, even before anything is in its
    /// audit log; a store from before the check existed gets it from its audit chain.
    #[test]
    fn an_empty_store_refuses_another_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.redb");
        let a = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[1u8; 32]);
        let b = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[2u8; 32]);
        drop(Store::open(&path, a.clone()).unwrap());
        let refused = Store::open(&path, b.clone())
            .err()
            .expect("another master key let in");
        assert!(
            refused.to_string().contains("another master key"),
            "{refused}"
        );
        drop(Store::open(&path, a.clone()).unwrap());

        // An older store: entries, but no check record. Its chain decides, and the check is
        // written then.
        let old = dir.path().join("old.redb");
        let store = Store::open(&old, a.clone()).unwrap();
        store
            .audit(AuditEvent::new("p", "release", Some("k"), "granted"))
            .unwrap();
        store
            .backend
            .write(|tx| {
                tx.remove(Table::Meta, &Key::str(MASTER_KEY_CHECK))
                    .map(drop)
            })
            .unwrap();
        drop(store);
        assert!(Store::open(&old, b).is_err());
        let store = Store::open(&old, a).unwrap();
        assert!(
            store
                .backend
                .read(|tx| tx.get(Table::Meta, &Key::str(MASTER_KEY_CHECK)))
                .unwrap()
                .is_some()
        );
    }

    /// The audit tree grows in the commit of each entry, over the entries' stored bytes; a
    /// store from before the tree existed gets it built when opened; proofs check.
    #[test]
    fn the_audit_tree_follows_the_log_and_is_rebuilt_for_old_stores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.redb");
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[9u8; 32]);
        let store = Store::open(&path, key.clone()).unwrap();
        assert_eq!(
            store.audit_tree_head().unwrap(),
            (0, tlog_tiles::EMPTY_HASH)
        );
        for i in 0..21 {
            store
                .audit(AuditEvent::new(
                    "p",
                    "release",
                    Some(&format!("k{i}")),
                    "granted",
                ))
                .unwrap();
        }
        let (size, root) = store.audit_tree_head().unwrap();
        assert_eq!(size, 21);
        // The RFC 6962 root of the leaves, computed apart from the store.
        fn mth(leaves: &[Vec<u8>]) -> tlog_tiles::Hash {
            match leaves.len() {
                1 => tlog_tiles::record_hash(&leaves[0]),
                n => {
                    let k = (n as u64).next_power_of_two() as usize / 2;
                    let k = if k == n { n / 2 } else { k };
                    tlog_tiles::node_hash(mth(&leaves[..k]), mth(&leaves[k..]))
                }
            }
        }
        let leaves: Vec<Vec<u8>> = store
            .audit_leaves(0, 100)
            .unwrap()
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        assert_eq!(mth(&leaves), root);
        for seq in [0, 7, 20] {
            let proof = store.audit_inclusion(seq, size).unwrap();
            tlog_tiles::check_record(
                &proof,
                size,
                root,
                seq,
                tlog_tiles::record_hash(&leaves[seq as usize]),
            )
            .unwrap();
        }
        let proof = store.audit_consistency(8, size).unwrap();
        tlog_tiles::check_tree(&proof, size, root, 8, mth(&leaves[..8])).unwrap();

        // An old store: no tree. Opening it builds the same one.
        drop(store);
        {
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.delete_table(redb::TableDefinition::<u64, &[u8]>::new("audit_tree"))
                .unwrap();
            tx.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
                .unwrap()
                .remove(TREE_SIZE)
                .unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(&path, key).unwrap();
        assert_eq!(store.audit_tree_head().unwrap(), (size, root));
        store
            .audit(AuditEvent::new("p", "release", Some("k"), "granted"))
            .unwrap();
        assert_eq!(store.audit_tree_head().unwrap().0, 22);
    }

    /// Concurrent releases of one key (committed in groups) are paid for in order: a ledger
    /// that can pay for five pays for exactly five, and the others write nothing; a release
    /// decided with a ledger that is gone by the write is refused.
    #[test]
    fn concurrent_releases_spend_a_ledger_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[7u8; 32]);
        let store = Store::open(&dir.path().join("v.redb"), key.clone()).unwrap();
        let budget = AuditEvent::new("owner", "privacy-budget", Some("k"), "ok");
        store.put_budget("k", 500_000, 1, budget).unwrap();
        let entry = |budgeted: bool| ReleaseEntry {
            key: "k".into(),
            epsilon_micros: Some(100_000),
            budgeted,
            now: 2,
            event: AuditEvent::new("woodgrove", "release", Some("k"), "granted"),
        };
        let payments: Vec<Payment> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| s.spawn(|| store.record_release(entry(true)).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let paid: Vec<_> = payments
            .iter()
            .filter_map(|p| match p {
                Payment::Paid(after, _) => Some(after.spent_micros),
                Payment::Insufficient(_) => None,
                other => panic!("{other:?}"),
            })
            .collect();
        let mut spent = paid.clone();
        spent.sort_unstable();
        assert_eq!(spent, [100_000, 200_000, 300_000, 400_000, 500_000]);
        let ledger = store.budget("k").unwrap().unwrap();
        assert_eq!((ledger.spent_micros, ledger.releases), (500_000, 5));
        let granted = store
            .audit_entries(0, usize::MAX)
            .unwrap()
            .into_iter()
            .filter(|e| e.event.outcome == "granted")
            .count();
        assert_eq!(granted, 5);

        // The ledger gone (the key purged) after a decision that saw it: refused, not free.
        store
            .backend
            .write(|tx| tx.remove(Table::Budgets, &Key::str("k")).map(drop))
            .unwrap();
        assert_eq!(
            store.record_release(entry(true)).unwrap(),
            Payment::BudgetGone
        );
        assert!(matches!(
            store.record_release(entry(false)).unwrap(),
            Payment::Free(_)
        ));

        // A ledger that does not decode fails its own release, not the entries committed with
        // it, and writes nothing of it.
        store
            .backend
            .write(|tx| tx.put(Table::Budgets, &Key::str("k"), b"not a ledger"))
            .unwrap();
        let before = store.audit_head().unwrap().unwrap().0;
        let committed = store
            .commit_batch(vec![
                Pending::Audit(AuditEvent::new("a", "get", Some("x"), "ok")),
                Pending::Release(entry(true)),
                Pending::Audit(AuditEvent::new("b", "get", Some("y"), "ok")),
            ])
            .unwrap();
        assert!(matches!(
            committed.as_slice(),
            [
                Committed::Entry(_),
                Committed::Failed(StoreError::Corrupt(_)),
                Committed::Entry(_)
            ]
        ));
        assert_eq!(store.audit_head().unwrap().unwrap().0, before + 2);
        assert!(matches!(
            store.record_release(entry(true)),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn concurrent_audit_appends_are_all_durable_and_chained() {
        let dir = tempfile::tempdir().unwrap();
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[9u8; 32]);
        let store = Store::open(&dir.path().join("v.redb"), key.clone()).unwrap();
        let (threads, each) = (16, 40);
        let returned: Vec<AuditEntry> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let store = &store;
                    s.spawn(move || {
                        (0..each)
                            .map(|i| {
                                store
                                    .audit(AuditEvent::new(
                                        &format!("p{t}"),
                                        "release",
                                        Some(&format!("k{i}")),
                                        "released",
                                    ))
                                    .unwrap()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        drop(store);

        // Reopened from disk: every acknowledged entry is there, once, and the chain verifies.
        let store = Store::open(&dir.path().join("v.redb"), key.clone()).unwrap();
        let stored = store.audit_entries(0, usize::MAX).unwrap();
        assert_eq!(stored.len(), threads * each);
        for e in &returned {
            assert_eq!(
                &stored[e.seq as usize], e,
                "entry {} differs on disk",
                e.seq
            );
        }
        let head = store.audit_head().unwrap().unwrap();
        crate::audit::verify(&key, &stored, Some((head.0, head.1.as_str()))).unwrap();
    }
}
