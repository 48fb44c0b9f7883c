//! The acceptor: one CASPaxos register per key, a pure state machine.
//!
//! # The durability contract
//! [`Acceptor::handle`] updates the in-memory state at once and returns an [`AcceptorOutput`].
//! When it carries a [`DurableWrite`], the runtime must make that write durable (fsync) before
//! it sends the reply, and, because a later reply may rest on an earlier unpersisted change (a
//! duplicate prepare, say), it must release replies in the order `handle` produced them, each
//! only once every write produced before or with it is durable. Group commit satisfies this:
//! persist a batch of writes with one fsync, then send that batch's replies. If the process
//! crashes first, the unsent replies die with it and the acceptor restarts from its durable
//! state ([`Acceptor::restore`]), so no promise is ever broken. The acceptor must never be used
//! as a cache of unpersisted state by anything else.
//!
//! # Ballot bounds
//! A request whose ballot counter is above the [`CounterCeiling`] the runtime passes in is
//! refused (a [`Reply::Nack`] carrying the current promise), as is an accept whose implicit
//! promise of the successor would be; such a request changes nothing, so no message,
//! however forged, can push a register toward the end of the counter space.
//!
//! The acceptor never decreases `promised` or `accepted`, and never accepts below its promise:
//! every state change goes through [`Acceptor::advance`], which asserts it (and the property
//! tests check it from outside).

use crate::ballot::{Ballot, CounterCeiling};
use crate::change::{Key, Value};
use crate::message::{Reply, Request};
use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The durable state of one register. Invariant: `promised >= accepted`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterState {
    /// Ballots below this are refused.
    pub promised: Ballot,
    /// The ballot of `value` (`Ballot::ZERO` if nothing was ever accepted).
    pub accepted: Ballot,
    /// The accepted value; `None` is absent or a tombstone.
    pub value: Value,
    /// The accepted ballot of the value `value` was computed from. It lets a proposer whose
    /// change was sent but not confirmed tell whether another proposer built on its value.
    pub base: Ballot,
}

/// A register state that must be durable before the reply that comes with it is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableWrite {
    pub key: Key,
    pub state: RegisterState,
}

/// Checks a durable register before it is served: `promised >= accepted >= base`, which only
/// corruption breaks, and a promise within `ceiling` ([`Error::AboveCeiling`]: left by a forged
/// message before ballots were bounded).
pub fn check_register(state: &RegisterState, ceiling: CounterCeiling) -> Result<(), Error> {
    if !ceiling.allows(state.promised) {
        return Err(Error::AboveCeiling { counter: state.promised.counter, ceiling: ceiling.counter() });
    }
    if state.promised < state.accepted {
        return Err(Error::CorruptState { reason: "register promised below its accepted ballot" });
    }
    if state.base > state.accepted {
        return Err(Error::CorruptState { reason: "register value derived from a later ballot" });
    }
    Ok(())
}

/// What handling one request produced.
#[must_use = "a reply must be sent, and a durable write persisted before it"]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptorOutput {
    /// Send this reply (after every write produced earlier is durable: replies stay in order).
    Reply(Reply),
    /// Persist `write`, then send `reply`. Never send `reply` if persisting failed.
    PersistThenReply { write: DurableWrite, reply: Reply },
}

impl AcceptorOutput {
    /// The write to persist first, if any, and the reply to send after it.
    pub fn into_parts(self) -> (Option<DurableWrite>, Reply) {
        match self {
            AcceptorOutput::Reply(reply) => (None, reply),
            AcceptorOutput::PersistThenReply { write, reply } => (Some(write), reply),
        }
    }
}

/// All registers of one node.
#[derive(Clone, Debug, Default)]
pub struct Acceptor {
    registers: BTreeMap<Key, RegisterState>,
    /// The highest promise of any register this acceptor removed ([`Acceptor::collect`]): a key
    /// without a register is promised this, so a delayed message from before a collection is
    /// refused as the removed register would have refused it.
    floor: Ballot,
}

impl Acceptor {
    /// An acceptor with no registers (a fresh node).
    pub fn new() -> Self {
        Acceptor::default()
    }

    /// Rebuilds an acceptor from its durable state after a restart. Refuses a state that breaks
    /// `promised >= accepted`, which only corruption can produce, and a register whose promise is
    /// above `ceiling` ([`Error::AboveCeiling`]: left by a forged message before ballots were
    /// bounded; serving it would answer "counter exhausted" for the key forever).
    pub fn restore(
        durable: impl IntoIterator<Item = (Key, RegisterState)>,
        ceiling: CounterCeiling,
    ) -> Result<Self, Error> {
        let mut registers = BTreeMap::new();
        for (key, state) in durable {
            check_register(&state, ceiling)?;
            registers.insert(key, state);
        }
        Ok(Acceptor { registers, floor: Ballot::ZERO })
    }

    /// Sets the collected floor read back from durable state after a restart (see
    /// [`Acceptor::collect`]); refused above `ceiling` like a register's promise.
    pub fn with_floor(mut self, floor: Ballot, ceiling: CounterCeiling) -> Result<Self, Error> {
        if !ceiling.allows(floor) {
            return Err(Error::AboveCeiling { counter: floor.counter, ceiling: ceiling.counter() });
        }
        self.floor = floor;
        Ok(self)
    }

    /// The collected floor: what a key without a register is promised.
    pub fn floor(&self) -> Ballot {
        self.floor
    }

    /// Raises the floor to `floor` (a membership change hands a new member the floor of the
    /// members it joins, so a key they collected is no more writable at low ballots here than
    /// there). Answers whether it rose; one above `ceiling` is refused and changes nothing.
    pub fn raise_floor(&mut self, floor: Ballot, ceiling: CounterCeiling) -> bool {
        if floor <= self.floor || !ceiling.allows(floor) {
            return false;
        }
        self.floor = floor;
        true
    }

    /// What a key without a register stands for: nothing accepted, the floor promised.
    fn absent(&self) -> RegisterState {
        RegisterState { promised: self.floor, ..RegisterState::default() }
    }

    /// Tombstone collection: removes `key`'s register if it is a tombstone accepted at exactly
    /// `accepted`, raising the floor to its promise. Answers the new floor when it removed the
    /// register; the runtime must then persist the removal and the floor together, atomically,
    /// before anything that depends on them (a later reply in the same batch) is sent. The
    /// caller's obligation (docs/paxos.md, "Tombstone collection"): every voter holds this
    /// tombstone at this ballot, or has no register and a floor above it.
    pub fn collect(&mut self, key: &[u8], accepted: Ballot) -> Option<Ballot> {
        let state = self.registers.get(key)?;
        if state.value.is_some() || state.accepted != accepted || accepted == Ballot::ZERO {
            return None;
        }
        let promised = state.promised;
        self.registers.remove(key);
        self.floor = self.floor.max(promised);
        Some(self.floor)
    }

    /// Handles one request, refusing it when its ballot is above `ceiling` (module docs). See
    /// the module docs for when the reply may be sent.
    pub fn handle(&mut self, request: Request, ceiling: CounterCeiling) -> AcceptorOutput {
        // An accept also promises its ballot's successor, which must be within the ceiling too.
        let highest_promised = match &request {
            Request::Accept { ballot, .. } => ballot.successor(),
            Request::Prepare { ballot, .. } | Request::Peek { ballot, .. } => Some(*ballot),
        };
        if !highest_promised.is_some_and(|b| ceiling.allows(b)) {
            let promised = self.registers.get(request.key()).map_or(self.floor, |s| s.promised);
            let ballot = request.ballot();
            let key = match request {
                Request::Prepare { key, .. } | Request::Accept { key, .. } | Request::Peek { key, .. } => key,
            };
            return AcceptorOutput::Reply(Reply::Nack { key, ballot, promised });
        }
        match request {
            Request::Prepare { key, ballot } => {
                let current = self.registers.get(&key).cloned().unwrap_or_else(|| self.absent());
                if ballot > current.promised {
                    let before = (current.promised, current.accepted);
                    let state = RegisterState { promised: ballot, ..current };
                    let reply = Reply::Promise {
                        key: key.clone(),
                        ballot,
                        accepted: state.accepted,
                        value: state.value.clone(),
                        base: state.base,
                    };
                    self.advance(&key, before, &state);
                    AcceptorOutput::PersistThenReply { write: DurableWrite { key, state }, reply }
                } else {
                    AcceptorOutput::Reply(Reply::Nack { key, ballot, promised: current.promised })
                }
            }
            Request::Accept { key, ballot, value, base } => {
                // Only the ballots: the old value is replaced, never read.
                let (promised, accepted) =
                    self.registers.get(&key).map_or((self.floor, Ballot::ZERO), |s| (s.promised, s.accepted));
                if ballot == accepted && ballot != Ballot::ZERO {
                    // A duplicate of an accept we already took: one value per ballot, so say so again.
                    return AcceptorOutput::Reply(Reply::Accepted { key, ballot });
                }
                // An honest proposer's value is always derived from a lower ballot; a malformed
                // accept is refused rather than stored (it would make the state unrestorable).
                if ballot >= promised && ballot > accepted && base < ballot {
                    // Accepting `ballot` also promises its successor: the piggybacked prepare.
                    let next_promise = ballot.successor().unwrap_or(ballot);
                    let state = RegisterState { promised: next_promise, accepted: ballot, value, base };
                    self.advance(&key, (promised, accepted), &state);
                    let reply = Reply::Accepted { key: key.clone(), ballot };
                    AcceptorOutput::PersistThenReply { write: DurableWrite { key, state }, reply }
                } else {
                    AcceptorOutput::Reply(Reply::Nack { key, ballot, promised })
                }
            }
            Request::Peek { key, ballot } => {
                // No state change, so no write; the reply still waits for every earlier write
                // to be durable (replies leave in order), so it never reports an accept that a
                // crash could take back.
                let current = self.registers.get(&key);
                let (accepted, value) = current.map_or((Ballot::ZERO, None), |s| (s.accepted, s.value.clone()));
                AcceptorOutput::Reply(Reply::Peeked { key, ballot, accepted, value })
            }
        }
    }

    /// Stores the next state of a register, asserting that it moves forward: the promise and
    /// the accepted ballot never go back, a new accept is at or above the promise it replaces,
    /// and the state stays restorable (`promised >= accepted >= base`).
    /// `before` is the register's `(promised, accepted)` until now.
    fn advance(&mut self, key: &Key, before: (Ballot, Ballot), after: &RegisterState) {
        let (promised, accepted) = before;
        assert!(after.promised >= promised, "promise moved back from {promised} to {}", after.promised);
        assert!(after.accepted >= accepted, "accepted moved back from {accepted} to {}", after.accepted);
        if after.accepted != accepted {
            assert!(after.accepted >= promised, "accepted {} below the promise {promised}", after.accepted);
        }
        assert!(after.promised >= after.accepted, "promised {} below accepted {}", after.promised, after.accepted);
        assert!(after.base <= after.accepted, "value at {} derived from a later {}", after.accepted, after.base);
        self.registers.insert(key.clone(), after.clone());
    }

    /// Takes a register's durable state read back from storage, for a key this acceptor does
    /// not hold in memory (the runtime keeps only some registers in memory and loads the others
    /// before the requests that name them). A state already held wins: it is at least as new.
    pub fn load(&mut self, key: Key, state: RegisterState) {
        self.registers.entry(key).or_insert(state);
    }

    /// Forgets a register held in memory. Only for one whose state is durable (the runtime's
    /// register cache evicts after a group commit): it must be loaded again before a request
    /// names the key.
    pub fn evict(&mut self, key: &[u8]) {
        self.registers.remove(key);
    }

    /// True when the register is held in memory.
    pub fn holds(&self, key: &[u8]) -> bool {
        self.registers.contains_key(key)
    }

    /// The register's state, if this acceptor has ever touched the key.
    pub fn register(&self, key: &[u8]) -> Option<&RegisterState> {
        self.registers.get(key)
    }

    /// The locally accepted value: a stale read (`READONLY`, `?consistency=stale`), not linearizable.
    pub fn stale_read(&self, key: &[u8]) -> Value {
        self.registers.get(key).and_then(|s| s.value.clone())
    }

    /// Number of registers, tombstones included.
    pub fn len(&self) -> usize {
        self.registers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.registers.is_empty()
    }

    /// All registers in key order (for scans and snapshots).
    pub fn registers(&self) -> impl Iterator<Item = (&Key, &RegisterState)> {
        self.registers.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ballot::NodeId;

    const C: CounterCeiling = CounterCeiling::at_unix_ms(0);
    use proptest::prelude::*;

    fn b(c: u64, n: u64) -> Ballot {
        Ballot::new(c, NodeId(n))
    }

    #[test]
    fn a_collected_tombstone_leaves_a_floor_that_refuses_what_the_register_refused() {
        let mut a = Acceptor::new();
        let k = || b"k".to_vec();
        let _ = a.handle(Request::Prepare { key: k(), ballot: b(1, 1) }, C);
        let _ = a.handle(Request::Accept { key: k(), ballot: b(1, 1), value: Some(b"v".to_vec()), base: b(0, 0) }, C);
        let _ = a.handle(Request::Prepare { key: k(), ballot: b(3, 2) }, C);
        let _ = a.handle(Request::Accept { key: k(), ballot: b(3, 2), value: None, base: b(1, 1) }, C);
        // A live value, or a tombstone at another ballot, is never collected.
        assert_eq!(a.collect(b"k", b(1, 1)), None);
        assert_eq!(a.collect(b"none", b(3, 2)), None);
        let _ = a.handle(Request::Prepare { key: k(), ballot: b(5, 1) }, C);
        assert_eq!(a.collect(b"k", b(3, 2)), Some(b(5, 1)), "the floor is the register's promise");
        assert!(a.register(b"k").is_none());
        // The delayed accept of the old value, and old prepares, are refused.
        let old = Request::Accept { key: k(), ballot: b(1, 1), value: Some(b"v".to_vec()), base: b(0, 0) };
        assert!(matches!(a.handle(old, C).into_parts(), (None, Reply::Nack { promised, .. }) if promised == b(5, 1)));
        assert!(matches!(
            a.handle(Request::Prepare { key: k(), ballot: b(4, 9) }, C).into_parts(),
            (None, Reply::Nack { .. })
        ));
        // The proposer that was promised b(5, 1) can still accept, and a higher prepare starts afresh.
        let theirs = Request::Accept { key: k(), ballot: b(5, 1), value: Some(b"new".to_vec()), base: b(3, 2) };
        assert!(matches!(a.handle(theirs, C).into_parts(), (Some(_), Reply::Accepted { .. })));
        let (_, reply) = a.handle(Request::Prepare { key: b"other".to_vec(), ballot: b(6, 1) }, C).into_parts();
        assert!(matches!(reply, Reply::Promise { accepted: Ballot::ZERO, value: None, .. }));
        // The floor comes back after a restart, bounded like any promise.
        let back = Acceptor::restore([], C).unwrap().with_floor(b(5, 1), C).unwrap();
        assert_eq!(back.floor(), b(5, 1));
        assert!(Acceptor::restore([], C).unwrap().with_floor(b(u64::MAX, 1), C).is_err());
        // A floor handed over by a membership change is bounded the same way, and never lowers.
        let mut raised = Acceptor::restore([], C).unwrap().with_floor(b(5, 1), C).unwrap();
        assert!(!raised.raise_floor(b(u64::MAX, 1), C), "a forged floor is refused");
        assert!(!raised.raise_floor(b(4, 1), C));
        assert!(raised.raise_floor(b(7, 2), C));
        assert_eq!(raised.floor(), b(7, 2));
    }

    #[test]
    fn prepare_promises_once_and_reports_accepted() {
        let mut a = Acceptor::new();
        let out = a.handle(Request::Prepare { key: b"k".to_vec(), ballot: b(1, 1) }, C);
        let (write, reply) = out.into_parts();
        assert_eq!(write.unwrap().state.promised, b(1, 1));
        assert_eq!(
            reply,
            Reply::Promise {
                key: b"k".to_vec(),
                ballot: b(1, 1),
                accepted: Ballot::ZERO,
                value: None,
                base: Ballot::ZERO
            }
        );
        // The same or a lower ballot is refused and nothing is written.
        for ballot in [b(1, 1), b(1, 0)] {
            let (write, reply) = a.handle(Request::Prepare { key: b"k".to_vec(), ballot }, C).into_parts();
            assert!(write.is_none());
            assert_eq!(reply, Reply::Nack { key: b"k".to_vec(), ballot, promised: b(1, 1) });
        }
    }

    #[test]
    fn accept_promises_the_successor_and_duplicates_are_idempotent() {
        let mut a = Acceptor::new();
        let _ = a.handle(Request::Prepare { key: b"k".to_vec(), ballot: b(1, 1) }, C);
        let accept = Request::Accept { key: b"k".to_vec(), ballot: b(1, 1), value: Some(b"v".to_vec()), base: b(0, 0) };
        let (write, reply) = a.handle(accept.clone(), C).into_parts();
        assert_eq!(
            write.unwrap().state,
            RegisterState { promised: b(2, 1), accepted: b(1, 1), value: Some(b"v".to_vec()), base: b(0, 0) }
        );
        assert_eq!(reply, Reply::Accepted { key: b"k".to_vec(), ballot: b(1, 1) });
        let (write, reply) = a.handle(accept, C).into_parts();
        assert!(write.is_none());
        assert_eq!(reply, Reply::Accepted { key: b"k".to_vec(), ballot: b(1, 1) });
        // Another node's prepare at the same counter is below the implicit promise.
        let (_, reply) = a.handle(Request::Prepare { key: b"k".to_vec(), ballot: b(1, 9) }, C).into_parts();
        assert!(matches!(reply, Reply::Nack { promised, .. } if promised == b(2, 1)));
        // The fast-path accept at the successor is taken without a prepare.
        let (_, reply) = a
            .handle(Request::Accept { key: b"k".to_vec(), ballot: b(2, 1), value: None, base: b(1, 1) }, C)
            .into_parts();
        assert!(matches!(reply, Reply::Accepted { .. }));
        assert_eq!(a.stale_read(b"k"), None);
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn a_higher_prepare_takes_the_key_over_and_the_stale_fast_accept_is_refused() {
        let mut a = Acceptor::new();
        let _ = a.handle(
            Request::Accept { key: b"k".to_vec(), ballot: b(1, 1), value: Some(b"v".to_vec()), base: b(0, 0) },
            C,
        );
        let (_, reply) = a.handle(Request::Prepare { key: b"k".to_vec(), ballot: b(3, 2) }, C).into_parts();
        assert!(matches!(reply, Reply::Promise { accepted, .. } if accepted == b(1, 1)));
        let (write, reply) = a
            .handle(Request::Accept { key: b"k".to_vec(), ballot: b(2, 1), value: None, base: b(1, 1) }, C)
            .into_parts();
        assert!(write.is_none());
        assert_eq!(reply, Reply::Nack { key: b"k".to_vec(), ballot: b(2, 1), promised: b(3, 2) });
    }

    #[test]
    fn a_malformed_accept_is_refused_and_not_stored() {
        let mut a = Acceptor::new();
        let bad = Request::Accept { key: b"k".to_vec(), ballot: b(2, 1), value: None, base: b(2, 1) };
        let (write, reply) = a.handle(bad, C).into_parts();
        assert!(write.is_none());
        assert!(matches!(reply, Reply::Nack { .. }));
        assert!(a.is_empty());
    }

    #[test]
    fn restore_rejects_corrupt_state() {
        let bad = RegisterState { promised: b(1, 1), accepted: b(2, 1), value: None, base: b(0, 0) };
        assert!(matches!(Acceptor::restore([(b"k".to_vec(), bad)], C), Err(Error::CorruptState { .. })));
        let derived_later = RegisterState { promised: b(3, 1), accepted: b(2, 1), value: None, base: b(2, 2) };
        assert!(Acceptor::restore([(b"k".to_vec(), derived_later)], C).is_err());
        let good = RegisterState { promised: b(3, 1), accepted: b(2, 1), value: Some(b"x".to_vec()), base: b(1, 1) };
        let a = Acceptor::restore([(b"k".to_vec(), good.clone())], C).unwrap();
        assert_eq!(a.register(b"k"), Some(&good));
    }

    #[test]
    fn a_ballot_above_the_ceiling_is_refused_and_changes_nothing() {
        let mut a = Acceptor::new();
        let _ = a.handle(Request::Prepare { key: b"k".to_vec(), ballot: b(5, 1) }, C);
        let before = a.register(b"k").cloned();
        let top = C.counter();
        for counter in [top + 1, u64::MAX - 1, u64::MAX] {
            let prepare = Request::Prepare { key: b"k".to_vec(), ballot: b(counter, 9) };
            let (write, reply) = a.handle(prepare, C).into_parts();
            assert!(write.is_none(), "counter {counter}");
            assert_eq!(reply, Reply::Nack { key: b"k".to_vec(), ballot: b(counter, 9), promised: b(5, 1) });
            let accept = Request::Accept { key: b"k".to_vec(), ballot: b(counter, 9), value: None, base: b(0, 0) };
            let (write, reply) = a.handle(accept, C).into_parts();
            assert!(write.is_none());
            assert!(matches!(reply, Reply::Nack { promised, .. } if promised == b(5, 1)));
            let fresh = Request::Prepare { key: b"new".to_vec(), ballot: b(counter, 9) };
            assert_eq!(
                a.handle(fresh, C).into_parts().1,
                Reply::Nack { key: b"new".to_vec(), ballot: b(counter, 9), promised: Ballot::ZERO }
            );
        }
        assert_eq!(a.register(b"k").cloned(), before);
        assert!(a.register(b"new").is_none(), "a refused request creates no register");
        // At the ceiling itself the protocol runs as usual.
        let (write, _) = a.handle(Request::Prepare { key: b"k".to_vec(), ballot: b(top, 9) }, C).into_parts();
        assert_eq!(write.unwrap().state.promised, b(top, 9));
    }

    #[test]
    fn restore_refuses_a_promise_above_the_ceiling() {
        let poisoned = RegisterState { promised: b(u64::MAX, 9), accepted: b(0, 0), value: None, base: b(0, 0) };
        let e = Acceptor::restore([(b"k".to_vec(), poisoned)], C).unwrap_err();
        assert_eq!(e, Error::AboveCeiling { counter: u64::MAX, ceiling: C.counter() });
        assert!(e.to_string().contains("ballot counter ceiling"), "{e}");
    }

    fn request() -> impl Strategy<Value = Request> {
        let top = C.counter();
        let counter =
            prop_oneof![4 => 0u64..6, 1 => prop_oneof![Just(top - 1), Just(top), Just(top + 1), Just(u64::MAX)]];
        let ballot = (counter, 0u64..3).prop_map(|(c, n)| b(c, n));
        let key = prop_oneof![Just(b"a".to_vec()), Just(b"b".to_vec())];
        prop_oneof![
            (key.clone(), ballot.clone()).prop_map(|(key, ballot)| Request::Prepare { key, ballot }),
            ((key, ballot.clone(), proptest::option::of(proptest::collection::vec(0u8..3, 0..3))), ballot)
                .prop_map(|((key, ballot, value), base)| Request::Accept { key, ballot, value, base }),
        ]
    }

    proptest! {
        /// Never promises or accepts below a promise; durable state only moves up; a reply that
        /// changes state always comes with the write that makes it durable.
        #[test]
        fn acceptor_invariants(requests in proptest::collection::vec(request(), 1..60)) {
            let mut a = Acceptor::new();
            let mut durable: BTreeMap<Key, RegisterState> = BTreeMap::new();
            for request in requests {
                let key = request.key().to_vec();
                let before = a.register(&key).cloned().unwrap_or_default();
                let (write, reply) = a.handle(request.clone(), C).into_parts();
                let after = a.register(&key).cloned().unwrap_or_default();
                prop_assert!(after.promised >= before.promised);
                prop_assert!(after.accepted >= before.accepted);
                prop_assert!(after.promised >= after.accepted);
                prop_assert!(after.accepted >= after.base);
                prop_assert!(C.allows(after.promised), "a promise above the ceiling: {}", after.promised);
                match (&request, &reply) {
                    (Request::Prepare { ballot, .. }, Reply::Promise { accepted, .. }) => {
                        prop_assert!(*ballot > before.promised);
                        prop_assert_eq!(*accepted, before.accepted);
                        prop_assert!(write.is_some());
                    }
                    (Request::Accept { ballot, .. }, Reply::Accepted { .. }) => {
                        prop_assert!(*ballot >= before.promised || *ballot == before.accepted);
                        prop_assert_eq!(after.accepted, *ballot);
                    }
                    (req, Reply::Nack { promised, ballot, .. }) => {
                        let malformed = matches!(req, Request::Accept { base, .. } if base >= ballot);
                        let above = match req {
                            Request::Accept { .. } => !ballot.successor().is_some_and(|s| C.allows(s)),
                            _ => !C.allows(*ballot),
                        };
                        prop_assert!(*promised >= *ballot || malformed || above);
                        prop_assert!(write.is_none());
                        prop_assert_eq!(&after, &before);
                    }
                    (req, rep) => prop_assert!(false, "unexpected reply {:?} to {:?}", rep, req),
                }
                match write {
                    Some(w) => {
                        let old = durable.get(&w.key).cloned().unwrap_or_default();
                        prop_assert!(w.state.promised >= old.promised && w.state.accepted >= old.accepted);
                        prop_assert_eq!(&w.state, &after);
                        durable.insert(w.key, w.state);
                    }
                    None => prop_assert_eq!(&after, &before),
                }
            }
            let restored = Acceptor::restore(durable.clone(), C).unwrap();
            for (key, state) in &durable {
                prop_assert_eq!(restored.register(key), Some(state));
                prop_assert_eq!(a.register(key), Some(state));
            }
        }
    }
}
