//! Commands: what one Raft log entry asks of the tree.

use cairn_wire::{CreateRequest, DeleteRequest, MultiOp, SetRequest};
use serde::{Deserialize, Serialize};

/// The payload of a log entry: an action and the leader's wall-clock time when it proposed it,
/// the only time `apply` ever sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub time_ms: u64,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create(CreateRequest),
    Set(SetRequest),
    Delete(DeleteRequest),
    Multi(Vec<MultiOp>),
    /// Delete every TTL znode whose time has come, as of the entry's time.
    ReapTtl,
}
