//! What both client APIs share: the replica behind them, the server's own settings, metrics
//! and SCAN cursors. Every request reaches the replicated store through [`Replica`]; nothing
//! here knows which replication mode runs.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rampart_kv::{Command, Consistency, Item, KvError, Page, Replica, Response};

use crate::metrics::Metrics;
use crate::ServerConfig;

/// The replica and everything the APIs need beside it.
pub struct App {
    pub replica: Arc<dyn Replica>,
    pub cfg: ServerConfig,
    pub metrics: Metrics,
    pub started: Instant,
    pub scan_cursors: crate::scan::CursorTable,
}

impl App {
    pub fn new(replica: Arc<dyn Replica>, cfg: ServerConfig) -> Arc<App> {
        Arc::new(App {
            replica,
            cfg,
            metrics: Metrics::default(),
            started: Instant::now(),
            scan_cursors: crate::scan::CursorTable::new(),
        })
    }

    pub fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        self.replica.limits().check_key(key)
    }

    /// Pipelined writes of one connection, applied in their order; one result each.
    pub async fn write_many(&self, cmds: Vec<Command>) -> Vec<Result<Response, KvError>> {
        self.replica.write_many(cmds).await
    }

    pub async fn write(&self, cmd: Command) -> Result<Response, KvError> {
        self.replica.write(cmd).await
    }

    pub async fn get_many(&self, consistency: Consistency, keys: Vec<Bytes>) -> Result<Vec<Option<Item>>, KvError> {
        self.replica.get_many(consistency, keys).await
    }

    pub async fn get(&self, consistency: Consistency, key: Bytes) -> Result<Option<Item>, KvError> {
        Ok(self.get_many(consistency, vec![key]).await?.pop().flatten())
    }

    pub async fn scan(
        &self,
        consistency: Consistency,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
        values: bool,
    ) -> Result<Page, KvError> {
        self.replica.scan(consistency, prefix, after, limit, values).await
    }

    pub async fn dbsize(&self, consistency: Consistency) -> Result<u64, KvError> {
        self.replica.count(consistency).await
    }
}
