//! Node ids and ballots. A ballot is `(counter, node)`, ordered by counter first and node id
//! second, so two proposers never share a ballot and every pair of ballots is comparable.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The id of a node (proposer or acceptor). Ballots embed it, so ids must be unique per cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A Paxos ballot. The derived order is lexicographic on `(counter, node)` (field order matters).
/// [`Ballot::ZERO`] means "nothing promised / nothing accepted"; proposers never use counter 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub counter: u64,
    pub node: NodeId,
}

impl Ballot {
    /// Below every ballot a proposer can use.
    pub const ZERO: Ballot = Ballot { counter: 0, node: NodeId(0) };

    pub const fn new(counter: u64, node: NodeId) -> Self {
        Ballot { counter, node }
    }

    /// The next ballot of the same node: the ballot an acceptor implicitly promises when it accepts
    /// `self` (see the one-round-trip argument in `docs/paxos.md`). `None` when the counter is exhausted.
    pub fn successor(self) -> Option<Ballot> {
        self.counter.checked_add(1).map(|counter| Ballot { counter, node: self.node })
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.counter, self.node.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ballot() -> impl Strategy<Value = Ballot> {
        (0u64..4, 0u64..4).prop_map(|(c, n)| Ballot::new(c, NodeId(n)))
    }

    proptest! {
        #[test]
        fn order_is_lexicographic_counter_then_node(a in ballot(), b in ballot()) {
            let expected = (a.counter, a.node.0).cmp(&(b.counter, b.node.0));
            prop_assert_eq!(a.cmp(&b), expected);
            prop_assert_eq!(a == b, a.counter == b.counter && a.node == b.node);
        }

        #[test]
        fn order_is_total_and_transitive(a in ballot(), b in ballot(), c in ballot()) {
            prop_assert!(a <= b || b <= a);
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
        }

        #[test]
        fn successor_is_greater_and_outranks_every_node_at_the_same_counter(a in ballot(), other in 0u64..u64::MAX) {
            let s = a.successor().expect("small counters have successors");
            prop_assert!(s > a);
            prop_assert!(s > Ballot::new(a.counter, NodeId(other)));
            prop_assert!(Ballot::ZERO <= a);
        }
    }

    #[test]
    fn successor_of_the_last_counter_is_none() {
        assert_eq!(Ballot::new(u64::MAX, NodeId(1)).successor(), None);
    }
}
