//! rampart-storage: the crash-safe store of one node, on redb (a data file and its journal).
//!
//! It holds these tables: the replicated log (`index -> entry bytes`), a small
//! `meta` table (vote, committed marker, purge marker, state-machine markers,
//! where the latest snapshot file is), and the applied key-value state (`key ->
//! revision + value`), with leader mode's watch history (`revision ++ seq -> event`) and three
//! lease tables (leases, key -> lease, lease -> keys) beside it; in multi-master mode another
//! table holds each key's Paxos register (`key -> register bytes`). While a snapshot is installed, a
//! staged key-value table fills over many commits and replaces the applied
//! one in a single commit ([`Store::stage`], [`Store::swap_in_staged`]). It
//! knows nothing of networks or replication: callers hand it bytes and decide
//! what must be durable.
//!
//! Every call here blocks (redb is synchronous and `commit` may fsync); async
//! callers run writes on a blocking thread.
//!
//! Durability: a [`Store::write`] with `Durability::Immediate` returns only once it is on disk:
//! what it changed is appended to the [`journal`] and fsynced there, and its redb commit is
//! non-durable. A checkpoint (a durable redb commit: `Durability::Checkpoint`, or when the
//! journal reaches [`JOURNAL_CHECKPOINT_BYTES`]) takes everything into the redb file and starts
//! the journal over. A `Durability::Lazy` commit is made durable by the next checkpoint (redb
//! orders commits), or lost on a crash. Opening a store replays the journal's records that the
//! redb file does not hold yet.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod journal;
use journal::Journal;
pub use journal::{JOURNAL_CHECKPOINT_BYTES, JOURNAL_RECORD_BYTES_MAX};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// Multi-master mode's Paxos registers: `key -> encoded register` (the
/// encoding belongs to `rampart-mm`).
const REGISTERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registers");
/// A key-value state being installed (from a snapshot), in the same record
/// form as [`KV`]. It is filled over many commits and takes the place of
/// [`KV`] in one commit ([`Store::swap_in_staged`]); until then readers see
/// only [`KV`]. Left over by a crash, it is dropped by [`Store::staged_clear`].
const KV_STAGED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_staged");
/// The expiry index of `kv`: (expiry as 8 big-endian bytes ++ key) → empty, for every key that
/// has an expiry, so the expirer finds the due keys in order without a scan.
const KV_EXPIRY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_expiry");
/// The expiry index of `kv_staged`.
const KV_EXPIRY_STAGED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_expiry_staged");
/// The expiry index of `kv_replaced`.
const KV_EXPIRY_REPLACED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_expiry_replaced");
/// Watch history: (revision as 8 big-endian bytes ++ sequence within the revision as 4
/// big-endian bytes) -> one encoded event (the encoding belongs to the caller). Written in the
/// same transaction as the write it records, so it holds exactly what was applied.
const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");
/// The key-value state that [`KV_STAGED`] replaced, dropped right after the
/// swap (in its own commit, so the swap itself stays short).
const KV_REPLACED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_replaced");

/// Leader mode's leases: id → TTL in ms (see `rampart_kv::lease`).
const LEASES: TableDefinition<u64, u64> = TableDefinition::new("leases");
/// The lease each attached key belongs to: key → lease id. Only present keys are attached.
const KV_LEASE: TableDefinition<&[u8], u64> = TableDefinition::new("kv_lease");
/// The keys of each lease: (lease id as 8 big-endian bytes ++ key) → empty, so a lease's keys
/// are one range, in key order.
const LEASE_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lease_keys");
/// [`LEASES`], [`KV_LEASE`] and [`LEASE_KEYS`] of the staged state, staged and swapped in with
/// [`KV_STAGED`] (and replaced with [`KV_REPLACED`]).
const LEASES_STAGED: TableDefinition<u64, u64> = TableDefinition::new("leases_staged");
const KV_LEASE_STAGED: TableDefinition<&[u8], u64> = TableDefinition::new("kv_lease_staged");
const LEASE_KEYS_STAGED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lease_keys_staged");
const LEASES_REPLACED: TableDefinition<u64, u64> = TableDefinition::new("leases_replaced");
const KV_LEASE_REPLACED: TableDefinition<&[u8], u64> = TableDefinition::new("kv_lease_replaced");
const LEASE_KEYS_REPLACED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lease_keys_replaced");

/// Memory redb may use to cache pages of the data file. redb's own default
/// (1 GiB) would let a node's RSS grow far past its working set under
/// endless writes.
pub const CACHE_BYTES: usize = 64 << 20;

/// File name of the store inside a node's data directory.
pub const DATA_FILE_NAME: &str = "rampart.redb";

/// Errors of the store. Every variant says which file is affected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data file {path} is corrupt or not a rampart data file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("data file {path} is already in use by another process")]
    InUse { path: PathBuf },
    #[error("I/O error on data file {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("stored value under {what} is malformed: {reason}")]
    Malformed { what: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Whether a write must be on disk before [`Store::write`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk before returning (journaled and fsynced; see the crate docs).
    Immediate,
    /// Persisted by the next checkpoint; may be lost by a crash before it.
    Lazy,
    /// A durable redb commit: on disk before returning, and so is every earlier commit,
    /// lazy ones included. For what depends on earlier lazy writes being durable (a log purge
    /// after a snapshot: the applied state must be on disk first).
    Checkpoint,
}

/// Meta key of the sequence number of the last journal record a commit holds.
const JOURNAL_SEQ_META: &str = "storage/journal_seq";
/// Meta key of the store's random id (see `store_id`).
const STORE_ID_META: &str = "storage/id";
/// Suffix of the journal's file name, after the data file's.
pub const JOURNAL_FILE_SUFFIX: &str = ".journal";

/// A key's applied state: the log index that last changed it, its value, and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub revision: u64,
    pub value: Vec<u8>,
    /// Unix ms at which the key expires (`None`: never).
    pub expires_at: Option<u64>,
}

/// The top bit of a record's revision word: set when an 8-byte expiry follows it. Revisions are
/// log indexes far below 2^63, and records written before expiry existed never have it set, so
/// they decode unchanged.
const EXPIRY_FLAG: u64 = 1 << 63;

impl Versioned {
    fn encode(revision: u64, value: &[u8], expires_at: Option<u64>) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + value.len());
        match expires_at {
            None => out.extend_from_slice(&revision.to_le_bytes()),
            Some(at) => {
                out.extend_from_slice(&(revision | EXPIRY_FLAG).to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
            }
        }
        out.extend_from_slice(value);
        out
    }

    fn decode(key: &[u8], raw: &[u8]) -> Result<Self> {
        let malformed =
            |reason: String| Error::Malformed { what: format!("key {:?}", String::from_utf8_lossy(key)), reason };
        let word = |at: usize| -> Option<u64> { Some(u64::from_le_bytes(raw.get(at..at + 8)?.try_into().ok()?)) };
        let Some(rev) = word(0) else {
            return Err(malformed(format!("record of {} bytes is shorter than its 8-byte revision", raw.len())));
        };
        if rev & EXPIRY_FLAG == 0 {
            return Ok(Versioned { revision: rev, value: raw[8..].to_vec(), expires_at: None });
        }
        let Some(at) = word(8) else {
            return Err(malformed(format!("record of {} bytes is shorter than its revision and expiry", raw.len())));
        };
        Ok(Versioned { revision: rev & !EXPIRY_FLAG, value: raw[16..].to_vec(), expires_at: Some(at) })
    }

    /// The expiry of an encoded record, without copying its value (`None` if it has none or
    /// is malformed).
    fn expiry_of(raw: &[u8]) -> Option<u64> {
        let rev = u64::from_le_bytes(raw.get(..8)?.try_into().ok()?);
        if rev & EXPIRY_FLAG == 0 {
            return None;
        }
        Some(u64::from_le_bytes(raw.get(8..16)?.try_into().ok()?))
    }

    /// The record without its value (for scans of keys only).
    fn decode_head(key: &[u8], raw: &[u8]) -> Result<Self> {
        let head = if Self::expiry_of(raw).is_some() { 16 } else { 8 };
        Self::decode(key, &raw[..raw.len().min(head)])
    }
}

/// The expiry index's key for `key` expiring at `at`.
fn expiry_index_key(at: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&at.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The history table's key of the `seq`th event of `revision`.
fn history_key(revision: u64, seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&revision.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn split_history_key(path: &Path, k: &[u8]) -> Result<(u64, u32)> {
    let (Ok(rev), Ok(seq)) = (<[u8; 8]>::try_from(&k[..k.len().min(8)]), <[u8; 4]>::try_from(&k[k.len().min(8)..]))
    else {
        return Err(Error::Malformed {
            what: format!("history key {k:02x?} in {}", path.display()),
            reason: format!("{} bytes, not 12", k.len()),
        });
    };
    Ok((u64::from_be_bytes(rev), u32::from_be_bytes(seq)))
}

/// The lease-keys index's key of `key` attached to lease `id`.
fn lease_key_index(id: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Attaches `key` to lease `id` in the given tables, detaching it from any other lease.
fn attach_in(
    kv_lease: &mut redb::Table<'_, &'static [u8], u64>,
    lease_keys: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    path: &Path,
    key: &[u8],
    id: u64,
) -> Result<()> {
    let old = kv_lease.insert(key, id).map_err(|e| io_error(path, e))?.map(|g| g.value());
    if let Some(old) = old.filter(|&old| old != id) {
        lease_keys.remove(lease_key_index(old, key).as_slice()).map_err(|e| io_error(path, e))?;
    }
    lease_keys.insert(lease_key_index(id, key).as_slice(), &[][..]).map_err(|e| io_error(path, e))?;
    Ok(())
}

/// Detaches `key` from its lease, if it has one; answers that lease.
fn detach_in(
    kv_lease: &mut redb::Table<'_, &'static [u8], u64>,
    lease_keys: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    path: &Path,
    key: &[u8],
) -> Result<Option<u64>> {
    let Some(id) = kv_lease.remove(key).map_err(|e| io_error(path, e))?.map(|g| g.value()) else {
        return Ok(None);
    };
    lease_keys.remove(lease_key_index(id, key).as_slice()).map_err(|e| io_error(path, e))?;
    Ok(Some(id))
}

/// Keeps `index` in step with a record of `key` changing from one expiry to another.
fn reindex(
    index: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    path: &Path,
    key: &[u8],
    old: Option<u64>,
    new: Option<u64>,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    if let Some(at) = old {
        index.remove(expiry_index_key(at, key).as_slice()).map_err(|e| io_error(path, e))?;
    }
    if let Some(at) = new {
        index.insert(expiry_index_key(at, key).as_slice(), &[][..]).map_err(|e| io_error(path, e))?;
    }
    Ok(())
}

/// One node's store. Cheap to share behind an `Arc`.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Taken after redb's write lock, never before it (a checkpoint holds both so that no
    /// record is appended between its durable commit and the journal's restart).
    journal: Mutex<JournalState>,
    stats: Counters,
}

/// What the store counts, for the metrics page.
#[derive(Default)]
struct Counters {
    journal_appends: std::sync::atomic::AtomicU64,
    journal_append_ns: std::sync::atomic::AtomicU64,
    journal_bytes: std::sync::atomic::AtomicU64,
    checkpoints: std::sync::atomic::AtomicU64,
    checkpoint_ns: std::sync::atomic::AtomicU64,
    lazy_commits: std::sync::atomic::AtomicU64,
    lazy_commit_ns: std::sync::atomic::AtomicU64,
}

/// The store's counters (see [`Store::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Journal records appended and fsynced, and the time they took in all.
    pub journal_appends: u64,
    pub journal_append_ns: u64,
    /// Bytes the journal holds now (it starts over at every checkpoint).
    pub journal_bytes: u64,
    /// Durable redb commits, and the time they took in all.
    pub checkpoints: u64,
    pub checkpoint_ns: u64,
    /// Lazy writes (leader mode's state machine applies), and the time they took in all.
    pub lazy_commits: u64,
    pub lazy_commit_ns: u64,
}

impl StoreStats {
    /// Appends these counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let rows = [
            (
                "rampart_storage_journal_appends_total",
                "counter",
                "Journal records appended and fsynced.",
                self.journal_appends as f64,
            ),
            (
                "rampart_storage_journal_append_seconds_total",
                "counter",
                "Time spent appending and fsyncing journal records.",
                self.journal_append_ns as f64 / 1e9,
            ),
            (
                "rampart_storage_journal_bytes",
                "gauge",
                "Bytes in the journal (it starts over at each checkpoint).",
                self.journal_bytes as f64,
            ),
            (
                "rampart_storage_checkpoints_total",
                "counter",
                "Durable commits of the data file.",
                self.checkpoints as f64,
            ),
            (
                "rampart_storage_checkpoint_seconds_total",
                "counter",
                "Time spent in durable commits of the data file.",
                self.checkpoint_ns as f64 / 1e9,
            ),
            (
                "rampart_storage_lazy_commits_total",
                "counter",
                "Writes committed without waiting for the disk.",
                self.lazy_commits as f64,
            ),
            (
                "rampart_storage_lazy_commit_seconds_total",
                "counter",
                "Time spent in lazy writes, from the transaction's start.",
                self.lazy_commit_ns as f64 / 1e9,
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
    }
}

struct JournalState {
    journal: Journal,
    /// The sequence number of the next record.
    next_seq: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, creating the directory if needed.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), reason: e.to_string() })?;
        Self::open(&dir.join(DATA_FILE_NAME))
    }

    /// Opens (or creates) the store file at `path`. A file that is not a redb
    /// database, or is damaged beyond redb's own recovery, is reported as
    /// [`Error::Corrupt`]; nothing is overwritten.
    pub fn open(path: &Path) -> Result<Self> {
        let p = path.to_path_buf();
        // redb verifies page checksums only in `check_integrity`; reading a
        // damaged page later can panic inside redb. So every open verifies the
        // whole file first (cost: one sequential read of it), and a panic
        // while doing so is reported as corruption rather than crashing.
        let opened = std::panic::catch_unwind(|| -> Result<Database> {
            let mut db =
                Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| map_db_error(&p, e))?;
            match db.check_integrity() {
                Ok(true) => Ok(db),
                Ok(false) => Err(Error::Corrupt {
                    path: p.clone(),
                    reason: "damaged pages were found and rolled back to an earlier commit; durable state may be \
                             missing, so this node refuses to start (remove the data dir and re-add the node)"
                        .into(),
                }),
                Err(e) => Err(map_db_error(&p, e)),
            }
        });
        let db = match opened {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Corrupt { path: p, reason: "redb could not read the file structure".into() });
            }
        };
        let mut db = db;
        let jpath = journal_path(&p);
        let id = store_id(&db, &p)?;
        let (journal, found) = Journal::open(&jpath, id).map_err(|reason| Error::Io { path: jpath.clone(), reason })?;
        let durable_seq = {
            let txn = db.begin_read().map_err(|e| io_error(&p, e))?;
            match txn.open_table(META) {
                Ok(t) => match t.get(JOURNAL_SEQ_META).map_err(|e| io_error(&p, e))? {
                    Some(g) => decode_seq(g.value()).ok_or_else(|| Error::Malformed {
                        what: JOURNAL_SEQ_META.into(),
                        reason: "not 8 bytes".into(),
                    })?,
                    None => 0,
                },
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(io_error(&p, e)),
            }
        };
        let replayed = replay(&db, &p, &jpath, durable_seq, &found.records)?;
        let next_seq = found.records.last().map_or(durable_seq, |(s, _)| (*s).max(durable_seq)) + 1;
        if replayed > 0 {
            tracing::info!(path = %jpath.display(), records = replayed, "replayed the journal");
        }
        compact_if_sparse(&mut db, &p, COMPACT_FILE_BYTES_MIN)?;
        let store =
            Store { db, path: p, journal: Mutex::new(JournalState { journal, next_seq }), stats: Counters::default() };
        // Create the tables up front so readers never see them missing; the replayed records are
        // then in the redb file, and the journal starts over.
        store.write(Durability::Checkpoint, |_| Ok(()))?;
        Ok(store)
    }

    /// The store's counters.
    pub fn stats(&self) -> StoreStats {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        StoreStats {
            journal_appends: get(&self.stats.journal_appends),
            journal_append_ns: get(&self.stats.journal_append_ns),
            journal_bytes: get(&self.stats.journal_bytes),
            checkpoints: get(&self.stats.checkpoints),
            checkpoint_ns: get(&self.stats.checkpoint_ns),
            lazy_commits: get(&self.stats.lazy_commits),
            lazy_commit_ns: get(&self.stats.lazy_commit_ns),
        }
    }

    /// A durable redb commit of everything committed so far, then the journal starts over.
    pub fn checkpoint(&self) -> Result<()> {
        self.write(Durability::Checkpoint, |_| Ok(()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one write transaction and commits it with `durability`.
    /// Many changes share one commit (and so one fsync).
    pub fn write<T>(&self, durability: Durability, f: impl FnOnce(&mut Batch<'_>) -> Result<T>) -> Result<T> {
        let began = std::time::Instant::now();
        self.check_poisoned()?;
        let mut txn = self.db.begin_write().map_err(|e| self.io(e))?;
        if durability != Durability::Checkpoint {
            txn.set_durability(redb::Durability::None).map_err(|e| self.io(e))?;
        }
        let (out, record) = {
            let mut batch = Batch::open(&txn, &self.path)?;
            if durability == Durability::Immediate {
                batch.rec = Some(Vec::new());
            }
            let out = f(&mut batch)?;
            let record = batch.rec.take().filter(|r| !r.is_empty());
            if durability == Durability::Checkpoint || record.is_some() {
                let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(p) = &j.journal.poisoned {
                    return Err(Error::Io { path: journal_path(&self.path), reason: p.clone() });
                }
                let seq = if record.is_some() { j.next_seq } else { j.next_seq - 1 };
                batch.meta.insert(JOURNAL_SEQ_META, &seq.to_le_bytes()[..]).map_err(|e| self.io(e))?;
                drop(batch);
                let started = std::time::Instant::now();
                #[allow(clippy::cast_possible_truncation)]
                let ns = |t: std::time::Instant| t.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                let add =
                    |c: &std::sync::atomic::AtomicU64, v: u64| c.fetch_add(v, std::sync::atomic::Ordering::Relaxed);
                match durability {
                    Durability::Checkpoint => {
                        txn.commit().map_err(|e| self.io(e))?;
                        add(&self.stats.checkpoints, 1);
                        add(&self.stats.checkpoint_ns, ns(started));
                        j.journal.reset().map_err(|reason| {
                            j.journal.poisoned = Some(reason.clone());
                            Error::Io { path: journal_path(&self.path), reason }
                        })?;
                        self.stats.journal_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
                        return Ok(out);
                    }
                    _ => {
                        let record = record.expect("a journaled write has a record");
                        if record.len() > JOURNAL_RECORD_BYTES_MAX {
                            // Refused before anything is committed (the transaction is dropped).
                            return Err(Error::Io {
                                path: journal_path(&self.path),
                                reason: format!(
                                    "a write of {} bytes is over the journal's record limit of {JOURNAL_RECORD_BYTES_MAX}",
                                    record.len()
                                ),
                            });
                        }
                        // redb's (non-durable) commit first, so its write lock is free while the
                        // journal is fsynced: lazy writers (the state machine) go on meanwhile.
                        // The journal lock, held from before the commit, keeps records in commit
                        // order. Until the fsync returns the write is visible but not durable,
                        // which is as it must be for a write not acknowledged yet.
                        if let Err(e) = txn.commit() {
                            let reason = format!("a journaled commit failed: {e}");
                            j.journal.poisoned = Some(reason.clone());
                            return Err(Error::Io { path: self.path.clone(), reason });
                        }
                        // A failed append poisons the journal: redb then holds a write the disk
                        // may not, and nothing may be acknowledged after it until a restart.
                        j.journal
                            .append(seq, &record)
                            .map_err(|reason| Error::Io { path: journal_path(&self.path), reason })?;
                        add(&self.stats.journal_appends, 1);
                        add(&self.stats.journal_append_ns, ns(started));
                        j.next_seq += 1;
                        self.stats.journal_bytes.store(j.journal.bytes(), std::sync::atomic::Ordering::Relaxed);
                        let full = j.journal.bytes() >= JOURNAL_CHECKPOINT_BYTES;
                        drop(j);
                        if full {
                            // The write is durable already: a checkpoint that fails now is
                            // retried by the next write, not reported as this one failing.
                            if let Err(e) = self.checkpoint() {
                                tracing::error!(path = %self.path.display(), error = %e, "journal checkpoint failed");
                            }
                        }
                        return Ok(out);
                    }
                }
            }
            (out, record)
        };
        debug_assert!(record.is_none());
        txn.commit().map_err(|e| self.io(e))?;
        if durability == Durability::Lazy {
            let took = began.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
            self.stats.lazy_commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.stats.lazy_commit_ns.fetch_add(took, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(out)
    }

    /// Reads a consistent view of the store.
    pub fn read<T>(&self, f: impl FnOnce(&View) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let view = View {
            log: txn.open_table(LOG).map_err(|e| self.io(e))?,
            meta: txn.open_table(META).map_err(|e| self.io(e))?,
            kv: txn.open_table(KV).map_err(|e| self.io(e))?,
            kv_expiry: txn.open_table(KV_EXPIRY).map_err(|e| self.io(e))?,
            registers: txn.open_table(REGISTERS).map_err(|e| self.io(e))?,
            history: txn.open_table(HISTORY).map_err(|e| self.io(e))?,
            leases: txn.open_table(LEASES).map_err(|e| self.io(e))?,
            kv_lease: txn.open_table(KV_LEASE).map_err(|e| self.io(e))?,
            lease_keys: txn.open_table(LEASE_KEYS).map_err(|e| self.io(e))?,
            path: self.path.clone(),
        };
        f(&view)
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.read(|v| v.meta_get(key))
    }

    pub fn kv_get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        self.read(|v| v.kv_get(key))
    }

    /// Drops the staged key-value state, and a replaced one not yet dropped,
    /// if either is there (what a crash during an install leaves). Immediate.
    pub fn staged_clear(&self) -> Result<()> {
        self.check_poisoned()?;
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        txn.delete_table(KV_STAGED).map_err(|e| self.io(e))?;
        txn.delete_table(KV_REPLACED).map_err(|e| self.io(e))?;
        txn.delete_table(KV_EXPIRY_STAGED).map_err(|e| self.io(e))?;
        txn.delete_table(KV_EXPIRY_REPLACED).map_err(|e| self.io(e))?;
        txn.delete_table(LEASES_STAGED).map_err(|e| self.io(e))?;
        txn.delete_table(KV_LEASE_STAGED).map_err(|e| self.io(e))?;
        txn.delete_table(LEASE_KEYS_STAGED).map_err(|e| self.io(e))?;
        txn.delete_table(LEASES_REPLACED).map_err(|e| self.io(e))?;
        txn.delete_table(KV_LEASE_REPLACED).map_err(|e| self.io(e))?;
        txn.delete_table(LEASE_KEYS_REPLACED).map_err(|e| self.io(e))?;
        txn.commit().map_err(|e| self.io(e))
    }

    /// Runs `f` on the staged key-value state in one write transaction,
    /// committed with `durability`. A snapshot install stages its records in
    /// many such commits, so no transaction holds the whole data set.
    pub fn stage<T>(&self, durability: Durability, f: impl FnOnce(&mut Staging<'_>) -> Result<T>) -> Result<T> {
        self.check_poisoned()?;
        let mut txn = self.db.begin_write().map_err(|e| self.io(e))?;
        if durability == Durability::Lazy {
            txn.set_durability(redb::Durability::None).map_err(|e| self.io(e))?;
        }
        let out = {
            let mut staging = Staging {
                kv: txn.open_table(KV_STAGED).map_err(|e| self.io(e))?,
                kv_expiry: txn.open_table(KV_EXPIRY_STAGED).map_err(|e| self.io(e))?,
                leases: txn.open_table(LEASES_STAGED).map_err(|e| self.io(e))?,
                kv_lease: txn.open_table(KV_LEASE_STAGED).map_err(|e| self.io(e))?,
                lease_keys: txn.open_table(LEASE_KEYS_STAGED).map_err(|e| self.io(e))?,
                path: &self.path,
            };
            f(&mut staging)?
        };
        txn.commit().map_err(|e| self.io(e))?;
        Ok(out)
    }

    /// In one immediate commit: the staged key-value state becomes the key-value
    /// state (an empty one if nothing was staged), and `f` runs on the tables
    /// after the swap (to write the markers that go with the new state). Then,
    /// in a commit of its own, the replaced state is dropped; a crash between
    /// the two leaves it for [`Store::staged_clear`].
    pub fn swap_in_staged<T>(&self, f: impl FnOnce(&mut Batch<'_>) -> Result<T>) -> Result<T> {
        self.check_poisoned()?;
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        // Both tables must exist for the renames below.
        drop(txn.open_table(KV_STAGED).map_err(|e| self.io(e))?);
        drop(txn.open_table(KV).map_err(|e| self.io(e))?);
        drop(txn.open_table(KV_EXPIRY_STAGED).map_err(|e| self.io(e))?);
        drop(txn.open_table(KV_EXPIRY).map_err(|e| self.io(e))?);
        txn.delete_table(KV_REPLACED).map_err(|e| self.io(e))?;
        txn.delete_table(KV_EXPIRY_REPLACED).map_err(|e| self.io(e))?;
        txn.rename_table(KV, KV_REPLACED).map_err(|e| self.io(e))?;
        txn.rename_table(KV_STAGED, KV).map_err(|e| self.io(e))?;
        txn.rename_table(KV_EXPIRY, KV_EXPIRY_REPLACED).map_err(|e| self.io(e))?;
        txn.rename_table(KV_EXPIRY_STAGED, KV_EXPIRY).map_err(|e| self.io(e))?;
        // The lease tables go with the records they describe.
        drop(txn.open_table(LEASES_STAGED).map_err(|e| self.io(e))?);
        drop(txn.open_table(LEASES).map_err(|e| self.io(e))?);
        drop(txn.open_table(KV_LEASE_STAGED).map_err(|e| self.io(e))?);
        drop(txn.open_table(KV_LEASE).map_err(|e| self.io(e))?);
        drop(txn.open_table(LEASE_KEYS_STAGED).map_err(|e| self.io(e))?);
        drop(txn.open_table(LEASE_KEYS).map_err(|e| self.io(e))?);
        txn.delete_table(LEASES_REPLACED).map_err(|e| self.io(e))?;
        txn.delete_table(KV_LEASE_REPLACED).map_err(|e| self.io(e))?;
        txn.delete_table(LEASE_KEYS_REPLACED).map_err(|e| self.io(e))?;
        txn.rename_table(LEASES, LEASES_REPLACED).map_err(|e| self.io(e))?;
        txn.rename_table(LEASES_STAGED, LEASES).map_err(|e| self.io(e))?;
        txn.rename_table(KV_LEASE, KV_LEASE_REPLACED).map_err(|e| self.io(e))?;
        txn.rename_table(KV_LEASE_STAGED, KV_LEASE).map_err(|e| self.io(e))?;
        txn.rename_table(LEASE_KEYS, LEASE_KEYS_REPLACED).map_err(|e| self.io(e))?;
        txn.rename_table(LEASE_KEYS_STAGED, LEASE_KEYS).map_err(|e| self.io(e))?;
        let out = {
            let mut batch = Batch::open(&txn, &self.path)?;
            f(&mut batch)?
        };
        txn.commit().map_err(|e| self.io(e))?;
        self.staged_clear()?;
        Ok(out)
    }

    fn io(&self, e: impl std::fmt::Display) -> Error {
        io_error(&self.path, e)
    }

    /// After a failed journal append or journaled commit, every write is refused: the files
    /// may disagree on it until a restart replays the journal.
    fn check_poisoned(&self) -> Result<()> {
        let j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        match &j.journal.poisoned {
            Some(p) => Err(Error::Io { path: journal_path(&self.path), reason: p.clone() }),
            None => Ok(()),
        }
    }
}

/// Where the journal of the data file at `path` lives.
pub fn journal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(JOURNAL_FILE_SUFFIX);
    PathBuf::from(name)
}

/// This store's random id (made and committed durably on first open): every journal record's
/// CRC covers it, so a journal left from another store beside this data file is not replayed.
fn store_id(db: &Database, path: &Path) -> Result<u64> {
    {
        let txn = db.begin_read().map_err(|e| io_error(path, e))?;
        match txn.open_table(META) {
            Ok(t) => {
                if let Some(g) = t.get(STORE_ID_META).map_err(|e| io_error(path, e))? {
                    return decode_seq(g.value())
                        .ok_or_else(|| Error::Malformed { what: STORE_ID_META.into(), reason: "not 8 bytes".into() });
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(io_error(path, e)),
        }
    }
    use std::hash::{BuildHasher, Hasher};
    let id = std::collections::hash_map::RandomState::new().build_hasher().finish() | 1;
    let txn = db.begin_write().map_err(|e| io_error(path, e))?;
    txn.open_table(META)
        .map_err(|e| io_error(path, e))?
        .insert(STORE_ID_META, &id.to_le_bytes()[..])
        .map_err(|e| io_error(path, e))?;
    txn.commit().map_err(|e| io_error(path, e))?;
    Ok(id)
}

fn decode_seq(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Applies the journal's records after `durable_seq` to the redb file in one durable commit;
/// answers how many it applied. The first must be `durable_seq + 1`: a gap means records the
/// redb file never got are missing.
fn replay(db: &Database, path: &Path, jpath: &Path, durable_seq: u64, records: &[(u64, Vec<u8>)]) -> Result<usize> {
    let todo: Vec<&(u64, Vec<u8>)> = records.iter().filter(|(s, _)| *s > durable_seq).collect();
    let Some((first, _)) = todo.first() else { return Ok(0) };
    if *first != durable_seq + 1 {
        return Err(Error::Corrupt {
            path: jpath.to_path_buf(),
            reason: format!(
                "the journal starts at record {first} but the data file holds records up to {durable_seq} only"
            ),
        });
    }
    let txn = db.begin_write().map_err(|e| io_error(path, e))?;
    {
        let mut batch = Batch::open(&txn, path)?;
        for (seq, payload) in &todo {
            batch.replay(payload).map_err(|reason| Error::Corrupt {
                path: jpath.to_path_buf(),
                reason: format!("journal record {seq} is malformed: {reason}"),
            })??;
        }
        let last = todo.last().expect("not empty").0;
        batch.meta.insert(JOURNAL_SEQ_META, &last.to_le_bytes()[..]).map_err(|e| io_error(path, e))?;
    }
    txn.commit().map_err(|e| io_error(path, e))?;
    Ok(todo.len())
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> Error {
    let reason = e.to_string();
    if reason.to_ascii_lowercase().contains("corrupt") {
        Error::Corrupt { path: path.to_path_buf(), reason }
    } else {
        Error::Io { path: path.to_path_buf(), reason }
    }
}

/// A file is compacted at open when it is at least this large ...
pub const COMPACT_FILE_BYTES_MIN: u64 = 64 << 20;
/// ... and its live bytes (keys, values and metadata) fill at most this fraction of it, in
/// percent (a file written once and never deleted from is about half live: page slack and
/// copy-on-write). redb reuses freed pages but never gives them back to the file system itself.
pub const COMPACT_LIVE_PERCENT_MAX: u64 = 25;

/// Gives the file's free pages back (redb's `compact`) when it is mostly empty: after many
/// deletes (tombstone collection in multi-master mode, expiry, log purges), a restart returns the
/// disk space. Runs before the store is in use, so no transaction is open.
fn compact_if_sparse(db: &mut Database, path: &Path, min_bytes: u64) -> Result<bool> {
    let io = |e: String| Error::Io { path: path.to_path_buf(), reason: e };
    let file_bytes = std::fs::metadata(path).map_err(|e| io(e.to_string()))?.len();
    if file_bytes < min_bytes {
        return Ok(false);
    }
    let stats = {
        let tx = db.begin_write().map_err(|e| io(e.to_string()))?;
        let stats = tx.stats().map_err(|e| io(e.to_string()))?;
        tx.abort().map_err(|e| io(e.to_string()))?;
        stats
    };
    let live = stats.stored_bytes() + stats.metadata_bytes();
    tracing::debug!(file_bytes, live, fragmented = stats.fragmented_bytes(), "data file use");
    if live.saturating_mul(100) > file_bytes.saturating_mul(COMPACT_LIVE_PERCENT_MAX) {
        return Ok(false);
    }
    let started = std::time::Instant::now();
    // Each call moves some pages; a bounded number of passes.
    for _ in 0..64 {
        if !db.compact().map_err(|e| io(format!("compaction failed: {e}")))? {
            break;
        }
    }
    let after = std::fs::metadata(path).map_err(|e| io(e.to_string()))?.len();
    tracing::info!(
        path = %path.display(),
        before = file_bytes,
        after,
        took_ms = started.elapsed().as_millis() as u64,
        "compacted a mostly empty data file"
    );
    Ok(true)
}

fn map_db_error(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::InUse { path: path.to_path_buf() },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
            Error::Corrupt { path: path.to_path_buf(), reason }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            Error::Corrupt { path: path.to_path_buf(), reason: io.to_string() }
        }
        redb::DatabaseError::UpgradeRequired(v) => Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("file format version {v} is not supported by this build"),
        },
        other => io_error(path, other),
    }
}

/// Keys with their decoded values in key order, and whether more remain.
pub type Scanned<V> = (Vec<(Vec<u8>, V)>, bool);

/// Live keys with their records in key order, and the key the next page starts after (`None`:
/// no more).
pub type LiveScanned = (Vec<(Vec<u8>, Versioned)>, Option<Vec<u8>>);

/// Most expired keys one [`View::kv_scan_live`] page steps over before it ends (short, with a
/// resume key), so a range of expired keys the expirer has not removed yet costs a bounded read.
pub const SCAN_EXPIRED_SKIPPED_MAX: usize = 10_000;

/// Keys of `table` starting with `prefix`, after `start_after` (exclusive)
/// if given, in key order; at most `limit` of them, and whether more remain.
/// `decode` turns a stored pair into the caller's item and says how many bytes
/// it weighs; the page ends once it weighs `bytes_max` or more (the item that
/// reaches the bound is kept, so a page is never empty while keys remain).
fn prefix_scan<T, V>(
    table: &T,
    path: &Path,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    limit: usize,
    bytes_max: usize,
    mut decode: impl FnMut(&[u8], &[u8]) -> Result<(V, usize)>,
) -> Result<Scanned<V>>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let lower: Bound<&[u8]> = match start_after {
        Some(k) if k >= prefix => Bound::Excluded(k),
        _ => Bound::Included(prefix),
    };
    let range = table.range::<&[u8]>((lower, Bound::Unbounded)).map_err(|e| io_error(path, e))?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in range {
        let (k, v) = item.map_err(|e| io_error(path, e))?;
        let key = k.value();
        if !key.starts_with(prefix) {
            return Ok((out, false));
        }
        if out.len() == limit || bytes >= bytes_max {
            return Ok((out, true));
        }
        let (value, weight) = decode(key, v.value())?;
        bytes = bytes.saturating_add(weight);
        out.push((key.to_vec(), value));
    }
    Ok((out, false))
}

macro_rules! table_reads {
    () => {
        pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.meta.get(key).map_err(|e| io_error(&self.path, e))?.map(|g| g.value().to_vec()))
        }

        /// Whether `key` has a value, without copying it out.
        pub fn meta_exists(&self, key: &str) -> Result<bool> {
            Ok(self.meta.get(key).map_err(|e| io_error(&self.path, e))?.is_some())
        }

        pub fn kv_get(&self, key: &[u8]) -> Result<Option<Versioned>> {
            match self.kv.get(key).map_err(|e| io_error(&self.path, e))? {
                Some(g) => Ok(Some(Versioned::decode(key, g.value())?)),
                None => Ok(None),
            }
        }

        /// Keys starting with `prefix`, after `start_after` (exclusive) if
        /// given, in key order; at most `limit` of them, and whether more
        /// remain.
        pub fn kv_scan(
            &self,
            prefix: &[u8],
            start_after: Option<&[u8]>,
            limit: usize,
        ) -> Result<(Vec<(Vec<u8>, Versioned)>, bool)> {
            self.kv_scan_bounded(prefix, start_after, limit, usize::MAX, true)
        }

        /// [`Self::kv_scan`] that also ends the page once its keys (and, with `values`, values)
        /// reach `bytes_max` bytes, so no page holds much more than that in memory. Without
        /// `values`, values come back empty and are never copied.
        pub fn kv_scan_bounded(
            &self,
            prefix: &[u8],
            start_after: Option<&[u8]>,
            limit: usize,
            bytes_max: usize,
            values: bool,
        ) -> Result<(Vec<(Vec<u8>, Versioned)>, bool)> {
            prefix_scan(&self.kv, &self.path, prefix, start_after, limit, bytes_max, |key, raw| {
                if values {
                    let v = Versioned::decode(key, raw)?;
                    let weight = key.len() + v.value.len();
                    Ok((v, weight))
                } else {
                    let v = Versioned::decode_head(key, raw)?;
                    Ok((v, key.len()))
                }
            })
        }

        /// [`Self::kv_scan_bounded`] without the keys expired at `now_ms` (expiry at or before
        /// it). It steps over at most [`SCAN_EXPIRED_SKIPPED_MAX`] expired keys, so a page of
        /// many expired keys may hold fewer than `limit` live ones (even none). The second field
        /// is where the next page starts (after that key, exclusive), `None` when none remain;
        /// it may name an expired key.
        pub fn kv_scan_live(
            &self,
            prefix: &[u8],
            start_after: Option<&[u8]>,
            limit: usize,
            bytes_max: usize,
            values: bool,
            now_ms: u64,
        ) -> Result<LiveScanned> {
            let lower: Bound<&[u8]> = match start_after {
                Some(k) if k >= prefix => Bound::Excluded(k),
                _ => Bound::Included(prefix),
            };
            let range = self.kv.range::<&[u8]>((lower, Bound::Unbounded)).map_err(|e| io_error(&self.path, e))?;
            let mut out: Vec<(Vec<u8>, Versioned)> = Vec::new();
            let mut bytes = 0usize;
            let mut skipped = 0usize;
            let mut last: Option<Vec<u8>> = None;
            for item in range {
                let (k, v) = item.map_err(|e| io_error(&self.path, e))?;
                let key = k.value();
                if !key.starts_with(prefix) {
                    return Ok((out, None));
                }
                if out.len() == limit || bytes >= bytes_max || skipped >= SCAN_EXPIRED_SKIPPED_MAX {
                    return Ok((out, last));
                }
                let raw = v.value();
                if Versioned::expiry_of(raw).is_some_and(|at| at <= now_ms) {
                    skipped += 1;
                    last = Some(key.to_vec());
                    continue;
                }
                let (value, weight) = if values {
                    let v = Versioned::decode(key, raw)?;
                    let w = key.len() + v.value.len();
                    (v, w)
                } else {
                    (Versioned::decode_head(key, raw)?, key.len())
                };
                bytes = bytes.saturating_add(weight);
                last = Some(key.to_vec());
                out.push((key.to_vec(), value));
            }
            Ok((out, None))
        }

        /// Up to `limit` keys whose expiry is at or before `now_ms`, earliest first.
        pub fn kv_expired(&self, now_ms: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
            let end = (now_ms.saturating_add(1)).to_be_bytes();
            let mut out = Vec::new();
            for item in self.kv_expiry.range(..&end[..]).map_err(|e| io_error(&self.path, e))? {
                if out.len() == limit {
                    break;
                }
                let (k, _) = item.map_err(|e| io_error(&self.path, e))?;
                out.push(k.value()[8..].to_vec());
            }
            Ok(out)
        }

        /// How many keys have expired by `now_ms` but are still stored (reads must not count
        /// them).
        pub fn kv_expired_count(&self, now_ms: u64) -> Result<u64> {
            let end = (now_ms.saturating_add(1)).to_be_bytes();
            let mut n = 0u64;
            for item in self.kv_expiry.range(..&end[..]).map_err(|e| io_error(&self.path, e))? {
                item.map_err(|e| io_error(&self.path, e))?;
                n += 1;
            }
            Ok(n)
        }

        /// The expiry of `key` if it is present (`Some(None)`: present, never expires), without
        /// copying its value.
        pub fn kv_expiry(&self, key: &[u8]) -> Result<Option<Option<u64>>> {
            Ok(self.kv.get(key).map_err(|e| io_error(&self.path, e))?.map(|g| Versioned::expiry_of(g.value())))
        }

        /// Whether `key` is present, without copying its value.
        pub fn kv_exists(&self, key: &[u8]) -> Result<bool> {
            Ok(self.kv.get(key).map_err(|e| io_error(&self.path, e))?.is_some())
        }

        pub fn kv_len(&self) -> Result<u64> {
            self.kv.len().map_err(|e| io_error(&self.path, e))
        }

        /// Lease `id`'s TTL in ms, if the lease exists.
        pub fn lease_get(&self, id: u64) -> Result<Option<u64>> {
            Ok(self.leases.get(id).map_err(|e| io_error(&self.path, e))?.map(|g| g.value()))
        }

        /// How many leases exist.
        pub fn lease_count(&self) -> Result<u64> {
            self.leases.len().map_err(|e| io_error(&self.path, e))
        }

        /// Every lease as (id, TTL in ms), in id order.
        pub fn lease_list(&self) -> Result<Vec<(u64, u64)>> {
            let mut out = Vec::new();
            for item in self.leases.iter().map_err(|e| io_error(&self.path, e))? {
                let (k, v) = item.map_err(|e| io_error(&self.path, e))?;
                out.push((k.value(), v.value()));
            }
            Ok(out)
        }

        /// The lease `key` is attached to, if any.
        pub fn kv_lease(&self, key: &[u8]) -> Result<Option<u64>> {
            Ok(self.kv_lease.get(key).map_err(|e| io_error(&self.path, e))?.map(|g| g.value()))
        }

        /// Up to `limit` keys attached to lease `id`, in key order.
        pub fn lease_keys(&self, id: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
            let start = id.to_be_bytes();
            let mut out = Vec::new();
            for item in self.lease_keys.range(&start[..]..).map_err(|e| io_error(&self.path, e))? {
                let (k, _) = item.map_err(|e| io_error(&self.path, e))?;
                let k = k.value();
                if k.len() < 8 || k[..8] != start || out.len() == limit {
                    break;
                }
                out.push(k[8..].to_vec());
            }
            Ok(out)
        }

        /// How many keys are attached to lease `id` (counting stops at `limit`).
        pub fn lease_key_count(&self, id: u64, limit: usize) -> Result<usize> {
            let start = id.to_be_bytes();
            let mut n = 0usize;
            for item in self.lease_keys.range(&start[..]..).map_err(|e| io_error(&self.path, e))? {
                let (k, _) = item.map_err(|e| io_error(&self.path, e))?;
                if k.value().len() < 8 || k.value()[..8] != start || n == limit {
                    break;
                }
                n += 1;
            }
            Ok(n)
        }

        /// Visits every key-value pair in key order.
        pub fn kv_for_each(&self, mut f: impl FnMut(&[u8], Versioned) -> Result<()>) -> Result<()> {
            for item in self.kv.iter().map_err(|e| io_error(&self.path, e))? {
                let (k, v) = item.map_err(|e| io_error(&self.path, e))?;
                f(k.value(), Versioned::decode(k.value(), v.value())?)?;
            }
            Ok(())
        }

        /// Log entries with index in `[start, end)`, in order; stops at the
        /// first gap.
        pub fn log_range(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>> {
            let mut out = Vec::new();
            if start >= end {
                return Ok(out);
            }
            for item in self.log.range(start..end).map_err(|e| io_error(&self.path, e))? {
                let (k, v) = item.map_err(|e| io_error(&self.path, e))?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        }

        pub fn log_last(&self) -> Result<Option<(u64, Vec<u8>)>> {
            Ok(self.log.last().map_err(|e| io_error(&self.path, e))?.map(|(k, v)| (k.value(), v.value().to_vec())))
        }

        pub fn log_first_index(&self) -> Result<Option<u64>> {
            Ok(self.log.first().map_err(|e| io_error(&self.path, e))?.map(|(k, _)| k.value()))
        }

        /// Registers whose key starts with `prefix`, after `start_after`
        /// (exclusive) if given, in key order; at most `limit`, and whether
        /// more remain.
        pub fn register_scan(
            &self,
            prefix: &[u8],
            start_after: Option<&[u8]>,
            limit: usize,
        ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, bool)> {
            self.register_scan_with(prefix, start_after, limit, usize::MAX, |_, v| Ok((v.to_vec(), 0)))
        }

        /// Registers as [`Self::register_scan`] finds them, each decoded by `decode` (which
        /// also weighs it) straight from the stored bytes; the page ends once it weighs
        /// `bytes_max` or more.
        pub fn register_scan_with<V>(
            &self,
            prefix: &[u8],
            start_after: Option<&[u8]>,
            limit: usize,
            bytes_max: usize,
            decode: impl FnMut(&[u8], &[u8]) -> Result<(V, usize)>,
        ) -> Result<Scanned<V>> {
            prefix_scan(&self.registers, &self.path, prefix, start_after, limit, bytes_max, decode)
        }

        pub fn register_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            Ok(self.registers.get(key).map_err(|e| io_error(&self.path, e))?.map(|g| g.value().to_vec()))
        }

        /// History rows from `(revision, seq)` `from` (inclusive) up to revision `upto`
        /// (inclusive), in order: at most `limit` rows, and the page ends once it weighs
        /// `bytes_max` bytes (the row that reaches it is kept). Each row is `(revision, seq,
        /// bytes)`; the second field says whether rows up to `upto` remain after the page.
        pub fn history_range(
            &self,
            from: (u64, u32),
            upto: u64,
            limit: usize,
            bytes_max: usize,
        ) -> Result<(Vec<(u64, u32, Vec<u8>)>, bool)> {
            let mut out = Vec::new();
            if from.0 > upto {
                return Ok((out, false));
            }
            let lower = history_key(from.0, from.1);
            let upper = history_key(upto, u32::MAX);
            let range = self.history.range::<&[u8]>(&lower[..]..=&upper[..]).map_err(|e| io_error(&self.path, e))?;
            let mut bytes = 0usize;
            for item in range {
                let (k, v) = item.map_err(|e| io_error(&self.path, e))?;
                if out.len() == limit || bytes >= bytes_max {
                    return Ok((out, true));
                }
                let (rev, seq) = split_history_key(&self.path, k.value())?;
                bytes = bytes.saturating_add(v.value().len());
                out.push((rev, seq, v.value().to_vec()));
            }
            Ok((out, false))
        }

        /// The revision of the oldest history row stored (`None`: none).
        pub fn history_first(&self) -> Result<Option<u64>> {
            match self.history.first().map_err(|e| io_error(&self.path, e))? {
                Some((k, _)) => Ok(Some(split_history_key(&self.path, k.value())?.0)),
                None => Ok(None),
            }
        }

        /// Visits every register in key order.
        pub fn register_for_each(&self, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
            for item in self.registers.iter().map_err(|e| io_error(&self.path, e))? {
                let (k, v) = item.map_err(|e| io_error(&self.path, e))?;
                f(k.value(), v.value())?;
            }
            Ok(())
        }
    };
}

/// A consistent read-only view (one redb read transaction).
pub struct View {
    log: redb::ReadOnlyTable<u64, &'static [u8]>,
    meta: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    kv: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    kv_expiry: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    registers: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    history: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    leases: redb::ReadOnlyTable<u64, u64>,
    kv_lease: redb::ReadOnlyTable<&'static [u8], u64>,
    lease_keys: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    path: PathBuf,
}

impl View {
    table_reads!();
}

/// The staged key-value state of one write transaction (see [`Store::stage`]).
pub struct Staging<'t> {
    kv: redb::Table<'t, &'static [u8], &'static [u8]>,
    kv_expiry: redb::Table<'t, &'static [u8], &'static [u8]>,
    leases: redb::Table<'t, u64, u64>,
    kv_lease: redb::Table<'t, &'static [u8], u64>,
    lease_keys: redb::Table<'t, &'static [u8], &'static [u8]>,
    path: &'t Path,
}

impl Staging<'_> {
    /// Stages `key` with its revision, value and expiry (the record form of [`Batch::kv_put`]).
    pub fn put(&mut self, key: &[u8], revision: u64, value: &[u8], expires_at: Option<u64>) -> Result<()> {
        let rec = Versioned::encode(revision, value, expires_at);
        let old = self.kv.insert(key, rec.as_slice()).map_err(|e| io_error(self.path, e))?;
        let old = old.and_then(|g| Versioned::expiry_of(g.value()));
        reindex(&mut self.kv_expiry, self.path, key, old, expires_at)
    }

    /// Stages lease `id` with its TTL.
    pub fn lease_put(&mut self, id: u64, ttl_ms: u64) -> Result<()> {
        self.leases.insert(id, ttl_ms).map_err(|e| io_error(self.path, e))?;
        Ok(())
    }

    /// Stages the attachment of `key` to lease `id`.
    pub fn lease_attach(&mut self, key: &[u8], id: u64) -> Result<()> {
        attach_in(&mut self.kv_lease, &mut self.lease_keys, self.path, key, id)
    }

    /// Keys staged so far.
    pub fn len(&self) -> Result<u64> {
        self.kv.len().map_err(|e| io_error(self.path, e))
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// The tables of one write transaction.
pub struct Batch<'t> {
    log: redb::Table<'t, u64, &'static [u8]>,
    meta: redb::Table<'t, &'static str, &'static [u8]>,
    kv: redb::Table<'t, &'static [u8], &'static [u8]>,
    kv_expiry: redb::Table<'t, &'static [u8], &'static [u8]>,
    registers: redb::Table<'t, &'static [u8], &'static [u8]>,
    history: redb::Table<'t, &'static [u8], &'static [u8]>,
    leases: redb::Table<'t, u64, u64>,
    kv_lease: redb::Table<'t, &'static [u8], u64>,
    lease_keys: redb::Table<'t, &'static [u8], &'static [u8]>,
    path: &'t Path,
    /// What the batch changed, encoded for the journal (immediate writes only).
    rec: Option<Vec<u8>>,
}

/// Tags of the changes a journal record holds, one per mutating [`Batch`] method.
mod op {
    pub const META_PUT: u8 = 1;
    pub const META_DELETE: u8 = 2;
    pub const KV_PUT: u8 = 3;
    pub const KV_DELETE: u8 = 4;
    pub const KV_CLEAR: u8 = 5;
    pub const LEASE_PUT: u8 = 6;
    pub const LEASE_DELETE: u8 = 7;
    pub const LEASE_ATTACH: u8 = 8;
    pub const LEASE_DETACH: u8 = 9;
    pub const REGISTER_PUT: u8 = 10;
    pub const REGISTER_DELETE: u8 = 11;
    pub const HISTORY_PUT: u8 = 12;
    pub const HISTORY_TRIM: u8 = 13;
    pub const LOG_PUT: u8 = 14;
    pub const LOG_TRUNCATE_FROM: u8 = 15;
    pub const LOG_PURGE_UPTO: u8 = 16;
}

/// Appends to a journal record: a tag, then fixed-width integers and length-prefixed bytes.
struct Rec<'a>(&'a mut Vec<u8>);

impl Rec<'_> {
    fn u64(self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(self, b: &[u8]) -> Self {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
}

/// Reads a journal record back; every read is bounds-checked.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err(format!("{n} bytes wanted, {} left", self.b.len()));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> std::result::Result<&'a [u8], String> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(n)
    }
    fn str(&mut self) -> std::result::Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|e| e.to_string())
    }
}

impl<'t> Batch<'t> {
    /// The tables of `txn`, as one batch.
    fn open(txn: &'t redb::WriteTransaction, path: &'t Path) -> Result<Self> {
        Ok(Batch {
            log: txn.open_table(LOG).map_err(|e| io_error(path, e))?,
            meta: txn.open_table(META).map_err(|e| io_error(path, e))?,
            kv: txn.open_table(KV).map_err(|e| io_error(path, e))?,
            kv_expiry: txn.open_table(KV_EXPIRY).map_err(|e| io_error(path, e))?,
            registers: txn.open_table(REGISTERS).map_err(|e| io_error(path, e))?,
            history: txn.open_table(HISTORY).map_err(|e| io_error(path, e))?,
            leases: txn.open_table(LEASES).map_err(|e| io_error(path, e))?,
            kv_lease: txn.open_table(KV_LEASE).map_err(|e| io_error(path, e))?,
            lease_keys: txn.open_table(LEASE_KEYS).map_err(|e| io_error(path, e))?,
            path,
            rec: None,
        })
    }

    /// Starts the record of one change, when this batch keeps one.
    fn rec(&mut self, tag: u8) -> Option<Rec<'_>> {
        let r = self.rec.as_mut()?;
        r.push(tag);
        Some(Rec(r))
    }

    /// Re-does the changes of one journal record (`Err` outside: the record is malformed).
    fn replay(&mut self, payload: &[u8]) -> std::result::Result<Result<()>, String> {
        let mut c = Cursor { b: payload };
        while !c.b.is_empty() {
            let r = match c.u8()? {
                op::META_PUT => {
                    let (k, v) = (c.str()?, c.bytes()?);
                    self.meta_put(k, v)
                }
                op::META_DELETE => self.meta_delete(c.str()?),
                op::KV_PUT => {
                    let (k, rev, v) = (c.bytes()?, c.u64()?, c.bytes()?);
                    let exp = match c.u8()? {
                        0 => None,
                        1 => Some(c.u64()?),
                        t => return Err(format!("bad expiry flag {t}")),
                    };
                    self.kv_put(k, rev, v, exp)
                }
                op::KV_DELETE => self.kv_delete(c.bytes()?).map(|_| ()),
                op::KV_CLEAR => self.kv_clear(),
                op::LEASE_PUT => {
                    let (id, ttl) = (c.u64()?, c.u64()?);
                    self.lease_put(id, ttl)
                }
                op::LEASE_DELETE => self.lease_delete(c.u64()?).map(|_| ()),
                op::LEASE_ATTACH => {
                    let (k, id) = (c.bytes()?, c.u64()?);
                    self.lease_attach(k, id)
                }
                op::LEASE_DETACH => self.lease_detach(c.bytes()?).map(|_| ()),
                op::REGISTER_PUT => {
                    let (k, v) = (c.bytes()?, c.bytes()?);
                    self.register_put(k, v)
                }
                op::REGISTER_DELETE => self.register_delete(c.bytes()?),
                op::HISTORY_PUT => {
                    let (rev, seq, ev) = (c.u64()?, c.u64()?, c.bytes()?);
                    let seq = u32::try_from(seq).map_err(|e| e.to_string())?;
                    self.history_put(rev, seq, ev)
                }
                op::HISTORY_TRIM => {
                    let (below, max) = (c.u64()?, c.u64()?);
                    self.history_trim(below, usize::try_from(max).map_err(|e| e.to_string())?).map(|_| ())
                }
                op::LOG_PUT => {
                    let (i, e) = (c.u64()?, c.bytes()?);
                    self.log_put(i, e)
                }
                op::LOG_TRUNCATE_FROM => self.log_truncate_from(c.u64()?),
                op::LOG_PURGE_UPTO => self.log_purge_upto(c.u64()?),
                t => return Err(format!("unknown change tag {t}")),
            };
            if r.is_err() {
                return Ok(r);
            }
        }
        Ok(Ok(()))
    }
}

impl Batch<'_> {
    table_reads!();

    pub fn meta_put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        if let Some(r) = self.rec(op::META_PUT) {
            r.bytes(key.as_bytes()).bytes(value);
        }
        self.meta.insert(key, value).map_err(|e| io_error(self.path, e))?;
        Ok(())
    }

    pub fn meta_delete(&mut self, key: &str) -> Result<()> {
        if let Some(r) = self.rec(op::META_DELETE) {
            r.bytes(key.as_bytes());
        }
        self.meta.remove(key).map_err(|e| io_error(self.path, e))?;
        Ok(())
    }

    /// Stores `key` with its revision, value and expiry (`None`: never), keeping the expiry
    /// index in step.
    pub fn kv_put(&mut self, key: &[u8], revision: u64, value: &[u8], expires_at: Option<u64>) -> Result<()> {
        if let Some(r) = self.rec(op::KV_PUT) {
            let r = r.bytes(key).u64(revision).bytes(value);
            match expires_at {
                None => r.0.push(0),
                Some(at) => {
                    r.0.push(1);
                    r.u64(at);
                }
            }
        }
        let rec = Versioned::encode(revision, value, expires_at);
        let old = self.kv.insert(key, rec.as_slice()).map_err(|e| io_error(self.path, e))?;
        let old = old.and_then(|g| Versioned::expiry_of(g.value()));
        reindex(&mut self.kv_expiry, self.path, key, old, expires_at)
    }

    /// Removes `key` (and its attachment to a lease); says whether it was there.
    pub fn kv_delete(&mut self, key: &[u8]) -> Result<bool> {
        if let Some(r) = self.rec(op::KV_DELETE) {
            r.bytes(key);
        }
        let Some(old) = self.kv.remove(key).map_err(|e| io_error(self.path, e))? else { return Ok(false) };
        let old = Versioned::expiry_of(old.value());
        reindex(&mut self.kv_expiry, self.path, key, old, None)?;
        detach_in(&mut self.kv_lease, &mut self.lease_keys, self.path, key)?;
        Ok(true)
    }

    /// Removes every key, and every lease with its attachments.
    pub fn kv_clear(&mut self) -> Result<()> {
        self.rec(op::KV_CLEAR);
        self.kv.retain(|_, _| false).map_err(|e| io_error(self.path, e))?;
        self.kv_expiry.retain(|_, _| false).map_err(|e| io_error(self.path, e))?;
        self.leases.retain(|_, _| false).map_err(|e| io_error(self.path, e))?;
        self.kv_lease.retain(|_, _| false).map_err(|e| io_error(self.path, e))?;
        self.lease_keys.retain(|_, _| false).map_err(|e| io_error(self.path, e))?;
        Ok(())
    }

    /// Stores lease `id` with its TTL.
    pub fn lease_put(&mut self, id: u64, ttl_ms: u64) -> Result<()> {
        if let Some(r) = self.rec(op::LEASE_PUT) {
            r.u64(id).u64(ttl_ms);
        }
        self.leases.insert(id, ttl_ms).map_err(|e| io_error(self.path, e))?;
        Ok(())
    }

    /// Removes lease `id`; says whether it was there. Its keys must have been removed first
    /// (their attachments go with them).
    pub fn lease_delete(&mut self, id: u64) -> Result<bool> {
        if let Some(r) = self.rec(op::LEASE_DELETE) {
            r.u64(id);
        }
        Ok(self.leases.remove(id).map_err(|e| io_error(self.path, e))?.is_some())
    }

    /// Attaches `key` (present) to lease `id`, detaching it from any other lease.
    pub fn lease_attach(&mut self, key: &[u8], id: u64) -> Result<()> {
        if let Some(r) = self.rec(op::LEASE_ATTACH) {
            r.bytes(key).u64(id);
        }
        attach_in(&mut self.kv_lease, &mut self.lease_keys, self.path, key, id)
    }

    /// Detaches `key` from its lease, if it has one; answers that lease.
    pub fn lease_detach(&mut self, key: &[u8]) -> Result<Option<u64>> {
        if let Some(r) = self.rec(op::LEASE_DETACH) {
            r.bytes(key);
        }
        detach_in(&mut self.kv_lease, &mut self.lease_keys, self.path, key)
    }

    pub fn register_put(&mut self, key: &[u8], register: &[u8]) -> Result<()> {
        if let Some(r) = self.rec(op::REGISTER_PUT) {
            r.bytes(key).bytes(register);
        }
        self.registers.insert(key, register).map_err(|e| io_error(self.path, e))?;
        Ok(())
    }

    /// Removes a register (tombstone collection, multi-master mode).
    pub fn register_delete(&mut self, key: &[u8]) -> Result<()> {
        if let Some(r) = self.rec(op::REGISTER_DELETE) {
            r.bytes(key);
        }
        self.registers.remove(key).map_err(|e| io_error(self.path, e))?;
        Ok(())
    }

    /// Stores the `seq`th event of revision `revision`.
    pub fn history_put(&mut self, revision: u64, seq: u32, event: &[u8]) -> Result<()> {
        if let Some(r) = self.rec(op::HISTORY_PUT) {
            r.u64(revision).u64(u64::from(seq)).bytes(event);
        }
        self.history.insert(&history_key(revision, seq)[..], event).map_err(|e| io_error(self.path, e))?;
        Ok(())
    }

    /// Removes at most `max_rows` history rows of revisions below `below`, oldest first, and
    /// says how many it removed (so one transaction never deletes an unbounded range).
    pub fn history_trim(&mut self, below: u64, max_rows: usize) -> Result<usize> {
        if let Some(r) = self.rec(op::HISTORY_TRIM) {
            r.u64(below).u64(max_rows as u64);
        }
        let end = history_key(below, 0);
        let mut keys = Vec::new();
        for item in self.history.range::<&[u8]>(..&end[..]).map_err(|e| io_error(self.path, e))? {
            if keys.len() == max_rows {
                break;
            }
            let (k, _) = item.map_err(|e| io_error(self.path, e))?;
            keys.push(k.value().to_vec());
        }
        for k in &keys {
            self.history.remove(k.as_slice()).map_err(|e| io_error(self.path, e))?;
        }
        Ok(keys.len())
    }

    pub fn log_put(&mut self, index: u64, entry: &[u8]) -> Result<()> {
        if let Some(r) = self.rec(op::LOG_PUT) {
            r.u64(index).bytes(entry);
        }
        self.log.insert(index, entry).map_err(|e| io_error(self.path, e))?;
        Ok(())
    }

    /// Removes log entries with index >= `from`.
    pub fn log_truncate_from(&mut self, from: u64) -> Result<()> {
        if let Some(r) = self.rec(op::LOG_TRUNCATE_FROM) {
            r.u64(from);
        }
        self.log.retain_in(from.., |_, _| false).map_err(|e| io_error(self.path, e))?;
        Ok(())
    }

    /// Removes log entries with index <= `upto`.
    pub fn log_purge_upto(&mut self, upto: u64) -> Result<()> {
        if let Some(r) = self.rec(op::LOG_PURGE_UPTO) {
            r.u64(upto);
        }
        self.log.retain_in(..=upto, |_, _| false).map_err(|e| io_error(self.path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_mostly_empty_file_is_compacted_at_open_and_a_full_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATA_FILE_NAME);
        {
            let store = Store::open(&path).unwrap();
            let value = vec![7u8; 4096];
            for chunk in 0..20 {
                store
                    .write(Durability::Immediate, |b| {
                        for i in 0..100u32 {
                            b.register_put(format!("k{chunk}-{i}").as_bytes(), &value)?;
                        }
                        Ok(())
                    })
                    .unwrap();
            }
        }
        let full = std::fs::metadata(&path).unwrap().len();
        {
            let mut db = Database::create(&path).unwrap();
            assert!(!compact_if_sparse(&mut db, &path, 1 << 20).unwrap(), "a full file stays as it is");
        }
        {
            let store = Store::open(&path).unwrap();
            for chunk in 0..20 {
                store
                    .write(Durability::Immediate, |b| {
                        for i in 0..100u32 {
                            b.register_delete(format!("k{chunk}-{i}").as_bytes())?;
                        }
                        Ok(())
                    })
                    .unwrap();
            }
            store.write(Durability::Immediate, |b| b.register_put(b"kept", b"v")).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() >= full / 2, "redb does not shrink the file by itself");
        {
            let mut db = Database::create(&path).unwrap();
            assert!(compact_if_sparse(&mut db, &path, 1 << 20).unwrap());
        }
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after * 4 < full, "{after} bytes after compaction, {full} before");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.read(|v| v.register_get(b"kept")).unwrap(), Some(b"v".to_vec()));
    }

    use super::*;

    #[test]
    fn kv_roundtrip_scan_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open_dir(dir.path()).unwrap();
            s.write(Durability::Immediate, |b| {
                b.kv_put(b"a/1", 5, b"x", None)?;
                b.kv_put(b"a/2", 6, b"y", None)?;
                b.kv_put(b"b/1", 7, b"z", None)?;
                b.log_put(1, b"one")?;
                b.log_put(2, b"two")?;
                b.log_put(3, b"three")?;
                b.meta_put("vote", b"v")
            })
            .unwrap();
            let (items, more) = s.read(|v| v.kv_scan(b"a/", None, 1)).unwrap();
            assert_eq!(items.len(), 1);
            assert!(more);
            let (items, more) = s.read(|v| v.kv_scan(b"a/", Some(b"a/1"), 10)).unwrap();
            assert_eq!(
                items,
                vec![(b"a/2".to_vec(), Versioned { revision: 6, value: b"y".to_vec(), expires_at: None })]
            );
            assert!(!more);
        }
        let s = Store::open_dir(dir.path()).unwrap();
        assert_eq!(s.kv_get(b"b/1").unwrap().unwrap().revision, 7);
        assert_eq!(s.meta_get("vote").unwrap().unwrap(), b"v");
        s.write(Durability::Immediate, |b| {
            b.log_purge_upto(1)?;
            b.log_truncate_from(3)
        })
        .unwrap();
        let logs = s.read(|v| v.log_range(0, 10)).unwrap();
        assert_eq!(logs, vec![(2, b"two".to_vec())]);
        assert_eq!(s.read(|v| v.kv_len()).unwrap(), 3);
        assert_eq!(s.read(|v| Ok((v.kv_exists(b"b/1")?, v.kv_exists(b"b/2")?))).unwrap(), (true, false));
    }

    #[test]
    fn bounded_scans_stop_at_the_byte_bound_and_can_skip_values() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_dir(dir.path()).unwrap();
        s.write(Durability::Immediate, |b| {
            for k in [b"k1", b"k2", b"k3"] {
                b.kv_put(k, 1, &[7u8; 100], None)?;
            }
            Ok(())
        })
        .unwrap();
        // 102 bytes per pair: the page ends with the pair that reaches 150.
        let (items, more) = s.read(|v| v.kv_scan_bounded(b"k", None, 10, 150, true)).unwrap();
        assert_eq!((items.len(), more), (2, true));
        assert_eq!(items[1].1.value.len(), 100);
        // Without values only keys count, and values stay empty.
        let (items, more) = s.read(|v| v.kv_scan_bounded(b"k", None, 10, 150, false)).unwrap();
        assert_eq!((items.len(), more), (3, false));
        assert!(items.iter().all(|(_, v)| v.value.is_empty() && v.revision == 1));
        // A single pair above the bound still makes a page of one.
        let (items, more) = s.read(|v| v.kv_scan_bounded(b"k", Some(b"k2"), 10, 1, true)).unwrap();
        assert_eq!((items.len(), more), (1, false));
    }

    fn all_kv(s: &Store) -> Vec<(Vec<u8>, Versioned)> {
        let mut out = Vec::new();
        s.read(|v| {
            v.kv_for_each(|k, val| {
                out.push((k.to_vec(), val));
                Ok(())
            })
        })
        .unwrap();
        out
    }

    #[test]
    fn staged_state_replaces_kv_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_dir(dir.path()).unwrap();
        s.write(Durability::Immediate, |b| {
            b.kv_put(b"old", 1, b"o", None)?;
            b.meta_put("m", b"before")
        })
        .unwrap();
        // Staged over several commits, invisible until the swap.
        for i in 0..3u64 {
            s.stage(Durability::Lazy, |st| st.put(format!("new{i}").as_bytes(), 10 + i, b"n", None)).unwrap();
        }
        assert_eq!(all_kv(&s).len(), 1, "staged records are not visible before the swap");
        s.swap_in_staged(|b| b.meta_put("m", b"after")).unwrap();
        let kv = all_kv(&s);
        assert_eq!(kv.iter().map(|(k, _)| k.as_slice()).collect::<Vec<_>>(), [&b"new0"[..], b"new1", b"new2"]);
        assert_eq!(kv[2].1, Versioned { revision: 12, value: b"n".to_vec(), expires_at: None });
        assert_eq!(s.meta_get("m").unwrap().unwrap(), b"after");
        // Writes after the swap reach the new table, and a second install starts empty.
        s.write(Durability::Immediate, |b| b.kv_put(b"later", 20, b"l", None)).unwrap();
        assert_eq!(all_kv(&s).len(), 4);
        s.swap_in_staged(|_| Ok(())).unwrap();
        assert!(all_kv(&s).is_empty(), "swapping in an empty staging leaves an empty state");
    }

    #[test]
    fn an_abandoned_staging_is_dropped_and_never_seen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open_dir(dir.path()).unwrap();
            s.write(Durability::Immediate, |b| b.kv_put(b"kept", 1, b"k", None)).unwrap();
            s.stage(Durability::Immediate, |st| st.put(b"half", 2, b"h", None)).unwrap();
            // The process dies here, mid-install.
        }
        let s = Store::open_dir(dir.path()).unwrap();
        assert_eq!(all_kv(&s).len(), 1);
        s.staged_clear().unwrap();
        assert!(s.stage(Durability::Lazy, |st| st.is_empty()).unwrap(), "staging starts empty after a clear");
        s.swap_in_staged(|_| Ok(())).unwrap();
        assert!(all_kv(&s).is_empty());
    }

    /// A live scan leaves out expired keys, pages correctly around them (a page may end on an
    /// expired key), and steps over at most SCAN_EXPIRED_SKIPPED_MAX of them per page.
    #[test]
    fn live_scans_skip_expired_keys_and_still_page_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_dir(dir.path()).unwrap();
        let n = SCAN_EXPIRED_SKIPPED_MAX + 5;
        s.write(Durability::Immediate, |b| {
            b.kv_put(b"k/00000", 1, b"live-first", None)?;
            for i in 1..n {
                b.kv_put(format!("k/{i:05}").as_bytes(), 1, b"gone", Some(100))?;
            }
            b.kv_put(b"k/99999", 2, b"live-last", Some(200))?;
            b.kv_put(b"l/0", 3, b"other prefix", None)
        })
        .unwrap();
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        let mut pages = 0;
        loop {
            let (items, next) = s.read(|v| v.kv_scan_live(b"k/", after.as_deref(), 2, usize::MAX, true, 150)).unwrap();
            pages += 1;
            seen.extend(items.into_iter().map(|(k, v)| (k, v.value)));
            match next {
                Some(k) => after = Some(k),
                None => break,
            }
            assert!(pages < 10, "the scan must end");
        }
        assert_eq!(
            seen,
            vec![(b"k/00000".to_vec(), b"live-first".to_vec()), (b"k/99999".to_vec(), b"live-last".to_vec())]
        );
        assert!(pages >= 2, "one page steps over at most SCAN_EXPIRED_SKIPPED_MAX expired keys");
        // At 200 the last key is expired too.
        let (items, next) = s.read(|v| v.kv_scan_live(b"k/99999", None, 10, usize::MAX, false, 200)).unwrap();
        assert!(items.is_empty() && next.is_none());
    }

    #[test]
    fn expiries_are_stored_indexed_and_old_records_still_decode() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_dir(dir.path()).unwrap();
        s.write(Durability::Immediate, |b| {
            b.kv_put(b"a", 1, b"x", Some(300))?;
            b.kv_put(b"b", 2, b"y", Some(100))?;
            b.kv_put(b"c", 3, b"z", None)?;
            // Rewriting a key moves its index entry; deleting it drops it.
            b.kv_put(b"a", 4, b"x2", Some(50))?;
            b.kv_put(b"b", 5, b"y2", None)?;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            s.kv_get(b"a").unwrap(),
            Some(Versioned { revision: 4, value: b"x2".to_vec(), expires_at: Some(50) })
        );
        s.read(|v| {
            assert_eq!(v.kv_expired(49, 10)?, Vec::<Vec<u8>>::new());
            assert_eq!(v.kv_expired(50, 10)?, vec![b"a".to_vec()]);
            assert_eq!(v.kv_expired_count(u64::MAX)?, 1, "b lost its expiry, c never had one");
            assert_eq!(v.kv_expiry(b"a")?, Some(Some(50)));
            assert_eq!(v.kv_expiry(b"c")?, Some(None));
            assert_eq!(v.kv_expiry(b"zz")?, None);
            let (keys, _) = v.kv_scan_bounded(b"", None, 10, usize::MAX, false)?;
            assert_eq!(keys[0].1, Versioned { revision: 4, value: vec![], expires_at: Some(50) });
            Ok(())
        })
        .unwrap();
        s.write(Durability::Immediate, |b| b.kv_delete(b"a").map(|_| ())).unwrap();
        assert_eq!(s.read(|v| v.kv_expired(u64::MAX, 10)).unwrap(), Vec::<Vec<u8>>::new());
        // A record of the format before expiry: revision then value.
        let mut old = 9u64.to_le_bytes().to_vec();
        old.extend_from_slice(b"v");
        assert_eq!(
            Versioned::decode(b"k", &old).unwrap(),
            Versioned { revision: 9, value: b"v".to_vec(), expires_at: None }
        );
        let flagged = (9u64 | EXPIRY_FLAG).to_le_bytes();
        assert!(
            matches!(Versioned::decode(b"k", &flagged), Err(Error::Malformed { .. })),
            "a truncated expiry is refused"
        );
    }

    /// Every lease, the keys of leases 7 and 8, and the lease of key `a`.
    type LeaseState = (Vec<(u64, u64)>, Vec<Vec<u8>>, Vec<Vec<u8>>, Option<u64>);

    fn leases_of(s: &Store) -> LeaseState {
        s.read(|v| Ok((v.lease_list()?, v.lease_keys(7, 100)?, v.lease_keys(8, 100)?, v.kv_lease(b"a")?))).unwrap()
    }

    #[test]
    fn lease_attachments_follow_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_dir(dir.path()).unwrap();
        s.write(Durability::Immediate, |b| {
            b.lease_put(7, 5_000)?;
            b.lease_put(8, 9_000)?;
            for k in [&b"b"[..], b"a", b"c"] {
                b.kv_put(k, 1, b"v", None)?;
                b.lease_attach(k, 7)?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            leases_of(&s),
            (vec![(7, 5_000), (8, 9_000)], vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()], vec![], Some(7))
        );
        assert_eq!(s.read(|v| v.lease_key_count(7, 2)).unwrap(), 2, "counting stops at the limit");
        // Moving a key to another lease, deleting one, detaching one.
        s.write(Durability::Immediate, |b| {
            b.lease_attach(b"a", 8)?;
            b.kv_delete(b"b")?;
            assert_eq!(b.lease_detach(b"c")?, Some(7));
            assert_eq!(b.lease_detach(b"c")?, None);
            Ok(())
        })
        .unwrap();
        assert_eq!(leases_of(&s), (vec![(7, 5_000), (8, 9_000)], vec![], vec![b"a".to_vec()], Some(8)));
        // A staged state brings its own leases and replaces these in the swap.
        s.stage(Durability::Lazy, |st| {
            st.put(b"a", 3, b"w", None)?;
            st.lease_put(7, 2_000)?;
            st.lease_attach(b"a", 7)
        })
        .unwrap();
        assert_eq!(leases_of(&s).3, Some(8), "staged attachments are not visible before the swap");
        s.swap_in_staged(|_| Ok(())).unwrap();
        assert_eq!(leases_of(&s), (vec![(7, 2_000)], vec![b"a".to_vec()], vec![], Some(7)));
        s.write(Durability::Immediate, |b| {
            assert!(b.lease_delete(7)?);
            assert!(!b.lease_delete(7)?);
            b.kv_clear()
        })
        .unwrap();
        assert_eq!(leases_of(&s), (vec![], vec![], vec![], None));
    }

    #[test]
    fn history_pages_in_order_and_trims_in_bounded_steps() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_dir(dir.path()).unwrap();
        s.write(Durability::Immediate, |b| {
            for rev in 1..=5u64 {
                for seq in 0..2u32 {
                    b.history_put(rev, seq, format!("{rev}.{seq}").as_bytes())?;
                }
            }
            Ok(())
        })
        .unwrap();
        let (rows, more) = s.read(|v| v.history_range((2, 1), 4, 3, usize::MAX)).unwrap();
        let got: Vec<(u64, u32)> = rows.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(got, vec![(2, 1), (3, 0), (3, 1)]);
        assert!(more);
        let (rows, more) = s.read(|v| v.history_range((4, 0), 4, 10, usize::MAX)).unwrap();
        assert_eq!(rows.iter().map(|r| r.2.as_slice()).collect::<Vec<_>>(), [&b"4.0"[..], b"4.1"]);
        assert!(!more, "rows past `upto` are not counted as remaining");
        // The byte bound ends a page after the row that reaches it.
        let (rows, more) = s.read(|v| v.history_range((1, 0), 5, 100, 4)).unwrap();
        assert_eq!((rows.len(), more), (2, true));
        // Trimming below revision 4 removes at most 4 rows per call.
        assert_eq!(s.write(Durability::Immediate, |b| b.history_trim(4, 4)).unwrap(), 4);
        assert_eq!(s.read(|v| v.history_first()).unwrap(), Some(3));
        assert_eq!(s.write(Durability::Immediate, |b| b.history_trim(4, 4)).unwrap(), 2);
        assert_eq!(s.write(Durability::Immediate, |b| b.history_trim(4, 4)).unwrap(), 0);
        assert_eq!(s.read(|v| v.history_first()).unwrap(), Some(4));
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATA_FILE_NAME);
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("rampart.redb"), "{err}");
    }

    #[test]
    fn damaged_file_never_panics() {
        // Flip bytes all over a real store file; every open must either work
        // or fail with an error, never panic.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATA_FILE_NAME);
        {
            let s = Store::open(&path).unwrap();
            s.write(Durability::Immediate, |b| {
                for i in 0..200u64 {
                    b.kv_put(format!("key{i}").as_bytes(), i, &[7u8; 100], None)?;
                    b.log_put(i, &[9u8; 50])?;
                }
                Ok(())
            })
            .unwrap();
        }
        let pristine = std::fs::read(&path).unwrap();
        for step in 0..24usize {
            let mut bytes = pristine.clone();
            let stride = bytes.len() / 24;
            for b in bytes.iter_mut().skip(step * stride).take(stride.min(512)) {
                *b ^= 0xa5;
            }
            std::fs::write(&path, &bytes).unwrap();
            match Store::open(&path) {
                Ok(s) => {
                    let _ = s.read(|v| v.kv_for_each(|_, _| Ok(())));
                }
                Err(e) => assert!(matches!(e, Error::Corrupt { .. } | Error::Io { .. }), "{e}"),
            }
        }
    }
}

#[cfg(test)]
mod journal_tests {
    use super::*;

    /// What the disk holds at this instant, as a crash would leave it: the data file and the
    /// journal copied while the store is open (redb's cached, unflushed pages are not in it).
    fn crash_image(s: &Store, into: &Path) -> PathBuf {
        std::fs::create_dir_all(into).unwrap();
        let data = into.join(DATA_FILE_NAME);
        std::fs::copy(s.path(), &data).unwrap();
        write_sparse(&journal_path(&data), &std::fs::read(journal_path(s.path())).unwrap());
        data
    }

    /// Writes `bytes` as the disk holds a journal: its records, then a hole to its length.
    fn write_sparse(path: &Path, bytes: &[u8]) {
        // Whole zero pages at the end are the hole (compared page by page: fast in debug builds).
        let zero = [0u8; 4096];
        let used =
            bytes.chunks(4096).rposition(|c| c != &zero[..c.len()]).map_or(0, |i| ((i + 1) * 4096).min(bytes.len()));
        let out = std::fs::File::create(path).unwrap();
        std::io::Write::write_all(&mut &out, &bytes[..used]).unwrap();
        out.set_len(bytes.len() as u64).unwrap();
    }

    fn log_put(s: &Store, i: u64) {
        s.write(Durability::Immediate, |b| {
            b.log_put(i, format!("entry {i}").as_bytes())?;
            b.meta_put("m", &i.to_le_bytes())
        })
        .unwrap();
    }

    #[test]
    fn immediate_writes_survive_a_crash_through_the_journal_and_lazy_ones_wait_for_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_dir(&dir.path().join("a")).unwrap();
        for i in 1..=50 {
            log_put(&s, i);
        }
        s.write(Durability::Immediate, |b| {
            b.kv_put(b"k", 7, b"v", Some(99))?;
            b.register_put(b"r", b"reg")?;
            b.lease_put(3, 1000)?;
            b.lease_attach(b"k", 3)?;
            b.history_put(7, 0, b"ev")?;
            b.meta_delete("gone")
        })
        .unwrap();
        s.write(Durability::Lazy, |b| b.kv_put(b"lazy", 8, b"l", None)).unwrap();
        let image = crash_image(&s, &dir.path().join("crash1"));
        let r = Store::open(&image).unwrap();
        r.read(|v| {
            assert_eq!(v.log_range(1, 51)?.len(), 50, "every journaled entry is back");
            assert_eq!(v.meta_get("m")?, Some(50u64.to_le_bytes().to_vec()));
            assert_eq!(
                v.kv_get(b"k")?.map(|x| (x.revision, x.value, x.expires_at)),
                Some((7, b"v".to_vec(), Some(99)))
            );
            assert_eq!(v.kv_expired(100, 10)?, vec![b"k".to_vec()], "the expiry index came back with the key");
            assert_eq!(v.register_get(b"r")?, Some(b"reg".to_vec()));
            assert_eq!(v.kv_lease(b"k")?, Some(3));
            assert_eq!(v.history_range((7, 0), 8, 10, 1 << 20)?.0.len(), 1);
            assert_eq!(v.kv_get(b"lazy")?, None, "a lazy write is not journaled");
            Ok(())
        })
        .unwrap();
        drop(r);
        // Writes after the replay go on from the right sequence number.
        let r = Store::open(&image).unwrap();
        log_put(&r, 51);
        let again = crash_image(&r, &dir.path().join("crash2"));
        let r2 = Store::open(&again).unwrap();
        assert_eq!(r2.read(|v| v.log_range(1, 60)).unwrap().len(), 51);

        s.checkpoint().unwrap();
        let image = crash_image(&s, &dir.path().join("crash3"));
        let r = Store::open(&image).unwrap();
        assert!(r.kv_get(b"lazy").unwrap().is_some(), "a checkpoint makes earlier lazy writes durable");
        assert_eq!(r.read(|v| v.log_range(1, 60)).unwrap().len(), 50);
    }

    /// Everything a store holds that a journal record can change, for comparing two stores.
    fn dump(s: &Store) -> String {
        s.read(|v| {
            let mut out = format!("log {:?}\n", v.log_range(0, 1000)?);
            for k in ["m1", "m2", "m3"] {
                out += &format!("meta {k} {:?}\n", v.meta_get(k)?);
            }
            v.kv_for_each(|k, r| {
                out += &format!("kv {k:?} {r:?} lease {:?}\n", v.kv_lease(k)?);
                Ok(())
            })?;
            out += &format!("expired {:?}\n", v.kv_expired(u64::MAX, 100)?);
            out += &format!("leases {:?}\n", v.lease_list()?);
            for id in [1, 2] {
                out += &format!("lease {id} keys {:?}\n", v.lease_keys(id, 100)?);
            }
            v.register_for_each(|k, r| {
                out += &format!("reg {k:?} {r:?}\n");
                Ok(())
            })?;
            out += &format!("history {:?}\n", v.history_range((0, 0), u64::MAX, 100, 1 << 20)?);
            Ok(out)
        })
        .unwrap()
    }

    #[test]
    fn replaying_the_journal_rebuilds_every_kind_of_change() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_dir(&dir.path().join("a")).unwrap();
        let before = std::fs::read(s.path()).unwrap();
        let w = |f: &dyn Fn(&mut Batch<'_>) -> Result<()>| s.write(Durability::Immediate, |b| f(b)).unwrap();
        w(&|b| {
            for i in 1..=6 {
                b.log_put(i, format!("e{i}").as_bytes())?;
            }
            b.meta_put("m1", b"one")?;
            b.meta_put("m2", b"two")?;
            b.kv_put(b"a", 1, b"va", Some(50))?;
            b.kv_put(b"b", 2, b"vb", None)?;
            b.kv_put(b"c", 3, b"vc", Some(70))?;
            b.lease_put(1, 1000)?;
            b.lease_put(2, 2000)?;
            b.lease_attach(b"a", 1)?;
            b.lease_attach(b"b", 2)?;
            b.lease_attach(b"c", 2)?;
            b.register_put(b"r1", b"x")?;
            b.register_put(b"r2", b"y")?;
            for rev in 1..=5 {
                b.history_put(rev, 0, format!("ev{rev}").as_bytes())?;
            }
            Ok(())
        });
        w(&|b| {
            b.log_truncate_from(6)?;
            b.log_purge_upto(2)?;
            b.meta_delete("m2")?;
            b.meta_put("m3", b"three")?;
            b.kv_delete(b"b")?;
            b.lease_detach(b"c")?;
            b.lease_delete(2)?;
            b.register_delete(b"r1")?;
            b.history_trim(3, 10).map(|_| ())
        });
        w(&|b| {
            b.kv_put(b"c", 4, b"vc2", None)?;
            b.kv_clear()?;
            b.kv_put(b"d", 5, b"vd", Some(90))?;
            b.lease_put(1, 1500)?;
            b.lease_attach(b"d", 1)
        });
        let live = dump(&s);
        let image = crash_image(&s, &dir.path().join("crash"));
        std::fs::write(&image, &before).unwrap();
        let r = Store::open(&image).unwrap();
        assert_eq!(dump(&r), live, "the replayed store equals the live one");
        assert!(live.contains("kv [100]") && live.contains("reg [114, 50]") && !live.contains("m2 Some"), "{live}");
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_damage_before_an_intact_record_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_dir(&dir.path().join("a")).unwrap();
        // The data file as of the last checkpoint: non-durable commits may or may not reach the
        // disk before a crash, and here none did, so the journal alone holds the writes.
        let before = std::fs::read(s.path()).unwrap();
        for i in 1..=3 {
            log_put(&s, i);
        }
        let image = crash_image(&s, &dir.path().join("torn"));
        std::fs::write(&image, &before).unwrap();
        let j = journal_path(&image);
        let mut bytes = std::fs::read(&j).unwrap();
        let rec_len = |b: &[u8], at: usize| {
            journal::HEADER_BYTES + u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
        };
        let first = rec_len(&bytes, 0);
        let second = rec_len(&bytes, first);
        let third_at = first + second;
        // Tear the third record: its last bytes never reached the disk.
        let third = rec_len(&bytes, third_at);
        for b in &mut bytes[third_at + third - 12..third_at + third] {
            *b ^= 0x5a;
        }
        write_sparse(&j, &bytes);
        let r = Store::open(&image).unwrap();
        assert_eq!(r.read(|v| v.log_range(1, 10)).unwrap().len(), 2, "the torn write is gone, the rest is there");
        drop(r);

        let image = crash_image(&s, &dir.path().join("damaged"));
        std::fs::write(&image, &before).unwrap();
        let j = journal_path(&image);
        let mut bytes = std::fs::read(&j).unwrap();
        bytes[journal::HEADER_BYTES + 2] ^= 0xff; // inside the first record's payload
        write_sparse(&j, &bytes);
        let err = Store::open(&image).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn a_journal_that_reaches_its_bound_is_checkpointed_and_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_dir(&dir.path().join("a")).unwrap();
        let value = vec![7u8; 64 << 10];
        let n = (JOURNAL_CHECKPOINT_BYTES / value.len() as u64) + 8;
        for i in 0..n {
            s.write(Durability::Immediate, |b| b.log_put(i, &value)).unwrap();
        }
        let held = s.journal.lock().unwrap().journal.bytes();
        assert!(held < JOURNAL_CHECKPOINT_BYTES / 2, "the journal started over ({held} bytes)");
        let image = crash_image(&s, &dir.path().join("crash"));
        let r = Store::open(&image).unwrap();
        assert_eq!(r.read(|v| v.log_range(0, n + 1)).unwrap().len() as u64, n, "nothing lost across checkpoints");
    }

    #[test]
    fn a_malformed_record_is_reported_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_dir(&dir.path().join("a")).unwrap();
        let seq = s.journal.lock().unwrap().next_seq;
        // A record with a valid CRC whose payload is not a list of changes.
        s.journal.lock().unwrap().journal.append(seq, &[99, 1, 2]).unwrap();
        let image = crash_image(&s, &dir.path().join("crash"));
        let err = Store::open(&image).unwrap_err().to_string();
        assert!(err.contains("malformed") && err.contains("unknown change tag 99"), "{err}");
    }
}

#[cfg(test)]
mod journal_identity_tests {
    use super::*;

    #[test]
    fn a_journal_left_from_another_store_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a").join(DATA_FILE_NAME);
        let b = dir.path().join("b").join(DATA_FILE_NAME);
        let sa = Store::open_dir(a.parent().unwrap()).unwrap();
        sa.write(Durability::Immediate, |w| w.log_put(1, b"from a")).unwrap();
        // A fresh data file beside a's journal (the operator removed the data file only).
        std::fs::create_dir_all(b.parent().unwrap()).unwrap();
        std::fs::copy(journal_path(&a), journal_path(&b)).unwrap();
        let sb = Store::open(&b).unwrap();
        assert_eq!(sb.read(|v| v.log_range(0, 10)).unwrap().len(), 0, "another store's records are not replayed");
        sb.write(Durability::Immediate, |w| w.log_put(1, b"from b")).unwrap();
        assert_eq!(sb.stats().journal_appends, 1);
    }
}
