//! The peer server: Raft RPCs, forwarded writes, read-index requests and heartbeats from other
//! members, decoded, validated (`crate::validate`: terms, log ids, senders, sizes) and
//! dispatched. Every forwarded command is validated like client input.

use std::time::Instant;

use bytes::Bytes;
use openraft::ServerState;
use rampart_membership::PeerId;
use rampart_transport::{BoxFuture, Handler, PeerIdentity};

use rampart_kv::{Command, Limits};

use super::batch::PIPELINE_COMMANDS_MAX;
use super::RaftNode;
use crate::network::{decode, encode, ForwardError, PeerRequest, PeerResponse};
use crate::validate;

/// Forwarded commands are untrusted input like a client's: at most a pipeline's worth, each
/// within this node's limits (a batch is never accepted from a peer).
fn check_forwarded(limits: &Limits, cmds: &[Command]) -> Result<(), ForwardError> {
    if cmds.len() > PIPELINE_COMMANDS_MAX {
        return Err(ForwardError::Rejected(format!("more than {PIPELINE_COMMANDS_MAX} forwarded commands")));
    }
    for c in cmds {
        limits.check(c).map_err(|e| ForwardError::Rejected(e.to_string()))?;
    }
    Ok(())
}

/// With peer TLS a member speaks only for itself: the node a Raft message claims to come from
/// (the candidate or leader in its vote, the id of a hello) must be the node its certificate
/// names. Forwarded writes and read-index requests name no sender; a member certificate (the
/// transport admits no other) is enough for them. Without TLS nothing can be checked.
fn check_claimed_sender(from: &PeerIdentity, req: &PeerRequest) -> Result<(), String> {
    let claimed = match req {
        PeerRequest::AppendEntries(r) => r.vote.leader_id().voted_for(),
        PeerRequest::Vote(r) => r.vote.leader_id().voted_for(),
        PeerRequest::InstallSnapshot(r) => r.vote.leader_id().voted_for(),
        PeerRequest::Hello { id, .. } => Some(*id),
        PeerRequest::Forward(_) | PeerRequest::ForwardMany(_) | PeerRequest::ReadIndex | PeerRequest::Lease { .. } => {
            return Ok(())
        }
    };
    match (claimed, from.node) {
        (Some(id), _) => from.check_claim(id),
        (None, None) => Ok(()),
        (None, Some(_)) => Err("refused: the Raft message names no sender".to_string()),
    }
}

impl RaftNode {
    /// What every peer request is checked against here (`crate::validate`).
    fn validation_context(&self) -> validate::Context {
        // Borrowed, not cloned: this runs for every peer request (every AppendEntries).
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        validate::Context {
            bounds: validate::Bounds::now(),
            me: self.id,
            term: m.current_term,
            members: m.membership_config.membership().nodes().map(|(id, _)| *id).collect(),
        }
    }

    /// Checks a request before openraft or anything else sees it; an error is the peer's answer.
    async fn handle_peer(&self, req: PeerRequest) -> Result<PeerResponse, String> {
        validate::check_request(&req, &self.validation_context())?;
        Ok(match req {
            PeerRequest::AppendEntries(r) => PeerResponse::AppendEntries(self.raft.append_entries(r).await),
            PeerRequest::Vote(r) => PeerResponse::Vote(self.raft.vote(r).await),
            PeerRequest::InstallSnapshot(r) => {
                self.snapshot_progress.lock().check(&r)?;
                let progress = (r.meta.snapshot_id.clone(), r.offset, r.data.len(), r.done);
                let answer = self.receive_snapshot_chunk(r).await;
                if answer.is_ok() {
                    let (id, offset, len, done) = progress;
                    self.snapshot_progress.lock().received_chunk(&id, offset, len, done);
                }
                PeerResponse::InstallSnapshot(answer)
            }
            PeerRequest::Forward(cmd) => {
                if let Err(e) = check_forwarded(&self.cfg.limits, std::slice::from_ref(&cmd)) {
                    return Ok(PeerResponse::Forward(Err(e)));
                }
                let deadline = Instant::now() + self.cfg.request_timeout;
                PeerResponse::Forward(self.propose(cmd, deadline).await)
            }
            PeerRequest::ForwardMany(cmds) => {
                if let Err(e) = check_forwarded(&self.cfg.limits, &cmds) {
                    // Refuse the whole pipeline unproposed: proposing the rest would reorder it.
                    return Ok(PeerResponse::ForwardMany(cmds.iter().map(|_| Err(e.clone())).collect()));
                }
                let deadline = Instant::now() + self.cfg.request_timeout;
                PeerResponse::ForwardMany(self.propose_many(cmds, deadline).await)
            }
            PeerRequest::ReadIndex => {
                let deadline = Instant::now() + self.cfg.request_timeout;
                let (state, leader) = {
                    let m = self.raft.metrics();
                    let m = m.borrow();
                    (m.state, m.current_leader)
                };
                if state != ServerState::Leader {
                    return Ok(PeerResponse::ReadIndex(Err(ForwardError::NotLeader { leader })));
                }
                PeerResponse::ReadIndex(self.local_read_index(deadline).await)
            }
            // Served only by the leader (`lease_local` answers NotLeader elsewhere).
            PeerRequest::Lease { id, keepalive } => PeerResponse::Lease(self.lease_local(id, keepalive).await),
            PeerRequest::Hello { id, info } => {
                self.health.lock().received(PeerId(id), self.now_ms());
                self.infos.write().insert(id, info);
                let me = self.infos.read().get(&self.id).cloned().unwrap_or_default();
                PeerResponse::Hello { id: self.id, info: me }
            }
        })
    }
}

pub(super) struct PeerHandler {
    pub(super) node: std::sync::Weak<RaftNode>,
}

impl Handler for PeerHandler {
    fn connection_closed(&self, _remote: std::net::SocketAddr) {
        if let Some(node) = self.node.upgrade() {
            tokio::spawn(async move { node.check_leader_alive().await });
        }
    }

    fn handle(&self, from: &PeerIdentity, request: Bytes) -> BoxFuture<Result<Bytes, String>> {
        let node = self.node.upgrade();
        let from = *from;
        Box::pin(async move {
            let Some(node) = node else { return Err("node is shutting down".to_string()) };
            let req: PeerRequest = decode(&request)?;
            check_claimed_sender(&from, &req)?;
            let resp = node.handle_peer(req).await?;
            encode(&resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_kv::SetCond;

    fn set(value_bytes: usize) -> Command {
        Command::Set {
            key: b"k".to_vec(),
            value: vec![0; value_bytes],
            cond: SetCond::Always,
            return_old: false,
            ttl: rampart_kv::Ttl::Clear,
        }
    }

    #[test]
    fn with_tls_a_raft_message_must_come_from_the_node_it_names() {
        use openraft::raft::VoteRequest;
        use openraft::Vote;
        let remote = "127.0.0.1:1".parse().unwrap();
        let node2 = PeerIdentity { remote, node: Some(2) };
        let plain = PeerIdentity { remote, node: None };
        let vote_from_3 = PeerRequest::Vote(VoteRequest::new(Vote::new(1000, 3), None));
        let e = check_claimed_sender(&node2, &vote_from_3).unwrap_err();
        assert!(e.contains("names node 2") && e.contains("from node 3"), "{e}");
        assert_eq!(check_claimed_sender(&plain, &vote_from_3), Ok(()), "without TLS as before");
        let vote_from_2 = PeerRequest::Vote(VoteRequest::new(Vote::new(1000, 2), None));
        assert_eq!(check_claimed_sender(&node2, &vote_from_2), Ok(()));
        let hello = PeerRequest::Hello { id: 3, info: Default::default() };
        assert!(check_claimed_sender(&node2, &hello).is_err());
        for any_member in [PeerRequest::ReadIndex, PeerRequest::Forward(set(1)), PeerRequest::ForwardMany(vec![])] {
            assert_eq!(check_claimed_sender(&node2, &any_member), Ok(()));
        }
    }

    #[test]
    fn forwarded_commands_get_the_client_limits() {
        let limits = Limits { value_bytes_max: 16, ..Limits::default() };
        assert!(check_forwarded(&limits, &[set(16)]).is_ok());
        let big = check_forwarded(&limits, &[set(16), set(17)]);
        assert!(matches!(&big, Err(ForwardError::Rejected(m)) if m.contains("value_bytes_max")), "{big:?}");
        let batch = check_forwarded(&limits, &[Command::Batch(vec![set(1)])]);
        assert!(matches!(batch, Err(ForwardError::Rejected(_))), "a peer cannot forward a batch");
        let many = vec![set(1); PIPELINE_COMMANDS_MAX + 1];
        assert!(matches!(check_forwarded(&limits, &many), Err(ForwardError::Rejected(_))));
    }
}
