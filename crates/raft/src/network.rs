//! Node-to-node messages of leader mode, and openraft's network traits over
//! `rampart-transport`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot};
use parking_lot::Mutex;
use rampart_transport::{CallError, Peer};
use serde::{Deserialize, Serialize};

use crate::types::{Command, NodeId, NodeInfo, Response, TypeConfig, Vote};

/// Every request one node sends another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client write received by a follower, for the leader to propose.
    Forward(Command),
    /// Pipelined client writes, to be proposed in this order.
    ForwardMany(Vec<Command>),
    /// A follower asks the leader for a linearizable read index.
    ReadIndex,
    /// Introduces the sender (its client addresses); answered with the receiver's.
    Hello {
        id: NodeId,
        info: NodeInfo,
    },
    /// A follower forwards a lease keepalive (`keepalive`) or lease read to the leader, which
    /// alone counts leases down.
    Lease {
        id: u64,
        keepalive: bool,
    },
}

/// Why a forwarded request failed on the leader.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// Refused before proposing: the write is certainly not in the log.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// Refused before proposing: the leader has not heard from a quorum.
    #[error("leader has no quorum: {0}")]
    NoQuorum(String),
    /// Proposed, but no result: it may or may not be applied.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    #[error("{0}")]
    Rejected(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Forward(Result<Response, ForwardError>),
    ForwardMany(Vec<Result<Response, ForwardError>>),
    ReadIndex(Result<u64, ForwardError>),
    Hello {
        id: NodeId,
        info: NodeInfo,
    },
    /// The lease (`None`: not found), or why the leader could not answer.
    Lease(Result<Option<crate::node::LeaseView>, ForwardError>),
}

pub use rampart_transport::codec::{decode, encode};

/// Clients for every peer, created on first use and replaced when a peer's
/// address changes.
pub struct Peers {
    source_ip: Option<IpAddr>,
    cfg: rampart_transport::Config,
    map: Mutex<HashMap<NodeId, (String, Peer)>>,
}

impl Peers {
    pub fn new(source_ip: Option<IpAddr>, cfg: rampart_transport::Config) -> Arc<Self> {
        Arc::new(Peers { source_ip, cfg, map: Mutex::new(HashMap::new()) })
    }

    /// The client for `id` at `addr`; fails only if the address does not resolve.
    pub fn get(&self, id: NodeId, addr: &str) -> Result<Peer, String> {
        let mut map = self.map.lock();
        if let Some((a, p)) = map.get(&id) {
            if a == addr {
                return Ok(p.clone());
            }
        }
        let sock = resolve(addr)?;
        let peer = Peer::new(id, sock, self.source_ip, self.cfg.clone());
        map.insert(id, (addr.to_string(), peer.clone()));
        Ok(peer)
    }

    /// Sends `req` to `id` at `addr` and decodes the answer.
    pub async fn call(
        &self,
        id: NodeId,
        addr: &str,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        let peer = self
            .get(id, addr)
            .map_err(|reason| CallError::NotSent { addr: SocketAddr::from(([0, 0, 0, 0], 0)), reason })?;
        let payload = encode(req).map_err(|reason| CallError::NotSent { addr: peer.addr(), reason })?;
        let raw = peer.call(payload, timeout).await?;
        decode(&raw).map_err(|message| CallError::Remote { addr: peer.addr(), message })
    }
}

pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve peer address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("peer address {addr:?} resolves to nothing"))
}

/// openraft's network factory.
#[derive(Clone)]
pub struct Network {
    peers: Arc<Peers>,
}

impl Network {
    pub fn new(peers: Arc<Peers>) -> Self {
        Network { peers }
    }
}

pub struct Connection {
    peers: Arc<Peers>,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        Connection { peers: self.peers.clone(), target, addr: node.peer_addr.clone() }
    }
}

fn rpc_error<E: std::error::Error>(e: CallError) -> RPCError<NodeId, NodeInfo, E> {
    if e.certainly_not_delivered() {
        RPCError::Unreachable(Unreachable::new(&e))
    } else {
        RPCError::Network(NetworkError::new(&e))
    }
}

impl Connection {
    async fn call<E: std::error::Error>(
        &self,
        req: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RPCError<NodeId, NodeInfo, E>> {
        self.call_with(req, option, |_| None).await
    }

    /// [`Connection::call`], with `special` choosing the error for some transport failures.
    async fn call_with<E: std::error::Error>(
        &self,
        req: PeerRequest,
        option: &RPCOption,
        special: impl Fn(&CallError) -> Option<RPCError<NodeId, NodeInfo, E>>,
    ) -> Result<PeerResponse, RPCError<NodeId, NodeInfo, E>> {
        let resp = self
            .peers
            .call(self.target, &self.addr, &req, option.hard_ttl())
            .await
            .map_err(|e| special(&e).unwrap_or_else(|| rpc_error(e)))?;
        // A reply that breaks the bounds is treated like a lost one: openraft never sees it.
        crate::validate::check_response(&req, &resp, &crate::validate::Bounds::now()).map_err(|e| {
            tracing::warn!(peer = self.target, error = %e, "dropping an invalid Raft answer");
            RPCError::Network(NetworkError::new(&std::io::Error::other(format!("peer {}: {e}", self.target))))
        })?;
        Ok(resp)
    }

    fn unexpected<E: std::error::Error>(&self, got: &PeerResponse) -> RPCError<NodeId, NodeInfo, E> {
        let msg =
            format!("peer {} answered with the wrong message kind: {:?}", self.target, std::mem::discriminant(got));
        RPCError::Network(NetworkError::new(&std::io::Error::other(msg)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        // An append over the frame limit is never sent: openraft is asked to send fewer entries
        // (it retries with the hint) instead of resending the same batch forever.
        let too_large = |e: &CallError| {
            (matches!(e, CallError::TooLarge { .. }) && entries > 1).then(|| {
                RPCError::PayloadTooLarge(openraft::error::PayloadTooLarge::new_entries_hint((entries / 2).max(1)))
            })
        };
        match self.call_with(PeerRequest::AppendEntries(rpc), &option, too_large).await? {
            PeerResponse::AppendEntries(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        match self.call(PeerRequest::InstallSnapshot(rpc), &option).await? {
            PeerResponse::InstallSnapshot(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        match self.call(PeerRequest::Vote(rpc), &option).await? {
            PeerResponse::Vote(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        send_snapshot(self, vote, snapshot, cancel, option).await
    }
}

/// Consecutive failed sends of one snapshot chunk before a transfer gives up (openraft retries
/// the transfer later, after its backoff).
pub const SNAPSHOT_CHUNK_RETRIES_MAX: u32 = 5;

/// Times one transfer may be sent back to an earlier offset by the follower (it lost its
/// partial file, or refused the finished one as corrupt) before it gives up.
pub const SNAPSHOT_RESTARTS_MAX: u32 = 3;

/// First pause after a failed chunk, doubled per failure up to [`SNAPSHOT_RETRY_DELAY_MAX`].
pub const SNAPSHOT_RETRY_DELAY_MIN: Duration = Duration::from_millis(20);

/// Longest pause between two sends of a failed chunk.
pub const SNAPSHOT_RETRY_DELAY_MAX: Duration = Duration::from_millis(500);

/// The slowest install (bytes of snapshot per second) the last chunk's deadline allows for: the
/// follower answers the last chunk only after checking the whole file and installing it.
pub const SNAPSHOT_INSTALL_BYTES_PER_SEC_MIN: u64 = 4 << 20;

/// Added to the last chunk's deadline, whatever the snapshot's size.
pub const SNAPSHOT_INSTALL_TIMEOUT_BASE: Duration = Duration::from_secs(30);

/// How long the follower may take to answer the last chunk of a snapshot of `bytes` bytes.
pub fn snapshot_install_timeout(bytes: u64, chunk_timeout: Duration) -> Duration {
    let install = SNAPSHOT_INSTALL_TIMEOUT_BASE + Duration::from_secs(bytes / SNAPSHOT_INSTALL_BYTES_PER_SEC_MIN);
    install.max(chunk_timeout)
}

/// Sends a snapshot file to the follower in chunks of openraft's `snapshot_max_chunk_size`,
/// reading one chunk at a time (memory: one chunk, whatever the snapshot's size). Every chunk
/// but the last has `option`'s deadline; the last one, which the follower answers after it has
/// verified and installed the snapshot, gets [`snapshot_install_timeout`]. A failed chunk is
/// resent at the same offset; a follower that asks for another offset (a mismatch) is resumed
/// there, at most [`SNAPSHOT_RESTARTS_MAX`] times.
async fn send_snapshot(
    conn: &mut Connection,
    vote: Vote,
    mut snapshot: Snapshot<TypeConfig>,
    cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
    option: RPCOption,
) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let signature = snapshot.meta.signature();
    let read_err = |e: std::io::Error| {
        StreamingError::StorageError(openraft::StorageError::from_io_error(
            openraft::ErrorSubject::Snapshot(Some(signature.clone())),
            openraft::ErrorVerb::Read,
            e,
        ))
    };
    let network = |msg: String| StreamingError::Network(NetworkError::new(&std::io::Error::other(msg)));
    let chunk_bytes = option.snapshot_chunk_size().unwrap_or(crate::node::SNAPSHOT_CHUNK_BYTES as usize).max(1);
    let end = snapshot.snapshot.seek(std::io::SeekFrom::End(0)).await.map_err(read_err)?;
    let mut cancel = std::pin::pin!(cancel);
    let mut offset = 0u64;
    let mut failures = 0u32;
    let mut restarts = 0u32;
    loop {
        snapshot.snapshot.seek(std::io::SeekFrom::Start(offset)).await.map_err(read_err)?;
        let want = chunk_bytes.min((end - offset) as usize);
        let mut data = vec![0u8; want];
        snapshot.snapshot.read_exact(&mut data).await.map_err(read_err)?;
        let done = offset + want as u64 == end;
        let timeout = if done { snapshot_install_timeout(end, option.hard_ttl()) } else { option.hard_ttl() };
        let req = PeerRequest::InstallSnapshot(InstallSnapshotRequest {
            vote,
            meta: snapshot.meta.clone(),
            offset,
            data,
            done,
        });
        let answer = tokio::select! {
            biased;
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            r = conn.peers.call(conn.target, &conn.addr, &req, timeout) => r,
        };
        let failure = match answer {
            Ok(PeerResponse::InstallSnapshot(Ok(resp))) => {
                failures = 0;
                if resp.vote > vote || done {
                    return Ok(SnapshotResponse::new(resp.vote));
                }
                offset += want as u64;
                continue;
            }
            Ok(PeerResponse::InstallSnapshot(Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m))))) => {
                restarts += 1;
                if restarts > SNAPSHOT_RESTARTS_MAX {
                    return Err(network(format!(
                        "peer {} sent snapshot {} back to an earlier offset more than SNAPSHOT_RESTARTS_MAX \
                         ({SNAPSHOT_RESTARTS_MAX}) times; last: {m}",
                        conn.target, snapshot.meta.snapshot_id
                    )));
                }
                tracing::warn!(peer = conn.target, mismatch = %m, "snapshot transfer resumes where the follower asks");
                offset = if m.expect.id == snapshot.meta.snapshot_id && m.expect.offset <= end {
                    m.expect.offset
                } else {
                    0
                };
                failures = 0;
                continue;
            }
            Ok(PeerResponse::InstallSnapshot(Err(e))) => format!("peer {} refused snapshot chunk: {e}", conn.target),
            Ok(other) => format!(
                "peer {} answered with the wrong message kind: {:?}",
                conn.target,
                std::mem::discriminant(&other)
            ),
            Err(e) => e.to_string(),
        };
        failures += 1;
        tracing::warn!(peer = conn.target, offset, failures, error = %failure, "snapshot chunk failed");
        if failures >= SNAPSHOT_CHUNK_RETRIES_MAX {
            return Err(StreamingError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                "snapshot {} to peer {}: {failures} failed sends of the chunk at offset {offset} \
                 (SNAPSHOT_CHUNK_RETRIES_MAX); last: {failure}",
                snapshot.meta.snapshot_id, conn.target
            )))));
        }
        let delay = SNAPSHOT_RETRY_DELAY_MIN.saturating_mul(1 << (failures - 1).min(8)).min(SNAPSHOT_RETRY_DELAY_MAX);
        tokio::select! {
            biased;
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LeaderId, LogId};

    /// An append whose frame would pass the transport's limit is never sent, and openraft is
    /// asked for fewer entries (it shrinks its batch) instead of getting `Unreachable` and
    /// resending the same batch forever.
    #[tokio::test]
    async fn an_append_over_the_frame_limit_asks_for_fewer_entries() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cfg = rampart_transport::Config { frame_bytes_max: 64 * 1024, ..Default::default() };
        let mut conn = Connection { peers: Peers::new(None, cfg), target: 2, addr };
        let set = |i: u64| Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(Command::Set {
                key: i.to_be_bytes().to_vec(),
                value: vec![7; 16 * 1024],
                cond: rampart_kv::SetCond::Always,
                return_old: false,
                ttl: rampart_kv::Ttl::Clear,
            }),
        };
        let rpc = |n: u64| AppendEntriesRequest {
            vote: Vote { leader_id: LeaderId::new(1, 1), committed: true },
            prev_log_id: None,
            entries: (1..=n).map(set).collect(),
            leader_commit: None,
        };
        let option = RPCOption::new(Duration::from_secs(1));
        match conn.append_entries(rpc(8), option.clone()).await {
            Err(RPCError::PayloadTooLarge(p)) => assert_eq!(p.entries_hint(), 4),
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        // One entry over the limit cannot be split: the peer is reported unreachable.
        let mut one = rpc(1);
        if let EntryPayload::Normal(Command::Set { value, .. }) = &mut one.entries[0].payload {
            *value = vec![7; 128 * 1024];
        }
        assert!(matches!(conn.append_entries(one, option).await, Err(RPCError::Unreachable(_))));
        drop(listener);
    }
}
