//! Starting a load balancer: the frontends ([`server`](crate::server)) and,
//! on top, the admin API ([`admin`](crate::admin)), which reads and reloads
//! the running [`Lb`]. Kept out of `server` so that `admin -> server` is the
//! only edge between the two.
//!
//! Also the process entry behind `rampart lb`, as a typed API: [`run`] takes
//! [`RunOptions`] and [`send_reload`] a [`ReloadTarget`], plain structs the
//! binary fills from its flags (`crates/cli/src/lb_flags.rs`); this crate
//! parses no command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::net::TcpListener;

use crate::config::{self, Config, Mode};
use crate::probe::{self, BodyLimit, Limits};
use crate::server::{Lb, LbError};
use crate::workers::Workers;

/// Most worker threads [`RunOptions::threads`] accepts.
pub const THREADS_MAX: usize = 256;
/// How long tasks still running at exit (connections being served) are
/// waited for before the process leaves.
pub const SHUTDOWN_GRACE_MS: u64 = 1_000;

/// A configuration given inline instead of in a file: one frontend.
#[derive(Clone, Debug)]
pub struct QuickStart {
    /// Address to accept clients on.
    pub listen: String,
    /// Comma-separated backend addresses (IP:port).
    pub backends: String,
    pub mode: Mode,
    /// Algorithm name, as in the configuration file.
    pub algorithm: String,
    /// Hash key for consistent_hash / maglev (default by mode when `None`).
    pub hash_key: Option<String>,
    /// Admin API address (off when `None`).
    pub admin: Option<String>,
}

/// Where the configuration comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// A TOML file, re-read on reload.
    File(PathBuf),
    /// Inline (reloads are refused: there is no file).
    QuickStart(QuickStart),
}

/// How to run a load balancer process.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub source: ConfigSource,
    /// Worker threads (1 runs everything on one thread); `None`: CPU count.
    pub threads: Option<usize>,
    /// Where to write the process id while running (removed on exit).
    pub pid_file: Option<PathBuf>,
    /// Validate the configuration, print a summary and return.
    pub check: bool,
}

/// Which running instance [`send_reload`] tells to re-read its configuration.
#[derive(Clone, Debug)]
pub enum ReloadTarget {
    /// Its pid file: it is sent SIGHUP.
    PidFile(PathBuf),
    /// Its admin address (IP:port): `POST /reload`.
    Admin(String),
}

/// The configuration `source` describes, validated.
pub fn load_config(source: &ConfigSource) -> Result<Config, LbError> {
    match source {
        ConfigSource::File(path) => Ok(Config::load(path)?),
        ConfigSource::QuickStart(q) => Ok(config::quick_start(
            &q.listen,
            &q.backends,
            q.mode,
            &q.algorithm,
            q.hash_key.as_deref(),
            q.admin.as_deref(),
        )?),
    }
}

/// Runs a load balancer until SIGTERM or SIGINT arrives (SIGHUP reloads).
pub fn run(opts: &RunOptions) -> Result<(), LbError> {
    let cfg = load_config(&opts.source)?;
    if opts.check {
        println!("configuration ok: {} frontend(s)", cfg.frontends.len());
        return Ok(());
    }
    let threads = opts.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > THREADS_MAX {
        return Err(LbError::Usage(format!("--threads must be between 1 and {THREADS_MAX}")));
    }
    // Every worker is a single-threaded runtime; this thread is worker 0
    // and the others take accepted connections from it (crate::workers).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let workers = if threads > 1 { Some(Arc::new(Workers::start(threads)?)) } else { None };
    let result = rt.block_on(async {
        let lb = Lb::start_with(cfg, workers.clone()).await?;
        if let Some(p) = &opts.pid_file {
            std::fs::write(p, format!("{}\n", std::process::id()))?;
        }
        let outcome = wait_for_signals(&lb).await;
        lb.shutdown();
        outcome
    });
    if let Some(p) = &opts.pid_file {
        let _ = std::fs::remove_file(p);
    }
    rt.shutdown_timeout(Duration::from_millis(SHUTDOWN_GRACE_MS));
    if let Some(w) = workers {
        w.stop();
    }
    result
}

#[cfg(unix)]
async fn wait_for_signals(lb: &Lb) -> Result<(), LbError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: exiting"); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT: exiting"); return Ok(()); }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                // Errors are logged by reload; the old configuration stays.
                let _ = lb.reload_from_source().await;
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_lb: &Lb) -> Result<(), LbError> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}

impl Lb {
    /// Binds every frontend and the admin address and starts serving.
    /// Must be called inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Lb, LbError> {
        Lb::start_with(config, None).await
    }

    /// [`Lb::start`], with accepted connections served by `workers` (`None`:
    /// on the calling runtime).
    pub async fn start_with(config: Config, workers: Option<Arc<Workers>>) -> Result<Lb, LbError> {
        let (admin, limits) = (config.admin, config.admin_limits);
        let lb = Lb::start_frontends(config, workers).await?;
        if let Some(addr) = admin {
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(source) => {
                    lb.shutdown();
                    return Err(LbError::Bind { addr, source });
                }
            };
            let local = match listener.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    lb.shutdown();
                    return Err(e.into());
                }
            };
            let task = tokio::spawn(crate::admin::serve(listener, lb.clone(), limits));
            lb.attach_admin(local, task);
            tracing::info!("admin API on http://{local}");
        }
        Ok(lb)
    }
}

/// Largest admin answer body read by [`send_reload`] to an admin address.
pub const RELOAD_REPLY_BYTES_MAX: usize = 64 * 1024;
/// Time allowed to connect to the admin address.
pub const RELOAD_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Time allowed for the whole reload exchange (a reload may bind listeners).
pub const RELOAD_TIMEOUT_MS: u64 = 30_000;

/// Tells a running instance to re-read its configuration file.
pub fn send_reload(target: &ReloadTarget) -> Result<(), LbError> {
    let addr = match target {
        ReloadTarget::PidFile(p) => return signal_reload(p),
        ReloadTarget::Admin(addr) => addr,
    };
    let sock: std::net::SocketAddr =
        addr.parse().map_err(|_| LbError::Usage(format!("`{addr}` is not an IP:port address")))?;
    let limits = Limits {
        connect: Duration::from_millis(RELOAD_CONNECT_TIMEOUT_MS),
        total: Duration::from_millis(RELOAD_TIMEOUT_MS),
        body: BodyLimit::Max(RELOAD_REPLY_BYTES_MAX),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, body) = rt
        .block_on(probe::exchange(Method::POST, sock, "/reload", "rampart-lb-reload", limits))
        .map_err(|e| match e {
            // Not a refusal: nothing answered. Reported as before the probe
            // client existed (the operating system's error).
            probe::ProbeError::Connect { source, .. } => LbError::Io(source),
            e @ probe::ProbeError::ConnectTimeout(_) => {
                LbError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string()))
            }
            other => LbError::Reload(other.to_string()),
        })?;
    let body = String::from_utf8_lossy(&body);
    let body = body.trim();
    if status == StatusCode::OK {
        println!("{body}");
        Ok(())
    } else {
        Err(LbError::Reload(body.to_string()))
    }
}

fn signal_reload(p: &std::path::Path) -> Result<(), LbError> {
    let text = std::fs::read_to_string(p).map_err(|e| LbError::Usage(format!("{}: {e}", p.display())))?;
    let pid: u32 = text
        .trim()
        .parse()
        .map_err(|_| LbError::Usage(format!("{}: `{}` is not a process id", p.display(), text.trim())))?;
    // The standard `kill` utility keeps this crate free of unsafe FFI.
    let status = std::process::Command::new("kill").arg("-HUP").arg(pid.to_string()).status()?;
    if !status.success() {
        return Err(LbError::Usage(format!("could not signal process {pid} (kill exited with {status})")));
    }
    println!("sent SIGHUP to {pid}; the outcome is in its log");
    Ok(())
}
