//! Leases (leader mode): a TTL that many keys share. Keys attached to a lease are removed, all
//! in one log entry, when the lease is revoked or runs out. Only the leader counts a lease down;
//! a new leader restarts every lease's full TTL, so a leader change never shortens one (the
//! TTL is a lower bound, as in etcd). Multi-master mode has none ([`crate::event::leader_mode_only`]).

/// A lease's id: chosen by the leader, never 0, never reused.
pub type LeaseId = u64;

/// The first lease id a state hands out (ids count up from it and are never reused).
pub const LEASE_ID_FIRST: LeaseId = 1;

/// Most leases alive at once.
pub const LEASES_MAX: usize = 10_000;
/// Most keys attached to one lease (so a revoke is one bounded log entry).
pub const KEYS_PER_LEASE_MAX: usize = 1_000;
/// The shortest lease TTL: below a few election timeouts a leader change could end it before
/// its holder can renew it.
pub const LEASE_TTL_MIN_MS: u64 = 2_000;
/// The longest lease TTL (one day).
pub const LEASE_TTL_MAX_MS: u64 = 86_400_000;

/// A granted or renewed lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: LeaseId,
    /// Its full TTL: it lives at least this long from now unless revoked.
    pub ttl_ms: u64,
}

/// A lease as `GET /v1/lease/{id}` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: LeaseId,
    pub ttl_ms: u64,
    /// What is left of it by the leader's count.
    pub remaining_ms: u64,
    /// The attached keys, in order.
    pub keys: Vec<Vec<u8>>,
}

/// The error of a command naming lease `id` that does not exist (revoked, ran out, or never
/// granted).
pub fn lease_not_found(id: LeaseId) -> String {
    format!("lease {id} not found (revoked, expired, or never granted)")
}

/// The error of a TTL outside [`LEASE_TTL_MIN_MS`]..=[`LEASE_TTL_MAX_MS`], or `None` if it fits.
pub fn ttl_out_of_range(ttl_ms: u64) -> Option<String> {
    if ttl_ms < LEASE_TTL_MIN_MS {
        Some(format!("lease TTL of {ttl_ms} ms is below the minimum of {LEASE_TTL_MIN_MS} ms (LEASE_TTL_MIN_MS)"))
    } else if ttl_ms > LEASE_TTL_MAX_MS {
        Some(format!("lease TTL of {ttl_ms} ms exceeds the maximum of {LEASE_TTL_MAX_MS} ms (LEASE_TTL_MAX_MS)"))
    } else {
        None
    }
}

/// The error of a grant when [`LEASES_MAX`] leases exist.
pub fn too_many_leases() -> String {
    format!("{LEASES_MAX} leases exist already (LEASES_MAX); revoke one first")
}

/// The error of attaching one more key to a lease that has [`KEYS_PER_LEASE_MAX`].
pub fn lease_full(id: LeaseId) -> String {
    format!("lease {id} has {KEYS_PER_LEASE_MAX} keys attached already (KEYS_PER_LEASE_MAX)")
}

/// The lease records of a state ([`crate::State::leases`]): leader mode keeps them with the
/// key-value state, in the same transaction, so they are applied, snapshotted and restored with
/// it. Only present keys are attached; each key to at most one lease.
pub trait Leases {
    type Error;
    /// Lease `id`'s TTL, if it exists.
    fn lease_ttl(&mut self, id: LeaseId) -> Result<Option<u64>, Self::Error>;
    /// How many leases exist.
    fn lease_count(&mut self) -> Result<usize, Self::Error>;
    /// Creates a lease of `ttl_ms` under a new id: never 0, never one handed out before
    /// (the state keeps a counter from [`LEASE_ID_FIRST`]).
    fn lease_create(&mut self, ttl_ms: u64) -> Result<LeaseId, Self::Error>;
    /// Removes lease `id` (its keys are detached first).
    fn lease_remove(&mut self, id: LeaseId) -> Result<(), Self::Error>;
    /// The keys attached to lease `id`, in key order.
    fn lease_keys(&mut self, id: LeaseId) -> Result<Vec<Vec<u8>>, Self::Error>;
    /// How many keys are attached to lease `id`, counting no further than `limit`.
    fn lease_key_count(&mut self, id: LeaseId, limit: usize) -> Result<usize, Self::Error>;
    /// The lease `key` is attached to.
    fn key_lease(&mut self, key: &[u8]) -> Result<Option<LeaseId>, Self::Error>;
    /// Attaches `key` to lease `id` (detaching it from any other).
    fn attach(&mut self, key: &[u8], id: LeaseId) -> Result<(), Self::Error>;
    /// Detaches `key` from its lease, if it has one.
    fn detach(&mut self, key: &[u8]) -> Result<(), Self::Error>;
}
