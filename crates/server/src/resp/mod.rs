//! The Redis protocol front end: redis-cli, redis-benchmark and Redis client
//! libraries work unchanged. Commands run in arrival order per connection,
//! so pipelined requests are answered in order.
//!
//! - [`table`]: every command once (arity, flags, what runs it).
//! - [`writes`]: write commands parsed into `rampart_kv::Command`s, and their replies.
//! - [`handlers`]: reads, connection state and introspection.
//! - [`auth`]: the authentication and ACL gate, `AUTH`, `HELLO AUTH` and `ACL`.

mod auth;
mod handlers;
mod pubsub;
mod table;
mod writes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rampart_kv::limits::PIPELINE_COMMANDS_MAX;
use rampart_kv::{Consistency, KvError};
use rampart_resp::{encode, Limits, Protocol, RequestDecoder, Value};
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::app::App;
use crate::listen::{client_stream, ClientStream, Gate, ACCEPT_RETRY_DELAY, REFUSAL_TIMEOUT};
use crate::metrics::Closed;
pub use table::acl_catalog;
use table::{lookup, unknown_command, Exec};
pub use writes::now_ms;

/// Most keys KEYS may return before it refuses (use SCAN for more).
pub const KEYS_RESULT_MAX: usize = 1_000_000;
/// Largest COUNT honoured by one SCAN call.
pub const SCAN_COUNT_MAX: usize = 100_000;
/// Replies buffered before they are written to the socket.
const WRITE_BUFFER_FLUSH_BYTES: usize = 64 * 1024;

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// Redis's reply to a connection past `maxclients` (ours: `--resp-connections-max`).
pub const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// Serves RESP clients on `listener`: at most `resp_connections_max` at once, each with the
/// header and idle timeouts of [`crate::ServerConfig`].
pub async fn serve(listener: TcpListener, app: Arc<App>) {
    let gate = Gate::new(app.cfg.resp_connections_max);
    let refusal: Arc<[u8]> = MAX_CLIENTS_REPLY.into();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "RESP accept failed");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let Some((stream, permit)) = gate.admit(stream, refusal.clone(), || app.metrics.resp.refused.inc()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let _open = app.metrics.resp.open_guard();
            let stream = match client_stream(stream, app.tls.as_ref(), app.cfg.client_header_timeout).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "RESP TLS handshake failed");
                    app.metrics.resp.closed(Closed::TlsHandshake);
                    return;
                }
            };
            if let Some(why) = Conn::new(app.clone()).start(stream, peer).await {
                app.metrics.resp.closed(why);
            }
            drop(permit);
        });
    }
}

struct Conn {
    app: Arc<App>,
    proto: Protocol,
    readonly: bool,
    name: Option<Bytes>,
    id: u64,
    quit: bool,
    session: auth::Session,
    /// End the connection without answering (its user was deleted).
    close_silently: bool,
    /// Subscriptions, once the connection made one.
    sub: Option<pubsub::SubState>,
    /// Frames a command wrote itself (SUBSCRIBE's confirmations), sent instead of its reply.
    raw_reply: Option<BytesMut>,
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

impl Conn {
    fn new(app: Arc<App>) -> Self {
        let session = auth::Session {
            authenticated: false,
            name: crate::acl::rules::DEFAULT_USER.to_vec(),
            user: app.acl.view().default_user(),
            generation: 0,
        };
        Conn {
            app,
            proto: Protocol::Resp2,
            readonly: false,
            name: None,
            id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            quit: false,
            session,
            close_silently: false,
            sub: None,
            raw_reply: None,
        }
    }

    /// Admits a new connection: waits for the users to be loaded, refuses it in protected mode
    /// (Redis's `-DENIED` line, then close), and serves it.
    async fn start(mut self, mut stream: ClientStream, peer: SocketAddr) -> Option<Closed> {
        if !self.app.acl.wait_loaded(self.app.cfg.request_timeout).await {
            let _ =
                stream.write_all(b"-TRYAGAIN the users are not loaded yet (no quorum to read them); retry\r\n").await;
            return None;
        }
        if self.app.acl.refuses(peer.ip()) {
            self.app.metrics.resp.refused.inc();
            let line = format!("-{}\r\n", crate::acl::store::PROTECTED_MODE_MESSAGE);
            let _ = stream.write_all(line.as_bytes()).await;
            tracing::debug!(%peer, "refused a non-loopback client in protected mode");
            return None;
        }
        self.session = self.new_session();
        self.run(stream).await
    }

    /// Serves the connection until it ends; `Some(why)` when the server closed it on a timeout.
    async fn run(mut self, mut stream: ClientStream) -> Option<Closed> {
        let kv_limits = self.app.replica.limits();
        let max = kv_limits.value_bytes_max.max(kv_limits.key_bytes_max);
        let limits = Limits {
            // Twice the value limit: a value a little too big gets the clear
            // "value too large" reply instead of a protocol error.
            bulk_bytes_max: max.saturating_mul(2).max(1024),
            request_bytes_max: max.saturating_mul(8).max(1 << 20),
            ..Limits::default()
        };
        let header_timeout = self.app.cfg.client_header_timeout;
        let idle = self.app.cfg.client_idle_timeout;
        // When the first bytes of the request still incomplete in the buffer were seen.
        let mut request_started: Option<Instant> = None;
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
            if let Err(end) = self.answer(pending.as_mut_slice(), &mut out, &mut stream).await {
                return end;
            }
            if let Some(e) = protocol_error {
                encode(&Value::Error(format!("ERR {e}")), self.proto, &mut out);
                let _ = send(&mut stream, &mut out, idle).await;
                tracing::debug!(client = self.id, error = %e, "closing RESP connection after a protocol error");
                return None;
            }
            if !pending.is_empty() && dec.buffered_bytes() > 0 {
                // More complete commands may be buffered (the batch cap was hit).
                if let Err(end) = send(&mut stream, &mut out, idle).await {
                    return end;
                }
                request_started = Some(Instant::now());
                continue;
            }
            if let Err(end) = send(&mut stream, &mut out, idle).await {
                return end;
            }
            out.clear();
            if out.capacity() > 1 << 20 {
                out = BytesMut::with_capacity(16 * 1024);
            }
            let now = Instant::now();
            request_started = match (dec.buffered_bytes() > 0, pending.is_empty()) {
                (false, _) => None,
                // The bytes of a new request arrived with the end of the last one.
                (true, false) => Some(now),
                (true, true) => Some(request_started.unwrap_or(now)),
            };
            // A request under way must be complete within the header timeout of its first
            // byte; a connection with none under way (a new one too: pools open connections
            // ahead of use, as Redis allows) may be silent for the idle timeout.
            let (deadline, why) = match request_started {
                Some(t) => (t + header_timeout, Closed::HeaderTimeout),
                None => (now + idle, Closed::IdleTimeout),
            };
            // A subscriber waits for messages as well as requests, and without the idle
            // timeout (Redis's `timeout` spares pub/sub clients too).
            let read = match self.sub.as_mut() {
                Some(sub) if request_started.is_none() => {
                    tokio::select! {
                        n = dec.read_from(&mut stream) => Ok(n),
                        push = sub.inbox.recv() => match push {
                            Ok(p) => {
                                p.encode(self.proto, &mut out);
                                while out.len() < WRITE_BUFFER_FLUSH_BYTES {
                                    match sub.inbox.try_recv() {
                                        Some(p) => p.encode(self.proto, &mut out),
                                        None => break,
                                    }
                                }
                                if let Err(end) = send(&mut stream, &mut out, idle).await {
                                    return end;
                                }
                                out.clear();
                                continue;
                            }
                            Err(why) => {
                                tracing::info!(client = self.id, %why, "closing a pub/sub connection");
                                return None;
                            }
                        },
                    }
                }
                _ => tokio::time::timeout_at(deadline.into(), dec.read_from(&mut stream)).await,
            };
            match read {
                Err(_) => {
                    if why == Closed::HeaderTimeout {
                        let line = format!(
                            "-ERR timeout: no complete request within client_header_timeout_ms ({} ms)\r\n",
                            header_timeout.as_millis()
                        );
                        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, stream.write_all(line.as_bytes())).await;
                    }
                    tracing::debug!(client = self.id, ?why, "closing RESP connection");
                    return Some(why);
                }
                Ok(Ok(0) | Err(_)) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Answers a pipeline's commands in order into `out` (written to `stream` whenever it grows
    /// past [`WRITE_BUFFER_FLUSH_BYTES`]). Runs of consecutive writes go to the replica together.
    /// `Err` when the connection must end: `Err(None)` on QUIT or when the client went away,
    /// `Err(Some(why))` when it stopped reading its replies for the idle timeout.
    async fn answer(
        &mut self,
        pending: &mut [Vec<Bytes>],
        out: &mut BytesMut,
        stream: &mut ClientStream,
    ) -> Result<(), Option<Closed>> {
        let idle = self.app.cfg.client_idle_timeout;
        let limits = self.app.replica.limits();
        // Writes that answer an old value (SET .. GET, GETSET) answer up to a value each: a run
        // holds no more of them than fit in one reply's worth.
        let old_values_max = (limits.reply_bytes_max / limits.value_bytes_max.max(1)).max(1);
        let mut i = 0;
        while i < pending.len() {
            let run_end = write_run_end(pending, i, old_values_max);
            // In RESP2 subscribed mode each command is checked on its own (most are refused).
            if run_end - i >= 2 && !self.pubsub_context() {
                let replies = self.execute_writes(&pending[i..run_end]).await;
                if self.close_silently {
                    let _ = stream.write_all(out).await;
                    return Err(None);
                }
                for reply in replies {
                    encode(&reply, self.proto, out);
                }
                i = run_end;
            } else {
                let reply = self.execute(std::mem::take(&mut pending[i])).await;
                if self.close_silently {
                    let _ = stream.write_all(out).await;
                    return Err(None);
                }
                match self.raw_reply.take() {
                    Some(raw) => out.extend_from_slice(&raw),
                    None => encode(&reply, self.proto, out),
                }
                drop(reply);
                i += 1;
                if self.quit {
                    send(stream, out, idle).await?;
                    return Err(None);
                }
            }
            if out.len() >= WRITE_BUFFER_FLUSH_BYTES {
                send(stream, out, idle).await?;
                out.clear();
            }
        }
        Ok(())
    }

    /// Pipelined writes: one ordered hand-over to the replica, one reply each.
    async fn execute_writes(&mut self, cmds: &[Vec<Bytes>]) -> Vec<Value> {
        let start = Instant::now();
        let mut replies: Vec<Option<Value>> = Vec::with_capacity(cmds.len());
        let mut kinds = Vec::new();
        let mut batch = Vec::new();
        let mut names = Vec::with_capacity(cmds.len());
        for args in cmds {
            let spec = lookup(&args[0]);
            let admitted = match spec {
                Some(s) if s.arity_ok(args.len()) => self.gate(s, args),
                _ => Ok(()),
            };
            if let Err(reply) = admitted {
                replies.push(Some(reply));
                names.push(spec.map_or("unknown", |s| s.name));
                continue;
            }
            match spec.map(|s| prepare_write(s, args)) {
                Some(Ok((cmd, kind))) => {
                    replies.push(None);
                    kinds.push(kind);
                    batch.push(cmd);
                }
                Some(Err(reply)) => replies.push(Some(reply)),
                None => replies.push(Some(err("ERR internal error: not a write"))),
            }
            names.push(spec.map_or("unknown", |s| s.name));
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
                        Some((result, kind)) => writes::render(kind, result),
                        None => err("ERR internal error: missing result"),
                    },
                };
                self.app.metrics.observe("resp", name, took, !matches!(reply, Value::Error(_)));
                reply
            })
            .collect()
    }

    async fn execute(&mut self, args: Vec<Bytes>) -> Value {
        let start = Instant::now();
        let spec = lookup(&args[0]);
        let reply = match spec {
            None => unknown_command(&args),
            Some(s) if !s.arity_ok(args.len()) => wrong_args(s.name),
            Some(s) => match (self.gate(s, &args), s.exec) {
                (Err(refused), _) => refused,
                (Ok(()), _) if self.pubsub_context() && !pubsub::allowed_when_subscribed(s.name) => err(format!(
                    "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed \
                     in this context",
                    crate::resp::table::acl_target(s, &args).map_or_else(|_| s.name.to_string(), |t| t.fullname())
                )),
                (Ok(()), Exec::Write(parse)) => match parse(&args) {
                    Ok((cmd, kind)) => writes::render(kind, self.app.write(cmd).await),
                    Err(reply) => reply,
                },
                (Ok(()), Exec::Conn(op)) => self.run_op(op, &args).await,
            },
        };
        let ok = !matches!(reply, Value::Error(_));
        self.app.metrics.observe("resp", spec.map_or("unknown", |s| s.name), start.elapsed(), ok);
        reply
    }

    fn consistency(&self) -> Consistency {
        if self.readonly {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        }
    }
}

/// True for a command that goes to the replica as a write.
fn is_write(args: &[Bytes]) -> bool {
    lookup(&args[0]).is_some_and(table::Spec::is_write)
}

/// True for a write whose reply is the key's old value (GETSET, GETDEL, SET with GET).
fn answers_old_value(args: &[Bytes]) -> bool {
    match lookup(&args[0]).map(|s| s.name) {
        Some("getset" | "getdel") => true,
        Some("set") => args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"GET")),
        _ => false,
    }
}

/// Where the run of consecutive writes starting at `start` ends: at the first command that is
/// not a write, or before the write that would make more than `old_values_max` answer an old
/// value.
fn write_run_end(pending: &[Vec<Bytes>], start: usize, old_values_max: usize) -> usize {
    let mut old_values = 0;
    for (j, args) in pending.iter().enumerate().skip(start) {
        if !is_write(args) {
            return j;
        }
        if answers_old_value(args) {
            old_values += 1;
            if old_values > old_values_max {
                return j.max(start + 1);
            }
        }
    }
    pending.len()
}

/// Writes all of `out` to the client and empties it. `Err(Some(IdleTimeout))` when no byte
/// goes out for `idle` (the client does not read its replies: what it has not taken stays
/// bounded by one reply and [`WRITE_BUFFER_FLUSH_BYTES`]); `Err(None)` when the client went away.
async fn send(stream: &mut ClientStream, out: &mut BytesMut, idle: Duration) -> Result<(), Option<Closed>> {
    while !out.is_empty() {
        match tokio::time::timeout(idle, stream.write(out)).await {
            Err(_) => return Err(Some(Closed::IdleTimeout)),
            Ok(Ok(0) | Err(_)) => return Err(None),
            Ok(Ok(n)) => out.advance(n),
        }
    }
    Ok(())
}

/// A write's command and reply kind, after the arity check.
fn prepare_write(spec: &table::Spec, args: &[Bytes]) -> Result<(rampart_kv::Command, writes::WriteReply), Value> {
    match spec.exec {
        Exec::Write(_) if !spec.arity_ok(args.len()) => Err(wrong_args(spec.name)),
        Exec::Write(parse) => parse(args),
        Exec::Conn(_) => Err(err("ERR internal error: not a write")),
    }
}

fn split_host_port(addr: &str) -> (String, String) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']).to_string(), p.to_string()),
        None => (addr.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmds(list: &[&str]) -> Vec<Vec<Bytes>> {
        list.iter().map(|c| c.split(' ').map(|w| Bytes::from(w.to_string())).collect()).collect()
    }

    #[test]
    fn a_write_run_holds_no_more_old_values_than_one_reply_can() {
        let p = cmds(&["SET a 1", "GETSET a 2", "SET a 3 GET", "set a 4 get", "INCR n", "GET a", "SET b 1"]);
        assert_eq!(write_run_end(&p, 0, 10), 5, "a run ends at the first read");
        assert_eq!(write_run_end(&p, 0, 2), 3, "and before a third write answering an old value");
        assert_eq!(write_run_end(&p, 3, 1), 5);
        assert_eq!(write_run_end(&p, 5, 1), 5, "a read starts no run");
        assert_eq!(write_run_end(&p, 6, 1), 7);
        assert!(!answers_old_value(&p[0]) && answers_old_value(&p[1]) && answers_old_value(&p[3]));
        assert!(answers_old_value(&cmds(&["GETDEL a"])[0]), "GETDEL answers the value it removed");
    }
}
