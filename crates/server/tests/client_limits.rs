//! Bounded resources on the client listeners: header and idle timeouts, connection caps, reply
//! caps, list continuation, and long requests off the async workers. Each test sees a clear
//! error and a server that goes on serving.

mod support;

use std::time::Duration;

use rampart_kv::Limits;
use rampart_resp::client::RespClient;
use rampart_resp::Value;
use support::{config, metric, start, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: these tests wait on conditions, never on the clock.
const DEADLINE: Duration = Duration::from_secs(20);

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the server must close the connection");
    out
}

async fn ping(addr: std::net::SocketAddr) -> Value {
    let mut c = RespClient::connect(addr).await.unwrap().with_read_timeout(DEADLINE);
    c.cmd_str(&["PING"]).await.unwrap()
}

fn pong() -> Value {
    Value::SimpleString("PONG".into())
}

#[tokio::test]
async fn a_slow_resp_client_is_closed_after_the_header_timeout() {
    let s = start(config(|c| c.client_header_timeout = Duration::from_millis(500)), Limits::default()).await;
    // One byte of a command, then nothing; and a command all there but its last byte.
    let mut slow = TcpStream::connect(s.resp).await.unwrap();
    slow.write_all(b"*").await.unwrap();
    let mut almost = TcpStream::connect(s.resp).await.unwrap();
    almost.write_all(b"PING\r").await.unwrap();
    let said = read_to_close(&mut slow).await;
    assert_eq!(said, b"-ERR timeout: no complete request within client_header_timeout_ms (500 ms)\r\n");
    assert_eq!(read_to_close(&mut almost).await, said);
    let closed = "rampart_client_connections_closed_total{api=\"resp\",reason=\"header_timeout\"}";
    wait_until("both closes counted", DEADLINE, || metric(&s.app, closed) == Some(2.0)).await;
    wait_until("no connection left open", DEADLINE, || {
        metric(&s.app, "rampart_client_connections{api=\"resp\"}") == Some(0.0)
    })
    .await;
    // A command that arrives in pieces, each within the timeout of the command's first byte,
    // is served; so is everyone else.
    let mut c = TcpStream::connect(s.resp).await.unwrap();
    c.write_all(b"*1\r\n$4\r\n").await.unwrap();
    c.write_all(b"PING\r\n").await.unwrap();
    let mut buf = [0u8; 7];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"+PONG\r\n");
    assert_eq!(ping(s.resp).await, pong());
}

#[tokio::test]
async fn an_idle_resp_client_is_closed_after_the_idle_timeout() {
    let s = start(
        config(|c| {
            c.client_idle_timeout = Duration::from_millis(200);
            c.client_header_timeout = Duration::from_secs(30);
        }),
        Limits::default(),
    )
    .await;
    let mut c = TcpStream::connect(s.resp).await.unwrap();
    c.write_all(b"PING\r\n").await.unwrap();
    // Redis closes an idle client without a word; so does this server. A client that never
    // sent anything is idle too.
    let mut silent = TcpStream::connect(s.resp).await.unwrap();
    assert_eq!(read_to_close(&mut c).await, b"+PONG\r\n");
    assert_eq!(read_to_close(&mut silent).await, b"");
    let closed = "rampart_client_connections_closed_total{api=\"resp\",reason=\"idle_timeout\"}";
    wait_until("both closes counted", DEADLINE, || metric(&s.app, closed) == Some(2.0)).await;
    assert_eq!(ping(s.resp).await, pong());
}

#[tokio::test]
async fn a_resp_client_that_reads_no_replies_is_closed_after_the_idle_timeout() {
    let s = start(
        config(|c| c.client_idle_timeout = Duration::from_millis(300)),
        Limits { value_bytes_max: 1 << 20, ..Limits::default() },
    )
    .await;
    s.replica.put(b"big", &vec![b'x'; 1 << 20]);
    // 64 MiB of replies asked for and none read: far more than the socket buffers take.
    let mut c = TcpStream::connect(s.resp).await.unwrap();
    c.write_all(&b"GET big\r\n".repeat(64)).await.unwrap();
    let closed = "rampart_client_connections_closed_total{api=\"resp\",reason=\"idle_timeout\"}";
    wait_until("the stalled client closed", DEADLINE, || metric(&s.app, closed) == Some(1.0)).await;
    assert_eq!(ping(s.resp).await, pong());
}

#[tokio::test]
async fn the_resp_connection_cap_refuses_the_next_client_as_redis_does() {
    let s = start(config(|c| c.resp_connections_max = 2), Limits::default()).await;
    let mut a = RespClient::connect(s.resp).await.unwrap().with_read_timeout(DEADLINE);
    let mut b = RespClient::connect(s.resp).await.unwrap().with_read_timeout(DEADLINE);
    assert_eq!(a.cmd_str(&["PING"]).await.unwrap(), pong());
    assert_eq!(b.cmd_str(&["PING"]).await.unwrap(), pong());
    let mut third = TcpStream::connect(s.resp).await.unwrap();
    third.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(read_to_close(&mut third).await, b"-ERR max number of clients reached\r\n");
    assert_eq!(metric(&s.app, "rampart_client_connections_refused_total{api=\"resp\"}"), Some(1.0));
    assert_eq!(metric(&s.app, "rampart_client_connections{api=\"resp\"}"), Some(2.0));
    // The clients in keep working, and a slot freed is taken again.
    assert_eq!(a.cmd_str(&["PING"]).await.unwrap(), pong());
    drop(b);
    wait_until("the slot freed", DEADLINE, || metric(&s.app, "rampart_client_connections{api=\"resp\"}") == Some(1.0))
        .await;
    assert_eq!(ping(s.resp).await, pong());
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let reply = String::from_utf8(read_to_close(&mut c).await).unwrap();
    let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn a_slow_http_client_is_closed_after_the_header_timeout() {
    let s = start(config(|c| c.client_header_timeout = Duration::from_millis(200)), Limits::default()).await;
    // A kept-alive connection that finished a request before the slow one began.
    let mut kept = TcpStream::connect(s.http).await.unwrap();
    let health = b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n";
    kept.write_all(health).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    for head in [&b"G"[..], b"GET /v1/health HTTP/1.1\r\nhost: x\r\n"] {
        let mut slow = TcpStream::connect(s.http).await.unwrap();
        slow.write_all(head).await.unwrap();
        read_to_close(&mut slow).await;
    }
    let closed = "rampart_client_connections_closed_total{api=\"http\",reason=\"header_timeout\"}";
    wait_until("both closes counted", DEADLINE, || metric(&s.app, closed) == Some(2.0)).await;
    // Waiting between requests is idling, not a slow head: the kept-alive connection, silent
    // for longer than the header timeout, is still served.
    kept.write_all(health).await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    assert_eq!(http_get(s.http, "/v1/health").await.0, 200);
}

#[tokio::test]
async fn a_silent_http_connection_is_closed_after_the_idle_timeout() {
    let s = start(
        config(|c| {
            c.client_idle_timeout = Duration::from_millis(300);
            c.request_timeout = Duration::from_millis(100);
        }),
        Limits::default(),
    )
    .await;
    let mut silent = TcpStream::connect(s.http).await.unwrap();
    assert_eq!(read_to_close(&mut silent).await, b"");
    let closed = "rampart_client_connections_closed_total{api=\"http\",reason=\"idle_timeout\"}";
    wait_until("the close counted", DEADLINE, || metric(&s.app, closed) == Some(1.0)).await;
    assert_eq!(http_get(s.http, "/v1/health").await.0, 200);
}

#[tokio::test]
async fn an_http_body_that_stops_arriving_is_closed_after_the_idle_timeout() {
    let s = start(
        config(|c| {
            c.client_idle_timeout = Duration::from_millis(200);
            c.request_timeout = Duration::from_millis(100);
        }),
        Limits::default(),
    )
    .await;
    let mut c = TcpStream::connect(s.http).await.unwrap();
    c.write_all(b"PUT /v1/kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly part").await.unwrap();
    read_to_close(&mut c).await;
    let closed = "rampart_client_connections_closed_total{api=\"http\",reason=\"idle_timeout\"}";
    wait_until("the close counted", DEADLINE, || metric(&s.app, closed) == Some(1.0)).await;
    assert_eq!(http_get(s.http, "/v1/health").await.0, 200);
}

#[tokio::test]
async fn the_http_connection_cap_answers_503_naming_it() {
    let s = start(config(|c| c.http_connections_max = 1), Limits::default()).await;
    let mut first = TcpStream::connect(s.http).await.unwrap();
    wait_until("the first connection served", DEADLINE, || {
        metric(&s.app, "rampart_client_connections{api=\"http\"}") == Some(1.0)
    })
    .await;
    let (status, body) = http_get(s.http, "/v1/health").await;
    assert_eq!(status, 503);
    assert!(body.contains("http_connections_max 1") && body.contains("TOO_MANY_CONNECTIONS"), "{body}");
    assert_eq!(metric(&s.app, "rampart_client_connections_refused_total{api=\"http\"}"), Some(1.0));
    // The connection inside is still served.
    first.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let reply = String::from_utf8(read_to_close(&mut first).await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test]
async fn long_patterns_and_replies_over_the_cap_get_errors_naming_the_limit() {
    let limits = Limits { reply_bytes_max: 1000, ..Limits::default() };
    let s = start(config(|_| {}), limits).await;
    for i in 0..100 {
        s.replica.put(format!("key:{i:016}").as_bytes(), &[b'v'; 30]);
    }
    let mut c = RespClient::connect(s.resp).await.unwrap().with_read_timeout(DEADLINE);
    let long = "a".repeat(rampart_server::glob::GLOB_PATTERN_BYTES_MAX + 1);
    assert_eq!(
        c.cmd_str(&["KEYS", &long]).await.unwrap(),
        Value::Error("ERR pattern of 4097 bytes exceeds the limit of 4096 bytes (glob_pattern_bytes_max)".into())
    );
    assert!(
        matches!(c.cmd_str(&["SCAN", "0", "MATCH", &long]).await.unwrap(), Value::Error(e) if e.contains("glob_pattern_bytes_max"))
    );
    // 100 keys of 20 bytes are 2000 bytes of reply.
    let too_big = Value::Error("ERR reply would exceed reply_bytes_max (1000 bytes)".into());
    assert_eq!(c.cmd_str(&["KEYS", "key:*"]).await.unwrap(), too_big);
    let mut mget = vec!["MGET"];
    mget.extend(std::iter::repeat_n("key:0000000000000001", 40));
    assert_eq!(c.cmd_str(&mget).await.unwrap(), too_big);
    // SCAN pages through them all instead, in pages that fit.
    let mut cursor = "0".to_string();
    let mut seen = 0;
    loop {
        let reply = c.cmd_str(&["SCAN", &cursor, "MATCH", "key:*", "COUNT", "1000"]).await.unwrap();
        let Value::Array(parts) = reply else { panic!("{reply:?}") };
        let (Value::Bulk(next), Value::Array(keys)) = (&parts[0], &parts[1]) else { panic!("{parts:?}") };
        assert!(keys.len() <= 50, "a page of {} keys passes the cap", keys.len());
        seen += keys.len();
        cursor = String::from_utf8(next.to_vec()).unwrap();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen, 100);
    assert_eq!(
        c.cmd_str(&["EXISTS", "key:0000000000000001", "key:0000000000000001"]).await.unwrap(),
        Value::Integer(2)
    );
    assert_eq!(c.cmd_str(&["PING"]).await.unwrap(), pong());
}

#[tokio::test]
async fn pattern_matching_runs_off_the_async_workers() {
    let s = start(config(|_| {}), Limits::default()).await;
    s.replica.put(b"user:1", b"x");
    s.replica.put(b"other", b"x");
    let mut c = RespClient::connect(s.resp).await.unwrap().with_read_timeout(DEADLINE);
    let before = metric(&s.app, "rampart_offloaded_jobs_total").unwrap();
    assert_eq!(c.cmd_str(&["KEYS", "u*"]).await.unwrap(), Value::Array(vec![Value::bulk("user:1")]));
    let after_keys = metric(&s.app, "rampart_offloaded_jobs_total").unwrap();
    assert!(after_keys > before, "KEYS must match on the blocking pool");
    let reply = c.cmd_str(&["SCAN", "0", "MATCH", "?ser*"]).await.unwrap();
    assert_eq!(reply, Value::Array(vec![Value::bulk("0"), Value::Array(vec![Value::bulk("user:1")])]));
    assert!(metric(&s.app, "rampart_offloaded_jobs_total").unwrap() > after_keys, "SCAN MATCH too");
    assert_eq!(metric(&s.app, "rampart_scan_jobs_running"), Some(0.0), "every slot is given back");
}

/// Off the workers means where a blocking call is allowed: `Handle::block_on` panics on an
/// async worker ("cannot start a runtime from within a runtime") and works on a blocking thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offloaded_work_runs_on_a_thread_that_may_block() {
    let s = start(config(|_| {}), Limits::default()).await;
    let may_block = || std::panic::catch_unwind(|| tokio::runtime::Handle::current().block_on(async {})).is_ok();
    assert!(!may_block(), "the check must fail on an async worker");
    assert!(s.app.off_workers(may_block).await.unwrap(), "offloaded work must run where it may block");
}

#[tokio::test]
async fn long_requests_past_scan_jobs_max_are_refused_naming_it() {
    let s = start(
        config(|c| {
            c.scan_jobs_max = 1;
            c.request_timeout = Duration::from_millis(100);
        }),
        Limits::default(),
    )
    .await;
    let held = s.app.scan_slot().await.unwrap();
    let mut c = RespClient::connect(s.resp).await.unwrap().with_read_timeout(DEADLINE);
    let reply = c.cmd_str(&["KEYS", "*"]).await.unwrap();
    assert!(matches!(&reply, Value::Error(e) if e.starts_with("TRYAGAIN") && e.contains("scan_jobs_max")), "{reply:?}");
    assert_eq!(metric(&s.app, "rampart_scan_jobs_refused_total"), Some(1.0));
    assert_eq!(c.cmd_str(&["GET", "k"]).await.unwrap(), Value::Null, "short requests need no slot");
    drop(held);
    assert_eq!(c.cmd_str(&["KEYS", "*"]).await.unwrap(), Value::Array(vec![]));
}

#[tokio::test]
async fn lists_page_by_bytes_with_a_continuation_token() {
    let s = start(config(|_| {}), Limits { reply_bytes_max: 4096, ..Limits::default() }).await;
    for i in 0..60 {
        s.replica.put(format!("p/{i:03}").as_bytes(), &[b'v'; 200]);
    }
    s.replica.put(b"q/other", b"x");
    let mut keys = Vec::new();
    let mut path = "/v1/kv?prefix=p/".to_string();
    for page in 0.. {
        assert!(page < 60, "the pages must end");
        let (status, body) = http_get(s.http, &path).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.len() <= 4096, "a page of {} bytes passes reply_bytes_max", body.len());
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let items = json["items"].as_array().unwrap();
        assert!(!items.is_empty());
        keys.extend(items.iter().map(|i| i["key"].as_str().unwrap().to_string()));
        assert!(items.iter().all(|i| i["value"].as_str().unwrap().len() == 200 && i["revision"].is_u64()));
        match json["continue"].as_str() {
            Some(token) => {
                assert_eq!(json["more"], true);
                path = format!("/v1/kv?prefix=p/&continue={token}");
            }
            None => {
                assert_eq!(json["more"], false);
                break;
            }
        }
    }
    let want: Vec<String> = (0..60).map(|i| format!("p/{i:03}")).collect();
    assert_eq!(keys, want);
    let (status, body) = http_get(s.http, "/v1/kv?prefix=p/&continue=not*base64").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("continue"), "{body}");
}

/// Both listeners with TLS: a client that stalls in the handshake is closed after the header
/// timeout and counted; a plaintext client gets no reply; a real TLS client is served.
#[tokio::test]
async fn tls_listeners_bound_the_handshake_and_serve_tls_clients() {
    let ca = rampart_tls::dev::DevCa::generate().unwrap();
    let cert = ca.server_cert(&["localhost"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("s.pem"), dir.path().join("s-key.pem"));
    std::fs::write(&c, &cert.cert).unwrap();
    std::fs::write(&k, &cert.key).unwrap();
    let tls = rampart_tls::load_server_config(&c, &k).unwrap();
    let s = start(
        config(|cfg| {
            cfg.client_header_timeout = Duration::from_millis(300);
            cfg.tls = Some(tls);
        }),
        Limits::default(),
    )
    .await;
    for (api, addr) in [("resp", s.resp), ("http", s.http)] {
        // One byte of a ClientHello, then nothing.
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(&[0x16]).await.unwrap();
        assert!(read_to_close(&mut stalled).await.is_empty(), "{api}: no bytes for a stalled handshake");
        // Plaintext on a TLS listener: never answered as a command.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        let got = read_to_close(&mut plain).await;
        assert!(!got.starts_with(b"+PONG"), "{api}: plaintext was served: {got:?}");
        let closed = format!("rampart_client_connections_closed_total{{api=\"{api}\",reason=\"tls_handshake\"}}");
        wait_until("both handshake failures counted", DEADLINE, || metric(&s.app, &closed) == Some(2.0)).await;
    }
    // A TLS client gets PONG.
    let connector = rampart_tls::tokio_rustls::TlsConnector::from(
        rampart_tls::client_config_from_pem(ca.pem().cert.as_bytes()).unwrap(),
    );
    let tcp = TcpStream::connect(s.resp).await.unwrap();
    let name = rampart_tls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut buf = [0u8; 7];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"+PONG\r\n");
}
