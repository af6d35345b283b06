//! HTTP plumbing, below every subsystem that serves over HTTP: problems (RFC 9457), extractors
//! whose rejections are problems, the client's address behind trusted proxies, the layers every
//! request passes through, serving (plain TCP and TLS, graceful shutdown), the send timeout of
//! hyper's connections, and the web app's files.
//! Nothing here imports a module above it.

pub mod client;
pub mod extract;
pub mod middleware;
pub mod problem;
pub mod send_timeout;
pub mod serve;
pub mod web;
