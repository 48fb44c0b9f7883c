//! openraft's type configuration for leader mode. The command set and its results are
//! `rampart-kv`'s: a log entry is a [`Command`], its result a [`Response`].

/// A node's id in the cluster (openraft wants a plain integer type).
pub type NodeId = u64;

/// What the cluster knows about a member: where to reach it (shared with multi-master mode).
pub type NodeInfo = rampart_kv::MemberInfo;

pub use rampart_kv::{Command, Outcome, Response, SetCond};

openraft::declare_raft_types!(
    /// openraft's type configuration for leader mode.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type StorageError = openraft::StorageError<NodeId>;
