//! The security records on MongoDB ([`SecurityStore`]), correct with several processes on one
//! database without multi-document transactions.
//!
//! Every change that must happen once is the insert of a document whose `_id` names it, the
//! one write FerretDB 1.24 makes atomic (its unique index): FerretDB performs an update, a
//! `findAndModify` included, as a read and then a write of the whole document, so two
//! concurrent conditional updates can both succeed. So a refresh token is used by inserting
//! `token_uses/<hash>`, a reuse is reported once by inserting `token_reuses/<hash>`, a session
//! is revoked by inserting `revoked_sessions/<session>`, and a challenge ends (answered or
//! failed) by inserting `challenge_ends/<id>`; a record's state is read as its stored document
//! together with those. Records are otherwise stored whole (`record`, through serde) beside
//! the few fields their queries filter or sort on: the customer, a time in microseconds
//! (`at_us`: a `Timestamp` is a string in BSON, which does not sort as the time does) and
//! `seq`, the order added in (ties of `created_at` keep it).
//!
//! What is still an update, and so not atomic on FerretDB (it is on MongoDB): counting a wrong
//! answer to a challenge (two at once may count once), a session's last activity (`$max`),
//! device revocation and the order counter (two adds at once may share a `seq`).

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use bp_core::Timestamp;
use bp_core::error::{StoreError, StoreErrorKind};
use bp_core::ids::{BeneficiaryId, ChallengeId, CustomerId, DeviceId, PasskeyId, SessionId};
use bp_core::security::{
    AUDIT_PAGE_LEN_MAX, AuditEntry, Beneficiary, ChallengeAnswer, ChallengeState, Credentials, Device, PHOTO_BYTES_MAX,
    Passkey, Photo, RefreshToken, RefreshTokenState, Rotation, ScaChallenge, ScaMethod, SecurityState, SecurityStore,
    answer_of, count_failure, rotation_of, successor_fits,
};
use bp_core::transient::{SharedState, Spend, StateKind, Transient, TransientKind};
use mongodb::bson::{self, Bson, Document, doc, spec::BinarySubtype};
use mongodb::options::{FindOptions, IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::docs::batch_id;
use super::log::max_upsert;
use super::{MongoStore, is_duplicate_key, mongo_err, to_i64};

/// Most times a rotation or a challenge's replacement reads again after losing a race to a
/// concurrent change of the same document; each loss means another caller's change landed.
const RACES_MAX: usize = 16;

/// The counter document that holds a recent end of the audit log, where `audit_end` starts.
const AUDIT_END: &str = "audit_end";

/// One stored record and the fields its queries use.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Rec<T> {
    #[serde(rename = "_id")]
    id: String,
    record: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    customer: Option<String>,
    /// A time in microseconds since the epoch: creation, revocation, expiry, as each collection says.
    #[serde(default)]
    at_us: i64,
    /// The order added in.
    #[serde(default)]
    seq: i64,
    /// A secondary key: a token's session, a passkey's credential id in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl<T> Rec<T> {
    fn new(id: impl ToString, record: T) -> Self {
        Self { id: id.to_string(), record, customer: None, at_us: 0, seq: 0, key: None }
    }
}

/// A stored photo: its bytes as BSON binary, not an array of numbers.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PhotoDoc {
    #[serde(rename = "_id")]
    id: String,
    content_type: String,
    bytes: bson::Binary,
}

/// A session's last activity, collection `session_activity`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ActivityDoc {
    #[serde(rename = "_id")]
    id: String,
    active_us: i64,
}

/// A revoked session, collection `revoked_sessions`: its insert is the revocation.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RevokedDoc {
    #[serde(rename = "_id")]
    id: String,
    revoked_us: i64,
}

/// A claim, whose insert is the one change it names: a token used, a reuse reported.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ClaimDoc {
    #[serde(rename = "_id")]
    id: String,
}

/// How a challenge ended, collection `challenge_ends`: its insert ends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct EndDoc {
    #[serde(rename = "_id")]
    id: String,
    state: ChallengeState,
}

/// A transient record, collection `transients`, `_id` = `<kind>/<key in hex>`; it is spent
/// when `transient_spends` holds its `_id` (that insert is the spend).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TransientDoc {
    #[serde(rename = "_id")]
    id: String,
    value: bson::Binary,
    expires_us: i64,
}

/// One version of a shared state, collection `shared_states`, `_id` =
/// `<kind>/<key in hex>/<version, 20 digits>`: a swap inserts the next version, the one write
/// made atomic by the unique `_id`, so of two swaps from one version one lands. Versions are kept
/// until they end; the newest is the state.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StateDoc {
    #[serde(rename = "_id")]
    id: String,
    value: bson::Binary,
    expires_us: i64,
}

/// The security collections of one database.
#[derive(Clone, Debug)]
pub(crate) struct SecurityColls {
    counters: Collection<Document>,
    credentials: Collection<Rec<Credentials>>,
    devices: Collection<Rec<Device>>,
    tokens: Collection<Rec<RefreshToken>>,
    activity: Collection<ActivityDoc>,
    revoked: Collection<RevokedDoc>,
    uses: Collection<ClaimDoc>,
    reuses: Collection<ClaimDoc>,
    ends: Collection<EndDoc>,
    challenges: Collection<Rec<ScaChallenge>>,
    passkeys: Collection<Rec<Passkey>>,
    beneficiaries: Collection<Rec<Beneficiary>>,
    states: Collection<Rec<SecurityState>>,
    photos: Collection<PhotoDoc>,
    audit: Collection<Rec<AuditEntry>>,
    transients: Collection<TransientDoc>,
    spends: Collection<ClaimDoc>,
    states_shared: Collection<StateDoc>,
}

fn us(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

fn from_us(micros: i64) -> Result<Timestamp, StoreError> {
    chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::new(StoreErrorKind::Corrupt, "a stored time out of range"))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]).map(char::from).collect()
}

fn conflict(message: &'static str) -> StoreError {
    StoreError::new(StoreErrorKind::Conflict, message)
}

/// `value` as the driver writes it in a document: through `bson::to_vec`, which is not
/// human-readable (ids as binary), as the driver's own serializer (`bson::to_bson` is).
fn to_bson<T: Serialize>(value: &T) -> Result<Bson, StoreError> {
    #[derive(Serialize)]
    struct Wrapped<'a, T> {
        v: &'a T,
    }
    let invalid =
        |e: bson::ser::Error| StoreError::with_source(StoreErrorKind::InvalidRequest, "not storable as BSON", e);
    let bytes = bson::to_vec(&Wrapped { v: value }).map_err(invalid)?;
    let mut doc = Document::from_reader(bytes.as_slice())
        .map_err(|e| StoreError::with_source(StoreErrorKind::InvalidRequest, "not storable as BSON", e))?;
    Ok(doc.remove("v").unwrap_or(Bson::Null))
}

/// Every document `find` answers, in order.
async fn all<T: DeserializeOwned + Send + Sync>(
    coll: &Collection<T>,
    filter: Document,
    sort: Document,
    limit: Option<i64>,
) -> Result<Vec<T>, StoreError> {
    let options = FindOptions::builder().sort(sort).limit(limit).build();
    let mut cursor = coll.find(filter).with_options(options).await.map_err(mongo_err)?;
    let mut found = Vec::new();
    while cursor.advance().await.map_err(mongo_err)? {
        found.push(cursor.deserialize_current().map_err(mongo_err)?);
    }
    Ok(found)
}

/// Inserts `doc`: true, or false when its `_id` is taken (the change it names was made).
async fn insert_claim<T: Serialize + Send + Sync>(coll: &Collection<T>, doc: &T) -> Result<bool, StoreError> {
    match coll.insert_one(doc).await {
        Ok(_) => Ok(true),
        Err(e) if is_duplicate_key(&e) => Ok(false),
        Err(e) => Err(mongo_err(e)),
    }
}

impl SecurityColls {
    pub(crate) fn new(db: &Database) -> Self {
        Self {
            counters: db.collection("counters"),
            credentials: db.collection("credentials"),
            devices: db.collection("devices"),
            tokens: db.collection("refresh_tokens"),
            activity: db.collection("session_activity"),
            revoked: db.collection("revoked_sessions"),
            uses: db.collection("token_uses"),
            reuses: db.collection("token_reuses"),
            ends: db.collection("challenge_ends"),
            challenges: db.collection("challenges"),
            passkeys: db.collection("passkeys"),
            beneficiaries: db.collection("beneficiaries"),
            states: db.collection("security_states"),
            photos: db.collection("photos"),
            audit: db.collection("audit"),
            transients: db.collection("transients"),
            spends: db.collection("transient_spends"),
            states_shared: db.collection("shared_states"),
        }
    }

    /// Creates the secondary indexes (idempotent): the unique credential id of passkeys, which
    /// `add_passkey` relies on, and the lookups by customer, session and time.
    pub(crate) async fn create_indexes(&self, db: &Database) -> Result<(), StoreError> {
        let unique = IndexOptions::builder().unique(true).build();
        let passkey_key = IndexModel::builder().keys(doc! { "key": 1 }).options(unique).build();
        self.passkeys.create_index(passkey_key).await.map_err(mongo_err)?;
        for (name, keys) in [
            (self.devices.name(), doc! { "customer": 1, "at_us": 1, "seq": 1 }),
            (self.passkeys.name(), doc! { "customer": 1, "at_us": 1, "seq": 1 }),
            (self.beneficiaries.name(), doc! { "customer": 1, "at_us": 1, "seq": 1 }),
            (self.tokens.name(), doc! { "key": 1 }),
            (self.revoked.name(), doc! { "revoked_us": 1 }),
            (self.audit.name(), doc! { "customer": 1, "_id": 1 }),
            (self.transients.name(), doc! { "expires_us": 1 }),
            (self.states_shared.name(), doc! { "expires_us": 1 }),
        ] {
            let model = IndexModel::builder().keys(keys).build();
            db.collection::<Document>(name).create_index(model).await.map_err(mongo_err)?;
        }
        Ok(())
    }

    /// The next number of counter `name` (1, 2, …), for the order records were added in.
    async fn next_seq(&self, name: &str) -> Result<i64, StoreError> {
        for _ in 0..RACES_MAX {
            let found = self
                .counters
                .find_one_and_update(doc! { "_id": name }, doc! { "$inc": { "n": 1_i64 } })
                .return_document(ReturnDocument::After)
                .await
                .map_err(mongo_err)?;
            if let Some(d) = found {
                return d.get_i64("n").map_err(|e| StoreError::with_source(StoreErrorKind::Corrupt, "a counter", e));
            }
            // The first number: inserted, unless a concurrent first took it (then count on).
            match self.counters.insert_one(doc! { "_id": name, "n": 1_i64 }).await {
                Ok(_) => return Ok(1),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(mongo_err(e)),
            }
        }
        Err(StoreError::new(StoreErrorKind::Unavailable, "the counter kept meeting a taken id"))
    }

    async fn session_revoked(&self, session: SessionId) -> Result<bool, StoreError> {
        Ok(self.revoked.find_one(doc! { "_id": session.to_string() }).await.map_err(mongo_err)?.is_some())
    }

    /// Revokes `session` at `at` by inserting its revocation; false when it was revoked. Then
    /// marks the tokens it had revoked (a token stored after the revocation keeps its state, as
    /// in every store; `rotation_of` refuses it all the same). That marking is an update: a
    /// crash before it, or a successor stored while it runs on FerretDB, leaves a token that
    /// reads active but never rotates, the session's revocation being the one that decides.
    async fn revoke(&self, session: SessionId, at: Timestamp) -> Result<bool, StoreError> {
        let doc = RevokedDoc { id: session.to_string(), revoked_us: us(at) };
        if !insert_claim(&self.revoked, &doc).await? {
            return Ok(false);
        }
        self.tokens
            .update_many(doc! { "key": session.to_string() }, doc! { "$set": { "record.state": "revoked" } })
            .await
            .map_err(mongo_err)?;
        Ok(true)
    }

    /// Whether `hash` is stored as used.
    async fn claimed(coll: &Collection<ClaimDoc>, id: &str) -> Result<bool, StoreError> {
        Ok(coll.find_one(doc! { "_id": id }).await.map_err(mongo_err)?.is_some())
    }

    /// The token hashed `id`: used once its use is claimed, else as stored.
    async fn token(&self, id: &str) -> Result<Option<RefreshToken>, StoreError> {
        let Some(mut token) = self.tokens.find_one(doc! { "_id": id }).await.map_err(mongo_err)?.map(|r| r.record)
        else {
            return Ok(None);
        };
        if token.state == RefreshTokenState::Active && Self::claimed(&self.uses, id).await? {
            token.state = RefreshTokenState::Used;
        }
        Ok(Some(token))
    }

    /// The challenge `id` with how it ended, if it did.
    async fn challenge(&self, id: &str) -> Result<Option<ScaChallenge>, StoreError> {
        let Some(mut c) = self.challenges.find_one(doc! { "_id": id }).await.map_err(mongo_err)?.map(|r| r.record)
        else {
            return Ok(None);
        };
        if let Some(end) = self.ends.find_one(doc! { "_id": id }).await.map_err(mongo_err)? {
            c.state = end.state;
        }
        Ok(Some(c))
    }

    /// Ends challenge `c` in `state` unless it has ended: whether this call ended it.
    async fn end(&self, c: &ScaChallenge, state: ChallengeState) -> Result<bool, StoreError> {
        insert_claim(&self.ends, &EndDoc { id: c.id.to_string(), state }).await
    }
}

impl MongoStore {
    fn sec(&self) -> &SecurityColls {
        &self.shared.security
    }
}

/// A record of a customer's, timed and numbered in the order added.
fn owned<T>(id: impl ToString, record: T, customer: CustomerId, at: Timestamp, seq: i64) -> Rec<T> {
    Rec { customer: Some(customer.to_string()), at_us: us(at), seq, ..Rec::new(id, record) }
}

fn by_customer(customer: CustomerId) -> Document {
    doc! { "customer": customer.to_string() }
}

fn oldest_first() -> Document {
    doc! { "at_us": 1, "seq": 1 }
}

fn records<T>(recs: Vec<Rec<T>>) -> Vec<T> {
    recs.into_iter().map(|r| r.record).collect()
}

fn page_limit(limit: u32) -> i64 {
    i64::from(limit.min(AUDIT_PAGE_LEN_MAX))
}

#[async_trait]
impl SecurityStore for MongoStore {
    async fn put_credentials(&self, credentials: Credentials) -> Result<(), StoreError> {
        let rec = Rec::new(credentials.customer_id, credentials);
        let filter = doc! { "_id": &rec.id };
        self.sec().credentials.replace_one(filter, &rec).upsert(true).await.map_err(mongo_err)?;
        Ok(())
    }

    async fn credentials(&self, customer: CustomerId) -> Result<Option<Credentials>, StoreError> {
        let found = self.sec().credentials.find_one(doc! { "_id": customer.to_string() }).await.map_err(mongo_err)?;
        Ok(found.map(|r| r.record))
    }

    async fn add_device(&self, device: Device) -> Result<(), StoreError> {
        let seq = self.sec().next_seq("devices").await?;
        let rec = owned(device.id, device.clone(), device.customer_id, device.created_at, seq);
        match self.sec().devices.insert_one(&rec).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(conflict("a device with this id exists")),
            Err(e) => Err(mongo_err(e)),
        }
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        Ok(self.sec().devices.find_one(doc! { "_id": id.to_string() }).await.map_err(mongo_err)?.map(|r| r.record))
    }

    async fn devices_of(&self, customer: CustomerId) -> Result<Vec<Device>, StoreError> {
        Ok(records(all(&self.sec().devices, by_customer(customer), oldest_first(), None).await?))
    }

    async fn revoke_device(&self, customer: CustomerId, id: DeviceId, at: Timestamp) -> Result<bool, StoreError> {
        let filter = doc! { "_id": id.to_string(), "customer": customer.to_string(), "record.revoked_at": Bson::Null };
        let update = doc! { "$set": { "record.revoked_at": to_bson(&at)? } };
        let r = self.sec().devices.update_one(filter, update).await.map_err(mongo_err)?;
        Ok(r.modified_count == 1)
    }

    async fn insert_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
        let rec = Rec { key: Some(token.session.to_string()), ..Rec::new(hex(&token.hash), token) };
        match self.sec().tokens.insert_one(&rec).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(conflict("a refresh token with this hash exists")),
            Err(e) => Err(mongo_err(e)),
        }
    }

    /// Reads the token and decides with `rotation_of`, then makes the decision true with one
    /// insert of a claim, or reads again if another caller made its claim first:
    /// - `Rotated`: the successor is inserted (known to no one yet: its token is this call's
    ///   answer), then the old token's use is claimed. A lost claim deletes the successor and
    ///   reads again (now used). A crash between the two leaves a successor no one holds.
    /// - `Reused`: the reuse is claimed; only the claimant answers `Reused`, the others
    ///   `Revoked`, so one reuse is reported once. Every one of them revokes the session (an
    ///   insert, the first one counts), so a crash after the claim heals on the next try.
    async fn rotate_refresh_token(
        &self,
        old: [u8; 32],
        new: RefreshToken,
        now: Timestamp,
    ) -> Result<Rotation, StoreError> {
        let old_id = hex(&old);
        for _ in 0..RACES_MAX {
            let stored = self.sec().token(&old_id).await?;
            let revoked = match &stored {
                Some(t) => self.sec().session_revoked(t.session).await?,
                None => false,
            };
            let rotation = rotation_of(stored.as_ref(), revoked, now);
            match &rotation {
                Rotation::Rotated(stored) => {
                    let taken = self.sec().tokens.find_one(doc! { "_id": hex(&new.hash) }).await.map_err(mongo_err)?;
                    successor_fits(stored, &new, taken.is_some())?;
                    self.insert_refresh_token(new.clone()).await?;
                    if insert_claim(&self.sec().uses, &ClaimDoc { id: old_id.clone() }).await? {
                        return Ok(rotation);
                    }
                    self.sec().tokens.delete_one(doc! { "_id": hex(&new.hash) }).await.map_err(mongo_err)?;
                }
                Rotation::Reused { session, .. } => {
                    let first = insert_claim(&self.sec().reuses, &ClaimDoc { id: old_id.clone() }).await?;
                    self.sec().revoke(*session, now).await?;
                    return Ok(if first { rotation } else { Rotation::Revoked });
                }
                Rotation::Revoked | Rotation::Expired | Rotation::Unknown => return Ok(rotation),
            }
        }
        Err(StoreError::new(StoreErrorKind::Overloaded, "the refresh token kept changing under its rotation"))
    }

    async fn refresh_token(&self, hash: [u8; 32]) -> Result<Option<RefreshToken>, StoreError> {
        self.sec().token(&hex(&hash)).await
    }

    async fn revoke_session(&self, session: SessionId, at: Timestamp) -> Result<bool, StoreError> {
        self.sec().revoke(session, at).await
    }

    async fn sessions_revoked_since(&self, since: Timestamp) -> Result<Vec<SessionId>, StoreError> {
        let found = all(&self.sec().revoked, doc! { "revoked_us": { "$gte": us(since) } }, doc! {}, None).await?;
        found
            .into_iter()
            .map(|s| s.id.parse().map_err(|_| StoreError::new(StoreErrorKind::Corrupt, "a session id")))
            .collect()
    }

    async fn record_session_activity(&self, session: SessionId, at: Timestamp) -> Result<(), StoreError> {
        max_upsert(&self.sec().activity, &session.to_string(), "active_us", us(at)).await
    }

    async fn session_active_at(&self, session: SessionId) -> Result<Option<Timestamp>, StoreError> {
        let found = self.sec().activity.find_one(doc! { "_id": session.to_string() }).await.map_err(mongo_err)?;
        found.map(|s| from_us(s.active_us)).transpose()
    }

    /// Refused once the challenge has ended; otherwise the record is replaced, or inserted.
    /// (An answer that ends it meanwhile still ends it: its end is its own document.)
    async fn put_challenge(&self, challenge: ScaChallenge) -> Result<(), StoreError> {
        let rec = Rec { at_us: us(challenge.expires_at), ..Rec::new(challenge.id, challenge.clone()) };
        for _ in 0..RACES_MAX {
            if self.sec().ends.find_one(doc! { "_id": &rec.id }).await.map_err(mongo_err)?.is_some() {
                return Err(StoreError::new(
                    StoreErrorKind::InvalidRequest,
                    "a challenge that is no longer open cannot be replaced",
                ));
            }
            let r = self.sec().challenges.replace_one(doc! { "_id": &rec.id }, &rec).await.map_err(mongo_err)?;
            if r.matched_count == 1 || insert_claim(&self.sec().challenges, &rec).await? {
                return Ok(());
            }
        }
        Err(StoreError::new(StoreErrorKind::Overloaded, "the challenge kept changing under its replacement"))
    }

    async fn challenge(&self, id: ChallengeId) -> Result<Option<ScaChallenge>, StoreError> {
        self.sec().challenge(&id.to_string()).await
    }

    /// `answer_of` on the challenge as it is, then the insert of its end: of concurrent
    /// answers (or an answer and its last wrong one) exactly one ends it.
    async fn answer_challenge(
        &self,
        id: ChallengeId,
        method: ScaMethod,
        device_id: Option<DeviceId>,
        now: Timestamp,
    ) -> Result<ChallengeAnswer, StoreError> {
        let Some(mut c) = self.sec().challenge(&id.to_string()).await? else { return Ok(ChallengeAnswer::Unknown) };
        if !answer_of(&c, now) {
            return Ok(ChallengeAnswer::Refused(c));
        }
        let answered = ChallengeState::Answered { at: now, method, device_id };
        if self.sec().end(&c, answered).await? {
            c.state = answered;
            return Ok(ChallengeAnswer::Accepted(c));
        }
        Ok(match self.sec().challenge(&id.to_string()).await? {
            Some(c) => ChallengeAnswer::Refused(c),
            None => ChallengeAnswer::Unknown,
        })
    }

    /// `count_failure` on the challenge as it is: the count is written back (an update, see
    /// the module's note), and the failure that reaches `failures_max` ends it by an insert.
    async fn fail_challenge(&self, id: ChallengeId, failures_max: u32) -> Result<Option<ScaChallenge>, StoreError> {
        let key = id.to_string();
        let Some(mut c) = self.sec().challenge(&key).await? else { return Ok(None) };
        let before = c.failures;
        if !count_failure(&mut c, failures_max) {
            return Ok(Some(c));
        }
        let filter = doc! { "_id": &key, "record.failures": i64::from(before) };
        let update = doc! { "$set": { "record.failures": i64::from(c.failures) } };
        self.sec().challenges.update_one(filter, update).await.map_err(mongo_err)?;
        if c.state == ChallengeState::Failed && !self.sec().end(&c, ChallengeState::Failed).await? {
            return self.sec().challenge(&key).await;
        }
        Ok(Some(c))
    }

    /// One insert: the `_id` is the passkey's id and a unique index holds its credential id,
    /// so a taken one of either is a duplicate key.
    async fn add_passkey(&self, passkey: Passkey) -> Result<(), StoreError> {
        let seq = self.sec().next_seq("passkeys").await?;
        let mut rec = owned(passkey.id, passkey.clone(), passkey.customer_id, passkey.created_at, seq);
        rec.key = Some(hex(&passkey.credential_id));
        match self.sec().passkeys.insert_one(&rec).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(conflict("a passkey with this id or credential id exists")),
            Err(e) => Err(mongo_err(e)),
        }
    }

    async fn passkeys_of(&self, customer: CustomerId) -> Result<Vec<Passkey>, StoreError> {
        Ok(records(all(&self.sec().passkeys, by_customer(customer), oldest_first(), None).await?))
    }

    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<Passkey>, StoreError> {
        let found = self.sec().passkeys.find_one(doc! { "key": hex(credential_id) }).await.map_err(mongo_err)?;
        Ok(found.map(|r| r.record))
    }

    async fn passkey_used(
        &self,
        id: PasskeyId,
        credential: serde_json::Value,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let update =
            doc! { "$set": { "record.credential": to_bson(&credential)?, "record.last_used_at": to_bson(&at)? } };
        let r = self.sec().passkeys.update_one(doc! { "_id": id.to_string() }, update).await.map_err(mongo_err)?;
        Ok(r.matched_count == 1)
    }

    async fn remove_passkey(&self, customer: CustomerId, id: PasskeyId) -> Result<bool, StoreError> {
        let filter = doc! { "_id": id.to_string(), "customer": customer.to_string() };
        Ok(self.sec().passkeys.delete_one(filter).await.map_err(mongo_err)?.deleted_count == 1)
    }

    /// One upsert; the order it was first added in is set on insert only.
    async fn put_beneficiary(&self, beneficiary: Beneficiary) -> Result<(), StoreError> {
        let seq = self.sec().next_seq("beneficiaries").await?;
        let update = doc! {
            "$set": {
                "record": to_bson(&beneficiary)?,
                "customer": beneficiary.customer_id.to_string(),
                "at_us": us(beneficiary.created_at),
            },
            "$setOnInsert": { "seq": seq },
        };
        let filter = doc! { "_id": beneficiary.id.to_string() };
        for _ in 0..2 {
            match self.sec().beneficiaries.update_one(filter.clone(), update.clone()).upsert(true).await {
                Ok(_) => return Ok(()),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(mongo_err(e)),
            }
        }
        Err(StoreError::new(StoreErrorKind::Unavailable, "the beneficiary's upsert kept meeting a taken id"))
    }

    async fn beneficiary(&self, id: BeneficiaryId) -> Result<Option<Beneficiary>, StoreError> {
        let found = self.sec().beneficiaries.find_one(doc! { "_id": id.to_string() }).await.map_err(mongo_err)?;
        Ok(found.map(|r| r.record))
    }

    async fn beneficiaries_of(&self, customer: CustomerId) -> Result<Vec<Beneficiary>, StoreError> {
        Ok(records(all(&self.sec().beneficiaries, by_customer(customer), oldest_first(), None).await?))
    }

    async fn delete_beneficiary(&self, customer: CustomerId, id: BeneficiaryId) -> Result<bool, StoreError> {
        let filter = doc! { "_id": id.to_string(), "customer": customer.to_string() };
        Ok(self.sec().beneficiaries.delete_one(filter).await.map_err(mongo_err)?.deleted_count == 1)
    }

    async fn security_state(&self, customer: CustomerId) -> Result<SecurityState, StoreError> {
        let found = self.sec().states.find_one(doc! { "_id": customer.to_string() }).await.map_err(mongo_err)?;
        Ok(found.map(|r| r.record).unwrap_or_default())
    }

    async fn put_security_state(&self, customer: CustomerId, state: SecurityState) -> Result<(), StoreError> {
        let rec = Rec::new(customer, state);
        self.sec().states.replace_one(doc! { "_id": &rec.id }, &rec).upsert(true).await.map_err(mongo_err)?;
        Ok(())
    }

    async fn put_photo(&self, customer: CustomerId, photo: Photo) -> Result<(), StoreError> {
        if photo.bytes.len() > PHOTO_BYTES_MAX {
            return Err(StoreError::new(StoreErrorKind::InvalidRequest, "photo too large"));
        }
        let doc = PhotoDoc {
            id: customer.to_string(),
            content_type: photo.content_type,
            bytes: bson::Binary { subtype: BinarySubtype::Generic, bytes: photo.bytes },
        };
        self.sec().photos.replace_one(doc! { "_id": &doc.id }, &doc).upsert(true).await.map_err(mongo_err)?;
        Ok(())
    }

    async fn photo(&self, customer: CustomerId) -> Result<Option<Photo>, StoreError> {
        let found = self.sec().photos.find_one(doc! { "_id": customer.to_string() }).await.map_err(mongo_err)?;
        Ok(found.map(|d| Photo { content_type: d.content_type, bytes: d.bytes.bytes }))
    }

    /// Appends as the ledger's log commits: the entry is inserted under `_id` = the next
    /// position, and a taken one means another process appended there, so the next is tried.
    /// An entry is only ever inserted right after one that exists, so the log has no holes and
    /// a reader that read up to some position never misses one inserted below it later.
    async fn append_audit(&self, mut entry: AuditEntry) -> Result<u64, StoreError> {
        let mut position = self.audit_end().await? + 1;
        for _ in 0..RACES_MAX {
            entry.position = position;
            let mut rec = Rec::new(batch_id(position), entry.clone());
            rec.customer = entry.customer_id.map(|c| c.to_string());
            match self.sec().audit.insert_one(&rec).await {
                Ok(_) => {
                    self.shared.audit_hint.fetch_max(position, Ordering::AcqRel);
                    // Only a hint for `audit_end`, which looks past it.
                    max_upsert(&self.sec().counters, AUDIT_END, "n", to_i64(position)?).await?;
                    return Ok(position);
                }
                Err(e) if is_duplicate_key(&e) => position += 1,
                Err(e) => return Err(mongo_err(e)),
            }
        }
        Err(StoreError::new(StoreErrorKind::Overloaded, "the audit log kept growing under this append"))
    }

    async fn audit_after(&self, position: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        // A limit of 0 is no limit to the server.
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = doc! { "_id": { "$gt": batch_id(position) } };
        let found = all(&self.sec().audit, filter, doc! { "_id": 1 }, Some(page_limit(limit))).await?;
        Ok(contiguous(position, records(found)))
    }

    async fn audit_of(&self, customer: CustomerId, position: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = doc! { "customer": customer.to_string(), "_id": { "$gt": batch_id(position) } };
        let found = all(&self.sec().audit, filter, doc! { "_id": 1 }, Some(page_limit(limit))).await?;
        Ok(records(found))
    }

    /// The highest position this process has seen or the stored hint, then forward one lookup at a time while
    /// the next position is taken (other processes' appends).
    async fn audit_end(&self) -> Result<u64, StoreError> {
        let stored = self.sec().counters.find_one(doc! { "_id": AUDIT_END }).await.map_err(mongo_err)?;
        let stored = stored.and_then(|d| d.get_i64("n").ok()).and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        let mut end = self.shared.audit_hint.load(Ordering::Acquire).max(stored);
        while self.sec().audit.find_one(doc! { "_id": batch_id(end + 1) }).await.map_err(mongo_err)?.is_some() {
            end += 1;
        }
        self.shared.audit_hint.fetch_max(end, Ordering::AcqRel);
        Ok(end)
    }

    async fn put_transient(&self, record: Transient) -> Result<(), StoreError> {
        bp_core::transient::check_new(&record)?;
        let d = TransientDoc {
            id: transient_id(record.kind, record.key),
            value: bson::Binary { subtype: BinarySubtype::Generic, bytes: record.value },
            expires_us: us(record.expires_at),
        };
        match self.sec().transients.insert_one(&d).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(conflict("a transient record with this key exists")),
            Err(e) => Err(mongo_err(e)),
        }
    }

    async fn transient(&self, kind: TransientKind, key: [u8; 32]) -> Result<Option<Transient>, StoreError> {
        let id = transient_id(kind, key);
        let Some(d) = self.sec().transients.find_one(doc! { "_id": &id }).await.map_err(mongo_err)? else {
            return Ok(None);
        };
        let spent = self.sec().spends.find_one(doc! { "_id": &id }).await.map_err(mongo_err)?.is_some();
        Ok(Some(Transient { kind, key, value: d.value.bytes, expires_at: from_us(d.expires_us)?, spent }))
    }

    async fn spend_transient(&self, kind: TransientKind, key: [u8; 32], now: Timestamp) -> Result<Spend, StoreError> {
        let current = self.transient(kind, key).await?;
        let spend = bp_core::transient::spend_of(current.as_ref(), now);
        let Spend::First(spent) = spend else { return Ok(spend) };
        // The claim's insert is the spend: of concurrent spenders, one inserts it.
        if insert_claim(&self.sec().spends, &ClaimDoc { id: transient_id(kind, key) }).await? {
            Ok(Spend::First(spent))
        } else {
            Ok(Spend::Again(spent))
        }
    }

    async fn sweep_transients(&self, before: Timestamp) -> Result<u64, StoreError> {
        let filter = doc! { "expires_us": { "$lt": us(before) } };
        // Shared states: their ended versions, each state counted once.
        let versions = all(&self.sec().states_shared, filter.clone(), doc! { "_id": 1 }, None).await?;
        let ended_states: Vec<String> = versions.into_iter().map(|d| d.id).collect();
        let states = ended_states
            .iter()
            .filter_map(|id| id.rsplit_once('/').map(|(chain, _)| chain))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if !ended_states.is_empty() {
            self.sec().states_shared.delete_many(doc! { "_id": { "$in": &ended_states } }).await.map_err(mongo_err)?;
        }
        let states = u64::try_from(states).unwrap_or(u64::MAX);
        let mut ended = self.sec().transients.find(filter).await.map_err(mongo_err)?;
        let mut ids = Vec::new();
        while ended.advance().await.map_err(mongo_err)? {
            ids.push(ended.deserialize_current().map_err(mongo_err)?.id);
        }
        if ids.is_empty() {
            return Ok(states);
        }
        // The records first: a record is never seen unspent after it was spent (a spend whose
        // record is gone is only an orphan claim, deleted next).
        let deleted = self.sec().transients.delete_many(doc! { "_id": { "$in": &ids } }).await.map_err(mongo_err)?;
        self.sec().spends.delete_many(doc! { "_id": { "$in": &ids } }).await.map_err(mongo_err)?;
        Ok(deleted.deleted_count + states)
    }

    async fn shared_state(&self, kind: StateKind, key: [u8; 32]) -> Result<Option<SharedState>, StoreError> {
        let chain = state_chain(kind, key);
        // The chain's ids sort by version: `/` < `0`, so the range holds this chain's only.
        let filter = doc! { "_id": { "$gt": format!("{chain}/"), "$lt": format!("{chain}0") } };
        let newest = all(&self.sec().states_shared, filter, doc! { "_id": -1 }, Some(1)).await?;
        let Some(d) = newest.into_iter().next() else { return Ok(None) };
        let version =
            d.id.rsplit('/')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| StoreError::new(StoreErrorKind::Corrupt, "a malformed shared state id"))?;
        Ok(Some(SharedState { kind, key, version, value: d.value.bytes, expires_at: from_us(d.expires_us)? }))
    }

    /// A swap that read an old version inserts a version that exists, and loses; a state swept
    /// whole (every version ended) starts again at version 1. Versions are swept one by one as
    /// they end, so a swap could land on a swept older version only if it read that version
    /// after it ended, and then it was as good as none.
    async fn swap_shared_state(
        &self,
        kind: StateKind,
        key: [u8; 32],
        expected: u64,
        value: Vec<u8>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        bp_core::transient::check_swap(expected, &value)?;
        let current = self.shared_state(kind, key).await?;
        if !bp_core::transient::swaps(current.as_ref(), expected) {
            return Ok(false);
        }
        let d = StateDoc {
            id: format!("{}/{:020}", state_chain(kind, key), expected + 1),
            value: bson::Binary { subtype: BinarySubtype::Generic, bytes: value },
            expires_us: us(expires_at),
        };
        insert_claim(&self.sec().states_shared, &d).await
    }
}

fn state_chain(kind: StateKind, key: [u8; 32]) -> String {
    format!("{}/{}", kind.as_str(), hex(&key))
}

fn transient_id(kind: TransientKind, key: [u8; 32]) -> String {
    format!("{}/{}", kind.as_str(), hex(&key))
}

/// The entries of a page that follow `position` without a hole: a hole would be an entry not
/// yet visible, and a reader that moved past it would never see it.
fn contiguous(position: u64, entries: Vec<AuditEntry>) -> Vec<AuditEntry> {
    let Some(first) = position.checked_add(1) else { return Vec::new() };
    entries.into_iter().zip(first..).take_while(|(e, want)| e.position == *want).map(|(e, _)| e).collect()
}
