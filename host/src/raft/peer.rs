//! Raft between nodes over QUIC: openraft's RPCs (append entries, vote, snapshot chunks) on the
//! peer endpoint, ALPN `cairn-peer/1`, with mutual TLS (`tls::peer_server_config` and
//! `tls::peer_client_config`): a node talks only to nodes whose certificates the cluster CA
//! signed.
//!
//! Request path: openraft's replication tasks call [`PeerClient`] (one per target node), which
//! keeps one QUIC connection to the target and sends each RPC on a bidirectional stream of its
//! own — a MessagePack request, the stream finished, a MessagePack response back. On the other
//! node the cluster layer's peer service (`cluster::service`) accepts the stream and hands the
//! request to its `Raft`. Snapshots travel as openraft's chunks (`snapshot_max_chunk_size`),
//! one stream each.
//!
//! The same messages (`PeerRequest`) carry what a follower asks of the leader for its clients
//! (`cluster::forward`): a batch of writes to log, a read index for a linearizable read, the
//! sessions the follower has heard from, its address, a membership change. This module is the
//! transport: who sends them and what they mean is the cluster layer's.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::sync::Arc;

use cairn_wire::ApiError;
use serde::{Deserialize, Serialize};

use super::{ApplyReply, Member, NodeId, TypeConfig};
use crate::store::{Command, SessionId};

/// The ALPN of the peer endpoint.
pub const PEER_ALPN: &[u8] = b"cairn-peer/1";
/// Largest RPC, either way. An append-entries request over it is split by openraft (it is told
/// the payload is too large); one entry is at most a few MiB (`cluster::Proposer`).
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How long connecting to a peer may take before it counts as unreachable.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// A peer connection silent this long is dead: a peer that crashed (and maybe came back as a
/// new process, which cannot speak for the old connection) is noticed within it.
pub const PEER_IDLE_TIMEOUT_MS: u32 = 3_000;
/// How often an idle peer connection is pinged to show it is alive.
pub const PEER_KEEP_ALIVE_MS: u64 = 500;

/// The QUIC transport settings of peer connections, both ways.
pub fn transport() -> std::sync::Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(quinn::VarInt::from_u32(PEER_IDLE_TIMEOUT_MS).into()))
        .keep_alive_interval(Some(Duration::from_millis(PEER_KEEP_ALIVE_MS)));
    std::sync::Arc::new(transport)
}

/// What one node asks of another.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// From a follower: log these writes as one entry.
    Propose(Command),
    /// From a follower: the index a linearizable read must wait for.
    ReadIndex,
    /// From a follower: its clients of these sessions were heard from.
    Heard(Vec<SessionId>),
    /// From any member: where it serves, to be recorded in the membership.
    Announce(NodeId, Member),
    /// From any member, for a client: change who is in the cluster.
    Membership(MembershipChange),
}

/// A change of the cluster's members an operator asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Joins as a learner; becomes a voter once caught up when the flag says so.
    Add(NodeId, Member, bool),
    Remove(NodeId),
}

/// What the leader answers a forwarded batch: the entry's index and each write's reply.
pub(crate) type Proposed = Result<(u64, Vec<ApplyReply>), ApiError>;

type AppendResult = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
type VoteResult = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
type SnapshotResult =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// What a node answers.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerResponse {
    Append(AppendResult),
    Vote(VoteResult),
    Snapshot(SnapshotResult),
    Proposed(Proposed),
    ReadIndex(Result<u64, ApiError>),
    Heard,
    Announced(Result<(), ApiError>),
    Membership(Result<(), ApiError>),
}

/// Opens connections to peers from this node's peer endpoint (whose default client
/// configuration presents the node's certificate). A single node has no endpoint, and every
/// peer is unreachable to it.
#[derive(Debug, Clone)]
pub struct PeerNetwork {
    endpoint: Option<quinn::Endpoint>,
    routes: Routes,
}

/// Node-local addresses for some peers, used instead of the membership's.
pub type Routes = Arc<std::collections::BTreeMap<NodeId, String>>;

impl PeerNetwork {
    pub fn new(endpoint: quinn::Endpoint, routes: Routes) -> PeerNetwork {
        PeerNetwork { endpoint: Some(endpoint), routes }
    }

    /// The network of a node that has no peers.
    pub fn none() -> PeerNetwork {
        PeerNetwork { endpoint: None, routes: Routes::default() }
    }
}

/// Where to reach `node`: its route if this node has one, else its address in the membership.
pub(crate) fn address(routes: &Routes, node: NodeId, member: Option<&Member>) -> String {
    routes.get(&node).cloned().or_else(|| member.map(|m| m.peer_addr.clone())).unwrap_or_default()
}

/// The open connections to each node this one sends Raft's messages to, one entry per client
/// holding one (clients share an open link): for their round-trip times, and so that a client
/// openraft makes for a moment (a leadership check for a read index) need not connect anew.
/// Each entry goes with its client; bounded by the clients openraft holds at once, for the
/// nodes the membership names.
type Links = BTreeMap<NodeId, Vec<quinn::Connection>>;

static LINKS: std::sync::LazyLock<Mutex<Links>> = std::sync::LazyLock::new(Mutex::default);

fn links() -> std::sync::MutexGuard<'static, Links> {
    LINKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The round-trip time QUIC estimates to each peer, on the longest-held open connection to it.
pub fn round_trips() -> Vec<(NodeId, Duration)> {
    let mut links = links();
    for connections in links.values_mut() {
        connections.retain(|connection| connection.close_reason().is_none());
    }
    links.retain(|_, connections| !connections.is_empty());
    links.iter().map(|(id, connections)| (*id, connections[0].rtt())).collect()
}

/// One target node: a connection, made on first use and again after it fails.
#[derive(Debug)]
pub struct PeerClient {
    target: NodeId,
    addr: String,
    endpoint: Option<quinn::Endpoint>,
    connection: Option<quinn::Connection>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    /// A client for `target`, on an open link to it if there is one: openraft makes a client
    /// per voter for every leadership check (each read index), which would otherwise make a
    /// QUIC and TLS handshake every time.
    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        let mut client = PeerClient {
            target,
            addr: address(&self.routes, target, Some(node)),
            endpoint: self.endpoint.clone(),
            connection: None,
        };
        client.share_open_link();
        client
    }
}

impl Drop for PeerClient {
    /// Openraft is done with this target (a replication stream ended, a member was removed):
    /// its connection no longer counts among the peers' round trips, and closes.
    fn drop(&mut self) {
        self.forget_connection();
    }
}

/// Why an RPC did not get an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// Could not connect: openraft backs off before trying again.
    #[error("node {target} at {addr} is unreachable: {why}")]
    Unreachable { target: NodeId, addr: String, why: String },
    /// The connection or stream broke mid-way: openraft may retry at once.
    #[error("RPC to node {target} failed: {why}")]
    Network { target: NodeId, why: String },
    #[error("request of {0} bytes is over the peer message limit")]
    TooLarge(usize),
}

impl Failure {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, Member, E> {
        match &self {
            Failure::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&self)),
            Failure::Network { .. } => RPCError::Network(NetworkError::new(&self)),
            Failure::TooLarge(_) => RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(1)),
        }
    }
}

/// Connects to the peer endpoint at `addr`.
pub(crate) async fn connect(
    endpoint: Option<&quinn::Endpoint>,
    addr: &str,
) -> Result<quinn::Connection, String> {
    let endpoint = endpoint.ok_or("this node has no peer endpoint")?;
    let addr: std::net::SocketAddr =
        addr.parse().map_err(|e| format!("bad address {addr:?}: {e}"))?;
    let connecting = endpoint.connect(addr, &addr.ip().to_string()).map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS), connecting)
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// A send stream that is reset, not finished, if dropped before it is taken out.
struct ResetOnDrop(Option<quinn::SendStream>);

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if let Some(mut stream) = self.0.take() {
            let _ = stream.reset(quinn::VarInt::from_u32(0));
        }
    }
}

/// One request on a stream of its own, and its answer, within `ttl`.
pub(crate) async fn exchange(
    connection: &quinn::Connection,
    bytes: Vec<u8>,
    ttl: Duration,
) -> Result<PeerResponse, String> {
    let exchange = async move {
        let (send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        // Dropped mid-write (timed out), the stream is reset, never finished: the other node
        // must not take a truncated request for a whole one.
        let mut send = ResetOnDrop(Some(send));
        let stream = send.0.as_mut().ok_or("no stream")?;
        stream.write_all(&bytes).await.map_err(|e| e.to_string())?;
        stream.finish().map_err(|e| e.to_string())?;
        send.0 = None;
        let answer = recv.read_to_end(PEER_MESSAGE_BYTES_MAX).await.map_err(|e| e.to_string())?;
        rmp_serde::from_slice::<PeerResponse>(&answer).map_err(|e| e.to_string())
    };
    tokio::time::timeout(ttl, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ttl:?}")))
}

impl PeerClient {
    /// Lets the connection go: it no longer counts among the peers' links, and closes once
    /// nothing else holds it.
    fn forget_connection(&mut self) {
        let Some(connection) = self.connection.take() else { return };
        let mut links = links();
        if let Some(connections) = links.get_mut(&self.target) {
            // This client's entry only: another client may share the connection.
            let mine =
                connections.iter().position(|kept| kept.stable_id() == connection.stable_id());
            if let Some(at) = mine {
                connections.remove(at);
            }
            if connections.is_empty() {
                links.remove(&self.target);
            }
        }
    }

    /// Takes an open link to the same address, if another client has one, and counts itself
    /// among its holders.
    fn share_open_link(&mut self) {
        let mut links = links();
        let Some(connections) = links.get_mut(&self.target) else { return };
        let open = connections
            .iter()
            .find(|kept| {
                kept.close_reason().is_none() && kept.remote_address().to_string() == self.addr
            })
            .cloned();
        if let Some(open) = open {
            connections.push(open.clone());
            self.connection = Some(open);
        }
    }

    async fn connection(&mut self) -> Result<quinn::Connection, Failure> {
        if let Some(connection) = &self.connection
            && connection.close_reason().is_none()
        {
            return Ok(connection.clone());
        }
        let connection = connect(self.endpoint.as_ref(), &self.addr).await.map_err(|why| {
            Failure::Unreachable { target: self.target, addr: self.addr.clone(), why }
        })?;
        self.connection = Some(connection.clone());
        let mut links = links();
        let connections = links.entry(self.target).or_default();
        connections.retain(|kept| kept.close_reason().is_none());
        connections.push(connection.clone());
        drop(links);
        Ok(connection)
    }

    /// Sends one request on a stream of its own and reads the answer, within `ttl`.
    pub(crate) async fn call(
        &mut self,
        request: &PeerRequest,
        ttl: Duration,
    ) -> Result<PeerResponse, Failure> {
        let bytes = rmp_serde::to_vec_named(request)
            .map_err(|e| Failure::Network { target: self.target, why: e.to_string() })?;
        if bytes.len() > PEER_MESSAGE_BYTES_MAX {
            return Err(Failure::TooLarge(bytes.len()));
        }
        let connection = self.connection().await?;
        exchange(&connection, bytes, ttl).await.map_err(|why| {
            // A broken connection is made again on the next call.
            self.forget_connection();
            Failure::Network { target: self.target, why }
        })
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, Member, E> {
        Failure::Network { target: self.target, why: "answered another request".into() }.into_rpc()
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.call(&PeerRequest::Append(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Append(answer)) => {
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(failure) => Err(failure.into_rpc()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(&PeerRequest::Snapshot(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Snapshot(answer)) => {
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(failure) => Err(failure.into_rpc()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.call(&PeerRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Vote(answer)) => {
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(failure) => Err(failure.into_rpc()),
        }
    }
}
