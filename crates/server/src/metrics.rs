//! Request counters and latency histograms, rendered as Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rampart_metrics::{Counter, Histogram};

/// Upper bounds of the exported latency buckets, in microseconds (Prometheus `le`, in seconds).
/// The histogram behind them is `rampart_metrics::Histogram`; each exported count is exact to
/// within its bucket resolution (12.5 %).
const BUCKETS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000,
];

#[derive(Default)]
struct CommandStats {
    errors: Counter,
    latency: Histogram,
}

/// Per-(api, command) statistics. The set of commands is bounded: unknown
/// commands are counted under `unknown`.
#[derive(Default)]
pub struct Metrics {
    commands: Mutex<BTreeMap<(&'static str, &'static str), &'static CommandStats>>,
    /// The RESP listener's connections (also exported under the older names
    /// `rampart_resp_connections` and `rampart_resp_connections_rejected_total`).
    pub resp: ListenerStats,
    pub http: ListenerStats,
    /// KEYS, SCAN, DBSIZE and list requests running on the blocking pool now.
    pub scan_jobs_running: AtomicU64,
    pub scan_jobs_total: Counter,
    /// Long requests refused because `scan_jobs_max` were running for the whole request timeout.
    pub scan_jobs_refused: Counter,
    /// Pieces of request work (pattern matching, list encoding) run on the blocking pool.
    pub offloaded_jobs: Counter,
}

/// Why a client connection was closed by the server (the reasons `/metrics` counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A request (RESP: one begun; HTTP: a head) not complete within the header timeout.
    HeaderTimeout,
    /// No request, or no progress on a reply, within the idle timeout.
    IdleTimeout,
    /// The TLS handshake failed or was not complete within the header timeout.
    TlsHandshake,
}

/// What one client listener counts.
#[derive(Default)]
pub struct ListenerStats {
    pub open: AtomicU64,
    pub accepted: Counter,
    /// Connections refused because the listener's connection cap was reached.
    pub refused: Counter,
    pub closed_header_timeout: Counter,
    pub closed_idle_timeout: Counter,
    pub closed_tls_handshake: Counter,
}

impl ListenerStats {
    pub fn closed(&self, why: Closed) {
        match why {
            Closed::HeaderTimeout => self.closed_header_timeout.inc(),
            Closed::IdleTimeout => self.closed_idle_timeout.inc(),
            Closed::TlsHandshake => self.closed_tls_handshake.inc(),
        }
    }

    /// Counts a served connection as open until the guard drops.
    pub fn open_guard(&self) -> OpenGuard<'_> {
        self.accepted.inc();
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self)
    }
}

/// Holds one connection in [`ListenerStats::open`].
pub struct OpenGuard<'a>(&'a ListenerStats);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    fn stats(&self, api: &'static str, cmd: &'static str) -> &'static CommandStats {
        let mut map = self.commands.lock();
        // Leaked once per distinct (api, command): a small fixed set.
        map.entry((api, cmd)).or_insert_with(|| Box::leak(Box::default()))
    }

    pub fn observe(&self, api: &'static str, cmd: &'static str, took: Duration, ok: bool) {
        let s = self.stats(api, cmd);
        s.latency.record(took);
        if !ok {
            s.errors.inc();
        }
    }

    /// Appends the request metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let map = self.commands.lock().clone();
        let _ = writeln!(out, "# HELP rampart_requests_total Client requests by API and command.");
        let _ = writeln!(out, "# TYPE rampart_requests_total counter");
        for ((api, cmd), s) in &map {
            let _ = writeln!(out, "rampart_requests_total{{api=\"{api}\",command=\"{cmd}\"}} {}", s.latency.count());
        }
        let _ = writeln!(out, "# HELP rampart_request_errors_total Client requests answered with an error.");
        let _ = writeln!(out, "# TYPE rampart_request_errors_total counter");
        for ((api, cmd), s) in &map {
            let _ = writeln!(out, "rampart_request_errors_total{{api=\"{api}\",command=\"{cmd}\"}} {}", s.errors.get());
        }
        let _ = writeln!(out, "# HELP rampart_request_duration_seconds Client request latency.");
        let _ = writeln!(out, "# TYPE rampart_request_duration_seconds histogram");
        for ((api, cmd), s) in &map {
            let h = s.latency.snapshot();
            for b in BUCKETS_US {
                let le = b as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "rampart_request_duration_seconds_bucket{{api=\"{api}\",command=\"{cmd}\",le=\"{le}\"}} {}",
                    h.count_at_most_us(b)
                );
            }
            let count = h.count();
            let _ = writeln!(
                out,
                "rampart_request_duration_seconds_bucket{{api=\"{api}\",command=\"{cmd}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "rampart_request_duration_seconds_sum{{api=\"{api}\",command=\"{cmd}\"}} {}",
                h.sum_us() as f64 / 1e6
            );
            let _ = writeln!(out, "rampart_request_duration_seconds_count{{api=\"{api}\",command=\"{cmd}\"}} {count}");
        }
        let _ = writeln!(out, "# TYPE rampart_resp_connections gauge");
        let _ = writeln!(out, "rampart_resp_connections {}", self.resp.open.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE rampart_resp_connections_rejected_total counter");
        let _ = writeln!(out, "rampart_resp_connections_rejected_total {}", self.resp.refused.get());
        self.render_listeners(out);
        let _ = writeln!(
            out,
            "# HELP rampart_scan_jobs_running KEYS/SCAN/DBSIZE/list requests running off the async workers."
        );
        let _ = writeln!(out, "# TYPE rampart_scan_jobs_running gauge");
        let _ = writeln!(out, "rampart_scan_jobs_running {}", self.scan_jobs_running.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE rampart_scan_jobs_total counter");
        let _ = writeln!(out, "rampart_scan_jobs_total {}", self.scan_jobs_total.get());
        let _ = writeln!(out, "# HELP rampart_scan_jobs_refused_total Long requests refused: scan_jobs_max were busy.");
        let _ = writeln!(out, "# TYPE rampart_scan_jobs_refused_total counter");
        let _ = writeln!(out, "rampart_scan_jobs_refused_total {}", self.scan_jobs_refused.get());
        let _ = writeln!(
            out,
            "# HELP rampart_offloaded_jobs_total Request work run on the blocking pool, off the async workers."
        );
        let _ = writeln!(out, "# TYPE rampart_offloaded_jobs_total counter");
        let _ = writeln!(out, "rampart_offloaded_jobs_total {}", self.offloaded_jobs.get());
    }

    fn render_listeners(&self, out: &mut String) {
        let apis = [("resp", &self.resp), ("http", &self.http)];
        let _ = writeln!(out, "# HELP rampart_client_connections Client connections open, by listener.");
        let _ = writeln!(out, "# TYPE rampart_client_connections gauge");
        for (api, s) in apis {
            let _ = writeln!(out, "rampart_client_connections{{api=\"{api}\"}} {}", s.open.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# TYPE rampart_client_connections_accepted_total counter");
        for (api, s) in apis {
            let _ = writeln!(out, "rampart_client_connections_accepted_total{{api=\"{api}\"}} {}", s.accepted.get());
        }
        let _ = writeln!(
            out,
            "# HELP rampart_client_connections_refused_total Connections refused by the listener's connection cap."
        );
        let _ = writeln!(out, "# TYPE rampart_client_connections_refused_total counter");
        for (api, s) in apis {
            let _ = writeln!(out, "rampart_client_connections_refused_total{{api=\"{api}\"}} {}", s.refused.get());
        }
        let _ =
            writeln!(out, "# HELP rampart_client_connections_closed_total Connections the server closed, by reason.");
        let _ = writeln!(out, "# TYPE rampart_client_connections_closed_total counter");
        for (api, s) in apis {
            for (reason, c) in [
                ("header_timeout", &s.closed_header_timeout),
                ("idle_timeout", &s.closed_idle_timeout),
                ("tls_handshake", &s.closed_tls_handshake),
            ] {
                let _ = writeln!(
                    out,
                    "rampart_client_connections_closed_total{{api=\"{api}\",reason=\"{reason}\"}} {}",
                    c.get()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_figures_are_exported_by_api_and_reason() {
        let m = Metrics::default();
        let guard = m.http.open_guard();
        m.http.closed(Closed::HeaderTimeout);
        m.resp.refused.inc();
        m.resp.closed(Closed::IdleTimeout);
        m.scan_jobs_total.inc();
        let mut s = String::new();
        m.render(&mut s);
        for line in [
            "rampart_client_connections{api=\"http\"} 1",
            "rampart_client_connections{api=\"resp\"} 0",
            "rampart_client_connections_accepted_total{api=\"http\"} 1",
            "rampart_client_connections_refused_total{api=\"resp\"} 1",
            "rampart_resp_connections_rejected_total 1",
            "rampart_client_connections_closed_total{api=\"http\",reason=\"header_timeout\"} 1",
            "rampart_client_connections_closed_total{api=\"resp\",reason=\"idle_timeout\"} 1",
            "rampart_client_connections_closed_total{api=\"resp\",reason=\"header_timeout\"} 0",
            "rampart_scan_jobs_total 1",
            "rampart_scan_jobs_running 0",
        ] {
            assert!(s.lines().any(|l| l == line), "missing {line:?} in:\n{s}");
        }
        drop(guard);
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.lines().any(|l| l == "rampart_client_connections{api=\"http\"} 0"), "{s}");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe("resp", "get", Duration::from_micros(50), true);
        m.observe("resp", "get", Duration::from_millis(3), false);
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("rampart_requests_total{api=\"resp\",command=\"get\"} 2"), "{s}");
        assert!(s.contains("rampart_request_errors_total{api=\"resp\",command=\"get\"} 1"), "{s}");
        assert!(s.contains("command=\"get\",le=\"0.0001\"} 1"), "{s}");
        assert!(s.contains("command=\"get\",le=\"0.005\"} 2"), "{s}");
        assert!(s.contains("command=\"get\",le=\"+Inf\"} 2"), "{s}");
    }

    /// The exposition is byte for byte what it was before the histogram
    /// moved to `rampart-metrics` (same families, labels, `le` bounds and
    /// number formats), for samples away from bucket edges.
    #[test]
    fn prometheus_text_is_unchanged() {
        let m = Metrics::default();
        m.observe("resp", "get", Duration::from_micros(50), true);
        m.observe("resp", "get", Duration::from_millis(3), false);
        m.observe("http", "put", Duration::from_millis(700), true);
        m.resp.open.store(3, Ordering::Relaxed);
        let mut s = String::new();
        m.render(&mut s);
        let mut want = String::from(
            "# HELP rampart_requests_total Client requests by API and command.\n\
             # TYPE rampart_requests_total counter\n\
             rampart_requests_total{api=\"http\",command=\"put\"} 1\n\
             rampart_requests_total{api=\"resp\",command=\"get\"} 2\n\
             # HELP rampart_request_errors_total Client requests answered with an error.\n\
             # TYPE rampart_request_errors_total counter\n\
             rampart_request_errors_total{api=\"http\",command=\"put\"} 0\n\
             rampart_request_errors_total{api=\"resp\",command=\"get\"} 1\n\
             # HELP rampart_request_duration_seconds Client request latency.\n\
             # TYPE rampart_request_duration_seconds histogram\n",
        );
        let les = ["0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1"];
        let les_high = ["0.25", "0.5", "1", "2.5", "5", "+Inf"];
        let put = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1];
        let get = [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2];
        for (api, cmd, counts, sum, count) in [("http", "put", put, "0.7", 1), ("resp", "get", get, "0.00305", 2)] {
            for (le, n) in les.iter().chain(les_high.iter()).zip(counts) {
                want.push_str(&format!(
                    "rampart_request_duration_seconds_bucket{{api=\"{api}\",command=\"{cmd}\",le=\"{le}\"}} {n}\n"
                ));
            }
            want.push_str(&format!("rampart_request_duration_seconds_sum{{api=\"{api}\",command=\"{cmd}\"}} {sum}\n"));
            want.push_str(&format!(
                "rampart_request_duration_seconds_count{{api=\"{api}\",command=\"{cmd}\"}} {count}\n"
            ));
        }
        want.push_str(
            "# TYPE rampart_resp_connections gauge\nrampart_resp_connections 3\n\
             # TYPE rampart_resp_connections_rejected_total counter\nrampart_resp_connections_rejected_total 0\n",
        );
        // The listener and scan families follow (they have tests of their own).
        assert_eq!(&s[..want.len()], want);
        assert!(s[want.len()..].starts_with("# HELP rampart_client_connections "), "{}", &s[want.len()..]);
    }
}
