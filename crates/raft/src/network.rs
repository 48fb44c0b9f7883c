//! Node-to-node messages of leader mode, and openraft's network traits over
//! `rampart-transport`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use parking_lot::Mutex;
use rampart_transport::{CallError, Peer};
use serde::{Deserialize, Serialize};

use crate::types::{Command, NodeId, NodeInfo, Response, TypeConfig};

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
    Hello { id: NodeId, info: NodeInfo },
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
        let resp = self.peers.call(self.target, &self.addr, &req, option.hard_ttl()).await.map_err(rpc_error)?;
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
        match self.call(PeerRequest::AppendEntries(rpc), &option).await? {
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
}
