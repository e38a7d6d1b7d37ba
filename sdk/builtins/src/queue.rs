//! `queue`: a work queue. Items are put with a priority and taken one consumer at a time, lower
//! priority values first, then in arrival order; an item is gone only when acked, and one taken
//! but not acked returns to the queue when its consumer's session ends.
//!
//! State, in the recipe's namespace, under `/<queue>`: `items/<id>` holds an item's data (raw
//! UTF-8, not JSON); `tickets/t-` plus the store's sequence number is a consumer's claim, made
//! by one [`Take`], an ephemeral znode of its session holding a [`Ticket`]; `taken/<id>` names
//! the ticket holding item `<id>`, and `assigned/<ticket>` the item a ticket holds. An item id
//! is `p` and the priority plus 2^31 in 10 digits, `-`, and the sequence number, so ids in name
//! order are the order items are handed out.

use serde::{Deserialize, Serialize};

use crate::yes;

/// The recipe's name.
pub const RECIPE: &str = "queue";

/// Bytes of an item id or a ticket name, at most (ASCII letters, digits and `-` only).
pub const NAME_LEN_MAX: usize = 32;

/// `put`: adds an item; if a ticket waits, the item goes to it at once (a [`Handed`] to its
/// session). Needs no session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub queue: String,
    /// The item's data; an error when absent.
    #[serde(default)]
    pub data: Option<String>,
    /// Lower values are taken first.
    #[serde(default)]
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReply {
    /// The item's id.
    pub id: String,
}

op!(Put, "put", PutReply);

/// `take`: a new ticket of the session, holding the next ready item or waiting for one (with
/// `wait`); without `wait`, no ticket when no item is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Take {
    pub queue: String,
    #[serde(default = "yes")]
    pub wait: bool,
}

/// The answer to [`Take`] and [`Poll`]: the item `id` with its `data`, held by `ticket`; or
/// `ticket` `waiting` (a [`Handed`] follows); or, for a take without `wait`, `empty` (no
/// ticket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty: Option<bool>,
}

impl TakeReply {
    pub fn item(ticket: String, id: String, data: String) -> Self {
        TakeReply {
            id: Some(id),
            data: Some(data),
            ticket: Some(ticket),
            waiting: None,
            empty: None,
        }
    }

    pub fn waiting(ticket: String) -> Self {
        TakeReply { id: None, data: None, ticket: Some(ticket), waiting: Some(true), empty: None }
    }

    pub fn empty() -> Self {
        TakeReply { id: None, data: None, ticket: None, waiting: None, empty: Some(true) }
    }
}

op!(Take, "take", TakeReply);

/// `poll`: the item one of the session's tickets holds, or that it waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    pub queue: String,
    /// The ticket; an error when absent.
    #[serde(default)]
    pub ticket: Option<String>,
}

op!(Poll, "poll", TakeReply);

/// `cancel`: one of the session's tickets goes; an item it held meanwhile is ready again and
/// handed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    pub queue: String,
    /// The ticket; an error when absent.
    #[serde(default)]
    pub ticket: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    pub cancelled: bool,
}

op!(Cancel, "cancel", CancelReply);

/// `ack`: the item is done; it goes, with the ticket holding it, which must be the session's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub queue: String,
    /// The item's id; an error when absent.
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckReply {
    pub acked: bool,
}

op!(Ack, "ack", AckReply);

/// `release`: the ticket holding the item, which must be the session's, goes; the item is ready
/// again with its id, ahead of later items of its priority, and handed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub queue: String,
    /// The item's id; an error when absent.
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReply {
    pub released: bool,
}

op!(Release, "release", ReleaseReply);

/// `status`: how many items are ready, how many taken, how many tickets wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub queue: String,
}

/// The answer to [`Status`]: all 0 for a queue that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Items no ticket holds.
    pub ready: u64,
    /// Items held by tickets, not acked yet.
    pub taken: u64,
    /// Tickets holding no item.
    pub waiting: u64,
}

op!(Status, "status", StatusReply);

/// Sent to the session of a waiting ticket when it is handed an item (by a [`Put`], a
/// [`Cancel`], a [`Release`] or a session's end). Carrying the data, it is dropped when too
/// large for a notification: a waiting consumer also polls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handed {
    pub queue: String,
    pub ticket: String,
    pub id: String,
    pub data: String,
}

note!(Handed);

/// A ticket's znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The consumer's session.
    pub session: u64,
}
