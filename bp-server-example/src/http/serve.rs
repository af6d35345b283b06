//! Serving a router: over plain HTTP with a listener of our own (`Split`), or over TLS with
//! axum-server (rustls), each connection with the send timeout; graceful shutdown on
//! [`Running::stop`] or, when asked, Ctrl-C / SIGTERM.
//!
//! Some connections are better served without hyper (event streams: see
//! `crate::events::stream_conn`). This module does not know them: whoever serves hands in a
//! [`Divert`], which looks at each new plain-TCP connection and either serves it to its end or
//! gives it back, so that the plumbing stays below the subsystems that use it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::config::ServerConfig;
use crate::http::send_timeout::{Acceptor, SendTimeout};

/// Connections that someone other than hyper serves, told apart by their first bytes.
pub trait Divert: Clone + Send + Sync + 'static {
    /// Serves `tcp`, to its end, when it is one of them (the request still goes through
    /// `router`); gives it back untouched otherwise, for hyper.
    fn divert(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        router: Router,
    ) -> impl Future<Output = Option<TcpStream>> + Send;
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, finishes in-flight requests, and returns.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// Waits until the server stops by itself (a signal).
    pub async fn wait(self) -> std::io::Result<()> {
        let Running { task, shutdown, .. } = self;
        let _keep = shutdown;
        task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Serves `router` on `listener` until [`Running::stop`] (or Ctrl-C / SIGTERM when `signals`),
/// with TLS when `config` names a certificate. Plain-TCP connections go to `divert` first.
/// `stopping` runs once when shutting down begins, before the requests in flight are finished;
/// `jobs` is awaited once serving has ended: it stops the background work that stops with the
/// server.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    config: &ServerConfig,
    signals: bool,
    divert: impl Divert,
    stopping: impl FnOnce() + Send + 'static,
    jobs: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let send_timeout = Duration::from_millis(config.send_timeout_ms);
    let tls = match (&config.tls_cert_path, &config.tls_key_path) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ => None,
    };
    let app = router.clone().into_make_service_with_connect_info::<SocketAddr>();
    let stop = async move {
        tokio::select! {
            _ = rx => {}
            _ = shutdown_signal(), if signals => {}
        }
        tracing::info!("shutting down: finishing requests in flight");
        stopping();
    };
    let task = tokio::spawn(async move {
        let result = match tls {
            None => {
                listener.set_nonblocking(true)?;
                let listener = Split::new(tokio::net::TcpListener::from_std(listener)?, router, send_timeout, divert)?;
                // (`tap_io` only so that axum knows the connection's address for ConnectInfo.)
                let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
                axum::serve(listener, app).with_graceful_shutdown(stop).await
            }
            Some((cert, key)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
                let handle = axum_server::Handle::new();
                let h = handle.clone();
                tokio::spawn(async move {
                    stop.await;
                    h.graceful_shutdown(Some(grace));
                });
                let acceptor =
                    axum_server::tls_rustls::RustlsAcceptor::new(config).acceptor(Acceptor { limit: send_timeout });
                axum_server::from_tcp(listener).acceptor(acceptor).handle(handle).serve(app).await
            }
        };
        jobs.await;
        result
    });
    Ok(Running { addr, shutdown: Some(tx), task })
}

/// The plain-TCP listener. Each accepted connection gets TCP_NODELAY (a small write, an event on
/// a stream, must not wait for the client's delayed ACK of the previous one: Nagle, up to 40 ms)
/// and is shown to the [`Divert`]; every connection it gives back is handed to axum and hyper
/// through [`Listener::accept`](axum::serve::Listener::accept), with the send timeout.
struct Split {
    incoming: tokio::sync::mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
    send_timeout: Duration,
}

impl Split {
    fn new(
        listener: tokio::net::TcpListener,
        router: Router,
        send_timeout: Duration,
        divert: impl Divert,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, incoming) = tokio::sync::mpsc::channel(1024);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before it was
                        // accepted: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (tx, router, divert) = (tx.clone(), router.clone(), divert.clone());
                tokio::spawn(async move {
                    if let Some(tcp) = divert.divert(tcp, peer, router).await {
                        // Fails only when the server has stopped taking connections.
                        let _ = tx.send((tcp, peer)).await;
                    }
                });
            }
        });
        Ok(Self { incoming, local, accepting, send_timeout })
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for Split {
    type Io = SendTimeout<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some((tcp, peer)) => (SendTimeout::new(tcp, self.send_timeout), peer),
            // The accepting task is gone (only when this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
