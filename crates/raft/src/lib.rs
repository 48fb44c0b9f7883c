//! rampart-raft: leader mode (master-slave) replication through openraft.
//!
//! The leader takes writes and replicates them; followers apply the log and
//! serve reads, forwarding writes to the leader. This crate holds openraft's
//! type configuration, the storage adapter over `rampart-storage`, the network
//! adapter over `rampart-transport`, and [`node::RaftNode`], which the server
//! calls for every client request. It knows nothing of RESP or HTTP.

pub mod clock;
pub mod log_writer;
pub mod network;
pub mod node;
pub mod replica;
pub mod snapshot;
pub mod state_machine;
pub mod store;
pub mod types;
pub mod validate;
pub mod watch;

pub use types::*;
