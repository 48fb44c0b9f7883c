//! The meaning of every command, as pure functions.
//!
//! [`apply_op`] is the whole semantics of one [`KeyOp`] on one key: the current value and its
//! revision in, what to write and what to answer out. [`plan`] splits a [`Command`] into per-key
//! ops and [`combine`] folds their outcomes into the command's. Leader mode's state machine
//! applies all of a command's ops in one log entry through [`apply_command`]; multi-master mode
//! proposes each op as the CASPaxos change of its key. Both therefore answer alike by
//! construction; `crates/raft/tests/command_model.rs` checks it against a plain model.

use crate::command::{Command, KeyOp, SetCond};
use crate::limits::{value_too_large, INTEGER_BYTES_MAX};
use crate::outcome::Outcome;
use crate::replica::KvError;

/// Redis's reply to INCR on a value that is not a decimal i64.
pub const NOT_AN_INTEGER: &str = "value is not an integer or out of range";
/// Redis's reply to INCRBY past i64's range.
pub const OVERFLOW: &str = "increment or decrement would overflow";

/// A key's current value and metadata, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current<'a> {
    pub value: &'a [u8],
    /// Revision of the last write (0 in a mode without revisions).
    pub revision: u64,
}

/// A key's stored value and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub value: Vec<u8>,
    pub revision: u64,
}

impl Record {
    pub fn as_current(&self) -> Current<'_> {
        Current { value: &self.value, revision: self.revision }
    }
}

/// What an op does to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Leave the key as it is.
    Keep,
    /// Store this value (at the op's revision).
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
}

/// Parses a decimal i64 exactly as Redis's `string2ll` does: no sign but `-`, no leading zeros,
/// no spaces, at most 20 bytes. INCR, INCRBY and their arguments all use it.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > INTEGER_BYTES_MAX {
        return None;
    }
    if bytes == b"0" {
        return Some(0);
    }
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Applies `op` to a key holding `current` (`None`: absent). `revision` is the revision this
/// write gets (0 in a mode without revisions); `value_bytes_max` is the mode's ceiling on the
/// value APPEND may build (the op's own bound applies below it) and must be the same constant
/// on every replica.
pub fn apply_op(op: &KeyOp, current: Option<Current<'_>>, revision: u64, value_bytes_max: usize) -> (Write, Outcome) {
    let current_revision = current.map_or(0, |c| c.revision);
    match op {
        KeyOp::Read => (Write::Keep, Outcome::Value(current.map(|c| c.value.to_vec()))),
        KeyOp::Set { value, cond, return_old } => {
            let write = match cond {
                SetCond::Always => true,
                SetCond::IfAbsent => current.is_none(),
                SetCond::IfPresent => current.is_some(),
            };
            let old = if *return_old { current.map(|c| c.value.to_vec()) } else { None };
            if write {
                (Write::Put(value.clone()), Outcome::Written { written: true, old, current_revision: revision })
            } else {
                (Write::Keep, Outcome::Written { written: false, old, current_revision })
            }
        }
        KeyOp::Delete => match current {
            Some(_) => (Write::Delete, Outcome::Deleted { count: 1 }),
            None => (Write::Keep, Outcome::Deleted { count: 0 }),
        },
        KeyOp::IncrBy(delta) => {
            let base = match current {
                None => 0,
                Some(c) => match parse_i64(c.value) {
                    Some(n) => n,
                    None => return (Write::Keep, Outcome::Rejected(NOT_AN_INTEGER.into())),
                },
            };
            match base.checked_add(*delta) {
                Some(n) => (Write::Put(n.to_string().into_bytes()), Outcome::Integer(n)),
                None => (Write::Keep, Outcome::Rejected(OVERFLOW.into())),
            }
        }
        KeyOp::Append { value: tail, value_bytes_max: bound } => {
            let head = current.map_or(&[][..], |c| c.value);
            let len = head.len() + tail.len();
            let max = value_bytes_max.min(*bound);
            if len > max {
                // The words of `Limits::check_value`, so APPEND and SET refuse alike.
                return (Write::Keep, Outcome::Rejected(value_too_large(len, max)));
            }
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(head);
            v.extend_from_slice(tail);
            (Write::Put(v), Outcome::Integer(len as i64))
        }
        KeyOp::Cas { expected, new } => {
            if current.map(|c| c.value) == expected.as_deref() {
                (Write::Put(new.clone()), Outcome::Swapped(true))
            } else {
                (Write::Keep, Outcome::Swapped(false))
            }
        }
        KeyOp::PutIfRevision { revision: expected, value } => {
            if current_revision == *expected {
                (Write::Put(value.clone()), Outcome::Written { written: true, old: None, current_revision: revision })
            } else {
                (Write::Keep, Outcome::Written { written: false, old: None, current_revision })
            }
        }
    }
}

/// How the per-key outcomes of one command fold into its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// A single-key command: its op's outcome.
    One,
    /// MSET: written.
    MSet,
    /// DEL of many keys: the number removed.
    Del,
}

/// A command's per-key ops, in the order they apply.
pub type Ops = Vec<(Vec<u8>, KeyOp)>;

/// Splits `cmd` into one op per key it names, in order, and how to combine their outcomes.
/// A batch has no plan of its own (see [`apply_command`]).
pub fn plan(cmd: Command) -> Result<(Ops, Combine), KvError> {
    Ok(match cmd {
        Command::Set { key, value, cond, return_old } => {
            (vec![(key, KeyOp::Set { value, cond, return_old })], Combine::One)
        }
        Command::MSet { pairs } => (
            pairs
                .into_iter()
                .map(|(k, value)| (k, KeyOp::Set { value, cond: SetCond::Always, return_old: false }))
                .collect(),
            Combine::MSet,
        ),
        Command::Del { keys } => (keys.into_iter().map(|k| (k, KeyOp::Delete)).collect(), Combine::Del),
        Command::Delete { key } => (vec![(key, KeyOp::Delete)], Combine::Del),
        Command::IncrBy { key, delta } => (vec![(key, KeyOp::IncrBy(delta))], Combine::One),
        Command::Append { key, value, value_bytes_max } => {
            (vec![(key, KeyOp::Append { value, value_bytes_max: value_bytes_max.unwrap_or(usize::MAX) })], Combine::One)
        }
        Command::Cas { key, expected, new } => (vec![(key, KeyOp::Cas { expected, new })], Combine::One),
        Command::PutIfRevision { key, revision, value } => {
            (vec![(key, KeyOp::PutIfRevision { revision, value })], Combine::One)
        }
        Command::SystemCas { key, expected, new } => (vec![(key, KeyOp::Cas { expected, new })], Combine::One),
        Command::SystemDelete { key } => (vec![(key, KeyOp::Delete)], Combine::Del),
        Command::Batch(_) => return Err(KvError::BadRequest("a batch has no per-key plan".into())),
    })
}

/// Folds the outcomes of a command's ops (in plan order) into the command's outcome. A rejected
/// op makes the command rejected (only single-key commands can be rejected).
pub fn combine(how: Combine, outcomes: Vec<Outcome>) -> Outcome {
    match how {
        Combine::One => {
            debug_assert_eq!(outcomes.len(), 1, "a single-key command has one outcome");
            outcomes.into_iter().next().unwrap_or(Outcome::Rejected("no outcome".into()))
        }
        Combine::MSet => {
            let current_revision = outcomes
                .iter()
                .map(|o| match o {
                    Outcome::Written { current_revision, .. } => *current_revision,
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            Outcome::Written { written: true, old: None, current_revision }
        }
        Combine::Del => Outcome::Deleted {
            count: outcomes.iter().map(|o| if let Outcome::Deleted { count } = o { *count } else { 0 }).sum(),
        },
    }
}

/// A key-value state a command can be applied to atomically (leader mode's storage batch, or a
/// map in tests).
pub trait State {
    type Error;
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, Self::Error>;
    fn put(&mut self, key: &[u8], revision: u64, value: &[u8]) -> Result<(), Self::Error>;
    fn delete(&mut self, key: &[u8]) -> Result<(), Self::Error>;
}

/// Applies a whole command to `state` at `revision`: every op in order, then [`combine`]. A batch
/// applies each of its commands in order and answers [`Outcome::Batch`].
pub fn apply_command<S: State>(
    state: &mut S,
    revision: u64,
    cmd: &Command,
    value_bytes_max: usize,
) -> Result<Outcome, S::Error> {
    if let Command::Batch(cmds) = cmd {
        let mut outs = Vec::with_capacity(cmds.len());
        for c in cmds {
            outs.push(apply_command(state, revision, c, value_bytes_max)?);
        }
        return Ok(Outcome::Batch(outs));
    }
    let (ops, how) = match plan(cmd.clone()) {
        Ok(p) => p,
        Err(e) => return Ok(Outcome::Rejected(e.to_string())),
    };
    let mut outcomes = Vec::with_capacity(ops.len());
    for (key, op) in &ops {
        let current = state.get(key)?;
        let (write, outcome) = apply_op(op, current.as_ref().map(Record::as_current), revision, value_bytes_max);
        match write {
            Write::Keep => {}
            Write::Put(v) => state.put(key, revision, &v)?,
            Write::Delete => state.delete(key)?,
        }
        outcomes.push(outcome);
    }
    Ok(combine(how, outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cur(v: &[u8]) -> Option<Current<'_>> {
        Some(Current { value: v, revision: 7 })
    }

    const MAX: usize = 16;

    #[test]
    fn set_honours_nx_xx_and_get() {
        let set = |cond, return_old| KeyOp::Set { value: b"n".to_vec(), cond, return_old };
        assert_eq!(
            apply_op(&set(SetCond::Always, true), cur(b"o"), 9, MAX),
            (
                Write::Put(b"n".to_vec()),
                Outcome::Written { written: true, old: Some(b"o".to_vec()), current_revision: 9 }
            )
        );
        assert_eq!(
            apply_op(&set(SetCond::IfAbsent, true), cur(b"o"), 9, MAX),
            (Write::Keep, Outcome::Written { written: false, old: Some(b"o".to_vec()), current_revision: 7 })
        );
        assert_eq!(
            apply_op(&set(SetCond::IfPresent, false), None, 9, MAX),
            (Write::Keep, Outcome::Written { written: false, old: None, current_revision: 0 })
        );
    }

    #[test]
    fn incr_parses_like_redis_and_refuses_overflow() {
        let inc = |d| KeyOp::IncrBy(d);
        assert_eq!(apply_op(&inc(5), None, 1, MAX).1, Outcome::Integer(5));
        assert_eq!(apply_op(&inc(-7), cur(b"5"), 1, MAX), (Write::Put(b"-2".to_vec()), Outcome::Integer(-2)));
        for bad in [&b"x1"[..], b"+1", b"", b" 1", b"01", b"-0", b"-", b"1 ", b"99999999999999999999"] {
            assert_eq!(apply_op(&inc(1), cur(bad), 1, MAX), (Write::Keep, Outcome::Rejected(NOT_AN_INTEGER.into())));
        }
        let max = i64::MAX.to_string();
        assert_eq!(apply_op(&inc(1), cur(max.as_bytes()), 1, MAX).1, Outcome::Rejected(OVERFLOW.into()));
        let min = i64::MIN.to_string();
        assert_eq!(apply_op(&inc(-1), cur(min.as_bytes()), 1, MAX).1, Outcome::Rejected(OVERFLOW.into()));
        assert_eq!(apply_op(&inc(0), cur(min.as_bytes()), 1, MAX).1, Outcome::Integer(i64::MIN));
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
    }

    #[test]
    fn append_is_bounded_and_cas_compares_values() {
        let append = |v: &[u8], bound| KeyOp::Append { value: v.to_vec(), value_bytes_max: bound };
        assert_eq!(apply_op(&append(b"cd", usize::MAX), cur(b"ab"), 1, MAX).1, Outcome::Integer(4));
        let (w, o) = apply_op(&append(&[0; 3], usize::MAX), cur(&[0; 14]), 1, MAX);
        assert_eq!(w, Write::Keep);
        assert_eq!(o, Outcome::Rejected("value of 17 bytes exceeds the limit of 16 bytes (value_bytes_max)".into()));
        // The op's own bound (the limit of the replica that took it) applies below the ceiling.
        let (w, o) = apply_op(&append(b"cd", 3), cur(b"ab"), 1, MAX);
        assert_eq!(w, Write::Keep);
        assert_eq!(o, Outcome::Rejected("value of 4 bytes exceeds the limit of 3 bytes (value_bytes_max)".into()));
        assert_eq!(apply_op(&append(b"c", 3), cur(b"ab"), 1, MAX).1, Outcome::Integer(3));
        let cas = KeyOp::Cas { expected: Some(b"a".to_vec()), new: b"b".to_vec() };
        assert_eq!(apply_op(&cas, cur(b"a"), 1, MAX), (Write::Put(b"b".to_vec()), Outcome::Swapped(true)));
        assert_eq!(apply_op(&cas, None, 1, MAX), (Write::Keep, Outcome::Swapped(false)));
        let create = KeyOp::Cas { expected: None, new: b"b".to_vec() };
        assert_eq!(apply_op(&create, None, 1, MAX).1, Outcome::Swapped(true));
    }

    #[test]
    fn put_if_revision_compares_revisions() {
        let op = KeyOp::PutIfRevision { revision: 7, value: b"v".to_vec() };
        assert_eq!(
            apply_op(&op, cur(b"x"), 9, MAX),
            (Write::Put(b"v".to_vec()), Outcome::Written { written: true, old: None, current_revision: 9 })
        );
        let stale = KeyOp::PutIfRevision { revision: 6, value: b"v".to_vec() };
        assert_eq!(
            apply_op(&stale, cur(b"x"), 9, MAX).1,
            Outcome::Written { written: false, old: None, current_revision: 7 }
        );
    }

    struct Map(BTreeMap<Vec<u8>, Record>);

    impl State for Map {
        type Error = ();
        fn get(&mut self, key: &[u8]) -> Result<Option<Record>, ()> {
            Ok(self.0.get(key).cloned())
        }
        fn put(&mut self, key: &[u8], revision: u64, value: &[u8]) -> Result<(), ()> {
            self.0.insert(key.to_vec(), Record { value: value.to_vec(), revision });
            Ok(())
        }
        fn delete(&mut self, key: &[u8]) -> Result<(), ()> {
            self.0.remove(key);
            Ok(())
        }
    }

    #[test]
    fn commands_apply_in_order_and_combine() {
        let mut m = Map(BTreeMap::new());
        let mset = Command::MSet { pairs: vec![(b"a".to_vec(), b"1".to_vec()), (b"a".to_vec(), b"2".to_vec())] };
        assert_eq!(
            apply_command(&mut m, 3, &mset, MAX),
            Ok(Outcome::Written { written: true, old: None, current_revision: 3 })
        );
        assert_eq!(m.0[&b"a".to_vec()], Record { value: b"2".to_vec(), revision: 3 });
        let del = Command::Del { keys: vec![b"a".to_vec(), b"a".to_vec(), b"z".to_vec()] };
        let batch = Command::Batch(vec![del, Command::IncrBy { key: b"a".to_vec(), delta: 2 }]);
        assert_eq!(
            apply_command(&mut m, 4, &batch, MAX),
            Ok(Outcome::Batch(vec![Outcome::Deleted { count: 1 }, Outcome::Integer(2)]))
        );
    }
}
