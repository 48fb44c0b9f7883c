//! First boot: a node whose data dir is new votes only after every other member confirms it
//! never exchanged Paxos messages with this node id (docs/design.md). What makes the answer
//! possible: every node records durably which peers it exchanged Paxos messages with
//! ([`Shared::note_seen`], meta `mm_seen_peers`) before such an exchange can count.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rampart_storage::Durability;

use crate::{MmNode, Shared, INITIALIZED_META_KEY, SEEN_PEERS_META_KEY};

/// The seen-peers record: the ids, 8 bytes little-endian each, in order.
pub(crate) fn encode_seen(seen: &BTreeSet<u64>) -> Vec<u8> {
    seen.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// Reads a seen-peers record; anything but a whole number of ids is corrupt.
pub(crate) fn decode_seen(raw: &[u8]) -> Result<BTreeSet<u64>, String> {
    if !raw.len().is_multiple_of(8) {
        return Err(format!("seen-peers record of {} bytes is not a list of ids", raw.len()));
    }
    Ok(raw.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
}

impl Shared {
    /// Records durably that this node exchanged Paxos messages with `peer`, before that exchange
    /// may count toward a quorum. Once per peer for the life of the data dir.
    pub async fn note_seen(&self, peer: u64) -> Result<(), String> {
        let mut seen = self.seen.lock().await;
        if seen.contains(&peer) {
            return Ok(());
        }
        let mut next = seen.clone();
        next.insert(peer);
        let bytes = encode_seen(&next);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            store.write(Durability::Immediate, |b| b.meta_put(SEEN_PEERS_META_KEY, &bytes))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        *seen = next;
        Ok(())
    }
}

/// What one member's first-boot answer means for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The member has exchanged Paxos messages with this node id before: this node's data was
    /// lost or replaced, and it must stop with this reason rather than vote.
    Refuse(String),
    /// Some members have not confirmed yet.
    Waiting,
    /// Every other member confirmed: record that durably, then vote.
    Passed,
}

/// Folds the answer of member `peer` into `confirmed`, the members that said they never saw
/// node `me`; `peers` are all the other members. Answering twice changes nothing.
pub(crate) fn on_answer<'a>(
    me: u64,
    peer: u64,
    seen_you: bool,
    confirmed: &mut HashSet<u64>,
    peers: impl IntoIterator<Item = &'a u64>,
) -> Step {
    if seen_you {
        return Step::Refuse(format!(
            "node {me} has a new data dir, but node {peer} has exchanged Paxos messages with node {me} before: \
             this node's data was lost or replaced, and it must not vote with forgotten promises; it waits for \
             `rampart cluster replace {me}` on a member (or restore its data dir)"
        ));
    }
    confirmed.insert(peer);
    if peers.into_iter().all(|p| confirmed.contains(p)) {
        Step::Passed
    } else {
        Step::Waiting
    }
}

/// The members that have not confirmed yet, in id order.
pub(crate) fn missing<'a>(confirmed: &HashSet<u64>, peers: impl IntoIterator<Item = &'a u64>) -> Vec<u64> {
    let mut out: Vec<u64> = peers.into_iter().filter(|p| !confirmed.contains(p)).copied().collect();
    out.sort_unstable();
    out
}

impl MmNode {
    /// The other bootstrap members (`--initial-cluster`): who a first boot asks.
    fn bootstrap_peers(&self) -> Vec<u64> {
        self.cfg.members.keys().filter(|id| **id != self.cfg.id).copied().collect()
    }

    /// Resolves once the first-boot check passed (at once for a data dir that has voted
    /// before), or with the fatal error that stopped the node. While it waits it logs, every
    /// 5 s, which members have not answered yet: on first boot every member must answer once.
    pub async fn wait_first_boot(&self) -> Result<(), String> {
        let mut last_log = Instant::now();
        loop {
            if let Some(r) = self.shared.fatal.lock().clone() {
                return Err(r);
            }
            if !self.shared.in_probation() {
                return Ok(());
            }
            if last_log.elapsed() >= Duration::from_secs(5) {
                let missing = missing(&self.first_boot_confirmed.lock(), self.bootstrap_peers().iter());
                tracing::warn!(
                    ?missing,
                    "first boot of this data dir: waiting for every member to confirm it never saw this node"
                );
                last_log = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// First boot: a node whose data dir is new must not vote until every other member says it
    /// never exchanged Paxos messages with this node id. If one has, this node's data was lost
    /// or replaced, and voting with forgotten promises and values could lose acknowledged
    /// writes: the node stops with that error.
    pub(crate) async fn first_boot_answer(&self, peer: u64, seen_you: bool) {
        let step = {
            let mut confirmed = self.first_boot_confirmed.lock();
            on_answer(self.cfg.id, peer, seen_you, &mut confirmed, self.bootstrap_peers().iter())
        };
        let passed = match step {
            Step::Refuse(reason) => {
                // Not fatal: the node waits, without voting, for `rampart cluster replace`.
                tracing::error!(%reason, "this node's data was lost or replaced; it does not vote");
                *self.shared.role.write() = crate::Role::Joining { reason };
                self.shared.probation.store(false, Ordering::Release);
                return;
            }
            Step::Waiting => false,
            Step::Passed => true,
        };
        if passed && self.shared.in_probation() {
            let store = self.store.clone();
            let r = tokio::task::spawn_blocking(move || {
                store.write(Durability::Immediate, |b| b.meta_put(INITIALIZED_META_KEY, b"1"))
            })
            .await;
            match r {
                Ok(Ok(())) => {
                    self.shared.probation.store(false, Ordering::Release);
                    tracing::info!("first-boot check passed: no member has seen this node before; voting");
                }
                Ok(Err(e)) => self.shared.set_fatal(format!("cannot record the first-boot check: {e}")),
                Err(e) => self.shared.set_fatal(format!("first-boot check task failed: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seen_record_round_trips_and_a_torn_one_is_corrupt() {
        let seen: BTreeSet<u64> = [3, 1, u64::MAX].into_iter().collect();
        assert_eq!(decode_seen(&encode_seen(&seen)), Ok(seen));
        assert_eq!(decode_seen(&[]), Ok(BTreeSet::new()));
        let err = decode_seen(&[0; 9]).unwrap_err();
        assert_eq!(err, "seen-peers record of 9 bytes is not a list of ids");
    }

    #[test]
    fn every_other_member_must_confirm_once_and_repeats_change_nothing() {
        let peers = [2u64, 3, 4];
        let mut confirmed = HashSet::new();
        assert_eq!(missing(&confirmed, &peers), vec![2, 3, 4]);
        assert_eq!(on_answer(1, 3, false, &mut confirmed, &peers), Step::Waiting);
        assert_eq!(on_answer(1, 3, false, &mut confirmed, &peers), Step::Waiting, "a repeat is not a new member");
        assert_eq!(on_answer(1, 2, false, &mut confirmed, &peers), Step::Waiting);
        assert_eq!(missing(&confirmed, &peers), vec![4]);
        assert_eq!(on_answer(1, 4, false, &mut confirmed, &peers), Step::Passed);
        assert!(missing(&confirmed, &peers).is_empty());
    }

    #[test]
    fn a_member_that_saw_this_node_before_stops_it_with_both_ids_named() {
        let mut confirmed = HashSet::new();
        assert_eq!(on_answer(1, 2, false, &mut confirmed, &[2, 3]), Step::Waiting);
        match on_answer(1, 3, true, &mut confirmed, &[2, 3]) {
            Step::Refuse(reason) => {
                assert!(reason.starts_with("node 1 has a new data dir, but node 3 has exchanged"), "{reason}");
                assert!(reason.contains("restore its data dir"), "{reason}");
            }
            other => panic!("must refuse, got {other:?}"),
        }
        assert!(!confirmed.contains(&3), "a refusal is no confirmation");
    }
}
