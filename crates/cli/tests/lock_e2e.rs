//! End-to-end tests of locks and elections with real `rampart server` processes (leader mode):
//!
//! - `rampart lock` hands the lock over when its holder is SIGSTOPped until its lease expires;
//!   the next holder's fencing token is higher, and the paused holder, resumed, stops its
//!   command and exits 1;
//! - many clients take one lock in turn while the Raft leader is SIGKILLed: no two hold it at
//!   once, and a fencing-token check at the "resource" never refuses a holder;
//! - `rampart elect` runs its command only while elected, and the election's watch streams each
//!   leader;
//! - bad requests get clear errors, and multi-master mode answers 501.
//!
//! Time is the processes' real clock: the tests wait on conditions with deadlines, never on
//! fixed sleeps for an outcome.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rampart_client::Client;
use serde_json::json;

/// The lease TTL the paused holder uses: the shortest allowed, so the handover comes soon.
const TTL_MS: u64 = rampart_kv::lease::LEASE_TTL_MIN_MS;
/// How long a condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

fn endpoints(c: &Cluster) -> String {
    c.specs.keys().map(|id| c.http(*id).trim_start_matches("http://").to_string()).collect::<Vec<_>>().join(",")
}

fn client(c: &Cluster) -> Client {
    let endpoints = c.specs.keys().map(|id| c.http(*id)).collect();
    Client::new(endpoints, Duration::from_secs(5)).unwrap()
}

/// Starts `rampart lock|elect NAME --ttl-ms TTL [extra] -- sh -c SCRIPT`.
fn hold(c: &Cluster, what: &str, name: &str, extra: &[&str], script: &str, stderr: &Path) -> Child {
    Command::new(BIN)
        .args([what, name, "--endpoints", &endpoints(c), "--ttl-ms", &TTL_MS.to_string()])
        .args(extra)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

async fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    wait_for(what, WAIT, || {
        let st = child.try_wait().unwrap();
        async move { st }
    })
    .await
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process this test started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn alive(pid: u64) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigstopped_holder_loses_the_lock_to_the_next_with_a_higher_token() {
    let c = Cluster::start(3, &[]);
    wait_leader(&c, &[1, 2, 3]).await;
    let cl = client(&c);
    let d = c.dir.path();
    let (a_token, a_pid, b_token) = (d.join("a.token"), d.join("a.pid"), d.join("b.token"));

    // A takes the lock and runs a long command.
    let script_a =
        format!("echo $$ > {}; echo $RAMPART_FENCING_TOKEN > {}; exec sleep 600", a_pid.display(), a_token.display());
    let mut a = hold(&c, "lock", "jobs", &[], &script_a, &d.join("a.stderr"));
    let token_a = wait_for("A holds the lock", WAIT, || async { read_number(&a_token) }).await;
    let cmd_a = wait_for("A's command pid", WAIT, || async { read_number(&a_pid) }).await;
    let holder = cl.lock_holder("jobs").await.unwrap().expect("the lock is held");
    assert_eq!(holder.fencing_token, token_a, "the API names A's token");

    // B waits behind A.
    let script_b = format!("echo $RAMPART_FENCING_TOKEN > {}", b_token.display());
    let mut b = hold(&c, "lock", "jobs", &[], &script_b, &d.join("b.stderr"));
    wait_for("B in line behind A", WAIT, || async {
        cl.lock_holder("jobs").await.ok().flatten().filter(|h| h.contenders == Some(2)).map(|_| ())
    })
    .await;
    assert!(read_number(&b_token).is_none(), "B must not run while A holds the lock");

    // A pauses: its keepalives stop, its lease runs out, and B gets the lock.
    signal(a.id(), libc::SIGSTOP);
    let token_b = wait_for("B takes over from the paused A", WAIT, || async { read_number(&b_token) }).await;
    assert!(token_b > token_a, "fencing tokens must increase across holders: A {token_a}, B {token_b}");
    assert!(wait_exit(&mut b, "B exits").await.success(), "B exits with its command's status 0");

    // A resumes, finds its lease gone, stops its command and exits 1.
    signal(a.id(), libc::SIGCONT);
    let st = wait_exit(&mut a, "A exits once resumed").await;
    let a_err = std::fs::read_to_string(d.join("a.stderr")).unwrap_or_default();
    assert_eq!(st.code(), Some(1), "A must exit 1 after losing the lock; stderr: {a_err}");
    assert!(a_err.contains("lost lock"), "A says why: {a_err}");
    assert!(!alive(cmd_a), "A's command (pid {cmd_a}) must have been stopped");
    // B released the lock on its way out, and A's key went with its lease.
    wait_for("the lock free", WAIT, || async {
        cl.lock_holder("jobs").await.ok().and_then(|h| h.is_none().then_some(()))
    })
    .await;
}

/// What the shared "resource" saw: the highest fencing token, and holders inside at once.
#[derive(Default)]
struct Resource {
    highest: u64,
    refused: Vec<(u64, u64)>,
}

/// Keeps `lease` alive until `stop` (the lock's holders hold for milliseconds; their leases
/// must outlive a leader change and any wait).
fn keep_alive(cl: Client, lease: u64, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let _ = cl.lease_keepalive(lease).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_take_a_lock_in_turn_across_a_leader_kill() {
    const CLIENTS: usize = 4;
    const BEFORE_KILL: u64 = 12;
    const AFTER_KILL: u64 = 12;
    let mut c = Cluster::start(3, &[]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    let cl = client(&c);
    let resource = Arc::new(Mutex::new(Resource::default()));
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicU64::new(0));
    let acquired = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (cl, resource, inside, overlaps, acquired, done) =
            (cl.clone(), resource.clone(), inside.clone(), overlaps.clone(), acquired.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let Ok(lease) = cl.lease_grant(5_000).await else { continue };
                let stop = Arc::new(AtomicBool::new(false));
                keep_alive(cl.clone(), lease.id, stop.clone());
                if let Ok(Some(held)) = cl.lock("shared", lease.id, 10_000, false).await {
                    if inside.swap(true, Ordering::SeqCst) {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    {
                        // The resource's fencing check: refuse any token below the highest seen.
                        let mut r = resource.lock().unwrap();
                        if held.fencing_token <= r.highest {
                            let seen = r.highest;
                            r.refused.push((held.fencing_token, seen));
                        }
                        r.highest = r.highest.max(held.fencing_token);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    inside.store(false, Ordering::SeqCst);
                    acquired.fetch_add(1, Ordering::SeqCst);
                    let _ = cl.unlock("shared", held.fencing_token).await;
                }
                stop.store(true, Ordering::SeqCst);
                // Releasing twice is harmless; a revoke that fails leaves the lease to run out.
                let _ = cl.lease_revoke(lease.id).await;
            }
        }));
    }
    wait_for("acquisitions before the kill", Duration::from_secs(120), || async {
        (acquired.load(Ordering::SeqCst) >= BEFORE_KILL).then_some(())
    })
    .await;
    c.kill(leader);
    let at_kill = acquired.load(Ordering::SeqCst);
    wait_for("acquisitions after the leader kill", Duration::from_secs(120), || async {
        (acquired.load(Ordering::SeqCst) >= at_kill + AFTER_KILL).then_some(())
    })
    .await;
    done.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let r = resource.lock().unwrap();
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two clients held the lock at once");
    assert!(r.refused.is_empty(), "the resource refused stale fencing tokens (token, highest seen): {:?}", r.refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_runs_its_command_only_while_elected_and_the_watch_follows() {
    let c = Cluster::start(3, &[]);
    wait_leader(&c, &[1, 2, 3]).await;
    let cl = client(&c);
    let d = c.dir.path();
    let url = format!("{}/v1/election/db/watch?progress_ms=500", c.http(2));
    // The watch streams until the test has seen enough; read it on its own task.
    let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let reader = {
        let lines = lines.clone();
        tokio::spawn(async move { stream_lines(&url, lines).await })
    };

    let (a_token, b_token, release) = (d.join("a.token"), d.join("b.token"), d.join("release"));
    let script_a = format!(
        "echo $RAMPART_FENCING_TOKEN > {}; while [ ! -e {} ]; do sleep 0.05; done",
        a_token.display(),
        release.display()
    );
    let mut a = hold(&c, "elect", "db", &["--value", "alpha"], &script_a, &d.join("a.stderr"));
    let token_a = wait_for("alpha elected", WAIT, || async { read_number(&a_token) }).await;
    let leader = cl.election_leader("db").await.unwrap().expect("a leader");
    assert_eq!((leader.value.as_deref(), leader.fencing_token), (Some("alpha"), token_a));
    // The open election watch is one of node 2's watches, and /metrics counts it.
    let metrics_url = format!("{}/metrics", c.http(2));
    wait_for("node 2 to count its open watch", WAIT, || async {
        let m = http_request(Method::GET, &metrics_url, "", Duration::from_secs(5)).await.ok()?.text();
        let n: u64 = m.lines().find_map(|l| l.strip_prefix("rampart_watches_active "))?.trim().parse().ok()?;
        (n >= 1).then_some(())
    })
    .await;

    let script_b = format!("echo $RAMPART_FENCING_TOKEN > {}", b_token.display());
    let mut b = hold(&c, "elect", "db", &["--value", "beta"], &script_b, &d.join("b.stderr"));
    wait_for("beta campaigning", WAIT, || async {
        cl.election_leader("db").await.ok().flatten().filter(|h| h.contenders == Some(2)).map(|_| ())
    })
    .await;
    assert!(read_number(&b_token).is_none(), "beta must not run while alpha leads");
    // Alpha's command ends: alpha resigns and beta leads.
    std::fs::write(&release, b"").unwrap();
    assert!(wait_exit(&mut a, "alpha exits").await.success());
    let token_b = wait_for("beta elected", WAIT, || async { read_number(&b_token) }).await;
    assert!(token_b > token_a);
    assert!(wait_exit(&mut b, "beta exits").await.success());

    // The watch saw alpha, then beta, then no leader (beta resigned on exit).
    let want = [Some("alpha"), Some("beta"), None];
    let seen = wait_for("the watch to see every leader", WAIT, || {
        let leaders: Vec<Option<String>> = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["type"] == "leader")
            .map(|l| l["leader"]["value"].as_str().map(str::to_string))
            .collect();
        let tail: Vec<Option<String>> = leaders.iter().skip_while(|v| v.is_none()).cloned().collect();
        let ok = tail.iter().map(|v| v.as_deref()).collect::<Vec<_>>() == want;
        async move { ok.then_some(leaders) }
    })
    .await;
    assert!(seen.iter().any(|v| v.is_some()));
    reader.abort();
}

/// Reads an NDJSON stream into `lines` until it ends.
async fn stream_lines(url: &str, lines: Arc<Mutex<Vec<serde_json::Value>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let addr = url.trim_start_matches("http://");
    let (host, path) = addr.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while r.read_line(&mut line).await.unwrap_or(0) > 0 {
        // Chunk-size lines and headers are not JSON; every JSON line is one message.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) {
            lines.lock().unwrap().push(v);
        }
        line.clear();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lock_requests_get_clear_errors() {
    let c = Cluster::start(1, &[]);
    wait_leader(&c, &[1]).await;
    let h = c.http(1);
    let t = Duration::from_secs(10);
    let lease = client(&c).lease_grant(60_000).await.unwrap().id;
    let post = |path: &str, body: serde_json::Value| {
        let url = format!("{h}{path}");
        async move { http_request_json(Method::POST, &url, &body, t).await.unwrap() }
    };
    let req = |m: Method, path: &str| {
        let url = format!("{h}{path}");
        async move { http_request(m, &url, "", t).await.unwrap() }
    };
    let cases: Vec<(HttpReply, StatusCode, &str)> = vec![
        (post("/v1/lock/a", json!({"lease": 0})).await, StatusCode::BAD_REQUEST, "lease 0"),
        (post("/v1/lock/a", json!({"wait_ms": 5})).await, StatusCode::BAD_REQUEST, "missing field `lease`"),
        (post("/v1/lock/a", json!({"lease": lease, "bogus": 1})).await, StatusCode::BAD_REQUEST, "unknown field"),
        (
            post("/v1/lock/a", json!({"lease": lease, "value": "x"})).await,
            StatusCode::BAD_REQUEST,
            "a lock takes no value",
        ),
        (
            post("/v1/lock/a", json!({"lease": lease, "wait_ms": 10_000_000})).await,
            StatusCode::BAD_REQUEST,
            "WAIT_MS_MAX",
        ),
        (post("/v1/lock/a", json!({"lease": 987654321})).await, StatusCode::NOT_FOUND, "987654321"),
        (post("/v1/lock/a%2Fb", json!({"lease": lease})).await, StatusCode::BAD_REQUEST, "may not contain '/'"),
        (req(Method::DELETE, "/v1/lock/a").await, StatusCode::BAD_REQUEST, "needs ?token="),
        (req(Method::DELETE, "/v1/lock/a?token=x").await, StatusCode::BAD_REQUEST, "not a fencing token"),
        (req(Method::DELETE, "/v1/lock/a?token=77").await, StatusCode::NOT_FOUND, "token 77"),
        (req(Method::GET, "/v1/lock/a").await, StatusCode::NOT_FOUND, "is not held"),
        (req(Method::GET, "/v1/election/a").await, StatusCode::NOT_FOUND, "has no leader"),
    ];
    for (reply, status, text) in &cases {
        assert_eq!(reply.status, *status, "{text}: {}", reply.text());
        assert!(reply.text().contains(text), "expected {text:?} in {}", reply.text());
    }
    let raw = http_request(Method::POST, &format!("{h}/v1/lock/a"), "{not json", t).await.unwrap();
    assert_eq!(raw.status, StatusCode::BAD_REQUEST, "{}", raw.text());

    // Held, then asked again with the same lease: the same token (a retried request is harmless).
    let first = post("/v1/lock/a", json!({"lease": lease})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let again = post("/v1/lock/a", json!({"lease": lease})).await;
    assert_eq!(again.json().unwrap()["fencing_token"], first.json().unwrap()["fencing_token"]);
    // Another lease that will not wait: 408, and its place in line is given up.
    let other = client(&c).lease_grant(60_000).await.unwrap().id;
    let busy = post("/v1/lock/a", json!({"lease": other, "wait_ms": 0})).await;
    assert_eq!(busy.status, StatusCode::REQUEST_TIMEOUT, "{}", busy.text());
    let holder = req(Method::GET, "/v1/lock/a").await.json().unwrap();
    assert_eq!(holder["contenders"], 1, "the timed-out waiter withdrew: {holder}");
    // With keep_place it stays in line, at the same revision, for the next request.
    let kept = post("/v1/lock/a", json!({"lease": other, "wait_ms": 0, "keep_place": true})).await;
    assert_eq!(kept.status, StatusCode::REQUEST_TIMEOUT, "{}", kept.text());
    assert!(kept.text().contains("keeps its place"), "{}", kept.text());
    let holder = req(Method::GET, "/v1/lock/a").await.json().unwrap();
    assert_eq!(holder["contenders"], 2, "the kept waiter is still in line: {holder}");
    let key = format!("/v1/kv/_rampart/lock/a/{other:016x}");
    let rev_before = req(Method::GET, &key).await;
    assert_eq!(rev_before.status, StatusCode::OK);
    let again = post("/v1/lock/a", json!({"lease": other, "wait_ms": 0, "keep_place": true})).await;
    assert_eq!(again.status, StatusCode::REQUEST_TIMEOUT);
    let rev_after = req(Method::GET, &key).await;
    assert_eq!(rev_after.status, StatusCode::OK, "still in line");
    client(&c).lease_revoke(other).await.unwrap();
    let holder = req(Method::GET, "/v1/lock/a").await.json().unwrap();
    assert_eq!(holder["contenders"], 1, "the lease's end took its place: {holder}");
    // A waiter whose own lease is revoked while it waits is told so (at its next progress
    // tick), not left to sit out its wait.
    let third = client(&c).lease_grant(60_000).await.unwrap().id;
    let waiter = {
        let url = format!("{h}/v1/lock/a");
        tokio::spawn(async move {
            let body = json!({"lease": third, "wait_ms": 100_000, "keep_place": true});
            http_request_json(Method::POST, &url, &body, Duration::from_secs(120)).await.unwrap()
        })
    };
    wait_for("the third lease in line", WAIT, || async {
        (req(Method::GET, "/v1/lock/a").await.json()?["contenders"] == 2).then_some(())
    })
    .await;
    client(&c).lease_revoke(third).await.unwrap();
    let gone = waiter.await.unwrap();
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.text());
    assert!(gone.text().contains("expired or was revoked while waiting"), "{}", gone.text());
    let token = first.json().unwrap()["fencing_token"].as_u64().unwrap();
    let released = req(Method::DELETE, &format!("/v1/lock/a?token={token}")).await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.text());
    assert_eq!(req(Method::DELETE, &format!("/v1/lock/a?token={token}")).await.status, StatusCode::NOT_FOUND);

    // A key put into a lock's line by hand (no lease) would hold the lock forever: refused, on
    // both APIs, while reading and deleting such keys stays allowed.
    let forged =
        http_request(Method::PUT, &format!("{h}/v1/kv/_rampart/lock/a/0000000000000001"), "x", t).await.unwrap();
    assert_eq!(forged.status, StatusCode::BAD_REQUEST, "{}", forged.text());
    assert!(forged.text().contains("only the lock and election API"), "{}", forged.text());
    let forged_leased =
        http_request(Method::PUT, &format!("{h}/v1/kv/_rampart/election/e/0000000000000001?lease={lease}"), "x", t)
            .await
            .unwrap();
    assert_eq!(forged_leased.status, StatusCode::BAD_REQUEST, "{}", forged_leased.text());
    let mut r = resp(&c, 1).await;
    let set = cmd(&mut r, &["SET", "_rampart/lock/a/0000000000000002", "x"]).await;
    assert!(format!("{set:?}").contains("only the lock and election API"), "{set:?}");
    assert_eq!(req(Method::DELETE, "/v1/kv/_rampart/lock/a/0000000000000002").await.status, StatusCode::OK);

    // DELETE /v1/kv/K?cas=REV removes the key only at that revision.
    let rev = client(&c).put("k", "v").await.unwrap();
    let stale = req(Method::DELETE, &format!("/v1/kv/k?cas={}", rev + 100)).await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.text());
    let ok = req(Method::DELETE, &format!("/v1/kv/k?cas={rev}")).await;
    assert_eq!((ok.status, ok.json().unwrap()["deleted"].clone()), (StatusCode::OK, json!(true)), "{}", ok.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_mode_answers_501_naming_leader_mode() {
    let c = Cluster::start(1, &["--replication", "multi-master"]);
    wait_healthy(&c, &[1]).await;
    let h = c.http(1);
    let t = Duration::from_secs(10);
    for (m, path, body) in [
        (Method::POST, "/v1/lock/a", json!({"lease": 1})),
        (Method::GET, "/v1/lock/a", json!(null)),
        (Method::DELETE, "/v1/lock/a?token=1", json!(null)),
        (Method::POST, "/v1/election/a", json!({"lease": 1, "value": "v"})),
        (Method::GET, "/v1/election/a", json!(null)),
        (Method::GET, "/v1/election/a/watch", json!(null)),
    ] {
        let url = format!("{h}{path}");
        let r = if body.is_null() {
            http_request(m.clone(), &url, "", t).await.unwrap()
        } else {
            http_request_json(m.clone(), &url, &body, t).await.unwrap()
        };
        assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED, "{m} {path}: {}", r.text());
        assert!(r.text().contains("leader mode"), "{m} {path}: {}", r.text());
    }
}
