//! The PostgreSQL backend: several `conclave kms serve` replicas share one database.
//!
//! Each table of [`Table`] is a table `vault_<name> (k bytea PRIMARY KEY, v bytea NOT NULL)`
//! (keys UTF-8, or 8 bytes big-endian for integer keys, so byte order is key order), created
//! by the migrations in `crates/conclave-kms/migrations/`, which a replica applies at start
//! under an advisory lock. Every write transaction first takes one transaction-scoped advisory
//! lock, so writes of all replicas run one at a time, each seeing everything committed before
//! it (READ COMMITTED takes a fresh snapshot per statement): the audit chain never forks, and
//! a grant or revocation committed by one replica is what the next request on any replica
//! reads. Reads run outside transactions, one round trip per statement. A commit returns once
//! PostgreSQL has made it durable (`synchronous_commit`, on by default).
//!
//! The store's interface is synchronous (the vault's handlers run on blocking threads); each
//! statement is driven to completion there with `futures::executor::block_on`, while the
//! connection's I/O runs on the Tokio runtime (the pool spawns it there).

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::executor::block_on;
use tokio_postgres::types::ToSql;

use super::StoreError;
use super::backend::{Key, Lookup, Table, Tx};

/// The schema, in order: (version, description, SQL).
const MIGRATIONS: [(i32, &str, &str); 2] = [
    (
        1,
        "vault tables",
        include_str!("../../migrations/0001_vault_tables.sql"),
    ),
    (
        2,
        "privacy budgets",
        include_str!("../../migrations/0002_privacy_budgets.sql"),
    ),
];

/// The advisory lock each write transaction holds ("conclave" in ASCII).
const WRITE_LOCK: i64 = 0x636f_6e63_6c61_7665;
/// The advisory lock held while migrating.
const MIGRATION_LOCK: i64 = WRITE_LOCK + 1;

/// A pool of connections to the vault's database.
pub struct PgBackend {
    pool: Pool,
    /// This process's writers queue here before taking a connection: they would only wait on
    /// the advisory lock with it, leaving none for reads.
    writers: std::sync::Mutex<()>,
    /// `host:port/dbname`, for messages (never the password).
    target: String,
}

fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{}",
        config.get_dbname().unwrap_or("postgres")
    )
}

impl PgBackend {
    /// Connects to `url` (`postgres://user[:password]@host:port/dbname`, or the key=value form)
    /// and brings the schema up to date.
    ///
    /// Errors: [`StoreError::Unavailable`] when the server cannot be reached,
    /// [`StoreError::Db`] for a malformed URL or a failed migration.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Db(format!(
                "the PostgreSQL URL is invalid ({e}): give postgres://user@host:port/dbname"
            ))
        })?;
        Self::connect_config(config).await
    }

    /// [`connect`](Self::connect) with a parsed configuration.
    pub async fn connect_config(config: tokio_postgres::Config) -> Result<Self, StoreError> {
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(64)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Db(format!("PostgreSQL pool: {e}")))?;
        let backend = PgBackend {
            pool,
            target,
            writers: std::sync::Mutex::new(()),
        };
        backend.migrate().await?;
        Ok(backend)
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!(
            "the vault's database (PostgreSQL at {}) is unavailable: {e}",
            self.target
        ))
    }

    fn err(&self, e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            // Class 08 (connection exception), 53 (insufficient resources: too many
            // connections, disk full), 57 (operator intervention: shut down, starting up):
            // the database is not there for now; the request may succeed later.
            Some(db) if ["08", "53", "57"].contains(&&db.code().code()[..2]) => {
                self.unavailable(format!("{} ({})", db.message(), db.code().code()))
            }
            // Serialization failure or deadlock (40001, 40P01): not expected under the write
            // lock, and retryable if they happen.
            Some(db) if db.code().code().starts_with("40") => StoreError::Unavailable(format!(
                "the vault's database (PostgreSQL at {}) refused a transaction that conflicted with another: {} ({})",
                self.target,
                db.message(),
                db.code().code()
            )),
            Some(db) => StoreError::Db(format!(
                "PostgreSQL at {}: {} ({})",
                self.target,
                db.message(),
                db.code().code()
            )),
            None => self.unavailable(e),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            // The server's own reason ("the database system is starting up"), not "db error".
            deadpool_postgres::PoolError::Backend(e) => match e.as_db_error() {
                Some(db) => self.unavailable(format!("{} ({})", db.message(), db.code().code())),
                None => self.unavailable(e),
            },
            e => self.unavailable(e),
        })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.err(e))?;
        let outcome = async {
            client
                .batch_execute(
                    "SET client_min_messages = warning;
                     CREATE TABLE IF NOT EXISTS vault_schema_migrations (
                         version integer PRIMARY KEY,
                         description text NOT NULL,
                         applied_at timestamptz NOT NULL DEFAULT now())",
                )
                .await?;
            for (version, description, sql) in MIGRATIONS {
                let done = client
                    .query_opt(
                        "SELECT 1 FROM vault_schema_migrations WHERE version = $1",
                        &[&version],
                    )
                    .await?
                    .is_some();
                if done {
                    continue;
                }
                let tx = client.transaction().await?;
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO vault_schema_migrations (version, description) VALUES ($1, $2)",
                    &[&version, &description],
                )
                .await?;
                tx.commit().await?;
                tracing::info!(version, description, "vault database migrated");
            }
            Ok::<_, tokio_postgres::Error>(())
        }
        .await;
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        outcome.map_err(|e| self.err(e))
    }

    /// Runs `f`'s reads, each statement on its own snapshot of everything committed (no
    /// BEGIN/COMMIT round trips: a read needs one). The store's reads are built for that: a
    /// version's record commits with its key's latest pointer, stored tree hashes never
    /// change, and an entry read after another is never older.
    pub fn read<R>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let client = block_on(self.client())?;
        f(&mut PgTx {
            conn: Conn::Client(&client),
            backend: self,
            pending: BTreeMap::new(),
            writable: false,
        })
    }

    /// Runs `f`'s reads on one snapshot (a read-only REPEATABLE READ transaction), for reads
    /// whose statements must agree with each other.
    pub fn read_snapshot<R>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut client = block_on(self.client())?;
        let tx = block_on(
            client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start(),
        )
        .map_err(|e| self.err(e))?;
        let out = f(&mut PgTx {
            conn: Conn::Tx(&tx),
            backend: self,
            pending: BTreeMap::new(),
            writable: false,
        })?;
        block_on(tx.commit()).map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Runs `f` holding the write lock, and commits.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let _queued = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        let mut client = block_on(self.client())?;
        // READ COMMITTED whatever the server's default: each statement after the lock sees
        // everything committed before it was granted.
        let tx = block_on(
            client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
                .start(),
        )
        .map_err(|e| self.err(e))?;
        block_on(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK]))
            .map_err(|e| self.err(e))?;
        let mut ptx = PgTx {
            conn: Conn::Tx(&tx),
            backend: self,
            pending: BTreeMap::new(),
            writable: true,
        };
        let out = f(&mut ptx)?;
        ptx.flush()?;
        block_on(tx.commit()).map_err(|e| self.err(e))?;
        Ok(out)
    }
}

/// Where statements go: a pooled connection (reads) or a transaction on one (writes).
enum Conn<'a, 'c> {
    Client(&'a deadpool_postgres::ClientWrapper),
    Tx(&'a deadpool_postgres::Transaction<'c>),
}

struct PgTx<'a, 'c> {
    conn: Conn<'a, 'c>,
    backend: &'a PgBackend,
    /// A write transaction's changes not yet sent: (table, key) → new value, or `None` for a
    /// removal. Sent together before a scan and at commit (one statement per table), so a
    /// batch of audit entries costs a handful of round trips rather than several per entry.
    pending: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
    /// False in reads: a write there is a bug, refused.
    writable: bool,
}

impl PgTx<'_, '_> {
    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let run = async {
            match self.conn {
                Conn::Client(c) => c.query(&c.prepare_cached(sql).await?, params).await,
                Conn::Tx(t) => t.query(&t.prepare_cached(sql).await?, params).await,
            }
        };
        block_on(run).map_err(|e| self.backend.err(e))
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let run = async {
            match self.conn {
                Conn::Client(c) => c.execute(&c.prepare_cached(sql).await?, params).await,
                Conn::Tx(t) => t.execute(&t.prepare_cached(sql).await?, params).await,
            }
        };
        block_on(run).map_err(|e| self.backend.err(e))
    }
}

/// One table's pending changes: removed keys, then written keys and their values.
type Changes = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);

impl PgTx<'_, '_> {
    /// Sends the pending changes: per table, one DELETE of the removed keys and one upsert of
    /// the written ones.
    fn flush(&mut self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.pending);
        let mut by_table: BTreeMap<Table, Changes> = BTreeMap::new();
        for ((t, k), v) in pending {
            let (removed, keys, values) = by_table.entry(t).or_default();
            match v {
                Some(v) => {
                    keys.push(k);
                    values.push(v);
                }
                None => removed.push(k),
            }
        }
        for (t, (removed, keys, values)) in by_table {
            if !removed.is_empty() {
                let sql = format!("DELETE FROM vault_{} WHERE k = ANY($1)", t.name());
                self.execute(&sql, &[&removed])?;
            }
            if !keys.is_empty() {
                // The audit log and its tree only grow: writing an existing entry again is an
                // error, never a silent replacement.
                let upsert = if matches!(t, Table::Audit | Table::Tree) {
                    ""
                } else {
                    " ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
                };
                let sql = format!(
                    "INSERT INTO vault_{} (k, v) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]){upsert}",
                    t.name()
                );
                self.execute(&sql, &[&keys, &values])?;
            }
        }
        Ok(())
    }
}

impl Tx for PgTx<'_, '_> {
    fn get(&mut self, t: Table, k: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        let key = k.to_bytes();
        if let Some(v) = self.pending.get(&(t, key.clone())) {
            return Ok(v.clone());
        }
        let sql = format!("SELECT v FROM vault_{} WHERE k = $1", t.name());
        let rows = self.query(&sql, &[&key])?;
        Ok(rows.first().map(|r| r.get::<_, Vec<u8>>(0)))
    }

    fn get_through(
        &mut self,
        first: Table,
        k: &Key,
        second: Table,
        prefix: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let lookup = Lookup::Through {
            first,
            key: k.clone(),
            second,
            prefix: prefix.into(),
        };
        Ok(self
            .get_many(std::slice::from_ref(&lookup))?
            .pop()
            .flatten())
    }

    fn get_many(&mut self, lookups: &[Lookup]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if !self.pending.is_empty() {
            // This transaction's own changes live here until flushed: one lookup at a time,
            // each table read through them.
            return super::backend::get_each(self, lookups);
        }
        // One statement: the lookups' rows, each tagged with its position.
        let mut parts = Vec::with_capacity(lookups.len());
        let mut params: Vec<Vec<u8>> = Vec::new();
        for (i, l) in lookups.iter().enumerate() {
            match l {
                Lookup::Get(t, k) => {
                    params.push(k.to_bytes());
                    parts.push(format!(
                        "SELECT {i}::int4, v FROM vault_{} WHERE k = ${}",
                        t.name(),
                        params.len()
                    ));
                }
                Lookup::Through {
                    first,
                    key,
                    second,
                    prefix,
                } => {
                    params.push(key.to_bytes());
                    params.push(prefix.as_bytes().to_vec());
                    parts.push(format!(
                        "SELECT {i}::int4, s.v FROM vault_{} f JOIN vault_{} s ON s.k = ${}::bytea || f.v WHERE f.k = ${}",
                        first.name(),
                        second.name(),
                        params.len(),
                        params.len() - 1
                    ));
                }
            }
        }
        let sql = parts.join(" UNION ALL ");
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let mut out = vec![None; lookups.len()];
        for row in self.query(&sql, &refs)? {
            let i = usize::try_from(row.get::<_, i32>(0))
                .ok()
                .filter(|i| *i < out.len())
                .ok_or_else(|| StoreError::Db("a lookup row out of range".into()))?;
            out[i] = Some(row.get::<_, Vec<u8>>(1));
        }
        Ok(out)
    }

    fn put(&mut self, t: Table, k: &Key, v: &[u8]) -> Result<(), StoreError> {
        if !self.writable {
            return Err(StoreError::Db(format!("a write to {} in a read", t.name())));
        }
        self.pending.insert((t, k.to_bytes()), Some(v.to_vec()));
        Ok(())
    }

    fn remove(&mut self, t: Table, k: &Key) -> Result<bool, StoreError> {
        if !self.writable {
            return Err(StoreError::Db(format!("a write to {} in a read", t.name())));
        }
        let existed = self.get(t, k)?.is_some();
        self.pending.insert((t, k.to_bytes()), None);
        Ok(existed)
    }

    fn scan(
        &mut self,
        t: Table,
        start: &Key,
        end: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
        // A scan must see this transaction's own changes.
        self.flush()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match end {
            Some(end) => self.query(
                &format!(
                    "SELECT k, v FROM vault_{} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3",
                    t.name()
                ),
                &[&start.to_bytes(), &end.to_bytes(), &limit],
            )?,
            None => self.query(
                &format!(
                    "SELECT k, v FROM vault_{} WHERE k >= $1 ORDER BY k LIMIT $2",
                    t.name()
                ),
                &[&start.to_bytes(), &limit],
            )?,
        };
        rows.iter()
            .map(|r| {
                Ok((
                    Key::from_bytes(t, r.get::<_, &[u8]>(0))?,
                    r.get::<_, Vec<u8>>(1),
                ))
            })
            .collect()
    }
}
