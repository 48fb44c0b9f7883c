//! rampart-lb: the load balancer behind `rampart lb`.
//!
//! - [`algo`]: balancing algorithms, pure (no I/O, no clock).
//! - [`config`]: TOML and command-line configuration, validation.
//! - [`backend`], [`frontend`]: run-time state, ejection and retry budget.
//! - [`fast`]: the HTTP/1.1 fast path for clients; [`http`]: hyper-served
//!   connections and the request logic; [`h1client`]: the HTTP/1.1 client
//!   to backends; [`pool`]: keep-alive connections to backends; [`tcp`]: L4.
//! - [`access_log`]: observability (counters and latency histograms come
//!   from the `rampart-metrics` crate); [`io`]: idle detection.
//! - [`health`]: active health checks; [`probe`]: one bounded HTTP exchange
//!   through hyper's client (health checks, reload through the admin API).
//! - [`server`]: listeners, reloads; [`admin`]: the admin HTTP API;
//!   [`run`]: starting both, and the typed process entry (`run`,
//!   `send_reload`); the `rampart lb` flags live in the binary
//!   (`crates/cli/src/lb_flags.rs`).
//!
//! It stands alone: it knows nothing of raft, paxos or storage.
//!
//! # Module graph
//!
//! Modules form a DAG; an arrow means "uses", and no module may use one
//! above it. Leaves (`algo`, `io`, `access_log`, `h1client`, `probe`) use no
//! other module.
//!
//! ```text
//! run -> admin -> server -> fast -> http -> frontend -> backend -> pool -> h1client
//!                                  tcp, health     (http also -> h1client, io, access_log)
//! config -> algo            backend -> config, algo    fast -> h1client
//! ```
//!
//! In full (every edge): `run`: admin, config, server, probe · `admin`:
//! server, frontend, backend · `server`: fast, http, tcp, health, frontend,
//! backend, pool, config · `fast`: http, frontend, h1client · `http`:
//! frontend, backend, h1client, io, access_log, config, algo · `tcp`:
//! frontend, backend, io, access_log, algo · `health`: backend, config, algo,
//! probe · `frontend`: backend, h1client, config, algo · `backend`: pool,
//! config, algo · `pool`: h1client · `config`: algo.
//!
//! The response body read by `h1client` tells whoever owns it how it ended
//! through the [`h1client::BodyEnd`] trait (the frontend's `ActiveGuard`
//! implements it), so the client needs neither pools nor frontends; the
//! admin API is started by `run`, so `server` never reaches up to `admin`.

pub mod access_log;
pub mod admin;
pub mod algo;
pub mod backend;
pub mod config;
pub mod fast;
pub mod frontend;
pub mod h1client;
pub mod health;
pub mod http;
pub mod io;
pub mod pool;
pub mod probe;
pub mod retry;
pub mod run;
pub mod server;
pub mod tcp;

pub use server::{Lb, LbError};
