//! The membership table: every peer's detector, last heartbeat and round-trip time, and the
//! snapshot the server renders.

use crate::detector::{PeerState, PhiAccrual, PhiConfig};
use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A peer's node id (the same number as the node ids of the replication crates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One row of `GET /v1/cluster/members`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerSnapshot {
    pub id: PeerId,
    pub state: PeerState,
    pub phi: f64,
    /// `None` until the first heartbeat.
    pub since_last_heartbeat_ms: Option<u64>,
    /// Smoothed round-trip time; `None` until the first measurement.
    pub rtt_ms: Option<f64>,
    pub heartbeats: u64,
}

#[derive(Clone, Debug)]
struct Peer {
    detector: PhiAccrual,
    heartbeats: u64,
    rtt_ms: Option<f64>,
}

/// Peers and what the detectors say about them. A peer that never sends a heartbeat is judged
/// as if one had arrived when it was added, so it turns dead on the usual schedule rather than
/// staying alive forever.
#[derive(Clone, Debug)]
pub struct Membership {
    config: PhiConfig,
    peers: BTreeMap<PeerId, Peer>,
}

/// Weight of a new round-trip sample in the smoothed value (TCP's SRTT uses 1/8 too).
const RTT_SMOOTHING: f64 = 0.125;

impl Membership {
    /// A table of `peers` (this node excluded), all added at `now_ms`.
    pub fn new(config: PhiConfig, peers: impl IntoIterator<Item = PeerId>, now_ms: u64) -> Result<Self, Error> {
        config.validate()?;
        let mut table = Membership { config, peers: BTreeMap::new() };
        for peer in peers {
            table.add_peer(peer, now_ms)?;
        }
        Ok(table)
    }

    /// Adds a peer (no-op if present).
    pub fn add_peer(&mut self, peer: PeerId, now_ms: u64) -> Result<(), Error> {
        if !self.peers.contains_key(&peer) {
            let mut detector = PhiAccrual::new(self.config)?;
            detector.heartbeat(now_ms);
            self.peers.insert(peer, Peer { detector, heartbeats: 0, rtt_ms: None });
        }
        Ok(())
    }

    pub fn remove_peer(&mut self, peer: PeerId) -> bool {
        self.peers.remove(&peer).is_some()
    }

    /// A heartbeat from `peer` arrived at `now_ms`.
    pub fn heartbeat(&mut self, peer: PeerId, now_ms: u64) -> Result<(), Error> {
        let entry = self.peers.get_mut(&peer).ok_or(Error::UnknownPeer(peer))?;
        entry.detector.heartbeat(now_ms);
        entry.heartbeats += 1;
        Ok(())
    }

    /// A round trip to `peer` (a heartbeat and its echo) took `rtt_ms`.
    pub fn record_rtt(&mut self, peer: PeerId, rtt_ms: u64) -> Result<(), Error> {
        let entry = self.peers.get_mut(&peer).ok_or(Error::UnknownPeer(peer))?;
        let sample = rtt_ms as f64;
        entry.rtt_ms = Some(match entry.rtt_ms {
            None => sample,
            Some(old) => old + RTT_SMOOTHING * (sample - old),
        });
        Ok(())
    }

    pub fn state(&self, peer: PeerId, now_ms: u64) -> Result<PeerState, Error> {
        Ok(self.peers.get(&peer).ok_or(Error::UnknownPeer(peer))?.detector.state(now_ms))
    }

    /// Peers the detector calls dead: what a multi-master proposer should not wait for.
    pub fn dead_peers(&self, now_ms: u64) -> Vec<PeerId> {
        self.peers.iter().filter(|(_, p)| p.detector.state(now_ms) == PeerState::Dead).map(|(id, _)| *id).collect()
    }

    /// Every peer, in id order.
    pub fn snapshot(&self, now_ms: u64) -> Vec<PeerSnapshot> {
        self.peers
            .iter()
            .map(|(id, p)| PeerSnapshot {
                id: *id,
                state: p.detector.state(now_ms),
                phi: p.detector.phi(now_ms),
                since_last_heartbeat_ms: if p.heartbeats == 0 {
                    None
                } else {
                    p.detector.last_heartbeat_ms().map(|last| now_ms.saturating_sub(last))
                },
                rtt_ms: p.rtt_ms,
                heartbeats: p.heartbeats,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_tracks_states_rtt_and_unknown_peers() {
        let mut m = Membership::new(PhiConfig::default(), [PeerId(2), PeerId(3)], 0).unwrap();
        for t in (100..=5_000).step_by(100) {
            m.heartbeat(PeerId(2), t).unwrap();
            if t <= 2_000 {
                m.heartbeat(PeerId(3), t).unwrap();
            }
        }
        m.record_rtt(PeerId(2), 8).unwrap();
        m.record_rtt(PeerId(2), 16).unwrap();
        assert_eq!(m.state(PeerId(2), 5_050).unwrap(), PeerState::Alive);
        assert_eq!(m.state(PeerId(3), 5_050).unwrap(), PeerState::Dead);
        assert_eq!(m.dead_peers(5_050), vec![PeerId(3)]);
        let snap = m.snapshot(5_050);
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].since_last_heartbeat_ms, Some(50));
        assert_eq!(snap[0].rtt_ms, Some(9.0));
        assert_eq!(snap[0].heartbeats, 50);
        assert_eq!(snap[1].since_last_heartbeat_ms, Some(3_050));
        assert!(snap[1].phi >= 8.0);
        assert_eq!(m.heartbeat(PeerId(9), 1), Err(Error::UnknownPeer(PeerId(9))));
        assert_eq!(m.record_rtt(PeerId(9), 1), Err(Error::UnknownPeer(PeerId(9))));
        assert!(m.state(PeerId(9), 1).is_err());
        // The HTTP API renders states as lowercase words.
        let json = serde_json::to_string(&snap[1]).unwrap();
        assert!(json.contains(r#""state":"dead""#), "{json}");
        assert_eq!(snap[1].state.as_str(), "dead");
    }

    #[test]
    fn a_peer_that_never_heartbeats_turns_dead() {
        let m = Membership::new(PhiConfig::default(), [PeerId(2)], 1_000).unwrap();
        assert_eq!(m.state(PeerId(2), 1_050).unwrap(), PeerState::Alive);
        assert_eq!(m.state(PeerId(2), 3_000).unwrap(), PeerState::Dead);
        assert_eq!(m.snapshot(3_000)[0].since_last_heartbeat_ms, None);
    }

    #[test]
    fn peers_can_be_added_and_removed() {
        let mut m = Membership::new(PhiConfig::default(), [], 0).unwrap();
        assert!(m.is_empty());
        m.add_peer(PeerId(4), 0).unwrap();
        m.add_peer(PeerId(4), 0).unwrap();
        assert_eq!(m.len(), 1);
        assert!(m.remove_peer(PeerId(4)));
        assert!(!m.remove_peer(PeerId(4)));
        assert!(Membership::new(PhiConfig { window_max: 0, ..PhiConfig::default() }, [], 0).is_err());
    }
}
