//! Runs the security store conformance suite (`bp_core::testing::security`) against the SQLite
//! store, on real database files in a temporary directory (one file per case), and checks that
//! the security records survive closing and reopening the store, next to a ledger, and that
//! security writes still get through while the ledger writer is busy.

use std::path::Path;
use std::sync::Arc;

use bp_core::Ledger;
use bp_core::account_number::AccountNumber;
use bp_core::clock::ManualClock;
use bp_core::ids::{BeneficiaryId, ChallengeId, CustomerId, DeviceId, SessionId, TransferId};
use bp_core::money::{Currency, Money};
use bp_core::security::{
    AuditEntry, AuditKind, Beneficiary, BeneficiaryState, ChallengeAnswer, ChallengePurpose, ChallengeState,
    Credentials, Device, Photo, RefreshToken, RefreshTokenState, Rotation, ScaChallenge, ScaMethod, SecurityState,
    SecurityStore,
};
use bp_core::store::Store;
use bp_core::testing::fixtures::{at, ok, person};
use bp_core::testing::security::SecurityStoreFactory;
use bp_storage::sqlite::SqliteStore;

mod common;

/// A factory of SQLite stores, each in a new file of one temporary directory that lives as long
/// as the factory, on the clock the suite gives (the security records take every time as an
/// argument; the clock stamps only the ledger beside them).
fn sqlite() -> impl SecurityStoreFactory<S = SqliteStore> {
    common::stores(|_| {}, |store| store)
}

mod sqlite_security {
    bp_core::security_conformance_tests!(super::sqlite());
}

fn open(path: &Path, clock: &Arc<ManualClock>) -> SqliteStore {
    common::open(path, Arc::clone(clock), |_| {})
}

/// One record of every kind, written before a restart.
struct Written {
    customer: CustomerId,
    credentials: Credentials,
    device: Device,
    used: RefreshToken,
    active: RefreshToken,
    revoked_session: SessionId,
    challenge: ScaChallenge,
    beneficiary: Beneficiary,
    state: SecurityState,
    photo: Photo,
    audit: Vec<AuditEntry>,
}

async fn write_records(store: &SqliteStore, customer: CustomerId) -> Written {
    let credentials = Credentials {
        customer_id: customer,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        totp_secret: Some(vec![7; 20]),
        updated_at: at(1),
    };
    ok("credentials", store.put_credentials(credentials.clone()).await);
    let device = Device {
        id: DeviceId::new_v7(),
        customer_id: customer,
        name: "Pixel 9".to_owned(),
        public_key: vec![4; 65],
        created_at: at(2),
        revoked_at: None,
    };
    ok("device", store.add_device(device.clone()).await);

    let session = SessionId::new_v7();
    let token = |hash: u8, issued: i64| RefreshToken {
        hash: [hash; 32],
        session,
        customer_id: customer,
        client_id: "bp-mobile".to_owned(),
        scope: "openid payments".to_owned(),
        amr: vec!["pwd".to_owned(), "otp".to_owned()],
        auth_time: at(3),
        issued_at: at(issued),
        expires_at: at(issued + 3600),
        state: RefreshTokenState::Active,
        dpop_jkt: Some("-8iA6s9YbMTqrEC4DcmskoofrHJ7eZUVuNaqLRtBsZc".to_owned()),
    };
    let (first, active) = (token(1, 3), token(2, 4));
    ok("insert token", store.insert_refresh_token(first.clone()).await);
    assert_eq!(
        ok("rotate", store.rotate_refresh_token(first.hash, active.clone(), at(4)).await),
        Rotation::Rotated(first.clone())
    );
    let revoked_session = SessionId::new_v7();
    let other = RefreshToken { hash: [3; 32], session: revoked_session, ..token(3, 5) };
    ok("insert token", store.insert_refresh_token(other).await);
    assert!(ok("revoke", store.revoke_session(revoked_session, at(6)).await));

    let challenge = ScaChallenge {
        id: ChallengeId::new_v7(),
        customer_id: customer,
        purpose: ChallengePurpose::Payment {
            transfer_id: TransferId::new_v7(),
            amount: Money::new(9_999, Currency::EUR),
            payee: ok("account number", AccountNumber::from_serial(123_456)),
        },
        nonce: "nonce".to_owned(),
        created_at: at(7),
        expires_at: at(307),
        failures: 1,
        state: ChallengeState::Open,
    };
    ok("challenge", store.put_challenge(challenge.clone()).await);
    let beneficiary = Beneficiary {
        id: BeneficiaryId::new_v7(),
        customer_id: customer,
        name: "Landlord".to_owned(),
        account_number: ok("account number", AccountNumber::from_serial(654_321)),
        state: BeneficiaryState::Trusted,
        trusted_by: Some(ScaMethod::Totp),
        created_at: at(8),
    };
    ok("beneficiary", store.put_beneficiary(beneficiary.clone()).await);
    let state = SecurityState {
        failures: 1,
        low_value_count: 2,
        low_value_total_minor: [(Currency::EUR, 30_00)].into(),
        ..SecurityState::default()
    };
    ok("state", store.put_security_state(customer, state.clone()).await);
    let photo = Photo { content_type: "image/png".to_owned(), bytes: vec![0x89, b'P', b'N', b'G'] };
    ok("photo", store.put_photo(customer, photo.clone()).await);
    let mut audit = Vec::new();
    for (i, kind) in [AuditKind::LoginSucceeded, AuditKind::DeviceAdded].into_iter().enumerate() {
        let entry =
            AuditEntry { position: 0, at: at(9), kind, customer_id: Some(customer), detail: Default::default() };
        let position = ok("audit", store.append_audit(entry.clone()).await);
        assert_eq!(position, u64::try_from(i + 1).expect("small"));
        audit.push(AuditEntry { position, ..entry });
    }
    Written {
        customer,
        credentials,
        device,
        used: RefreshToken { state: RefreshTokenState::Used, ..first },
        active,
        revoked_session,
        challenge,
        beneficiary,
        state,
        photo,
        audit,
    }
}

async fn check_records(store: &SqliteStore, w: &Written) {
    let c = w.customer;
    assert_eq!(ok("credentials", store.credentials(c).await).as_ref(), Some(&w.credentials));
    assert_eq!(ok("devices", store.devices_of(c).await), vec![w.device.clone()]);
    assert_eq!(ok("used token", store.refresh_token(w.used.hash).await).as_ref(), Some(&w.used));
    assert_eq!(ok("active token", store.refresh_token(w.active.hash).await).as_ref(), Some(&w.active));
    assert_eq!(ok("revoked sessions", store.sessions_revoked_since(at(0)).await), vec![w.revoked_session]);
    assert_eq!(ok("challenge", store.challenge(w.challenge.id).await).as_ref(), Some(&w.challenge));
    assert_eq!(ok("beneficiaries", store.beneficiaries_of(c).await), vec![w.beneficiary.clone()]);
    assert_eq!(ok("state", store.security_state(c).await), w.state);
    assert_eq!(ok("photo", store.photo(c).await).as_ref(), Some(&w.photo));
    assert_eq!(ok("audit", store.audit_after(0, 10).await), w.audit);
}

/// Every kind of security record survives closing and reopening the store, beside the ledger
/// in the same file; after the restart the records still change (a rotation, an answer) and the
/// audit log goes on from where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_reopening() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("security.db");
    let clock = Arc::new(ManualClock::new(at(0)));

    let store = open(&path, &clock);
    let ledger = Ledger::new(Arc::new(store.clone()));
    let customer = ok("open a customer", ledger.open_customer(person("ada")).await);
    let written = write_records(&store, customer.id).await;
    check_records(&store, &written).await;
    drop(ledger);
    ok("close", store.close().await);

    let store = open(&path, &clock);
    check_records(&store, &written).await;
    assert_eq!(
        ok("the ledger beside it", store.customer(customer.id).await).map(|c| c.id),
        Some(customer.id),
        "the ledger's records are still there"
    );
    let next = RefreshToken { hash: [9; 32], ..written.active.clone() };
    assert_eq!(
        ok("rotate after reopening", store.rotate_refresh_token(written.active.hash, next, at(20)).await),
        Rotation::Rotated(written.active.clone())
    );
    assert_eq!(
        ok(
            "reuse after reopening",
            store.rotate_refresh_token(written.used.hash, written.active.clone(), at(21)).await
        ),
        Rotation::Reused { session: written.used.session, customer_id: customer.id }
    );
    let answer = ok(
        "answer after reopening",
        store.answer_challenge(written.challenge.id, ScaMethod::DeviceSignature, Some(written.device.id), at(22)).await,
    );
    assert!(matches!(answer, ChallengeAnswer::Accepted(_)), "{answer:?}");
    let entry = AuditEntry { position: 0, ..written.audit[0].clone() };
    assert_eq!(ok("append after reopening", store.append_audit(entry).await), 3, "the log goes on from 3");
    ok("close", store.close().await);
}

/// Ledger tasks sending transfers back to back in [`security_writes_get_through_a_busy_ledger`].
const LEDGER_TASKS: usize = 64;
/// How long the ledger is kept busy.
const BUSY_MS: u64 = 2_000;
/// The longest a security write may wait: it takes its turn at the write lock after the batch in
/// progress (SQLite's busy handler alone polled with growing sleeps, and under a steady stream
/// of batches a write could wait out the whole 5 s busy timeout and fail).
const SECURITY_WRITE_MS_MAX: u128 = 1_000;

/// While many tasks keep the ledger writer committing batch after batch, a task appending to the
/// audit log is neither starved nor failed. (Timing-dependent: on a machine too slow to keep the
/// writer busy it may pass without exercising the contention, never fail without it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn security_writes_get_through_a_busy_ledger() {
    use std::time::{Duration, Instant};

    use bp_core::account::{AccountKind, NewAccount, SystemAccount};
    use bp_core::ids::AccountId;
    use bp_core::transfer::{TransferKind, TransferRequest};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock::new(at(0)));
    let store = open(&dir.path().join("busy.db"), &clock);
    let ledger = Arc::new(Ledger::new(Arc::new(store.clone())));
    let owner = ok("open a customer", ledger.open_customer(person("erin")).await);
    let stop = Instant::now() + Duration::from_millis(BUSY_MS);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..LEDGER_TASKS {
        let account = NewAccount {
            id: AccountId::new_v7(),
            customer_id: owner.id,
            kind: AccountKind::Current,
            currency: Currency::EUR,
            overdraft_limit_minor: 0,
        };
        let account = ok("open an account", ledger.open_account(account).await);
        let ledger = Arc::clone(&ledger);
        tasks.spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < stop {
                let deposit = TransferRequest {
                    id: TransferId::new_v7(),
                    kind: TransferKind::Deposit,
                    debit_account: SystemAccount::Funding.id(Currency::EUR),
                    credit_account: account.id,
                    amount: Money::new(1_00, Currency::EUR),
                    reference: None,
                    hold_until: None,
                };
                ok("deposit", ledger.transfer(deposit).await);
                sent += 1;
            }
            sent
        });
    }

    let mut slowest = Duration::ZERO;
    let mut appended = 0u64;
    while Instant::now() < stop {
        let entry = AuditEntry {
            position: 0,
            at: at(1),
            kind: AuditKind::LoginSucceeded,
            customer_id: Some(owner.id),
            detail: serde_json::Map::new(),
        };
        let start = Instant::now();
        let position = ok("append under ledger load", store.append_audit(entry).await);
        slowest = slowest.max(start.elapsed());
        appended += 1;
        assert_eq!(position, appended);
    }
    let mut transfers = 0;
    while let Some(sent) = tasks.join_next().await {
        transfers += sent.expect("a ledger task");
    }
    eprintln!("{transfers} transfers and {appended} audit entries; slowest audit append {slowest:?}");
    assert!(transfers > 0 && appended > 0, "both kinds of write ran");
    assert!(
        slowest.as_millis() <= SECURITY_WRITE_MS_MAX,
        "an audit append waited {slowest:?} for the busy ledger writer"
    );
    drop(ledger);
    ok("close", store.close().await);
}
