//! The sans-IO CASPaxos core of Rampart's multi-master mode: one linearizable register per key,
//! no leader.
//!
//! [`Proposer`] and [`Acceptor`] are pure state machines. They take messages, replies and timer
//! firings, and return messages to send, durable writes to persist and timers to arm; they never
//! read a clock, sleep, spawn, touch a socket or a file, or draw entropy. The runtime (the
//! server) moves bytes, persists writes, and owns time, expressed here as logical ticks (the
//! server maps one tick to one millisecond). That is what lets `tests/simulation.rs` run
//! thousands of seeded schedules with loss, delay, duplication, reordering and crashes, and
//! check every history for linearizability.
//!
//! The protocol, the one-round-trip fast path and why it is safe, and the tombstone rules are
//! in `docs/paxos.md`.

mod acceptor;
mod ballot;
mod change;
mod message;
mod proposer;
pub mod rng;
mod voters;

pub use acceptor::{check_register, Acceptor, AcceptorOutput, DurableWrite, RegisterState};
pub use ballot::{Ballot, CounterCeiling, NodeId, COUNTER_CEILING_SLACK, COUNTER_PER_MS};
pub use change::{
    apply_change, decode_accepted_value, decode_register_value, encode_register_value, live_value, Change, Key,
    MalformedRegister, Outcome, UserValue, Value, ENVELOPE_BYTES_MAX, REVISION_UNKNOWN, TAG_EXPIRES,
    TAG_EXPIRES_REVISION, TAG_PERSISTENT, TAG_PERSISTENT_REVISION,
};
pub use message::{Reply, Request};
pub use proposer::{
    counter_floor_allowed, ProposalId, Proposer, ProposerConfig, ProposerOutput, Tick, Timer, CACHED_KEYS_MAX_DEFAULT,
    CACHED_VALUE_BYTES_MAX, COUNTER_BLOCK, IN_FLIGHT_MAX_DEFAULT,
};
pub use voters::Voters;

/// Longest key a proposer takes.
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest value a change may write.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Most acceptors in a membership.
pub const ACCEPTORS_MAX: usize = 64;

/// Every error of this crate. [`Error::maybe_applied`] tells a client whether a failed change
/// may still have taken effect (and may become visible later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid proposer configuration: {reason}")]
    Config { reason: &'static str },
    #[error("key is {len} bytes, over the limit of {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value is {len} bytes, over the limit of {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("too many proposals in flight (limit {max}); retry later")]
    InFlightLimit { max: usize },
    #[error("no quorum: {alive} acceptors believed alive, {needed} needed{}", applied_note(*maybe_applied))]
    NoQuorum { alive: usize, needed: usize, maybe_applied: bool },
    #[error("gave up after {attempts} attempts under contention or loss{}", applied_note(*maybe_applied))]
    GaveUp { attempts: u32, maybe_applied: bool },
    #[error("time budget of {budget_ticks} ticks exhausted{}", applied_note(*maybe_applied))]
    TimedOut { budget_ticks: u64, maybe_applied: bool },
    #[error("another proposer took the key over after this change was sent; it may have been applied")]
    Ambiguous,
    #[error("ballot counter exhausted")]
    CounterExhausted,
    #[error("corrupt acceptor state: {reason}")]
    CorruptState { reason: &'static str },
    /// Durable state or a configured counter above the clock-derived ballot ceiling: written by a
    /// message that validation now refuses (a buggy or hostile peer), or this node's clock is far
    /// behind. See `docs/paxos.md`, "Ballot bounds".
    #[error(
        "ballot counter {counter} is above the ballot counter ceiling {ceiling} (COUNTER_CEILING_SLACK + \
         COUNTER_PER_MS x milliseconds since 1970): state left by a forged or buggy peer message, or this \
         node's clock is far behind"
    )]
    AboveCeiling { counter: u64, ceiling: u64 },
}

fn applied_note(maybe_applied: bool) -> &'static str {
    if maybe_applied {
        "; the change may have been applied"
    } else {
        "; the change was not applied"
    }
}

impl Error {
    /// True when the change may have taken effect despite the error: an accept carrying it was
    /// sent. A client must not assume either way (read to find out, or use a CAS).
    pub fn maybe_applied(&self) -> bool {
        match self {
            Error::NoQuorum { maybe_applied, .. }
            | Error::GaveUp { maybe_applied, .. }
            | Error::TimedOut { maybe_applied, .. } => *maybe_applied,
            Error::Ambiguous => true,
            Error::Config { .. }
            | Error::KeyTooLarge { .. }
            | Error::ValueTooLarge { .. }
            | Error::InFlightLimit { .. }
            | Error::CounterExhausted
            | Error::CorruptState { .. }
            | Error::AboveCeiling { .. } => false,
        }
    }
}
