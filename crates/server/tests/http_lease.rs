//! The lease endpoints in front of a replica without leases (the in-memory one answers as
//! multi-master does): every one is 501 naming leader mode, and malformed requests are 400
//! before any replica is asked.

mod support;

use std::time::Duration;

use support::{config, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(20);

async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, c.read_to_end(&mut out)).await.unwrap().unwrap();
    let reply = String::from_utf8(out).unwrap();
    let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn without_leader_mode_every_lease_endpoint_is_501_and_bad_requests_are_400() {
    let s = start(config(|_| {}), rampart_kv::Limits::default()).await;
    let leader_only = rampart_kv::leader_mode_only("leases");
    for (method, path, body) in [
        ("POST", "/v1/lease", r#"{"ttl_ms":5000}"#),
        ("POST", "/v1/lease/7/keepalive", ""),
        ("GET", "/v1/lease/7", ""),
        ("DELETE", "/v1/lease/7", ""),
        ("PUT", "/v1/kv/k?lease=7", "v"),
    ] {
        let (status, body) = http(s.http, method, path, body).await;
        assert_eq!(status, 501, "{method} {path}: {body}");
        assert_eq!(body["error"], leader_only.as_str(), "{method} {path}");
    }
    for (method, path, body, words) in [
        ("POST", "/v1/lease", r#"{"ttl":5000}"#, "ttl_ms"),
        ("POST", "/v1/lease/0/keepalive", "", "positive integer"),
        ("GET", "/v1/lease/x", "", "positive integer"),
        ("PUT", "/v1/kv/k?lease=7&ttl_ms=100", "v", "cannot be combined"),
        ("PUT", "/v1/kv/k?lease=7&cas=0", "v", "cannot be combined"),
        ("PUT", "/v1/kv/k?lease=-1", "v", "positive integer"),
    ] {
        let (status, body) = http(s.http, method, path, body).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert!(body["error"].as_str().unwrap_or("").contains(words), "{method} {path}: {body}");
    }
    assert!(s.replica.stored_expiry(b"k").is_none(), "nothing was written");
}
