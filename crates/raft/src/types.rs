//! openraft's type configuration for leader mode. The command set and its results are
//! `rampart-kv`'s: a log entry is a [`Command`], its result a [`Response`].

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A node's id in the cluster (openraft wants a plain integer type).
pub type NodeId = u64;

/// What the cluster knows about a member: where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub peer_addr: String,
    #[serde(default)]
    pub resp_addr: String,
    #[serde(default)]
    pub http_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.peer_addr)
    }
}

pub use rampart_kv::{Command, Outcome, Response, SetCond};

impl From<NodeInfo> for rampart_kv::MemberInfo {
    fn from(n: NodeInfo) -> Self {
        rampart_kv::MemberInfo { peer_addr: n.peer_addr, resp_addr: n.resp_addr, http_addr: n.http_addr }
    }
}

impl From<rampart_kv::MemberInfo> for NodeInfo {
    fn from(m: rampart_kv::MemberInfo) -> Self {
        NodeInfo { peer_addr: m.peer_addr, resp_addr: m.resp_addr, http_addr: m.http_addr }
    }
}

openraft::declare_raft_types!(
    /// openraft's type configuration for leader mode.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type StorageError = openraft::StorageError<NodeId>;
