//! Live events: the customer's event stream (Server-Sent Events, `GET /v1/events`) read on a
//! task of its own and handed to the app's listener, reconnecting after failures with a
//! growing delay and resuming from the last event's id (`Last-Event-ID`), so nothing is lost
//! across a reconnect; stopped through the handle it returns.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::client::{BpClient, net};
use crate::error::Error;
use crate::host::EventListener;

/// The first reconnect waits this long; each failure in a row doubles it, up to the maximum.
const RECONNECT_DELAY_MIN_MS: u64 = 500;
const RECONNECT_DELAY_MAX_MS: u64 = 30_000;
/// Failures in a row after which the stream ends (about a quarter of an hour of trying).
const RECONNECTS_MAX: u32 = 40;
/// Longest line of the stream; the server's messages are far smaller.
const LINE_LEN_MAX: usize = 1024 * 1024;
/// The server sends a heartbeat every 15 s: a stream silent for this long is dead.
const READ_TIMEOUT_MS: u64 = 45_000;

/// An event of the customer's accounts or security.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct LiveEvent {
    /// The stream's cursor after this event (pass it to resume from here).
    pub id: String,
    /// The event's type: `transfer.posted`, `account.balance`, `security.sign_in`, …
    pub kind: String,
    /// The event, JSON (its schema is in the project's `docs/events/`).
    pub data: String,
}

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum StreamEnd {
    /// The app stopped it.
    Stopped,
    /// The session ended (signed out, revoked, expired): sign in again.
    SignedOut,
    /// It kept failing; start it again later.
    Failed,
}

/// The stream's state.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum StreamStatus {
    /// Connected and live.
    Connected,
    /// The connection failed; the next try is in `delay_ms`.
    Reconnecting {
        /// Failures in a row so far.
        attempt: u32,
        /// Milliseconds until the next try.
        delay_ms: u64,
    },
    /// Ended; no more events or statuses follow.
    Ended {
        /// Why.
        reason: StreamEnd,
    },
}

/// A running event stream; stop it when the screen that shows live data goes away.
#[derive(Debug, uniffi::Object)]
pub struct EventStream {
    stop: watch::Sender<bool>,
}

#[uniffi::export]
impl EventStream {
    /// Stops the stream; the listener's last status is `Ended { Stopped }`.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Starts the stream on the current runtime.
pub(crate) fn start(
    client: Arc<BpClient>,
    listener: Arc<dyn EventListener>,
    last_event_id: Option<String>,
) -> Arc<EventStream> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(run(client, listener, last_event_id, stopped));
    Arc::new(EventStream { stop })
}

async fn run(
    client: Arc<BpClient>,
    listener: Arc<dyn EventListener>,
    mut last_event_id: Option<String>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let reason = loop {
        let opened = tokio::select! {
            opened = client.open_stream(last_event_id.as_deref()) => opened,
            _ = stopped.wait_for(|s| *s) => break StreamEnd::Stopped,
        };
        match opened {
            Ok(response) => {
                failures = 0;
                listener.on_status(StreamStatus::Connected);
                // However the stream ends (the server closed it, the connection failed, it went
                // silent), it is opened again below, from the last event's id; a stream the
                // server ended because its session was revoked reopens as signed out.
                tokio::select! {
                    _ = read_events(response, listener.as_ref(), &mut last_event_id) => {}
                    _ = stopped.wait_for(|s| *s) => break StreamEnd::Stopped,
                }
            }
            Err(Error::SignedOut) => break StreamEnd::SignedOut,
            Err(e) if e.is_final_answer() || e.problem_slug() == Some("unauthorized") => break StreamEnd::SignedOut,
            Err(_) => {}
        }
        failures += 1;
        if failures > RECONNECTS_MAX {
            break StreamEnd::Failed;
        }
        let delay_ms = RECONNECT_DELAY_MIN_MS.saturating_mul(1 << failures.min(16)).min(RECONNECT_DELAY_MAX_MS);
        listener.on_status(StreamStatus::Reconnecting { attempt: failures, delay_ms });
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            _ = stopped.wait_for(|s| *s) => break StreamEnd::Stopped,
        }
    };
    listener.on_status(StreamStatus::Ended { reason });
}

/// Reads messages until the stream ends, handing each event to `listener` and keeping its id.
async fn read_events(
    mut response: reqwest::Response,
    listener: &dyn EventListener,
    last_event_id: &mut Option<String>,
) -> Result<(), Error> {
    let mut parser = Parser::default();
    loop {
        let chunk = tokio::time::timeout(Duration::from_millis(READ_TIMEOUT_MS), response.chunk())
            .await
            .map_err(|_| Error::Decode("the stream went silent".to_owned()))?
            .map_err(net)?;
        let Some(chunk) = chunk else { return Ok(()) };
        for event in parser.push(&chunk)? {
            *last_event_id = Some(event.id.clone());
            listener.on_event(event);
        }
    }
}

/// The Server-Sent Events parser (the WHATWG rules the server's messages need: `event`,
/// `data`, `id`, comments, LF or CRLF line ends).
#[derive(Default)]
struct Parser {
    line: Vec<u8>,
    kind: String,
    data: Vec<String>,
    id: Option<String>,
}

impl Parser {
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<LiveEvent>, Error> {
        let mut events = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() >= LINE_LEN_MAX {
                    return Err(Error::Decode(format!("a stream line longer than {LINE_LEN_MAX} bytes")));
                }
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).map_err(|_| Error::Decode("a stream line is not UTF-8".to_owned()))?;
            if line.is_empty() {
                if let Some(event) = self.dispatch() {
                    events.push(event);
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.kind = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                "id" => self.id = Some(value.to_owned()),
                _ => {}
            }
        }
        Ok(events)
    }

    fn dispatch(&mut self) -> Option<LiveEvent> {
        let kind = std::mem::take(&mut self.kind);
        let data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return None;
        }
        Some(LiveEvent {
            id: self.id.clone().unwrap_or_default(),
            kind: if kind.is_empty() { "message".to_owned() } else { kind },
            data: data.join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_anywhere_are_read_whole() {
        let stream = b": heartbeat\r\n\r\nevent: transfer.posted\r\nid: v2.1.3\r\ndata: {\"a\":1}\r\n\r\nevent: x\nid: v2.1.4\ndata: l1\ndata: l2\n\n";
        for split in 0..stream.len() {
            let mut parser = Parser::default();
            let mut events = parser.push(&stream[..split]).expect("first part");
            events.extend(parser.push(&stream[split..]).expect("second part"));
            assert_eq!(
                events,
                vec![
                    LiveEvent {
                        id: "v2.1.3".to_owned(),
                        kind: "transfer.posted".to_owned(),
                        data: "{\"a\":1}".to_owned()
                    },
                    LiveEvent { id: "v2.1.4".to_owned(), kind: "x".to_owned(), data: "l1\nl2".to_owned() },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = Parser::default();
        assert!(parser.push(&vec![b'a'; LINE_LEN_MAX + 1]).is_err());
    }
}
