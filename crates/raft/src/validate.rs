//! Leader-mode peer messages are untrusted input: what this node checks in every Raft request a
//! peer sends and in every Raft answer it gets back, before openraft sees either.
//!
//! # Terms and log indexes are bounded by the clock
//! openraft 0.9 trusts every term it sees and computes `term + 1` when it campaigns: one message
//! with term `u64::MAX`, stored as this node's vote, makes it panic now and on every restart. So
//! a term above [`Bounds::term_max`], or a log index above [`Bounds::index_max`], is refused in
//! requests and answers alike (an answer that breaks a bound counts as a failed call). Both
//! ceilings rise with the wall clock:
//!
//! - term ≤ [`TERM_CEILING_SLACK`] + [`TERM_PER_MS`] × ms since 1970,
//! - log index ≤ [`LOG_INDEX_CEILING_SLACK`] + [`LOG_INDEX_PER_MS`] × ms since 1970.
//!
//! An honest term grows by one per election, at most once per election timeout per candidate;
//! a node cut off for days (openraft 0.9 has no pre-vote) reaches a few hundred thousand. An
//! honest log index grows by one per entry. Both stay below their ceilings by many orders of
//! magnitude, and whatever a message says, the space left above the ceiling lasts thousands of
//! years. A bound relative to the local term was rejected: it would shut a long-partitioned
//! node out for good (its honest, high term would be refused forever), and a forger can ratchet
//! it message by message. `docs/design.md` ("Validating Raft messages") has the argument.
//!
//! # Requests may not leap far ahead
//! A request (vote, append, snapshot chunk) may carry a term at most [`TERM_AHEAD_MAX`] above
//! this node's current term, once the node has a membership. Unsolicited messages are what an
//! outsider can send, so a forged "huge but under the ceiling" term cannot move this node's term
//! or depose its leader. Honest nodes far from each other in term still meet: answers are held to
//! the ceiling only, so a node that campaigned alone for a long time (openraft 0.9 has no
//! pre-vote) passes its term on in its answers to the leader's appends, as Raft always does, and
//! a voter that missed many elections adopts the cluster's term from the answers to its own
//! next campaign. A learner more than [`TERM_AHEAD_MAX`] elections behind (it never campaigns)
//! must be removed and added again.
//!
//! # Also checked
//! The sender named in a vote or an append (the candidate, the leader) must be in this node's
//! membership (any member, voter or learner) unless the node has none yet (a new node waiting
//! to be added learns it from the leader's first appends). Appends carry at most
//! [`APPEND_ENTRIES_MAX`] entries with consecutive indexes after `prev_log_id` and terms that
//! never pass the leader's, each command within the largest limits any node may be configured
//! with. Snapshot chunks must continue the snapshot in order ([`SnapshotProgress`]): openraft
//! writes a chunk at its offset, and an offset far beyond the data would allocate that much.
//!
//! Never here: proof of who sent a message. Only an authenticated transport gives that.

use std::collections::BTreeSet;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::EntryPayload;
use rampart_kv::{Command, Limits};

use crate::network::{PeerRequest, PeerResponse};
use crate::node::BATCH_COMMANDS_MAX;
use crate::types::{LogId, NodeId, NodeInfo, TypeConfig, Vote};

/// How fast the term ceiling rises: terms per millisecond of wall-clock time. An election takes
/// at least an election timeout (milliseconds), so this is a thousandfold margin even for a
/// cluster campaigning without pause since 1970.
pub const TERM_PER_MS: u64 = 1 << 10;
/// The term ceiling at the Unix epoch: what a node whose clock reads 1970 still accepts.
pub const TERM_CEILING_SLACK: u64 = 1 << 32;
/// How fast the log index ceiling rises: entries per millisecond (65 million a second on average
/// since 1970, far beyond any disk).
pub const LOG_INDEX_PER_MS: u64 = 1 << 16;
/// The log index ceiling at the Unix epoch.
pub const LOG_INDEX_CEILING_SLACK: u64 = 1 << 40;
/// Most a request's term may be above this node's current term (module docs): 65,536
/// elections, far more than a member misses while it is briefly away.
pub const TERM_AHEAD_MAX: u64 = 1 << 16;
/// Most entries one append may carry: openraft's `max_payload_entries`, set to this, so an
/// honest leader never sends more.
pub const APPEND_ENTRIES_MAX: usize = 512;
/// The latest stamp ([`Command::At`]) a log entry may carry: the last millisecond of year 9999.
/// A leader stamps with its clock; anything later is a forged or broken entry.
pub const STAMP_UNIX_MS_MAX: u64 = 253_402_300_799_999;
/// Most members a membership entry or snapshot may name.
pub const MEMBERSHIP_NODES_MAX: usize = 256;
/// Longest address a membership entry, snapshot or hello may carry for one member.
pub const NODE_ADDR_BYTES_MAX: usize = 256;

/// The largest limits any node may be configured with: the log's commands were checked against
/// the leader's limits, which may be above this node's, and refusing a committed entry would stop
/// this node from ever catching up.
const ENTRY_LIMITS: Limits = Limits {
    key_bytes_max: rampart_kv::limits::KEY_BYTES_MAX_CEILING,
    value_bytes_max: rampart_kv::limits::VALUE_BYTES_MAX_CEILING,
    keys_per_command_max: rampart_kv::limits::KEYS_PER_COMMAND_MAX_DEFAULT,
    reply_bytes_max: rampart_kv::limits::REPLY_BYTES_MAX_CEILING,
};

/// The term and log index ceilings at one moment (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub term_max: u64,
    pub index_max: u64,
}

impl Bounds {
    /// The ceilings when the wall clock reads `unix_ms` milliseconds since 1970.
    pub const fn at_unix_ms(unix_ms: u64) -> Self {
        Bounds {
            term_max: TERM_CEILING_SLACK.saturating_add(unix_ms.saturating_mul(TERM_PER_MS)),
            index_max: LOG_INDEX_CEILING_SLACK.saturating_add(unix_ms.saturating_mul(LOG_INDEX_PER_MS)),
        }
    }

    /// The ceilings by this machine's wall clock now (0 if it reads before 1970).
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Bounds::at_unix_ms(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    pub fn check_term(&self, what: &str, term: u64) -> Result<(), String> {
        if term > self.term_max {
            return Err(format!(
                "{what} has term {term}, above the term ceiling {} (TERM_CEILING_SLACK + TERM_PER_MS x ms since 1970)",
                self.term_max
            ));
        }
        Ok(())
    }

    pub fn check_vote(&self, what: &str, vote: &Vote) -> Result<(), String> {
        self.check_term(what, vote.leader_id.term)
    }

    pub fn check_log_id(&self, what: &str, log_id: &LogId) -> Result<(), String> {
        self.check_term(what, log_id.leader_id.term)?;
        if log_id.index > self.index_max {
            return Err(format!(
                "{what} has log index {}, above the log index ceiling {} (LOG_INDEX_CEILING_SLACK + \
                 LOG_INDEX_PER_MS x ms since 1970)",
                log_id.index, self.index_max
            ));
        }
        Ok(())
    }

    fn check_opt_log_id(&self, what: &str, log_id: &Option<LogId>) -> Result<(), String> {
        log_id.as_ref().map_or(Ok(()), |l| self.check_log_id(what, l))
    }
}

/// What a request is checked against on this node.
#[derive(Debug, Clone)]
pub struct Context {
    pub bounds: Bounds,
    /// This node's id: it sends itself nothing.
    pub me: NodeId,
    /// This node's current term (its vote's).
    pub term: u64,
    /// Every member (voters and learners) of this node's effective membership; empty while the
    /// node has none (not yet added to a cluster), when any sender is taken.
    pub members: BTreeSet<NodeId>,
}

impl Context {
    /// The clock ceiling, and [`TERM_AHEAD_MAX`] once this node has a membership.
    fn check_request_term(&self, what: &str, term: u64) -> Result<(), String> {
        self.bounds.check_term(what, term)?;
        let most = self.term.saturating_add(TERM_AHEAD_MAX);
        if !self.members.is_empty() && term > most {
            return Err(format!(
                "{what} has term {term}, more than {TERM_AHEAD_MAX} (TERM_AHEAD_MAX) above this node's term {}",
                self.term
            ));
        }
        Ok(())
    }

    fn check_sender(&self, what: &str, id: NodeId) -> Result<(), String> {
        if id == self.me {
            return Err(format!("{what} claims to come from this node ({id})"));
        }
        if !self.members.is_empty() && !self.members.contains(&id) {
            return Err(format!("{what} comes from node {id}, which is not a member of this cluster"));
        }
        Ok(())
    }
}

/// Checks a Raft request (votes, appends, snapshot chunks) and a hello before anything acts on
/// it. Forwarded commands are checked against the node's own limits elsewhere
/// (`peer_server::check_forwarded`). An error is the peer's answer; nothing was done.
pub fn check_request(req: &PeerRequest, ctx: &Context) -> Result<(), String> {
    match req {
        PeerRequest::Vote(r) => check_vote_request(r, ctx),
        PeerRequest::AppendEntries(r) => check_append(r, ctx),
        PeerRequest::InstallSnapshot(r) => check_snapshot_chunk(r, ctx),
        PeerRequest::Hello { id, info } => {
            ctx.check_sender("a hello", *id)?;
            check_info(info)
        }
        PeerRequest::Forward(_) | PeerRequest::ForwardMany(_) | PeerRequest::ReadIndex | PeerRequest::Lease { .. } => {
            Ok(())
        }
    }
}

fn check_vote_request(r: &VoteRequest<NodeId>, ctx: &Context) -> Result<(), String> {
    ctx.check_request_term("a vote request", r.vote.leader_id.term)?;
    ctx.check_sender("a vote request", r.vote.leader_id.node_id)?;
    if let Some(last) = &r.last_log_id {
        ctx.bounds.check_log_id("a vote request's last log id", last)?;
        if last.leader_id.term > r.vote.leader_id.term {
            return Err("a vote request's last log entry has a higher term than the candidate's".into());
        }
    }
    Ok(())
}

fn check_append(r: &AppendEntriesRequest<TypeConfig>, ctx: &Context) -> Result<(), String> {
    let term = r.vote.leader_id.term;
    ctx.check_request_term("an append", term)?;
    ctx.check_sender("an append", r.vote.leader_id.node_id)?;
    ctx.bounds.check_opt_log_id("an append's previous log id", &r.prev_log_id)?;
    ctx.bounds.check_opt_log_id("an append's commit index", &r.leader_commit)?;
    if r.leader_commit.as_ref().is_some_and(|c| c.leader_id.term > term) {
        return Err("an append's commit index has a higher term than the leader's".into());
    }
    if r.entries.len() > APPEND_ENTRIES_MAX {
        return Err(format!(
            "an append carries {} entries, over the limit of {APPEND_ENTRIES_MAX} (APPEND_ENTRIES_MAX)",
            r.entries.len()
        ));
    }
    let mut prev = r.prev_log_id;
    for entry in &r.entries {
        let id = &entry.log_id;
        ctx.bounds.check_log_id("an appended entry", id)?;
        let expected = prev.map_or(0, |p| p.index + 1);
        if id.index != expected {
            return Err(format!(
                "an appended entry has index {}, expected {expected} (entries must be consecutive)",
                id.index
            ));
        }
        if id.leader_id.term > term || prev.is_some_and(|p| id.leader_id.term < p.leader_id.term) {
            return Err(format!("an appended entry at index {} has term {} out of order", id.index, id.leader_id.term));
        }
        check_payload(&entry.payload)?;
        prev = Some(*id);
    }
    Ok(())
}

fn check_payload(payload: &EntryPayload<TypeConfig>) -> Result<(), String> {
    match payload {
        EntryPayload::Blank => Ok(()),
        // The leader stamps every entry it proposes; the stamp wraps one command or one batch.
        EntryPayload::Normal(Command::At { now_ms, cmd }) => {
            if *now_ms > STAMP_UNIX_MS_MAX {
                return Err(format!(
                    "a log entry stamped {now_ms} ms, over the limit of {STAMP_UNIX_MS_MAX} (STAMP_UNIX_MS_MAX)"
                ));
            }
            check_command(cmd)
        }
        EntryPayload::Normal(cmd) => check_command(cmd),
        EntryPayload::Membership(m) => check_members(m.nodes()),
    }
}

/// An entry's command (inside its stamp, if it has one): one command or one batch of them.
fn check_command(cmd: &Command) -> Result<(), String> {
    match cmd {
        Command::Batch(cmds) => {
            if cmds.len() > BATCH_COMMANDS_MAX {
                return Err(format!(
                    "a log entry batches {} commands, over the limit of {BATCH_COMMANDS_MAX} (BATCH_COMMANDS_MAX)",
                    cmds.len()
                ));
            }
            // A batch inside a batch is refused by the limits check like any client batch.
            cmds.iter().try_for_each(check_entry_command)
        }
        cmd => check_entry_command(cmd),
    }
}

/// One command of an entry: the client limits, except that the leader's own lease expiry
/// (`LeaseRevoke { expired: true }`, which no client may send) is part of the log. A stamp
/// inside a stamp is refused by the limits check like a client's.
fn check_entry_command(cmd: &Command) -> Result<(), String> {
    match cmd {
        Command::LeaseRevoke { expired: true, .. } => Ok(()),
        cmd => ENTRY_LIMITS.check(cmd).map_err(|e| format!("a log entry: {e}")),
    }
}

fn check_members<'a>(nodes: impl Iterator<Item = (&'a NodeId, &'a NodeInfo)>) -> Result<(), String> {
    let mut n = 0usize;
    for (_, info) in nodes {
        n += 1;
        if n > MEMBERSHIP_NODES_MAX {
            return Err(format!("a membership of more than {MEMBERSHIP_NODES_MAX} nodes (MEMBERSHIP_NODES_MAX)"));
        }
        check_info(info)?;
    }
    Ok(())
}

/// A member's addresses are shown on the status API and handed to clients: bounded, printable.
pub fn check_info(info: &NodeInfo) -> Result<(), String> {
    for (what, addr) in [("peer", &info.peer_addr), ("RESP", &info.resp_addr), ("HTTP", &info.http_addr)] {
        if addr.len() > NODE_ADDR_BYTES_MAX {
            return Err(format!(
                "a {what} address of {} bytes, over the limit of {NODE_ADDR_BYTES_MAX} (NODE_ADDR_BYTES_MAX)",
                addr.len()
            ));
        }
        if addr.chars().any(char::is_control) {
            return Err(format!("a {what} address with control characters"));
        }
    }
    Ok(())
}

fn check_snapshot_chunk(r: &InstallSnapshotRequest<TypeConfig>, ctx: &Context) -> Result<(), String> {
    ctx.check_request_term("a snapshot chunk", r.vote.leader_id.term)?;
    ctx.check_sender("a snapshot chunk", r.vote.leader_id.node_id)?;
    ctx.bounds.check_opt_log_id("a snapshot's last log id", &r.meta.last_log_id)?;
    if r.meta.last_log_id.is_some_and(|l| l.leader_id.term > r.vote.leader_id.term) {
        return Err("a snapshot's last log id has a higher term than the leader's".into());
    }
    ctx.bounds.check_opt_log_id("a snapshot's membership log id", r.meta.last_membership.log_id())?;
    check_members(r.meta.last_membership.nodes())
}

/// Which snapshot is being received and how many bytes of it arrived: a chunk must start at or
/// before that end (a retransmission, or a restart from 0), never beyond it. One per node.
#[derive(Debug, Default)]
pub struct SnapshotProgress {
    current: Option<(String, u64)>,
}

impl SnapshotProgress {
    /// Checks that the chunk continues the snapshot in order.
    pub fn check(&self, r: &InstallSnapshotRequest<TypeConfig>) -> Result<(), String> {
        let end = match &self.current {
            Some((id, end)) if *id == r.meta.snapshot_id => *end,
            _ => 0,
        };
        if r.offset > end {
            return Err(format!(
                "a snapshot chunk at offset {} of snapshot {:?}, past the {end} bytes received so far",
                r.offset, r.meta.snapshot_id
            ));
        }
        Ok(())
    }

    /// Records a chunk openraft took.
    pub fn received(&mut self, r: &InstallSnapshotRequest<TypeConfig>) {
        self.received_chunk(&r.meta.snapshot_id, r.offset, r.data.len(), r.done);
    }

    /// Records a chunk openraft took: `len` bytes at `offset` of snapshot `id`, the last if `done`.
    pub fn received_chunk(&mut self, id: &str, offset: u64, len: usize, done: bool) {
        let end = offset.saturating_add(len as u64);
        match &mut self.current {
            Some((current, e)) if current == id => *e = (*e).max(end),
            _ => self.current = Some((id.to_string(), end)),
        }
        if done {
            self.current = None;
        }
    }
}

/// Checks an answer to a Raft request before openraft sees it: every term and log id within the
/// bounds, and an append's partial success within what was sent.
pub fn check_response(req: &PeerRequest, resp: &PeerResponse, bounds: &Bounds) -> Result<(), String> {
    match (req, resp) {
        (PeerRequest::Vote(_), PeerResponse::Vote(Ok(VoteResponse { vote, last_log_id, .. }))) => {
            bounds.check_vote("a vote answer", vote)?;
            bounds.check_opt_log_id("a vote answer's last log id", last_log_id)
        }
        (PeerRequest::AppendEntries(sent), PeerResponse::AppendEntries(Ok(r))) => match r {
            AppendEntriesResponse::Success | AppendEntriesResponse::Conflict => Ok(()),
            AppendEntriesResponse::HigherVote(vote) => bounds.check_vote("an append answer", vote),
            AppendEntriesResponse::PartialSuccess(matching) => {
                let last = sent.entries.last().map(|e| e.log_id).or(sent.prev_log_id);
                if *matching > last || *matching < sent.prev_log_id {
                    return Err("an append answer claims a match outside the entries sent".into());
                }
                Ok(())
            }
        },
        (PeerRequest::InstallSnapshot(_), PeerResponse::InstallSnapshot(Ok(InstallSnapshotResponse { vote }))) => {
            bounds.check_vote("a snapshot answer", vote)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Entry, LeaderId};

    const NOW_MS: u64 = 1_767_225_600_000; // 2026-01-01

    fn ctx() -> Context {
        Context { bounds: Bounds::at_unix_ms(NOW_MS), me: 1, term: 3, members: BTreeSet::from([1, 2, 3]) }
    }

    fn vote(term: u64, node: NodeId) -> Vote {
        Vote::new(term, node)
    }

    fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn append(term: u64, prev: Option<LogId>, entries: Vec<Entry<TypeConfig>>) -> PeerRequest {
        PeerRequest::AppendEntries(AppendEntriesRequest {
            vote: Vote { leader_id: LeaderId::new(term, 2), committed: true },
            prev_log_id: prev,
            entries,
            leader_commit: prev,
        })
    }

    fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry { log_id: log_id(term, 2, index), payload: EntryPayload::Blank }
    }

    /// Stamped entries (every entry a leader proposes) are accepted; a stamp past
    /// STAMP_UNIX_MS_MAX or a stamp inside a stamp is refused.
    #[test]
    fn stamped_entries_are_accepted_and_forged_stamps_refused() {
        let c = ctx();
        let set = Command::Set {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            cond: rampart_kv::SetCond::Always,
            return_old: false,
            ttl: rampart_kv::Ttl::In(1000),
        };
        let entry = |cmd: Command| Entry { log_id: log_id(3, 2, 0), payload: EntryPayload::Normal(cmd) };
        let at = |now_ms: u64, cmd: Command| Command::At { now_ms, cmd: Box::new(cmd) };
        let one = at(NOW_MS, set.clone());
        assert_eq!(check_request(&append(3, None, vec![entry(one.clone())]), &c), Ok(()));
        let batch = at(NOW_MS, Command::Batch(vec![set.clone(), Command::ExpireDue { keys: vec![b"x".to_vec()] }]));
        assert_eq!(check_request(&append(3, None, vec![entry(batch)]), &c), Ok(()));
        let e = check_request(&append(3, None, vec![entry(at(STAMP_UNIX_MS_MAX + 1, set.clone()))]), &c).unwrap_err();
        assert!(e.contains("STAMP_UNIX_MS_MAX"), "{e}");
        let e = check_request(&append(3, None, vec![entry(at(NOW_MS, one.clone()))]), &c).unwrap_err();
        assert!(e.contains("stamped"), "{e}");
        let e = check_request(&append(3, None, vec![entry(at(NOW_MS, Command::Batch(vec![one])))]), &c).unwrap_err();
        assert!(e.contains("stamped"), "{e}");
        // The leader's lease expiry is an entry like any other (no client may send one).
        let expiry = Command::LeaseRevoke { id: 4, expired: true };
        assert_eq!(check_request(&append(3, None, vec![entry(at(NOW_MS, expiry.clone()))]), &c), Ok(()));
        let batch = at(NOW_MS, Command::Batch(vec![expiry, Command::LeaseGrant { ttl_ms: 5_000 }]));
        assert_eq!(check_request(&append(3, None, vec![entry(batch)]), &c), Ok(()));
    }

    #[test]
    fn the_ceilings_rise_with_the_clock_and_leave_the_space_above_them() {
        let b = Bounds::at_unix_ms(NOW_MS);
        assert!(b.term_max > 1 << 50 && b.term_max < u64::MAX / 1000, "{b:?}");
        assert!(b.index_max > 1 << 56 && b.index_max < u64::MAX / 100, "{b:?}");
        assert_eq!(Bounds::at_unix_ms(0), Bounds { term_max: TERM_CEILING_SLACK, index_max: LOG_INDEX_CEILING_SLACK });
        assert_eq!(Bounds::at_unix_ms(u64::MAX).term_max, u64::MAX);
        assert!(Bounds::now().term_max >= b.term_max, "this machine's clock reads after 2026");
    }

    #[test]
    fn a_request_may_not_leap_far_beyond_this_nodes_term() {
        let c = ctx();
        let most = c.term + TERM_AHEAD_MAX;
        assert_eq!(check_request(&append(most, None, vec![]), &c), Ok(()));
        for term in [most + 1, 1 << 40, 1 << 48] {
            let e = check_request(&append(term, None, vec![]), &c).unwrap_err();
            assert!(e.contains("TERM_AHEAD_MAX"), "{e}");
            let v = PeerRequest::Vote(VoteRequest::new(vote(term, 2), None));
            assert!(check_request(&v, &c).unwrap_err().contains("TERM_AHEAD_MAX"));
        }
        // A node with no membership yet (waiting to be added) takes the leader's term, however far.
        let fresh = Context { members: BTreeSet::new(), term: 0, ..c.clone() };
        assert_eq!(check_request(&append(1 << 40, None, vec![]), &fresh), Ok(()));
        // Answers are held to the ceiling only: that is how far-apart honest nodes meet.
        let answer = PeerResponse::AppendEntries(Ok(AppendEntriesResponse::HigherVote(vote(1 << 40, 2))));
        assert_eq!(check_response(&append(4, None, vec![]), &answer, &c.bounds), Ok(()));
    }

    #[test]
    fn extreme_terms_in_votes_and_appends_are_refused() {
        let c = Context { term: u64::MAX / 2, ..ctx() };
        let top = c.bounds.term_max;
        let ok = PeerRequest::Vote(VoteRequest::new(vote(top, 2), Some(log_id(top, 2, 10))));
        assert_eq!(check_request(&ok, &c), Ok(()));
        for term in [top + 1, u64::MAX - 1, u64::MAX] {
            let v = PeerRequest::Vote(VoteRequest::new(vote(term, 2), None));
            assert!(check_request(&v, &c).unwrap_err().contains("term ceiling"), "term {term}");
            assert!(check_request(&append(term, None, vec![]), &c).unwrap_err().contains("term ceiling"));
        }
        let far = PeerRequest::Vote(VoteRequest::new(vote(5, 2), Some(log_id(5, 2, u64::MAX))));
        assert!(check_request(&far, &c).unwrap_err().contains("log index ceiling"));
        let later_log = PeerRequest::Vote(VoteRequest::new(vote(5, 2), Some(log_id(6, 2, 1))));
        assert!(check_request(&later_log, &c).is_err());
    }

    #[test]
    fn senders_must_be_members_unless_this_node_has_no_membership_yet() {
        let c = ctx();
        let stranger = PeerRequest::Vote(VoteRequest::new(vote(5, 9), None));
        assert!(check_request(&stranger, &c).unwrap_err().contains("not a member"));
        let me = PeerRequest::Vote(VoteRequest::new(vote(5, 1), None));
        assert!(check_request(&me, &c).unwrap_err().contains("this node"));
        let fresh = Context { members: BTreeSet::new(), ..c.clone() };
        assert_eq!(check_request(&stranger, &fresh), Ok(()));
        let hello = PeerRequest::Hello { id: 9, info: NodeInfo::default() };
        assert!(check_request(&hello, &c).is_err());
        let long = NodeInfo { http_addr: "x".repeat(NODE_ADDR_BYTES_MAX + 1), ..NodeInfo::default() };
        let e = check_request(&PeerRequest::Hello { id: 2, info: long }, &c).unwrap_err();
        assert!(e.contains("NODE_ADDR_BYTES_MAX"), "{e}");
    }

    #[test]
    fn appended_entries_are_consecutive_bounded_and_never_above_the_leaders_term() {
        let c = ctx();
        let prev = Some(log_id(3, 2, 7));
        assert_eq!(check_request(&append(4, prev, vec![blank(3, 8), blank(4, 9)]), &c), Ok(()));
        assert_eq!(check_request(&append(4, None, vec![blank(4, 0)]), &c), Ok(()));
        assert!(check_request(&append(4, prev, vec![blank(3, 9)]), &c).unwrap_err().contains("consecutive"));
        assert!(check_request(&append(4, prev, vec![blank(5, 8)]), &c).unwrap_err().contains("out of order"));
        assert!(check_request(&append(4, prev, vec![blank(2, 8)]), &c).is_err(), "below the previous term");
        let many: Vec<_> = (0..=APPEND_ENTRIES_MAX as u64).map(|i| blank(4, 8 + i)).collect();
        assert!(check_request(&append(4, prev, many), &c).unwrap_err().contains("APPEND_ENTRIES_MAX"));
        let mut big = blank(4, 8);
        big.payload =
            EntryPayload::Normal(Command::Batch(vec![Command::Delete { key: b"k".to_vec() }; BATCH_COMMANDS_MAX + 1]));
        assert!(check_request(&append(4, prev, vec![big]), &c).unwrap_err().contains("BATCH_COMMANDS_MAX"));
        let mut nested = blank(4, 8);
        nested.payload = EntryPayload::Normal(Command::Batch(vec![Command::Batch(vec![])]));
        assert!(check_request(&append(4, prev, vec![nested]), &c).is_err());
    }

    #[test]
    fn snapshot_chunks_continue_in_order() {
        let chunk = |id: &str, offset: u64, len: usize, done: bool| InstallSnapshotRequest::<TypeConfig> {
            vote: Vote { leader_id: LeaderId::new(4, 2), committed: true },
            meta: openraft::SnapshotMeta {
                last_log_id: Some(log_id(4, 2, 100)),
                last_membership: Default::default(),
                snapshot_id: id.to_string(),
            },
            offset,
            data: vec![0; len],
            done,
        };
        let mut p = SnapshotProgress::default();
        assert!(p.check(&chunk("a", 0, 10, false)).is_ok());
        p.received(&chunk("a", 0, 10, false));
        assert!(p.check(&chunk("a", 10, 10, false)).is_ok());
        assert!(p.check(&chunk("a", 5, 10, false)).is_ok(), "a retransmission");
        assert!(p.check(&chunk("a", 11, 10, false)).unwrap_err().contains("past the 10 bytes"));
        assert!(p.check(&chunk("a", u64::MAX, 1, false)).is_err());
        assert!(p.check(&chunk("b", 1, 1, false)).is_err(), "another snapshot starts at 0");
        p.received(&chunk("a", 10, 10, true));
        assert!(p.check(&chunk("a", 20, 1, false)).is_err(), "a finished snapshot starts over");
        let req = PeerRequest::InstallSnapshot(chunk("a", 0, 1, false));
        assert_eq!(check_request(&req, &ctx()), Ok(()));
        let mut forged = chunk("a", 0, 1, false);
        forged.meta.last_log_id = Some(log_id(4, 2, u64::MAX));
        assert!(check_request(&PeerRequest::InstallSnapshot(forged), &ctx()).is_err());
    }

    #[test]
    fn answers_with_extreme_terms_or_impossible_matches_are_refused() {
        let b = Bounds::at_unix_ms(NOW_MS);
        let vote_req = PeerRequest::Vote(VoteRequest::new(vote(5, 1), None));
        let answer = |term: u64| PeerResponse::Vote(Ok(VoteResponse::new(vote(term, 2), None, false)));
        assert_eq!(check_response(&vote_req, &answer(6), &b), Ok(()));
        assert!(check_response(&vote_req, &answer(u64::MAX), &b).unwrap_err().contains("term ceiling"));
        let sent = append(4, Some(log_id(3, 1, 7)), vec![blank(4, 8)]);
        let higher = PeerResponse::AppendEntries(Ok(AppendEntriesResponse::HigherVote(vote(u64::MAX, 2))));
        assert!(check_response(&sent, &higher, &b).is_err());
        let fine = PeerResponse::AppendEntries(Ok(AppendEntriesResponse::HigherVote(vote(9, 2))));
        assert_eq!(check_response(&sent, &fine, &b), Ok(()));
        let partial = |l: Option<LogId>| PeerResponse::AppendEntries(Ok(AppendEntriesResponse::PartialSuccess(l)));
        assert_eq!(check_response(&sent, &partial(Some(log_id(3, 1, 7))), &b), Ok(()));
        assert!(check_response(&sent, &partial(Some(log_id(4, 2, 9))), &b).is_err(), "beyond what was sent");
        let snap = PeerResponse::InstallSnapshot(Ok(InstallSnapshotResponse { vote: vote(u64::MAX, 2) }));
        let snap_req = PeerRequest::ReadIndex;
        assert_eq!(check_response(&snap_req, &snap, &b), Ok(()), "only matching pairs are judged");
    }
}
