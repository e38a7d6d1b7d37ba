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
//!
//! A leader whose check succeeded holds a read lease for `raft::READ_LEASE_MS` after the check
//! began (see there why no other node can lead meanwhile): while it holds, the read index is
//! the commit index the leader has recorded, with no heartbeat round at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_wire::{ApiError, ErrorCode};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::forward::Forwarder;
use super::shutting_down;
use crate::raft::{NodeId, Raft, StorageCounters};

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
    pub fn start(
        raft: Raft,
        node: NodeId,
        counters: Arc<StorageCounters>,
        forwarder: Arc<Forwarder>,
    ) -> ReadIndex {
        let (waiting, requests) = mpsc::channel(READS_WAITING_MAX);
        let leader = Leader { raft: raft.clone(), node, counters, lease: None };
        tokio::spawn(run(raft, leader, forwarder, requests));
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
    mut leader: Leader,
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
        if let Some(index) = leader.read_index().await {
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

/// A leader's read lease: reads need no leadership check in `term` before `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    term: u64,
    until: Instant,
}

impl Lease {
    /// The lease a leadership check in `term` that began at `checked_from` earns.
    fn earned(term: u64, checked_from: Instant) -> Lease {
        Lease { term, until: checked_from + Duration::from_millis(crate::raft::READ_LEASE_MS) }
    }

    /// Whether it still holds at `now` for a leader in `term`: never in another term, since a
    /// node that lost leadership and won it back has not checked in its new term.
    fn holds(&self, term: u64, now: Instant) -> bool {
        self.term == term && now < self.until
    }
}

/// The leader's side of the read index: its leadership check and its lease.
struct Leader {
    raft: Raft,
    node: NodeId,
    counters: Arc<StorageCounters>,
    lease: Option<Lease>,
}

impl Leader {
    /// The leader's read index, after confirming it still leads (by its lease or a check);
    /// `None` if this node does not lead (or, restarted after leading, only believes it does).
    async fn read_index(&mut self) -> Option<Result<u64, ApiError>> {
        let term = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            if metrics.current_leader != Some(self.node) {
                return None;
            }
            metrics.current_term
        };
        let now = Instant::now();
        if self.lease.is_some_and(|lease| lease.holds(term, now)) {
            // Every write acknowledged so far is applied here, the only leader; the commit
            // index covers the ones committed but not yet applied, which other nodes may show.
            return Some(Ok(self.counters.commit_index()));
        }
        self.lease = None;
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => {
                // A check that straddled a change of term earns nothing.
                if self.raft.metrics().borrow().current_term == term {
                    self.lease = Some(Lease::earned(term, now));
                }
                Some(Ok(log_id.map_or(0, |id| id.index)))
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => None,
            Err(error) => {
                Some(Err(ApiError::new(ErrorCode::Unavailable).with_detail(error.to_string())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_in_its_term_until_it_runs_out() {
        let checked = Instant::now();
        let lease = Lease::earned(3, checked);
        let length = Duration::from_millis(crate::raft::READ_LEASE_MS);
        assert!(lease.holds(3, checked));
        assert!(lease.holds(3, checked + length - Duration::from_millis(1)));
        assert!(!lease.holds(3, checked + length), "runs out");
        assert!(!lease.holds(4, checked), "another term");
    }
}
