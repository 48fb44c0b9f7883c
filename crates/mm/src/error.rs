//! The errors of this crate: why a node could not start, and why a change failed as a client
//! must treat it (not applied, or outcome unknown). `command` maps the latter to client errors.

use std::net::SocketAddr;

use crate::PaxosError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid multi-master configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] rampart_storage::Error),
    #[error("acceptor state in {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("cannot listen for peers on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

/// Why a change failed, as a client must treat it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MmError {
    /// Not applied: fewer than a majority of the nodes answer.
    #[error("{0}")]
    NoQuorum(String),
    /// Not applied: overloaded or contended; retry.
    #[error("{0}")]
    Busy(String),
    /// The change may or may not have been applied (read to find out).
    #[error("{0}")]
    MaybeApplied(String),
    #[error("{0}")]
    TooLarge(String),
    /// Not applied: the request is wrong (a membership change that cannot be made).
    #[error("{0}")]
    BadRequest(String),
    /// Not applied: another membership change came first.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl From<PaxosError> for MmError {
    fn from(e: PaxosError) -> Self {
        let msg = e.to_string();
        if e.maybe_applied() {
            return MmError::MaybeApplied(msg);
        }
        match e {
            PaxosError::KeyTooLarge { .. } | PaxosError::ValueTooLarge { .. } => MmError::TooLarge(msg),
            PaxosError::NoQuorum { .. } => MmError::NoQuorum(msg),
            PaxosError::InFlightLimit { .. } | PaxosError::GaveUp { .. } | PaxosError::TimedOut { .. } => {
                MmError::Busy(msg)
            }
            PaxosError::Ambiguous
            | PaxosError::Config { .. }
            | PaxosError::CounterExhausted
            | PaxosError::CorruptState { .. }
            | PaxosError::AboveCeiling { .. } => MmError::Internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paxos_error_that_may_have_applied_is_never_reported_as_not_applied() {
        let maybe = [
            PaxosError::Ambiguous,
            PaxosError::NoQuorum { alive: 1, needed: 2, maybe_applied: true },
            PaxosError::GaveUp { attempts: 3, maybe_applied: true },
            PaxosError::TimedOut { budget_ticks: 5, maybe_applied: true },
        ];
        for e in maybe {
            let text = e.to_string();
            assert!(matches!(MmError::from(e), MmError::MaybeApplied(m) if m == text));
        }
        let not_applied = [
            (PaxosError::NoQuorum { alive: 1, needed: 2, maybe_applied: false }, "NoQuorum"),
            (PaxosError::GaveUp { attempts: 3, maybe_applied: false }, "Busy"),
            (PaxosError::TimedOut { budget_ticks: 5, maybe_applied: false }, "Busy"),
            (PaxosError::InFlightLimit { max: 4 }, "Busy"),
            (PaxosError::KeyTooLarge { len: 9, max: 8 }, "TooLarge"),
            (PaxosError::ValueTooLarge { len: 9, max: 8 }, "TooLarge"),
            (PaxosError::CounterExhausted, "Internal"),
        ];
        for (e, kind) in not_applied {
            let mapped = MmError::from(e.clone());
            let got = match &mapped {
                MmError::NoQuorum(_) => "NoQuorum",
                MmError::Busy(_) => "Busy",
                MmError::MaybeApplied(_) => "MaybeApplied",
                MmError::TooLarge(_) => "TooLarge",
                MmError::Internal(_) => "Internal",
                MmError::BadRequest(_) | MmError::Conflict(_) => "membership",
            };
            assert_eq!(got, kind, "{e}");
            assert_eq!(mapped.to_string(), e.to_string(), "the core's text is kept");
        }
    }
}
