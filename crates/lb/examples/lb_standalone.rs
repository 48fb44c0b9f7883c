//! `rampart lb` without the rest of the binary, for profiling the load
//! balancer alone: `cargo run --release -p rampart-lb --example lb_standalone -- --listen ... --backends ...`.
//! Same flags as `rampart lb` (no log output: the binary sets up tracing).

use clap::Parser;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    args: rampart_lb::cli::LbArgs,
}

fn main() -> std::process::ExitCode {
    match rampart_lb::cli::run(Cmd::parse().args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart lb: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
