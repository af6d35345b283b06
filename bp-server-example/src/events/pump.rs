//! Pumps: the live event streams on connections of their own, written straight to their
//! sockets, many streams per task.
//!
//! Why: a stream that waits in a task of its own costs, for every event of its customer, a
//! wake-up, a trip through the scheduler and a poll of the task before its one `writev`; at ten
//! thousand streams of one customer that was a third of the server's work per event. A pump is
//! rung once per event of its customer and goes through its streams in a loop, each one a
//! non-blocking `writev` of the messages it has ready ([`ClientStream::try_next_frame`]), with no
//! wake-up of any stream's task.
//!
//! A pump holds a stream only while it is live and the socket takes every byte at once. Anything
//! else hands the stream back to its connection's task ([`stream_conn`](super::stream_conn)),
//! which holds it otherwise: work that waits for the store (a gap to fill), the end of the stream
//! (its session revoked, a whole ring behind, shutdown), a write the socket took only in part or
//! not at all (the task writes the rest when the socket is ready, and the stream may come back), a
//! failed write, and the client closing the connection (the task watches for it and asks for its
//! stream back). Each stream is written by one side at a time, so its messages stay in order.
//!
//! A customer's streams are shared by their pumps, at most [`PUMP_STREAMS_MAX`] each, so that one
//! event to many streams is written by every worker thread and no pump holds a thread for long.
//! Pumps also send the heartbeat comments of the streams they hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::events::stream::{ClientStream, HEARTBEAT, Step};
use crate::events::stream_conn::try_write_chunk;

/// The most streams one pump holds: one event to all of them is a few milliseconds of one thread.
pub const PUMP_STREAMS_MAX: usize = 256;
/// The most messages a pump writes to one stream in one pass over its streams: a burst is sent in
/// several passes, with other tasks of the thread let run between them, so that no pass takes
/// more than a few milliseconds (a task is not preempted).
const MESSAGES_PER_PASS: usize = 4;

/// A stream on its way to a pump, with its connection and the way back to the connection's task.
#[derive(Debug)]
pub struct Attached {
    stream: Box<ClientStream>,
    tcp: Arc<TcpStream>,
    back: oneshot::Sender<Returned>,
}

impl Attached {
    /// `stream`, to be written on `tcp`; the receiver gets it back.
    pub fn new(stream: Box<ClientStream>, tcp: Arc<TcpStream>) -> (Self, oneshot::Receiver<Returned>) {
        let (back, returned) = oneshot::channel();
        (Self { stream, tcp, back }, returned)
    }

    /// The stream, when no pump took it.
    pub fn into_stream(self) -> Box<ClientStream> {
        self.stream
    }

    /// Whose stream it is.
    pub fn customer(&self) -> bp_core::ids::CustomerId {
        self.stream.customer()
    }
}

/// A stream given back by its pump to its connection's task.
#[derive(Debug)]
pub struct Returned {
    /// The stream.
    pub stream: Box<ClientStream>,
    /// Why it came back.
    pub why: Back,
}

/// A running pump, as the hub keeps it.
#[derive(Debug, Clone)]
pub struct PumpHandle {
    shared: Arc<Shared>,
    attach: mpsc::UnboundedSender<(u64, Attached)>,
    detach: mpsc::UnboundedSender<u64>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Rung at each event of the pump's customer.
    bell: Notify,
    /// Streams held or on their way.
    load: AtomicUsize,
}

/// A stream held by a pump, as its connection's task knows it.
#[derive(Debug)]
pub struct Pumped {
    key: u64,
    detach: mpsc::UnboundedSender<u64>,
}

impl Pumped {
    /// Asks for the stream back (its client went away); it comes through the receiver of
    /// [`Attached::new`].
    pub fn detach(&self) {
        // A pump that stopped has given every stream back already.
        let _ = self.detach.send(self.key);
    }
}

impl PumpHandle {
    /// Starts a pump, with no stream yet.
    pub fn spawn() -> Self {
        let shared = Arc::new(Shared::default());
        let (attach, attach_rx) = mpsc::unbounded_channel();
        let (detach, detach_rx) = mpsc::unbounded_channel();
        let pump = Pump {
            shared: Arc::clone(&shared),
            attach_rx,
            detach_rx,
            streams: Vec::new(),
            next_heartbeat: Instant::now() + IDLE_WAIT,
        };
        tokio::spawn(pump.run());
        Self { shared, attach, detach }
    }

    /// Whether the pump takes another stream.
    pub fn has_room(&self) -> bool {
        self.shared.load.load(Ordering::Relaxed) < PUMP_STREAMS_MAX
    }

    /// Whether the pump still runs (it takes streams).
    pub fn running(&self) -> bool {
        !self.attach.is_closed()
    }

    /// Wakes the pump: an event of its customer is on the ring.
    pub fn ring(&self) {
        self.shared.bell.notify_one();
    }

    /// Hands `stream` to the pump; gives it back if the pump has stopped.
    pub fn attach(&self, stream: Attached) -> Result<Pumped, Attached> {
        static KEYS: AtomicU64 = AtomicU64::new(0);
        let key = KEYS.fetch_add(1, Ordering::Relaxed);
        self.shared.load.fetch_add(1, Ordering::Relaxed);
        match self.attach.send((key, stream)) {
            Ok(()) => Ok(Pumped { key, detach: self.detach.clone() }),
            Err(mpsc::error::SendError((_, stream))) => {
                self.shared.load.fetch_sub(1, Ordering::Relaxed);
                Err(stream)
            }
        }
    }
}

/// How long a pump without streams sleeps between looks at its heartbeat timer.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

struct Pump {
    shared: Arc<Shared>,
    attach_rx: mpsc::UnboundedReceiver<(u64, Attached)>,
    detach_rx: mpsc::UnboundedReceiver<u64>,
    streams: Vec<(u64, Attached)>,
    /// When the next stream's heartbeat or deadline is due (or earlier).
    next_heartbeat: Instant,
}

/// A stream the pump wrote to and keeps.
enum Fed {
    /// Live, with nothing more to send.
    Idle,
    /// It has more messages ready than one pass writes.
    More,
}

/// Why a pump gives a stream back to its connection's task.
#[derive(Debug)]
pub enum Back {
    /// The stream has work that waits for the store, or it ends; or its client went away.
    Settle,
    /// The socket did not take the whole chunk: the rest, which the task writes before anything
    /// else.
    Rest(Vec<u8>),
    /// A write failed: the connection is broken.
    Failed,
}

impl Pump {
    /// Runs until its customer's group forgot it (no more attachments) and it holds no stream.
    async fn run(mut self) {
        let mut attaching = true;
        loop {
            let next_heartbeat = self.next_heartbeat;
            tokio::select! {
                biased;
                attached = self.attach_rx.recv(), if attaching => match attached {
                    Some((key, stream)) => self.take_in(key, stream),
                    None => attaching = false,
                },
                Some(key) = self.detach_rx.recv() => {
                    if let Some(i) = self.streams.iter().position(|(k, _)| *k == key) {
                        self.hand_back(i, Back::Settle);
                    }
                }
                () = self.shared.bell.notified() => {
                    if self.deliver() {
                        // More to send: another pass, once the thread's other tasks have run.
                        self.shared.bell.notify_one();
                        tokio::task::yield_now().await;
                    }
                }
                () = tokio::time::sleep_until(next_heartbeat) => self.heartbeats(),
            }
            if !attaching && self.streams.is_empty() {
                return;
            }
        }
    }

    /// A new stream: sends what reached its ring since its task last looked.
    fn take_in(&mut self, key: u64, stream: Attached) {
        let due = stream.stream.last_sent() + stream.stream.heartbeat_every();
        let due = stream.stream.deadline().map_or(due, |d| d.min(due));
        self.next_heartbeat = self.next_heartbeat.min(due);
        self.streams.push((key, stream));
        let last = self.streams.len() - 1;
        match self.feed(last, Instant::now()) {
            Ok(Fed::Idle) => {}
            // The rest in the next pass.
            Ok(Fed::More) => self.shared.bell.notify_one(),
            Err(back) => self.hand_back(last, back),
        }
    }

    /// An event (or several) on the ring: every stream sends what it has, up to
    /// [`MESSAGES_PER_PASS`] each; whether some have more.
    fn deliver(&mut self) -> bool {
        let now = Instant::now();
        let mut more = false;
        let mut i = 0;
        while i < self.streams.len() {
            match self.feed(i, now) {
                Ok(fed) => {
                    more |= matches!(fed, Fed::More);
                    i += 1;
                }
                // The last stream moved to `i`: look at it next.
                Err(back) => self.hand_back(i, back),
            }
        }
        more
    }

    /// Writes up to [`MESSAGES_PER_PASS`] of stream `i`'s ready messages, one chunk each.
    fn feed(&mut self, i: usize, now: Instant) -> Result<Fed, Back> {
        let (_, held) = &mut self.streams[i];
        for _ in 0..MESSAGES_PER_PASS {
            match held.stream.try_next_frame() {
                Step::Frame(message) => {
                    held.stream.sent(now);
                    write_chunk(&held.tcp, &message)?;
                }
                Step::Idle => return Ok(Fed::Idle),
                Step::Settle => return Err(Back::Settle),
            }
        }
        Ok(Fed::More)
    }

    /// Heartbeats of the streams silent for their interval, and the end of those whose deadline
    /// has come (their task ends them); when the next of either is due.
    fn heartbeats(&mut self) {
        let now = Instant::now();
        let mut next = now + IDLE_WAIT;
        let mut i = 0;
        while i < self.streams.len() {
            let (_, held) = &mut self.streams[i];
            if let Some(deadline) = held.stream.deadline() {
                if deadline <= now {
                    held.stream.finish();
                    self.hand_back(i, Back::Settle);
                    continue;
                }
                next = next.min(deadline);
            }
            let every = held.stream.heartbeat_every();
            let due = held.stream.last_sent() + every;
            if due > now {
                next = next.min(due);
                i += 1;
                continue;
            }
            held.stream.sent(now);
            match write_chunk(&held.tcp, HEARTBEAT) {
                Ok(()) => {
                    next = next.min(now + every);
                    i += 1;
                }
                Err(back) => self.hand_back(i, back),
            }
        }
        self.next_heartbeat = next;
    }

    /// Gives stream `i` back to its connection's task.
    fn hand_back(&mut self, i: usize, why: Back) {
        let (_, Attached { stream, tcp, back }) = self.streams.swap_remove(i);
        self.shared.load.fetch_sub(1, Ordering::Relaxed);
        // The task may take the socket back whole once it has the stream.
        drop(tcp);
        let reason = match why {
            Back::Settle => "settle",
            Back::Rest(_) => "socket_full",
            Back::Failed => "write_failed",
        };
        metrics::counter!("bp_sse_pump_returns_total", "reason" => reason).increment(1);
        // A task that is gone (the runtime ending) drops the stream with the answer.
        let _ = back.send(Returned { stream, why });
    }
}

/// Writes `message` as one chunk without waiting; when the socket does not take all of it, the
/// stream goes back with the rest (or as failed).
fn write_chunk(tcp: &TcpStream, message: &[u8]) -> Result<(), Back> {
    match try_write_chunk(tcp, message) {
        Ok(None) => Ok(()),
        Ok(Some(rest)) => Err(Back::Rest(rest)),
        Err(_) => Err(Back::Failed),
    }
}
