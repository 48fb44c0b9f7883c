//! `rampart lb`: command-line flags and the entry point.
//!
//! ```text
//! rampart lb --listen 127.0.0.1:8080 --backends 127.0.0.1:9001,127.0.0.1:9002 \
//!            --mode http --algorithm round_robin [--threads N] [--admin 127.0.0.1:9900]
//! rampart lb --config lb.toml [--pid-file /run/rampart-lb.pid]
//! rampart lb --config lb.toml --check          # validate and exit
//! rampart lb reload --pid-file /run/rampart-lb.pid   # sends SIGHUP
//! rampart lb reload --admin 127.0.0.1:9900           # POST /reload
//! ```

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, Config, Mode};
use crate::server::{Lb, LbError};

/// Most worker threads `--threads` accepts.
pub const THREADS_MAX: usize = 256;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LbArgs {
    #[command(subcommand)]
    pub action: Option<LbAction>,
    /// TOML configuration file (frontends, backends, health, ejection, retries, admin).
    #[arg(long, conflicts_with_all = ["listen", "backends"])]
    pub config: Option<PathBuf>,
    /// Quick start: address to accept clients on.
    #[arg(long, requires = "backends")]
    pub listen: Option<String>,
    /// Quick start: comma-separated backend addresses (IP:port).
    #[arg(long, requires = "listen")]
    pub backends: Option<String>,
    /// Quick start: http (L7) or tcp (L4).
    #[arg(long, default_value = "http")]
    pub mode: Mode,
    /// Quick start: round_robin, weighted_round_robin, least_connections,
    /// consistent_hash, maglev, random or p2c.
    #[arg(long, default_value = "round_robin")]
    pub algorithm: String,
    /// Quick start: hash key for consistent_hash / maglev: client_ip, uri,
    /// header:NAME or cookie:NAME (default: uri in http mode, client_ip in tcp mode).
    #[arg(long)]
    pub hash_key: Option<String>,
    /// Quick start: admin API address (off unless given).
    #[arg(long)]
    pub admin: Option<String>,
    /// Worker threads (1 runs everything on one thread); default: CPU count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the process id here (for `rampart lb reload --pid-file`).
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum LbAction {
    /// Tell a running `rampart lb` to re-read its configuration file.
    Reload {
        /// The running instance's pid file (sends it SIGHUP).
        #[arg(long, conflicts_with = "admin")]
        pid_file: Option<PathBuf>,
        /// The running instance's admin address (POST /reload).
        #[arg(long)]
        admin: Option<String>,
    },
}

fn load_config(args: &LbArgs) -> Result<Config, LbError> {
    if let Some(path) = &args.config {
        return Ok(Config::load(path)?);
    }
    match (&args.listen, &args.backends) {
        (Some(listen), Some(backends)) => Ok(config::quick_start(
            listen,
            backends,
            args.mode,
            &args.algorithm,
            args.hash_key.as_deref(),
            args.admin.as_deref(),
        )?),
        _ => Err(LbError::Usage("give --config FILE, or --listen ADDR and --backends ADDR,ADDR,...".into())),
    }
}

/// Runs `rampart lb`; returns when SIGTERM or SIGINT arrives.
pub fn run(args: LbArgs) -> Result<(), LbError> {
    if let Some(LbAction::Reload { pid_file, admin }) = &args.action {
        return send_reload(pid_file.as_ref(), admin.as_deref());
    }
    let cfg = load_config(&args)?;
    if args.check {
        println!("configuration ok: {} frontend(s)", cfg.frontends.len());
        return Ok(());
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > THREADS_MAX {
        return Err(LbError::Usage(format!("--threads must be between 1 and {THREADS_MAX}")));
    }
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    let result = rt.block_on(async {
        let lb = Lb::start(cfg).await?;
        if let Some(p) = &args.pid_file {
            std::fs::write(p, format!("{}\n", std::process::id()))?;
        }
        let outcome = wait_for_signals(&lb).await;
        lb.shutdown();
        outcome
    });
    if let Some(p) = &args.pid_file {
        let _ = std::fs::remove_file(p);
    }
    rt.shutdown_timeout(Duration::from_secs(1));
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

/// Largest admin answer read by `rampart lb reload --admin`.
const RELOAD_REPLY_BYTES_MAX: u64 = 64 * 1024;

fn send_reload(pid_file: Option<&PathBuf>, admin: Option<&str>) -> Result<(), LbError> {
    if let Some(p) = pid_file {
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
        return Ok(());
    }
    let Some(addr) = admin else {
        return Err(LbError::Usage("rampart lb reload needs --pid-file FILE or --admin ADDR".into()));
    };
    let sock: std::net::SocketAddr =
        addr.parse().map_err(|_| LbError::Usage(format!("`{addr}` is not an IP:port address")))?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "POST /reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut reply = String::new();
    s.take(RELOAD_REPLY_BYTES_MAX).read_to_string(&mut reply)?;
    let ok = reply.starts_with("HTTP/1.1 200");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    if ok {
        println!("{body}");
        Ok(())
    } else {
        Err(LbError::Reload(body.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The shape the `rampart` binary gives it: `rampart lb ...`.
    #[derive(Parser, Debug)]
    struct Bin {
        #[command(subcommand)]
        cmd: BinCmd,
    }

    #[derive(clap::Subcommand, Debug)]
    enum BinCmd {
        Lb(LbArgs),
    }

    fn parse(args: &[&str]) -> Result<LbArgs, clap::Error> {
        let mut v = vec!["rampart", "lb"];
        v.extend_from_slice(args);
        Bin::try_parse_from(v).map(|b| match b.cmd {
            BinCmd::Lb(a) => a,
        })
    }

    #[test]
    fn command_line_shapes() {
        Bin::command().debug_assert();
        // Exactly what the shared benchmark runs.
        let a = parse(&[
            "--listen",
            "127.0.0.1:18080",
            "--backends",
            "127.0.0.1:18101,127.0.0.1:18102,127.0.0.1:18103",
            "--mode",
            "tcp",
            "--algorithm",
            "consistent_hash",
            "--threads",
            "1",
        ])
        .unwrap();
        assert_eq!((a.mode, a.threads, a.algorithm.as_str()), (Mode::Tcp, Some(1), "consistent_hash"));
        let cfg = load_config(&a).unwrap();
        assert_eq!(cfg.frontends[0].backends.len(), 3);

        let a = parse(&["reload", "--pid-file", "/run/lb.pid"]).unwrap();
        assert!(matches!(a.action, Some(LbAction::Reload { pid_file: Some(_), admin: None })));
        assert!(parse(&["--config", "lb.toml"]).unwrap().config.is_some());
        assert!(parse(&["--mode", "udp", "--listen", "127.0.0.1:1", "--backends", "127.0.0.1:2"]).is_err());
        assert!(parse(&["--config", "lb.toml", "--listen", "127.0.0.1:1", "--backends", "127.0.0.1:2"]).is_err());
        assert!(parse(&["--listen", "127.0.0.1:1"]).is_err(), "--listen without --backends");
    }
}
