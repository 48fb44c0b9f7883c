//! HTTP mode: HTTP/1.1 with keep-alive to clients (hyper server), pooled
//! keep-alive connections to backends (hyper client connections kept in each
//! backend's [`Pool`](crate::pool::Pool)), retries, and RFC 9110 header handling.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::RwLock;

use crate::algo::hash64;
use crate::backend::{now_ms, BackendState};
use crate::config::HashKey;
use crate::frontend::{ActiveGuard, FrontendRt};
use crate::h1client::{Framing, H1Body, H1Conn, SendError, Started};
use crate::io::{idle_expired, Activity, CountingIo};
use crate::retry::{self, Attempts, Delivery};
use crate::tls::{self, BackendStream, ConnectError};

/// Body type sent to backends through hyper's client (streamed uploads).
pub type ReqBody = Either<http_body_util::Full<Bytes>, Incoming>;

/// The frontend a listener currently serves; swapped on reload.
pub type FrontendCell = Arc<RwLock<Arc<FrontendRt>>>;

/// Concurrent streams per HTTP/2 client connection.
pub const H2_STREAMS_MAX: u32 = 256;
/// Least time an idle connection is given to finish a graceful shutdown.
pub const GRACEFUL_SHUTDOWN_MIN_MS: u64 = 1_000;

/// What this proxy adds to `Via`.
const VIA_PSEUDONYM: &str = "rampart";

/// Serves a client connection with hyper; `stream` may replay bytes already
/// read (see `fast.rs`).
pub async fn serve_io<S>(cell: FrontendCell, fe: Arc<FrontendRt>, stream: S, client: Arc<ClientInfo>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = client.peer;
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(CountingIo::new(stream, activity.clone()));
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let fe = cell.read().clone();
        let act = act.clone();
        let client = client.clone();
        async move {
            act.in_flight.fetch_add(1, Relaxed);
            let resp = handle(fe, req, &client).await;
            act.in_flight.fetch_sub(1, Relaxed);
            Ok::<_, Infallible>(resp)
        }
    });
    let header_timeout = match fe.cfg.timeouts.request_header_ms {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let idle = Duration::from_millis(fe.cfg.timeouts.idle_ms);
    let stats = fe.stats.clone();
    // Serves `conn` until it ends, or until the connection idles out; then
    // shuts it down gracefully, within a bounded time.
    macro_rules! drive {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        if ConnError::is_header_timeout(&e) {
                            stats.closed_header_timeout.inc();
                        }
                        tracing::debug!(client = %peer, "client connection ended: {e}");
                    }
                    return;
                }
                () = idle_expired(&activity, idle) => {
                    stats.closed_idle_timeout.inc();
                    tracing::debug!(client = %peer, "closing idle client connection");
                    conn.as_mut().graceful_shutdown();
                }
            }
            let _ = tokio::time::timeout(idle.max(Duration::from_millis(GRACEFUL_SHUTDOWN_MIN_MS)), conn).await;
        }};
    }
    if fe.cfg.http2 {
        // HTTP/1.1 and cleartext HTTP/2 (prior knowledge), told apart by the preface.
        let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .max_buf_size(fe.cfg.request_header_bytes_max)
            .header_read_timeout(header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_STREAMS_MAX)
            .max_header_list_size(fe.cfg.request_header_bytes_max as u32);
        drive!(builder.serve_connection(io, service));
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .keep_alive(true)
            .max_buf_size(fe.cfg.request_header_bytes_max)
            .header_read_timeout(header_timeout);
        drive!(builder.serve_connection(io, service));
    }
}

/// The error a hyper server connection ends with (HTTP/1 alone, or auto).
trait ConnError: std::fmt::Display {
    /// Whether it is hyper's header read timeout.
    fn is_header_timeout(&self) -> bool;
}

impl ConnError for hyper::Error {
    fn is_header_timeout(&self) -> bool {
        self.is_timeout()
    }
}

impl ConnError for Box<dyn std::error::Error + Send + Sync> {
    fn is_header_timeout(&self) -> bool {
        self.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
    }
}

/// Why a request got no backend answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    NoBackend,
    Connect,
    ConnectTimeout,
    Reset,
    BadResponse,
    Timeout,
    BadRequestBody,
    /// The TLS handshake with the backend failed (its certificate refused).
    BackendTls,
}

impl Failure {
    fn status(self) -> StatusCode {
        match self {
            Failure::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Connect | Failure::Reset | Failure::BadResponse | Failure::BackendTls => StatusCode::BAD_GATEWAY,
            Failure::ConnectTimeout | Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::BadRequestBody => StatusCode::BAD_REQUEST,
        }
    }
    fn code(self) -> &'static str {
        match self {
            Failure::NoBackend => "no_backend",
            Failure::Connect => "backend_connect_failed",
            Failure::ConnectTimeout => "backend_connect_timeout",
            Failure::Reset => "backend_reset",
            Failure::BadResponse => "backend_bad_response",
            Failure::Timeout => "request_timeout",
            Failure::BadRequestBody => "bad_request_body",
            Failure::BackendTls => "backend_tls_failed",
        }
    }
    fn message(self) -> &'static str {
        match self {
            Failure::NoBackend => "no backend is available",
            Failure::Connect => "could not connect to a backend",
            Failure::ConnectTimeout => "timed out connecting to a backend",
            Failure::Reset => "the backend closed the connection before answering",
            Failure::BadResponse => "the backend sent a malformed response",
            Failure::Timeout => "the backend did not answer in time",
            Failure::BadRequestBody => "could not read the request body",
            Failure::BackendTls => "the TLS handshake with the backend failed (its certificate was not accepted)",
        }
    }
}

fn error_response(f: Failure) -> Response<RespBody> {
    let body = format!("{{\"error\":\"{}\",\"message\":\"{}\"}}\n", f.code(), f.message());
    let mut r = Response::new(RespBody::full(Bytes::from(body)));
    *r.status_mut() = f.status();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Removes hop-by-hop fields (RFC 9110 §7.6.1): those named in `Connection`
/// and the fixed list.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none or only `Connection`: one pass over the names
    // says which to remove, instead of six removals (each a hash lookup).
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for k in h.keys() {
        if let Some(i) = hop_by_hop_index(k) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        remove_connection_named(h);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present[i] {
            h.remove(*name);
        }
    }
}

/// The fixed hop-by-hop fields; `Connection` first.
const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"];

fn hop_by_hop_index(k: &HeaderName) -> Option<usize> {
    HOP_BY_HOP.iter().position(|n| k.as_str() == *n)
}

fn remove_connection_named(h: &mut HeaderMap) {
    // The common values (`keep-alive`, `close`) name no field beyond the
    // fixed list, or only `close`: no names to collect, no allocation.
    let tokens = || {
        h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !HOP_BY_HOP.iter().any(|n| t.eq_ignore_ascii_case(n)))
    };
    if tokens().all(|t| t.eq_ignore_ascii_case("close")) {
        if tokens().next().is_some() {
            h.remove("close");
        }
        return;
    }
    let named: Vec<HeaderName> = tokens().filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()).collect();
    for n in named {
        h.remove(n);
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn append_via(h: &mut HeaderMap, v: Version) {
    let prev = h.get(header::VIA).and_then(|v| v.to_str().ok());
    let value = match (prev, v) {
        // The common cases need no allocation.
        (None, Version::HTTP_11) => HeaderValue::from_static("1.1 rampart"),
        (None, Version::HTTP_10) => HeaderValue::from_static("1.0 rampart"),
        (prev, v) => {
            let ours = format!("{} {VIA_PSEUDONYM}", version_str(v));
            let joined = match prev {
                Some(p) => format!("{p}, {ours}"),
                None => ours,
            };
            match HeaderValue::from_str(&joined) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
    };
    h.insert(header::VIA, value);
}

/// The client's IP as a header value (computed once per connection).
pub fn client_ip_value(client: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&client.ip().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Request headers as the backend should see them. `tls`: the client
/// connection is TLS; `X-Forwarded-Proto` always says what the client used
/// (one sent by the client is replaced, so it cannot claim https).
pub fn prepare_request_headers(h: &mut HeaderMap, client_ip: &HeaderValue, version: Version, tls: bool) {
    strip_hop_by_hop(h);
    let xff = HeaderName::from_static("x-forwarded-for");
    if h.contains_key(&xff) {
        let mut joined: Vec<u8> = Vec::new();
        for v in h.get_all(&xff) {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(client_ip.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            h.insert(xff, v);
        }
    } else {
        h.insert(xff, client_ip.clone());
    }
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    h.insert(HeaderName::from_static("x-forwarded-proto"), proto);
    append_via(h, version);
}

/// Hash of the configured key; falls back to the client IP when the header or
/// cookie is absent.
pub fn request_hash(key: &HashKey, parts: &http::request::Parts, client: SocketAddr) -> u64 {
    let ip_hash = || match client.ip() {
        std::net::IpAddr::V4(a) => hash64(&a.octets()),
        std::net::IpAddr::V6(a) => hash64(&a.octets()),
    };
    match key {
        HashKey::ClientIp => ip_hash(),
        HashKey::Uri => hash64(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").as_bytes()),
        HashKey::Header(name) => parts.headers.get(name).map(|v| hash64(v.as_bytes())).unwrap_or_else(ip_hash),
        HashKey::Cookie(name) => cookie_value(&parts.headers, name).map(hash64).unwrap_or_else(ip_hash),
    }
}

fn cookie_value<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    h.get_all(header::COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
    })
}

/// Response body: read from a backend connection (which goes back to the pool
/// at the end), from hyper's client (streamed uploads), or local bytes.
pub enum RespBody {
    Full(Option<Bytes>),
    Backend(H1Body<ActiveGuard>),
    Hyper(HyperBody),
}

/// A response from hyper's client; the request counts as done at its end.
pub struct HyperBody {
    inner: Incoming,
    guard: Option<ActiveGuard>,
}

impl RespBody {
    pub fn full(b: Bytes) -> Self {
        RespBody::Full(Some(b))
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Backend(b) => Pin::new(b).poll_frame(cx),
            RespBody::Hyper(h) => {
                let r = Pin::new(&mut h.inner).poll_frame(cx);
                match &r {
                    Poll::Ready(None) => drop(h.guard.take()),
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(mut g) = h.guard.take() {
                            g.fail();
                        }
                    }
                    _ => {}
                }
                r.map(|o| o.map(|f| f.map_err(std::io::Error::other)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Backend(b) => b.is_end_stream(),
            RespBody::Hyper(h) => h.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RespBody::Full(None) => SizeHint::with_exact(0),
            RespBody::Backend(b) => b.size_hint(),
            RespBody::Hyper(h) => h.inner.size_hint(),
        }
    }
}

/// A new connection to `guard`'s backend (TLS when the frontend has
/// `backend_tls`), within `timeouts.connect_ms`.
async fn connect(fe: &FrontendRt, guard: &ActiveGuard) -> Result<BackendStream, Failure> {
    let b = guard.backend();
    let tls = fe.cfg.backend_tls.as_ref().map(|t| &t.connector);
    match tls::connect(b.addr, tls, fe.cfg.connect_timeout()).await {
        Ok(s) => {
            b.stats.connects.inc();
            Ok(s)
        }
        Err(ConnectError::Tcp(e)) => {
            tracing::debug!(backend = %b.addr, "connect failed: {e}");
            Err(Failure::Connect)
        }
        Err(ConnectError::Timeout(_)) => Err(Failure::ConnectTimeout),
        Err(e @ ConnectError::Tls(_)) => {
            // An operator's problem (a certificate), not a client's: say it.
            if fe.stats.log_allowed(now_ms()) {
                tracing::warn!(frontend = %fe.cfg.name, backend = %b.addr, "backend refused: {e} (logged at most once a second)");
            }
            b.stats.tls_failures.inc();
            Err(Failure::BackendTls)
        }
    }
}

/// A pooled connection to `guard`'s backend if one is open, else a new one.
/// Returns whether it was reused.
async fn acquire(fe: &FrontendRt, guard: &ActiveGuard) -> Result<(H1Conn, bool), Failure> {
    if let Some(c) = guard.backend().pool.take() {
        return Ok((c, true));
    }
    Ok((H1Conn::new(connect(fe, guard).await?), false))
}

fn build_request(parts: &http::request::Parts, body: ReqBody) -> Request<ReqBody> {
    let mut r = Request::new(body);
    *r.method_mut() = parts.method.clone();
    *r.uri_mut() = parts.uri.clone();
    *r.headers_mut() = parts.headers.clone();
    r
}

/// What is known about a client connection.
pub struct ClientInfo {
    pub peer: SocketAddr,
    /// `peer`'s IP as a header value, for X-Forwarded-For.
    pub ip_value: HeaderValue,
    /// The address the client connected to (the listener's).
    pub local: SocketAddr,
    /// The connection is TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

impl ClientInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> Self {
        ClientInfo { peer, ip_value: client_ip_value(peer), local, tls }
    }
}

/// Proxies one request from hyper's server.
async fn handle(fe: Arc<FrontendRt>, req: Request<Incoming>, client: &ClientInfo) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    handle_parts(fe, parts, BodyInput::Incoming(body), client).await
}

/// Proxies one request, trying other backends as the retry policy allows.
pub async fn handle_parts(
    fe: Arc<FrontendRt>,
    mut parts: http::request::Parts,
    body: BodyInput,
    client: &ClientInfo,
) -> Response<RespBody> {
    let started = Instant::now();
    fe.stats.requests.inc();
    fe.budget.deposit();
    if parts.method == Method::CONNECT {
        // Tunnelling is not offered; say so instead of mangling the target.
        let mut r = Response::new(RespBody::full(Bytes::from_static(
            b"{\"error\":\"method_not_allowed\",\"message\":\"CONNECT is not supported\"}\n",
        )));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        fe.stats.record_status(405);
        return r;
    }
    let hash = if fe.cfg.algorithm.uses_hash_key() { request_hash(&fe.cfg.hash_key, &parts, client.peer) } else { 0 };
    prepare_for_backend(&mut parts, client);
    let (mut resp, attempts, backend) = match proxy_within_timeout(&fe, &mut parts, body, hash).await {
        Ok((resp, attempts, backend)) => (resp, attempts, Some(backend)),
        Err((f, attempts, backend)) => {
            if f == Failure::NoBackend {
                fe.stats.no_backend.inc();
                if fe.stats.log_allowed(now_ms()) {
                    tracing::warn!(frontend = %fe.cfg.name, "no backend available for {} {} (logged at most once a second)", parts.method, parts.uri);
                }
            }
            (error_response(f), attempts, backend)
        }
    };
    strip_hop_by_hop(resp.headers_mut());
    append_via(resp.headers_mut(), Version::HTTP_11);
    let status = resp.status().as_u16();
    fe.stats.record_status(status);
    let elapsed = started.elapsed();
    fe.stats.latency.record(elapsed);
    if let Some(fmt) = &fe.cfg.access_log {
        let backend = backend.map(|a: SocketAddr| a.to_string()).unwrap_or_else(|| "-".into());
        crate::access_log::emit(
            fmt,
            &[
                ("client", &client.peer.to_string()),
                ("frontend", &fe.cfg.name),
                ("method", parts.method.as_str()),
                ("uri", &parts.uri.to_string()),
                ("status", &status.to_string()),
                ("backend", &backend),
                ("attempts", &attempts.to_string()),
                ("duration_ms", &format!("{:.3}", elapsed.as_secs_f64() * 1000.0)),
            ],
        );
    }
    resp
}

/// The request as an HTTP/1.1 backend should get it: hop-by-hop fields out,
/// forwarding fields in, a Host, an origin-form target.
fn prepare_for_backend(parts: &mut http::request::Parts, client: &ClientInfo) {
    prepare_request_headers(&mut parts.headers, &client.ip_value, parts.version, client.tls);
    // HTTP/2 carries the host in :authority, and an HTTP/1.0 client may send
    // none; an HTTP/1.1 backend needs Host (RFC 9112 §3.2): use the authority,
    // else the address the client connected to.
    if !parts.headers.contains_key(header::HOST) {
        let host = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => HeaderValue::from_str(&client.local.to_string()).ok(),
        };
        if let Some(v) = host {
            parts.headers.insert(header::HOST, v);
        }
    }
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        parts.uri = pq.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
    }
    parts.version = Version::HTTP_11;
}

/// [`proxy`] within `timeouts.request_ms` (all attempts; 0: no limit).
async fn proxy_within_timeout(
    fe: &Arc<FrontendRt>,
    parts: &mut http::request::Parts,
    body: BodyInput,
    hash: u64,
) -> ProxyResult {
    let request_timeout = Duration::from_millis(fe.cfg.timeouts.request_ms);
    let work = proxy(fe, parts, body, hash);
    if request_timeout.is_zero() {
        return work.await;
    }
    match tokio::time::timeout(request_timeout, work).await {
        Ok(r) => r,
        Err(_) => {
            fe.stats.timeouts.inc();
            Err((Failure::Timeout, 0, None))
        }
    }
}

type ProxyResult = Result<(Response<RespBody>, u32, SocketAddr), (Failure, u32, Option<SocketAddr>)>;

/// A request body as the proxy gets it.
pub enum BodyInput {
    /// Already read in full (the fast path reads small bodies itself).
    Buffered(Bytes),
    /// Still to be read from the client.
    Incoming(Incoming),
}

async fn proxy(fe: &Arc<FrontendRt>, parts: &mut http::request::Parts, body: BodyInput, hash: u64) -> ProxyResult {
    let retries = &fe.cfg.retries;
    // Buffer small bodies so the request can be sent again; stream large ones.
    let body = match body {
        BodyInput::Buffered(b) => b,
        BodyInput::Incoming(body) if body.is_end_stream() => Bytes::new(),
        BodyInput::Incoming(body) if body.size_hint().upper().is_some_and(|u| u <= retries.body_bytes_max as u64) => {
            match http_body_util::Limited::new(body, retries.body_bytes_max).collect().await {
                Ok(c) => c.to_bytes(),
                Err(_) => return Err((Failure::BadRequestBody, 0, None)),
            }
        }
        BodyInput::Incoming(body) => {
            let again = retry::may_send_again(&parts.method, &parts.headers);
            let mut sender = Streamed { req: Some(build_request(parts, Either::Right(body))) };
            return attempts(fe, again, hash, &mut sender).await;
        }
    };
    // The body is already here: the backend must not wait for a 100-continue.
    if parts.headers.contains_key(header::EXPECT) {
        parts.headers.remove(header::EXPECT);
    }
    let again = retry::may_send_again(&parts.method, &parts.headers);
    let mut sender = Buffered { parts, body };
    attempts(fe, again, hash, &mut sender).await
}

/// How one attempt on one backend went.
// Returned once per attempt and taken apart at once: boxing the large
// variant would only add an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    /// The backend answered with this head; the body follows.
    Answered(http::response::Parts, PendingBody),
    /// No usable answer. `delivery`: what reached the backend, which decides
    /// whether another backend may get the request ([`retry::may_resend`]).
    /// `blame`: counts towards ejecting the backend (a reused keep-alive
    /// connection closing does not).
    Failed { failure: Failure, delivery: Delivery, blame: bool },
}

/// A backend's response body, not yet tied to its request's [`ActiveGuard`].
enum PendingBody {
    H1(H1Conn, Framing, bool),
    Hyper(Incoming),
}

impl PendingBody {
    fn into_body(self, guard: ActiveGuard) -> RespBody {
        match self {
            PendingBody::H1(conn, framing, keep_alive) => match H1Body::start(conn, framing, keep_alive, guard) {
                Started::Complete(bytes) if bytes.is_empty() => RespBody::Full(None),
                Started::Complete(bytes) => RespBody::Full(Some(bytes)),
                Started::Streaming(rest) => RespBody::Backend(rest),
            },
            PendingBody::Hyper(inner) => RespBody::Hyper(HyperBody { inner, guard: Some(guard) }),
        }
    }
}

/// One way of putting a request on the wire to a backend; [`attempts`]
/// decides whether and where to try again.
trait SendToBackend {
    /// Sends the request to `guard`'s backend and reads the response head.
    async fn send(&mut self, fe: &FrontendRt, guard: &ActiveGuard) -> Attempt;
    /// Whether the request is still here to be sent again.
    fn can_resend(&self) -> bool;
}

/// A request whose body is in memory: sent on a pooled connection with
/// [`H1Conn`], and as often as the retry policy allows.
struct Buffered<'a> {
    parts: &'a http::request::Parts,
    body: Bytes,
}

impl SendToBackend for Buffered<'_> {
    async fn send(&mut self, fe: &FrontendRt, guard: &ActiveGuard) -> Attempt {
        let (mut conn, reused) = match acquire(fe, guard).await {
            Ok(c) => c,
            Err(failure) => return Attempt::Failed { failure, delivery: Delivery::Unsent, blame: true },
        };
        let target = self.parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let addr = guard.backend().addr;
        match conn.round_trip(&self.parts.method, target, &self.parts.headers, &self.body).await {
            Ok((rparts, framing, keep_alive)) => Attempt::Answered(rparts, PendingBody::H1(conn, framing, keep_alive)),
            Err(SendError::BadResponse(why)) => {
                tracing::debug!(backend = %addr, "bad response: {why}");
                Attempt::Failed { failure: Failure::BadResponse, delivery: Delivery::BadAnswer, blame: true }
            }
            Err(e) => {
                tracing::debug!(backend = %addr, reused, "request failed: {e:?}");
                let delivery = if matches!(e, SendError::Unsent(_)) { Delivery::Unsent } else { Delivery::Sent };
                Attempt::Failed { failure: Failure::Reset, delivery, blame: !reused }
            }
        }
    }

    fn can_resend(&self) -> bool {
        true
    }
}

/// A request whose body is too large to buffer: streamed through hyper's
/// client on a fresh connection; it can be sent again only if hyper hands it
/// back unsent.
struct Streamed {
    req: Option<Request<ReqBody>>,
}

impl SendToBackend for Streamed {
    async fn send(&mut self, fe: &FrontendRt, guard: &ActiveGuard) -> Attempt {
        let Some(req) = self.req.take() else {
            // Not reached: `attempts` stops once `can_resend` is false.
            return Attempt::Failed { failure: Failure::Reset, delivery: Delivery::Sent, blame: false };
        };
        let addr = guard.backend().addr;
        let stream = match connect(fe, guard).await {
            Ok(s) => s,
            Err(failure) => {
                self.req = Some(req);
                return Attempt::Failed { failure, delivery: Delivery::Unsent, blame: true };
            }
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::Builder::new().handshake::<_, ReqBody>(TokioIo::new(stream)).await
        else {
            self.req = Some(req);
            return Attempt::Failed { failure: Failure::Connect, delivery: Delivery::Unsent, blame: false };
        };
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(backend = %addr, "backend connection ended: {e}");
            }
        });
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let (rparts, rbody) = resp.into_parts();
                Attempt::Answered(rparts, PendingBody::Hyper(rbody))
            }
            Err(mut e) => {
                let parse = e.error().is_parse() || e.error().is_parse_status();
                tracing::debug!(backend = %addr, "streamed request failed: {}", e.error());
                let failure = if parse { Failure::BadResponse } else { Failure::Reset };
                // hyper gives the request back only if none of it was written.
                let delivery = match e.take_message() {
                    _ if parse => Delivery::BadAnswer,
                    Some(r) => {
                        self.req = Some(r);
                        Delivery::Unsent
                    }
                    None => Delivery::Sent,
                };
                Attempt::Failed { failure, delivery, blame: true }
            }
        }
    }

    fn can_resend(&self) -> bool {
        self.req.is_some()
    }
}

/// The retry loop, the same for buffered and streamed requests: the
/// backends come from [`Attempts`] (untried ones, within `max_retries` and
/// the retry budget), and whether a failed or refused attempt may be followed
/// by another is [`retry::may_resend`] / [`retry::may_retry_status`]'s call
/// (`again`: [`retry::may_send_again`] for this request).
async fn attempts<S: SendToBackend>(fe: &Arc<FrontendRt>, again: bool, hash: u64, sender: &mut S) -> ProxyResult {
    let mut plan = Attempts::new(fe, hash);
    let mut last: (Failure, Option<SocketAddr>) = (Failure::NoBackend, None);
    // A response with a retryable status, answered if no retry works out.
    let mut held: Option<(Response<RespBody>, u32, SocketAddr)> = None;
    while let Some(mut guard) = plan.next(now_ms()) {
        let backend = guard.backend().clone();
        match sender.send(fe, &guard).await {
            Attempt::Answered(rparts, pending) => {
                guard.mark_response();
                record_answer(fe, &backend, rparts.status);
                let retry = fe.cfg.retries.on_statuses.contains(&rparts.status.as_u16())
                    && retry::may_retry_status(again)
                    && sender.can_resend()
                    && plan.another_allowed();
                let resp = (Response::from_parts(rparts, pending.into_body(guard)), plan.made(), backend.addr);
                if !retry {
                    return Ok(resp);
                }
                // Kept for the client in case no other backend can be tried.
                held = Some(resp);
            }
            Attempt::Failed { failure, delivery, blame } => {
                guard.fail();
                if blame {
                    backend.record_failure(&fe.cfg.ejection, &fe.backends, now_ms());
                } else {
                    backend.stats.failures.inc();
                }
                last = (failure, Some(backend.addr));
                if !retry::may_resend(delivery, again) || !sender.can_resend() {
                    break;
                }
            }
        }
    }
    match held {
        Some(resp) => Ok(resp),
        None => Err((last.0, plan.made(), last.1)),
    }
}

/// Feeds an answer's status to the backend's counters and ejection.
fn record_answer(fe: &FrontendRt, backend: &BackendState, status: StatusCode) {
    if status.is_server_error() {
        backend.stats.responses_5xx.inc();
        if fe.cfg.ejection.count_5xx {
            backend.record_failure(&fe.cfg.ejection, &fe.backends, now_ms());
        }
    } else {
        backend.record_success();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_common_values() {
        let map = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
            }
            m
        };
        let names = |m: &HeaderMap| m.keys().map(|k| k.as_str().to_string()).collect::<Vec<_>>();
        let mut h = map(&[("connection", "keep-alive"), ("keep-alive", "timeout=5"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["x-a"]);
        // `close` is an option, and a field of that name goes too (it is named).
        let mut h = map(&[("connection", "Close"), ("close", "x"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["x-a"]);
        let mut h = map(&[
            ("connection", "TE, Keep-Alive"),
            ("connection", "x-b , close"),
            ("te", "trailers"),
            ("x-b", "2"),
            ("x-a", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["x-a"]);
        // Fixed-list fields go without a Connection field naming them.
        let mut h = map(&[("te", "trailers"), ("upgrade", "h2c"), ("proxy-connection", "keep-alive"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["x-a"]);
        let mut h = map(&[("x-a", "1"), ("content-length", "0")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["x-a", "content-length"]);
    }

    #[test]
    fn hop_by_hop_removed_and_forwarding_added() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        prepare_request_headers(&mut h, &client_ip_value("192.168.1.9:5000".parse().unwrap()), Version::HTTP_11, false);
        for gone in ["connection", "x-secret", "keep-alive", "te", "upgrade"] {
            assert!(!h.contains_key(gone), "{gone} kept");
        }
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.168.1.9");
        assert_eq!(h["x-forwarded-proto"], "http", "a client's claim of https is replaced");
        assert_eq!(h["via"], "1.1 rampart");
        assert_eq!(h["x-kept"], "yes");
        let mut h = HeaderMap::new();
        prepare_request_headers(&mut h, &client_ip_value("192.168.1.9:5000".parse().unwrap()), Version::HTTP_11, true);
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn cookie_and_header_keys() {
        let req = Request::builder()
            .uri("/a?b=1")
            .header("cookie", "a=1; session=abc ; z=2")
            .header("x-user", "u7")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(cookie_value(&parts.headers, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(&parts.headers, "nope"), None);
        assert_eq!(request_hash(&HashKey::Cookie("session".into()), &parts, peer), hash64(b"abc"));
        assert_eq!(request_hash(&HashKey::Header(HeaderName::from_static("x-user")), &parts, peer), hash64(b"u7"));
        assert_eq!(request_hash(&HashKey::Uri, &parts, peer), hash64(b"/a?b=1"));
        let ip = request_hash(&HashKey::ClientIp, &parts, peer);
        assert_eq!(request_hash(&HashKey::Cookie("nope".into()), &parts, peer), ip);
    }
}
