//! The in-process cluster the raft integration tests share: nodes on loopback ports the OS
//! picks, fast election timing, and waits on conditions with a deadline.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_raft::node::{NodeConfig, RaftNode};

/// How long a test waits for a condition before failing.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

pub struct Cluster {
    pub _dirs: Vec<tempfile::TempDir>,
    pub nodes: Vec<Arc<RaftNode>>,
}

/// Starts nodes 1..=n as one cluster.
pub async fn start(n: u64) -> Cluster {
    let addrs: BTreeMap<u64, std::net::SocketAddr> = (1..=n).map(|id| (id, free_addr())).collect();
    let initial: BTreeMap<u64, String> = addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for (id, addr) in &addrs {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NodeConfig {
            id: *id,
            data_dir: dir.path().to_path_buf(),
            peer_addr: *addr,
            resp_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            initial_cluster: initial.clone(),
            heartbeat_interval_ms: 50,
            election_timeout_ms: 300,
            request_timeout: Duration::from_secs(5),
            snapshot_logs_since_last: 10_000,
            logs_kept_after_snapshot: 1000,
            peer_heartbeat_ms: 100,
            limits: rampart_kv::Limits::default(),
            transport: rampart_transport::Config::default(),
            watch_history_revisions: rampart_raft::watch::WATCH_HISTORY_REVISIONS,
        };
        nodes.push(RaftNode::start(cfg).await.unwrap());
        dirs.push(dir);
    }
    Cluster { _dirs: dirs, nodes }
}

/// Polls `cond` until it holds, within [`WAIT`].
pub async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader all of `nodes` agree on.
pub async fn leader(nodes: &[Arc<RaftNode>]) -> Arc<RaftNode> {
    let mut found = None;
    wait_for("a leader all nodes agree on", async || {
        let ids: Vec<_> = nodes.iter().map(|n| n.status().leader_id).collect();
        match ids[0] {
            Some(l) if ids.iter().all(|i| *i == Some(l)) => {
                found = nodes.iter().find(|n| n.id == l).cloned();
                found.is_some()
            }
            _ => false,
        }
    })
    .await;
    found.unwrap()
}

/// True when `key` is in `n`'s applied state (expired or not).
pub fn stored(n: &RaftNode, key: &str) -> bool {
    n.store().kv_get(key.as_bytes()).unwrap().is_some()
}
