//! The lock and election endpoints of the HTTP API (leader mode; multi-master mode answers 501
//! naming leader mode), over [`crate::coord`]:
//!
//! | request | does |
//! |---|---|
//! | `POST /v1/lock/{name} {"lease", "wait_ms", "keep_place"}` | waits up to `wait_ms` for the lock: `{"key", "fencing_token", "lease"}`, or 408 |
//! | `GET /v1/lock/{name}` | the holder and how many contend, or 404 |
//! | `DELETE /v1/lock/{name}?token=T` | releases the lock held with token T, or 404 |
//! | `POST /v1/election/{name} {"lease", "value", "wait_ms"}` | campaigns: answers once elected, or 408 |
//! | `GET /v1/election/{name}` | the leader and its value, or 404 |
//! | `DELETE /v1/election/{name}?token=T` | resigns |
//! | `GET /v1/election/{name}/watch` | streams the leader, then every change (NDJSON or SSE) |

// A refusal here is an HTTP response, built once per refused request: boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rampart_kv::KvError;
use serde_json::{json, Value as Json_};

use crate::app::App;
use crate::coord::{self, Contender, CoordError, Kind, Observed};

/// `wait_ms` of a lock or campaign request when none is given.
pub const WAIT_MS_DEFAULT: u64 = 30_000;
/// The longest `wait_ms` a lock or campaign request accepts (it must also stay below
/// `client_idle_timeout_ms`). A client that waits longer asks again with the same lease, which
/// keeps no place in line across requests.
pub const WAIT_MS_MAX: u64 = 120_000;

fn error(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into(), "code": code}))).into_response()
}

fn bad(msg: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "BAD_REQUEST", msg)
}

fn coord_error(e: CoordError, lease: Option<u64>) -> Response {
    match e {
        CoordError::BadRequest(m) => bad(m),
        CoordError::Unsupported(m) => error(StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", m),
        e @ CoordError::TimedOut { .. } => error(StatusCode::REQUEST_TIMEOUT, "NOT_ACQUIRED", e.to_string()),
        e @ CoordError::LeaseGone { .. } => error(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string()),
        CoordError::Busy(m) => error(StatusCode::SERVICE_UNAVAILABLE, "TRYAGAIN", m),
        CoordError::Kv(KvError::Rejected(m)) if lease.is_some_and(|l| m == rampart_kv::lease::lease_not_found(l)) => {
            error(StatusCode::NOT_FOUND, "NOT_FOUND", m)
        }
        CoordError::Kv(e) => crate::http_lease::lease_error(e),
    }
}

fn observe(app: &App, cmd: &'static str, start: Instant, r: &Response) {
    let s = r.status();
    // A lock not held, a wait that ran out: answers, not failures of the server.
    let ok = s.is_success() || s == StatusCode::NOT_FOUND || s == StatusCode::REQUEST_TIMEOUT;
    app.metrics.observe("http", cmd, start.elapsed(), ok);
}

/// A contender as JSON: `{"key", "fencing_token", "lease"}` and, with `value`, its value (text,
/// or `value_b64`).
fn contender_json(c: &Contender, value: bool) -> Json_ {
    let mut o = serde_json::Map::new();
    crate::http::bytes_field(&mut o, "key", &c.key);
    o.insert("fencing_token".into(), json!(c.revision));
    o.insert("lease".into(), json!(c.lease));
    if value {
        crate::http::bytes_field(&mut o, "value", &c.value);
    }
    Json_::Object(o)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireBody {
    lease: u64,
    wait_ms: Option<u64>,
    /// Elections only: the candidate's value (who it is, where to reach it).
    value: Option<String>,
    /// Keep the place in line when this request ends without the lock (the lease's key stays
    /// until the lease ends; ask again with the same lease to go on waiting).
    #[serde(default)]
    keep_place: bool,
}

/// Reads a small JSON body within the header timeout (the request's own deadline is long: it
/// waits for the lock).
async fn read_body(app: &App, body: Body) -> Result<Bytes, Response> {
    let limit = app.replica.limits().value_bytes_max.saturating_mul(2).max(64 * 1024);
    match tokio::time::timeout(app.cfg.client_header_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(bad(format!("cannot read the request body (at most {limit} bytes): {e}"))),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "TIMEOUT",
            "request body not complete within client_header_timeout_ms",
        )),
    }
}

/// The wait a request asks for, checked against [`WAIT_MS_MAX`] and the idle timeout.
fn wait_of(app: &App, wait_ms: Option<u64>) -> Result<Duration, Response> {
    let idle_ms = app.cfg.client_idle_timeout.as_millis().min(u64::MAX as u128) as u64;
    let max = WAIT_MS_MAX.min(idle_ms.saturating_sub(1));
    let ms = wait_ms.unwrap_or(WAIT_MS_DEFAULT.min(max));
    if ms > max {
        return Err(bad(format!(
            "wait_ms={ms} is above {max} (WAIT_MS_MAX, and below client_idle_timeout_ms, which would close a \
             waiting connection); ask again with the same lease to wait longer"
        )));
    }
    Ok(Duration::from_millis(ms))
}

async fn acquire(app: Arc<App>, kind: Kind, name: String, body: Body) -> Response {
    let raw = match read_body(&app, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let expected = match kind {
        Kind::Lock => r#"{"lease": ID, "wait_ms": N}"#,
        Kind::Election => r#"{"lease": ID, "value": "...", "wait_ms": N}"#,
    };
    let req: AcquireBody = match serde_json::from_slice(&raw) {
        Ok(r) => r,
        Err(e) => return bad(format!("invalid {} request JSON (expected {expected}): {e}", kind.noun())),
    };
    if kind == Kind::Lock && req.value.is_some() {
        return bad("a lock takes no value (an election does)");
    }
    if req.lease == 0 {
        return bad("lease 0 is not a lease id (ids are positive integers)");
    }
    let wait = match wait_of(&app, req.wait_ms) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let value = req.value.unwrap_or_default().into_bytes();
    match coord::acquire(&app, kind, &name, req.lease, value, wait, req.keep_place).await {
        Ok(c) => Json(contender_json(&c, kind == Kind::Election)).into_response(),
        Err(e) => coord_error(e, Some(req.lease)),
    }
}

async fn holder(app: Arc<App>, kind: Kind, name: String) -> Response {
    if let Err(e) = coord::check_name(kind, &name) {
        return coord_error(e, None);
    }
    match coord::line(&app, kind, &name, None).await {
        Ok(line) => match line.first {
            Some(c) => {
                let mut body = contender_json(&c, kind == Kind::Election);
                body["contenders"] = json!(line.len);
                Json(body).into_response()
            }
            None => {
                let what = if kind == Kind::Lock { "is not held" } else { "has no leader" };
                error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("{} {name:?} {what}", kind.noun()))
            }
        },
        Err(e) => coord_error(e, None),
    }
}

#[derive(serde::Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

async fn release(app: Arc<App>, kind: Kind, name: String, q: TokenQuery) -> Response {
    let Some(raw) = q.token else {
        return bad(format!("releasing a {} needs ?token= (the fencing token it was acquired with)", kind.noun()));
    };
    let Some(token) = raw.parse::<u64>().ok().filter(|t| *t > 0) else {
        return bad(format!("token={raw:?} is not a fencing token (a positive integer)"));
    };
    match coord::release(&app, kind, &name, token).await {
        Ok(true) => Json(json!({"released": true})).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!(
                "no contender of {} {name:?} has token {token} (released already, or its lease ended)",
                kind.noun()
            ),
        ),
        Err(e) => coord_error(e, None),
    }
}

pub async fn lock(State(app): State<Arc<App>>, Path(name): Path<String>, body: Body) -> Response {
    let start = Instant::now();
    let r = acquire(app.clone(), Kind::Lock, name, body).await;
    observe(&app, "lock", start, &r);
    r
}

pub async fn lock_holder(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let start = Instant::now();
    let r = holder(app.clone(), Kind::Lock, name).await;
    observe(&app, "lock_holder", start, &r);
    r
}

pub async fn unlock(State(app): State<Arc<App>>, Path(name): Path<String>, Query(q): Query<TokenQuery>) -> Response {
    let start = Instant::now();
    let r = release(app.clone(), Kind::Lock, name, q).await;
    observe(&app, "unlock", start, &r);
    r
}

pub async fn campaign(State(app): State<Arc<App>>, Path(name): Path<String>, body: Body) -> Response {
    let start = Instant::now();
    let r = acquire(app.clone(), Kind::Election, name, body).await;
    observe(&app, "campaign", start, &r);
    r
}

pub async fn leader(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let start = Instant::now();
    let r = holder(app.clone(), Kind::Election, name).await;
    observe(&app, "election_leader", start, &r);
    r
}

pub async fn resign(State(app): State<Arc<App>>, Path(name): Path<String>, Query(q): Query<TokenQuery>) -> Response {
    let start = Instant::now();
    let r = release(app.clone(), Kind::Election, name, q).await;
    observe(&app, "resign", start, &r);
    r
}

#[derive(serde::Deserialize)]
pub struct ObserveQuery {
    progress_ms: Option<String>,
}

/// `GET /v1/election/{name}/watch[?progress_ms=N]`: `{"type":"leader","leader":{...}|null}` for
/// the current leader and then for every change, `{"type":"progress","revision"}` while nothing
/// changes, and `{"type":"error",...}` as the last line if the stream fails.
pub async fn watch_leader(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ObserveQuery>,
) -> Response {
    let start = Instant::now();
    let progress = match crate::http::watch_progress(&app, q.progress_ms.as_deref()) {
        Ok(p) => p,
        Err(m) => return bad(m),
    };
    let sse = crate::http::wants_sse(&headers);
    let r = match coord::observe(&app, Kind::Election, &name, progress).await {
        Err(e) => coord_error(e, None),
        Ok(rx) => {
            let body = futures::stream::unfold(Some(rx), move |state| async move {
                let mut rx = state?;
                let item = rx.recv().await?;
                let (obj, end) = match item {
                    Ok(Observed::Holder(c)) => {
                        (json!({"type": "leader", "leader": c.map(|c| contender_json(&c, true))}), false)
                    }
                    Ok(Observed::Progress(revision)) => (json!({"type": "progress", "revision": revision}), false),
                    Err(e) => (json!({"type": "error", "error": e.to_string()}), true),
                };
                let line = crate::http::stream_line(&obj, sse);
                Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), (!end).then_some(rx)))
            });
            crate::http::stream_response(Body::from_stream(body), sse)
        }
    };
    observe(&app, "election_watch", start, &r);
    r
}
