//! Active health checks: a TCP connect, or an HTTP GET of a path expecting a
//! 2xx status, every `interval_ms` (jittered), marking a backend down after
//! `fall` consecutive failures and up after `rise` consecutive successes.
//! [`HealthTracker`] is the pure rise/fall state machine; [`run_checks`] is the
//! task that performs the I/O for one backend.

use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::algo::SplitMix64;
use crate::backend::{now_ms, AdminState, BackendState};
use crate::config::{HealthConfig, HealthKind};
use crate::probe::{self, BodyLimit, Limits};
use crate::tls::{self, ConnectError, Connector};

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

/// One check; `Err` says why it failed. With `tls` (the frontend's
/// `backend_tls`) a TCP check also completes the TLS handshake, and an HTTP
/// check is made over TLS: a backend whose certificate is refused fails.
/// HTTP checks go through hyper's client ([`probe`]): the response head is
/// bounded by [`probe::PROBE_HEAD_BYTES_MAX`], the body is not read, and
/// everything must finish within `timeout_ms`.
pub async fn check_once(cfg: &HealthConfig, tls: Option<&Connector>, backend: &BackendState) -> Result<(), String> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    if cfg.kind == HealthKind::Tcp {
        return match tls::connect(backend.addr, tls, timeout).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if matches!(e, ConnectError::Tls(_)) {
                    backend.stats.tls_failures.inc();
                }
                Err(e.to_string())
            }
        };
    }
    let limits = Limits { connect: timeout, total: timeout, body: BodyLimit::Skip };
    match probe::exchange_via(Method::GET, backend.addr, tls, &cfg.path, "rampart-lb-health", limits).await {
        Ok((status, _)) if status.is_success() => Ok(()),
        Ok((status, _)) => Err(format!("GET {} answered {status}", cfg.path)),
        Err(e) => {
            if matches!(e, probe::ProbeError::Tls { .. }) {
                backend.stats.tls_failures.inc();
            }
            Err(e.to_string())
        }
    }
}

/// Checks `backend` forever (the task is aborted on reload or shutdown).
pub async fn run_checks(cfg: HealthConfig, tls: Option<Connector>, backend: Arc<BackendState>, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut tracker = HealthTracker::new(backend.is_healthy(), cfg.rise, cfg.fall);
    loop {
        if backend.admin() != AdminState::Disabled {
            let result = check_once(&cfg, tls.as_ref(), &backend).await;
            if let Err(why) = &result {
                backend.stats.health_checks_failed.inc();
                tracing::debug!(backend = %backend.addr, "health check failed: {why}");
            }
            if let Some(up) = tracker.observe(result.is_ok()) {
                backend.set_healthy(up, now_ms());
                if up {
                    tracing::info!(frontend = %backend.frontend, backend = %backend.addr, "backend is up ({} checks passed)", cfg.rise);
                } else {
                    let why = result.err().unwrap_or_default();
                    tracing::warn!(frontend = %backend.frontend, backend = %backend.addr, "backend is down ({} checks failed, last: {why})", cfg.fall);
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
}
