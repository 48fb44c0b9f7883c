//! A seeded, single-threaded simulation of proposers, acceptors, clients and a hostile network.
//!
//! Everything random comes from one `SplitMix64` seeded by the run's seed, events are ordered by
//! (tick, sequence number), and no hash map is iterated, so a seed replays exactly.
//!
//! What it does to the protocol: random delays (which reorder), drops, duplicates; acceptor
//! crashes that lose unpersisted writes and unsent replies (acceptors persist in batches a few
//! ticks after handling, like group commit) and restarts from the durable state; proposer
//! crashes that lose every in-flight change and the ballot cache, restarting from the last
//! persisted counter floor; wrong and right "dead peer" hints.

use super::checker::{self, Op, Verdict};
use rampart_kv::SetCond;
use rampart_paxos::rng::SplitMix64;
use rampart_paxos::{
    Acceptor, Change, DurableWrite, Error, Key, NodeId, Outcome, ProposalId, Proposer, ProposerConfig, ProposerOutput,
    RegisterState, Reply, Request, Timer,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Knobs of one run, all drawn from the seed.
#[derive(Clone, Debug)]
pub struct Params {
    pub acceptors: usize,
    pub proposers: usize,
    pub clients: usize,
    pub ops_per_client: usize,
    pub keys: usize,
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
    pub delay_max_ticks: u64,
    pub acceptor_crashes: usize,
    pub proposer_crashes: usize,
    pub broken_quorum: bool,
}

impl Params {
    pub fn from_seed(rng: &mut SplitMix64, broken_quorum: bool) -> Self {
        let proposers = 2 + rng.below(3) as usize;
        Params {
            acceptors: if rng.chance(500) { 3 } else { 5 },
            proposers,
            clients: proposers + rng.below(proposers as u64 + 1) as usize,
            ops_per_client: 4 + rng.below(6) as usize,
            keys: 1 + rng.below(3) as usize,
            drop_per_mille: rng.below(150),
            duplicate_per_mille: rng.below(100),
            delay_max_ticks: 2 + rng.below(30),
            acceptor_crashes: rng.below(4) as usize,
            proposer_crashes: rng.below(3) as usize,
            broken_quorum,
        }
    }
}

#[derive(Debug)]
enum Event {
    ToAcceptor { acceptor: usize, proposer: usize, request: Request },
    ToProposer { proposer: usize, from: NodeId, reply: Reply },
    Flush { acceptor: usize, incarnation: u64 },
    Wake { proposer: usize, incarnation: u64, timer: Timer },
    ClientNext { client: usize },
    CrashAcceptor { acceptor: usize, down_ticks: u64 },
    RestartAcceptor { acceptor: usize },
    CrashProposer { proposer: usize, down_ticks: u64 },
    RestartProposer { proposer: usize },
}

struct AcceptorNode {
    id: NodeId,
    live: Option<Acceptor>,
    durable: BTreeMap<Key, RegisterState>,
    /// Handled but not yet durable: (write, reply, requesting proposer), in order.
    unflushed: Vec<(Option<DurableWrite>, Reply, usize)>,
    incarnation: u64,
    flush_armed: bool,
}

struct ProposerNode {
    id: NodeId,
    live: Option<Proposer>,
    counter_floor: u64,
    incarnation: u64,
    /// Proposal → (client, history index).
    waiting: BTreeMap<ProposalId, (usize, usize)>,
    /// Last ballot this proposer sent a prepare at, per key (for the fast-path statistic).
    prepared: BTreeMap<Key, rampart_paxos::Ballot>,
    /// Keys whose last read started with a peek (to count peeks that fell back to a prepare).
    peeked: std::collections::BTreeSet<Key>,
}

struct Client {
    proposer: usize,
    issued: usize,
    busy: bool,
    last_seen: BTreeMap<usize, Option<Vec<u8>>>,
}

/// One operation in the recorded history.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub key: usize,
    pub op: Op,
    /// Dropped from the check: it certainly failed.
    pub failed: bool,
}

/// Counts that show a run did real work (a simulation where nothing succeeds proves nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub ok: usize,
    pub maybe_applied: usize,
    pub failed: usize,
    pub lost_with_proposer: usize,
    pub messages: usize,
    pub accepts_without_prepare: usize,
    /// Reads that started with a peek, and peeks followed by a full round on the same key.
    pub peeks: usize,
    pub peek_fallbacks: usize,
}

pub struct World {
    rng: SplitMix64,
    params: Params,
    now: u64,
    seq: u64,
    stamp: u64,
    events: BinaryHeap<Reverse<(u64, u64, usize)>>,
    payloads: Vec<Option<Event>>,
    acceptors: Vec<AcceptorNode>,
    proposers: Vec<ProposerNode>,
    clients: Vec<Client>,
    pub history: Vec<Recorded>,
    pub stats: Stats,
}

/// Far beyond any run's activity: a guard against a livelock bug looping forever.
const TICKS_MAX: u64 = 200_000;

impl World {
    pub fn new(seed: u64, broken_quorum: bool) -> Self {
        let mut rng = SplitMix64::new(seed);
        let params = Params::from_seed(&mut rng, broken_quorum);
        let acceptors = (0..params.acceptors)
            .map(|i| AcceptorNode {
                id: NodeId(1 + i as u64),
                live: Some(Acceptor::new()),
                durable: BTreeMap::new(),
                unflushed: Vec::new(),
                incarnation: 0,
                flush_armed: false,
            })
            .collect();
        let mut world = World {
            rng,
            now: 0,
            seq: 0,
            stamp: 0,
            events: BinaryHeap::new(),
            payloads: Vec::new(),
            acceptors,
            proposers: Vec::new(),
            clients: Vec::new(),
            history: Vec::new(),
            stats: Stats::default(),
            params,
        };
        for p in 0..world.params.proposers {
            let id = NodeId(100 + p as u64);
            let live = Some(world.new_proposer(id, 0));
            world.proposers.push(ProposerNode {
                id,
                live,
                counter_floor: 0,
                incarnation: 0,
                waiting: BTreeMap::new(),
                prepared: BTreeMap::new(),
                peeked: std::collections::BTreeSet::new(),
            });
        }
        for c in 0..world.params.clients {
            world.clients.push(Client {
                proposer: c % world.params.proposers,
                issued: 0,
                busy: false,
                last_seen: BTreeMap::new(),
            });
            let at = world.rng.below(20);
            world.schedule(at, Event::ClientNext { client: c });
        }
        for _ in 0..world.params.acceptor_crashes {
            let (acceptor, at, down_ticks) = (
                world.rng.below(world.params.acceptors as u64) as usize,
                world.rng.below(600),
                5 + world.rng.below(300),
            );
            world.schedule(at, Event::CrashAcceptor { acceptor, down_ticks });
        }
        for _ in 0..world.params.proposer_crashes {
            let (proposer, at, down_ticks) = (
                world.rng.below(world.params.proposers as u64) as usize,
                world.rng.below(600),
                5 + world.rng.below(200),
            );
            world.schedule(at, Event::CrashProposer { proposer, down_ticks });
        }
        world
    }

    fn new_proposer(&mut self, id: NodeId, counter_floor: u64) -> Proposer {
        let members: Vec<NodeId> = self.acceptors.iter().map(|a| a.id).collect();
        let mut config = ProposerConfig::new(id, members, self.rng.next_u64());
        config.attempts_max = 6;
        config.budget_ticks = 1500;
        config.attempt_timeout_ticks = 80;
        config.backoff_base_ticks = 3;
        config.backoff_max_ticks = 60;
        config.initial_counter = counter_floor;
        if self.params.broken_quorum {
            config = config.with_broken_quorum_for_simulation(1);
        }
        Proposer::new(config).expect("simulation proposer config is valid")
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.payloads.push(Some(event));
        self.events.push(Reverse((self.now + delay, self.seq, self.payloads.len() - 1)));
    }

    fn next_stamp(&mut self) -> u64 {
        self.stamp += 1;
        self.stamp
    }

    /// The network: maybe drop, maybe duplicate, random delay each copy.
    fn transmit(&mut self, make: impl Fn() -> Event) {
        self.stats.messages += 1;
        if self.rng.chance(self.params.drop_per_mille) {
            return;
        }
        let copies = if self.rng.chance(self.params.duplicate_per_mille) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = 1 + self.rng.below(self.params.delay_max_ticks);
            self.schedule(delay, make());
        }
    }

    /// Runs to quiescence and returns the history.
    pub fn run(&mut self) {
        while let Some(Reverse((at, _, index))) = self.events.pop() {
            if at > TICKS_MAX {
                break;
            }
            self.now = at;
            let Some(event) = self.payloads[index].take() else { continue };
            self.step(event);
        }
        // Whatever never answered (its proposer crashed) stays pending.
        for p in 0..self.proposers.len() {
            let waiting = std::mem::take(&mut self.proposers[p].waiting);
            self.stats.lost_with_proposer += waiting.len();
        }
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::ClientNext { client } => self.client_next(client),
            Event::ToAcceptor { acceptor, proposer, request } => {
                let node = &mut self.acceptors[acceptor];
                let Some(live) = node.live.as_mut() else { return };
                let (write, reply) = live.handle(request).into_parts();
                node.unflushed.push((write, reply, proposer));
                if !node.flush_armed {
                    node.flush_armed = true;
                    let incarnation = node.incarnation;
                    let delay = self.rng.below(4);
                    self.schedule(delay, Event::Flush { acceptor, incarnation });
                }
            }
            Event::Flush { acceptor, incarnation } => {
                let node = &mut self.acceptors[acceptor];
                if node.incarnation != incarnation {
                    return;
                }
                node.flush_armed = false;
                let from = node.id;
                let batch = std::mem::take(&mut node.unflushed);
                // Group commit: every write of the batch is durable before any reply leaves.
                for (write, _, _) in &batch {
                    if let Some(w) = write {
                        node.durable.insert(w.key.clone(), w.state.clone());
                    }
                }
                for (_, reply, proposer) in batch {
                    self.transmit(|| Event::ToProposer { proposer, from, reply: reply.clone() });
                }
            }
            Event::ToProposer { proposer, from, reply } => {
                let now = self.now;
                let Some(live) = self.proposers[proposer].live.as_mut() else { return };
                let outputs = live.on_reply(now, from, reply);
                self.perform(proposer, outputs);
            }
            Event::Wake { proposer, incarnation, timer } => {
                let now = self.now;
                let node = &mut self.proposers[proposer];
                if node.incarnation != incarnation {
                    return;
                }
                let Some(live) = node.live.as_mut() else { return };
                let outputs = live.on_timer(now, timer);
                self.perform(proposer, outputs);
            }
            Event::CrashAcceptor { acceptor, down_ticks } => {
                let node = &mut self.acceptors[acceptor];
                if node.live.take().is_none() {
                    return;
                }
                node.unflushed.clear();
                node.flush_armed = false;
                node.incarnation += 1;
                let dead = node.id;
                // Sometimes the failure detector notices, sometimes not.
                if self.rng.chance(500) {
                    for p in 0..self.proposers.len() {
                        if let Some(live) = self.proposers[p].live.as_mut() {
                            live.set_dead_peers(&[dead]);
                        }
                    }
                }
                self.schedule(down_ticks, Event::RestartAcceptor { acceptor });
            }
            Event::RestartAcceptor { acceptor } => {
                let node = &mut self.acceptors[acceptor];
                let restored = Acceptor::restore(node.durable.clone()).expect("durable acceptor state is consistent");
                node.live = Some(restored);
                for p in 0..self.proposers.len() {
                    if let Some(live) = self.proposers[p].live.as_mut() {
                        live.set_dead_peers(&[]);
                    }
                }
            }
            Event::CrashProposer { proposer, down_ticks } => {
                let node = &mut self.proposers[proposer];
                if node.live.take().is_none() {
                    return;
                }
                node.incarnation += 1;
                // In-flight changes are lost: they stay pending (they may have been applied).
                let waiting = std::mem::take(&mut node.waiting);
                self.stats.lost_with_proposer += waiting.len();
                for (client, _) in waiting.into_values() {
                    self.clients[client].busy = false;
                    let delay = 1 + self.rng.below(50);
                    self.schedule(down_ticks + delay, Event::ClientNext { client });
                }
                self.schedule(down_ticks, Event::RestartProposer { proposer });
            }
            Event::RestartProposer { proposer } => {
                let (id, floor) = (self.proposers[proposer].id, self.proposers[proposer].counter_floor);
                let fresh = self.new_proposer(id, floor);
                self.proposers[proposer].live = Some(fresh);
            }
        }
    }

    fn client_next(&mut self, client: usize) {
        let c = &self.clients[client];
        if c.busy || c.issued >= self.params.ops_per_client {
            return;
        }
        let proposer = c.proposer;
        if self.proposers[proposer].live.is_none() {
            let delay = 10 + self.rng.below(50);
            self.schedule(delay, Event::ClientNext { client });
            return;
        }
        let key = self.rng.below(self.params.keys as u64) as usize;
        let unique = format!("c{client}-{}", self.clients[client].issued).into_bytes();
        // Key 0 is a counter; the others hold unique strings.
        let roll = self.rng.below(100);
        let change = if key == 0 {
            match roll {
                0..=34 => Change::Read,
                35..=89 => Change::IncrBy(1 + self.rng.below(3) as i64),
                _ => Change::Delete,
            }
        } else {
            match roll {
                0..=29 => Change::Read,
                30..=59 => Change::Set { value: unique, cond: SetCond::Always, return_old: true },
                60..=79 => {
                    let expected = self.clients[client].last_seen.get(&key).cloned().flatten();
                    Change::Cas { expected, new: unique }
                }
                80..=84 => Change::Set { value: unique, cond: SetCond::IfPresent, return_old: false },
                85..=89 => Change::Append { value: unique, value_bytes_max: usize::MAX },
                _ => Change::Delete,
            }
        };
        let invoke = self.next_stamp();
        let now = self.now;
        let live = self.proposers[proposer].live.as_mut().expect("checked above");
        match live.propose(now, vec![key as u8], change.clone()) {
            Ok((id, outputs)) => {
                self.clients[client].issued += 1;
                self.clients[client].busy = true;
                self.history.push(Recorded {
                    key,
                    op: Op { invoke, complete: None, change, outcome: None },
                    failed: false,
                });
                let index = self.history.len() - 1;
                self.proposers[proposer].waiting.insert(id, (client, index));
                self.perform(proposer, outputs);
            }
            Err(e) => panic!("propose refused in simulation: {e}"),
        }
    }

    fn perform(&mut self, proposer: usize, outputs: Vec<ProposerOutput>) {
        for output in outputs {
            match output {
                ProposerOutput::Send { to, request } => {
                    // Count accepts sent at a ballot this proposer never prepared (the fast path),
                    // once per broadcast.
                    let last = self.proposers[proposer].prepared.get(request.key()).copied();
                    match &request {
                        Request::Prepare { key, ballot } => {
                            if to.0 == 1 && self.proposers[proposer].peeked.remove(key) {
                                self.stats.peek_fallbacks += 1;
                            }
                            self.proposers[proposer].prepared.insert(key.clone(), *ballot);
                        }
                        Request::Peek { key, .. } => {
                            if to.0 == 1 {
                                self.stats.peeks += 1;
                                self.proposers[proposer].peeked.insert(key.clone());
                            }
                        }
                        Request::Accept { ballot, .. } if to.0 == 1 && last != Some(*ballot) => {
                            self.stats.accepts_without_prepare += 1;
                        }
                        Request::Accept { .. } => {}
                    }
                    let acceptor = (to.0 - 1) as usize;
                    self.transmit(|| Event::ToAcceptor { acceptor, proposer, request: request.clone() });
                }
                ProposerOutput::WakeAt(timer) => {
                    let incarnation = self.proposers[proposer].incarnation;
                    let delay = timer.at.saturating_sub(self.now);
                    self.schedule(delay, Event::Wake { proposer, incarnation, timer });
                }
                ProposerOutput::PersistCounterFloor { counter } => {
                    // Synchronous, before the outputs after it: the contract.
                    self.proposers[proposer].counter_floor = counter;
                }
                ProposerOutput::Done { proposal, result } => self.finish(proposer, proposal, result),
            }
        }
    }

    fn finish(&mut self, proposer: usize, proposal: ProposalId, result: Result<Outcome, Error>) {
        let Some((client, index)) = self.proposers[proposer].waiting.remove(&proposal) else { return };
        let stamp = self.next_stamp();
        let record = &mut self.history[index];
        match result {
            Ok(outcome) => {
                self.stats.ok += 1;
                let seen = match (&outcome, &record.op.change) {
                    (Outcome::Value(v), _) => Some(v.clone()),
                    (Outcome::Swapped(true), Change::Cas { new, .. }) => Some(Some(new.clone())),
                    (Outcome::Written { written: true, .. }, Change::Set { value, .. }) => Some(Some(value.clone())),
                    (Outcome::Written { written: false, old, .. }, _) => old.clone().map(Some),
                    (Outcome::Deleted { .. }, _) => Some(None),
                    _ => None,
                };
                if let Some(seen) = seen {
                    self.clients[client].last_seen.insert(record.key, seen);
                }
                record.op.complete = Some(stamp);
                record.op.outcome = Some(outcome);
            }
            Err(e) if e.maybe_applied() => self.stats.maybe_applied += 1,
            Err(_) => {
                self.stats.failed += 1;
                record.failed = true;
            }
        }
        self.clients[client].busy = false;
        let delay = self.rng.below(30);
        self.schedule(delay, Event::ClientNext { client });
    }

    /// Checks every key's history. `Err` describes the first key that is not linearizable.
    pub fn check(&self) -> Result<(), String> {
        for key in 0..self.params.keys {
            let ops: Vec<Op> =
                self.history.iter().filter(|r| r.key == key && !r.failed).map(|r| r.op.clone()).collect();
            match checker::check(&ops) {
                Verdict::Linearizable => {}
                verdict => return Err(format!("key {key}: {verdict:?}; history: {ops:#?}")),
            }
        }
        Ok(())
    }
}
