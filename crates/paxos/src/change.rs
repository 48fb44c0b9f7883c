//! Change functions: what a proposer applies to a register's current value. The change type is
//! the command model's per-key operation ([`rampart_kv::KeyOp`]) and its meaning is
//! [`rampart_kv::apply_op`]: this module only maps a register (`None`: absent or deleted) to it
//! and back. Reads are the identity on a live value and still go through an accept round (or a
//! peek that finds a majority on one ballot), which is what makes them linearizable.
//!
//! # Register encoding
//!
//! A live register holds an envelope, [`encode_register_value`]: a tag byte, then (tag
//! [`TAG_EXPIRES`] only) the expiry as 8 big-endian bytes of Unix milliseconds, then the user's
//! value. [`VALUE_BYTES_MAX`](crate::VALUE_BYTES_MAX) bounds the user's value; a register's
//! bytes may be up to [`ENVELOPE_BYTES_MAX`] more. Changes apply at a time the runtime passes in
//! (the proposer's clock, Unix ms): a key whose expiry is at or before it is absent, and a change
//! that finds it so, a read included, writes a tombstone (so once one read answered "absent",
//! every later read does, whatever its node's clock says).

use rampart_kv::apply::{apply_op, Ctx, Current, Write};

/// A register key.
pub type Key = Vec<u8>;
/// A register value; `None` is absent or deleted (a tombstone: the register itself stays).
/// `Some` holds an envelope (module docs), never the raw user value.
pub type Value = Option<Vec<u8>>;
/// A change to one register.
pub type Change = rampart_kv::KeyOp;
/// What the client gets back from a change that was chosen. A [`Change::Read`]'s
/// `Outcome::Value` carries the register's envelope (decode it with [`decode_register_value`]),
/// so that a reader learns the expiry too; every other outcome is the command model's.
pub type Outcome = rampart_kv::Outcome;

/// Envelope tag: no expiry, the user's value follows.
pub const TAG_PERSISTENT: u8 = 0;
/// Envelope tag: an 8-byte big-endian expiry (Unix ms) and the user's value follow.
pub const TAG_EXPIRES: u8 = 1;
/// The most bytes an envelope adds to the user's value.
pub const ENVELOPE_BYTES_MAX: usize = 1 + 8;

/// A register whose bytes are not an envelope: corrupt storage or a broken peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed register value: {0}")]
pub struct MalformedRegister(pub &'static str);

/// The envelope of a user's value and its expiry (module docs).
pub fn encode_register_value(value: &[u8], expires_at: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_BYTES_MAX + value.len());
    match expires_at {
        None => out.push(TAG_PERSISTENT),
        Some(at) => {
            out.push(TAG_EXPIRES);
            out.extend_from_slice(&at.to_be_bytes());
        }
    }
    out.extend_from_slice(value);
    out
}

/// A user's value and its expiry (Unix ms; `None`: never), as an envelope holds them.
pub type UserValue<'a> = (&'a [u8], Option<u64>);

/// The user's value and expiry in an envelope.
pub fn decode_register_value(raw: &[u8]) -> Result<UserValue<'_>, MalformedRegister> {
    match raw.split_first() {
        None => Err(MalformedRegister("empty envelope (no tag byte)")),
        Some((&TAG_PERSISTENT, value)) => Ok((value, None)),
        Some((&TAG_EXPIRES, rest)) => {
            if rest.len() < 8 {
                return Err(MalformedRegister("expiry tag without its 8 expiry bytes"));
            }
            let (at, value) = rest.split_at(8);
            let mut b = [0u8; 8];
            b.copy_from_slice(at);
            Ok((value, Some(u64::from_be_bytes(b))))
        }
        Some(_) => Err(MalformedRegister("unknown envelope tag")),
    }
}

/// A register's live user value and expiry at `now_ms`: `None` when it is a tombstone or has
/// expired (its expiry is at or before `now_ms`).
pub fn live_value(register: &Value, now_ms: u64) -> Result<Option<UserValue<'_>>, MalformedRegister> {
    let Some(raw) = register else { return Ok(None) };
    let (value, expires_at) = decode_register_value(raw)?;
    if expires_at.is_some_and(|at| at <= now_ms) {
        return Ok(None);
    }
    Ok(Some((value, expires_at)))
}

/// Applies `change` at `now_ms` (Unix ms, the proposer's clock) to a register holding `current`:
/// the value to accept and the client's outcome. Registers carry no revision (0), and APPEND is
/// bounded by its op's own bound (the value limit of the node that took the command) under
/// [`crate::VALUE_BYTES_MAX`]. An expired value is absent: a change that finds it so writes a
/// tombstone, whatever the change (a read included). A malformed register is refused (kept
/// as it is, with a `Rejected` outcome naming the fault).
pub fn apply_change(change: &Change, current: &Value, now_ms: u64) -> (Value, Outcome) {
    let decoded = match current.as_deref().map(decode_register_value).transpose() {
        Ok(d) => d,
        Err(e) => return (current.clone(), Outcome::Rejected(e.to_string())),
    };
    let expired = decoded.is_some_and(|(_, at)| at.is_some_and(|at| at <= now_ms));
    if change.is_read() {
        // The envelope itself is the answer (the reader wants the expiry too).
        return if expired || current.is_none() {
            (None, Outcome::Value(None))
        } else {
            (current.clone(), Outcome::Value(current.clone()))
        };
    }
    let cur = decoded.map(|(value, expires_at)| Current { value, revision: 0, expires_at });
    let (write, outcome) = apply_op(change, cur, Ctx { revision: 0, now_ms, value_bytes_max: crate::VALUE_BYTES_MAX });
    let next = match write {
        Write::Keep if expired => None,
        Write::Keep => current.clone(),
        Write::Put { value, expires_at } => Some(encode_register_value(&value, expires_at)),
        Write::Delete | Write::Expire => None,
    };
    (next, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_kv::{ExpireCond, KeyOp, SetCond, Ttl};

    fn v(s: &str) -> Value {
        Some(encode_register_value(s.as_bytes(), None))
    }

    fn vx(s: &str, at: u64) -> Value {
        Some(encode_register_value(s.as_bytes(), Some(at)))
    }

    fn set(s: &str, ttl: Ttl) -> KeyOp {
        KeyOp::Set { value: s.as_bytes().to_vec(), cond: SetCond::Always, return_old: true, ttl }
    }

    #[test]
    fn registers_map_to_the_command_model() {
        assert_eq!(
            apply_change(&set("a", Ttl::Clear), &v("z"), 0),
            (v("a"), Outcome::Written { written: true, old: Some(b"z".to_vec()), current_revision: 0 })
        );
        assert_eq!(apply_change(&KeyOp::Delete, &v("a"), 0), (None, Outcome::Deleted { count: 1 }));
        assert_eq!(apply_change(&KeyOp::Delete, &None, 0), (None, Outcome::Deleted { count: 0 }));
        assert_eq!(apply_change(&KeyOp::Read, &v("x"), 0), (v("x"), Outcome::Value(v("x"))));
        let not_int = apply_change(&KeyOp::IncrBy(1), &v("x1"), 0);
        assert_eq!(not_int.0, v("x1"), "a refused change keeps the register");
        assert!(matches!(not_int.1, Outcome::Rejected(_)));
    }

    #[test]
    fn the_envelope_round_trips_and_refuses_malformed_bytes() {
        for (value, at) in [(&b""[..], None), (&b"hello"[..], Some(0)), (&[0xff; 40][..], Some(u64::MAX))] {
            let raw = encode_register_value(value, at);
            assert!(raw.len() <= value.len() + ENVELOPE_BYTES_MAX);
            assert_eq!(decode_register_value(&raw), Ok((value, at)));
        }
        assert!(decode_register_value(&[]).is_err());
        assert!(decode_register_value(&[TAG_EXPIRES, 1, 2, 3]).is_err());
        assert!(decode_register_value(&[7, b'a']).is_err());
        // A malformed register is refused, never applied over, never a panic.
        let bad = Some(vec![9u8, 1, 2]);
        let (next, outcome) = apply_change(&set("a", Ttl::Clear), &bad, 0);
        assert_eq!(next, bad);
        assert!(matches!(outcome, Outcome::Rejected(m) if m.contains("malformed register")));
    }

    #[test]
    fn expiry_is_judged_at_the_time_passed_in() {
        let (next, _) = apply_change(&set("a", Ttl::In(100)), &None, 1_000);
        assert_eq!(next, vx("a", 1_100));
        assert_eq!(live_value(&next, 1_099).unwrap(), Some((&b"a"[..], Some(1_100))));
        assert_eq!(live_value(&next, 1_100).unwrap(), None);
        // Before the expiry a read keeps the register; at it, the read writes a tombstone.
        assert_eq!(apply_change(&KeyOp::Read, &next, 1_099), (next.clone(), Outcome::Value(next.clone())));
        assert_eq!(apply_change(&KeyOp::Read, &next, 1_100), (None, Outcome::Value(None)));
        // The expirer's op removes only what is due.
        assert_eq!(apply_change(&KeyOp::ExpireDue, &next, 1_099).0, next);
        assert_eq!(apply_change(&KeyOp::ExpireDue, &next, 1_100).0, None);
        // KEEPTTL keeps it, PERSIST drops it, EXPIRE NX only sets one where none is.
        let kept = apply_change(&set("b", Ttl::Keep), &next, 1_050).0;
        assert_eq!(kept, vx("b", 1_100));
        assert_eq!(apply_change(&KeyOp::Persist, &kept, 1_050).0, v("b"));
        let nx = KeyOp::Expire { ttl: Ttl::At(5_000), cond: ExpireCond::IfNone };
        assert_eq!(apply_change(&nx, &kept, 1_050).0, kept);
        assert_eq!(apply_change(&nx, &v("b"), 1_050).0, vx("b", 5_000));
        // INCR on an expired key starts from absent.
        assert_eq!(apply_change(&KeyOp::IncrBy(1), &vx("41", 10), 10), (v("1"), Outcome::Integer(1)));
    }

    #[test]
    fn append_is_bounded_by_the_core_value_limit() {
        let full = Some(encode_register_value(&vec![b'a'; crate::VALUE_BYTES_MAX], None));
        let (next, outcome) =
            apply_change(&KeyOp::Append { value: b"x".to_vec(), value_bytes_max: usize::MAX }, &full, 0);
        assert_eq!(next, full);
        assert!(matches!(outcome, Outcome::Rejected(m) if m.contains("value_bytes_max")));
    }
}
