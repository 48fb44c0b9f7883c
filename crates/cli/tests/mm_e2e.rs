//! End-to-end tests of multi-master mode (leaderless CASPaxos per key) with
//! real `rampart server` processes: every node reads and writes every key,
//! SIGKILL and SIGSTOP of a node under load, restarts of every node, and data
//! dirs of the other replication mode refused at start.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rampart_resp::client::RespClient;
use rampart_resp::Value;

const MM: &[&str] = &["--replication", "multi-master"];
const ALL: [u64; 3] = [1, 2, 3];
/// Longer than the server's request timeout (5 s), so a slow write is
/// answered by the server (TIMEOUT) rather than cut off by the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until each node in `ids` answers a linearizable read (which needs a
/// majority in this mode); it writes no key.
async fn wait_serving(c: &Cluster, ids: &[u64]) {
    // A node can serve through the others' acceptors while its own is still in its first-boot
    // check; a kill then could leave it waiting forever. Healthy covers both.
    wait_healthy(c, ids).await;
    for &id in ids {
        let addr = c.resp_addr(id);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match RespClient::connect_timeout(addr.as_str(), Duration::from_secs(1)).await {
                Ok(cl) => {
                    let mut cl = cl.with_read_timeout(Duration::from_secs(5));
                    match cl.cmd_str(&["GET", "mm/ready"]).await {
                        Ok(Value::Error(e)) => e,
                        Ok(_) => break,
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "node {id} never served a read (last: {last}); its log:\n{}",
                c.log_tail(id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn clients(c: &Cluster) -> BTreeMap<u64, RespClient> {
    let mut m = BTreeMap::new();
    for id in ALL {
        m.insert(id, resp(c, id).await);
    }
    m
}

/// A read retried while the node answers an error reply (e.g. just after a
/// restart or a resume); any other reply is returned as is.
async fn read_retrying(cl: &mut RespClient, args: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cl.cmd_str(args).await {
            Ok(Value::Error(e)) => assert!(Instant::now() < deadline, "{args:?} kept failing: {e}"),
            Err(e) => panic!("{args:?}: {e}"),
            Ok(v) => return v,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn int_of(v: &Value) -> i64 {
    bulk(v).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not an integer string: {v:?}"))
}

/// Every key of a full `SCAN` (cursor 0 back to 0) through `cl`.
async fn scan_all(cl: &mut RespClient, pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_string();
    for _ in 0..1000 {
        let v = cmd(cl, &["SCAN", &cursor, "MATCH", pattern, "COUNT", "3"]).await;
        let Value::Array(parts) = v else { panic!("SCAN answered {v:?}") };
        let [next, Value::Array(batch)] = &parts[..] else { panic!("SCAN answered {parts:?}") };
        keys.extend(batch.iter().map(|k| bulk(k).expect("SCAN key")));
        cursor = bulk(next).expect("SCAN cursor");
        if cursor == "0" {
            return keys;
        }
    }
    panic!("SCAN did not finish within 1000 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reads_and_writes_every_key_linearizably() {
    let c = Cluster::start(3, MM);
    wait_serving(&c, &ALL).await;
    let mut cl = clients(&c).await;
    let mut live = BTreeSet::new();

    // A write through each node is read through every node right after its acknowledgement.
    for i in ALL {
        let (k, v) = (format!("mm/basic/k{i}"), format!("v{i}"));
        assert_eq!(cmd(cl.get_mut(&i).unwrap(), &["SET", &k, &v]).await, Value::ok(), "SET through node {i}");
        live.insert(k.clone());
        for j in ALL {
            let got = bulk(&cmd(cl.get_mut(&j).unwrap(), &["GET", &k]).await);
            assert_eq!(got.as_deref(), Some(v.as_str()), "written through node {i}, read through node {j}");
        }
    }
    // One key overwritten through each node in turn: a node that wrote it
    // before must never answer its own older value.
    let shared = "mm/basic/shared";
    live.insert(shared.to_string());
    for round in 0..2 {
        for i in ALL {
            let v = format!("r{round}n{i}");
            assert_eq!(cmd(cl.get_mut(&i).unwrap(), &["SET", shared, &v]).await, Value::ok());
            for j in ALL {
                let got = bulk(&cmd(cl.get_mut(&j).unwrap(), &["GET", shared]).await);
                assert_eq!(got.as_deref(), Some(v.as_str()), "{shared} written through node {i}, read through {j}");
            }
        }
    }
    // CAS through one node sees the value written through another.
    assert_eq!(cmd(cl.get_mut(&1).unwrap(), &["CAS", shared, "r1n3", "cas-1"]).await, Value::Integer(1));
    assert_eq!(cmd(cl.get_mut(&2).unwrap(), &["CAS", shared, "r1n3", "cas-2"]).await, Value::Integer(0));
    assert_eq!(bulk(&cmd(cl.get_mut(&3).unwrap(), &["GET", shared]).await).as_deref(), Some("cas-1"));

    // DEL through another node than the write; gone everywhere at once.
    let gone = "mm/basic/gone";
    assert_eq!(cmd(cl.get_mut(&2).unwrap(), &["SET", gone, "x"]).await, Value::ok());
    assert_eq!(cmd(cl.get_mut(&3).unwrap(), &["DEL", gone]).await, Value::Integer(1));
    for j in ALL {
        assert_eq!(cmd(cl.get_mut(&j).unwrap(), &["GET", gone]).await, Value::Null, "deleted key read through {j}");
        assert_eq!(cmd(cl.get_mut(&j).unwrap(), &["EXISTS", gone]).await, Value::Integer(0), "node {j}");
    }
    assert_eq!(cmd(cl.get_mut(&1).unwrap(), &["DEL", gone]).await, Value::Integer(0), "second DEL");

    // MGET and EXISTS over keys written through different nodes.
    for j in ALL {
        let v = cmd(
            cl.get_mut(&j).unwrap(),
            &["MGET", "mm/basic/k1", "mm/basic/k2", "mm/basic/k3", gone, "mm/basic/never"],
        )
        .await;
        let want = vec![Value::bulk("v1"), Value::bulk("v2"), Value::bulk("v3"), Value::Null, Value::Null];
        assert_eq!(v, Value::Array(want), "MGET through node {j}");
        let v = cmd(cl.get_mut(&j).unwrap(), &["EXISTS", "mm/basic/k1", "mm/basic/k2", "mm/basic/k3", gone]).await;
        assert_eq!(v, Value::Integer(3), "EXISTS through node {j}");
    }

    // INCR / INCRBY through different nodes.
    let n = "mm/basic/n";
    live.insert(n.to_string());
    assert_eq!(cmd(cl.get_mut(&1).unwrap(), &["INCR", n]).await, Value::Integer(1));
    assert_eq!(cmd(cl.get_mut(&2).unwrap(), &["INCRBY", n, "41"]).await, Value::Integer(42));
    assert_eq!(bulk(&cmd(cl.get_mut(&3).unwrap(), &["GET", n]).await).as_deref(), Some("42"));
    assert_eq!(cmd(cl.get_mut(&3).unwrap(), &["INCR", n]).await, Value::Integer(43));
    assert_eq!(bulk(&cmd(cl.get_mut(&1).unwrap(), &["GET", n]).await).as_deref(), Some("43"));

    // DBSIZE, KEYS and SCAN merge a majority's state: every node shows every
    // key written through any node, and not the deleted one.
    let want: Vec<String> = live.iter().cloned().collect();
    for j in ALL {
        let c1 = cl.get_mut(&j).unwrap();
        assert_eq!(cmd(c1, &["DBSIZE"]).await, Value::Integer(live.len() as i64), "DBSIZE through node {j}");
        let Value::Array(keys) = cmd(c1, &["KEYS", "*"]).await else { panic!("KEYS") };
        let mut keys: Vec<String> = keys.iter().map(|k| bulk(k).unwrap()).collect();
        keys.sort();
        assert_eq!(keys, want, "KEYS * through node {j}");
        let Value::Array(keys) = cmd(c1, &["KEYS", "mm/basic/k*"]).await else { panic!("KEYS") };
        assert_eq!(keys.len(), 3, "KEYS mm/basic/k* through node {j}: {keys:?}");
        let scanned: BTreeSet<String> = scan_all(c1, "mm/basic/*").await.into_iter().collect();
        assert_eq!(scanned, live, "SCAN through node {j}");
    }

    // Every node is a master.
    for j in ALL {
        let info = bulk(&cmd(cl.get_mut(&j).unwrap(), &["INFO", "replication"]).await).unwrap();
        assert!(info.contains("role:master"), "INFO replication of node {j}: {info}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_incr_through_all_nodes_counts_every_acknowledged_increment() {
    const PER_NODE: usize = 40;
    let key = "mm/counter";
    let c = Cluster::start(3, MM);
    wait_serving(&c, &ALL).await;
    let mut tasks = Vec::new();
    for id in ALL {
        let addr = c.resp_addr(id);
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut errors = Vec::new();
            let mut conn: Option<RespClient> = None;
            for _ in 0..PER_NODE {
                if conn.is_none() {
                    let cl = RespClient::connect_timeout(addr.as_str(), Duration::from_secs(5)).await.unwrap();
                    conn = Some(cl.with_read_timeout(WRITE_TIMEOUT));
                }
                match conn.as_mut().unwrap().cmd_str(&["INCR", key]).await {
                    Ok(Value::Integer(n)) => acked.push(n),
                    Ok(other) => errors.push(format!("node {id}: {other:?}")),
                    Err(e) => {
                        errors.push(format!("node {id}: {e}"));
                        conn = None;
                    }
                }
            }
            (acked, errors)
        }));
    }
    let mut replies = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (a, e) = t.await.unwrap();
        replies.extend(a);
        errors.extend(e);
    }
    let acked = replies.len() as i64;
    assert!(acked > 0, "no INCR was acknowledged: {errors:?}");
    // Each acknowledged increment took effect once, at its own place in one order.
    replies.sort();
    let distinct: BTreeSet<i64> = replies.iter().copied().collect();
    assert_eq!(distinct.len(), replies.len(), "two INCRs answered the same value: {replies:?}");
    for id in ALL {
        let mut cl = resp(&c, id).await;
        let total = int_of(&cmd(&mut cl, &["GET", key]).await);
        // A failed INCR may or may not have been applied; an acknowledged one was, once.
        assert!(
            acked <= total && total <= acked + errors.len() as i64,
            "node {id}: counter {total}, {acked} acknowledged, {} failed: {errors:?}",
            errors.len()
        );
        assert!(replies.last().copied().unwrap() <= total, "node {id}: counter {total} below a reply {replies:?}");
        if errors.is_empty() {
            assert_eq!(total, acked, "node {id}: counter is not the number of acknowledged INCRs");
            assert_eq!(replies, (1..=acked).collect::<Vec<_>>(), "INCR replies are not 1..={acked}");
        }
    }
    assert_eq!(acked as usize + errors.len(), 3 * PER_NODE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_works_through_every_node_and_a_node_that_is_not_running_cannot_be_added() {
    let c = Cluster::start(3, MM);
    wait_serving(&c, &ALL).await;
    const T: Duration = Duration::from_secs(15);
    let url = |id: u64, path: &str| format!("{}{path}", c.http(id));

    let r = http_request(Method::PUT, &url(1, "/v1/kv/mm/http/a"), "hello", T).await.unwrap();
    assert!(r.status.is_success(), "PUT through node 1: {} {}", r.status, r.text());
    let r = http_request(Method::GET, &url(2, "/v1/kv/mm/http/a"), "", T).await.unwrap();
    assert_eq!(r.status, 200, "GET through node 2");
    assert_eq!(r.text(), "hello");
    let r = http_request(Method::PUT, &url(3, "/v1/kv/mm/http/b"), "world", T).await.unwrap();
    assert!(r.status.is_success(), "PUT through node 3: {} {}", r.status, r.text());
    for id in ALL {
        let r = http_request(Method::GET, &url(id, "/v1/kv?prefix=mm/http/"), "", T).await.unwrap();
        assert_eq!(r.status, 200, "list through node {id}");
        let body = r.json().unwrap_or_else(|| panic!("list through node {id}: not JSON: {}", r.text()));
        let mut items: Vec<(String, String)> = body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("list through node {id}: {body}"))
            .iter()
            .map(|i| (i["key"].as_str().unwrap().to_string(), i["value"].as_str().unwrap().to_string()))
            .collect();
        items.sort();
        let want = vec![("mm/http/a".to_string(), "hello".to_string()), ("mm/http/b".to_string(), "world".to_string())];
        assert_eq!(items, want, "list through node {id}: {body}");
    }
    // HTTP and RESP are the same store.
    let mut r1 = resp(&c, 1).await;
    assert_eq!(bulk(&cmd(&mut r1, &["GET", "mm/http/b"]).await).as_deref(), Some("world"));
    // DELETE through another node; gone everywhere.
    let r = http_request(Method::DELETE, &url(2, "/v1/kv/mm/http/a"), "", T).await.unwrap();
    assert!(r.status.is_success(), "DELETE through node 2: {} {}", r.status, r.text());
    for id in ALL {
        let r = http_request(Method::GET, &url(id, "/v1/kv/mm/http/a"), "", T).await.unwrap();
        assert_eq!(r.status, 404, "deleted key through node {id}");
    }

    // Adding a node that is not running is a client error that says what to start.
    let body = serde_json::json!({
        "id": 4,
        "peer_addr": format!("127.0.0.1:{}", free_port()),
        "resp_addr": format!("127.0.0.1:{}", free_port()),
        "http_addr": format!("127.0.0.1:{}", free_port()),
    });
    for id in ALL {
        let r = http_request_json(Method::POST, &url(id, "/v1/cluster/members"), &body, T).await.unwrap();
        let status = r.status;
        let text = r.text();
        assert!(status.is_client_error(), "adding a member through node {id}: {status} {text}");
        assert!(text.to_lowercase().contains("multi-master"), "adding a member through node {id}: {status} {text}");
    }
    // The cluster still serves.
    assert_eq!(cmd(&mut r1, &["SET", "mm/http/after", "1"]).await, Value::ok());
    let mut r3 = resp(&c, 3).await;
    assert_eq!(bulk(&cmd(&mut r3, &["GET", "mm/http/after"]).await).as_deref(), Some("1"));
}

/// One HTTP request with its answer's headers.
async fn http_with_headers(method: Method, url: &str, body: &'static str) -> rampart_client::http::Response {
    let client = rampart_client::http::HttpClient::new(Duration::from_secs(15));
    let content_type = (!body.is_empty()).then_some("application/octet-stream");
    client
        .send(method.clone(), url, content_type, rampart_client::http::Bytes::from_static(body.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// The `X-Rampart-Revision` of an answer.
fn revision_header(r: &rampart_client::http::Response) -> u64 {
    let h = r.headers.get(rampart_client::REVISION_HEADER).unwrap_or_else(|| panic!("no revision header: {r:?}"));
    h.to_str().unwrap().parse().unwrap()
}

/// The `revision` of a successful PUT, checked against its header.
fn put_revision(r: &rampart_client::http::Response) -> u64 {
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let revision = body["revision"].as_u64().unwrap_or_else(|| panic!("no revision in {body}"));
    assert_eq!(revision_header(r), revision, "header and body agree");
    revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_revisions_are_per_key_the_same_on_every_node_and_cas_works_as_in_leader_mode() {
    let c = Cluster::start(3, MM);
    wait_serving(&c, &ALL).await;
    let url = |id: u64, path: &str| format!("{}{path}", c.http(id));
    let key = "/v1/kv/mm/rev/k";
    let get_everywhere = |want: Option<(&'static str, u64)>| {
        let urls: Vec<String> = ALL.iter().map(|&id| url(id, key)).collect();
        async move {
            for u in urls {
                let r = http_with_headers(Method::GET, &u, "").await;
                match want {
                    Some((value, revision)) => {
                        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, value.as_bytes()), "GET {u}");
                        assert_eq!(revision_header(&r), revision, "GET {u}: every node reports one revision");
                    }
                    None => assert_eq!(r.status, StatusCode::NOT_FOUND, "GET {u}"),
                }
            }
        }
    };

    // A PUT answers its revision; every node reports the same one for the value.
    let r1 = put_revision(&http_with_headers(Method::PUT, &url(1, key), "one").await);
    assert!(r1 > 0);
    get_everywhere(Some(("one", r1))).await;
    // A second PUT, through another node, gets a higher one.
    let r2 = put_revision(&http_with_headers(Method::PUT, &url(2, key), "two").await);
    assert!(r2 > r1, "{r2} after {r1}");
    get_everywhere(Some(("two", r2))).await;

    // cas=<old> and cas=0 (absent) are refused, naming the current revision; nothing changes.
    for stale in [r1, 0] {
        let r = http_with_headers(Method::PUT, &format!("{}?cas={stale}", url(3, key)), "lost").await;
        assert_eq!(r.status, StatusCode::CONFLICT, "cas={stale}: {r:?}");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["code"], "CAS_FAILED", "{body}");
        assert!(body["error"].as_str().unwrap().contains(&format!("revision {r2}")), "{body}");
    }
    get_everywhere(Some(("two", r2))).await;
    // cas=<current> writes, at a higher revision.
    let r3 = put_revision(&http_with_headers(Method::PUT, &format!("{}?cas={r2}", url(3, key)), "three").await);
    assert!(r3 > r2, "{r3} after {r2}");
    get_everywhere(Some(("three", r3))).await;

    // DELETE ?cas=: refused at an old revision, done at the current one.
    let r = http_with_headers(Method::DELETE, &format!("{}?cas={r2}", url(1, key)), "").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    get_everywhere(Some(("three", r3))).await;
    let r = http_with_headers(Method::DELETE, &format!("{}?cas={r3}", url(1, key)), "").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, serde_json::json!({"deleted": true, "revision": 0}), "a deleted key has no revision");
    get_everywhere(None).await;

    // Recreated (cas=0: only if absent): above every revision it had, so a cas held from before
    // the delete cannot match the new value.
    let r4 = put_revision(&http_with_headers(Method::PUT, &format!("{}?cas=0", url(2, key)), "again").await);
    assert!(r4 > r3, "{r4} after {r3}");
    let r = http_with_headers(Method::PUT, &format!("{}?cas={r3}", url(1, key)), "stale").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    get_everywhere(Some(("again", r4))).await;

    // Lists carry it too, on every node, and so does the rampart client (`rampart kv`).
    for id in ALL {
        let r = http_with_headers(Method::GET, &url(id, "/v1/kv?prefix=mm/rev/"), "").await;
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["items"], serde_json::json!([{"key": "mm/rev/k", "value": "again", "revision": r4}]));
    }
    let client =
        rampart_client::Client::new(ALL.iter().map(|&id| c.http(id)).collect(), Duration::from_secs(15)).unwrap();
    let entry = client.get("mm/rev/k").await.unwrap().expect("the key");
    assert_eq!((entry.value.as_slice(), entry.revision), (&b"again"[..], r4));
    let r5 = client.put_cas("mm/rev/k", "five", r4).await.unwrap();
    assert!(r5 > r4);
    assert!(client.put_cas("mm/rev/k", "six", r4).await.is_err(), "a stale cas through the client");
}

// ---------------------------------------------------------------------------
// Writers under faults.

/// One attempt of one write.
#[derive(Clone, Debug)]
struct Attempt {
    writer: usize,
    seq: u64,
    node: u64,
    started: Instant,
    ok: bool,
    reply: String,
}

struct Shared {
    prefix: String,
    stop: AtomicBool,
    attempts: Mutex<Vec<Attempt>>,
}

impl Shared {
    fn key_value(&self, w: usize, seq: u64) -> (String, String) {
        (format!("{}/w{w}/{seq}", self.prefix), format!("{}-v{w}.{seq}", self.prefix))
    }
}

/// Writer `w`: `SET <prefix>/w<w>/<seq> <value>` for seq = 1, 2, ... through
/// `nodes[w % nodes.len()]`; after any failure it reconnects to the next
/// node and retries the same key. Every attempt is recorded.
async fn writer(w: usize, nodes: Vec<(u64, String)>, shared: Arc<Shared>) {
    let mut ep = w % nodes.len();
    let mut conn: Option<RespClient> = None;
    let mut seq = 0u64;
    'keys: while !shared.stop.load(Ordering::Relaxed) {
        seq += 1;
        let (k, v) = shared.key_value(w, seq);
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                break 'keys;
            }
            if conn.is_none() {
                match RespClient::connect_timeout(nodes[ep].1.as_str(), Duration::from_secs(1)).await {
                    Ok(cl) => conn = Some(cl.with_read_timeout(WRITE_TIMEOUT)),
                    Err(_) => {
                        // Not sent: does not count as an attempt.
                        ep = (ep + 1) % nodes.len();
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
            }
            let started = Instant::now();
            let r = conn.as_mut().unwrap().cmd_str(&["SET", &k, &v]).await;
            let ok = matches!(&r, Ok(v) if *v == Value::ok());
            let reply = match &r {
                Ok(v) => format!("{v:?}"),
                Err(e) => e.to_string(),
            };
            shared.attempts.lock().unwrap().push(Attempt { writer: w, seq, node: nodes[ep].0, started, ok, reply });
            if ok {
                continue 'keys;
            }
            conn = None;
            ep = (ep + 1) % nodes.len();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

struct Writers {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_writers(c: &Cluster, prefix: &str, nodes: &[u64], n: usize) -> Writers {
    let shared =
        Arc::new(Shared { prefix: prefix.to_string(), stop: AtomicBool::new(false), attempts: Mutex::new(Vec::new()) });
    let eps: Vec<(u64, String)> = nodes.iter().map(|id| (*id, c.resp_addr(*id))).collect();
    let tasks = (0..n).map(|w| tokio::spawn(writer(w, eps.clone(), shared.clone()))).collect();
    Writers { shared, tasks }
}

impl Writers {
    /// Waits until attempts started at or after `since` were acknowledged at
    /// least `each` times through every node in `nodes`.
    async fn wait_acks(&self, what: &str, since: Instant, nodes: &[u64], each: usize) {
        let shared = self.shared.clone();
        wait_for(what, Duration::from_secs(30), || {
            let shared = shared.clone();
            async move {
                let a = shared.attempts.lock().unwrap();
                nodes
                    .iter()
                    .all(|n| a.iter().filter(|x| x.ok && x.node == *n && x.started >= since).count() >= each)
                    .then_some(())
            }
        })
        .await
    }

    async fn finish(self) -> Outcome {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let attempts = self.shared.attempts.lock().unwrap().clone();
        let acked = attempts.iter().filter(|a| a.ok).map(|a| self.shared.key_value(a.writer, a.seq)).collect();
        Outcome { attempts, acked }
    }
}

struct Outcome {
    attempts: Vec<Attempt>,
    /// (key, value) of every acknowledged write.
    acked: Vec<(String, String)>,
}

impl Outcome {
    /// Every write sent at or after `since` to a node not in `down` succeeded
    /// at its first attempt there or at the one retry after it.
    fn assert_at_most_two_attempts(&self, since: Instant, down: &[u64]) {
        let mut per_key: BTreeMap<(usize, u64), Vec<&Attempt>> = BTreeMap::new();
        for a in &self.attempts {
            if a.started >= since && !down.contains(&a.node) {
                per_key.entry((a.writer, a.seq)).or_default().push(a);
            }
        }
        let mut bad = Vec::new();
        for ((w, seq), tries) in &per_key {
            let failures_before_success = tries.iter().take_while(|a| !a.ok).count();
            if failures_before_success >= 2 {
                let shown: Vec<String> = tries.iter().map(|a| format!("node {}: {}", a.node, a.reply)).collect();
                bad.push(format!("w{w}/{seq}: {shown:?}"));
            }
        }
        assert!(
            per_key.len() >= 10,
            "only {} writes were sent to the running nodes in the phase checked",
            per_key.len()
        );
        assert!(
            bad.is_empty(),
            "{} of {} writes to running nodes needed more than two attempts: {:?}",
            bad.len(),
            per_key.len(),
            &bad[..bad.len().min(10)]
        );
    }
}

/// Every acknowledged write is readable through node `via` with the value written.
async fn verify_acked(c: &Cluster, via: u64, acked: &[(String, String)]) {
    assert!(!acked.is_empty(), "no write was acknowledged at all");
    let mut cl = resp(c, via).await;
    let mut wrong = Vec::new();
    for chunk in acked.chunks(100) {
        let mut args: Vec<&str> = vec!["MGET"];
        args.extend(chunk.iter().map(|(k, _)| k.as_str()));
        let v = read_retrying(&mut cl, &args).await;
        let Value::Array(vals) = v else { panic!("MGET through node {via} answered {v:?}") };
        assert_eq!(vals.len(), chunk.len(), "MGET through node {via}");
        for ((k, want), got) in chunk.iter().zip(vals) {
            if bulk(&got).as_deref() != Some(want.as_str()) {
                wrong.push(format!("{k}: {got:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged writes missing or wrong through node {via}: {:?}\nlog of {via}:\n{}",
        wrong.len(),
        acked.len(),
        &wrong[..wrong.len().min(20)],
        c.log_tail(via)
    );
}

/// Writes through all three nodes, SIGKILL of `victim` while they run: the
/// other two keep acknowledging every write within two attempts; after the
/// victim restarts, every acknowledged write is read through every node.
async fn kill_under_load(victim: u64) {
    let mut c = Cluster::start(3, MM);
    wait_serving(&c, &ALL).await;
    let start = Instant::now();
    let writers = start_writers(&c, &format!("kill{victim}"), &ALL, 3);
    writers.wait_acks("writes through every node before the kill", start, &ALL, 40).await;
    c.kill(victim);
    let killed = Instant::now();
    let rest: Vec<u64> = ALL.into_iter().filter(|i| *i != victim).collect();
    writers.wait_acks("writes through the surviving nodes after the kill", killed, &rest, 60).await;
    let outcome = writers.finish().await;
    outcome.assert_at_most_two_attempts(killed, &[victim]);
    c.spawn(victim);
    wait_serving(&c, &[victim]).await;
    for id in ALL {
        verify_acked(&c, id, &outcome.acked).await;
    }
    // The restarted node takes writes again, and they are read elsewhere.
    let mut v = resp(&c, victim).await;
    assert_eq!(read_retrying(&mut v, &["SET", "mm/after-restart", "1"]).await, Value::ok());
    let mut o = resp(&c, rest[0]).await;
    assert_eq!(bulk(&cmd(&mut o, &["GET", "mm/after-restart"]).await).as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_node_2_under_load_loses_no_acknowledged_write() {
    kill_under_load(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_node_1_under_load_loses_no_acknowledged_write() {
    kill_under_load(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_node_serves_no_stale_read_after_resume() {
    let victim = 3;
    let rest = [1, 2];
    let c = Cluster::start(3, MM);
    wait_serving(&c, &ALL).await;
    // The victim writes and reads a key several times (it may cache it).
    let x = "mm/pause/x";
    let mut v = resp(&c, victim).await;
    for i in 0..5 {
        assert_eq!(cmd(&mut v, &["SET", x, &format!("before{i}")]).await, Value::ok());
        assert_eq!(bulk(&cmd(&mut v, &["GET", x]).await), Some(format!("before{i}")));
    }
    drop(v);
    let start = Instant::now();
    let writers = start_writers(&c, "pause", &rest, 4);
    writers.wait_acks("writes before the pause", start, &rest, 20).await;
    c.signal(victim, libc::SIGSTOP);
    let paused = Instant::now();
    writers.wait_acks("writes through the other nodes while one is paused", paused, &rest, 60).await;
    // Overwrite the victim's key while it is paused.
    let mut o = resp(&c, 1).await;
    let first = cmd(&mut o, &["SET", x, "during"]).await;
    if first != Value::ok() {
        let mut o2 = resp(&c, 2).await;
        assert_eq!(cmd(&mut o2, &["SET", x, "during"]).await, Value::ok(), "first attempt: {first:?}");
    }
    let outcome = writers.finish().await;
    outcome.assert_at_most_two_attempts(paused, &[]);
    c.signal(victim, libc::SIGCONT);

    // Linearizable reads through the resumed node: errors are allowed while
    // it catches up, a stale value never.
    let mut v = resp(&c, victim).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match v.cmd_str(&["GET", x]).await {
            Ok(Value::Error(e)) => assert!(Instant::now() < deadline, "GET through the resumed node kept failing: {e}"),
            Ok(got) => {
                assert_eq!(bulk(&got).as_deref(), Some("during"), "stale read through the resumed node");
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "GET through the resumed node kept failing: {e}");
                v = resp(&c, victim).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    verify_acked(&c, victim, &outcome.acked).await;
    // Writes through the resumed node succeed and are read through the others.
    assert_eq!(read_retrying(&mut v, &["SET", "mm/pause/after/0", "0"]).await, Value::ok());
    for i in 1..20 {
        let (k, val) = (format!("mm/pause/after/{i}"), i.to_string());
        let first = cmd(&mut v, &["SET", &k, &val]).await;
        if first != Value::ok() {
            assert_eq!(cmd(&mut v, &["SET", &k, &val]).await, Value::ok(), "write {k} through the resumed node");
        }
    }
    assert_eq!(cmd(&mut v, &["SET", x, "after"]).await, Value::ok());
    for id in rest {
        let mut cl = resp(&c, id).await;
        assert_eq!(bulk(&cmd(&mut cl, &["GET", x]).await).as_deref(), Some("after"), "node {id}");
        for i in 0..20 {
            let got = bulk(&cmd(&mut cl, &["GET", &format!("mm/pause/after/{i}")]).await);
            assert_eq!(got, Some(i.to_string()), "mm/pause/after/{i} through node {id}");
        }
    }
}

/// `INCR key` in a loop through `nodes[i % len]`, moving to the next node
/// after a failure (a failed INCR is not retried: it may have been applied).
async fn incrementer(i: usize, key: String, nodes: Vec<String>, stop: Arc<AtomicBool>, counts: Arc<[AtomicU64; 2]>) {
    let mut ep = i % nodes.len();
    let mut conn: Option<RespClient> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match RespClient::connect_timeout(nodes[ep].as_str(), Duration::from_secs(1)).await {
                Ok(cl) => conn = Some(cl.with_read_timeout(WRITE_TIMEOUT)),
                Err(_) => {
                    ep = (ep + 1) % nodes.len();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        // counts[0]: attempted, counts[1]: acknowledged.
        counts[0].fetch_add(1, Ordering::SeqCst);
        match conn.as_mut().unwrap().cmd_str(&["INCR", &key]).await {
            Ok(Value::Integer(_)) => {
                counts[1].fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                conn = None;
                ep = (ep + 1) % nodes.len();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_every_node_loses_no_acknowledged_write() {
    let counter = "mm/restart/counter";
    let mut c = Cluster::start(3, MM);
    wait_serving(&c, &ALL).await;
    let start = Instant::now();
    let writers = start_writers(&c, "restart", &ALL, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let eps: Vec<String> = ALL.iter().map(|id| c.resp_addr(*id)).collect();
    let incs: Vec<_> = (0..3)
        .map(|i| tokio::spawn(incrementer(i, counter.to_string(), eps.clone(), stop.clone(), counts.clone())))
        .collect();
    writers.wait_acks("writes through every node", start, &ALL, 40).await;
    {
        let counts = counts.clone();
        wait_for("acknowledged INCRs", Duration::from_secs(30), || {
            let counts = counts.clone();
            async move { (counts[1].load(Ordering::SeqCst) >= 60).then_some(()) }
        })
        .await;
    }
    // Crash every node at once, with writes in flight.
    for id in ALL {
        c.kill(id);
    }
    stop.store(true, Ordering::Relaxed);
    let outcome = writers.finish().await;
    for t in incs {
        t.await.unwrap();
    }
    let (attempted, acked) = (counts[0].load(Ordering::SeqCst), counts[1].load(Ordering::SeqCst));
    for id in ALL {
        c.spawn(id);
    }
    wait_serving(&c, &ALL).await;
    for id in ALL {
        verify_acked(&c, id, &outcome.acked).await;
        let mut cl = resp(&c, id).await;
        let v = read_retrying(&mut cl, &["GET", counter]).await;
        let total = int_of(&v) as u64;
        assert!(
            acked <= total && total <= attempted,
            "node {id}: counter {total}, {acked} INCRs acknowledged, {attempted} attempted"
        );
    }
}

// ---------------------------------------------------------------------------
// Data dirs of the other replication mode.

fn assert_refused(status: std::process::ExitStatus, stderr: &str, what: &str) {
    assert!(!status.success(), "{what}: started, exit {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("leader") && stderr.contains("multi-master"),
        "{what}: the error does not name both modes; stderr:\n{stderr}"
    );
    assert!(!stderr.contains("not implemented"), "{what}: refused for another reason; stderr:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_data_dir_is_refused_in_multi_master_mode() {
    let mut c = Cluster::start(3, &["--replication", "leader"]);
    wait_leader(&c, &ALL).await;
    let mut l = resp(&c, 1).await;
    assert_eq!(cmd(&mut l, &["SET", "mm/marker", "leader-data"]).await, Value::ok());
    drop(l);
    c.kill(1);
    let (status, stderr) = c.run_expecting_exit(1, MM, Duration::from_secs(20));
    assert_refused(status, &stderr, "a leader-mode data dir started in multi-master mode");
    // The refusal left the data dir intact: node 1 starts again in leader mode with its data.
    c.spawn(1);
    wait_leader(&c, &ALL).await;
    let mut n1 = resp(&c, 1).await;
    assert_eq!(bulk(&read_retrying(&mut n1, &["GET", "mm/marker"]).await).as_deref(), Some("leader-data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_data_dir_is_refused_in_leader_mode() {
    let mut c = Cluster::start(3, MM);
    wait_serving(&c, &ALL).await;
    let mut n1 = resp(&c, 1).await;
    assert_eq!(cmd(&mut n1, &["SET", "mm/marker", "mm-data"]).await, Value::ok());
    drop(n1);
    c.kill(1);
    let (status, stderr) = c.run_expecting_exit(1, &["--replication", "leader"], Duration::from_secs(20));
    assert_refused(status, &stderr, "a multi-master data dir started in leader mode");
    // The refusal left the data dir intact: node 1 starts again in multi-master mode with its data.
    c.spawn(1);
    wait_serving(&c, &[1]).await;
    let mut n1 = resp(&c, 1).await;
    assert_eq!(bulk(&read_retrying(&mut n1, &["GET", "mm/marker"]).await).as_deref(), Some("mm-data"));
    assert_eq!(read_retrying(&mut n1, &["SET", "mm/marker", "again"]).await, Value::ok());
}

/// Runs `rampart cluster ARGS --endpoints <node via>` and returns its stdout; fails the test
/// on a non-zero exit, with its stderr.
fn ctl(c: &Cluster, via: u64, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .arg("cluster")
        .args(args)
        .args(["--endpoints", c.http(via).trim_start_matches("http://")])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rampart cluster {args:?} failed: {stderr}\n{stdout}");
    stdout.into_owned()
}

/// The longest time between two acknowledged writes whose attempts started in `during`: how
/// long writes were unavailable (each writer waits on its own write, so this bounds a pause).
fn longest_gap(outcome: &Outcome, from: Instant, to: Instant) -> Duration {
    let mut acks: Vec<Instant> =
        outcome.attempts.iter().filter(|a| a.ok && a.started >= from && a.started <= to).map(|a| a.started).collect();
    acks.sort();
    acks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_wiped_is_replaced_with_one_command_under_load_and_holds_the_data() {
    let mut c = Cluster::start(3, MM);
    wait_serving(&c, &ALL).await;
    let start = Instant::now();
    let writers = start_writers(&c, "replace", &ALL, 3);
    writers.wait_acks("writes through every node before the kill", start, &ALL, 30).await;
    // Node 2 dies with its disk.
    c.kill(2);
    std::fs::remove_dir_all(&c.specs[&2].data_dir).unwrap();
    let rest = [1, 3];
    let killed = Instant::now();
    writers.wait_acks("writes through the other two after the kill", killed, &rest, 20).await;
    // Restarted on an empty data dir, it does not vote: its peers have seen it before, so its
    // data was lost. It says so, and how to bring it back.
    c.spawn(2);
    let why = wait_for("node 2 to say it waits to be replaced", Duration::from_secs(30), || async {
        let r =
            http_request(Method::GET, &format!("{}/v1/health", c.http(2)), "", Duration::from_secs(2)).await.ok()?;
        (r.status == 503 && r.text().contains("rampart cluster replace 2")).then(|| r.text())
    })
    .await;
    assert!(why.contains("lost"), "{why}");
    // One command on a member; writes go on meanwhile.
    let before = Instant::now();
    let out = ctl(&c, 1, &["replace", "2"]);
    let took = before.elapsed();
    assert!(out.contains('2'), "{out}");
    wait_healthy(&c, &ALL).await;
    // (The writers moved off node 2 while it was down; write through it directly.)
    writers.wait_acks("writes after the replacement", Instant::now(), &rest, 20).await;
    let mut n2 = resp(&c, 2).await;
    assert_eq!(read_retrying(&mut n2, &["SET", "replace/through-2", "yes"]).await, Value::ok());
    let outcome = writers.finish().await;
    eprintln!(
        "replace under load: the change took {} ms; longest gap between acknowledged writes during it: {} ms",
        took.as_millis(),
        longest_gap(&outcome, before, before + took).as_millis()
    );
    wait_serving(&c, &ALL).await;
    for id in ALL {
        verify_acked(&c, id, &outcome.acked).await;
    }
    // The new node 2 holds the data: with node 1 gone too, {2, 3} is a majority and loses nothing.
    c.kill(1);
    let mut acked = outcome.acked.clone();
    acked.push(("replace/through-2".into(), "yes".into()));
    verify_acked(&c, 2, &acked).await;
    verify_acked(&c, 3, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_is_added_and_one_removed_under_load_losing_no_acknowledged_write() {
    let mut c = Cluster::start(3, MM);
    wait_serving(&c, &ALL).await;
    let start = Instant::now();
    let writers = start_writers(&c, "grow", &ALL, 3);
    writers.wait_acks("writes before the change", start, &ALL, 30).await;
    // Node 4 starts empty, pointing at the members; it waits to be added.
    c.add_spec(4);
    c.spawn(4);
    wait_for("node 4 to say it waits to be added", Duration::from_secs(30), || async {
        let r =
            http_request(Method::GET, &format!("{}/v1/health", c.http(4)), "", Duration::from_secs(2)).await.ok()?;
        (r.status == 503 && r.text().contains("not a member yet")).then_some(())
    })
    .await;
    let (peer, resp4, http4) = (c.specs[&4].peer.clone(), c.specs[&4].resp.clone(), c.specs[&4].http.clone());
    let before_add = Instant::now();
    let out = ctl(&c, 3, &["add", "4", &peer, &resp4, &http4]);
    let add_took = before_add.elapsed();
    assert!(out.contains('4'), "{out}");
    wait_serving(&c, &[4]).await;
    // Remove node 1 through node 4, then stop it: the cluster is {2, 3, 4}.
    let before_remove = Instant::now();
    ctl(&c, 4, &["remove", "1"]);
    let remove_took = before_remove.elapsed();
    writers.wait_acks("writes after the changes", Instant::now(), &[2, 3], 20).await;
    let outcome = writers.finish().await;
    eprintln!(
        "add node 4: {} ms, longest gap between acknowledged writes {} ms; remove node 1: {} ms, longest gap {} ms",
        add_took.as_millis(),
        longest_gap(&outcome, before_add, before_add + add_took).as_millis(),
        remove_took.as_millis(),
        longest_gap(&outcome, before_remove, before_remove + remove_took).as_millis()
    );
    // Node 1 knows it was removed.
    wait_for("node 1 to say it was removed", Duration::from_secs(30), || async {
        let r =
            http_request(Method::GET, &format!("{}/v1/health", c.http(1)), "", Duration::from_secs(2)).await.ok()?;
        (r.status == 503 && r.text().contains("removed")).then_some(())
    })
    .await;
    c.kill(1);
    for id in [2, 3, 4] {
        verify_acked(&c, id, &outcome.acked).await;
    }
    // A majority of the new membership is enough: with node 2 down too, {3, 4} still serve all.
    c.kill(2);
    verify_acked(&c, 4, &outcome.acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_keys_are_collected_only_with_every_member_up_and_never_come_back() {
    // The shortest grace a node takes: twice the request timeout plus 1 s.
    let args = ["--replication", "multi-master", "--request-timeout-ms", "1000", "--tombstone-grace-ms", "3000"];
    let mut c = Cluster::start(3, &args);
    wait_serving(&c, &ALL).await;
    const KEYS: usize = 3000;
    const DELETED: usize = 2000;
    let mut n1 = resp(&c, 1).await;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let mut args: Vec<String> = vec!["MSET".into()];
        for i in chunk {
            args.extend([format!("gc/{i}"), format!("v{i}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(read_retrying(&mut n1, &args).await, Value::ok());
    }
    // Node 3 goes down; then 2,000 keys are deleted.
    c.kill(3);
    for chunk in (0..DELETED).collect::<Vec<_>>().chunks(500) {
        let mut args: Vec<String> = vec!["DEL".into()];
        args.extend(chunk.iter().map(|i| format!("gc/{i}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(read_retrying(&mut n1, &args).await, Value::Integer(chunk.len() as i64));
    }
    // The tombstones come due, but with node 3 down nothing is collected anywhere.
    for id in [1, 2] {
        wait_for("a blocked collection round", Duration::from_secs(30), || async {
            (metric(&c, id, "rampart_mm_collection_blocked_total").await >= 2).then_some(())
        })
        .await;
        assert_eq!(metric(&c, id, "rampart_mm_tombstones_collected_total").await, 0, "node {id} collected");
    }
    // Node 3 comes back with its tombstones; every node then gives the registers back.
    c.spawn(3);
    wait_serving(&c, &ALL).await;
    for id in ALL {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let collected = metric(&c, id, "rampart_mm_tombstones_collected_total").await;
            if collected >= DELETED as u64 {
                break;
            }
            if Instant::now() > deadline {
                let mut state = String::new();
                for n in ALL {
                    state += &format!(
                        "node {n}: collected {} registers {} blocked {}\n",
                        metric(&c, n, "rampart_mm_tombstones_collected_total").await,
                        metric(&c, n, "rampart_mm_registers").await,
                        metric(&c, n, "rampart_mm_collection_blocked_total").await
                    );
                }
                panic!("tombstones not all collected on node {id}:\n{state}log of {id}:\n{}", c.log_tail(id));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let registers = metric(&c, id, "rampart_mm_registers").await;
        assert!(registers <= (KEYS - DELETED) as u64 + 10, "node {id} still holds {registers} registers");
    }
    // No deleted key comes back, through Paxos or from any node's own registers; the rest stay.
    for id in ALL {
        let mut cl = resp(&c, id).await;
        for i in (0..DELETED).step_by(97) {
            let key = format!("gc/{i}");
            assert_eq!(read_retrying(&mut cl, &["GET", &key]).await, Value::Null, "{key} came back via node {id}");
        }
        assert_eq!(cmd(&mut cl, &["READONLY"]).await, Value::ok());
        assert_eq!(cmd(&mut cl, &["GET", "gc/0"]).await, Value::Null, "node {id}'s own register");
        assert_eq!(cmd(&mut cl, &["READWRITE"]).await, Value::ok());
        assert_eq!(
            bulk(&read_retrying(&mut cl, &["GET", &format!("gc/{}", KEYS - 1)]).await),
            Some(format!("v{}", KEYS - 1))
        );
        assert_eq!(read_retrying(&mut cl, &["DBSIZE"]).await, Value::Integer((KEYS - DELETED) as i64));
    }
    // Collected keys are ordinary absent keys: new writes of them go through.
    for chunk in (0..DELETED).collect::<Vec<_>>().chunks(500) {
        let mut args: Vec<String> = vec!["MSET".into()];
        for i in chunk {
            args.extend([format!("gc/{i}"), format!("v{i}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(read_retrying(&mut n1, &args).await, Value::ok());
    }
    let mut n3 = resp(&c, 3).await;
    assert_eq!(bulk(&read_retrying(&mut n3, &["GET", "gc/5"]).await).as_deref(), Some("v5"));
    assert_eq!(read_retrying(&mut n3, &["DBSIZE"]).await, Value::Integer(KEYS as i64));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_restored_from_an_old_copy_does_not_vote_until_it_is_replaced() {
    let mut c = Cluster::start(3, MM);
    wait_serving(&c, &ALL).await;
    let mut n1 = resp(&c, 1).await;
    assert_eq!(read_retrying(&mut n1, &["SET", "old/a", "1"]).await, Value::ok());
    // A copy of node 2's data dir, taken while it is stopped.
    c.kill(2);
    let dir = c.specs[&2].data_dir.clone();
    let copy = c.dir.path().join("n2-copy");
    copy_dir(&dir, &copy);
    c.spawn(2);
    wait_serving(&c, &ALL).await;
    // Node 2 takes part in many writes after the copy.
    let mut n2 = resp(&c, 2).await;
    for i in 0..100 {
        assert_eq!(read_retrying(&mut n2, &["SET", &format!("old/{i}"), "2"]).await, Value::ok());
    }
    // Its peers have seen its later commits (its replies carry its commit sequence). Restore.
    c.kill(2);
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&copy, &dir);
    c.spawn(2);
    let why = wait_for("node 2 to refuse to vote with an old copy", Duration::from_secs(30), || async {
        let r =
            http_request(Method::GET, &format!("{}/v1/health", c.http(2)), "", Duration::from_secs(2)).await.ok()?;
        (r.status == 503 && r.text().contains("old copy")).then(|| r.text())
    })
    .await;
    assert!(why.contains("rampart cluster replace 2"), "{why}");
    // The others serve every write.
    for i in (0..100).step_by(9) {
        assert_eq!(bulk(&read_retrying(&mut n1, &["GET", &format!("old/{i}")]).await).as_deref(), Some("2"));
    }
    // Wiped and replaced, it votes again and holds the data.
    c.kill(2);
    std::fs::remove_dir_all(&dir).unwrap();
    c.spawn(2);
    wait_for("node 2 to wait to be replaced", Duration::from_secs(30), || async {
        let r =
            http_request(Method::GET, &format!("{}/v1/health", c.http(2)), "", Duration::from_secs(2)).await.ok()?;
        (r.status == 503 && r.text().contains("rampart cluster replace 2")).then_some(())
    })
    .await;
    ctl(&c, 3, &["replace", "2"]);
    wait_healthy(&c, &ALL).await;
    c.kill(1);
    let mut n2 = resp(&c, 2).await;
    for i in (0..100).step_by(9) {
        assert_eq!(bulk(&read_retrying(&mut n2, &["GET", &format!("old/{i}")]).await).as_deref(), Some("2"));
    }
}
