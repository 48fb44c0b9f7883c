//! An in-memory [`Replica`] for the server's tests: the command model (`rampart_kv::apply_command`)
//! over a `BTreeMap`, with the limits a real replica enforces on reads (the reply budget, byte
//! bounded pages), and a server on loopback port 0 in front of it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rampart_kv::{
    apply_command, write_checked, BoxFuture, Command, Consistency, Ctx, Item, KvError, Limits, MemberInfo,
    MembershipError, NodeStatus, Outcome, Page, PeerSnapshot, Record, Replica, Response, Role, State,
};
use rampart_server::app::App;
use rampart_server::ServerConfig;

/// The wall clock, Unix ms.
fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[derive(Default)]
struct Map(BTreeMap<Vec<u8>, Record>);

impl State for Map {
    type Error = KvError;
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, KvError> {
        Ok(self.0.get(key).cloned())
    }
    fn put(&mut self, key: &[u8], revision: u64, value: &[u8], expires_at: Option<u64>) -> Result<(), KvError> {
        self.0.insert(key.to_vec(), Record { value: value.to_vec(), revision, expires_at });
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.0.remove(key);
        Ok(())
    }
}

pub struct MemReplica {
    map: Mutex<Map>,
    revision: AtomicU64,
    limits: Limits,
    /// How far this replica's clock runs ahead of the wall clock (ms): tests advance it to
    /// make keys expire without waiting.
    clock_offset_ms: AtomicU64,
}

impl MemReplica {
    pub fn new(limits: Limits) -> Arc<MemReplica> {
        Arc::new(MemReplica {
            map: Mutex::new(Map::default()),
            revision: AtomicU64::new(0),
            limits,
            clock_offset_ms: AtomicU64::new(0),
        })
    }

    /// The time this replica applies writes and judges expiry at (Unix ms).
    pub fn now_ms(&self) -> u64 {
        wall_ms() + self.clock_offset_ms.load(Ordering::SeqCst)
    }

    /// Moves this replica's clock `ms` forward.
    pub fn advance(&self, ms: u64) {
        self.clock_offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// The stored expiry of `key` (Unix ms), expired or not, as the replica holds it.
    pub fn stored_expiry(&self, key: &[u8]) -> Option<Option<u64>> {
        self.map.lock().0.get(key).map(|r| r.expires_at)
    }

    pub fn put(&self, key: &[u8], value: &[u8]) {
        let rev = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        self.map.lock().0.insert(key.to_vec(), Record { value: value.to_vec(), revision: rev, expires_at: None });
    }
}

impl Replica for MemReplica {
    fn limits(&self) -> Limits {
        self.limits
    }

    fn write_many(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<Result<Response, KvError>>> {
        Box::pin(write_checked(
            self.limits,
            cmds,
            |_| Ok(()),
            move |valid| async move {
                let mut map = self.map.lock();
                valid
                    .iter()
                    .map(|cmd| {
                        let rev = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
                        let ctx = Ctx { revision: rev, now_ms: self.now_ms(), value_bytes_max: usize::MAX };
                        match apply_command(&mut *map, ctx, cmd)? {
                            Outcome::Rejected(m) => Err(KvError::Rejected(m)),
                            outcome => Ok(Response { revision: rev, outcome }),
                        }
                    })
                    .collect()
            },
        ))
    }

    fn get_many(&self, _: Consistency, keys: Vec<Bytes>) -> BoxFuture<'_, Result<Vec<Option<Item>>, KvError>> {
        Box::pin(async move {
            let map = self.map.lock();
            let now = self.now_ms();
            let mut budget = self.limits.reply_budget();
            let mut out = Vec::new();
            for k in &keys {
                let item = map.0.get(&k[..]).filter(|r| !r.as_current().expired(now));
                if let Some(r) = item {
                    budget.take(r.value.len())?;
                }
                out.push(item.map(|r| Item {
                    value: r.value.clone(),
                    revision: Some(r.revision),
                    expires_at: r.expires_at,
                }));
            }
            Ok(out)
        })
    }

    fn exists(&self, _: Consistency, keys: Vec<Bytes>) -> BoxFuture<'_, Result<u64, KvError>> {
        Box::pin(async move {
            let map = self.map.lock();
            let now = self.now_ms();
            Ok(keys.iter().filter(|k| map.0.get(&k[..]).is_some_and(|r| !r.as_current().expired(now))).count() as u64)
        })
    }

    fn scan(
        &self,
        _: Consistency,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
        values: bool,
    ) -> BoxFuture<'_, Result<Page, KvError>> {
        Box::pin(async move {
            let map = self.map.lock();
            let now = self.now_ms();
            let mut items = Vec::new();
            let mut bytes = 0;
            let mut more = false;
            let start = after.clone().unwrap_or_default();
            for (k, r) in map.0.range(start..) {
                if after.as_ref() == Some(k) || r.as_current().expired(now) {
                    continue;
                }
                if !k.starts_with(&prefix) {
                    if k.as_slice() > prefix.as_slice() {
                        break;
                    }
                    continue;
                }
                if items.len() == limit || bytes >= self.limits.reply_bytes_max {
                    more = true;
                    break;
                }
                let value = if values { r.value.clone() } else { Vec::new() };
                bytes += k.len() + value.len();
                items.push((k.clone(), Item { value, revision: Some(r.revision), expires_at: r.expires_at }));
            }
            let next_after = if more { items.last().map(|(k, _)| k.clone()) } else { None };
            Ok(Page { items, next_after })
        })
    }

    fn count(&self, _: Consistency) -> BoxFuture<'_, Result<u64, KvError>> {
        Box::pin(async move {
            let now = self.now_ms();
            Ok(self.map.lock().0.values().filter(|r| !r.as_current().expired(now)).count() as u64)
        })
    }

    fn revisions_are_global(&self) -> bool {
        true
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            id: 1,
            mode: "leader",
            role: Role::Leader,
            leader_id: Some(1),
            members: vec![],
            applied_index: 0,
            commit_index: 0,
            fields: vec![],
        }
    }

    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    fn peer_health(&self) -> Vec<PeerSnapshot> {
        Vec::new()
    }

    fn add_member(&self, _: u64, _: MemberInfo) -> BoxFuture<'_, Result<(), MembershipError>> {
        Box::pin(async { Err(MembershipError::Unsupported("test replica".into())) })
    }

    fn remove_member(&self, _: u64) -> BoxFuture<'_, Result<(), MembershipError>> {
        Box::pin(async { Err(MembershipError::Unsupported("test replica".into())) })
    }

    fn render_metrics(&self, _: &mut String) {}

    fn wait_fatal(&self) -> BoxFuture<'_, String> {
        Box::pin(std::future::pending())
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A server on loopback port 0 in front of `replica`.
pub struct TestServer {
    pub app: Arc<App>,
    pub resp: SocketAddr,
    pub http: SocketAddr,
    pub replica: Arc<MemReplica>,
}

/// Settings for a test server: loopback port 0 and the defaults, changed by `f`.
pub fn config(f: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut cfg = ServerConfig::new(any, any);
    f(&mut cfg);
    cfg
}

pub async fn start(cfg: ServerConfig, limits: Limits) -> TestServer {
    let listeners = rampart_server::bind(&cfg).await.unwrap();
    let (resp, http) = listeners.local_addrs().unwrap();
    let replica = MemReplica::new(limits);
    let app = rampart_server::serve(listeners, replica.clone(), cfg);
    TestServer { app, resp, http, replica }
}

/// Polls `f` until it is true or `timeout` passes (then panics naming `what`).
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of the exported metric line `name` (with its labels), from `/metrics` text.
pub fn metric(app: &App, name: &str) -> Option<f64> {
    let mut out = String::new();
    app.metrics.render(&mut out);
    out.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
