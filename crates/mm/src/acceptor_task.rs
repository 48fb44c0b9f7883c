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

pub async fn run(
    mut acceptor: Acceptor,
    store: Arc<Store>,
    mut rx: mpsc::Receiver<AcceptorJob>,
    proposer: mpsc::WeakSender<ProposerEvent>,
    shared: Arc<Shared>,
) {
    let me = NodeId(shared.id);
    let mut jobs: Vec<AcceptorJob> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut count = first.requests.len();
        jobs.push(first);
        while count < ACCEPTOR_BATCH_MAX {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.requests.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut writes: HashMap<Key, RegisterState> = HashMap::new();
        let mut replies: Vec<(oneshot::Sender<Vec<Reply>>, Vec<Reply>)> = Vec::with_capacity(jobs.len());
        // Keys other proposers are working on: this node's cached ballots for them are stale.
        let mut foreign: Vec<(Key, Ballot)> = Vec::new();
        for job in jobs.drain(..) {
            if job.reply.is_closed() || job.received.elapsed() > shared.peer_call_timeout {
                shared.stats.acceptor_jobs_expired.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut out = Vec::with_capacity(job.requests.len());
            for request in job.requests {
                // A peek changes nothing, so it leaves this node's cached ballot valid.
                if request.ballot().node != me && !matches!(request, Request::Peek { .. }) {
                    foreign.push((request.key().to_vec(), request.ballot()));
                }
                let (write, reply) = acceptor.handle(request).into_parts();
                if let Some(w) = write {
                    // Later writes of the same key in this batch supersede earlier ones.
                    writes.insert(w.key, w.state);
                }
                out.push(reply);
            }
            replies.push((job.reply, out));
        }
        if !foreign.is_empty() {
            if let Some(p) = proposer.upgrade() {
                // A hint only: dropped when the proposer is busy.
                let _ = p.try_send(ProposerEvent::Foreign(foreign));
            }
        }
        if !writes.is_empty() {
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
                }
                Ok(Err(e)) => {
                    shared.set_fatal(format!("cannot persist acceptor state: {e}"));
                    return;
                }
                Err(e) => {
                    shared.set_fatal(format!("acceptor commit task failed: {e}"));
                    return;
                }
            }
        }
        shared.stats.acceptor_requests.fetch_add(count as u64, Ordering::Relaxed);
        for (tx, out) in replies {
            // The asker may have given up (timeout); its reply is simply dropped.
            let _ = tx.send(out);
        }
    }
}
