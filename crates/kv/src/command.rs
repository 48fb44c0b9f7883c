//! Write commands and the per-key operations they are made of.
//!
//! A [`Command`] is what a client asks for (SET, MSET, DEL, INCRBY, ...). [`crate::plan`] turns it
//! into one [`KeyOp`] per key it touches; a `KeyOp` on one key is the unit both replication modes
//! apply (leader mode all of a command's ops in one log entry, multi-master mode one CASPaxos
//! change per key).
//!
//! The serde encoding of [`Command`] is leader mode's log entry format: keep variant names and
//! field order stable.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How `Set` treats an existing key (Redis NX / XX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCond {
    Always,
    IfAbsent,
    IfPresent,
}

/// What a write does to its key's time to live (Redis `EX`/`PX`/`EXAT`/`PXAT`/`KEEPTTL`).
/// Times are Unix milliseconds; a relative time is resolved against the time of the write
/// (leader mode: the stamp of its log entry; multi-master mode: the proposer's clock), so every
/// replica resolves it alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Ttl {
    /// No expiry: a plain `SET` clears it, and so does `GETEX PERSIST`.
    #[default]
    Clear,
    /// Keep the key's expiry (`SET KEEPTTL`; `INCR` and `APPEND` always keep it).
    Keep,
    /// Expire this many milliseconds after the write (`EX`, `PX`, `EXPIRE`); zero or less is
    /// already expired.
    In(i64),
    /// Expire at this Unix time in milliseconds (`EXAT`, `PXAT`, `EXPIREAT`).
    At(i64),
}

impl Ttl {
    /// The absolute expiry this sets at `now_ms`, given the key's current one: `None` is no
    /// expiry; a time at or before `now_ms` means the key is already expired.
    pub fn resolve(self, now_ms: u64, current: Option<u64>) -> Option<u64> {
        match self {
            Ttl::Clear => None,
            Ttl::Keep => current,
            Ttl::In(ms) => Some((now_ms as i64).saturating_add(ms).max(0) as u64),
            Ttl::At(at) => Some(at.max(0) as u64),
        }
    }
}

/// When `EXPIRE` applies (Redis 7.0 `NX`/`XX`/`GT`/`LT`). No expiry counts as infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ExpireCond {
    #[default]
    Always,
    /// Only if the key has no expiry.
    IfNone,
    /// Only if the key has an expiry.
    IfSome,
    /// Only if the new expiry is later than the current one.
    IfGreater,
    /// Only if the new expiry is earlier than the current one.
    IfLess,
    /// Only if the key has an expiry and the new one is earlier (Redis `XX LT`).
    IfSomeAndLess,
}

/// A write. Leader mode applies it atomically, in log order; multi-master mode applies each key's
/// part atomically (see [`crate::plan`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// SET (with NX/XX and GET), SETNX, GETSET.
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        cond: SetCond,
        return_old: bool,
        #[serde(default)]
        ttl: Ttl,
    },
    /// MSET: all pairs.
    MSet { pairs: Vec<(Vec<u8>, Vec<u8>)> },
    /// DEL / UNLINK of many keys.
    Del { keys: Vec<Vec<u8>> },
    /// INCR/DECR/INCRBY/DECRBY.
    IncrBy { key: Vec<u8>, delta: i64 },
    /// APPEND. `value_bytes_max` bounds the value it may build: the limit of the replica that
    /// took the command, set by [`crate::write_checked`] (so every replica applying the log entry
    /// decides the same). `None` (entries written before the field existed) leaves only the
    /// mode's ceiling.
    Append {
        key: Vec<u8>,
        value: Vec<u8>,
        #[serde(default)]
        value_bytes_max: Option<usize>,
    },
    /// CAS key expected new: compare the current value (`None` = absent).
    Cas { key: Vec<u8>, expected: Option<Vec<u8>>, new: Vec<u8> },
    /// HTTP PUT ?cas=REV: set only if the key's revision is `revision` (0 = absent).
    PutIfRevision { key: Vec<u8>, revision: u64, value: Vec<u8> },
    /// HTTP DELETE of one key (reports the revision of the delete).
    Delete { key: Vec<u8> },
    /// Many commands applied together, in order, as one unit: formed by a replica (one log
    /// entry, one fsync), never accepted from a client ([`crate::Limits::check`] refuses it).
    Batch(Vec<Command>),
    /// Compare-and-set of a key in the reserved namespace ([`crate::reserved`]): store `new` if
    /// and only if the current value equals `expected` (`None`: absent). Built only by the node's
    /// own code (the user store); [`crate::Limits::check`] refuses it on any other key.
    SystemCas { key: Vec<u8>, expected: Option<Vec<u8>>, new: Vec<u8> },
    /// Delete of a key in the reserved namespace (see [`Command::SystemCas`]).
    SystemDelete { key: Vec<u8> },
    /// EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT: set a live key's expiry if `cond` holds (answers 1 or
    /// 0); an expiry at or before the write's time deletes the key.
    Expire { key: Vec<u8>, ttl: Ttl, cond: ExpireCond },
    /// PERSIST: remove a key's expiry (answers 1 if it had one).
    Persist { key: Vec<u8> },
    /// GETEX with an option: answer the value and change its expiry (`Ttl::Clear`: PERSIST).
    GetEx { key: Vec<u8>, ttl: Ttl },
    /// GETDEL: answer the value and delete the key.
    GetDel { key: Vec<u8> },
    /// Remove each key that has expired by the write's time (and no other): the expirer's
    /// command. Answers how many it removed. Harmless from anyone, so it needs no privilege.
    ExpireDue { keys: Vec<Vec<u8>> },
    /// A command stamped with the time it is applied at (Unix ms): leader mode's leader wraps
    /// every entry it proposes in one. Never accepted from a client or a peer
    /// ([`crate::Limits::check`] refuses it).
    At { now_ms: u64, cmd: Box<Command> },
    /// Grants a lease of `ttl_ms` (leader mode): the state picks its id ([`crate::lease::Leases`])
    /// and answers it as [`crate::Outcome::Integer`]. Refused (`Rejected`, naming the limit) past
    /// [`crate::lease::LEASES_MAX`] or outside the TTL limits.
    LeaseGrant { ttl_ms: u64 },
    /// Revokes lease `id`: removes every key attached to it, in key order, in this one entry,
    /// then the lease. `expired`: the leader's lease clock ran out (watchers see `expire`, cause
    /// `LeaseExpired`); else a client revoked it (`delete`, `LeaseRevoked`). Only the leader
    /// makes `expired: true` ([`crate::Limits::check`] refuses it from clients and peers).
    /// Answers [`crate::Outcome::Deleted`] with the keys removed.
    LeaseRevoke { id: u64, expired: bool },
    /// Writes `key = value` attached to lease `lease` (HTTP `PUT ?lease=`, locks, elections),
    /// with no expiry of its own; with `if_absent` only if the key does not exist. Any later
    /// write of the key other than another leased put detaches it, and so does its removal.
    PutLeased { key: Vec<u8>, value: Vec<u8>, lease: u64, if_absent: bool },
    /// HTTP `DELETE ?cas=REV`, a lock's release: remove the key only if its revision is
    /// `revision` (answers how many keys it removed, 0 or 1).
    DeleteIfRevision { key: Vec<u8>, revision: u64 },
}

impl Command {
    /// A short lowercase name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Set { .. } => "set",
            Command::MSet { .. } => "mset",
            Command::Del { .. } => "del",
            Command::IncrBy { .. } => "incrby",
            Command::Append { .. } => "append",
            Command::Cas { .. } => "cas",
            Command::PutIfRevision { .. } => "put_if_revision",
            Command::Delete { .. } => "delete",
            Command::Batch(_) => "batch",
            Command::SystemCas { .. } => "system_cas",
            Command::SystemDelete { .. } => "system_delete",
            Command::Expire { .. } => "expire",
            Command::Persist { .. } => "persist",
            Command::GetEx { .. } => "getex",
            Command::GetDel { .. } => "getdel",
            Command::ExpireDue { .. } => "expire_due",
            Command::At { cmd, .. } => cmd.name(),
            Command::LeaseGrant { .. } => "lease_grant",
            Command::LeaseRevoke { .. } => "lease_revoke",
            Command::PutLeased { .. } => "put_leased",
            Command::DeleteIfRevision { .. } => "delete_if_revision",
        }
    }

    /// Key and value bytes the command carries (for batch size limits).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Command::Set { key, value, .. }
            | Command::Append { key, value, .. }
            | Command::PutIfRevision { key, value, .. }
            | Command::PutLeased { key, value, .. } => key.len() + value.len(),
            Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } => 0,
            Command::Cas { key, expected, new } | Command::SystemCas { key, expected, new } => {
                key.len() + new.len() + expected.as_ref().map_or(0, Vec::len)
            }
            Command::MSet { pairs } => pairs.iter().map(|(k, v)| k.len() + v.len()).sum(),
            Command::Del { keys } | Command::ExpireDue { keys } => keys.iter().map(Vec::len).sum(),
            Command::Delete { key }
            | Command::DeleteIfRevision { key, .. }
            | Command::IncrBy { key, .. }
            | Command::SystemDelete { key }
            | Command::Expire { key, .. }
            | Command::Persist { key }
            | Command::GetEx { key, .. }
            | Command::GetDel { key } => key.len(),
            Command::Batch(cmds) => cmds.iter().map(Command::payload_bytes).sum(),
            Command::At { cmd, .. } => cmd.payload_bytes(),
        }
    }

    /// Keys the command touches (a batch: the sum of its commands').
    pub fn key_count(&self) -> usize {
        match self {
            Command::MSet { pairs } => pairs.len(),
            Command::Del { keys } | Command::ExpireDue { keys } => keys.len(),
            Command::Batch(cmds) => cmds.iter().map(Command::key_count).sum(),
            Command::At { cmd, .. } => cmd.key_count(),
            // A revoke removes the lease's keys, at most `KEYS_PER_LEASE_MAX`, none named.
            Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } => 0,
            _ => 1,
        }
    }

    /// Every key the command names, in order (a batch: its commands' keys).
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            Command::Set { key, .. }
            | Command::IncrBy { key, .. }
            | Command::Append { key, .. }
            | Command::Cas { key, .. }
            | Command::PutIfRevision { key, .. }
            | Command::Delete { key }
            | Command::DeleteIfRevision { key, .. }
            | Command::SystemCas { key, .. }
            | Command::SystemDelete { key }
            | Command::Expire { key, .. }
            | Command::Persist { key }
            | Command::GetEx { key, .. }
            | Command::GetDel { key }
            | Command::PutLeased { key, .. } => vec![key.as_slice()],
            Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } => Vec::new(),
            Command::MSet { pairs } => pairs.iter().map(|(k, _)| k.as_slice()).collect(),
            Command::Del { keys } | Command::ExpireDue { keys } => keys.iter().map(Vec::as_slice).collect(),
            Command::Batch(cmds) => cmds.iter().flat_map(Command::keys).collect(),
            Command::At { cmd, .. } => cmd.keys(),
        }
    }

    /// True for the writes of rampart's own data in the reserved namespace.
    pub fn is_system(&self) -> bool {
        matches!(self, Command::SystemCas { .. } | Command::SystemDelete { .. })
    }

    /// True for the lease commands, which only leader mode has.
    pub fn is_lease(&self) -> bool {
        match self {
            Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } | Command::PutLeased { .. } => true,
            Command::Batch(cmds) => cmds.iter().any(Command::is_lease),
            Command::At { cmd, .. } => cmd.is_lease(),
            _ => false,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One operation on one key: the unit of atomicity both modes share. Applied by
/// [`crate::apply_op`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyOp {
    /// The identity: a read (multi-master mode makes it linearizable with an accept round).
    Read,
    /// Store `value` if `cond` holds; with `return_old`, answer the value before.
    Set {
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        cond: SetCond,
        return_old: bool,
        #[serde(default)]
        ttl: Ttl,
    },
    /// Remove the key.
    Delete,
    /// Add to a decimal integer (absent counts as 0), as Redis `INCRBY` does.
    IncrBy(i64),
    /// Append bytes to the value (absent counts as empty), as Redis `APPEND` does; refused when
    /// the result would pass `value_bytes_max`.
    Append {
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        value_bytes_max: usize,
    },
    /// Store `new` if and only if the current value equals `expected` (`None`: absent).
    Cas {
        #[serde(with = "serde_bytes")]
        expected: Option<Vec<u8>>,
        #[serde(with = "serde_bytes")]
        new: Vec<u8>,
    },
    /// Store `value` if and only if the key's revision is `revision` (0: absent).
    PutIfRevision {
        revision: u64,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Set a live key's expiry if `cond` holds (see [`Command::Expire`]).
    Expire { ttl: Ttl, cond: ExpireCond },
    /// Remove a live key's expiry.
    Persist,
    /// Answer the value and change its expiry.
    GetEx(Ttl),
    /// Answer the value and remove the key.
    GetDel,
    /// Remove the key only if it has expired.
    ExpireDue,
    /// Remove the key if and only if its revision is `revision`.
    DeleteIfRevision { revision: u64 },
}

impl KeyOp {
    /// True for the identity: applying it again can never apply an effect twice.
    pub fn is_read(&self) -> bool {
        matches!(self, KeyOp::Read)
    }

    /// The largest value this operation carries, for the value size limit.
    pub fn value_bytes(&self) -> usize {
        match self {
            KeyOp::Set { value, .. } | KeyOp::Append { value, .. } | KeyOp::PutIfRevision { value, .. } => value.len(),
            KeyOp::Cas { expected, new } => expected.as_ref().map_or(0, Vec::len).max(new.len()),
            KeyOp::Read
            | KeyOp::Delete
            | KeyOp::IncrBy(_)
            | KeyOp::Expire { .. }
            | KeyOp::Persist
            | KeyOp::GetEx(_)
            | KeyOp::GetDel
            | KeyOp::ExpireDue
            | KeyOp::DeleteIfRevision { .. } => 0,
        }
    }
}
