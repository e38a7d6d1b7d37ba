//! The cluster layer: the way to the log wherever the leader is, and the leader's duties.
//!
//! Request path: a front end (`api`) hands a write to `Cluster::propose` (the proposer batches
//! the writes waiting into one log entry, on the leader or forwarded to it by
//! [`forward::Forwarder`]) and a linearizable read to `Cluster::linearize` (the read index,
//! shared by the reads waiting). Membership changes and the recipe runtime's adoption go
//! through here too. The peer service ([`service`]) answers the other nodes; the leader's
//! duties ([`duties`], [`liveness`]) run as loops that only carry out what pure rules decide.
//! Below this layer is `raft` (openraft, the log, the state machine, the peer transport); above
//! it, the front ends, which depend on it and on the state and the watch hub only.

mod batch;
pub mod duties;
pub mod forward;
pub mod liveness;
pub mod membership;
mod proposer;
mod read_index;
pub mod service;

pub use proposer::Proposer;
pub use read_index::ReadIndex;
// What a front end needs of the layers below, named here so it depends on this layer alone.
pub use crate::raft::peer::MembershipChange;
pub use crate::raft::{ApplyReply, Member, NodeId};

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_wire::{ApiError, ErrorCode, MemberInfo, Reply};

use crate::raft::{Raft, SharedState, StorageCounters};
use crate::store::recipes::RecipeRunner;
use crate::store::{Action, Write, Zxid};
use forward::Forwarder;
use liveness::SessionTracker;

/// The outcome of one request: the reply (or error) and the zxid it reflects.
pub(crate) type Served = (Zxid, ApplyReply);

/// This node's part in the cluster: its Raft, its state, and the ways to the leader.
pub struct Cluster {
    pub node_id: NodeId,
    pub raft: Raft,
    pub state: SharedState,
    /// Log writes and fsyncs, for `server-info`.
    pub counters: Arc<StorageCounters>,
    proposer: Proposer,
    /// Read indexes for linearizable reads, one check for all reads waiting.
    reads: ReadIndex,
    /// The way to the leader, when this node is not it.
    forwarder: Arc<Forwarder>,
    /// When this node last heard from each session (the leader expires the silent ones).
    pub sessions: Arc<SessionTracker>,
    /// Compiles deploys at admission, before they are proposed.
    recipes: Arc<dyn RecipeRunner + Send + Sync>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts the proposer and the read index over `raft`, forwarding through `forwarder`; a
    /// leader's read lease lasts `read_lease`.
    pub fn start(
        node_id: NodeId,
        raft: Raft,
        state: SharedState,
        counters: Arc<StorageCounters>,
        forwarder: Arc<Forwarder>,
        recipes: Arc<dyn RecipeRunner + Send + Sync>,
        read_lease: std::time::Duration,
    ) -> Cluster {
        let proposer = Proposer::start(raft.clone(), state.clone(), node_id, forwarder.clone());
        let reads = ReadIndex::start(raft.clone(), node_id, read_lease, forwarder.clone());
        Cluster {
            node_id,
            raft,
            state,
            counters,
            proposer,
            reads,
            forwarder,
            sessions: Arc::default(),
            recipes,
        }
    }

    /// What this node serves its peers with.
    pub fn peer_service(&self) -> service::PeerService {
        service::PeerService {
            raft: self.raft.clone(),
            sessions: self.sessions.clone(),
            reads: self.reads.clone(),
        }
    }

    /// The zxid of the last entry this node applied.
    pub(crate) fn applied_zxid(&self) -> Zxid {
        self.state.read().applied_zxid()
    }

    /// Submits a write for the next group commit; returns once it has its place in the order
    /// of writes, with a future that resolves when it is applied. A deploy is admitted first.
    pub(crate) async fn propose(
        &self,
        write: Write,
    ) -> Result<impl Future<Output = Served> + use<>, ApiError> {
        self.admit(&write).await?;
        let outcome = self.proposer.submit(write).await?;
        let state = self.state.clone();
        Ok(async move {
            outcome.await.unwrap_or_else(|_| (state.read().applied_zxid(), Err(shutting_down())))
        })
    }

    /// Deploy admission: a deploy is checked against the state as it is (so a caller without
    /// the right cannot make the node compile anything) and its component compiled here, on a
    /// blocking thread, before it is proposed: one that cannot run is refused before it reaches
    /// the log, and apply never compiles.
    async fn admit(&self, write: &Write) -> Result<(), ApiError> {
        let Action::DeployRecipe { name, component, .. } = &write.action else { return Ok(()) };
        let version = self.state.read().tree.check_deploy(write)?.unwrap_or_default();
        let name = format!("{name}@{version}");
        let (recipes, component) = (self.recipes.clone(), component.clone());
        tokio::task::spawn_blocking(move || recipes.admit(&name, &component)).await.map_err(
            |error| {
                ApiError::new(ErrorCode::Internal)
                    .with_detail(format!("compiling the component failed: {error}"))
            },
        )?
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
            service::change_membership(&self.raft, change.clone()).await?;
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

    /// Whether this node leads now.
    pub(crate) fn is_leader(&self) -> bool {
        leads(&self.raft, self.node_id)
    }
}

/// Whether `node` leads now, as its Raft knows: the one "do I lead?" check.
pub(crate) fn leads(raft: &Raft, node: NodeId) -> bool {
    raft.metrics().borrow().current_leader == Some(node)
}

/// The membership in `metrics`, with replication progress when this node leads.
pub(crate) fn members_of(metrics: &openraft::RaftMetrics<NodeId, Member>) -> Vec<MemberInfo> {
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

/// What a request gets when the node stops under it.
pub(crate) fn shutting_down() -> ApiError {
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
