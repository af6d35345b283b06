//! The conformance suite of the [`SecurityStore`] trait: one set of cases, written once, run
//! against every backend (the memory store in bp-core's tests, SQLite in `bp-storage`).
//!
//! A backend plugs in through a [`SecurityStoreFactory`], which makes a fresh, empty store for
//! every case; [`factory_fn`](super::factory_fn) makes one from a closure. The store takes every
//! time as an argument, so the clock the factory is given may be ignored. The
//! [`security_conformance_tests!`](crate::security_conformance_tests) macro expands into one
//! `#[tokio::test]` per case:
//!
//! ```text
//! mod sqlite_security {
//!     bp_core::security_conformance_tests!(bp_core::testing::factory_fn(|_clock| async {
//!         std::sync::Arc::new(my_store_in_a_fresh_file())
//!     }));
//! }
//! ```
//!
//! [`run_all`] runs every case in one test instead, and each case is also a public `async fn`
//! of this module (listed in [`CASES`]). Every case states the exact answer of every call, and
//! after each refused call reads back what the call must not have changed.

// Amounts in the cases are written as major_minor units: `45_00` is 45.00 EUR.
#![allow(clippy::inconsistent_digit_grouping)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use chrono::TimeDelta;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::conformance::Factory;
use super::fixtures::{at, json_map, ok, start_time};
use crate::Timestamp;
use crate::account_number::AccountNumber;
use crate::clock::ManualClock;
use crate::error::{StoreError, StoreErrorKind};
use crate::ids::{BeneficiaryId, ChallengeId, CustomerId, DeviceId, PasskeyId, SessionId, TransferId};
use crate::money::{Currency, Money};
use crate::security::{
    AuditEntry, AuditKind, Beneficiary, BeneficiaryState, ChallengeAnswer, ChallengePurpose, ChallengeState,
    Credentials, Device, PHOTO_BYTES_MAX, Passkey, Photo, RefreshToken, RefreshTokenState, Rotation, ScaChallenge,
    ScaMethod, SecurityState, SecurityStore,
};
use crate::transient::{SharedState, Spend, StateKind, Transient, TransientKind};

/// A [`Factory`] of security stores: the factory of this suite. Every [`Factory`] whose value
/// is a [`SecurityStore`] is one.
pub trait SecurityStoreFactory: Factory<S: SecurityStore> {}

impl<F: Factory<S: SecurityStore>> SecurityStoreFactory for F {}

/// Runs every case of the suite, one after the other, each on a fresh store from `factory`.
/// Panics on the first failure, naming the case.
pub async fn run_all<F: SecurityStoreFactory>(factory: &F) {
    crate::__security_conformance_cases!(@run_all factory);
}

/// The names of the cases, in the order [`run_all`] runs them; each is a function of this module.
pub const CASES: &[&str] = crate::__security_conformance_cases!(@names);

/// Expands into one `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` per case of the
/// security store conformance suite, each on a fresh store from the factory expression (an
/// `impl SecurityStoreFactory`, evaluated once per test). Invoke it inside a module of its own;
/// the crate needs `tokio` (features `macros`, `rt-multi-thread`) as a dev-dependency.
///
/// ```no_run
/// mod memory_security {
///     bp_core::security_conformance_tests!(bp_core::testing::factory_fn(|_| async {
///         std::sync::Arc::new(bp_core::security::MemorySecurityStore::new())
///     }));
/// }
/// ```
#[macro_export]
macro_rules! security_conformance_tests {
    ($factory:expr) => {
        $crate::__security_conformance_cases!(@tests ($factory));
    };
}

/// The list of cases, written once for [`run_all`], [`CASES`] and
/// [`security_conformance_tests!`](crate::security_conformance_tests); see
/// [`conformance`](super::conformance) for the expansions.
#[doc(hidden)]
#[macro_export]
macro_rules! __security_conformance_cases {
    ($($mode:tt)*) => {
        $crate::__conformance! { $($mode)* "security store" [$crate::testing::security]
            credentials
            devices
            refresh_token_rotation
            refresh_token_binding
            refresh_token_reuse
            refresh_token_refusals
            session_revocation
            session_revocation_without_tokens
            session_activity
            challenges
            challenge_failures
            beneficiaries
            security_states
            photos
            audit_log
            audit_of_a_customer
            passkeys
            transients
            shared_states
            concurrent_rotation
            concurrent_spend
            concurrent_swap
        }
    };
}

/// Concurrent rotations of one refresh token in [`concurrent_rotation`].
const ROTATION_TASKS: usize = 16;

/// A fresh store from `factory`, checked to be empty.
async fn fresh<F: SecurityStoreFactory>(factory: &F) -> Arc<F::S> {
    // The records take every time as an argument: the clock is only what the factory expects.
    let store = factory.fresh(Arc::new(ManualClock::new(start_time()))).await;
    let audit = ok("audit log of a fresh store", store.audit_after(0, 10).await);
    assert!(audit.is_empty(), "a fresh store must be empty, has audit entries {audit:?}");
    store
}

/// Asserts that `result` is a store error of `kind`.
fn expect_kind<T: Debug>(what: &str, result: Result<T, StoreError>, kind: StoreErrorKind) {
    match result {
        Err(e) if e.kind() == kind => {}
        other => panic!("{what}: expected Err({kind:?}), got {other:?}"),
    }
}

/// A new random token hash (a real one is the SHA-256 of a random token).
fn new_hash() -> [u8; 32] {
    let mut hash = [0; 32];
    hash[..16].copy_from_slice(Uuid::now_v7().as_bytes());
    hash[16..].copy_from_slice(Uuid::now_v7().as_bytes());
    hash
}

/// An active refresh token of `session`, issued at `issued` seconds, valid for an hour.
fn token(session: SessionId, customer: CustomerId, issued: i64) -> RefreshToken {
    RefreshToken {
        hash: new_hash(),
        session,
        customer_id: customer,
        client_id: "bp-mobile".to_owned(),
        scope: "openid accounts payments".to_owned(),
        amr: vec!["pwd".to_owned(), "hwk".to_owned()],
        auth_time: at(0),
        issued_at: at(issued),
        expires_at: at(issued + 3600),
        state: RefreshTokenState::Active,
        dpop_jkt: None,
    }
}

/// `token` in `state`.
fn in_state(token: &RefreshToken, state: RefreshTokenState) -> RefreshToken {
    RefreshToken { state, ..token.clone() }
}

/// Asserts the stored form of each token (`None`: not stored).
async fn expect_tokens<S: SecurityStore + ?Sized>(
    what: &str,
    store: &S,
    expected: &[(&[u8; 32], Option<RefreshToken>)],
) {
    for (i, (hash, token)) in expected.iter().enumerate() {
        assert_eq!(&ok(what, store.refresh_token(**hash).await), token, "{what}: token {i}");
    }
}

/// The sessions revoked since `since`, sorted (the trait does not order them).
async fn revoked_since<S: SecurityStore + ?Sized>(store: &S, since: Timestamp) -> Vec<SessionId> {
    let mut sessions = ok("sessions_revoked_since", store.sessions_revoked_since(since).await);
    sessions.sort_unstable();
    sessions
}

fn sorted(mut sessions: Vec<SessionId>) -> Vec<SessionId> {
    sessions.sort_unstable();
    sessions
}

fn device(customer: CustomerId, name: &str, created: i64) -> Device {
    let mut public_key = vec![0x04];
    public_key.extend((0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(name.bytes().next().unwrap_or(0))));
    Device {
        id: DeviceId::new_v7(),
        customer_id: customer,
        name: name.to_owned(),
        public_key,
        created_at: at(created),
        revoked_at: None,
    }
}

fn account_number(serial: u64) -> AccountNumber {
    ok("account number", AccountNumber::from_serial(serial))
}

fn payment_challenge(customer: CustomerId, created: i64, expires: i64) -> ScaChallenge {
    ScaChallenge {
        id: ChallengeId::new_v7(),
        customer_id: customer,
        purpose: ChallengePurpose::Payment {
            transfer_id: TransferId::new_v7(),
            amount: Money::new(125_00, Currency::EUR),
            payee: account_number(4_200_000_017),
        },
        nonce: "n-7Qx2vK9pLm".to_owned(),
        created_at: at(created),
        expires_at: at(expires),
        failures: 0,
        state: ChallengeState::Open,
    }
}

fn beneficiary_challenge(customer: CustomerId, created: i64, expires: i64) -> ScaChallenge {
    ScaChallenge {
        purpose: ChallengePurpose::Beneficiary {
            beneficiary_id: BeneficiaryId::new_v7(),
            payee: account_number(1_234_567_890),
        },
        nonce: "n-beneficiary".to_owned(),
        ..payment_challenge(customer, created, expires)
    }
}

fn beneficiary(customer: CustomerId, name: &str, serial: u64, created: i64) -> Beneficiary {
    Beneficiary {
        id: BeneficiaryId::new_v7(),
        customer_id: customer,
        name: name.to_owned(),
        account_number: account_number(serial),
        state: BeneficiaryState::Pending,
        created_at: at(created),
        trusted_by: None,
    }
}

/// Credentials: absent, set, replaced, one customer's independent of another's, and a `Debug`
/// form without the password hash or the TOTP secret.
pub async fn credentials<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let (ada, bob) = (CustomerId::new_v7(), CustomerId::new_v7());
    assert_eq!(ok("credentials of nobody", store.credentials(ada).await), None);

    let first = Credentials {
        customer_id: ada,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_owned(),
        totp_secret: Some((1..=20).collect()),
        updated_at: at(0),
    };
    ok("put credentials", store.put_credentials(first.clone()).await);
    assert_eq!(ok("read back", store.credentials(ada).await), Some(first.clone()));
    assert_eq!(ok("another customer's", store.credentials(bob).await), None);

    let replaced = Credentials {
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA".to_owned(),
        totp_secret: None,
        updated_at: at(60),
        ..first.clone()
    };
    ok("replace credentials", store.put_credentials(replaced.clone()).await);
    assert_eq!(ok("read replaced", store.credentials(ada).await), Some(replaced.clone()));

    let bobs = Credentials { customer_id: bob, updated_at: at(90), ..first.clone() };
    ok("put bob's credentials", store.put_credentials(bobs.clone()).await);
    assert_eq!(ok("bob's", store.credentials(bob).await), Some(bobs));
    assert_eq!(ok("ada's unchanged", store.credentials(ada).await), Some(replaced));

    let read = ok("read for Debug", store.credentials(bob).await);
    let shown = format!("{read:?} {first:?} {first:#?}");
    assert!(shown.contains(&ada.to_string()), "Debug names the customer: {shown}");
    // No field of the Debug form is a list, so a `[` would be the TOTP secret's bytes.
    for secret in ["argon2id", "c2FsdHNhbHQ", "aGFzaGhhc2hoYXNo", "["] {
        assert!(!shown.contains(secret), "Debug of credentials shows a secret ({secret:?}): {shown}");
    }
    assert!(shown.contains("<redacted>"), "Debug of credentials says what it hides: {shown}");
}

/// Devices: registered, read, listed oldest first, revoked once and only by their owner; a
/// taken id is refused.
pub async fn devices<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let (ada, bob) = (CustomerId::new_v7(), CustomerId::new_v7());
    assert_eq!(ok("devices of nobody", store.devices_of(ada).await), Vec::new());
    assert_eq!(ok("unknown device", store.device(DeviceId::new_v7()).await), None);

    // Added out of order: the list goes by registration time, ties in the order added.
    let phone = device(ada, "Pixel 9", 20);
    let tablet = device(ada, "iPad", 10);
    let watch = device(ada, "Watch", 20);
    let bobs = device(bob, "iPhone 16", 5);
    for d in [&phone, &tablet, &watch, &bobs] {
        ok("add device", store.add_device(d.clone()).await);
    }
    assert_eq!(ok("read device", store.device(phone.id).await), Some(phone.clone()));
    assert_eq!(ok("read bob's device", store.device(bobs.id).await), Some(bobs.clone()));
    let listed = vec![tablet.clone(), phone.clone(), watch.clone()];
    assert_eq!(ok("ada's devices", store.devices_of(ada).await), listed, "oldest first, ties in the order added");
    assert_eq!(ok("bob's devices", store.devices_of(bob).await), vec![bobs.clone()]);

    let taken = Device { name: "Impostor".to_owned(), customer_id: bob, ..phone.clone() };
    expect_kind("add a device with a taken id", store.add_device(taken).await, StoreErrorKind::Conflict);
    assert_eq!(ok("unchanged after refusal", store.device(phone.id).await), Some(phone.clone()));
    assert_eq!(ok("ada's devices unchanged", store.devices_of(ada).await), listed);
    assert_eq!(ok("bob's devices unchanged", store.devices_of(bob).await), vec![bobs.clone()]);

    assert!(!ok("revoke another customer's device", store.revoke_device(bob, phone.id, at(50)).await));
    assert_eq!(ok("not revoked", store.device(phone.id).await), Some(phone.clone()));
    assert!(!ok("revoke an unknown device", store.revoke_device(ada, DeviceId::new_v7(), at(50)).await));

    assert!(ok("revoke", store.revoke_device(ada, phone.id, at(100)).await));
    let revoked = Device { revoked_at: Some(at(100)), ..phone.clone() };
    assert_eq!(ok("read revoked", store.device(phone.id).await), Some(revoked.clone()));
    assert!(!ok("revoke again", store.revoke_device(ada, phone.id, at(200)).await));
    assert_eq!(ok("first revocation time kept", store.device(phone.id).await), Some(revoked.clone()));
    assert_eq!(
        ok("removed devices stay listed", store.devices_of(ada).await),
        vec![tablet.clone(), revoked, watch.clone()]
    );
    assert_eq!(ok("bob's untouched", store.devices_of(bob).await), vec![bobs]);
}

/// Refresh tokens: stored, rotated (the old one used, its successor active), rotated again down
/// the chain; a taken hash and a successor of another session are refused without a change.
pub async fn refresh_token_rotation<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let ada = CustomerId::new_v7();
    let session = SessionId::new_v7();
    let first = token(session, ada, 0);
    assert_eq!(ok("unknown token", store.refresh_token(first.hash).await), None);
    ok("insert", store.insert_refresh_token(first.clone()).await);
    assert_eq!(ok("read back", store.refresh_token(first.hash).await), Some(first.clone()));

    let duplicate = token(SessionId::new_v7(), CustomerId::new_v7(), 5);
    let duplicate = RefreshToken { hash: first.hash, ..duplicate };
    expect_kind("insert a taken hash", store.insert_refresh_token(duplicate).await, StoreErrorKind::Conflict);
    assert_eq!(ok("unchanged after refusal", store.refresh_token(first.hash).await), Some(first.clone()));

    let second = token(session, ada, 60);
    assert_eq!(
        ok("rotate", store.rotate_refresh_token(first.hash, second.clone(), at(60)).await),
        Rotation::Rotated(first.clone()),
        "rotation answers the old token as it was"
    );
    expect_tokens(
        "after rotation",
        &*store,
        &[(&first.hash, Some(in_state(&first, RefreshTokenState::Used))), (&second.hash, Some(second.clone()))],
    )
    .await;

    // A successor must be of the same session and have a hash of its own.
    let foreign = token(SessionId::new_v7(), ada, 120);
    expect_kind(
        "rotate to a token of another session",
        store.rotate_refresh_token(second.hash, foreign.clone(), at(120)).await,
        StoreErrorKind::InvalidRequest,
    );
    let reused_hash = RefreshToken { hash: first.hash, ..token(session, ada, 120) };
    expect_kind(
        "rotate to a taken hash",
        store.rotate_refresh_token(second.hash, reused_hash, at(120)).await,
        StoreErrorKind::Conflict,
    );
    let same_hash = RefreshToken { hash: second.hash, ..token(session, ada, 120) };
    expect_kind(
        "rotate to the presented token's own hash",
        store.rotate_refresh_token(second.hash, same_hash, at(120)).await,
        StoreErrorKind::Conflict,
    );
    expect_tokens(
        "unchanged after refusals",
        &*store,
        &[
            (&first.hash, Some(in_state(&first, RefreshTokenState::Used))),
            (&second.hash, Some(second.clone())),
            (&foreign.hash, None),
        ],
    )
    .await;

    let third = token(session, ada, 120);
    assert_eq!(
        ok("rotate the successor", store.rotate_refresh_token(second.hash, third.clone(), at(120)).await),
        Rotation::Rotated(second.clone())
    );
    expect_tokens(
        "after the second rotation",
        &*store,
        &[
            (&first.hash, Some(in_state(&first, RefreshTokenState::Used))),
            (&second.hash, Some(in_state(&second, RefreshTokenState::Used))),
            (&third.hash, Some(third.clone())),
        ],
    )
    .await;
    assert_eq!(revoked_since(&*store, at(0)).await, Vec::new(), "rotation revokes nothing");
}

/// A session bound to a key (DPoP): its tokens keep the thumbprint through storage and rotation;
/// a successor with another binding, or none, is refused without a change.
pub async fn refresh_token_binding<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let ada = CustomerId::new_v7();
    let session = SessionId::new_v7();
    let jkt = Some("-8iA6s9YbMTqrEC4DcmskoofrHJ7eZUVuNaqLRtBsZc".to_owned());
    let bound = |issued: i64| RefreshToken { dpop_jkt: jkt.clone(), ..token(session, ada, issued) };
    let first = bound(0);
    ok("insert", store.insert_refresh_token(first.clone()).await);
    assert_eq!(ok("read back", store.refresh_token(first.hash).await), Some(first.clone()), "with its binding");

    let other_key = RefreshToken { dpop_jkt: Some("another-thumbprint".to_owned()), ..bound(60) };
    let unbound = RefreshToken { dpop_jkt: None, ..bound(60) };
    for (what, successor) in [("another key", &other_key), ("no key", &unbound)] {
        expect_kind(
            what,
            store.rotate_refresh_token(first.hash, successor.clone(), at(60)).await,
            StoreErrorKind::InvalidRequest,
        );
    }
    expect_tokens(
        "unchanged after refusals",
        &*store,
        &[(&first.hash, Some(first.clone())), (&other_key.hash, None), (&unbound.hash, None)],
    )
    .await;

    let second = bound(60);
    assert_eq!(
        ok("rotate within the binding", store.rotate_refresh_token(first.hash, second.clone(), at(60)).await),
        Rotation::Rotated(first.clone())
    );
    expect_tokens(
        "after rotation",
        &*store,
        &[(&first.hash, Some(in_state(&first, RefreshTokenState::Used))), (&second.hash, Some(second.clone()))],
    )
    .await;
}

/// Reuse detection: presenting a used token revokes its whole session (every token of it, at
/// the time of the reuse) and no other; afterwards every token of the session answers
/// `Revoked`, and revoking the session again answers false.
pub async fn refresh_token_reuse<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let ada = CustomerId::new_v7();
    let (session, other) = (SessionId::new_v7(), SessionId::new_v7());
    let first = token(session, ada, 0);
    let second = token(session, ada, 60);
    let elsewhere = token(other, ada, 30);
    ok("insert", store.insert_refresh_token(first.clone()).await);
    ok("insert in another session", store.insert_refresh_token(elsewhere.clone()).await);
    assert_eq!(
        ok("rotate", store.rotate_refresh_token(first.hash, second.clone(), at(60)).await),
        Rotation::Rotated(first.clone())
    );

    let thief = token(session, ada, 200);
    assert_eq!(
        ok("rotate the used token again", store.rotate_refresh_token(first.hash, thief.clone(), at(200)).await),
        Rotation::Reused { session, customer_id: ada }
    );
    expect_tokens(
        "after reuse",
        &*store,
        &[
            (&first.hash, Some(in_state(&first, RefreshTokenState::Revoked))),
            (&second.hash, Some(in_state(&second, RefreshTokenState::Revoked))),
            (&thief.hash, None),
            (&elsewhere.hash, Some(elsewhere.clone())),
        ],
    )
    .await;
    assert_eq!(revoked_since(&*store, at(0)).await, vec![session]);
    assert_eq!(revoked_since(&*store, at(200)).await, vec![session], "revoked at the time of the reuse");
    assert_eq!(revoked_since(&*store, at(201)).await, Vec::new());

    for (what, hash) in [("the used token", first.hash), ("the successor", second.hash)] {
        let next = token(session, ada, 300);
        assert_eq!(
            ok(what, store.rotate_refresh_token(hash, next.clone(), at(300)).await),
            Rotation::Revoked,
            "{what} of a revoked session"
        );
        assert_eq!(ok("nothing stored", store.refresh_token(next.hash).await), None);
    }
    assert!(!ok("revoke the revoked session", store.revoke_session(session, at(400)).await));
    assert_eq!(revoked_since(&*store, at(201)).await, Vec::new(), "the first revocation time stays");

    let next = token(other, ada, 500);
    assert_eq!(
        ok("the other session still rotates", store.rotate_refresh_token(elsewhere.hash, next.clone(), at(500)).await),
        Rotation::Rotated(elsewhere)
    );
}

/// Rotations that change nothing: unknown tokens, expired tokens (at their expiry exactly, but
/// not a microsecond before), and tokens of a revoked session.
pub async fn refresh_token_refusals<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let ada = CustomerId::new_v7();
    let session = SessionId::new_v7();

    let next = token(session, ada, 10);
    assert_eq!(
        ok("rotate an unknown token", store.rotate_refresh_token(new_hash(), next.clone(), at(10)).await),
        Rotation::Unknown
    );
    assert_eq!(ok("nothing stored", store.refresh_token(next.hash).await), None);

    let expiring = token(session, ada, 0);
    ok("insert", store.insert_refresh_token(expiring.clone()).await);
    let expiry = expiring.expires_at;
    assert_eq!(
        ok("rotate at expiry", store.rotate_refresh_token(expiring.hash, next.clone(), expiry).await),
        Rotation::Expired
    );
    expect_tokens("after expiry", &*store, &[(&expiring.hash, Some(expiring.clone())), (&next.hash, None)]).await;
    assert_eq!(
        ok("rotate after expiry", store.rotate_refresh_token(expiring.hash, next.clone(), at(7200)).await),
        Rotation::Expired
    );
    assert_eq!(
        ok(
            "rotate just before expiry",
            store.rotate_refresh_token(expiring.hash, next.clone(), expiry - TimeDelta::microseconds(1)).await
        ),
        Rotation::Rotated(expiring.clone())
    );
    // A used token is reuse even once expired: reuse detection does not expire.
    let late = token(session, ada, 9000);
    assert_eq!(
        ok("present the used, expired token", store.rotate_refresh_token(expiring.hash, late.clone(), at(9000)).await),
        Rotation::Reused { session, customer_id: ada }
    );

    let other = SessionId::new_v7();
    let revoked = token(other, ada, 0);
    ok("insert", store.insert_refresh_token(revoked.clone()).await);
    assert!(ok("revoke the session", store.revoke_session(other, at(20)).await));
    let after = token(other, ada, 30);
    assert_eq!(
        ok(
            "rotate a token of a revoked session",
            store.rotate_refresh_token(revoked.hash, after.clone(), at(30)).await
        ),
        Rotation::Revoked
    );
    expect_tokens(
        "after refusal",
        &*store,
        &[(&revoked.hash, Some(in_state(&revoked, RefreshTokenState::Revoked))), (&after.hash, None)],
    )
    .await;
}

/// Revoking sessions: true once, false again; every token of the session (used or active)
/// revoked, other sessions untouched; `sessions_revoked_since` from the revocation time on.
pub async fn session_revocation<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let (ada, bob) = (CustomerId::new_v7(), CustomerId::new_v7());
    let (one, two) = (SessionId::new_v7(), SessionId::new_v7());
    let first = token(one, ada, 0);
    let second = token(one, ada, 10);
    let bobs = token(two, bob, 0);
    ok("insert", store.insert_refresh_token(first.clone()).await);
    ok("insert", store.insert_refresh_token(bobs.clone()).await);
    assert_eq!(
        ok("rotate", store.rotate_refresh_token(first.hash, second.clone(), at(10)).await),
        Rotation::Rotated(first.clone())
    );

    assert!(ok("revoke", store.revoke_session(one, at(50)).await));
    expect_tokens(
        "after revocation",
        &*store,
        &[
            (&first.hash, Some(in_state(&first, RefreshTokenState::Revoked))),
            (&second.hash, Some(in_state(&second, RefreshTokenState::Revoked))),
            (&bobs.hash, Some(bobs.clone())),
        ],
    )
    .await;
    assert!(!ok("revoke again", store.revoke_session(one, at(60)).await));
    assert_eq!(revoked_since(&*store, at(50)).await, vec![one], "at or after");
    assert_eq!(revoked_since(&*store, at(51)).await, Vec::new());

    assert!(ok("revoke the other", store.revoke_session(two, at(70)).await));
    assert_eq!(revoked_since(&*store, at(0)).await, sorted(vec![one, two]));
    assert_eq!(revoked_since(&*store, at(51)).await, vec![two]);
    assert_eq!(revoked_since(&*store, at(71)).await, Vec::new());
    let next = token(one, ada, 80);
    assert_eq!(
        ok("rotate a revoked active token", store.rotate_refresh_token(second.hash, next, at(80)).await),
        Rotation::Revoked
    );
}

/// A session of which no refresh token is stored (signed in without `offline_access`: only
/// its access tokens exist) is revoked like any other: true once, false again, and named by
/// `sessions_revoked_since`, so that its access tokens stay refused after a restart. A refresh
/// token of it stored later is refused as revoked.
pub async fn session_revocation_without_tokens<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let ada = CustomerId::new_v7();
    let (lone, other) = (SessionId::new_v7(), SessionId::new_v7());
    ok("insert", store.insert_refresh_token(token(other, ada, 0)).await);

    assert!(ok("revoke a session without tokens", store.revoke_session(lone, at(40)).await));
    assert_eq!(revoked_since(&*store, at(0)).await, vec![lone], "recorded");
    assert_eq!(revoked_since(&*store, at(40)).await, vec![lone], "at its revocation time");
    assert_eq!(revoked_since(&*store, at(41)).await, Vec::new());
    assert!(!ok("revoke it again", store.revoke_session(lone, at(50)).await));
    assert_eq!(revoked_since(&*store, at(41)).await, Vec::new(), "the first revocation's time is kept");

    let late = token(lone, ada, 60);
    ok("insert a token of the revoked session", store.insert_refresh_token(late.clone()).await);
    let next = token(lone, ada, 70);
    assert_eq!(
        ok("rotate a token of the revoked session", store.rotate_refresh_token(late.hash, next.clone(), at(70)).await),
        Rotation::Revoked
    );
    expect_tokens("after refusal", &*store, &[(&late.hash, Some(late.clone())), (&next.hash, None)]).await;
}

/// Sessions' last activity: none until recorded; a later time replaces an earlier one, an
/// earlier one (out of order) changes nothing; sessions are independent.
pub async fn session_activity<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let (one, two) = (SessionId::new_v7(), SessionId::new_v7());
    assert_eq!(ok("never used", store.session_active_at(one).await), None);
    ok("record", store.record_session_activity(one, at(10)).await);
    assert_eq!(ok("read back", store.session_active_at(one).await), Some(at(10)));
    ok("record later", store.record_session_activity(one, at(70)).await);
    assert_eq!(ok("the later time", store.session_active_at(one).await), Some(at(70)));
    ok("record earlier", store.record_session_activity(one, at(40)).await);
    assert_eq!(ok("kept the later time", store.session_active_at(one).await), Some(at(70)));
    assert_eq!(ok("another session", store.session_active_at(two).await), None);
    ok("record the other", store.record_session_activity(two, at(5)).await);
    assert_eq!(ok("each its own", store.session_active_at(one).await), Some(at(70)));
    assert_eq!(ok("each its own", store.session_active_at(two).await), Some(at(5)));
}

/// Challenges: stored, replaced while open, answered once (with method and device) before they
/// expire, refused afterwards without a change; one that is no longer open cannot be replaced.
pub async fn challenges<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let ada = CustomerId::new_v7();
    let unknown = ChallengeId::new_v7();
    assert_eq!(ok("unknown challenge", store.challenge(unknown).await), None);
    assert_eq!(
        ok("answer unknown", store.answer_challenge(unknown, ScaMethod::Totp, None, at(0)).await),
        ChallengeAnswer::Unknown
    );

    let first = payment_challenge(ada, 0, 300);
    ok("put", store.put_challenge(first.clone()).await);
    assert_eq!(ok("read back", store.challenge(first.id).await), Some(first.clone()));
    let renewed = ScaChallenge { nonce: "n-renewed".to_owned(), expires_at: at(600), ..first.clone() };
    ok("replace an open challenge", store.put_challenge(renewed.clone()).await);
    assert_eq!(ok("read replaced", store.challenge(first.id).await), Some(renewed.clone()));

    let phone = DeviceId::new_v7();
    let answered = ScaChallenge {
        state: ChallengeState::Answered { at: at(10), method: ScaMethod::DeviceSignature, device_id: Some(phone) },
        ..renewed.clone()
    };
    assert_eq!(
        ok("answer", store.answer_challenge(first.id, ScaMethod::DeviceSignature, Some(phone), at(10)).await),
        ChallengeAnswer::Accepted(answered.clone())
    );
    assert_eq!(ok("read answered", store.challenge(first.id).await), Some(answered.clone()));
    assert_eq!(
        ok("answer again", store.answer_challenge(first.id, ScaMethod::Totp, None, at(11)).await),
        ChallengeAnswer::Refused(answered.clone())
    );
    assert_eq!(ok("the first answer stays", store.challenge(first.id).await), Some(answered.clone()));
    let over = ScaChallenge { state: ChallengeState::Open, ..answered.clone() };
    expect_kind("put over an answered challenge", store.put_challenge(over).await, StoreErrorKind::InvalidRequest);
    assert_eq!(ok("unchanged after refusal", store.challenge(first.id).await), Some(answered));

    // Answerable strictly before its expiry.
    let expiring = beneficiary_challenge(ada, 0, 300);
    ok("put", store.put_challenge(expiring.clone()).await);
    assert_eq!(
        ok("answer at expiry", store.answer_challenge(expiring.id, ScaMethod::Totp, None, at(300)).await),
        ChallengeAnswer::Refused(expiring.clone())
    );
    assert_eq!(ok("still open", store.challenge(expiring.id).await), Some(expiring.clone()));
    let just_before = at(300) - TimeDelta::microseconds(1);
    let by_totp = ScaChallenge {
        state: ChallengeState::Answered { at: just_before, method: ScaMethod::Totp, device_id: None },
        ..expiring.clone()
    };
    assert_eq!(
        ok("answer just before expiry", store.answer_challenge(expiring.id, ScaMethod::Totp, None, just_before).await),
        ChallengeAnswer::Accepted(by_totp.clone())
    );
    assert_eq!(ok("read", store.challenge(expiring.id).await), Some(by_totp));
}

/// Wrong answers: counted while open, failing the challenge at the limit; a failed or answered
/// challenge counts no more, answers nothing, and cannot be replaced.
pub async fn challenge_failures<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let ada = CustomerId::new_v7();
    assert_eq!(ok("fail an unknown challenge", store.fail_challenge(ChallengeId::new_v7(), 3).await), None);

    let c = payment_challenge(ada, 0, 300);
    ok("put", store.put_challenge(c.clone()).await);
    for failures in 1..=2 {
        let expected = ScaChallenge { failures, ..c.clone() };
        assert_eq!(ok("fail", store.fail_challenge(c.id, 3).await), Some(expected.clone()), "failure {failures}");
        assert_eq!(ok("read", store.challenge(c.id).await), Some(expected));
    }
    let failed = ScaChallenge { failures: 3, state: ChallengeState::Failed, ..c.clone() };
    assert_eq!(ok("fail at the limit", store.fail_challenge(c.id, 3).await), Some(failed.clone()));
    assert_eq!(ok("fail a failed challenge", store.fail_challenge(c.id, 3).await), Some(failed.clone()));
    assert_eq!(ok("read failed", store.challenge(c.id).await), Some(failed.clone()));
    assert_eq!(
        ok("answer a failed challenge", store.answer_challenge(c.id, ScaMethod::Totp, None, at(10)).await),
        ChallengeAnswer::Refused(failed.clone())
    );
    expect_kind("put over a failed challenge", store.put_challenge(c.clone()).await, StoreErrorKind::InvalidRequest);
    assert_eq!(ok("unchanged after refusal", store.challenge(c.id).await), Some(failed));

    let answered = beneficiary_challenge(ada, 0, 300);
    ok("put", store.put_challenge(answered.clone()).await);
    let Ok(ChallengeAnswer::Accepted(answered)) =
        store.answer_challenge(answered.id, ScaMethod::DeviceSignature, Some(DeviceId::new_v7()), at(5)).await
    else {
        panic!("an open challenge must accept its answer")
    };
    assert_eq!(ok("fail an answered challenge", store.fail_challenge(answered.id, 3).await), Some(answered.clone()));
    assert_eq!(ok("read", store.challenge(answered.id).await), Some(answered));

    // A limit of one fails at the first wrong answer.
    let strict = payment_challenge(ada, 0, 300);
    ok("put", store.put_challenge(strict.clone()).await);
    let failed = ScaChallenge { failures: 1, state: ChallengeState::Failed, ..strict.clone() };
    assert_eq!(ok("fail with a limit of one", store.fail_challenge(strict.id, 1).await), Some(failed));
}

/// Beneficiaries: stored, replaced in place, listed oldest first per customer, deleted once and
/// only by their customer.
pub async fn beneficiaries<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let (ada, bob) = (CustomerId::new_v7(), CustomerId::new_v7());
    assert_eq!(ok("beneficiaries of nobody", store.beneficiaries_of(ada).await), Vec::new());
    assert_eq!(ok("unknown", store.beneficiary(BeneficiaryId::new_v7()).await), None);

    let landlord = beneficiary(ada, "Landlord", 1_000_000_001, 20);
    let mut sister = beneficiary(ada, "Sister", 1_000_000_002, 10);
    sister.state = BeneficiaryState::Trusted;
    sister.trusted_by = Some(ScaMethod::Totp);
    let club = beneficiary(ada, "Tennis club", 1_000_000_003, 20);
    let bobs = beneficiary(bob, "Garage", 1_000_000_004, 0);
    for b in [&landlord, &sister, &club, &bobs] {
        ok("put", store.put_beneficiary(b.clone()).await);
    }
    assert_eq!(ok("read", store.beneficiary(landlord.id).await), Some(landlord.clone()));
    assert_eq!(
        ok("ada's", store.beneficiaries_of(ada).await),
        vec![sister.clone(), landlord.clone(), club.clone()],
        "oldest first, ties in the order added"
    );
    assert_eq!(ok("bob's", store.beneficiaries_of(bob).await), vec![bobs.clone()]);

    let trusted = Beneficiary {
        name: "Landlord (flat)".to_owned(),
        state: BeneficiaryState::Trusted,
        trusted_by: Some(ScaMethod::DeviceSignature),
        account_number: account_number(1_000_000_099),
        ..landlord.clone()
    };
    ok("replace", store.put_beneficiary(trusted.clone()).await);
    assert_eq!(ok("read replaced", store.beneficiary(landlord.id).await), Some(trusted.clone()));
    assert_eq!(
        ok("ada's after replacing", store.beneficiaries_of(ada).await),
        vec![sister.clone(), trusted.clone(), club.clone()]
    );

    assert!(!ok("delete another customer's", store.delete_beneficiary(bob, landlord.id).await));
    assert_eq!(ok("still there", store.beneficiary(landlord.id).await), Some(trusted));
    assert!(!ok("delete an unknown one", store.delete_beneficiary(ada, BeneficiaryId::new_v7()).await));
    assert!(ok("delete", store.delete_beneficiary(ada, landlord.id).await));
    assert_eq!(ok("gone", store.beneficiary(landlord.id).await), None);
    assert!(!ok("delete again", store.delete_beneficiary(ada, landlord.id).await));
    assert_eq!(ok("ada's after deleting", store.beneficiaries_of(ada).await), vec![sister, club]);
    assert_eq!(ok("bob's untouched", store.beneficiaries_of(bob).await), vec![bobs]);
}

/// Security state: the default until one is stored, then exactly what was stored (every field,
/// the per-currency totals included), per customer.
pub async fn security_states<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let (ada, bob) = (CustomerId::new_v7(), CustomerId::new_v7());
    assert_eq!(ok("default", store.security_state(ada).await), SecurityState::default());

    let state = SecurityState {
        failures: 2,
        lockouts: 1,
        locked_until: Some(at(900)),
        low_value_count: 3,
        low_value_total_minor: BTreeMap::from([(Currency::EUR, 45_00), (Currency::USD, 12_50), (Currency::JPY, 300)]),
        totp_last_step: Some(58_907_521),
        last_failure_at: Some(at(899)),
    };
    ok("put", store.put_security_state(ada, state.clone()).await);
    assert_eq!(ok("read back", store.security_state(ada).await), state);
    assert_eq!(ok("another customer's", store.security_state(bob).await), SecurityState::default());

    let bobs = SecurityState { failures: 1, ..SecurityState::default() };
    ok("put bob's", store.put_security_state(bob, bobs.clone()).await);
    assert_eq!(ok("bob's", store.security_state(bob).await), bobs);
    assert_eq!(ok("ada's unchanged", store.security_state(ada).await), state);

    ok("reset", store.put_security_state(ada, SecurityState::default()).await);
    assert_eq!(ok("read reset", store.security_state(ada).await), SecurityState::default());
}

/// Photos: absent, set, replaced, accepted at [`PHOTO_BYTES_MAX`] and refused a byte above it
/// without a change; their `Debug` shows no bytes.
pub async fn photos<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let (ada, bob) = (CustomerId::new_v7(), CustomerId::new_v7());
    assert_eq!(ok("no photo", store.photo(ada).await), None);

    let png = Photo { content_type: "image/png".to_owned(), bytes: b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec() };
    ok("put", store.put_photo(ada, png.clone()).await);
    assert_eq!(ok("read back", store.photo(ada).await), Some(png.clone()));
    assert_eq!(ok("another customer's", store.photo(bob).await), None);

    let largest = Photo {
        content_type: "image/jpeg".to_owned(),
        bytes: (0..PHOTO_BYTES_MAX).map(|i| u8::try_from(i % 251).unwrap_or(0)).collect(),
    };
    ok("put the largest photo", store.put_photo(ada, largest.clone()).await);
    assert_eq!(ok("read the largest", store.photo(ada).await), Some(largest.clone()));

    let too_large = Photo { content_type: "image/jpeg".to_owned(), bytes: vec![0xFF; PHOTO_BYTES_MAX + 1] };
    expect_kind("put a photo too large", store.put_photo(ada, too_large.clone()).await, StoreErrorKind::InvalidRequest);
    assert_eq!(ok("unchanged after refusal", store.photo(ada).await), Some(largest));
    expect_kind("too large for bob", store.put_photo(bob, too_large).await, StoreErrorKind::InvalidRequest);
    assert_eq!(ok("nothing stored for bob", store.photo(bob).await), None);

    let shown = format!("{png:?} {png:#?}");
    assert!(shown.contains("image/png") && !shown.contains('['), "Debug of a photo shows its bytes: {shown}");
}

/// The audit log: positions 1, 2, 3, … whatever position the entry carried, entries read back
/// exactly, pages cut at the limit and ending empty.
pub async fn audit_log<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    assert_eq!(ok("the end of an empty log", store.audit_end().await), 0);
    let ada = CustomerId::new_v7();
    let kinds = [
        AuditKind::PasswordFailed,
        AuditKind::LoginSucceeded,
        AuditKind::DeviceAdded,
        AuditKind::ScaExempted,
        AuditKind::RefreshTokenReuse,
    ];
    let mut entries = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let n = i64::try_from(i).unwrap_or(i64::MAX);
        let entry = AuditEntry {
            position: 99,
            at: at(n * 10),
            kind,
            customer_id: if i == 0 { None } else { Some(ada) },
            detail: json_map(serde_json::json!({
                "client_id": "bp-mobile",
                "attempt": n,
                "remote": { "addr": "192.0.2.7", "country": "ES" },
                "rules": ["low_value", "trusted_beneficiary"],
            })),
        };
        let position = ok("append", store.append_audit(entry.clone()).await);
        assert_eq!(position, u64::try_from(i + 1).unwrap_or(u64::MAX), "positions are 1, 2, 3, …");
        entries.push(AuditEntry { position, ..entry });
    }

    assert_eq!(ok("the whole log", store.audit_after(0, 100).await), entries);
    assert_eq!(ok("the end of the log", store.audit_end().await), 5);
    let mut paged = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = ok("page", store.audit_after(after, 2).await);
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2, "a page holds at most the limit: {page:?}");
        pages += 1;
        after = page.last().map_or(after, |e| e.position);
        paged.extend(page);
    }
    assert_eq!((pages, paged), (3, entries.clone()), "pages of 2, 2 and 1");
    assert_eq!(ok("after the middle", store.audit_after(3, 10).await), entries[3..].to_vec());
    assert_eq!(ok("after the end", store.audit_after(5, 10).await), Vec::new());
    assert_eq!(ok("far after the end", store.audit_after(u64::MAX, 10).await), Vec::new());
    assert_eq!(ok("a limit of zero", store.audit_after(0, 0).await), Vec::new());
    assert_eq!(ok("a limit above the page bound", store.audit_after(0, u32::MAX).await), entries);
}

/// A passkey made for the cases: `n` makes its ids and credential differ.
fn passkey(customer: CustomerId, n: u8, created: i64) -> Passkey {
    Passkey {
        id: PasskeyId::new_v7(),
        customer_id: customer,
        name: format!("Laptop {n}"),
        credential_id: vec![n; 32],
        credential: json_map(serde_json::json!({ "cred": { "counter": 0, "key": format!("k{n}") } })).into(),
        created_at: at(created),
        last_used_at: None,
    }
}

/// Passkeys: registered, listed oldest first per customer, found by credential id, their use
/// recorded with the verifier's updated record, removed only by their customer; a taken id or
/// credential id is a `Conflict` that changes nothing.
pub async fn passkeys<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let (ada, bob) = (CustomerId::new_v7(), CustomerId::new_v7());
    assert_eq!(ok("none yet", store.passkeys_of(ada).await), Vec::new());
    let laptop = passkey(ada, 1, 20);
    let phone = passkey(ada, 2, 10);
    let bobs = passkey(bob, 3, 0);
    for p in [&laptop, &phone, &bobs] {
        ok("add", store.add_passkey(p.clone()).await);
    }
    assert_eq!(ok("ada's", store.passkeys_of(ada).await), vec![phone.clone(), laptop.clone()], "oldest first");
    assert_eq!(ok("by credential", store.passkey_by_credential(&[3; 32]).await), Some(bobs.clone()));
    assert_eq!(ok("an unknown credential", store.passkey_by_credential(&[9; 32]).await), None);
    let same_credential = Passkey { id: PasskeyId::new_v7(), customer_id: bob, ..laptop.clone() };
    let same_id = Passkey { credential_id: vec![8; 32], ..laptop.clone() };
    for (what, taken) in [("a taken credential id", same_credential), ("a taken id", same_id)] {
        match store.add_passkey(taken).await {
            Err(e) if e.kind() == StoreErrorKind::Conflict => {}
            other => panic!("{what}: expected Conflict, got {other:?}"),
        }
    }
    assert_eq!(ok("unchanged", store.passkeys_of(bob).await), vec![bobs.clone()]);
    let counted: serde_json::Value = serde_json::json!({ "cred": { "counter": 7, "key": "k1" } });
    assert!(ok("used", store.passkey_used(laptop.id, counted.clone(), at(30)).await));
    let used = Passkey { credential: counted, last_used_at: Some(at(30)), ..laptop.clone() };
    assert_eq!(ok("read back", store.passkey_by_credential(&[1; 32]).await), Some(used));
    assert!(!ok("an unknown passkey", store.passkey_used(PasskeyId::new_v7(), serde_json::json!({}), at(31)).await));
    assert!(!ok("bob removing ada's", store.remove_passkey(bob, laptop.id).await));
    assert!(ok("ada removing it", store.remove_passkey(ada, laptop.id).await));
    assert!(!ok("again", store.remove_passkey(ada, laptop.id).await));
    assert_eq!(ok("ada's now", store.passkeys_of(ada).await), vec![phone]);
    assert_eq!(ok("its credential is free", store.passkey_by_credential(&[1; 32]).await), None);
}

/// A customer's audit entries: only theirs, after a position, in pages, oldest first; entries
/// naming nobody or another customer are not among them.
pub async fn audit_of_a_customer<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let (ada, bob) = (CustomerId::new_v7(), CustomerId::new_v7());
    assert_eq!(ok("nothing yet", store.audit_of(ada, 0, 10).await), Vec::new());
    let mut adas = Vec::new();
    for (i, customer) in
        [Some(ada), None, Some(bob), Some(ada), Some(bob), Some(ada), Some(ada)].into_iter().enumerate()
    {
        let n = i64::try_from(i).unwrap_or(i64::MAX);
        let entry = AuditEntry {
            position: 0,
            at: at(n),
            kind: AuditKind::LoginSucceeded,
            customer_id: customer,
            detail: json_map(serde_json::json!({ "n": n })),
        };
        let position = ok("append", store.append_audit(entry.clone()).await);
        if customer == Some(ada) {
            adas.push(AuditEntry { position, ..entry });
        }
    }
    assert_eq!(ok("ada's", store.audit_of(ada, 0, 100).await), adas, "positions 1, 4, 6, 7");
    assert_eq!(ok("after position 4", store.audit_of(ada, 4, 100).await), adas[2..].to_vec());
    assert_eq!(ok("a page of 2", store.audit_of(ada, 0, 2).await), adas[..2].to_vec());
    assert_eq!(
        ok("bob's", store.audit_of(bob, 0, 100).await).iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![3, 5]
    );
    assert_eq!(ok("after the end", store.audit_of(ada, 7, 100).await), Vec::new());
    assert_eq!(ok("a limit of zero", store.audit_of(ada, 0, 0).await), Vec::new());
    assert_eq!(ok("nobody's", store.audit_of(CustomerId::new_v7(), 0, 100).await), Vec::new());
}

/// Many tasks present the same refresh token at once, each with its own successor: exactly one
/// rotates it, exactly one is then caught reusing it (revoking the session), and the rest find
/// the session revoked. Every token of the session, the winner's successor included, ends
/// revoked, and no loser's successor is stored.
pub async fn concurrent_rotation<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let ada = CustomerId::new_v7();
    let session = SessionId::new_v7();
    let first = token(session, ada, 0);
    ok("insert", store.insert_refresh_token(first.clone()).await);

    let barrier = Arc::new(Barrier::new(ROTATION_TASKS));
    let mut tasks = JoinSet::new();
    for _ in 0..ROTATION_TASKS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        let next = token(session, ada, 10);
        let old = first.hash;
        tasks.spawn(async move {
            barrier.wait().await;
            let rotation = store.rotate_refresh_token(old, next.clone(), at(10)).await;
            (next, rotation)
        });
    }
    let mut rotated = Vec::new();
    let (mut reused, mut revoked) = (0, 0);
    let mut losers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (next, rotation) = match joined {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a task was cancelled: {e}"),
        };
        match ok("concurrent rotation", rotation) {
            Rotation::Rotated(old) => {
                assert_eq!(old, first, "the rotated token as it was");
                rotated.push(next);
            }
            Rotation::Reused { session: s, customer_id } => {
                assert_eq!((s, customer_id), (session, ada));
                reused += 1;
                losers.push(next);
            }
            Rotation::Revoked => {
                revoked += 1;
                losers.push(next);
            }
            other => panic!("a concurrent rotation answered {other:?}"),
        }
    }
    assert_eq!(rotated.len(), 1, "exactly one rotation wins");
    assert_eq!(reused, 1, "exactly one rotation then finds the token used");
    assert_eq!(revoked, ROTATION_TASKS - 2, "the rest find the session revoked");

    let winner = &rotated[0];
    expect_tokens(
        "after the race",
        &*store,
        &[
            (&first.hash, Some(in_state(&first, RefreshTokenState::Revoked))),
            (&winner.hash, Some(in_state(winner, RefreshTokenState::Revoked))),
        ],
    )
    .await;
    for loser in &losers {
        assert_eq!(ok("a loser's successor", store.refresh_token(loser.hash).await), None);
    }
    assert_eq!(revoked_since(&*store, at(0)).await, vec![session]);
    assert!(!ok("the session is revoked", store.revoke_session(session, at(20)).await));
}

fn transient(kind: TransientKind, key: u8, value: &[u8], ends_s: i64) -> Transient {
    Transient { kind, key: [key; 32], value: value.to_vec(), expires_at: at(ends_s), spent: false }
}

/// Transient records: stored once per kind and key, read back, spent once, known as spent
/// afterwards (also after their end), expired unspent, swept after their end; kinds are
/// separate; a bad record changes nothing.
pub async fn transients<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let (code, ticket) = (TransientKind::AuthorizationCode, TransientKind::StreamTicket);
    let one = transient(code, 1, b"the code's grant", 60);
    assert_eq!(ok("unknown", store.transient(code, [1; 32]).await), None);
    assert_eq!(ok("spend unknown", store.spend_transient(code, [1; 32], at(0)).await), Spend::Unknown);
    ok("put", store.put_transient(one.clone()).await);
    assert_eq!(ok("read back", store.transient(code, [1; 32]).await), Some(one.clone()));
    let e = store.put_transient(transient(code, 1, b"another", 90)).await.expect_err("a taken key");
    assert_eq!(e.kind(), StoreErrorKind::Conflict);
    assert_eq!(ok("unchanged", store.transient(code, [1; 32]).await), Some(one.clone()));
    assert_eq!(ok("another kind", store.transient(ticket, [1; 32]).await), None);
    let same_key = transient(ticket, 1, b"a ticket", 30);
    ok("the same key of another kind", store.put_transient(same_key.clone()).await);

    let spent = Transient { spent: true, ..one.clone() };
    assert_eq!(ok("spend", store.spend_transient(code, [1; 32], at(59)).await), Spend::First(spent.clone()));
    assert_eq!(ok("spend again", store.spend_transient(code, [1; 32], at(59)).await), Spend::Again(spent.clone()));
    assert_eq!(ok("after its end", store.spend_transient(code, [1; 32], at(120)).await), Spend::Again(spent.clone()));
    assert_eq!(ok("read spent", store.transient(code, [1; 32]).await), Some(spent));
    assert_eq!(ok("the other kind unspent", store.transient(ticket, [1; 32]).await), Some(same_key.clone()));
    assert_eq!(ok("expired", store.spend_transient(ticket, [1; 32], at(30)).await), Spend::Expired);
    assert_eq!(ok("still unspent", store.transient(ticket, [1; 32]).await), Some(same_key));

    let large = transient(code, 2, &vec![0; crate::transient::TRANSIENT_BYTES_MAX + 1], 60);
    assert_eq!(store.put_transient(large).await.expect_err("too large").kind(), StoreErrorKind::InvalidRequest);
    let pre_spent = Transient { spent: true, ..transient(code, 3, b"x", 60) };
    assert_eq!(store.put_transient(pre_spent).await.expect_err("spent").kind(), StoreErrorKind::InvalidRequest);
    assert_eq!(ok("nothing stored", store.transient(code, [2; 32]).await), None);
    assert_eq!(ok("nothing stored", store.transient(code, [3; 32]).await), None);

    let late = transient(code, 4, b"later", 600);
    ok("put a later one", store.put_transient(late.clone()).await);
    assert_eq!(ok("sweep before any end", store.sweep_transients(at(30)).await), 0);
    assert_eq!(ok("sweep the ended", store.sweep_transients(at(61)).await), 2, "the code (60) and the ticket (30)");
    assert_eq!(ok("swept", store.transient(code, [1; 32]).await), None);
    assert_eq!(ok("swept", store.transient(ticket, [1; 32]).await), None);
    assert_eq!(ok("kept", store.transient(code, [4; 32]).await), Some(late));
    assert_eq!(ok("swept is unknown", store.spend_transient(code, [1; 32], at(62)).await), Spend::Unknown);
}

/// Spends of one transient record at once: one is the first, every other learns it was spent.
pub async fn concurrent_spend<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let record = transient(TransientKind::StreamTicket, 9, b"one stream", 60);
    ok("put", store.put_transient(record.clone()).await);
    let barrier = Arc::new(Barrier::new(ROTATION_TASKS));
    let mut tasks = JoinSet::new();
    for _ in 0..ROTATION_TASKS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            store.spend_transient(TransientKind::StreamTicket, [9; 32], at(10)).await
        });
    }
    let (mut first, mut again) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match ok("concurrent spend", joined.unwrap_or_else(|e| panic!("a spender failed: {e}"))) {
            Spend::First(t) => {
                assert_eq!(t.value, record.value);
                first += 1;
            }
            Spend::Again(t) => {
                assert_eq!(t.value, record.value);
                again += 1;
            }
            other => panic!("a spend of a live record: {other:?}"),
        }
    }
    assert_eq!((first, again), (1, ROTATION_TASKS - 1), "one first spend");
}

/// Shared states: made at version 1 by a swap expecting none, replaced only by a swap expecting
/// the current version (ended or not), read back whole; kinds are separate; a refused swap or a
/// bad one changes nothing; swept after their end with the transient records.
pub async fn shared_states<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let (attempts, throttle) = (StateKind::SourceAttempts, StateKind::PasswordThrottle);
    let state = |version: u64, value: &[u8], ends_s: i64| SharedState {
        kind: attempts,
        key: [5; 32],
        version,
        value: value.to_vec(),
        expires_at: at(ends_s),
    };
    assert_eq!(ok("none yet", store.shared_state(attempts, [5; 32]).await), None);
    assert!(!ok(
        "expecting a version of none",
        store.swap_shared_state(attempts, [5; 32], 1, b"1".to_vec(), at(60)).await
    ));
    assert_eq!(ok("still none", store.shared_state(attempts, [5; 32]).await), None);
    assert!(ok("make", store.swap_shared_state(attempts, [5; 32], 0, b"1".to_vec(), at(60)).await));
    assert_eq!(ok("read back", store.shared_state(attempts, [5; 32]).await), Some(state(1, b"1", 60)));
    assert!(!ok("make again", store.swap_shared_state(attempts, [5; 32], 0, b"x".to_vec(), at(60)).await));
    assert!(ok("swap", store.swap_shared_state(attempts, [5; 32], 1, b"2".to_vec(), at(90)).await));
    assert!(!ok("a stale swap", store.swap_shared_state(attempts, [5; 32], 1, b"x".to_vec(), at(90)).await));
    assert!(!ok("a version ahead", store.swap_shared_state(attempts, [5; 32], 3, b"x".to_vec(), at(90)).await));
    assert_eq!(ok("the swap's", store.shared_state(attempts, [5; 32]).await), Some(state(2, b"2", 90)));
    assert_eq!(ok("another kind", store.shared_state(throttle, [5; 32]).await), None);
    assert!(ok(
        "the same key of another kind",
        store.swap_shared_state(throttle, [5; 32], 0, b"t".to_vec(), at(30)).await
    ));

    let large = vec![0; crate::transient::TRANSIENT_BYTES_MAX + 1];
    let e = store.swap_shared_state(attempts, [5; 32], 2, large, at(90)).await.expect_err("too large");
    assert_eq!(e.kind(), StoreErrorKind::InvalidRequest);
    assert_eq!(ok("unchanged", store.shared_state(attempts, [5; 32]).await), Some(state(2, b"2", 90)));

    // An ended state is still there to be swapped (the caller reads it as none) until swept.
    assert!(ok("swap an ended one", store.swap_shared_state(throttle, [5; 32], 1, b"u".to_vec(), at(20)).await));
    ok("a transient that ends later", store.put_transient(transient(TransientKind::StreamTicket, 6, b"", 600)).await);
    assert_eq!(ok("sweep the ended", store.sweep_transients(at(40)).await), 1, "the throttle (20)");
    assert_eq!(ok("swept", store.shared_state(throttle, [5; 32]).await), None);
    assert_eq!(ok("kept", store.shared_state(attempts, [5; 32]).await), Some(state(2, b"2", 90)));
    assert!(ok(
        "made anew after the sweep",
        store.swap_shared_state(throttle, [5; 32], 0, b"n".to_vec(), at(90)).await
    ));
    assert_eq!(ok("sweep both kinds", store.sweep_transients(at(601)).await), 3);
    assert_eq!(ok("swept", store.shared_state(attempts, [5; 32]).await), None);
}

/// Swaps of one shared state at once, each retried from a fresh read: every one lands exactly
/// once, so a counter counted this way loses no count.
pub async fn concurrent_swap<F: SecurityStoreFactory>(f: &F) {
    let store = fresh(f).await;
    let barrier = Arc::new(Barrier::new(ROTATION_TASKS));
    let mut tasks = JoinSet::new();
    for _ in 0..ROTATION_TASKS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            for round in 0.. {
                assert!(round < 10 * ROTATION_TASKS, "a swap kept losing");
                let current = store.shared_state(StateKind::UsernameAttempts, [8; 32]).await?;
                let (version, count) = current.map_or((0, 0), |s| (s.version, s.value.len()));
                let value = vec![1; count + 1];
                if store.swap_shared_state(StateKind::UsernameAttempts, [8; 32], version, value, at(60)).await? {
                    return Ok::<_, StoreError>(());
                }
            }
            Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        ok("a counting task", joined.unwrap_or_else(|e| panic!("a counting task failed: {e}")));
    }
    let counted = ok("the count", store.shared_state(StateKind::UsernameAttempts, [8; 32]).await).expect("counted");
    assert_eq!(counted.value.len(), ROTATION_TASKS, "every swap counted once");
    assert_eq!(counted.version, u64::try_from(ROTATION_TASKS).expect("small"));
}
