//! Recipes in the replicated state: which components are deployed under which name and
//! version, and the seam through which `apply` runs them.
//!
//! Request path: deploy, retire and invoke are log entries. `apply` checks them here and hands
//! an invocation to a [`RecipeRunner`] (the node's is `crate::recipe::RecipeRuntime`), which
//! runs the component against a [`RecipeTxn`] on the recipe's own namespace: its writes commit
//! together or not at all.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_wire::{ApiError, CreateMode, CreateRequest, DeleteRequest, ErrorCode, SetRequest, Stat};
use serde::{Deserialize, Serialize};

use super::{Caller, DataTree, Effects, NodeFault, SessionId, Zxid};

/// Longest recipe name, in bytes.
pub const RECIPE_NAME_BYTES_MAX: usize = 64;
/// Names a cluster may ever deploy recipes under (retired or not: each keeps its highest
/// version, so that a version is never reused).
pub const RECIPE_NAMES_MAX: usize = 1_024;
/// Versions of one recipe live at once; retire one to deploy another.
pub const RECIPE_VERSIONS_LIVE_PER_NAME_MAX: usize = 16;
/// Bytes of every live component together: each is in every snapshot and every node's memory.
pub const RECIPE_COMPONENTS_BYTES_MAX: usize = 256 * 1024 * 1024;
pub use cairn_wire::RECIPE_COMPONENT_BYTES_MAX;

/// Why a component cannot run on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("not a component: {0}")]
    NotAComponent(String),
    /// An import outside the recipe world and the WASI interfaces the host serves alike on
    /// every replica.
    #[error(
        "imports `{0}`, which a recipe may not use (a recipe may import only its own world and \
         WASI's io, clocks, random, cli and filesystem interfaces)"
    )]
    ForbiddenImport(String),
    #[error("imports what the host does not serve: {0}")]
    Unserved(String),
    #[error("not a cairn:recipe component: {0}")]
    NotARecipe(String),
    #[error("this node cannot run recipes")]
    NoRuntime,
}

/// The content hash components are known by: SHA-256, in hex.
pub fn component_hash(component: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(component).iter().map(|b| format!("{b:02x}")).collect()
}

/// One deployed version of a recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    /// SHA-256 of the component, hex: what nodes cache its compiled form under.
    pub hash: String,
    #[serde(with = "super::shared_bytes")]
    pub component: Arc<Vec<u8>>,
}

/// Every deployed recipe, and the runtime version that runs them on every replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeTable {
    pub deployed: BTreeMap<String, BTreeMap<u32, Deployed>>,
    /// Set by the first deploy. Fuel counts may differ between runtimes, so a node whose
    /// runtime differs must not apply recipe entries.
    pub runtime: Option<String>,
    /// The highest version ever deployed of each name, retired or not: versions only grow, so
    /// `NAME@V` names one component for as long as the cluster lives.
    #[serde(default)]
    pub highest: BTreeMap<String, u32>,
    /// Frozen for a change of runtime: no recipe code runs (invokes and deploys are refused,
    /// session-end hooks wait in `pending_hooks`) until the cluster adopts a runtime.
    #[serde(default)]
    pub frozen: bool,
    /// Session-end hooks deferred while frozen, in the order the sessions ended. Bounded by the
    /// state at the freeze: no recipe can create an ephemeral while frozen, so at most one per
    /// recipe per session that held one then.
    #[serde(default)]
    pub pending_hooks: Vec<PendingHook>,
    /// Who each name belongs to: its owner (or an administrator) deploys its new versions.
    /// The built-ins belong to `system`.
    #[serde(default)]
    pub owners: BTreeMap<String, String>,
}

/// A session-end hook that waits for the recipes to thaw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingHook {
    pub name: String,
    pub session: SessionId,
    /// The recipe's znodes that went with the session (relative paths).
    pub deleted: Vec<String>,
}

impl RecipeTable {
    /// Whether one more component of `bytes` may be deployed as a version of `name`.
    pub fn check_room(&self, name: &str, bytes: usize) -> Result<(), ApiError> {
        let quota =
            |detail: String| Err(ApiError::new(ErrorCode::QuotaExceeded).with_detail(detail));
        if !self.highest.contains_key(name) && self.highest.len() >= RECIPE_NAMES_MAX {
            return quota(format!("{RECIPE_NAMES_MAX} recipe names are in use"));
        }
        let live = self.deployed.get(name).map_or(0, BTreeMap::len);
        if live >= RECIPE_VERSIONS_LIVE_PER_NAME_MAX {
            return quota(format!(
                "{name} has {live} live versions, the most allowed: retire one first"
            ));
        }
        let total: usize =
            self.deployed.values().flat_map(BTreeMap::values).map(|d| d.component.len()).sum();
        if total + bytes > RECIPE_COMPONENTS_BYTES_MAX {
            return quota(format!(
                "{total} bytes of components are deployed; {bytes} more would pass \
                 {RECIPE_COMPONENTS_BYTES_MAX}: retire versions first"
            ));
        }
        Ok(())
    }

    /// The named version, or the newest.
    pub fn resolve(&self, name: &str, version: Option<u32>) -> Result<(u32, &Deployed), ApiError> {
        let versions = self.deployed.get(name).ok_or_else(|| no_recipe(name, version))?;
        let found = match version {
            Some(version) => versions.get_key_value(&version),
            None => versions.iter().next_back(),
        };
        found
            .map(|(version, deployed)| (*version, deployed))
            .ok_or_else(|| no_recipe(name, version))
    }
}

fn no_recipe(name: &str, version: Option<u32>) -> ApiError {
    let what = match version {
        Some(version) => format!("{name}@{version}"),
        None => name.to_string(),
    };
    ApiError::new(ErrorCode::NoRecipe).with_detail(format!("{what} is not deployed"))
}

/// Checks a recipe name: lowercase letters, digits and dashes.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= RECIPE_NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::InvalidArgument).with_detail(format!(
            "recipe name {name:?}: use 1 to {RECIPE_NAME_BYTES_MAX} lowercase letters, digits or dashes"
        )))
    }
}

/// One call into a recipe, as `apply` hands it to the runner.
#[derive(Debug, Clone, Copy)]
pub struct RecipeCall<'a> {
    pub name: &'a str,
    pub version: u32,
    pub deployed: &'a Deployed,
    /// The session the call comes from (none for the host's own calls).
    pub session: Option<SessionId>,
    /// Who invoked it (the node itself for session hooks): what the recipe creates counts
    /// against its quota.
    pub caller: &'a Caller,
    pub zxid: Zxid,
    pub time_ms: u64,
    pub entry: Entry<'a>,
}

/// Which export a call runs.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// `invoke(op, args)`, for a client.
    Invoke { op: &'a str, args: &'a [u8] },
    /// `on-session-ended(session, deleted)`, by the host, after it deleted the session's
    /// ephemerals in this recipe's namespace (paths relative to it).
    SessionEnded { session: SessionId, deleted: &'a [String] },
}

/// What runs recipe components for `apply`. Deterministic: the same tree and call give the
/// same result and writes on every replica.
pub trait RecipeRunner {
    /// Names the runtime (engine version and fuel accounting), recorded in the state.
    fn runtime_version(&self) -> &str;

    /// Makes a component ready to run on this node: compiles it (or loads what this node
    /// compiled of it before) and checks that it has exactly the recipe world's imports and
    /// exports. Never called from apply: the node a deploy reaches compiles it before proposing
    /// it (deploy admission), and every replica compiles it once it has applied the deploy,
    /// before the next entry can call it.
    fn compile(&self, hash: &str, component: &[u8]) -> Result<(), CompileError>;

    /// Runs `call` against the recipe's namespace in `tree`: its writes are applied if it
    /// returns ok and undone otherwise; what they changed goes to `effects`.
    fn invoke(
        &self,
        tree: &mut DataTree,
        call: RecipeCall<'_>,
        effects: &mut Effects,
    ) -> Result<Vec<u8>, ApiError>;

    /// Every write of a log entry has been applied: nothing of the entry's calls (such as an
    /// instance kept for its next calls) may outlive it.
    fn entry_applied(&self) {}

    /// Deploy admission's last step, before the deploy is proposed: compiles the component of
    /// `name` (as `NAME@VERSION`); `invalid-recipe`, saying why, if it cannot run.
    fn admit(&self, name: &str, component: &[u8]) -> Result<(), ApiError> {
        self.compile(&component_hash(component), component).map_err(|why| {
            ApiError::new(ErrorCode::InvalidRecipe).with_detail(format!("{name}: {why}"))
        })
    }

    /// Compiles what the entry at `zxid` deployed, after applying it and before the next entry
    /// can call it. The node that proposed it compiled it at admission on the same runtime, so
    /// a failure here is this node's own: a [`NodeFault`], which stops it.
    fn compile_deployed(&self, zxid: Zxid, deployed: &[Deployed]) -> Result<(), NodeFault> {
        for component in deployed {
            self.compile(&component.hash, &component.component).map_err(|why| NodeFault {
                zxid,
                why: format!("cannot compile deployed component {}: {why}", component.hash),
            })?;
        }
        Ok(())
    }

    /// Compiles every live component of `table` (a restarted node's, or an installed
    /// snapshot's), so that apply finds them compiled.
    fn compile_live(&self, zxid: Zxid, table: &RecipeTable) -> Result<(), NodeFault> {
        let live: Vec<Deployed> =
            table.deployed.values().flat_map(|versions| versions.values()).cloned().collect();
        self.compile_deployed(zxid, &live)
    }
}

/// A runner for trees that never run recipes (tests of the store alone).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRecipes;

impl RecipeRunner for NoRecipes {
    fn runtime_version(&self) -> &str {
        "none"
    }

    fn compile(&self, _hash: &str, _component: &[u8]) -> Result<(), CompileError> {
        Err(CompileError::NoRuntime)
    }

    fn invoke(
        &self,
        _: &mut DataTree,
        call: RecipeCall<'_>,
        _: &mut Effects,
    ) -> Result<Vec<u8>, ApiError> {
        Err(ApiError::new(ErrorCode::Internal).with_detail(format!("cannot run {}", call.name)))
    }
}

/// The writes of one recipe invocation on its namespace: paths here are absolute; the runtime
/// maps the recipe's relative paths onto its namespace before calling.
#[derive(Debug)]
pub struct RecipeTxn {
    pub(super) parts: super::txn::TxnParts,
}

impl RecipeTxn {
    pub fn new(zxid: Zxid, time_ms: u64, session: Option<SessionId>, caller: Caller) -> RecipeTxn {
        RecipeTxn { parts: super::txn::TxnParts::new(zxid, time_ms, session, caller) }
    }

    pub fn create(
        &mut self,
        tree: &mut DataTree,
        path: &str,
        data: Vec<u8>,
        ephemeral: bool,
        sequential: bool,
    ) -> Result<String, ApiError> {
        let mode = if ephemeral { CreateMode::Ephemeral } else { CreateMode::Persistent };
        let request = CreateRequest {
            path: path.to_string(),
            data,
            null_data: false,
            mode,
            sequential,
            ttl_ms: None,
            acl: None,
        };
        self.parts.with(tree, |txn| txn.create(&request)).map(|(path, _)| path)
    }

    pub fn set(
        &mut self,
        tree: &mut DataTree,
        path: &str,
        data: Vec<u8>,
        version: Option<u32>,
    ) -> Result<Stat, ApiError> {
        let request = SetRequest { path: path.to_string(), data, null_data: false, version };
        self.parts.with(tree, |txn| txn.set(&request))
    }

    pub fn delete(
        &mut self,
        tree: &mut DataTree,
        path: &str,
        version: Option<u32>,
    ) -> Result<(), ApiError> {
        let request = DeleteRequest { path: path.to_string(), version };
        self.parts.with(tree, |txn| txn.delete(&request))
    }

    /// Whether the call's caller may read `path` (as the namespace root's ACL governs it).
    pub fn check_read(&self, tree: &DataTree, path: &str) -> Result<(), ApiError> {
        tree.check_read(self.parts.caller(), path)
    }

    /// Keeps the writes: deletes containers they emptied and reports what changed.
    pub fn commit(mut self, tree: &mut DataTree, effects: &mut Effects) {
        self.parts.with(tree, |txn| txn.delete_emptied_containers());
        self.parts.finish(effects);
    }

    /// Undoes every write.
    pub fn rollback(mut self, tree: &mut DataTree) {
        self.parts.with(tree, |txn| txn.rollback());
    }
}
