//! rampart-lb: the load balancer behind `rampart lb`.
//!
//! - [`algo`]: balancing algorithms, pure (no I/O, no clock).
//! - [`config`]: TOML and command-line configuration, validation.
//! - [`backend`], [`frontend`]: run-time state, ejection and retry budget.
//! - [`fast`]: the HTTP/1.1 fast path for clients; [`http`]: hyper-served
//!   connections and the request logic; [`h1client`]: the HTTP/1.1 client
//!   to backends; [`pool`]: keep-alive connections to backends; [`tcp`]: L4.
//! - [`access_log`], [`stats`]: observability; [`io`]: idle detection.
//! - [`health`]: active health checks.
//! - [`server`]: listeners, reloads; [`admin`]: the admin HTTP API.
//! - [`cli`]: `rampart lb` flags and entry point.
//!
//! It stands alone: it knows nothing of raft, paxos or storage.

pub mod access_log;
pub mod admin;
pub mod algo;
pub mod backend;
pub mod cli;
pub mod config;
pub mod fast;
pub mod frontend;
pub mod h1client;
pub mod health;
pub mod http;
pub mod io;
pub mod pool;
pub mod server;
pub mod stats;
pub mod tcp;

pub use server::{Lb, LbError};
