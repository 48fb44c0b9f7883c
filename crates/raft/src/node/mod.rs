//! A leader-mode node: openraft plus the request paths the client APIs use, one file per
//! mechanism:
//!
//! - [`forward`]: writes; a follower forwards to the leader.
//! - [`batch`]: the leader folds queued writes into log entries, stamped with its clock.
//! - [`early`]: the leader sends new entries to its followers before its own fsync.
//! - [`expirer`]: the leader removes expired keys through the log.
//! - [`leases`]: the leader counts leases down, serves keepalives, and revokes leases that ran
//!   out through the log.
//! - [`read_index`]: linearizable reads through a shared read-index round.
//! - [`membership`]: adding and removing members.
//! - [`failover`]: fast elections when the leader's process is gone.
//! - [`peer_server`]: what other members ask of this node.
//! - [`heartbeat`]: failure-detection heartbeats to every member.
//! - [`snapshot`]: receiving a snapshot from the leader, chunk by chunk, into a file.
//!
//! The `rampart_kv::Replica` implementation is in `crate::replica`.

mod batch;
mod early;
mod expirer;
mod failover;
mod forward;
mod heartbeat;
mod leases;
mod membership;
mod peer_server;
mod read_index;
mod snapshot;

pub use batch::{
    BATCHES_IN_FLIGHT_MAX, BATCH_BYTES_MAX, BATCH_COMMANDS_MAX, PIPELINE_COMMANDS_MAX, PROPOSAL_QUEUE_MAX,
};
pub use early::{EARLY_SENDS_IN_FLIGHT_MAX, EARLY_SEND_BYTES_MAX};
pub use expirer::{EXPIRE_BATCH_KEYS_MAX, EXPIRE_INTERVAL};
pub use leases::{LeaseView, LEASE_CHECK_INTERVAL, LEASE_REVOKES_PER_PASS_MAX};
pub use read_index::ReadCoalescer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{ServerState, SnapshotPolicy};
use parking_lot::{Mutex, RwLock};
use rampart_kv::Limits;
use rampart_membership::{Heartbeats, PeerSnapshot, PhiConfig};
use rampart_storage::{Store, Versioned};
use tokio::sync::mpsc;

use crate::network::{ForwardError, Network, Peers};
use crate::snapshot::SnapshotDir;
use crate::store::{LogStore, Progress, StateMachineStore};
use crate::types::{NodeId, NodeInfo, Raft};
use batch::{proposer_loop, Proposal};

/// Folder of snapshot files inside a node's data dir.
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";

/// Snapshot bytes carried by one InstallSnapshot message (openraft's `snapshot_max_chunk_size`).
/// A chunk, encoded, must fit in a peer frame (`rampart_transport::Config::frame_bytes_max`); a
/// byte array encodes to at most twice its length.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

/// Entries a learner may lag behind the leader and still be promoted.
pub const LEARNER_LAG_MAX: u64 = 64;

/// How long adding a member waits for it to catch up before giving up
/// (it then stays a learner, and the call says so).
pub const LEARNER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of one leader-mode node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub peer_addr: SocketAddr,
    pub resp_addr: String,
    pub http_addr: String,
    /// Used on first boot only: the initial voters and their peer addresses.
    pub initial_cluster: BTreeMap<NodeId, String>,
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout; the upper is twice it.
    pub election_timeout_ms: u64,
    /// How long a client request may wait for its answer.
    pub request_timeout: Duration,
    /// A snapshot is taken after this many entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind a snapshot, for slow followers.
    pub logs_kept_after_snapshot: u64,
    /// Interval of the failure-detection heartbeats to every peer.
    pub peer_heartbeat_ms: u64,
    /// Limits on client commands, forwarded ones included.
    pub limits: Limits,
    /// The peer transport: its limits, timeouts, peer TLS and counters (shared by the peer
    /// listener and the clients of every peer).
    pub transport: rampart_transport::Config,
    /// Revisions of watch history this node keeps (`--watch-history-revisions`; default
    /// [`crate::watch::WATCH_HISTORY_REVISIONS`]).
    pub watch_history_revisions: u64,
}

/// Why a write failed, and whether it may have been applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// No leader is known (election in progress). Not applied.
    #[error("TRYAGAIN no leader elected yet, retry shortly")]
    TryAgain,
    /// The leader cannot reach a quorum. Not applied.
    #[error("CLUSTERDOWN {0}")]
    ClusterDown(String),
    /// Sent or proposed, but no answer in time: it may or may not be applied.
    #[error("TIMEOUT {0}")]
    Timeout(String),
    /// Refused by the state machine; nothing changed.
    #[error("ERR {0}")]
    Rejected(String),
}

impl WriteError {
    pub fn is_certainly_not_applied(&self) -> bool {
        matches!(self, WriteError::TryAgain | WriteError::ClusterDown(_) | WriteError::Rejected(_))
    }
}

/// A read could not be confirmed linearizable. Reads have no side effects,
/// so every variant is safe to retry.
pub type ReadError = WriteError;

/// One member as reported by status calls.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub id: NodeId,
    pub info: NodeInfo,
    pub voter: bool,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub id: NodeId,
    pub role: &'static str,
    pub state: ServerState,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: u64,
    pub members: Vec<MemberStatus>,
    pub millis_since_quorum_ack: Option<u64>,
}

/// The leader-mode node.
pub struct RaftNode {
    /// Itself, for tasks that must outlive the request that started them.
    me: std::sync::Weak<RaftNode>,
    /// Client commands waiting to be batched into log entries.
    proposals: mpsc::Sender<Proposal>,
    pub id: NodeId,
    cfg: NodeConfig,
    raft: Raft,
    store: Arc<Store>,
    peers: Arc<Peers>,
    progress: Arc<Progress>,
    /// Client addresses learned from peers' hellos (membership holds peer addresses).
    infos: RwLock<HashMap<NodeId, NodeInfo>>,
    reads: ReadCoalescer,
    /// Heartbeats from peers through phi-accrual detectors, and round trips.
    health: Mutex<Heartbeats>,
    /// Monotonic zero of the millisecond clock the detectors use.
    clock: Instant,
    /// Set while a leader liveness probe runs (one at a time).
    leader_probe: std::sync::atomic::AtomicBool,
    /// Term and last log index when this process started (see `local_read_index`).
    boot: (u64, u64),
    /// Quorum silence after which a leader refuses writes as CLUSTERDOWN.
    quorum_silence_ms: u64,
    /// The snapshot being received, for `validate::SnapshotProgress`.
    snapshot_progress: Mutex<crate::validate::SnapshotProgress>,
    /// This node's snapshot files.
    snapshots: Arc<SnapshotDir>,
    /// The snapshot being received from the leader.
    receiving: tokio::sync::Mutex<snapshot::Receiving>,
    /// The Unix-ms clock entries are stamped with and expiry is read against (adjustable).
    unix_clock: crate::clock::Clock,
    /// The last stamp this node issued as leader.
    stamper: crate::clock::Stamper,
    /// Keys the expirer removed through the log while this node led.
    pub(crate) expired_keys: std::sync::atomic::AtomicU64,
    /// The live side of watches (shared with the state machine).
    watch_hub: Arc<crate::watch::WatchHub>,
    /// The monotonic clock leases are counted down by.
    mono: crate::clock::MonoClock,
    /// The leader's lease deadlines.
    leases: leases::LeaseClock,
    /// Leases the lease expirer revoked while this node led.
    expired_leases: std::sync::atomic::AtomicU64,
    /// Batches the proposer has handed to openraft and not seen answered.
    batches_in_flight: std::sync::atomic::AtomicUsize,
}

/// openraft's settings for a node.
fn openraft_config(cfg: &NodeConfig) -> Result<openraft::Config, StartError> {
    openraft::Config {
        cluster_name: "rampart".into(),
        heartbeat_interval: cfg.heartbeat_interval_ms,
        election_timeout_min: cfg.election_timeout_ms,
        election_timeout_max: cfg.election_timeout_ms.saturating_mul(2),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: cfg.logs_kept_after_snapshot,
        // Receivers refuse appends with more (`validate`).
        max_payload_entries: crate::validate::APPEND_ENTRIES_MAX as u64,
        install_snapshot_timeout: 5_000,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        // A learner counts as caught up (and may be promoted) once it is within this many
        // entries of the leader.
        replication_lag_threshold: LEARNER_LAG_MAX,
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Config(e.to_string()))
}

/// The errors of starting a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] rampart_storage::Error),
    #[error("cannot listen for peers on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("cannot open the snapshot directory: {0}")]
    Snapshots(String),
    #[error("invalid raft settings: {0}")]
    Config(String),
    #[error("raft failed to start: {0}")]
    Raft(String),
    /// The data dir holds a term or log index above the bounds peers' messages are held to:
    /// state a forged or buggy message left before they were checked. openraft would panic on
    /// it (a term near `u64::MAX` overflows at the next election), so the node does not start.
    #[error(
        "refusing to start: {0}; the data dir was written from a forged or buggy peer message (or this node's \
         clock is far behind). Restore the data dir from a backup, or wipe it and re-add the node"
    )]
    OutOfBounds(String),
}

impl RaftNode {
    /// Opens the data dir, starts openraft and the peer listener, and on a
    /// pristine data dir whose node is in `initial_cluster`, bootstraps it.
    pub async fn start(cfg: NodeConfig) -> Result<Arc<RaftNode>, StartError> {
        let store = Arc::new(Store::open_dir(&cfg.data_dir)?);
        crate::store::check_bounds(&store, &crate::validate::Bounds::now()).map_err(StartError::OutOfBounds)?;
        let snapshots = Arc::new(
            SnapshotDir::open(&cfg.data_dir.join(SNAPSHOT_DIR_NAME))
                .map_err(|e| StartError::Snapshots(e.to_string()))?,
        );
        let state_machine = {
            let (store, snapshots) = (store.clone(), snapshots.clone());
            // May build a snapshot (a data dir of an older format): off the async threads.
            tokio::task::spawn_blocking(move || StateMachineStore::open(store, snapshots).map_err(|e| e.to_string()))
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?
                .map_err(StartError::Raft)?
        };
        let watch_hub = state_machine.watch_hub().clone();
        watch_hub.set_retention(cfg.watch_history_revisions);
        let progress = Arc::new(Progress::default());
        let raft_cfg = openraft_config(&cfg)?;
        let listener = tokio::net::TcpListener::bind(cfg.peer_addr)
            .await
            .map_err(|e| StartError::Listen { addr: cfg.peer_addr, reason: e.to_string() })?;
        let peers = Peers::new(Some(cfg.peer_addr.ip()), cfg.transport.clone());
        let log_store = LogStore::new(store.clone(), progress.clone()).map_err(|e| StartError::Raft(e.to_string()))?;
        let raft = Raft::new(cfg.id, Arc::new(raft_cfg), Network::new(peers.clone()), log_store.clone(), state_machine)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let quorum_silence_ms = cfg.election_timeout_ms.saturating_mul(4).max(1000);
        // Read from disk: openraft's metrics are not loaded yet at this point.
        let boot = crate::store::boot_state(&store).map_err(|e| StartError::Raft(e.to_string()))?;
        let me = NodeInfo {
            peer_addr: cfg.peer_addr.to_string(),
            resp_addr: cfg.resp_addr.clone(),
            http_addr: cfg.http_addr.clone(),
        };
        let phi = PhiConfig { first_heartbeat_estimate_ms: cfg.peer_heartbeat_ms, ..PhiConfig::default() };
        let health = Heartbeats::new(phi, [], 0).map_err(|e| StartError::Config(e.to_string()))?;
        let (proposals, proposals_rx) = mpsc::channel(PROPOSAL_QUEUE_MAX);
        let node = Arc::new_cyclic(|weak| RaftNode {
            me: weak.clone(),
            proposals,
            id: cfg.id,
            raft,
            store,
            peers: peers.clone(),
            progress,
            infos: RwLock::new(HashMap::from([(cfg.id, me)])),
            reads: ReadCoalescer::new(),
            health: Mutex::new(health),
            clock: Instant::now(),
            leader_probe: std::sync::atomic::AtomicBool::new(false),
            boot,
            quorum_silence_ms,
            snapshot_progress: Mutex::new(Default::default()),
            snapshots,
            receiving: tokio::sync::Mutex::new(snapshot::Receiving::default()),
            unix_clock: crate::clock::Clock::system(),
            stamper: crate::clock::Stamper::default(),
            expired_keys: std::sync::atomic::AtomicU64::new(0),
            watch_hub,
            mono: crate::clock::MonoClock::default(),
            leases: leases::LeaseClock::default(),
            expired_leases: std::sync::atomic::AtomicU64::new(0),
            batches_in_flight: std::sync::atomic::AtomicUsize::new(0),
            cfg,
        });
        log_store.set_early_replicate(Box::new(early::Early {
            node: Arc::downgrade(&node),
            id: node.id,
            in_flight: Default::default(),
        }));
        tokio::spawn(rampart_transport::serve(
            listener,
            Arc::new(peer_server::PeerHandler { node: Arc::downgrade(&node) }),
            node.cfg.transport.clone(),
        ));
        node.bootstrap_if_new().await?;
        tokio::spawn(heartbeat::hello_loop(Arc::downgrade(&node)));
        tokio::spawn(proposer_loop(Arc::downgrade(&node), proposals_rx));
        tokio::spawn(expirer::expirer_loop(Arc::downgrade(&node)));
        tokio::spawn(leases::lease_expirer_loop(Arc::downgrade(&node)));
        Ok(node)
    }

    /// On a pristine data dir whose node is in `initial_cluster`, initializes the cluster.
    async fn bootstrap_if_new(&self) -> Result<(), StartError> {
        let initialized = self.raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized && self.cfg.initial_cluster.contains_key(&self.id) {
            let members: BTreeMap<NodeId, NodeInfo> = self
                .cfg
                .initial_cluster
                .iter()
                .map(|(id, addr)| (*id, NodeInfo { peer_addr: addr.clone(), ..Default::default() }))
                .collect();
            tracing::info!(?members, "first boot: initializing cluster");
            if let Err(e) = self.raft.initialize(members).await {
                // Another member may have initialized us already; that is fine.
                tracing::info!(error = %e, "initialize skipped");
            }
        } else if !initialized {
            tracing::info!("not in --initial-cluster: waiting to be added as a member");
        }
        Ok(())
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The clock this node stamps entries with (as leader) and reads expiry against. Tests and
    /// operators move it with [`crate::clock::Clock::advance`] / `set_offset`.
    pub fn clock(&self) -> &crate::clock::Clock {
        &self.unix_clock
    }

    /// The state machine's clock: the latest stamp applied on this node (0: none yet).
    pub fn applied_clock_ms(&self) -> Result<u64, rampart_storage::Error> {
        Ok(self
            .store
            .meta_get(crate::state_machine::CLOCK_META)?
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes))
    }

    /// The time reads judge expiry at: the later of this node's clock and its state machine's
    /// (a key the log already treats as expired is never shown again).
    pub fn read_clock_ms(&self) -> Result<u64, rampart_storage::Error> {
        Ok(self.unix_clock.now_ms().max(self.applied_clock_ms()?))
    }

    /// The stamp for the next entry this node proposes: max(its clock, the state machine's
    /// clock, the last stamp it issued), so stamps never go back on one leader and a new leader
    /// never stamps below what an earlier one applied.
    pub(crate) fn next_stamp(&self) -> Result<u64, rampart_storage::Error> {
        Ok(self.stamper.next(self.unix_clock.now_ms(), self.applied_clock_ms()?))
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// Resolves when openraft stops on a fatal error (a failed disk write,
    /// say); a node in that state cannot serve and should exit.
    pub async fn wait_fatal(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            if let Err(e) = &rx.borrow().running_state {
                return e.to_string();
            }
            if rx.changed().await.is_err() {
                return "raft stopped".to_string();
            }
        }
    }

    pub async fn shutdown(&self) {
        self.watch_hub.close();
        let _ = self.raft.shutdown().await;
    }

    /// The live side of this node's watches.
    pub fn watch_hub(&self) -> &Arc<crate::watch::WatchHub> {
        &self.watch_hub
    }

    /// Checks, before anything is proposed, that this node may propose.
    fn may_propose(&self) -> Result<(), ForwardError> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        if m.state != ServerState::Leader {
            return Err(ForwardError::NotLeader { leader: m.current_leader });
        }
        if let Some(ms) = m.millis_since_quorum_ack {
            if ms > self.quorum_silence_ms && self.voter_count(&m) > 1 {
                return Err(ForwardError::NoQuorum(format!("no quorum acknowledgement for {ms} ms")));
            }
        }
        Ok(())
    }

    fn voter_count(&self, m: &openraft::RaftMetrics<NodeId, NodeInfo>) -> usize {
        m.membership_config.membership().voter_ids().count()
    }

    fn peer_addr_of(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).map(|n| n.peer_addr.clone())
    }

    /// Local (possibly stale) state-machine reads; a key expired at [`Self::read_clock_ms`] is
    /// absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>, rampart_storage::Error> {
        let now_ms = self.read_clock_ms()?;
        Ok(self.store.kv_get(key)?.filter(|v| v.expires_at.is_none_or(|at| at > now_ms)))
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let infos = self.infos.read();
        let members = membership
            .nodes()
            .map(|(id, n)| {
                let mut info = n.clone();
                if let Some(known) = infos.get(id) {
                    if info.resp_addr.is_empty() {
                        info.resp_addr = known.resp_addr.clone();
                    }
                    if info.http_addr.is_empty() {
                        info.http_addr = known.http_addr.clone();
                    }
                }
                MemberStatus { id: *id, info, voter: voters.contains(id) }
            })
            .collect();
        Status {
            id: self.id,
            role,
            state: m.state,
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: self.progress.committed.load(Ordering::Relaxed),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            members,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
        }
    }

    /// Last measured round trip to each reachable peer.
    /// What the failure detectors say about every peer (state, phi, time
    /// since its last heartbeat, smoothed round trip).
    pub fn peer_health(&self) -> Vec<PeerSnapshot> {
        let now = self.now_ms();
        self.health.lock().snapshot(now)
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Client addresses of `id`, when known.
    pub fn node_info(&self, id: NodeId) -> Option<NodeInfo> {
        self.status().members.into_iter().find(|m| m.id == id).map(|m| m.info)
    }

    /// True while this node can serve linearizable requests right now: a
    /// leader is known and, on the leader, a quorum answered recently.
    pub fn healthy(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        match (m.state, m.current_leader) {
            (ServerState::Leader, _) => {
                self.voter_count(&m) <= 1 || m.millis_since_quorum_ack.is_some_and(|ms| ms <= self.quorum_silence_ms)
            }
            (ServerState::Follower | ServerState::Learner, Some(_)) => true,
            _ => false,
        }
    }
}
