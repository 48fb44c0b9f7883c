//! The running load balancer: listeners, health-check tasks, and
//! configuration reloads. The admin API sits above it (`admin`, `run`).
//!
//! A reload builds every new frontend first (binding new listen addresses);
//! only if all of that succeeds are the listeners switched over. Connections
//! and requests already running keep the frontend they started with; backend
//! state (health, ejection, counters, pooled connections) carries over for
//! backends that stay.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::backend::{release_one, BackendState, FrontendStats};
use crate::config::{Config, ConfigError, Mode};
use crate::frontend::FrontendRt;
use crate::http::{ClientInfo, FrontendCell};
use crate::pool::Pool;
use crate::workers::Workers;

/// Pause after a failed accept (typically EMFILE) before the next one.
pub const ACCEPT_BACKOFF_MS: u64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("reload refused: {0}")]
    Reload(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

struct Listener {
    configured: SocketAddr,
    local: SocketAddr,
    cell: FrontendCell,
    task: JoinHandle<()>,
}

struct State {
    config: Config,
    listeners: HashMap<String, Listener>,
    health_tasks: Vec<JoinHandle<()>>,
    generation: u64,
}

pub struct Shared {
    state: Mutex<State>,
    /// Current frontends by name, for the admin API.
    frontends: RwLock<Vec<Arc<FrontendRt>>>,
    stats: Mutex<HashMap<String, Arc<FrontendStats>>>,
    backends: Mutex<HashMap<(String, SocketAddr), Arc<BackendState>>>,
    admin_addr: Mutex<Option<SocketAddr>>,
    admin_task: Mutex<Option<JoinHandle<()>>>,
    /// Serialises reloads (SIGHUP and the admin API may race).
    reload_lock: tokio::sync::Mutex<()>,
    /// Where accepted connections are served (`None`: the accepting runtime).
    workers: Option<Arc<Workers>>,
}

/// Handle to a running load balancer (cheap to clone).
#[derive(Clone)]
pub struct Lb {
    shared: Arc<Shared>,
}

impl Lb {
    /// Binds every frontend and starts serving them; the admin API is started
    /// on top by [`Lb::start`](crate::run) (this module knows nothing of it).
    /// `workers`: the threads that serve accepted connections (`None`: the
    /// runtime this is called on).
    pub(crate) async fn start_frontends(config: Config, workers: Option<Arc<Workers>>) -> Result<Lb, LbError> {
        let lb = Lb {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    config: config.clone(),
                    listeners: HashMap::new(),
                    health_tasks: Vec::new(),
                    generation: 0,
                }),
                frontends: RwLock::new(Vec::new()),
                stats: Mutex::new(HashMap::new()),
                backends: Mutex::new(HashMap::new()),
                admin_addr: Mutex::new(None),
                admin_task: Mutex::new(None),
                reload_lock: tokio::sync::Mutex::new(()),
                workers,
            }),
        };
        lb.apply(config).await?;
        Ok(lb)
    }

    /// Records the admin API's address and task (stopped by [`Lb::shutdown`]).
    pub(crate) fn attach_admin(&self, local: SocketAddr, task: JoinHandle<()>) {
        *self.shared.admin_addr.lock() = Some(local);
        *self.shared.admin_task.lock() = Some(task);
    }

    /// Address a frontend actually listens on (useful with port 0).
    pub fn local_addr(&self, frontend: &str) -> Option<SocketAddr> {
        self.shared.state.lock().listeners.get(frontend).map(|l| l.local)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        *self.shared.admin_addr.lock()
    }

    pub fn frontends(&self) -> Vec<Arc<FrontendRt>> {
        self.shared.frontends.read().clone()
    }

    pub fn frontend(&self, name: &str) -> Option<Arc<FrontendRt>> {
        self.shared.frontends.read().iter().find(|f| f.cfg.name == name).cloned()
    }

    pub fn generation(&self) -> u64 {
        self.shared.state.lock().generation
    }

    /// Re-reads the file the configuration came from and applies it.
    pub async fn reload_from_source(&self) -> Result<(), LbError> {
        let source = self.shared.state.lock().config.source.clone();
        let Some(path) = source else {
            return Err(LbError::Reload("started from command-line flags, there is no file to re-read".into()));
        };
        let cfg = Config::load(&path).map_err(|e| LbError::Reload(e.to_string()))?;
        self.reload(cfg).await
    }

    /// Applies a new configuration; on any error the old one stays in force.
    pub async fn reload(&self, cfg: Config) -> Result<(), LbError> {
        let (old_admin, old_limits) = {
            let st = self.shared.state.lock();
            (st.config.admin, st.config.admin_limits)
        };
        if cfg.admin != old_admin {
            tracing::warn!("admin.listen changed; the admin address changes only on restart");
        }
        if cfg.admin_limits != old_limits {
            tracing::warn!(
                "admin limits changed; max_conns, request_header_ms, idle_ms and token_file of [admin] change only on restart"
            );
        }
        match self.apply(cfg).await {
            Ok(()) => {
                tracing::info!(generation = self.generation(), "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("reload refused, keeping the running configuration: {e}");
                Err(match e {
                    LbError::Reload(_) => e,
                    other => LbError::Reload(other.to_string()),
                })
            }
        }
    }

    /// Builds, binds and switches to `cfg`, in that order: any error before
    /// the switch leaves the running configuration untouched.
    async fn apply(&self, cfg: Config) -> Result<(), LbError> {
        let _serial = self.shared.reload_lock.lock().await;
        let generation = self.shared.state.lock().generation + 1;
        let new_fes = self.build_frontends(&cfg, generation);
        let fresh = self.bind_new_listeners(&new_fes).await?;
        let mut st = self.shared.state.lock();
        switch_listeners(&mut st, &new_fes, fresh, &self.shared.workers);
        restart_health_checks(&mut st, &new_fes, generation);
        self.forget_gone_backends(&new_fes);
        st.config = cfg;
        st.generation = generation;
        *self.shared.frontends.write() = new_fes;
        Ok(())
    }

    /// The frontends of `cfg`, reusing backend state and stats by name.
    fn build_frontends(&self, cfg: &Config, generation: u64) -> Vec<Arc<FrontendRt>> {
        let mut stats = self.shared.stats.lock();
        let mut backends = self.shared.backends.lock();
        let mut new_fes = Vec::with_capacity(cfg.frontends.len());
        for (fi, f) in cfg.frontends.iter().enumerate() {
            let st = stats.entry(f.name.clone()).or_default().clone();
            let bs: Vec<Arc<BackendState>> = f
                .backends
                .iter()
                .map(|b| {
                    let state = backends
                        .entry((f.name.clone(), b.addr))
                        .or_insert_with(|| {
                            let pool = Pool::new(f.pool_idle_per_backend, f.pool_idle_timeout);
                            Arc::new(BackendState::new(&f.name, b, pool))
                        })
                        .clone();
                    state.update(b, f.pool_idle_per_backend, f.pool_idle_timeout);
                    state
                })
                .collect();
            assert_eq!(bs.len(), f.backends.len());
            let seed = generation.wrapping_mul(0x9e37_79b9).wrapping_add(fi as u64);
            new_fes.push(Arc::new(FrontendRt::new(f.clone(), bs, st, seed)));
        }
        new_fes
    }

    /// Binds the listen addresses that are new (a frontend whose name and
    /// address stay keeps its socket); nothing changes if one fails.
    async fn bind_new_listeners(&self, new_fes: &[Arc<FrontendRt>]) -> Result<HashMap<String, TcpListener>, LbError> {
        let reusable: Vec<(String, SocketAddr)> = {
            let st = self.shared.state.lock();
            st.listeners.iter().map(|(n, l)| (n.clone(), l.configured)).collect()
        };
        let mut fresh = HashMap::new();
        for fe in new_fes {
            let name = &fe.cfg.name;
            if reusable.iter().any(|(n, a)| n == name && *a == fe.cfg.listen) {
                continue;
            }
            // An address another frontend of the old configuration still
            // holds fails here: moving it takes two reloads (docs/lb.md).
            let listener = TcpListener::bind(fe.cfg.listen)
                .await
                .map_err(|source| LbError::Bind { addr: fe.cfg.listen, source })?;
            fresh.insert(name.clone(), listener);
        }
        Ok(fresh)
    }

    /// Forgets the state of backends no frontend lists any more.
    fn forget_gone_backends(&self, new_fes: &[Arc<FrontendRt>]) {
        let keep: HashSet<(String, SocketAddr)> =
            new_fes.iter().flat_map(|f| f.backends.iter().map(|b| (f.cfg.name.clone(), b.addr))).collect();
        self.shared.backends.lock().retain(|k, _| keep.contains(k));
    }

    /// Stops accepting and stops health checks and the admin API.
    pub fn shutdown(&self) {
        let mut st = self.shared.state.lock();
        for (_, l) in st.listeners.drain() {
            l.task.abort();
        }
        for t in st.health_tasks.drain(..) {
            t.abort();
        }
        if let Some(t) = self.shared.admin_task.lock().take() {
            t.abort();
        }
    }
}

/// Points kept listeners at their new frontend, starts the fresh ones and
/// stops those of frontends that are gone.
fn switch_listeners(
    st: &mut State,
    new_fes: &[Arc<FrontendRt>],
    mut fresh: HashMap<String, TcpListener>,
    workers: &Option<Arc<Workers>>,
) {
    let mut old_listeners = std::mem::take(&mut st.listeners);
    for fe in new_fes {
        let name = fe.cfg.name.clone();
        if let Some(l) = old_listeners.remove(&name) {
            if l.configured == fe.cfg.listen && !fresh.contains_key(&name) {
                *l.cell.write() = fe.clone();
                st.listeners.insert(name, l);
                continue;
            }
            l.task.abort();
        }
        let Some(listener) = fresh.remove(&name) else {
            tracing::error!(frontend = %name, "listener missing after bind; frontend not served");
            continue;
        };
        let local = listener.local_addr().unwrap_or(fe.cfg.listen);
        let cell: FrontendCell = Arc::new(RwLock::new(fe.clone()));
        let task = tokio::spawn(accept_loop(listener, cell.clone(), workers.clone()));
        tracing::info!(frontend = %name, mode = %fe.cfg.mode, algorithm = %fe.cfg.algorithm, "listening on {local}");
        st.listeners.insert(name, Listener { configured: fe.cfg.listen, local, cell, task });
    }
    for (name, l) in old_listeners {
        tracing::info!(frontend = %name, "frontend removed; no longer listening on {}", l.local);
        l.task.abort();
    }
    assert!(st.listeners.len() <= new_fes.len(), "a listener outlived its frontend");
}

/// One health-check task per backend of every frontend that checks health;
/// the previous generation's tasks stop.
fn restart_health_checks(st: &mut State, new_fes: &[Arc<FrontendRt>], generation: u64) {
    for t in st.health_tasks.drain(..) {
        t.abort();
    }
    for (fi, fe) in new_fes.iter().enumerate() {
        if !fe.cfg.health.enabled {
            continue;
        }
        for (bi, b) in fe.backends.iter().enumerate() {
            let seed = generation ^ ((fi as u64) << 32) ^ bi as u64;
            let tls = fe.cfg.backend_tls.as_ref().map(|t| t.connector.clone());
            st.health_tasks.push(tokio::spawn(crate::health::run_checks(fe.cfg.health.clone(), tls, b.clone(), seed)));
        }
    }
}

async fn accept_loop(listener: TcpListener, cell: FrontendCell, workers: Option<Arc<Workers>>) {
    let Ok(local) = listener.local_addr() else {
        tracing::error!("listener has no local address; not serving it");
        return;
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS)).await;
                continue;
            }
        };
        let fe = cell.read().clone();
        let active = fe.stats.conns_active.fetch_add(1, Relaxed) + 1;
        if active > fe.cfg.max_conns {
            release_one(&fe.stats.conns_active, "frontend connections");
            fe.stats.conns_rejected.inc();
            tracing::debug!(frontend = %fe.cfg.name, client = %peer, "connection limit {} reached; closing", fe.cfg.max_conns);
            drop(stream);
            continue;
        }
        fe.stats.conns_total.inc();
        let cell = cell.clone();
        let Some(workers) = &workers else {
            tokio::spawn(async move {
                let stats = fe.stats.clone();
                serve_client(cell, fe, stream, peer, local).await;
                release_one(&stats.conns_active, "frontend connections");
            });
            continue;
        };
        // The socket moves to the worker's own epoll instance.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                release_one(&fe.stats.conns_active, "frontend connections");
                tracing::debug!(client = %peer, "could not hand the connection to a worker: {e}");
                continue;
            }
        };
        workers.spawn(async move {
            let stats = fe.stats.clone();
            match TcpStream::from_std(stream) {
                Ok(stream) => serve_client(cell, fe, stream, peer, local).await,
                Err(e) => tracing::debug!(client = %peer, "worker could not take the connection: {e}"),
            }
            release_one(&stats.conns_active, "frontend connections");
        });
    }
}

/// One accepted client connection: the TLS handshake if the frontend has
/// TLS (within `timeouts.first_byte_ms` of the accept), then its mode's proxy.
async fn serve_client(cell: FrontendCell, fe: Arc<FrontendRt>, stream: TcpStream, peer: SocketAddr, local: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let first_byte = match fe.cfg.timeouts.first_byte_ms {
        0 => None,
        ms => Some(tokio::time::Instant::now() + Duration::from_millis(ms)),
    };
    let Some(tls) = fe.cfg.tls.as_ref() else {
        return serve_stream(cell, fe, stream, ClientInfo::new(peer, local, false), first_byte).await;
    };
    let handshake = tls.acceptor.accept(stream);
    let done = match first_byte {
        None => handshake.await,
        Some(deadline) => match tokio::time::timeout_at(deadline, handshake).await {
            Ok(r) => r,
            Err(_) => {
                fe.stats.closed_first_byte_timeout.inc();
                tracing::debug!(frontend = %fe.cfg.name, client = %peer, "TLS handshake not done within first_byte_ms; closing");
                return;
            }
        },
    };
    match done {
        Ok(s) => serve_stream(cell, fe, s, ClientInfo::new(peer, local, true), first_byte).await,
        Err(e) => {
            fe.stats.tls_handshake_failures.inc();
            tracing::debug!(frontend = %fe.cfg.name, client = %peer, "TLS handshake failed: {e}");
        }
    }
}

/// Serves a (plain or TLS) client stream in the frontend's mode. HTTP goes
/// through the fast path, which hands anything it does not take (HTTP/2,
/// HTTP/1.0, chunked uploads, ...) to hyper.
async fn serve_stream<S>(
    cell: FrontendCell,
    fe: Arc<FrontendRt>,
    stream: S,
    client: ClientInfo,
    first_byte: Option<tokio::time::Instant>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match fe.cfg.mode {
        Mode::Http => crate::fast::serve(cell, fe, stream, Arc::new(client), first_byte).await,
        Mode::Tcp => crate::tcp::serve_connection(fe, stream, client.peer).await,
    }
}
