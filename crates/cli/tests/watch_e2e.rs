//! End-to-end tests of `GET /v1/watch` with real `rampart server` processes: a watcher that
//! follows a prefix while a writer writes, across a SIGKILL of the node it watches through
//! (resuming on another node from the last revision + 1); 410 for compacted history; 400 for
//! bad parameters; 501 in multi-master mode.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A watch over a raw HTTP/1.1 connection: the status, then the stream's JSON lines
/// (chunked transfer encoding decoded here).
struct Watch {
    conn: TcpStream,
    /// Bytes read and not yet decoded.
    raw: Vec<u8>,
    /// Decoded body bytes not yet split into lines.
    body: Vec<u8>,
    status: u16,
}

impl Watch {
    async fn open(http: &str, query: &str) -> std::io::Result<Watch> {
        let addr = http.trim_start_matches("http://");
        let mut conn = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        let req = format!("GET /v1/watch?{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/x-ndjson\r\n\r\n");
        conn.write_all(req.as_bytes()).await?;
        let mut w = Watch { conn, raw: Vec::new(), body: Vec::new(), status: 0 };
        let deadline = Instant::now() + Duration::from_secs(5);
        let head_end = loop {
            if let Some(i) = w.raw.windows(4).position(|x| x == b"\r\n\r\n") {
                break i;
            }
            w.fill(deadline).await?;
        };
        let head = String::from_utf8_lossy(&w.raw[..head_end]).into_owned();
        w.status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        w.raw.drain(..head_end + 4);
        if w.status != 200 {
            // A whole JSON error body (content-length): read what is there.
            while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), w.conn.read_buf(&mut w.raw)).await {
                if n == 0 {
                    break;
                }
            }
            w.body = std::mem::take(&mut w.raw);
        }
        Ok(w)
    }

    async fn fill(&mut self, deadline: Instant) -> std::io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.conn.read_buf(&mut self.raw)).await {
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "watch read timed out")),
            Ok(Ok(0)) => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "watch stream ended")),
            Ok(r) => r.map(|_| ()),
        }
    }

    /// The next JSON line of the stream; an error when it ends or nothing comes within 5 s.
    async fn next(&mut self) -> std::io::Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(i) = self.body.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.body.drain(..=i).collect();
                return serde_json::from_slice(&line).map_err(std::io::Error::other);
            }
            // One chunk: hex size, CRLF, data, CRLF.
            if let Some(i) = self.raw.windows(2).position(|x| x == b"\r\n") {
                let size = usize::from_str_radix(std::str::from_utf8(&self.raw[..i]).unwrap_or("x").trim(), 16)
                    .map_err(|_| std::io::Error::other("bad chunk size"))?;
                if size == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "watch stream ended"));
                }
                if self.raw.len() >= i + 2 + size + 2 {
                    self.body.extend_from_slice(&self.raw[i + 2..i + 2 + size]);
                    self.raw.drain(..i + 2 + size + 2);
                    continue;
                }
            }
            self.fill(deadline).await?;
        }
    }
}

/// The PUTs a writer made: (key, revision) of each acknowledged one.
type Acked = Arc<Mutex<Vec<(String, u64)>>>;

/// Writes `w/<seq>` = seq, one at a time, to the nodes in turn (moving on after any error),
/// until `stop` or `n` attempts.
async fn writer(endpoints: Vec<String>, n: u64, stop: Arc<AtomicBool>, acked: Acked) {
    let mut ep = 0;
    for seq in 0..n {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("w/{seq:05}");
        let url = format!("{}/v1/kv/{key}", endpoints[ep % endpoints.len()]);
        match http_request(Method::PUT, &url, seq.to_string(), Duration::from_secs(3)).await {
            Ok(r) if r.status == StatusCode::OK => {
                let rev = r.json().and_then(|j| j["revision"].as_u64()).expect("a PUT answers its revision");
                acked.lock().unwrap().push((key, rev));
            }
            _ => {
                ep += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One event line as (type, key, value, revision).
fn event_of(v: &serde_json::Value) -> Option<(String, String, String, u64)> {
    if v["type"] == "progress" {
        return None;
    }
    assert_ne!(v["type"], "cutoff", "unexpected cut-off: {v}");
    Some((
        v["type"].as_str()?.to_string(),
        v["key"].as_str()?.to_string(),
        v["value"].as_str()?.to_string(),
        v["revision"].as_u64()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_on_another_node_after_a_sigkill_sees_every_write_once_in_order() {
    let mut c = Cluster::start(3, &[]);
    let all = [1u64, 2, 3];
    let leader = wait_leader(&c, &all).await;
    let endpoints: Vec<String> = all.iter().map(|id| c.http(*id)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let mut w = Watch::open(&c.http(leader), "prefix=w/&from_revision=1&progress_ms=200").await.unwrap();
    assert_eq!(w.status, 200);
    let writing = tokio::spawn(writer(endpoints, 400, stop.clone(), acked.clone()));
    let mut seen: Vec<(String, String, String, u64)> = Vec::new();
    // Follow the leader until 60 events, then kill it mid-stream.
    while seen.len() < 60 {
        let v = w.next().await.unwrap();
        seen.extend(event_of(&v));
    }
    c.kill(leader);
    // The old stream ends (with or without a last few events); take what still arrives.
    while let Ok(v) = w.next().await {
        seen.extend(event_of(&v));
    }
    let others: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    // Resume on another node from the last revision seen + 1, retrying while it elects.
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        assert!(Instant::now() < deadline, "the watch never caught up after the kill");
        let from = seen.last().map_or(1, |e| e.3 + 1);
        let node = others[i % others.len()];
        i += 1;
        let Ok(mut w) = Watch::open(&c.http(node), &format!("prefix=w/&from_revision={from}&progress_ms=200")).await
        else {
            continue;
        };
        assert_eq!(w.status, 200, "{}", String::from_utf8_lossy(&w.body));
        // Read until the writer is done and a progress covers its last acknowledged write.
        let caught_up = loop {
            match w.next().await {
                Ok(v) if v["type"] == "progress" => {
                    let rev = v["revision"].as_u64().unwrap();
                    let last_acked = acked.lock().unwrap().last().map_or(0, |a| a.1);
                    if writing.is_finished() && rev >= last_acked {
                        break Some(rev);
                    }
                }
                Ok(v) => seen.extend(event_of(&v)),
                Err(_) => break None,
            }
        };
        if let Some(rev) = caught_up {
            break (node, rev);
        }
    };
    stop.store(true, Ordering::Relaxed);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the writer made progress ({} acknowledged)", acked.len());
    // In revision order, each revision once (one key per write).
    assert!(seen.windows(2).all(|p| p[0].3 < p[1].3), "events in strictly increasing revision order");
    for (key, rev) in &acked {
        let hits: Vec<_> = seen.iter().filter(|e| &e.1 == key).collect();
        assert_eq!(hits.len(), 1, "acknowledged write {key} at {rev} seen exactly once: {hits:?}");
        assert_eq!(hits[0].3, *rev, "{key} seen at its write's revision");
        assert_eq!(hits[0].0, "put");
        let seq: u64 = key.trim_start_matches("w/").parse().unwrap();
        assert_eq!(hits[0].2, seq.to_string(), "{key}'s value");
    }
    // No gap: a fresh replay from revision 1 on the node the watch ended on yields exactly what
    // the watcher saw, up to where it stopped.
    let (node, upto) = done;
    let mut fresh = Watch::open(&c.http(node), "prefix=w/&from_revision=1&progress_ms=200").await.unwrap();
    let mut replay = Vec::new();
    loop {
        let v = fresh.next().await.unwrap();
        if v["type"] == "progress" && v["revision"].as_u64().unwrap() >= upto {
            break;
        }
        replay.extend(event_of(&v));
    }
    replay.retain(|e| e.3 <= upto);
    assert_eq!(replay, seen, "the resumed stream has no gap and no duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_is_410_and_bad_parameters_are_400() {
    let c = Cluster::start(1, &["--watch-history-revisions", "5"]);
    wait_leader(&c, &[1]).await;
    let mut last = 0;
    for i in 0..12 {
        let r =
            http_request(Method::PUT, &format!("{}/v1/kv/k{i}", c.http(1)), "v", Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        last = r.json().unwrap()["revision"].as_u64().unwrap();
    }
    let w = Watch::open(&c.http(1), "prefix=&from_revision=1").await.unwrap();
    assert_eq!(w.status, 410);
    let j: serde_json::Value = serde_json::from_slice(&w.body).unwrap();
    assert_eq!(j["oldest_revision"].as_u64(), Some(last - 4), "{j}");
    assert!(j["error"].as_str().unwrap().contains("compacted"), "{j}");
    // From the oldest kept revision, the last five writes replay.
    let mut w = Watch::open(&c.http(1), &format!("prefix=k&from_revision={}", last - 4)).await.unwrap();
    assert_eq!(w.status, 200);
    let mut revs = Vec::new();
    while revs.len() < 5 {
        let v = w.next().await.unwrap();
        revs.extend(event_of(&v).map(|e| e.3));
    }
    assert_eq!(revs, (last - 4..=last).collect::<Vec<_>>());
    for (query, names) in [
        ("", "key=K or prefix=P"),
        ("key=a&prefix=b", "not both"),
        ("key=a&from_revision=x", "from_revision"),
        ("key=a&progress_ms=5", "progress_ms"),
    ] {
        let w = Watch::open(&c.http(1), query).await.unwrap();
        assert_eq!(w.status, 400, "{query}");
        let body = String::from_utf8_lossy(&w.body).into_owned();
        assert!(body.contains(names), "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_mode_answers_501_naming_leader_mode() {
    let c = Cluster::start(1, &["--replication", "multi-master"]);
    wait_healthy(&c, &[1]).await;
    let w = Watch::open(&c.http(1), "key=a").await.unwrap();
    assert_eq!(w.status, 501);
    let body = String::from_utf8_lossy(&w.body).into_owned();
    assert!(body.contains("leader mode") && body.contains("watches"), "{body}");
}
