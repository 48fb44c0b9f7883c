//! The tombstone collector, an actor of the simulated world (docs/paxos.md, "Tombstones and
//! their collection"; the runtime's rounds are `crates/mm/src/collector.rs`). Over the same lossy
//! network as everyone else, while clients work and every fault goes on, it repeatedly:
//!
//! 1. takes the view of a running acceptor (its configuration; nothing while it is joint) and
//!    notes the keys whose register there is a tombstone (value `None`, accepted `t != ZERO`);
//!    one still there at the same `t` a grace period later is due;
//! 2. sends `Inspect` to every voter, carrying the epoch; an acceptor at another epoch, or down,
//!    does not answer, and one that answers does so after the writes before it are durable;
//! 3. if every voter answered and each holds the tombstone at `t`, or no register with a floor
//!    at or above `t`, sends `Collect` to every voter, which calls [`Acceptor::collect`] and
//!    persists the removal and the raised floor together (a crash before that loses both). If
//!    a voter holds a value or an older state, it settles the key instead (a full-round read
//!    through a proposer) and takes it up again later.
//!
//! [`CollectFault`] breaks it on purpose, to show the checker catches the damage.

use super::{Event, Outgoing, Persist, Waiter, World};
use rampart_paxos::rng::SplitMix64;
use rampart_paxos::{Acceptor, Ballot, Key, NodeId};
use std::collections::BTreeMap;

/// Share of seeds with a collector, per mille (drawn from its own stream: the other seeds run
/// as before).
pub const COLLECTOR_SEEDS_PER_MILLE: u64 = 400;
/// How long the collector waits for a voter's inspection before it asks again (above the longest
/// round trip: two delays of at most 31 ticks and a group commit of at most 3), and how many
/// times it asks: the runtime's peer calls ride on TCP, which retransmits; a voter that is down
/// or at another epoch never answers, and then nothing is collected that round.
const INSPECT_TIMEOUT_TICKS: u64 = 70;
const INSPECT_TRIES: u64 = 3;

/// The collection as specified, or broken on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollectFault {
    None,
    /// BREAKS SAFETY: an acceptor removes the register but does not raise its floor (in memory or
    /// durably), so a key without a register is promised nothing.
    NoFloor,
    /// BREAKS SAFETY: a key is collected once a majority of the voters (rather than every one)
    /// answered that they hold the tombstone (or no register with a floor at or above it).
    MajorityOnly,
    /// BREAKS SAFETY: the grace is shorter than a proposer's budget (0 to 80 ticks), so a
    /// tombstone can be collected while the proposer that wrote it still retries. Its retry then
    /// finds no register, so it can no longer tell that its change took effect: it applies it
    /// again (a `DEL` that removed a value answers 0; a `SET` that a later `DEL` removed is
    /// written again).
    ShortGrace,
}

/// What an acceptor holds for a key, as collection needs it (the runtime's `wire::Holding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Holding {
    Tombstone(Ballot),
    Absent { floor: Ballot },
    Live,
}

struct Inspecting {
    round: u64,
    epoch: u64,
    voters: Vec<NodeId>,
    items: Vec<(usize, Ballot)>,
    answers: BTreeMap<NodeId, Vec<Holding>>,
}

impl Inspecting {
    fn keys(&self) -> Vec<Key> {
        self.items.iter().map(|(k, _)| vec![*k as u8]).collect()
    }
}

pub(super) struct Collector {
    rng: SplitMix64,
    fault: CollectFault,
    interval: u64,
    grace: u64,
    /// Key → (the tombstone's ballot, when it was first seen at that ballot).
    candidates: BTreeMap<usize, (Ballot, u64)>,
    round: u64,
    inspecting: Option<Inspecting>,
    /// Registers removed at some acceptor so far, the history stamp when the first was, and
    /// client operations invoked after it that succeeded.
    pub(super) removed: usize,
    first_removal_stamp: Option<u64>,
    ok_after_removal: usize,
}

/// How a collector seed's workload differs: more operations, and this share (per mille) of them
/// deletes, so keys are deleted, collected and recreated.
pub(super) const EXTRA_OPS: usize = 6;
pub(super) const DELETE_PER_MILLE: u64 = 250;
/// More keys, and longer pauses between a client's operations (up to this many ticks), so
/// that a deleted key often sits idle past the grace before it is used again.
pub(super) const EXTRA_KEYS: usize = 2;
pub(super) const THINK_TICKS_MAX: u64 = 400;
/// Acceptor crashes a collector seed adds, at ticks up to [`LATE_CRASHES_UNTIL`].
const LATE_CRASHES_MAX: u64 = 3;
const LATE_CRASHES_UNTIL: u64 = 5_000;
/// A collector seed's proposers give up on a change this long after it was proposed.
pub(super) const PROPOSER_BUDGET_TICKS: u64 = 600;
/// The proposers' wait for a phase (`new_proposer`): an attempt begun just before the budget
/// ends decides on its promises up to this much later.
const ATTEMPT_TIMEOUT_TICKS: u64 = 80;
/// The shortest grace that keeps collection safe: no proposer still decides on a change begun
/// before the collector first saw the tombstone (see [`CollectFault::ShortGrace`]).
const GRACE_MIN_TICKS: u64 = PROPOSER_BUDGET_TICKS + ATTEMPT_TIMEOUT_TICKS;

impl Collector {
    /// The collector of `seed`, from its own stream: `None` in most seeds unless `force`.
    pub(super) fn draw(seed: u64, force: bool, fault: CollectFault) -> Option<Collector> {
        let mut rng = SplitMix64::new(seed ^ 0x636f_6c6c_6563_746f);
        if !rng.chance(COLLECTOR_SEEDS_PER_MILLE) && !force {
            return None;
        }
        let interval = 10 + rng.below(60);
        let grace = match fault {
            CollectFault::ShortGrace => rng.below(80),
            _ => GRACE_MIN_TICKS + rng.below(100),
        };
        Some(Collector {
            rng,
            fault,
            interval,
            grace,
            candidates: BTreeMap::new(),
            round: 0,
            inspecting: None,
            removed: 0,
            first_removal_stamp: None,
            ok_after_removal: 0,
        })
    }

    pub(super) fn first_at(&mut self) -> u64 {
        self.rng.below(self.interval)
    }

    /// Acceptor crashes (tick, down ticks) over the longer run of a collector seed.
    pub(super) fn late_crashes(&mut self) -> Vec<(u64, u64)> {
        (0..LATE_CRASHES_MAX).map(|_| (self.rng.below(LATE_CRASHES_UNTIL), 5 + self.rng.below(400))).collect()
    }

    /// A client operation invoked at history stamp `invoke` succeeded.
    pub(super) fn note_success(&mut self, invoke: u64) {
        if self.first_removal_stamp.is_some_and(|s| invoke > s) {
            self.ok_after_removal += 1;
        }
    }
}

/// The collector's timers.
#[derive(Debug)]
pub(super) enum CollectorStep {
    Tick,
    Timeout { round: u64, tries: u64 },
}

impl World {
    fn collector(&mut self) -> &mut Collector {
        self.collector.as_mut().expect("a run with a collector")
    }

    /// True while some client has work left (the collector runs during the workload only).
    fn workload_active(&self) -> bool {
        (0..self.clients.len()).any(|c| self.clients[c].busy || !matches!(self.wants_more(c), super::Want::Done))
    }

    pub(super) fn collector_step(&mut self, step: CollectorStep) {
        match step {
            CollectorStep::Tick => {
                if !self.workload_active() {
                    return;
                }
                if self.collector().inspecting.is_none() {
                    self.collector_scan_and_inspect();
                }
                let interval = self.collector().interval;
                self.schedule(interval, Event::Collector(CollectorStep::Tick));
            }
            CollectorStep::Timeout { round, tries } => {
                let c = self.collector();
                let Some(inspecting) = c.inspecting.as_ref().filter(|i| i.round == round) else { return };
                if tries < INSPECT_TRIES {
                    let missing: Vec<NodeId> =
                        inspecting.voters.iter().filter(|v| !inspecting.answers.contains_key(v)).copied().collect();
                    let (epoch, keys) = (inspecting.epoch, inspecting.keys());
                    for id in missing {
                        let acceptor = (id.0 - 1) as usize;
                        self.transmit(|| Event::Inspect { acceptor, epoch, round, keys: keys.clone() });
                    }
                    let step = CollectorStep::Timeout { round, tries: tries + 1 };
                    return self.schedule(INSPECT_TIMEOUT_TICKS, Event::Collector(step));
                }
                if c.fault == CollectFault::MajorityOnly {
                    self.collector_decide();
                } else {
                    // A voter did not answer: nothing is collected this round.
                    self.stats.collection_blocked += 1;
                    self.collector().inspecting = None;
                }
            }
        }
    }

    /// Step 1 and 2: the view of a running acceptor, its due tombstones, and the inspection.
    fn collector_scan_and_inspect(&mut self) {
        let running: Vec<usize> = (0..self.acceptors.len())
            .filter(|&a| self.acceptors[a].live.is_some() && self.acceptors[a].config.is_some())
            .collect();
        if running.is_empty() {
            return;
        }
        let home = running[self.collector().rng.below(running.len() as u64) as usize];
        let config = self.acceptors[home].config.clone().expect("filtered");
        if config.new.is_some() {
            self.stats.collection_skipped_joint += 1;
            return;
        }
        let now = self.now;
        let keys = self.params.keys + self.params.cold_keys;
        let tombstones: Vec<(usize, Ballot)> = {
            let live = self.acceptors[home].live.as_ref().expect("filtered");
            (0..keys)
                .filter_map(|k| {
                    live.register(&[k as u8])
                        .filter(|s| s.value.is_none() && s.accepted != Ballot::ZERO)
                        .map(|s| (k, s.accepted))
                })
                .collect()
        };
        let c = self.collector();
        for (k, t) in tombstones {
            match c.candidates.get_mut(&k) {
                Some(seen) if seen.0 == t => {}
                _ => {
                    c.candidates.insert(k, (t, now));
                }
            }
        }
        let grace = c.grace;
        let items: Vec<(usize, Ballot)> =
            c.candidates.iter().filter(|(_, (_, seen))| now >= seen + grace).map(|(&k, &(t, _))| (k, t)).collect();
        if items.is_empty() {
            return;
        }
        c.round += 1;
        let round = c.round;
        let voters = config.old.clone();
        c.inspecting = Some(Inspecting {
            round,
            epoch: config.epoch,
            voters: voters.clone(),
            items: items.clone(),
            answers: BTreeMap::new(),
        });
        self.stats.collection_rounds += 1;
        let keys: Vec<Key> = items.iter().map(|(k, _)| vec![*k as u8]).collect();
        let round_timeout = CollectorStep::Timeout { round, tries: 1 };
        for id in voters {
            let acceptor = (id.0 - 1) as usize;
            self.transmit(|| Event::Inspect { acceptor, epoch: config.epoch, round, keys: keys.clone() });
        }
        self.schedule(INSPECT_TIMEOUT_TICKS, Event::Collector(round_timeout));
    }

    /// An acceptor's side of `Inspect`: answered (once every write before it is durable) only at
    /// the acceptor's own epoch.
    pub(super) fn acceptor_inspect(&mut self, acceptor: usize, epoch: u64, round: u64, keys: Vec<Key>) {
        let node = &self.acceptors[acceptor];
        let Some(live) = node.live.as_ref() else { return };
        if node.config.as_ref().map(|c| c.epoch) != Some(epoch) {
            self.stats.collection_refused_epoch += 1;
            return;
        }
        let holdings = keys
            .iter()
            .map(|k| match live.register(k) {
                None => Holding::Absent { floor: live.floor() },
                Some(s) if s.value.is_none() => Holding::Tombstone(s.accepted),
                Some(_) => Holding::Live,
            })
            .collect();
        self.queue(acceptor, None, Outgoing::Inspected { round, holdings }, usize::MAX);
    }

    pub(super) fn collector_answer(&mut self, from: NodeId, round: u64, holdings: Vec<Holding>) {
        let Some(inspecting) = self.collector().inspecting.as_mut() else { return };
        if inspecting.round != round || !inspecting.voters.contains(&from) {
            return;
        }
        inspecting.answers.insert(from, holdings);
        if inspecting.answers.len() == inspecting.voters.len() {
            self.collector_decide();
        }
    }

    /// Step 3: collect what every voter (or, broken, a majority) holds as the tombstone; settle
    /// what some voter holds as a value or an older state.
    fn collector_decide(&mut self) {
        let Some(inspecting) = self.collector().inspecting.take() else { return };
        let majority_only = self.collector().fault == CollectFault::MajorityOnly;
        let mut ready = Vec::new();
        let mut settle = Vec::new();
        for (i, &(key, t)) in inspecting.items.iter().enumerate() {
            let safe = inspecting
                .answers
                .values()
                .filter(|h| match h[i] {
                    Holding::Tombstone(b) => b == t,
                    Holding::Absent { floor } => floor >= t,
                    Holding::Live => false,
                })
                .count();
            let enough =
                if majority_only { safe > inspecting.voters.len() / 2 } else { safe == inspecting.voters.len() };
            if enough {
                self.stats.collected_unsafely += usize::from(safe < inspecting.voters.len());
                self.stats.collected_over_live +=
                    usize::from(inspecting.answers.values().any(|h| h[i] == Holding::Live));
                ready.push((vec![key as u8], t));
                self.collector().candidates.remove(&key);
            } else if inspecting.answers.len() == inspecting.voters.len() {
                // Taken up again once the collector sees the settled tombstone a grace later.
                self.collector().candidates.remove(&key);
                settle.push(key);
            }
        }
        self.stats.keys_collected += ready.len();
        for key in settle {
            self.collector_settle(key);
        }
        if ready.is_empty() {
            return;
        }
        let epoch = inspecting.epoch;
        for id in inspecting.voters {
            let acceptor = (id.0 - 1) as usize;
            self.transmit(|| Event::Collect { acceptor, epoch, items: ready.clone() });
        }
    }

    /// A full-round read of `key` through a running proposer: it accepts the current value (the
    /// tombstone) at every voter that answers. Recorded like any read.
    fn collector_settle(&mut self, key: usize) {
        let running: Vec<usize> = (0..self.proposers.len()).filter(|&p| self.proposers[p].live.is_some()).collect();
        if running.is_empty() {
            return;
        }
        let proposer = running[self.collector().rng.below(running.len() as u64) as usize];
        self.stats.collection_settles += 1;
        self.background_read(proposer, key, Waiter::Collector, true);
    }

    /// An acceptor's side of `Collect`: at its own epoch only, each register removed if it is
    /// still the tombstone at that ballot; the removal and the raised floor become durable
    /// together with the next group commit.
    pub(super) fn acceptor_collect(&mut self, acceptor: usize, epoch: u64, items: Vec<(Key, Ballot)>) {
        let ceiling = self.ceiling(self.acceptors[acceptor].skew);
        let no_floor = self.collector.as_ref().is_some_and(|c| c.fault == CollectFault::NoFloor);
        let node = &mut self.acceptors[acceptor];
        let Some(live) = node.live.as_mut() else { return };
        if node.config.as_ref().map(|c| c.epoch) != Some(epoch) {
            self.stats.collection_refused_epoch += 1;
            return;
        }
        let mut removed = Vec::new();
        for (key, t) in items {
            if let Some(floor) = live.collect(&key, t) {
                removed.push((key, if no_floor { Ballot::ZERO } else { floor }));
            }
        }
        if removed.is_empty() {
            return;
        }
        if no_floor {
            // The registers stay; the floor is forgotten.
            let registers = live.registers().map(|(k, s)| (k.clone(), s.clone())).collect::<Vec<_>>();
            *live = Acceptor::restore(registers, ceiling).expect("registers already accepted");
        }
        self.stats.registers_removed += removed.len();
        let stamp = self.stamp;
        let c = self.collector();
        c.removed += removed.len();
        c.first_removal_stamp.get_or_insert(stamp);
        for (key, floor) in removed {
            self.queue(acceptor, Some(Persist::Collected { key, floor }), Outgoing::Nothing, usize::MAX);
        }
    }

    /// Adds the collector's figures to the run's statistics.
    pub(super) fn count_collection(&mut self) {
        let Some(c) = &self.collector else { return };
        self.stats.collector_runs += 1;
        self.stats.collector_runs_removed += usize::from(c.removed > 0);
        self.stats.collector_runs_served_after += usize::from(c.removed > 0 && c.ok_after_removal > 0);
    }
}
