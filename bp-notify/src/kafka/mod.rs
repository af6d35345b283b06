//! The Kafka event bus: its configuration (always, so that a server can parse and explain it) and
//! the [`KafkaBus`] adapter (feature `kafka`: librdkafka through `rdkafka`).
//!
//! **Publishing.** One idempotent producer (`enable.idempotence`, `acks=all`): a retried send
//! never writes a message twice, and each partition keeps the order of the sends. The message key
//! is the account id, so all of an account's events go to one partition and keep their order. The
//! value is the event's JSON (the same as on `GET /v1/events`; schemas in `docs/events/`, guide in `docs/events.md`), with
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

#[cfg(feature = "kafka")]
mod bus;
#[cfg(feature = "kafka")]
pub use bus::KafkaBus;

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
