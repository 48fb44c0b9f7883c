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
//!
//! In some runs a coordinator also changes the membership while all that goes on (see
//! `membership.rs` for the procedure and the plans, `world/coordinator.rs` for the actor):
//! acceptors join, leave, or lose their disk and come back under a new id. Every request carries
//! its proposer's epoch, and an acceptor handles only requests of its own epoch.
//!
//! In some runs a collector also collects tombstones (`world/collector.rs`): it inspects every
//! voter at its epoch and removes a register only where every voter holds the same tombstone, or
//! none and a floor above it; the floor is durable with the removal and comes back on restart.

use super::checker::{self, Op, Verdict};
use super::membership::{Config, Fault, Plan, Refusal};
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
    /// Keys used only before and after membership changes ([`Plan::cold_keys`]), numbered after
    /// the others.
    pub cold_keys: usize,
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
            cold_keys: 0,
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

mod collector;
mod coordinator;
pub use collector::CollectFault;
use collector::{Collector, CollectorStep, Holding};
use coordinator::{Coordinator, Step};

#[derive(Debug)]
enum Event {
    // A request stamped with its proposer's epoch.
    ToAcceptor { acceptor: usize, proposer: usize, epoch: u64, request: Request },
    ToProposer { proposer: usize, from: NodeId, reply: Reply },
    // An acceptor's answer to a request of another epoch.
    Refused { proposer: usize, acceptor: usize, refusal: Refusal },
    // A configuration for an acceptor to adopt, from the coordinator or a proposer.
    ConfigToAcceptor { acceptor: usize, config: Config, from_coordinator: bool },
    ConfigToProposer { proposer: usize, config: Config },
    // An acceptor tells the coordinator the epoch it has durably adopted.
    ToCoordinator { from: NodeId, epoch: u64 },
    Coordinator(Step),
    // A crash of whichever acceptor is running then (drawn when it happens).
    CrashAnyAcceptor { down_ticks: u64 },
    // A proposer crashes and stays down until the coordinator is done.
    HoldProposerDown { proposer: usize },
    Flush { acceptor: usize, incarnation: u64 },
    Wake { proposer: usize, incarnation: u64, timer: Timer },
    ClientNext { client: usize },
    CrashAcceptor { acceptor: usize, down_ticks: u64 },
    RestartAcceptor { acceptor: usize },
    CrashProposer { proposer: usize, down_ticks: u64 },
    RestartProposer { proposer: usize },
    Forge,
    // Tombstone collection: the collector's timers, its inspection and collection requests
    // (carrying the epoch of its configuration), and an acceptor's answer.
    Collector(CollectorStep),
    Inspect { acceptor: usize, epoch: u64, round: u64, keys: Vec<Key> },
    Inspected { from: NodeId, round: u64, holdings: Vec<Holding> },
    Collect { acceptor: usize, epoch: u64, items: Vec<(Key, Ballot)> },
}

/// What an acceptor sends once the writes before it are durable.
enum Outgoing {
    Reply(Reply),
    Refused(Refusal),
    /// To the coordinator: the epoch this acceptor has durably adopted.
    Ack(u64),
    /// To the collector: what this acceptor holds for each key inspected.
    Inspected {
        round: u64,
        holdings: Vec<Holding>,
    },
    Nothing,
}

/// A durable write an acceptor's group commit makes.
enum Persist {
    Register(DurableWrite),
    /// A collected register: removed, and the floor raised to `floor`, in one transaction.
    Collected {
        key: Key,
        floor: Ballot,
    },
}

struct AcceptorNode {
    id: NodeId,
    /// How far this node's clock is ahead, in ticks.
    skew: u64,
    live: Option<Acceptor>,
    durable: BTreeMap<Key, RegisterState>,
    /// Durable: the collected floor ([`Acceptor::floor`]), written with the removals.
    floor: Ballot,
    /// Durable: the configuration last adopted (`None`: a new node that has none yet). Written
    /// at once when adopted, before the next request is handled; survives crashes.
    config: Option<Config>,
    /// A slot for an id that joins later is not running yet.
    started: bool,
    /// Stopped for good (removed, or its disk was wiped): it never answers again.
    retired: bool,
    /// Handled but not yet durable: (write, what to send, requesting proposer), in order.
    unflushed: Vec<(Option<Persist>, Outgoing, usize)>,
    incarnation: u64,
    flush_armed: bool,
}

struct ProposerNode {
    id: NodeId,
    skew: u64,
    live: Option<Proposer>,
    counter_floor: u64,
    /// Durable: the configuration last adopted; a restart starts from it.
    config: Config,
    /// Down until the membership changes are over.
    held_down: bool,
    incarnation: u64,
    /// Proposal → (who asked, history index).
    waiting: BTreeMap<ProposalId, (Waiter, usize)>,
    /// Last ballot this proposer sent a prepare at, per key (for the fast-path statistic).
    prepared: BTreeMap<Key, rampart_paxos::Ballot>,
    /// Keys whose last read started with a peek (to count peeks that fell back to a prepare).
    peeked: std::collections::BTreeSet<Key>,
}

/// Who is waiting for a proposal.
#[derive(Clone, Copy, Debug)]
enum Waiter {
    Client(usize),
    /// The coordinator's catch-up read.
    Coordinator,
    /// The collector's settling read.
    Collector,
}

struct Client {
    proposer: usize,
    issued: usize,
    /// Operations issued once the membership changes were over ([`Recorded::after_changes`]), and
    /// those of them that succeeded.
    issued_after_changes: usize,
    ok_after_changes: usize,
    busy: bool,
    last_seen: BTreeMap<usize, Option<Vec<u8>>>,
}

/// In runs with membership changes a client goes on past `ops_per_client` while changes are under
/// way (at most [`EXTRA_OPS_MAX`] more; then it waits for them to end), and after the last one
/// until this many of its operations succeeded (or it tried three times as many).
const OPS_AFTER_CHANGES: usize = 3;
const EXTRA_OPS_MAX: usize = 4;

enum Want {
    Now,
    Later,
    Done,
}

/// One operation in the recorded history.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub key: usize,
    pub op: Op,
    /// Dropped from the check: it certainly failed.
    pub failed: bool,
    /// Invoked once the membership changes were over (every one completed, or the coordinator
    /// gave up) and the proposers held down during them were back.
    pub after_changes: bool,
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
    /// Runs with membership changes, and those whose every change completed.
    pub change_runs: usize,
    pub change_runs_completed: usize,
    /// Runs whose every change completed and where a client operation invoked after the last one
    /// succeeded.
    pub change_runs_served_after: usize,
    /// Changes planned and completed (the coordinator reached the change's final configuration).
    pub changes_planned: usize,
    pub changes_completed: usize,
    /// Client operations invoked once the changes were over ([`Recorded::after_changes`]) that
    /// succeeded.
    pub ok_after_changes: usize,
    /// Catch-up reads that succeeded, and those retried.
    pub catch_up_reads: usize,
    pub catch_up_retries: usize,
    /// Requests refused for a later epoch, and for an earlier one (the proposer then pushes its
    /// configuration).
    pub refused_newer: usize,
    pub refused_behind: usize,
    /// Configurations proposers adopted from refusals, and from the coordinator.
    pub learned_from_refusals: usize,
    pub learned_from_coordinator: usize,
    /// Runs with a tombstone collector, and those where it removed a register at some acceptor,
    /// and of those, the ones where a client operation invoked after the first removal succeeded.
    pub collector_runs: usize,
    pub collector_runs_removed: usize,
    pub collector_runs_served_after: usize,
    /// Inspection rounds, keys found collectable, registers removed, keys settled instead,
    /// rounds blocked by a voter that did not answer, passes skipped in a joint configuration,
    /// and inspections or collections refused for their epoch.
    pub collection_rounds: usize,
    pub keys_collected: usize,
    pub registers_removed: usize,
    pub collection_settles: usize,
    pub collection_blocked: usize,
    pub collection_skipped_joint: usize,
    pub collection_refused_epoch: usize,
    /// Keys a broken collector took although not every voter held the tombstone, and those of
    /// them where a voter answered a live value.
    pub collected_unsafely: usize,
    pub collected_over_live: usize,
}

impl Stats {
    /// Adds another run's membership figures to these.
    pub fn add_changes(&mut self, other: &Stats) {
        self.change_runs += other.change_runs;
        self.change_runs_completed += other.change_runs_completed;
        self.change_runs_served_after += other.change_runs_served_after;
        self.changes_planned += other.changes_planned;
        self.changes_completed += other.changes_completed;
        self.ok_after_changes += other.ok_after_changes;
        self.catch_up_reads += other.catch_up_reads;
        self.catch_up_retries += other.catch_up_retries;
        self.refused_newer += other.refused_newer;
        self.refused_behind += other.refused_behind;
        self.learned_from_refusals += other.learned_from_refusals;
        self.learned_from_coordinator += other.learned_from_coordinator;
    }

    /// Adds another run's collection figures to these.
    pub fn add_collection(&mut self, other: &Stats) {
        self.collector_runs += other.collector_runs;
        self.collector_runs_removed += other.collector_runs_removed;
        self.collector_runs_served_after += other.collector_runs_served_after;
        self.collection_rounds += other.collection_rounds;
        self.keys_collected += other.keys_collected;
        self.registers_removed += other.registers_removed;
        self.collection_settles += other.collection_settles;
        self.collection_blocked += other.collection_blocked;
        self.collection_skipped_joint += other.collection_skipped_joint;
        self.collection_refused_epoch += other.collection_refused_epoch;
        self.collected_unsafely += other.collected_unsafely;
        self.collected_over_live += other.collected_over_live;
    }
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
    /// Membership changes, in runs that have them.
    coordinator: Option<Coordinator>,
    fault: Fault,
    /// Tombstone collection, in runs that have it.
    collector: Option<Collector>,
}

/// Which runs change the membership.
enum Changes {
    Never,
    /// The seeds whose plan has changes ([`super::membership::CHANGE_SEEDS_PER_MILLE`]).
    AsDrawn,
    /// Every seed, with the procedure followed or broken.
    Always(Fault),
}

/// Far beyond any run's activity: a guard against a livelock bug looping forever.
const TICKS_MAX: u64 = 200_000;

impl World {
    /// A run of `seed`: membership changes in the seeds whose plan has them (none with a broken
    /// quorum, whose override is for one set of voters only).
    pub fn new(seed: u64, broken_quorum: bool) -> Self {
        let changes = if broken_quorum { Changes::Never } else { Changes::AsDrawn };
        let collector = if broken_quorum { None } else { Collector::draw(seed, false, CollectFault::None) };
        Self::build(seed, broken_quorum, false, changes, collector)
    }

    /// A run of `seed` that always collects tombstones, following the procedure or broken by
    /// `fault` (membership changes as the seed draws them).
    pub fn with_collector(seed: u64, fault: CollectFault) -> Self {
        Self::build(seed, false, false, Changes::AsDrawn, Collector::draw(seed, true, fault))
    }

    /// A run of `seed` that always changes the membership (the plan the seed draws, whether or
    /// not it would have drawn one), following the procedure or broken by `fault`.
    pub fn with_changes(seed: u64, fault: Fault) -> Self {
        Self::build(seed, false, false, Changes::Always(fault), None)
    }

    /// A run with the outsider forging messages, and with the ballot bound on or (to show that
    /// the checker catches the damage) off. No membership changes.
    pub fn with_forgeries(seed: u64, unbounded_ballots: bool) -> Self {
        let mut world = Self::build(seed, false, unbounded_ballots, Changes::Never, None);
        if world.params.forgeries == 0 {
            world.params.forgeries = 4;
            for _ in 0..4 {
                let at = world.rng.below(600);
                world.schedule(at, Event::Forge);
            }
        }
        world
    }

    fn build(
        seed: u64,
        broken_quorum: bool,
        unbounded_ballots: bool,
        changes: Changes,
        mut collector: Option<Collector>,
    ) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut params = Params::from_seed(&mut rng, broken_quorum);
        params.unbounded_ballots = unbounded_ballots;
        let (plan, fault) = match changes {
            Changes::Never => (None, Fault::None),
            Changes::AsDrawn => (Plan::draw(seed, params.proposers, false), Fault::None),
            Changes::Always(fault) => (Plan::draw(seed, params.proposers, true), fault),
        };
        if let Some(plan) = &plan {
            params.acceptors = plan.initial;
            params.cold_keys = plan.cold_keys;
        }
        let initial = Config::initial(params.acceptors);
        let slots = plan.as_ref().map_or(params.acceptors, Plan::slots);
        let acceptors = (0..slots)
            .map(|i| {
                let started = i < params.acceptors;
                AcceptorNode {
                    id: NodeId(1 + i as u64),
                    skew: rng.below(CLOCK_SKEW_MAX_TICKS + 1),
                    live: started.then(Acceptor::new),
                    durable: BTreeMap::new(),
                    floor: Ballot::ZERO,
                    config: started.then(|| initial.clone()),
                    started,
                    retired: false,
                    unflushed: Vec::new(),
                    incarnation: 0,
                    flush_armed: false,
                }
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
            coordinator: None,
            fault,
            params,
            collector: None,
        };
        // A collector seed's clients do more (and delete more, `client_next`); its proposers give
        // up sooner, so that the collector's grace (longer than that) leaves it time to work.
        if let Some(mut collector) = collector.take() {
            world.params.ops_per_client += collector::EXTRA_OPS;
            world.params.keys += collector::EXTRA_KEYS;
            let at = collector.first_at();
            // Crashes while collection goes on too: restarts must bring the floor back, and a
            // voter down for a delete must hold collection up.
            let crashes = collector.late_crashes();
            world.collector = Some(collector);
            world.schedule(at, Event::Collector(CollectorStep::Tick));
            for (at, down_ticks) in crashes {
                world.schedule(at, Event::CrashAnyAcceptor { down_ticks });
            }
        }
        for p in 0..world.params.proposers {
            let id = NodeId(100 + p as u64);
            let skew = world.rng.below(CLOCK_SKEW_MAX_TICKS + 1);
            let live = Some(world.new_proposer(id, skew, 0, &initial));
            world.proposers.push(ProposerNode {
                id,
                skew,
                live,
                counter_floor: 0,
                config: initial.clone(),
                held_down: false,
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
                issued_after_changes: 0,
                ok_after_changes: 0,
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
        if let Some(plan) = plan {
            world.plan_changes(plan, initial);
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

    /// A proposer (new, or restarted) whose voters are those of `voters`, its durable
    /// configuration.
    fn new_proposer(&mut self, id: NodeId, skew: u64, counter_floor: u64, voters: &Config) -> Proposer {
        let mut config = ProposerConfig::new(id, voters.old.clone(), self.rng.next_u64());
        config.attempts_max = 6;
        config.budget_ticks = if self.collector.is_some() { collector::PROPOSER_BUDGET_TICKS } else { 1500 };
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
        let mut proposer = Proposer::new(config).expect("simulation proposer config is valid");
        if voters.new.is_some() {
            let out = proposer.set_voters(self.now, voters.voters()).expect("valid voters");
            assert!(out.is_empty(), "a new proposer has nothing in flight");
        }
        proposer
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
        self.count_changes();
        self.count_collection();
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::ClientNext { client } => self.client_next(client),
            Event::ToAcceptor { acceptor, proposer, epoch, request } => {
                let ceiling = self.ceiling(self.acceptors[acceptor].skew);
                let ignore_epochs = self.fault == Fault::IgnoreEpochs;
                let node = &mut self.acceptors[acceptor];
                let Some(live) = node.live.as_mut() else { return };
                let mine = node.config.as_ref().map(|c| c.epoch);
                let (write, outgoing) = if ignore_epochs || mine == Some(epoch) {
                    let (write, reply) = live.handle(request, ceiling).into_parts();
                    (write.map(Persist::Register), Outgoing::Reply(reply))
                } else if let Some(config) = node.config.as_ref().filter(|c| c.epoch > epoch) {
                    self.stats.refused_newer += 1;
                    (None, Outgoing::Refused(Refusal::Newer(config.clone())))
                } else {
                    self.stats.refused_behind += 1;
                    (None, Outgoing::Refused(Refusal::Behind))
                };
                self.queue(acceptor, write, outgoing, proposer);
            }
            Event::ConfigToAcceptor { acceptor, config, from_coordinator } => {
                let node = &mut self.acceptors[acceptor];
                if node.live.is_none() {
                    return;
                }
                if node.config.as_ref().is_none_or(|mine| config.epoch > mine.epoch) {
                    // Durable at once, before anything after it is handled.
                    node.config = Some(config);
                }
                if from_coordinator {
                    let epoch = node.config.as_ref().expect("just adopted").epoch;
                    self.queue(acceptor, None, Outgoing::Ack(epoch), usize::MAX);
                }
            }
            Event::Refused { proposer, acceptor, refusal } => {
                let node = &self.proposers[proposer];
                if node.live.is_none() {
                    return;
                }
                match refusal {
                    Refusal::Newer(config) => {
                        if config.epoch > node.config.epoch {
                            self.stats.learned_from_refusals += 1;
                            self.adopt(proposer, config);
                        }
                    }
                    Refusal::Behind => {
                        let config = node.config.clone();
                        self.transmit(|| Event::ConfigToAcceptor {
                            acceptor,
                            config: config.clone(),
                            from_coordinator: false,
                        });
                    }
                }
            }
            Event::ConfigToProposer { proposer, config } => {
                let node = &self.proposers[proposer];
                if node.live.is_some() && config.epoch > node.config.epoch {
                    self.stats.learned_from_coordinator += 1;
                    self.adopt(proposer, config);
                }
            }
            Event::ToCoordinator { from, epoch } => self.coordinator_ack(from, epoch),
            Event::Coordinator(step) => self.coordinator_step(step),
            Event::CrashAnyAcceptor { down_ticks } => {
                let running: Vec<usize> =
                    (0..self.acceptors.len()).filter(|&a| self.acceptors[a].live.is_some()).collect();
                if !running.is_empty() {
                    let acceptor = running[self.rng.below(running.len() as u64) as usize];
                    self.step(Event::CrashAcceptor { acceptor, down_ticks });
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
                    match write {
                        Some(Persist::Register(w)) => {
                            node.durable.insert(w.key.clone(), w.state.clone());
                        }
                        Some(Persist::Collected { key, floor }) => {
                            node.durable.remove(key);
                            node.floor = node.floor.max(*floor);
                        }
                        None => {}
                    }
                }
                for (_, outgoing, proposer) in batch {
                    match outgoing {
                        Outgoing::Ack(epoch) => self.transmit(|| Event::ToCoordinator { from, epoch }),
                        Outgoing::Inspected { round, holdings } => {
                            self.transmit(|| Event::Inspected { from, round, holdings: holdings.clone() })
                        }
                        Outgoing::Nothing => {}
                        // An answer to the forger.
                        _ if proposer >= self.proposers.len() => {}
                        Outgoing::Reply(reply) => {
                            self.transmit(|| Event::ToProposer { proposer, from, reply: reply.clone() })
                        }
                        Outgoing::Refused(refusal) => {
                            self.transmit(|| Event::Refused { proposer, acceptor, refusal: refusal.clone() })
                        }
                    }
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
                if node.retired {
                    return;
                }
                let restored = match Acceptor::restore(node.durable.clone(), ceiling)
                    .and_then(|a| a.with_floor(node.floor, ceiling))
                {
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
                if self.crash_proposer(proposer, down_ticks) {
                    self.schedule(down_ticks, Event::RestartProposer { proposer });
                }
            }
            Event::HoldProposerDown { proposer } => {
                if self.crash_proposer(proposer, 0) {
                    self.proposers[proposer].held_down = true;
                }
            }
            Event::RestartProposer { proposer } => {
                if self.proposers[proposer].held_down {
                    return;
                }
                let (id, floor) = (self.proposers[proposer].id, self.proposers[proposer].counter_floor);
                // Proposer ticks are the world's ticks, so its tick-0 clock is unchanged.
                let skew = self.proposers[proposer].skew;
                // It starts from the configuration it last adopted (durable).
                let config = self.proposers[proposer].config.clone();
                let fresh = self.new_proposer(id, skew, floor, &config);
                self.proposers[proposer].live = Some(fresh);
            }
            Event::Forge => self.forge(),
            Event::Collector(step) => self.collector_step(step),
            Event::Inspect { acceptor, epoch, round, keys } => self.acceptor_inspect(acceptor, epoch, round, keys),
            Event::Inspected { from, round, holdings } => self.collector_answer(from, round, holdings),
            Event::Collect { acceptor, epoch, items } => self.acceptor_collect(acceptor, epoch, items),
        }
    }

    /// Crashes a running proposer: in-flight changes are lost and stay pending (they may have
    /// been applied); their clients try again once it is back (`down_ticks`, or polling).
    fn crash_proposer(&mut self, proposer: usize, down_ticks: u64) -> bool {
        let node = &mut self.proposers[proposer];
        if node.live.take().is_none() {
            return false;
        }
        node.incarnation += 1;
        let waiting = std::mem::take(&mut node.waiting);
        self.stats.lost_with_proposer += waiting.len();
        for (waiter, _) in waiting.into_values() {
            match waiter {
                Waiter::Client(client) => {
                    self.clients[client].busy = false;
                    let delay = 1 + self.rng.below(50);
                    self.schedule(down_ticks + delay, Event::ClientNext { client });
                }
                Waiter::Coordinator => self.catch_up_lost(),
                Waiter::Collector => {}
            }
        }
        true
    }

    /// Queues what an acceptor sends once every write before it (and `write`) is durable, and arms
    /// its group commit.
    fn queue(&mut self, acceptor: usize, write: Option<Persist>, outgoing: Outgoing, proposer: usize) {
        let node = &mut self.acceptors[acceptor];
        node.unflushed.push((write, outgoing, proposer));
        if !node.flush_armed {
            node.flush_armed = true;
            let incarnation = node.incarnation;
            let delay = self.rng.below(4);
            self.schedule(delay, Event::Flush { acceptor, incarnation });
        }
    }

    /// A running proposer adopts a later configuration: durably, then its voters change (cached
    /// ballots dropped, attempts in flight retried under the new quorum).
    fn adopt(&mut self, proposer: usize, config: Config) {
        let now = self.now;
        let node = &mut self.proposers[proposer];
        let Some(live) = node.live.as_mut() else { return };
        let outputs = live.set_voters(now, config.voters()).expect("valid voters");
        node.config = config;
        self.perform(proposer, outputs);
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
        // The outsider knows the acceptor's epoch: only the ballot bound stands in its way.
        let epoch = self.acceptors[acceptor].config.as_ref().map_or(0, |c| c.epoch);
        self.transmit(|| Event::ToAcceptor { acceptor, proposer, epoch, request: request.clone() });
    }

    /// A TTL in ms for a client op: mostly positive (up to [`EXPIRY_TTL_MAX_MS`]), sometimes
    /// zero or negative (EXPIRE with a past time removes the key at once).
    fn ttl_ms(&mut self) -> i64 {
        self.rng.below(EXPIRY_TTL_MAX_MS + 20) as i64 - 19
    }

    /// Whether `client` has an operation to issue now, later, or none left.
    fn wants_more(&self, client: usize) -> Want {
        let c = &self.clients[client];
        if c.issued < self.params.ops_per_client {
            return Want::Now;
        }
        let Some(coordinator) = &self.coordinator else { return Want::Done };
        if coordinator.settled(self.now) {
            if c.ok_after_changes < OPS_AFTER_CHANGES && c.issued_after_changes < 3 * OPS_AFTER_CHANGES {
                Want::Now
            } else {
                Want::Done
            }
        } else if c.issued < self.params.ops_per_client + EXTRA_OPS_MAX {
            Want::Now
        } else {
            Want::Later
        }
    }

    fn client_next(&mut self, client: usize) {
        let c = &self.clients[client];
        if c.busy {
            return;
        }
        match self.wants_more(client) {
            Want::Now => {}
            Want::Done => return,
            Want::Later => {
                let delay = 20 + self.rng.below(40);
                return self.schedule(delay, Event::ClientNext { client });
            }
        }
        let proposer = c.proposer;
        if self.proposers[proposer].live.is_none() {
            let delay = 10 + self.rng.below(50);
            self.schedule(delay, Event::ClientNext { client });
            return;
        }
        let cold = self.params.cold_keys as u64;
        let idle = self.coordinator.as_ref().is_some_and(Coordinator::idle);
        let key = if cold > 0 && idle && self.rng.chance(500) {
            self.params.keys + self.rng.below(cold) as usize
        } else {
            self.rng.below(self.params.keys as u64) as usize
        };
        let unique = format!("c{client}-{}", self.clients[client].issued).into_bytes();
        // Key 0 is a counter; the others hold unique strings.
        // A collector seed's clients delete often (and so recreate), for collection to happen.
        let delete = self.collector.is_some() && self.rng.chance(collector::DELETE_PER_MILLE);
        let roll = self.rng.below(100);
        let change = if delete {
            Change::Delete
        } else if key == 0 {
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
                let after_changes = self.coordinator.as_ref().is_some_and(|c| c.settled(now));
                self.clients[client].issued += 1;
                self.clients[client].issued_after_changes += usize::from(after_changes);
                self.clients[client].busy = true;
                self.history.push(Recorded {
                    key,
                    op: Op { invoke, complete: None, change, outcome: None, at },
                    failed: false,
                    after_changes,
                });
                let index = self.history.len() - 1;
                self.proposers[proposer].waiting.insert(id, (Waiter::Client(client), index));
                self.perform(proposer, outputs);
            }
            Err(e) => panic!("propose refused in simulation: {e}"),
        }
    }

    fn perform(&mut self, proposer: usize, outputs: Vec<ProposerOutput>) {
        // The statistics below count each broadcast once, at its first voter.
        let first = self.proposers[proposer].live.as_ref().map(|live| live.voters().all()[0]);
        for output in outputs {
            match output {
                ProposerOutput::Send { to, request } => {
                    // Count accepts sent at a ballot this proposer never prepared (the fast path),
                    // once per broadcast.
                    let last = self.proposers[proposer].prepared.get(request.key()).copied();
                    let counted = Some(to) == first;
                    match &request {
                        Request::Prepare { key, ballot } => {
                            if counted && self.proposers[proposer].peeked.remove(key) {
                                self.stats.peek_fallbacks += 1;
                            }
                            self.proposers[proposer].prepared.insert(key.clone(), *ballot);
                        }
                        Request::Peek { key, .. } => {
                            if counted {
                                self.stats.peeks += 1;
                                self.proposers[proposer].peeked.insert(key.clone());
                            }
                        }
                        Request::Accept { ballot, .. } if counted && last != Some(*ballot) => {
                            self.stats.accepts_without_prepare += 1;
                        }
                        Request::Accept { .. } => {}
                    }
                    let acceptor = (to.0 - 1) as usize;
                    let epoch = self.proposers[proposer].config.epoch;
                    self.transmit(|| Event::ToAcceptor { acceptor, proposer, epoch, request: request.clone() });
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

    /// A read of `key` through running `proposer` for the coordinator or the collector (a full
    /// round if `full_round`), recorded in the history like any read.
    fn background_read(&mut self, proposer: usize, key: usize, waiter: Waiter, full_round: bool) {
        let invoke = self.next_stamp();
        let now = self.now;
        let at = self.params.unix_ms_at_tick_zero + self.proposers[proposer].skew + now;
        let live = self.proposers[proposer].live.as_mut().expect("a running proposer");
        let started = if full_round {
            live.propose_settle(now, vec![key as u8], at)
        } else {
            live.propose_at(now, vec![key as u8], Change::Read, at)
        };
        let (id, outputs) = started.expect("a read is never refused here");
        self.history.push(Recorded {
            key,
            op: Op { invoke, complete: None, change: Change::Read, outcome: None, at },
            failed: false,
            after_changes: false,
        });
        let index = self.history.len() - 1;
        self.proposers[proposer].waiting.insert(id, (waiter, index));
        self.perform(proposer, outputs);
    }

    fn finish(&mut self, proposer: usize, proposal: ProposalId, result: Result<Outcome, Error>) {
        let Some((waiter, index)) = self.proposers[proposer].waiting.remove(&proposal) else { return };
        let stamp = self.next_stamp();
        let record = &mut self.history[index];
        let client = match waiter {
            Waiter::Client(client) => client,
            Waiter::Coordinator => {
                let ok = result.is_ok();
                match result {
                    Ok(outcome) => {
                        record.op.complete = Some(stamp);
                        record.op.outcome = Some(outcome);
                    }
                    // A failed read is dropped; the tombstone it may have written is modelled in
                    // `check`.
                    Err(_) => record.failed = true,
                }
                return self.catch_up_done(ok);
            }
            Waiter::Collector => {
                match result {
                    Ok(outcome) => {
                        record.op.complete = Some(stamp);
                        record.op.outcome = Some(outcome);
                    }
                    // A failed read is dropped, like the catch-up's.
                    Err(_) => record.failed = true,
                }
                return;
            }
        };
        match result {
            Ok(outcome) => {
                self.stats.ok += 1;
                if let Some(c) = self.collector.as_mut() {
                    c.note_success(record.op.invoke);
                }
                self.stats.ok_after_changes += usize::from(record.after_changes);
                self.clients[client].ok_after_changes += usize::from(record.after_changes);
                let seen = match (&outcome, &record.op.change) {
                    // A read answers the register's envelope; the others, the user's value.
                    (Outcome::Value(v), Change::Read) => Some(v.as_deref().map(|raw| {
                        rampart_paxos::decode_register_value(raw).expect("a chosen envelope").value.to_vec()
                    })),
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
        // A collector seed's clients pause longer, so deleted keys sit idle past the grace.
        let delay = self.rng.below(if self.collector.is_some() { collector::THINK_TICKS_MAX } else { 30 });
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

    /// Checks every key's history: linearizable, and the revisions its clients saw consistent
    /// ([`checker::check_revisions`]). `Err` describes the first key that fails.
    ///
    /// A read that finds its value expired at its stamp writes a tombstone (`docs/paxos.md`,
    /// "Expiry"), and that write may reach some acceptors, be adopted by another proposer and so
    /// take effect, whatever the read itself answers in the end (it retries, and may read a later
    /// value) or whether it fails. So every read, succeeded, pending or failed, also counts as a
    /// pending `ExpireDue` at its stamp: the same effect the server's expirer has. (Only where a
    /// value may have expired by then: elsewhere it changes nothing and would only slow the
    /// search.)
    pub fn check(&self) -> Result<(), String> {
        for key in 0..self.params.keys + self.params.cold_keys {
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
            checker::check_revisions(&ops).map_err(|e| format!("key {key}: {e}; history: {ops:#?}"))?;
        }
        Ok(())
    }
}
