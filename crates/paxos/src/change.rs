//! Change functions: what a proposer applies to a register's current value. The change type is
//! the command model's per-key operation ([`rampart_kv::KeyOp`]) and its meaning is
//! [`rampart_kv::apply_op`]: this module only maps a register (`None`: absent or deleted) to it
//! and back. Reads are the identity on a live value and still go through an accept round (or a
//! peek that finds a majority on one ballot), which is what makes them linearizable.
//!
//! # Register encoding
//!
//! A live register holds an envelope, [`encode_register_value`]: a tag byte, then (tags
//! [`TAG_PERSISTENT_REVISION`] and [`TAG_EXPIRES_REVISION`]) the revision as 8 big-endian bytes,
//! then (tags [`TAG_EXPIRES`] and [`TAG_EXPIRES_REVISION`]) the expiry as 8 big-endian bytes of
//! Unix milliseconds, then the user's value. [`VALUE_BYTES_MAX`](crate::VALUE_BYTES_MAX) bounds
//! the user's value; a register's bytes may be up to [`ENVELOPE_BYTES_MAX`] more. Changes apply
//! at a time the runtime passes in (the proposer's clock, Unix ms): a key whose expiry is at or
//! before it is absent, and a change that finds it so, a read included, writes a tombstone (so
//! once one read answered "absent", every later read does, whatever its node's clock says).
//!
//! # Revisions
//!
//! A value's revision is the counter of the ballot at which the change that wrote it was
//! applied; the proposer passes it to [`apply_change`] and it travels inside the envelope, so a
//! value re-accepted unchanged keeps it and every node reports the same one. It strictly
//! increases across the values chosen for one key (`docs/paxos.md`, "Revisions"). Tags
//! [`TAG_PERSISTENT`] and [`TAG_EXPIRES`] are from before revisions: such a value has revision
//! [`REVISION_UNKNOWN`], no `PutIfRevision` or `DeleteIfRevision` ever matches it, and the first
//! change that finds it (a linearizable read included) rewrites it with that change's revision.
//! Every write uses the tags with a revision.

use crate::ballot::Ballot;
use rampart_kv::apply::{apply_op, Ctx, Current, Write};
use rampart_kv::KeyOp;

/// A register key.
pub type Key = Vec<u8>;
/// A register value; `None` is absent or deleted (a tombstone: the register itself stays).
/// `Some` holds an envelope (module docs), never the raw user value.
pub type Value = Option<Vec<u8>>;
/// A change to one register.
pub type Change = rampart_kv::KeyOp;
/// What the client gets back from a change that was chosen. A [`Change::Read`]'s
/// `Outcome::Value` carries the register's envelope (decode it with [`decode_register_value`]),
/// so that a reader learns the expiry and the revision too; every other outcome is the command
/// model's, revisions included (`Outcome::Written::current_revision`).
pub type Outcome = rampart_kv::Outcome;

/// Envelope tag from before revisions: no expiry, the user's value follows. Read, never written.
pub const TAG_PERSISTENT: u8 = 0;
/// Envelope tag from before revisions: an 8-byte big-endian expiry (Unix ms) and the user's
/// value follow. Read, never written.
pub const TAG_EXPIRES: u8 = 1;
/// Envelope tag: an 8-byte big-endian revision, then the user's value.
pub const TAG_PERSISTENT_REVISION: u8 = 2;
/// Envelope tag: an 8-byte big-endian revision, an 8-byte big-endian expiry (Unix ms), then the
/// user's value.
pub const TAG_EXPIRES_REVISION: u8 = 3;
/// The most bytes an envelope adds to the user's value: tag, revision, expiry.
pub const ENVELOPE_BYTES_MAX: usize = 1 + 8 + 8;
/// The revision of a value written before revisions existed (tags [`TAG_PERSISTENT`] and
/// [`TAG_EXPIRES`]). Never a real revision: ballot counters start at 1.
pub const REVISION_UNKNOWN: u64 = 0;

/// A register whose bytes are not an envelope: corrupt storage or a broken peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed register value: {0}")]
pub struct MalformedRegister(pub &'static str);

/// The envelope of a user's value, its expiry (Unix ms; `None`: never) and its revision
/// (module docs). [`REVISION_UNKNOWN`] gives the tags from before revisions, so that a legacy
/// value's envelope can be rebuilt (a keys-only scan keeps only the header); every write passes
/// a ballot counter, never 0.
pub fn encode_register_value(value: &[u8], expires_at: Option<u64>, revision: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_BYTES_MAX + value.len());
    let tag = match (revision == REVISION_UNKNOWN, expires_at.is_some()) {
        (true, false) => TAG_PERSISTENT,
        (true, true) => TAG_EXPIRES,
        (false, false) => TAG_PERSISTENT_REVISION,
        (false, true) => TAG_EXPIRES_REVISION,
    };
    out.push(tag);
    if revision != REVISION_UNKNOWN {
        out.extend_from_slice(&revision.to_be_bytes());
    }
    if let Some(at) = expires_at {
        out.extend_from_slice(&at.to_be_bytes());
    }
    out.extend_from_slice(value);
    out
}

/// What an envelope holds: the user's value, its expiry and its revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserValue<'a> {
    pub value: &'a [u8],
    /// When it expires (Unix ms; `None`: never).
    pub expires_at: Option<u64>,
    /// The counter of the ballot at which the change that wrote it was applied;
    /// [`REVISION_UNKNOWN`] for a value written before revisions existed.
    pub revision: u64,
}

/// Splits 8 big-endian bytes off the front of `rest`.
fn take_u64<'a>(rest: &'a [u8], missing: &'static str) -> Result<(u64, &'a [u8]), MalformedRegister> {
    let (head, tail) = rest.split_first_chunk::<8>().ok_or(MalformedRegister(missing))?;
    Ok((u64::from_be_bytes(*head), tail))
}

/// The user's value, expiry and revision in an envelope.
pub fn decode_register_value(raw: &[u8]) -> Result<UserValue<'_>, MalformedRegister> {
    let (&tag, rest) = raw.split_first().ok_or(MalformedRegister("empty envelope (no tag byte)"))?;
    let (revision, rest) = match tag {
        TAG_PERSISTENT | TAG_EXPIRES => (REVISION_UNKNOWN, rest),
        TAG_PERSISTENT_REVISION | TAG_EXPIRES_REVISION => {
            let (revision, rest) = take_u64(rest, "revision tag without its 8 revision bytes")?;
            if revision == REVISION_UNKNOWN {
                return Err(MalformedRegister("revision 0 under a tag with a revision (ballot counters start at 1)"));
            }
            (revision, rest)
        }
        _ => return Err(MalformedRegister("unknown envelope tag")),
    };
    let (expires_at, value) = match tag {
        TAG_EXPIRES | TAG_EXPIRES_REVISION => {
            let (at, value) = take_u64(rest, "expiry tag without its 8 expiry bytes")?;
            (Some(at), value)
        }
        _ => (None, rest),
    };
    Ok(UserValue { value, expires_at, revision })
}

/// [`decode_register_value`] of a value accepted at ballot `accepted`, which must not be below
/// the ballot that wrote it: a revision above `accepted.counter` is refused (a broken or forged
/// peer, or corrupt storage; an honest value is accepted at or above the ballot it was computed
/// at, module docs).
pub fn decode_accepted_value(raw: &[u8], accepted: Ballot) -> Result<UserValue<'_>, MalformedRegister> {
    let decoded = decode_register_value(raw)?;
    if decoded.revision > accepted.counter {
        return Err(MalformedRegister("revision above the counter of the ballot the value was accepted at"));
    }
    Ok(decoded)
}

/// A register's live user value, expiry and revision at `now_ms`: `None` when it is a tombstone
/// or has expired (its expiry is at or before `now_ms`).
pub fn live_value(register: &Value, now_ms: u64) -> Result<Option<UserValue<'_>>, MalformedRegister> {
    let Some(raw) = register else { return Ok(None) };
    let decoded = decode_register_value(raw)?;
    if decoded.expires_at.is_some_and(|at| at <= now_ms) {
        return Ok(None);
    }
    Ok(Some(decoded))
}

/// Applies `change` at `now_ms` (Unix ms, the proposer's clock) to a register holding `current`:
/// the value to accept and the client's outcome. `revision` is the counter of the ballot the
/// proposer applies the change at (never 0): a value this change writes carries it, and it is
/// `Ctx::revision` of [`rampart_kv::apply_op`], while the current value's own revision is
/// `Current::revision`, so `PutIfRevision`, `DeleteIfRevision` and `current_revision` mean what
/// they mean in leader mode. A value from before revisions matches no revision and is rewritten
/// with `revision` whatever the change (module docs). APPEND is bounded by its op's own bound
/// (the value limit of the node that took the command) under [`crate::VALUE_BYTES_MAX`]. An
/// expired value is absent: a change that finds it so writes a tombstone, whatever the change (a
/// read included). A malformed register is refused (kept as it is, with a `Rejected` outcome
/// naming the fault).
pub fn apply_change(change: &Change, current: &Value, now_ms: u64, revision: u64) -> (Value, Outcome) {
    assert_ne!(revision, REVISION_UNKNOWN, "a change applies at a ballot, and ballot counters start at 1");
    let decoded = match current.as_deref().map(decode_register_value).transpose() {
        Ok(d) => d,
        Err(e) => return (current.clone(), Outcome::Rejected(e.to_string())),
    };
    let live = decoded.filter(|d| d.expires_at.is_none_or(|at| at > now_ms));
    let legacy = live.is_some_and(|d| d.revision == REVISION_UNKNOWN);
    // What the register holds when the change leaves the key as it is.
    let kept = || match live {
        None => None,
        Some(d) if legacy => Some(encode_register_value(d.value, d.expires_at, revision)),
        Some(_) => current.clone(),
    };
    if change.is_read() {
        // The envelope itself is the answer (the reader wants the expiry and revision too).
        let next = kept();
        return (next.clone(), Outcome::Value(next));
    }
    if legacy {
        // An unknown revision matches no revision a client can name (0 means absent); the key
        // gets one now, and the refusal names it.
        match change {
            KeyOp::PutIfRevision { .. } => {
                let outcome = Outcome::Written { written: false, old: None, current_revision: revision };
                return (kept(), outcome);
            }
            KeyOp::DeleteIfRevision { .. } => return (kept(), Outcome::Deleted { count: 0 }),
            _ => {}
        }
    }
    let cur = decoded.map(|d| Current {
        value: d.value,
        revision: if d.revision == REVISION_UNKNOWN { revision } else { d.revision },
        expires_at: d.expires_at,
    });
    let (write, outcome) = apply_op(change, cur, Ctx { revision, now_ms, value_bytes_max: crate::VALUE_BYTES_MAX });
    let next = match write {
        Write::Keep => kept(),
        Write::Put { value, expires_at } => Some(encode_register_value(&value, expires_at, revision)),
        Write::Delete | Write::Expire => None,
    };
    (next, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_kv::{ExpireCond, SetCond, Ttl};

    /// The revision most tests apply their changes at.
    const R: u64 = 7;

    fn v(s: &str, revision: u64) -> Value {
        Some(encode_register_value(s.as_bytes(), None, revision))
    }

    fn vx(s: &str, at: u64, revision: u64) -> Value {
        Some(encode_register_value(s.as_bytes(), Some(at), revision))
    }

    fn set(s: &str, ttl: Ttl) -> KeyOp {
        KeyOp::Set { value: s.as_bytes().to_vec(), cond: SetCond::Always, return_old: true, ttl }
    }

    #[test]
    fn registers_map_to_the_command_model() {
        assert_eq!(
            apply_change(&set("a", Ttl::Clear), &v("z", 3), 0, R),
            (v("a", R), Outcome::Written { written: true, old: Some(b"z".to_vec()), current_revision: R })
        );
        assert_eq!(apply_change(&KeyOp::Delete, &v("a", 3), 0, R), (None, Outcome::Deleted { count: 1 }));
        assert_eq!(apply_change(&KeyOp::Delete, &None, 0, R), (None, Outcome::Deleted { count: 0 }));
        assert_eq!(apply_change(&KeyOp::Read, &v("x", 3), 0, R), (v("x", 3), Outcome::Value(v("x", 3))));
        let not_int = apply_change(&KeyOp::IncrBy(1), &v("x1", 3), 0, R);
        assert_eq!(not_int.0, v("x1", 3), "a refused change keeps the register, and its revision");
        assert!(matches!(not_int.1, Outcome::Rejected(_)));
    }

    #[test]
    fn revisions_mean_what_they_mean_in_leader_mode() {
        let put = |revision| KeyOp::PutIfRevision { revision, value: b"new".to_vec() };
        // A write takes the change's revision; a change that keeps the value keeps its revision.
        assert_eq!(apply_change(&KeyOp::IncrBy(2), &v("1", 3), 0, R).0, v("3", R));
        let nx = KeyOp::Set { value: b"b".to_vec(), cond: SetCond::IfAbsent, return_old: false, ttl: Ttl::Clear };
        assert_eq!(
            apply_change(&nx, &v("a", 3), 0, R),
            (v("a", 3), Outcome::Written { written: false, old: None, current_revision: 3 })
        );
        // cas=REV writes only at the current revision; cas=0 only where the key is absent.
        assert_eq!(
            apply_change(&put(3), &v("a", 3), 0, R),
            (v("new", R), Outcome::Written { written: true, old: None, current_revision: R })
        );
        assert_eq!(
            apply_change(&put(2), &v("a", 3), 0, R),
            (v("a", 3), Outcome::Written { written: false, old: None, current_revision: 3 })
        );
        assert_eq!(
            apply_change(&put(0), &None, 0, R),
            (v("new", R), Outcome::Written { written: true, old: None, current_revision: R })
        );
        assert_eq!(
            apply_change(&put(0), &v("a", 3), 0, R).1,
            Outcome::Written { written: false, old: None, current_revision: 3 }
        );
        // An expired key is absent: revision 0.
        assert_eq!(apply_change(&put(0), &vx("a", 5, 3), 5, R).0, v("new", R));
        let del = |revision| KeyOp::DeleteIfRevision { revision };
        assert_eq!(apply_change(&del(3), &v("a", 3), 0, R), (None, Outcome::Deleted { count: 1 }));
        assert_eq!(apply_change(&del(4), &v("a", 3), 0, R), (v("a", 3), Outcome::Deleted { count: 0 }));
        assert_eq!(apply_change(&del(3), &None, 0, R), (None, Outcome::Deleted { count: 0 }));
        // A new expiry is a write of the key: it takes the change's revision.
        let expire = KeyOp::Expire { ttl: Ttl::At(100), cond: ExpireCond::Always };
        assert_eq!(apply_change(&expire, &v("a", 3), 0, R).0, vx("a", 100, R));
    }

    #[test]
    fn a_value_from_before_revisions_matches_no_revision_and_gets_one() {
        let legacy = v("old", REVISION_UNKNOWN);
        assert_eq!(legacy.as_deref().map(|l| l[0]), Some(TAG_PERSISTENT));
        // No cas names it, not 0 (absent), not the change's own revision, not anything else.
        for named in [0, 1, R, u64::MAX] {
            let put = KeyOp::PutIfRevision { revision: named, value: b"new".to_vec() };
            assert_eq!(
                apply_change(&put, &legacy, 0, R),
                (v("old", R), Outcome::Written { written: false, old: None, current_revision: R }),
                "cas={named}"
            );
            let del = KeyOp::DeleteIfRevision { revision: named };
            assert_eq!(apply_change(&del, &legacy, 0, R), (v("old", R), Outcome::Deleted { count: 0 }));
        }
        // A read rewrites it with a revision (so it is answered with one), expiry kept.
        let legacy_x = vx("old", 100, REVISION_UNKNOWN);
        assert_eq!(apply_change(&KeyOp::Read, &legacy_x, 0, R), (vx("old", 100, R), Outcome::Value(vx("old", 100, R))));
        // An expired one is simply gone.
        assert_eq!(apply_change(&KeyOp::Read, &legacy_x, 100, R), (None, Outcome::Value(None)));
        // Any other change applies as usual, and what it keeps gets the revision too.
        assert_eq!(
            apply_change(&KeyOp::Append { value: b"!".to_vec(), value_bytes_max: 10 }, &legacy, 0, R).0,
            v("old!", R)
        );
        let nx = KeyOp::Set { value: b"b".to_vec(), cond: SetCond::IfAbsent, return_old: false, ttl: Ttl::Clear };
        assert_eq!(
            apply_change(&nx, &legacy, 0, R),
            (v("old", R), Outcome::Written { written: false, old: None, current_revision: R })
        );
    }

    #[test]
    fn the_envelope_round_trips_and_refuses_malformed_bytes() {
        for (value, at) in [(&b""[..], None), (&b"hello"[..], Some(0)), (&[0xff; 40][..], Some(u64::MAX))] {
            for revision in [REVISION_UNKNOWN, 1, u64::MAX] {
                let raw = encode_register_value(value, at, revision);
                assert!(raw.len() <= value.len() + ENVELOPE_BYTES_MAX);
                assert_eq!(decode_register_value(&raw), Ok(UserValue { value, expires_at: at, revision }));
            }
        }
        // Writes use the tags with a revision.
        assert_eq!(encode_register_value(b"", None, 1)[0], TAG_PERSISTENT_REVISION);
        assert_eq!(encode_register_value(b"", Some(1), 1)[0], TAG_EXPIRES_REVISION);
        assert_eq!(encode_register_value(b"ab", Some(1), 1).len(), 2 + ENVELOPE_BYTES_MAX);
        assert!(decode_register_value(&[]).is_err());
        assert!(decode_register_value(&[TAG_EXPIRES, 1, 2, 3]).is_err());
        assert!(decode_register_value(&[TAG_PERSISTENT_REVISION, 0, 0, 0, 0, 0, 0, 1]).is_err());
        let mut short_expiry = vec![TAG_EXPIRES_REVISION];
        short_expiry.extend_from_slice(&5u64.to_be_bytes());
        short_expiry.extend_from_slice(&[1, 2]);
        assert!(decode_register_value(&short_expiry).is_err());
        let mut zero = vec![TAG_PERSISTENT_REVISION];
        zero.extend_from_slice(&0u64.to_be_bytes());
        assert!(decode_register_value(&zero).unwrap_err().0.contains("revision 0"));
        assert!(decode_register_value(&[7, b'a']).is_err());
        // A malformed register is refused, never applied over, never a panic.
        let bad = Some(vec![9u8, 1, 2]);
        let (next, outcome) = apply_change(&set("a", Ttl::Clear), &bad, 0, R);
        assert_eq!(next, bad);
        assert!(matches!(outcome, Outcome::Rejected(m) if m.contains("malformed register")));
    }

    #[test]
    fn a_value_is_never_accepted_below_the_ballot_that_wrote_it() {
        let raw = encode_register_value(b"v", None, 5);
        assert!(decode_accepted_value(&raw, Ballot::new(5, crate::NodeId(1))).is_ok());
        assert!(decode_accepted_value(&raw, Ballot::new(9, crate::NodeId(1))).is_ok());
        let e = decode_accepted_value(&raw, Ballot::new(4, crate::NodeId(9))).unwrap_err();
        assert!(e.0.contains("revision above"), "{e}");
        // A value from before revisions may sit at any ballot.
        assert!(decode_accepted_value(&encode_register_value(b"v", None, 0), Ballot::ZERO).is_ok());
    }

    #[test]
    fn expiry_is_judged_at_the_time_passed_in() {
        let (next, _) = apply_change(&set("a", Ttl::In(100)), &None, 1_000, R);
        assert_eq!(next, vx("a", 1_100, R));
        let live = |at| live_value(&next, at).unwrap().map(|d| (d.value, d.expires_at));
        assert_eq!(live(1_099), Some((&b"a"[..], Some(1_100))));
        assert_eq!(live(1_100), None);
        // Before the expiry a read keeps the register; at it, the read writes a tombstone.
        assert_eq!(apply_change(&KeyOp::Read, &next, 1_099, R + 1), (next.clone(), Outcome::Value(next.clone())));
        assert_eq!(apply_change(&KeyOp::Read, &next, 1_100, R + 1), (None, Outcome::Value(None)));
        // The expirer's op removes only what is due.
        assert_eq!(apply_change(&KeyOp::ExpireDue, &next, 1_099, R + 1).0, next);
        assert_eq!(apply_change(&KeyOp::ExpireDue, &next, 1_100, R + 1).0, None);
        // KEEPTTL keeps it, PERSIST drops it, EXPIRE NX only sets one where none is.
        let kept = apply_change(&set("b", Ttl::Keep), &next, 1_050, 8).0;
        assert_eq!(kept, vx("b", 1_100, 8));
        assert_eq!(apply_change(&KeyOp::Persist, &kept, 1_050, 9).0, v("b", 9));
        let nx = KeyOp::Expire { ttl: Ttl::At(5_000), cond: ExpireCond::IfNone };
        assert_eq!(apply_change(&nx, &kept, 1_050, 9).0, kept);
        assert_eq!(apply_change(&nx, &v("b", 8), 1_050, 9).0, vx("b", 5_000, 9));
        // INCR on an expired key starts from absent.
        assert_eq!(apply_change(&KeyOp::IncrBy(1), &vx("41", 10, 3), 10, R), (v("1", R), Outcome::Integer(1)));
    }

    #[test]
    fn append_is_bounded_by_the_core_value_limit() {
        let full = Some(encode_register_value(&vec![b'a'; crate::VALUE_BYTES_MAX], None, 3));
        let (next, outcome) =
            apply_change(&KeyOp::Append { value: b"x".to_vec(), value_bytes_max: usize::MAX }, &full, 0, R);
        assert_eq!(next, full);
        assert!(matches!(outcome, Outcome::Rejected(m) if m.contains("value_bytes_max")));
    }
}
