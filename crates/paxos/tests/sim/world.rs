//! A seeded, single-threaded simulation of proposers, acceptors, clients and a hostile network.
//!
//! Everything random comes from one `SplitMix64` seeded by the run's seed, events are ordered by
//! (tick, sequence number), and no hash map is iterated, so a seed replays exactly.
//!
//! What it does to the protocol: random delays (which reorder), drops, duplicates; acceptor
//! crashes that lose unpersisted writes and unsent replies (acceptors persist in batches a few
//! ticks after handling, like group commit) and restarts from the durable state; proposer
//! crashes that lose every in-flight change and the ballot cache, restarting from the last
//! persisted counter floor; wrong and right "dead peer" hints; and, in some runs, an outsider
//! that forges messages with extreme ballots (`u64::MAX`, just above the ceiling, exactly at it)
//! to acceptors and proposers, against skewed node clocks. [`World::check_ballots`] then checks
//! that no node took or adopted a counter above its ceiling and no change failed for want of a
//! counter.

use super::checker::{self, Op, Verdict};
use rampart_kv::SetCond;
use rampart_paxos::rng::SplitMix64;
use rampart_paxos::{
    Acceptor, Ballot, Change, CounterCeiling, DurableWrite, Error, Key, NodeId, Outcome, ProposalId, Proposer,
    ProposerConfig, ProposerOutput, RegisterState, Reply, Request, Timer, COUNTER_BLOCK,
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
    /// Messages the outsider forges (0 in most runs).
    pub forgeries: usize,
    /// BREAKS THE BALLOT BOUND (acceptors take and proposers adopt any counter): only to show
    /// that [`World::check_ballots`] catches the poisoning.
    pub unbounded_ballots: bool,
    /// Milliseconds since 1970 at tick 0; each node's clock is off from it by its own skew.
    pub unix_ms_at_tick_zero: u64,
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
            forgeries: if rng.chance(300) { 1 + rng.below(12) as usize } else { 0 },
            unbounded_ballots: false,
            unix_ms_at_tick_zero: 1_700_000_000_000 + rng.below(100_000_000_000),
        }
    }
}

/// Most a node's clock is ahead of the simulation's, in ticks (milliseconds).
const CLOCK_SKEW_MAX_TICKS: u64 = 50;
/// Longest TTL (ms = ticks) the clients set: a few round trips, so keys expire mid-run, and
/// longer than the clock skew, so skew matters without making every TTL moot.
const EXPIRY_TTL_MAX_MS: u64 = 400;

/// The id the outsider signs forged ballots with when it does not borrow a proposer's.
const OUTSIDER: NodeId = NodeId(999);

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
    Forge,
}

struct AcceptorNode {
    id: NodeId,
    /// How far this node's clock is ahead, in ticks.
    skew: u64,
    live: Option<Acceptor>,
    durable: BTreeMap<Key, RegisterState>,
    /// Handled but not yet durable: (write, reply, requesting proposer), in order.
    unflushed: Vec<(Option<DurableWrite>, Reply, usize)>,
    incarnation: u64,
    flush_armed: bool,
}

struct ProposerNode {
    id: NodeId,
    skew: u64,
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
    /// Forged messages delivered.
    pub forged: usize,
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
    /// Changes that failed because no ballot counter was left or allowed.
    counter_failures: Vec<String>,
}

/// Far beyond any run's activity: a guard against a livelock bug looping forever.
const TICKS_MAX: u64 = 200_000;

impl World {
    pub fn new(seed: u64, broken_quorum: bool) -> Self {
        Self::with_ballot_bound(seed, broken_quorum, false)
    }

    /// A run with the outsider forging messages, and with the ballot bound on or (to show that
    /// the checker catches the damage) off.
    pub fn with_forgeries(seed: u64, unbounded_ballots: bool) -> Self {
        let mut world = Self::with_ballot_bound(seed, false, unbounded_ballots);
        if world.params.forgeries == 0 {
            world.params.forgeries = 4;
            for _ in 0..4 {
                let at = world.rng.below(600);
                world.schedule(at, Event::Forge);
            }
        }
        world
    }

    fn with_ballot_bound(seed: u64, broken_quorum: bool, unbounded_ballots: bool) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut params = Params::from_seed(&mut rng, broken_quorum);
        params.unbounded_ballots = unbounded_ballots;
        let acceptors = (0..params.acceptors)
            .map(|i| AcceptorNode {
                id: NodeId(1 + i as u64),
                skew: rng.below(CLOCK_SKEW_MAX_TICKS + 1),
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
            counter_failures: Vec::new(),
            params,
        };
        for p in 0..world.params.proposers {
            let id = NodeId(100 + p as u64);
            let skew = world.rng.below(CLOCK_SKEW_MAX_TICKS + 1);
            let live = Some(world.new_proposer(id, skew, 0));
            world.proposers.push(ProposerNode {
                id,
                skew,
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
        for _ in 0..world.params.forgeries {
            let at = world.rng.below(600);
            world.schedule(at, Event::Forge);
        }
        world
    }

    /// The ballot ceiling of a node whose clock is `skew` ticks ahead, now.
    fn ceiling(&self, skew: u64) -> CounterCeiling {
        if self.params.unbounded_ballots {
            return CounterCeiling::UNBOUNDED_FOR_SIMULATION;
        }
        CounterCeiling::at_unix_ms(self.params.unix_ms_at_tick_zero + skew + self.now)
    }

    fn new_proposer(&mut self, id: NodeId, skew: u64, counter_floor: u64) -> Proposer {
        let members: Vec<NodeId> = self.acceptors.iter().map(|a| a.id).collect();
        let mut config = ProposerConfig::new(id, members, self.rng.next_u64());
        config.attempts_max = 6;
        config.budget_ticks = 1500;
        config.attempt_timeout_ticks = 80;
        config.backoff_base_ticks = 3;
        config.backoff_max_ticks = 60;
        config.initial_counter = counter_floor;
        config.unix_ms_at_tick_zero = self.params.unix_ms_at_tick_zero + skew;
        if self.params.broken_quorum {
            config = config.with_broken_quorum_for_simulation(1);
        }
        if self.params.unbounded_ballots {
            config = config.with_unbounded_ballots_for_simulation();
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
                let ceiling = self.ceiling(self.acceptors[acceptor].skew);
                let node = &mut self.acceptors[acceptor];
                let Some(live) = node.live.as_mut() else { return };
                let (write, reply) = live.handle(request, ceiling).into_parts();
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
                    if proposer >= self.proposers.len() {
                        continue; // an answer to the forger
                    }
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
                let ceiling = self.ceiling(self.acceptors[acceptor].skew);
                let node = &mut self.acceptors[acceptor];
                let restored = match Acceptor::restore(node.durable.clone(), ceiling) {
                    Ok(restored) => restored,
                    Err(e) => {
                        // Only a poisoned register can do this; the acceptor stays down.
                        self.counter_failures.push(format!("acceptor {} cannot restart: {e}", node.id));
                        return;
                    }
                };
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
                // Proposer ticks are the world's ticks, so its tick-0 clock is unchanged.
                let skew = self.proposers[proposer].skew;
                let fresh = self.new_proposer(id, skew, floor);
                self.proposers[proposer].live = Some(fresh);
            }
            Event::Forge => self.forge(),
        }
    }

    /// One forged message from the outsider: an extreme prepare or accept to an acceptor, or an
    /// extreme refusal "from" an acceptor to a proposer.
    fn forge(&mut self) {
        self.stats.forged += 1;
        let key = vec![self.rng.below(self.params.keys as u64) as u8];
        let acceptor = self.rng.below(self.params.acceptors as u64) as usize;
        let ceiling = self.ceiling(self.acceptors[acceptor].skew).counter();
        // Just above every ceiling any node reaches in this run (the clock moves while the
        // message travels, and the ceiling with it).
        let beyond_run =
            CounterCeiling::at_unix_ms(self.params.unix_ms_at_tick_zero + TICKS_MAX + CLOCK_SKEW_MAX_TICKS).counter();
        let counter = match self.rng.below(4) {
            0 => u64::MAX,
            1 => u64::MAX - self.rng.below(1_000),
            2 if self.params.unbounded_ballots => u64::MAX - self.rng.below(1_000),
            2 => beyond_run.saturating_add(1 + self.rng.below(1_000)),
            // Exactly at the ceiling: allowed, and it must leave the cluster working.
            _ => ceiling,
        };
        let node = if self.rng.chance(500) {
            OUTSIDER
        } else {
            self.proposers[self.rng.below(self.params.proposers as u64) as usize].id
        };
        let ballot = Ballot::new(counter, node);
        let roll = self.rng.below(3);
        if roll == 2 {
            let proposer = self.rng.below(self.params.proposers as u64) as usize;
            let from = self.acceptors[acceptor].id;
            let reply = Reply::Nack { key, ballot: Ballot::new(1, self.proposers[proposer].id), promised: ballot };
            self.transmit(|| Event::ToProposer { proposer, from, reply: reply.clone() });
            return;
        }
        // An accept at or below the ceiling would be a Byzantine member writing a value of its
        // choosing, outside what Paxos (or any bound) protects against: only prepares go there.
        let request = if roll == 1 && counter > beyond_run {
            Request::Accept { key, ballot, value: Some(b"forged".to_vec()), base: Ballot::ZERO }
        } else {
            Request::Prepare { key, ballot }
        };
        // Replies to the forger go nowhere: `proposers.len()` is no proposer.
        let proposer = self.proposers.len();
        self.transmit(|| Event::ToAcceptor { acceptor, proposer, request: request.clone() });
    }

    /// A TTL in ms for a client op: mostly positive (up to [`EXPIRY_TTL_MAX_MS`]), sometimes
    /// zero or negative (EXPIRE with a past time removes the key at once).
    fn ttl_ms(&mut self) -> i64 {
        self.rng.below(EXPIRY_TTL_MAX_MS + 20) as i64 - 19
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
                30..=59 => {
                    Change::Set { value: unique, cond: SetCond::Always, return_old: true, ttl: rampart_kv::Ttl::Clear }
                }
                60..=79 => {
                    let expected = self.clients[client].last_seen.get(&key).cloned().flatten();
                    Change::Cas { expected, new: unique }
                }
                80..=84 => Change::Set {
                    value: unique,
                    cond: SetCond::IfPresent,
                    return_old: false,
                    ttl: rampart_kv::Ttl::Clear,
                },
                85..=87 => Change::Append { value: unique, value_bytes_max: usize::MAX },
                // Expiry: TTLs of a few round trips, so keys do expire while clients work.
                88..=90 => Change::Set {
                    value: unique,
                    cond: SetCond::Always,
                    return_old: true,
                    ttl: rampart_kv::Ttl::In(self.ttl_ms()),
                },
                91 => Change::Expire {
                    ttl: rampart_kv::Ttl::In(self.ttl_ms()),
                    cond: match self.rng.below(5) {
                        0 => rampart_kv::ExpireCond::Always,
                        1 => rampart_kv::ExpireCond::IfNone,
                        2 => rampart_kv::ExpireCond::IfSome,
                        3 => rampart_kv::ExpireCond::IfGreater,
                        _ => rampart_kv::ExpireCond::IfLess,
                    },
                },
                92 => Change::Persist,
                93 => Change::GetEx(match self.rng.below(3) {
                    0 => rampart_kv::Ttl::Keep,
                    1 => rampart_kv::Ttl::Clear,
                    _ => rampart_kv::Ttl::In(self.ttl_ms()),
                }),
                94 => Change::GetDel,
                95 => Change::ExpireDue,
                96 => Change::Set {
                    value: unique,
                    cond: SetCond::IfPresent,
                    return_old: false,
                    ttl: rampart_kv::Ttl::Keep,
                },
                _ => Change::Delete,
            }
        };
        let invoke = self.next_stamp();
        let now = self.now;
        // The proposer's node clock, skew included: the change applies at it.
        let at = self.params.unix_ms_at_tick_zero + self.proposers[proposer].skew + now;
        let live = self.proposers[proposer].live.as_mut().expect("checked above");
        match live.propose_at(now, vec![key as u8], change.clone(), at) {
            Ok((id, outputs)) => {
                self.clients[client].issued += 1;
                self.clients[client].busy = true;
                self.history.push(Recorded {
                    key,
                    op: Op { invoke, complete: None, change, outcome: None, at },
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
                    // A read answers the register's envelope; the others, the user's value.
                    (Outcome::Value(v), Change::Read) => {
                        Some(v.as_deref().map(|raw| {
                            rampart_paxos::decode_register_value(raw).expect("a chosen envelope").0.to_vec()
                        }))
                    }
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
            Err(e @ (Error::CounterExhausted | Error::AboveCeiling { .. })) => {
                self.counter_failures.push(format!("proposer {}: {e}", self.proposers[proposer].id));
                self.stats.failed += 1;
                record.failed = true;
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

    /// Checks the ballot bound: no change failed for want of a counter, no acceptor failed to
    /// restart, no register (live or durable) holds a promise above its acceptor's ceiling, and
    /// no proposer's counter passed its own ceiling by more than the block it reserves.
    pub fn check_ballots(&self) -> Result<(), String> {
        if let Some(first) = self.counter_failures.first() {
            return Err(format!("{} counter failures, first: {first}", self.counter_failures.len()));
        }
        let bound = |skew: u64| CounterCeiling::at_unix_ms(self.params.unix_ms_at_tick_zero + skew + self.now);
        for a in &self.acceptors {
            let ceiling = bound(a.skew);
            let live = a.live.iter().flat_map(|l| l.registers().map(|(k, s)| (k.clone(), s.clone())));
            for (key, state) in a.durable.clone().into_iter().chain(live) {
                if !ceiling.allows(state.promised) {
                    return Err(format!("acceptor {} key {key:?} promised {} above {ceiling}", a.id, state.promised));
                }
            }
        }
        for p in &self.proposers {
            let ceiling = bound(p.skew).counter().saturating_add(COUNTER_BLOCK);
            if let Some(live) = &p.live {
                if live.counter() > ceiling {
                    return Err(format!("proposer {} counter {} above {ceiling}", p.id, live.counter()));
                }
            }
        }
        Ok(())
    }

    /// Checks every key's history. `Err` describes the first key that is not linearizable.
    ///
    /// A read that finds its value expired at its stamp writes a tombstone (`docs/paxos.md`,
    /// "Expiry"), and that write may reach some acceptors, be adopted by another proposer and so
    /// take effect, whatever the read itself answers in the end (it retries, and may read a later
    /// value) or whether it fails. So every read, succeeded, pending or failed, also counts as a
    /// pending `ExpireDue` at its stamp: the same effect the server's expirer has. (Only where a
    /// value may have expired by then: elsewhere it changes nothing and would only slow the
    /// search.)
    pub fn check(&self) -> Result<(), String> {
        for key in 0..self.params.keys {
            let recorded: Vec<&Recorded> = self.history.iter().filter(|r| r.key == key).collect();
            let all: Vec<Op> = recorded.iter().map(|r| r.op.clone()).collect();
            let expiry = checker::earliest_expiry(&all).unwrap_or(u64::MAX);
            let ops: Vec<Op> = recorded
                .into_iter()
                .flat_map(|r| {
                    let tombstone = (r.op.change == Change::Read && r.op.at >= expiry).then(|| Op {
                        change: Change::ExpireDue,
                        complete: None,
                        outcome: None,
                        ..r.op.clone()
                    });
                    (!r.failed).then(|| r.op.clone()).into_iter().chain(tombstone)
                })
                .collect();
            match checker::check(&ops) {
                Verdict::Linearizable => {}
                verdict => return Err(format!("key {key}: {verdict:?}; history: {ops:#?}")),
            }
        }
        Ok(())
    }
}
