//! HTTP plumbing: problems (RFC 9457), extractors whose rejections are problems, the send
//! timeout of hyper's connections, and the web app's files.

pub mod extract;
pub mod problem;
pub mod send_timeout;
pub mod web;
