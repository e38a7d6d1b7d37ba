//! Read index, shared: one leadership check for every linearizable read waiting.
//!
//! Request path: a linearizable read (`Cluster::linearize`) asks [`ReadIndex::get`] for an
//! index it may read at, then waits until this node has applied that far. One task asks Raft:
//! the leader confirms its leadership with a heartbeat round (openraft's
//! `ensure_linearizable`), a follower asks the leader (`cluster::forward::Forwarder::read_index`).
//! Every read that arrived before a check began shares its answer; reads that arrive during a
//! check wait for the next one, whose index is then fresh enough for them. So a burst of reads
//! costs one round, not one each, and a lone read still goes at once. On the leader, the
//! followers' requests for its read index (`cluster::service`) join the same check.

use std::sync::Arc;

use cairn_wire::{ApiError, ErrorCode};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::forward::Forwarder;
use super::shutting_down;
use crate::raft::{NodeId, Raft};

/// Reads waiting for a read index; readers wait for room beyond this.
pub const READS_WAITING_MAX: usize = 16_384;

/// Who may answer a read: any node (asking the leader if need be), or this node only if it
/// leads (a follower's request for the leader's read index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Anywhere,
    LeaderOnly,
}

type Waiter = (oneshot::Sender<Result<u64, ApiError>>, Scope);

/// The handle reads ask for a read index through.
#[derive(Debug, Clone)]
pub struct ReadIndex {
    waiting: mpsc::Sender<Waiter>,
}

impl ReadIndex {
    /// Starts the task that asks for read indexes; it ends when every handle is dropped.
    pub fn start(raft: Raft, node: NodeId, forwarder: Arc<Forwarder>) -> ReadIndex {
        let (waiting, requests) = mpsc::channel(READS_WAITING_MAX);
        tokio::spawn(run(raft, node, forwarder, requests));
        ReadIndex { waiting }
    }

    /// An index that every write committed before this call is at or below.
    pub async fn get(&self) -> Result<u64, ApiError> {
        self.ask(Scope::Anywhere).await
    }

    /// The same, answered only by the leader: what a follower's request gets, sharing the
    /// leader's check with its own reads.
    pub async fn get_as_leader(&self) -> Result<u64, ApiError> {
        self.ask(Scope::LeaderOnly).await
    }

    async fn ask(&self, scope: Scope) -> Result<u64, ApiError> {
        let (waiter, index) = oneshot::channel();
        self.waiting.send((waiter, scope)).await.map_err(|_| shutting_down())?;
        index.await.unwrap_or_else(|_| Err(shutting_down()))
    }
}

async fn run(
    raft: Raft,
    node: NodeId,
    forwarder: Arc<Forwarder>,
    mut requests: mpsc::Receiver<Waiter>,
) {
    while let Some(first) = requests.recv().await {
        // Every read waiting shares this check; none waits for more than the one after it.
        let (waiters, _) = super::batch::gather(
            first,
            || requests.try_recv().ok(),
            READS_WAITING_MAX,
            usize::MAX,
            |_| 0,
        );
        if let Some(index) = leader_read_index(&raft, node).await {
            for (waiter, _) in waiters {
                let _ = waiter.send(index.clone());
            }
            continue;
        }
        // Not the leader: ask it for the reads that may, refuse the others.
        let (anywhere, leader_only): (Vec<Waiter>, Vec<Waiter>) =
            waiters.into_iter().partition(|(_, scope)| *scope == Scope::Anywhere);
        for (waiter, _) in leader_only {
            let _ = waiter.send(Err(ApiError::new(ErrorCode::Unavailable)
                .with_detail("no read index here: not the leader")));
        }
        if !anywhere.is_empty() {
            let index = forwarder.read_index(&raft).await;
            for (waiter, _) in anywhere {
                let _ = waiter.send(index.clone());
            }
        }
    }
}

/// The leader's read index, after confirming it still leads; `None` if this node does not
/// lead (or, restarted after leading, only believes it does).
async fn leader_read_index(raft: &Raft, node: NodeId) -> Option<Result<u64, ApiError>> {
    if !super::leads(raft, node) {
        return None;
    }
    match raft.ensure_linearizable().await {
        Ok(log_id) => Some(Ok(log_id.map_or(0, |id| id.index))),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => None,
        Err(error) => {
            Some(Err(ApiError::new(ErrorCode::Unavailable).with_detail(error.to_string())))
        }
    }
}
