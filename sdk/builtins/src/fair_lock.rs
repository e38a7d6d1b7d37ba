//! `fair-lock`: first come, first served, a fencing token on every grant, re-entrant per
//! session, handed on when the holder's session ends; several locks at once, all or none.
//!
//! State, in the recipe's namespace: `/<lock>` holds a [`LockRecord`]; its children, named by
//! [`waiter_prefix`] plus the store's sequence number, are the waiters in arrival order, each an
//! ephemeral znode of the waiting session holding a [`Waiter`]. The first child by sequence
//! number holds the lock once its `count` is above 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{nullable, yes};

/// The recipe's name.
pub const RECIPE: &str = "fair-lock";

/// Locks one [`AcquireAll`] may take.
pub const LOCKS_PER_CALL_MAX: usize = 64;

/// `acquire`: takes the lock, or joins its queue (with `wait`), or answers busy (without).
/// Acquiring a lock the session holds counts one more hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquire {
    pub lock: String,
    #[serde(default = "yes")]
    pub wait: bool,
}

/// The answer to [`Acquire`]: granted with `token` and `holds`, queued at `position` as
/// `waiter` (a [`Granted`] follows), or busy (none of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireReply {
    pub granted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// Holds the session now has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<u32>,
    /// Waiters ahead of the caller, the holder included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// The name of the caller's waiter znode, when queued: its record shows the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiter: Option<String>,
}

impl AcquireReply {
    pub fn granted(token: u64, holds: u32) -> Self {
        AcquireReply { granted: true, token: Some(token), holds: Some(holds), ..Self::busy() }
    }

    pub fn queued(position: u64, waiter: String) -> Self {
        AcquireReply { position: Some(position), waiter: Some(waiter), ..Self::busy() }
    }

    pub fn busy() -> Self {
        AcquireReply { granted: false, token: None, holds: None, position: None, waiter: None }
    }
}

op!(Acquire, "acquire", AcquireReply);

/// `release`: one hold of the lock; the last one grants the next waiter. An error if the
/// session does not hold the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub lock: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReply {
    pub released: bool,
    /// Holds the session has left.
    pub holds: u32,
}

op!(Release, "release", ReleaseReply);

/// `status`: who holds the lock and who waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub lock: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The holding session; `null` when the lock is free.
    #[serde(deserialize_with = "nullable")]
    pub holder: Option<u64>,
    /// The last fencing token granted (0 if never).
    pub token: u64,
    /// The waiting sessions, in order, the holder not included.
    pub queue: Vec<u64>,
}

op!(Status, "status", StatusReply);

/// `acquire-all`: 1 to [`LOCKS_PER_CALL_MAX`] locks in one log entry, all or none. Waiting,
/// the session joins every lock's queue in that one entry and is granted all of them at once
/// ([`GrantedAll`]), so waiters for overlapping sets never deadlock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireAll {
    pub locks: Vec<String>,
    #[serde(default = "yes")]
    pub wait: bool,
}

/// The answer to [`AcquireAll`]: `tokens` when granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireAllReply {
    pub granted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<BTreeMap<String, u64>>,
}

op!(AcquireAll, "acquire-all", AcquireAllReply);

/// `release-all`: one hold of each lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseAll {
    pub locks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseAllReply {
    pub released: bool,
}

op!(ReleaseAll, "release-all", ReleaseAllReply);

/// Sent to a waiter of [`Acquire`] when it is granted the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub lock: String,
    pub token: u64,
}

note!(Granted);

/// Sent to a waiter of [`AcquireAll`] when it is granted every lock of its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedAll {
    pub locks: BTreeMap<String, u64>,
}

note!(GrantedAll);

/// A lock's own znode: the last fencing token granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub token: u64,
}

/// A waiter's znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub session: u64,
    /// Holds taken by the session (re-entrant acquires); 0 while waiting.
    pub count: u32,
    /// The fencing token of the grant; 0 while waiting.
    pub token: u64,
    /// For `acquire-all`: every lock of the group (this one included), granted together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<String>,
}

/// The name of `session`'s waiter znode up to the sequence number the store appends.
pub fn waiter_prefix(session: u64) -> String {
    format!("w-{session:016x}-")
}

/// The session and the sequence number in a waiter's znode name. Sequence numbers have a fixed
/// width, so their text order is the queue's order.
pub fn parse_waiter(name: &str) -> Option<(u64, &str)> {
    let (session, sequence) = name.strip_prefix("w-")?.split_once('-')?;
    Some((u64::from_str_radix(session, 16).ok()?, sequence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiter_names_round_trip() {
        let name = format!("{}{:010}", waiter_prefix(0xab), 7);
        assert_eq!(parse_waiter(&name), Some((0xab, "0000000007")));
        assert_eq!(parse_waiter("x-1-2"), None);
        assert_eq!(parse_waiter("w-zz-2"), None);
    }
}
