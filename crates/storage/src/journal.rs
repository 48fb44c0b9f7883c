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
//! sequence number and the payload. Sequence numbers rise by one per record and never restart;
//! each journaled redb commit stores its own in the meta table, so after a crash the records
//! the redb file already holds are known and skipped. A torn last record (a crash mid-append)
//! ends the journal; damage followed by more data is reported as corruption.

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
/// Largest payload a record may claim; a larger length is damage, not a record.
pub const JOURNAL_RECORD_BYTES_MAX: usize = 1 << 30;

pub(crate) struct Journal {
    file: File,
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

fn crc_of(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

impl Journal {
    /// Opens (or creates) the journal at `path` and reads its records. Records after a break in
    /// the sequence are not part of it (left from before a checkpoint started the file over).
    pub(crate) fn open(path: &Path) -> Result<(Journal, Found), String> {
        let err = |e: std::io::Error| format!("journal {}: {e}", path.display());
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(err)?;
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
            let n = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
            let seq = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
            if n == 0 && crc == 0 && seq == 0 {
                break; // the zeroed (preallocated) rest of the file
            }
            let end = at + (HEADER_BYTES + n) as u64;
            if n > JOURNAL_RECORD_BYTES_MAX || end > len {
                break; // a length past the end: a torn last append
            }
            let mut payload = vec![0u8; n];
            if reader.read_exact(&mut payload).is_err() {
                break;
            }
            if crc_of(seq, &payload) != crc {
                Self::check_nothing_after(&file, end, len, seq, path)?;
                break;
            }
            if last_seq.is_some_and(|l| seq != l + 1) {
                break; // an older generation of the file, after a checkpoint's restart
            }
            last_seq = Some(seq);
            records.push((seq, payload));
            at = end;
        }
        let journal = Journal { file, path: path.to_path_buf(), end: at, poisoned: None };
        if len < PREALLOC_BYTES {
            journal.file.set_len(PREALLOC_BYTES).map_err(err)?;
            journal.file.sync_all().map_err(err)?;
        }
        Ok((journal, Found { records }))
    }

    /// After a damaged record whose claimed end is `next` (its length field is sane): a torn
    /// last append leaves zeros or nothing there. An intact record at `next`, the one after it
    /// in sequence, means the middle of the journal is damaged, and replaying past it would
    /// silently drop durable writes.
    fn check_nothing_after(file: &File, next: u64, len: u64, seq: u64, path: &Path) -> Result<(), String> {
        let mut head = [0u8; HEADER_BYTES];
        if next + HEADER_BYTES as u64 > len || file.read_exact_at(&mut head, next).is_err() {
            return Ok(());
        }
        let n = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let after = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        if n == 0
            || n > JOURNAL_RECORD_BYTES_MAX
            || after != seq.wrapping_add(1)
            || next + (HEADER_BYTES + n) as u64 > len
        {
            return Ok(());
        }
        let mut payload = vec![0u8; n];
        if file.read_exact_at(&mut payload, next + HEADER_BYTES as u64).is_ok() && crc_of(after, &payload) == crc {
            return Err(format!(
                "journal {} is damaged at byte {}: the record after it is intact; this node refuses to start \
                 (remove the data dir and re-add the node)",
                path.display(),
                next - (HEADER_BYTES as u64)
            ));
        }
        Ok(())
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
        let mut buf = Vec::with_capacity(HEADER_BYTES + payload.len());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc_of(seq, payload).to_le_bytes());
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
