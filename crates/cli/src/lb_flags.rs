//! `rampart lb` flags: the clap definitions, turned into the load balancer's
//! typed entry API ([`rampart_lb::run`]). Every flag lives here; the library
//! takes plain structs.
//!
//! ```text
//! rampart lb --listen 127.0.0.1:8080 --backends 127.0.0.1:9001,127.0.0.1:9002 \
//!            --mode http --algorithm round_robin [--threads N] [--admin 127.0.0.1:9900]
//! rampart lb --config lb.toml [--pid-file /run/rampart-lb.pid]
//! rampart lb --config lb.toml --check          # validate and exit
//! rampart lb reload --pid-file /run/rampart-lb.pid   # sends SIGHUP
//! rampart lb reload --admin 127.0.0.1:9900           # POST /reload
//! ```

use std::path::PathBuf;

use rampart_lb::config::Mode;
use rampart_lb::run::{self, ConfigSource, QuickStart, ReloadTarget, RunOptions};
use rampart_lb::LbError;

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

/// What the flags ask for.
enum Plan {
    Run(RunOptions),
    Reload(ReloadTarget),
}

fn plan(args: LbArgs) -> Result<Plan, LbError> {
    if let Some(LbAction::Reload { pid_file, admin }) = args.action {
        return match (pid_file, admin) {
            (Some(p), _) => Ok(Plan::Reload(ReloadTarget::PidFile(p))),
            (None, Some(a)) => Ok(Plan::Reload(ReloadTarget::Admin(a))),
            (None, None) => Err(LbError::Usage("rampart lb reload needs --pid-file FILE or --admin ADDR".into())),
        };
    }
    let source = match (args.config, args.listen, args.backends) {
        (Some(path), _, _) => ConfigSource::File(path),
        (None, Some(listen), Some(backends)) => ConfigSource::QuickStart(QuickStart {
            listen,
            backends,
            mode: args.mode,
            algorithm: args.algorithm,
            hash_key: args.hash_key,
            admin: args.admin,
        }),
        _ => return Err(LbError::Usage("give --config FILE, or --listen ADDR and --backends ADDR,ADDR,...".into())),
    };
    // `--threads` is checked by `run` after the configuration, as it always
    // was: `--check` ignores it, and a broken file is reported first.
    Ok(Plan::Run(RunOptions { source, threads: args.threads, pid_file: args.pid_file, check: args.check }))
}

/// Runs `rampart lb`; returns when SIGTERM or SIGINT arrives.
pub fn run(args: LbArgs) -> Result<(), LbError> {
    match plan(args)? {
        Plan::Run(opts) => run::run(&opts),
        Plan::Reload(target) => run::send_reload(&target),
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
        let Ok(Plan::Run(opts)) = plan(a) else { panic!("not a run") };
        let cfg = run::load_config(&opts.source).unwrap();
        assert_eq!(cfg.frontends[0].backends.len(), 3);
        assert_eq!(opts.threads, Some(1));

        let a = parse(&["reload", "--pid-file", "/run/lb.pid"]).unwrap();
        assert!(matches!(a.action, Some(LbAction::Reload { pid_file: Some(_), admin: None })));
        assert!(
            matches!(plan(a), Ok(Plan::Reload(ReloadTarget::PidFile(p))) if p == std::path::Path::new("/run/lb.pid"))
        );
        let a = parse(&["reload", "--admin", "127.0.0.1:9900"]).unwrap();
        assert!(matches!(plan(a), Ok(Plan::Reload(ReloadTarget::Admin(a))) if a == "127.0.0.1:9900"));
        assert!(parse(&["--config", "lb.toml"]).unwrap().config.is_some());
        assert!(parse(&["--mode", "udp", "--listen", "127.0.0.1:1", "--backends", "127.0.0.1:2"]).is_err());
        assert!(parse(&["--config", "lb.toml", "--listen", "127.0.0.1:1", "--backends", "127.0.0.1:2"]).is_err());
        assert!(parse(&["--listen", "127.0.0.1:1"]).is_err(), "--listen without --backends");
        assert!(parse(&["reload", "--pid-file", "a", "--admin", "127.0.0.1:1"]).is_err());
    }

    #[test]
    fn bad_command_lines_are_clear_errors() {
        let run_with = |args: &[&str]| run(parse(args).expect("parses")).unwrap_err().to_string();
        let e = run_with(&[]);
        assert!(e.contains("--config") && e.contains("--listen"), "{e}");
        let e = run_with(&["--listen", "127.0.0.1:0", "--backends", "127.0.0.1:1", "--algorithm", "fastest"]);
        assert!(e.contains("(command line)") && e.contains("algorithm"), "{e}");
        let e = run_with(&["--config", "/nonexistent/lb.toml", "--check"]);
        assert!(e.contains("/nonexistent/lb.toml"), "{e}");
        let e = run_with(&["reload"]);
        assert!(e.contains("--pid-file") && e.contains("--admin"), "{e}");
        let e = run_with(&["--config", "/nonexistent/lb.toml", "--threads", "0"]);
        assert!(e.contains("/nonexistent/lb.toml"), "the file is reported before --threads: {e}");
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("lb.toml");
        std::fs::write(
            &good,
            "[[frontend]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n[[frontend.backend]]\naddr = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let good = good.to_str().unwrap();
        let e = run_with(&["--config", good, "--threads", "0"]);
        assert!(e.contains("--threads must be between 1 and 256"), "{e}");
        let e = run_with(&["--config", good, "--threads", "257"]);
        assert!(e.contains("--threads must be between 1 and 256"), "{e}");
        // `--check` validates the configuration only, as before the flags moved here.
        run(parse(&["--config", good, "--check", "--threads", "0"]).unwrap()).expect("check ignores --threads");
        // Nothing listens: the operating system's error, not a refused reload.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let e = run_with(&["reload", "--admin", &dead]);
        assert!(e.contains("refused") && !e.contains("reload refused"), "{e}");
        let e = run_with(&["reload", "--admin", "not-an-address"]);
        assert!(e.contains("not an IP:port"), "{e}");
    }
}
