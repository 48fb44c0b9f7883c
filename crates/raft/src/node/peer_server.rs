//! The peer server: Raft RPCs, forwarded writes, read-index requests and heartbeats from other
//! members, decoded and dispatched. Every forwarded command is validated like client input.

use std::time::Instant;

use bytes::Bytes;
use openraft::ServerState;
use rampart_membership::PeerId;
use rampart_transport::{BoxFuture, Handler};

use super::batch::PIPELINE_COMMANDS_MAX;
use super::RaftNode;
use crate::network::{decode, encode, ForwardError, PeerRequest, PeerResponse};

impl RaftNode {
    async fn handle_peer(&self, req: PeerRequest) -> PeerResponse {
        match req {
            PeerRequest::AppendEntries(r) => PeerResponse::AppendEntries(self.raft.append_entries(r).await),
            PeerRequest::Vote(r) => PeerResponse::Vote(self.raft.vote(r).await),
            PeerRequest::InstallSnapshot(r) => PeerResponse::InstallSnapshot(self.raft.install_snapshot(r).await),
            PeerRequest::Forward(cmd) => {
                // A forwarded command is untrusted input like a client's: the same limits apply.
                if let Err(e) = self.cfg.limits.check(&cmd) {
                    return PeerResponse::Forward(Err(ForwardError::Rejected(e.to_string())));
                }
                let deadline = Instant::now() + self.cfg.request_timeout;
                PeerResponse::Forward(self.propose(cmd, deadline).await)
            }
            PeerRequest::ForwardMany(cmds) => {
                if cmds.len() > PIPELINE_COMMANDS_MAX {
                    let e = ForwardError::Rejected(format!("more than {PIPELINE_COMMANDS_MAX} forwarded commands"));
                    return PeerResponse::ForwardMany(cmds.iter().map(|_| Err(e.clone())).collect());
                }
                if let Some(e) = cmds.iter().find_map(|c| self.cfg.limits.check(c).err()) {
                    // Refuse the whole pipeline unproposed: proposing the rest would reorder it.
                    let e = ForwardError::Rejected(e.to_string());
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
