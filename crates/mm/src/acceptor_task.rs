//! The acceptor's task: group commit.
//!
//! Jobs (a batch of Paxos requests from one peer, or from this node's proposer) queue on a
//! bounded channel. The task takes every job waiting (up to [`ACCEPTOR_BATCH_MAX`] requests),
//! runs them through the in-memory [`Acceptor`] in arrival order, persists every register they
//! changed in one redb commit (one fsync), and only then releases the replies, in order. Jobs
//! that arrive during a commit form the next batch. This is the durability contract of
//! `rampart_paxos::Acceptor`: a reply leaves only after every write produced before it is durable.
//! If a commit fails the replies are never sent and the node stops (see `MmNode::wait_fatal`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rampart_paxos::{Acceptor, Ballot, Key, NodeId, RegisterState, Reply, Request};
use rampart_storage::{Durability, Store};
use tokio::sync::{mpsc, oneshot};

use crate::proposer_task::ProposerEvent;
use crate::{wire, Shared};

/// Most requests handled and committed together.
pub const ACCEPTOR_BATCH_MAX: usize = 8192;
/// Most jobs waiting for the acceptor; senders wait (peers) or drop (the local proposer) when full.
pub const ACCEPTOR_QUEUE_MAX: usize = 4096;

/// A group commit slower than this is logged (it holds up every reply of its batch).
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(50);

pub struct AcceptorJob {
    pub requests: Vec<Request>,
    pub reply: oneshot::Sender<Vec<Reply>>,
    /// When the job was queued: a job older than the asker's timeout is skipped unanswered
    /// (no one waits for it, and nothing was changed or promised yet).
    pub received: std::time::Instant,
}

/// What one batch of jobs produced: the registers to persist (the last state of each key), the
/// replies held back until they are durable, and the keys other proposers are working on.
struct Handled {
    writes: HashMap<Key, RegisterState>,
    replies: Vec<(oneshot::Sender<Vec<Reply>>, Vec<Reply>)>,
    foreign: Vec<(Key, Ballot)>,
}

/// Runs every live job through the acceptor in arrival order; expired jobs are skipped unanswered.
fn handle_jobs(acceptor: &mut Acceptor, jobs: Vec<AcceptorJob>, me: NodeId, shared: &Shared) -> Handled {
    let mut h = Handled { writes: HashMap::new(), replies: Vec::with_capacity(jobs.len()), foreign: Vec::new() };
    let ceiling = shared.ballot_ceiling();
    for job in jobs {
        if job.reply.is_closed() || job.received.elapsed() > shared.peer_call_timeout {
            shared.stats.acceptor_jobs_expired.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut out = Vec::with_capacity(job.requests.len());
        for request in job.requests {
            // A peek changes nothing, so it leaves this node's cached ballot valid.
            if request.ballot().node != me && !matches!(request, Request::Peek { .. }) {
                h.foreign.push((request.key().to_vec(), request.ballot()));
            }
            let (write, reply) = acceptor.handle(request, ceiling).into_parts();
            if let Some(w) = write {
                // Later writes of the same key in this batch supersede earlier ones.
                h.writes.insert(w.key, w.state);
            }
            out.push(reply);
        }
        h.replies.push((job.reply, out));
    }
    h
}

/// Persists a batch's registers in one fsynced commit. An error stops the node: its replies must
/// never be sent.
async fn commit(store: &Arc<Store>, writes: HashMap<Key, RegisterState>, shared: &Shared) -> Result<(), String> {
    let n = writes.len();
    let store = store.clone();
    let started = std::time::Instant::now();
    let committed = tokio::task::spawn_blocking(move || {
        store.write(Durability::Immediate, |b| {
            for (key, state) in &writes {
                b.register_put(key, &wire::encode_register(state))?;
            }
            Ok(())
        })
    })
    .await;
    match committed {
        Ok(Ok(())) => {
            let took = started.elapsed();
            if took >= SLOW_COMMIT {
                tracing::warn!(registers = n, took_ms = took.as_millis() as u64, "slow acceptor commit");
            }
            shared.stats.acceptor_commits.fetch_add(1, Ordering::Relaxed);
            shared.stats.acceptor_registers_written.fetch_add(n as u64, Ordering::Relaxed);
            Ok(())
        }
        Ok(Err(e)) => Err(format!("cannot persist acceptor state: {e}")),
        Err(e) => Err(format!("acceptor commit task failed: {e}")),
    }
}

pub async fn run(
    mut acceptor: Acceptor,
    store: Arc<Store>,
    mut rx: mpsc::Receiver<AcceptorJob>,
    proposer: mpsc::WeakSender<ProposerEvent>,
    shared: Arc<Shared>,
) {
    let me = NodeId(shared.id);
    while let Some(first) = rx.recv().await {
        let mut count = first.requests.len();
        let mut jobs = vec![first];
        while count < ACCEPTOR_BATCH_MAX {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.requests.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let Handled { writes, replies, foreign } = handle_jobs(&mut acceptor, jobs, me, &shared);
        if !foreign.is_empty() {
            if let Some(p) = proposer.upgrade() {
                // A hint only: dropped when the proposer is busy.
                let _ = p.try_send(ProposerEvent::Foreign(foreign));
            }
        }
        if !writes.is_empty() {
            if let Err(reason) = commit(&store, writes, &shared).await {
                shared.set_fatal(reason);
                return;
            }
        }
        shared.stats.acceptor_requests.fetch_add(count as u64, Ordering::Relaxed);
        for (tx, out) in replies {
            // The asker may have given up (timeout); its reply is simply dropped.
            let _ = tx.send(out);
        }
    }
}
