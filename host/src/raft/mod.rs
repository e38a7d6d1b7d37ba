//! Raft: the replicated log that orders every write, on openraft.
//!
//! Request path: the client front end (`api`) proposes a [`Command`] with
//! `Raft::client_write_ff`; openraft appends it to the [`log_store`] (fjall, fsynced by the
//! group-commit syncer before the entry counts as written), commits it, and hands it to the
//! [`state_machine`], which applies it to the znode tree and returns the reply the front end
//! sends back. Linearizable reads go through openraft's read-index check
//! (`Raft::ensure_linearizable`) before reading the state machine, or, on a leader whose check
//! succeeded within [`READ_LEASE_MS`], through its read lease (`cluster::read_index`).

// openraft's storage traits return its `StorageError`, which is large; the helpers here return
// the same type so errors pass through unchanged.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod peer;
pub mod state_machine;
mod storage;

use std::fmt;
use std::io::Cursor;

use cairn_wire::{ApiError, Reply};
use serde::{Deserialize, Serialize};

use crate::store::Command;

pub use state_machine::SharedState;
pub use storage::{Storage, StorageCounters, StorageOpenError};

/// How often the leader sends heartbeats, in milliseconds (openraft sends them on its timer's
/// ticks, every one and a half of these).
pub const HEARTBEAT_MS: u64 = 40;
/// A node's election timeout, drawn once per node from this range (milliseconds): a follower
/// that has heard no leader for that long, beyond the vote refusal below, stands for election.
/// Three heartbeats at least, so one lost packet starts no election.
pub const ELECTION_TIMEOUT_MS_MIN: u64 = 120;
/// Also how long a node that heard the leader (or has just started) refuses its vote to any
/// other candidate: openraft's leader lease on the follower's side.
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 240;

/// How long after a leadership check began a leader serves linearizable reads without another
/// one (its read lease), in milliseconds.
///
/// Why it is safe: every follower that answered the check's heartbeat (sent after it began)
/// refuses to vote for anyone else for `ELECTION_TIMEOUT_MS_MAX` after, and so does one that
/// restarts meanwhile; they and the leader are a quorum, and any other quorum shares one of them
/// with it, so no other node can win an election before that has passed. The leader itself
/// could vote for another, or leave the voters (a lone voter left leads without an election):
/// each read under the lease first asks openraft whether this node still holds the same
/// committed vote as a voter of the same membership (`cluster::read_index`). Clocks are
/// monotonic and local, so only their rates must agree, and a pause between that answer and
/// the clock's reading only makes the lease end sooner; the lease is well under the refusal.
pub const READ_LEASE_MS: u64 = ELECTION_TIMEOUT_MS_MAX * 3 / 8;
const _: () = assert!(READ_LEASE_MS * 2 < ELECTION_TIMEOUT_MS_MAX);

/// openraft's configuration with Cairn's timings; the caller adds snapshot settings.
pub fn timed_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "cairn".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MS_MIN,
        election_timeout_max: ELECTION_TIMEOUT_MS_MAX,
        ..Default::default()
    }
}

/// A Raft node id. openraft's id type must be a plain integer-like value; this alias names it.
pub type NodeId = u64;

/// What the cluster knows of one member: where its peers and its clients reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Address of the client front end (QUIC, ALPN `cairn-client/1`).
    pub client_addr: String,
    /// Address of the peer endpoint (QUIC, ALPN `cairn-peer/1`, mutual TLS); empty for a node
    /// that has no peers.
    #[serde(default)]
    pub peer_addr: String,
    /// The recipe runtime the member runs, as it announced it (empty until it has): the
    /// cluster adopts a new runtime only once every member runs it.
    #[serde(default)]
    pub recipe_runtime: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} peer {}", self.client_addr, self.peer_addr)
    }
}

/// The result of applying one action: what the proposing client is told.
pub type ApplyReply = Result<Reply, ApiError>;

openraft::declare_raft_types!(
    /// Cairn's openraft types.
    pub TypeConfig:
        D = Command,
        // One reply per action of the entry's command; none for Raft's own entries.
        R = Vec<ApplyReply>,
        NodeId = NodeId,
        Node = Member,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
