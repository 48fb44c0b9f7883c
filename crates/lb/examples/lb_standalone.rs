//! `rampart lb` without the rest of the binary, for profiling the load
//! balancer alone: `cargo run --release -p rampart-lb --example lb_standalone -- --listen ... --backends ...`.
//! Takes `--config FILE` or `--listen ADDR --backends A,B` with `--mode`,
//! `--algorithm`, `--hash-key`, `--admin`, `--threads`, `--pid-file`,
//! `--check` (no log output: the binary sets up tracing).

use std::path::PathBuf;

use rampart_lb::run::{ConfigSource, QuickStart, RunOptions};

fn parse(mut args: impl Iterator<Item = String>) -> Result<RunOptions, String> {
    let (mut config, mut listen, mut backends, mut hash_key, mut admin, mut pid_file) =
        (None, None, None, None, None, None);
    let (mut mode, mut algorithm, mut threads, mut check) =
        ("http".to_string(), "round_robin".to_string(), None, false);
    while let Some(flag) = args.next() {
        if flag == "--check" {
            check = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--config" => config = Some(PathBuf::from(value)),
            "--listen" => listen = Some(value),
            "--backends" => backends = Some(value),
            "--mode" => mode = value,
            "--algorithm" => algorithm = value,
            "--hash-key" => hash_key = Some(value),
            "--admin" => admin = Some(value),
            "--pid-file" => pid_file = Some(PathBuf::from(value)),
            "--threads" => threads = Some(value.parse().map_err(|_| format!("--threads: `{value}` is not a number"))?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let source = match (config, listen, backends) {
        (Some(path), None, None) => ConfigSource::File(path),
        (None, Some(listen), Some(backends)) => {
            let mode = mode.parse().map_err(|e| format!("--mode: {e}"))?;
            ConfigSource::QuickStart(QuickStart { listen, backends, mode, algorithm, hash_key, admin })
        }
        _ => return Err("give --config FILE, or --listen ADDR and --backends ADDR,ADDR,...".into()),
    };
    Ok(RunOptions { source, threads, pid_file, check })
}

fn main() -> std::process::ExitCode {
    let result = parse(std::env::args().skip(1)).and_then(|o| rampart_lb::run::run(&o).map_err(|e| e.to_string()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart lb: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
