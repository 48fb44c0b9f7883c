//! What both client APIs share: limits, the write and read paths, and the
//! errors a client can act on.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rampart_mm::{Change, MmError, MmNode};
use rampart_raft::node::{RaftNode, WriteError};
use rampart_raft::{Command, Response};
use rampart_storage::View;

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// An error as a client sees it. `code()` is the stable word clients match on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Not applied: no leader yet.
    #[error("{0}")]
    TryAgain(String),
    /// Not applied: no quorum.
    #[error("{0}")]
    ClusterDown(String),
    /// Outcome unknown: the write may or may not have been applied.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::TryAgain(_) => "TRYAGAIN",
            ApiError::ClusterDown(_) => "CLUSTERDOWN",
            ApiError::Timeout(_) => "TIMEOUT",
            ApiError::TooLarge(_) => "TOO_LARGE",
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::Rejected(_) => "REJECTED",
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    /// The RESP error line (without the leading `-`).
    pub fn resp_line(&self) -> String {
        match self {
            ApiError::TryAgain(m) => format!("TRYAGAIN {m}"),
            ApiError::ClusterDown(m) => format!("CLUSTERDOWN {m}"),
            ApiError::Timeout(m) => format!("TIMEOUT {m}"),
            ApiError::TooLarge(m) | ApiError::BadRequest(m) | ApiError::Rejected(m) => format!("ERR {m}"),
            ApiError::Internal(m) => format!("ERR internal error: {m}"),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::TryAgain => ApiError::TryAgain("no leader elected yet, retry shortly".into()),
            WriteError::ClusterDown(m) => ApiError::ClusterDown(format!("no quorum: {m}")),
            WriteError::Timeout(m) => {
                ApiError::Timeout(format!("outcome unknown, the write may have been applied: {m}"))
            }
            WriteError::Rejected(m) => ApiError::Rejected(m),
        }
    }
}

impl From<MmError> for ApiError {
    fn from(e: MmError) -> Self {
        match e {
            MmError::NoQuorum(m) => ApiError::ClusterDown(format!("not applied: {m}")),
            MmError::Busy(m) => ApiError::TryAgain(format!("not applied: {m}")),
            MmError::MaybeApplied(m) => {
                ApiError::Timeout(format!("outcome unknown, the write may have been applied: {m}"))
            }
            MmError::TooLarge(m) => ApiError::TooLarge(m),
            MmError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<rampart_storage::Error> for ApiError {
    fn from(e: rampart_storage::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Stale,
}

/// The replication behind the APIs.
pub enum Backend {
    /// Raft: one leader takes writes.
    Leader(Arc<RaftNode>),
    /// CASPaxos per key: every node takes writes.
    Multi(Arc<MmNode>),
}

/// A key's value as the APIs report it. Multi-master mode has no global log, so no revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: Vec<u8>,
    pub revision: Option<u64>,
}

/// One page of keys in order; `next_after` is where the next page starts (`None`: done).
pub struct Page {
    pub items: Vec<(Vec<u8>, Item)>,
    pub next_after: Option<Vec<u8>>,
}

/// The node and everything the APIs need beside it.
pub struct App {
    pub backend: Backend,
    pub cfg: ServerConfig,
    pub metrics: Metrics,
    pub started: Instant,
    pub scan_cursors: crate::scan::CursorTable,
}

impl App {
    pub fn new(backend: Backend, cfg: ServerConfig) -> Arc<App> {
        Arc::new(App {
            backend,
            cfg,
            metrics: Metrics::default(),
            started: Instant::now(),
            scan_cursors: crate::scan::CursorTable::new(),
        })
    }

    /// The leader-mode node, if this is one.
    pub fn raft(&self) -> Option<&Arc<RaftNode>> {
        match &self.backend {
            Backend::Leader(n) => Some(n),
            Backend::Multi(_) => None,
        }
    }

    pub fn is_multi_master(&self) -> bool {
        matches!(self.backend, Backend::Multi(_))
    }

    /// The longest key taken: `key_bytes_max`, and in multi-master mode at most the Paxos
    /// core's limit.
    pub fn key_limit(&self) -> usize {
        match self.backend {
            Backend::Leader(_) => self.cfg.key_bytes_max,
            Backend::Multi(_) => self.cfg.key_bytes_max.min(rampart_mm::KEY_BYTES_MAX),
        }
    }

    pub fn value_limit(&self) -> usize {
        match self.backend {
            Backend::Leader(_) => self.cfg.value_bytes_max,
            Backend::Multi(_) => self.cfg.value_bytes_max.min(rampart_mm::VALUE_BYTES_MAX),
        }
    }

    pub fn check_key(&self, key: &[u8]) -> Result<(), ApiError> {
        if key.len() > self.key_limit() {
            return Err(ApiError::TooLarge(format!(
                "key of {} bytes exceeds the limit of {} bytes (key_bytes_max)",
                key.len(),
                self.key_limit()
            )));
        }
        Ok(())
    }

    pub fn check_value(&self, value: &[u8]) -> Result<(), ApiError> {
        if value.len() > self.value_limit() {
            return Err(ApiError::TooLarge(format!(
                "value of {} bytes exceeds the limit of {} bytes (value_bytes_max)",
                value.len(),
                self.value_limit()
            )));
        }
        Ok(())
    }

    /// True when this node can serve linearizable requests now (for load balancers).
    pub fn healthy(&self) -> bool {
        match &self.backend {
            Backend::Leader(n) => n.healthy(),
            Backend::Multi(n) => n.healthy(),
        }
    }

    pub fn peer_health(&self) -> Vec<rampart_membership::PeerSnapshot> {
        match &self.backend {
            Backend::Leader(n) => n.peer_health(),
            Backend::Multi(n) => n.peer_health(),
        }
    }

    /// Validates each command, then applies the valid ones through the log
    /// in their order (pipelined writes of one connection).
    pub async fn write_many(&self, cmds: Vec<Command>) -> Vec<Result<Response, ApiError>> {
        let mut out: Vec<Option<Result<Response, ApiError>>> = Vec::with_capacity(cmds.len());
        let mut valid = Vec::new();
        for cmd in cmds {
            match self.validate(&cmd) {
                Ok(()) => {
                    out.push(None);
                    valid.push(cmd);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let mut results = match &self.backend {
            Backend::Leader(node) => {
                node.write_many(valid).await.into_iter().map(|r| r.map_err(ApiError::from)).collect::<Vec<_>>()
            }
            Backend::Multi(node) => crate::mm::write_many(node, valid).await,
        }
        .into_iter();
        out.into_iter()
            .map(|slot| match slot {
                Some(r) => r,
                None => match results.next() {
                    Some(r) => r,
                    None => Err(ApiError::Internal("missing result of a pipelined write".into())),
                },
            })
            .collect()
    }

    /// Validates sizes, then applies `cmd` through the log.
    pub async fn write(&self, cmd: Command) -> Result<Response, ApiError> {
        self.validate(&cmd)?;
        match &self.backend {
            Backend::Leader(node) => Ok(node.write(cmd).await?),
            Backend::Multi(node) => crate::mm::write(node, cmd).await,
        }
    }

    /// Refuses keys and values over the limits before anything is proposed.
    fn validate(&self, cmd: &Command) -> Result<(), ApiError> {
        match cmd {
            Command::Set { key, value, .. }
            | Command::Append { key, value }
            | Command::PutIfRevision { key, value, .. }
            | Command::Cas { key, new: value, .. } => {
                self.check_key(key)?;
                self.check_value(value)?;
            }
            Command::MSet { pairs } => {
                let mut total = 0usize;
                for (k, v) in pairs {
                    self.check_key(k)?;
                    self.check_value(v)?;
                    total += k.len() + v.len();
                }
                // One log entry: keep it within a few values' worth.
                let limit = self.value_limit().saturating_mul(4);
                if total > limit {
                    return Err(ApiError::TooLarge(format!(
                        "MSET of {total} bytes exceeds the limit of {limit} bytes (4 x value_bytes_max)"
                    )));
                }
            }
            Command::Del { keys } => {
                for k in keys {
                    self.check_key(k)?;
                }
            }
            Command::Delete { key } | Command::IncrBy { key, .. } => self.check_key(key)?,
            // Batches are formed by the proposer from commands checked here.
            Command::Batch(_) => {
                return Err(ApiError::BadRequest("batches cannot be submitted by clients".into()));
            }
        }
        if let Command::Cas { expected: Some(e), .. } = cmd {
            self.check_value(e)?;
        }
        Ok(())
    }

    /// Leader mode: runs `f` on this node's state after making the read
    /// linearizable (unless `Stale` was asked for).
    async fn read<T>(
        &self,
        node: &RaftNode,
        consistency: Consistency,
        f: impl FnOnce(&View) -> rampart_storage::Result<T>,
    ) -> Result<T, ApiError> {
        if consistency == Consistency::Linearizable {
            node.read_barrier().await.map_err(|e| match ApiError::from(e) {
                // A read has no effect: an unconfirmed read is simply retryable.
                ApiError::Timeout(m) => {
                    ApiError::Timeout(m.replace("the write may have been applied", "read not served"))
                }
                other => other,
            })?;
        }
        Ok(node.store().read(f)?)
    }

    /// The values of `keys` (`None`: absent). Linearizable: a read barrier (leader mode) or
    /// one Paxos read round per key (multi-master). Stale: this node's state.
    pub async fn get_many(&self, consistency: Consistency, keys: Vec<Bytes>) -> Result<Vec<Option<Item>>, ApiError> {
        match &self.backend {
            Backend::Leader(node) => {
                self.read(node, consistency, move |v| {
                    keys.iter()
                        .map(|k| Ok(v.kv_get(k)?.map(|x| Item { value: x.value, revision: Some(x.revision) })))
                        .collect()
                })
                .await
            }
            Backend::Multi(node) => {
                let to_item = |v: Option<Vec<u8>>| v.map(|value| Item { value, revision: None });
                if consistency == Consistency::Stale {
                    return keys.iter().map(|k| Ok(to_item(node.stale_get(k)?))).collect();
                }
                // One read round per key, at most KEYS_PER_COMMAND_MAX at a time.
                let mut out = Vec::with_capacity(keys.len());
                for chunk in keys.chunks(crate::mm::KEYS_PER_COMMAND_MAX) {
                    let reads = chunk.iter().map(|k| (k.to_vec(), Change::Read)).collect();
                    for r in node.changes(reads).await {
                        out.push(match r {
                            Ok(rampart_mm::Outcome::Value(v)) => to_item(v),
                            Ok(other) => return Err(ApiError::Internal(format!("unexpected read outcome {other:?}"))),
                            // A read has no effect: an unconfirmed read is simply not served.
                            Err(MmError::MaybeApplied(m)) => {
                                return Err(ApiError::Timeout(format!("read not served: {m}")))
                            }
                            Err(e) => return Err(e.into()),
                        });
                    }
                }
                Ok(out)
            }
        }
    }

    pub async fn get(&self, consistency: Consistency, key: Bytes) -> Result<Option<Item>, ApiError> {
        Ok(self.get_many(consistency, vec![key]).await?.pop().flatten())
    }

    /// Up to `limit` keys starting with `prefix`, after `after`, in order. Multi-master merges a
    /// majority's registers (see `rampart_mm::MmNode::scan`), so a page may hold fewer keys than
    /// `limit` (deleted keys take room) and still have a next page.
    /// Without `values`, multi-master pages carry empty values (keys and counts only).
    pub async fn scan(
        &self,
        consistency: Consistency,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
        values: bool,
    ) -> Result<Page, ApiError> {
        match &self.backend {
            Backend::Leader(node) => {
                let (items, more) =
                    self.read(node, consistency, move |v| v.kv_scan(&prefix, after.as_deref(), limit)).await?;
                let next_after = if more { items.last().map(|(k, _)| k.clone()) } else { None };
                let items =
                    items.into_iter().map(|(k, v)| (k, Item { value: v.value, revision: Some(v.revision) })).collect();
                Ok(Page { items, next_after })
            }
            Backend::Multi(node) => {
                let stale = consistency == Consistency::Stale;
                let page = node.scan(&prefix, after.as_deref(), limit, stale, values).await?;
                let items = page.items.into_iter().map(|(k, value)| (k, Item { value, revision: None })).collect();
                Ok(Page { items, next_after: page.next_after })
            }
        }
    }

    /// The number of live keys (multi-master: counted over merged scan pages, within the
    /// request timeout).
    pub async fn dbsize(&self, consistency: Consistency) -> Result<u64, ApiError> {
        match &self.backend {
            Backend::Leader(node) => self.read(node, consistency, |v| v.kv_len()).await,
            Backend::Multi(_) => {
                let deadline = Instant::now() + self.cfg.request_timeout;
                let mut after = None;
                let mut n = 0u64;
                loop {
                    let page = self.scan(consistency, Vec::new(), after, rampart_mm::SCAN_PAGE_MAX, false).await?;
                    n += page.items.len() as u64;
                    match page.next_after {
                        None => return Ok(n),
                        Some(k) => after = Some(k),
                    }
                    if Instant::now() > deadline {
                        return Err(ApiError::Timeout("counting keys took longer than the request timeout".into()));
                    }
                }
            }
        }
    }
}

/// Refuses requests that only leader mode serves, with the reason.
pub fn leader_only(what: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{what} is not available in multi-master mode: membership is fixed at bootstrap and there is no global log"
    ))
}
