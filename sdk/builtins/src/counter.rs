//! `counter`: named 64-bit signed counters. No sessions, notifications or fencing tokens.
//!
//! State, in the recipe's namespace: `/<name>` holds the counter's value as decimal ASCII (`7`,
//! `-3`), not JSON. A counter that does not exist reads as 0.

use serde::{Deserialize, Serialize};

/// The recipe's name.
pub const RECIPE: &str = "counter";

/// `add`: adds `delta` and answers the value after it. Writes the counter (making it if need
/// be) even when `delta` is 0; an error past the range of an `i64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add {
    pub name: String,
    #[serde(default)]
    pub delta: i64,
}

op!(Add, "add", ValueReply);

/// `get`: the counter's value. Writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Get {
    pub name: String,
}

op!(Get, "get", ValueReply);

/// The answer to [`Add`] and [`Get`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueReply {
    pub value: i64,
}

/// `cas`: sets the counter to `value` if it equals `expected`; otherwise changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cas {
    pub name: String,
    #[serde(default)]
    pub expected: i64,
    #[serde(default)]
    pub value: i64,
}

/// The answer to [`Cas`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasReply {
    pub swapped: bool,
    /// `value` if swapped, else the counter's current value.
    pub value: i64,
}

op!(Cas, "cas", CasReply);
