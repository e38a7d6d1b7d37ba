//! Raft: the replicated log that orders every write, on openraft.
//!
//! Request path: the client front end (`api`) proposes a [`Command`] with
//! `Raft::client_write_ff`; openraft appends it to the [`log_store`] (fjall, fsynced by the
//! group-commit syncer before the entry counts as written), commits it, and hands it to the
//! [`state_machine`], which applies it to the znode tree and returns the reply the front end
//! sends back. Linearizable reads go through openraft's read-index check
//! (`Raft::ensure_linearizable`) before reading the state machine, or, on a leader whose check
//! succeeded within its read lease ([`Timing::read_lease`]), through that lease
//! (`cluster::read_index`).

// openraft's storage traits return its `StorageError`, which is large; the helpers here return
// the same type so errors pass through unchanged.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod peer;
pub mod state_machine;
mod storage;

use std::fmt;
use std::io::Cursor;
use std::time::Duration;

use cairn_wire::{ApiError, Reply};
use serde::{Deserialize, Serialize};

use crate::store::Command;

pub use state_machine::SharedState;
pub use storage::{Storage, StorageCounters, StorageOpenError};

/// Raft's timing, from `--heartbeat-ms` and `--election-timeout-ms`.
///
/// The leader sends heartbeats every `heartbeat_ms` (openraft sends them on its timer's ticks,
/// every one and a half of these; the same time bounds each replication and leadership-check
/// RPC). A node's election timeout is drawn once from `election_timeout_ms` up to twice that: a
/// follower that has heard no leader for that long, beyond the vote refusal below, stands for
/// election. A node that heard the leader, or has just started, refuses its vote to any other
/// candidate for the top of that range (openraft's leader lease on the follower's side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
}

/// For nodes on one network: a failed leader is replaced in about half a second.
pub const DEFAULT_TIMING: Timing = Timing { heartbeat_ms: 40, election_timeout_ms: 120 };
/// The shortest heartbeat interval a node accepts, in milliseconds.
pub const HEARTBEAT_MS_MIN: u64 = 10;
/// The longest election timeout a node accepts, in milliseconds.
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 60_000;
/// Heartbeats within the shortest election timeout, at least: one lost packet starts no
/// election.
pub const HEARTBEATS_PER_ELECTION_TIMEOUT_MIN: u64 = 3;

impl Timing {
    /// The top of the election timeout's range: how long a follower refuses other candidates.
    pub fn election_timeout_max_ms(&self) -> u64 {
        self.election_timeout_ms * 2
    }

    /// How long after a leadership check began the leader serves linearizable reads without
    /// another one (its read lease): three eighths of the vote refusal.
    ///
    /// Why it is safe: every follower that answered the check's heartbeat (sent after it began)
    /// refuses to vote for anyone else for `election_timeout_max_ms` after, and so does one
    /// that restarts meanwhile; they and the leader are a quorum, and any other quorum shares
    /// one of them with it, so no other node can win an election before that has passed. The
    /// leader itself could vote for another, or leave the voters (a lone voter left leads
    /// without an election): each read under the lease first asks openraft whether this node
    /// still holds the same committed vote as a voter of the same membership
    /// (`cluster::read_index`). Clocks are monotonic and local, so only their rates must
    /// agree, and a pause between that answer and the clock's reading only makes the lease end
    /// sooner.
    pub fn read_lease(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max_ms() * 3 / 8)
    }

    /// Why these timings are unusable, if they are.
    pub fn check(&self) -> Result<(), String> {
        if self.heartbeat_ms < HEARTBEAT_MS_MIN {
            return Err(format!(
                "heartbeat_ms of {} is below the minimum {HEARTBEAT_MS_MIN}",
                self.heartbeat_ms
            ));
        }
        if self.election_timeout_ms > ELECTION_TIMEOUT_MS_MAX {
            return Err(format!(
                "election_timeout_ms of {} is above the maximum {ELECTION_TIMEOUT_MS_MAX}",
                self.election_timeout_ms
            ));
        }
        if self.election_timeout_ms < self.heartbeat_ms * HEARTBEATS_PER_ELECTION_TIMEOUT_MIN {
            return Err(format!(
                "election_timeout_ms of {} is under {HEARTBEATS_PER_ELECTION_TIMEOUT_MIN} \
                 heartbeats of {} ms",
                self.election_timeout_ms, self.heartbeat_ms
            ));
        }
        Ok(())
    }

    /// openraft's configuration with these timings; the caller adds snapshot settings.
    pub fn config(&self) -> openraft::Config {
        openraft::Config {
            cluster_name: "cairn".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_max_ms(),
            ..Default::default()
        }
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
