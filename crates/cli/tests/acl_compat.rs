//! Differential test of authentication and ACLs: the same AUTH, HELLO and ACL commands go to a
//! real `redis-server` 7.0 and to a Rampart node in each replication mode, over several
//! connections, and every reply must be identical (RESP2), errors included.
//!
//! Two differences are by design and normalised before comparing, nothing else:
//! - password hashes: Redis shows SHA-256 hex, Rampart argon2id PHC strings (`#<hash>` in
//!   `ACL LIST`, the `passwords` of `ACL GETUSER`);
//! - Redis's default user holds every pub/sub channel (`&*`); Rampart has no channel permissions
//!   (pub/sub needs `allkeys`), so its users hold none (`resetchannels`).

mod common;

use std::time::Duration;

use common::{resp_connect as connect, start_redis, wait_for, Cluster};
use rampart_resp::client::RespClient;
use rampart_resp::Value;

/// `NEW` opens a new connection (the next commands go to it); `HELLO!` marks a HELLO whose
/// success reply is compared by its `proto` field only (server versions and client ids differ).
const SCRIPT: &[&[&str]] = &[
    &["ACL", "WHOAMI"],
    &["ACL", "USERS"],
    &["ACL", "LIST"],
    &["ACL", "GETUSER", "default"],
    &["AUTH", "foo"],
    &["AUTH", "default", "anything"],
    &["AUTH", "nobody", "foo"],
    &["AUTH"],
    &["AUTH", "a", "b", "c"],
    &["ACL", "SETUSER", "alice", "on", ">pw1", "~a*", "+@read"],
    &["ACL", "SETUSER", "ro", "on", ">ropw", "~r*", "~exact", "+@read"],
    &["ACL", "SETUSER", "rw", "on", ">rwpw", "~w*", "+@read", "+@write"],
    &["ACL", "SETUSER", "bob"],
    &["ACL", "SETUSER", "bob", ">x", "<y"],
    &["ACL", "SETUSER", "bob", "~*", "~a"],
    &["ACL", "SETUSER", "bob", "allkeys", "~a"],
    &["ACL", "SETUSER", "bob", "+foo"],
    &["ACL", "SETUSER", "bob", "+@foo"],
    &["ACL", "SETUSER", "bob", "bogus"],
    &["ACL", "SETUSER", "bob", "+acl|nosuch"],
    &["ACL", "SETUSER", "bob", "-get|x"],
    &["ACL", "SETUSER", "a b"],
    &["ACL", "SETUSER", "ab", "c"],
    &["ACL", "SETUSER", "a:b"],
    &["ACL", "GETUSER", "bob"],
    &["ACL", "GETUSER", "nosuch"],
    &["ACL", "DELUSER", "default"],
    &["ACL", "DELUSER", "nobody", "bob", "a:b"],
    &["ACL", "USERS"],
    &["ACL", "CAT"],
    &["ACL", "CAT", "nosuch"],
    &["ACL", "WHOAMI", "x"],
    &["ACL"],
    &["ACL", "FOO"],
    &["ACL", "SETUSER"],
    &["ACL", "DELUSER"],
    &["ACL", "USERS", "x"],
    &["ACL", "GETUSER"],
    &["ACL", "SETUSER", "c1", "+@read", "+@write"],
    &["ACL", "SETUSER", "c2", "+@read", "-get"],
    // One single command per user: Redis lists several in its hash table's order, which a random
    // seed changes from run to run.
    &["ACL", "SETUSER", "c3", "+get", "+set", "-set"],
    &["ACL", "SETUSER", "c4", "+@all", "-@admin"],
    &["ACL", "SETUSER", "c5", "+@read", "-@read"],
    &["ACL", "SETUSER", "c6", "+@write", "-@read", "+get"],
    &["ACL", "SETUSER", "c7", "+@all", "-@write", "+set"],
    &["ACL", "SETUSER", "c8", "+acl"],
    &["ACL", "SETUSER", "c9", "+acl|whoami"],
    &["ACL", "SETUSER", "c10", "~a", "~a", "~b", "resetkeys", "~c", "nocommands", "+ping"],
    &["ACL", "SETUSER", "c11", "on", "nopass", "~*", "+@all"],
    &["ACL", "SETUSER", "c12", ">a", ">a", ">b", "<a", "off"],
    &["ACL", "LIST"],
    &["ACL", "GETUSER", "c10"],
    &["ACL", "GETUSER", "c12"],
    &["SET", "r1", "v"],
    &["SET", "w1", "v"],
    // A read-only user: reads in its patterns, no writes, no other keys, no PING.
    &["NEW"],
    &["AUTH", "ro", "ropw"],
    &["ACL", "WHOAMI"],
    &["GET", "r1"],
    &["GET", "exact"],
    &["GET", "x1"],
    &["SET", "r1", "v2"],
    &["MGET", "r1", "x"],
    &["MGET", "r1", "exact"],
    &["EXISTS", "r1", "r2"],
    &["STRLEN", "r1"],
    &["PING"],
    &["DBSIZE"],
    &["KEYS", "r1*"],
    &["ACL", "LIST"],
    &["ACL", "SETUSER", "x"],
    &["FOO"],
    &["GET"],
    &["SET", "r1"],
    &["AUTH", "ro", "bad"],
    &["ACL", "WHOAMI"],
    &["AUTH", "nobody", "x"],
    &["AUTH", "c12", "b"],
    &["AUTH", "c11", "whatever"],
    &["ACL", "WHOAMI"],
    // A read-write user on its own keys.
    &["NEW"],
    &["AUTH", "rw", "rwpw"],
    &["SET", "w2", "x"],
    &["GET", "w2"],
    &["SET", "r9", "x"],
    &["MSET", "w3", "1", "w4", "2"],
    &["MSET", "w3", "1", "r4", "2"],
    &["DEL", "w3", "w4"],
    &["DEL", "w3", "r1"],
    &["INCR", "w5"],
    &["APPEND", "w5", "0"],
    &["GET", "w5"],
    &["ACL", "DELUSER", "ro"],
    &["CONFIG", "GET", "x"],
    // A password on the default user: new connections must authenticate.
    &["NEW"],
    &["ACL", "SETUSER", "slow", "on", ">s", "~*", "+@slow"],
    &["ACL", "SETUSER", "default", ">secret"],
    &["NEW"],
    &["GET", "x"],
    &["FOO"],
    &["GET"],
    &["PING"],
    &["ACL", "WHOAMI"],
    &["ACL", "FOO"],
    &["ACL", "WHOAMI", "x"],
    &["HELLO", "3"],
    &["HELLO"],
    &["HELLO", "2", "AUTH", "default", "wrong"],
    &["HELLO", "2", "AUTH", "default"],
    &["HELLO", "4", "AUTH", "default", "secret"],
    &["HELLO", "x"],
    &["HELLO", "2", "AUTH", "nouser", "x"],
    &["HELLO", "2", "AUTH", "default", "secret", "SETNAME", "bad", "name"],
    &["ACL", "WHOAMI"],
    &["CLIENT", "GETNAME"],
    &["AUTH", "slow", "s"],
    &["ACL", "SETUSER", "zz"],
    &["ACL", "DELUSER", "zz"],
    &["ACL", "LIST"],
    &["NEW"],
    &["HELLO!", "2", "AUTH", "default", "secret"],
    &["ACL", "WHOAMI"],
    &["AUTH", "wrong"],
    &["AUTH", "default", "secret"],
    &["ACL", "SETUSER", "default", "resetpass", "nopass"],
    &["NEW"],
    &["ACL", "WHOAMI"],
    &["AUTH", "foo"],
];

/// Applies the normalisations the module docs list.
fn normalise(v: Value) -> Value {
    match v {
        Value::Bulk(b) => {
            let s = String::from_utf8_lossy(&b).into_owned();
            if s.starts_with("user ") {
                let words: Vec<String> = s
                    .split(' ')
                    .map(|w| if w.starts_with('#') { "#<hash>".to_string() } else { w.to_string() })
                    .map(|w| if w == "&*" { "resetchannels".to_string() } else { w })
                    .collect();
                Value::bulk(words.join(" "))
            } else if s == "&*" {
                Value::bulk("")
            } else {
                Value::Bulk(b)
            }
        }
        Value::Array(items) => {
            // ACL GETUSER: the passwords array holds hashes.
            let mut out = Vec::with_capacity(items.len());
            let mut hashes_next = false;
            for item in items {
                if hashes_next {
                    hashes_next = false;
                    if let Value::Array(h) = item {
                        out.push(Value::Array(h.iter().map(|_| Value::bulk("<hash>")).collect()));
                        continue;
                    }
                }
                hashes_next = item == Value::bulk("passwords");
                out.push(normalise(item));
            }
            Value::Array(out)
        }
        other => other,
    }
}

fn hello_proto(v: &Value) -> Option<Value> {
    match v {
        Value::Array(items) => items.chunks(2).find(|kv| kv[0] == Value::bulk("proto")).map(|kv| kv[1].clone()),
        Value::Map(pairs) => pairs.iter().find(|(k, _)| *k == Value::bulk("proto")).map(|(_, v)| v.clone()),
        _ => None,
    }
}

async fn run_script(redis_addr: &str, rampart_addr: &str) -> Vec<String> {
    let mut redis = connect(redis_addr).await;
    let mut rampart = connect(rampart_addr).await;
    let mut mismatches = Vec::new();
    for cmd in SCRIPT {
        if cmd[0] == "NEW" {
            redis = connect(redis_addr).await;
            rampart = connect(rampart_addr).await;
            continue;
        }
        let hello_only_proto = cmd[0] == "HELLO!";
        let mut args: Vec<&str> = cmd.to_vec();
        if hello_only_proto {
            args[0] = "HELLO";
        }
        let want = redis.cmd_str(&args).await.unwrap_or_else(|e| panic!("redis {cmd:?}: {e}"));
        let got = rampart.cmd_str(&args).await.unwrap_or_else(|e| panic!("rampart {cmd:?}: {e}"));
        let same = if hello_only_proto {
            hello_proto(&want).is_some() && hello_proto(&want) == hello_proto(&got)
        } else {
            normalise(want.clone()) == normalise(got.clone())
        };
        if !same {
            mismatches.push(format!("{cmd:?}:\n  redis   {want:?}\n  rampart {got:?}"));
        }
    }
    mismatches
}

async fn compare_with_redis(extra_args: &[&str]) {
    let (_redis, redis_addr) = start_redis();
    let cluster = Cluster::start(1, extra_args);
    let addr = cluster.resp_addr(1);
    wait_for("the node to take writes", Duration::from_secs(60), || {
        let addr = addr.clone();
        async move {
            let mut c = RespClient::connect(addr).await.ok()?;
            matches!(c.cmd_str(&["SET", "ready", "1"]).await.ok()?, Value::SimpleString(_)).then_some(())
        }
    })
    .await;
    // The same keys on both sides (DBSIZE is in the script).
    connect(&redis_addr).await.cmd_str(&["SET", "ready", "1"]).await.expect("redis SET");
    let mismatches = run_script(&redis_addr, &addr).await;
    assert!(mismatches.is_empty(), "replies differ from redis-server:\n{}", mismatches.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_answers_auth_and_acl_like_redis() {
    compare_with_redis(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_mode_answers_auth_and_acl_like_redis() {
    compare_with_redis(&["--replication", "multi-master"]).await;
}
