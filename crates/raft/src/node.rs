//! A leader-mode node: openraft plus the request paths the client APIs use.
//!
//! Writes: the leader proposes; a follower forwards to the leader over the
//! transport. Errors say whether the write may have been applied
//! ([`WriteError::is_certainly_not_applied`]).
//!
//! Linearizable reads: the leader confirms its leadership with a quorum
//! (openraft's read index); a follower asks the leader for that index, waits
//! until it has applied it, then reads locally. Concurrent reads share one
//! quorum round ([`ReadCoalescer`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use parking_lot::{Mutex, RwLock};
use rampart_membership::{Membership, PeerId, PeerSnapshot, PhiConfig};
use rampart_storage::{Store, Versioned};
use rampart_transport::{BoxFuture, Handler};
use tokio::sync::{mpsc, oneshot};

use crate::network::{decode, encode, ForwardError, Network, PeerRequest, PeerResponse, Peers};
use crate::store::{LogStore, Progress, StateMachineStore};
use crate::types::{Command, NodeId, NodeInfo, Outcome, Raft, Response};

/// Pause before retrying a request that a former leader refused, while the
/// cluster settles on the new one.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// After failing to reach the leader (connection refused, reconnect backoff),
/// wait this long for a new leader before trying again.
const UNREACHABLE_LEADER_PAUSE: Duration = Duration::from_millis(50);

/// Gap between followers' elections after the leader is seen dead (by rank).
const ELECTION_STAGGER: Duration = Duration::from_millis(20);
/// Connection attempts (and the gap between them) that decide whether a
/// leader whose connection closed is still running.
const LEADER_PROBES: u32 = 5;
const LEADER_PROBE_GAP: Duration = Duration::from_millis(10);

/// Elections a follower starts by itself after seeing the leader dead, and
/// the wait for a result after each; then the normal timeouts take over.
const FAST_ELECTION_ROUNDS: u32 = 3;
const FAST_ELECTION_ROUND_WAIT: Duration = Duration::from_millis(80);

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
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: u64,
    pub members: Vec<MemberStatus>,
    pub millis_since_quorum_ack: Option<u64>,
}

type Waiters = Vec<oneshot::Sender<Result<u64, WriteError>>>;

/// Shares one read-index round among all reads that arrived before it began.
/// A read never uses a round that started before it arrived (that round's
/// index could miss a write acknowledged in between).
pub struct ReadCoalescer {
    state: Mutex<(bool, Waiters)>,
}

impl ReadCoalescer {
    fn new() -> Self {
        ReadCoalescer { state: Mutex::new((false, Vec::new())) }
    }
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
    health: Mutex<Membership>,
    /// Peers with a heartbeat in flight (one at a time per peer).
    heartbeats_in_flight: Mutex<std::collections::HashSet<NodeId>>,
    /// Monotonic zero of the millisecond clock the detectors use.
    clock: Instant,
    /// Set while a leader liveness probe runs (one at a time).
    leader_probe: std::sync::atomic::AtomicBool,
    /// Term and last log index when this process started (see `local_read_index`).
    boot: (u64, u64),
    /// Quorum silence after which a leader refuses writes as CLUSTERDOWN.
    quorum_silence_ms: u64,
}

/// The errors of starting a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] rampart_storage::Error),
    #[error("cannot listen for peers on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("invalid raft settings: {0}")]
    Config(String),
    #[error("raft failed to start: {0}")]
    Raft(String),
}

impl RaftNode {
    /// Opens the data dir, starts openraft and the peer listener, and on a
    /// pristine data dir whose node is in `initial_cluster`, bootstraps it.
    pub async fn start(cfg: NodeConfig) -> Result<Arc<RaftNode>, StartError> {
        let store = Arc::new(Store::open_dir(&cfg.data_dir)?);
        let progress = Arc::new(Progress::default());
        let raft_cfg = openraft::Config {
            cluster_name: "rampart".into(),
            heartbeat_interval: cfg.heartbeat_interval_ms,
            election_timeout_min: cfg.election_timeout_ms,
            election_timeout_max: cfg.election_timeout_ms * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: cfg.logs_kept_after_snapshot,
            max_payload_entries: 512,
            install_snapshot_timeout: 5_000,
            // A learner counts as caught up (and may be promoted) once it is
            // within this many entries of the leader.
            replication_lag_threshold: LEARNER_LAG_MAX,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(cfg.peer_addr)
            .await
            .map_err(|e| StartError::Listen { addr: cfg.peer_addr, reason: e.to_string() })?;
        let peers = Peers::new(Some(cfg.peer_addr.ip()), rampart_transport::Config::default());
        let raft = Raft::new(
            cfg.id,
            Arc::new(raft_cfg),
            Network::new(peers.clone()),
            LogStore::new(store.clone(), progress.clone()).map_err(|e| StartError::Raft(e.to_string()))?,
            StateMachineStore::new(store.clone()),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let quorum_silence_ms = (cfg.election_timeout_ms * 4).max(1000);
        // Read from disk: openraft's metrics are not loaded yet at this point.
        let boot = crate::store::boot_state(&store).map_err(|e| StartError::Raft(e.to_string()))?;
        let me = NodeInfo {
            peer_addr: cfg.peer_addr.to_string(),
            resp_addr: cfg.resp_addr.clone(),
            http_addr: cfg.http_addr.clone(),
        };
        let phi = PhiConfig { first_heartbeat_estimate_ms: cfg.peer_heartbeat_ms, ..PhiConfig::default() };
        let health = Membership::new(phi, [], 0).map_err(|e| StartError::Config(e.to_string()))?;
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
            heartbeats_in_flight: Mutex::new(std::collections::HashSet::new()),
            clock: Instant::now(),
            leader_probe: std::sync::atomic::AtomicBool::new(false),
            boot,
            quorum_silence_ms,
            cfg,
        });
        tokio::spawn(rampart_transport::serve(
            listener,
            Arc::new(PeerHandler { node: Arc::downgrade(&node) }),
            rampart_transport::Config::default(),
        ));
        let initialized = node.raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized && node.cfg.initial_cluster.contains_key(&node.id) {
            let members: BTreeMap<NodeId, NodeInfo> = node
                .cfg
                .initial_cluster
                .iter()
                .map(|(id, addr)| (*id, NodeInfo { peer_addr: addr.clone(), ..Default::default() }))
                .collect();
            tracing::info!(?members, "first boot: initializing cluster");
            if let Err(e) = node.raft.initialize(members).await {
                // Another member may have initialized us already; that is fine.
                tracing::info!(error = %e, "initialize skipped");
            }
        } else if !initialized {
            tracing::info!("not in --initial-cluster: waiting to be added as a member");
        }
        tokio::spawn(hello_loop(Arc::downgrade(&node)));
        tokio::spawn(proposer_loop(Arc::downgrade(&node), proposals_rx));
        Ok(node)
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
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
        let _ = self.raft.shutdown().await;
    }

    /// Applies `cmd` through the log, forwarding to the leader if needed.
    pub async fn write(&self, cmd: Command) -> Result<Response, WriteError> {
        let deadline = Instant::now() + self.cfg.request_timeout;
        let mut cmd = Some(cmd);
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let c = cmd.take().expect("command present while retrying a certainly-refused attempt");
            let result = if leader == self.id {
                self.propose(c.clone(), deadline).await
            } else {
                self.forward_write(leader, c.clone(), deadline).await
            };
            match result {
                // Refused before it entered any log: safe to try the new leader.
                Err(ForwardError::NotLeader { .. }) if Instant::now() < deadline => {
                    cmd = Some(c);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(ForwardError::NotLeader { .. }) => return Err(WriteError::TryAgain),
                Err(ForwardError::NoQuorum(m)) => return Err(WriteError::ClusterDown(m)),
                Err(ForwardError::Unknown(m)) => return Err(WriteError::Timeout(m)),
                Err(ForwardError::Rejected(m)) => return Err(WriteError::Rejected(m)),
                Ok(r) => return Ok(r),
            }
        }
    }

    /// Applies pipelined commands in their order: they enter the log in that
    /// order, with one queue insertion each and no waiting in between. If the
    /// leader refuses all of them before proposing any, they are retried on
    /// the new leader; otherwise each gets its own result, and a command
    /// refused after an earlier one was proposed is answered TRYAGAIN rather
    /// than retried (a retry could reorder it behind later commands).
    pub async fn write_many(&self, cmds: Vec<Command>) -> Vec<Result<Response, WriteError>> {
        if cmds.is_empty() {
            return Vec::new();
        }
        if cmds.len() == 1 {
            let cmd = cmds.into_iter().next().expect("one command");
            return vec![self.write(cmd).await];
        }
        let deadline = Instant::now() + self.cfg.request_timeout;
        loop {
            let leader = match self.wait_for_leader(deadline).await {
                Ok(l) => l,
                Err(e) => return cmds.iter().map(|_| Err(e.clone())).collect(),
            };
            let results = if leader == self.id {
                self.propose_many(cmds.clone(), deadline).await
            } else {
                self.forward_many(leader, cmds.clone(), deadline).await
            };
            let none_proposed = results.iter().all(|r| matches!(r, Err(ForwardError::NotLeader { .. })));
            if none_proposed && Instant::now() < deadline {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            return results
                .into_iter()
                .map(|r| match r {
                    Ok(resp) => Ok(resp),
                    Err(ForwardError::NotLeader { .. }) => Err(WriteError::TryAgain),
                    Err(ForwardError::NoQuorum(m)) => Err(WriteError::ClusterDown(m)),
                    Err(ForwardError::Unknown(m)) => Err(WriteError::Timeout(m)),
                    Err(ForwardError::Rejected(m)) => Err(WriteError::Rejected(m)),
                })
                .collect();
        }
    }

    /// Queues every command in order, then waits for all. A command that
    /// cannot be queued stops the rest from being queued (they are refused
    /// as never proposed), so the log order is the pipeline's.
    async fn propose_many(&self, cmds: Vec<Command>, deadline: Instant) -> Vec<Result<Response, ForwardError>> {
        let mut waiting = Vec::with_capacity(cmds.len());
        let mut refused: Option<ForwardError> = None;
        for cmd in cmds {
            if let Some(e) = &refused {
                waiting.push(Err(e.clone()));
                continue;
            }
            let (tx, rx) = oneshot::channel();
            match tokio::time::timeout_at(deadline.into(), self.proposals.send(Proposal { cmd, tx })).await {
                Ok(Ok(())) => waiting.push(Ok(rx)),
                Ok(Err(_)) => {
                    let e = ForwardError::NotLeader { leader: None };
                    waiting.push(Err(e.clone()));
                    refused = Some(e);
                }
                Err(_) => {
                    let e = ForwardError::NoQuorum("proposal queue full until the request timeout".into());
                    waiting.push(Err(e.clone()));
                    refused = Some(e);
                }
            }
        }
        let mut out = Vec::with_capacity(waiting.len());
        for w in waiting {
            out.push(match w {
                Err(e) => Err(e),
                Ok(rx) => match tokio::time::timeout_at(deadline.into(), rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(ForwardError::Unknown("proposer stopped".into())),
                    Err(_) => Err(ForwardError::Unknown("no commit before the request timeout".into())),
                },
            });
        }
        out
    }

    async fn forward_many(
        &self,
        leader: NodeId,
        cmds: Vec<Command>,
        deadline: Instant,
    ) -> Vec<Result<Response, ForwardError>> {
        let n = cmds.len();
        let all = |e: ForwardError| (0..n).map(|_| Err(e.clone())).collect::<Vec<_>>();
        let Some(addr) = self.peer_addr_of(leader) else {
            return all(ForwardError::NotLeader { leader: None });
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match self.peers.call(leader, &addr, &PeerRequest::ForwardMany(cmds), left).await {
            Ok(PeerResponse::ForwardMany(r)) if r.len() == n => r,
            Ok(_) => all(ForwardError::Unknown("leader answered forwarded writes with the wrong message".into())),
            Err(e) if e.certainly_not_delivered() => {
                self.wait_leader_change(leader, deadline.min(Instant::now() + UNREACHABLE_LEADER_PAUSE)).await;
                all(ForwardError::NotLeader { leader: None })
            }
            Err(e) => all(ForwardError::Unknown(e.to_string())),
        }
    }

    /// Waits until some leader is known, or the deadline.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId, WriteError> {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = rx.borrow().current_leader {
                return Ok(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WriteError::TryAgain);
            }
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(WriteError::TryAgain),
                Err(_) => return Err(WriteError::TryAgain),
            }
        }
    }

    /// Proposes on this node. Called on the leader (and by forwarded requests).
    async fn propose(&self, cmd: Command, deadline: Instant) -> Result<Response, ForwardError> {
        let (tx, rx) = oneshot::channel();
        let proposal = Proposal { cmd, tx };
        match tokio::time::timeout_at(deadline.into(), self.proposals.send(proposal)).await {
            Ok(Ok(())) => {}
            // Never queued: certainly not in the log.
            Ok(Err(_)) => return Err(ForwardError::NotLeader { leader: None }),
            Err(_) => return Err(ForwardError::NoQuorum("proposal queue full until the request timeout".into())),
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ForwardError::Unknown("proposer stopped".into())),
            Err(_) => Err(ForwardError::Unknown("no commit before the request timeout".into())),
        }
    }

    /// Checks, before anything is proposed, that this node may propose.
    fn may_propose(&self) -> Result<(), ForwardError> {
        let m = self.raft.metrics().borrow().clone();
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

    async fn forward_write(&self, leader: NodeId, cmd: Command, deadline: Instant) -> Result<Response, ForwardError> {
        let Some(addr) = self.peer_addr_of(leader) else {
            return Err(ForwardError::NotLeader { leader: None });
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match self.peers.call(leader, &addr, &PeerRequest::Forward(cmd), left).await {
            Ok(PeerResponse::Forward(r)) => r,
            Ok(_) => Err(ForwardError::Unknown("leader answered a forwarded write with the wrong message".into())),
            Err(e) if e.certainly_not_delivered() => {
                // The leader is unreachable: give an election a moment, then retry.
                self.wait_leader_change(leader, deadline.min(Instant::now() + UNREACHABLE_LEADER_PAUSE)).await;
                Err(ForwardError::NotLeader { leader: None })
            }
            Err(e) => Err(ForwardError::Unknown(e.to_string())),
        }
    }

    /// Waits (bounded by `deadline`) until the known leader is not `old`.
    async fn wait_leader_change(&self, old: NodeId, deadline: Instant) {
        let mut rx = self.raft.metrics();
        loop {
            if rx.borrow().current_leader != Some(old) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return;
            }
        }
    }

    /// Called when a peer connection closes. If the leader's process is gone
    /// (its peer port refuses connections) a follower starts an election at
    /// once instead of waiting out the election timeout: after `kill -9` of
    /// the leader, the followers see its connections close within
    /// microseconds. If both do so, openraft's vote order (term, node id)
    /// settles it without a split vote. Elections are always safe; this only
    /// makes the next one start sooner.
    async fn check_leader_alive(&self) {
        if self.leader_probe.swap(true, Ordering::AcqRel) {
            return;
        }
        let result = self.probe_leader_once().await;
        self.leader_probe.store(false, Ordering::Release);
        let Some(dead) = result else { return };
        // openraft's followers refuse votes for a lease after the last
        // heartbeat unless they have started an election themselves; among
        // candidates of one term the higher node id wins, and nobody votes
        // for a shorter log. So the followers start in id order, lowest
        // first, ELECTION_STAGGER apart: each one's election releases its
        // lease and the last candidate usually collects the votes at once.
        // If the highest has the shorter log the round deadlocks; a second
        // round (a higher term, lowest id first again) resolves it. Rounds
        // stop as soon as any leader is known.
        let rank = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            m.membership().voter_ids().filter(|id| *id != dead && *id < self.id).count() as u32
        };
        for round in 0..FAST_ELECTION_ROUNDS {
            tokio::time::sleep(ELECTION_STAGGER * rank).await;
            let m = self.raft.metrics().borrow().clone();
            let leaderless = m.current_leader.is_none() || m.current_leader == Some(dead);
            if !leaderless || !matches!(m.state, ServerState::Follower | ServerState::Candidate) {
                return;
            }
            tracing::info!(dead, round, "leader's peer port refuses connections: starting an election");
            let _ = self.raft.trigger().elect().await;
            tokio::time::sleep(FAST_ELECTION_ROUND_WAIT).await;
        }
    }

    /// Some(leader) when this node is a follower and its leader's peer port refuses connections.
    async fn probe_leader_once(&self) -> Option<NodeId> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Follower {
            return None;
        }
        let leader = m.current_leader.filter(|l| *l != self.id)?;
        let addr = crate::network::resolve(&self.peer_addr_of(leader)?).ok()?;
        // A dying process's connections reset a moment before its listening
        // socket closes, so one successful connect proves little: probe a few
        // times before concluding the leader lives.
        for _ in 0..LEADER_PROBES {
            match tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return (self.raft.metrics().borrow().current_leader == Some(leader)).then_some(leader);
                }
                Ok(Ok(_)) => tokio::time::sleep(LEADER_PROBE_GAP).await,
                _ => return None,
            }
        }
        None
    }

    /// Returns once a read on this node's state machine is linearizable.
    pub async fn read_barrier(&self) -> Result<(), ReadError> {
        let deadline = Instant::now() + self.cfg.request_timeout;
        let index = self.coalesced_read_index(deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| WriteError::Timeout(format!("waiting to apply read index {index}: {e}")))?;
        Ok(())
    }

    async fn coalesced_read_index(&self, deadline: Instant) -> Result<u64, ReadError> {
        let (tx, rx) = oneshot::channel();
        let start_round = {
            let mut st = self.reads.state.lock();
            st.1.push(tx);
            !std::mem::replace(&mut st.0, true)
        };
        if start_round {
            // Rounds run in their own task: a caller that goes away (an HTTP
            // client disconnecting) must not strand the readers queued behind it.
            if let Some(me) = self.me.upgrade() {
                tokio::spawn(async move { me.run_read_rounds().await });
            }
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(WriteError::TryAgain),
            Err(_) => Err(WriteError::Timeout("read index not confirmed before the request timeout".into())),
        }
    }

    /// Runs read-index rounds until no reader waits; every waiter gets a
    /// round that began after it arrived.
    async fn run_read_rounds(&self) {
        loop {
            let batch: Waiters = {
                let mut st = self.reads.state.lock();
                if st.1.is_empty() {
                    st.0 = false;
                    return;
                }
                std::mem::take(&mut st.1)
            };
            let deadline = Instant::now() + self.cfg.request_timeout;
            let r = self.read_index_once(deadline).await;
            for w in batch {
                let _ = w.send(r.clone());
            }
        }
    }

    /// One read-index round: locally on the leader, else asked of the leader.
    async fn read_index_once(&self, deadline: Instant) -> Result<u64, ReadError> {
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let r = if leader == self.id {
                self.local_read_index(deadline).await
            } else {
                let Some(addr) = self.peer_addr_of(leader) else { return Err(WriteError::TryAgain) };
                let left = deadline.saturating_duration_since(Instant::now());
                match self.peers.call(leader, &addr, &PeerRequest::ReadIndex, left).await {
                    Ok(PeerResponse::ReadIndex(r)) => r,
                    Ok(_) => Err(ForwardError::Unknown("wrong answer to a read index request".into())),
                    Err(e) if e.certainly_not_delivered() => {
                        self.wait_leader_change(leader, deadline.min(Instant::now() + UNREACHABLE_LEADER_PAUSE)).await;
                        Err(ForwardError::NotLeader { leader: None })
                    }
                    Err(e) => Err(ForwardError::Unknown(e.to_string())),
                }
            };
            match r {
                Ok(i) => return Ok(i),
                Err(ForwardError::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(ForwardError::NotLeader { .. }) => return Err(WriteError::TryAgain),
                Err(ForwardError::NoQuorum(m)) => return Err(WriteError::ClusterDown(m)),
                Err(ForwardError::Unknown(m)) | Err(ForwardError::Rejected(m)) => return Err(WriteError::Timeout(m)),
            }
        }
    }

    async fn local_read_index(&self, deadline: Instant) -> Result<u64, ForwardError> {
        match tokio::time::timeout_at(deadline.into(), self.raft.get_read_log_id()).await {
            Ok(Ok((read, _applied))) => {
                let mut index = read.map_or(0, |l| l.index);
                // openraft resumes leadership after a restart when its durable
                // vote says it was the leader, without a new term or a new
                // blank entry. Its commit index then comes from storage and can
                // be behind entries it had committed and acknowledged before
                // the crash, so its read index would miss them. Every such
                // entry is in our log as it was at boot: while we lead in the
                // boot term, reads wait for that whole log to be applied.
                if self.raft.metrics().borrow().current_term == self.boot.0 {
                    index = index.max(self.boot.1);
                }
                Ok(index)
            }
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ForwardError::NotLeader { leader: f.leader_id })
            }
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(q)))) => {
                Err(ForwardError::NoQuorum(q.to_string()))
            }
            Ok(Err(e)) => Err(ForwardError::Unknown(e.to_string())),
            Err(_) => {
                Err(ForwardError::NoQuorum("leadership not confirmed by a quorum before the request timeout".into()))
            }
        }
    }

    /// Local (possibly stale) state-machine reads.
    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>, rampart_storage::Error> {
        self.store.kv_get(key)
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

    /// Adds a node: as a learner until it has caught up, then as a voter.
    pub async fn add_member(&self, id: NodeId, info: NodeInfo) -> Result<(), String> {
        self.require_leader()?;
        self.infos.write().insert(id, info.clone());
        match tokio::time::timeout(LEARNER_CATCH_UP_TIMEOUT, self.raft.add_learner(id, info, true)).await {
            Ok(r) => r.map_err(|e| format!("adding learner {id}: {e}"))?,
            Err(_) => {
                return Err(format!(
                    "node {id} was added as a learner but did not catch up within {} s; it stays a learner (check that it runs and is reachable at its peer address)",
                    LEARNER_CATCH_UP_TIMEOUT.as_secs()
                ))
            }
        };
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| format!("promoting {id} to voter: {e}"))?;
        Ok(())
    }

    /// Removes a node from the voters and from the cluster.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), String> {
        self.require_leader()?;
        let m = self.raft.metrics().borrow().membership_config.clone();
        if m.membership().get_node(&id).is_none() {
            return Err(format!("node {id} is not a member"));
        }
        let voters: BTreeSet<NodeId> = m.membership().voter_ids().collect();
        if voters.contains(&id) {
            if voters.len() == 1 {
                return Err("cannot remove the last voter".into());
            }
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| format!("removing voter {id}: {e}"))?;
        } else {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| format!("removing learner {id}: {e}"))?;
        }
        Ok(())
    }

    fn require_leader(&self) -> Result<(), String> {
        let m = self.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            Ok(())
        } else {
            Err(match m.current_leader {
                Some(l) => format!("not the leader; send membership changes to node {l}"),
                None => "no leader elected yet, retry shortly".to_string(),
            })
        }
    }

    async fn handle(&self, req: PeerRequest) -> PeerResponse {
        match req {
            PeerRequest::AppendEntries(r) => PeerResponse::AppendEntries(self.raft.append_entries(r).await),
            PeerRequest::Vote(r) => PeerResponse::Vote(self.raft.vote(r).await),
            PeerRequest::InstallSnapshot(r) => PeerResponse::InstallSnapshot(self.raft.install_snapshot(r).await),
            PeerRequest::Forward(cmd) => {
                let deadline = Instant::now() + self.cfg.request_timeout;
                PeerResponse::Forward(self.propose(cmd, deadline).await)
            }
            PeerRequest::ForwardMany(cmds) => {
                if cmds.len() > PIPELINE_COMMANDS_MAX {
                    let e = ForwardError::Rejected(format!("more than {PIPELINE_COMMANDS_MAX} forwarded commands"));
                    return PeerResponse::ForwardMany(cmds.iter().map(|_| Err(e.clone())).collect());
                }
                let deadline = Instant::now() + self.cfg.request_timeout;
                PeerResponse::ForwardMany(self.propose_many(cmds, deadline).await)
            }
            PeerRequest::ReadIndex => {
                let deadline = Instant::now() + self.cfg.request_timeout;
                let m = self.raft.metrics().borrow().clone();
                if m.state != ServerState::Leader {
                    return PeerResponse::ReadIndex(Err(ForwardError::NotLeader { leader: m.current_leader }));
                }
                PeerResponse::ReadIndex(self.local_read_index(deadline).await)
            }
            PeerRequest::Hello { id, info } => {
                let now = self.now_ms();
                {
                    let mut h = self.health.lock();
                    if h.heartbeat(PeerId(id), now).is_err() {
                        // Not (yet) in our table: a member we have not seen in
                        // the membership metrics yet, or a node being added.
                        let _ = h.add_peer(PeerId(id), now);
                        let _ = h.heartbeat(PeerId(id), now);
                    }
                }
                self.infos.write().insert(id, info);
                let me = self.infos.read().get(&self.id).cloned().unwrap_or_default();
                PeerResponse::Hello { id: self.id, info: me }
            }
        }
    }
}

struct PeerHandler {
    node: std::sync::Weak<RaftNode>,
}

impl Handler for PeerHandler {
    fn connection_closed(&self, _remote: std::net::SocketAddr) {
        if let Some(node) = self.node.upgrade() {
            tokio::spawn(async move { node.check_leader_alive().await });
        }
    }

    fn handle(&self, request: Bytes) -> BoxFuture<Result<Bytes, String>> {
        let node = self.node.upgrade();
        Box::pin(async move {
            let Some(node) = node else { return Err("node is shutting down".to_string()) };
            let req: PeerRequest = decode(&request)?;
            let resp = node.handle(req).await;
            encode(&resp)
        })
    }
}

/// A client command waiting to be proposed, and where its result goes.
struct Proposal {
    cmd: Command,
    tx: oneshot::Sender<Result<Response, ForwardError>>,
}

/// Most pipelined commands one connection hands over at once.
pub const PIPELINE_COMMANDS_MAX: usize = 1_024;

/// Proposals queued on one node before callers wait.
pub const PROPOSAL_QUEUE_MAX: usize = 16_384;
/// Most commands folded into one log entry.
pub const BATCH_COMMANDS_MAX: usize = 1_024;
/// Most key and value bytes folded into one log entry (a single larger
/// command still goes alone).
pub const BATCH_BYTES_MAX: usize = 4 << 20;
/// Batch entries proposed and not yet answered. openraft 0.9 appends and
/// fsyncs each proposed entry on its own, so proposals beyond this wait here
/// and join the next batch instead of queueing inside openraft one by one.
pub const BATCHES_IN_FLIGHT_MAX: usize = 4;

fn command_bytes(c: &Command) -> usize {
    match c {
        Command::Set { key, value, .. }
        | Command::Append { key, value }
        | Command::PutIfRevision { key, value, .. } => key.len() + value.len(),
        Command::Cas { key, expected, new } => key.len() + new.len() + expected.as_ref().map_or(0, |e| e.len()),
        Command::MSet { pairs } => pairs.iter().map(|(k, v)| k.len() + v.len()).sum(),
        Command::Del { keys } => keys.iter().map(|k| k.len()).sum(),
        Command::Delete { key } | Command::IncrBy { key, .. } => key.len(),
        Command::Batch(cmds) => cmds.iter().map(command_bytes).sum(),
    }
}

/// Folds queued proposals into log entries: everything waiting when a batch
/// slot frees up goes into one entry, so many writes share one append, one
/// fsync per node and one replication round.
async fn proposer_loop(node: std::sync::Weak<RaftNode>, mut rx: mpsc::Receiver<Proposal>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT_MAX));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        let mut bytes = command_bytes(&batch[0].cmd);
        while batch.len() < BATCH_COMMANDS_MAX && bytes < BATCH_BYTES_MAX {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += command_bytes(&p.cmd);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let Some(n) = node.upgrade() else { return };
        if let Err(e) = n.may_propose() {
            for p in batch {
                let _ = p.tx.send(Err(e.clone()));
            }
            continue;
        }
        let (cmds, txs): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
        let single = cmds.len() == 1;
        let entry = if single { cmds.into_iter().next().expect("one command") } else { Command::Batch(cmds) };
        let waiter = match n.raft.client_write_ff(entry).await {
            Ok(w) => w,
            Err(e) => {
                // The core stopped; whether it took the entry is unknown.
                for tx in txs {
                    let _ = tx.send(Err(ForwardError::Unknown(format!("raft stopped: {e}"))));
                }
                continue;
            }
        };
        let timeout = n.cfg.request_timeout;
        drop(n);
        tokio::spawn(async move {
            let result = tokio::time::timeout(timeout, waiter).await;
            drop(permit);
            let outcomes: Result<(u64, Vec<Outcome>), ForwardError> = match result {
                Ok(Ok(Ok(resp))) => {
                    let rev = resp.data.revision;
                    match resp.data.outcome {
                        Outcome::Batch(outs) if !single => Ok((rev, outs)),
                        other if single => Ok((rev, vec![other])),
                        other => Err(ForwardError::Unknown(format!("unexpected batch result {other:?}"))),
                    }
                }
                // Once proposed, a ForwardToLeader can also come from the entry
                // being truncated by a new leader, and such an entry can still
                // be committed through another node: the outcome is unknown.
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => Err(ForwardError::Unknown(format!(
                    "leadership changed while proposing (new leader: {:?})",
                    f.leader_id
                ))),
                Ok(Ok(Err(e))) => Err(ForwardError::Unknown(e.to_string())),
                Ok(Err(_)) => Err(ForwardError::Unknown("raft dropped the proposal".into())),
                Err(_) => Err(ForwardError::Unknown("no commit before the request timeout".into())),
            };
            match outcomes {
                Ok((revision, outs)) => {
                    for (tx, outcome) in txs.into_iter().zip(outs) {
                        let r = match outcome {
                            Outcome::Rejected(m) => Err(ForwardError::Rejected(m)),
                            outcome => Ok(Response { revision, outcome }),
                        };
                        let _ = tx.send(r);
                    }
                }
                Err(e) => {
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// Every `peer_heartbeat_ms` (default 100 ms): sends a heartbeat (a hello
/// carrying our client addresses) to every member, at most one in flight per
/// peer. Receivers feed their phi-accrual detectors; senders record the round
/// trip and learn the peer's client addresses (for INFO, ROLE and status).
async fn hello_loop(node: std::sync::Weak<RaftNode>) {
    let period = match node.upgrade() {
        Some(n) => Duration::from_millis(n.cfg.peer_heartbeat_ms),
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(n) = node.upgrade() else { return };
        let members: Vec<(NodeId, String)> = {
            let m = n.raft.metrics().borrow().membership_config.clone();
            m.membership()
                .nodes()
                .filter(|(id, _)| **id != n.id)
                .map(|(id, info)| (*id, info.peer_addr.clone()))
                .collect()
        };
        {
            // Track exactly the current members.
            let now = n.now_ms();
            let mut h = n.health.lock();
            let known: Vec<PeerId> = h.snapshot(now).into_iter().map(|p| p.id).collect();
            for p in known {
                if !members.iter().any(|(id, _)| PeerId(*id) == p) {
                    h.remove_peer(p);
                }
            }
            for (id, _) in &members {
                if h.state(PeerId(*id), now).is_err() {
                    let _ = h.add_peer(PeerId(*id), now);
                }
            }
        }
        let me = n.infos.read().get(&n.id).cloned().unwrap_or_default();
        for (id, addr) in members {
            if !n.heartbeats_in_flight.lock().insert(id) {
                continue;
            }
            let n = n.clone();
            let req = PeerRequest::Hello { id: n.id, info: me.clone() };
            tokio::spawn(async move {
                let start = Instant::now();
                if let Ok(PeerResponse::Hello { id: rid, info }) =
                    n.peers.call(id, &addr, &req, Duration::from_secs(1)).await
                {
                    if rid == id {
                        n.infos.write().insert(id, info);
                        let _ = n.health.lock().record_rtt(PeerId(id), start.elapsed().as_millis() as u64);
                    }
                }
                n.heartbeats_in_flight.lock().remove(&id);
            });
        }
    }
}
