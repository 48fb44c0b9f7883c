//! Leader mode as a [`Replica`]: what the client APIs see of a [`RaftNode`].

use std::fmt::Write as _;

use bytes::Bytes;
use openraft::ServerState;
use rampart_kv::reserved::RESERVED_PREFIX;
use rampart_kv::{
    write_checked, BoxFuture, Command, Consistency, Item, KvError, Limits, Member, MemberInfo, MembershipError,
    NodeStatus, Page, PeerSnapshot, Replica, Response, Role, StatusField,
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

impl RaftNode {
    /// Runs `f` on this node's state, after making the read linearizable unless `Stale`.
    async fn read<T>(
        &self,
        consistency: Consistency,
        f: impl FnOnce(&View) -> rampart_storage::Result<T>,
    ) -> Result<T, KvError> {
        if consistency == Consistency::Linearizable {
            self.read_barrier().await.map_err(|e| KvError::from(e).for_read())?;
        }
        self.store().read(f).map_err(|e| KvError::Internal(e.to_string()))
    }
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
        Box::pin(self.read(consistency, move |v| {
            keys.iter().map(|k| Ok(v.kv_get(k)?.map(|x| Item { value: x.value, revision: Some(x.revision) }))).collect()
        }))
    }

    fn scan(
        &self,
        consistency: Consistency,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
        _values: bool,
    ) -> BoxFuture<'_, Result<Page, KvError>> {
        Box::pin(async move {
            let (items, more) = self.read(consistency, move |v| v.kv_scan(&prefix, after.as_deref(), limit)).await?;
            let next_after = if more { items.last().map(|(k, _)| k.clone()) } else { None };
            let items =
                items.into_iter().map(|(k, v)| (k, Item { value: v.value, revision: Some(v.revision) })).collect();
            Ok(Page { items, next_after })
        })
    }

    fn count(&self, consistency: Consistency) -> BoxFuture<'_, Result<u64, KvError>> {
        // The reserved namespace (rampart's own users) is not part of the client's key space;
        // it holds few keys, counted in the same read.
        Box::pin(self.read(consistency, |v| {
            let reserved = v.kv_scan(RESERVED_PREFIX, None, usize::MAX)?.0.len() as u64;
            Ok(v.kv_len()?.saturating_sub(reserved))
        }))
    }

    fn has_revisions(&self) -> bool {
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

    fn render_metrics(&self, out: &mut String) {
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
    }

    fn wait_fatal(&self) -> BoxFuture<'_, String> {
        Box::pin(RaftNode::wait_fatal(self))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(RaftNode::shutdown(self))
    }
}
