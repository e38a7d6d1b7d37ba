//! `barrier`: a double barrier. `count` members enter before any of them starts, and none leaves
//! before all of them are done; the barrier then opens for a new round.
//!
//! State, in the recipe's namespace: `/<barrier>` holds a [`BarrierRecord`]; its children, named
//! `m-` plus the store's sequence number, are the members of the current round, each an
//! ephemeral znode of its session holding a [`Member`].

use serde::{Deserialize, Serialize};

use crate::nullable;

/// The recipe's name.
pub const RECIPE: &str = "barrier";

/// `enter`: makes the session a member of the current round (once; entering again changes
/// nothing). The member that makes `count` opens the round, and the others are told
/// ([`Entered`]); one entering an open round joins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enter {
    pub barrier: String,
    /// The members a round waits for: needed (above 0) by the first enter, which fixes it; an
    /// error if it differs later.
    #[serde(default)]
    pub count: Option<u32>,
}

/// The answer to [`Enter`]: whether the round has started (if not, an [`Entered`] follows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterReply {
    pub entered: bool,
    pub round: u64,
}

op!(Enter, "enter", EnterReply);

/// `leave`: before the round starts, withdraws; during it, marks the member leaving, and the
/// last member to leave ends the round: every member goes, the others told ([`Left`]), and the
/// next round waits for `count` new entries. An error if the session is not a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    pub barrier: String,
}

/// The answer to [`Leave`]: whether the caller is out (if not, a [`Left`] follows when all are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveReply {
    pub left: bool,
    pub round: u64,
}

op!(Leave, "leave", LeaveReply);

/// `status`: the barrier's record and its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub barrier: String,
}

/// The answer to [`Status`]: `count` `null`, round 0 and no members for a barrier that does
/// not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    #[serde(deserialize_with = "nullable")]
    pub count: Option<u32>,
    pub round: u64,
    pub open: bool,
    /// Members of the round.
    pub members: u64,
    /// Members of the round that called leave.
    pub leaving: u64,
}

op!(Status, "status", StatusReply);

/// Sent to every member but the caller when round `round` opens; `entered` is always true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entered {
    pub barrier: String,
    pub entered: bool,
    pub round: u64,
}

note!(Entered);

/// Sent to every member but the caller when round `round` ends; `left` is always true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    pub barrier: String,
    pub left: bool,
    pub round: u64,
}

note!(Left);

/// A barrier's own znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierRecord {
    /// The members a round waits for.
    pub count: u32,
    /// The current round, from 1.
    pub round: u64,
    /// From the moment `count` members have entered until every member has left.
    pub open: bool,
}

/// A member's znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub session: u64,
    /// Whether it called leave in an open round.
    pub leaving: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_of_round_is_no_opening() {
        let left = br#"{"barrier":"b","left":true,"round":1}"#;
        assert!(crate::decode::<Entered>(left).is_err(), "no entered");
        assert_eq!(
            crate::decode::<Left>(left).expect("a left"),
            Left { barrier: "b".into(), left: true, round: 1 }
        );
    }
}
