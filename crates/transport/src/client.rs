//! The peer client: one connection per peer, pipelined, reconnected with backoff. With peer
//! TLS the connection presents this node's certificate and is used only once the server's
//! certificate proved it is the node that was called.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::frame::{frame_header, read_frame, FrameError, Wait, HEADER_BYTES, KIND_ERROR, KIND_REQUEST, KIND_RESPONSE};
use crate::server::{BoxRead, BoxWrite};
use crate::{CallError, Config};

struct Pending {
    tx: oneshot::Sender<Result<Bytes, CallError>>,
    sent: Arc<AtomicBool>,
}

struct Outgoing {
    id: u64,
    payload: Bytes,
    sent: Arc<AtomicBool>,
}

/// A client for one peer: one connection, reconnected on demand with capped
/// exponential backoff. Cheap to clone.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<PeerInner>,
}

struct PeerInner {
    addr: SocketAddr,
    /// The node this client calls; with peer TLS its certificate must name this id.
    node: u64,
    cfg: Config,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    queue: mpsc::Sender<Outgoing>,
    /// Until when new calls fail fast after a failed connect.
    down_until: Mutex<Option<(Instant, String)>>,
}

impl Peer {
    /// Creates the client of node `node` at `addr` and its connection task. Outgoing
    /// connections bind `source_ip` (the node's own peer address) when given. With peer TLS
    /// (`cfg.tls`), a server whose certificate does not name `node` is refused.
    pub fn new(node: u64, addr: SocketAddr, source_ip: Option<IpAddr>, cfg: Config) -> Peer {
        let (tx, rx) = mpsc::channel(cfg.send_queue_max);
        let inner = Arc::new(PeerInner {
            addr,
            node,
            cfg,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            queue: tx,
            down_until: Mutex::new(None),
        });
        tokio::spawn(connection_loop(Arc::downgrade(&inner), rx, source_ip));
        Peer { inner }
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The node this client calls.
    pub fn node(&self) -> u64 {
        self.inner.node
    }

    /// Sends `payload` and waits up to `timeout` for the answer.
    pub async fn call(&self, payload: Bytes, timeout: Duration) -> Result<Bytes, CallError> {
        let inner = &self.inner;
        if payload.len() + HEADER_BYTES > inner.cfg.frame_bytes_max {
            return Err(CallError::TooLarge { bytes: payload.len(), limit: inner.cfg.frame_bytes_max });
        }
        if let Some((until, reason)) = inner.down_until.lock().clone() {
            if Instant::now() < until {
                return Err(CallError::NotSent { addr: inner.addr, reason });
            }
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let sent = Arc::new(AtomicBool::new(false));
        inner.pending.lock().insert(id, Pending { tx, sent: sent.clone() });
        let deadline = tokio::time::Instant::now() + timeout;
        let enqueue = inner.queue.send(Outgoing { id, payload, sent: sent.clone() });
        match tokio::time::timeout_at(deadline, enqueue).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                inner.pending.lock().remove(&id);
                return Err(CallError::NotSent { addr: inner.addr, reason: "send queue full or closed".into() });
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CallError::Lost { addr: inner.addr }),
            Err(_) => {
                inner.pending.lock().remove(&id);
                if sent.load(Ordering::Acquire) {
                    Err(CallError::Timeout { addr: inner.addr, timeout_ms: timeout.as_millis() as u64 })
                } else {
                    // Still queued: it may yet be written, so the outcome is unknown too.
                    Err(CallError::Timeout { addr: inner.addr, timeout_ms: timeout.as_millis() as u64 })
                }
            }
        }
    }
}

impl PeerInner {
    /// Fails every pending call, telling each whether it had been written.
    fn fail_all(&self) {
        let drained: Vec<Pending> = self.pending.lock().drain().map(|(_, p)| p).collect();
        for p in drained {
            let err = if p.sent.load(Ordering::Acquire) {
                CallError::Lost { addr: self.addr }
            } else {
                CallError::NotSent {
                    addr: self.addr,
                    reason: "connection closed before the request was written".into(),
                }
            };
            let _ = p.tx.send(Err(err));
        }
    }

    fn fail_one(&self, id: u64, err: CallError) {
        if let Some(p) = self.pending.lock().remove(&id) {
            let _ = p.tx.send(Err(err));
        }
    }
}

async fn connect_tcp(addr: SocketAddr, source_ip: Option<IpAddr>, timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source_ip {
        if ip.is_ipv4() == addr.is_ipv4() && !ip.is_unspecified() {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
    }
    let stream = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Why a connection could not be set up; the request was not sent either way.
enum ConnectError {
    Tcp(std::io::Error),
    /// The TLS handshake failed, or the server is not the node called.
    Tls(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Tcp(e) => write!(f, "connect failed: {e}"),
            ConnectError::Tls(e) => write!(f, "peer TLS failed: {e}"),
        }
    }
}

/// Connects, and with peer TLS completes the handshake within `handshake_timeout` and checks
/// that the server's certificate names the node called.
async fn connect(inner: &PeerInner, source_ip: Option<IpAddr>) -> Result<(BoxRead, BoxWrite), ConnectError> {
    let cfg = &inner.cfg;
    let stream = connect_tcp(inner.addr, source_ip, cfg.connect_timeout).await.map_err(ConnectError::Tcp)?;
    let Some(tls) = &cfg.tls else {
        let (r, w) = stream.into_split();
        return Ok((Box::new(r), Box::new(w)));
    };
    let handshake = tls.connector().connect(rampart_tls::node_server_name(inner.node), stream);
    let s = match tokio::time::timeout(cfg.handshake_timeout, handshake).await {
        Err(_) => {
            let ms = cfg.handshake_timeout.as_millis();
            return Err(ConnectError::Tls(format!("handshake not done within {ms} ms (handshake_timeout)")));
        }
        Ok(Err(e)) => return Err(ConnectError::Tls(e.to_string())),
        Ok(Ok(s)) => s,
    };
    match rampart_tls::peer_node_id(s.get_ref().1) {
        Ok(id) if id == inner.node => {}
        Ok(id) => {
            return Err(ConnectError::Tls(format!("the server's certificate names node {id}, not node {}", inner.node)))
        }
        Err(e) => return Err(ConnectError::Tls(e.to_string())),
    }
    let (r, w) = tokio::io::split(s);
    Ok((Box::new(r), Box::new(w)))
}

async fn connection_loop(
    weak: std::sync::Weak<PeerInner>,
    mut rx: mpsc::Receiver<Outgoing>,
    source_ip: Option<IpAddr>,
) {
    let mut backoff = None::<Duration>;
    // Wait for work before connecting: idle peers hold no connection attempts.
    while let Some(first) = rx.recv().await {
        let Some(inner) = weak.upgrade() else { return };
        let (read, write) = match connect(&inner, source_ip).await {
            Ok(s) => s,
            Err(e) => {
                let first_failure = backoff.is_none();
                let delay = backoff.map_or(inner.cfg.backoff_min, |d: Duration| (d * 2).min(inner.cfg.backoff_max));
                backoff = Some(delay);
                let reason = e.to_string();
                let retry_ms = delay.as_millis() as u64;
                if let ConnectError::Tls(_) = e {
                    inner.cfg.stats.outbound_handshake_failures.fetch_add(1, Ordering::Relaxed);
                    // A certificate problem does not fix itself: say so once per failure streak.
                    if first_failure {
                        tracing::warn!(peer = %inner.addr, node = inner.node, %reason, retry_ms, "peer TLS connection failed");
                    }
                }
                tracing::debug!(peer = %inner.addr, %reason, retry_ms, "peer connect failed");
                *inner.down_until.lock() = Some((Instant::now() + delay, reason.clone()));
                inner.fail_one(first.id, CallError::NotSent { addr: inner.addr, reason: reason.clone() });
                while let Ok(o) = rx.try_recv() {
                    inner.fail_one(o.id, CallError::NotSent { addr: inner.addr, reason: reason.clone() });
                }
                continue;
            }
        };
        backoff = None;
        *inner.down_until.lock() = None;
        tracing::debug!(peer = %inner.addr, "peer connected");
        let mut reader = tokio::spawn(read_responses(weak.clone(), read));
        let ok = write_requests(&inner, &mut rx, write, first, &mut reader).await;
        reader.abort();
        let _ = reader.await;
        if !ok {
            tracing::debug!(peer = %inner.addr, "peer connection closed");
        }
        inner.fail_all();
        drop(inner);
    }
}

/// Writes queued requests until the connection fails or the reader ends.
async fn write_requests(
    inner: &Arc<PeerInner>,
    rx: &mut mpsc::Receiver<Outgoing>,
    write: BoxWrite,
    first: Outgoing,
    reader: &mut tokio::task::JoinHandle<()>,
) -> bool {
    let mut w = BufWriter::with_capacity(64 * 1024, write);
    let mut next = Some(first);
    loop {
        let o = match next.take() {
            Some(o) => o,
            None => {
                // Flush what was batched, then wait for more work, or for the
                // reader to see the connection end (so queued requests are
                // not written into a dead socket and reported as maybe-sent).
                if w.flush().await.is_err() {
                    return false;
                }
                tokio::select! {
                    o = rx.recv() => match o {
                        Some(o) => o,
                        None => return true,
                    },
                    _ = &mut *reader => {
                        // Completed: replace with a finished dummy so the caller never polls it again.
                        *reader = tokio::spawn(async {});
                        return false;
                    }
                }
            }
        };
        {
            // Checked and marked under the lock `fail_all` drains with: a call
            // is either failed as NotSent (and never written) or marked sent
            // before any byte of it is written.
            let pending = inner.pending.lock();
            if !pending.contains_key(&o.id) {
                continue; // caller gave up, or the connection failed, before it was written
            }
            o.sent.store(true, Ordering::Release);
        }
        let header = frame_header(o.payload.len(), o.id, KIND_REQUEST);
        if w.write_all(&header).await.is_err() || w.write_all(&o.payload).await.is_err() {
            return false;
        }
        if let Ok(o2) = rx.try_recv() {
            next = Some(o2);
        }
    }
}

async fn read_responses(weak: std::sync::Weak<PeerInner>, mut read: BoxRead) {
    let (limit, frame_timeout, stats) = match weak.upgrade() {
        Some(i) => (i.cfg.frame_bytes_max, i.cfg.frame_read_timeout, i.cfg.stats.clone()),
        None => return,
    };
    let mut buf = BytesMut::with_capacity(crate::frame::FRAME_READ_CHUNK_BYTES);
    loop {
        // Between answers the connection may rest as long as it likes (this side has nothing
        // to wait for); a begun answer must be complete in time.
        let frame = match read_frame(&mut read, &mut buf, limit, Wait::FOREVER, frame_timeout).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                match &e {
                    FrameError::Stalled(_) => stats.frame_timeouts.fetch_add(1, Ordering::Relaxed),
                    FrameError::TooLarge(..) | FrameError::TooShort(_) => {
                        stats.bad_frames.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => 0,
                };
                if let Some(inner) = weak.upgrade() {
                    tracing::warn!(peer = %inner.addr, error = %e, "bad frame from peer, disconnecting");
                }
                break;
            }
        };
        let Some(inner) = weak.upgrade() else { return };
        let result = match frame.kind {
            KIND_RESPONSE => Ok(frame.payload),
            KIND_ERROR => Err(CallError::Remote {
                addr: inner.addr,
                message: String::from_utf8_lossy(&frame.payload).into_owned(),
            }),
            k => {
                tracing::warn!(peer = %inner.addr, kind = k, "unexpected frame kind from peer, disconnecting");
                break;
            }
        };
        let pending = inner.pending.lock().remove(&frame.id);
        if let Some(p) = pending {
            let _ = p.tx.send(result);
        }
    }
    // Make the writer notice: fail everything now; the writer's next write errors.
    if let Some(inner) = weak.upgrade() {
        inner.fail_all();
    }
}
