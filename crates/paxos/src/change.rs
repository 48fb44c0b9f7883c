//! Change functions: what a proposer applies to a register's current value. The change type is
//! the command model's per-key operation ([`rampart_kv::KeyOp`]) and its meaning is
//! [`rampart_kv::apply_op`]: this module only maps a register (`None`: absent or deleted) to it
//! and back. Reads are the identity and still go through an accept round (or a peek that finds a
//! majority on one ballot), which is what makes them linearizable.

use rampart_kv::apply::{apply_op, Ctx, Current, Write};

/// A register key.
pub type Key = Vec<u8>;
/// A register value; `None` is absent or deleted (a tombstone: the register itself stays).
pub type Value = Option<Vec<u8>>;
/// A change to one register.
pub type Change = rampart_kv::KeyOp;
/// What the client gets back from a change that was chosen.
pub type Outcome = rampart_kv::Outcome;

/// Applies `change` to a register holding `current`: the value to accept and the client's
/// outcome. Registers carry no revision (0), and APPEND is bounded by its op's own bound (the
/// value limit of the node that took the command) under [`crate::VALUE_BYTES_MAX`].
pub fn apply_change(change: &Change, current: &Value) -> (Value, Outcome) {
    let cur = current.as_deref().map(|value| Current { value, revision: 0, expires_at: None });
    let (write, outcome) =
        apply_op(change, cur, Ctx { revision: 0, now_ms: 0, value_bytes_max: crate::VALUE_BYTES_MAX });
    let next = match write {
        Write::Keep => current.clone(),
        Write::Put { value, .. } => Some(value),
        Write::Delete | Write::Expire => None,
    };
    (next, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_kv::{KeyOp, SetCond};

    fn v(s: &str) -> Value {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn registers_map_to_the_command_model() {
        let set =
            KeyOp::Set { value: b"a".to_vec(), cond: SetCond::Always, return_old: true, ttl: rampart_kv::Ttl::Clear };
        assert_eq!(
            apply_change(&set, &v("z")),
            (v("a"), Outcome::Written { written: true, old: v("z"), current_revision: 0 })
        );
        assert_eq!(apply_change(&KeyOp::Delete, &v("a")), (None, Outcome::Deleted { count: 1 }));
        assert_eq!(apply_change(&KeyOp::Delete, &None), (None, Outcome::Deleted { count: 0 }));
        assert_eq!(apply_change(&KeyOp::Read, &v("x")), (v("x"), Outcome::Value(v("x"))));
        let not_int = apply_change(&KeyOp::IncrBy(1), &v("x1"));
        assert_eq!(not_int.0, v("x1"), "a refused change keeps the register");
        assert!(matches!(not_int.1, Outcome::Rejected(_)));
    }

    #[test]
    fn append_is_bounded_by_the_core_value_limit() {
        let full = Some(vec![b'a'; crate::VALUE_BYTES_MAX]);
        let (next, outcome) = apply_change(&KeyOp::Append { value: b"x".to_vec(), value_bytes_max: usize::MAX }, &full);
        assert_eq!(next, full);
        assert!(matches!(outcome, Outcome::Rejected(m) if m.contains("value_bytes_max")));
    }
}
