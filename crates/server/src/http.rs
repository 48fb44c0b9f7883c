//! HTTP/JSON API (curl-friendly, Consul-like paths under `/v1/`), health for
//! load balancers, and Prometheus `/metrics`.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use rampart_kv::{Command, Consistency, KvError, MemberInfo, MembershipError, NodeStatus, Outcome, Page, StatusField};
use serde::Deserialize;
use serde_json::{json, Value as Json_};

use crate::app::App;
use crate::{http_auth, http_coord, http_lease};

/// Most items one `GET /v1/kv?prefix=` returns (`limit` is capped to it).
pub const LIST_LIMIT_MAX: usize = 10_000;
const LIST_LIMIT_DEFAULT: usize = 1_000;

pub fn router(app: Arc<App>) -> Router {
    let body_max = app.replica.limits().value_bytes_max.saturating_mul(2).max(64 * 1024);
    Router::new()
        .route("/", get(dashboard))
        .route("/v1/kv", get(list))
        .route("/v1/kv/{*key}", get(get_key).put(put_key).delete(delete_key))
        .route("/v1/watch", get(watch))
        .route("/v1/lease", axum::routing::post(http_lease::grant))
        .route("/v1/lease/{id}", get(http_lease::info).delete(http_lease::revoke))
        .route("/v1/lease/{id}/keepalive", axum::routing::post(http_lease::keepalive))
        .route("/v1/lock/{name}", get(http_coord::lock_holder).post(http_coord::lock).delete(http_coord::unlock))
        .route("/v1/election/{name}", get(http_coord::leader).post(http_coord::campaign).delete(http_coord::resign))
        .route("/v1/election/{name}/watch", get(http_coord::watch_leader))
        .route("/v1/status", get(status))
        .route("/v1/health", get(health))
        .route("/v1/cluster/members", get(members).post(add_member))
        .route("/v1/cluster/members/{id}", axum::routing::delete(remove_member))
        .route("/v1/cluster/members/{id}/replace", axum::routing::post(replace_member))
        .route("/metrics", get(metrics))
        .route("/v1/auth/tokens", get(http_auth::list_tokens).post(http_auth::create_token))
        .route("/v1/auth/tokens/{id}", axum::routing::delete(http_auth::revoke_token))
        .route("/v1/auth/whoami", get(http_auth::whoami))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), http_auth::authorize))
        .layer(DefaultBodyLimit::max(body_max))
        .layer(axum::middleware::from_fn_with_state(app.clone(), deadline))
        .with_state(app)
}

/// Bounds a request's whole life after its head: its body must arrive within the header
/// timeout (as a RESP command must), and the work within the request timeout, which the
/// handlers enforce themselves first. A body trickled in byte by byte ends here with 408.
///
/// A lock or campaign request also waits for its turn, up to [`http_coord::WAIT_MS_MAX`] (its
/// handler reads the body within the header timeout itself).
async fn deadline(State(app): State<Arc<App>>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut limit = app.cfg.client_header_timeout + app.cfg.request_timeout;
    let path = req.uri().path();
    if req.method() == axum::http::Method::POST && (path.starts_with("/v1/lock/") || path.starts_with("/v1/election/"))
    {
        limit += std::time::Duration::from_millis(http_coord::WAIT_MS_MAX);
    }
    if req.method() != axum::http::Method::GET && path.starts_with("/v1/cluster/members") {
        // A membership change catches up every key in multi-master mode, and waits for a new
        // voter to catch up in leader mode.
        limit += MEMBERSHIP_CHANGE_TIME_MAX;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => HttpError(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request not complete within client_header_timeout_ms + request_timeout_ms ({} ms)",
                limit.as_millis()
            ),
            "TIMEOUT",
        )
        .into_response(),
    }
}

/// An error response: JSON body `{"error": ..., "code": ...}`.
struct HttpError(StatusCode, String, &'static str);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1, "code": self.2}))).into_response()
    }
}

impl From<KvError> for HttpError {
    fn from(e: KvError) -> Self {
        let status = match &e {
            KvError::TryAgain(_) | KvError::ClusterDown(_) => StatusCode::SERVICE_UNAVAILABLE,
            KvError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            KvError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            KvError::BadRequest(_) | KvError::Rejected(_) => StatusCode::BAD_REQUEST,
            KvError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError(status, e.to_string(), e.code())
    }
}

fn observe<T>(app: &App, cmd: &'static str, start: Instant, r: &Result<T, HttpError>) {
    app.metrics.observe("http", cmd, start.elapsed(), r.is_ok());
}

#[derive(Deserialize)]
struct KvQuery {
    consistency: Option<String>,
    cas: Option<String>,
    /// `PUT`: expire this many milliseconds after the write.
    ttl_ms: Option<String>,
    /// `PUT`: attach the key to this lease (leader mode).
    lease: Option<String>,
    prefix: Option<String>,
    limit: Option<String>,
    /// Where a list continues: the `continue` of the page before.
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

fn consistency(q: &KvQuery) -> Result<Consistency, HttpError> {
    match q.consistency.as_deref() {
        None | Some("linearizable") | Some("default") => Ok(Consistency::Linearizable),
        Some("stale") => Ok(Consistency::Stale),
        Some(other) => Err(HttpError(
            StatusCode::BAD_REQUEST,
            format!("consistency={other:?} is not one of: linearizable, stale"),
            "BAD_REQUEST",
        )),
    }
}

/// `ttl_ms` of a PUT: a positive whole number of milliseconds whose expiry (from now) fits in
/// a signed 64-bit Unix time in ms, as Redis's `PX` requires.
fn parse_ttl_ms(t: &str) -> Result<i64, HttpError> {
    let bad = |why: &str| HttpError(StatusCode::BAD_REQUEST, format!("ttl_ms={t:?} {why}"), "BAD_REQUEST");
    let ms = rampart_kv::apply::parse_i64(t.as_bytes()).ok_or_else(|| bad("is not an integer"))?;
    if ms <= 0 {
        return Err(bad("must be positive (milliseconds)"));
    }
    if crate::resp::now_ms().checked_add(ms).is_none() {
        return Err(bad("is too large: the expiry would pass the largest time"));
    }
    Ok(ms)
}

/// Milliseconds left until `at` (Unix ms) by this node's clock; 0 once due.
fn ttl_left_ms(at: u64) -> u64 {
    at.saturating_sub(crate::resp::now_ms().max(0) as u64)
}

fn revision_header(rev: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-rampart-revision", HeaderValue::from(rev));
    h
}

async fn get_key(State(app): State<Arc<App>>, Path(key): Path<String>, Query(q): Query<KvQuery>) -> Response {
    let start = Instant::now();
    let r = async {
        app.check_key(key.as_bytes())?;
        let c = consistency(&q)?;
        let v = app.get(c, Bytes::from(key.clone().into_bytes())).await?;
        match v {
            Some(v) => {
                let mut h = v.revision.map_or_else(HeaderMap::new, revision_header);
                if let Some(at) = v.expires_at {
                    h.insert("x-rampart-expires-at-ms", HeaderValue::from(at));
                    h.insert("x-rampart-ttl-ms", HeaderValue::from(ttl_left_ms(at)));
                }
                Ok((h, v.value).into_response())
            }
            None => Err(HttpError(StatusCode::NOT_FOUND, format!("key {key:?} not found"), "NOT_FOUND")),
        }
    }
    .await;
    // A missing key is an answer, not an error of the server.
    let ok = matches!(&r, Ok(_) | Err(HttpError(StatusCode::NOT_FOUND, ..)));
    app.metrics.observe("http", "get", start.elapsed(), ok);
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn put_key(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let start = Instant::now();
    if let Some(lease) = q.lease.as_deref() {
        let r = put_leased(&app, key, &q, lease, body).await;
        app.metrics.observe("http", "put", start.elapsed(), r.status().is_success());
        return Ok(r);
    }
    let r = async {
        let ttl = match q.ttl_ms.as_deref() {
            None => rampart_kv::Ttl::Clear,
            Some(t) => rampart_kv::Ttl::In(parse_ttl_ms(t)?),
        };
        let cmd = match q.cas.as_deref() {
            None => Command::Set {
                key: key.clone().into_bytes(),
                value: body.to_vec(),
                cond: rampart_kv::SetCond::Always,
                return_old: false,
                ttl,
            },
            Some(_) if q.ttl_ms.is_some() => {
                return Err(HttpError(
                    StatusCode::BAD_REQUEST,
                    "ttl_ms cannot be combined with cas (a compare-and-set write keeps no expiry)".into(),
                    "BAD_REQUEST",
                ))
            }
            Some(c) => {
                let revision: u64 = c.parse().map_err(|_| {
                    HttpError(StatusCode::BAD_REQUEST, format!("cas={c:?} is not a revision number"), "BAD_REQUEST")
                })?;
                Command::PutIfRevision { key: key.clone().into_bytes(), revision, value: body.to_vec() }
            }
        };
        let resp = app.write(cmd).await?;
        match resp.outcome {
            Outcome::Written { written: true, current_revision, .. } => {
                Ok((revision_header(current_revision), Json(json!({"revision": current_revision}))).into_response())
            }
            Outcome::Written { written: false, current_revision, .. } => Err(HttpError(
                StatusCode::CONFLICT,
                format!("compare-and-set failed: key {key:?} is at revision {current_revision}"),
                "CAS_FAILED",
            )),
            other => {
                Err(HttpError(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected result {other:?}"), "INTERNAL"))
            }
        }
    }
    .await;
    observe(&app, "put", start, &r);
    r
}

/// `PUT /v1/kv/{key}?lease={id}`: the key goes when the lease does. It has no expiry of its own
/// and no compare-and-set: `ttl_ms` or `cas` with it is refused (400).
async fn put_leased(app: &App, key: String, q: &KvQuery, lease: &str, body: Bytes) -> Response {
    if q.ttl_ms.is_some() || q.cas.is_some() {
        let why = "lease cannot be combined with ttl_ms or cas: a leased key lives as long as its lease";
        return HttpError(StatusCode::BAD_REQUEST, why.into(), "BAD_REQUEST").into_response();
    }
    let id = match http_lease::parse_lease_id(lease) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if let Err(e) = app.check_key(key.as_bytes()) {
        return HttpError::from(e).into_response();
    }
    let probe = Command::PutLeased { key: key.clone().into_bytes(), value: Vec::new(), lease: id, if_absent: false };
    if let Err(e) = crate::app::check_line_write(&probe) {
        return HttpError::from(e).into_response();
    }
    match app.replica.put_with_lease(key.into_bytes(), body.to_vec(), id, false).await {
        Ok(Some(rev)) => (revision_header(rev), Json(json!({"revision": rev}))).into_response(),
        Ok(None) => HttpError(StatusCode::INTERNAL_SERVER_ERROR, "a leased put wrote nothing".into(), "INTERNAL")
            .into_response(),
        Err(e) => http_lease::lease_error(e),
    }
}

/// `DELETE /v1/kv/{key}[?cas=REV]`: with `cas`, only if the key's revision is REV (else 409).
/// The answer's `revision` is the write's (leader mode: its log index; multi-master mode: 0, the
/// revision of an absent key, as revisions there are per key and a deleted key has none).
async fn delete_key(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
) -> Result<Json<Json_>, HttpError> {
    let start = Instant::now();
    let r = async {
        let cmd = match q.cas.as_deref() {
            None => Command::Delete { key: key.clone().into_bytes() },
            Some(c) => {
                let revision = c.parse::<u64>().ok().filter(|r| *r > 0).ok_or_else(|| {
                    HttpError(
                        StatusCode::BAD_REQUEST,
                        format!("cas={c:?} is not a revision number (a positive integer)"),
                        "BAD_REQUEST",
                    )
                })?;
                Command::DeleteIfRevision { key: key.clone().into_bytes(), revision }
            }
        };
        let conditional = q.cas.is_some();
        let resp = app.write(cmd).await?;
        if let Outcome::Deleted { count: 0 } = resp.outcome {
            if conditional {
                return Err(HttpError(
                    StatusCode::CONFLICT,
                    format!(
                        "compare-and-delete failed: key {key:?} is absent or not at revision {}",
                        q.cas.as_deref().unwrap_or("")
                    ),
                    "CAS_FAILED",
                ));
            }
        }
        match resp.outcome {
            Outcome::Deleted { count } => Ok(Json(json!({"deleted": count > 0, "revision": resp.revision}))),
            other => {
                Err(HttpError(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected result {other:?}"), "INTERNAL"))
            }
        }
    }
    .await;
    observe(&app, "delete", start, &r);
    r
}

/// A key or value as JSON: text when it is UTF-8, else base64 under `<name>_b64`.
pub(crate) fn bytes_field(obj: &mut serde_json::Map<String, Json_>, name: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => {
            obj.insert(name.to_string(), Json_::String(s.to_string()));
        }
        Err(_) => {
            obj.insert(format!("{name}_b64"), Json_::String(base64::engine::general_purpose::STANDARD.encode(b)));
        }
    }
}

async fn list(State(app): State<Arc<App>>, Query(q): Query<KvQuery>) -> Result<Response, HttpError> {
    let start = Instant::now();
    let r = async {
        let c = consistency(&q)?;
        let limit = match q.limit.as_deref() {
            None => LIST_LIMIT_DEFAULT,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|l| *l >= 1)
                .ok_or_else(|| {
                    HttpError(StatusCode::BAD_REQUEST, format!("limit={l:?} is not a positive integer"), "BAD_REQUEST")
                })?
                .min(LIST_LIMIT_MAX),
        };
        let prefix = q.prefix.clone().unwrap_or_default();
        app.check_key(prefix.as_bytes())?;
        let after = match q.continue_token.as_deref() {
            None => None,
            Some(t) => Some(decode_continue(t)?),
        };
        let slot = app.scan_slot().await?;
        let page = app.scan(&slot, c, prefix.into_bytes(), after, limit, true).await?;
        let body_max = app.replica.limits().reply_bytes_max.saturating_sub(LIST_ENVELOPE_BYTES).max(1);
        let body = app.off_workers(move || list_body(page, body_max)).await?;
        drop(slot);
        Ok(([("content-type", "application/json")], body).into_response())
    }
    .await;
    observe(&app, "list", start, &r);
    r
}

/// `progress_ms` of a watch when none is given (lowered to half the idle timeout if that is
/// shorter, so a quiet watch keeps its connection).
pub const WATCH_PROGRESS_MS_DEFAULT: u64 = 5_000;

/// The shortest `progress_ms` a watch accepts.
pub const WATCH_PROGRESS_MS_MIN: u64 = 100;

#[derive(Deserialize)]
struct WatchQuery {
    key: Option<String>,
    prefix: Option<String>,
    from_revision: Option<String>,
    progress_ms: Option<String>,
}

/// `GET /v1/watch?key=K|prefix=P[&from_revision=R][&progress_ms=N]`: the events of the key (or
/// of every key under the prefix) from revision R (default: from the next write), one JSON
/// object per line (NDJSON), or per SSE `data:` when the client accepts `text/event-stream`.
/// The stream is not bound by the request timeout; progress lines keep it alive.
async fn watch(State(app): State<Arc<App>>, headers: HeaderMap, Query(q): Query<WatchQuery>) -> Response {
    let start = Instant::now();
    let r = watch_start(&app, &headers, q).await;
    app.metrics.observe("http", "watch", start.elapsed(), r.is_ok());
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn watch_start(app: &App, headers: &HeaderMap, q: WatchQuery) -> Result<Response, HttpError> {
    let bad = |m: String| HttpError(StatusCode::BAD_REQUEST, m, "BAD_REQUEST");
    let filter = match (q.key, q.prefix) {
        (Some(k), None) => {
            app.check_key(k.as_bytes())?;
            rampart_kv::WatchFilter::Key(k.into_bytes())
        }
        (None, Some(p)) => {
            if !p.is_empty() {
                app.check_key(p.as_bytes())?;
            }
            rampart_kv::WatchFilter::Prefix(p.into_bytes())
        }
        (Some(_), Some(_)) => return Err(bad("give key or prefix, not both".into())),
        (None, None) => return Err(bad("a watch needs key=K or prefix=P".into())),
    };
    let from = match q.from_revision.as_deref() {
        None => None,
        Some(r) => Some(r.parse::<u64>().map_err(|_| bad(format!("from_revision={r:?} is not a revision number")))?),
    };
    let progress = watch_progress(app, q.progress_ms.as_deref()).map_err(bad)?;
    let sse = wants_sse(headers);
    let stream = match app.replica.watch(filter, from, progress).await {
        Ok(s) => s,
        Err(e @ rampart_kv::WatchError::Compacted { oldest, .. }) => {
            return Ok((
                StatusCode::GONE,
                Json(json!({"error": e.to_string(), "code": "COMPACTED", "oldest_revision": oldest})),
            )
                .into_response())
        }
        Err(rampart_kv::WatchError::Unsupported(m)) => {
            return Err(HttpError(StatusCode::NOT_IMPLEMENTED, m, "NOT_IMPLEMENTED"));
        }
        Err(rampart_kv::WatchError::Kv(e)) => return Err(e.into()),
    };
    let body = futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        let msg = stream.next().await?;
        let end = matches!(msg, rampart_kv::WatchMessage::CutOff { .. });
        let bytes = Bytes::from(watch_lines(&msg, sse));
        Some((Ok::<_, std::convert::Infallible>(bytes), (!end).then_some(stream)))
    });
    Ok(stream_response(axum::body::Body::from_stream(body), sse))
}

/// The progress interval of a stream (`progress_ms`): [`WATCH_PROGRESS_MS_DEFAULT`] when not
/// given (lowered below the idle timeout), else a number of ms at least
/// [`WATCH_PROGRESS_MS_MIN`] and below `client_idle_timeout_ms`.
pub(crate) fn watch_progress(app: &App, raw: Option<&str>) -> Result<std::time::Duration, String> {
    let idle_ms = app.cfg.client_idle_timeout.as_millis().min(u64::MAX as u128) as u64;
    let ms = match raw {
        None => WATCH_PROGRESS_MS_DEFAULT.min(idle_ms / 2).max(WATCH_PROGRESS_MS_MIN),
        Some(p) => {
            let ms = p.parse::<u64>().map_err(|_| format!("progress_ms={p:?} is not a number of milliseconds"))?;
            if ms < WATCH_PROGRESS_MS_MIN || ms >= idle_ms {
                return Err(format!(
                    "progress_ms={ms} is outside {WATCH_PROGRESS_MS_MIN}..{idle_ms} (at least WATCH_PROGRESS_MS_MIN, and below client_idle_timeout_ms, which would close a quiet stream)"
                ));
            }
            ms
        }
    };
    Ok(std::time::Duration::from_millis(ms))
}

/// True when the client asks for server-sent events rather than NDJSON.
pub(crate) fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// One JSON object of a stream: a line (NDJSON), or an SSE `data:` event.
pub(crate) fn stream_line(o: &Json_, sse: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if sse {
        out.extend_from_slice(b"data: ");
    }
    out.extend_from_slice(&serde_json::to_vec(o).unwrap_or_default());
    out.extend_from_slice(if sse { b"\n\n" } else { b"\n" });
    out
}

/// A streaming response of [`stream_line`]s, never buffered by proxies.
pub(crate) fn stream_response(body: axum::body::Body, sse: bool) -> Response {
    let content_type = if sse { "text/event-stream" } else { "application/x-ndjson" };
    ([("content-type", content_type), ("cache-control", "no-cache"), ("x-accel-buffering", "no")], body).into_response()
}

/// The lines of one watch message: one JSON object per event (or the progress, or the
/// cut-off), each ending in a newline (NDJSON) or framed as an SSE `data:` event.
fn watch_lines(msg: &rampart_kv::WatchMessage, sse: bool) -> Vec<u8> {
    use rampart_kv::WatchMessage;
    let objects: Vec<Json_> = match msg {
        WatchMessage::Events(events) => events
            .iter()
            .map(|e| {
                let mut o = serde_json::Map::new();
                o.insert("type".into(), json!(e.kind.as_str()));
                bytes_field(&mut o, "key", &e.key);
                bytes_field(&mut o, "value", &e.value);
                o.insert("revision".into(), json!(e.revision));
                if let Some(at) = e.expires_at {
                    o.insert("expires_at_ms".into(), json!(at));
                }
                Json_::Object(o)
            })
            .collect(),
        WatchMessage::Progress { revision } => vec![json!({"type": "progress", "revision": revision})],
        WatchMessage::CutOff { resume_from, reason } => {
            vec![json!({"type": "cutoff", "resume_from": resume_from, "error": reason})]
        }
    };
    objects.iter().flat_map(|o| stream_line(o, sse)).collect()
}

/// Bytes of a list reply kept for everything around its items (`more`, `continue`).
const LIST_ENVELOPE_BYTES: usize = 1024;

/// The JSON of one list page: `{"items": [...], "more": bool, "continue": token}`. Items are
/// encoded one by one and the page ends before the item that would take `body_max` bytes past
/// (one item at least), so a reply never holds much more than `reply_bytes_max`; `continue` then
/// names where the next page starts. The token is opaque to clients (the last key, base64url).
fn list_body(page: Page, body_max: usize) -> Vec<u8> {
    let mut body = b"{\"items\":[".to_vec();
    let mut next = page.next_after;
    let mut last_kept: Option<Vec<u8>> = None;
    for (kept, (k, v)) in page.items.into_iter().enumerate() {
        let mut o = serde_json::Map::new();
        bytes_field(&mut o, "key", &k);
        bytes_field(&mut o, "value", &v.value);
        if let Some(rev) = v.revision {
            o.insert("revision".into(), json!(rev));
        }
        if let Some(at) = v.expires_at {
            o.insert("expires_at_ms".into(), json!(at));
            o.insert("ttl_ms".into(), json!(ttl_left_ms(at)));
        }
        let item = serde_json::to_vec(&Json_::Object(o)).unwrap_or_default();
        if kept > 0 && body.len() + 1 + item.len() > body_max {
            next = last_kept;
            break;
        }
        if kept > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&item);
        last_kept = Some(k);
    }
    body.extend_from_slice(b"]");
    match next {
        Some(k) => {
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&k);
            body.extend_from_slice(format!(",\"more\":true,\"continue\":\"{token}\"}}").as_bytes());
        }
        None => body.extend_from_slice(b",\"more\":false}"),
    }
    body
}

/// The key a `continue` token names.
fn decode_continue(token: &str) -> Result<Vec<u8>, HttpError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| {
        HttpError(
            StatusCode::BAD_REQUEST,
            format!("continue={token:?} is not a token from an earlier page"),
            "BAD_REQUEST",
        )
    })
}

fn members_json(app: &App, st: &NodeStatus) -> Vec<Json_> {
    let me = st.id;
    let health = app.replica.peer_health();
    st.members
        .iter()
        .map(|m| {
            let id = m.id;
            let mut obj = serde_json::Map::new();
            obj.insert("id".into(), json!(id));
            obj.insert("peer_addr".into(), json!(m.info.peer_addr));
            obj.insert("resp_addr".into(), json!(m.info.resp_addr));
            obj.insert("http_addr".into(), json!(m.info.http_addr));
            obj.insert("voter".into(), json!(m.voter));
            match health.iter().find(|h| h.id.0 == id) {
                Some(h) => {
                    obj.insert("state".into(), json!(h.state.as_str()));
                    obj.insert("phi".into(), json!(if h.phi.is_finite() { h.phi } else { f64::MAX }));
                    obj.insert("since_last_heartbeat_ms".into(), json!(h.since_last_heartbeat_ms));
                    obj.insert("rtt_ms".into(), json!(h.rtt_ms));
                }
                None if id == me => {
                    obj.insert("state".into(), json!("self"));
                }
                None => {}
            }
            Json_::Object(obj)
        })
        .collect()
}

/// A mode-specific status figure as JSON.
fn field_json(f: &StatusField) -> Json_ {
    match f {
        StatusField::Number(n) => json!(n),
        StatusField::Maybe(n) => json!(n),
    }
}

async fn status(State(app): State<Arc<App>>) -> Json<Json_> {
    let st = app.replica.status();
    let mut obj = serde_json::Map::new();
    obj.insert("id".into(), json!(st.id));
    obj.insert("role".into(), json!(st.role.as_str()));
    obj.insert("leader_id".into(), json!(st.leader_id));
    obj.insert("replication".into(), json!(st.mode));
    for (name, f) in &st.fields {
        obj.insert((*name).into(), field_json(f));
    }
    obj.insert("members".into(), json!(members_json(&app, &st)));
    Json(Json_::Object(obj))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    match app.replica.health() {
        Ok(()) => (StatusCode::OK, Json(json!({"ok": true}))).into_response(),
        Err(why) => {
            let st = app.replica.status();
            let body = json!({"ok": false, "role": st.role.as_str(), "leader_id": st.leader_id, "error": why});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn members(State(app): State<Arc<App>>) -> Json<Json_> {
    let st = app.replica.status();
    Json(json!({"leader_id": st.leader_id, "members": members_json(&app, &st)}))
}

#[derive(Deserialize)]
struct AddMember {
    id: u64,
    peer_addr: String,
    #[serde(default)]
    resp_addr: String,
    #[serde(default)]
    http_addr: String,
}

fn membership_error(e: MembershipError) -> HttpError {
    match e {
        MembershipError::TryAgain(m) => HttpError(StatusCode::SERVICE_UNAVAILABLE, m, "TRYAGAIN"),
        MembershipError::NotLeader(m) => HttpError(StatusCode::MISDIRECTED_REQUEST, m, "NOT_LEADER"),
        MembershipError::Invalid(m) | MembershipError::Unsupported(m) => {
            HttpError(StatusCode::BAD_REQUEST, m, "BAD_REQUEST")
        }
    }
}

async fn add_member(State(app): State<Arc<App>>, body: Bytes) -> Result<Json<Json_>, HttpError> {
    let req: AddMember = serde_json::from_slice(&body)
        .map_err(|e| HttpError(StatusCode::BAD_REQUEST, format!("invalid member JSON: {e}"), "BAD_REQUEST"))?;
    if req.id == 0 {
        return Err(HttpError(StatusCode::BAD_REQUEST, "id must be a positive integer".into(), "BAD_REQUEST"));
    }
    if req.peer_addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(HttpError(
            StatusCode::BAD_REQUEST,
            format!("peer_addr {:?} is not an IP:PORT address", req.peer_addr),
            "BAD_REQUEST",
        ));
    }
    let info = MemberInfo { peer_addr: req.peer_addr, resp_addr: req.resp_addr, http_addr: req.http_addr };
    app.replica.add_member(req.id, info).await.map_err(membership_error)?;
    Ok(Json(json!({"members": members_json(&app, &app.replica.status())})))
}

/// How much longer than a plain request a membership change may take.
pub const MEMBERSHIP_CHANGE_TIME_MAX: std::time::Duration = std::time::Duration::from_secs(130);

/// `POST /v1/cluster/members/{id}/replace`: member `id`'s place goes to the node now at its
/// address with an empty data dir (multi-master mode).
async fn replace_member(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Json_>, HttpError> {
    let id: u64 = id
        .parse()
        .map_err(|_| HttpError(StatusCode::BAD_REQUEST, format!("{id:?} is not a node id"), "BAD_REQUEST"))?;
    app.replica.replace_member(id).await.map_err(membership_error)?;
    Ok(Json(json!({"members": members_json(&app, &app.replica.status())})))
}

async fn remove_member(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Json_>, HttpError> {
    let id: u64 = id
        .parse()
        .map_err(|_| HttpError(StatusCode::BAD_REQUEST, format!("{id:?} is not a node id"), "BAD_REQUEST"))?;
    app.replica.remove_member(id).await.map_err(membership_error)?;
    Ok(Json(json!({"members": members_json(&app, &app.replica.status())})))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut out = String::new();
    app.replica.render_metrics(&mut out);
    let health = app.replica.peer_health();
    let _ = writeln!(out, "# HELP rampart_peer_rtt_seconds Smoothed heartbeat round trip to each peer.");
    let _ = writeln!(out, "# TYPE rampart_peer_rtt_seconds gauge");
    for h in &health {
        if let Some(r) = h.rtt_ms {
            let _ = writeln!(out, "rampart_peer_rtt_seconds{{peer=\"{}\"}} {}", h.id, r / 1000.0);
        }
    }
    let _ = writeln!(out, "# HELP rampart_peer_phi Phi-accrual suspicion of each peer (8 and up: dead).");
    let _ = writeln!(out, "# TYPE rampart_peer_phi gauge");
    for h in &health {
        let phi = if h.phi.is_finite() { h.phi } else { f64::MAX };
        let _ = writeln!(out, "rampart_peer_phi{{peer=\"{}\"}} {phi}", h.id);
    }
    let _ = writeln!(out, "# HELP rampart_peer_state 1 for the state the failure detector gives each peer.");
    let _ = writeln!(out, "# TYPE rampart_peer_state gauge");
    for h in &health {
        for state in ["alive", "suspect", "dead"] {
            let _ = writeln!(
                out,
                "rampart_peer_state{{peer=\"{}\",state=\"{state}\"}} {}",
                h.id,
                u8::from(h.state.as_str() == state)
            );
        }
    }
    let _ = writeln!(out, "# HELP rampart_peer_heartbeat_age_seconds Time since each peer's last heartbeat.");
    let _ = writeln!(out, "# TYPE rampart_peer_heartbeat_age_seconds gauge");
    for h in &health {
        if let Some(ms) = h.since_last_heartbeat_ms {
            let _ = writeln!(out, "rampart_peer_heartbeat_age_seconds{{peer=\"{}\"}} {}", h.id, ms as f64 / 1000.0);
        }
    }
    app.metrics.render(&mut out);
    app.acl.render_metrics(&mut out);
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

async fn dashboard(State(app): State<Arc<App>>) -> Response {
    let st = app.replica.status();
    let id = st.id;
    let mut summary = format!(
        "{} mode: role <b>{}</b>, leader {}",
        html_escape(st.mode),
        st.role.as_str(),
        st.leader_id.map_or("none".to_string(), |l| l.to_string())
    );
    for (name, f) in &st.fields {
        let _ = write!(summary, ", {} {}", name.replace('_', " "), field_json(f));
    }
    let mut rows = String::new();
    for m in members_json(&app, &st) {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m["id"],
            html_escape(m["state"].as_str().unwrap_or("-")),
            html_escape(m["peer_addr"].as_str().unwrap_or("")),
            html_escape(m["resp_addr"].as_str().unwrap_or("")),
            html_escape(m["http_addr"].as_str().unwrap_or("")),
            if m["voter"].as_bool() == Some(true) { "voter" } else { "learner" },
            m["rtt_ms"].as_f64().map_or("-".to_string(), |r| format!("{r:.2} ms")),
        );
    }
    let page = format!(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2><title>rampart node {id}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}</style></head>\
         <body><h1>rampart node {id}</h1><p>{summary}</p>\
         <table><tr><th>id</th><th>state</th><th>peer</th><th>RESP</th><th>HTTP</th><th>kind</th><th>round trip</th></tr>{rows}</table>\
         <p><a href=/v1/status>/v1/status</a> · <a href=/metrics>/metrics</a></p></body></html>",
    );
    ([("content-type", "text/html; charset=utf-8")], page).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
