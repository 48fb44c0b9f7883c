//! The JSON shapes of the `/v1/` HTTP API.

use serde::{Deserialize, Serialize};

use crate::base64;

/// One node of the cluster as the server describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Node id, unique in the cluster.
    pub id: u64,
    /// Address other nodes replicate to.
    pub peer_addr: String,
    /// Redis-protocol client address.
    pub resp_addr: String,
    /// HTTP client address.
    pub http_addr: String,
    /// Whether the node votes (false for a learner still catching up).
    #[serde(default = "default_true")]
    pub voter: bool,
    /// Fields this client does not know, kept so `--json` shows them.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_true() -> bool {
    true
}

/// The body of `POST /v1/cluster/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMember {
    /// Id of the node to add.
    pub id: u64,
    /// Its peer (replication) address.
    pub peer_addr: String,
    /// Its RESP address.
    pub resp_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
}

/// `GET /v1/status`: one node's view of itself and the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The answering node's id.
    pub id: u64,
    /// `leader`, `follower`, `candidate` or `learner`; `peer` in multi-master mode.
    pub role: String,
    /// The leader this node knows of, if any (none in multi-master mode).
    #[serde(default)]
    pub leader_id: Option<u64>,
    /// Current Raft term (0 in multi-master mode, which has none).
    #[serde(default)]
    pub term: u64,
    /// Highest log index known committed (0 in multi-master mode, which has no log).
    #[serde(default)]
    pub commit_index: u64,
    /// Highest log index applied to the key-value state (0 in multi-master mode).
    #[serde(default)]
    pub applied_index: u64,
    /// Cluster members as this node sees them.
    #[serde(default)]
    pub members: Vec<Member>,
    /// Fields this client does not know.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `GET /v1/cluster/members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberList {
    /// The current leader, if known.
    #[serde(default)]
    pub leader_id: Option<u64>,
    /// All members.
    pub members: Vec<Member>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MembersOnly {
    pub members: Vec<Member>,
}

/// A value read with `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The raw value.
    pub value: Vec<u8>,
    /// Revision of the write that produced it.
    pub revision: u64,
}

/// The answer to a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// Whether the key existed.
    pub deleted: bool,
    /// The store's revision after the delete.
    pub revision: u64,
}

/// A granted or renewed lease (`POST /v1/lease`, `POST /v1/lease/{id}/keepalive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease's id (never 0).
    pub id: u64,
    /// Its full TTL: it lives at least this long from the answer unless revoked.
    pub ttl_ms: u64,
}

/// `GET /v1/lease/{id}`: a lease, what is left of it, and its keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "WireLeaseInfo")]
pub struct LeaseInfo {
    /// The lease's id.
    pub id: u64,
    /// Its full TTL.
    pub ttl_ms: u64,
    /// What is left of it by the leader's count.
    pub remaining_ms: u64,
    /// The attached keys, in order.
    pub keys: Vec<Vec<u8>>,
}

/// The wire form: `keys` as strings when every key is UTF-8, else `keys_b64` (base64, every key).
#[derive(Debug, Deserialize)]
struct WireLeaseInfo {
    id: u64,
    ttl_ms: u64,
    remaining_ms: u64,
    #[serde(default)]
    keys: Option<Vec<String>>,
    #[serde(default)]
    keys_b64: Option<Vec<String>>,
}

impl TryFrom<WireLeaseInfo> for LeaseInfo {
    type Error = String;
    fn try_from(w: WireLeaseInfo) -> Result<Self, String> {
        let keys = match (w.keys, w.keys_b64) {
            (Some(keys), None) => keys.into_iter().map(String::into_bytes).collect(),
            (None, Some(b64)) => b64
                .iter()
                .map(|k| base64::decode(k).ok_or_else(|| "keys_b64 holds invalid base64".to_owned()))
                .collect::<Result<_, _>>()?,
            (Some(_), Some(_)) => return Err("both keys and keys_b64 given".into()),
            (None, None) => return Err("neither keys nor keys_b64 given".into()),
        };
        Ok(LeaseInfo { id: w.id, ttl_ms: w.ttl_ms, remaining_ms: w.remaining_ms, keys })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Revoked {
    pub revoked: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct LeaseRequest {
    pub ttl_ms: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Revision {
    pub revision: u64,
}

/// One key of a scan. Serialises to the API's own form: `key`/`value` for
/// UTF-8, `key_b64`/`value_b64` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireItem", into = "WireItem")]
pub struct Item {
    /// The key's bytes.
    pub key: Vec<u8>,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Revision of the last write to the key.
    pub revision: u64,
}

/// `GET /v1/kv?prefix=...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanPage {
    /// Keys in order.
    pub items: Vec<Item>,
    /// Whether more keys match than the limit allowed.
    #[serde(default)]
    pub more: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
    revision: u64,
}

fn pick(text: Option<String>, b64: Option<String>, what: &str) -> Result<Vec<u8>, String> {
    match (text, b64) {
        (Some(t), None) => Ok(t.into_bytes()),
        (None, Some(b)) => base64::decode(&b).ok_or_else(|| format!("{what}_b64 is not valid base64")),
        (Some(_), Some(_)) => Err(format!("both {what} and {what}_b64 given")),
        (None, None) => Err(format!("neither {what} nor {what}_b64 given")),
    }
}

fn split(bytes: Vec<u8>) -> (Option<String>, Option<String>) {
    match String::from_utf8(bytes) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(base64::encode(e.as_bytes()))),
    }
}

impl TryFrom<WireItem> for Item {
    type Error = String;
    fn try_from(w: WireItem) -> Result<Self, String> {
        Ok(Item {
            key: pick(w.key, w.key_b64, "key")?,
            value: pick(w.value, w.value_b64, "value")?,
            revision: w.revision,
        })
    }
}

impl From<Item> for WireItem {
    fn from(item: Item) -> Self {
        let (key, key_b64) = split(item.key);
        let (value, value_b64) = split(item.value);
        WireItem { key, key_b64, value, value_b64, revision: item.revision }
    }
}

/// A lock held, an election won, or the current holder of either (`GET /v1/lock/{name}`,
/// `GET /v1/election/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The holder's key (`_rampart/lock/NAME/LEASE`, `_rampart/election/NAME/LEASE`).
    pub key: String,
    /// Strictly increases across the holders of one lock or election: a resource that refuses
    /// any token lower than the highest it has seen refuses every holder but the latest.
    pub fencing_token: u64,
    /// The lease the holder holds it with.
    pub lease: u64,
    /// An election leader's value (absent for locks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// How many contend, the holder included (only in answers to `GET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contenders: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AcquireRequest<'a> {
    pub lease: u64,
    pub wait_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_place: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Released {
    pub released: bool,
}

/// The JSON error body every non-2xx answer carries.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub code: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_page_decodes_text_and_base64() {
        let body = r#"{"items":[{"key":"a","value":"1","revision":3},{"key_b64":"/w==","value_b64":"/gE=","revision":4}],"more":true}"#;
        let page: ScanPage = serde_json::from_str(body).unwrap();
        assert!(page.more);
        assert_eq!(page.items[0], Item { key: b"a".to_vec(), value: b"1".to_vec(), revision: 3 });
        assert_eq!(page.items[1], Item { key: vec![0xff], value: vec![0xfe, 1], revision: 4 });
        // And back to the same wire form.
        assert_eq!(serde_json::to_string(&page).unwrap(), body);
    }

    #[test]
    fn bad_items_are_rejected() {
        for body in [
            r#"{"items":[{"value":"1","revision":3}],"more":false}"#,
            r#"{"items":[{"key":"a","key_b64":"YQ==","value":"1","revision":3}],"more":false}"#,
            r#"{"items":[{"key":"a","value_b64":"!!","revision":3}],"more":false}"#,
            r#"{"items":[{"key":"a","value":"1"}],"more":false}"#,
        ] {
            assert!(serde_json::from_str::<ScanPage>(body).is_err(), "{body}");
        }
    }

    #[test]
    fn status_and_members_decode() {
        let body = r#"{"id":1,"role":"leader","leader_id":1,"term":5,"commit_index":10,"applied_index":9,"members":[{"id":1,"peer_addr":"127.0.0.1:7001","resp_addr":"127.0.0.1:6001","http_addr":"127.0.0.1:8001","voter":true}],"uptime_s":3}"#;
        let s: Status = serde_json::from_str(body).unwrap();
        assert_eq!(
            (s.id, s.role.as_str(), s.leader_id, s.term, s.commit_index, s.applied_index),
            (1, "leader", Some(1), 5, 10, 9)
        );
        assert_eq!(s.members[0].http_addr, "127.0.0.1:8001");
        assert_eq!(s.extra.get("uptime_s"), Some(&serde_json::json!(3)));
        let m: MemberList = serde_json::from_str(r#"{"leader_id":null,"members":[]}"#).unwrap();
        assert_eq!(m.leader_id, None);
    }
}
