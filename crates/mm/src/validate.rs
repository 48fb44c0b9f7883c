//! Peer messages are untrusted input: what this node checks in every request a peer sends and in
//! every answer it gets back, before any of it reaches the acceptor, the proposer or a client.
//! Pure functions of the message and this node's limits, so they are tested (and fuzzed) without
//! a network. Ballot counters are bounded in the Paxos core itself ([`CounterCeiling`]): an
//! acceptor refuses one above the ceiling request by request, so a frame that mixes good and bad
//! requests still gets its good ones answered.
//!
//! Never here: who the sender is. The sender id and cluster fingerprint in an [`Envelope`] are
//! self-reported; `peer_server::check_sender` compares them with the membership, and only an
//! authenticated transport can prove them.

use rampart_paxos::{Ballot, CounterCeiling, Reply, Request};

use crate::wire::{Envelope, PeerInfo, PeerRequest, ScannedRegister};
use crate::SCAN_PAGE_MAX;

/// Most Paxos requests one frame may carry. The proposer splits its frames at this count (and
/// at [`crate::PEER_BATCH_BYTES_MAX`] bytes), so an honest peer never sends more; a frame over it
/// is refused whole, unread by the acceptor.
pub const PAXOS_REQUESTS_PER_FRAME_MAX: usize = 8192;

/// Longest address string a peer may report in a hello (peer, RESP or HTTP address).
pub const PEER_ADDR_BYTES_MAX: usize = 256;

/// The sizes a peer's Paxos requests and scans must keep to: this node's client limits, capped
/// by the Paxos core's own. An honest proposer only sends keys and values its own client limits
/// let through, and every member should run with the same limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
}

impl PeerLimits {
    /// The stricter of the node's client limits and the Paxos core's.
    pub fn new(limits: &rampart_kv::Limits) -> Self {
        PeerLimits {
            key_bytes_max: limits.key_bytes_max.min(rampart_paxos::KEY_BYTES_MAX),
            value_bytes_max: limits.value_bytes_max.min(rampart_paxos::VALUE_BYTES_MAX),
        }
    }

    fn key(&self, what: &str, key: &[u8]) -> Result<(), String> {
        if key.len() > self.key_bytes_max {
            return Err(format!(
                "peer sent a {what} of {} bytes, over the limit of {} bytes (key_bytes_max)",
                key.len(),
                self.key_bytes_max
            ));
        }
        Ok(())
    }

    /// A register value from a peer, accepted (or to be accepted) at ballot `accepted`: a
    /// well-formed envelope whose revision is not above `accepted`'s counter (a value is never
    /// accepted below the ballot that wrote it, `rampart_paxos::decode_accepted_value`) and whose
    /// user value is within `value_bytes_max` (the envelope's own bytes are on top, at most
    /// `rampart_paxos::ENVELOPE_BYTES_MAX`).
    fn value(&self, value: &Option<Vec<u8>>, accepted: Ballot) -> Result<(), String> {
        let Some(raw) = value else { return Ok(()) };
        let user = rampart_paxos::decode_accepted_value(raw, accepted)
            .map_err(|e| format!("peer sent a bad register value: {e}"))?
            .value;
        if user.len() > self.value_bytes_max {
            return Err(format!(
                "peer sent a value of {} bytes, over the limit of {} bytes (value_bytes_max)",
                user.len(),
                self.value_bytes_max
            ));
        }
        Ok(())
    }
}

/// Checks a request's contents (not its sender): counts, sizes, a scan's page size, a hello's
/// addresses. An error names the limit and is the peer's answer; nothing was done.
pub fn check_request(env: &Envelope, limits: &PeerLimits) -> Result<(), String> {
    match &env.request {
        PeerRequest::Hello { info, .. } => check_info(info),
        PeerRequest::ConfigPush { config, .. } => config.check(),
        PeerRequest::Inspect { keys } => check_collect_keys(keys.iter().map(Vec::as_slice), limits),
        PeerRequest::Collect { items } => check_collect_keys(items.iter().map(|i| i.key.as_slice()), limits),
        PeerRequest::Paxos { requests } => {
            if requests.len() > PAXOS_REQUESTS_PER_FRAME_MAX {
                return Err(format!(
                    "peer sent {} Paxos requests in one frame, over the limit of {PAXOS_REQUESTS_PER_FRAME_MAX} \
                     (PAXOS_REQUESTS_PER_FRAME_MAX)",
                    requests.len()
                ));
            }
            for r in requests {
                limits.key("key", r.key())?;
                if let Request::Accept { value, ballot, .. } = r {
                    limits.value(value, *ballot)?;
                }
            }
            Ok(())
        }
        PeerRequest::Scan { prefix, after, limit, .. } => {
            limits.key("scan prefix", prefix)?;
            if let Some(after) = after {
                limits.key("scan cursor", after)?;
            }
            if *limit == 0 || *limit as usize > SCAN_PAGE_MAX {
                return Err(format!(
                    "peer asked for a scan page of {limit} registers, outside 1..={SCAN_PAGE_MAX} (SCAN_PAGE_MAX)"
                ));
            }
            Ok(())
        }
    }
}

/// A hello's addresses are shown on the status API and handed to clients: bounded and printable.
/// A tombstone-collection request names at most [`crate::wire::COLLECT_KEYS_MAX`] keys, each
/// within the key limit.
fn check_collect_keys<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]>, limits: &PeerLimits) -> Result<(), String> {
    if keys.len() > crate::wire::COLLECT_KEYS_MAX {
        return Err(format!("{} keys in one collection request, over {}", keys.len(), crate::wire::COLLECT_KEYS_MAX));
    }
    for k in keys {
        if k.len() > limits.key_bytes_max {
            return Err(format!("a key of {} bytes, over {}", k.len(), limits.key_bytes_max));
        }
    }
    Ok(())
}

pub fn check_info(info: &PeerInfo) -> Result<(), String> {
    for (what, addr) in [("peer", &info.peer_addr), ("RESP", &info.resp_addr), ("HTTP", &info.http_addr)] {
        if addr.len() > PEER_ADDR_BYTES_MAX {
            return Err(format!(
                "peer reported a {what} address of {} bytes, over the limit of {PEER_ADDR_BYTES_MAX} (PEER_ADDR_BYTES_MAX)",
                addr.len()
            ));
        }
        if addr.chars().any(char::is_control) {
            return Err(format!("peer reported a {what} address with control characters"));
        }
    }
    Ok(())
}

/// Checks the replies a peer sent for a frame of `sent` requests: never more replies than
/// requests, keys and values within the limits. Ballots are the proposer's to judge (it ignores
/// counters above its ceiling and replies it cannot match).
pub fn check_replies(replies: &[Reply], sent: usize, limits: &PeerLimits) -> Result<(), String> {
    if replies.len() > sent {
        return Err(format!("peer sent {} Paxos replies for {sent} requests", replies.len()));
    }
    for r in replies {
        limits.key("key", r.key())?;
        if let Reply::Promise { value, accepted, .. } | Reply::Peeked { value, accepted, .. } = r {
            limits.value(value, *accepted)?;
        }
    }
    Ok(())
}

/// Checks a peer's scan page against what was asked: at most `limit` registers, in strictly
/// increasing key order, each under `prefix` and after `after`, within the limits, and none
/// claiming an accepted ballot above the ceiling (a forged ballot would win every merge).
pub fn check_scan_page(
    registers: &[ScannedRegister],
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
    limits: &PeerLimits,
    ceiling: CounterCeiling,
) -> Result<(), String> {
    if registers.len() > limit {
        return Err(format!("peer sent {} registers for a scan page of {limit}", registers.len()));
    }
    let mut last: Option<&[u8]> = after;
    for r in registers {
        limits.key("key", &r.key)?;
        limits.value(&r.value, r.accepted)?;
        if !r.key.starts_with(prefix) {
            return Err("peer sent a scanned key outside the asked prefix".into());
        }
        if last.is_some_and(|l| r.key.as_slice() <= l) {
            return Err("peer sent scanned keys out of order or not after the cursor".into());
        }
        if !ceiling.allows(r.accepted) {
            return Err(format!(
                "peer sent a register accepted at ballot counter {}, above the ceiling {ceiling}",
                r.accepted.counter
            ));
        }
        last = Some(&r.key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn collection_requests_and_pushed_configurations_are_bounded() {
        let limits = PeerLimits::new(&rampart_kv::Limits::default());
        let env = |request| Envelope { from: 2, cluster: 7, epoch: u64::MAX, request };
        let keys = |n: usize, len: usize| vec![vec![b'k'; len]; n];
        assert!(check_request(&env(PeerRequest::Inspect { keys: keys(1024, 8) }), &limits).is_ok());
        let many = check_request(&env(PeerRequest::Inspect { keys: keys(1025, 8) }), &limits).unwrap_err();
        assert!(many.contains("1025 keys"), "{many}");
        assert!(check_request(&env(PeerRequest::Inspect { keys: keys(1, 1 << 20) }), &limits).is_err());
        let item = |len: usize| crate::wire::CollectItem {
            key: vec![b'k'; len],
            accepted: rampart_paxos::Ballot::new(u64::MAX, rampart_paxos::NodeId(u64::MAX)),
        };
        assert!(check_request(&env(PeerRequest::Collect { items: vec![item(8)] }), &limits).is_ok());
        assert!(check_request(&env(PeerRequest::Collect { items: vec![item(8); 1025] }), &limits).is_err());
        assert!(check_request(&env(PeerRequest::Collect { items: vec![item(1 << 20)] }), &limits).is_err());
        let mut config = crate::config::ClusterConfig::bootstrap([(1, "127.0.0.1:1".to_string())]);
        config.epoch = u64::MAX;
        let floor = rampart_paxos::Ballot::new(u64::MAX, rampart_paxos::NodeId(1));
        assert!(check_request(&env(PeerRequest::ConfigPush { config: config.clone(), floor }), &limits).is_err());
        config.epoch = 1;
        config.members.clear();
        assert!(check_request(&env(PeerRequest::ConfigPush { config, floor }), &limits).is_err());
    }

    use super::*;
    use rampart_paxos::{Ballot, NodeId};

    const LIMITS: PeerLimits = PeerLimits { key_bytes_max: 8, value_bytes_max: 16 };

    fn paxos(requests: Vec<Request>) -> Envelope {
        Envelope { from: 2, cluster: 7, epoch: 0, request: PeerRequest::Paxos { requests } }
    }

    fn prepare(key: &[u8]) -> Request {
        Request::Prepare { key: key.to_vec(), ballot: Ballot::new(1, NodeId(2)) }
    }

    #[test]
    fn the_peer_limits_are_the_stricter_of_the_client_and_core_limits() {
        let l = PeerLimits::new(&rampart_kv::Limits::default());
        assert_eq!(l.key_bytes_max, rampart_paxos::KEY_BYTES_MAX);
        assert_eq!(l.value_bytes_max, rampart_paxos::VALUE_BYTES_MAX);
        let small = rampart_kv::Limits { key_bytes_max: 10, value_bytes_max: 20, ..Default::default() };
        assert_eq!(PeerLimits::new(&small), PeerLimits { key_bytes_max: 10, value_bytes_max: 20 });
    }

    #[test]
    fn paxos_frames_are_bounded_in_count_key_and_value_bytes() {
        assert_eq!(check_request(&paxos(vec![prepare(b"12345678")]), &LIMITS), Ok(()));
        let long_key = check_request(&paxos(vec![prepare(b"k"), prepare(b"123456789")]), &LIMITS).unwrap_err();
        assert!(long_key.contains("key_bytes_max"), "{long_key}");
        // An accept at ballot 2 carrying `value`.
        let accept_of = |value: Vec<u8>| Request::Accept {
            key: b"k".to_vec(),
            ballot: Ballot::new(2, NodeId(2)),
            value: Some(value),
            base: Ballot::ZERO,
        };
        let accept = |n: usize| accept_of(rampart_paxos::encode_register_value(&vec![0; n], Some(7), 2));
        // The limit is on the user's value; the envelope's bytes are on top.
        assert_eq!(check_request(&paxos(vec![accept(16)]), &LIMITS), Ok(()));
        let big = check_request(&paxos(vec![accept(17)]), &LIMITS).unwrap_err();
        assert!(big.contains("value_bytes_max"), "{big}");
        let malformed = accept_of(vec![rampart_paxos::TAG_EXPIRES, 1, 2]);
        let e = check_request(&paxos(vec![malformed]), &LIMITS).unwrap_err();
        assert!(e.contains("bad register value"), "{e}");
        // A value is never accepted below the ballot that wrote it (revision 3 at ballot 2).
        let from_the_future = accept_of(rampart_paxos::encode_register_value(b"v", None, 3));
        let e = check_request(&paxos(vec![from_the_future]), &LIMITS).unwrap_err();
        assert!(e.contains("revision above"), "{e}");
        // A value from before revisions (tag 0, revision unknown) is still taken.
        let legacy = accept_of(rampart_paxos::encode_register_value(b"v", None, rampart_paxos::REVISION_UNKNOWN));
        assert_eq!(check_request(&paxos(vec![legacy]), &LIMITS), Ok(()));
        let many = vec![prepare(b"k"); PAXOS_REQUESTS_PER_FRAME_MAX + 1];
        let e = check_request(&paxos(many), &LIMITS).unwrap_err();
        assert!(e.contains("PAXOS_REQUESTS_PER_FRAME_MAX"), "{e}");
        assert!(check_request(&paxos(vec![prepare(b"k"); PAXOS_REQUESTS_PER_FRAME_MAX]), &LIMITS).is_ok());
    }

    #[test]
    fn scans_and_hellos_are_bounded() {
        let scan = |prefix: &[u8], after: Option<&[u8]>, limit: u32| Envelope {
            epoch: 0,
            from: 2,
            cluster: 7,
            request: PeerRequest::Scan {
                prefix: prefix.to_vec(),
                after: after.map(<[u8]>::to_vec),
                limit,
                values: true,
            },
        };
        assert!(check_request(&scan(b"a", Some(b"abc"), 10), &LIMITS).is_ok());
        assert!(check_request(&scan(b"123456789", None, 10), &LIMITS).unwrap_err().contains("scan prefix"));
        assert!(check_request(&scan(b"a", Some(b"123456789"), 10), &LIMITS).unwrap_err().contains("scan cursor"));
        assert!(check_request(&scan(b"a", None, 0), &LIMITS).unwrap_err().contains("SCAN_PAGE_MAX"));
        assert!(check_request(&scan(b"a", None, SCAN_PAGE_MAX as u32 + 1), &LIMITS).is_err());
        let hello = |addr: String| Envelope {
            epoch: 0,
            from: 2,
            cluster: 7,
            request: PeerRequest::Hello {
                info: PeerInfo { resp_addr: addr, ..PeerInfo::default() },
                seq: 0,
                voter: None,
                changing: None,
                checking: false,
            },
        };
        assert!(check_request(&hello("127.0.0.1:6379".into()), &LIMITS).is_ok());
        let e = check_request(&hello("x".repeat(PEER_ADDR_BYTES_MAX + 1)), &LIMITS).unwrap_err();
        assert!(e.contains("PEER_ADDR_BYTES_MAX"), "{e}");
        assert!(check_request(&hello("a\nb".into()), &LIMITS).is_err());
    }

    #[test]
    fn answers_are_checked_against_what_was_asked() {
        let nack = Reply::Nack { key: b"k".to_vec(), ballot: Ballot::new(1, NodeId(1)), promised: Ballot::ZERO };
        assert!(check_replies(std::slice::from_ref(&nack), 1, &LIMITS).is_ok());
        assert!(check_replies(&[nack.clone(), nack.clone()], 1, &LIMITS).is_err());
        let peeked = Reply::Peeked {
            key: b"k".to_vec(),
            ballot: Ballot::new(1, NodeId(1)),
            accepted: Ballot::new(1, NodeId(1)),
            value: Some(rampart_paxos::encode_register_value(&[0; 17], None, 1)),
        };
        assert!(check_replies(&[peeked], 1, &LIMITS).unwrap_err().contains("value_bytes_max"));
        let promise = |revision| Reply::Promise {
            key: b"k".to_vec(),
            ballot: Ballot::new(9, NodeId(1)),
            accepted: Ballot::new(4, NodeId(2)),
            value: Some(rampart_paxos::encode_register_value(b"v", None, revision)),
            base: Ballot::ZERO,
        };
        assert!(check_replies(&[promise(4)], 1, &LIMITS).is_ok());
        assert!(check_replies(&[promise(5)], 1, &LIMITS).unwrap_err().contains("revision above"));

        let c = CounterCeiling::at_unix_ms(0);
        let reg = |key: &[u8], counter: u64| ScannedRegister {
            key: key.to_vec(),
            accepted: Ballot::new(counter, NodeId(1)),
            value: Some(rampart_paxos::encode_register_value(b"v", None, counter.min(2))),
        };
        let page = [reg(b"ab", 1), reg(b"ac", 2)];
        assert!(check_scan_page(&page, b"a", Some(b"aa"), 2, &LIMITS, c).is_ok());
        assert!(check_scan_page(&page, b"a", None, 1, &LIMITS, c).is_err(), "more than asked");
        assert!(check_scan_page(&page, b"b", None, 2, &LIMITS, c).is_err(), "outside the prefix");
        assert!(check_scan_page(&page, b"a", Some(b"ab"), 2, &LIMITS, c).is_err(), "not after the cursor");
        assert!(check_scan_page(&[reg(b"ac", 1), reg(b"ab", 1)], b"a", None, 2, &LIMITS, c).is_err());
        let forged = check_scan_page(&[reg(b"ab", u64::MAX)], b"a", None, 2, &LIMITS, c).unwrap_err();
        assert!(forged.contains("above the ceiling"), "{forged}");
        let mut future = reg(b"ab", 1);
        future.value = Some(rampart_paxos::encode_register_value(b"v", None, 2));
        let e = check_scan_page(&[future], b"a", None, 2, &LIMITS, c).unwrap_err();
        assert!(e.contains("revision above"), "{e}");
    }
}
