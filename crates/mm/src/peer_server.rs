//! The peer server: what other members ask of this node. Every request is checked first: the
//! sender must be a member and share this node's membership fingerprint.

use std::sync::Weak;
use std::time::Instant;

use bytes::Bytes;
use rampart_membership::PeerId;
use rampart_transport::{BoxFuture, Handler};
use tokio::sync::oneshot;

use crate::acceptor_task::AcceptorJob;
use crate::wire::{self, Envelope, PeerRequest, PeerResponse};
use crate::{MmNode, SCAN_PAGE_MAX};

impl MmNode {
    pub(crate) async fn handle_peer(&self, env: Envelope) -> Result<PeerResponse, String> {
        let from = env.from;
        if !self.cfg.members.contains_key(&from) || from == self.cfg.id {
            return Err(format!("node {from} is not a member of this multi-master cluster"));
        }
        if env.cluster != self.shared.cluster {
            tracing::error!(peer = from, "peer has a different --initial-cluster membership; refusing its requests");
            return Err(format!(
                "node {from} was started with a different --initial-cluster membership than node {}; \
                 every node must list the same member ids",
                self.cfg.id
            ));
        }
        match env.request {
            PeerRequest::Hello { info } => {
                self.health.lock().received(PeerId(from), self.shared.now_ms());
                self.infos.write().insert(from, info);
                let me = self.infos.read().get(&self.cfg.id).cloned().unwrap_or_default();
                let seen_you = self.shared.seen.lock().await.contains(&from);
                Ok(PeerResponse::Hello { id: self.cfg.id, info: me, seen_you })
            }
            PeerRequest::Paxos { requests } => {
                if self.shared.in_probation() {
                    return Err("this node's first-boot check has not finished; it does not vote yet".into());
                }
                // Durable before our answer can count in the asker's quorum.
                self.shared.note_seen(from).await?;
                let (tx, rx) = oneshot::channel();
                self.acceptor_tx
                    .send(AcceptorJob { requests, reply: tx, received: Instant::now() })
                    .await
                    .map_err(|_| "the acceptor has stopped".to_string())?;
                let mut replies = rx.await.map_err(|_| "the acceptor did not answer in time".to_string())?;
                // Keep the answer within a frame; what is left out looks lost to the proposer.
                let mut bytes = 0usize;
                let keep = replies
                    .iter()
                    .take_while(|r| {
                        bytes += wire::reply_bytes(r);
                        bytes <= wire::PAXOS_REPLY_BYTES_MAX
                    })
                    .count()
                    .max(1);
                replies.truncate(keep);
                Ok(PeerResponse::Paxos { id: self.cfg.id, replies })
            }
            PeerRequest::Scan { .. } if self.shared.in_probation() => {
                Err("this node's first-boot check has not finished".into())
            }
            PeerRequest::Scan { prefix, after, limit, values } => {
                let limit = (limit as usize).clamp(1, SCAN_PAGE_MAX);
                let (registers, more) = self.local_scan(&prefix, after.as_deref(), limit, values)?;
                Ok(PeerResponse::Scan { registers, more })
            }
        }
    }
}

pub(crate) struct PeerHandler {
    pub(crate) node: Weak<MmNode>,
}

impl Handler for PeerHandler {
    fn handle(&self, request: Bytes) -> BoxFuture<Result<Bytes, String>> {
        let node = self.node.upgrade();
        Box::pin(async move {
            let Some(node) = node else { return Err("node is shutting down".to_string()) };
            let env: Envelope = wire::decode(&request)?;
            let resp = node.handle_peer(env).await?;
            wire::encode(&resp).map(Bytes::from)
        })
    }
}
