//! rampart-lb: the load balancer behind `rampart lb`.
//!
//! - [`algo`]: balancing algorithms, pure (no I/O, no clock).
//! - [`config`]: TOML and command-line configuration, validation.
//! - [`backend`], [`frontend`]: run-time state, ejection and retry budget;
//!   [`retry`]: the retry policy every proxy path shares.
//! - [`fast`]: the HTTP/1.1 fast path for clients; [`http`]: hyper-served
//!   connections and the request logic; [`h1client`]: the HTTP/1.1 client
//!   to backends; [`pool`]: keep-alive connections to backends; [`tcp`]: L4.
//! - [`access_log`]: observability (counters and latency histograms come
//!   from the `rampart-metrics` crate); [`io`]: idle detection.
//! - [`workers`]: the worker threads of `--threads N`, one single-threaded
//!   runtime each, sharing nothing on the request path.
//! - [`tls`]: TLS with rustls: frontends that terminate it, backends spoken
//!   to over it, and the one function that opens a backend connection.
//! - [`health`]: active health checks; [`probe`]: one bounded HTTP exchange
//!   through hyper's client (health checks, reload through the admin API).
//! - [`server`]: listeners, reloads; [`admin`]: the admin HTTP API;
//!   [`run`]: starting both, and the typed process entry ([`run::run`] with
//!   [`run::RunOptions`], [`run::send_reload`] with [`run::ReloadTarget`]);
//!   the `rampart lb` flags live in the binary (`crates/cli/src/lb_flags.rs`).
//!
//! It stands alone: it knows nothing of raft, paxos or storage.
//!
//! # Module graph
//!
//! Modules form a DAG; an arrow means "uses", and no module may use one
//! above it. Leaves (`algo`, `io`, `access_log`, `tls`, `workers`) use no other module.
//!
//! ```text
//! run ─> admin ─> server ─┬─> fast ─> http ─┬─> retry ─> frontend ─> backend ─> pool ─> h1client ─> tls
//!  │                      ├─> tcp ──────────┘                           └─> config ─> algo    (config -> tls)
//!  └─> probe <─ health <──┘       (http, tcp also -> io, access_log; http, fast, frontend -> h1client;
//!        └─> tls                   http, tcp, health -> tls)
//! ```
//!
//! In full, every edge (checked against the code by `tests/module_graph.rs`):
//!
//! - `run`: admin, config, probe, server, workers
//! - `admin`: backend, config, frontend, io, server
//! - `server`: backend, config, fast, frontend, health, http, pool, tcp, workers
//! - `fast`: backend, frontend, h1client, http
//! - `http`: access_log, algo, backend, config, frontend, h1client, io, retry, tls
//! - `tcp`: access_log, algo, backend, frontend, io, retry, tls
//! - `health`: algo, backend, config, probe, tls
//! - `retry`: backend, config, frontend
//! - `frontend`: algo, backend, config, h1client, pool
//! - `backend`: algo, config, pool
//! - `pool`: h1client, workers
//! - `config`: algo, tls
//! - `h1client`, `probe`: tls
//! - `algo`, `io`, `access_log`, `tls`, `workers`: none
//!
//! Where the cuts are: the response body read by `h1client` tells whoever
//! owns it how it ended through the [`h1client::BodyEnd`] trait (the
//! frontend's `ActiveGuard` implements it), so the client needs neither pools
//! nor frontends; the admin API is started by `run`, so `server` never
//! reaches up to `admin`; which backend an attempt goes to, and whether a
//! failed one may be retried, is `retry`'s alone, below both proxies.

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
pub mod tls;
pub mod workers;

pub use server::{Lb, LbError};
