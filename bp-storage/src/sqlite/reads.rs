//! The queries of the read connections.

use bp_core::account::Account;
use bp_core::customer::{Customer, Username};
use bp_core::event::Event;
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::store::{CurrencyTotal, HistoryQuery, OutboxEntry, PAGE_LEN_MAX, Page};
use bp_core::transfer::{Posting, Transfer};
use bp_core::{StoreError, StoreErrorKind, Timestamp};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::codec::{
    ACCOUNT_COLUMNS, ENTRY_COLUMNS, ENTRY_POSTED, TRANSFER_COLUMNS, account_from_row, corrupt, currency,
    direction_to, entry_from_row, micros, posting_from_entry, transfer_from_row, transfer_kind_to,
};
use super::sql_err;

const ENTRY_JOINS: &str = "FROM entries e JOIN accounts a ON a.key = e.account_key \
     LEFT JOIN transfers t ON t.key = e.transfer_key LEFT JOIN accounts x ON x.key = e.counterparty_key";

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn customer_where(conn: &Connection, sql: &str, value: &dyn rusqlite::ToSql) -> Result<Option<Customer>, StoreError> {
    let doc: Option<String> = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_row([value], |r| r.get(0)).optional())
        .map_err(sql_err)?;
    doc.map(|d| serde_json::from_str(&d).map_err(|_| corrupt("customer"))).transpose()
}

pub(crate) fn customer_by_id(conn: &Connection, id: CustomerId) -> Result<Option<Customer>, StoreError> {
    customer_where(conn, "SELECT doc FROM customers WHERE id = ?1", &id.as_uuid().as_bytes().as_slice())
}

pub(crate) fn customer_by_username(conn: &Connection, username: &Username) -> Result<Option<Customer>, StoreError> {
    customer_where(conn, "SELECT doc FROM customers WHERE username = ?1", &username.as_str())
}

pub(crate) fn account(conn: &Connection, id: AccountId) -> Result<Option<Account>, StoreError> {
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts a LEFT JOIN customers c ON c.key = a.customer_key WHERE a.id = ?1"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query([id.as_uuid().as_bytes()]).map_err(sql_err)?;
    rows.next().map_err(sql_err)?.map(|r| account_from_row(r).map(|(_, a)| a)).transpose()
}

pub(crate) fn accounts_of(conn: &Connection, customer: CustomerId) -> Result<Vec<Account>, StoreError> {
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts a JOIN customers c ON c.key = a.customer_key \
         WHERE c.id = ?1 ORDER BY a.opened_at, a.serial"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query([customer.as_uuid().as_bytes()]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        out.push(account_from_row(row)?.1);
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

/// The history query in SQL. Its filters mirror [`HistoryQuery::matches`]; the conformance suite
/// holds the two to the same answers.
pub(crate) fn postings(conn: &Connection, account: AccountId, q: &HistoryQuery) -> Result<Page<Posting>, StoreError> {
    let Some(key) = account_key(conn, account)? else {
        return Ok(Page { items: Vec::new(), next_cursor: None });
    };
    let limit = q.limit().min(PAGE_LEN_MAX);
    let mut sql = format!("SELECT {ENTRY_COLUMNS} {ENTRY_JOINS} WHERE e.account_key = ?1 AND e.type = ?2");
    let mut args: Vec<Value> = vec![Value::Integer(key), Value::Integer(ENTRY_POSTED)];
    let mut filter = |clause: &str, v: Value| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(c) = q.before_seq {
        filter("e.seq <", Value::Integer(int(c)));
    }
    if let Some(t) = q.from {
        filter("e.at >=", Value::Integer(micros(t)));
    }
    if let Some(t) = q.to {
        filter("e.at <", Value::Integer(micros(t)));
    }
    if let Some(d) = q.direction {
        filter("e.code =", Value::Integer(direction_to(d)));
    }
    if let Some(m) = q.amount_min_minor {
        filter("e.amount_minor >=", Value::Integer(m));
    }
    if let Some(m) = q.amount_max_minor {
        filter("e.amount_minor <=", Value::Integer(m));
    }
    if let Some(k) = q.kind {
        filter("t.kind =", Value::Integer(transfer_kind_to(k)));
    }
    sql.push_str(&format!(" ORDER BY e.seq DESC LIMIT {}", limit + 1));
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(sql_err)?;
    let mut items = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        items.push(posting_from_entry(entry_from_row(row)?)?);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|p| p.seq)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

pub(crate) fn events_after(conn: &Connection, account: AccountId, after_seq: u64, limit: u32) -> Result<Vec<Event>, StoreError> {
    let Some(key) = account_key(conn, account)? else {
        return Ok(Vec::new());
    };
    let sql = format!("SELECT {ENTRY_COLUMNS} {ENTRY_JOINS} WHERE e.account_key = ?1 AND e.seq > ?2 ORDER BY e.seq LIMIT ?3");
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query(params![key, int(after_seq), limit.min(PAGE_LEN_MAX)]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        out.push(entry_from_row(row)?.event);
    }
    Ok(out)
}

pub(crate) fn outbox_after(conn: &Connection, after: u64, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
    let sql = format!("SELECT {ENTRY_COLUMNS} {ENTRY_JOINS} WHERE e.position > ?1 ORDER BY e.position LIMIT ?2");
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query(params![int(after), limit.min(PAGE_LEN_MAX)]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        let entry = entry_from_row(row)?;
        out.push(OutboxEntry { position: entry.position, event: entry.event });
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

pub(crate) fn totals(conn: &Connection) -> Result<Vec<CurrencyTotal>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT currency, sum(posted_minor), count(*) FROM accounts GROUP BY currency ORDER BY currency")
        .map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        let code: String = row.get(0).map_err(sql_err)?;
        // SQLite sums 64-bit integers exactly or fails with "integer overflow".
        let sum: i64 = row.get(1).map_err(sql_err)?;
        let count: i64 = row.get(2).map_err(sql_err)?;
        out.push(CurrencyTotal {
            currency: currency(&code)?,
            posted_minor: i128::from(sum),
            accounts: u64::try_from(count).map_err(|_| corrupt("count"))?,
        });
    }
    out.sort_by_key(|t| t.currency);
    Ok(out)
}

/// Refuses to serve a ledger whose balances do not sum to zero per currency.
pub(crate) fn check_invariants(conn: &Connection) -> Result<(), StoreError> {
    for t in totals(conn)? {
        if t.posted_minor != 0 {
            return Err(StoreError::new(
                StoreErrorKind::Corrupt,
                format!("the {} balances sum to {} instead of zero", t.currency, t.posted_minor),
            ));
        }
    }
    Ok(())
}
