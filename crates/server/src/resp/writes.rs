//! Write commands: their arguments parsed into `rampart_kv::Command`s (arity is checked by the
//! table first), and the reply each renders from its outcome. What a write *does* is
//! `rampart_kv`'s.

use bytes::Bytes;
use rampart_kv::{Command, ExpireCond, KvError, Outcome, Response, SetCond, Ttl};
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
    /// GETDEL, GETEX: the value, or nil.
    Value,
}

type Parsed = Result<(Command, WriteReply), Value>;

fn key(args: &[Bytes]) -> Vec<u8> {
    args[1].to_vec()
}

/// An expiry option as given (its number not yet checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpiryOpt<'a> {
    None,
    Keep,
    Persist,
    /// `EX`/`PX`/`EXAT`/`PXAT`: the number, in seconds or not, relative or not.
    Time {
        arg: &'a [u8],
        seconds: bool,
        relative: bool,
    },
}

/// The options of SET (`for_set`) or GETEX, parsed as Redis 7.0's
/// `parseExtendedStringArgumentsOrReply` does: each option may repeat, but conflicting ones
/// (or an option SET or GETEX does not take) are a syntax error.
fn string_options(args: &[Bytes], for_set: bool) -> Result<(SetCond, bool, ExpiryOpt<'_>), Value> {
    let mut cond = SetCond::Always;
    let mut get = false;
    let mut expiry = ExpiryOpt::None;
    let mut j = 3 - usize::from(!for_set);
    while j < args.len() {
        let opt = String::from_utf8_lossy(&args[j]).to_ascii_uppercase();
        let next = args.get(j + 1);
        let time = |seconds, relative| ExpiryOpt::Time { arg: &[], seconds, relative };
        let same_time = |t: ExpiryOpt<'_>| match (expiry, t) {
            (ExpiryOpt::None, _) => true,
            (ExpiryOpt::Time { seconds: a, relative: b, .. }, ExpiryOpt::Time { seconds: c, relative: d, .. }) => {
                a == c && b == d
            }
            _ => false,
        };
        match opt.as_str() {
            "NX" if for_set && cond != SetCond::IfPresent => cond = SetCond::IfAbsent,
            "XX" if for_set && cond != SetCond::IfAbsent => cond = SetCond::IfPresent,
            "GET" if for_set => get = true,
            "KEEPTTL" if for_set && matches!(expiry, ExpiryOpt::None | ExpiryOpt::Keep) => expiry = ExpiryOpt::Keep,
            "PERSIST" if !for_set && matches!(expiry, ExpiryOpt::None | ExpiryOpt::Persist) => {
                expiry = ExpiryOpt::Persist
            }
            "EX" | "PX" | "EXAT" | "PXAT" if next.is_some() => {
                let seconds = opt == "EX" || opt == "EXAT";
                let relative = opt == "EX" || opt == "PX";
                if !same_time(time(seconds, relative)) {
                    return Err(err("ERR syntax error"));
                }
                expiry = ExpiryOpt::Time { arg: next.map_or(&[][..], |b| &b[..]), seconds, relative };
                j += 1;
            }
            _ => return Err(err("ERR syntax error")),
        }
        j += 1;
    }
    Ok((cond, get, expiry))
}

/// The wall clock, Unix ms (Redis's `mstime()`): relative times are checked against it for
/// overflow; the replica resolves them at the write's own time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The [`Ttl`] of `EX`/`PX`/`EXAT`/`PXAT` (or SETEX/PSETEX) number `arg`, checked as Redis 7.0's
/// `getExpireMillisecondsOrReply` does: not an integer, zero or less, or past the largest time
/// (in ms, from now for a relative one) is an error naming `command`.
fn expire_time(arg: &[u8], seconds: bool, relative: bool, command: &str) -> Result<Ttl, Value> {
    let n = parse_i64(arg).ok_or_else(|| err("ERR value is not an integer or out of range"))?;
    let invalid = || err(format!("ERR invalid expire time in '{command}' command"));
    if n <= 0 || (seconds && n > i64::MAX / 1000) {
        return Err(invalid());
    }
    let ms = if seconds { n * 1000 } else { n };
    if relative {
        now_ms().checked_add(ms).ok_or_else(invalid)?;
        Ok(Ttl::In(ms))
    } else {
        Ok(Ttl::At(ms))
    }
}

pub fn set(args: &[Bytes]) -> Parsed {
    let (cond, get, expiry) = string_options(args, true)?;
    let ttl = match expiry {
        ExpiryOpt::None => Ttl::Clear,
        ExpiryOpt::Keep => Ttl::Keep,
        ExpiryOpt::Persist => return Err(err("ERR syntax error")),
        ExpiryOpt::Time { arg, seconds, relative } => expire_time(arg, seconds, relative, "set")?,
    };
    Ok((Command::Set { key: key(args), value: args[2].to_vec(), cond, return_old: get, ttl }, WriteReply::Set { get }))
}

/// SETEX key seconds value.
pub fn setex(args: &[Bytes]) -> Parsed {
    set_for(args, true, "setex")
}

/// PSETEX key milliseconds value.
pub fn psetex(args: &[Bytes]) -> Parsed {
    set_for(args, false, "psetex")
}

fn set_for(args: &[Bytes], seconds: bool, command: &str) -> Parsed {
    let ttl = expire_time(&args[2], seconds, true, command)?;
    let cmd = Command::Set { key: key(args), value: args[3].to_vec(), cond: SetCond::Always, return_old: false, ttl };
    Ok((cmd, WriteReply::Set { get: false }))
}

/// GETEX's options. `Ok(None)`: no option (a plain read). An invalid time is `Err(Some)`
/// of the error and the key must be read first: Redis answers nil for an absent key before it
/// checks the time.
pub fn getex(args: &[Bytes]) -> Result<Option<Command>, (Value, bool)> {
    let (_, _, expiry) = string_options(args, false).map_err(|e| (e, false))?;
    let ttl = match expiry {
        ExpiryOpt::None => return Ok(None),
        ExpiryOpt::Keep => return Err((err("ERR syntax error"), false)),
        ExpiryOpt::Persist => Ttl::Clear,
        ExpiryOpt::Time { arg, seconds, relative } => {
            expire_time(arg, seconds, relative, "getex").map_err(|e| (e, true))?
        }
    };
    Ok(Some(Command::GetEx { key: key(args), ttl }))
}

pub fn getdel(args: &[Bytes]) -> Parsed {
    Ok((Command::GetDel { key: key(args) }, WriteReply::Value))
}

pub fn expire(args: &[Bytes]) -> Parsed {
    expire_for(args, true, true, "expire")
}

pub fn pexpire(args: &[Bytes]) -> Parsed {
    expire_for(args, false, true, "pexpire")
}

pub fn expireat(args: &[Bytes]) -> Parsed {
    expire_for(args, true, false, "expireat")
}

pub fn pexpireat(args: &[Bytes]) -> Parsed {
    expire_for(args, false, false, "pexpireat")
}

/// The EXPIRE family, checked as Redis 7.0's `expireGenericCommand` does: the options first
/// (`NX`/`XX`/`GT`/`LT`), then the number (negative is allowed: the key is deleted), refused
/// only when it overflows in ms or from now.
fn expire_for(args: &[Bytes], seconds: bool, relative: bool, command: &str) -> Parsed {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &args[3..] {
        match String::from_utf8_lossy(opt).to_ascii_uppercase().as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            _ => return Err(err(format!("ERR Unsupported option {}", String::from_utf8_lossy(opt)))),
        }
    }
    if nx && (xx || gt || lt) {
        return Err(err("ERR NX and XX, GT or LT options at the same time are not compatible"));
    }
    if gt && lt {
        return Err(err("ERR GT and LT options at the same time are not compatible"));
    }
    // GT already needs an expiry (none is infinite), so XX adds nothing to it.
    let cond = match (nx, xx, gt, lt) {
        (true, ..) => ExpireCond::IfNone,
        (_, _, true, _) => ExpireCond::IfGreater,
        (_, true, _, true) => ExpireCond::IfSomeAndLess,
        (_, false, _, true) => ExpireCond::IfLess,
        (_, true, ..) => ExpireCond::IfSome,
        _ => ExpireCond::Always,
    };
    let n = parse_i64(&args[2]).ok_or_else(|| err("ERR value is not an integer or out of range"))?;
    let invalid = || err(format!("ERR invalid expire time in '{command}' command"));
    let ms = if seconds { n.checked_mul(1000).ok_or_else(invalid)? } else { n };
    let ttl = if relative {
        now_ms().checked_add(ms).ok_or_else(invalid)?;
        Ttl::In(ms)
    } else {
        Ttl::At(ms)
    };
    Ok((Command::Expire { key: key(args), ttl, cond }, WriteReply::Integer))
}

pub fn persist(args: &[Bytes]) -> Parsed {
    Ok((Command::Persist { key: key(args) }, WriteReply::Integer))
}

pub fn setnx(args: &[Bytes]) -> Parsed {
    let cmd = Command::Set {
        key: key(args),
        value: args[2].to_vec(),
        cond: SetCond::IfAbsent,
        return_old: false,
        ttl: Ttl::Clear,
    };
    Ok((cmd, WriteReply::WrittenFlag))
}

pub fn getset(args: &[Bytes]) -> Parsed {
    let cmd = Command::Set {
        key: key(args),
        value: args[2].to_vec(),
        cond: SetCond::Always,
        return_old: true,
        ttl: Ttl::Clear,
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
        (WriteReply::Value, Outcome::Value(v)) => v.map_or(Value::Null, |v| Value::Bulk(Bytes::from(v))),
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
                ttl: Ttl::Clear
            }
        );
        assert!(set(&args(&["SET", "k", "v", "NX", "NX"])).is_ok(), "a repeated NX is accepted, as in Redis");
        assert_eq!(set(&args(&["SET", "k", "v", "NX", "XX"])).unwrap_err(), err("ERR syntax error"));
        assert_eq!(set(&args(&["SET", "k", "v", "BOGUS"])).unwrap_err(), err("ERR syntax error"));
    }

    #[test]
    fn expiry_options_map_to_ttls() {
        let ttl = |v: &[&str]| match set(&args(v)).unwrap().0 {
            Command::Set { ttl, .. } => ttl,
            other => panic!("{other:?}"),
        };
        assert_eq!(ttl(&["SET", "k", "v"]), Ttl::Clear);
        assert_eq!(ttl(&["SET", "k", "v", "ex", "10"]), Ttl::In(10_000));
        assert_eq!(ttl(&["SET", "k", "v", "PX", "10"]), Ttl::In(10));
        assert_eq!(ttl(&["SET", "k", "v", "EXAT", "10"]), Ttl::At(10_000));
        assert_eq!(ttl(&["SET", "k", "v", "PXAT", "9223372036854775807"]), Ttl::At(i64::MAX));
        assert_eq!(ttl(&["SET", "k", "v", "KEEPTTL", "GET"]), Ttl::Keep);
        assert_eq!(ttl(&["SET", "k", "v", "EX", "1", "EX", "2"]), Ttl::In(2_000), "the last repeat wins");
        assert_eq!(setex(&args(&["SETEX", "k", "3", "v"])).unwrap().0, {
            Command::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                cond: SetCond::Always,
                return_old: false,
                ttl: Ttl::In(3_000),
            }
        });
        let ex = |v: &[&str]| getex(&args(v)).map_err(|(e, _)| e);
        assert_eq!(ex(&["GETEX", "k"]), Ok(None));
        assert_eq!(ex(&["GETEX", "k", "PERSIST"]), Ok(Some(Command::GetEx { key: b"k".to_vec(), ttl: Ttl::Clear })));
        assert_eq!(ex(&["GETEX", "k", "pxat", "5"]), Ok(Some(Command::GetEx { key: b"k".to_vec(), ttl: Ttl::At(5) })));
        assert!(getex(&args(&["GETEX", "k", "EX", "0"])).unwrap_err().1, "a bad time needs the key read");
        assert!(!getex(&args(&["GETEX", "k", "FOO"])).unwrap_err().1, "a bad option does not");
        let exp = |v: &[&str]| match expire_for(&args(v), v[0] == "EXPIRE", v[0] != "EXPIREAT", "x").unwrap().0 {
            Command::Expire { ttl, cond, .. } => (ttl, cond),
            other => panic!("{other:?}"),
        };
        assert_eq!(exp(&["EXPIRE", "k", "-3"]), (Ttl::In(-3_000), ExpireCond::Always));
        assert_eq!(exp(&["EXPIRE", "k", "1", "nx"]), (Ttl::In(1_000), ExpireCond::IfNone));
        assert_eq!(exp(&["EXPIRE", "k", "1", "XX"]), (Ttl::In(1_000), ExpireCond::IfSome));
        assert_eq!(exp(&["EXPIRE", "k", "1", "GT", "XX"]), (Ttl::In(1_000), ExpireCond::IfGreater));
        assert_eq!(exp(&["EXPIRE", "k", "1", "LT"]), (Ttl::In(1_000), ExpireCond::IfLess));
        assert_eq!(exp(&["EXPIRE", "k", "1", "LT", "XX"]), (Ttl::In(1_000), ExpireCond::IfSomeAndLess));
        assert_eq!(exp(&["EXPIREAT", "k", "7"]), (Ttl::At(7), ExpireCond::Always));
        assert_eq!(
            expire(&args(&["EXPIRE", "k", "-9223372036854776"])).unwrap_err(),
            err("ERR invalid expire time in 'expire' command"),
            "below i64::MIN / 1000 overflows in ms, as Redis checks"
        );
        assert!(expire(&args(&["EXPIRE", "k", "-9223372036854775"])).is_ok());
        assert!(pexpireat(&args(&["PEXPIREAT", "k", "9223372036854775807"])).is_ok(), "no base time to add");
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
