//! A socket wrapper that counts I/O so an idle watchdog can close connections
//! that moved no bytes for a whole idle period, without a timer per read.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared between a connection's I/O and its watchdog.
#[derive(Default)]
pub struct Activity {
    /// Incremented on every read or write that moved bytes.
    pub io_ops: AtomicU64,
    /// Requests being proxied on this connection (HTTP); the watchdog leaves
    /// the connection alone while one is in flight (the request timeout rules then).
    pub in_flight: AtomicU32,
}

pub struct CountingIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> CountingIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        CountingIo { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            self.activity.io_ops.fetch_add(1, Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.activity.io_ops.fetch_add(1, Relaxed);
            }
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.activity.io_ops.fetch_add(1, Relaxed);
            }
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

/// Resolves once `activity` shows no I/O and nothing in flight for a whole
/// `idle` period (so after between `idle` and `2 x idle` of silence).
/// Never resolves when `idle` is zero.
pub async fn idle_expired(activity: &Activity, idle: Duration) {
    if idle.is_zero() {
        return std::future::pending().await;
    }
    let mut last = activity.io_ops.load(Relaxed);
    loop {
        tokio::time::sleep(idle).await;
        let now = activity.io_ops.load(Relaxed);
        if now == last && activity.in_flight.load(Relaxed) == 0 {
            return;
        }
        last = now;
    }
}
