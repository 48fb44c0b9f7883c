//! Starting a node: the membership checks, the durable state (registers, counter floor, first-boot
//! marks), the proposer, the peer links and the tasks.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rampart_membership::{Heartbeats, PeerId, PhiConfig};
use rampart_paxos::{Acceptor, NodeId, Proposer, ProposerConfig, RegisterState};
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
    pub async fn start(cfg: MmConfig) -> Result<Arc<MmNode>, StartError> {
        check_membership(&cfg)?;
        let (store, durable) = load_durable(&cfg).await?;
        let Durable { acceptor, initial_counter, seen, initialized, registers_loaded } = durable;
        let proposer = proposer_for(&cfg, initial_counter)?;
        let peers = peer_links(&cfg)?;
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
        let health = Heartbeats::new(phi, cfg.members.keys().filter(|id| **id != cfg.id).map(|id| PeerId(*id)), 0)
            .map_err(|e| StartError::Config(e.to_string()))?;

        let listener = tokio::net::TcpListener::bind(cfg.peer_addr)
            .await
            .map_err(|e| StartError::Listen { addr: cfg.peer_addr, reason: e.to_string() })?;

        let (acceptor_tx, acceptor_rx) = mpsc::channel(ACCEPTOR_QUEUE_MAX);
        let (proposer_tx, proposer_rx) = mpsc::channel(PROPOSER_QUEUE_MAX);
        let infos = initial_infos(&cfg);
        let node = Arc::new(MmNode {
            cfg: cfg.clone(),
            shared: shared.clone(),
            store: store.clone(),
            proposer_tx: proposer_tx.clone(),
            acceptor_tx: acceptor_tx.clone(),
            health: Mutex::new(health),
            infos: RwLock::new(infos),
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
            Arc::new(peer_server::PeerHandler { node: Arc::downgrade(&node) }),
            rampart_transport::Config::default(),
        ));
        tokio::spawn(heartbeat::hello_loop(Arc::downgrade(&node)));
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

/// Opens the data dir and reads the acceptor's registers, the proposer's counter floor and the
/// first-boot marks; anything malformed is a clear start error.
async fn load_durable(cfg: &MmConfig) -> Result<(Arc<Store>, Durable), StartError> {
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

    Ok((store, Durable { acceptor, initial_counter, seen, initialized, registers_loaded }))
}

fn proposer_for(cfg: &MmConfig, initial_counter: u64) -> Result<Proposer, StartError> {
    let me = NodeId(cfg.id);
    let acceptors: Vec<NodeId> = cfg.members.keys().map(|id| NodeId(*id)).collect();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        ^ cfg.id.rotate_left(32);
    let mut pcfg = ProposerConfig::new(me, acceptors, seed);
    pcfg.initial_counter = initial_counter;
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
        peers.insert(*id, Peer::new(sock, source_ip, rampart_transport::Config::default()));
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
