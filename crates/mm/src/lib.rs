//! rampart-mm: multi-master mode's runtime. Every node is a CASPaxos proposer and acceptor for
//! every key (the state machines of `rampart-paxos`); there is no leader and no election.
//!
//! - The acceptor's registers live in redb (table `registers`) and in memory; replies leave only
//!   after a group commit made their writes durable (`acceptor_task`).
//! - The proposer runs in one task that batches each turn's messages per peer into one frame
//!   (`proposer_task`) and persists its ballot counter floor (meta `mm_counter_floor`).
//! - Heartbeats to every peer feed a phi-accrual detector (`rampart-membership`); peers it calls
//!   dead are passed to the proposer, which then stops waiting for them.
//! - Scans merge the durable registers of a majority (`MmNode::scan`).
//!
//! Protocol and safety arguments: `docs/paxos.md`.

mod acceptor_task;
pub mod command;
mod proposer_task;
mod replica;
pub mod wire;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use rampart_membership::{Membership, PeerId, PeerSnapshot, PhiConfig};
use rampart_paxos::{Acceptor, NodeId, Proposer, ProposerConfig, RegisterState};
use rampart_storage::{Durability, Store};
use rampart_transport::{BoxFuture, Handler, Peer};
use tokio::sync::{mpsc, oneshot, Notify};

pub use acceptor_task::{ACCEPTOR_BATCH_MAX, ACCEPTOR_QUEUE_MAX};
pub use proposer_task::{
    EVENTS_PER_TURN_MAX, PEER_BATCH_BYTES_MAX, PEER_FRAMES_IN_FLIGHT_MAX, PEER_QUEUE_MAX, PROPOSER_QUEUE_MAX,
};
pub use rampart_paxos::{Change, Error as PaxosError, Outcome, KEY_BYTES_MAX, VALUE_BYTES_MAX};
pub use wire::PeerInfo;

use acceptor_task::AcceptorJob;
use proposer_task::{ProposerEvent, ProposerTask};
use wire::{Envelope, PeerRequest, PeerResponse, ScannedRegister};

/// Meta key of the proposer's durable ballot counter floor.
pub const COUNTER_FLOOR_META_KEY: &str = "mm_counter_floor";
/// Meta key of the ids of the peers this node has exchanged Paxos messages with (durable).
pub const SEEN_PEERS_META_KEY: &str = "mm_seen_peers";
/// Meta key set once this node passed its first-boot check.
pub const INITIALIZED_META_KEY: &str = "mm_initialized";
/// Most registers one scan page asks each node for.
pub const SCAN_PAGE_MAX: usize = 10_000;

/// Settings of one multi-master node.
#[derive(Debug, Clone)]
pub struct MmConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub peer_addr: SocketAddr,
    pub resp_addr: String,
    pub http_addr: String,
    /// Every member, this node included: id -> peer address. Fixed for the cluster's life.
    pub members: BTreeMap<u64, String>,
    /// How long a client change may take, retries included.
    pub request_timeout: Duration,
    /// Interval of the failure-detection heartbeats.
    pub peer_heartbeat_ms: u64,
    /// Limits on client commands (the Paxos core's own limits apply on top).
    pub limits: rampart_kv::Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid multi-master configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] rampart_storage::Error),
    #[error("acceptor state in {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("cannot listen for peers on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

/// Why a change failed, as a client must treat it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MmError {
    /// Not applied: fewer than a majority of the nodes answer.
    #[error("{0}")]
    NoQuorum(String),
    /// Not applied: overloaded or contended; retry.
    #[error("{0}")]
    Busy(String),
    /// The change may or may not have been applied (read to find out).
    #[error("{0}")]
    MaybeApplied(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Internal(String),
}

impl From<PaxosError> for MmError {
    fn from(e: PaxosError) -> Self {
        let msg = e.to_string();
        if e.maybe_applied() {
            return MmError::MaybeApplied(msg);
        }
        match e {
            PaxosError::KeyTooLarge { .. } | PaxosError::ValueTooLarge { .. } => MmError::TooLarge(msg),
            PaxosError::NoQuorum { .. } => MmError::NoQuorum(msg),
            PaxosError::InFlightLimit { .. } | PaxosError::GaveUp { .. } | PaxosError::TimedOut { .. } => {
                MmError::Busy(msg)
            }
            PaxosError::Ambiguous
            | PaxosError::Config { .. }
            | PaxosError::CounterExhausted
            | PaxosError::CorruptState { .. } => MmError::Internal(msg),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub proposals: AtomicU64,
    pub proposals_ok: AtomicU64,
    pub proposals_failed: AtomicU64,
    pub proposals_in_flight: AtomicU64,
    pub cached_keys: AtomicU64,
    pub acceptor_requests: AtomicU64,
    pub acceptor_commits: AtomicU64,
    pub acceptor_registers_written: AtomicU64,
    pub peer_batches_dropped: AtomicU64,
    pub acceptor_jobs_expired: AtomicU64,
}

/// What the tasks of one node share.
pub struct Shared {
    pub id: u64,
    /// `wire::membership_fingerprint` of the members, sent with every request.
    pub cluster: u64,
    pub started: Instant,
    pub peers: BTreeMap<u64, Peer>,
    pub peer_call_timeout: Duration,
    /// Peers the failure detector calls dead: their links send nothing (a stopped peer would
    /// otherwise pile frames up in the transport) until heartbeats come back.
    pub peers_dead: BTreeMap<u64, std::sync::atomic::AtomicBool>,
    pub stats: Stats,
    /// Peers this node has exchanged Paxos messages with; persisted before the first exchange
    /// with each counts (`SEEN_PEERS_META_KEY`).
    seen: tokio::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// True until the first-boot check passed: the node neither votes nor proposes.
    probation: std::sync::atomic::AtomicBool,
    store: Arc<Store>,
    fatal: Mutex<Option<String>>,
    fatal_notify: Notify,
}

impl Shared {
    /// Records durably that this node exchanged Paxos messages with `peer`, before that exchange
    /// may count toward a quorum. Once per peer for the life of the data dir.
    pub async fn note_seen(&self, peer: u64) -> Result<(), String> {
        let mut seen = self.seen.lock().await;
        if seen.contains(&peer) {
            return Ok(());
        }
        let mut next = seen.clone();
        next.insert(peer);
        let bytes: Vec<u8> = next.iter().flat_map(|id| id.to_le_bytes()).collect();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            store.write(Durability::Immediate, |b| b.meta_put(SEEN_PEERS_META_KEY, &bytes))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        *seen = next;
        Ok(())
    }

    pub fn in_probation(&self) -> bool {
        self.probation.load(Ordering::Acquire)
    }

    pub fn envelope(&self, request: PeerRequest) -> Envelope {
        Envelope { from: self.id, cluster: self.cluster, request }
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn set_fatal(&self, reason: String) {
        tracing::error!(%reason, "multi-master node stopping");
        let mut f = self.fatal.lock();
        if f.is_none() {
            *f = Some(reason);
        }
        self.fatal_notify.notify_waiters();
    }
}

/// A running multi-master node.
pub struct MmNode {
    cfg: MmConfig,
    shared: Arc<Shared>,
    store: Arc<Store>,
    proposer_tx: mpsc::Sender<ProposerEvent>,
    acceptor_tx: mpsc::Sender<AcceptorJob>,
    health: Mutex<Membership>,
    infos: RwLock<BTreeMap<u64, PeerInfo>>,
    heartbeats_in_flight: Mutex<HashSet<u64>>,
    /// First boot: the peers that said they never exchanged Paxos messages with this node.
    first_boot_confirmed: Mutex<HashSet<u64>>,
}

/// This node's view of the cluster.
#[derive(Debug, Clone)]
pub struct MmStatus {
    pub id: u64,
    pub members: Vec<(u64, PeerInfo)>,
    pub quorum: usize,
    pub proposals_in_flight: u64,
    pub cached_keys: u64,
}

/// One page of a merged scan: live keys with their values, in key order, and where the next
/// page starts (`None` when the scan is complete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
    pub next_after: Option<Vec<u8>>,
}

impl MmNode {
    pub async fn start(cfg: MmConfig) -> Result<Arc<MmNode>, StartError> {
        if !cfg.members.contains_key(&cfg.id) {
            return Err(StartError::Config(format!(
                "node {} is not in --initial-cluster; multi-master membership is fixed at bootstrap",
                cfg.id
            )));
        }
        if cfg.members.len() > rampart_paxos::ACCEPTORS_MAX {
            return Err(StartError::Config(format!("at most {} members", rampart_paxos::ACCEPTORS_MAX)));
        }
        let dir = cfg.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open_dir(&dir))
            .await
            .map_err(|e| StartError::Config(e.to_string()))??;
        let store = Arc::new(store);
        let path = store.path().display().to_string();
        let corrupt = |reason: String| StartError::Corrupt { path: path.clone(), reason };

        // The acceptor's durable registers and the proposer's counter floor.
        let loaded = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let mut registers: Vec<(Vec<u8>, RegisterState)> = Vec::new();
                let mut bad: Option<String> = None;
                store.read(|v| {
                    v.register_for_each(|k, raw| {
                        match wire::decode_register(raw) {
                            Ok(s) => registers.push((k.to_vec(), s)),
                            Err(e) if bad.is_none() => {
                                bad = Some(format!("key {:?}: {e}", String::from_utf8_lossy(k)));
                            }
                            Err(_) => {}
                        }
                        Ok(())
                    })
                })?;
                let floor = store.meta_get(COUNTER_FLOOR_META_KEY)?;
                let seen = store.meta_get(SEEN_PEERS_META_KEY)?;
                let initialized = store.meta_get(INITIALIZED_META_KEY)?.is_some();
                Ok::<_, rampart_storage::Error>((registers, bad, floor, seen, initialized))
            })
            .await
            .map_err(|e| StartError::Config(e.to_string()))??
        };
        let (registers, bad, floor, seen_raw, initialized) = loaded;
        let seen: std::collections::BTreeSet<u64> = match seen_raw {
            None => Default::default(),
            Some(b) if b.len() % 8 == 0 => {
                b.chunks(8).map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunks"))).collect()
            }
            Some(b) => return Err(corrupt(format!("seen-peers record of {} bytes is not a list of ids", b.len()))),
        };
        // A data dir that has registers but no first-boot mark predates the check: it voted.
        let initialized = initialized || !registers.is_empty() || floor.is_some();
        if let Some(reason) = bad {
            return Err(corrupt(reason));
        }
        let initial_counter = match floor {
            None => 0,
            Some(b) if b.len() == 8 => u64::from_le_bytes(b.try_into().expect("length checked")),
            Some(b) => return Err(corrupt(format!("counter floor record of {} bytes, expected 8", b.len()))),
        };
        let registers_loaded = registers.len();
        let acceptor = Acceptor::restore(registers).map_err(|e| corrupt(e.to_string()))?;

        let me = NodeId(cfg.id);
        let acceptors: Vec<NodeId> = cfg.members.keys().map(|id| NodeId(*id)).collect();
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
                ^ cfg.id.rotate_left(32);
        let mut pcfg = ProposerConfig::new(me, acceptors, seed);
        pcfg.initial_counter = initial_counter;
        let budget_ms = cfg.request_timeout.as_millis().max(1) as u64;
        pcfg.budget_ticks = budget_ms;
        pcfg.attempts_max = 16;
        let proposer = Proposer::new(pcfg).map_err(|e| StartError::Config(e.to_string()))?;

        let source_ip = Some(cfg.peer_addr.ip());
        let mut peers = BTreeMap::new();
        let mut addresses: BTreeMap<SocketAddr, u64> = BTreeMap::new();
        addresses.insert(cfg.peer_addr, cfg.id);
        for (id, addr) in &cfg.members {
            if *id == cfg.id {
                continue;
            }
            let sock = resolve(addr).map_err(StartError::Config)?;
            if let Some(other) = addresses.insert(sock, *id) {
                // One process would then count as two acceptors.
                return Err(StartError::Config(format!(
                    "members {other} and {id} have the same peer address {sock}; every member needs its own"
                )));
            }
            peers.insert(*id, Peer::new(sock, source_ip, rampart_transport::Config::default()));
        }
        let shared = Arc::new(Shared {
            id: cfg.id,
            cluster: wire::membership_fingerprint(cfg.members.keys().copied()),
            started: Instant::now(),
            peers_dead: peers.keys().map(|id| (*id, std::sync::atomic::AtomicBool::new(false))).collect(),
            peers,
            // A phase waits 200 ms for a quorum; a reply later than that is of no use.
            peer_call_timeout: Duration::from_millis(1000),
            seen: tokio::sync::Mutex::new(seen),
            probation: std::sync::atomic::AtomicBool::new(!initialized && cfg.members.len() > 1),
            store: store.clone(),
            stats: Stats::default(),
            fatal: Mutex::new(None),
            fatal_notify: Notify::new(),
        });
        let phi = PhiConfig { first_heartbeat_estimate_ms: cfg.peer_heartbeat_ms, ..PhiConfig::default() };
        let health = Membership::new(phi, cfg.members.keys().filter(|id| **id != cfg.id).map(|id| PeerId(*id)), 0)
            .map_err(|e| StartError::Config(e.to_string()))?;

        let listener = tokio::net::TcpListener::bind(cfg.peer_addr)
            .await
            .map_err(|e| StartError::Listen { addr: cfg.peer_addr, reason: e.to_string() })?;

        let (acceptor_tx, acceptor_rx) = mpsc::channel(ACCEPTOR_QUEUE_MAX);
        let (proposer_tx, proposer_rx) = mpsc::channel(PROPOSER_QUEUE_MAX);
        let mut infos = BTreeMap::new();
        infos.insert(
            cfg.id,
            PeerInfo {
                peer_addr: cfg.peer_addr.to_string(),
                resp_addr: cfg.resp_addr.clone(),
                http_addr: cfg.http_addr.clone(),
            },
        );
        for (id, addr) in &cfg.members {
            infos.entry(*id).or_insert_with(|| PeerInfo { peer_addr: addr.clone(), ..PeerInfo::default() });
        }
        let node = Arc::new(MmNode {
            cfg: cfg.clone(),
            shared: shared.clone(),
            store: store.clone(),
            proposer_tx: proposer_tx.clone(),
            acceptor_tx: acceptor_tx.clone(),
            health: Mutex::new(health),
            infos: RwLock::new(infos),
            heartbeats_in_flight: Mutex::new(HashSet::new()),
            first_boot_confirmed: Mutex::new(HashSet::new()),
        });
        let acceptor = tokio::spawn(acceptor_task::run(
            acceptor,
            store.clone(),
            acceptor_rx,
            proposer_tx.downgrade(),
            shared.clone(),
        ));
        watch_task("acceptor", acceptor, shared.clone());
        let task = ProposerTask {
            proposer,
            store: store.clone(),
            shared: shared.clone(),
            rx: proposer_rx,
            tx: proposer_tx.downgrade(),
            acceptor_tx,
        };
        watch_task("proposer", tokio::spawn(task.run()), shared.clone());
        tokio::spawn(rampart_transport::serve(
            listener,
            Arc::new(PeerHandler { node: Arc::downgrade(&node) }),
            rampart_transport::Config::default(),
        ));
        tokio::spawn(hello_loop(Arc::downgrade(&node)));
        tracing::info!(
            id = cfg.id,
            members = cfg.members.len(),
            registers = registers_loaded,
            counter_floor = initial_counter,
            "multi-master node started"
        );
        Ok(node)
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    pub fn config(&self) -> &MmConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// A majority of the fixed membership.
    pub fn quorum(&self) -> usize {
        self.cfg.members.len() / 2 + 1
    }

    /// Applies one change to one key (linearizable; `Change::Read` is a linearizable read).
    pub async fn change(&self, key: Vec<u8>, change: Change) -> Result<Outcome, MmError> {
        self.changes(vec![(key, change)]).await.pop().unwrap_or_else(|| Err(MmError::Internal("no result".into())))
    }

    /// Applies many changes; changes on the same key apply in the given order. Each has its own
    /// result.
    pub async fn changes(&self, items: Vec<(Vec<u8>, Change)>) -> Vec<Result<Outcome, MmError>> {
        if items.is_empty() {
            return Vec::new();
        }
        if let Some(reason) = self.shared.fatal.lock().clone() {
            return items.iter().map(|_| Err(MmError::Internal(format!("node stopped: {reason}")))).collect();
        }
        if self.shared.in_probation() {
            let why = "not applied: this node's data dir is new and it is still asking every other member that it \
                       never took part before (all members must answer once)";
            return items.iter().map(|_| Err(MmError::NoQuorum(why.into()))).collect();
        }
        let mut receivers = Vec::with_capacity(items.len());
        let mut batch = Vec::with_capacity(items.len());
        for (key, change) in items {
            let (tx, rx) = oneshot::channel();
            batch.push((key, change, tx));
            receivers.push(rx);
        }
        let n = receivers.len();
        // Not applied: the proposer never saw it.
        let busy = || MmError::Busy("the proposer queue is full; retry".into());
        match self.proposer_tx.try_send(ProposerEvent::Propose(batch)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(ProposerEvent::Propose(batch))) => {
                // Wait briefly for room rather than fail at the first burst.
                match tokio::time::timeout(
                    Duration::from_millis(100),
                    self.proposer_tx.send(ProposerEvent::Propose(batch)),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    _ => return (0..n).map(|_| Err(busy())).collect(),
                }
            }
            Err(_) => return (0..n).map(|_| Err(MmError::Internal("the proposer has stopped".into()))).collect(),
        }
        // The proposer answers every change within its budget; this guard only covers a
        // proposer that stopped on a fatal error.
        let guard = self.cfg.request_timeout + Duration::from_secs(1);
        let mut out = Vec::with_capacity(n);
        for rx in receivers {
            out.push(match tokio::time::timeout(guard, rx).await {
                Ok(Ok(r)) => r.map_err(MmError::from),
                Ok(Err(_)) | Err(_) => Err(MmError::MaybeApplied(
                    "the proposer stopped before answering; the change may have been applied".into(),
                )),
            });
        }
        out
    }

    /// This node's durable accepted value for `key`: not linearizable (READONLY, stale reads).
    pub fn stale_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MmError> {
        let raw = self.store.read(|v| v.register_get(key)).map_err(|e| MmError::Internal(e.to_string()))?;
        match raw {
            None => Ok(None),
            Some(raw) => Ok(wire::decode_register(&raw).map_err(MmError::Internal)?.value),
        }
    }

    fn local_scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        values: bool,
    ) -> Result<(Vec<ScannedRegister>, bool), String> {
        let (items, mut more) =
            self.store.read(|v| v.register_scan(prefix, after, limit)).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(items.len());
        let mut bytes = 0usize;
        let total = items.len();
        for (i, (key, raw)) in items.into_iter().enumerate() {
            let s = wire::decode_register(&raw)?;
            let value = if values { s.value } else { s.value.map(|_| Vec::new()) };
            bytes += key.len() + value.as_ref().map_or(0, Vec::len);
            out.push(ScannedRegister { key, accepted: s.accepted, value });
            if bytes >= wire::SCAN_REPLY_BYTES_MAX && i + 1 < total {
                // The rest of the page would make the reply too big: it continues on the next.
                more = true;
                break;
            }
        }
        Ok((out, more))
    }

    /// One page of live keys starting with `prefix`, after `after`. `stale`: this node's durable
    /// registers only. Otherwise the durable registers of a majority are merged, each key taking
    /// the value with the highest accepted ballot among them: every write acknowledged before the
    /// scan began is seen (or a later one), deletes included; a write still in flight may be seen
    /// too. It is not a snapshot of all keys at one instant.
    ///
    /// Without `values` the page's values are empty (for KEYS, SCAN and DBSIZE).
    pub async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        stale: bool,
        values: bool,
    ) -> Result<ScanPage, MmError> {
        if self.shared.in_probation() {
            return Err(MmError::NoQuorum("this node's first-boot check has not finished".into()));
        }
        let limit = limit.clamp(1, SCAN_PAGE_MAX);
        let local = self.local_scan(prefix, after, limit, values).map_err(MmError::Internal)?;
        if stale {
            return Ok(merge(vec![local]));
        }
        let mut answers = vec![local];
        let needed = self.quorum();
        let mut set = tokio::task::JoinSet::new();
        let req = self.shared.envelope(PeerRequest::Scan {
            prefix: prefix.to_vec(),
            after: after.map(<[u8]>::to_vec),
            limit: limit as u32,
            values,
        });
        let payload = Bytes::from(wire::encode(&req).map_err(MmError::Internal)?);
        let timeout = self.cfg.request_timeout;
        for peer in self.shared.peers.values() {
            let peer = peer.clone();
            let payload = payload.clone();
            set.spawn(async move {
                match tokio::time::timeout(timeout, peer.call(payload, timeout)).await {
                    Ok(Ok(b)) => match wire::decode::<PeerResponse>(&b) {
                        Ok(PeerResponse::Scan { registers, more }) => Some((registers, more)),
                        _ => None,
                    },
                    _ => None,
                }
            });
        }
        while answers.len() < needed {
            match set.join_next().await {
                Some(Ok(Some(a))) => answers.push(a),
                Some(_) => {}
                None => break,
            }
        }
        if answers.len() < needed {
            return Err(MmError::NoQuorum(format!(
                "scan: {} of {} nodes answered, {needed} needed",
                answers.len(),
                self.cfg.members.len()
            )));
        }
        Ok(merge(answers))
    }

    pub fn peer_health(&self) -> Vec<PeerSnapshot> {
        self.health.lock().snapshot(self.shared.now_ms())
    }

    pub fn status(&self) -> MmStatus {
        let infos = self.infos.read();
        MmStatus {
            id: self.cfg.id,
            members: self.cfg.members.keys().map(|id| (*id, infos.get(id).cloned().unwrap_or_default())).collect(),
            quorum: self.quorum(),
            proposals_in_flight: self.shared.stats.proposals_in_flight.load(Ordering::Relaxed),
            cached_keys: self.shared.stats.cached_keys.load(Ordering::Relaxed),
        }
    }

    /// True when this node and enough live peers for a majority are up (by the failure
    /// detector): changes through it can succeed.
    pub fn healthy(&self) -> bool {
        if self.shared.fatal.lock().is_some() || self.shared.in_probation() {
            return false;
        }
        let dead = self.health.lock().dead_peers(self.shared.now_ms()).len();
        self.cfg.members.len() - dead >= self.quorum()
    }

    /// Resolves once the first-boot check passed (at once for a data dir that has voted
    /// before), or with the fatal error that stopped the node. While it waits it logs, every
    /// 5 s, which members have not answered yet: on first boot every member must answer once.
    pub async fn wait_first_boot(&self) -> Result<(), String> {
        let mut last_log = Instant::now();
        loop {
            if let Some(r) = self.shared.fatal.lock().clone() {
                return Err(r);
            }
            if !self.shared.in_probation() {
                return Ok(());
            }
            if last_log.elapsed() >= Duration::from_secs(5) {
                let confirmed = self.first_boot_confirmed.lock().clone();
                let missing: Vec<u64> = self.shared.peers.keys().filter(|p| !confirmed.contains(p)).copied().collect();
                tracing::warn!(
                    ?missing,
                    "first boot of this data dir: waiting for every member to confirm it never saw this node"
                );
                last_log = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resolves when the node stopped on a fatal error (a failed disk write), with the reason.
    pub async fn wait_fatal(&self) -> String {
        loop {
            let notified = self.shared.fatal_notify.notified();
            if let Some(r) = self.shared.fatal.lock().clone() {
                return r;
            }
            notified.await;
        }
    }

    /// First boot: a node whose data dir is new must not vote until every other member says it
    /// never exchanged Paxos messages with this node id. If one has, this node's data was lost
    /// or replaced, and voting with forgotten promises and values could lose acknowledged
    /// writes: the node stops with that error.
    async fn first_boot_answer(&self, peer: u64, seen_you: bool) {
        if seen_you {
            self.shared.set_fatal(format!(
                "node {} has a new data dir, but node {peer} has exchanged Paxos messages with node {} before: \
                 this node's data was lost or replaced, and it must not vote with forgotten promises \
                 (restore its data dir, or run the cluster without it; membership changes are not built yet)",
                self.cfg.id, self.cfg.id
            ));
            return;
        }
        let done = {
            let mut confirmed = self.first_boot_confirmed.lock();
            confirmed.insert(peer);
            self.shared.peers.keys().all(|p| confirmed.contains(p))
        };
        if done && self.shared.in_probation() {
            let store = self.store.clone();
            let r = tokio::task::spawn_blocking(move || {
                store.write(Durability::Immediate, |b| b.meta_put(INITIALIZED_META_KEY, b"1"))
            })
            .await;
            match r {
                Ok(Ok(())) => {
                    self.shared.probation.store(false, Ordering::Release);
                    tracing::info!("first-boot check passed: no member has seen this node before; voting");
                }
                Ok(Err(e)) => self.shared.set_fatal(format!("cannot record the first-boot check: {e}")),
                Err(e) => self.shared.set_fatal(format!("first-boot check task failed: {e}")),
            }
        }
    }

    async fn handle_peer(&self, env: Envelope) -> Result<PeerResponse, String> {
        let from = env.from;
        if !self.cfg.members.contains_key(&from) || from == self.cfg.id {
            return Err(format!("node {from} is not a member of this multi-master cluster"));
        }
        if env.cluster != self.shared.cluster {
            tracing::error!(peer = from, "peer has a different --initial-cluster membership; refusing its requests");
            return Err(format!(
                "node {from} was started with a different --initial-cluster membership than node {}; \
                 every node must list the same member ids",
                self.cfg.id
            ));
        }
        match env.request {
            PeerRequest::Hello { info } => {
                let now = self.shared.now_ms();
                let _ = self.health.lock().heartbeat(PeerId(from), now);
                self.infos.write().insert(from, info);
                let me = self.infos.read().get(&self.cfg.id).cloned().unwrap_or_default();
                let seen_you = self.shared.seen.lock().await.contains(&from);
                Ok(PeerResponse::Hello { id: self.cfg.id, info: me, seen_you })
            }
            PeerRequest::Paxos { requests } => {
                if self.shared.in_probation() {
                    return Err("this node's first-boot check has not finished; it does not vote yet".into());
                }
                // Durable before our answer can count in the asker's quorum.
                self.shared.note_seen(from).await?;
                let (tx, rx) = oneshot::channel();
                self.acceptor_tx
                    .send(AcceptorJob { requests, reply: tx, received: Instant::now() })
                    .await
                    .map_err(|_| "the acceptor has stopped".to_string())?;
                let mut replies = rx.await.map_err(|_| "the acceptor did not answer in time".to_string())?;
                // Keep the answer within a frame; what is left out looks lost to the proposer.
                let mut bytes = 0usize;
                let keep = replies
                    .iter()
                    .take_while(|r| {
                        bytes += wire::reply_bytes(r);
                        bytes <= wire::PAXOS_REPLY_BYTES_MAX
                    })
                    .count()
                    .max(1);
                replies.truncate(keep);
                Ok(PeerResponse::Paxos { id: self.cfg.id, replies })
            }
            PeerRequest::Scan { .. } if self.shared.in_probation() => {
                Err("this node's first-boot check has not finished".into())
            }
            PeerRequest::Scan { prefix, after, limit, values } => {
                let limit = (limit as usize).clamp(1, SCAN_PAGE_MAX);
                let (registers, more) = self.local_scan(&prefix, after.as_deref(), limit, values)?;
                Ok(PeerResponse::Scan { registers, more })
            }
        }
    }
}

/// Stops the node (see `MmNode::wait_fatal`) if a core task ends: it only does on a fatal error
/// (which it reported) or a panic (reported here).
fn watch_task(name: &'static str, handle: tokio::task::JoinHandle<()>, shared: Arc<Shared>) {
    tokio::spawn(async move {
        let reason = match handle.await {
            Ok(()) => format!("the {name} task stopped"),
            Err(e) => format!("the {name} task failed: {e}"),
        };
        shared.set_fatal(reason);
    });
}

/// Merges scan pages from several nodes (see [`MmNode::scan`]).
fn merge(answers: Vec<(Vec<ScannedRegister>, bool)>) -> ScanPage {
    // Every node returned its first keys in order; past the smallest last key of a node that has
    // more, some node's keys are unknown, so the page ends there.
    let bound: Option<Vec<u8>> = answers
        .iter()
        .filter(|(regs, more)| *more && !regs.is_empty())
        .map(|(regs, _)| regs.last().expect("not empty").key.clone())
        .min();
    let mut best: BTreeMap<Vec<u8>, (rampart_paxos::Ballot, Option<Vec<u8>>)> = BTreeMap::new();
    for (regs, _) in answers {
        for r in regs {
            if bound.as_ref().is_some_and(|b| r.key > *b) {
                continue;
            }
            match best.get(&r.key) {
                Some((b, _)) if *b >= r.accepted => {}
                _ => {
                    best.insert(r.key, (r.accepted, r.value));
                }
            }
        }
    }
    let items = best.into_iter().filter_map(|(k, (_, v))| v.map(|v| (k, v))).collect();
    ScanPage { items, next_after: bound }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve peer address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("peer address {addr:?} resolves to nothing"))
}

struct PeerHandler {
    node: Weak<MmNode>,
}

impl Handler for PeerHandler {
    fn handle(&self, request: Bytes) -> BoxFuture<Result<Bytes, String>> {
        let node = self.node.upgrade();
        Box::pin(async move {
            let Some(node) = node else { return Err("node is shutting down".to_string()) };
            let env: Envelope = wire::decode(&request)?;
            let resp = node.handle_peer(env).await?;
            wire::encode(&resp).map(Bytes::from)
        })
    }
}

/// Every `peer_heartbeat_ms`: a hello to every peer (at most one in flight each). Receivers feed
/// their detectors; senders record round trips. The proposer learns the dead set when it changes.
async fn hello_loop(node: Weak<MmNode>) {
    let period = match node.upgrade() {
        Some(n) => Duration::from_millis(n.cfg.peer_heartbeat_ms.max(1)),
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_dead: Vec<NodeId> = Vec::new();
    loop {
        interval.tick().await;
        let Some(n) = node.upgrade() else { return };
        let dead: Vec<NodeId> =
            n.health.lock().dead_peers(n.shared.now_ms()).into_iter().map(|p| NodeId(p.0)).collect();
        for (id, flag) in &n.shared.peers_dead {
            flag.store(dead.contains(&NodeId(*id)), Ordering::Relaxed);
        }
        if dead != last_dead {
            // Never block the heartbeats on a busy proposer: if its queue is full, try again at
            // the next tick.
            match n.proposer_tx.try_send(ProposerEvent::Dead(dead.clone())) {
                Ok(()) => {
                    tracing::info!(?dead, "failure detector: dead peers changed");
                    last_dead = dead;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        let me = n.infos.read().get(&n.cfg.id).cloned().unwrap_or_default();
        for (id, peer) in &n.shared.peers {
            let id = *id;
            if !n.heartbeats_in_flight.lock().insert(id) {
                continue;
            }
            let Ok(payload) = wire::encode(&n.shared.envelope(PeerRequest::Hello { info: me.clone() })) else {
                continue;
            };
            let peer = peer.clone();
            let n = n.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                if let Ok(b) = peer.call(Bytes::from(payload), Duration::from_secs(1)).await {
                    if let Ok(PeerResponse::Hello { id: rid, info, seen_you }) = wire::decode::<PeerResponse>(&b) {
                        if rid == id {
                            if n.shared.in_probation() {
                                n.first_boot_answer(id, seen_you).await;
                            }
                            n.infos.write().insert(id, info);
                            let _ = n.health.lock().record_rtt(PeerId(id), start.elapsed().as_millis() as u64);
                        }
                    }
                }
                n.heartbeats_in_flight.lock().remove(&id);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_paxos::Ballot;

    fn reg(key: &str, c: u64, v: Option<&str>) -> ScannedRegister {
        ScannedRegister {
            key: key.into(),
            accepted: Ballot::new(c, NodeId(1)),
            value: v.map(|s| s.as_bytes().to_vec()),
        }
    }

    #[test]
    fn merge_takes_the_highest_ballot_and_stops_where_a_node_has_more() {
        let a = (vec![reg("a", 1, Some("old")), reg("b", 5, None), reg("c", 1, Some("c1"))], true);
        let b = (vec![reg("a", 3, Some("new")), reg("b", 2, Some("resurrect?")), reg("d", 1, Some("d"))], false);
        let page = merge(vec![a, b]);
        // "b" was deleted at ballot 5: the older value at 2 must not come back. "d" lies past
        // the first node's last key, where it has not reported yet.
        assert_eq!(page.items, vec![(b"a".to_vec(), b"new".to_vec()), (b"c".to_vec(), b"c1".to_vec())]);
        assert_eq!(page.next_after, Some(b"c".to_vec()));
        let done = merge(vec![(vec![reg("x", 1, Some("1"))], false), (vec![], false)]);
        assert_eq!(done.next_after, None);
        assert_eq!(done.items.len(), 1);
    }
}
