//! End-to-end tests of key expiry with real `rampart server` processes: keys set with a TTL
//! survive a SIGKILL of the leader with their expiry intact, keys whose TTL ends disappear from
//! every node (the surviving ones and the restarted one), and keys without a TTL stay.
//!
//! Time here is the processes' real clock: the tests never sleep for it, they wait on conditions
//! with deadlines. The short TTL only has to end at some point within the deadline; the long one
//! is far longer than any test can run.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rampart_resp::client::RespClient;
use rampart_resp::Value;

/// A TTL no test outlives (10 minutes).
const LONG_TTL_MS: i64 = 600_000;
/// A TTL that ends during the test.
const SHORT_TTL_MS: i64 = 1_500;

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(n) => *n,
        other => panic!("not an integer reply: {other:?}"),
    }
}

/// Sends `args` through `cl` until the reply is not an error (a node still electing, or one
/// just restarted), within a deadline.
async fn retrying(cl: &mut RespClient, args: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match cl.cmd_str(args).await {
            Ok(Value::Error(e)) => e,
            Err(e) => e.to_string(),
            Ok(v) => return v,
        };
        assert!(Instant::now() < deadline, "{args:?} kept failing: {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes the three kinds of key through node `id`.
async fn write_keys(c: &Cluster, id: u64) {
    let mut cl = resp(c, id).await;
    let long = LONG_TTL_MS.to_string();
    let short = SHORT_TTL_MS.to_string();
    assert_eq!(retrying(&mut cl, &["SET", "exp/long", "L", "PX", &long]).await, Value::SimpleString("OK".into()));
    assert_eq!(retrying(&mut cl, &["SET", "exp/short", "S", "PX", &short]).await, Value::SimpleString("OK".into()));
    assert_eq!(retrying(&mut cl, &["SET", "exp/plain", "P"]).await, Value::SimpleString("OK".into()));
    // INCR keeps a TTL.
    assert_eq!(retrying(&mut cl, &["SET", "exp/counter", "1", "PX", &long]).await, Value::SimpleString("OK".into()));
    assert_eq!(int(&retrying(&mut cl, &["INCR", "exp/counter"]).await), 2);
}

/// Checks on node `id`: the short key is gone (waiting for it), the others are there, with
/// their TTLs.
async fn check_node(c: &Cluster, id: u64) {
    let mut cl = resp(c, id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while retrying(&mut cl, &["GET", "exp/short"]).await != Value::Null {
        assert!(Instant::now() < deadline, "exp/short never expired on node {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(int(&retrying(&mut cl, &["EXISTS", "exp/short"]).await), 0, "node {id}");
    assert_eq!(int(&retrying(&mut cl, &["PTTL", "exp/short"]).await), -2, "node {id}");
    assert_eq!(bulk(&retrying(&mut cl, &["GET", "exp/long"]).await).as_deref(), Some("L"), "node {id}");
    let pttl = int(&retrying(&mut cl, &["PTTL", "exp/long"]).await);
    assert!(pttl > 0 && pttl <= LONG_TTL_MS, "node {id}: PTTL exp/long = {pttl}");
    assert_eq!(int(&retrying(&mut cl, &["TTL", "exp/plain"]).await), -1, "node {id}");
    assert_eq!(bulk(&retrying(&mut cl, &["GET", "exp/counter"]).await).as_deref(), Some("2"), "node {id}");
    let pttl = int(&retrying(&mut cl, &["PTTL", "exp/counter"]).await);
    assert!(pttl > 0 && pttl <= LONG_TTL_MS, "node {id}: INCR dropped the TTL (PTTL {pttl})");
    let keys = retrying(&mut cl, &["KEYS", "exp/*"]).await;
    let Value::Array(keys) = keys else { panic!("KEYS answered {keys:?}") };
    let mut keys: Vec<String> = keys.iter().filter_map(bulk).collect();
    keys.sort();
    assert_eq!(keys, ["exp/counter", "exp/long", "exp/plain"], "node {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_survives_a_leader_kill_and_reaches_every_node() {
    let mut c = Cluster::start(3, &[]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    write_keys(&c, leader).await;

    c.kill(leader);
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let new_leader = wait_leader(&c, &rest).await;
    assert_ne!(new_leader, leader);
    for id in &rest {
        check_node(&c, *id).await;
    }
    // The killed node comes back and agrees, whatever it had applied.
    c.spawn(leader);
    check_node(&c, leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_in_multi_master_mode_survives_a_node_kill() {
    let mut c = Cluster::start(3, &["--replication", "multi-master"]);
    // Every node past its first-boot check (which needs all three) before one is killed.
    wait_healthy(&c, &[1, 2, 3]).await;
    write_keys(&c, 1).await;
    c.kill(1);
    for id in [2, 3] {
        check_node(&c, id).await;
    }
    c.spawn(1);
    check_node(&c, 1).await;
}
