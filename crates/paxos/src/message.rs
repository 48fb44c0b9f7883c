//! The wire messages between proposers and acceptors. Serde types so the transport can frame
//! them; the core never serialises anything itself.

use crate::ballot::Ballot;
use crate::change::{Key, Value};
use serde::{Deserialize, Serialize};

/// Proposer → acceptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Phase 1: promise to refuse ballots below `ballot` and report what you accepted.
    Prepare {
        #[serde(with = "serde_bytes")]
        key: Key,
        ballot: Ballot,
    },
    /// Phase 2: accept `value` at `ballot`. Accepting also promises `ballot.successor()`, which is
    /// what lets the same proposer skip the next prepare (see `docs/paxos.md`). `base` is the
    /// accepted ballot of the value the change was applied to (its provenance).
    Accept {
        #[serde(with = "serde_bytes")]
        key: Key,
        ballot: Ballot,
        #[serde(with = "serde_bytes")]
        value: Value,
        base: Ballot,
    },
    /// A read's first try: report what you accepted, promising nothing and changing nothing.
    /// `ballot` only tags this attempt so replies can be matched to it.
    Peek {
        #[serde(with = "serde_bytes")]
        key: Key,
        ballot: Ballot,
    },
}

/// Acceptor → proposer. Each reply echoes the key and the ballot it answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The acceptor promised `ballot`; `accepted`/`value` is its last accepted ballot and value
    /// (`Ballot::ZERO` and `None` if it never accepted one), and `base` that value's provenance.
    Promise {
        #[serde(with = "serde_bytes")]
        key: Key,
        ballot: Ballot,
        accepted: Ballot,
        #[serde(with = "serde_bytes")]
        value: Value,
        base: Ballot,
    },
    /// The acceptor accepted the value at `ballot`.
    Accepted {
        #[serde(with = "serde_bytes")]
        key: Key,
        ballot: Ballot,
    },
    /// Refused: the acceptor has promised `promised`, which is at least `ballot`. A proposer
    /// fast-forwards its counter past it.
    Nack {
        #[serde(with = "serde_bytes")]
        key: Key,
        ballot: Ballot,
        promised: Ballot,
    },
    /// The answer to a [`Request::Peek`]: the acceptor's accepted ballot and value.
    Peeked {
        #[serde(with = "serde_bytes")]
        key: Key,
        ballot: Ballot,
        accepted: Ballot,
        #[serde(with = "serde_bytes")]
        value: Value,
    },
}

impl Request {
    pub fn key(&self) -> &[u8] {
        match self {
            Request::Prepare { key, .. } | Request::Accept { key, .. } | Request::Peek { key, .. } => key,
        }
    }

    pub fn ballot(&self) -> Ballot {
        match self {
            Request::Prepare { ballot, .. } | Request::Accept { ballot, .. } | Request::Peek { ballot, .. } => *ballot,
        }
    }
}

impl Reply {
    pub fn key(&self) -> &[u8] {
        match self {
            Reply::Promise { key, .. }
            | Reply::Accepted { key, .. }
            | Reply::Nack { key, .. }
            | Reply::Peeked { key, .. } => key,
        }
    }

    pub fn ballot(&self) -> Ballot {
        match self {
            Reply::Promise { ballot, .. }
            | Reply::Accepted { ballot, .. }
            | Reply::Nack { ballot, .. }
            | Reply::Peeked { ballot, .. } => *ballot,
        }
    }
}
