//! The single writer thread and its group commit: it drains the queue into one transaction and one
//! fsync, deciding every command in memory with the rules of bp-core before writing its effects,
//! so a rejected command never fails its batch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bp_core::account::{Account, AccountOwner};
use bp_core::clock::Clock;
use bp_core::command::{Command, Executed};
use bp_core::customer::{Customer, Username};
use bp_core::event::{Event, EventBody};
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::rules::{Effects, LedgerView, Write, decide, keys};
use bp_core::state::LedgerState;
use bp_core::transfer::Transfer;
use bp_core::{Error, StoreError, StoreErrorKind};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::codec::{
    ACCOUNT_COLUMNS, ENTRY_OPENED, ENTRY_PENDING, ENTRY_POSTED, ENTRY_STATUS, ENTRY_VOIDED, TRANSFER_COLUMNS,
    account_from_row, account_kind_to, corrupt, direction_to, micros, reason_to, state_to, status_to, system_to,
    transfer_from_row, transfer_kind_to,
};
use super::sql_err;

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

/// The writer's view of the ledger: the records the rules decide on, and their row keys. It is a
/// cache: the database is the source of truth, and it is rebuilt from it after any failed commit.
struct Cache {
    state: LedgerState,
    customer_keys: HashMap<CustomerId, i64>,
    account_keys: HashMap<AccountId, i64>,
    transfer_keys: HashMap<TransferId, i64>,
    next_customer_key: i64,
    next_account_key: i64,
    next_transfer_key: i64,
    next_position: i64,
}

impl Cache {
    fn load(conn: &Connection) -> Result<Self, StoreError> {
        let next = |sql: &str| -> Result<i64, StoreError> {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|max| max + 1).map_err(sql_err)
        };
        let mut state = LedgerState::new();
        let max_serial: i64 = conn
            .query_row(
                "SELECT coalesce(max(serial), 0) FROM accounts WHERE serial < ?1",
                [i64::try_from(bp_core::account::SYSTEM_SERIAL_BASE).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        state.raise_next_account_serial(u64::try_from(max_serial).map_err(|_| corrupt("serial"))? + 1);
        Ok(Self {
            state,
            customer_keys: HashMap::new(),
            account_keys: HashMap::new(),
            transfer_keys: HashMap::new(),
            next_customer_key: next("SELECT coalesce(max(key), 0) FROM customers")?,
            next_account_key: next("SELECT coalesce(max(key), 0) FROM accounts")?,
            next_transfer_key: next("SELECT coalesce(max(key), 0) FROM transfers")?,
            next_position: next("SELECT coalesce(max(position), 0) FROM entries")?,
        })
    }

    fn load_customer_where(&mut self, conn: &Connection, column: &str, value: &dyn rusqlite::ToSql) -> Result<(), StoreError> {
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

    fn load_account(&mut self, conn: &Connection, id: AccountId) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a LEFT JOIN customers c ON c.key = a.customer_key WHERE a.id = ?1"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
        let mut rows = stmt.query([id.as_uuid().as_bytes()]).map_err(sql_err)?;
        if let Some(row) = rows.next().map_err(sql_err)? {
            let (key, account) = account_from_row(row)?;
            self.account_keys.insert(account.id, key);
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
            let (key, transfer) = transfer_from_row(row)?;
            self.transfer_keys.insert(transfer.id, key);
            self.state.insert_transfer(transfer);
        }
        Ok(())
    }

    /// Loads from the database whatever `cmd` needs and the cache lacks.
    fn prefetch(&mut self, conn: &Connection, cmd: &Command) -> Result<(), StoreError> {
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
                if !self.state.has_account(id) {
                    self.load_account(conn, id)?;
                }
            }
            for id in k.transfers {
                if !self.state.has_transfer(id) {
                    self.load_transfer(conn, id)?;
                }
            }
        }
        Ok(())
    }

    fn key_of_account(&self, id: AccountId) -> Result<i64, StoreError> {
        self.account_keys.get(&id).copied().ok_or_else(|| corrupt("account key"))
    }

    fn key_of_transfer(&self, id: TransferId) -> Result<i64, StoreError> {
        self.transfer_keys.get(&id).copied().ok_or_else(|| corrupt("transfer key"))
    }
}

fn int(v: u64) -> i64 {
    // Counters and serials stay far below 2^63.
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes one command's effects inside the open transaction and applies them to the cache.
fn write_effects(conn: &Connection, cache: &mut Cache, effects: &Effects, dirty: &mut HashSet<AccountId>) -> Result<(), StoreError> {
    // Debits equal credits: assert it where the data is written.
    let net: i128 = effects.postings.iter().map(|p| i128::from(p.signed_minor())).sum();
    assert_eq!(net, 0, "a command's postings must balance");

    cache.state.apply(effects);
    for (write, customer) in &effects.customers {
        let doc = serde_json::to_string(customer)
            .map_err(|e| StoreError::with_source(StoreErrorKind::Corrupt, "cannot encode customer", e))?;
        match write {
            Write::Insert => {
                let key = cache.next_customer_key;
                conn.prepare_cached("INSERT INTO customers (key, id, username, doc) VALUES (?1, ?2, ?3, ?4)")
                    .and_then(|mut s| s.execute(params![key, customer.id.as_uuid().as_bytes(), customer.username.as_str(), doc]))
                    .map_err(sql_err)?;
                cache.next_customer_key += 1;
                cache.customer_keys.insert(customer.id, key);
            }
            Write::Update => {
                let key = cache.customer_keys.get(&customer.id).copied().ok_or_else(|| corrupt("customer key"))?;
                conn.prepare_cached("UPDATE customers SET doc = ?2 WHERE key = ?1")
                    .and_then(|mut s| s.execute(params![key, doc]))
                    .map_err(sql_err)?;
            }
        }
    }
    for (write, account) in &effects.accounts {
        match write {
            Write::Insert => insert_account(conn, cache, account)?,
            Write::Update => {
                dirty.insert(account.id);
            }
        }
    }
    for (write, t) in &effects.transfers {
        match write {
            Write::Insert => insert_transfer(conn, cache, t)?,
            Write::Update => {
                let key = cache.key_of_transfer(t.id)?;
                conn.prepare_cached("UPDATE transfers SET state = ?2, void_reason = ?3, finished_at = ?4 WHERE key = ?1")
                    .and_then(|mut s| {
                        s.execute(params![key, state_to(t.state), t.void_reason.map(reason_to), t.finished_at.map(micros)])
                    })
                    .map_err(sql_err)?;
            }
        }
    }
    for event in &effects.events {
        insert_entry(conn, cache, event)?;
    }
    Ok(())
}

fn insert_account(conn: &Connection, cache: &mut Cache, a: &Account) -> Result<(), StoreError> {
    let key = cache.next_account_key;
    let (customer_key, system_kind) = match a.owner {
        AccountOwner::Customer { customer_id } => {
            (Some(cache.customer_keys.get(&customer_id).copied().ok_or_else(|| corrupt("customer key"))?), None)
        }
        AccountOwner::Bank { system } => (None, Some(system_to(system))),
    };
    conn.prepare_cached(
        "INSERT INTO accounts (key, id, serial, customer_key, system_kind, kind, currency, status, posted_minor, \
         held_minor, overdraft_limit_minor, last_event_seq, version, opened_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
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
            int(a.version),
            micros(a.opened_at),
        ])
    })
    .map_err(sql_err)?;
    cache.next_account_key += 1;
    cache.account_keys.insert(a.id, key);
    Ok(())
}

fn insert_transfer(conn: &Connection, cache: &mut Cache, t: &Transfer) -> Result<(), StoreError> {
    let key = cache.next_transfer_key;
    let debit_key = cache.key_of_account(t.debit_account)?;
    let credit_key = cache.key_of_account(t.credit_account)?;
    conn.prepare_cached(
        "INSERT INTO transfers (key, id, kind, debit_key, credit_key, amount_minor, reference, state, hold_until, \
         void_reason, created_at, finished_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key,
            t.id.as_uuid().as_bytes(),
            transfer_kind_to(t.kind),
            debit_key,
            credit_key,
            t.amount.amount_minor(),
            t.reference,
            state_to(t.state),
            t.hold_until.map(micros),
            t.void_reason.map(reason_to),
            micros(t.created_at),
            t.finished_at.map(micros),
        ])
    })
    .map_err(sql_err)?;
    cache.next_transfer_key += 1;
    cache.transfer_keys.insert(t.id, key);
    Ok(())
}

fn insert_entry(conn: &Connection, cache: &mut Cache, e: &Event) -> Result<(), StoreError> {
    let position = cache.next_position;
    let account_key = cache.key_of_account(e.account_id)?;
    let (kind, transfer, counterparty, amount, code, balances) = match &e.body {
        EventBody::AccountOpened { balances } => (ENTRY_OPENED, None, None, None, None, Some(*balances)),
        EventBody::AccountStatusChanged { status } => (ENTRY_STATUS, None, None, None, Some(status_to(*status)), None),
        EventBody::TransferPosted { transfer_id, direction, amount, counterparty, balances, .. } => (
            ENTRY_POSTED,
            Some(*transfer_id),
            Some(*counterparty),
            Some(amount.amount_minor()),
            Some(direction_to(*direction)),
            Some(*balances),
        ),
        EventBody::TransferPending { transfer_id, amount, counterparty, balances, .. } => {
            (ENTRY_PENDING, Some(*transfer_id), Some(*counterparty), Some(amount.amount_minor()), None, Some(*balances))
        }
        EventBody::TransferVoided { transfer_id, reason, amount, balances } => {
            (ENTRY_VOIDED, Some(*transfer_id), None, Some(amount.amount_minor()), Some(reason_to(*reason)), Some(*balances))
        }
    };
    let (posted, held) = match balances {
        Some(b) => (b.posted.amount_minor(), b.held.amount_minor()),
        // A status change leaves the balances as the account has them now.
        None => {
            let a = cache.state.account(e.account_id).ok_or_else(|| corrupt("event account"))?;
            (a.posted_minor, a.held_minor)
        }
    };
    let transfer_key = transfer.map(|t| cache.key_of_transfer(t)).transpose()?;
    let counterparty_key = counterparty.map(|c| cache.key_of_account(c)).transpose()?;
    conn.prepare_cached(
        "INSERT INTO entries (position, account_key, seq, type, at, transfer_key, counterparty_key, amount_minor, \
         code, posted_after, held_after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut s| {
        s.execute(params![
            position,
            account_key,
            int(e.seq),
            kind,
            micros(e.at),
            transfer_key,
            counterparty_key,
            amount,
            code,
            posted,
            held
        ])
    })
    .map_err(sql_err)?;
    cache.next_position += 1;
    Ok(())
}

/// Writes the final state of every account the batch changed: once per account, however many
/// transfers touched it.
fn flush_accounts(conn: &Connection, cache: &Cache, dirty: &HashSet<AccountId>) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE accounts SET status = ?2, posted_minor = ?3, held_minor = ?4, last_event_seq = ?5, version = ?6 \
             WHERE key = ?1",
        )
        .map_err(sql_err)?;
    let mut keyed: Vec<(i64, &Account)> = dirty
        .iter()
        .map(|id| Ok((cache.key_of_account(*id)?, cache.state.account(*id).ok_or_else(|| corrupt("account"))?)))
        .collect::<Result<_, StoreError>>()?;
    // In key order, so the B-tree pages are visited once each, front to back.
    keyed.sort_unstable_by_key(|(k, _)| *k);
    for (key, a) in keyed {
        stmt.execute(params![key, status_to(a.status), a.posted_minor, a.held_minor, int(a.last_event_seq), int(a.version)])
            .map_err(sql_err)?;
    }
    Ok(())
}

/// Runs the writer until every sender is dropped.
pub(crate) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>, clock: Arc<dyn Clock>, config: WriterConfig) {
    let mut cache = match Cache::load(&conn) {
        Ok(c) => Some(c),
        Err(_) => None,
    };
    let mut batch: Vec<Job> = Vec::with_capacity(config.batch_len_max);
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
            None => Cache::load(&conn),
        };
        cache = match loaded {
            Ok(c) => commit_batch(&mut conn, c, &mut batch, clock.as_ref(), config),
            Err(e) => {
                fail_all(&mut batch, &e);
                None
            }
        };
    }
}

fn fail_all(batch: &mut Vec<Job>, e: &StoreError) {
    for job in batch.drain(..) {
        let err = StoreError::new(e.kind(), format!("the batch was not committed: {e}"));
        // The caller may have given up waiting; nothing to do then.
        let _ = job.reply.send(Err(Error::Store(err)));
    }
}

/// Decides and writes one batch in one transaction. Returns the cache to keep, or `None` when the
/// batch failed and the cache may hold effects that never reached the disk.
fn commit_batch(
    conn: &mut Connection,
    mut cache: Cache,
    batch: &mut Vec<Job>,
    clock: &dyn Clock,
    config: WriterConfig,
) -> Option<Cache> {
    let now = clock.now();
    let mut answers: Vec<Result<Executed, Error>> = Vec::with_capacity(batch.len());
    let mut dirty: HashSet<AccountId> = HashSet::new();
    let result = (|| -> Result<(), StoreError> {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_err)?;
        for job in batch.iter() {
            cache.prefetch(conn, &job.cmd)?;
            match decide(&cache.state, &job.cmd, now) {
                Ok(decision) => {
                    write_effects(conn, &mut cache, &decision.effects, &mut dirty)?;
                    answers.push(Ok(decision.executed));
                }
                Err(rejected) => answers.push(Err(Error::Ledger(rejected))),
            }
        }
        flush_accounts(conn, &cache, &dirty)?;
        conn.execute_batch("COMMIT").map_err(sql_err)
    })();
    match result {
        Ok(()) => {
            for (job, answer) in batch.drain(..).zip(answers) {
                let _ = job.reply.send(answer);
            }
            if cache.state.transfer_count() > config.transfer_cache_len_max {
                cache.state.clear_transfers();
                cache.transfer_keys.clear();
            }
            Some(cache)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            fail_all(batch, &e);
            None
        }
    }
}

/// Whether `username` exists, for callers outside the writer (unused by the writer itself).
#[allow(dead_code)]
fn username_exists(conn: &Connection, username: &Username) -> Result<bool, StoreError> {
    conn.query_row("SELECT 1 FROM customers WHERE username = ?1", [username.as_str()], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
        .map_err(sql_err)
}
