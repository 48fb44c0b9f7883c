//! The Redis protocol front end: redis-cli, redis-benchmark and Redis client
//! libraries work unchanged. Commands run in arrival order per connection,
//! so pipelined requests are answered in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rampart_kv::limits::PIPELINE_COMMANDS_MAX;
use rampart_kv::{Command, Consistency, KvError, NodeStatus, Outcome, Role, SetCond, StatusField};
use rampart_resp::{encode, Limits, Protocol, RequestDecoder, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::App;
use crate::scan::{glob_match, literal_prefix};

/// Most keys KEYS may return before it refuses (use SCAN for more).
pub const KEYS_RESULT_MAX: usize = 1_000_000;
/// Largest COUNT honoured by one SCAN call.
pub const SCAN_COUNT_MAX: usize = 100_000;
/// Replies buffered before they are written to the socket.
const WRITE_BUFFER_FLUSH_BYTES: usize = 64 * 1024;

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

pub async fn serve(listener: TcpListener, app: Arc<App>) {
    let slots = Arc::new(Semaphore::new(app.cfg.resp_connections_max));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "RESP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let app = app.clone();
                tokio::spawn(async move {
                    app.metrics.resp_connections.fetch_add(1, Ordering::Relaxed);
                    Conn::new(app.clone()).run(stream).await;
                    app.metrics.resp_connections.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            Err(_) => {
                app.metrics.resp_connections_rejected.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut s = stream;
                    let _ = s.write_all(b"-ERR max number of clients reached\r\n").await;
                });
            }
        }
    }
}

struct Conn {
    app: Arc<App>,
    proto: Protocol,
    readonly: bool,
    name: Option<Bytes>,
    id: u64,
    quit: bool,
}

fn err(msg: impl Into<String>) -> Value {
    Value::Error(msg.into())
}

fn wrong_args(cmd: &str) -> Value {
    err(format!("ERR wrong number of arguments for '{}' command", cmd.to_ascii_lowercase()))
}

fn api_err(e: KvError) -> Value {
    Value::Error(e.resp_line())
}

/// Integers in arguments parse as Redis parses them (no `+`, no leading zeros, no spaces).
fn parse_i64(b: &[u8]) -> Option<i64> {
    rampart_kv::apply::parse_i64(b)
}

/// A name for metrics, from a fixed set.
fn metric_name(cmd: &str) -> &'static str {
    const KNOWN: [&str; 34] = [
        "ping",
        "echo",
        "hello",
        "select",
        "quit",
        "command",
        "client",
        "get",
        "set",
        "getset",
        "del",
        "exists",
        "incr",
        "decr",
        "incrby",
        "decrby",
        "mget",
        "mset",
        "append",
        "strlen",
        "keys",
        "scan",
        "dbsize",
        "info",
        "role",
        "cas",
        "readonly",
        "readwrite",
        "config",
        "setnx",
        "time",
        "lastsave",
        "type",
        "unlink",
    ];
    KNOWN.iter().find(|k| k.eq_ignore_ascii_case(cmd)).copied().unwrap_or("unknown")
}

impl Conn {
    fn new(app: Arc<App>) -> Self {
        Conn {
            app,
            proto: Protocol::Resp2,
            readonly: false,
            name: None,
            id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            quit: false,
        }
    }

    async fn run(mut self, mut stream: TcpStream) {
        let kv_limits = self.app.replica.limits();
        let max = kv_limits.value_bytes_max.max(kv_limits.key_bytes_max);
        let limits = Limits {
            // Twice the value limit: a value a little too big gets the clear
            // "value too large" reply instead of a protocol error.
            bulk_bytes_max: max.saturating_mul(2).max(1024),
            request_bytes_max: max.saturating_mul(8).max(1 << 20),
            ..Limits::default()
        };
        let mut dec = RequestDecoder::new(limits);
        let mut out = BytesMut::with_capacity(16 * 1024);
        loop {
            // Answer everything already buffered (a pipeline) before reading
            // more. Runs of consecutive writes go to the log together, in
            // order; everything else runs one command at a time.
            let mut pending: Vec<Vec<Bytes>> = Vec::new();
            let mut protocol_error = None;
            while pending.len() < PIPELINE_COMMANDS_MAX {
                match dec.next_command() {
                    Ok(Some(args)) => pending.push(args),
                    Ok(None) => break,
                    Err(e) => {
                        protocol_error = Some(e);
                        break;
                    }
                }
            }
            let mut i = 0;
            while i < pending.len() {
                let run_end = (i..pending.len()).find(|&j| !is_write(&pending[j])).unwrap_or(pending.len());
                if run_end - i >= 2 {
                    for reply in self.execute_writes(&pending[i..run_end]).await {
                        encode(&reply, self.proto, &mut out);
                    }
                    i = run_end;
                } else {
                    let reply = self.execute(std::mem::take(&mut pending[i])).await;
                    encode(&reply, self.proto, &mut out);
                    i += 1;
                    if self.quit {
                        let _ = stream.write_all(&out).await;
                        return;
                    }
                }
                if out.len() >= WRITE_BUFFER_FLUSH_BYTES {
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            }
            if let Some(e) = protocol_error {
                encode(&Value::Error(format!("ERR {e}")), self.proto, &mut out);
                let _ = stream.write_all(&out).await;
                tracing::debug!(client = self.id, error = %e, "closing RESP connection after a protocol error");
                return;
            }
            if !pending.is_empty() && dec.buffered_bytes() > 0 {
                // More complete commands may be buffered (the batch cap was hit).
                if !out.is_empty() {
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
                continue;
            }
            if !out.is_empty() {
                if stream.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
                if out.capacity() > 1 << 20 {
                    out = BytesMut::with_capacity(16 * 1024);
                }
            }
            match dec.read_from(&mut stream).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Pipelined writes: one ordered hand-over to the log, one reply each.
    async fn execute_writes(&mut self, cmds: &[Vec<Bytes>]) -> Vec<Value> {
        let start = Instant::now();
        let mut replies: Vec<Option<Value>> = Vec::with_capacity(cmds.len());
        let mut kinds = Vec::new();
        let mut batch = Vec::new();
        let mut names = Vec::with_capacity(cmds.len());
        for args in cmds {
            let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
            match parse_write(&name, args) {
                Some(Ok((cmd, kind))) => {
                    replies.push(None);
                    kinds.push(kind);
                    batch.push(cmd);
                }
                Some(Err(reply)) => replies.push(Some(reply)),
                None => replies.push(Some(err("ERR internal error: not a write"))),
            }
            names.push(name);
        }
        let mut results = self.app.write_many(batch).await.into_iter().zip(kinds);
        let took = start.elapsed();
        replies
            .into_iter()
            .zip(names)
            .map(|(slot, name)| {
                let reply = match slot {
                    Some(r) => r,
                    None => match results.next() {
                        Some((result, kind)) => render_write(kind, result),
                        None => err("ERR internal error: missing result"),
                    },
                };
                self.app.metrics.observe("resp", metric_name(&name), took, !matches!(reply, Value::Error(_)));
                reply
            })
            .collect()
    }

    async fn execute(&mut self, args: Vec<Bytes>) -> Value {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let start = Instant::now();
        let reply = self.dispatch(&name, &args).await;
        let ok = !matches!(reply, Value::Error(_));
        self.app.metrics.observe("resp", metric_name(&name), start.elapsed(), ok);
        reply
    }

    fn consistency(&self) -> Consistency {
        if self.readonly {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        }
    }

    async fn dispatch(&mut self, name: &str, args: &[Bytes]) -> Value {
        if let Some(parsed) = parse_write(name, args) {
            return match parsed {
                Ok((cmd, kind)) => render_write(kind, self.app.write(cmd).await),
                Err(reply) => reply,
            };
        }
        let n = args.len();
        match name {
            "PING" => match n {
                1 => Value::SimpleString("PONG".into()),
                2 => Value::Bulk(args[1].clone()),
                _ => wrong_args(name),
            },
            "ECHO" if n == 2 => Value::Bulk(args[1].clone()),
            "QUIT" => {
                self.quit = true;
                Value::ok()
            }
            "SELECT" if n == 2 => match parse_i64(&args[1]) {
                Some(0) => Value::ok(),
                Some(_) => err("ERR DB index is out of range (rampart has only database 0)"),
                None => err("ERR value is not an integer or out of range"),
            },
            "HELLO" => self.hello(args),
            "COMMAND" => self.command(args),
            "CLIENT" => self.client(args),
            "CONFIG" => self.config(args),
            "READONLY" if n == 1 => {
                self.readonly = true;
                Value::ok()
            }
            "READWRITE" if n == 1 => {
                self.readonly = false;
                Value::ok()
            }
            "TIME" if n == 1 => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                Value::Array(vec![Value::bulk(now.as_secs().to_string()), Value::bulk(now.subsec_micros().to_string())])
            }
            "GET" if n == 2 => match self.app.get(self.consistency(), args[1].clone()).await {
                Ok(Some(v)) => Value::Bulk(Bytes::from(v.value)),
                Ok(None) => Value::Null,
                Err(e) => api_err(e),
            },
            "MGET" if n >= 2 => match self.app.get_many(self.consistency(), args[1..].to_vec()).await {
                Ok(vals) => Value::Array(
                    vals.into_iter().map(|v| v.map_or(Value::Null, |i| Value::Bulk(Bytes::from(i.value)))).collect(),
                ),
                Err(e) => api_err(e),
            },
            "EXISTS" if n >= 2 => match self.app.get_many(self.consistency(), args[1..].to_vec()).await {
                Ok(vals) => Value::Integer(vals.iter().filter(|v| v.is_some()).count() as i64),
                Err(e) => api_err(e),
            },
            "STRLEN" if n == 2 => match self.app.get(self.consistency(), args[1].clone()).await {
                Ok(v) => Value::Integer(v.map_or(0, |i| i.value.len()) as i64),
                Err(e) => api_err(e),
            },
            "TYPE" if n == 2 => match self.app.get(self.consistency(), args[1].clone()).await {
                Ok(v) => Value::SimpleString(if v.is_some() { "string" } else { "none" }.into()),
                Err(e) => api_err(e),
            },
            "DBSIZE" if n == 1 => {
                self.app.dbsize(self.consistency()).await.map_or_else(api_err, |l| Value::Integer(l as i64))
            }
            "KEYS" if n == 2 => self.keys(args[1].clone()).await,
            "SCAN" if n >= 2 => self.scan(args).await,
            "INFO" => self.info(args).await,
            "ROLE" if n == 1 => self.role(),
            "ECHO" | "SELECT" | "READONLY" | "READWRITE" | "GET" | "MGET" | "EXISTS" | "STRLEN" | "TYPE" | "DBSIZE"
            | "KEYS" | "SCAN" | "ROLE" | "TIME" => wrong_args(name),
            _ => {
                let shown: String = String::from_utf8_lossy(&args[0]).chars().take(128).collect();
                err(format!("ERR unknown command '{shown}'"))
            }
        }
    }

    async fn keys(&self, pattern: Bytes) -> Value {
        let prefix = literal_prefix(&pattern);
        let deadline = Instant::now() + self.app.cfg.request_timeout;
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = match self.app.scan(self.consistency(), prefix.clone(), after, 4096, false).await {
                Ok(p) => p,
                Err(e) => return api_err(e),
            };
            out.extend(page.items.into_iter().map(|(k, _)| k).filter(|k| glob_match(&pattern, k)));
            if out.len() > KEYS_RESULT_MAX {
                return err(format!("ERR KEYS would return more than {KEYS_RESULT_MAX} keys; use SCAN"));
            }
            match page.next_after {
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
        let mut pattern: Option<Bytes> = None;
        let mut count = 10usize;
        let mut i = 2;
        while i < args.len() {
            let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
            match (opt.as_str(), args.get(i + 1)) {
                ("MATCH", Some(p)) => pattern = Some(p.clone()),
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
        let prefix = pattern.as_ref().map(|p| literal_prefix(p)).unwrap_or_default();
        match self.app.scan(self.consistency(), prefix, after, count, false).await {
            Ok(page) => {
                let keys: Vec<Vec<u8>> = page
                    .items
                    .into_iter()
                    .map(|(k, _)| k)
                    .filter(|k| pattern.as_ref().is_none_or(|p| glob_match(p, k)))
                    .collect();
                let next_cursor = page.next_after.map_or(0, |k| self.app.scan_cursors.save(k));
                Value::Array(vec![
                    Value::bulk(next_cursor.to_string()),
                    Value::Array(keys.into_iter().map(|k| Value::Bulk(Bytes::from(k))).collect()),
                ])
            }
            Err(e) => api_err(e),
        }
    }

    fn hello(&mut self, args: &[Bytes]) -> Value {
        let mut i = 1;
        if args.len() >= 2 {
            match parse_i64(&args[1]) {
                Some(2) => self.proto = Protocol::Resp2,
                Some(3) => self.proto = Protocol::Resp3,
                _ => return err("NOPROTO unsupported protocol version"),
            }
            i = 2;
        }
        while i < args.len() {
            let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
            match opt.as_str() {
                "AUTH" if i + 2 < args.len() => i += 3, // no authentication yet: accepted and ignored
                "SETNAME" if i + 1 < args.len() => {
                    self.name = Some(args[i + 1].clone());
                    i += 2;
                }
                _ => return err("ERR syntax error in HELLO"),
            }
        }
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
            Some("COUNT") => Value::Integer(COMMAND_TABLE.len() as i64),
            None => Value::Array(
                COMMAND_TABLE
                    .iter()
                    .map(|(name, arity, flags, first, last, step)| {
                        Value::Array(vec![
                            Value::bulk(*name),
                            Value::Integer(*arity),
                            Value::Array(flags.iter().map(|f| Value::SimpleString(f.to_string())).collect()),
                            Value::Integer(*first),
                            Value::Integer(*last),
                            Value::Integer(*step),
                        ])
                    })
                    .collect(),
            ),
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

    fn config(&self, args: &[Bytes]) -> Value {
        let sub = args.get(1).map(|a| String::from_utf8_lossy(a).to_ascii_uppercase());
        match sub.as_deref() {
            // Tools such as redis-benchmark read a few settings at start;
            // rampart has none of Redis's, so the answer is empty.
            Some("GET") if args.len() >= 3 => Value::Map(vec![]),
            _ => err("ERR CONFIG supports only GET here; rampart is configured by flags or its TOML file"),
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
            out.push_str(&format!(
                "connected_clients:{}\r\n\r\n",
                self.app.metrics.resp_connections.load(Ordering::Relaxed)
            ));
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

/// True for the commands `parse_write` turns into log commands.
fn is_write(args: &[Bytes]) -> bool {
    const WRITES: [&str; 12] =
        ["SET", "SETNX", "GETSET", "MSET", "DEL", "UNLINK", "INCR", "DECR", "INCRBY", "DECRBY", "APPEND", "CAS"];
    let name = &args[0];
    WRITES.iter().any(|w| w.as_bytes().eq_ignore_ascii_case(name))
}

/// How a write command's result becomes its RESP reply.
#[derive(Debug, Clone, Copy)]
enum WriteReply {
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

/// The log command for a write, and how to render its result; `None` when
/// `name` is not a write; `Some(Err(reply))` for a malformed one.
fn parse_write(name: &str, args: &[Bytes]) -> Option<Result<(Command, WriteReply), Value>> {
    let n = args.len();
    let key = || args[1].to_vec();
    let parsed = match name {
        "SET" if n >= 3 => {
            let mut cond = SetCond::Always;
            let mut get = false;
            for opt in &args[3..] {
                match String::from_utf8_lossy(opt).to_ascii_uppercase().as_str() {
                    "NX" if cond == SetCond::Always => cond = SetCond::IfAbsent,
                    "XX" if cond == SetCond::Always => cond = SetCond::IfPresent,
                    "GET" => get = true,
                    "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" => {
                        return Some(Err(err(
                            "ERR expiry (EX/PX/EXAT/PXAT/KEEPTTL) is not supported yet: rampart keys do not expire",
                        )));
                    }
                    _ => return Some(Err(err("ERR syntax error"))),
                }
            }
            Ok((Command::Set { key: key(), value: args[2].to_vec(), cond, return_old: get }, WriteReply::Set { get }))
        }
        "SETNX" if n == 3 => Ok((
            Command::Set { key: key(), value: args[2].to_vec(), cond: SetCond::IfAbsent, return_old: false },
            WriteReply::WrittenFlag,
        )),
        "GETSET" if n == 3 => Ok((
            Command::Set { key: key(), value: args[2].to_vec(), cond: SetCond::Always, return_old: true },
            WriteReply::OldValue,
        )),
        "MSET" if n >= 3 && n % 2 == 1 => {
            let pairs = args[1..].chunks(2).map(|c| (c[0].to_vec(), c[1].to_vec())).collect();
            Ok((Command::MSet { pairs }, WriteReply::Ok))
        }
        "DEL" | "UNLINK" if n >= 2 => {
            Ok((Command::Del { keys: args[1..].iter().map(|k| k.to_vec()).collect() }, WriteReply::Count))
        }
        "INCR" | "DECR" if n == 2 => {
            Ok((Command::IncrBy { key: key(), delta: if name == "INCR" { 1 } else { -1 } }, WriteReply::Integer))
        }
        "INCRBY" | "DECRBY" if n == 3 => match parse_i64(&args[2]) {
            Some(d) if name == "INCRBY" => Ok((Command::IncrBy { key: key(), delta: d }, WriteReply::Integer)),
            Some(d) => match d.checked_neg() {
                Some(d) => Ok((Command::IncrBy { key: key(), delta: d }, WriteReply::Integer)),
                None => Err(err("ERR decrement would overflow")),
            },
            None => Err(err("ERR value is not an integer or out of range")),
        },
        "APPEND" if n == 3 => Ok((Command::Append { key: key(), value: args[2].to_vec() }, WriteReply::Integer)),
        "CAS" if n == 4 => Ok((
            Command::Cas { key: key(), expected: Some(args[2].to_vec()), new: args[3].to_vec() },
            WriteReply::Swapped,
        )),
        "SET" | "SETNX" | "GETSET" | "MSET" | "DEL" | "UNLINK" | "INCR" | "DECR" | "INCRBY" | "DECRBY" | "APPEND"
        | "CAS" => Err(wrong_args(name)),
        _ => return None,
    };
    Some(parsed)
}

fn render_write(kind: WriteReply, result: Result<rampart_kv::Response, KvError>) -> Value {
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

fn split_host_port(addr: &str) -> (String, String) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']).to_string(), p.to_string()),
        None => (addr.to_string(), String::new()),
    }
}

/// (name, arity, flags, first key, last key, step), as Redis's COMMAND reports.
type CommandInfo = (&'static str, i64, &'static [&'static str], i64, i64, i64);
const COMMAND_TABLE: &[CommandInfo] = &[
    ("get", 2, &["readonly", "fast"], 1, 1, 1),
    ("set", -3, &["write", "denyoom"], 1, 1, 1),
    ("setnx", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("getset", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("del", -2, &["write"], 1, -1, 1),
    ("unlink", -2, &["write", "fast"], 1, -1, 1),
    ("exists", -2, &["readonly", "fast"], 1, -1, 1),
    ("incr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("incrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("mget", -2, &["readonly", "fast"], 1, -1, 1),
    ("mset", -3, &["write", "denyoom"], 1, -1, 2),
    ("append", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("strlen", 2, &["readonly", "fast"], 1, 1, 1),
    ("type", 2, &["readonly", "fast"], 1, 1, 1),
    ("keys", 2, &["readonly"], 0, 0, 0),
    ("scan", -2, &["readonly"], 0, 0, 0),
    ("dbsize", 1, &["readonly", "fast"], 0, 0, 0),
    ("cas", 4, &["write", "denyoom"], 1, 1, 1),
    ("ping", -1, &["fast"], 0, 0, 0),
    ("echo", 2, &["fast"], 0, 0, 0),
    ("hello", -1, &["fast"], 0, 0, 0),
    ("select", 2, &["fast"], 0, 0, 0),
    ("quit", 1, &["fast"], 0, 0, 0),
    ("command", -1, &[], 0, 0, 0),
    ("client", -2, &[], 0, 0, 0),
    ("config", -2, &[], 0, 0, 0),
    ("info", -1, &[], 0, 0, 0),
    ("role", 1, &["fast"], 0, 0, 0),
    ("readonly", 1, &["fast"], 0, 0, 0),
    ("readwrite", 1, &["fast"], 0, 0, 0),
    ("time", 1, &["fast"], 0, 0, 0),
];
