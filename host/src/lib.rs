//! Cairn node.
pub mod store;
