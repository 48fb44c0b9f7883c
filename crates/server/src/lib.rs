//! rampart-server: wires storage, replication and the client APIs into one
//! node. RESP (Redis protocol) and HTTP/JSON front ends share [`app::App`].

pub mod app;
pub mod config;
pub mod http;
pub mod metrics;
pub mod resp;
pub mod scan;

use std::sync::Arc;

use config::{Replication, ServerArgs, ServerConfig};
use rampart_raft::node::{NodeConfig, RaftNode};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Start(#[from] rampart_raft::node::StartError),
    #[error("cannot listen for {what} on {addr}: {reason}")]
    Listen { what: &'static str, addr: std::net::SocketAddr, reason: String },
    #[error("--replication multi-master is not implemented yet (issue 4); use --replication leader")]
    MultiMasterNotBuilt,
    #[error("replication stopped on a fatal error: {0}")]
    Fatal(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

/// Parses the settings and runs the node until SIGTERM or Ctrl-C.
pub fn run_blocking(args: ServerArgs) -> Result<(), ServerError> {
    let cfg = args.resolve()?;
    if cfg.replication == Replication::MultiMaster {
        return Err(ServerError::MultiMasterNotBuilt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rampart")
        .build()
        .map_err(|e| ServerError::Runtime(e.to_string()))?;
    rt.block_on(run(cfg))
}

/// Starts the node and its listeners; returns on SIGTERM or Ctrl-C.
pub async fn run(cfg: ServerConfig) -> Result<(), ServerError> {
    let running = start(cfg).await?;
    tokio::select! {
        _ = wait_for_signal() => {}
        reason = running.node.wait_fatal() => {
            tracing::error!(%reason, "replication stopped on a fatal error; exiting");
            return Err(ServerError::Fatal(reason));
        }
    }
    tracing::info!("shutting down");
    running.node.shutdown().await;
    Ok(())
}

/// A started node.
pub struct Running {
    pub node: Arc<RaftNode>,
    pub app: Arc<app::App>,
}

pub async fn start(cfg: ServerConfig) -> Result<Running, ServerError> {
    let resp_listener = tokio::net::TcpListener::bind(cfg.resp_addr).await.map_err(|e| ServerError::Listen {
        what: "RESP clients",
        addr: cfg.resp_addr,
        reason: e.to_string(),
    })?;
    let http_listener = tokio::net::TcpListener::bind(cfg.http_addr).await.map_err(|e| ServerError::Listen {
        what: "HTTP clients",
        addr: cfg.http_addr,
        reason: e.to_string(),
    })?;
    let node = RaftNode::start(NodeConfig {
        id: cfg.id,
        data_dir: cfg.data_dir.clone(),
        peer_addr: cfg.peer_addr,
        resp_addr: cfg.resp_addr.to_string(),
        http_addr: cfg.http_addr.to_string(),
        initial_cluster: cfg.initial_cluster.clone(),
        heartbeat_interval_ms: cfg.heartbeat_interval_ms,
        election_timeout_ms: cfg.election_timeout_ms,
        request_timeout: cfg.request_timeout,
        snapshot_logs_since_last: cfg.snapshot_logs,
        // Keep a quarter of a snapshot interval of log behind each snapshot so
        // a briefly lagging follower catches up from the log, not a snapshot.
        logs_kept_after_snapshot: cfg.snapshot_logs / 4,
        peer_heartbeat_ms: cfg.peer_heartbeat_ms,
    })
    .await?;
    let app = app::App::new(node.clone(), cfg.clone());
    tokio::spawn(resp::serve(resp_listener, app.clone()));
    let router = http::router(app.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, router).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(
        id = cfg.id,
        peer = %cfg.peer_addr,
        resp = %cfg.resp_addr,
        http = %cfg.http_addr,
        data_dir = %cfg.data_dir.display(),
        "node started"
    );
    Ok(Running { node, app })
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

/// Prints a stopped node's log, raft markers and keys, one per line.
pub fn debug_dump(data_dir: &std::path::Path) -> Result<(), String> {
    let store = rampart_storage::Store::open_dir(data_dir).map_err(|e| e.to_string())?;
    for line in rampart_raft::store::dump(&store).map_err(|e| e.to_string())? {
        println!("{line}");
    }
    Ok(())
}
