//! A multi-master node on its own: start-up checks, durability across a restart, corrupt state.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use rampart_mm::{Change, MmConfig, MmNode, Outcome, StartError};
use rampart_storage::{Durability, Store};

fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn config(dir: &std::path::Path, id: u64, members: &[(u64, std::net::SocketAddr)]) -> MmConfig {
    let me = members.iter().find(|(m, _)| *m == id).map_or_else(free_addr, |(_, a)| *a);
    MmConfig {
        id,
        data_dir: dir.to_path_buf(),
        peer_addr: me,
        resp_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        members: members.iter().map(|(id, a)| (*id, a.to_string())).collect::<BTreeMap<_, _>>(),
        request_timeout: Duration::from_secs(5),
        peer_heartbeat_ms: 100,
        limits: rampart_kv::Limits::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_cluster_keeps_its_registers_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let members = [(1, free_addr())];
    {
        let node = MmNode::start(config(dir.path(), 1, &members)).await.unwrap();
        assert_eq!(
            node.change(b"k".to_vec(), set(b"v1")).await.unwrap(),
            Outcome::Written { written: true, old: None, current_revision: 0 }
        );
        assert_eq!(node.change(b"n".to_vec(), Change::IncrBy(5)).await.unwrap(), Outcome::Integer(5));
        assert_eq!(
            node.change(b"gone".to_vec(), set(b"x")).await.unwrap(),
            Outcome::Written { written: true, old: None, current_revision: 0 }
        );
        assert_eq!(node.change(b"gone".to_vec(), Change::Delete).await.unwrap(), Outcome::Deleted { count: 1 });
        let page = node.scan(b"", None, 10, false, true).await.unwrap();
        let keys = node.scan(b"", None, 10, false, false).await.unwrap();
        assert_eq!(keys.items, vec![(b"k".to_vec(), vec![]), (b"n".to_vec(), vec![])], "keys only");
        assert_eq!(page.items, vec![(b"k".to_vec(), b"v1".to_vec()), (b"n".to_vec(), b"5".to_vec())]);
        assert_eq!(page.next_after, None);
    }
    // The runtime of the first node is still alive in this process (its tasks hold the store),
    // so reopen from a copy of the data file, as a restarted process would see it.
    let copy = tempfile::tempdir().unwrap();
    let mut ok = false;
    for _ in 0..50 {
        // The file is consistent at every commit; copying it while the first node idles is safe.
        if std::fs::copy(
            dir.path().join(rampart_storage::DATA_FILE_NAME),
            copy.path().join(rampart_storage::DATA_FILE_NAME),
        )
        .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "cannot copy the data file");
    {
        // The proposer reserved its ballots durably before using them.
        let store = Store::open_dir(copy.path()).unwrap();
        let floor = store.meta_get(rampart_mm::COUNTER_FLOOR_META_KEY).unwrap().expect("counter floor persisted");
        assert!(u64::from_le_bytes(floor.try_into().unwrap()) >= rampart_paxos::COUNTER_BLOCK);
    }
    let members2 = [(1, free_addr())];
    let node = MmNode::start(config(copy.path(), 1, &members2)).await.unwrap();
    assert_eq!(node.stale_get(b"k").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(node.change(b"n".to_vec(), Change::IncrBy(1)).await.unwrap(), Outcome::Integer(6));
    assert_eq!(node.change(b"gone".to_vec(), Change::Read).await.unwrap(), Outcome::Value(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_register_records_stop_the_node_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_dir(dir.path()).unwrap();
        store.write(Durability::Immediate, |b| b.register_put(b"bad-key", b"\x01short")).unwrap();
    }
    let err = MmNode::start(config(dir.path(), 1, &[(1, free_addr())])).await.err().expect("must refuse");
    assert!(matches!(err, StartError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("bad-key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_membership_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = MmNode::start(config(dir.path(), 4, &[(1, free_addr()), (2, free_addr()), (3, free_addr())]))
        .await
        .err()
        .expect("must refuse");
    assert!(matches!(err, StartError::Config(_)), "{err}");
    assert!(err.to_string().contains("fixed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_at_one_address_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a1, a2) = (free_addr(), free_addr());
    let err = MmNode::start(config(dir.path(), 1, &[(1, a1), (2, a2), (3, a2)])).await.err().expect("must refuse");
    assert!(err.to_string().contains("same peer address"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_a_change_is_refused_as_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    // Two members; the other never starts. Nothing can be chosen.
    let members = [(1, free_addr()), (2, free_addr())];
    let mut cfg = config(dir.path(), 1, &members);
    cfg.request_timeout = Duration::from_millis(800);
    let node = MmNode::start(cfg).await.unwrap();
    let r = node.change(b"k".to_vec(), set(b"v")).await;
    assert!(r.is_err(), "{r:?}");
    let reads = node.change(b"k".to_vec(), Change::Read).await;
    assert!(reads.is_err(), "{reads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_with_different_memberships_refuse_each_other() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (a1, a2, a3) = (free_addr(), free_addr(), free_addr());
    // Node 1 believes in a two-node cluster, node 2 in a three-node one: their quorums differ,
    // so they must not form one together.
    let mut c1 = config(d1.path(), 1, &[(1, a1), (2, a2)]);
    c1.request_timeout = Duration::from_millis(800);
    let mut c2 = config(d2.path(), 2, &[(1, a1), (2, a2), (3, a3)]);
    c2.request_timeout = Duration::from_millis(800);
    let n1 = MmNode::start(c1).await.unwrap();
    let n2 = MmNode::start(c2).await.unwrap();
    assert!(n1.change(b"k".to_vec(), set(b"1")).await.is_err());
    assert!(n2.change(b"k".to_vec(), set(b"2")).await.is_err());
    // The same two nodes with the same membership do work together.
    let d3 = tempfile::tempdir().unwrap();
    let d4 = tempfile::tempdir().unwrap();
    let (b1, b2) = (free_addr(), free_addr());
    let m1 = MmNode::start(config(d3.path(), 1, &[(1, b1), (2, b2)])).await.unwrap();
    let _m2 = MmNode::start(config(d4.path(), 2, &[(1, b1), (2, b2)])).await.unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if m1.change(b"k".to_vec(), set(b"1")).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "two nodes with the same membership never agreed");
}

/// A plain SET that reports the value it replaced.
fn set(value: &[u8]) -> Change {
    Change::Set { value: value.to_vec(), cond: rampart_kv::SetCond::Always, return_old: true }
}
