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
//! A leader whose check succeeded holds a read lease (`raft::Timing::read_lease`) after the check
//! began (see there why no other node can lead meanwhile): while it holds, and openraft says
//! this node still leads with the same committed vote as a voter of the same membership, the
//! read index is openraft's commit index, with no heartbeat round at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_wire::{ApiError, ErrorCode};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::forward::Forwarder;
use super::shutting_down;
use crate::raft::{LogId, NodeId, Raft};

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
    /// A leader's read lease lasts `lease` after its check began.
    pub fn start(
        raft: Raft,
        node: NodeId,
        lease: Duration,
        forwarder: Arc<Forwarder>,
    ) -> ReadIndex {
        let (waiting, requests) = mpsc::channel(READS_WAITING_MAX);
        let leader = Leader { raft, node, lease_length: lease, lease: None };
        tokio::spawn(run(leader, forwarder, requests));
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

async fn run(mut leader: Leader, forwarder: Arc<Forwarder>, mut requests: mpsc::Receiver<Waiter>) {
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
            let index = forwarder.read_index(&leader.raft).await;
            for (waiter, _) in anywhere {
                let _ = waiter.send(index.clone());
            }
        }
    }
}

/// This node's leadership as openraft's core sees it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leadership {
    /// The committed vote this node leads with (its term).
    vote: openraft::Vote<NodeId>,
    /// The log id of the membership in effect.
    membership: Option<LogId>,
    /// Whether this node is a voter of that membership.
    voter: bool,
    /// The commit index.
    committed: u64,
}

impl Leadership {
    /// This node's leadership in `state`, `None` if it does not lead.
    fn of(
        state: &openraft::RaftState<NodeId, crate::raft::Member, tokio::time::Instant>,
        node: NodeId,
    ) -> Option<Leadership> {
        let vote = state.vote_ref();
        if !vote.is_committed() || vote.leader_id().voted_for() != Some(node) {
            return None;
        }
        let membership = state.membership_state.effective();
        Some(Leadership {
            vote: *vote,
            membership: *membership.log_id(),
            voter: membership.voter_ids().any(|id| id == node),
            committed: state.committed.map_or(0, |id| id.index),
        })
    }
}

/// A leader's read lease: reads need no leadership check while the leadership it was earned
/// with stands, until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lease {
    vote: openraft::Vote<NodeId>,
    membership: Option<LogId>,
    until: Instant,
}

impl Lease {
    /// The lease of `length` a leadership check that began at `checked_from` earns
    /// `leadership`; none for a leader that is not a voter (a lone voter left would lead
    /// without asking it).
    fn earned(leadership: &Leadership, checked_from: Instant, length: Duration) -> Option<Lease> {
        leadership.voter.then(|| Lease {
            vote: leadership.vote,
            membership: leadership.membership,
            until: checked_from + length,
        })
    }

    /// Whether it holds for `leadership`, seen just before `now`: the same vote (a vote given
    /// to another, or a new term, ends it) in the same membership, before it runs out.
    fn holds(&self, leadership: &Leadership, now: Instant) -> bool {
        self.vote == leadership.vote
            && self.membership == leadership.membership
            && leadership.voter
            && now < self.until
    }
}

/// The leader's side of the read index: its leadership check and its lease.
struct Leader {
    raft: Raft,
    node: NodeId,
    lease_length: Duration,
    lease: Option<Lease>,
}

impl Leader {
    /// The leader's read index, after confirming it still leads (by its lease or a check);
    /// `None` if this node does not lead (or, restarted after leading, only believes it does).
    async fn read_index(&mut self) -> Option<Result<u64, ApiError>> {
        let node = self.node;
        let leadership =
            match self.raft.with_raft_state(move |state| Leadership::of(state, node)).await {
                Ok(Some(leadership)) => leadership,
                Ok(None) => return None,
                Err(fatal) => {
                    let error =
                        ApiError::new(ErrorCode::Unavailable).with_detail(fatal.to_string());
                    return Some(Err(error));
                }
            };
        // Read after openraft's answer: the leadership it saw is within the lease.
        let now = Instant::now();
        if self.lease.as_ref().is_some_and(|lease| lease.holds(&leadership, now)) {
            // Every write acknowledged so far is committed, and this is the only leader.
            return Some(Ok(leadership.committed));
        }
        self.lease = None;
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => {
                self.lease = Lease::earned(&leadership, now, self.lease_length);
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
    use openraft::{CommittedLeaderId, Vote};

    use super::*;

    fn leading(term: u64, membership_index: u64, voter: bool) -> Leadership {
        let mut vote = Vote::new(term, 1);
        vote.commit();
        let membership = Some(LogId::new(CommittedLeaderId::new(term, 1), membership_index));
        Leadership { vote, membership, voter, committed: 10 }
    }

    #[test]
    fn a_lease_holds_while_its_leadership_stands_until_it_runs_out() {
        let checked = Instant::now();
        let leadership = leading(3, 1, true);
        let length = crate::raft::DEFAULT_TIMING.read_lease();
        let lease = Lease::earned(&leadership, checked, length).expect("a voter earns a lease");
        assert!(lease.holds(&leadership, checked));
        assert!(lease.holds(&leadership, checked + length - Duration::from_millis(1)));
        assert!(!lease.holds(&leadership, checked + length), "runs out");
        assert!(!lease.holds(&leading(4, 1, true), checked), "another term");
        assert!(!lease.holds(&leading(3, 2, true), checked), "another membership");
        assert!(!lease.holds(&leading(3, 1, false), checked), "no longer a voter");
        let mut voted_elsewhere = leadership.clone();
        voted_elsewhere.vote = Vote::new(3, 2);
        assert!(!lease.holds(&voted_elsewhere, checked), "its vote went to another");
    }

    #[test]
    fn a_leader_that_is_not_a_voter_earns_no_lease() {
        let length = crate::raft::DEFAULT_TIMING.read_lease();
        assert_eq!(Lease::earned(&leading(3, 1, false), Instant::now(), length), None);
    }
}
