//! Membership changes in the simulation: configurations, what an acceptor answers to a request
//! of another epoch, the faults that break the procedure on purpose, and the plan of changes a
//! seed draws. The coordinator that carries a plan out is `world/coordinator.rs`.
//!
//! The procedure (the server runtime implements the same): a coordinator changes stable(e, O) to
//! stable(e+2, N) by (1) sending the joint configuration (e+1, O, N) to every acceptor of O ∪ N
//! and every proposer until a majority of O and a majority of N acknowledged adopting it, (2)
//! reading every key through a proposer at e+1 (catch-up), (3) sending (e+2, N) until a majority
//! of N acknowledged. Acceptors handle a request only at their own epoch; otherwise they refuse
//! it with their configuration (a proposer behind adopts it) or say they are behind (the
//! proposer pushes its configuration to them).

use rampart_paxos::rng::SplitMix64;
use rampart_paxos::{NodeId, Voters};

/// A configuration of the voters. Only the coordinator makes them, so two with one epoch are
/// equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub epoch: u64,
    pub old: Vec<NodeId>,
    /// The new set while a change is under way (joint configuration).
    pub new: Option<Vec<NodeId>>,
}

impl Config {
    pub fn initial(acceptors: usize) -> Self {
        Config { epoch: 0, old: (1..=acceptors as u64).map(NodeId).collect(), new: None }
    }

    pub fn voters(&self) -> Voters {
        match &self.new {
            None => Voters::single(&self.old),
            Some(new) => Voters::joint(&self.old, new),
        }
        .expect("the coordinator makes valid configurations")
    }

    /// Every acceptor of either set, sorted.
    pub fn members(&self) -> Vec<NodeId> {
        self.voters().all().to_vec()
    }
}

/// An acceptor's answer to a request whose epoch is not its own (nothing changes, nothing is
/// persisted).
#[derive(Clone, Debug)]
pub enum Refusal {
    /// The acceptor is at a later epoch: here is its configuration.
    Newer(Config),
    /// The acceptor is at an earlier epoch (or has none yet): the proposer pushes its own.
    Behind,
}

/// The procedure as specified, or broken on purpose to show the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// BREAKS SAFETY: the coordinator goes from the joint configuration straight to the new one,
    /// without reading every key through the joint quorum.
    SkipCatchUp,
    /// BREAKS SAFETY: acceptors handle every request whatever its epoch (so they never refuse,
    /// and proposers learn configurations from the coordinator only).
    IgnoreEpochs,
}

/// One change of the plan.
#[derive(Clone, Debug)]
pub enum ChangeKind {
    /// A new, empty acceptor joins.
    Add { new: NodeId },
    /// An acceptor leaves.
    Remove { victim: NodeId },
    /// An acceptor loses its disk and comes back empty under a new id; the old id never
    /// answers again.
    Replace { victim: NodeId, new: NodeId },
}

/// What happens to the acceptors that left, once the change is complete.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    AtOnce,
    After(u64),
    /// They keep running (and keep answering with their configuration).
    Never,
}

#[derive(Clone, Debug)]
pub struct PlannedChange {
    pub kind: ChangeKind,
    /// The voters after the change.
    pub target: Vec<NodeId>,
    pub stop: Stop,
}

/// The membership changes of one run, drawn from the seed.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Acceptors at the start (ids 1..=initial); later ones take the next ids.
    pub initial: usize,
    pub changes: Vec<PlannedChange>,
    /// When the coordinator turns to the first change.
    pub first_at: u64,
    /// A proposer that is down from just before the first change until the last one is over:
    /// it restarts with the configuration it had, so it must learn the new one from refusals.
    pub stale_proposer: Option<usize>,
    /// Before a first change that replaces an acceptor, another member is down for a while, until
    /// about when the disk is lost (acceptor, crash tick, down ticks): writes meanwhile reach the
    /// member that loses its disk but not this one, which the catch-up must then repair.
    pub lagging: Option<(usize, u64, u64)>,
    /// Extra acceptor crashes (tick, down ticks) around the changes, on any acceptor running
    /// then, the new ones included.
    pub acceptor_crashes: Vec<(u64, u64)>,
    /// Keys beside the run's usual ones that clients use only before the first change and after
    /// the last one, as most keys of a real store sit idle while its membership changes.
    pub cold_keys: usize,
}

/// Share of seeds that run membership changes, per mille.
pub const CHANGE_SEEDS_PER_MILLE: u64 = 400;

impl Plan {
    /// The plan of `seed`, from its own random stream (so runs without changes are what they
    /// were before membership changes were modelled): `None` in most seeds, unless `force`.
    /// A forced plan is the one the seed would draw anyway.
    pub fn draw(seed: u64, proposers: usize, force: bool) -> Option<Plan> {
        let mut rng = SplitMix64::new(seed ^ 0x6d65_6d62_6572_7368);
        let wanted = rng.chance(CHANGE_SEEDS_PER_MILLE);
        if !wanted && !force {
            return None;
        }
        let initial = match rng.below(5) {
            0 | 1 => 3,
            2 => 4,
            _ => 5,
        };
        let mut members: Vec<NodeId> = (1..=initial as u64).map(NodeId).collect();
        let mut next_id = initial as u64 + 1;
        let count = if rng.chance(500) { 2 } else { 1 };
        let mut changes = Vec::new();
        for _ in 0..count {
            let can_add = members.len() < 5;
            let can_remove = members.len() >= 3;
            // Not a member of two: once its disk is lost the one left is no majority of the old
            // set, so nothing (the change included) could ever be acknowledged.
            let can_replace = members.len() >= 3;
            let kind = loop {
                match rng.below(3) {
                    0 if can_add => {
                        next_id += 1;
                        break ChangeKind::Add { new: NodeId(next_id - 1) };
                    }
                    1 if can_remove => {
                        let victim = members[rng.below(members.len() as u64) as usize];
                        break ChangeKind::Remove { victim };
                    }
                    2 if can_replace => {
                        let victim = members[rng.below(members.len() as u64) as usize];
                        next_id += 1;
                        break ChangeKind::Replace { victim, new: NodeId(next_id - 1) };
                    }
                    _ => {}
                }
            };
            match &kind {
                ChangeKind::Add { new } => members.push(*new),
                ChangeKind::Remove { victim } => members.retain(|m| m != victim),
                ChangeKind::Replace { victim, new } => {
                    members.retain(|m| m != victim);
                    members.push(*new);
                }
            }
            let stop = match rng.below(10) {
                0..=3 => Stop::AtOnce,
                4..=6 => Stop::After(1 + rng.below(300)),
                _ => Stop::Never,
            };
            changes.push(PlannedChange { kind, target: members.clone(), stop });
        }
        let first_at = 150 + rng.below(250);
        let stale_proposer = rng.chance(400).then(|| rng.below(proposers as u64) as usize);
        let lagging = match changes[0].kind {
            ChangeKind::Replace { victim, .. } if rng.chance(500) => {
                let others: Vec<u64> = (1..=initial as u64).filter(|&id| id != victim.0).collect();
                let id = others[rng.below(others.len() as u64) as usize];
                let down = 60 + rng.below(100);
                Some(((id - 1) as usize, first_at.saturating_sub(down), down + rng.below(20)))
            }
            _ => None,
        };
        let acceptor_crashes = (0..rng.below(3)).map(|_| (first_at + rng.below(500), 5 + rng.below(300))).collect();
        let cold_keys = rng.below(4) as usize;
        Some(Plan { initial, changes, first_at, stale_proposer, lagging, acceptor_crashes, cold_keys })
    }

    /// True when a proposer still at epoch 0 after the last change could gather a quorum of the
    /// initial set that shares no acceptor with some quorum of the final set: the only way
    /// proposers that ignore epochs can break safety when every change moves one acceptor (a
    /// majority of a set and a majority of a set one acceptor away always meet, and an acceptor
    /// that lost its disk never answers again). Removed acceptors count as answering unless
    /// they are stopped at once.
    pub fn initial_and_final_quorums_can_miss(&self) -> bool {
        let initial: Vec<NodeId> = (1..=self.initial as u64).map(NodeId).collect();
        let last = self.changes.last().map_or(&initial, |c| &c.target);
        let gone = |id: &NodeId| {
            self.changes.iter().any(|c| match c.kind {
                ChangeKind::Replace { victim, .. } => victim == *id,
                ChangeKind::Remove { victim } => victim == *id && matches!(c.stop, Stop::AtOnce),
                ChangeKind::Add { .. } => false,
            })
        };
        let alive: Vec<NodeId> = initial.iter().filter(|id| !gone(id)).copied().collect();
        let only_initial = alive.iter().filter(|id| !last.contains(id)).count();
        let shared = alive.len() - only_initial;
        let need_initial = initial.len() / 2 + 1;
        let from_shared = need_initial.saturating_sub(only_initial);
        from_shared <= shared && last.len() - from_shared > last.len() / 2
    }

    /// Acceptor slots the run needs: the initial ones and every new id.
    pub fn slots(&self) -> usize {
        let new = self.changes.iter().filter(|c| !matches!(c.kind, ChangeKind::Remove { .. })).count();
        self.initial + new
    }
}
