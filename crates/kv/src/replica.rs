//! The [`Replica`] trait: what a replication mode offers the client APIs. `rampart-server`
//! (RESP, HTTP, dashboard, metrics) reaches the replicated store only through it.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
pub use rampart_membership::PeerSnapshot;

use crate::command::Command;
use crate::event::{leader_mode_only, EventStream, WatchError, WatchFilter};
use crate::lease::{LeaseGrant, LeaseId, LeaseInfo};
use crate::limits::Limits;
use crate::outcome::Response;

/// A boxed future, so the trait can be used as `dyn Replica`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An error as a client sees it. [`KvError::code`] is the stable word clients match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Not applied: no leader yet, or the node is busy; retry.
    #[error("{0}")]
    TryAgain(String),
    /// Not applied: no quorum.
    #[error("{0}")]
    ClusterDown(String),
    /// Outcome unknown: the write may or may not have been applied.
    #[error("{0}")]
    Timeout(String),
    /// Over a size limit; nothing was proposed.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    BadRequest(String),
    /// Refused by the command's meaning; nothing changed.
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Internal(String),
}

impl KvError {
    pub fn code(&self) -> &'static str {
        match self {
            KvError::TryAgain(_) => "TRYAGAIN",
            KvError::ClusterDown(_) => "CLUSTERDOWN",
            KvError::Timeout(_) => "TIMEOUT",
            KvError::TooLarge(_) => "TOO_LARGE",
            KvError::BadRequest(_) => "BAD_REQUEST",
            KvError::Rejected(_) => "REJECTED",
            KvError::Internal(_) => "INTERNAL",
        }
    }

    /// The RESP error line (without the leading `-`).
    pub fn resp_line(&self) -> String {
        match self {
            KvError::TryAgain(m) => format!("TRYAGAIN {m}"),
            KvError::ClusterDown(m) => format!("CLUSTERDOWN {m}"),
            KvError::Timeout(m) => format!("TIMEOUT {m}"),
            KvError::TooLarge(m) | KvError::BadRequest(m) | KvError::Rejected(m) => format!("ERR {m}"),
            KvError::Internal(m) => format!("ERR internal error: {m}"),
        }
    }

    /// The same error for a read: a read has no effect, so an unconfirmed one is simply not
    /// served (and safe to retry).
    pub fn for_read(self) -> KvError {
        match self {
            KvError::Timeout(m) => KvError::Timeout(m.replace("the write may have been applied", "read not served")),
            other => other,
        }
    }
}

/// Linearizable (the default) or this node's own, possibly stale, state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Stale,
}

/// A key's value as the APIs report it (`revision`: `None` when the replica does not know it;
/// both modes report one, multi-master mode 0 for a value from before it had revisions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: Vec<u8>,
    pub revision: Option<u64>,
    /// When the key expires (Unix ms; `None`: never). A replica never returns an expired key.
    pub expires_at: Option<u64>,
}

/// One page of keys in order; `next_after` is where the next page starts (`None`: done).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<(Vec<u8>, Item)>,
    pub next_after: Option<Vec<u8>>,
}

/// Where a member can be reached: its peer address, and the client addresses it announces in
/// heartbeats. Both modes carry it in peer messages (and leader mode in its membership log
/// entries), so its serde form is stable: keep the field order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberInfo {
    pub peer_addr: String,
    #[serde(default)]
    pub resp_addr: String,
    #[serde(default)]
    pub http_addr: String,
}

impl std::fmt::Display for MemberInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.peer_addr)
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub info: MemberInfo,
    /// Counts in quorums (a learner does not).
    pub voter: bool,
}

/// What a node is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Multi-master: every node takes writes; there is no leader.
    Peer,
    /// Replication has stopped (shutting down, or after a fatal error).
    Stopped,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Peer => "peer",
            Role::Stopped => "shutdown",
        }
    }

    /// A node that takes writes itself (Redis's "master").
    pub fn takes_writes(self) -> bool {
        matches!(self, Role::Leader | Role::Peer)
    }
}

/// A mode-specific figure of [`NodeStatus`], shown by `/v1/status`, `INFO rampart` and the
/// dashboard under its name.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusField {
    Number(u64),
    /// A number that may be unknown (JSON null, "none" in INFO).
    Maybe(Option<u64>),
}

/// A node's state for status pages.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    pub id: u64,
    /// `leader` or `multi-master`.
    pub mode: &'static str,
    pub role: Role,
    pub leader_id: Option<u64>,
    pub members: Vec<Member>,
    /// How far this node has applied (Redis's replication offset; 0 without a log).
    pub applied_index: u64,
    /// How far the cluster has committed (0 without a log).
    pub commit_index: u64,
    /// Mode-specific figures, in display order.
    pub fields: Vec<(&'static str, StatusField)>,
}

/// Why a membership change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// No leader yet; retry.
    #[error("{0}")]
    TryAgain(String),
    /// Ask the leader instead.
    #[error("{0}")]
    NotLeader(String),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// This mode cannot change membership.
    #[error("{0}")]
    Unsupported(String),
}

/// A node of the replicated store, in either mode. Every method is safe to call concurrently.
pub trait Replica: Send + Sync + 'static {
    /// The limits this replica enforces (client commands over them are refused unproposed).
    fn limits(&self) -> Limits;

    /// Applies pipelined commands in their order, one result each. Every command is checked
    /// against [`Replica::limits`] first.
    fn write_many(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<Result<Response, KvError>>>;

    /// Applies one command.
    fn write(&self, cmd: Command) -> BoxFuture<'_, Result<Response, KvError>> {
        Box::pin(async move {
            self.write_many(vec![cmd]).await.pop().unwrap_or_else(|| Err(KvError::Internal("no result".into())))
        })
    }

    /// The values of `keys` (`None`: absent), in order. Once the values pass
    /// [`Limits::reply_bytes_max`] it fails with the error of [`crate::limits::reply_too_large`],
    /// having held no more than that; reads of many keys run off the async workers.
    fn get_many(&self, consistency: Consistency, keys: Vec<Bytes>)
        -> BoxFuture<'_, Result<Vec<Option<Item>>, KvError>>;

    /// How many of `keys` are present (a key named twice counts twice), holding no values.
    fn exists(&self, consistency: Consistency, keys: Vec<Bytes>) -> BoxFuture<'_, Result<u64, KvError>>;

    /// Up to `limit` keys starting with `prefix`, after `after`, in order. A page may hold fewer
    /// keys than `limit` and still have a next page: it also ends once its keys (and values)
    /// reach about [`Limits::reply_bytes_max`] bytes. Without `values`, values may be empty.
    /// The storage work runs off the async workers.
    fn scan(
        &self,
        consistency: Consistency,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
        values: bool,
    ) -> BoxFuture<'_, Result<Page, KvError>>;

    /// The number of live keys outside the reserved namespace ([`crate::reserved`]).
    fn count(&self, consistency: Consistency) -> BoxFuture<'_, Result<u64, KvError>>;

    /// True when a revision is a position in one log shared by every key (leader mode): then
    /// revisions order writes across keys, watches resume from them and locks and elections
    /// rank their contenders by them. False in multi-master mode, whose revisions are per key
    /// (strictly increasing across one key's values, unrelated across keys: docs/paxos.md,
    /// "Revisions"). Every mode reports revisions (HTTP `revision`, `X-Rampart-Revision`) and
    /// applies `?cas=REV` by them.
    fn revisions_are_global(&self) -> bool;

    fn status(&self) -> NodeStatus;

    /// `Ok` when this node can serve linearizable requests now; else why not.
    fn health(&self) -> Result<(), String>;

    /// What the failure detectors say about every peer.
    fn peer_health(&self) -> Vec<PeerSnapshot>;

    /// Adds a member (leader mode: as a learner until caught up, then as a voter).
    fn add_member(&self, id: u64, info: MemberInfo) -> BoxFuture<'_, Result<(), MembershipError>>;

    fn remove_member(&self, id: u64) -> BoxFuture<'_, Result<(), MembershipError>>;

    /// Gives member `id`'s place to the node now at its address with an empty data dir (its own
    /// data was lost): multi-master mode. Leader mode answers how to do it there instead.
    fn replace_member(&self, id: u64) -> BoxFuture<'_, Result<(), MembershipError>> {
        Box::pin(async move {
            Err(MembershipError::Unsupported(format!(
                "leader mode replaces a member whose data was lost by removing it and adding it again as a new \
                 member: `rampart cluster remove {id}`, then start it with an empty data dir and `rampart cluster add`"
            )))
        })
    }

    /// Streams the events of keys matching `filter`, from `from_revision` (inclusive; `None`:
    /// from the next write on), in revision order, each exactly once, with a
    /// [`WatchMessage::Progress`] at least every `progress_every`. A watch resumed on any node
    /// with `from_revision = last seen + 1` misses nothing and repeats nothing.
    /// Multi-master mode's revisions are per key, with no log to resume from: it answers
    /// [`WatchError::Unsupported`].
    fn watch(
        &self,
        filter: WatchFilter,
        from_revision: Option<u64>,
        progress_every: std::time::Duration,
    ) -> BoxFuture<'_, Result<Box<dyn EventStream>, WatchError>> {
        let _ = (filter, from_revision, progress_every);
        Box::pin(async { Err(WatchError::Unsupported(leader_mode_only("watches"))) })
    }

    /// Grants a lease of `ttl_ms` (within [`crate::lease`]'s limits).
    fn lease_grant(&self, ttl_ms: u64) -> BoxFuture<'_, Result<LeaseGrant, KvError>> {
        let _ = ttl_ms;
        Box::pin(async { Err(KvError::BadRequest(leader_mode_only("leases"))) })
    }

    /// Renews lease `id` to its full TTL; `None` if it does not exist (expired or revoked).
    fn lease_keepalive(&self, id: LeaseId) -> BoxFuture<'_, Result<Option<LeaseGrant>, KvError>> {
        let _ = id;
        Box::pin(async { Err(KvError::BadRequest(leader_mode_only("leases"))) })
    }

    /// Lease `id`'s TTL, remaining time and keys; `None` if it does not exist.
    fn lease_info(&self, id: LeaseId) -> BoxFuture<'_, Result<Option<LeaseInfo>, KvError>> {
        let _ = id;
        Box::pin(async { Err(KvError::BadRequest(leader_mode_only("leases"))) })
    }

    /// Writes `key = value` attached to lease `lease` (HTTP `PUT ?lease=`; locks and elections):
    /// the key goes when the lease does. With `if_absent`, only if the key does not exist.
    /// Answers the write's revision, or `None` when `if_absent` found the key. A lease that does
    /// not exist, or one at [`crate::lease::KEYS_PER_LEASE_MAX`], is refused
    /// ([`KvError::Rejected`], naming it).
    fn put_with_lease(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: LeaseId,
        if_absent: bool,
    ) -> BoxFuture<'_, Result<Option<u64>, KvError>> {
        let _ = (key, value, lease, if_absent);
        Box::pin(async { Err(KvError::BadRequest(leader_mode_only("leases"))) })
    }

    /// Revokes lease `id`, removing its keys in one write; false if it did not exist.
    fn lease_revoke(&self, id: LeaseId) -> BoxFuture<'_, Result<bool, KvError>> {
        let _ = id;
        Box::pin(async { Err(KvError::BadRequest(leader_mode_only("leases"))) })
    }

    /// Mode-specific Prometheus lines, appended to `/metrics`.
    fn render_metrics(&self, out: &mut String);

    /// Resolves when replication stopped on a fatal error; the node must then exit.
    fn wait_fatal(&self) -> BoxFuture<'_, String>;

    /// Stops replication cleanly.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// The shared front half of [`Replica::write_many`]: binds every command to `limits`
/// ([`Limits::bind`]), checks it against them (and `check`), hands the valid ones in their order
/// to `propose`, and puts each result back in its
/// command's place. A refused command gets its error and is never proposed.
pub async fn write_checked<F, Fut>(
    limits: Limits,
    cmds: Vec<Command>,
    check: impl Fn(&Command) -> Result<(), KvError>,
    propose: F,
) -> Vec<Result<Response, KvError>>
where
    F: FnOnce(Vec<Command>) -> Fut,
    Fut: Future<Output = Vec<Result<Response, KvError>>>,
{
    let mut slots: Vec<Option<Result<Response, KvError>>> = Vec::with_capacity(cmds.len());
    let mut valid = Vec::with_capacity(cmds.len());
    for mut cmd in cmds {
        limits.bind(&mut cmd);
        match limits.check(&cmd).and_then(|()| check(&cmd)) {
            Ok(()) => {
                slots.push(None);
                valid.push(cmd);
            }
            Err(e) => slots.push(Some(Err(e))),
        }
    }
    let proposed = valid.len();
    let results = if valid.is_empty() { Vec::new() } else { propose(valid).await };
    debug_assert_eq!(results.len(), proposed, "one result per proposed command");
    let mut results = results.into_iter();
    slots
        .into_iter()
        .map(|slot| match slot {
            Some(r) => r,
            None => {
                results.next().unwrap_or_else(|| Err(KvError::Internal("missing result of a pipelined write".into())))
            }
        })
        .collect()
}
