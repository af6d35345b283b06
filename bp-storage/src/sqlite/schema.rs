//! The SQLite schema and its versioned migrations. A database written by a newer version of bp is
//! refused, never modified.

use rusqlite::Connection;

use bp_core::{StoreError, StoreErrorKind};

use super::sql_err;

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 11;

/// Each migration takes the schema from version `index` to `index + 1`. A released migration is
/// never edited: databases that ran it must keep matching it.
const MIGRATIONS: [&str; 11] = [
    r"
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
",
    // 2: the security records of `bp_core::security`, written by the store's security
    // connection (never by the ledger writer). Ids, hashes and times are typed columns where
    // they are keys or queried; the rest of a flexible record is a JSON document.
    r"
-- Credentials hold secrets; nothing else reads this table.
CREATE TABLE credentials (
    customer_id   BLOB PRIMARY KEY,
    password_hash TEXT NOT NULL,
    totp_secret   BLOB,
    updated_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- `key` keeps the order devices were added in, for ties of `created_at`.
CREATE TABLE devices (
    key         INTEGER PRIMARY KEY,
    id          BLOB NOT NULL UNIQUE,
    customer_id BLOB NOT NULL,
    name        TEXT NOT NULL,
    public_key  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;
CREATE INDEX devices_by_customer ON devices(customer_id, created_at, key);

-- Refresh tokens by the SHA-256 of the token; `state` 0 active, 1 used, 2 revoked. The document
-- holds the grant (client, scope, methods, times of sign-in and issue).
CREATE TABLE refresh_tokens (
    hash        BLOB PRIMARY KEY CHECK (length(hash) = 32),
    session     BLOB NOT NULL,
    customer_id BLOB NOT NULL,
    state       INTEGER NOT NULL CHECK (state BETWEEN 0 AND 2),
    expires_at  INTEGER NOT NULL,
    doc         TEXT NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session);

CREATE TABLE revoked_sessions (
    session    BLOB PRIMARY KEY,
    revoked_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX revoked_sessions_by_time ON revoked_sessions(revoked_at);

-- A challenge is a document (purpose, nonce, failures, state); answering rewrites it.
CREATE TABLE challenges (
    id          BLOB PRIMARY KEY,
    customer_id BLOB NOT NULL,
    expires_at  INTEGER NOT NULL,
    doc         TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- `key` keeps the order beneficiaries were first added in, for ties of `created_at`.
CREATE TABLE beneficiaries (
    key         INTEGER PRIMARY KEY,
    id          BLOB NOT NULL UNIQUE,
    customer_id BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    doc         TEXT NOT NULL
) STRICT;
CREATE INDEX beneficiaries_by_customer ON beneficiaries(customer_id, created_at, key);

-- Lockout and exemption counters: a document, so that new counters need no migration.
CREATE TABLE security_states (
    customer_id BLOB PRIMARY KEY,
    doc         TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- A rowid table: photos are large rows, which WITHOUT ROWID tables store poorly.
CREATE TABLE photos (
    customer_id  BLOB NOT NULL UNIQUE,
    content_type TEXT NOT NULL,
    bytes        BLOB NOT NULL
) STRICT;

-- The audit log: appended in position order and never changed; the triggers refuse any
-- UPDATE or DELETE, so that a bug cannot rewrite history either.
CREATE TABLE audit (
    position    INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    customer_id BLOB,
    detail      TEXT NOT NULL
) STRICT;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
",
    // 3: an account's pending transfers as its payer, oldest first (`Store::pending_of`), without
    // a sort and without reading other accounts' pending rows. Partial, like the expiry index:
    // only pending rows are in it, so posting an immediate transfer does not write it.
    r"
CREATE INDEX transfers_pending_by_debit ON transfers(debit_key, created_at, id) WHERE state = 0;
",
    // 4: a customer's audit entries (`SecurityStore::audit_of`: the security events a resumed
    // event stream replays) without reading everyone else's. Partial: entries naming nobody
    // (failed sign-ins of unknown usernames) are not in it.
    r"
CREATE INDEX audit_by_customer ON audit(customer_id, position) WHERE customer_id IS NOT NULL;
",
    // 5: passkeys (WebAuthn credentials). The document holds the verifier's record of the
    // credential, which changes with its signature counter; the credential id is unique across
    // customers, as a sign-in finds the passkey by it. `key` keeps the order they were added in,
    // for ties of `created_at`.
    r"
CREATE TABLE passkeys (
    key           INTEGER PRIMARY KEY,
    id            BLOB NOT NULL UNIQUE,
    customer_id   BLOB NOT NULL,
    credential_id BLOB NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    doc           TEXT NOT NULL
) STRICT;
CREATE INDEX passkeys_by_customer ON passkeys(customer_id, created_at, key);
",
    // 6: when each session was last used by its customer, for the inactivity limit (it survives
    // restarts and is shared by replicas on the same file).
    r"
CREATE TABLE session_activity (
    session   BLOB PRIMARY KEY,
    active_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
",
    // 7: external service records (FR3, FR6), written by the ledger writer in the same
    // transaction as the hold they move and the `service.updated` events they emit. The record
    // is a JSON document; the columns that are queried are typed. `key` is the order records
    // were written in: a customer's history is read newest first by it, and it is the cursor.
    // Journal rows of service events (kind 6) keep the event's body as a JSON `doc`.
    r"
CREATE TABLE service_records (
    key           INTEGER PRIMARY KEY,
    id            BLOB NOT NULL UNIQUE,
    customer_id   BLOB NOT NULL,
    kind          TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    next_check_at INTEGER,
    stuck_since   INTEGER,
    doc           TEXT NOT NULL
) STRICT;
CREATE INDEX service_records_of_customer ON service_records(customer_id, key);
CREATE INDEX service_records_due ON service_records(next_check_at, id) WHERE next_check_at IS NOT NULL;
CREATE INDEX service_records_stuck ON service_records(stuck_since, id) WHERE stuck_since IS NOT NULL;
ALTER TABLE journal ADD COLUMN doc TEXT;
",
    // 8: leases, so that one process at a time runs each background job (`bp_core::lease`).
    r"
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    token      INTEGER NOT NULL CHECK (token > 0),
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
",
    // 9: transient records (authorization codes, stream tickets: `bp_core::transient`), so
    // that any server process on the file serves the request that spends them.
    r"
CREATE TABLE transients (
    kind       TEXT NOT NULL,
    key        BLOB NOT NULL,
    value      BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    spent      INTEGER NOT NULL CHECK (spent IN (0, 1)),
    PRIMARY KEY (kind, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX transients_by_end ON transients(expires_at);
",
    // 10: shared states (attempt counts, password throttles: `bp_core::transient::SharedState`),
    // so that every server process on the file counts the same attempts.
    r"
CREATE TABLE shared_states (
    kind       TEXT NOT NULL,
    key        BLOB NOT NULL,
    version    INTEGER NOT NULL CHECK (version > 0),
    value      BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX shared_states_by_end ON shared_states(expires_at);
",
    // 11: the journal packed, a row per up to 64 entries of a batch (`journal.rs` gives the format). The
    // rows of the old `journal` table are packed into blocks by `journal::pack_rows`, which then
    // drops it.
    r"
-- The journal: every change of every account, in commit order, appended and never updated.
-- A row is a block of `len` entries at positions first_position.. (of one batch of the writer);
-- an entry has one or two sides (a and b), each an event of one account with its gap-free
-- sequence number and its balances after the change; for a posted transfer, side a is the
-- debit line and side b the credit line of the double-entry posting. It is the outbox the
-- notification relay publishes from (event position = 2 * position + side). `at` is the time
-- the entries' own times are counted from.
CREATE TABLE journal_blocks (
    first_position INTEGER PRIMARY KEY,
    len            INTEGER NOT NULL CHECK (len >= 1),
    at             INTEGER NOT NULL,
    data           BLOB NOT NULL
) STRICT;
",
];

/// The version whose migration packs the old journal's rows (see [`MIGRATIONS`]).
const PACKED_JOURNAL_VERSION: i64 = 11;

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
        let to = i64::try_from(i + 1).unwrap_or(i64::MAX);
        // SQLite's own message names what was in the way (a table, a column): the schema's
        // words, never a row's values.
        let failed = |e: rusqlite::Error| {
            let message = format!("migrating the database to schema version {to} failed: {e}");
            StoreError::new(sql_err(e).kind(), message)
        };
        let tx = conn.transaction().map_err(failed)?;
        tx.execute_batch(sql).map_err(failed)?;
        if to == PACKED_JOURNAL_VERSION {
            super::journal::pack_rows(&tx).map_err(|e| {
                StoreError::new(e.kind(), format!("migrating the database to schema version {to} failed: {e}"))
            })?;
        }
        tx.pragma_update(None, "user_version", to).map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    Ok(())
}

/// Opens every rail's clearing account (`bp_core::external::rail::clearing_accounts`) that the
/// database lacks, empty and without events, so that operators see each rail's position from
/// the first day; run on open, before the writer loads. The ledger stays closed: an empty
/// account adds nothing to its currency's sum.
pub(crate) fn open_clearing_accounts(conn: &Connection, now: bp_core::Timestamp) -> Result<(), StoreError> {
    use super::codec::{account_kind_to, micros, status_to, system_to};
    for (system, currency) in bp_core::external::rail::clearing_accounts() {
        let a = bp_core::rules::system_account(system, currency, now);
        let serial = i64::try_from(a.number.serial()).unwrap_or(i64::MAX);
        conn.execute(
            "INSERT INTO accounts (key, id, serial, customer_key, system_kind, kind, currency, status, posted_minor, \
             held_minor, overdraft_limit_minor, last_event_seq, opened_at) \
             SELECT (SELECT coalesce(max(key), 0) + 1 FROM accounts), ?1, ?2, NULL, ?3, ?4, ?5, ?6, 0, 0, 0, 0, ?7 \
             WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE id = ?1)",
            rusqlite::params![
                a.id.as_uuid().as_bytes(),
                serial,
                system_to(system),
                account_kind_to(a.kind),
                currency.code(),
                status_to(a.status),
                micros(now)
            ],
        )
        .map_err(sql_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bp_core::ids::CustomerId;
    use bp_core::security::{AuditEntry, AuditKind, SecurityStore};
    use bp_core::store::Store;
    use rusqlite::Connection;

    use super::{MIGRATIONS, SCHEMA_VERSION};
    use crate::sqlite::{SqliteConfig, SqliteStore};

    /// A database at version 1 (the ledger tables, as the first release left them) upgrades to the
    /// current version on open, keeping its rows, and then keeps security records too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn version_1_upgrades() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("v1.db");
        {
            let mut conn = Connection::open(&path).expect("open");
            let tx = conn.transaction().expect("begin");
            tx.execute_batch(MIGRATIONS[0]).expect("migration 1");
            tx.execute("INSERT INTO meta (name, value) VALUES ('v1_marker', 42)", []).expect("a v1 row");
            tx.pragma_update(None, "user_version", 1).expect("version 1");
            tx.commit().expect("commit");
        }

        let store = SqliteStore::open(&path, SqliteConfig::default()).expect("a version 1 database opens");
        let customer = CustomerId::new_v7();
        let entry = AuditEntry {
            position: 0,
            at: chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("a valid time"),
            kind: AuditKind::CredentialsChanged,
            customer_id: Some(customer),
            detail: serde_json::Map::new(),
        };
        assert_eq!(store.append_audit(entry).await.expect("append to the new audit table"), 1);
        assert_eq!(store.security_state(customer).await.expect("read a new table").failures, 0);
        let totals = store.totals().await.expect("the upgraded ledger reads");
        assert!(totals.iter().all(|t| t.posted_minor == 0), "{totals:?}");
        store.close().await.expect("close");

        let conn = Connection::open(&path).expect("reopen");
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let marker: i64 =
            conn.query_row("SELECT value FROM meta WHERE name = 'v1_marker'", [], |r| r.get(0)).expect("the v1 row");
        assert_eq!(marker, 42, "the upgrade keeps the rows of version 1");
    }

    /// A customer's audit entries are read from their index, in order: no scan of the log and no
    /// sort, however many other customers' entries it holds.
    #[test]
    fn a_customers_audit_entries_read_their_index() {
        let mut conn = Connection::open_in_memory().expect("open");
        super::migrate(&mut conn).expect("migrate");
        let mut stmt =
            conn.prepare(&format!("EXPLAIN QUERY PLAN {}", super::super::security::AUDIT_OF_SQL)).expect("explain");
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params![[0u8; 16].as_slice(), 0, 10], |r| r.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("plan rows");
        let plan = plan.join("\n");
        assert!(
            plan.contains("USING COVERING INDEX audit_by_customer") || plan.contains("USING INDEX audit_by_customer"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE") && !plan.contains("SCAN"), "{plan}");
    }

    /// The audit log refuses to be rewritten, whoever tries.
    #[test]
    fn audit_log_is_append_only() {
        let mut conn = Connection::open_in_memory().expect("open");
        super::migrate(&mut conn).expect("migrate");
        conn.execute("INSERT INTO audit (at, kind, customer_id, detail) VALUES (1, 'login_succeeded', NULL, '{}')", [])
            .expect("append");
        for sql in ["UPDATE audit SET kind = 'locked_out'", "DELETE FROM audit"] {
            let err = conn.execute(sql, []).expect_err(sql);
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
        let rows: i64 = conn.query_row("SELECT count(*) FROM audit", [], |r| r.get(0)).expect("count");
        assert_eq!(rows, 1);
    }
}
