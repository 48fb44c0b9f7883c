//! Who votes, and what counts as a quorum. Normally one set of acceptors, where a quorum is a
//! majority; during a membership change two sets (joint), where a quorum needs a majority of each.
//! Every quorum of one configuration meets every quorum of a configuration it overlaps with in
//! time, which is what the change procedure in `docs/paxos.md` ("Membership changes") relies on.

use crate::ballot::NodeId;
use crate::{Error, ACCEPTORS_MAX};

/// The voting acceptors: one set, or an old and a new one during a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voters {
    /// One or two sets, each sorted, without duplicates, non-empty.
    sets: Vec<Vec<NodeId>>,
    /// The union of the sets, sorted: every acceptor a request goes to.
    all: Vec<NodeId>,
    /// Simulation only: a fixed reply count instead of majorities (breaks safety on purpose).
    quorum_override: Option<usize>,
}

fn checked_set(ids: &[NodeId]) -> Result<Vec<NodeId>, Error> {
    if ids.is_empty() || ids.len() > ACCEPTORS_MAX {
        return Err(Error::Config { reason: "need between 1 and ACCEPTORS_MAX acceptors" });
    }
    let mut sorted = ids.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != ids.len() {
        return Err(Error::Config { reason: "duplicate acceptor id" });
    }
    Ok(sorted)
}

impl Voters {
    /// One set: a quorum is a majority of it.
    pub fn single(ids: &[NodeId]) -> Result<Self, Error> {
        let set = checked_set(ids)?;
        Ok(Voters { all: set.clone(), sets: vec![set], quorum_override: None })
    }

    /// The joint configuration of a change from `old` to `new`: a quorum is a majority of `old`
    /// and a majority of `new`.
    pub fn joint(old: &[NodeId], new: &[NodeId]) -> Result<Self, Error> {
        let old = checked_set(old)?;
        let new = checked_set(new)?;
        let mut all: Vec<NodeId> = old.iter().chain(new.iter()).copied().collect();
        all.sort();
        all.dedup();
        if all.len() > ACCEPTORS_MAX {
            return Err(Error::Config { reason: "a joint configuration over ACCEPTORS_MAX acceptors" });
        }
        Ok(Voters { sets: vec![old, new], all, quorum_override: None })
    }

    /// BREAKS SAFETY (see [`crate::ProposerConfig::with_broken_quorum_for_simulation`]).
    pub(crate) fn with_quorum_override(mut self, quorum: Option<usize>) -> Result<Self, Error> {
        if let Some(q) = quorum {
            if q == 0 || q > self.all.len() || self.sets.len() != 1 {
                return Err(Error::Config { reason: "quorum override out of range" });
            }
        }
        self.quorum_override = quorum;
        Ok(self)
    }

    /// Every acceptor that votes, in either set.
    pub fn all(&self) -> &[NodeId] {
        &self.all
    }

    /// The sets: one, or the old and the new during a change.
    pub fn sets(&self) -> &[Vec<NodeId>] {
        &self.sets
    }

    pub fn is_joint(&self) -> bool {
        self.sets.len() > 1
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.all.binary_search(&id).is_ok()
    }

    fn needed(&self, set: &[NodeId]) -> usize {
        self.quorum_override.unwrap_or(set.len() / 2 + 1)
    }

    /// True when `ids` (distinct acceptors) hold a majority of every set.
    pub fn is_quorum(&self, ids: &[NodeId]) -> bool {
        self.sets.iter().all(|set| ids.iter().filter(|id| set.binary_search(id).is_ok()).count() >= self.needed(set))
    }

    /// True when `have`, joined by the acceptors for which `possible` holds, could still make a
    /// quorum.
    pub fn reachable(&self, have: &[NodeId], possible: impl Fn(NodeId) -> bool) -> bool {
        self.sets.iter().all(|set| {
            let n = set.iter().filter(|id| have.contains(id) || possible(**id)).count();
            n >= self.needed(set)
        })
    }

    /// When the acceptors for which `alive` holds cannot make a quorum: how many of the set that
    /// falls short are alive, and how many it needs.
    pub fn shortfall(&self, alive: impl Fn(NodeId) -> bool) -> Option<(usize, usize)> {
        self.sets.iter().find_map(|set| {
            let n = set.iter().filter(|id| alive(**id)).count();
            let needed = self.needed(set);
            (n < needed).then_some((n, needed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|i| NodeId(*i)).collect()
    }

    #[test]
    fn a_single_set_needs_a_majority() {
        let v = Voters::single(&ids(&[3, 1, 2])).unwrap();
        assert_eq!(v.all(), &ids(&[1, 2, 3])[..]);
        assert!(!v.is_quorum(&ids(&[1])));
        assert!(v.is_quorum(&ids(&[1, 3])));
        assert!(!v.is_quorum(&ids(&[1, 9])), "a stranger does not count");
        assert!(v.reachable(&ids(&[1]), |id| id == NodeId(2)));
        assert!(!v.reachable(&ids(&[1]), |_| false));
        assert_eq!(v.shortfall(|id| id == NodeId(1)), Some((1, 2)));
        assert_eq!(v.shortfall(|_| true), None);
        assert!(Voters::single(&[]).is_err());
        assert!(Voters::single(&ids(&[1, 1])).is_err());
    }

    #[test]
    fn a_joint_configuration_needs_a_majority_of_each_set() {
        // Adding 4 to {1,2,3}: 2 of the old three and 3 of the new four.
        let add = Voters::joint(&ids(&[1, 2, 3]), &ids(&[1, 2, 3, 4])).unwrap();
        assert!(add.is_joint());
        assert_eq!(add.all(), &ids(&[1, 2, 3, 4])[..]);
        assert!(!add.is_quorum(&ids(&[1, 2])), "2 of 4 is not a majority of the new set");
        assert!(!add.is_quorum(&ids(&[1, 4, 9])));
        assert!(add.is_quorum(&ids(&[1, 2, 4])));
        assert!(!add.is_quorum(&ids(&[3, 4])));
        // Removing 3 from {1,2,3}: both of {1,2}.
        let remove = Voters::joint(&ids(&[1, 2, 3]), &ids(&[1, 2])).unwrap();
        assert!(!remove.is_quorum(&ids(&[1, 3])));
        assert!(remove.is_quorum(&ids(&[1, 2])));
        assert_eq!(remove.shortfall(|id| id != NodeId(2)), Some((1, 2)), "the new set falls short");
        // Replacing 3 (old identity 3, new identity 103): the old set needs 1 and 2.
        let replace = Voters::joint(&ids(&[1, 2, 3]), &ids(&[1, 2, 103])).unwrap();
        assert!(!replace.is_quorum(&ids(&[1, 103])));
        assert!(replace.is_quorum(&ids(&[1, 2])));
        assert!(!replace.reachable(&ids(&[1]), |id| id == NodeId(103)));
    }

    #[test]
    fn every_quorum_of_a_joint_configuration_meets_every_quorum_of_each_of_its_sets() {
        let old = ids(&[1, 2, 3]);
        let new = ids(&[2, 3, 4, 5]);
        let joint = Voters::joint(&old, &new).unwrap();
        let all = joint.all().to_vec();
        let subsets: Vec<Vec<NodeId>> = (0u32..1 << all.len())
            .map(|mask| all.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, id)| *id).collect())
            .collect();
        for side in [Voters::single(&old).unwrap(), Voters::single(&new).unwrap(), joint.clone()] {
            for a in subsets.iter().filter(|s| joint.is_quorum(s)) {
                for b in subsets.iter().filter(|s| side.is_quorum(s)) {
                    assert!(a.iter().any(|id| b.contains(id)), "{a:?} and {b:?} do not meet");
                }
            }
        }
    }
}
