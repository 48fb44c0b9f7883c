//! A small HTTP/1.1 client for the proxy's hot path: one request at a time
//! on a kept-alive TCP connection, the request head written from the already
//! prepared header map in one write, the response head parsed with `httparse`
//! straight out of the read buffer, and the response body read from the same
//! buffer by [`H1Body`]. Compared with a general client there is no
//! connection task, no channel and no body channel per response.
//!
//! Used for requests whose body is buffered (no body, or at most
//! `retries.body_bytes_max`); larger uploads go through hyper's client.
//!
//! Why it exists beside hyper (which the crate also uses: the client side,
//! streamed uploads, health checks and reloads through [`probe`](crate::probe)):
//! it is the measured fast path. With hyper's client to backends the proxy
//! spent 8 to 10 µs of user CPU per request; this client brought it to 6.5 to
//! 8.3 µs, and with the client-side fast path the balancer went from 0.56x to
//! 1.22x of HAProxy's throughput (median 0.89x) to about par (docs/lb.md,
//! "Performance notes", for the setup and the numbers). Anything that is not
//! on the per-request path uses hyper. It must stay small: one request at a
//! time, HTTP/1.1 only, and every framing rule of RFC 9112 §6 checked here
//! (a malformed or ambiguous response is refused, never guessed at).
//!
//! Limits: response head [`RESPONSE_HEAD_BYTES_MAX`] bytes and
//! [`RESPONSE_HEADERS_MAX`] fields, chunk-size lines [`CHUNK_LINE_BYTES_MAX`],
//! trailers [`TRAILER_BYTES_MAX`] (read and dropped).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use hyper::body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;

use crate::tls::BackendStream;

pub const RESPONSE_HEAD_BYTES_MAX: usize = 64 * 1024;
pub const RESPONSE_HEADERS_MAX: usize = 128;
pub const CHUNK_LINE_BYTES_MAX: usize = 4096;
pub const TRAILER_BYTES_MAX: usize = 16 * 1024;
/// Write-buffer capacity a connection keeps between requests.
pub const WRITE_BUFFER_KEEP_BYTES: usize = 16 * 1024;
/// Bytes reserved in the read buffer before each read.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Why a round trip failed.
#[derive(Debug)]
pub enum SendError {
    /// No byte of the request reached the socket: safe to retry any method.
    Unsent(io::Error),
    /// The request went out, then the connection failed before any response byte.
    NoResponse(io::Error),
    /// The backend sent something that is not a valid HTTP/1.1 response.
    BadResponse(String),
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes; the connection is not reused.
    Close,
}

pub struct H1Conn {
    stream: BackendStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Scratch for [`parse_head`], kept between requests.
    spans: Vec<Span>,
}

/// A header field's name and the position of its value in the response head.
type Span = (HeaderName, usize, usize);

impl H1Conn {
    pub fn new(stream: BackendStream) -> Self {
        H1Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            wbuf: Vec::with_capacity(1024),
            spans: Vec::new(),
        }
    }

    /// For a pooled connection: false if the backend closed it (or sent bytes
    /// nobody asked for). Costs no system call while the socket has no news.
    pub fn still_open(&mut self) -> bool {
        self.rbuf.is_empty() && self.stream.idle_and_open()
    }

    /// Writes the request and reads the response head.
    pub async fn round_trip(
        &mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(http::response::Parts, Framing, bool), SendError> {
        self.wbuf.clear();
        encode_request(&mut self.wbuf, method, target, headers, body);
        let mut written = 0;
        while written < self.wbuf.len() {
            match self.stream.write(&self.wbuf[written..]).await {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "backend socket closed");
                    return Err(if written == 0 { SendError::Unsent(e) } else { SendError::NoResponse(e) });
                }
                Ok(n) => written += n,
                Err(e) => return Err(if written == 0 { SendError::Unsent(e) } else { SendError::NoResponse(e) }),
            }
        }
        // TLS may hold the last record until flushed (a no-op for plain TCP).
        self.stream.flush().await.map_err(SendError::NoResponse)?;
        // Do not keep a large body's buffer alive in an idle pooled connection.
        if self.wbuf.capacity() > WRITE_BUFFER_KEEP_BYTES {
            self.wbuf = Vec::with_capacity(1024);
        }
        self.read_head(*method == Method::HEAD).await
    }

    async fn read_head(&mut self, head_request: bool) -> Result<(http::response::Parts, Framing, bool), SendError> {
        let mut got_any = !self.rbuf.is_empty();
        loop {
            if !self.rbuf.is_empty() {
                match parse_head(&mut self.rbuf, head_request, &mut self.spans)? {
                    Some(Parsed::Interim) => continue,
                    Some(Parsed::Final(parts, framing, keep_alive)) => return Ok((parts, framing, keep_alive)),
                    None => {
                        if self.rbuf.len() >= RESPONSE_HEAD_BYTES_MAX {
                            return Err(SendError::BadResponse("response head too large".into()));
                        }
                    }
                }
            }
            self.rbuf.reserve(READ_CHUNK_BYTES);
            match tokio::io::AsyncReadExt::read_buf(&mut self.stream, &mut self.rbuf).await {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "backend closed the connection");
                    return Err(if got_any {
                        SendError::BadResponse("connection closed inside the response head".into())
                    } else {
                        SendError::NoResponse(e)
                    });
                }
                Ok(_) => got_any = true,
                Err(e) => {
                    return Err(if got_any {
                        SendError::BadResponse(format!("connection failed inside the response head: {e}"))
                    } else {
                        SendError::NoResponse(e)
                    })
                }
            }
        }
    }
}

/// Request head (and buffered body) as bytes.
pub fn encode_request(out: &mut Vec<u8>, method: &Method, target: &str, headers: &HeaderMap, body: &Bytes) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() && !headers.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

enum Parsed {
    Interim,
    Final(http::response::Parts, Framing, bool),
}

fn bad(msg: impl Into<String>) -> SendError {
    SendError::BadResponse(msg.into())
}

/// Parses one response head at the front of `buf`, consuming it; `None` if
/// incomplete. `spans` is scratch space (cleared first).
fn parse_head(buf: &mut BytesMut, head_request: bool, spans: &mut Vec<Span>) -> Result<Option<Parsed>, SendError> {
    spans.clear();
    let mut fields = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(format!("malformed response head: {e}"))),
    };
    let code = resp.code.unwrap_or(0);
    let version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    if code == 101 {
        return Err(bad("protocol upgrades are not supported"));
    }
    if (100..200).contains(&code) {
        buf.advance(len);
        return Ok(Some(Parsed::Interim));
    }
    let status = StatusCode::from_u16(code).map_err(|_| bad(format!("invalid status {code}")))?;
    // Header values become slices of the frozen head: no copies.
    let base = buf.as_ptr() as usize;
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("invalid header name"))?;
        if h.value.is_empty() {
            spans.push((name, 0, 0));
            continue;
        }
        // Values are slices of `buf`; anything else would be a parser bug.
        let start = (h.value.as_ptr() as usize).checked_sub(base).filter(|s| s + h.value.len() <= len);
        let start = start.ok_or_else(|| bad("header value outside the response head"))?;
        spans.push((name, start, start + h.value.len()));
    }
    let head = buf.split_to(len).freeze();
    // One more for the `Via` the proxy adds.
    let mut headers = HeaderMap::with_capacity(spans.len() + 1);
    for (name, start, end) in spans.drain(..) {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end)).map_err(|_| bad("invalid header value"))?;
        headers.append(name, value);
    }
    let framing = framing_of(&headers, code, head_request)?;
    // Both Transfer-Encoding and Content-Length: Transfer-Encoding frames
    // this response, but the backend and we may disagree about where it
    // ends (RFC 9112 §6.1: a smuggling sign), so the connection is not reused.
    let ambiguous = headers.contains_key(header::TRANSFER_ENCODING) && headers.contains_key(header::CONTENT_LENGTH);
    let keep_alive = framing != Framing::Close && !ambiguous && wants_keep_alive(&headers, version);
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Ok(Some(Parsed::Final(parts, framing, keep_alive)))
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn wants_keep_alive(headers: &HeaderMap, version: Version) -> bool {
    if has_token(headers, header::CONNECTION, "close") {
        return false;
    }
    version == Version::HTTP_11 || has_token(headers, header::CONNECTION, "keep-alive")
}

/// Why a Content-Length field was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContentLengthError {
    #[error("invalid content-length (not 1*DIGIT, or too large)")]
    Invalid,
    #[error("conflicting content-length values")]
    Conflicting,
}

/// A Content-Length value: `1*DIGIT` and nothing else (no sign, no spaces
/// inside, no hex), at most `u64::MAX`. `str::parse` would accept `+5`.
pub fn content_length_digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// The length given by every Content-Length field of a message (RFC 9110
/// §8.6): each field a comma-separated list of `1*DIGIT` values (optional
/// whitespace around each); all values must agree. `None` when there is none.
pub fn content_length<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<u64>, ContentLengthError> {
    let mut length: Option<u64> = None;
    for v in values {
        for part in v.split(|&b| b == b',') {
            let n = content_length_digits(part.trim_ascii()).ok_or(ContentLengthError::Invalid)?;
            if length.is_some_and(|l| l != n) {
                return Err(ContentLengthError::Conflicting);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// RFC 9112 §6.3.
pub fn framing_of(headers: &HeaderMap, code: u16, head_request: bool) -> Result<Framing, SendError> {
    if head_request || code == 204 || code == 304 || (100..200).contains(&code) {
        return Ok(Framing::Empty);
    }
    if let Some(last) = headers.get_all(header::TRANSFER_ENCODING).iter().next_back() {
        let chunked_last = last
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked_last { Framing::Chunked } else { Framing::Close });
    }
    let length = content_length(headers.get_all(header::CONTENT_LENGTH).iter().map(|v| v.as_bytes()))
        .map_err(|e| bad(e.to_string()))?;
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers(usize),
    Close,
    Done,
}

/// Told how a response body read by [`H1Body`] ended. Through it the
/// connection goes back to whoever pools it, and the request is counted done,
/// without this module knowing about pools or frontends (it is the bottom of
/// the module graph).
pub trait BodyEnd {
    /// The body was read to its end; `conn` is the connection when it may be
    /// reused (keep-alive, nothing unread in its buffer).
    fn complete(self, conn: Option<H1Conn>);
    /// Reading the body failed; the connection is dropped.
    fn failed(self);
}

/// What [`H1Body::start`] found.
pub enum Started<E> {
    /// The whole body was already read; the connection is released.
    Complete(Bytes),
    /// The rest comes from the connection.
    Streaming(H1Body<E>),
}

/// A backend response body read from an [`H1Conn`]; at its end `end` learns
/// how it went and gets the connection back if it is reusable.
pub struct H1Body<E> {
    conn: Option<H1Conn>,
    state: State,
    keep_alive: bool,
    end: Option<E>,
}

fn io_err(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

impl<E: BodyEnd> H1Body<E> {
    /// The body that follows a head with `framing` on `conn`. When it is
    /// already complete in the read buffer the connection is released at once
    /// and the body is returned as bytes.
    pub fn start(mut conn: H1Conn, framing: Framing, keep_alive: bool, end: E) -> Started<E> {
        match framing {
            Framing::Empty => {
                release(conn, keep_alive, end);
                Started::Complete(Bytes::new())
            }
            Framing::Length(n) if conn.rbuf.len() as u64 >= n => {
                let data = conn.rbuf.split_to(n as usize).freeze();
                release(conn, keep_alive, end);
                Started::Complete(data)
            }
            _ => {
                let state = match framing {
                    Framing::Length(n) => State::Length(n),
                    Framing::Chunked => State::ChunkSize,
                    _ => State::Close,
                };
                Started::Streaming(H1Body { conn: Some(conn), state, keep_alive, end: Some(end) })
            }
        }
    }

    fn finish(&mut self, ok: bool) {
        self.state = State::Done;
        let conn = self.conn.take();
        if let Some(end) = self.end.take() {
            match conn {
                Some(c) if ok => release(c, self.keep_alive, end),
                None if ok => end.complete(None),
                _ => end.failed(),
            }
        }
    }
}

fn release<E: BodyEnd>(conn: H1Conn, keep_alive: bool, end: E) {
    let reusable = keep_alive && conn.rbuf.is_empty();
    end.complete(reusable.then_some(conn));
}

/// Reads more into `conn.rbuf`: Ready(Ok(0)) at end of stream.
fn poll_fill(conn: &mut H1Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    let stream = match &mut conn.stream {
        BackendStream::Plain(s) => s,
        BackendStream::Tls(t) => {
            conn.rbuf.reserve(READ_CHUNK_BYTES);
            return tokio_util::io::poll_read_buf(Pin::new(t.as_mut()), cx, &mut conn.rbuf);
        }
    };
    // Bounded: each turn either reads, fails, or returns Pending.
    loop {
        match stream.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        conn.rbuf.reserve(READ_CHUNK_BYTES);
        match stream.try_read_buf(&mut conn.rbuf) {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// What one look at the bytes already buffered gave.
enum Step {
    /// A frame, the end of the body, or an error, to hand out.
    Ready(Option<io::Result<Frame<Bytes>>>),
    /// The state moved on; look again.
    Again,
    /// More bytes from the backend are needed.
    Fill,
}

/// A chunk-size line's size (RFC 9112 §7.1): `1*HEXDIG`, then optional
/// extensions after `;` (ignored). No sign, no `0x`: `u64::from_str_radix`
/// alone would take `+5`. More than 16 digits overflow and are refused.
fn chunk_size_of(line: &[u8]) -> Option<u64> {
    let digits = line.split(|&b| b == b';').next().unwrap_or(&[]).trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(v))
    })
}

impl<E: BodyEnd> H1Body<E> {
    /// Advances through the bytes already in the read buffer; never reads
    /// the socket.
    fn step(&mut self) -> Step {
        let Some(conn) = self.conn.as_mut() else { return Step::Ready(None) };
        match self.state {
            State::Done => {
                self.finish(true);
                Step::Ready(None)
            }
            State::Length(n) | State::ChunkData(n) if !conn.rbuf.is_empty() => {
                let k = (conn.rbuf.len() as u64).min(n);
                let data = conn.rbuf.split_to(k as usize).freeze();
                let left = n - k;
                match self.state {
                    State::Length(_) if left == 0 => self.finish(true),
                    State::Length(_) => self.state = State::Length(left),
                    _ if left == 0 => self.state = State::ChunkDataEnd,
                    _ => self.state = State::ChunkData(left),
                }
                Step::Ready(Some(Ok(Frame::data(data))))
            }
            State::Close if !conn.rbuf.is_empty() => Step::Ready(Some(Ok(Frame::data(conn.rbuf.split().freeze())))),
            State::ChunkSize => self.chunk_size_line(),
            State::ChunkDataEnd if conn.rbuf.len() >= 2 => {
                if &conn.rbuf[..2] != b"\r\n" {
                    return self.broken("missing CRLF after chunk");
                }
                conn.rbuf.advance(2);
                self.state = State::ChunkSize;
                Step::Again
            }
            State::Trailers(seen) => self.trailer_line(seen),
            _ => Step::Fill,
        }
    }

    fn chunk_size_line(&mut self) -> Step {
        let Some(conn) = self.conn.as_mut() else { return Step::Ready(None) };
        let Some(end) = find_crlf(&conn.rbuf) else {
            if conn.rbuf.len() > CHUNK_LINE_BYTES_MAX {
                return self.broken("chunk size line too long");
            }
            return Step::Fill;
        };
        let Some(size) = chunk_size_of(&conn.rbuf[..end]) else {
            return self.broken("malformed chunk size");
        };
        conn.rbuf.advance(end + 2);
        self.state = if size == 0 { State::Trailers(0) } else { State::ChunkData(size) };
        Step::Again
    }

    /// Trailer fields are read (within [`TRAILER_BYTES_MAX`]) and dropped.
    fn trailer_line(&mut self, seen_bytes: usize) -> Step {
        let Some(conn) = self.conn.as_mut() else { return Step::Ready(None) };
        let Some(end) = find_crlf(&conn.rbuf) else {
            if seen_bytes + conn.rbuf.len() > TRAILER_BYTES_MAX {
                return self.broken("trailers too large");
            }
            return Step::Fill;
        };
        conn.rbuf.advance(end + 2);
        if end == 0 {
            self.finish(true);
            return Step::Ready(None);
        }
        self.state = State::Trailers(seen_bytes + end + 2);
        Step::Again
    }

    /// The backend closed its side: the end of a close-delimited body, else
    /// a truncated one.
    fn at_eof(&mut self) -> Option<io::Result<Frame<Bytes>>> {
        if self.state == State::Close {
            self.keep_alive = false;
            self.finish(true);
            return None;
        }
        self.finish(false);
        Some(Err(io_err("backend closed the connection inside the body")))
    }

    fn broken(&mut self, why: &str) -> Step {
        self.finish(false);
        Step::Ready(Some(Err(io_err(why))))
    }
}

impl<E: BodyEnd + Unpin> hyper::body::Body for H1Body<E> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        // Bounded: every turn consumes buffered bytes, reads, or returns.
        loop {
            match this.step() {
                Step::Ready(frame) => return Poll::Ready(frame),
                Step::Again => continue,
                Step::Fill => {}
            }
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match poll_fill(conn, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(this.at_eof()),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.finish(false);
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Parsed>, SendError> {
        parse_head(&mut BytesMut::from(raw), false, &mut Vec::new())
    }

    #[test]
    fn framing_rules() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
            }
            m
        };
        assert_eq!(framing_of(&h(&[("content-length", "17")]), 200, false).unwrap(), Framing::Length(17));
        assert_eq!(framing_of(&h(&[("content-length", "17")]), 200, true).unwrap(), Framing::Empty);
        assert_eq!(framing_of(&h(&[("content-length", "17")]), 304, false).unwrap(), Framing::Empty);
        assert_eq!(
            framing_of(&h(&[("transfer-encoding", "gzip, chunked"), ("content-length", "3")]), 200, false).unwrap(),
            Framing::Chunked
        );
        assert_eq!(framing_of(&h(&[("transfer-encoding", "gzip")]), 200, false).unwrap(), Framing::Close);
        assert_eq!(framing_of(&h(&[]), 200, false).unwrap(), Framing::Close);
        assert_eq!(framing_of(&h(&[("content-length", "5, 5")]), 200, false).unwrap(), Framing::Length(5));
        assert!(framing_of(&h(&[("content-length", "5"), ("content-length", "6")]), 200, false).is_err());
        assert!(framing_of(&h(&[("content-length", "-1")]), 200, false).is_err());
        for bad in ["+5", "5 5", "0x5", "", " ", "5,", "5;", "99999999999999999999999", "5a"] {
            assert!(framing_of(&h(&[("content-length", bad)]), 200, false).is_err(), "{bad:?} accepted");
        }
        assert!(framing_of(&h(&[("content-length", "5, 6")]), 200, false).is_err());
        assert_eq!(framing_of(&h(&[("content-length", " 007 ")]), 200, false).unwrap(), Framing::Length(7));
        assert_eq!(content_length_digits(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(content_length_digits(b"18446744073709551616"), None);
    }

    #[test]
    fn heads() {
        match parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi").unwrap() {
            Some(Parsed::Final(p, f, ka)) => {
                assert_eq!(p.status, 200);
                assert_eq!(p.headers["x-a"], "b");
                assert_eq!((f, ka), (Framing::Length(2), true));
            }
            _ => panic!("not parsed"),
        }
        match parse(b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-B:  \r\nContent-Length: 0\r\n\r\n").unwrap() {
            Some(Parsed::Final(p, _, _)) => {
                assert_eq!(p.headers["x-empty"], "");
                assert_eq!(p.headers["x-b"], "");
            }
            _ => panic!("not parsed"),
        }
        match parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap() {
            Some(Parsed::Final(_, f, ka)) => assert_eq!((f, ka), (Framing::Empty, false)),
            _ => panic!("not parsed"),
        }
        assert!(matches!(parse(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap(), Some(Parsed::Interim)));
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        assert!(matches!(parse(b"garbage\r\n\r\n"), Err(SendError::BadResponse(_))));
        assert!(matches!(parse(b"HTTP/1.1 101 Switching\r\n\r\n"), Err(SendError::BadResponse(_))));
        assert!(matches!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"), Err(SendError::BadResponse(_))));
        match parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n").unwrap() {
            Some(Parsed::Final(_, f, ka)) => assert_eq!((f, ka), (Framing::Chunked, false)),
            _ => panic!("not parsed"),
        }
    }

    #[test]
    fn chunk_sizes_are_hex_digits_only() {
        assert_eq!(chunk_size_of(b"5"), Some(5));
        assert_eq!(chunk_size_of(b"1aF;name=value"), Some(0x1af));
        assert_eq!(chunk_size_of(b"a ; ext"), Some(10));
        assert_eq!(chunk_size_of(b"ffffffffffffffff"), Some(u64::MAX));
        for bad in [&b""[..], b"+5", b"-5", b"0x5", b"5 5", b"g", b";x", b"10000000000000000"] {
            assert_eq!(chunk_size_of(bad), None, "{:?} accepted", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn request_encoding() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("x"));
        let mut out = Vec::new();
        encode_request(&mut out, &Method::POST, "/a?b", &h, &Bytes::from_static(b"hey"));
        assert_eq!(out, b"POST /a?b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nhey");
    }
}
