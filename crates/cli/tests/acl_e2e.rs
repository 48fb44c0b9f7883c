//! Users end to end, with real three-node clusters in both modes: a user created on one node
//! authenticates on the others, a read-only user is refused writes, key patterns hold, users
//! are invisible to key commands, survive a restart of every node, and HTTP bearer tokens map to
//! the same users. Also: a burst of wrong passwords is answered and the node keeps serving.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{bulk, cmd, resp, wait_for, wait_leader, Cluster};
use rampart_resp::client::RespClient;
use rampart_resp::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NOPERM_KEY: &str = "NOPERM this user has no permissions to access one of the keys used as arguments";

fn err(v: &Value) -> String {
    match v {
        Value::Error(e) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// One HTTP/1.1 request on a fresh connection: status and body.
async fn http(addr: &str, method: &str, path: &str, auth: Option<String>, body: &str) -> (u16, String) {
    let mut s = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await.expect("HTTP timeout").unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn basic(user: &str, pass: &str) -> Option<String> {
    Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))))
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

fn http_addr(c: &Cluster, id: u64) -> String {
    c.specs[&id].http.clone()
}

/// Waits until node `id` takes writes (a leader elected, or the first-boot check done).
async fn wait_writes(c: &Cluster, id: u64) {
    let addr = c.resp_addr(id);
    wait_for("the node to take writes", Duration::from_secs(60), || {
        let addr = addr.clone();
        async move {
            let mut cl = RespClient::connect(addr).await.ok()?;
            matches!(cl.cmd_str(&["SET", "ready", "1"]).await.ok()?, Value::SimpleString(_)).then_some(())
        }
    })
    .await;
}

async fn wait_ready(c: &Cluster, leader_mode: bool) {
    if leader_mode {
        wait_leader(c, &[1, 2, 3]).await;
    } else {
        // Every node past its first-boot check before the test restarts any of them.
        common::wait_healthy(c, &[1, 2, 3]).await;
    }
    for id in 1..=3 {
        wait_writes(c, id).await;
    }
}

/// [`wait_for`] with the harness's generous deadline for a cluster settling after restarts.
async fn retry<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_for(what, Duration::from_secs(60), f).await
}

/// A connection to node `id` authenticated as `user`.
async fn login(c: &Cluster, id: u64, user: &str, pass: &str) -> RespClient {
    let mut cl = resp(c, id).await;
    assert_eq!(cmd(&mut cl, &["AUTH", user, pass]).await, Value::ok(), "AUTH {user} on node {id}");
    cl
}

async fn users_work_across_nodes_and_restarts(extra: &[&str]) {
    let leader_mode = extra.is_empty();
    let mut c = Cluster::start(3, extra);
    wait_ready(&c, leader_mode).await;

    // Created on node 1 ...
    let mut admin = resp(&c, 1).await;
    for setuser in [
        &["ACL", "SETUSER", "writer", "on", ">writerpw", "~app:*", "+@read", "+@write"][..],
        &["ACL", "SETUSER", "reader", "on", ">readerpw", "~app:*", "+@read"],
        &["ACL", "SETUSER", "boss", "on", ">bosspw", "~*", "+@all"],
    ] {
        assert_eq!(cmd(&mut admin, setuser).await, Value::ok());
    }
    // ... and used on nodes 2 and 3 at once (a failed AUTH re-reads the users first).
    let mut w = login(&c, 2, "writer", "writerpw").await;
    assert_eq!(cmd(&mut w, &["SET", "app:1", "v1"]).await, Value::ok());
    assert_eq!(err(&cmd(&mut w, &["SET", "other", "v"]).await), NOPERM_KEY);
    assert_eq!(err(&cmd(&mut w, &["MSET", "app:2", "x", "other", "y"]).await), NOPERM_KEY);
    assert_eq!(
        err(&cmd(&mut w, &["ACL", "SETUSER", "x"]).await),
        "NOPERM this user has no permissions to run the 'acl|setuser' command"
    );
    let mut r = login(&c, 3, "reader", "readerpw").await;
    assert_eq!(bulk(&cmd(&mut r, &["GET", "app:1"]).await).as_deref(), Some("v1"));
    assert_eq!(
        err(&cmd(&mut r, &["SET", "app:1", "x"]).await),
        "NOPERM this user has no permissions to run the 'set' command"
    );
    assert_eq!(err(&cmd(&mut r, &["GET", "other"]).await), NOPERM_KEY);
    // Pipelined writes are checked one by one.
    let pipeline =
        vec![vec![b"SET".to_vec(), b"app:1".to_vec(), b"x".to_vec()], vec![b"INCR".to_vec(), b"app:n".to_vec()]];
    for reply in r.pipeline(&pipeline).await.unwrap() {
        assert!(err(&reply).starts_with("NOPERM"), "{reply:?}");
    }
    assert_eq!(
        err(&cmd(&mut r, &["AUTH", "reader", "wrong"]).await),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    // A failed AUTH keeps the user (and +@read has no ACL WHOAMI, as in Redis).
    assert_eq!(bulk(&cmd(&mut r, &["GET", "app:1"]).await).as_deref(), Some("v1"));
    assert!(err(&cmd(&mut r, &["ACL", "WHOAMI"]).await).contains("'acl|whoami'"));

    // Users are not keys: not counted, listed, read or written by clients.
    let mut any = resp(&c, 2).await;
    assert_eq!(cmd(&mut any, &["DBSIZE"]).await, Value::Integer(2), "ready and app:1 only");
    let keys = cmd(&mut any, &["KEYS", "*"]).await;
    assert!(matches!(&keys, Value::Array(k) if k.len() == 2), "{keys:?}");
    let scan = cmd(&mut any, &["SCAN", "0", "COUNT", "1000"]).await;
    assert!(matches!(&scan, Value::Array(a) if matches!(&a[1], Value::Array(k) if k.len() == 2)), "{scan:?}");
    let reserved: &[u8] = b"\xff\xfeacl/user/boss";
    for args in [&[&b"GET"[..], reserved][..], &[b"SET", reserved, b"x"], &[b"DEL", b"app:9", reserved]] {
        let reply = any.cmd(args).await.unwrap();
        assert!(err(&reply).contains("reserved"), "{reply:?}");
    }
    let (status, body) = http(&http_addr(&c, 3), "GET", "/v1/kv?prefix=", None, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["items"].as_array().unwrap().len(), 2);
    let (status, _) = http(&http_addr(&c, 3), "GET", "/v1/kv/%FF%FEacl%2Fuser%2Fboss", None, "").await;
    assert_ne!(status, 200);

    // HTTP bearer tokens: made by an admin on node 1, used on node 3.
    let (status, body) =
        http(&http_addr(&c, 1), "POST", "/v1/auth/tokens", basic("boss", "bosspw"), r#"{"user":"reader"}"#).await;
    assert_eq!(status, 201, "{body}");
    let made: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = made["token"].as_str().unwrap().to_string();
    let token_id = made["id"].as_str().unwrap().to_string();
    let n3 = http_addr(&c, 3);
    assert_eq!(http(&n3, "GET", "/v1/kv/app:1", bearer(&token), "").await, (200, "v1".to_string()));
    let (status, body) = http(&n3, "PUT", "/v1/kv/app:1", bearer(&token), "x").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("NOPERM") && body.contains("'set'"), "{body}");
    let (status, body) = http(&n3, "GET", "/v1/kv/other", bearer(&token), "").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(http(&n3, "GET", "/v1/kv?prefix=app:", bearer(&token), "").await.0, 200);
    assert_eq!(http(&n3, "GET", "/v1/kv?prefix=", bearer(&token), "").await.0, 403, "outside ~app:*");
    assert_eq!(http(&n3, "GET", "/v1/auth/tokens", bearer(&token), "").await.0, 403, "not an admin");
    let (status, _) = http(&n3, "GET", "/v1/kv/app:1", bearer("rampart_0000"), "").await;
    assert_eq!(status, 401);
    assert_eq!(http(&n3, "GET", "/v1/kv/app:1", basic("writer", "writerpw"), "").await.0, 200);
    assert_eq!(http(&n3, "PUT", "/v1/kv/app:3", basic("writer", "writerpw"), "w").await.0, 200);
    assert_eq!(http(&n3, "GET", "/v1/kv/app:1", basic("writer", "nope"), "").await.0, 401);
    let (status, body) = http(&n3, "GET", "/v1/auth/whoami", bearer(&token), "").await;
    assert_eq!((status, body.contains("\"reader\"")), (200, true), "{body}");

    // A password on the default user: every node then wants one (within the refresh interval).
    assert_eq!(cmd(&mut admin, &["ACL", "SETUSER", "default", ">defaultpw"]).await, Value::ok());
    for id in 1..=3 {
        let addr = c.resp_addr(id);
        wait_for("the default user's password to reach every node", Duration::from_secs(30), || {
            let addr = addr.clone();
            async move {
                let mut cl = RespClient::connect(addr).await.ok()?;
                (cl.cmd_str(&["GET", "app:1"]).await.ok()? == Value::Error("NOAUTH Authentication required.".into()))
                    .then_some(())
            }
        })
        .await;
        let (status, body) = http(&http_addr(&c, id), "GET", "/v1/kv/app:1", None, "").await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("NOAUTH"), "{body}");
    }
    assert_eq!(http(&http_addr(&c, 2), "GET", "/v1/health", None, "").await.0, 200, "health stays open");

    // Every node restarts: users, passwords and tokens are still there.
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.spawn(id);
    }
    if leader_mode {
        wait_leader(&c, &[1, 2, 3]).await;
    }
    let mut w = wait_for("writer to authenticate after the restart", Duration::from_secs(60), || {
        let addr = c.resp_addr(2);
        async move {
            let mut cl = RespClient::connect(addr).await.ok()?.with_read_timeout(Duration::from_secs(15));
            (cl.cmd_str(&["AUTH", "writer", "writerpw"]).await.ok()? == Value::ok()).then_some(cl)
        }
    })
    .await;
    let set = retry("a write after the restart", || {
        let addr = c.resp_addr(2);
        async move {
            let mut cl = RespClient::connect(addr).await.ok()?.with_read_timeout(Duration::from_secs(15));
            cl.cmd_str(&["AUTH", "writer", "writerpw"]).await.ok()?;
            let v = cl.cmd_str(&["SET", "app:after", "1"]).await.ok()?;
            (v == Value::ok()).then_some(v)
        }
    })
    .await;
    assert_eq!(set, Value::ok());
    assert_eq!(err(&cmd(&mut w, &["GET", "nope"]).await), NOPERM_KEY);
    let mut anon = resp(&c, 3).await;
    assert_eq!(err(&cmd(&mut anon, &["PING"]).await), "NOAUTH Authentication required.");
    assert_eq!(cmd(&mut anon, &["AUTH", "defaultpw"]).await, Value::ok());
    assert_eq!(http(&http_addr(&c, 1), "GET", "/v1/kv/app:1", bearer(&token), "").await.0, 200);

    // Revoking a token and deleting a user reach every node.
    let (status, body) =
        http(&http_addr(&c, 2), "DELETE", &format!("/v1/auth/tokens/{token_id}"), basic("boss", "bosspw"), "").await;
    assert_eq!(status, 200, "{body}");
    for id in 1..=3 {
        let addr = http_addr(&c, id);
        let t = token.clone();
        wait_for("the revoked token to be refused everywhere", Duration::from_secs(30), || {
            let (addr, t) = (addr.clone(), t.clone());
            async move { (http(&addr, "GET", "/v1/kv/app:1", bearer(&t), "").await.0 == 401).then_some(()) }
        })
        .await;
    }
    let mut boss = login(&c, 1, "boss", "bosspw").await;
    assert_eq!(cmd(&mut boss, &["ACL", "DELUSER", "writer"]).await, Value::Integer(1));
    // Other nodes refuse the deleted user within their refresh interval.
    for id in 1..=3 {
        let addr = c.resp_addr(id);
        wait_for("the deleted user to be refused everywhere", Duration::from_secs(30), || {
            let addr = addr.clone();
            async move {
                let mut cl = RespClient::connect(addr).await.ok()?;
                let v = cl.cmd_str(&["AUTH", "writer", "writerpw"]).await.ok()?;
                (v == Value::Error("WRONGPASS invalid username-password pair or user is disabled.".into()))
                    .then_some(())
            }
        })
        .await;
    }
    // The deleted user's open connection is closed (as Redis does) once its node knows.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match w.cmd_str(&["GET", "app:1"]).await {
            Err(_) => break,
            Ok(v) => assert!(std::time::Instant::now() < deadline, "still served after DELUSER: {v:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let users = cmd(&mut boss, &["ACL", "USERS"]).await;
    assert_eq!(
        users,
        Value::Array(vec![Value::bulk("boss"), Value::bulk("default"), Value::bulk("reader")]),
        "ACL USERS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_users_work_across_nodes_and_restarts() {
    users_work_across_nodes_and_restarts(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_users_work_across_nodes_and_restarts() {
    users_work_across_nodes_and_restarts(&["--replication", "multi-master"]).await;
}

/// A node started with `--admin-password` wants it from the first connection, and a burst of
/// wrong passwords gets answers (WRONGPASS, or "busy" past the queue) while the node serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_password_and_a_burst_of_wrong_passwords() {
    let c = Cluster::start(1, &["--admin-password", "bootpw"]);
    let mut cl = resp(&c, 1).await;
    assert_eq!(err(&cmd(&mut cl, &["SET", "k", "v"]).await), "NOAUTH Authentication required.");
    assert_eq!(cmd(&mut cl, &["AUTH", "bootpw"]).await, Value::ok());
    retry("the node to take writes", || {
        let addr = c.resp_addr(1);
        async move {
            let mut cl = RespClient::connect(addr).await.ok()?;
            cl.cmd_str(&["AUTH", "bootpw"]).await.ok()?;
            (cl.cmd_str(&["SET", "k", "v"]).await.ok()? == Value::ok()).then_some(())
        }
    })
    .await;

    const ATTEMPTS: usize = 300;
    let addr = c.resp_addr(1);
    let mut burst = Vec::new();
    for i in 0..ATTEMPTS {
        let addr = addr.clone();
        burst.push(tokio::spawn(async move {
            let mut cl = RespClient::connect(addr).await.ok()?.with_read_timeout(Duration::from_secs(120));
            cl.cmd_str(&["AUTH", "default", &format!("wrong{i}")]).await.ok()
        }));
    }
    // The node keeps serving other clients during the burst.
    assert_eq!(cmd(&mut cl, &["SET", "during", "1"]).await, Value::ok());
    assert_eq!(bulk(&cmd(&mut cl, &["GET", "during"]).await).as_deref(), Some("1"));
    let (mut wrong, mut busy) = (0, 0);
    for b in burst {
        match b.await.unwrap() {
            Some(Value::Error(e)) if e.starts_with("WRONGPASS") => wrong += 1,
            Some(Value::Error(e)) if e.contains("password_checks_queued_max") => busy += 1,
            other => panic!("unexpected answer to a wrong password: {other:?}"),
        }
    }
    eprintln!("{ATTEMPTS} wrong passwords: {wrong} answered WRONGPASS, {busy} refused as busy");
    assert_eq!(wrong + busy, ATTEMPTS);
    assert!(wrong > 0);
    // The right password still works (and is cached afterwards).
    let mut again = resp(&c, 1).await;
    assert_eq!(cmd(&mut again, &["AUTH", "default", "bootpw"]).await, Value::ok());
}

/// Leader mode: users written before a snapshot reach a node that joins afterwards, which gets
/// them only from the snapshot (the log behind it is purged). Adding it is an admin request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_reach_a_new_node_through_a_snapshot() {
    let mut c = Cluster::start(3, &["--snapshot-logs", "50"]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    wait_writes(&c, leader).await;
    let mut l = resp(&c, leader).await;
    for setuser in [
        &["ACL", "SETUSER", "boss", "on", ">bosspw", "~*", "+@all"][..],
        &["ACL", "SETUSER", "reader", "on", ">readerpw", "~snap/*", "+@read"],
        &["ACL", "SETUSER", "default", ">defaultpw"],
    ] {
        assert_eq!(cmd(&mut l, setuser).await, Value::ok());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for i in 0..300 {
        let (k, v) = (format!("snap/{i}"), i.to_string());
        // Retried on TRYAGAIN/TIMEOUT (a plain SET is idempotent).
        while l.cmd_str(&["SET", &k, &v]).await.ok() != Some(Value::ok()) {
            assert!(std::time::Instant::now() < deadline, "writes kept failing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_for("a snapshot on the leader", Duration::from_secs(30), || async {
        let st = common::status(&c, leader).await?;
        (st["snapshot_index"].as_u64()? > 0).then_some(())
    })
    .await;

    c.add_spec(4);
    let ic = c.initial_cluster.clone();
    c.spawn_with_initial(4, &ic);
    let s4 = &c.specs[&4];
    let body =
        serde_json::json!({"id": 4, "peer_addr": s4.peer, "resp_addr": s4.resp, "http_addr": s4.http}).to_string();
    let la = http_addr(&c, leader);
    assert_eq!(http(&la, "POST", "/v1/cluster/members", None, &body).await.0, 401);
    let (status, reply) = http(&la, "POST", "/v1/cluster/members", basic("reader", "readerpw"), &body).await;
    assert_eq!(status, 403, "{reply}");
    assert!(reply.contains("NOPERM"), "{reply}");
    retry("node 4 to be added", || {
        let (la, body) = (la.clone(), body.clone());
        async move {
            (http(&la, "POST", "/v1/cluster/members", basic("boss", "bosspw"), &body).await.0 == 200).then_some(())
        }
    })
    .await;
    let leader_now = wait_leader(&c, &[1, 2, 3, 4]).await;
    let commit = common::status(&c, leader_now).await.unwrap()["commit_index"].as_u64().unwrap();
    let st = wait_for("node 4 to apply the leader's log", Duration::from_secs(30), || async {
        let st = common::status(&c, 4).await?;
        (st["applied_index"].as_u64()? >= commit).then_some(st)
    })
    .await;
    assert!(st["snapshot_index"].as_u64().unwrap() > 0, "node 4 did not install a snapshot: {st}");

    let mut r = login(&c, 4, "reader", "readerpw").await;
    assert_eq!(bulk(&cmd(&mut r, &["GET", "snap/7"]).await).as_deref(), Some("7"));
    assert_eq!(
        err(&cmd(&mut r, &["SET", "snap/7", "x"]).await),
        "NOPERM this user has no permissions to run the 'set' command"
    );
    let mut anon = resp(&c, 4).await;
    assert_eq!(err(&cmd(&mut anon, &["GET", "snap/7"]).await), "NOAUTH Authentication required.");
    assert_eq!(cmd(&mut anon, &["AUTH", "defaultpw"]).await, Value::ok());
    assert_eq!(cmd(&mut anon, &["DBSIZE"]).await, Value::Integer(301), "snap/0..299 and ready, no users");
}
