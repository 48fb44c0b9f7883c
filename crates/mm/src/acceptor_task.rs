//! The acceptor's task: group commit.
//!
//! Jobs (a batch of Paxos requests from one peer, or from this node's proposer) queue on a
//! bounded channel. The task takes every job waiting (up to [`ACCEPTOR_BATCH_MAX`] requests),
//! runs them through the in-memory [`Acceptor`] in arrival order, persists every register they
//! changed in one redb commit (one fsync), and only then releases the replies, in order. Jobs
//! that arrive during a commit form the next batch. This is the durability contract of
//! `rampart_paxos::Acceptor`: a reply leaves only after every write produced before it is durable.
//! If a commit fails the replies are never sent and the node stops (see `MmNode::wait_fatal`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rampart_paxos::{Acceptor, Ballot, Key, NodeId, RegisterState, Reply, Request};
use rampart_storage::{Durability, Store};
use tokio::sync::{mpsc, oneshot};

use crate::config::{self, ClusterConfig, CONFIG_META_KEY};
use crate::proposer_task::ProposerEvent;
use crate::wire::{CollectItem, Holding};
use crate::{wire, Role, Shared, INITIALIZED_META_KEY};

/// Most requests handled and committed together.
pub const ACCEPTOR_BATCH_MAX: usize = 8192;
/// Most registers the acceptor holds in memory. The others live in redb only and are read back
/// (one read transaction per batch) before the requests that name them; the least recently used
/// are forgotten after each group commit, once durable.
pub const REGISTERS_CACHED_MAX: usize = 262_144;
/// Most key and value bytes of the registers held in memory, whatever their number: with large
/// values the count alone would let the cache hold the whole data set (measured: 100 KB values
/// took a node's RSS to 2.3 GB with 2 GB of data before this bound).
pub const REGISTERS_CACHED_BYTES_MAX: usize = 128 << 20;

/// The bytes a register held in memory is counted as.
pub(crate) fn register_bytes(key: &[u8], state: Option<&rampart_paxos::RegisterState>) -> usize {
    key.len() + state.and_then(|s| s.value.as_ref()).map_or(0, Vec::len)
}

/// Which registers are in memory, least recently used first, and how many the store holds.
pub(crate) struct RegisterCache {
    /// Per key: its recency stamp and the bytes it is counted as.
    stamps: HashMap<Key, (u64, usize)>,
    order: std::collections::BTreeMap<u64, Key>,
    next: u64,
    max: usize,
    /// Bytes of the registers in memory, and their bound.
    bytes: usize,
    bytes_max: usize,
    /// Registers in the store, tombstones included (the `rampart_mm_registers` gauge).
    pub(crate) total: u64,
}

impl RegisterCache {
    pub(crate) fn new(
        max: usize,
        bytes_max: usize,
        in_memory: impl IntoIterator<Item = (Key, usize)>,
        total: u64,
    ) -> Self {
        let mut c = RegisterCache {
            stamps: HashMap::new(),
            order: Default::default(),
            next: 0,
            max: max.max(1),
            bytes: 0,
            bytes_max: bytes_max.max(1),
            total,
        };
        for (k, n) in in_memory {
            c.touch(&k, n);
        }
        c
    }

    /// Marks `key` used now, counted as `bytes`.
    fn touch(&mut self, key: &[u8], bytes: usize) {
        if let Some((old, n)) = self.stamps.get(key) {
            self.order.remove(old);
            self.bytes -= n;
        }
        self.next += 1;
        self.stamps.insert(key.to_vec(), (self.next, bytes));
        self.bytes += bytes;
        self.order.insert(self.next, key.to_vec());
    }

    /// Marks every key of `keys` the acceptor holds used now.
    fn touch_held<'k>(&mut self, acceptor: &Acceptor, keys: impl IntoIterator<Item = &'k Key>) {
        for k in keys {
            if let Some(state) = acceptor.register(k) {
                self.touch(k, register_bytes(k, Some(state)));
            }
        }
    }

    fn forget(&mut self, key: &[u8]) {
        if let Some((old, n)) = self.stamps.remove(key) {
            self.order.remove(&old);
            self.bytes -= n;
        }
    }

    /// Forgets the least recently used registers over either bound (the most recent one is
    /// always kept). Only after a commit: every register in memory is then durable.
    fn evict_over(&mut self, acceptor: &mut Acceptor) {
        while self.stamps.len() > self.max || (self.bytes > self.bytes_max && self.stamps.len() > 1) {
            let Some((_, key)) = self.order.pop_first() else { break };
            if let Some((_, n)) = self.stamps.remove(&key) {
                self.bytes -= n;
            }
            acceptor.evict(&key);
        }
    }
}

/// Reads back from the store the registers of `keys` the acceptor does not hold in memory.
/// Answers the keys that have no register at all (neither in memory nor stored).
async fn load_missing(acceptor: &mut Acceptor, store: &Arc<Store>, keys: Vec<Key>) -> Result<Vec<Key>, String> {
    let missing: Vec<Key> = keys.into_iter().filter(|k| !acceptor.holds(k)).collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    let s = store.clone();
    let found = tokio::task::spawn_blocking(move || {
        s.read(|v| {
            let mut out = Vec::with_capacity(missing.len());
            for k in missing {
                let raw = v.register_get(&k)?;
                out.push((k, raw));
            }
            Ok(out)
        })
    })
    .await
    .map_err(|e| format!("register read task failed: {e}"))?
    .map_err(|e| format!("cannot read registers: {e}"))?;
    let mut absent = Vec::new();
    for (k, raw) in found {
        match raw {
            Some(raw) => {
                let state = wire::decode_register(&raw)
                    .map_err(|e| format!("register {:?} is corrupt: {e}", String::from_utf8_lossy(&k)))?;
                acceptor.load(k, state);
            }
            None => absent.push(k),
        }
    }
    Ok(absent)
}
/// Most jobs waiting for the acceptor; senders wait (peers) or drop (the local proposer) when full.
pub const ACCEPTOR_QUEUE_MAX: usize = 4096;

/// A group commit slower than this is logged (it holds up every reply of its batch).
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(50);

/// A job's replies, or the acceptor's epoch when it refused the job (see [`AcceptorJob`]).
pub type Answer = Result<Vec<Reply>, u64>;

pub struct AcceptorJob {
    /// The configuration epoch the sender's proposer used: only a job of this acceptor's own
    /// epoch is handled (docs/paxos.md, "Membership changes").
    pub epoch: u64,
    pub requests: Vec<Request>,
    /// The replies, or the epoch of this acceptor when the job's epoch is not its own (or this
    /// node does not vote).
    pub reply: oneshot::Sender<Answer>,
    /// When the job was queued: a job older than the asker's timeout is skipped unanswered
    /// (no one waits for it, and nothing was changed or promised yet).
    pub received: std::time::Instant,
}

/// A configuration to adopt: made durable, then the acceptor's epoch, before any later job is
/// handled. Answers the epoch now in force (the configuration's, or a higher one already held).
pub struct AdoptJob {
    pub config: ClusterConfig,
    /// The collected floor of the member that sent it (`Ballot::ZERO`: none): raised to, so a
    /// new member refuses low ballots for keys the others collected (revisions stay monotonic).
    pub floor: Ballot,
    /// The generation this node becomes a member at, if the configuration makes it one.
    pub reply: oneshot::Sender<Result<u64, String>>,
}

/// Tombstone collection's two steps (`collector`): report what the acceptor holds for keys, or
/// remove tombstones. Like a Paxos job, answered only at the acceptor's own epoch (else `Err`
/// with it) and only while this node votes.
pub enum CollectJob {
    Inspect { epoch: u64, keys: Vec<Key>, reply: oneshot::Sender<Result<Vec<Holding>, u64>> },
    Collect { epoch: u64, items: Vec<CollectItem>, reply: oneshot::Sender<Result<u32, u64>> },
}

/// What the acceptor task takes, in order.
pub enum Job {
    Paxos(AcceptorJob),
    Adopt(AdoptJob),
    Collect(CollectJob),
}

/// Meta key of the acceptor's commit sequence: one u64, raised by every group commit.
pub const COMMIT_SEQ_META_KEY: &str = "mm_commit_seq";

/// Meta key of the commit sequences this node saw from each voter (pairs of u64: voter id,
/// sequence), persisted every few seconds.
pub const PEER_SEQS_META_KEY: &str = "mm_peer_seqs";

/// Meta key of the acceptor's collected floor (`Acceptor::floor`): 16 bytes, a ballot.
pub const COLLECTED_FLOOR_META_KEY: &str = "mm_collected_floor";

/// What one batch of jobs produced: the registers to persist (the last state of each key), the
/// replies held back until they are durable, and the keys other proposers are working on.
struct Handled {
    writes: HashMap<Key, RegisterState>,
    replies: Vec<(oneshot::Sender<Answer>, Answer)>,
    foreign: Vec<(Key, Ballot)>,
}

/// Runs every live job through the acceptor in arrival order; expired jobs are skipped
/// unanswered, and a job of another epoch than `epoch` (or any job while `me` is `None`: this
/// node does not vote) is refused whole, nothing changed.
fn handle_jobs(
    acceptor: &mut Acceptor,
    jobs: Vec<AcceptorJob>,
    (me, epoch): (Option<NodeId>, u64),
    shared: &Shared,
) -> Handled {
    let mut h = Handled { writes: HashMap::new(), replies: Vec::with_capacity(jobs.len()), foreign: Vec::new() };
    let ceiling = shared.ballot_ceiling();
    for job in jobs {
        if job.reply.is_closed() || job.received.elapsed() > shared.peer_call_timeout {
            shared.stats.acceptor_jobs_expired.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Some(me) = me.filter(|_| job.epoch == epoch) else {
            h.replies.push((job.reply, Err(epoch)));
            continue;
        };
        let mut out = Vec::with_capacity(job.requests.len());
        for request in job.requests {
            // A peek changes nothing, so it leaves this node's cached ballot valid.
            if request.ballot().node != me && !matches!(request, Request::Peek { .. }) {
                h.foreign.push((request.key().to_vec(), request.ballot()));
            }
            let (write, reply) = acceptor.handle(request, ceiling).into_parts();
            if let Some(w) = write {
                // Later writes of the same key in this batch supersede earlier ones.
                h.writes.insert(w.key, w.state);
            }
            out.push(reply);
        }
        h.replies.push((job.reply, Ok(out)));
    }
    h
}

/// Persists a batch's registers in one fsynced commit. An error stops the node: its replies must
/// never be sent.
async fn commit(store: &Arc<Store>, writes: HashMap<Key, RegisterState>, shared: &Shared) -> Result<(), String> {
    let n = writes.len();
    let store = store.clone();
    let started = std::time::Instant::now();
    // Every commit raises the durable commit sequence, in the same transaction: what peers see
    // of it is how a data dir restored from an old copy is told apart (`restart_check`).
    let seq = shared.commit_seq.load(Ordering::Acquire) + 1;
    let committed = tokio::task::spawn_blocking(move || {
        store.write(Durability::Immediate, |b| {
            for (key, state) in &writes {
                b.register_put(key, &wire::encode_register(state))?;
            }
            b.meta_put(COMMIT_SEQ_META_KEY, &seq.to_le_bytes())
        })
    })
    .await;
    match committed {
        Ok(Ok(())) => {
            let took = started.elapsed();
            if took >= SLOW_COMMIT {
                tracing::warn!(registers = n, took_ms = took.as_millis() as u64, "slow acceptor commit");
            }
            shared.commit_seq.store(seq, Ordering::Release);
            shared.stats.acceptor_commits.fetch_add(1, Ordering::Relaxed);
            shared.stats.acceptor_registers_written.fetch_add(n as u64, Ordering::Relaxed);
            Ok(())
        }
        Ok(Err(e)) => Err(format!("cannot persist acceptor state: {e}")),
        Err(e) => Err(format!("acceptor commit task failed: {e}")),
    }
}

pub async fn run(
    mut acceptor: Acceptor,
    store: Arc<Store>,
    mut rx: mpsc::Receiver<Job>,
    proposer: mpsc::WeakSender<ProposerEvent>,
    shared: Arc<Shared>,
    adopted: tokio::sync::watch::Sender<ClusterConfig>,
    mut cache: RegisterCache,
) {
    let mut epoch = shared.config.read().epoch;
    shared.stats.registers.store(cache.total, Ordering::Relaxed);
    *shared.floor.lock() = acceptor.floor();
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let first = match first {
            Job::Adopt(job) => {
                if acceptor.raise_floor(job.floor, shared.ballot_ceiling()) {
                    let (s, raw) = (store.clone(), wire::encode_ballot(acceptor.floor()));
                    let r = tokio::task::spawn_blocking(move || {
                        s.write(Durability::Immediate, |b| b.meta_put(COLLECTED_FLOOR_META_KEY, &raw))
                    })
                    .await;
                    if !matches!(r, Ok(Ok(()))) {
                        shared.set_fatal("cannot persist the collected floor".into());
                        return;
                    }
                    *shared.floor.lock() = acceptor.floor();
                }
                match adopt(&store, &shared, &mut epoch, job.config).await {
                    Ok(config) => {
                        let now = config.as_ref().map_or(epoch, |c| c.epoch);
                        if let Some(c) = config {
                            adopted.send_replace(c);
                        }
                        let _ = job.reply.send(Ok(now));
                    }
                    Err(reason) => {
                        let _ = job.reply.send(Err(reason.clone()));
                        shared.set_fatal(reason);
                        return;
                    }
                }
                continue;
            }
            Job::Collect(job) => {
                if let Err(reason) = collect_job((&mut acceptor, &mut cache), &store, &shared, epoch, job).await {
                    shared.set_fatal(reason);
                    return;
                }
                continue;
            }
            Job::Paxos(job) => job,
        };
        let mut count = first.requests.len();
        let mut jobs = vec![first];
        while count < ACCEPTOR_BATCH_MAX {
            match rx.try_recv() {
                Ok(Job::Paxos(job)) => {
                    count += job.requests.len();
                    jobs.push(job);
                }
                Ok(other) => {
                    // Handled after this batch is durable and answered.
                    held = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let me = shared.voter();
        let keys: Vec<Key> = {
            let mut k: Vec<Key> = jobs.iter().flat_map(|j| j.requests.iter().map(|r| r.key().to_vec())).collect();
            k.sort();
            k.dedup();
            k
        };
        let absent = match load_missing(&mut acceptor, &store, keys.clone()).await {
            Ok(a) => a,
            Err(reason) => {
                shared.set_fatal(reason);
                return;
            }
        };
        let Handled { writes, replies, foreign } = handle_jobs(&mut acceptor, jobs, (me, epoch), &shared);
        cache.total += absent.iter().filter(|k| acceptor.holds(k)).count() as u64;
        if !foreign.is_empty() {
            if let Some(p) = proposer.upgrade() {
                // A hint only: dropped when the proposer is busy.
                let _ = p.try_send(ProposerEvent::Foreign(foreign));
            }
        }
        if !writes.is_empty() {
            if let Err(reason) = commit(&store, writes, &shared).await {
                shared.set_fatal(reason);
                return;
            }
        }
        shared.stats.acceptor_requests.fetch_add(count as u64, Ordering::Relaxed);
        cache.touch_held(&acceptor, keys.iter());
        // Durable now: what is forgotten can be read back.
        cache.evict_over(&mut acceptor);
        shared.stats.registers.store(cache.total, Ordering::Relaxed);
        shared.stats.registers_in_memory.store(acceptor.len() as u64, Ordering::Relaxed);
        for (tx, out) in replies {
            // The asker may have given up (timeout); its reply is simply dropped.
            let _ = tx.send(out);
        }
    }
}

/// Runs one tombstone-collection job. Removals and the raised floor are persisted together in
/// one transaction before the answer; a failed write is fatal (the in-memory acceptor already
/// dropped the registers).
async fn collect_job(
    (acceptor, cache): (&mut Acceptor, &mut RegisterCache),
    store: &Arc<Store>,
    shared: &Shared,
    epoch: u64,
    job: CollectJob,
) -> Result<(), String> {
    let voting = shared.voter().is_some() && shared.not_voting().is_none();
    match job {
        CollectJob::Inspect { epoch: asked, keys, reply } => {
            if !voting || asked != epoch {
                let _ = reply.send(Err(epoch));
                return Ok(());
            }
            load_missing(acceptor, store, keys.clone()).await?;
            cache.touch_held(acceptor, keys.iter());
            let holdings: Vec<Holding> = keys
                .iter()
                .map(|k| match acceptor.register(k) {
                    None => Holding::Absent { floor: acceptor.floor() },
                    Some(s) if s.value.is_none() => Holding::Tombstone(s.accepted),
                    Some(_) => Holding::Live,
                })
                .collect();
            // Only after the holdings are read: a register evicted first would read as absent.
            cache.evict_over(acceptor);
            let _ = reply.send(Ok(holdings));
            Ok(())
        }
        CollectJob::Collect { epoch: asked, items, reply } => {
            if !voting || asked != epoch {
                let _ = reply.send(Err(epoch));
                return Ok(());
            }
            load_missing(acceptor, store, items.iter().map(|i| i.key.clone()).collect()).await?;
            cache.touch_held(acceptor, items.iter().map(|i| &i.key));
            let removed: Vec<Key> =
                items.into_iter().filter(|i| acceptor.collect(&i.key, i.accepted).is_some()).map(|i| i.key).collect();
            if removed.is_empty() {
                let _ = reply.send(Ok(0));
                return Ok(());
            }
            let floor = wire::encode_ballot(acceptor.floor());
            let (s, keys) = (store.clone(), removed.clone());
            tokio::task::spawn_blocking(move || {
                s.write(Durability::Immediate, |b| {
                    for k in &keys {
                        b.register_delete(k)?;
                    }
                    b.meta_put(COLLECTED_FLOOR_META_KEY, &floor)
                })
            })
            .await
            .map_err(|e| format!("collection task failed: {e}"))?
            .map_err(|e| format!("cannot persist a tombstone collection: {e}"))?;
            *shared.floor.lock() = acceptor.floor();
            shared.stats.tombstones_collected.fetch_add(removed.len() as u64, Ordering::Relaxed);
            for k in &removed {
                cache.forget(k);
            }
            cache.evict_over(acceptor);
            cache.total = cache.total.saturating_sub(removed.len() as u64);
            shared.stats.registers.store(cache.total, Ordering::Relaxed);
            let _ = reply.send(Ok(removed.len() as u32));
            Ok(())
        }
    }
}

/// Meta key of the generation this node is a member at.
pub const GENERATION_META_KEY: &str = "mm_generation";

/// Adopts `config` if its epoch is above `epoch`: durably (the configuration, and the
/// generation when it makes this node a member), then in memory (epoch, configuration, role,
/// cluster id). Answers the configuration adopted, or `None` when it was not newer. A failed
/// write is fatal (the node stops).
async fn adopt(
    store: &Arc<Store>,
    shared: &Shared,
    epoch: &mut u64,
    config: ClusterConfig,
) -> Result<Option<ClusterConfig>, String> {
    if config.epoch <= *epoch {
        return Ok(None);
    }
    // A configuration from a peer's answer: one that is malformed or of another cluster is
    // ignored (only a failed write is fatal).
    if let Err(e) = config.check() {
        tracing::warn!(error = %e, "ignoring a malformed configuration");
        return Ok(None);
    }
    let cluster = shared.cluster.load(Ordering::Acquire);
    if cluster != 0 && config.cluster_id != cluster {
        tracing::warn!(theirs = config.cluster_id, ours = cluster, "ignoring a configuration of another cluster");
        return Ok(None);
    }
    let mine = match &*shared.role.read() {
        Role::Member { generation } => Some(*generation),
        _ => None,
    };
    let planned = config::role_in(&config, shared.id, mine, shared.join_nonce);
    let raw = config.encode();
    let generation = match planned {
        Role::Member { generation }
            if mine.is_none() && shared.distrusted.lock().is_none_or(|bad| generation > bad) =>
        {
            Some(generation)
        }
        _ => None,
    };
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        s.write(Durability::Immediate, |b| {
            b.meta_put(CONFIG_META_KEY, &raw)?;
            if let Some(g) = generation {
                b.meta_put(GENERATION_META_KEY, &g.to_le_bytes())?;
                b.meta_put(INITIALIZED_META_KEY, b"1")?;
            }
            Ok(())
        })
    })
    .await
    .map_err(|e| format!("configuration task failed: {e}"))?
    .map_err(|e| format!("cannot persist the cluster configuration: {e}"))?;
    *epoch = config.epoch;
    shared.cluster.store(config.cluster_id, Ordering::Release);
    {
        // Decided under the role lock, after the write: the restart check may have found this
        // data dir old meanwhile (it sets `distrusted` under the same lock).
        let mut current = shared.role.write();
        let mut role = config::role_in(&config, shared.id, mine, shared.join_nonce);
        let distrusted = *shared.distrusted.lock();
        if let (Some(bad), Role::Member { generation }) = (distrusted, &role) {
            if *generation <= bad {
                // Older than what peers saw: only a replacement (a newer generation) lets it vote.
                role = current.clone();
            } else {
                *shared.distrusted.lock() = None;
            }
        }
        if let (None, Role::Member { generation }) = (mine, &role) {
            shared.fresh.store(false, Ordering::Release);
            if u64::from(*generation) != config.epoch {
                // A member through its join nonce, but not by the change that made the entry (a
                // data dir restored from a copy taken before it was added or replaced): check
                // with the peers first, as after any restart.
                shared.restart_confirmed.lock().clear();
                *shared.restart_since.lock() = std::time::Instant::now();
                shared.restart_check.store(true, Ordering::Release);
            }
        }
        if role != *current {
            match &role {
                Role::Member { generation } => {
                    tracing::info!(epoch = config.epoch, generation, "this node is a member")
                }
                Role::Joining { reason } | Role::Removed { reason } => tracing::warn!(epoch = config.epoch, %reason),
            }
        }
        *current = role;
    }
    *shared.config.write() = config.clone();
    tracing::info!(epoch = config.epoch, joint = config.is_joint(), "adopted cluster configuration");
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_paxos::RegisterState;

    fn with_value(n: usize) -> RegisterState {
        RegisterState { value: Some(vec![7; n]), ..Default::default() }
    }

    #[test]
    fn the_register_cache_is_bounded_by_bytes_as_well_as_by_count() {
        let mut acceptor = Acceptor::new();
        let mut cache = RegisterCache::new(1_000, 10_000, std::iter::empty(), 0);
        for i in 0..50u32 {
            let key = format!("k{i:02}").into_bytes();
            acceptor.load(key.clone(), with_value(1_000));
            cache.touch_held(&acceptor, [&key]);
            cache.evict_over(&mut acceptor);
        }
        assert!(cache.bytes <= 10_000, "{} bytes held", cache.bytes);
        assert_eq!(acceptor.len(), cache.stamps.len());
        assert!(acceptor.len() < 10 && acceptor.len() >= 9, "{} registers held", acceptor.len());
        assert!(acceptor.holds(b"k49") && !acceptor.holds(b"k00"), "the least recently used go first");
        // One register larger than the whole bound is still held (the newest is always kept).
        acceptor.load(b"huge".to_vec(), with_value(50_000));
        cache.touch_held(&acceptor, [&b"huge".to_vec()]);
        cache.evict_over(&mut acceptor);
        assert_eq!(acceptor.len(), 1);
        assert!(acceptor.holds(b"huge"));
        // Counted again, not twice, when touched again.
        cache.touch_held(&acceptor, [&b"huge".to_vec()]);
        assert_eq!(cache.bytes, 4 + 50_000);
    }
}
