//! Applying the session writes: opening one, and ending one (closed by its client or expired
//! by the leader) with its ephemerals, then telling each recipe that held some of them.

use std::collections::BTreeMap;

use cairn_wire::{
    ApiError, ErrorCode, Reply, SESSION_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_MIN, SESSIONS_MAX, Usage,
};

use crate::store::paths::recipe_path;
use crate::store::recipes::{PendingHook, RecipeRunner};
use crate::store::txn::Txn;
use crate::store::{Caller, DataTree, Effects, SecretHash, Session, SessionId, Write, Zxid};

impl DataTree {
    /// Ends `session`: its ephemerals go, in one transaction, then each recipe hears of its
    /// own in this same entry, so a lock passes on as its holder's session ends. While the
    /// recipes are frozen, the hooks wait for the thaw.
    pub(super) fn end_session(
        &mut self,
        zxid: Zxid,
        write: &Write,
        session: SessionId,
        caller: Caller,
        effects: &mut Effects,
        recipes: &dyn RecipeRunner,
    ) -> Result<(), ApiError> {
        let mut by_recipe: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for path in self.ephemerals_of(session) {
            if let Some((name, relative)) = recipe_path(path) {
                by_recipe.entry(name.to_string()).or_default().push(relative.to_string());
            }
        }
        let frozen = self.recipes.frozen;
        if !by_recipe.is_empty() && !frozen {
            self.check_runtime(recipes)?;
        }
        self.in_txn(zxid, write, caller, effects, |txn| {
            txn.end_session(session).map(|()| Reply::Synced {})
        })?;
        for (name, deleted) in by_recipe {
            if frozen {
                // No recipe code runs while frozen: the hook runs at the thaw.
                self.recipes.pending_hooks.push(PendingHook { name, session, deleted });
            } else {
                self.run_session_hook(&name, session, &deleted, recipes, effects)?;
            }
        }
        Ok(())
    }
}

impl Txn<'_> {
    /// Opens a session. The reply's `secret` is 0: only the proposing node knows the secret,
    /// and it answers its client with it.
    pub(super) fn open_session(
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
    pub(super) fn end_session(&mut self, id: SessionId) -> Result<(), ApiError> {
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
}
