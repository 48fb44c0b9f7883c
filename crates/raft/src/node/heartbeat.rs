//! Failure-detection heartbeats to every member.

use std::time::{Duration, Instant};

use rampart_membership::PeerId;

use super::RaftNode;
use crate::network::{PeerRequest, PeerResponse};
use crate::types::NodeId;

/// Every `peer_heartbeat_ms` (default 100 ms): sends a heartbeat (a hello
/// carrying our client addresses) to every member, at most one in flight per
/// peer. Receivers feed their phi-accrual detectors; senders record the round
/// trip and learn the peer's client addresses (for INFO, ROLE and status).
pub(super) async fn hello_loop(node: std::sync::Weak<RaftNode>) {
    let period = match node.upgrade() {
        Some(n) => Duration::from_millis(n.cfg.peer_heartbeat_ms),
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(n) = node.upgrade() else { return };
        let members: Vec<(NodeId, String)> = {
            let m = n.raft.metrics().borrow().membership_config.clone();
            m.membership()
                .nodes()
                .filter(|(id, _)| **id != n.id)
                .map(|(id, info)| (*id, info.peer_addr.clone()))
                .collect()
        };
        let ids: Vec<PeerId> = members.iter().map(|(id, _)| PeerId(*id)).collect();
        n.health.lock().track(&ids, n.now_ms());
        let me = n.infos.read().get(&n.id).cloned().unwrap_or_default();
        for (id, addr) in members {
            if !n.health.lock().begin(PeerId(id)) {
                continue;
            }
            let n = n.clone();
            let req = PeerRequest::Hello { id: n.id, info: me.clone() };
            tokio::spawn(async move {
                let start = Instant::now();
                let mut rtt_ms = None;
                if let Ok(PeerResponse::Hello { id: rid, info }) =
                    n.peers.call(id, &addr, &req, Duration::from_secs(1)).await
                {
                    if rid == id && crate::validate::check_info(&info).is_ok() {
                        n.infos.write().insert(id, info);
                        rtt_ms = Some(start.elapsed().as_millis() as u64);
                    }
                }
                n.health.lock().finish(PeerId(id), rtt_ms);
            });
        }
    }
}
