//! What both client APIs share: the replica behind them, the server's own settings, metrics
//! and SCAN cursors. Every request reaches the replicated store through [`Replica`]; nothing
//! here knows which replication mode runs.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rampart_kv::reserved::{is_reserved, reserved_key_error};
use rampart_kv::{Command, Consistency, Item, KvError, Page, Replica, Response};

use crate::acl::Acl;

use crate::metrics::Metrics;
use crate::ServerConfig;

/// The replica and everything the APIs need beside it.
pub struct App {
    pub replica: Arc<dyn Replica>,
    /// The users and their permissions (both APIs check every request against them).
    pub acl: Arc<Acl>,
    pub cfg: ServerConfig,
    pub metrics: Metrics,
    pub started: Instant,
    pub scan_cursors: crate::scan::CursorTable,
}

impl App {
    pub fn new(replica: Arc<dyn Replica>, cfg: ServerConfig) -> Arc<App> {
        let acl = Arc::new(Acl::new(replica.clone(), crate::resp::acl_catalog(), cfg.acl.clone()));
        Arc::new(App {
            replica,
            acl,
            cfg,
            metrics: Metrics::default(),
            started: Instant::now(),
            scan_cursors: crate::scan::CursorTable::new(),
        })
    }

    /// Refuses a key over the size limit or in the reserved namespace (rampart's own users).
    pub fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if is_reserved(key) {
            return Err(reserved_key_error());
        }
        self.replica.limits().check_key(key)
    }

    /// Pipelined writes of one connection, applied in their order; one result each.
    pub async fn write_many(&self, cmds: Vec<Command>) -> Vec<Result<Response, KvError>> {
        self.replica.write_many(cmds).await
    }

    pub async fn write(&self, cmd: Command) -> Result<Response, KvError> {
        self.replica.write(cmd).await
    }

    /// Client reads: a key in the reserved namespace is refused, as writes of it are.
    pub async fn get_many(&self, consistency: Consistency, keys: Vec<Bytes>) -> Result<Vec<Option<Item>>, KvError> {
        if keys.iter().any(|k| is_reserved(k)) {
            return Err(reserved_key_error());
        }
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
        // The reserved namespace is not part of the client's key space: never listed. A page
        // may then hold fewer keys than `limit` (the trait allows it); the cursor still moves on.
        let mut page = self.replica.scan(consistency, prefix, after, limit, values).await?;
        page.items.retain(|(k, _)| !is_reserved(k));
        Ok(page)
    }

    pub async fn dbsize(&self, consistency: Consistency) -> Result<u64, KvError> {
        self.replica.count(consistency).await
    }
}
