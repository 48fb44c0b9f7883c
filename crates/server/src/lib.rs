//! rampart-server: wires storage, replication and the client APIs into one
//! node. RESP (Redis protocol) and HTTP/JSON front ends share [`app::App`].

pub mod app;
pub mod config;
pub mod http;
pub mod metrics;
pub mod mm;
pub mod resp;
pub mod scan;

use std::sync::Arc;

use app::Backend;
use config::{Replication, ServerArgs, ServerConfig};
use rampart_mm::{MmConfig, MmNode};
use rampart_raft::node::{NodeConfig, RaftNode};

/// File in the data directory naming the replication mode that created it. The two modes keep
/// different state, so a directory never changes mode.
pub const MODE_FILE_NAME: &str = "replication-mode";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Start(#[from] rampart_raft::node::StartError),
    #[error(transparent)]
    StartMultiMaster(#[from] rampart_mm::StartError),
    #[error("{0}")]
    DataDir(String),
    #[error("cannot listen for {what} on {addr}: {reason}")]
    Listen { what: &'static str, addr: std::net::SocketAddr, reason: String },
    #[error("replication stopped on a fatal error: {0}")]
    Fatal(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

/// Parses the settings and runs the node until SIGTERM or Ctrl-C.
pub fn run_blocking(args: ServerArgs) -> Result<(), ServerError> {
    let cfg = args.resolve()?;
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
    let fatal = async {
        match &running.app.backend {
            Backend::Leader(n) => n.wait_fatal().await,
            Backend::Multi(n) => n.wait_fatal().await,
        }
    };
    tokio::select! {
        _ = wait_for_signal() => {}
        reason = fatal => {
            tracing::error!(%reason, "replication stopped on a fatal error; exiting");
            return Err(ServerError::Fatal(reason));
        }
    }
    tracing::info!("shutting down");
    if let Backend::Leader(n) = &running.app.backend {
        n.shutdown().await;
    }
    Ok(())
}

/// A started node.
pub struct Running {
    pub app: Arc<app::App>,
}

/// Records the mode in a new data directory, or refuses a directory made by the other mode.
fn check_mode(cfg: &ServerConfig) -> Result<(), ServerError> {
    let want = match cfg.replication {
        Replication::Leader => "leader",
        Replication::MultiMaster => "multi-master",
    };
    let dir_err = |e: std::io::Error| ServerError::DataDir(format!("data dir {}: {e}", cfg.data_dir.display()));
    std::fs::create_dir_all(&cfg.data_dir).map_err(dir_err)?;
    let path = cfg.data_dir.join(MODE_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == want => Ok(()),
        Ok(found) => Err(ServerError::DataDir(format!(
            "data dir {} was created in --replication {} mode and cannot be used with --replication {want}; \
             the two modes store different state (use another data dir)",
            cfg.data_dir.display(),
            found.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_data = cfg.data_dir.join(rampart_storage::DATA_FILE_NAME).exists();
            if has_data && cfg.replication == Replication::MultiMaster {
                // Directories from before the marker existed were all leader mode.
                return Err(ServerError::DataDir(format!(
                    "data dir {} holds leader-mode data and cannot be used with --replication multi-master",
                    cfg.data_dir.display()
                )));
            }
            let tmp = cfg.data_dir.join(format!("{MODE_FILE_NAME}.tmp"));
            std::fs::write(&tmp, format!("{want}\n")).map_err(dir_err)?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(dir_err)?;
            std::fs::rename(&tmp, &path).map_err(dir_err)?;
            std::fs::File::open(&cfg.data_dir).and_then(|d| d.sync_all()).map_err(dir_err)?;
            Ok(())
        }
        Err(e) => Err(dir_err(e)),
    }
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
    check_mode(&cfg)?;
    let backend = match cfg.replication {
        Replication::Leader => Backend::Leader(start_leader(&cfg).await?),
        Replication::MultiMaster => Backend::Multi(
            MmNode::start(MmConfig {
                id: cfg.id,
                data_dir: cfg.data_dir.clone(),
                peer_addr: cfg.peer_addr,
                resp_addr: cfg.resp_addr.to_string(),
                http_addr: cfg.http_addr.to_string(),
                members: cfg.initial_cluster.clone(),
                request_timeout: cfg.request_timeout,
                peer_heartbeat_ms: cfg.peer_heartbeat_ms,
            })
            .await?,
        ),
    };
    if let Backend::Multi(node) = &backend {
        // A new data dir votes only once every member confirmed it never saw this node id
        // (docs/design.md); clients wait in the listen backlog meanwhile.
        node.wait_first_boot().await.map_err(ServerError::Fatal)?;
    }
    let app = app::App::new(backend, cfg.clone());
    tokio::spawn(resp::serve(resp_listener, app.clone()));
    let router = http::router(app.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, router).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(
        id = cfg.id,
        replication = ?cfg.replication,
        peer = %cfg.peer_addr,
        resp = %cfg.resp_addr,
        http = %cfg.http_addr,
        data_dir = %cfg.data_dir.display(),
        "node started"
    );
    Ok(Running { app })
}

async fn start_leader(cfg: &ServerConfig) -> Result<Arc<RaftNode>, ServerError> {
    Ok(RaftNode::start(NodeConfig {
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
    .await?)
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
