//! Batching: client commands queued on the leader are folded into log entries, so many writes
//! share one append, one fsync per node and one replication round.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot};

use super::RaftNode;
use crate::network::ForwardError;
use crate::types::{Command, Outcome, Response};

/// A client command waiting to be proposed, and where its result goes.
pub(super) struct Proposal {
    pub(super) cmd: Command,
    pub(super) tx: oneshot::Sender<Result<Response, ForwardError>>,
}

pub use rampart_kv::limits::PIPELINE_COMMANDS_MAX;

/// Proposals queued on one node before callers wait.
pub const PROPOSAL_QUEUE_MAX: usize = 16_384;
/// Most commands folded into one log entry.
pub const BATCH_COMMANDS_MAX: usize = 1_024;
/// Most key and value bytes folded into one log entry (a single larger
/// command still goes alone).
pub const BATCH_BYTES_MAX: usize = 4 << 20;
/// Batch entries proposed and not yet answered. openraft 0.9 appends and
/// fsyncs each proposed entry on its own, so proposals beyond this wait here
/// and join the next batch instead of queueing inside openraft one by one.
pub const BATCHES_IN_FLIGHT_MAX: usize = 4;

/// Takes `first` and every proposal already queued behind it, up to [`BATCH_COMMANDS_MAX`]
/// commands and [`BATCH_BYTES_MAX`] payload bytes (a single larger command still goes alone).
fn take_batch<T>(first: T, bytes_of: impl Fn(&T) -> usize, mut next: impl FnMut() -> Option<T>) -> Vec<T> {
    let mut bytes = bytes_of(&first);
    let mut batch = vec![first];
    while batch.len() < BATCH_COMMANDS_MAX && bytes < BATCH_BYTES_MAX {
        match next() {
            Some(p) => {
                bytes += bytes_of(&p);
                batch.push(p);
            }
            None => break,
        }
    }
    debug_assert!(!batch.is_empty() && batch.len() <= BATCH_COMMANDS_MAX);
    batch
}

/// The log entry for a batch of commands: a lone command goes as itself (no batch wrapper).
fn entry_of(mut cmds: Vec<Command>) -> Command {
    assert!(!cmds.is_empty(), "a log entry holds at least one command");
    if cmds.len() == 1 {
        cmds.pop().expect("one command")
    } else {
        Command::Batch(cmds)
    }
}

/// Splits the applied entry's response into one result per command of the batch, in order.
fn split_response(commands: usize, resp: Response) -> Result<Vec<Result<Response, ForwardError>>, ForwardError> {
    let revision = resp.revision;
    let outcomes = match resp.outcome {
        Outcome::Batch(outs) if commands > 1 && outs.len() == commands => outs,
        other if commands == 1 => vec![other],
        other => return Err(ForwardError::Unknown(format!("unexpected result for {commands} commands: {other:?}"))),
    };
    Ok(outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Rejected(m) => Err(ForwardError::Rejected(m)),
            outcome => Ok(Response { revision, outcome }),
        })
        .collect())
}

/// What a proposer learns about an entry it handed to openraft.
type Committed = Result<
    Result<
        openraft::raft::ClientWriteResponse<crate::types::TypeConfig>,
        ClientWriteError<crate::types::NodeId, crate::types::NodeInfo>,
    >,
    oneshot::error::RecvError,
>;

/// The results of an entry of `commands` commands, once openraft answered (or did not in time).
fn results_of(
    commands: usize,
    committed: Result<Committed, tokio::time::error::Elapsed>,
) -> Vec<Result<Response, ForwardError>> {
    let split = match committed {
        Ok(Ok(Ok(resp))) => split_response(commands, resp.data),
        // Once proposed, a ForwardToLeader can also come from the entry being truncated by a new
        // leader, and such an entry can still be committed through another node: the outcome is
        // unknown.
        Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => {
            Err(ForwardError::Unknown(format!("leadership changed while proposing (new leader: {:?})", f.leader_id)))
        }
        Ok(Ok(Err(e))) => Err(ForwardError::Unknown(e.to_string())),
        Ok(Err(_)) => Err(ForwardError::Unknown("raft dropped the proposal".into())),
        Err(_) => Err(ForwardError::Unknown("no commit before the request timeout".into())),
    };
    let results = split.unwrap_or_else(|e| (0..commands).map(|_| Err(e.clone())).collect());
    debug_assert_eq!(results.len(), commands, "one result per command");
    results
}

/// Folds queued proposals into log entries: everything waiting when a batch slot frees up goes
/// into one entry, so many writes share one append, one fsync per node and one replication
/// round.
pub(super) async fn proposer_loop(node: std::sync::Weak<RaftNode>, mut rx: mpsc::Receiver<Proposal>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT_MAX));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let batch = take_batch(first, |p| p.cmd.payload_bytes(), || rx.try_recv().ok());
        let Some(n) = node.upgrade() else { return };
        if let Err(e) = n.may_propose() {
            for p in batch {
                let _ = p.tx.send(Err(e.clone()));
            }
            continue;
        }
        let (cmds, txs): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
        let now_ms = match n.next_stamp() {
            Ok(t) => t,
            Err(e) => {
                // Nothing was proposed.
                for tx in txs {
                    let _ = tx.send(Err(ForwardError::NoQuorum(format!("cannot read the state machine's clock: {e}"))));
                }
                continue;
            }
        };
        let entry = Command::At { now_ms, cmd: Box::new(entry_of(cmds)) };
        // Counted before openraft sees the entry, so the early-append hook sees it too.
        n.batches_in_flight.fetch_add(1, Ordering::AcqRel);
        let waiter = match n.raft.client_write_ff(entry).await {
            Ok(w) => w,
            Err(e) => {
                n.batches_in_flight.fetch_sub(1, Ordering::AcqRel);
                // The core stopped; whether it took the entry is unknown.
                for tx in txs {
                    let _ = tx.send(Err(ForwardError::Unknown(format!("raft stopped: {e}"))));
                }
                continue;
            }
        };
        let timeout = n.cfg.request_timeout;
        let node_ref = node.clone();
        drop(n);
        tokio::spawn(async move {
            let committed = tokio::time::timeout(timeout, waiter).await;
            if let Some(n) = node_ref.upgrade() {
                n.batches_in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            drop(permit);
            let results = results_of(txs.len(), committed);
            for (tx, r) in txs.into_iter().zip(results) {
                let _ = tx.send(r);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_kv::SetCond;

    fn set(k: &str, bytes: usize) -> Command {
        Command::Set {
            key: k.as_bytes().to_vec(),
            value: vec![0; bytes],
            cond: SetCond::Always,
            return_old: false,
            ttl: rampart_kv::Ttl::Clear,
        }
    }

    #[test]
    fn a_batch_takes_what_is_queued_up_to_its_limits() {
        let mut queue: std::collections::VecDeque<Command> = (0..5).map(|i| set(&i.to_string(), 1)).collect();
        let first = set("first", 1);
        let b = take_batch(first, Command::payload_bytes, || queue.pop_front());
        assert_eq!(b.len(), 6);
        let mut many: std::collections::VecDeque<Command> = (0..BATCH_COMMANDS_MAX * 2).map(|_| set("k", 0)).collect();
        let b = take_batch(set("k", 0), Command::payload_bytes, || many.pop_front());
        assert_eq!(b.len(), BATCH_COMMANDS_MAX);
        let mut big: std::collections::VecDeque<Command> = (0..8).map(|_| set("k", BATCH_BYTES_MAX / 2)).collect();
        let b = take_batch(set("k", BATCH_BYTES_MAX / 2), Command::payload_bytes, || big.pop_front());
        assert_eq!(b.len(), 2, "stops once the byte limit is reached");
        let mut none = std::iter::empty::<Command>();
        assert_eq!(take_batch(set("huge", BATCH_BYTES_MAX * 2), Command::payload_bytes, || none.next()).len(), 1);
    }

    #[test]
    fn one_command_is_its_own_entry_and_results_split_in_order() {
        assert_eq!(entry_of(vec![set("a", 1)]), set("a", 1));
        assert!(matches!(entry_of(vec![set("a", 1), set("b", 1)]), Command::Batch(c) if c.len() == 2));
        let resp = Response {
            revision: 9,
            outcome: Outcome::Batch(vec![Outcome::Integer(1), Outcome::Rejected("no".into())]),
        };
        let r = split_response(2, resp).unwrap();
        assert!(matches!(&r[0], Ok(Response { revision: 9, outcome: Outcome::Integer(1) })));
        assert!(matches!(&r[1], Err(ForwardError::Rejected(m)) if m == "no"));
        let short = Response { revision: 9, outcome: Outcome::Batch(vec![Outcome::Integer(1)]) };
        assert!(matches!(split_response(2, short), Err(ForwardError::Unknown(_))), "a short batch result is refused");
    }

    #[test]
    fn an_entry_without_an_answer_in_time_has_an_unknown_outcome_for_every_command() {
        let elapsed = futures_elapsed();
        let r = results_of(3, Err(elapsed));
        assert_eq!(r.len(), 3);
        assert!(r.iter().all(|x| matches!(x, Err(ForwardError::Unknown(_)))));
    }

    fn futures_elapsed() -> tokio::time::error::Elapsed {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::ZERO, std::future::pending::<()>()).await.unwrap_err()
        })
    }
}
