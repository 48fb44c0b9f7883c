//! Tests of error mapping (pure) and of the client against a tiny scripted
//! HTTP/1.1 server on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

#[test]
fn classify_statuses() {
    let body = br#"{"error":"leader changing","code":"TRYAGAIN"}"#;
    assert!(classify("e", 200, b"", Retry::NotIdempotent).is_none());
    assert!(
        matches!(classify("e", 503, body, Retry::NotIdempotent), Some(Step::Next(m)) if m == "503 TRYAGAIN: leader changing")
    );
    let timeout = br#"{"error":"commit timed out","code":"TIMEOUT"}"#;
    assert!(matches!(classify("e", 504, timeout, Retry::Idempotent), Some(Step::Next(_))));
    assert!(matches!(
        classify("e", 504, timeout, Retry::NotIdempotent),
        Some(Step::Fail(Error::OutcomeUnknown { reason, .. })) if reason == "504 TIMEOUT: commit timed out"
    ));
    assert!(matches!(
        classify("e", 404, br#"{"error":"no such key","code":"NOT_FOUND"}"#, Retry::Idempotent),
        Some(Step::Fail(Error::NotFound { .. }))
    ));
    assert!(
        matches!(classify("e", 409, br#"{"error":"rev 3","code":"CAS_FAILED"}"#, Retry::NotIdempotent), Some(Step::Fail(Error::CasFailed { message, .. })) if message == "rev 3")
    );
    assert!(matches!(
        classify("e", 413, br#"{"error":"value too large","code":"TOO_LARGE"}"#, Retry::NotIdempotent),
        Some(Step::Fail(Error::Server { status: 413, code, .. })) if code == "TOO_LARGE"
    ));
    // A body that is not the JSON error shape still gives a readable message.
    assert!(matches!(
        classify("e", 500, b"  boom \n", Retry::Idempotent),
        Some(Step::Fail(Error::Server { status: 500, code, message, .. })) if code.is_empty() && message == "boom"
    ));
    assert!(
        matches!(classify("e", 400, b"", Retry::Idempotent), Some(Step::Fail(Error::Server { message, .. })) if message == "HTTP 400")
    );
}

#[test]
fn classify_transport_failures() {
    assert!(matches!(
        classify_failure("e", SendFailure::NotSent("refused".into()), Retry::NotIdempotent),
        Step::Next(_)
    ));
    assert!(matches!(
        classify_failure("e", SendFailure::MaybeSent("timed out".into()), Retry::Idempotent),
        Step::Next(_)
    ));
    assert!(matches!(
        classify_failure("e", SendFailure::MaybeSent("timed out".into()), Retry::NotIdempotent),
        Step::Fail(Error::OutcomeUnknown { .. })
    ));
    assert!(matches!(
        classify_failure("e", SendFailure::TooLarge(10), Retry::Idempotent),
        Step::Fail(Error::BadResponse { .. })
    ));
}

#[test]
fn error_messages() {
    let cas = |m: &str| Error::CasFailed { endpoint: "e".into(), message: m.into() }.to_string();
    assert_eq!(cas("key is at revision 3"), "compare-and-set failed: key is at revision 3");
    assert_eq!(cas("compare-and-set failed: key is at revision 3"), "compare-and-set failed: key is at revision 3");
    let nf = Error::NotFound { endpoint: "e".into(), message: "node 9".into() };
    assert_eq!(nf.to_string(), "not found: node 9");
    let e = Error::Unavailable {
        attempts: vec![
            Attempt { endpoint: "http://a:1".into(), error: "connection refused".into() },
            Attempt { endpoint: "http://b:2".into(), error: "503 CLUSTERDOWN: no quorum".into() },
        ],
    };
    assert_eq!(
        e.to_string(),
        "no endpoint could serve the request: http://a:1: connection refused; http://b:2: 503 CLUSTERDOWN: no quorum"
    );
    assert!(matches!(Client::new(vec![], Duration::from_secs(1)), Err(Error::NoEndpoints)));
    assert!(matches!(
        Client::new(vec!["https://x:1".into()], Duration::from_secs(1)),
        Err(Error::InvalidEndpoint { .. })
    ));
}

/// One request as the mock server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// A scripted answer.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    delay: Duration,
    /// Sent with `transfer-encoding: chunked` (no length known up front),
    /// in chunks of this many bytes.
    chunk_bytes: Option<usize>,
}

fn answer(status: u16, body: &str) -> Answer {
    Answer { status, headers: vec![], body: body.as_bytes().to_vec(), delay: Duration::ZERO, chunk_bytes: None }
}

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// Starts a one-request-per-connection HTTP/1.1 server; returns its address
/// and the log of requests it got.
async fn mock(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let handler = handler.clone();
            let log = log2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.lines();
                let mut first = lines.next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_owned();
                let path = first.next().unwrap_or("").to_owned();
                let header = |name: &str| {
                    lines
                        .clone()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.trim().to_owned())
                };
                let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                let content_type = header("content-type");
                while buf.len() < head_end + length {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let seen = Seen { method, path, content_type, body: buf[head_end..head_end + length].to_vec() };
                log.lock().unwrap().push(seen.clone());
                let a = handler(&seen);
                tokio::time::sleep(a.delay).await;
                let mut out = format!("HTTP/1.1 {} X\r\nconnection: close\r\n", a.status);
                match a.chunk_bytes {
                    None => out.push_str(&format!("content-length: {}\r\n", a.body.len())),
                    Some(_) => out.push_str("transfer-encoding: chunked\r\n"),
                }
                for (k, v) in &a.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                match a.chunk_bytes {
                    None => bytes.extend_from_slice(&a.body),
                    Some(n) => {
                        for chunk in a.body.chunks(n.max(1)) {
                            bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                            bytes.extend_from_slice(chunk);
                            bytes.extend_from_slice(b"\r\n");
                        }
                        bytes.extend_from_slice(b"0\r\n\r\n");
                    }
                }
                let _ = sock.write_all(&bytes).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, log)
}

/// An address where nothing listens.
async fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

fn client(endpoints: &[&str]) -> Client {
    Client::new(endpoints.iter().map(|s| s.to_string()).collect(), Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn get_found_and_not_found() {
    let (addr, log) = mock(|seen| {
        if seen.path == "/v1/kv/a%2Fb" {
            Answer { headers: vec![("X-Rampart-Revision", "7".into())], ..answer(200, "v\x01") }
        } else {
            answer(404, r#"{"error":"key not found","code":"NOT_FOUND"}"#)
        }
    })
    .await;
    let c = client(&[&addr]);
    assert_eq!(c.get("a/b").await.unwrap(), Some(Entry { value: b"v\x01".to_vec(), revision: 7 }));
    assert_eq!(c.get_stale("zz").await.unwrap(), None);
    let log = log.lock().unwrap();
    assert_eq!(log[1].path, "/v1/kv/zz?consistency=stale");
    assert_eq!(log[1].method, "GET");
}

#[tokio::test]
async fn get_without_revision_header_is_bad_response() {
    let (addr, _) = mock(|_| answer(200, "v")).await;
    assert!(matches!(client(&[&addr]).get("k").await, Err(Error::BadResponse { .. })));
}

#[tokio::test]
async fn fails_over_past_dead_and_busy_nodes_then_sticks() {
    let dead = dead_addr().await;
    let (busy, busy_log) = mock(|_| answer(503, r#"{"error":"no leader","code":"TRYAGAIN"}"#)).await;
    let (good, good_log) = mock(|_| answer(200, r#"{"revision":3}"#)).await;
    let c = client(&[&dead, &busy, &format!("http://{good}/")]);
    assert_eq!(c.put("k", "v").await.unwrap(), 3);
    assert_eq!(busy_log.lock().unwrap().len(), 1);
    // The node that answered is asked first next time.
    assert_eq!(c.put("k", "w").await.unwrap(), 3);
    assert_eq!(busy_log.lock().unwrap().len(), 1);
    let good_log = good_log.lock().unwrap();
    assert_eq!(good_log.len(), 2);
    assert_eq!(
        (good_log[1].method.as_str(), good_log[1].path.as_str(), good_log[1].body.as_slice()),
        ("PUT", "/v1/kv/k", &b"w"[..])
    );
}

#[tokio::test]
async fn unavailable_lists_every_attempt() {
    let dead = dead_addr().await;
    let (busy, _) = mock(|_| answer(503, r#"{"error":"no quorum","code":"CLUSTERDOWN"}"#)).await;
    match client(&[&dead, &busy]).get("k").await {
        Err(Error::Unavailable { attempts }) => {
            assert_eq!(attempts.len(), 2);
            assert!(attempts[0].error.starts_with("cannot connect: "), "{}", attempts[0].error);
            assert_eq!(attempts[1].error, "503 CLUSTERDOWN: no quorum");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn write_after_504_is_not_retried() {
    let (first, _) = mock(|_| answer(504, r#"{"error":"commit timed out","code":"TIMEOUT"}"#)).await;
    let (second, second_log) = mock(|_| answer(200, r#"{"revision":1}"#)).await;
    let c = client(&[&first, &second]);
    assert!(matches!(c.put("k", "v").await, Err(Error::OutcomeUnknown { .. })));
    assert!(matches!(c.delete("k").await, Err(Error::OutcomeUnknown { .. })));
    assert!(second_log.lock().unwrap().is_empty());
    // A read after a 504 is safe to retry elsewhere.
    let (third, _) = mock(|_| answer(200, r#"{"items":[],"more":false}"#)).await;
    let c = client(&[&first, &third]);
    assert_eq!(c.scan("p", 10).await.unwrap().items.len(), 0);
}

#[tokio::test]
async fn write_timeout_is_outcome_unknown_but_read_timeout_moves_on() {
    let slow = |_: &Seen| Answer { delay: Duration::from_secs(3), ..answer(200, r#"{"revision":1}"#) };
    let (slow_addr, _) = mock(slow).await;
    let (fast, fast_log) =
        mock(|_| Answer { headers: vec![("x-rampart-revision", "2".into())], ..answer(200, "v") }).await;
    let c = Client::new(vec![slow_addr.clone(), fast.clone()], Duration::from_millis(200)).unwrap();
    match c.put_cas("k", "v", 0).await {
        Err(Error::OutcomeUnknown { reason, .. }) => assert_eq!(reason, "no answer within 200 ms"),
        other => panic!("{other:?}"),
    }
    assert!(fast_log.lock().unwrap().is_empty());
    let c = Client::new(vec![slow_addr, fast], Duration::from_millis(200)).unwrap();
    assert_eq!(c.get("k").await.unwrap().unwrap().revision, 2);
}

#[tokio::test]
async fn cas_conflict_and_delete() {
    let (addr, log) = mock(|seen| match seen.method.as_str() {
        "PUT" => answer(409, r#"{"error":"revision is 5","code":"CAS_FAILED"}"#),
        _ => answer(200, r#"{"deleted":true,"revision":9}"#),
    })
    .await;
    let c = client(&[&addr]);
    assert!(
        matches!(c.put_cas("k", "v", 4).await, Err(Error::CasFailed { message, .. }) if message == "revision is 5")
    );
    assert_eq!(c.delete("k").await.unwrap(), Deleted { deleted: true, revision: 9 });
    let log = log.lock().unwrap();
    assert_eq!(log[0].path, "/v1/kv/k?cas=4");
    assert_eq!((log[1].method.as_str(), log[1].path.as_str()), ("DELETE", "/v1/kv/k"));
}

#[tokio::test]
async fn membership_calls() {
    let member = r#"{"id":4,"peer_addr":"127.0.0.1:7004","resp_addr":"127.0.0.1:6004","http_addr":"127.0.0.1:8004","voter":false}"#;
    let list = format!(r#"{{"members":[{member}]}}"#);
    let (addr, log) = mock(move |seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", "/v1/cluster/members") => answer(200, &format!(r#"{{"leader_id":null,"members":[{member}]}}"#)),
        ("POST", "/v1/cluster/members") | ("DELETE", "/v1/cluster/members/4") => answer(200, &list),
        _ => answer(404, r#"{"error":"no route","code":"NOT_FOUND"}"#),
    })
    .await;
    let c = client(&[&addr]);
    let m = c.members().await.unwrap();
    assert_eq!((m.leader_id, m.members[0].id, m.members[0].voter), (None, 4, false));
    let new = NewMember {
        id: 4,
        peer_addr: "127.0.0.1:7004".into(),
        resp_addr: "127.0.0.1:6004".into(),
        http_addr: "127.0.0.1:8004".into(),
    };
    assert_eq!(c.add_member(&new).await.unwrap()[0].http_addr, "127.0.0.1:8004");
    assert_eq!(c.remove_member(4).await.unwrap().len(), 1);
    assert!(matches!(c.remove_member(5).await, Err(Error::NotFound { .. })));
    let sent: NewMember = serde_json::from_slice(&log.lock().unwrap()[1].body).unwrap();
    assert_eq!(sent, new);
}

#[tokio::test]
async fn status_all_reports_each_node() {
    let (up, _) = mock(|_| {
        answer(
            200,
            r#"{"id":2,"role":"follower","leader_id":1,"term":3,"commit_index":8,"applied_index":8,"members":[]}"#,
        )
    })
    .await;
    let dead = dead_addr().await;
    let c = client(&[&up, &dead]);
    let all = c.status_all().await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].1.as_ref().unwrap().role, "follower");
    assert!(matches!(&all[1].1, Err(Error::Unavailable { attempts }) if attempts.len() == 1));
    assert_eq!(c.status().await.unwrap().id, 2);
}

#[tokio::test]
async fn oversized_and_malformed_responses() {
    let (big, _) = mock(|_| answer(200, &"x".repeat(2000))).await;
    let c = client(&[&big]).with_max_response_bytes(1000);
    assert!(
        matches!(c.scan("", 1).await, Err(Error::BadResponse { reason, .. }) if reason.contains("larger than 1000"))
    );
    let (junk, _) = mock(|_| answer(200, "not json")).await;
    assert!(matches!(client(&[&junk]).status().await, Err(Error::BadResponse { .. })));
}

#[tokio::test]
async fn writes_say_what_their_body_is() {
    let (addr, log) = mock(|seen| match seen.method.as_str() {
        "PUT" => answer(200, r#"{"revision":1}"#),
        _ => answer(200, r#"{"members":[]}"#),
    })
    .await;
    let c = client(&[&addr]);
    c.put("k", "").await.unwrap();
    let new = NewMember { id: 4, peer_addr: "p".into(), resp_addr: "r".into(), http_addr: "h".into() };
    c.add_member(&new).await.unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log[0].content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(log[1].content_type.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn oversized_chunked_response_is_refused() {
    let (big, _) = mock(|_| Answer { chunk_bytes: Some(100), ..answer(200, &"x".repeat(2000)) }).await;
    let c = client(&[&big]).with_max_response_bytes(1000);
    assert!(
        matches!(c.scan("", 1).await, Err(Error::BadResponse { reason, .. }) if reason.contains("larger than 1000"))
    );
    // At the bound exactly is fine.
    let (exact, _) = mock(|_| Answer { chunk_bytes: Some(7), ..answer(200, r#"{"items":[],"more":false}"#) }).await;
    let c = client(&[&exact]).with_max_response_bytes(r#"{"items":[],"more":false}"#.len());
    assert!(!c.scan("", 1).await.unwrap().more);
}

mod one_request {
    use super::*;
    use crate::http::{self, HttpClient, Method, StatusCode};

    #[tokio::test]
    async fn answers_status_and_body() {
        let (addr, log) = mock(|seen| answer(201, &format!("got {}", seen.body.len()))).await;
        let url = format!("http://{addr}/v1/kv/x");
        let (status, body) = http::request(Method::PUT, &url, "hello", Duration::from_secs(5)).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::CREATED, &b"got 5"[..]));
        let (status, body) = http::request(Method::GET, &url, "", Duration::from_secs(5)).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::CREATED, &b"got 0"[..]));
        let (_, body) = http::request_json(Method::POST, &url, &serde_json::json!({"id": 4}), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&body[..], b"got 8");
        let log = log.lock().unwrap();
        let seen: Vec<_> =
            log.iter().map(|s| (s.method.as_str(), s.path.as_str(), s.content_type.as_deref())).collect();
        assert_eq!(
            seen,
            [
                ("PUT", "/v1/kv/x", Some("application/octet-stream")),
                ("GET", "/v1/kv/x", None),
                ("POST", "/v1/kv/x", Some("application/json")),
            ]
        );
        assert_eq!(log[2].body, br#"{"id":4}"#);
    }

    #[tokio::test]
    async fn https_without_a_ca_and_bad_urls_are_refused_before_connecting() {
        for url in ["https://127.0.0.1:1/v1/status", "127.0.0.1:1/v1/status", "http:///x"] {
            match http::request(Method::GET, url, "", Duration::from_secs(5)).await {
                Err(e @ http::Error::InvalidRequest { .. }) => assert!(!e.may_have_been_sent(), "{url}: {e}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        let e = http::request(Method::GET, "https://x:1/", "", Duration::from_secs(5)).await.unwrap_err();
        assert!(e.to_string().contains("https needs a CA certificate"), "{e}");
    }

    #[tokio::test]
    async fn refused_connection_was_not_sent() {
        let dead = dead_addr().await;
        match http::request(Method::PUT, &format!("http://{dead}/k"), "v", Duration::from_secs(5)).await {
            Err(e @ http::Error::Connect { .. }) => assert!(!e.may_have_been_sent()),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn slow_answer_times_out_and_may_have_been_sent() {
        let (slow, log) = mock(|_| Answer { delay: Duration::from_secs(3), ..answer(200, "late") }).await;
        match http::request(Method::PUT, &format!("http://{slow}/k"), "v", Duration::from_millis(100)).await {
            Err(e @ http::Error::Timeout { timeout_ms: 100, .. }) => {
                assert!(e.may_have_been_sent());
                assert!(e.to_string().ends_with("no answer within 100 ms"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(log.lock().unwrap().len(), 1, "the request reached the server");
    }

    #[tokio::test]
    async fn body_bound_holds_with_and_without_a_length() {
        for chunk_bytes in [None, Some(64)] {
            let (big, _) = mock(move |_| Answer { chunk_bytes, ..answer(200, &"x".repeat(1001)) }).await;
            let url = format!("http://{big}/");
            let c = HttpClient::new(Duration::from_secs(5)).with_response_bytes_max(1000);
            match c.send(Method::GET, &url, None, http::Bytes::new()).await {
                Err(http::Error::TooLarge { bytes_max: 1000, .. }) => {}
                other => panic!("{chunk_bytes:?}: {other:?}"),
            }
            let c = c.with_response_bytes_max(1001);
            let r = c.send(Method::GET, &url, None, http::Bytes::new()).await.unwrap();
            assert_eq!(r.body.len(), 1001, "{chunk_bytes:?}");
        }
        assert_eq!(HttpClient::new(Duration::from_secs(1)).response_bytes_max(), http::RESPONSE_BYTES_MAX);
    }

    #[tokio::test]
    async fn invalid_content_type_is_an_error() {
        let c = HttpClient::new(Duration::from_secs(1));
        let e = c.send(Method::PUT, "http://127.0.0.1:1/", Some("a\nb"), http::Bytes::new()).await.unwrap_err();
        assert!(matches!(e, http::Error::InvalidRequest { .. }), "{e:?}");
    }
}

/// Serves every connection on a TLS listener with the certificate of
/// `server_ca` for `localhost`, answering `200 ok` to one request.
async fn tls_server(server_ca: &rampart_tls::dev::DevCa) -> u16 {
    let cert = server_ca.server_cert(&["localhost"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("s.pem"), dir.path().join("s-key.pem"));
    std::fs::write(&c, &cert.cert).unwrap();
    std::fs::write(&k, &cert.key).unwrap();
    let acceptor = rampart_tls::tokio_rustls::TlsAcceptor::from(rampart_tls::load_server_config(&c, &k).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok").await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_checks_the_server_against_the_given_ca() {
    let ca = rampart_tls::dev::DevCa::generate().unwrap();
    let port = tls_server(&ca).await;
    let url = format!("https://localhost:{port}/v1/status");
    let trusting = rampart_tls::client_config_from_pem(ca.pem().cert.as_bytes()).unwrap();
    let client = http::HttpClient::with_tls(Duration::from_secs(10), trusting);
    let r = client.send(Method::GET, &url, None, Bytes::new()).await.unwrap();
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));

    // A server whose certificate is not from the CA is refused during the
    // handshake: nothing was sent.
    let other = rampart_tls::dev::DevCa::generate().unwrap();
    let stranger = rampart_tls::client_config_from_pem(other.pem().cert.as_bytes()).unwrap();
    let client = http::HttpClient::with_tls(Duration::from_secs(10), stranger);
    let e = client.send(Method::GET, &url, None, Bytes::new()).await.unwrap_err();
    assert!(matches!(e, http::Error::Connect { .. }) && !e.may_have_been_sent(), "{e:?}");
    assert!(e.to_string().contains("certificate"), "{e}");

    // Without a CA, https is refused before anything is sent.
    let e =
        http::HttpClient::new(Duration::from_secs(10)).send(Method::GET, &url, None, Bytes::new()).await.unwrap_err();
    assert!(matches!(e, http::Error::InvalidRequest { .. }), "{e:?}");
}

#[tokio::test]
async fn lease_calls() {
    let (addr, log) = mock(|seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/v1/lease") => answer(200, r#"{"id":5,"ttl_ms":3000}"#),
        ("POST", "/v1/lease/5/keepalive") => answer(200, r#"{"id":5,"ttl_ms":3000}"#),
        ("GET", "/v1/lease/5") => answer(200, r#"{"id":5,"ttl_ms":3000,"remaining_ms":2500,"keys":["a","b/c"]}"#),
        ("GET", "/v1/lease/6") => answer(200, r#"{"id":6,"ttl_ms":3000,"remaining_ms":1,"keys_b64":["/w=="]}"#),
        ("DELETE", "/v1/lease/5") => answer(200, r#"{"revoked":true}"#),
        ("PUT", "/v1/kv/k?lease=5") => answer(200, r#"{"revision":12}"#),
        _ => answer(404, r#"{"error":"lease not found","code":"NOT_FOUND"}"#),
    })
    .await;
    let c = client(&[&addr]);
    assert_eq!(c.lease_grant(3000).await.unwrap(), Lease { id: 5, ttl_ms: 3000 });
    assert_eq!(c.lease_keepalive(5).await.unwrap(), Some(Lease { id: 5, ttl_ms: 3000 }));
    assert_eq!(c.lease_keepalive(9).await.unwrap(), None);
    let info = c.lease_info(5).await.unwrap().unwrap();
    assert_eq!((info.remaining_ms, info.keys), (2500, vec![b"a".to_vec(), b"b/c".to_vec()]));
    assert_eq!(c.lease_info(6).await.unwrap().unwrap().keys, vec![vec![0xff]]);
    assert_eq!(c.lease_info(7).await.unwrap(), None);
    assert_eq!(c.put_with_lease("k", "v", 5).await.unwrap(), 12);
    assert!(c.lease_revoke(5).await.unwrap());
    assert!(!c.lease_revoke(8).await.unwrap());
    let log = log.lock().unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&log[0].body).unwrap(), serde_json::json!({"ttl_ms":3000}));
    assert_eq!(log[0].content_type.as_deref(), Some("application/json"));
}
