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
pub mod command;
mod error;
pub mod expirer;
mod first_boot;
mod heartbeat;
mod peer_server;
mod proposer_task;
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

pub use acceptor_task::{ACCEPTOR_BATCH_MAX, ACCEPTOR_QUEUE_MAX};
pub use error::{MmError, StartError};
pub use proposer_task::{
    EVENTS_PER_TURN_MAX, PEER_BATCH_BYTES_MAX, PEER_FRAMES_IN_FLIGHT_MAX, PEER_QUEUE_MAX, PROPOSER_QUEUE_MAX,
};
pub use rampart_paxos::{Change, Error as PaxosError, Outcome, KEY_BYTES_MAX, VALUE_BYTES_MAX};
pub use scan::ScanPage;
pub use wire::PeerInfo;

use acceptor_task::AcceptorJob;
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
}

/// What the tasks of one node share.
pub struct Shared {
    pub id: u64,
    /// `wire::membership_fingerprint` of the members, sent with every request.
    pub cluster: u64,
    pub started: Instant,
    /// The wall clock at `started`, in milliseconds since 1970: with `started`, the clock the
    /// ballot ceiling follows (monotonic from here on, so a clock step after start moves nothing).
    pub unix_ms_at_start: u64,
    pub peers: BTreeMap<u64, Peer>,
    pub peer_call_timeout: Duration,
    /// Peers the failure detector calls dead: their links send nothing (a stopped peer would
    /// otherwise pile frames up in the transport) until heartbeats come back.
    pub peers_dead: BTreeMap<u64, std::sync::atomic::AtomicBool>,
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

    pub fn envelope(&self, request: PeerRequest) -> Envelope {
        Envelope { from: self.id, cluster: self.cluster, request }
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

/// A running multi-master node.
pub struct MmNode {
    cfg: MmConfig,
    shared: Arc<Shared>,
    store: Arc<Store>,
    proposer_tx: mpsc::Sender<ProposerEvent>,
    acceptor_tx: mpsc::Sender<AcceptorJob>,
    health: Mutex<Heartbeats>,
    infos: RwLock<BTreeMap<u64, PeerInfo>>,
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

    /// This node's expiry clock (wall clock plus the offset), Unix ms.
    pub fn expiry_now_ms(&self) -> u64 {
        self.shared.expiry_now_ms()
    }

    /// A majority of the fixed membership.
    pub fn quorum(&self) -> usize {
        self.cfg.members.len() / 2 + 1
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
