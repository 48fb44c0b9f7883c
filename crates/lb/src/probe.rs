//! One small HTTP/1.1 exchange through hyper's client, for control traffic:
//! active health checks and `rampart lb reload --admin`. A fresh connection
//! each time, a connect timeout, a deadline for the whole exchange, a cap on
//! the response head ([`PROBE_HEAD_BYTES_MAX`]) and on the body read. Never
//! on the proxy's request path (that is `h1client`). Speaks TLS when given a
//! [`Connector`] (health checks of TLS backends). Uses only `tls`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use crate::tls::{self, ConnectError, Connector};

/// Largest response head a probe accepts (hyper's read buffer; its minimum is 8 KiB).
pub const PROBE_HEAD_BYTES_MAX: usize = 16 * 1024;

/// What a probe reads of the response body.
#[derive(Clone, Copy, Debug)]
pub enum BodyLimit {
    /// Only the status matters: the body is not read.
    Skip,
    /// Read it all, failing if it is longer than this many bytes.
    Max(usize),
}

/// Time and size bounds of one exchange.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub connect: Duration,
    /// For everything, connect included.
    pub total: Duration,
    pub body: BodyLimit,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("timed out connecting to {0}")]
    ConnectTimeout(SocketAddr),
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: SocketAddr, source: std::io::Error },
    #[error("no complete answer from {0} in time")]
    Timeout(SocketAddr),
    #[error("HTTP exchange with {addr} failed: {source}")]
    Http { addr: SocketAddr, source: hyper::Error },
    #[error("answer from {addr} unreadable or longer than {max} bytes: {why}")]
    Body { addr: SocketAddr, max: usize, why: String },
    #[error("cannot build the request: {0}")]
    Request(String),
}

/// Aborts the connection task when the exchange ends or is dropped (timeout).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `method path` with an empty body to `addr`; the status and (per
/// `limits.body`) the body. Must be called inside a tokio runtime.
pub async fn exchange(
    method: Method,
    addr: SocketAddr,
    path: &str,
    user_agent: &'static str,
    limits: Limits,
) -> Result<(StatusCode, Bytes), ProbeError> {
    exchange_via(method, addr, None, path, user_agent, limits).await
}

/// As [`exchange`], over TLS when `tls` is given (the backend's certificate
/// checked as for proxied requests).
pub async fn exchange_via(
    method: Method,
    addr: SocketAddr,
    tls: Option<&Connector>,
    path: &str,
    user_agent: &'static str,
    limits: Limits,
) -> Result<(StatusCode, Bytes), ProbeError> {
    let work = async {
        let stream = match tls::connect(addr, tls, limits.connect).await {
            Ok(s) => s,
            Err(ConnectError::Tcp(source)) => return Err(ProbeError::Connect { addr, source }),
            Err(ConnectError::Timeout(_)) => return Err(ProbeError::ConnectTimeout(addr)),
            Err(ConnectError::Tls(source)) => return Err(ProbeError::Tls { addr, source }),
        };
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(PROBE_HEAD_BYTES_MAX)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|source| ProbeError::Http { addr, source })?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, user_agent)
            .header(header::CONNECTION, "close")
            .body(Empty::new())
            .map_err(|e| ProbeError::Request(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|source| ProbeError::Http { addr, source })?;
        let (parts, body) = resp.into_parts();
        let body = match limits.body {
            BodyLimit::Skip => Bytes::new(),
            BodyLimit::Max(max) => Limited::new(body, max)
                .collect()
                .await
                .map_err(|e| ProbeError::Body { addr, max, why: e.to_string() })?
                .to_bytes(),
        };
        Ok((parts.status, body))
    };
    tokio::time::timeout(limits.total, work).await.unwrap_or(Err(ProbeError::Timeout(addr)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one connection with `reply` after reading the head.
    async fn one_shot(reply: &'static [u8]) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((mut s, _)) = l.accept().await else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = s.write_all(reply).await;
            // Hold the connection open until the client goes away.
            let _ = s.read(&mut chunk).await;
        });
        addr
    }

    fn limits(body: BodyLimit) -> Limits {
        Limits { connect: Duration::from_secs(5), total: Duration::from_secs(10), body }
    }

    #[tokio::test]
    async fn status_body_and_limits() {
        let a = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
        let (status, body) = exchange(Method::GET, a, "/", "t", limits(BodyLimit::Max(5))).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));

        let a = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello!").await;
        let e = exchange(Method::GET, a, "/", "t", limits(BodyLimit::Max(5))).await.unwrap_err();
        assert!(matches!(e, ProbeError::Body { max: 5, .. }), "{e}");

        // Only the status is wanted: a large body is never read.
        let a = one_shot(b"HTTP/1.1 503 No\r\nContent-Length: 100000000\r\n\r\n").await;
        let (status, _) = exchange(Method::GET, a, "/", "t", limits(BodyLimit::Skip)).await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

        let a = one_shot(b"not http\r\n\r\n").await;
        let e = exchange(Method::GET, a, "/", "t", limits(BodyLimit::Skip)).await.unwrap_err();
        assert!(matches!(e, ProbeError::Http { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        // Accepted by the kernel backlog, never answered.
        let lim = Limits { connect: Duration::from_secs(5), total: Duration::from_millis(100), body: BodyLimit::Skip };
        let e = exchange(Method::GET, a, "/", "t", lim).await.unwrap_err();
        assert!(matches!(e, ProbeError::Timeout(_)), "{e}");
        drop(l);
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let mut reply = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        reply.extend(std::iter::repeat_n(b'a', 2 * PROBE_HEAD_BYTES_MAX));
        reply.extend_from_slice(b"\r\n\r\n");
        let a = one_shot(Box::leak(reply.into_boxed_slice())).await;
        assert!(exchange(Method::GET, a, "/", "t", limits(BodyLimit::Skip)).await.is_err());
    }
}
