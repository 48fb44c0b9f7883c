//! End-to-end: forged peer messages sent to real `rampart server` processes as an outsider would
//! (no TLS, the same wire types and framing as the nodes use), in both modes. Each test shows the
//! cluster keeps writing, nothing in its logs panicked, and all is still fine after every node
//! restarts. Multi-master: prepares and accepts at ballot counter `u64::MAX` and other extreme
//! counters (issue 10: one such prepare used to stop every write for good). Leader mode: votes and
//! appends at term `u64::MAX` (used to panic openraft on every node, and again on every restart)
//! and at merely huge terms (used to move the term and change the leader).

mod common;

use std::time::Duration;

use common::*;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use rampart_resp::Value;

const ALL: [u64; 3] = [1, 2, 3];

/// Sends `payload` to `addr` as one peer frame and returns the answer, or the error the node sent.
async fn send(addr: &str, payload: rampart_client::http::Bytes) -> Result<rampart_client::http::Bytes, String> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let peer = rampart_transport::Peer::new(0, addr, None, rampart_transport::Config::default());
    peer.call(payload, Duration::from_secs(10)).await.map_err(|e| e.to_string())
}

/// No node's log shows a panic.
fn assert_no_panic(c: &Cluster) {
    for id in c.specs.keys() {
        let log = std::fs::read_to_string(&c.specs[id].log).unwrap_or_default();
        assert!(!log.contains("panicked"), "node {id} panicked:\n{}", c.log_tail(*id));
    }
}

/// A write through every node, retried while the cluster settles; panics past the deadline.
async fn write_everywhere(c: &Cluster, key: &str) {
    for id in ALL {
        let addr = c.resp_addr(id);
        wait_for(&format!("INCR {key} through node {id}"), Duration::from_secs(60), || {
            let addr = addr.clone();
            let key = key.to_string();
            async move {
                let mut cl = rampart_resp::client::RespClient::connect(addr).await.ok()?;
                match cl.cmd_str(&["INCR", &key]).await.ok()? {
                    Value::Integer(n) => Some(n),
                    _ => None,
                }
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_extreme_ballots_do_not_stop_multi_master_writes() {
    use rampart_mm::wire::{self, membership_fingerprint, Envelope, PeerRequest, PeerResponse};
    use rampart_paxos::{Ballot, NodeId, Reply, Request};
    let mut c = Cluster::start(3, &["--replication", "multi-master"]);
    write_everywhere(&c, "k").await;

    // The outsider claims to be node 2 (ids and the fingerprint are guessable) and also tries
    // as a stranger.
    let cluster = membership_fingerprint(ALL);
    for from in [2, 99] {
        for counter in [u64::MAX, u64::MAX - 1, 1 << 62] {
            for key in ["k", "later"] {
                let ballot = Ballot::new(counter, NodeId(from));
                let requests = vec![
                    Request::Prepare { key: key.as_bytes().to_vec(), ballot },
                    Request::Accept {
                        key: key.as_bytes().to_vec(),
                        ballot,
                        value: Some(rampart_paxos::encode_register_value(b"forged", None, counter)),
                        base: Ballot::ZERO,
                    },
                ];
                let env = Envelope { from, cluster, epoch: 0, request: PeerRequest::Paxos { requests } };
                for id in [1, 3] {
                    let answer = send(&c.specs[&id].peer, wire::encode(&env).unwrap()).await;
                    match (from, answer) {
                        (99, Err(e)) => assert!(e.contains("not a member"), "{e}"),
                        (2, Ok(raw)) => {
                            let Ok(PeerResponse::Paxos { replies, .. }) = wire::decode(&raw) else {
                                panic!("not a Paxos answer")
                            };
                            for r in replies {
                                assert!(matches!(r, Reply::Nack { .. }), "node {id} took a forged ballot: {r:?}");
                            }
                        }
                        (_, other) => panic!("node {id}, from {from}: {other:?}"),
                    }
                }
            }
        }
    }
    write_everywhere(&c, "k").await;
    write_everywhere(&c, "later").await;
    let mut cl = resp(&c, 1).await;
    assert_eq!(bulk(&cmd(&mut cl, &["GET", "k"]).await).as_deref(), Some("6"));
    assert_no_panic(&c);

    for id in ALL {
        c.kill(id);
    }
    for id in ALL {
        c.spawn(id);
    }
    write_everywhere(&c, "k").await;
    write_everywhere(&c, "after-restart").await;
    let mut cl = resp(&c, 2).await;
    assert_eq!(bulk(&cmd(&mut cl, &["GET", "k"]).await).as_deref(), Some("9"));
    assert_no_panic(&c);
}

fn term_of(st: &serde_json::Value) -> u64 {
    st["term"].as_u64().expect("status has a term")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_votes_and_appends_with_extreme_terms_change_nothing_in_leader_mode() {
    use openraft::{LeaderId, Vote};
    use rampart_raft::network::{encode, PeerRequest};
    let mut c = Cluster::start(3, &[]);
    let leader = wait_leader(&c, &ALL).await;
    write_everywhere(&c, "k").await;
    let term = term_of(&status(&c, leader).await.unwrap());

    let follower = ALL.into_iter().find(|i| *i != leader).unwrap();
    // Claiming the leader's id, a follower's, and a stranger's; u64::MAX (openraft's term + 1
    // overflow) and terms that are merely huge.
    for claimed in [leader, follower, 99] {
        for forged_term in [u64::MAX, u64::MAX - 1, 1 << 62, 1 << 40, term + 1_000_000] {
            let vote = Vote { leader_id: LeaderId::new(forged_term, claimed), committed: true };
            let requests = [
                PeerRequest::Vote(VoteRequest::new(Vote::new(forged_term, claimed), None)),
                PeerRequest::AppendEntries(AppendEntriesRequest {
                    vote,
                    prev_log_id: None,
                    entries: vec![],
                    leader_commit: None,
                }),
            ];
            for req in &requests {
                for id in ALL {
                    let e =
                        send(&c.specs[&id].peer, encode(req).unwrap()).await.expect_err("a forged message was taken");
                    assert!(
                        e.contains("term ceiling")
                            || e.contains("TERM_AHEAD_MAX")
                            || e.contains("not a member")
                            || e.contains("this node"),
                        "node {id}: {e}"
                    );
                }
            }
        }
    }
    write_everywhere(&c, "k").await;
    for id in ALL {
        let st = status(&c, id).await.expect("node answers");
        assert_eq!(st["leader_id"].as_u64(), Some(leader), "node {id}: the leader changed");
        assert_eq!(term_of(&st), term, "node {id}: the term moved");
    }
    assert_no_panic(&c);

    for id in ALL {
        c.kill(id);
    }
    for id in ALL {
        c.spawn(id);
    }
    let l = wait_leader(&c, &ALL).await;
    write_everywhere(&c, "k").await;
    let after = term_of(&status(&c, l).await.unwrap());
    assert!(after >= term && after < term + 1_000, "term {after} after the restart, {term} before");
    let mut cl = resp(&c, l).await;
    assert_eq!(bulk(&cmd(&mut cl, &["GET", "k"]).await).as_deref(), Some("9"));
    assert_no_panic(&c);
}
