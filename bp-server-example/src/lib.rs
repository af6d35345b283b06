//! bp-server-example: the reference API server of the bp Bank Payments platform. It serves the
//! v1 REST API, its own OAuth2 authorization server and OpenID provider, and strong customer
//! authentication, over the embedded SQLite store (or the MongoDB store, `storage.kind`), with
//! Server-Sent Events of the customers' accounts and the web app.
//!
//! [`start`] runs a server from a [`config::Config`]; the binary adds a CLI around it.
//!
//! # Layers
//!
//! One folder or file per subsystem. A top-level module imports only modules of the layers below
//! its own, lowest first (`tests/layers.rs` checks every `crate::` and `super::` path against this
//! list, so no two of them import each other):
//!
//! 1. `config`, `logs`: the configuration (defaults, TOML file, environment); the log lines.
//! 2. `http`: HTTP plumbing: problems, extractors, middleware, serving, the web app's files.
//! 3. `auth`: the OAuth2/OIDC provider, tokens, bearer extractors, lockout, the audit log.
//! 4. `events`, `external`, `loans`: the event-stream engine: hub, client streams, cursors,
//!    tickets, bridge, pumps; the outside parties: the rail connected from the configuration (or
//!    the simulator in development mode) and applying what is learnt about a payment to its
//!    record; a loan's steps (the provider's decision, collecting instalments) on its record.
//! 5. `state`: `AppState`, which composes the stores (`Stores`, opened from `[storage]`), the
//!    provider and the engine.
//! 6. `v1`, `rail_webhooks`, `jobs`, `demo`: the v1 resources; the rail's webhook receivers;
//!    the background jobs (the external payments' worker among them); the demo data.
//! 7. `app`, `testkit`: the whole router and serving it with the jobs; (feature `testkit`) a
//!    customer and the sign-in, for tests and examples.
//!
//! Lower layers learn about higher ones only through what is handed to them: `http` serves the
//! event-stream connections through the `http::serve::Divert` that `app` passes in; `auth` takes
//! its own state (`auth::Provider`), which `state` composes; the `events` engine takes the stores,
//! the hub and the bus (`events::Sources`), never `AppState`.

pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod events;
pub mod external;
pub mod http;
pub mod jobs;
pub mod loans;
pub mod logs;
pub mod rail_webhooks;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod v1;

use std::sync::Arc;

use bp_core::clock::SystemClock;

use crate::auth::tokens::Keys;
use crate::config::{Config, Mode};
use crate::state::{AppState, Stores};

/// A started server and what it seeded.
#[derive(Debug)]
pub struct Started {
    /// The server.
    pub running: http::serve::Running,
    /// The shared state (for tools and tests embedding the server).
    pub state: Arc<AppState>,
    /// Demo credentials, when this start seeded the demo.
    pub demo: Option<Vec<demo::Enrolled>>,
    /// Where `/metrics` is served, when on a listener of its own.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Opens the store and keys of `config`, connects the bus it names, seeds the demo on a first
/// development start, binds the listener and serves. `signals`: stop on Ctrl-C / SIGTERM as well.
pub async fn start(config: Config, signals: bool) -> Result<Started, String> {
    config.validate().map_err(|e| e.to_string())?;
    let bus = events::bridge::connect_bus(&config.bus).await?;
    serve_on(config, signals, bus).await
}

/// Like [`start`], on an event bus of the caller's (any adapter of
/// [`bp_core::bus::EventBus`]) instead of the one `bus.kind` names: for applications that embed
/// the server next to their own bus.
pub async fn start_with_bus(
    config: Config,
    signals: bool,
    bus: Arc<dyn bp_core::bus::EventBus>,
) -> Result<Started, String> {
    config.validate().map_err(|e| e.to_string())?;
    serve_on(config, signals, Some(bus)).await
}

async fn serve_on(
    config: Config,
    signals: bool,
    bus: Option<Arc<dyn bp_core::bus::EventBus>>,
) -> Result<Started, String> {
    std::fs::create_dir_all(&config.storage.data_dir)
        .map_err(|e| format!("creating {}: {e}", config.storage.data_dir.display()))?;
    let stores = Stores::open(&config).await?;
    let key_path = config.data_path(&config.auth.signing_key_file);
    let keys = Keys::load_or_create(&key_path, config.mode == Mode::Development).map_err(|e| e.to_string())?;
    let accepted: Vec<_> = config.auth.accepted_key_files.iter().map(|p| config.data_path(p)).collect();
    let keys = keys.accepting(&accepted).map_err(|e| e.to_string())?;
    let listener = std::net::TcpListener::bind(config.server.listen)
        .map_err(|e| format!("binding {}: {e}", config.server.listen))?;
    let metrics = match config.server.metrics_listen {
        Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|e| format!("binding {addr}: {e}"))?),
        None => None,
    };
    let metrics_addr =
        metrics.as_ref().map(std::net::TcpListener::local_addr).transpose().map_err(|e| e.to_string())?;
    let mut config = config;
    // An ephemeral port (0) becomes the real one, so that the issuer URL is right.
    config.server.listen = listener.local_addr().map_err(|e| e.to_string())?;
    let external = external::connect(&config, &config.issuer()).await?;
    let state =
        AppState::new(config, stores.ledger, stores.services, stores.security, keys, Arc::new(SystemClock), bus)?
            .with_external(external);
    let state = Arc::new(AppState { sqlite_writer: stores.sqlite_writer, ..state });
    // Sessions revoked within an access token's lifetime stay refused across restarts.
    let since = state.now() - chrono::Duration::seconds(600);
    for session in state.security.sessions_revoked_since(since).await.map_err(|e| e.to_string())? {
        state.auth.verifier.revoke(session);
    }
    let demo = if state.config.mode == Mode::Development && state.config.demo {
        let file = state.config.data_path(std::path::Path::new(demo::CREDENTIALS_FILE));
        demo::seed(&state, &file).await?
    } else {
        None
    };
    let running = app::serve(state.clone(), listener, metrics, signals).await.map_err(|e| e.to_string())?;
    Ok(Started { running, state, demo, metrics_addr })
}
