//! `rampart kv` and `rampart cluster` against a real cluster.

mod common;

use std::process::Command;

use common::*;

fn rampart(endpoints: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).args(["--endpoints", endpoints]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_cluster_commands_work_against_a_cluster() {
    let mut c = Cluster::start(3, &[]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    // Through a follower first: the CLI and the node both handle it.
    let eps = format!("{},{}", c.specs[&follower].http, c.specs[&leader].http);
    let (ok, out, err) = rampart(&eps, &["kv", "put", "app/a", "hello"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = rampart(&eps, &["kv", "get", "app/a"]);
    assert!(ok);
    assert_eq!(out.trim_end(), "hello");
    let (ok, out, _) = rampart(&eps, &["kv", "put", "app/b", "world", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rev = v["revision"].as_u64().unwrap();
    // A CAS on a stale revision fails with a non-zero exit; on the right one it works.
    let (ok, _, err) = rampart(&eps, &["kv", "put", "app/b", "x", "--cas", &(rev - 1).to_string()]);
    assert!(!ok && !err.is_empty());
    let (ok, _, err) = rampart(&eps, &["kv", "put", "app/b", "x", "--cas", &rev.to_string()]);
    assert!(ok, "{err}");
    // --ttl-ms gives the key an expiry (seen over RESP); a plain put clears it.
    let (ok, _, err) = rampart(&eps, &["kv", "put", "app/t", "v", "--ttl-ms", "600000"]);
    assert!(ok, "{err}");
    let mut cl = resp(&c, leader).await;
    match cmd(&mut cl, &["PTTL", "app/t"]).await {
        rampart_resp::Value::Integer(ms) => assert!(ms > 0 && ms <= 600_000, "PTTL {ms}"),
        other => panic!("PTTL answered {other:?}"),
    }
    let (ok, _, err) = rampart(&eps, &["kv", "put", "app/t", "v"]);
    assert!(ok, "{err}");
    assert_eq!(cmd(&mut cl, &["PTTL", "app/t"]).await, rampart_resp::Value::Integer(-1));
    let (ok, _, _) = rampart(&eps, &["kv", "put", "app/t", "v", "--ttl-ms", "5", "--cas", "1"]);
    assert!(!ok, "--ttl-ms with --cas must be refused");
    let (ok, out, _) = rampart(&eps, &["kv", "scan", "app/", "--json"]);
    assert!(ok);
    assert!(out.contains("app/a") && out.contains("app/b"), "{out}");
    let (ok, _, _) = rampart(&eps, &["kv", "del", "app/a"]);
    assert!(ok);
    let (ok, _, _) = rampart(&eps, &["kv", "get", "app/a"]);
    assert!(!ok, "a deleted key must not be found");
    // Cluster status lists every node with its role.
    let all = (1..=3).map(|i| c.specs[&i].http.clone()).collect::<Vec<_>>().join(",");
    let (ok, out, err) = rampart(&all, &["cluster", "status"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.contains("follower")).count(), 2, "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("leader")).count(), 1, "{out}");
    let (ok, out, _) = rampart(&all, &["cluster", "members", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    // With a node down, status says so and exits non-zero; kv still works.
    c.kill(follower);
    let (ok, out, _) = rampart(&all, &["cluster", "status"]);
    assert!(!ok);
    assert!(out.contains("unreachable"), "{out}");
    let (ok, out, _) = rampart(&all, &["kv", "get", "app/b"]);
    assert!(ok);
    assert_eq!(out.trim_end(), "x");
}

/// `rampart kv` on a cluster with a password: refused without a token, served with one, and
/// limited to the token's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_commands_send_a_bearer_token() {
    let c = Cluster::start(1, &["--admin-password", "adminpw"]);
    wait_leader(&c, &[1]).await;
    let mut admin = resp(&c, 1).await;
    assert_eq!(cmd(&mut admin, &["AUTH", "adminpw"]).await, rampart_resp::Value::ok());
    let setuser = ["ACL", "SETUSER", "app", "on", ">apppw", "~app/*", "+@read", "+@write"];
    assert_eq!(cmd(&mut admin, &setuser).await, rampart_resp::Value::ok());
    // The admin makes a token for `app` with Basic credentials (base64 of "default:adminpw").
    let token = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = r#"{"user":"app"}"#;
        let mut s = tokio::net::TcpStream::connect(&c.specs[&1].http).await.unwrap();
        let req = format!(
            "POST /v1/auth/tokens HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic ZGVmYXVsdDphZG1pbnB3\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let json = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        let v: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("POST /v1/auth/tokens: {e}: {out}"));
        v["token"].as_str().unwrap().to_string()
    };
    let eps = c.specs[&1].http.clone();
    let (ok, _, err) = rampart(&eps, &["kv", "put", "app/a", "1"]);
    assert!(!ok && err.contains("NOAUTH"), "{err}");
    let (ok, out, err) = rampart(&eps, &["kv", "put", "app/a", "1", "--token", &token]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = rampart(&eps, &["kv", "get", "app/a", "--token", &token]);
    assert!(ok);
    assert_eq!(out.trim_end(), "1");
    let (ok, _, err) = rampart(&eps, &["kv", "put", "other", "1", "--token", &token]);
    assert!(!ok && err.contains("NOPERM"), "{err}");
}
