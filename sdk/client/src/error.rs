//! The client's errors: what the node refused, split from what went wrong on the way.

use cairn_wire::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node refused the request; `code` says why. Act on it.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A `multi` failed at operation `index`; nothing was applied.
    #[error("multi operation {index} failed: {error}")]
    MultiFailed { index: usize, error: ApiError },
    /// The server address does not resolve or the node does not answer the handshake.
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    /// The CA file cannot be read or used.
    #[error("tls: {0}")]
    Tls(String),
    /// The connection ended before the reply came; a write may or may not have been applied.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The node answered with something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// The node's error code, when the node refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api(error) | Error::MultiFailed { error, .. } => Some(error.code),
            _ => None,
        }
    }
}
