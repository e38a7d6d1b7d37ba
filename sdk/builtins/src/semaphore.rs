//! `semaphore`: N permits, taken k at a time in arrival order, returned when the holding
//! session ends.
//!
//! State, in the recipe's namespace: `/<sem>` holds a [`SemaphoreRecord`], made by the first
//! acquire; its children, named [`REQUEST_PREFIX`] plus the store's sequence number, are the
//! requests in arrival order, each an ephemeral znode of the requesting session holding a
//! [`Request`]. Waiting requests are granted in order while they fit: a large request at the
//! head is not overtaken by smaller ones, so it never starves.

use serde::{Deserialize, Serialize};

use crate::{nullable, yes};

/// The recipe's name.
pub const RECIPE: &str = "semaphore";

/// The name of a request's znode up to the sequence number the store appends.
pub const REQUEST_PREFIX: &str = "h-";

/// The default of [`Acquire::count`].
fn one() -> u64 {
    1
}

/// `acquire`: `count` permits, or a place in line (with `wait`), or busy (without). The first
/// acquire of a semaphore fixes its permits. A session with a request already is told where it
/// stands, whatever its `count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquire {
    pub sem: String,
    /// The semaphore's permits: needed (above 0) when it is new, the same if given later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permits: Option<u64>,
    /// Permits to take: 1 to the semaphore's.
    #[serde(default = "one")]
    pub count: u64,
    #[serde(default = "yes")]
    pub wait: bool,
}

/// The answer to [`Acquire`]: granted, queued at `position` (a [`Granted`] follows), or busy
/// (neither). A session with a request already gets whether it is granted, with its `position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireReply {
    pub granted: bool,
    /// Requests ahead of the caller's, the holders included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

impl AcquireReply {
    pub fn granted() -> Self {
        AcquireReply { granted: true, position: None }
    }

    pub fn queued(position: u64) -> Self {
        AcquireReply { granted: false, position: Some(position) }
    }

    pub fn busy() -> Self {
        AcquireReply { granted: false, position: None }
    }
}

op!(Acquire, "acquire", AcquireReply);

/// `release`: the session's granted request, with all its permits; waiting requests are then
/// granted in order while they fit. An error if the session holds no permits (a waiting request
/// cannot be released).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub sem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReply {
    /// The permits given back.
    pub released: u64,
}

op!(Release, "release", ReleaseReply);

/// `status`: the permits, who holds some and who waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub sem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The semaphore's permits; `null` when it does not exist.
    #[serde(deserialize_with = "nullable")]
    pub permits: Option<u64>,
    /// Permits held.
    pub used: u64,
    /// The holding sessions, in order.
    pub holders: Vec<u64>,
    /// The waiting sessions, in order.
    pub queue: Vec<u64>,
}

op!(Status, "status", StatusReply);

/// Sent to a waiting session when its request is granted (by a release or a session's end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub sem: String,
}

note!(Granted);

/// A semaphore's own znode: its permits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemaphoreRecord {
    pub permits: u64,
}

/// A request's znode. A session has at most one per semaphore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub session: u64,
    /// Permits asked for, held once granted.
    pub count: u64,
    pub granted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode;

    #[test]
    fn one_permit_by_default_and_null_permits() {
        let acquire: Acquire = decode(br#"{"sem": "s", "permits": null}"#).expect("null permits");
        assert_eq!(acquire, Acquire { sem: "s".into(), permits: None, count: 1, wait: true });
        let status: StatusReply =
            decode(br#"{"permits": null, "used": 0, "holders": [], "queue": []}"#).expect("none");
        assert_eq!(status.permits, None);
        assert!(decode::<StatusReply>(br#"{"used": 0, "holders": [], "queue": []}"#).is_err());
    }
}
