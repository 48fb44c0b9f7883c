//! HTTP/1.1 fast path for client connections.
//!
//! Plain HTTP/1.1 requests (no body, or a Content-Length body of at most
//! `retries.body_bytes_max`) are read with `httparse` straight from the
//! connection's buffer, proxied, and answered with one write. Anything else
//! (HTTP/1.0, chunked or large bodies, `Expect`, `Upgrade`, CONNECT, a head
//! that does not parse or is too large) hands the connection, with the bytes
//! already read, to hyper's server for the rest of its life ([`crate::http::serve_io`]),
//! which then answers exactly as it would have from the start (400, 431, ...).
//! So this module only ever deals with the simple, common case.
//!
//! Timeouts: `first_byte_ms` from accepting the connection (TLS handshake
//! included) to the first byte of its first request, `idle_ms` while waiting
//! for the first byte of each later request, `request_header_ms` from a
//! request's first byte until its head and body are in. Each one that closes
//! a connection is counted in the frontend's stats (`/metrics`).
//!
//! The client's stream is plain TCP or TLS: this module only reads and
//! writes bytes (and flushes after each response, which TLS needs).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::frontend::FrontendRt;
use crate::h1client::{content_length, content_length_digits};
use crate::http::{handle_parts, serve_io, BodyInput, ClientInfo, FrontendCell, RespBody};

/// Most header fields in a request head taken by the fast path.
pub const REQUEST_HEADERS_MAX: usize = 100;
/// Bytes reserved in the read buffer before each read.
pub const READ_CHUNK_BYTES: usize = 8 * 1024;
/// Largest write buffer a client connection keeps between responses (a
/// larger one, grown by a large response, is released).
pub const WRITE_BUFFER_KEEP_BYTES_MAX: usize = 64 * 1024;

/// A socket that first replays bytes already read from it.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Conn<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Scratch for [`parse`], kept between requests (no allocation per request).
    spans: Vec<Span>,
}

/// A header field's name and the position of its value in the request head.
type Span = (HeaderName, usize, usize);

/// Header fields the backend request gets on top of the client's
/// (`X-Forwarded-For`, `X-Forwarded-Proto`, `Via`, `Host`): room is made for
/// them up front so that adding them does not grow the map.
const ADDED_HEADERS_MAX: usize = 4;

/// A request head the fast path takes.
struct Simple {
    parts: http::request::Parts,
    body_len: usize,
    close: bool,
}

// Returned once per request and taken apart at once: boxing the large
// variant would only add an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parse {
    /// Complete and simple.
    Simple(Simple),
    /// Needs more bytes.
    Partial,
    /// Not for the fast path: hand the connection to hyper.
    HandOff,
    /// Broken framing (a bad Content-Length), or passed the checks but could
    /// not be represented: answer 400 and close.
    Bad,
}

fn token_in(v: &[u8], token: &str) -> bool {
    std::str::from_utf8(v).is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Parses the request head at the front of `buf`; consumes it only when
/// simple. `spans` is scratch space (cleared first).
fn parse(buf: &mut BytesMut, body_max: usize, spans: &mut Vec<Span>) -> Parse {
    spans.clear();
    let mut fields = [httparse::EMPTY_HEADER; REQUEST_HEADERS_MAX];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::HandOff,
    };
    if req.version != Some(1) {
        return Parse::HandOff;
    }
    let Some(method) = req.method.and_then(|m| Method::from_bytes(m.as_bytes()).ok()) else {
        return Parse::HandOff;
    };
    if method == Method::CONNECT {
        return Parse::HandOff;
    }
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize).checked_sub(base).filter(|o| o + s.len() <= len);
    let Some(path) = req.path.and_then(|p| offset(p.as_bytes()).map(|o| (o, o + p.len()))) else {
        return Parse::HandOff;
    };
    let fields = match scan_fields(req.headers, &offset, body_max, spans) {
        Ok(f) => f,
        Err(NotSimple::HandOff) => return Parse::HandOff,
        Err(NotSimple::Bad) => return Parse::Bad,
    };
    // From here on the head is consumed.
    let head = buf.split_to(len).freeze();
    let Ok(uri) = http::Uri::from_maybe_shared(head.slice(path.0..path.1)) else { return Parse::Bad };
    let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_HEADERS_MAX);
    for (name, start, end) in spans.drain(..) {
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(start..end)) else { return Parse::Bad };
        headers.append(name, value);
    }
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Parse::Simple(Simple { parts, body_len: fields.body_len, close: fields.close })
}

/// Runs the fast path's request-head parser on `input`, for the fuzz target in `fuzz/`: what it
/// decided (`simple`, `partial`, `handoff`, `bad`), the bytes it consumed, and a simple
/// request's body length.
#[doc(hidden)]
pub fn parse_head_for_fuzzing(input: &[u8], body_max: usize) -> (&'static str, usize, usize) {
    let mut buf = BytesMut::from(input);
    let (kind, body_len) = match parse(&mut buf, body_max, &mut Vec::new()) {
        Parse::Simple(s) => ("simple", s.body_len),
        Parse::Partial => ("partial", 0),
        Parse::HandOff => ("handoff", 0),
        Parse::Bad => ("bad", 0),
    };
    (kind, input.len() - buf.len(), body_len)
}

/// What the fast path takes from a simple request's header fields.
struct Fields {
    body_len: usize,
    close: bool,
}

/// Why header fields keep a request off the fast path.
enum NotSimple {
    /// Hyper takes the connection ([`Parse::HandOff`]).
    HandOff,
    /// Broken framing: 400 ([`Parse::Bad`]).
    Bad,
}

/// Both `Transfer-Encoding` and `Content-Length`: RFC 9112 §6.3 lets a
/// server reject such a request, and a proxy must (two parsers may disagree
/// on where the body ends: request smuggling). Checked before anything can
/// hand the request to hyper, which would frame it by Transfer-Encoding.
fn has_both_framings(fields: &[httparse::Header<'_>]) -> bool {
    let (mut te, mut cl) = (false, false);
    for h in fields {
        te |= h.name.eq_ignore_ascii_case("transfer-encoding");
        cl |= h.name.eq_ignore_ascii_case("content-length");
    }
    te && cl
}

/// Checks the header fields of a request the fast path may take, and puts
/// each one's name and value position in the head into `spans`.
/// `offset` places a slice of the head buffer (`None`: not inside it).
fn scan_fields(
    fields: &[httparse::Header<'_>],
    offset: &dyn Fn(&[u8]) -> Option<usize>,
    body_max: usize,
    spans: &mut Vec<Span>,
) -> Result<Fields, NotSimple> {
    if has_both_framings(fields) {
        return Err(NotSimple::Bad);
    }
    let mut body_len = 0usize;
    let mut seen_length = false;
    let mut close = false;
    for h in fields {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else { return Err(NotSimple::HandOff) };
        if name == header::TRANSFER_ENCODING || name == header::EXPECT || name == header::UPGRADE {
            return Err(NotSimple::HandOff);
        }
        if name == header::CONTENT_LENGTH {
            // Not 1*DIGIT (`+5`, `0x5`, ...), or values that disagree: 400. A
            // repeated field, a list or a large body: hyper decides.
            let n = match content_length([h.value]) {
                Ok(Some(n)) => n,
                Ok(None) | Err(_) => return Err(NotSimple::Bad),
            };
            let single = content_length_digits(h.value.trim_ascii()).is_some();
            match usize::try_from(n) {
                Ok(n) if single && !seen_length && n <= body_max => {
                    body_len = n;
                    seen_length = true;
                }
                _ => return Err(NotSimple::HandOff),
            }
        }
        if name == header::CONNECTION && token_in(h.value, "close") {
            close = true;
        }
        let span = if h.value.is_empty() {
            (0, 0)
        } else {
            match offset(h.value) {
                Some(o) => (o, o + h.value.len()),
                None => return Err(NotSimple::HandOff),
            }
        };
        spans.push((name, span.0, span.1));
    }
    assert!(body_len <= body_max, "a fast-path body is at most retries.body_bytes_max");
    Ok(Fields { body_len, close })
}

/// How a read for more request bytes ended.
enum Read {
    Data,
    /// End of stream or an error: the connection is over.
    Closed,
    /// Nothing arrived in time.
    TimedOut,
}

/// Reads more bytes before `deadline` (`None`: no limit).
async fn read_more<S: AsyncRead + Unpin>(c: &mut Conn<S>, deadline: Option<Instant>) -> Read {
    c.rbuf.reserve(READ_CHUNK_BYTES);
    let read = c.stream.read_buf(&mut c.rbuf);
    let r = match deadline {
        None => read.await,
        Some(d) => match tokio::time::timeout_at(d, read).await {
            Ok(r) => r,
            Err(_) => return Read::TimedOut,
        },
    };
    match r {
        Ok(n) if n > 0 => Read::Data,
        _ => Read::Closed,
    }
}

/// `now + limit`, or `None` when `limit` is zero (off).
fn deadline_in(limit: Duration) -> Option<Instant> {
    (!limit.is_zero()).then(|| Instant::now() + limit)
}

/// Which wait a read was for, to count the timeout that ended it.
#[derive(Clone, Copy)]
enum Wait {
    FirstByte,
    Idle,
    Header,
}

/// Serves one client connection (plain or TLS). `first_byte`: when the
/// first request's first byte must have arrived (`None`: no limit).
pub async fn serve<S>(
    cell: FrontendCell,
    first: Arc<FrontendRt>,
    stream: S,
    client: Arc<ClientInfo>,
    first_byte: Option<Instant>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = client.peer;
    let stats = first.stats.clone();
    let mut c = Conn {
        stream,
        rbuf: BytesMut::with_capacity(READ_CHUNK_BYTES),
        wbuf: Vec::with_capacity(1024),
        spans: Vec::new(),
    };
    let idle = Duration::from_millis(first.cfg.timeouts.idle_ms);
    // Within a request: the header timeout, or the idle one if that is off.
    let header_limit = match first.cfg.timeouts.request_header_ms {
        0 => idle,
        ms => Duration::from_millis(ms),
    };
    drop(first);
    let mut served: u64 = 0;
    // Bounded by the client: each turn serves a request or ends the connection.
    loop {
        // Set at a request's first byte: its head and body must be in by then.
        let mut header_deadline: Option<Instant> = None;
        let (simple, fe) = loop {
            if !c.rbuf.is_empty() {
                // The configuration in force when the request arrived (reloads).
                let fe = cell.read().clone();
                match parse(&mut c.rbuf, fe.cfg.retries.body_bytes_max, &mut c.spans) {
                    Parse::Simple(s) => break (s, fe),
                    Parse::Partial if c.rbuf.len() < fe.cfg.request_header_bytes_max => {}
                    Parse::Partial | Parse::HandOff => {
                        let stream = Prefixed { prefix: c.rbuf.freeze(), inner: c.stream };
                        return serve_io(cell, fe, stream, client).await;
                    }
                    Parse::Bad => {
                        // A client that does not read cannot hold the connection.
                        if send(&mut c.stream, idle, BAD_REQUEST).await.is_ok() {
                            let _ = within(idle, c.stream.shutdown()).await;
                        }
                        return;
                    }
                }
            }
            let (wait, deadline) = match (c.rbuf.is_empty(), served) {
                (true, 0) => (Wait::FirstByte, first_byte),
                (true, _) => (Wait::Idle, deadline_in(idle)),
                (false, _) => {
                    // Bytes of a pipelined request were already here.
                    if header_deadline.is_none() {
                        header_deadline = deadline_in(header_limit);
                    }
                    (Wait::Header, header_deadline)
                }
            };
            match read_more(&mut c, deadline).await {
                Read::Data => {
                    if header_deadline.is_none() {
                        header_deadline = deadline_in(header_limit);
                    }
                }
                Read::Closed => return,
                Read::TimedOut => {
                    count_timeout(&stats, wait);
                    tracing::debug!(client = %peer, "closing: {} timeout", wait.name());
                    return;
                }
            }
        };
        while c.rbuf.len() < simple.body_len {
            match read_more(&mut c, header_deadline).await {
                Read::Data => {}
                Read::Closed => return,
                Read::TimedOut => {
                    count_timeout(&stats, Wait::Header);
                    return;
                }
            }
        }
        served += 1;
        let body = c.rbuf.split_to(simple.body_len).freeze();
        let head_request = simple.parts.method == Method::HEAD;
        let close = simple.close;
        let resp = handle_parts(fe, simple.parts, BodyInput::Buffered(body), &client).await;
        if let Err(e) = write_response(&mut c, resp, head_request, close, idle).await {
            if e.kind() == io::ErrorKind::TimedOut {
                count_timeout(&stats, Wait::Idle);
            }
            tracing::debug!(client = %peer, "response not delivered: {e}");
            return;
        }
        if close {
            let _ = c.stream.shutdown().await;
            return;
        }
        // Do not keep a large response's buffer for an idle connection.
        if c.wbuf.capacity() > WRITE_BUFFER_KEEP_BYTES_MAX {
            c.wbuf = Vec::with_capacity(1024);
        }
    }
}

impl Wait {
    fn name(self) -> &'static str {
        match self {
            Wait::FirstByte => "first-byte",
            Wait::Idle => "idle",
            Wait::Header => "request header",
        }
    }
}

fn count_timeout(stats: &crate::backend::FrontendStats, wait: Wait) {
    match wait {
        Wait::FirstByte => stats.closed_first_byte_timeout.inc(),
        Wait::Idle => stats.closed_idle_timeout.inc(),
        Wait::Header => stats.closed_header_timeout.inc(),
    }
}

const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

fn put_head(out: &mut Vec<u8>, parts: &http::response::Parts, keep_framing: bool, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if !keep_framing && name == header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
}

/// `content-length: N` and the blank line that ends the head, without
/// formatting machinery (no allocation).
fn put_content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    // Bounded: a u64 has at most 20 decimal digits.
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n\r\n");
}

fn no_body(status: StatusCode) -> bool {
    status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
}

/// `fut` within `limit` (zero: no limit); a timeout is an error.
async fn within<T>(limit: Duration, fut: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    if limit.is_zero() {
        return fut.await;
    }
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no progress within the idle timeout")),
    }
}

/// Writes `data` and flushes it (TLS keeps the last record until then),
/// within `idle`.
async fn send<S: AsyncWrite + Unpin>(stream: &mut S, idle: Duration, data: &[u8]) -> io::Result<()> {
    within(idle, async {
        stream.write_all(data).await?;
        stream.flush().await
    })
    .await
}

/// Writes `resp`; every step (a write, or waiting for the next piece of a
/// streamed body) must make progress within `idle`.
async fn write_response<S: AsyncWrite + Unpin>(
    c: &mut Conn<S>,
    resp: http::Response<RespBody>,
    head_request: bool,
    close: bool,
    idle: Duration,
) -> io::Result<()> {
    let (parts, mut body) = resp.into_parts();
    c.wbuf.clear();
    if head_request || no_body(parts.status) {
        // The head as the backend sent it (HEAD keeps its Content-Length), no body.
        put_head(&mut c.wbuf, &parts, true, close);
        c.wbuf.extend_from_slice(b"\r\n");
        return send(&mut c.stream, idle, &c.wbuf).await;
    }
    if let RespBody::Full(b) = &mut body {
        let data = b.take().unwrap_or_default();
        put_head(&mut c.wbuf, &parts, false, close);
        put_content_length(&mut c.wbuf, data.len() as u64);
        c.wbuf.extend_from_slice(&data);
        return send(&mut c.stream, idle, &c.wbuf).await;
    }
    let exact = body.size_hint().exact();
    put_head(&mut c.wbuf, &parts, false, close);
    match exact {
        Some(n) => put_content_length(&mut c.wbuf, n),
        None => c.wbuf.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
    }
    send(&mut c.stream, idle, &c.wbuf).await?;
    let mut sent: u64 = 0;
    // Bounded by the body's length (or the backend closing), each step by `idle`.
    loop {
        let next = within(idle, async { Ok(body.frame().await) }).await?;
        let Some(frame) = next else { break };
        let Ok(data) = frame?.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if exact.is_some_and(|n| sent > n) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "backend body longer than announced"));
        }
        if exact.is_some() {
            send(&mut c.stream, idle, &data).await?;
        } else {
            c.wbuf.clear();
            c.wbuf.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            c.wbuf.extend_from_slice(&data);
            c.wbuf.extend_from_slice(b"\r\n");
            send(&mut c.stream, idle, &c.wbuf).await?;
        }
    }
    match exact {
        Some(n) if sent != n => {
            Err(io::Error::new(io::ErrorKind::UnexpectedEof, "backend body shorter than announced"))
        }
        Some(_) => Ok(()),
        None => send(&mut c.stream, idle, b"0\r\n\r\n").await,
    }
}
