//! The [`KafkaBus`] adapter (feature `kafka`).

use std::time::Duration;

use async_trait::async_trait;
use bp_core::bus::{BusError, EventBus, Subscription};
use bp_core::event::Event;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::KafkaConfig;

/// How long metadata, watermark and topic requests wait for the brokers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn client_config(settings: Vec<(&'static str, String)>) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in settings {
        config.set(k, v);
    }
    config
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("kafka: {what}: {e}"))
}

/// The Kafka [`EventBus`].
pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus").field("config", &self.config).finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Connects to the brokers and creates the topic when it does not exist.
    pub async fn connect(config: KafkaConfig) -> Result<Self, BusError> {
        let producer: FutureProducer =
            client_config(config.producer_settings()).create().map_err(|e| unavailable("producer", e))?;
        let bus = Self { config, producer };
        bus.ensure_topic().await?;
        Ok(bus)
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Creates the topic unless the brokers already have it (topics provisioned by operators,
    /// who may not grant the right to create them, are used as they are).
    async fn ensure_topic(&self) -> Result<(), BusError> {
        let producer = self.producer.clone();
        let topic = self.config.topic.clone();
        // All topics' metadata: asking for one by name could create it with the broker's defaults.
        let exists = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, REQUEST_TIMEOUT)
                .map(|m| m.topics().iter().any(|t| t.name() == topic))
        })
        .await
        .map_err(|e| unavailable("metadata", e))?
        .map_err(|e| unavailable("metadata", e))?;
        if exists {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = client_config(vec![
            ("bootstrap.servers", self.config.bootstrap_servers.clone()),
            ("client.id", self.config.client_id.clone()),
        ])
        .create()
        .map_err(|e| unavailable("admin client", e))?;
        let topic = NewTopic::new(
            &self.config.topic,
            self.config.partitions,
            TopicReplication::Fixed(self.config.replication_factor),
        );
        let options =
            AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)).request_timeout(Some(REQUEST_TIMEOUT));
        let results = admin.create_topics([&topic], &options).await.map_err(|e| unavailable("create topic", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(unavailable(&format!("create topic {name}"), code)),
            }
        }
        // Ready when every partition has its leader.
        let producer = self.producer.clone();
        let topic = self.config.topic.clone();
        tokio::task::spawn_blocking(move || partitions_with_leaders(producer.client(), &topic))
            .await
            .map_err(|e| unavailable("metadata", e))??;
        Ok(())
    }

    /// Sends every event still queued in the producer, waiting up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.producer.flush(timeout).map_err(|e| unavailable("flush", e))
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn publish(&self, events: &[Event]) -> Result<(), BusError> {
        let mut deliveries = Vec::with_capacity(events.len());
        for event in events {
            let payload = serde_json::to_vec(event).map_err(|e| unavailable("encode", e))?;
            let key = event.account_id.to_string();
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header { key: "content-type", value: Some("application/json") })
                .insert(Header { key: "bp-event-type", value: Some(event.body.type_name()) });
            let mut record = FutureRecord::to(&self.config.topic).key(&key).payload(&payload).headers(headers);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    // The producer's queue is full: let the earliest sends complete first.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        match deliveries.first_mut() {
                            Some(first) => {
                                let _ = first.await;
                            }
                            None => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                    Err((e, _)) => return Err(unavailable("send", e)),
                }
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(unavailable("delivery", e)),
                Err(_) => return Err(BusError::Closed),
            }
        }
        Ok(())
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, BusError> {
        let config = self.config.clone();
        // Metadata and watermarks are blocking librdkafka calls.
        let consumer = tokio::task::spawn_blocking(move || -> Result<StreamConsumer, BusError> {
            let consumer: StreamConsumer =
                client_config(config.consumer_settings()).create().map_err(|e| unavailable("consumer", e))?;
            let partitions = partitions_with_leaders(consumer.client(), &config.topic)?;
            // Start exactly at each partition's end as of now: every later event is received.
            let mut assignment = TopicPartitionList::with_capacity(partitions.len());
            for p in partitions {
                let high = high_watermark(&consumer, &config.topic, p)?;
                assignment
                    .add_partition_offset(&config.topic, p, Offset::Offset(high))
                    .map_err(|e| unavailable("assign", e))?;
            }
            consumer.assign(&assignment).map_err(|e| unavailable("assign", e))?;
            Ok(consumer)
        })
        .await
        .map_err(|e| unavailable("subscribe", e))??;
        Ok(Box::new(KafkaSubscription { consumer }))
    }
}

/// The partitions of `topic`, once the brokers list it with a leader for each (a topic just
/// created takes a moment); `Unavailable` after [`REQUEST_TIMEOUT`].
fn partitions_with_leaders<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Result<Vec<i32>, BusError> {
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        // All topics' metadata: asking for one by name could create it with the broker's defaults.
        let metadata = client.fetch_metadata(None, REQUEST_TIMEOUT).map_err(|e| unavailable("metadata", e))?;
        let partitions: Option<Vec<i32>> = metadata.topics().iter().find(|t| t.name() == topic).and_then(|t| {
            let ready =
                !t.partitions().is_empty() && t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none());
            ready.then(|| t.partitions().iter().map(|p| p.id()).collect())
        });
        match partitions {
            Some(p) => return Ok(p),
            None if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            None => {
                return Err(BusError::Unavailable(format!("kafka: the topic {topic} has no partitions with leaders")));
            }
        }
    }
}

/// The end of partition `p`, waiting (a bounded while) for a new topic's partition to get its
/// leader.
fn high_watermark(consumer: &StreamConsumer, topic: &str, p: i32) -> Result<i64, BusError> {
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        match consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT) {
            Ok((_, high)) => return Ok(high),
            Err(e)
                if std::time::Instant::now() < deadline
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::NotLeaderForPartition
                                | RDKafkaErrorCode::LeaderNotAvailable
                                | RDKafkaErrorCode::UnknownTopicOrPartition
                        )
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(unavailable("watermarks", e)),
        }
    }
}

struct KafkaSubscription {
    consumer: StreamConsumer,
}

#[async_trait]
impl Subscription for KafkaSubscription {
    /// The next event. `Unavailable` is transient here (librdkafka reconnects by itself): the
    /// subscription goes on after it.
    async fn next(&mut self) -> Option<Result<Event, BusError>> {
        loop {
            let message = match self.consumer.recv().await {
                Ok(m) => m,
                Err(e) => return Some(Err(unavailable("receive", e))),
            };
            match message.payload().map(serde_json::from_slice::<Event>) {
                Some(Ok(event)) => return Some(Ok(event)),
                // Not one of our events: skipped. A consumer that misses an event of an account
                // fills the gap from the store when the account's next event arrives.
                _ => tracing::warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "kafka: a message that is not an event was skipped"
                ),
            }
        }
    }
}
