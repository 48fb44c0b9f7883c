//! Group commit for the Raft log.
//!
//! openraft hands the log store one `append` per client write on the leader.
//! Committing each with its own fsync would cap a leader at one write per
//! fsync. Instead `append` queues the entries and returns at once; one writer
//! thread drains everything queued, writes it in one redb transaction with
//! one fsync, and only then fires each append's flush callback (which is when
//! openraft counts the entries as durable: a leader acknowledges a write only
//! after a quorum, itself included, has flushed it).
//!
//! Until they are written, queued entries are kept in `pending` so that
//! readers (replication, the state machine) see every appended entry.
//! Truncate and purge go through the same queue, so all log changes reach the
//! disk in the order openraft made them.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::storage::LogFlushed;
use parking_lot::Mutex;
use rampart_storage::{Durability, Store};
use tokio::sync::{mpsc, oneshot};

use crate::types::TypeConfig;

/// Log operations queued for the writer before `append` waits (backpressure
/// to openraft when the disk falls behind).
pub const LOG_QUEUE_MAX: usize = 1024;
/// Operations folded into one transaction at most.
pub const GROUP_OPS_MAX: usize = 4096;

type Done = oneshot::Sender<Result<(), String>>;

enum Op {
    Append {
        entries: Vec<(u64, Arc<Vec<u8>>)>,
        callback: LogFlushed<TypeConfig>,
    },
    Truncate {
        from: u64,
        done: Done,
    },
    /// Removes entries up to `upto` and records the purge marker.
    Purge {
        upto: u64,
        marker: Vec<u8>,
        marker_key: &'static str,
        done: Done,
    },
    /// A metadata value written with the next group, not waited for.
    Meta {
        key: &'static str,
        value: Vec<u8>,
    },
}

/// Entries appended but not yet written, by index.
pub type Pending = Arc<Mutex<BTreeMap<u64, Arc<Vec<u8>>>>>;

/// The queue to the writer thread, and the entries in flight.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Op>,
    pub pending: Pending,
}

impl LogWriter {
    /// Starts the writer thread; fails only if the thread cannot be created.
    pub fn start(store: Arc<Store>) -> std::io::Result<LogWriter> {
        let (tx, rx) = mpsc::channel(LOG_QUEUE_MAX);
        let pending: Pending = Arc::new(Mutex::new(BTreeMap::new()));
        let p = pending.clone();
        std::thread::Builder::new().name("rampart-log-writer".into()).spawn(move || writer_loop(store, rx, p))?;
        Ok(LogWriter { tx, pending })
    }

    pub async fn append(&self, entries: Vec<(u64, Vec<u8>)>, callback: LogFlushed<TypeConfig>) -> Result<(), String> {
        let entries: Vec<(u64, Arc<Vec<u8>>)> = entries.into_iter().map(|(i, b)| (i, Arc::new(b))).collect();
        {
            let mut p = self.pending.lock();
            for (i, b) in &entries {
                p.insert(*i, b.clone());
            }
        }
        self.tx.send(Op::Append { entries, callback }).await.map_err(|_| "log writer stopped".to_string())
    }

    pub async fn truncate(&self, from: u64) -> Result<(), String> {
        self.pending.lock().retain(|i, _| *i < from);
        let (done, rx) = oneshot::channel();
        self.tx.send(Op::Truncate { from, done }).await.map_err(|_| "log writer stopped".to_string())?;
        rx.await.map_err(|_| "log writer stopped".to_string())?
    }

    /// Queues a metadata write into the next group commit without waiting.
    /// When the queue is full it is skipped: only for markers a later write
    /// supersedes (the committed index).
    pub fn meta_lazy(&self, key: &'static str, value: Vec<u8>) {
        let _ = self.tx.try_send(Op::Meta { key, value });
    }

    pub async fn purge(&self, upto: u64, marker_key: &'static str, marker: Vec<u8>) -> Result<(), String> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Op::Purge { upto, marker, marker_key, done })
            .await
            .map_err(|_| "log writer stopped".to_string())?;
        rx.await.map_err(|_| "log writer stopped".to_string())?
    }
}

fn writer_loop(store: Arc<Store>, mut rx: mpsc::Receiver<Op>, pending: Pending) {
    // Metadata waiting for the next log group (latest value per key).
    let mut deferred: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < GROUP_OPS_MAX {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        // Metadata alone (the committed marker, which openraft re-learns from a quorum) waits
        // for the next log group instead of a commit of its own: at one client every commit
        // would otherwise cost a second transaction, which the state machine's apply of the
        // same entry waits behind.
        if ops.iter().all(|op| matches!(op, Op::Meta { .. })) {
            for op in ops {
                if let Op::Meta { key, value } = op {
                    deferred.insert(key, value);
                }
            }
            continue;
        }
        // A purge follows a snapshot, which the state machine's lazily committed state was
        // built from: that state must be on disk before the entries that rebuild it go, so a
        // group with a purge is a checkpoint (a durable commit of everything so far).
        let durability = if ops.iter().any(|op| matches!(op, Op::Purge { .. })) {
            Durability::Checkpoint
        } else {
            Durability::Immediate
        };
        let metas = std::mem::take(&mut deferred);
        let result = store.write(durability, |w| {
            for (key, value) in &metas {
                w.meta_put(key, value)?;
            }
            for op in &ops {
                match op {
                    Op::Append { entries, .. } => {
                        for (i, b) in entries {
                            w.log_put(*i, b)?;
                        }
                    }
                    Op::Truncate { from, .. } => w.log_truncate_from(*from)?,
                    Op::Purge { upto, marker, marker_key, .. } => {
                        w.meta_put(marker_key, marker)?;
                        w.log_purge_upto(*upto)?;
                    }
                    Op::Meta { key, value } => w.meta_put(key, value)?,
                }
            }
            Ok(())
        });
        if result.is_ok() {
            // Written: drop them from `pending`, unless a later append (after a
            // truncate) has replaced an index with another entry meanwhile.
            let mut p = pending.lock();
            for op in &ops {
                if let Op::Append { entries, .. } = op {
                    for (i, b) in entries {
                        if p.get(i).is_some_and(|cur| Arc::ptr_eq(cur, b)) {
                            p.remove(i);
                        }
                    }
                }
            }
        }
        let err = result.as_ref().err().map(|e| e.to_string());
        if let Some(e) = &err {
            tracing::error!(error = %e, "writing the raft log failed");
        }
        for op in ops {
            match op {
                Op::Append { callback, .. } => callback.log_io_completed(match &err {
                    None => Ok(()),
                    Some(e) => Err(std::io::Error::other(e.clone())),
                }),
                Op::Meta { .. } => {}
                Op::Truncate { done, .. } | Op::Purge { done, .. } => {
                    let _ = done.send(match &err {
                        None => Ok(()),
                        Some(e) => Err(e.clone()),
                    });
                }
            }
        }
    }
}
