//! The [`EventBus`] conformance suite (feature `testing`), run against every adapter: each
//! subscriber receives every event published after it subscribed, each account's events in the
//! order published. Each case takes a function making a fresh bus.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bp_core::account::{AccountStatus, Balances};
use bp_core::bus::{EventBus, Subscription};
use bp_core::event::{EVENT_VERSION, Event, EventBody};
use bp_core::ids::{AccountId, EventId};
use bp_core::money::{Currency, Money};

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
    Event {
        id: EventId::derive(account, seq),
        account_id: account,
        seq,
        version: EVENT_VERSION,
        at: chrono::Utc::now(),
        body,
    }
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
pub async fn every_subscriber_gets_every_event<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventBus>>,
{
    let bus = make().await;
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
        assert_eq!(Some(e), published.iter().find(|p| p.id == e.id), "events arrive whole");
    }
}

/// Many events over many accounts, published in interleaved batches: none lost, none reordered
/// within an account.
pub async fn many_accounts_keep_their_order<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventBus>>,
{
    let bus = make().await;
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
pub async fn later_subscribers_get_later_events<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventBus>>,
{
    let bus = make().await;
    let account = AccountId::new_v7();
    let mut early = bus.subscribe().await.expect("subscribe");
    bus.publish(&[event(account, 1)]).await.expect("publish");
    assert_eq!(receive(&mut early, 1).await[0].seq, 1);
    let mut late = bus.subscribe().await.expect("subscribe");
    bus.publish(&[event(account, 2)]).await.expect("publish");
    assert_eq!(receive(&mut late, 1).await[0].seq, 2, "the late subscriber starts after what it missed");
    assert_eq!(receive(&mut early, 1).await[0].seq, 2);
}
