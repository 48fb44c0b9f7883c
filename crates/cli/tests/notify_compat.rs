//! Keyspace notifications against a real redis-server 7.0: the same `CONFIG SET
//! notify-keyspace-events KEA`, the same writes, and the `pmessage`s a `PSUBSCRIBE
//! '__key*@0__:*'` receives must be identical, frame for frame, down to the `expired` event of a
//! key set with `PX`. On rampart the subscriber is on another node than the one the writes go
//! to: the feed is cluster-wide (leader mode).

mod common;

use std::time::{Duration, Instant};

use common::*;
use rampart_resp::client::RespClient;
use rampart_resp::Value;

/// The writes, in order; the last key expires by itself.
const WRITES: &[&[&str]] = &[
    &["SET", "a", "1"],
    &["SET", "b", "2", "EX", "100"],
    &["INCR", "c"],
    &["APPEND", "a", "x"],
    &["EXPIRE", "a", "100"],
    &["PERSIST", "a"],
    &["GETDEL", "b"],
    &["DEL", "a", "c", "nothing"],
    &["SET", "t", "1", "PX", "200"],
];

/// Turns notifications on through `conf` (a connection to the subscriber's node: CONFIG SET is
/// per node, as in Redis), subscribes `sub` to every keyspace and keyevent channel, runs
/// [`WRITES`] through `writer`, and collects the messages up to the `expired` pair of `t`.
async fn notifications(sub: &mut RespClient, conf: &mut RespClient, writer: &mut RespClient) -> Vec<Vec<String>> {
    let on = conf.cmd_str(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]).await.unwrap();
    assert_eq!(on, Value::SimpleString("OK".into()));
    assert_eq!(
        conf.cmd_str(&["CONFIG", "GET", "notify-keyspace-events"]).await.unwrap(),
        Value::Array(vec![Value::Bulk(b"notify-keyspace-events"[..].into()), Value::Bulk(b"AKE"[..].into())])
    );
    let confirm = sub.cmd_str(&["PSUBSCRIBE", "__key*@0__:*"]).await.unwrap();
    assert_eq!(
        confirm,
        Value::Array(vec![
            Value::Bulk(b"psubscribe"[..].into()),
            Value::Bulk(b"__key*@0__:*"[..].into()),
            Value::Integer(1)
        ])
    );
    for w in WRITES {
        let reply = writer.cmd_str(w).await.unwrap();
        assert!(!matches!(reply, Value::Error(_)), "{w:?}: {reply:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no expired event for t; got {got:?}");
        let frame = sub.next_frame().await.unwrap();
        let Value::Array(parts) = frame else { panic!("not a pmessage: {frame:?}") };
        let parts: Vec<String> = parts.iter().map(|p| bulk(p).unwrap_or_else(|| format!("{p:?}"))).collect();
        let done = parts.last().map(String::as_str) == Some("t") && parts[2] == "__keyevent@0__:expired";
        got.push(parts);
        if done {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_notifications_match_redis_frame_for_frame() {
    let (_redis, addr) = start_redis();
    let (mut sub, mut conf, mut writer) =
        (resp_connect(&addr).await, resp_connect(&addr).await, resp_connect(&addr).await);
    let expected = notifications(&mut sub, &mut conf, &mut writer).await;
    assert_eq!(expected.len(), 26, "redis-server sent {expected:?}");

    let c = Cluster::start(3, &[]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    let other = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let (mut sub, mut conf, mut writer) = (resp(&c, other).await, resp(&c, other).await, resp(&c, leader).await);
    let got = notifications(&mut sub, &mut conf, &mut writer).await;
    assert_eq!(got, expected);
}
