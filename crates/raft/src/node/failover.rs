//! Fast failover: when a peer connection closes and the leader's peer port refuses
//! connections, the followers start elections at once instead of waiting out the election
//! timeout. Elections are always safe; this only makes the next one start sooner.

use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ServerState;

use super::RaftNode;
use crate::types::NodeId;

/// Gap between followers' elections after the leader is seen dead (by rank).
pub(super) const ELECTION_STAGGER: Duration = Duration::from_millis(20);
/// Connection attempts (and the gap between them) that decide whether a
/// leader whose connection closed is still running.
pub(super) const LEADER_PROBES: u32 = 5;
pub(super) const LEADER_PROBE_GAP: Duration = Duration::from_millis(10);

/// Elections a follower starts by itself after seeing the leader dead, and
/// the wait for a result after each; then the normal timeouts take over.
pub(super) const FAST_ELECTION_ROUNDS: u32 = 3;
pub(super) const FAST_ELECTION_ROUND_WAIT: Duration = Duration::from_millis(80);

impl RaftNode {
    /// Called when a peer connection closes. If the leader's process is gone
    /// (its peer port refuses connections) a follower starts an election at
    /// once instead of waiting out the election timeout: after `kill -9` of
    /// the leader, the followers see its connections close within
    /// microseconds. If both do so, openraft's vote order (term, node id)
    /// settles it without a split vote. Elections are always safe; this only
    /// makes the next one start sooner.
    pub(super) async fn check_leader_alive(&self) {
        if self.leader_probe.swap(true, Ordering::AcqRel) {
            return;
        }
        let result = self.probe_leader_once().await;
        self.leader_probe.store(false, Ordering::Release);
        let Some(dead) = result else { return };
        // openraft's followers refuse votes for a lease after the last
        // heartbeat unless they have started an election themselves; among
        // candidates of one term the higher node id wins, and nobody votes
        // for a shorter log. So the followers start in id order, lowest
        // first, ELECTION_STAGGER apart: each one's election releases its
        // lease and the last candidate usually collects the votes at once.
        // If the highest has the shorter log the round deadlocks; a second
        // round (a higher term, lowest id first again) resolves it. Rounds
        // stop as soon as any leader is known.
        let rank = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            m.membership().voter_ids().filter(|id| *id != dead && *id < self.id).count() as u32
        };
        for round in 0..FAST_ELECTION_ROUNDS {
            tokio::time::sleep(ELECTION_STAGGER * rank).await;
            let m = self.raft.metrics().borrow().clone();
            let leaderless = m.current_leader.is_none() || m.current_leader == Some(dead);
            if !leaderless || !matches!(m.state, ServerState::Follower | ServerState::Candidate) {
                return;
            }
            tracing::info!(dead, round, "leader's peer port refuses connections: starting an election");
            let _ = self.raft.trigger().elect().await;
            tokio::time::sleep(FAST_ELECTION_ROUND_WAIT).await;
        }
    }

    /// Some(leader) when this node is a follower and its leader's peer port refuses connections.
    pub(super) async fn probe_leader_once(&self) -> Option<NodeId> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Follower {
            return None;
        }
        let leader = m.current_leader.filter(|l| *l != self.id)?;
        let addr = crate::network::resolve(&self.peer_addr_of(leader)?).ok()?;
        // A dying process's connections reset a moment before its listening
        // socket closes, so one successful connect proves little: probe a few
        // times before concluding the leader lives.
        for _ in 0..LEADER_PROBES {
            match tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return (self.raft.metrics().borrow().current_leader == Some(leader)).then_some(leader);
                }
                Ok(Ok(_)) => tokio::time::sleep(LEADER_PROBE_GAP).await,
                _ => return None,
            }
        }
        None
    }
}
