//! Keep-alive connections to one backend, reused across client requests.
//!
//! The pool holds at most `idle_max` idle connections (the named limit); a
//! connection idle longer than `idle_timeout` is dropped when next seen. Busy
//! connections are not counted here: their number is bounded by the backend's
//! in-flight limit.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;

/// Body type sent to backends: buffered (replayable) or streamed from the client.
pub type ReqBody = http_body_util::Either<http_body_util::Full<Bytes>, hyper::body::Incoming>;

pub type Sender = SendRequest<ReqBody>;

struct Idle {
    sender: Sender,
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
        Pool {
            inner: Mutex::new(Inner {
                idle: Vec::new(),
                idle_max,
                idle_timeout,
            }),
        }
    }

    pub fn set_limits(&self, idle_max: usize, idle_timeout: Duration) {
        let mut g = self.inner.lock();
        g.idle_max = idle_max;
        g.idle_timeout = idle_timeout;
        let keep = g.idle.len().min(idle_max);
        g.idle.truncate(keep);
    }

    /// Most recently used idle connection that is still open, if any. The
    /// caller must still await `ready()` on it (it may be finishing the
    /// previous response) and drop it on error.
    pub fn take(&self) -> Option<Sender> {
        let now = Instant::now();
        let mut g = self.inner.lock();
        let timeout = g.idle_timeout;
        while let Some(idle) = g.idle.pop() {
            if idle.sender.is_closed() || now.duration_since(idle.since) > timeout {
                continue;
            }
            return Some(idle.sender);
        }
        None
    }

    /// Returns a connection after its response was read to the end.
    pub fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut g = self.inner.lock();
        if g.idle.len() < g.idle_max {
            g.idle.push(Idle {
                sender,
                since: Instant::now(),
            });
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
