//! The outbox relay and the sequencer, over the memory store and a real SQLite file: every
//! committed event reaches a subscriber, in order per account, once; a restart resumes where the
//! relay stopped; a bus outage delays events and loses none; duplicates are dropped and gaps are
//! filled from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use bp_core::bus::{BusError, EventBus, Subscription};
use bp_core::clock::SystemClock;
use bp_core::customer::NewCustomer;
use bp_core::event::Event;
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::memory::MemoryStore;
use bp_core::money::{Currency, Money};
use bp_core::service::current_account;
use bp_core::testing::fixtures::person;
use bp_core::{Ledger, Store};
use bp_notify::broadcast::BroadcastBus;
use bp_notify::relay::{Relay, RelayConfig};
use bp_notify::sequencer::Sequencer;
use bp_notify::testing::receive;

/// Opens two customers with an account each and moves money between them `transfers` times;
/// returns the accounts.
async fn activity(store: Arc<dyn Store>, transfers: usize) -> Vec<AccountId> {
    let ledger = Ledger::new(store);
    let mut accounts = Vec::new();
    for name in ["ada", "bob"] {
        let customer = CustomerId::new_v7();
        ledger.open_customer(NewCustomer { id: customer, ..person(name) }).await.expect("customer");
        let account = AccountId::new_v7();
        ledger.open_account(current_account(account, customer, Currency::EUR)).await.expect("account");
        ledger.fund(TransferId::new_v7(), account, Money::new(1_000_000, Currency::EUR)).await.expect("fund");
        accounts.push(account);
    }
    for i in 0..transfers {
        let (from, to) = if i % 2 == 0 { (accounts[0], accounts[1]) } else { (accounts[1], accounts[0]) };
        ledger
            .internal_transfer(TransferId::new_v7(), from, to, Money::new(100, Currency::EUR), None)
            .await
            .expect("transfer");
    }
    accounts
}

/// The whole outbox, and the position of its last entry (positions need not be dense).
async fn outbox_with_end(store: &dyn Store) -> (Vec<Event>, u64) {
    let (mut out, mut after) = (Vec::new(), 0);
    loop {
        let page = store.outbox_after(after, 500).await.expect("outbox");
        let Some(last) = page.last().map(|e| e.position) else { return (out, after) };
        after = last;
        out.extend(page.into_iter().map(|e| e.event));
    }
}

async fn outbox(store: &dyn Store) -> Vec<Event> {
    outbox_with_end(store).await.0
}

fn assert_each_account_gap_free(events: &[Event]) {
    let mut last: HashMap<AccountId, u64> = HashMap::new();
    for e in events {
        let prev = last.insert(e.account_id, e.seq).unwrap_or(0);
        assert_eq!(e.seq, prev + 1, "account {} in order, once, without gaps", e.account_id);
    }
}

fn config(batch: u32) -> RelayConfig {
    RelayConfig {
        batch_len_max: batch,
        idle_wait_ms: 5,
        backoff_min_ms: 1,
        backoff_max_ms: 20,
        ..RelayConfig::default()
    }
}

#[tokio::test]
async fn every_committed_event_is_published_once_in_order() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let bus = Arc::new(BroadcastBus::default());
    let mut sub = bus.subscribe().await.expect("subscribe");
    activity(Arc::clone(&store), 300).await;
    let (committed, end) = outbox_with_end(store.as_ref()).await;
    let mut relay = Relay::new(Arc::clone(&store), bus.clone(), config(64));
    let mut published = 0;
    loop {
        let n = relay.step(chrono::Utc::now()).await.expect("step");
        if n == 0 {
            break;
        }
        published += n;
    }
    assert_eq!(published, committed.len());
    let got = receive(&mut sub, committed.len()).await;
    assert_eq!(got, committed, "the outbox's order");
    assert_each_account_gap_free(&got);
    assert_eq!(store.cursor("outbox-relay").await.expect("cursor"), end);
    let stats = relay.stats();
    assert_eq!(stats.published.load(Ordering::Relaxed), u64::try_from(committed.len()).expect("len"));
    assert_eq!(stats.waiting.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_restarted_relay_resumes_from_the_recorded_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    let bus = Arc::new(BroadcastBus::default());
    let mut sub = bus.subscribe().await.expect("subscribe");
    let total;
    {
        let store: Arc<dyn Store> =
            Arc::new(bp_storage::sqlite::SqliteStore::open(&path, Default::default()).expect("open"));
        activity(Arc::clone(&store), 100).await;
        total = outbox(store.as_ref()).await.len();
        let mut relay = Relay::new(Arc::clone(&store), bus.clone(), config(50));
        assert_eq!(relay.step(chrono::Utc::now()).await.expect("step"), 50);
        assert_eq!(relay.step(chrono::Utc::now()).await.expect("step"), 50);
        // The process stops here.
    }
    let store: Arc<dyn Store> =
        Arc::new(bp_storage::sqlite::SqliteStore::open(&path, Default::default()).expect("reopen"));
    let mut relay = Relay::new(Arc::clone(&store), bus.clone(), config(50));
    let mut rest = 0;
    loop {
        let n = relay.step(chrono::Utc::now()).await.expect("step");
        if n == 0 {
            break;
        }
        rest += n;
    }
    assert_eq!(rest, total - 100, "the restarted relay publishes only what was left");
    let got = receive(&mut sub, total).await;
    assert_eq!(got, outbox(store.as_ref()).await);
    assert_each_account_gap_free(&got);
}

/// A bus whose first publications fail, as a broker that is down.
struct Outage {
    inner: BroadcastBus,
    failures_left: AtomicU32,
}

#[async_trait]
impl EventBus for Outage {
    async fn publish(&self, events: &[Event]) -> Result<(), BusError> {
        if self.failures_left.load(Ordering::SeqCst) > 0 {
            self.failures_left.fetch_sub(1, Ordering::SeqCst);
            return Err(BusError::Unavailable("broker down".to_owned()));
        }
        self.inner.publish(events).await
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, BusError> {
        self.inner.subscribe().await
    }
}

#[tokio::test]
async fn a_bus_outage_delays_events_and_loses_none() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let bus = Arc::new(Outage { inner: BroadcastBus::default(), failures_left: AtomicU32::new(6) });
    let mut sub = bus.subscribe().await.expect("subscribe");
    let relay = Relay::new(Arc::clone(&store), bus.clone(), config(500));
    let stats = relay.stats();
    let waker = relay.waker();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(Arc::new(SystemClock), async move {
        let _ = stop_rx.await;
    }));
    activity(Arc::clone(&store), 40).await;
    waker.notify_one();
    let committed = outbox(store.as_ref()).await;
    let got = receive(&mut sub, committed.len()).await;
    assert_eq!(got, committed);
    assert!(stats.failures.load(Ordering::Relaxed) >= 6, "it retried through the outage");
    let _ = stop_tx.send(());
    task.await.expect("the relay stops");
}

#[tokio::test]
async fn the_sequencer_drops_duplicates_and_fills_gaps_from_the_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let accounts = activity(Arc::clone(&store), 10).await;
    let events = store.events_after(accounts[0], 0, 500).await.expect("events");
    assert!(events.len() >= 8);
    let mut seq = Sequencer::new();
    let first = seq.admit(events[0].clone(), store.as_ref()).await.expect("admit");
    assert_eq!(first, vec![events[0].clone()]);
    assert!(seq.admit(events[0].clone(), store.as_ref()).await.expect("admit").is_empty(), "a duplicate");
    // Events 2 to 4 are lost on the way; 5 arrives: 2, 3, 4 come from the store, then 5.
    let got = seq.admit(events[4].clone(), store.as_ref()).await.expect("admit");
    assert_eq!(got, events[1..5].to_vec());
    assert!(seq.admit(events[2].clone(), store.as_ref()).await.expect("admit").is_empty(), "late duplicate");
    assert_eq!(seq.last(accounts[0]), Some(events[4].seq));
    // A consumer that starts after a known position delivers only what follows it.
    let mut resumed = Sequencer::new();
    resumed.start_at(accounts[0], events[5].seq);
    assert!(resumed.admit(events[5].clone(), store.as_ref()).await.expect("admit").is_empty());
    assert_eq!(resumed.admit(events[7].clone(), store.as_ref()).await.expect("admit"), events[6..8].to_vec());
}
