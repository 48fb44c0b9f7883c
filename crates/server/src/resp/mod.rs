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
mod table;
mod writes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rampart_kv::limits::PIPELINE_COMMANDS_MAX;
use rampart_kv::{Consistency, KvError};
use rampart_resp::{encode, Limits, Protocol, RequestDecoder, Value};
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::App;
pub use table::acl_catalog;
use table::{lookup, unknown_command, Exec};

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
        let (stream, peer) = match listener.accept().await {
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
                    let conn = Conn::new(app.clone());
                    conn.start(stream, peer).await;
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
    session: auth::Session,
    /// End the connection without answering (its user was deleted).
    close_silently: bool,
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
        }
    }

    /// Admits a new connection: waits for the users to be loaded, refuses it in protected mode
    /// (Redis's `-DENIED` line, then close), and serves it.
    async fn start(mut self, mut stream: TcpStream, peer: SocketAddr) {
        if !self.app.acl.wait_loaded(self.app.cfg.request_timeout).await {
            let _ =
                stream.write_all(b"-TRYAGAIN the users are not loaded yet (no quorum to read them); retry\r\n").await;
            return;
        }
        if self.app.acl.refuses(peer.ip()) {
            self.app.metrics.resp_connections_rejected.fetch_add(1, Ordering::Relaxed);
            let line = format!("-{}\r\n", crate::acl::store::PROTECTED_MODE_MESSAGE);
            let _ = stream.write_all(line.as_bytes()).await;
            tracing::debug!(%peer, "refused a non-loopback client in protected mode");
            return;
        }
        self.session = self.new_session();
        self.run(stream).await;
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
            if !self.answer(pending.as_mut_slice(), &mut out, &mut stream).await {
                return;
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

    /// Answers a pipeline's commands in order into `out` (written to `stream` whenever it grows
    /// past [`WRITE_BUFFER_FLUSH_BYTES`]). Runs of consecutive writes go to the replica together.
    /// False when the connection must end (QUIT, or the client went away).
    async fn answer(&mut self, pending: &mut [Vec<Bytes>], out: &mut BytesMut, stream: &mut TcpStream) -> bool {
        let mut i = 0;
        while i < pending.len() {
            let run_end = (i..pending.len()).find(|&j| !is_write(&pending[j])).unwrap_or(pending.len());
            if run_end - i >= 2 {
                let replies = self.execute_writes(&pending[i..run_end]).await;
                if self.close_silently {
                    let _ = stream.write_all(out).await;
                    return false;
                }
                for reply in replies {
                    encode(&reply, self.proto, out);
                }
                i = run_end;
            } else {
                let reply = self.execute(std::mem::take(&mut pending[i])).await;
                if self.close_silently {
                    let _ = stream.write_all(out).await;
                    return false;
                }
                encode(&reply, self.proto, out);
                i += 1;
                if self.quit {
                    let _ = stream.write_all(out).await;
                    return false;
                }
            }
            if out.len() >= WRITE_BUFFER_FLUSH_BYTES {
                if stream.write_all(out).await.is_err() {
                    return false;
                }
                out.clear();
            }
        }
        true
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
