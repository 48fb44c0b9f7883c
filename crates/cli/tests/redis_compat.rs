//! Differential test: the same string commands go to a real `redis-server` and to Rampart in
//! each replication mode, and every reply must be identical (RESP2), edge cases and error texts
//! included. `.ci/run` installs redis-server; the test fails, loudly, when it is missing.

mod common;

use std::time::Duration;

use common::{resp, wait_for, Cluster, RedisServer};
use rampart_resp::client::RespClient;
use rampart_resp::Value;

/// A real redis-server and a connection to it.
async fn start_redis() -> (RedisServer, RespClient) {
    let (guard, addr) = common::start_redis();
    (guard, common::resp_connect(&addr).await)
}

/// Commands whose replies must match Redis 7.0 exactly. Only string commands that Rampart
/// implements; state carries over from one to the next.
const SCRIPT: &[&[&str]] = &[
    &["PING"],
    &["PING", "hi"],
    &["PING", "a", "b"],
    &["ECHO", "x"],
    &["GET", "k"],
    &["SET", "k", "v"],
    &["GET", "k"],
    &["SET", "k", "w", "NX"],
    &["SET", "k", "w", "XX", "GET"],
    &["SET", "k", "z", "NX", "GET"],
    &["SET", "nope", "z", "XX"],
    &["SET", "k", "v", "NX", "XX"],
    &["SET", "k", "v", "BOGUS"],
    &["SET", "k"],
    &["SETNX", "k", "again"],
    &["SETNX", "fresh", "1"],
    &["GETSET", "k", "gs"],
    &["GETSET", "missing", "gs"],
    &["MSET", "a", "1", "b", "2"],
    &["MSET", "a", "1", "b"],
    &["MGET", "a", "b", "nope"],
    &["EXISTS", "a", "b", "nope", "a"],
    &["DEL", "a", "nope", "a"],
    &["UNLINK", "b"],
    &["INCR", "n"],
    &["INCRBY", "n", "41"],
    &["DECR", "n"],
    &["DECRBY", "n", "-10"],
    &["INCRBY", "n", "+5"],
    &["INCRBY", "n", "05"],
    &["INCRBY", "n", " 5"],
    &["INCRBY", "n", "x"],
    &["DECRBY", "n", "-9223372036854775808"],
    &["SET", "n", "9223372036854775807"],
    &["INCR", "n"],
    &["SET", "n", "-9223372036854775808"],
    &["DECR", "n"],
    &["SET", "s", "+1"],
    &["INCR", "s"],
    &["SET", "s", "01"],
    &["INCR", "s"],
    &["SET", "s", "-0"],
    &["INCR", "s"],
    &["SET", "s", "abc"],
    &["INCR", "s"],
    &["APPEND", "s", "def"],
    &["APPEND", "new", "x"],
    &["STRLEN", "s"],
    &["STRLEN", "nope"],
    &["TYPE", "s"],
    &["TYPE", "nope"],
    &["GET"],
    &["GET", "a", "b"],
    &["INCR"],
    &["DBSIZE", "x"],
    &["SELECT", "0"],
    &["SELECT", "x"],
    &["NOSUCHCOMMAND", "a", "b"],
    &["nosuch"],
];

async fn run(client: &mut RespClient, cmd: &[&str]) -> Value {
    client.cmd_str(cmd).await.unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

async fn compare_with_redis(extra_args: &[&str]) {
    let (_redis, mut redis) = start_redis().await;
    let cluster = Cluster::start(1, extra_args);
    let mut rampart = resp(&cluster, 1).await;
    // Wait until the node serves writes (a leader, or the first-boot check done).
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
    for cmd in SCRIPT {
        let want = run(&mut redis, cmd).await;
        let got = run(&mut rampart, cmd).await;
        if want != got {
            mismatches.push(format!("{cmd:?}: redis {want:?}, rampart {got:?}"));
        }
    }
    assert!(mismatches.is_empty(), "replies differ from redis-server:\n{}", mismatches.join("\n"));
}

/// Keys for the glob comparison: the bytes glob patterns treat specially, high bytes (Redis
/// compares class ranges as signed `char`s) and the empty key.
const GLOB_KEYS: &[&[u8]] = &[
    b"",
    b"[",
    b"]",
    b"a",
    b"b",
    b"z",
    b"A",
    b"^",
    b"\\",
    b"-",
    b"*",
    b"?",
    b"ab",
    b"a]",
    b"a[",
    b"ba",
    b"abc",
    b"a*b",
    b"a?b",
    b"\x80",
    b"\xff",
    b"a\xff",
    b"user:1",
    b"user:*",
    b"user:1:x",
    b"h\x00x",
];

/// Patterns whose KEYS and SCAN MATCH answers must be the same key sets as redis-server's,
/// the corners of its `stringmatchlen` included (unterminated classes, `[a-]`, `[]`, trailing
/// backslashes, signed range bounds, and `*` against the empty key).
const GLOB_PATTERNS: &[&[u8]] = &[
    b"*",
    b"**",
    b"?",
    b"??",
    b"*?",
    b"[",
    b"[^",
    b"[]",
    b"[^]",
    b"[]a]",
    b"[a-]",
    b"[b-a]",
    b"[a",
    b"[\\",
    b"\\",
    b"a\\",
    b"\\*",
    b"\\[",
    b"[\\]]",
    b"[\\-]",
    b"[a-\xff]",
    b"[\x80-\xff]",
    b"[^a-z]",
    b"a*",
    b"*b",
    b"a*b",
    b"*a*",
    b"a?b",
    b"a[*?]b",
    b"user:*",
    b"user:?",
    b"user:*:x",
    b"user:\\*",
    b"h?x",
    b"h\x00x",
    b"[[]",
    b"*[",
    b"*[a",
    b"[-a]",
    b"[a-b-c]",
    b"",
    b"***a***",
];

/// Sorted keys of a KEYS reply, or of one SCAN reply's key array (COUNT covers every key).
fn sorted_keys(reply: &Value) -> Result<Vec<Vec<u8>>, String> {
    let items = match reply {
        Value::Array(items) if items.len() == 2 && matches!(items[1], Value::Array(_)) => match &items[1] {
            Value::Array(keys) => keys,
            _ => unreachable!(),
        },
        Value::Array(items) => items,
        other => return Err(format!("not a key list: {other:?}")),
    };
    let mut keys = items
        .iter()
        .map(|v| match v {
            Value::Bulk(b) => Ok(b.to_vec()),
            other => Err(format!("not a key: {other:?}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    keys.sort();
    Ok(keys)
}

async fn compare_globs_with_redis(extra_args: &[&str]) {
    let (_redis, mut redis) = start_redis().await;
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
    for client in [&mut redis, &mut rampart] {
        client.cmd(&[b"DEL", b"ready"]).await.unwrap();
        for key in GLOB_KEYS {
            assert_eq!(client.cmd(&[b"SET", key, b"v"]).await.unwrap(), Value::SimpleString("OK".into()), "{key:?}");
        }
    }
    let mut mismatches = Vec::new();
    for pattern in GLOB_PATTERNS {
        let queries: [&[&[u8]]; 2] = [&[b"KEYS", pattern], &[b"SCAN", b"0", b"MATCH", pattern, b"COUNT", b"1000"]];
        for q in queries {
            let want = sorted_keys(&redis.cmd(q).await.unwrap());
            let got = sorted_keys(&rampart.cmd(q).await.unwrap());
            if want != got {
                let shown: Vec<String> = q.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                mismatches.push(format!("{shown:?}: redis {want:?}, rampart {got:?}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "glob matches differ from redis-server:\n{}", mismatches.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_matches_globs_like_redis() {
    compare_globs_with_redis(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_mode_matches_globs_like_redis() {
    compare_globs_with_redis(&["--replication", "multi-master"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_answers_string_commands_like_redis() {
    compare_with_redis(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_mode_answers_string_commands_like_redis() {
    compare_with_redis(&["--replication", "multi-master"]).await;
}
