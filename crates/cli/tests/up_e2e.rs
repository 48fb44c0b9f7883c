//! `rampart up` for real: three nodes and a load balancer as child
//! processes; killing any node leaves both load-balanced addresses working,
//! and SIGTERM stops everything.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_request, Method, BIN};
use rampart_resp::client::RespClient;
use rampart_resp::Value;

/// 31 consecutive free ports below the ephemeral range.
fn free_block() -> u16 {
    let start = 20_000 + (std::process::id() % 300) as u16 * 40;
    for base in (start..31_000).step_by(40).chain((20_000..start).step_by(40)) {
        if (0..31).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no block of 31 free ports");
}

async fn resp_get(addr: &str, key: &str) -> Option<Value> {
    let mut c = RespClient::connect(addr).await.ok()?.with_read_timeout(Duration::from_secs(5));
    c.cmd_str(&["GET", key]).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_survives_killing_any_node_and_stops_cleanly() {
    up_survives_a_kill(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_in_multi_master_mode_survives_killing_any_node_and_stops_cleanly() {
    up_survives_a_kill(&["--replication", "multi-master"]).await;
}

/// `rampart up` with `extra` arguments: ready, a node killed, both load
/// balanced addresses still serving reads and writes, SIGTERM stops it all.
async fn up_survives_a_kill(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let base = free_block();
    let mut up = Command::new(BIN)
        .args(["up", "--base-port", &base.to_string()])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Wait for the ready line (the process prints it once a leader exists).
    let stdout = up.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("up never got ready");
        lines.push(line.clone());
        if line.starts_with("cluster ready") {
            break;
        }
    }
    assert_eq!(lines.iter().filter(|l| l.contains(" ready: RESP")).count(), 4, "{lines:?}");
    let lb_resp = format!("127.0.0.1:{base}");
    let lb_http = format!("http://127.0.0.1:{}", base + 10);
    let mut c = RespClient::connect(&lb_resp).await.unwrap().with_read_timeout(Duration::from_secs(10));
    assert_eq!(c.cmd_str(&["SET", "k", "v"]).await.unwrap(), Value::ok());

    // Kill one node (chosen per run) for real; the other two keep a
    // majority, and both load-balanced addresses must keep serving.
    let node = 1 + (std::process::id() % 3) as u16;
    let mut nc = RespClient::connect(format!("127.0.0.1:{}", base + node)).await.unwrap();
    let info = match nc.cmd_str(&["INFO", "server"]).await.unwrap() {
        Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("{other:?}"),
    };
    let pid: i32 = info.lines().find_map(|l| l.strip_prefix("process_id:")).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) of a process `up` started for this test.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let killed_at = format!("127.0.0.1:{}", base + node);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&killed_at).is_ok() {
        assert!(Instant::now() < deadline, "node {node} still answers after SIGKILL");
        std::thread::sleep(Duration::from_millis(10));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let via_resp = resp_get(&lb_resp, "k").await;
        let via_http = http_request(Method::GET, &format!("{lb_http}/v1/kv/k"), "", Duration::from_secs(5)).await;
        let http_ok = matches!(via_http, Ok(r) if r.status == 200 && r.body == "v");
        if via_resp == Some(Value::bulk("v")) && http_ok {
            break;
        }
        assert!(Instant::now() < deadline, "load balancer stopped serving after node {node} died: {via_resp:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Writes through the LB keep working.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = RespClient::connect(&lb_resp).await.unwrap().with_read_timeout(Duration::from_secs(10));
        if c.cmd_str(&["SET", "after", "1"]).await.ok() == Some(Value::ok()) {
            break;
        }
        assert!(Instant::now() < deadline, "no write through the load balancer after the kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGTERM: up stops its children and exits.
    // SAFETY: as above, our own child.
    unsafe {
        libc::kill(up.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = up.try_wait().unwrap() {
            assert!(status.success(), "up exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "up did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing listens any more on the load balancer's address.
    assert!(std::net::TcpStream::connect(&lb_resp).is_err(), "load balancer still running after up exited");
}
