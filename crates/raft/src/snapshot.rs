//! Leader-mode snapshot files: their format, streaming records into and out of one, and the
//! directory that holds them.
//!
//! A snapshot is a file, never one value in the store: the writer and the reader hold one record
//! (plus a fixed I/O buffer) at a time, so memory does not grow with the data set. The format
//! (version [`SNAPSHOT_FORMAT_VERSION`]; version 1 was the whole state as one redb value):
//!
//! ```text
//! magic "RMPSNAP\0" | u32 format version | u32 meta length | meta (MessagePack SnapshotMeta)
//! u64 state-machine clock (Unix ms; version 3 on)
//! u64 next lease id | u32 lease count | { u64 lease id | u64 TTL ms }*   (version 4 on)
//! { u8 1 | u32 key length | key | u64 revision | u32 value length | value
//!  | u8 2 | u32 key length | key | u64 revision | u64 expires at (Unix ms) | u32 value length | value
//!  | u8 3 | u32 key length | key | u64 revision | u64 lease id | u8 has expiry | [u64 expires at]
//!    | u32 value length | value }*                                          (tag 3: version 4 on)
//! u8 0 | u64 record count | u32 CRC-32 (IEEE) of every byte before it
//! ```
//!
//! Version 2 files (no clock, no expiring records) are still read, at clock 0; version 2 and 3
//! files have no leases (next lease id 1). A leased record (tag 3) names a lease of the header,
//! and no lease has more than `KEYS_PER_LEASE_MAX` keys.
//!
//! Integers are little endian; the file ends right after the checksum. A snapshot arrives from a
//! peer, so every length is checked against its limit before anything is allocated for it, and
//! a file that is short, long, or fails its checksum is an error, never a panic.
//!
//! Files in the directory: `snapshot-<index>-<nonce>.rsnap` (published; the store's meta table
//! names the current one) and `*.tmp` (being built or received). A crash leaves at most some
//! `*.tmp` files and unnamed `.rsnap` files, which [`SnapshotDir::open`] and
//! [`SnapshotDir::remove_others`] delete.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use rampart_kv::lease::{LeaseId, KEYS_PER_LEASE_MAX, LEASES_MAX, LEASE_ID_FIRST};
use rampart_kv::limits::{KEY_BYTES_MAX_CEILING, VALUE_BYTES_MAX_CEILING};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::state_machine::APPEND_VALUE_BYTES_MAX;
use crate::types::SnapshotMeta;

/// First bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RMPSNAP\0";

/// The snapshot format this build writes and reads. Version 1 (before streamed snapshots) kept
/// the whole state as one redb value; a data dir holding one is migrated at start (see
/// `store::StateMachineStore::open`).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 4;

/// The oldest format version this build still reads (no clock, no expiring records).
pub const SNAPSHOT_FORMAT_VERSION_MIN: u32 = 2;

/// Largest encoded snapshot meta (last log id and membership) a header may announce.
pub const SNAPSHOT_META_BYTES_MAX: usize = 16 << 20;

/// Largest key a snapshot record may carry: the highest `--key-bytes-max` a node accepts.
pub const SNAPSHOT_KEY_BYTES_MAX: usize = KEY_BYTES_MAX_CEILING;

/// Largest value a snapshot record may carry: the largest value APPEND may build in leader mode.
pub const SNAPSHOT_VALUE_BYTES_MAX: usize =
    if APPEND_VALUE_BYTES_MAX > VALUE_BYTES_MAX_CEILING { APPEND_VALUE_BYTES_MAX } else { VALUE_BYTES_MAX_CEILING };

/// Buffer of every read and write of a snapshot file.
pub const SNAPSHOT_IO_BUFFER_BYTES: usize = 1 << 20;

/// Record bytes an install stages per store commit: what one commit holds, whatever the size of
/// the snapshot.
pub const SNAPSHOT_INSTALL_BATCH_BYTES: usize = 16 << 20;

/// Suffix of published snapshot files.
const SNAPSHOT_SUFFIX: &str = ".rsnap";
/// Suffix of snapshot files being built or received.
const TMP_SUFFIX: &str = ".tmp";

const TAG_RECORD: u8 = 1;
/// A record with an expiry (version 3 on).
const TAG_RECORD_EXPIRING: u8 = 2;
/// A record attached to a lease, with or without an expiry (version 4 on).
const TAG_RECORD_LEASED: u8 = 3;
const TAG_END: u8 = 0;

/// What is wrong with a snapshot file, or why it could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("not a rampart snapshot file (bad magic bytes)")]
    NotASnapshot,
    #[error(
        "snapshot format version {0} is not supported (this build reads versions {SNAPSHOT_FORMAT_VERSION_MIN} to \
         {SNAPSHOT_FORMAT_VERSION})"
    )]
    Version(u32),
    #[error("snapshot is truncated: it ends inside {0}")]
    Truncated(&'static str),
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
    #[error("snapshot {what} of {bytes} bytes exceeds {limit_name} ({limit} bytes)")]
    TooLarge { what: &'static str, bytes: usize, limit_name: &'static str, limit: usize },
    #[error("snapshot meta does not encode: {0}")]
    Meta(String),
    #[error(transparent)]
    Store(#[from] rampart_storage::Error),
}

fn check_len(what: &'static str, bytes: usize, limit_name: &'static str, limit: usize) -> Result<(), SnapshotError> {
    if bytes > limit {
        return Err(SnapshotError::TooLarge { what, bytes, limit_name, limit });
    }
    Ok(())
}

/// What a finished snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub bytes: u64,
}

/// Writes a snapshot record by record. Hold no more than the record being written; buffering is
/// the caller's `W` (a `BufWriter` of [`SNAPSHOT_IO_BUFFER_BYTES`] for files).
pub struct SnapshotWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    summary: Summary,
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the header, with the state-machine clock 0.
    pub fn new(out: W, meta: &SnapshotMeta) -> Result<Self, SnapshotError> {
        Self::with_clock(out, meta, 0)
    }

    /// Writes the header, with the state machine's clock (`CLOCK_META`) at the snapshot and no
    /// leases.
    pub fn with_clock(out: W, meta: &SnapshotMeta, clock_ms: u64) -> Result<Self, SnapshotError> {
        Self::with_state(out, meta, clock_ms, LEASE_ID_FIRST, &[])
    }

    /// Writes the header, with the state machine's clock, its next lease id and its leases as
    /// (id, TTL ms) (at most [`LEASES_MAX`]).
    pub fn with_state(
        out: W,
        meta: &SnapshotMeta,
        clock_ms: u64,
        next_lease_id: LeaseId,
        leases: &[(LeaseId, u64)],
    ) -> Result<Self, SnapshotError> {
        check_len("lease table", leases.len(), "LEASES_MAX", LEASES_MAX)?;
        let meta_b = rmp_serde::to_vec(meta).map_err(|e| SnapshotError::Meta(e.to_string()))?;
        check_len("meta", meta_b.len(), "SNAPSHOT_META_BYTES_MAX", SNAPSHOT_META_BYTES_MAX)?;
        let mut w = SnapshotWriter { out, crc: crc32fast::Hasher::new(), summary: Summary { records: 0, bytes: 0 } };
        w.put(&SNAPSHOT_MAGIC)?;
        w.put(&SNAPSHOT_FORMAT_VERSION.to_le_bytes())?;
        w.put(&(meta_b.len() as u32).to_le_bytes())?;
        w.put(&meta_b)?;
        w.put(&clock_ms.to_le_bytes())?;
        w.put(&next_lease_id.to_le_bytes())?;
        w.put(&(leases.len() as u32).to_le_bytes())?;
        for (id, ttl_ms) in leases {
            w.put(&id.to_le_bytes())?;
            w.put(&ttl_ms.to_le_bytes())?;
        }
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc.update(b);
        self.out.write_all(b)?;
        self.summary.bytes += b.len() as u64;
        Ok(())
    }

    pub fn record(&mut self, key: &[u8], revision: u64, value: &[u8]) -> Result<(), SnapshotError> {
        self.record_expiring(key, revision, value, None)
    }

    /// A record that expires at `expires_at` (Unix ms; `None`: never).
    pub fn record_expiring(
        &mut self,
        key: &[u8],
        revision: u64,
        value: &[u8],
        expires_at: Option<u64>,
    ) -> Result<(), SnapshotError> {
        self.record_full(key, revision, value, expires_at, None)
    }

    /// A record with its expiry and the lease it is attached to (one of the header's).
    pub fn record_full(
        &mut self,
        key: &[u8],
        revision: u64,
        value: &[u8],
        expires_at: Option<u64>,
        lease: Option<LeaseId>,
    ) -> Result<(), SnapshotError> {
        check_len("key", key.len(), "SNAPSHOT_KEY_BYTES_MAX", SNAPSHOT_KEY_BYTES_MAX)?;
        check_len("value", value.len(), "SNAPSHOT_VALUE_BYTES_MAX", SNAPSHOT_VALUE_BYTES_MAX)?;
        let tag = match (lease, expires_at) {
            (Some(_), _) => TAG_RECORD_LEASED,
            (None, Some(_)) => TAG_RECORD_EXPIRING,
            (None, None) => TAG_RECORD,
        };
        self.put(&[tag])?;
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(key)?;
        self.put(&revision.to_le_bytes())?;
        if let Some(id) = lease {
            self.put(&id.to_le_bytes())?;
            self.put(&[u8::from(expires_at.is_some())])?;
        }
        if let Some(at) = expires_at {
            self.put(&at.to_le_bytes())?;
        }
        self.put(&(value.len() as u32).to_le_bytes())?;
        self.put(value)?;
        self.summary.records += 1;
        Ok(())
    }

    /// Writes the trailer and flushes; gives back the output.
    pub fn finish(mut self) -> Result<(W, Summary), SnapshotError> {
        self.put(&[TAG_END])?;
        let records = self.summary.records;
        self.put(&records.to_le_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.summary.bytes += 4;
        self.out.flush()?;
        Ok((self.out, self.summary))
    }
}

/// Reads a snapshot record by record, into buffers the caller reuses. The checksum and record
/// count are verified when the end is reached: records handed out before that are not yet known
/// to be good, so a caller applies them only where they can be dropped (a staged table).
pub struct SnapshotReader<R: Read> {
    inp: R,
    crc: crc32fast::Hasher,
    meta: SnapshotMeta,
    summary: Summary,
    finished: bool,
    version: u32,
    clock_ms: u64,
    /// The expiry of the record [`SnapshotReader::next_record`] handed out last.
    expires_at: Option<u64>,
    /// The lease of the record handed out last.
    lease: Option<LeaseId>,
    /// The next lease id and the leases of the header (version 4 on), with the keys seen on
    /// each so far.
    next_lease_id: LeaseId,
    leases: Vec<(LeaseId, u64)>,
    lease_keys: std::collections::HashMap<LeaseId, usize>,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the header.
    pub fn open(inp: R) -> Result<Self, SnapshotError> {
        let mut r = SnapshotReader {
            inp,
            crc: crc32fast::Hasher::new(),
            meta: SnapshotMeta::default(),
            summary: Summary { records: 0, bytes: 0 },
            finished: false,
            version: 0,
            clock_ms: 0,
            expires_at: None,
            lease: None,
            next_lease_id: LEASE_ID_FIRST,
            leases: Vec::new(),
            lease_keys: std::collections::HashMap::new(),
        };
        let mut magic = [0u8; 8];
        r.take(&mut magic, "the header")?;
        if magic != SNAPSHOT_MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let version = r.u32("the header")?;
        if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(SnapshotError::Version(version));
        }
        r.version = version;
        let meta_len = r.u32("the header")? as usize;
        check_len("meta", meta_len, "SNAPSHOT_META_BYTES_MAX", SNAPSHOT_META_BYTES_MAX)?;
        let mut meta_b = vec![0u8; meta_len];
        r.take(&mut meta_b, "the header")?;
        r.meta = rmp_serde::from_slice(&meta_b)
            .map_err(|e| SnapshotError::Corrupt(format!("the header's meta does not decode: {e}")))?;
        if version >= 3 {
            r.clock_ms = r.u64("the header")?;
        }
        if version >= 4 {
            r.next_lease_id = r.u64("the header")?;
            let count = r.u32("the header")? as usize;
            check_len("lease table", count, "LEASES_MAX", LEASES_MAX)?;
            for _ in 0..count {
                let id = r.u64("the lease table")?;
                let ttl_ms = r.u64("the lease table")?;
                if id < LEASE_ID_FIRST || id >= r.next_lease_id || r.lease_keys.insert(id, 0).is_some() {
                    return Err(SnapshotError::Corrupt(format!(
                        "lease {id} in the header is 0, repeated, or not below the next lease id {}",
                        r.next_lease_id
                    )));
                }
                r.leases.push((id, ttl_ms));
            }
        }
        Ok(r)
    }

    /// The next lease id of the state (1 in files before version 4).
    pub fn next_lease_id(&self) -> LeaseId {
        self.next_lease_id
    }

    /// The leases of the state as (id, TTL ms) (none in files before version 4).
    pub fn leases(&self) -> &[(LeaseId, u64)] {
        &self.leases
    }

    /// The lease of the record [`Self::next_record`] returned last (`None`: not attached).
    pub fn lease(&self) -> Option<LeaseId> {
        self.lease
    }

    /// The state machine's clock when the snapshot was taken (0 in a version 2 file).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The expiry of the record [`Self::next_record`] returned last (`None`: never expires).
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.summary.bytes
    }

    fn take(&mut self, buf: &mut [u8], inside: &'static str) -> Result<(), SnapshotError> {
        self.inp.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => SnapshotError::Truncated(inside),
            _ => SnapshotError::Io(e),
        })?;
        self.crc.update(buf);
        self.summary.bytes += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self, inside: &'static str) -> Result<u32, SnapshotError> {
        let mut b = [0u8; 4];
        self.take(&mut b, inside)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, inside: &'static str) -> Result<u64, SnapshotError> {
        let mut b = [0u8; 8];
        self.take(&mut b, inside)?;
        Ok(u64::from_le_bytes(b))
    }

    fn take_vec(&mut self, buf: &mut Vec<u8>, len: usize, inside: &'static str) -> Result<(), SnapshotError> {
        buf.clear();
        buf.resize(len, 0);
        self.take(buf, inside)
    }

    /// The next record's revision, with its key and value in `key` and `value`; `None` at the
    /// end, once the trailer is verified.
    pub fn next_record(&mut self, key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<Option<u64>, SnapshotError> {
        if self.finished {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.take(&mut tag, "a record tag")?;
        match tag[0] {
            t @ (TAG_RECORD | TAG_RECORD_EXPIRING | TAG_RECORD_LEASED) => {
                let at = self.summary.bytes - 1;
                if (t == TAG_RECORD_EXPIRING && self.version < 3) || (t == TAG_RECORD_LEASED && self.version < 4) {
                    let what = if t == TAG_RECORD_LEASED { "a leased" } else { "an expiring" };
                    return Err(SnapshotError::Corrupt(format!(
                        "{what} record in a version {} file at byte {at}",
                        self.version
                    )));
                }
                let key_len = self.u32("a record")? as usize;
                check_len("key", key_len, "SNAPSHOT_KEY_BYTES_MAX", SNAPSHOT_KEY_BYTES_MAX)?;
                self.take_vec(key, key_len, "a record's key")?;
                let revision = self.u64("a record")?;
                let expiring = match t {
                    TAG_RECORD_EXPIRING => true,
                    TAG_RECORD_LEASED => {
                        let id = self.u64("a record")?;
                        let Some(n) = self.lease_keys.get_mut(&id) else {
                            return Err(SnapshotError::Corrupt(format!(
                                "the record at byte {at} names lease {id}, which the header does not hold"
                            )));
                        };
                        *n += 1;
                        if *n > KEYS_PER_LEASE_MAX {
                            return Err(SnapshotError::Corrupt(format!(
                                "lease {id} has more than {KEYS_PER_LEASE_MAX} keys (KEYS_PER_LEASE_MAX)"
                            )));
                        }
                        self.lease = Some(id);
                        let mut flag = [0u8; 1];
                        self.take(&mut flag, "a record")?;
                        match flag[0] {
                            0 => false,
                            1 => true,
                            other => {
                                return Err(SnapshotError::Corrupt(format!(
                                    "the record at byte {at} has expiry flag {other} (0 or 1)"
                                )))
                            }
                        }
                    }
                    _ => false,
                };
                if t != TAG_RECORD_LEASED {
                    self.lease = None;
                }
                self.expires_at = if expiring { Some(self.u64("a record")?) } else { None };
                let value_len = self.u32("a record")? as usize;
                check_len("value", value_len, "SNAPSHOT_VALUE_BYTES_MAX", SNAPSHOT_VALUE_BYTES_MAX)?;
                self.take_vec(value, value_len, "a record's value")?;
                self.summary.records += 1;
                Ok(Some(revision))
            }
            TAG_END => {
                let count = self.u64("the trailer")?;
                let computed = self.crc.clone().finalize();
                let mut stored = [0u8; 4];
                self.inp.read_exact(&mut stored).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => SnapshotError::Truncated("the trailer"),
                    _ => SnapshotError::Io(e),
                })?;
                self.summary.bytes += 4;
                let stored = u32::from_le_bytes(stored);
                if stored != computed {
                    return Err(SnapshotError::Corrupt(format!(
                        "checksum mismatch: the file says {stored:08x}, its bytes give {computed:08x}"
                    )));
                }
                if count != self.summary.records {
                    return Err(SnapshotError::Corrupt(format!(
                        "the trailer counts {count} records, the file holds {}",
                        self.summary.records
                    )));
                }
                let mut extra = [0u8; 1];
                if self.inp.read(&mut extra)? != 0 {
                    return Err(SnapshotError::Corrupt("bytes follow the trailer".into()));
                }
                self.finished = true;
                Ok(None)
            }
            other => {
                Err(SnapshotError::Corrupt(format!("unknown record tag {other} at byte {}", self.summary.bytes - 1)))
            }
        }
    }

    /// What was read, once [`Self::next_record`] has returned `None`.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    pub fn into_inner(self) -> R {
        self.inp
    }
}

/// Reads a whole snapshot file, checking every record, the checksum and the end; returns its
/// meta. Memory: one record and the read buffer.
pub fn verify_file(path: &Path) -> Result<(SnapshotMeta, Summary), SnapshotError> {
    let f = File::open(path)?;
    let mut r = SnapshotReader::open(BufReader::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, f))?;
    let (mut k, mut v) = (Vec::new(), Vec::new());
    while r.next_record(&mut k, &mut v)?.is_some() {}
    Ok((r.meta().clone(), r.summary()))
}

/// Reads only the header of a snapshot file.
pub fn read_header(path: &Path) -> Result<SnapshotMeta, SnapshotError> {
    let f = File::open(path)?;
    Ok(SnapshotReader::open(BufReader::with_capacity(64 << 10, f))?.meta().clone())
}

/// Removes a file when dropped, unless disarmed: a snapshot file being received that nobody
/// installs (a newer stream replaced it, or the install was refused) does not outlive its use.
#[derive(Debug)]
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// openraft's `SnapshotData`: an open snapshot file. Reading it is how a leader ships a
/// snapshot in chunks; a follower receives chunks into one (`incoming`).
#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
    incoming: bool,
    cleanup: RemoveOnDrop,
}

impl SnapshotFile {
    /// A published (or any other) snapshot file, opened for reading.
    pub fn open_read(path: &Path) -> io::Result<SnapshotFile> {
        let f = File::open(path)?;
        Ok(SnapshotFile {
            file: tokio::fs::File::from_std(f),
            path: path.to_path_buf(),
            incoming: false,
            cleanup: RemoveOnDrop(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for a file this node is receiving: it is deleted if dropped without being installed.
    pub fn is_incoming(&self) -> bool {
        self.incoming
    }

    /// The file as a blocking handle, its path, and whether it is an incoming file; an incoming
    /// file is no longer deleted on drop (the caller now owns it).
    pub async fn into_std(mut self) -> (File, PathBuf, bool) {
        self.cleanup.0 = None;
        let SnapshotFile { file, path, incoming, .. } = self;
        (file.into_std().await, path, incoming)
    }

    /// Flushes and fsyncs what was written.
    pub async fn sync_all(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.file.sync_all().await
    }

    /// Cuts the file at `len` bytes and moves to its end (a resent chunk overwrites its tail).
    pub async fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        self.file.flush().await?;
        self.file.set_len(len).await?;
        self.file.seek(io::SeekFrom::Start(len)).await?;
        Ok(())
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().file).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.get_mut().file).start_seek(position)
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.get_mut().file).poll_complete(cx)
    }
}

/// The directory of a node's snapshot files (`<data dir>/snapshots`).
#[derive(Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
    /// Serializes publishing (rename, pointer commit, cleanup) between a build and an install.
    pub(crate) publish: parking_lot::Mutex<()>,
    seq: AtomicU64,
}

impl SnapshotDir {
    /// Opens (creating) the directory and deletes what a crash during a build or a receive left
    /// (`*.tmp` files).
    pub fn open(dir: &Path) -> io::Result<SnapshotDir> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(TMP_SUFFIX) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(SnapshotDir { dir: dir.to_path_buf(), publish: parking_lot::Mutex::new(()), seq: AtomicU64::new(0) })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn nonce(&self) -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        nanos ^ (u64::from(std::process::id()) << 40) ^ self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh path for a file being written (`what` names its purpose).
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{what}-{:016x}{TMP_SUFFIX}", self.nonce()))
    }

    /// A fresh name for a published snapshot up to log index `index`.
    pub fn final_name(&self, index: u64) -> String {
        format!("snapshot-{index:020}-{:016x}{SNAPSHOT_SUFFIX}", self.nonce())
    }

    /// The path of the published snapshot `name`; a name that is not one of ours (it comes from
    /// the data file) is an error.
    pub fn published(&self, name: &str) -> Result<PathBuf, SnapshotError> {
        let ok = name.starts_with("snapshot-")
            && name.ends_with(SNAPSHOT_SUFFIX)
            && !name.contains(['/', '\\'])
            && !name.contains("..");
        if !ok {
            return Err(SnapshotError::Corrupt(format!("the store names snapshot file {name:?}, which is not one")));
        }
        Ok(self.dir.join(name))
    }

    /// A new, empty file to receive a snapshot into; deleted if dropped before it is installed.
    pub fn new_incoming(&self) -> io::Result<SnapshotFile> {
        let path = self.tmp_path("incoming");
        let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        Ok(SnapshotFile {
            file: tokio::fs::File::from_std(f),
            path: path.clone(),
            incoming: true,
            cleanup: RemoveOnDrop(Some(path)),
        })
    }

    /// Moves a finished, fsynced file into place under `name` and makes the rename durable.
    pub fn publish_file(&self, from: &Path, name: &str) -> io::Result<PathBuf> {
        let to = self.dir.join(name);
        std::fs::rename(from, &to)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(to)
    }

    /// Deletes every published snapshot but `keep` (all of them for `None`).
    pub fn remove_others(&self, keep: Option<&str>) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(SNAPSHOT_SUFFIX) && Some(name.as_ref()) != keep {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Names of the published snapshot files, for checks.
    pub fn list_published(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(SNAPSHOT_SUFFIX) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Streams the records of `r` into `store`'s staged key-value table, committing (lazily) each
/// time about `batch_bytes` of records are staged, until the end of the snapshot is reached and
/// verified. `on_commit` sees the bytes read from the snapshot at each commit. On an error the
/// open batch is dropped uncommitted; batches committed before it stay staged until the caller
/// clears them (`Store::staged_clear`).
pub fn stage_records<R: Read>(
    store: &rampart_storage::Store,
    r: &mut SnapshotReader<R>,
    batch_bytes: usize,
    mut on_commit: impl FnMut(u64),
) -> Result<Summary, SnapshotError> {
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut failure: Option<SnapshotError> = None;
    let mut leases_staged = false;
    loop {
        let more = store.stage(rampart_storage::Durability::Lazy, |st| {
            let mut staged = 0usize;
            if !leases_staged {
                // The header's leases (at most LEASES_MAX) go in the first commit.
                for &(id, ttl_ms) in r.leases() {
                    st.lease_put(id, ttl_ms)?;
                }
            }
            loop {
                match r.next_record(&mut key, &mut value) {
                    Ok(Some(rev)) => {
                        st.put(&key, rev, &value, r.expires_at())?;
                        if let Some(id) = r.lease() {
                            st.lease_attach(&key, id)?;
                        }
                        staged += key.len() + value.len() + 8;
                        if staged >= batch_bytes {
                            return Ok(true);
                        }
                    }
                    Ok(None) => return Ok(false),
                    Err(e) => {
                        let reason = e.to_string();
                        failure = Some(e);
                        // Aborts this transaction; the real error is `failure`.
                        return Err(rampart_storage::Error::Malformed { what: "snapshot".into(), reason });
                    }
                }
            }
        });
        match more {
            Ok(more) => {
                leases_staged = true;
                on_commit(r.bytes_read());
                if !more {
                    return Ok(r.summary());
                }
            }
            Err(e) => return Err(failure.take().unwrap_or(SnapshotError::Store(e))),
        }
    }
}

/// A new file at `path` with a write buffer of [`SNAPSHOT_IO_BUFFER_BYTES`].
pub fn create_buffered(path: &Path) -> io::Result<BufWriter<File>> {
    let f = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    Ok(BufWriter::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), index)),
            last_membership: Default::default(),
            snapshot_id: format!("3-{index}-0"),
        }
    }

    fn sample(records: u64) -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), &meta(9)).unwrap();
        for i in 0..records {
            w.record(format!("key/{i}").as_bytes(), i, &vec![i as u8; (i % 50) as usize]).unwrap();
        }
        w.finish().unwrap().0
    }

    type Record = (Vec<u8>, u64, Vec<u8>);

    fn read_all(bytes: &[u8]) -> Result<Vec<Record>, SnapshotError> {
        let mut r = SnapshotReader::open(bytes)?;
        let (mut k, mut v) = (Vec::new(), Vec::new());
        let mut out = Vec::new();
        while let Some(rev) = r.next_record(&mut k, &mut v)? {
            out.push((k.clone(), rev, v.clone()));
        }
        Ok(out)
    }

    #[test]
    fn records_round_trip_with_their_meta() {
        let bytes = sample(300);
        let r = SnapshotReader::open(&bytes[..]).unwrap();
        assert_eq!(r.meta(), &meta(9));
        let all = read_all(&bytes).unwrap();
        assert_eq!(all.len(), 300);
        assert_eq!(all[77], (b"key/77".to_vec(), 77, vec![77u8; 27]));
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let bytes = sample(20);
        for len in 0..bytes.len() {
            assert!(read_all(&bytes[..len]).is_err(), "a snapshot cut at {len} of {} bytes was accepted", bytes.len());
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(read_all(&bad).is_err(), "a flipped byte at {i} was accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(read_all(&longer), Err(SnapshotError::Corrupt(m)) if m.contains("follow")));
    }

    /// The finding: records lost their expiry in a snapshot (a follower installing one kept
    /// expired keys forever), and the state machine's clock was not carried.
    #[test]
    fn expiries_and_the_clock_round_trip() {
        let mut w = SnapshotWriter::with_clock(Vec::new(), &meta(4), 1_700_000_000_123).unwrap();
        w.record_expiring(b"a", 1, b"x", Some(1_700_000_005_000)).unwrap();
        w.record_expiring(b"b", 2, b"y", None).unwrap();
        let bytes = w.finish().unwrap().0;
        let mut r = SnapshotReader::open(&bytes[..]).unwrap();
        assert_eq!(r.clock_ms(), 1_700_000_000_123);
        let (mut k, mut v) = (Vec::new(), Vec::new());
        assert_eq!(r.next_record(&mut k, &mut v).unwrap(), Some(1));
        assert_eq!((k.as_slice(), v.as_slice(), r.expires_at()), (&b"a"[..], &b"x"[..], Some(1_700_000_005_000)));
        assert_eq!(r.next_record(&mut k, &mut v).unwrap(), Some(2));
        assert_eq!((k.as_slice(), r.expires_at()), (&b"b"[..], None));
        assert_eq!(r.next_record(&mut k, &mut v).unwrap(), None);
        for len in 0..bytes.len() {
            assert!(read_all(&bytes[..len]).is_err(), "cut at {len} accepted");
        }
    }

    /// A version 2 file (no clock, no expiring records) is still read, at clock 0; an expiring
    /// record in one is refused.
    #[test]
    fn version_2_files_are_still_read() {
        let meta_b = rmp_serde::to_vec(&meta(2)).unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(&SNAPSHOT_MAGIC);
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(&(meta_b.len() as u32).to_le_bytes());
        body.extend_from_slice(&meta_b);
        let record = |tag: u8| {
            let mut r = vec![tag];
            r.extend_from_slice(&1u32.to_le_bytes());
            r.push(b'k');
            r.extend_from_slice(&7u64.to_le_bytes());
            if tag == TAG_RECORD_EXPIRING {
                r.extend_from_slice(&99u64.to_le_bytes());
            }
            r.extend_from_slice(&1u32.to_le_bytes());
            r.push(b'v');
            r
        };
        let file = |rec: Vec<u8>| {
            let mut b = body.clone();
            b.extend_from_slice(&rec);
            b.push(TAG_END);
            b.extend_from_slice(&1u64.to_le_bytes());
            let crc = crc32fast::hash(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            b
        };
        let v2 = file(record(TAG_RECORD));
        let r = SnapshotReader::open(&v2[..]).unwrap();
        assert_eq!(r.clock_ms(), 0);
        assert_eq!(read_all(&v2).unwrap(), vec![(b"k".to_vec(), 7, b"v".to_vec())]);
        let e = read_all(&file(record(TAG_RECORD_EXPIRING))).unwrap_err();
        assert!(e.to_string().contains("an expiring record in a version 2 file"), "{e}");
    }

    /// Leases and their attachments round trip; a leased record naming a lease the header does
    /// not hold, and a file claiming more than LEASES_MAX leases, are refused.
    #[test]
    fn leases_round_trip_and_bad_lease_tables_are_refused() {
        let leases = [(3u64, 5_000u64), (9, 60_000)];
        let mut w = SnapshotWriter::with_state(Vec::new(), &meta(4), 77, 10, &leases).unwrap();
        w.record_full(b"a", 1, b"x", None, Some(3)).unwrap();
        w.record_full(b"b", 2, b"y", Some(1_000), Some(9)).unwrap();
        w.record_full(b"c", 3, b"z", None, None).unwrap();
        let bytes = w.finish().unwrap().0;
        let mut r = SnapshotReader::open(&bytes[..]).unwrap();
        assert_eq!((r.clock_ms(), r.next_lease_id(), r.leases()), (77, 10, &leases[..]));
        let (mut k, mut v) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        while let Some(rev) = r.next_record(&mut k, &mut v).unwrap() {
            seen.push((k.clone(), rev, r.expires_at(), r.lease()));
        }
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), 1, None, Some(3)),
                (b"b".to_vec(), 2, Some(1_000), Some(9)),
                (b"c".to_vec(), 3, None, None)
            ]
        );
        for len in 0..bytes.len() {
            assert!(read_all(&bytes[..len]).is_err(), "cut at {len} accepted");
        }
        let mut w = SnapshotWriter::with_state(Vec::new(), &meta(4), 0, 10, &leases).unwrap();
        w.record_full(b"a", 1, b"x", None, Some(4)).unwrap();
        let e = read_all(&w.finish().unwrap().0).unwrap_err();
        assert!(e.to_string().contains("names lease 4"), "{e}");
        let e = SnapshotWriter::with_state(Vec::new(), &meta(4), 0, 3, &[(3, 1)]).map(|w| w.finish().unwrap().0);
        let e = SnapshotReader::open(&e.unwrap()[..]).err().unwrap();
        assert!(e.to_string().contains("not below the next lease id"), "{e}");
        let too_many = vec![(1u64, 1u64); LEASES_MAX + 1];
        assert!(matches!(
            SnapshotWriter::with_state(Vec::new(), &meta(4), 0, 1, &too_many),
            Err(SnapshotError::TooLarge { limit_name: "LEASES_MAX", .. })
        ));
    }

    /// A version 3 file (clock, expiring records, no leases) is still read; a leased record in
    /// one is refused.
    #[test]
    fn version_3_files_are_still_read() {
        let meta_b = rmp_serde::to_vec(&meta(3)).unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(&SNAPSHOT_MAGIC);
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(&(meta_b.len() as u32).to_le_bytes());
        body.extend_from_slice(&meta_b);
        body.extend_from_slice(&55u64.to_le_bytes());
        let file = |rec: &[u8]| {
            let mut b = body.clone();
            b.extend_from_slice(rec);
            b.push(TAG_END);
            b.extend_from_slice(&1u64.to_le_bytes());
            let crc = crc32fast::hash(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            b
        };
        let mut rec = vec![TAG_RECORD_EXPIRING];
        rec.extend_from_slice(&1u32.to_le_bytes());
        rec.push(b'k');
        rec.extend_from_slice(&7u64.to_le_bytes());
        rec.extend_from_slice(&99u64.to_le_bytes());
        rec.extend_from_slice(&1u32.to_le_bytes());
        rec.push(b'v');
        let v3 = file(&rec);
        let mut r = SnapshotReader::open(&v3[..]).unwrap();
        assert_eq!((r.clock_ms(), r.next_lease_id(), r.leases()), (55, LEASE_ID_FIRST, &[][..]));
        let (mut k, mut v) = (Vec::new(), Vec::new());
        assert_eq!(r.next_record(&mut k, &mut v).unwrap(), Some(7));
        assert_eq!((r.expires_at(), r.lease()), (Some(99), None));
        assert_eq!(r.next_record(&mut k, &mut v).unwrap(), None);
        rec[0] = TAG_RECORD_LEASED;
        let e = read_all(&file(&rec)).unwrap_err();
        assert!(e.to_string().contains("a leased record in a version 3 file"), "{e}");
    }

    #[test]
    fn a_huge_claimed_length_is_refused_before_allocating() {
        let mut w = SnapshotWriter::new(Vec::new(), &meta(1)).unwrap();
        w.record(b"k", 1, b"v").unwrap();
        let mut bytes = w.finish().unwrap().0;
        // The first record's key length sits right after the header and the tag.
        let header = 8 + 4 + 4 + rmp_serde::to_vec(&meta(1)).unwrap().len() + 8 + 8 + 4;
        bytes[header + 1..header + 5].copy_from_slice(&u32::MAX.to_le_bytes());
        match read_all(&bytes) {
            Err(SnapshotError::TooLarge { limit_name, .. }) => assert_eq!(limit_name, "SNAPSHOT_KEY_BYTES_MAX"),
            other => panic!("{other:?}"),
        }
        let mut v1 = bytes.clone();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(SnapshotReader::open(&v1[..]), Err(SnapshotError::Version(1))));
        assert!(matches!(SnapshotReader::open(&b"not a snapshot at all"[..]), Err(SnapshotError::NotASnapshot)));
    }

    /// The writer streams: at every write it receives, the bytes it was handed exceed the bytes
    /// it passed on by at most one record (it never collects records).
    #[test]
    fn the_writer_holds_at_most_one_record() {
        use std::cell::Cell;
        use std::rc::Rc;
        struct Sink {
            handed: Rc<Cell<u64>>,
            written: u64,
            max_gap: Rc<Cell<u64>>,
        }
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.written += b.len() as u64;
                let gap = self.handed.get().saturating_sub(self.written);
                self.max_gap.set(self.max_gap.get().max(gap));
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let handed = Rc::new(Cell::new(0u64));
        let max_gap = Rc::new(Cell::new(0u64));
        let sink = Sink { handed: handed.clone(), written: 0, max_gap: max_gap.clone() };
        let mut w = SnapshotWriter::new(sink, &meta(1)).unwrap();
        let header = handed_len_after_header(&w);
        handed.set(header);
        let value = vec![7u8; 4000];
        for i in 0..2_000u32 {
            let key = format!("k{i:06}");
            // Per record: tag, two lengths, the revision, the key and the value.
            handed.set(handed.get() + 1 + 4 + 8 + 4 + key.len() as u64 + value.len() as u64);
            w.record(key.as_bytes(), u64::from(i), &value).unwrap();
        }
        let (_, summary) = w.finish().unwrap();
        assert_eq!(summary.records, 2_000);
        let one_record = (1 + 4 + 8 + 4 + 7 + 4000) as u64;
        assert!(max_gap.get() <= one_record, "the writer held {} bytes, more than one record", max_gap.get());
    }

    fn handed_len_after_header<W: Write>(w: &SnapshotWriter<W>) -> u64 {
        w.summary.bytes
    }
}
