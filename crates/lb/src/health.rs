//! Active health checks: a TCP connect, or an HTTP GET of a path expecting a
//! 2xx status, every `interval_ms` (jittered), marking a backend down after
//! `fall` consecutive failures and up after `rise` consecutive successes.
//! [`HealthTracker`] is the pure rise/fall state machine; [`run_checks`] is the
//! task that performs the I/O for one backend.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::algo::SplitMix64;
use crate::backend::{now_ms, AdminState, BackendState};
use crate::config::{HealthConfig, HealthKind};

/// Bytes of a health-check answer read to find its status line.
pub const HEALTH_RESPONSE_BYTES_MAX: usize = 1024;

/// Rise/fall hysteresis.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    up: bool,
    ok_streak: u32,
    fail_streak: u32,
    rise: u32,
    fall: u32,
}

impl HealthTracker {
    pub fn new(up: bool, rise: u32, fall: u32) -> Self {
        HealthTracker { up, ok_streak: 0, fail_streak: 0, rise: rise.max(1), fall: fall.max(1) }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Feeds one check result; returns the new state when it changes.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.fail_streak = 0;
            self.ok_streak = self.ok_streak.saturating_add(1);
            if !self.up && self.ok_streak >= self.rise {
                self.up = true;
                return Some(true);
            }
        } else {
            self.ok_streak = 0;
            self.fail_streak = self.fail_streak.saturating_add(1);
            if self.up && self.fail_streak >= self.fall {
                self.up = false;
                return Some(false);
            }
        }
        None
    }
}

/// Interval with up to `jitter_percent` % added or removed at random.
pub fn jittered(interval_ms: u64, jitter_percent: u32, rng: &mut SplitMix64) -> Duration {
    let span = interval_ms * u64::from(jitter_percent) / 100;
    if span == 0 {
        return Duration::from_millis(interval_ms);
    }
    let offset = rng.below(2 * span + 1);
    Duration::from_millis(interval_ms - span + offset)
}

/// One check; true when healthy.
pub async fn check_once(cfg: &HealthConfig, backend: &BackendState) -> bool {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let fut = async {
        let mut stream = TcpStream::connect(backend.addr).await.ok()?;
        if cfg.kind == HealthKind::Tcp {
            return Some(true);
        }
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: rampart-lb-health\r\nConnection: close\r\n\r\n",
            cfg.path, backend.addr
        );
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; HEALTH_RESPONSE_BYTES_MAX];
        let mut len = 0;
        while len < buf.len() {
            let n = stream.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
        Some(status_is_2xx(&buf[..len]))
    };
    matches!(tokio::time::timeout(timeout, fut).await, Ok(Some(true)))
}

/// True if `head` starts with an HTTP/1.x status line carrying a 2xx code.
pub fn status_is_2xx(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|&b| b == b' ');
    let version = parts.next().unwrap_or(&[]);
    let code = parts.next().unwrap_or(&[]);
    version.starts_with(b"HTTP/1.") && code.len() == 3 && code[0] == b'2' && code.iter().all(u8::is_ascii_digit)
}

/// Checks `backend` forever (the task is aborted on reload or shutdown).
pub async fn run_checks(cfg: HealthConfig, backend: Arc<BackendState>, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut tracker = HealthTracker::new(backend.is_healthy(), cfg.rise, cfg.fall);
    loop {
        if backend.admin() != AdminState::Disabled {
            let ok = check_once(&cfg, &backend).await;
            if !ok {
                backend.stats.health_checks_failed.inc();
            }
            if let Some(up) = tracker.observe(ok) {
                backend.set_healthy(up, now_ms());
                if up {
                    tracing::info!(frontend = %backend.frontend, backend = %backend.addr, "backend is up ({} checks passed)", cfg.rise);
                } else {
                    tracing::warn!(frontend = %backend.frontend, backend = %backend.addr, "backend is down ({} checks failed)", cfg.fall);
                }
            }
        }
        tokio::time::sleep(jittered(cfg.interval_ms, cfg.jitter_percent, &mut rng)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The state flips exactly when the last `fall` results failed (while up)
        /// or the last `rise` succeeded (while down).
        #[test]
        fn hysteresis(results in proptest::collection::vec(any::<bool>(), 0..200), rise in 1u32..5, fall in 1u32..5) {
            let mut t = HealthTracker::new(true, rise, fall);
            let mut up = true;
            for (i, &ok) in results.iter().enumerate() {
                let changed = t.observe(ok);
                let tail = |n: u32, want: bool| n as usize <= i + 1 && results[i + 1 - n as usize..=i].iter().all(|&r| r == want);
                if up && tail(fall, false) { up = false; prop_assert_eq!(changed, Some(false)); }
                else if !up && tail(rise, true) { up = true; prop_assert_eq!(changed, Some(true)); }
                else { prop_assert_eq!(changed, None); }
                prop_assert_eq!(t.is_up(), up);
            }
        }

        #[test]
        fn jitter_in_range(interval in 10u64..10_000, pct in 0u32..=50, seed in any::<u64>()) {
            let mut rng = SplitMix64::new(seed);
            let d = jittered(interval, pct, &mut rng).as_millis() as u64;
            let span = interval * u64::from(pct) / 100;
            prop_assert!(d >= interval - span && d <= interval + span);
        }
    }

    #[test]
    fn status_lines() {
        assert!(status_is_2xx(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_is_2xx(b"HTTP/1.0 204 No Content\r\n"));
        assert!(!status_is_2xx(b"HTTP/1.1 503 Unavailable\r\n"));
        assert!(!status_is_2xx(b"garbage"));
        assert!(!status_is_2xx(b""));
    }
}
