//! Cairn's client protocol: every message a client and a node exchange, its encoding, its framing
//! and its error codes. No I/O: the node's front end (`cairn::api`) and the client library
//! (`cairn-client`) both read and write bytes with these types.
//!
//! The wire format is specified in `PROTOCOL.md` beside this crate, precisely enough to write a
//! client in another language from it alone. In short: one QUIC connection (ALPN [`ALPN`]) with
//! one bidirectional stream; each direction carries frames of a 4-byte big-endian length followed
//! by a MessagePack body whose structs are maps keyed by field name.

pub mod access;
mod error;
mod frame;
mod message;
pub mod path;

pub use access::{AclEntry, Quota, Usage};
pub use error::{ApiError, ErrorCode};
pub use frame::{FRAME_HEADER_BYTES, FrameError, decode_body, encode_frame, frame_length};
pub use message::{
    ChildEntry, CreateMode, CreateRequest, DeleteRequest, EventFrame, EventKind, MalformedRequest,
    MemberInfo, MultiOp, MultiResult, OpResult, RecipeInfo, RemoveKind, Reply, Request,
    RequestFrame, Response, ResponseFrame, ServerFrame, ServerInfo, SessionInfo, SetRequest, Stat,
    WatchKind, WatchSpec,
};

/// The ALPN protocol name a client offers on the QUIC handshake.
pub const ALPN: &[u8] = b"cairn-client/1";

/// Largest znode data, in bytes (ZooKeeper's default `jute.maxbuffer` is the same 1 MiB).
pub const ZNODE_DATA_BYTES_MAX: usize = 1024 * 1024;

/// Longest znode path, in bytes.
pub const PATH_BYTES_MAX: usize = 4096;

/// Largest recipe component a deploy accepts, in bytes.
pub const RECIPE_COMPONENT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest request frame body, in bytes: room for the largest payload (a recipe component)
/// plus the rest of a request. A `multi` that writes several large znodes must fit in this too.
pub const REQUEST_BYTES_MAX: usize = RECIPE_COMPONENT_BYTES_MAX + 64 * 1024;

/// Largest response frame body, in bytes: a `children` listing of a very wide znode with stats
/// is the biggest reply there is.
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Most operations in one `multi`.
pub const MULTI_OPS_MAX: usize = 1024;

/// Longest TTL of a TTL znode, in milliseconds (ZooKeeper's limit: 2^40 - 1).
pub const TTL_MS_MAX: u64 = (1 << 40) - 1;

/// The QUIC application error code a node closes a connection with when the client broke the
/// framing (a frame longer than the limit, a stream ended mid-frame).
pub const CLOSE_PROTOCOL_VIOLATION: u32 = 1;

/// The QUIC application error code a node closes connections with when it shuts down.
pub const CLOSE_SHUTDOWN: u32 = 2;

/// The QUIC application error code a node closes a connection with when the client does not
/// read its replies: a stream's queue of replies stayed full past the node's deadline.
pub const CLOSE_SLOW_READER: u32 = 3;

/// Shortest session timeout a node grants, in milliseconds.
pub const SESSION_TIMEOUT_MS_MIN: u64 = 500;

/// Longest session timeout a node grants, in milliseconds.
pub const SESSION_TIMEOUT_MS_MAX: u64 = 600_000;

/// Most watches one session may hold.
pub const WATCHES_PER_SESSION_MAX: usize = 65_536;

/// Most bytes of watched paths one session may hold, over all its watches.
pub const WATCH_PATH_BYTES_PER_SESSION_MAX: usize = 4 * 1024 * 1024;

/// Most watches in one `set-watches` request; clients re-register more in several.
pub const SET_WATCHES_BATCH_MAX: usize = 1_024;

/// Most live sessions a cluster holds.
pub const SESSIONS_MAX: usize = 100_000;

/// The QUIC application error code a node closes a connection with when the client certificate
/// does not name a principal (its common name is missing or not a valid principal name).
pub const CLOSE_BAD_IDENTITY: u32 = 4;

/// The QUIC application error code a node closes a connection with when its principal already
/// holds as many connections to the node as its quota allows.
pub const CLOSE_QUOTA_EXCEEDED: u32 = 5;

/// The QUIC application error code a client closes its connection with when it is done.
pub const CLOSE_CLIENT_DONE: u32 = 0;
