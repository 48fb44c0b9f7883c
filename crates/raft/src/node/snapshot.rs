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
use crate::snapshot::{verify_file, SnapshotFile};
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

impl RaftNode {
    /// One InstallSnapshot chunk from the leader. Chunks are appended to a file in the snapshot
    /// directory; a chunk may be resent (it overwrites from its offset), but never skip ahead.
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
        if rx.current.as_ref().map(|c| &c.id) != Some(&id) {
            if req.offset != 0 {
                return Err(mismatch(&id, 0, req.offset));
            }
            // A new transfer replaces any other (its file is deleted when dropped).
            let file = self.snapshots.new_incoming().map_err(|e| local_failure(&req, e))?;
            tracing::info!(snapshot = %id, "receiving a snapshot from the leader");
            rx.current = Some(Incoming { id: id.clone(), started: std::time::Instant::now(), file, received: 0 });
        }
        let Some(cur) = rx.current.as_mut() else { return Err(mismatch(&id, 0, req.offset)) };
        if req.offset > cur.received {
            return Err(mismatch(&id, cur.received, req.offset));
        }
        if req.offset < cur.received {
            cur.file.truncate_to(req.offset).await.map_err(|e| local_failure(&req, e))?;
            cur.received = req.offset;
        }
        cur.file.write_all(&req.data).await.map_err(|e| local_failure(&req, e))?;
        cur.received += req.data.len() as u64;
        if !req.done {
            return Ok(InstallSnapshotResponse { vote: my_vote });
        }
        let Some(mut done) = rx.current.take() else { return Err(mismatch(&id, 0, req.offset)) };
        done.file.sync_all().await.map_err(|e| local_failure(&req, e))?;
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
            return Err(mismatch(&id, 0, req.offset));
        }
        let snapshot = Snapshot { meta: req.meta.clone(), snapshot: Box::new(done.file) };
        let resp = self.raft.install_full_snapshot(req.vote, snapshot).await.map_err(RaftError::Fatal)?;
        rx.installed = Some(id);
        Ok(InstallSnapshotResponse { vote: resp.vote })
    }
}
