//! Applying the recipe writes: freezing and adopting a runtime, deploying and retiring
//! components, invoking a recipe, and the session-end hooks.

use std::sync::Arc;

use cairn_wire::access::{SYSTEM, WRITE};
use cairn_wire::{ApiError, ErrorCode, Reply};

use crate::store::paths::{RECIPES_ROOT, RESERVED_ROOT, namespace};
use crate::store::recipes::{
    Deployed, Entry, RECIPE_COMPONENT_BYTES_MAX, RecipeCall, RecipeRunner, RecipeTxn,
    component_hash, validate_name,
};
use crate::store::{Action, Caller, DataTree, Effects, SessionId, Write, Zxid};

/// A deploy's fields, borrowed from its write.
pub(super) struct Deploy<'a> {
    pub name: &'a str,
    pub version: Option<u32>,
    pub component: &'a [u8],
    /// The runtime of the node that proposed it.
    pub runtime: &'a str,
    pub owner: Option<&'a str>,
}

/// An invocation's fields, borrowed from its write.
pub(super) struct Invoke<'a> {
    pub name: &'a str,
    pub version: Option<u32>,
    pub op: &'a str,
    pub args: &'a [u8],
}

impl DataTree {
    /// Stops recipe code until the cluster adopts a runtime.
    pub(super) fn freeze_recipes(&mut self, caller: &Caller) -> Result<Reply, ApiError> {
        caller.require_admin("freezing the recipes")?;
        self.recipes.frozen = true;
        Ok(self.runtime_reply())
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
    pub(super) fn adopt_runtime(
        &mut self,
        caller: &Caller,
        runtime: &str,
        recipes: &dyn RecipeRunner,
        effects: &mut Effects,
    ) -> Result<Reply, ApiError> {
        caller.require_admin("adopting a recipe runtime")?;
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
    pub(super) fn check_runtime(&self, recipes: &dyn RecipeRunner) -> Result<(), ApiError> {
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

    /// Records a deploy that passes its checks, on the cluster's runtime.
    pub(super) fn deploy(
        &mut self,
        caller: &Caller,
        deploy: Deploy<'_>,
        recipes: &dyn RecipeRunner,
        effects: &mut Effects,
    ) -> Result<Reply, ApiError> {
        let Deploy { name, version, component, runtime, owner } = deploy;
        let (owner, version) = self.deploy_checks(caller, name, version, component, owner)?;
        if self.recipes.runtime.is_none() {
            // The first deploy: the cluster runs recipes on the proposer's runtime.
            self.recipes.runtime = Some(runtime.to_string());
        }
        self.check_runtime(recipes)?;
        let reply = self.deploy_recipe(name, version, component, effects)?;
        self.recipes.owners.insert(name.to_string(), owner);
        Ok(reply)
    }

    /// Runs an op of a recipe for `caller`, who needs write on the recipe's namespace root
    /// (none but an administrator has it, should the root be missing).
    pub(super) fn invoke_recipe(
        &mut self,
        zxid: Zxid,
        session: Option<SessionId>,
        caller: &Caller,
        invoke: Invoke<'_>,
        recipes: &dyn RecipeRunner,
        effects: &mut Effects,
    ) -> Result<Reply, ApiError> {
        let Invoke { name, version, op, args } = invoke;
        self.check_not_frozen()?;
        self.check_runtime(recipes)?;
        let root = namespace(name);
        let acl = self
            .nodes
            .get(&root)
            .map_or_else(crate::store::access::root_acl, |node| node.acl.clone());
        caller.require(&acl, WRITE, &root)?;
        let (version, deployed) = self.recipes.resolve(name, version)?;
        let deployed = deployed.clone();
        let call = RecipeCall {
            name,
            version,
            deployed: &deployed,
            session,
            caller,
            zxid,
            time_ms: self.clock_ms,
            entry: Entry::Invoke { op, args },
        };
        recipes.invoke(self, call, effects).map(|result| Reply::Invoked { result })
    }

    /// Tells a recipe which of its znodes went with a session. A hook that fails is undone on
    /// its own and the session's end stands; only a fault of this node (`internal`) is passed
    /// on, to stop it.
    pub(super) fn run_session_hook(
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

    /// Deploy admission: whether `write`, a deploy, would be refused for anything but its
    /// component, as the state is now. The node a deploy reaches checks this before it compiles
    /// the component (so a caller without the right cannot make it compile anything) and
    /// proposes it; apply checks the same again, against the state of the entry. The version
    /// it would deploy, if `write` is a deploy.
    pub fn check_deploy(&self, write: &Write) -> Result<Option<u32>, ApiError> {
        let Action::DeployRecipe { name, version, component, owner, .. } = &write.action else {
            return Ok(None);
        };
        let caller = self.caller(&write.principal)?;
        let (_, version) =
            self.deploy_checks(&caller, name, *version, component, owner.as_deref())?;
        Ok(Some(version))
    }

    /// What a deploy of `component` as `name` by `caller` must pass: recipes not frozen, the
    /// right to deploy the name, a valid name, room, a version above every earlier one. The
    /// owner after the deploy and the version deployed, if it passes.
    fn deploy_checks(
        &self,
        caller: &Caller,
        name: &str,
        version: Option<u32>,
        component: &[u8],
        owner: Option<&str>,
    ) -> Result<(String, u32), ApiError> {
        self.check_not_frozen()?;
        let owner = self.deploy_owner(caller, name, owner)?;
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
        Ok((owner, version))
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

    /// Records a checked deploy: the namespace, the component under its version. Compiling it
    /// is not apply's work: the node does it after the entry (`Effects::deployed`).
    fn deploy_recipe(
        &mut self,
        name: &str,
        version: u32,
        component: &[u8],
        effects: &mut Effects,
    ) -> Result<Reply, ApiError> {
        // The namespace exists from the first deploy on, so a recipe can write at its root.
        let mut txn = RecipeTxn::new(self.last_zxid, self.clock_ms, None, Caller::system());
        for path in [RESERVED_ROOT.to_string(), RECIPES_ROOT.to_string(), namespace(name)] {
            if !self.nodes.contains_key(&path) {
                txn.create(self, &path, Vec::new(), false, false)?;
            }
        }
        txn.commit(self, effects);
        let hash = component_hash(component);
        let deployed = Deployed { hash: hash.clone(), component: Arc::new(component.to_vec()) };
        // Compiled by every replica once this entry is applied (admission compiled it first).
        effects.deployed.push(deployed.clone());
        self.recipes.deployed.entry(name.to_string()).or_default().insert(version, deployed);
        self.recipes.highest.insert(name.to_string(), version);
        Ok(Reply::RecipeDeployed { name: name.to_string(), version, hash })
    }

    pub(super) fn retire_recipe(&mut self, name: &str, version: u32) -> Result<Reply, ApiError> {
        self.recipes.resolve(name, Some(version))?;
        if let Some(versions) = self.recipes.deployed.get_mut(name) {
            versions.remove(&version);
            if versions.is_empty() {
                self.recipes.deployed.remove(name);
            }
        }
        Ok(Reply::RecipeRetired {})
    }
}
