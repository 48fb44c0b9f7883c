//! openraft's storage traits (storage-v2) on top of [`rampart_storage::Store`].
//!
//! What is fsynced when:
//! - `save_vote`: an immediate (fsynced) commit before it returns.
//! - `append`: all entries of the call in one immediate commit; the flush
//!   callback fires after it.
//! - `truncate`, `purge`, `install_snapshot`, `build_snapshot`: immediate.
//! - `apply` and `save_committed`: lazy commits. They are rebuilt from the
//!   log after a crash (openraft re-applies from the last durable applied
//!   index), and every immediate commit above also makes them durable, so a
//!   purge can never outrun the state it relies on.

// openraft's traits fix the error type (`StorageError`, ~224 bytes); boxing it
// here would only add a conversion at every trait boundary.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use rampart_storage::{Durability, Store};
use serde::{Deserialize, Serialize};

use crate::log_writer::LogWriter;
use crate::state_machine;
use crate::types::{Entry, LogId, NodeId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Vote};

const META_VOTE: &str = "raft/vote";
const META_COMMITTED: &str = "raft/committed";
const META_PURGED: &str = "raft/last_purged";
const META_APPLIED: &str = "sm/applied";
const META_MEMBERSHIP: &str = "sm/membership";
const META_SNAPSHOT: &str = "sm/snapshot";

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    rmp_serde::to_vec(v).map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, io_err(e)))
}

fn decode<T: for<'a> Deserialize<'a>>(what: ErrorSubject<NodeId>, b: &[u8]) -> Result<T, StorageError> {
    rmp_serde::from_slice(b).map_err(|e| StorageError::from_io_error(what, ErrorVerb::Read, io_err(e)))
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn store_err(verb: ErrorVerb) -> impl Fn(rampart_storage::Error) -> StorageError {
    move |e| StorageError::from_io_error(ErrorSubject::Store, verb, io_err(e))
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, io_err(e)))?
}

/// Shared progress markers for status reporting.
#[derive(Debug, Default)]
pub struct Progress {
    /// Highest committed log index this node has learned (0 = none).
    pub committed: AtomicU64,
}

/// The Raft log and vote. Log writes are group-committed by
/// [`LogWriter`]; the vote is written directly and durably.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    progress: Arc<Progress>,
    writer: LogWriter,
}

impl LogStore {
    pub fn new(store: Arc<Store>, progress: Arc<Progress>) -> Result<Self, StorageError> {
        let writer = LogWriter::start(store.clone())
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        Ok(LogStore { store, progress, writer })
    }

    /// Entries in `[start, end)`: queued ones first (newer), then the written
    /// ones. Read in that order, an entry moving from the queue to the disk
    /// meanwhile is seen in one place or the other, never in neither.
    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let queued: Vec<(u64, Arc<Vec<u8>>)> =
            self.writer.pending.lock().range(start..end).map(|(i, b)| (*i, b.clone())).collect();
        let written = self.store.read(|v| v.log_range(start, end)).map_err(store_err(ErrorVerb::Read))?;
        let mut merged: BTreeMap<u64, Vec<u8>> = written.into_iter().collect();
        for (i, b) in queued {
            merged.insert(i, b.as_ref().clone());
        }
        // Stop at the first gap: callers expect consecutive entries.
        let mut out = Vec::with_capacity(merged.len());
        for (i, b) in merged {
            if let Some((prev, _)) = out.last() {
                if i != prev + 1 {
                    break;
                }
            }
            out.push((i, b));
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let raw = self.entries(start, end)?;
        raw.iter().map(|(i, b)| decode(ErrorSubject::Log(openraft::LogId::new(Default::default(), *i)), b)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let queued_last: Option<(u64, Vec<u8>)> =
            self.writer.pending.lock().last_key_value().map(|(i, b)| (*i, b.as_ref().clone()));
        let (last, purged): (Option<(u64, Vec<u8>)>, _) =
            self.store.read(|v| Ok((v.log_last()?, v.meta_get(META_PURGED)?))).map_err(store_err(ErrorVerb::Read))?;
        let last_purged_log_id: Option<LogId> = match purged {
            Some(b) => decode(ErrorSubject::Logs, &b)?,
            None => None,
        };
        let last = match (queued_last, last) {
            (Some(q), Some(w)) => Some(if q.0 >= w.0 { q } else { w }),
            (q, w) => q.or(w),
        };
        let last_log_id = match last {
            Some((_, b)) => Some(decode::<Entry>(ErrorSubject::Logs, &b)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let b = encode(vote)?;
        let store = self.store.clone();
        blocking(move || {
            store
                .write(Durability::Immediate, |w| w.meta_put(META_VOTE, &b))
                .map_err(|e| StorageError::from_io_error(ErrorSubject::Vote, ErrorVerb::Write, io_err(e)))
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        match self.store.meta_get(META_VOTE).map_err(store_err(ErrorVerb::Read))? {
            Some(b) => Ok(Some(decode(ErrorSubject::Vote, &b)?)),
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(c) = &committed {
            self.progress.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        // Informational only (openraft re-learns the commit index from a
        // quorum), so it rides along with the next log group commit instead
        // of stalling openraft's core on a transaction of its own.
        self.writer.meta_lazy(META_COMMITTED, encode(&committed)?);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let c: Option<LogId> = match self.store.meta_get(META_COMMITTED).map_err(store_err(ErrorVerb::Read))? {
            Some(b) => decode(ErrorSubject::Store, &b)?,
            None => None,
        };
        if let Some(c) = &c {
            self.progress.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        Ok(c)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded: Vec<(u64, Vec<u8>)> = Vec::new();
        for e in entries {
            encoded.push((e.log_id.index, encode(&e)?));
        }
        assert!(
            encoded.windows(2).all(|w| w[1].0 == w[0].0 + 1),
            "openraft appends log entries at consecutive indexes"
        );
        // Returns once queued; `callback` fires after the group's fsync.
        self.writer
            .append(encoded, callback)
            .await
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, io_err(e)))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.writer
            .truncate(log_id.index)
            .await
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Delete, io_err(e)))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let b = encode(&Some(log_id))?;
        self.writer
            .purge(log_id.index, META_PURGED, b)
            .await
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Delete, io_err(e)))
    }
}

/// A snapshot as shipped and stored: every key with its revision and value.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    entries: Vec<(Vec<u8>, u64, Vec<u8>)>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The applied key-value state.
#[derive(Clone)]
pub struct StateMachineStore {
    store: Arc<Store>,
    /// Highest applied log index, for readers that wait on it.
    applied: Arc<AtomicU64>,
    snapshot_seq: Arc<AtomicU64>,
}

impl StateMachineStore {
    pub fn new(store: Arc<Store>) -> Self {
        StateMachineStore { store, applied: Arc::new(AtomicU64::new(0)), snapshot_seq: Arc::new(AtomicU64::new(0)) }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let store = self.store.clone();
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        blocking(move || {
            // One read transaction: the keys and the applied marker agree.
            let (applied, membership, entries) = store
                .read(|v| {
                    let applied = v.meta_get(META_APPLIED)?;
                    let membership = v.meta_get(META_MEMBERSHIP)?;
                    let mut entries = Vec::new();
                    v.kv_for_each(|k, val| {
                        entries.push((k.to_vec(), val.revision, val.value));
                        Ok(())
                    })?;
                    Ok((applied, membership, entries))
                })
                .map_err(store_err(ErrorVerb::Read))?;
            let last_log_id: Option<LogId> = match applied {
                Some(b) => decode(ErrorSubject::StateMachine, &b)?,
                None => None,
            };
            let last_membership: StoredMembership = match membership {
                Some(b) => decode(ErrorSubject::StateMachine, &b)?,
                None => StoredMembership::default(),
            };
            let data = encode(&SnapshotData { entries })?;
            let snapshot_id = match &last_log_id {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
                None => format!("0-0-{seq}"),
            };
            let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
            let stored = encode(&StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
            store
                .write(Durability::Immediate, |w| w.meta_put(META_SNAPSHOT, &stored))
                .map_err(|e| StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, io_err(e)))?;
            Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
        })
        .await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let (applied, membership) = self
            .store
            .read(|v| Ok((v.meta_get(META_APPLIED)?, v.meta_get(META_MEMBERSHIP)?)))
            .map_err(store_err(ErrorVerb::Read))?;
        let applied: Option<LogId> = match applied {
            Some(b) => decode(ErrorSubject::StateMachine, &b)?,
            None => None,
        };
        let membership = match membership {
            Some(b) => decode(ErrorSubject::StateMachine, &b)?,
            None => StoredMembership::default(),
        };
        if let Some(a) = &applied {
            self.applied.fetch_max(a.index, Ordering::Release);
        }
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else { return Ok(Vec::new()) };
        assert!(
            entries.windows(2).all(|w| w[1].log_id.index == w[0].log_id.index + 1),
            "entries are applied in log order, without gaps"
        );
        let store = self.store.clone();
        let applied = self.applied.clone();
        blocking(move || {
            let last_b = encode(&Some(last))?;
            let mut membership_b = None;
            for e in &entries {
                if let EntryPayload::Membership(m) = &e.payload {
                    membership_b = Some(encode(&StoredMembership::new(Some(e.log_id), m.clone()))?);
                }
            }
            let out = store
                .write(Durability::Lazy, |w| {
                    let mut out = Vec::with_capacity(entries.len());
                    for e in &entries {
                        let resp = match &e.payload {
                            EntryPayload::Normal(cmd) => state_machine::apply(w, e.log_id.index, cmd)?,
                            _ => Response {
                                revision: e.log_id.index,
                                outcome: crate::types::Outcome::Deleted { count: 0 },
                            },
                        };
                        out.push(resp);
                    }
                    w.meta_put(META_APPLIED, &last_b)?;
                    if let Some(m) = &membership_b {
                        w.meta_put(META_MEMBERSHIP, m)?;
                    }
                    Ok(out)
                })
                .map_err(|e| StorageError::from_io_error(ErrorSubject::Apply(last), ErrorVerb::Write, io_err(e)))?;
            applied.fetch_max(last.index, Ordering::Release);
            Ok(out)
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let parsed: SnapshotData = decode(ErrorSubject::Snapshot(Some(meta.signature())), &data)?;
        let meta = meta.clone();
        let store = self.store.clone();
        let applied = self.applied.clone();
        blocking(move || {
            let applied_b = encode(&meta.last_log_id)?;
            let membership_b = encode(&meta.last_membership)?;
            let stored = encode(&StoredSnapshot { meta: meta.clone(), data })?;
            store
                .write(Durability::Immediate, |w| {
                    w.kv_clear()?;
                    for (k, rev, v) in &parsed.entries {
                        w.kv_put(k, *rev, v)?;
                    }
                    w.meta_put(META_APPLIED, &applied_b)?;
                    w.meta_put(META_MEMBERSHIP, &membership_b)?;
                    w.meta_put(META_SNAPSHOT, &stored)
                })
                .map_err(|e| {
                    StorageError::from_io_error(
                        ErrorSubject::Snapshot(Some(meta.signature())),
                        ErrorVerb::Write,
                        io_err(e),
                    )
                })?;
            if let Some(l) = &meta.last_log_id {
                applied.fetch_max(l.index, Ordering::Release);
            }
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        match self.store.meta_get(META_SNAPSHOT).map_err(store_err(ErrorVerb::Read))? {
            Some(b) => {
                let s: StoredSnapshot = decode(ErrorSubject::Snapshot(None), &b)?;
                Ok(Some(Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
            }
            None => Ok(None),
        }
    }
}

/// The durable vote's term and the last log index, as they are on disk.
pub fn boot_state(store: &Store) -> Result<(u64, u64), StorageError> {
    let (vote, last) = store
        .read(|v| Ok((v.meta_get(META_VOTE)?, v.log_last()?.map(|(i, _)| i))))
        .map_err(store_err(ErrorVerb::Read))?;
    let term = match vote {
        Some(b) => decode::<Vote>(ErrorSubject::Vote, &b)?.leader_id.term,
        None => 0,
    };
    Ok((term, last.unwrap_or(0)))
}

/// Checks the durable vote, the last log entry, the committed, purged and applied log ids against
/// `bounds` before openraft loads them: a term or index above them (state a forged message left
/// before peer messages were checked) would make openraft panic at the next election, on every
/// restart. The error names what is out of bounds.
pub fn check_bounds(store: &Store, bounds: &crate::validate::Bounds) -> Result<(), String> {
    let unreadable = |e: StorageError| format!("cannot read the raft state: {e}");
    let (vote, last, ids) = store
        .read(|v| {
            let ids = [
                ("the committed log id", v.meta_get(META_COMMITTED)?),
                ("the purged log id", v.meta_get(META_PURGED)?),
                ("the applied log id", v.meta_get(META_APPLIED)?),
            ];
            Ok((v.meta_get(META_VOTE)?, v.log_last()?, ids))
        })
        .map_err(store_err(ErrorVerb::Read))
        .map_err(unreadable)?;
    if let Some(b) = vote {
        let vote = decode::<Vote>(ErrorSubject::Vote, &b).map_err(unreadable)?;
        bounds.check_vote("the stored vote", &vote)?;
    }
    if let Some((_, b)) = last {
        let entry = decode::<Entry>(ErrorSubject::Logs, &b).map_err(unreadable)?;
        bounds.check_log_id("the last log entry", &entry.log_id)?;
    }
    for (what, raw) in ids {
        if let Some(b) = raw {
            if let Some(id) = decode::<Option<LogId>>(ErrorSubject::Store, &b).map_err(unreadable)? {
                bounds.check_log_id(what, &id)?;
            }
        }
    }
    Ok(())
}

/// One line per log entry and per key, for offline inspection of a data dir
/// (`rampart debug-dump DIR`).
pub fn dump(store: &Store) -> Result<Vec<String>, StorageError> {
    let mut out = Vec::new();
    let (logs, meta) = store
        .read(|v| {
            let logs = v.log_range(0, u64::MAX)?;
            let mut meta = Vec::new();
            for k in [META_VOTE, META_COMMITTED, META_PURGED, META_APPLIED] {
                meta.push((k, v.meta_get(k)?));
            }
            Ok((logs, meta))
        })
        .map_err(store_err(ErrorVerb::Read))?;
    for (k, v) in meta {
        let shown = match (k, v) {
            (_, None) => "none".to_string(),
            (META_VOTE, Some(b)) => format!("{:?}", decode::<Vote>(ErrorSubject::Vote, &b)?),
            (_, Some(b)) => format!("{:?}", decode::<Option<LogId>>(ErrorSubject::Store, &b)?),
        };
        out.push(format!("meta {k} = {shown}"));
    }
    for (i, b) in logs {
        let e: Entry = decode(ErrorSubject::Logs, &b)?;
        let payload = match &e.payload {
            EntryPayload::Normal(c) => format!("{c:?}"),
            EntryPayload::Blank => "blank".into(),
            EntryPayload::Membership(m) => format!("membership {m:?}"),
        };
        out.push(format!("log {i} {} {}", e.log_id, payload.chars().take(300).collect::<String>()));
    }
    store
        .read(|v| {
            v.kv_for_each(|k, val| {
                out.push(format!(
                    "kv {} rev={} {}",
                    String::from_utf8_lossy(k),
                    val.revision,
                    String::from_utf8_lossy(&val.value)
                ));
                Ok(())
            })
        })
        .map_err(store_err(ErrorVerb::Read))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Builder {
        dirs: parking_lot::Mutex<Vec<tempfile::TempDir>>,
    }

    impl openraft::testing::StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for Builder {
        async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
            let dir = tempfile::tempdir()
                .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let store = Arc::new(Store::open_dir(dir.path()).map_err(store_err(ErrorVerb::Read))?);
            self.dirs.lock().push(dir);
            Ok(((), LogStore::new(store.clone(), Arc::new(Progress::default()))?, StateMachineStore::new(store)))
        }
    }

    fn poisoned_dir(term: u64, index: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let vote = encode(&Vote::new_committed(term, 2)).unwrap();
        let log_id = LogId::new(openraft::CommittedLeaderId::new(3, 2), index);
        let entry = encode(&Entry { log_id, payload: EntryPayload::Blank }).unwrap();
        store
            .write(Durability::Immediate, |w| {
                w.meta_put(META_VOTE, &vote)?;
                w.log_put(index, &entry)
            })
            .unwrap();
        dir
    }

    #[test]
    fn a_stored_vote_or_log_id_beyond_the_bounds_is_named() {
        let bounds = crate::validate::Bounds::now();
        let fine = poisoned_dir(7, 10);
        assert_eq!(check_bounds(&Store::open_dir(fine.path()).unwrap(), &bounds), Ok(()));
        let vote = poisoned_dir(u64::MAX, 10);
        let e = check_bounds(&Store::open_dir(vote.path()).unwrap(), &bounds).unwrap_err();
        assert!(e.contains("the stored vote has term 18446744073709551615"), "{e}");
        let index = poisoned_dir(7, u64::MAX - 1);
        let e = check_bounds(&Store::open_dir(index.path()).unwrap(), &bounds).unwrap_err();
        assert!(e.contains("the last log entry") && e.contains("log index ceiling"), "{e}");
    }

    /// A data dir holding a vote at term u64::MAX (what one forged append left before terms were
    /// checked) is a clear start error, not an openraft panic at the next election.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_with_a_poisoned_vote_refuses_to_start_with_a_clear_error() {
        let dir = poisoned_dir(u64::MAX, 10);
        let peer_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let cfg = crate::node::NodeConfig {
            id: 1,
            data_dir: dir.path().to_path_buf(),
            peer_addr,
            resp_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            initial_cluster: BTreeMap::from([(1, peer_addr.to_string())]),
            heartbeat_interval_ms: 50,
            election_timeout_ms: 300,
            request_timeout: std::time::Duration::from_secs(2),
            snapshot_logs_since_last: 1000,
            logs_kept_after_snapshot: 100,
            peer_heartbeat_ms: 100,
            limits: rampart_kv::Limits::default(),
            transport: rampart_transport::Config::default(),
        };
        let err = crate::node::RaftNode::start(cfg).await.err().expect("must refuse to start");
        assert!(matches!(err, crate::node::StartError::OutOfBounds(_)), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("refusing to start") && msg.contains("term ceiling"), "{msg}");
    }

    #[test]
    fn openraft_storage_suite() -> Result<(), StorageError> {
        openraft::testing::Suite::test_all(Builder { dirs: parking_lot::Mutex::new(Vec::new()) })
    }
}
