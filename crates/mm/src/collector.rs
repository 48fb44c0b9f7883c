//! Tombstone collection: gives back the registers of deleted and expired keys
//! (docs/paxos.md, "Tombstone collection").
//!
//! Every [`COLLECTOR_INTERVAL`] a node reads a bounded slice of its own registers (at most
//! [`COLLECTOR_SCAN_MAX`], on the blocking pool, resuming where the last pass stopped) and notes
//! its tombstones, with the ballot they were accepted at and when it first saw them. A tombstone
//! still there, at the same ballot, the grace period later is due if this node owns the key
//! (the expirer's [`crate::expirer::owner_rank`]), [`NOT_OWNED_GRACE_FACTOR`] grace periods
//! later if not (so members rarely work on the same key, and a key whose owner missed the
//! delete is still collected). For up to [`crate::wire::COLLECT_KEYS_MAX`] due keys it asks every
//! voter of the (stable) configuration what it holds, and collects a key only if every voter
//! answers and each holds the same tombstone at the same ballot `t`, or no register and a
//! floor at or above `t`. Then it asks every voter to remove the register if it is still that
//! tombstone. Each acceptor raises its *floor* (the promise a key without a register stands
//! for) to the removed register's promise, durably in the same transaction, so a delayed message
//! from before the collection is refused as the register would have refused it.
//!
//! A voter that is down or answers late blocks the collection of every key that round (space
//! waits, safety does not). A voter that missed the delete (it was down) still holds the value:
//! the collector then settles the key (a full Paxos round, which accepts the tombstone at every
//! voter) and takes it up again a grace period later. A collection that reaches only some
//! voters is safe as it stands and finished by a later round.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use rampart_paxos::Ballot;
use tokio::sync::oneshot;

use crate::acceptor_task::CollectJob;
use crate::wire::{self, CollectItem, Holding, PeerRequest, PeerResponse};
use crate::MmNode;

/// How often a node looks for tombstones to collect.
pub const COLLECTOR_INTERVAL: Duration = Duration::from_millis(1000);
/// Most registers one pass reads from this node's store.
pub const COLLECTOR_SCAN_MAX: usize = 65_536;
/// Most collection rounds (each of up to [`crate::wire::COLLECT_KEYS_MAX`] keys) in one pass.
pub const COLLECTOR_ROUNDS_MAX: usize = 16;
/// Most tombstones a node remembers as candidates at once.
pub const CANDIDATES_MAX: usize = 65_536;

/// A key whose owner is another member is taken up only this many grace periods after this node
/// first saw its tombstone: its owner may be the one that missed the delete (it holds the value,
/// so it never sees a tombstone), or down.
pub const NOT_OWNED_GRACE_FACTOR: u32 = 4;

/// A tombstone: the ballot it was accepted at, when this node first saw it, and whether this
/// node owns the key.
type Candidates = BTreeMap<Vec<u8>, (Ballot, Instant, bool)>;

impl MmNode {
    /// One collector pass (module docs): answers how many keys it collected on every voter.
    pub async fn collect_pass(
        &self,
        cursor: &mut Option<Vec<u8>>,
        candidates: &mut Candidates,
    ) -> Result<usize, String> {
        let config = self.cluster_config();
        if config.is_joint() || self.shared.voter().is_none() {
            return Ok(0);
        }
        let (members, rank) = {
            let m = config.everyone();
            (m.len().max(1), m.iter().position(|e| e.id == self.cfg.id).unwrap_or(0))
        };
        let (store, after) = (self.store.clone(), cursor.clone());
        let (registers, more) = tokio::task::spawn_blocking(move || {
            crate::scan::read_page(&store, b"", after.as_deref(), COLLECTOR_SCAN_MAX, false, usize::MAX)
        })
        .await
        .map_err(|e| format!("collector scan task failed: {e}"))??;
        *cursor = if more { registers.last().map(|r| r.key.clone()) } else { None };
        let now = Instant::now();
        for r in registers.iter().filter(|r| r.value.is_none() && r.accepted != Ballot::ZERO) {
            let mine = crate::expirer::owner_rank(&r.key, members) == rank;
            let full = candidates.len() >= CANDIDATES_MAX;
            match candidates.get_mut(&r.key) {
                Some(c) if c.0 == r.accepted => {}
                Some(c) => *c = (r.accepted, now, mine),
                None if !full => {
                    candidates.insert(r.key.clone(), (r.accepted, now, mine));
                }
                None => {}
            }
        }
        let grace = self.cfg.tombstone_grace;
        let mut due: Vec<CollectItem> = candidates
            .iter()
            .filter(|(_, (_, seen, mine))| {
                let wait = if *mine { grace } else { grace * NOT_OWNED_GRACE_FACTOR };
                now.duration_since(*seen) >= wait
            })
            .take(wire::COLLECT_KEYS_MAX * COLLECTOR_ROUNDS_MAX)
            .map(|(k, (accepted, _, _))| CollectItem { key: k.clone(), accepted: *accepted })
            .collect();
        let mut collected = 0;
        while !due.is_empty() {
            let rest = due.split_off(due.len().min(wire::COLLECT_KEYS_MAX));
            match self.collect_round(&config, due, candidates).await? {
                Some(n) => collected += n,
                None => break,
            }
            due = rest;
        }
        Ok(collected)
    }

    /// One round over `due` (module docs): `None` when a voter did not answer.
    async fn collect_round(
        &self,
        config: &crate::config::ClusterConfig,
        due: Vec<CollectItem>,
        candidates: &mut Candidates,
    ) -> Result<Option<usize>, String> {
        let epoch = config.epoch;
        let keys: Vec<Vec<u8>> = due.iter().map(|i| i.key.clone()).collect();
        // What every voter holds; one missing answer and nothing is collected this round.
        let mut all: Vec<Vec<Holding>> = vec![self.inspect_local(epoch, keys.clone()).await?];
        for m in config.members.iter().filter(|m| m.id != self.cfg.id) {
            match self.ask_peer(m.id, PeerRequest::Inspect { keys: keys.clone() }, epoch).await {
                Some(PeerResponse::Inspected { holdings }) if holdings.len() == keys.len() => all.push(holdings),
                _ => {
                    self.shared.stats.collection_blocked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(None);
                }
            }
        }
        let mut ready = Vec::new();
        let mut repair = Vec::new();
        for (i, item) in due.into_iter().enumerate() {
            let t = item.accepted;
            if !matches!(all[0][i], Holding::Tombstone(b) if b == t) {
                // Written again, or collected here already: no longer a candidate.
                candidates.remove(&item.key);
                continue;
            }
            let safe = all.iter().all(|h| match h[i] {
                Holding::Tombstone(b) => b == t,
                Holding::Absent { floor } => floor >= t,
                Holding::Live => false,
            });
            if safe {
                ready.push(item);
            } else {
                // A voter missed the delete (it was down) or holds an older state: a full round
                // accepts the tombstone at every voter, and the key comes due again after it.
                repair.push(item.key);
            }
        }
        if !repair.is_empty() {
            let _ = self.settle(repair).await;
        }
        if ready.is_empty() {
            return Ok(Some(0));
        }
        for m in config.members.iter().filter(|m| m.id != self.cfg.id) {
            // A voter that misses it keeps its tombstone; a later round finishes it.
            let _ = self.ask_peer(m.id, PeerRequest::Collect { items: ready.clone() }, epoch).await;
        }
        let (tx, rx) = oneshot::channel();
        self.collect_job(CollectJob::Collect { epoch, items: ready.clone(), reply: tx }).await?;
        let _ = rx.await;
        for item in &ready {
            candidates.remove(&item.key);
        }
        Ok(Some(ready.len()))
    }

    async fn inspect_local(&self, epoch: u64, keys: Vec<Vec<u8>>) -> Result<Vec<Holding>, String> {
        let (tx, rx) = oneshot::channel();
        self.collect_job(CollectJob::Inspect { epoch, keys, reply: tx }).await?;
        rx.await.map_err(|_| "the acceptor did not answer".to_string())?.map_err(|e| format!("epoch {e}"))
    }

    /// One request to member `id` at `epoch`; `None` when it does not answer in time.
    async fn ask_peer(&self, id: u64, request: PeerRequest, epoch: u64) -> Option<PeerResponse> {
        let peer = self.shared.peer(id)?;
        let payload = wire::encode(&self.shared.envelope_at(epoch, request)).ok()?;
        let timeout = self.cfg.request_timeout;
        let bytes = tokio::time::timeout(timeout, peer.call(payload, timeout)).await.ok()?.ok()?;
        wire::decode::<PeerResponse>(&bytes).ok()
    }
}

/// The collector's loop (module docs); holds the node weakly, so dropping the node stops it.
pub(crate) async fn collector_loop(node: Weak<MmNode>) {
    let mut interval = tokio::time::interval(COLLECTOR_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursor = None;
    let mut candidates = Candidates::new();
    loop {
        interval.tick().await;
        let Some(n) = node.upgrade() else { return };
        if !n.healthy() {
            continue;
        }
        if let Err(e) = n.collect_pass(&mut cursor, &mut candidates).await {
            tracing::warn!(error = %e, "tombstone collection pass failed");
            cursor = None;
        }
    }
}
