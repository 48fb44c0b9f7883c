//! Failure-detection heartbeats to every peer; the proposer learns the dead set when it changes.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rampart_membership::PeerId;
use rampart_paxos::NodeId;
use rampart_transport::Peer;
use tokio::sync::mpsc;

use crate::proposer_task::ProposerEvent;
use crate::wire::{self, PeerRequest, PeerResponse};
use crate::MmNode;

/// Every `peer_heartbeat_ms`: a hello to every peer (at most one in flight each). Receivers feed
/// their detectors; senders record round trips. The proposer learns the dead set when it changes.
pub(crate) async fn hello_loop(node: Weak<MmNode>) {
    let period = match node.upgrade() {
        Some(n) => Duration::from_millis(n.cfg.peer_heartbeat_ms.max(1)),
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_dead: Vec<NodeId> = Vec::new();
    let mut last_persist = Instant::now();
    loop {
        interval.tick().await;
        let Some(n) = node.upgrade() else { return };
        if !publish_dead(&n, &mut last_dead) {
            return;
        }
        if last_persist.elapsed() >= PEER_SEQS_PERSIST_INTERVAL {
            last_persist = Instant::now();
            n.persist_peer_seqs().await;
        }
        let me = n.infos.read().get(&n.cfg.id).cloned().unwrap_or_default();
        let seq = n.shared.commit_seq.load(std::sync::atomic::Ordering::Acquire);
        let voter = n.shared.voter().map(|v| v.0);
        let changing = *n.shared.coordinating.lock();
        let checking = n.shared.restart_check.load(std::sync::atomic::Ordering::Acquire);
        let request = PeerRequest::Hello { info: me, seq, voter, changing, checking };
        let payload = match wire::encode(&n.shared.envelope(request)) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a heartbeat");
                continue;
            }
        };
        let peers: Vec<(u64, Peer)> = n.shared.peers.read().iter().map(|(id, p)| (*id, p.clone())).collect();
        for (id, peer) in peers {
            if n.health.lock().begin(PeerId(id)) {
                tokio::spawn(hello(n.clone(), id, peer, payload.clone()));
            }
        }
    }
}

/// How long a restarted node waits for every other voter's answer before it settles for a
/// quorum (itself included) of answers.
pub const RESTART_CHECK_WAIT: Duration = Duration::from_secs(10);

/// How often the commit sequences seen from each voter are persisted (when they changed).
pub const PEER_SEQS_PERSIST_INTERVAL: Duration = Duration::from_secs(5);

impl MmNode {
    /// A peer's answer to this node's hello, for the restart check. `behind` (the peer saw a
    /// later commit of this node's acceptor than it now has) means its data dir was restored
    /// from an old copy: it does not vote, and may vote again only as a replacement.
    /// Otherwise the peer confirms. The check passes once every other voter confirmed, or, after
    /// [`RESTART_CHECK_WAIT`], once the confirmations and this node make a quorum.
    pub(crate) fn restart_answer(&self, peer: u64, behind: Option<u64>) {
        use std::sync::atomic::Ordering;
        if !self.shared.restart_check.load(Ordering::Acquire) {
            return;
        }
        if let Some(seen) = behind {
            let mut role = self.shared.role.write();
            let crate::Role::Member { generation } = *role else { return };
            let reason = format!(
                "node {} has data older than what node {peer} saw from it (commit {} < {seen}): its data dir was \
                 restored from an old copy, and voting with it could lose acknowledged writes; wipe it and run \
                 `rampart cluster replace {}` on a member",
                self.cfg.id,
                self.shared.commit_seq.load(Ordering::Acquire),
                self.cfg.id
            );
            tracing::error!(%reason, "this node does not vote");
            *self.shared.distrusted.lock() = Some(generation);
            *role = crate::Role::Joining { reason };
            self.shared.restart_check.store(false, Ordering::Release);
            return;
        }
        let config = self.cluster_config();
        let mut confirmed = self.shared.restart_confirmed.lock();
        confirmed.insert(peer);
        let me = self.shared.voter();
        let others: Vec<NodeId> = config.voters().all().iter().copied().filter(|v| Some(*v) != me).collect();
        let current = config.everyone();
        let answered: Vec<NodeId> = current.iter().filter(|m| confirmed.contains(&m.id)).map(|m| m.voter()).collect();
        let all = others.iter().all(|v| answered.contains(v) || !current.iter().any(|m| m.voter() == *v));
        let mut with_me = answered.clone();
        with_me.extend(me);
        let waited = self.shared.restart_since.lock().elapsed() >= RESTART_CHECK_WAIT;
        if all || (waited && config.voters().is_quorum(&with_me)) {
            self.shared.restart_check.store(false, Ordering::Release);
            tracing::info!(confirmed = answered.len(), "restart check passed: no member saw newer data from this node");
        }
    }

    /// Persists the commit sequences seen from each voter, if they changed.
    async fn persist_peer_seqs(&self) {
        use std::sync::atomic::Ordering;
        if !self.shared.peer_seqs_dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let config = self.cluster_config();
        let raw = {
            let mut seqs = self.shared.peer_seqs.lock();
            // Generations that left the configuration are forgotten (bounded by its size).
            seqs.retain(|v, _| config.votes(*v));
            crate::start::encode_peer_seqs(&seqs)
        };
        let store = self.store.clone();
        let r = tokio::task::spawn_blocking(move || {
            store.write(rampart_storage::Durability::Immediate, |b| {
                b.meta_put(crate::acceptor_task::PEER_SEQS_META_KEY, &raw)
            })
        })
        .await;
        if !matches!(r, Ok(Ok(()))) {
            self.shared.peer_seqs_dirty.store(true, Ordering::Release);
            tracing::warn!("cannot persist the commit sequences seen from peers; will retry");
        }
    }
}

/// Marks the links of dead peers and tells the proposer when the dead set changed. Never blocks
/// the heartbeats on a busy proposer: with its queue full, it tries again at the next tick.
/// False once the proposer has stopped.
fn publish_dead(n: &MmNode, last_dead: &mut Vec<NodeId>) -> bool {
    let dead: Vec<NodeId> = n.health.lock().dead_peers(n.shared.now_ms()).into_iter().map(|p| NodeId(p.0)).collect();
    *n.shared.peers_dead.write() = dead.iter().map(|d| d.0).collect();
    if dead == *last_dead {
        return true;
    }
    match n.proposer_tx.try_send(ProposerEvent::Dead(dead.clone())) {
        Ok(()) => {
            tracing::info!(?dead, "failure detector: dead peers changed");
            *last_dead = dead;
            true
        }
        Err(mpsc::error::TrySendError::Full(_)) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// One hello to peer `id` (begun in the detector): its answer carries the peer's addresses and,
/// on first boot, whether it saw this node before. Always finished in the detector, answered or
/// not, so the next tick may send another.
async fn hello(n: Arc<MmNode>, id: u64, peer: Peer, payload: Bytes) {
    let start = Instant::now();
    let mut rtt_ms = None;
    if let Ok(b) = peer.call(payload, Duration::from_secs(1)).await {
        if let Ok(PeerResponse::Hello { id: rid, info, seen_you, config, behind, .. }) =
            wire::decode::<PeerResponse>(&b)
        {
            if let Err(e) = crate::validate::check_info(&info) {
                tracing::warn!(peer = id, error = %e, "ignoring an invalid hello answer");
            } else if rid == id {
                // A peer with a newer configuration: this node missed a change (it was down).
                if let Some(c) = config.filter(|c| c.epoch > n.shared.config.read().epoch) {
                    tracing::info!(peer = id, epoch = c.epoch, "a peer has a newer configuration; adopting it");
                    if let Err(e) = n.adopt(c).await {
                        tracing::warn!(error = %e, "could not adopt a peer's configuration");
                    }
                }
                if n.shared.in_probation() {
                    n.first_boot_answer(id, seen_you).await;
                }
                n.restart_answer(id, behind);
                n.infos.write().insert(id, info);
                rtt_ms = Some(start.elapsed().as_millis() as u64);
            }
        }
    }
    n.health.lock().finish(PeerId(id), rtt_ms);
}
