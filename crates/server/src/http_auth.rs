//! Authentication and ACL for the HTTP API: the same users as RESP.
//!
//! A request authenticates with `Authorization: Bearer <token>` (tokens made by
//! `POST /v1/auth/tokens`) or `Authorization: Basic` user:password. Without either it is the
//! default user, if the default user needs no password (as a RESP connection is), else 401.
//! Then it is checked as the RESP command that does the same thing, so one user's rules govern
//! both APIs:
//!
//! | request | checked as |
//! |---|---|
//! | `GET /v1/kv/KEY` | `get KEY` |
//! | `PUT /v1/kv/KEY` | `set KEY` |
//! | `DELETE /v1/kv/KEY` | `del KEY` |
//! | `GET /v1/kv?prefix=P` | `scan` and `get`, and P must lie inside one of the user's key patterns: `~*`, or `~Q*` with Q a literal prefix of P |
//! | `GET /v1/watch?key=K` | `get K` |
//! | `GET /v1/watch?prefix=P` | `get`, and P must lie inside one of the user's key patterns (as for a list) |
//! | `/metrics`, `/`, `GET /v1/cluster/members` | `info` |
//! | `POST`/`DELETE /v1/cluster/members`, `/v1/auth/tokens` | every command of `@admin` |
//! | `POST /v1/lease`, `POST /v1/lease/{id}/keepalive` | `set` (a write command; no key is named) |
//! | `GET /v1/lease/{id}` | `get`, on every key (`~*`): it lists the lease's keys, wherever they are |
//! | `DELETE /v1/lease/{id}` | `del`, on every key (`~*`): it removes the lease's keys, wherever they are |
//! | `PUT /v1/kv/KEY?lease=ID` | `set KEY` |
//! | `POST /v1/lock/N`, `POST /v1/election/N` | `set`, and the line's keys (`_rampart/lock/N/`, `_rampart/election/N/`) must lie inside one of the user's key patterns (as for a list) |
//! | `GET /v1/lock/N`, `GET /v1/election/N[/watch]` | `get`, on the line's keys likewise |
//! | `DELETE /v1/lock/N`, `DELETE /v1/election/N` | `del`, on the line's keys likewise |
//! | `GET /v1/auth/whoami` | any user |
//! | `GET /v1/health`, `GET /v1/status` | open to all, in protected mode too (load balancers and clients find the leader with them; like Consul's `/v1/status/*`) |
//!
//! Protected mode applies as on RESP: while the default user needs no password, a client that
//! is not on loopback gets 403. Errors are JSON `{"error", "code"}`: 401 `NOAUTH` / `WRONGPASS`,
//! 403 `NOPERM` / `PROTECTED_MODE`, 503 `TRYAGAIN`.

// A refusal here is an HTTP response, built once per refused request: boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::json;

use crate::acl::rules::{cat, User};
use crate::acl::store::TokenError;
use crate::acl::{noperm_command, AuthError};
use crate::app::App;
use crate::coord::Kind;

/// The authenticated user of a request (in the request's extensions).
#[derive(Clone)]
pub struct Principal {
    pub name: Vec<u8>,
    pub user: Arc<User>,
}

fn error(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Response {
    let mut r = (status, Json(json!({"error": msg.into(), "code": code}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"rampart\""));
    }
    r
}

fn wrongpass() -> Response {
    error(StatusCode::UNAUTHORIZED, "WRONGPASS", "invalid username-password pair or token, or user is disabled")
}

/// What a request needs.
enum Need {
    AnyUser,
    Command(&'static str, Option<Vec<u8>>),
    /// A list of the keys starting with this prefix.
    List(Vec<u8>),
    /// A watch of every key starting with this prefix.
    WatchPrefix(Vec<u8>),
    /// A lock's or election's request: the command, on every key of its line (this prefix).
    Line(&'static str, Vec<u8>),
    /// A command on keys that cannot be named up front (a lease's): the user needs every key.
    EveryKey(&'static str),
    Admin,
}

/// Authenticates and authorizes every routed request (a `route_layer`, so path parameters
/// are decoded exactly as the handler decodes them).
pub async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/v1/health" || path == "/v1/status" {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    // Without a known peer address (never the case when served by `crate::serve`), fail closed.
    let refused = match peer {
        Some(p) => app.acl.refuses(p.ip()),
        None => app.acl.default_is_open() && app.acl.cfg.protected_mode,
    };
    if refused {
        let msg = crate::acl::store::PROTECTED_MODE_MESSAGE.trim_start_matches("DENIED ");
        return error(StatusCode::FORBIDDEN, "PROTECTED_MODE", msg);
    }
    if !app.acl.wait_loaded(app.cfg.request_timeout).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, "TRYAGAIN", "the users are not loaded yet; retry");
    }
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let principal = match authenticate(&app, authorization).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (mut parts, body) = req.into_parts();
    let need = match classify(&mut parts, &path).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    if let Err(r) = check(&app, &principal, need) {
        return r;
    }
    parts.extensions.insert(principal);
    next.run(Request::from_parts(parts, body)).await
}

async fn authenticate(app: &App, authorization: Option<HeaderValue>) -> Result<Principal, Response> {
    let Some(h) = authorization else {
        let d = app.acl.view().default_user();
        if d.enabled && d.nopass {
            return Ok(Principal { name: d.name.clone(), user: d });
        }
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "NOAUTH",
            "authentication required: send Authorization: Bearer <token> (or Basic user:password)",
        ));
    };
    let h = h.to_str().map_err(|_| wrongpass())?;
    let (scheme, cred) = h.split_once(' ').ok_or_else(wrongpass)?;
    let result = if scheme.eq_ignore_ascii_case("bearer") {
        app.acl.authenticate_token(cred.trim()).await.map(|u| Principal { name: u.name.clone(), user: u })
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(cred.trim()).map_err(|_| wrongpass())?;
        let colon = decoded.iter().position(|b| *b == b':').ok_or_else(wrongpass)?;
        let (name, pass) = (&decoded[..colon], &decoded[colon + 1..]);
        app.acl.authenticate(name, pass).await.map(|u| Principal { name: name.to_vec(), user: u })
    } else {
        return Err(wrongpass());
    };
    result.map_err(|e| match e {
        AuthError::WrongPass => wrongpass(),
        AuthError::Busy(m) => error(StatusCode::SERVICE_UNAVAILABLE, "TRYAGAIN", m),
    })
}

async fn classify(parts: &mut axum::http::request::Parts, path: &str) -> Result<Need, Response> {
    let method = parts.method.clone();
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "BAD_REQUEST", m);
    if path.starts_with("/v1/kv/") {
        let Path(key) = Path::<String>::from_request_parts(parts, &()).await.map_err(|e| bad(e.to_string()))?;
        let cmd = match method {
            Method::GET | Method::HEAD => "get",
            Method::PUT => "set",
            Method::DELETE => "del",
            _ => "set",
        };
        return Ok(Need::Command(cmd, Some(key.into_bytes())));
    }
    Ok(match (method, path) {
        (_, "/v1/kv") => {
            let Query(pairs) =
                Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).map_err(|e| bad(e.to_string()))?;
            let mut prefixes = pairs.into_iter().filter(|(k, _)| k == "prefix").map(|(_, v)| v);
            let prefix = prefixes.next().unwrap_or_default();
            if prefixes.next().is_some() {
                return Err(bad("prefix is given more than once".into()));
            }
            Need::List(prefix.into_bytes())
        }
        (_, "/v1/watch") => {
            let Query(pairs) =
                Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).map_err(|e| bad(e.to_string()))?;
            let one = |name: &str| -> Result<Option<String>, Response> {
                let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone());
                let v = values.next();
                if values.next().is_some() {
                    return Err(bad(format!("{name} is given more than once")));
                }
                Ok(v)
            };
            match (one("key")?, one("prefix")?) {
                (Some(k), None) => Need::Command("get", Some(k.into_bytes())),
                (None, Some(p)) => Need::WatchPrefix(p.into_bytes()),
                // The handler names what is wrong; nothing is read.
                _ => Need::AnyUser,
            }
        }
        (Method::GET, "/metrics" | "/" | "/v1/cluster/members") => Need::Command("info", None),
        (Method::POST, "/v1/lease") => Need::Command("set", None),
        (Method::POST, p) if p.starts_with("/v1/lease/") && p.ends_with("/keepalive") => Need::Command("set", None),
        (Method::GET, p) if p.starts_with("/v1/lease/") => Need::EveryKey("get"),
        (Method::DELETE, p) if p.starts_with("/v1/lease/") => Need::EveryKey("del"),
        (m, p) if p.starts_with("/v1/lock/") || p.starts_with("/v1/election/") => {
            let kind = if p.starts_with("/v1/lock/") { Kind::Lock } else { Kind::Election };
            let Path(name) = Path::<String>::from_request_parts(parts, &()).await.map_err(|e| bad(e.to_string()))?;
            let cmd = match m {
                Method::POST => "set",
                Method::DELETE => "del",
                _ => "get",
            };
            Need::Line(cmd, crate::coord::line_prefix(kind, &name).into_bytes())
        }
        (_, p) if p.starts_with("/v1/cluster/members") => Need::Admin,
        (_, p) if p.starts_with("/v1/auth/tokens") => Need::Admin,
        (_, "/v1/auth/whoami") => Need::AnyUser,
        // A route this table does not know needs the most (and a new route is noticed).
        _ => Need::Admin,
    })
}

fn check(app: &App, p: &Principal, need: Need) -> Result<(), Response> {
    let catalog = app.acl.catalog();
    let noperm = |msg: String| error(StatusCode::FORBIDDEN, "NOPERM", msg);
    let may = |name: &'static str| -> Result<(), Response> {
        match catalog.lookup(name) {
            Some(id) if p.user.may_run(id) => Ok(()),
            _ => Err(noperm(noperm_command(name).trim_start_matches("NOPERM ").to_string())),
        }
    };
    let key_refused = || noperm("this user has no permissions to access one of the keys used as arguments".into());
    match need {
        Need::AnyUser => Ok(()),
        Need::Command(name, key) => {
            may(name)?;
            match key {
                Some(k) if !p.user.key_allowed(&k) => Err(key_refused()),
                _ => Ok(()),
            }
        }
        Need::List(prefix) => {
            may("scan")?;
            may("get")?;
            if prefix_allowed(&p.user, &prefix) {
                Ok(())
            } else {
                Err(noperm(
                    "this user has no permissions to list this prefix: it must lie inside one of the user's key \
                     patterns (~* or ~PREFIX*)"
                        .into(),
                ))
            }
        }
        Need::WatchPrefix(prefix) => {
            may("get")?;
            if prefix_allowed(&p.user, &prefix) {
                Ok(())
            } else {
                Err(noperm(
                    "this user has no permissions to watch this prefix: it must lie inside one of the user's key \
                     patterns (~* or ~PREFIX*)"
                        .into(),
                ))
            }
        }
        Need::Line(name, prefix) => {
            may(name)?;
            if prefix_allowed(&p.user, &prefix) {
                Ok(())
            } else {
                Err(noperm(format!(
                    "this user has no permissions to use this lock or election: its keys ({}*) must lie inside one of \
                     the user's key patterns (~* or ~PREFIX*)",
                    String::from_utf8_lossy(&prefix)
                )))
            }
        }
        Need::EveryKey(name) => {
            may(name)?;
            if prefix_allowed(&p.user, b"") {
                Ok(())
            } else {
                Err(noperm(format!("this user has no permissions to {name} a lease's keys: that needs every key (~*)")))
            }
        }
        Need::Admin => {
            if p.user.has_category(catalog, cat::ADMIN) {
                Ok(())
            } else {
                Err(noperm(
                    "this user has no permissions to run admin endpoints (they need every command of @admin)".into(),
                ))
            }
        }
    }
}

/// True when every key starting with `prefix` matches one of the user's patterns: the user has
/// every key, or a pattern is a literal prefix of `prefix` followed by one `*`.
pub fn prefix_allowed(user: &User, prefix: &[u8]) -> bool {
    user.allkeys
        || user.patterns.iter().any(|p| {
            p.split_last().is_some_and(|(last, lit)| {
                *last == b'*' && !lit.iter().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\')) && prefix.starts_with(lit)
            })
        })
}

/// `POST /v1/auth/tokens {"user": NAME}`: a new bearer token for NAME, shown once.
pub async fn create_token(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Req {
        user: String,
    }
    let req: Req = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", format!("invalid token request JSON: {e}")),
    };
    match app.acl.create_token(req.user.as_bytes()).await {
        Ok((token, rec)) => (
            StatusCode::CREATED,
            Json(json!({"token": token, "id": rec.id, "user": req.user, "created_ms": rec.created_ms})),
        )
            .into_response(),
        Err(e) => token_error(e, &req.user),
    }
}

fn token_error(e: TokenError, user: &str) -> Response {
    match e {
        TokenError::NoSuchUser => error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no user {user:?}")),
        TokenError::Unavailable(m) => error(StatusCode::SERVICE_UNAVAILABLE, "TRYAGAIN", m),
        TokenError::Refused(m) => {
            error(StatusCode::BAD_REQUEST, "BAD_REQUEST", m.trim_start_matches("ERR ").to_string())
        }
    }
}

/// `GET /v1/auth/tokens`: every token's id, user and creation time (never the secret).
pub async fn list_tokens(State(app): State<Arc<App>>) -> Response {
    match app.acl.tokens().await {
        Ok(all) => {
            let tokens: Vec<_> = all
                .into_iter()
                .map(|(u, t)| json!({"id": t.id, "user": String::from_utf8_lossy(&u), "created_ms": t.created_ms}))
                .collect();
            Json(json!({ "tokens": tokens })).into_response()
        }
        Err(e) => token_error(e, ""),
    }
}

/// `DELETE /v1/auth/tokens/{id}`: revokes a token.
pub async fn revoke_token(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.acl.revoke_token(&id).await {
        Ok(true) => Json(json!({"revoked": true})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no token with id {id:?}")),
        Err(e) => token_error(e, ""),
    }
}

/// `GET /v1/auth/whoami`: the request's user.
pub async fn whoami(req: Request<Body>) -> Response {
    match req.extensions().get::<Principal>() {
        Some(p) => Json(json!({"user": String::from_utf8_lossy(&p.name)})).into_response(),
        None => error(StatusCode::UNAUTHORIZED, "NOAUTH", "not authenticated"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_allowed_only_inside_a_literal_pattern() {
        let mut u = User::new(b"u");
        u.patterns = vec![b"app:*".to_vec(), b"x?y*".to_vec(), b"exact".to_vec()];
        assert!(prefix_allowed(&u, b"app:"));
        assert!(prefix_allowed(&u, b"app:sub"));
        assert!(!prefix_allowed(&u, b"app"));
        assert!(!prefix_allowed(&u, b""));
        assert!(!prefix_allowed(&u, b"xay"), "a pattern with wildcards before the end is not a prefix");
        assert!(!prefix_allowed(&u, b"exact"), "a literal key is not a prefix");
        u.allkeys = true;
        assert!(prefix_allowed(&u, b""));
    }
}
