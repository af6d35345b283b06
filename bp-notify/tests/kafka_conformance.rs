//! The EventBus conformance suite on the Kafka bus: against librdkafka's mock cluster (in every
//! `cargo test`) and against a real Apache Kafka broker (`--ignored`, with `BP_KAFKA_BOOTSTRAP`
//! naming it; `scripts/test.sh` starts one). Each case has a topic of its own.
#![cfg(feature = "kafka")]

use std::sync::Arc;
use std::time::Duration;

use bp_core::bus::{BusError, EventBus};
use bp_notify::kafka::{KafkaBus, KafkaConfig};
use bp_notify::testing;
use rdkafka::mocking::MockCluster;

fn config(bootstrap: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        topic: format!("bp.test.{}", uuid::Uuid::now_v7()),
        partitions: 4,
        ..KafkaConfig::default()
    }
}

async fn bus(bootstrap: &str) -> Arc<dyn EventBus> {
    Arc::new(KafkaBus::connect(config(bootstrap)).await.expect("connect"))
}

/// A bus on the mock cluster, whose topic the cluster makes (the mock broker has no CreateTopics).
async fn mock_bus(cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>) -> Arc<KafkaBus> {
    let config = config(&cluster.bootstrap_servers());
    cluster.create_topic(&config.topic, config.partitions, 1).expect("create topic");
    Arc::new(KafkaBus::connect(config).await.expect("connect"))
}

fn real_broker() -> String {
    std::env::var("BP_KAFKA_BOOTSTRAP")
        .expect("BP_KAFKA_BOOTSTRAP must name a Kafka broker (scripts/test.sh starts one: scripts/kafka-broker.sh)")
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod mock_cluster {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let cluster = MockCluster::new(1).expect("mock cluster");
                    testing::$case(|| async { mock_bus(&cluster).await as Arc<dyn EventBus> }).await;
                }
            )*
        }
        mod real_broker {
            use super::*;
            $(
                #[tokio::test]
                #[ignore = "needs a real Kafka broker: BP_KAFKA_BOOTSTRAP (scripts/test.sh starts one)"]
                async fn $case() {
                    let bootstrap = real_broker();
                    testing::$case(|| bus(&bootstrap)).await;
                }
            )*
        }
    };
}

conformance!(every_subscriber_gets_every_event, many_accounts_keep_their_order, later_subscribers_get_later_events);

/// Events published while the only broker is down are delivered, in order, once it is back.
#[tokio::test]
async fn a_broker_outage_delays_events_without_losing_or_reordering_them() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bus = mock_bus(&cluster).await;
    let mut sub = bus.subscribe().await.expect("subscribe");
    let account = bp_core::ids::AccountId::new_v7();
    let events: Vec<_> = (1..=20).map(|seq| testing::event(account, seq)).collect();
    bus.publish(&events[..5]).await.expect("publish before the outage");

    cluster.broker_down(1).expect("broker down");
    let publishing = {
        let bus = Arc::clone(&bus);
        let rest = events[5..].to_vec();
        tokio::spawn(async move { bus.publish(&rest).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!publishing.is_finished(), "a publish is acknowledged only by the broker");
    cluster.broker_up(1).expect("broker up");
    publishing.await.expect("task").expect("publish after the outage");

    let mut seqs = Vec::new();
    while seqs.len() < events.len() {
        match tokio::time::timeout(Duration::from_secs(20), sub.next()).await.expect("an event within 20 s") {
            Some(Ok(e)) => seqs.push(e.seq),
            // Transport errors during the outage are reported and the subscription goes on.
            Some(Err(BusError::Unavailable(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "every event, once, in order");
}

/// Without a broker, connecting fails with `Unavailable` instead of hanging.
#[tokio::test]
async fn no_broker_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let started = std::time::Instant::now();
    match KafkaBus::connect(config(&format!("127.0.0.1:{port}"))).await {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30), "it gives up in bounded time");
}
