//! Multi-master mode as a [`Replica`]: what the client APIs see of an [`MmNode`].

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::Bytes;
use rampart_kv::{
    plan, write_checked, BoxFuture, Command, Consistency, Item, KeyOp, KvError, Limits, Member, MemberInfo,
    MembershipError, NodeStatus, Page, PeerSnapshot, Replica, Response, Role, StatusField,
};

use rampart_kv::limits::INLINE_READ_KEYS_MAX;

use crate::command::{combine_results, KEYS_PER_COMMAND_MAX};
use crate::{MmError, MmNode, Outcome, KEY_BYTES_MAX, SCAN_PAGE_MAX, VALUE_BYTES_MAX};

/// A failed membership change as the client APIs report it.
fn membership_error(e: MmError) -> MembershipError {
    match e {
        MmError::BadRequest(m) | MmError::Conflict(m) => MembershipError::Invalid(m),
        MmError::NoQuorum(m) | MmError::Busy(m) | MmError::MaybeApplied(m) => MembershipError::TryAgain(m),
        MmError::TooLarge(m) | MmError::Internal(m) => MembershipError::Invalid(m),
    }
}

impl MmNode {
    /// Pipelined commands: all their changes go to the proposer together, in order, so changes on
    /// one key apply in the pipeline's order; each command gets its own result.
    async fn write_planned(&self, cmds: Vec<Command>) -> Vec<Result<Response, KvError>> {
        let mut plans = Vec::with_capacity(cmds.len());
        let mut all = Vec::new();
        for cmd in cmds {
            match plan(cmd) {
                Ok((changes, how)) => {
                    plans.push(Ok((changes.len(), how)));
                    all.extend(changes);
                }
                Err(e) => plans.push(Err(e)),
            }
        }
        let mut results = self.changes(all).await.into_iter();
        plans
            .into_iter()
            .map(|p| match p {
                Ok((n, how)) => combine_results(how, results.by_ref().take(n).collect()),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// Linearizable reads: one read round per key, in chunks of at most [`KEYS_PER_COMMAND_MAX`]
    /// keys and of no more than the reply budget could hold at the value limit, so a chunk's
    /// answers never hold much more than `reply_bytes_max`. Each value is handed to `keep`.
    /// A read judged expiry at its proposer's stamp (and made an expired value a tombstone), so
    /// what it answers is not judged again here.
    async fn read_each(
        &self,
        keys: &[Bytes],
        mut keep: impl FnMut(Option<Item>) -> Result<(), KvError>,
    ) -> Result<(), KvError> {
        let limits = Replica::limits(self);
        let chunk_keys = (limits.reply_bytes_max / limits.value_bytes_max.max(1)).clamp(1, KEYS_PER_COMMAND_MAX);
        for chunk in keys.chunks(chunk_keys) {
            let reads = chunk.iter().map(|k| (k.to_vec(), KeyOp::Read)).collect();
            for r in self.changes(reads).await {
                match r {
                    Ok(Outcome::Value(register)) => keep(crate::changes::live_item(&register, 0)?)?,
                    Ok(other) => return Err(KvError::Internal(format!("unexpected read outcome {other:?}"))),
                    // A read has no effect: an unconfirmed read is simply not served.
                    Err(MmError::MaybeApplied(m)) => return Err(KvError::Timeout(format!("read not served: {m}"))),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// This node's own values of `keys` (stale reads), each handed to `keep`; on the blocking
    /// pool when there are many.
    async fn stale_each<T: Send + 'static>(
        &self,
        keys: Vec<Bytes>,
        mut acc: T,
        mut keep: impl FnMut(&mut T, Option<Item>) -> Result<(), KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let store = self.store.clone();
        let many = keys.len() > INLINE_READ_KEYS_MAX;
        // Stale reads judge expiry by this node's clock.
        let now_ms = self.shared.expiry_now_ms();
        let run = move || {
            for k in &keys {
                keep(&mut acc, crate::changes::stale_read(&store, k, now_ms)?)?;
            }
            Ok(acc)
        };
        if many {
            tokio::task::spawn_blocking(run)
                .await
                .unwrap_or_else(|e| Err(KvError::Internal(format!("read task failed: {e}"))))
        } else {
            run()
        }
    }

    /// Live keys, counted over merged scan pages within the request timeout.
    async fn count_keys(&self, consistency: Consistency) -> Result<u64, KvError> {
        let deadline = Instant::now() + self.config().request_timeout;
        let mut after: Option<Vec<u8>> = None;
        let mut n = 0u64;
        loop {
            let page = Replica::scan(self, consistency, Vec::new(), after, SCAN_PAGE_MAX, false).await?;
            // The reserved namespace (rampart's own users) is not part of the client's key space.
            n += page.items.iter().filter(|(k, _)| !rampart_kv::reserved::is_reserved(k)).count() as u64;
            match page.next_after {
                None => return Ok(n),
                Some(k) => after = Some(k),
            }
            if Instant::now() > deadline {
                return Err(KvError::Timeout("counting keys took longer than the request timeout".into()));
            }
        }
    }
}

impl Replica for MmNode {
    fn limits(&self) -> Limits {
        self.config().limits.min(Limits {
            key_bytes_max: KEY_BYTES_MAX,
            value_bytes_max: VALUE_BYTES_MAX,
            keys_per_command_max: KEYS_PER_COMMAND_MAX,
            reply_bytes_max: usize::MAX,
        })
    }

    fn write_many(&self, cmds: Vec<Command>) -> BoxFuture<'_, Vec<Result<Response, KvError>>> {
        // Revision CAS applies per key like any change (docs/paxos.md, "Revisions").
        Box::pin(write_checked(self.limits(), cmds, |_| Ok(()), move |valid| self.write_planned(valid)))
    }

    fn get_many(
        &self,
        consistency: Consistency,
        keys: Vec<Bytes>,
    ) -> BoxFuture<'_, Result<Vec<Option<Item>>, KvError>> {
        let mut budget = Replica::limits(self).reply_budget();
        let mut keep = move |out: &mut Vec<Option<Item>>, item: Option<Item>| {
            if let Some(item) = &item {
                budget.take(item.value.len())?;
            }
            out.push(item);
            Ok(())
        };
        Box::pin(async move {
            let out = Vec::with_capacity(keys.len().min(INLINE_READ_KEYS_MAX));
            if consistency == Consistency::Stale {
                return self.stale_each(keys, out, keep).await;
            }
            let mut out = out;
            self.read_each(&keys, |v| keep(&mut out, v)).await?;
            Ok(out)
        })
    }

    fn exists(&self, consistency: Consistency, keys: Vec<Bytes>) -> BoxFuture<'_, Result<u64, KvError>> {
        let count = |n: &mut u64, item: Option<Item>| {
            *n += u64::from(item.is_some());
            Ok(())
        };
        Box::pin(async move {
            if consistency == Consistency::Stale {
                return self.stale_each(keys, 0u64, count).await;
            }
            let mut n = 0u64;
            self.read_each(&keys, |v| count(&mut n, v)).await?;
            Ok(n)
        })
    }

    fn scan(
        &self,
        consistency: Consistency,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
        values: bool,
    ) -> BoxFuture<'_, Result<Page, KvError>> {
        Box::pin(async move {
            let stale = consistency == Consistency::Stale;
            let page = MmNode::scan(self, &prefix, after.as_deref(), limit, stale, values).await?;
            Ok(Page { items: page.items, next_after: page.next_after })
        })
    }

    fn count(&self, consistency: Consistency) -> BoxFuture<'_, Result<u64, KvError>> {
        Box::pin(self.count_keys(consistency))
    }

    fn revisions_are_global(&self) -> bool {
        // Per key: ballot counters, comparable only within one key (docs/paxos.md, "Revisions").
        false
    }

    fn status(&self) -> NodeStatus {
        let st = MmNode::status(self);
        let members = st
            .members
            .into_iter()
            .map(|(id, i)| Member {
                id,
                info: MemberInfo { peer_addr: i.peer_addr, resp_addr: i.resp_addr, http_addr: i.http_addr },
                voter: true,
            })
            .collect();
        NodeStatus {
            id: st.id,
            mode: "multi-master",
            role: Role::Peer,
            leader_id: None,
            members,
            applied_index: 0,
            commit_index: 0,
            fields: vec![
                ("config_epoch", StatusField::Number(st.epoch)),
                ("membership_change_under_way", StatusField::Number(u64::from(st.joint))),
                ("proposals_in_flight", StatusField::Number(st.proposals_in_flight)),
                ("cached_keys", StatusField::Number(st.cached_keys)),
            ],
        }
    }

    fn health(&self) -> Result<(), String> {
        if self.healthy() {
            Ok(())
        } else if let Some(why) = self.shared.not_voting() {
            Err(why)
        } else {
            Err("fewer than a majority of the members are alive".into())
        }
    }

    fn peer_health(&self) -> Vec<PeerSnapshot> {
        MmNode::peer_health(self)
    }

    fn add_member(&self, id: u64, info: MemberInfo) -> BoxFuture<'_, Result<(), MembershipError>> {
        Box::pin(async move {
            let change = crate::MemberChange::Add { id, peer_addr: info.peer_addr };
            self.change_membership(change).await.map(|_| ()).map_err(membership_error)
        })
    }

    fn remove_member(&self, id: u64) -> BoxFuture<'_, Result<(), MembershipError>> {
        Box::pin(async move {
            self.change_membership(crate::MemberChange::Remove { id }).await.map(|_| ()).map_err(membership_error)
        })
    }

    fn replace_member(&self, id: u64) -> BoxFuture<'_, Result<(), MembershipError>> {
        Box::pin(async move {
            self.change_membership(crate::MemberChange::Replace { id }).await.map(|_| ()).map_err(membership_error)
        })
    }

    fn render_metrics(&self, out: &mut String) {
        self.store.stats().render(out);
        let s = self.stats();
        let counters = [
            ("rampart_mm_proposals_total", "Changes submitted to this node's proposer.", s.proposals.load(Relaxed)),
            ("rampart_mm_proposals_ok_total", "Changes chosen.", s.proposals_ok.load(Relaxed)),
            (
                "rampart_mm_proposals_failed_total",
                "Changes that failed after starting.",
                s.proposals_failed.load(Relaxed),
            ),
            (
                "rampart_mm_acceptor_requests_total",
                "Paxos requests handled by this acceptor.",
                s.acceptor_requests.load(Relaxed),
            ),
            (
                "rampart_mm_acceptor_commits_total",
                "Group commits (fsyncs) of acceptor state.",
                s.acceptor_commits.load(Relaxed),
            ),
            (
                "rampart_mm_acceptor_registers_written_total",
                "Registers persisted by group commits.",
                s.acceptor_registers_written.load(Relaxed),
            ),
            (
                "rampart_mm_acceptor_jobs_expired_total",
                "Peer batches skipped because they waited for the acceptor longer than the peer timeout.",
                s.acceptor_jobs_expired.load(Relaxed),
            ),
            (
                "rampart_mm_keys_expired_total",
                "Expired keys this node's expirer turned into tombstones.",
                s.keys_expired.load(Relaxed),
            ),
            (
                "rampart_mm_tombstones_collected_total",
                "Tombstone registers this node's acceptor removed (tombstone collection).",
                s.tombstones_collected.load(Relaxed),
            ),
            (
                "rampart_mm_collection_blocked_total",
                "Tombstone collection rounds with due tombstones that could not hear from every voter.",
                s.collection_blocked.load(Relaxed),
            ),
            (
                "rampart_mm_peer_batches_dropped_total",
                "Request batches dropped because a peer had too many in flight or the acceptor queue was full.",
                s.peer_batches_dropped.load(Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let gauges = [
            ("rampart_mm_proposals_in_flight", s.proposals_in_flight.load(Relaxed)),
            ("rampart_mm_registers", s.registers.load(Relaxed)),
            ("rampart_mm_registers_in_memory", s.registers_in_memory.load(Relaxed)),
            ("rampart_mm_cached_keys", s.cached_keys.load(Relaxed)),
        ];
        for (name, v) in gauges {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {v}");
        }
        self.config().transport.stats.render_prometheus(out);
    }

    fn wait_fatal(&self) -> BoxFuture<'_, String> {
        Box::pin(MmNode::wait_fatal(self))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Every durable write is committed before it is acknowledged: nothing to flush.
        Box::pin(async {})
    }
}

impl From<MmError> for MembershipError {
    fn from(e: MmError) -> Self {
        MembershipError::Invalid(e.to_string())
    }
}
