//! What puts events on the hub: the bridge from the event bus (ledger events, from this process's
//! outbox relay or, through Kafka, every replica's) and the audit log's tail (security events).
//! Both are started with the server's background jobs.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bp_core::bus::EventBus;
use bp_core::security::SecurityStore;
use tokio::sync::Notify;

use crate::events::hub::{Hub, Outgoing};

/// The configured external bus (Kafka), connected; `None` for the in-process bus.
pub async fn connect_bus(config: &crate::config::BusConfig) -> Result<Option<Arc<dyn EventBus>>, String> {
    match config.kind {
        crate::config::BusKind::InProcess => Ok(None),
        #[cfg(feature = "kafka")]
        crate::config::BusKind::Kafka => {
            let bus = bp_notify::kafka::KafkaBus::connect(config.kafka.clone())
                .await
                .map_err(|e| format!("connecting the event bus: {e}"))?;
            Ok(Some(Arc::new(bus)))
        }
        #[cfg(not(feature = "kafka"))]
        crate::config::BusKind::Kafka => Err("bus.kind = \"kafka\" needs the `kafka` feature".into()),
    }
}

/// Forwards every event of the bus that a stream of this process follows to its hub, its JSON
/// made once. Subscribes first (retrying with back-off while the bus is unreachable), then says so on `subscribed`: the
/// relay starts only then, so that this process misses none of its own events.
pub async fn bridge(bus: Arc<dyn EventBus>, hub: Arc<Hub>, subscribed: tokio::sync::oneshot::Sender<()>) {
    let mut wait = Duration::from_millis(100);
    let mut subscription = loop {
        match bus.subscribe().await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "subscribing to the event bus failed");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    let _ = subscribed.send(());
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        match subscription.next().await {
            // The JSON of an event no stream follows is not made: most payments have no
            // stream open on their accounts.
            Some(Ok(event)) if hub.follows(event.account_id) => {
                if let Some(out) = Outgoing::ledger(event) {
                    // No stream open by now is not an error.
                    hub.publish(out);
                }
            }
            Some(Ok(_)) => {}
            // The bridge fell behind the in-process bus, or Kafka is unreachable for a moment
            // (the adapter reconnects by itself). Streams that miss an event fill the gap from
            // the store when the account's next event arrives.
            Some(Err(e)) => {
                metrics::counter!("bp_bus_receive_errors_total").increment(1);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "receiving from the event bus failed");
                    last_warning = Some(std::time::Instant::now());
                }
            }
            None => return,
        }
    }
}

/// Reads the audit log as it grows and puts the entries that name a customer on the hub: the
/// security events of the streams. Woken at once by this process's audit writes (`written`), and
/// every 250 ms for other processes' (replicas sharing the security store). `reached` says how
/// far it has put entries on the hub.
pub async fn tail_audit(
    security: Arc<dyn SecurityStore>,
    hub: Arc<Hub>,
    written: Arc<Notify>,
    reached: Arc<AtomicU64>,
) {
    use std::sync::atomic::Ordering;
    // Start at the log's end: streams replay older entries from the store themselves.
    let mut position = loop {
        match security.audit_end().await {
            Ok(end) => break end,
            Err(e) => {
                tracing::warn!(error = %e, "reading the audit log failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    reached.store(position, Ordering::Release);
    loop {
        let page = match security.audit_after(position, 500).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "reading the audit log failed");
                Vec::new()
            }
        };
        if page.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(250), written.notified()).await;
            continue;
        }
        for entry in page {
            position = entry.position;
            if entry.customer_id.is_some() {
                if let Some(out) = Outgoing::security(entry) {
                    hub.publish(out);
                }
            }
        }
        // After sending: a stream that read this position has every later entry coming live.
        reached.store(position, Ordering::Release);
    }
}
