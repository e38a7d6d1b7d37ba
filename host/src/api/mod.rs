//! The client front end: QUIC connections from clients, requests in, responses out.
//!
//! Request path: [`serve`] accepts connections; each bidirectional stream a client opens is run
//! by `stream::serve_stream`, which reads frames, decodes them (`cairn_wire`), and hands
//! each request to [`Frontend`]: writes go to Raft in the order they arrived (`raft`, then
//! `store::apply` on commit), reads wait for the read-index check and then read the state
//! machine. Responses go back on the same stream as their requests complete. On a follower,
//! the proposer sends its batches to the leader and reads take the leader's read index
//! (`raft::peer::Forwarder`); either way the answer waits until this node has applied what it
//! reflects.

mod identity;
mod proposer;
mod read_index;
mod stream;

pub use identity::ConnectionCounts;
pub use proposer::Proposer;
pub use read_index::ReadIndex;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_wire::{
    ApiError, CLOSE_SHUTDOWN, ErrorCode, MemberInfo, RecipeInfo, Reply, Request,
    SET_WATCHES_BATCH_MAX, ServerInfo, SessionInfo, WatchKind, WatchSpec,
};
use quinn::Endpoint;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::raft::peer::{Forwarder, MembershipChange};
use crate::raft::{ApplyReply, Member, NodeId, Raft, SharedState, StorageCounters};
use crate::session::SessionTracker;
use crate::store::recipes::RECIPES_ROOT;
use crate::store::{Action, Caller, DataTree, Principal, SessionId, Write};
use crate::watch::{Outbox, WatchHub};

/// Most client connections a node serves at once; more are refused at the handshake.
pub const CONNECTIONS_MAX: usize = 20_000;

/// Most bidirectional streams one connection may have open (each is an independent request
/// channel; the client library uses one).
pub const STREAMS_PER_CONNECTION_MAX: u32 = 16;

/// Most requests of one stream in progress at once; the stream is not read further until one
/// completes, so QUIC flow control holds the client back.
pub const REQUESTS_IN_FLIGHT_PER_STREAM_MAX: usize = 1024;

/// How long a connection may stay silent before the node drops it, in milliseconds.
pub const CONNECTION_IDLE_MS_MAX: u32 = 60_000;

/// What every connection's requests are served with.
pub struct Frontend {
    pub node_id: NodeId,
    pub raft: Raft,
    pub state: SharedState,
    pub counters: Arc<StorageCounters>,
    pub proposer: Proposer,
    /// Read indexes for linearizable reads, one check for all reads waiting.
    pub reads: ReadIndex,
    pub watches: Arc<WatchHub>,
    pub sessions: Arc<SessionTracker>,
    /// The way to the leader, when this node is not it.
    pub forwarder: Arc<Forwarder>,
    /// One state digest at a time: each encodes the whole tree.
    pub digests: tokio::sync::Semaphore,
    /// Connections open here, per principal.
    pub connections: Arc<ConnectionCounts>,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// The outcome of one request: the reply (or error) and the zxid it reflects.
pub(crate) type Served = (u64, ApplyReply);

impl Frontend {
    /// The zxid of the last entry this node applied.
    pub(crate) fn applied_zxid(&self) -> u64 {
        self.state.read().applied_zxid()
    }

    /// Submits a write for the next group commit; returns once it has its place in the order
    /// of writes, with a future that resolves when it is applied.
    pub(crate) async fn propose(
        &self,
        write: Write,
    ) -> Result<impl Future<Output = Served> + use<>, ApiError> {
        let outcome = self.proposer.submit(write).await?;
        let state = self.state.clone();
        Ok(async move {
            outcome.await.unwrap_or_else(|_| (state.read().applied_zxid(), Err(shutting_down())))
        })
    }

    /// Waits until this node has applied everything committed before now (read index): the
    /// leader confirms its leadership; a follower asks the leader for its read index and waits
    /// to have applied that far.
    pub(crate) async fn linearize(&self) -> Result<(), ApiError> {
        let index = self.reads.get().await?;
        wait_applied(&self.raft, index).await
    }

    /// Adds or removes a member, on the leader (asked through this node if it is not it).
    pub(crate) async fn change_membership(&self, change: MembershipChange) -> ApplyReply {
        let done = |m: &openraft::RaftMetrics<NodeId, Member>| {
            let membership = m.membership_config.membership();
            match &change {
                MembershipChange::Add(node, _, true) => membership.voter_ids().any(|v| v == *node),
                MembershipChange::Add(node, _, false) => membership.get_node(node).is_some(),
                MembershipChange::Remove(node) => membership.get_node(node).is_none(),
            }
        };
        if self.is_leader() {
            crate::raft::peer::change_membership(&self.raft, change.clone()).await?;
        } else {
            self.forwarder.change_membership(&self.raft, change.clone()).await?;
        }
        // Committed on the leader; this node answers once it has the change too.
        let metrics = self
            .raft
            .wait(Some(std::time::Duration::from_millis(FOLLOWER_CATCH_UP_MS)))
            .metrics(done, "the membership change")
            .await
            .map_err(|error| {
                ApiError::new(ErrorCode::Unavailable)
                    .with_detail(format!("the change is not on this node yet: {error}"))
            })?;
        Ok(Reply::MembershipChanged { members: members_of(&metrics) })
    }

    /// The write that moves the cluster's recipes to the runtime this node runs, if every
    /// member has announced that it runs it too; else an error naming who runs what.
    pub(crate) fn adopt_runtime_write(&self) -> Result<Action, ApiError> {
        let metrics = self.raft.metrics().borrow().clone();
        let runtime = crate::recipe::RUNTIME_VERSION;
        let others: Vec<String> = metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(_, member)| member.recipe_runtime != runtime)
            .map(|(id, member)| match member.recipe_runtime.as_str() {
                "" => format!("node {id} has not said"),
                other => format!("node {id} runs {other}"),
            })
            .collect();
        if !others.is_empty() {
            return Err(ApiError::new(ErrorCode::Unavailable).with_detail(format!(
                "not every member runs recipe runtime {runtime}: {}",
                others.join(", ")
            )));
        }
        Ok(Action::AdoptRecipeRuntime { runtime: runtime.to_string() })
    }

    /// `no-auth` unless `principal` administers the cluster (as this node's state says).
    pub(crate) fn require_admin(&self, principal: &Principal, what: &str) -> Result<(), ApiError> {
        self.state.read().tree.caller(principal)?.require_admin(what)
    }

    /// Whether this node leads now.
    pub(crate) fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// Serves a request that does not go through the log: reads, `sync`, and the node-local
    /// watch requests. The reply is queued on `outbox` while the state is still read-locked,
    /// so no event of a later change can overtake it.
    pub(crate) async fn serve_local(
        &self,
        id: u64,
        request: &Request,
        session: Option<SessionId>,
        principal: &Principal,
        outbox: &Outbox,
    ) {
        let local = match request {
            Request::Get { local, .. }
            | Request::Exists { local, .. }
            | Request::Children { local, .. } => *local,
            // Node-local bookkeeping: nothing to wait for.
            Request::ServerInfo {}
            | Request::Ping {}
            | Request::AddWatch { .. }
            | Request::RemoveWatches { .. }
            | Request::WhoAmI {} => true,
            _ => false,
        };
        if !local && let Err(error) = self.linearize().await {
            outbox.send_frame(stream::respond(id, self.applied_zxid(), Err(error)));
            return;
        }
        if let Request::StateDigest {} = request {
            // Linearized above (it is not local), so the check sees every change of rights
            // committed before the request.
            let (zxid, reply) = match self.require_admin(principal, "a state digest") {
                Ok(()) => self.state_digest().await,
                Err(refused) => (self.applied_zxid(), Err(refused)),
            };
            if let Some(_turn) = outbox.room_for_reply().await {
                outbox.send_frame(stream::respond(id, zxid, reply));
            }
            return;
        }
        let Some(_turn) = outbox.room_for_reply().await else { return };
        let state = self.state.read();
        let zxid = state.applied_zxid();
        let reply = state
            .tree
            .caller(principal)
            .and_then(|caller| self.local_reply(&state.tree, request, session, &caller, zxid));
        outbox.send_frame(stream::respond(id, zxid, reply));
    }

    /// The SHA-256 of the tree's snapshot image. The tree is copied under the state's lock (a
    /// copy shares every znode's data) and encoded and hashed on a blocking thread, one digest
    /// at a time, so neither writes nor other reads wait for the encoding.
    async fn state_digest(&self) -> Served {
        let Ok(_one_at_a_time) = self.digests.acquire().await else {
            return (self.applied_zxid(), Err(shutting_down()));
        };
        let (zxid, tree) = {
            let state = self.state.read();
            (state.applied_zxid(), state.tree.clone())
        };
        let digest = tokio::task::spawn_blocking(move || {
            use sha2::Digest;
            let image = tree.to_image().map_err(|e| {
                ApiError::new(ErrorCode::Internal).with_detail(format!("cannot encode: {e}"))
            })?;
            let sha256 = sha2::Sha256::digest(&image).iter().map(|b| format!("{b:02x}")).collect();
            Ok(Reply::StateDigest { zxid, sha256 })
        });
        match digest.await {
            Ok(reply) => (zxid, reply),
            Err(error) => (
                zxid,
                Err(ApiError::new(ErrorCode::Internal).with_detail(format!("digest: {error}"))),
            ),
        }
    }

    /// Answers a request served from this node's state, for `caller`: every read and every
    /// watch registration needs read on the znode (or, when there is none, on the nearest one
    /// above it); session listings show the caller's own sessions to all but administrators.
    fn local_reply(
        &self,
        tree: &DataTree,
        request: &Request,
        session: Option<SessionId>,
        caller: &Caller,
        zxid: u64,
    ) -> ApplyReply {
        let needs_session = || {
            session.ok_or_else(|| {
                ApiError::new(ErrorCode::NoSession)
                    .with_detail("open a session on this stream first")
            })
        };
        let quota = (!caller.admin).then(|| tree.access().quota(&caller.name).watches);
        let watch = |watch: bool, path: &str, kind: WatchKind| -> Result<(), ApiError> {
            if watch {
                let spec = WatchSpec { path: path.to_string(), kind };
                self.watches.register(needs_session()?, spec, quota)?;
            }
            Ok(())
        };
        match request {
            Request::Get { path, watch: w, .. } => {
                tree.check_read(caller, path)?;
                let (data, stat) = tree.get(path)?;
                watch(*w, path, WatchKind::Data)?;
                Ok(Reply::Data { data: data.to_vec(), stat })
            }
            Request::Exists { path, watch: w, .. } => {
                tree.check_read(caller, path)?;
                let stat = tree.exists(path)?;
                let kind = if stat.is_some() { WatchKind::Data } else { WatchKind::Exists };
                watch(*w, path, kind)?;
                Ok(Reply::Exists { stat })
            }
            Request::Children { path, with_stats, watch: w, .. } => {
                tree.check_read(caller, path)?;
                let (stat, mut children) = tree.children(path, *with_stats)?;
                // A child's stat is its own to read: the list shows only its name otherwise.
                for child in children.iter_mut().filter(|child| child.stat.is_some()) {
                    let child_path = cairn_wire::path::join(path, &child.name);
                    if tree.check_read(caller, &child_path).is_err() {
                        child.stat = None;
                    }
                }
                watch(*w, path, WatchKind::Children)?;
                Ok(Reply::Children { stat, children })
            }
            Request::GetAcl { path } => {
                cairn_wire::path::validate(path)?;
                let Some(node) = tree.node(path) else {
                    tree.check_read(caller, path)?;
                    return Err(ApiError::at(ErrorCode::NoNode, path));
                };
                let governing = tree.governing_acl(path, node.acl());
                if !caller.allows(governing, cairn_wire::access::ADMIN) {
                    caller.require(governing, cairn_wire::access::READ, path)?;
                }
                Ok(Reply::Acl { acl: node.acl().to_vec(), stat: node.stat() })
            }
            Request::WhoAmI {} => {
                Ok(Reply::Identity { principal: caller.name.to_string(), admin: caller.admin })
            }
            Request::GetQuota { name } => {
                let name = name.as_deref().unwrap_or(&caller.name);
                if name != &*caller.name {
                    caller.require_admin("reading another principal's quota")?;
                }
                let held = tree.usage(name);
                let usage = cairn_wire::Usage {
                    connections: self.connections.held_by(name),
                    watches: self.watches.held_by(name),
                    ..held
                };
                let quota = tree.access().quota(name);
                Ok(Reply::Quota { name: name.to_string(), quota, usage })
            }
            Request::Sync {} => Ok(Reply::Synced {}),
            Request::Ping {} => needs_session().map(|_| Reply::Pong {}),
            Request::AddWatch { path, recursive } => {
                tree.check_read(caller, path)?;
                let kind =
                    if *recursive { WatchKind::PersistentRecursive } else { WatchKind::Persistent };
                watch(true, path, kind)?;
                Ok(Reply::Watching {})
            }
            Request::RemoveWatches { path, kind } => {
                let count = self.watches.remove(needs_session()?, path, *kind);
                Ok(Reply::WatchesRemoved { count })
            }
            Request::SetWatches { since_zxid, watches } => {
                if watches.len() > SET_WATCHES_BATCH_MAX {
                    return Err(ApiError::new(ErrorCode::InvalidArgument).with_detail(format!(
                        "{} watches in one set-watches, limit {SET_WATCHES_BATCH_MAX}",
                        watches.len()
                    )));
                }
                self.watches.set_watches(needs_session()?, *since_zxid, watches.clone(), tree)?;
                Ok(Reply::Watching {})
            }
            Request::ListSessions {} => Ok(Reply::Sessions {
                sessions: tree
                    .sessions()
                    .filter(|(_, session)| caller.admin || session.principal == *caller.name)
                    .map(|(id, session)| SessionInfo {
                        session_id: id.0,
                        timeout_ms: session.timeout_ms,
                        ephemerals: tree.ephemerals_of(id).count() as u32,
                        principal: session.principal.clone(),
                    })
                    .collect(),
            }),
            Request::ListRecipes {} => {
                tree.check_read(caller, RECIPES_ROOT).map(|()| Reply::Recipes {
                    recipes: tree
                        .recipes()
                        .deployed
                        .iter()
                        .flat_map(|(name, versions)| {
                            versions.iter().map(move |(version, deployed)| RecipeInfo {
                                name: name.clone(),
                                version: *version,
                                hash: deployed.hash.clone(),
                                bytes: deployed.component.len() as u64,
                            })
                        })
                        .collect(),
                })
            }
            Request::Ephemerals { session_id } => {
                let id = match session_id {
                    Some(id) => SessionId(*id),
                    None => needs_session()?,
                };
                // Another principal's session reads as one that does not exist: no ephemerals.
                let owner = tree.session(id).map(|session| session.principal.as_str());
                if !caller.admin && owner.is_some_and(|owner| owner != &*caller.name) {
                    return Ok(Reply::Paths { paths: Vec::new() });
                }
                Ok(Reply::Paths { paths: tree.ephemerals_of(id).cloned().collect() })
            }
            Request::ServerInfo {} => {
                let metrics = self.raft.metrics().borrow().clone();
                if !caller.admin {
                    return Ok(Reply::ServerInfo(self.server_info_outline(&metrics, zxid)));
                }
                Ok(Reply::ServerInfo(ServerInfo {
                    node_id: self.node_id,
                    leader: metrics.current_leader,
                    term: metrics.current_term,
                    applied_zxid: zxid,
                    log_entries_written: self.counters.entries_written(),
                    log_fsyncs: self.counters.fsyncs(),
                    snapshot_zxid: metrics.snapshot.map(|id| id.index),
                    purged_zxid: metrics.purged.map(|id| id.index),
                    members: members_of(&metrics),
                    recipe_runtime: crate::recipe::RUNTIME_VERSION.to_string(),
                    cluster_recipe_runtime: tree.recipes().runtime.clone(),
                    recipes_frozen: tree.recipes().frozen,
                }))
            }
            other => Err(ApiError::new(ErrorCode::Internal)
                .with_detail(format!("{other:?} is not served locally"))),
        }
    }
}

impl Frontend {
    /// What anyone may learn of this node: who it is, who leads, how far it has applied, and
    /// where the members serve clients (to reconnect elsewhere); not its storage counters, its
    /// peers' addresses or replication progress.
    fn server_info_outline(
        &self,
        metrics: &openraft::RaftMetrics<NodeId, Member>,
        zxid: u64,
    ) -> ServerInfo {
        let members = members_of(metrics)
            .into_iter()
            .map(|member| MemberInfo {
                peer_addr: String::new(),
                matched_zxid: None,
                recipe_runtime: String::new(),
                ..member
            })
            .collect();
        ServerInfo {
            node_id: self.node_id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            applied_zxid: zxid,
            log_entries_written: 0,
            log_fsyncs: 0,
            snapshot_zxid: None,
            purged_zxid: None,
            members,
            recipe_runtime: String::new(),
            cluster_recipe_runtime: None,
            recipes_frozen: false,
        }
    }
}

/// The membership in `metrics`, with replication progress when this node leads.
fn members_of(metrics: &openraft::RaftMetrics<NodeId, Member>) -> Vec<MemberInfo> {
    let membership = metrics.membership_config.membership();
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, member)| MemberInfo {
            node_id: *id,
            client_addr: member.client_addr.clone(),
            peer_addr: member.peer_addr.clone(),
            voter: voters.contains(id),
            matched_zxid: metrics
                .replication
                .as_ref()
                .and_then(|progress| progress.get(id).copied().flatten())
                .map(|log_id| log_id.index),
            recipe_runtime: member.recipe_runtime.clone(),
        })
        .collect()
}

/// Accepts client connections until `shutdown` turns true, then closes them all.
pub async fn serve(
    endpoint: Endpoint,
    frontend: Arc<Frontend>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), "connection refused: {CONNECTIONS_MAX} connections open");
            incoming.refuse();
            continue;
        };
        let remote = incoming.remote_address();
        let frontend = frontend.clone();
        tokio::spawn(
            async move {
                stream::serve_connection(incoming, frontend).await;
                drop(permit);
            }
            .instrument(tracing::info_span!("connection", %remote)),
        );
    }
    endpoint.close(CLOSE_SHUTDOWN.into(), b"node shutting down");
}

/// What a request gets when the node stops under it.
fn shutting_down() -> ApiError {
    ApiError::new(ErrorCode::Unavailable).with_detail("the node is shutting down")
}

/// How long a follower waits to apply what the leader has committed before it answers.
pub const FOLLOWER_CATCH_UP_MS: u64 = 10_000;

/// Waits until this node has applied the entry at `index`.
pub(crate) async fn wait_applied(raft: &Raft, index: u64) -> Result<(), ApiError> {
    raft.wait(Some(std::time::Duration::from_millis(FOLLOWER_CATCH_UP_MS)))
        .applied_index_at_least(Some(index), "catching up with the leader")
        .await
        .map(|_| ())
        .map_err(|error| {
            ApiError::new(ErrorCode::Unavailable)
                .with_detail(format!("this node has not applied entry {index}: {error}"))
        })
}

/// The leader's wall clock, stamped on each proposed command: the only time `apply` sees.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
