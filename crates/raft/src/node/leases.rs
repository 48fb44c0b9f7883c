//! Leases on the leader: only the leader counts them down, in memory, by its monotonic clock
//! ([`crate::clock::MonoClock`]). The lease records themselves (id, TTL, attached keys) are in
//! the replicated state; deadlines are not.
//!
//! - A leader gives every lease a full TTL from the moment it first looks at it in its term
//!   (the lease expirer looks at every lease each [`LEASE_CHECK_INTERVAL`]), so a leader change
//!   never shortens a lease: a lease lives at least its TTL after its last keepalive, and at
//!   most its TTL after the later of its last keepalive and the last leader change, plus one
//!   check interval and the commit of the revoke.
//! - A keepalive needs no log entry: it changes only the leader's deadline, which no other node
//!   uses (a new leader restarts the full TTL anyway). It is served after a read-index round, so
//!   a deposed leader cannot acknowledge one. Followers forward keepalives and lease reads to
//!   the leader (`PeerRequest::Lease`).
//! - A lease whose deadline passed is dead: keepalives and reads answer "not found" at once,
//!   and the lease expirer proposes `LeaseRevoke { expired: true }`, one entry at a time.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rampart_kv::lease::{LeaseId, KEYS_PER_LEASE_MAX};
use serde::{Deserialize, Serialize};

use super::forward::{RETRY_PAUSE, UNREACHABLE_LEADER_PAUSE};
use super::{RaftNode, WriteError};
use crate::network::{ForwardError, PeerRequest, PeerResponse};
use crate::types::{Command, NodeId, Outcome};

/// How often the leader's lease expirer looks for leases whose deadline passed.
pub const LEASE_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Most leases one pass of the lease expirer revokes (one entry each, one in flight at a time):
/// with [`LEASE_CHECK_INTERVAL`], at most 640 expiries a second, so a mass expiry cannot flood
/// the log ahead of client writes.
pub const LEASE_REVOKES_PER_PASS_MAX: usize = 64;

/// A lease as the leader reports it (and answers a forwarded keepalive or read with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    pub id: LeaseId,
    pub ttl_ms: u64,
    pub remaining_ms: u64,
    /// The attached keys in order (empty in a keepalive's answer).
    pub keys: Vec<Vec<u8>>,
}

/// The leader's deadlines (monotonic ms), for the term they were set in: a node that leads
/// again in a later term starts them afresh.
#[derive(Debug, Default)]
pub struct LeaseClock {
    inner: Mutex<(u64, HashMap<LeaseId, u64>)>,
}

impl LeaseClock {
    fn with_term<T>(&self, term: u64, f: impl FnOnce(&mut HashMap<LeaseId, u64>) -> T) -> T {
        let mut g = self.inner.lock();
        if g.0 != term {
            *g = (term, HashMap::new());
        }
        f(&mut g.1)
    }

    /// Lease `id`'s deadline in `term`: a full `ttl_ms` from `now` the first time it is asked.
    pub fn deadline(&self, term: u64, id: LeaseId, ttl_ms: u64, now: u64) -> u64 {
        self.with_term(term, |m| *m.entry(id).or_insert(now.saturating_add(ttl_ms)))
    }

    /// Renews lease `id` to `now + ttl_ms`; `None` if its deadline has already passed (it is
    /// dead; its revoke is on its way).
    pub fn renew(&self, term: u64, id: LeaseId, ttl_ms: u64, now: u64) -> Option<u64> {
        self.with_term(term, |m| {
            let d = m.entry(id).or_insert(now.saturating_add(ttl_ms));
            if *d <= now {
                return None;
            }
            *d = now.saturating_add(ttl_ms);
            Some(*d)
        })
    }

    /// The leases of `leases` (id, TTL) whose deadline is at or before `now`, earliest first, at
    /// most `max`; deadlines of leases no longer in `leases` are dropped.
    pub fn due(&self, term: u64, leases: &[(LeaseId, u64)], now: u64, max: usize) -> Vec<LeaseId> {
        self.with_term(term, |m| {
            let live: std::collections::HashSet<LeaseId> = leases.iter().map(|(id, _)| *id).collect();
            m.retain(|id, _| live.contains(id));
            let mut due: Vec<(u64, LeaseId)> = leases
                .iter()
                .map(|&(id, ttl)| (*m.entry(id).or_insert(now.saturating_add(ttl)), id))
                .filter(|(d, _)| *d <= now)
                .collect();
            due.sort_unstable();
            due.into_iter().take(max).map(|(_, id)| id).collect()
        })
    }

    /// Forgets lease `id` (revoked).
    pub fn forget(&self, id: LeaseId) {
        self.inner.lock().1.remove(&id);
    }
}

fn forward_error(e: WriteError) -> ForwardError {
    match e {
        WriteError::TryAgain => ForwardError::NotLeader { leader: None },
        WriteError::ClusterDown(m) => ForwardError::NoQuorum(m),
        WriteError::Timeout(m) => ForwardError::Unknown(m),
        WriteError::Rejected(m) => ForwardError::Rejected(m),
    }
}

/// Runs until the node is dropped: each [`LEASE_CHECK_INTERVAL`], while this node leads, revokes
/// (at most [`LEASE_REVOKES_PER_PASS_MAX`]) leases whose deadline passed.
pub(super) async fn lease_expirer_loop(node: Weak<RaftNode>) {
    let mut tick = tokio::time::interval(LEASE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(n) = node.upgrade() else { return };
        let Some(term) = n.leader_term() else { continue };
        if let Err(e) = n.expire_leases(term).await {
            tracing::debug!(error = %e, "lease expirer pass stopped");
        }
    }
}

impl RaftNode {
    /// This node's term while it leads.
    pub(crate) fn leader_term(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.state == openraft::ServerState::Leader).then_some(m.current_term)
    }

    /// The monotonic clock leases are counted down by (tests move it with `advance`).
    pub fn lease_clock(&self) -> &crate::clock::MonoClock {
        &self.mono
    }

    /// Leases the lease expirer revoked through the log while this node led.
    pub fn expired_leases_total(&self) -> u64 {
        self.expired_leases.load(Ordering::Relaxed)
    }

    /// Starts the count of a lease this leader just granted (`resp`: the grant's answer).
    pub(super) fn lease_granted(&self, resp: &crate::types::Response, ttl_ms: u64) {
        if let (Outcome::Integer(id), Some(term)) = (&resp.outcome, self.leader_term()) {
            self.leases.deadline(term, *id as LeaseId, ttl_ms, self.mono.now_ms());
        }
    }

    /// Forgets the deadline of a revoked lease.
    pub(crate) fn forget_lease(&self, id: LeaseId) {
        self.leases.forget(id);
    }

    /// On the leader: whether lease `id` is alive by its count (exists in the state and its
    /// deadline has not passed). `None` when this node does not lead.
    pub(crate) fn lease_alive_here(&self, id: LeaseId, ttl_ms: u64) -> Option<bool> {
        let term = self.leader_term()?;
        let now = self.mono.now_ms();
        Some(self.leases.deadline(term, id, ttl_ms, now) > now)
    }

    /// One pass of the lease expirer: proposes a revoke of each due lease, one at a time.
    async fn expire_leases(&self, term: u64) -> Result<u64, String> {
        let store = self.store.clone();
        let leases = tokio::task::spawn_blocking(move || store.read(|v| v.lease_list()))
            .await
            .map_err(|e| format!("lease expirer read task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        let due = self.leases.due(term, &leases, self.mono.now_ms(), LEASE_REVOKES_PER_PASS_MAX);
        let mut revoked = 0;
        for id in due {
            if self.leader_term() != Some(term) {
                break;
            }
            let deadline = Instant::now() + self.cfg.request_timeout;
            match self.propose(Command::LeaseRevoke { id, expired: true }, deadline).await {
                Ok(resp) => match resp.outcome {
                    Outcome::Deleted { .. } => {
                        revoked += 1;
                        self.expired_leases.fetch_add(1, Ordering::Relaxed);
                        self.leases.forget(id);
                    }
                    other => return Err(format!("unexpected result of a lease expiry: {other:?}")),
                },
                // Revoked meanwhile by a client.
                Err(ForwardError::Rejected(_)) => self.leases.forget(id),
                Err(ForwardError::NotLeader { .. }) => break,
                Err(e) => return Err(format!("lease expiry entry: {e}")),
            }
        }
        Ok(revoked)
    }

    /// Serves a keepalive (`keepalive`) or a read of lease `id` here, as the leader: after a
    /// read-index round (leadership confirmed by a quorum, every committed entry applied).
    pub(super) async fn lease_local(&self, id: LeaseId, keepalive: bool) -> Result<Option<LeaseView>, ForwardError> {
        let Some(term) = self.leader_term() else {
            return Err(ForwardError::NotLeader { leader: self.raft.metrics().borrow().current_leader });
        };
        self.read_barrier().await.map_err(forward_error)?;
        if self.leader_term() != Some(term) {
            return Err(ForwardError::NotLeader { leader: None });
        }
        let store = self.store.clone();
        let found = tokio::task::spawn_blocking(move || {
            store.read(|v| {
                let Some(ttl) = v.lease_get(id)? else { return Ok(None) };
                let keys = if keepalive { Vec::new() } else { v.lease_keys(id, KEYS_PER_LEASE_MAX)? };
                Ok(Some((ttl, keys)))
            })
        })
        .await
        .map_err(|e| ForwardError::Unknown(format!("lease read task failed: {e}")))?
        .map_err(|e| ForwardError::Unknown(e.to_string()))?;
        let Some((ttl_ms, keys)) = found else { return Ok(None) };
        let now = self.mono.now_ms();
        if keepalive {
            return Ok(self.leases.renew(term, id, ttl_ms, now).map(|_| LeaseView {
                id,
                ttl_ms,
                remaining_ms: ttl_ms,
                keys,
            }));
        }
        let deadline = self.leases.deadline(term, id, ttl_ms, now);
        if deadline <= now {
            return Ok(None);
        }
        let bytes: usize = keys.iter().map(Vec::len).sum();
        if bytes > self.cfg.limits.reply_bytes_max {
            return Err(ForwardError::Rejected(format!(
                "lease {id}'s keys ({bytes} bytes) exceed reply_bytes_max ({} bytes)",
                self.cfg.limits.reply_bytes_max
            )));
        }
        Ok(Some(LeaseView { id, ttl_ms, remaining_ms: deadline - now, keys }))
    }

    /// A keepalive or read of lease `id` from any node: served by the leader (forwarded to it
    /// from a follower), retried on a new leader within the request timeout.
    pub async fn lease_query(&self, id: LeaseId, keepalive: bool) -> Result<Option<LeaseView>, WriteError> {
        let deadline = Instant::now() + self.cfg.request_timeout;
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let result = if leader == self.id {
                self.lease_local(id, keepalive).await
            } else {
                self.forward_lease(leader, id, keepalive, deadline).await
            };
            match result {
                Err(ForwardError::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other.map_err(WriteError::from),
            }
        }
    }

    async fn forward_lease(
        &self,
        leader: NodeId,
        id: LeaseId,
        keepalive: bool,
        deadline: Instant,
    ) -> Result<Option<LeaseView>, ForwardError> {
        let Some(addr) = self.peer_addr_of(leader) else {
            return Err(ForwardError::NotLeader { leader: None });
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match self.peers.call(leader, &addr, &PeerRequest::Lease { id, keepalive }, left).await {
            Ok(PeerResponse::Lease(r)) => r,
            Ok(_) => Err(ForwardError::Unknown("leader answered a lease request with the wrong message".into())),
            Err(e) if e.certainly_not_delivered() => {
                self.wait_leader_change(leader, deadline.min(Instant::now() + UNREACHABLE_LEADER_PAUSE)).await;
                Err(ForwardError::NotLeader { leader: None })
            }
            Err(e) => Err(ForwardError::Unknown(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_term_restarts_every_deadline_and_a_passed_one_cannot_be_renewed() {
        let c = LeaseClock::default();
        assert_eq!(c.deadline(1, 7, 1_000, 100), 1_100);
        assert_eq!(c.deadline(1, 7, 1_000, 900), 1_100, "asked again: unchanged");
        assert_eq!(c.renew(1, 7, 1_000, 1_000), Some(2_000));
        assert_eq!(c.due(1, &[(7, 1_000), (8, 500)], 1_999, 10), Vec::<LeaseId>::new());
        assert_eq!(c.due(1, &[(7, 1_000), (8, 500)], 2_000, 10), vec![7], "8 was first seen now");
        assert_eq!(c.renew(1, 7, 1_000, 2_000), None, "a passed deadline is final");
        // A later term (this node leads again): a full TTL from then, whatever was left.
        assert_eq!(c.deadline(2, 7, 1_000, 2_100), 3_100);
        // Leases gone from the state are dropped; due ones come earliest first, bounded.
        assert_eq!(c.deadline(2, 8, 500, 2_200), 2_700);
        assert_eq!(c.due(2, &[(8, 500)], 10_000, 10), vec![8]);
        assert_eq!(c.deadline(2, 7, 1_000, 10_000), 11_000, "7 was dropped: counted afresh");
        assert_eq!(c.deadline(2, 9, 1_000, 0), 1_000);
        assert_eq!(c.due(2, &[(7, 1_000), (8, 500), (9, 1_000)], 20_000, 2), vec![9, 8], "earliest first, at most 2");
    }
}
