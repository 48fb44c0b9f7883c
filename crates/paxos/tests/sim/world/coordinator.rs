//! The coordinator of membership changes, an actor of the simulated world: it carries out a
//! [`Plan`], one change at a time, by the procedure in `membership.rs`, over the same lossy
//! network as everyone else, while clients keep working and faults keep happening.

use super::{Event, Waiter, World};
use crate::sim::membership::{ChangeKind, Config, Fault, Plan, Stop};
use rampart_paxos::{Acceptor, NodeId};
use std::collections::BTreeSet;

/// How long the coordinator waits for acknowledgements before sending again (above the longest
/// round trip: two delays of at most 31 ticks and a group commit of at most 3).
const RETRANSMIT_TICKS: u64 = 70;
/// A change not complete this long after it began is abandoned (reported, never a pass).
const CHANGE_TICKS_MAX: u64 = 8_000;

/// The coordinator's timers and the plan's failures.
#[derive(Debug)]
pub(super) enum Step {
    /// Turn to the next change of the plan.
    Ready,
    /// Start the change: send the joint configuration.
    Begin,
    /// Send the configuration of the current stage again to whoever has not acknowledged it.
    Retransmit { round: u64 },
    /// Go on with the catch-up reads.
    Nudge,
    /// A new acceptor starts, empty and without a configuration.
    StartNode { acceptor: usize },
    /// An acceptor loses its disk; its id never answers again.
    Wipe { acceptor: usize },
    /// An acceptor that left is stopped for good.
    Retire { acceptor: usize },
}

enum Stage {
    Idle,
    /// Step 1: the joint configuration, until a majority of each set acknowledged it.
    Joint {
        target: Config,
        acked: BTreeSet<NodeId>,
    },
    /// Step 2: a linearizable read of every key through a proposer at the joint epoch.
    CatchUp {
        target: Config,
        key: usize,
        reading: bool,
    },
    /// Step 3: the new configuration, until a majority of it acknowledged it.
    Stable {
        target: Config,
        joint: Config,
        acked: BTreeSet<NodeId>,
    },
    Finished,
}

pub(super) struct Coordinator {
    plan: Plan,
    /// The change under way or next.
    next: usize,
    /// The last stable configuration reached.
    stable: Config,
    stage: Stage,
    /// Tags retransmission timers: only the current stage's is live.
    round: u64,
    begun_at: u64,
    completed: usize,
    /// The first change has begun (its failures included).
    started: bool,
    /// When the last change was over and every proposer held down during the changes was back.
    settled_at: Option<u64>,
}

impl Coordinator {
    /// Every change completed, or the coordinator gave up.
    pub(super) fn finished(&self) -> bool {
        matches!(self.stage, Stage::Finished)
    }

    /// Before the first change or after the last one.
    pub(super) fn idle(&self) -> bool {
        !self.started || self.finished()
    }

    pub(super) fn all_completed(&self) -> bool {
        self.completed == self.plan.changes.len()
    }

    /// No more changes (all complete, or the coordinator gave up), and the proposers held down
    /// meanwhile are back, by `now`.
    pub(super) fn settled(&self, now: u64) -> bool {
        self.settled_at.is_some_and(|at| at <= now)
    }

    pub(super) fn planned(&self) -> usize {
        self.plan.changes.len()
    }

    pub(super) fn completed(&self) -> usize {
        self.completed
    }
}

fn slot(id: NodeId) -> usize {
    (id.0 - 1) as usize
}

impl World {
    /// Installs the coordinator and schedules the plan's events.
    pub(super) fn plan_changes(&mut self, plan: Plan, initial: Config) {
        self.coordinator = Some(Coordinator {
            plan: plan.clone(),
            next: 0,
            stable: initial,
            stage: Stage::Idle,
            round: 0,
            begun_at: 0,
            completed: 0,
            started: false,
            settled_at: None,
        });
        self.schedule(plan.first_at, Event::Coordinator(Step::Ready));
        if let Some(proposer) = plan.stale_proposer {
            let at = plan.first_at.saturating_sub(self.rng.below(50));
            self.schedule(at, Event::HoldProposerDown { proposer });
        }
        if let Some((acceptor, at, down_ticks)) = plan.lagging {
            self.schedule(at, Event::CrashAcceptor { acceptor, down_ticks });
        }
        for (at, down_ticks) in plan.acceptor_crashes {
            self.schedule(at, Event::CrashAnyAcceptor { down_ticks });
        }
    }

    fn coordinator(&mut self) -> &mut Coordinator {
        self.coordinator.as_mut().expect("a run with membership changes")
    }

    pub(super) fn coordinator_step(&mut self, step: Step) {
        match step {
            Step::Ready => {
                let coordinator = self.coordinator();
                coordinator.started = true;
                let Some(change) = coordinator.plan.changes.get(coordinator.next).cloned() else {
                    return self.finish_changes();
                };
                match change.kind {
                    ChangeKind::Add { new } => {
                        self.coordinator_step(Step::StartNode { acceptor: slot(new) });
                        let delay = self.rng.below(50);
                        self.schedule(delay, Event::Coordinator(Step::Begin));
                    }
                    ChangeKind::Replace { victim, new } => {
                        self.coordinator_step(Step::Wipe { acceptor: slot(victim) });
                        let up = 1 + self.rng.below(100);
                        self.schedule(up, Event::Coordinator(Step::StartNode { acceptor: slot(new) }));
                        let delay = up + self.rng.below(50);
                        self.schedule(delay, Event::Coordinator(Step::Begin));
                    }
                    ChangeKind::Remove { .. } => self.schedule(0, Event::Coordinator(Step::Begin)),
                }
            }
            Step::Begin => {
                let now = self.now;
                let coordinator = self.coordinator();
                let target = Config {
                    epoch: coordinator.stable.epoch + 1,
                    old: coordinator.stable.old.clone(),
                    new: Some(coordinator.plan.changes[coordinator.next].target.clone()),
                };
                coordinator.begun_at = now;
                self.enter(Stage::Joint { target, acked: BTreeSet::new() });
            }
            Step::Retransmit { round } => {
                let now = self.now;
                let coordinator = self.coordinator();
                if round != coordinator.round || matches!(coordinator.stage, Stage::Idle | Stage::Finished) {
                    return;
                }
                if now > coordinator.begun_at + CHANGE_TICKS_MAX {
                    return self.finish_changes();
                }
                self.send_stage();
                self.catch_up_step();
                self.schedule(RETRANSMIT_TICKS, Event::Coordinator(Step::Retransmit { round }));
            }
            Step::Nudge => self.catch_up_step(),
            Step::StartNode { acceptor } => {
                let node = &mut self.acceptors[acceptor];
                node.started = true;
                node.live = Some(Acceptor::new());
                node.config = None;
            }
            Step::Wipe { acceptor } => {
                self.retire(acceptor);
                let node = &mut self.acceptors[acceptor];
                node.durable.clear();
                node.floor = rampart_paxos::Ballot::ZERO;
                node.config = None;
                let dead = node.id;
                if self.rng.chance(500) {
                    for p in 0..self.proposers.len() {
                        if let Some(live) = self.proposers[p].live.as_mut() {
                            live.set_dead_peers(&[dead]);
                        }
                    }
                }
            }
            Step::Retire { acceptor } => self.retire(acceptor),
        }
    }

    /// Stops an acceptor for good: it loses what was not durable and never answers again.
    fn retire(&mut self, acceptor: usize) {
        let node = &mut self.acceptors[acceptor];
        node.live = None;
        node.retired = true;
        node.unflushed.clear();
        node.flush_armed = false;
        node.incarnation += 1;
    }

    fn enter(&mut self, stage: Stage) {
        let coordinator = self.coordinator();
        coordinator.round += 1;
        coordinator.stage = stage;
        let round = coordinator.round;
        self.send_stage();
        self.catch_up_step();
        self.schedule(RETRANSMIT_TICKS, Event::Coordinator(Step::Retransmit { round }));
    }

    /// Sends the current stage's configuration to every acceptor that has not acknowledged it
    /// and to every proposer.
    fn send_stage(&mut self) {
        let (config, members, acked) = match &self.coordinator().stage {
            Stage::Joint { target, acked } => (target.clone(), target.members(), acked.clone()),
            Stage::Stable { target, joint, acked } => (target.clone(), joint.members(), acked.clone()),
            _ => return,
        };
        for id in members.into_iter().filter(|id| !acked.contains(id)) {
            let acceptor = slot(id);
            self.transmit(|| Event::ConfigToAcceptor { acceptor, config: config.clone(), from_coordinator: true });
        }
        self.send_to_proposers(&config);
    }

    fn send_to_proposers(&mut self, config: &Config) {
        for proposer in 0..self.proposers.len() {
            self.transmit(|| Event::ConfigToProposer { proposer, config: config.clone() });
        }
    }

    /// An acceptor has durably adopted `epoch`.
    pub(super) fn coordinator_ack(&mut self, from: NodeId, epoch: u64) {
        let skip_catch_up = self.fault == Fault::SkipCatchUp;
        let coordinator = self.coordinator();
        match &mut coordinator.stage {
            Stage::Joint { target, acked } if epoch >= target.epoch => {
                acked.insert(from);
                let acked: Vec<NodeId> = acked.iter().copied().collect();
                // A majority of the old set and a majority of the new one.
                if target.voters().is_quorum(&acked) {
                    let target = target.clone();
                    if skip_catch_up {
                        self.enter_stable(target);
                    } else {
                        self.enter(Stage::CatchUp { target, key: 0, reading: false });
                    }
                }
            }
            Stage::Stable { target, joint, acked } if epoch >= target.epoch => {
                acked.insert(from);
                let acked: Vec<NodeId> = acked.iter().copied().collect();
                if target.voters().is_quorum(&acked) {
                    let (target, joint) = (target.clone(), joint.clone());
                    self.complete(target, joint);
                }
            }
            _ => {}
        }
    }

    /// Step 3: from the joint configuration to the new set alone.
    fn enter_stable(&mut self, joint: Config) {
        let new = joint.new.clone().expect("a joint configuration");
        let target = Config { epoch: joint.epoch + 1, old: new, new: None };
        self.enter(Stage::Stable { target, joint, acked: BTreeSet::new() });
    }

    fn complete(&mut self, target: Config, joint: Config) {
        let coordinator = self.coordinator();
        let stop = coordinator.plan.changes[coordinator.next].stop;
        coordinator.completed += 1;
        coordinator.next += 1;
        coordinator.round += 1;
        let more = coordinator.next < coordinator.plan.changes.len();
        coordinator.stage = Stage::Idle;
        let left: Vec<NodeId> = joint.old.iter().filter(|id| !target.old.contains(id)).copied().collect();
        coordinator.stable = target;
        for id in left {
            match stop {
                Stop::AtOnce => self.retire(slot(id)),
                Stop::After(delay) => self.schedule(delay, Event::Coordinator(Step::Retire { acceptor: slot(id) })),
                Stop::Never => {}
            }
        }
        if more {
            let delay = self.rng.below(150);
            self.schedule(delay, Event::Coordinator(Step::Ready));
        } else {
            self.finish_changes();
        }
    }

    /// No more changes (all complete, or the coordinator gave up): proposers held down come back.
    fn finish_changes(&mut self) {
        let mut last = 0;
        for proposer in 0..self.proposers.len() {
            if std::mem::take(&mut self.proposers[proposer].held_down) {
                let delay = self.rng.below(50);
                last = last.max(delay);
                self.schedule(delay, Event::RestartProposer { proposer });
            }
        }
        let now = self.now;
        let coordinator = self.coordinator();
        coordinator.stage = Stage::Finished;
        coordinator.settled_at = Some(now + last);
    }

    /// Step 2: reads the next key through a proposer at the joint epoch, unless one is in flight;
    /// after the last key, step 3.
    fn catch_up_step(&mut self) {
        let keys = self.params.keys + self.params.cold_keys;
        let Stage::CatchUp { target, key, reading } = &self.coordinator().stage else { return };
        if *reading {
            return;
        }
        let (target, key) = (target.clone(), *key);
        if key >= keys {
            return self.enter_stable(target);
        }
        let at_epoch: Vec<usize> = (0..self.proposers.len())
            .filter(|&p| self.proposers[p].live.is_some() && self.proposers[p].config.epoch == target.epoch)
            .collect();
        if at_epoch.is_empty() {
            // Tried again at the next retransmission.
            return self.send_to_proposers(&target);
        }
        let proposer = at_epoch[self.rng.below(at_epoch.len() as u64) as usize];
        if let Stage::CatchUp { reading, .. } = &mut self.coordinator().stage {
            *reading = true;
        }
        self.background_read(proposer, key, Waiter::Coordinator, false);
    }

    /// A catch-up read finished: on to the next key, or the same one again.
    pub(super) fn catch_up_done(&mut self, ok: bool) {
        let Stage::CatchUp { key, reading, .. } = &mut self.coordinator().stage else { return };
        *reading = false;
        if ok {
            *key += 1;
            self.stats.catch_up_reads += 1;
            self.schedule(0, Event::Coordinator(Step::Nudge));
        } else {
            self.stats.catch_up_retries += 1;
            let delay = 5 + self.rng.below(20);
            self.schedule(delay, Event::Coordinator(Step::Nudge));
        }
    }

    /// The proposer of a catch-up read crashed: read again.
    pub(super) fn catch_up_lost(&mut self) {
        self.catch_up_done(false);
    }

    /// The plan and how far the coordinator got, for failure messages.
    pub fn describe_changes(&self) -> String {
        let Some(c) = &self.coordinator else { return "no membership changes".into() };
        let stage = match &c.stage {
            Stage::Idle => "idle".to_string(),
            Stage::Joint { target, acked } => format!("joint {target:?}, acked by {acked:?}"),
            Stage::CatchUp { target, key, reading } => format!("catch-up at {target:?}, key {key}, reading {reading}"),
            Stage::Stable { target, acked, .. } => format!("stable {target:?}, acked by {acked:?}"),
            Stage::Finished => "finished".to_string(),
        };
        format!(
            "{:?}; {} of {} completed, last begun at tick {}, stage: {stage}, stable: {:?}",
            c.plan,
            c.completed,
            c.plan.changes.len(),
            c.begun_at,
            c.stable
        )
    }

    /// Adds the coordinator's figures to the run's statistics.
    pub(super) fn count_changes(&mut self) {
        let Some(coordinator) = &self.coordinator else { return };
        self.stats.change_runs += 1;
        self.stats.change_runs_completed += usize::from(coordinator.all_completed());
        self.stats.change_runs_served_after +=
            usize::from(coordinator.all_completed() && self.stats.ok_after_changes > 0);
        self.stats.changes_planned += coordinator.planned();
        self.stats.changes_completed += coordinator.completed();
    }
}
