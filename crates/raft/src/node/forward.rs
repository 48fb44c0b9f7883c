//! Writes: the leader proposes; a follower forwards to the leader over the transport. A write
//! refused before it entered any log (`NotLeader`) is retried on the new leader within the
//! request timeout; every other failure says whether the write may have been applied.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::batch::Proposal;
use super::{RaftNode, WriteError};
use crate::network::{ForwardError, PeerRequest, PeerResponse};
use crate::types::{Command, NodeId, Response};

/// Pause before retrying a request that a former leader refused, while the
/// cluster settles on the new one.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// After failing to reach the leader (connection refused, reconnect backoff),
/// wait this long for a new leader before trying again.
pub(super) const UNREACHABLE_LEADER_PAUSE: Duration = Duration::from_millis(50);

/// What a client is told when a write failed on the way to (or in) the leader's log.
impl From<ForwardError> for WriteError {
    fn from(e: ForwardError) -> Self {
        match e {
            // Refused before it entered any log (retries are over by now).
            ForwardError::NotLeader { .. } => WriteError::TryAgain,
            ForwardError::NoQuorum(m) => WriteError::ClusterDown(m),
            ForwardError::Unknown(m) => WriteError::Timeout(m),
            ForwardError::Rejected(m) => WriteError::Rejected(m),
        }
    }
}

impl RaftNode {
    /// Applies `cmd` through the log, forwarding to the leader if needed.
    pub async fn write(&self, cmd: Command) -> Result<Response, WriteError> {
        let deadline = Instant::now() + self.cfg.request_timeout;
        let mut cmd = Some(cmd);
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let c = cmd.take().expect("command present while retrying a certainly-refused attempt");
            let result = if leader == self.id {
                self.propose(c.clone(), deadline).await
            } else {
                self.forward_write(leader, c.clone(), deadline).await
            };
            match result {
                // Refused before it entered any log: safe to try the new leader.
                Err(ForwardError::NotLeader { .. }) if Instant::now() < deadline => {
                    cmd = Some(c);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                other => return other.map_err(WriteError::from),
            }
        }
    }

    /// Applies pipelined commands in their order: they enter the log in that
    /// order, with one queue insertion each and no waiting in between. If the
    /// leader refuses all of them before proposing any, they are retried on
    /// the new leader; otherwise each gets its own result, and a command
    /// refused after an earlier one was proposed is answered TRYAGAIN rather
    /// than retried (a retry could reorder it behind later commands).
    pub async fn write_many(&self, cmds: Vec<Command>) -> Vec<Result<Response, WriteError>> {
        if cmds.is_empty() {
            return Vec::new();
        }
        if cmds.len() == 1 {
            let cmd = cmds.into_iter().next().expect("one command");
            return vec![self.write(cmd).await];
        }
        let deadline = Instant::now() + self.cfg.request_timeout;
        loop {
            let leader = match self.wait_for_leader(deadline).await {
                Ok(l) => l,
                Err(e) => return cmds.iter().map(|_| Err(e.clone())).collect(),
            };
            let results = if leader == self.id {
                self.propose_many(cmds.clone(), deadline).await
            } else {
                self.forward_many(leader, cmds.clone(), deadline).await
            };
            let none_proposed = results.iter().all(|r| matches!(r, Err(ForwardError::NotLeader { .. })));
            if none_proposed && Instant::now() < deadline {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            debug_assert_eq!(results.len(), cmds.len(), "one result per pipelined command");
            return results.into_iter().map(|r| r.map_err(WriteError::from)).collect();
        }
    }

    /// Queues every command in order, then waits for all. A command that
    /// cannot be queued stops the rest from being queued (they are refused
    /// as never proposed), so the log order is the pipeline's.
    pub(super) async fn propose_many(
        &self,
        cmds: Vec<Command>,
        deadline: Instant,
    ) -> Vec<Result<Response, ForwardError>> {
        let mut waiting = Vec::with_capacity(cmds.len());
        let mut refused: Option<ForwardError> = None;
        for cmd in cmds {
            if let Some(e) = &refused {
                waiting.push(Err(e.clone()));
                continue;
            }
            let (tx, rx) = oneshot::channel();
            match tokio::time::timeout_at(deadline.into(), self.proposals.send(Proposal { cmd, tx })).await {
                Ok(Ok(())) => waiting.push(Ok(rx)),
                Ok(Err(_)) => {
                    let e = ForwardError::NotLeader { leader: None };
                    waiting.push(Err(e.clone()));
                    refused = Some(e);
                }
                Err(_) => {
                    let e = ForwardError::NoQuorum("proposal queue full until the request timeout".into());
                    waiting.push(Err(e.clone()));
                    refused = Some(e);
                }
            }
        }
        let mut out = Vec::with_capacity(waiting.len());
        for w in waiting {
            out.push(match w {
                Err(e) => Err(e),
                Ok(rx) => match tokio::time::timeout_at(deadline.into(), rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(ForwardError::Unknown("proposer stopped".into())),
                    Err(_) => Err(ForwardError::Unknown("no commit before the request timeout".into())),
                },
            });
        }
        out
    }

    pub(super) async fn forward_many(
        &self,
        leader: NodeId,
        cmds: Vec<Command>,
        deadline: Instant,
    ) -> Vec<Result<Response, ForwardError>> {
        let n = cmds.len();
        let all = |e: ForwardError| (0..n).map(|_| Err(e.clone())).collect::<Vec<_>>();
        let Some(addr) = self.peer_addr_of(leader) else {
            return all(ForwardError::NotLeader { leader: None });
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match self.peers.call(leader, &addr, &PeerRequest::ForwardMany(cmds), left).await {
            Ok(PeerResponse::ForwardMany(r)) if r.len() == n => r,
            Ok(_) => all(ForwardError::Unknown("leader answered forwarded writes with the wrong message".into())),
            Err(e) if e.certainly_not_delivered() => {
                self.wait_leader_change(leader, deadline.min(Instant::now() + UNREACHABLE_LEADER_PAUSE)).await;
                all(ForwardError::NotLeader { leader: None })
            }
            Err(e) => all(ForwardError::Unknown(e.to_string())),
        }
    }

    /// Waits until some leader is known, or the deadline.
    pub(super) async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId, WriteError> {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = rx.borrow().current_leader {
                return Ok(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WriteError::TryAgain);
            }
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(WriteError::TryAgain),
                Err(_) => return Err(WriteError::TryAgain),
            }
        }
    }

    /// Proposes on this node. Called on the leader (and by forwarded requests).
    pub(super) async fn propose(&self, cmd: Command, deadline: Instant) -> Result<Response, ForwardError> {
        let grant = match cmd {
            Command::LeaseGrant { ttl_ms } => Some(ttl_ms),
            _ => None,
        };
        let result = self.propose_one(cmd, deadline).await;
        if let (Some(ttl_ms), Ok(resp)) = (grant, &result) {
            // The lease's count starts at its grant, not at the lease expirer's next look.
            self.lease_granted(resp, ttl_ms);
        }
        result
    }

    async fn propose_one(&self, cmd: Command, deadline: Instant) -> Result<Response, ForwardError> {
        let (tx, rx) = oneshot::channel();
        let proposal = Proposal { cmd, tx };
        match tokio::time::timeout_at(deadline.into(), self.proposals.send(proposal)).await {
            Ok(Ok(())) => {}
            // Never queued: certainly not in the log.
            Ok(Err(_)) => return Err(ForwardError::NotLeader { leader: None }),
            Err(_) => return Err(ForwardError::NoQuorum("proposal queue full until the request timeout".into())),
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ForwardError::Unknown("proposer stopped".into())),
            Err(_) => Err(ForwardError::Unknown("no commit before the request timeout".into())),
        }
    }

    pub(super) async fn forward_write(
        &self,
        leader: NodeId,
        cmd: Command,
        deadline: Instant,
    ) -> Result<Response, ForwardError> {
        let Some(addr) = self.peer_addr_of(leader) else {
            return Err(ForwardError::NotLeader { leader: None });
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match self.peers.call(leader, &addr, &PeerRequest::Forward(cmd), left).await {
            Ok(PeerResponse::Forward(r)) => r,
            Ok(_) => Err(ForwardError::Unknown("leader answered a forwarded write with the wrong message".into())),
            Err(e) if e.certainly_not_delivered() => {
                // The leader is unreachable: give an election a moment, then retry.
                self.wait_leader_change(leader, deadline.min(Instant::now() + UNREACHABLE_LEADER_PAUSE)).await;
                Err(ForwardError::NotLeader { leader: None })
            }
            Err(e) => Err(ForwardError::Unknown(e.to_string())),
        }
    }

    /// Waits (bounded by `deadline`) until the known leader is not `old`.
    pub(super) async fn wait_leader_change(&self, old: NodeId, deadline: Instant) {
        let mut rx = self.raft.metrics();
        loop {
            if rx.borrow().current_leader != Some(old) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_before_the_log_are_certainly_not_applied() {
        let not_leader: WriteError = ForwardError::NotLeader { leader: Some(2) }.into();
        assert!(matches!(not_leader, WriteError::TryAgain) && not_leader.is_certainly_not_applied());
        let no_quorum: WriteError = ForwardError::NoQuorum("x".into()).into();
        assert!(matches!(&no_quorum, WriteError::ClusterDown(m) if m == "x") && no_quorum.is_certainly_not_applied());
        let unknown: WriteError = ForwardError::Unknown("lost".into()).into();
        assert!(matches!(&unknown, WriteError::Timeout(m) if m == "lost") && !unknown.is_certainly_not_applied());
        let rejected: WriteError = ForwardError::Rejected("no".into()).into();
        assert!(rejected.is_certainly_not_applied());
    }
}
