//! A bound on how long a connection served by hyper may take none of the bytes written to it:
//! `server.send_timeout_ms`, after which its writes fail and hyper closes it (nginx calls this
//! `send_timeout`).
//!
//! Why: hyper writes an answer only as fast as the client reads it, and never gives up on a
//! client that stops reading. For a request's answer that holds a connection and its buffers; for
//! an event stream it holds the stream for ever, since the stream only notices it is a whole ring
//! behind when hyper asks it for more, which a full socket stops. (Event streams on connections
//! of their own, `stream_conn`, end a ring behind by themselves.) The clock runs only while a
//! write or flush waits; any progress stops it.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection whose writes fail once they have waited `limit` without progress.
#[derive(Debug)]
pub struct SendTimeout<I> {
    io: I,
    limit: Duration,
    /// Since the current wait began: set when a write first waits, cleared at progress.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> SendTimeout<I> {
    /// `io`, whose writes may wait at most `limit` each.
    pub fn new(io: I, limit: Duration) -> Self {
        Self { io, limit, waiting: None }
    }

    /// The result of a write or flush: the clock stops at progress, starts when it waits, and
    /// fails the write when it runs out.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.waiting = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let waiting = self.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        metrics::counter!("bp_http_send_timeouts_total").increment(1);
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client took no bytes in time")))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SendTimeout<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SendTimeout<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The TLS listener's first step: `TCP_NODELAY` (as on the plain listener) and the send timeout,
/// under TLS, so that the handshake is bounded too.
#[derive(Clone, Copy, Debug)]
pub struct Acceptor {
    /// The send timeout.
    pub limit: Duration,
}

impl<S> axum_server::accept::Accept<TcpStream, S> for Acceptor {
    type Stream = SendTimeout<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(stream.set_nodelay(true).map(|()| (SendTimeout::new(stream, self.limit), service)))
    }
}
