//! rampart-server: the client APIs of a node. RESP (Redis protocol) and HTTP/JSON front ends,
//! Prometheus `/metrics` and the dashboard share [`app::App`], which reaches the replicated store
//! only through the [`rampart_kv::Replica`] trait: this crate knows neither replication mode.
//! The binary (`crates/cli`) starts a replica and hands it to [`serve`].

pub mod acl;
pub mod app;
pub mod coord;
pub mod glob;
pub mod http;
pub mod http_auth;
pub mod http_coord;
pub mod http_lease;
pub mod listen;
pub mod metrics;
pub mod pubsub;
pub mod resp;
pub mod scan;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rampart_kv::Replica;
use tokio::net::TcpListener;

/// Default most RESP connections served at once (`--resp-connections-max`; more are answered
/// `-ERR max number of clients reached` and closed).
pub const RESP_CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// Default most HTTP connections served at once (`--http-connections-max`; more are answered
/// 503 and closed).
pub const HTTP_CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// Default time a client has to send a whole request once it began (`--client-header-timeout-ms`):
/// on RESP a command, on HTTP a request head, counted from its first byte. Slow-loris clients are
/// closed by it.
pub const CLIENT_HEADER_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default time a connection may make no progress (`--client-idle-timeout-ms`): one waiting for
/// its next request (a new one included, as Redis lets pools open connections ahead of use), or
/// a client that reads none of its reply or sends none of a body.
pub const CLIENT_IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
/// Default most KEYS / SCAN / DBSIZE / `GET /v1/kv?prefix=` requests (and large MGET / EXISTS)
/// running at once on the blocking pool (`--scan-jobs-max`); more wait up to the request
/// timeout, then get an error naming the limit.
pub const SCAN_JOBS_MAX_DEFAULT: usize = 4;

/// Settings of the client APIs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub resp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// How long a client request may wait (bounds KEYS and other multi-page requests).
    pub request_timeout: Duration,
    pub resp_connections_max: usize,
    pub http_connections_max: usize,
    pub client_header_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub scan_jobs_max: usize,
    /// TLS for both client listeners (RESP and HTTP): the server certificate, from
    /// [`rampart_tls::load_server_config`]. `None` serves plaintext.
    pub tls: Option<Arc<rampart_tls::rustls::ServerConfig>>,
    /// Users, protected mode and password checking.
    pub acl: acl::AclConfig,
    /// `notify-keyspace-events` at start (Redis's default: off; `rampart server` has no flag for it
    /// yet, so it starts off and `CONFIG SET` turns it on).
    /// Needs a replica with watches (leader mode).
    pub notify_keyspace_events: pubsub::NotifyFlags,
}

impl ServerConfig {
    /// The defaults, listening on `resp_addr` and `http_addr`.
    pub fn new(resp_addr: SocketAddr, http_addr: SocketAddr) -> ServerConfig {
        ServerConfig {
            resp_addr,
            http_addr,
            request_timeout: Duration::from_secs(5),
            resp_connections_max: RESP_CONNECTIONS_MAX_DEFAULT,
            http_connections_max: HTTP_CONNECTIONS_MAX_DEFAULT,
            client_header_timeout: Duration::from_millis(CLIENT_HEADER_TIMEOUT_MS_DEFAULT),
            client_idle_timeout: Duration::from_millis(CLIENT_IDLE_TIMEOUT_MS_DEFAULT),
            scan_jobs_max: SCAN_JOBS_MAX_DEFAULT,
            tls: None,
            acl: acl::AclConfig::default(),
            notify_keyspace_events: pubsub::NotifyFlags(0),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for {what} on {addr}: {reason}")]
    Listen { what: &'static str, addr: SocketAddr, reason: String },
}

/// The client listeners, bound before the replica starts so a taken port fails fast.
pub struct Listeners {
    resp: TcpListener,
    http: TcpListener,
}

impl Listeners {
    /// Where the RESP and HTTP listeners are bound (useful with port 0).
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.resp.local_addr()?, self.http.local_addr()?))
    }
}

pub async fn bind(cfg: &ServerConfig) -> Result<Listeners, ServerError> {
    let listen = |what, addr| move |e: std::io::Error| ServerError::Listen { what, addr, reason: e.to_string() };
    let resp = TcpListener::bind(cfg.resp_addr).await.map_err(listen("RESP clients", cfg.resp_addr))?;
    let http = TcpListener::bind(cfg.http_addr).await.map_err(listen("HTTP clients", cfg.http_addr))?;
    Ok(Listeners { resp, http })
}

/// Serves RESP and HTTP clients from `replica` on the bound listeners (in background tasks).
pub fn serve(listeners: Listeners, replica: Arc<dyn Replica>, cfg: ServerConfig) -> Arc<app::App> {
    let app = app::App::new(replica, cfg);
    tokio::spawn(app.acl.clone().run_refresher());
    if app.cfg.notify_keyspace_events.0 != 0 {
        tokio::spawn(pubsub::start_feed_at_boot(app.pubsub.clone(), app.replica.clone()));
    }
    tokio::spawn(resp::serve(listeners.resp, app.clone()));
    tokio::spawn(listen::serve_http(listeners.http, http::router(app.clone()), app.clone()));
    app
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
