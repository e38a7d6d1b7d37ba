//! `apply`: one committed command against the tree, all-or-nothing per write.
//!
//! Request path: the state machine (raft/state_machine.rs) hands each committed entry to
//! [`DataTree::apply_command`], the one way into the tree. It dispatches each write by kind, in
//! one `match`, to the code in this module's files: znode operations (`znodes`), sessions
//! (`sessions`), rights (`access`) and recipes (`recipes`). Every tree mutation runs in a
//! [`Txn`](super::txn::Txn) that records how to undo it. Rules that delete znodes on their own
//! (empty containers, expired TTL znodes) run at the end of the write that triggers them, in the
//! same entry, so every replica sees the same tree after every zxid. Apply never compiles a
//! component and never touches a disk: a deploy was compiled at admission, and the node
//! compiles what an entry deployed once the entry is applied (`Effects::deployed`).

mod access;
mod recipes;
mod sessions;
#[cfg(test)]
mod tests;
mod znodes;

use cairn_wire::{ApiError, ErrorCode, Reply};

use recipes::{Deploy, Invoke};

use super::recipes::RecipeRunner;
use super::txn::Txn;
use super::{Action, Caller, Command, DataTree, Effects, NodeFault, Write, Zxid};

impl DataTree {
    /// Applies every write of the entry at `zxid`, in order, each all-or-nothing on its own, and
    /// adds what they changed to `effects`: the one way a command reaches the tree. A fault of
    /// this node (`internal`: not the write's own doing) ends it with a [`NodeFault`], which
    /// stops the node through Raft's fail-stop path.
    pub fn apply_command(
        &mut self,
        zxid: Zxid,
        command: &Command,
        effects: &mut Effects,
        recipes: &dyn RecipeRunner,
    ) -> Result<Vec<Result<Reply, ApiError>>, NodeFault> {
        let mut replies = Vec::with_capacity(command.writes.len());
        for write in &command.writes {
            let reply = self.apply_write(zxid, command.time_ms, write, effects, recipes);
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

    /// Applies one write of the entry at `zxid`, stamped `time_ms` by its leader: each kind of
    /// write to its own code. A refused write changes nothing but the tree's zxid and clock.
    /// Internal actions (the TTL reaper, session expiry) reply `synced`: no client waits for
    /// them.
    fn apply_write(
        &mut self,
        zxid: Zxid,
        time_ms: u64,
        write: &Write,
        effects: &mut Effects,
        recipes: &dyn RecipeRunner,
    ) -> Result<Reply, ApiError> {
        // Several writes of one entry share its zxid, as the operations of a multi do.
        self.advance(zxid, time_ms);
        let caller = self.caller(&write.principal)?;
        match &write.action {
            Action::Create(request) => self.in_txn(zxid, write, caller, effects, |txn| {
                txn.create(request).map(|(path, stat)| Reply::Created { path, stat })
            }),
            Action::Set(request) => self.in_txn(zxid, write, caller, effects, |txn| {
                txn.set(request).map(|stat| Reply::Stat { stat })
            }),
            Action::Delete(request) => self.in_txn(zxid, write, caller, effects, |txn| {
                txn.delete(request).map(|()| Reply::Deleted {})
            }),
            Action::Multi(ops) => self.in_txn(zxid, write, caller, effects, |txn| txn.multi(ops)),
            Action::SetAcl { path, acl, version } => {
                self.in_txn(zxid, write, caller, effects, |txn| {
                    txn.set_acl(path, acl, *version).map(|stat| Reply::Stat { stat })
                })
            }
            Action::CreateToken { name, hash } => self.create_token(&caller, name, *hash),
            Action::RevokeToken { name } => self.revoke_token(&caller, name, effects),
            Action::SetAdmin { name, admin } => self.set_admin(&caller, name, *admin, effects),
            Action::SetQuota { name, quota } => self.set_quota(&caller, name, *quota),
            Action::ReapTtl => self.in_txn(zxid, write, caller, effects, |txn| {
                txn.reap_ttl();
                Ok(Reply::Synced {})
            }),
            Action::OpenSession { timeout_ms, secret_hash } => {
                self.in_txn(zxid, write, caller, effects, |txn| {
                    txn.open_session(*timeout_ms, *secret_hash)
                })
            }
            Action::CloseSession => match write.session {
                Some(session) => self
                    .end_session(zxid, write, session, caller, effects, recipes)
                    .map(|()| Reply::SessionClosed {}),
                None => Err(ApiError::new(ErrorCode::NoSession)),
            },
            Action::ExpireSession { session } => self
                .end_session(zxid, write, *session, caller, effects, recipes)
                .map(|()| Reply::Synced {}),
            Action::FreezeRecipes => self.freeze_recipes(&caller),
            Action::AdoptRecipeRuntime { runtime } => {
                self.adopt_runtime(&caller, runtime, recipes, effects)
            }
            Action::DeployRecipe { name, version, component, runtime, owner } => {
                let owner = owner.as_deref();
                let deploy = Deploy { name, version: *version, component, runtime, owner };
                self.deploy(&caller, deploy, recipes, effects)
            }
            Action::RetireRecipe { name, version } => {
                caller.require_admin("retiring a recipe")?;
                self.retire_recipe(name, *version)
            }
            Action::InvokeRecipe { name, version, op, args } => {
                let invoke = Invoke { name, version: *version, op, args };
                self.invoke_recipe(zxid, write.session, &caller, invoke, recipes, effects)
            }
        }
    }

    /// Runs `run` in a transaction of `write`, finished with its answer: undone if it failed.
    fn in_txn(
        &mut self,
        zxid: Zxid,
        write: &Write,
        caller: Caller,
        effects: &mut Effects,
        run: impl FnOnce(&mut Txn<'_>) -> Result<Reply, ApiError>,
    ) -> Result<Reply, ApiError> {
        let mut txn = Txn::new(self, zxid, write.session, caller);
        let reply = run(&mut txn);
        txn.finish(reply, effects)
    }

    fn advance(&mut self, zxid: Zxid, time_ms: u64) {
        debug_assert!(zxid >= self.last_zxid, "zxid {zxid} after {}", self.last_zxid);
        self.last_zxid = zxid;
        self.clock_ms = self.clock_ms.max(time_ms);
    }
}
