//! `rw-lock`: many readers or one writer, granted in arrival order so a waiting writer is never
//! overtaken by later readers, a fencing token on every grant, re-entrant per session, handed on
//! when a holder's session ends.
//!
//! State, in the recipe's namespace: `/<lock>` holds a [`LockRecord`]; its children, named
//! [`REQUEST_PREFIX`] plus the store's sequence number, are the requests in arrival order, each
//! an ephemeral znode of the requesting session holding a [`Request`]. Walking the line from its
//! start, a write is granted only when it is first, reads up to the first write.

use serde::{Deserialize, Serialize};

use crate::yes;

/// The recipe's name.
pub const RECIPE: &str = "rw-lock";

/// The name of a request's znode up to the sequence number the store appends.
pub const REQUEST_PREFIX: &str = "w-";

/// Shared or exclusive: `"read"` or `"write"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

/// `acquire`: a hold in `mode`, or a place in line (with `wait`), or busy (without). A holder
/// acquiring again counts one more hold (a writer may also take reads, and keeps writing); a
/// reader asking to write is refused: two readers upgrading would wait for each other forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquire {
    pub lock: String,
    /// Required: without it (or with `null`) the op fails with its own error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Access>,
    #[serde(default = "yes")]
    pub wait: bool,
}

/// The answer to [`Acquire`]: granted with `mode`, `token` and `holds`, queued at `position` (a
/// [`Granted`] follows), or busy (neither).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireReply {
    pub granted: bool,
    /// The mode held: a writer asking to read keeps writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Access>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// Holds the session now has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<u32>,
    /// Requests ahead of the caller's, the holders included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

impl AcquireReply {
    pub fn granted(mode: Access, token: u64, holds: u32) -> Self {
        AcquireReply {
            granted: true,
            mode: Some(mode),
            token: Some(token),
            holds: Some(holds),
            position: None,
        }
    }

    pub fn queued(position: u64) -> Self {
        AcquireReply {
            granted: false,
            mode: None,
            token: None,
            holds: None,
            position: Some(position),
        }
    }

    pub fn busy() -> Self {
        AcquireReply { granted: false, mode: None, token: None, holds: None, position: None }
    }
}

op!(Acquire, "acquire", AcquireReply);

/// `release`: one hold of the lock; the last one lets in whoever can go next. An error if the
/// session holds nothing.
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

/// `downgrade`: the writer becomes a reader, keeping its token and holds, without letting
/// another writer in between; the reads waiting behind it, up to the next write, are granted.
/// An error if the session does not write the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downgrade {
    pub lock: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DowngradeReply {
    /// Always [`Access::Read`].
    pub mode: Access,
    /// The write grant's token, kept.
    pub token: u64,
}

op!(Downgrade, "downgrade", DowngradeReply);

/// `status`: who holds the lock and who waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub lock: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The last fencing token granted (0 if never).
    pub token: u64,
    /// The holding requests, in line order.
    pub holders: Vec<StatusEntry>,
    /// The waiting requests, in line order.
    pub queue: Vec<StatusEntry>,
}

/// A request in a [`StatusReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEntry {
    pub session: u64,
    pub mode: Access,
    /// The fencing token of the grant; 0 while waiting.
    pub token: u64,
}

op!(Status, "status", StatusReply);

/// Sent to a waiting session when its request is granted (by a release, a downgrade or a
/// session's end); never to the caller of [`Acquire`], whose answer says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub lock: String,
    pub mode: Access,
    pub token: u64,
}

note!(Granted);

/// A lock's own znode: the last fencing token granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub token: u64,
}

/// A request's znode. A session has at most one per lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub session: u64,
    pub mode: Access,
    /// Holds taken (re-entrant acquires); 0 while waiting.
    pub count: u32,
    /// The fencing token of the grant; 0 while waiting.
    pub token: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    #[test]
    fn a_mode_is_lowercase_and_left_to_the_op_to_require() {
        let acquire: Acquire = decode(br#"{"lock": "l", "mode": null}"#).expect("null mode");
        assert_eq!(acquire, Acquire { lock: "l".into(), mode: None, wait: true });
        assert!(decode::<Acquire>(br#"{"lock": "l", "mode": "exclusive"}"#).is_err());
        let granted = AcquireReply::granted(Access::Write, 2, 1);
        assert_eq!(
            String::from_utf8(encode(&granted)).expect("utf-8"),
            r#"{"granted":true,"mode":"write","token":2,"holds":1}"#
        );
    }
}
