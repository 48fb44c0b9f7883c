//! Client changes: handed to the proposer task in one batch, in order, and their results
//! awaited. Also the stale read of this node's own registers.

use std::time::Duration;

use rampart_storage::Store;
use tokio::sync::{mpsc, oneshot};

use crate::proposer_task::ProposerEvent;
use crate::{wire, Change, MmError, MmNode, Outcome};

impl MmNode {
    /// Applies one change to one key (linearizable; `Change::Read` is a linearizable read, whose
    /// `Outcome::Value` is the register's envelope: `rampart_paxos::decode_register_value` gives
    /// the value, its expiry and its revision). The change applies at this node's expiry clock.
    pub async fn change(&self, key: Vec<u8>, change: Change) -> Result<Outcome, MmError> {
        self.changes(vec![(key, change)]).await.pop().unwrap_or_else(|| Err(MmError::Internal("no result".into())))
    }

    /// Applies many changes; changes on the same key apply in the given order. Each has its own
    /// result.
    pub async fn changes(&self, items: Vec<(Vec<u8>, Change)>) -> Vec<Result<Outcome, MmError>> {
        self.submit(items, false).await
    }

    /// Linearizable reads of `keys` that always run a full round, leaving each key's value at
    /// every voter that answers (`rampart_paxos::Proposer::propose_settle`): a membership
    /// change's catch-up.
    pub(crate) async fn settle(&self, keys: Vec<Vec<u8>>) -> Vec<Result<Outcome, MmError>> {
        self.submit(keys.into_iter().map(|k| (k, Change::Read)).collect(), true).await
    }

    async fn submit(&self, items: Vec<(Vec<u8>, Change)>, settle: bool) -> Vec<Result<Outcome, MmError>> {
        if items.is_empty() {
            return Vec::new();
        }
        if let Some(reason) = self.shared.fatal.lock().clone() {
            return items.iter().map(|_| Err(MmError::Internal(format!("node stopped: {reason}")))).collect();
        }
        if let Some(why) = self.shared.not_voting() {
            return items.iter().map(|_| Err(MmError::NoQuorum(format!("not applied: {why}")))).collect();
        }
        let mut receivers = Vec::with_capacity(items.len());
        let mut batch = Vec::with_capacity(items.len());
        for (key, change) in items {
            let (tx, rx) = oneshot::channel();
            batch.push((key, change, tx));
            receivers.push(rx);
        }
        let n = receivers.len();
        // Not applied: the proposer never saw it.
        let busy = || MmError::Busy("the proposer queue is full; retry".into());
        match self.proposer_tx.try_send(ProposerEvent::Propose { items: batch, settle }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(ProposerEvent::Propose { items: batch, .. })) => {
                // Wait briefly for room rather than fail at the first burst.
                match tokio::time::timeout(
                    Duration::from_millis(100),
                    self.proposer_tx.send(ProposerEvent::Propose { items: batch, settle }),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    _ => return (0..n).map(|_| Err(busy())).collect(),
                }
            }
            Err(_) => return (0..n).map(|_| Err(MmError::Internal("the proposer has stopped".into()))).collect(),
        }
        // The proposer answers every change within its budget; this guard only covers a
        // proposer that stopped on a fatal error.
        let guard = self.cfg.request_timeout + Duration::from_secs(1);
        let mut out = Vec::with_capacity(n);
        for rx in receivers {
            out.push(match tokio::time::timeout(guard, rx).await {
                Ok(Ok(r)) => r.map_err(MmError::from),
                Ok(Err(_)) | Err(_) => Err(MmError::MaybeApplied(
                    "the proposer stopped before answering; the change may have been applied".into(),
                )),
            });
        }
        out
    }

    /// This node's durable accepted value for `key`, unless it has expired by this node's
    /// expiry clock: not linearizable (READONLY, stale reads).
    pub fn stale_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MmError> {
        Ok(stale_read(&self.store, key, self.shared.expiry_now_ms())?.map(|item| item.value))
    }
}

/// `key`'s durable accepted value in `store`, if live at `now_ms` (see [`MmNode::stale_get`]).
pub(crate) fn stale_read(store: &Store, key: &[u8], now_ms: u64) -> Result<Option<rampart_kv::Item>, MmError> {
    let raw = store.read(|v| v.register_get(key)).map_err(|e| MmError::Internal(e.to_string()))?;
    let Some(raw) = raw else { return Ok(None) };
    let register = wire::decode_register(&raw).map_err(MmError::Internal)?.value;
    live_item(&register, now_ms)
}

/// A register's live value as a client item, with its revision (0 for a value written before
/// revisions existed: docs/paxos.md, "Revisions"), `None` when it is a tombstone or expired at
/// `now_ms`.
pub(crate) fn live_item(register: &rampart_paxos::Value, now_ms: u64) -> Result<Option<rampart_kv::Item>, MmError> {
    let live = rampart_paxos::live_value(register, now_ms).map_err(|e| MmError::Internal(e.to_string()))?;
    Ok(live.map(item))
}

/// A decoded envelope as a client item.
pub(crate) fn item(d: rampart_paxos::UserValue<'_>) -> rampart_kv::Item {
    rampart_kv::Item { value: d.value.to_vec(), revision: Some(d.revision), expires_at: d.expires_at }
}
