//! Client commands as CASPaxos changes.
//!
//! Each key is its own linearizable register, so a command on one key is one change. A command
//! on several keys (MSET, DEL of many keys) is one change per key (`rampart_kv::plan`): each
//! key's change is linearizable, but the command is not atomic across keys (there is no
//! cross-key transaction in this mode). Revisions are per key (docs/paxos.md, "Revisions"): a
//! response's revision is the key's revision after the command, as its outcome reports it, and 0
//! when the outcome names none (a delete leaves no value, hence no revision).

use rampart_kv::{combine, Combine, KvError, Outcome, Response};

use crate::MmError;

/// Most keys one command may change in this mode: each key is its own change, and a node runs at
/// most `rampart_paxos::IN_FLIGHT_MAX_DEFAULT` at once.
pub const KEYS_PER_COMMAND_MAX: usize = 1024;

impl From<MmError> for KvError {
    fn from(e: MmError) -> Self {
        match e {
            MmError::NoQuorum(m) => KvError::ClusterDown(format!("not applied: {m}")),
            MmError::Busy(m) => KvError::TryAgain(format!("not applied: {m}")),
            MmError::MaybeApplied(m) => {
                KvError::Timeout(format!("outcome unknown, the write may have been applied: {m}"))
            }
            MmError::TooLarge(m) => KvError::TooLarge(m),
            MmError::BadRequest(m) => KvError::BadRequest(m),
            MmError::Conflict(m) => KvError::Rejected(m),
            MmError::Internal(m) => KvError::Internal(m),
        }
    }
}

/// The error of a command whose changes all failed: "may have been applied" wins over "not
/// applied", because then some key may have changed.
fn worst(errors: Vec<MmError>) -> KvError {
    match errors.iter().find(|e| matches!(e, MmError::MaybeApplied(_))) {
        Some(e) => e.clone().into(),
        None => errors.into_iter().next().map_or_else(|| KvError::Internal("no error".into()), KvError::from),
    }
}

/// Folds the per-key results of one command into its response.
pub fn combine_results(how: Combine, results: Vec<Result<Outcome, MmError>>) -> Result<Response, KvError> {
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
        return Err(KvError::Timeout(format!(
            "{} of {n} keys were written before an error; the rest may or may not have been: {e}",
            outcomes.len()
        )));
    }
    match combine(how, outcomes) {
        Outcome::Rejected(m) => Err(KvError::Rejected(m)),
        outcome => Ok(Response { revision: revision_after(&outcome), outcome }),
    }
}

/// The key's revision after a command, where its outcome says (module docs); 0 elsewhere.
fn revision_after(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Written { current_revision, .. } => *current_revision,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_combine_like_leader_mode() {
        let written =
            |old: Option<&[u8]>| Outcome::Written { written: true, old: old.map(<[u8]>::to_vec), current_revision: 9 };
        let r = combine_results(Combine::One, vec![Ok(written(Some(b"a")))]).unwrap();
        assert_eq!(r, Response { revision: 9, outcome: written(Some(b"a")) }, "the key's revision");
        // MSET: the highest of its keys' revisions, as in leader mode.
        let w = |rev| Ok(Outcome::Written { written: true, old: None, current_revision: rev });
        assert_eq!(combine_results(Combine::MSet, vec![w(4), w(7), w(5)]).unwrap().revision, 7);
        let del =
            combine_results(Combine::Del, vec![Ok(Outcome::Deleted { count: 1 }), Ok(Outcome::Deleted { count: 0 })]);
        assert_eq!(del.unwrap(), Response { revision: 0, outcome: Outcome::Deleted { count: 1 } });
        let rejected = combine_results(Combine::One, vec![Ok(Outcome::Rejected("value is not an integer".into()))]);
        assert!(matches!(rejected, Err(KvError::Rejected(_))));
    }

    #[test]
    fn a_partly_failed_multi_key_command_reports_an_unknown_outcome() {
        let r = combine_results(
            Combine::MSet,
            vec![
                Ok(Outcome::Written { written: true, old: None, current_revision: 0 }),
                Err(MmError::NoQuorum("down".into())),
            ],
        );
        assert!(matches!(&r, Err(KvError::Timeout(m)) if m.starts_with("1 of 2 keys")), "{r:?}");
        let single = combine_results(Combine::MSet, vec![Err(MmError::NoQuorum("down".into()))]);
        assert!(matches!(single, Err(KvError::ClusterDown(_))), "{single:?}");
        let maybe = combine_results(
            Combine::Del,
            vec![Err(MmError::NoQuorum("a".into())), Err(MmError::MaybeApplied("b".into()))],
        );
        assert!(matches!(maybe, Err(KvError::Timeout(_))), "{maybe:?}");
    }

    #[test]
    fn errors_keep_their_client_texts() {
        let cases = [
            (MmError::NoQuorum("q".into()), KvError::ClusterDown("not applied: q".into())),
            (MmError::Busy("b".into()), KvError::TryAgain("not applied: b".into())),
            (
                MmError::MaybeApplied("m".into()),
                KvError::Timeout("outcome unknown, the write may have been applied: m".into()),
            ),
            (MmError::TooLarge("t".into()), KvError::TooLarge("t".into())),
            (MmError::Internal("i".into()), KvError::Internal("i".into())),
        ];
        for (mm, kv) in cases {
            assert_eq!(KvError::from(mm), kv);
        }
        // Two of three keys written, then one failed with an unknown outcome: that error is named.
        let ok = || Ok(Outcome::Deleted { count: 1 });
        let r = combine_results(Combine::Del, vec![ok(), Err(MmError::MaybeApplied("lost".into())), ok()]);
        assert_eq!(
            r,
            Err(KvError::Timeout(
                "2 of 3 keys were written before an error; the rest may or may not have been: \
                 outcome unknown, the write may have been applied: lost"
                    .into()
            ))
        );
        // Every key failed, none may have been applied: the first error, as it is.
        let none =
            combine_results(Combine::Del, vec![Err(MmError::Busy("x".into())), Err(MmError::NoQuorum("y".into()))]);
        assert_eq!(none, Err(KvError::TryAgain("not applied: x".into())));
    }
}
