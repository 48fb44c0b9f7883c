//! rampart-transport: node-to-node request/response messaging over TCP.
//!
//! One long-lived connection per peer carries many requests at once
//! (pipelined, matched to responses by id). Frames are length-prefixed:
//!
//! ```text
//! u32 length (big endian, of everything after it) | u64 request id | u8 kind | payload
//! ```
//!
//! `kind` is 0 for a request, 1 for a response, 2 for an error response whose
//! payload is a UTF-8 message. Payloads are opaque bytes: the layers above
//! choose their serde format. A frame longer than
//! [`Config::frame_bytes_max`] or of an unknown kind closes the connection
//! with a log line; it never panics the node.
//!
//! Callers learn whether a failed request may have reached the peer:
//! [`CallError::NotSent`] means it certainly did not (safe to report "not
//! applied"); [`CallError::Lost`] and [`CallError::Timeout`] mean it may have.

pub mod codec;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

const KIND_REQUEST: u8 = 0;
const KIND_RESPONSE: u8 = 1;
const KIND_ERROR: u8 = 2;
const HEADER_BYTES: usize = 4 + 8 + 1;

/// Limits and timings of the transport. Defaults suit a LAN.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest frame accepted or sent (default 64 MiB; snapshot chunks must fit).
    pub frame_bytes_max: usize,
    /// Requests queued for one peer's connection before callers wait (default 4096).
    pub send_queue_max: usize,
    /// Requests one inbound connection may have in flight at once (default 4096).
    pub inflight_per_conn_max: usize,
    /// Timeout of one connect attempt (default 1 s).
    pub connect_timeout: Duration,
    /// First reconnect delay after a failure (default 20 ms), doubled per failure...
    pub backoff_min: Duration,
    /// ...up to this cap (default 1 s).
    pub backoff_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            frame_bytes_max: 64 << 20,
            send_queue_max: 4096,
            inflight_per_conn_max: 4096,
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The request was certainly not delivered.
    #[error("peer {addr} unreachable: {reason}")]
    NotSent { addr: SocketAddr, reason: String },
    /// The request was written but the connection broke before the answer.
    #[error("connection to peer {addr} lost before it answered")]
    Lost { addr: SocketAddr },
    /// No answer within the deadline; the request may have been delivered.
    #[error("peer {addr} did not answer within {timeout_ms} ms")]
    Timeout { addr: SocketAddr, timeout_ms: u64 },
    /// The peer's handler answered with an error.
    #[error("peer {addr} answered with an error: {message}")]
    Remote { addr: SocketAddr, message: String },
    #[error("request of {bytes} bytes exceeds the frame limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
}

impl CallError {
    /// True when the request certainly did not reach the peer.
    pub fn certainly_not_delivered(&self) -> bool {
        matches!(self, CallError::NotSent { .. } | CallError::TooLarge { .. })
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Serves inbound requests. An `Err` is sent back as an error response.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Bytes) -> BoxFuture<Result<Bytes, String>>;

    /// Called when an inbound connection ends (the peer closed it, died, or
    /// sent garbage). A process killed with SIGKILL shows up here at once.
    fn connection_closed(&self, _remote: SocketAddr) {}
}

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
    cfg: Config,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    queue: mpsc::Sender<Outgoing>,
    /// Until when new calls fail fast after a failed connect.
    down_until: Mutex<Option<(Instant, String)>>,
}

impl Peer {
    /// Creates the client and its connection task. Outgoing connections bind
    /// `source_ip` (the node's own peer address) when given.
    pub fn new(addr: SocketAddr, source_ip: Option<IpAddr>, cfg: Config) -> Peer {
        let (tx, rx) = mpsc::channel(cfg.send_queue_max);
        let inner = Arc::new(PeerInner {
            addr,
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

async fn connect(addr: SocketAddr, source_ip: Option<IpAddr>, timeout: Duration) -> std::io::Result<TcpStream> {
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

async fn connection_loop(
    weak: std::sync::Weak<PeerInner>,
    mut rx: mpsc::Receiver<Outgoing>,
    source_ip: Option<IpAddr>,
) {
    let mut backoff = None::<Duration>;
    // Wait for work before connecting: idle peers hold no connection attempts.
    while let Some(first) = rx.recv().await {
        let Some(inner) = weak.upgrade() else { return };
        let stream = match connect(inner.addr, source_ip, inner.cfg.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                let delay = backoff.map_or(inner.cfg.backoff_min, |d: Duration| (d * 2).min(inner.cfg.backoff_max));
                backoff = Some(delay);
                let reason = format!("connect failed: {e}");
                tracing::debug!(peer = %inner.addr, %reason, retry_ms = delay.as_millis() as u64, "peer connect failed");
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
        let (read, write) = stream.into_split();
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
    write: OwnedWriteHalf,
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

async fn read_responses(weak: std::sync::Weak<PeerInner>, mut read: OwnedReadHalf) {
    let limit = match weak.upgrade() {
        Some(i) => i.cfg.frame_bytes_max,
        None => return,
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let frame = match read_frame(&mut read, &mut buf, limit).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
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

/// The length, id and kind that precede a payload of `payload_len` bytes
/// (callers keep payloads within the frame limit, far below u32::MAX).
fn frame_header(payload_len: usize, id: u64, kind: u8) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(&((payload_len + 9) as u32).to_be_bytes());
    h[4..12].copy_from_slice(&id.to_be_bytes());
    h[12] = kind;
    h
}

struct Frame {
    id: u64,
    kind: u8,
    payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
    #[error("frame length {0} is shorter than its header")]
    TooShort(usize),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
async fn read_frame(
    read: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<Frame>, FrameError> {
    loop {
        if buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len + 4 > limit {
                return Err(FrameError::TooLarge(len + 4, limit));
            }
            if len < 9 {
                return Err(FrameError::TooShort(len));
            }
            if buf.len() >= 4 + len {
                buf.advance(4);
                let id = buf.get_u64();
                let kind = buf.get_u8();
                let payload = buf.split_to(len - 9).freeze();
                return Ok(Some(Frame { id, kind, payload }));
            }
            buf.reserve(4 + len - buf.len());
        } else {
            buf.reserve(64 * 1024);
        }
        let n = read.read_buf(buf).await?;
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(FrameError::Truncated) };
        }
    }
}

/// Accepts peer connections on `listener` and answers their requests with
/// `handler`, until the task is dropped.
pub async fn serve(listener: TcpListener, handler: Arc<dyn Handler>, cfg: Config) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_conn(stream, remote, handler.clone(), cfg.clone()));
    }
}

async fn serve_conn(stream: TcpStream, remote: SocketAddr, handler: Arc<dyn Handler>, cfg: Config) {
    let (mut read, write) = stream.into_split();
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
    });
    let inflight = Arc::new(Semaphore::new(cfg.inflight_per_conn_max));
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let frame = match read_frame(&mut read, &mut buf, limit).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%remote, error = %e, "bad frame from peer, disconnecting");
                break;
            }
        };
        if frame.kind != KIND_REQUEST {
            tracing::warn!(%remote, kind = frame.kind, "unexpected frame kind from peer, disconnecting");
            break;
        }
        let Ok(permit) = inflight.clone().acquire_owned().await else { break };
        let tx = tx.clone();
        let fut = handler.handle(frame.payload);
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, request: Bytes) -> BoxFuture<Result<Bytes, String>> {
            Box::pin(async move {
                if request.as_ref() == b"fail" {
                    Err("asked to fail".into())
                } else {
                    Ok(request)
                }
            })
        }
    }

    async fn server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(l, Arc::new(Echo), Config::default()));
        addr
    }

    #[tokio::test]
    async fn pipelined_calls_match_their_answers() {
        let addr = server().await;
        let peer = Peer::new(addr, Some("127.0.0.1".parse().unwrap()), Config::default());
        let mut calls = Vec::new();
        for i in 0..500u32 {
            let p = peer.clone();
            calls.push(tokio::spawn(async move {
                let msg = Bytes::from(i.to_string());
                let got = p.call(msg.clone(), Duration::from_secs(10)).await.unwrap();
                assert_eq!(got, msg);
            }));
        }
        for c in calls {
            c.await.unwrap();
        }
        let err = peer.call(Bytes::from_static(b"fail"), Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(err, CallError::Remote { .. }), "{err}");
    }

    #[tokio::test]
    async fn unreachable_peer_is_not_sent() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let peer = Peer::new(addr, None, Config::default());
        let err = peer.call(Bytes::from_static(b"x"), Duration::from_secs(5)).await.unwrap_err();
        assert!(err.certainly_not_delivered(), "{err}");
    }

    #[tokio::test]
    async fn garbage_and_oversized_frames_disconnect_without_panic() {
        let addr = server().await;
        // Oversized declared length.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 0, "server must close the connection");
        // Too-short length.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0, 0, 0, 1, 7]).await.unwrap();
        assert_eq!(s.read(&mut b).await.unwrap(), 0);
        // Wrong kind.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 9]).await.unwrap();
        assert_eq!(s.read(&mut b).await.unwrap(), 0);
        // The server still works.
        let peer = Peer::new(addr, None, Config::default());
        assert_eq!(peer.call(Bytes::from_static(b"ok"), Duration::from_secs(5)).await.unwrap(), "ok");
    }

    #[tokio::test]
    async fn reconnects_after_the_connection_drops() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let cfg = Config {
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            ..Config::default()
        };
        let peer = Peer::new(addr, None, cfg);
        let p2 = peer.clone();
        let first = tokio::spawn(async move { p2.call(Bytes::from_static(b"a"), Duration::from_secs(5)).await });
        // Accept the first connection, read a little of the request, then drop it.
        let (mut s, _) = l.accept().await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        drop(s);
        let err = first.await.unwrap().unwrap_err();
        assert!(matches!(err, CallError::Lost { .. }), "a written request must be reported as maybe-delivered: {err}");
        tokio::spawn(serve(l, Arc::new(Echo), Config::default()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match peer.call(Bytes::from_static(b"b"), Duration::from_secs(1)).await {
                Ok(v) => {
                    assert_eq!(v, "b");
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "never reconnected: {e}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
}
