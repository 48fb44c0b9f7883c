//! What both client APIs share: limits, the write and read paths, and the
//! errors a client can act on.

use std::sync::Arc;
use std::time::Instant;

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

/// The node and everything the APIs need beside it.
pub struct App {
    pub node: Arc<RaftNode>,
    pub cfg: ServerConfig,
    pub metrics: Metrics,
    pub started: Instant,
    pub scan_cursors: crate::scan::CursorTable,
}

impl App {
    pub fn new(node: Arc<RaftNode>, cfg: ServerConfig) -> Arc<App> {
        Arc::new(App {
            node,
            cfg,
            metrics: Metrics::default(),
            started: Instant::now(),
            scan_cursors: crate::scan::CursorTable::new(),
        })
    }

    pub fn check_key(&self, key: &[u8]) -> Result<(), ApiError> {
        if key.len() > self.cfg.key_bytes_max {
            return Err(ApiError::TooLarge(format!(
                "key of {} bytes exceeds the limit of {} bytes (key_bytes_max)",
                key.len(),
                self.cfg.key_bytes_max
            )));
        }
        Ok(())
    }

    pub fn check_value(&self, value: &[u8]) -> Result<(), ApiError> {
        if value.len() > self.cfg.value_bytes_max {
            return Err(ApiError::TooLarge(format!(
                "value of {} bytes exceeds the limit of {} bytes (value_bytes_max)",
                value.len(),
                self.cfg.value_bytes_max
            )));
        }
        Ok(())
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
        let mut results = self.node.write_many(valid).await.into_iter();
        out.into_iter()
            .map(|slot| match slot {
                Some(r) => r,
                None => match results.next() {
                    Some(r) => r.map_err(ApiError::from),
                    None => Err(ApiError::Internal("missing result of a pipelined write".into())),
                },
            })
            .collect()
    }

    /// Validates sizes, then applies `cmd` through the log.
    pub async fn write(&self, cmd: Command) -> Result<Response, ApiError> {
        self.validate(&cmd)?;
        Ok(self.node.write(cmd).await?)
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
                let limit = self.cfg.value_bytes_max.saturating_mul(4);
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

    /// Runs `f` on this node's state after making the read linearizable
    /// (unless `Stale` was asked for).
    pub async fn read<T>(
        &self,
        consistency: Consistency,
        f: impl FnOnce(&View) -> rampart_storage::Result<T>,
    ) -> Result<T, ApiError> {
        if consistency == Consistency::Linearizable {
            self.node.read_barrier().await.map_err(|e| match ApiError::from(e) {
                // A read has no effect: an unconfirmed read is simply retryable.
                ApiError::Timeout(m) => {
                    ApiError::Timeout(m.replace("the write may have been applied", "read not served"))
                }
                other => other,
            })?;
        }
        Ok(self.node.store().read(f)?)
    }
}
