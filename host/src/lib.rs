//! Cairn node.
pub mod api;
pub mod cli;
pub mod config;
pub mod node;
pub mod raft;
pub mod store;
pub mod tls;
