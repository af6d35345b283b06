//! The queries of the read connections. An account's latest events may not be in the per-account
//! index yet: those come from the writer's published tail ([`Live`]), the rest from the index, so
//! that every read sees a gap-free prefix of each account's events.

use std::collections::HashMap;
use std::sync::PoisonError;

use bp_core::account::Account;
use bp_core::account_number::AccountNumber;
use bp_core::customer::{Customer, Username};
use bp_core::event::Event;
use bp_core::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use bp_core::invariants::{self, Books, Scope};
use bp_core::money::Currency;
use bp_core::service_record::ServiceRecord;
use bp_core::service_store::ServiceQuery;
use bp_core::store::{CurrencyTotal, HistoryQuery, OutboxEntry, PAGE_LEN_MAX, Page};
use bp_core::transfer::{Posting, Transfer};
use bp_core::{StoreError, StoreErrorKind, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use super::codec::{
    ACCOUNT_COLUMNS, JournalRow, KIND_POSTED, RUN_POSITIONS_MAX, TRANSFER_COLUMNS, account_from_row, corrupt, currency,
    decode_positions, micros, transfer_from_row, u64_col,
};
use super::journal::{self, AccountKeys};
use super::writer::{LiveAccount, SharedLive};
use super::{run_cached, sql_err};

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn live_account(live: &SharedLive, id: AccountId) -> Option<LiveAccount> {
    live.read().unwrap_or_else(PoisonError::into_inner).accounts.get(&id).cloned()
}

/// Runs `f` inside one read transaction, so that its statements share one snapshot.
fn snapshot<T>(conn: &Connection, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    run_cached(conn, "BEGIN")?;
    let result = f();
    let end = run_cached(conn, "COMMIT");
    let value = result?;
    end?;
    Ok(value)
}

fn customer_where(conn: &Connection, sql: &str, value: &dyn rusqlite::ToSql) -> Result<Option<Customer>, StoreError> {
    let doc: Option<String> =
        conn.prepare_cached(sql).and_then(|mut s| s.query_row([value], |r| r.get(0)).optional()).map_err(sql_err)?;
    doc.map(|d| serde_json::from_str(&d).map_err(|_| corrupt("customer"))).transpose()
}

pub(crate) fn customer_by_id(conn: &Connection, id: CustomerId) -> Result<Option<Customer>, StoreError> {
    customer_where(conn, "SELECT doc FROM customers WHERE id = ?1", &id.as_uuid().as_bytes().as_slice())
}

pub(crate) fn customer_by_username(conn: &Connection, username: &Username) -> Result<Option<Customer>, StoreError> {
    customer_where(conn, "SELECT doc FROM customers WHERE username = ?1", &username.as_str())
}

/// An account: its published state if the writer has one, else its row.
pub(crate) fn account(conn: &Connection, live: &SharedLive, id: AccountId) -> Result<Option<Account>, StoreError> {
    if let Some(l) = live_account(live, id) {
        return Ok(Some(l.account));
    }
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts a LEFT JOIN customers c ON c.key = a.customer_key WHERE a.id = ?1"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query([id.as_uuid().as_bytes()]).map_err(sql_err)?;
    rows.next().map_err(sql_err)?.map(|r| account_from_row(r).map(|(_, a)| a)).transpose()
}

pub(crate) fn account_by_number(
    conn: &Connection,
    live: &SharedLive,
    number: AccountNumber,
) -> Result<Option<Account>, StoreError> {
    let serial = i64::try_from(number.serial()).map_err(|_| StoreError::new(StoreErrorKind::Corrupt, "serial"))?;
    let mut stmt = conn.prepare_cached("SELECT id FROM accounts WHERE serial = ?1").map_err(sql_err)?;
    let id: Option<Vec<u8>> = stmt.query_row([serial], |r| r.get(0)).optional().map_err(sql_err)?;
    match id {
        Some(bytes) => {
            let uuid =
                uuid::Uuid::from_slice(&bytes).map_err(|_| StoreError::new(StoreErrorKind::Corrupt, "account id"))?;
            account(conn, live, AccountId::from_uuid(uuid))
        }
        None => Ok(None),
    }
}

pub(crate) fn accounts_of(
    conn: &Connection,
    live: &SharedLive,
    customer: CustomerId,
) -> Result<Vec<Account>, StoreError> {
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts a JOIN customers c ON c.key = a.customer_key \
         WHERE c.id = ?1 ORDER BY a.opened_at, a.serial"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query([customer.as_uuid().as_bytes()]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        let (_, a) = account_from_row(row)?;
        out.push(live_account(live, a.id).map_or(a, |l| l.account));
    }
    Ok(out)
}

pub(crate) fn transfer(conn: &Connection, id: TransferId) -> Result<Option<Transfer>, StoreError> {
    let sql = format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers t JOIN accounts d ON d.key = t.debit_key \
         JOIN accounts c ON c.key = t.credit_key WHERE t.id = ?1"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query([id.as_uuid().as_bytes()]).map_err(sql_err)?;
    rows.next().map_err(sql_err)?.map(transfer_from_row).transpose()
}

fn account_key(conn: &Connection, id: AccountId) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT key FROM accounts WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.as_uuid().as_bytes()], |r| r.get(0)).optional())
        .map_err(sql_err)
}

/// Reads journal entries by position for one read, with their accounts' ids.
struct Entries<'c> {
    reader: journal::Reader<'c>,
    keys: AccountKeys<'c>,
}

impl<'c> Entries<'c> {
    fn new(conn: &'c Connection, live: &'c SharedLive) -> Self {
        Self { reader: journal::Reader::new(conn), keys: AccountKeys::shared(conn, live) }
    }

    fn at(&mut self, position: i64) -> Result<JournalRow, StoreError> {
        JournalRow::resolve(position, self.reader.entry(position)?, &mut self.keys)
    }
}

/// A transfer's reference, for a posting.
fn reference(conn: &Connection, id: TransferId) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT reference FROM transfers WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.as_uuid().as_bytes()], |r| r.get(0)).optional())
        .map_err(sql_err)
        .map(Option::flatten)
}

/// Where an account's events are: its row key, the last indexed sequence number (`None`: all of
/// them), and the positions of the rest.
type Located = (i64, Option<u64>, Vec<i64>);

/// Finds where an account's events are ([`Located`]), if the account exists.
fn locate(conn: &Connection, live: &SharedLive, id: AccountId) -> Result<Option<Located>, StoreError> {
    if let Some(l) = live_account(live, id) {
        return Ok(Some((l.key, Some(l.indexed_seq), l.tail)));
    }
    Ok(account_key(conn, id)?.map(|k| (k, None, Vec::new())))
}

/// Visits the indexed events of account `key` with `seq` in `lo..=hi`, newest first or oldest
/// first, as `(seq, journal position)`, until `visit` returns `false`.
fn visit_indexed(
    conn: &Connection,
    key: i64,
    lo: u64,
    hi: u64,
    newest_first: bool,
    mut visit: impl FnMut(u64, i64) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    if lo > hi {
        return Ok(());
    }
    // A row holds at most RUN_POSITIONS_MAX events, so the row holding `lo` starts after
    // `lo - RUN_POSITIONS_MAX`.
    let run_max = i64::try_from(RUN_POSITIONS_MAX).unwrap_or(i64::MAX);
    let (sql, floor) = if newest_first {
        (
            "SELECT first_seq, len, positions FROM account_journal WHERE account_key = ?1 AND first_seq > ?2 \
          AND first_seq <= ?3 ORDER BY first_seq DESC",
            i64::MIN,
        )
    } else {
        (
            "SELECT first_seq, len, positions FROM account_journal WHERE account_key = ?1 AND first_seq > ?2 \
          AND first_seq <= ?3 ORDER BY first_seq",
            int(lo).saturating_sub(run_max),
        )
    };
    let mut stmt = conn.prepare_cached(sql).map_err(sql_err)?;
    let mut rows = stmt.query(params![key, floor, int(hi)]).map_err(sql_err)?;
    while let Some(row) = rows.next().map_err(sql_err)? {
        let first = u64_col(row, 0)?;
        let len = usize::try_from(u64_col(row, 1)?).map_err(|_| corrupt("index row"))?;
        let blob: Vec<u8> = row.get(2).map_err(sql_err)?;
        let positions = decode_positions(&blob, len)?;
        let seqs = (first..).zip(positions);
        let mut keep_going = |(seq, position): (u64, i64)| -> Result<bool, StoreError> {
            if seq < lo || seq > hi { Ok(true) } else { visit(seq, position) }
        };
        if newest_first {
            if first + u64::try_from(len).unwrap_or(0) <= lo {
                break;
            }
            for pair in seqs.collect::<Vec<_>>().into_iter().rev() {
                if !keep_going(pair)? {
                    return Ok(());
                }
            }
        } else {
            for pair in seqs {
                if !keep_going(pair)? {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// A page of postings, newest first. Filters are [`HistoryQuery::matches`], the one definition;
/// the walk stops early at the first event older than `from`, since an account's events are in
/// time order (the writer never stamps a batch earlier than the one before).
pub(crate) fn postings(
    conn: &Connection,
    live: &SharedLive,
    account: AccountId,
    q: &HistoryQuery,
) -> Result<Page<Posting>, StoreError> {
    // The published tail is read before the snapshot starts: the snapshot then holds at least
    // the indexed prefix the tail continues.
    let Some((key, indexed, tail)) = locate(conn, live, account)? else {
        return Ok(Page { items: Vec::new(), next_cursor: None });
    };
    let limit = usize::try_from(q.limit().min(PAGE_LEN_MAX)).unwrap_or(usize::MAX);
    let below = q.before_seq.map_or(u64::MAX, |c| c.saturating_sub(1));
    let items = snapshot(conn, || {
        let mut items: Vec<Posting> = Vec::new();
        let mut entries = Entries::new(conn, live);
        // Takes one event; false when the page is complete or the walk went past `from`.
        let mut take = |position: i64| -> Result<bool, StoreError> {
            let row = entries.at(position)?;
            if q.from.is_some_and(|from| row.at < from) {
                return Ok(false);
            }
            let side = row.side_of(key).ok_or_else(|| corrupt("journal side"))?;
            let reference = match row.transfer {
                Some(id) if row.kind == KIND_POSTED => reference(conn, id)?,
                _ => None,
            };
            if let Some(p) = row.posting(side, reference)?
                && q.matches(&p)
            {
                items.push(p);
            }
            Ok(items.len() <= limit)
        };
        let mut going = true;
        if let Some(k) = indexed {
            for (i, position) in tail.iter().enumerate().rev() {
                let seq = k + 1 + u64::try_from(i).unwrap_or(u64::MAX);
                if seq <= below && !take(*position)? {
                    going = false;
                    break;
                }
            }
        }
        if going {
            let hi = indexed.unwrap_or(u64::MAX).min(below);
            visit_indexed(conn, key, 1, hi, true, |_, position| take(position))?;
        }
        Ok(items)
    })?;
    Ok(Page::from_overfetch(items, limit))
}

pub(crate) fn events_after(
    conn: &Connection,
    live: &SharedLive,
    account: AccountId,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<Event>, StoreError> {
    let Some((key, indexed, tail)) = locate(conn, live, account)? else {
        return Ok(Vec::new());
    };
    let limit = usize::try_from(limit.min(PAGE_LEN_MAX)).unwrap_or(usize::MAX);
    snapshot(conn, || {
        let mut out = Vec::new();
        let Some(first) = after_seq.checked_add(1) else { return Ok(out) };
        let mut entries = Entries::new(conn, live);
        let mut take = |position: i64| -> Result<bool, StoreError> {
            let j = entries.at(position)?;
            out.push(j.event(j.side_of(key).ok_or_else(|| corrupt("journal side"))?)?);
            Ok(out.len() < limit)
        };
        let mut going = true;
        visit_indexed(conn, key, first, indexed.unwrap_or(u64::MAX), false, |_, position| {
            going = take(position)?;
            Ok(going)
        })?;
        if let Some(k) = indexed.filter(|_| going) {
            for (i, position) in tail.iter().enumerate() {
                let seq = k + 1 + u64::try_from(i).unwrap_or(u64::MAX);
                if seq > after_seq && !take(*position)? {
                    break;
                }
            }
        }
        Ok(out)
    })
}

/// Events in commit order: event position = 2 × journal position + side.
pub(crate) fn outbox_after(
    conn: &Connection,
    live: &SharedLive,
    after: u64,
    limit: u32,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let limit = usize::try_from(limit.min(PAGE_LEN_MAX)).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut keys = AccountKeys::shared(conn, live);
    snapshot(conn, || {
        journal::scan(conn, int(after / 2), |position, entry| {
            let j = JournalRow::resolve(position, entry, &mut keys)?;
            for (n, _) in j.sides() {
                let position = u64::try_from(j.position).map_err(|_| corrupt("position"))? * 2 + u64::from(n);
                if position > after && out.len() < limit {
                    out.push(OutboxEntry { position, event: j.event(n)? });
                }
            }
            Ok(out.len() < limit)
        })
    })?;
    Ok(out)
}

pub(crate) fn pending_expired(conn: &Connection, now: Timestamp, limit: u32) -> Result<Vec<TransferId>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM transfers WHERE state = 0 AND hold_until < ?1 ORDER BY hold_until, id LIMIT ?2")
        .map_err(sql_err)?;
    let mut rows = stmt.query(params![micros(now), limit.min(PAGE_LEN_MAX)]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        let id: Vec<u8> = row.get(0).map_err(sql_err)?;
        out.push(TransferId::from_uuid(super::codec::uuid(&id)?));
    }
    Ok(out)
}

fn service_from_doc(id: &[u8], doc: &str) -> Result<ServiceRecord, StoreError> {
    let record: ServiceRecord = serde_json::from_str(doc).map_err(|_| corrupt("service record"))?;
    // The document must be the record of its row.
    if record.id.as_uuid().as_bytes() != id {
        return Err(corrupt("service record (id)"));
    }
    Ok(record)
}

fn services_where(
    conn: &Connection,
    sql: &str,
    values: impl rusqlite::Params,
) -> Result<Vec<ServiceRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(sql_err)?;
    let mut rows = stmt.query(values).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        let id: Vec<u8> = row.get(0).map_err(sql_err)?;
        let doc: String = row.get(1).map_err(sql_err)?;
        out.push(service_from_doc(&id, &doc)?);
    }
    Ok(out)
}

/// A service record by id (also what the writer loads).
pub(crate) fn service_record(conn: &Connection, id: ServiceRecordId) -> Result<Option<ServiceRecord>, StoreError> {
    let found = services_where(
        conn,
        "SELECT id, doc FROM service_records WHERE id = ?1",
        [id.as_uuid().as_bytes().as_slice()],
    )?;
    Ok(found.into_iter().next())
}

/// Records due at `now`, by `next_check_at` then id, through `service_records_due`.
pub(crate) fn services_due(conn: &Connection, now: Timestamp, limit: u32) -> Result<Vec<ServiceRecord>, StoreError> {
    let sql = "SELECT id, doc FROM service_records WHERE next_check_at IS NOT NULL AND next_check_at <= ?1 \
               ORDER BY next_check_at, id LIMIT ?2";
    services_where(conn, sql, params![micros(now), limit.min(PAGE_LEN_MAX)])
}

/// Stuck records, by `stuck_since` then id, through `service_records_stuck`.
pub(crate) fn services_stuck(conn: &Connection, limit: u32) -> Result<Vec<ServiceRecord>, StoreError> {
    let sql = "SELECT id, doc FROM service_records WHERE stuck_since IS NOT NULL ORDER BY stuck_since, id LIMIT ?1";
    services_where(conn, sql, params![limit.min(PAGE_LEN_MAX)])
}

/// A customer's records, newest first by `key` (the cursor), filtered by `ServiceQuery::matches`
/// (the one definition of the filters): the walk reads the customer's rows through
/// `service_records_of_customer` until it has one more match than the page holds.
pub(crate) fn service_records_of(
    conn: &Connection,
    customer: CustomerId,
    query: &ServiceQuery,
) -> Result<Page<ServiceRecord>, StoreError> {
    let limit = usize::try_from(query.limit()).unwrap_or(usize::MAX);
    let before = query.before.map_or(i64::MAX, int);
    let mut stmt = conn
        .prepare_cached(
            "SELECT key, id, doc FROM service_records WHERE customer_id = ?1 AND key < ?2 ORDER BY key DESC",
        )
        .map_err(sql_err)?;
    let mut rows = stmt.query(params![customer.as_uuid().as_bytes().as_slice(), before]).map_err(sql_err)?;
    let mut items = Vec::new();
    let mut last_key = None;
    let mut next_cursor = None;
    while let Some(row) = rows.next().map_err(sql_err)? {
        let key: i64 = row.get(0).map_err(sql_err)?;
        let id: Vec<u8> = row.get(1).map_err(sql_err)?;
        let doc: String = row.get(2).map_err(sql_err)?;
        let record = service_from_doc(&id, &doc)?;
        if !query.matches(&record) {
            continue;
        }
        if items.len() == limit {
            next_cursor = last_key;
            break;
        }
        items.push(record);
        last_key = u64::try_from(key).ok();
    }
    Ok(Page { items, next_cursor })
}

/// The pending transfers an account pays, oldest first. `state = 0` is written out (not a
/// parameter) so that SQLite can use the partial index `transfers_pending_by_debit`, which also
/// gives the order: the query reads only the account's pending rows, and sorts nothing.
pub(crate) fn pending_of(conn: &Connection, account: AccountId, limit: u32) -> Result<Vec<Transfer>, StoreError> {
    let mut stmt = conn.prepare_cached(&pending_of_sql()).map_err(sql_err)?;
    let mut rows = stmt.query(params![account.as_uuid().as_bytes(), limit.min(PAGE_LEN_MAX)]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        out.push(transfer_from_row(row)?);
    }
    Ok(out)
}

fn pending_of_sql() -> String {
    format!(
        "SELECT {TRANSFER_COLUMNS} FROM accounts d JOIN transfers t ON t.debit_key = d.key \
         JOIN accounts c ON c.key = t.credit_key \
         WHERE d.id = ?1 AND t.state = 0 ORDER BY t.created_at, t.id LIMIT ?2"
    )
}

/// Sums every account's posted balance per currency, from one snapshot of the database: an
/// account's balance is its row's, or, if the journal has later events of the account (its
/// unindexed tail, all past the low-water mark), the balance after the latest of them.
///
/// The published tails are not used: they and the rows are not read at one instant, and an
/// index run committed in between would count a transfer on one side only.
pub(crate) fn totals(conn: &Connection, _live: &SharedLive) -> Result<Vec<CurrencyTotal>, StoreError> {
    snapshot(conn, || {
        let low: i64 = conn
            .query_row("SELECT value FROM meta WHERE name = 'low_water'", [], |r| r.get(0))
            .optional()
            .map_err(sql_err)?
            .unwrap_or(1);
        // The latest journal event of each account past the low-water mark: (seq, posted).
        let mut latest: HashMap<i64, (u64, i64)> = HashMap::new();
        journal::scan(conn, low, |_, entry| {
            for (_, side) in entry.sides() {
                let l = latest.entry(side.key).or_insert((side.seq, side.posted));
                if side.seq >= l.0 {
                    *l = (side.seq, side.posted);
                }
            }
            Ok(true)
        })?;
        let mut stmt =
            conn.prepare_cached("SELECT key, currency, posted_minor, last_event_seq FROM accounts").map_err(sql_err)?;
        let mut rows = stmt.query([]).map_err(sql_err)?;
        let mut totals: HashMap<Currency, CurrencyTotal> = HashMap::new();
        while let Some(row) = rows.next().map_err(sql_err)? {
            let key: i64 = row.get(0).map_err(sql_err)?;
            let code: String = row.get(1).map_err(sql_err)?;
            let row_posted: i64 = row.get(2).map_err(sql_err)?;
            let row_seq = u64_col(row, 3)?;
            let posted = match latest.get(&key) {
                Some((seq, posted)) if *seq > row_seq => *posted,
                _ => row_posted,
            };
            let c = currency(&code)?;
            let t = totals.entry(c).or_insert(CurrencyTotal { currency: c, posted_minor: 0, accounts: 0 });
            t.posted_minor += i128::from(posted);
            t.accounts += 1;
        }
        let mut out: Vec<CurrencyTotal> = totals.into_values().collect();
        out.sort_by_key(|t| t.currency);
        Ok(out)
    })
}

/// Refuses to serve a ledger that breaks an invariant its totals show, checked by
/// [`invariants::check`]: every currency's balances sum to zero, each currency listed once.
pub(crate) fn check_invariants(conn: &Connection, live: &SharedLive) -> Result<(), StoreError> {
    let books = Books { totals: Some(totals(conn, live)?), ..Books::new(Scope::Part) };
    invariants::check(&books).map_err(|v| {
        StoreError::with_source(StoreErrorKind::Corrupt, format!("the database breaks an invariant: {v}"), v)
    })
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// The payer's list of pending transfers reads the partial index of its pending rows, in the
    /// index's order: no scan of the transfers, and no sort.
    #[test]
    fn pending_of_reads_its_index_and_sorts_nothing() {
        let mut conn = Connection::open_in_memory().expect("open");
        super::super::schema::migrate(&mut conn).expect("migrate");
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", super::pending_of_sql())).expect("explain");
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params![[0u8; 16].as_slice(), 10], |r| r.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("plan rows");
        let plan = plan.join("\n");
        assert!(plan.contains("USING INDEX transfers_pending_by_debit (debit_key=?)"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "the rows come sorted from the index: {plan}");
        assert!(!plan.contains("SCAN"), "no table is scanned: {plan}");
    }
}
