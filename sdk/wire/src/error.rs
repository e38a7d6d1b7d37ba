//! Error codes: the stable, documented reasons a node refuses a request.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a request failed. Encoded on the wire as the kebab-case string in each variant's doc.
/// New codes may be added; clients treat a code they do not know as a failure of that request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// `no-node`: the znode (or, for a create, its parent) does not exist.
    NoNode,
    /// `node-exists`: a create names a znode that already exists.
    NodeExists,
    /// `bad-version`: the znode's version is not the expected one.
    BadVersion,
    /// `not-empty`: a delete names a znode that has children.
    NotEmpty,
    /// `invalid-path`: the path is not a valid znode path.
    InvalidPath,
    /// `too-large`: znode data over the limit.
    TooLarge,
    /// `invalid-argument`: a field's value is not allowed (a TTL of zero, a sequential container,
    /// deleting the root, ...).
    InvalidArgument,
    /// `sequence-overflow`: the parent's sequence counter is exhausted.
    SequenceOverflow,
    /// `rolled-back`: in a failed `multi`, an operation that was undone because another failed.
    RolledBack,
    /// `session-expired`: the session has ended (timed out or closed); its ephemerals are gone.
    SessionExpired,
    /// `no-session`: the request needs a session and this stream has none.
    NoSession,
    /// `no-children-for-ephemerals`: a create under an ephemeral znode.
    NoChildrenForEphemerals,
    /// `too-many-watches`: the session holds the most watches allowed.
    TooManyWatches,
    /// `too-many-sessions`: the cluster holds the most sessions allowed.
    TooManySessions,
    /// `no-recipe`: no such recipe (or version) is deployed.
    NoRecipe,
    /// `invalid-recipe`: a deploy's component is not a recipe (wrong world, does not compile,
    /// imports what the host does not serve).
    InvalidRecipe,
    /// `recipe-error`: the recipe refused the operation; `detail` is its message. Nothing it
    /// wrote was kept.
    RecipeError,
    /// `out-of-fuel`: the recipe ran past its instruction budget. Nothing it wrote was kept.
    OutOfFuel,
    /// `out-of-memory`: the recipe grew past its memory limit. Nothing it wrote was kept.
    OutOfMemory,
    /// `recipe-trap`: the recipe trapped (a panic, an unreachable, a bad access). Nothing it
    /// wrote was kept.
    RecipeTrap,
    /// `recipe-limit`: the recipe went past what one call may do through its host calls
    /// (znodes created, bytes written, bytes moved, host calls). Nothing it wrote was kept.
    RecipeLimit,
    /// `no-auth`: the principal this connection speaks for lacks the permission the request
    /// needs (an ACL, an administrator's right, a recipe's namespace).
    NoAuth,
    /// `auth-failed`: the token presented is not one the cluster knows (never issued or
    /// revoked), or the session belongs to another principal.
    AuthFailed,
    /// `invalid-acl`: an ACL that is not well formed (unknown scheme, bad id, too many
    /// entries), or one that would leave nobody able to change it.
    InvalidAcl,
    /// `quota-exceeded`: the request would take its principal past its quota (sessions,
    /// connections, watches, znodes, bytes) or the cluster past its node-wide bounds (znodes,
    /// stored bytes, deployed recipes). Deletes still succeed, to make room.
    QuotaExceeded,
    /// `malformed-request`: the frame's body is not a valid request (bad encoding, unknown kind,
    /// missing field). The connection stays usable.
    MalformedRequest,
    /// `request-too-large`: a frame over the request size limit. The node closes the connection.
    RequestTooLarge,
    /// `not-leader`: this node cannot serve the request because it is not the leader and could
    /// not forward it. Retry, on this node or another.
    NotLeader,
    /// `unavailable`: the node cannot serve requests now (starting, shutting down, no quorum).
    /// Retry later.
    Unavailable,
    /// `internal`: a fault inside the node. The request may or may not have taken effect.
    Internal,
}

impl ErrorCode {
    /// The code as it travels on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NoNode => "no-node",
            ErrorCode::NodeExists => "node-exists",
            ErrorCode::BadVersion => "bad-version",
            ErrorCode::NotEmpty => "not-empty",
            ErrorCode::InvalidPath => "invalid-path",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::SequenceOverflow => "sequence-overflow",
            ErrorCode::RolledBack => "rolled-back",
            ErrorCode::SessionExpired => "session-expired",
            ErrorCode::NoSession => "no-session",
            ErrorCode::NoChildrenForEphemerals => "no-children-for-ephemerals",
            ErrorCode::TooManyWatches => "too-many-watches",
            ErrorCode::TooManySessions => "too-many-sessions",
            ErrorCode::NoRecipe => "no-recipe",
            ErrorCode::InvalidRecipe => "invalid-recipe",
            ErrorCode::RecipeError => "recipe-error",
            ErrorCode::OutOfFuel => "out-of-fuel",
            ErrorCode::OutOfMemory => "out-of-memory",
            ErrorCode::RecipeTrap => "recipe-trap",
            ErrorCode::RecipeLimit => "recipe-limit",
            ErrorCode::NoAuth => "no-auth",
            ErrorCode::AuthFailed => "auth-failed",
            ErrorCode::InvalidAcl => "invalid-acl",
            ErrorCode::QuotaExceeded => "quota-exceeded",
            ErrorCode::MalformedRequest => "malformed-request",
            ErrorCode::RequestTooLarge => "request-too-large",
            ErrorCode::NotLeader => "not-leader",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code as people read it: `no-node` reads "no node".
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::NoNode => "no node",
            ErrorCode::NodeExists => "node exists",
            ErrorCode::BadVersion => "bad version",
            ErrorCode::NotEmpty => "not empty",
            ErrorCode::InvalidPath => "invalid path",
            ErrorCode::TooLarge => "too large",
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::SequenceOverflow => "sequence overflow",
            ErrorCode::RolledBack => "rolled back",
            ErrorCode::SessionExpired => "session expired",
            ErrorCode::NoSession => "no session",
            ErrorCode::NoChildrenForEphemerals => "no children for ephemerals",
            ErrorCode::TooManyWatches => "too many watches",
            ErrorCode::TooManySessions => "too many sessions",
            ErrorCode::NoRecipe => "no recipe",
            ErrorCode::InvalidRecipe => "invalid recipe",
            ErrorCode::RecipeError => "recipe error",
            ErrorCode::OutOfFuel => "out of fuel",
            ErrorCode::OutOfMemory => "out of memory",
            ErrorCode::RecipeTrap => "recipe trap",
            ErrorCode::RecipeLimit => "recipe limit",
            ErrorCode::NoAuth => "not authorized",
            ErrorCode::AuthFailed => "authentication failed",
            ErrorCode::InvalidAcl => "invalid ACL",
            ErrorCode::QuotaExceeded => "quota exceeded",
            ErrorCode::MalformedRequest => "malformed request",
            ErrorCode::RequestTooLarge => "request too large",
            ErrorCode::NotLeader => "not leader",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: the code a program acts on, the path it concerns and a detail for people.
///
/// Displays as `no node: /missing` or `too large: /big (2000000 bytes, limit 1048576)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ApiError {
    pub code: ErrorCode,
    /// The znode path the error concerns, when there is one.
    #[serde(default)]
    pub path: Option<String>,
    /// More words for people; never needed to act on the error.
    #[serde(default)]
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        ApiError { code, path: None, detail: None }
    }

    pub fn at(code: ErrorCode, path: impl Into<String>) -> Self {
        ApiError { code, path: Some(path.into()), detail: None }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code.description())?;
        if let Some(path) = &self.path {
            write!(f, ": {path}")?;
        }
        if let Some(detail) = &self.detail {
            if self.path.is_some() {
                write!(f, " ({detail})")?;
            } else {
                write!(f, ": {detail}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_reads_as_a_sentence() {
        assert_eq!(ApiError::at(ErrorCode::NoNode, "/missing").to_string(), "no node: /missing");
        assert_eq!(
            ApiError::new(ErrorCode::MalformedRequest).with_detail("bad tag").to_string(),
            "malformed request: bad tag"
        );
        assert_eq!(
            ApiError::at(ErrorCode::TooLarge, "/a").with_detail("2 bytes").to_string(),
            "too large: /a (2 bytes)"
        );
    }

    #[test]
    fn as_str_matches_serde_name() {
        for code in [
            ErrorCode::NoNode,
            ErrorCode::NodeExists,
            ErrorCode::BadVersion,
            ErrorCode::NotEmpty,
            ErrorCode::InvalidPath,
            ErrorCode::TooLarge,
            ErrorCode::InvalidArgument,
            ErrorCode::SequenceOverflow,
            ErrorCode::RolledBack,
            ErrorCode::SessionExpired,
            ErrorCode::NoSession,
            ErrorCode::NoChildrenForEphemerals,
            ErrorCode::TooManyWatches,
            ErrorCode::TooManySessions,
            ErrorCode::NoRecipe,
            ErrorCode::InvalidRecipe,
            ErrorCode::RecipeError,
            ErrorCode::OutOfFuel,
            ErrorCode::OutOfMemory,
            ErrorCode::RecipeTrap,
            ErrorCode::RecipeLimit,
            ErrorCode::NoAuth,
            ErrorCode::AuthFailed,
            ErrorCode::InvalidAcl,
            ErrorCode::QuotaExceeded,
            ErrorCode::MalformedRequest,
            ErrorCode::RequestTooLarge,
            ErrorCode::NotLeader,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            let encoded = rmp_serde::to_vec_named(&code).expect("an enum always encodes");
            let decoded: String =
                rmp_serde::from_slice(&encoded).expect("a unit variant is a string");
            assert_eq!(decoded, code.as_str());
        }
    }
}
