//! Keep-alive connections to one backend, reused across client requests.
//!
//! Idle connections are not polled; one the backend closed meanwhile is
//! noticed (and dropped) when it is next taken ([`H1Conn::still_open`]). The
//! pool holds at most `idle_max` idle connections (the named limit); one idle
//! longer than `idle_timeout` is dropped when next seen. Busy connections are
//! bounded by the backend's in-flight limit, not here.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::h1client::H1Conn;

struct Idle {
    conn: H1Conn,
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

    /// Most recently used idle connection that is still open, if any.
    pub fn take(&self) -> Option<H1Conn> {
        let now = Instant::now();
        let mut g = self.inner.lock();
        let timeout = g.idle_timeout;
        while let Some(mut idle) = g.idle.pop() {
            if now.duration_since(idle.since) > timeout || !idle.conn.still_open() {
                continue;
            }
            return Some(idle.conn);
        }
        None
    }

    /// Returns a connection after its response was read to the end.
    pub fn put(&self, conn: H1Conn) {
        let mut g = self.inner.lock();
        if g.idle.len() < g.idle_max {
            g.idle.push(Idle { conn, since: Instant::now() });
        }
        assert!(g.idle.len() <= g.idle_max, "pool holds {} idle connections, limit {}", g.idle.len(), g.idle_max);
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
