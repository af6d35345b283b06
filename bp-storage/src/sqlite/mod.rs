//! The SQLite store, the embedded default: one file, WAL, `synchronous=FULL`, one writer thread
//! with group commit, a small pool of read connections, and one connection that writes the
//! security records ([`bp_core::security::SecurityStore`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), bp_core::Error> {
//! use std::sync::Arc;
//! use bp_core::Ledger;
//! use bp_storage::sqlite::{SqliteConfig, SqliteStore};
//!
//! let store = SqliteStore::open("data/ledger.db", SqliteConfig::default())?;
//! let ledger = Ledger::new(Arc::new(store));
//! # let _ = ledger; Ok(()) }
//! ```

mod backup;
mod codec;
mod journal;
mod reads;
mod schema;
mod security;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bp_core::account::Account;
use bp_core::account_number::AccountNumber;
use bp_core::clock::{Clock, SystemClock};
use bp_core::command::{Command, Executed};
use bp_core::customer::{Customer, Username};
use bp_core::event::Event;
use bp_core::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use bp_core::lease::{self, Lease, LeaseDecision};
use bp_core::service_record::ServiceRecord;
use bp_core::service_store::{ServiceQuery, ServiceStore};
use bp_core::store::{CurrencyTotal, HistoryQuery, OutboxEntry, Page, Store, check_cursor_name};
use bp_core::transfer::{Posting, Transfer};
use bp_core::{Error, StoreError, StoreErrorKind, Timestamp};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use codec::micros;
use tokio::sync::{Semaphore, mpsc, oneshot};

pub use backup::{BackupReport, backup};
pub use schema::SCHEMA_VERSION;
pub use writer::WriterStats;

/// Maps a SQLite error to the store's error kinds, so that a caller can tell what to do:
///
/// - a unique or primary key constraint → `Conflict` (the record's id or key is taken); any other
///   constraint (CHECK, NOT NULL, …) → `InvalidRequest` (the record breaks the schema);
/// - disk full (`SQLITE_FULL`) → `StorageFull`, and a read-only database (`SQLITE_READONLY*`,
///   also a file moved or deleted while open) → `ReadOnly`: writes fail until an operator acts,
///   so neither is "retry at once";
/// - a corrupt file or not a database → `Corrupt`, and so is a value of the wrong type;
/// - everything else (busy, locked, I/O errors, …) → `Unavailable`: retry later.
pub(crate) fn sql_err(e: rusqlite::Error) -> StoreError {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase => StoreErrorKind::Corrupt,
            rusqlite::ErrorCode::ConstraintViolation => match f.extended_code {
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    StoreErrorKind::Conflict
                }
                _ => StoreErrorKind::InvalidRequest,
            },
            rusqlite::ErrorCode::DiskFull => StoreErrorKind::StorageFull,
            rusqlite::ErrorCode::ReadOnly => StoreErrorKind::ReadOnly,
            _ => StoreErrorKind::Unavailable,
        },
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            StoreErrorKind::Corrupt
        }
        _ => StoreErrorKind::Unavailable,
    };
    StoreError::with_source(kind, "SQLite failed", e)
}

/// Runs one statement without parameters or rows (`BEGIN`, `COMMIT`) from the connection's cache
/// of prepared statements: `execute_batch` parses it again each time, about 1,500 instructions.
pub(crate) fn run_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(drop).map_err(sql_err)
}

/// Settings of the SQLite store. Durability is not a setting: it is always WAL with
/// `synchronous=FULL`.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// Most commands in one transaction (one fsync).
    pub batch_len_max: usize,
    /// Most commands waiting for the writer; senders wait when it is full (back-pressure).
    pub queue_len_max: usize,
    /// Read connections in the pool.
    pub read_connections: usize,
    /// Page cache of each connection, in KiB.
    pub cache_size_kib: u32,
    /// Transfers the writer keeps in memory between batches before it forgets them. A forgotten
    /// transfer is read back when a command needs it; a retried one is found by the unique index
    /// on its id, so idempotency never depends on this cache. (A batch writes its new transfers'
    /// rows together; when one meets a forgotten id, the batch is rolled back and decided again
    /// from the database, each row with its command, and the retry replays.)
    pub transfer_cache_len_max: usize,
    /// The clock that stamps every change.
    pub clock: Arc<dyn Clock>,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            batch_len_max: 4096,
            queue_len_max: 16_384,
            read_connections: 4,
            cache_size_kib: 256 * 1024,
            transfer_cache_len_max: 4096,
            clock: Arc::new(SystemClock),
        }
    }
}

fn open_connection(path: &Path, flags: OpenFlags, cache_size_kib: u32) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags).map_err(sql_err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql_err)?;
    // Room for every statement the store uses, so none is ever prepared twice.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_LEN);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -{cache_size_kib}; \
         PRAGMA temp_store = MEMORY; PRAGMA foreign_keys = OFF;"
    ))
    .map_err(sql_err)?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(sql_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::new(StoreErrorKind::Unavailable, "the database cannot use WAL mode"));
    }
    Ok(conn)
}

/// Copies committed WAL frames back into the database file every few milliseconds, without
/// blocking the writer (a passive checkpoint), until `stop` is set.
fn spawn_checkpointer(
    conn: Connection,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name("bp-sqlite-checkpoint".into())
        .spawn(move || {
            let mut copied_before = -1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // (busy, frames in the WAL, frames copied). A failed checkpoint only delays the
                // next one; the WAL keeps every commit.
                let progress = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                });
                // Go again at once only while there is more to copy and the last round copied
                // something; when caught up (the writer then restarts the WAL from its start),
                // failing, or held back by a reader's snapshot, wait.
                let busy = match progress {
                    Ok((log, copied)) => {
                        let more = log != copied && copied != copied_before;
                        copied_before = copied;
                        more
                    }
                    Err(_) => false,
                };
                if !busy {
                    std::thread::sleep(CHECKPOINT_INTERVAL);
                }
            }
        })
        .map_err(|e| StoreError::with_source(StoreErrorKind::Unavailable, "cannot start the checkpoint thread", e))
}

/// The store's threads. Dropped with the last handle of the store: the checkpoint thread stops
/// then, and the writer stops by itself once every sender of its queue is gone.
#[derive(Debug)]
struct Threads {
    stop: Arc<std::sync::atomic::AtomicBool>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Takes turns at SQLite's one write lock of the file between the ledger writer (a turn per
/// batch) and the security connection (a turn per call), first come first served: tokio's mutex
/// is fair. Without it they would meet only in SQLite's busy handler, which polls with growing
/// sleeps, and under a steady stream of batches a security write could wait out its whole busy
/// timeout; with it, a security write waits at most for the batch in progress, and a batch for
/// the security writes queued before it. Other processes on the file still meet the store in
/// the busy handler.
pub(crate) type WriteTurn = Arc<tokio::sync::Mutex<()>>;

/// Prepared statements kept per connection (the store uses about 50 distinct ones, the writer's
/// transfer inserts of several rows among them).
const STATEMENT_CACHE_LEN: usize = 96;

const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(5);

/// The pool of read connections. Reads run on tokio's blocking threads.
#[derive(Debug)]
struct ReadPool {
    connections: Mutex<Vec<Connection>>,
    permits: Semaphore,
    live: writer::SharedLive,
}

impl ReadPool {
    async fn with<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &writer::SharedLive) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit =
            self.permits.acquire().await.map_err(|_| StoreError::new(StoreErrorKind::Closed, "the store is closed"))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = pool
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
                .ok_or_else(|| StoreError::new(StoreErrorKind::Unavailable, "no read connection free"))?;
            let result = f(&conn, &pool.live);
            pool.connections.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::with_source(StoreErrorKind::Unavailable, "a read task failed", e))?
    }
}

/// Most account numbers remembered by [`SqliteStore::account_by_number`].
const NUMBERS_CACHED_MAX: usize = 1 << 20;

/// The SQLite [`Store`] and [`SecurityStore`](bp_core::security::SecurityStore). Cloning shares
/// the same writer, pool and security connection.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    jobs: mpsc::Sender<writer::Job>,
    reads: Arc<ReadPool>,
    /// Writes the security records, one transaction at a time, beside the ledger writer.
    security: Arc<Mutex<Connection>>,
    /// Writes ordinary refresh-token rotations only, at `synchronous=NORMAL` (see
    /// [`security`](self::security)): durable at the next fsync of the WAL by any connection.
    rotations: Arc<Mutex<Connection>>,
    /// Shared with the writer.
    write_turn: WriteTurn,
    /// Account number → id: numbers never change, so a lookup is remembered.
    numbers: Arc<RwLock<HashMap<AccountNumber, AccountId>>>,
    path: PathBuf,
    stats: Arc<WriterStats>,
    threads: Arc<Threads>,
}

impl SqliteStore {
    /// Opens (creating if needed) the ledger in the file at `path`, migrating its schema, and
    /// checks the ledger's invariants before accepting any command.
    ///
    /// Must be called inside a tokio runtime only if the caller then uses the store from it; the
    /// writer runs on its own thread.
    pub fn open(path: impl AsRef<Path>, config: SqliteConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let rw = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // A newer database is refused before anything is written to it: even switching its
        // journal to WAL would change the file.
        schema::refuse_newer(&Connection::open_with_flags(&path, rw).map_err(sql_err)?)?;
        let mut conn = open_connection(&path, rw, config.cache_size_kib)?;
        schema::migrate(&mut conn)?;
        schema::open_clearing_accounts(&conn, config.clock.now())?;
        // Checkpoints run on their own thread, so that commits never wait for one.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(sql_err)?;

        let ro = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let read_connections = config.read_connections.max(1);
        let connections = (0..read_connections)
            .map(|_| {
                let c = open_connection(&path, ro, config.cache_size_kib / 4)?;
                c.execute_batch("PRAGMA query_only = ON").map_err(sql_err)?;
                Ok(c)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let (jobs, rx) = mpsc::channel(config.queue_len_max.max(1));
        let writer_config = writer::WriterConfig {
            batch_len_max: config.batch_len_max.max(1),
            transfer_cache_len_max: config.transfer_cache_len_max,
        };
        let security = open_connection(&path, rw, 1024)?;
        // Like the ledger writer's, its commits leave checkpoints to the checkpoint thread.
        security.pragma_update(None, "wal_autocheckpoint", 0).map_err(sql_err)?;
        let rotations = open_connection(&path, rw, 256)?;
        rotations.pragma_update(None, "wal_autocheckpoint", 0).map_err(sql_err)?;
        rotations.pragma_update(None, "synchronous", "NORMAL").map_err(sql_err)?;
        let checkpointer = open_connection(&path, rw, 1024)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // From here on, an early return drops `threads`, which stops the checkpoint thread.
        let mut threads =
            Threads { checkpointer: Some(spawn_checkpointer(checkpointer, Arc::clone(&stop))?), stop, writer: None };
        let live: writer::SharedLive = Arc::default();
        let stats = Arc::new(WriterStats::default());
        let write_turn = WriteTurn::default();
        let shared = writer::Shared {
            live: Arc::clone(&live),
            clock: Arc::clone(&config.clock),
            stats: Arc::clone(&stats),
            turn: Arc::clone(&write_turn),
        };
        threads.writer = Some(writer::spawn(conn, rx, writer_config, shared)?);
        let store = Self {
            jobs,
            reads: Arc::new(ReadPool {
                connections: Mutex::new(connections),
                permits: Semaphore::new(read_connections),
                live,
            }),
            security: Arc::new(Mutex::new(security)),
            rotations: Arc::new(Mutex::new(rotations)),
            numbers: Arc::default(),
            write_turn,
            path,
            stats,
            threads: Arc::new(threads),
        };
        {
            let conns = store.reads.connections.lock().unwrap_or_else(PoisonError::into_inner);
            let conn =
                conns.first().ok_or_else(|| StoreError::new(StoreErrorKind::Unavailable, "no read connection"))?;
            reads::check_invariants(conn, &store.reads.live)?;
        }
        Ok(store)
    }

    /// Closes this handle of the store. Closing is optional: dropping every handle stops the
    /// store too, but without waiting for it.
    ///
    /// The last handle to go (by `close` or drop) shuts the store down. If this is that handle,
    /// `close` waits until the writer has answered every command already queued and closed its
    /// connection, and the checkpoint thread has stopped, so that the file can be opened again,
    /// copied or removed at once; otherwise it returns at once. It fails only if one of those
    /// threads panicked.
    pub async fn close(self) -> Result<(), StoreError> {
        let Self { jobs, reads, security, rotations, threads, .. } = self;
        drop(reads);
        drop(security);
        drop(rotations);
        let Some(mut threads) = Arc::into_inner(threads) else { return Ok(()) };
        threads.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (checkpointer, writer) = (threads.checkpointer.take(), threads.writer.take());
        // One connection after the other: the last to close removes the WAL, and SQLite knows
        // it is the last only when no other connection is open, so two closing at once can
        // each see the other and leave the WAL behind. The checkpointer's goes first; then the
        // writer, its queue closed, answers what is queued and closes its own.
        tokio::task::spawn_blocking(move || {
            let checkpointed = checkpointer.is_none_or(|h| h.join().is_ok());
            drop(jobs);
            let written = writer.is_none_or(|h| h.join().is_ok());
            checkpointed && written
        })
        .await
        .ok()
        .filter(|joined| *joined)
        .map(|_| ())
        .ok_or_else(|| StoreError::new(StoreErrorKind::Unavailable, "a thread of the store panicked"))
    }

    /// The writer's cumulative counters.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.stats
    }

    /// The writer's cumulative counters, to read beyond a borrow of the store (a metrics page).
    pub fn writer_stats_shared(&self) -> Arc<WriterStats> {
        Arc::clone(&self.stats)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn live_account(&self, id: AccountId) -> Option<Account> {
        self.reads.live.read().unwrap_or_else(PoisonError::into_inner).accounts.get(&id).map(|l| l.account.clone())
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &writer::SharedLive) -> Result<T, StoreError> + Send + 'static,
    {
        self.reads.with(f).await
    }
}

#[async_trait]
impl ServiceStore for SqliteStore {
    async fn service_record(&self, id: ServiceRecordId) -> Result<Option<ServiceRecord>, StoreError> {
        self.read(move |c, _| reads::service_record(c, id)).await
    }

    async fn due(&self, now: Timestamp, limit: u32) -> Result<Vec<ServiceRecord>, StoreError> {
        self.read(move |c, _| reads::services_due(c, now, limit)).await
    }

    async fn stuck(&self, limit: u32) -> Result<Vec<ServiceRecord>, StoreError> {
        self.read(move |c, _| reads::services_stuck(c, limit)).await
    }

    async fn service_records_of(
        &self,
        customer: CustomerId,
        query: &ServiceQuery,
    ) -> Result<Page<ServiceRecord>, StoreError> {
        let query = query.clone();
        self.read(move |c, _| reads::service_records_of(c, customer, &query)).await
    }
}

fn closed() -> Error {
    Error::Store(StoreError::new(StoreErrorKind::Closed, "the writer has stopped"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn execute(&self, cmd: Command) -> Result<Executed, Error> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(writer::Job { cmd, reply }).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn customer(&self, id: CustomerId) -> Result<Option<Customer>, StoreError> {
        self.read(move |c, _| reads::customer_by_id(c, id)).await
    }

    async fn customer_by_username(&self, username: &Username) -> Result<Option<Customer>, StoreError> {
        let username = username.clone();
        self.read(move |c, _| reads::customer_by_username(c, &username)).await
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        // An account changed since its last checkpoint is published in memory by the writer:
        // answered without a read connection (and a thread hand-off).
        if let Some(account) = self.live_account(id) {
            return Ok(Some(account));
        }
        self.read(move |c, l| reads::account(c, l, id)).await
    }

    async fn account_by_number(&self, number: AccountNumber) -> Result<Option<Account>, StoreError> {
        let known = self.numbers.read().unwrap_or_else(PoisonError::into_inner).get(&number).copied();
        if let Some(id) = known {
            return self.account(id).await;
        }
        let account = self.read(move |c, l| reads::account_by_number(c, l, number)).await?;
        if let Some(a) = &account {
            let mut numbers = self.numbers.write().unwrap_or_else(PoisonError::into_inner);
            if numbers.len() >= NUMBERS_CACHED_MAX {
                numbers.clear();
            }
            numbers.insert(number, a.id);
        }
        Ok(account)
    }

    async fn accounts_of(&self, customer: CustomerId) -> Result<Vec<Account>, StoreError> {
        self.read(move |c, l| reads::accounts_of(c, l, customer)).await
    }

    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        self.read(move |c, _| reads::transfer(c, id)).await
    }

    async fn postings(&self, account: AccountId, query: &HistoryQuery) -> Result<Page<Posting>, StoreError> {
        let query = query.clone();
        self.read(move |c, l| reads::postings(c, l, account, &query)).await
    }

    async fn events_after(&self, account: AccountId, after_seq: u64, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.read(move |c, l| reads::events_after(c, l, account, after_seq, limit)).await
    }

    async fn outbox_after(&self, after: u64, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read(move |c, l| reads::outbox_after(c, l, after, limit)).await
    }

    async fn pending_expired(&self, now: Timestamp, limit: u32) -> Result<Vec<TransferId>, StoreError> {
        self.read(move |c, _| reads::pending_expired(c, now, limit)).await
    }

    async fn pending_of(&self, account: AccountId, limit: u32) -> Result<Vec<Transfer>, StoreError> {
        self.read(move |c, _| reads::pending_of(c, account, limit)).await
    }

    async fn totals(&self) -> Result<Vec<CurrencyTotal>, StoreError> {
        self.read(reads::totals).await
    }

    async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        check_cursor_name(name)?;
        let key = format!("cursor:{name}");
        self.read(move |c, _| {
            let value: Option<i64> = c
                .query_row("SELECT value FROM meta WHERE name = ?1", [&key], |r| r.get(0))
                .optional()
                .map_err(sql_err)?;
            u64::try_from(value.unwrap_or(0)).map_err(|_| StoreError::new(StoreErrorKind::Corrupt, "a negative cursor"))
        })
        .await
    }

    async fn set_cursor(&self, name: &str, position: u64) -> Result<(), StoreError> {
        check_cursor_name(name)?;
        let key = format!("cursor:{name}");
        let value = i64::try_from(position)
            .map_err(|_| StoreError::new(StoreErrorKind::InvalidRequest, "a cursor beyond the outbox"))?;
        // Written like the security records (their connection, at synchronous=FULL): the ledger
        // writer's tables are not touched.
        self.security_write(move |c| {
            c.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                rusqlite::params![key, value],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, now: Timestamp, ms: u32) -> Result<Lease, StoreError> {
        lease::check_request(name, holder, Some(ms))?;
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.security_write(move |c| match lease::decide(lease_row(c, &name)?.as_ref(), &name, &holder, now, ms) {
            LeaseDecision::Granted(granted) => {
                c.execute(
                    "INSERT INTO leases (name, holder, token, expires_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token, \
                     expires_at = excluded.expires_at",
                    rusqlite::params![
                        granted.name,
                        granted.holder,
                        token_to_sql(granted.token)?,
                        micros(granted.expires_at)
                    ],
                )
                .map_err(sql_err)?;
                Ok(granted)
            }
            LeaseDecision::Held(held) => Ok(held),
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str, token: u64, now: Timestamp) -> Result<bool, StoreError> {
        lease::check_request(name, holder, None)?;
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.security_write(move |c| {
            if !lease::releases(lease_row(c, &name)?.as_ref(), &holder, token, now) {
                return Ok(false);
            }
            c.execute("UPDATE leases SET expires_at = ?2 WHERE name = ?1", rusqlite::params![name, micros(now)])
                .map_err(sql_err)?;
            Ok(true)
        })
        .await
    }
}

/// The lease `name` as stored.
fn lease_row(c: &rusqlite::Connection, name: &str) -> Result<Option<Lease>, StoreError> {
    let row = c
        .query_row("SELECT holder, token, expires_at FROM leases WHERE name = ?1", [name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
        .optional()
        .map_err(sql_err)?;
    row.map(|(holder, token, expires_at)| {
        Ok(Lease {
            name: name.to_owned(),
            holder,
            token: u64::try_from(token).map_err(|_| codec::corrupt("lease token"))?,
            expires_at: codec::time(expires_at)?,
        })
    })
    .transpose()
}

fn token_to_sql(token: u64) -> Result<i64, StoreError> {
    i64::try_from(token).map_err(|_| StoreError::new(StoreErrorKind::Corrupt, "a lease token beyond 2^63"))
}

#[cfg(test)]
mod tests {
    //! Real failures of SQLite, each met on a connection of its own, mapped by [`sql_err`].

    use bp_core::StoreErrorKind;
    use rusqlite::{Connection, OpenFlags};

    use super::sql_err;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, n INTEGER NOT NULL CHECK (n > 0))")
            .expect("create");
        conn.execute("INSERT INTO t (id, u, n) VALUES (1, 'a', 1)", []).expect("insert");
        conn
    }

    fn kind_of(result: rusqlite::Result<usize>) -> StoreErrorKind {
        sql_err(result.expect_err("the statement fails")).kind()
    }

    #[test]
    fn a_taken_key_is_a_conflict() {
        let conn = table();
        assert_eq!(kind_of(conn.execute("INSERT INTO t (id, u, n) VALUES (1, 'b', 1)", [])), StoreErrorKind::Conflict);
        assert_eq!(kind_of(conn.execute("INSERT INTO t (id, u, n) VALUES (2, 'a', 1)", [])), StoreErrorKind::Conflict);
    }

    #[test]
    fn another_constraint_is_an_invalid_request() {
        let conn = table();
        let check = conn.execute("INSERT INTO t (id, u, n) VALUES (2, 'b', 0)", []);
        assert_eq!(kind_of(check), StoreErrorKind::InvalidRequest);
        let not_null = conn.execute("INSERT INTO t (id, u, n) VALUES (2, 'b', NULL)", []);
        assert_eq!(kind_of(not_null), StoreErrorKind::InvalidRequest);
    }

    /// `max_page_count` is the database's size limit: reaching it is SQLITE_FULL, as a full disk.
    #[test]
    fn a_full_database_is_storage_full() {
        let conn = table();
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).expect("page_count");
        conn.execute_batch(&format!("PRAGMA max_page_count = {pages}")).expect("limit");
        let blob = conn.execute("INSERT INTO t (id, u, n) VALUES (2, zeroblob(1000000), 1)", []);
        assert_eq!(kind_of(blob), StoreErrorKind::StorageFull);
    }

    #[test]
    fn a_read_only_database_is_read_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ro.db");
        drop(table_at(&path));
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open read-only");
        assert_eq!(kind_of(conn.execute("INSERT INTO t (id, u, n) VALUES (2, 'b', 1)", [])), StoreErrorKind::ReadOnly);
    }

    fn table_at(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).expect("open");
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, n INTEGER NOT NULL CHECK (n > 0))")
            .expect("create");
        conn
    }

    /// Busy and locked databases are "retry later".
    #[test]
    fn a_locked_database_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("locked.db");
        let holder = table_at(&path);
        holder.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
        let other = Connection::open(&path).expect("open");
        other.busy_timeout(std::time::Duration::from_millis(10)).expect("a short busy timeout");
        assert_eq!(
            kind_of(other.execute("INSERT INTO t (id, u, n) VALUES (2, 'b', 1)", [])),
            StoreErrorKind::Unavailable
        );
    }
}
