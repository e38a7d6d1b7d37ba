//! `election`: candidates line up and the first leads; every new leader gets a larger term, a
//! fencing token.
//!
//! State, in the recipe's namespace: `/<election>` holds an [`ElectionRecord`], rewritten each
//! time the leader changes (to follow the leadership, watch it); its children, named `c-` plus
//! the store's sequence number, are the candidates in arrival order, each an ephemeral znode of
//! its session holding a [`Candidate`]. The first candidate leads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::nullable;

/// The recipe's name.
pub const RECIPE: &str = "election";

/// `campaign`: makes the session a candidate with `data` (a session that already is one keeps
/// its place and its first `data`). A first candidate that is not the recorded leader is
/// elected, with a new term, and told so ([`Elected`]) even when it is the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub election: String,
    /// Any JSON (an address, say), kept in the candidate's record and the leader's; `null` when
    /// absent.
    #[serde(default)]
    pub data: Value,
}

/// The answer to [`Campaign`]: leading with `term`, or waiting at `position` (an [`Elected`]
/// follows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignReply {
    pub leader: bool,
    /// The leader's term, its fencing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// Candidates ahead of the caller, the leader included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

impl CampaignReply {
    pub fn elected(term: u64) -> Self {
        CampaignReply { leader: true, term: Some(term), position: None }
    }

    pub fn queued(position: u64) -> Self {
        CampaignReply { leader: false, term: None, position: Some(position) }
    }
}

op!(Campaign, "campaign", CampaignReply);

/// `leader`: the election's record, who leads in which term with which data (no leader and
/// term 0 for an election that does not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    pub election: String,
}

op!(Leader, "leader", ElectionRecord);

/// `resign`: the session stops being a candidate, leading or not; if it led, the next candidate
/// is elected. An error if the session is not a candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resign {
    pub election: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResignReply {
    pub resigned: bool,
}

op!(Resign, "resign", ResignReply);

/// Sent to each new leader, after a [`Campaign`], a [`Resign`] or a session's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elected {
    pub election: String,
    pub term: u64,
}

note!(Elected);

/// An election's own znode, and the answer to [`Leader`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionRecord {
    /// The term of the last leader elected (0 if never): a fencing token.
    pub term: u64,
    /// The leading session; `null` when there is no candidate.
    #[serde(deserialize_with = "nullable")]
    pub leader: Option<u64>,
    /// The leader's campaign data; `null` when there is no leader.
    pub data: Value,
}

impl ElectionRecord {
    /// No leader, after one of term `term` (0: never).
    pub fn vacant(term: u64) -> Self {
        ElectionRecord { term, leader: None, data: Value::Null }
    }
}

/// A candidate's znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub session: u64,
    /// Its campaign data.
    pub data: Value,
}
