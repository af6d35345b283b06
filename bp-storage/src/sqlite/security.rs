//! The SQLite store's [`SecurityStore`]: the security records, in the ledger's database file.
//!
//! They are written through one connection of their own, not through the ledger writer: these
//! writes are few and small, must not queue behind batches of transfers, and the writer's group
//! commit and in-memory decisions are about money. Each writing method is one `BEGIN IMMEDIATE`
//! transaction on that connection (behind a mutex, on tokio's blocking threads), so that the
//! read, the decision ([`rotation_of`], [`answer_of`], [`count_failure`]) and the write of a
//! rotation or an answer are one atomic step, against other processes on the file too. The
//! transaction takes SQLite's write lock, which the ledger writer takes for each batch: the two
//! take turns at it through the store's [`WriteTurn`](super::WriteTurn), so a security write
//! waits at most for the batch in progress. Reads are single statements on the read pool, beside
//! the ledger's reads. Commits are as durable as the ledger's (WAL, `synchronous=FULL`), with one
//! exception: an ordinary refresh-token rotation (the old token becomes used, its successor
//! active) commits on a second connection at `synchronous=NORMAL`, so it does not wait for an
//! fsync of its own; it is durable at the next fsync of the WAL — the next commit of the ledger or
//! of any other security record, or the checkpoint thread's next pass (every few milliseconds).
//! A power cut in that window can undo the latest rotations: their clients must sign in again,
//! and a token they had used is active again until used. Sessions' last activity is written
//! the same way (losing the latest only ends a session sooner). Everything else — a reuse and the
//! revocation it causes, sign-outs, audit entries, credentials, challenges — commits at `FULL`.

use std::sync::{Arc, PoisonError};

use async_trait::async_trait;
use bp_core::ids::{BeneficiaryId, ChallengeId, CustomerId, DeviceId, PasskeyId, SessionId};
use bp_core::security::{
    AUDIT_PAGE_LEN_MAX, AuditEntry, Beneficiary, ChallengeAnswer, ChallengeState, Credentials, Device, PHOTO_BYTES_MAX,
    Passkey, Photo, RefreshToken, RefreshTokenState, Rotation, ScaChallenge, ScaMethod, SecurityState, SecurityStore,
    answer_of, count_failure, rotation_of, successor_fits,
};
use bp_core::transient::{SharedState, Spend, StateKind, Transient, TransientKind, spend_of};
use bp_core::{StoreError, StoreErrorKind, Timestamp};
use rusqlite::{Connection, Row, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::codec::{corrupt, micros, time, token_state_from, token_state_to, uuid};
use super::{SqliteStore, sql_err};

fn invalid(message: &'static str) -> StoreError {
    StoreError::new(StoreErrorKind::InvalidRequest, message)
}

fn unencodable(e: serde_json::Error) -> StoreError {
    StoreError::with_source(StoreErrorKind::InvalidRequest, "a security record cannot be encoded as JSON", e)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A customer's audit entries after a position, oldest first (`SecurityStore::audit_of`): read
/// from the `audit_by_customer` index (its query plan is checked by a test of `schema`).
pub(crate) const AUDIT_OF_SQL: &str = "SELECT position, at, kind, customer_id, detail FROM audit \
     WHERE customer_id = ?1 AND position > ?2 ORDER BY position LIMIT ?3";

/// The bytes of a 16-byte id or a 32-byte hash column.
fn blob<const N: usize>(row: &Row<'_>, i: usize, what: &str) -> Result<[u8; N], StoreError> {
    let bytes: Vec<u8> = row.get(i).map_err(sql_err)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| corrupt(what))
}

fn customer_col(row: &Row<'_>, i: usize) -> Result<CustomerId, StoreError> {
    let bytes: Vec<u8> = row.get(i).map_err(sql_err)?;
    Ok(CustomerId::from_uuid(uuid(&bytes)?))
}

fn opt_time(row: &Row<'_>, i: usize) -> Result<Option<Timestamp>, StoreError> {
    let us: Option<i64> = row.get(i).map_err(sql_err)?;
    us.map(time).transpose()
}

/// Runs `f` on the rows of a cached statement.
fn rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut f: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(sql_err)?;
    let mut rows = stmt.query(params).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        out.push(f(row)?);
    }
    Ok(out)
}

/// The one row, if any, of a cached statement.
fn row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(sql_err)?;
    let mut rows = stmt.query(params).map_err(sql_err)?;
    rows.next().map_err(sql_err)?.map(f).transpose()
}

/// Whether a cached statement returns a row.
fn exists(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<bool, StoreError> {
    conn.prepare_cached(sql).and_then(|mut s| s.exists(params)).map_err(sql_err)
}

/// Runs a cached statement; returns the rows it changed.
fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute(params)).map_err(sql_err)
}

// Devices.

/// A device from a row of `id, customer_id, name, public_key, created_at, revoked_at`.
fn device_from_row(row: &Row<'_>) -> Result<Device, StoreError> {
    Ok(Device {
        id: DeviceId::from_uuid(uuid(&blob::<16>(row, 0, "device id")?)?),
        customer_id: customer_col(row, 1)?,
        name: row.get(2).map_err(sql_err)?,
        public_key: row.get(3).map_err(sql_err)?,
        created_at: time(row.get(4).map_err(sql_err)?)?,
        revoked_at: opt_time(row, 5)?,
    })
}

// Refresh tokens: the grant (client, scope, methods, sign-in and issue times, the key binding)
// is a document.

fn grant_doc(token: &RefreshToken) -> Result<String, StoreError> {
    let mut grant = Map::new();
    grant.insert("client_id".to_owned(), Value::from(token.client_id.as_str()));
    grant.insert("scope".to_owned(), Value::from(token.scope.as_str()));
    grant.insert("amr".to_owned(), Value::from(token.amr.clone()));
    grant.insert("auth_time".to_owned(), serde_json::to_value(token.auth_time).map_err(unencodable)?);
    grant.insert("issued_at".to_owned(), serde_json::to_value(token.issued_at).map_err(unencodable)?);
    if let Some(jkt) = &token.dpop_jkt {
        grant.insert("dpop_jkt".to_owned(), Value::from(jkt.as_str()));
    }
    Ok(Value::Object(grant).to_string())
}

/// A token from a row of `hash, session, customer_id, state, expires_at, doc`.
fn token_from_row(row: &Row<'_>) -> Result<RefreshToken, StoreError> {
    let text: String = row.get(5).map_err(sql_err)?;
    let bad = |_| corrupt("refresh token grant");
    let mut grant: Map<String, Value> = serde_json::from_str(&text).map_err(bad)?;
    let mut take = |name: &str| grant.remove(name).unwrap_or(Value::Null);
    Ok(RefreshToken {
        hash: blob::<32>(row, 0, "refresh token hash")?,
        session: SessionId::from_uuid(uuid(&blob::<16>(row, 1, "session id")?)?),
        customer_id: customer_col(row, 2)?,
        client_id: serde_json::from_value(take("client_id")).map_err(bad)?,
        scope: serde_json::from_value(take("scope")).map_err(bad)?,
        amr: serde_json::from_value(take("amr")).map_err(bad)?,
        auth_time: serde_json::from_value(take("auth_time")).map_err(bad)?,
        issued_at: serde_json::from_value(take("issued_at")).map_err(bad)?,
        expires_at: time(row.get(4).map_err(sql_err)?)?,
        state: token_state_from(row.get(3).map_err(sql_err)?)?,
        // Absent from grants written before DPoP, and for unbound sessions.
        dpop_jkt: serde_json::from_value(take("dpop_jkt")).map_err(bad)?,
    })
}

/// Marks the active token hashed `old` used and inserts its successor, inside the caller's
/// transaction, after `rotation_of` said `Rotated`.
fn rotate(c: &Connection, stored: &RefreshToken, old: &[u8; 32], new: &RefreshToken) -> Result<(), StoreError> {
    let taken = exists(c, "SELECT 1 FROM refresh_tokens WHERE hash = ?1", [new.hash])?;
    successor_fits(stored, new, taken)?;
    let used = execute(
        c,
        "UPDATE refresh_tokens SET state = ?2 WHERE hash = ?1 AND state = ?3",
        params![old, token_state_to(RefreshTokenState::Used), token_state_to(RefreshTokenState::Active)],
    )?;
    assert_eq!(used, 1, "the token that rotates was active inside this transaction");
    let inserted = insert_token(c, new)?;
    assert!(inserted, "the successor's hash was free inside this transaction");
    Ok(())
}

fn refresh_token(conn: &Connection, hash: &[u8; 32]) -> Result<Option<RefreshToken>, StoreError> {
    row(
        conn,
        "SELECT hash, session, customer_id, state, expires_at, doc FROM refresh_tokens WHERE hash = ?1",
        [hash],
        token_from_row,
    )
}

/// Inserts a token; false when its hash is taken.
fn insert_token(conn: &Connection, token: &RefreshToken) -> Result<bool, StoreError> {
    let inserted = execute(
        conn,
        "INSERT INTO refresh_tokens (hash, session, customer_id, state, expires_at, doc) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (hash) DO NOTHING",
        params![
            token.hash,
            token.session.as_uuid().as_bytes(),
            token.customer_id.as_uuid().as_bytes(),
            token_state_to(token.state),
            micros(token.expires_at),
            grant_doc(token)?,
        ],
    )?;
    Ok(inserted == 1)
}

fn session_revoked(conn: &Connection, session: SessionId) -> Result<bool, StoreError> {
    exists(conn, "SELECT 1 FROM revoked_sessions WHERE session = ?1", [session.as_uuid().as_bytes()])
}

/// Records the session revoked at `at` (keeping an earlier revocation's time) and revokes every
/// token of it.
fn revoke(conn: &Connection, session: SessionId, at: Timestamp) -> Result<(), StoreError> {
    let id = session.as_uuid().as_bytes();
    execute(
        conn,
        "INSERT INTO revoked_sessions (session, revoked_at) VALUES (?1, ?2) ON CONFLICT (session) DO NOTHING",
        params![id, micros(at)],
    )?;
    execute(
        conn,
        "UPDATE refresh_tokens SET state = ?2 WHERE session = ?1",
        params![id, token_state_to(RefreshTokenState::Revoked)],
    )?;
    Ok(())
}

// Challenges and beneficiaries are documents; their key columns must agree with them.

fn challenge_from_text(id: ChallengeId, text: &str) -> Result<ScaChallenge, StoreError> {
    let challenge: ScaChallenge = serde_json::from_str(text).map_err(|_| corrupt("challenge"))?;
    if challenge.id != id {
        return Err(corrupt("challenge (its document names another id)"));
    }
    Ok(challenge)
}

fn challenge(conn: &Connection, id: ChallengeId) -> Result<Option<ScaChallenge>, StoreError> {
    let text = row(conn, "SELECT doc FROM challenges WHERE id = ?1", [id.as_uuid().as_bytes()], |r| {
        r.get::<_, String>(0).map_err(sql_err)
    })?;
    text.map(|t| challenge_from_text(id, &t)).transpose()
}

fn write_challenge(conn: &Connection, challenge: &ScaChallenge) -> Result<(), StoreError> {
    execute(
        conn,
        "INSERT INTO challenges (id, customer_id, expires_at, doc) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, expires_at = excluded.expires_at, \
         doc = excluded.doc",
        params![
            challenge.id.as_uuid().as_bytes(),
            challenge.customer_id.as_uuid().as_bytes(),
            micros(challenge.expires_at),
            serde_json::to_string(challenge).map_err(unencodable)?,
        ],
    )?;
    Ok(())
}

fn beneficiary_from_row(row: &Row<'_>) -> Result<Beneficiary, StoreError> {
    let id = BeneficiaryId::from_uuid(uuid(&blob::<16>(row, 0, "beneficiary id")?)?);
    let customer = customer_col(row, 1)?;
    let text: String = row.get(2).map_err(sql_err)?;
    let beneficiary: Beneficiary = serde_json::from_str(&text).map_err(|_| corrupt("beneficiary"))?;
    if (beneficiary.id, beneficiary.customer_id) != (id, customer) {
        return Err(corrupt("beneficiary (its document names another id or customer)"));
    }
    Ok(beneficiary)
}

fn passkey_from_row(row: &Row<'_>) -> Result<Passkey, StoreError> {
    let id = PasskeyId::from_uuid(uuid(&blob::<16>(row, 0, "passkey id")?)?);
    let customer = customer_col(row, 1)?;
    let text: String = row.get(2).map_err(sql_err)?;
    let passkey: Passkey = serde_json::from_str(&text).map_err(|_| corrupt("passkey"))?;
    if (passkey.id, passkey.customer_id) != (id, customer) {
        return Err(corrupt("passkey (its document names another id or customer)"));
    }
    Ok(passkey)
}

fn audit_from_row(row: &Row<'_>) -> Result<AuditEntry, StoreError> {
    let position: i64 = row.get(0).map_err(sql_err)?;
    let kind: String = row.get(2).map_err(sql_err)?;
    let customer: Option<Vec<u8>> = row.get(3).map_err(sql_err)?;
    let detail: String = row.get(4).map_err(sql_err)?;
    Ok(AuditEntry {
        position: u64::try_from(position).map_err(|_| corrupt("audit position"))?,
        at: time(row.get(1).map_err(sql_err)?)?,
        kind: serde_json::from_value(Value::String(kind)).map_err(|_| corrupt("audit kind"))?,
        customer_id: customer.map(|c| uuid(&c).map(CustomerId::from_uuid)).transpose()?,
        detail: serde_json::from_str(&detail).map_err(|_| corrupt("audit detail"))?,
    })
}

impl SqliteStore {
    /// Runs `f` in one `BEGIN IMMEDIATE` transaction of the security connection, committing
    /// when it returns `Ok` and rolling back when it returns `Err`.
    pub(super) async fn security_write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_on(Arc::clone(&self.security), f).await
    }

    /// [`Self::security_write`] on `conn`.
    async fn write_on<T, F>(&self, conn: Arc<std::sync::Mutex<Connection>>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        // Waiting for the turn holds no thread; the blocking task keeps it until its transaction
        // has ended, even if this future is dropped meanwhile.
        let turn = Arc::clone(&self.write_turn).lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            // A panic inside `f` drops its transaction, which rolls back: the connection is
            // clean even when the mutex is poisoned.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err)?;
            let value = f(&tx)?;
            tx.commit().map_err(sql_err)?;
            Ok(value)
        })
        .await
        .map_err(|e| StoreError::with_source(StoreErrorKind::Unavailable, "a security write task failed", e))?
    }
}

#[async_trait]
impl SecurityStore for SqliteStore {
    async fn put_credentials(&self, credentials: Credentials) -> Result<(), StoreError> {
        self.security_write(move |c| {
            execute(
                c,
                "INSERT INTO credentials (customer_id, password_hash, totp_secret, updated_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (customer_id) DO UPDATE SET \
                 password_hash = excluded.password_hash, totp_secret = excluded.totp_secret, \
                 updated_at = excluded.updated_at",
                params![
                    credentials.customer_id.as_uuid().as_bytes(),
                    credentials.password_hash,
                    credentials.totp_secret,
                    micros(credentials.updated_at),
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn credentials(&self, customer: CustomerId) -> Result<Option<Credentials>, StoreError> {
        self.read(move |c, _| {
            row(
                c,
                "SELECT password_hash, totp_secret, updated_at FROM credentials WHERE customer_id = ?1",
                [customer.as_uuid().as_bytes()],
                |r| {
                    Ok(Credentials {
                        customer_id: customer,
                        password_hash: r.get(0).map_err(sql_err)?,
                        totp_secret: r.get(1).map_err(sql_err)?,
                        updated_at: time(r.get(2).map_err(sql_err)?)?,
                    })
                },
            )
        })
        .await
    }

    async fn add_device(&self, device: Device) -> Result<(), StoreError> {
        // A taken id meets the unique index: `sql_err` answers `Conflict`, and the transaction
        // rolls back.
        self.security_write(move |c| {
            execute(
                c,
                "INSERT INTO devices (id, customer_id, name, public_key, created_at, revoked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    device.id.as_uuid().as_bytes(),
                    device.customer_id.as_uuid().as_bytes(),
                    device.name,
                    device.public_key,
                    micros(device.created_at),
                    device.revoked_at.map(micros),
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        self.read(move |c, _| {
            const SQL: &str =
                "SELECT id, customer_id, name, public_key, created_at, revoked_at FROM devices WHERE id = ?1";
            row(c, SQL, [id.as_uuid().as_bytes()], device_from_row)
        })
        .await
    }

    async fn devices_of(&self, customer: CustomerId) -> Result<Vec<Device>, StoreError> {
        self.read(move |c, _| {
            const SQL: &str = "SELECT id, customer_id, name, public_key, created_at, revoked_at FROM devices \
                 WHERE customer_id = ?1 ORDER BY created_at, key";
            rows(c, SQL, [customer.as_uuid().as_bytes()], device_from_row)
        })
        .await
    }

    async fn revoke_device(&self, customer: CustomerId, id: DeviceId, at: Timestamp) -> Result<bool, StoreError> {
        self.security_write(move |c| {
            let changed = execute(
                c,
                "UPDATE devices SET revoked_at = ?3 WHERE id = ?1 AND customer_id = ?2 AND revoked_at IS NULL",
                params![id.as_uuid().as_bytes(), customer.as_uuid().as_bytes(), micros(at)],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn insert_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
        self.security_write(move |c| {
            if !insert_token(c, &token)? {
                return Err(StoreError::new(StoreErrorKind::Conflict, "a refresh token with this hash exists"));
            }
            Ok(())
        })
        .await
    }

    async fn rotate_refresh_token(
        &self,
        old: [u8; 32],
        new: RefreshToken,
        now: Timestamp,
    ) -> Result<Rotation, StoreError> {
        // An ordinary rotation commits on the rotations connection (synchronous=NORMAL); any
        // other outcome — above all a reuse, which revokes the session — is decided again and
        // written on the security connection (synchronous=FULL).
        let successor = new.clone();
        let ordinary = self
            .write_on(Arc::clone(&self.rotations), move |c| {
                let stored = refresh_token(c, &old)?;
                let revoked = match &stored {
                    Some(t) => session_revoked(c, t.session)?,
                    None => false,
                };
                match rotation_of(stored.as_ref(), revoked, now) {
                    Rotation::Rotated(stored) => {
                        rotate(c, &stored, &old, &successor)?;
                        Ok(Some(Rotation::Rotated(stored)))
                    }
                    _ => Ok(None),
                }
            })
            .await?;
        if let Some(rotation) = ordinary {
            return Ok(rotation);
        }
        self.security_write(move |c| {
            let stored = refresh_token(c, &old)?;
            let revoked = match &stored {
                Some(t) => session_revoked(c, t.session)?,
                None => false,
            };
            let rotation = rotation_of(stored.as_ref(), revoked, now);
            match &rotation {
                Rotation::Rotated(stored) => rotate(c, stored, &old, &new)?,
                Rotation::Reused { session, .. } => revoke(c, *session, now)?,
                Rotation::Revoked | Rotation::Expired | Rotation::Unknown => {}
            }
            Ok(rotation)
        })
        .await
    }

    async fn refresh_token(&self, hash: [u8; 32]) -> Result<Option<RefreshToken>, StoreError> {
        self.read(move |c, _| refresh_token(c, &hash)).await
    }

    async fn revoke_session(&self, session: SessionId, at: Timestamp) -> Result<bool, StoreError> {
        self.security_write(move |c| {
            if session_revoked(c, session)? {
                return Ok(false);
            }
            revoke(c, session, at)?;
            Ok(true)
        })
        .await
    }

    async fn sessions_revoked_since(&self, since: Timestamp) -> Result<Vec<SessionId>, StoreError> {
        self.read(move |c, _| {
            rows(
                c,
                "SELECT session FROM revoked_sessions WHERE revoked_at >= ?1 ORDER BY revoked_at, session",
                [micros(since)],
                |r| Ok(SessionId::from_uuid(uuid(&blob::<16>(r, 0, "session id")?)?)),
            )
        })
        .await
    }

    async fn record_session_activity(&self, session: SessionId, at: Timestamp) -> Result<(), StoreError> {
        // Like an ordinary rotation, on the rotations connection (synchronous=NORMAL): a power
        // cut can only lose the latest activity, which ends a session sooner, never later.
        self.write_on(Arc::clone(&self.rotations), move |c| {
            execute(
                c,
                "INSERT INTO session_activity (session, active_at) VALUES (?1, ?2) \
                 ON CONFLICT (session) DO UPDATE SET active_at = max(active_at, excluded.active_at)",
                params![session.as_uuid().as_bytes(), micros(at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn session_active_at(&self, session: SessionId) -> Result<Option<Timestamp>, StoreError> {
        self.read(move |c, _| {
            row(c, "SELECT active_at FROM session_activity WHERE session = ?1", [session.as_uuid().as_bytes()], |r| {
                time(r.get(0).map_err(sql_err)?)
            })
        })
        .await
    }

    async fn put_challenge(&self, challenge: ScaChallenge) -> Result<(), StoreError> {
        self.security_write(move |c| {
            if self::challenge(c, challenge.id)?.is_some_and(|stored| stored.state != ChallengeState::Open) {
                return Err(invalid("a challenge that is no longer open cannot be replaced"));
            }
            write_challenge(c, &challenge)
        })
        .await
    }

    async fn challenge(&self, id: ChallengeId) -> Result<Option<ScaChallenge>, StoreError> {
        self.read(move |c, _| challenge(c, id)).await
    }

    async fn answer_challenge(
        &self,
        id: ChallengeId,
        method: ScaMethod,
        device_id: Option<DeviceId>,
        now: Timestamp,
    ) -> Result<ChallengeAnswer, StoreError> {
        self.security_write(move |c| {
            let Some(mut challenge) = challenge(c, id)? else { return Ok(ChallengeAnswer::Unknown) };
            if !answer_of(&challenge, now) {
                return Ok(ChallengeAnswer::Refused(challenge));
            }
            challenge.state = ChallengeState::Answered { at: now, method, device_id };
            write_challenge(c, &challenge)?;
            Ok(ChallengeAnswer::Accepted(challenge))
        })
        .await
    }

    async fn fail_challenge(&self, id: ChallengeId, failures_max: u32) -> Result<Option<ScaChallenge>, StoreError> {
        self.security_write(move |c| {
            let Some(mut challenge) = challenge(c, id)? else { return Ok(None) };
            if count_failure(&mut challenge, failures_max) {
                write_challenge(c, &challenge)?;
            }
            Ok(Some(challenge))
        })
        .await
    }

    async fn add_passkey(&self, passkey: Passkey) -> Result<(), StoreError> {
        // A taken id or credential id meets a unique index: `sql_err` answers `Conflict`.
        self.security_write(move |c| {
            execute(
                c,
                "INSERT INTO passkeys (id, customer_id, credential_id, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    passkey.id.as_uuid().as_bytes(),
                    passkey.customer_id.as_uuid().as_bytes(),
                    passkey.credential_id,
                    micros(passkey.created_at),
                    serde_json::to_string(&passkey).map_err(unencodable)?,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn passkeys_of(&self, customer: CustomerId) -> Result<Vec<Passkey>, StoreError> {
        self.read(move |c, _| {
            rows(
                c,
                "SELECT id, customer_id, doc FROM passkeys WHERE customer_id = ?1 ORDER BY created_at, key",
                [customer.as_uuid().as_bytes()],
                passkey_from_row,
            )
        })
        .await
    }

    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<Passkey>, StoreError> {
        let credential_id = credential_id.to_vec();
        self.read(move |c, _| {
            row(
                c,
                "SELECT id, customer_id, doc FROM passkeys WHERE credential_id = ?1",
                [credential_id],
                passkey_from_row,
            )
        })
        .await
    }

    async fn passkey_used(
        &self,
        id: PasskeyId,
        credential: serde_json::Value,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.security_write(move |c| {
            let Some(mut passkey) = row(
                c,
                "SELECT id, customer_id, doc FROM passkeys WHERE id = ?1",
                [id.as_uuid().as_bytes()],
                passkey_from_row,
            )?
            else {
                return Ok(false);
            };
            passkey.credential = credential;
            passkey.last_used_at = Some(at);
            let doc = serde_json::to_string(&passkey).map_err(unencodable)?;
            execute(c, "UPDATE passkeys SET doc = ?2 WHERE id = ?1", params![id.as_uuid().as_bytes(), doc])?;
            Ok(true)
        })
        .await
    }

    async fn remove_passkey(&self, customer: CustomerId, id: PasskeyId) -> Result<bool, StoreError> {
        self.security_write(move |c| {
            let deleted = execute(
                c,
                "DELETE FROM passkeys WHERE id = ?1 AND customer_id = ?2",
                params![id.as_uuid().as_bytes(), customer.as_uuid().as_bytes()],
            )?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn put_beneficiary(&self, beneficiary: Beneficiary) -> Result<(), StoreError> {
        self.security_write(move |c| {
            // An upsert keeps the row's key, so a replaced beneficiary keeps its place among ties.
            execute(
                c,
                "INSERT INTO beneficiaries (id, customer_id, created_at, doc) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
                 created_at = excluded.created_at, doc = excluded.doc",
                params![
                    beneficiary.id.as_uuid().as_bytes(),
                    beneficiary.customer_id.as_uuid().as_bytes(),
                    micros(beneficiary.created_at),
                    serde_json::to_string(&beneficiary).map_err(unencodable)?,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn beneficiary(&self, id: BeneficiaryId) -> Result<Option<Beneficiary>, StoreError> {
        self.read(move |c, _| {
            row(
                c,
                "SELECT id, customer_id, doc FROM beneficiaries WHERE id = ?1",
                [id.as_uuid().as_bytes()],
                beneficiary_from_row,
            )
        })
        .await
    }

    async fn beneficiaries_of(&self, customer: CustomerId) -> Result<Vec<Beneficiary>, StoreError> {
        self.read(move |c, _| {
            rows(
                c,
                "SELECT id, customer_id, doc FROM beneficiaries WHERE customer_id = ?1 ORDER BY created_at, key",
                [customer.as_uuid().as_bytes()],
                beneficiary_from_row,
            )
        })
        .await
    }

    async fn delete_beneficiary(&self, customer: CustomerId, id: BeneficiaryId) -> Result<bool, StoreError> {
        self.security_write(move |c| {
            let deleted = execute(
                c,
                "DELETE FROM beneficiaries WHERE id = ?1 AND customer_id = ?2",
                params![id.as_uuid().as_bytes(), customer.as_uuid().as_bytes()],
            )?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn security_state(&self, customer: CustomerId) -> Result<SecurityState, StoreError> {
        self.read(move |c, _| {
            let text = row(
                c,
                "SELECT doc FROM security_states WHERE customer_id = ?1",
                [customer.as_uuid().as_bytes()],
                |r| r.get::<_, String>(0).map_err(sql_err),
            )?;
            match text {
                Some(t) => serde_json::from_str(&t).map_err(|_| corrupt("security state")),
                None => Ok(SecurityState::default()),
            }
        })
        .await
    }

    async fn put_security_state(&self, customer: CustomerId, state: SecurityState) -> Result<(), StoreError> {
        self.security_write(move |c| {
            execute(
                c,
                "INSERT INTO security_states (customer_id, doc) VALUES (?1, ?2) \
                 ON CONFLICT (customer_id) DO UPDATE SET doc = excluded.doc",
                params![customer.as_uuid().as_bytes(), serde_json::to_string(&state).map_err(unencodable)?],
            )?;
            Ok(())
        })
        .await
    }

    async fn put_photo(&self, customer: CustomerId, photo: Photo) -> Result<(), StoreError> {
        if photo.bytes.len() > PHOTO_BYTES_MAX {
            return Err(invalid("photo too large"));
        }
        self.security_write(move |c| {
            execute(
                c,
                "INSERT INTO photos (customer_id, content_type, bytes) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (customer_id) DO UPDATE SET content_type = excluded.content_type, \
                 bytes = excluded.bytes",
                params![customer.as_uuid().as_bytes(), photo.content_type, photo.bytes],
            )?;
            Ok(())
        })
        .await
    }

    async fn photo(&self, customer: CustomerId) -> Result<Option<Photo>, StoreError> {
        self.read(move |c, _| {
            row(
                c,
                "SELECT content_type, bytes FROM photos WHERE customer_id = ?1",
                [customer.as_uuid().as_bytes()],
                |r| Ok(Photo { content_type: r.get(0).map_err(sql_err)?, bytes: r.get(1).map_err(sql_err)? }),
            )
        })
        .await
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        let kind = match serde_json::to_value(entry.kind).map_err(unencodable)? {
            Value::String(kind) => kind,
            _ => return Err(invalid("an audit kind must encode as a string")),
        };
        let detail = serde_json::to_string(&entry.detail).map_err(unencodable)?;
        self.security_write(move |c| {
            // The log is only ever appended to: the position is the next rowid, one above the
            // last, since no row is ever deleted.
            execute(
                c,
                "INSERT INTO audit (at, kind, customer_id, detail) VALUES (?1, ?2, ?3, ?4)",
                params![micros(entry.at), kind, entry.customer_id.map(|id| *id.as_uuid().as_bytes()), detail],
            )?;
            u64::try_from(c.last_insert_rowid()).map_err(|_| corrupt("audit position"))
        })
        .await
    }

    async fn audit_after(&self, position: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = limit.min(AUDIT_PAGE_LEN_MAX);
        let entries = self
            .read(move |c, _| {
                rows(
                    c,
                    "SELECT position, at, kind, customer_id, detail FROM audit WHERE position > ?1 \
                     ORDER BY position LIMIT ?2",
                    params![int(position), i64::from(limit)],
                    audit_from_row,
                )
            })
            .await?;
        assert!(
            entries.windows(2).all(|w| w[0].position < w[1].position)
                && entries.first().is_none_or(|e| e.position > position),
            "an audit page goes up from its cursor"
        );
        Ok(entries)
    }

    async fn audit_of(&self, customer: CustomerId, position: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = limit.min(AUDIT_PAGE_LEN_MAX);
        let entries = self
            .read(move |c, _| {
                rows(
                    c,
                    AUDIT_OF_SQL,
                    params![customer.as_uuid().as_bytes().as_slice(), int(position), i64::from(limit)],
                    audit_from_row,
                )
            })
            .await?;
        assert!(
            entries.windows(2).all(|w| w[0].position < w[1].position)
                && entries.iter().all(|e| e.position > position && e.customer_id == Some(customer)),
            "a customer's audit page goes up from its cursor and names only them"
        );
        Ok(entries)
    }

    async fn audit_end(&self) -> Result<u64, StoreError> {
        self.read(move |c, _| {
            let end = row(c, "SELECT COALESCE(MAX(position), 0) FROM audit", [], |r| {
                let v: i64 = r.get(0).map_err(sql_err)?;
                u64::try_from(v).map_err(|_| corrupt("audit position"))
            })?;
            Ok(end.unwrap_or(0))
        })
        .await
    }

    async fn put_transient(&self, record: Transient) -> Result<(), StoreError> {
        bp_core::transient::check_new(&record)?;
        // A taken (kind, key) meets the primary key: `sql_err` answers `Conflict`.
        self.security_write(move |c| {
            execute(
                c,
                "INSERT INTO transients (kind, key, value, expires_at, spent) VALUES (?1, ?2, ?3, ?4, 0)",
                params![record.kind.as_str(), record.key, record.value, micros(record.expires_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn transient(&self, kind: TransientKind, key: [u8; 32]) -> Result<Option<Transient>, StoreError> {
        self.read(move |c, _| transient_row(c, kind, key)).await
    }

    async fn spend_transient(&self, kind: TransientKind, key: [u8; 32], now: Timestamp) -> Result<Spend, StoreError> {
        self.security_write(move |c| {
            let spend = spend_of(transient_row(c, kind, key)?.as_ref(), now);
            if matches!(spend, Spend::First(_)) {
                execute(
                    c,
                    "UPDATE transients SET spent = 1 WHERE kind = ?1 AND key = ?2",
                    params![kind.as_str(), key],
                )?;
            }
            Ok(spend)
        })
        .await
    }

    async fn sweep_transients(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.security_write(move |c| {
            let n = execute(c, "DELETE FROM transients WHERE expires_at < ?1", params![micros(before)])?;
            let m = execute(c, "DELETE FROM shared_states WHERE expires_at < ?1", params![micros(before)])?;
            Ok(u64::try_from(n + m).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn shared_state(&self, kind: StateKind, key: [u8; 32]) -> Result<Option<SharedState>, StoreError> {
        self.read(move |c, _| shared_state_row(c, kind, key)).await
    }

    async fn swap_shared_state(
        &self,
        kind: StateKind,
        key: [u8; 32],
        expected: u64,
        value: Vec<u8>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        bp_core::transient::check_swap(expected, &value)?;
        let version = i64::try_from(expected + 1).map_err(|_| corrupt("shared state version"))?;
        self.security_write(move |c| {
            if !bp_core::transient::swaps(shared_state_row(c, kind, key)?.as_ref(), expected) {
                return Ok(false);
            }
            execute(
                c,
                "INSERT INTO shared_states (kind, key, version, value, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (kind, key) DO UPDATE SET version = excluded.version, value = excluded.value, \
                 expires_at = excluded.expires_at",
                params![kind.as_str(), key, version, value, micros(expires_at)],
            )?;
            Ok(true)
        })
        .await
    }
}

/// The shared state of `kind` and `key`.
fn shared_state_row(c: &Connection, kind: StateKind, key: [u8; 32]) -> Result<Option<SharedState>, StoreError> {
    row(
        c,
        "SELECT version, value, expires_at FROM shared_states WHERE kind = ?1 AND key = ?2",
        params![kind.as_str(), key],
        |r| {
            Ok(SharedState {
                kind,
                key,
                version: u64::try_from(r.get::<_, i64>(0).map_err(sql_err)?)
                    .map_err(|_| corrupt("shared state version"))?,
                value: r.get(1).map_err(sql_err)?,
                expires_at: time(r.get(2).map_err(sql_err)?)?,
            })
        },
    )
}

/// The transient record of `kind` and `key`.
fn transient_row(c: &Connection, kind: TransientKind, key: [u8; 32]) -> Result<Option<Transient>, StoreError> {
    row(
        c,
        "SELECT value, expires_at, spent FROM transients WHERE kind = ?1 AND key = ?2",
        params![kind.as_str(), key],
        |r| {
            Ok(Transient {
                kind,
                key,
                value: r.get(0).map_err(sql_err)?,
                expires_at: time(r.get(1).map_err(sql_err)?)?,
                spent: r.get::<_, i64>(2).map_err(sql_err)? == 1,
            })
        },
    )
}
