//! The event-stream engine: Server-Sent Events carrying the signed-in customer's own accounts'
//! events, to many clients per process. The routes that open streams (`GET /v1/events`, `POST
//! /v1/events/ticket`) are `crate::v1::events`; they hand each stream to this module.
//!
//! A stream carries the ledger events of the customer's accounts and the customer's security
//! events (audit log entries naming them, `security.<kind>`). Each event's SSE `id` is a cursor
//! ([`cursor`]) naming the audit position and the last sequence number of every account
//! delivered. A client that reconnects with `Last-Event-ID` receives every later event, replayed
//! from the store, then the live ones — with no gap and no duplicate (the sequencer of
//! `bp_notify` drops what was delivered and fills gaps from the store). Comments every
//! `bus.stream_heartbeat_s` (15 s) keep idle connections open through proxies. A stream ends when
//! its session is revoked (sign-out, refresh token reuse) or its authority expires. Browsers,
//! which cannot send a bearer token with `EventSource`, open it with a single-use [`tickets`]
//! ticket.
//!
//! **Fan-out.** One task, the [`bridge`], subscribes to the bus (in-process or Kafka) and puts
//! each event, its SSE lines made once, on this process's [`Hub`], which routes it to its
//! customer's ring (`bus.stream_buffer_events` events, shared by that customer's streams): a
//! stream wakes only for its customer's events; the audit log's tail (also in [`bridge`]) does the
//! same for security events. A stream ([`stream`]) is read by whichever transport takes it: the
//! response body under hyper, or, for a connection that opens with the stream's request, the lean
//! connection of [`stream_conn`], whose live streams are written by [`pump`]s, many per task. A
//! client that falls a whole ring behind is disconnected (it resumes from its cursor); no other
//! client waits for it.
//!
//! The engine takes only what it reads (the stores, the hub, the bus: [`Sources`] and plain
//! arguments), never the server's state, so that it sits below the routes and jobs that use it;
//! its own modules depend on each other as the engine needs (stream ↔ pump ↔ stream_conn).

pub mod bridge;
pub mod cursor;
pub mod hub;
pub mod pump;
pub mod stream;
pub mod stream_conn;
pub mod tickets;

pub use crate::events::hub::Hub;
pub use crate::events::stream::{ClientStream, Sources, Step, response};
pub use crate::events::tickets::Tickets;
