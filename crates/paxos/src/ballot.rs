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

/// How fast the ballot counter ceiling rises: counters per millisecond of wall-clock time.
/// Legitimate counters grow by one or two per round plus [`crate::COUNTER_BLOCK`] per restart,
/// orders of magnitude below this on average since 1970; at this rate the ceiling reaches
/// `u64::MAX` only some 8,900 years after the epoch (docs/paxos.md, "Ballot bounds").
pub const COUNTER_PER_MS: u64 = 1 << 16;

/// The ceiling at the Unix epoch: what a node whose clock reads 1970 still accepts (about 10^12
/// counters, far above what any real cluster uses). It also absorbs clock skew between members.
pub const COUNTER_CEILING_SLACK: u64 = 1 << 40;

/// The highest ballot counter an acceptor takes and a proposer adopts at a given wall-clock time:
/// [`COUNTER_CEILING_SLACK`] + [`COUNTER_PER_MS`] x milliseconds since the Unix epoch.
///
/// Why it exists: a proposer fast-forwards its counter past every counter it sees, so one
/// message with a counter near `u64::MAX` (a buggy or hostile member) would otherwise exhaust
/// the counter on every node for good. Under the ceiling, whatever any message says, the counter
/// space left is at least what the clock has not yet reached. The core never reads a clock: the
/// runtime computes the ceiling from its own and passes it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterCeiling(u64);

impl CounterCeiling {
    /// The ceiling when the wall clock reads `unix_ms` milliseconds since the Unix epoch.
    pub const fn at_unix_ms(unix_ms: u64) -> Self {
        CounterCeiling(COUNTER_CEILING_SLACK.saturating_add(unix_ms.saturating_mul(COUNTER_PER_MS)))
    }

    /// BREAKS THE BOUND: every counter is allowed. Only for the simulation test that proves its
    /// checker catches a cluster poisoned by one extreme ballot.
    #[doc(hidden)]
    pub const UNBOUNDED_FOR_SIMULATION: CounterCeiling = CounterCeiling(u64::MAX);

    /// The highest counter allowed.
    pub const fn counter(self) -> u64 {
        self.0
    }

    /// True when `ballot`'s counter is at or below the ceiling.
    pub const fn allows(self, ballot: Ballot) -> bool {
        ballot.counter <= self.0
    }
}

impl fmt::Display for CounterCeiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
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
    fn the_ceiling_rises_with_the_clock_and_never_wraps() {
        let epoch = CounterCeiling::at_unix_ms(0);
        assert_eq!(epoch.counter(), COUNTER_CEILING_SLACK);
        // 2026-01-01: about 1.15e17, so nearly all of the u64 space is still above it.
        let now = CounterCeiling::at_unix_ms(1_767_225_600_000);
        assert!(now > epoch && now.counter() < u64::MAX / 100, "{now}");
        assert_eq!(CounterCeiling::at_unix_ms(u64::MAX).counter(), u64::MAX);
        assert!(now.allows(Ballot::new(now.counter(), NodeId(1))));
        assert!(!now.allows(Ballot::new(now.counter() + 1, NodeId(1))));
        assert!(!now.allows(Ballot::new(u64::MAX, NodeId(1))));
        assert!(CounterCeiling::UNBOUNDED_FOR_SIMULATION.allows(Ballot::new(u64::MAX, NodeId(1))));
    }

    #[test]
    fn successor_of_the_last_counter_is_none() {
        assert_eq!(Ballot::new(u64::MAX, NodeId(1)).successor(), None);
    }
}
