//! What moves on one API connection: when bytes last moved (an IO wrapper that records every
//! read and write) and how many requests are being handled, for the idle watchdog of
//! `node::server`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Why the server ended an established (or handshaking) connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    HandshakeTimeout,
    Idle,
    MaxAge,
    /// An anonymous slot taken over by a source holding fewer (see the module comment).
    Evicted,
    /// A resumed TLS session whose client certificate has expired since its full handshake.
    ExpiredResumption,
    /// A certificate of a revoked client or admin, or of a removed node, right after the
    /// handshake.
    Revoked,
}

impl Closed {
    pub(crate) const ALL: [Closed; 6] = [
        Closed::HandshakeTimeout,
        Closed::Idle,
        Closed::MaxAge,
        Closed::Evicted,
        Closed::ExpiredResumption,
        Closed::Revoked,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Closed::HandshakeTimeout => "handshake_timeout",
            Closed::Idle => "idle",
            Closed::MaxAge => "max_age",
            Closed::Evicted => "evicted",
            Closed::ExpiredResumption => "expired_resumption",
            Closed::Revoked => "revoked",
        }
    }
}

/// When bytes last moved on a connection, and how many requests are being handled on it.
pub struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Marks a request as being handled until the guard drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Resolves when the connection should close: no byte moved for `idle` (while a
    /// request is being handled the clock stops, unless `strict`), or `max_age` passed.
    pub async fn watchdog(&self, idle: Duration, strict: bool, max_age: Option<Instant>) -> Closed {
        loop {
            let now = Instant::now();
            if max_age.is_some_and(|at| now >= at) {
                return Closed::MaxAge;
            }
            let mut due = self.last() + idle;
            if due <= now {
                if strict || self.busy.load(Ordering::Relaxed) == 0 {
                    return Closed::Idle;
                }
                due = now + idle;
            }
            if let Some(at) = max_age {
                due = due.min(at);
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        // The answer is ready: its bytes are about to move; count from now.
        self.0.touch();
    }
}

/// An IO stream that records in `Activity` every read or write that moved bytes.
pub struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    pub fn new(inner: I, activity: Arc<Activity>) -> Watched<I> {
        Watched { inner, activity }
    }
    pub fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
