//! Receiving a snapshot from the leader, chunk by chunk, into a file (never into memory).
//!
//! openraft's own receiver would hand the finished file straight to the state machine, whose
//! install error is fatal to the node; so the chunks are assembled here, and the whole file is
//! checked (format, records, checksum, and that it is the snapshot the leader announced) before
//! openraft is asked to install it. A corrupt or truncated snapshot is refused with a mismatch
//! (the leader starts the transfer again from the beginning) and the applied state is untouched.

use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::{Snapshot, SnapshotId, SnapshotSegmentId};
use tokio::io::AsyncWriteExt;

use super::RaftNode;
use crate::snapshot::{verify_file, SnapshotDir, SnapshotFile};
use crate::types::{NodeId, StorageError, TypeConfig};

/// The snapshot transfer in progress on this node, if any.
#[derive(Default)]
pub(super) struct Receiving {
    current: Option<Incoming>,
    /// The last snapshot this node installed: a resent last chunk of it (the leader's deadline
    /// ran out while the install went on) is answered without receiving it again.
    installed: Option<SnapshotId>,
}

struct Incoming {
    id: SnapshotId,
    started: std::time::Instant,
    file: SnapshotFile,
    /// Bytes received so far (the file's length).
    received: u64,
}

type ChunkResult = Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

fn mismatch(id: &SnapshotId, expect: u64, got: u64) -> RaftError<NodeId, InstallSnapshotError> {
    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
        expect: SnapshotSegmentId { id: id.clone(), offset: expect },
        got: SnapshotSegmentId { id: id.clone(), offset: got },
    }))
}

fn local_failure(
    req: &InstallSnapshotRequest<TypeConfig>,
    e: std::io::Error,
) -> RaftError<NodeId, InstallSnapshotError> {
    RaftError::Fatal(Fatal::StorageError(StorageError::from_io_error(
        openraft::ErrorSubject::Snapshot(Some(req.meta.signature())),
        openraft::ErrorVerb::Write,
        e,
    )))
}

impl Receiving {
    /// Takes one chunk into the file of its transfer. Returns the finished file once the last
    /// chunk is in, checked whole; a chunk that skips ahead, or a finished file that is damaged
    /// or is another snapshot than announced, is refused with a mismatch (the leader then sends
    /// from the offset asked for; a refused file is deleted).
    async fn chunk(
        &mut self,
        dir: &SnapshotDir,
        req: &InstallSnapshotRequest<TypeConfig>,
    ) -> Result<Option<SnapshotFile>, RaftError<NodeId, InstallSnapshotError>> {
        let id = &req.meta.snapshot_id;
        if self.current.as_ref().map(|c| &c.id) != Some(id) {
            if req.offset != 0 {
                return Err(mismatch(id, 0, req.offset));
            }
            tracing::info!(snapshot = %id, "receiving a snapshot from the leader");
            // A new transfer replaces any other (its file is deleted when dropped).
            let file = dir.new_incoming().map_err(|e| local_failure(req, e))?;
            self.current = Some(Incoming { id: id.clone(), started: std::time::Instant::now(), file, received: 0 });
        }
        let Some(cur) = self.current.as_mut() else { return Err(mismatch(id, 0, req.offset)) };
        if req.offset > cur.received {
            return Err(mismatch(id, cur.received, req.offset));
        }
        if req.offset < cur.received {
            cur.file.truncate_to(req.offset).await.map_err(|e| local_failure(req, e))?;
            cur.received = req.offset;
        }
        cur.file.write_all(&req.data).await.map_err(|e| local_failure(req, e))?;
        cur.received += req.data.len() as u64;
        if !req.done {
            return Ok(None);
        }
        let Some(mut done) = self.current.take() else { return Err(mismatch(id, 0, req.offset)) };
        done.file.sync_all().await.map_err(|e| local_failure(req, e))?;
        tracing::info!(
            snapshot = %id,
            bytes = done.received,
            elapsed_ms = done.started.elapsed().as_millis() as u64,
            "snapshot received; checking it"
        );
        let path = done.file.path().to_path_buf();
        let checked = tokio::task::spawn_blocking(move || verify_file(&path)).await;
        let refusal = match checked {
            Ok(Ok((meta, _))) if meta == req.meta => None,
            Ok(Ok((meta, _))) => Some(format!("the file holds snapshot {:?}, not the one announced", meta.snapshot_id)),
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("the check did not finish: {e}")),
        };
        if let Some(why) = refusal {
            tracing::warn!(snapshot = %id, bytes = done.received, reason = %why, "refusing a snapshot from the leader; state unchanged");
            // Dropping `done` deletes the file; the leader starts over from offset 0.
            return Err(mismatch(id, 0, req.offset));
        }
        Ok(Some(done.file))
    }
}

impl RaftNode {
    /// One InstallSnapshot chunk from the leader. Chunks are appended to a file in the snapshot
    /// directory; a chunk may be resent (it overwrites from its offset), but never skip ahead.
    /// The finished, checked file is handed to openraft to install.
    pub(super) async fn receive_snapshot_chunk(&self, req: InstallSnapshotRequest<TypeConfig>) -> ChunkResult {
        let my_vote = self.raft.metrics().borrow().vote;
        if req.vote < my_vote {
            // A stale leader: answer with the newer vote, which ends its transfer.
            return Ok(InstallSnapshotResponse { vote: my_vote });
        }
        let mut rx = self.receiving.lock().await;
        let id = req.meta.snapshot_id.clone();
        if req.done && rx.current.is_none() && rx.installed.as_ref() == Some(&id) {
            return Ok(InstallSnapshotResponse { vote: my_vote });
        }
        let Some(file) = rx.chunk(&self.snapshots, &req).await? else {
            return Ok(InstallSnapshotResponse { vote: my_vote });
        };
        let snapshot = Snapshot { meta: req.meta.clone(), snapshot: Box::new(file) };
        let resp = self.raft.install_full_snapshot(req.vote, snapshot).await.map_err(RaftError::Fatal)?;
        rx.installed = Some(id);
        Ok(InstallSnapshotResponse { vote: resp.vote })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::snapshot::SnapshotWriter;
    use crate::types::SnapshotMeta;

    fn meta(id: &str) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 5)),
            last_membership: Default::default(),
            snapshot_id: id.into(),
        }
    }

    fn snapshot_bytes(m: &SnapshotMeta) -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), m).unwrap();
        for i in 0..200u64 {
            w.record(format!("k{i}").as_bytes(), i, &[i as u8; 300]).unwrap();
        }
        w.finish().unwrap().0
    }

    fn req(m: &SnapshotMeta, offset: u64, data: &[u8], done: bool) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest { vote: Default::default(), meta: m.clone(), offset, data: data.to_vec(), done }
    }

    fn expect_mismatch(r: Result<Option<SnapshotFile>, RaftError<NodeId, InstallSnapshotError>>, offset: u64) {
        match r {
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m))) => assert_eq!(m.expect.offset, offset),
            Err(e) => panic!("expected a mismatch at {offset}, got {e}"),
            Ok(_) => panic!("expected a mismatch at {offset}, got a chunk accepted"),
        }
    }

    fn tmp_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .count()
    }

    /// Chunks in order, one resent, make the file; a chunk that skips ahead or a transfer that
    /// starts mid-way is refused.
    #[tokio::test]
    async fn chunks_assemble_a_file_and_never_skip_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        let m = meta("1-5-0");
        let bytes = snapshot_bytes(&m);
        let mut rx = Receiving::default();
        expect_mismatch(rx.chunk(&snaps, &req(&m, 1000, &bytes[1000..2000], false)).await, 0);
        let step = 1000;
        let mut offset = 0;
        let mut finished = None;
        while offset < bytes.len() {
            let end = (offset + step).min(bytes.len());
            let done = end == bytes.len();
            if offset == 3000 {
                // Skipping ahead is refused with the offset the follower has.
                expect_mismatch(rx.chunk(&snaps, &req(&m, 4000, &bytes[4000..5000], false)).await, 3000);
                // A resent earlier chunk overwrites from its offset.
                assert!(rx.chunk(&snaps, &req(&m, 2000, &bytes[2000..3000], false)).await.unwrap().is_none());
            }
            finished = rx.chunk(&snaps, &req(&m, offset as u64, &bytes[offset..end], done)).await.unwrap();
            offset = end;
        }
        let mut file = finished.expect("the last chunk gives the file");
        let mut got = Vec::new();
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(0)).await.unwrap();
        file.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, bytes);
        assert!(file.is_incoming());
    }

    /// A transfer whose file is damaged in transit, cut short, or is another snapshot than the
    /// one announced is refused (the leader restarts at 0) and its file deleted.
    #[tokio::test]
    async fn a_damaged_or_mismatched_transfer_is_refused_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        let m = meta("1-5-0");
        let bytes = snapshot_bytes(&m);
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 3] ^= 0x10;
        let other = snapshot_bytes(&meta("1-5-9"));
        for (what, data) in [("flipped", flipped), ("short", bytes[..bytes.len() - 100].to_vec()), ("other", other)] {
            let mut rx = Receiving::default();
            let half = data.len() / 2;
            assert!(rx.chunk(&snaps, &req(&m, 0, &data[..half], false)).await.unwrap().is_none(), "{what}");
            expect_mismatch(rx.chunk(&snaps, &req(&m, half as u64, &data[half..], true)).await, 0);
            assert_eq!(tmp_files(dir.path()), 0, "{what}: the refused file is deleted");
        }
        // A new transfer replaces an unfinished one, whose file goes.
        let mut rx = Receiving::default();
        rx.chunk(&snaps, &req(&m, 0, &bytes[..100], false)).await.unwrap();
        let n = meta("1-6-0");
        rx.chunk(&snaps, &req(&n, 0, &bytes[..100], false)).await.unwrap();
        assert_eq!(tmp_files(dir.path()), 1);
    }
}
