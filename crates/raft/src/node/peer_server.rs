//! The peer server: Raft RPCs, forwarded writes, read-index requests and heartbeats from other
//! members, decoded and dispatched. Every forwarded command is validated like client input.

use std::time::Instant;

use bytes::Bytes;
use openraft::ServerState;
use rampart_membership::PeerId;
use rampart_transport::{BoxFuture, Handler};

use rampart_kv::{Command, Limits};

use super::batch::PIPELINE_COMMANDS_MAX;
use super::RaftNode;
use crate::network::{decode, encode, ForwardError, PeerRequest, PeerResponse};

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

impl RaftNode {
    async fn handle_peer(&self, req: PeerRequest) -> PeerResponse {
        match req {
            PeerRequest::AppendEntries(r) => PeerResponse::AppendEntries(self.raft.append_entries(r).await),
            PeerRequest::Vote(r) => PeerResponse::Vote(self.raft.vote(r).await),
            PeerRequest::InstallSnapshot(r) => PeerResponse::InstallSnapshot(self.receive_snapshot_chunk(r).await),
            PeerRequest::Forward(cmd) => {
                if let Err(e) = check_forwarded(&self.cfg.limits, std::slice::from_ref(&cmd)) {
                    return PeerResponse::Forward(Err(e));
                }
                let deadline = Instant::now() + self.cfg.request_timeout;
                PeerResponse::Forward(self.propose(cmd, deadline).await)
            }
            PeerRequest::ForwardMany(cmds) => {
                if let Err(e) = check_forwarded(&self.cfg.limits, &cmds) {
                    // Refuse the whole pipeline unproposed: proposing the rest would reorder it.
                    return PeerResponse::ForwardMany(cmds.iter().map(|_| Err(e.clone())).collect());
                }
                let deadline = Instant::now() + self.cfg.request_timeout;
                PeerResponse::ForwardMany(self.propose_many(cmds, deadline).await)
            }
            PeerRequest::ReadIndex => {
                let deadline = Instant::now() + self.cfg.request_timeout;
                let m = self.raft.metrics().borrow().clone();
                if m.state != ServerState::Leader {
                    return PeerResponse::ReadIndex(Err(ForwardError::NotLeader { leader: m.current_leader }));
                }
                PeerResponse::ReadIndex(self.local_read_index(deadline).await)
            }
            PeerRequest::Hello { id, info } => {
                self.health.lock().received(PeerId(id), self.now_ms());
                self.infos.write().insert(id, info);
                let me = self.infos.read().get(&self.id).cloned().unwrap_or_default();
                PeerResponse::Hello { id: self.id, info: me }
            }
        }
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

    fn handle(&self, request: Bytes) -> BoxFuture<Result<Bytes, String>> {
        let node = self.node.upgrade();
        Box::pin(async move {
            let Some(node) = node else { return Err("node is shutting down".to_string()) };
            let req: PeerRequest = decode(&request)?;
            let resp = node.handle_peer(req).await;
            encode(&resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_kv::SetCond;

    fn set(value_bytes: usize) -> Command {
        Command::Set { key: b"k".to_vec(), value: vec![0; value_bytes], cond: SetCond::Always, return_old: false }
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
