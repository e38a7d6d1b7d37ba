//! Membership changes that cannot cost the cluster its quorum.
//!
//! Request path: `cairn cluster add|remove` → the client front end (`api`) → on the leader,
//! [`change_membership`] (a follower forwards it there through `cluster::forward`). A new member joins as a
//! learner and becomes a voter only once it has acknowledged the leader's log to within
//! [`MEMBER_CATCH_UP_LAG_ENTRIES_MAX`] entries, within [`MEMBER_CATCH_UP_MS`]; otherwise the
//! learner is removed again and the change fails, the membership as it was. Before the voters
//! change, the leader commits an empty entry and sees which voters acknowledge it within
//! [`REACHABLE_WAIT_MS`]: a change that would leave the new set of voters without a reachable
//! majority is refused (etcd's strict reconfiguration check), as is removing the last voter.
//! The decisions are the pure functions here; the rest only gathers what they need.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_wire::{ApiError, ErrorCode};

use crate::raft::peer::MembershipChange;
use crate::raft::{Member, NodeId, Raft};
use crate::store::Command;

/// How long a new member has to catch up with the leader's log before it would become a voter.
pub const MEMBER_CATCH_UP_MS: u64 = 10_000;
/// How far behind the leader's last log entry a new member may be and still count as caught up.
pub const MEMBER_CATCH_UP_LAG_ENTRIES_MAX: u64 = 64;
/// How long the leader waits for voters to acknowledge its probe entry; those that do are the
/// reachable ones.
pub const REACHABLE_WAIT_MS: u64 = 1_500;
/// The longest the waits of one change add up to: what a node forwarding a change to the
/// leader allows on top of its usual timeout.
pub const CHANGE_MS_MAX: u64 = MEMBER_CATCH_UP_MS + 2 * REACHABLE_WAIT_MS;

/// Whether a member that has acknowledged the log up to `matched` (none: nothing yet) is caught
/// up with a leader whose last entry is `leader_last`.
pub fn caught_up(matched: Option<u64>, leader_last: Option<u64>) -> bool {
    match (matched, leader_last) {
        (None, _) => false,
        (Some(matched), Some(last)) => {
            last.saturating_sub(matched) <= MEMBER_CATCH_UP_LAG_ENTRIES_MAX
        }
        (Some(_), None) => true,
    }
}

/// Whether a majority of `voters` is among `reachable`.
pub fn reachable_majority(voters: &BTreeSet<NodeId>, reachable: &BTreeSet<NodeId>) -> bool {
    !voters.is_empty() && 2 * voters.intersection(reachable).count() > voters.len()
}

/// Checks a change of the voters from `before` to `after`, given the voters that answered just
/// now: the cluster must keep a voter, and the new voters a reachable majority (the joint
/// configuration needs majorities of both sets; `before` has one, or the probe would not have
/// committed).
pub fn check_voters_change(
    before: &BTreeSet<NodeId>,
    after: &BTreeSet<NodeId>,
    reachable: &BTreeSet<NodeId>,
) -> Result<(), ApiError> {
    if after.is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidArgument).with_detail(format!(
            "refused: the change would leave no voters (voters now {})",
            list(before)
        )));
    }
    if before == after || reachable_majority(after, reachable) {
        return Ok(());
    }
    let reachable_after: BTreeSet<NodeId> = after.intersection(reachable).copied().collect();
    Err(ApiError::new(ErrorCode::Unavailable).with_detail(format!(
        "refused: the voters would be {}, which needs {} of them reachable to keep a quorum, \
         and only {} answered the leader: the cluster would stop taking writes",
        list(after),
        after.len() / 2 + 1,
        if reachable_after.is_empty() { "none".to_string() } else { list(&reachable_after) }
    )))
}

/// Serializes membership changes on the leader.
static CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn list(nodes: &BTreeSet<NodeId>) -> String {
    let names: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    format!("{{{}}}", names.join(", "))
}

fn unavailable(detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Unavailable).with_detail(detail.to_string())
}

fn failed(error: &dyn std::fmt::Display) -> ApiError {
    unavailable(format!("membership not changed: {error}"))
}

/// On the leader: adds a node as a learner, waits for it to catch up, then makes it a voter;
/// or removes a node altogether. Refuses what would cost the cluster its quorum; a new member
/// that does not catch up in time is removed again.
pub async fn change_membership(raft: &Raft, change: MembershipChange) -> Result<(), ApiError> {
    // One change at a time: each is checked against the voters as they are when it starts, so
    // two changes checked side by side could each keep a quorum and together lose it.
    let _one_at_a_time = CHANGES.lock().await;
    let metrics = raft.metrics().borrow().clone();
    if metrics.current_leader != Some(metrics.id) {
        return Err(ApiError::new(ErrorCode::NotLeader).with_detail("not the leader any more"));
    }
    let membership = metrics.membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    match change {
        MembershipChange::Add(node, member, voter) => {
            if voters.contains(&node) {
                return Ok(());
            }
            let was_member = membership.get_node(&node).is_some();
            raft.add_learner(node, member, false).await.map_err(|e| failed(&e))?;
            if !voter {
                return Ok(());
            }
            let mut after = voters.clone();
            after.insert(node);
            let ready = match wait_caught_up(raft, node).await {
                Ok(()) => match reachable_voters(raft, &after).await {
                    Ok(reachable) => check_voters_change(&voters, &after, &reachable),
                    Err(error) => Err(error),
                },
                Err(error) => Err(error),
            };
            if let Err(error) = ready {
                if !was_member {
                    let learner = openraft::ChangeMembers::RemoveNodes(BTreeSet::from([node]));
                    if let Err(undo) = raft.change_membership(learner, false).await {
                        tracing::warn!(%node, %undo, "cannot remove the learner again");
                    }
                }
                return Err(error);
            }
            let voters = openraft::ChangeMembers::AddVoterIds(BTreeSet::from([node]));
            raft.change_membership(voters, false).await.map_err(|e| failed(&e))?;
        }
        MembershipChange::Remove(node) => {
            if voters.contains(&node) {
                let mut after = voters.clone();
                after.remove(&node);
                if after.is_empty() {
                    // Refused before probing: this holds whoever answers.
                    check_voters_change(&voters, &after, &BTreeSet::new())?;
                }
                let reachable = reachable_voters(raft, &voters).await?;
                check_voters_change(&voters, &after, &reachable)?;
                let voters = openraft::ChangeMembers::RemoveVoters(BTreeSet::from([node]));
                raft.change_membership(voters, false).await.map_err(|e| failed(&e))?;
            }
            let still =
                raft.metrics().borrow().membership_config.membership().get_node(&node).is_some();
            if still {
                let nodes = openraft::ChangeMembers::RemoveNodes(BTreeSet::from([node]));
                raft.change_membership(nodes, false).await.map_err(|e| failed(&e))?;
            }
        }
    }
    Ok(())
}

/// Waits until `node` has acknowledged the leader's log to within the allowed lag, at most
/// [`MEMBER_CATCH_UP_MS`].
async fn wait_caught_up(raft: &Raft, node: NodeId) -> Result<(), ApiError> {
    let matched = |m: &openraft::RaftMetrics<NodeId, Member>| {
        m.replication.as_ref().and_then(|r| r.get(&node).copied().flatten()).map(|id| id.index)
    };
    let waited = raft
        .wait(Some(Duration::from_millis(MEMBER_CATCH_UP_MS)))
        .metrics(
            |m| m.replication.is_none() || caught_up(matched(m), m.last_log_index),
            "the new member catching up",
        )
        .await;
    match waited {
        Ok(m) if m.replication.is_none() => Err(ApiError::new(ErrorCode::NotLeader)
            .with_detail("lost the leadership while the new member caught up")),
        Ok(_) => Ok(()),
        Err(_) => {
            let m = raft.metrics().borrow().clone();
            Err(unavailable(format!(
                "node {node} did not catch up with the leader's log within {MEMBER_CATCH_UP_MS} ms \
                 (it acknowledged {} of {} entries): is it running, and reachable at the address \
                 given? It was not added",
                matched(&m).map_or("none".to_string(), |i| i.to_string()),
                m.last_log_index.unwrap_or(0)
            )))
        }
    }
}

/// The members of `voters` that acknowledge a fresh empty entry within [`REACHABLE_WAIT_MS`]
/// (the leader among them). Fails if the entry does not commit in that time: then the cluster
/// has no quorum to change anything with.
async fn reachable_voters(
    raft: &Raft,
    voters: &BTreeSet<NodeId>,
) -> Result<BTreeSet<NodeId>, ApiError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let probe = Command { time_ms: now_ms, writes: Vec::new() };
    let wait = Duration::from_millis(REACHABLE_WAIT_MS);
    let written = tokio::time::timeout(wait, raft.client_write(probe))
        .await
        .map_err(|_| {
            unavailable(format!(
                "membership not changed: the cluster did not commit an entry within \
                 {REACHABLE_WAIT_MS} ms (no quorum?)"
            ))
        })?
        .map_err(|e| failed(&e))?;
    let probe = written.log_id.index;
    let acknowledged = |m: &openraft::RaftMetrics<NodeId, Member>| -> BTreeSet<NodeId> {
        m.replication
            .iter()
            .flatten()
            .filter(|(_, matched)| matched.is_some_and(|id| id.index >= probe))
            .map(|(node, _)| *node)
            .collect()
    };
    // Everyone answering ends the wait early; otherwise take who answered in time.
    let _ = raft
        .wait(Some(wait))
        .metrics(|m| voters.is_subset(&acknowledged(m)), "voters acknowledging the probe")
        .await;
    let mut reachable = acknowledged(&raft.metrics().borrow());
    reachable.insert(raft.metrics().borrow().id);
    Ok(reachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nodes: &[NodeId]) -> BTreeSet<NodeId> {
        nodes.iter().copied().collect()
    }

    #[test]
    fn a_member_that_acknowledged_nothing_is_not_caught_up() {
        assert!(!caught_up(None, Some(5)));
        assert!(!caught_up(None, None));
        assert!(caught_up(Some(5), Some(5)));
        assert!(caught_up(Some(5), Some(5 + MEMBER_CATCH_UP_LAG_ENTRIES_MAX)));
        assert!(!caught_up(Some(5), Some(6 + MEMBER_CATCH_UP_LAG_ENTRIES_MAX)));
    }

    #[test]
    fn majorities() {
        assert!(reachable_majority(&set(&[1, 2, 3]), &set(&[1, 2])));
        assert!(!reachable_majority(&set(&[1, 2]), &set(&[1])));
        assert!(!reachable_majority(&set(&[]), &set(&[1])));
        assert!(reachable_majority(&set(&[1]), &set(&[1, 9])));
    }

    #[test]
    fn changes_that_would_lose_the_quorum_are_refused() {
        // The last voter stays.
        let error = check_voters_change(&set(&[1]), &set(&[]), &set(&[1])).expect_err("refused");
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        // A voter that never answered would leave a 1-node cluster without a quorum.
        let error =
            check_voters_change(&set(&[1]), &set(&[1, 99]), &set(&[1])).expect_err("refused");
        assert_eq!(error.code, ErrorCode::Unavailable);
        // With node 3 down, removing node 2 leaves {1, 3}: one of two answers.
        let error = check_voters_change(&set(&[1, 2, 3]), &set(&[1, 3]), &set(&[1, 2]))
            .expect_err("refused");
        assert_eq!(error.code, ErrorCode::Unavailable);
        // Removing the dead node instead is fine, and so is shrinking a healthy cluster.
        check_voters_change(&set(&[1, 2, 3]), &set(&[1, 2]), &set(&[1, 2])).expect("allowed");
        check_voters_change(&set(&[1, 2]), &set(&[1]), &set(&[1, 2])).expect("allowed");
        check_voters_change(&set(&[1]), &set(&[1, 2]), &set(&[1, 2])).expect("allowed");
    }
}
