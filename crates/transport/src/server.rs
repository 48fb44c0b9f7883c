//! The peer listener: accepts connections up to a cap, completes the TLS handshake (when peer
//! TLS is on) before reading a single frame, and hands each request to the [`Handler`] with
//! the identity the peer's certificate proved.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::frame::{
    frame_header, read_frame, FrameError, Wait, WaitKind, HEADER_BYTES, KIND_ERROR, KIND_REQUEST, KIND_RESPONSE,
};
use crate::stats::{OpenGuard, Stats};
use crate::{BoxFuture, Config};

/// Who sent a request: the remote address and, with peer TLS, the node id its certificate
/// names (verified against the cluster CA before any frame was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerIdentity {
    pub remote: SocketAddr,
    /// `None` when peer TLS is off: then nothing about the sender is proven.
    pub node: Option<u64>,
}

impl PeerIdentity {
    /// Checks a message's claimed sender against the certificate: with peer TLS, a member can
    /// speak only for itself. Without TLS every claim passes (nothing can be checked).
    pub fn check_claim(&self, claimed: u64) -> Result<(), String> {
        match self.node {
            Some(proven) if proven != claimed => {
                tracing::warn!(remote = %self.remote, proven, claimed, "peer message claims another sender; refused");
                Err(format!(
                    "refused: the peer's certificate names node {proven} but the message claims to be from node {claimed}"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Serves inbound requests. An `Err` is sent back as an error response.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, from: &PeerIdentity, request: Bytes) -> BoxFuture<Result<Bytes, String>>;

    /// Called when an inbound connection ends (the peer closed it, died, or
    /// sent garbage). A process killed with SIGKILL shows up here at once.
    fn connection_closed(&self, _remote: SocketAddr) {}
}

pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Most inbound connections from one IP address that may be in their TLS handshake (or, without
/// TLS, waiting for their first frame) at once. One host that opens connections and never
/// finishes them can then hold only this many of the `inbound_connections_max` slots, and
/// members from other hosts still get in. A member needs one connection per peer.
pub const UNAUTHENTICATED_PER_IP_MAX: usize = 8;

/// Connections from each address that have not finished their handshake.
#[derive(Default)]
struct Unauthenticated(parking_lot::Mutex<HashMap<IpAddr, usize>>);

/// One connection counted in [`Unauthenticated`] until it drops.
struct UnauthenticatedGuard {
    table: Arc<Unauthenticated>,
    ip: IpAddr,
}

impl Unauthenticated {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<UnauthenticatedGuard> {
        let mut map = self.0.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= UNAUTHENTICATED_PER_IP_MAX {
            return None;
        }
        *n += 1;
        Some(UnauthenticatedGuard { table: self.clone(), ip })
    }
}

impl Drop for UnauthenticatedGuard {
    fn drop(&mut self) {
        let mut map = self.table.0.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Accepts peer connections on `listener` and answers their requests with
/// `handler`, until the task is dropped. At most `cfg.inbound_connections_max` connections are
/// open at once, and at most [`UNAUTHENTICATED_PER_IP_MAX`] from one address still in their
/// handshake; one more is closed at once, with a log line.
pub async fn serve(listener: TcpListener, handler: Arc<dyn Handler>, cfg: Config) {
    let slots = Arc::new(Semaphore::new(cfg.inbound_connections_max));
    let unauthenticated = Arc::new(Unauthenticated::default());
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            cfg.stats.inbound_refused.fetch_add(1, Relaxed);
            if cfg.stats.may_log_refusal() {
                tracing::warn!(
                    %remote,
                    limit = cfg.inbound_connections_max,
                    refused_total = cfg.stats.inbound_refused.load(Relaxed),
                    "peer connection refused: inbound_connections_max connections are open"
                );
            }
            drop(stream);
            continue;
        };
        let Some(pending) = unauthenticated.enter(remote.ip()) else {
            cfg.stats.inbound_refused.fetch_add(1, Relaxed);
            if cfg.stats.may_log_refusal() {
                tracing::warn!(
                    %remote,
                    limit = UNAUTHENTICATED_PER_IP_MAX,
                    "peer connection refused: this address already has that many connections in their handshake"
                );
            }
            drop(stream);
            continue;
        };
        cfg.stats.inbound_accepted.fetch_add(1, Relaxed);
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_conn(stream, remote, handler.clone(), cfg.clone(), permit, pending));
    }
}

/// Logs a refused or failed inbound connection, at most once per interval.
fn log_refusal(stats: &Stats, remote: SocketAddr, what: &str, error: &dyn std::fmt::Display) {
    if stats.may_log_refusal() {
        tracing::warn!(%remote, error = %error, "{what}; connection closed");
    }
}

/// The TLS handshake, within `handshake_timeout`; the identity is the node id of the verified
/// client certificate. `None` when the connection was refused (counted and logged).
async fn authenticate(
    stream: TcpStream,
    remote: SocketAddr,
    cfg: &Config,
) -> Option<(PeerIdentity, BoxRead, BoxWrite)> {
    let Some(tls) = &cfg.tls else {
        let (r, w) = stream.into_split();
        return Some((PeerIdentity { remote, node: None }, Box::new(r), Box::new(w)));
    };
    let stats = &cfg.stats;
    let accepted = match tokio::time::timeout(cfg.handshake_timeout, tls.acceptor().accept(stream)).await {
        Err(_) => {
            stats.handshake_timeouts.fetch_add(1, Relaxed);
            let ms = cfg.handshake_timeout.as_millis();
            log_refusal(stats, remote, "peer TLS handshake timed out", &format!("over {ms} ms (handshake_timeout)"));
            return None;
        }
        Ok(Err(e)) => {
            stats.inbound_handshake_failures.fetch_add(1, Relaxed);
            log_refusal(stats, remote, "peer TLS handshake refused", &e);
            return None;
        }
        Ok(Ok(s)) => s,
    };
    match rampart_tls::peer_node_id(accepted.get_ref().1) {
        Ok(id) => {
            let (r, w) = tokio::io::split(accepted);
            Some((PeerIdentity { remote, node: Some(id) }, Box::new(r), Box::new(w)))
        }
        Err(e) => {
            stats.inbound_handshake_failures.fetch_add(1, Relaxed);
            log_refusal(stats, remote, "peer certificate refused", &e);
            None
        }
    }
}

async fn serve_conn(
    stream: TcpStream,
    remote: SocketAddr,
    handler: Arc<dyn Handler>,
    cfg: Config,
    _slot: OwnedSemaphorePermit,
    pending: UnauthenticatedGuard,
) {
    let stats = cfg.stats.clone();
    let _open = OpenGuard::new(&stats);
    let Some((identity, mut read, write)) = authenticate(stream, remote, &cfg).await else { return };
    // Authenticated (TLS) or, without TLS, once its first frame arrived: no longer counted
    // against its address's handshake allowance.
    let mut pending = identity.node.is_none().then_some(pending);
    let (tx, mut rx) = mpsc::channel::<(u64, Result<Bytes, String>)>(cfg.send_queue_max);
    let limit = cfg.frame_bytes_max;
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(64 * 1024, write);
        while let Some((id, result)) = rx.recv().await {
            let mut next = Some((id, result));
            while let Some((id, result)) = next.take() {
                let (kind, payload) = match result {
                    Ok(p) if p.len() + HEADER_BYTES <= limit => (KIND_RESPONSE, p),
                    Ok(p) => (KIND_ERROR, Bytes::from(format!("response of {} bytes exceeds frame limit", p.len()))),
                    Err(msg) => (KIND_ERROR, Bytes::from(msg)),
                };
                let header = frame_header(payload.len(), id, kind);
                if w.write_all(&header).await.is_err() || w.write_all(&payload).await.is_err() {
                    return;
                }
                next = rx.try_recv().ok();
            }
            if w.flush().await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let inflight = Arc::new(Semaphore::new(cfg.inflight_per_conn_max));
    let mut buf = BytesMut::with_capacity(crate::frame::FRAME_READ_CHUNK_BYTES);
    // Without TLS nothing else bounds how long a new connection may sit silent: its first
    // frame must begin within the handshake timeout.
    let mut wait = match identity.node {
        None => Wait { limit: Some(cfg.handshake_timeout), kind: WaitKind::FirstFrame },
        Some(_) => Wait { limit: Some(cfg.idle_timeout), kind: WaitKind::Idle },
    };
    loop {
        let frame = match read_frame(&mut read, &mut buf, limit, wait, cfg.frame_read_timeout).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                match &e {
                    FrameError::Stalled(_) => stats.frame_timeouts.fetch_add(1, Relaxed),
                    FrameError::Idle(_, WaitKind::Idle) => stats.idle_timeouts.fetch_add(1, Relaxed),
                    FrameError::Idle(_, WaitKind::FirstFrame) => stats.handshake_timeouts.fetch_add(1, Relaxed),
                    FrameError::TooLarge(..) | FrameError::TooShort(_) => stats.bad_frames.fetch_add(1, Relaxed),
                    FrameError::Truncated | FrameError::Io(_) => 0,
                };
                tracing::warn!(%remote, error = %e, "bad frame from peer, disconnecting");
                break;
            }
        };
        wait = Wait { limit: Some(cfg.idle_timeout), kind: WaitKind::Idle };
        drop(pending.take());
        if frame.kind != KIND_REQUEST {
            stats.bad_frames.fetch_add(1, Relaxed);
            tracing::warn!(%remote, kind = frame.kind, "unexpected frame kind from peer, disconnecting");
            break;
        }
        let Ok(permit) = inflight.clone().acquire_owned().await else { break };
        let tx = tx.clone();
        let fut = handler.handle(&identity, frame.payload);
        tokio::spawn(async move {
            let result = fut.await;
            let _ = tx.send((frame.id, result)).await;
            drop(permit);
        });
    }
    drop(tx);
    handler.connection_closed(remote);
    // Let in-flight answers drain; the writer ends when every sender is gone.
    let _ = writer.await;
}
