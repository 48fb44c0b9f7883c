//! rampart-transport: node-to-node request/response messaging over TCP, optionally with
//! mutual TLS.
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
//! with a log line; it never panics the node. Frames are read in chunks
//! ([`FRAME_READ_CHUNK_BYTES`]): a header's claimed length is never reserved
//! before the bytes arrive, and a begun frame must be complete within
//! [`Config::frame_read_timeout`].
//!
//! With [`Config::tls`] set, both ends authenticate with certificates of the
//! cluster CA (`rampart-tls`): the server finishes the TLS handshake within
//! [`Config::handshake_timeout`] before it reads a single frame, and hands the
//! node id the client's certificate names to the [`Handler`] as a
//! [`PeerIdentity`]; the client uses a connection only once the server's
//! certificate names the node it meant to call. The listener keeps at most
//! [`Config::inbound_connections_max`] connections open. [`Stats`] counts
//! connections, refusals, handshake failures and timeouts.
//!
//! Callers learn whether a failed request may have reached the peer:
//! [`CallError::NotSent`] means it certainly did not (safe to report "not
//! applied"); [`CallError::Lost`] and [`CallError::Timeout`] mean it may have.

mod client;
pub mod codec;
mod frame;
mod server;
mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use client::Peer;
pub use frame::FRAME_READ_CHUNK_BYTES;
pub use rampart_tls::PeerTls;
pub use server::{serve, Handler, PeerIdentity};
pub use stats::{Stats, REFUSAL_LOG_INTERVAL_MS};

/// Default of [`Config::handshake_timeout`].
pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default of [`Config::frame_read_timeout`]: a 64 MiB frame at about 2 MiB/s.
pub const FRAME_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default of [`Config::idle_timeout`]. Members heartbeat each other many times a second, so
/// only a stuck or hostile connection stays silent this long.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);
/// Default of [`Config::inbound_connections_max`]: a cluster of n nodes needs about n - 1
/// (twice that while connections are replaced).
pub const INBOUND_CONNECTIONS_MAX_DEFAULT: usize = 256;

/// Limits, timings and security of the transport. Defaults suit a LAN.
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
    /// How long a TLS handshake may take, either way; without TLS, how long a new inbound
    /// connection may wait before its first frame begins (default
    /// [`HANDSHAKE_TIMEOUT_DEFAULT`]).
    pub handshake_timeout: Duration,
    /// How long a frame may take from its first byte to its last (default
    /// [`FRAME_READ_TIMEOUT_DEFAULT`]); a stalled half frame closes the connection.
    pub frame_read_timeout: Duration,
    /// How long an inbound connection may go without a frame before it is closed (default
    /// [`IDLE_TIMEOUT_DEFAULT`]).
    pub idle_timeout: Duration,
    /// Most inbound connections open at once, handshaking ones included (default
    /// [`INBOUND_CONNECTIONS_MAX_DEFAULT`]); one more is closed at once, with a log line.
    pub inbound_connections_max: usize,
    /// Mutual TLS with the cluster CA; `None` for plaintext (then nothing about a peer is
    /// proven, and [`PeerIdentity::node`] is `None`).
    pub tls: Option<Arc<PeerTls>>,
    /// Counters of every listener and client made from this config (clones share them).
    pub stats: Arc<Stats>,
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
            handshake_timeout: HANDSHAKE_TIMEOUT_DEFAULT,
            frame_read_timeout: FRAME_READ_TIMEOUT_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            inbound_connections_max: INBOUND_CONNECTIONS_MAX_DEFAULT,
            tls: None,
            stats: Arc::new(Stats::default()),
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

#[cfg(test)]
mod tests;
