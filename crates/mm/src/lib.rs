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
//! Files, one mechanism each: `start` (checks, durable state, tasks), `changes` (client changes
//! to the proposer task), `acceptor_task`, `proposer_task`, `peer_server` (what peers ask),
//! `heartbeat` (hellos and the dead set), `first_boot`, `scan`, `wire` (peer messages, the
//! register record), `validate` (what every peer message must keep to), `command` (client commands as per-key changes), `replica` (the
//! `rampart_kv::Replica` the client APIs use), `error`.
//!
//! Protocol and safety arguments: `docs/paxos.md`.

mod acceptor_task;
mod changes;
pub mod collector;
pub mod command;
pub mod config;
mod error;
pub mod expirer;
mod first_boot;
mod heartbeat;
mod peer_server;
mod proposer_task;
mod reconfig;
mod replica;
mod scan;
mod start;
pub mod validate;
pub mod wire;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rampart_membership::{Heartbeats, PeerSnapshot};
use rampart_storage::Store;
use rampart_transport::Peer;
use tokio::sync::{mpsc, Notify};

pub use acceptor_task::{
    ACCEPTOR_BATCH_MAX, ACCEPTOR_QUEUE_MAX, REGISTERS_CACHED_BYTES_MAX as ACCEPTOR_REGISTERS_CACHED_BYTES_MAX,
    REGISTERS_CACHED_MAX as ACCEPTOR_REGISTERS_CACHED_MAX,
};
pub use error::{MmError, StartError};
pub use proposer_task::{
    EVENTS_PER_TURN_MAX, PEER_BATCH_BYTES_MAX, PEER_FRAMES_IN_FLIGHT_MAX, PEER_QUEUE_MAX, PROPOSER_QUEUE_MAX,
};
pub use rampart_paxos::{Change, Error as PaxosError, Outcome, KEY_BYTES_MAX, VALUE_BYTES_MAX};
pub use reconfig::MemberChange;
pub use scan::ScanPage;
pub use start::tombstone_grace_min;
pub use wire::PeerInfo;

use proposer_task::ProposerEvent;
use wire::{Envelope, PeerRequest};

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
    /// How long a tombstone stays before its register is collected (`collector`).
    pub tombstone_grace: Duration,
    /// Most registers the acceptor holds in memory ([`ACCEPTOR_REGISTERS_CACHED_MAX`] in the
    /// server); the others are read back from redb when a request names them.
    pub registers_cached_max: usize,
    /// Limits on client commands (the Paxos core's own limits apply on top).
    pub limits: rampart_kv::Limits,
    /// The peer transport: its limits, timeouts, peer TLS and counters (shared by the peer
    /// listener and the links to every peer).
    pub transport: rampart_transport::Config,
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
    /// Keys the expirer removed (`expirer`).
    pub keys_expired: AtomicU64,
    /// Tombstone registers this node's acceptor removed (`collector`).
    pub tombstones_collected: AtomicU64,
    /// Registers this node's acceptor holds, tombstones included.
    pub registers: AtomicU64,
    /// Of those, how many are held in memory (at most `MmConfig::registers_cached_max`).
    pub registers_in_memory: AtomicU64,
    /// Collector rounds with due tombstones that could not hear from every voter.
    pub collection_blocked: AtomicU64,
}

/// What the tasks of one node share.
pub struct Shared {
    pub id: u64,
    /// The cluster's id (`ClusterConfig::cluster_id`), sent with every request; learnt from the
    /// first configuration a joining node adopts.
    pub cluster: AtomicU64,
    /// The configuration this node adopted last (durable before it is set here).
    pub config: RwLock<config::ClusterConfig>,
    /// Whether this node votes, and why not.
    pub role: RwLock<Role>,
    /// The epoch of the voters the proposer uses (it follows `config` shortly after).
    pub proposer_epoch: AtomicU64,
    /// This data dir's join nonce (random, durable): what a coordinator adding or replacing this
    /// node puts in its member entry.
    pub join_nonce: u64,
    /// The acceptor's durable commit sequence (raised by every group commit).
    pub commit_seq: AtomicU64,
    /// The highest commit sequence seen from each voter, and whether it changed since it was
    /// last persisted.
    pub peer_seqs: Mutex<BTreeMap<rampart_paxos::NodeId, u64>>,
    pub peer_seqs_dirty: std::sync::atomic::AtomicBool,
    /// True after a restart until a quorum of the voters confirmed that this data dir is not
    /// older than what they saw from it: a data dir restored from an old copy must not vote.
    pub restart_check: std::sync::atomic::AtomicBool,
    pub restart_confirmed: Mutex<HashSet<u64>>,
    /// When the restart check began.
    pub restart_since: Mutex<Instant>,
    /// The joint configuration epoch this node is finishing as a change's coordinator, if any
    /// (sent with its heartbeats), and the last time a peer said it was finishing one.
    pub coordinating: Mutex<Option<u64>>,
    pub change_seen: Mutex<Option<(u64, Instant)>>,
    /// The acceptor's collected floor, as last persisted (what a membership change hands to new
    /// members).
    pub floor: Mutex<rampart_paxos::Ballot>,
    /// Set when the restart check found this data dir older than what a peer saw: the
    /// generation it must not vote at again (only a replacement, a newer generation, lets it).
    pub distrusted: Mutex<Option<u32>>,
    /// True while this data dir has never held a register nor been a member: only such a node
    /// offers its join nonce (`rampart cluster add` or `replace` takes it).
    pub fresh: std::sync::atomic::AtomicBool,
    pub started: Instant,
    /// The wall clock at `started`, in milliseconds since 1970: with `started`, the clock the
    /// ballot ceiling follows (monotonic from here on, so a clock step after start moves nothing).
    pub unix_ms_at_start: u64,
    /// A link to every other member of the configuration (both sets during a change).
    pub peers: RwLock<BTreeMap<u64, Peer>>,
    pub peer_call_timeout: Duration,
    /// Peers the failure detector calls dead: their links send nothing (a stopped peer would
    /// otherwise pile frames up in the transport) until heartbeats come back.
    pub peers_dead: RwLock<std::collections::BTreeSet<u64>>,
    pub stats: Stats,
    /// What peers' Paxos requests and scans must keep to (`validate`).
    pub peer_limits: validate::PeerLimits,
    /// Peers this node has exchanged Paxos messages with; persisted before the first exchange
    /// with each counts (`SEEN_PEERS_META_KEY`).
    seen: tokio::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// True until the first-boot check passed: the node neither votes nor proposes.
    probation: std::sync::atomic::AtomicBool,
    store: Arc<Store>,
    fatal: Mutex<Option<String>>,
    fatal_notify: Notify,
    /// Added to the wall clock for expiry (milliseconds; 0 outside tests): see
    /// [`MmNode::expiry_clock_offset`].
    pub expiry_clock_offset_ms: Arc<AtomicI64>,
}

impl Shared {
    pub fn in_probation(&self) -> bool {
        self.probation.load(Ordering::Acquire)
    }

    /// Why this node neither votes nor proposes now (`None`: it does).
    pub fn not_voting(&self) -> Option<String> {
        if self.restart_check.load(Ordering::Acquire) {
            return Some(
                "this node restarted and waits until a majority of the members confirm its data is not older than \
                 what they saw from it"
                    .into(),
            );
        }
        if self.in_probation() {
            return Some(
                "this node's data dir is new and it is still asking every other member that it never took part \
                 before (all members must answer once)"
                    .into(),
            );
        }
        match &*self.role.read() {
            Role::Member { .. } => None,
            Role::Joining { reason } | Role::Removed { reason } => Some(reason.clone()),
        }
    }

    /// This node's voter id (its id and generation), when it is a member.
    pub fn voter(&self) -> Option<rampart_paxos::NodeId> {
        match &*self.role.read() {
            Role::Member { generation } => Some(config::voter_id(self.id, *generation)),
            _ => None,
        }
    }

    /// A request to a peer, stamped with this node's cluster id and current epoch.
    pub fn envelope(&self, request: PeerRequest) -> Envelope {
        self.envelope_at(self.config.read().epoch, request)
    }

    pub fn envelope_at(&self, epoch: u64, request: PeerRequest) -> Envelope {
        Envelope { from: self.id, cluster: self.cluster.load(Ordering::Acquire), epoch, request }
    }

    /// Notes a commit sequence seen from `voter`.
    pub fn observe_seq(&self, voter: rampart_paxos::NodeId, seq: u64) {
        let mut seqs = self.peer_seqs.lock();
        let e = seqs.entry(voter).or_insert(0);
        if seq > *e {
            *e = seq;
            self.peer_seqs_dirty.store(true, Ordering::Release);
        }
    }

    pub fn is_dead(&self, peer: u64) -> bool {
        self.peers_dead.read().contains(&peer)
    }

    pub fn peer(&self, id: u64) -> Option<Peer> {
        self.peers.read().get(&id).cloned()
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The clock expiry is judged by, Unix ms: this node's wall clock plus the test offset. It
    /// stamps the changes this node proposes and judges its stale reads (docs/paxos.md,
    /// "Expiry").
    pub fn expiry_now_ms(&self) -> u64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let offset = self.expiry_clock_offset_ms.load(Ordering::Relaxed);
        wall.saturating_add_signed(offset)
    }

    /// The ballot counter ceiling now (`docs/paxos.md`, "Ballot bounds"): the same clock the
    /// proposer's ceiling follows.
    pub fn ballot_ceiling(&self) -> rampart_paxos::CounterCeiling {
        rampart_paxos::CounterCeiling::at_unix_ms(self.unix_ms_at_start.saturating_add(self.now_ms()))
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

/// Whether a node votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A member at this generation: it votes and proposes.
    Member { generation: u32 },
    /// Not a member yet: a new node waiting to be added, or one whose data was lost waiting to
    /// be replaced (`rampart cluster replace`). It neither votes nor proposes.
    Joining { reason: String },
    /// No longer a member: removed, or replaced by a newer instance with its id.
    Removed { reason: String },
}

/// A running multi-master node.
pub struct MmNode {
    cfg: MmConfig,
    shared: Arc<Shared>,
    store: Arc<Store>,
    proposer_tx: mpsc::Sender<ProposerEvent>,
    acceptor_tx: mpsc::Sender<acceptor_task::Job>,
    health: Mutex<Heartbeats>,
    infos: RwLock<BTreeMap<u64, PeerInfo>>,
    /// First boot: the peers that said they never exchanged Paxos messages with this node.
    first_boot_confirmed: Mutex<HashSet<u64>>,
    /// One membership change at a time through this node.
    reconfig_lock: tokio::sync::Mutex<()>,
    /// This node, for work that must outlive the request that started it (a membership change).
    me: std::sync::Weak<MmNode>,
}

/// This node's view of the cluster.
#[derive(Debug, Clone)]
pub struct MmStatus {
    pub id: u64,
    pub members: Vec<(u64, PeerInfo)>,
    /// The configuration's epoch, and whether a membership change is under way.
    pub epoch: u64,
    pub joint: bool,
    pub proposals_in_flight: u64,
    pub cached_keys: u64,
}

impl MmNode {
    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    pub fn config(&self) -> &MmConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Milliseconds added to this node's wall clock when it judges expiry (0 in production):
    /// tests advance it to make keys expire without waiting.
    pub fn expiry_clock_offset(&self) -> Arc<AtomicI64> {
        self.shared.expiry_clock_offset_ms.clone()
    }

    /// The acceptor's collected floor (the promise a key without a register stands for).
    pub fn collected_floor(&self) -> rampart_paxos::Ballot {
        *self.shared.floor.lock()
    }

    /// This node's expiry clock (wall clock plus the offset), Unix ms.
    pub fn expiry_now_ms(&self) -> u64 {
        self.shared.expiry_now_ms()
    }

    /// The configuration this node adopted last.
    pub fn cluster_config(&self) -> config::ClusterConfig {
        self.shared.config.read().clone()
    }

    pub fn peer_health(&self) -> Vec<PeerSnapshot> {
        self.health.lock().snapshot(self.shared.now_ms())
    }

    pub fn status(&self) -> MmStatus {
        let infos = self.infos.read();
        let config = self.cluster_config();
        MmStatus {
            id: self.cfg.id,
            members: config
                .everyone()
                .iter()
                .map(|m| {
                    let info = infos.get(&m.id).cloned();
                    (m.id, info.unwrap_or_else(|| PeerInfo { peer_addr: m.peer_addr.clone(), ..PeerInfo::default() }))
                })
                .collect(),
            epoch: config.epoch,
            joint: config.is_joint(),
            proposals_in_flight: self.shared.stats.proposals_in_flight.load(Ordering::Relaxed),
            cached_keys: self.shared.stats.cached_keys.load(Ordering::Relaxed),
        }
    }

    /// True when this node and enough live peers for a majority are up (by the failure
    /// detector): changes through it can succeed.
    pub fn healthy(&self) -> bool {
        if self.shared.fatal.lock().is_some() || self.shared.not_voting().is_some() {
            return false;
        }
        let dead: Vec<u64> = self.health.lock().dead_peers(self.shared.now_ms()).into_iter().map(|p| p.0).collect();
        let me = self.shared.id;
        let config = self.cluster_config();
        let current = config.everyone();
        let alive = |v: rampart_paxos::NodeId| {
            let m = config::member_of(v);
            // An older generation of a replaced member is gone for good.
            current.iter().any(|e| e.voter() == v) && (m == me || !dead.contains(&m))
        };
        config.voters().reachable(&[], alive)
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

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve peer address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("peer address {addr:?} resolves to nothing"))
}
