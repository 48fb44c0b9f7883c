//! Size limits, named with their units. A request over a limit is refused before anything is
//! proposed, with an error that names the limit.

use crate::command::Command;
use crate::replica::KvError;
use crate::reserved::{is_reserved, reserved_key_error};

/// Default longest key, in bytes (`--key-bytes-max`).
pub const KEY_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Largest `--key-bytes-max` a node accepts.
pub const KEY_BYTES_MAX_CEILING: usize = 16 << 20;
/// Default largest value, in bytes (`--value-bytes-max`).
pub const VALUE_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Largest `--value-bytes-max` a node accepts. Leader mode's state machine also bounds the value
/// APPEND builds by it: a constant, so every replica decides the same.
pub const VALUE_BYTES_MAX_CEILING: usize = 32 << 20;
/// An MSET (one log entry) carries at most this many values' worth of bytes.
pub const MSET_VALUES_MAX: usize = 4;
/// Default most keys one command may name (Redis's argument limit).
pub const KEYS_PER_COMMAND_MAX_DEFAULT: usize = 1024 * 1024;
/// Most pipelined commands one connection hands to a replica at once.
pub const PIPELINE_COMMANDS_MAX: usize = 1_024;
/// Longest decimal i64 with its sign: "-9223372036854775808".
pub const INTEGER_BYTES_MAX: usize = 20;
/// Default largest reply to one request, in bytes (`--reply-bytes-max`): the values of an MGET,
/// the keys of a KEYS, one page of SCAN or of `GET /v1/kv?prefix=`. A reply that would pass it
/// is refused (or, for pages, ends early with a continuation) before it is built.
pub const REPLY_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// Reads of more keys than this (MGET, EXISTS) run off the async workers: a replica reads them
/// on a blocking thread, and the server counts them among its scan jobs.
pub const INLINE_READ_KEYS_MAX: usize = 64;
/// Largest `--reply-bytes-max` a node accepts.
pub const REPLY_BYTES_MAX_CEILING: usize = 1 << 30;

/// The error of a value over `max` bytes, in the words both SET and APPEND use.
pub fn value_too_large(len: usize, max: usize) -> String {
    format!("value of {len} bytes exceeds the limit of {max} bytes (value_bytes_max)")
}

/// The limits a replica enforces on client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub keys_per_command_max: usize,
    /// Largest reply to one request ([`REPLY_BYTES_MAX_DEFAULT`]).
    pub reply_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: KEY_BYTES_MAX_DEFAULT,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            keys_per_command_max: KEYS_PER_COMMAND_MAX_DEFAULT,
            reply_bytes_max: REPLY_BYTES_MAX_DEFAULT,
        }
    }
}

/// What is left of [`Limits::reply_bytes_max`] while a reply is gathered: each part is taken
/// before it is kept, so a reply over the limit fails having held at most the limit.
#[derive(Debug, Clone, Copy)]
pub struct ReplyBudget {
    max: usize,
    used: usize,
}

impl ReplyBudget {
    pub fn new(max: usize) -> ReplyBudget {
        ReplyBudget { max, used: 0 }
    }

    /// Counts `bytes` more of the reply; the error names the limit when they do not fit.
    pub fn take(&mut self, bytes: usize) -> Result<(), KvError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.max {
            return Err(reply_too_large(self.max));
        }
        Ok(())
    }

    pub fn used(&self) -> usize {
        self.used
    }
}

/// The error of a reply over `reply_bytes_max`.
pub fn reply_too_large(max: usize) -> KvError {
    KvError::TooLarge(format!("reply would exceed reply_bytes_max ({max} bytes)"))
}

impl Limits {
    /// The stricter of two sets of limits, field by field.
    pub fn min(self, other: Limits) -> Limits {
        Limits {
            key_bytes_max: self.key_bytes_max.min(other.key_bytes_max),
            value_bytes_max: self.value_bytes_max.min(other.value_bytes_max),
            keys_per_command_max: self.keys_per_command_max.min(other.keys_per_command_max),
            reply_bytes_max: self.reply_bytes_max.min(other.reply_bytes_max),
        }
    }

    /// A budget for one reply.
    pub fn reply_budget(&self) -> ReplyBudget {
        ReplyBudget::new(self.reply_bytes_max)
    }

    /// Binds what the command's meaning depends on to these limits: an APPEND not yet bounded
    /// gets `value_bytes_max`, so the log entry carries the bound and every replica applying it
    /// decides the same.
    pub fn bind(&self, cmd: &mut Command) {
        match cmd {
            Command::Append { value_bytes_max: bound @ None, .. } => *bound = Some(self.value_bytes_max),
            Command::Batch(cmds) => cmds.iter_mut().for_each(|c| self.bind(c)),
            _ => {}
        }
    }

    pub fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if key.len() > self.key_bytes_max {
            return Err(KvError::TooLarge(format!(
                "key of {} bytes exceeds the limit of {} bytes (key_bytes_max)",
                key.len(),
                self.key_bytes_max
            )));
        }
        Ok(())
    }

    pub fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        if value.len() > self.value_bytes_max {
            return Err(KvError::TooLarge(value_too_large(value.len(), self.value_bytes_max)));
        }
        Ok(())
    }

    /// Refuses a client command over the limits before anything is proposed. Replicas call it on
    /// every command they take, forwarded ones included. It also keeps the reserved namespace
    /// ([`crate::reserved`]) apart: an ordinary command naming a reserved key is refused, and so
    /// is a system write naming any other key.
    pub fn check(&self, cmd: &Command) -> Result<(), KvError> {
        if cmd.is_system() {
            if !cmd.keys().iter().all(|k| is_reserved(k)) {
                return Err(KvError::BadRequest("system writes may only name keys in the reserved namespace".into()));
            }
        } else if !matches!(cmd, Command::Batch(_)) && cmd.keys().iter().any(|k| is_reserved(k)) {
            return Err(reserved_key_error());
        }
        let keys = cmd.key_count();
        if keys > self.keys_per_command_max {
            return Err(KvError::TooLarge(format!(
                "a command on {keys} keys exceeds the limit of {} keys per command",
                self.keys_per_command_max
            )));
        }
        match cmd {
            Command::Append { value_bytes_max: Some(bound), .. } if *bound > self.value_bytes_max => {
                // Only a peer can send one: a client's APPEND is bound by the replica taking it.
                return Err(KvError::TooLarge(format!(
                    "APPEND bound of {bound} bytes exceeds the limit of {} bytes (value_bytes_max)",
                    self.value_bytes_max
                )));
            }
            Command::Set { key, value, .. }
            | Command::Append { key, value, .. }
            | Command::PutIfRevision { key, value, .. }
            | Command::Cas { key, new: value, .. } => {
                self.check_key(key)?;
                self.check_value(value)?;
            }
            Command::MSet { pairs } => {
                let mut total = 0usize;
                for (k, v) in pairs {
                    self.check_key(k)?;
                    self.check_value(v)?;
                    total += k.len() + v.len();
                }
                let limit = self.value_bytes_max.saturating_mul(MSET_VALUES_MAX);
                if total > limit {
                    return Err(KvError::TooLarge(format!(
                        "MSET of {total} bytes exceeds the limit of {limit} bytes ({MSET_VALUES_MAX} x value_bytes_max)"
                    )));
                }
            }
            Command::Del { keys } | Command::ExpireDue { keys } => {
                for k in keys {
                    self.check_key(k)?;
                }
            }
            Command::SystemCas { key, new: value, .. } => {
                self.check_key(key)?;
                self.check_value(value)?;
            }
            Command::Delete { key }
            | Command::DeleteIfRevision { key, .. }
            | Command::IncrBy { key, .. }
            | Command::SystemDelete { key }
            | Command::Expire { key, .. }
            | Command::Persist { key }
            | Command::GetEx { key, .. }
            | Command::GetDel { key } => self.check_key(key)?,
            Command::Batch(_) => {
                return Err(KvError::BadRequest("batches cannot be submitted by clients".into()));
            }
            Command::At { .. } => {
                return Err(KvError::BadRequest("stamped commands are formed by the leader, never submitted".into()));
            }
            Command::LeaseGrant { ttl_ms } => {
                if let Some(e) = crate::lease::ttl_out_of_range(*ttl_ms) {
                    return Err(KvError::BadRequest(e));
                }
            }
            Command::LeaseRevoke { expired: true, .. } => {
                return Err(KvError::BadRequest(
                    "only the leader's lease clock expires a lease; a client revokes it".into(),
                ));
            }
            Command::LeaseRevoke { expired: false, .. } => {}
            Command::PutLeased { key, value, .. } => {
                self.check_key(key)?;
                self.check_value(value)?;
            }
        }
        if let Command::Cas { expected: Some(e), .. } | Command::SystemCas { expected: Some(e), .. } = cmd {
            self.check_value(e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_commands_are_checked_up_front() {
        let l = Limits { key_bytes_max: 4, ..Limits::default() };
        assert!(l.check(&Command::LeaseGrant { ttl_ms: 5_000 }).is_ok());
        let short = l.check(&Command::LeaseGrant { ttl_ms: 1 });
        assert!(matches!(&short, Err(KvError::BadRequest(m)) if m.contains("LEASE_TTL_MIN_MS")), "{short:?}");
        assert!(l.check(&Command::LeaseRevoke { id: 3, expired: false }).is_ok());
        assert!(
            matches!(l.check(&Command::LeaseRevoke { id: 3, expired: true }), Err(KvError::BadRequest(_))),
            "only the leader expires a lease"
        );
        let put = |k: &[u8]| Command::PutLeased { key: k.to_vec(), value: vec![], lease: 1, if_absent: false };
        assert!(l.check(&put(b"abcd")).is_ok());
        assert!(matches!(l.check(&put(b"abcde")), Err(KvError::TooLarge(m)) if m.contains("key_bytes_max")));
        assert!(l.check(&put(b"\xff\xfeacl/x")).is_err(), "no lease on a reserved key");
    }

    #[test]
    fn limits_refuse_with_the_limit_named() {
        let l = Limits { key_bytes_max: 4, value_bytes_max: 8, keys_per_command_max: 2, reply_bytes_max: 100 };
        let set = |k: &[u8], v: &[u8]| Command::Set {
            key: k.to_vec(),
            value: v.to_vec(),
            cond: crate::SetCond::Always,
            return_old: false,
            ttl: crate::Ttl::Clear,
        };
        assert!(l.check(&set(b"abcd", b"12345678")).is_ok());
        assert!(matches!(l.check(&set(b"abcde", b"")), Err(KvError::TooLarge(m)) if m.contains("key_bytes_max")));
        assert!(
            matches!(l.check(&set(b"a", b"123456789")), Err(KvError::TooLarge(m)) if m.contains("value_bytes_max"))
        );
        let del = Command::Del { keys: vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()] };
        assert!(matches!(l.check(&del), Err(KvError::TooLarge(m)) if m.contains("keys per command")));
        let mset = Command::MSet { pairs: vec![(b"a".to_vec(), vec![0; 8]); 2] };
        assert!(l.check(&mset).is_ok());
        let l1 = Limits { keys_per_command_max: 8, ..l };
        let big = Command::MSet { pairs: vec![(b"a".to_vec(), vec![0; 8]); 5] };
        assert!(matches!(l1.check(&big), Err(KvError::TooLarge(m)) if m.contains("MSET")));
        assert!(matches!(l.check(&Command::Batch(vec![])), Err(KvError::BadRequest(_))));
        let cas = Command::Cas { key: b"k".to_vec(), expected: Some(vec![0; 9]), new: vec![] };
        assert!(matches!(l.check(&cas), Err(KvError::TooLarge(_))));
    }

    #[test]
    fn the_reserved_namespace_is_kept_apart() {
        let l = Limits::default();
        let reserved = b"\xff\xfeacl/user/x".to_vec();
        let set = |k: &[u8]| Command::Set {
            key: k.to_vec(),
            value: b"v".to_vec(),
            cond: crate::SetCond::Always,
            return_old: false,
            ttl: crate::Ttl::Clear,
        };
        assert!(matches!(l.check(&set(&reserved)), Err(KvError::BadRequest(m)) if m.contains("reserved")));
        let mset = Command::MSet { pairs: vec![(b"a".to_vec(), vec![]), (reserved.clone(), vec![])] };
        assert!(matches!(l.check(&mset), Err(KvError::BadRequest(m)) if m.contains("reserved")));
        let del = Command::Del { keys: vec![b"a".to_vec(), reserved.clone()] };
        assert!(l.check(&del).is_err());
        let sys = Command::SystemCas { key: reserved.clone(), expected: None, new: b"u".to_vec() };
        assert!(l.check(&sys).is_ok());
        assert!(l.check(&Command::SystemDelete { key: reserved }).is_ok());
        let outside = Command::SystemCas { key: b"user".to_vec(), expected: None, new: vec![] };
        assert!(matches!(l.check(&outside), Err(KvError::BadRequest(m)) if m.contains("reserved namespace")));
        assert!(l.check(&Command::SystemDelete { key: b"k".to_vec() }).is_err());
        assert!(l.check(&set(b"\xffok")).is_ok());
    }

    #[test]
    fn min_takes_the_stricter_field() {
        let a = Limits { key_bytes_max: 10, value_bytes_max: 1, keys_per_command_max: 5, reply_bytes_max: 2 };
        let b = Limits { key_bytes_max: 3, value_bytes_max: 7, keys_per_command_max: 9, reply_bytes_max: 1 };
        assert_eq!(
            a.min(b),
            Limits { key_bytes_max: 3, value_bytes_max: 1, keys_per_command_max: 5, reply_bytes_max: 1 }
        );
    }

    #[test]
    fn appends_are_bound_to_the_value_limit_and_peers_cannot_raise_it() {
        let l = Limits { value_bytes_max: 8, ..Limits::default() };
        let mut cmd = Command::Append { key: b"k".to_vec(), value: b"v".to_vec(), value_bytes_max: None };
        l.bind(&mut cmd);
        assert!(matches!(cmd, Command::Append { value_bytes_max: Some(8), .. }));
        assert!(l.check(&cmd).is_ok());
        let forged = Command::Append { key: b"k".to_vec(), value: b"v".to_vec(), value_bytes_max: Some(9) };
        assert!(matches!(l.check(&forged), Err(KvError::TooLarge(m)) if m.contains("value_bytes_max")));
    }

    #[test]
    fn a_reply_budget_refuses_past_the_limit_naming_it() {
        let mut b = Limits { reply_bytes_max: 10, ..Limits::default() }.reply_budget();
        assert!(b.take(6).is_ok() && b.take(4).is_ok());
        let e = b.take(1).unwrap_err();
        assert_eq!(e.resp_line(), "ERR reply would exceed reply_bytes_max (10 bytes)");
        assert_eq!(b.used(), 11);
    }
}
