//! The RESP command table: every command this server knows, once. Its name, Redis arity, flags
//! and key positions (what `COMMAND` reports), and what runs it. Adding a command is one line
//! here plus its parser (a write, in `writes.rs`) or its handler (anything else, in
//! `handlers.rs`); what a write means lives in `rampart-kv`.

use bytes::Bytes;
use rampart_kv::Command;
use rampart_resp::Value;

use super::writes::{self, WriteReply};

/// A write's parser: the command's arguments (name first; arity already checked) to the
/// `rampart_kv::Command` and how its result is rendered, or the error reply.
pub type ParseWrite = fn(&[Bytes]) -> Result<(Command, WriteReply), Value>;

/// The commands a connection runs itself (reads, connection state, introspection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Mget,
    Exists,
    Strlen,
    Type,
    Keys,
    Scan,
    Dbsize,
    Ping,
    Echo,
    Hello,
    Select,
    Quit,
    Command,
    Client,
    Config,
    Info,
    Role,
    Readonly,
    Readwrite,
    Time,
}

/// What runs a command.
#[derive(Clone, Copy)]
pub enum Exec {
    /// A write: parsed into a command for the replica; consecutive writes of a pipeline go to
    /// the replica together.
    Write(ParseWrite),
    /// Run by the connection.
    Conn(Op),
}

/// One command as Redis's `COMMAND` describes it, and what runs it.
pub struct Spec {
    /// Lowercase, as `COMMAND` reports it; also the metrics label.
    pub name: &'static str,
    /// Redis arity: N > 0 exactly N arguments (the name included), N < 0 at least -N.
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub key_step: i64,
    pub exec: Exec,
}

impl Spec {
    /// True when `argc` arguments (the name included) fit the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    pub fn is_write(&self) -> bool {
        matches!(self.exec, Exec::Write(_))
    }
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    exec: Exec,
) -> Spec {
    Spec { name, arity, flags, first_key: keys.0, last_key: keys.1, key_step: keys.2, exec }
}

const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const RF: &[&str] = &["readonly", "fast"];
const F: &[&str] = &["fast"];
const ONE: (i64, i64, i64) = (1, 1, 1);
const ALL: (i64, i64, i64) = (1, -1, 1);
const NONE: (i64, i64, i64) = (0, 0, 0);

/// Every command, in the order `COMMAND` lists them.
pub static COMMANDS: &[Spec] = &[
    spec("get", 2, RF, ONE, Exec::Conn(Op::Get)),
    spec("set", -3, W, ONE, Exec::Write(writes::set)),
    spec("setnx", 3, WF, ONE, Exec::Write(writes::setnx)),
    spec("getset", 3, WF, ONE, Exec::Write(writes::getset)),
    spec("del", -2, &["write"], ALL, Exec::Write(writes::del)),
    spec("unlink", -2, &["write", "fast"], ALL, Exec::Write(writes::del)),
    spec("exists", -2, RF, ALL, Exec::Conn(Op::Exists)),
    spec("incr", 2, WF, ONE, Exec::Write(writes::incr)),
    spec("decr", 2, WF, ONE, Exec::Write(writes::decr)),
    spec("incrby", 3, WF, ONE, Exec::Write(writes::incrby)),
    spec("decrby", 3, WF, ONE, Exec::Write(writes::decrby)),
    spec("mget", -2, RF, ALL, Exec::Conn(Op::Mget)),
    spec("mset", -3, W, (1, -1, 2), Exec::Write(writes::mset)),
    spec("append", 3, WF, ONE, Exec::Write(writes::append)),
    spec("strlen", 2, RF, ONE, Exec::Conn(Op::Strlen)),
    spec("type", 2, RF, ONE, Exec::Conn(Op::Type)),
    spec("keys", 2, &["readonly"], NONE, Exec::Conn(Op::Keys)),
    spec("scan", -2, &["readonly"], NONE, Exec::Conn(Op::Scan)),
    spec("dbsize", 1, RF, NONE, Exec::Conn(Op::Dbsize)),
    spec("cas", 4, W, ONE, Exec::Write(writes::cas)),
    spec("ping", -1, F, NONE, Exec::Conn(Op::Ping)),
    spec("echo", 2, F, NONE, Exec::Conn(Op::Echo)),
    spec("hello", -1, F, NONE, Exec::Conn(Op::Hello)),
    spec("select", 2, F, NONE, Exec::Conn(Op::Select)),
    spec("quit", -1, F, NONE, Exec::Conn(Op::Quit)),
    spec("command", -1, &[], NONE, Exec::Conn(Op::Command)),
    spec("client", -2, &[], NONE, Exec::Conn(Op::Client)),
    spec("config", -2, &[], NONE, Exec::Conn(Op::Config)),
    spec("info", -1, &[], NONE, Exec::Conn(Op::Info)),
    spec("role", 1, F, NONE, Exec::Conn(Op::Role)),
    spec("readonly", 1, F, NONE, Exec::Conn(Op::Readonly)),
    spec("readwrite", 1, F, NONE, Exec::Conn(Op::Readwrite)),
    spec("time", 1, F, NONE, Exec::Conn(Op::Time)),
];

/// The command named `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name.len() == name.len() && s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Redis's reply to a command it does not know (7.0's exact text: the name and up to 128
/// bytes of quoted arguments, each followed by a space).
pub fn unknown_command(args: &[Bytes]) -> Value {
    let name: String = String::from_utf8_lossy(&args[0]).chars().take(128).collect();
    let mut shown = String::new();
    for a in &args[1..] {
        if shown.len() >= 128 {
            break;
        }
        let left = 128 - shown.len();
        let a: String = String::from_utf8_lossy(a).chars().take(left).collect();
        shown.push_str(&format!("'{a}' "));
    }
    // Redis turns line breaks in an error into spaces, so the reply stays one line.
    let line = format!("ERR unknown command '{name}', with args beginning with: {shown}");
    Value::Error(line.replace(['\r', '\n'], " "))
}

/// `COMMAND`'s description of one command.
pub fn describe(s: &Spec) -> Value {
    Value::Array(vec![
        Value::bulk(s.name),
        Value::Integer(s.arity),
        Value::Array(s.flags.iter().map(|f| Value::SimpleString(f.to_string())).collect()),
        Value::Integer(s.first_key),
        Value::Integer(s.last_key),
        Value::Integer(s.key_step),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lowercase_and_found_in_any_case() {
        for (i, s) in COMMANDS.iter().enumerate() {
            assert_eq!(s.name, s.name.to_ascii_lowercase());
            assert!(COMMANDS[..i].iter().all(|o| o.name != s.name), "{} listed twice", s.name);
            assert!(std::ptr::eq(lookup(s.name.to_ascii_uppercase().as_bytes()).unwrap(), s));
        }
        assert!(lookup(b"nosuch").is_none());
    }

    #[test]
    fn arity_follows_redis_rules() {
        let get = lookup(b"get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
        let set = lookup(b"set").unwrap();
        assert!(!set.arity_ok(2) && set.arity_ok(3) && set.arity_ok(9));
    }

    #[test]
    fn unknown_commands_are_answered_like_redis() {
        let args = |v: &[&str]| v.iter().map(|s| Bytes::from(s.to_string())).collect::<Vec<_>>();
        assert_eq!(
            unknown_command(&args(&["foo", "a", "b"])),
            Value::Error("ERR unknown command 'foo', with args beginning with: 'a' 'b' ".into())
        );
        assert_eq!(
            unknown_command(&args(&["foo"])),
            Value::Error("ERR unknown command 'foo', with args beginning with: ".into())
        );
    }
}
