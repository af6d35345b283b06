//! The queries of the read connections. An account's latest events may not be in the per-account
//! index yet: those come from the writer's published tail ([`Live`]), the rest from the index, so
//! that every read sees a gap-free prefix of each account's events.

use std::collections::HashMap;
use std::sync::PoisonError;

use bp_core::account::Account;
use bp_core::customer::{Customer, Username};
use bp_core::event::Event;
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::money::Currency;
use bp_core::store::{CurrencyTotal, HistoryQuery, OutboxEntry, PAGE_LEN_MAX, Page};
use bp_core::transfer::{Direction, Posting, Transfer};
use bp_core::{StoreError, StoreErrorKind, Timestamp};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::codec::{
    ACCOUNT_COLUMNS, JOURNAL_COLUMNS, JOURNAL_JOINS, JOURNAL_SIDE_JOINS, JournalRow, KIND_POSTED, TRANSFER_COLUMNS,
    account_from_row, corrupt, currency, micros, transfer_from_row, transfer_kind_to,
};
use super::sql_err;
use super::writer::{LiveAccount, SharedLive};

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn live_account(live: &SharedLive, id: AccountId) -> Option<LiveAccount> {
    live.read().unwrap_or_else(PoisonError::into_inner).accounts.get(&id).cloned()
}

/// Runs `f` inside one read transaction, so that its statements share one snapshot.
fn snapshot<T>(conn: &Connection, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    conn.execute_batch("BEGIN").map_err(sql_err)?;
    let result = f();
    let end = conn.execute_batch("COMMIT").map_err(sql_err);
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
    rows.next().map_err(sql_err)?.map(|r| transfer_from_row(r).map(|(_, t)| t)).transpose()
}

fn account_key(conn: &Connection, id: AccountId) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT key FROM accounts WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.as_uuid().as_bytes()], |r| r.get(0)).optional())
        .map_err(sql_err)
}

fn journal_at(conn: &Connection, position: i64) -> Result<JournalRow, StoreError> {
    let sql = format!("SELECT {JOURNAL_COLUMNS} {JOURNAL_JOINS} WHERE j.position = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query([position]).map_err(sql_err)?;
    match rows.next().map_err(sql_err)? {
        Some(row) => JournalRow::from_row(row),
        None => Err(corrupt("journal position of a published tail")),
    }
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

/// A page of postings. The tail is filtered by [`HistoryQuery::matches`]; the indexed part in
/// SQL with the same filters (the conformance suite holds the two to the same answers).
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
    let mut items = snapshot(conn, || {
        let mut items: Vec<Posting> = Vec::new();
        for position in tail.iter().rev() {
            if items.len() > limit {
                break;
            }
            let row = journal_at(conn, *position)?;
            let side = row.side_of(key).ok_or_else(|| corrupt("tail side"))?;
            if let Some(p) = row.posting(side)?
                && q.matches(&p)
            {
                items.push(p);
            }
        }
        if items.len() <= limit {
            indexed_postings(conn, key, indexed, q, limit + 1 - items.len(), &mut items)?;
        }
        Ok(items)
    })?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|p| p.seq)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

fn indexed_postings(
    conn: &Connection,
    key: i64,
    indexed: Option<u64>,
    q: &HistoryQuery,
    want: usize,
    out: &mut Vec<Posting>,
) -> Result<(), StoreError> {
    let mut sql = format!(
        "SELECT {JOURNAL_COLUMNS}, aj.seq FROM account_journal aj JOIN journal j ON j.position = aj.position \
         {JOURNAL_SIDE_JOINS} WHERE aj.account_key = ?1 AND j.kind = ?2"
    );
    let mut args: Vec<Value> = vec![Value::Integer(key), Value::Integer(KIND_POSTED)];
    let mut filter = |clause: &str, v: Value| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(k) = indexed {
        filter("aj.seq <=", Value::Integer(int(k)));
    }
    if let Some(c) = q.before_seq {
        filter("aj.seq <", Value::Integer(int(c)));
    }
    if let Some(t) = q.from {
        filter("j.at >=", Value::Integer(micros(t)));
    }
    if let Some(t) = q.to {
        filter("j.at <", Value::Integer(micros(t)));
    }
    match q.direction {
        Some(Direction::Debit) => filter("j.a_key =", Value::Integer(key)),
        Some(Direction::Credit) => filter("j.b_key =", Value::Integer(key)),
        None => {}
    }
    if let Some(m) = q.amount_min_minor {
        filter("j.amount_minor >=", Value::Integer(m));
    }
    if let Some(m) = q.amount_max_minor {
        filter("j.amount_minor <=", Value::Integer(m));
    }
    if let Some(k) = q.kind {
        filter("t.kind =", Value::Integer(transfer_kind_to(k)));
    }
    sql.push_str(&format!(" ORDER BY aj.seq DESC LIMIT {want}"));
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(sql_err)?;
    while let Some(row) = rows.next().map_err(sql_err)? {
        let j = JournalRow::from_row(row)?;
        let side = j.side_of(key).ok_or_else(|| corrupt("indexed side"))?;
        out.push(j.posting(side)?.ok_or_else(|| corrupt("indexed posting"))?);
    }
    Ok(())
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
        if indexed.is_none_or(|k| after_seq < k) {
            let sql = format!(
                "SELECT {JOURNAL_COLUMNS} FROM account_journal aj JOIN journal j ON j.position = aj.position \
                 {JOURNAL_SIDE_JOINS} WHERE aj.account_key = ?1 AND aj.seq > ?2 AND aj.seq <= ?3 ORDER BY aj.seq LIMIT ?4"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
            let upper = indexed.map_or(i64::MAX, int);
            let mut rows = stmt
                .query(params![key, int(after_seq), upper, i64::try_from(limit).unwrap_or(i64::MAX)])
                .map_err(sql_err)?;
            while let Some(row) = rows.next().map_err(sql_err)? {
                let j = JournalRow::from_row(row)?;
                out.push(j.event(j.side_of(key).ok_or_else(|| corrupt("indexed side"))?)?);
            }
        }
        if let Some(k) = indexed {
            for (i, position) in tail.iter().enumerate() {
                let seq = k + 1 + u64::try_from(i).unwrap_or(u64::MAX);
                if out.len() >= limit {
                    break;
                }
                if seq <= after_seq {
                    continue;
                }
                let j = journal_at(conn, *position)?;
                out.push(j.event(j.side_of(key).ok_or_else(|| corrupt("tail side"))?)?);
            }
        }
        Ok(out)
    })
}

/// Events in commit order: event position = 2 × journal position + side.
pub(crate) fn outbox_after(conn: &Connection, after: u64, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
    let limit = usize::try_from(limit.min(PAGE_LEN_MAX)).unwrap_or(usize::MAX);
    // The first row may hold only events at or before `after`, so one row more than `limit`.
    let sql =
        format!("SELECT {JOURNAL_COLUMNS} {JOURNAL_JOINS} WHERE j.position >= ?1 ORDER BY j.position LIMIT ?2 + 1");
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query(params![int(after / 2), i64::try_from(limit).unwrap_or(i64::MAX)]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        let j = JournalRow::from_row(row)?;
        for (n, _) in j.sides() {
            let position = u64::try_from(j.position).map_err(|_| corrupt("position"))? * 2 + u64::from(n);
            if position > after && out.len() < limit {
                out.push(OutboxEntry { position, event: j.event(n)? });
            }
        }
    }
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

/// Sums every account's posted balance per currency, from one snapshot of the database: an
/// account's balance is its row's, or, if the journal has later events of the account (its
/// unindexed tail, all past the low-water mark), the balance after the latest of them.
///
/// The published tails are not used: they and the rows are not read at one instant, and an
/// index run committed in between would count a transfer on one side only.
pub(crate) fn totals(conn: &Connection, _live: &SharedLive) -> Result<Vec<CurrencyTotal>, StoreError> {
    // One statement, so one snapshot. With a single max() aggregate, SQLite takes the bare
    // column `posted` from the row holding the maximum.
    let mut stmt = conn
        .prepare_cached(
            "WITH low(position) AS (SELECT coalesce((SELECT value FROM meta WHERE name = 'low_water'), 1)), \
             sides(key, seq, posted) AS ( \
                 SELECT a_key, a_seq, a_posted FROM journal WHERE position >= (SELECT position FROM low) \
                 UNION ALL \
                 SELECT b_key, b_seq, b_posted FROM journal \
                 WHERE position >= (SELECT position FROM low) AND b_key IS NOT NULL), \
             latest(key, seq, posted) AS (SELECT key, max(seq), posted FROM sides GROUP BY key) \
             SELECT a.currency, a.posted_minor, a.last_event_seq, l.seq, l.posted \
             FROM accounts a LEFT JOIN latest l ON l.key = a.key",
        )
        .map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut totals: HashMap<Currency, CurrencyTotal> = HashMap::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        let code: String = row.get(0).map_err(sql_err)?;
        let row_posted: i64 = row.get(1).map_err(sql_err)?;
        let row_seq: i64 = row.get(2).map_err(sql_err)?;
        let tail_seq: Option<i64> = row.get(3).map_err(sql_err)?;
        let tail_posted: Option<i64> = row.get(4).map_err(sql_err)?;
        let posted = match (tail_seq, tail_posted) {
            (Some(seq), Some(posted)) if seq > row_seq => posted,
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
}

/// Refuses to serve a ledger whose balances do not sum to zero per currency.
pub(crate) fn check_invariants(conn: &Connection, live: &SharedLive) -> Result<(), StoreError> {
    for t in totals(conn, live)? {
        if t.posted_minor != 0 {
            return Err(StoreError::new(
                StoreErrorKind::Corrupt,
                format!("the {} balances sum to {} instead of zero", t.currency, t.posted_minor),
            ));
        }
    }
    Ok(())
}
