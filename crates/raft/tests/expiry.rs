//! Key expiry in leader mode, on an in-process three-node cluster. Time is moved with each
//! node's adjustable clock (`RaftNode::clock`), never waited for.

mod common;

use common::*;

use bytes::Bytes;
use rampart_kv::{Command, Consistency, Replica, SetCond, Ttl};
use rampart_raft::node::RaftNode;

/// A minute in ms.
const MINUTE: i64 = 60_000;

fn set(key: &str, ttl: Ttl) -> Command {
    Command::Set { key: key.into(), value: b"v".to_vec(), cond: SetCond::Always, return_old: false, ttl }
}

async fn visible(n: &RaftNode, c: Consistency, key: &str) -> bool {
    Replica::get_many(n, c, vec![Bytes::from(key.to_string())]).await.unwrap()[0].is_some()
}

async fn scan_keys(n: &RaftNode, c: Consistency) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = Replica::scan(n, c, Vec::new(), after.clone(), 1, false).await.unwrap();
        out.extend(page.items.into_iter().map(|(k, _)| k));
        match page.next_after {
            Some(k) => after = Some(k),
            None => return out,
        }
    }
}

/// `a-ttl` has expired on `n`, `keep` has not: every read says so.
async fn assert_hidden(n: &RaftNode) {
    for consistency in [Consistency::Stale, Consistency::Linearizable] {
        assert!(!visible(n, consistency, "a-ttl").await, "node {} shows an expired key", n.id);
        assert!(visible(n, consistency, "keep").await);
        let keys = vec![Bytes::from("a-ttl"), Bytes::from("keep")];
        assert_eq!(Replica::exists(n, consistency, keys).await.unwrap(), 1);
        assert_eq!(Replica::count(n, consistency).await.unwrap(), 1, "DBSIZE excludes the expired key");
        assert_eq!(scan_keys(n, consistency).await, vec![b"keep".to_vec()]);
    }
    assert!(n.get(b"a-ttl").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_hidden_on_every_node_then_removed_everywhere() {
    let c = start(3).await;
    let l = leader(&c.nodes).await;
    l.write(set("keep", Ttl::Clear)).await.unwrap();
    l.write(set("a-ttl", Ttl::In(MINUTE))).await.unwrap();
    for n in &c.nodes {
        wait_for("the writes applied on every node", async || visible(n, Consistency::Stale, "a-ttl").await).await;
        assert!(visible(n, Consistency::Linearizable, "a-ttl").await);
        assert_eq!(Replica::count(&**n, Consistency::Stale).await.unwrap(), 2);
    }
    // The followers' clocks first: the leader's expirer (its clock not moved) leaves the key
    // stored, so what hides it on the followers is their reads.
    let followers: Vec<_> = c.nodes.iter().filter(|n| n.id != l.id).cloned().collect();
    for n in &followers {
        n.clock().advance(2 * MINUTE);
    }
    for n in &followers {
        assert_hidden(n).await;
        assert!(stored(n, "a-ttl"), "still stored: only the leader's expirer removes keys");
    }
    l.clock().advance(2 * MINUTE);
    assert_hidden(&l).await;
    for n in &c.nodes {
        wait_for("the expirer removed the key on every node", async || !stored(n, "a-ttl")).await;
        assert!(stored(n, "keep"));
    }
    assert!(l.expired_keys_total() >= 1);
    let mut metrics = String::new();
    Replica::render_metrics(&*l, &mut metrics);
    assert!(metrics.contains("rampart_expired_keys_total "), "{metrics}");
}

/// A leader whose clock ran ahead stamps the key's TTL from its time; after it is gone, the new
/// leader (whose clock is behind) stamps at least the applied clock, and the key still expires
/// and is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_leader_change_stamps_do_not_go_back_and_the_key_still_expires() {
    let c = start(3).await;
    let old = leader(&c.nodes).await;
    old.clock().advance(10 * MINUTE);
    old.write(set("k", Ttl::In(MINUTE))).await.unwrap();
    let applied = old.applied_clock_ms().unwrap();
    assert!(applied >= old.clock().now_ms() - 1000, "the entry was stamped with the leader's clock");
    let rest: Vec<_> = c.nodes.iter().filter(|n| n.id != old.id).cloned().collect();
    for n in &rest {
        wait_for("the key applied on the followers", async || stored(n, "k")).await;
        assert_eq!(n.applied_clock_ms().unwrap(), applied, "followers apply at the leader's stamp");
        // The follower's own clock is 10 minutes behind, but the key expires at
        // applied + 1 minute: still visible.
        assert!(visible(n, Consistency::Stale, "k").await);
    }
    old.shutdown().await;
    let new = leader(&rest).await;
    assert_ne!(new.id, old.id);
    assert!(new.clock().now_ms() < applied, "the new leader's clock is behind the applied clock");
    new.write(set("other", Ttl::Clear)).await.unwrap();
    assert!(new.applied_clock_ms().unwrap() >= applied, "a new leader never stamps below the applied clock");
    assert!(visible(&new, Consistency::Linearizable, "k").await, "not expired yet");
    for n in &rest {
        n.clock().advance(12 * MINUTE);
    }
    for n in &rest {
        assert!(!visible(n, Consistency::Stale, "k").await);
        wait_for("the new leader's expirer removed the key", async || !stored(n, "k")).await;
        assert!(stored(n, "other"));
    }
}
