//! Linearizable reads: the leader confirms its leadership with a quorum (openraft's read
//! index); a follower asks the leader for that index, waits until it has applied it, then
//! reads locally. Concurrent reads share one quorum round ([`ReadCoalescer`]).

use std::time::Instant;

use openraft::error::RaftError;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::forward::{RETRY_PAUSE, UNREACHABLE_LEADER_PAUSE};
use super::{RaftNode, ReadError, WriteError};
use crate::network::{ForwardError, PeerRequest, PeerResponse};

/// Shares one read-index round among all reads that arrived before it began.
/// A read never uses a round that started before it arrived (that round's
/// index could miss a write acknowledged in between).
pub struct ReadCoalescer<W = oneshot::Sender<Result<u64, WriteError>>> {
    /// Whether a round runs, and the readers waiting for the next one.
    state: Mutex<(bool, Vec<W>)>,
}

impl<W> ReadCoalescer<W> {
    pub(super) fn new() -> Self {
        ReadCoalescer { state: Mutex::new((false, Vec::new())) }
    }

    /// Queues a reader for the next round. True when no round runs: the caller must start one.
    fn join(&self, waiter: W) -> bool {
        let mut st = self.state.lock();
        st.1.push(waiter);
        !std::mem::replace(&mut st.0, true)
    }

    /// The readers for the round about to begin: every one queued so far, all of whom arrived
    /// before it. `None` when nobody waits; the running round then ends.
    fn next_round(&self) -> Option<Vec<W>> {
        let mut st = self.state.lock();
        debug_assert!(st.0, "only a running round asks for readers");
        if st.1.is_empty() {
            st.0 = false;
            return None;
        }
        Some(std::mem::take(&mut st.1))
    }
}

impl RaftNode {
    /// Returns once a read on this node's state machine is linearizable.
    pub async fn read_barrier(&self) -> Result<(), ReadError> {
        let deadline = Instant::now() + self.cfg.request_timeout;
        let index = self.coalesced_read_index(deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| WriteError::Timeout(format!("waiting to apply read index {index}: {e}")))?;
        Ok(())
    }

    pub(super) async fn coalesced_read_index(&self, deadline: Instant) -> Result<u64, ReadError> {
        let (tx, rx) = oneshot::channel();
        if self.reads.join(tx) {
            // Rounds run in their own task: a caller that goes away (an HTTP
            // client disconnecting) must not strand the readers queued behind it.
            if let Some(me) = self.me.upgrade() {
                tokio::spawn(async move { me.run_read_rounds().await });
            }
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(WriteError::TryAgain),
            Err(_) => Err(WriteError::Timeout("read index not confirmed before the request timeout".into())),
        }
    }

    /// Runs read-index rounds until no reader waits; every waiter gets a
    /// round that began after it arrived.
    pub(super) async fn run_read_rounds(&self) {
        loop {
            let Some(batch) = self.reads.next_round() else { return };
            let deadline = Instant::now() + self.cfg.request_timeout;
            let r = self.read_index_once(deadline).await;
            for w in batch {
                let _ = w.send(r.clone());
            }
        }
    }

    /// One read-index round: locally on the leader, else asked of the leader.
    pub(super) async fn read_index_once(&self, deadline: Instant) -> Result<u64, ReadError> {
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let r = if leader == self.id {
                self.local_read_index(deadline).await
            } else {
                let Some(addr) = self.peer_addr_of(leader) else { return Err(WriteError::TryAgain) };
                let left = deadline.saturating_duration_since(Instant::now());
                match self.peers.call(leader, &addr, &PeerRequest::ReadIndex, left).await {
                    Ok(PeerResponse::ReadIndex(r)) => r,
                    Ok(_) => Err(ForwardError::Unknown("wrong answer to a read index request".into())),
                    Err(e) if e.certainly_not_delivered() => {
                        self.wait_leader_change(leader, deadline.min(Instant::now() + UNREACHABLE_LEADER_PAUSE)).await;
                        Err(ForwardError::NotLeader { leader: None })
                    }
                    Err(e) => Err(ForwardError::Unknown(e.to_string())),
                }
            };
            match r {
                Ok(i) => return Ok(i),
                Err(ForwardError::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(ForwardError::NotLeader { .. }) => return Err(WriteError::TryAgain),
                Err(ForwardError::NoQuorum(m)) => return Err(WriteError::ClusterDown(m)),
                Err(ForwardError::Unknown(m)) | Err(ForwardError::Rejected(m)) => return Err(WriteError::Timeout(m)),
            }
        }
    }

    pub(super) async fn local_read_index(&self, deadline: Instant) -> Result<u64, ForwardError> {
        match tokio::time::timeout_at(deadline.into(), self.raft.get_read_log_id()).await {
            Ok(Ok((read, _applied))) => {
                let mut index = read.map_or(0, |l| l.index);
                // openraft resumes leadership after a restart when its durable
                // vote says it was the leader, without a new term or a new
                // blank entry. Its commit index then comes from storage and can
                // be behind entries it had committed and acknowledged before
                // the crash, so its read index would miss them. Every such
                // entry is in our log as it was at boot: while we lead in the
                // boot term, reads wait for that whole log to be applied.
                if self.raft.metrics().borrow().current_term == self.boot.0 {
                    index = index.max(self.boot.1);
                }
                Ok(index)
            }
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ForwardError::NotLeader { leader: f.leader_id })
            }
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(q)))) => {
                Err(ForwardError::NoQuorum(q.to_string()))
            }
            Ok(Err(e)) => Err(ForwardError::Unknown(e.to_string())),
            Err(_) => {
                Err(ForwardError::NoQuorum("leadership not confirmed by a quorum before the request timeout".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReadCoalescer;

    #[test]
    fn a_read_only_joins_a_round_that_begins_after_it_arrived() {
        let c = ReadCoalescer::<u32>::new();
        assert!(c.join(1), "the first reader starts a round");
        assert!(!c.join(2), "a reader arriving while a round runs does not start another");
        assert_eq!(c.next_round(), Some(vec![1, 2]));
        // Reader 3 arrives while the round of 1 and 2 is in flight: it waits for the next one.
        assert!(!c.join(3));
        assert_eq!(c.next_round(), Some(vec![3]));
        assert_eq!(c.next_round(), None, "nobody waits: the round ends");
        assert!(c.join(4), "after the end, a new reader starts a new round");
    }
}
