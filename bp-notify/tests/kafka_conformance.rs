//! The EventBus conformance suite on the Kafka bus: against librdkafka's mock cluster (in every
//! `cargo test`) and against a real Apache Kafka broker (`--ignored`, with `BP_KAFKA_BOOTSTRAP`
//! naming it; `scripts/test.sh` starts one). Each case has a topic of its own.
#![cfg(feature = "kafka")]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bp_core::bus::{BusError, EventBus};
use bp_core::clock::ManualClock;
use bp_core::testing::conformance::Factory;
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
    Arc::new(KafkaBus::connect(mock_config(cluster)).await.expect("connect"))
}

/// The configuration of a bus on the mock cluster, with a topic of its own made by the cluster.
fn mock_config(cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>) -> KafkaConfig {
    let config = config(&cluster.bootstrap_servers());
    cluster.create_topic(&config.topic, config.partitions, 1).expect("create topic");
    config
}

fn real_broker() -> String {
    std::env::var("BP_KAFKA_BOOTSTRAP")
        .expect("BP_KAFKA_BOOTSTRAP must name a Kafka broker (scripts/test.sh starts one: scripts/kafka-broker.sh)")
}

/// Buses on one mock cluster, which lives as long as the factory; each bus has a topic of its own.
struct Mock(MockCluster<'static, rdkafka::producer::DefaultProducerContext>);

impl Factory for Mock {
    type S = dyn EventBus;

    fn fresh(&self, _clock: Arc<ManualClock>) -> impl Future<Output = Arc<dyn EventBus>> + Send {
        // The cluster is not `Sync`: its topic is made here, and the future owns only the
        // configuration.
        let config = mock_config(&self.0);
        async move { Arc::new(KafkaBus::connect(config).await.expect("connect")) as Arc<dyn EventBus> }
    }
}

/// Buses on the real broker `BP_KAFKA_BOOTSTRAP` names.
struct Real;

impl Factory for Real {
    type S = dyn EventBus;

    async fn fresh(&self, _clock: Arc<ManualClock>) -> Arc<dyn EventBus> {
        bus(&real_broker()).await
    }
}

/// The suite on librdkafka's mock cluster, in every `cargo test`.
mod mock_cluster {
    bp_notify::bus_conformance_tests!(super::Mock(rdkafka::mocking::MockCluster::new(1).expect("mock cluster")));
}

/// The suite on a real broker, with `--ignored`.
mod real_broker {
    bp_notify::bus_conformance_tests!(
        super::Real,
        #[ignore = "needs a real Kafka broker: BP_KAFKA_BOOTSTRAP (scripts/test.sh starts one)"]
    );
}

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
