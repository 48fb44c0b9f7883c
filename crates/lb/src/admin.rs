//! Admin HTTP API (bind it to loopback or a private network: it is not
//! authenticated).
//!
//! - `GET /stats`: JSON, per frontend and backend.
//! - `GET /metrics`: Prometheus text format.
//! - `POST /backends/{frontend}/{addr}/drain|enable|disable`.
//! - `POST /reload`: re-read the configuration file (as SIGHUP).
//! - `GET /health`: 200 while the process serves.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rampart_metrics::Counter;
use serde_json::json;
use tokio::net::TcpListener;

use crate::backend::{now_ms, AdminState, BackendState};
use crate::config::AdminLimits;
use crate::frontend::FrontendRt;
use crate::io::{idle_expired, Activity, CountingIo};
use crate::server::Lb;

/// The admin listener's counters (`rampart_lb_admin_*` in `/metrics`).
#[derive(Default)]
pub struct AdminStats {
    pub conns_active: AtomicU32,
    pub conns_total: Counter,
    /// Closed at accept: `admin.max_conns` were open.
    pub conns_rejected: Counter,
    /// No request head within `admin.request_header_ms`.
    pub closed_header_timeout: Counter,
    /// No byte either way for `admin.idle_ms`.
    pub closed_idle_timeout: Counter,
}

/// Serves the admin API on `listener` within `limits` until aborted.
pub async fn serve(listener: TcpListener, lb: Lb, limits: AdminLimits) {
    let stats = Arc::new(AdminStats::default());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(crate::server::ACCEPT_BACKOFF_MS)).await;
            continue;
        };
        let active = stats.conns_active.fetch_add(1, Relaxed) + 1;
        if active > limits.max_conns {
            crate::backend::release_one(&stats.conns_active, "admin connections");
            stats.conns_rejected.inc();
            drop(stream);
            continue;
        }
        stats.conns_total.inc();
        let (lb, stats) = (lb.clone(), stats.clone());
        tokio::spawn(async move {
            serve_connection(&lb, &stats, stream, limits).await;
            crate::backend::release_one(&stats.conns_active, "admin connections");
        });
    }
}

async fn serve_connection(lb: &Lb, stats: &Arc<AdminStats>, stream: tokio::net::TcpStream, limits: AdminLimits) {
    let activity = Arc::new(Activity::default());
    let act = activity.clone();
    let (lb, st) = (lb.clone(), stats.clone());
    let svc = hyper::service::service_fn(move |req| {
        let (lb, st, act) = (lb.clone(), st.clone(), act.clone());
        async move {
            act.in_flight.fetch_add(1, Relaxed);
            let resp = if authorized(&req, limits.token_sha256) {
                route(&lb, &st, req).await
            } else {
                json_reply(
                    StatusCode::UNAUTHORIZED,
                    json!({"error": "unauthorized", "message": "this endpoint needs Authorization: Bearer <admin token>"}),
                )
            };
            act.in_flight.fetch_sub(1, Relaxed);
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    if !limits.request_header.is_zero() {
        builder.header_read_timeout(limits.request_header);
    }
    let conn = builder.serve_connection(TokioIo::new(CountingIo::new(stream, activity.clone())), svc);
    tokio::select! {
        r = conn => {
            if r.is_err_and(|e| e.is_timeout()) {
                stats.closed_header_timeout.inc();
            }
        }
        () = idle_expired(&activity, limits.idle) => stats.closed_idle_timeout.inc(),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn json_reply(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", format!("{v}\n"))
}

/// The changing endpoints (every `POST`) need `Authorization: Bearer <token>` when
/// `admin.token_file` is set; reads (`/stats`, `/metrics`, `/health`) stay open.
fn authorized(req: &Request<Incoming>, token_sha256: Option<[u8; 32]>) -> bool {
    use sha2::Digest;
    let Some(want) = token_sha256 else { return true };
    if req.method() != Method::POST {
        return true;
    }
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| <[u8; 32]>::from(sha2::Sha256::digest(t.trim().as_bytes())));
    // Digests are compared, so the comparison's timing says nothing about the token.
    given == Some(want)
}

async fn route(lb: &Lb, admin: &AdminStats, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segs.as_slice()) {
        (&Method::GET, ["stats"]) => {
            let mut v = stats_json(lb);
            v["admin"] = admin_json(admin);
            json_reply(StatusCode::OK, v)
        }
        (&Method::GET, ["metrics"]) => {
            let mut text = metrics_text(lb);
            admin_metrics(&mut text, admin);
            reply(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        (&Method::GET, ["health"]) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::POST, ["reload"]) => match lb.reload_from_source().await {
            Ok(()) => json_reply(StatusCode::OK, json!({"reloaded": true, "generation": lb.generation()})),
            Err(e) => json_reply(StatusCode::BAD_REQUEST, json!({"error": "reload_refused", "message": e.to_string()})),
        },
        (&Method::POST, ["backends", fe, addr, action]) => backend_action(lb, fe, addr, action),
        (_, ["stats"] | ["metrics"] | ["health"] | ["reload"] | ["backends", _, _, _]) => {
            json_reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "method_not_allowed"}))
        }
        _ => {
            json_reply(StatusCode::NOT_FOUND, json!({"error": "not_found", "message": format!("no route for {path}")}))
        }
    }
}

fn backend_action(lb: &Lb, fe: &str, addr: &str, action: &str) -> Response<Full<Bytes>> {
    let Some(frontend) = lb.frontend(fe) else {
        return json_reply(
            StatusCode::NOT_FOUND,
            json!({"error": "unknown_frontend", "message": format!("no frontend named {fe}")}),
        );
    };
    let Some(b) = frontend.backends.iter().find(|b| b.key == addr) else {
        return json_reply(
            StatusCode::NOT_FOUND,
            json!({"error": "unknown_backend", "message": format!("frontend {fe} has no backend {addr}")}),
        );
    };
    let state = match action {
        "drain" => AdminState::Draining,
        "disable" => AdminState::Disabled,
        "enable" => {
            b.clear_ejection();
            AdminState::Enabled
        }
        _ => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "unknown_action", "message": "expected drain, enable or disable"}),
            )
        }
    };
    b.set_admin(state);
    tracing::info!(frontend = fe, backend = addr, "backend set to {}", state.as_str());
    json_reply(StatusCode::OK, json!({"frontend": fe, "backend": addr, "admin_state": state.as_str()}))
}

fn backend_state_str(b: &crate::backend::BackendState, now: u64) -> &'static str {
    match b.admin() {
        AdminState::Disabled => "disabled",
        AdminState::Draining if b.active.load(Relaxed) == 0 => "drained",
        AdminState::Draining => "draining",
        AdminState::Enabled if !b.is_healthy() => "down",
        AdminState::Enabled if b.is_ejected(now) => "ejected",
        AdminState::Enabled => "up",
    }
}

pub fn stats_json(lb: &Lb) -> serde_json::Value {
    let now = now_ms();
    let fes: Vec<serde_json::Value> = lb
        .frontends()
        .iter()
        .map(|f| {
            let s = &f.stats;
            let backends: Vec<serde_json::Value> = f
                .backends
                .iter()
                .map(|b| {
                    let st = &b.stats;
                    json!({
                        "addr": b.key,
                        "state": backend_state_str(b, now),
                        "healthy": b.is_healthy(),
                        "ejected": b.is_ejected(now),
                        "admin_state": b.admin().as_str(),
                        "weight": b.weight(),
                        "effective_weight": b.effective_weight(now, f.cfg.slow_start),
                        "max_conns": b.max_conns(),
                        "active": b.active.load(Relaxed),
                        "idle_pooled": b.pool.idle_len(),
                        "requests": st.requests.get(),
                        "failures": st.failures.get(),
                        "responses_5xx": st.responses_5xx.get(),
                        "retries": st.retries.get(),
                        "ejections": st.ejections.get(),
                        "health_checks_failed": st.health_checks_failed.get(),
                        "connects": st.connects.get(),
                        "tls_failures": st.tls_failures.get(),
                        "latency_us": {"p50": st.latency.quantile_us(0.5), "p90": st.latency.quantile_us(0.9), "p99": st.latency.quantile_us(0.99)},
                    })
                })
                .collect();
            json!({
                "name": f.cfg.name,
                "listen": lb.local_addr(&f.cfg.name).map(|a| a.to_string()),
                "mode": f.cfg.mode.to_string(),
                "algorithm": f.cfg.algorithm.as_str(),
                "tls": f.cfg.tls.is_some(),
                "backend_tls": f.cfg.backend_tls.is_some(),
                "max_conns": f.cfg.max_conns,
                "conns_active": s.conns_active.load(Relaxed),
                "conns_total": s.conns_total.get(),
                "conns_rejected": s.conns_rejected.get(),
                "conns_closed": {
                    "first_byte_timeout": s.closed_first_byte_timeout.get(),
                    "header_timeout": s.closed_header_timeout.get(),
                    "idle_timeout": s.closed_idle_timeout.get(),
                },
                "tls_handshake_failures": s.tls_handshake_failures.get(),
                "requests": s.requests.get(),
                "responses": {"2xx": s.responses_2xx.get(), "3xx": s.responses_3xx.get(), "4xx": s.responses_4xx.get(), "5xx": s.responses_5xx.get()},
                "no_backend": s.no_backend.get(),
                "retries": s.retries.get(),
                "retries_denied_by_budget": s.retries_denied_by_budget.get(),
                "retry_budget_tokens": f.budget.tokens(),
                "timeouts": s.timeouts.get(),
                "latency_us": {"p50": s.latency.quantile_us(0.5), "p90": s.latency.quantile_us(0.9), "p99": s.latency.quantile_us(0.99)},
                "backends": backends,
            })
        })
        .collect();
    json!({"generation": lb.generation(), "frontends": fes})
}

fn admin_json(a: &AdminStats) -> serde_json::Value {
    json!({
        "conns_active": a.conns_active.load(Relaxed),
        "conns_total": a.conns_total.get(),
        "conns_rejected": a.conns_rejected.get(),
        "conns_closed": {"header_timeout": a.closed_header_timeout.get(), "idle_timeout": a.closed_idle_timeout.get()},
    })
}

/// The admin listener's own limits, beside the frontends'.
fn admin_metrics(o: &mut String, a: &AdminStats) {
    let one = |v: u64| vec![(String::new(), v.to_string())];
    family(
        o,
        "rampart_lb_admin_connections_active",
        "gauge",
        "Open admin API connections.",
        one(u64::from(a.conns_active.load(Relaxed))),
    );
    family(
        o,
        "rampart_lb_admin_connections_total",
        "counter",
        "Admin API connections accepted.",
        one(a.conns_total.get()),
    );
    family(
        o,
        "rampart_lb_admin_connections_rejected_total",
        "counter",
        "Admin API connections closed at admin.max_conns.",
        one(a.conns_rejected.get()),
    );
    let rows = vec![
        ("reason=\"header_timeout\"".to_string(), a.closed_header_timeout.get().to_string()),
        ("reason=\"idle_timeout\"".to_string(), a.closed_idle_timeout.get().to_string()),
    ];
    family(
        o,
        "rampart_lb_admin_connections_closed_total",
        "counter",
        "Admin API connections closed by a timeout.",
        rows,
    );
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn metrics_text(lb: &Lb) -> String {
    let fes = lb.frontends();
    let mut o = String::new();
    frontend_counters(&mut o, &fes);
    frontend_closed(&mut o, &fes);
    frontend_responses(&mut o, &fes);
    frontend_latency(&mut o, &fes);
    backend_families(&mut o, &fes, now_ms());
    o
}

/// One metric family: its HELP and TYPE lines, then a row per label set.
fn family(o: &mut String, name: &str, kind: &str, help: &str, rows: Vec<(String, String)>) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in rows {
        if labels.is_empty() {
            let _ = writeln!(o, "{name} {v}");
        } else {
            let _ = writeln!(o, "{name}{{{labels}}} {v}");
        }
    }
}

fn fe_labels(f: &FrontendRt) -> String {
    format!("frontend=\"{}\"", esc(&f.cfg.name))
}

fn be_labels(f: &FrontendRt, b: &BackendState) -> String {
    format!("frontend=\"{}\",backend=\"{}\"", esc(&f.cfg.name), esc(&b.key))
}

fn frontend_counters(o: &mut String, fes: &[Arc<FrontendRt>]) {
    type FeGetter = fn(&FrontendRt) -> u64;
    let fe_counters: [(&str, &str, &str, FeGetter); 10] = [
        ("rampart_lb_frontend_connections_total", "counter", "Client connections accepted.", |f| {
            f.stats.conns_total.get()
        }),
        (
            "rampart_lb_frontend_connections_rejected_total",
            "counter",
            "Client connections closed at the frontend limit.",
            |f| f.stats.conns_rejected.get(),
        ),
        ("rampart_lb_frontend_connections_active", "gauge", "Open client connections.", |f| {
            u64::from(f.stats.conns_active.load(Relaxed))
        }),
        ("rampart_lb_frontend_connections_max", "gauge", "Connection cap of the listener (max_conns).", |f| {
            u64::from(f.cfg.max_conns)
        }),
        (
            "rampart_lb_frontend_tls_handshake_failures_total",
            "counter",
            "TLS handshakes with clients that failed (timeouts are in connections_closed_total).",
            |f| f.stats.tls_handshake_failures.get(),
        ),
        ("rampart_lb_frontend_requests_total", "counter", "Requests (HTTP) or sessions (TCP).", |f| {
            f.stats.requests.get()
        }),
        ("rampart_lb_frontend_no_backend_total", "counter", "Requests that found no available backend.", |f| {
            f.stats.no_backend.get()
        }),
        ("rampart_lb_frontend_retries_total", "counter", "Retries on another backend.", |f| f.stats.retries.get()),
        ("rampart_lb_frontend_retries_denied_total", "counter", "Retries refused by the retry budget.", |f| {
            f.stats.retries_denied_by_budget.get()
        }),
        ("rampart_lb_frontend_timeouts_total", "counter", "Requests that hit the request timeout.", |f| {
            f.stats.timeouts.get()
        }),
    ];
    for (name, kind, help, get) in fe_counters {
        family(o, name, kind, help, fes.iter().map(|f| (fe_labels(f), get(f).to_string())).collect());
    }
}

/// Client connections the balancer closed, by the timeout that closed them.
fn frontend_closed(o: &mut String, fes: &[Arc<FrontendRt>]) {
    let mut rows = Vec::new();
    for f in fes {
        for (reason, c) in [
            ("first_byte_timeout", &f.stats.closed_first_byte_timeout),
            ("header_timeout", &f.stats.closed_header_timeout),
            ("idle_timeout", &f.stats.closed_idle_timeout),
        ] {
            rows.push((format!("{},reason=\"{reason}\"", fe_labels(f)), c.get().to_string()));
        }
    }
    family(
        o,
        "rampart_lb_frontend_connections_closed_total",
        "counter",
        "Client connections (and TCP sessions) closed by a timeout, by timeout.",
        rows,
    );
}

fn frontend_responses(o: &mut String, fes: &[Arc<FrontendRt>]) {
    let mut rows = Vec::new();
    for f in fes {
        for (class, c) in [
            ("2xx", &f.stats.responses_2xx),
            ("3xx", &f.stats.responses_3xx),
            ("4xx", &f.stats.responses_4xx),
            ("5xx", &f.stats.responses_5xx),
        ] {
            rows.push((format!("{},class=\"{class}\"", fe_labels(f)), c.get().to_string()));
        }
    }
    family(o, "rampart_lb_frontend_responses_total", "counter", "Responses by status class.", rows);
}

/// Latency as a summary: p50, p90, p99 from one snapshot per frontend.
fn frontend_latency(o: &mut String, fes: &[Arc<FrontendRt>]) {
    let mut rows = Vec::new();
    for f in fes {
        let latency = f.stats.latency.snapshot();
        for q in [0.5, 0.9, 0.99] {
            rows.push((
                format!("{},quantile=\"{q}\"", fe_labels(f)),
                format!("{:.6}", latency.quantile_us(q) as f64 / 1e6),
            ));
        }
    }
    let _ = writeln!(o, "# HELP rampart_lb_frontend_request_duration_seconds Time to response header (HTTP) or session length (TCP).\n# TYPE rampart_lb_frontend_request_duration_seconds summary");
    for (l, v) in rows {
        let _ = writeln!(o, "rampart_lb_frontend_request_duration_seconds{{{l}}} {v}");
    }
    for f in fes {
        let _ = writeln!(
            o,
            "rampart_lb_frontend_request_duration_seconds_sum{{{}}} {:.6}",
            fe_labels(f),
            f.stats.latency.sum_us() as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "rampart_lb_frontend_request_duration_seconds_count{{{}}} {}",
            fe_labels(f),
            f.stats.latency.count()
        );
    }
}

fn backend_families(o: &mut String, fes: &[Arc<FrontendRt>], now: u64) {
    type BeGetter = fn(&BackendState, u64) -> u64;
    let be: [(&str, &str, &str, BeGetter); 10] = [
        (
            "rampart_lb_backend_up",
            "gauge",
            "1 if the backend may receive traffic (healthy, enabled, not ejected).",
            |b, now| u64::from(b.is_healthy() && b.admin() == AdminState::Enabled && !b.is_ejected(now)),
        ),
        ("rampart_lb_backend_healthy", "gauge", "1 if active health checks pass.", |b, _| u64::from(b.is_healthy())),
        ("rampart_lb_backend_active", "gauge", "In-flight requests or sessions.", |b, _| {
            u64::from(b.active.load(Relaxed))
        }),
        ("rampart_lb_backend_requests_total", "counter", "Requests or sessions sent.", |b, _| b.stats.requests.get()),
        (
            "rampart_lb_backend_failures_total",
            "counter",
            "Connect failures, resets, timeouts, bad responses.",
            |b, _| b.stats.failures.get(),
        ),
        ("rampart_lb_backend_responses_5xx_total", "counter", "5xx answers.", |b, _| b.stats.responses_5xx.get()),
        ("rampart_lb_backend_retries_total", "counter", "Retries sent to this backend.", |b, _| b.stats.retries.get()),
        ("rampart_lb_backend_ejections_total", "counter", "Passive ejections.", |b, _| b.stats.ejections.get()),
        (
            "rampart_lb_backend_tls_failures_total",
            "counter",
            "TLS handshakes with the backend that failed (requests and health checks).",
            |b, _| b.stats.tls_failures.get(),
        ),
        ("rampart_lb_backend_health_checks_failed_total", "counter", "Failed active health checks.", |b, _| {
            b.stats.health_checks_failed.get()
        }),
    ];
    for (name, kind, help, get) in be {
        let rows = fes
            .iter()
            .flat_map(|f| f.backends.iter().map(move |b| (be_labels(f, b), get(b, now).to_string())))
            .collect();
        family(o, name, kind, help, rows);
    }
}
