//! The expirer: on the leader only, keys whose expiry has passed are removed through the log
//! (`Command::ExpireDue`), so every replica deletes the same keys at the same entry and their
//! space comes back. Reads already hide an expired key before it is removed (`crate::replica`).
//!
//! The entry carries the leader's stamp like every write; the state machine deletes only the
//! keys still due at that stamp (one rewritten with a later expiry or none since it was picked
//! stays), so a stale pick is harmless.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::RaftNode;
use crate::network::ForwardError;
use crate::types::{Command, Outcome};

/// How often the leader looks for due keys (then removes them, batch after batch, until none
/// are due).
pub const EXPIRE_INTERVAL: Duration = Duration::from_millis(100);

/// Most keys one `ExpireDue` entry removes. One such entry is in flight at a time.
pub const EXPIRE_BATCH_KEYS_MAX: usize = 1000;

/// Runs until the node is dropped: each [`EXPIRE_INTERVAL`], while this node leads, proposes
/// `ExpireDue` entries of at most [`EXPIRE_BATCH_KEYS_MAX`] due keys, one at a time, until no
/// key is due.
pub(super) async fn expirer_loop(node: Weak<RaftNode>) {
    let mut tick = tokio::time::interval(EXPIRE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(n) = node.upgrade() else { return };
        if n.raft.metrics().borrow().state != ServerState::Leader {
            continue;
        }
        if let Err(e) = n.expire_due().await {
            tracing::debug!(error = %e, "expirer pass stopped");
        }
    }
}

impl RaftNode {
    /// One expirer pass: removes due keys through the log until none are due (or this node
    /// stops leading, or a proposal fails). Returns how many keys it removed.
    pub(super) async fn expire_due(&self) -> Result<u64, String> {
        let mut removed = 0u64;
        loop {
            let now_ms = self.read_clock_ms().map_err(|e| e.to_string())?;
            let store = self.store.clone();
            // The index read may walk many keys: off the async workers.
            let keys = tokio::task::spawn_blocking(move || store.read(|v| v.kv_expired(now_ms, EXPIRE_BATCH_KEYS_MAX)))
                .await
                .map_err(|e| format!("expirer read task failed: {e}"))?
                .map_err(|e| e.to_string())?;
            if keys.is_empty() {
                return Ok(removed);
            }
            let picked = keys.len();
            let deadline = Instant::now() + self.cfg.request_timeout;
            // Stamped by the proposer at or after `now_ms`, so every picked key is still due at
            // the entry's stamp unless it was rewritten since.
            match self.propose(Command::ExpireDue { keys }, deadline).await {
                Ok(resp) => {
                    let count = match resp.outcome {
                        Outcome::Deleted { count } => count,
                        other => return Err(format!("unexpected result of an expiry entry: {other:?}")),
                    };
                    removed += count;
                    self.expired_keys.fetch_add(count, Ordering::Relaxed);
                    if count == 0 {
                        // Every picked key was rewritten meanwhile (or the index is out of step
                        // with the records): do not spin on the same keys until the next pass.
                        return Ok(removed);
                    }
                }
                Err(ForwardError::NotLeader { .. }) => return Ok(removed),
                Err(e) => return Err(format!("expiry entry: {e}")),
            }
            if picked < EXPIRE_BATCH_KEYS_MAX {
                return Ok(removed);
            }
        }
    }

    /// Keys the expirer removed through the log while this node led (since it started).
    pub fn expired_keys_total(&self) -> u64 {
        self.expired_keys.load(Ordering::Relaxed)
    }
}
