//! The RESP command table: every command this server knows, once. Its name, Redis arity, flags
//! and key positions (what `COMMAND` reports), and what runs it. Adding a command is one line
//! here plus its parser (a write, in `writes.rs`) or its handler (anything else, in
//! `handlers.rs`); what a write means lives in `rampart-kv`.

use std::sync::OnceLock;

use bytes::Bytes;
use rampart_kv::Command;
use rampart_resp::Value;

use super::writes::{self, WriteReply};
use crate::acl::rules::cat::*;
use crate::acl::Catalog;

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
    Auth,
    Acl,
    /// GETEX: a read without an option, a write with one.
    Getex,
    Ttl,
    Pttl,
    Expiretime,
    Pexpiretime,
    Subscribe,
    Unsubscribe,
    Psubscribe,
    Punsubscribe,
    Publish,
    Pubsub,
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

/// A subcommand of a container command (`ACL WHOAMI`): what ACL rules name as `acl|whoami`.
pub struct Sub {
    /// Lowercase.
    pub name: &'static str,
    /// Redis arity, counting the container's name and the subcommand's.
    pub arity: i64,
    /// ACL categories ([`crate::acl::rules::cat`] flags), as Redis 7.0 gives them.
    pub cats: u32,
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
    /// ACL categories ([`crate::acl::rules::cat`] flags), as Redis 7.0 gives them.
    pub cats: u32,
    /// Subcommands ACL rules can name; a subcommand not listed is checked as the container.
    pub subs: &'static [Sub],
    pub exec: Exec,
}

impl Spec {
    /// True when `argc` arguments (the name included) fit the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        arity_ok(self.arity, argc)
    }

    pub fn is_write(&self) -> bool {
        matches!(self.exec, Exec::Write(_))
    }

    /// Redis's `no_auth` flag: runs before authentication and whatever the ACL says.
    pub fn no_auth(&self) -> bool {
        self.flags.contains(&"no_auth")
    }

    /// The keys `args` name, by the table's key positions.
    pub fn keys<'a>(&self, args: &'a [Bytes]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let argc = args.len() as i64;
        let last = if self.last_key < 0 { argc + self.last_key } else { self.last_key.min(argc - 1) };
        let (first, step) = (self.first_key, self.key_step.max(1));
        let (first, step) = (first.max(1), step as usize);
        // Empty when the command names no key (first > last).
        let range = (first..=last).step_by(step);
        range.map(move |i| args[i as usize].as_ref())
    }
}

fn arity_ok(arity: i64, argc: usize) -> bool {
    let argc = argc as i64;
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    cats: u32,
    exec: Exec,
) -> Spec {
    Spec { name, arity, flags, first_key: keys.0, last_key: keys.1, key_step: keys.2, cats, subs: &[], exec }
}

const fn container(name: &'static str, arity: i64, cats: u32, subs: &'static [Sub], exec: Exec) -> Spec {
    Spec { name, arity, flags: &[], first_key: 0, last_key: 0, key_step: 0, cats, subs, exec }
}

const fn sub(name: &'static str, arity: i64, cats: u32) -> Sub {
    Sub { name, arity, cats }
}

const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const RF: &[&str] = &["readonly", "fast"];
const F: &[&str] = &["fast"];
const NA: &[&str] = &["fast", "no_auth"];
const ONE: (i64, i64, i64) = (1, 1, 1);
const ALL: (i64, i64, i64) = (1, -1, 1);
const NONE: (i64, i64, i64) = (0, 0, 0);

// Redis 7.0's ACL categories of each command.
const RD_STR_F: u32 = READ | STRING | FAST;
const WR_STR_F: u32 = WRITE | STRING | FAST;
const WR_STR_S: u32 = WRITE | STRING | SLOW;
const KS_RD_F: u32 = KEYSPACE | READ | FAST;
const KS_WR_F: u32 = KEYSPACE | WRITE | FAST;
const WRITE_FAST: &[&str] = &["write", "fast"];
const CONN_F: u32 = FAST | CONNECTION;
const CONN_S: u32 = SLOW | CONNECTION;
const ADMIN_S: u32 = ADMIN | SLOW | DANGEROUS;

/// Every command, in the order `COMMAND` lists them.
pub static COMMANDS: &[Spec] = &[
    spec("get", 2, RF, ONE, RD_STR_F, Exec::Conn(Op::Get)),
    spec("set", -3, W, ONE, WR_STR_S, Exec::Write(writes::set)),
    spec("setnx", 3, WF, ONE, WR_STR_F, Exec::Write(writes::setnx)),
    spec("getset", 3, WF, ONE, WR_STR_F, Exec::Write(writes::getset)),
    spec("del", -2, &["write"], ALL, KEYSPACE | WRITE | SLOW, Exec::Write(writes::del)),
    spec("unlink", -2, WRITE_FAST, ALL, KEYSPACE | WRITE | FAST, Exec::Write(writes::del)),
    spec("exists", -2, RF, ALL, KS_RD_F, Exec::Conn(Op::Exists)),
    spec("incr", 2, WF, ONE, WR_STR_F, Exec::Write(writes::incr)),
    spec("decr", 2, WF, ONE, WR_STR_F, Exec::Write(writes::decr)),
    spec("incrby", 3, WF, ONE, WR_STR_F, Exec::Write(writes::incrby)),
    spec("decrby", 3, WF, ONE, WR_STR_F, Exec::Write(writes::decrby)),
    spec("mget", -2, RF, ALL, RD_STR_F, Exec::Conn(Op::Mget)),
    spec("mset", -3, W, (1, -1, 2), WR_STR_S, Exec::Write(writes::mset)),
    spec("append", 3, WF, ONE, WR_STR_F, Exec::Write(writes::append)),
    spec("strlen", 2, RF, ONE, RD_STR_F, Exec::Conn(Op::Strlen)),
    spec("type", 2, RF, ONE, KS_RD_F, Exec::Conn(Op::Type)),
    spec("keys", 2, &["readonly"], NONE, KEYSPACE | READ | SLOW | DANGEROUS, Exec::Conn(Op::Keys)),
    spec("scan", -2, &["readonly"], NONE, KEYSPACE | READ | SLOW, Exec::Conn(Op::Scan)),
    spec("dbsize", 1, RF, NONE, KS_RD_F, Exec::Conn(Op::Dbsize)),
    spec("setex", 4, W, ONE, WR_STR_S, Exec::Write(writes::setex)),
    spec("psetex", 4, W, ONE, WR_STR_S, Exec::Write(writes::psetex)),
    spec("getex", -2, WRITE_FAST, ONE, WR_STR_F, Exec::Conn(Op::Getex)),
    spec("getdel", 2, WRITE_FAST, ONE, WR_STR_F, Exec::Write(writes::getdel)),
    spec("expire", -3, WRITE_FAST, ONE, KS_WR_F, Exec::Write(writes::expire)),
    spec("pexpire", -3, WRITE_FAST, ONE, KS_WR_F, Exec::Write(writes::pexpire)),
    spec("expireat", -3, WRITE_FAST, ONE, KS_WR_F, Exec::Write(writes::expireat)),
    spec("pexpireat", -3, WRITE_FAST, ONE, KS_WR_F, Exec::Write(writes::pexpireat)),
    spec("persist", 2, WRITE_FAST, ONE, KS_WR_F, Exec::Write(writes::persist)),
    spec("ttl", 2, RF, ONE, KS_RD_F, Exec::Conn(Op::Ttl)),
    spec("pttl", 2, RF, ONE, KS_RD_F, Exec::Conn(Op::Pttl)),
    spec("expiretime", 2, RF, ONE, KS_RD_F, Exec::Conn(Op::Expiretime)),
    spec("pexpiretime", 2, RF, ONE, KS_RD_F, Exec::Conn(Op::Pexpiretime)),
    // Not a Redis command: a compare-and-set, in the categories of Redis's SET.
    spec("cas", 4, W, ONE, WR_STR_S, Exec::Write(writes::cas)),
    spec("ping", -1, F, NONE, CONN_F, Exec::Conn(Op::Ping)),
    spec("echo", 2, F, NONE, CONN_F, Exec::Conn(Op::Echo)),
    spec("hello", -1, NA, NONE, CONN_F, Exec::Conn(Op::Hello)),
    spec("select", 2, F, NONE, CONN_F, Exec::Conn(Op::Select)),
    spec("quit", -1, NA, NONE, CONN_F, Exec::Conn(Op::Quit)),
    container("command", -1, CONN_S, COMMAND_SUBS, Exec::Conn(Op::Command)),
    container("client", -2, SLOW, CLIENT_SUBS, Exec::Conn(Op::Client)),
    container("config", -2, SLOW, CONFIG_SUBS, Exec::Conn(Op::Config)),
    spec("info", -1, &[], NONE, SLOW | DANGEROUS, Exec::Conn(Op::Info)),
    spec("role", 1, F, NONE, ADMIN | FAST | DANGEROUS, Exec::Conn(Op::Role)),
    spec("readonly", 1, F, NONE, CONN_F, Exec::Conn(Op::Readonly)),
    spec("readwrite", 1, F, NONE, CONN_F, Exec::Conn(Op::Readwrite)),
    spec("time", 1, F, NONE, FAST, Exec::Conn(Op::Time)),
    spec("auth", -2, NA, NONE, CONN_F, Exec::Conn(Op::Auth)),
    container("acl", -2, SLOW, ACL_SUBS, Exec::Conn(Op::Acl)),
    spec("subscribe", -2, PS, NONE, PUBSUB | SLOW, Exec::Conn(Op::Subscribe)),
    spec("unsubscribe", -1, PS, NONE, PUBSUB | SLOW, Exec::Conn(Op::Unsubscribe)),
    spec("psubscribe", -2, PS, NONE, PUBSUB | SLOW, Exec::Conn(Op::Psubscribe)),
    spec("punsubscribe", -1, PS, NONE, PUBSUB | SLOW, Exec::Conn(Op::Punsubscribe)),
    spec("publish", 3, &["pubsub", "loading", "stale", "fast"], NONE, PUBSUB | FAST, Exec::Conn(Op::Publish)),
    container("pubsub", -2, SLOW, PUBSUB_SUBS, Exec::Conn(Op::Pubsub)),
];

const PS: &[&str] = &["pubsub", "noscript", "loading", "stale"];
static PUBSUB_SUBS: &[Sub] =
    &[sub("channels", -2, PUBSUB | SLOW), sub("numpat", 2, PUBSUB | SLOW), sub("numsub", -2, PUBSUB | SLOW)];

static COMMAND_SUBS: &[Sub] = &[sub("count", 2, CONN_S), sub("docs", -2, CONN_S)];
static CLIENT_SUBS: &[Sub] = &[
    sub("setname", 3, CONN_S),
    sub("getname", 2, CONN_S),
    sub("id", 2, CONN_S),
    sub("info", 2, CONN_S),
    sub("setinfo", 4, CONN_S),
];
static CONFIG_SUBS: &[Sub] = &[sub("get", -3, ADMIN_S), sub("set", -4, ADMIN_S)];
/// The ACL subcommands rampart has; any other is answered "unknown subcommand", as Redis does.
pub static ACL_SUBS: &[Sub] = &[
    sub("cat", -2, SLOW),
    sub("deluser", -3, ADMIN_S),
    sub("getuser", 3, ADMIN_S),
    sub("list", 2, ADMIN_S),
    sub("setuser", -3, ADMIN_S),
    sub("users", 2, ADMIN_S),
    sub("whoami", 2, SLOW),
];

/// The ACL catalog of [`COMMANDS`]: command ids are positions in it, each container followed
/// by its subcommands.
pub fn acl_catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let list: Vec<crate::acl::rules::CatalogSpec<'_>> =
            COMMANDS.iter().map(|s| (s.name, s.cats, s.subs.iter().map(|x| (x.name, x.cats)).collect())).collect();
        Catalog::new(&list)
    })
}

/// The ACL command id of `spec` (the container's, for a container).
fn base_id(spec: &Spec) -> usize {
    static IDS: OnceLock<Vec<usize>> = OnceLock::new();
    let ids = IDS.get_or_init(|| {
        let mut next = 0;
        COMMANDS
            .iter()
            .map(|s| {
                let id = next;
                next += 1 + s.subs.len();
                id
            })
            .collect()
    });
    let pos = COMMANDS.iter().position(|s| std::ptr::eq(s, spec)).unwrap_or(0);
    ids[pos]
}

/// What ACL rules call one invocation of a command: its id in [`acl_catalog`], and the
/// subcommand it runs, if the table lists it.
#[derive(Clone, Copy)]
pub struct AclTarget {
    pub id: usize,
    spec: &'static Spec,
    sub: Option<&'static Sub>,
}

impl AclTarget {
    /// The full name, as NOPERM replies give it (`get`, `acl|whoami`).
    pub fn fullname(&self) -> String {
        match self.sub {
            Some(sub) => format!("{}|{}", self.spec.name, sub.name),
            None => self.spec.name.to_string(),
        }
    }
}

/// The [`AclTarget`] of `args` for `spec`. A subcommand's own arity is checked here (Redis
/// checks it before authentication), and an unknown `ACL` subcommand is answered here too.
pub fn acl_target(spec: &'static Spec, args: &[Bytes]) -> Result<AclTarget, Value> {
    let base = base_id(spec);
    if spec.subs.is_empty() || args.len() < 2 {
        return Ok(AclTarget { id: base, spec, sub: None });
    }
    match spec.subs.iter().position(|s| s.name.as_bytes().eq_ignore_ascii_case(&args[1])) {
        Some(j) => {
            let sub = &spec.subs[j];
            let target = AclTarget { id: base + 1 + j, spec, sub: Some(sub) };
            if !arity_ok(sub.arity, args.len()) {
                let name = target.fullname();
                return Err(Value::Error(format!("ERR wrong number of arguments for '{name}' command")));
            }
            Ok(target)
        }
        None if std::ptr::eq(spec.subs, ACL_SUBS) => Err(Value::Error(format!(
            "ERR unknown subcommand '{}'. Try ACL HELP.",
            String::from_utf8_lossy(&args[1]).chars().take(128).collect::<String>()
        ))),
        None => Ok(AclTarget { id: base, spec, sub: None }),
    }
}

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
    fn the_acl_catalog_names_every_command_and_subcommand() {
        let c = acl_catalog();
        assert_eq!(c.len(), COMMANDS.iter().map(|s| 1 + s.subs.len()).sum::<usize>());
        let args = |v: &[&str]| v.iter().map(|s| Bytes::from(s.to_string())).collect::<Vec<_>>();
        for s in COMMANDS {
            let t = acl_target(s, &args(&[s.name])).unwrap();
            assert_eq!(c.entry(t.id).fullname, t.fullname());
            for sub in s.subs {
                let mut a = vec![s.name.to_string(), sub.name.to_uppercase()];
                a.resize(sub.arity.unsigned_abs() as usize, "x".into());
                let a: Vec<Bytes> = a.into_iter().map(Bytes::from).collect();
                let t = acl_target(s, &a).unwrap();
                assert_eq!(t.fullname(), format!("{}|{}", s.name, sub.name));
                assert_eq!(c.entry(t.id).fullname, t.fullname());
                assert_eq!(c.entry(t.id).cats, sub.cats);
            }
        }
        let acl = lookup(b"acl").unwrap();
        assert_eq!(
            acl_target(acl, &args(&["acl", "whoami", "x"])).err().unwrap(),
            Value::Error("ERR wrong number of arguments for 'acl|whoami' command".into())
        );
        assert_eq!(
            acl_target(acl, &args(&["acl", "foo"])).err().unwrap(),
            Value::Error("ERR unknown subcommand 'foo'. Try ACL HELP.".into())
        );
    }

    #[test]
    fn key_positions_pick_the_keys() {
        let args = |v: &[&str]| v.iter().map(|s| Bytes::from(s.to_string())).collect::<Vec<_>>();
        let keys = |name: &[u8], a: &[&str]| {
            let a = args(a);
            lookup(name).unwrap().keys(&a).map(<[u8]>::to_vec).collect::<Vec<_>>()
        };
        assert_eq!(keys(b"get", &["get", "k"]), vec![b"k".to_vec()]);
        assert_eq!(keys(b"mset", &["mset", "a", "1", "b", "2"]), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(keys(b"del", &["del", "a", "b", "c"]).len(), 3);
        assert_eq!(keys(b"set", &["set", "k", "v", "NX"]), vec![b"k".to_vec()]);
        assert!(keys(b"keys", &["keys", "*"]).is_empty());
        assert!(keys(b"ping", &["ping"]).is_empty());
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
