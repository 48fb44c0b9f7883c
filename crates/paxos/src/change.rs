//! Change functions: what a proposer applies to the register's current value. A change is a pure
//! function `current -> (new, outcome)`; the outcome is what the client gets back. Reads are the
//! identity and still go through an accept round, which is what makes them linearizable.

use serde::{Deserialize, Serialize};

/// A register key.
pub type Key = Vec<u8>;
/// A register value; `None` is absent or deleted (a tombstone: the register itself stays).
pub type Value = Option<Vec<u8>>;

/// A change to one register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The identity: a linearizable read.
    Read,
    /// Store a value.
    Set(Vec<u8>),
    /// Store the tombstone.
    Delete,
    /// Store `new` if and only if the current value equals `expected` (byte comparison; `None`
    /// matches an absent or deleted register, and `new: None` deletes).
    CompareAndSet { expected: Value, new: Value },
    /// Add to a decimal integer (absent counts as 0), as Redis `INCRBY` does.
    Increment(i64),
    /// Store a value only if the register holds one (Redis `SET XX`).
    SetIfPresent(Vec<u8>),
    /// Append bytes to the value (absent counts as empty), as Redis `APPEND` does.
    Append(Vec<u8>),
}

/// What the client gets back from a change that was chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The value read.
    Value(Value),
    /// A set succeeded; the value it replaced.
    Written { previous: Value },
    /// A delete succeeded; whether there was a value.
    Deleted { existed: bool },
    /// A compare-and-set ran; whether it swapped, and the register's value after it.
    Swapped { swapped: bool, current: Value },
    /// The new value of an incremented counter.
    Incremented(i64),
    /// Increment refused: the current value is not a decimal i64. The register is unchanged.
    NotAnInteger,
    /// Increment refused: the result would overflow i64. The register is unchanged.
    Overflow,
    /// A conditional change whose condition did not hold; the register is unchanged and holds
    /// `current`.
    Unchanged { current: Value },
    /// An append succeeded; the new length of the value.
    Appended(usize),
    /// An append refused because the value would exceed [`crate::VALUE_BYTES_MAX`]; unchanged.
    ValueTooLarge { len: usize },
}

/// Longest decimal i64 with sign: "-9223372036854775808".
const INTEGER_BYTES_MAX: usize = 20;

fn parse_integer(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > INTEGER_BYTES_MAX || bytes[0] == b'+' {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

impl Change {
    /// Applies the change to `current`, returning the value to accept and the client's outcome.
    pub fn apply(&self, current: &Value) -> (Value, Outcome) {
        match self {
            Change::Read => (current.clone(), Outcome::Value(current.clone())),
            Change::Set(v) => (Some(v.clone()), Outcome::Written { previous: current.clone() }),
            Change::Delete => (None, Outcome::Deleted { existed: current.is_some() }),
            Change::CompareAndSet { expected, new } => {
                if expected == current {
                    (new.clone(), Outcome::Swapped { swapped: true, current: new.clone() })
                } else {
                    (current.clone(), Outcome::Swapped { swapped: false, current: current.clone() })
                }
            }
            Change::Increment(delta) => {
                let base = match current {
                    None => 0,
                    Some(bytes) => match parse_integer(bytes) {
                        Some(n) => n,
                        None => return (current.clone(), Outcome::NotAnInteger),
                    },
                };
                match base.checked_add(*delta) {
                    Some(n) => (Some(n.to_string().into_bytes()), Outcome::Incremented(n)),
                    None => (current.clone(), Outcome::Overflow),
                }
            }
            Change::SetIfPresent(v) => match current {
                Some(_) => (Some(v.clone()), Outcome::Written { previous: current.clone() }),
                None => (None, Outcome::Unchanged { current: None }),
            },
            Change::Append(tail) => {
                let head = current.as_deref().unwrap_or_default();
                let len = head.len() + tail.len();
                if len > crate::VALUE_BYTES_MAX {
                    return (current.clone(), Outcome::ValueTooLarge { len });
                }
                let mut v = Vec::with_capacity(len);
                v.extend_from_slice(head);
                v.extend_from_slice(tail);
                (Some(v), Outcome::Appended(len))
            }
        }
    }

    /// True for the identity: re-applying it can never apply an effect twice.
    pub fn is_read(&self) -> bool {
        matches!(self, Change::Read)
    }

    /// The largest value this change can write, for the value size limit.
    pub fn value_bytes(&self) -> usize {
        match self {
            Change::Set(v) | Change::SetIfPresent(v) | Change::Append(v) => v.len(),
            Change::CompareAndSet { expected, new } => {
                expected.as_ref().map_or(0, Vec::len).max(new.as_ref().map_or(0, Vec::len))
            }
            Change::Read | Change::Delete | Change::Increment(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn set_delete_read() {
        assert_eq!(Change::Set(b"a".to_vec()).apply(&None), (v("a"), Outcome::Written { previous: None }));
        assert_eq!(Change::Delete.apply(&v("a")), (None, Outcome::Deleted { existed: true }));
        assert_eq!(Change::Delete.apply(&None), (None, Outcome::Deleted { existed: false }));
        assert_eq!(Change::Read.apply(&v("x")), (v("x"), Outcome::Value(v("x"))));
    }

    #[test]
    fn compare_and_set_compares_values() {
        let cas = Change::CompareAndSet { expected: v("a"), new: v("b") };
        assert_eq!(cas.apply(&v("a")), (v("b"), Outcome::Swapped { swapped: true, current: v("b") }));
        assert_eq!(cas.apply(&v("c")), (v("c"), Outcome::Swapped { swapped: false, current: v("c") }));
        assert_eq!(cas.apply(&None), (None, Outcome::Swapped { swapped: false, current: None }));
        let create = Change::CompareAndSet { expected: None, new: v("n") };
        assert_eq!(create.apply(&None).0, v("n"));
    }

    #[test]
    fn increment_parses_overflows_and_refuses_non_integers() {
        assert_eq!(Change::Increment(5).apply(&None), (v("5"), Outcome::Incremented(5)));
        assert_eq!(Change::Increment(-7).apply(&v("5")), (v("-2"), Outcome::Incremented(-2)));
        assert_eq!(Change::Increment(1).apply(&v("x1")), (v("x1"), Outcome::NotAnInteger));
        assert_eq!(Change::Increment(1).apply(&v("+1")), (v("+1"), Outcome::NotAnInteger));
        assert_eq!(Change::Increment(1).apply(&v("")), (v(""), Outcome::NotAnInteger));
        assert_eq!(Change::Increment(1).apply(&v(" 1")), (v(" 1"), Outcome::NotAnInteger));
        let max = i64::MAX.to_string();
        assert_eq!(Change::Increment(1).apply(&v(&max)), (v(&max), Outcome::Overflow));
        let min = i64::MIN.to_string();
        assert_eq!(Change::Increment(-1).apply(&v(&min)), (v(&min), Outcome::Overflow));
        assert_eq!(Change::Increment(0).apply(&v(&min)), (v(&min), Outcome::Incremented(i64::MIN)));
    }

    #[test]
    fn set_if_present_and_append() {
        assert_eq!(Change::SetIfPresent(b"b".to_vec()).apply(&None), (None, Outcome::Unchanged { current: None }));
        assert_eq!(Change::SetIfPresent(b"b".to_vec()).apply(&v("a")), (v("b"), Outcome::Written { previous: v("a") }));
        assert_eq!(Change::Append(b"cd".to_vec()).apply(&v("ab")), (v("abcd"), Outcome::Appended(4)));
        assert_eq!(Change::Append(b"x".to_vec()).apply(&None), (v("x"), Outcome::Appended(1)));
        let full = Some(vec![b'a'; crate::VALUE_BYTES_MAX]);
        assert_eq!(
            Change::Append(b"x".to_vec()).apply(&full),
            (full.clone(), Outcome::ValueTooLarge { len: crate::VALUE_BYTES_MAX + 1 })
        );
    }

    #[test]
    fn value_bytes_and_is_read() {
        assert_eq!(Change::Set(vec![0; 9]).value_bytes(), 9);
        assert_eq!(Change::CompareAndSet { expected: Some(vec![0; 3]), new: Some(vec![0; 4]) }.value_bytes(), 4);
        assert!(Change::Read.is_read());
        assert!(!Change::Increment(0).is_read());
    }
}
