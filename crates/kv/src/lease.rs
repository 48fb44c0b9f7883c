//! Leases (leader mode): a TTL that many keys share. Keys attached to a lease are removed, all
//! in one log entry, when the lease is revoked or runs out. Only the leader counts a lease down;
//! a new leader restarts every lease's full TTL, so a leader change never shortens one (the
//! TTL is a lower bound, as in etcd). Multi-master mode has none ([`crate::event::leader_mode_only`]).

/// A lease's id: chosen by the leader, never 0, never reused.
pub type LeaseId = u64;

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
