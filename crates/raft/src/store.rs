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
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use rampart_storage::{Durability, Store};
use serde::{Deserialize, Serialize};

use crate::log_writer::LogWriter;
use crate::snapshot::{
    create_buffered, read_header, stage_records, SnapshotDir, SnapshotError, SnapshotFile, SnapshotReader,
    SnapshotWriter, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_INSTALL_BATCH_BYTES, SNAPSHOT_IO_BUFFER_BYTES,
};
use crate::state_machine;
use crate::types::{Entry, LogId, NodeId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Vote};
use crate::watch::WatchHub;

const META_VOTE: &str = "raft/vote";
const META_COMMITTED: &str = "raft/committed";
const META_PURGED: &str = "raft/last_purged";
const META_APPLIED: &str = "sm/applied";
const META_MEMBERSHIP: &str = "sm/membership";
/// Format 1 snapshots: the whole state as one value. Read no more; see
/// [`StateMachineStore::open`].
const META_SNAPSHOT_V1: &str = "sm/snapshot";
/// Where the current snapshot file is ([`SnapshotPointer`]).
const META_SNAPSHOT_FILE: &str = "sm/snapshot_file";

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

/// Sends the entries a leader has just appended to its followers before its own fsync.
///
/// openraft 0.9 waits for the leader's own log flush before it replicates an entry, so a write
/// would cost two fsyncs in series (the leader's, then a follower's). The leader's log store
/// hands each new entry to this hook as it queues it for the disk; the hook sends it to the
/// followers as an ordinary AppendEntries of the current leader, so their fsyncs run alongside
/// the leader's. openraft's own replication then sends the same entries, which a follower
/// already holds and answers at once (its answer waits for its own flush, as always). Nothing
/// is counted from the early answers: commit still needs a quorum of flushed copies, the
/// leader's included, as openraft tracks them.
pub trait EarlyReplicate: Send + Sync {
    /// Whether entries whose first id is `first` are this node's own as the current leader
    /// (cheap: called on every append, followers' included).
    fn wants(&self, first: &LogId) -> bool;
    /// Sends `entries`, which follow `prev` in the log, to the followers; does not wait.
    fn send(&self, prev: Option<LogId>, entries: Vec<Entry>);
}

/// The log id of the last entry appended, while it is known; the hook the node installs.
#[derive(Default)]
struct Early {
    hook: std::sync::OnceLock<Box<dyn EarlyReplicate>>,
    last_appended: parking_lot::Mutex<Option<Option<LogId>>>,
}

/// The Raft log and vote. Log writes are group-committed by
/// [`LogWriter`]; the vote is written directly and durably.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    progress: Arc<Progress>,
    writer: LogWriter,
    early: Arc<Early>,
}

impl LogStore {
    pub fn new(store: Arc<Store>, progress: Arc<Progress>) -> Result<Self, StorageError> {
        let writer = LogWriter::start(store.clone())
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        Ok(LogStore { store, progress, writer, early: Arc::default() })
    }

    /// Installs the early-replication hook (once; later calls are ignored).
    pub fn set_early_replicate(&self, hook: Box<dyn EarlyReplicate>) {
        let _ = self.early.hook.set(hook);
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
        // openraft reads this at start, before it appends anything.
        *self.early.last_appended.lock() = Some(last_log_id);
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut encoded: Vec<(u64, Vec<u8>)> = Vec::with_capacity(entries.len());
        for e in &entries {
            encoded.push((e.log_id.index, encode(e)?));
        }
        assert!(
            encoded.windows(2).all(|w| w[1].0 == w[0].0 + 1),
            "openraft appends log entries at consecutive indexes"
        );
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            // The entry before `first`, when the last append ended just there (after a restart
            // or a truncate it is not known, and the first append goes without an early send).
            let prev = {
                let mut known = self.early.last_appended.lock();
                let prev = known.filter(|p| p.map_or(0, |id| id.index + 1) == first.log_id.index);
                *known = Some(Some(last.log_id));
                prev
            };
            if let (Some(prev), Some(hook)) = (prev, self.early.hook.get()) {
                if hook.wants(&first.log_id) {
                    hook.send(prev, entries);
                }
            }
        }
        // Returns once queued; `callback` fires after the group's fsync.
        self.writer
            .append(encoded, callback)
            .await
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, io_err(e)))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        *self.early.last_appended.lock() = None;
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

/// Where the current snapshot is: stored in the meta table (a few hundred bytes; the snapshot
/// itself is a file, see [`crate::snapshot`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotPointer {
    /// The file's format version ([`SNAPSHOT_FORMAT_VERSION`]).
    format: u32,
    /// File name inside the snapshot directory.
    file: String,
    meta: SnapshotMeta,
    bytes: u64,
}

impl SnapshotPointer {
    /// The published name of a snapshot file of `bytes` bytes with `meta`, and its pointer.
    fn for_file(dir: &SnapshotDir, meta: &SnapshotMeta, bytes: u64) -> (String, SnapshotPointer) {
        let name = dir.final_name(meta.last_log_id.map_or(0, |l| l.index));
        let pointer =
            SnapshotPointer { format: SNAPSHOT_FORMAT_VERSION, file: name.clone(), meta: meta.clone(), bytes };
        (name, pointer)
    }
}

fn snap_err(meta: Option<&SnapshotMeta>, verb: ErrorVerb) -> impl Fn(SnapshotError) -> StorageError + '_ {
    move |e| StorageError::from_io_error(ErrorSubject::Snapshot(meta.map(|m| m.signature())), verb, io_err(e))
}

/// The applied key-value state.
#[derive(Clone)]
pub struct StateMachineStore {
    store: Arc<Store>,
    /// Highest applied log index, for readers that wait on it.
    applied: Arc<AtomicU64>,
    snapshot_seq: Arc<AtomicU64>,
    snapshots: Arc<SnapshotDir>,
    /// Live watchers of what this state machine applies.
    hub: Arc<WatchHub>,
}

impl StateMachineStore {
    /// Opens the state machine over `store`, with its snapshot files in `snapshots`. Repairs what
    /// a crash may have left: a half-staged install is dropped, and files no snapshot pointer
    /// names are deleted. A data dir whose snapshot is of format 1 (one redb value), or whose
    /// snapshot file is missing or unreadable, gets a fresh snapshot of its applied state
    /// (which is never behind the snapshot it replaces), so a node keeps a snapshot to send.
    pub fn open(store: Arc<Store>, snapshots: Arc<SnapshotDir>) -> Result<Self, StorageError> {
        store.staged_clear().map_err(store_err(ErrorVerb::Write))?;
        let applied = match store.meta_get(META_APPLIED).map_err(store_err(ErrorVerb::Read))? {
            Some(b) => decode::<Option<LogId>>(ErrorSubject::StateMachine, &b)?.map_or(0, |l| l.index),
            None => 0,
        };
        let sm = StateMachineStore {
            store,
            applied: Arc::new(AtomicU64::new(0)),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            snapshots,
            hub: WatchHub::new(applied),
        };
        sm.recover_snapshot()?;
        Ok(sm)
    }

    fn recover_snapshot(&self) -> Result<(), StorageError> {
        let (old_format, pointer) = self
            .store
            .read(|v| Ok((v.meta_exists(META_SNAPSHOT_V1)?, v.meta_get(META_SNAPSHOT_FILE)?)))
            .map_err(store_err(ErrorVerb::Read))?;
        let pointer: Option<SnapshotPointer> = match pointer {
            Some(b) => Some(decode(ErrorSubject::Snapshot(None), &b)?),
            None => None,
        };
        let valid = match &pointer {
            Some(p) => match self.snapshots.published(&p.file).and_then(|path| read_header(&path)) {
                Ok(meta) if meta == p.meta => true,
                Ok(meta) => {
                    tracing::warn!(file = %p.file, ?meta, expected = ?p.meta, "snapshot file does not match its pointer");
                    false
                }
                Err(e) => {
                    tracing::warn!(file = %p.file, error = %e, "snapshot file is unreadable");
                    false
                }
            },
            None => false,
        };
        if valid {
            if old_format {
                self.store
                    .write(Durability::Immediate, |w| w.meta_delete(META_SNAPSHOT_V1))
                    .map_err(store_err(ErrorVerb::Delete))?;
            }
            let keep = pointer.as_ref().map(|p| p.file.as_str());
            return self
                .snapshots
                .remove_others(keep)
                .map_err(|e| StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Delete, e));
        }
        if old_format || pointer.is_some() {
            tracing::warn!(
                old_format,
                "no usable snapshot file: building a snapshot of the applied state (format {SNAPSHOT_FORMAT_VERSION})"
            );
            let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            build_blocking(&self.store, &self.snapshots, seq)?;
            return Ok(());
        }
        self.snapshots
            .remove_others(None)
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Delete, e))
    }

    /// The live side of watches on this state machine.
    pub fn watch_hub(&self) -> &Arc<WatchHub> {
        &self.hub
    }

    /// The directory of this state machine's snapshot files.
    pub fn snapshot_dir(&self) -> &Arc<SnapshotDir> {
        &self.snapshots
    }
}

/// Streams the applied state, as of one read transaction, into a new snapshot file, and makes
/// it the current snapshot unless a newer one was published meanwhile. Memory: one record and
/// the write buffer.
fn build_blocking(store: &Store, dir: &SnapshotDir, seq: u64) -> Result<Snapshot<TypeConfig>, StorageError> {
    let started = std::time::Instant::now();
    tracing::info!("snapshot build starting");
    let tmp = dir.tmp_path("build");
    let built = build_into(store, &tmp, seq);
    let (meta, summary) = match built {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(snap_err(None, ErrorVerb::Write)(e));
        }
    };
    let (name, pointer) = SnapshotPointer::for_file(dir, &meta, summary.bytes);
    let _publishing = dir.publish.lock();
    let path = match dir.publish_file(&tmp, &name) {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(StorageError::from_io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e,
            ));
        }
    };
    // Opened before a newer snapshot could make this file go away; an open file stays readable.
    let file = SnapshotFile::open_read(&path)
        .map_err(|e| StorageError::from_io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, e))?;
    let encoded = encode(&pointer)?;
    // A checkpoint: the applied state the snapshot was built from, committed lazily, is on disk
    // with the pointer, so the durable state is never behind the snapshot it names.
    let published = store
        .write(Durability::Checkpoint, |w| {
            if let Some(b) = w.meta_get(META_SNAPSHOT_FILE)? {
                let current: SnapshotPointer = rmp_serde::from_slice(&b).map_err(|e| {
                    rampart_storage::Error::Malformed { what: META_SNAPSHOT_FILE.into(), reason: e.to_string() }
                })?;
                if current.meta.last_log_id > meta.last_log_id {
                    return Ok(false);
                }
            }
            w.meta_put(META_SNAPSHOT_FILE, &encoded)?;
            w.meta_delete(META_SNAPSHOT_V1)?;
            Ok(true)
        })
        .map_err(|e| {
            StorageError::from_io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, io_err(e))
        })?;
    let cleanup = if published {
        dir.remove_others(Some(&name))
    } else {
        // An install published a newer snapshot while this one was built.
        std::fs::remove_file(&path)
    };
    if let Err(e) = cleanup {
        tracing::warn!(error = %e, "could not delete an old snapshot file");
    }
    tracing::info!(
        records = summary.records,
        bytes = summary.bytes,
        published,
        snapshot = %meta.snapshot_id,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot built"
    );
    Ok(Snapshot { meta, snapshot: Box::new(file) })
}

/// The build proper: header, every key of one read transaction, trailer, fsync.
fn build_into(
    store: &Store,
    tmp: &std::path::Path,
    seq: u64,
) -> Result<(SnapshotMeta, crate::snapshot::Summary), SnapshotError> {
    let out = create_buffered(tmp)?;
    store
        .read(|v| {
            // One read transaction: the keys and the applied marker agree.
            let applied = v.meta_get(META_APPLIED)?;
            let membership = v.meta_get(META_MEMBERSHIP)?;
            let malformed = |what: &str, e: rmp_serde::decode::Error| rampart_storage::Error::Malformed {
                what: what.into(),
                reason: e.to_string(),
            };
            let last_log_id: Option<LogId> = match applied {
                Some(b) => rmp_serde::from_slice(&b).map_err(|e| malformed(META_APPLIED, e))?,
                None => None,
            };
            let last_membership: StoredMembership = match membership {
                Some(b) => rmp_serde::from_slice(&b).map_err(|e| malformed(META_MEMBERSHIP, e))?,
                None => StoredMembership::default(),
            };
            let snapshot_id = match &last_log_id {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
                None => format!("0-0-{seq}"),
            };
            let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
            let write_err =
                |e: SnapshotError| rampart_storage::Error::Io { path: tmp.to_path_buf(), reason: e.to_string() };
            let clock_ms = crate::state_machine::view_clock(v)?;
            let next_lease_id = crate::state_machine::view_lease_next_id(v)?;
            let leases = v.lease_list()?;
            let mut w = SnapshotWriter::with_state(out, &meta, clock_ms, next_lease_id, &leases).map_err(write_err)?;
            v.kv_for_each(|k, val| {
                let lease = v.kv_lease(k)?;
                w.record_full(k, val.revision, &val.value, val.expires_at, lease).map_err(write_err)
            })?;
            let (out, summary) = w.finish().map_err(write_err)?;
            let file = out.into_inner().map_err(|e| write_err(SnapshotError::Io(e.into_error())))?;
            file.sync_all().map_err(|e| write_err(SnapshotError::Io(e)))?;
            Ok((meta, summary))
        })
        .map_err(SnapshotError::Store)
}

/// Where an install reads the snapshot from: the received file itself, or (for a file that is
/// not one this node received, such as another store's snapshot) a copy taken while reading.
enum InstallSource {
    Owned(BufReader<std::fs::File>),
    Copying { from: BufReader<std::fs::File>, copy: std::io::BufWriter<std::fs::File> },
}

impl Read for InstallSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            InstallSource::Owned(r) => r.read(buf),
            InstallSource::Copying { from, copy } => {
                let n = from.read(buf)?;
                copy.write_all(&buf[..n])?;
                Ok(n)
            }
        }
    }
}

/// Installs the snapshot in `file`: stages its records in bounded commits, and only once the
/// whole file has checked out (format, every record, count, checksum) swaps the staged state in,
/// with the markers and the snapshot pointer, in one commit. On any error the applied state is
/// untouched and the staging dropped.
fn install_blocking(
    store: &Store,
    dir: &SnapshotDir,
    meta: &SnapshotMeta,
    mut file: std::fs::File,
    path: PathBuf,
    incoming: bool,
) -> Result<(), StorageError> {
    let started = std::time::Instant::now();
    let fail = |e: SnapshotError| {
        StorageError::from_io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, io_err(e))
    };
    store.staged_clear().map_err(|e| fail(e.into()))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| fail(e.into()))?;
    let from = BufReader::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, file);
    let owned = incoming && path.parent() == Some(dir.path());
    let copy_path = (!owned).then(|| dir.tmp_path("install"));
    let source = match &copy_path {
        None => InstallSource::Owned(from),
        Some(p) => InstallSource::Copying { from, copy: create_buffered(p).map_err(|e| fail(e.into()))? },
    };
    let staged = (|| -> Result<(PathBuf, crate::snapshot::Summary, u64, u64), SnapshotError> {
        let mut r = SnapshotReader::open(source)?;
        let clock_ms = r.clock_ms();
        let next_lease_id = r.next_lease_id();
        if r.meta() != meta {
            return Err(SnapshotError::Corrupt(format!(
                "the file describes snapshot {:?}, the install is of {:?}",
                r.meta().snapshot_id,
                meta.snapshot_id
            )));
        }
        let summary = stage_records(store, &mut r, SNAPSHOT_INSTALL_BATCH_BYTES, |_| {})?;
        let published_from = match r.into_inner() {
            InstallSource::Owned(_) => path.clone(),
            InstallSource::Copying { copy, .. } => {
                let f = copy.into_inner().map_err(|e| SnapshotError::Io(e.into_error()))?;
                f.sync_all()?;
                copy_path.clone().unwrap_or_default()
            }
        };
        Ok((published_from, summary, clock_ms, next_lease_id))
    })();
    let (from_path, summary, clock_ms, next_lease_id) = match staged {
        Ok(x) => x,
        Err(e) => {
            // A refused file is of no further use: the leader sends the snapshot again.
            let _ = std::fs::remove_file(copy_path.as_ref().unwrap_or(&path));
            let _ = store.staged_clear();
            tracing::warn!(error = %e, snapshot = %meta.snapshot_id, "snapshot refused; the applied state is unchanged");
            return Err(fail(e));
        }
    };
    let (name, pointer) = SnapshotPointer::for_file(dir, meta, summary.bytes);
    let applied_b = encode(&meta.last_log_id)?;
    let membership_b = encode(&meta.last_membership)?;
    let pointer_b = encode(&pointer)?;
    let _publishing = dir.publish.lock();
    if let Err(e) = dir.publish_file(&from_path, &name) {
        let _ = std::fs::remove_file(&from_path);
        let _ = store.staged_clear();
        return Err(fail(e.into()));
    }
    store
        .swap_in_staged(|w| {
            w.meta_put(META_APPLIED, &applied_b)?;
            w.meta_put(META_MEMBERSHIP, &membership_b)?;
            w.meta_put(META_SNAPSHOT_FILE, &pointer_b)?;
            // Later entries apply at the clock the snapshot was taken at, as on the leader.
            w.meta_put(crate::state_machine::CLOCK_META, &clock_ms.to_le_bytes())?;
            // History is not in snapshots: this node's starts after the snapshot.
            crate::watch::reset_after_install(w, meta.last_log_id.map_or(0, |l| l.index))?;
            // Lease ids go on counting from the snapshot's, so none is handed out twice.
            w.meta_put(crate::state_machine::LEASE_NEXT_ID_META, &next_lease_id.to_le_bytes())?;
            w.meta_delete(META_SNAPSHOT_V1)
        })
        .map_err(|e| fail(e.into()))?;
    if let Err(e) = dir.remove_others(Some(&name)) {
        tracing::warn!(error = %e, "could not delete an old snapshot file");
    }
    tracing::info!(
        records = summary.records,
        bytes = summary.bytes,
        snapshot = %meta.snapshot_id,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot installed"
    );
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let store = self.store.clone();
        let dir = self.snapshots.clone();
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        blocking(move || build_blocking(&store, &dir, seq)).await
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
        let hub = self.hub.clone();
        blocking(move || {
            let last_b = encode(&Some(last))?;
            let mut membership_b = None;
            for e in &entries {
                if let EntryPayload::Membership(m) = &e.payload {
                    membership_b = Some(encode(&StoredMembership::new(Some(e.log_id), m.clone()))?);
                }
            }
            let mut events = Vec::new();
            let out = store
                .write(Durability::Lazy, |w| {
                    let mut out = Vec::with_capacity(entries.len());
                    for e in &entries {
                        let resp = match &e.payload {
                            EntryPayload::Normal(cmd) => state_machine::apply(w, e.log_id.index, cmd, &mut events)?,
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
                    crate::watch::trim(w, last.index, hub.retention())?;
                    Ok(out)
                })
                .map_err(|e| StorageError::from_io_error(ErrorSubject::Apply(last), ErrorVerb::Write, io_err(e)))?;
            applied.fetch_max(last.index, Ordering::Release);
            hub.publish_applied(last.index, events);
            Ok(out)
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let f = self
            .snapshots
            .new_incoming()
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        Ok(Box::new(f))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<SnapshotFile>) -> Result<(), StorageError> {
        let (file, path, incoming) = snapshot.into_std().await;
        let meta = meta.clone();
        let store = self.store.clone();
        let dir = self.snapshots.clone();
        let applied = self.applied.clone();
        let hub = self.hub.clone();
        blocking(move || {
            install_blocking(&store, &dir, &meta, file, path, incoming)?;
            if let Some(l) = &meta.last_log_id {
                applied.fetch_max(l.index, Ordering::Release);
                hub.publish_installed(l.index);
            }
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // Held from reading the name to opening the file: a build publishing meanwhile would
        // delete the file named here (an open file stays readable).
        let _publishing = self.snapshots.publish.lock();
        let Some(b) = self.store.meta_get(META_SNAPSHOT_FILE).map_err(store_err(ErrorVerb::Read))? else {
            return Ok(None);
        };
        let p: SnapshotPointer = decode(ErrorSubject::Snapshot(None), &b)?;
        let path = self.snapshots.published(&p.file).map_err(snap_err(Some(&p.meta), ErrorVerb::Read))?;
        let file = SnapshotFile::open_read(&path).map_err(|e| {
            StorageError::from_io_error(ErrorSubject::Snapshot(Some(p.meta.signature())), ErrorVerb::Read, e)
        })?;
        Ok(Some(Snapshot { meta: p.meta, snapshot: Box::new(file) }))
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
            let snapshots = Arc::new(
                SnapshotDir::open(&dir.path().join("snapshots"))
                    .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?,
            );
            self.dirs.lock().push(dir);
            let sm = StateMachineStore::open(store.clone(), snapshots)?;
            Ok(((), LogStore::new(store, Arc::new(Progress::default()))?, sm))
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
            watch_history_revisions: crate::watch::WATCH_HISTORY_REVISIONS,
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

#[cfg(test)]
mod snapshot_tests {
    use std::collections::{BTreeMap, BTreeSet};

    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;
    use crate::snapshot::{SnapshotReader, SNAPSHOT_IO_BUFFER_BYTES};

    struct Node {
        dir: tempfile::TempDir,
        store: Arc<Store>,
        sm: StateMachineStore,
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (store, sm) = open(dir.path());
        Node { dir, store, sm }
    }

    fn open(path: &std::path::Path) -> (Arc<Store>, StateMachineStore) {
        let store = Arc::new(Store::open_dir(path).unwrap());
        let snaps = Arc::new(SnapshotDir::open(&path.join("snapshots")).unwrap());
        let sm = StateMachineStore::open(store.clone(), snaps).unwrap();
        (store, sm)
    }

    fn log_id(index: u64) -> LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(2, 1), index)
    }

    /// Writes `n` keys and the markers of an applied state at `index`.
    fn fill(store: &Store, prefix: &str, n: u64, index: u64) {
        let membership = StoredMembership::new(
            Some(log_id(1)),
            openraft::Membership::new(vec![BTreeSet::from([1u64])], BTreeMap::from([(1u64, Default::default())])),
        );
        store
            .write(Durability::Immediate, |w| {
                for i in 0..n {
                    let v = format!("value-{i}-").repeat((i % 7 + 1) as usize);
                    w.kv_put(format!("{prefix}/{i:06}").as_bytes(), i + 1, v.as_bytes(), None)?;
                }
                w.meta_put(META_APPLIED, &rmp_serde::to_vec(&Some(log_id(index))).unwrap())?;
                w.meta_put(META_MEMBERSHIP, &rmp_serde::to_vec(&membership).unwrap())
            })
            .unwrap();
    }

    fn kv(store: &Store) -> Vec<(Vec<u8>, u64, Vec<u8>)> {
        let mut out = Vec::new();
        store
            .read(|v| {
                v.kv_for_each(|k, val| {
                    out.push((k.to_vec(), val.revision, val.value));
                    Ok(())
                })
            })
            .unwrap();
        out
    }

    fn files(n: &Node) -> Vec<String> {
        files_in(n.dir.path())
    }

    fn files_in(data_dir: &std::path::Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(data_dir.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    /// Ships `snap` into a new incoming file of `to` in chunks of `chunk` bytes, as the receiver
    /// does with the leader's InstallSnapshot messages.
    async fn ship(snap: &mut Snapshot<TypeConfig>, to: &mut StateMachineStore, chunk: usize) -> Box<SnapshotFile> {
        let mut incoming = to.begin_receiving_snapshot().await.unwrap();
        snap.snapshot.seek(SeekFrom::Start(0)).await.unwrap();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = snap.snapshot.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            incoming.write_all(&buf[..n]).await.unwrap();
        }
        incoming.sync_all().await.unwrap();
        incoming
    }

    /// A snapshot carries each key's expiry and the state machine's clock: the follower that
    /// installs it has the same expiry index and applies later entries at the same clock.
    #[tokio::test]
    async fn a_snapshot_keeps_expiries_and_the_state_machine_clock() {
        let mut leader = node();
        fill(&leader.store, "k", 3, 10);
        leader
            .store
            .write(Durability::Immediate, |w| {
                w.kv_put(b"ttl/soon", 11, b"a", Some(1_000))?;
                w.kv_put(b"ttl/later", 12, b"b", Some(9_000))?;
                w.meta_put(crate::state_machine::CLOCK_META, &500u64.to_le_bytes())
            })
            .unwrap();
        let mut snap = leader.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut follower = node();
        let incoming = ship(&mut snap, &mut follower.sm, 4096).await;
        follower.sm.install_snapshot(&snap.meta, incoming).await.unwrap();
        let f = &follower.store;
        assert_eq!(f.kv_get(b"ttl/soon").unwrap().unwrap().expires_at, Some(1_000));
        assert_eq!(f.kv_get(b"ttl/later").unwrap().unwrap().expires_at, Some(9_000));
        assert_eq!(f.kv_get(b"k/000000").unwrap().unwrap().expires_at, None);
        assert_eq!(f.read(|v| v.kv_expired(1_000, 10)).unwrap(), vec![b"ttl/soon".to_vec()]);
        assert_eq!(f.read(|v| v.kv_expired_count(u64::MAX)).unwrap(), 2);
        assert_eq!(f.read(crate::state_machine::view_clock).unwrap(), 500);
    }

    /// A snapshot carries the leases, their attachments and the next lease id: a follower that
    /// installs it has the same leases (its own leases before the install are replaced).
    #[tokio::test]
    async fn a_snapshot_keeps_leases_and_their_keys() {
        let mut leader = node();
        fill(&leader.store, "k", 3, 10);
        leader
            .store
            .write(Durability::Immediate, |w| {
                w.lease_put(4, 5_000)?;
                w.lease_put(6, 7_000)?;
                w.kv_put(b"l/a", 11, b"a", None)?;
                w.lease_attach(b"l/a", 4)?;
                w.kv_put(b"l/b", 12, b"b", Some(9_000))?;
                w.lease_attach(b"l/b", 4)?;
                w.lease_attach(b"k/000001", 6)?;
                w.meta_put(crate::state_machine::LEASE_NEXT_ID_META, &7u64.to_le_bytes())
            })
            .unwrap();
        let mut snap = leader.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut follower = node();
        follower
            .store
            .write(Durability::Immediate, |w| {
                w.lease_put(99, 2_000)?;
                w.kv_put(b"old", 1, b"o", None)?;
                w.lease_attach(b"old", 99)
            })
            .unwrap();
        let incoming = ship(&mut snap, &mut follower.sm, 1000).await;
        follower.sm.install_snapshot(&snap.meta, incoming).await.unwrap();
        follower
            .store
            .read(|v| {
                assert_eq!(v.lease_list()?, vec![(4, 5_000), (6, 7_000)]);
                assert_eq!(v.lease_keys(4, 10)?, vec![b"l/a".to_vec(), b"l/b".to_vec()]);
                assert_eq!(v.lease_keys(6, 10)?, vec![b"k/000001".to_vec()]);
                assert_eq!(v.lease_keys(99, 10)?, Vec::<Vec<u8>>::new());
                assert_eq!((v.kv_lease(b"l/b")?, v.kv_lease(b"old")?), (Some(4), None));
                assert_eq!(v.kv_get(b"l/b")?.unwrap().expires_at, Some(9_000));
                assert_eq!(crate::state_machine::view_lease_next_id(v)?, 7);
                Ok(())
            })
            .unwrap();
    }

    #[tokio::test]
    async fn many_keys_build_ship_in_small_chunks_and_install() {
        let mut leader = node();
        fill(&leader.store, "k", 5_000, 40);
        let mut snap = leader.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(40)));
        // The finding: the snapshot was one redb value (redb refuses values over 3 GiB). Now the
        // store holds only a pointer to the file.
        let pointer = leader.store.meta_get(META_SNAPSHOT_FILE).unwrap().unwrap();
        assert!(pointer.len() < 4096, "the snapshot pointer is {} bytes", pointer.len());
        assert!(!leader.store.read(|v| v.meta_exists(META_SNAPSHOT_V1)).unwrap());
        assert!(std::fs::metadata(snap.snapshot.path()).unwrap().len() > 200_000);
        let mut follower = node();
        fill(&follower.store, "stale", 10, 3);
        let incoming = ship(&mut snap, &mut follower.sm, 4096).await;
        follower.sm.install_snapshot(&snap.meta, incoming).await.unwrap();
        assert_eq!(kv(&follower.store), kv(&leader.store), "the follower holds exactly the leader's keys");
        assert_eq!(follower.sm.applied_state().await.unwrap().0, Some(log_id(40)));
        let current = follower.sm.get_current_snapshot().await.unwrap().expect("a current snapshot");
        assert_eq!(current.meta, snap.meta);
        // One published file each, nothing half-written.
        assert_eq!(files(&leader).len(), 1, "{:?}", files(&leader));
        assert_eq!(files(&follower).len(), 1, "{:?}", files(&follower));
        // The installed snapshot can be shipped on (the follower may become leader).
        let mut again = follower.sm.get_current_snapshot().await.unwrap().unwrap();
        let mut third = node();
        let incoming = ship(&mut again, &mut third.sm, 1000).await;
        third.sm.install_snapshot(&again.meta, incoming).await.unwrap();
        assert_eq!(kv(&third.store).len(), 5_000);
    }

    /// Every kind of damage is refused before anything replaces the follower's state.
    #[tokio::test]
    async fn a_corrupt_or_truncated_snapshot_is_refused_and_the_old_state_stays() {
        let mut leader = node();
        fill(&leader.store, "k", 2_000, 30);
        let mut snap = leader.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut good = Vec::new();
        snap.snapshot.seek(SeekFrom::Start(0)).await.unwrap();
        snap.snapshot.read_to_end(&mut good).await.unwrap();
        let mut follower = node();
        fill(&follower.store, "old", 50, 7);
        let mut follower_snap = follower.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let before = kv(&follower.store);
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x01;
        let mut trailer = good.clone();
        let last = trailer.len() - 1;
        trailer[last] ^= 0xff;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("cut in half", good[..good.len() / 2].to_vec()),
            ("cut before the trailer", good[..good.len() - 5].to_vec()),
            ("a flipped byte", flipped),
            ("a wrong checksum", trailer),
            ("empty", Vec::new()),
        ];
        for (what, bytes) in cases {
            let mut incoming = follower.sm.begin_receiving_snapshot().await.unwrap();
            incoming.write_all(&bytes).await.unwrap();
            incoming.sync_all().await.unwrap();
            let err = follower.sm.install_snapshot(&snap.meta, incoming).await.unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("snapshot"), "{what}: {msg}");
            assert_eq!(kv(&follower.store), before, "{what}: the old state must stay");
            assert_eq!(follower.sm.applied_state().await.unwrap().0, Some(log_id(7)), "{what}");
            let current = follower.sm.get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(current.meta, follower_snap.meta, "{what}: the old snapshot stays current");
            assert_eq!(files(&follower).len(), 1, "{what}: no leftover files: {:?}", files(&follower));
            assert!(follower.store.stage(Durability::Lazy, |st| st.is_empty()).unwrap(), "{what}: staging dropped");
        }
        // A good file for another snapshot than announced is refused too.
        let incoming = ship(&mut follower_snap, &mut follower.sm, 512).await;
        let err = follower.sm.install_snapshot(&snap.meta, incoming).await.unwrap_err();
        assert!(err.to_string().contains("describes snapshot"), "{err}");
        assert_eq!(kv(&follower.store), before);
        // And the good one still installs afterwards.
        let incoming = ship(&mut snap, &mut follower.sm, 512).await;
        follower.sm.install_snapshot(&snap.meta, incoming).await.unwrap();
        assert_eq!(kv(&follower.store), kv(&leader.store));
    }

    /// A reader that records how many bytes it has handed out and its largest single read.
    struct Counting<R> {
        inner: R,
        read: Arc<AtomicU64>,
        largest: Arc<AtomicU64>,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            self.largest.fetch_max(n as u64, Ordering::Relaxed);
            Ok(n)
        }
    }

    /// The installer holds at most one batch of records: between two commits it reads no more
    /// than a batch plus one record, and it reads the file in pieces no larger than its buffer.
    #[test]
    fn the_installer_commits_every_batch_and_reads_in_bounded_pieces() {
        let leader = node();
        fill(&leader.store, "k", 3_000, 12);
        let path = leader.dir.path().join("snapshot.bin");
        {
            let seq = 0;
            let tmp = leader.dir.path().join("build.tmp");
            build_into(&leader.store, &tmp, seq).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        let total = std::fs::metadata(&path).unwrap().len();
        let follower = node();
        let read = Arc::new(AtomicU64::new(0));
        let largest = Arc::new(AtomicU64::new(0));
        let counting =
            Counting { inner: std::fs::File::open(&path).unwrap(), read: read.clone(), largest: largest.clone() };
        let buffer = 8 << 10;
        let batch = 16 << 10;
        let mut r = SnapshotReader::open(BufReader::with_capacity(buffer, counting)).unwrap();
        let mut commits: Vec<u64> = Vec::new();
        let summary =
            stage_records(&follower.store, &mut r, batch, |_| commits.push(read.load(Ordering::Relaxed))).unwrap();
        assert_eq!(summary.records, 3_000);
        assert_eq!(read.load(Ordering::Relaxed), total);
        assert!(
            largest.load(Ordering::Relaxed) <= buffer as u64,
            "a read of {} bytes",
            largest.load(Ordering::Relaxed)
        );
        let record_max = 8 + 4 + 4 + 1 + 10 + 7 * 14;
        let mut prev = 0;
        for c in &commits {
            assert!(c - prev <= (batch + record_max + buffer) as u64, "{} bytes between two commits", c - prev);
            prev = *c;
        }
        assert!(
            commits.len() > (total as usize) / (batch + record_max + buffer),
            "{} commits for {total} bytes",
            commits.len()
        );
        assert_eq!(SNAPSHOT_IO_BUFFER_BYTES, 1 << 20, "production reads use a 1 MiB buffer");
    }

    #[tokio::test]
    async fn a_restart_cleans_leftovers_and_keeps_the_snapshot() {
        let mut n = node();
        fill(&n.store, "k", 100, 9);
        let snap = n.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let snaps = n.dir.path().join("snapshots");
        // What a crash mid-build, mid-receive and mid-install leaves behind.
        std::fs::write(snaps.join("build-00.tmp"), b"half a snapshot").unwrap();
        std::fs::write(snaps.join("incoming-00.tmp"), b"half a transfer").unwrap();
        std::fs::write(snaps.join("snapshot-00000000000000000099-00.rsnap"), b"renamed, never pointed at").unwrap();
        n.store.stage(Durability::Immediate, |st| st.put(b"half-installed", 1, b"x", None)).unwrap();
        let before = kv(&n.store);
        drop(n.sm);
        drop(n.store);
        let (store, mut sm) = open(n.dir.path());
        let left = files_in(n.dir.path());
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].ends_with(".rsnap") && left[0] != "snapshot-00000000000000000099-00.rsnap", "{left:?}");
        assert_eq!(kv(&store), before);
        assert!(store.stage(Durability::Lazy, |st| st.is_empty()).unwrap(), "the half install is dropped");
        assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, snap.meta);
    }

    /// Format 1 kept the snapshot as one value; such a data dir starts with a streamed snapshot
    /// of its applied state instead, and the old value is dropped. A snapshot file gone missing
    /// is rebuilt the same way.
    #[tokio::test]
    async fn an_old_format_or_missing_snapshot_is_rebuilt_at_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open_dir(dir.path()).unwrap();
            fill(&store, "k", 300, 21);
            store.write(Durability::Immediate, |w| w.meta_put(META_SNAPSHOT_V1, &[0x92; 64])).unwrap();
        }
        let (store, mut sm) = open(dir.path());
        assert!(!store.read(|v| v.meta_exists(META_SNAPSHOT_V1)).unwrap(), "the format 1 value is dropped");
        let snap = sm.get_current_snapshot().await.unwrap().expect("a rebuilt snapshot");
        assert_eq!(snap.meta.last_log_id, Some(log_id(21)));
        let (meta, summary) = crate::snapshot::verify_file(snap.snapshot.path()).unwrap();
        assert_eq!(meta, snap.meta);
        assert_eq!(summary.records, 300);
        std::fs::remove_file(snap.snapshot.path()).unwrap();
        drop(sm);
        drop(store);
        let (_store, mut sm) = open(dir.path());
        let rebuilt = sm.get_current_snapshot().await.unwrap().expect("rebuilt after the file went missing");
        assert_eq!(rebuilt.meta.last_log_id, Some(log_id(21)));
        assert!(rebuilt.snapshot.path().exists());
    }

    /// A build that read the state before an install finished never replaces the installed
    /// (newer) snapshot.
    #[tokio::test]
    async fn an_older_build_does_not_replace_a_newer_snapshot() {
        let mut leader = node();
        fill(&leader.store, "k", 50, 80);
        let mut newer = leader.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut n = node();
        fill(&n.store, "k", 10, 5);
        let incoming = ship(&mut newer, &mut n.sm, 100).await;
        n.sm.install_snapshot(&newer.meta, incoming).await.unwrap();
        // Simulate the late build: state rolled back to index 5 in a read it took earlier.
        n.store
            .write(Durability::Immediate, |w| w.meta_put(META_APPLIED, &rmp_serde::to_vec(&Some(log_id(5))).unwrap()))
            .unwrap();
        let old = n.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(old.meta.last_log_id, Some(log_id(5)));
        assert_eq!(n.sm.get_current_snapshot().await.unwrap().unwrap().meta, newer.meta);
        assert_eq!(files(&n).len(), 1, "{:?}", files(&n));
    }
}
