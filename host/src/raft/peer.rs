//! Raft between nodes over QUIC: openraft's RPCs (append entries, vote, snapshot chunks) on the
//! peer endpoint, ALPN `cairn-peer/1`, with mutual TLS (`tls::peer_server_config` and
//! `tls::peer_client_config`): a node talks only to nodes whose certificates the cluster CA
//! signed.
//!
//! Request path: openraft's replication tasks call [`PeerClient`] (one per target node), which
//! keeps one QUIC connection to the target and sends each RPC on a bidirectional stream of its
//! own — a MessagePack request, the stream finished, a MessagePack response back. On the other
//! node [`serve`] accepts the stream and hands the request to its `Raft`. Snapshots travel as
//! openraft's chunks (`snapshot_max_chunk_size`), one stream each.
//!
//! The same streams carry what a follower asks of the leader for its clients ([`Forwarder`]):
//! a batch of writes to log (a follower's group commit, proposed by the leader as one entry), a
//! read index for a linearizable read, and the sessions the follower has heard from, so the
//! leader does not expire sessions whose clients talk to a follower.

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

use cairn_wire::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use super::{ApplyReply, Member, NodeId, Raft, TypeConfig};
use crate::session::SessionTracker;
use crate::store::{Command, SessionId};

/// The ALPN of the peer endpoint.
pub const PEER_ALPN: &[u8] = b"cairn-peer/1";
/// Largest RPC, either way. An append-entries request over it is split by openraft (it is told
/// the payload is too large); one entry is at most a few MiB (`api::proposer`).
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

#[derive(Debug, Serialize, Deserialize)]
enum PeerRequest {
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
type Proposed = Result<(u64, Vec<ApplyReply>), ApiError>;

type AppendResult = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
type VoteResult = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
type SnapshotResult =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

#[derive(Debug, Serialize, Deserialize)]
enum PeerResponse {
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
fn address(routes: &Routes, node: NodeId, member: Option<&Member>) -> String {
    routes.get(&node).cloned().or_else(|| member.map(|m| m.peer_addr.clone())).unwrap_or_default()
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

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            addr: address(&self.routes, target, Some(node)),
            endpoint: self.endpoint.clone(),
            connection: None,
        }
    }
}

/// Why an RPC did not get an answer.
#[derive(Debug, thiserror::Error)]
enum Failure {
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
async fn connect(
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
async fn exchange(
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
        Ok(connection)
    }

    /// Sends one request on a stream of its own and reads the answer, within `ttl`.
    async fn call(
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
            self.connection = None;
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

/// How long a forwarded request may take, connection included.
pub const FORWARD_TIMEOUT_MS: u64 = 10_000;

/// How long a request waits for another node to be known as leader before it fails.
pub const FORWARD_LEADER_WAIT_MS: u64 = 3_000;

/// A follower's line to the leader, for its clients' writes, reads and liveness.
#[derive(Debug)]
pub struct Forwarder {
    /// This node: never the one to forward to.
    node: NodeId,
    endpoint: Option<quinn::Endpoint>,
    routes: Routes,
    /// The connection to the leader last used, and who that was.
    leader: tokio::sync::Mutex<Option<(NodeId, quinn::Connection)>>,
}

fn unavailable(detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Unavailable).with_detail(detail.to_string())
}

impl Forwarder {
    pub fn new(node: NodeId, endpoint: Option<quinn::Endpoint>, routes: Routes) -> Forwarder {
        Forwarder { node, endpoint, routes, leader: tokio::sync::Mutex::new(None) }
    }

    /// Sends `request` to the current leader.
    async fn call(&self, raft: &Raft, request: &PeerRequest) -> Result<PeerResponse, ApiError> {
        // Another node leading, as this node knows it; mid-election, or just restarted after
        // leading, this node waits a little to learn who.
        let mut metrics = raft.metrics();
        let other = |m: &openraft::RaftMetrics<NodeId, Member>| {
            m.current_leader.is_some_and(|leader| leader != self.node)
        };
        let learned = tokio::time::timeout(
            Duration::from_millis(FORWARD_LEADER_WAIT_MS),
            metrics.wait_for(|m| other(m)),
        )
        .await
        .is_ok_and(|found| found.is_ok());
        if !learned {
            return Err(unavailable("no other node is known to lead now"));
        }
        let (leader, addr) = {
            let metrics = metrics.borrow();
            let leader = metrics.current_leader.ok_or_else(|| unavailable("no leader now"))?;
            let member = metrics.membership_config.membership().get_node(&leader).cloned();
            (leader, address(&self.routes, leader, member.as_ref()))
        };
        // A membership change waits for a new member to catch up and for voters to answer.
        let timeout_ms = match request {
            PeerRequest::Membership(_) => FORWARD_TIMEOUT_MS + super::reconfig::CHANGE_MS_MAX,
            _ => FORWARD_TIMEOUT_MS,
        };
        let bytes = rmp_serde::to_vec_named(request).map_err(unavailable)?;
        let connection = {
            let mut cached = self.leader.lock().await;
            match cached.as_ref() {
                Some((id, connection)) if *id == leader && connection.close_reason().is_none() => {
                    connection.clone()
                }
                _ => {
                    let connection =
                        connect(self.endpoint.as_ref(), &addr).await.map_err(|why| {
                            unavailable(format!("leader {leader} unreachable: {why}"))
                        })?;
                    *cached = Some((leader, connection.clone()));
                    connection
                }
            }
        };
        // A leader that dies mid-request is noticed by the election, long before a timeout.
        let deposed = metrics.wait_for(|m| m.current_leader != Some(leader));
        let answer = tokio::select! {
            answer = exchange(&connection, bytes, Duration::from_millis(timeout_ms)) => {
                answer.map_err(|why| unavailable(format!("leader {leader}: {why}")))
            }
            _ = deposed => Err(unavailable(format!(
                "leader {leader} lost its leadership before answering; the request may or may \
                 not have taken effect"
            ))),
        };
        if answer.is_err() {
            // Made again on the next call: the leader may be a new process by then.
            let mut cached = self.leader.lock().await;
            if cached.as_ref().is_some_and(|(_, c)| c.stable_id() == connection.stable_id()) {
                *cached = None;
            }
        }
        answer
    }

    /// Has the leader log `command`; returns the entry's index and each write's reply.
    pub async fn propose(&self, raft: &Raft, command: Command) -> Proposed {
        match self.call(raft, &PeerRequest::Propose(command)).await? {
            PeerResponse::Proposed(proposed) => proposed,
            _ => Err(unavailable("the leader answered another request")),
        }
    }

    /// The leader's read index: a read served after this node applied it is linearizable.
    pub async fn read_index(&self, raft: &Raft) -> Result<u64, ApiError> {
        match self.call(raft, &PeerRequest::ReadIndex).await? {
            PeerResponse::ReadIndex(index) => index,
            _ => Err(unavailable("the leader answered another request")),
        }
    }

    /// Has the leader record where node `node` serves.
    pub async fn announce(
        &self,
        raft: &Raft,
        node: NodeId,
        member: Member,
    ) -> Result<(), ApiError> {
        match self.call(raft, &PeerRequest::Announce(node, member)).await? {
            PeerResponse::Announced(done) => done,
            _ => Err(unavailable("the leader answered another request")),
        }
    }

    /// Has the leader change the membership.
    pub async fn change_membership(
        &self,
        raft: &Raft,
        change: MembershipChange,
    ) -> Result<(), ApiError> {
        match self.call(raft, &PeerRequest::Membership(change)).await? {
            PeerResponse::Membership(done) => done,
            _ => Err(unavailable("the leader answered another request")),
        }
    }

    /// Tells the leader these sessions' clients were heard from.
    pub async fn heard(&self, raft: &Raft, sessions: Vec<SessionId>) -> Result<(), ApiError> {
        self.call(raft, &PeerRequest::Heard(sessions)).await.map(|_| ())
    }
}

/// On the leader: records where `node` serves, in the membership every node replicates.
pub async fn record_member(raft: &Raft, node: NodeId, member: Member) -> Result<(), ApiError> {
    // Only a member's own record: a node removed (or never added) must not put itself back.
    let known = raft.metrics().borrow().membership_config.membership().get_node(&node).is_some();
    if !known {
        return Err(unavailable(format!("node {node} is not a member")));
    }
    let changes =
        openraft::ChangeMembers::SetNodes(std::collections::BTreeMap::from([(node, member)]));
    raft.change_membership(changes, true)
        .await
        .map(|_| ())
        .map_err(|error| unavailable(format!("membership not changed: {error}")))
}

/// On the leader: adds or removes a member, refusing what would cost the cluster its quorum
/// (see `reconfig`).
pub async fn change_membership(raft: &Raft, change: MembershipChange) -> Result<(), ApiError> {
    super::reconfig::change_membership(raft, change).await
}

/// What a node serves its peers with.
#[derive(Clone)]
pub struct PeerService {
    pub raft: Raft,
    pub sessions: Arc<SessionTracker>,
    /// The node's shared read-index check, which followers' requests join.
    pub reads: crate::api::ReadIndex,
}

impl std::fmt::Debug for PeerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerService").finish_non_exhaustive()
    }
}

/// Serves peers on `endpoint` until it is closed: every stream is one request.
pub async fn serve(endpoint: quinn::Endpoint, service: PeerService) {
    while let Some(incoming) = endpoint.accept().await {
        let service = service.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::debug!(%error, "peer handshake failed");
                    return;
                }
            };
            // The CA signed it; it must also be a node certificate, naming the node it speaks
            // for. A client certificate from the same CA is refused here.
            let from = match crate::tls::peer_node_id(&connection) {
                Ok(node) => node,
                Err(why) => {
                    tracing::warn!(remote = %connection.remote_address(), %why, "peer refused");
                    connection.close(quinn::VarInt::from_u32(1), b"not a node certificate");
                    return;
                }
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                tokio::spawn(answer(send, recv, service.clone(), from));
            }
        });
    }
}

/// Why a peer's request is not one node `from` may send: a node speaks only for itself (its
/// votes, its leadership, its address), and only a member forwards clients' requests.
fn refusal(request: &PeerRequest, from: NodeId, raft: &Raft) -> Option<String> {
    let speaks_for = match request {
        PeerRequest::Append(rpc) => rpc.vote.leader_id().voted_for(),
        PeerRequest::Vote(rpc) => rpc.vote.leader_id().voted_for(),
        PeerRequest::Snapshot(rpc) => rpc.vote.leader_id().voted_for(),
        PeerRequest::Announce(node, _) => Some(*node),
        PeerRequest::Propose(_)
        | PeerRequest::ReadIndex
        | PeerRequest::Heard(_)
        | PeerRequest::Membership(_) => {
            let member =
                raft.metrics().borrow().membership_config.membership().get_node(&from).is_some();
            return (!member).then(|| format!("node {from} is not a member"));
        }
    };
    (speaks_for != Some(from)).then(|| format!("node {from} speaks for node {speaks_for:?}"))
}

/// Reads one request from peer `from`'s stream, lets Raft handle it, writes the answer.
async fn answer(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: PeerService,
    from: NodeId,
) {
    let raft = &service.raft;
    let request = match recv.read_to_end(PEER_MESSAGE_BYTES_MAX).await {
        Ok(bytes) => rmp_serde::from_slice::<PeerRequest>(&bytes),
        Err(error) => {
            tracing::debug!(%error, "peer request not read");
            return;
        }
    };
    if let Ok(request) = &request
        && let Some(why) = refusal(request, from, raft)
    {
        tracing::warn!(%why, "peer request refused");
        let _ = send.reset(quinn::VarInt::from_u32(2));
        return;
    }
    let response = match request {
        Ok(PeerRequest::Append(rpc)) => PeerResponse::Append(raft.append_entries(rpc).await),
        Ok(PeerRequest::Vote(rpc)) => PeerResponse::Vote(raft.vote(rpc).await),
        Ok(PeerRequest::Snapshot(rpc)) => PeerResponse::Snapshot(raft.install_snapshot(rpc).await),
        Ok(PeerRequest::Propose(mut command)) => {
            // Time enters the log only as the leader's stamp.
            command.time_ms = crate::api::now_ms();
            PeerResponse::Proposed(match raft.client_write(command).await {
                Ok(written) => Ok((written.log_id.index, written.data)),
                Err(error) => Err(unavailable(format!("not logged here: {error}"))),
            })
        }
        Ok(PeerRequest::ReadIndex) => PeerResponse::ReadIndex(service.reads.get_as_leader().await),
        Ok(PeerRequest::Announce(node, member)) => {
            PeerResponse::Announced(record_member(raft, node, member).await)
        }
        Ok(PeerRequest::Membership(change)) => {
            PeerResponse::Membership(change_membership(raft, change).await)
        }
        Ok(PeerRequest::Heard(sessions)) => {
            for session in sessions {
                service.sessions.touch(session);
            }
            PeerResponse::Heard
        }
        Err(error) => {
            // A peer that speaks another protocol gets its stream reset, nothing else.
            tracing::warn!(%error, "malformed peer request");
            let _ = send.reset(quinn::VarInt::from_u32(1));
            return;
        }
    };
    match rmp_serde::to_vec_named(&response) {
        Ok(bytes) => {
            if send.write_all(&bytes).await.is_ok() {
                let _ = send.finish();
            }
        }
        Err(error) => tracing::error!(%error, "cannot encode a peer response"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use cairn_wire::{CreateMode, CreateRequest};

    use super::*;
    use crate::raft::log_store::LogStore;
    use crate::raft::state_machine::StateMachineStore;
    use crate::raft::{SharedState, Storage};
    use crate::recipe::RecipeRuntime;
    use crate::store::{Action, Command, Write};
    use crate::tls::{self, TlsFiles};

    const WAIT: Duration = Duration::from_secs(30);

    /// Node `id`'s certificate from the CA in `ca_dir` (made there if missing), in `dir`.
    fn certificate(ca_dir: &std::path::Path, dir: &std::path::Path, id: NodeId) -> TlsFiles {
        let names = ["127.0.0.1".to_string(), "localhost".to_string()];
        let (ca, _) = tls::ensure_dev_certificates(ca_dir, &names, 0).expect("CA");
        std::fs::create_dir_all(dir).expect("dir");
        for file in ["ca.pem", "ca-key.pem"] {
            std::fs::copy(ca.ca.with_file_name(file), dir.join(file)).expect("copy CA");
        }
        tls::ensure_dev_certificates(dir, &names, id).expect("node certificate").0
    }

    /// Sends node 1 a vote request of a high term for `candidate` from a peer presenting
    /// `files`, and says whether node 1 saw it (its term moved).
    async fn vote_arrives(
        files: &TlsFiles,
        one: &Raft,
        one_addr: &str,
        candidate: NodeId,
        last: openraft::LogId<NodeId>,
    ) -> bool {
        let member = Member { peer_addr: one_addr.into(), ..Member::default() };
        let mut peer =
            PeerNetwork::new(endpoint(files), Routes::default()).new_client(1, &member).await;
        let before = one.metrics().borrow().vote.leader_id().term;
        // Up to date and of a higher term: node 1 would take it, if it were let through.
        let vote = VoteRequest::new(openraft::Vote::new(before + 50, candidate), Some(last));
        let answered = peer.call(&PeerRequest::Vote(vote), WAIT).await;
        let term = one.metrics().borrow().vote.leader_id().term;
        answered.is_ok() || term > before
    }

    fn endpoint(files: &TlsFiles) -> quinn::Endpoint {
        let server = tls::peer_server_config(files, PEER_ALPN).expect("server config");
        let mut endpoint =
            quinn::Endpoint::server(server, "127.0.0.1:0".parse().expect("addr")).expect("bind");
        endpoint.set_default_client_config(
            tls::peer_client_config(files, PEER_ALPN).expect("client config"),
        );
        endpoint
    }

    async fn node(
        id: NodeId,
        dir: &std::path::Path,
        files: &TlsFiles,
    ) -> (Raft, SharedState, String) {
        let storage = Storage::open(&dir.join("store")).expect("storage");
        let log_store = LogStore::new(storage.clone()).expect("log");
        let recipes = Arc::new(RecipeRuntime::new().expect("engine"));
        let machine = StateMachineStore::open(storage, recipes).expect("state machine");
        let state = machine.state();
        let endpoint = endpoint(files);
        let addr = endpoint.local_addr().expect("addr").to_string();
        let config = crate::raft::timed_config().validate().expect("config");
        let raft = Raft::new(
            id,
            Arc::new(config),
            PeerNetwork::new(endpoint.clone(), Routes::default()),
            log_store,
            machine,
        )
        .await
        .expect("raft");
        let forwarder = Forwarder::new(id, Some(endpoint.clone()), Routes::default());
        let reads = crate::api::ReadIndex::start(raft.clone(), id, Arc::new(forwarder));
        let service = PeerService { raft: raft.clone(), sessions: Arc::default(), reads };
        tokio::spawn(serve(endpoint, service));
        (raft, state, addr)
    }

    /// Two nodes elect a leader and replicate a write over QUIC with mutual TLS; a third whose
    /// certificate another CA signed cannot take part.
    #[tokio::test(flavor = "multi_thread")]
    async fn nodes_replicate_over_quic_and_strangers_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca");
        let one_files = certificate(&ca, &dir.path().join("one/tls"), 1);
        let two_files = certificate(&ca, &dir.path().join("two/tls"), 2);
        let (one, _, one_addr) = node(1, &dir.path().join("one"), &one_files).await;
        let (two, two_state, two_addr) = node(2, &dir.path().join("two"), &two_files).await;
        let member = |peer_addr: &str| Member { peer_addr: peer_addr.into(), ..Member::default() };
        let members = BTreeMap::from([(1, member(&one_addr)), (2, member(&two_addr))]);
        one.initialize(members).await.expect("initialized");
        let leader = one
            .wait(Some(WAIT))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .expect("elected")
            .current_leader
            .expect("leader");
        let leader = if leader == 1 { &one } else { &two };
        let create = CreateRequest {
            path: "/replicated".into(),
            data: b"over quic".to_vec(),
            mode: CreateMode::Persistent,
            sequential: false,
            ttl_ms: None,
            acl: None,
        };
        let command = Command { time_ms: 1, writes: vec![Write::system(Action::Create(create))] };
        let written = leader.client_write(command).await.expect("committed");
        two.wait(Some(WAIT))
            .applied_index_at_least(Some(written.log_id.index), "the write")
            .await
            .expect("replicated");
        let replicated = two_state.read().tree.get("/replicated").map(|(data, _)| data.to_vec());
        assert_eq!(replicated.expect("there"), b"over quic");

        // A node that trusts the cluster CA but whose certificate another CA signed: node 1
        // refuses the handshake, so its votes never arrive. (TLS 1.3 lets the client finish
        // first; the server then closes the connection.)
        let other = certificate(&dir.path().join("other-ca"), &dir.path().join("x/tls"), 3);
        let stranger = TlsFiles { ca: one_files.ca.clone(), ..other };
        assert!(!vote_arrives(&stranger, &one, &one_addr, 3, written.log_id).await);

        // A client certificate the cluster CA signed is no node's: refused on the peer port.
        let (cert, key) =
            tls::issue_client_certificate(&one_files.ca, "mallory", &dir.path().join("m"))
                .expect("client certificate");
        let client = TlsFiles { ca: one_files.ca.clone(), cert, key };
        assert!(!vote_arrives(&client, &one, &one_addr, 3, written.log_id).await);

        // A node speaks only for itself: node 2's certificate cannot ask votes for node 3.
        assert!(!vote_arrives(&two_files, &one, &one_addr, 3, written.log_id).await);
        // The same certificate asking for its own node is heard (the check is not blind).
        assert!(vote_arrives(&two_files, &one, &one_addr, 2, written.log_id).await);
    }
}
