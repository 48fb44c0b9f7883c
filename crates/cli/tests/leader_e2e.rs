//! End-to-end tests of leader mode with real `rampart server` processes:
//! SIGKILL and SIGSTOP of leaders, restarts of every node, membership
//! changes under load, snapshot catch-up, and bad input.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot_free::Acks;
use rampart_resp::client::RespClient;
use rampart_resp::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Acknowledged writes of the concurrent writers.
mod parking_lot_free {
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Acks {
        /// writer -> acknowledged sequence numbers
        pub acked: Mutex<Vec<Vec<u64>>>,
        /// writer -> highest sequence number attempted
        pub attempted: Mutex<Vec<u64>>,
        /// writer -> writes refused with TRYAGAIN/CLUSTERDOWN: certainly not applied
        pub refused: Mutex<Vec<Vec<u64>>>,
    }
}

/// Writer `w`: `MSET e2e/w<w>/<seq> <seq> cur/w<w> <seq>` in a loop over the
/// endpoints, moving on after any error. Records what was acknowledged.
async fn writer(w: usize, endpoints: Vec<String>, stop: Arc<AtomicBool>, acks: Arc<Acks>, count: Arc<AtomicU64>) {
    let mut seq = 0u64;
    let mut ep = w % endpoints.len();
    let mut conn: Option<RespClient> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match tokio::time::timeout(Duration::from_secs(1), RespClient::connect(endpoints[ep].clone())).await {
                Ok(Ok(c)) => conn = Some(c.with_read_timeout(Duration::from_secs(3))),
                _ => {
                    ep = (ep + 1) % endpoints.len();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        seq += 1;
        acks.attempted.lock().unwrap()[w] = seq;
        let k = format!("e2e/w{w}/{seq}");
        let cur = format!("cur/w{w}");
        let v = seq.to_string();
        let c = conn.as_mut().unwrap();
        match c.cmd_str(&["MSET", &k, &v, &cur, &v]).await {
            Ok(Value::SimpleString(s)) if s == "OK" => {
                acks.acked.lock().unwrap()[w].push(seq);
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN") => {
                acks.refused.lock().unwrap()[w].push(seq);
                conn = None;
                ep = (ep + 1) % endpoints.len();
            }
            _ => {
                conn = None;
                ep = (ep + 1) % endpoints.len();
            }
        }
    }
}

struct Writers {
    stop: Arc<AtomicBool>,
    acks: Arc<Acks>,
    count: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_writers(n: usize, endpoints: Vec<String>) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Acks::default());
    *acks.acked.lock().unwrap() = vec![Vec::new(); n];
    *acks.attempted.lock().unwrap() = vec![0; n];
    *acks.refused.lock().unwrap() = vec![Vec::new(); n];
    let count = Arc::new(AtomicU64::new(0));
    let tasks =
        (0..n).map(|w| tokio::spawn(writer(w, endpoints.clone(), stop.clone(), acks.clone(), count.clone()))).collect();
    Writers { stop, acks, count, tasks }
}

impl Writers {
    async fn wait_count(&self, at_least: u64, what: &str) {
        let count = self.count.clone();
        wait_for(what, Duration::from_secs(60), || {
            let count = count.clone();
            async move { (count.load(Ordering::Relaxed) >= at_least).then_some(()) }
        })
        .await
    }

    async fn finish(self) -> Outcomes {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Outcomes {
            acked: self.acks.acked.lock().unwrap().clone(),
            attempted: self.acks.attempted.lock().unwrap().clone(),
            refused: self.acks.refused.lock().unwrap().clone(),
        }
    }
}

struct Outcomes {
    acked: Vec<Vec<u64>>,
    attempted: Vec<u64>,
    refused: Vec<Vec<u64>>,
}

/// Every acknowledged write is present with its value; no write refused
/// with TRYAGAIN/CLUSTERDOWN is; and each writer's `cur` key holds its last
/// acknowledged write or one whose outcome was unknown (a timed-out write
/// may take effect later), never a refused one.
async fn verify_acked(c: &Cluster, via: u64, o: &Outcomes) {
    let (acked, attempted) = (&o.acked, &o.attempted);
    let mut cl = resp(c, via).await;
    let mut total = 0;
    let mut missing = Vec::new();
    for (w, seqs) in acked.iter().enumerate() {
        for chunk in seqs.chunks(200) {
            let keys: Vec<String> = chunk.iter().map(|s| format!("e2e/w{w}/{s}")).collect();
            let mut args: Vec<&str> = vec!["MGET"];
            args.extend(keys.iter().map(|k| k.as_str()));
            let v = read_retrying(&mut cl, &args).await;
            let Value::Array(vals) = v else { panic!("MGET answered {v:?}") };
            for (s, val) in chunk.iter().zip(vals) {
                if bulk(&val) != Some(s.to_string()) {
                    missing.push(format!("e2e/w{w}/{s}"));
                }
                total += 1;
            }
        }
        for chunk in o.refused[w].chunks(200) {
            let keys: Vec<String> = chunk.iter().map(|s| format!("e2e/w{w}/{s}")).collect();
            let mut args: Vec<&str> = vec!["MGET"];
            args.extend(keys.iter().map(|k| k.as_str()));
            let Value::Array(vals) = read_retrying(&mut cl, &args).await else { panic!("MGET failed") };
            for (s, val) in chunk.iter().zip(vals) {
                assert_eq!(val, Value::Null, "write e2e/w{w}/{s} was refused as not applied, yet it is present");
            }
        }
        if let Some(last) = seqs.last() {
            let v = read_retrying(&mut cl, &["GET", &format!("cur/w{w}")]).await;
            let cur: u64 = bulk(&v).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("cur/w{w} is {v:?}"));
            let unknown = !seqs.contains(&cur) && !o.refused[w].contains(&cur) && cur <= attempted[w];
            assert!(
                cur == *last || unknown,
                "cur/w{w} = {cur}: neither the last acknowledged write ({last}) nor one of unknown outcome"
            );
        }
    }
    if !missing.is_empty() {
        let mut st = String::new();
        for id in c.running() {
            st.push_str(&format!("{:?}\n", status(c, id).await));
        }
        panic!(
            "{} of {total} acknowledged writes lost (read via node {via}): {:?}\n{st}\nlog of {via}:\n{}",
            missing.len(),
            &missing[..missing.len().min(20)],
            c.log_tail(via)
        );
    }
    assert!(total > 0, "no write was acknowledged at all");
}

/// A linearizable read, retried while the cluster answers TRYAGAIN/TIMEOUT.
async fn read_retrying(cl: &mut RespClient, args: &[&str]) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match cl.cmd_str(args).await {
            Ok(Value::Error(e)) => assert!(std::time::Instant::now() < deadline, "{args:?} kept failing: {e}"),
            Err(e) => panic!("{args:?}: {e}"),
            Ok(v) => return v,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_followers_are_read_everywhere() {
    let c = Cluster::start(3, &[]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let mut f = resp(&c, followers[0]).await;
    assert_eq!(cmd(&mut f, &["SET", "k", "v1"]).await, Value::ok());
    assert_eq!(cmd(&mut f, &["INCR", "n"]).await, Value::Integer(1));
    let mut f2 = resp(&c, followers[1]).await;
    assert_eq!(cmd(&mut f2, &["INCRBY", "n", "41"]).await, Value::Integer(42));
    for id in [1, 2, 3] {
        // Linearizable reads see the writes at once, on every node.
        let mut cl = resp(&c, id).await;
        assert_eq!(bulk(&cmd(&mut cl, &["GET", "k"]).await).as_deref(), Some("v1"), "node {id}");
        assert_eq!(bulk(&cmd(&mut cl, &["GET", "n"]).await).as_deref(), Some("42"), "node {id}");
    }
    // INFO replication: role:master only on the leader, which followers name.
    let mut l = resp(&c, leader).await;
    let info = bulk(&cmd(&mut l, &["INFO", "replication"]).await).unwrap();
    assert!(info.contains("role:master"), "{info}");
    let info = bulk(&cmd(&mut f, &["INFO", "replication"]).await).unwrap();
    assert!(info.contains("role:slave"), "{info}");
    let leader_port = c.resp_addr(leader).rsplit_once(':').unwrap().1.to_string();
    let want = format!("master_port:{leader_port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = bulk(&cmd(&mut f, &["INFO", "replication"]).await).unwrap();
        if info.contains(&want) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "follower never named the leader's port: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_no_acknowledged_write_even_after_restarting_everything() {
    let mut c = Cluster::start(3, &[]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    let endpoints: Vec<String> = (1..=3).map(|i| c.resp_addr(i)).collect();
    let writers = start_writers(4, endpoints);
    writers.wait_count(200, "writes before the kill").await;
    c.kill(leader);
    let at_kill = writers.count.load(Ordering::Relaxed);
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let new_leader = wait_leader(&c, &rest).await;
    assert_ne!(new_leader, leader);
    writers.wait_count(at_kill + 200, "writes after the failover").await;
    let outcomes = writers.finish().await;
    // Bring the old leader back, then crash every node at once and restart them all.
    c.spawn(leader);
    wait_leader(&c, &[1, 2, 3]).await;
    for id in [1, 2, 3] {
        c.kill(id);
    }
    for id in [1, 2, 3] {
        c.spawn(id);
    }
    let l = wait_leader(&c, &[1, 2, 3]).await;
    verify_acked(&c, l, &outcomes).await;
    let other = [1, 2, 3].into_iter().find(|i| *i != l).unwrap();
    verify_acked(&c, other, &outcomes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_steps_down_and_serves_no_stale_read() {
    let c = Cluster::start(3, &[]);
    let old = wait_leader(&c, &[1, 2, 3]).await;
    let mut l = resp(&c, old).await;
    assert_eq!(cmd(&mut l, &["SET", "x", "1"]).await, Value::ok());
    c.signal(old, libc::SIGSTOP);
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != old).collect();
    let new = wait_leader(&c, &rest).await;
    assert_ne!(new, old);
    // The failure detectors of the others call the paused node dead.
    let member_state = |id: u64, of: u64| {
        let url = format!("{}/v1/cluster/members", c.http(of));
        async move {
            let v = http_request(Method::GET, &url, "", Duration::from_secs(5)).await.ok()?.json()?;
            let m = v["members"].as_array()?.iter().find(|m| m["id"] == id)?.clone();
            Some((m["state"].as_str()?.to_string(), m["phi"].as_f64()?))
        }
    };
    wait_for("the paused node to be called dead", Duration::from_secs(20), || async {
        let (state, phi) = member_state(old, new).await?;
        (state == "dead" && phi >= 8.0).then_some(())
    })
    .await;
    let mut n = resp(&c, new).await;
    read_retrying(&mut n, &["SET", "x", "2"]).await;
    assert_eq!(bulk(&cmd(&mut n, &["GET", "x"]).await).as_deref(), Some("2"));
    c.signal(old, libc::SIGCONT);
    // The resumed old leader must never answer the overwritten value; errors
    // while it learns of the new term are fine.
    let mut fresh = RespClient::connect(c.resp_addr(old)).await.unwrap().with_read_timeout(Duration::from_secs(15));
    let mut saw_new = 0;
    for _ in 0..200 {
        match fresh.cmd_str(&["GET", "x"]).await.unwrap() {
            Value::Bulk(b) => {
                assert_eq!(&b[..], b"2", "stale read from the resumed old leader");
                saw_new += 1;
                if saw_new >= 20 {
                    break;
                }
            }
            Value::Error(e) => assert!(
                e.starts_with("TRYAGAIN") || e.starts_with("TIMEOUT") || e.starts_with("CLUSTERDOWN"),
                "unexpected error {e}"
            ),
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(saw_new > 0, "the old leader never served the read");
    let st = wait_for("old leader to step down", Duration::from_secs(20), || async {
        let st = status(&c, old).await?;
        (st["role"] != "leader").then_some(st)
    })
    .await;
    assert_eq!(st["leader_id"].as_u64(), Some(new));
    wait_for("the resumed node to be alive again", Duration::from_secs(20), || async {
        let (state, _) = member_state(old, new).await?;
        (state == "alive").then_some(())
    })
    .await;
}

/// Adds node `id` through whichever node leads, retrying while leadership moves.
async fn add_member(c: &Cluster, voters: &[u64], id: u64) {
    let s = &c.specs[&id];
    let body = serde_json::json!({"id": id, "peer_addr": s.peer, "resp_addr": s.resp, "http_addr": s.http});
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let leader = wait_leader(c, voters).await;
        let url = format!("{}/v1/cluster/members", c.http(leader));
        let r = http_request_json(Method::POST, &url, &body, Duration::from_secs(150)).await.unwrap();
        let status = r.status;
        if status.is_success() {
            return;
        }
        let text = r.text();
        // 421: leadership moved between the lookup and the call; 503: election.
        assert!(status == 421 || status == 503, "add member {id}: {status} {text}");
        assert!(std::time::Instant::now() < deadline, "add member {id} kept failing: {status} {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed_while_writes_continue() {
    let mut c = Cluster::start(3, &[]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    let endpoints: Vec<String> = (1..=3).map(|i| c.resp_addr(i)).collect();
    let writers = start_writers(3, endpoints);
    writers.wait_count(100, "writes before the change").await;
    c.add_spec(4);
    let ic = c.initial_cluster.clone();
    c.spawn_with_initial(4, &ic);
    add_member(&c, &[1, 2, 3], 4).await;
    let st = wait_for("node 4 to be a voter", Duration::from_secs(30), || async {
        let st = status(&c, leader).await?;
        let members = st["members"].as_array()?.clone();
        members.iter().any(|m| m["id"] == 4 && m["voter"] == true).then_some(st)
    })
    .await;
    assert_eq!(st["members"].as_array().unwrap().len(), 4);
    let mark = writers.count.load(Ordering::Relaxed);
    writers.wait_count(mark + 100, "writes after adding node 4").await;
    // Remove a follower, then stop it.
    let leader = wait_leader(&c, &[1, 2, 3, 4]).await;
    let gone = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let leader = wait_leader(&c, &[1, 2, 3, 4]).await;
        let url = format!("{}/v1/cluster/members/{gone}", c.http(leader));
        let r = http_request(Method::DELETE, &url, "", Duration::from_secs(60)).await.unwrap();
        if r.status.is_success() {
            break;
        }
        assert!(r.status == 421 || r.status == 503, "remove member: {} {}", r.status, r.text());
        assert!(std::time::Instant::now() < deadline, "remove member kept failing");
    }
    c.kill(gone);
    let mark = writers.count.load(Ordering::Relaxed);
    writers.wait_count(mark + 100, "writes after removing a node").await;
    let outcomes = writers.finish().await;
    let st = status(&c, 4).await.unwrap();
    assert_eq!(st["members"].as_array().unwrap().len(), 3, "{st}");
    verify_acked(&c, 4, &outcomes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_node_catches_up_from_a_snapshot() {
    let mut c = Cluster::start(3, &["--snapshot-logs", "50"]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    let mut l = resp(&c, leader).await;
    for i in 0..300 {
        // Retried on TRYAGAIN/TIMEOUT (plain SET is idempotent).
        assert_eq!(read_retrying(&mut l, &["SET", &format!("snap/{i}"), &i.to_string()]).await, Value::ok());
    }
    wait_for("a snapshot on the leader", Duration::from_secs(30), || async {
        let st = status(&c, leader).await?;
        (st["snapshot_index"].as_u64()? > 0).then_some(())
    })
    .await;
    c.add_spec(4);
    let ic = c.initial_cluster.clone();
    c.spawn_with_initial(4, &ic);
    add_member(&c, &[1, 2, 3], 4).await;
    // A learner is promoted once it is close behind; wait until it has applied
    // everything written above before reading locally from it.
    let leader_now = wait_leader(&c, &[1, 2, 3, 4]).await;
    let commit = status(&c, leader_now).await.unwrap()["commit_index"].as_u64().unwrap();
    let st = wait_for("node 4 to apply the leader's log", Duration::from_secs(30), || async {
        let st = status(&c, 4).await?;
        (st["applied_index"].as_u64()? >= commit).then_some(st)
    })
    .await;
    assert!(st["snapshot_index"].as_u64().unwrap() > 0, "node 4 did not install a snapshot: {st}");
    let mut n4 = resp(&c, 4).await;
    assert_eq!(cmd(&mut n4, &["READONLY"]).await, Value::ok());
    for i in [0, 150, 299] {
        let v = cmd(&mut n4, &["GET", &format!("snap/{i}")]).await;
        assert_eq!(bulk(&v), Some(i.to_string()));
    }
    assert_eq!(cmd(&mut n4, &["DBSIZE"]).await, Value::Integer(300));
}

/// Snapshot files in a node's data dir: (published `.rsnap`, in-progress `.tmp`).
fn snapshot_files(c: &Cluster, id: u64) -> (Vec<String>, Vec<String>) {
    let dir = c.specs[&id].data_dir.join("snapshots");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let published = names.iter().filter(|n| n.ends_with(".rsnap")).cloned().collect();
    let tmp = names.iter().filter(|n| n.ends_with(".tmp")).cloned().collect();
    (published, tmp)
}

/// Removes member `id` through the leader of `voters`, retrying while leadership moves.
async fn remove_member(c: &Cluster, voters: &[u64], id: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let leader = wait_leader(c, voters).await;
        let url = format!("{}/v1/cluster/members/{id}", c.http(leader));
        let r = http_request(Method::DELETE, &url, "", Duration::from_secs(60)).await.unwrap();
        if r.status.is_success() {
            return;
        }
        assert!(r.status == 421 || r.status == 503, "remove member {id}: {} {}", r.status, r.text());
        assert!(std::time::Instant::now() < deadline, "remove member {id} kept failing");
    }
}

/// A follower loses its whole data dir while the cluster takes writes and snapshots. As an
/// operator would (a node without its data must not vote as if it had it), it is removed, then
/// added back under its id with an empty dir; it catches up from a snapshot streamed in chunks
/// while writes go on, then serves every acknowledged key and holds exactly the leader's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_follower_catches_up_from_a_snapshot_and_loses_no_key() {
    let mut c = Cluster::start(3, &["--snapshot-logs", "50"]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    let f = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != f).collect();
    let writers = start_writers(2, [1, 2, 3].iter().map(|i| c.resp_addr(*i)).collect());
    writers.wait_count(200, "writes before the wipe").await;
    c.kill(f);
    std::fs::remove_dir_all(&c.specs[&f].data_dir).unwrap();
    remove_member(&c, &others, f).await;
    let mark = writers.count.load(Ordering::Relaxed);
    writers.wait_count(mark + 300, "writes while the follower is gone").await;
    wait_for("a snapshot on the leader", Duration::from_secs(60), || async {
        let leader = wait_leader(&c, &others).await;
        let st = status(&c, leader).await?;
        (st["snapshot_index"].as_u64()? > 100).then_some(())
    })
    .await;
    // Started empty and outside the initial cluster, it waits to be added.
    let ic: Vec<String> = others.iter().map(|i| format!("{i}={}", c.specs[i].peer)).collect();
    c.spawn_with_initial(f, &ic.join(","));
    add_member(&c, &others, f).await;
    // Writes go on while it catches up.
    let mark = writers.count.load(Ordering::Relaxed);
    writers.wait_count(mark + 200, "writes while the follower catches up").await;
    wait_for("the wiped follower to install a snapshot", Duration::from_secs(60), || async {
        let st = status(&c, f).await?;
        (st["snapshot_index"].as_u64()? > 0).then_some(())
    })
    .await;
    let outcomes = writers.finish().await;
    let leader_now = wait_leader(&c, &[1, 2, 3]).await;
    let commit = status(&c, leader_now).await.unwrap()["commit_index"].as_u64().unwrap();
    wait_for("the follower to apply the leader's log", Duration::from_secs(60), || async {
        let st = status(&c, f).await?;
        (st["applied_index"].as_u64()? >= commit).then_some(())
    })
    .await;
    let log = std::fs::read_to_string(&c.specs[&f].log).unwrap();
    assert!(log.contains("snapshot installed"), "node {f} caught up without a snapshot:\n{}", c.log_tail(f));
    // Every acknowledged write, read through the wiped follower.
    verify_acked(&c, f, &outcomes).await;
    // Its local state holds exactly the leader's keys.
    let mut local = resp(&c, f).await;
    assert_eq!(cmd(&mut local, &["READONLY"]).await, Value::ok());
    let mut l = resp(&c, leader_now).await;
    let leader_keys = read_retrying(&mut l, &["DBSIZE"]).await;
    assert_eq!(cmd(&mut local, &["DBSIZE"]).await, leader_keys, "the follower's key count differs from the leader's");
    // Old snapshot files are gone: one published file per node, nothing half-written.
    for id in [leader_now, f] {
        wait_for("one snapshot file per node", Duration::from_secs(30), || async {
            let (published, tmp) = snapshot_files(&c, id);
            (published.len() == 1 && tmp.is_empty()).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_input_gets_clear_errors() {
    let c = Cluster::start(1, &[]);
    wait_leader(&c, &[1]).await;
    let mut cl = resp(&c, 1).await;
    let big = "x".repeat(1024 * 1024 + 1);
    match cmd(&mut cl, &["SET", "k", &big]).await {
        Value::Error(e) => assert!(e.contains("value_bytes_max"), "{e}"),
        other => panic!("oversized value accepted: {other:?}"),
    }
    let long_key = "k".repeat(64 * 1024 + 1);
    match cmd(&mut cl, &["SET", &long_key, "v"]).await {
        Value::Error(e) => assert!(e.contains("key_bytes_max"), "{e}"),
        other => panic!("oversized key accepted: {other:?}"),
    }
    assert_eq!(cmd(&mut cl, &["DBSIZE"]).await, Value::Integer(0));
    match cmd(&mut cl, &["SET", "k", "v", "EX", "0"]).await {
        Value::Error(e) => assert_eq!(e, "ERR invalid expire time in 'set' command"),
        other => panic!("{other:?}"),
    }
    match cmd(&mut cl, &["SET", "k", "v", "EX", "99999999999999999999"]).await {
        Value::Error(e) => assert_eq!(e, "ERR value is not an integer or out of range"),
        other => panic!("{other:?}"),
    }
    // HTTP: 413 with a JSON body.
    let url = format!("{}/v1/kv/big", c.http(1));
    let r = http_request(Method::PUT, &url, big.clone(), Duration::from_secs(15)).await.unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json().unwrap_or_default()["code"], "TOO_LARGE", "{}", r.text());
    // Malformed RESP: an error reply, then the connection is closed.
    let mut s = tokio::net::TcpStream::connect(c.resp_addr(1)).await.unwrap();
    s.write_all(b"*2\r\n$abc\r\n").await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("-ERR Protocol error"), "{text}");
    // Malformed HTTP: 400.
    let mut s = tokio::net::TcpStream::connect(&c.specs[&1].http).await.unwrap();
    s.write_all(b"THIS IS NOT HTTP\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    // The node still serves.
    assert_eq!(cmd(&mut cl, &["SET", "k", "ok"]).await, Value::ok());
}

fn run_server_expecting_failure(args: &[&str]) -> String {
    let out = std::process::Command::new(BIN).arg("server").args(args).output().unwrap();
    assert!(!out.status.success(), "server started with bad input {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn broken_config_and_corrupt_data_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, "id = 1\ndata_dir = \"/tmp/x\"\nelection_timeout_ms = \"soon\"\n").unwrap();
    let err = run_server_expecting_failure(&["--config", cfg.to_str().unwrap()]);
    assert!(err.contains("node.toml") && err.contains("election_timeout_ms"), "{err}");
    std::fs::write(&cfg, "id = 1\nbogus = true\n").unwrap();
    let err = run_server_expecting_failure(&["--config", cfg.to_str().unwrap()]);
    assert!(err.contains("unknown field") && err.contains("bogus"), "{err}");
    let err = run_server_expecting_failure(&["--id", "1"]);
    assert!(err.contains("data_dir"), "{err}");
    // A data file that is not a rampart store.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("rampart.redb"), vec![0x42u8; 16384]).unwrap();
    let (p, r, h) = (free_port(), free_port(), free_port());
    let err = run_server_expecting_failure(&[
        "--id",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
        "--peer-addr",
        &format!("127.0.0.1:{p}"),
        "--resp-addr",
        &format!("127.0.0.1:{r}"),
        "--http-addr",
        &format!("127.0.0.1:{h}"),
        "--initial-cluster",
        &format!("1=127.0.0.1:{p}"),
    ]);
    assert!(err.contains("corrupt") && err.contains("rampart.redb"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_writes_are_refused_and_refused_writes_never_appear() {
    let mut c = Cluster::start(3, &[]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    let mut l = resp(&c, leader).await;
    assert_eq!(cmd(&mut l, &["SET", "before", "1"]).await, Value::ok());
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    for f in &followers {
        c.kill(*f);
    }
    // Writes proposed before the leader notices may time out (outcome
    // unknown); once it has heard from no quorum for a while it refuses them
    // up front with CLUSTERDOWN, which promises they were not applied.
    let mut refused = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while refused.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "never answered CLUSTERDOWN");
        i += 1;
        let key = format!("nq/{i}");
        match cmd(&mut l, &["SET", &key, "x"]).await {
            Value::Error(e) if e.starts_with("CLUSTERDOWN") => refused.push(key),
            Value::Error(e) => assert!(e.starts_with("TIMEOUT"), "unexpected error {e}"),
            other => panic!("write acknowledged without a quorum: {other:?}"),
        }
    }
    // HTTP says the same with 503 and a code; health is 503 too.
    let url = format!("{}/v1/kv/nq-http", c.http(leader));
    let r = http_request(Method::PUT, &url, "x", Duration::from_secs(30)).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json().unwrap_or_default()["code"], "CLUSTERDOWN", "{}", r.text());
    let url = format!("{}/v1/health", c.http(leader));
    let h = http_request(Method::GET, &url, "", Duration::from_secs(15)).await.unwrap();
    assert_eq!(h.status, 503);
    for f in &followers {
        c.spawn(*f);
    }
    let l2 = wait_leader(&c, &[1, 2, 3]).await;
    let mut cl = resp(&c, l2).await;
    assert_eq!(bulk(&read_retrying(&mut cl, &["GET", "before"]).await).as_deref(), Some("1"));
    for key in refused.iter().chain(std::iter::once(&"nq-http".to_string())) {
        assert_eq!(read_retrying(&mut cl, &["GET", key]).await, Value::Null, "refused write {key} was applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_apply_in_order_on_leader_and_follower() {
    let c = Cluster::start(3, &[]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    for (node, key) in [(leader, "pl"), (follower, "pf")] {
        let mut cl = resp(&c, node).await;
        // 300 commands in one write: INCRs interleaved with SETs of another
        // key, a GET in the middle and an error in the middle.
        let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
        for i in 1..=300u32 {
            match i {
                150 => cmds.push(vec![b"GET".to_vec(), format!("{key}/s").into_bytes()]),
                200 => cmds.push(vec![b"INCRBY".to_vec(), format!("{key}/n").into_bytes(), b"notanumber".to_vec()]),
                i if i % 2 == 0 => {
                    cmds.push(vec![b"SET".to_vec(), format!("{key}/s").into_bytes(), i.to_string().into_bytes()])
                }
                _ => cmds.push(vec![b"INCR".to_vec(), format!("{key}/n").into_bytes()]),
            }
        }
        let replies = cl.pipeline(&cmds).await.unwrap();
        assert_eq!(replies.len(), 300);
        let mut expect_n = 0;
        for (i, r) in (1..=300u32).zip(&replies) {
            match i {
                150 => assert_eq!(bulk(r), Some("148".to_string()), "GET sees the SETs before it"),
                200 => assert!(matches!(r, Value::Error(e) if e.contains("not an integer")), "{r:?}"),
                i if i % 2 == 0 => assert_eq!(r, &Value::ok()),
                _ => {
                    expect_n += 1;
                    assert_eq!(r, &Value::Integer(expect_n), "INCR replies in order at command {i}");
                }
            }
        }
        assert_eq!(bulk(&cmd(&mut cl, &["GET", &format!("{key}/s")]).await), Some("300".to_string()));
        assert_eq!(bulk(&cmd(&mut cl, &["GET", &format!("{key}/n")]).await), Some(expect_n.to_string()));
    }
}
