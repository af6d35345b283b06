//! The server's shared state, [`AppState`]: the configuration, the ledger and the security
//! records, and what is composed over them — bp-core's payments façade and strong customer
//! authentication (with the server's [`ServerHooks`]), the OAuth2 provider ([`crate::auth`]) and
//! the event-stream engine ([`crate::events`]). The v1 handlers take all of it; the provider's
//! own handlers and extractors take only their part ([`HasProvider`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bp_core::clock::Clock;
use bp_core::hooks::{Hooks, PaymentOutcome};
use bp_core::payments::Payments;
use bp_core::sca::Sca;
use bp_core::security::{AuditEntry, AuditKind, SecurityStore};
use bp_core::{Ledger, Store, Timestamp};
use tokio::sync::Notify;

use crate::auth::Provider;
use crate::auth::bearer::HasProvider;
use crate::auth::tokens::Keys;
use crate::config::{Config, MongoSettings, StorageKind};
use crate::events::{Hub, Sources, Tickets};
use crate::external::External;

/// The stores the server runs on, opened from `[storage]`: one SQLite file, or one MongoDB
/// database, holds all three.
#[derive(Clone)]
pub struct Stores {
    /// The ledger.
    pub ledger: Arc<dyn Store>,
    /// The external services' records.
    pub services: Arc<dyn bp_core::service_store::ServiceStore>,
    /// Security records.
    pub security: Arc<dyn SecurityStore>,
    /// The SQLite writer's counters, on SQLite.
    pub sqlite_writer: Option<Arc<bp_storage::sqlite::WriterStats>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// Opens the store `storage.kind` names: the SQLite file in the data folder (created when
    /// missing), or the MongoDB database (its log read, which fails after
    /// `storage.mongodb.timeout_ms` when the server cannot be reached).
    pub async fn open(config: &Config) -> Result<Self, String> {
        match config.storage.kind {
            StorageKind::Sqlite => {
                use bp_storage::sqlite::{SqliteConfig, SqliteStore};
                let db = config.data_path(&config.storage.sqlite_file);
                let store = SqliteStore::open(&db, SqliteConfig::default())
                    .map_err(|e| format!("opening {}: {e}", db.display()))?;
                let sqlite_writer = Some(store.writer_stats_shared());
                Ok(Self { sqlite_writer, ..Self::of(Arc::new(store)) })
            }
            StorageKind::Mongodb => open_mongodb(&config.storage.mongodb).await,
        }
    }

    /// One store that is all three.
    pub fn of<S>(store: Arc<S>) -> Self
    where
        S: Store + bp_core::service_store::ServiceStore + SecurityStore + 'static,
    {
        Self { ledger: store.clone(), services: store.clone(), security: store, sqlite_writer: None }
    }
}

#[cfg(feature = "mongodb")]
async fn open_mongodb(settings: &MongoSettings) -> Result<Stores, String> {
    use bp_storage::mongodb::{MongoConfig, MongoStore};
    let uri = settings.uri.as_ref().ok_or("storage.mongodb.uri is required with storage.kind = \"mongodb\"")?;
    let config = MongoConfig { timeout_ms: settings.timeout_ms, ..MongoConfig::default() };
    let store = MongoStore::connect(uri.expose(), &settings.database, config).await.map_err(|e| {
        // The driver's own message is the useful part (a refused connection, a bad option):
        // the whole chain, with anything of the password scrubbed out.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        uri.scrub(&format!("opening the MongoDB store (database {} at {uri}): {text}", settings.database))
    })?;
    Ok(Stores::of(Arc::new(store)))
}

#[cfg(not(feature = "mongodb"))]
async fn open_mongodb(_: &MongoSettings) -> Result<Stores, String> {
    Err("storage.kind = \"mongodb\" needs a server built with the `mongodb` feature (the default)".to_owned())
}

/// Everything the handlers share.
pub struct AppState {
    /// Configuration.
    pub config: Config,
    /// The ledger.
    pub ledger: Ledger<dyn Store>,
    /// Security records.
    pub security: Arc<dyn SecurityStore>,
    /// The payment flow (bp-core): payments with SCA, their confirmation, beneficiaries; its
    /// `sca()` is the provider's too.
    pub payments: Payments,
    /// The OAuth2 provider, the token checks and the security bookkeeping.
    pub auth: Arc<Provider>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The event bus the relay publishes to: in-process, or Kafka.
    pub bus: Arc<dyn bp_core::bus::EventBus>,
    /// This process's fan-out to its event streams: the bridge subscribes to `bus` once and
    /// forwards every event here.
    pub hub: Arc<Hub>,
    /// How far the audit log's tail has put entries on the hub.
    pub audit_position: Arc<AtomicU64>,
    /// Wakes the outbox relay after a commit.
    pub relay_waker: Arc<Notify>,
    /// The outbox relay's counters, once it runs.
    pub relay_stats: std::sync::OnceLock<Arc<bp_notify::relay::RelayStats>>,
    /// The SQLite writer's counters, when the ledger is on SQLite.
    pub sqlite_writer: Option<Arc<bp_storage::sqlite::WriterStats>>,
    /// Unspent event-stream tickets.
    pub tickets: Tickets,
    /// The external services' records (the same store as the ledger's).
    pub services: Arc<dyn bp_core::service_store::ServiceStore>,
    /// The connected rail, when external payments are on.
    pub external: Option<Arc<External>>,
    /// Wakes the external payments' worker: a payment was handed to the rail.
    pub external_wake: Arc<Notify>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("issuer", &self.auth.issuer).finish_non_exhaustive()
    }
}

impl AppState {
    /// State over the given stores and keys.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        services: Arc<dyn bp_core::service_store::ServiceStore>,
        security: Arc<dyn SecurityStore>,
        keys: Keys,
        clock: Arc<dyn Clock>,
        external_bus: Option<Arc<dyn bp_core::bus::EventBus>>,
    ) -> Result<Self, String> {
        let ledger = Ledger::new(store);
        let relay_waker = Arc::new(Notify::new());
        let audit_written = Arc::new(Notify::new());
        let external_wake = Arc::new(Notify::new());
        let hooks = ServerHooks {
            relay: Arc::clone(&relay_waker),
            audit: Arc::clone(&audit_written),
            external: Arc::clone(&external_wake),
        };
        let sca = Sca::new(Arc::clone(&security), Arc::clone(&clock), config.sca.clone(), config.lockout.clone())
            .with_hooks(Arc::new(hooks));
        let payments = Payments::new(ledger.clone(), sca.clone());
        let auth = Provider::new(&config, ledger.clone(), keys, Arc::clone(&clock), sca, audit_written)?;
        let bus = external_bus.unwrap_or_else(|| Arc::new(bp_notify::broadcast::BroadcastBus::default()));
        let hub = Arc::new(Hub::new(config.bus.stream_buffer_events));
        Ok(Self {
            ledger,
            security,
            payments,
            auth: Arc::new(auth),
            clock,
            bus,
            hub,
            audit_position: Arc::new(AtomicU64::new(0)),
            relay_waker,
            relay_stats: std::sync::OnceLock::new(),
            sqlite_writer: None,
            tickets: Tickets::default(),
            services,
            external: None,
            external_wake,
            config,
        })
    }

    /// The same state with the connected rail (`crate::external::connect`): the payments
    /// façade then pays to IBANs (`Payments::with_external`), writing the hold and the record
    /// that the worker submits. Without a rail it keeps refusing them, so no money is held
    /// for a payment nothing would send.
    pub fn with_external(mut self, external: Option<External>) -> Self {
        if let Some(external) = &external {
            self.payments = self.payments.with_external(Arc::clone(&self.services), external.bank.clone());
            // Payments abroad need the quotes and the rail that carries them.
            if let (Some(fx), Some(_)) = (&external.fx, &external.correspondent) {
                self.payments = self.payments.with_fx(Arc::clone(fx));
            }
        }
        self.external = external.map(Arc::new);
        self
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// What an event stream reads: the ledger's store, the audit log, the hub, and the heartbeat
    /// period.
    pub fn stream_sources(&self) -> Sources {
        Sources {
            store: Arc::clone(self.ledger.store()),
            security: Arc::clone(&self.security),
            hub: Arc::clone(&self.hub),
            heartbeat_every: Duration::from_secs(self.config.bus.stream_heartbeat_s),
        }
    }
}

impl HasProvider for Arc<AppState> {
    fn provider(&self) -> &Provider {
        &self.auth
    }
}

/// What bp-core's façades tell the server after the fact: a commit wakes the outbox relay, an
/// audit write wakes the event streams' audit tail and is logged (kind and customer id, never
/// its detail), a payment handed to the rail wakes the external payments' worker, and payments
/// and lockouts are counted.
#[derive(Debug)]
pub struct ServerHooks {
    relay: Arc<Notify>,
    audit: Arc<Notify>,
    external: Arc<Notify>,
}

impl Hooks for ServerHooks {
    fn ledger_changed(&self) {
        self.relay.notify_one();
    }

    fn audited(&self, entry: &AuditEntry) {
        self.audit.notify_one();
        if entry.kind == AuditKind::LockedOut {
            metrics::counter!("bp_lockouts_total").increment(1);
        }
        let customer = entry.customer_id.map_or_else(|| "-".to_owned(), |c| c.to_string());
        tracing::info!(audit = ?entry.kind, customer = %customer, "security event");
    }

    fn payment(&self, outcome: PaymentOutcome) {
        let outcome = match outcome {
            PaymentOutcome::Posted => "posted",
            PaymentOutcome::ScaRequired => "sca_required",
            PaymentOutcome::Submitted => {
                self.external.notify_one();
                "submitted"
            }
            PaymentOutcome::Rejected => "rejected",
        };
        metrics::counter!("bp_transfers_total", "outcome" => outcome).increment(1);
    }
}
