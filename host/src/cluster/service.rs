//! The peer service: what a node answers the other nodes on its peer endpoint.
//!
//! Request path: [`serve`] accepts a peer's connection, checks that its certificate names a
//! node (`tls::peer_node_id`), and answers each stream's `raft::peer::PeerRequest`: openraft's
//! RPCs go to the local `Raft`; what a follower forwards for its clients (`cluster::forward`)
//! is done here on the leader. A node speaks only for itself, and only members forward.

use std::sync::Arc;

use cairn_wire::ApiError;

use super::forward::unavailable;
use super::liveness::SessionTracker;
use crate::raft::peer::{MembershipChange, PEER_MESSAGE_BYTES_MAX, PeerRequest, PeerResponse};
use crate::raft::{Member, NodeId, Raft};

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
    super::membership::change_membership(raft, change).await
}

/// What a node serves its peers with.
#[derive(Clone)]
pub struct PeerService {
    pub raft: Raft,
    pub sessions: Arc<SessionTracker>,
    /// The node's shared read-index check, which followers' requests join.
    pub reads: super::ReadIndex,
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
            command.time_ms = super::now_ms();
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

    use std::time::Duration;

    use openraft::network::RaftNetworkFactory;
    use openraft::raft::VoteRequest;

    use super::*;
    use crate::cluster::forward::Forwarder;
    use crate::raft::log_store::LogStore;
    use crate::raft::peer::{PEER_ALPN, PeerNetwork, Routes};
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
        let timing = crate::raft::DEFAULT_TIMING;
        let config = timing.config().validate().expect("config");
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
        let reads = super::super::ReadIndex::start(
            raft.clone(),
            id,
            timing.read_lease(),
            Arc::new(forwarder),
        );
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
            null_data: false,
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
