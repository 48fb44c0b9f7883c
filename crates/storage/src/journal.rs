//! The journal: an append-only file in front of the redb file.
//!
//! A durable redb commit rewrites the pages of every B-tree it touched, from leaf to root, and
//! fsyncs them: about a dozen scattered pages for one small log entry, measured here at 630–720
//! µs per commit against 120–130 µs for one small append to a preallocated file
//! (`docs/design.md`, "Where a put's time goes"). So an immediate write is made durable by
//! appending what it changed to this file and fsyncing that alone; its redb commit is
//! non-durable. Every so often a *checkpoint* (one durable redb commit) takes everything into
//! the redb file, and the journal starts over.
//!
//! Record: `len: u32 LE | crc32: u32 LE | seq: u64 LE | payload (len bytes)`, the CRC over the
//! store's id, the sequence number and the payload. Sequence numbers rise by one per record and never restart;
//! each journaled redb commit stores its own in the meta table, so after a crash the records
//! the redb file already holds are known and skipped. A torn last record (a crash mid-append)
//! ends the journal; an intact record after damage is reported as corruption.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The journal is checkpointed into the redb file once it holds this many bytes: a bound on
/// its size, on what a start replays, and on the dirty pages one checkpoint's fsync writes.
pub const JOURNAL_CHECKPOINT_BYTES: u64 = 8 << 20;
/// The file is kept at least this long (sparse), so an append does not grow it and its fsync
/// carries no size change.
const PREALLOC_BYTES: u64 = 64 << 20;
/// Bytes of a record before its payload.
pub(crate) const HEADER_BYTES: usize = 16;
/// Largest payload a record may hold (a write over it fails before anything is committed);
/// a larger length read back is damage, not a record.
pub const JOURNAL_RECORD_BYTES_MAX: usize = 256 << 20;

pub(crate) struct Journal {
    file: File,
    /// The store's id, covered by every record's CRC.
    id: u64,
    path: PathBuf,
    /// Where the next record goes.
    end: u64,
    /// Set when an append failed: the file's state is then unknown, so no later write may
    /// pretend to be durable.
    pub(crate) poisoned: Option<String>,
}

/// What opening a journal found.
pub(crate) struct Found {
    /// Every intact record, in order: (sequence number, payload).
    pub(crate) records: Vec<(u64, Vec<u8>)>,
}

fn crc_of(id: u64, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&id.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn header(b: &[u8]) -> (usize, u32, u64) {
    (
        u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")) as usize,
        u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
        u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
    )
}

impl Journal {
    /// Opens (or creates) the journal at `path` of the store whose id is `id` (the CRCs cover
    /// it, so another store's journal left beside this data file reads as no records), and
    /// reads its records: the intact ones in sequence from the start. Where they end, nothing
    /// intact may follow: every append is fsynced before the next is written, so only the
    /// last one can be torn, and an intact record further on means damage in the middle (a
    /// media error), which this refuses rather than drop durable writes.
    pub(crate) fn open(path: &Path, id: u64) -> Result<(Journal, Found), String> {
        let err = |e: std::io::Error| format!("journal {}: {e}", path.display());
        let created = !path.exists();
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(err)?;
        if created {
            if let Some(dir) = path.parent() {
                File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
            }
        }
        let len = file.metadata().map_err(err)?.len();
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut records = Vec::new();
        let mut at = 0u64;
        let mut last_seq: Option<u64> = None;
        loop {
            let mut head = [0u8; HEADER_BYTES];
            if at + HEADER_BYTES as u64 > len || reader.read_exact(&mut head).is_err() {
                break;
            }
            let (n, crc, seq) = header(&head);
            let end = at + (HEADER_BYTES + n) as u64;
            if n == 0 || n > JOURNAL_RECORD_BYTES_MAX || end > len {
                break;
            }
            let mut payload = vec![0u8; n];
            if reader.read_exact(&mut payload).is_err()
                || crc_of(id, seq, &payload) != crc
                || last_seq.is_some_and(|l| seq != l + 1)
            {
                break;
            }
            last_seq = Some(seq);
            records.push((seq, payload));
            at = end;
        }
        drop(reader);
        if let Some(found) = Self::intact_after(&file, at, len, id, last_seq).map_err(err)? {
            return Err(format!(
                "journal {} is damaged at byte {at}: an intact record follows at byte {found}; this node refuses to \
                 start (remove the data dir and re-add the node)",
                path.display()
            ));
        }
        let journal = Journal { file, id, path: path.to_path_buf(), end: at, poisoned: None };
        if len < PREALLOC_BYTES {
            journal.file.set_len(PREALLOC_BYTES).map_err(err)?;
            journal.file.sync_all().map_err(err)?;
        }
        Ok((journal, Found { records }))
    }

    /// The offset of an intact record of this store after byte `from` whose sequence number
    /// is above `last` (any, when no record was read), if there is one. Only the parts of the
    /// file that hold data are read: the rest is a hole (the file is kept long by `set_len`,
    /// and a checkpoint's restart truncates it first), found with `SEEK_DATA`/`SEEK_HOLE`.
    fn intact_after(file: &File, from: u64, len: u64, id: u64, last: Option<u64>) -> std::io::Result<Option<u64>> {
        use std::os::fd::AsRawFd;
        const PIECE: usize = 4 << 20;
        let fd = file.as_raw_fd();
        // Ok(None): no data at or after `at` (ENXIO); Err: the file system cannot say.
        let seek = |at: u64, whence: libc::c_int| -> Result<Option<u64>, ()> {
            // SAFETY: lseek on a file descriptor this function borrows; it only moves the
            // offset, which nothing else here relies on (reads use pread).
            let r = unsafe { libc::lseek(fd, at as libc::off_t, whence) };
            if r >= 0 {
                Ok(Some(r as u64))
            } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                Ok(None)
            } else {
                Err(())
            }
        };
        let mut buf = vec![0u8; PIECE + HEADER_BYTES];
        let mut base = from + 1;
        while base + HEADER_BYTES as u64 <= len {
            // The next region with data (none: the rest is a hole, or the platform cannot say,
            // in which case everything is read).
            let Some(data) = seek(base, libc::SEEK_DATA).unwrap_or(Some(base)).filter(|d| *d < len) else { break };
            // A header may start up to 15 bytes before a data region (in a hole it would be
            // zeros, and a zero length is no record), so start at the region itself.
            base = base.max(data);
            let region_end = seek(base, libc::SEEK_HOLE).ok().flatten().unwrap_or(len).min(len);
            let want = ((region_end - base) as usize).min(PIECE) + HEADER_BYTES;
            let want = want.min((len - base) as usize);
            file.read_exact_at(&mut buf[..want], base)?;
            let window = want.saturating_sub(HEADER_BYTES - 1).min(PIECE);
            let mut off = 0;
            while off < window {
                // Eight zero bytes: no record starts at any of the first five of them (its
                // length would be 0).
                if buf[off..off + 8] == [0u8; 8] {
                    off += 5;
                    continue;
                }
                off += 1;
                let off = off - 1;
                let (n, crc, seq) = header(&buf[off..off + HEADER_BYTES]);
                if n == 0 || n > JOURNAL_RECORD_BYTES_MAX || last.is_some_and(|l| seq <= l) {
                    continue;
                }
                let at = base + off as u64;
                if at + (HEADER_BYTES + n) as u64 > len {
                    continue;
                }
                let mut payload = vec![0u8; n];
                file.read_exact_at(&mut payload, at + HEADER_BYTES as u64)?;
                if crc_of(id, seq, &payload) == crc {
                    return Ok(Some(at));
                }
            }
            base += window.max(1) as u64;
        }
        Ok(None)
    }

    /// Bytes of records in the file.
    pub(crate) fn bytes(&self) -> u64 {
        self.end
    }

    /// Appends one record and fsyncs it. On failure the journal is poisoned.
    pub(crate) fn append(&mut self, seq: u64, payload: &[u8]) -> Result<(), String> {
        if let Some(p) = &self.poisoned {
            return Err(p.clone());
        }
        if payload.len() > JOURNAL_RECORD_BYTES_MAX {
            return Err(format!("a write of {} bytes is over the journal's record limit", payload.len()));
        }
        let mut buf = Vec::with_capacity(HEADER_BYTES + payload.len());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc_of(self.id, seq, payload).to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(payload);
        let r = self.file.write_all_at(&buf, self.end).and_then(|_| self.file.sync_data());
        match r {
            Ok(()) => {
                self.end += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let msg = format!(
                    "journal {}: append failed ({e}); no write is acknowledged until the node restarts",
                    self.path.display()
                );
                self.poisoned = Some(msg.clone());
                Err(msg)
            }
        }
    }

    /// Starts the file over (after a checkpoint holds every record in the redb file).
    pub(crate) fn reset(&mut self) -> Result<(), String> {
        let err = |e: std::io::Error| format!("journal {}: {e}", self.path.display());
        // Zero the records (a later open must not read them as the start of the journal),
        // then keep the length.
        self.file.set_len(0).map_err(err)?;
        self.file.set_len(PREALLOC_BYTES).map_err(err)?;
        self.file.sync_all().map_err(err)?;
        self.end = 0;
        Ok(())
    }
}
