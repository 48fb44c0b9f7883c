//! The peer server: what other members ask of this node. Every request is checked first: the
//! sender must be a member and share this node's membership fingerprint.

use std::sync::Weak;
use std::time::Instant;

use bytes::Bytes;
use rampart_membership::PeerId;
use rampart_paxos::Reply;
use rampart_transport::{BoxFuture, Handler, PeerIdentity};
use tokio::sync::oneshot;

use crate::acceptor_task::AcceptorJob;
use crate::validate;
use crate::wire::{self, Envelope, PeerRequest, PeerResponse};
use crate::{MmNode, SCAN_PAGE_MAX};

impl MmNode {
    pub(crate) async fn handle_peer(&self, env: Envelope) -> Result<PeerResponse, String> {
        let from = env.from;
        check_sender(self.cfg.id, |id| self.cfg.members.contains_key(&id), self.shared.cluster, &env)?;
        validate::check_request(&env, &self.shared.peer_limits)?;
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
                fit_replies(&mut replies, wire::PAXOS_REPLY_BYTES_MAX);
                Ok(PeerResponse::Paxos { id: self.cfg.id, replies })
            }
            PeerRequest::Scan { .. } if self.shared.in_probation() => {
                Err("this node's first-boot check has not finished".into())
            }
            PeerRequest::Scan { prefix, after, limit, values } => {
                // Checked to be within 1..=SCAN_PAGE_MAX by `validate::check_request`.
                let limit = (limit as usize).clamp(1, SCAN_PAGE_MAX);
                let (registers, more) = self.local_scan(&prefix, after.as_deref(), limit, values)?;
                Ok(PeerResponse::Scan { registers, more })
            }
        }
    }
}

/// A request is served only from another member started with the same membership (a node
/// with another idea of the quorum must not vote with this one).
fn check_sender(me: u64, is_member: impl Fn(u64) -> bool, cluster: u64, env: &Envelope) -> Result<(), String> {
    let from = env.from;
    if !is_member(from) || from == me {
        return Err(format!("node {from} is not a member of this multi-master cluster"));
    }
    if env.cluster != cluster {
        tracing::error!(peer = from, "peer has a different --initial-cluster membership; refusing its requests");
        return Err(format!(
            "node {from} was started with a different --initial-cluster membership than node {me}; \
             every node must list the same member ids"
        ));
    }
    Ok(())
}

/// Keeps a Paxos answer within `bytes_max`: the replies past it are left out, and look lost to
/// the proposer (it matches replies by key and ballot, never by position). The first reply is
/// always kept, so an answer never comes back empty.
fn fit_replies(replies: &mut Vec<Reply>, bytes_max: usize) {
    let mut bytes = 0usize;
    let keep = replies
        .iter()
        .take_while(|r| {
            bytes += wire::reply_bytes(r);
            bytes <= bytes_max
        })
        .count()
        .max(1);
    replies.truncate(keep);
}

pub(crate) struct PeerHandler {
    pub(crate) node: Weak<MmNode>,
}

impl Handler for PeerHandler {
    fn handle(&self, from: &PeerIdentity, request: Bytes) -> BoxFuture<Result<Bytes, String>> {
        let node = self.node.upgrade();
        let from = *from;
        Box::pin(async move {
            let Some(node) = node else { return Err("node is shutting down".to_string()) };
            let env: Envelope = wire::decode(&request)?;
            // With peer TLS a member speaks only for itself: the envelope's sender must be the
            // node its certificate names (without TLS nothing can be checked).
            from.check_claim(env.from)?;
            let resp = node.handle_peer(env).await?;
            wire::encode(&resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_paxos::{Ballot, NodeId};

    fn env(from: u64, cluster: u64) -> Envelope {
        Envelope { from, cluster, request: PeerRequest::Paxos { requests: Vec::new() } }
    }

    #[test]
    fn only_other_members_with_the_same_membership_are_served() {
        let members = |id: u64| (1..=3).contains(&id);
        assert_eq!(check_sender(1, members, 77, &env(2, 77)), Ok(()));
        let stranger = check_sender(1, members, 77, &env(9, 77)).unwrap_err();
        assert_eq!(stranger, "node 9 is not a member of this multi-master cluster");
        assert!(check_sender(1, members, 77, &env(1, 77)).is_err(), "a node does not ask itself");
        let other = check_sender(1, members, 77, &env(2, 78)).unwrap_err();
        assert!(other.starts_with("node 2 was started with a different --initial-cluster membership"), "{other}");
    }

    #[test]
    fn an_answer_keeps_within_its_byte_bound_but_never_comes_back_empty() {
        let reply = |n: usize| Reply::Peeked {
            key: vec![b'k'; 10],
            ballot: Ballot::new(1, NodeId(1)),
            accepted: Ballot::ZERO,
            value: Some(vec![0; n]),
        };
        let all = vec![reply(100), reply(100), reply(100)];
        let one = wire::reply_bytes(&all[0]);
        let mut replies = all.clone();
        fit_replies(&mut replies, 3 * one);
        assert_eq!(replies.len(), 3);
        let mut replies = all.clone();
        fit_replies(&mut replies, 2 * one + one / 2);
        assert_eq!(replies, all[..2].to_vec());
        let mut replies = all.clone();
        fit_replies(&mut replies, 1);
        assert_eq!(replies.len(), 1, "the first reply always goes");
        let mut none: Vec<Reply> = Vec::new();
        fit_replies(&mut none, 1);
        assert!(none.is_empty());
    }
}
