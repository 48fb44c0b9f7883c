//! Keep-alive connections to one backend, reused across client requests.
//!
//! Idle connections are not polled; one the backend closed meanwhile is
//! noticed (and dropped) when it is next taken ([`H1Conn::still_open`]). The
//! pool holds at most `idle_max` idle connections (the named limit); one idle
//! longer than `idle_timeout` is dropped when next seen. Busy connections are
//! bounded by the backend's in-flight limit, not here.
//!
//! With several worker threads ([`crate::workers`]) the pool has one shard
//! per worker, and a worker only takes from and returns to its own: a
//! connection's socket is registered with the worker that opened it, so it
//! never serves another. Each shard holds at most `idle_max / workers`
//! idle connections, rounded up.

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
    /// One per worker thread; indexed by [`crate::workers::index`].
    shards: Box<[Mutex<Inner>]>,
}

/// A shard's share of `idle_max` among `shards` (rounded up).
fn shard_limit(idle_max: usize, shards: usize) -> usize {
    idle_max.div_ceil(shards.max(1))
}

impl Pool {
    pub fn new(idle_max: usize, idle_timeout: Duration) -> Self {
        let n = crate::workers::count();
        let shards = (0..n)
            .map(|_| Mutex::new(Inner { idle: Vec::new(), idle_max: shard_limit(idle_max, n), idle_timeout }))
            .collect();
        Pool { shards }
    }

    /// The calling worker's shard.
    fn mine(&self) -> &Mutex<Inner> {
        let i = crate::workers::index();
        assert!(i < self.shards.len(), "worker {i} of a pool with {} shards", self.shards.len());
        &self.shards[i]
    }

    pub fn set_limits(&self, idle_max: usize, idle_timeout: Duration) {
        let limit = shard_limit(idle_max, self.shards.len());
        for shard in self.shards.iter() {
            let mut g = shard.lock();
            g.idle_max = limit;
            g.idle_timeout = idle_timeout;
            let keep = g.idle.len().min(limit);
            g.idle.truncate(keep);
        }
    }

    /// Most recently used idle connection that is still open, if any.
    pub fn take(&self) -> Option<H1Conn> {
        let now = Instant::now();
        let mut g = self.mine().lock();
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
        let mut g = self.mine().lock();
        if g.idle.len() < g.idle_max {
            g.idle.push(Idle { conn, since: Instant::now() });
        }
        assert!(g.idle.len() <= g.idle_max, "pool holds {} idle connections, limit {}", g.idle.len(), g.idle_max);
    }

    pub fn idle_len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().idle.len()).sum()
    }

    /// Drops every idle connection (backend went down, drained, or ejected).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let drained: Vec<Idle> = std::mem::take(&mut shard.lock().idle);
            drop(drained);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shard_limit;

    #[test]
    fn shards_split_the_idle_limit_rounding_up() {
        assert_eq!(shard_limit(128, 1), 128);
        assert_eq!(shard_limit(128, 2), 64);
        assert_eq!(shard_limit(5, 2), 3);
        assert_eq!(shard_limit(1, 4), 1);
        assert_eq!(shard_limit(0, 3), 0);
    }
}
