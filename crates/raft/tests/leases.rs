//! Leases in leader mode, on an in-process three-node cluster. Lease time is moved with each
//! node's monotonic lease clock (`RaftNode::lease_clock`), never waited for.

mod common;

use common::*;

use bytes::Bytes;
use rampart_kv::lease::lease_not_found;
use rampart_kv::{Consistency, KvError, Replica};
use rampart_raft::node::RaftNode;

/// The TTL of the leases here: long, so real time passing while the test runs never matters.
const TTL_MS: u64 = 60_000;

async fn visible(n: &RaftNode, key: &str) -> bool {
    Replica::get_many(n, Consistency::Linearizable, vec![Bytes::from(key.to_string())]).await.unwrap()[0].is_some()
}

/// A leader change never shortens a lease: the new leader restarts its full TTL. Keepalives and
/// reads through a follower reach the leader. Once keepalives stop, the lease runs out and its
/// keys go on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_does_not_shorten_a_lease_and_it_still_runs_out() {
    let c = start(3).await;
    let old = leader(&c.nodes).await;
    let follower = c.nodes.iter().find(|n| n.id != old.id).cloned().unwrap();
    let grant = Replica::lease_grant(&*follower, TTL_MS).await.unwrap();
    assert!(grant.id > 0);
    assert_eq!(grant.ttl_ms, TTL_MS);
    for k in ["l/a", "l/b"] {
        let rev = Replica::put_with_lease(&*follower, k.into(), b"v".to_vec(), grant.id, false).await.unwrap();
        assert!(rev.is_some());
    }
    // Most of the TTL passes on the old leader; a keepalive through the follower renews it.
    old.lease_clock().advance(50_000);
    let info = Replica::lease_info(&*follower, grant.id).await.unwrap().unwrap();
    assert!(info.remaining_ms <= 10_000, "the old leader counted it down: {info:?}");
    assert_eq!(info.keys, vec![b"l/a".to_vec(), b"l/b".to_vec()]);
    assert_eq!(Replica::lease_keepalive(&*follower, grant.id).await.unwrap().unwrap().id, grant.id);
    old.lease_clock().advance(50_000);
    let info = Replica::lease_info(&*old, grant.id).await.unwrap().unwrap();
    assert!(info.remaining_ms <= 10_000, "{info:?}");

    // The leader goes; the new one gives the lease a full TTL again.
    old.shutdown().await;
    let rest: Vec<_> = c.nodes.iter().filter(|n| n.id != old.id).cloned().collect();
    let new = leader(&rest).await;
    assert_ne!(new.id, old.id);
    let info = Replica::lease_info(&*new, grant.id).await.unwrap().unwrap();
    assert!(info.remaining_ms > 30_000, "a leader change shortened the lease: {info:?}");
    for n in &rest {
        assert!(visible(n, "l/a").await && visible(n, "l/b").await);
    }
    // Keepalives through the new leader keep it alive past the old leader's deadline.
    new.lease_clock().advance(50_000);
    assert!(Replica::lease_keepalive(&*new, grant.id).await.unwrap().is_some());
    new.lease_clock().advance(50_000);
    assert!(Replica::lease_info(&*new, grant.id).await.unwrap().is_some());
    for n in &rest {
        assert!(visible(n, "l/a").await);
    }

    // Keepalives stop: the lease runs out, its keys go from every node, in one entry.
    new.lease_clock().advance(TTL_MS);
    for n in &rest {
        wait_for("the lease's keys removed", async || !stored(n, "l/a") && !stored(n, "l/b")).await;
        assert!(n.store().read(|v| v.lease_get(grant.id)).unwrap().is_none());
    }
    assert_eq!(new.expired_leases_total(), 1);
    for n in &rest {
        assert_eq!(Replica::lease_keepalive(&**n, grant.id).await.unwrap(), None);
        assert_eq!(Replica::lease_info(&**n, grant.id).await.unwrap(), None);
    }
    let late = Replica::put_with_lease(&*new, b"l/c".to_vec(), b"v".to_vec(), grant.id, false).await;
    assert_eq!(late, Err(KvError::Rejected(lease_not_found(grant.id))));
}

/// A revoke removes every attached key at once (one entry: one revision) on every node; a key
/// rewritten without the lease stays; a second revoke finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_removes_every_key_in_one_entry() {
    let c = start(3).await;
    let l = leader(&c.nodes).await;
    let g = Replica::lease_grant(&*l, TTL_MS).await.unwrap();
    let other = Replica::lease_grant(&*l, TTL_MS).await.unwrap();
    assert!(other.id > g.id, "ids count up");
    for i in 0..20 {
        Replica::put_with_lease(&*l, format!("r/{i:02}").into_bytes(), b"v".to_vec(), g.id, false).await.unwrap();
    }
    // if_absent: a present key is not written (nor moved to the other lease).
    let again = Replica::put_with_lease(&*l, b"r/00".to_vec(), b"w".to_vec(), other.id, true).await.unwrap();
    assert_eq!(again, None);
    // A plain write detaches a key.
    let set = rampart_kv::Command::Set {
        key: b"r/05".to_vec(),
        value: b"mine".to_vec(),
        cond: rampart_kv::SetCond::Always,
        return_old: false,
        ttl: rampart_kv::Ttl::Clear,
    };
    Replica::write(&*l, set).await.unwrap();
    let info = Replica::lease_info(&*l, g.id).await.unwrap().unwrap();
    assert_eq!(info.keys.len(), 19);
    let follower = c.nodes.iter().find(|n| n.id != l.id).cloned().unwrap();
    assert!(Replica::lease_revoke(&*follower, g.id).await.unwrap());
    let applied = l.status().applied_index;
    for n in &c.nodes {
        wait_for("the revoke applied", async || n.status().applied_index >= applied).await;
        let left: Vec<_> = (0..20).filter(|i| stored(n, &format!("r/{i:02}"))).collect();
        assert_eq!(left, vec![5], "node {}: every leased key gone, the rewritten one kept", n.id);
    }
    assert!(!Replica::lease_revoke(&*l, g.id).await.unwrap(), "already revoked");
    assert_eq!(Replica::lease_info(&*l, g.id).await.unwrap(), None);
    assert!(Replica::lease_info(&*l, other.id).await.unwrap().is_some(), "the other lease is untouched");
    let short = Replica::lease_grant(&*l, 10).await;
    assert!(matches!(&short, Err(KvError::BadRequest(m)) if m.contains("LEASE_TTL_MIN_MS")), "{short:?}");
}
