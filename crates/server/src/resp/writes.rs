//! Write commands: their arguments parsed into `rampart_kv::Command`s (arity is checked by the
//! table first), and the reply each renders from its outcome. What a write *does* is
//! `rampart_kv`'s.

use bytes::Bytes;
use rampart_kv::{Command, KvError, Outcome, Response, SetCond};
use rampart_resp::Value;

use super::{api_err, err, parse_i64, wrong_args};

/// How a write command's result becomes its RESP reply.
#[derive(Debug, Clone, Copy)]
pub enum WriteReply {
    /// SET: +OK, or nil when NX/XX prevented it; with GET, the old value.
    Set { get: bool },
    /// SETNX: 1 if written.
    WrittenFlag,
    /// GETSET: the old value.
    OldValue,
    /// MSET: +OK.
    Ok,
    /// DEL, UNLINK: the number removed.
    Count,
    /// INCR family, APPEND: the integer result.
    Integer,
    /// CAS: 1 if swapped.
    Swapped,
}

type Parsed = Result<(Command, WriteReply), Value>;

fn key(args: &[Bytes]) -> Vec<u8> {
    args[1].to_vec()
}

pub fn set(args: &[Bytes]) -> Parsed {
    let mut cond = SetCond::Always;
    let mut get = false;
    for opt in &args[3..] {
        match String::from_utf8_lossy(opt).to_ascii_uppercase().as_str() {
            "NX" if cond != SetCond::IfPresent => cond = SetCond::IfAbsent,
            "XX" if cond != SetCond::IfAbsent => cond = SetCond::IfPresent,
            "GET" => get = true,
            "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" => {
                return Err(err(
                    "ERR expiry (EX/PX/EXAT/PXAT/KEEPTTL) is not supported yet: rampart keys do not expire",
                ));
            }
            _ => return Err(err("ERR syntax error")),
        }
    }
    Ok((
        Command::Set { key: key(args), value: args[2].to_vec(), cond, return_old: get, ttl: rampart_kv::Ttl::Clear },
        WriteReply::Set { get },
    ))
}

pub fn setnx(args: &[Bytes]) -> Parsed {
    let cmd = Command::Set {
        key: key(args),
        value: args[2].to_vec(),
        cond: SetCond::IfAbsent,
        return_old: false,
        ttl: rampart_kv::Ttl::Clear,
    };
    Ok((cmd, WriteReply::WrittenFlag))
}

pub fn getset(args: &[Bytes]) -> Parsed {
    let cmd = Command::Set {
        key: key(args),
        value: args[2].to_vec(),
        cond: SetCond::Always,
        return_old: true,
        ttl: rampart_kv::Ttl::Clear,
    };
    Ok((cmd, WriteReply::OldValue))
}

pub fn mset(args: &[Bytes]) -> Parsed {
    if args.len().is_multiple_of(2) {
        return Err(wrong_args("mset"));
    }
    let pairs = args[1..].chunks(2).map(|c| (c[0].to_vec(), c[1].to_vec())).collect();
    Ok((Command::MSet { pairs }, WriteReply::Ok))
}

pub fn del(args: &[Bytes]) -> Parsed {
    Ok((Command::Del { keys: args[1..].iter().map(|k| k.to_vec()).collect() }, WriteReply::Count))
}

pub fn incr(args: &[Bytes]) -> Parsed {
    Ok((Command::IncrBy { key: key(args), delta: 1 }, WriteReply::Integer))
}

pub fn decr(args: &[Bytes]) -> Parsed {
    Ok((Command::IncrBy { key: key(args), delta: -1 }, WriteReply::Integer))
}

pub fn incrby(args: &[Bytes]) -> Parsed {
    match parse_i64(&args[2]) {
        Some(delta) => Ok((Command::IncrBy { key: key(args), delta }, WriteReply::Integer)),
        None => Err(err("ERR value is not an integer or out of range")),
    }
}

pub fn decrby(args: &[Bytes]) -> Parsed {
    match parse_i64(&args[2]).map(i64::checked_neg) {
        Some(Some(delta)) => Ok((Command::IncrBy { key: key(args), delta }, WriteReply::Integer)),
        Some(None) => Err(err("ERR decrement would overflow")),
        None => Err(err("ERR value is not an integer or out of range")),
    }
}

pub fn append(args: &[Bytes]) -> Parsed {
    // The replica binds it to its value limit (`Limits::bind`).
    Ok((Command::Append { key: key(args), value: args[2].to_vec(), value_bytes_max: None }, WriteReply::Integer))
}

pub fn cas(args: &[Bytes]) -> Parsed {
    let cmd = Command::Cas { key: key(args), expected: Some(args[2].to_vec()), new: args[3].to_vec() };
    Ok((cmd, WriteReply::Swapped))
}

/// The reply of a write from its result.
pub fn render(kind: WriteReply, result: Result<Response, KvError>) -> Value {
    let r = match result {
        Ok(r) => r,
        Err(e) => return api_err(e),
    };
    match (kind, r.outcome) {
        (WriteReply::Set { get: true }, Outcome::Written { old, .. })
        | (WriteReply::OldValue, Outcome::Written { old, .. }) => {
            old.map_or(Value::Null, |o| Value::Bulk(Bytes::from(o)))
        }
        (WriteReply::Set { get: false }, Outcome::Written { written, .. }) => {
            if written {
                Value::ok()
            } else {
                Value::Null
            }
        }
        (WriteReply::WrittenFlag, Outcome::Written { written, .. }) => Value::Integer(written as i64),
        (WriteReply::Ok, _) => Value::ok(),
        (WriteReply::Count, Outcome::Deleted { count }) => Value::Integer(count as i64),
        (WriteReply::Integer, Outcome::Integer(v)) => Value::Integer(v),
        (WriteReply::Swapped, Outcome::Swapped(ok)) => Value::Integer(ok as i64),
        (_, other) => err(format!("ERR unexpected result {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<Bytes> {
        v.iter().map(|s| Bytes::from(s.to_string())).collect()
    }

    #[test]
    fn set_options_parse_like_redis() {
        let (cmd, _) = set(&args(&["SET", "k", "v", "nx", "GET"])).unwrap();
        assert_eq!(
            cmd,
            Command::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                cond: SetCond::IfAbsent,
                return_old: true,
                ttl: rampart_kv::Ttl::Clear
            }
        );
        assert!(set(&args(&["SET", "k", "v", "NX", "NX"])).is_ok(), "a repeated NX is accepted, as in Redis");
        assert_eq!(set(&args(&["SET", "k", "v", "NX", "XX"])).unwrap_err(), err("ERR syntax error"));
        assert_eq!(set(&args(&["SET", "k", "v", "BOGUS"])).unwrap_err(), err("ERR syntax error"));
    }

    #[test]
    fn increments_parse_like_redis() {
        assert!(incrby(&args(&["INCRBY", "k", "+5"])).is_err(), "Redis refuses a leading +");
        assert!(incrby(&args(&["INCRBY", "k", "05"])).is_err(), "and leading zeros");
        assert_eq!(
            decrby(&args(&["DECRBY", "k", "-9223372036854775808"])).unwrap_err(),
            err("ERR decrement would overflow")
        );
        let (cmd, _) = decrby(&args(&["DECRBY", "k", "3"])).unwrap();
        assert_eq!(cmd, Command::IncrBy { key: b"k".to_vec(), delta: -3 });
        assert_eq!(mset(&args(&["MSET", "a", "1", "b"])).unwrap_err(), wrong_args("mset"));
    }
}
