//! The client front end: QUIC connections from clients, requests in, responses out.
//!
//! Request path: [`serve`] accepts connections; each bidirectional stream a client opens is run
//! by `stream::serve_stream`, which reads frames, decodes them (`cairn_wire`), learns who the
//! connection speaks for (`identity`), and hands each request on: writes go to the cluster
//! layer (`cluster::Cluster::propose`, then `store::apply` on commit) in the order they
//! arrived, reads wait for its read index (`cluster::Cluster::linearize`) and then read the
//! state, checked against the reader's rights. Responses go back on the same stream as their
//! requests complete. The front end depends on the cluster layer, the state and the watch hub
//! only; where the leader is, and how to reach it, is the cluster layer's business.

mod identity;
mod stream;

pub use identity::ConnectionCounts;
pub(crate) use stream::{open_session, resume_session};

use std::sync::Arc;

use cairn_wire::{
    ApiError, CLOSE_SHUTDOWN, ErrorCode, MemberInfo, RecipeInfo, Reply, Request,
    SET_WATCHES_BATCH_MAX, ServerInfo, SessionInfo, WatchKind, WatchSpec,
};
use quinn::Endpoint;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::cluster::{ApplyReply, Cluster, Member, NodeId, Served, members_of, shutting_down};
use crate::store::paths::RECIPES_ROOT;
use crate::store::{Caller, DataTree, Principal, SessionId, Znode, Zxid};
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

/// What every connection's requests are served with: the cluster layer, the watch hub, and
/// what the client front end keeps for itself.
pub struct Frontend {
    pub cluster: Arc<Cluster>,
    pub watches: Arc<WatchHub>,
    /// One state digest at a time: each encodes the whole tree.
    pub digests: tokio::sync::Semaphore,
    /// Connections open here, per principal.
    pub connections: Arc<ConnectionCounts>,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend").field("node_id", &self.cluster.node_id).finish_non_exhaustive()
    }
}

impl Frontend {
    /// `no-auth` unless `principal` administers the cluster (as this node's state says).
    pub(crate) fn require_admin(&self, principal: &Principal, what: &str) -> Result<(), ApiError> {
        self.cluster.state.read().tree.caller(principal)?.require_admin(what)
    }

    /// Serves a request that does not go through the log: reads, `sync`, and the node-local
    /// watch requests. The reply is queued on `outbox` while the state is still read-locked,
    /// so no event of a later change can overtake it.
    pub(crate) async fn serve_local(
        &self,
        asked: stream::Asked,
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
        if !local && let Err(error) = self.cluster.linearize().await {
            outbox.send_frame(asked.answer(self.cluster.applied_zxid(), Err(error)));
            return;
        }
        if let Request::StateDigest {} = request {
            // Linearized above (it is not local), so the check sees every change of rights
            // committed before the request.
            let (zxid, reply) = match self.require_admin(principal, "a state digest") {
                Ok(()) => self.state_digest().await,
                Err(refused) => (self.cluster.applied_zxid(), Err(refused)),
            };
            if let Some(_turn) = outbox.room_for_reply().await {
                outbox.send_frame(asked.answer(zxid, reply));
            }
            return;
        }
        let Some(_turn) = outbox.room_for_reply().await else { return };
        let state = self.cluster.state.read();
        let zxid = state.applied_zxid();
        let reply = state
            .tree
            .caller(principal)
            .and_then(|caller| self.local_reply(&state.tree, request, session, &caller, zxid));
        outbox.send_frame(asked.answer(zxid, reply));
    }

    /// The SHA-256 of the tree's snapshot image. The tree is copied under the state's lock (a
    /// copy shares every znode's data) and encoded and hashed on a blocking thread, one digest
    /// at a time, so neither writes nor other reads wait for the encoding.
    async fn state_digest(&self) -> Served {
        let Ok(_one_at_a_time) = self.digests.acquire().await else {
            return (self.cluster.applied_zxid(), Err(shutting_down()));
        };
        let (zxid, tree) = {
            let state = self.cluster.state.read();
            (state.applied_zxid(), state.tree.clone())
        };
        let digest = tokio::task::spawn_blocking(move || {
            use sha2::Digest;
            let image = tree.to_image().map_err(|e| {
                ApiError::new(ErrorCode::Internal).with_detail(format!("cannot encode: {e}"))
            })?;
            let sha256 = sha2::Sha256::digest(&image).iter().map(|b| format!("{b:02x}")).collect();
            Ok(Reply::StateDigest { zxid: zxid.0, sha256 })
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
    pub(crate) fn local_reply(
        &self,
        tree: &DataTree,
        request: &Request,
        session: Option<SessionId>,
        caller: &Caller,
        zxid: Zxid,
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
                // Only empty data can be null: the common read looks the znode up once.
                let null = data.is_empty() && tree.node(path).is_some_and(Znode::null_data);
                watch(*w, path, WatchKind::Data)?;
                Ok(Reply::Data { data: data.to_vec(), null, stat })
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
                self.watches.set_watches(
                    needs_session()?,
                    Zxid(*since_zxid),
                    watches.clone(),
                    tree,
                )?;
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
                let metrics = self.cluster.raft.metrics().borrow().clone();
                if !caller.admin {
                    return Ok(Reply::ServerInfo(self.server_info_outline(&metrics, zxid)));
                }
                Ok(Reply::ServerInfo(ServerInfo {
                    node_id: self.cluster.node_id,
                    leader: metrics.current_leader,
                    term: metrics.current_term,
                    applied_zxid: zxid.0,
                    log_entries_written: self.cluster.counters.entries_written(),
                    log_fsyncs: self.cluster.counters.fsyncs(),
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
        zxid: Zxid,
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
            node_id: self.cluster.node_id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            applied_zxid: zxid.0,
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
                let _counted = crate::metrics::ConnectionGauge::open("quic");
                stream::serve_connection(incoming, frontend).await;
                drop(permit);
            }
            .instrument(tracing::info_span!("connection", %remote)),
        );
    }
    endpoint.close(CLOSE_SHUTDOWN.into(), b"node shutting down");
}
