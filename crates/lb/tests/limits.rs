//! Per-listener limits: the first-byte, request-header and idle timeouts and
//! the connection cap, each closing what it must, leaving the rest served,
//! and counted in /stats and /metrics.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HC_OFF: &str = "[frontend.health]\nenabled = false\n";

/// Reads until the balancer closes the connection (or `DEADLINE`: then the
/// connection was kept, which the caller reports).
async fn closed_by_peer(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf)).await.ok().map(|_| buf)
}

fn closed(s: &serde_json::Value, reason: &str) -> u64 {
    s["frontends"][0]["conns_closed"][reason].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_one_byte_is_dropped_after_the_header_timeout() {
    let b = Backend::start("b1").await;
    for http2 in [false, true] {
        // Only the header timeout can act: the others are long.
        let extra =
            format!("http2 = {http2}\n{HC_OFF}[frontend.timeouts]\nfirst_byte_ms = 600000\nrequest_header_ms = 200\nidle_ms = 600000\n");
        let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
        let addr = lb.local_addr("web").unwrap();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"G").await.unwrap();
        // A well-behaved client on the same listener is served meanwhile.
        assert_eq!(get(addr, "/").await.unwrap().0, 200);
        let got = closed_by_peer(&mut slow).await.expect("the one-byte client was not dropped");
        assert!(got.is_empty(), "answered {:?}", String::from_utf8_lossy(&got));
        let s = stats(&lb).await;
        assert_eq!(closed(&s, "header_timeout"), 1, "http2 = {http2}: {s}");
        assert_eq!(closed(&s, "first_byte_timeout") + closed(&s, "idle_timeout"), 0, "http2 = {http2}: {s}");
        wait_until("the dropped connection is no longer open", || async {
            stats(&lb).await["frontends"][0]["conns_active"] == 0
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_client_cannot_stretch_the_header_timeout() {
    let b = Backend::start("b1").await;
    let extra = format!("{HC_OFF}[frontend.timeouts]\nrequest_header_ms = 300\nidle_ms = 600000\n");
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    let mut s = TcpStream::connect(lb.local_addr("web").unwrap()).await.unwrap();
    // One byte every 50 ms: each read is quick, the head never completes.
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut cut = false;
    for byte in head.iter() {
        if s.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut one = [0u8; 1];
        match tokio::time::timeout(std::time::Duration::from_millis(50), s.read(&mut one)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(_)) => panic!("answered a head that never completed"),
            Err(_) => {}
        }
    }
    assert!(cut, "the trickling client was never cut off");
    assert_eq!(closed(&stats(&lb).await, "header_timeout"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_clients_are_closed_by_their_own_timeouts() {
    let b = Backend::start("b1").await;
    // A client that connects and sends nothing: the first-byte timeout.
    let extra =
        format!("{HC_OFF}[frontend.timeouts]\nfirst_byte_ms = 200\nrequest_header_ms = 600000\nidle_ms = 600000\n");
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    let mut silent = TcpStream::connect(lb.local_addr("web").unwrap()).await.unwrap();
    closed_by_peer(&mut silent).await.expect("a silent client was not dropped");
    let s = stats(&lb).await;
    assert_eq!(
        (closed(&s, "first_byte_timeout"), closed(&s, "header_timeout"), closed(&s, "idle_timeout")),
        (1, 0, 0),
        "{s}"
    );
    // The first-byte timeout is for the first request only; between
    // requests the idle timeout rules.
    let extra =
        format!("{HC_OFF}[frontend.timeouts]\nfirst_byte_ms = 600000\nrequest_header_ms = 600000\nidle_ms = 200\n");
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    let mut idle = TcpStream::connect(lb.local_addr("web").unwrap()).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let got = closed_by_peer(&mut idle).await.expect("an idle keep-alive client was not dropped");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let s = stats(&lb).await;
    assert_eq!(
        (closed(&s, "first_byte_timeout"), closed(&s, "header_timeout"), closed(&s, "idle_timeout")),
        (0, 0, 1),
        "{s}"
    );
    // A TCP session moving no bytes is closed and counted the same way.
    let echo = echo_server().await;
    let extra = format!("{HC_OFF}[frontend.timeouts]\nidle_ms = 200\n");
    let lb = start_lb(&one_frontend("tcp", "round_robin", &[echo], &extra)).await;
    let mut s = TcpStream::connect(lb.local_addr("web").unwrap()).await.unwrap();
    s.write_all(b"x").await.unwrap();
    closed_by_peer(&mut s).await.expect("an idle TCP session was not closed");
    assert_eq!(closed(&stats(&lb).await, "idle_timeout"), 1);
    let (_, metrics) = get(lb.admin_addr().unwrap(), "/metrics").await.unwrap();
    assert!(
        metrics.contains("rampart_lb_frontend_connections_closed_total{frontend=\"web\",reason=\"idle_timeout\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_is_refused_while_the_others_are_served() {
    let b = Backend::start("b1").await;
    for mode in ["http", "tcp"] {
        let extra = format!("max_conns = 3\n{HC_OFF}");
        let lb = start_lb(&one_frontend(mode, "round_robin", &[b.addr], &extra)).await;
        let addr = lb.local_addr("web").unwrap();
        let mut open = Vec::new();
        for _ in 0..3 {
            let mut c = Client::connect(addr).await.unwrap();
            assert_eq!(c.get("/").await.unwrap().0, 200, "{mode}");
            open.push(c);
        }
        // The fourth is closed at once, before a byte is read from it.
        let reply = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(reply, "", "{mode}: the connection over the cap was served");
        // The three keep working.
        for c in &mut open {
            assert_eq!(c.get("/").await.unwrap().0, 200, "{mode}");
        }
        let s = stats(&lb).await;
        let fe = &s["frontends"][0];
        assert_eq!(
            (fe["conns_rejected"].as_u64(), fe["conns_active"].as_u64(), fe["max_conns"].as_u64()),
            (Some(1), Some(3), Some(3)),
            "{mode}: {s}"
        );
        let (_, metrics) = get(lb.admin_addr().unwrap(), "/metrics").await.unwrap();
        for line in [
            "rampart_lb_frontend_connections_rejected_total{frontend=\"web\"} 1",
            "rampart_lb_frontend_connections_active{frontend=\"web\"} 3",
            "rampart_lb_frontend_connections_max{frontend=\"web\"} 3",
        ] {
            assert!(metrics.contains(line), "{mode}: no `{line}` in {metrics}");
        }
        // A freed slot is taken by the next client.
        open.pop();
        wait_until("a slot is free", || async { stats(&lb).await["frontends"][0]["conns_active"] == 2 }).await;
        assert_eq!(get(addr, "/").await.unwrap().0, 200, "{mode}");
    }
}

/// GET /stats on an admin connection already open.
async fn stats_on(c: &mut Client) -> serde_json::Value {
    serde_json::from_str(&c.get("/stats").await.unwrap().1).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_has_its_own_cap_and_timeouts() {
    let b = Backend::start("b1").await;
    let with_admin = |admin: &str| one_frontend("http", "round_robin", &[b.addr], HC_OFF).replace("[admin]\n", admin);
    // The cap: the third connection is closed at once, the two go on.
    let lb = start_lb(&with_admin("[admin]\nmax_conns = 2\n")).await;
    let admin = lb.admin_addr().unwrap();
    let mut c1 = Client::connect(admin).await.unwrap();
    let mut c2 = Client::connect(admin).await.unwrap();
    assert_eq!(c1.get("/health").await.unwrap().0, 200);
    assert_eq!(raw_exchange(admin, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await, "");
    let s = stats_on(&mut c2).await;
    assert_eq!((s["admin"]["conns_rejected"].as_u64(), s["admin"]["conns_active"].as_u64()), (Some(1), Some(2)), "{s}");
    // Once c1 is gone its slot is free again (watched through c2: a new
    // connection could be refused meanwhile).
    drop(c1);
    let deadline = std::time::Instant::now() + DEADLINE;
    while stats_on(&mut c2).await["admin"]["conns_active"] != 1 {
        assert!(std::time::Instant::now() < deadline, "c1's admin connection never closed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(get(admin, "/health").await.unwrap().0, 200);
    let (_, metrics) = c2.get("/metrics").await.unwrap();
    assert!(metrics.contains("rampart_lb_admin_connections_rejected_total 1\n"), "{metrics}");

    // One byte, then silence: dropped after request_header_ms.
    let lb = start_lb(&with_admin("[admin]\nrequest_header_ms = 200\nidle_ms = 600000\n")).await;
    let admin = lb.admin_addr().unwrap();
    let mut slow = TcpStream::connect(admin).await.unwrap();
    slow.write_all(b"G").await.unwrap();
    let got = closed_by_peer(&mut slow).await.expect("a one-byte admin client was not dropped");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    let (_, metrics) = get(admin, "/metrics").await.unwrap();
    assert!(metrics.contains("rampart_lb_admin_connections_closed_total{reason=\"header_timeout\"} 1\n"), "{metrics}");

    // Idle: with the header timeout off, a silent connection is closed after idle_ms.
    let lb = start_lb(&with_admin("[admin]\nrequest_header_ms = 0\nidle_ms = 200\n")).await;
    let mut silent = TcpStream::connect(lb.admin_addr().unwrap()).await.unwrap();
    closed_by_peer(&mut silent).await.expect("an idle admin connection was not closed");
    let s = stats(&lb).await;
    assert_eq!(s["admin"]["conns_closed"]["idle_timeout"], 1, "{s}");
}

#[test]
fn listener_limits_are_checked() {
    let base = "[[frontend]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n[[frontend.backend]]\naddr = \"127.0.0.1:9\"\n";
    for (text, want) in [
        (format!("[admin]\nmax_conns = 0\n{base}"), "admin.max_conns"),
        (format!("[admin]\nidle_ms = 99999999999\n{base}"), "admin.idle_ms"),
        (
            base.replace("listen = \"127.0.0.1:0\"\n", "listen = \"127.0.0.1:0\"\nmax_conns = 0\n"),
            "frontend[0].max_conns",
        ),
        (format!("{base}[frontend.timeouts]\nfirst_byte_ms = 99999999999\n"), "frontend[0].timeouts.first_byte_ms"),
    ] {
        let e = rampart_lb::config::Config::parse(&text, "lb.toml").unwrap_err().to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    let c = rampart_lb::config::Config::parse(base, "lb.toml").unwrap();
    let (f, a) = (&c.frontends[0], &c.admin_limits);
    use rampart_lb::config::*;
    assert_eq!(
        (f.max_conns, f.timeouts.first_byte_ms, f.timeouts.request_header_ms, f.timeouts.idle_ms),
        (DEFAULT_FRONTEND_CONNS, DEFAULT_FIRST_BYTE_MS, DEFAULT_REQUEST_HEADER_MS, DEFAULT_IDLE_MS)
    );
    assert_eq!(a.max_conns, DEFAULT_ADMIN_CONNS);
    assert_eq!(a.request_header.as_millis() as u64, DEFAULT_ADMIN_REQUEST_HEADER_MS);
}

#[tokio::test]
async fn with_an_admin_token_the_changing_endpoints_need_it() {
    let b = Backend::start("b1").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "s3cret-admin-token-0123456789\n").unwrap();
    let admin = format!("[admin]\ntoken_file = {:?}\n", token_file.display().to_string());
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], HC_OFF).replace("[admin]\n", &admin)).await;
    let addr = lb.admin_addr().unwrap();
    let post = |auth: &str| {
        format!("POST /reload HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
    };
    let refused = raw_exchange(addr, post("").as_bytes()).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let wrong = raw_exchange(addr, post("Authorization: Bearer nope-nope-nope-nope\r\n").as_bytes()).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let ok = raw_exchange(addr, post("Authorization: Bearer s3cret-admin-token-0123456789\r\n").as_bytes()).await;
    assert!(!ok.starts_with("HTTP/1.1 401"), "the right token is accepted: {ok}");
    // Reads stay open.
    assert_eq!(get(addr, "/health").await.unwrap().0, 200);

    // A short token, and an admin address off loopback without a token, are config errors.
    std::fs::write(&token_file, "short").unwrap();
    let cfg = dir.path().join("lb.toml");
    std::fs::write(&cfg, one_frontend("http", "round_robin", &[b.addr], HC_OFF).replace("[admin]\n", &admin)).unwrap();
    let e = rampart_lb::config::Config::load(&cfg).unwrap_err().to_string();
    assert!(e.contains("admin.token_file") && e.contains("at least 16"), "{e}");
    let open = one_frontend("http", "round_robin", &[b.addr], HC_OFF).replacen("127.0.0.1:0", "0.0.0.0:0", 1);
    std::fs::write(&cfg, open).unwrap();
    let e = rampart_lb::config::Config::load(&cfg).unwrap_err().to_string();
    assert!(e.contains("admin.listen") && e.contains("token_file"), "{e}");
}
