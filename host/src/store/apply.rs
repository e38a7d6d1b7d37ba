//! `apply`: one committed command against the tree, all-or-nothing.
//!
//! Every mutation goes through a [`Txn`] that records how to undo it, so a `multi` whose third
//! operation fails leaves the tree exactly as it found it. Rules that delete znodes on their own
//! (empty containers, expired TTL znodes) run at the end of the command that triggers them, in
//! the same entry, so every replica sees the same tree after every zxid.

use cairn_wire::access::{ADMIN, CREATE, DELETE, READ, SYSTEM, WRITE};
use cairn_wire::{
    AclEntry, ApiError, CreateMode, CreateRequest, DeleteRequest, ErrorCode, EventKind,
    MULTI_OPS_MAX, MultiOp, MultiResult, OpResult, PATH_BYTES_MAX, Reply, SESSION_TIMEOUT_MS_MAX,
    SESSION_TIMEOUT_MS_MIN, SESSIONS_MAX, SetRequest, TTL_MS_MAX, Usage, ZNODE_DATA_BYTES_MAX,
    path,
};

use std::collections::BTreeMap;
use std::sync::Arc;

use super::recipes::{
    Deployed, Entry, PendingHook, RECIPE_COMPONENT_BYTES_MAX, RECIPES_ROOT, RESERVED_ROOT,
    RecipeCall, RecipeRunner, RecipeTxn, is_reserved, namespace, recipe_path, validate_name,
};
use super::{
    Acl, Action, Caller, Change, Command, DataTree, Effects, NodeFault, NodeKind, SecretHash,
    Session, SessionId, Write, Znode, acl_bytes, stored_bytes_of, ttl_expired,
};

impl DataTree {
    /// Applies every write of the entry at `zxid`, in order, each all-or-nothing on its own, and
    /// adds what they changed to `effects`: the one way a command reaches the tree. A fault of
    /// this node (`internal`: not the write's own doing) ends it with a [`NodeFault`], which
    /// stops the node through Raft's fail-stop path.
    pub fn apply_command(
        &mut self,
        zxid: u64,
        command: &Command,
        effects: &mut Effects,
        recipes: &dyn RecipeRunner,
    ) -> Result<Vec<Result<Reply, ApiError>>, NodeFault> {
        let mut replies = Vec::with_capacity(command.writes.len());
        for write in &command.writes {
            let reply = self.apply_with(zxid, command.time_ms, write, effects, recipes);
            // `internal` is never a request's own doing: this node failed where another
            // replica may not have.
            if let Err(error) = &reply
                && error.code == ErrorCode::Internal
            {
                recipes.entry_applied();
                return Err(NodeFault { zxid, why: error.to_string() });
            }
            replies.push(reply);
        }
        recipes.entry_applied();
        Ok(replies)
    }

    /// Refuses recipe code while the recipes are frozen for a change of runtime.
    fn check_not_frozen(&self) -> Result<(), ApiError> {
        if self.recipes.frozen {
            return Err(ApiError::new(ErrorCode::Unavailable).with_detail(
                "recipes are frozen for a change of runtime until the cluster adopts one \
                 (cairn cluster adopt-runtime)",
            ));
        }
        Ok(())
    }

    /// What the cluster runs recipes on, and whether they are frozen.
    fn runtime_reply(&self) -> Reply {
        Reply::RecipeRuntime { runtime: self.recipes.runtime.clone(), frozen: self.recipes.frozen }
    }

    /// Records `runtime` as the one recipes run on from this entry on, ends a freeze and runs
    /// the session-end hooks it deferred, in order. Every member announced `runtime` before
    /// this was proposed; a node that does not run it stops here rather than run the hooks.
    fn adopt_runtime(
        &mut self,
        runtime: &str,
        recipes: &dyn RecipeRunner,
        effects: &mut Effects,
    ) -> Result<Reply, ApiError> {
        let changes = self.recipes.runtime.as_deref() != Some(runtime);
        if changes && !self.recipes.frozen && self.recipes.runtime.is_some() {
            return Err(ApiError::new(ErrorCode::InvalidArgument).with_detail(
                "freeze the recipes first (cairn cluster freeze-recipes): a recipe entry applied \
                 on the old runtime must never be applied again on the new one",
            ));
        }
        self.recipes.runtime = Some(runtime.to_string());
        self.recipes.frozen = false;
        let pending = std::mem::take(&mut self.recipes.pending_hooks);
        if !pending.is_empty() {
            self.check_runtime(recipes)?;
        }
        for hook in pending {
            self.run_session_hook(&hook.name, hook.session, &hook.deleted, recipes, effects)?;
        }
        Ok(self.runtime_reply())
    }

    /// The recipe runtime recorded in the state (by the first deploy) must be this node's:
    /// fuel counts and the served imports may differ between runtimes, so running recipe code
    /// on another could make this replica differ from the rest. `internal`, so the node stops.
    fn check_runtime(&self, recipes: &dyn RecipeRunner) -> Result<(), ApiError> {
        match &self.recipes.runtime {
            Some(runtime) if runtime != recipes.runtime_version() => {
                Err(ApiError::new(ErrorCode::Internal).with_detail(format!(
                    "the cluster runs recipes on runtime {runtime}; this node has {}",
                    recipes.runtime_version()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Applies one write, running recipes with `recipes`: the recipe actions here, the tree's
    /// own in [`DataTree::apply`].
    fn apply_with(
        &mut self,
        zxid: u64,
        time_ms: u64,
        write: &Write,
        effects: &mut Effects,
        recipes: &dyn RecipeRunner,
    ) -> Result<Reply, ApiError> {
        let recipe_action = matches!(
            write.action,
            Action::FreezeRecipes
                | Action::AdoptRecipeRuntime { .. }
                | Action::DeployRecipe { .. }
                | Action::RetireRecipe { .. }
                | Action::InvokeRecipe { .. }
        );
        let caller = if recipe_action {
            self.advance(zxid, time_ms);
            self.caller(&write.principal)?
        } else {
            Caller::system()
        };
        match &write.action {
            Action::FreezeRecipes => {
                caller.require_admin("freezing the recipes")?;
                self.recipes.frozen = true;
                Ok(self.runtime_reply())
            }
            Action::AdoptRecipeRuntime { runtime } => {
                caller.require_admin("adopting a recipe runtime")?;
                self.adopt_runtime(runtime, recipes, effects)
            }
            Action::DeployRecipe { name, version, component, runtime, owner } => {
                self.check_not_frozen()?;
                let owner = self.deploy_owner(&caller, name, owner.as_deref())?;
                if self.recipes.runtime.is_none() {
                    // The first deploy: the cluster runs recipes on the proposer's runtime.
                    self.recipes.runtime = Some(runtime.clone());
                }
                self.check_runtime(recipes)?;
                let reply = self.deploy_recipe(name, *version, component, recipes, effects)?;
                self.recipes.owners.insert(name.clone(), owner);
                Ok(reply)
            }
            Action::RetireRecipe { name, version } => {
                caller.require_admin("retiring a recipe")?;
                self.retire_recipe(name, *version)
            }
            Action::InvokeRecipe { name, version, op, args } => {
                self.check_not_frozen()?;
                self.check_runtime(recipes)?;
                // Invoking needs write on the recipe's namespace root (none but an
                // administrator's, should it be missing).
                let root = namespace(name);
                let acl = self
                    .nodes
                    .get(&root)
                    .map_or_else(super::access::root_acl, |node| node.acl.clone());
                caller.require(&acl, WRITE, &root)?;
                let (version, deployed) = self.recipes.resolve(name, *version)?;
                let deployed = deployed.clone();
                let call = RecipeCall {
                    name,
                    version,
                    deployed: &deployed,
                    session: write.session,
                    caller: &caller,
                    zxid,
                    time_ms: self.clock_ms,
                    entry: Entry::Invoke { op, args },
                };
                recipes.invoke(self, call, effects).map(|result| Reply::Invoked { result })
            }
            Action::CloseSession | Action::ExpireSession { .. } => {
                let ending = match &write.action {
                    Action::ExpireSession { session } => Some(*session),
                    _ => write.session,
                };
                // The session's ephemerals in recipe namespaces, by recipe: each recipe hears of
                // its own in this same entry, so a lock passes on as its holder's session ends.
                let mut by_recipe: BTreeMap<String, Vec<String>> = BTreeMap::new();
                if let Some(session) = ending {
                    for path in self.ephemerals_of(session) {
                        if let Some((name, relative)) = recipe_path(path) {
                            by_recipe
                                .entry(name.to_string())
                                .or_default()
                                .push(relative.to_string());
                        }
                    }
                }
                let frozen = self.recipes.frozen;
                if !by_recipe.is_empty() && !frozen {
                    self.check_runtime(recipes)?;
                }
                let reply = self.apply(zxid, time_ms, write, effects)?;
                if let Some(session) = ending {
                    for (name, deleted) in by_recipe {
                        if frozen {
                            // No recipe code runs while frozen: the hook runs at the thaw.
                            self.recipes.pending_hooks.push(PendingHook { name, session, deleted });
                        } else {
                            self.run_session_hook(&name, session, &deleted, recipes, effects)?;
                        }
                    }
                }
                Ok(reply)
            }
            _ => self.apply(zxid, time_ms, write, effects),
        }
    }

    /// Tells a recipe which of its znodes went with a session. A hook that fails is undone on
    /// its own and the session's end stands; only a fault of this node (`internal`) is passed
    /// on, to stop it.
    fn run_session_hook(
        &mut self,
        name: &str,
        session: SessionId,
        deleted: &[String],
        recipes: &dyn RecipeRunner,
        effects: &mut Effects,
    ) -> Result<(), ApiError> {
        let Ok((version, deployed)) = self.recipes.resolve(name, None) else { return Ok(()) };
        let deployed = deployed.clone();
        let call = RecipeCall {
            name,
            version,
            deployed: &deployed,
            session: None,
            caller: &Caller::system(),
            zxid: self.last_zxid,
            time_ms: self.clock_ms,
            entry: Entry::SessionEnded { session, deleted },
        };
        // Deterministic like everything in apply: every replica fails the same way, so the
        // error is the same everywhere and only worth a log line.
        match recipes.invoke(self, call, effects) {
            Err(error) if error.code == ErrorCode::Internal => Err(error),
            Err(error) => {
                tracing::warn!(recipe = %name, %session, %error, "session hook failed");
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    /// Who recipe `name` belongs to after a deploy by `caller`: a new name needs an
    /// administrator and belongs to `owner` (the deployer when absent); a new version of a name
    /// needs its owner or an administrator, and only an administrator hands it to another.
    fn deploy_owner(
        &self,
        caller: &Caller,
        name: &str,
        owner: Option<&str>,
    ) -> Result<String, ApiError> {
        let current = self.recipes.owners.get(name);
        match current {
            None => caller.require_admin(&format!("deploying the new recipe name {name}"))?,
            Some(current) if !caller.admin && **current != *caller.name => {
                return Err(ApiError::new(ErrorCode::NoAuth).with_detail(format!(
                    "{name} belongs to {current}: only its owner or an administrator deploys it"
                )));
            }
            Some(_) => {}
        }
        match (owner, current) {
            (Some(owner), _) => {
                if Some(&owner.to_string()) != current {
                    caller.require_admin("giving a recipe to another principal")?;
                }
                if owner != SYSTEM {
                    cairn_wire::access::validate_principal_name(owner).map_err(|why| {
                        ApiError::new(ErrorCode::InvalidArgument).with_detail(why)
                    })?;
                }
                Ok(owner.to_string())
            }
            (None, Some(current)) => Ok(current.clone()),
            (None, None) => Ok(caller.name.to_string()),
        }
    }

    fn advance(&mut self, zxid: u64, time_ms: u64) {
        debug_assert!(zxid >= self.last_zxid, "zxid {zxid} after {}", self.last_zxid);
        self.last_zxid = zxid;
        self.clock_ms = self.clock_ms.max(time_ms);
    }

    fn deploy_recipe(
        &mut self,
        name: &str,
        version: Option<u32>,
        component: &[u8],
        recipes: &dyn RecipeRunner,
        effects: &mut Effects,
    ) -> Result<Reply, ApiError> {
        validate_name(name)?;
        if component.len() > RECIPE_COMPONENT_BYTES_MAX {
            return Err(ApiError::new(ErrorCode::TooLarge).with_detail(format!(
                "component of {} bytes, limit {RECIPE_COMPONENT_BYTES_MAX}",
                component.len()
            )));
        }
        self.recipes.check_room(name, component.len())?;
        let highest = self.recipes.highest.get(name).copied().unwrap_or(0);
        let version = match version {
            Some(version) if version <= highest => {
                return Err(ApiError::new(ErrorCode::InvalidArgument).with_detail(format!(
                    "{name}@{version}: versions only grow, and {name}@{highest} was deployed"
                )));
            }
            Some(version) => version,
            None => highest.checked_add(1).ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidArgument)
                    .with_detail(format!("{name} has used every version"))
            })?,
        };
        recipes.validate(component).map_err(|why| {
            ApiError::new(ErrorCode::InvalidRecipe).with_detail(format!("{name}@{version}: {why}"))
        })?;
        // The namespace exists from the first deploy on, so a recipe can write at its root.
        let mut txn = RecipeTxn::new(self.last_zxid, self.clock_ms, None, Caller::system());
        for path in [RESERVED_ROOT.to_string(), RECIPES_ROOT.to_string(), namespace(name)] {
            if !self.nodes.contains_key(&path) {
                txn.create(self, &path, Vec::new(), false, false)?;
            }
        }
        txn.commit(self, effects);
        let hash = sha256_hex(component);
        let deployed = Deployed { hash: hash.clone(), component: Arc::new(component.to_vec()) };
        self.recipes.deployed.entry(name.to_string()).or_default().insert(version, deployed);
        self.recipes.highest.insert(name.to_string(), version);
        Ok(Reply::RecipeDeployed { name: name.to_string(), version, hash })
    }

    fn retire_recipe(&mut self, name: &str, version: u32) -> Result<Reply, ApiError> {
        self.recipes.resolve(name, Some(version))?;
        if let Some(versions) = self.recipes.deployed.get_mut(name) {
            versions.remove(&version);
            if versions.is_empty() {
                self.recipes.deployed.remove(name);
            }
        }
        Ok(Reply::RecipeRetired {})
    }

    /// Applies one write of the entry at `zxid`, stamped `time_ms` by its leader, that runs no
    /// recipe code (`apply_with` takes those). A refused write changes nothing but the tree's
    /// zxid and clock. Internal actions (the TTL reaper, session expiry) reply `synced`: no
    /// client waits for them.
    fn apply(
        &mut self,
        zxid: u64,
        time_ms: u64,
        write: &Write,
        effects: &mut Effects,
    ) -> Result<Reply, ApiError> {
        // Several writes of one entry share its zxid, as the operations of a multi do.
        debug_assert!(zxid >= self.last_zxid, "zxid {zxid} after {}", self.last_zxid);
        self.last_zxid = zxid;
        self.clock_ms = self.clock_ms.max(time_ms);
        let caller = self.caller(&write.principal)?;
        let mut txn = Txn {
            zxid,
            time_ms: self.clock_ms,
            session: write.session,
            caller,
            privileged: false,
            tree: self,
            undo: Vec::new(),
            emptied: Vec::new(),
            changes: Vec::new(),
            ended_sessions: Vec::new(),
        };
        let reply = match &write.action {
            Action::DeployRecipe { .. }
            | Action::RetireRecipe { .. }
            | Action::FreezeRecipes
            | Action::AdoptRecipeRuntime { .. }
            | Action::InvokeRecipe { .. } => {
                // Never reached: `apply_with`, the one way in, takes these itself.
                Err(ApiError::new(ErrorCode::Internal).with_detail("a recipe write needs a runner"))
            }
            Action::Create(request) => {
                txn.create(request).map(|(path, stat)| Reply::Created { path, stat })
            }
            Action::Set(request) => txn.set(request).map(|stat| Reply::Stat { stat }),
            Action::Delete(request) => txn.delete(request).map(|()| Reply::Deleted {}),
            Action::Multi(ops) => txn.multi(ops),
            Action::SetAcl { path, acl, version } => {
                txn.set_acl(path, acl, *version).map(|stat| Reply::Stat { stat })
            }
            Action::CreateToken { name, hash } => txn
                .caller
                .require_admin("issuing a token")
                .and_then(|()| txn.tree.access.add_token(name, *hash))
                // The proposing node puts the token in; the entry never carried it.
                .map(|()| Reply::Token { name: name.clone(), token: String::new() }),
            Action::RevokeToken { name } => {
                txn.caller.require_admin("revoking a token").and_then(|()| {
                    match txn.tree.access.tokens.remove(name) {
                        Some(_) => {
                            effects.access_changed = true;
                            Ok(Reply::TokenRevoked {})
                        }
                        None => Err(ApiError::new(ErrorCode::NoNode)
                            .with_detail(format!("{name} has no token"))),
                    }
                })
            }
            Action::SetAdmin { name, admin } => txn
                .caller
                .require_admin("changing who administers the cluster")
                .and_then(|()| txn.tree.access.set_admin(name, *admin))
                .map(|()| {
                    effects.access_changed = true;
                    Reply::Admins { admins: txn.tree.access.admins.iter().cloned().collect() }
                }),
            Action::SetQuota { name, quota } => txn
                .caller
                .require_admin("setting a quota")
                .and_then(|()| txn.tree.access.set_quota(name, *quota))
                .map(|()| Reply::Quota {
                    name: name.clone(),
                    quota: *quota,
                    usage: txn.tree.usage(name),
                }),
            Action::ReapTtl => {
                txn.reap_ttl();
                Ok(Reply::Synced {})
            }
            Action::OpenSession { timeout_ms, secret_hash } => {
                txn.open_session(*timeout_ms, *secret_hash)
            }
            Action::CloseSession => match write.session {
                Some(session) => txn.end_session(session).map(|()| Reply::SessionClosed {}),
                None => Err(ApiError::new(ErrorCode::NoSession)),
            },
            Action::ExpireSession { session } => {
                txn.end_session(*session).map(|()| Reply::Synced {})
            }
        };
        let reply = match reply {
            Ok(Reply::Multi { results })
                if results.iter().any(|r| matches!(r, MultiResult::Error(_))) =>
            {
                txn.rollback();
                Ok(Reply::Multi { results })
            }
            Ok(reply) => {
                txn.delete_emptied_containers();
                Ok(reply)
            }
            Err(error) => {
                txn.rollback();
                Err(error)
            }
        };
        effects.changes.append(&mut txn.changes);
        effects.ended_sessions.append(&mut txn.ended_sessions);
        reply
    }
}

/// A transaction's state without the tree: what a recipe invocation carries between its
/// host calls, each of which borrows the tree afresh.
#[derive(Debug)]
pub(super) struct TxnParts {
    zxid: u64,
    time_ms: u64,
    session: Option<SessionId>,
    caller: Caller,
    undo: Vec<Undo>,
    emptied: Vec<String>,
    changes: Vec<Change>,
    ended_sessions: Vec<SessionId>,
}

impl TxnParts {
    pub(super) fn new(
        zxid: u64,
        time_ms: u64,
        session: Option<SessionId>,
        caller: Caller,
    ) -> TxnParts {
        TxnParts {
            zxid,
            time_ms,
            session,
            caller,
            undo: Vec::new(),
            emptied: Vec::new(),
            changes: Vec::new(),
            ended_sessions: Vec::new(),
        }
    }

    /// Runs `f` on a privileged transaction over `tree` that continues this one.
    pub(super) fn with<R>(&mut self, tree: &mut DataTree, f: impl FnOnce(&mut Txn<'_>) -> R) -> R {
        let mut txn = Txn {
            tree,
            zxid: self.zxid,
            time_ms: self.time_ms,
            session: self.session,
            caller: self.caller.clone(),
            privileged: true,
            undo: std::mem::take(&mut self.undo),
            emptied: std::mem::take(&mut self.emptied),
            changes: std::mem::take(&mut self.changes),
            ended_sessions: std::mem::take(&mut self.ended_sessions),
        };
        let result = f(&mut txn);
        self.undo = txn.undo;
        self.emptied = txn.emptied;
        self.changes = txn.changes;
        self.ended_sessions = txn.ended_sessions;
        result
    }

    pub(super) fn caller(&self) -> &Caller {
        &self.caller
    }

    pub(super) fn finish(&mut self, effects: &mut Effects) {
        effects.changes.append(&mut self.changes);
        effects.ended_sessions.append(&mut self.ended_sessions);
    }
}

/// How to undo one mutation.
#[derive(Debug)]
enum Undo {
    /// A znode was created: remove it.
    Created { path: String },
    /// A znode was deleted: put it back.
    Deleted { path: String, node: Znode },
    /// A znode's data was set: put the old data and versions back.
    Set { path: String, data: Arc<Vec<u8>>, version: u32, mzxid: u64, mtime: u64 },
    /// A child was added to (or removed from) `parent`: take it out (or put it back).
    Child { parent: String, name: String, added: bool, cversion: u32, pzxid: u64 },
}

/// The mutations of one write, undoable until the write ends.
pub(super) struct Txn<'a> {
    tree: &'a mut DataTree,
    zxid: u64,
    time_ms: u64,
    /// The session of the stream that sent the write.
    session: Option<SessionId>,
    /// Who the write speaks for: its rights, and whose quota what it creates counts against.
    caller: Caller,
    /// Whether the write may touch the reserved namespace (a recipe's or the node's own). A
    /// recipe's writes inside its own namespace pass no ACL: invoking it took the right.
    privileged: bool,
    undo: Vec<Undo>,
    /// Containers that lost a child in this write: deleted at its end if they are empty.
    emptied: Vec<String>,
    /// What changed, for the watches; dropped if the write is undone.
    changes: Vec<Change>,
    /// Sessions this write ended. Session writes never fail after they start changing things.
    ended_sessions: Vec<SessionId>,
}

impl Txn<'_> {
    /// Clients may read the recipes' namespaces but not write them: a forged lock holder or
    /// fencing token would break every recipe's promises.
    fn check_reserved(&self, path: &str) -> Result<(), ApiError> {
        if !self.privileged && is_reserved(path) {
            return Err(ApiError::at(ErrorCode::InvalidArgument, path)
                .with_detail("reserved for recipes: invoke the recipe instead"));
        }
        Ok(())
    }

    /// `no-auth` at `path` unless the caller holds `perms` in `acl`. A recipe acts with its
    /// caller's rights, as the ACL of its namespace root grants them (the one that governs
    /// everything the recipe holds).
    fn require(&self, acl: &Acl, perms: u32, path: &str) -> Result<(), ApiError> {
        if self.privileged {
            return self.caller.require(self.tree.governing_acl(path, acl), perms, path);
        }
        self.caller.require(acl, perms, path)
    }

    /// `error` (which says whether `path` exists) for a caller who may know that, `no-auth`
    /// for one who may not read what is above it.
    fn absent(&self, path: &str, error: ApiError) -> ApiError {
        if self.privileged {
            return error;
        }
        match self.tree.check_read(&self.caller, path) {
            Ok(()) => error,
            Err(denied) => denied,
        }
    }

    /// Whether `name` may hold `more_znodes` and `more_bytes` more; administrators and the
    /// node itself are not bounded.
    fn check_quota(
        &self,
        name: &str,
        more_znodes: u64,
        more_bytes: u64,
        path: &str,
    ) -> Result<(), ApiError> {
        if name == SYSTEM || self.tree.access.admins.contains(name) {
            return Ok(());
        }
        let quota = self.tree.access.quota(name);
        let held = self.tree.usage(name);
        if held.znodes + more_znodes > quota.znodes {
            return Err(ApiError::at(ErrorCode::QuotaExceeded, path)
                .with_detail(format!("{name} holds {} znodes, its quota", quota.znodes)));
        }
        if held.bytes + more_bytes > quota.bytes {
            return Err(ApiError::at(ErrorCode::QuotaExceeded, path).with_detail(format!(
                "{more_bytes} more bytes would take {name} past its quota of {} bytes",
                quota.bytes
            )));
        }
        Ok(())
    }

    /// Replaces a znode's ACL.
    fn set_acl(
        &mut self,
        path: &str,
        acl: &[AclEntry],
        version: Option<u32>,
    ) -> Result<cairn_wire::Stat, ApiError> {
        path::validate(path)?;
        if recipe_path(path).is_some_and(|(_, relative)| relative != "/") {
            return Err(ApiError::at(ErrorCode::InvalidArgument, path).with_detail(
                "a recipe's znodes are governed by its namespace root's ACL: set that one",
            ));
        }
        let Some(node) = self.tree.nodes.get(path) else {
            return Err(self.absent(path, ApiError::at(ErrorCode::NoNode, path)));
        };
        self.require(&node.acl, ADMIN, path)?;
        if let Some(expected) = version
            && expected != node.aversion
        {
            return Err(ApiError::at(ErrorCode::BadVersion, path)
                .with_detail(format!("expected ACL version {expected}, found {}", node.aversion)));
        }
        let acl = self.caller.acl_to_store(Some(acl), &node.acl, path)?;
        // The ACL counts as stored bytes, against the cluster's bound and the creator's quota.
        let (from, to) = (acl_bytes(&node.acl) as u64, acl_bytes(&acl) as u64);
        let creator = node.creator.clone();
        self.tree.check_room(path, 0, to.saturating_sub(from))?;
        self.check_quota(&creator, 0, to.saturating_sub(from), path)?;
        self.tree.resize(&creator, from, to);
        let node =
            self.tree.nodes.get_mut(path).ok_or_else(|| ApiError::at(ErrorCode::NoNode, path))?;
        node.acl = acl;
        node.aversion = node.aversion.wrapping_add(1);
        Ok(node.stat())
    }

    /// Opens a session. The reply's `secret` is 0: only the proposing node knows the secret,
    /// and it answers its client with it.
    fn open_session(
        &mut self,
        timeout_ms: u64,
        secret_hash: SecretHash,
    ) -> Result<Reply, ApiError> {
        if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return Err(ApiError::new(ErrorCode::InvalidArgument).with_detail(format!(
                "session timeout of {timeout_ms} ms is outside \
                 {SESSION_TIMEOUT_MS_MIN}..={SESSION_TIMEOUT_MS_MAX}"
            )));
        }
        if self.tree.sessions.len() >= SESSIONS_MAX {
            return Err(ApiError::new(ErrorCode::TooManySessions)
                .with_detail(format!("{SESSIONS_MAX} sessions are open")));
        }
        let name = self.caller.name.clone();
        if !self.caller.admin {
            let quota = self.tree.access.quota(&name).sessions;
            if self.tree.usage(&name).sessions >= quota {
                return Err(ApiError::new(ErrorCode::QuotaExceeded)
                    .with_detail(format!("{name} has {quota} sessions open, its quota")));
            }
        }
        let id = SessionId(self.tree.next_session_id);
        self.tree.next_session_id += 1;
        self.tree.usage.entry(name.clone()).or_default().sessions += 1;
        let principal = name.to_string();
        self.tree.sessions.insert(id, Session { timeout_ms, secret_hash, principal });
        Ok(Reply::Session { session_id: id.0, secret: 0, timeout_ms })
    }

    /// Ends a session: deletes its ephemerals (and containers they leave empty), then the session.
    fn end_session(&mut self, id: SessionId) -> Result<(), ApiError> {
        if !self.tree.sessions.contains_key(&id) {
            return Err(ApiError::new(ErrorCode::SessionExpired)
                .with_detail(format!("session {id} has already ended")));
        }
        let owned: Vec<String> = self.tree.ephemerals_of(id).rev().cloned().collect();
        for path in owned {
            self.remove_node(&path);
        }
        if let Some(session) = self.tree.sessions.remove(&id) {
            self.tree.release(&session.principal, Usage { sessions: 1, ..Usage::default() });
        }
        self.ended_sessions.push(id);
        Ok(())
    }

    fn multi(&mut self, ops: &[MultiOp]) -> Result<Reply, ApiError> {
        if ops.len() > MULTI_OPS_MAX {
            return Err(ApiError::new(ErrorCode::InvalidArgument)
                .with_detail(format!("multi of {} operations, limit {MULTI_OPS_MAX}", ops.len())));
        }
        let mut results = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            let result = match op {
                MultiOp::Create(request) => {
                    self.create(request).map(|(path, stat)| OpResult::Created { path, stat })
                }
                MultiOp::Set(request) => self.set(request).map(|stat| OpResult::Set { stat }),
                MultiOp::Delete(request) => self.delete(request).map(|()| OpResult::Deleted {}),
                MultiOp::Check { path, version } => {
                    self.check(path, *version).map(|()| OpResult::Checked {})
                }
            };
            match result {
                Ok(result) => results.push(MultiResult::Ok(result)),
                Err(error) => {
                    let mut results: Vec<MultiResult> = (0..ops.len())
                        .map(|_| MultiResult::Error(ApiError::new(ErrorCode::RolledBack)))
                        .collect();
                    results[index] = MultiResult::Error(error);
                    return Ok(Reply::Multi { results });
                }
            }
        }
        Ok(Reply::Multi { results })
    }

    pub(super) fn create(
        &mut self,
        request: &CreateRequest,
    ) -> Result<(String, cairn_wire::Stat), ApiError> {
        let given = request.path.as_str();
        if request.sequential {
            path::validate_sequential_prefix(given)?;
        } else {
            path::validate(given)?;
        }
        check_data_size(given, &request.data)?;
        self.check_reserved(given)?;
        let kind = node_kind(request)?;
        // A sequential prefix ending in '/' makes the counter the whole name.
        let (parent_path, name_prefix) = match given.strip_suffix('/') {
            Some("") => ("/", ""),
            Some(parent) => (parent, ""),
            None => (path::parent(given), path::name(given)),
        };
        if given == "/" && !request.sequential {
            return Err(ApiError::at(ErrorCode::NodeExists, "/"));
        }
        let Some(parent) = self.tree.nodes.get(parent_path) else {
            let missing = ApiError::at(ErrorCode::NoNode, parent_path)
                .with_detail(format!("parent of {given}"));
            return Err(self.absent(parent_path, missing));
        };
        self.require(&parent.acl, CREATE, given)?;
        if parent.kind == NodeKind::Ephemeral {
            return Err(ApiError::at(ErrorCode::NoChildrenForEphemerals, parent_path)
                .with_detail(format!("parent of {given}")));
        }
        let owner = match kind {
            NodeKind::Ephemeral => {
                let session = self.session.ok_or_else(|| {
                    ApiError::at(ErrorCode::NoSession, given)
                        .with_detail("an ephemeral znode needs a session")
                })?;
                if !self.tree.sessions.contains_key(&session) {
                    return Err(ApiError::at(ErrorCode::SessionExpired, given)
                        .with_detail(format!("session {session} has ended")));
                }
                Some(session)
            }
            _ => None,
        };
        // As ZooKeeper: the sequence number is the parent's cversion, which counts every child
        // ever added or removed, so a number is never reused under one parent.
        let name = if request.sequential {
            format!("{name_prefix}{:010}", parent.cversion)
        } else {
            name_prefix.to_string()
        };
        let cversion = parent.cversion.checked_add(1).ok_or_else(|| {
            ApiError::at(ErrorCode::SequenceOverflow, parent_path)
                .with_detail("the parent's child counter is exhausted")
        })?;
        let path = path::join(parent_path, &name);
        if path.len() > PATH_BYTES_MAX {
            return Err(ApiError::at(ErrorCode::InvalidPath, path)
                .with_detail(format!("path over {PATH_BYTES_MAX} bytes")));
        }
        if self.tree.nodes.contains_key(&path) {
            return Err(ApiError::at(ErrorCode::NodeExists, path));
        }

        let acl = self.caller.acl_to_store(request.acl.as_deref(), &parent.acl, &path)?;
        let bytes = stored_bytes_of(&path, &request.data, &acl);
        self.tree.check_room(&path, 1, bytes)?;
        self.check_quota(&self.caller.name, 1, bytes, &path)?;

        self.add_child(parent_path, &name, cversion);
        let creator = self.caller.name.clone();
        let mut node =
            Znode::new(request.data.clone(), kind, self.zxid, self.time_ms, acl.clone(), creator);
        if let Some(owner) = owner {
            node.ephemeral_owner = owner.0;
        }
        let stat = node.stat();
        self.tree.index(&path, &node);
        self.tree.nodes.insert(path.clone(), node);
        self.undo.push(Undo::Created { path: path.clone() });
        let acl = self.tree.governing_acl(&path, &acl).clone();
        self.changes.push(Change { kind: EventKind::Created, path: path.clone(), acl });
        Ok((path, stat))
    }

    pub(super) fn set(&mut self, request: &SetRequest) -> Result<cairn_wire::Stat, ApiError> {
        let path = request.path.as_str();
        path::validate(path)?;
        check_data_size(path, &request.data)?;
        self.check_reserved(path)?;
        let Some(node) = self.tree.nodes.get(path) else {
            return Err(self.absent(path, ApiError::at(ErrorCode::NoNode, path)));
        };
        self.require(&node.acl, WRITE, path)?;
        check_version(path, node, request.version)?;
        let growth = request.data.len().saturating_sub(node.data.len()) as u64;
        self.tree.check_room(path, 0, growth)?;
        // The bytes count against whoever created the znode.
        self.check_quota(&node.creator, 0, growth, path)?;
        let (creator, acl) =
            (node.creator.clone(), self.tree.governing_acl(path, &node.acl).clone());
        let before = node.data.len() as u64;
        self.tree.resize(&creator, before, request.data.len() as u64);
        let node =
            self.tree.nodes.get_mut(path).ok_or_else(|| ApiError::at(ErrorCode::NoNode, path))?;
        let data = std::mem::replace(&mut node.data, Arc::new(request.data.clone()));
        self.undo.push(Undo::Set {
            path: path.to_string(),
            data,
            version: node.version,
            mzxid: node.mzxid,
            mtime: node.mtime,
        });
        // ZooKeeper's version wraps around too; an expected version still has to match exactly.
        node.version = node.version.wrapping_add(1);
        node.mzxid = self.zxid;
        node.mtime = self.time_ms;
        let stat = node.stat();
        self.changes.push(Change { kind: EventKind::DataChanged, path: path.to_string(), acl });
        Ok(stat)
    }

    pub(super) fn delete(&mut self, request: &DeleteRequest) -> Result<(), ApiError> {
        let path = request.path.as_str();
        path::validate(path)?;
        if path == "/" {
            return Err(ApiError::at(ErrorCode::InvalidArgument, path)
                .with_detail("the root cannot be deleted"));
        }
        self.check_reserved(path)?;
        let Some(node) = self.tree.nodes.get(path) else {
            return Err(self.absent(path, ApiError::at(ErrorCode::NoNode, path)));
        };
        if let Some(parent) = self.tree.nodes.get(path::parent(path)) {
            self.require(&parent.acl, DELETE, path)?;
        }
        check_version(path, node, request.version)?;
        if !node.children.is_empty() {
            return Err(ApiError::at(ErrorCode::NotEmpty, path)
                .with_detail(format!("{} children", node.children.len())));
        }
        self.remove_node(path);
        Ok(())
    }

    fn check(&mut self, path: &str, version: u32) -> Result<(), ApiError> {
        path::validate(path)?;
        let Some(node) = self.tree.nodes.get(path) else {
            return Err(self.absent(path, ApiError::at(ErrorCode::NoNode, path)));
        };
        self.require(&node.acl, READ, path)?;
        check_version(path, node, Some(version))
    }

    /// Deletes every TTL znode whose time has come. Deepest first, so a TTL parent whose only
    /// children were TTL znodes can go in the same entry.
    fn reap_ttl(&mut self) {
        let due: Vec<String> = self.tree.ttl_nodes.iter().rev().cloned().collect();
        for path in due {
            if self.tree.nodes.get(&path).is_some_and(|node| ttl_expired(node, self.time_ms)) {
                self.remove_node(&path);
            }
        }
    }

    /// Deletes the containers that lost their last child in this command, and their container
    /// parents that become empty in turn.
    pub(super) fn delete_emptied_containers(&mut self) {
        while let Some(path) = self.emptied.pop() {
            let empty_container =
                self.tree.nodes.get(&path).is_some_and(|node| {
                    node.kind == NodeKind::Container && node.children.is_empty()
                });
            if empty_container && path != "/" {
                self.remove_node(&path);
            }
        }
    }

    /// Removes a childless znode (the caller checked) and unlinks it from its parent.
    fn remove_node(&mut self, path: &str) {
        let Some(node) = self.tree.nodes.remove(path) else {
            return;
        };
        debug_assert!(node.children.is_empty(), "removing {path} with children");
        self.tree.unindex(path, &node);
        let acl = self.tree.governing_acl(path, &node.acl).clone();
        self.undo.push(Undo::Deleted { path: path.to_string(), node });
        self.changes.push(Change { kind: EventKind::Deleted, path: path.to_string(), acl });
        let parent_path = path::parent(path);
        let name = path::name(path);
        if let Some(parent) = self.tree.nodes.get_mut(parent_path) {
            self.undo.push(Undo::Child {
                parent: parent_path.to_string(),
                name: name.to_string(),
                added: false,
                cversion: parent.cversion,
                pzxid: parent.pzxid,
            });
            parent.children.remove(name);
            parent.cversion = parent.cversion.saturating_add(1);
            parent.pzxid = self.zxid;
            if parent.kind == NodeKind::Container && parent.children.is_empty() {
                self.emptied.push(parent_path.to_string());
            }
            let acl = parent.acl.clone();
            let acl = self.tree.governing_acl(parent_path, &acl).clone();
            let change = Change { kind: EventKind::ChildrenChanged, path: parent_path.into(), acl };
            self.changes.push(change);
        }
    }

    fn add_child(&mut self, parent_path: &str, name: &str, cversion: u32) {
        if let Some(parent) = self.tree.nodes.get_mut(parent_path) {
            self.undo.push(Undo::Child {
                parent: parent_path.to_string(),
                name: name.to_string(),
                added: true,
                cversion: parent.cversion,
                pzxid: parent.pzxid,
            });
            parent.children.insert(name.to_string());
            parent.cversion = cversion;
            parent.pzxid = self.zxid;
            let acl = parent.acl.clone();
            let acl = self.tree.governing_acl(parent_path, &acl).clone();
            let change = Change { kind: EventKind::ChildrenChanged, path: parent_path.into(), acl };
            self.changes.push(change);
        }
    }

    /// Undoes every mutation of this command, newest first.
    pub(super) fn rollback(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Created { path } => {
                    if let Some(node) = self.tree.nodes.remove(&path) {
                        self.tree.unindex(&path, &node);
                    }
                }
                Undo::Deleted { path, node } => {
                    self.tree.index(&path, &node);
                    self.tree.nodes.insert(path, node);
                }
                Undo::Set { path, data, version, mzxid, mtime } => {
                    if let Some(node) = self.tree.nodes.get_mut(&path) {
                        let (creator, now) = (node.creator.clone(), node.data.len() as u64);
                        node.data = data;
                        node.version = version;
                        node.mzxid = mzxid;
                        node.mtime = mtime;
                        let before = node.data.len() as u64;
                        self.tree.resize(&creator, now, before);
                    }
                }
                Undo::Child { parent, name, added, cversion, pzxid } => {
                    if let Some(node) = self.tree.nodes.get_mut(&parent) {
                        if added {
                            node.children.remove(&name);
                        } else {
                            node.children.insert(name);
                        }
                        node.cversion = cversion;
                        node.pzxid = pzxid;
                    }
                }
            }
        }
        self.emptied.clear();
        self.changes.clear();
    }
}

impl DataTree {
    /// Adds a znode to the derived indexes (TTL znodes, each session's ephemerals) and its
    /// bytes to the tree's count.
    fn index(&mut self, path: &str, node: &Znode) {
        let bytes = stored_bytes_of(path, &node.data, &node.acl);
        self.stored_bytes += bytes;
        let held = self.usage.entry(node.creator.clone()).or_default();
        held.znodes += 1;
        held.bytes += bytes;
        match node.kind {
            NodeKind::Ttl { .. } => {
                self.ttl_nodes.insert(path.to_string());
            }
            NodeKind::Ephemeral => {
                let owner = SessionId(node.ephemeral_owner);
                self.ephemerals.entry(owner).or_default().insert(path.to_string());
            }
            NodeKind::Persistent | NodeKind::Container => {}
        }
    }

    /// Removes a znode from the derived indexes and its bytes from the tree's count.
    fn unindex(&mut self, path: &str, node: &Znode) {
        let bytes = stored_bytes_of(path, &node.data, &node.acl);
        self.stored_bytes -= bytes;
        self.release(&node.creator, Usage { znodes: 1, bytes, ..Usage::default() });
        match node.kind {
            NodeKind::Ttl { .. } => {
                self.ttl_nodes.remove(path);
            }
            NodeKind::Ephemeral => {
                let owner = SessionId(node.ephemeral_owner);
                if let Some(paths) = self.ephemerals.get_mut(&owner) {
                    paths.remove(path);
                    if paths.is_empty() {
                        self.ephemerals.remove(&owner);
                    }
                }
            }
            NodeKind::Persistent | NodeKind::Container => {}
        }
    }
}

impl DataTree {
    /// Takes what `name` no longer holds off its count.
    fn release(&mut self, name: &str, gone: Usage) {
        if let Some(held) = self.usage.get_mut(name) {
            held.znodes = held.znodes.saturating_sub(gone.znodes);
            held.bytes = held.bytes.saturating_sub(gone.bytes);
            held.sessions = held.sessions.saturating_sub(gone.sessions);
            if *held == Usage::default() {
                self.usage.remove(name);
            }
        }
    }

    /// A znode of `creator`'s went from `from` to `to` bytes of data (or of ACL).
    fn resize(&mut self, creator: &std::sync::Arc<str>, from: u64, to: u64) {
        self.stored_bytes = (self.stored_bytes + to).saturating_sub(from);
        let held = self.usage.entry(creator.clone()).or_default();
        held.bytes = (held.bytes + to).saturating_sub(from);
    }
}

fn node_kind(request: &CreateRequest) -> Result<NodeKind, ApiError> {
    let invalid =
        |why: &str| ApiError::at(ErrorCode::InvalidArgument, &request.path).with_detail(why);
    match (request.mode, request.ttl_ms) {
        (CreateMode::Persistent, None) => Ok(NodeKind::Persistent),
        (CreateMode::Container, None) if request.sequential => {
            Err(invalid("a container cannot be sequential"))
        }
        (CreateMode::Container, None) => Ok(NodeKind::Container),
        (CreateMode::Ttl, Some(ttl_ms)) if (1..=TTL_MS_MAX).contains(&ttl_ms) => {
            Ok(NodeKind::Ttl { ttl_ms })
        }
        (CreateMode::Ttl, Some(ttl_ms)) => {
            Err(invalid(&format!("ttl of {ttl_ms} ms is outside 1..={TTL_MS_MAX}")))
        }
        (CreateMode::Ttl, None) => Err(invalid("a TTL znode needs ttl_ms")),
        (CreateMode::Ephemeral, None) => Ok(NodeKind::Ephemeral),
        (_, Some(_)) => Err(invalid("ttl_ms is only for TTL znodes")),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

fn check_data_size(path: &str, data: &[u8]) -> Result<(), ApiError> {
    if data.len() > ZNODE_DATA_BYTES_MAX {
        return Err(ApiError::at(ErrorCode::TooLarge, path)
            .with_detail(format!("{} bytes of data, limit {ZNODE_DATA_BYTES_MAX}", data.len())));
    }
    Ok(())
}

fn check_version(path: &str, node: &Znode, expected: Option<u32>) -> Result<(), ApiError> {
    match expected {
        Some(version) if version != node.version => Err(ApiError::at(ErrorCode::BadVersion, path)
            .with_detail(format!("expected version {version}, found {}", node.version))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use cairn_wire::Stat;

    use super::*;
    use crate::store::{Principal, SessionId};

    fn request(path: &str) -> CreateRequest {
        CreateRequest {
            path: path.into(),
            data: path.as_bytes().to_vec(),
            mode: CreateMode::Persistent,
            sequential: false,
            ttl_ms: None,
            acl: None,
        }
    }

    fn create(path: &str) -> Action {
        Action::Create(request(path))
    }

    fn create_as(path: &str, mode: CreateMode, sequential: bool, ttl_ms: Option<u64>) -> Action {
        Action::Create(CreateRequest {
            path: path.into(),
            data: Vec::new(),
            mode,
            sequential,
            ttl_ms,
            acl: None,
        })
    }

    fn set(path: &str, data: &str, version: Option<u32>) -> Action {
        Action::Set(SetRequest { path: path.into(), data: data.into(), version })
    }

    fn delete(path: &str, version: Option<u32>) -> Action {
        Action::Delete(DeleteRequest { path: path.into(), version })
    }

    fn multi(ops: Vec<Action>) -> Action {
        Action::Multi(
            ops.into_iter()
                .map(|action| match action {
                    Action::Create(r) => MultiOp::Create(r),
                    Action::Set(r) => MultiOp::Set(r),
                    Action::Delete(r) => MultiOp::Delete(r),
                    other => panic!("{other:?} is not a multi op"),
                })
                .collect(),
        )
    }

    fn check(path: &str, version: u32) -> MultiOp {
        MultiOp::Check { path: path.into(), version }
    }

    /// Applies `actions` at zxids 1, 2, ... and times 1000, 2000, ..., checking every invariant
    /// after each, and returns the tree with the last reply.
    fn run(actions: &[Action]) -> (DataTree, Result<Reply, ApiError>) {
        let mut tree = DataTree::new();
        let mut last = Ok(Reply::Synced {});
        for (i, action) in actions.iter().enumerate() {
            let zxid = i as u64 + 1;
            let before = tree.clone();
            last = tree.apply(
                zxid,
                zxid * 1000,
                &Write::system(action.clone()),
                &mut Effects::default(),
            );
            tree.check_invariants().unwrap_or_else(|e| panic!("after {action:?}: {e}"));
            let failed = match &last {
                Err(_) => true,
                Ok(Reply::Multi { results }) => {
                    results.iter().any(|r| matches!(r, MultiResult::Error(_)))
                }
                Ok(_) => false,
            };
            if failed {
                assert_eq!(tree.nodes, before.nodes, "a refused {action:?} changed the tree");
            }
        }
        (tree, last)
    }

    fn stat(tree: &DataTree, path: &str) -> Stat {
        tree.exists(path).expect("valid path").unwrap_or_else(|| panic!("{path} missing"))
    }

    fn code(result: &Result<Reply, ApiError>) -> Option<ErrorCode> {
        result.as_ref().err().map(|e| e.code)
    }

    enum Expect {
        Ok,
        Error(ErrorCode),
        Created(&'static str),
        MultiFailedAt(usize, ErrorCode),
    }

    struct Case {
        name: &'static str,
        actions: Vec<Action>,
        expect: Expect,
        /// Paths that must exist afterwards, and paths that must not.
        present: &'static [&'static str],
        absent: &'static [&'static str],
    }

    #[test]
    fn table() {
        let ttl = |path: &str, ttl_ms| create_as(path, CreateMode::Ttl, false, Some(ttl_ms));
        let container = |path: &str| create_as(path, CreateMode::Container, false, None);
        let seq = |path: &str| create_as(path, CreateMode::Persistent, true, None);
        let big = Action::Create(CreateRequest {
            path: "/big".into(),
            data: vec![0; ZNODE_DATA_BYTES_MAX + 1],
            mode: CreateMode::Persistent,
            sequential: false,
            ttl_ms: None,
            acl: None,
        });
        let cases = vec![
            Case {
                name: "create under root",
                actions: vec![create("/a")],
                expect: Expect::Created("/a"),
                present: &["/a"],
                absent: &[],
            },
            Case {
                name: "create nested",
                actions: vec![create("/a"), create("/a/b")],
                expect: Expect::Created("/a/b"),
                present: &["/a/b"],
                absent: &[],
            },
            Case {
                name: "create without parent",
                actions: vec![create("/a/b")],
                expect: Expect::Error(ErrorCode::NoNode),
                present: &[],
                absent: &["/a/b"],
            },
            Case {
                name: "create twice",
                actions: vec![create("/a"), create("/a")],
                expect: Expect::Error(ErrorCode::NodeExists),
                present: &["/a"],
                absent: &[],
            },
            Case {
                name: "create root",
                actions: vec![create("/")],
                expect: Expect::Error(ErrorCode::NodeExists),
                present: &["/"],
                absent: &[],
            },
            Case {
                name: "create relative path",
                actions: vec![create("a")],
                expect: Expect::Error(ErrorCode::InvalidPath),
                present: &[],
                absent: &[],
            },
            Case {
                name: "create trailing slash",
                actions: vec![create("/a/")],
                expect: Expect::Error(ErrorCode::InvalidPath),
                present: &[],
                absent: &[],
            },
            Case {
                name: "create data too large",
                actions: vec![big],
                expect: Expect::Error(ErrorCode::TooLarge),
                present: &[],
                absent: &["/big"],
            },
            Case {
                name: "sequential first is zero",
                actions: vec![create("/q"), seq("/q/item-")],
                expect: Expect::Created("/q/item-0000000000"),
                present: &[],
                absent: &[],
            },
            Case {
                name: "sequential counts",
                actions: vec![create("/q"), seq("/q/item-"), seq("/q/item-")],
                expect: Expect::Created("/q/item-0000000001"),
                present: &["/q/item-0000000000"],
                absent: &[],
            },
            Case {
                name: "sequential counts every child change",
                actions: vec![create("/q"), create("/q/x"), delete("/q/x", None), seq("/q/")],
                expect: Expect::Created("/q/0000000002"),
                present: &[],
                absent: &["/q/x"],
            },
            Case {
                name: "sequential under root",
                actions: vec![seq("/")],
                expect: Expect::Created("/0000000000"),
                present: &[],
                absent: &[],
            },
            Case {
                name: "set right version",
                actions: vec![create("/a"), set("/a", "x", Some(0)), set("/a", "y", Some(1))],
                expect: Expect::Ok,
                present: &["/a"],
                absent: &[],
            },
            Case {
                name: "set wrong version",
                actions: vec![create("/a"), set("/a", "x", Some(3))],
                expect: Expect::Error(ErrorCode::BadVersion),
                present: &[],
                absent: &[],
            },
            Case {
                name: "set missing",
                actions: vec![set("/a", "x", None)],
                expect: Expect::Error(ErrorCode::NoNode),
                present: &[],
                absent: &[],
            },
            Case {
                name: "delete wrong version",
                actions: vec![create("/a"), delete("/a", Some(1))],
                expect: Expect::Error(ErrorCode::BadVersion),
                present: &["/a"],
                absent: &[],
            },
            Case {
                name: "delete right version",
                actions: vec![create("/a"), delete("/a", Some(0))],
                expect: Expect::Ok,
                present: &[],
                absent: &["/a"],
            },
            Case {
                name: "delete with children",
                actions: vec![create("/a"), create("/a/b"), delete("/a", None)],
                expect: Expect::Error(ErrorCode::NotEmpty),
                present: &["/a", "/a/b"],
                absent: &[],
            },
            Case {
                name: "delete root",
                actions: vec![delete("/", None)],
                expect: Expect::Error(ErrorCode::InvalidArgument),
                present: &["/"],
                absent: &[],
            },
            Case {
                name: "delete missing",
                actions: vec![delete("/a", None)],
                expect: Expect::Error(ErrorCode::NoNode),
                present: &[],
                absent: &[],
            },
            Case {
                name: "container goes with its last child",
                actions: vec![
                    container("/c"),
                    create("/c/x"),
                    create("/c/y"),
                    delete("/c/x", None),
                    delete("/c/y", None),
                ],
                expect: Expect::Ok,
                present: &[],
                absent: &["/c"],
            },
            Case {
                name: "container stays while a child is left",
                actions: vec![
                    container("/c"),
                    create("/c/x"),
                    create("/c/y"),
                    delete("/c/x", None),
                ],
                expect: Expect::Ok,
                present: &["/c", "/c/y"],
                absent: &[],
            },
            Case {
                name: "nested containers cascade",
                actions: vec![
                    container("/c"),
                    container("/c/d"),
                    create("/c/d/x"),
                    delete("/c/d/x", None),
                ],
                expect: Expect::Ok,
                present: &[],
                absent: &["/c/d", "/c"],
            },
            Case {
                name: "container that never had children stays",
                actions: vec![container("/c")],
                expect: Expect::Created("/c"),
                present: &["/c"],
                absent: &[],
            },
            Case {
                name: "sequential container refused",
                actions: vec![create_as("/c", CreateMode::Container, true, None)],
                expect: Expect::Error(ErrorCode::InvalidArgument),
                present: &[],
                absent: &[],
            },
            Case {
                name: "ttl needs ttl_ms",
                actions: vec![create_as("/t", CreateMode::Ttl, false, None)],
                expect: Expect::Error(ErrorCode::InvalidArgument),
                present: &[],
                absent: &["/t"],
            },
            Case {
                name: "ttl of zero refused",
                actions: vec![ttl("/t", 0)],
                expect: Expect::Error(ErrorCode::InvalidArgument),
                present: &[],
                absent: &["/t"],
            },
            Case {
                name: "ttl_ms only for ttl",
                actions: vec![create_as("/p", CreateMode::Persistent, false, Some(5))],
                expect: Expect::Error(ErrorCode::InvalidArgument),
                present: &[],
                absent: &["/p"],
            },
            // Created at time 1000; reaped at 2000 (1000 ms later) but not at 1999.
            Case {
                name: "ttl reaped when due",
                actions: vec![ttl("/t", 1000), Action::ReapTtl],
                expect: Expect::Ok,
                present: &[],
                absent: &["/t"],
            },
            Case {
                name: "ttl kept before due",
                actions: vec![ttl("/t", 1001), Action::ReapTtl],
                expect: Expect::Ok,
                present: &["/t"],
                absent: &[],
            },
            Case {
                name: "ttl kept while it has children",
                actions: vec![ttl("/t", 1), create("/t/x"), Action::ReapTtl],
                expect: Expect::Ok,
                present: &["/t", "/t/x"],
                absent: &[],
            },
            Case {
                name: "ttl change restarts the clock",
                actions: vec![ttl("/t", 1500), set("/t", "x", None), Action::ReapTtl],
                expect: Expect::Ok,
                present: &["/t"],
                absent: &[],
            },
            Case {
                name: "ttl children reaped before parents",
                actions: vec![ttl("/t", 1), ttl("/t/u", 1), Action::ReapTtl],
                expect: Expect::Ok,
                present: &[],
                absent: &["/t/u", "/t"],
            },
            Case {
                name: "multi applies all",
                actions: vec![multi(vec![create("/m"), create("/m/a"), set("/m", "x", Some(0))])],
                expect: Expect::Ok,
                present: &["/m", "/m/a"],
                absent: &[],
            },
            Case {
                name: "multi failing check applies nothing",
                actions: vec![
                    create("/k"),
                    Action::Multi(vec![
                        MultiOp::Create(CreateRequest {
                            path: "/m".into(),
                            data: vec![],
                            mode: CreateMode::Persistent,
                            sequential: false,
                            ttl_ms: None,
                            acl: None,
                        }),
                        MultiOp::Delete(DeleteRequest { path: "/k".into(), version: None }),
                        check("/k", 0),
                    ]),
                ],
                expect: Expect::MultiFailedAt(2, ErrorCode::NoNode),
                present: &["/k"],
                absent: &["/m"],
            },
            Case {
                name: "multi failing set restores data",
                actions: vec![
                    create("/k"),
                    multi(vec![set("/k", "x", None), set("/k", "y", Some(0))]),
                ],
                expect: Expect::MultiFailedAt(1, ErrorCode::BadVersion),
                present: &["/k"],
                absent: &[],
            },
            Case {
                name: "multi sees its own writes",
                actions: vec![multi(vec![
                    create("/m"),
                    create("/m/a"),
                    delete("/m/a", None),
                    delete("/m", None),
                ])],
                expect: Expect::Ok,
                present: &[],
                absent: &["/m"],
            },
            Case {
                name: "multi container refill in one entry",
                actions: vec![
                    container("/c"),
                    create("/c/x"),
                    multi(vec![delete("/c/x", None), create("/c/y")]),
                ],
                expect: Expect::Ok,
                present: &["/c", "/c/y"],
                absent: &["/c/x"],
            },
            Case {
                name: "empty multi",
                actions: vec![Action::Multi(vec![])],
                expect: Expect::Ok,
                present: &[],
                absent: &[],
            },
        ];
        for case in cases {
            let (tree, result) = run(&case.actions);
            match (&case.expect, &result) {
                (Expect::Ok, Ok(reply)) => {
                    if let Reply::Multi { results } = reply {
                        assert!(
                            results.iter().all(|r| matches!(r, MultiResult::Ok(_))),
                            "{}: {results:?}",
                            case.name
                        );
                    }
                }
                (Expect::Error(expected), _) => {
                    assert_eq!(code(&result), Some(*expected), "{}", case.name)
                }
                (Expect::Created(expected), Ok(Reply::Created { path, .. })) => {
                    assert_eq!(path, expected, "{}", case.name)
                }
                (Expect::MultiFailedAt(index, expected), Ok(Reply::Multi { results })) => {
                    for (i, r) in results.iter().enumerate() {
                        let want = if i == *index { *expected } else { ErrorCode::RolledBack };
                        assert!(
                            matches!(r, MultiResult::Error(e) if e.code == want),
                            "{}: result {i} is {r:?}",
                            case.name
                        );
                    }
                }
                (_, other) => panic!("{}: unexpected {other:?}", case.name),
            }
            for path in case.present {
                assert!(
                    tree.exists(path).expect("valid").is_some(),
                    "{}: {path} should exist",
                    case.name
                );
            }
            for path in case.absent {
                assert!(
                    tree.exists(path).expect("valid").is_none(),
                    "{}: {path} should be gone",
                    case.name
                );
            }
        }
    }

    /// The tree's node-wide bounds hold against every kind of write; deletes make room.
    #[test]
    fn the_tree_stays_within_its_limits() {
        use crate::store::TreeLimits;
        // The root (1 byte of path) and two znodes of 2 + 2 bytes fit; a third does not.
        let mut tree = DataTree::new().with_limits(TreeLimits { znodes_max: 3, bytes_max: 12 });
        let mut zxid = 0;
        let mut apply = |tree: &mut DataTree, action: Action| {
            zxid += 1;
            let reply = tree.apply(zxid, zxid, &Write::system(action), &mut Effects::default());
            tree.check_invariants().expect("invariants");
            match reply {
                Ok(Reply::Multi { results }) => results.iter().find_map(|result| match result {
                    MultiResult::Error(error) if error.code != ErrorCode::RolledBack => {
                        Some(error.code)
                    }
                    _ => None,
                }),
                Ok(_) => None,
                Err(error) => Some(error.code),
            }
        };
        assert_eq!(apply(&mut tree, create("/a")), None);
        assert_eq!(apply(&mut tree, create("/b")), None);
        assert_eq!(tree.size(), (3, 9));
        assert_eq!(apply(&mut tree, create("/c")), Some(ErrorCode::QuotaExceeded));
        // A multi that would pass the bound writes nothing.
        assert_eq!(apply(&mut tree, delete("/b", None)), None);
        let both = multi(vec![create("/c"), create("/d")]);
        assert_eq!(apply(&mut tree, both), Some(ErrorCode::QuotaExceeded));
        assert_eq!(tree.size(), (2, 5));
        // Growing data counts; shrinking it always goes through.
        assert_eq!(apply(&mut tree, set("/a", "1234567", None)), None);
        assert_eq!(tree.size(), (2, 10));
        assert_eq!(
            apply(&mut tree, set("/a", "12345678901", None)),
            Some(ErrorCode::QuotaExceeded)
        );
        assert_eq!(apply(&mut tree, set("/a", "", None)), None);
        assert_eq!(tree.size(), (2, 3));
    }

    #[test]
    fn stat_follows_zookeeper() {
        let (tree, _) =
            run(&[create("/a"), create("/a/b"), set("/a", "xyz", None), delete("/a/b", None)]);
        let a = stat(&tree, "/a");
        assert_eq!((a.czxid, a.mzxid, a.pzxid), (1, 3, 4));
        assert_eq!((a.ctime, a.mtime), (1000, 3000));
        assert_eq!((a.version, a.cversion, a.aversion), (1, 2, 0));
        assert_eq!((a.data_length, a.num_children, a.ephemeral_owner), (3, 0, 0));
        let root = stat(&tree, "/");
        assert_eq!((root.cversion, root.pzxid, root.num_children), (1, 1, 1));
    }

    #[test]
    fn time_never_goes_back() {
        let mut tree = DataTree::new();
        let mut effects = Effects::default();
        tree.apply(1, 5000, &Write::system(create("/a")), &mut effects).expect("create");
        // A new leader whose clock is behind stamps an earlier time.
        tree.apply(2, 4000, &Write::system(set("/a", "x", None)), &mut effects).expect("set");
        assert_eq!(stat(&tree, "/a").mtime, 5000);
        tree.check_invariants().expect("invariants");
    }

    #[test]
    fn actions_of_one_entry_share_its_zxid_and_stand_alone() {
        let mut tree = DataTree::new();
        let writes = [create("/a"), create("/a"), create("/a/b"), set("/a", "x", Some(0))];
        let command =
            Command { time_ms: 1000, writes: writes.into_iter().map(Write::system).collect() };
        let replies = tree
            .apply_command(7, &command, &mut Effects::default(), &crate::store::recipes::NoRecipes)
            .expect("no fault");
        assert!(replies[0].is_ok());
        assert_eq!(replies[1].as_ref().err().map(|e| e.code), Some(ErrorCode::NodeExists));
        assert!(replies[2].is_ok() && replies[3].is_ok(), "a refused action undoes no other");
        let a = stat(&tree, "/a");
        assert_eq!((a.czxid, a.mzxid, a.pzxid, a.version), (7, 7, 7, 1));
        tree.check_invariants().expect("invariants");
    }

    #[test]
    fn ttl_due_matches_reap() {
        let (tree, _) = run(&[create_as("/t", CreateMode::Ttl, false, Some(500))]);
        assert!(!tree.ttl_due(1499));
        assert!(tree.ttl_due(1500));
    }

    #[test]
    fn sessions_own_their_ephemerals() {
        let mut tree = DataTree::new();
        let mut zxid = 0;
        let mut effects = Effects::default();
        let mut apply =
            |tree: &mut DataTree, session: Option<u64>, action: Action, effects: &mut Effects| {
                zxid += 1;
                let write =
                    Write { session: session.map(SessionId), principal: Principal::System, action };
                let reply = tree.apply(zxid, zxid * 1000, &write, effects);
                tree.check_invariants().unwrap_or_else(|e| panic!("after {write:?}: {e}"));
                reply
            };
        let ephemeral = |path: &str| create_as(path, CreateMode::Ephemeral, false, None);
        let open = Action::OpenSession { timeout_ms: 1000, secret_hash: SecretHash::of(7) };
        let reply = apply(&mut tree, None, open, &mut effects);
        assert_eq!(reply, Ok(Reply::Session { session_id: 1, secret: 0, timeout_ms: 1000 }));
        assert_eq!(tree.session(SessionId(1)).map(|s| s.secret_hash), Some(SecretHash::of(7)));

        assert!(
            apply(
                &mut tree,
                None,
                create_as("/c", CreateMode::Container, false, None),
                &mut effects
            )
            .is_ok()
        );
        assert!(apply(&mut tree, Some(1), ephemeral("/c/e"), &mut effects).is_ok());
        assert!(apply(&mut tree, Some(1), ephemeral("/e"), &mut effects).is_ok());
        assert_eq!(stat(&tree, "/e").ephemeral_owner, 1);
        let code_of = |reply: Result<Reply, ApiError>| reply.err().map(|e| e.code);
        assert_eq!(
            code_of(apply(&mut tree, None, ephemeral("/x"), &mut effects)),
            Some(ErrorCode::NoSession)
        );
        assert_eq!(
            code_of(apply(&mut tree, Some(9), ephemeral("/x"), &mut effects)),
            Some(ErrorCode::SessionExpired)
        );
        assert_eq!(
            code_of(apply(&mut tree, Some(1), create("/e/child"), &mut effects)),
            Some(ErrorCode::NoChildrenForEphemerals)
        );
        assert_eq!(tree.ephemerals_of(SessionId(1)).cloned().collect::<Vec<_>>(), ["/c/e", "/e"]);

        // A snapshot keeps the session and rebuilds its index of ephemerals.
        let image = tree.to_image().expect("encodes");
        assert_eq!(DataTree::from_image(&image).expect("loads"), tree);

        let mut ended = Effects::default();
        let expire = Action::ExpireSession { session: SessionId(1) };
        assert_eq!(apply(&mut tree, None, expire.clone(), &mut ended), Ok(Reply::Synced {}));
        assert_eq!(ended.ended_sessions, vec![SessionId(1)]);
        for path in ["/e", "/c/e", "/c"] {
            assert!(tree.exists(path).expect("valid").is_none(), "{path} outlived its session");
            let deleted = |c: &Change| c.kind == EventKind::Deleted && c.path == path;
            assert!(ended.changes.iter().any(deleted), "{path}");
        }
        assert!(tree.session(SessionId(1)).is_none());
        assert_eq!(
            code_of(apply(&mut tree, None, expire, &mut effects)),
            Some(ErrorCode::SessionExpired)
        );
        assert_eq!(
            code_of(apply(&mut tree, Some(1), Action::CloseSession, &mut effects)),
            Some(ErrorCode::SessionExpired)
        );

        let too_short = Action::OpenSession { timeout_ms: 1, secret_hash: SecretHash::of(0) };
        assert_eq!(
            code_of(apply(&mut tree, None, too_short, &mut effects)),
            Some(ErrorCode::InvalidArgument)
        );
        // Ids are never reused.
        let reply = apply(
            &mut tree,
            None,
            Action::OpenSession { timeout_ms: 1000, secret_hash: SecretHash::of(1) },
            &mut effects,
        );
        assert!(matches!(reply, Ok(Reply::Session { session_id: 2, .. })));
    }

    #[test]
    fn changes_name_what_watches_hear_of() {
        let mut tree = DataTree::new();
        let mut effects = Effects::default();
        for (zxid, action) in
            [create("/a"), set("/a", "x", None), create("/a/b"), delete("/a/b", None)]
                .into_iter()
                .enumerate()
        {
            tree.apply(zxid as u64 + 1, 0, &Write::system(action), &mut effects).expect("applies");
        }
        let expected = [
            (EventKind::ChildrenChanged, "/"),
            (EventKind::Created, "/a"),
            (EventKind::DataChanged, "/a"),
            (EventKind::ChildrenChanged, "/a"),
            (EventKind::Created, "/a/b"),
            (EventKind::Deleted, "/a/b"),
            (EventKind::ChildrenChanged, "/a"),
        ];
        let got: Vec<(EventKind, &str)> =
            effects.changes.iter().map(|c| (c.kind, c.path.as_str())).collect();
        assert_eq!(got, expected);

        // A refused multi reports no change at all.
        let mut refused = Effects::default();
        let failing = multi(vec![create("/z"), delete("/missing", None)]);
        tree.apply(9, 0, &Write::system(failing), &mut refused).expect("answers");
        assert!(refused.changes.is_empty(), "{refused:?}");
    }

    /// Random commands against the tree: invariants hold after each, refused commands change
    /// nothing, and a snapshot image loads back to the same tree.
    #[test]
    fn random_commands_keep_invariants() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let names = ["/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z"];
        let mut actions = Vec::new();
        for _ in 0..2000 {
            let path = names[next(names.len() as u64) as usize];
            let version = (next(3) > 0).then(|| next(3) as u32);
            let action = match next(8) {
                0 | 1 => create(path),
                2 => create_as(path, CreateMode::Container, false, None),
                3 => create_as(path, CreateMode::Ttl, next(2) == 0, Some(1 + next(3000))),
                4 => set(path, "v", version),
                5 => delete(path, version),
                6 => Action::ReapTtl,
                _ => multi(vec![
                    create(path),
                    set(path, "m", None),
                    delete(names[next(6) as usize], None),
                ]),
            };
            actions.push(action);
        }
        let (tree, _) = run(&actions);
        let image = tree.to_image().expect("encodes");
        let loaded = DataTree::from_image(&image).expect("loads");
        assert_eq!(loaded, tree);
    }

    /// Applies `action` as `principal` at the next zxid.
    fn apply_as(
        tree: &mut DataTree,
        principal: &Principal,
        action: Action,
    ) -> Result<Reply, ApiError> {
        let zxid = tree.last_zxid() + 1;
        let write = Write { session: None, principal: principal.clone(), action };
        let reply = tree.apply(zxid, zxid, &write, &mut Effects::default());
        tree.check_invariants().expect("invariants hold");
        reply
    }

    #[test]
    fn a_multi_with_one_op_it_may_not_do_changes_nothing_and_counts_nothing() {
        use cairn_wire::access::{ALL, READ};
        let mut tree = DataTree::new();
        let alice = Principal::Certificate("alice".into());
        let acl = vec![AclEntry::user("alice", ALL)];
        let mut app = CreateRequest { acl: Some(acl), ..request("/app") };
        app.data = Vec::new();
        apply_as(&mut tree, &Principal::System, Action::Create(app)).expect("created");
        let locked =
            CreateRequest { acl: Some(vec![AclEntry::user("alice", READ)]), ..request("/ro") };
        apply_as(&mut tree, &Principal::System, Action::Create(locked)).expect("created");
        let before = tree.clone();

        // Two creates alice may do, then one under a znode she may only read.
        let ops = vec![
            MultiOp::Create(request("/app/a")),
            MultiOp::Create(request("/app/b")),
            MultiOp::Create(request("/ro/c")),
        ];
        let Ok(Reply::Multi { results }) = apply_as(&mut tree, &alice, Action::Multi(ops)) else {
            panic!("a multi answers per operation");
        };
        assert!(matches!(&results[2], MultiResult::Error(e) if e.code == ErrorCode::NoAuth));
        assert!(tree.node("/app/a").is_none());
        assert_eq!(tree.usage("alice"), Usage::default(), "nothing left counted against alice");
        assert_eq!(tree.nodes, before.nodes);

        // Done alone, the creates count against alice, and deleting gives the room back.
        apply_as(&mut tree, &alice, create("/app/a")).expect("created");
        assert_eq!(tree.usage("alice").znodes, 1);
        apply_as(&mut tree, &alice, delete("/app/a", None)).expect("deleted");
        assert_eq!(tree.usage("alice"), Usage::default());
    }

    #[test]
    fn an_acl_changes_only_with_admin_right_and_the_expected_aversion() {
        use cairn_wire::access::{ADMIN, ALL, READ};
        let mut tree = DataTree::new();
        let (alice, bob) =
            (Principal::Certificate("alice".into()), Principal::Certificate("bob".into()));
        let acl = vec![AclEntry::user("alice", ADMIN), AclEntry::user("bob", READ)];
        let app = CreateRequest { acl: Some(acl), ..request("/app") };
        apply_as(&mut tree, &Principal::System, Action::Create(app)).expect("created");
        let set = |version| Action::SetAcl {
            path: "/app".into(),
            acl: vec![AclEntry::anyone(ALL)],
            version,
        };
        let refused = apply_as(&mut tree, &bob, set(None)).expect_err("bob may only read");
        assert_eq!(refused.code, ErrorCode::NoAuth);
        let stale = apply_as(&mut tree, &alice, set(Some(3))).expect_err("stale aversion");
        assert_eq!(stale.code, ErrorCode::BadVersion);
        let Ok(Reply::Stat { stat }) = apply_as(&mut tree, &alice, set(Some(0))) else {
            panic!("set");
        };
        assert_eq!(stat.aversion, 1);
        assert_eq!(**tree.node("/app").expect("there").acl(), [AclEntry::anyone(ALL)]);
        // A missing znode is no-auth to whoever may not read above it, no-node to who may.
        let missing = Action::SetAcl { path: "/nope/x".into(), acl: Vec::new(), version: None };
        assert_eq!(
            apply_as(&mut tree, &bob, missing.clone()).expect_err("").code,
            ErrorCode::NoAuth
        );
        let readable = Action::SetAcl { path: "/app/x".into(), acl: Vec::new(), version: None };
        assert_eq!(apply_as(&mut tree, &bob, readable).expect_err("").code, ErrorCode::NoNode);
    }
}
