//! A follower's line to the leader: what its clients ask that only the leader can do (log a
//! batch of writes, give a read index, record a member, change the membership) and the
//! sessions it has heard from.
//!
//! Request path: the proposer, the read index, the liveness loop and the membership requests
//! of `cluster` call [`Forwarder`] on a follower; it sends a `raft::peer::PeerRequest` to the
//! leader over the peer transport and waits for the answer, which `cluster::service` gives.

use std::time::Duration;

use cairn_wire::{ApiError, ErrorCode};

use crate::raft::peer::{
    MembershipChange, PeerRequest, PeerResponse, Proposed, Routes, address, connect, exchange,
};
use crate::raft::{Member, NodeId, Raft};
use crate::store::{Command, SessionId};

/// How long a forwarded request may take, connection included.
pub const FORWARD_TIMEOUT_MS: u64 = 10_000;

/// How long a request waits for another node to be known as leader before it fails.
pub const FORWARD_LEADER_WAIT_MS: u64 = 3_000;

/// A follower's line to the leader, for its clients' writes, reads and liveness.
#[derive(Debug)]
pub struct Forwarder {
    /// This node: never the one to forward to.
    node: NodeId,
    endpoint: Option<quinn::Endpoint>,
    routes: Routes,
    /// The connection to the leader last used, and who that was.
    leader: tokio::sync::Mutex<Option<(NodeId, quinn::Connection)>>,
}

pub(crate) fn unavailable(detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Unavailable).with_detail(detail.to_string())
}

impl Forwarder {
    pub fn new(node: NodeId, endpoint: Option<quinn::Endpoint>, routes: Routes) -> Forwarder {
        Forwarder { node, endpoint, routes, leader: tokio::sync::Mutex::new(None) }
    }

    /// Sends `request` to the current leader.
    async fn call(&self, raft: &Raft, request: &PeerRequest) -> Result<PeerResponse, ApiError> {
        // Another node leading, as this node knows it; mid-election, or just restarted after
        // leading, this node waits a little to learn who.
        let mut metrics = raft.metrics();
        let other = |m: &openraft::RaftMetrics<NodeId, Member>| {
            m.current_leader.is_some_and(|leader| leader != self.node)
        };
        let learned = tokio::time::timeout(
            Duration::from_millis(FORWARD_LEADER_WAIT_MS),
            metrics.wait_for(|m| other(m)),
        )
        .await
        .is_ok_and(|found| found.is_ok());
        if !learned {
            return Err(unavailable("no other node is known to lead now"));
        }
        let (leader, addr) = {
            let metrics = metrics.borrow();
            let leader = metrics.current_leader.ok_or_else(|| unavailable("no leader now"))?;
            let member = metrics.membership_config.membership().get_node(&leader).cloned();
            (leader, address(&self.routes, leader, member.as_ref()))
        };
        // A membership change waits for a new member to catch up and for voters to answer.
        let timeout_ms = match request {
            PeerRequest::Membership(_) => FORWARD_TIMEOUT_MS + super::membership::CHANGE_MS_MAX,
            _ => FORWARD_TIMEOUT_MS,
        };
        let bytes = rmp_serde::to_vec_named(request).map_err(unavailable)?;
        let connection = {
            let mut cached = self.leader.lock().await;
            match cached.as_ref() {
                Some((id, connection)) if *id == leader && connection.close_reason().is_none() => {
                    connection.clone()
                }
                _ => {
                    let connection =
                        connect(self.endpoint.as_ref(), &addr).await.map_err(|why| {
                            unavailable(format!("leader {leader} unreachable: {why}"))
                        })?;
                    *cached = Some((leader, connection.clone()));
                    connection
                }
            }
        };
        // A leader that dies mid-request is noticed by the election, long before a timeout.
        let deposed = metrics.wait_for(|m| m.current_leader != Some(leader));
        let answer = tokio::select! {
            answer = exchange(&connection, bytes, Duration::from_millis(timeout_ms)) => {
                answer.map_err(|why| unavailable(format!("leader {leader}: {why}")))
            }
            _ = deposed => Err(unavailable(format!(
                "leader {leader} lost its leadership before answering; the request may or may \
                 not have taken effect"
            ))),
        };
        if answer.is_err() {
            // Made again on the next call: the leader may be a new process by then.
            let mut cached = self.leader.lock().await;
            if cached.as_ref().is_some_and(|(_, c)| c.stable_id() == connection.stable_id()) {
                *cached = None;
            }
        }
        answer
    }

    /// Has the leader log `command`; returns the entry's index and each write's reply.
    pub async fn propose(&self, raft: &Raft, command: Command) -> Proposed {
        match self.call(raft, &PeerRequest::Propose(command)).await? {
            PeerResponse::Proposed(proposed) => proposed,
            _ => Err(unavailable("the leader answered another request")),
        }
    }

    /// The leader's read index: a read served after this node applied it is linearizable.
    pub async fn read_index(&self, raft: &Raft) -> Result<u64, ApiError> {
        match self.call(raft, &PeerRequest::ReadIndex).await? {
            PeerResponse::ReadIndex(index) => index,
            _ => Err(unavailable("the leader answered another request")),
        }
    }

    /// Has the leader record where node `node` serves.
    pub async fn announce(
        &self,
        raft: &Raft,
        node: NodeId,
        member: Member,
    ) -> Result<(), ApiError> {
        match self.call(raft, &PeerRequest::Announce(node, member)).await? {
            PeerResponse::Announced(done) => done,
            _ => Err(unavailable("the leader answered another request")),
        }
    }

    /// Has the leader change the membership.
    pub async fn change_membership(
        &self,
        raft: &Raft,
        change: MembershipChange,
    ) -> Result<(), ApiError> {
        match self.call(raft, &PeerRequest::Membership(change)).await? {
            PeerResponse::Membership(done) => done,
            _ => Err(unavailable("the leader answered another request")),
        }
    }

    /// Tells the leader these sessions' clients were heard from.
    pub async fn heard(&self, raft: &Raft, sessions: Vec<SessionId>) -> Result<(), ApiError> {
        self.call(raft, &PeerRequest::Heard(sessions)).await.map(|_| ())
    }
}
