//! `rampart server`: composes one node from the library crates. This is the one place that
//! chooses a replication mode: it starts a `RaftNode` or an `MmNode` and hands it, as a
//! `rampart_kv::Replica`, to the client APIs of `rampart-server`.

use std::sync::Arc;

use anyhow::Context;
use rampart_kv::{Limits, Replica};
use rampart_mm::{MmConfig, MmNode};
use rampart_raft::node::{NodeConfig, RaftNode};
use rampart_server::ServerConfig;

use crate::server_config::{NodeSettings, Replication, ServerArgs};

/// File in the data directory naming the replication mode that created it. The two modes keep
/// different state, so a directory never changes mode.
pub const MODE_FILE_NAME: &str = "replication-mode";

/// Parses the settings and runs the node until SIGTERM or Ctrl-C.
pub fn run_blocking(args: ServerArgs) -> anyhow::Result<()> {
    let settings = args.resolve()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rampart")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run(settings))
}

fn server_config(s: &NodeSettings) -> anyhow::Result<ServerConfig> {
    let tls = match &s.client_tls {
        None => None,
        Some((cert, key)) => Some(
            rampart_tls::load_server_config(cert, key).with_context(|| format!("client TLS ({})", cert.display()))?,
        ),
    };
    Ok(ServerConfig {
        resp_addr: s.resp_addr,
        http_addr: s.http_addr,
        request_timeout: s.request_timeout,
        resp_connections_max: s.resp_connections_max,
        http_connections_max: s.http_connections_max,
        client_header_timeout: s.client_header_timeout,
        client_idle_timeout: s.client_idle_timeout,
        scan_jobs_max: s.scan_jobs_max,
        tls,
        acl: rampart_server::acl::AclConfig {
            bootstrap_password: s.admin_password.clone(),
            protected_mode: s.protected_mode,
            password_checks_max: s.password_checks_max,
            refresh_interval: std::time::Duration::from_millis(s.acl_refresh_ms),
        },
        // Off at start, as in Redis; `CONFIG SET notify-keyspace-events` turns it on.
        notify_keyspace_events: rampart_server::pubsub::NotifyFlags(0),
    })
}

/// The peer transport of the node: its connection cap and, when configured, peer TLS. The
/// node's own certificate must name this node's id, so a node started with another node's
/// certificate fails here rather than being refused by every peer.
fn peer_transport(s: &NodeSettings) -> anyhow::Result<rampart_transport::Config> {
    if let Some(warning) = plaintext_peer_warning(s) {
        tracing::warn!(peer = %s.peer_addr, "{warning}");
    }
    let tls = match &s.peer_tls {
        None => None,
        Some(f) => {
            let tls = rampart_transport::PeerTls::from_files(&f.ca, &f.cert, &f.key)
                .with_context(|| format!("peer TLS ({})", f.cert.display()))?;
            if tls.node_id() != s.id {
                anyhow::bail!(
                    "peer TLS: the certificate {} names node {} but this node's id is {}",
                    f.cert.display(),
                    tls.node_id(),
                    s.id
                );
            }
            Some(Arc::new(tls))
        }
    };
    Ok(rampart_transport::Config { tls, inbound_connections_max: s.peer_connections_max, ..Default::default() })
}

/// The loud start-up warning of a node that listens for peers in plaintext on an address
/// other nodes can reach (anything but loopback, `0.0.0.0` included).
fn plaintext_peer_warning(s: &NodeSettings) -> Option<&'static str> {
    (s.peer_tls.is_none() && !s.peer_addr.ip().is_loopback()).then_some(
        "PEER TLS IS OFF on a peer address that is not loopback: anyone who can reach it can send this \
         node Raft or Paxos messages as any member. Start every node with --peer-tls-ca, --peer-tls-cert \
         and --peer-tls-key (`rampart certs` makes a dev set)",
    )
}

fn limits(s: &NodeSettings) -> Limits {
    Limits {
        key_bytes_max: s.key_bytes_max,
        value_bytes_max: s.value_bytes_max,
        reply_bytes_max: s.reply_bytes_max,
        ..Limits::default()
    }
}

/// Starts the node and its listeners; returns on SIGTERM or Ctrl-C, or with an error when
/// replication stops on a fatal error.
pub async fn run(s: NodeSettings) -> anyhow::Result<()> {
    let cfg = server_config(&s)?;
    let transport = peer_transport(&s)?;
    let listeners = rampart_server::bind(&cfg).await?;
    check_mode(&s)?;
    let replica: Arc<dyn Replica> = match s.replication {
        Replication::Leader => start_leader(&s, transport).await?,
        Replication::MultiMaster => start_multi_master(&s, transport).await?,
    };
    warn_if_exposed(&s);
    rampart_server::serve(listeners, replica.clone(), cfg);
    tracing::info!(
        id = s.id,
        replication = ?s.replication,
        peer = %s.peer_addr,
        peer_tls = s.peer_tls.is_some(),
        resp = %s.resp_addr,
        http = %s.http_addr,
        data_dir = %s.data_dir.display(),
        "node started"
    );
    tokio::select! {
        _ = rampart_server::wait_for_signal() => {}
        reason = replica.wait_fatal() => {
            tracing::error!(%reason, "replication stopped on a fatal error; exiting");
            anyhow::bail!("replication stopped on a fatal error: {reason}");
        }
    }
    tracing::info!("shutting down");
    replica.shutdown().await;
    Ok(())
}

/// A node open to other hosts without a password says so at start.
fn warn_if_exposed(s: &NodeSettings) {
    let exposed = |a: &std::net::SocketAddr| !a.ip().is_loopback();
    if s.admin_password.is_none() && (exposed(&s.resp_addr) || exposed(&s.http_addr)) {
        if s.protected_mode {
            tracing::warn!(
                "client listeners are reachable from other hosts but no --admin-password is set: protected mode \
                 serves loopback clients only until the default user has a password"
            );
        } else {
            tracing::warn!(
                "client listeners are reachable from other hosts, protected mode is off and no --admin-password is \
                 set: unless `ACL SETUSER default` set a password, anyone who can reach this node can read and \
                 change everything"
            );
        }
    }
}

async fn start_leader(s: &NodeSettings, transport: rampart_transport::Config) -> anyhow::Result<Arc<dyn Replica>> {
    let node = RaftNode::start(NodeConfig {
        id: s.id,
        data_dir: s.data_dir.clone(),
        peer_addr: s.peer_addr,
        resp_addr: s.resp_addr.to_string(),
        http_addr: s.http_addr.to_string(),
        initial_cluster: s.initial_cluster.clone(),
        heartbeat_interval_ms: s.heartbeat_interval_ms,
        election_timeout_ms: s.election_timeout_ms,
        request_timeout: s.request_timeout,
        snapshot_logs_since_last: s.snapshot_logs,
        // Keep a quarter of a snapshot interval of log behind each snapshot so a briefly
        // lagging follower catches up from the log, not a snapshot.
        logs_kept_after_snapshot: s.snapshot_logs / 4,
        peer_heartbeat_ms: s.peer_heartbeat_ms,
        limits: limits(s),
        transport,
        watch_history_revisions: s.watch_history_revisions,
    })
    .await?;
    Ok(node)
}

async fn start_multi_master(
    s: &NodeSettings,
    transport: rampart_transport::Config,
) -> anyhow::Result<Arc<dyn Replica>> {
    let node = MmNode::start(MmConfig {
        id: s.id,
        data_dir: s.data_dir.clone(),
        peer_addr: s.peer_addr,
        resp_addr: s.resp_addr.to_string(),
        http_addr: s.http_addr.to_string(),
        members: s.initial_cluster.clone(),
        request_timeout: s.request_timeout,
        peer_heartbeat_ms: s.peer_heartbeat_ms,
        tombstone_grace: s.tombstone_grace,
        registers_cached_max: rampart_mm::ACCEPTOR_REGISTERS_CACHED_MAX,
        limits: limits(s),
        transport,
    })
    .await?;
    // A new data dir votes only once every member confirmed it never saw this node id
    // (docs/design.md); clients wait in the listen backlog meanwhile.
    node.wait_first_boot().await.map_err(|e| anyhow::anyhow!("replication stopped on a fatal error: {e}"))?;
    Ok(node)
}

/// Records the mode in a new data directory, or refuses a directory made by the other mode.
fn check_mode(s: &NodeSettings) -> anyhow::Result<()> {
    let want = match s.replication {
        Replication::Leader => "leader",
        Replication::MultiMaster => "multi-master",
    };
    let dir = s.data_dir.display();
    std::fs::create_dir_all(&s.data_dir).with_context(|| format!("data dir {dir}"))?;
    let path = s.data_dir.join(MODE_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == want => Ok(()),
        Ok(found) => anyhow::bail!(
            "data dir {dir} was created in --replication {} mode and cannot be used with --replication {want}; \
             the two modes store different state (use another data dir)",
            found.trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_data = s.data_dir.join(rampart_storage::DATA_FILE_NAME).exists();
            if has_data && s.replication == Replication::MultiMaster {
                // Directories from before the marker existed were all leader mode.
                anyhow::bail!(
                    "data dir {dir} holds leader-mode data and cannot be used with --replication multi-master"
                );
            }
            let tmp = s.data_dir.join(format!("{MODE_FILE_NAME}.tmp"));
            let ctx = || format!("data dir {dir}");
            std::fs::write(&tmp, format!("{want}\n")).with_context(ctx)?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(ctx)?;
            std::fs::rename(&tmp, &path).with_context(ctx)?;
            std::fs::File::open(&s.data_dir).and_then(|d| d.sync_all()).with_context(ctx)?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("data dir {dir}")),
    }
}

/// Prints a stopped node's log, raft markers and keys, one per line.
pub fn debug_dump(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let store = rampart_storage::Store::open_dir(data_dir)?;
    for line in rampart_raft::store::dump(&store)? {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server_config::PeerTlsFiles;

    #[test]
    fn plaintext_on_a_reachable_peer_address_is_warned_about() {
        let base = ServerArgs { id: Some(1), data_dir: Some("/tmp/x".into()), ..Default::default() };
        let loopback = base.resolve().unwrap();
        assert_eq!(plaintext_peer_warning(&loopback), None);
        for addr in ["0.0.0.0:7001", "10.1.2.3:7001", "[::]:7001"] {
            let mut s = loopback.clone();
            s.peer_addr = addr.parse().unwrap();
            assert!(plaintext_peer_warning(&s).is_some_and(|w| w.starts_with("PEER TLS IS OFF")), "{addr}");
            s.peer_tls = Some(PeerTlsFiles { ca: "a".into(), cert: "b".into(), key: "c".into() });
            assert_eq!(plaintext_peer_warning(&s), None, "{addr} with TLS");
        }
    }
}
