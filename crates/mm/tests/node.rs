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
        tombstone_grace: rampart_mm::tombstone_grace_min(Duration::from_secs(5)),
        registers_cached_max: 64,
        limits: rampart_kv::Limits::default(),
        transport: rampart_transport::Config::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_cluster_keeps_its_registers_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let members = [(1, free_addr())];
    let k_revision;
    {
        let node = MmNode::start(config(dir.path(), 1, &members)).await.unwrap();
        k_revision = written(node.change(b"k".to_vec(), set(b"v1")).await.unwrap(), None);
        assert_eq!(k_revision, 1, "the counter of a new node's first ballot");
        assert_eq!(node.change(b"n".to_vec(), Change::IncrBy(5)).await.unwrap(), Outcome::Integer(5));
        let (_, n_revision) = read(&node, b"n").await;
        assert!(n_revision > k_revision, "one proposer's counter: {n_revision} after {k_revision}");
        let gone = written(node.change(b"gone".to_vec(), set(b"x")).await.unwrap(), None);
        assert_eq!(node.change(b"gone".to_vec(), Change::Delete).await.unwrap(), Outcome::Deleted { count: 1 });
        let page = node.scan(b"", None, 10, false, true).await.unwrap();
        let keys = node.scan(b"", None, 10, false, false).await.unwrap();
        let item = |k: &str, v: &str, revision| {
            (k.into(), rampart_kv::Item { value: v.into(), revision: Some(revision), expires_at: None })
        };
        assert_eq!(keys.items, vec![item("k", "", k_revision), item("n", "", n_revision)], "keys only");
        assert_eq!(page.items, vec![item("k", "v1", k_revision), item("n", "5", n_revision)]);
        assert_eq!(page.next_after, None);
        // Recreated after its delete: a higher revision than it ever had.
        let again = written(node.change(b"gone".to_vec(), set(b"y")).await.unwrap(), None);
        assert!(again > gone, "{again} after {gone}");
        assert_eq!(node.change(b"gone".to_vec(), Change::Delete).await.unwrap(), Outcome::Deleted { count: 1 });
    }
    // The runtime of the first node is still alive in this process (its tasks hold the store),
    // so reopen from a copy of the data file, as a restarted process would see it.
    let copy = tempfile::tempdir().unwrap();
    let mut ok = false;
    for _ in 0..50 {
        // The file is consistent at every commit; copying it while the first node idles is safe.
        // The data file and its journal (recent durable writes live in the journal until a
        // checkpoint takes them into the data file).
        let data = dir.path().join(rampart_storage::DATA_FILE_NAME);
        let to = copy.path().join(rampart_storage::DATA_FILE_NAME);
        if std::fs::copy(&data, &to).is_ok()
            && std::fs::copy(rampart_storage::journal_path(&data), rampart_storage::journal_path(&to)).is_ok()
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
    // The value kept its revision across the restart.
    assert_eq!(read(&node, b"k").await, (b"v1".to_vec(), k_revision));
    assert_eq!(node.change(b"n".to_vec(), Change::IncrBy(1)).await.unwrap(), Outcome::Integer(6));
    assert_eq!(node.change(b"gone".to_vec(), Change::Read).await.unwrap(), Outcome::Value(None));
    // The restarted proposer starts above its durable counter floor: revisions jump, and still
    // only grow.
    let after = written(node.change(b"k".to_vec(), set(b"v2")).await.unwrap(), Some(b"v1"));
    assert!(after > rampart_paxos::COUNTER_BLOCK, "{after}");
}

/// The revision a write answered, once it is checked to be a write over `old`.
fn written(outcome: Outcome, old: Option<&[u8]>) -> u64 {
    match outcome {
        Outcome::Written { written: true, old: o, current_revision } if o.as_deref() == old => current_revision,
        other => panic!("expected a write over {old:?}, got {other:?}"),
    }
}

/// A linearizable read of `key` through `node`: its value and revision.
async fn read(node: &MmNode, key: &[u8]) -> (Vec<u8>, u64) {
    match node.change(key.to_vec(), Change::Read).await.unwrap() {
        Outcome::Value(Some(raw)) => {
            let d = rampart_paxos::decode_register_value(&raw).unwrap();
            (d.value.to_vec(), d.revision)
        }
        other => panic!("expected a value, got {other:?}"),
    }
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
async fn a_node_outside_the_membership_waits_to_be_added_and_neither_votes_nor_proposes() {
    let dir = tempfile::tempdir().unwrap();
    let node = MmNode::start(config(dir.path(), 4, &[(1, free_addr()), (2, free_addr()), (3, free_addr())]))
        .await
        .expect("a node outside the membership starts, waiting");
    assert!(!node.healthy());
    let err = node.change(b"k".to_vec(), Change::Read).await.unwrap_err().to_string();
    assert!(err.contains("node 4 is not a member yet") && err.contains("rampart cluster add"), "{err}");
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
    Change::Set {
        value: value.to_vec(),
        cond: rampart_kv::SetCond::Always,
        return_old: true,
        ttl: rampart_kv::Ttl::Clear,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_serves_the_command_model_through_the_replica_trait() {
    use rampart_kv::{
        Command, Consistency, Item, KvError, Limits, MembershipError, Replica, Response, Role, SetCond, StatusField,
    };
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut cfg = config(dir.path(), 1, &[(1, addr)]);
    cfg.limits =
        Limits { key_bytes_max: 16, value_bytes_max: 1 << 30, keys_per_command_max: 1 << 20, reply_bytes_max: 1 << 20 };
    let node = MmNode::start(cfg).await.unwrap();
    let r: &dyn Replica = &*node;
    // The node's limits, capped by the Paxos core's.
    assert_eq!(
        r.limits(),
        Limits {
            key_bytes_max: 16,
            value_bytes_max: rampart_mm::VALUE_BYTES_MAX,
            keys_per_command_max: rampart_mm::command::KEYS_PER_COMMAND_MAX,
            reply_bytes_max: 1 << 20,
        }
    );
    assert!(!r.revisions_are_global(), "revisions are per key in this mode");

    let b = |s: &str| s.as_bytes().to_vec();
    let too_many = (0..=rampart_mm::command::KEYS_PER_COMMAND_MAX).map(|i| i.to_string().into_bytes()).collect();
    let results = r
        .write_many(vec![
            Command::Set {
                key: b("a"),
                value: b("1"),
                cond: SetCond::Always,
                return_old: true,
                ttl: rampart_kv::Ttl::Clear,
            },
            Command::PutIfRevision { key: b("a"), revision: 0, value: b("2") },
            Command::Set {
                key: vec![b'k'; 17],
                value: b("1"),
                cond: SetCond::Always,
                return_old: false,
                ttl: rampart_kv::Ttl::Clear,
            },
            Command::MSet { pairs: vec![(b("b"), b("2")), (b("c"), b("3"))] },
            Command::IncrBy { key: b("a"), delta: 2 },
            Command::Append { key: b("b"), value: b("x"), value_bytes_max: None },
            Command::Del { keys: vec![b("a"), b("z")] },
            Command::Cas { key: b("c"), expected: Some(b("3")), new: b("4") },
            Command::IncrBy { key: b("b"), delta: 1 },
            Command::Del { keys: too_many },
            Command::Set {
                key: b("c"),
                value: b("5"),
                cond: SetCond::IfAbsent,
                return_old: true,
                ttl: rampart_kv::Ttl::Clear,
            },
        ])
        .await;
    use rampart_kv::Outcome as O;
    assert_eq!(results.len(), 11);
    // Every write is answered the key's revision after it, in the outcome and the response.
    let revision = |i: usize| match &results[i] {
        Ok(Response { revision, outcome: O::Written { current_revision, .. } }) => {
            assert_eq!(revision, current_revision);
            *revision
        }
        other => panic!("result {i}: {other:?}"),
    };
    let ok = |outcome| Ok(Response { revision: 0, outcome });
    let a1 = revision(0);
    assert_eq!(
        results[0],
        Ok(Response { revision: a1, outcome: O::Written { written: true, old: None, current_revision: a1 } })
    );
    // cas=0 means absent, as in leader mode; "a" is at a1.
    assert_eq!(
        results[1],
        Ok(Response { revision: a1, outcome: O::Written { written: false, old: None, current_revision: a1 } })
    );
    assert!(matches!(&results[2], Err(KvError::TooLarge(m)) if m.contains("key_bytes_max")), "{:?}", results[2]);
    // Revisions are per key: the MSET's is the higher of its two keys', comparable with nothing else.
    revision(3);
    assert_eq!(results[4], ok(O::Integer(3)));
    assert_eq!(results[5], ok(O::Integer(2)));
    assert_eq!(results[6], ok(O::Deleted { count: 1 }));
    assert_eq!(results[7], ok(O::Swapped(true)));
    assert_eq!(results[8], Err(KvError::Rejected(rampart_kv::apply::NOT_AN_INTEGER.into())));
    assert!(matches!(&results[9], Err(KvError::TooLarge(m)) if m.contains("1025 keys")), "{:?}", results[9]);
    // SET NX over "c" (swapped to 4 by CAS): refused, at the revision the CAS wrote.
    let c4 = revision(10);
    assert!(c4 > 0);
    assert!(
        matches!(&results[10], Ok(Response { outcome: O::Written { written: false, old: Some(old), .. }, .. }) if *old == b("4"))
    );

    // The revision of "b" is the APPEND's; reads, stale reads and scans all report it.
    let Ok(O::Value(Some(raw))) = node.change(b("b"), Change::Read).await else { panic!("b is live") };
    let b2 = rampart_paxos::decode_register_value(&raw).unwrap().revision;
    let item = |v: &str, revision| Some(Item { value: b(v), revision: Some(revision), expires_at: None });
    for consistency in [Consistency::Linearizable, Consistency::Stale] {
        let got = r.get_many(consistency, vec!["a".into(), "b".into(), "c".into()]).await.unwrap();
        assert_eq!(got, vec![None, item("2x", b2), item("4", c4)], "{consistency:?}");
        let page = r.scan(consistency, Vec::new(), None, 10, true).await.unwrap();
        assert_eq!(page.items, vec![(b("b"), item("2x", b2).unwrap()), (b("c"), item("4", c4).unwrap())]);
        assert_eq!(page.next_after, None);
        assert_eq!(r.count(consistency).await.unwrap(), 2, "{consistency:?}");
    }
    // More keys than one command may name: read in chunks, every answer in its place.
    let many: Vec<bytes::Bytes> =
        (0..1500).map(|i| if i == 1400 { "c".into() } else { format!("m{i}").into() }).collect();
    let got = r.get_many(Consistency::Linearizable, many).await.unwrap();
    assert_eq!(got.len(), 1500);
    assert_eq!(got.iter().filter(|v| v.is_some()).count(), 1);
    assert_eq!(got[1400], item("4", c4));
    // Revision CAS and delete, as in leader mode: at the current revision only.
    let cas = |revision, value: &str| Command::PutIfRevision { key: b("c"), revision, value: b(value) };
    let refused = r.write(cas(c4 - 1, "stale")).await.unwrap();
    assert_eq!(refused.outcome, O::Written { written: false, old: None, current_revision: c4 });
    let c5 = r.write(cas(c4, "5")).await.unwrap().revision;
    assert!(c5 > c4, "{c5} after {c4}");
    let del = |revision| Command::DeleteIfRevision { key: b("c"), revision };
    assert_eq!(r.write(del(c4)).await, ok(O::Deleted { count: 0 }));
    assert_eq!(r.write(del(c5)).await, ok(O::Deleted { count: 1 }));
    assert_eq!(r.get_many(Consistency::Linearizable, vec!["c".into()]).await.unwrap(), vec![None]);
    let c6 = r.write(cas(0, "6")).await.unwrap().revision;
    assert!(c6 > c5, "recreated above its old revisions: {c6} after {c5}");
    assert_eq!(r.write(del(c6)).await, ok(O::Deleted { count: 1 }));

    let st = r.status();
    assert_eq!((st.id, st.mode, st.role, st.leader_id), (1, "multi-master", Role::Peer, None));
    assert_eq!((st.applied_index, st.commit_index), (0, 0));
    assert_eq!(st.members.len(), 1);
    assert!(st.members[0].voter);
    assert_eq!(st.members[0].info.peer_addr, addr.to_string());
    let names: Vec<_> = st.fields.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, vec!["config_epoch", "membership_change_under_way", "proposals_in_flight", "cached_keys"]);
    assert_eq!(st.fields[0].1, StatusField::Number(0));
    assert_eq!(r.health(), Ok(()));
    assert!(r.peer_health().is_empty(), "a single node has no peers");

    // Membership changes: bad requests are refused with the reason, nothing changed.
    let bad = r.add_member(2, Default::default()).await.unwrap_err().to_string();
    assert!(bad.contains("cannot resolve peer address"), "{bad}");
    assert!(matches!(r.remove_member(1).await, Err(MembershipError::Invalid(m)) if m.contains("last member")));
    assert!(matches!(r.replace_member(7).await, Err(MembershipError::Invalid(m)) if m.contains("not a member")));

    let mut metrics = String::new();
    r.render_metrics(&mut metrics);
    assert!(metrics.contains("# TYPE rampart_mm_proposals_total counter\nrampart_mm_proposals_total "), "{metrics}");
    let proposals: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rampart_mm_proposals_ok_total "))
        .expect("the ok counter")
        .parse()
        .unwrap();
    assert!(proposals >= 10, "every change counted: {metrics}");
    assert!(metrics.contains("# TYPE rampart_mm_cached_keys gauge\nrampart_mm_cached_keys "), "{metrics}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_or_counter_floor_above_the_ballot_ceiling_is_a_clear_start_error() {
    use rampart_paxos::{Ballot, NodeId, RegisterState};
    // What a forged prepare at u64::MAX left behind before ballots were bounded.
    let dir = tempfile::tempdir().unwrap();
    {
        let poisoned = RegisterState {
            promised: Ballot::new(u64::MAX, NodeId(2)),
            accepted: Ballot::ZERO,
            value: None,
            base: Ballot::ZERO,
        };
        let store = Store::open_dir(dir.path()).unwrap();
        let raw = rampart_mm::wire::encode_register(&poisoned);
        store.write(Durability::Immediate, |b| b.register_put(b"victim", &raw)).unwrap();
    }
    let err = MmNode::start(config(dir.path(), 1, &[(1, free_addr())])).await.err().expect("must refuse");
    assert!(matches!(err, StartError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("victim") && msg.contains("ballot counter ceiling"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_dir(dir.path()).unwrap();
        store
            .write(Durability::Immediate, |b| b.meta_put(rampart_mm::COUNTER_FLOOR_META_KEY, &u64::MAX.to_le_bytes()))
            .unwrap();
    }
    let err = MmNode::start(config(dir.path(), 1, &[(1, free_addr())])).await.err().expect("must refuse");
    let msg = err.to_string();
    assert!(msg.contains("counter floor") && msg.contains("ballot counter ceiling"), "{msg}");
}

/// Sends one envelope to a peer port as an outsider would, and decodes the answer.
async fn send_as_outsider(
    to: std::net::SocketAddr,
    env: &rampart_mm::wire::Envelope,
) -> Result<rampart_mm::wire::PeerResponse, String> {
    let peer = rampart_transport::Peer::new(env.from, to, None, rampart_transport::Config::default());
    let payload = rampart_mm::wire::encode(env).unwrap();
    let raw = peer.call(payload, Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
    rampart_mm::wire::decode(&raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_peer_messages_are_refused_and_the_cluster_keeps_writing() {
    use rampart_mm::wire::{membership_fingerprint, Envelope, PeerRequest, PeerResponse};
    use rampart_paxos::{Ballot, NodeId, Reply, Request};
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let members: Vec<(u64, std::net::SocketAddr)> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(MmNode::start(config(dir.path(), i as u64 + 1, &members)).await.unwrap());
    }
    let mut ok = false;
    for _ in 0..100 {
        if nodes[0].change(b"k".to_vec(), Change::IncrBy(1)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the cluster never came up");
    // Every node past its first boot before the outsider speaks as node 2: valid frames in its
    // name make its peers note it as seen, which a node still in its first-boot check would take
    // for a lost data dir.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for node in &nodes[1..] {
        while node.change(b"warm-up".to_vec(), Change::IncrBy(1)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "node {} never came up", node.config().id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The sender id and fingerprint are self-reported: the outsider claims to be node 2.
    let cluster = membership_fingerprint([1, 2, 3]);
    let forged = |request| Envelope { from: 2, cluster, epoch: 0, request };
    for counter in [u64::MAX, u64::MAX - 1, 1 << 63] {
        for key in [&b"k"[..], b"fresh"] {
            let prepare = Request::Prepare { key: key.to_vec(), ballot: Ballot::new(counter, NodeId(2)) };
            let accept = Request::Accept {
                key: key.to_vec(),
                ballot: Ballot::new(counter, NodeId(2)),
                value: Some(rampart_paxos::encode_register_value(b"forged", None, counter)),
                base: Ballot::ZERO,
            };
            for (id, addr) in &members {
                if *id == 2 {
                    continue;
                }
                let answer = send_as_outsider(
                    *addr,
                    &forged(PeerRequest::Paxos { requests: vec![prepare.clone(), accept.clone()] }),
                )
                .await
                .unwrap();
                let PeerResponse::Paxos { replies, .. } = answer else { panic!("{answer:?}") };
                assert_eq!(replies.len(), 2);
                for reply in replies {
                    assert!(matches!(&reply, Reply::Nack { promised, .. } if promised.counter < 1 << 40), "{reply:?}");
                }
            }
        }
    }
    // Oversized frames are refused whole, with the limit named.
    let many = vec![Request::Prepare { key: b"k".to_vec(), ballot: Ballot::new(1, NodeId(2)) }; 100_000];
    let e = send_as_outsider(members[0].1, &forged(PeerRequest::Paxos { requests: many })).await.unwrap_err();
    assert!(e.contains("PAXOS_REQUESTS_PER_FRAME_MAX"), "{e}");
    let long = Request::Prepare { key: vec![b'k'; 5000], ballot: Ballot::new(1, NodeId(2)) };
    let e = send_as_outsider(members[0].1, &forged(PeerRequest::Paxos { requests: vec![long] })).await.unwrap_err();
    assert!(e.contains("key_bytes_max"), "{e}");
    let scan = PeerRequest::Scan { prefix: vec![], after: None, limit: u32::MAX, values: true };
    let e = send_as_outsider(members[0].1, &forged(scan)).await.unwrap_err();
    assert!(e.contains("SCAN_PAGE_MAX"), "{e}");
    // A malformed envelope, or a value claiming a revision above the ballot it is sent at (no
    // honest proposer sends one: it would be a value from the future), is refused whole too.
    let accept =
        |value| Request::Accept { key: b"k".to_vec(), ballot: Ballot::new(5, NodeId(2)), value, base: Ballot::ZERO };
    for (value, why) in [
        (vec![rampart_paxos::TAG_PERSISTENT_REVISION, 0, 0], "revision bytes"),
        (rampart_paxos::encode_register_value(b"v", None, 6), "revision above"),
    ] {
        let frame = forged(PeerRequest::Paxos { requests: vec![accept(Some(value))] });
        let e = send_as_outsider(members[0].1, &frame).await.unwrap_err();
        assert!(e.contains("bad register value") && e.contains(why), "{e}");
    }

    // Every node still writes the poisoned-to-be keys and new ones.
    for (i, node) in nodes.iter().enumerate() {
        let n = node.change(b"k".to_vec(), Change::IncrBy(1)).await.unwrap();
        assert_eq!(n, Outcome::Integer(i as i64 + 2));
        let key = format!("after-{i}").into_bytes();
        assert!(node.change(key, set(b"v")).await.is_ok());
        assert!(node.change(b"fresh".to_vec(), Change::IncrBy(1)).await.is_ok());
    }
}

/// Three nodes on 127.0.0.1 that have chosen a first change (they all passed first boot).
async fn three_nodes() -> (Vec<tempfile::TempDir>, Vec<std::sync::Arc<MmNode>>) {
    three_nodes_with(|_| {}).await
}

async fn three_nodes_with(tune: impl Fn(&mut MmConfig)) -> (Vec<tempfile::TempDir>, Vec<std::sync::Arc<MmNode>>) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let members: Vec<(u64, std::net::SocketAddr)> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut c = config(dir.path(), i as u64 + 1, &members);
        tune(&mut c);
        nodes.push(MmNode::start(c).await.unwrap());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for node in &nodes {
        while node.change(b"warm-up".to_vec(), Change::IncrBy(1)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the cluster never came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (dirs, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_absent_on_every_node_and_the_expirer_removes_it() {
    use rampart_kv::{Command, Consistency, Replica, SetCond, Ttl};
    let (_dirs, nodes) = three_nodes().await;
    let set_px = |key: &str, ttl: Ttl| Command::Set {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        cond: SetCond::Always,
        return_old: false,
        ttl,
    };
    let results = nodes[0]
        .write_many(vec![set_px("t", Ttl::In(60_000)), set_px("u", Ttl::In(60_000)), set_px("p", Ttl::Clear)])
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let before = nodes[0].expiry_now_ms();
    for node in &nodes {
        for consistency in [Consistency::Linearizable, Consistency::Stale] {
            // A stale read on the node outside the write's quorum may not have the accept yet:
            // wait for it (a linearizable read has it at once).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let got = loop {
                let got = node.get_many(consistency, vec!["t".into(), "p".into()]).await.unwrap();
                if got.iter().all(Option::is_some) || consistency == Consistency::Linearizable {
                    break got;
                }
                assert!(std::time::Instant::now() < deadline, "a stale read never saw the write");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            };
            let at = got[0].as_ref().expect("live before its expiry").expires_at.expect("an expiry");
            assert!((before..=before + 60_000).contains(&at), "{at} vs {before}");
            assert_eq!(got[1].as_ref().map(|i| i.expires_at), Some(None), "{consistency:?}");
        }
    }
    // Every clock moves past the expiry.
    for node in &nodes {
        node.expiry_clock_offset().store(61_000, std::sync::atomic::Ordering::Relaxed);
    }
    for node in &nodes {
        for consistency in [Consistency::Stale, Consistency::Linearizable] {
            let got = node.get_many(consistency, vec!["t".into(), "p".into()]).await.unwrap();
            assert!(got[0].is_none(), "{consistency:?}: {got:?}");
            assert!(got[1].is_some());
            assert_eq!(node.exists(consistency, vec!["t".into(), "p".into()]).await.unwrap(), 1);
            // Left: "p" and the warm-up counter.
            assert_eq!(node.count(consistency).await.unwrap(), 2, "{consistency:?}");
            let page = Replica::scan(&**node, consistency, Vec::new(), None, 10, false).await.unwrap();
            let keys: Vec<_> = page.items.iter().map(|(k, _)| k.clone()).collect();
            assert_eq!(keys, vec![b"p".to_vec(), b"warm-up".to_vec()], "{consistency:?}");
        }
    }
    // "u" was never read (scans and counts write nothing): the expirer of its owner proposes
    // ExpireDue for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let expired =
        || nodes.iter().map(|n| n.stats().keys_expired.load(std::sync::atomic::Ordering::Relaxed)).sum::<u64>();
    while expired() < 1 {
        assert!(std::time::Instant::now() < deadline, "the expirer never removed \"u\"");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both registers are tombstones now: with the clocks put back, "t" (tombstoned by the read
    // that found it expired) and "u" (by the expirer) stay absent, on every node.
    for node in &nodes {
        node.expiry_clock_offset().store(0, std::sync::atomic::Ordering::Relaxed);
    }
    for node in &nodes {
        let got = node.get_many(Consistency::Linearizable, vec!["t".into(), "u".into()]).await.unwrap();
        assert_eq!(got, vec![None, None]);
    }
    let metrics = {
        let mut out = String::new();
        nodes[0].render_metrics(&mut out);
        out
    };
    assert!(metrics.contains("rampart_mm_keys_expired_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_finds_a_key_expired_makes_it_absent_for_nodes_whose_clocks_are_behind() {
    use rampart_kv::{Command, Consistency, Replica, SetCond, Ttl};
    let (_dirs, nodes) = three_nodes().await;
    let set = Command::Set {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        cond: SetCond::Always,
        return_old: false,
        ttl: Ttl::In(60_000),
    };
    assert!(nodes[0].write_many(vec![set]).await[0].is_ok());
    // Only node 2's clock is past the expiry; it reads first.
    nodes[1].expiry_clock_offset().store(61_000, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(nodes[1].get_many(Consistency::Linearizable, vec!["k".into()]).await.unwrap(), vec![None]);
    // Nodes 1 and 3 still think it live by their clocks, yet a linearizable read there must not
    // bring it back.
    for i in [0, 2] {
        assert_eq!(nodes[i].get_many(Consistency::Linearizable, vec!["k".into()]).await.unwrap(), vec![None]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_from_before_expiry_serves_its_values_without_expiry() {
    use rampart_kv::{Consistency, Item, Replica};
    use rampart_paxos::{Ballot, NodeId, RegisterState};
    let dir = tempfile::tempdir().unwrap();
    {
        // Format 1: the header of today's format with version byte 1, then the raw value.
        let state = RegisterState {
            promised: Ballot::new(2, NodeId(1)),
            accepted: Ballot::new(1, NodeId(1)),
            value: Some(rampart_paxos::encode_register_value(b"", None, 0)),
            base: Ballot::ZERO,
        };
        let mut raw = rampart_mm::wire::encode_register(&state);
        raw[0] = 1;
        raw.truncate(raw.len() - 1);
        raw.extend_from_slice(b"\x01old");
        let store = Store::open_dir(dir.path()).unwrap();
        store.write(Durability::Immediate, |b| b.register_put(b"k", &raw)).unwrap();
    }
    let node = MmNode::start(config(dir.path(), 1, &[(1, free_addr())])).await.unwrap();
    // Its revision is unknown (0) until a linearizable read or a write gives it one.
    let item = |revision| vec![Some(Item { value: b"\x01old".to_vec(), revision: Some(revision), expires_at: None })];
    assert_eq!(node.get_many(Consistency::Stale, vec!["k".into()]).await.unwrap(), item(0));
    let got = node.get_many(Consistency::Linearizable, vec!["k".into()]).await.unwrap();
    let revision = got[0].as_ref().and_then(|i| i.revision).expect("a revision");
    assert!(revision > 0);
    assert_eq!(got, item(revision));
    assert_eq!(node.get_many(Consistency::Stale, vec!["k".into()]).await.unwrap(), item(revision));
    assert_eq!(
        node.change(b"k".to_vec(), Change::Append { value: b"!".to_vec(), value_bytes_max: 100 }).await.unwrap(),
        Outcome::Integer(5)
    );
    assert_eq!(node.stale_get(b"k").unwrap(), Some(b"\x01old!".to_vec()));
}

/// Writes `key` through `node` until it is acknowledged (a membership change in progress may
/// refuse a few).
async fn write_acked(node: &MmNode, key: &str, value: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = node.change(key.into(), set(value.as_bytes())).await;
        if let Ok(Outcome::Written { written: true, .. }) = r {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{key} was never written through node {}: {r:?}", node.id());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Node 4, started as a new node is (an empty data dir, `--initial-cluster` naming the members
/// of `nodes`), tuned by `tune`: it waits to be added. Answers its data dir, address and node.
async fn start_joiner(
    nodes: &[std::sync::Arc<MmNode>],
    tune: impl Fn(&mut MmConfig),
) -> (tempfile::TempDir, std::net::SocketAddr, std::sync::Arc<MmNode>) {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let members: Vec<(u64, std::net::SocketAddr)> = nodes.iter().map(|n| (n.id(), n.config().peer_addr)).collect();
    let mut c = config(dir.path(), 4, &members);
    c.peer_addr = addr;
    tune(&mut c);
    let node = MmNode::start(c).await.unwrap();
    (dir, addr, node)
}

/// A linearizable read of `key`'s value (`None`: absent).
async fn read_value(node: &MmNode, key: &str) -> Option<Vec<u8>> {
    match node.change(key.into(), Change::Read).await.unwrap() {
        Outcome::Value(v) => v.map(|env| rampart_paxos::decode_register_value(&env).unwrap().value.to_vec()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_added_and_another_removed_while_writes_go_on_and_every_acknowledged_write_stays() {
    let (dirs, nodes) = three_nodes().await;
    let _keep = dirs;
    for i in 0..50 {
        write_acked(&nodes[i % 3], &format!("before-{i}"), &format!("v{i}")).await;
    }
    nodes[0].change(b"gone".to_vec(), set(b"x")).await.unwrap();
    nodes[0].change(b"gone".to_vec(), Change::Delete).await.unwrap();
    // Writes through node 2 all along the changes.
    let writer = {
        let node = nodes[1].clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..400 {
                let key = format!("during-{i}");
                if let Ok(Outcome::Written { written: true, .. }) = node.change(key.clone().into(), set(b"w")).await {
                    acked.push(key);
                }
            }
            acked
        })
    };
    // A fourth node, started empty outside the membership: it waits to be added.
    let (_dir4, addr4, n4) = start_joiner(&nodes, |_| {}).await;
    assert!(!n4.healthy());
    let added = nodes[0]
        .change_membership(rampart_mm::MemberChange::Add { id: 4, peer_addr: addr4.to_string() })
        .await
        .expect("add node 4");
    assert_eq!(added.members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert!(added.members[3].generation > 0, "a new member's generation is its change's epoch");
    // Adding it again, or a node that is not waiting, is refused with the reason.
    let again = nodes[0].change_membership(rampart_mm::MemberChange::Add { id: 4, peer_addr: addr4.to_string() }).await;
    assert!(again.unwrap_err().to_string().contains("already a member"));
    // Node 4 votes now, and holds every key: the catch-up wrote them to a majority of the four,
    // and node 4 reads them through Paxos like any member.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !n4.healthy() {
        assert!(std::time::Instant::now() < deadline, "node 4 never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in (0..50).step_by(7) {
        assert_eq!(read_value(&n4, &format!("before-{i}")).await, Some(format!("v{i}").into_bytes()));
    }
    assert_eq!(read_value(&n4, "gone").await, None, "a deleted key stays deleted");
    // The catch-up ran full rounds, so node 4 holds the values itself, not only a majority.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while n4.stale_get(b"before-0").unwrap().is_none() || n4.stale_get(b"before-49").unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "node 4 never received the caught-up values");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Remove node 1; the cluster is {2, 3, 4}.
    let removed = nodes[2].change_membership(rampart_mm::MemberChange::Remove { id: 1 }).await.expect("remove 1");
    assert_eq!(removed.members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![2, 3, 4]);
    let acked = writer.await.unwrap();
    assert!(acked.len() > 100, "writes kept going through the changes: {} acknowledged", acked.len());
    // Node 1 learns it was removed and stops serving; the others answer everything.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let err = nodes[0].change(b"k".to_vec(), Change::Read).await;
        if err.as_ref().is_err_and(|e| e.to_string().contains("was removed")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node 1 still serves: {err:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for key in &acked {
        assert_eq!(read_value(&n4, key).await, Some(b"w".to_vec()), "{key} was acknowledged and is lost");
    }
    for i in 0..50 {
        assert_eq!(read_value(&nodes[2], &format!("before-{i}")).await, Some(format!("v{i}").into_bytes()));
    }
    // Removing a member that is not one is refused.
    let not = nodes[1].change_membership(rampart_mm::MemberChange::Remove { id: 9 }).await.unwrap_err();
    assert!(not.to_string().contains("not a member"), "{not}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_keys_registers_are_collected_on_every_node_and_never_come_back() {
    // The shortest grace a node takes is twice the request timeout plus 1 s.
    let (dirs, nodes) = three_nodes_with(|c| {
        c.request_timeout = Duration::from_secs(1);
        c.tombstone_grace = rampart_mm::tombstone_grace_min(c.request_timeout);
    })
    .await;
    let _keep = dirs;
    for i in 0..200 {
        write_acked(&nodes[i % 3], &format!("gc-{i}"), "old").await;
    }
    for i in 0..150 {
        let key = format!("gc-{i}");
        assert_eq!(nodes[(i + 1) % 3].change(key.into(), Change::Delete).await.unwrap(), Outcome::Deleted { count: 1 });
    }
    // Every node's collector takes the tombstones it owns once the grace has passed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let collected: Vec<u64> =
            nodes.iter().map(|n| n.stats().tombstones_collected.load(std::sync::atomic::Ordering::Relaxed)).collect();
        if collected.iter().all(|c| *c >= 150) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "tombstones never collected: {collected:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in &nodes {
        let registers = n.stats().registers.load(std::sync::atomic::Ordering::Relaxed);
        assert!(registers <= 52, "node {} still holds {registers} registers", n.id());
        // No old value anywhere: neither through Paxos nor in any node's own registers.
        for i in (0..150).step_by(13) {
            let key = format!("gc-{i}");
            assert_eq!(read_value(n, &key).await, None, "{key} came back");
            assert_eq!(n.stale_get(key.as_bytes()).unwrap(), None);
        }
        for i in 150..200 {
            assert_eq!(read_value(n, &format!("gc-{i}")).await, Some(b"old".to_vec()));
        }
    }
    // A collected key is an ordinary absent key: written, read, deleted and collected again.
    write_acked(&nodes[2], "gc-7", "new").await;
    for n in &nodes {
        assert_eq!(read_value(n, "gc-7").await, Some(b"new".to_vec()));
    }
    assert_eq!(nodes[0].change(b"gc-7".to_vec(), Change::Delete).await.unwrap(), Outcome::Deleted { count: 1 });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while nodes.iter().any(|n| n.stats().tombstones_collected.load(std::sync::atomic::Ordering::Relaxed) < 151) {
        assert!(std::time::Instant::now() < deadline, "the second tombstone of gc-7 was never collected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in &nodes {
        assert_eq!(read_value(n, "gc-7").await, None);
    }
    // A member added later gets the floor of the members it joins: a collected key is no more
    // writable at a low ballot (revision) through it.
    let floor = nodes[0].collected_floor();
    assert!(floor > rampart_paxos::Ballot::ZERO);
    let (_dir4, addr4, n4) = start_joiner(&nodes, |c| {
        c.request_timeout = Duration::from_secs(1);
        c.tombstone_grace = rampart_mm::tombstone_grace_min(c.request_timeout);
    })
    .await;
    nodes[0]
        .change_membership(rampart_mm::MemberChange::Add { id: 4, peer_addr: addr4.to_string() })
        .await
        .expect("add node 4");
    assert!(n4.collected_floor() >= floor, "{} < {floor}", n4.collected_floor());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acceptor_keeps_a_bounded_number_of_registers_in_memory_and_reads_the_rest_back() {
    let (dirs, nodes) = three_nodes().await;
    let _keep = dirs;
    // The test config holds at most 64 registers in memory per node.
    for i in 0..500 {
        write_acked(&nodes[i % 3], &format!("many-{i}"), &format!("v{i}")).await;
    }
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    for n in &nodes {
        let (total, in_memory) = (n.stats().registers.load(relaxed), n.stats().registers_in_memory.load(relaxed));
        assert!(total >= 500, "node {}: {total} registers", n.id());
        assert!(in_memory <= 64, "node {}: {in_memory} registers in memory", n.id());
    }
    // Every key, long evicted or not, is read back and changed correctly.
    for i in (0..500).step_by(7) {
        let key = format!("many-{i}");
        assert_eq!(read_value(&nodes[(i + 1) % 3], &key).await, Some(format!("v{i}").into_bytes()));
        let r = nodes[(i + 2) % 3]
            .change(key.clone().into(), Change::Append { value: b"!".to_vec(), value_bytes_max: 1 << 20 });
        assert_eq!(r.await.unwrap(), Outcome::Integer(format!("v{i}!").len() as i64));
    }
    for n in &nodes {
        assert!(n.stats().registers_in_memory.load(relaxed) <= 64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_revision_cas_matches_a_value_from_before_revisions() {
    use rampart_kv::{Command, Outcome as O, Replica, Response};
    use rampart_paxos::{Ballot, NodeId, RegisterState};
    let dir = tempfile::tempdir().unwrap();
    {
        // Envelopes of tag 0 and 1, as a node from before revisions wrote them.
        let store = Store::open_dir(dir.path()).unwrap();
        for (key, expires_at) in [("p", None), ("x", Some(u64::MAX))] {
            let state = RegisterState {
                promised: Ballot::new(9, NodeId(1)),
                accepted: Ballot::new(8, NodeId(1)),
                value: Some(rampart_paxos::encode_register_value(b"old", expires_at, rampart_paxos::REVISION_UNKNOWN)),
                base: Ballot::ZERO,
            };
            let raw = rampart_mm::wire::encode_register(&state);
            store.write(Durability::Immediate, |b| b.register_put(key.as_bytes(), &raw)).unwrap();
        }
    }
    let node = MmNode::start(config(dir.path(), 1, &[(1, free_addr())])).await.unwrap();
    for key in ["p", "x"] {
        let b = |s: &str| s.as_bytes().to_vec();
        // Not cas=0 (the key is present), nor any other revision: refused, and the refusal names
        // the revision the key has from now on.
        let put = |revision| Command::PutIfRevision { key: b(key), revision, value: b("new") };
        let refused = node.write(put(0)).await.unwrap();
        let O::Written { written: false, current_revision: now, .. } = refused.outcome else { panic!("{refused:?}") };
        assert!(now > 8, "{key}: {now}");
        let del = node.write(Command::DeleteIfRevision { key: b(key), revision: now + 1 }).await.unwrap();
        assert_eq!(del, Response { revision: 0, outcome: O::Deleted { count: 0 } }, "{key}");
        // At the revision it was given, it matches.
        let ok = node.write(put(now)).await.unwrap();
        assert!(matches!(ok.outcome, O::Written { written: true, current_revision, .. } if current_revision > now));
        assert_eq!(node.stale_get(key.as_bytes()).unwrap(), Some(b("new")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_left_half_done_is_finished_by_the_members() {
    let (dirs, nodes) = three_nodes().await;
    let _keep = dirs;
    write_acked(&nodes[0], "half/a", "1").await;
    let (_dir4, addr4, n4) = start_joiner(&nodes, |_| {}).await;
    // The coordinator "dies" after the joint configuration is in force.
    let add = rampart_mm::MemberChange::Add { id: 4, peer_addr: addr4.to_string() };
    let joint = nodes[0].begin_change_and_abandon_it(add.clone()).await.unwrap();
    assert!(joint.next.is_some());
    // Writes go on under the joint quorum, and a member finishes the change by itself.
    write_acked(&nodes[1], "half/b", "2").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let done = nodes.iter().chain([&n4]).all(|n| {
            let c = n.cluster_config();
            !c.is_joint() && c.members.iter().any(|m| m.id == 4)
        });
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the change was never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The change is in force: asking for it again is refused, naming why.
    let again = nodes[2].change_membership(add).await.unwrap_err().to_string();
    assert!(again.contains("already a member"), "{again}");
    assert_eq!(read_value(&n4, "half/a").await, Some(b"1".to_vec()));
    assert_eq!(read_value(&n4, "half/b").await, Some(b"2".to_vec()));
}
