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

use crate::proposer_task::ProposerTask;
use crate::*;

/// What a node reads from its data dir at start.
struct Durable {
    acceptor: Acceptor,
    initial_counter: u64,
    seen: std::collections::BTreeSet<u64>,
    initialized: bool,
    registers_loaded: usize,
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
        let Durable { acceptor, initial_counter, seen, initialized, registers_loaded } = durable;
        let proposer = proposer_for(&cfg, initial_counter, clock.1)?;
        let shared = shared_state(&cfg, store.clone(), peer_links(&cfg)?, (seen, initialized), clock);
        let phi = PhiConfig { first_heartbeat_estimate_ms: cfg.peer_heartbeat_ms, ..PhiConfig::default() };
        let health = Heartbeats::new(phi, cfg.members.keys().filter(|id| **id != cfg.id).map(|id| PeerId(*id)), 0)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(cfg.peer_addr)
            .await
            .map_err(|e| StartError::Listen { addr: cfg.peer_addr, reason: e.to_string() })?;

        let (acceptor_tx, acceptor_rx) = mpsc::channel(ACCEPTOR_QUEUE_MAX);
        let (proposer_tx, proposer_rx) = mpsc::channel(PROPOSER_QUEUE_MAX);
        let node = Arc::new(MmNode {
            cfg: cfg.clone(),
            shared,
            store,
            proposer_tx,
            acceptor_tx,
            health: Mutex::new(health),
            infos: RwLock::new(initial_infos(&cfg)),
            first_boot_confirmed: Mutex::new(HashSet::new()),
        });
        spawn_tasks(&node, acceptor, acceptor_rx, proposer, proposer_rx, listener);
        tracing::info!(
            id = cfg.id,
            members = cfg.members.len(),
            registers = registers_loaded,
            counter_floor = initial_counter,
            "multi-master node started"
        );
        Ok(node)
    }
}

/// What the tasks share. A new data dir starts in probation (neither voting nor proposing)
/// unless it is the only member.
fn shared_state(
    cfg: &MmConfig,
    store: Arc<Store>,
    peers: BTreeMap<u64, Peer>,
    (seen, initialized): (std::collections::BTreeSet<u64>, bool),
    (started, unix_ms_at_start): (Instant, u64),
) -> Arc<Shared> {
    Arc::new(Shared {
        id: cfg.id,
        cluster: wire::membership_fingerprint(cfg.members.keys().copied()),
        started,
        unix_ms_at_start,
        peer_limits: validate::PeerLimits::new(&cfg.limits),
        peers_dead: peers.keys().map(|id| (*id, std::sync::atomic::AtomicBool::new(false))).collect(),
        peers,
        // A phase waits 200 ms for a quorum; a reply later than that is of no use.
        peer_call_timeout: Duration::from_millis(1000),
        seen: tokio::sync::Mutex::new(seen),
        probation: std::sync::atomic::AtomicBool::new(!initialized && cfg.members.len() > 1),
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
    acceptor: Acceptor,
    acceptor_rx: mpsc::Receiver<AcceptorJob>,
    proposer: Proposer,
    proposer_rx: mpsc::Receiver<ProposerEvent>,
    listener: tokio::net::TcpListener,
) {
    let shared = &node.shared;
    let acceptor = tokio::spawn(acceptor_task::run(
        acceptor,
        node.store.clone(),
        acceptor_rx,
        node.proposer_tx.downgrade(),
        shared.clone(),
    ));
    watch_task("acceptor", acceptor, shared.clone());
    let task = ProposerTask {
        proposer,
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
}

fn check_membership(cfg: &MmConfig) -> Result<(), StartError> {
    if !cfg.members.contains_key(&cfg.id) {
        return Err(StartError::Config(format!(
            "node {} is not in --initial-cluster; multi-master membership is fixed at bootstrap",
            cfg.id
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
    let registers_loaded = registers.len();
    if let Some((key, state)) = registers.iter().find(|(_, s)| !ceiling.allows(s.promised)) {
        let e = rampart_paxos::Error::AboveCeiling { counter: state.promised.counter, ceiling: ceiling.counter() };
        return Err(corrupt(format!("key {:?}: {e}", String::from_utf8_lossy(key))));
    }
    let acceptor = Acceptor::restore(registers, ceiling).map_err(|e| corrupt(e.to_string()))?;

    Ok((store, Durable { acceptor, initial_counter, seen, initialized, registers_loaded }))
}

/// Reads the proposer's counter floor record: one u64, little-endian.
fn decode_counter_floor(raw: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] =
        raw.try_into().map_err(|_| format!("counter floor record of {} bytes, expected 8", raw.len()))?;
    Ok(u64::from_le_bytes(bytes))
}

fn proposer_for(cfg: &MmConfig, initial_counter: u64, unix_ms_at_start: u64) -> Result<Proposer, StartError> {
    let me = NodeId(cfg.id);
    let acceptors: Vec<NodeId> = cfg.members.keys().map(|id| NodeId(*id)).collect();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        ^ cfg.id.rotate_left(32);
    let mut pcfg = ProposerConfig::new(me, acceptors, seed);
    pcfg.initial_counter = initial_counter;
    pcfg.unix_ms_at_tick_zero = unix_ms_at_start;
    let budget_ms = cfg.request_timeout.as_millis().max(1) as u64;
    pcfg.budget_ticks = budget_ms;
    pcfg.attempts_max = 16;

    Proposer::new(pcfg).map_err(|e| StartError::Config(e.to_string()))
}

/// One transport link per other member; two members at one address are refused.
fn peer_links(cfg: &MmConfig) -> Result<BTreeMap<u64, Peer>, StartError> {
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
        peers.insert(*id, Peer::new(*id, sock, source_ip, cfg.transport.clone()));
    }
    Ok(peers)
}

/// What this node knows of every member's addresses before any heartbeat.
fn initial_infos(cfg: &MmConfig) -> BTreeMap<u64, PeerInfo> {
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
        let outside = check_membership(&config(4, &[1, 2, 3])).unwrap_err().to_string();
        assert!(outside.contains("node 4 is not in --initial-cluster"), "{outside}");
        let all: Vec<u64> = (1..=rampart_paxos::ACCEPTORS_MAX as u64 + 1).collect();
        let big = check_membership(&config(1, &all)).unwrap_err().to_string();
        assert!(big.contains(&format!("at most {} members", rampart_paxos::ACCEPTORS_MAX)), "{big}");
    }

    #[test]
    fn before_any_heartbeat_a_node_knows_its_own_addresses_and_its_peers_peer_addresses() {
        let infos = initial_infos(&config(1, &[1, 2]));
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
        let p = proposer_for(&config(2, &[1, 2, 3]), 5 * rampart_paxos::COUNTER_BLOCK, unix_now_ms()).unwrap();
        assert_eq!(p.counter(), 5 * rampart_paxos::COUNTER_BLOCK);
        assert!(p.voters().is_quorum(&[NodeId(1), NodeId(3)]) && !p.voters().is_quorum(&[NodeId(2)]));
    }
}
