//! The SQLite schema and its versioned migrations. A database written by a newer version of bp is
//! refused, never modified.

use rusqlite::Connection;

use bp_core::{StoreError, StoreErrorKind};

use super::sql_err;

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Each migration takes the schema from version `index` to `index + 1`.
const MIGRATIONS: [&str; 1] = [r"
-- Small named counters of the store itself.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Customers are documents: the profile evolves without migrations (FR4, flexible documents).
CREATE TABLE customers (
    key       INTEGER PRIMARY KEY,
    id        BLOB NOT NULL UNIQUE,
    username  TEXT NOT NULL UNIQUE,
    doc       TEXT NOT NULL
) STRICT;

-- An account row is a checkpoint: its balances and status are as of event `last_event_seq`.
-- Later events of the account are in the journal (and the writer's memory) until the writer
-- indexes them and moves the checkpoint forward.
CREATE TABLE accounts (
    key                   INTEGER PRIMARY KEY,
    id                    BLOB NOT NULL UNIQUE,
    serial                INTEGER NOT NULL UNIQUE,
    customer_key          INTEGER REFERENCES customers(key),
    system_kind           INTEGER,
    kind                  INTEGER NOT NULL,
    currency              TEXT NOT NULL,
    status                INTEGER NOT NULL,
    posted_minor          INTEGER NOT NULL,
    held_minor            INTEGER NOT NULL CHECK (held_minor >= 0),
    overdraft_limit_minor INTEGER NOT NULL CHECK (overdraft_limit_minor >= 0),
    last_event_seq        INTEGER NOT NULL,
    opened_at             INTEGER NOT NULL
) STRICT;
CREATE INDEX accounts_by_customer ON accounts(customer_key) WHERE customer_key IS NOT NULL;

-- Keyed by the client's id: one B-tree, appended to when ids are time-ordered (UUIDv7), and the
-- unique key that makes a retried transfer find its original.
CREATE TABLE transfers (
    id           BLOB PRIMARY KEY,
    kind         INTEGER NOT NULL,
    debit_key    INTEGER NOT NULL,
    credit_key   INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    reference    TEXT,
    state        INTEGER NOT NULL,
    hold_until   INTEGER,
    void_reason  INTEGER,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX transfers_pending_by_hold ON transfers(hold_until) WHERE state = 0;

-- The journal: every change of every account, in commit order, appended and never updated.
-- A row has one or two sides (a and b), each an event of one account with its gap-free
-- sequence number and its balances after the change; for a posted transfer, side a is the
-- debit line and side b the credit line of the double-entry posting. It is the outbox the
-- notification relay publishes from (event position = 2 * position + side).
CREATE TABLE journal (
    position     INTEGER PRIMARY KEY,
    kind         INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    transfer_id  BLOB,
    amount_minor INTEGER,
    code         INTEGER,
    a_key        INTEGER NOT NULL,
    a_seq        INTEGER NOT NULL,
    a_posted     INTEGER NOT NULL,
    a_held       INTEGER NOT NULL,
    b_key        INTEGER,
    b_seq        INTEGER,
    b_posted     INTEGER,
    b_held       INTEGER
) STRICT;

-- The per-account index of the journal, written in deferred, key-ordered runs (see the
-- writer): a row lists the journal positions of `len` consecutive events of one account,
-- `first_seq` on (at most 256, delta-encoded varints), so one run of an account writes one row
-- whatever the number of its events. For every account the rows cover a prefix
-- 1..=last_event_seq of its events.
CREATE TABLE account_journal (
    account_key INTEGER NOT NULL,
    first_seq   INTEGER NOT NULL,
    len         INTEGER NOT NULL CHECK (len BETWEEN 1 AND 256),
    positions   BLOB NOT NULL,
    PRIMARY KEY (account_key, first_seq)
) STRICT, WITHOUT ROWID;
"];

/// Refuses a database written by a newer version of bp; returns the database's schema version.
/// Only reads.
pub fn refuse_newer(conn: &Connection) -> Result<i64, StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql_err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::new(
            StoreErrorKind::Incompatible,
            format!("the database has schema version {version}; this build reads up to {SCHEMA_VERSION}"),
        ));
    }
    Ok(version)
}

/// Brings the database to [`SCHEMA_VERSION`], or refuses a newer one.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version = refuse_newer(conn)?;
    let start =
        usize::try_from(version).map_err(|_| StoreError::new(StoreErrorKind::Corrupt, "negative schema version"))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        let tx = conn.transaction().map_err(sql_err)?;
        tx.execute_batch(sql).map_err(sql_err)?;
        tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(i64::MAX)).map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
    }
    Ok(())
}
