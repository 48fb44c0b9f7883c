//! The peer server: what other members ask of this node. Every request is checked first: the
//! sender must be a member and share this node's membership fingerprint.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Instant;

use bytes::Bytes;
use rampart_membership::PeerId;
use rampart_paxos::Reply;
use rampart_transport::{BoxFuture, Handler, PeerIdentity};
use tokio::sync::oneshot;

use crate::acceptor_task::{AcceptorJob, CollectJob, Job};
use crate::validate;
use crate::wire::{self, Envelope, PeerRequest, PeerResponse};
use crate::{MmNode, SCAN_PAGE_MAX};

impl MmNode {
    pub(crate) async fn handle_peer(&self, env: Envelope) -> Result<PeerResponse, String> {
        let from = env.from;
        validate::check_request(&env, &self.shared.peer_limits)?;
        check_sender(self.cfg.id, self.shared.cluster.load(Ordering::Acquire), &env)?;
        let config = self.cluster_config();
        let member = config.entry(from).is_some();
        let not_member = || format!("node {from} is not a member of this multi-master cluster");
        match env.request {
            PeerRequest::Hello { info, seq, voter, changing, checking } => {
                if let Some(epoch) = changing.filter(|_| member) {
                    *self.shared.change_seen.lock() = Some((epoch, Instant::now()));
                }
                // The member as this node's configuration names it now; a hello from an older
                // generation (a replaced node's old process) is answered but not believed.
                let current = config.entry(from).map(|e| e.voter());
                let is_current = current.is_some() && voter.map(rampart_paxos::NodeId) == current;
                if is_current {
                    self.health.lock().received(PeerId(from), self.shared.now_ms());
                    self.infos.write().insert(from, info);
                }
                let me = self.infos.read().get(&self.cfg.id).cloned().unwrap_or_default();
                let seen_you = self.shared.seen.lock().await.contains(&from);
                let newer = (env.epoch < config.epoch).then(|| config.clone());
                let joining_nonce = (self.shared.fresh.load(Ordering::Acquire) && self.shared.voter().is_none())
                    .then_some(self.shared.join_nonce);
                // Behind what it showed before: restored from an old copy.
                let behind = current
                    .filter(|_| is_current && checking)
                    .and_then(|v| self.shared.peer_seqs.lock().get(&v).copied())
                    .filter(|seen| *seen > seq);
                match (behind, current) {
                    (Some(seen), _) => {
                        tracing::error!(peer = from, seq, seen, "a peer's data is older than what it showed before")
                    }
                    (None, Some(v)) if is_current => self.shared.observe_seq(v, seq),
                    _ => {}
                }
                let (id, epoch) = (self.cfg.id, config.epoch);
                Ok(PeerResponse::Hello { id, info: me, seen_you, epoch, config: newer, joining_nonce, behind })
            }
            PeerRequest::Paxos { .. }
            | PeerRequest::Scan { .. }
            | PeerRequest::Inspect { .. }
            | PeerRequest::Collect { .. }
                if !member || env.cluster == 0 =>
            {
                Err(not_member())
            }
            PeerRequest::Inspect { keys } => {
                let (tx, rx) = oneshot::channel();
                self.collect_job(CollectJob::Inspect { epoch: env.epoch, keys, reply: tx }).await?;
                match rx.await.map_err(|_| "the acceptor did not answer".to_string())? {
                    Ok(holdings) => Ok(PeerResponse::Inspected { holdings }),
                    Err(epoch) => Ok(PeerResponse::WrongEpoch { epoch, config: None }),
                }
            }
            PeerRequest::Collect { items } => {
                let (tx, rx) = oneshot::channel();
                self.collect_job(CollectJob::Collect { epoch: env.epoch, items, reply: tx }).await?;
                match rx.await.map_err(|_| "the acceptor did not answer".to_string())? {
                    Ok(removed) => Ok(PeerResponse::Collected { removed }),
                    Err(epoch) => Ok(PeerResponse::WrongEpoch { epoch, config: None }),
                }
            }
            PeerRequest::Paxos { requests } => {
                if let Some(why) = self.shared.not_voting() {
                    return Err(format!("node {} does not vote: {why}", self.cfg.id));
                }
                // Durable before our answer can count in the asker's quorum.
                self.shared.note_seen(from).await?;
                let (tx, rx) = oneshot::channel();
                let job = AcceptorJob { epoch: env.epoch, requests, reply: tx, received: Instant::now() };
                self.acceptor_tx.send(Job::Paxos(job)).await.map_err(|_| "the acceptor has stopped".to_string())?;
                match rx.await.map_err(|_| "the acceptor did not answer in time".to_string())? {
                    Ok(mut replies) => {
                        fit_replies(&mut replies, wire::PAXOS_REPLY_BYTES_MAX);
                        let id = self.shared.voter().map_or(self.cfg.id, |v| v.0);
                        let seq = self.shared.commit_seq.load(Ordering::Acquire);
                        Ok(PeerResponse::Paxos { id, replies, seq })
                    }
                    Err(epoch) => {
                        let newer = (env.epoch < epoch).then(|| self.cluster_config());
                        Ok(PeerResponse::WrongEpoch { epoch, config: newer })
                    }
                }
            }
            PeerRequest::Scan { .. } if self.shared.not_voting().is_some() => {
                Err("this node does not vote yet (first boot, or not a member)".into())
            }
            // Like a Paxos frame: a scan counts in a quorum of the asker's configuration only
            // if this node is at that epoch (every write of an older epoch is durable here by
            // the time it adopted this one).
            PeerRequest::Scan { .. } if env.epoch != config.epoch => {
                let newer = (env.epoch < config.epoch).then(|| config.clone());
                Ok(PeerResponse::WrongEpoch { epoch: config.epoch, config: newer })
            }
            PeerRequest::Scan { prefix, after, limit, values } => {
                // Checked to be within 1..=SCAN_PAGE_MAX by `validate::check_request`.
                let limit = (limit as usize).clamp(1, SCAN_PAGE_MAX);
                let (registers, more) = self.local_scan(&prefix, after.as_deref(), limit, values)?;
                Ok(PeerResponse::Scan { registers, more })
            }
            PeerRequest::ConfigPush { config: pushed, floor } => {
                if !member && pushed.entry(from).is_none() {
                    return Err(not_member());
                }
                let mine = self.shared.cluster.load(Ordering::Acquire);
                if mine != 0 && pushed.cluster_id != mine {
                    return Err(format!(
                        "a configuration of another cluster ({:#x}, this is {mine:#x})",
                        pushed.cluster_id
                    ));
                }
                let epoch = self.adopt_pushed(pushed, floor).await?;
                Ok(PeerResponse::ConfigAck { epoch, voter: self.shared.voter().map(|v| v.0) })
            }
        }
    }
}

impl MmNode {
    pub(crate) async fn collect_job(&self, job: CollectJob) -> Result<(), String> {
        self.acceptor_tx.send(Job::Collect(job)).await.map_err(|_| "the acceptor has stopped".to_string())
    }
}

/// A request is served only from another node of the same cluster (`cluster`: 0 while this
/// node, or the sender, has not joined one yet). Who may ask what is checked per request.
fn check_sender(me: u64, cluster: u64, env: &Envelope) -> Result<(), String> {
    let from = env.from;
    if from == me || from == 0 || from > crate::config::MEMBER_ID_MAX {
        return Err(format!("node {from} is not a member of this multi-master cluster"));
    }
    if env.cluster != 0 && cluster != 0 && env.cluster != cluster {
        tracing::error!(peer = from, "peer belongs to another cluster; refusing its requests");
        return Err(format!(
            "node {from} belongs to another multi-master cluster than node {me} (it was bootstrapped with \
             another --initial-cluster membership)"
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
        Envelope { from, cluster, epoch: 0, request: PeerRequest::Paxos { requests: Vec::new() } }
    }

    #[test]
    fn only_other_nodes_of_the_same_cluster_are_served() {
        assert_eq!(check_sender(1, 77, &env(2, 77)), Ok(()));
        assert!(check_sender(1, 77, &env(1, 77)).is_err(), "a node does not ask itself");
        assert!(check_sender(1, 77, &env(0, 77)).is_err());
        assert!(check_sender(1, 77, &env(crate::config::MEMBER_ID_MAX + 1, 77)).is_err());
        let other = check_sender(1, 77, &env(2, 78)).unwrap_err();
        assert!(other.starts_with("node 2 belongs to another multi-master cluster"), "{other}");
        assert_eq!(check_sender(1, 0, &env(2, 78)), Ok(()), "a joining node has no cluster yet");
        assert_eq!(check_sender(1, 77, &env(2, 0)), Ok(()), "nor has a joining sender");
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
