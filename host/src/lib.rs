//! The Cairn node: a replicated tree of znodes with sessions and watches, served over QUIC.
//!
//! The modules follow the path of a request:
//!
//! ```text
//! client ──QUIC──▶ api (stream: frames in, session bound, requests dispatched)
//! ZooKeeper client ──TCP──▶ zk (jute frames, in request order) ─▶ the same sessions, writes
//!                   │         and reads as api, through api::Frontend
//!                   │  api::identity: the connection's principal (client certificate CN,
//!                   │  token, or anonymous), carried on every write and checked on reads
//!                   │
//!        writes ────┤ cluster: the way to the log wherever the leader is —
//!                   │   Proposer (every write waiting → one log entry, group commit),
//!                   │   forward (a follower's line to the leader), service (what peers
//!                   │   ask), membership, the leader's duties and session liveness
//!                   ▼
//!                  raft (openraft) ── log_store: fjall, fsync before the entry counts
//!                   │                └─ peer: the transport to the other nodes, QUIC + mTLS
//!                   ▼ committed
//!                  raft::state_machine ──▶ store::apply(entry) → replies + effects
//!                   │                         (deterministic: no clock, no I/O; one match
//!                   │                         over the kinds of write, each in a store::txn
//!                   │                         with its undo log; rights by store::access)
//!                   │                         invoke → recipe: a compiled wasm component
//!                   │                         run against its own namespace, its writes
//!                   │                         all-or-nothing; a node fault stops the node
//!                   ├─ recipe: compiles what the entry deployed (a deploy was compiled
//!                   │   once already, at admission, before it was proposed)
//!                   ├─ watch: effects → events a watcher may read, queued on its stream
//!                   └─ replies → back to the proposing stream
//!
//!        reads ─────┴─▶ cluster read index ─▶ store (DataTree) ─▶ reply, + watch registration
//!
//! operator ──HTTP(S)──▶ admin: /metrics, /healthz, /readyz and the console, reading the
//!                        node's state; its only writes go through cluster like any client's
//!
//! metrics: the counters and histograms each step above adds to, read by admin.
//!
//! Imports flow one way: store → recipe, watch → raft → cluster → api → zk → node. tls:
//! certificates; files: the data directory's private modes; node: starts and stops all of it;
//! config: how it is run (flags and file made one validated `ServeConfig`). A position in the
//! log is a `store::Zxid` everywhere inside; a plain number on the wire. The command line is
//! the `cairn` binary's (`src/bin/cairn`), which adds the client commands: this library does
//! not use the client.
//! ```
pub mod admin;
pub mod api;
pub mod cluster;
pub mod config;
pub mod files;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod recipe;
pub mod store;
pub mod tls;
pub mod watch;
pub mod zk;
