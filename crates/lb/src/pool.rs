//! Keep-alive connections to one backend, reused across client requests.
//!
//! A [`BackendConn`] is driven by whoever holds it: the request future while
//! it waits for the response head, then the response body while the client
//! reads it. There is no task per backend connection, which saves a task
//! wake-up and a channel hop per request on the proxy's hot path. Idle
//! connections are not polled; a connection the backend closed meanwhile is
//! noticed (and dropped) when it is next taken.
//!
//! The pool holds at most `idle_max` idle connections (the named limit); one
//! idle longer than `idle_timeout` is dropped when next seen. Busy connections
//! are bounded by the backend's in-flight limit, not here.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

/// Body type sent to backends: buffered (replayable) or streamed from the client.
pub type ReqBody = http_body_util::Either<http_body_util::Full<Bytes>, Incoming>;

type ConnIo = Pin<Box<Connection<TokioIo<TcpStream>, ReqBody>>>;

/// One HTTP/1.1 connection to a backend: the request handle and its I/O driver.
pub struct BackendConn {
    sender: SendRequest<ReqBody>,
    io: ConnIo,
    ended: bool,
}

impl BackendConn {
    pub fn new(sender: SendRequest<ReqBody>, io: Connection<TokioIo<TcpStream>, ReqBody>) -> Self {
        BackendConn { sender, io: Box::pin(io), ended: false }
    }

    /// Moves bytes on the connection; afterwards `ended` says whether it closed.
    pub fn poll_io(&mut self, cx: &mut Context<'_>) {
        if self.ended {
            return;
        }
        if let Poll::Ready(r) = self.io.as_mut().poll(cx) {
            self.ended = true;
            if let Err(e) = r {
                tracing::debug!("backend connection ended: {e}");
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.ended || self.sender.is_closed()
    }

    /// True once the connection can take a request; false if it closed.
    pub async fn ready(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            self.poll_io(cx);
            if self.ended {
                return Poll::Ready(false);
            }
            match self.sender.poll_ready(cx) {
                Poll::Ready(r) => Poll::Ready(r.is_ok()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Sends `req` and waits for the response head, driving the connection.
    pub async fn send(
        &mut self,
        req: http::Request<ReqBody>,
    ) -> Result<http::Response<Incoming>, TrySendError<http::Request<ReqBody>>> {
        let mut fut = std::pin::pin!(self.sender.try_send_request(req));
        std::future::poll_fn(|cx| {
            self.poll_io(cx);
            fut.as_mut().poll(cx)
        })
        .await
    }
}

struct Idle {
    conn: BackendConn,
    since: Instant,
}

struct Inner {
    idle: Vec<Idle>,
    idle_max: usize,
    idle_timeout: Duration,
}

pub struct Pool {
    inner: Mutex<Inner>,
}

impl Pool {
    pub fn new(idle_max: usize, idle_timeout: Duration) -> Self {
        Pool { inner: Mutex::new(Inner { idle: Vec::new(), idle_max, idle_timeout }) }
    }

    pub fn set_limits(&self, idle_max: usize, idle_timeout: Duration) {
        let mut g = self.inner.lock();
        g.idle_max = idle_max;
        g.idle_timeout = idle_timeout;
        let keep = g.idle.len().min(idle_max);
        g.idle.truncate(keep);
    }

    /// Most recently used idle connection not known to be closed, if any. The
    /// caller must still await [`BackendConn::ready`] on it.
    pub fn take(&self) -> Option<BackendConn> {
        let now = Instant::now();
        let mut g = self.inner.lock();
        let timeout = g.idle_timeout;
        while let Some(idle) = g.idle.pop() {
            if idle.conn.is_closed() || now.duration_since(idle.since) > timeout {
                continue;
            }
            return Some(idle.conn);
        }
        None
    }

    /// Returns a connection after its response was read to the end.
    pub fn put(&self, conn: BackendConn) {
        if conn.is_closed() {
            return;
        }
        let mut g = self.inner.lock();
        if g.idle.len() < g.idle_max {
            g.idle.push(Idle { conn, since: Instant::now() });
        }
    }

    pub fn idle_len(&self) -> usize {
        self.inner.lock().idle.len()
    }

    /// Drops every idle connection (backend went down, drained, or ejected).
    pub fn clear(&self) {
        let drained: Vec<Idle> = std::mem::take(&mut self.inner.lock().idle);
        drop(drained);
    }
}
