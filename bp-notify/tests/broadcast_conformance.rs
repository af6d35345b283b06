//! The EventBus conformance suite on the in-process broadcast bus.

use std::sync::Arc;

use bp_core::bus::EventBus;
use bp_core::testing::conformance::assert_case_list;
use bp_notify::broadcast::BroadcastBus;
use bp_notify::testing;

/// One `#[tokio::test]` per case, so that a failure names its case.
mod broadcast {
    bp_notify::bus_conformance_tests!(bp_core::testing::factory_fn(|_| async {
        std::sync::Arc::new(bp_notify::broadcast::BroadcastBus::default()) as std::sync::Arc<dyn bp_core::bus::EventBus>
    }));
}

/// Every case function written in the suite's sources is in its list: a case left out of the
/// list would never run.
#[test]
fn every_case_is_listed() {
    assert_case_list(concat!(env!("CARGO_MANIFEST_DIR"), "/src"), "BusFactory", testing::CASES);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_how_far() {
    let bus: Arc<dyn EventBus> = Arc::new(BroadcastBus::new(4));
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
