//! Leader-mode peer messages, decoded and validated as the peer server does (before openraft),
//! and answers decoded and validated as the network client does. Nothing may panic, and a
//! request that passes validation carries no term or log index beyond the bounds.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use openraft::raft::VoteRequest;
use rampart_raft::network::{decode, PeerRequest, PeerResponse};
use rampart_raft::validate::{check_request, check_response, Bounds, Context, TERM_AHEAD_MAX};

fuzz_target!(|data: &[u8]| {
    let bounds = Bounds::at_unix_ms(1_767_225_600_000);
    let (members, data) = match data.split_first() {
        // The first byte chooses whether this node has a membership yet.
        Some((b, rest)) if b & 1 == 1 => (BTreeSet::from([1, 2, 3]), rest),
        Some((_, rest)) => (BTreeSet::new(), rest),
        None => return,
    };
    let ctx = Context { bounds, me: 1, term: 7, members: members.clone() };
    if let Ok(req) = decode::<PeerRequest>(data) {
        if check_request(&req, &ctx).is_ok() {
            let term = match &req {
                PeerRequest::Vote(r) => Some(r.vote.leader_id.term),
                PeerRequest::AppendEntries(r) => Some(r.vote.leader_id.term),
                PeerRequest::InstallSnapshot(r) => Some(r.vote.leader_id.term),
                _ => None,
            };
            if let Some(term) = term {
                assert!(term <= bounds.term_max, "term {term} passed");
                assert!(members.is_empty() || term <= 7 + TERM_AHEAD_MAX, "term {term} passed");
            }
            if let PeerRequest::AppendEntries(r) = &req {
                for e in &r.entries {
                    assert!(e.log_id.index <= bounds.index_max && e.log_id.leader_id.term <= term.unwrap());
                }
            }
        }
    }
    if let Ok(resp) = decode::<PeerResponse>(data) {
        let asked = PeerRequest::Vote(VoteRequest::new(openraft::Vote::new(7, 1), None));
        let _ = check_response(&asked, &resp, &bounds);
    }
});
