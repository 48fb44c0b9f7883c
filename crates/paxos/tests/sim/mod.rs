//! The deterministic simulation of a CASPaxos cluster and the linearizability checker.

pub mod checker;
pub mod membership;
pub mod world;
