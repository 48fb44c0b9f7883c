//! The background expirer: gives the space of expired keys back. Every [`EXPIRER_INTERVAL`] a
//! node reads a bounded slice of its own registers (at most [`EXPIRER_SCAN_MAX`], on the blocking
//! pool, resuming where the last pass stopped), picks the ones whose expiry has passed by its
//! expiry clock, and proposes [`KeyOp::ExpireDue`] for at most [`EXPIRER_BATCH_MAX`] of them,
//! awaiting them before the next pass (so at most that many are in flight). Chosen, each becomes
//! a tombstone, which the tombstone GC then reclaims (docs/design.md, "Tombstones and their
//! garbage collection").
//!
//! So that the members do not all contend on the same keys, a node takes a key only if it owns
//! it ([`owner_rank`]: a hash of the key modulo the number of members equals this node's rank
//! among the member ids), or if the key is overdue by more than [`EXPIRER_GRACE_MS`] (its owner
//! is down or behind). `ExpireDue` removes a key only if it has expired at the proposer's
//! stamp, so a pass on a fast clock, a duplicate, or a race with a client write is harmless.
//!
//! There is no index by expiry of the registers: a full cycle over the key space takes
//! `registers / EXPIRER_SCAN_MAX` passes. Reads never need the expirer: an expired key is
//! absent to every read path whether it has been removed yet or not.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use rampart_kv::KeyOp;

use crate::{MmError, MmNode, Outcome};

/// How often a node looks for expired keys.
pub const EXPIRER_INTERVAL: Duration = Duration::from_millis(1000);
/// Most registers one pass reads from this node's store.
pub const EXPIRER_SCAN_MAX: usize = 4096;
/// Most `ExpireDue` changes one pass proposes (and so has in flight at once).
pub const EXPIRER_BATCH_MAX: usize = 128;
/// A key overdue by more than this (ms, by this node's clock) is expired by any node, not only
/// by its owner.
pub const EXPIRER_GRACE_MS: u64 = 10_000;

/// The rank (`0..members`) of the member that expires `key`: FNV-1a of the key modulo
/// `members`. Every node computes the same.
pub fn owner_rank(key: &[u8], members: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % members.max(1) as u64) as usize
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpirerPass {
    /// Registers read.
    pub scanned: usize,
    /// `ExpireDue` changes proposed.
    pub proposed: usize,
    /// Keys they removed.
    pub expired: u64,
}

impl MmNode {
    /// How many members the configuration lists and this node's rank among their ids (sorted).
    fn rank(&self) -> (usize, usize) {
        let members = self.cluster_config().everyone();
        (members.len().max(1), members.iter().position(|m| m.id == self.cfg.id).unwrap_or(0))
    }

    /// One expirer pass starting after `cursor` (module docs); `cursor` is moved to where the
    /// next pass starts (`None`: the beginning).
    pub async fn expire_pass(&self, cursor: &mut Option<Vec<u8>>) -> Result<ExpirerPass, MmError> {
        let now = self.shared.expiry_now_ms();
        let (store, after) = (self.store.clone(), cursor.clone());
        let (registers, more) = tokio::task::spawn_blocking(move || {
            crate::scan::read_page(&store, b"", after.as_deref(), EXPIRER_SCAN_MAX, false, usize::MAX)
        })
        .await
        .map_err(|e| MmError::Internal(format!("expirer scan task failed: {e}")))?
        .map_err(MmError::Internal)?;
        let (members, rank) = self.rank();
        let mut due: Vec<(Vec<u8>, KeyOp)> = Vec::new();
        *cursor = if more { registers.last().map(|r| r.key.clone()) } else { None };
        for r in &registers {
            let Some(raw) = &r.value else { continue };
            let expires_at = match rampart_paxos::decode_register_value(raw).map(|d| d.expires_at) {
                Ok(Some(at)) => at,
                Ok(None) => continue,
                Err(e) => {
                    return Err(MmError::Internal(format!("register {:?}: {e}", String::from_utf8_lossy(&r.key))))
                }
            };
            let mine = owner_rank(&r.key, members) == rank;
            if expires_at <= now && (mine || expires_at.saturating_add(EXPIRER_GRACE_MS) <= now) {
                if due.len() == EXPIRER_BATCH_MAX {
                    // The batch is full: the next pass resumes at this key.
                    *cursor = due.last().map(|(k, _)| k.clone());
                    break;
                }
                due.push((r.key.clone(), KeyOp::ExpireDue));
            }
        }
        let mut pass = ExpirerPass { scanned: registers.len(), proposed: due.len(), expired: 0 };
        for result in self.changes(due).await {
            // A key not removed now (contention, a peer down) is tried again by a later pass.
            if let Ok(Outcome::Deleted { count }) = result {
                pass.expired += count;
            }
        }
        self.shared.stats.keys_expired.fetch_add(pass.expired, Ordering::Relaxed);
        Ok(pass)
    }
}

/// The expirer's loop (module docs); holds the node weakly, so dropping the node stops it.
pub(crate) async fn expirer_loop(node: Weak<MmNode>) {
    let mut interval = tokio::time::interval(EXPIRER_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursor = None;
    loop {
        interval.tick().await;
        let Some(n) = node.upgrade() else { return };
        if !n.healthy() {
            continue;
        }
        if let Err(e) = n.expire_pass(&mut cursor).await {
            tracing::warn!(error = %e, "expirer pass failed");
            cursor = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_one_owner_in_range_and_keys_spread() {
        let mut counts = [0usize; 3];
        for i in 0..300 {
            let key = format!("key-{i}");
            let r = owner_rank(key.as_bytes(), 3);
            assert_eq!(r, owner_rank(key.as_bytes(), 3), "stable");
            counts[r] += 1;
        }
        assert!(counts.iter().all(|c| *c > 50), "{counts:?}");
        assert_eq!(owner_rank(b"x", 1), 0);
        assert_eq!(owner_rank(b"x", 0), 0, "no members is not a division by zero");
    }
}
