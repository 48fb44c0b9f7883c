//! Differential test of key expiry: the same command sequences go to a real `redis-server` and to
//! a Rampart node in each replication mode, and every reply must be identical (RESP2). Replies
//! that depend on elapsed time (TTL, PTTL, EXPIRETIME, PEXPIRETIME of a relative expiry) must
//! agree within a tolerance; keys made to expire are waited for (with a deadline), never slept
//! on. `.ci/run` installs redis-server; the test fails, loudly, when it is missing.

mod common;

use std::time::Duration;

use common::{resp, wait_for, Cluster, RedisServer};
use rampart_resp::client::RespClient;
use rampart_resp::Value;

/// How a reply is compared.
#[derive(Clone, Copy)]
enum Cmp {
    /// Identical.
    Exact,
    /// Integers within this much of each other (negative ones exactly: -1, -2).
    Near(i64),
}

use Cmp::{Exact, Near};

/// Seconds of slack for a TTL, and milliseconds for a PTTL or PEXPIRETIME: the two servers
/// see the commands at slightly different times.
const TTL_SLACK_S: i64 = 2;
const PTTL_SLACK_MS: i64 = 2_000;

/// Commands whose replies must match Redis 7.0. State carries over from one to the next. No
/// key here expires while the script runs (relative expiries are long; absolute ones are far
/// in the future or in the past).
const SCRIPT: &[(Cmp, &[&str])] = &[
    (Exact, &["SET", "k", "v"]),
    (Exact, &["TTL", "k"]),
    (Exact, &["PTTL", "k"]),
    (Exact, &["EXPIRETIME", "k"]),
    (Exact, &["PEXPIRETIME", "k"]),
    (Exact, &["TTL", "nosuch"]),
    (Exact, &["PTTL", "nosuch"]),
    (Exact, &["EXPIRETIME", "nosuch"]),
    (Exact, &["PEXPIRETIME", "nosuch"]),
    // SET's options and their errors.
    (Exact, &["SET", "k", "v", "EX", "100"]),
    (Near(TTL_SLACK_S), &["TTL", "k"]),
    (Near(PTTL_SLACK_MS), &["PTTL", "k"]),
    (Exact, &["SET", "k", "v", "PX", "100000"]),
    (Near(TTL_SLACK_S), &["TTL", "k"]),
    (Exact, &["SET", "k", "v", "EXAT", "4102444800"]),
    (Exact, &["EXPIRETIME", "k"]),
    (Exact, &["PEXPIRETIME", "k"]),
    (Exact, &["SET", "k", "v", "PXAT", "4102444800123"]),
    (Exact, &["EXPIRETIME", "k"]),
    (Exact, &["PEXPIRETIME", "k"]),
    (Exact, &["SET", "k", "w", "KEEPTTL"]),
    (Exact, &["PEXPIRETIME", "k"]),
    (Exact, &["GET", "k"]),
    (Exact, &["SET", "k", "x", "GET", "EXAT", "4102444801"]),
    (Exact, &["EXPIRETIME", "k"]),
    (Exact, &["SET", "k", "y", "NX", "EX", "5"]),
    (Exact, &["EXPIRETIME", "k"]),
    (Exact, &["SET", "k", "y", "XX", "PXAT", "4102444802000"]),
    (Exact, &["EXPIRETIME", "k"]),
    (Exact, &["SET", "k", "v"]),
    (Exact, &["TTL", "k"]),
    (Exact, &["SET", "k", "v", "KEEPTTL"]),
    (Exact, &["TTL", "k"]),
    (Exact, &["SET", "k", "v", "EX", "10", "EX", "20"]),
    (Near(TTL_SLACK_S), &["TTL", "k"]),
    (Exact, &["SET", "k", "v", "EX", "10", "PX", "10"]),
    (Exact, &["SET", "k", "v", "KEEPTTL", "EX", "5"]),
    (Exact, &["SET", "k", "v", "EX", "5", "KEEPTTL"]),
    (Exact, &["SET", "k", "v", "EX"]),
    (Exact, &["SET", "k", "v", "PERSIST"]),
    (Exact, &["SET", "k", "v", "EXAT", "abc", "NX", "XX"]),
    (Exact, &["SET", "k", "v", "EX", "0"]),
    (Exact, &["SET", "k", "v", "EX", "-1"]),
    (Exact, &["SET", "k", "v", "PXAT", "0"]),
    (Exact, &["SET", "k", "v", "EX", "9223372036854775"]),
    (Exact, &["SET", "k", "v", "PX", "9223372036854775807"]),
    (Exact, &["SET", "k", "v", "EX", "abc"]),
    (Exact, &["SET", "k", "v", "EX", "+5"]),
    (Exact, &["SET", "k", "v", "PX", "1.5"]),
    (Exact, &["SET", "k", "v", "EXAT", "1"]),
    (Exact, &["EXISTS", "k"]),
    // SETEX, PSETEX.
    (Exact, &["SETEX", "k", "100", "v"]),
    (Near(TTL_SLACK_S), &["TTL", "k"]),
    (Exact, &["PSETEX", "k", "100000", "v"]),
    (Near(PTTL_SLACK_MS), &["PTTL", "k"]),
    (Exact, &["SETEX", "k", "0", "v"]),
    (Exact, &["SETEX", "k", "abc", "v"]),
    (Exact, &["PSETEX", "k", "-5", "v"]),
    (Exact, &["SETEX", "k", "9223372036854775", "v"]),
    (Exact, &["SETEX", "k", "10"]),
    (Exact, &["PSETEX", "k"]),
    // INCR and APPEND keep the TTL; GETSET and MSET clear it.
    (Exact, &["SET", "n", "1", "EXAT", "4102444800"]),
    (Exact, &["INCR", "n"]),
    (Exact, &["EXPIRETIME", "n"]),
    (Exact, &["APPEND", "n", "0"]),
    (Exact, &["EXPIRETIME", "n"]),
    (Exact, &["GETSET", "n", "5"]),
    (Exact, &["TTL", "n"]),
    (Exact, &["EXPIREAT", "n", "4102444800"]),
    (Exact, &["MSET", "n", "6"]),
    (Exact, &["TTL", "n"]),
    // GETEX, GETDEL.
    (Exact, &["GETEX", "nosuch"]),
    (Exact, &["GETEX", "nosuch", "EX", "0"]),
    (Exact, &["GETEX", "nosuch", "PERSIST"]),
    (Exact, &["GETEX", "nosuch", "FOO"]),
    (Exact, &["SET", "g", "v"]),
    (Exact, &["GETEX", "g"]),
    (Exact, &["TTL", "g"]),
    (Exact, &["GETEX", "g", "EX", "100"]),
    (Near(TTL_SLACK_S), &["TTL", "g"]),
    (Exact, &["GETEX", "g", "EXAT", "4102444800"]),
    (Exact, &["EXPIRETIME", "g"]),
    (Exact, &["GETEX", "g", "PXAT", "4102444800500"]),
    (Exact, &["PEXPIRETIME", "g"]),
    (Exact, &["EXPIRETIME", "g"]),
    (Exact, &["GETEX", "g"]),
    (Exact, &["PEXPIRETIME", "g"]),
    (Exact, &["GETEX", "g", "PERSIST"]),
    (Exact, &["TTL", "g"]),
    (Exact, &["GETEX", "g", "PERSIST", "PERSIST"]),
    (Exact, &["GETEX", "g", "EX", "10", "EX", "20"]),
    (Near(TTL_SLACK_S), &["TTL", "g"]),
    (Exact, &["GETEX", "g", "EX", "0"]),
    (Exact, &["GETEX", "g", "EXAT", "9223372036854775807"]),
    (Exact, &["GETEX", "g", "PERSIST", "EX", "5"]),
    (Exact, &["GETEX", "g", "EX"]),
    (Exact, &["GETEX", "g", "KEEPTTL"]),
    (Exact, &["GETEX", "g", "NX"]),
    (Exact, &["GETEX"]),
    (Exact, &["GETEX", "g", "EXAT", "1"]),
    (Exact, &["EXISTS", "g"]),
    (Exact, &["SET", "g", "v", "EX", "100"]),
    (Exact, &["GETDEL", "g"]),
    (Exact, &["GETDEL", "g"]),
    (Exact, &["TTL", "g"]),
    (Exact, &["GETDEL"]),
    (Exact, &["GETDEL", "g", "x"]),
    // The EXPIRE family, its conditions and errors.
    (Exact, &["EXPIRE", "nosuch", "10"]),
    (Exact, &["PERSIST", "nosuch"]),
    (Exact, &["SET", "e", "v"]),
    (Exact, &["PERSIST", "e"]),
    (Exact, &["EXPIRE", "e", "100", "GT"]),
    (Exact, &["EXPIRE", "e", "100", "XX"]),
    (Exact, &["EXPIRE", "e", "100", "XX", "LT"]),
    (Exact, &["TTL", "e"]),
    (Exact, &["EXPIRE", "e", "100", "LT"]),
    (Near(TTL_SLACK_S), &["TTL", "e"]),
    (Exact, &["EXPIRE", "e", "50", "NX"]),
    (Exact, &["EXPIRE", "e", "200", "LT"]),
    (Exact, &["EXPIRE", "e", "200", "GT"]),
    (Exact, &["EXPIRE", "e", "100", "XX", "GT"]),
    (Exact, &["EXPIRE", "e", "300", "XX", "GT"]),
    (Exact, &["EXPIRE", "e", "250", "XX", "LT"]),
    (Near(TTL_SLACK_S), &["TTL", "e"]),
    (Exact, &["PEXPIRE", "e", "400000", "XX"]),
    (Near(PTTL_SLACK_MS), &["PTTL", "e"]),
    (Exact, &["EXPIREAT", "e", "4102444800"]),
    (Exact, &["EXPIRETIME", "e"]),
    (Exact, &["PEXPIREAT", "e", "4102444800007"]),
    (Exact, &["PEXPIRETIME", "e"]),
    (Exact, &["EXPIRETIME", "e"]),
    (Exact, &["EXPIRE", "e", "10", "NX", "NX"]),
    (Exact, &["PERSIST", "e"]),
    (Exact, &["PERSIST", "e"]),
    (Exact, &["TTL", "e"]),
    (Exact, &["EXPIRE", "e", "10", "NX", "XX"]),
    (Exact, &["EXPIRE", "e", "10", "NX", "GT"]),
    (Exact, &["EXPIRE", "e", "10", "GT", "LT"]),
    (Exact, &["EXPIRE", "e", "10", "foo"]),
    (Exact, &["EXPIRE", "e", "abc", "foo"]),
    (Exact, &["EXPIRE", "e", "abc"]),
    (Exact, &["EXPIRE", "e", "9223372036854775"]),
    (Exact, &["EXPIRE", "e", "9223372036854775807"]),
    (Exact, &["PEXPIRE", "e", "9223372036854775807"]),
    (Exact, &["EXPIREAT", "e", "9223372036854775807"]),
    (Exact, &["EXPIRE", "e"]),
    (Exact, &["PERSIST"]),
    (Exact, &["TTL", "e", "x"]),
    (Exact, &["TTL", "e"]),
    (Exact, &["EXPIRE", "e", "0", "GT"]),
    (Exact, &["EXISTS", "e"]),
    (Exact, &["EXPIRE", "e", "0", "LT"]),
    (Exact, &["EXISTS", "e"]),
    (Exact, &["SET", "e", "v"]),
    (Exact, &["EXPIREAT", "e", "1"]),
    (Exact, &["EXISTS", "e"]),
    (Exact, &["SET", "e", "v"]),
    (Exact, &["EXPIRE", "e", "-1"]),
    (Exact, &["GET", "e"]),
    (Exact, &["SET", "e", "v"]),
    (Exact, &["PEXPIREAT", "e", "-5"]),
    (Exact, &["TYPE", "e"]),
];

/// After [`SCRIPT`]: keys set to expire in [`SHORT_TTL_MS`], then (once Redis and Rampart both
/// hide them) commands on the expired keys.
const SHORT_TTL_MS: &str = "300";
const AFTER_EXPIRY: &[&[&str]] = &[
    &["GET", "short"],
    &["EXISTS", "short", "short_n", "long"],
    &["TYPE", "short"],
    &["TTL", "short"],
    &["PTTL", "short"],
    &["EXPIRETIME", "short"],
    &["STRLEN", "short"],
    &["EXPIRE", "short", "100"],
    &["PERSIST", "short"],
    &["GETEX", "short", "PERSIST"],
    &["GETDEL", "short"],
    &["SET", "short", "w", "XX"],
    &["SET", "short", "w", "GET"],
    &["INCR", "short_n"],
    &["TTL", "short_n"],
    &["GET", "long"],
    &["TTL", "long"],
];

async fn run(client: &mut RespClient, cmd: &[&str]) -> Value {
    client.cmd_str(cmd).await.unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn agree(cmp: Cmp, want: &Value, got: &Value) -> bool {
    match (cmp, want, got) {
        (Exact, w, g) => w == g,
        (Near(slack), Value::Integer(w), Value::Integer(g)) if *w >= 0 && *g >= 0 => (w - g).abs() <= slack,
        (Near(_), w, g) => w == g,
    }
}

/// Longest wait for a key set with [`SHORT_TTL_MS`] to be gone.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(20);

/// Polls until `key` is gone on `client`'s server; false if it is still there at the deadline.
async fn wait_gone(client: &mut RespClient, key: &str) -> bool {
    let deadline = std::time::Instant::now() + EXPIRY_DEADLINE;
    loop {
        if run(client, &["EXISTS", key]).await == Value::Integer(0) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn compare_expiry_with_redis(extra_args: &[&str]) {
    let (_redis_guard, redis_addr): (RedisServer, String) = common::start_redis();
    let mut redis = common::resp_connect(&redis_addr).await;
    let cluster = Cluster::start(1, extra_args);
    let mut rampart = resp(&cluster, 1).await;
    wait_for("the node to take writes", Duration::from_secs(30), || {
        let addr = cluster.resp_addr(1);
        async move {
            let mut c = RespClient::connect(addr).await.ok()?;
            matches!(c.cmd_str(&["SET", "ready", "1"]).await.ok()?, Value::SimpleString(_)).then_some(())
        }
    })
    .await;
    run(&mut redis, &["SET", "ready", "1"]).await;
    let mut mismatches = Vec::new();
    for (cmp, cmd) in SCRIPT {
        let want = run(&mut redis, cmd).await;
        let got = run(&mut rampart, cmd).await;
        if !agree(*cmp, &want, &got) {
            mismatches.push(format!("{cmd:?}: redis {want:?}, rampart {got:?}"));
        }
    }
    for setup in [
        &["SET", "short", "v", "PX", SHORT_TTL_MS][..],
        &["SET", "short_n", "41", "PX", SHORT_TTL_MS],
        &["SET", "long", "v", "EX", "1000"],
    ] {
        let want = run(&mut redis, setup).await;
        let got = run(&mut rampart, setup).await;
        if want != got {
            mismatches.push(format!("{setup:?}: redis {want:?}, rampart {got:?}"));
        }
    }
    for key in ["short", "short_n"] {
        assert!(wait_gone(&mut redis, key).await, "redis-server did not expire {key}");
        if !wait_gone(&mut rampart, key).await {
            mismatches.push(format!("{key} (PX {SHORT_TTL_MS}) still exists after {EXPIRY_DEADLINE:?}"));
        }
    }
    for cmd in AFTER_EXPIRY {
        let want = run(&mut redis, cmd).await;
        let got = run(&mut rampart, cmd).await;
        let cmp = if cmd[0] == "TTL" { Near(TTL_SLACK_S) } else { Exact };
        if !agree(cmp, &want, &got) {
            mismatches.push(format!("after expiry {cmd:?}: redis {want:?}, rampart {got:?}"));
        }
    }
    assert!(mismatches.is_empty(), "replies differ from redis-server:\n{}", mismatches.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_answers_expiry_commands_like_redis() {
    compare_expiry_with_redis(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_mode_answers_expiry_commands_like_redis() {
    compare_expiry_with_redis(&["--replication", "multi-master"]).await;
}
