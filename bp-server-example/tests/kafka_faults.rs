//! Fault tests against a real Apache Kafka broker (`--ignored`; `scripts/test.sh` starts the
//! broker and names it in `BP_KAFKA_BOOTSTRAP`, its script in `BP_KAFKA_BROKER_SCRIPT` and its
//! state in `BP_KAFKA_STATE_DIR`, so that a test can stop and start it):
//!
//! - the broker stops while transfers keep being posted, then starts again: a connected SSE
//!   client receives every event, in order per account, none twice;
//! - the server process is killed during a burst (with the broker down, so that committed events
//!   are certainly waiting) and restarted: its relay publishes what was committed and not yet
//!   published, and this test process — subscribed through the Kafka bus adapter like another
//!   API replica — receives every event the server committed, in order per account, once each
//!   after dropping the redeliveries by (account, sequence).
//!
//! The cases stop the shared broker, so they run one at a time.
#![cfg(feature = "kafka")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bp_core::bus::{BusError, EventBus as _};
use bp_core::ids::AccountId;
use bp_core::store::Store as _;
use bp_notify::kafka::{KafkaBus, KafkaConfig};
use bp_server_example::config::BusKind;
use common::sse::Stream;
use common::{Api, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ALL: &str = "openid profile accounts payments offline_access";

/// One case at a time: they stop and start the one broker.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The broker `scripts/test.sh` started.
struct Broker {
    bootstrap: String,
    script: PathBuf,
    dir: PathBuf,
}

impl Broker {
    fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: these tests need the real Kafka broker that scripts/test.sh starts")
            })
        };
        Self {
            bootstrap: var("BP_KAFKA_BOOTSTRAP"),
            script: var("BP_KAFKA_BROKER_SCRIPT").into(),
            dir: var("BP_KAFKA_STATE_DIR").into(),
        }
    }

    async fn run(&self, command: &'static str) -> String {
        let (script, dir) = (self.script.clone(), self.dir.clone());
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("bash")
                .arg(script)
                .arg(command)
                .arg(dir)
                .output()
                .expect("run the broker script")
        })
        .await
        .expect("task");
        assert!(output.status.success(), "kafka-broker.sh {command}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    async fn stop(&self) {
        self.run("stop").await;
    }

    async fn start(&self) {
        assert_eq!(self.run("start").await, self.bootstrap, "the broker comes back at the same address");
    }

    /// A fresh topic on this broker.
    fn config(&self) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: self.bootstrap.clone(),
            topic: format!("bp.fault.{}", uuid::Uuid::now_v7()),
            partitions: 4,
            ..KafkaConfig::default()
        }
    }
}

/// Per account, the sequence numbers in the order received.
fn by_account(events: impl IntoIterator<Item = (AccountId, u64)>) -> BTreeMap<AccountId, Vec<u64>> {
    let mut map: BTreeMap<AccountId, Vec<u64>> = BTreeMap::new();
    for (account, seq) in events {
        map.entry(account).or_default().push(seq);
    }
    map
}

/// Everything the store ever committed, in commit order.
async fn outbox(store: &bp_storage::sqlite::SqliteStore) -> Vec<bp_core::store::OutboxEntry> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |o: &bp_core::store::OutboxEntry| o.position);
        let page = store.outbox_after(after, 1_000).await.expect("outbox");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

fn sse_key(m: &common::sse::Message) -> (AccountId, u64) {
    let account = serde_json::from_value(m.data["account_id"].clone()).expect("account id");
    (account, m.data["seq"].as_u64().expect("seq"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Kafka broker: BP_KAFKA_BOOTSTRAP (scripts/test.sh starts one)"]
async fn a_broker_outage_delays_events_and_a_connected_client_still_gets_each_once_in_order() {
    let _one_at_a_time = SERIAL.lock().await;
    let broker = Broker::from_env();
    let kafka = broker.config();
    let mut server = Server::start_with(|c| {
        c.bus.kind = BusKind::Kafka;
        c.bus.kafka = kafka;
    })
    .await;
    let ada = server.customer("ada-outage", 1_000_000, 0).await;
    let second = server.open_eur(ada.id).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let (_, account) = api.get(&format!("/v1/accounts/{second}")).await;
    let to = account["number"].as_str().expect("number").to_owned();
    let mut start = BTreeMap::new();
    for id in [ada.eur, second] {
        start.insert(id, server.state.ledger.account(id).await.expect("account").last_event_seq);
    }
    let mut stream = Stream::open(&server, &api, None).await;
    let post = |i: u32| {
        let api = api.clone();
        let body = json!({ "from_account": ada.eur, "to_account_number": to, "amount": { "amount": "0.01", "currency": "EUR" } });
        async move {
            let (status, answer) = api.post("/v1/transfers", &body, Some(&format!("outage-{i}"))).await;
            assert_eq!(status, StatusCode::CREATED, "{answer}");
        }
    };

    // Ten transfers reach the client through Kafka (two events each: debit and credit).
    for i in 0..10 {
        post(i).await;
    }
    let mut received = stream.next_within(20, Duration::from_secs(30)).await;

    // The broker goes away; payments go on (the ledger does not need the bus).
    broker.stop().await;
    for i in 10..30 {
        post(i).await;
    }
    assert!(
        stream.quiet_for(Duration::from_secs(1)).await,
        "with the broker down nothing arrives: the events do travel through Kafka"
    );
    broker.start().await;
    for i in 30..40 {
        post(i).await;
    }
    received.extend(stream.next_within(60, Duration::from_secs(60)).await);

    let got = by_account(received.iter().map(sse_key));
    for (id, from) in &start {
        let end = server.state.ledger.account(*id).await.expect("account").last_event_seq;
        assert_eq!(got.get(id), Some(&(from + 1..=end).collect::<Vec<_>>()), "every event of {id}, once, in order");
    }
    assert!(stream.quiet_for(Duration::from_millis(500)).await, "and nothing twice");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Kafka broker: BP_KAFKA_BOOTSTRAP (scripts/test.sh starts one)"]
async fn a_killed_server_publishes_on_restart_and_another_process_gets_every_event_once_in_order() {
    let _one_at_a_time = SERIAL.lock().await;
    let broker = Broker::from_env();
    let kafka = broker.config();

    // This process subscribes first, as another API replica would: it sees every event.
    let bus = KafkaBus::connect(kafka.clone()).await.expect("connect");
    let mut subscription = bus.subscribe().await.expect("subscribe");
    let seen: Arc<Mutex<Vec<(AccountId, u64)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let collector = tokio::spawn(async move {
        while let Some(next) = subscription.next().await {
            match next {
                Ok(e) => sink.lock().expect("lock").push((e.account_id, e.seq)),
                Err(BusError::Unavailable(_)) => {} // the broker is down for a while: transient
                Err(e) => panic!("the subscription failed: {e}"),
            }
        }
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let partitions = kafka.partitions.to_string();
    let env = [
        ("BP_BUS__KIND", "kafka"),
        ("BP_BUS__KAFKA__BOOTSTRAP_SERVERS", kafka.bootstrap_servers.as_str()),
        ("BP_BUS__KAFKA__TOPIC", kafka.topic.as_str()),
        ("BP_BUS__KAFKA__PARTITIONS", partitions.as_str()),
        // The restarted process waits for the killed one's lease on the relay to end.
        ("BP_SERVER__JOB_LEASE_MS", "1000"),
    ];
    let (base, _logs, mut child) = common::spawn_binary(dir.path(), &env);
    let ada = common::demo_login(&base, dir.path(), "ada");
    let bob = common::demo_login(&base, dir.path(), "bob");
    let api = |t: &Value| Api::bearer(&base, t);
    let (ada, bob) = (api(&ada), api(&bob));
    let (_, accounts) = ada.get("/v1/accounts").await;
    let from = accounts["accounts"].as_array().expect("accounts").iter().find(|a| a["currency"] == "EUR").expect("EUR")
        ["id"]
        .clone();
    let (_, accounts) = bob.get("/v1/accounts").await;
    let to = accounts["accounts"].as_array().expect("accounts").iter().find(|a| a["currency"] == "EUR").expect("EUR")["number"].clone();

    // A burst from four clients (low-value payments post; the others wait for SCA as holds: both
    // commit events). The broker stops during it, then the server is killed.
    let burst: Vec<_> = (0..4)
        .map(|c| {
            let ada = ada.clone();
            let body = json!({ "from_account": from, "to_account_number": to, "amount": { "amount": "0.01", "currency": "EUR" } });
            tokio::spawn(async move {
                let mut committed = 0u32;
                for i in 0.. {
                    let sent = ada
                        .http
                        .post(format!("{}/v1/transfers", ada.base))
                        .bearer_auth(&ada.token)
                        .header("Idempotency-Key", format!("burst-{c}-{i}"))
                        .json(&body)
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => committed += 1,
                        Ok(r) => panic!("refused: {}", r.status()),
                        Err(_) => return committed, // the server is gone
                    }
                }
                committed
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().expect("kill -9 the server");
    child.wait().expect("wait");
    let mut committed = 0;
    for task in burst {
        committed += task.await.expect("client");
    }
    assert!(committed > 0, "the burst committed payments before the kill");

    // Committed, not published: the relay's cursor is behind the end of the outbox.
    let db = dir.path().join("bp.sqlite");
    let (cursor, end) = {
        let store = bp_storage::sqlite::SqliteStore::open(&db, Default::default()).expect("open the store");
        let cursor = store.cursor(&format!("kafka.{}", kafka.topic)).await.expect("cursor");
        let end = outbox(&store).await.last().map_or(cursor, |o| o.position);
        (cursor, end)
    };
    assert!(cursor < end, "events were committed and not published when the server died ({cursor} < {end})");

    broker.start().await;
    let (base, _logs, mut child) = common::spawn_binary(dir.path(), &env);
    // Wait until the relay has published past the old end of the outbox, then stop gracefully.
    let mut position = 0;
    for _ in 0..600 {
        let metrics = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.expect("text");
        position = metrics
            .lines()
            .find_map(|l| l.strip_prefix("bp_relay_position "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64);
        if position >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(position >= end, "the restarted relay published the backlog ({position} < {end})");
    assert!(
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success()
    );
    assert!(child.wait().expect("wait").success());

    // Everything the server ever committed, per account, from its store.
    let committed_events = {
        let store = bp_storage::sqlite::SqliteStore::open(&db, Default::default()).expect("open the store");
        by_account(outbox(&store).await.into_iter().map(|o| (o.event.account_id, o.event.seq)))
    };
    let expected: usize = committed_events.values().map(Vec::len).sum();
    // Wait for this process to have received them all.
    for _ in 0..300 {
        let distinct: usize = {
            let seen = seen.lock().expect("lock");
            let mut keys: Vec<_> = seen.clone();
            keys.sort();
            keys.dedup();
            keys.len()
        };
        if distinct >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    collector.abort();
    let seen = seen.lock().expect("lock").clone();
    let redelivered = seen.len() - {
        let mut keys = seen.clone();
        keys.sort();
        keys.dedup();
        keys.len()
    };
    // What a consumer keeps: each (account, sequence) the first time it arrives.
    let mut first_seen = HashMap::new();
    let kept: Vec<_> = seen.iter().filter(|k| first_seen.insert(**k, ()).is_none()).copied().collect();
    assert_eq!(by_account(kept), committed_events, "every committed event, in order per account");
    eprintln!("{expected} events, {redelivered} delivered again after the kill (dropped by sequence)");
}
