//! The vault's durable state in one embedded ACID database (redb): keys (private parts sealed
//! under the master key), grants, principals and the audit log. Every change and the audit
//! entry that records it commit in one transaction, and a commit returns only once it is on
//! disk, so an acknowledged write survives `kill -9`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::audit::{AuditEntry, AuditEvent, chain_mac};

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const LATEST: TableDefinition<&str, &str> = TableDefinition::new("latest");
const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");
const PRINCIPALS: TableDefinition<&str, &[u8]> = TableDefinition::new("principals");
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const DELETED: TableDefinition<&str, &[u8]> = TableDefinition::new("deleted");
const ROTATION: TableDefinition<&str, &[u8]> = TableDefinition::new("rotation");
/// The audit log's Merkle tree: each stored hash (`tlog_tiles::stored_hash_index`) → 32 bytes.
const TREE: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_tree");
/// How many audit entries the tree holds (a META key).
const TREE_SIZE: &str = "audit_tree_size";

/// Reads the stored hashes of the audit tree from a table of a read or write transaction.
struct TreeReader<'a, T>(&'a T);

impl<T: redb::ReadableTable<u64, &'static [u8]>> tlog_tiles::HashReader for TreeReader<'_, T> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                let v = self
                    .0
                    .get(i)
                    .ok()
                    .flatten()
                    .ok_or(tlog_tiles::Error::InvalidProof)?;
                <[u8; 32]>::try_from(v.value())
                    .map(tlog_tiles::Hash)
                    .map_err(|_| tlog_tiles::Error::InvalidProof)
            })
            .collect()
    }
}

/// Adds the stored hashes of leaf `seq` (its stored bytes `leaf`) to the tree.
fn grow_tree(tx: &redb::WriteTransaction, seq: u64, leaf: &[u8]) -> Result<(), StoreError> {
    let mut tree = tx.open_table(TREE)?;
    let hashes = tlog_tiles::stored_hashes(seq, leaf, &TreeReader(&tree))
        .map_err(|e| StoreError::Corrupt(format!("audit tree before entry {seq}: {e}")))?;
    let base = tlog_tiles::stored_hash_index(0, seq);
    for (i, h) in hashes.iter().enumerate() {
        tree.insert(base + i as u64, h.0.as_slice())?;
    }
    tx.open_table(META)?
        .insert(TREE_SIZE, encode(&(seq + 1)).as_slice())?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("vault store: {0}")]
    Db(String),
    #[error("vault store holds a corrupt record {0}")]
    Corrupt(String),
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

/// What a grantee may do with a key.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Get,
    Release,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub principal: String,
    pub permissions: BTreeSet<Permission>,
}

/// A principal: a name and the SHA-256 of its bearer token (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    pub name: String,
    pub token_sha256: String,
    /// May read the whole audit log and manage principals.
    pub admin: bool,
}

pub struct Store {
    db: Database,
    audit_key: aws_lc_rs::hmac::Key,
    group: GroupCommit,
    /// Time of each audit append until durable, when observed (metrics).
    append_latency: std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>,
}

/// Audit-only appends (releases, denials) from concurrent requests share one transaction: the
/// first caller to find no commit in progress becomes the leader and commits everything queued
/// meanwhile; the others wait for it. Each caller still returns only after its own entry is on
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
    queue: Vec<(u64, AuditEvent)>,
    leader: bool,
    results: std::collections::HashMap<u64, Result<AuditEntry, StoreError>>,
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

impl Store {
    /// Opens (or creates) the database at `path`; `audit_key` MACs the audit chain.
    pub fn open(path: &Path, audit_key: aws_lc_rs::hmac::Key) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Db(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::create(path)?;
        // Create every table so read transactions never meet a missing one.
        let tx = db.begin_write()?;
        tx.open_table(KEYS)?;
        tx.open_table(LATEST)?;
        tx.open_table(GRANTS)?;
        tx.open_table(PRINCIPALS)?;
        tx.open_table(TOKENS)?;
        tx.open_table(AUDIT)?;
        tx.open_table(META)?;
        tx.open_table(DELETED)?;
        tx.open_table(ROTATION)?;
        tx.open_table(TREE)?;
        // A store from before the tree existed gets its entries added now, oldest first.
        let size: u64 = match tx.open_table(META)?.get(TREE_SIZE)? {
            Some(v) => decode("audit tree size", v.value())?,
            None => 0,
        };
        let missing: Vec<(u64, Vec<u8>)> = tx
            .open_table(AUDIT)?
            .range(size..)?
            .map(|item| item.map(|(k, v)| (k.value(), v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        for (seq, leaf) in missing {
            grow_tree(&tx, seq, &leaf)?;
        }
        tx.commit()?;
        Ok(Store {
            db,
            audit_key,
            group: GroupCommit::default(),
            append_latency: std::sync::OnceLock::new(),
        })
    }

    /// Runs `change` and appends `event` to the audit log in one durable transaction.
    fn write<T>(
        &self,
        event: AuditEvent,
        change: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<(T, AuditEntry), StoreError> {
        let tx = self.db.begin_write()?;
        let out = change(&tx)?;
        let entry = self.append(&tx, event)?;
        tx.commit()?;
        Ok((out, entry))
    }

    fn append(
        &self,
        tx: &redb::WriteTransaction,
        event: AuditEvent,
    ) -> Result<AuditEntry, StoreError> {
        let mut meta = tx.open_table(META)?;
        let (seq, prev) = match meta.get("audit_head")? {
            Some(v) => {
                let (seq, mac): (u64, String) = decode("audit head", v.value())?;
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
        tx.open_table(AUDIT)?.insert(seq, leaf.as_slice())?;
        meta.insert("audit_head", encode(&(seq, mac)).as_slice())?;
        drop(meta);
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
        let started = std::time::Instant::now();
        let outcome = self.append_grouped(event);
        if let Some(h) = self.append_latency.get() {
            h.observe(started.elapsed().as_secs_f64());
        }
        outcome
    }

    fn append_grouped(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        let mut st = self.group.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push((ticket, event));
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
        let (tickets, events): (Vec<u64>, Vec<AuditEvent>) =
            std::mem::take(&mut st.queue).into_iter().unzip();
        drop(st);
        // A panic in the commit must not leave the followers waiting for a leader that is gone.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.commit_audit_batch(events)
        }))
        .unwrap_or_else(|_| Err(StoreError::Db("the audit commit panicked".into())));
        let mut st = self.group.lock();
        match outcome {
            Ok(entries) => st
                .results
                .extend(tickets.into_iter().zip(entries.into_iter().map(Ok))),
            Err(e) => {
                let msg = e.to_string();
                st.results.extend(
                    tickets
                        .into_iter()
                        .map(|t| (t, Err(StoreError::Db(msg.clone())))),
                );
            }
        }
        // Entries queued meanwhile go to the first waiter to wake, who leads the next batch.
        st.leader = false;
        self.group.done.notify_all();
        st.results
            .remove(&ticket)
            .expect("the leader's own entry is in its batch")
    }

    fn commit_audit_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, StoreError> {
        let tx = self.db.begin_write()?;
        let entries = events
            .into_iter()
            .map(|event| self.append(&tx, event))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(entries)
    }

    /// Stores a new key version, which becomes the key's latest.
    pub fn create_key(&self, rec: &KeyRecord, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        let id = format!("{}/{}", rec.name, rec.version);
        Ok(self
            .write(event, |tx| {
                tx.open_table(KEYS)?
                    .insert(id.as_str(), encode(rec).as_slice())?;
                tx.open_table(LATEST)?
                    .insert(rec.name.as_str(), rec.version.as_str())?;
                Ok(())
            })?
            .1)
    }

    /// Restores every version of a key from a backup, in one transaction: the newest becomes
    /// the key's latest. Refused (returns `false`, nothing written) when a key of that name
    /// exists.
    pub fn restore_key(
        &self,
        versions: &[KeyRecord],
        event: AuditEvent,
    ) -> Result<Option<AuditEntry>, StoreError> {
        // `versions` comes from `versions()`, latest last; `max_by_key` returns the last of
        // equal maxima, so versions made in the same second restore with the right latest.
        let Some(newest) = versions.iter().max_by_key(|r| r.created) else {
            return Ok(None);
        };
        let (restored, entry) = self.write(event, |tx| {
            let mut latest = tx.open_table(LATEST)?;
            if latest.get(newest.name.as_str())?.is_some() {
                return Ok(false);
            }
            let mut keys = tx.open_table(KEYS)?;
            for rec in versions {
                let id = format!("{}/{}", rec.name, rec.version);
                keys.insert(id.as_str(), encode(rec).as_slice())?;
            }
            latest.insert(newest.name.as_str(), newest.version.as_str())?;
            Ok(true)
        })?;
        Ok(restored.then_some(entry))
    }

    /// Sets a key's rotation policy (Azure's `rotationpolicy` document, validated by the
    /// caller).
    pub fn put_rotation_policy(
        &self,
        name: &str,
        policy: &serde_json::Value,
        event: AuditEvent,
    ) -> Result<AuditEntry, StoreError> {
        Ok(self
            .write(event, |tx| {
                tx.open_table(ROTATION)?
                    .insert(name, encode(policy).as_slice())?;
                Ok(())
            })?
            .1)
    }

    pub fn rotation_policy(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let tx = self.db.begin_read()?;
        match tx.open_table(ROTATION)?.get(name)? {
            Some(v) => Ok(Some(decode(name, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every key's rotation policy.
    pub fn rotation_policies(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ROTATION)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), decode(k.value(), v.value())?));
        }
        Ok(out)
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
            let mut latest = tx.open_table(LATEST)?;
            if latest.remove(name)?.is_none() {
                return Ok(None);
            }
            let mut keys = tx.open_table(KEYS)?;
            let (start, end) = (format!("{name}/"), format!("{name}0"));
            let mut versions = Vec::new();
            for item in keys.range(start.as_str()..end.as_str())? {
                let (k, v) = item?;
                versions.push(decode::<KeyRecord>(k.value(), v.value())?);
            }
            for r in &versions {
                keys.remove(format!("{}/{}", r.name, r.version).as_str())?;
            }
            versions.sort_by_key(|r| r.created);
            let d = DeletedKey {
                name: name.to_string(),
                deleted,
                scheduled_purge,
                versions,
            };
            tx.open_table(DELETED)?
                .insert(name, encode(&d).as_slice())?;
            Ok(Some(d))
        })?;
        Ok(out.map(|d| (d, entry)))
    }

    pub fn deleted_key(&self, name: &str) -> Result<Option<DeletedKey>, StoreError> {
        let tx = self.db.begin_read()?;
        match tx.open_table(DELETED)?.get(name)? {
            Some(v) => Ok(Some(decode(name, v.value())?)),
            None => Ok(None),
        }
    }

    pub fn deleted_keys(&self) -> Result<Vec<DeletedKey>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(DELETED)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
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
                    .open_table(DELETED)?
                    .remove(name)?
                    .map(|v| decode::<DeletedKey>(name, v.value()))
                    .transpose()?
                else {
                    return Ok(None);
                };
                let mut keys = tx.open_table(KEYS)?;
                for r in &d.versions {
                    let id = format!("{}/{}", r.name, r.version);
                    keys.insert(id.as_str(), encode(r).as_slice())?;
                }
                if let Some(last) = d.versions.last() {
                    tx.open_table(LATEST)?.insert(name, last.version.as_str())?;
                }
                Ok(Some(d))
            })?
            .0)
    }

    /// Erases a deleted key for good (its sealed private parts with it). `false` when it is not
    /// deleted.
    pub fn purge_key(&self, name: &str, event: AuditEvent) -> Result<bool, StoreError> {
        Ok(self
            .write(event, |tx| {
                if tx.open_table(DELETED)?.remove(name)?.is_none() {
                    return Ok(false);
                }
                // Whatever referred to the key goes with it: a key created later under the
                // same name (by anyone) must not inherit its grants or rotation policy.
                let mut grants = tx.open_table(GRANTS)?;
                let (start, end) = (format!("{name}\u{0}"), format!("{name}\u{1}"));
                let stale: Vec<String> = grants
                    .range(start.as_str()..end.as_str())?
                    .map(|item| item.map(|(k, _)| k.value().to_string()))
                    .collect::<Result<_, _>>()?;
                for k in stale {
                    grants.remove(k.as_str())?;
                }
                tx.open_table(ROTATION)?.remove(name)?;
                Ok(true)
            })?
            .0)
    }

    /// Replaces an existing key version's record (attributes, policy, tags).
    pub fn update_key(&self, rec: &KeyRecord, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        let id = format!("{}/{}", rec.name, rec.version);
        Ok(self
            .write(event, |tx| {
                tx.open_table(KEYS)?
                    .insert(id.as_str(), encode(rec).as_slice())?;
                Ok(())
            })?
            .1)
    }

    pub fn key(&self, name: &str, version: Option<&str>) -> Result<Option<KeyRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let version = match version {
            Some(v) => v.to_string(),
            None => match tx.open_table(LATEST)?.get(name)? {
                Some(v) => v.value().to_string(),
                None => return Ok(None),
            },
        };
        let id = format!("{name}/{version}");
        match tx.open_table(KEYS)?.get(id.as_str())? {
            Some(v) => Ok(Some(decode(&id, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every version of a key, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let keys = tx.open_table(KEYS)?;
        let latest = tx
            .open_table(LATEST)?
            .get(name)?
            .map(|v| v.value().to_string());
        let (start, end) = (format!("{name}/"), format!("{name}0"));
        let mut out = Vec::new();
        for item in keys.range(start.as_str()..end.as_str())? {
            let (k, v) = item?;
            out.push(decode::<KeyRecord>(k.value(), v.value())?);
        }
        // Creation times are in seconds, so two versions made in the same second tie: the
        // latest pointer breaks the tie, keeping the latest version last.
        out.sort_by_key(|r| (r.created, latest.as_deref() == Some(r.version.as_str())));
        Ok(out)
    }

    /// Names of all keys.
    pub fn key_names(&self) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read()?;
        let latest = tx.open_table(LATEST)?;
        let mut out = Vec::new();
        for item in latest.iter()? {
            out.push(item?.0.value().to_string());
        }
        Ok(out)
    }

    pub fn put_grant(
        &self,
        name: &str,
        grant: &Grant,
        event: AuditEvent,
    ) -> Result<AuditEntry, StoreError> {
        let k = grant_key(name, &grant.principal);
        Ok(self
            .write(event, |tx| {
                tx.open_table(GRANTS)?
                    .insert(k.as_str(), encode(grant).as_slice())?;
                Ok(())
            })?
            .1)
    }

    /// Removes a grant; `Ok(false)` if there was none.
    pub fn delete_grant(
        &self,
        name: &str,
        principal: &str,
        event: AuditEvent,
    ) -> Result<(bool, AuditEntry), StoreError> {
        let k = grant_key(name, principal);
        self.write(event, |tx| {
            Ok(tx.open_table(GRANTS)?.remove(k.as_str())?.is_some())
        })
    }

    pub fn grant(&self, name: &str, principal: &str) -> Result<Option<Grant>, StoreError> {
        let tx = self.db.begin_read()?;
        match tx
            .open_table(GRANTS)?
            .get(grant_key(name, principal).as_str())?
        {
            Some(v) => Ok(Some(decode("grant", v.value())?)),
            None => Ok(None),
        }
    }

    pub fn grants(&self, name: &str) -> Result<Vec<Grant>, StoreError> {
        let tx = self.db.begin_read()?;
        let grants = tx.open_table(GRANTS)?;
        let (start, end) = (format!("{name}\u{0}"), format!("{name}\u{1}"));
        let mut out = Vec::new();
        for item in grants.range(start.as_str()..end.as_str())? {
            out.push(decode("grant", item?.1.value())?);
        }
        Ok(out)
    }

    /// Adds or replaces a principal (its old token stops working).
    pub fn put_principal(
        &self,
        p: &Principal,
        event: AuditEvent,
    ) -> Result<AuditEntry, StoreError> {
        Ok(self
            .write(event, |tx| {
                let mut principals = tx.open_table(PRINCIPALS)?;
                let mut tokens = tx.open_table(TOKENS)?;
                if let Some(old) = principals.get(p.name.as_str())? {
                    let old: Principal = decode("principal", old.value())?;
                    tokens.remove(old.token_sha256.as_str())?;
                }
                principals.insert(p.name.as_str(), encode(p).as_slice())?;
                tokens.insert(p.token_sha256.as_str(), p.name.as_str())?;
                Ok(())
            })?
            .1)
    }

    pub fn principal_by_token_hash(&self, hash: &str) -> Result<Option<Principal>, StoreError> {
        let tx = self.db.begin_read()?;
        let Some(name) = tx
            .open_table(TOKENS)?
            .get(hash)?
            .map(|v| v.value().to_string())
        else {
            return Ok(None);
        };
        match tx.open_table(PRINCIPALS)?.get(name.as_str())? {
            Some(v) => Ok(Some(decode("principal", v.value())?)),
            None => Ok(None),
        }
    }

    pub fn principals(&self) -> Result<Vec<Principal>, StoreError> {
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        for item in tx.open_table(PRINCIPALS)?.iter()? {
            out.push(decode("principal", item?.1.value())?);
        }
        Ok(out)
    }

    /// Audit entries from `from` on, at most `limit`.
    pub fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        for item in tx.open_table(AUDIT)?.range(from..)?.take(limit) {
            let (k, v) = item?;
            out.push(decode(&format!("audit entry {}", k.value()), v.value())?);
        }
        Ok(out)
    }

    /// The last entry's sequence number and MAC, to record outside the vault.
    pub fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        let tx = self.db.begin_read()?;
        match tx.open_table(META)?.get("audit_head")? {
            Some(v) => Ok(Some(decode("audit head", v.value())?)),
            None => Ok(None),
        }
    }

    /// The audit tree now: (number of entries, RFC 6962 root hash).
    pub fn audit_tree_head(&self) -> Result<(u64, tlog_tiles::Hash), StoreError> {
        let tx = self.db.begin_read()?;
        let size: u64 = match tx.open_table(META)?.get(TREE_SIZE)? {
            Some(v) => decode("audit tree size", v.value())?,
            None => 0,
        };
        let tree = tx.open_table(TREE)?;
        let root = tlog_tiles::tree_hash(size, &TreeReader(&tree))
            .map_err(|e| StoreError::Corrupt(format!("audit tree: {e}")))?;
        Ok((size, root))
    }

    /// The entries from `from` (at most `limit`) as stored: (seq, the leaf's exact bytes).
    pub fn audit_leaves(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        for item in tx.open_table(AUDIT)?.range(from..)?.take(limit) {
            let (k, v) = item?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The inclusion proof of entry `seq` in the tree of `size` entries (RFC 9162 §2.1.3).
    pub fn audit_inclusion(
        &self,
        seq: u64,
        size: u64,
    ) -> Result<Vec<tlog_tiles::Hash>, StoreError> {
        let tx = self.db.begin_read()?;
        let tree = tx.open_table(TREE)?;
        tlog_tiles::prove_record(size, seq, &TreeReader(&tree)).map_err(|e| {
            StoreError::Db(format!(
                "no inclusion proof of entry {seq} in size {size}: {e}"
            ))
        })
    }

    /// The consistency proof from the tree of `old` entries to that of `size` (RFC 9162 §2.1.4).
    pub fn audit_consistency(
        &self,
        old: u64,
        size: u64,
    ) -> Result<Vec<tlog_tiles::Hash>, StoreError> {
        let tx = self.db.begin_read()?;
        let tree = tx.open_table(TREE)?;
        tlog_tiles::prove_tree(size, old, &TreeReader(&tree)).map_err(|e| {
            StoreError::Db(format!(
                "no consistency proof from size {old} to {size}: {e}"
            ))
        })
    }

    pub fn audit_key(&self) -> &aws_lc_rs::hmac::Key {
        &self.audit_key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.delete_table(TREE).unwrap();
            tx.open_table(META).unwrap().remove(TREE_SIZE).unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(&path, key).unwrap();
        assert_eq!(store.audit_tree_head().unwrap(), (size, root));
        store
            .audit(AuditEvent::new("p", "release", Some("k"), "granted"))
            .unwrap();
        assert_eq!(store.audit_tree_head().unwrap().0, 22);
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
