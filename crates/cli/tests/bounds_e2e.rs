//! End-to-end tests of the client-facing limits with real `rampart server` processes, in both
//! replication modes: replies past `--reply-bytes-max` are refused before they are built, APPEND
//! is bounded by `--value-bytes-max` as SET is, lists page by bytes with a continuation token,
//! glob patterns have a length cap, and slow or surplus clients are turned away while the node
//! goes on serving.

mod common;

use std::time::Duration;

use common::*;
use rampart_resp::client::RespClient;
use rampart_resp::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MM: &[&str] = &["--replication", "multi-master"];
const T: Duration = Duration::from_secs(20);

/// A one-node cluster that takes writes, and a client.
async fn node(extra: &[&str]) -> (Cluster, RespClient) {
    let cluster = Cluster::start(1, extra);
    wait_for("the node to take writes", Duration::from_secs(60), || {
        let addr = cluster.resp_addr(1);
        async move {
            let mut c = RespClient::connect(addr).await.ok()?;
            matches!(c.cmd_str(&["SET", "ready", "1"]).await.ok()?, Value::SimpleString(_)).then_some(())
        }
    })
    .await;
    let c = resp(&cluster, 1).await;
    (cluster, c)
}

fn with(mode: &[&str], more: &[&'static str]) -> Vec<&'static str> {
    let mode: Vec<&'static str> = if mode.is_empty() { vec![] } else { MM.to_vec() };
    mode.into_iter().chain(more.iter().copied()).collect()
}

async fn mget_past_the_reply_cap_is_refused(mode: &[&str]) {
    let (_cluster, mut c) = node(&with(mode, &["--reply-bytes-max", "2000000"])).await;
    let value = vec![b'v'; 100_000];
    assert_eq!(c.cmd(&[b"SET", b"big", &value]).await.unwrap(), Value::SimpleString("OK".into()));
    // The attack, scaled: 200,000 copies of a 100 KB key would be 20 GB of reply.
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(&b"big"[..], 200_000));
    let reply = c.cmd(&args).await.unwrap();
    assert_eq!(reply, Value::Error("ERR reply would exceed reply_bytes_max (2000000 bytes)".into()));
    // Within the cap it answers, and the node goes on serving.
    let reply = c.cmd(&[b"MGET", b"big", b"nope", b"big"]).await.unwrap();
    let Value::Array(items) = reply else { panic!("{reply:?}") };
    assert_eq!(items.len(), 3);
    assert_eq!(items[1], Value::Null);
    let copies: Vec<&[u8]> = std::iter::once(&b"EXISTS"[..]).chain(std::iter::repeat_n(&b"big"[..], 100)).collect();
    assert_eq!(c.cmd(&copies).await.unwrap(), Value::Integer(100), "EXISTS holds no values");
    assert_eq!(c.cmd_str(&["PING"]).await.unwrap(), Value::SimpleString("PONG".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_refuses_a_reply_past_reply_bytes_max() {
    mget_past_the_reply_cap_is_refused(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_mode_refuses_a_reply_past_reply_bytes_max() {
    mget_past_the_reply_cap_is_refused(MM).await;
}

async fn append_is_bounded_like_set(mode: &[&str]) {
    let (_cluster, mut c) = node(&with(mode, &["--value-bytes-max", "1000"])).await;
    let set = c.cmd(&[b"SET", b"k", &[b'a'; 1001]]).await.unwrap();
    assert_eq!(set, Value::Error("ERR value of 1001 bytes exceeds the limit of 1000 bytes (value_bytes_max)".into()));
    assert_eq!(c.cmd(&[b"SET", b"k", &[b'a'; 600]]).await.unwrap(), Value::SimpleString("OK".into()));
    let append = c.cmd(&[b"APPEND", b"k", &[b'b'; 600]]).await.unwrap();
    assert_eq!(
        append,
        Value::Error("ERR value of 1200 bytes exceeds the limit of 1000 bytes (value_bytes_max)".into()),
        "APPEND must refuse what SET refuses, in the same words"
    );
    assert_eq!(c.cmd_str(&["STRLEN", "k"]).await.unwrap(), Value::Integer(600), "the refused APPEND changed nothing");
    assert_eq!(c.cmd(&[b"APPEND", b"k", &[b'b'; 400]]).await.unwrap(), Value::Integer(1000));
    assert_eq!(c.cmd(&[b"APPEND", b"fresh", &[b'c'; 1001]]).await.unwrap(), set);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_bounds_append_by_the_value_limit() {
    append_is_bounded_like_set(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_mode_bounds_append_by_the_value_limit() {
    append_is_bounded_like_set(MM).await;
}

async fn lists_continue_past_the_byte_cap(mode: &[&str]) {
    let (cluster, mut c) = node(&with(mode, &["--value-bytes-max", "1000", "--reply-bytes-max", "5000"])).await;
    for i in 0..40 {
        let key = format!("p/{i:03}");
        assert_eq!(c.cmd(&[b"SET", key.as_bytes(), &[b'v'; 500]]).await.unwrap(), Value::SimpleString("OK".into()));
    }
    let mut keys = Vec::new();
    let mut url = format!("{}/v1/kv?prefix=p/&limit=10000", cluster.http(1));
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 40, "the pages must end");
        let r = http_request(Method::GET, &url, "", T).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.body.len() <= 5000, "a page of {} bytes passes reply_bytes_max", r.body.len());
        let json = r.json().unwrap();
        keys.extend(json["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap().to_string()));
        match json["continue"].as_str() {
            Some(token) => url = format!("{}/v1/kv?prefix=p/&limit=10000&continue={token}", cluster.http(1)),
            None => break,
        }
    }
    assert!(pages >= 4, "40 items of 500 bytes need several pages of 5000, got {pages}");
    assert_eq!(keys, (0..40).map(|i| format!("p/{i:03}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_lists_page_by_bytes() {
    lists_continue_past_the_byte_cap(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_mode_lists_page_by_bytes() {
    lists_continue_past_the_byte_cap(MM).await;
}

/// The pattern (300 KB of `*[aaaa…`) is refused by its length; the longest accepted
/// pathological pattern is matched against long keys off the async workers, twice at once,
/// and the node answers others meanwhile and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_patterns_are_refused_or_cheap() {
    let (cluster, mut c) = node(&[]).await;
    for i in 0..200 {
        let key = format!("{i}{}", "b".repeat(2000));
        assert_eq!(c.cmd(&[b"SET", key.as_bytes(), b"v"]).await.unwrap(), Value::SimpleString("OK".into()));
    }
    let mut huge = b"*[".to_vec();
    huge.resize(300_000, b'a');
    let reply = c.cmd(&[b"KEYS", &huge]).await.unwrap();
    assert_eq!(
        reply,
        Value::Error("ERR pattern of 300000 bytes exceeds the limit of 4096 bytes (glob_pattern_bytes_max)".into())
    );
    let mut longest = b"*[".to_vec();
    longest.resize(4096, b'a');
    let mut a = resp(&cluster, 1).await;
    let mut b = resp(&cluster, 1).await;
    let keys: [&[u8]; 2] = [b"KEYS", &longest];
    let scan: [&[u8]; 6] = [b"SCAN", b"0", b"MATCH", &longest, b"COUNT", b"1000"];
    let (ra, rb) = tokio::join!(a.cmd(&keys), b.cmd(&scan));
    assert_eq!(ra.unwrap(), Value::Array(vec![]));
    assert!(matches!(rb.unwrap(), Value::Array(parts) if parts[1] == Value::Array(vec![])));
    assert_eq!(c.cmd_str(&["DBSIZE"]).await.unwrap(), Value::Integer(201));
}

/// Reads until the server closes the connection.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(T, async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the server must close the connection");
    out
}

async fn metric(cluster: &Cluster, name: &str) -> Option<f64> {
    let r = http_request(Method::GET, &format!("{}/metrics", cluster.http(1)), "", T).await.ok()?;
    r.text().lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_surplus_clients_are_turned_away_and_the_node_serves_on() {
    let flags = ["--client-header-timeout-ms", "1000", "--resp-connections-max", "4", "--http-connections-max", "4"];
    let (cluster, _) = node(&flags).await;
    let resp_addr = cluster.resp_addr(1);
    let http_addr = cluster.specs[&1].http.clone();
    // One byte of a request each, then nothing: both listeners close them after the header
    // timeout.
    let mut slow_resp = TcpStream::connect(&resp_addr).await.unwrap();
    slow_resp.write_all(b"*").await.unwrap();
    let mut slow_http = TcpStream::connect(&http_addr).await.unwrap();
    slow_http.write_all(b"G").await.unwrap();
    let said = read_to_close(&mut slow_resp).await;
    assert_eq!(said, b"-ERR timeout: no complete request within client_header_timeout_ms (1000 ms)\r\n");
    read_to_close(&mut slow_http).await;
    for api in ["resp", "http"] {
        let name = format!("rampart_client_connections_closed_total{{api=\"{api}\",reason=\"header_timeout\"}}");
        wait_for("the close counted", T, || async { (metric(&cluster, &name).await? >= 1.0).then_some(()) }).await;
    }
    // The cap: with four clients in, a fifth is refused as Redis refuses it.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut h = RespClient::connect(&resp_addr).await.unwrap().with_read_timeout(T);
        assert_eq!(h.cmd_str(&["PING"]).await.unwrap(), Value::SimpleString("PONG".into()));
        held.push(h);
    }
    let mut surplus = TcpStream::connect(&resp_addr).await.unwrap();
    surplus.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(read_to_close(&mut surplus).await, b"-ERR max number of clients reached\r\n");
    assert_eq!(held[0].cmd_str(&["SET", "still", "serving"]).await.unwrap(), Value::SimpleString("OK".into()));
    for h in &mut held {
        assert_eq!(h.cmd_str(&["GET", "still"]).await.unwrap(), Value::bulk("serving"));
    }
    let refused = metric(&cluster, "rampart_client_connections_refused_total{api=\"resp\"}").await;
    assert_eq!(refused, Some(1.0));
}
