//! The `rampart` binary: composes the library crates into subcommands and
//! does nothing else of its own beyond argument parsing and process wiring.

mod certs;
mod ctl;
mod hold;
mod lb_flags;
mod node;
mod server_config;
mod up;
mod uplb;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "rampart",
    version,
    about = "High availability toolkit: replicated KV store, load balancer, failure detection"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one storage node.
    Server(Box<server_config::ServerArgs>),
    /// Run the load balancer.
    Lb(lb_flags::LbArgs),
    /// Start a local three-node cluster plus a load balancer.
    Up(up::UpArgs),
    /// Make a development CA and TLS certificates for nodes and client listeners.
    Certs(certs::CertsArgs),
    /// Read and write keys over HTTP.
    Kv(ctl::KvArgs),
    /// Inspect and change cluster membership over HTTP.
    Cluster(ctl::ClusterArgs),
    /// Run a command while holding a lock (leader mode): `rampart lock NAME -- CMD ARGS...`.
    /// CMD gets the fencing token in RAMPART_FENCING_TOKEN and is stopped if the lock is lost;
    /// the exit status is CMD's.
    Lock(hold::HoldArgs),
    /// Run a command only while this process leads an election (leader mode):
    /// `rampart elect NAME [--value V] -- CMD ARGS...`. Like `lock`, with the leader's value
    /// published at `GET /v1/election/NAME`.
    Elect(hold::HoldArgs),
    /// Print a stopped node's log, markers and keys (offline, for debugging).
    #[command(hide = true)]
    DebugDump { data_dir: std::path::PathBuf },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Server(args) => {
            init_tracing();
            node::run_blocking(*args)
        }
        Cmd::Lb(args) => {
            init_tracing();
            lb_flags::run(args).map_err(anyhow::Error::from)
        }
        Cmd::Up(args) => {
            init_tracing();
            up::run(args)
        }
        Cmd::Certs(args) => certs::run(args),
        Cmd::Kv(args) => ctl::run_kv(args),
        Cmd::Cluster(args) => ctl::run_cluster(args),
        Cmd::Lock(args) => return exit_with(hold::run(hold::What::Lock, args)),
        Cmd::Elect(args) => return exit_with(hold::run(hold::What::Election, args)),
        Cmd::DebugDump { data_dir } => node::debug_dump(&data_dir),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The exit status of a command that passes one on (`lock`, `elect`).
fn exit_with(result: anyhow::Result<u8>) -> std::process::ExitCode {
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RAMPART_LOG").unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
