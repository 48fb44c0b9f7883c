//! Failure detection for Rampart: a phi-accrual detector per peer and the membership table the
//! server renders (`GET /v1/cluster/members`, `rampart cluster members`, Prometheus).
//!
//! Pure: times come in as `u64` milliseconds from whatever monotonic clock the runtime uses;
//! nothing here reads a clock, sleeps or touches the network. The runtime sends and receives the
//! heartbeats and calls [`Membership::heartbeat`] on arrival.
//!
//! # Phi accrual
//! As in Hayashibara et al. and its Cassandra and Akka adaptations: the detector keeps a sliding
//! window of heartbeat inter-arrival times and models them as a normal distribution (mean plus
//! an acceptable pause, standard deviation floored at a minimum). `phi(t) = -log10(P(a heartbeat
//! arrives later than t))`, so phi 1 means a 10% chance that a heartbeat this late still comes,
//! phi 3 means 0.1%, phi 8 means 1e-8. The normal tail uses the logistic approximation of
//! Bowling et al. (2009), computed in a form that never overflows.

mod detector;
mod heartbeats;
mod table;

pub use detector::{PeerState, PhiAccrual, PhiConfig, PHI_MAX};
pub use heartbeats::Heartbeats;
pub use table::{Membership, PeerId, PeerSnapshot};

/// Every error of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid failure detector configuration: {reason}")]
    Config { reason: &'static str },
    #[error("unknown peer {0}")]
    UnknownPeer(PeerId),
}
