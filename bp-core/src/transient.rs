//! Transient records: what one request leaves for a later one of the same flow — an
//! authorization code for the token request, a stream ticket for the stream it opens — which
//! another server process may serve. They live seconds to minutes, are spent once, and are kept
//! in the security store ([`SecurityStore::put_transient`]) so that every process sees them.
//!
//! A record is keyed by its kind and the SHA-256 of the secret the client holds (never the
//! secret itself). Spending is the one atomic step ([`spend_of`] is its rule): the first spend
//! gets the record; a later one learns that it was spent (an authorization code presented
//! twice revokes what the first gave).
//!
//! A [`SharedState`] is the other kind of short-lived shared record: a value that processes
//! change in turn — a sign-in going from stage to stage, a count of attempts, a throttle —
//! rather than spend. It changes only by a
//! swap from the version read ([`SecurityStore::swap_shared_state`], ruled by [`swaps`]), so of
//! two processes changing it at once, one wins and the other reads again.
//!
//! [`SecurityStore::put_transient`]: crate::security::SecurityStore::put_transient
//! [`SecurityStore::swap_shared_state`]: crate::security::SecurityStore::swap_shared_state

use serde::{Deserialize, Serialize};

use crate::{StoreError, StoreErrorKind, Timestamp};

/// Largest value of a transient record, in bytes.
pub const TRANSIENT_BYTES_MAX: usize = 16 * 1024;

/// What a transient record is for: part of its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransientKind {
    /// An authorization code, until the token request redeems it.
    AuthorizationCode,
    /// An event-stream ticket, until the stream it opens.
    StreamTicket,
    /// A passkey registration, between its options and the authenticator's answer.
    PasskeyRegistration,
    /// A DPoP proof seen, so that no other process accepts it again (its `jti`, RFC 9449 §11.1).
    DpopProof,
    /// An FX quote a payment abroad took: no other payment may convert at it
    /// ([`crate::external::fx::quote_key`]; the value is the payment's first leg's id).
    FxQuoteUsed,
}

impl TransientKind {
    /// Its stable name in stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::StreamTicket => "stream_ticket",
            Self::PasskeyRegistration => "passkey_registration",
            Self::DpopProof => "dpop_proof",
            Self::FxQuoteUsed => "fx_quote_used",
        }
    }

    /// Every kind.
    pub const ALL: [Self; 5] =
        [Self::AuthorizationCode, Self::StreamTicket, Self::PasskeyRegistration, Self::DpopProof, Self::FxQuoteUsed];

    /// The kind named `name` by [`Self::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// What a shared state is for: part of its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// A sign-in in progress: the authorization request it answers and how far it got.
    SignIn,
    /// Sign-in attempts from one client source in one minute.
    SourceAttempts,
    /// Password attempts for one username in one minute.
    UsernameAttempts,
    /// Failed passwords for one (username, source) pair, as the lockout rule counts them.
    PasswordThrottle,
    /// The sign-ins in progress started from one client source.
    SourceSignIns,
    /// A customer's passkey registrations in progress.
    PasskeyRegistrations,
}

impl StateKind {
    /// Its stable name in stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::SourceAttempts => "source_attempts",
            Self::UsernameAttempts => "username_attempts",
            Self::PasswordThrottle => "password_throttle",
            Self::SourceSignIns => "source_sign_ins",
            Self::PasskeyRegistrations => "passkey_registrations",
        }
    }

    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::SignIn,
        Self::SourceAttempts,
        Self::UsernameAttempts,
        Self::PasswordThrottle,
        Self::SourceSignIns,
        Self::PasskeyRegistrations,
    ];

    /// The kind named `name` by [`Self::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A shared state as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedState {
    /// What it is for.
    pub kind: StateKind,
    /// The SHA-256 of what it is about (a sign-in's id, a source, a username): never that itself.
    pub key: [u8; 32],
    /// Its version: 1 when made, one more at each swap.
    pub version: u64,
    /// The value (the server's own encoding), at most [`TRANSIENT_BYTES_MAX`].
    pub value: Vec<u8>,
    /// From when it is over: the caller reads an ended state as none, and the sweep deletes it.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("kind", &self.kind)
            .field("version", &self.version)
            .field("value_len", &self.value.len())
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The swapping rule every store applies atomically: a swap expecting version `expected` (0: no
/// state) replaces `current` when that is its version, ended or not.
pub fn swaps(current: Option<&SharedState>, expected: u64) -> bool {
    current.map_or(0, |s| s.version) == expected
}

/// Checks a swap's value: `InvalidRequest` over [`TRANSIENT_BYTES_MAX`], or when `expected` is
/// the last version there can be.
pub fn check_swap(expected: u64, value: &[u8]) -> Result<(), StoreError> {
    if value.len() > TRANSIENT_BYTES_MAX {
        return Err(StoreError::new(StoreErrorKind::InvalidRequest, "a shared state over 16 KiB"));
    }
    if expected >= i64::MAX as u64 {
        return Err(StoreError::new(StoreErrorKind::InvalidRequest, "a shared state has no version after this"));
    }
    Ok(())
}

/// A transient record as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Transient {
    /// What it is for.
    pub kind: TransientKind,
    /// The SHA-256 of the secret its client holds.
    pub key: [u8; 32],
    /// What the later request needs (the server's own encoding), at most [`TRANSIENT_BYTES_MAX`].
    pub value: Vec<u8>,
    /// From when it can no longer be spent.
    pub expires_at: Timestamp,
    /// Whether it was spent.
    pub spent: bool,
}

impl std::fmt::Debug for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value may name a customer and a session: only its size is shown.
        f.debug_struct("Transient")
            .field("kind", &self.kind)
            .field("value_len", &self.value.len())
            .field("expires_at", &self.expires_at)
            .field("spent", &self.spent)
            .finish_non_exhaustive()
    }
}

/// What spending a transient record found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spend {
    /// This spend is its first: the record, now spent.
    First(Transient),
    /// It had been spent before (by whoever): the record.
    Again(Transient),
    /// It ended unspent.
    Expired,
    /// There is no such record (never made, or swept).
    Unknown,
}

/// The spending rule every store applies atomically: a spent record stays spent and says so
/// (also once it has expired), an unspent one is spent if it has not expired.
pub fn spend_of(current: Option<&Transient>, now: Timestamp) -> Spend {
    match current {
        None => Spend::Unknown,
        Some(t) if t.spent => Spend::Again(t.clone()),
        Some(t) if t.expires_at <= now => Spend::Expired,
        Some(t) => Spend::First(Transient { spent: true, ..t.clone() }),
    }
}

/// Checks a record to be put: `InvalidRequest` for a value over [`TRANSIENT_BYTES_MAX`] or a
/// record already spent.
pub fn check_new(t: &Transient) -> Result<(), StoreError> {
    if t.value.len() > TRANSIENT_BYTES_MAX {
        return Err(StoreError::new(StoreErrorKind::InvalidRequest, "a transient record over 16 KiB"));
    }
    if t.spent {
        return Err(StoreError::new(StoreErrorKind::InvalidRequest, "a new transient record is unspent"));
    }
    Ok(())
}

/// The things of one kind in progress at once (sign-ins of a source, passkey registrations of a
/// customer), kept as a shared state's value: each an 8-byte id and its end. The rule of
/// "at most so many at a time": ended ones do not count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slots(Vec<([u8; 8], Timestamp)>);

impl Slots {
    /// The slots a shared state's value holds (its trailing bytes, if any, are not a slot).
    pub fn decode(value: &[u8]) -> Self {
        let slots = value
            .chunks_exact(16)
            .filter_map(|c| {
                let id = <[u8; 8]>::try_from(&c[..8]).ok()?;
                let end = i64::from_be_bytes(<[u8; 8]>::try_from(&c[8..]).ok()?);
                Some((id, chrono::DateTime::from_timestamp_micros(end)?))
            })
            .collect();
        Self(slots)
    }

    /// The value that keeps them.
    pub fn encode(&self) -> Vec<u8> {
        self.0.iter().flat_map(|(id, end)| id.iter().copied().chain(end.timestamp_micros().to_be_bytes())).collect()
    }

    /// Takes `slot` until `ends`, unless `max` slots that have not ended at `now` are taken;
    /// whether it was taken. Ended slots are dropped either way.
    pub fn take(&mut self, slot: [u8; 8], ends: Timestamp, max: usize, now: Timestamp) -> bool {
        self.0.retain(|(_, end)| *end > now);
        if self.0.len() >= max {
            return false;
        }
        self.0.push((slot, ends));
        true
    }

    /// Frees `slot`; whether it was taken.
    pub fn free(&mut self, slot: [u8; 8]) -> bool {
        let before = self.0.len();
        self.0.retain(|(id, _)| *id != slot);
        self.0.len() < before
    }

    /// When the last of them ends (the state may be swept then), not before `now`.
    pub fn ends(&self, now: Timestamp) -> Timestamp {
        self.0.iter().map(|(_, end)| *end).max().map_or(now, |last| last.max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    #[test]
    fn spent_once_then_known_as_spent_even_after_its_end() {
        let t = Transient {
            kind: TransientKind::AuthorizationCode,
            key: [7; 32],
            value: b"v".to_vec(),
            expires_at: at(60),
            spent: false,
        };
        assert_eq!(spend_of(None, at(0)), Spend::Unknown);
        let Spend::First(spent) = spend_of(Some(&t), at(59)) else { panic!("first") };
        assert!(spent.spent);
        assert_eq!(spend_of(Some(&spent), at(10)), Spend::Again(spent.clone()));
        assert_eq!(spend_of(Some(&spent), at(600)), Spend::Again(spent.clone()));
        assert_eq!(spend_of(Some(&t), at(60)), Spend::Expired);
    }

    #[test]
    fn kinds_have_stable_names() {
        for kind in TransientKind::ALL {
            assert_eq!(TransientKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(TransientKind::from_name("code"), None);
        for kind in StateKind::ALL {
            assert_eq!(StateKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(StateKind::from_name("authorization_code"), None);
    }

    #[test]
    fn slots_bound_what_is_in_progress_and_ended_ones_free_themselves() {
        let mut slots = Slots::default();
        assert!(slots.take([1; 8], at(60), 2, at(0)));
        assert!(slots.take([2; 8], at(30), 2, at(0)));
        assert!(!slots.take([3; 8], at(60), 2, at(10)), "two at a time");
        assert_eq!(Slots::decode(&slots.encode()), slots);
        assert_eq!(slots.ends(at(0)), at(60));
        assert!(slots.take([3; 8], at(90), 2, at(30)), "the one that ended at 30 no longer counts");
        assert!(slots.free([1; 8]) && !slots.free([1; 8]));
        assert_eq!(slots.ends(at(100)), at(100));
    }

    #[test]
    fn a_swap_expects_the_current_version() {
        let state =
            SharedState { kind: StateKind::SourceAttempts, key: [2; 32], version: 3, value: vec![], expires_at: at(0) };
        assert!(swaps(None, 0));
        assert!(!swaps(None, 1));
        assert!(swaps(Some(&state), 3), "ended or not");
        assert!(!swaps(Some(&state), 2));
        assert!(!swaps(Some(&state), 0));
        assert!(check_swap(0, &[0; TRANSIENT_BYTES_MAX]).is_ok());
        assert_eq!(
            check_swap(0, &[0; TRANSIENT_BYTES_MAX + 1]).expect_err("large").kind(),
            StoreErrorKind::InvalidRequest
        );
        assert_eq!(check_swap(i64::MAX as u64, b"").expect_err("last").kind(), StoreErrorKind::InvalidRequest);
    }

    #[test]
    fn new_records_are_bounded_and_unspent() {
        let mut t = Transient {
            kind: TransientKind::StreamTicket,
            key: [1; 32],
            value: vec![0; 16 * 1024],
            expires_at: at(1),
            spent: false,
        };
        assert!(check_new(&t).is_ok());
        t.value.push(0);
        assert_eq!(check_new(&t).expect_err("too large").kind(), StoreErrorKind::InvalidRequest);
        t.value.pop();
        t.spent = true;
        assert_eq!(check_new(&t).expect_err("spent").kind(), StoreErrorKind::InvalidRequest);
    }
}
