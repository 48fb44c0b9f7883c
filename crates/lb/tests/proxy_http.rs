//! End-to-end tests of HTTP mode against real backends on 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn hc_off() -> &'static str {
    "[frontend.health]\nenabled = false\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly_over_keep_alive() {
    let bs = [Backend::start("b1").await, Backend::start("b2").await, Backend::start("b3").await];
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let lb = start_lb(&one_frontend("http", "round_robin", &addrs, hc_off())).await;
    let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
    let mut seen = HashMap::new();
    for _ in 0..300 {
        let (status, body) = c.get("/").await.unwrap();
        assert_eq!(status, 200);
        *seen.entry(body).or_insert(0) += 1;
    }
    for b in &bs {
        assert_eq!(seen[&format!("ok from {}\n", b.name)], 100, "{seen:?}");
        assert_eq!(b.hits(), 100);
    }
    // Keep-alive both ways: one client connection, and at most a handful of
    // backend connections for 300 sequential requests.
    let s = stats(&lb).await;
    assert_eq!(s["frontends"][0]["conns_total"], 1);
    for b in &bs {
        let connects = backend_stat(&s, b.addr)["connects"].as_u64().unwrap();
        assert!(connects <= 3, "backend {} had {connects} connects for 100 requests", b.addr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_and_hash_distribution() {
    let bs = [Backend::start("b1").await, Backend::start("b2").await];
    let toml = format!(
        "[[frontend]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nalgorithm = \"weighted_round_robin\"\n{}\n\
         [[frontend.backend]]\naddr = \"{}\"\nweight = 3\n[[frontend.backend]]\naddr = \"{}\"\nweight = 1\n\
         [[frontend]]\nname = \"hash\"\nlisten = \"127.0.0.1:0\"\nalgorithm = \"consistent_hash\"\n{}\n\
         [[frontend.backend]]\naddr = \"{}\"\n[[frontend.backend]]\naddr = \"{}\"\n",
        hc_off(),
        bs[0].addr,
        bs[1].addr,
        hc_off(),
        bs[0].addr,
        bs[1].addr
    );
    let lb = start_lb(&toml).await;
    let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
    for _ in 0..400 {
        assert_eq!(c.get("/").await.unwrap().0, 200);
    }
    assert_eq!((bs[0].hits(), bs[1].hits()), (300, 100));

    // Consistent hash on the URI: a URI always lands on the same backend.
    let mut c = Client::connect(lb.local_addr("hash").unwrap()).await.unwrap();
    let mut owners: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for k in 0..40 {
            let (status, body) = c.get(&format!("/item/{k}")).await.unwrap();
            assert_eq!(status, 200);
            let prev = owners.entry(format!("/item/{k}")).or_insert_with(|| body.clone());
            assert_eq!(*prev, body, "round {round}: /item/{k} moved");
        }
    }
    let on_b1 = owners.values().filter(|b| b.contains("b1")).count();
    assert!((5..=35).contains(&on_b1), "40 URIs should spread over both backends, b1 got {on_b1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_and_via() {
    let b = Backend::start("b1").await;
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], hc_off())).await;
    let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
    let (status, body) = c.get("/headers").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("x-forwarded-for: 127.0.0.1\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert!(body.contains("via: 1.1 rampart\n"), "{body}");
    // An HTTP/1.0 request without Host still reaches an HTTP/1.1 backend.
    let addr = lb.local_addr("web").unwrap();
    let reply = raw_exchange(addr, b"GET /headers HTTP/1.0\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    assert!(reply.contains(&format!("host: {addr}\n")) && reply.contains("via: 1.0 rampart\n"), "{reply}");
    // A POST body goes through (buffered, so retryable).
    let (status, body) = c.request("POST", "/echo", "hello body").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "hello body"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_gets_400_and_garbage_backend_gets_502() {
    let garbage = raw_server(b"this is not HTTP at all\r\n\r\n").await;
    let lb = start_lb(&one_frontend("http", "round_robin", &[garbage], hc_off())).await;
    let addr = lb.local_addr("web").unwrap();
    let reply = raw_exchange(addr, b"NOT A REQUEST\x01\x02\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    let reply = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    let reply =
        raw_exchange(addr, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n")
            .await;
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply:?}");
    let (status, body) = get(addr, "/").await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("backend_bad_response"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connect_is_retried_on_another_backend() {
    let good = [Backend::start("b1").await, Backend::start("b2").await];
    let dead = dead_addr().await;
    let extra = format!("{}[frontend.ejection]\nenabled = false\n", hc_off());
    let lb = start_lb(&one_frontend("http", "round_robin", &[good[0].addr, dead, good[1].addr], &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    for _ in 0..30 {
        let (status, _) = get(addr, "/").await.unwrap();
        assert_eq!(status, 200);
    }
    let s = stats(&lb).await;
    assert!(s["frontends"][0]["retries"].as_u64().unwrap() >= 9, "{s}");
    assert_eq!(good[0].hits() + good[1].hits(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_stops_retry_storms() {
    let dead = [dead_addr().await, dead_addr().await, dead_addr().await];
    let extra = format!(
        "{}[frontend.ejection]\nenabled = false\n[frontend.retries]\nmax_retries = 2\nbudget_percent = 0\nbudget_min_per_sec = 3\n",
        hc_off()
    );
    let lb = start_lb(&one_frontend("http", "round_robin", &dead, &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    let start = Instant::now();
    for _ in 0..10 {
        let (status, _) = get(addr, "/").await.unwrap();
        assert_eq!(status, 502);
    }
    let secs = start.elapsed().as_secs();
    let s = stats(&lb).await;
    let f = &s["frontends"][0];
    let retries = f["retries"].as_u64().unwrap();
    // 3 tokens to start with, 3 more per elapsed second: far fewer than the
    // 20 retries that 10 requests x 2 retries would make.
    assert!(retries >= 3 && retries <= 3 + 3 * secs, "retries {retries} after {secs}s: {f}");
    assert!(f["retries_denied_by_budget"].as_u64().unwrap() >= 1, "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_under_load_no_failed_get_then_back() {
    let b1 = Backend::start("b1").await;
    let mut b2 = Backend::start("b2").await;
    let b3 = Backend::start("b3").await;
    let addr2 = b2.addr;
    let extra = "[frontend.health]\ninterval_ms = 100\ntimeout_ms = 500\nrise = 2\nfall = 2";
    let lb = start_lb(&one_frontend("http", "round_robin", &[b1.addr, b2.addr, b3.addr], extra)).await;
    let addr = lb.local_addr("web").unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (done, failures, stop) = (done.clone(), failures.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await.unwrap();
            // Bounded: the test stops the workers, and each is capped.
            for _ in 0..200_000 {
                if stop.load(Relaxed) {
                    break;
                }
                match c.get("/").await {
                    Ok((200, _)) => {}
                    other => {
                        failures.fetch_add(1, Relaxed);
                        eprintln!("client saw {other:?}");
                        if other.is_err() {
                            c = Client::connect(addr).await.unwrap();
                        }
                    }
                }
                done.fetch_add(1, Relaxed);
            }
        }));
    }
    wait_until("200 requests before the kill", || async { done.load(Relaxed) >= 200 }).await;
    let flags = b2.flags.clone();
    b2.kill();
    let at_kill = done.load(Relaxed);
    wait_until("backend 2 marked down", || async { backend_stat(&stats(&lb).await, addr2)["state"] == "down" }).await;
    wait_until("500 more requests after the kill", || async { done.load(Relaxed) >= at_kill + 500 }).await;
    let hits_while_down = flags.hits.load(Relaxed);
    // Restart on the same port: health checks bring it back and it gets traffic again.
    b2 = Backend::start_with("b2", addr2, flags.clone()).await;
    wait_until("backend 2 up again", || async { backend_stat(&stats(&lb).await, addr2)["state"] == "up" }).await;
    wait_until("backend 2 serving again", || async { b2.hits() > hits_while_down + 10 }).await;
    stop.store(true, Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failures.load(Relaxed), 0, "clients saw errors");
    let s = stats(&lb).await;
    assert_eq!(s["frontends"][0]["responses"]["5xx"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_check_takes_backend_out_and_back() {
    let b1 = Backend::start("b1").await;
    let b2 = Backend::start("b2").await;
    let extra = "[frontend.health]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = 50\nrise = 2\nfall = 2\n";
    let lb = start_lb(&one_frontend("http", "round_robin", &[b1.addr, b2.addr], extra)).await;
    let addr = lb.local_addr("web").unwrap();
    b2.flags.healthy.store(false, Relaxed);
    wait_until("b2 down", || async { backend_stat(&stats(&lb).await, b2.addr)["state"] == "down" }).await;
    let before = b2.hits();
    for _ in 0..20 {
        assert_eq!(get(addr, "/").await.unwrap(), (200, "ok from b1\n".to_string()));
    }
    assert_eq!(b2.hits(), before);
    b2.flags.healthy.store(true, Relaxed);
    wait_until("b2 up", || async { backend_stat(&stats(&lb).await, b2.addr)["state"] == "up" }).await;
    for _ in 0..20 {
        assert_eq!(get(addr, "/").await.unwrap().0, 200);
    }
    assert_eq!(b2.hits(), before + 10);
    assert!(backend_stat(&stats(&lb).await, b2.addr)["health_checks_failed"].as_u64().unwrap() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_and_its_cap() {
    let bs = [Backend::start("b1").await, Backend::start("b2").await, Backend::start("b3").await];
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let extra = format!(
        "{}[frontend.ejection]\nconsecutive_failures = 3\nbase_ms = 60000\nmax_ms = 60000\nmax_ejected_percent = 34\n",
        hc_off()
    );
    let lb = start_lb(&one_frontend("http", "round_robin", &addrs, &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    bs[0].flags.fail_all.store(true, Relaxed);
    bs[1].flags.fail_all.store(true, Relaxed);
    let mut c = Client::connect(addr).await.unwrap();
    for _ in 0..30 {
        let (status, _) = c.get("/").await.unwrap();
        assert!(status == 200 || status == 500);
    }
    let s = stats(&lb).await;
    let ejected: Vec<bool> = addrs.iter().map(|a| backend_stat(&s, *a)["ejected"].as_bool().unwrap()).collect();
    // Both failing backends qualify, but 34 % of 3 allows one ejection only.
    assert_eq!(ejected.iter().filter(|e| **e).count(), 1, "{s}");
    assert!(!ejected[2]);
    let which = if ejected[0] { 0 } else { 1 };
    let hits = bs[which].hits();
    for _ in 0..20 {
        c.get("/").await.unwrap();
    }
    assert_eq!(bs[which].hits(), hits, "an ejected backend got traffic");
    // The admin API can end an ejection.
    let url = format!("/backends/web/{}/enable", addrs[which]);
    let mut admin = Client::connect(lb.admin_addr().unwrap()).await.unwrap();
    assert_eq!(admin.request("POST", &url, "").await.unwrap().0, 200);
    assert!(!backend_stat(&stats(&lb).await, addrs[which])["ejected"].as_bool().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_status_for_idempotent_only() {
    let bad = Backend::start("bad").await;
    let good = Backend::start("good").await;
    bad.flags.fail_all.store(true, Relaxed);
    let extra = format!("{}[frontend.ejection]\nenabled = false\n[frontend.retries]\non_statuses = [500]\n", hc_off());
    let lb = start_lb(&one_frontend("http", "round_robin", &[bad.addr, good.addr], &extra)).await;
    let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
    for _ in 0..10 {
        assert_eq!(c.get("/").await.unwrap(), (200, "ok from good\n".to_string()));
    }
    let mut posts = HashMap::new();
    for _ in 0..10 {
        *posts.entry(c.request("POST", "/", "x").await.unwrap().0).or_insert(0) += 1;
    }
    // POST is not idempotent: its 500s reach the client.
    assert_eq!(posts.get(&500), Some(&5), "{posts:?}");
    // When every backend answers 500, the client gets a backend's 500 (not a 502).
    good.flags.fail_all.store(true, Relaxed);
    let (status, body) = c.get("/").await.unwrap();
    assert_eq!(status, 500);
    assert!(body.starts_with("failing"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_gives_504() {
    let b = Backend::start("b1").await;
    let extra = format!("{}[frontend.timeouts]\nrequest_ms = 200\n", hc_off());
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    let (status, body) = get(addr, "/slow/5000").await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(get(addr, "/slow/1").await.unwrap().0, 200);
    assert_eq!(stats(&lb).await["frontends"][0]["timeouts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_clients_are_closed() {
    let b = Backend::start("b1").await;
    // Header timeout short, idle timeout long: only the header timeout can act.
    let extra = format!("{}[frontend.timeouts]\nrequest_header_ms = 200\nidle_ms = 600000\n", hc_off());
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    // Half a request header, then nothing: the LB must hang up.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "slow header was not cut off");
    // An idle keep-alive connection is closed too (header timeout off here).
    let extra = format!("{}[frontend.timeouts]\nrequest_header_ms = 0\nidle_ms = 200\n", hc_off());
    let lb2 = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    let addr = lb2.local_addr("web").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "idle connection was not closed");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_per_frontend_and_per_backend() {
    let b = Backend::start("b1").await;
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[frontend]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nmax_conns = 2\n{}\
         [[frontend.backend]]\naddr = \"{}\"\nmax_conns = 1\n",
        hc_off(),
        b.addr
    );
    let lb = start_lb(&toml).await;
    let addr = lb.local_addr("web").unwrap();
    let mut c1 = Client::connect(addr).await.unwrap();
    let mut c2 = Client::connect(addr).await.unwrap();
    // Backend limit 1: while c1's slow request runs, c2 finds no backend.
    let slow = tokio::spawn(async move { c1.get("/slow/3000").await });
    wait_until("slow request in flight", || async { b.hits() == 1 }).await;
    let (status, body) = c2.get("/").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no_backend"));
    // Frontend limit 2: a third connection is closed at once.
    let reply = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(reply, "", "third connection was served");
    assert_eq!(slow.await.unwrap().unwrap().0, 200);
    let s = stats(&lb).await;
    assert_eq!(s["frontends"][0]["conns_rejected"], 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drain_and_metrics() {
    let b1 = Backend::start("b1").await;
    let b2 = Backend::start("b2").await;
    let lb = start_lb(&one_frontend("http", "least_connections", &[b1.addr, b2.addr], hc_off())).await;
    let addr = lb.local_addr("web").unwrap();
    let admin = lb.admin_addr().unwrap();
    let mut a = Client::connect(admin).await.unwrap();
    assert_eq!(a.request("POST", &format!("/backends/web/{}/drain", b1.addr), "").await.unwrap().0, 200);
    for _ in 0..20 {
        assert_eq!(get(addr, "/").await.unwrap(), (200, "ok from b2\n".to_string()));
    }
    assert_eq!(backend_stat(&stats(&lb).await, b1.addr)["state"], "drained");
    assert_eq!(a.request("POST", &format!("/backends/web/{}/enable", b1.addr), "").await.unwrap().0, 200);
    wait_until("b1 gets traffic again", || async {
        get(addr, "/").await.unwrap();
        b1.hits() > 0
    })
    .await;
    assert_eq!(a.request("POST", "/backends/web/127.0.0.1:1/drain", "").await.unwrap().0, 404);
    assert_eq!(a.request("POST", &format!("/backends/web/{}/explode", b1.addr), "").await.unwrap().0, 400);
    let (status, m) = a.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(m.contains("# TYPE rampart_lb_frontend_requests_total counter"));
    let line = m.lines().find(|l| l.starts_with("rampart_lb_frontend_requests_total{frontend=\"web\"}")).unwrap();
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 21, "{line}");
    assert!(m.contains(&format!("rampart_lb_backend_up{{frontend=\"web\",backend=\"{}\"}} 1", b1.addr)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_on_a_reused_connection() {
    let b = Backend::start("b1").await;
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], hc_off())).await;
    let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
    // Above retries.body_bytes_max (64 KiB): streamed, not buffered.
    let big: String = (0..300_000u32).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    for _ in 0..3 {
        let (status, body) = c.request("POST", "/echo", &big).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body.len(), big.len());
        assert!(body == big, "body changed in transit");
        assert_eq!(c.get("/").await.unwrap(), (200, "ok from b1\n".to_string()));
    }
    // Each streamed upload has a connection of its own (3); the GETs share one
    // pooled connection, and so do these large buffered responses.
    for n in [0usize, 1, 100_000, 1_000_000] {
        let (status, body) = c.get(&format!("/big/{n}")).await.unwrap();
        assert_eq!((status, body.len()), (200, n));
        assert!(body.bytes().all(|b| b == b'x'));
    }
    let s = stats(&lb).await;
    assert_eq!(backend_stat(&s, b.addr)["connects"], 4, "backend connection not reused: {s}");
}

/// A keep-alive backend that answers every request with `reply`.
async fn scripted_backend(reply: &'static [u8]) -> std::net::SocketAddr {
    dribbling_backend(reply, usize::MAX).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_close_delimited_backend_responses() {
    let chunked = scripted_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .await;
    let lb = start_lb(&one_frontend("http", "round_robin", &[chunked], hc_off())).await;
    let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("/").await.unwrap(), (200, "hello world".to_string()));
    }
    assert_eq!(backend_stat(&stats(&lb).await, chunked)["connects"], 1, "chunked responses keep the connection");

    let until_close = raw_server(b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nuntil the backend closes").await;
    let lb = start_lb(&one_frontend("http", "round_robin", &[until_close], hc_off())).await;
    let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
    for _ in 0..2 {
        assert_eq!(c.get("/").await.unwrap(), (200, "until the backend closes".to_string()));
    }
    let bad_chunks = scripted_backend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n").await;
    let lb = start_lb(&one_frontend("http", "round_robin", &[bad_chunks], hc_off())).await;
    // The head was fine, so the client got a 200 and then a broken body.
    let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
    assert!(c.get("/").await.is_err(), "a malformed chunked body must not look complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_size_with_a_sign_or_prefix_is_a_broken_body() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    ] {
        let backend = scripted_backend(Box::leak(reply.to_vec().into_boxed_slice())).await;
        let lb = start_lb(&one_frontend("http", "round_robin", &[backend], hc_off())).await;
        let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
        let got = c.get("/").await;
        assert!(got.is_err(), "{:?} passed on as {got:?}", String::from_utf8_lossy(reply));
        let s = stats(&lb).await;
        assert_eq!(backend_stat(&s, backend)["idle_pooled"], 0, "a broken connection was pooled: {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_when_enabled() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    let b = Backend::start("b1").await;
    let extra = format!("http2 = true\n{}", hc_off());
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    for path in ["/", "/headers"] {
        let req =
            hyper::Request::builder().uri(format!("http://example.test{path}")).body(Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        if path == "/" {
            assert_eq!(body, "ok from b1\n");
        } else {
            // The backend speaks HTTP/1.1 and gets the :authority as Host.
            assert!(body.contains("host: example.test\n"), "{body}");
            assert!(body.contains("via: 2 rampart\n"), "{body}");
        }
    }
    // HTTP/1.1 still works on the same frontend.
    assert_eq!(get(addr, "/").await.unwrap(), (200, "ok from b1\n".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_serves_and_skips_a_down_backend() {
    let bs = [Backend::start("b1").await, Backend::start("b2").await, Backend::start("b3").await];
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    for algo in
        ["round_robin", "weighted_round_robin", "least_connections", "consistent_hash", "maglev", "random", "p2c"]
    {
        let lb = start_lb(&one_frontend("http", algo, &addrs, hc_off())).await;
        let addr = lb.local_addr("web").unwrap();
        let mut c = Client::connect(addr).await.unwrap();
        let mut seen = std::collections::HashSet::new();
        for k in 0..60 {
            let (status, body) = c.get(&format!("/k/{k}")).await.unwrap();
            assert_eq!(status, 200, "{algo}");
            seen.insert(body);
        }
        assert_eq!(seen.len(), 3, "{algo} should use all three backends: {seen:?}");
        // Take b2 out by the admin API: no algorithm may send it anything.
        let mut a = Client::connect(lb.admin_addr().unwrap()).await.unwrap();
        let url = format!("/backends/web/{}/disable", bs[1].addr);
        assert_eq!(a.request("POST", &url, "").await.unwrap().0, 200);
        for k in 0..60 {
            let (status, body) = c.get(&format!("/k/{k}")).await.unwrap();
            assert_eq!(status, 200, "{algo}");
            assert_ne!(body, "ok from b2\n", "{algo} picked a disabled backend");
        }
        lb.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_gives_504_and_moves_on() {
    // A backend whose accept queue is full: the kernel drops further SYNs, so
    // a connect neither succeeds nor fails until the connect timeout.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stuck = sock.local_addr().unwrap();
    let _listener = sock.listen(1).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(std::time::Duration::from_millis(300), TcpStream::connect(stuck)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let extra = format!(
        "{}[frontend.ejection]\nenabled = false\n[frontend.timeouts]\nconnect_ms = 200\n[frontend.retries]\nmax_retries = 0\n",
        hc_off()
    );
    let lb = start_lb(&one_frontend("http", "round_robin", &[stuck], &extra)).await;
    let started = Instant::now();
    let (status, body) = get(lb.local_addr("web").unwrap(), "/").await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("backend_connect_timeout"), "{body}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));

    // With a healthy second backend the timed-out connect is retried there.
    let good = Backend::start("good").await;
    let extra = format!("{}[frontend.ejection]\nenabled = false\n[frontend.timeouts]\nconnect_ms = 200\n", hc_off());
    let lb = start_lb(&one_frontend("http", "round_robin", &[stuck, good.addr], &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    for _ in 0..4 {
        assert_eq!(get(addr, "/").await.unwrap(), (200, "ok from good\n".to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_responses_keep_the_connection_in_step() {
    let b = Backend::start("b1").await;
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], hc_off())).await;
    let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
    for _ in 0..2 {
        // HEAD: a Content-Length but no body; 204 and 304: no body at all.
        assert_eq!(c.request("HEAD", "/", "").await.unwrap(), (200, String::new()));
        assert_eq!(c.get("/status/204").await.unwrap(), (204, String::new()));
        assert_eq!(c.get("/status/304").await.unwrap(), (304, String::new()));
        assert_eq!(c.get("/").await.unwrap(), (200, "ok from b1\n".to_string()));
    }
    assert_eq!(backend_stat(&stats(&lb).await, b.addr)["connects"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_close_chunked_uploads_and_oversized_heads() {
    let b = Backend::start("b1").await;
    let extra = format!("request_header_bytes_max = 8192\n{}", hc_off());
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    let bounded = |bytes: Vec<u8>| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let mut out = Vec::new();
        // The LB must close the connection itself (Connection: close or an error).
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("connection left open")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    // Two pipelined requests in one write, the second asking to close.
    let reply =
        bounded(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec())
            .await;
    assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 2, "{reply}");
    assert_eq!(reply.matches("ok from b1\n").count(), 2, "{reply}");
    assert!(reply.contains("connection: close"), "{reply}");
    // A chunked upload (handled by the general path) arrives whole.
    let reply = bounded(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("hello world"), "{reply}");
    // Expect: 100-continue.
    let reply = bounded(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nok"
            .to_vec(),
    )
    .await;
    assert!(reply.contains("HTTP/1.1 200 OK") && reply.ends_with("ok"), "{reply}");
    // A request head above request_header_bytes_max.
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    big.extend_from_slice(b"\r\n\r\n");
    let reply = bounded(big).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{}", &reply[..reply.len().min(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_the_idle_timeout() {
    let b = Backend::start("b1").await;
    let extra = format!("[frontend.timeouts]\nidle_ms = 300\n{}", hc_off());
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    let mut s = TcpStream::connect(lb.local_addr("web").unwrap()).await.unwrap();
    let total = 64_000_000usize;
    s.write_all(format!("GET /big/{total} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    // Read nothing until the LB's writes stall and it gives up on us. First see the response in
    // flight: the backend counts the request before the LB counts it active, so "no active
    // request" alone could be seen before the proxying began (a CI flake).
    wait_until("the response in flight", || async { backend_stat(&stats(&lb).await, b.addr)["active"] == 1 }).await;
    wait_until("the stalled response is abandoned", || async {
        backend_stat(&stats(&lb).await, b.addr)["active"] == 0 && b.hits() == 1
    })
    .await;
    let mut got = Vec::new();
    let r = tokio::time::timeout(DEADLINE, s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "connection not closed");
    assert!(got.len() < total, "the whole body arrived although the client stalled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_returning_backend() {
    let b1 = Backend::start("b1").await;
    let b2 = Backend::start("b2").await;
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[frontend]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n\
         algorithm = \"weighted_round_robin\"\nslow_start_ms = 60000\n\
         [frontend.health]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = 50\nrise = 1\nfall = 1\n\
         [[frontend.backend]]\naddr = \"{}\"\nweight = 10\n[[frontend.backend]]\naddr = \"{}\"\nweight = 10\n",
        b1.addr, b2.addr
    );
    let lb = start_lb(&toml).await;
    let addr = lb.local_addr("web").unwrap();
    // Never went down: full weight from the start.
    let mut c = Client::connect(addr).await.unwrap();
    for _ in 0..20 {
        c.get("/").await.unwrap();
    }
    assert_eq!((b1.hits(), b2.hits()), (10, 10));
    b2.flags.healthy.store(false, Relaxed);
    wait_until("b2 down", || async { backend_stat(&stats(&lb).await, b2.addr)["state"] == "down" }).await;
    b2.flags.healthy.store(true, Relaxed);
    wait_until("b2 up", || async { backend_stat(&stats(&lb).await, b2.addr)["state"] == "up" }).await;
    // Just back: 10 % of its weight (1 of 10) for the first seconds of a 60 s ramp.
    assert_eq!(backend_stat(&stats(&lb).await, b2.addr)["effective_weight"], 1);
    let before = (b1.hits(), b2.hits());
    for _ in 0..22 {
        assert_eq!(c.get("/").await.unwrap().0, 200);
    }
    assert_eq!((b1.hits() - before.0, b2.hits() - before.1), (20, 2));
}

/// A backend that reads each request (head and a one-byte body) in full,
/// counts it, then closes the connection without answering.
async fn swallowing_backend(seen: Arc<AtomicU64>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Bounded by the client: it sends one request per connection here.
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let body_len = if head.contains("content-length: 1") { 1 } else { 0 };
                    if buf.len() >= end + 4 + body_len {
                        seen.fetch_add(1, Relaxed);
                        let _ = s.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_unsafe_request_is_never_sent_twice() {
    let seen = Arc::new(AtomicU64::new(0));
    let backends = [swallowing_backend(seen.clone()).await, swallowing_backend(seen.clone()).await];
    let extra = format!("{}[frontend.ejection]\nenabled = false\n", hc_off());
    let lb = start_lb(&one_frontend("http", "round_robin", &backends, &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    for method in ["PUT", "DELETE", "POST"] {
        let before = seen.load(Relaxed);
        let mut c = Client::connect(addr).await.unwrap();
        let (status, body) = c.request(method, "/k", "x").await.unwrap();
        assert_eq!(status, 502, "{method}: {body}");
        assert!(body.contains("backend_reset"), "{method}: {body}");
        assert_eq!(seen.load(Relaxed) - before, 1, "{method} reached the backends more than once");
    }
    // A safe method that met the same fate is tried on the other backend too.
    let before = seen.load(Relaxed);
    let (status, _) = get(addr, "/k").await.unwrap();
    assert_eq!(status, 502);
    assert_eq!(seen.load(Relaxed) - before, 2, "GET should have been retried once");
}

/// Issue 10, item 6: a written PUT, DELETE, POST or PATCH goes to a second
/// backend only when the client gave it an `Idempotency-Key`; on the fast
/// path and on hyper's (chunked upload), and for retried statuses too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_request_with_an_idempotency_key_may_be_sent_again() {
    let seen = Arc::new(AtomicU64::new(0));
    let backends = [swallowing_backend(seen.clone()).await, swallowing_backend(seen.clone()).await];
    let extra = format!("{}[frontend.ejection]\nenabled = false\n", hc_off());
    let lb = start_lb(&one_frontend("http", "round_robin", &backends, &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    for method in ["PUT", "DELETE", "POST", "PATCH"] {
        for (key, sends) in [("", 1), ("Idempotency-Key: \r\n", 1), ("Idempotency-Key: 4f1c-77\r\n", 2)] {
            let before = seen.load(Relaxed);
            let req =
                format!("{method} /k HTTP/1.1\r\nHost: x\r\n{key}Content-Length: 1\r\nConnection: close\r\n\r\nx");
            let reply = raw_exchange(addr, req.as_bytes()).await;
            assert!(reply.starts_with("HTTP/1.1 502"), "{method} {key:?}: {reply:?}");
            assert_eq!(seen.load(Relaxed) - before, sends, "{method} {key:?}: times the backends got it");
        }
    }
    // Through hyper (a chunked upload, streamed) the key counts the same way.
    let before = seen.load(Relaxed);
    let reply = raw_exchange(
        addr,
        b"PUT /k HTTP/1.1\r\nHost: x\r\nIdempotency-Key: abc\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply:?}");
    let sent = seen.load(Relaxed) - before;
    // A streamed body is gone once sent: it cannot be sent again, key or not.
    assert_eq!(sent, 1, "a streamed upload was replayed");

    // Retried statuses: a keyed POST's 500 goes to the other backend.
    let bad = Backend::start("bad").await;
    let good = Backend::start("good").await;
    bad.flags.fail_all.store(true, Relaxed);
    let extra = format!("{}[frontend.ejection]\nenabled = false\n[frontend.retries]\non_statuses = [500]\n", hc_off());
    let lb = start_lb(&one_frontend("http", "round_robin", &[bad.addr, good.addr], &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    for _ in 0..6 {
        let reply = raw_exchange(
            addr,
            b"POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("ok from good\n"), "{reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_content_length_that_is_not_digits_or_conflicts_gets_400() {
    // A raw backend that accepts anything: the 400 must come from the LB.
    let seen = Arc::new(AtomicU64::new(0));
    let raw = swallowing_backend(seen.clone()).await;
    let bad: [&[u8]; 9] = [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: +5\r\n\r\nhello",
        // HTTP/1.0 is served by hyper, not the fast path: the same answer.
        b"POST /echo HTTP/1.0\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    ];
    // The fast path, and hyper alone (a frontend that also takes HTTP/2).
    for http2 in [false, true] {
        let lb =
            start_lb(&one_frontend("http", "round_robin", &[raw], &format!("http2 = {http2}\n{}", hc_off()))).await;
        let addr = lb.local_addr("web").unwrap();
        for req in bad {
            let reply = raw_exchange(addr, req).await;
            assert!(
                reply.starts_with("HTTP/1.1 400"),
                "http2 = {http2}: {:?} -> {reply:?}",
                String::from_utf8_lossy(req)
            );
        }
    }
    assert_eq!(seen.load(Relaxed), 0, "a request with broken framing reached the backend");
    // Well-formed lengths still work, including an agreeing repeat.
    let b = Backend::start("b1").await;
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], hc_off())).await;
    let addr = lb.local_addr("web").unwrap();
    let ok =
        raw_exchange(addr, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            .await;
    assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("hello"), "{ok:?}");
    let ok = raw_exchange(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("hello"), "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_content_length_that_is_not_digits_is_a_broken_response() {
    for head in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello",
    ] {
        let backend = scripted_backend(Box::leak(head.to_vec().into_boxed_slice())).await;
        let lb = start_lb(&one_frontend("http", "round_robin", &[backend], hc_off())).await;
        let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
        for _ in 0..2 {
            let (status, body) = c.get("/").await.unwrap();
            assert_eq!(status, 502, "{body}");
            assert!(body.contains("backend_bad_response"), "{body}");
        }
        let s = stats(&lb).await;
        assert_eq!(backend_stat(&s, backend)["connects"], 2, "a broken connection was reused: {s}");
        assert_eq!(backend_stat(&s, backend)["idle_pooled"], 0, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_response_with_transfer_encoding_and_content_length_is_not_pooled() {
    let backend = scripted_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let lb = start_lb(&one_frontend("http", "round_robin", &[backend], hc_off())).await;
    let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("/").await.unwrap(), (200, "hello".to_string()));
    }
    let s = stats(&lb).await;
    assert_eq!(backend_stat(&s, backend)["connects"], 3, "the connection went back to the pool: {s}");
    assert_eq!(backend_stat(&s, backend)["idle_pooled"], 0, "{s}");
}

/// RFC 9112 §6.3: a request with both Transfer-Encoding and Content-Length
/// is rejected with 400 and its connection closed; it never reaches a
/// backend, and the bytes after it are never taken for a next request
/// (smuggling). Whatever the order of the two fields, and on frontends that
/// also take HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_request_with_transfer_encoding_and_content_length_is_refused() {
    let b = Backend::start("b1").await;
    let requests: [&[u8]; 3] = [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        // An Expect field would otherwise hand the request to hyper first.
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    for http2 in [false, true] {
        let lb =
            start_lb(&one_frontend("http", "round_robin", &[b.addr], &format!("http2 = {http2}\n{}", hc_off()))).await;
        for req in requests {
            let reply = raw_exchange(lb.local_addr("web").unwrap(), req).await;
            assert!(reply.starts_with("HTTP/1.1 400"), "http2 = {http2}: {reply:?}");
            assert!(reply.contains("connection: close"), "http2 = {http2}: {reply:?}");
            assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "a second request was read: {reply:?}");
        }
    }
    assert_eq!(b.hits(), 0, "a request with two framings reached the backend");
}

/// A keep-alive backend that answers every request with `reply`, written in
/// `piece`-byte writes with a pause after each (none when it fits one write), so
/// the proxy reads the response head (and body) in several reads.
async fn dribbling_backend(reply: &'static [u8], piece: usize) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Bounded by the test: the LB closes the connection at the end.
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        for p in reply.chunks(piece) {
                            if s.write_all(p).await.is_err() {
                                return;
                            }
                            if piece < reply.len() {
                                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_responses_split_across_reads() {
    let reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nX-Split: yes\r\nContent-Length: 11\r\n\r\nhello world";
    let backend = dribbling_backend(reply, 3).await;
    let lb = start_lb(&one_frontend("http", "round_robin", &[backend], hc_off())).await;
    let addr = lb.local_addr("web").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    // The first request a byte at a time, the second pipelined behind its last byte.
    let first = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Long: 0123456789\r\n\r\n";
    for b in first.iter() {
        s.write_all(std::slice::from_ref(b)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    s.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("connection left open")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{out}");
    assert_eq!(out.matches("x-split: yes\r\n").count(), 2, "{out}");
    assert_eq!(out.matches("content-length: 11\r\n").count(), 2, "{out}");
    assert!(out.ends_with("hello world"), "{out}");
    assert!(!out.contains("keep-alive"), "the backend's hop-by-hop field was forwarded: {out}");
    assert_eq!(backend_stat(&stats(&lb).await, backend)["connects"], 1, "the backend connection was not reused");
    // A malformed head that arrives in pieces, and a head cut off by the
    // backend closing: 502, not a hang.
    let malformed = dribbling_backend(b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 0\r\n\r\n", 4).await;
    let closing = raw_server(b"HTTP/1.1 200 OK\r\nContent-Le").await;
    for b in [malformed, closing] {
        let lb = start_lb(&one_frontend("http", "round_robin", &[b], hc_off())).await;
        let reply =
            raw_exchange(lb.local_addr("web").unwrap(), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
        assert!(reply.starts_with("HTTP/1.1 50"), "{reply}");
    }
}
