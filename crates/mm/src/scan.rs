//! Scans: KEYS, SCAN, DBSIZE and `GET /v1/kv?prefix=` merge the durable registers of a majority.
//! For each key the value with the highest accepted ballot wins and tombstones are dropped; a
//! page ends at the smallest last key of any node that has more.

use std::collections::BTreeMap;

use rampart_storage::Store;

use crate::validate;
use crate::wire::{self, PeerRequest, PeerResponse, ScannedRegister};
use crate::{MmError, MmNode, SCAN_PAGE_MAX};

/// One node's answer to a scan: its registers in key order (tombstones included, so a merge can
/// tell a delete from a key it never saw) and whether it has more past the last one.
pub(crate) type NodePage = (Vec<ScannedRegister>, bool);

/// One page of a merged scan: live keys with their values, expiries and revisions, in key order,
/// and where the next page starts (`None` when the scan is complete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub items: Vec<(Vec<u8>, rampart_kv::Item)>,
    pub next_after: Option<Vec<u8>>,
}

impl MmNode {
    /// This node's page of a scan (what it answers a peer's [`PeerRequest::Scan`]).
    pub(crate) fn local_scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        values: bool,
    ) -> Result<NodePage, String> {
        read_page(&self.store, prefix, after, limit, values, wire::SCAN_REPLY_BYTES_MAX)
    }

    /// One page of live keys starting with `prefix`, after `after`. `stale`: this node's durable
    /// registers only. Otherwise the durable registers of a majority are merged, each key taking
    /// the value with the highest accepted ballot among them: every write acknowledged before the
    /// scan began is seen (or a later one), deletes included; a write still in flight may be seen
    /// too. It is not a snapshot of all keys at one instant.
    ///
    /// Without `values` the page's values are empty (for KEYS, SCAN and DBSIZE). A key whose
    /// expiry is at or before this node's expiry clock is left out (not written: the expirer and
    /// the next change on the key make it a tombstone).
    pub async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        stale: bool,
        values: bool,
    ) -> Result<ScanPage, MmError> {
        if let Some(why) = self.shared.not_voting() {
            return Err(MmError::NoQuorum(why));
        }
        let limit = limit.clamp(1, SCAN_PAGE_MAX);
        // This node's page is read on the blocking pool: a long read must not hold an async
        // worker, which also runs the heartbeats. Its bytes are bounded by the client reply
        // limit too (peers bound theirs by the wire's).
        let local = {
            let (store, prefix, after) = (self.store.clone(), prefix.to_vec(), after.map(<[u8]>::to_vec));
            let bytes_max = self.config().limits.reply_bytes_max.min(wire::SCAN_REPLY_BYTES_MAX);
            tokio::task::spawn_blocking(move || read_page(&store, &prefix, after.as_deref(), limit, values, bytes_max))
                .await
                .map_err(|e| MmError::Internal(format!("scan task failed: {e}")))?
                .map_err(MmError::Internal)?
        };
        if stale {
            return Ok(merge(vec![local], self.shared.expiry_now_ms()));
        }
        let req = PeerRequest::Scan {
            prefix: prefix.to_vec(),
            after: after.map(<[u8]>::to_vec),
            limit: limit as u32,
            values,
        };
        let answers = self.gather(local, req, (prefix, after, limit)).await?;
        Ok(merge(answers, self.shared.expiry_now_ms()))
    }

    /// Every key that has a register (tombstones and reserved keys included) after `after`, at
    /// most `limit`, merged from a quorum of the configuration's voters, and where the next page
    /// starts: what a membership change's catch-up reads through Paxos, one key at a time.
    pub(crate) async fn register_keys(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), MmError> {
        let limit = limit.clamp(1, SCAN_PAGE_MAX);
        let (store, after_owned) = (self.store.clone(), after.map(<[u8]>::to_vec));
        let local = tokio::task::spawn_blocking(move || {
            read_page(&store, b"", after_owned.as_deref(), limit, false, wire::SCAN_REPLY_BYTES_MAX)
        })
        .await
        .map_err(|e| MmError::Internal(format!("scan task failed: {e}")))?
        .map_err(MmError::Internal)?;
        let req = PeerRequest::Scan {
            prefix: Vec::new(),
            after: after.map(<[u8]>::to_vec),
            limit: limit as u32,
            values: false,
        };
        let answers = self.gather(local, req, (b"", after, limit)).await?;
        let bound = page_bound(&answers);
        let mut keys: Vec<Vec<u8>> = answers
            .into_iter()
            .flat_map(|(regs, _)| regs.into_iter().map(|r| r.key))
            .filter(|k| bound.as_ref().is_none_or(|b| k <= b))
            .collect();
        keys.sort();
        keys.dedup();
        Ok((keys, bound))
    }

    /// This node's page and the pages of enough peers for a quorum of the configuration's
    /// voters, asked all at once; fails when no quorum answers within the request timeout.
    /// Each answer must fit what was asked (`asked`: prefix, cursor, page size), see
    /// [`validate::check_scan_page`]; one that does not counts as no answer.
    async fn gather(
        &self,
        local: NodePage,
        req: PeerRequest,
        asked: (&[u8], Option<&[u8]>, usize),
    ) -> Result<Vec<NodePage>, MmError> {
        let (prefix, after, limit) = asked;
        let mut answers = vec![local];
        let config = self.cluster_config();
        let voters = config.voters();
        let mut answered: Vec<rampart_paxos::NodeId> = self.shared.voter().into_iter().collect();
        let payload = wire::encode(&self.shared.envelope(req)).map_err(MmError::Internal)?;
        let timeout = self.cfg.request_timeout;
        let mut set = tokio::task::JoinSet::new();
        let peers: Vec<(u64, rampart_transport::Peer)> =
            self.shared.peers.read().iter().map(|(id, p)| (*id, p.clone())).collect();
        for (id, peer) in peers {
            let Some(voter) = config.entry(id).map(|e| e.voter()) else { continue };
            let payload = payload.clone();
            let (prefix, after) = (prefix.to_vec(), after.map(<[u8]>::to_vec));
            let shared = self.shared.clone();
            set.spawn(async move {
                match tokio::time::timeout(timeout, peer.call(payload, timeout)).await {
                    Ok(Ok(b)) => match wire::decode::<PeerResponse>(&b) {
                        Ok(PeerResponse::Scan { registers, more }) => {
                            let checked = validate::check_scan_page(
                                &registers,
                                &prefix,
                                after.as_deref(),
                                limit,
                                &shared.peer_limits,
                                shared.ballot_ceiling(),
                            );
                            match checked {
                                Ok(()) => Some((voter, (registers, more))),
                                Err(e) => {
                                    tracing::warn!(peer = %peer.addr(), error = %e, "dropping an invalid scan page");
                                    None
                                }
                            }
                        }
                        _ => None,
                    },
                    _ => None,
                }
            });
        }
        while !voters.is_quorum(&answered) {
            match set.join_next().await {
                Some(Ok(Some((voter, a)))) => {
                    answered.push(voter);
                    answers.push(a);
                }
                Some(_) => {}
                None => break,
            }
        }
        if !voters.is_quorum(&answered) {
            return Err(MmError::NoQuorum(format!(
                "scan: {} of {} voters answered, not a quorum",
                answered.len(),
                voters.all().len()
            )));
        }
        Ok(answers)
    }
}

/// Reads one node's page from its store: at most `limit` registers after `after`, and fewer
/// once their keys and values pass `reply_bytes_max` (the page then says it has more). Each
/// register is decoded straight from the store as it is read, so the page never holds more than
/// about that bound. Without `values`, a live value comes back as its envelope's header only
/// (its expiry and revision, an empty user value) and tombstones stay `None`. A register is
/// checked as [`wire::decode_register`] does at start; one that fails is an error.
pub(crate) fn read_page(
    store: &Store,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
    values: bool,
    reply_bytes_max: usize,
) -> Result<NodePage, String> {
    let decode = |key: &[u8], raw: &[u8]| {
        let s = wire::decode_register(raw).map_err(|reason| rampart_storage::Error::Malformed {
            what: format!("register {:?}", String::from_utf8_lossy(key)),
            reason,
        })?;
        let value = match s.value {
            Some(raw) if !values => {
                // Checked by `decode_register` already.
                let d = rampart_paxos::decode_register_value(&raw).map_err(|e| rampart_storage::Error::Malformed {
                    what: format!("register {:?}", String::from_utf8_lossy(key)),
                    reason: e.to_string(),
                })?;
                Some(rampart_paxos::encode_register_value(&[], d.expires_at, d.revision))
            }
            value => value,
        };
        let weight = key.len() + value.as_ref().map_or(0, Vec::len);
        Ok(((s.accepted, value), weight))
    };
    let (items, more) = store
        .read(|v| v.register_scan_with(prefix, after, limit, reply_bytes_max, decode))
        .map_err(|e| e.to_string())?;
    let out = items.into_iter().map(|(key, (accepted, value))| ScannedRegister { key, accepted, value }).collect();
    Ok((out, more))
}

/// Where a merged page ends: every node returned its first keys in order; past the smallest last
/// key of a node that has more, some node's keys are unknown.
fn page_bound(answers: &[NodePage]) -> Option<Vec<u8>> {
    answers
        .iter()
        .filter(|(regs, more)| *more && !regs.is_empty())
        .map(|(regs, _)| regs.last().expect("not empty").key.clone())
        .min()
}

/// Merges scan pages from several nodes (see [`MmNode::scan`]); a key expired at `now_ms` is
/// left out like a tombstone.
pub(crate) fn merge(answers: Vec<NodePage>, now_ms: u64) -> ScanPage {
    let bound = page_bound(&answers);
    let mut best: BTreeMap<Vec<u8>, (rampart_paxos::Ballot, Option<Vec<u8>>)> = BTreeMap::new();
    for (regs, _) in answers {
        for r in regs {
            if bound.as_ref().is_some_and(|b| r.key > *b) {
                continue;
            }
            match best.get(&r.key) {
                Some((b, _)) if *b >= r.accepted => {}
                _ => {
                    best.insert(r.key, (r.accepted, r.value));
                }
            }
        }
    }
    let items = best
        .into_iter()
        .filter_map(|(k, (_, v))| {
            // Every register was checked as it was decoded (or validated from the peer); one
            // that is still malformed is left out rather than served.
            let live = rampart_paxos::live_value(&v, now_ms).ok().flatten()?;
            Some((k, crate::changes::item(live)))
        })
        .collect();
    ScanPage { items, next_after: bound }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_paxos::{Ballot, NodeId};

    fn reg(key: &str, c: u64, v: Option<&str>) -> ScannedRegister {
        ScannedRegister {
            key: key.into(),
            accepted: Ballot::new(c, NodeId(1)),
            value: v.map(|s| rampart_paxos::encode_register_value(s.as_bytes(), None, c)),
        }
    }

    fn item(key: &str, value: &str, expires_at: Option<u64>, revision: u64) -> (Vec<u8>, rampart_kv::Item) {
        (key.into(), rampart_kv::Item { value: value.into(), revision: Some(revision), expires_at })
    }

    #[test]
    fn merge_takes_the_highest_ballot_and_stops_where_a_node_has_more() {
        let a = (vec![reg("a", 1, Some("old")), reg("b", 5, None), reg("c", 1, Some("c1"))], true);
        let b = (vec![reg("a", 3, Some("new")), reg("b", 2, Some("resurrect?")), reg("d", 1, Some("d"))], false);
        let page = merge(vec![a, b], 0);
        // "b" was deleted at ballot 5: the older value at 2 must not come back. "d" lies past
        // the first node's last key, where it has not reported yet.
        assert_eq!(page.items, vec![item("a", "new", None, 3), item("c", "c1", None, 1)]);
        assert_eq!(page.next_after, Some(b"c".to_vec()));
        let done = merge(vec![(vec![reg("x", 1, Some("1"))], false), (vec![], false)], 0);
        assert_eq!(done.next_after, None);
        assert_eq!(done.items.len(), 1);
    }

    fn store_with(registers: &[(&str, u64, Option<&str>)]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        store
            .write(rampart_storage::Durability::Immediate, |b| {
                for (key, c, value) in registers {
                    let state = rampart_paxos::RegisterState {
                        promised: Ballot::new(c + 1, NodeId(1)),
                        accepted: Ballot::new(*c, NodeId(1)),
                        value: value.map(|v| rampart_paxos::encode_register_value(v.as_bytes(), None, *c)),
                        base: Ballot::ZERO,
                    };
                    b.register_put(key.as_bytes(), &wire::encode_register(&state))?;
                }
                Ok(())
            })
            .unwrap();
        (dir, store)
    }

    #[test]
    fn a_page_keeps_tombstones_and_without_values_empties_only_live_ones() {
        let (_dir, store) =
            store_with(&[("a", 1, Some("1")), ("b", 2, None), ("c", 3, Some("3")), ("x", 1, Some("x"))]);
        let (regs, more) = read_page(&store, b"", None, 10, false, usize::MAX).unwrap();
        let seen: Vec<_> = regs.iter().map(|r| (r.key.clone(), r.value.clone())).collect();
        // Without values, a live register's envelope keeps its header: expiry and revision.
        let header = |revision| Some(rampart_paxos::encode_register_value(b"", None, revision));
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), header(1)),
                (b"b".to_vec(), None),
                (b"c".to_vec(), header(3)),
                (b"x".to_vec(), header(1))
            ]
        );
        assert!(!more);
        // A start key and a limit: the page says there is more.
        let (regs, more) = read_page(&store, b"", Some(b"a"), 2, true, usize::MAX).unwrap();
        assert_eq!(regs.iter().map(|r| r.key.as_slice()).collect::<Vec<_>>(), vec![&b"b"[..], b"c"]);
        assert!(more);
        assert_eq!(regs[1].value, Some(rampart_paxos::encode_register_value(b"3", None, 3)));
        assert_eq!(merge(vec![(regs, more)], 0).items, vec![item("c", "3", None, 3)], "tombstones drop out");
    }

    #[test]
    fn a_merge_leaves_out_what_has_expired_and_keeps_expiries_without_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        store
            .write(rampart_storage::Durability::Immediate, |b| {
                for (key, at) in [("a", Some(100)), ("b", Some(200)), ("c", None)] {
                    let state = rampart_paxos::RegisterState {
                        promised: Ballot::new(2, NodeId(1)),
                        accepted: Ballot::new(1, NodeId(1)),
                        value: Some(rampart_paxos::encode_register_value(b"v", at, 1)),
                        base: Ballot::ZERO,
                    };
                    b.register_put(key.as_bytes(), &wire::encode_register(&state))?;
                }
                Ok(())
            })
            .unwrap();
        let page = |values| read_page(&store, b"", None, 10, values, usize::MAX).unwrap();
        assert_eq!(merge(vec![page(true)], 99).items.len(), 3);
        assert_eq!(merge(vec![page(true)], 100).items, vec![item("b", "v", Some(200), 1), item("c", "v", None, 1)]);
        assert_eq!(merge(vec![page(false)], 150).items, vec![item("b", "", Some(200), 1), item("c", "", None, 1)]);
        assert_eq!(merge(vec![page(false)], 200).items, vec![item("c", "", None, 1)]);
    }

    #[test]
    fn a_page_stops_early_past_the_reply_byte_bound_and_continues_on_the_next() {
        let (_dir, store) = store_with(&[("a", 1, Some("1111")), ("b", 1, Some("2222")), ("c", 1, Some("3333"))]);
        // Each register weighs its key and envelope: the bound is passed on the second, so the
        // page ends there.
        let weight = 1 + rampart_paxos::encode_register_value(b"1111", None, 1).len();
        let bound = weight + weight / 2;
        let (regs, more) = read_page(&store, b"", None, 10, true, bound).unwrap();
        assert_eq!(regs.len(), 2);
        assert!(more, "the page must say it stopped early");
        let (rest, more) = read_page(&store, b"", Some(b"b"), 10, true, bound).unwrap();
        assert_eq!(rest.len(), 1);
        assert!(!more);
        // The last register is never held back: a page that reaches the end says so.
        let (all, more) = read_page(&store, b"", None, 3, true, 2 * weight + weight / 2).unwrap();
        assert_eq!((all.len(), more), (3, false));
    }

    #[test]
    fn a_corrupt_register_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        store.write(rampart_storage::Durability::Immediate, |b| b.register_put(b"k", b"\x01garbage")).unwrap();
        assert!(read_page(&store, b"", None, 10, true, usize::MAX).is_err());
    }
}
