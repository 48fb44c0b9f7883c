//! Starting a node: the membership checks, the durable state (registers, counter floor, first-boot
//! marks), the proposer, the peer links and the tasks.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rampart_membership::{Heartbeats, PeerId, PhiConfig};
use rampart_paxos::{Acceptor, CounterCeiling, NodeId, Proposer, ProposerConfig, RegisterState};
use rampart_storage::Store;
use rampart_transport::Peer;
use tokio::sync::{mpsc, Notify};

use crate::acceptor_task::{
    Job, RegisterCache, COLLECTED_FLOOR_META_KEY, COMMIT_SEQ_META_KEY, GENERATION_META_KEY, PEER_SEQS_META_KEY,
};
use crate::config::{ClusterConfig, CONFIG_META_KEY};
use crate::proposer_task::ProposerTask;
use crate::*;
use rampart_storage::Durability;

/// What a node reads from its data dir at start.
struct Durable {
    acceptor: Acceptor,
    cache: RegisterCache,
    commit_seq: u64,
    peer_seqs: BTreeMap<NodeId, u64>,
    initial_counter: u64,
    seen: std::collections::BTreeSet<u64>,
    initialized: bool,
    registers_loaded: usize,
    /// The configuration adopted last, and the generation this node is a member at.
    config: Option<ClusterConfig>,
    generation: Option<u32>,
    join_nonce: u64,
}

/// Meta key of this data dir's join nonce.
pub const JOIN_NONCE_META_KEY: &str = "mm_join_nonce";

/// Where a node stands at start, from its data dir and flags: the configuration, its role,
/// whether it runs the first-boot check, and the cluster id it sends (0: not known yet).
fn initial_standing(cfg: &MmConfig, d: &Durable) -> (ClusterConfig, Role, bool, u64) {
    let bootstrap = ClusterConfig::bootstrap(cfg.members.iter().map(|(id, a)| (*id, a.clone())));
    match &d.config {
        Some(c) => {
            let generation = d.generation.or(d.initialized.then_some(0));
            let role = crate::config::role_in(c, cfg.id, generation, d.join_nonce);
            (c.clone(), role, false, c.cluster_id)
        }
        // A data dir that voted before configurations were recorded: the bootstrap one.
        None if d.initialized => {
            let cluster = bootstrap.cluster_id;
            (bootstrap, Role::Member { generation: 0 }, false, cluster)
        }
        None if cfg.members.contains_key(&cfg.id) => {
            // A bootstrap member with a new data dir: the first-boot check decides.
            let cluster = bootstrap.cluster_id;
            let probation = cfg.members.len() > 1;
            (bootstrap, Role::Member { generation: 0 }, probation, cluster)
        }
        None => {
            let reason = format!(
                "node {} is not a member yet: it waits to be added (`rampart cluster add {} PEER_ADDR ...` on a \
                 member)",
                cfg.id, cfg.id
            );
            (bootstrap, Role::Joining { reason }, false, 0)
        }
    }
}

impl MmNode {
    /// Starts a node: checks the membership, restores the durable state, binds the peer
    /// listener, then runs the acceptor, proposer, peer server and heartbeat tasks. Any
    /// malformed setting or record is a [`StartError`] that names it.
    pub async fn start(cfg: MmConfig) -> Result<Arc<MmNode>, StartError> {
        check_membership(&cfg)?;
        // One clock for the ballot ceiling of the acceptor and the proposer: the wall clock
        // now, then monotonic time since (`Shared::ballot_ceiling`).
        let clock = (Instant::now(), unix_now_ms());
        let (store, durable) = load_durable(&cfg, CounterCeiling::at_unix_ms(clock.1)).await?;
        let (config, role, probation, cluster) = initial_standing(&cfg, &durable);
        if let Role::Joining { reason } | Role::Removed { reason } = &role {
            tracing::warn!(%reason, "this node does not vote");
        }
        let generation = match role {
            Role::Member { generation } => generation,
            _ => 0,
        };
        let (proposer, template) = proposer_for(&cfg, &config, generation, durable.initial_counter, clock.1)?;
        let links = peer_links(&cfg, &config)?;
        let Durable {
            acceptor, cache, initial_counter, seen, registers_loaded, join_nonce, commit_seq, peer_seqs, ..
        } = durable;
        let fresh = durable.config.is_none() && !durable.initialized && registers_loaded == 0;
        let standing =
            Standing { config: config.clone(), role, probation, cluster, join_nonce, commit_seq, peer_seqs, fresh };
        let shared = shared_state(&cfg, store.clone(), links, seen, standing, clock);
        let phi = PhiConfig { first_heartbeat_estimate_ms: cfg.peer_heartbeat_ms, ..PhiConfig::default() };
        let peer_ids = config.everyone().into_iter().filter(|m| m.id != cfg.id).map(|m| PeerId(m.id));
        let health = Heartbeats::new(phi, peer_ids, 0).map_err(|e| StartError::Config(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(cfg.peer_addr)
            .await
            .map_err(|e| StartError::Listen { addr: cfg.peer_addr, reason: e.to_string() })?;

        let (acceptor_tx, acceptor_rx) = mpsc::channel(ACCEPTOR_QUEUE_MAX);
        let (proposer_tx, proposer_rx) = mpsc::channel(PROPOSER_QUEUE_MAX);
        let node = Arc::new_cyclic(|me| MmNode {
            me: me.clone(),
            cfg: cfg.clone(),
            shared,
            store,
            proposer_tx,
            acceptor_tx,
            health: Mutex::new(health),
            infos: RwLock::new(initial_infos(&cfg, &config)),
            first_boot_confirmed: Mutex::new(HashSet::new()),
            reconfig_lock: tokio::sync::Mutex::new(()),
        });
        spawn_tasks(&node, (acceptor, cache), acceptor_rx, (proposer, template, config.epoch), proposer_rx, listener);
        tracing::info!(
            id = cfg.id,
            epoch = config.epoch,
            members = config.everyone().len(),
            registers = registers_loaded,
            counter_floor = initial_counter,
            "multi-master node started"
        );
        Ok(node)
    }
}

/// Where a node stands at start (see [`initial_standing`]).
struct Standing {
    config: ClusterConfig,
    role: Role,
    probation: bool,
    cluster: u64,
    join_nonce: u64,
    commit_seq: u64,
    peer_seqs: BTreeMap<NodeId, u64>,
    fresh: bool,
}

/// What the tasks share. A new data dir of a bootstrap member starts in probation (neither
/// voting nor proposing) unless it is the only member.
fn shared_state(
    cfg: &MmConfig,
    store: Arc<Store>,
    peers: BTreeMap<u64, Peer>,
    seen: std::collections::BTreeSet<u64>,
    standing: Standing,
    (started, unix_ms_at_start): (Instant, u64),
) -> Arc<Shared> {
    let Standing { config, role, probation, cluster, join_nonce, commit_seq, peer_seqs, fresh } = standing;
    // A data dir that voted before checks, at every restart, that it is not an old copy.
    let restart_check = !probation && matches!(role, Role::Member { .. }) && config.voters().all().len() > 1;
    Arc::new(Shared {
        id: cfg.id,
        cluster: std::sync::atomic::AtomicU64::new(cluster),
        proposer_epoch: std::sync::atomic::AtomicU64::new(0),
        config: RwLock::new(config),
        role: RwLock::new(role),
        join_nonce,
        commit_seq: std::sync::atomic::AtomicU64::new(commit_seq),
        peer_seqs: Mutex::new(peer_seqs),
        peer_seqs_dirty: std::sync::atomic::AtomicBool::new(false),
        restart_check: std::sync::atomic::AtomicBool::new(restart_check),
        restart_confirmed: Mutex::new(HashSet::new()),
        restart_since: Mutex::new(Instant::now()),
        coordinating: Mutex::new(None),
        change_seen: Mutex::new(None),
        floor: Mutex::new(rampart_paxos::Ballot::ZERO),
        distrusted: Mutex::new(None),
        fresh: std::sync::atomic::AtomicBool::new(fresh),
        started,
        unix_ms_at_start,
        peer_limits: validate::PeerLimits::new(&cfg.limits),
        peers_dead: RwLock::new(Default::default()),
        peers: RwLock::new(peers),
        // A phase waits 200 ms for a quorum; a reply later than that is of no use.
        peer_call_timeout: Duration::from_millis(1000),
        seen: tokio::sync::Mutex::new(seen),
        probation: std::sync::atomic::AtomicBool::new(probation),
        store,
        stats: Stats::default(),
        fatal: Mutex::new(None),
        fatal_notify: Notify::new(),
        expiry_clock_offset_ms: Arc::new(std::sync::atomic::AtomicI64::new(0)),
    })
}

/// The acceptor and proposer tasks (watched: if one ends, the node stops), the peer server and
/// the heartbeats and the expirer. The last three hold the node weakly, so dropping it stops them.
fn spawn_tasks(
    node: &Arc<MmNode>,
    (acceptor, cache): (Acceptor, RegisterCache),
    acceptor_rx: mpsc::Receiver<Job>,
    (proposer, template, epoch): (Proposer, ProposerConfig, u64),
    proposer_rx: mpsc::Receiver<ProposerEvent>,
    listener: tokio::net::TcpListener,
) {
    let shared = &node.shared;
    let (adopted_tx, adopted_rx) = tokio::sync::watch::channel(shared.config.read().clone());
    let acceptor = tokio::spawn(acceptor_task::run(
        acceptor,
        node.store.clone(),
        acceptor_rx,
        node.proposer_tx.downgrade(),
        shared.clone(),
        adopted_tx,
        cache,
    ));
    watch_task("acceptor", acceptor, shared.clone());
    tokio::spawn(crate::reconfig::follow_config(Arc::downgrade(node), adopted_rx));
    let task = ProposerTask {
        proposer,
        template,
        epoch,
        links: Default::default(),
        store: node.store.clone(),
        shared: shared.clone(),
        rx: proposer_rx,
        tx: node.proposer_tx.downgrade(),
        acceptor_tx: node.acceptor_tx.clone(),
    };
    watch_task("proposer", tokio::spawn(task.run()), shared.clone());
    tokio::spawn(rampart_transport::serve(
        listener,
        Arc::new(peer_server::PeerHandler { node: Arc::downgrade(node) }),
        node.cfg.transport.clone(),
    ));
    tokio::spawn(heartbeat::hello_loop(Arc::downgrade(node)));
    tokio::spawn(crate::expirer::expirer_loop(Arc::downgrade(node)));
    tokio::spawn(crate::collector::collector_loop(Arc::downgrade(node)));
    tokio::spawn(crate::reconfig::joint_watchdog(Arc::downgrade(node)));
}

/// The shortest tombstone grace a node takes: a tombstone must not be collected while the
/// change that wrote it (or one that raced it) may still retry, since a retry that finds no
/// register cannot tell its own effect is already in (docs/paxos.md, "Tombstones and their
/// collection"). A change lives at most `request_timeout`; a reply is late by at most the peer
/// timeout (1 s).
pub fn tombstone_grace_min(request_timeout: Duration) -> Duration {
    request_timeout * 2 + Duration::from_secs(1)
}

fn check_membership(cfg: &MmConfig) -> Result<(), StartError> {
    let min = tombstone_grace_min(cfg.request_timeout);
    if cfg.tombstone_grace < min {
        return Err(StartError::Config(format!(
            "the tombstone grace ({} ms) must be at least twice the request timeout plus 1 s ({} ms): a tombstone \
             collected while the write that made it may still retry could let that write apply twice",
            cfg.tombstone_grace.as_millis(),
            min.as_millis()
        )));
    }
    if let Some(id) = cfg.members.keys().chain([&cfg.id]).find(|id| **id == 0 || **id > crate::config::MEMBER_ID_MAX) {
        return Err(StartError::Config(format!(
            "member id {id} is not within 1..={} (multi-master ids fit in 32 bits)",
            crate::config::MEMBER_ID_MAX
        )));
    }
    if cfg.members.len() > rampart_paxos::ACCEPTORS_MAX {
        return Err(StartError::Config(format!("at most {} members", rampart_paxos::ACCEPTORS_MAX)));
    }
    Ok(())
}

/// Milliseconds since 1970 by the wall clock (0 if it reads earlier).
fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Opens the data dir and reads the acceptor's registers, the proposer's counter floor and the
/// first-boot marks; anything malformed is a clear start error, and so is a register or floor
/// above the ballot `ceiling` (left by a forged message before ballots were bounded: serving it
/// would answer "ballot counter exhausted" forever).
async fn load_durable(cfg: &MmConfig, ceiling: CounterCeiling) -> Result<(Arc<Store>, Durable), StartError> {
    let dir = cfg.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open_dir(&dir))
        .await
        .map_err(|e| StartError::Config(e.to_string()))??;
    let store = Arc::new(store);
    let path = store.path().display().to_string();
    let corrupt = |reason: String| StartError::Corrupt { path: path.clone(), reason };

    // The acceptor's durable registers and the proposer's counter floor.
    let cached_max = cfg.registers_cached_max.max(1);
    let loaded = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            // Every register is checked; only the first REGISTERS_CACHED_MAX are kept in memory
            // (the acceptor reads the others back when a request names them).
            let mut registers: Vec<(Vec<u8>, RegisterState)> = Vec::new();
            let mut total: u64 = 0;
            let mut bad: Option<String> = None;
            let mut bytes = 0usize;
            store.read(|v| {
                v.register_for_each(|k, raw| {
                    match wire::decode_register(raw) {
                        Ok(s) if bad.is_none() => {
                            if let Err(e) = rampart_paxos::check_register(&s, ceiling) {
                                bad = Some(format!("key {:?}: {e}", String::from_utf8_lossy(k)));
                            }
                            total += 1;
                            if registers.len() < cached_max && bytes < crate::acceptor_task::REGISTERS_CACHED_BYTES_MAX
                            {
                                bytes += crate::acceptor_task::register_bytes(k, Some(&s));
                                registers.push((k.to_vec(), s));
                            }
                        }
                        Ok(_) => {}
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
            let config = store.meta_get(CONFIG_META_KEY)?;
            let collected_floor = store.meta_get(COLLECTED_FLOOR_META_KEY)?;
            let seqs = (store.meta_get(COMMIT_SEQ_META_KEY)?, store.meta_get(PEER_SEQS_META_KEY)?);
            let generation = store.meta_get(GENERATION_META_KEY)?;
            let nonce = match store.meta_get(JOIN_NONCE_META_KEY)? {
                Some(n) => n,
                None => {
                    // Made once per data dir, durable before anyone can learn it.
                    let n = new_join_nonce().to_le_bytes().to_vec();
                    store.write(Durability::Immediate, |b| b.meta_put(JOIN_NONCE_META_KEY, &n))?;
                    n
                }
            };
            let meta = (config, generation, nonce, collected_floor, seqs);
            Ok::<_, rampart_storage::Error>(((registers, total), bad, floor, seen, initialized, meta))
        })
        .await
        .map_err(|e| StartError::Config(e.to_string()))??
    };
    let ((registers, registers_total), bad, floor, seen_raw, initialized, meta) = loaded;
    let (config_raw, generation_raw, nonce_raw, collected_raw, (seq_raw, peer_seqs_raw)) = meta;
    let commit_seq = seq_raw
        .map(|raw| decode_counter_floor(&raw).map_err(|e| corrupt(format!("{COMMIT_SEQ_META_KEY}: {e}"))))
        .transpose()?
        .unwrap_or(0);
    let peer_seqs = peer_seqs_raw
        .map(|raw| decode_peer_seqs(&raw).map_err(|e| corrupt(format!("{PEER_SEQS_META_KEY}: {e}"))))
        .transpose()?
        .unwrap_or_default();
    let collected_floor = collected_raw
        .map(|raw| wire::decode_ballot(&raw).map_err(|e| corrupt(format!("{COLLECTED_FLOOR_META_KEY}: {e}"))))
        .transpose()?
        .unwrap_or(rampart_paxos::Ballot::ZERO);
    let config = config_raw
        .map(|raw| ClusterConfig::decode(&raw).map_err(|e| corrupt(format!("{CONFIG_META_KEY}: {e}"))))
        .transpose()?;
    let generation = generation_raw
        .map(|raw| {
            <[u8; 4]>::try_from(raw.as_slice())
                .map(u32::from_le_bytes)
                .map_err(|_| corrupt(format!("{GENERATION_META_KEY}: {} bytes, expected 4", raw.len())))
        })
        .transpose()?;
    let join_nonce = <[u8; 8]>::try_from(nonce_raw.as_slice())
        .map(u64::from_le_bytes)
        .map_err(|_| corrupt(format!("{JOIN_NONCE_META_KEY}: {} bytes, expected 8", nonce_raw.len())))?;
    let seen = match seen_raw {
        None => Default::default(),
        Some(b) => first_boot::decode_seen(&b).map_err(corrupt)?,
    };
    // A data dir that has registers but no first-boot mark predates the check: it voted.
    let initialized = initialized || !registers.is_empty() || floor.is_some();
    if let Some(reason) = bad {
        return Err(corrupt(reason));
    }
    let initial_counter = match floor {
        None => 0,
        Some(b) => decode_counter_floor(&b).map_err(corrupt)?,
    };
    rampart_paxos::counter_floor_allowed(initial_counter, ceiling)
        .map_err(|e| corrupt(format!("the proposer's counter floor ({COUNTER_FLOOR_META_KEY}): {e}")))?;
    let cache = RegisterCache::new(
        cfg.registers_cached_max,
        crate::acceptor_task::REGISTERS_CACHED_BYTES_MAX,
        registers.iter().map(|(k, s)| (k.clone(), crate::acceptor_task::register_bytes(k, Some(s)))),
        registers_total,
    );
    let registers_loaded = registers_total as usize;
    let acceptor = Acceptor::restore(registers, ceiling)
        .and_then(|a| a.with_floor(collected_floor, ceiling))
        .map_err(|e| corrupt(e.to_string()))?;

    Ok((
        store,
        Durable {
            acceptor,
            cache,
            commit_seq,
            peer_seqs,
            initial_counter,
            seen,
            initialized,
            registers_loaded,
            config,
            generation,
            join_nonce,
        },
    ))
}

/// The seen-sequences record: pairs of u64 (voter id, sequence), little-endian.
pub(crate) fn encode_peer_seqs(seqs: &BTreeMap<NodeId, u64>) -> Vec<u8> {
    seqs.iter().flat_map(|(v, s)| v.0.to_le_bytes().into_iter().chain(s.to_le_bytes())).collect()
}

fn decode_peer_seqs(raw: &[u8]) -> Result<BTreeMap<NodeId, u64>, String> {
    if !raw.len().is_multiple_of(16) {
        return Err(format!("{} bytes is not a list of (voter, sequence) pairs", raw.len()));
    }
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    Ok(raw.chunks_exact(16).map(|c| (NodeId(word(&c[..8])), word(&c[8..]))).collect())
}

/// Reads the proposer's counter floor record: one u64, little-endian.
fn decode_counter_floor(raw: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] =
        raw.try_into().map_err(|_| format!("counter floor record of {} bytes, expected 8", raw.len()))?;
    Ok(u64::from_le_bytes(bytes))
}

/// A random, non-zero join nonce (from the clock and the process: it only has to differ from
/// any earlier data dir's of the same node id).
fn new_join_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// The proposer, at this node's voter id, with the configuration's voters; and the settings it
/// was built from (kept to build it anew when the node's voter id changes).
fn proposer_for(
    cfg: &MmConfig,
    config: &ClusterConfig,
    generation: u32,
    initial_counter: u64,
    unix_ms_at_start: u64,
) -> Result<(Proposer, ProposerConfig), StartError> {
    let me = crate::config::voter_id(cfg.id, generation);
    let acceptors: Vec<NodeId> = config.members.iter().map(|m| m.voter()).collect();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        ^ cfg.id.rotate_left(32);
    let mut pcfg = ProposerConfig::new(me, acceptors, seed);
    pcfg.initial_counter = initial_counter;
    pcfg.unix_ms_at_tick_zero = unix_ms_at_start;
    let budget_ms = cfg.request_timeout.as_millis().max(1) as u64;
    pcfg.budget_ticks = budget_ms;
    pcfg.attempts_max = 16;
    let mut proposer = Proposer::new(pcfg.clone()).map_err(|e| StartError::Config(e.to_string()))?;
    if config.is_joint() {
        proposer.set_voters(0, config.voters()).map_err(|e| StartError::Config(e.to_string()))?;
    }
    Ok((proposer, pcfg))
}

/// One transport link per other member of the configuration; two members at one address are
/// refused.
fn peer_links(cfg: &MmConfig, config: &ClusterConfig) -> Result<BTreeMap<u64, Peer>, StartError> {
    let source_ip = Some(cfg.peer_addr.ip());
    let mut peers = BTreeMap::new();
    let mut addresses: BTreeMap<SocketAddr, u64> = BTreeMap::new();
    addresses.insert(cfg.peer_addr, cfg.id);
    for m in config.everyone() {
        let (id, addr) = (&m.id, &m.peer_addr);
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
        peers.insert(*id, Peer::new(*id, sock, source_ip, cfg.transport.clone()));
    }
    Ok(peers)
}

/// What this node knows of every member's addresses before any heartbeat.
fn initial_infos(cfg: &MmConfig, config: &ClusterConfig) -> BTreeMap<u64, PeerInfo> {
    let mut infos = BTreeMap::new();
    infos.insert(
        cfg.id,
        PeerInfo {
            peer_addr: cfg.peer_addr.to_string(),
            resp_addr: cfg.resp_addr.clone(),
            http_addr: cfg.http_addr.clone(),
        },
    );
    for m in config.everyone() {
        infos.entry(m.id).or_insert_with(|| PeerInfo { peer_addr: m.peer_addr.clone(), ..PeerInfo::default() });
    }
    infos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: u64, members: &[u64]) -> MmConfig {
        MmConfig {
            id,
            data_dir: "unused".into(),
            peer_addr: "127.0.0.1:7001".parse().unwrap(),
            resp_addr: "127.0.0.1:6379".into(),
            http_addr: "127.0.0.1:8080".into(),
            members: members.iter().map(|m| (*m, format!("127.0.0.1:{}", 7000 + m))).collect(),
            request_timeout: Duration::from_millis(1500),
            peer_heartbeat_ms: 100,
            tombstone_grace: Duration::from_secs(60),
            registers_cached_max: 1000,
            limits: rampart_kv::Limits::default(),
            transport: rampart_transport::Config::default(),
        }
    }

    #[test]
    fn the_counter_floor_record_is_one_u64_or_corrupt() {
        assert_eq!(decode_counter_floor(&42u64.to_le_bytes()), Ok(42));
        assert_eq!(decode_counter_floor(&[1; 7]), Err("counter floor record of 7 bytes, expected 8".into()));
        assert!(decode_counter_floor(&[]).is_err());
    }

    #[test]
    fn a_node_must_be_a_member_and_the_membership_bounded() {
        assert!(check_membership(&config(1, &[1, 2, 3])).is_ok());
        assert!(check_membership(&config(4, &[1, 2, 3])).is_ok(), "a node outside it waits to be added");
        let wide = check_membership(&config(1 << 32, &[1, 2, 3])).unwrap_err().to_string();
        assert!(wide.contains("is not within 1..="), "{wide}");
        let all: Vec<u64> = (1..=rampart_paxos::ACCEPTORS_MAX as u64 + 1).collect();
        let big = check_membership(&config(1, &all)).unwrap_err().to_string();
        assert!(big.contains(&format!("at most {} members", rampart_paxos::ACCEPTORS_MAX)), "{big}");
    }

    #[test]
    fn before_any_heartbeat_a_node_knows_its_own_addresses_and_its_peers_peer_addresses() {
        let c = config(1, &[1, 2]);
        let infos = initial_infos(&c, &ClusterConfig::bootstrap(c.members.clone()));
        assert_eq!(
            infos[&1],
            PeerInfo {
                peer_addr: "127.0.0.1:7001".into(),
                resp_addr: "127.0.0.1:6379".into(),
                http_addr: "127.0.0.1:8080".into()
            }
        );
        assert_eq!(infos[&2], PeerInfo { peer_addr: "127.0.0.1:7002".into(), ..PeerInfo::default() });
    }

    #[test]
    fn the_proposer_resumes_at_the_durable_floor_with_a_majority_quorum() {
        let c = config(2, &[1, 2, 3]);
        let cluster = ClusterConfig::bootstrap(c.members.clone());
        let (p, _) = proposer_for(&c, &cluster, 0, 5 * rampart_paxos::COUNTER_BLOCK, unix_now_ms()).unwrap();
        assert_eq!(p.counter(), 5 * rampart_paxos::COUNTER_BLOCK);
        assert!(p.voters().is_quorum(&[NodeId(1), NodeId(3)]) && !p.voters().is_quorum(&[NodeId(2)]));
    }
}
