//! End-to-end tests of TCP (L4) mode.

mod common;

use std::collections::HashMap;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HC_OFF: &str = "[frontend.health]\nenabled = false\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_passes_through() {
    let echo = echo_server().await;
    let lb = start_lb(&one_frontend("tcp", "round_robin", &[echo], HC_OFF)).await;
    let mut s = TcpStream::connect(lb.local_addr("web").unwrap()).await.unwrap();
    s.write_all(b"hello ").await.unwrap();
    s.write_all(b"world").await.unwrap();
    // Close our sending side; the echo server sees EOF only if the LB passes
    // the half-close on, and only then closes its side.
    s.shutdown().await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut out)).await.expect("session ended").unwrap();
    assert_eq!(out, "hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_rotate_and_dead_backend_is_skipped() {
    let b1 = Backend::start("b1").await;
    let b2 = Backend::start("b2").await;
    let dead = dead_addr().await;
    let extra = format!("{HC_OFF}[frontend.ejection]\nenabled = false\n");
    let lb = start_lb(&one_frontend("tcp", "round_robin", &[b1.addr, dead, b2.addr], &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..12 {
        let reply = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
        let body = reply.rsplit("\r\n\r\n").next().unwrap().to_string();
        *seen.entry(body).or_default() += 1;
    }
    // Round robin b1, dead, b2, ...: the dead backend's turn is retried on
    // the next one (b2), and the rotation goes on from there (back to b1).
    assert_eq!(seen.get("ok from b1\n"), Some(&6), "{seen:?}");
    assert_eq!(seen.get("ok from b2\n"), Some(&6), "{seen:?}");
    let s = stats(&lb).await;
    assert_eq!(s["frontends"][0]["retries"], 6, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_closes_and_idle_sessions_end() {
    let dead = dead_addr().await;
    let extra = format!("{HC_OFF}[frontend.retries]\nmax_retries = 0\n");
    let lb = start_lb(&one_frontend("tcp", "round_robin", &[dead], &extra)).await;
    let reply = raw_exchange(lb.local_addr("web").unwrap(), b"hello").await;
    assert_eq!(reply, "");
    let s = stats(&lb).await;
    assert_eq!(s["frontends"][0]["no_backend"], 1);

    let echo = echo_server().await;
    let extra = format!("{HC_OFF}[frontend.timeouts]\nidle_ms = 200\n");
    let lb = start_lb(&one_frontend("tcp", "round_robin", &[echo], &extra)).await;
    let mut s = TcpStream::connect(lb.local_addr("web").unwrap()).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    // Nothing more is sent: the idle timeout ends the session.
    let mut rest = Vec::new();
    let r = tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "idle TCP session not closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_session_limit_in_tcp_mode() {
    let echo = echo_server().await;
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[frontend]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nmode = \"tcp\"\n{HC_OFF}\
         [[frontend.backend]]\naddr = \"{echo}\"\nmax_conns = 1\n"
    );
    let lb = start_lb(&toml).await;
    let addr = lb.local_addr("web").unwrap();
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(b"one").await.unwrap();
    let mut buf = [0u8; 3];
    first.read_exact(&mut buf).await.unwrap();
    // The only backend is at its limit: the second session is refused.
    assert_eq!(raw_exchange(addr, b"two").await, "");
    assert_eq!(stats(&lb).await["frontends"][0]["no_backend"], 1);
    // Once the first session ends, there is room again.
    drop(first);
    wait_until("first session finished", || async { backend_stat(&stats(&lb).await, echo)["active"] == 0 }).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(b"three").await.unwrap();
    third.shutdown().await.unwrap();
    let mut out = String::new();
    third.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "three");
}
