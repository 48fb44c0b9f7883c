//! A linearizability checker for one register, in the style of Wing & Gong with Lowe's
//! memoisation (as Porcupine does): depth-first search for an order of the operations that
//! respects real time and the register's sequential semantics, never revisiting a
//! (set of linearized operations, register value) pair.
//!
//! Completed operations must all be linearized; pending operations (the client got "may have
//! been applied", or its proposer crashed) may be linearized anywhere after their invocation, or
//! not at all. The register model is `apply_change` itself, each operation applied at the time
//! its proposer stamped on it (so expiry is judged as the cluster judged it): this checks
//! replication, while the change functions have their own unit tests.
//!
//! Revisions are ballot counters, which the model cannot predict: it applies every change at
//! [`MODEL_REVISION`] and compares outcomes with the cluster's revisions replaced by it
//! ([`without_revision`]). [`check_revisions`] checks the revisions themselves.
//!
//! A pending operation that would leave the register as it is never needs to be linearized (it
//! has no outcome to match and no effect), so the search skips it: that keeps histories with
//! many pending reads tractable. Of the pending `ExpireDue`s that would remove the value, only
//! the one judged at the earliest time is tried: each of the others removes it just the same,
//! and stays available for later, where it can do all the earlier one could (a value expired at
//! some time is expired at every later one).

use rampart_paxos::{Change, Outcome, Value};
use std::collections::{BTreeMap, HashSet};

/// One operation on one key. Times are unique, increasing simulation stamps.
#[derive(Clone, Debug)]
pub struct Op {
    pub invoke: u64,
    /// `None`: pending (may or may not have taken effect).
    pub complete: Option<u64>,
    pub change: Change,
    /// `None` exactly when pending.
    pub outcome: Option<Outcome>,
    /// The time the change applies at (Unix ms): its proposer's stamp.
    pub at: u64,
}

/// True when `change` may give the register an expiry (after which outcomes depend on time).
fn sets_expiry(change: &Change) -> bool {
    use rampart_kv::{KeyOp, Ttl};
    matches!(
        change,
        KeyOp::Set { ttl: Ttl::In(_) | Ttl::At(_), .. } | KeyOp::Expire { .. } | KeyOp::GetEx(Ttl::In(_) | Ttl::At(_))
    )
}

/// The earliest expiry (Unix ms) any operation of `history` may give the register, if any may:
/// before it no value of the register can have expired.
pub fn earliest_expiry(history: &[Op]) -> Option<u64> {
    use rampart_kv::{KeyOp, Ttl};
    history
        .iter()
        .filter_map(|op| match &op.change {
            KeyOp::Set { ttl, .. } | KeyOp::Expire { ttl, .. } | KeyOp::GetEx(ttl) => match ttl {
                Ttl::In(ms) => Some((op.at as i64).saturating_add(*ms)),
                Ttl::At(at) => Some(*at),
                Ttl::Clear | Ttl::Keep => None,
            },
            _ => None,
        })
        .min()
        .map(|at| at.max(0) as u64)
}

/// Beyond this many distinct search states the checker gives up (reported, never a pass).
pub const SEARCH_STATES_MAX: usize = 1_000_000;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    Violation,
    Inconclusive,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
}

struct Search<'a> {
    ops: &'a [Op],
    memo: HashSet<(Bits, Value)>,
    completed_left: usize,
    exhausted: bool,
    /// No operation can set an expiry: outcomes do not depend on the time an op applies at.
    timeless: bool,
}

/// The revision the model applies every change at (any nonzero one would do).
pub const MODEL_REVISION: u64 = 1;

/// `outcome` of `change` as the model computes it, whatever revision the cluster gave it: a
/// read's envelope at [`MODEL_REVISION`], and a write's `current_revision` at it too, or 0 (the
/// key was absent), which the model does predict.
pub fn without_revision(change: &Change, outcome: Outcome) -> Outcome {
    match (change, outcome) {
        (Change::Read, Outcome::Value(Some(raw))) => {
            let d = rampart_paxos::decode_register_value(&raw).expect("a chosen envelope");
            Outcome::Value(Some(rampart_paxos::encode_register_value(d.value, d.expires_at, MODEL_REVISION)))
        }
        (_, Outcome::Written { written, old, current_revision }) => {
            Outcome::Written { written, old, current_revision: current_revision.min(MODEL_REVISION) }
        }
        (_, other) => other,
    }
}

/// Checks one key's history, starting from an absent value.
pub fn check(history: &[Op]) -> Verdict {
    let mut ops: Vec<Op> = history
        .iter()
        .map(|op| Op { outcome: op.outcome.clone().map(|o| without_revision(&op.change, o)), ..op.clone() })
        .collect();
    ops.sort_by_key(|op| op.invoke);
    let completed = ops.iter().filter(|op| op.complete.is_some()).count();
    let timeless = !ops.iter().any(|op| sets_expiry(&op.change));
    let mut search = Search { ops: &ops, memo: HashSet::new(), completed_left: completed, exhausted: false, timeless };
    let mut linearized = Bits::new(ops.len());
    if search.dfs(&mut linearized, None) {
        Verdict::Linearizable
    } else if search.exhausted {
        Verdict::Inconclusive
    } else {
        Verdict::Violation
    }
}

impl Search<'_> {
    /// True when another pending `ExpireDue` that may go next would also remove the value and is
    /// judged earlier than operation `i` (ties: invoked earlier).
    fn earlier_expiry(&self, linearized: &Bits, state: &Value, horizon: u64, i: usize) -> bool {
        let op = &self.ops[i];
        (0..self.ops.len()).any(|j| {
            let other = &self.ops[j];
            j != i
                && !linearized.get(j)
                && other.complete.is_none()
                && other.change == Change::ExpireDue
                && other.invoke < horizon
                && (other.at, j) < (op.at, i)
                && rampart_paxos::apply_change(&other.change, state, other.at, MODEL_REVISION).0 != *state
        })
    }

    fn dfs(&mut self, linearized: &mut Bits, state: Value) -> bool {
        if self.completed_left == 0 {
            return true;
        }
        // The next operation must have been invoked before every unlinearized completed one returned.
        let horizon = (0..self.ops.len())
            .filter(|&i| !linearized.get(i))
            .filter_map(|i| self.ops[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.ops.len() {
            let op = &self.ops[i];
            if op.invoke >= horizon {
                break;
            }
            if linearized.get(i) {
                continue;
            }
            // Symmetry: pending operations with the same change are interchangeable, except that
            // an earlier-invoked one may go anywhere a later one may. Only ever take the earliest
            // unlinearized one of each such class; any linearization can be rearranged that way.
            // With expiry in play, ops are interchangeable only if they also apply at one time.
            let same = |other: &Op| other.change == op.change && (self.timeless || other.at == op.at);
            if op.complete.is_none()
                && (0..i).any(|j| !linearized.get(j) && self.ops[j].complete.is_none() && same(&self.ops[j]))
            {
                continue;
            }
            let (next, outcome) = rampart_paxos::apply_change(&op.change, &state, op.at, MODEL_REVISION);
            if op.outcome.as_ref().is_some_and(|expected| *expected != outcome) {
                continue;
            }
            if op.complete.is_none() && next == state {
                continue;
            }
            if op.complete.is_none()
                && op.change == Change::ExpireDue
                && self.earlier_expiry(linearized, &state, horizon, i)
            {
                continue;
            }
            linearized.flip(i);
            if self.memo.len() >= SEARCH_STATES_MAX {
                self.exhausted = true;
                linearized.flip(i);
                return false;
            }
            if self.memo.insert((linearized.clone(), next.clone())) {
                let done = op.complete.is_some();
                if done {
                    self.completed_left -= 1;
                }
                let found = self.dfs(linearized, next);
                if done {
                    self.completed_left += 1;
                }
                if found {
                    return true;
                }
            }
            linearized.flip(i);
            if self.exhausted {
                return false;
            }
        }
        false
    }
}

/// What a completed operation told its client about the key's revision: the revision, whether
/// the operation wrote a new value, and the user's value at that revision when the answer says.
struct Seen {
    invoke: u64,
    complete: u64,
    revision: u64,
    wrote: bool,
    value: Option<Vec<u8>>,
}

fn seen(op: &Op) -> Option<Seen> {
    let (complete, outcome) = (op.complete?, op.outcome.as_ref()?);
    let (revision, wrote, value) = match (&op.change, outcome) {
        (Change::Read, Outcome::Value(Some(raw))) => {
            let d = rampart_paxos::decode_register_value(raw).expect("a chosen envelope");
            (d.revision, false, Some(d.value.to_vec()))
        }
        (Change::Set { value, .. }, Outcome::Written { written: true, current_revision, .. }) => {
            (*current_revision, true, Some(value.clone()))
        }
        (_, Outcome::Written { written, current_revision, .. }) => (*current_revision, *written, None),
        _ => return None,
    };
    // Revision 0 is the absent key's: nothing was observed.
    (revision != 0).then_some(Seen { invoke: op.invoke, complete, revision, wrote, value })
}

/// Checks the revisions one key's history observed (reads and write outcomes): an operation that
/// began after another completed never sees a lower revision, one that wrote a new value is
/// answered a revision above every revision seen before it began, and one revision always
/// names one value. `Err` describes the first breach.
pub fn check_revisions(history: &[Op]) -> Result<(), String> {
    let mut seen: Vec<Seen> = history.iter().filter_map(seen).collect();
    seen.sort_by_key(|s| s.complete);
    let mut values: BTreeMap<u64, &[u8]> = BTreeMap::new();
    for b in &seen {
        // The highest revision seen by an operation that completed before `b` began.
        let before = seen.iter().take_while(|a| a.complete < b.invoke).map(|a| a.revision).max().unwrap_or(0);
        if b.revision < before || (b.wrote && b.revision == before) {
            return Err(format!(
                "revision {} (wrote: {}) answered to an operation invoked at {} after revision {before} was seen",
                b.revision, b.wrote, b.invoke
            ));
        }
        if let Some(value) = &b.value {
            match values.insert(b.revision, value) {
                Some(other) if other != value.as_slice() => {
                    return Err(format!("revision {} names two values: {other:?} and {value:?}", b.revision));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        Some(s.as_bytes().to_vec())
    }
    fn op(invoke: u64, complete: u64, change: Change, outcome: Outcome) -> Op {
        Op { invoke, complete: Some(complete), change, outcome: Some(outcome), at: 0 }
    }
    fn set(invoke: u64, complete: u64, value: &str, previous: Value) -> Op {
        op(
            invoke,
            complete,
            set_op(value.as_bytes()),
            Outcome::Written { written: true, old: previous, current_revision: invoke + 100 },
        )
    }
    fn set_op(value: &[u8]) -> Change {
        Change::Set {
            value: value.to_vec(),
            cond: rampart_kv::SetCond::Always,
            return_old: true,
            ttl: rampart_kv::Ttl::Clear,
        }
    }
    fn read(invoke: u64, complete: u64, value: Value) -> Op {
        // A read's outcome is the register's envelope, with the cluster's revision in it.
        let value = value.map(|v| rampart_paxos::encode_register_value(&v, None, invoke + 100));
        op(invoke, complete, Change::Read, Outcome::Value(value))
    }
    fn pending(invoke: u64, change: Change) -> Op {
        Op { invoke, complete: None, change, outcome: None, at: 0 }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [set(1, 2, "a", None), read(3, 4, v("a")), set(5, 6, "b", v("a")), read(7, 8, v("b"))];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        // The read overlaps the set: seeing either value is fine.
        assert_eq!(check(&[set(1, 10, "a", None), read(2, 3, v("a"))]), Verdict::Linearizable);
        assert_eq!(check(&[set(1, 10, "a", None), read(2, 3, None)]), Verdict::Linearizable);
        // Two overlapping sets, and reads that pin their order.
        let h = [set(1, 5, "a", v("b")), set(2, 6, "b", None), read(7, 8, v("a"))];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_a_violation() {
        assert_eq!(check(&[set(1, 2, "a", None), read(3, 4, None)]), Verdict::Violation);
    }

    #[test]
    fn reading_a_value_never_written_is_a_violation() {
        assert_eq!(check(&[set(1, 2, "a", None), read(3, 4, v("zz"))]), Verdict::Violation);
    }

    #[test]
    fn going_back_in_time_is_a_violation() {
        let h = [set(1, 2, "a", None), set(3, 4, "b", v("a")), read(5, 6, v("b")), read(7, 8, v("a"))];
        assert_eq!(check(&h), Verdict::Violation);
    }

    #[test]
    fn lost_increment_is_a_violation() {
        let inc = |i, c, n| op(i, c, Change::IncrBy(1), Outcome::Integer(n));
        assert_eq!(check(&[inc(1, 5, 1), inc(2, 6, 2)]), Verdict::Linearizable);
        assert_eq!(check(&[inc(1, 5, 1), inc(2, 6, 1)]), Verdict::Violation);
    }

    #[test]
    fn pending_operations_may_apply_late_or_never() {
        // A write that may have been applied becomes visible long after it was invoked.
        let h = [pending(1, set_op(b"a")), read(5, 6, None), read(9, 10, v("a"))];
        assert_eq!(check(&h), Verdict::Linearizable);
        // ...or never.
        assert_eq!(check(&[pending(1, set_op(b"a")), read(5, 6, None)]), Verdict::Linearizable);
        // But not before it was invoked.
        assert_eq!(check(&[read(1, 2, v("a")), pending(3, set_op(b"a"))]), Verdict::Violation);
        // And not twice: one pending increment cannot explain a jump of two.
        let h = [pending(1, Change::IncrBy(1)), read(5, 6, v("2"))];
        assert_eq!(check(&h), Verdict::Violation);
    }

    #[test]
    fn many_pending_increments_stay_tractable() {
        // 40 pending increments of three sizes and reads pinning a few sums: without the symmetry
        // reduction this is 2^40 subsets.
        let mut h: Vec<Op> = (0..40).map(|i| pending(i, Change::IncrBy(1 + (i % 3) as i64))).collect();
        h.push(read(100, 101, v("7")));
        h.push(read(102, 103, v("30")));
        assert_eq!(check(&h), Verdict::Linearizable);
        h.push(read(104, 105, v("29")));
        assert_eq!(check(&h), Verdict::Violation, "counters never go down");
    }

    #[test]
    fn a_pending_expiry_removes_only_an_expired_value() {
        let px = |value: &str, ttl: i64| Change::Set {
            value: value.as_bytes().to_vec(),
            cond: rampart_kv::SetCond::Always,
            return_old: true,
            ttl: rampart_kv::Ttl::In(ttl),
        };
        let written = Outcome::Written { written: true, old: None, current_revision: MODEL_REVISION };
        let at = |mut op: Op, at: u64| {
            op.at = at;
            op
        };
        // "a" expires at 110. A write stamped 105 (a clock behind) finds it absent only if an
        // expiry judged at a later time (a read's tombstone, the expirer) came first.
        let h = vec![at(op(1, 2, px("a", 10), written.clone()), 100), at(op(5, 8, set_op(b"b"), written.clone()), 105)];
        assert_eq!(check(&h), Verdict::Violation);
        let mut with_expiry = h.clone();
        with_expiry.push(at(pending(3, Change::ExpireDue), 120));
        assert_eq!(check(&with_expiry), Verdict::Linearizable);
        // An expiry judged before the value's end removes nothing.
        let mut too_early = h;
        too_early.push(at(pending(3, Change::ExpireDue), 109));
        assert_eq!(check(&too_early), Verdict::Violation);
    }

    #[test]
    fn many_pending_expiries_stay_tractable() {
        // A value that expires at 110, pending expiries judged at 100..300 (only those from 110
        // on remove it), and reads that see it gone and then back (another write in between).
        let px = Change::Set {
            value: b"a".to_vec(),
            cond: rampart_kv::SetCond::Always,
            return_old: true,
            ttl: rampart_kv::Ttl::In(10),
        };
        let mut h = vec![Op {
            invoke: 0,
            complete: Some(1),
            change: px.clone(),
            outcome: Some(Outcome::Written { written: true, old: None, current_revision: MODEL_REVISION }),
            at: 100,
        }];
        h.extend((0..60).map(|i| Op { at: 100 + 4 * i, ..pending(2 + i, Change::ExpireDue) }));
        let absent = |invoke, at| Op { at, ..read(invoke, invoke + 1, None) };
        h.push(absent(100, 105));
        h.push(Op {
            at: 105,
            ..op(102, 103, px, Outcome::Written { written: true, old: None, current_revision: MODEL_REVISION })
        });
        h.push(absent(104, 106));
        assert_eq!(check(&h), Verdict::Linearizable);
        // The second write's value lives until 115: no expiry judged before can remove it.
        let kept = h.iter().filter(|op| op.change != Change::ExpireDue || op.at < 115).cloned().collect::<Vec<_>>();
        assert_eq!(check(&kept), Verdict::Violation);
    }

    #[test]
    fn many_pending_reads_stay_tractable() {
        // Pending reads change nothing, so the search never has to place them.
        let mut h: Vec<Op> = (0..200).map(|i| pending(2 * i, Change::Read)).collect();
        h.push(set(1, 1000, "a", None));
        h.push(read(1001, 1002, v("a")));
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn compare_and_set_outcomes_are_checked() {
        let cas =
            |i, c, swapped| op(i, c, Change::Cas { expected: None, new: b"x".to_vec() }, Outcome::Swapped(swapped));
        // Two concurrent create-if-absent: exactly one may win.
        assert_eq!(check(&[cas(1, 5, true), cas(2, 6, false)]), Verdict::Linearizable);
        assert_eq!(check(&[cas(1, 5, true), cas(2, 6, true)]), Verdict::Violation);
    }

    /// A set over `old` answered revision `rev`, and a read that saw `value` at `rev`.
    fn set_at(invoke: u64, complete: u64, value: &str, old: Option<&str>, rev: u64) -> Op {
        let old = old.map(|o| o.as_bytes().to_vec());
        let outcome = Outcome::Written { written: true, old, current_revision: rev };
        op(invoke, complete, set_op(value.as_bytes()), outcome)
    }
    fn read_at(invoke: u64, complete: u64, value: &str, rev: u64) -> Op {
        let envelope = rampart_paxos::encode_register_value(value.as_bytes(), None, rev);
        op(invoke, complete, Change::Read, Outcome::Value(Some(envelope)))
    }

    #[test]
    fn the_model_ignores_the_revisions_it_cannot_predict() {
        // The same sequential history, whatever revisions the cluster gave: linearizable.
        let h = [set_at(1, 2, "a", None, 65_537), read_at(3, 4, "a", 65_537), set_at(5, 6, "b", Some("a"), 70_000)];
        assert_eq!(check(&h), Verdict::Linearizable);
        // A refusal's revision says whether the key existed: that the model does predict.
        let nx = Change::Set {
            value: b"x".to_vec(),
            cond: rampart_kv::SetCond::IfAbsent,
            return_old: false,
            ttl: rampart_kv::Ttl::Clear,
        };
        let refused = |rev| op(3, 4, nx.clone(), Outcome::Written { written: false, old: None, current_revision: rev });
        assert_eq!(check(&[set_at(1, 2, "a", None, 9), refused(9)]), Verdict::Linearizable);
        assert_eq!(check(&[set_at(1, 2, "a", None, 9), refused(0)]), Verdict::Violation);
    }

    #[test]
    fn revisions_that_go_back_or_stand_still_across_a_write_are_caught() {
        let ok =
            [set_at(1, 2, "a", None, 5), read_at(3, 4, "a", 5), set_at(5, 6, "b", Some("a"), 9), read_at(7, 8, "b", 9)];
        assert_eq!(check_revisions(&ok), Ok(()));
        // Overlapping operations may see either order.
        assert_eq!(check_revisions(&[set_at(1, 10, "b", None, 9), read_at(2, 3, "a", 5)]), Ok(()));
        // A later read at a lower revision.
        let back = [set_at(1, 2, "a", None, 5), set_at(3, 4, "b", Some("a"), 9), read_at(5, 6, "b", 8)];
        assert!(check_revisions(&back).unwrap_err().contains("revision 8"));
        // A write that changed the value but kept the revision.
        let still = [set_at(1, 2, "a", None, 5), set_at(3, 4, "b", Some("a"), 5)];
        assert!(check_revisions(&still).is_err());
        // One revision, two values.
        let two = [set_at(1, 2, "a", None, 5), read_at(3, 4, "b", 5)];
        assert!(check_revisions(&two).unwrap_err().contains("two values"));
    }
}
