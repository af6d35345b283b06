//! The EventBus conformance suite on the in-process broadcast bus.

use std::sync::Arc;

use bp_core::bus::EventBus;
use bp_notify::broadcast::BroadcastBus;
use bp_notify::testing;

async fn bus() -> Arc<dyn EventBus> {
    Arc::new(BroadcastBus::default())
}

#[tokio::test]
async fn every_subscriber_gets_every_event() {
    testing::every_subscriber_gets_every_event(bus).await;
}

#[tokio::test]
async fn many_accounts_keep_their_order() {
    testing::many_accounts_keep_their_order(bus).await;
}

#[tokio::test]
async fn later_subscribers_get_later_events() {
    testing::later_subscribers_get_later_events(bus).await;
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_how_far() {
    let bus = BroadcastBus::new(4);
    let mut sub = bus.subscribe().await.expect("subscribe");
    let account = bp_core::ids::AccountId::new_v7();
    let events: Vec<_> = (1..=10).map(|seq| testing::event(account, seq)).collect();
    bus.publish(&events).await.expect("publish");
    match sub.next().await {
        Some(Err(bp_core::bus::BusError::Lagged(n))) => assert_eq!(n, 6),
        other => panic!("expected a lag report, got {other:?}"),
    }
    // Then the four it still has, in order.
    let rest = testing::receive(&mut sub, 4).await;
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![7, 8, 9, 10]);
}
