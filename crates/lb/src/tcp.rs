//! TCP mode (L4): one backend connection per client connection, bytes copied
//! both ways. When one side ends its stream, the other side's write half is
//! shut down and the opposite direction keeps flowing (half-close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::algo::hash64;
use crate::backend::now_ms;
use crate::frontend::{ActiveGuard, FrontendRt};
use crate::io::{idle_expired, Activity, CountingIo};
use crate::retry::Attempts;
use crate::tls::{self, BackendStream, ConnectError};

/// Copy buffer per direction of a TCP session.
pub const TCP_COPY_BUFFER_BYTES: usize = 16 * 1024;

/// Serves one client connection: a backend connection (connect failures go
/// to the next backend, as [`Attempts`] allows; nothing was sent yet), then
/// bytes both ways until both sides close or the session idles out.
pub async fn serve_connection<S>(fe: Arc<FrontendRt>, client: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let hash = match peer.ip() {
        std::net::IpAddr::V4(a) => hash64(&a.octets()),
        std::net::IpAddr::V6(a) => hash64(&a.octets()),
    };
    fe.stats.requests.inc();
    fe.budget.deposit();
    let (connected, attempts) = connect_backend(&fe, hash).await;
    let Some((upstream, guard)) = connected else {
        fe.stats.no_backend.inc();
        if fe.stats.log_allowed(now_ms()) {
            tracing::warn!(frontend = %fe.cfg.name, client = %peer, "no backend available; closing the connection (logged at most once a second)");
        }
        return;
    };
    let session = copy_session(&fe, client, upstream, peer).await;
    fe.stats.responses_2xx.inc();
    fe.stats.latency.record(started.elapsed());
    if let Some(fmt) = &fe.cfg.access_log {
        log_session(fmt, &fe, peer, &guard, attempts, &session, started);
    }
    drop(guard);
}

/// A connection to the first backend that accepts one, with the request
/// counted in flight on it; and the number of attempts made.
async fn connect_backend(fe: &Arc<FrontendRt>, hash: u64) -> (Option<(BackendStream, ActiveGuard)>, u32) {
    let mut plan = Attempts::new(fe, hash);
    let tls = fe.cfg.backend_tls.as_ref().map(|t| &t.connector);
    while let Some(mut guard) = plan.next(now_ms()) {
        let b = guard.backend().clone();
        match tls::connect(b.addr, tls, fe.cfg.connect_timeout()).await {
            Ok(s) => {
                b.stats.connects.inc();
                b.record_success();
                guard.mark_response();
                return (Some((s, guard)), plan.made());
            }
            Err(e @ ConnectError::Tls(_)) => {
                b.stats.tls_failures.inc();
                if fe.stats.log_allowed(now_ms()) {
                    tracing::warn!(frontend = %fe.cfg.name, backend = %b.addr, "backend refused: {e} (logged at most once a second)");
                }
            }
            Err(e) => tracing::debug!(backend = %b.addr, "{e}"),
        }
        guard.fail();
        b.record_failure(&fe.cfg.ejection, &fe.backends, now_ms());
        // Nothing of the session was sent, so it may always go elsewhere
        // (`retry::may_resend(Delivery::Unsent, _)`).
    }
    (None, plan.made())
}

/// How a TCP session went.
struct Session {
    bytes_in: u64,
    bytes_out: u64,
    how: &'static str,
}

/// Copies bytes both ways until both directions are closed, an error, or
/// `idle_ms` without a byte either way.
async fn copy_session<S>(fe: &FrontendRt, client: S, upstream: BackendStream, peer: SocketAddr) -> Session
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity::default());
    let mut a = CountingIo::new(client, activity.clone());
    let mut b = CountingIo::new(upstream, activity.clone());
    let idle = Duration::from_millis(fe.cfg.timeouts.idle_ms);
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, TCP_COPY_BUFFER_BYTES, TCP_COPY_BUFFER_BYTES);
    tokio::select! {
        r = copy => match r {
            Ok((bytes_in, bytes_out)) => Session { bytes_in, bytes_out, how: "closed" },
            Err(e) => {
                tracing::debug!(client = %peer, "tcp session error: {e}");
                Session { bytes_in: 0, bytes_out: 0, how: "error" }
            }
        },
        () = idle_expired(&activity, idle) => {
            fe.stats.closed_idle_timeout.inc();
            Session { bytes_in: 0, bytes_out: 0, how: "idle timeout" }
        }
    }
}

fn log_session(
    fmt: &str,
    fe: &FrontendRt,
    peer: SocketAddr,
    guard: &ActiveGuard,
    attempts: u32,
    s: &Session,
    started: Instant,
) {
    crate::access_log::emit(
        fmt,
        &[
            ("client", &peer.to_string()),
            ("frontend", &fe.cfg.name),
            ("method", "TCP"),
            ("uri", s.how),
            ("status", "-"),
            ("backend", &guard.backend().addr.to_string()),
            ("attempts", &attempts.to_string()),
            ("bytes_in", &s.bytes_in.to_string()),
            ("bytes_out", &s.bytes_out.to_string()),
            ("duration_ms", &format!("{:.3}", started.elapsed().as_secs_f64() * 1000.0)),
        ],
    );
}
