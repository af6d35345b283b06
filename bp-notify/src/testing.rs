//! The [`EventBus`] conformance suite (feature `testing`), run against every adapter: each
//! subscriber receives every event published after it subscribed, each account's events in the
//! order published. It runs on bp-core's one conformance machinery
//! ([`bp_core::testing::conformance`]): a [`BusFactory`] makes a fresh bus for every case, and
//! [`bus_conformance_tests!`](crate::bus_conformance_tests) expands into one `#[tokio::test]` per
//! case (with further attributes, such as an `#[ignore = "needs …"]` for a real broker):
//!
//! ```text
//! mod broadcast {
//!     bp_notify::bus_conformance_tests!(bp_core::testing::factory_fn(|_| async {
//!         std::sync::Arc::new(bp_notify::broadcast::BroadcastBus::default()) as std::sync::Arc<dyn EventBus>
//!     }));
//! }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use bp_core::account::{AccountStatus, Balances};
use bp_core::bus::{EventBus, Subscription};
use bp_core::event::{EVENT_VERSION, Event, EventBody};
use bp_core::ids::AccountId;
use bp_core::money::{Currency, Money};
use bp_core::testing::conformance::Factory;

/// A [`Factory`] of event buses: the factory of this suite. Every [`Factory`] whose value is a
/// `dyn EventBus` is one (the clock it is given is not used: buses do not read the time).
pub trait BusFactory: Factory<S = dyn EventBus> {}

impl<F: Factory<S = dyn EventBus>> BusFactory for F {}

/// Runs every case of the suite, one after the other, each on a fresh bus from `factory`.
/// Panics on the first failure, naming the case.
pub async fn run_all<F: BusFactory>(factory: &F) {
    crate::__bus_conformance_cases!(@run_all factory);
}

/// The names of the cases, in the order [`run_all`] runs them; each is a function of this module.
pub const CASES: &[&str] = crate::__bus_conformance_cases!(@names);

/// Expands into one `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` per case of the
/// event bus conformance suite, each on a fresh bus from the factory expression (an
/// `impl BusFactory`, evaluated once per test), with the attributes given after it. Invoke it
/// inside a module of its own.
#[macro_export]
macro_rules! bus_conformance_tests {
    ($factory:expr $(, #[$meta:meta])* $(,)?) => {
        $crate::__bus_conformance_cases!(@tests ($factory) $(#[$meta])*);
    };
}

/// The list of cases, written once for [`run_all`], [`CASES`] and
/// [`bus_conformance_tests!`](crate::bus_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __bus_conformance_cases {
    ($($mode:tt)*) => {
        ::bp_core::__conformance! { $($mode)* "event bus" [$crate::testing]
            every_subscriber_gets_every_event
            many_accounts_keep_their_order
            later_subscribers_get_later_events
        }
    };
}

/// Where a bus starts: a fresh one from `factory`.
async fn fresh<F: BusFactory>(factory: &F) -> std::sync::Arc<dyn EventBus> {
    factory.fresh(std::sync::Arc::new(bp_core::clock::ManualClock::new(chrono::Utc::now()))).await
}

/// How long a case waits for an event before it fails.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A synthetic event: the `seq`-th of `account`.
pub fn event(account: AccountId, seq: u64) -> Event {
    let zero = Money::zero(Currency::EUR);
    let body = if seq == 1 {
        EventBody::AccountOpened { balances: Balances { posted: zero, held: zero, available: zero } }
    } else {
        EventBody::AccountStatusChanged {
            status: if seq % 2 == 0 { AccountStatus::Frozen } else { AccountStatus::Active },
        }
    };
    Event { account_id: account, seq, version: EVENT_VERSION, at: chrono::Utc::now(), body }
}

/// Receives `n` events, failing after [`RECEIVE_TIMEOUT`] without one.
pub async fn receive(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(RECEIVE_TIMEOUT, sub.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            Ok(Some(Err(e))) => panic!("the subscription failed after {} events: {e}", out.len()),
            Ok(None) => panic!("the bus closed after {} of {n} events", out.len()),
            Err(_) => panic!("no event within {RECEIVE_TIMEOUT:?} after {} of {n}", out.len()),
        }
    }
    out
}

fn assert_per_account_order(what: &str, got: &[Event], published: &[Event]) {
    let by_account = |events: &[Event]| {
        let mut map: HashMap<AccountId, Vec<u64>> = HashMap::new();
        for e in events {
            map.entry(e.account_id).or_default().push(e.seq);
        }
        map
    };
    assert_eq!(by_account(got), by_account(published), "{what}: every account's events, in order");
}

/// Two subscribers each receive every event, in order per account, across batches.
pub async fn every_subscriber_gets_every_event<F: BusFactory>(factory: &F) {
    let bus = fresh(factory).await;
    let mut a = bus.subscribe().await.expect("subscribe");
    let mut b = bus.subscribe().await.expect("subscribe");
    let accounts: Vec<AccountId> = (0..3).map(|_| AccountId::new_v7()).collect();
    let mut published = Vec::new();
    for seq in 1..=4 {
        let batch: Vec<Event> = accounts.iter().map(|acc| event(*acc, seq)).collect();
        bus.publish(&batch).await.expect("publish");
        published.extend(batch);
    }
    bus.publish(&[]).await.expect("an empty batch is fine");
    let got_a = receive(&mut a, published.len()).await;
    let got_b = receive(&mut b, published.len()).await;
    assert_per_account_order("first subscriber", &got_a, &published);
    assert_per_account_order("second subscriber", &got_b, &published);
    // Whole, field for field (the order across accounts is not the bus's to keep).
    for e in got_a.iter().chain(&got_b) {
        assert_eq!(
            Some(e),
            published.iter().find(|p| (p.account_id, p.seq) == (e.account_id, e.seq)),
            "events arrive whole"
        );
    }
}

/// Many events over many accounts, published in interleaved batches: none lost, none reordered
/// within an account.
pub async fn many_accounts_keep_their_order<F: BusFactory>(factory: &F) {
    let bus = fresh(factory).await;
    let mut sub = bus.subscribe().await.expect("subscribe");
    let accounts: Vec<AccountId> = (0..50).map(|_| AccountId::new_v7()).collect();
    let mut published = Vec::new();
    for seq in 1..=40u64 {
        let batch: Vec<Event> = accounts.iter().map(|acc| event(*acc, seq)).collect();
        published.extend(batch.iter().cloned());
        bus.publish(&batch).await.expect("publish");
    }
    let got = receive(&mut sub, published.len()).await;
    assert_per_account_order("2,000 events", &got, &published);
}

/// A subscription made after some events receives the later ones.
pub async fn later_subscribers_get_later_events<F: BusFactory>(factory: &F) {
    let bus = fresh(factory).await;
    let account = AccountId::new_v7();
    let mut early = bus.subscribe().await.expect("subscribe");
    bus.publish(&[event(account, 1)]).await.expect("publish");
    assert_eq!(receive(&mut early, 1).await[0].seq, 1);
    let mut late = bus.subscribe().await.expect("subscribe");
    bus.publish(&[event(account, 2)]).await.expect("publish");
    assert_eq!(receive(&mut late, 1).await[0].seq, 2, "the late subscriber starts after what it missed");
    assert_eq!(receive(&mut early, 1).await[0].seq, 2);
}
