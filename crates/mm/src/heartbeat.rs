//! Failure-detection heartbeats to every peer; the proposer learns the dead set when it changes.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rampart_membership::PeerId;
use rampart_paxos::NodeId;
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
    loop {
        interval.tick().await;
        let Some(n) = node.upgrade() else { return };
        let dead: Vec<NodeId> =
            n.health.lock().dead_peers(n.shared.now_ms()).into_iter().map(|p| NodeId(p.0)).collect();
        for (id, flag) in &n.shared.peers_dead {
            flag.store(dead.contains(&NodeId(*id)), Ordering::Relaxed);
        }
        if dead != last_dead {
            // Never block the heartbeats on a busy proposer: if its queue is full, try again at
            // the next tick.
            match n.proposer_tx.try_send(ProposerEvent::Dead(dead.clone())) {
                Ok(()) => {
                    tracing::info!(?dead, "failure detector: dead peers changed");
                    last_dead = dead;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        let me = n.infos.read().get(&n.cfg.id).cloned().unwrap_or_default();
        for (id, peer) in &n.shared.peers {
            let id = *id;
            if !n.health.lock().begin(PeerId(id)) {
                continue;
            }
            let Ok(payload) = wire::encode(&n.shared.envelope(PeerRequest::Hello { info: me.clone() })) else {
                continue;
            };
            let peer = peer.clone();
            let n = n.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut rtt_ms = None;
                if let Ok(b) = peer.call(Bytes::from(payload), Duration::from_secs(1)).await {
                    if let Ok(PeerResponse::Hello { id: rid, info, seen_you }) = wire::decode::<PeerResponse>(&b) {
                        if rid == id {
                            if n.shared.in_probation() {
                                n.first_boot_answer(id, seen_you).await;
                            }
                            n.infos.write().insert(id, info);
                            rtt_ms = Some(start.elapsed().as_millis() as u64);
                        }
                    }
                }
                n.health.lock().finish(PeerId(id), rtt_ms);
            });
        }
    }
}
