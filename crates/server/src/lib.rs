//! rampart-server: the client APIs of a node. RESP (Redis protocol) and HTTP/JSON front ends,
//! Prometheus `/metrics` and the dashboard share [`app::App`], which reaches the replicated store
//! only through the [`rampart_kv::Replica`] trait: this crate knows neither replication mode.
//! The binary (`crates/cli`) starts a replica and hands it to [`serve`].

pub mod acl;
pub mod app;
pub mod http;
pub mod http_auth;
pub mod metrics;
pub mod resp;
pub mod scan;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rampart_kv::Replica;
use tokio::net::TcpListener;

/// Default most RESP connections served at once (more are refused with an error reply).
pub const RESP_CONNECTIONS_MAX_DEFAULT: usize = 10_000;

/// Settings of the client APIs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub resp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// How long a client request may wait (bounds KEYS and other multi-page requests).
    pub request_timeout: Duration,
    pub resp_connections_max: usize,
    /// Users, protected mode and password checking.
    pub acl: acl::AclConfig,
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
    tokio::spawn(resp::serve(listeners.resp, app.clone()));
    let router = http::router(app.clone());
    let http = listeners.http;
    tokio::spawn(async move {
        // The peer address is what protected mode decides by.
        if let Err(e) = axum::serve(http, router.into_make_service_with_connect_info::<SocketAddr>()).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
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
