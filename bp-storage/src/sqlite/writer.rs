//! The single writer thread and its group commit: it drains the queue into one transaction and one
//! fsync, deciding every command in memory with the rules of bp-core before writing its effects,
//! so a rejected command never fails its batch.
//!
//! What a transfer writes in its batch is only appended: one `transfers` row and one journal entry
//! (both sides of the posting), encoded into the batch's journal blocks (`journal.rs`), a row per
//! 64 entries. The per-account index of the journal (`account_journal`) and the
//! account rows' balances are written later, in deferred runs that visit accounts in key order
//! and carry each account's pending events at once, so that the random B-tree writes of the
//! history index are shared by many events. Until an account's events are indexed, its latest
//! state and the positions of those events are published in memory ([`Live`]) for the readers,
//! and recovered from the journal on start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bp_core::account::{Account, AccountOwner};
use bp_core::clock::Clock;
use bp_core::command::{Command, Executed};
use bp_core::customer::Customer;
use bp_core::event::{Event, EventBody};
use bp_core::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use bp_core::invariants::{Books, check};
use bp_core::rules::{Decision, Effects, LedgerView, Write, decide, decide_reusing, keys};
use bp_core::service_record::ServiceRecord;
use bp_core::state::LedgerState;
use bp_core::transfer::Direction;
use bp_core::{Error, StoreError, StoreErrorKind};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::codec::{
    ACCOUNT_COLUMNS, KIND_OPENED, KIND_PENDING, KIND_POSTED, KIND_SERVICE, KIND_STATUS, KIND_VOIDED, RUN_POSITIONS_MAX,
    Side, TRANSFER_COLUMNS, account_from_row, account_kind_to, corrupt, encode_positions, micros, reason_to,
    service_kind_name, service_status_name, state_to, status_from, status_to, system_to, transfer_from_row,
    transfer_kind_to,
};
use super::journal::{self, AccountKeys, BlockWriter, Entry};
use super::{WriteTurn, run_cached, sql_err};

/// The writer's maps, keyed by ids: foldhash, randomly seeded (see the workspace's Cargo.toml).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
type HashSet<T> = std::collections::HashSet<T, foldhash::quality::RandomState>;

/// An account with this many unindexed events is indexed in the batch that reaches it.
const TAIL_LEN_FORCE: usize = 512;
/// The deferred index run of a batch carries at least 1/`TAIL_SHARE_DIVISOR` of all unindexed events.
const TAIL_SHARE_DIVISOR: usize = 512;
/// How often the low-water mark of the journal is moved.
const LOW_WATER_EVERY_BATCHES: u32 = 64;
/// How often the writer itself checkpoints, so that the WAL restarts from its beginning.
const CHECKPOINT_EVERY_BATCHES: u32 = 32;

/// A command waiting for the writer, with where to send its answer.
#[derive(Debug)]
pub(crate) struct Job {
    pub cmd: Command,
    pub reply: oneshot::Sender<Result<Executed, Error>>,
}

/// Tuning of the writer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriterConfig {
    pub batch_len_max: usize,
    pub transfer_cache_len_max: usize,
}

/// An account whose row in the database is behind: its committed state, and the journal positions
/// of its events `indexed_seq + 1 ..= account.last_event_seq`, in order.
#[derive(Clone, Debug)]
pub(crate) struct LiveAccount {
    pub key: i64,
    pub account: Account,
    pub indexed_seq: u64,
    pub tail: Vec<i64>,
}

/// What the writer publishes to readers after each commit. An account missing here has an
/// up-to-date row in the database.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub accounts: HashMap<AccountId, LiveAccount>,
    /// The accounts' ids and currencies by row key, as readers found them: a key never changes
    /// account once committed, and readers see only committed journal blocks. Filled by the
    /// readers (through a read lock of `Live`), never by the writer.
    pub keys: journal::KeyCache,
}

pub(crate) type SharedLive = Arc<RwLock<Live>>;

/// Cumulative counters of the writer, for metrics and for finding what bounds its throughput.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Commands answered (accepted or rejected) in committed transactions.
    pub commands: AtomicU64,
    /// Time deciding commands and writing their rows, in microseconds.
    pub execute_us: AtomicU64,
    /// Time in the deferred index runs, in microseconds.
    pub index_us: AtomicU64,
    /// Time in `COMMIT` (WAL write and fsync), in microseconds.
    pub commit_us: AtomicU64,
    /// Time publishing state to readers and sending answers, in microseconds.
    pub answer_us: AtomicU64,
    /// Batches decided a second time, their new transfers' rows written one by one, because a
    /// row written together met an id already in the database (a retry of a transfer the
    /// writer's cache had forgotten).
    pub retried: AtomicU64,
}

fn add_us(counter: &AtomicU64, since: std::time::Instant) {
    counter.fetch_add(u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Per loaded account: its row key, the checkpoint of its row, and its unindexed events.
#[derive(Clone, Debug)]
struct Meta {
    key: i64,
    indexed_seq: u64,
    tail: Vec<i64>,
}

/// The writer's view of the ledger: the records the rules decide on, their row keys and the
/// deferred index state. It is a cache: the database is the source of truth, and it is rebuilt
/// from it (with the journal) after any failed commit.
struct Cache {
    state: LedgerState,
    meta: HashMap<AccountId, Meta>,
    /// Accounts with a non-empty tail, by row key: the order of the deferred index runs.
    with_tail: BTreeMap<i64, AccountId>,
    tail_rows: usize,
    run_cursor: i64,
    customer_keys: HashMap<CustomerId, i64>,
    next_customer_key: i64,
    next_account_key: i64,
    next_position: i64,
    low_water: i64,
    batches_since_low_water: u32,
    batches_since_checkpoint: u32,
    /// The time stamped on the last batch.
    last_now: bp_core::Timestamp,
}

fn int(v: u64) -> i64 {
    // Counters and serials stay far below 2^63.
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Whether `e` is a transfer row meeting an existing row with the same id (its primary key), and
/// not any other constraint (a CHECK failing is a bug to report as such).
fn is_duplicate_id(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

impl Cache {
    /// Loads the counters and recovers the unindexed tail of the journal.
    fn load(conn: &Connection) -> Result<Self, StoreError> {
        let next = |sql: &str| -> Result<i64, StoreError> {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|max| max + 1).map_err(sql_err)
        };
        let mut state = LedgerState::new();
        let max_serial: i64 = conn
            .query_row(
                "SELECT coalesce(max(serial), 0) FROM accounts WHERE serial < ?1",
                [int(bp_core::account::SYSTEM_SERIAL_BASE)],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        state.raise_next_account_serial(u64::try_from(max_serial).map_err(|_| corrupt("serial"))? + 1);
        let (next_position, last_at) = journal::end(conn)?;
        let last_at = last_at.map(super::codec::time).transpose()?.unwrap_or(chrono::DateTime::UNIX_EPOCH);
        let low_water: i64 = conn
            .query_row("SELECT value FROM meta WHERE name = 'low_water'", [], |r| r.get(0))
            .optional()
            .map_err(sql_err)?
            .unwrap_or(1);
        let mut cache = Self {
            state,
            meta: HashMap::default(),
            with_tail: BTreeMap::new(),
            tail_rows: 0,
            run_cursor: 0,
            customer_keys: HashMap::default(),
            next_customer_key: next("SELECT coalesce(max(key), 0) FROM customers")?,
            next_account_key: next("SELECT coalesce(max(key), 0) FROM accounts")?,
            next_position,
            low_water,
            batches_since_low_water: 0,
            batches_since_checkpoint: 0,
            last_now: last_at,
        };
        cache.recover(conn)?;
        Ok(cache)
    }

    /// Replays the journal from the low-water mark onto the account rows: every event past an
    /// account's checkpoint becomes part of its tail again.
    fn recover(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let mut keys = AccountKeys::new(conn);
        journal::scan(conn, self.low_water, |position, e| {
            let status_changed = match e.kind {
                KIND_STATUS => Some(status_from(e.code.ok_or_else(|| corrupt("journal code"))?)?),
                _ => None,
            };
            for (_, side) in e.sides() {
                let id = keys.get(side.key)?.0;
                if !self.meta.contains_key(&id) {
                    self.load_account(conn, id)?;
                }
                let meta = self.meta.get_mut(&id).ok_or_else(|| corrupt("journal account"))?;
                if side.seq <= meta.indexed_seq {
                    continue;
                }
                let mut account = self.state.account(id).ok_or_else(|| corrupt("journal account"))?.clone();
                if side.seq != account.last_event_seq + 1 {
                    return Err(corrupt("journal sequence (gap)"));
                }
                account.posted_minor = side.posted;
                account.held_minor = side.held;
                account.last_event_seq = side.seq;
                account.version = side.seq;
                if let Some(status) = status_changed {
                    account.status = status;
                }
                if meta.tail.is_empty() {
                    self.with_tail.insert(meta.key, id);
                }
                meta.tail.push(position);
                self.tail_rows += 1;
                self.state.insert_account(account);
            }
            Ok(true)
        })
    }

    fn load_customer_where(
        &mut self,
        conn: &Connection,
        column: &str,
        value: &dyn rusqlite::ToSql,
    ) -> Result<(), StoreError> {
        let sql = format!("SELECT key, doc FROM customers WHERE {column} = ?1");
        let row: Option<(i64, String)> = conn
            .prepare_cached(&sql)
            .and_then(|mut s| s.query_row([value], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(sql_err)?;
        if let Some((key, doc)) = row {
            let customer: Customer = serde_json::from_str(&doc).map_err(|_| corrupt("customer"))?;
            self.customer_keys.insert(customer.id, key);
            self.state.insert_customer(customer);
        }
        Ok(())
    }

    /// Loads an account row. Only for accounts not loaded yet: a loaded account's row may be
    /// behind its state.
    fn load_account(&mut self, conn: &Connection, id: AccountId) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a LEFT JOIN customers c ON c.key = a.customer_key WHERE a.id = ?1"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
        let mut rows = stmt.query([id.as_uuid().as_bytes()]).map_err(sql_err)?;
        if let Some(row) = rows.next().map_err(sql_err)? {
            let (key, account) = account_from_row(row)?;
            self.meta.insert(account.id, Meta { key, indexed_seq: account.last_event_seq, tail: Vec::new() });
            self.state.insert_account(account);
        }
        Ok(())
    }

    fn load_transfer(&mut self, conn: &Connection, id: TransferId) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers t JOIN accounts d ON d.key = t.debit_key \
             JOIN accounts c ON c.key = t.credit_key WHERE t.id = ?1"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
        let mut rows = stmt.query([id.as_uuid().as_bytes()]).map_err(sql_err)?;
        if let Some(row) = rows.next().map_err(sql_err)? {
            let transfer = transfer_from_row(row)?;
            self.state.insert_transfer(transfer);
        }
        Ok(())
    }

    /// Loads from the database whatever `cmd` needs and the cache lacks. A new transfer's own id
    /// is not looked up: its insert meets the unique index instead (see `execute_one`).
    fn prefetch(&mut self, conn: &Connection, cmd: &Command) -> Result<(), StoreError> {
        let own_transfer = match cmd {
            Command::Transfer(t) => Some(t.id),
            _ => None,
        };
        // Two rounds: the second sees the accounts of a transfer the first loaded.
        for _ in 0..2 {
            let k = keys(cmd, &self.state);
            for id in k.customers {
                if !self.state.has_customer(id) {
                    self.load_customer_where(conn, "id", &id.as_uuid().as_bytes().as_slice())?;
                }
            }
            for username in &k.usernames {
                if !self.state.has_username(username) {
                    self.load_customer_where(conn, "username", &username.as_str())?;
                }
            }
            for id in k.accounts {
                if !self.meta.contains_key(&id) {
                    self.load_account(conn, id)?;
                }
            }
            for id in k.transfers {
                if Some(id) != own_transfer && !self.state.has_transfer(id) {
                    self.load_transfer(conn, id)?;
                }
            }
            for id in k.services {
                if !self.state.has_service(id) {
                    self.load_service(conn, id)?;
                }
            }
            if !matches!(cmd, Command::PostPending { .. } | Command::VoidPending { .. } | Command::ApplyService { .. })
            {
                break;
            }
        }
        Ok(())
    }

    fn load_service(&mut self, conn: &Connection, id: ServiceRecordId) -> Result<(), StoreError> {
        if let Some(record) = super::reads::service_record(conn, id)? {
            self.state.insert_service(record);
        }
        Ok(())
    }

    fn key_of(&self, id: AccountId) -> Result<i64, StoreError> {
        self.meta.get(&id).map(|m| m.key).ok_or_else(|| corrupt("account key"))
    }
}

/// Why a command's writes stopped.
enum WriteError {
    /// The command's transfer id is already in the database (the cache had forgotten it).
    DuplicateTransfer,
    /// The batch's attempt must stop.
    Batch(BatchError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Batch(BatchError::Store(e))
    }
}

/// Why an attempt at a batch stopped: it is rolled back.
enum BatchError {
    /// A transfer id among rows written together ([`Rows::Together`]) is already in the
    /// database: the cache had forgotten it, and which command it belongs to is unknown. The
    /// batch is decided again with [`Rows::OneByOne`].
    DuplicateRows,
    Store(StoreError),
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        BatchError::Store(e)
    }
}

/// How a batch writes its new transfers' rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rows {
    /// Kept, and written several to a statement (chunks of [`ROW_CHUNKS`]) before the batch's
    /// last journal block: per row, SQLite then runs only the row's own part of an INSERT.
    /// Every new transfer is in the cache from its command on (the cache forgets transfers only
    /// between batches), so nothing in the batch looks for a kept row in the table; a transfer
    /// row to update is written out first all the same.
    Together,
    /// Each with its command, first of its writes: an id already in the database is then that
    /// command's replay or conflict. For a batch whose rows met an id already there.
    OneByOne,
}

/// The statement sizes (rows per INSERT) a batch's new transfers are written with, largest first.
const ROW_CHUNKS: [usize; 4] = [64, 16, 4, 1];
const TRANSFER_ROW_VALUES: usize = 11;

/// `INSERT INTO transfers` of `rows` rows, each `TRANSFER_ROW_VALUES` parameters.
fn insert_transfers_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO transfers (id, kind, debit_key, credit_key, amount_minor, reference, state, hold_until, \
         void_reason, created_at, finished_at) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?)");
    }
    sql
}

static INSERT_TRANSFERS: std::sync::LazyLock<[String; ROW_CHUNKS.len()]> =
    std::sync::LazyLock::new(|| ROW_CHUNKS.map(insert_transfers_sql));

/// A new transfer's row, as bound.
struct TransferRow {
    id: [u8; 16],
    kind: i64,
    debit_key: i64,
    credit_key: i64,
    amount_minor: i64,
    reference: Option<String>,
    state: i64,
    hold_until: Option<i64>,
    void_reason: Option<i64>,
    created_at: i64,
    finished_at: Option<i64>,
}

/// Writes `rows` with as few statements as `ROW_CHUNKS` allow.
fn insert_transfers(conn: &Connection, mut rows: &[TransferRow]) -> Result<(), WriteError> {
    for (chunk, text) in ROW_CHUNKS.iter().zip(INSERT_TRANSFERS.iter()) {
        while rows.len() >= *chunk {
            let (these, rest) = rows.split_at(*chunk);
            let mut stmt = conn.prepare_cached(text).map_err(sql)?;
            for (i, row) in these.iter().enumerate() {
                bind_transfer_row(&mut stmt, i * TRANSFER_ROW_VALUES, row).map_err(sql)?;
            }
            match stmt.raw_execute() {
                Ok(_) => {}
                Err(e) if is_duplicate_id(&e) => return Err(WriteError::DuplicateTransfer),
                Err(e) => return Err(sql(e)),
            }
            rows = rest;
        }
    }
    Ok(())
}

fn bind_transfer_row(stmt: &mut rusqlite::Statement<'_>, at: usize, row: &TransferRow) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(at + 1, &row.id[..])?;
    stmt.raw_bind_parameter(at + 2, row.kind)?;
    stmt.raw_bind_parameter(at + 3, row.debit_key)?;
    stmt.raw_bind_parameter(at + 4, row.credit_key)?;
    stmt.raw_bind_parameter(at + 5, row.amount_minor)?;
    stmt.raw_bind_parameter(at + 6, row.reference.as_deref())?;
    stmt.raw_bind_parameter(at + 7, row.state)?;
    stmt.raw_bind_parameter(at + 8, row.hold_until)?;
    stmt.raw_bind_parameter(at + 9, row.void_reason)?;
    stmt.raw_bind_parameter(at + 10, row.created_at)?;
    stmt.raw_bind_parameter(at + 11, row.finished_at)
}

fn sql(e: rusqlite::Error) -> WriteError {
    WriteError::from(sql_err(e))
}

/// What the current batch changed, for the deferred index run and for publishing, and what it
/// has yet to write.
struct BatchState {
    touched: HashSet<AccountId>,
    rows: Rows,
    /// New transfers' rows not yet written ([`Rows::Together`]).
    kept_rows: Vec<TransferRow>,
    /// The batch's journal entries, written in blocks (the last one before the commit).
    block: BlockWriter,
    /// The last written command's effects, whose lists the next transfer's fill again.
    spare: Effects,
}

impl BatchState {
    fn new(first_position: i64, rows: Rows) -> Self {
        let mut block = BlockWriter::default();
        block.start(first_position);
        Self { touched: HashSet::default(), rows, kept_rows: Vec::new(), block, spare: Effects::default() }
    }

    /// Writes the kept rows. An id already in the database stops the attempt.
    fn write_rows(&mut self, conn: &Connection) -> Result<(), BatchError> {
        let written = insert_transfers(conn, &self.kept_rows);
        self.kept_rows.clear();
        match written {
            Ok(()) => Ok(()),
            Err(WriteError::DuplicateTransfer) => Err(BatchError::DuplicateRows),
            Err(WriteError::Batch(e)) => Err(e),
        }
    }
}

/// The row keys a command's new accounts take, in the order of its effects.
struct NewKeys(Vec<(AccountId, i64)>);

impl NewKeys {
    fn of(cache: &Cache, effects: &Effects) -> Self {
        let inserted = effects.accounts.iter().filter(|(write, _)| *write == Write::Insert);
        Self(inserted.zip(cache.next_account_key..).map(|((_, a), key)| (a.id, key)).collect())
    }

    /// The key of a new account.
    fn get(&self, id: AccountId) -> Option<i64> {
        self.0.iter().find(|(n, _)| *n == id).map(|(_, k)| *k)
    }

    /// The key of any account the command names: new, or loaded in the cache.
    fn key(&self, cache: &Cache, id: AccountId) -> Result<i64, StoreError> {
        self.get(id).map_or_else(|| cache.key_of(id), Ok)
    }
}

/// Writes one command's effects inside the open transaction, then applies them to the cache.
fn write_effects(
    conn: &Connection,
    cache: &mut Cache,
    effects: &Effects,
    batch: &mut BatchState,
) -> Result<(), WriteError> {
    // Debits equal credits: assert it where the data is written.
    let net: i128 = effects.postings.iter().map(|p| i128::from(p.signed_minor())).sum();
    assert_eq!(net, 0, "a command's postings must balance");

    // Keys for new accounts first, so that a transfer row can refer to them.
    let new_keys = NewKeys::of(cache, effects);

    // One by one, the transfer row goes first: if its id exists already, nothing else has been
    // written.
    for (write, t) in &effects.transfers {
        let id = t.id.as_uuid().as_bytes();
        match write {
            Write::Insert => {
                let row = TransferRow {
                    id: *id,
                    kind: transfer_kind_to(t.kind),
                    debit_key: new_keys.key(cache, t.debit_account)?,
                    credit_key: new_keys.key(cache, t.credit_account)?,
                    amount_minor: t.amount.amount_minor(),
                    reference: t.reference.clone(),
                    state: state_to(t.state),
                    hold_until: t.hold_until.map(micros),
                    void_reason: t.void_reason.map(reason_to),
                    created_at: micros(t.created_at),
                    finished_at: t.finished_at.map(micros),
                };
                match batch.rows {
                    Rows::OneByOne => insert_transfers(conn, std::slice::from_ref(&row))?,
                    Rows::Together => {
                        batch.kept_rows.push(row);
                        if batch.kept_rows.len() == ROW_CHUNKS[0] {
                            batch.write_rows(conn).map_err(WriteError::Batch)?;
                        }
                    }
                }
            }
            Write::Update => {
                // The row may be one of those kept.
                batch.write_rows(conn).map_err(WriteError::Batch)?;
                // `hold_until` changes when a service request adopts a hold placed during SCA.
                conn.prepare_cached(
                    "UPDATE transfers SET state = ?2, void_reason = ?3, finished_at = ?4, hold_until = ?5 \
                     WHERE id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id,
                        state_to(t.state),
                        t.void_reason.map(reason_to),
                        t.finished_at.map(micros),
                        t.hold_until.map(micros)
                    ])
                })
                .map_err(sql)?;
            }
        }
    }

    for (write, customer) in &effects.customers {
        let doc = serde_json::to_string(customer)
            .map_err(|e| StoreError::with_source(StoreErrorKind::Corrupt, "cannot encode customer", e))?;
        match write {
            Write::Insert => {
                let key = cache.next_customer_key;
                conn.prepare_cached("INSERT INTO customers (key, id, username, doc) VALUES (?1, ?2, ?3, ?4)")
                    .and_then(|mut s| {
                        s.execute(params![key, customer.id.as_uuid().as_bytes(), customer.username.as_str(), doc])
                    })
                    .map_err(sql)?;
                cache.next_customer_key += 1;
                cache.customer_keys.insert(customer.id, key);
            }
            Write::Update => {
                let key = cache.customer_keys.get(&customer.id).copied().ok_or_else(|| corrupt("customer key"))?;
                conn.prepare_cached("UPDATE customers SET doc = ?2 WHERE key = ?1")
                    .and_then(|mut s| s.execute(params![key, doc]))
                    .map_err(sql)?;
            }
        }
    }

    for (write, record) in &effects.services {
        write_service(conn, *write, record)?;
    }

    // New accounts: the row holds their state after this command and all their events so far
    // are indexed at once.
    for (write, a) in &effects.accounts {
        if *write == Write::Insert {
            insert_account(conn, cache, a, new_keys.get(a.id).ok_or_else(|| corrupt("new account key"))?)?;
        }
    }
    cache.next_account_key += i64::try_from(new_keys.0.len()).unwrap_or(0);

    append_events(conn, cache, effects, batch, &new_keys)?;
    for (write, a) in &effects.accounts {
        if *write == Write::Insert {
            let key = new_keys.get(a.id).ok_or_else(|| corrupt("new account key"))?;
            cache.meta.insert(a.id, Meta { key, indexed_seq: a.last_event_seq, tail: Vec::new() });
        }
        batch.touched.insert(a.id);
    }
    // Assertions catch our bugs: in debug builds every command of the batch is checked against
    // the invariants of the accounts it touches (balances moved by exactly its postings, events
    // numbered on from the cached state, holds within bounds) before the cache takes it.
    debug_assert_eq!(check(&Books::of_effects(&cache.state, effects)), Ok(()), "a command's effects");
    cache.state.apply(effects);
    Ok(())
}

/// Appends a command's events to the batch's journal block, and their positions to the tails of
/// the accounts they concern; the events of accounts the command opens are indexed at once.
fn append_events(
    conn: &Connection,
    cache: &mut Cache,
    effects: &Effects,
    batch: &mut BatchState,
    new_keys: &NewKeys,
) -> Result<(), WriteError> {
    // Events of accounts opened by this command: (key, positions from seq 1).
    let mut opened: Vec<(i64, Vec<i64>)> = Vec::new();
    // Each account's balances after the command's events so far: a few accounts at most.
    let mut running: Vec<(AccountId, (i64, i64))> = Vec::new();
    for row in journal_rows(&effects.events) {
        let entry = journal_entry(cache, &row, new_keys, &mut running)?;
        let position = batch.block.push(conn, &entry)?;
        cache.next_position = position + 1;
        for event in row.sides() {
            let key = new_keys.key(cache, event.account_id)?;
            if new_keys.get(event.account_id).is_some() {
                match opened.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, positions)) => positions.push(position),
                    None => opened.push((key, vec![position])),
                }
            } else {
                let meta = cache.meta.get_mut(&event.account_id).ok_or_else(|| corrupt("account meta"))?;
                if meta.tail.is_empty() {
                    cache.with_tail.insert(key, event.account_id);
                }
                meta.tail.push(position);
                cache.tail_rows += 1;
            }
        }
    }
    for (key, positions) in &opened {
        insert_index_rows(conn, *key, 0, positions)?;
    }
    Ok(())
}

/// One journal row: one event, or the two events (debit, credit) of a posting.
enum JournalEvents<'a> {
    One(&'a Event),
    Posting(&'a Event, &'a Event),
}

impl<'a> JournalEvents<'a> {
    fn sides(&self) -> impl Iterator<Item = &'a Event> {
        match *self {
            JournalEvents::One(e) => [Some(e), None],
            JournalEvents::Posting(d, c) => [Some(d), Some(c)],
        }
        .into_iter()
        .flatten()
    }
}

/// Pairs each `transfer.posted` debit event with the credit event that follows it.
fn journal_rows(events: &[Event]) -> impl Iterator<Item = JournalEvents<'_>> {
    let mut i = 0;
    std::iter::from_fn(move || {
        let e = events.get(i)?;
        let pair = match (&e.body, events.get(i + 1).map(|n| &n.body)) {
            (
                EventBody::TransferPosted { transfer_id: a, direction: Direction::Debit, .. },
                Some(EventBody::TransferPosted { transfer_id: b, direction: Direction::Credit, .. }),
            ) => a == b,
            _ => false,
        };
        if pair {
            i += 2;
            Some(JournalEvents::Posting(e, &events[i - 1]))
        } else {
            assert!(
                !matches!(e.body, EventBody::TransferPosted { .. }),
                "a transfer.posted event always comes as a debit-credit pair"
            );
            i += 1;
            Some(JournalEvents::One(e))
        }
    })
}

/// Writes a service record's row (the whole record as a JSON document, the queried columns
/// typed).
fn write_service(conn: &Connection, write: Write, r: &ServiceRecord) -> Result<(), WriteError> {
    let doc = serde_json::to_string(r)
        .map_err(|e| StoreError::with_source(StoreErrorKind::Corrupt, "cannot encode a service record", e))?;
    let values = params![
        r.id.as_uuid().as_bytes(),
        r.customer_id.as_uuid().as_bytes(),
        service_kind_name(r.kind)?,
        service_status_name(r.status)?,
        micros(r.created_at),
        r.next_check_at.map(micros),
        r.stuck_since.map(micros),
        doc,
    ];
    let statement = match write {
        Write::Insert => {
            "INSERT INTO service_records (id, customer_id, kind, status, created_at, next_check_at, stuck_since, doc) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        }
        Write::Update => {
            "UPDATE service_records SET customer_id = ?2, kind = ?3, status = ?4, created_at = ?5, \
             next_check_at = ?6, stuck_since = ?7, doc = ?8 WHERE id = ?1"
        }
    };
    let changed = conn.prepare_cached(statement).and_then(|mut s| s.execute(values)).map_err(sql)?;
    if changed != 1 {
        return Err(corrupt("service record row").into());
    }
    Ok(())
}

/// The journal entry of one row of events.
fn journal_entry(
    cache: &Cache,
    row: &JournalEvents<'_>,
    new_keys: &NewKeys,
    running: &mut Vec<(AccountId, (i64, i64))>,
) -> Result<Entry, WriteError> {
    let a = match row {
        JournalEvents::One(e) | JournalEvents::Posting(e, _) => *e,
    };
    let mut counterparty_key = None;
    let (kind, transfer, transfer_kind, amount, code) = match &a.body {
        EventBody::AccountOpened { .. } => (KIND_OPENED, None, None, None, None),
        EventBody::AccountStatusChanged { status } => (KIND_STATUS, None, None, None, Some(status_to(*status))),
        EventBody::TransferPosted { transfer_id, kind, amount, .. } => {
            (KIND_POSTED, Some(*transfer_id), Some(transfer_kind_to(*kind)), Some(amount.amount_minor()), None)
        }
        EventBody::TransferPending { transfer_id, kind, amount, counterparty, .. } => {
            counterparty_key = Some(new_keys.key(cache, *counterparty)?);
            (KIND_PENDING, Some(*transfer_id), Some(transfer_kind_to(*kind)), Some(amount.amount_minor()), None)
        }
        EventBody::TransferVoided { transfer_id, reason, amount, .. } => {
            (KIND_VOIDED, Some(*transfer_id), None, Some(amount.amount_minor()), Some(reason_to(*reason)))
        }
        EventBody::ServiceUpdated { .. } => (KIND_SERVICE, None, None, None, None),
    };
    let doc = match &a.body {
        EventBody::ServiceUpdated { .. } => Some(
            serde_json::to_string(&a.body)
                .map_err(|e| StoreError::with_source(StoreErrorKind::Corrupt, "cannot encode an event", e))?,
        ),
        _ => None,
    };
    let mut balances = |e: &Event| -> Result<(i64, i64), StoreError> {
        let balances = match &e.body {
            EventBody::AccountOpened { balances }
            | EventBody::TransferPosted { balances, .. }
            | EventBody::TransferPending { balances, .. }
            | EventBody::TransferVoided { balances, .. } => {
                (balances.posted.amount_minor(), balances.held.amount_minor())
            }
            // A status change or a service event leaves the balances as the account has them
            // after this command's earlier events (a service request's hold comes first).
            EventBody::AccountStatusChanged { .. } | EventBody::ServiceUpdated { .. } => {
                match running.iter().find(|(id, _)| *id == e.account_id) {
                    Some((_, b)) => *b,
                    None => {
                        let acc = cache.state.account(e.account_id).ok_or_else(|| corrupt("event account"))?;
                        (acc.posted_minor, acc.held_minor)
                    }
                }
            }
        };
        match running.iter_mut().find(|(id, _)| *id == e.account_id) {
            Some((_, b)) => *b = balances,
            None => running.push((e.account_id, balances)),
        }
        Ok(balances)
    };
    let (a_posted, a_held) = balances(a)?;
    let b = match row {
        JournalEvents::Posting(_, c) => Some(*c),
        JournalEvents::One(_) => None,
    };
    let b = match b {
        Some(c) => {
            let (posted, held) = balances(c)?;
            Some(Side { key: new_keys.key(cache, c.account_id)?, seq: c.seq, posted, held })
        }
        None => None,
    };
    Ok(Entry {
        kind,
        at: micros(a.at),
        transfer_id: transfer.map(|t| *t.as_uuid().as_bytes()),
        transfer_kind,
        amount_minor: amount,
        code,
        a: Side { key: new_keys.key(cache, a.account_id)?, seq: a.seq, posted: a_posted, held: a_held },
        b,
        counterparty_key,
        doc,
    })
}

fn insert_account(conn: &Connection, cache: &Cache, a: &Account, key: i64) -> Result<(), WriteError> {
    let (customer_key, system_kind) = match a.owner {
        AccountOwner::Customer { customer_id } => {
            (Some(cache.customer_keys.get(&customer_id).copied().ok_or_else(|| corrupt("customer key"))?), None)
        }
        AccountOwner::Bank { system } => (None, Some(system_to(system))),
    };
    conn.prepare_cached(
        "INSERT INTO accounts (key, id, serial, customer_key, system_kind, kind, currency, status, posted_minor, \
         held_minor, overdraft_limit_minor, last_event_seq, opened_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key,
            a.id.as_uuid().as_bytes(),
            int(a.number.serial()),
            customer_key,
            system_kind,
            account_kind_to(a.kind),
            a.currency.code(),
            status_to(a.status),
            a.posted_minor,
            a.held_minor,
            a.overdraft_limit_minor,
            int(a.last_event_seq),
            micros(a.opened_at),
        ])
    })
    .map_err(sql)?;
    Ok(())
}

/// Indexes the events `after_seq + 1 ..` of an account at `positions`, in rows of at most
/// [`RUN_POSITIONS_MAX`].
fn insert_index_rows(conn: &Connection, key: i64, after_seq: u64, positions: &[i64]) -> Result<(), StoreError> {
    let mut insert = conn
        .prepare_cached("INSERT INTO account_journal (account_key, first_seq, len, positions) VALUES (?1, ?2, ?3, ?4)")
        .map_err(sql_err)?;
    let mut first_seq = after_seq + 1;
    for chunk in positions.chunks(RUN_POSITIONS_MAX) {
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        insert.execute(params![key, int(first_seq), int(len), encode_positions(chunk)]).map_err(sql_err)?;
        first_seq += len;
    }
    Ok(())
}

/// The deferred index run of a batch: picks accounts (those whose tail is long, then the next
/// ones in key order), writes their tails into `account_journal` and their state into their
/// rows, in key order. Returns the accounts it checkpointed.
fn index_run(conn: &Connection, cache: &mut Cache, batch: &BatchState) -> Result<Vec<AccountId>, StoreError> {
    let budget = cache.tail_rows / TAIL_SHARE_DIVISOR;
    let mut chosen: BTreeMap<i64, AccountId> = BTreeMap::new();
    let mut rows = 0usize;
    for id in &batch.touched {
        if let Some(m) = cache.meta.get(id)
            && m.tail.len() >= TAIL_LEN_FORCE
        {
            chosen.insert(m.key, *id);
            rows += m.tail.len();
        }
    }
    if rows < budget {
        let after = cache.with_tail.range(cache.run_cursor..).chain(cache.with_tail.range(..cache.run_cursor));
        for (key, id) in after {
            if rows >= budget {
                break;
            }
            if chosen.insert(*key, *id).is_none() {
                rows += cache.meta.get(id).map_or(0, |m| m.tail.len());
            }
            cache.run_cursor = key + 1;
        }
    }
    let mut update = conn
        .prepare_cached(
            "UPDATE accounts SET status = ?2, posted_minor = ?3, held_minor = ?4, last_event_seq = ?5 WHERE key = ?1",
        )
        .map_err(sql_err)?;
    let mut done = Vec::with_capacity(chosen.len());
    for (key, id) in chosen {
        let account = cache.state.account(id).ok_or_else(|| corrupt("account"))?;
        let meta = cache.meta.get_mut(&id).ok_or_else(|| corrupt("account meta"))?;
        assert_eq!(
            meta.indexed_seq + u64::try_from(meta.tail.len()).unwrap_or(u64::MAX),
            account.last_event_seq,
            "an account's tail holds exactly its events past the checkpoint"
        );
        insert_index_rows(conn, key, meta.indexed_seq, &meta.tail)?;
        update
            .execute(params![
                key,
                status_to(account.status),
                account.posted_minor,
                account.held_minor,
                int(account.last_event_seq)
            ])
            .map_err(sql_err)?;
        cache.tail_rows -= meta.tail.len();
        meta.tail.clear();
        meta.indexed_seq = account.last_event_seq;
        cache.with_tail.remove(&key);
        done.push(id);
    }
    // The journal before the oldest unindexed event is never read again on start. Finding it
    // walks every tail, so it is done every few batches only: a low-water mark that lags is
    // still correct, recovery just reads a little more.
    cache.batches_since_low_water += 1;
    if cache.batches_since_low_water < LOW_WATER_EVERY_BATCHES {
        return Ok(done);
    }
    cache.batches_since_low_water = 0;
    let low_water = cache
        .with_tail
        .values()
        .filter_map(|id| cache.meta.get(id).and_then(|m| m.tail.first().copied()))
        .min()
        .unwrap_or(cache.next_position);
    if low_water != cache.low_water {
        conn.prepare_cached(
            "INSERT INTO meta (name, value) VALUES ('low_water', ?1) ON CONFLICT (name) DO UPDATE SET value = ?1",
        )
        .and_then(|mut s| s.execute([low_water]))
        .map_err(sql_err)?;
        cache.low_water = low_water;
    }
    Ok(done)
}

/// Publishes the committed state of the accounts the batch touched or checkpointed.
fn publish(live: &SharedLive, cache: &Cache, batch: &BatchState, checkpointed: &[AccountId]) {
    let mut live = live.write().unwrap_or_else(PoisonError::into_inner);
    for id in batch.touched.iter().chain(checkpointed) {
        let (Some(meta), Some(account)) = (cache.meta.get(id), cache.state.account(*id)) else { continue };
        if meta.tail.is_empty() {
            live.accounts.remove(id);
            continue;
        }
        match live.accounts.get_mut(id) {
            // Same checkpoint: the published tail is a prefix of the writer's; copy what is new.
            Some(published) if published.indexed_seq == meta.indexed_seq && published.tail.len() <= meta.tail.len() => {
                published.account.clone_from(account);
                let have = published.tail.len();
                published.tail.extend_from_slice(&meta.tail[have..]);
            }
            _ => {
                let fresh = LiveAccount {
                    key: meta.key,
                    account: account.clone(),
                    indexed_seq: meta.indexed_seq,
                    tail: meta.tail.clone(),
                };
                live.accounts.insert(*id, fresh);
            }
        }
    }
}

/// Replaces the published state with the cache's (after loading or recovering).
fn publish_all(live: &SharedLive, cache: &Cache) {
    let mut fresh = HashMap::default();
    for id in cache.with_tail.values() {
        if let (Some(meta), Some(account)) = (cache.meta.get(id), cache.state.account(*id)) {
            fresh.insert(
                *id,
                LiveAccount {
                    key: meta.key,
                    account: account.clone(),
                    indexed_seq: meta.indexed_seq,
                    tail: meta.tail.clone(),
                },
            );
        }
    }
    live.write().unwrap_or_else(PoisonError::into_inner).accounts = fresh;
}

/// What the writer thread shares with the rest of the store.
pub(crate) struct Shared {
    pub live: SharedLive,
    pub clock: Arc<dyn Clock>,
    pub stats: Arc<WriterStats>,
    /// Taken for each batch's transaction.
    pub turn: WriteTurn,
}

/// Loads the writer's state from the database (recovering the journal's unindexed tail),
/// publishes it for the readers, and starts the writer thread.
pub(crate) fn spawn(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    config: WriterConfig,
    shared: Shared,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let cache = Cache::load(&conn)?;
    publish_all(&shared.live, &cache);
    std::thread::Builder::new()
        .name("bp-sqlite-writer".into())
        .spawn(move || run(conn, rx, cache, config, shared))
        .map_err(|e| StoreError::with_source(StoreErrorKind::Unavailable, "cannot start the writer thread", e))
}

/// Runs the writer until every sender is dropped.
fn run(conn: Connection, mut rx: mpsc::Receiver<Job>, initial: Cache, config: WriterConfig, shared: Shared) {
    let Shared { live, clock, stats, turn } = shared;
    let mut cache = Some(initial);
    let mut batch: Vec<Job> = Vec::with_capacity(config.batch_len_max);
    // Waking the submitters costs a system call or two each: a thread of its own does it, so the
    // writer goes on to the next batch at once. It gets each committed batch's answers in order.
    let (answers_tx, answers_rx) = std::sync::mpsc::channel::<Answers>();
    let answerer = std::thread::Builder::new()
        .name("bp-sqlite-answer".into())
        .spawn(move || answers_rx.into_iter().for_each(send_answers))
        .ok();
    // Without that thread, the writer answers by itself.
    let answers_tx = answerer.is_some().then_some(answers_tx);
    let ctx = Context {
        live: &live,
        clock: clock.as_ref(),
        config,
        stats: &stats,
        turn: &turn,
        answerer: answers_tx.as_ref(),
    };
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < config.batch_len_max {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let loaded = match cache.take() {
            Some(c) => Ok(c),
            None => Cache::load(&conn).inspect(|c| publish_all(&live, c)),
        };
        cache = match loaded {
            Ok(c) => commit_batch(&conn, c, &mut batch, &ctx),
            Err(e) => {
                fail_all(&mut batch, &e);
                None
            }
        };
    }
    // Dropping the sender ends the answer thread once it has sent every answer; `close` waits
    // for this thread, so it waits for those answers too.
    drop(answers_tx);
    if let Some(handle) = answerer {
        let _ = handle.join();
    }
}

fn send_answers(answers: Answers) {
    for (reply, answer) in answers {
        // The caller may have given up waiting; nothing to do then.
        let _ = reply.send(answer);
    }
}

/// The answers of one committed batch, in order.
type Answers = Vec<(oneshot::Sender<Result<Executed, Error>>, Result<Executed, Error>)>;

fn fail_all(batch: &mut Vec<Job>, e: &StoreError) {
    for job in batch.drain(..) {
        let err = StoreError::new(e.kind(), format!("the batch was not committed: {e}"));
        // The caller may have given up waiting; nothing to do then.
        let _ = job.reply.send(Err(Error::Store(err)));
    }
}

/// Decides and writes one command. A rejected command writes nothing.
fn execute_one(
    conn: &Connection,
    cache: &mut Cache,
    cmd: &Command,
    now: bp_core::Timestamp,
    batch: &mut BatchState,
) -> Result<Result<Executed, Error>, BatchError> {
    cache.prefetch(conn, cmd)?;
    let decision: Decision = match decide_reusing(&cache.state, cmd, now, std::mem::take(&mut batch.spare)) {
        Ok(d) => d,
        // The rules answer a known transfer id before checking anything else, but the cache may
        // have forgotten the transfer: a retry the rules would now reject (a frozen payer, a
        // changed request) must still replay or conflict. Rejections are rare, so the id is
        // looked up only then.
        Err(rejected) => {
            if let Command::Transfer(t) = cmd
                && !cache.state.has_transfer(t.id)
            {
                cache.load_transfer(conn, t.id)?;
                if cache.state.has_transfer(t.id) {
                    return Ok(decide_known_transfer(cache, cmd, now)?);
                }
            }
            return Ok(Err(Error::Ledger(rejected)));
        }
    };
    let written = write_effects(conn, cache, &decision.effects, batch);
    batch.spare = decision.effects;
    match written {
        Ok(()) => Ok(Ok(decision.executed)),
        Err(WriteError::DuplicateTransfer) => {
            // The id is in the database but was not in the cache: decide again knowing it, which
            // replays the original or reports the conflict, and writes nothing.
            if let Command::Transfer(t) = cmd {
                cache.load_transfer(conn, t.id)?;
            }
            Ok(decide_known_transfer(cache, cmd, now)?)
        }
        Err(WriteError::Batch(e)) => Err(e),
    }
}

/// Decides a transfer request whose id the cache has just read back from the database: a replay
/// or a conflict, which writes nothing.
fn decide_known_transfer(
    cache: &Cache,
    cmd: &Command,
    now: bp_core::Timestamp,
) -> Result<Result<Executed, Error>, StoreError> {
    match decide(&cache.state, cmd, now) {
        Ok(d) if d.effects.is_empty() => Ok(Ok(d.executed)),
        Ok(_) => Err(corrupt("transfer id (unique index and cache disagree)")),
        Err(rejected) => Ok(Err(Error::Ledger(rejected))),
    }
}

/// What a batch is committed with, besides the connection and the cache.
#[derive(Clone, Copy)]
struct Context<'a> {
    live: &'a SharedLive,
    clock: &'a dyn Clock,
    config: WriterConfig,
    stats: &'a WriterStats,
    turn: &'a WriteTurn,
    /// The thread that sends the answers, if it could be started.
    answerer: Option<&'a std::sync::mpsc::Sender<Answers>>,
}

/// Decides and writes one batch in one transaction. Returns the cache to keep, or `None` when the
/// batch failed and the cache may hold effects that never reached the disk.
///
/// New transfers' rows are written together; if one of their ids is in the database already (a
/// retry of a transfer the cache has forgotten), the attempt is rolled back and the batch decided
/// again from the database with each row written by its command, which then replays.
fn commit_batch(conn: &Connection, cache: Cache, batch: &mut Vec<Job>, ctx: &Context<'_>) -> Option<Cache> {
    match attempt_batch(conn, cache, batch, ctx, Rows::Together) {
        Ok(cache) => cache,
        Err(RolledBack) => {
            ctx.stats.retried.fetch_add(1, Ordering::Relaxed);
            // The cache holds the rolled-back attempt's effects.
            let cache = match Cache::load(conn) {
                Ok(cache) => cache,
                Err(e) => {
                    fail_all(batch, &e);
                    return None;
                }
            };
            publish_all(ctx.live, &cache);
            match attempt_batch(conn, cache, batch, ctx, Rows::OneByOne) {
                Ok(cache) => cache,
                Err(RolledBack) => {
                    fail_all(batch, &corrupt("transfer rows (written one by one, yet together)"));
                    None
                }
            }
        }
    }
}

/// An attempt at a batch rolled back, its commands unanswered: see [`BatchError::DuplicateRows`].
struct RolledBack;

/// One attempt at a batch: committed and answered (`Some`: the cache to keep), failed and
/// answered (`None`), or rolled back to be tried again.
fn attempt_batch(
    conn: &Connection,
    mut cache: Cache,
    batch: &mut Vec<Job>,
    ctx: &Context<'_>,
    rows: Rows,
) -> Result<Option<Cache>, RolledBack> {
    let Context { live, clock, config, stats, turn, answerer } = *ctx;
    // Batch times never go backwards, even if the clock does: readers rely on an account's
    // events being in time order.
    let now = clock.now().max(cache.last_now);
    cache.last_now = now;
    let mut answers: Vec<Result<Executed, Error>> = Vec::with_capacity(batch.len());
    let mut state = BatchState::new(cache.next_position, rows);
    // The transaction holds SQLite's write lock: take turns at it with the security connection,
    // from before it begins until it has ended either way.
    let turn = turn.blocking_lock();
    let result = (|| -> Result<Vec<AccountId>, BatchError> {
        let start = std::time::Instant::now();
        run_cached(conn, "BEGIN IMMEDIATE")?;
        for job in batch.iter() {
            answers.push(execute_one(conn, &mut cache, &job.cmd, now, &mut state)?);
        }
        state.write_rows(conn)?;
        state.block.write(conn)?;
        add_us(&stats.execute_us, start);
        let start = std::time::Instant::now();
        let checkpointed = index_run(conn, &mut cache, &state)?;
        add_us(&stats.index_us, start);
        let start = std::time::Instant::now();
        run_cached(conn, "COMMIT")?;
        add_us(&stats.commit_us, start);
        Ok(checkpointed)
    })();
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    drop(turn);
    match result {
        Ok(checkpointed) => {
            let start = std::time::Instant::now();
            publish(live, &cache, &state, &checkpointed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.commands.fetch_add(u64::try_from(batch.len()).unwrap_or(0), Ordering::Relaxed);
            let answers: Answers = batch.drain(..).map(|job| job.reply).zip(answers).collect();
            match answerer {
                Some(thread) => {
                    // If the answer thread is gone, answer here.
                    if let Err(std::sync::mpsc::SendError(answers)) = thread.send(answers) {
                        send_answers(answers);
                    }
                }
                None => send_answers(answers),
            }
            add_us(&stats.answer_us, start);
            cache.batches_since_checkpoint += 1;
            if cache.batches_since_checkpoint >= CHECKPOINT_EVERY_BATCHES {
                // The checkpoint thread has copied most frames already. Finishing here, right
                // before this thread's next write, lets SQLite restart the WAL from its start
                // instead of growing it. A failure only postpones that.
                cache.batches_since_checkpoint = 0;
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
            if cache.state.transfer_count() > config.transfer_cache_len_max {
                cache.state.clear_transfers();
            }
            Ok(Some(cache))
        }
        Err(BatchError::DuplicateRows) => Err(RolledBack),
        Err(BatchError::Store(e)) => {
            fail_all(batch, &e);
            Ok(None)
        }
    }
}
