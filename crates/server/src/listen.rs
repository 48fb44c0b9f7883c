//! What both client listeners share: the connection cap (a connection past it gets one error and
//! is closed, while the others go on), the refusal itself, and the HTTP accept loop with its
//! header and idle timeouts (the same as RESP's: a request must be complete within the header
//! timeout of its first byte; a connection may wait or stall for the idle timeout). The RESP accept loop is in [`crate::resp`]; its timeouts are part
//! of its connection loop.
//!
//! Nothing here may wait on a client without a deadline.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::either::Either;

use crate::app::App;
use crate::metrics::{Closed, ListenerStats};

/// How long a refused connection is given to take its error reply (and how long what it sent is
/// drained, so that closing does not reset the connection before the reply is read).
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes drained from a refused connection before it is closed.
pub const REFUSAL_DRAIN_BYTES_MAX: usize = 64 * 1024;
/// Most refused connections being answered at once per listener; past it a refused connection
/// is closed without a reply (a flood must not turn the refusals into the resource it takes).
pub const REFUSALS_IN_FLIGHT_MAX: usize = 256;
/// Pause after a failed `accept` (out of file descriptors, say) before the next.
pub const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// A client connection as the protocols see it: plain TCP (`Left`), or TLS over it (`Right`)
/// when the listener has a certificate ([`crate::ServerConfig::tls`]).
pub type ClientStream = Either<TcpStream, Box<rampart_tls::tokio_rustls::server::TlsStream<TcpStream>>>;

/// Makes `stream` a [`ClientStream`]: with `tls`, the handshake must complete within `timeout`
/// before any request byte is read (a client that stalls or speaks plaintext to a TLS listener
/// is closed, counted as [`Closed::TlsHandshake`]).
pub async fn client_stream(
    stream: TcpStream,
    tls: Option<&rampart_tls::tokio_rustls::TlsAcceptor>,
    timeout: Duration,
) -> Result<ClientStream, io::Error> {
    let Some(acceptor) = tls else { return Ok(Either::Left(stream)) };
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Ok(Either::Right(Box::new(s))),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake not complete within client_header_timeout_ms"))
        }
    }
}

/// The HTTP reply to a connection past `--http-connections-max`.
pub fn http_refusal(max: usize) -> Vec<u8> {
    let body = format!(
        "{{\"error\":\"max number of HTTP connections reached (http_connections_max {max})\",\"code\":\"TOO_MANY_CONNECTIONS\"}}"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A listener's connection cap and its refusals.
pub struct Gate {
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
}

impl Gate {
    pub fn new(connections_max: usize) -> Gate {
        Gate {
            slots: Arc::new(Semaphore::new(connections_max)),
            refusals: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT_MAX)),
        }
    }

    /// A slot for `stream`, or `None` after answering it `refusal` (in the background) and
    /// counting it in `stats`.
    pub fn admit(
        &self,
        stream: TcpStream,
        refusal: Arc<[u8]>,
        stats: impl FnOnce(),
    ) -> Option<(TcpStream, tokio::sync::OwnedSemaphorePermit)> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some((stream, permit)),
            Err(_) => {
                stats();
                if let Ok(busy) = self.refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream, &refusal).await;
                        drop(busy);
                    });
                }
                None
            }
        }
    }
}

/// Writes `reply`, ends the sending side and drains what the client sent, all within
/// [`REFUSAL_TIMEOUT`], then closes.
async fn refuse(mut stream: TcpStream, reply: &[u8]) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(reply).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < REFUSAL_DRAIN_BYTES_MAX {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// Serves HTTP/1.1 on `listener` with hyper: at most `http_connections_max` connections, each
/// watched by [`TimedIo`]: a request head must be complete within `client_header_timeout` of its
/// first byte, and a connection may make no progress for `client_idle_timeout` (waiting for a
/// request, a new connection included, reading a body, or writing a reply the client does not
/// read). A kept-alive connection may so wait as long as a RESP one, longer than the clients'
/// pools keep idle connections, so a client never sends on a connection the server is closing.
pub async fn serve_http(listener: TcpListener, router: Router, app: Arc<App>) {
    let gate = Gate::new(app.cfg.http_connections_max);
    let refusal: Arc<[u8]> = http_refusal(app.cfg.http_connections_max).into();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let Some((stream, permit)) = gate.admit(stream, refusal.clone(), || app.metrics.http.refused.inc()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let handlers = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let stats: &ListenerStats = &app.metrics.http;
            let _open = stats.open_guard();
            let stream = match client_stream(stream, app.tls.as_ref(), app.cfg.client_header_timeout).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTPS handshake failed");
                    stats.closed(Closed::TlsHandshake);
                    return;
                }
            };
            let io = TimedIo::new(stream, app.cfg.client_header_timeout, app.cfg.client_idle_timeout);
            let (phase, fired) = (io.phase.clone(), io.fired.clone());
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                // The peer address is what protected mode decides by (`ConnectInfo`, as axum's
                // own server would give it).
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                // The head is complete: the handler runs, and the next bytes start a new head.
                phase.store(BUSY, Ordering::Relaxed);
                let phase = phase.clone();
                let call = hyper::service::Service::call(&handlers, req);
                async move {
                    let response = call.await;
                    phase.store(WAITING, Ordering::Relaxed);
                    response
                }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
            let ended = conn.await;
            // A body that stops arriving fails inside the handler, which answers it, so the
            // connection can end without an error even when a timeout ended it.
            match fired.load(Ordering::Relaxed) {
                FIRED_IDLE => stats.closed(Closed::IdleTimeout),
                FIRED_HEADER => stats.closed(Closed::HeaderTimeout),
                _ => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
            }
            drop(permit);
        });
    }
}

/// [`TimedIo::phase`]: no request under way (the next byte starts a head).
const WAITING: u8 = 0;
/// A head has begun and is not complete yet.
const HEAD: u8 = 1;
/// The head is complete; the server is at work on the request.
const BUSY: u8 = 2;
/// [`TimedIo::fired`]: which timeout ended the connection.
const FIRED_IDLE: u8 = 1;
const FIRED_HEADER: u8 = 2;

/// A socket that fails with `TimedOut` when a request head is not complete within `header` of
/// its first byte, or when no byte has moved either way for `idle` while the server waits on
/// it. The service tells it when a head is complete (busy) and when the reply is handed
/// back (waiting).
pub struct TimedIo<S> {
    inner: S,
    header: Duration,
    idle: Duration,
    idle_deadline: Pin<Box<Sleep>>,
    head_deadline: Pin<Box<Sleep>>,
    pub phase: Arc<AtomicU8>,
    /// Which timeout fired, if one did (read by the accept loop for `/metrics`).
    pub fired: Arc<AtomicU8>,
}

impl<S> TimedIo<S> {
    pub fn new(inner: S, header: Duration, idle: Duration) -> TimedIo<S> {
        TimedIo {
            inner,
            header,
            idle,
            idle_deadline: Box::pin(tokio::time::sleep(idle)),
            head_deadline: Box::pin(tokio::time::sleep(header)),
            phase: Arc::new(AtomicU8::new(WAITING)),
            fired: Arc::new(AtomicU8::new(0)),
        }
    }

    fn progressed(&mut self) {
        let next = Instant::now() + self.idle;
        self.idle_deadline.as_mut().reset(next);
    }

    /// After bytes arrived: the first ones of a head start its clock.
    fn received(&mut self) {
        self.progressed();
        if self.phase.compare_exchange(WAITING, HEAD, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let deadline = Instant::now() + self.header;
            self.head_deadline.as_mut().reset(deadline);
        }
    }

    /// After the inner I/O said Pending: an error if a timeout has run out.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.phase.load(Ordering::Relaxed) == HEAD && self.head_deadline.as_mut().poll(cx).is_ready() {
            self.fired.store(FIRED_HEADER, Ordering::Relaxed);
            return Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not complete within client_header_timeout_ms",
            ));
        }
        match self.idle_deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.fired.store(FIRED_IDLE, Ordering::Relaxed);
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "no progress within client_idle_timeout_ms"))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.received();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
