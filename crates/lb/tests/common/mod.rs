//! Test helpers: in-process backends on 127.0.0.1 port 0, small HTTP clients,
//! and waiting for conditions with deadlines (never fixed sleeps).
#![allow(dead_code)]

pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rampart_lb::config::Config;
use rampart_lb::Lb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Longest any test waits for a condition.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` every 10 ms until it holds; panics with `what` after `DEADLINE`.
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out after {DEADLINE:?} waiting for: {what}");
}

#[derive(Clone)]
pub struct Flags {
    pub hits: Arc<AtomicU64>,
    pub healthy: Arc<AtomicBool>,
    pub fail_all: Arc<AtomicBool>,
}

/// An HTTP backend: `/health` answers 200 or 503 (see `flags.healthy`),
/// `/slow/{ms}` answers after a delay, `/headers` echoes the request header,
/// anything else `ok from {name}` (or 500 while `flags.fail_all`).
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub flags: Flags,
    stop: watch::Sender<bool>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(name: &str, addr: SocketAddr) -> Backend {
        let flags = Flags {
            hits: Arc::new(AtomicU64::new(0)),
            healthy: Arc::new(AtomicBool::new(true)),
            fail_all: Arc::new(AtomicBool::new(false)),
        };
        Self::start_with(name, addr, flags).await
    }

    /// Starts a backend with existing flags (a restart keeps its counters).
    pub async fn start_with(name: &str, addr: SocketAddr, flags: Flags) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let n = name.to_string();
        let f = flags.clone();
        let mut accept_stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = accept_stop.changed() => return,
                };
                let (n, f, mut conn_stop) = (n.clone(), f.clone(), stop_rx.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| serve(n.clone(), f.clone(), req));
                    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stop.changed() => {}
                    }
                });
            }
        });
        Backend { addr, name: name.to_string(), flags, stop }
    }

    pub fn hits(&self) -> u64 {
        self.flags.hits.load(Relaxed)
    }

    /// Closes the listener and every open connection, like a crash.
    pub fn kill(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve(name: String, f: Flags, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let text = |status: u16, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        Ok(r)
    };
    if path == "/health" {
        return if f.healthy.load(Relaxed) { text(200, "healthy\n".into()) } else { text(503, "sick\n".into()) };
    }
    f.hits.fetch_add(1, Relaxed);
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/headers" {
        let mut out = String::new();
        for (k, v) in req.headers() {
            out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
        }
        return text(200, out);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return text(code.parse().unwrap_or(500), String::new());
    }
    if let Some(n) = path.strip_prefix("/big/") {
        return text(200, "x".repeat(n.parse().unwrap_or(0)));
    }
    if path == "/echo" {
        let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        return text(200, String::from_utf8_lossy(&body).into_owned());
    }
    if f.fail_all.load(Relaxed) {
        return text(500, format!("failing {name}\n"));
    }
    text(200, format!("ok from {name}\n"))
}

/// A raw TCP server that answers every connection with `reply` and closes.
pub async fn raw_server(reply: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A TCP echo server (echoes until the client half-closes, then closes).
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A port with nothing listening on it (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Result<Client, String> {
        let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Client { sender, host: addr.to_string() })
    }

    pub async fn request(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let resp = self.sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    pub async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        self.request("GET", path, "").await
    }
}

/// One GET on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    Client::connect(addr).await?.get(path).await
}

/// Starts a load balancer from TOML text (frontend listen addresses should be
/// 127.0.0.1:0).
pub async fn start_lb(toml: &str) -> Lb {
    let cfg = Config::parse(toml, "test.toml").expect("valid test config");
    Lb::start(cfg).await.expect("lb starts")
}

/// TOML for one frontend `web` in front of `backends`, plus `extra` lines in
/// the frontend table (before the backend list).
pub fn one_frontend(mode: &str, algorithm: &str, backends: &[SocketAddr], extra: &str) -> String {
    let mut s = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[frontend]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nmode = \"{mode}\"\nalgorithm = \"{algorithm}\"\n{extra}\n"
    );
    for b in backends {
        s.push_str(&format!("[[frontend.backend]]\naddr = \"{b}\"\n"));
    }
    s
}

/// GET /stats from the admin API.
pub async fn stats(lb: &Lb) -> serde_json::Value {
    let (status, body) = get(lb.admin_addr().unwrap(), "/stats").await.expect("stats");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("stats is JSON")
}

pub fn backend_stat(s: &serde_json::Value, addr: SocketAddr) -> &serde_json::Value {
    s["frontends"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["addr"] == addr.to_string())
        .expect("backend in stats")
}

/// Sends raw bytes and reads until the peer closes or `DEADLINE`.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
