//! Group commit: the one task that turns every connection's writes into Raft entries.
//!
//! Request path: a stream's reader hands each write to [`Proposer::submit`] in arrival order.
//! The proposer task takes every write waiting, up to a batch's limits, and proposes them as one
//! log entry; while that entry is being fsynced and applied, the next writes gather for the
//! next entry. So concurrent writers share one fsync and one Raft round instead of paying one
//! each, and a lone writer still goes out at once. Each write's reply comes back through its own
//! channel when the entry is applied.

use cairn_wire::{ApiError, ErrorCode};
use openraft::error::ClientWriteError;
use tokio::sync::{Semaphore, mpsc, oneshot};

use std::sync::Arc;

use super::forward::Forwarder;
use super::{Served, shutting_down};
use crate::raft::{Member, NodeId, Raft, SharedState};
use crate::store::{Command, Write, Zxid};

/// Writes waiting for the proposer; submitters wait for room beyond this.
pub const PROPOSER_QUEUE_WRITES_MAX: usize = 16_384;
/// Most writes in one log entry.
pub const BATCH_ACTIONS_MAX: usize = 2_048;
/// Most bytes (approximately) of writes in one log entry: a lone write larger than this still
/// goes, alone.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Entries proposed and not yet applied. Two keep the log busy: one being fsynced while the
/// next gathers writes.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 2;

struct Pending {
    write: Write,
    reply: oneshot::Sender<Served>,
}

/// The handle connections submit writes through.
#[derive(Debug, Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("write", &self.write).finish_non_exhaustive()
    }
}

impl Proposer {
    /// Starts the proposer task; it ends when every handle is dropped. While `node` is not the
    /// leader, each batch goes to the leader through `forwarder`.
    pub fn start(
        raft: Raft,
        state: SharedState,
        node: NodeId,
        forwarder: Arc<Forwarder>,
    ) -> Proposer {
        let (queue, pending) = mpsc::channel(PROPOSER_QUEUE_WRITES_MAX);
        tokio::spawn(run(raft, state, node, forwarder, pending));
        Proposer { queue }
    }

    /// Queues a write; returns once it has its place in the order of writes, with a receiver of
    /// its outcome.
    pub async fn submit(&self, write: Write) -> Result<oneshot::Receiver<Served>, ApiError> {
        let (reply, outcome) = oneshot::channel();
        self.queue.send(Pending { write, reply }).await.map_err(|_| shutting_down())?;
        Ok(outcome)
    }
}

async fn run(
    raft: Raft,
    state: SharedState,
    node: NodeId,
    forwarder: Arc<Forwarder>,
    mut pending: mpsc::Receiver<Pending>,
) {
    let in_flight = Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT_MAX));
    let forwarding = Arc::new(tokio::sync::Mutex::new(()));
    let mut carried: Option<Pending> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(write) => write,
            None => match pending.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        let (batch, rest) = super::batch::gather(
            first,
            || pending.try_recv().ok(),
            BATCH_ACTIONS_MAX,
            BATCH_BYTES_MAX,
            |pending| pending.write.action.approximate_bytes(),
        );
        carried = rest;
        let (writes, replies): (Vec<Write>, Vec<oneshot::Sender<Served>>) =
            batch.into_iter().map(|pending| (pending.write, pending.reply)).unzip();
        let command = Command { time_ms: super::now_ms(), writes };
        if !super::leads(&raft, node) {
            // A follower's batch: the leader logs it as one entry; the replies go out once this
            // node has applied it too, so its clients read their own writes here.
            let (raft, forwarder) = (raft.clone(), forwarder.clone());
            let state = state.clone();
            // One batch at a time reaches the leader, so writes are logged in the order they
            // came; the next batch gathers meanwhile.
            let turn = forwarding.clone().lock_owned().await;
            tokio::spawn(async move {
                forward(&raft, &forwarder, &state, command, replies, Some(turn)).await;
                drop(permit);
            });
            continue;
        }
        // Kept to send to the leader if this node turns out not to lead after all (a node
        // restarted after leading believes it leads until it hears of the new term).
        let retry = command.clone();
        let receiver = match raft.client_write_ff(command).await {
            Ok(receiver) => receiver,
            Err(fatal) => {
                let error = ApiError::new(ErrorCode::Unavailable)
                    .with_detail(format!("raft stopped: {fatal}"));
                answer_all(replies, state.read().applied_zxid(), &error);
                return;
            }
        };
        let state = state.clone();
        let (raft, forwarder) = (raft.clone(), forwarder.clone());
        tokio::spawn(async move {
            match receiver.await {
                Ok(Ok(response)) => {
                    let zxid = Zxid(response.log_id.index);
                    for (reply, outcome) in replies.into_iter().zip(response.data) {
                        let _ = reply.send((zxid, outcome));
                    }
                }
                Ok(Err(ClientWriteError::ForwardToLeader(_))) => {
                    // Not appended here: the leader logs it instead.
                    forward(&raft, &forwarder, &state, retry, replies, None).await;
                }
                Ok(Err(error)) => {
                    answer_all(replies, state.read().applied_zxid(), &write_error(error))
                }
                Err(_) => answer_all(replies, state.read().applied_zxid(), &shutting_down()),
            }
            drop(permit);
        });
    }
}

/// Has the leader log a follower's batch, then answers each write once this node has applied
/// the entry too, so its clients read their own writes here. `turn` is released as soon as the
/// leader has answered: the next batch may go.
async fn forward(
    raft: &Raft,
    forwarder: &Forwarder,
    state: &SharedState,
    command: Command,
    replies: Vec<oneshot::Sender<Served>>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
) {
    let proposed = forwarder.propose(raft, command).await;
    drop(turn);
    let outcome = match proposed {
        Ok((index, outcomes)) => super::wait_applied(raft, index).await.map(|()| (index, outcomes)),
        Err(error) => Err(error),
    };
    match outcome {
        Ok((index, outcomes)) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send((Zxid(index), outcome));
            }
        }
        Err(error) => answer_all(replies, state.read().applied_zxid(), &error),
    }
}

fn answer_all(replies: Vec<oneshot::Sender<Served>>, zxid: Zxid, error: &ApiError) {
    for reply in replies {
        let _ = reply.send((zxid, Err(error.clone())));
    }
}

fn write_error(error: ClientWriteError<NodeId, Member>) -> ApiError {
    match error {
        ClientWriteError::ForwardToLeader(forward) => ApiError::new(ErrorCode::NotLeader)
            .with_detail(format!("leader is {:?}", forward.leader_id)),
        other => ApiError::new(ErrorCode::Unavailable).with_detail(other.to_string()),
    }
}
