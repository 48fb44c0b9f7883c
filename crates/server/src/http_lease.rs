//! The lease endpoints of the HTTP API (leader mode; multi-master answers 501 naming leader
//! mode): `POST /v1/lease`, `POST /v1/lease/{id}/keepalive`, `GET /v1/lease/{id}`,
//! `DELETE /v1/lease/{id}`. Keys are attached with `PUT /v1/kv/{key}?lease={id}` (`crate::http`).

// A refusal here is an HTTP response, built once per refused request: boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use rampart_kv::{leader_mode_only, KvError};
use serde_json::json;

use crate::app::App;

/// An error answer `{"error", "code"}`.
fn error(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into(), "code": code}))).into_response()
}

/// The status of a replica's error; multi-master's "leases need leader mode" is 501.
pub fn lease_error(e: KvError) -> Response {
    let status = match &e {
        KvError::BadRequest(m) if *m == leader_mode_only("leases") => {
            return error(StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", m.clone())
        }
        KvError::TryAgain(_) | KvError::ClusterDown(_) => StatusCode::SERVICE_UNAVAILABLE,
        KvError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        KvError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        KvError::BadRequest(_) | KvError::Rejected(_) => StatusCode::BAD_REQUEST,
        KvError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.code(), e.to_string())
}

/// A lease id from a path: a positive integer.
pub fn parse_lease_id(raw: &str) -> Result<u64, Response> {
    raw.parse::<u64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        error(StatusCode::BAD_REQUEST, "BAD_REQUEST", format!("lease id {raw:?} is not a positive integer"))
    })
}

fn not_found(id: u64) -> Response {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", rampart_kv::lease::lease_not_found(id))
}

fn observe(app: &App, cmd: &'static str, start: Instant, r: &Response) {
    let ok = r.status().is_success() || r.status() == StatusCode::NOT_FOUND;
    app.metrics.observe("http", cmd, start.elapsed(), ok);
}

/// `POST /v1/lease {"ttl_ms": N}` -> `{"id", "ttl_ms"}`.
pub async fn grant(State(app): State<Arc<App>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Req {
        ttl_ms: u64,
    }
    let start = Instant::now();
    let r = match serde_json::from_slice::<Req>(&body) {
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            format!("invalid lease request JSON (expected {{\"ttl_ms\": N}}): {e}"),
        ),
        Ok(req) => match app.replica.lease_grant(req.ttl_ms).await {
            Ok(g) => Json(json!({"id": g.id, "ttl_ms": g.ttl_ms})).into_response(),
            Err(e) => lease_error(e),
        },
    };
    observe(&app, "lease_grant", start, &r);
    r
}

/// `POST /v1/lease/{id}/keepalive` -> `{"id", "ttl_ms"}`, or 404.
pub async fn keepalive(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let start = Instant::now();
    let r = match parse_lease_id(&id) {
        Err(r) => r,
        Ok(id) => match app.replica.lease_keepalive(id).await {
            Ok(Some(g)) => Json(json!({"id": g.id, "ttl_ms": g.ttl_ms})).into_response(),
            Ok(None) => not_found(id),
            Err(e) => lease_error(e),
        },
    };
    observe(&app, "lease_keepalive", start, &r);
    r
}

/// `GET /v1/lease/{id}` -> `{"id", "ttl_ms", "remaining_ms", "keys": [...]}` (`keys_b64`, every
/// key in base64, instead when a key is not UTF-8), or 404.
pub async fn info(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let start = Instant::now();
    let r = match parse_lease_id(&id) {
        Err(r) => r,
        Ok(id) => match app.replica.lease_info(id).await {
            Ok(Some(l)) => {
                let mut body = json!({"id": l.id, "ttl_ms": l.ttl_ms, "remaining_ms": l.remaining_ms});
                let text: Option<Vec<&str>> = l.keys.iter().map(|k| std::str::from_utf8(k).ok()).collect();
                match text {
                    Some(keys) => body["keys"] = json!(keys),
                    None => {
                        let b64 = base64::engine::general_purpose::STANDARD;
                        body["keys_b64"] = json!(l.keys.iter().map(|k| b64.encode(k)).collect::<Vec<_>>());
                    }
                }
                Json(body).into_response()
            }
            Ok(None) => not_found(id),
            Err(e) => lease_error(e),
        },
    };
    observe(&app, "lease_info", start, &r);
    r
}

/// `DELETE /v1/lease/{id}` -> `{"revoked": true}` (every attached key removed in one write), or
/// 404.
pub async fn revoke(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let start = Instant::now();
    let r = match parse_lease_id(&id) {
        Err(r) => r,
        Ok(id) => match app.replica.lease_revoke(id).await {
            Ok(true) => Json(json!({"revoked": true})).into_response(),
            Ok(false) => not_found(id),
            Err(e) => lease_error(e),
        },
    };
    observe(&app, "lease_revoke", start, &r);
    r
}
