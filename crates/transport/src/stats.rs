//! Counters of the peer listener and clients, for a node's `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// Shared by every listener and client made from one [`crate::Config`] (clones share them).
#[derive(Debug, Default)]
pub struct Stats {
    /// Inbound peer connections open now (handshaking or serving).
    pub inbound_open: AtomicU64,
    pub inbound_accepted: AtomicU64,
    /// Inbound connections closed at once because `inbound_connections_max` were open.
    pub inbound_refused: AtomicU64,
    /// Inbound TLS handshakes that failed: no certificate, another CA's, no node name,
    /// not TLS at all.
    pub inbound_handshake_failures: AtomicU64,
    /// Outbound TLS handshakes that failed, or reached another node than the one called.
    pub outbound_handshake_failures: AtomicU64,
    /// Inbound connections whose TLS handshake (without TLS: first frame) did not finish or
    /// begin within `handshake_timeout`.
    pub handshake_timeouts: AtomicU64,
    /// Connections closed because a begun frame was not complete within `frame_read_timeout`.
    pub frame_timeouts: AtomicU64,
    /// Inbound connections closed after `idle_timeout` without a frame.
    pub idle_timeouts: AtomicU64,
    /// Connections closed for a malformed frame (oversized, too short, unknown kind).
    pub bad_frames: AtomicU64,
    /// When a refusal was last logged (ms since the process's first log check), so a flood of
    /// refused connections logs at most one line per [`REFUSAL_LOG_INTERVAL_MS`].
    pub(crate) refusal_logged_ms: AtomicU64,
}

/// Least interval between two log lines about refused or failed inbound connections.
pub const REFUSAL_LOG_INTERVAL_MS: u64 = 1000;

fn now_ms() -> u64 {
    static ZERO: OnceLock<Instant> = OnceLock::new();
    ZERO.get_or_init(Instant::now).elapsed().as_millis() as u64 + REFUSAL_LOG_INTERVAL_MS
}

impl Stats {
    /// True when a line about a refused or failed inbound connection may be logged now.
    pub(crate) fn may_log_refusal(&self) -> bool {
        let now = now_ms();
        let last = self.refusal_logged_ms.load(Relaxed);
        now.saturating_sub(last) >= REFUSAL_LOG_INTERVAL_MS
            && self.refusal_logged_ms.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
    }

    /// Appends the counters in Prometheus text format (`rampart_peer_*`).
    pub fn render_prometheus(&self, out: &mut String) {
        let gauges = [("rampart_peer_connections_open", "Inbound peer connections open now.", &self.inbound_open)];
        let counters = [
            ("rampart_peer_connections_accepted_total", "Inbound peer connections accepted.", &self.inbound_accepted),
            (
                "rampart_peer_connections_refused_total",
                "Inbound peer connections closed at once because inbound_connections_max were open.",
                &self.inbound_refused,
            ),
            (
                "rampart_peer_tls_inbound_handshake_failures_total",
                "Inbound peer TLS handshakes refused (no or untrusted certificate, no node name, not TLS).",
                &self.inbound_handshake_failures,
            ),
            (
                "rampart_peer_tls_outbound_handshake_failures_total",
                "Outbound peer TLS handshakes that failed or reached another node than the one called.",
                &self.outbound_handshake_failures,
            ),
            (
                "rampart_peer_handshake_timeouts_total",
                "Inbound peer connections closed because the handshake (without TLS: the first frame) took longer than handshake_timeout.",
                &self.handshake_timeouts,
            ),
            (
                "rampart_peer_frame_timeouts_total",
                "Peer connections closed because a frame stalled past frame_read_timeout.",
                &self.frame_timeouts,
            ),
            (
                "rampart_peer_idle_timeouts_total",
                "Inbound peer connections closed after idle_timeout without a frame.",
                &self.idle_timeouts,
            ),
            ("rampart_peer_bad_frames_total", "Peer connections closed for a malformed frame.", &self.bad_frames),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", v.load(Relaxed));
        }
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
    }
}

/// Counts an open inbound connection for as long as it lives.
pub(crate) struct OpenGuard<'a>(pub(crate) &'a Stats);

impl<'a> OpenGuard<'a> {
    pub(crate) fn new(stats: &'a Stats) -> OpenGuard<'a> {
        stats.inbound_open.fetch_add(1, Relaxed);
        OpenGuard(stats)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.inbound_open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_and_refusal_lines_are_throttled() {
        let s = Stats::default();
        s.inbound_refused.fetch_add(3, Relaxed);
        {
            let _g = OpenGuard::new(&s);
            let mut out = String::new();
            s.render_prometheus(&mut out);
            assert!(out.contains("\nrampart_peer_connections_open 1\n"), "{out}");
            assert!(out.contains("\nrampart_peer_connections_refused_total 3\n"), "{out}");
        }
        assert_eq!(s.inbound_open.load(Relaxed), 0);
        assert!(s.may_log_refusal(), "the first refusal is logged");
        assert!(!s.may_log_refusal(), "the next one within the interval is not");
    }
}
