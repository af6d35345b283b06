//! Leases: one holder at a time for a job that several server processes could run (the outbox
//! relay, the hold-expiry sweeper, the worker of external payments and loans).
//!
//! A lease is a named record in the store: who holds it, until when, and a fencing token. The
//! rule ([`decide`]) is pure; a store applies it atomically ([`Store::acquire_lease`]). A holder
//! renews its lease well before it ends; a lease not renewed by its end is free, and the next
//! holder's token is higher than every token before it. The token is how a former holder that
//! was paused (a long GC-like stall, a frozen VM) is kept from acting after losing its lease:
//! whatever a job writes is checked where it is written, by a means that orders holders
//! (the relay's cursor only moves forward; a service record is replaced only over the version
//! it was read at; a ledger command is idempotent by its id), so a late write of a former holder
//! changes nothing that its successor did.
//!
//! Time: the store compares the lease's end with the `now` of the process asking, so the
//! processes' clocks must agree to well within the lease's length (NTP keeps them within
//! milliseconds; leases last seconds). A holder counts its lease from *before* it asked, on its
//! own monotonic clock, and stops acting a margin before the end.
//!
//! [`Store::acquire_lease`]: crate::store::Store::acquire_lease

use serde::{Deserialize, Serialize};

use crate::{StoreError, StoreErrorKind, Timestamp};

/// Longest lease name and holder name, in bytes.
pub const LEASE_NAME_LEN_MAX: usize = 64;
/// Shortest and longest lease length, in milliseconds.
pub const LEASE_MS_MIN: u32 = 100;
/// Longest lease length, in milliseconds (ten minutes).
pub const LEASE_MS_MAX: u32 = 600_000;

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The job it is for, such as `relay`.
    pub name: String,
    /// Who holds it (one process: unique per start).
    pub holder: String,
    /// The fencing token: the same across renewals by one holder, higher for every new holder.
    pub token: u64,
    /// When it ends unless renewed.
    pub expires_at: Timestamp,
}

/// What [`decide`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// `holder` holds the lease (new, renewed or taken over): store it.
    Granted(Lease),
    /// Another holder has it until its end: change nothing.
    Held(Lease),
}

/// Checks a lease or holder name: 1 to 64 bytes of ASCII letters, digits, `.`, `_`, `-` or `:`.
pub fn check_lease_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= LEASE_NAME_LEN_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::new(
            StoreErrorKind::InvalidRequest,
            format!("a {what} is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-' or ':'"),
        ))
    }
}

/// Checks what a store is asked for a lease: its name and holder ([`check_lease_name`]) and,
/// when it is a request for the lease, its length ([`check_lease_ms`]). Every store calls this
/// first, so that all refuse the same requests.
pub fn check_request(name: &str, holder: &str, ms: Option<u32>) -> Result<(), StoreError> {
    check_lease_name("lease name", name)?;
    check_lease_name("lease holder", holder)?;
    ms.map_or(Ok(()), check_lease_ms)
}

/// Checks a lease length in milliseconds.
pub fn check_lease_ms(ms: u32) -> Result<(), StoreError> {
    if (LEASE_MS_MIN..=LEASE_MS_MAX).contains(&ms) {
        Ok(())
    } else {
        Err(StoreError::new(StoreErrorKind::InvalidRequest, "a lease lasts 100 ms to 10 minutes"))
    }
}

/// The lease `name` after `holder` asks for it at `now` for `ms` milliseconds, given the stored
/// one (`current`): granted when there is none, when `holder` has it (renewed: same token, a
/// new end), or when it has ended (taken over: the next token); otherwise held by the other.
/// The names and length are checked by the caller ([`check_lease_name`], [`check_lease_ms`]).
pub fn decide(current: Option<&Lease>, name: &str, holder: &str, now: Timestamp, ms: u32) -> LeaseDecision {
    let expires_at = now + chrono::Duration::milliseconds(i64::from(ms));
    let token = match current {
        None => 1,
        Some(l) if l.holder == holder && l.expires_at > now => l.token,
        Some(l) if l.expires_at <= now => l.token.saturating_add(1),
        Some(l) => return LeaseDecision::Held(l.clone()),
    };
    LeaseDecision::Granted(Lease { name: name.to_owned(), holder: holder.to_owned(), token, expires_at })
}

/// Whether releasing the lease `token` of `holder` frees `current`: only its own, unexpired.
pub fn releases(current: Option<&Lease>, holder: &str, token: u64, now: Timestamp) -> bool {
    current.is_some_and(|l| l.holder == holder && l.token == token && l.expires_at > now)
}

/// [`Store::acquire_lease`](crate::store::Store::acquire_lease) on leases kept in a map under
/// the caller's lock: checks the arguments, decides, and stores a grant.
pub fn acquire_in(
    leases: &mut std::collections::HashMap<String, Lease>,
    name: &str,
    holder: &str,
    now: Timestamp,
    ms: u32,
) -> Result<Lease, StoreError> {
    check_request(name, holder, Some(ms))?;
    match decide(leases.get(name), name, holder, now, ms) {
        LeaseDecision::Granted(lease) => {
            leases.insert(name.to_owned(), lease.clone());
            Ok(lease)
        }
        LeaseDecision::Held(lease) => Ok(lease),
    }
}

/// [`Store::release_lease`](crate::store::Store::release_lease) on leases kept in a map under
/// the caller's lock.
pub fn release_in(
    leases: &mut std::collections::HashMap<String, Lease>,
    name: &str,
    holder: &str,
    token: u64,
    now: Timestamp,
) -> Result<bool, StoreError> {
    check_request(name, holder, None)?;
    let Some(lease) = leases.get_mut(name).filter(|l| releases(Some(l), holder, token, now)) else {
        return Ok(false);
    };
    lease.expires_at = now;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        chrono::DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("time")
    }

    fn granted(d: LeaseDecision) -> Lease {
        match d {
            LeaseDecision::Granted(l) => l,
            LeaseDecision::Held(l) => panic!("held by {}", l.holder),
        }
    }

    #[test]
    fn one_holder_until_the_end_then_the_next_token() {
        let first = granted(decide(None, "relay", "a", at(0), 1_000));
        assert_eq!((first.token, first.expires_at), (1, at(1_000)));
        assert_eq!(decide(Some(&first), "relay", "b", at(999), 1_000), LeaseDecision::Held(first.clone()));
        let renewed = granted(decide(Some(&first), "relay", "a", at(500), 1_000));
        assert_eq!((renewed.token, renewed.expires_at), (1, at(1_500)), "a renewal keeps the token");
        let taken = granted(decide(Some(&renewed), "relay", "b", at(1_500), 1_000));
        assert_eq!((taken.holder.as_str(), taken.token), ("b", 2), "ended: the next holder, the next token");
        let back = granted(decide(Some(&taken), "relay", "a", at(2_500), 1_000));
        assert_eq!(back.token, 3, "a former holder coming back is a new holder");
    }

    #[test]
    fn an_ended_lease_of_ones_own_is_a_new_grant() {
        let first = granted(decide(None, "relay", "a", at(0), 1_000));
        let again = granted(decide(Some(&first), "relay", "a", at(1_000), 1_000));
        assert_eq!(again.token, 2, "it may have lost it in between: its old writes must not pass as new");
    }

    #[test]
    fn release_only_by_the_holder_of_that_token_before_the_end() {
        let l = granted(decide(None, "relay", "a", at(0), 1_000));
        assert!(releases(Some(&l), "a", 1, at(10)));
        assert!(!releases(Some(&l), "b", 1, at(10)));
        assert!(!releases(Some(&l), "a", 2, at(10)));
        assert!(!releases(Some(&l), "a", 1, at(1_000)));
        assert!(!releases(None, "a", 1, at(10)));
    }

    #[test]
    fn names_and_lengths_are_checked() {
        assert!(check_lease_name("lease name", "relay.outbox-1").is_ok());
        assert!(check_lease_name("holder", "host-1:4242:0193aa").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            assert_eq!(check_lease_name("holder", bad).expect_err(bad).kind(), StoreErrorKind::InvalidRequest);
        }
        assert!(check_lease_ms(100).is_ok() && check_lease_ms(600_000).is_ok());
        assert!(check_lease_ms(99).is_err() && check_lease_ms(600_001).is_err());
    }
}
