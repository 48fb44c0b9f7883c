//! The proposer: runs CASPaxos rounds for many keys on one node.
//!
//! Inputs: [`Proposer::propose`] (a client's change), [`Proposer::on_reply`] (an acceptor's
//! reply) and [`Proposer::on_timer`] (a timer it asked for fired). Outputs: [`ProposerOutput`]s
//! to send, timers to arm and finished proposals. At most one proposal per key is active; later
//! ones on the same key wait their turn (so sequential changes on one key at one node reuse the
//! cached ballot and take one round trip).
//!
//! # Retrying without applying a change twice
//! A change may be retried after its accept was sent (loss, conflict). Its value may then sit at a
//! minority of acceptors and be adopted later by another proposer, so blindly re-applying the
//! change could apply it twice. Every value that contains this change's effect carries a ballot
//! at or above `first_accept`, the first ballot at which it was sent. So on a retry's promise
//! quorum with highest accepted ballot `h`:
//! - `h` is one of this proposal's own accept ballots: the value is ours, re-accept it unchanged
//!   (completing the earlier attempt) and report that attempt's outcome;
//! - `h < first_accept`: the value cannot contain our effect, apply the change afresh;
//! - otherwise we cannot tell: stop with [`Error::Ambiguous`] (may have been applied).
//!
//! Reads are the identity and are always re-applied.
//!
//! # Ballot bounds
//! The counter moves past every counter seen in a reply or a foreign hint, except one above the
//! clock-derived [`CounterCeiling`] at the time it is seen: such a counter can only come from a
//! buggy or hostile peer (acceptors refuse ballots above it), and adopting it could exhaust the
//! counter space. The ceiling's clock is [`ProposerConfig::unix_ms_at_tick_zero`] plus the tick.
//!
//! # Invariants (asserted: a violation is a bug, and the node stops rather than limp on)
//! - Every ballot this proposer sends is its own and at or below the durable counter floor.
//! - Fresh ballots only grow, and so do the ballots of one proposal across its attempts.
//! - An accept's value is derived from a lower ballot (`base < ballot`).
//! - Every proposal finishes exactly once: one [`ProposerOutput::Done`], in the step that ends it.

use crate::ballot::{Ballot, CounterCeiling, NodeId};
use crate::change::{apply_change, Change, Key, Outcome, Value};
use crate::message::{Reply, Request};
use crate::rng::SplitMix64;
use crate::voters::Voters;
use crate::{Error, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Logical time, owned by the runtime (the server uses milliseconds).
pub type Tick = u64;

/// Identifies one client change at one proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId(pub u64);

/// A timer the proposer asked for: call [`Proposer::on_timer`] with it at or after `at`. Stale
/// timers (from a finished attempt) are ignored, so the runtime never needs to cancel one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    pub at: Tick,
    key: Key,
    proposal: ProposalId,
    generation: u64,
}

/// What the runtime must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposerOutput {
    /// Send `request` to acceptor `to`.
    Send { to: NodeId, request: Request },
    /// Call [`Proposer::on_timer`] with this timer at tick `timer.at`.
    WakeAt(Timer),
    /// The proposal finished: answer the client.
    Done { proposal: ProposalId, result: Result<Outcome, Error> },
    /// Durably record `counter` as this node's ballot counter floor, overwriting the previous
    /// one, BEFORE carrying out any output that follows it in the same batch. After a restart,
    /// pass the last recorded floor as [`ProposerConfig::initial_counter`]. This is what stops a
    /// restarted proposer from reusing a ballot of its previous life (two values at one ballot
    /// would break Paxos). Counters are reserved in blocks of [`COUNTER_BLOCK`], so this is rare.
    PersistCounterFloor { counter: u64 },
}

/// How many ballot counters one [`ProposerOutput::PersistCounterFloor`] reserves.
pub const COUNTER_BLOCK: u64 = 1 << 16;

/// The highest durable counter floor a proposer may restart from under `ceiling`: a floor is
/// reserved up to [`COUNTER_BLOCK`] above a counter in use, so it may sit that far above the
/// ceiling it was reserved under. A higher floor came from a counter no bound allows.
pub fn counter_floor_allowed(floor: u64, ceiling: CounterCeiling) -> Result<(), Error> {
    if floor > ceiling.counter().saturating_add(COUNTER_BLOCK) {
        return Err(Error::AboveCeiling { counter: floor, ceiling: ceiling.counter() });
    }
    Ok(())
}

/// Default for [`ProposerConfig::in_flight_max`].
pub const IN_FLIGHT_MAX_DEFAULT: usize = 4096;
/// Values larger than this are not cached (so the cache holds at most
/// `cached_keys_max * CACHED_VALUE_BYTES_MAX` value bytes); their keys take full rounds.
pub const CACHED_VALUE_BYTES_MAX: usize = 16 * 1024;

/// Default for [`ProposerConfig::cached_keys_max`].
pub const CACHED_KEYS_MAX_DEFAULT: usize = 65_536;

/// Most key and value bytes the cache holds, whatever the number of keys: without it,
/// `cached_keys_max` values of up to [`CACHED_VALUE_BYTES_MAX`] could pin 1 GiB.
pub const CACHED_BYTES_MAX: usize = 64 << 20;

fn cached_bytes(key: &[u8], value: &Value) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len)
}

/// Proposer settings. [`ProposerConfig::new`] documents the defaults.
#[derive(Clone, Debug)]
pub struct ProposerConfig {
    /// This proposer's node id, embedded in its ballots; unique in the cluster.
    pub node: NodeId,
    /// The acceptors at start; a quorum is a majority of all of them. A membership change
    /// replaces them with [`Proposer::set_voters`].
    pub acceptors: Vec<NodeId>,
    /// Most attempts (rounds) per change, first included.
    pub attempts_max: u32,
    /// Total time budget of a change from `propose`, in ticks.
    pub budget_ticks: u64,
    /// How long one phase waits for a quorum before it counts as failed.
    pub attempt_timeout_ticks: u64,
    /// Backoff before retry `n` is uniform in `1..=min(backoff_max_ticks, backoff_base_ticks * 2^(n-1))`.
    pub backoff_base_ticks: u64,
    pub backoff_max_ticks: u64,
    /// Most changes active or queued at once; more are refused with [`Error::InFlightLimit`].
    pub in_flight_max: usize,
    /// Most keys whose (ballot, value) is cached for the one-round-trip path; least recently
    /// used keys are evicted (they just take two round trips next time).
    pub cached_keys_max: usize,
    /// The counter to start ballots above: 0 for a brand-new node, else the last floor recorded
    /// through [`ProposerOutput::PersistCounterFloor`]. Safety depends on it: never pass less.
    /// The runtime refuses to start on a floor above [`counter_floor_allowed`] (a poisoned one).
    pub initial_counter: u64,
    /// Seed for retry jitter.
    pub seed: u64,
    /// The wall clock (milliseconds since the Unix epoch) when the tick was 0: the proposer's
    /// ballot ceiling at tick `t` is [`CounterCeiling::at_unix_ms`]`(unix_ms_at_tick_zero + t)`.
    /// 0 (the default) is the tightest setting; the server passes its clock at start.
    pub unix_ms_at_tick_zero: u64,
    quorum_override: Option<usize>,
    ceiling_override: Option<CounterCeiling>,
}

impl ProposerConfig {
    /// Defaults: 8 attempts, a budget of 2000 ticks, 200 ticks per phase, backoff 5..=100 ticks,
    /// [`IN_FLIGHT_MAX_DEFAULT`] in flight, [`CACHED_KEYS_MAX_DEFAULT`] cached keys.
    pub fn new(node: NodeId, acceptors: Vec<NodeId>, seed: u64) -> Self {
        ProposerConfig {
            node,
            acceptors,
            attempts_max: 8,
            budget_ticks: 2000,
            attempt_timeout_ticks: 200,
            backoff_base_ticks: 5,
            backoff_max_ticks: 100,
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            cached_keys_max: CACHED_KEYS_MAX_DEFAULT,
            initial_counter: 0,
            seed,
            unix_ms_at_tick_zero: 0,
            quorum_override: None,
            ceiling_override: None,
        }
    }

    /// BREAKS THE BALLOT BOUND: adopt any counter seen. Only for the simulation test that proves
    /// its checker catches a cluster poisoned by one extreme ballot.
    #[doc(hidden)]
    pub fn with_unbounded_ballots_for_simulation(mut self) -> Self {
        self.ceiling_override = Some(CounterCeiling::UNBOUNDED_FOR_SIMULATION);
        self
    }

    /// The ballot counter ceiling at tick `now`.
    pub fn ceiling_at(&self, now: Tick) -> CounterCeiling {
        self.ceiling_override
            .unwrap_or_else(|| CounterCeiling::at_unix_ms(self.unix_ms_at_tick_zero.saturating_add(now)))
    }

    /// BREAKS SAFETY: proceed after `quorum` replies instead of a majority. Only for the
    /// simulation test that proves the linearizability checker catches a broken protocol.
    #[doc(hidden)]
    pub fn with_broken_quorum_for_simulation(mut self, quorum: usize) -> Self {
        self.quorum_override = Some(quorum);
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A read's first attempt: ask every acceptor what it accepted, without promising.
    Peek,
    Prepare,
    Accept,
    Backoff,
}

#[derive(Debug)]
struct Proposal {
    id: ProposalId,
    /// The time the change applies at (Unix ms, stamped at submission).
    unix_ms: u64,
    change: Change,
    deadline: Tick,
    attempts: u32,
    generation: u64,
    phase: Phase,
    ballot: Ballot,
    granted: Vec<NodeId>,
    refused: Vec<NodeId>,
    /// Highest (accepted ballot, value, base) among this attempt's promises.
    best: (Ballot, Value, Ballot),
    /// A peek's answers so far: each accepted ballot reported, who reported it, its value.
    peeked: Vec<(Ballot, Vec<NodeId>, Value)>,
    /// The value and outcome this attempt's accept carries.
    proposed: Option<(Value, Outcome)>,
    /// Every ballot at which this proposal sent an accept, with the outcome that value implies.
    ours: Vec<(Ballot, Outcome)>,
    first_accept: Option<Ballot>,
    /// A read that may be answered by a peek (false: [`Proposer::propose_settle`]).
    peek: bool,
}

/// A change waiting for its key's active one: id, change, tick it was proposed at, the time it
/// applies at (Unix ms), and whether a read may be answered by a peek.
type Queued = (ProposalId, Change, Tick, u64, bool);

#[derive(Debug)]
struct Cached {
    next: Ballot,
    /// The ballot `value` was accepted at: the base of the next fast accept.
    accepted: Ballot,
    value: Value,
    stamp: u64,
}

enum Flow {
    Continue,
    Finished,
}

/// The proposer of one node. See the module docs.
#[derive(Debug)]
pub struct Proposer {
    config: ProposerConfig,
    voters: Voters,
    counter: u64,
    /// Counters up to this are durably reserved; ballots above need a new reservation first.
    reserved: u64,
    next_id: u64,
    rng: SplitMix64,
    dead: Vec<NodeId>,
    active: HashMap<Key, Proposal>,
    /// Changes waiting for their key's active one.
    queued: HashMap<Key, VecDeque<Queued>>,
    queued_len: usize,
    cache: HashMap<Key, Cached>,
    cache_order: BTreeMap<u64, Key>,
    cache_stamp: u64,
    /// Key and value bytes in `cache` (bounded by [`CACHED_BYTES_MAX`]).
    cache_bytes: usize,
    /// The last fresh ballot made: the next must be above it.
    last_fresh: Ballot,
}

impl Proposer {
    pub fn new(config: ProposerConfig) -> Result<Self, Error> {
        let voters = Voters::single(&config.acceptors)?.with_quorum_override(config.quorum_override)?;
        if config.attempts_max == 0 || config.attempt_timeout_ticks == 0 || config.budget_ticks == 0 {
            return Err(Error::Config { reason: "attempts, timeout and budget must be positive" });
        }
        if config.in_flight_max == 0 {
            return Err(Error::Config { reason: "in_flight_max must be positive" });
        }
        Ok(Proposer {
            voters,
            counter: config.initial_counter,
            reserved: config.initial_counter,
            next_id: 0,
            rng: SplitMix64::new(config.seed),
            dead: Vec::new(),
            active: HashMap::new(),
            queued: HashMap::new(),
            queued_len: 0,
            cache: HashMap::new(),
            cache_order: BTreeMap::new(),
            cache_stamp: 0,
            cache_bytes: 0,
            last_fresh: Ballot::ZERO,
            config,
        })
    }

    /// Who votes now.
    pub fn voters(&self) -> &Voters {
        &self.voters
    }

    /// Moves to another configuration of voters (a step of a membership change, see
    /// `docs/paxos.md`, "Membership changes"). Every cached ballot is dropped: its implicit
    /// promise came from a quorum of the old voters, which need not be one of the new. Every
    /// attempt in flight is abandoned and retried under the new voters, exactly as if it had timed
    /// out (its replies so far counted towards the old quorums); a change whose accept was sent
    /// keeps its provenance, so a retry never applies it twice.
    pub fn set_voters(&mut self, now: Tick, voters: Voters) -> Result<Vec<ProposerOutput>, Error> {
        let voters = voters.with_quorum_override(self.config.quorum_override)?;
        self.voters = voters;
        self.cache.clear();
        self.cache_order.clear();
        self.cache_bytes = 0;
        let mut keys: Vec<Key> = self.active.keys().cloned().collect();
        // Sorted: the simulation needs every step to depend only on its inputs.
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            let Some(mut p) = self.active.remove(&key) else { continue };
            let mark = out.len();
            let flow = match p.phase {
                Phase::Backoff => Flow::Continue,
                Phase::Peek => self.after_peek(now, &key, &mut p, &mut out),
                Phase::Prepare | Phase::Accept => self.retry(now, &key, &mut p, &mut out),
            };
            assert_step(&out[mark..], p.id, &flow);
            self.settle(now, key, p, flow, &mut out);
        }
        Ok(out)
    }

    /// Changes active or queued.
    pub fn in_flight(&self) -> usize {
        self.active.len() + self.queued_len
    }

    /// Keys whose ballot is cached for the one-round-trip path.
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    /// The ballot counter ceiling at tick `now` (see [`ProposerConfig::unix_ms_at_tick_zero`]).
    pub fn ceiling_at(&self, now: Tick) -> CounterCeiling {
        self.config.ceiling_at(now)
    }

    /// The highest ballot counter this proposer has used or seen.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Tells the proposer which acceptors the failure detector calls dead. Requests still go to
    /// them, but a phase fails as soon as a quorum cannot be reached without them, rather than
    /// waiting for its timeout; a change is refused at once when fewer than a quorum are alive.
    pub fn set_dead_peers(&mut self, dead: &[NodeId]) {
        self.dead = dead.to_vec();
    }

    /// A hint that another proposer used `ballot` on `key` (this node's acceptor saw its
    /// message). A cached ballot for the key is then stale: drop it, so the next change on the key
    /// runs a full round rather than a fast accept that the other acceptors would refuse (a
    /// refused fast accept is one the proposer cannot prove was refused everywhere, which can end
    /// a later retry as [`Error::Ambiguous`]). Also moves the ballot counter past `ballot`. Only
    /// ever makes the proposer more conservative, so a late or wrong hint is harmless.
    /// A ballot above the ceiling at `now` is ignored entirely (module docs).
    pub fn observe_foreign(&mut self, now: Tick, key: &[u8], ballot: Ballot) {
        if ballot.node == self.config.node || !self.config.ceiling_at(now).allows(ballot) {
            return;
        }
        self.observe(now, ballot);
        if self.cache.get(key).is_some_and(|c| ballot > c.accepted) {
            let _ = self.take_cached(key);
        }
    }

    /// Starts a change on `key`, applied at the time [`ProposerConfig::unix_ms_at_tick_zero`] `+
    /// now` (see [`Proposer::propose_at`]). Refusals returned here were never applied.
    pub fn propose(&mut self, now: Tick, key: Key, change: Change) -> Result<(ProposalId, Vec<ProposerOutput>), Error> {
        let at = self.config.unix_ms_at_tick_zero.saturating_add(now);
        self.propose_at(now, key, change, at)
    }

    /// Starts a change on `key` that applies at `unix_ms` (the proposer node's clock, Unix ms,
    /// stamped by the runtime when it submits the change): expiry is judged against it, and a
    /// TTL counts from it. The core never reads a clock. Refusals returned here were never
    /// applied.
    pub fn propose_at(
        &mut self,
        now: Tick,
        key: Key,
        change: Change,
        unix_ms: u64,
    ) -> Result<(ProposalId, Vec<ProposerOutput>), Error> {
        let peek = change.is_read();
        self.submit(now, key, change, unix_ms, peek)
    }

    /// A linearizable read of `key` that always runs a full round (prepare, then an accept of
    /// the current value at every voter) instead of the one-round-trip peek: it leaves the
    /// key's value at every voter that answers. A membership change's catch-up uses it so that
    /// new members hold every key, not only a majority of the new set.
    /// It applies at `unix_ms`, like [`Proposer::propose_at`].
    pub fn propose_settle(
        &mut self,
        now: Tick,
        key: Key,
        unix_ms: u64,
    ) -> Result<(ProposalId, Vec<ProposerOutput>), Error> {
        self.submit(now, key, Change::Read, unix_ms, false)
    }

    fn submit(
        &mut self,
        now: Tick,
        key: Key,
        change: Change,
        unix_ms: u64,
        peek: bool,
    ) -> Result<(ProposalId, Vec<ProposerOutput>), Error> {
        if key.len() > KEY_BYTES_MAX {
            return Err(Error::KeyTooLarge { len: key.len(), max: KEY_BYTES_MAX });
        }
        if change.value_bytes() > VALUE_BYTES_MAX {
            return Err(Error::ValueTooLarge { len: change.value_bytes(), max: VALUE_BYTES_MAX });
        }
        if self.in_flight() >= self.config.in_flight_max {
            return Err(Error::InFlightLimit { max: self.config.in_flight_max });
        }
        let id = ProposalId(self.next_id);
        self.next_id += 1;
        let mut out = Vec::new();
        if self.active.contains_key(&key) {
            self.queued.entry(key).or_default().push_back((id, change, now, unix_ms, peek));
            self.queued_len += 1;
        } else {
            self.start(now, key, (id, change, now, unix_ms, peek), &mut out);
        }
        Ok((id, out))
    }

    /// Handles a reply from acceptor `from`. Stale, duplicate and unknown replies are ignored.
    pub fn on_reply(&mut self, now: Tick, from: NodeId, reply: Reply) -> Vec<ProposerOutput> {
        let mut out = Vec::new();
        if !self.voters.contains(from) {
            return out;
        }
        match &reply {
            Reply::Nack { promised, .. } => self.observe(now, *promised),
            Reply::Promise { accepted, .. } | Reply::Peeked { accepted, .. } => self.observe(now, *accepted),
            Reply::Accepted { .. } => {}
        }
        let Some(mut p) = self.active.remove(reply.key()) else { return out };
        let key = reply.key().to_vec();
        let flow = self.handle_reply(now, &key, &mut p, from, reply, &mut out);
        assert_step(&out, p.id, &flow);
        self.settle(now, key, p, flow, &mut out);
        out
    }

    /// Handles a timer returned in [`ProposerOutput::WakeAt`].
    pub fn on_timer(&mut self, now: Tick, timer: Timer) -> Vec<ProposerOutput> {
        let mut out = Vec::new();
        let Some(mut p) = self.active.remove(&timer.key) else { return out };
        if p.id != timer.proposal || p.generation != timer.generation {
            self.active.insert(timer.key, p);
            return out;
        }
        let flow = match p.phase {
            Phase::Backoff => self.attempt(now, &timer.key, &mut p, &mut out),
            // No majority agreed in time: a full round, at once (a peek contends with no one).
            Phase::Peek => self.after_peek(now, &timer.key, &mut p, &mut out),
            Phase::Prepare | Phase::Accept => self.retry(now, &timer.key, &mut p, &mut out),
        };
        assert_step(&out, p.id, &flow);
        self.settle(now, timer.key, p, flow, &mut out);
        out
    }

    /// Moves the counter past `ballot`, unless it is above the ceiling (module docs).
    fn observe(&mut self, now: Tick, ballot: Ballot) {
        if self.config.ceiling_at(now).allows(ballot) {
            self.counter = self.counter.max(ballot.counter);
        }
    }

    /// Starts a change on an idle key, then, while changes on that key finish at once (no
    /// quorum alive, budget spent while queued), the next queued ones. A loop, not recursion, so
    /// a long queue cannot exhaust the stack.
    fn start(&mut self, now: Tick, key: Key, first: Queued, out: &mut Vec<ProposerOutput>) {
        let mut next = Some(first);
        while let Some((id, change, since, unix_ms, peek)) = next.take() {
            let mut p = Proposal {
                id,
                unix_ms,
                change,
                deadline: since.saturating_add(self.config.budget_ticks),
                attempts: 0,
                generation: 0,
                phase: Phase::Backoff,
                ballot: Ballot::ZERO,
                granted: Vec::new(),
                refused: Vec::new(),
                best: (Ballot::ZERO, None, Ballot::ZERO),
                peeked: Vec::new(),
                proposed: None,
                ours: Vec::new(),
                first_accept: None,
                peek,
            };
            let mark = out.len();
            let flow = if now >= p.deadline {
                let error = Error::TimedOut { budget_ticks: self.config.budget_ticks, maybe_applied: false };
                out.push(done(p.id, Err(error)));
                Flow::Finished
            } else {
                self.attempt(now, &key, &mut p, out)
            };
            assert_step(&out[mark..], p.id, &flow);
            match flow {
                Flow::Continue => {
                    self.active.insert(key, p);
                    return;
                }
                Flow::Finished => next = self.pop_queued(&key),
            }
        }
    }

    fn pop_queued(&mut self, key: &[u8]) -> Option<Queued> {
        let queue = self.queued.get_mut(key)?;
        let next = queue.pop_front();
        if queue.is_empty() {
            self.queued.remove(key);
        }
        if next.is_some() {
            self.queued_len -= 1;
        }
        next
    }

    /// Puts an unfinished proposal back, or starts the next queued change on a finished key.
    fn settle(&mut self, now: Tick, key: Key, p: Proposal, flow: Flow, out: &mut Vec<ProposerOutput>) {
        match flow {
            Flow::Continue => {
                self.active.insert(key, p);
            }
            Flow::Finished => {
                if let Some(next) = self.pop_queued(&key) {
                    self.start(now, key, next, out);
                }
            }
        }
    }

    fn arm(&self, now: Tick, key: &[u8], p: &Proposal, delay: Tick, out: &mut Vec<ProposerOutput>) {
        out.push(ProposerOutput::WakeAt(Timer {
            at: now.saturating_add(delay),
            key: key.to_vec(),
            proposal: p.id,
            generation: p.generation,
        }));
    }

    fn broadcast(&self, request: &Request, out: &mut Vec<ProposerOutput>) {
        for &to in self.voters.all() {
            out.push(ProposerOutput::Send { to, request: request.clone() });
        }
    }

    /// Starts one attempt: the fast accept if the key's ballot is cached, else a prepare.
    fn attempt(&mut self, now: Tick, key: &[u8], p: &mut Proposal, out: &mut Vec<ProposerOutput>) -> Flow {
        if let Some((alive, needed)) = self.voters.shortfall(|a| !self.dead.contains(&a)) {
            let error = Error::NoQuorum { alive, needed, maybe_applied: p.first_accept.is_some() };
            out.push(done(p.id, Err(error)));
            return Flow::Finished;
        }
        p.attempts += 1;
        p.generation += 1;
        p.granted.clear();
        p.refused.clear();
        p.best = (Ballot::ZERO, None, Ballot::ZERO);
        p.peeked.clear();
        if p.attempts == 1 && p.change.is_read() && p.peek {
            // A read first asks what a majority accepted; if they all accepted the same ballot,
            // that value is chosen and current, and the read is done in one round trip with no
            // disk write anywhere (docs/paxos.md, "Reads"). The tag ballot is never promised.
            let Some(ballot) = self.fresh_ballot(out) else {
                out.push(done(p.id, Err(self.exhausted(p))));
                return Flow::Finished;
            };
            self.use_ballot(p, ballot);
            p.phase = Phase::Peek;
            p.proposed = None;
            self.broadcast(&Request::Peek { key: key.to_vec(), ballot: p.ballot }, out);
            self.arm(now, key, p, self.config.attempt_timeout_ticks, out);
            return Flow::Continue;
        }
        let cached = if p.attempts == 1 { self.take_cached(key) } else { None };
        if let Some(cached) = cached {
            // One round trip: our last accept promised `cached.next` at a quorum.
            self.counter = self.counter.max(cached.next.counter);
            self.reserve(cached.next.counter, out);
            self.use_ballot(p, cached.next);
            let (value, outcome) = apply_change(&p.change, &cached.value, p.unix_ms, p.ballot.counter);
            self.send_accept(key, p, value, cached.accepted, outcome, out);
        } else {
            let Some(ballot) = self.fresh_ballot(out) else {
                out.push(done(p.id, Err(self.exhausted(p))));
                return Flow::Finished;
            };
            self.use_ballot(p, ballot);
            p.phase = Phase::Prepare;
            p.proposed = None;
            self.broadcast(&Request::Prepare { key: key.to_vec(), ballot: p.ballot }, out);
        }
        self.arm(now, key, p, self.config.attempt_timeout_ticks, out);
        Flow::Continue
    }

    /// The next ballot of this node, above every counter used or seen, reserved durably first.
    /// `None` when the counter is exhausted.
    fn fresh_ballot(&mut self, out: &mut Vec<ProposerOutput>) -> Option<Ballot> {
        let counter = self.counter.checked_add(1)?;
        self.counter = counter;
        self.reserve(counter, out);
        let ballot = Ballot::new(counter, self.config.node);
        assert!(ballot > self.last_fresh, "fresh ballot {ballot} is not above the last one, {}", self.last_fresh);
        self.last_fresh = ballot;
        Some(ballot)
    }

    /// Moves `p` to `ballot`: this node's, durably reserved, and above the proposal's last one
    /// (a proposal never goes back to a ballot it used, or one a restart could reuse).
    fn use_ballot(&self, p: &mut Proposal, ballot: Ballot) {
        assert_eq!(ballot.node, self.config.node, "a proposer only uses its own ballots");
        assert!(ballot.counter <= self.reserved, "ballot {ballot} is above the durable floor {}", self.reserved);
        assert!(ballot > p.ballot, "a proposal's ballots only grow: {ballot} after {}", p.ballot);
        p.ballot = ballot;
    }

    /// Makes sure `counter` is below the durable floor before a ballot with it is sent.
    fn reserve(&mut self, counter: u64, out: &mut Vec<ProposerOutput>) {
        if counter > self.reserved {
            self.reserved = counter.saturating_add(COUNTER_BLOCK);
            out.push(ProposerOutput::PersistCounterFloor { counter: self.reserved });
        }
    }

    fn exhausted(&self, p: &Proposal) -> Error {
        if p.first_accept.is_some() {
            Error::GaveUp { attempts: p.attempts, maybe_applied: true }
        } else {
            Error::CounterExhausted
        }
    }

    fn send_accept(
        &mut self,
        key: &[u8],
        p: &mut Proposal,
        value: Value,
        base: Ballot,
        outcome: Outcome,
        out: &mut Vec<ProposerOutput>,
    ) {
        // Acceptors refuse an accept whose value claims to derive from its own ballot or later.
        assert!(base < p.ballot, "an accept at {} built on a value from {base}", p.ballot);
        p.phase = Phase::Accept;
        p.granted.clear();
        p.refused.clear();
        // Acceptors that take this accept promise its successor to us, so a later full round
        // must start above that, or our own implicit promise would refuse our prepare.
        self.counter = self.counter.max(p.ballot.counter.saturating_add(1));
        if !p.change.is_read() {
            p.first_accept.get_or_insert(p.ballot);
            p.ours.push((p.ballot, outcome.clone()));
        }
        self.broadcast(&Request::Accept { key: key.to_vec(), ballot: p.ballot, value: value.clone(), base }, out);
        p.proposed = Some((value, outcome));
    }

    fn handle_reply(
        &mut self,
        now: Tick,
        key: &[u8],
        p: &mut Proposal,
        from: NodeId,
        reply: Reply,
        out: &mut Vec<ProposerOutput>,
    ) -> Flow {
        if reply.ballot() != p.ballot || p.granted.contains(&from) || p.refused.contains(&from) {
            return Flow::Continue;
        }
        match (p.phase, reply) {
            (Phase::Peek, Reply::Peeked { accepted, value, .. }) => {
                self.on_peeked(now, key, p, from, (accepted, value), out)
            }
            (Phase::Prepare, Reply::Promise { accepted, .. }) if accepted >= p.ballot => {
                // An acceptor only promises above what it accepted: a malformed reply, ignored
                // like any other invalid peer input (it must not become the base of an accept).
                Flow::Continue
            }
            (Phase::Prepare, Reply::Promise { accepted, value, base, .. }) => {
                p.granted.push(from);
                if accepted > p.best.0 {
                    p.best = (accepted, value, base);
                }
                if self.voters.is_quorum(&p.granted) {
                    return self.choose(now, key, p, out);
                }
                Flow::Continue
            }
            (Phase::Accept, Reply::Accepted { .. }) => {
                p.granted.push(from);
                if self.voters.is_quorum(&p.granted) {
                    return self.chosen(key, p, out);
                }
                Flow::Continue
            }
            (_, Reply::Nack { promised, .. }) if promised == p.ballot && p.phase == Phase::Prepare => {
                // A duplicate of our own prepare reached the acceptor twice: it promised us.
                Flow::Continue
            }
            (Phase::Prepare | Phase::Accept, Reply::Nack { .. }) => {
                p.refused.push(from);
                let may_grant = |a: NodeId| !p.refused.contains(&a) && !self.dead.contains(&a);
                if !self.voters.reachable(&p.granted, may_grant) {
                    return self.retry(now, key, p, out);
                }
                Flow::Continue
            }
            _ => Flow::Continue,
        }
    }

    /// A peek answer: done once a majority reports one accepted ballot; a full round at once
    /// when no ballot can reach a majority any more.
    fn on_peeked(
        &mut self,
        now: Tick,
        key: &[u8],
        p: &mut Proposal,
        from: NodeId,
        (accepted, value): (Ballot, Value),
        out: &mut Vec<ProposerOutput>,
    ) -> Flow {
        p.granted.push(from);
        let agreeing = match p.peeked.iter_mut().find(|(b, _, _)| *b == accepted) {
            Some(entry) => {
                entry.1.push(from);
                entry.1.clone()
            }
            None => {
                p.peeked.push((accepted, vec![from], value.clone()));
                vec![from]
            }
        };
        if self.voters.is_quorum(&agreeing) {
            // A majority accepted `accepted`: its value is chosen, and every change
            // acknowledged before this read began is at or below it. Served from here only if
            // the read leaves it as it is: an expired value must become a tombstone first (a full
            // round that accepts it), or a later read on a slower clock could see it again.
            let (next, outcome) = apply_change(&p.change, &value, p.unix_ms, p.ballot.counter);
            if next == value {
                out.push(done(p.id, Ok(outcome)));
                return Flow::Finished;
            }
            return self.after_peek(now, key, p, out);
        }
        // Could some ballot still gather a quorum: one already reported, with acceptors that
        // have not answered yet, or one nobody has reported yet?
        let may_answer = |a: NodeId| !p.granted.contains(&a) && !self.dead.contains(&a);
        let possible = p.peeked.iter().any(|(_, agreeing, _)| self.voters.reachable(agreeing, may_answer))
            || self.voters.reachable(&[], may_answer);
        if !possible {
            return self.after_peek(now, key, p, out);
        }
        Flow::Continue
    }

    /// A majority accepted this attempt's value: it is chosen. Cache the key's next ballot for
    /// the one-round-trip path and answer the client.
    fn chosen(&mut self, key: &[u8], p: &mut Proposal, out: &mut Vec<ProposerOutput>) -> Flow {
        let (value, outcome) = p.proposed.take().expect("an accept in flight carries its value and outcome");
        if let Some(next) = p.ballot.successor() {
            self.put_cached(key, next, p.ballot, value);
        }
        out.push(done(p.id, Ok(outcome)));
        Flow::Finished
    }

    /// The peek found no majority on one ballot (a change in flight, or a lagging acceptor):
    /// run the read as a full round now.
    fn after_peek(&mut self, now: Tick, key: &[u8], p: &mut Proposal, out: &mut Vec<ProposerOutput>) -> Flow {
        if p.attempts >= self.config.attempts_max {
            out.push(done(p.id, Err(Error::GaveUp { attempts: p.attempts, maybe_applied: false })));
            return Flow::Finished;
        }
        self.attempt(now, key, p, out)
    }

    /// A promise quorum is in: pick the value to accept (module docs: no double application).
    fn choose(&mut self, now: Tick, key: &[u8], p: &mut Proposal, out: &mut Vec<ProposerOutput>) -> Flow {
        let (highest, current, current_base) = p.best.clone();
        let ours = |ballot: Ballot| p.ours.iter().find(|(b, _)| *b == ballot).map(|(_, outcome)| outcome.clone());
        let (value, outcome) = match p.first_accept {
            _ if p.change.is_read() => apply_change(&p.change, &current, p.unix_ms, p.ballot.counter),
            None => apply_change(&p.change, &current, p.unix_ms, p.ballot.counter),
            Some(first) => {
                if let Some(outcome) = ours(highest).or_else(|| ours(current_base)) {
                    // Our value, or another proposer's change applied on top of our value: our
                    // effect is in it exactly once. Re-accept it unchanged to complete.
                    (current, outcome)
                } else if highest < first || current_base < first {
                    // Derived from a value older than our first accept: our effect is not in it.
                    apply_change(&p.change, &current, p.unix_ms, p.ballot.counter)
                } else {
                    out.push(done(p.id, Err(Error::Ambiguous)));
                    return Flow::Finished;
                }
            }
        };
        self.send_accept(key, p, value, highest, outcome, out);
        p.generation += 1;
        self.arm(now, key, p, self.config.attempt_timeout_ticks, out);
        Flow::Continue
    }

    /// The attempt failed (refused by too many, or timed out): back off, or give up.
    fn retry(&mut self, now: Tick, key: &[u8], p: &mut Proposal, out: &mut Vec<ProposerOutput>) -> Flow {
        let maybe_applied = p.first_accept.is_some();
        if p.attempts >= self.config.attempts_max {
            out.push(done(p.id, Err(Error::GaveUp { attempts: p.attempts, maybe_applied })));
            return Flow::Finished;
        }
        let shift = (p.attempts.saturating_sub(1)).min(16);
        let cap = self.config.backoff_max_ticks.min(self.config.backoff_base_ticks.saturating_mul(1 << shift)).max(1);
        let delay = 1 + self.rng.below(cap);
        if now.saturating_add(delay) >= p.deadline {
            out.push(done(p.id, Err(Error::TimedOut { budget_ticks: self.config.budget_ticks, maybe_applied })));
            return Flow::Finished;
        }
        p.phase = Phase::Backoff;
        p.generation += 1;
        self.arm(now, key, p, delay, out);
        Flow::Continue
    }

    fn take_cached(&mut self, key: &[u8]) -> Option<Cached> {
        let cached = self.cache.remove(key)?;
        self.cache_order.remove(&cached.stamp);
        self.cache_bytes -= cached_bytes(key, &cached.value);
        Some(cached)
    }

    fn put_cached(&mut self, key: &[u8], next: Ballot, accepted: Ballot, value: Value) {
        let _ = self.take_cached(key);
        if self.config.cached_keys_max == 0 || value.as_ref().is_some_and(|v| v.len() > CACHED_VALUE_BYTES_MAX) {
            // Large values take full rounds rather than pin memory in the cache.
            return;
        }
        let bytes = cached_bytes(key, &value);
        while self.cache.len() >= self.config.cached_keys_max
            || (!self.cache.is_empty() && self.cache_bytes + bytes > CACHED_BYTES_MAX)
        {
            let Some((_, oldest)) = self.cache_order.pop_first() else { break };
            if let Some(old) = self.cache.remove(&oldest) {
                self.cache_bytes -= cached_bytes(&oldest, &old.value);
            }
        }
        self.cache_stamp += 1;
        self.cache_bytes += bytes;
        self.cache.insert(key.to_vec(), Cached { next, accepted, value, stamp: self.cache_stamp });
        self.cache_order.insert(self.cache_stamp, key.to_vec());
    }
}

fn done(proposal: ProposalId, result: Result<Outcome, Error>) -> ProposerOutput {
    ProposerOutput::Done { proposal, result }
}

/// A chosen (or failed) outcome is returned once: a step that finished proposal `id` produced
/// exactly one `Done` for it, and a step that did not finish it produced none.
fn assert_step(out: &[ProposerOutput], id: ProposalId, flow: &Flow) {
    let dones = out.iter().filter(|o| matches!(o, ProposerOutput::Done { proposal, .. } if *proposal == id)).count();
    let expected = match flow {
        Flow::Finished => 1,
        Flow::Continue => 0,
    };
    assert_eq!(dones, expected, "proposal {id:?} answered {dones} times in one step");
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn the_ballot_cache_is_bounded_by_bytes_as_well_as_by_keys() {
        let acceptors = vec![NodeId(1), NodeId(2), NodeId(3)];
        let mut p = Proposer::new(ProposerConfig::new(NodeId(1), acceptors, 7)).unwrap();
        let value = Some(vec![1u8; CACHED_VALUE_BYTES_MAX]);
        let n = CACHED_BYTES_MAX / CACHED_VALUE_BYTES_MAX * 2;
        for i in 0..n {
            p.put_cached(format!("k{i}").as_bytes(), Ballot::ZERO, Ballot::ZERO, value.clone());
            assert!(p.cache_bytes <= CACHED_BYTES_MAX, "{} bytes after {i} keys", p.cache_bytes);
        }
        assert!(p.cached_keys() < n / 2 + 1, "{} keys cached", p.cached_keys());
        let held: usize = p.cache.iter().map(|(k, c)| cached_bytes(k, &c.value)).sum();
        assert_eq!(held, p.cache_bytes, "the count matches what is held");
        // Taking one back, and the newest key, keep the count right.
        let last = format!("k{}", n - 1);
        assert!(p.take_cached(last.as_bytes()).is_some());
        let held: usize = p.cache.iter().map(|(k, c)| cached_bytes(k, &c.value)).sum();
        assert_eq!(held, p.cache_bytes);
    }
}
