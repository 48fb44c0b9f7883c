//! What multi-master nodes say to each other, and how a register is stored.

use rampart_paxos::{Ballot, NodeId, RegisterState, Reply, Request};
use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;

/// Where a member can be reached (the same type as leader mode's).
pub use rampart_kv::MemberInfo as PeerInfo;

/// One register as a scan reports it: enough to merge what several acceptors hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedRegister {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub accepted: Ballot,
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

/// A node to node request with its sender. A node refuses requests from another cluster
/// (`cluster`, the cluster id: [`membership_fingerprint`] of its bootstrap members), Paxos
/// requests and scans from ids outside its configuration, and Paxos requests of another
/// configuration `epoch` than its own (docs/paxos.md, "Membership changes").
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub from: u64,
    pub cluster: u64,
    pub epoch: u64,
    pub request: PeerRequest,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// A failure-detector heartbeat; carries the sender's client addresses, its acceptor's
    /// commit sequence (see [`PeerResponse::Hello`]'s `behind`) and the voter it is (`None`:
    /// it does not vote), so an older generation of a replaced member is told apart; and the
    /// joint configuration epoch it is finishing as a change's coordinator, if any. `checking`:
    /// the sender is in its restart check, so it votes on nothing and its sequence does not
    /// move; only then is `seq` compared (a moving one races with its own Paxos answers).
    Hello { info: PeerInfo, seq: u64, voter: Option<u64>, changing: Option<u64>, checking: bool },
    /// Many keys' Paxos messages in one frame; answered by one reply per request, in order.
    Paxos { requests: Vec<Request> },
    /// The durable registers with keys starting with `prefix`, after `after`, at most `limit`
    /// (and at most [`SCAN_REPLY_BYTES_MAX`]). Without `values`, a live register's value comes
    /// back empty (keys, counts).
    Scan {
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        limit: u32,
        values: bool,
    },
    /// Adopt this configuration (from a membership change's coordinator, or a member that found
    /// this node behind), and raise the acceptor's collected floor to at least `floor` (the
    /// sender's); answered by [`PeerResponse::ConfigAck`] once it is durable.
    ConfigPush { config: ClusterConfig, floor: Ballot },
    /// Tombstone collection: what this node's acceptor holds for each key (at most
    /// [`COLLECT_KEYS_MAX`]); answered by [`PeerResponse::Inspected`], one report per key.
    Inspect {
        #[serde(with = "serde_bytes_vec")]
        keys: Vec<Vec<u8>>,
    },
    /// Tombstone collection: remove each key's register if it is a tombstone accepted at that
    /// ballot (at most [`COLLECT_KEYS_MAX`]); answered by [`PeerResponse::Collected`].
    Collect { items: Vec<CollectItem> },
}

/// Most keys one [`PeerRequest::Inspect`] or [`PeerRequest::Collect`] names.
pub const COLLECT_KEYS_MAX: usize = 1024;

/// A key to collect, and the ballot its tombstone must be accepted at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectItem {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub accepted: Ballot,
}

/// What an acceptor holds for a key, as tombstone collection needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Holding {
    /// A tombstone accepted at this ballot.
    Tombstone(Ballot),
    /// No register; a key without one is promised `floor`.
    Absent { floor: Ballot },
    /// A live value.
    Live,
}

mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let wrapped: Vec<&serde_bytes::Bytes> = v.iter().map(|b| serde_bytes::Bytes::new(b)).collect();
        wrapped.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let wrapped: Vec<serde_bytes::ByteBuf> = Vec::deserialize(d)?;
        Ok(wrapped.into_iter().map(serde_bytes::ByteBuf::into_vec).collect())
    }
}

/// Most value bytes one scan reply carries; a page stops early (with `more`) past it.
pub const SCAN_REPLY_BYTES_MAX: usize = 16 << 20;
/// Most reply bytes one Paxos frame answer carries. Replies past it are left out; the proposer
/// treats them as lost (it matches replies by key and ballot, never by position).
pub const PAXOS_REPLY_BYTES_MAX: usize = 32 << 20;

/// A fingerprint of the member ids (FNV-1a over the sorted ids). Addresses are left out: nodes
/// may name one another differently; what must agree is who votes.
pub fn membership_fingerprint(ids: impl IntoIterator<Item = u64>) -> u64 {
    let mut ids: Vec<u64> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// `seen_you`: the answering node has exchanged Paxos messages with the asker before (see
    /// `MmNode`'s first-boot check).
    Hello {
        id: u64,
        info: PeerInfo,
        seen_you: bool,
        /// The answering node's configuration epoch, its configuration when the asker's epoch
        /// is lower (so a node that missed a change catches up), and its join nonce while it is
        /// not a member (what a coordinator adding or replacing it puts in its entry).
        epoch: u64,
        config: Option<ClusterConfig>,
        joining_nonce: Option<u64>,
        /// The highest commit sequence the answering node has seen from the asker, when the
        /// hello's is lower: the asker's data dir is older than what it showed before (restored
        /// from an old copy) and it must not vote.
        behind: Option<u64>,
    },
    /// `id` is the answering node: a reply from another node than the one asked is dropped, so
    /// one acceptor can never be counted twice (say, two ids configured with one address).
    Paxos {
        id: u64,
        replies: Vec<Reply>,
        /// The answering acceptor's commit sequence once these replies were durable.
        seq: u64,
    },
    Scan {
        registers: Vec<ScannedRegister>,
        more: bool,
    },
    /// A Paxos frame of another epoch than the answering acceptor's, which handled nothing. With
    /// its configuration when the frame's epoch is lower (the asker adopts it); without when
    /// it is higher (the asker sends its own).
    WrongEpoch {
        epoch: u64,
        config: Option<ClusterConfig>,
    },
    /// The configuration epoch now in force at the answering node, and the voter it is under it
    /// (`None`: it does not vote).
    ConfigAck {
        epoch: u64,
        voter: Option<u64>,
    },
    /// One report per key asked, in order.
    Inspected {
        holdings: Vec<Holding>,
    },
    /// How many registers were removed.
    Collected {
        removed: u32,
    },
}

pub use rampart_transport::codec::{decode, encode};

/// Register encoding version byte written: the value is a Paxos register envelope (tag, revision
/// or not, expiry or not, user value; `rampart_paxos::encode_register_value`). Envelopes from
/// before revisions (tags 0 and 1) are still read, as values of revision 0.
const REGISTER_FORMAT: u8 = 2;
/// The version before expiry: the value is the user's raw bytes. Still read (as a value without
/// expiry or revision), so a data dir from before needs no migration; rewritten as
/// [`REGISTER_FORMAT`] the next time the register is written. Any other version is refused as
/// corrupt.
const REGISTER_FORMAT_RAW: u8 = 1;
const BALLOT_BYTES: usize = 16;
/// version, three ballots, value tag.
const REGISTER_HEADER_BYTES: usize = 1 + 3 * BALLOT_BYTES + 1;

/// A ballot as 16 bytes (counter, node; little-endian), as registers store them.
pub fn encode_ballot(b: Ballot) -> Vec<u8> {
    let mut out = Vec::with_capacity(BALLOT_BYTES);
    put_ballot(&mut out, b);
    out
}

/// The ballot of [`encode_ballot`]; anything but 16 bytes is malformed.
pub fn decode_ballot(raw: &[u8]) -> Result<Ballot, String> {
    if raw.len() != BALLOT_BYTES {
        return Err(format!("a ballot record of {} bytes, expected {BALLOT_BYTES}", raw.len()));
    }
    Ok(get_ballot(raw))
}

fn put_ballot(out: &mut Vec<u8>, b: Ballot) {
    out.extend_from_slice(&b.counter.to_le_bytes());
    out.extend_from_slice(&b.node.0.to_le_bytes());
}

fn get_ballot(b: &[u8]) -> Ballot {
    let mut c = [0u8; 8];
    let mut n = [0u8; 8];
    c.copy_from_slice(&b[..8]);
    n.copy_from_slice(&b[8..16]);
    Ballot::new(u64::from_le_bytes(c), NodeId(u64::from_le_bytes(n)))
}

/// `version | promised | accepted | base | tag (0 tombstone/absent, 1 value) | value` (the
/// value an envelope, see [`REGISTER_FORMAT`]).
pub fn encode_register(state: &RegisterState) -> Vec<u8> {
    let len = REGISTER_HEADER_BYTES + state.value.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(len);
    out.push(REGISTER_FORMAT);
    put_ballot(&mut out, state.promised);
    put_ballot(&mut out, state.accepted);
    put_ballot(&mut out, state.base);
    match &state.value {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v);
        }
        None => out.push(0),
    }
    out
}

/// The size of a reply on the wire, roughly (for [`PAXOS_REPLY_BYTES_MAX`]).
pub fn reply_bytes(r: &Reply) -> usize {
    let value = match r {
        Reply::Promise { value, .. } | Reply::Peeked { value, .. } => value.as_ref().map_or(0, Vec::len),
        Reply::Accepted { .. } | Reply::Nack { .. } => 0,
    };
    r.key().len() + value + 64
}

pub fn decode_register(raw: &[u8]) -> Result<RegisterState, String> {
    if raw.len() < REGISTER_HEADER_BYTES {
        return Err(format!(
            "register record of {} bytes is shorter than its {REGISTER_HEADER_BYTES}-byte header",
            raw.len()
        ));
    }
    let format = raw[0];
    if format != REGISTER_FORMAT && format != REGISTER_FORMAT_RAW {
        return Err(format!("unknown register format {format}"));
    }
    let promised = get_ballot(&raw[1..17]);
    let accepted = get_ballot(&raw[17..33]);
    let base = get_ballot(&raw[33..49]);
    let value = match raw[49] {
        0 if raw.len() == REGISTER_HEADER_BYTES => None,
        0 => return Err("tombstone register carries value bytes".into()),
        1 if format == REGISTER_FORMAT_RAW => Some(rampart_paxos::encode_register_value(
            &raw[REGISTER_HEADER_BYTES..],
            None,
            rampart_paxos::REVISION_UNKNOWN,
        )),
        1 => {
            let value = &raw[REGISTER_HEADER_BYTES..];
            rampart_paxos::decode_accepted_value(value, accepted).map_err(|e| e.to_string())?;
            Some(value.to_vec())
        }
        t => return Err(format!("unknown register value tag {t}")),
    };
    Ok(RegisterState { promised, accepted, value, base })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_round_trip_and_garbage_is_refused() {
        let s = RegisterState {
            promised: Ballot::new(9, NodeId(2)),
            accepted: Ballot::new(8, NodeId(2)),
            value: Some(rampart_paxos::encode_register_value(b"hello", Some(12_345), 8)),
            base: Ballot::new(3, NodeId(1)),
        };
        assert_eq!(decode_register(&encode_register(&s)).unwrap(), s);
        let t = RegisterState { value: None, ..s.clone() };
        assert_eq!(decode_register(&encode_register(&t)).unwrap(), t);
        let empty = RegisterState { value: Some(rampart_paxos::encode_register_value(b"", None, 5)), ..s.clone() };
        assert_eq!(decode_register(&encode_register(&empty)).unwrap(), empty);
        // Envelopes from before revisions still read.
        let legacy = RegisterState { value: Some(rampart_paxos::encode_register_value(b"x", Some(1), 0)), ..s.clone() };
        assert_eq!(decode_register(&encode_register(&legacy)).unwrap(), legacy);
        // A value whose revision is above the ballot it was accepted at cannot be honest.
        let future = RegisterState { value: Some(rampart_paxos::encode_register_value(b"x", None, 9)), ..s.clone() };
        assert!(decode_register(&encode_register(&future)).unwrap_err().contains("revision above"));
        // The value of a version-2 register must be an envelope.
        let mut not_envelope = encode_register(&RegisterState { value: Some(vec![]), ..s.clone() });
        assert!(decode_register(&not_envelope).unwrap_err().contains("malformed register value"));
        not_envelope.extend_from_slice(&[rampart_paxos::TAG_EXPIRES, 0, 0]);
        assert!(decode_register(&not_envelope).is_err());
        assert!(decode_register(b"").is_err());
        assert!(decode_register(&[7u8; 60]).is_err());
        let mut bad_tag = encode_register(&t);
        bad_tag[49] = 9;
        assert!(decode_register(&bad_tag).is_err());
        let mut tomb_with_bytes = encode_register(&t);
        tomb_with_bytes.push(1);
        assert!(decode_register(&tomb_with_bytes).is_err());
    }

    #[test]
    fn a_register_written_before_expiry_reads_as_a_value_without_expiry() {
        // Format 1 (data dirs from before expiry) held the user's raw bytes.
        let mut v1 = encode_register(&RegisterState {
            promised: Ballot::new(9, NodeId(2)),
            accepted: Ballot::new(8, NodeId(2)),
            value: None,
            base: Ballot::ZERO,
        });
        v1[0] = REGISTER_FORMAT_RAW;
        v1[49] = 1;
        v1.extend_from_slice(&[rampart_paxos::TAG_EXPIRES, 0xff, 0xff]);
        let got = decode_register(&v1).unwrap();
        let envelope = got.value.clone().expect("a value");
        assert_eq!(
            rampart_paxos::decode_register_value(&envelope).unwrap(),
            rampart_paxos::UserValue {
                value: &[rampart_paxos::TAG_EXPIRES, 0xff, 0xff],
                expires_at: None,
                revision: rampart_paxos::REVISION_UNKNOWN
            },
            "raw bytes that look like an envelope are still the user's value, of unknown revision"
        );
        // Written back, it is format 2 and reads the same.
        let again = encode_register(&RegisterState { value: Some(envelope.clone()), ..got.clone() });
        assert_eq!(again[0], REGISTER_FORMAT);
        assert_eq!(decode_register(&again).unwrap().value, Some(envelope));
    }

    #[test]
    fn malformed_peer_messages_are_errors() {
        assert!(decode::<PeerRequest>(b"\xff\x00garbage").is_err());
        let m = Envelope {
            from: 1,
            cluster: 7,
            epoch: 0,
            request: PeerRequest::Scan { prefix: b"a".to_vec(), after: None, limit: 5, values: false },
        };
        let back: Envelope = decode(&encode(&m).unwrap()).unwrap();
        assert!(matches!(
            back,
            Envelope { from: 1, cluster: 7, epoch: 0, request: PeerRequest::Scan { limit: 5, .. } }
        ));
    }

    #[test]
    fn binary_values_travel_as_bytes_not_integer_arrays() {
        let request = Request::Accept {
            key: vec![0xfe; 10],
            ballot: Ballot::new(1, NodeId(1)),
            value: Some(vec![0xff; 1000]),
            base: Ballot::ZERO,
        };
        let m =
            Envelope { from: 1, cluster: 2, epoch: 0, request: PeerRequest::Paxos { requests: vec![request.clone()] } };
        let bytes = encode(&m).unwrap();
        assert!(bytes.len() < 1100, "{} bytes for 1,010 bytes of key and value", bytes.len());
        match decode::<Envelope>(&bytes).unwrap().request {
            PeerRequest::Paxos { requests } => assert_eq!(requests, vec![request]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_fingerprint_depends_on_the_ids_only() {
        assert_eq!(membership_fingerprint([3, 1, 2]), membership_fingerprint([1, 2, 3]));
        assert_ne!(membership_fingerprint([1, 2, 3]), membership_fingerprint([1, 2]));
        assert_ne!(membership_fingerprint([1, 2, 3]), membership_fingerprint([1, 2, 4]));
    }
}
