//! The guest SDK for Cairn recipes.
//!
//! A recipe is a type implementing [`Recipe`], exported with one line:
//!
//! ```ignore
//! struct Counter;
//!
//! impl cairn_recipe::Recipe for Counter {
//!     fn invoke(host: &mut dyn cairn_recipe::Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
//!         match op {
//!             "add" => {
//!                 let value = match host.get("/n") {
//!                     Ok((data, _)) => String::from_utf8_lossy(&data).parse::<i64>().unwrap_or(0),
//!                     Err(_) => 0,
//!                 };
//!                 let next = (value + 1).to_string();
//!                 host.put("/n", next.as_bytes()).map_err(|e| e.to_string())?;
//!                 Ok(next.into_bytes())
//!             }
//!             other => Err(format!("unknown op {other}")),
//!         }
//!     }
//! }
//!
//! cairn_recipe::export!(Counter);
//! ```
//!
//! Built for `wasm32-wasip2`, the crate is a component of the `cairn:recipe` world in `wit/`.
//! Built natively, `export!` expands to nothing and the recipe's logic can be tested against
//! [`testing::MemoryHost`], an in-memory store, without a node.

pub mod testing;

use std::fmt;

/// How a znode is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Persistent,
    /// Deleted when the calling session ends.
    Ephemeral,
}

/// A znode's metadata, as a recipe sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub version: u32,
    pub cversion: u32,
    pub czxid: u64,
    pub mzxid: u64,
    pub ephemeral_owner: u64,
    pub num_children: u32,
}

/// Why a store call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    NoNode,
    NodeExists,
    BadVersion,
    NotEmpty,
    InvalidPath,
    TooLarge,
    NoSession,
    NoChildrenForEphemerals,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreError::NoNode => "no node",
            StoreError::NodeExists => "node exists",
            StoreError::BadVersion => "bad version",
            StoreError::NotEmpty => "not empty",
            StoreError::InvalidPath => "invalid path",
            StoreError::TooLarge => "too large",
            StoreError::NoSession => "no session",
            StoreError::NoChildrenForEphemerals => "no children for ephemerals",
        })
    }
}

impl std::error::Error for StoreError {}

/// Everything a recipe can reach: its namespace of znodes (paths relative to it, "/" its root),
/// the call's context, and notifications to sessions.
pub trait Host {
    fn get(&mut self, path: &str) -> Result<(Vec<u8>, Stat), StoreError>;
    fn children(&mut self, path: &str) -> Result<Vec<String>, StoreError>;
    /// Up to `limit` children whose names start with `prefix`, in order. The node looks them up
    /// without reading the other children; this default (for hosts of tests) lists them all.
    fn children_with_prefix(
        &mut self,
        path: &str,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        Ok(with_prefix(self.children(path)?, prefix, limit))
    }
    /// The child whose name ends in the lowest 10-digit sequence number, if any does. The
    /// node looks it up in its index of sequential children; this default lists them all.
    fn first_sequential(&mut self, path: &str) -> Result<Option<String>, StoreError> {
        Ok(first_sequential(self.children(path)?))
    }
    fn create(
        &mut self,
        path: &str,
        data: &[u8],
        mode: Mode,
        sequential: bool,
    ) -> Result<String, StoreError>;
    fn set(&mut self, path: &str, data: &[u8], version: Option<u32>) -> Result<Stat, StoreError>;
    fn delete(&mut self, path: &str, version: Option<u32>) -> Result<(), StoreError>;
    /// The session that sent the invocation (0 for the host's own calls).
    fn session(&self) -> u64;
    /// The zxid of the entry being applied.
    fn zxid(&self) -> u64;
    /// The leader's timestamp on the entry, ms since the Unix epoch.
    fn time_ms(&self) -> u64;
    fn session_live(&self, session: u64) -> bool;
    /// A fencing token larger than every one the host gave before, to any recipe or version:
    /// the host keeps the counter where no recipe can write it. Use it for every grant that
    /// must fence (lock grants, leases, leadership terms) instead of a counter of your own.
    fn fencing_token(&mut self) -> u64;
    /// Queues a message for a session, delivered after the entry commits.
    fn notify(&mut self, session: u64, message: &[u8]);

    /// Creates or replaces a persistent znode's data.
    fn put(&mut self, path: &str, data: &[u8]) -> Result<(), StoreError> {
        match self.set(path, data, None) {
            Err(StoreError::NoNode) => self.create(path, data, Mode::Persistent, false).map(|_| ()),
            other => other.map(|_| ()),
        }
    }

    /// The caller's session, for an op that needs one (to create an ephemeral). Without one
    /// the op fails, and the caller hears `no-session`: the host refuses an ephemeral create
    /// made without a session, and that refusal ends the call with its own code.
    fn caller_session(&mut self, op: &str) -> Result<u64, String> {
        let session = self.session();
        if session != 0 {
            return Ok(session);
        }
        // Refused by the store before anything is written, whatever the path's state.
        let _ = self.create("/.needs-a-session", &[], Mode::Ephemeral, false);
        Err(format!("{op} needs a session"))
    }

    /// Data of a znode, or `None` when it does not exist.
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.get(path) {
            Ok((data, _)) => Ok(Some(data)),
            Err(StoreError::NoNode) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// The sequence number a sequential create appended to `name`: its last 10 characters, if they
/// are digits (their text order is their order).
pub fn sequence(name: &str) -> Option<&str> {
    let digits = name.get(name.len().checked_sub(10)?..)?;
    digits.bytes().all(|b| b.is_ascii_digit()).then_some(digits)
}

/// Up to `limit` of `names` that start with `prefix`, in order.
fn with_prefix(names: Vec<String>, prefix: &str, limit: u32) -> Vec<String> {
    names.into_iter().filter(|name| name.starts_with(prefix)).take(limit as usize).collect()
}

/// Which of `names` ends in the lowest sequence number, if any does.
fn first_sequential(names: Vec<String>) -> Option<String> {
    let first = names.iter().filter_map(|name| Some((sequence(name)?, name))).min();
    first.map(|(_, name)| name.clone())
}

/// A coordination recipe.
///
/// Keep every piece of state in the store, none in statics: the calls of one log entry may
/// share an instance (instantiating costs as much as a simple call), calls of different entries
/// never do, so state kept in the instance would be seen by some calls and not others.
pub trait Recipe {
    /// Runs one operation. An error undoes every write of the call.
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String>;

    /// The host deleted `deleted` (ephemerals of this namespace) because `session` ended.
    fn on_session_ended(host: &mut dyn Host, session: u64, deleted: Vec<String>) {
        let _ = (host, session, deleted);
    }
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

/// Exports a [`Recipe`] type as the component's `cairn:recipe/recipe` world. On other targets
/// it expands to nothing, so the same crate builds natively for tests.
#[macro_export]
macro_rules! export {
    ($recipe:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct CairnRecipeExport;
            impl $crate::wasm::bindings::Guest for CairnRecipeExport {
                fn invoke(op: String, args: Vec<u8>) -> Result<Vec<u8>, String> {
                    <$recipe as $crate::Recipe>::invoke(&mut $crate::wasm::WasmHost, &op, &args)
                }
                fn on_session_ended(session: u64, deleted: Vec<String>) {
                    <$recipe as $crate::Recipe>::on_session_ended(
                        &mut $crate::wasm::WasmHost,
                        session,
                        deleted,
                    )
                }
            }
    $crate::wasm::bindings::export!(CairnRecipeExport with_types_in $crate::wasm::bindings);
        };
    };
}

/// Typed helpers over the store for recipes that keep JSON records, as the built-ins do.
pub mod records {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::{Host, Mode, StoreError};

    /// A record as JSON bytes.
    pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(record).map_err(|e| format!("cannot encode a record: {e}"))
    }

    /// The JSON record at `path`, or `None` when the znode does not exist.
    pub fn read<T: DeserializeOwned>(host: &mut dyn Host, path: &str) -> Result<Option<T>, String> {
        match host.read(path).map_err(|e| e.to_string())? {
            Some(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| format!("corrupt record {path}: {e}")),
            None => Ok(None),
        }
    }

    /// Writes a JSON record over an existing znode.
    pub fn write<T: Serialize>(host: &mut dyn Host, path: &str, record: &T) -> Result<(), String> {
        host.set(path, &encode(record)?, None).map(|_| ()).map_err(|e| e.to_string())
    }

    /// Creates a znode holding a JSON record; returns its path (with the sequence number when
    /// `sequential`).
    pub fn create<T: Serialize>(
        host: &mut dyn Host,
        path: &str,
        record: &T,
        mode: Mode,
        sequential: bool,
    ) -> Result<String, String> {
        host.create(path, &encode(record)?, mode, sequential).map_err(|e| e.to_string())
    }

    /// Creates the persistent znode `path` (empty) unless it exists.
    pub fn ensure(host: &mut dyn Host, path: &str) -> Result<(), String> {
        match host.create(path, &[], Mode::Persistent, false) {
            Ok(_) | Err(StoreError::NodeExists) => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The path of entity `name` (a lock, an election...) at the namespace root, refusing names
    /// that are empty, too long or would reach elsewhere.
    pub fn entity_path(kind: &str, name: &str) -> Result<String, String> {
        if name.is_empty() || name.contains('/') || name.len() > 256 {
            return Err(format!("invalid {kind} name {name:?}"));
        }
        Ok(format!("/{name}"))
    }

    /// The children of `parent` in name order (arrival order for sequential children), each
    /// decoded from JSON; none when `parent` does not exist.
    pub fn children<T: DeserializeOwned>(
        host: &mut dyn Host,
        parent: &str,
    ) -> Result<Vec<(String, T)>, String> {
        let mut names = match host.children(parent) {
            Ok(names) => names,
            Err(StoreError::NoNode) => return Ok(Vec::new()),
            Err(error) => return Err(error.to_string()),
        };
        names.sort();
        let mut records = Vec::with_capacity(names.len());
        for name in names {
            let path = format!("{parent}/{name}");
            let (data, _) = host.get(&path).map_err(|e| e.to_string())?;
            let record =
                serde_json::from_slice(&data).map_err(|e| format!("corrupt record {path}: {e}"))?;
            records.push((path, record));
        }
        Ok(records)
    }

    /// The distinct parents of deleted paths, in order: the entities a session's end touched.
    pub fn parents(deleted: &[String]) -> Vec<String> {
        let mut parents: Vec<String> = deleted
            .iter()
            .filter_map(|path| path.rsplit_once('/').map(|(parent, _)| parent.to_string()))
            .collect();
        parents.dedup();
        parents
    }
}
