//! Membership changes (docs/paxos.md, "Membership changes"): adopting configurations, following
//! them (links, detector, proposer), and the coordinator that moves a cluster from one member
//! set to another through a joint configuration.
//!
//! The coordinator, on any member, for a change from stable `(e, O)` to `N`:
//! 1. compare-and-set [`CONFIG_KEY`] from `(e, O)` to the joint `(e+1, O, N)`, through Paxos at
//!    epoch `e`: of two coordinators racing, one wins;
//! 2. pushes the joint configuration to every node of `O ∪ N` until a majority of `O` and a
//!    majority of `N` acknowledged it durably. From then on no frame of epoch `e` can gather a
//!    quorum of `O`: the old configuration is dead;
//! 3. catches up: reads every key that has a register (tombstones included) through a full
//!    Paxos round under the joint quorum, so every value chosen under `O` is held by a majority
//!    of `N`, and by every new member that answered (the round's accept goes to every voter);
//! 4. compare-and-sets the stable `(e+2, N)` and pushes it until a majority of `N` has it.
//!
//! A change left joint (coordinator killed, a timeout) is finished by the next change, on any
//! member: the joint configuration works meanwhile, with its stricter quorum.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rampart_membership::PeerId;
use rampart_paxos::{Ballot, NodeId};
use rampart_transport::Peer;
use tokio::sync::{mpsc, oneshot, watch};

use crate::acceptor_task::{AdoptJob, Job};
use crate::config::{ClusterConfig, MemberEntry, CONFIG_KEY};
use crate::proposer_task::ProposerEvent;
use crate::wire::{self, PeerInfo, PeerRequest, PeerResponse};
use crate::{Change, MmError, MmNode, Outcome, Shared};

/// The longest a membership change may take, catch-up included.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(120);
/// Keys one catch-up round reads at once.
pub const CATCH_UP_BATCH: usize = 256;
/// Keys one catch-up scan page lists.
pub const CATCH_UP_PAGE: usize = 4096;
/// A catch-up that settles no key for this long gives up (the change stays joint; the watchdog
/// or the next change resumes it).
pub const CATCH_UP_STALL: Duration = Duration::from_secs(60);

/// Clears [`Shared::coordinating`] when a change's coordinator ends, however it ends.
struct Coordinating<'a>(&'a Shared);

impl Drop for Coordinating<'_> {
    fn drop(&mut self) {
        *self.0.coordinating.lock() = None;
    }
}

/// Wait between rounds of pushing a configuration to the nodes that have not taken it.
const PUSH_RETRY: Duration = Duration::from_millis(200);

/// What a membership change does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add the node waiting at `peer_addr` (started with an empty data dir) as member `id`.
    Add { id: u64, peer_addr: String },
    /// Remove member `id`.
    Remove { id: u64 },
    /// Replace member `id` by the node now waiting at its address with an empty data dir (its
    /// data was lost): a new generation of the member, caught up from a quorum.
    Replace { id: u64 },
}

impl MmNode {
    /// Adopts `config` if it is newer than this node's: through the acceptor task, so it is
    /// durable and in force before any Paxos frame queued after it is handled. Answers the epoch
    /// now in force.
    pub(crate) async fn adopt(&self, config: ClusterConfig) -> Result<u64, String> {
        adopt_via(&self.acceptor_tx, config, Ballot::ZERO).await
    }

    /// Adopts a pushed configuration and raises the collected floor to the pusher's.
    pub(crate) async fn adopt_pushed(&self, config: ClusterConfig, floor: Ballot) -> Result<u64, String> {
        adopt_via(&self.acceptor_tx, config, floor).await
    }

    /// Follows the configurations the acceptor adopts: links to every member, the failure
    /// detector's peers, and the proposer's voters.
    pub(crate) fn apply_config(&self, config: &ClusterConfig) {
        let everyone = config.everyone();
        {
            let mut peers = self.shared.peers.write();
            peers.retain(|id, p| everyone.iter().any(|m| m.id == *id && p.addr().to_string() == m.peer_addr));
            for m in everyone.iter().filter(|m| m.id != self.cfg.id) {
                if peers.contains_key(&m.id) {
                    continue;
                }
                match crate::resolve(&m.peer_addr) {
                    Ok(addr) => {
                        let source_ip = Some(self.cfg.peer_addr.ip());
                        peers.insert(m.id, Peer::new(m.id, addr, source_ip, self.cfg.transport.clone()));
                    }
                    Err(e) => tracing::error!(member = m.id, error = %e, "cannot reach a member"),
                }
            }
        }
        let ids: Vec<PeerId> = everyone.iter().filter(|m| m.id != self.cfg.id).map(|m| PeerId(m.id)).collect();
        self.health.lock().track(&ids, self.shared.now_ms());
        let mut infos = self.infos.write();
        infos.retain(|id, _| *id == self.cfg.id || everyone.iter().any(|m| m.id == *id));
        for m in &everyone {
            infos.entry(m.id).or_insert_with(|| PeerInfo { peer_addr: m.peer_addr.clone(), ..PeerInfo::default() });
        }
    }

    /// Runs a membership change (module docs), one at a time on this node. Answers the new
    /// configuration once a majority of its members have it.
    ///
    /// The change runs on a task of its own: a client that gives up waiting (an HTTP timeout)
    /// does not stop it halfway.
    pub async fn change_membership(&self, change: MemberChange) -> Result<ClusterConfig, MmError> {
        let Some(node) = self.me.upgrade() else { return Err(MmError::Internal("node is shutting down".into())) };
        tokio::spawn(async move { node.run_change(change).await })
            .await
            .map_err(|e| MmError::Internal(format!("membership change task failed: {e}")))?
    }

    async fn run_change(&self, change: MemberChange) -> Result<ClusterConfig, MmError> {
        let _one = self.reconfig_lock.lock().await;
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        if let Some(why) = self.shared.not_voting() {
            return Err(MmError::NoQuorum(why));
        }
        let mut current = self.cluster_config();
        if current.is_joint() {
            tracing::info!(epoch = current.epoch, "finishing the membership change under way first");
            current = self.finish_joint(current, deadline).await?;
            if already_done(&current, &change) {
                // The change under way was this one (a retry after its coordinator failed).
                return Ok(current);
            }
        }
        let joint = self.joint_for(&current, &change).await?;
        tracing::info!(?change, epoch = joint.epoch, "membership change: joint configuration");
        self.cas_config(&current, &joint, deadline).await?;
        self.finish_joint(joint, deadline).await
    }

    /// Steps 1 and 2 of `change` only, then stops, leaving the cluster joint as a coordinator
    /// killed at that point would: for the test of [`joint_watchdog`].
    #[doc(hidden)]
    pub async fn begin_change_and_abandon_it(&self, change: MemberChange) -> Result<ClusterConfig, MmError> {
        let _one = self.reconfig_lock.lock().await;
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let current = self.cluster_config();
        let joint = self.joint_for(&current, &change).await?;
        self.cas_config(&current, &joint, deadline).await?;
        self.push_until(&joint, deadline).await?;
        Ok(joint)
    }

    /// The joint configuration that starts `change` from the stable `current`, checked.
    async fn joint_for(&self, current: &ClusterConfig, change: &MemberChange) -> Result<ClusterConfig, MmError> {
        let next = self.plan(current, change).await?;
        let joint = ClusterConfig {
            cluster_id: current.cluster_id,
            epoch: current.epoch + 1,
            members: current.members.clone(),
            next: Some(next),
        };
        joint.check().map_err(MmError::BadRequest)?;
        Ok(joint)
    }

    /// The new member set for `change`, checked. A node to add or to replace must be up and
    /// waiting with an empty data dir: its join nonce goes into its entry.
    async fn plan(&self, current: &ClusterConfig, change: &MemberChange) -> Result<Vec<MemberEntry>, MmError> {
        let bad = |m: String| Err(MmError::BadRequest(m));
        let generation = u32::try_from(current.epoch + 1)
            .map_err(|_| MmError::BadRequest("the configuration epoch is exhausted".into()))?;
        let mut members = current.members.clone();
        match change {
            MemberChange::Add { id, peer_addr } => {
                if *id == 0 || *id > crate::config::MEMBER_ID_MAX {
                    return bad(format!("member id {id} is not within 1..={}", crate::config::MEMBER_ID_MAX));
                }
                if members.iter().any(|m| m.id == *id) {
                    return bad(format!("node {id} is already a member"));
                }
                if let Some(m) = members.iter().find(|m| m.peer_addr == *peer_addr) {
                    return bad(format!("member {} already has peer address {peer_addr}", m.id));
                }
                if members.len() >= rampart_paxos::ACCEPTORS_MAX {
                    return bad(format!("at most {} members", rampart_paxos::ACCEPTORS_MAX));
                }
                let nonce = self.probe_joining(*id, peer_addr).await?;
                members.push(MemberEntry { id: *id, generation, peer_addr: peer_addr.clone(), nonce });
            }
            MemberChange::Remove { id } => {
                if !members.iter().any(|m| m.id == *id) {
                    return bad(format!("node {id} is not a member"));
                }
                if members.len() == 1 {
                    return bad("the last member cannot be removed".into());
                }
                members.retain(|m| m.id != *id);
            }
            MemberChange::Replace { id } => {
                let Some(m) = members.iter_mut().find(|m| m.id == *id) else {
                    return bad(format!("node {id} is not a member"));
                };
                let nonce = self.probe_joining(*id, &m.peer_addr.clone()).await?;
                *m = MemberEntry { id: *id, generation, peer_addr: m.peer_addr.clone(), nonce };
            }
        }
        members.sort_by_key(|m| m.id);
        Ok(members)
    }

    /// Asks the node at `peer_addr` who it is: it must be node `id`, not a member (an empty data
    /// dir waiting to join). Answers its join nonce.
    async fn probe_joining(&self, id: u64, peer_addr: &str) -> Result<u64, MmError> {
        let addr = crate::resolve(peer_addr).map_err(MmError::BadRequest)?;
        let peer = Peer::new(id, addr, Some(self.cfg.peer_addr.ip()), self.cfg.transport.clone());
        let me = self.infos.read().get(&self.cfg.id).cloned().unwrap_or_default();
        let payload = wire::encode(&self.shared.envelope(PeerRequest::Hello {
            info: me,
            seq: 0,
            voter: None,
            changing: None,
            checking: false,
        }))
        .map_err(MmError::Internal)?;
        let timeout = self.cfg.request_timeout;
        let unreachable = |why: String| {
            MmError::BadRequest(format!(
                "node {id} at {peer_addr} does not answer ({why}); start it first, with an empty data dir, \
                 --replication multi-master and --id {id}"
            ))
        };
        let bytes = match tokio::time::timeout(timeout, peer.call(payload, timeout)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable("timed out".into())),
        };
        match wire::decode::<PeerResponse>(&bytes) {
            Ok(PeerResponse::Hello { id: rid, joining_nonce: Some(nonce), .. }) if rid == id => Ok(nonce),
            Ok(PeerResponse::Hello { id: rid, .. }) if rid != id => {
                Err(MmError::BadRequest(format!("the node at {peer_addr} is node {rid}, not node {id}")))
            }
            Ok(PeerResponse::Hello { .. }) => Err(MmError::BadRequest(format!(
                "node {id} at {peer_addr} is a voting member with its data; only a node waiting with an empty data \
                 dir can be added or take over a member's place"
            ))),
            Ok(_) => Err(unreachable("an unexpected answer".into())),
            Err(e) => Err(unreachable(e)),
        }
    }

    /// Steps 2 to 4 of a change (module docs), from its joint configuration.
    async fn finish_joint(&self, joint: ClusterConfig, deadline: Instant) -> Result<ClusterConfig, MmError> {
        let Some(next) = joint.next.clone() else { return Ok(joint) };
        let started = Instant::now();
        // Heartbeats say so while this runs: other members' watchdogs leave it alone.
        *self.shared.coordinating.lock() = Some(joint.epoch);
        let _done = Coordinating(&self.shared);
        self.push_until(&joint, deadline).await?;
        let pushed = started.elapsed();
        self.catch_up(&joint, deadline).await?;
        let caught_up = started.elapsed();
        let stable = ClusterConfig { cluster_id: joint.cluster_id, epoch: joint.epoch + 1, members: next, next: None };
        self.cas_config(&joint, &stable, deadline).await?;
        self.push_until(&stable, deadline).await?;
        tracing::info!(
            epoch = stable.epoch,
            joint_pushed_ms = pushed.as_millis() as u64,
            caught_up_ms = caught_up.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "membership change done"
        );
        Ok(stable)
    }

    /// Compare-and-sets the configuration register from `from` to `to` (epoch 0 was never
    /// written: absent). Done when the register holds `to`, whoever wrote it (two coordinators
    /// finishing one joint configuration write the same stable one).
    async fn cas_config(&self, from: &ClusterConfig, to: &ClusterConfig, deadline: Instant) -> Result<(), MmError> {
        let expected = (from.epoch != 0).then(|| from.encode());
        let wanted = to.encode();
        loop {
            self.wait_proposer_epoch(from.epoch, deadline).await?;
            let cas = Change::Cas { expected: expected.clone(), new: wanted.clone() };
            let result = self.change(CONFIG_KEY.to_vec(), cas).await;
            if let Ok(Outcome::Written { written: true, .. }) = result {
                return Ok(());
            }
            // Refused or unknown: what does the register hold?
            let held = match self.change(CONFIG_KEY.to_vec(), Change::Read).await {
                Ok(Outcome::Value(Some(envelope))) => rampart_paxos::decode_register_value(&envelope)
                    .ok()
                    .and_then(|v| ClusterConfig::decode(v.value).ok()),
                Ok(Outcome::Value(None)) => None,
                _ => {
                    if Instant::now() >= deadline {
                        return Err(MmError::NoQuorum(format!(
                            "the configuration register could not be written: {result:?}"
                        )));
                    }
                    tokio::time::sleep(PUSH_RETRY).await;
                    continue;
                }
            };
            match held {
                Some(c) if c == *to => return Ok(()),
                Some(c) if c.epoch > from.epoch || (from.epoch == 0 && c.epoch > 0) => {
                    let epoch = c.epoch;
                    let _ = self.adopt(c).await;
                    return Err(MmError::Conflict(format!(
                        "another membership change came first (the configuration is now at epoch {epoch}); look at \
                         the members and try again"
                    )));
                }
                _ if Instant::now() >= deadline => {
                    return Err(MmError::NoQuorum(format!(
                        "the configuration register could not be written: {result:?}"
                    )))
                }
                _ => tokio::time::sleep(PUSH_RETRY).await,
            }
        }
    }

    /// Waits until this node's proposer uses the voters of `epoch` (or later).
    async fn wait_proposer_epoch(&self, epoch: u64, deadline: Instant) -> Result<(), MmError> {
        while self.shared.proposer_epoch.load(Ordering::Acquire) < epoch {
            if Instant::now() >= deadline {
                return Err(MmError::Internal(format!("the proposer did not take configuration epoch {epoch}")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Pushes `config` to every node of both its sets until a quorum of its voters has it
    /// (each answer names the voter that took it), retrying the others.
    async fn push_until(&self, config: &ClusterConfig, deadline: Instant) -> Result<(), MmError> {
        let voters = config.voters();
        let targets = config.everyone();
        let mut acked: Vec<NodeId> = Vec::new();
        // Collections run only in stable configurations, so this floor holds for the change.
        let floor = *self.shared.floor.lock();
        loop {
            let mut set = tokio::task::JoinSet::new();
            for m in targets.iter().filter(|m| !acked.contains(&m.voter())) {
                let m = m.clone();
                if m.id == self.cfg.id {
                    let (tx, config) = (self.acceptor_tx.clone(), config.clone());
                    let me = self.shared.clone();
                    set.spawn(async move {
                        let ok = adopt_via(&tx, config, Ballot::ZERO).await.is_ok();
                        (m, ok && me.voter().is_some())
                    });
                    continue;
                }
                let peer = match self.shared.peer(m.id) {
                    Some(p) if p.addr().to_string() == m.peer_addr => p,
                    _ => match crate::resolve(&m.peer_addr) {
                        Ok(addr) => Peer::new(m.id, addr, Some(self.cfg.peer_addr.ip()), self.cfg.transport.clone()),
                        Err(_) => continue,
                    },
                };
                let push = PeerRequest::ConfigPush { config: config.clone(), floor };
                let payload = match wire::encode(&self.shared.envelope(push)) {
                    Ok(p) => p,
                    Err(e) => return Err(MmError::Internal(e)),
                };
                let timeout = self.cfg.request_timeout.min(Duration::from_secs(2));
                let epoch = config.epoch;
                set.spawn(async move {
                    let ok = match tokio::time::timeout(timeout, peer.call(payload, timeout)).await {
                        Ok(Ok(b)) => matches!(
                            wire::decode::<PeerResponse>(&b),
                            Ok(PeerResponse::ConfigAck { epoch: e, voter: Some(v) }) if e >= epoch && v == m.voter().0
                        ),
                        _ => false,
                    };
                    (m, ok)
                });
            }
            while let Some(done) = set.join_next().await {
                if let Ok((m, true)) = done {
                    acked.push(m.voter());
                }
            }
            if voters.is_quorum(&acked) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let missing: Vec<u64> = targets.iter().filter(|m| !acked.contains(&m.voter())).map(|m| m.id).collect();
                return Err(MmError::NoQuorum(format!(
                    "configuration epoch {} reached no quorum of its members in time; not answering: {missing:?}",
                    config.epoch
                )));
            }
            tokio::time::sleep(PUSH_RETRY).await;
        }
    }

    /// Step 3: every key that has a register, read through Paxos under the joint quorum. Its
    /// time grows with the number of keys, so it gives up only after [`CATCH_UP_STALL`] without
    /// progress, not at the change's deadline.
    async fn catch_up(&self, joint: &ClusterConfig, deadline: Instant) -> Result<(), MmError> {
        self.wait_proposer_epoch(joint.epoch, deadline).await?;
        let mut deadline = Instant::now() + CATCH_UP_STALL;
        let mut after: Option<Vec<u8>> = None;
        let mut keys_read = 0usize;
        loop {
            let (keys, next) = loop {
                match self.register_keys(after.as_deref(), CATCH_UP_PAGE).await {
                    Ok(page) => break page,
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(PUSH_RETRY).await,
                }
            };
            for chunk in keys.chunks(CATCH_UP_BATCH) {
                let mut todo: Vec<Vec<u8>> = chunk.to_vec();
                while !todo.is_empty() {
                    let results = self.settle(todo.clone()).await;
                    let failed: Vec<Vec<u8>> =
                        todo.into_iter().zip(results).filter(|(_, r)| r.is_err()).map(|(k, _)| k).collect();
                    if !failed.is_empty() && Instant::now() >= deadline {
                        return Err(MmError::NoQuorum(format!(
                            "catch-up: {} keys could not be read under the joint quorum in time",
                            failed.len()
                        )));
                    }
                    if !failed.is_empty() {
                        tokio::time::sleep(PUSH_RETRY).await;
                    }
                    todo = failed;
                }
                keys_read += chunk.len();
                deadline = Instant::now() + CATCH_UP_STALL;
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        tracing::info!(epoch = joint.epoch, keys = keys_read, "membership change: caught up");
        Ok(())
    }
}

/// True when `config` already reflects `change`.
fn already_done(config: &ClusterConfig, change: &MemberChange) -> bool {
    match change {
        MemberChange::Add { id, peer_addr } => config.members.iter().any(|m| m.id == *id && m.peer_addr == *peer_addr),
        MemberChange::Remove { id } => !config.members.iter().any(|m| m.id == *id),
        MemberChange::Replace { .. } => false,
    }
}

/// A joint configuration older than this with no change running through this node is finished
/// by the watchdog (its coordinator died or gave up).
pub const JOINT_STALL: Duration = Duration::from_secs(10);

/// Finishes a membership change whose coordinator is gone: every second, a node whose
/// configuration has been joint for [`JOINT_STALL`] runs steps 2 to 4 itself (the lowest live
/// member id of the new set first; the others wait longer, so they rarely duel, and a duel is
/// harmless: the steps are idempotent). Holds the node weakly.
pub(crate) async fn joint_watchdog(node: Weak<MmNode>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut joint_since: Option<(u64, Instant)> = None;
    loop {
        interval.tick().await;
        let Some(n) = node.upgrade() else { return };
        let config = n.cluster_config();
        if !config.is_joint() || n.shared.voter().is_none() {
            joint_since = None;
            continue;
        }
        let mut since = match joint_since {
            Some((epoch, at)) if epoch == config.epoch => at,
            _ => {
                joint_since = Some((config.epoch, Instant::now()));
                continue;
            }
        };
        // A coordinator that still says it is finishing this change is left alone.
        if let Some((epoch, at)) = *n.shared.change_seen.lock() {
            if epoch == config.epoch && at > since {
                since = at;
            }
        }
        if n.shared.not_voting().is_some() {
            continue;
        }
        // The lowest-id member of the new set that this node believes alive goes first.
        let dead = n.shared.peers_dead.read().clone();
        let rank = config.target().iter().filter(|m| !dead.contains(&m.id) && m.id < n.cfg.id).count() as u32;
        if since.elapsed() < JOINT_STALL * (rank + 1) {
            continue;
        }
        let Ok(_one) = n.reconfig_lock.try_lock() else { continue };
        tracing::warn!(epoch = config.epoch, "a membership change was left half done; finishing it");
        match n.finish_joint(config, Instant::now() + CHANGE_TIMEOUT).await {
            Ok(c) => tracing::info!(epoch = c.epoch, "finished the membership change left half done"),
            Err(e) => tracing::warn!(error = %e, "could not finish the membership change left half done; will retry"),
        }
        joint_since = None;
    }
}

/// Hands `config` to the acceptor task and waits for it to be in force.
async fn adopt_via(acceptor: &mpsc::Sender<Job>, config: ClusterConfig, floor: Ballot) -> Result<u64, String> {
    let (tx, rx) = oneshot::channel();
    acceptor.send(Job::Adopt(AdoptJob { config, floor, reply: tx })).await.map_err(|_| "the acceptor has stopped")?;
    rx.await.map_err(|_| "the acceptor stopped".to_string())?
}

/// A peer answered a Paxos frame of epoch `sent` with its own epoch `theirs`: adopt its newer
/// configuration, or send it ours when it is behind.
pub(crate) async fn on_wrong_epoch(
    shared: &Arc<Shared>,
    peer: &Peer,
    sent: u64,
    theirs: u64,
    config: Option<ClusterConfig>,
    acceptor: &mpsc::Sender<Job>,
) {
    let mine = shared.config.read().clone();
    match config {
        Some(c) if c.epoch > mine.epoch => {
            tracing::info!(peer = %peer.addr(), epoch = c.epoch, "a peer has a newer configuration; adopting it");
            if let Err(e) = adopt_via(acceptor, c, Ballot::ZERO).await {
                tracing::warn!(error = %e, "could not adopt a peer's configuration");
            }
        }
        _ if theirs < mine.epoch && sent <= mine.epoch => {
            let push = PeerRequest::ConfigPush { config: mine, floor: Ballot::ZERO };
            let Ok(payload) = wire::encode(&shared.envelope(push)) else { return };
            let _ = peer.call(payload, shared.peer_call_timeout).await;
        }
        _ => {}
    }
}

/// Follows the acceptor's adopted configurations (see [`MmNode::apply_config`]) and hands each
/// to the proposer. Ends with the node.
pub(crate) async fn follow_config(node: Weak<MmNode>, mut adopted: watch::Receiver<ClusterConfig>) {
    loop {
        if adopted.changed().await.is_err() {
            return;
        }
        let config = adopted.borrow_and_update().clone();
        let Some(n) = node.upgrade() else { return };
        n.apply_config(&config);
        if n.proposer_tx.send(ProposerEvent::Config(config)).await.is_err() {
            return;
        }
    }
}
