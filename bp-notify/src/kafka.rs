//! The Kafka event bus (feature `kafka`): librdkafka through `rdkafka`.
//!
//! **Publishing.** One idempotent producer (`enable.idempotence`, `acks=all`): a retried send
//! never writes a message twice, and each partition keeps the order of the sends. The message key
//! is the account id, so all of an account's events go to one partition and keep their order. The
//! value is the event's JSON (the same as on `GET /v1/events`, schemas in `docs/events.md`), with
//! the headers `content-type: application/json` and `bp-event-type: <type>`. `publish` returns
//! once the broker has acknowledged every event of the call.
//!
//! **Subscribing.** Every subscription is its own consumer that *assigns* itself every partition
//! of the topic at the partition's end, read when `subscribe` is called: it receives every event
//! published after `subscribe` returned, as a broadcast (each API replica sees every event). It
//! joins no consumer group and commits nothing: a replica's position lives in its streams'
//! cursors and the store, not in Kafka.
//!
//! Every librdkafka setting is explicit in [`KafkaConfig::producer_settings`] and
//! [`KafkaConfig::consumer_settings`] and documented in `docs/events.md`.

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

/// Where the events go and how the topic is made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]` of the brokers.
    pub bootstrap_servers: String,
    /// The topic of the events.
    pub topic: String,
    /// Partitions of the topic when this bus creates it (an existing topic is used as it is).
    pub partitions: i32,
    /// Replicas of each partition when this bus creates the topic: 3 in production (with the
    /// broker's `min.insync.replicas=2`, so that `acks=all` means two copies), 1 on one broker.
    pub replication_factor: i32,
    /// The `client.id` the brokers see (in their logs and quotas).
    pub client_id: String,
    /// How long a publish may wait for the brokers before it fails (and the relay retries).
    pub message_timeout_ms: u32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic: "bp.events".into(),
            partitions: 12,
            replication_factor: 1,
            client_id: "bp".into(),
            message_timeout_ms: 15_000,
        }
    }
}

/// How long metadata, watermark and topic requests wait for the brokers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaConfig {
    /// The producer's librdkafka settings.
    pub fn producer_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("bootstrap.servers", self.bootstrap_servers.clone()),
            ("client.id", self.client_id.clone()),
            // Exactly one copy per send and per-partition order even when sends are retried.
            ("enable.idempotence", "true".into()),
            // Acknowledged only once every in-sync replica has the message.
            ("acks", "all".into()),
            // At most 1 ms spent waiting to fill a batch: latency first; batches still form
            // under load.
            ("linger.ms", "1".into()),
            ("batch.num.messages", "10000".into()),
            // A publish fails (and the relay backs off and publishes again) after this long.
            ("message.timeout.ms", self.message_timeout_ms.to_string()),
            ("compression.type", "lz4".into()),
            ("socket.nagle.disable", "true".into()),
            ("reconnect.backoff.ms", "50".into()),
            ("reconnect.backoff.max.ms", "2000".into()),
        ]
    }

    /// The settings of each subscription's consumer.
    pub fn consumer_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("bootstrap.servers", self.bootstrap_servers.clone()),
            ("client.id", self.client_id.clone()),
            // librdkafka wants a group id; the subscription assigns its partitions itself and
            // neither joins the group nor commits offsets.
            ("group.id", format!("{}-subscriber-{}", self.client_id, uuid::Uuid::now_v7())),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            // Only when an assigned offset no longer exists (retention removed it): read what
            // remains rather than skip to the end. Consumers fill gaps from the store anyway.
            ("auto.offset.reset", "earliest".into()),
            // Answer a fetch as soon as there is one byte, after at most 10 ms otherwise.
            ("fetch.wait.max.ms", "10".into()),
            ("fetch.min.bytes", "1".into()),
            ("enable.partition.eof", "false".into()),
            ("socket.nagle.disable", "true".into()),
            ("reconnect.backoff.ms", "50".into()),
            ("reconnect.backoff.max.ms", "2000".into()),
        ]
    }
}

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
            let metadata = consumer
                .fetch_metadata(Some(&config.topic), REQUEST_TIMEOUT)
                .map_err(|e| unavailable("metadata", e))?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .find(|t| t.name() == config.topic)
                .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                .unwrap_or_default();
            if partitions.is_empty() {
                return Err(BusError::Unavailable(format!("kafka: the topic {} has no partitions", config.topic)));
            }
            // Start exactly at each partition's end as of now: every later event is received.
            let mut assignment = TopicPartitionList::with_capacity(partitions.len());
            for p in partitions {
                let (_, high) = consumer
                    .fetch_watermarks(&config.topic, p, REQUEST_TIMEOUT)
                    .map_err(|e| unavailable("watermarks", e))?;
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
