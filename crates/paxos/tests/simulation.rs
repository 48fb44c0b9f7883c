//! Deterministic simulation of the CASPaxos core under loss, delay, duplication, reordering and
//! crashes, with every history checked for linearizability.
//!
//! `PAXOS_SIM_SEEDS=N` runs N seeds (default [`DEFAULT_SEEDS`], sized for a debug build on two
//! cores); `PAXOS_SIM_SEED=S` replays one seed exactly (a failure prints the seed). About 40% of
//! the seeds also change the membership while clients work (`sim/membership.rs`), and about
//! 40% collect tombstones (`sim/world/collector.rs`).

mod sim;

use rampart_paxos::{
    Ballot, Change, CounterCeiling, NodeId, Outcome, Proposer, ProposerConfig, ProposerOutput, Reply, Request, Voters,
};
use sim::membership::{ChangeKind, Fault, Plan};
use sim::world::{CollectFault, Stats, World};

/// The acceptors' ballot ceiling in the hand-driven tests: a proposer's at tick 0 by default.
const CEILING: CounterCeiling = CounterCeiling::at_unix_ms(0);

/// Seeds per `cargo test` run; see the module docs.
const DEFAULT_SEEDS: u64 = 10_000;

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("PAXOS_SIM_SEED") {
        return vec![seed.trim().parse().expect("PAXOS_SIM_SEED must be a u64")];
    }
    let n = std::env::var("PAXOS_SIM_SEEDS")
        .ok()
        .map(|n| n.trim().parse().expect("PAXOS_SIM_SEEDS must be a u64"))
        .unwrap_or(DEFAULT_SEEDS);
    (0..n).collect()
}

fn run(seed: u64, broken_quorum: bool) -> (Result<(), String>, Stats) {
    finish(World::new(seed, broken_quorum))
}

/// Runs a world and checks it; a failure names the membership plan too.
fn finish(mut world: World) -> (Result<(), String>, Stats) {
    world.run();
    let result = world.check().and_then(|()| world.check_ballots());
    (result.map_err(|e| format!("{}\n{e}", world.describe_changes())), world.stats.clone())
}

/// A run where an outsider forges extreme ballots; `Err` if either check fails.
fn run_forged(seed: u64, unbounded_ballots: bool) -> (Result<(), String>, Stats) {
    let mut world = World::with_forgeries(seed, unbounded_ballots);
    world.run();
    (world.check_ballots().and_then(|()| world.check()), world.stats.clone())
}

/// Runs seeds on every core; each seed is single-threaded and deterministic.
fn run_all(seeds: &[u64], broken_quorum: bool) -> Vec<(u64, Result<(), String>, Stats)> {
    run_each(seeds, |seed| run(seed, broken_quorum))
}

fn run_each(
    seeds: &[u64],
    one: impl Fn(u64) -> (Result<(), String>, Stats) + Sync,
) -> Vec<(u64, Result<(), String>, Stats)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let chunk = seeds.len().div_ceil(threads).max(1);
    let one = &one;
    std::thread::scope(|scope| {
        let handles: Vec<_> = seeds
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|&s| {
                            let (r, st) = one(s);
                            (s, r, st)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("simulation thread panicked")).collect()
    })
}

#[test]
fn every_seed_is_linearizable() {
    let seeds = seeds();
    let results = run_all(&seeds, false);
    let mut total = Stats::default();
    for (seed, result, stats) in &results {
        if let Err(violation) = result {
            panic!("seed {seed} failed the linearizability check; replay with PAXOS_SIM_SEED={seed}\n{violation}");
        }
        total.ok += stats.ok;
        total.maybe_applied += stats.maybe_applied;
        total.failed += stats.failed;
        total.lost_with_proposer += stats.lost_with_proposer;
        total.messages += stats.messages;
        total.accepts_without_prepare += stats.accepts_without_prepare;
        total.peeks += stats.peeks;
        total.peek_fallbacks += stats.peek_fallbacks;
        total.forged += stats.forged;
        total.add_changes(stats);
        total.add_collection(stats);
    }
    eprintln!("{} seeds: {total:?}", seeds.len());
    // The run must have done real work, through the fast path too, for the check to mean much.
    if seeds.len() >= 100 {
        let attempted = total.ok + total.maybe_applied + total.failed + total.lost_with_proposer;
        assert!(total.ok * 10 >= attempted * 7, "too few changes succeeded: {total:?}");
        assert!(total.accepts_without_prepare > 0, "the one-round-trip path never ran: {total:?}");
        assert!(total.peeks > total.peek_fallbacks, "no read was answered by its peek: {total:?}");
        assert_membership_changes_worked(&total);
        assert_collection_worked(&total);
    }
}

/// Tombstone collection did real work: most runs with a collector removed registers, and clients
/// were served after the first removal in most of those.
fn assert_collection_worked(total: &Stats) {
    assert!(total.collector_runs > 0, "no seed collected tombstones: {total:?}");
    assert!(total.collector_runs_removed * 100 >= total.collector_runs * 60, "too little was collected: {total:?}");
    assert!(
        total.collector_runs_served_after * 100 >= total.collector_runs_removed * 90,
        "clients made no progress after collection: {total:?}"
    );
    assert!(total.collection_settles > 0 && total.collection_blocked > 0, "{total:?}");
}

/// Seeds of each broken collection (a collection on a majority is caught more rarely: see
/// docs/paxos.md, "What the simulation checks").
const BROKEN_COLLECTION_SEEDS: u64 = 300;
const MAJORITY_COLLECTION_SEEDS: u64 = 1_000;

/// Runs `n` seeds that all collect tombstones, broken by `fault`; returns how many were caught
/// and the runs' figures.
fn collection_caught_with(fault: CollectFault, n: u64) -> (usize, Stats) {
    let seeds: Vec<u64> = (0..n).collect();
    let results = run_each(&seeds, |seed| finish(World::with_collector(seed, fault)));
    let mut total = Stats::default();
    for (_, _, stats) in &results {
        total.add_collection(stats);
    }
    let failed: Vec<u64> = results.iter().filter(|(_, r, _)| r.is_err()).map(|(s, _, _)| *s).collect();
    eprintln!("{fault:?}: caught at seeds {failed:?}");
    (failed.len(), total)
}

#[test]
fn collecting_without_the_floor_is_caught() {
    let (caught, total) = collection_caught_with(CollectFault::NoFloor, BROKEN_COLLECTION_SEEDS);
    eprintln!("no floor: {caught} of {BROKEN_COLLECTION_SEEDS} seeds caught; {total:?}");
    assert!(caught * 100 >= BROKEN_COLLECTION_SEEDS as usize * 3, "only {caught} caught without the floor");
}

#[test]
fn collecting_on_a_majority_is_caught() {
    let (caught, total) = collection_caught_with(CollectFault::MajorityOnly, MAJORITY_COLLECTION_SEEDS);
    eprintln!("majority only: {caught} of {MAJORITY_COLLECTION_SEEDS} seeds caught; {total:?}");
    assert!(total.collected_over_live > 0, "no key was collected over a live value: {total:?}");
    assert!(caught >= 5, "only {caught} caught collecting on a majority");
}

#[test]
fn collecting_within_a_proposers_budget_is_caught() {
    let (caught, total) = collection_caught_with(CollectFault::ShortGrace, BROKEN_COLLECTION_SEEDS);
    eprintln!("short grace: {caught} of {BROKEN_COLLECTION_SEEDS} seeds caught; {total:?}");
    assert!(caught > 0, "a grace shorter than the proposers' budget was never caught");
}

#[test]
fn the_correct_collection_passes_in_every_seed_that_collects() {
    let (caught, total) = collection_caught_with(CollectFault::None, BROKEN_COLLECTION_SEEDS);
    eprintln!("collection as specified: {caught} of {BROKEN_COLLECTION_SEEDS} seeds fail; {total:?}");
    assert_eq!(caught, 0);
}

/// The membership changes of a run of many seeds did real work: most runs with changes
/// completed every change and served clients after the last one, and the paths by which
/// configurations travel (the coordinator, refusals of a later epoch, pushes to an acceptor
/// behind, catch-up reads) all ran.
fn assert_membership_changes_worked(total: &Stats) {
    assert!(total.change_runs > 0, "no seed changed the membership: {total:?}");
    assert!(total.change_runs_completed * 100 >= total.change_runs * 95, "changes did not complete: {total:?}");
    assert!(
        total.change_runs_served_after * 100 >= total.change_runs_completed * 90,
        "clients made no progress after the changes: {total:?}"
    );
    assert!(total.catch_up_reads >= total.changes_completed, "{total:?}");
    assert!(total.learned_from_refusals > 0 && total.learned_from_coordinator > 0, "{total:?}");
    assert!(total.refused_newer > 0 && total.refused_behind > 0, "{total:?}");
}

/// Seeds of each broken membership procedure.
const BROKEN_CHANGE_SEEDS: usize = 200;

/// The first `n` seeds whose plan (drawn as in every change run) passes `keep`.
fn change_seeds(n: usize, keep: impl Fn(&Plan) -> bool) -> Vec<u64> {
    (0..).filter(|&seed| Plan::draw(seed, 2, true).is_some_and(|plan| keep(&plan))).take(n).collect()
}

/// Runs `seeds` with the procedure broken by `fault`; returns how many were caught.
fn caught_with(seeds: &[u64], fault: Fault) -> usize {
    let results = run_each(seeds, |seed| finish(World::with_changes(seed, fault)));
    results.iter().filter(|(_, r, _)| r.is_err()).count()
}

#[test]
fn skipping_the_catch_up_is_caught() {
    // Where the catch-up matters most: an acceptor loses its disk while another lagged, and some
    // keys sit idle during the change, so only the acceptor that is gone held their last value
    // together with one that stays.
    let seeds = change_seeds(BROKEN_CHANGE_SEEDS, |plan| {
        matches!(plan.changes[0].kind, ChangeKind::Replace { .. }) && plan.lagging.is_some() && plan.cold_keys > 0
    });
    let caught = caught_with(&seeds, Fault::SkipCatchUp);
    eprintln!("no catch-up: {caught} of {} seeds (a replacement with a lagging member) not linearizable", seeds.len());
    assert!(caught * 100 >= seeds.len() * 5, "only {caught} of {} seeds caught without the catch-up", seeds.len());
}

#[test]
fn acceptors_that_ignore_epochs_are_caught() {
    // Where epochs matter: a proposer down during two changes comes back with the first
    // configuration, a quorum of which can miss every quorum of the last one.
    let seeds = change_seeds(BROKEN_CHANGE_SEEDS, |plan| {
        plan.changes.len() == 2 && plan.stale_proposer.is_some() && plan.initial_and_final_quorums_can_miss()
    });
    let caught = caught_with(&seeds, Fault::IgnoreEpochs);
    eprintln!("epochs ignored: {caught} of {} seeds (a proposer two changes behind) not linearizable", seeds.len());
    assert!(caught * 100 >= seeds.len() * 5, "only {caught} of {} seeds caught with epochs ignored", seeds.len());
}

#[test]
fn a_broken_quorum_is_caught() {
    let seeds: Vec<u64> = (0..300).collect();
    let caught = run_all(&seeds, true).into_iter().filter(|(_, r, _)| r.is_err()).count();
    eprintln!("quorum of one: {caught} of {} seeds not linearizable", seeds.len());
    assert!(caught >= 3, "the checker found only {caught} violations with a quorum of one");
}

#[test]
fn a_forged_u64_max_ballot_neither_poisons_the_acceptors_nor_the_proposers() {
    let mut bench = Bench::new();
    let forged = Ballot::new(u64::MAX, NodeId(666));
    for acceptor in &mut bench.acceptors {
        let (write, reply) =
            acceptor.handle(Request::Prepare { key: b"k".to_vec(), ballot: forged }, CEILING).into_parts();
        assert!(write.is_none(), "nothing to persist for a refused prepare");
        assert!(matches!(reply, Reply::Nack { promised, .. } if promised == Ballot::ZERO), "{reply:?}");
    }
    let mut a = proposer(10);
    // The forger also answers in an acceptor's name, with the extreme ballot as its promise.
    let before = a.counter();
    let _ = a.on_reply(
        0,
        NodeId(1),
        Reply::Nack { key: b"k".to_vec(), ballot: Ballot::new(1, NodeId(10)), promised: forged },
    );
    a.observe_foreign(0, b"k", forged);
    assert_eq!(a.counter(), before, "a counter above the ceiling is never adopted");
    for n in 1..=3 {
        let (_, out) = a.propose(0, b"k".to_vec(), Change::IncrBy(1)).unwrap();
        assert_eq!(bench.drive(&mut a, out), Ok(Outcome::Integer(n)));
        let (_, out) = a.propose(0, format!("other{n}").into_bytes(), Change::IncrBy(1)).unwrap();
        assert_eq!(bench.drive(&mut a, out), Ok(Outcome::Integer(1)));
    }
    // A high counter within the ceiling is adopted: that is how proposers leapfrog each other.
    let high = Ballot::new(CEILING.counter() - 10, NodeId(20));
    let _ = a.on_reply(0, NodeId(2), Reply::Nack { key: b"x".to_vec(), ballot: high, promised: high });
    assert_eq!(a.counter(), high.counter);
    assert_eq!(a.ceiling_at(0), CEILING);
}

/// Seeds of the forged-ballot runs.
const FORGED_SEEDS: u64 = 1_000;

#[test]
fn forged_extreme_ballots_leave_every_node_working() {
    let mut total = Stats::default();
    for seed in 0..FORGED_SEEDS {
        let (result, stats) = run_forged(seed, false);
        if let Err(violation) = result {
            panic!("seed {seed} failed with forged ballots:\n{violation}");
        }
        total.ok += stats.ok;
        total.failed += stats.failed;
        total.maybe_applied += stats.maybe_applied;
        total.forged += stats.forged;
    }
    eprintln!("{FORGED_SEEDS} forged-ballot seeds: {total:?}");
    assert!(total.forged >= 4 * FORGED_SEEDS as usize, "{total:?}");
    let attempted = total.ok + total.failed + total.maybe_applied;
    assert!(total.ok * 10 >= attempted * 7, "too few changes succeeded under forged ballots: {total:?}");
}

#[test]
fn unbounded_ballots_are_caught() {
    let seeds = 0..300u64;
    let caught = seeds.clone().filter(|&seed| run_forged(seed, true).0.is_err()).count();
    eprintln!("unbounded ballots: {caught} of {} seeds caught", seeds.count());
    assert!(caught >= 30, "the ballot check caught only {caught} poisoned runs");
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 17, 99] {
        for make in [
            |s| World::new(s, false),
            |s| World::with_changes(s, Fault::None),
            |s| World::with_collector(s, CollectFault::None),
        ] {
            let mut a = make(seed);
            a.run();
            let mut b = make(seed);
            b.run();
            assert_eq!(format!("{:?}", a.history), format!("{:?}", b.history));
            assert_eq!(a.stats, b.stats);
        }
    }
}

/// A loss-free cluster driven by hand: three acceptors, replies delivered at once.
struct Bench {
    acceptors: Vec<rampart_paxos::Acceptor>,
    sent: Vec<Request>,
}

impl Bench {
    fn new() -> Self {
        Self::with(3)
    }

    fn with(acceptors: usize) -> Self {
        Bench { acceptors: (0..acceptors).map(|_| rampart_paxos::Acceptor::new()).collect(), sent: Vec::new() }
    }

    /// Delivers every send to its acceptor (persisting is a no-op here) and every reply back,
    /// until the proposal finishes; returns its outcome.
    fn drive(
        &mut self,
        proposer: &mut Proposer,
        mut outputs: Vec<ProposerOutput>,
    ) -> Result<Outcome, rampart_paxos::Error> {
        let mut timers = Vec::new();
        for _ in 0..1000 {
            let mut next = Vec::new();
            for output in outputs {
                match output {
                    ProposerOutput::Send { to, request } => {
                        self.sent.push(request.clone());
                        let (_, reply) = self.acceptors[(to.0 - 1) as usize].handle(request, CEILING).into_parts();
                        next.extend(proposer.on_reply(0, to, reply));
                    }
                    ProposerOutput::Done { result, .. } => return result,
                    ProposerOutput::WakeAt(timer) => timers.push(timer),
                    ProposerOutput::PersistCounterFloor { .. } => {}
                }
            }
            if next.is_empty() {
                // Nothing in flight: fire the timers (stale ones are ignored by the proposer).
                for timer in timers.drain(..) {
                    next.extend(proposer.on_timer(timer.at, timer));
                }
            }
            assert!(!next.is_empty(), "proposal stalled without loss");
            outputs = next;
        }
        panic!("proposal did not finish");
    }
}

fn proposer(node: u64) -> Proposer {
    Proposer::new(ProposerConfig::new(NodeId(node), vec![NodeId(1), NodeId(2), NodeId(3)], node)).unwrap()
}

/// The register envelope of a value without expiry at `revision` (what a read answers).
fn env(value: &[u8], revision: u64) -> Vec<u8> {
    rampart_paxos::encode_register_value(value, None, revision)
}

/// The revision a write answered, once it is checked to be a write over `old`.
fn written(result: Result<Outcome, rampart_paxos::Error>, old: Option<&[u8]>) -> u64 {
    match result {
        Ok(Outcome::Written { written: true, old: o, current_revision }) if o.as_deref() == old => current_revision,
        other => panic!("expected a write over {old:?}, got {other:?}"),
    }
}

/// The user's value and revision a read answered.
fn read_value(result: Result<Outcome, rampart_paxos::Error>) -> (Vec<u8>, u64) {
    match result {
        Ok(Outcome::Value(Some(raw))) => {
            let d = rampart_paxos::decode_register_value(&raw).unwrap();
            (d.value.to_vec(), d.revision)
        }
        other => panic!("expected a value, got {other:?}"),
    }
}

fn prepares(sent: &[Request]) -> usize {
    sent.iter().filter(|r| matches!(r, Request::Prepare { .. })).count()
}

#[test]
fn new_voters_drop_the_cached_ballots_and_retry_what_is_in_flight_under_the_new_quorum() {
    let mut bench = Bench::with(4);
    let mut a = proposer(1);
    let (_, out) = a.propose(0, b"k".to_vec(), set(b"1")).unwrap();
    assert!(matches!(bench.drive(&mut a, out), Ok(Outcome::Written { written: true, .. })));
    // A change in flight when the voters change: its sends are lost, it is retried.
    let (_, lost) = a.propose(1, b"k".to_vec(), Change::IncrBy(1)).unwrap();
    assert!(lost.iter().any(|o| matches!(o, ProposerOutput::Send { request: Request::Accept { .. }, .. })));
    let joint = Voters::joint(&[NodeId(1), NodeId(2), NodeId(3)], &[NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
    let out = a.set_voters(2, joint.unwrap()).unwrap();
    assert!(out.iter().all(|o| matches!(o, ProposerOutput::WakeAt(_))), "{out:?}");
    bench.sent.clear();
    assert_eq!(bench.drive(&mut a, out), Ok(Outcome::Integer(2)));
    assert!(prepares(&bench.sent) >= 4, "a retry prepares at every voter, the new one included");
    // The cache was dropped: the next change on the key prepares again, at all four.
    bench.sent.clear();
    let (_, out) = a.propose(3, b"k".to_vec(), Change::IncrBy(1)).unwrap();
    assert_eq!(bench.drive(&mut a, out), Ok(Outcome::Integer(3)));
    assert!(bench.acceptors[3].register(b"k").is_some(), "the new voter took the value");
}

#[test]
fn the_same_key_at_the_same_node_takes_one_round_trip_and_a_takeover_invalidates_it() {
    let mut bench = Bench::new();
    let mut a = proposer(10);
    let (_, out) = a.propose(0, b"k".to_vec(), set(b"1")).unwrap();
    let first = written(bench.drive(&mut a, out), None);
    assert_eq!(first, 1, "the revision is the counter of a fresh proposer's first ballot");
    assert_eq!(prepares(&bench.sent), 3, "the first change needs a prepare round");
    assert_eq!(a.cached_keys(), 1);

    bench.sent.clear();
    for n in 2..5 {
        let (_, out) = a.propose(0, b"k".to_vec(), Change::IncrBy(1)).unwrap();
        assert_eq!(bench.drive(&mut a, out), Ok(Outcome::Integer(n)));
    }
    assert_eq!(prepares(&bench.sent), 0, "cached ballot: accepts only");
    assert_eq!(bench.sent.len(), 9);

    // A read elsewhere is a peek: it changes nothing, so A's cached ballot stays good.
    let mut b = proposer(20);
    let (_, out) = b.propose(0, b"k".to_vec(), Change::Read).unwrap();
    // Each fast-path change took the next counter, and the value carries the last one.
    assert_eq!(bench.drive(&mut b, out), Ok(Outcome::Value(Some(env(b"4", first + 3)))));
    assert!(bench
        .sent
        .iter()
        .all(|r| !matches!(r, Request::Prepare { .. } | Request::Accept { .. } if r.ballot().node == NodeId(20))));

    // Another node takes the key over with a higher ballot (writing the same value).
    let (_, out) = b.propose(0, b"k".to_vec(), set(b"4")).unwrap();
    let taken = written(bench.drive(&mut b, out), Some(b"4"));
    assert!(taken > first + 3, "revision {taken} after {}", first + 3);

    // A's cached accept is refused by every acceptor. Its retry's prepare finds B's value,
    // derived from a value older than A's refused accept, so A applies the change afresh, once.
    bench.sent.clear();
    let (_, out) = a.propose(0, b"k".to_vec(), Change::IncrBy(10)).unwrap();
    assert_eq!(bench.drive(&mut a, out), Ok(Outcome::Integer(14)));
    assert!(prepares(&bench.sent) >= 3, "the stale fast path must fall back to prepare");
    // And it is back on the one-round-trip path.
    bench.sent.clear();
    let (_, out) = a.propose(0, b"k".to_vec(), Change::Read).unwrap();
    let (value, revision) = read_value(bench.drive(&mut a, out));
    assert_eq!(value, b"14");
    assert!(revision > taken, "revision {revision} after {taken}");
    assert_eq!(prepares(&bench.sent), 0);
}

#[test]
fn a_foreign_ballot_hint_drops_the_stale_cache_so_the_next_change_prepares() {
    let mut bench = Bench::new();
    let mut a = proposer(10);
    let (_, out) = a.propose(0, b"k".to_vec(), set(b"1")).unwrap();
    written(bench.drive(&mut a, out), None);
    assert_eq!(a.cached_keys(), 1);
    // Its own ballots and other keys leave the cache alone.
    a.observe_foreign(0, b"k", Ballot::new(1_000, NodeId(10)));
    a.observe_foreign(0, b"other", Ballot::new(1_000, NodeId(20)));
    assert_eq!(a.cached_keys(), 1);

    let mut b = proposer(20);
    let (_, out) = b.propose(0, b"k".to_vec(), set(b"2")).unwrap();
    written(bench.drive(&mut b, out), Some(b"1"));
    let seen = bench.sent.iter().rev().find_map(|r| match r {
        Request::Accept { ballot, .. } if ballot.node == NodeId(20) => Some(*ballot),
        _ => None,
    });
    a.observe_foreign(0, b"k", seen.expect("b sent an accept"));
    assert_eq!(a.cached_keys(), 0, "the hint drops the stale ballot");

    // No refused fast accept: a full round, and the change applies once.
    bench.sent.clear();
    let (_, out) =
        a.propose(0, b"k".to_vec(), Change::Append { value: b"3".to_vec(), value_bytes_max: usize::MAX }).unwrap();
    assert_eq!(bench.drive(&mut a, out), Ok(Outcome::Integer(2)));
    assert_eq!(prepares(&bench.sent), 3);
    assert!(!bench
        .sent
        .iter()
        .any(|r| matches!(r, Request::Accept { ballot, .. } if ballot.counter <= seen.unwrap().counter)));
}

#[test]
fn a_read_is_answered_by_an_agreeing_majority_without_any_write() {
    let mut bench = Bench::new();
    let mut a = proposer(10);
    let (_, out) = a.propose(0, b"k".to_vec(), set(b"1")).unwrap();
    let revision = written(bench.drive(&mut a, out), None);
    let before: Vec<_> = bench.acceptors.iter().map(|x| x.register(b"k").cloned()).collect();
    bench.sent.clear();
    let mut b = proposer(20);
    let (_, out) = b.propose(0, b"k".to_vec(), Change::Read).unwrap();
    assert_eq!(bench.drive(&mut b, out), Ok(Outcome::Value(Some(env(b"1", revision)))));
    assert!(bench.sent.iter().all(|r| matches!(r, Request::Peek { .. })), "{:?}", bench.sent);
    let after: Vec<_> = bench.acceptors.iter().map(|x| x.register(b"k").cloned()).collect();
    assert_eq!(before, after, "a peek changes no register");

    // Acceptors that disagree (an accept that reached one of them only) make the read fall back
    // to a full round, which settles the value.
    let mut acceptors =
        vec![rampart_paxos::Acceptor::new(), rampart_paxos::Acceptor::new(), rampart_paxos::Acceptor::new()];
    let mut w = proposer(30);
    let (_, out) = w.propose(0, b"k".to_vec(), set(b"old")).unwrap();
    let out = deliver(&mut acceptors, &mut w, out, &[1, 2, 3]);
    let out = deliver(&mut acceptors, &mut w, out, &[1, 2, 3]);
    assert!(out.iter().any(|o| matches!(o, ProposerOutput::Done { result: Ok(_), .. })), "{out:?}");
    let (_, out) = w.propose(0, b"k".to_vec(), set(b"new")).unwrap();
    let _ = deliver(&mut acceptors, &mut w, out, &[1]);
    let new_at = acceptors[0].register(b"k").expect("acceptor 1 took the accept").accepted.counter;
    let mut r = proposer(40);
    // Acceptor 3 is down: the two answers disagree and no majority can agree any more.
    r.set_dead_peers(&[NodeId(3)]);
    let (_, out) = r.propose(0, b"k".to_vec(), Change::Read).unwrap();
    let out = deliver(&mut acceptors, &mut r, out, &[1, 2]);
    assert!(out.iter().any(|o| matches!(o, ProposerOutput::Send { request: Request::Prepare { .. }, .. })), "{out:?}");
    let out = deliver(&mut acceptors, &mut r, out, &[1, 2]);
    let out = deliver(&mut acceptors, &mut r, out, &[1, 2]);
    let read = out.iter().find_map(|o| match o {
        ProposerOutput::Done { result, .. } => Some(result.clone()),
        _ => None,
    });
    // The full round re-accepted W's value unchanged: it keeps the revision W wrote it at.
    assert_eq!(read, Some(Ok(Outcome::Value(Some(env(b"new", new_at))))));
}

#[test]
fn a_read_of_an_expired_value_accepts_a_tombstone_so_every_later_read_sees_it_absent() {
    let mut bench = Bench::new();
    let mut a = proposer(10);
    let set_px = Change::Set {
        value: b"v".to_vec(),
        cond: rampart_kv::SetCond::Always,
        return_old: false,
        ttl: rampart_kv::Ttl::In(100),
    };
    let (_, out) = a.propose_at(0, b"k".to_vec(), set_px, 1_000).unwrap();
    let revision = written(bench.drive(&mut a, out), None);
    let live = rampart_paxos::encode_register_value(b"v", Some(1_100), revision);
    // Before its expiry: the peek agrees and answers in one round trip.
    let mut b = proposer(20);
    bench.sent.clear();
    let (_, out) = b.propose_at(0, b"k".to_vec(), Change::Read, 1_099).unwrap();
    assert_eq!(bench.drive(&mut b, out), Ok(Outcome::Value(Some(live.clone()))));
    assert!(bench.sent.iter().all(|r| matches!(r, Request::Peek { .. })), "{:?}", bench.sent);
    // At its expiry: the agreeing peek must not answer; the read runs a full round that accepts
    // a tombstone.
    bench.sent.clear();
    let (_, out) = b.propose_at(0, b"k".to_vec(), Change::Read, 1_100).unwrap();
    assert_eq!(bench.drive(&mut b, out), Ok(Outcome::Value(None)));
    assert!(bench.sent.iter().any(|r| matches!(r, Request::Accept { value: None, .. })), "{:?}", bench.sent);
    for acceptor in &bench.acceptors {
        assert_eq!(acceptor.register(b"k").and_then(|r| r.value.clone()), None, "a tombstone everywhere");
    }
    // A reader whose clock is behind (before the expiry) now sees it absent too.
    let mut c = proposer(30);
    let (_, out) = c.propose_at(0, b"k".to_vec(), Change::Read, 1_000).unwrap();
    assert_eq!(bench.drive(&mut c, out), Ok(Outcome::Value(None)));
    // The proposer's cached ballot path (a write right after its own read) judges expiry too.
    let (_, out) = a
        .propose_at(
            0,
            b"k".to_vec(),
            Change::Set {
                value: b"w".to_vec(),
                cond: rampart_kv::SetCond::Always,
                return_old: false,
                ttl: rampart_kv::Ttl::In(10),
            },
            2_000,
        )
        .unwrap();
    assert!(matches!(bench.drive(&mut a, out), Ok(Outcome::Written { written: true, .. })));
    let (_, out) = a.propose_at(0, b"k".to_vec(), Change::IncrBy(1), 2_010).unwrap();
    assert_eq!(bench.drive(&mut a, out), Ok(Outcome::Integer(1)), "an expired value counts as absent");
}

#[test]
fn limits_and_quorum_are_enforced() {
    let mut config = ProposerConfig::new(NodeId(9), vec![NodeId(1), NodeId(2), NodeId(3), NodeId(4), NodeId(5)], 1);
    config.in_flight_max = 2;
    config.cached_keys_max = 1;
    let mut p = Proposer::new(config).unwrap();
    assert!(!p.voters().is_quorum(&[NodeId(1), NodeId(2)]));
    assert!(p.voters().is_quorum(&[NodeId(1), NodeId(2), NodeId(5)]));
    p.propose(0, b"a".to_vec(), Change::Read).unwrap();
    p.propose(0, b"a".to_vec(), Change::Read).unwrap();
    assert!(matches!(p.propose(0, b"b".to_vec(), Change::Read), Err(rampart_paxos::Error::InFlightLimit { max: 2 })));
    let big = vec![0; rampart_paxos::KEY_BYTES_MAX + 1];
    assert!(matches!(p.propose(0, big, Change::Read), Err(rampart_paxos::Error::KeyTooLarge { .. })));

    // Three of five dead: a change is refused at once, certainly not applied.
    let mut q = proposer(11);
    q.set_dead_peers(&[NodeId(1), NodeId(2)]);
    let (_, out) = q.propose(0, b"k".to_vec(), set(b"x")).unwrap();
    let done = out.iter().find_map(|o| match o {
        ProposerOutput::Done { result: Err(e), .. } => Some(e.clone()),
        _ => None,
    });
    assert!(matches!(done, Some(rampart_paxos::Error::NoQuorum { maybe_applied: false, .. })), "{done:?}");

    // The cache holds at most one key.
    let mut bench = Bench::new();
    let mut c = Proposer::new({
        let mut config = ProposerConfig::new(NodeId(12), vec![NodeId(1), NodeId(2), NodeId(3)], 2);
        config.cached_keys_max = 1;
        config
    })
    .unwrap();
    for key in [b"x", b"y", b"z"] {
        let (_, out) = c.propose(0, key.to_vec(), set(b"v")).unwrap();
        bench.drive(&mut c, out).unwrap();
    }
    assert_eq!(c.cached_keys(), 1);
    assert!(Proposer::new(ProposerConfig::new(NodeId(1), vec![NodeId(2), NodeId(2)], 0)).is_err());
    assert!(Proposer::new(ProposerConfig::new(NodeId(1), vec![], 0)).is_err());
}

#[test]
fn a_dead_peer_hint_fails_a_phase_without_waiting_for_the_timeout() {
    let mut p = proposer(30);
    p.set_dead_peers(&[NodeId(3)]);
    let (_, out) = p.propose(0, b"k".to_vec(), set(b"x")).unwrap();
    assert_eq!(out.iter().filter(|o| matches!(o, ProposerOutput::Send { .. })).count(), 3);
    let ballot = match &out[1] {
        ProposerOutput::Send { request, .. } => request.ballot(),
        other => panic!("{other:?}"),
    };
    let higher = rampart_paxos::Ballot::new(ballot.counter + 5, NodeId(99));
    let nack = Reply::Nack { key: b"k".to_vec(), ballot, promised: higher };
    let out = p.on_reply(1, NodeId(1), nack);
    // One refusal plus one dead peer: a majority is impossible, so it backs off at once.
    assert!(out.iter().any(|o| matches!(o, ProposerOutput::WakeAt(_))), "{out:?}");
    assert!(p.counter() >= higher.counter, "fast-forwards past the highest ballot seen");
}

#[test]
fn a_promise_claiming_an_accept_at_or_above_its_own_ballot_is_ignored() {
    let mut p = proposer(31);
    let (_, out) = p.propose(0, b"k".to_vec(), set(b"x")).unwrap();
    let ballot = out
        .iter()
        .find_map(|o| match o {
            ProposerOutput::Send { request: Request::Prepare { ballot, .. }, .. } => Some(*ballot),
            _ => None,
        })
        .expect("a prepare");
    let promise = |accepted: rampart_paxos::Ballot, value: &[u8]| Reply::Promise {
        key: b"k".to_vec(),
        ballot,
        accepted,
        value: Some(value.to_vec()),
        base: rampart_paxos::Ballot::ZERO,
    };
    // No honest acceptor promises a ballot at or below one it accepted.
    let bogus = promise(rampart_paxos::Ballot::new(ballot.counter + 5, NodeId(9)), b"bogus");
    assert!(p.on_reply(1, NodeId(1), bogus).is_empty());
    assert!(p.on_reply(1, NodeId(2), promise(ballot, b"bogus")).is_empty(), "not a quorum yet");
    // Two honest promises make the quorum; the accept builds on their value, not the bogus one.
    assert!(p.on_reply(1, NodeId(3), promise(rampart_paxos::Ballot::ZERO, b"")).is_empty());
    let out = p.on_reply(1, NodeId(1), promise(rampart_paxos::Ballot::ZERO, b""));
    let accept = out.iter().find_map(|o| match o {
        ProposerOutput::Send { request: Request::Accept { base, value, .. }, .. } => Some((*base, value.clone())),
        _ => None,
    });
    assert_eq!(accept, Some((rampart_paxos::Ballot::ZERO, Some(env(b"x", ballot.counter)))), "{out:?}");
}

/// Delivers the sends among `outputs` to the acceptors in `reach` only (others are lost) and
/// feeds the replies back; returns everything the proposer produced in response, plus the
/// non-send outputs of `outputs` itself.
fn deliver(
    acceptors: &mut [rampart_paxos::Acceptor],
    proposer: &mut Proposer,
    outputs: Vec<ProposerOutput>,
    reach: &[u64],
) -> Vec<ProposerOutput> {
    let mut produced = Vec::new();
    for output in outputs {
        match output {
            ProposerOutput::Send { to, request } if reach.contains(&to.0) => {
                let (_, reply) = acceptors[(to.0 - 1) as usize].handle(request, CEILING).into_parts();
                produced.extend(proposer.on_reply(0, to, reply));
            }
            ProposerOutput::Send { .. } => {}
            other => produced.push(other),
        }
    }
    produced
}

/// Fires the proposer's pending timers until it sends something again.
fn fire_timers(proposer: &mut Proposer, outputs: Vec<ProposerOutput>) -> Vec<ProposerOutput> {
    let mut produced = Vec::new();
    for output in outputs {
        if let ProposerOutput::WakeAt(timer) = output {
            produced.extend(proposer.on_timer(timer.at, timer));
        }
    }
    if produced.iter().any(|o| matches!(o, ProposerOutput::Send { .. })) {
        produced
    } else {
        fire_timers(proposer, produced)
    }
}

fn result_of(outputs: &[ProposerOutput]) -> Option<Result<Outcome, rampart_paxos::Error>> {
    outputs.iter().find_map(|o| match o {
        ProposerOutput::Done { result, .. } => Some(result.clone()),
        _ => None,
    })
}

fn read_back(acceptors: &mut [rampart_paxos::Acceptor]) -> Outcome {
    let mut bench = Bench { acceptors: acceptors.to_vec(), sent: Vec::new() };
    let mut reader = proposer(77);
    let (_, out) = reader.propose(0, b"k".to_vec(), Change::Read).unwrap();
    bench.drive(&mut reader, out).unwrap()
}

/// Keeps delivering to `reach` and firing timers until the proposal finishes.
fn run_until_done(
    acceptors: &mut [rampart_paxos::Acceptor],
    proposer: &mut Proposer,
    mut out: Vec<ProposerOutput>,
    reach: &[u64],
) -> Result<Outcome, rampart_paxos::Error> {
    for _ in 0..50 {
        if let Some(result) = result_of(&out) {
            return result;
        }
        let sends = out.iter().any(|o| matches!(o, ProposerOutput::Send { .. }));
        out = if sends { deliver(acceptors, proposer, out, reach) } else { fire_timers(proposer, out) };
    }
    panic!("proposal did not finish");
}

#[test]
fn a_retry_completes_its_own_partly_accepted_change_instead_of_applying_it_twice() {
    let mut acceptors: Vec<_> = (0..3).map(|_| rampart_paxos::Acceptor::new()).collect();
    let mut a = proposer(10);
    let (_, out) = a.propose(0, b"k".to_vec(), Change::IncrBy(1)).unwrap();
    let out = deliver(&mut acceptors, &mut a, out, &[1, 2, 3]);
    // The accept reaches acceptor 1 only; the other copies are lost and the phase times out.
    let out = deliver(&mut acceptors, &mut a, out, &[1]);
    assert_eq!(result_of(&out), None);
    // The retry's prepare quorum {1, 2} reports A's own value as the highest: complete it.
    assert_eq!(run_until_done(&mut acceptors, &mut a, out, &[1, 2]), Ok(Outcome::Integer(1)));
    // Applied once, and re-accepted unchanged: it keeps the revision of its first accept.
    assert_eq!(read_back(&mut acceptors), Outcome::Value(Some(env(b"1", 1))), "applied once");
}

#[test]
fn a_retry_completes_when_another_proposer_built_on_its_value() {
    let mut acceptors: Vec<_> = (0..3).map(|_| rampart_paxos::Acceptor::new()).collect();
    let mut a = proposer(10);
    let (_, out) = a.propose(0, b"k".to_vec(), Change::IncrBy(5)).unwrap();
    let out = deliver(&mut acceptors, &mut a, out, &[1, 2, 3]);
    let a_pending = deliver(&mut acceptors, &mut a, out, &[1]);
    // B increments through acceptors {1, 2}: it adopts A's value (5) and writes 6 on top of it.
    let mut b = proposer(20);
    let (_, out) = b.propose(0, b"k".to_vec(), Change::IncrBy(1)).unwrap();
    assert_eq!(run_until_done(&mut acceptors, &mut b, out, &[1, 2]), Ok(Outcome::Integer(6)));
    // A retries: the highest value is B's, whose base is A's accept, so A's effect is in it.
    assert_eq!(run_until_done(&mut acceptors, &mut a, a_pending, &[1, 2, 3]), Ok(Outcome::Integer(5)));
    let (value, revision) = read_value(Ok(read_back(&mut acceptors)));
    assert_eq!(value, b"6", "5 + 1, each once");
    assert!(revision > 1, "B's value, built on A's (revision 1), has a higher revision: {revision}");
}

#[test]
fn a_long_queue_on_one_key_drains_without_recursion_when_every_change_fails_at_once() {
    let mut config = ProposerConfig::new(NodeId(40), vec![NodeId(1), NodeId(2), NodeId(3)], 4);
    config.in_flight_max = 100_000;
    let mut p = Proposer::new(config).unwrap();
    // The first change holds the key; 50,000 more queue behind it.
    let (_, out) = p.propose(0, b"k".to_vec(), Change::Read).unwrap();
    let timer = out
        .into_iter()
        .find_map(|o| match o {
            ProposerOutput::WakeAt(t) => Some(t),
            _ => None,
        })
        .unwrap();
    for _ in 0..50_000 {
        p.propose(0, b"k".to_vec(), Change::IncrBy(1)).unwrap();
    }
    assert_eq!(p.in_flight(), 50_001);
    // Every acceptor is now dead: when the first change's phase times out and it gives up or
    // backs off, each queued change fails at once with no quorum, in one call.
    p.set_dead_peers(&[NodeId(1), NodeId(2), NodeId(3)]);
    let mut outputs = p.on_timer(timer.at, timer);
    while p.in_flight() > 0 {
        let timers: Vec<_> = outputs
            .iter()
            .filter_map(|o| match o {
                ProposerOutput::WakeAt(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert!(!timers.is_empty(), "in flight but nothing to wait for");
        outputs = timers.into_iter().flat_map(|t| p.on_timer(t.at, t)).collect();
    }
    let failures = outputs
        .iter()
        .filter(|o| {
            matches!(
                o,
                ProposerOutput::Done { result: Err(rampart_paxos::Error::NoQuorum { maybe_applied: false, .. }), .. }
            )
        })
        .count();
    assert_eq!(failures, 50_001);
}

#[test]
fn revision_cas_through_proposers_and_a_recreated_key_gets_a_higher_revision() {
    let mut bench = Bench::new();
    let (mut a, mut b) = (proposer(10), proposer(20));
    let put = |revision: u64, value: &[u8]| Change::PutIfRevision { revision, value: value.to_vec() };
    // cas=0: only where the key is absent.
    let (_, out) = a.propose(0, b"k".to_vec(), put(0, b"1")).unwrap();
    let r1 = written(bench.drive(&mut a, out), None);
    let (_, out) = b.propose(0, b"k".to_vec(), put(0, b"x")).unwrap();
    assert_eq!(
        bench.drive(&mut b, out),
        Ok(Outcome::Written { written: false, old: None, current_revision: r1 }),
        "every node reports the revision the value was written at"
    );
    // Through another node, at the revision read: written, at a higher revision.
    let (_, out) = b.propose(0, b"k".to_vec(), put(r1, b"2")).unwrap();
    let r2 = written(bench.drive(&mut b, out), None);
    assert!(r2 > r1, "{r2} after {r1}");
    // A cas at the old revision is refused, naming the current one (through a third node: A's
    // cached ballot is stale, and a refused fast accept may end as "ambiguous").
    let mut c = proposer(30);
    let (_, out) = c.propose(0, b"k".to_vec(), put(r1, b"3")).unwrap();
    assert_eq!(bench.drive(&mut c, out), Ok(Outcome::Written { written: false, old: None, current_revision: r2 }));
    let (_, out) = c.propose(0, b"k".to_vec(), Change::DeleteIfRevision { revision: r1 }).unwrap();
    assert_eq!(bench.drive(&mut c, out), Ok(Outcome::Deleted { count: 0 }));
    let (_, out) = c.propose(0, b"k".to_vec(), Change::DeleteIfRevision { revision: r2 }).unwrap();
    assert_eq!(bench.drive(&mut c, out), Ok(Outcome::Deleted { count: 1 }));
    // Recreated: above every revision the key had, so a cas held from before cannot match.
    let (_, out) = c.propose(0, b"k".to_vec(), set(b"again")).unwrap();
    let r3 = written(bench.drive(&mut c, out), None);
    assert!(r3 > r2, "{r3} after {r2}");
    let (_, out) = c.propose(0, b"k".to_vec(), put(r2, b"stale")).unwrap();
    assert_eq!(bench.drive(&mut c, out), Ok(Outcome::Written { written: false, old: None, current_revision: r3 }));
}

/// A plain SET that reports the value it replaced.
fn set(value: &[u8]) -> Change {
    Change::Set {
        value: value.to_vec(),
        cond: rampart_kv::SetCond::Always,
        return_old: true,
        ttl: rampart_kv::Ttl::Clear,
    }
}
