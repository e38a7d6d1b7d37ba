//! Read index, shared: one leadership check for every linearizable read waiting.
//!
//! Request path: a linearizable read (`Frontend::linearize`) asks [`ReadIndex::get`] for an
//! index it may read at, then waits until this node has applied that far. One task asks Raft:
//! the leader confirms its leadership with a heartbeat round (openraft's
//! `ensure_linearizable`), a follower asks the leader (`raft::peer::Forwarder::read_index`).
//! Every read that arrived before a check began shares its answer; reads that arrive during a
//! check wait for the next one, whose index is then fresh enough for them. So a burst of reads
//! costs one round, not one each, and a lone read still goes at once.

use std::sync::Arc;

use cairn_wire::{ApiError, ErrorCode};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use crate::raft::peer::Forwarder;
use crate::raft::{NodeId, Raft};

/// Reads waiting for a read index; readers wait for room beyond this.
pub const READS_WAITING_MAX: usize = 16_384;

type Waiter = oneshot::Sender<Result<u64, ApiError>>;

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
        let (waiter, index) = oneshot::channel();
        self.waiting.send(waiter).await.map_err(|_| shutting_down())?;
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
        let mut waiters = vec![first];
        while let Ok(waiter) = requests.try_recv() {
            waiters.push(waiter);
        }
        let index = read_index(&raft, node, &forwarder).await;
        for waiter in waiters {
            let _ = waiter.send(index.clone());
        }
    }
}

/// One read index: the leader's own, after confirming it still leads; else the leader's.
async fn read_index(raft: &Raft, node: NodeId, forwarder: &Forwarder) -> Result<u64, ApiError> {
    if raft.metrics().borrow().current_leader == Some(node) {
        match raft.ensure_linearizable().await {
            Ok(log_id) => return Ok(log_id.map_or(0, |id| id.index)),
            // Not the leader after all (restarted after leading, say): ask the leader.
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {}
            Err(error) => {
                return Err(ApiError::new(ErrorCode::Unavailable).with_detail(error.to_string()));
            }
        }
    }
    forwarder.read_index(raft).await
}

fn shutting_down() -> ApiError {
    ApiError::new(ErrorCode::Unavailable).with_detail("the node is shutting down")
}
