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
use rampart_raft::{Command, NodeInfo, Outcome};
use serde::Deserialize;
use serde_json::{json, Value as Json_};

use crate::app::{leader_only, ApiError, App, Backend, Consistency};

/// Most items one `GET /v1/kv?prefix=` returns (`limit` is capped to it).
pub const LIST_LIMIT_MAX: usize = 10_000;
const LIST_LIMIT_DEFAULT: usize = 1_000;

pub fn router(app: Arc<App>) -> Router {
    let body_max = app.cfg.value_bytes_max.saturating_mul(2).max(64 * 1024);
    Router::new()
        .route("/", get(dashboard))
        .route("/v1/kv", get(list))
        .route("/v1/kv/{*key}", get(get_key).put(put_key).delete(delete_key))
        .route("/v1/status", get(status))
        .route("/v1/health", get(health))
        .route("/v1/cluster/members", get(members).post(add_member))
        .route("/v1/cluster/members/{id}", axum::routing::delete(remove_member))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_max))
        .with_state(app)
}

/// An error response: JSON body `{"error": ..., "code": ...}`.
struct HttpError(StatusCode, String, &'static str);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1, "code": self.2}))).into_response()
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        let status = match &e {
            ApiError::TryAgain(_) | ApiError::ClusterDown(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) | ApiError::Rejected(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
    prefix: Option<String>,
    limit: Option<String>,
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
            Some(v) => match v.revision {
                Some(rev) => Ok((revision_header(rev), v.value).into_response()),
                None => Ok(v.value.into_response()),
            },
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
    let r = async {
        let cmd = match q.cas.as_deref() {
            None => Command::Set {
                key: key.clone().into_bytes(),
                value: body.to_vec(),
                cond: rampart_raft::SetCond::Always,
                return_old: false,
            },
            Some(c) => {
                let revision: u64 = c.parse().map_err(|_| {
                    HttpError(StatusCode::BAD_REQUEST, format!("cas={c:?} is not a revision number"), "BAD_REQUEST")
                })?;
                Command::PutIfRevision { key: key.clone().into_bytes(), revision, value: body.to_vec() }
            }
        };
        let resp = app.write(cmd).await?;
        match resp.outcome {
            Outcome::Written { written: true, .. } if app.is_multi_master() => {
                Ok(Json(json!({"ok": true})).into_response())
            }
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

async fn delete_key(State(app): State<Arc<App>>, Path(key): Path<String>) -> Result<Json<Json_>, HttpError> {
    let start = Instant::now();
    let r = async {
        let resp = app.write(Command::Delete { key: key.into_bytes() }).await?;
        match resp.outcome {
            Outcome::Deleted { count } if app.is_multi_master() => Ok(Json(json!({"deleted": count > 0}))),
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
fn bytes_field(obj: &mut serde_json::Map<String, Json_>, name: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => {
            obj.insert(name.to_string(), Json_::String(s.to_string()));
        }
        Err(_) => {
            obj.insert(format!("{name}_b64"), Json_::String(base64::engine::general_purpose::STANDARD.encode(b)));
        }
    }
}

async fn list(State(app): State<Arc<App>>, Query(q): Query<KvQuery>) -> Result<Json<Json_>, HttpError> {
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
        let page = app.scan(c, prefix.into_bytes(), None, limit, true).await?;
        let more = page.next_after.is_some();
        let items: Vec<Json_> = page
            .items
            .into_iter()
            .map(|(k, v)| {
                let mut o = serde_json::Map::new();
                bytes_field(&mut o, "key", &k);
                bytes_field(&mut o, "value", &v.value);
                if let Some(rev) = v.revision {
                    o.insert("revision".into(), json!(rev));
                }
                Json_::Object(o)
            })
            .collect();
        Ok(Json(json!({"items": items, "more": more})))
    }
    .await;
    observe(&app, "list", start, &r);
    r
}

/// A member as the APIs list it: id, peer, RESP and HTTP addresses, voter.
type MemberRow = (u64, String, String, String, bool);

/// This node's id and every member.
fn member_rows(app: &App) -> (u64, Vec<MemberRow>) {
    match &app.backend {
        Backend::Leader(node) => {
            let st = node.status();
            let rows = st
                .members
                .iter()
                .map(|m| (m.id, m.info.peer_addr.clone(), m.info.resp_addr.clone(), m.info.http_addr.clone(), m.voter))
                .collect();
            (st.id, rows)
        }
        Backend::Multi(node) => {
            let st = node.status();
            let rows =
                st.members.into_iter().map(|(id, i)| (id, i.peer_addr, i.resp_addr, i.http_addr, true)).collect();
            (st.id, rows)
        }
    }
}

fn members_json(app: &App) -> Vec<Json_> {
    let (me, rows) = member_rows(app);
    let health = app.peer_health();
    rows.into_iter()
        .map(|(id, peer, resp, http, voter)| {
            let mut obj = serde_json::Map::new();
            obj.insert("id".into(), json!(id));
            obj.insert("peer_addr".into(), json!(peer));
            obj.insert("resp_addr".into(), json!(resp));
            obj.insert("http_addr".into(), json!(http));
            obj.insert("voter".into(), json!(voter));
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

async fn status(State(app): State<Arc<App>>) -> Json<Json_> {
    let node = match &app.backend {
        Backend::Leader(n) => n,
        Backend::Multi(n) => {
            let st = n.status();
            return Json(json!({
                "id": st.id,
                "role": "peer",
                "leader_id": null,
                "replication": "multi-master",
                "quorum": st.quorum,
                "proposals_in_flight": st.proposals_in_flight,
                "cached_keys": st.cached_keys,
                "members": members_json(&app),
            }));
        }
    };
    let st = node.status();
    Json(json!({
        "id": st.id,
        "role": st.role,
        "leader_id": st.leader_id,
        "term": st.term,
        "commit_index": st.commit_index,
        "applied_index": st.applied_index,
        "last_log_index": st.last_log_index,
        "snapshot_index": st.snapshot_index,
        "replication": "leader",
        "members": members_json(&app),
    }))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if app.healthy() {
        return (StatusCode::OK, Json(json!({"ok": true}))).into_response();
    }
    let body = match &app.backend {
        Backend::Leader(n) => {
            let st = n.status();
            json!({"ok": false, "role": st.role, "leader_id": st.leader_id, "error": "cannot serve linearizable requests now"})
        }
        Backend::Multi(_) => json!({"ok": false, "error": "fewer than a majority of the members are alive"}),
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn members(State(app): State<Arc<App>>) -> Json<Json_> {
    let leader_id = app.raft().and_then(|n| n.status().leader_id);
    Json(json!({"leader_id": leader_id, "members": members_json(&app)}))
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

fn membership_error(m: String) -> HttpError {
    if m.contains("no leader") {
        HttpError(StatusCode::SERVICE_UNAVAILABLE, m, "TRYAGAIN")
    } else if m.contains("not the leader") {
        HttpError(StatusCode::MISDIRECTED_REQUEST, m, "NOT_LEADER")
    } else {
        HttpError(StatusCode::BAD_REQUEST, m, "BAD_REQUEST")
    }
}

async fn add_member(State(app): State<Arc<App>>, body: Bytes) -> Result<Json<Json_>, HttpError> {
    let Some(node) = app.raft() else { return Err(leader_only("adding a member").into()) };
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
    let info = NodeInfo { peer_addr: req.peer_addr, resp_addr: req.resp_addr, http_addr: req.http_addr };
    node.add_member(req.id, info).await.map_err(membership_error)?;
    Ok(Json(json!({"members": members_json(&app)})))
}

async fn remove_member(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Json_>, HttpError> {
    let Some(node) = app.raft() else { return Err(leader_only("removing a member").into()) };
    let id: u64 = id
        .parse()
        .map_err(|_| HttpError(StatusCode::BAD_REQUEST, format!("{id:?} is not a node id"), "BAD_REQUEST"))?;
    node.remove_member(id).await.map_err(membership_error)?;
    Ok(Json(json!({"members": members_json(&app)})))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut out = String::new();
    match &app.backend {
        Backend::Leader(node) => raft_metrics(node, &mut out),
        Backend::Multi(node) => mm_metrics(node, &mut out),
    }
    let health = app.peer_health();
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
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

fn raft_metrics(node: &rampart_raft::node::RaftNode, out: &mut String) {
    let st = node.status();
    let _ = writeln!(out, "# HELP rampart_raft_role 1 for the role this node has now.");
    let _ = writeln!(out, "# TYPE rampart_raft_role gauge");
    for role in ["leader", "follower", "candidate", "learner"] {
        let _ = writeln!(out, "rampart_raft_role{{role=\"{role}\"}} {}", u8::from(st.role == role));
    }
    let _ = writeln!(out, "# TYPE rampart_raft_term gauge\nrampart_raft_term {}", st.term);
    let _ = writeln!(out, "# TYPE rampart_raft_commit_index gauge\nrampart_raft_commit_index {}", st.commit_index);
    let _ = writeln!(out, "# TYPE rampart_raft_applied_index gauge\nrampart_raft_applied_index {}", st.applied_index);
    let _ =
        writeln!(out, "# TYPE rampart_raft_last_log_index gauge\nrampart_raft_last_log_index {}", st.last_log_index);
    let _ =
        writeln!(out, "# TYPE rampart_raft_snapshot_index gauge\nrampart_raft_snapshot_index {}", st.snapshot_index);
    let _ = writeln!(out, "# TYPE rampart_raft_leader_id gauge\nrampart_raft_leader_id {}", st.leader_id.unwrap_or(0));
}

fn mm_metrics(node: &rampart_mm::MmNode, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = node.stats();
    let counters = [
        ("rampart_mm_proposals_total", "Changes submitted to this node's proposer.", s.proposals.load(Relaxed)),
        ("rampart_mm_proposals_ok_total", "Changes chosen.", s.proposals_ok.load(Relaxed)),
        ("rampart_mm_proposals_failed_total", "Changes that failed after starting.", s.proposals_failed.load(Relaxed)),
        (
            "rampart_mm_acceptor_requests_total",
            "Paxos requests handled by this acceptor.",
            s.acceptor_requests.load(Relaxed),
        ),
        (
            "rampart_mm_acceptor_commits_total",
            "Group commits (fsyncs) of acceptor state.",
            s.acceptor_commits.load(Relaxed),
        ),
        (
            "rampart_mm_acceptor_registers_written_total",
            "Registers persisted by group commits.",
            s.acceptor_registers_written.load(Relaxed),
        ),
        (
            "rampart_mm_acceptor_jobs_expired_total",
            "Peer batches skipped because they waited for the acceptor longer than the peer timeout.",
            s.acceptor_jobs_expired.load(Relaxed),
        ),
        (
            "rampart_mm_peer_batches_dropped_total",
            "Request batches dropped because a peer had too many in flight or the acceptor queue was full.",
            s.peer_batches_dropped.load(Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let _ = writeln!(
        out,
        "# TYPE rampart_mm_proposals_in_flight gauge\nrampart_mm_proposals_in_flight {}",
        s.proposals_in_flight.load(Relaxed)
    );
    let _ =
        writeln!(out, "# TYPE rampart_mm_cached_keys gauge\nrampart_mm_cached_keys {}", s.cached_keys.load(Relaxed));
}

async fn dashboard(State(app): State<Arc<App>>) -> Response {
    let (id, summary) = match &app.backend {
        Backend::Leader(node) => {
            let st = node.status();
            let summary = format!(
                "leader mode: role <b>{}</b>, leader {}, term {}, commit {}, applied {}",
                st.role,
                st.leader_id.map_or("none".to_string(), |l| l.to_string()),
                st.term,
                st.commit_index,
                st.applied_index
            );
            (st.id, summary)
        }
        Backend::Multi(node) => {
            let st = node.status();
            let summary = format!(
                "<b>multi-master</b> mode: every node takes writes; quorum {} of {}, {} changes in flight",
                st.quorum,
                st.members.len(),
                st.proposals_in_flight
            );
            (st.id, summary)
        }
    };
    let mut rows = String::new();
    for m in members_json(&app) {
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
