//! What watchers see: one [`Event`] per key a write changed, in revision order.
//!
//! The command model produces events as it applies a command ([`crate::apply_command`] hands
//! each one to [`crate::State::record`]); a mode that keeps history stores them with the write,
//! so a watch started from an old revision replays exactly what was applied. Keys in the
//! reserved namespace ([`crate::reserved`]) never produce events.

use serde::{Deserialize, Serialize};

use crate::apply::Write;
use crate::command::{KeyOp, Ttl};
use crate::replica::{BoxFuture, KvError};

/// What happened to a key (the `type` of a watch event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Created or changed (its value, or only its expiry).
    Put,
    /// Removed by a client (DEL, GETDEL, an expiry set in the past, a revoked lease).
    Delete,
    /// Removed because its time ran out (a key's TTL, or its lease's).
    Expire,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Put => "put",
            EventKind::Delete => "delete",
            EventKind::Expire => "expire",
        }
    }
}

/// Which client operation caused an event, at the grain Redis keyspace notifications need
/// ([`Cause::redis_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// SET, MSET, SETNX, GETSET, CAS, HTTP PUT (no expiry given, or KEEPTTL).
    Set,
    /// SET with EX/PX/EXAT/PXAT, SETEX, PSETEX: Redis notifies `set`, then `expire`.
    SetWithExpiry,
    IncrBy,
    Append,
    /// DEL, UNLINK, GETDEL, HTTP DELETE, an EXPIRE/GETEX time in the past.
    Del,
    /// EXPIRE and friends, GETEX with a time.
    Expire,
    /// PERSIST, GETEX PERSIST.
    Persist,
    /// The expirer removed a key whose TTL ran out.
    Expired,
    /// A lease was revoked: its keys were deleted.
    LeaseRevoked,
    /// A lease ran out: its keys expired.
    LeaseExpired,
}

/// A Redis keyspace-notification class (the letters of `notify-keyspace-events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyClass {
    /// `g`: generic commands (DEL, EXPIRE, PERSIST, ...).
    Generic,
    /// `$`: string commands (SET, INCRBY, APPEND, ...).
    String,
    /// `x`: expired events.
    Expired,
}

impl Cause {
    /// The `(class, event name)` pairs redis-server 7.0 publishes for this cause, in its order.
    pub fn redis_events(self) -> &'static [(NotifyClass, &'static str)] {
        use NotifyClass::*;
        match self {
            Cause::Set => &[(String, "set")],
            Cause::SetWithExpiry => &[(String, "set"), (Generic, "expire")],
            Cause::IncrBy => &[(String, "incrby")],
            Cause::Append => &[(String, "append")],
            Cause::Del | Cause::LeaseRevoked => &[(Generic, "del")],
            Cause::Expire => &[(Generic, "expire")],
            Cause::Persist => &[(Generic, "persist")],
            Cause::Expired | Cause::LeaseExpired => &[(Expired, "expired")],
        }
    }

    /// The cause of `write`, made by `op` (`None` when the write leaves the key as it is).
    pub fn of(op: &KeyOp, write: &Write) -> Option<Cause> {
        Some(match (op, write) {
            (_, Write::Keep) => return None,
            (_, Write::Expire) => Cause::Expired,
            (_, Write::Delete) => Cause::Del,
            (KeyOp::Set { ttl: Ttl::In(_) | Ttl::At(_), .. }, Write::Put { .. }) => Cause::SetWithExpiry,
            (KeyOp::IncrBy(_), _) => Cause::IncrBy,
            (KeyOp::Append { .. }, _) => Cause::Append,
            (KeyOp::Expire { .. } | KeyOp::GetEx(Ttl::In(_) | Ttl::At(_)), _) => Cause::Expire,
            (KeyOp::Persist | KeyOp::GetEx(_), _) => Cause::Persist,
            _ => Cause::Set,
        })
    }
}

/// One change to one key. Events of one revision (one log entry) are all delivered, in the order
/// the entry made them, before any event of a later revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: u64,
    pub kind: EventKind,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The new value (`Put`); empty otherwise.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The key's expiry after a `Put` (Unix ms).
    pub expires_at: Option<u64>,
    pub cause: Cause,
}

/// Which keys a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchFilter {
    Key(Vec<u8>),
    /// Every key starting with these bytes (empty: every key).
    Prefix(Vec<u8>),
}

impl WatchFilter {
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            WatchFilter::Key(k) => k == key,
            WatchFilter::Prefix(p) => key.starts_with(p),
        }
    }
}

/// What a watch stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// Matching events, in revision order, none seen before on this stream.
    Events(Vec<Event>),
    /// Every matching event up to and including `revision` has been yielded.
    Progress { revision: u64 },
    /// The stream ends here: the watcher fell behind its bounded buffer (or the node is shutting
    /// down). Every event before `resume_from` was yielded; a new watch from it misses nothing.
    CutOff { resume_from: u64, reason: String },
}

/// A running watch. Dropping it stops it.
pub trait EventStream: Send {
    /// The next message; `None` once the stream has ended (after a [`WatchMessage::CutOff`]).
    fn next(&mut self) -> BoxFuture<'_, Option<WatchMessage>>;
}

/// Why a watch could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// History before `oldest` is no longer kept; `oldest` is the first revision a watch can
    /// start from (HTTP 410).
    #[error("revision {requested} has been compacted; the oldest revision still kept is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
    /// This mode has no watches ([`leader_mode_only`]).
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// The message of every coordination primitive multi-master mode does not offer.
pub fn leader_mode_only(what: &str) -> String {
    format!(
        "{what} need leader mode (--replication leader): multi-master mode has no leases, watches, locks or \
         elections"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ExpireCond, SetCond};

    #[test]
    fn causes_follow_redis_notifications() {
        let set = |ttl| KeyOp::Set { value: b"v".to_vec(), cond: SetCond::Always, return_old: false, ttl };
        let put = Write::Put { value: b"v".to_vec(), expires_at: Some(5) };
        assert_eq!(Cause::of(&set(Ttl::In(5)), &put), Some(Cause::SetWithExpiry));
        assert_eq!(Cause::of(&set(Ttl::Keep), &put), Some(Cause::Set));
        assert_eq!(Cause::of(&set(Ttl::Clear), &Write::Keep), None);
        assert_eq!(Cause::of(&KeyOp::IncrBy(1), &put), Some(Cause::IncrBy));
        assert_eq!(
            Cause::of(&KeyOp::Expire { ttl: Ttl::In(0), cond: ExpireCond::Always }, &Write::Delete),
            Some(Cause::Del)
        );
        assert_eq!(Cause::of(&KeyOp::Expire { ttl: Ttl::In(9), cond: ExpireCond::Always }, &put), Some(Cause::Expire));
        assert_eq!(Cause::of(&KeyOp::GetEx(Ttl::Clear), &put), Some(Cause::Persist));
        assert_eq!(Cause::of(&KeyOp::ExpireDue, &Write::Expire), Some(Cause::Expired));
        assert_eq!(
            Cause::SetWithExpiry.redis_events(),
            &[(NotifyClass::String, "set"), (NotifyClass::Generic, "expire")]
        );
        assert!(WatchFilter::Prefix(Vec::new()).matches(b"anything"));
        assert!(!WatchFilter::Key(b"a".to_vec()).matches(b"ab"));
    }
}
