//! `rampart lb` as the binary runs it: `run::run` with a pid file, SIGHUP
//! reloads (via `run::send_reload`, behind `rampart lb reload --pid-file`), a broken reload refused, and
//! SIGTERM ending it. Alone in its own test binary because it signals the
//! test process itself.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use rampart_lb::run::{run, send_reload, ConfigSource, QuickStart, ReloadTarget, RunOptions};

fn opts(source: ConfigSource, pid_file: Option<PathBuf>) -> RunOptions {
    RunOptions { source, threads: Some(1), pid_file, check: false }
}

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn wait_blocking(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for: {what}");
}

#[test]
fn run_reload_by_sighup_and_exit_on_sigterm() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (b1, b2) = rt.block_on(async { (Backend::start("b1").await, Backend::start("b2").await) });
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lb.toml");
    let pid = dir.path().join("lb.pid");
    let text = |b: std::net::SocketAddr| {
        format!("[[frontend]]\nname = \"web\"\nlisten = \"{listen}\"\n[frontend.health]\nenabled = false\n[[frontend.backend]]\naddr = \"{b}\"\n")
    };
    std::fs::write(&cfg, text(b1.addr)).unwrap();
    let a = opts(ConfigSource::File(cfg.clone()), Some(pid.clone()));
    let lb = std::thread::spawn(move || run(&a));
    wait_blocking("pid file", || pid.exists());
    let body =
        |rt: &tokio::runtime::Runtime| rt.block_on(async { get(listen, "/").await.map(|r| r.1).unwrap_or_default() });
    assert_eq!(body(&rt), "ok from b1\n");

    std::fs::write(&cfg, text(b2.addr)).unwrap();
    let reload = |pid: &PathBuf| send_reload(&ReloadTarget::PidFile(pid.clone()));
    reload(&pid).expect("reload sends SIGHUP");
    wait_blocking("traffic on b2 after SIGHUP", || body(&rt) == "ok from b2\n");

    std::fs::write(&cfg, "[[frontend]]\nname = \"web\"\n").unwrap();
    reload(&pid).expect("signal sent");
    // The broken file is refused: b2 keeps serving. Let a few requests through
    // after the signal was delivered (each one is served after the reload attempt
    // was handled or not; both must show b2).
    for _ in 0..20 {
        assert_eq!(body(&rt), "ok from b2\n");
    }

    let status = std::process::Command::new("kill").arg("-TERM").arg(std::process::id().to_string()).status().unwrap();
    assert!(status.success());
    wait_blocking("lb exits on SIGTERM", || lb.is_finished());
    lb.join().unwrap().expect("clean exit");
    assert!(!pid.exists(), "pid file removed on exit");
    assert!(rt.block_on(async { get(listen, "/").await }).is_err(), "still listening after exit");
}

#[test]
fn bad_options_are_clear_errors() {
    let quick = |algorithm: &str, threads| RunOptions {
        source: ConfigSource::QuickStart(QuickStart {
            listen: "127.0.0.1:0".into(),
            backends: "127.0.0.1:1".into(),
            mode: rampart_lb::config::Mode::Http,
            algorithm: algorithm.into(),
            hash_key: None,
            admin: None,
        }),
        threads,
        pid_file: None,
        check: false,
    };
    let e = run(&quick("fastest", Some(1))).unwrap_err().to_string();
    assert!(e.contains("(command line)") && e.contains("algorithm"), "{e}");
    let e = run(&quick("round_robin", Some(0))).unwrap_err().to_string();
    assert!(e.contains("between 1 and 256"), "{e}");
    let mut a = opts(ConfigSource::File("/nonexistent/lb.toml".into()), None);
    a.check = true;
    let e = run(&a).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/lb.toml"), "{e}");
    let e = send_reload(&ReloadTarget::PidFile("/nonexistent/lb.pid".into())).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/lb.pid"), "{e}");
    let e = send_reload(&ReloadTarget::Admin("nowhere".into())).unwrap_err().to_string();
    assert!(e.contains("not an IP:port"), "{e}");
}
