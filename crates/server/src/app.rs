//! What both client APIs share: the replica behind them, the server's own settings, metrics,
//! SCAN cursors, and the slots of long requests. Every request reaches the replicated store
//! through [`Replica`]; nothing here knows which replication mode runs.
//!
//! Long requests (KEYS, SCAN, DBSIZE, `GET /v1/kv?prefix=`, MGET and EXISTS of many keys) take
//! one of `scan_jobs_max` slots and do their CPU work on the blocking pool ([`App::off_workers`]):
//! the async workers also run the node's heartbeats and elections, which must never wait behind
//! a client's pattern match.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rampart_kv::limits::INLINE_READ_KEYS_MAX;
use rampart_kv::reserved::{is_reserved, reserved_key_error};
use rampart_kv::{Command, Consistency, Item, KvError, Page, Replica, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    scan_jobs: Arc<Semaphore>,
    /// Terminates TLS on both client listeners when [`ServerConfig::tls`] is set.
    pub tls: Option<rampart_tls::tokio_rustls::TlsAcceptor>,
    /// This node's pub/sub subscriptions and keyspace-notification feed.
    pub pubsub: Arc<crate::pubsub::Hub>,
}

/// One of the `scan_jobs_max` slots, held for a long request's whole life.
pub struct ScanSlot {
    app: Arc<App>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ScanSlot {
    fn drop(&mut self) {
        self.app.metrics.scan_jobs_running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl App {
    /// Runs `f` on the blocking pool, off the async workers (counted in
    /// `rampart_offloaded_jobs_total`). Callers hold a [`ScanSlot`], which bounds how many run.
    pub async fn off_workers<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, KvError> {
        self.metrics.offloaded_jobs.inc();
        tokio::task::spawn_blocking(f).await.map_err(|e| KvError::Internal(format!("background task failed: {e}")))
    }

    pub fn new(replica: Arc<dyn Replica>, cfg: ServerConfig) -> Arc<App> {
        let scan_jobs = Arc::new(Semaphore::new(cfg.scan_jobs_max));
        let tls = cfg.tls.clone().map(rampart_tls::tokio_rustls::TlsAcceptor::from);
        let acl = Arc::new(Acl::new(replica.clone(), crate::resp::acl_catalog(), cfg.acl.clone()));
        let pubsub = Arc::new(crate::pubsub::Hub::new(cfg.notify_keyspace_events));
        Arc::new(App {
            pubsub,
            tls,
            replica,
            acl,
            cfg,
            metrics: Metrics::default(),
            started: Instant::now(),
            scan_cursors: crate::scan::CursorTable::new(),
            scan_jobs,
        })
    }

    /// A slot for a long request: waits up to the request timeout for one of `scan_jobs_max`,
    /// then refuses with an error naming the limit (nothing was done; retry).
    pub async fn scan_slot(self: &Arc<Self>) -> Result<ScanSlot, KvError> {
        match tokio::time::timeout(self.cfg.request_timeout, self.scan_jobs.clone().acquire_owned()).await {
            Ok(Ok(permit)) => {
                self.metrics.scan_jobs_running.fetch_add(1, Ordering::Relaxed);
                self.metrics.scan_jobs_total.inc();
                Ok(ScanSlot { app: self.clone(), _permit: permit })
            }
            _ => {
                self.metrics.scan_jobs_refused.inc();
                Err(KvError::TryAgain(format!(
                    "{} long requests (KEYS, SCAN, DBSIZE, lists) are running, the most at once (scan_jobs_max); retry",
                    self.cfg.scan_jobs_max
                )))
            }
        }
    }

    /// A slot if a read of `keys` keys is long (see [`INLINE_READ_KEYS_MAX`]).
    async fn slot_for_read(self: &Arc<Self>, keys: usize) -> Result<Option<ScanSlot>, KvError> {
        if keys > INLINE_READ_KEYS_MAX {
            Ok(Some(self.scan_slot().await?))
        } else {
            Ok(None)
        }
    }

    /// Refuses a key over the size limit or in the reserved namespace (rampart's own users).
    pub fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if is_reserved(key) {
            return Err(reserved_key_error());
        }
        self.replica.limits().check_key(key)
    }

    /// Pipelined writes of one connection, applied in their order; one result each. A write of
    /// a lock's or election's key other than a delete is refused ([`check_line_write`]).
    pub async fn write_many(&self, cmds: Vec<Command>) -> Vec<Result<Response, KvError>> {
        if cmds.iter().all(|c| check_line_write(c).is_ok()) {
            return self.replica.write_many(cmds).await;
        }
        let mut slots: Vec<Option<Result<Response, KvError>>> = Vec::with_capacity(cmds.len());
        let mut valid = Vec::new();
        for c in cmds {
            match check_line_write(&c) {
                Ok(()) => {
                    slots.push(None);
                    valid.push(c);
                }
                Err(e) => slots.push(Some(Err(e))),
            }
        }
        let mut done = if valid.is_empty() { Vec::new() } else { self.replica.write_many(valid).await }.into_iter();
        slots
            .into_iter()
            .map(|s| {
                s.unwrap_or_else(|| done.next().unwrap_or_else(|| Err(KvError::Internal("missing result".into()))))
            })
            .collect()
    }

    pub async fn write(&self, cmd: Command) -> Result<Response, KvError> {
        check_line_write(&cmd)?;
        self.replica.write(cmd).await
    }

    /// The values of `keys`; refused past `reply_bytes_max` (see [`Replica::get_many`]).
    pub async fn get_many(
        self: &Arc<Self>,
        consistency: Consistency,
        keys: Vec<Bytes>,
    ) -> Result<Vec<Option<Item>>, KvError> {
        let _slot = self.slot_for_read(keys.len()).await?;
        if keys.iter().any(|k| is_reserved(k)) {
            return Err(reserved_key_error());
        }
        self.replica.get_many(consistency, keys).await
    }

    pub async fn get(self: &Arc<Self>, consistency: Consistency, key: Bytes) -> Result<Option<Item>, KvError> {
        Ok(self.get_many(consistency, vec![key]).await?.pop().flatten())
    }

    /// How many of `keys` exist.
    pub async fn exists(self: &Arc<Self>, consistency: Consistency, keys: Vec<Bytes>) -> Result<u64, KvError> {
        let _slot = self.slot_for_read(keys.len()).await?;
        self.replica.exists(consistency, keys).await
    }

    /// One page of a scan; the caller holds a [`ScanSlot`].
    pub async fn scan(
        &self,
        _slot: &ScanSlot,
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

    /// The number of keys (a scan in multi-master mode, so it takes a slot).
    pub async fn dbsize(self: &Arc<Self>, consistency: Consistency) -> Result<u64, KvError> {
        let _slot = self.scan_slot().await?;
        self.replica.count(consistency).await
    }
}

/// Refuses a client write that would put a key under a lock's or election's prefix
/// ([`crate::coord::LOCK_PREFIX`], [`crate::coord::ELECTION_PREFIX`]): only the lock and
/// election API writes there (a key put there by hand, with no lease, would hold a lock
/// forever). Reading and deleting those keys stays allowed.
pub fn check_line_write(cmd: &Command) -> Result<(), KvError> {
    match cmd {
        Command::Batch(cmds) => cmds.iter().try_for_each(check_line_write),
        Command::At { cmd, .. } => check_line_write(cmd),
        Command::Del { .. }
        | Command::Delete { .. }
        | Command::DeleteIfRevision { .. }
        | Command::GetDel { .. }
        | Command::ExpireDue { .. } => Ok(()),
        other => match other.keys().into_iter().find(|k| crate::coord::is_line_key(k)) {
            None => Ok(()),
            Some(k) => Err(KvError::BadRequest(format!(
                "key {:?} is under {} or {}: only the lock and election API (/v1/lock, /v1/election) writes there; \
                 such keys can be read and deleted",
                String::from_utf8_lossy(k),
                crate::coord::LOCK_PREFIX,
                crate::coord::ELECTION_PREFIX
            ))),
        },
    }
}
