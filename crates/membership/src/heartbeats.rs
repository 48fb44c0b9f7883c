//! The heartbeat bookkeeping both replication modes share: the member table and which peers have
//! a heartbeat in flight (at most one each, so a slow peer never accumulates them). Pure, like the
//! rest of this crate: the runtime sends the heartbeats and passes the time in.

use std::collections::BTreeSet;

use crate::{Error, Membership, PeerId, PeerSnapshot, PhiConfig};

pub struct Heartbeats {
    table: Membership,
    in_flight: BTreeSet<PeerId>,
}

impl Heartbeats {
    pub fn new(config: PhiConfig, peers: impl IntoIterator<Item = PeerId>, now_ms: u64) -> Result<Self, Error> {
        Ok(Heartbeats { table: Membership::new(config, peers, now_ms)?, in_flight: BTreeSet::new() })
    }

    /// Tracks exactly `members`: new ones are added, gone ones forgotten.
    pub fn track(&mut self, members: &[PeerId], now_ms: u64) {
        for p in self.table.snapshot(now_ms).into_iter().map(|p| p.id) {
            if !members.contains(&p) {
                self.table.remove_peer(p);
                self.in_flight.remove(&p);
            }
        }
        for p in members {
            if self.table.state(*p, now_ms).is_err() {
                let _ = self.table.add_peer(*p, now_ms);
            }
        }
    }

    /// A heartbeat from `peer` arrived. A peer not tracked yet (a member this node has not seen in
    /// its membership view, or one being added) is tracked from now on.
    pub fn received(&mut self, peer: PeerId, now_ms: u64) {
        if self.table.heartbeat(peer, now_ms).is_err() {
            let _ = self.table.add_peer(peer, now_ms);
            let _ = self.table.heartbeat(peer, now_ms);
        }
    }

    /// Starts a heartbeat to `peer`; false when one is still in flight.
    pub fn begin(&mut self, peer: PeerId) -> bool {
        self.in_flight.insert(peer)
    }

    /// The heartbeat to `peer` ended; `rtt_ms` when it was answered.
    pub fn finish(&mut self, peer: PeerId, rtt_ms: Option<u64>) {
        let was_in_flight = self.in_flight.remove(&peer);
        debug_assert!(was_in_flight, "a heartbeat finishes only after it began");
        if let Some(rtt) = rtt_ms {
            let _ = self.table.record_rtt(peer, rtt);
        }
    }

    pub fn snapshot(&self, now_ms: u64) -> Vec<PeerSnapshot> {
        self.table.snapshot(now_ms)
    }

    pub fn dead_peers(&self, now_ms: u64) -> Vec<PeerId> {
        self.table.dead_peers(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_heartbeat_in_flight_per_peer_and_exactly_the_members_tracked() {
        let mut h = Heartbeats::new(PhiConfig::default(), [PeerId(2)], 0).unwrap();
        assert!(h.begin(PeerId(2)));
        assert!(!h.begin(PeerId(2)), "a second heartbeat waits for the first");
        h.finish(PeerId(2), Some(3));
        assert!(h.begin(PeerId(2)));
        h.finish(PeerId(2), None);
        assert_eq!(h.snapshot(10)[0].rtt_ms, Some(3.0));
        h.track(&[PeerId(3)], 20);
        let ids: Vec<PeerId> = h.snapshot(20).into_iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![PeerId(3)]);
        h.received(PeerId(9), 30);
        assert_eq!(h.snapshot(30).len(), 2, "a heartbeat from an untracked peer tracks it");
    }
}
