//! The storage interface under the vault's store: named tables of ordered keys and byte
//! values, read and written in transactions. Two backends implement it: redb (embedded, the
//! default) and PostgreSQL (several vault replicas on one database). Everything above it — the
//! records, the audit chain, the Merkle tree — is written once, in [`super`].

use std::cell::RefCell;

use redb::{ReadableDatabase as _, ReadableTable, TableDefinition};

use super::StoreError;

/// A table of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `name/version` → key record.
    Keys,
    /// name → latest version (text).
    Latest,
    /// `name\0principal` → grant.
    Grants,
    /// name → principal.
    Principals,
    /// token SHA-256 → principal name (text).
    Tokens,
    /// seq → audit entry (integer keys).
    Audit,
    /// name → value (the audit head, the tree size).
    Meta,
    /// name → deleted key.
    Deleted,
    /// name → rotation policy.
    Rotation,
    /// stored hash index → 32-byte hash (integer keys): the audit log's Merkle tree.
    Tree,
    /// name → privacy-budget ledger.
    Budgets,
}

impl Table {
    pub const ALL: [Table; 11] = [
        Table::Keys,
        Table::Latest,
        Table::Grants,
        Table::Principals,
        Table::Tokens,
        Table::Audit,
        Table::Meta,
        Table::Deleted,
        Table::Rotation,
        Table::Tree,
        Table::Budgets,
    ];

    /// The table's name (redb's; PostgreSQL's with a `vault_` prefix).
    pub fn name(self) -> &'static str {
        match self {
            Table::Keys => "keys",
            Table::Latest => "latest",
            Table::Grants => "grants",
            Table::Principals => "principals",
            Table::Tokens => "tokens",
            Table::Audit => "audit",
            Table::Meta => "meta",
            Table::Deleted => "deleted",
            Table::Rotation => "rotation",
            Table::Tree => "audit_tree",
            Table::Budgets => "budgets",
        }
    }

    fn int_keys(self) -> bool {
        matches!(self, Table::Audit | Table::Tree)
    }

    fn text_values(self) -> bool {
        matches!(self, Table::Latest | Table::Tokens)
    }
}

/// A key: text, or an integer for [`Table::Audit`] and [`Table::Tree`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Str(String),
    Int(u64),
}

impl Key {
    pub fn str(s: impl Into<String>) -> Key {
        Key::Str(s.into())
    }

    /// As stored in PostgreSQL: UTF-8, or 8 bytes big-endian, so byte order is key order.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Key::Str(s) => s.as_bytes().to_vec(),
            Key::Int(i) => i.to_be_bytes().to_vec(),
        }
    }

    pub fn from_bytes(table: Table, bytes: &[u8]) -> Result<Key, StoreError> {
        if table.int_keys() {
            <[u8; 8]>::try_from(bytes)
                .map(|b| Key::Int(u64::from_be_bytes(b)))
                .map_err(|_| StoreError::Corrupt(format!("a key of table {}", table.name())))
        } else {
            String::from_utf8(bytes.to_vec())
                .map(Key::Str)
                .map_err(|_| StoreError::Corrupt(format!("a key of table {}", table.name())))
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Key::Str(s) => s,
            Key::Int(_) => "",
        }
    }

    pub fn as_int(&self) -> u64 {
        match self {
            Key::Int(i) => *i,
            Key::Str(_) => 0,
        }
    }
}

/// One transaction's view of the store.
/// One read of [`Tx::get_many`].
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The value at `table[key]`.
    Get(Table, Key),
    /// The value at `second[prefix ‖ first[key]]` (see [`Tx::get_through`]).
    Through {
        first: Table,
        key: Key,
        second: Table,
        prefix: String,
    },
}

pub trait Tx {
    fn get(&mut self, t: Table, k: &Key) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, t: Table, k: &Key, v: &[u8]) -> Result<(), StoreError>;
    /// Whether there was a value.
    fn remove(&mut self, t: Table, k: &Key) -> Result<bool, StoreError>;
    /// Follows a pointer: the value at `second[prefix ‖ first[k]]`, if both exist (a key's
    /// latest version's record, a token's principal). One round trip where the backend can.
    fn get_through(
        &mut self,
        first: Table,
        k: &Key,
        second: Table,
        prefix: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        follow_pointer(self, first, k, second, prefix)
    }

    /// Several reads at once, their values in order: one round trip where the backend can
    /// (a request's principal and its key together).
    fn get_many(&mut self, lookups: &[Lookup]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        get_each(self, lookups)
    }

    /// The entries with `start <= key < end` (to the last without `end`), in key order, at
    /// most `limit`.
    fn scan(
        &mut self,
        t: Table,
        start: &Key,
        end: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Vec<u8>)>, StoreError>;
}

/// [`Tx::get_through`] with two plain reads.
pub fn follow_pointer<T: Tx + ?Sized>(
    tx: &mut T,
    first: Table,
    k: &Key,
    second: Table,
    prefix: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(pointer) = tx.get(first, k)? else {
        return Ok(None);
    };
    let pointer = String::from_utf8(pointer)
        .map_err(|_| StoreError::Corrupt(format!("a value of table {}", first.name())))?;
    tx.get(second, &Key::Str(format!("{prefix}{pointer}")))
}

/// [`Tx::get_many`] one lookup at a time, with plain reads.
pub fn get_each<T: Tx + ?Sized>(
    tx: &mut T,
    lookups: &[Lookup],
) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    lookups
        .iter()
        .map(|l| match l {
            Lookup::Get(t, k) => tx.get(*t, k),
            Lookup::Through {
                first,
                key,
                second,
                prefix,
            } => follow_pointer(tx, *first, key, *second, prefix),
        })
        .collect()
}

/// Reads the audit tree's stored hashes through a transaction (for `tlog_tiles`). A storage
/// error is kept (see [`TreeReader::run`]) so that a database outage is reported as one, not
/// as a bad proof or a corrupt tree.
pub struct TreeReader<'a> {
    tx: RefCell<&'a mut dyn Tx>,
    failed: RefCell<Option<StoreError>>,
}

impl<'a> TreeReader<'a> {
    pub fn new(tx: &'a mut dyn Tx) -> Self {
        TreeReader {
            tx: RefCell::new(tx),
            failed: RefCell::new(None),
        }
    }

    /// Runs a `tlog_tiles` computation over the tree; a storage error during it wins over
    /// the computation's own error, which `what` describes otherwise.
    pub fn run<T>(
        tx: &'a mut dyn Tx,
        f: impl FnOnce(&TreeReader<'a>) -> Result<T, tlog_tiles::Error>,
        what: impl FnOnce(tlog_tiles::Error) -> StoreError,
    ) -> Result<T, StoreError> {
        let reader = TreeReader::new(tx);
        let out = f(&reader);
        if let Some(e) = reader.failed.into_inner() {
            return Err(e);
        }
        out.map_err(what)
    }
}

impl tlog_tiles::HashReader for TreeReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        let mut tx = self.tx.borrow_mut();
        indexes
            .iter()
            .map(|&i| {
                let v = match tx.get(Table::Tree, &Key::Int(i)) {
                    Ok(Some(v)) => v,
                    Ok(None) => return Err(tlog_tiles::Error::InvalidProof),
                    Err(e) => {
                        self.failed.borrow_mut().get_or_insert(e);
                        return Err(tlog_tiles::Error::InvalidProof);
                    }
                };
                <[u8; 32]>::try_from(v.as_slice())
                    .map(tlog_tiles::Hash)
                    .map_err(|_| tlog_tiles::Error::InvalidProof)
            })
            .collect()
    }
}

// redb keeps each table with its own key and value types (the on-disk format of vaults made
// before the PostgreSQL backend existed).
fn str_bytes(t: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(t.name())
}
fn str_str(t: Table) -> TableDefinition<'static, &'static str, &'static str> {
    TableDefinition::new(t.name())
}
fn int_bytes(t: Table) -> TableDefinition<'static, u64, &'static [u8]> {
    TableDefinition::new(t.name())
}

fn mismatch(t: Table) -> StoreError {
    StoreError::Db(format!("a key of the wrong type for table {}", t.name()))
}

fn scan_str<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    start: &str,
    end: Option<&str>,
    limit: usize,
    value: impl Fn(redb::AccessGuard<'_, V>) -> Vec<u8>,
) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
    let iter = match end {
        Some(end) => table.range(start..end)?,
        None => table.range(start..)?,
    };
    let mut out = Vec::new();
    for item in iter.take(limit) {
        let (k, v) = item?;
        out.push((Key::str(k.value()), value(v)));
    }
    Ok(out)
}

fn scan_int(
    table: &impl ReadableTable<u64, &'static [u8]>,
    start: u64,
    end: Option<u64>,
    limit: usize,
) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
    let iter = match end {
        Some(end) => table.range(start..end)?,
        None => table.range(start..)?,
    };
    let mut out = Vec::new();
    for item in iter.take(limit) {
        let (k, v) = item?;
        out.push((Key::Int(k.value()), v.value().to_vec()));
    }
    Ok(out)
}

/// Reads of any redb transaction, by table type.
macro_rules! redb_reads {
    ($tx:expr, $t:expr, $k:expr) => {
        match ($t.int_keys(), $t.text_values(), $k) {
            (true, _, Key::Int(i)) => $tx
                .open_table(int_bytes($t))?
                .get(*i)?
                .map(|v| v.value().to_vec()),
            (false, true, Key::Str(s)) => $tx
                .open_table(str_str($t))?
                .get(s.as_str())?
                .map(|v| v.value().as_bytes().to_vec()),
            (false, false, Key::Str(s)) => $tx
                .open_table(str_bytes($t))?
                .get(s.as_str())?
                .map(|v| v.value().to_vec()),
            _ => return Err(mismatch($t)),
        }
    };
}

macro_rules! redb_scan {
    ($tx:expr, $t:expr, $start:expr, $end:expr, $limit:expr) => {
        match ($t.int_keys(), $t.text_values(), $start) {
            (true, _, Key::Int(i)) => scan_int(
                &$tx.open_table(int_bytes($t))?,
                *i,
                $end.map(Key::as_int),
                $limit,
            ),
            (false, true, Key::Str(s)) => scan_str(
                &$tx.open_table(str_str($t))?,
                s,
                $end.map(Key::as_str),
                $limit,
                |v| v.value().as_bytes().to_vec(),
            ),
            (false, false, Key::Str(s)) => scan_str(
                &$tx.open_table(str_bytes($t))?,
                s,
                $end.map(Key::as_str),
                $limit,
                |v| v.value().to_vec(),
            ),
            _ => Err(mismatch($t)),
        }
    };
}

pub struct RedbRead<'a>(pub &'a redb::ReadTransaction);

impl Tx for RedbRead<'_> {
    fn get(&mut self, t: Table, k: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(redb_reads!(self.0, t, k))
    }

    fn put(&mut self, t: Table, _: &Key, _: &[u8]) -> Result<(), StoreError> {
        Err(StoreError::Db(format!("a write to {} in a read", t.name())))
    }

    fn remove(&mut self, t: Table, _: &Key) -> Result<bool, StoreError> {
        Err(StoreError::Db(format!("a write to {} in a read", t.name())))
    }

    fn scan(
        &mut self,
        t: Table,
        start: &Key,
        end: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
        redb_scan!(self.0, t, start, end, limit)
    }
}

pub struct RedbWrite<'a>(pub &'a redb::WriteTransaction);

impl Tx for RedbWrite<'_> {
    fn get(&mut self, t: Table, k: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(redb_reads!(self.0, t, k))
    }

    fn put(&mut self, t: Table, k: &Key, v: &[u8]) -> Result<(), StoreError> {
        match (t.int_keys(), t.text_values(), k) {
            (true, _, Key::Int(i)) => {
                self.0.open_table(int_bytes(t))?.insert(*i, v)?;
            }
            (false, true, Key::Str(s)) => {
                let text = std::str::from_utf8(v).map_err(|_| mismatch(t))?;
                self.0.open_table(str_str(t))?.insert(s.as_str(), text)?;
            }
            (false, false, Key::Str(s)) => {
                self.0.open_table(str_bytes(t))?.insert(s.as_str(), v)?;
            }
            _ => return Err(mismatch(t)),
        }
        Ok(())
    }

    fn remove(&mut self, t: Table, k: &Key) -> Result<bool, StoreError> {
        Ok(match (t.int_keys(), t.text_values(), k) {
            (true, _, Key::Int(i)) => self.0.open_table(int_bytes(t))?.remove(*i)?.is_some(),
            (false, true, Key::Str(s)) => {
                self.0.open_table(str_str(t))?.remove(s.as_str())?.is_some()
            }
            (false, false, Key::Str(s)) => self
                .0
                .open_table(str_bytes(t))?
                .remove(s.as_str())?
                .is_some(),
            _ => return Err(mismatch(t)),
        })
    }

    fn scan(
        &mut self,
        t: Table,
        start: &Key,
        end: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
        redb_scan!(self.0, t, start, end, limit)
    }
}

/// Where the store lives.
pub enum Backend {
    Redb(redb::Database),
    Postgres(super::postgres::PgBackend),
}

impl Backend {
    /// Runs `f`'s reads: on redb one snapshot; on PostgreSQL each statement sees everything
    /// committed before it (see [`PgBackend::read`](super::postgres::PgBackend::read)).
    pub fn read<R>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        match self {
            Backend::Redb(db) => {
                let tx = db.begin_read()?;
                f(&mut RedbRead(&tx))
            }
            Backend::Postgres(pg) => pg.read(f),
        }
    }

    /// Runs `f`'s reads on one snapshot, whatever the backend (on PostgreSQL a read-only
    /// REPEATABLE READ transaction: two more round trips than [`read`](Self::read)).
    pub fn read_snapshot<R>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        match self {
            Backend::Redb(_) => self.read(f),
            Backend::Postgres(pg) => pg.read_snapshot(f),
        }
    }

    /// Runs `f` in a write transaction, alone (writes never interleave, on one process or
    /// across replicas), and commits durably; an error from `f` writes nothing.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        match self {
            Backend::Redb(db) => {
                let tx = db.begin_write()?;
                let out = f(&mut RedbWrite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Backend::Postgres(pg) => pg.write(f),
        }
    }

    /// Creates every redb table, so reads never meet a missing one.
    pub fn create_redb_tables(db: &redb::Database) -> Result<(), StoreError> {
        let tx = db.begin_write()?;
        for t in Table::ALL {
            match (t.int_keys(), t.text_values()) {
                (true, _) => drop(tx.open_table(int_bytes(t))?),
                (false, true) => drop(tx.open_table(str_str(t))?),
                (false, false) => drop(tx.open_table(str_bytes(t))?),
            }
        }
        tx.commit()?;
        Ok(())
    }
}
