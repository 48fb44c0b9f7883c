//! `rampart server` settings: command-line flags, or the same keys in a TOML
//! file given by `--config` (flags win over the file). They resolve to [`NodeSettings`], from
//! which `node.rs` builds the typed configs of the library crates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart_kv::limits::{KEY_BYTES_MAX_CEILING, REPLY_BYTES_MAX_CEILING, VALUE_BYTES_MAX_CEILING};
use serde::Deserialize;

/// Default heartbeat: frequent enough that a dead leader is noticed fast on a LAN.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 50;
/// Default election timeout (lower bound; the upper bound is twice it).
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 250;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_KEY_BYTES_MAX: usize = rampart_kv::limits::KEY_BYTES_MAX_DEFAULT;
pub const DEFAULT_VALUE_BYTES_MAX: usize = rampart_kv::limits::VALUE_BYTES_MAX_DEFAULT;
pub const DEFAULT_RESP_CONNECTIONS_MAX: usize = rampart_server::RESP_CONNECTIONS_MAX_DEFAULT;
pub const DEFAULT_HTTP_CONNECTIONS_MAX: usize = rampart_server::HTTP_CONNECTIONS_MAX_DEFAULT;
pub const DEFAULT_CLIENT_HEADER_TIMEOUT_MS: u64 = rampart_server::CLIENT_HEADER_TIMEOUT_MS_DEFAULT;
pub const DEFAULT_CLIENT_IDLE_TIMEOUT_MS: u64 = rampart_server::CLIENT_IDLE_TIMEOUT_MS_DEFAULT;
pub const DEFAULT_SCAN_JOBS_MAX: usize = rampart_server::SCAN_JOBS_MAX_DEFAULT;
pub const DEFAULT_REPLY_BYTES_MAX: usize = rampart_kv::limits::REPLY_BYTES_MAX_DEFAULT;
/// Largest `--resp-connections-max` / `--http-connections-max` accepted.
pub const CONNECTIONS_MAX_CEILING: usize = 1_000_000;
/// Largest `--scan-jobs-max` accepted (each runs on a thread of the blocking pool).
pub const SCAN_JOBS_MAX_CEILING: usize = 256;
pub const DEFAULT_SNAPSHOT_LOGS: u64 = 20_000;
pub const DEFAULT_PEER_HEARTBEAT_MS: u64 = 100;
/// Default of `--tombstone-grace-ms`.
pub const DEFAULT_TOMBSTONE_GRACE_MS: u64 = 60_000;
/// Largest `--tombstone-grace-ms`: 30 days.
pub const TOMBSTONE_GRACE_MS_MAX: u64 = 30 * 24 * 3600 * 1000;
pub const DEFAULT_PEER_CONNECTIONS_MAX: usize = rampart_transport::INBOUND_CONNECTIONS_MAX_DEFAULT;
/// Highest `peer_connections_max` accepted.
pub const PEER_CONNECTIONS_MAX_CEILING: usize = 65_536;
/// Largest `election_timeout_ms` (one minute). The node computes with multiples of it (the upper
/// bound of the randomized timeout, the quorum-silence limit), which must not overflow.
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 60_000;
/// Largest `request_timeout_ms` (one hour): deadlines are `now + request_timeout`, which must
/// stay representable.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 3_600_000;
/// Largest `watch_history_revisions`: history rows cost disk on every node (about a key and a
/// value per event).
pub const WATCH_HISTORY_REVISIONS_MAX: u64 = 100_000_000;

/// Largest `snapshot_logs`: a log this long between snapshots is already far beyond memory and
/// disk sense, and openraft adds it to log indexes.
pub const SNAPSHOT_LOGS_MAX: u64 = 100_000_000;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// TOML file with any of the keys below (same names, with underscores).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long)]
    pub id: Option<u64>,
    /// Directory for this node's data file.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address for node-to-node traffic (default 127.0.0.1:7001).
    #[arg(long)]
    pub peer_addr: Option<String>,
    /// Address for Redis-protocol clients (default 127.0.0.1:6381).
    #[arg(long)]
    pub resp_addr: Option<String>,
    /// Address for HTTP/JSON clients, /metrics and the dashboard (default 127.0.0.1:8001).
    #[arg(long)]
    pub http_addr: Option<String>,
    /// Initial voters, `ID=PEER_ADDR,...`; used on first boot only.
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Lower bound of the randomized election timeout (upper bound: twice it).
    #[arg(long)]
    pub election_timeout_ms: Option<u64>,
    /// Leader heartbeat interval; must be well below the election timeout.
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Replication mode: `leader` (Raft, default) or `multi-master` (CASPaxos per key, no leader).
    #[arg(long)]
    pub replication: Option<String>,
    /// How long a client request may wait before it is answered TIMEOUT.
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Largest key accepted (default 65536).
    #[arg(long)]
    pub key_bytes_max: Option<usize>,
    /// Largest value accepted (default 1048576).
    #[arg(long)]
    pub value_bytes_max: Option<usize>,
    /// Take a snapshot (and purge the log behind it) after this many entries (default 20000).
    #[arg(long)]
    pub snapshot_logs: Option<u64>,
    /// Revisions of watch history each node keeps in leader mode (default 100000): a watch can
    /// start from any of this node's last this many applied log indexes.
    #[arg(long)]
    pub watch_history_revisions: Option<u64>,
    /// Interval of the failure-detection heartbeats sent to every peer (default 100).
    #[arg(long)]
    pub peer_heartbeat_ms: Option<u64>,
    /// Multi-master mode: how long a deleted or expired key's tombstone stays before its
    /// register is collected on every member (default 60000).
    #[arg(long)]
    pub tombstone_grace_ms: Option<u64>,
    /// Cluster CA certificate (PEM) for mutual TLS between peers. Peer TLS needs all three of
    /// --peer-tls-ca, --peer-tls-cert and --peer-tls-key (see `rampart certs`).
    #[arg(long)]
    pub peer_tls_ca: Option<PathBuf>,
    /// This node's peer certificate (PEM); it must name this node (node-<id>.rampart.internal).
    #[arg(long)]
    pub peer_tls_cert: Option<PathBuf>,
    /// This node's peer private key (PEM).
    #[arg(long)]
    pub peer_tls_key: Option<PathBuf>,
    /// Most inbound peer connections open at once; more are closed at once (default 256).
    #[arg(long)]
    pub peer_connections_max: Option<usize>,
    /// Server certificate chain (PEM) for TLS on the client listeners (RESP and HTTP); needs
    /// --tls-key too. Clients then use `redis-cli --tls --cacert CA` and `curl --cacert CA https://…`.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Largest reply to one request: MGET values, KEYS keys, one SCAN or list page (default
    /// 67108864). At least value_bytes_max.
    #[arg(long)]
    pub reply_bytes_max: Option<usize>,
    /// Most RESP client connections at once; more are answered `-ERR max number of clients
    /// reached` (default 10000).
    #[arg(long)]
    pub resp_connections_max: Option<usize>,
    /// Most HTTP client connections at once; more are answered 503 (default 10000).
    #[arg(long)]
    pub http_connections_max: Option<usize>,
    /// Time a client has to send a whole request (RESP: a command; HTTP: a request head),
    /// counted from its first byte (default 30000).
    #[arg(long)]
    pub client_header_timeout_ms: Option<u64>,
    /// Time a client connection may make no progress: no request, a new connection included,
    /// or no byte of a body or reply moved (default 300000). Must exceed request_timeout_ms.
    #[arg(long)]
    pub client_idle_timeout_ms: Option<u64>,
    /// Most KEYS/SCAN/DBSIZE/list requests running at once off the async workers (default 4).
    #[arg(long)]
    pub scan_jobs_max: Option<usize>,
    /// Password of the `default` user until `ACL SETUSER default` stores one (give every node
    /// the same). Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, env = "RAMPART_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// `yes` (default): while the default user needs no password, serve only loopback clients.
    /// `no`: serve everyone (only on a network you trust).
    #[arg(long, value_name = "yes|no")]
    pub protected_mode: Option<String>,
    /// Most argon2 password checks running at once (default 1; each takes one core briefly).
    #[arg(long)]
    pub password_checks_max: Option<usize>,
    /// How often each node re-reads the users from the replicated store (default 1000).
    #[arg(long)]
    pub acl_refresh_ms: Option<u64>,
}

/// The keys a config file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    data_dir: Option<PathBuf>,
    peer_addr: Option<String>,
    resp_addr: Option<String>,
    http_addr: Option<String>,
    initial_cluster: Option<InitialCluster>,
    election_timeout_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    replication: Option<String>,
    request_timeout_ms: Option<u64>,
    key_bytes_max: Option<usize>,
    value_bytes_max: Option<usize>,
    snapshot_logs: Option<u64>,
    watch_history_revisions: Option<u64>,
    peer_heartbeat_ms: Option<u64>,
    tombstone_grace_ms: Option<u64>,
    peer_tls_ca: Option<PathBuf>,
    peer_tls_cert: Option<PathBuf>,
    peer_tls_key: Option<PathBuf>,
    peer_connections_max: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    reply_bytes_max: Option<usize>,
    resp_connections_max: Option<usize>,
    http_connections_max: Option<usize>,
    client_header_timeout_ms: Option<u64>,
    client_idle_timeout_ms: Option<u64>,
    scan_jobs_max: Option<usize>,
    admin_password: Option<String>,
    protected_mode: Option<bool>,
    password_checks_max: Option<usize>,
    acl_refresh_ms: Option<u64>,
}

/// `initial_cluster` in a file: the flag's string form or a table `{ "1" = "addr" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InitialCluster {
    Text(String),
    Table(BTreeMap<String, String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    Leader,
    MultiMaster,
}

/// Validated settings of one node.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub id: u64,
    pub data_dir: PathBuf,
    pub peer_addr: SocketAddr,
    pub resp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub initial_cluster: BTreeMap<u64, String>,
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub replication: Replication,
    pub request_timeout: Duration,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub reply_bytes_max: usize,
    pub resp_connections_max: usize,
    pub http_connections_max: usize,
    pub client_header_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub scan_jobs_max: usize,
    pub snapshot_logs: u64,
    /// Revisions of watch history kept (leader mode).
    pub watch_history_revisions: u64,
    pub peer_heartbeat_ms: u64,
    /// How long a tombstone stays before collection (multi-master mode).
    pub tombstone_grace: Duration,
    /// Mutual TLS between peers; `None` for plaintext.
    pub peer_tls: Option<PeerTlsFiles>,
    pub peer_connections_max: usize,
    /// TLS on the client listeners: (certificate chain, key); `None` for plaintext.
    pub client_tls: Option<(PathBuf, PathBuf)>,
    /// The bootstrap password of the default user (never logged).
    pub admin_password: Option<String>,
    pub protected_mode: bool,
    pub password_checks_max: usize,
    pub acl_refresh_ms: u64,
}

/// The PEM files of a node's peer TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path} is invalid: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{source_name}: field `{field}`: {reason}")]
    Field { source_name: String, field: &'static str, reason: String },
}

impl ServerArgs {
    /// Merges flags over the config file (if any) and validates the result.
    pub fn resolve(&self) -> Result<NodeSettings, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let src = match &self.config {
            Some(p) => format!("flags and config file {}", p.display()),
            None => "flags".to_string(),
        };
        let field =
            |field: &'static str, reason: String| ConfigError::Field { source_name: src.clone(), field, reason };

        let id = self.id.or(file.id).ok_or_else(|| field("id", "is required (a positive integer)".into()))?;
        if id == 0 {
            return Err(field("id", "must be a positive integer, got 0".into()));
        }
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .ok_or_else(|| field("data_dir", "is required (the directory for this node's data)".into()))?;
        let addr = |name: &'static str, flag: &Option<String>, file: Option<String>, default: &str| {
            let text = flag.clone().or(file).unwrap_or_else(|| default.to_string());
            text.parse::<SocketAddr>().map_err(|e| field(name, format!("{text:?} is not an IP:PORT address: {e}")))
        };
        let peer_addr = addr("peer_addr", &self.peer_addr, file.peer_addr, "127.0.0.1:7001")?;
        let resp_addr = addr("resp_addr", &self.resp_addr, file.resp_addr, "127.0.0.1:6381")?;
        let http_addr = addr("http_addr", &self.http_addr, file.http_addr, "127.0.0.1:8001")?;
        let initial_cluster =
            resolve_initial_cluster(&self.initial_cluster, file.initial_cluster, id, peer_addr, &field)?;
        let heartbeat_interval_ms =
            self.heartbeat_interval_ms.or(file.heartbeat_interval_ms).unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_MS);
        let election_timeout_ms =
            self.election_timeout_ms.or(file.election_timeout_ms).unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS);
        if election_timeout_ms > ELECTION_TIMEOUT_MS_MAX {
            return Err(field(
                "election_timeout_ms",
                format!("{election_timeout_ms} is above the maximum of {ELECTION_TIMEOUT_MS_MAX}"),
            ));
        }
        check_timing(heartbeat_interval_ms, election_timeout_ms, &field)?;
        let replication = match self.replication.clone().or(file.replication).as_deref() {
            None | Some("leader") => Replication::Leader,
            Some("multi-master") => Replication::MultiMaster,
            Some(other) => {
                return Err(field("replication", format!("{other:?} is not one of: leader, multi-master")));
            }
        };
        let request_timeout_ms =
            self.request_timeout_ms.or(file.request_timeout_ms).unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS);
        if !(1..=REQUEST_TIMEOUT_MS_MAX).contains(&request_timeout_ms) {
            return Err(field(
                "request_timeout_ms",
                format!("{request_timeout_ms} is outside 1..={REQUEST_TIMEOUT_MS_MAX}"),
            ));
        }
        let key_bytes_max = self.key_bytes_max.or(file.key_bytes_max).unwrap_or(DEFAULT_KEY_BYTES_MAX);
        let value_bytes_max = self.value_bytes_max.or(file.value_bytes_max).unwrap_or(DEFAULT_VALUE_BYTES_MAX);
        if key_bytes_max == 0 || key_bytes_max > KEY_BYTES_MAX_CEILING {
            return Err(field("key_bytes_max", format!("{key_bytes_max} is outside 1..={KEY_BYTES_MAX_CEILING}")));
        }
        if value_bytes_max == 0 || value_bytes_max > VALUE_BYTES_MAX_CEILING {
            return Err(field(
                "value_bytes_max",
                format!("{value_bytes_max} is outside 1..={VALUE_BYTES_MAX_CEILING}"),
            ));
        }
        let snapshot_logs = self.snapshot_logs.or(file.snapshot_logs).unwrap_or(DEFAULT_SNAPSHOT_LOGS);
        if snapshot_logs < 10 {
            return Err(field("snapshot_logs", format!("{snapshot_logs} is below the minimum of 10")));
        }
        if snapshot_logs > SNAPSHOT_LOGS_MAX {
            return Err(field("snapshot_logs", format!("{snapshot_logs} is above the maximum of {SNAPSHOT_LOGS_MAX}")));
        }
        let watch_history_revisions = self
            .watch_history_revisions
            .or(file.watch_history_revisions)
            .unwrap_or(rampart_raft::watch::WATCH_HISTORY_REVISIONS);
        if !(1..=WATCH_HISTORY_REVISIONS_MAX).contains(&watch_history_revisions) {
            return Err(field(
                "watch_history_revisions",
                format!("{watch_history_revisions} is outside 1..={WATCH_HISTORY_REVISIONS_MAX}"),
            ));
        }
        let peer_heartbeat_ms = self.peer_heartbeat_ms.or(file.peer_heartbeat_ms).unwrap_or(DEFAULT_PEER_HEARTBEAT_MS);
        if !(10..=60_000).contains(&peer_heartbeat_ms) {
            return Err(field("peer_heartbeat_ms", format!("{peer_heartbeat_ms} is outside 10..=60000")));
        }
        let tombstone_grace_ms =
            self.tombstone_grace_ms.or(file.tombstone_grace_ms).unwrap_or(DEFAULT_TOMBSTONE_GRACE_MS);
        if !(100..=TOMBSTONE_GRACE_MS_MAX).contains(&tombstone_grace_ms) {
            return Err(field(
                "tombstone_grace_ms",
                format!("{tombstone_grace_ms} is outside 100..={TOMBSTONE_GRACE_MS_MAX}"),
            ));
        }
        let peer_tls = resolve_peer_tls(
            [
                self.peer_tls_ca.clone().or(file.peer_tls_ca),
                self.peer_tls_cert.clone().or(file.peer_tls_cert),
                self.peer_tls_key.clone().or(file.peer_tls_key),
            ],
            &field,
        )?;
        let client_tls = match (self.tls_cert.clone().or(file.tls_cert), self.tls_key.clone().or(file.tls_key)) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) => return Err(field("tls_key", "tls_cert needs tls_key too".into())),
            (None, Some(_)) => return Err(field("tls_cert", "tls_key needs tls_cert too".into())),
        };
        let peer_connections_max =
            self.peer_connections_max.or(file.peer_connections_max).unwrap_or(DEFAULT_PEER_CONNECTIONS_MAX);
        if !(1..=PEER_CONNECTIONS_MAX_CEILING).contains(&peer_connections_max) {
            return Err(field(
                "peer_connections_max",
                format!("{peer_connections_max} is outside 1..={PEER_CONNECTIONS_MAX_CEILING}"),
            ));
        }
        let reply_bytes_max = self.reply_bytes_max.or(file.reply_bytes_max).unwrap_or(DEFAULT_REPLY_BYTES_MAX);
        if reply_bytes_max < value_bytes_max || reply_bytes_max > REPLY_BYTES_MAX_CEILING {
            return Err(field(
                "reply_bytes_max",
                format!(
                    "{reply_bytes_max} is outside {value_bytes_max}..={REPLY_BYTES_MAX_CEILING} (a reply must hold at least one value of value_bytes_max)"
                ),
            ));
        }
        let connections = |name: &'static str, flag: Option<usize>, file: Option<usize>, default: usize| {
            let n = flag.or(file).unwrap_or(default);
            if n == 0 || n > CONNECTIONS_MAX_CEILING {
                return Err(field(name, format!("{n} is outside 1..={CONNECTIONS_MAX_CEILING}")));
            }
            Ok(n)
        };
        let resp_connections_max = connections(
            "resp_connections_max",
            self.resp_connections_max,
            file.resp_connections_max,
            DEFAULT_RESP_CONNECTIONS_MAX,
        )?;
        let http_connections_max = connections(
            "http_connections_max",
            self.http_connections_max,
            file.http_connections_max,
            DEFAULT_HTTP_CONNECTIONS_MAX,
        )?;
        let client_header_timeout_ms =
            self.client_header_timeout_ms.or(file.client_header_timeout_ms).unwrap_or(DEFAULT_CLIENT_HEADER_TIMEOUT_MS);
        if client_header_timeout_ms == 0 {
            return Err(field("client_header_timeout_ms", "must be positive".into()));
        }
        let client_idle_timeout_ms =
            self.client_idle_timeout_ms.or(file.client_idle_timeout_ms).unwrap_or(DEFAULT_CLIENT_IDLE_TIMEOUT_MS);
        if client_idle_timeout_ms <= request_timeout_ms {
            return Err(field(
                "client_idle_timeout_ms",
                format!(
                    "{client_idle_timeout_ms} must exceed request_timeout_ms ({request_timeout_ms}), or a connection waiting on a slow request counts as idle"
                ),
            ));
        }
        let scan_jobs_max = self.scan_jobs_max.or(file.scan_jobs_max).unwrap_or(DEFAULT_SCAN_JOBS_MAX);
        if scan_jobs_max == 0 || scan_jobs_max > SCAN_JOBS_MAX_CEILING {
            return Err(field("scan_jobs_max", format!("{scan_jobs_max} is outside 1..={SCAN_JOBS_MAX_CEILING}")));
        }
        let admin_password = self.admin_password.clone().or(file.admin_password);
        if admin_password.as_deref() == Some("") {
            return Err(field("admin_password", "must not be empty (leave it out to run without one)".into()));
        }
        let protected_mode = match self.protected_mode.as_deref() {
            Some("yes") => true,
            Some("no") => false,
            Some(other) => return Err(field("protected_mode", format!("{other:?} is not one of: yes, no"))),
            None => file.protected_mode.unwrap_or(true),
        };
        let password_checks_max = self
            .password_checks_max
            .or(file.password_checks_max)
            .unwrap_or(rampart_server::acl::password::PASSWORD_CHECKS_MAX_DEFAULT);
        if !(1..=64).contains(&password_checks_max) {
            return Err(field("password_checks_max", format!("{password_checks_max} is outside 1..=64")));
        }
        let acl_refresh_ms =
            self.acl_refresh_ms.or(file.acl_refresh_ms).unwrap_or(rampart_server::acl::store::ACL_REFRESH_MS_DEFAULT);
        if !(10..=600_000).contains(&acl_refresh_ms) {
            return Err(field("acl_refresh_ms", format!("{acl_refresh_ms} is outside 10..=600000")));
        }
        Ok(NodeSettings {
            id,
            data_dir,
            peer_addr,
            resp_addr,
            http_addr,
            initial_cluster,
            election_timeout_ms,
            heartbeat_interval_ms,
            replication,
            request_timeout: Duration::from_millis(request_timeout_ms),
            key_bytes_max,
            value_bytes_max,
            reply_bytes_max,
            resp_connections_max,
            http_connections_max,
            client_header_timeout: Duration::from_millis(client_header_timeout_ms),
            client_idle_timeout: Duration::from_millis(client_idle_timeout_ms),
            scan_jobs_max,
            snapshot_logs,
            watch_history_revisions,
            peer_heartbeat_ms,
            tombstone_grace: Duration::from_millis(tombstone_grace_ms),
            peer_tls,
            peer_connections_max,
            client_tls,
            admin_password,
            protected_mode,
            password_checks_max,
            acl_refresh_ms,
        })
    }
}

/// Peer TLS needs its CA, certificate and key together; any one alone is a config error.
fn resolve_peer_tls(
    [ca, cert, key]: [Option<PathBuf>; 3],
    field: &FieldError<'_>,
) -> Result<Option<PeerTlsFiles>, ConfigError> {
    match (ca, cert, key) {
        (None, None, None) => Ok(None),
        (Some(ca), Some(cert), Some(key)) => Ok(Some(PeerTlsFiles { ca, cert, key })),
        (ca, cert, key) => {
            let missing: Vec<&str> =
                [("peer_tls_ca", ca.is_none()), ("peer_tls_cert", cert.is_none()), ("peer_tls_key", key.is_none())]
                    .into_iter()
                    .filter_map(|(name, absent)| absent.then_some(name))
                    .collect();
            Err(field(
                "peer_tls",
                format!(
                    "peer TLS needs all three of peer_tls_ca, peer_tls_cert and peer_tls_key; missing: {}",
                    missing.join(", ")
                ),
            ))
        }
    }
}

type FieldError<'a> = dyn Fn(&'static str, String) -> ConfigError + 'a;

/// `initial_cluster` from the flag or the file (text or table); by default this node alone.
fn resolve_initial_cluster(
    flag: &Option<String>,
    file: Option<InitialCluster>,
    id: u64,
    peer_addr: SocketAddr,
    field: &FieldError<'_>,
) -> Result<BTreeMap<u64, String>, ConfigError> {
    let initial_cluster = match (flag, file) {
        (Some(text), _) => parse_initial_cluster(text).map_err(|r| field("initial_cluster", r))?,
        (None, Some(InitialCluster::Text(text))) => {
            parse_initial_cluster(&text).map_err(|r| field("initial_cluster", r))?
        }
        (None, Some(InitialCluster::Table(t))) => {
            let mut out = BTreeMap::new();
            for (k, v) in t {
                let id: u64 = k.parse().map_err(|_| field("initial_cluster", format!("{k:?} is not a node id")))?;
                out.insert(id, check_peer(&v).map_err(|r| field("initial_cluster", r))?);
            }
            out
        }
        (None, None) => BTreeMap::from([(id, peer_addr.to_string())]),
    };
    if initial_cluster.is_empty() {
        return Err(field("initial_cluster", "names no node".into()));
    }
    if let Some(a) = initial_cluster.get(&id) {
        if a != &peer_addr.to_string() {
            return Err(field(
                "initial_cluster",
                format!("lists node {id} at {a} but --peer-addr is {peer_addr}; they must match"),
            ));
        }
    }
    Ok(initial_cluster)
}

/// The leader's heartbeat must be well inside the election timeout.
fn check_timing(
    heartbeat_interval_ms: u64,
    election_timeout_ms: u64,
    field: &FieldError<'_>,
) -> Result<(), ConfigError> {
    if heartbeat_interval_ms == 0 {
        return Err(field("heartbeat_interval_ms", "must be positive".into()));
    }
    if election_timeout_ms < heartbeat_interval_ms.saturating_mul(3) {
        return Err(field(
            "election_timeout_ms",
            format!(
                "{election_timeout_ms} must be at least 3x heartbeat_interval_ms ({heartbeat_interval_ms}), or followers start elections while the leader is healthy"
            ),
        ));
    }
    Ok(())
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), reason: e.to_string() })
}

fn check_peer(addr: &str) -> Result<String, String> {
    let a = addr.trim();
    a.parse::<SocketAddr>().map_err(|e| format!("{a:?} is not an IP:PORT address: {e}"))?;
    Ok(a.to_string())
}

/// Parses `1=127.0.0.1:7001,2=127.0.0.1:7002`.
pub fn parse_initial_cluster(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("{part:?} is not ID=ADDRESS"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("{id:?} in {part:?} is not a node id"))?;
        if id == 0 {
            return Err(format!("node id 0 in {part:?} is not allowed"));
        }
        if out.insert(id, check_peer(addr)?).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServerArgs {
        ServerArgs {
            id: Some(1),
            data_dir: Some("/tmp/x".into()),
            initial_cluster: Some("1=127.0.0.1:7001,2=127.0.0.1:7002".into()),
            ..Default::default()
        }
    }

    #[test]
    fn flags_resolve_with_defaults() {
        let c = args().resolve().unwrap();
        assert_eq!(c.initial_cluster.len(), 2);
        assert_eq!(c.peer_addr.to_string(), "127.0.0.1:7001");
        assert_eq!(c.heartbeat_interval_ms, DEFAULT_HEARTBEAT_INTERVAL_MS);
        assert_eq!(c.replication, Replication::Leader);
    }

    /// Found by reading along the `server_config` fuzz target: `--election-timeout-ms
    /// 18446744073709551615` passed validation and the node panicked multiplying it at start
    /// (and a huge request timeout would panic adding it to `Instant::now()` on a request).
    #[test]
    fn timings_and_counts_that_would_overflow_at_run_time_are_refused() {
        let mut a = args();
        a.election_timeout_ms = Some(u64::MAX);
        a.heartbeat_interval_ms = Some(u64::MAX / 4);
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("election_timeout_ms") && e.contains("maximum of 60000"), "{e}");
        let mut a = args();
        a.election_timeout_ms = Some(ELECTION_TIMEOUT_MS_MAX);
        assert!(a.resolve().is_ok());
        let mut a = args();
        a.request_timeout_ms = Some(u64::MAX);
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("request_timeout_ms") && e.contains("1..=3600000"), "{e}");
        let c = {
            let mut a = args();
            a.request_timeout_ms = Some(REQUEST_TIMEOUT_MS_MAX);
            // The idle timeout must exceed the request timeout.
            a.client_idle_timeout_ms = Some(REQUEST_TIMEOUT_MS_MAX + 1);
            a.resolve().unwrap()
        };
        assert!(std::time::Instant::now().checked_add(c.request_timeout).is_some());
        let mut a = args();
        a.snapshot_logs = Some(u64::MAX);
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("snapshot_logs") && e.contains("maximum"), "{e}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut a = args();
        a.initial_cluster = Some("1=127.0.0.1:7001,x=foo".into());
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("initial_cluster") && e.contains("not a node id"), "{e}");
        let mut a = args();
        a.election_timeout_ms = Some(60);
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("election_timeout_ms"), "{e}");
        let mut a = args();
        a.resp_addr = Some("localhost".into());
        assert!(a.resolve().unwrap_err().to_string().contains("resp_addr"));
        let mut a = args();
        a.peer_addr = Some("127.0.0.1:9999".into());
        assert!(a.resolve().unwrap_err().to_string().contains("must match"));
    }

    #[test]
    fn client_limits_resolve_and_bad_ones_name_the_field() {
        let c = args().resolve().unwrap();
        assert_eq!(c.resp_connections_max, DEFAULT_RESP_CONNECTIONS_MAX);
        assert_eq!(c.http_connections_max, DEFAULT_HTTP_CONNECTIONS_MAX);
        assert_eq!(c.client_header_timeout, Duration::from_millis(DEFAULT_CLIENT_HEADER_TIMEOUT_MS));
        assert_eq!(c.client_idle_timeout, Duration::from_millis(DEFAULT_CLIENT_IDLE_TIMEOUT_MS));
        assert_eq!((c.scan_jobs_max, c.reply_bytes_max), (DEFAULT_SCAN_JOBS_MAX, DEFAULT_REPLY_BYTES_MAX));
        let c = ServerArgs { http_connections_max: Some(7), client_header_timeout_ms: Some(250), ..args() }
            .resolve()
            .unwrap();
        assert_eq!((c.http_connections_max, c.client_header_timeout), (7, Duration::from_millis(250)));
        let bad = [
            (ServerArgs { resp_connections_max: Some(0), ..args() }, "resp_connections_max"),
            (ServerArgs { http_connections_max: Some(0), ..args() }, "http_connections_max"),
            (ServerArgs { client_header_timeout_ms: Some(0), ..args() }, "client_header_timeout_ms"),
            (ServerArgs { client_idle_timeout_ms: Some(5_000), ..args() }, "client_idle_timeout_ms"),
            (ServerArgs { scan_jobs_max: Some(0), ..args() }, "scan_jobs_max"),
            (ServerArgs { reply_bytes_max: Some(1000), ..args() }, "reply_bytes_max"),
        ];
        for (a, name) in bad {
            let e = a.resolve().unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
    }

    #[test]
    fn client_limits_come_from_the_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.toml");
        std::fs::write(
            &p,
            "id = 1\ndata_dir = \"/tmp/d\"\nresp_connections_max = 3\nclient_idle_timeout_ms = 9000\nscan_jobs_max = 2\nreply_bytes_max = 2000000\n",
        )
        .unwrap();
        let c = ServerArgs { config: Some(p), ..Default::default() }.resolve().unwrap();
        assert_eq!(c.resp_connections_max, 3);
        assert_eq!(c.client_idle_timeout, Duration::from_millis(9000));
        assert_eq!((c.scan_jobs_max, c.reply_bytes_max), (2, 2_000_000));
    }

    #[test]
    fn file_is_read_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.toml");
        std::fs::write(&p, "id = 2\ndata_dir = \"/tmp/d\"\npeer_addr = \"127.0.0.1:7002\"\n[initial_cluster]\n1 = \"127.0.0.1:7001\"\n2 = \"127.0.0.1:7002\"\n").unwrap();
        let a = ServerArgs { config: Some(p.clone()), heartbeat_interval_ms: Some(20), ..Default::default() };
        let c = a.resolve().unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.heartbeat_interval_ms, 20);
        assert_eq!(c.initial_cluster.len(), 2);
    }

    #[test]
    fn peer_tls_takes_all_three_files_or_none() {
        let c = args().resolve().unwrap();
        assert_eq!(c.peer_tls, None);
        assert_eq!(c.peer_connections_max, DEFAULT_PEER_CONNECTIONS_MAX);
        let mut a = args();
        a.peer_tls_ca = Some("ca.pem".into());
        a.peer_tls_key = Some("k.pem".into());
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("peer_tls") && e.contains("missing: peer_tls_cert"), "{e}");
        a.peer_tls_cert = Some("c.pem".into());
        let files = a.resolve().unwrap().peer_tls.unwrap();
        assert_eq!((files.ca, files.cert, files.key), ("ca.pem".into(), "c.pem".into(), "k.pem".into()));
        let mut a = args();
        a.peer_connections_max = Some(0);
        assert!(a.resolve().unwrap_err().to_string().contains("peer_connections_max"));
    }

    #[test]
    fn peer_tls_files_come_from_the_config_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.toml");
        std::fs::write(
            &p,
            "id = 1\ndata_dir = \"/tmp/d\"\npeer_tls_ca = \"/c/ca.pem\"\npeer_tls_cert = \"/c/node-1.pem\"\n\
             peer_tls_key = \"/c/node-1-key.pem\"\npeer_connections_max = 32\n",
        )
        .unwrap();
        let c = ServerArgs { config: Some(p), ..Default::default() }.resolve().unwrap();
        assert_eq!(c.peer_tls.unwrap().cert, PathBuf::from("/c/node-1.pem"));
        assert_eq!(c.peer_connections_max, 32);
    }

    #[test]
    fn auth_settings_resolve_and_are_checked() {
        let c = args().resolve().unwrap();
        assert!(c.protected_mode && c.admin_password.is_none());
        let mut a = args();
        a.protected_mode = Some("no".into());
        a.admin_password = Some("s3cret".into());
        let c = a.resolve().unwrap();
        assert!(!c.protected_mode && c.admin_password.as_deref() == Some("s3cret"));
        let mut a = args();
        a.protected_mode = Some("off".into());
        assert!(a.resolve().unwrap_err().to_string().contains("protected_mode"));
        let mut a = args();
        a.admin_password = Some(String::new());
        assert!(a.resolve().unwrap_err().to_string().contains("admin_password"));
        let mut a = args();
        a.password_checks_max = Some(0);
        assert!(a.resolve().unwrap_err().to_string().contains("password_checks_max"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.toml");
        std::fs::write(&p, "id = 1\ndata_dir = \"/tmp/d\"\nprotected_mode = false\nadmin_password = \"pw\"\n").unwrap();
        let c = ServerArgs { config: Some(p), ..Default::default() }.resolve().unwrap();
        assert!(!c.protected_mode && c.admin_password.as_deref() == Some("pw"));
    }

    #[test]
    fn broken_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "id = \"one\"\n").unwrap();
        let e = ServerArgs { config: Some(p.clone()), ..Default::default() }.resolve().unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("id"), "{e}");
        std::fs::write(&p, "idd = 1\n").unwrap();
        let e = ServerArgs { config: Some(p.clone()), ..Default::default() }.resolve().unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
        std::fs::write(&p, "[[[").unwrap();
        let e = ServerArgs { config: Some(p), ..Default::default() }.resolve().unwrap_err().to_string();
        assert!(e.contains("invalid"), "{e}");
    }
}
