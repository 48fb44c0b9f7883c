//! What a connection runs itself: reads, connection state and introspection (`INFO`, `ROLE`,
//! `HELLO`, `COMMAND`, `CLIENT`, `CONFIG`). Writes go to the replica through `writes.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rampart_kv::{Consistency, KvError, NodeStatus, Page, Role, StatusField};
use rampart_resp::{Protocol, Value};

use super::table::{describe, Op, COMMANDS};
use super::writes::{self, WriteReply};
use super::{api_err, err, parse_i64, split_host_port, wrong_args, Conn, KEYS_RESULT_MAX, SCAN_COUNT_MAX};
use crate::app::App;
use crate::glob::KeyPattern;

impl Conn {
    /// Runs `op` (its arity already checked against the table).
    pub(super) async fn run_op(&mut self, op: Op, args: &[Bytes]) -> Value {
        match op {
            Op::Subscribe | Op::Unsubscribe | Op::Psubscribe | Op::Punsubscribe | Op::Publish | Op::Pubsub => {
                self.pubsub_op(op, args)
            }
            Op::Ping if args.len() <= 2 && self.pubsub_context() => {
                self.subscribed_ping(args).unwrap_or_else(|| wrong_args("ping"))
            }
            Op::Ping => match args.len() {
                1 => Value::SimpleString("PONG".into()),
                2 => Value::Bulk(args[1].clone()),
                _ => wrong_args("ping"),
            },
            Op::Echo => Value::Bulk(args[1].clone()),
            Op::Quit => {
                self.quit = true;
                Value::ok()
            }
            Op::Select => match parse_i64(&args[1]) {
                Some(0) => Value::ok(),
                Some(_) => err("ERR DB index is out of range (rampart has only database 0)"),
                None => err("ERR value is not an integer or out of range"),
            },
            Op::Hello => self.hello(args).await,
            Op::Auth => self.auth(args).await,
            Op::Acl => self.acl(args).await,
            Op::Command => self.command(args),
            Op::Client => self.client(args),
            Op::Config => self.config(args).await,
            Op::Readonly => {
                self.readonly = true;
                Value::ok()
            }
            Op::Readwrite => {
                self.readonly = false;
                Value::ok()
            }
            Op::Time => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                Value::Array(vec![Value::bulk(now.as_secs().to_string()), Value::bulk(now.subsec_micros().to_string())])
            }
            Op::Get => self.get(args[1].clone()).await,
            Op::Getex => self.getex(args).await,
            Op::Ttl => self.ttl(&args[1], TtlReply::Remaining { ms: false }).await,
            Op::Pttl => self.ttl(&args[1], TtlReply::Remaining { ms: true }).await,
            Op::Expiretime => self.ttl(&args[1], TtlReply::At { ms: false }).await,
            Op::Pexpiretime => self.ttl(&args[1], TtlReply::At { ms: true }).await,
            Op::Mget => match self.app.get_many(self.consistency(), args[1..].to_vec()).await {
                Ok(vals) => Value::Array(
                    vals.into_iter().map(|v| v.map_or(Value::Null, |i| Value::Bulk(Bytes::from(i.value)))).collect(),
                ),
                Err(e) => api_err(e),
            },
            Op::Exists => match self.app.exists(self.consistency(), args[1..].to_vec()).await {
                Ok(n) => Value::Integer(n as i64),
                Err(e) => api_err(e),
            },
            Op::Strlen => match self.app.get(self.consistency(), args[1].clone()).await {
                Ok(v) => Value::Integer(v.map_or(0, |i| i.value.len()) as i64),
                Err(e) => api_err(e),
            },
            Op::Type => match self.app.get(self.consistency(), args[1].clone()).await {
                Ok(v) => Value::SimpleString(if v.is_some() { "string" } else { "none" }.into()),
                Err(e) => api_err(e),
            },
            Op::Dbsize => self.app.dbsize(self.consistency()).await.map_or_else(api_err, |l| Value::Integer(l as i64)),
            Op::Keys => self.keys(args[1].clone()).await,
            Op::Scan => self.scan(args).await,
            Op::Info => self.info(args).await,
            Op::Role => self.role(),
        }
    }

    async fn get(&self, key: Bytes) -> Value {
        match self.app.get(self.consistency(), key).await {
            Ok(Some(v)) => Value::Bulk(Bytes::from(v.value)),
            Ok(None) => Value::Null,
            Err(e) => api_err(e),
        }
    }

    /// GETEX: without an option GET's read; with one, a write. A bad time is an error only
    /// for a key that exists (Redis looks the key up first and answers nil for an absent one).
    async fn getex(&self, args: &[Bytes]) -> Value {
        match writes::getex(args) {
            Ok(None) => self.get(args[1].clone()).await,
            Ok(Some(cmd)) => writes::render(WriteReply::Value, self.app.write(cmd).await),
            Err((e, false)) => e,
            Err((e, true)) => match self.app.get(self.consistency(), args[1].clone()).await {
                Ok(None) => Value::Null,
                Ok(Some(_)) => e,
                Err(e) => api_err(e),
            },
        }
    }

    /// TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 for an absent key, -1 for one without an expiry,
    /// else the time left by this node's clock (never below 0) or the expiry itself; seconds
    /// round to the nearest, as Redis's `(ms + 500) / 1000`.
    async fn ttl(&self, key: &Bytes, reply: TtlReply) -> Value {
        let item = match self.app.get_many(self.consistency(), vec![key.clone()]).await {
            Ok(mut items) => items.pop().flatten(),
            Err(e) => return api_err(e),
        };
        let Some(item) = item else { return Value::Integer(-2) };
        let Some(at) = item.expires_at else { return Value::Integer(-1) };
        let at = i64::try_from(at).unwrap_or(i64::MAX);
        let (t, ms) = match reply {
            TtlReply::Remaining { ms } => (at.saturating_sub(writes::now_ms()).max(0), ms),
            TtlReply::At { ms } => (at, ms),
        };
        Value::Integer(if ms { t } else { t.saturating_add(500) / 1000 })
    }

    /// KEYS: every matching key, in pages, the matching done off the async workers. Refused
    /// past [`KEYS_RESULT_MAX`] keys, past `reply_bytes_max` bytes of keys, or past the request
    /// timeout (SCAN has none of these limits).
    async fn keys(&self, pattern: Bytes) -> Value {
        let pattern = match KeyPattern::new(&pattern) {
            Ok(p) => Arc::new(p),
            Err(e) => return err(e),
        };
        let slot = match self.app.scan_slot().await {
            Ok(s) => s,
            Err(e) => return api_err(e),
        };
        let prefix = pattern.literal_prefix();
        let deadline = Instant::now() + self.app.cfg.request_timeout;
        let mut budget = self.app.replica.limits().reply_budget();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page =
                match self.app.scan(&slot, self.consistency(), prefix.clone(), after, KEYS_PAGE_KEYS, false).await {
                    Ok(p) => p,
                    Err(e) => return api_err(e),
                };
            let next = page.next_after.clone();
            let matched = match matching_keys(&self.app, &pattern, page).await {
                Ok(keys) => keys,
                Err(e) => return api_err(e),
            };
            for k in &matched {
                if let Err(e) = budget.take(k.len()) {
                    return api_err(e);
                }
            }
            out.extend(matched);
            if out.len() > KEYS_RESULT_MAX {
                return err(format!("ERR KEYS would return more than {KEYS_RESULT_MAX} keys; use SCAN"));
            }
            match next {
                None => break,
                Some(k) => after = Some(k),
            }
            if Instant::now() > deadline {
                return err("ERR KEYS took longer than the request timeout; use SCAN");
            }
        }
        Value::Array(out.into_iter().map(|k| Value::Bulk(Bytes::from(k))).collect())
    }

    async fn scan(&self, args: &[Bytes]) -> Value {
        let Some(cursor) = std::str::from_utf8(&args[1]).ok().and_then(|s| s.parse::<u64>().ok()) else {
            return err("ERR invalid cursor");
        };
        let mut pattern: Option<KeyPattern> = None;
        let mut count = 10usize;
        let mut i = 2;
        while i < args.len() {
            let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
            match (opt.as_str(), args.get(i + 1)) {
                ("MATCH", Some(p)) => match KeyPattern::new(p) {
                    Ok(p) => pattern = Some(p),
                    Err(e) => return err(e),
                },
                ("COUNT", Some(c)) => match parse_i64(c) {
                    Some(c) if c >= 1 => count = (c as usize).min(SCAN_COUNT_MAX),
                    _ => return err("ERR value is not an integer or out of range"),
                },
                ("TYPE", Some(_)) => {}
                _ => return err("ERR syntax error"),
            }
            i += 2;
        }
        let after = if cursor == 0 {
            None
        } else {
            match self.app.scan_cursors.take(cursor) {
                Some(k) => Some(k),
                None => return err("ERR invalid cursor (unknown or expired; restart the scan from 0)"),
            }
        };
        let slot = match self.app.scan_slot().await {
            Ok(s) => s,
            Err(e) => return api_err(e),
        };
        let pattern = Arc::new(pattern.unwrap_or(KeyPattern::All));
        let prefix = pattern.literal_prefix();
        let page = match self.app.scan(&slot, self.consistency(), prefix, after, count, false).await {
            Ok(page) => page,
            Err(e) => return api_err(e),
        };
        // A page the replica made bigger than one reply (several nodes' pages merged) ends
        // early; the cursor then names the last key kept.
        let mut next_after = page.next_after.clone();
        let mut budget = self.app.replica.limits().reply_budget();
        let mut items = page.items;
        if let Some(cut) = items.iter().position(|(k, _)| budget.take(k.len()).is_err()) {
            let cut = cut.max(1);
            items.truncate(cut);
            next_after = items.last().map(|(k, _)| k.clone());
        }
        let keys = match matching_keys(&self.app, &pattern, Page { items, next_after: None }).await {
            Ok(keys) => keys,
            Err(e) => return api_err(e),
        };
        let next_cursor = next_after.map_or(0, |k| self.app.scan_cursors.save(k));
        Value::Array(vec![
            Value::bulk(next_cursor.to_string()),
            Value::Array(keys.into_iter().map(|k| Value::Bulk(Bytes::from(k))).collect()),
        ])
    }

    /// `HELLO`'s reply map (after `hello` in `auth.rs` checked and applied the options).
    pub(super) fn hello_reply(&self) -> Value {
        let master = self.app.replica.status().role.takes_writes();
        Value::Map(vec![
            (Value::bulk("server"), Value::bulk("redis")),
            (Value::bulk("version"), Value::bulk("7.2.0")),
            (Value::bulk("proto"), Value::Integer(if self.proto == Protocol::Resp3 { 3 } else { 2 })),
            (Value::bulk("id"), Value::Integer(self.id as i64)),
            (Value::bulk("mode"), Value::bulk("standalone")),
            (Value::bulk("role"), Value::bulk(if master { "master" } else { "replica" })),
            (Value::bulk("modules"), Value::Array(vec![])),
        ])
    }

    fn command(&self, args: &[Bytes]) -> Value {
        let sub = args.get(1).map(|a| String::from_utf8_lossy(a).to_ascii_uppercase());
        match sub.as_deref() {
            // redis-cli asks for DOCS to drive hints; an empty map is valid.
            Some("DOCS") => Value::Map(vec![]),
            Some("COUNT") => Value::Integer(COMMANDS.len() as i64),
            None => Value::Array(COMMANDS.iter().map(describe).collect()),
            Some(_) => Value::Array(vec![]),
        }
    }

    fn client(&mut self, args: &[Bytes]) -> Value {
        let sub = args.get(1).map(|a| String::from_utf8_lossy(a).to_ascii_uppercase());
        match (sub.as_deref(), args.len()) {
            (Some("SETNAME"), 3) => {
                if args[2].iter().any(|b| *b <= b' ' || *b > b'~') {
                    return err("ERR Client names cannot contain spaces, newlines or special characters.");
                }
                self.name = Some(args[2].clone());
                Value::ok()
            }
            (Some("GETNAME"), 2) => self.name.clone().map_or(Value::Null, Value::Bulk),
            (Some("ID"), 2) => Value::Integer(self.id as i64),
            (Some("SETINFO"), 4) => Value::ok(),
            (Some("INFO"), 2) => {
                let name = self.name.as_ref().map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_default();
                Value::bulk(format!(
                    "id={} name={} db=0 resp={}\n",
                    self.id,
                    name,
                    if self.proto == Protocol::Resp3 { 3 } else { 2 }
                ))
            }
            (Some(s), _) => err(format!("ERR unknown or malformed CLIENT subcommand '{}'", s.to_ascii_lowercase())),
            (None, _) => wrong_args("client"),
        }
    }

    /// CONFIG GET answers `notify-keyspace-events` (the only Redis setting rampart has) for
    /// every pattern that matches it; CONFIG SET sets only it.
    async fn config(&self, args: &[Bytes]) -> Value {
        const NOTIFY: &str = "notify-keyspace-events";
        let sub = args.get(1).map(|a| String::from_utf8_lossy(a).to_ascii_uppercase());
        match sub.as_deref() {
            Some("GET") if args.len() >= 3 => {
                let hit = args[2..]
                    .iter()
                    .any(|p| crate::glob::Glob::new(&p.to_ascii_lowercase()).matches(NOTIFY.as_bytes()));
                if hit {
                    Value::Map(vec![(Value::bulk(NOTIFY), Value::bulk(self.app.pubsub.flags().render()))])
                } else {
                    Value::Map(vec![])
                }
            }
            Some("SET") if args.len() >= 4 && args.len().is_multiple_of(2) => {
                let fail = |m: &str, arg: &str| {
                    err(format!("ERR CONFIG SET failed (possibly related to argument '{arg}') - {m}"))
                };
                let mut value = None;
                for pair in args[2..].chunks(2) {
                    let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
                    if name != NOTIFY {
                        return fail(
                            "Unknown option or number of arguments for CONFIG SET (rampart has only notify-keyspace-events; \
                             everything else is set by flags or its TOML file)",
                            &String::from_utf8_lossy(&pair[0]),
                        );
                    }
                    value = Some(&pair[1]);
                }
                let Some(value) = value else { return err("ERR syntax error") };
                let flags = match crate::pubsub::NotifyFlags::parse(value) {
                    Ok(f) => f,
                    Err(m) => return fail(&m, NOTIFY),
                };
                match self.app.pubsub.set_flags(flags, &self.app.replica).await {
                    Ok(()) => Value::ok(),
                    Err(m) => fail(&m, NOTIFY),
                }
            }
            Some("SET") => wrong_args("config|set"),
            _ => err("ERR CONFIG supports only GET and SET here; rampart is configured by flags or its TOML file"),
        }
    }

    fn role(&self) -> Value {
        let st = self.app.replica.status();
        if st.role.takes_writes() {
            // A leader lists its followers; a multi-master node lists its peers.
            let replicas = st
                .members
                .iter()
                .filter(|m| m.id != st.id)
                .map(|m| {
                    let (host, port) = split_host_port(&m.info.resp_addr);
                    Value::Array(vec![Value::bulk(host), Value::bulk(port), Value::bulk(st.applied_index.to_string())])
                })
                .collect();
            Value::Array(vec![Value::bulk("master"), Value::Integer(st.commit_index as i64), Value::Array(replicas)])
        } else {
            let leader = leader_of(&st).map(|m| m.info.resp_addr.clone());
            let (host, port) = split_host_port(leader.as_deref().unwrap_or(""));
            let port_num = port.parse::<i64>().unwrap_or(0);
            Value::Array(vec![
                Value::bulk("slave"),
                Value::bulk(host),
                Value::Integer(port_num),
                Value::bulk(if leader.is_some() { "connected" } else { "connect" }),
                Value::Integer(st.applied_index as i64),
            ])
        }
    }

    async fn info(&self, args: &[Bytes]) -> Value {
        let wanted: Vec<String> = args[1..].iter().map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).collect();
        let all = wanted.is_empty() || wanted.iter().any(|w| w == "all" || w == "everything" || w == "default");
        let want = |s: &str| all || wanted.iter().any(|w| w == s);
        let mut out = String::new();
        if want("server") {
            out.push_str("# Server\r\n");
            out.push_str("redis_version:7.2.0\r\n");
            out.push_str(&format!("rampart_version:{}\r\n", env!("CARGO_PKG_VERSION")));
            out.push_str("redis_mode:standalone\r\n");
            out.push_str(&format!("process_id:{}\r\n", std::process::id()));
            out.push_str(&format!("tcp_port:{}\r\n", self.app.cfg.resp_addr.port()));
            out.push_str(&format!("uptime_in_seconds:{}\r\n", self.app.started.elapsed().as_secs()));
            out.push_str("\r\n");
        }
        if want("clients") {
            out.push_str("# Clients\r\n");
            out.push_str(&format!("connected_clients:{}\r\n\r\n", self.app.metrics.resp.open.load(Ordering::Relaxed)));
        }
        let st = self.app.replica.status();
        if want("replication") {
            self.info_replication(&st, &mut out);
        }
        if want("keyspace") {
            // This node's own count (stale): INFO must answer without a quorum.
            keyspace_section(self.app.dbsize(Consistency::Stale).await.ok(), &mut out);
        }
        if want("rampart") {
            info_rampart(&st, &mut out);
        }
        if self.proto == Protocol::Resp3 {
            Value::Verbatim(out)
        } else {
            Value::Bulk(Bytes::from(out))
        }
    }

    fn info_replication(&self, st: &NodeStatus, out: &mut String) {
        out.push_str("# Replication\r\n");
        if st.role.takes_writes() {
            out.push_str("role:master\r\n");
            // A leader's followers replicate from it; multi-master peers replicate from nobody.
            let followers: Vec<_> = st.members.iter().filter(|m| m.id != st.id && st.role == Role::Leader).collect();
            out.push_str(&format!("connected_slaves:{}\r\n", followers.len()));
            for (i, m) in followers.iter().enumerate() {
                let (host, port) = split_host_port(&m.info.resp_addr);
                out.push_str(&format!("slave{i}:ip={host},port={port},state=online,offset={}\r\n", st.applied_index));
            }
        } else {
            out.push_str("role:slave\r\n");
            let leader = leader_of(st);
            let (host, port) = split_host_port(leader.map_or("", |m| m.info.resp_addr.as_str()));
            out.push_str(&format!("master_host:{host}\r\nmaster_port:{port}\r\n"));
            out.push_str(&format!("master_link_status:{}\r\n", if leader.is_some() { "up" } else { "down" }));
            out.push_str(&format!("slave_repl_offset:{}\r\n", st.applied_index));
            out.push_str(&format!("slave_read_only:{}\r\n", if self.readonly { 1 } else { 0 }));
        }
        out.push_str(&format!("master_repl_offset:{}\r\n\r\n", st.commit_index));
    }
}

/// What a TTL-family command answers of a key's expiry.
#[derive(Clone, Copy)]
enum TtlReply {
    /// TTL, PTTL: the time left.
    Remaining { ms: bool },
    /// EXPIRETIME, PEXPIRETIME: the Unix time.
    At { ms: bool },
}

/// Most keys one page of KEYS asks the replica for.
const KEYS_PAGE_KEYS: usize = 4096;

/// The keys of `page` that match `pattern`, matched on the blocking pool.
async fn matching_keys(app: &App, pattern: &Arc<KeyPattern>, page: Page) -> Result<Vec<Vec<u8>>, KvError> {
    if matches!(**pattern, KeyPattern::All) {
        return Ok(page.items.into_iter().map(|(k, _)| k).collect());
    }
    let pattern = pattern.clone();
    app.off_workers(move || page.items.into_iter().map(|(k, _)| k).filter(|k| pattern.matches(k)).collect()).await
}

/// The leader among the members, when one is known.
fn leader_of(st: &NodeStatus) -> Option<&rampart_kv::Member> {
    st.leader_id.and_then(|l| st.members.iter().find(|m| m.id == l))
}

/// INFO's rampart section: the node, its mode and role, and the mode's own figures.
fn info_rampart(st: &NodeStatus, out: &mut String) {
    out.push_str("# Rampart\r\n");
    out.push_str(&format!("node_id:{}\r\n", st.id));
    out.push_str(&format!("replication_mode:{}\r\n", st.mode));
    out.push_str(&format!("role:{}\r\n", st.role.as_str()));
    out.push_str(&format!("leader_id:{}\r\n", st.leader_id.map_or("none".to_string(), |l| l.to_string())));
    for (name, field) in &st.fields {
        let v = match field {
            StatusField::Number(n) => n.to_string(),
            StatusField::Maybe(n) => n.map_or("none".to_string(), |n| n.to_string()),
        };
        out.push_str(&format!("{name}:{v}\r\n"));
    }
    out.push_str(&format!("members:{}\r\n\r\n", st.members.len()));
}

/// INFO's keyspace section for `keys` keys (nothing listed when unknown or empty).
fn keyspace_section(keys: Option<u64>, out: &mut String) {
    out.push_str("# Keyspace\r\n");
    if let Some(n) = keys.filter(|n| *n > 0) {
        out.push_str(&format!("db0:keys={n},expires=0,avg_ttl=0\r\n"));
    }
    out.push_str("\r\n");
}
