//! Leases on MongoDB ([`Store::acquire_lease`](bp_core::store::Store::acquire_lease)) without
//! relying on an atomic update, which FerretDB does not make (see `security`).
//!
//! Each grant is a document of collection `leases`, `_id` = `<name>/<token>` with the token
//! zero-padded: a new holder takes token N + 1 by inserting its document, the one write made
//! atomic by the unique `_id`, so two processes cannot both take it. A renewal updates the
//! holder's own grant (only its holder writes it); `<name>` holds the highest token seen, a hint
//! moved forward with `$max`, from which a reader walks up to the newest grant. A renewal that
//! lands after another process read the grant as ended is not lost track of: the other process
//! has inserted N + 1 by then or finds the renewal when it reads; and the holder counts a renewal
//! only if it was acknowledged before its previous end (`bp-server-example`'s job runner), so it
//! never acts on a renewal that came too late.

use bp_core::lease::{self, Lease, LeaseDecision};
use bp_core::{StoreError, StoreErrorKind, Timestamp};
use mongodb::Collection;
use mongodb::bson::{Document, doc};
use serde::{Deserialize, Serialize};

use super::log::max_upsert;
use super::{is_duplicate_key, mongo_err, to_i64};

/// Most grants a lookup walks past the hint, and most inserts lost to other processes in a row.
const LEASE_STEPS_MAX: u32 = 64;

/// One grant of a lease, collection `leases`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct GrantDoc {
    #[serde(rename = "_id")]
    id: String,
    holder: String,
    token: i64,
    /// The end, in microseconds since the epoch (exact, and it sorts).
    expires_us: i64,
}

fn grant_id(name: &str, token: u64) -> String {
    format!("{name}/{token:020}")
}

fn lease_of(name: &str, d: GrantDoc) -> Result<Lease, StoreError> {
    Ok(Lease {
        name: name.to_owned(),
        holder: d.holder,
        token: u64::try_from(d.token).map_err(|_| corrupt())?,
        expires_at: chrono::DateTime::from_timestamp_micros(d.expires_us).ok_or_else(corrupt)?,
    })
}

fn corrupt() -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, "a malformed lease grant")
}

/// The newest grant of `name`, if any.
async fn newest(grants: &Collection<GrantDoc>, name: &str) -> Result<Option<Lease>, StoreError> {
    let hint = grants.clone_with_type::<Document>().find_one(doc! { "_id": name }).await.map_err(mongo_err)?;
    let mut token = hint.and_then(|h| h.get_i64("token").ok()).map_or(0, |t| u64::try_from(t).unwrap_or(0));
    let mut found = match token {
        0 => None,
        t => grants.find_one(doc! { "_id": grant_id(name, t) }).await.map_err(mongo_err)?,
    };
    for _ in 0..LEASE_STEPS_MAX {
        match grants.find_one(doc! { "_id": grant_id(name, token + 1) }).await.map_err(mongo_err)? {
            Some(next) => {
                token += 1;
                found = Some(next);
            }
            None => return found.map(|d| lease_of(name, d)).transpose(),
        }
    }
    Err(StoreError::new(StoreErrorKind::Unavailable, "a lease's grants kept growing while read"))
}

pub(crate) async fn acquire(
    grants: &Collection<GrantDoc>,
    name: &str,
    holder: &str,
    now: Timestamp,
    ms: u32,
) -> Result<Lease, StoreError> {
    lease::check_request(name, holder, Some(ms))?;
    for _ in 0..LEASE_STEPS_MAX {
        let current = newest(grants, name).await?;
        let granted = match lease::decide(current.as_ref(), name, holder, now, ms) {
            LeaseDecision::Held(held) => return Ok(held),
            LeaseDecision::Granted(granted) => granted,
        };
        let expires_us = granted.expires_at.timestamp_micros();
        if current.as_ref().is_some_and(|c| c.token == granted.token) {
            // A renewal: the holder's own grant, which only it writes.
            let id = grant_id(name, granted.token);
            grants
                .update_one(doc! { "_id": &id, "holder": holder }, doc! { "$set": { "expires_us": expires_us } })
                .await
                .map_err(mongo_err)?;
            return Ok(granted);
        }
        let grant = GrantDoc {
            id: grant_id(name, granted.token),
            holder: holder.to_owned(),
            token: to_i64(granted.token)?,
            expires_us,
        };
        match grants.insert_one(&grant).await {
            Ok(_) => {
                max_upsert(grants, name, "token", grant.token).await?;
                return Ok(granted);
            }
            // Another process took this token first: read again.
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(mongo_err(e)),
        }
    }
    Err(StoreError::new(StoreErrorKind::Unavailable, "a lease kept being taken by others"))
}

pub(crate) async fn release(
    grants: &Collection<GrantDoc>,
    name: &str,
    holder: &str,
    token: u64,
    now: Timestamp,
) -> Result<bool, StoreError> {
    lease::check_request(name, holder, None)?;
    if !lease::releases(newest(grants, name).await?.as_ref(), holder, token, now) {
        return Ok(false);
    }
    let id = grant_id(name, token);
    grants
        .update_one(doc! { "_id": id, "holder": holder }, doc! { "$set": { "expires_us": now.timestamp_micros() } })
        .await
        .map_err(mongo_err)?;
    Ok(true)
}

/// The collection of lease grants.
pub(crate) fn grants(db: &mongodb::Database) -> Collection<GrantDoc> {
    db.collection("leases")
}
