//! The meaning of every command, as pure functions.
//!
//! [`apply_op`] is the whole semantics of one [`KeyOp`] on one key: the current value and its
//! revision in, what to write and what to answer out. [`plan`] splits a [`Command`] into per-key
//! ops and [`combine`] folds their outcomes into the command's. Leader mode's state machine
//! applies all of a command's ops in one log entry through [`apply_command`]; multi-master mode
//! proposes each op as the CASPaxos change of its key. Both therefore answer alike by
//! construction; `crates/raft/tests/command_model.rs` checks it against a plain model.

use crate::command::{Command, ExpireCond, KeyOp, SetCond, Ttl};
use crate::event::{leader_mode_only, Cause, Event, EventKind};
use crate::lease::{self, Leases, KEYS_PER_LEASE_MAX, LEASES_MAX};
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
    /// Revision of the last write (leader mode: its log index; multi-master mode: the ballot
    /// counter it was applied at).
    pub revision: u64,
    /// When the key expires (Unix ms; `None`: never).
    pub expires_at: Option<u64>,
}

impl Current<'_> {
    /// True when the key has expired at `now_ms`: from then on it is absent to every command.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= now_ms)
    }
}

/// A key's stored value and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub value: Vec<u8>,
    pub revision: u64,
    /// When the key expires (Unix ms; `None`: never).
    pub expires_at: Option<u64>,
}

impl Record {
    pub fn as_current(&self) -> Current<'_> {
        Current { value: &self.value, revision: self.revision, expires_at: self.expires_at }
    }
}

/// What an op does to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Leave the key as it is.
    Keep,
    /// Store this value and expiry (at the op's revision).
    Put { value: Vec<u8>, expires_at: Option<u64> },
    /// Remove the key.
    Delete,
    /// Remove the key because it had expired (watchers see an `expire`, not a `delete`).
    Expire,
}

/// Where and when an op applies: the same on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The revision the write gets (leader mode: the entry's log index; multi-master mode: the
    /// counter of the ballot the change is applied at).
    pub revision: u64,
    /// The time of the write, Unix ms: expiry is judged against it.
    pub now_ms: u64,
    /// The mode's ceiling on the value APPEND may build (the op's own bound applies below it);
    /// the same constant on every replica.
    pub value_bytes_max: usize,
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

/// Applies `op` at `ctx` to a key holding `current` (`None`: absent). A key that has expired by
/// `ctx.now_ms` is absent to every op, and an op that leaves it removes it ([`Write::Expire`]),
/// so an expired key is never seen again by any replica that applies the same ops.
pub fn apply_op(op: &KeyOp, current: Option<Current<'_>>, ctx: Ctx) -> (Write, Outcome) {
    let expired = current.is_some_and(|c| c.expired(ctx.now_ms));
    if let KeyOp::ExpireDue = op {
        return if expired {
            (Write::Expire, Outcome::Deleted { count: 1 })
        } else {
            (Write::Keep, Outcome::Deleted { count: 0 })
        };
    }
    let live = if expired { None } else { current };
    match apply_live(op, live, ctx) {
        (Write::Keep, outcome) if expired => (Write::Expire, outcome),
        other => other,
    }
}

/// [`apply_op`] on a key that is live (or absent).
fn apply_live(op: &KeyOp, current: Option<Current<'_>>, ctx: Ctx) -> (Write, Outcome) {
    let Ctx { revision, now_ms, value_bytes_max } = ctx;
    let current_revision = current.map_or(0, |c| c.revision);
    let current_expiry = current.and_then(|c| c.expires_at);
    // A value keeps the key's expiry (INCR, APPEND).
    let put_keeping = |value: Vec<u8>| Write::Put { value, expires_at: current_expiry };
    let put = |value: Vec<u8>| Write::Put { value, expires_at: None };
    match op {
        KeyOp::Read => (Write::Keep, Outcome::Value(current.map(|c| c.value.to_vec()))),
        KeyOp::Set { value, cond, return_old, ttl } => {
            let write = match cond {
                SetCond::Always => true,
                SetCond::IfAbsent => current.is_none(),
                SetCond::IfPresent => current.is_some(),
            };
            let old = if *return_old { current.map(|c| c.value.to_vec()) } else { None };
            if !write {
                return (Write::Keep, Outcome::Written { written: false, old, current_revision });
            }
            let expires_at = ttl.resolve(now_ms, current_expiry);
            // Already expired (EXAT in the past): the key is gone at once, as in Redis.
            let w = if expires_at.is_some_and(|t| t <= now_ms) {
                Write::Delete
            } else {
                Write::Put { value: value.clone(), expires_at }
            };
            (w, Outcome::Written { written: true, old, current_revision: revision })
        }
        KeyOp::Delete => match current {
            Some(_) => (Write::Delete, Outcome::Deleted { count: 1 }),
            None => (Write::Keep, Outcome::Deleted { count: 0 }),
        },
        KeyOp::DeleteIfRevision { revision: expected } => match current {
            Some(c) if c.revision == *expected => (Write::Delete, Outcome::Deleted { count: 1 }),
            _ => (Write::Keep, Outcome::Deleted { count: 0 }),
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
                Some(n) => (put_keeping(n.to_string().into_bytes()), Outcome::Integer(n)),
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
            (put_keeping(v), Outcome::Integer(len as i64))
        }
        KeyOp::Cas { expected, new } => {
            if current.map(|c| c.value) == expected.as_deref() {
                (put(new.clone()), Outcome::Swapped(true))
            } else {
                (Write::Keep, Outcome::Swapped(false))
            }
        }
        KeyOp::PutIfRevision { revision: expected, value } => {
            if current_revision == *expected {
                (put(value.clone()), Outcome::Written { written: true, old: None, current_revision: revision })
            } else {
                (Write::Keep, Outcome::Written { written: false, old: None, current_revision })
            }
        }
        KeyOp::Expire { ttl, cond } => {
            let Some(c) = current else { return (Write::Keep, Outcome::Integer(0)) };
            let Some(at) = ttl.resolve(now_ms, c.expires_at) else { return (Write::Keep, Outcome::Integer(0)) };
            let allowed = match (cond, c.expires_at) {
                (ExpireCond::Always, _) => true,
                (ExpireCond::IfNone, cur) => cur.is_none(),
                (ExpireCond::IfSome, cur) => cur.is_some(),
                // No expiry is infinite: nothing is greater, everything is less.
                (ExpireCond::IfGreater, cur) => cur.is_some_and(|t| at > t),
                (ExpireCond::IfLess, cur) => cur.is_none_or(|t| at < t),
                (ExpireCond::IfSomeAndLess, cur) => cur.is_some_and(|t| at < t),
            };
            if !allowed {
                (Write::Keep, Outcome::Integer(0))
            } else if at <= now_ms {
                (Write::Delete, Outcome::Integer(1))
            } else {
                (Write::Put { value: c.value.to_vec(), expires_at: Some(at) }, Outcome::Integer(1))
            }
        }
        KeyOp::Persist => match current {
            Some(c) if c.expires_at.is_some() => (put(c.value.to_vec()), Outcome::Integer(1)),
            _ => (Write::Keep, Outcome::Integer(0)),
        },
        KeyOp::GetEx(ttl) => {
            let Some(c) = current else { return (Write::Keep, Outcome::Value(None)) };
            let answer = Outcome::Value(Some(c.value.to_vec()));
            let at = ttl.resolve(now_ms, c.expires_at);
            if at == c.expires_at {
                (Write::Keep, answer)
            } else if at.is_some_and(|t| t <= now_ms) {
                (Write::Delete, answer)
            } else {
                (Write::Put { value: c.value.to_vec(), expires_at: at }, answer)
            }
        }
        KeyOp::GetDel => match current {
            Some(c) => (Write::Delete, Outcome::Value(Some(c.value.to_vec()))),
            None => (Write::Keep, Outcome::Value(None)),
        },
        KeyOp::ExpireDue => (Write::Keep, Outcome::Deleted { count: 0 }),
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
        Command::Set { key, value, cond, return_old, ttl } => {
            (vec![(key, KeyOp::Set { value, cond, return_old, ttl })], Combine::One)
        }
        Command::MSet { pairs } => (
            pairs
                .into_iter()
                .map(|(k, value)| (k, KeyOp::Set { value, cond: SetCond::Always, return_old: false, ttl: Ttl::Clear }))
                .collect(),
            Combine::MSet,
        ),
        Command::Del { keys } => (keys.into_iter().map(|k| (k, KeyOp::Delete)).collect(), Combine::Del),
        Command::Delete { key } => (vec![(key, KeyOp::Delete)], Combine::Del),
        Command::DeleteIfRevision { key, revision } => {
            (vec![(key, KeyOp::DeleteIfRevision { revision })], Combine::Del)
        }
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
        Command::Expire { key, ttl, cond } => (vec![(key, KeyOp::Expire { ttl, cond })], Combine::One),
        Command::Persist { key } => (vec![(key, KeyOp::Persist)], Combine::One),
        Command::GetEx { key, ttl } => (vec![(key, KeyOp::GetEx(ttl))], Combine::One),
        Command::GetDel { key } => (vec![(key, KeyOp::GetDel)], Combine::One),
        Command::ExpireDue { keys } => (keys.into_iter().map(|k| (k, KeyOp::ExpireDue)).collect(), Combine::Del),
        Command::Batch(_) => return Err(KvError::BadRequest("a batch has no per-key plan".into())),
        // Leases belong to leader mode's state ([`apply_command`] applies them whole); a mode
        // that plans per key has none.
        Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } | Command::PutLeased { .. } => {
            return Err(KvError::BadRequest(leader_mode_only("leases")))
        }
        Command::At { .. } => return Err(KvError::BadRequest("a stamped command has no per-key plan".into())),
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
    fn put(&mut self, key: &[u8], revision: u64, value: &[u8], expires_at: Option<u64>) -> Result<(), Self::Error>;
    fn delete(&mut self, key: &[u8]) -> Result<(), Self::Error>;
    /// Removes a key that expired (a delete that watchers see as `expire`).
    fn expire(&mut self, key: &[u8]) -> Result<(), Self::Error> {
        self.delete(key)
    }
    /// Takes the event of a write just made ([`crate::event`]), in the order the writes were
    /// made; a state that keeps history stores it with them. Never called for reserved keys.
    fn record(&mut self, event: Event) -> Result<(), Self::Error> {
        let _ = event;
        Ok(())
    }
    /// The state's lease records, if it keeps any (leader mode does; multi-master mode has no
    /// leases, and its per-key plan refuses every lease command before it gets here). Without
    /// them a lease command is rejected with [`leader_mode_only`].
    fn leases(&mut self) -> Option<&mut dyn Leases<Error = Self::Error>> {
        None
    }
}

/// Applies `op` to `key`: reads it, writes what the op decides, detaches the key from its lease
/// when the write changes or removes it (only [`Command::PutLeased`] attaches, after this), and
/// records the event.
fn apply_key_op<S: State>(state: &mut S, ctx: Ctx, key: &[u8], op: &KeyOp) -> Result<(Write, Outcome), S::Error> {
    let current = state.get(key)?;
    let (write, outcome) = apply_op(op, current.as_ref().map(Record::as_current), ctx);
    match &write {
        Write::Keep => {}
        Write::Put { value, expires_at } => state.put(key, ctx.revision, value, *expires_at)?,
        Write::Delete => state.delete(key)?,
        Write::Expire => state.expire(key)?,
    }
    if write != Write::Keep {
        if let Some(leases) = state.leases() {
            leases.detach(key)?;
        }
    }
    if let Some(cause) = Cause::of(op, &write).filter(|_| !crate::reserved::is_reserved(key)) {
        let (kind, value, expires_at) = match &write {
            Write::Put { value, expires_at } => (EventKind::Put, value.clone(), *expires_at),
            Write::Expire => (EventKind::Expire, Vec::new(), None),
            Write::Delete | Write::Keep => (EventKind::Delete, Vec::new(), None),
        };
        state.record(Event { revision: ctx.revision, kind, key: key.to_vec(), value, expires_at, cause })?;
    }
    Ok((write, outcome))
}

/// The lease commands, applied whole (see [`Command::LeaseGrant`], [`Command::LeaseRevoke`],
/// [`Command::PutLeased`]). Every limit is checked here too, so every replica decides alike
/// whatever was checked before proposing.
fn apply_lease_command<S: State>(state: &mut S, ctx: Ctx, cmd: &Command) -> Result<Outcome, S::Error> {
    let rejected = |m: String| Ok(Outcome::Rejected(m));
    if state.leases().is_none() {
        return rejected(leader_mode_only("leases"));
    }
    match cmd {
        Command::LeaseGrant { ttl_ms } => {
            let Some(leases) = state.leases() else { return rejected(leader_mode_only("leases")) };
            if let Some(e) = lease::ttl_out_of_range(*ttl_ms) {
                return rejected(e);
            }
            if leases.lease_count()? >= LEASES_MAX {
                return rejected(lease::too_many_leases());
            }
            let id = leases.lease_create(*ttl_ms)?;
            Ok(Outcome::Integer(id as i64))
        }
        Command::LeaseRevoke { id, expired } => {
            let Some(leases) = state.leases() else { return rejected(leader_mode_only("leases")) };
            if leases.lease_ttl(*id)?.is_none() {
                return rejected(lease::lease_not_found(*id));
            }
            let keys = leases.lease_keys(*id)?;
            let mut count = 0u64;
            for key in &keys {
                let Some(current) = state.get(key)? else { continue };
                // A key whose own TTL ran out first expires as such.
                let (kind, cause) = if current.as_current().expired(ctx.now_ms) {
                    (EventKind::Expire, Cause::Expired)
                } else if *expired {
                    (EventKind::Expire, Cause::LeaseExpired)
                } else {
                    (EventKind::Delete, Cause::LeaseRevoked)
                };
                match kind {
                    EventKind::Expire => state.expire(key)?,
                    _ => state.delete(key)?,
                }
                if let Some(leases) = state.leases() {
                    leases.detach(key)?;
                }
                count += 1;
                if !crate::reserved::is_reserved(key) {
                    let event = Event {
                        revision: ctx.revision,
                        kind,
                        key: key.clone(),
                        value: Vec::new(),
                        expires_at: None,
                        cause,
                    };
                    state.record(event)?;
                }
            }
            if let Some(leases) = state.leases() {
                leases.lease_remove(*id)?;
            }
            Ok(Outcome::Deleted { count })
        }
        Command::PutLeased { key, value, lease: id, if_absent } => {
            let Some(leases) = state.leases() else { return rejected(leader_mode_only("leases")) };
            if leases.lease_ttl(*id)?.is_none() {
                return rejected(lease::lease_not_found(*id));
            }
            if leases.key_lease(key)? != Some(*id)
                && leases.lease_key_count(*id, KEYS_PER_LEASE_MAX)? >= KEYS_PER_LEASE_MAX
            {
                return rejected(lease::lease_full(*id));
            }
            let cond = if *if_absent { SetCond::IfAbsent } else { SetCond::Always };
            let op = KeyOp::Set { value: value.clone(), cond, return_old: false, ttl: Ttl::Clear };
            let (write, outcome) = apply_key_op(state, ctx, key, &op)?;
            if let (Write::Put { .. }, Some(leases)) = (&write, state.leases()) {
                leases.attach(key, *id)?;
            }
            Ok(outcome)
        }
        other => rejected(format!("{} is not a lease command", other.name())),
    }
}

/// Applies a whole command to `state` at `ctx`: every op in order, then [`combine`]. A batch
/// applies each of its commands in order and answers [`Outcome::Batch`]. A [`Command::At`]
/// applies its command at its stamp, or at `ctx.now_ms` if that is later (time never goes
/// back).
pub fn apply_command<S: State>(state: &mut S, ctx: Ctx, cmd: &Command) -> Result<Outcome, S::Error> {
    match cmd {
        Command::Batch(cmds) => {
            let mut outs = Vec::with_capacity(cmds.len());
            for c in cmds {
                outs.push(apply_command(state, ctx, c)?);
            }
            return Ok(Outcome::Batch(outs));
        }
        Command::At { now_ms, cmd } => {
            return apply_command(state, Ctx { now_ms: ctx.now_ms.max(*now_ms), ..ctx }, cmd);
        }
        Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } | Command::PutLeased { .. } => {
            return apply_lease_command(state, ctx, cmd);
        }
        _ => {}
    }
    let (ops, how) = match plan(cmd.clone()) {
        Ok(p) => p,
        Err(e) => return Ok(Outcome::Rejected(e.to_string())),
    };
    let mut outcomes = Vec::with_capacity(ops.len());
    for (key, op) in &ops {
        outcomes.push(apply_key_op(state, ctx, key, op)?.1);
    }
    Ok(combine(how, outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cur(v: &[u8]) -> Option<Current<'_>> {
        Some(Current { value: v, revision: 7, expires_at: None })
    }

    const MAX: usize = 16;
    /// The time of every write in these tests (Unix ms).
    const NOW: u64 = 1_000_000;

    fn ctx(revision: u64) -> Ctx {
        Ctx { revision, now_ms: NOW, value_bytes_max: MAX }
    }

    fn put(v: Vec<u8>) -> Write {
        Write::Put { value: v, expires_at: None }
    }

    #[test]
    fn set_honours_nx_xx_and_get() {
        let set = |cond, return_old| KeyOp::Set { value: b"n".to_vec(), cond, return_old, ttl: Ttl::Clear };
        assert_eq!(
            apply_op(&set(SetCond::Always, true), cur(b"o"), ctx(9)),
            (put(b"n".to_vec()), Outcome::Written { written: true, old: Some(b"o".to_vec()), current_revision: 9 })
        );
        assert_eq!(
            apply_op(&set(SetCond::IfAbsent, true), cur(b"o"), ctx(9)),
            (Write::Keep, Outcome::Written { written: false, old: Some(b"o".to_vec()), current_revision: 7 })
        );
        assert_eq!(
            apply_op(&set(SetCond::IfPresent, false), None, ctx(9)),
            (Write::Keep, Outcome::Written { written: false, old: None, current_revision: 0 })
        );
    }

    #[test]
    fn incr_parses_like_redis_and_refuses_overflow() {
        let inc = |d| KeyOp::IncrBy(d);
        assert_eq!(apply_op(&inc(5), None, ctx(1)).1, Outcome::Integer(5));
        assert_eq!(apply_op(&inc(-7), cur(b"5"), ctx(1)), (put(b"-2".to_vec()), Outcome::Integer(-2)));
        for bad in [&b"x1"[..], b"+1", b"", b" 1", b"01", b"-0", b"-", b"1 ", b"99999999999999999999"] {
            assert_eq!(apply_op(&inc(1), cur(bad), ctx(1)), (Write::Keep, Outcome::Rejected(NOT_AN_INTEGER.into())));
        }
        let max = i64::MAX.to_string();
        assert_eq!(apply_op(&inc(1), cur(max.as_bytes()), ctx(1)).1, Outcome::Rejected(OVERFLOW.into()));
        let min = i64::MIN.to_string();
        assert_eq!(apply_op(&inc(-1), cur(min.as_bytes()), ctx(1)).1, Outcome::Rejected(OVERFLOW.into()));
        assert_eq!(apply_op(&inc(0), cur(min.as_bytes()), ctx(1)).1, Outcome::Integer(i64::MIN));
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
    }

    #[test]
    fn append_is_bounded_and_cas_compares_values() {
        let append = |v: &[u8], bound| KeyOp::Append { value: v.to_vec(), value_bytes_max: bound };
        assert_eq!(apply_op(&append(b"cd", usize::MAX), cur(b"ab"), ctx(1)).1, Outcome::Integer(4));
        let (w, o) = apply_op(&append(&[0; 3], usize::MAX), cur(&[0; 14]), ctx(1));
        assert_eq!(w, Write::Keep);
        assert_eq!(o, Outcome::Rejected("value of 17 bytes exceeds the limit of 16 bytes (value_bytes_max)".into()));
        // The op's own bound (the limit of the replica that took it) applies below the ceiling.
        let (w, o) = apply_op(&append(b"cd", 3), cur(b"ab"), ctx(1));
        assert_eq!(w, Write::Keep);
        assert_eq!(o, Outcome::Rejected("value of 4 bytes exceeds the limit of 3 bytes (value_bytes_max)".into()));
        assert_eq!(apply_op(&append(b"c", 3), cur(b"ab"), ctx(1)).1, Outcome::Integer(3));
        let cas = KeyOp::Cas { expected: Some(b"a".to_vec()), new: b"b".to_vec() };
        assert_eq!(apply_op(&cas, cur(b"a"), ctx(1)), (put(b"b".to_vec()), Outcome::Swapped(true)));
        assert_eq!(apply_op(&cas, None, ctx(1)), (Write::Keep, Outcome::Swapped(false)));
        let create = KeyOp::Cas { expected: None, new: b"b".to_vec() };
        assert_eq!(apply_op(&create, None, ctx(1)).1, Outcome::Swapped(true));
    }

    #[test]
    fn put_if_revision_compares_revisions() {
        let op = KeyOp::PutIfRevision { revision: 7, value: b"v".to_vec() };
        assert_eq!(
            apply_op(&op, cur(b"x"), ctx(9)),
            (put(b"v".to_vec()), Outcome::Written { written: true, old: None, current_revision: 9 })
        );
        let stale = KeyOp::PutIfRevision { revision: 6, value: b"v".to_vec() };
        assert_eq!(
            apply_op(&stale, cur(b"x"), ctx(9)).1,
            Outcome::Written { written: false, old: None, current_revision: 7 }
        );
    }

    fn ttl_cur(v: &[u8], expires_at: Option<u64>) -> Option<Current<'_>> {
        Some(Current { value: v, revision: 7, expires_at })
    }

    #[test]
    fn an_expired_key_is_absent_to_every_op_and_an_op_removes_it() {
        let gone = ttl_cur(b"5", Some(NOW));
        assert_eq!(apply_op(&KeyOp::Read, gone, ctx(9)), (Write::Expire, Outcome::Value(None)));
        assert_eq!(apply_op(&KeyOp::IncrBy(1), gone, ctx(9)), (put(b"1".to_vec()), Outcome::Integer(1)));
        let nx = KeyOp::Set { value: b"n".to_vec(), cond: SetCond::IfAbsent, return_old: true, ttl: Ttl::Clear };
        assert_eq!(
            apply_op(&nx, gone, ctx(9)),
            (put(b"n".to_vec()), Outcome::Written { written: true, old: None, current_revision: 9 })
        );
        assert_eq!(apply_op(&KeyOp::ExpireDue, gone, ctx(9)), (Write::Expire, Outcome::Deleted { count: 1 }));
        let live = ttl_cur(b"5", Some(NOW + 1));
        assert_eq!(apply_op(&KeyOp::ExpireDue, live, ctx(9)), (Write::Keep, Outcome::Deleted { count: 0 }));
        assert_eq!(apply_op(&KeyOp::Read, live, ctx(9)).1, Outcome::Value(Some(b"5".to_vec())));
    }

    #[test]
    fn writes_set_keep_and_clear_the_expiry_like_redis() {
        let live = ttl_cur(b"5", Some(NOW + 50));
        let put_at = |v: &[u8], at| Write::Put { value: v.to_vec(), expires_at: at };
        // INCR and APPEND keep it; a plain SET clears it; KEEPTTL keeps it; EX sets it.
        assert_eq!(apply_op(&KeyOp::IncrBy(1), live, ctx(9)).0, put_at(b"6", Some(NOW + 50)));
        let append = KeyOp::Append { value: b"x".to_vec(), value_bytes_max: MAX };
        assert_eq!(apply_op(&append, live, ctx(9)).0, put_at(b"5x", Some(NOW + 50)));
        let set = |ttl| KeyOp::Set { value: b"n".to_vec(), cond: SetCond::Always, return_old: false, ttl };
        assert_eq!(apply_op(&set(Ttl::Clear), live, ctx(9)).0, put_at(b"n", None));
        assert_eq!(apply_op(&set(Ttl::Keep), live, ctx(9)).0, put_at(b"n", Some(NOW + 50)));
        assert_eq!(apply_op(&set(Ttl::In(10)), live, ctx(9)).0, put_at(b"n", Some(NOW + 10)));
        assert_eq!(apply_op(&set(Ttl::At(5)), live, ctx(9)).0, Write::Delete, "an expiry in the past removes it");
        // PERSIST, GETEX and GETDEL.
        assert_eq!(apply_op(&KeyOp::Persist, live, ctx(9)), (put_at(b"5", None), Outcome::Integer(1)));
        assert_eq!(apply_op(&KeyOp::Persist, cur(b"5"), ctx(9)), (Write::Keep, Outcome::Integer(0)));
        let v5 = Outcome::Value(Some(b"5".to_vec()));
        assert_eq!(apply_op(&KeyOp::GetEx(Ttl::In(7)), cur(b"5"), ctx(9)), (put_at(b"5", Some(NOW + 7)), v5.clone()));
        assert_eq!(apply_op(&KeyOp::GetEx(Ttl::At(1)), cur(b"5"), ctx(9)), (Write::Delete, v5.clone()));
        assert_eq!(apply_op(&KeyOp::GetEx(Ttl::Keep), live, ctx(9)), (Write::Keep, v5.clone()));
        assert_eq!(apply_op(&KeyOp::GetDel, live, ctx(9)), (Write::Delete, v5));
        assert_eq!(apply_op(&KeyOp::GetDel, None, ctx(9)), (Write::Keep, Outcome::Value(None)));
    }

    #[test]
    fn expire_conditions_count_no_expiry_as_infinite() {
        let exp = |ttl, cond| KeyOp::Expire { ttl, cond };
        let none = cur(b"v");
        let some = ttl_cur(b"v", Some(NOW + 100));
        let set_to = |at| Write::Put { value: b"v".to_vec(), expires_at: Some(at) };
        let cases = [
            (ExpireCond::IfNone, none, Ttl::In(10), 1),
            (ExpireCond::IfNone, some, Ttl::In(10), 0),
            (ExpireCond::IfSome, none, Ttl::In(10), 0),
            (ExpireCond::IfSome, some, Ttl::In(10), 1),
            (ExpireCond::IfGreater, none, Ttl::In(10), 0),
            (ExpireCond::IfGreater, some, Ttl::In(100), 0),
            (ExpireCond::IfGreater, some, Ttl::In(101), 1),
            (ExpireCond::IfLess, none, Ttl::In(1_000_000), 1),
            (ExpireCond::IfLess, some, Ttl::In(100), 0),
            (ExpireCond::IfLess, some, Ttl::In(99), 1),
            (ExpireCond::IfSomeAndLess, none, Ttl::In(10), 0),
            (ExpireCond::IfSomeAndLess, some, Ttl::In(100), 0),
            (ExpireCond::IfSomeAndLess, some, Ttl::In(99), 1),
        ];
        for (cond, current, ttl, want) in cases {
            let (w, o) = apply_op(&exp(ttl, cond), current, ctx(9));
            assert_eq!(o, Outcome::Integer(want), "{cond:?} {current:?} {ttl:?}");
            let Ttl::In(ms) = ttl else { unreachable!() };
            let expected = if want == 1 { set_to(NOW + ms as u64) } else { Write::Keep };
            assert_eq!(w, expected, "{cond:?} {current:?} {ttl:?}");
        }
        assert_eq!(apply_op(&exp(Ttl::In(10), ExpireCond::Always), None, ctx(9)).1, Outcome::Integer(0));
        assert_eq!(
            apply_op(&exp(Ttl::In(-1), ExpireCond::Always), none, ctx(9)),
            (Write::Delete, Outcome::Integer(1)),
            "an expiry in the past deletes the key"
        );
        assert_eq!(apply_op(&exp(Ttl::At(0), ExpireCond::Always), none, ctx(9)), (Write::Delete, Outcome::Integer(1)));
    }

    #[test]
    fn a_stamp_moves_time_forward_only() {
        let mut m = Map(BTreeMap::new());
        let set = Command::Set {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            cond: SetCond::Always,
            return_old: false,
            ttl: Ttl::In(10),
        };
        apply_command(&mut m, ctx(1), &Command::At { now_ms: NOW + 5, cmd: Box::new(set.clone()) }).unwrap();
        assert_eq!(m.0[&b"k".to_vec()].expires_at, Some(NOW + 15));
        apply_command(&mut m, ctx(2), &Command::At { now_ms: 3, cmd: Box::new(set) }).unwrap();
        assert_eq!(m.0[&b"k".to_vec()].expires_at, Some(NOW + 10), "a stamp behind the state's clock is not used");
    }

    struct Map(BTreeMap<Vec<u8>, Record>);

    impl State for Map {
        type Error = ();
        fn get(&mut self, key: &[u8]) -> Result<Option<Record>, ()> {
            Ok(self.0.get(key).cloned())
        }
        fn put(&mut self, key: &[u8], revision: u64, value: &[u8], expires_at: Option<u64>) -> Result<(), ()> {
            self.0.insert(key.to_vec(), Record { value: value.to_vec(), revision, expires_at });
            Ok(())
        }
        fn delete(&mut self, key: &[u8]) -> Result<(), ()> {
            self.0.remove(key);
            Ok(())
        }
    }

    /// A [`Map`] that keeps the events it was given.
    struct Recording(Map, Vec<Event>);

    impl State for Recording {
        type Error = ();
        fn get(&mut self, key: &[u8]) -> Result<Option<Record>, ()> {
            self.0.get(key)
        }
        fn put(&mut self, key: &[u8], revision: u64, value: &[u8], expires_at: Option<u64>) -> Result<(), ()> {
            self.0.put(key, revision, value, expires_at)
        }
        fn delete(&mut self, key: &[u8]) -> Result<(), ()> {
            self.0.delete(key)
        }
        fn record(&mut self, event: Event) -> Result<(), ()> {
            self.1.push(event);
            Ok(())
        }
    }

    #[test]
    fn every_write_records_one_event_in_order_and_reserved_keys_none() {
        let mut r = Recording(Map(BTreeMap::new()), Vec::new());
        let set = |k: &[u8], ttl| Command::Set {
            key: k.to_vec(),
            value: b"v".to_vec(),
            cond: SetCond::Always,
            return_old: false,
            ttl,
        };
        apply_command(&mut r, ctx(1), &set(b"a", Ttl::In(100))).unwrap();
        apply_command(&mut r, ctx(2), &Command::Del { keys: vec![b"a".to_vec(), b"gone".to_vec()] }).unwrap();
        apply_command(&mut r, ctx(3), &set(b"\xff\xfeacl/x", Ttl::Clear)).unwrap();
        apply_command(&mut r, ctx(4), &set(b"b", Ttl::In(1))).unwrap();
        let later = Ctx { now_ms: NOW + 5, ..ctx(5) };
        apply_command(&mut r, later, &Command::ExpireDue { keys: vec![b"b".to_vec()] }).unwrap();
        let seen: Vec<(u64, EventKind, &[u8], Cause)> =
            r.1.iter().map(|e| (e.revision, e.kind, e.key.as_slice(), e.cause)).collect();
        assert_eq!(
            seen,
            vec![
                (1, EventKind::Put, &b"a"[..], Cause::SetWithExpiry),
                (2, EventKind::Delete, &b"a"[..], Cause::Del),
                (4, EventKind::Put, &b"b"[..], Cause::SetWithExpiry),
                (5, EventKind::Expire, &b"b"[..], Cause::Expired),
            ],
            "a delete of an absent key changes nothing and the reserved key is never seen"
        );
        assert_eq!(r.1[0].expires_at, Some(NOW + 100));
        assert_eq!(r.1[0].value, b"v");
    }

    /// A [`Recording`] with leases, as leader mode keeps them.
    #[derive(Default)]
    struct Leased {
        kv: BTreeMap<Vec<u8>, Record>,
        events: Vec<Event>,
        leases: BTreeMap<u64, u64>,
        attached: BTreeMap<Vec<u8>, u64>,
        next_id: u64,
    }

    impl State for Leased {
        type Error = ();
        fn get(&mut self, key: &[u8]) -> Result<Option<Record>, ()> {
            Ok(self.kv.get(key).cloned())
        }
        fn put(&mut self, key: &[u8], revision: u64, value: &[u8], expires_at: Option<u64>) -> Result<(), ()> {
            self.kv.insert(key.to_vec(), Record { value: value.to_vec(), revision, expires_at });
            Ok(())
        }
        fn delete(&mut self, key: &[u8]) -> Result<(), ()> {
            self.kv.remove(key);
            Ok(())
        }
        fn record(&mut self, event: Event) -> Result<(), ()> {
            self.events.push(event);
            Ok(())
        }
        fn leases(&mut self) -> Option<&mut dyn Leases<Error = ()>> {
            Some(self)
        }
    }

    impl Leases for Leased {
        type Error = ();
        fn lease_ttl(&mut self, id: u64) -> Result<Option<u64>, ()> {
            Ok(self.leases.get(&id).copied())
        }
        fn lease_count(&mut self) -> Result<usize, ()> {
            Ok(self.leases.len())
        }
        fn lease_create(&mut self, ttl_ms: u64) -> Result<u64, ()> {
            let id = self.next_id.max(lease::LEASE_ID_FIRST);
            self.next_id = id + 1;
            self.leases.insert(id, ttl_ms);
            Ok(id)
        }
        fn lease_remove(&mut self, id: u64) -> Result<(), ()> {
            self.leases.remove(&id);
            Ok(())
        }
        fn lease_keys(&mut self, id: u64) -> Result<Vec<Vec<u8>>, ()> {
            Ok(self.attached.iter().filter(|(_, l)| **l == id).map(|(k, _)| k.clone()).collect())
        }
        fn lease_key_count(&mut self, id: u64, limit: usize) -> Result<usize, ()> {
            Ok(self.attached.values().filter(|l| **l == id).count().min(limit))
        }
        fn key_lease(&mut self, key: &[u8]) -> Result<Option<u64>, ()> {
            Ok(self.attached.get(key).copied())
        }
        fn attach(&mut self, key: &[u8], id: u64) -> Result<(), ()> {
            self.attached.insert(key.to_vec(), id);
            Ok(())
        }
        fn detach(&mut self, key: &[u8]) -> Result<(), ()> {
            self.attached.remove(key);
            Ok(())
        }
    }

    fn put_leased(k: &[u8], lease: u64, if_absent: bool) -> Command {
        Command::PutLeased { key: k.to_vec(), value: b"v".to_vec(), lease, if_absent }
    }

    fn grant(s: &mut Leased, ttl_ms: u64) -> u64 {
        match apply_command(s, ctx(1), &Command::LeaseGrant { ttl_ms }).unwrap() {
            Outcome::Integer(id) => id as u64,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn leases_attach_detach_and_revoke_in_one_entry() {
        let mut s = Leased::default();
        let (a, b) = (grant(&mut s, 5_000), grant(&mut s, 5_000));
        assert_eq!((a, b), (1, 2), "ids count up from 1");
        for k in [&b"k2"[..], b"k1", b"k3", b"k4"] {
            let out = apply_command(&mut s, ctx(2), &put_leased(k, a, false)).unwrap();
            assert!(matches!(out, Outcome::Written { written: true, .. }), "{out:?}");
        }
        // With if_absent, a present key is left alone (and stays on its lease).
        let out = apply_command(&mut s, ctx(3), &put_leased(b"k1", b, true)).unwrap();
        assert!(matches!(out, Outcome::Written { written: false, .. }), "{out:?}");
        assert_eq!(s.attached[&b"k1".to_vec()], a);
        // A plain overwrite, a delete and an expiry each detach.
        let set = Command::Set {
            key: b"k2".to_vec(),
            value: b"x".to_vec(),
            cond: SetCond::Always,
            return_old: false,
            ttl: Ttl::Clear,
        };
        apply_command(&mut s, ctx(4), &set).unwrap();
        apply_command(&mut s, ctx(5), &Command::Del { keys: vec![b"k3".to_vec()] }).unwrap();
        apply_command(
            &mut s,
            ctx(6),
            &Command::Expire { key: b"k4".to_vec(), ttl: Ttl::In(-1), cond: ExpireCond::Always },
        )
        .unwrap();
        assert_eq!(s.lease_keys(a).unwrap(), vec![b"k1".to_vec()]);
        // Moving a key to another lease.
        apply_command(&mut s, ctx(7), &put_leased(b"k5", a, false)).unwrap();
        apply_command(&mut s, ctx(7), &put_leased(b"k6", a, false)).unwrap();
        apply_command(&mut s, ctx(8), &put_leased(b"k6", b, false)).unwrap();
        assert_eq!(s.lease_keys(b).unwrap(), vec![b"k6".to_vec()]);
        s.events.clear();
        let out = apply_command(&mut s, ctx(9), &Command::LeaseRevoke { id: a, expired: false }).unwrap();
        assert_eq!(out, Outcome::Deleted { count: 2 });
        let seen: Vec<_> = s.events.iter().map(|e| (e.revision, e.kind, e.key.clone(), e.cause)).collect();
        assert_eq!(
            seen,
            vec![
                (9, EventKind::Delete, b"k1".to_vec(), Cause::LeaseRevoked),
                (9, EventKind::Delete, b"k5".to_vec(), Cause::LeaseRevoked),
            ],
            "every key in one entry, in key order"
        );
        assert!(!s.kv.contains_key(b"k1".as_slice()) && s.kv.contains_key(b"k2".as_slice()));
        assert_eq!(s.lease_ttl(a).unwrap(), None);
        s.events.clear();
        let out = apply_command(&mut s, ctx(10), &Command::LeaseRevoke { id: b, expired: true }).unwrap();
        assert_eq!(out, Outcome::Deleted { count: 1 });
        assert_eq!((s.events[0].kind, s.events[0].cause), (EventKind::Expire, Cause::LeaseExpired));
        // A revoked lease is gone for good: its id is not reused, nothing attaches to it.
        assert_eq!(
            apply_command(&mut s, ctx(11), &Command::LeaseRevoke { id: a, expired: false }).unwrap(),
            Outcome::Rejected(lease::lease_not_found(a))
        );
        assert_eq!(
            apply_command(&mut s, ctx(11), &put_leased(b"z", a, false)).unwrap(),
            Outcome::Rejected(lease::lease_not_found(a))
        );
        assert!(!s.kv.contains_key(b"z".as_slice()));
        assert_eq!(grant(&mut s, 5_000), 3);
    }

    #[test]
    fn lease_limits_are_enforced_in_apply() {
        let mut s = Leased::default();
        for bad in [lease::LEASE_TTL_MIN_MS - 1, lease::LEASE_TTL_MAX_MS + 1] {
            let out = apply_command(&mut s, ctx(1), &Command::LeaseGrant { ttl_ms: bad }).unwrap();
            assert!(matches!(&out, Outcome::Rejected(m) if m.contains("LEASE_TTL_M")), "{out:?}");
        }
        let id = grant(&mut s, lease::LEASE_TTL_MIN_MS);
        for i in 0..KEYS_PER_LEASE_MAX {
            apply_command(&mut s, ctx(2), &put_leased(format!("k{i}").as_bytes(), id, false)).unwrap();
        }
        let out = apply_command(&mut s, ctx(3), &put_leased(b"one-more", id, false)).unwrap();
        assert_eq!(out, Outcome::Rejected(lease::lease_full(id)));
        assert!(!s.kv.contains_key(b"one-more".as_slice()), "a refused put writes nothing");
        // Rewriting a key already on the lease is not one more.
        let out = apply_command(&mut s, ctx(3), &put_leased(b"k0", id, false)).unwrap();
        assert!(matches!(out, Outcome::Written { written: true, .. }), "{out:?}");
        while s.leases.len() < LEASES_MAX {
            grant(&mut s, lease::LEASE_TTL_MIN_MS);
        }
        let out = apply_command(&mut s, ctx(4), &Command::LeaseGrant { ttl_ms: 5_000 }).unwrap();
        assert_eq!(out, Outcome::Rejected(lease::too_many_leases()));
    }

    #[test]
    fn a_state_without_leases_refuses_lease_commands_and_plan_names_leader_mode() {
        let mut m = Map(BTreeMap::new());
        for cmd in [
            Command::LeaseGrant { ttl_ms: 5_000 },
            Command::LeaseRevoke { id: 1, expired: false },
            put_leased(b"k", 1, false),
        ] {
            assert_eq!(apply_command(&mut m, ctx(1), &cmd).unwrap(), Outcome::Rejected(leader_mode_only("leases")));
            assert!(matches!(plan(cmd), Err(KvError::BadRequest(e)) if e == leader_mode_only("leases")));
        }
        assert!(m.0.is_empty());
    }

    #[test]
    fn commands_apply_in_order_and_combine() {
        let mut m = Map(BTreeMap::new());
        let mset = Command::MSet { pairs: vec![(b"a".to_vec(), b"1".to_vec()), (b"a".to_vec(), b"2".to_vec())] };
        assert_eq!(
            apply_command(&mut m, ctx(3), &mset),
            Ok(Outcome::Written { written: true, old: None, current_revision: 3 })
        );
        assert_eq!(m.0[&b"a".to_vec()], Record { value: b"2".to_vec(), revision: 3, expires_at: None });
        let del = Command::Del { keys: vec![b"a".to_vec(), b"a".to_vec(), b"z".to_vec()] };
        let batch = Command::Batch(vec![del, Command::IncrBy { key: b"a".to_vec(), delta: 2 }]);
        assert_eq!(
            apply_command(&mut m, ctx(4), &batch),
            Ok(Outcome::Batch(vec![Outcome::Deleted { count: 1 }, Outcome::Integer(2)]))
        );
    }
}
