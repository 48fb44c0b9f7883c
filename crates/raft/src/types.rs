//! The replicated command set, its results, and openraft's type configuration.

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

/// How `Set` treats an existing key (Redis NX / XX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCond {
    Always,
    IfAbsent,
    IfPresent,
}

/// A write that goes through the log. Applied atomically, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// SET (with NX/XX and GET), GETSET.
    Set { key: Vec<u8>, value: Vec<u8>, cond: SetCond, return_old: bool },
    /// MSET: all pairs in one entry.
    MSet { pairs: Vec<(Vec<u8>, Vec<u8>)> },
    /// DEL of many keys.
    Del { keys: Vec<Vec<u8>> },
    /// INCR/DECR/INCRBY/DECRBY.
    IncrBy { key: Vec<u8>, delta: i64 },
    /// APPEND.
    Append { key: Vec<u8>, value: Vec<u8> },
    /// CAS key expected new: compare the current value (None = absent).
    Cas { key: Vec<u8>, expected: Option<Vec<u8>>, new: Vec<u8> },
    /// HTTP PUT ?cas=REV: set only if the key's revision is `revision` (0 = absent).
    PutIfRevision { key: Vec<u8>, revision: u64, value: Vec<u8> },
    /// HTTP DELETE of one key (reports the revision of the delete).
    Delete { key: Vec<u8> },
    /// Many client commands proposed together as one log entry (one fsync),
    /// applied in order; they share the entry's index as their revision.
    Batch(Vec<Command>),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Command::Set { .. } => "set",
            Command::MSet { .. } => "mset",
            Command::Del { .. } => "del",
            Command::IncrBy { .. } => "incrby",
            Command::Append { .. } => "append",
            Command::Cas { .. } => "cas",
            Command::PutIfRevision { .. } => "put_if_revision",
            Command::Delete { .. } => "delete",
            Command::Batch(_) => "batch",
        };
        f.write_str(name)
    }
}

/// The result of applying a [`Command`]; `revision` is its log index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub revision: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Set/MSet/PutIfRevision: whether it was written, and the old value if asked.
    Written { written: bool, old: Option<Vec<u8>>, current_revision: u64 },
    /// Del/Delete: how many keys were removed.
    Deleted { count: u64 },
    /// IncrBy: the new value. Append: the new length.
    Integer(i64),
    /// Cas: whether it swapped.
    Swapped(bool),
    /// The command was rejected by the state machine (nothing changed).
    Rejected(String),
    /// The outcomes of a [`Command::Batch`], in order.
    Batch(Vec<Outcome>),
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
