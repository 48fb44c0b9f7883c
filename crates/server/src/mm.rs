//! Multi-master mode: client commands as CASPaxos changes.
//!
//! Each key is its own linearizable register, so a command on one key is one change. A command
//! on several keys (MSET, DEL of many keys) is one change per key: each key's change is
//! linearizable, but the command is not atomic across keys (there is no cross-key transaction
//! in this mode). Revisions do not exist here (no global log): results carry revision 0 and the
//! HTTP API leaves them out.

use std::sync::Arc;

use rampart_mm::{Change, MmError, MmNode, Outcome as MmOutcome};
use rampart_raft::{Command, Outcome, Response, SetCond};

use crate::app::{leader_only, ApiError};

/// Most keys one command may change in this mode: each key is its own change, and a node runs at
/// most `rampart_paxos::IN_FLIGHT_MAX_DEFAULT` at once.
pub const KEYS_PER_COMMAND_MAX: usize = 1024;

const NOT_AN_INTEGER: &str = "value is not an integer or out of range";
const OVERFLOW: &str = "increment or decrement would overflow";

/// How the per-key results of one command combine into its outcome.
enum Combine {
    Set { cond: SetCond, return_old: bool },
    MSet,
    Del,
    Incr,
    Append,
    Cas,
}

/// The per-key changes of one command.
type Changes = Vec<(Vec<u8>, Change)>;

fn plan(cmd: Command) -> Result<(Changes, Combine), ApiError> {
    let keys = match &cmd {
        Command::MSet { pairs } => pairs.len(),
        Command::Del { keys } => keys.len(),
        _ => 1,
    };
    if keys > KEYS_PER_COMMAND_MAX {
        return Err(ApiError::TooLarge(format!(
            "a command on {keys} keys exceeds the multi-master limit of {KEYS_PER_COMMAND_MAX} keys per command"
        )));
    }
    Ok(match cmd {
        Command::Set { key, value, cond, return_old } => {
            let change = match cond {
                SetCond::Always => Change::Set(value),
                SetCond::IfAbsent => Change::CompareAndSet { expected: None, new: Some(value) },
                SetCond::IfPresent => Change::SetIfPresent(value),
            };
            (vec![(key, change)], Combine::Set { cond, return_old })
        }
        Command::MSet { pairs } => (pairs.into_iter().map(|(k, v)| (k, Change::Set(v))).collect(), Combine::MSet),
        Command::Del { keys } => (keys.into_iter().map(|k| (k, Change::Delete)).collect(), Combine::Del),
        Command::Delete { key } => (vec![(key, Change::Delete)], Combine::Del),
        Command::IncrBy { key, delta } => (vec![(key, Change::Increment(delta))], Combine::Incr),
        Command::Append { key, value } => (vec![(key, Change::Append(value))], Combine::Append),
        Command::Cas { key, expected, new } => {
            (vec![(key, Change::CompareAndSet { expected, new: Some(new) })], Combine::Cas)
        }
        Command::PutIfRevision { .. } => {
            return Err(leader_only("compare-and-set by revision (cas=REV); use RESP CAS key expected new"))
        }
        Command::Batch(_) => return Err(ApiError::BadRequest("batches cannot be submitted by clients".into())),
    })
}

/// The error of a command whose changes all failed: "may have been applied" wins over "not
/// applied", because then some key may have changed.
fn worst(errors: Vec<MmError>) -> ApiError {
    match errors.iter().find(|e| matches!(e, MmError::MaybeApplied(_))) {
        Some(e) => e.clone().into(),
        None => errors.into_iter().next().map_or_else(|| ApiError::Internal("no error".into()), ApiError::from),
    }
}

fn combine(how: Combine, results: Vec<Result<MmOutcome, MmError>>) -> Result<Response, ApiError> {
    let n = results.len();
    let mut outcomes = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(o) => outcomes.push(o),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        // Some keys of a multi-key command may have been written: say so.
        if outcomes.is_empty() || n == 1 {
            return Err(worst(errors));
        }
        let e = worst(errors);
        return Err(ApiError::Timeout(format!(
            "{} of {n} keys were written before an error; the rest may or may not have been: {e}",
            outcomes.len()
        )));
    }
    let unexpected = |o: &MmOutcome| ApiError::Internal(format!("unexpected multi-master outcome {o:?}"));
    let outcome = match how {
        Combine::Set { cond, return_old } => match outcomes.pop() {
            Some(MmOutcome::Written { previous }) => {
                Outcome::Written { written: true, old: if return_old { previous } else { None }, current_revision: 0 }
            }
            Some(MmOutcome::Swapped { swapped, current }) if cond == SetCond::IfAbsent => Outcome::Written {
                written: swapped,
                // NX: the old value was absent when it swapped, else the current value.
                old: if return_old && !swapped { current } else { None },
                current_revision: 0,
            },
            Some(MmOutcome::Unchanged { current }) => {
                Outcome::Written { written: false, old: if return_old { current } else { None }, current_revision: 0 }
            }
            Some(o) => return Err(unexpected(&o)),
            None => return Err(ApiError::Internal("no outcome".into())),
        },
        Combine::MSet => Outcome::Written { written: true, old: None, current_revision: 0 },
        Combine::Del => {
            let mut count = 0;
            for o in &outcomes {
                match o {
                    MmOutcome::Deleted { existed } => count += u64::from(*existed),
                    o => return Err(unexpected(o)),
                }
            }
            Outcome::Deleted { count }
        }
        Combine::Incr => match outcomes.pop() {
            Some(MmOutcome::Incremented(v)) => Outcome::Integer(v),
            Some(MmOutcome::NotAnInteger) => return Err(ApiError::Rejected(NOT_AN_INTEGER.into())),
            Some(MmOutcome::Overflow) => return Err(ApiError::Rejected(OVERFLOW.into())),
            Some(o) => return Err(unexpected(&o)),
            None => return Err(ApiError::Internal("no outcome".into())),
        },
        Combine::Append => match outcomes.pop() {
            Some(MmOutcome::Appended(len)) => Outcome::Integer(len as i64),
            Some(MmOutcome::ValueTooLarge { len }) => {
                return Err(ApiError::TooLarge(format!(
                    "APPEND would make a value of {len} bytes, over the limit of {} bytes",
                    rampart_mm::VALUE_BYTES_MAX
                )))
            }
            Some(o) => return Err(unexpected(&o)),
            None => return Err(ApiError::Internal("no outcome".into())),
        },
        Combine::Cas => match outcomes.pop() {
            Some(MmOutcome::Swapped { swapped, .. }) => Outcome::Swapped(swapped),
            Some(o) => return Err(unexpected(&o)),
            None => return Err(ApiError::Internal("no outcome".into())),
        },
    };
    Ok(Response { revision: 0, outcome })
}

/// Applies one command (already validated by `App`).
pub async fn write(node: &Arc<MmNode>, cmd: Command) -> Result<Response, ApiError> {
    let (changes, how) = plan(cmd)?;
    let results = node.changes(changes).await;
    combine(how, results)
}

/// Applies pipelined commands: all their changes go to the proposer together, in order, so
/// changes on one key apply in the pipeline's order; each command gets its own result.
pub async fn write_many(node: &Arc<MmNode>, cmds: Vec<Command>) -> Vec<Result<Response, ApiError>> {
    let mut plans = Vec::with_capacity(cmds.len());
    let mut all = Vec::new();
    for cmd in cmds {
        match plan(cmd) {
            Ok((changes, how)) => {
                plans.push(Ok((changes.len(), how)));
                all.extend(changes);
            }
            Err(e) => plans.push(Err(e)),
        }
    }
    let mut results = node.changes(all).await.into_iter();
    plans
        .into_iter()
        .map(|p| match p {
            Ok((n, how)) => combine(how, results.by_ref().take(n).collect()),
            Err(e) => Err(e),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_combine_like_leader_mode() {
        let set = |cond, old| {
            combine(
                Combine::Set { cond, return_old: old },
                vec![Ok(MmOutcome::Written { previous: Some(b"a".to_vec()) })],
            )
        };
        assert_eq!(
            set(SetCond::Always, true).unwrap().outcome,
            Outcome::Written { written: true, old: Some(b"a".to_vec()), current_revision: 0 }
        );
        let nx = combine(
            Combine::Set { cond: SetCond::IfAbsent, return_old: true },
            vec![Ok(MmOutcome::Swapped { swapped: false, current: Some(b"x".to_vec()) })],
        );
        assert_eq!(
            nx.unwrap().outcome,
            Outcome::Written { written: false, old: Some(b"x".to_vec()), current_revision: 0 }
        );
        let del = combine(
            Combine::Del,
            vec![Ok(MmOutcome::Deleted { existed: true }), Ok(MmOutcome::Deleted { existed: false })],
        );
        assert_eq!(del.unwrap().outcome, Outcome::Deleted { count: 1 });
        assert!(matches!(combine(Combine::Incr, vec![Ok(MmOutcome::NotAnInteger)]), Err(ApiError::Rejected(_))));
    }

    #[test]
    fn a_partly_failed_multi_key_command_reports_an_unknown_outcome() {
        let r = combine(
            Combine::MSet,
            vec![Ok(MmOutcome::Written { previous: None }), Err(MmError::NoQuorum("down".into()))],
        );
        assert!(matches!(r, Err(ApiError::Timeout(_))), "{r:?}");
        let single = combine(Combine::MSet, vec![Err(MmError::NoQuorum("down".into()))]);
        assert!(matches!(single, Err(ApiError::ClusterDown(_))), "{single:?}");
        let maybe =
            combine(Combine::Del, vec![Err(MmError::NoQuorum("a".into())), Err(MmError::MaybeApplied("b".into()))]);
        assert!(matches!(maybe, Err(ApiError::Timeout(_))), "{maybe:?}");
    }

    #[test]
    fn too_many_keys_in_one_command_are_refused_before_anything_is_proposed() {
        let keys = (0..=KEYS_PER_COMMAND_MAX).map(|i| i.to_string().into_bytes()).collect();
        assert!(matches!(plan(Command::Del { keys }), Err(ApiError::TooLarge(_))));
    }

    #[test]
    fn revision_cas_is_refused_clearly() {
        let r = plan(Command::PutIfRevision { key: b"k".to_vec(), revision: 3, value: vec![] });
        assert!(matches!(r, Err(ApiError::BadRequest(m)) if m.contains("multi-master")));
    }
}
