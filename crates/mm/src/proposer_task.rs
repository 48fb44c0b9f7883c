//! The proposer's task: drives `rampart_paxos::Proposer` with real time, the network and disk.
//!
//! One task owns the proposer. Each turn it takes every event waiting (client changes, acceptor
//! replies, failure-detector updates; up to [`EVENTS_PER_TURN_MAX`]), fires due timers, and then
//! sends what the turn produced: all requests for one peer go out in one frame, so many keys'
//! messages share one network write. A `PersistCounterFloor` output is made durable before any
//! output after it is carried out. Time is milliseconds since the node started.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rampart_paxos::{
    Change, Error as PaxosError, Key, NodeId, Outcome, ProposalId, Proposer, ProposerConfig, ProposerOutput, Reply,
    Request, Tick, Timer,
};
use rampart_storage::{Durability, Store};
use tokio::sync::{mpsc, oneshot};

use crate::acceptor_task::{AcceptorJob, Job};
use crate::config::{self, ClusterConfig};
use crate::validate::{self, PAXOS_REQUESTS_PER_FRAME_MAX};
use crate::wire::{self, PeerRequest, PeerResponse};
use crate::{Shared, COUNTER_FLOOR_META_KEY};

/// Most events handled in one turn before the turn's messages are sent.
pub const EVENTS_PER_TURN_MAX: usize = 1024;
/// Most events (client changes, reply batches) waiting for the proposer.
pub const PROPOSER_QUEUE_MAX: usize = 8192;
/// Most frames in flight to one peer. While they are all out, requests for the peer accumulate
/// and leave together in the next frame (adaptive batching).
pub const PEER_FRAMES_IN_FLIGHT_MAX: usize = 16;
/// Most turns' request lists waiting for one peer's link; beyond it they are dropped, as the
/// network might drop them (the proposal retries, or the other peers answer).
pub const PEER_QUEUE_MAX: usize = 4096;
/// Largest request batch in one frame; bigger turns are split.
pub const PEER_BATCH_BYTES_MAX: usize = 8 << 20;

pub type ChangeResult = Result<Outcome, PaxosError>;

pub enum ProposerEvent {
    /// Client changes, started in this order (changes on one key apply in this order). With
    /// `settle`, the changes are reads that run full rounds (`Proposer::propose_settle`).
    Propose { items: Vec<(Key, Change, oneshot::Sender<ChangeResult>)>, settle: bool },
    /// Replies of one acceptor.
    Replies { from: NodeId, replies: Vec<Reply> },
    /// The acceptors the failure detector now calls dead.
    Dead(Vec<NodeId>),
    /// Keys and ballots other proposers used, as this node's acceptor saw them.
    Foreign(Vec<(Key, rampart_paxos::Ballot)>),
    /// The node adopted this configuration: vote with its voters, stamp its epoch, link to its
    /// members.
    Config(ClusterConfig),
}

pub struct ProposerTask {
    pub proposer: Proposer,
    /// What a proposer is built from (a joining node gets its ballot identity once it is a
    /// member: the proposer is then built anew).
    pub template: ProposerConfig,
    /// The epoch of the voters the proposer uses; stamped on its frames.
    pub epoch: u64,
    /// The configuration's peers' links, by member id.
    pub links: HashMap<u64, mpsc::Sender<(u64, Vec<Request>)>>,
    pub store: Arc<Store>,
    pub shared: Arc<Shared>,
    pub rx: mpsc::Receiver<ProposerEvent>,
    pub tx: mpsc::WeakSender<ProposerEvent>,
    pub acceptor_tx: mpsc::Sender<Job>,
}

struct Turn {
    waiting: HashMap<ProposalId, oneshot::Sender<ChangeResult>>,
    timers: BTreeMap<(Tick, u64), Timer>,
    timer_seq: u64,
    outbox: BTreeMap<NodeId, Vec<Request>>,
}

impl ProposerTask {
    pub async fn run(mut self) {
        let mut t = Turn { waiting: HashMap::new(), timers: BTreeMap::new(), timer_seq: 0, outbox: BTreeMap::new() };
        self.shared.proposer_epoch.store(self.epoch, Ordering::Release);
        if !self.relink() {
            return;
        }
        loop {
            let next_timer = t.timers.first_key_value().map(|((at, _), _)| *at);
            let first = match next_timer {
                Some(at) => {
                    let deadline = self.shared.started + Duration::from_millis(at);
                    tokio::select! {
                        ev = self.rx.recv() => match ev { Some(ev) => Some(ev), None => return },
                        _ = tokio::time::sleep_until(deadline.into()) => None,
                    }
                }
                None => match self.rx.recv().await {
                    Some(ev) => Some(ev),
                    None => return,
                },
            };
            if let Some(ev) = first {
                if !self.handle(ev, &mut t).await {
                    return;
                }
                for _ in 1..EVENTS_PER_TURN_MAX {
                    match self.rx.try_recv() {
                        Ok(ev) => {
                            if !self.handle(ev, &mut t).await {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            let now = self.shared.now_ms();
            while let Some(entry) = t.timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let timer = entry.remove();
                let out = self.proposer.on_timer(now, timer);
                if !self.carry_out(out, &mut t).await {
                    return;
                }
            }
            self.shared.stats.proposals_in_flight.store(self.proposer.in_flight() as u64, Ordering::Relaxed);
            self.shared.stats.cached_keys.store(self.proposer.cached_keys() as u64, Ordering::Relaxed);
            self.flush(&mut t);
        }
    }

    /// Handles one event; false when the node must stop.
    async fn handle(&mut self, ev: ProposerEvent, t: &mut Turn) -> bool {
        let now = self.shared.now_ms();
        match ev {
            ProposerEvent::Propose { items, settle } => {
                for (key, change, reply) in items {
                    self.shared.stats.proposals.fetch_add(1, Ordering::Relaxed);
                    // Stamped with this node's expiry clock: the change applies at it.
                    let at = self.shared.expiry_now_ms();
                    let started = if settle {
                        self.proposer.propose_settle(now, key, at)
                    } else {
                        self.proposer.propose_at(now, key, change, at)
                    };
                    match started {
                        Ok((id, out)) => {
                            t.waiting.insert(id, reply);
                            if !self.carry_out(out, t).await {
                                return false;
                            }
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                true
            }
            ProposerEvent::Replies { from, replies } => {
                for reply in replies {
                    let out = self.proposer.on_reply(now, from, reply);
                    if !self.carry_out(out, t).await {
                        return false;
                    }
                }
                true
            }
            ProposerEvent::Dead(dead) => {
                self.proposer.set_dead_peers(&dead);
                true
            }
            ProposerEvent::Foreign(seen) => {
                for (key, ballot) in seen {
                    self.proposer.observe_foreign(now, &key, ballot);
                }
                true
            }
            ProposerEvent::Config(config) => self.reconfigure(now, config, t).await,
        }
    }

    /// Carries out outputs in order; false when the node must stop.
    async fn carry_out(&mut self, out: Vec<ProposerOutput>, t: &mut Turn) -> bool {
        for o in out {
            match o {
                ProposerOutput::Send { to, request } => t.outbox.entry(to).or_default().push(request),
                ProposerOutput::WakeAt(timer) => {
                    t.timer_seq += 1;
                    t.timers.insert((timer.at, t.timer_seq), timer);
                }
                ProposerOutput::Done { proposal, result } => {
                    match &result {
                        Ok(_) => self.shared.stats.proposals_ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => self.shared.stats.proposals_failed.fetch_add(1, Ordering::Relaxed),
                    };
                    if let Some(tx) = t.waiting.remove(&proposal) {
                        let _ = tx.send(result);
                    }
                }
                ProposerOutput::PersistCounterFloor { counter } => {
                    let store = self.store.clone();
                    let r = tokio::task::spawn_blocking(move || {
                        store.write(Durability::Immediate, |b| {
                            b.meta_put(COUNTER_FLOOR_META_KEY, &counter.to_le_bytes())
                        })
                    })
                    .await;
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            self.shared.set_fatal(format!("cannot persist the ballot counter floor: {e}"));
                            return false;
                        }
                        Err(e) => {
                            self.shared.set_fatal(format!("counter floor task failed: {e}"));
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// A new configuration: the proposer votes with its voters (built anew if this node's
    /// ballot identity changed: a joining node that became a member), and links follow its
    /// members. False when the node must stop.
    async fn reconfigure(&mut self, now: Tick, config: ClusterConfig, t: &mut Turn) -> bool {
        if config.epoch <= self.epoch && self.shared.voter().is_none_or(|me| me == self.template.node) {
            return true;
        }
        // What this turn built under the old voters leaves stamped with their epoch.
        self.flush(t);
        self.epoch = config.epoch;
        let voters = config.voters();
        if let Some(me) = self.shared.voter() {
            if me != self.template.node {
                // Nothing is in flight: a node proposes only once it is a member.
                self.template.node = me;
                self.template.acceptors = voters.all().to_vec();
                self.template.initial_counter = self.proposer.counter();
                match Proposer::new(self.template.clone()) {
                    Ok(p) => self.proposer = p,
                    Err(e) => {
                        self.shared.set_fatal(format!("cannot build the proposer: {e}"));
                        return false;
                    }
                }
            }
        }
        match self.proposer.set_voters(now, voters) {
            Ok(out) => {
                if !self.carry_out(out, t).await {
                    return false;
                }
            }
            Err(e) => {
                self.shared.set_fatal(format!("cannot use the configuration of epoch {}: {e}", config.epoch));
                return false;
            }
        }
        self.shared.proposer_epoch.store(self.epoch, Ordering::Release);
        self.relink()
    }

    /// One link per peer of the configuration (links of members that left are dropped, which
    /// ends them). False when the node is going away.
    fn relink(&mut self) -> bool {
        let peers = self.shared.peers.read().clone();
        self.links.retain(|id, _| peers.contains_key(id));
        for (id, peer) in peers {
            if self.links.contains_key(&id) {
                continue;
            }
            let Some(tx) = self.tx.upgrade() else { return false };
            let (link_tx, link_rx) = mpsc::channel(PEER_QUEUE_MAX);
            let acceptor = self.acceptor_tx.clone();
            tokio::spawn(peer_link(id, peer, link_rx, (tx, acceptor), self.shared.clone()));
            self.links.insert(id, link_tx);
        }
        true
    }

    /// Hands the turn's requests to each peer's link (and this node's to its acceptor). A
    /// request to a voter that is not the current generation of its member (a replaced one)
    /// goes nowhere: that acceptor is gone.
    fn flush(&mut self, t: &mut Turn) {
        let me = self.shared.voter();
        let epoch = self.epoch;
        let current = self.shared.config.read().everyone();
        for (to, requests) in std::mem::take(&mut t.outbox) {
            if Some(to) == me {
                let Some(tx) = self.tx.upgrade() else { return };
                let (reply_tx, reply_rx) = oneshot::channel();
                let job = AcceptorJob { epoch, requests, reply: reply_tx, received: std::time::Instant::now() };
                if self.acceptor_tx.try_send(Job::Paxos(job)).is_err() {
                    self.shared.stats.peer_batches_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(Ok(replies)) = reply_rx.await {
                        let _ = tx.send(ProposerEvent::Replies { from: to, replies }).await;
                    }
                });
                continue;
            }
            let member = config::member_of(to);
            if !current.iter().any(|m| m.voter() == to) {
                continue;
            }
            if let Some(link) = self.links.get(&member) {
                if link.try_send((epoch, requests)).is_err() {
                    self.shared.stats.peer_batches_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// One peer's sender: everything queued for the peer goes out in one frame (split at
/// [`PEER_BATCH_BYTES_MAX`]), with at most [`PEER_FRAMES_IN_FLIGHT_MAX`] frames unanswered.
async fn peer_link(
    to: u64,
    peer: rampart_transport::Peer,
    mut rx: mpsc::Receiver<(u64, Vec<Request>)>,
    (events, acceptor): (mpsc::Sender<ProposerEvent>, mpsc::Sender<Job>),
    shared: Arc<Shared>,
) {
    let window = Arc::new(tokio::sync::Semaphore::new(PEER_FRAMES_IN_FLIGHT_MAX));
    let mut pending: Vec<Request> = Vec::new();
    let mut epoch = 0;
    // A batch of another epoch than `pending`'s: it starts the next frame.
    let mut held: Option<(u64, Vec<Request>)> = None;
    loop {
        // Wait for a free slot first: requests keep queueing meanwhile and join this frame.
        let Ok(permit) = window.clone().acquire_owned().await else { return };
        if pending.is_empty() {
            let next = match held.take() {
                Some(h) => Some(h),
                None => rx.recv().await,
            };
            match next {
                Some((e, first)) => (epoch, pending) = (e, first),
                None => return,
            }
        }
        let mut bytes: usize = pending.iter().map(request_bytes).sum();
        while bytes < PEER_BATCH_BYTES_MAX && held.is_none() {
            match rx.try_recv() {
                Ok((e, more)) if e == epoch => {
                    bytes += more.iter().map(request_bytes).sum::<usize>();
                    pending.extend(more);
                }
                Ok(other) => held = Some(other),
                Err(_) => break,
            }
        }
        // The first request always goes, even one over the byte limit alone.
        let frame = split_at_bytes(&mut pending);
        let sent = frame.len();
        if shared.is_dead(to) {
            // The detector calls the peer dead: drop, as the network would, until it is back.
            shared.stats.peer_batches_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let payload = match wire::encode(&shared.envelope_at(epoch, PeerRequest::Paxos { requests: frame })) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "dropping a Paxos batch");
                continue;
            }
        };
        let channels = (events.clone(), acceptor.clone());
        tokio::spawn(exchange(to, peer.clone(), (payload, sent, epoch), channels, shared.clone(), permit));
    }
}

/// Sends one frame and hands the peer's replies to the proposer. The frame's window slot is held
/// until the answer (or the timeout); a lost or malformed answer is as if the network lost it.
async fn exchange(
    to: u64,
    peer: rampart_transport::Peer,
    (payload, sent, epoch): (bytes::Bytes, usize, u64),
    (events, acceptor): (mpsc::Sender<ProposerEvent>, mpsc::Sender<Job>),
    shared: Arc<Shared>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let timeout = shared.peer_call_timeout;
    let Ok(Ok(bytes)) = tokio::time::timeout(timeout, peer.call(payload, timeout)).await else { return };
    match wire::decode::<PeerResponse>(&bytes) {
        Ok(PeerResponse::WrongEpoch { epoch: theirs, config }) => {
            crate::reconfig::on_wrong_epoch(&shared, &peer, epoch, theirs, config, &acceptor).await;
        }
        Ok(PeerResponse::Paxos { id, replies, seq })
            if shared.config.read().entry(to).is_some_and(|e| e.voter() == NodeId(id)) =>
        {
            shared.observe_seq(NodeId(id), seq);
            if let Err(e) = validate::check_replies(&replies, sent, &shared.peer_limits) {
                tracing::warn!(peer = to, error = %e, "dropping invalid Paxos replies");
                return;
            }
            // Durable before the peer's answers can count in a quorum.
            if let Err(e) = shared.note_seen(to).await {
                shared.set_fatal(format!("cannot record a peer as seen: {e}"));
                return;
            }
            let _ = events.send(ProposerEvent::Replies { from: NodeId(id), replies }).await;
        }
        Ok(PeerResponse::Paxos { id, .. }) => {
            tracing::error!(peer = to, answered_as = id, "a different node answered for this peer's address");
        }
        Ok(_) => tracing::warn!(peer = to, "peer answered a Paxos batch with another message"),
        Err(e) => tracing::warn!(peer = to, error = %e, "undecodable Paxos replies"),
    }
}

fn request_bytes(r: &Request) -> usize {
    match r {
        Request::Prepare { key, .. } | Request::Peek { key, .. } => key.len() + 32,
        Request::Accept { key, value, .. } => key.len() + value.as_ref().map_or(0, Vec::len) + 64,
    }
}

/// Takes the longest prefix of `pending` within [`PEER_BATCH_BYTES_MAX`] bytes and
/// [`PAXOS_REQUESTS_PER_FRAME_MAX`] requests (what the receiving peer accepts in one frame).
fn split_at_bytes(pending: &mut Vec<Request>) -> Vec<Request> {
    let mut bytes = 0;
    let mut n = 0;
    for r in pending.iter() {
        let b = request_bytes(r);
        if n == PAXOS_REQUESTS_PER_FRAME_MAX || (n > 0 && bytes + b > PEER_BATCH_BYTES_MAX) {
            break;
        }
        bytes += b;
        n += 1;
    }
    let rest = pending.split_off(n);
    std::mem::replace(pending, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_paxos::Ballot;

    fn accept(value_bytes: usize) -> Request {
        Request::Accept {
            key: b"k".to_vec(),
            ballot: Ballot::ZERO,
            value: Some(vec![0; value_bytes]),
            base: Ballot::ZERO,
        }
    }

    #[test]
    fn a_frame_takes_the_longest_prefix_within_the_byte_bound_and_always_one_request() {
        let half = PEER_BATCH_BYTES_MAX / 2 - 100;
        let mut pending = vec![accept(half), accept(half), accept(half)];
        let frame = split_at_bytes(&mut pending);
        assert_eq!((frame.len(), pending.len()), (2, 1), "two halves fit, the third waits");
        assert!(frame.iter().map(request_bytes).sum::<usize>() <= PEER_BATCH_BYTES_MAX);
        // A request over the bound alone still goes, alone.
        let mut pending = vec![accept(PEER_BATCH_BYTES_MAX), accept(1)];
        assert_eq!(split_at_bytes(&mut pending).len(), 1);
        assert_eq!(pending.len(), 1);
        let mut empty = Vec::new();
        assert!(split_at_bytes(&mut empty).is_empty());
        // Small requests: the count bound splits them, as the receiver requires.
        let mut small = vec![accept(1); PAXOS_REQUESTS_PER_FRAME_MAX + 5];
        assert_eq!(split_at_bytes(&mut small).len(), PAXOS_REQUESTS_PER_FRAME_MAX);
        assert_eq!(small.len(), 5);
    }
}
