//! Leader mode as a [`Replica`]: what the client APIs see of a [`RaftNode`].

use std::fmt::Write as _;

use bytes::Bytes;
use openraft::ServerState;
use rampart_kv::lease::{self, LeaseGrant, LeaseId, LeaseInfo, KEYS_PER_LEASE_MAX, LEASES_MAX};
use rampart_kv::limits::INLINE_READ_KEYS_MAX;
use rampart_kv::reserved::RESERVED_PREFIX;
use rampart_kv::{
    write_checked, BoxFuture, Command, Consistency, EventStream, Item, KvError, Limits, Member, MemberInfo,
    MembershipError, NodeStatus, Outcome, Page, PeerSnapshot, Replica, Response, Role, StatusField, WatchError,
    WatchFilter,
};
use rampart_storage::View;

use crate::node::{RaftNode, WriteError};

impl From<WriteError> for KvError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::TryAgain => KvError::TryAgain("no leader elected yet, retry shortly".into()),
            WriteError::ClusterDown(m) => KvError::ClusterDown(format!("no quorum: {m}")),
            WriteError::Timeout(m) => {
                KvError::Timeout(format!("outcome unknown, the write may have been applied: {m}"))
            }
            WriteError::Rejected(m) => KvError::Rejected(m),
        }
    }
}

fn role_of(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Stopped,
    }
}

/// A failed read: of the store, or over a limit.
enum ReadError {
    Store(rampart_storage::Error),
    Limit(KvError),
}

impl From<rampart_storage::Error> for ReadError {
    fn from(e: rampart_storage::Error) -> Self {
        ReadError::Store(e)
    }
}

impl RaftNode {
    /// Runs `f` on this node's state, after making the read linearizable unless `Stale`, with
    /// the time expiry is judged at: the later of this node's clock and its state machine's
    /// clock (read in the same view), so a key the log already treats as expired never shows.
    /// With `blocking`, `f` runs on the blocking pool: a long read never holds an async worker,
    /// which also runs this node's heartbeats and elections.
    async fn read<T: Send + 'static>(
        &self,
        consistency: Consistency,
        blocking: bool,
        f: impl FnOnce(&View, u64) -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, KvError> {
        if consistency == Consistency::Linearizable {
            self.read_barrier().await.map_err(|e| KvError::from(e).for_read())?;
        }
        let store = self.store().clone();
        let clock = self.clock().clone();
        let run = move || {
            let mut limit = None;
            let r = store.read(|v| match f(v, clock.now_ms().max(crate::state_machine::view_clock(v)?)) {
                Ok(t) => Ok(Some(t)),
                Err(ReadError::Store(e)) => Err(e),
                Err(ReadError::Limit(e)) => {
                    limit = Some(e);
                    Ok(None)
                }
            });
            match (r, limit) {
                (Ok(Some(t)), _) => Ok(t),
                (Ok(None), Some(e)) => Err(e),
                (Ok(None), None) => Err(KvError::Internal("read ended without a result".into())),
                (Err(e), _) => Err(KvError::Internal(e.to_string())),
            }
        };
        if blocking {
            tokio::task::spawn_blocking(run)
                .await
                .unwrap_or_else(|e| Err(KvError::Internal(format!("read task failed: {e}"))))
        } else {
            run()
        }
    }
}

impl RaftNode {
    /// On the leader, the lease limits checked before proposing, for a clear error at once (the
    /// state machine checks them again when it applies, deterministically). Elsewhere nothing:
    /// a follower's state may lag the leader's.
    async fn lease_precheck(&self, cmd: &Command) -> Result<(), KvError> {
        if self.leader_term().is_none() {
            return Ok(());
        }
        let store = self.store().clone();
        let cmd2 = cmd.clone();
        let found = tokio::task::spawn_blocking(move || {
            store.read(|v| {
                Ok(match &cmd2 {
                    Command::LeaseGrant { .. } => (v.lease_count()? as usize, None, false),
                    Command::PutLeased { key, lease, .. } => {
                        let ttl = v.lease_get(*lease)?;
                        let on_it = v.kv_lease(key)? == Some(*lease);
                        (v.lease_key_count(*lease, KEYS_PER_LEASE_MAX)?, ttl, on_it)
                    }
                    _ => (0, None, false),
                })
            })
        })
        .await
        .map_err(|e| KvError::Internal(format!("lease check task failed: {e}")))?
        .map_err(|e| KvError::Internal(e.to_string()))?;
        match (cmd, found) {
            (Command::LeaseGrant { .. }, (count, _, _)) if count >= LEASES_MAX => {
                Err(KvError::Rejected(lease::too_many_leases()))
            }
            (Command::PutLeased { lease: id, .. }, (_, None, _)) => Err(KvError::Rejected(lease::lease_not_found(*id))),
            (Command::PutLeased { lease: id, .. }, (_, Some(ttl), _))
                if self.lease_alive_here(*id, ttl) == Some(false) =>
            {
                Err(KvError::Rejected(lease::lease_not_found(*id)))
            }
            (Command::PutLeased { lease: id, .. }, (count, _, false)) if count >= KEYS_PER_LEASE_MAX => {
                Err(KvError::Rejected(lease::lease_full(*id)))
            }
            _ => Ok(()),
        }
    }
}

/// A lease command's answer that does not fit its meaning.
fn unexpected(what: &str, outcome: &Outcome) -> KvError {
    KvError::Internal(format!("unexpected result of {what}: {outcome:?}"))
}

impl Replica for RaftNode {
    fn limits(&self) -> Limits {
        self.config().limits
    }

    fn write_many(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<Result<Response, KvError>>> {
        Box::pin(write_checked(
            self.limits(),
            cmds,
            |_| Ok(()),
            move |valid| async move {
                RaftNode::write_many(self, valid).await.into_iter().map(|r| r.map_err(KvError::from)).collect()
            },
        ))
    }

    fn get_many(
        &self,
        consistency: Consistency,
        keys: Vec<Bytes>,
    ) -> BoxFuture<'_, Result<Vec<Option<Item>>, KvError>> {
        let mut budget = self.limits().reply_budget();
        let blocking = keys.len() > INLINE_READ_KEYS_MAX;
        Box::pin(self.read(consistency, blocking, move |v, now_ms| {
            let mut out = Vec::with_capacity(keys.len().min(INLINE_READ_KEYS_MAX));
            for k in &keys {
                let item = v.kv_get(k)?.filter(|x| x.expires_at.is_none_or(|at| at > now_ms));
                if let Some(x) = &item {
                    budget.take(x.value.len()).map_err(ReadError::Limit)?;
                }
                out.push(item.map(|x| Item { value: x.value, revision: Some(x.revision), expires_at: x.expires_at }));
            }
            Ok(out)
        }))
    }

    fn exists(&self, consistency: Consistency, keys: Vec<Bytes>) -> BoxFuture<'_, Result<u64, KvError>> {
        let blocking = keys.len() > INLINE_READ_KEYS_MAX;
        Box::pin(self.read(consistency, blocking, move |v, now_ms| {
            let mut n = 0u64;
            for k in &keys {
                n += u64::from(v.kv_expiry(k)?.is_some_and(|e| e.is_none_or(|at| at > now_ms)));
            }
            Ok(n)
        }))
    }

    fn scan(
        &self,
        consistency: Consistency,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
        values: bool,
    ) -> BoxFuture<'_, Result<Page, KvError>> {
        let bytes_max = self.limits().reply_bytes_max;
        Box::pin(async move {
            // Expired keys are left out; a page may then end on one (`next_after` names it).
            let (items, next_after) = self
                .read(consistency, true, move |v, now_ms| {
                    Ok(v.kv_scan_live(&prefix, after.as_deref(), limit, bytes_max, values, now_ms)?)
                })
                .await?;
            let items = items
                .into_iter()
                .map(|(k, v)| (k, Item { value: v.value, revision: Some(v.revision), expires_at: v.expires_at }))
                .collect();
            Ok(Page { items, next_after })
        })
    }

    fn count(&self, consistency: Consistency) -> BoxFuture<'_, Result<u64, KvError>> {
        // The reserved namespace (rampart's own users) is not part of the client's key space;
        // it holds few keys, counted in the same read.
        // Keys expired but not yet removed by the expirer are not counted.
        Box::pin(self.read(consistency, false, |v, now_ms| {
            let reserved = v.kv_scan(RESERVED_PREFIX, None, usize::MAX)?.0.len() as u64;
            Ok(v.kv_len()?.saturating_sub(reserved).saturating_sub(v.kv_expired_count(now_ms)?))
        }))
    }

    fn revisions_are_global(&self) -> bool {
        true
    }

    fn status(&self) -> NodeStatus {
        let st = RaftNode::status(self);
        let members = st.members.iter().map(|m| Member { id: m.id, info: m.info.clone(), voter: m.voter }).collect();
        NodeStatus {
            id: st.id,
            mode: "leader",
            role: role_of(st.state),
            leader_id: st.leader_id,
            members,
            applied_index: st.applied_index,
            commit_index: st.commit_index,
            fields: vec![
                ("term", StatusField::Number(st.term)),
                ("commit_index", StatusField::Number(st.commit_index)),
                ("applied_index", StatusField::Number(st.applied_index)),
                ("last_log_index", StatusField::Number(st.last_log_index)),
                ("snapshot_index", StatusField::Number(st.snapshot_index)),
            ],
        }
    }

    fn health(&self) -> Result<(), String> {
        if self.healthy() {
            Ok(())
        } else {
            Err("cannot serve linearizable requests now".into())
        }
    }

    fn peer_health(&self) -> Vec<PeerSnapshot> {
        RaftNode::peer_health(self)
    }

    fn add_member(&self, id: u64, info: MemberInfo) -> BoxFuture<'_, Result<(), MembershipError>> {
        Box::pin(RaftNode::add_member(self, id, info))
    }

    fn remove_member(&self, id: u64) -> BoxFuture<'_, Result<(), MembershipError>> {
        Box::pin(RaftNode::remove_member(self, id))
    }

    fn lease_grant(&self, ttl_ms: u64) -> BoxFuture<'_, Result<LeaseGrant, KvError>> {
        Box::pin(async move {
            if let Some(e) = lease::ttl_out_of_range(ttl_ms) {
                return Err(KvError::BadRequest(e));
            }
            let cmd = Command::LeaseGrant { ttl_ms };
            self.lease_precheck(&cmd).await?;
            let resp = Replica::write(self, cmd).await?;
            match resp.outcome {
                Outcome::Integer(id) if id > 0 => Ok(LeaseGrant { id: id as LeaseId, ttl_ms }),
                other => Err(unexpected("a lease grant", &other)),
            }
        })
    }

    fn lease_keepalive(&self, id: LeaseId) -> BoxFuture<'_, Result<Option<LeaseGrant>, KvError>> {
        Box::pin(async move {
            let view = self.lease_query(id, true).await.map_err(|e| KvError::from(e).for_read())?;
            Ok(view.map(|v| LeaseGrant { id: v.id, ttl_ms: v.ttl_ms }))
        })
    }

    fn lease_info(&self, id: LeaseId) -> BoxFuture<'_, Result<Option<LeaseInfo>, KvError>> {
        Box::pin(async move {
            let view = self.lease_query(id, false).await.map_err(|e| KvError::from(e).for_read())?;
            Ok(view.map(|v| LeaseInfo { id: v.id, ttl_ms: v.ttl_ms, remaining_ms: v.remaining_ms, keys: v.keys }))
        })
    }

    fn put_with_lease(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: LeaseId,
        if_absent: bool,
    ) -> BoxFuture<'_, Result<Option<u64>, KvError>> {
        Box::pin(async move {
            let cmd = Command::PutLeased { key, value, lease, if_absent };
            // Sizes and the reserved namespace first (the write checks them again).
            self.limits().check(&cmd)?;
            self.lease_precheck(&cmd).await?;
            let resp = Replica::write(self, cmd).await?;
            match resp.outcome {
                Outcome::Written { written: true, .. } => Ok(Some(resp.revision)),
                Outcome::Written { written: false, .. } => Ok(None),
                other => Err(unexpected("a leased put", &other)),
            }
        })
    }

    fn lease_revoke(&self, id: LeaseId) -> BoxFuture<'_, Result<bool, KvError>> {
        Box::pin(async move {
            match Replica::write(self, Command::LeaseRevoke { id, expired: false }).await {
                Ok(resp) => match resp.outcome {
                    Outcome::Deleted { .. } => {
                        self.forget_lease(id);
                        Ok(true)
                    }
                    other => Err(unexpected("a lease revoke", &other)),
                },
                Err(KvError::Rejected(m)) if m == lease::lease_not_found(id) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn render_metrics(&self, out: &mut String) {
        self.store().stats().render(out);
        let st = RaftNode::status(self);
        let _ = writeln!(out, "# HELP rampart_raft_role 1 for the role this node has now.");
        let _ = writeln!(out, "# TYPE rampart_raft_role gauge");
        for role in ["leader", "follower", "candidate", "learner"] {
            let _ = writeln!(out, "rampart_raft_role{{role=\"{role}\"}} {}", u8::from(st.role == role));
        }
        let gauges = [
            ("rampart_raft_term", st.term),
            ("rampart_raft_commit_index", st.commit_index),
            ("rampart_raft_applied_index", st.applied_index),
            ("rampart_raft_last_log_index", st.last_log_index),
            ("rampart_raft_snapshot_index", st.snapshot_index),
            ("rampart_raft_leader_id", st.leader_id.unwrap_or(0)),
        ];
        for (name, v) in gauges {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP rampart_expired_keys_total Keys the expirer removed through the log while this node led."
        );
        let _ = writeln!(out, "# TYPE rampart_expired_keys_total counter");
        let _ = writeln!(out, "rampart_expired_keys_total {}", self.expired_keys_total());
        let _ = writeln!(
            out,
            "# HELP rampart_expired_leases_total Leases that ran out and were revoked through the log while this \
             node led."
        );
        let _ = writeln!(out, "# TYPE rampart_expired_leases_total counter");
        let _ = writeln!(out, "rampart_expired_leases_total {}", self.expired_leases_total());
        let _ = writeln!(
            out,
            "# HELP rampart_watches_active Watches open on this node (HTTP watches, lock and election waiters, \
             keyspace-notification feeds); at most WATCHES_MAX = {}.",
            crate::watch::WATCHES_MAX
        );
        let _ = writeln!(out, "# TYPE rampart_watches_active gauge");
        let _ = writeln!(out, "rampart_watches_active {}", self.watch_hub().active());
        self.config().transport.stats.render_prometheus(out);
    }

    fn wait_fatal(&self) -> BoxFuture<'_, String> {
        Box::pin(RaftNode::wait_fatal(self))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(RaftNode::shutdown(self))
    }

    fn watch(
        &self,
        filter: WatchFilter,
        from_revision: Option<u64>,
        progress_every: std::time::Duration,
    ) -> BoxFuture<'_, Result<Box<dyn EventStream>, WatchError>> {
        Box::pin(crate::watch::start(
            self.store().clone(),
            self.watch_hub().clone(),
            filter,
            from_revision,
            progress_every,
        ))
    }
}
