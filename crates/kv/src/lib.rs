//! rampart-kv: the command model shared by both replication modes.
//!
//! - [`command`]: the write commands clients send ([`Command`]) and the per-key operations they
//!   are made of ([`KeyOp`]).
//! - [`outcome`]: what a command answers ([`Outcome`], [`Response`]).
//! - [`apply`]: the meaning of every command as pure functions: the current value and its
//!   metadata in, the new value and the reply out. Leader mode's state machine and multi-master
//!   mode's change function both call these and nothing else decides a reply.
//! - [`event`]: what watchers see of each write ([`Event`]), and the watch stream.
//! - [`lease`]: leases and their named limits (leader mode).
//! - [`limits`]: every size limit, named, with its unit.
//! - [`reserved`]: the key namespace that holds rampart's own replicated data (users).
//! - [`replica`]: the [`Replica`] trait, the only way the client APIs reach a replication mode,
//!   and the errors a client can act on ([`KvError`]).
//!
//! This crate does no I/O: it never touches a socket, a file, a clock or a thread.

pub mod apply;
pub mod command;
pub mod event;
pub mod lease;
pub mod limits;
pub mod outcome;
pub mod replica;
pub mod reserved;

pub use apply::{apply_command, apply_op, combine, plan, Combine, Ctx, Current, Record, State, Write};
pub use command::{Command, ExpireCond, KeyOp, SetCond, Ttl};
pub use event::{
    leader_mode_only, Cause, Event, EventKind, EventStream, NotifyClass, WatchError, WatchFilter, WatchMessage,
};
pub use lease::{LeaseGrant, LeaseId, LeaseInfo};
pub use limits::Limits;
pub use outcome::{Outcome, Response};
pub use replica::{
    write_checked, BoxFuture, Consistency, Item, KvError, Member, MemberInfo, MembershipError, NodeStatus, Page,
    PeerSnapshot, Replica, Role, StatusField,
};
