//! Cairn node.
pub mod raft;
pub mod store;
