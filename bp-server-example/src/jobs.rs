//! The server's background jobs, which run while it serves and stop with it: the outbox relay
//! (committed events, store → bus) with the bridge it starts first (bus → this process's
//! streams), the audit log's tail (security events → streams), the sweeper of payments whose
//! SCA was not answered in time, and the end of sessions past their idle deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::state::AppState;

/// The running jobs; dropping it aborts them.
#[derive(Debug)]
pub struct Jobs {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Jobs {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts every job over `state`.
pub fn start(state: &Arc<AppState>) -> Jobs {
    let sweeper = tokio::spawn(expire_holds(Arc::clone(state)));
    let idle = tokio::spawn(end_idle_sessions(Arc::clone(state)));
    let relay = spawn_relay(state);
    let audit_tail = tokio::spawn(crate::events::bridge::tail_audit(
        Arc::clone(&state.security),
        Arc::clone(&state.hub),
        Arc::clone(&state.auth.audit_written),
        Arc::clone(&state.audit_position),
    ));
    Jobs { tasks: vec![sweeper, idle, relay, audit_tail] }
}

/// Runs the bridge from the bus to this server's streams, then the outbox relay from the store to
/// the bus, woken after each commit.
fn spawn_relay(state: &Arc<AppState>) -> tokio::task::JoinHandle<()> {
    let config = bp_notify::relay::RelayConfig {
        name: state.config.bus.relay_cursor_name(),
        idle_wait_ms: 100,
        ..Default::default()
    };
    let mut relay = bp_notify::relay::Relay::new(Arc::clone(state.ledger.store()), Arc::clone(&state.bus), config);
    relay.set_waker(Arc::clone(&state.relay_waker));
    let _ = state.relay_stats.set(relay.stats());
    let state = Arc::clone(state);
    tokio::spawn(async move {
        // The bridge ends with this task (also when it is aborted while waiting for it).
        let (subscribed, ready) = oneshot::channel();
        let _bridge = AbortOnDrop(tokio::spawn(crate::events::bridge::bridge(
            Arc::clone(&state.bus),
            Arc::clone(&state.hub),
            subscribed,
        )));
        let _ = ready.await;
        relay.run(Arc::clone(&state.clock), std::future::pending()).await;
    })
}

/// Aborts a task when dropped (with the task that owns it).
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Voids payments whose SCA was not answered in time, releasing their holds.
async fn expire_holds(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match state.ledger.expire_holds(state.now(), 500).await {
            Ok(0) => {}
            Ok(n) => {
                state.relay_waker.notify_one();
                tracing::info!(voided = n, "expired unconfirmed payments");
            }
            Err(e) => tracing::warn!(error = %e, "expiring holds failed"),
        }
    }
}

/// Ends, every second, the sessions this process has seen whose idle deadline has passed, so
/// that their event streams end on time (the audit entry ends them).
async fn end_idle_sessions(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        state.auth.end_idle_sessions().await;
    }
}
