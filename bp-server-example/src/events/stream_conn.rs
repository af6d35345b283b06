//! Connections that open with `GET /v1/events`, served by a small HTTP/1.1 reader and writer
//! instead of hyper.
//!
//! Why: a hyper HTTP/1 connection keeps two buffers for its whole life, an 8 KiB read buffer
//! (to notice the peer closing) and an 8 KiB buffer for response heads. A request/response
//! connection does not care; ten thousand event streams, open for hours and writing a few hundred
//! bytes a minute, spend 16 KiB each on them. Here the request head is read into a buffer that
//! is freed before the response starts, each message is written as one chunk (one `writev`,
//! nothing buffered here), and the peer's closing is noticed without a buffer.
//!
//! Only the transport is different: the request goes through the same [`Router`], so
//! authentication, the handler, security headers, the log line and metrics are the same as on
//! hyper's path. The handler's answer carries the [`ClientStream`] itself ([`Handoff`]): this
//! module takes it, writes it while it catches up, and hands it to a [`pump`](super::pump) while
//! it is live, so that an event to many streams wakes no task per stream. Connections that open
//! with anything else, and streams opened on a connection that has served other requests before
//! (a browser's keep-alive connection), stay on hyper.
//! The connection closes when the stream ends (`connection: close`); a request this module does
//! not take (a body, a bad head) is answered with a problem and the connection closed.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use axum::response::IntoResponse;
use http_body_util::BodyExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tower::ServiceExt as _;

use crate::events::pump::{Attached, Back};
use crate::events::stream::{ClientStream, Handoff, Step};
use crate::http::problem::{ApiError, problem_response};
use crate::http::serve::Divert;

/// What a connection's first bytes must be for this module to serve it.
const PREFIX: &[u8] = b"GET /v1/events";
/// The longest request head read (the same bound as hyper's smallest buffer).
const HEAD_MAX: usize = 8 * 1024;
/// The most header lines in a request head.
const HEADERS_MAX: usize = 64;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest non-stream answer (a problem) written from here.
const ANSWER_MAX: usize = 64 * 1024;

/// Whether a new connection's first bytes are an event-stream request: waits (up to
/// `HEAD_TIMEOUT`, 10 s) until enough bytes have arrived to tell, without consuming any.
async fn opens_a_stream(tcp: &TcpStream) -> bool {
    let decide = async {
        let mut first = [0u8; 16];
        let need = PREFIX.len() + 1;
        loop {
            let n = match tcp.peek(&mut first).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            let seen = &first[..n];
            if n >= need {
                return seen.starts_with(PREFIX) && matches!(seen[PREFIX.len()], b' ' | b'?');
            }
            if !PREFIX.starts_with(seen) {
                return false;
            }
            // A prefix of the request line so far: `peek` answers at once while those bytes
            // wait, so look again a little later.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, decide).await.unwrap_or(false)
}

/// The event-stream connections, told apart from the others by their first bytes, for the
/// plain-TCP listener ([`Divert`]).
#[derive(Clone, Copy, Debug)]
pub struct Lean;

impl Divert for Lean {
    async fn divert(&self, tcp: TcpStream, peer: SocketAddr, router: Router) -> Option<TcpStream> {
        if !opens_a_stream(&tcp).await {
            return Some(tcp);
        }
        serve(tcp, peer, router).await;
        None
    }
}

/// Serves one connection whose first request is an event-stream request (see
/// [`opens_a_stream`]), then closes it.
async fn serve(mut tcp: TcpStream, peer: SocketAddr, router: Router) {
    let request = match tokio::time::timeout(HEAD_TIMEOUT, read_request(&mut tcp, peer)).await {
        Ok(Ok(request)) => request,
        Ok(Err(refused)) => {
            if let Some(answer) = refused.answer() {
                let _ = write_answer(&tcp, answer).await;
            }
            close(tcp).await;
            return;
        }
        Err(_) => return,
    };
    let mut response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // The stream itself, taken from the handler's answer (the body, which would have taken it
    // otherwise, is dropped unread); any other answer is written whole.
    let Some(stream) = response.extensions_mut().remove::<Handoff>().and_then(|h| h.take()) else {
        let _ = write_answer(&tcp, response).await;
        close(tcp).await;
        return;
    };
    let head = head_bytes(&response, "transfer-encoding: chunked\r\n");
    drop(response);
    let tcp = Arc::new(tcp);
    let _ = write_stream(&tcp, &head, Box::new(stream)).await;
    // The pump gives the socket up before it gives the stream back, so this is its last holder.
    if let Ok(tcp) = Arc::try_unwrap(tcp) {
        close(tcp).await;
    }
}

/// Closes after the answer: first our side (FIN), then what the peer still sends is read and
/// dropped for a moment (at most 64 KiB, 1 s). Closing with unread bytes would send a reset,
/// which can destroy the answer before the peer has read it.
async fn close(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Why a request head was not taken.
enum Refused {
    /// The connection failed or closed.
    Gone,
    /// Not a request this module takes: answered 400 with this detail.
    Bad(&'static str),
    /// A head longer than [`HEAD_MAX`].
    TooLarge,
}

impl Refused {
    fn answer(self) -> Option<Response<Body>> {
        match self {
            Refused::Gone => None,
            Refused::Bad(detail) => Some(ApiError::BadRequest(detail.to_owned()).into_response()),
            Refused::TooLarge => Some(problem_response(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request headers too large",
                "the request's head is longer than 8 KiB",
            )),
        }
    }
}

/// Reads and parses the request head.
async fn read_request(tcp: &mut TcpStream, peer: SocketAddr) -> Result<Request<Body>, Refused> {
    let mut head = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&head) {
            Ok(httparse::Status::Complete(len)) => {
                if len != head.len() {
                    return Err(Refused::Bad("nothing may follow an event-stream request on its connection"));
                }
                return build(&parsed, peer).map_err(Refused::Bad);
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(Refused::Bad("the request is not HTTP/1.1")),
        }
        if head.len() >= HEAD_MAX {
            return Err(Refused::TooLarge);
        }
        let mut chunk = [0u8; 1024];
        tcp.readable().await.map_err(|_| Refused::Gone)?;
        match tcp.try_read(&mut chunk[..(HEAD_MAX - head.len()).min(1024)]) {
            Ok(0) => return Err(Refused::Gone),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(Refused::Gone),
        }
    }
}

/// The request for the router, from a parsed head; the head's bytes are copied, so the read
/// buffer is freed before the response starts.
fn build(parsed: &httparse::Request<'_, '_>, peer: SocketAddr) -> Result<Request<Body>, &'static str> {
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return Err("an event stream is opened with GET over HTTP/1.1");
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(parsed.path.unwrap_or("/"))
        .version(Version::HTTP_11)
        .body(Body::empty())
        .map_err(|_| "the request's target is not a valid URI")?;
    let headers = request.headers_mut();
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| "a header name is not valid")?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| "a header value is not valid")?;
        headers.append(name, value);
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get_all(header::CONTENT_LENGTH).iter().any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err("a GET of the event stream has no body");
    }
    request.extensions_mut().insert(ConnectInfo(peer));
    Ok(request)
}

/// The status line and headers, with `connection: close` and a `date`, plus `extra`.
fn head_bytes(response: &Response<Body>, extra: &str) -> Vec<u8> {
    let status = response.status();
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now())).as_bytes());
    head.extend_from_slice(b"connection: close\r\n");
    head.extend_from_slice(extra.as_bytes());
    head.extend_from_slice(b"\r\n");
    head
}

/// A whole answer (a problem, or whatever the router answered that is not a stream), with its
/// length.
async fn write_answer(tcp: &TcpStream, response: Response<Body>) -> std::io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = match http_body_util::Limited::new(body, ANSWER_MAX).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let failed = ApiError::Internal.into_response();
            let (parts, body) = failed.into_parts();
            let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return write_whole(tcp, Response::from_parts(parts, Body::empty()), bytes).await;
        }
    };
    write_whole(tcp, Response::from_parts(parts, Body::empty()), body).await
}

async fn write_whole(tcp: &TcpStream, response: Response<Body>, body: Bytes) -> std::io::Result<()> {
    let head = head_bytes(&response, &format!("content-length: {}\r\n", body.len()));
    write_all(tcp, &mut [IoSlice::new(&head), IoSlice::new(&body)]).await
}

/// The stream: the head, then each message as one chunk, until the stream ends (then the last
/// chunk) or the peer closes or sends anything. This task writes while the stream catches up from
/// the store or waits for it; while the stream is live with nothing to send, a
/// [`pump`](super::pump) holds it and writes its messages, and this task only watches the peer.
/// A write that waits for a client reading nothing ends the stream once it is a whole ring behind.
async fn write_stream(tcp: &Arc<TcpStream>, head: &[u8], mut stream: Box<ClientStream>) -> std::io::Result<()> {
    write_all(tcp, &mut [IoSlice::new(head)]).await?;
    loop {
        loop {
            match stream.try_next_frame() {
                Step::Frame(message) => {
                    write_chunk(tcp, &mut stream, &message).await?;
                    stream.sent(tokio::time::Instant::now());
                }
                Step::Idle => break,
                Step::Settle => {
                    let settled = tokio::select! {
                        settled = stream.settle() => settled,
                        () = peer_gone(tcp) => return Ok(()),
                    };
                    if !settled {
                        return write_last_chunk(tcp).await;
                    }
                }
            }
        }
        // Live, with nothing to send: a pump writes its messages from now on.
        let hub = Arc::clone(stream.hub());
        let (attached, mut back) = Attached::new(stream, Arc::clone(tcp));
        let pumped = match hub.attach(attached) {
            Ok(pumped) => pumped,
            // No pump (the server is shutting down): this task writes the rest.
            Err(attached) => return write_unpumped(tcp, attached.into_stream()).await,
        };
        let returned = tokio::select! {
            returned = &mut back => returned,
            () = peer_gone(tcp) => {
                pumped.detach();
                // The stream ends here, once its pump has let go of it.
                let _ = back.await;
                return Ok(());
            }
        };
        // A pump that is gone took the stream with it (only when the runtime stops).
        let Ok(returned) = returned else { return Ok(()) };
        stream = returned.stream;
        match returned.why {
            Back::Settle => {}
            Back::Rest(rest) => write_rest(tcp, &mut stream, &rest).await?,
            Back::Failed => return Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
}

/// The stream written by this task alone, until it ends or the peer goes.
async fn write_unpumped(tcp: &TcpStream, mut stream: Box<ClientStream>) -> std::io::Result<()> {
    loop {
        let message = tokio::select! {
            message = stream.next_frame() => message,
            () = peer_gone(tcp) => return Ok(()),
        };
        match message {
            Some(message) => write_chunk(tcp, &mut stream, &message).await?,
            None => return write_last_chunk(tcp).await,
        }
    }
}

/// Writes `message` as one chunk (one `writev` when the socket takes it all), giving up when the
/// stream falls a whole ring behind meanwhile.
async fn write_chunk(tcp: &TcpStream, stream: &mut ClientStream, message: &[u8]) -> std::io::Result<()> {
    match try_write_chunk(tcp, message)? {
        None => Ok(()),
        Some(rest) => write_rest(tcp, stream, &rest).await,
    }
}

/// Writes `message` as one chunk without waiting: `None` when the socket took all of it, else
/// the bytes it did not take (an empty socket buffer takes a whole message; a full one, none).
pub fn try_write_chunk(tcp: &TcpStream, message: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let mut digits = [0u8; 18];
    let size = chunk_size_line(message.len(), &mut digits);
    let parts = [size, message, b"\r\n"];
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let written = match tcp.try_write_vectored(&parts.map(IoSlice::new)) {
        Ok(n) if n == total => return Ok(None),
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    let mut rest = parts.concat();
    rest.drain(..written);
    Ok(Some(rest))
}

/// How often a write that waits for the client looks whether its stream fell a ring behind.
const BEHIND_CHECK: Duration = Duration::from_millis(250);

/// Writes `rest`, what the socket did not take of a chunk, waiting for the socket only as long
/// as the stream keeps up: a client that reads nothing while its customer's ring goes round is
/// disconnected (it resumes from its cursor), as one that reads too slowly is.
async fn write_rest(tcp: &TcpStream, stream: &mut ClientStream, rest: &[u8]) -> std::io::Result<()> {
    let fallen_behind = async {
        loop {
            tokio::time::sleep(BEHIND_CHECK).await;
            if stream.fell_behind() {
                return;
            }
        }
    };
    let mut bufs = [IoSlice::new(rest)];
    tokio::select! {
        written = write_all(tcp, &mut bufs) => written,
        () = fallen_behind => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// The chunk that ends a chunked body, written within a bound: a client that reads nothing
/// does not hold the connection open.
async fn write_last_chunk(tcp: &TcpStream) -> std::io::Result<()> {
    const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
    tokio::time::timeout(Duration::from_secs(5), write_all(tcp, &mut [IoSlice::new(LAST_CHUNK)]))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Resolves when the peer closes the connection, fails, or sends anything: nothing is expected
/// from it on a stream's connection. Uses `poll_read_ready`, the socket's one read waker, and no
/// buffer.
async fn peer_gone(tcp: &TcpStream) {
    loop {
        if std::future::poll_fn(|cx| tcp.poll_read_ready(cx)).await.is_err() {
            return;
        }
        let mut probe = [0u8; 1];
        match tcp.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => return,
        }
    }
}

/// `len` in hex and CRLF, the line before a chunk, written into `buf`.
fn chunk_size_line(mut len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = buf.len() - 2;
    buf[at..].copy_from_slice(b"\r\n");
    loop {
        at -= 1;
        buf[at] = HEX[len & 0xf];
        len >>= 4;
        if len == 0 {
            break;
        }
    }
    &buf[at..]
}

/// Writes every slice, in as few `writev` calls as the socket allows.
async fn write_all(tcp: &TcpStream, mut bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !bufs.is_empty() {
        tcp.writable().await?;
        match tcp.try_write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines_are_lower_case_hex() {
        let mut buf = [0u8; 18];
        for (len, line) in
            [(0, "0\r\n"), (9, "9\r\n"), (10, "a\r\n"), (0x1a3, "1a3\r\n"), (usize::MAX, "ffffffffffffffff\r\n")]
        {
            assert_eq!(chunk_size_line(len, &mut buf), line.as_bytes());
        }
    }
}
