//! TCP mode (L4): one backend connection per client connection, bytes copied
//! both ways. When one side ends its stream, the other side's write half is
//! shut down and the opposite direction keeps flowing (half-close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::algo::hash64;
use crate::backend::now_ms;
use crate::frontend::FrontendRt;
use crate::io::{idle_expired, Activity, CountingIo};

/// Copy buffer per direction of a TCP session.
pub const TCP_COPY_BUFFER_BYTES: usize = 16 * 1024;

pub async fn serve_connection(fe: Arc<FrontendRt>, client: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let _ = client.set_nodelay(true);
    let hash = match peer.ip() {
        std::net::IpAddr::V4(a) => hash64(&a.octets()),
        std::net::IpAddr::V6(a) => hash64(&a.octets()),
    };
    fe.stats.requests.inc();
    fe.budget.deposit();
    let max_attempts = 1 + fe.cfg.retries.max_retries;
    let mut tried = Vec::with_capacity(max_attempts as usize);
    let mut connected = None;
    for attempt in 0..max_attempts {
        if attempt > 0 {
            if !fe.budget.try_withdraw(now_ms()) {
                fe.stats.retries_denied_by_budget.inc();
                break;
            }
            fe.stats.retries.inc();
        }
        let Some(mut guard) = fe.pick(hash, &tried) else {
            break;
        };
        tried.push(guard.index);
        let b = guard.backend().clone();
        if attempt > 0 {
            b.stats.retries.inc();
        }
        match tokio::time::timeout(fe.cfg.connect_timeout(), TcpStream::connect(b.addr)).await {
            Ok(Ok(s)) => {
                b.stats.connects.inc();
                b.record_success();
                guard.mark_response();
                connected = Some((s, guard));
                break;
            }
            Ok(Err(e)) => tracing::debug!(backend = %b.addr, "connect failed: {e}"),
            Err(_) => tracing::debug!(backend = %b.addr, "connect timed out"),
        }
        guard.fail();
        b.record_failure(&fe.cfg.ejection, &fe.backends, now_ms());
    }
    let Some((upstream, guard)) = connected else {
        fe.stats.no_backend.inc();
        if fe.stats.log_allowed(now_ms()) {
            tracing::warn!(frontend = %fe.cfg.name, client = %peer, "no backend available; closing the connection (logged at most once a second)");
        }
        return;
    };
    let _ = upstream.set_nodelay(true);
    let activity = Arc::new(Activity::default());
    let mut a = CountingIo::new(client, activity.clone());
    let mut b = CountingIo::new(upstream, activity.clone());
    let idle = Duration::from_millis(fe.cfg.timeouts.idle_ms);
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, TCP_COPY_BUFFER_BYTES, TCP_COPY_BUFFER_BYTES);
    let (bytes_in, bytes_out, how) = tokio::select! {
        r = copy => match r {
            Ok((i, o)) => (i, o, "closed"),
            Err(e) => {
                tracing::debug!(client = %peer, "tcp session error: {e}");
                (0, 0, "error")
            }
        },
        () = idle_expired(&activity, idle) => (0, 0, "idle timeout"),
    };
    fe.stats.responses_2xx.inc();
    fe.stats.latency.record_us(started.elapsed().as_micros() as u64);
    if let Some(fmt) = &fe.cfg.access_log {
        crate::access_log::emit(
            fmt,
            &[
                ("client", &peer.to_string()),
                ("frontend", &fe.cfg.name),
                ("method", "TCP"),
                ("uri", how),
                ("status", "-"),
                ("backend", &guard.backend().addr.to_string()),
                ("attempts", &tried.len().to_string()),
                ("bytes_in", &bytes_in.to_string()),
                ("bytes_out", &bytes_out.to_string()),
                ("duration_ms", &format!("{:.3}", started.elapsed().as_secs_f64() * 1000.0)),
            ],
        );
    }
    drop(guard);
}
