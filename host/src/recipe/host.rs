//! The imports a recipe calls: its store (mapped onto its namespace), the call's context, and
//! notifications.

use cairn_wire::{ApiError, ErrorCode, path};

use super::cairn::recipe::{context, notify, store};
use super::{CallState, Shared};
use super::{
    RECIPE_BYTES_MOVED_PER_CALL_MAX, RECIPE_BYTES_WRITTEN_PER_CALL_MAX,
    RECIPE_HOST_CALLS_PER_CALL_MAX, RECIPE_NOTIFICATION_BYTES_MAX,
    RECIPE_NOTIFICATIONS_PER_CALL_MAX, RECIPE_ZNODES_CREATED_PER_CALL_MAX,
};
use crate::store::{Notification, SessionId};

impl CallState {
    /// The absolute path of a recipe's relative path ("/" is its namespace root).
    fn absolute(&self, relative: &str) -> Result<String, store::Error> {
        if !relative.starts_with('/') {
            return Err(store::Error::InvalidPath);
        }
        Ok(if relative == "/" {
            self.namespace.clone()
        } else {
            format!("{}{relative}", self.namespace)
        })
    }

    /// The recipe's relative path of an absolute one inside its namespace.
    fn relative(&self, absolute: &str) -> String {
        match absolute.strip_prefix(&self.namespace) {
            Some("") | None => "/".to_string(),
            Some(rest) => rest.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Charges a host call that moves `bytes` across the boundary (and, for writes, writes
    /// them, creating `created` znodes) to the call's budget. Past a bound the call fails:
    /// the guest gets `too-large`, and whatever it does next, the invocation ends with
    /// `recipe-limit` and writes nothing.
    fn charge(&mut self, bytes: usize, written: usize, created: u32) -> Result<(), store::Error> {
        let budget = &mut self.budget;
        budget.host_calls += 1;
        budget.bytes_moved += bytes as u64;
        budget.bytes_written += written as u64;
        budget.znodes_created += created;
        let over = if budget.host_calls > RECIPE_HOST_CALLS_PER_CALL_MAX {
            Some(format!("made more than {RECIPE_HOST_CALLS_PER_CALL_MAX} host calls"))
        } else if budget.bytes_moved > RECIPE_BYTES_MOVED_PER_CALL_MAX {
            Some(format!(
                "moved more than {RECIPE_BYTES_MOVED_PER_CALL_MAX} bytes through host calls"
            ))
        } else if budget.bytes_written > RECIPE_BYTES_WRITTEN_PER_CALL_MAX {
            Some(format!("wrote more than {RECIPE_BYTES_WRITTEN_PER_CALL_MAX} bytes"))
        } else if budget.znodes_created > RECIPE_ZNODES_CREATED_PER_CALL_MAX {
            Some(format!("created more than {RECIPE_ZNODES_CREATED_PER_CALL_MAX} znodes"))
        } else {
            None
        };
        if let Some(why) = over {
            budget.exceeded.get_or_insert(why);
        }
        if budget.exceeded.is_some() { Err(store::Error::TooLarge) } else { Ok(()) }
    }

    /// A write's error, for the guest. A refusal that is the caller's to hear (its rights, its
    /// quota, its missing session) is also kept, to end the call with it.
    fn write_error(&mut self, refused: ApiError) -> store::Error {
        let code = error(refused.clone());
        if matches!(
            refused.code,
            ErrorCode::NoAuth | ErrorCode::QuotaExceeded | ErrorCode::NoSession
        ) {
            self.budget.refused.get_or_insert(refused);
        }
        code
    }

    /// A recipe reads with its caller's rights: read in its namespace root's ACL. A refusal
    /// ends the call with `no-auth`.
    fn check_read(&mut self, absolute: &str) -> Result<(), store::Error> {
        let readable = {
            let shared = self.lock();
            let txn = shared.txn.as_ref().ok_or_else(CallState::txn_error)?;
            txn.check_read(&shared.tree, absolute)
        };
        readable.map_err(|refused| self.write_error(refused))
    }

    fn txn_error() -> store::Error {
        // The transaction is only taken after the call returns; a host call cannot see that.
        store::Error::InvalidPath
    }
}

fn error(error: ApiError) -> store::Error {
    match error.code {
        ErrorCode::NoNode => store::Error::NoNode,
        ErrorCode::NodeExists => store::Error::NodeExists,
        ErrorCode::BadVersion => store::Error::BadVersion,
        ErrorCode::NotEmpty => store::Error::NotEmpty,
        // The WIT's errors have no quota of their own: "too large" is the nearest.
        ErrorCode::TooLarge | ErrorCode::QuotaExceeded => store::Error::TooLarge,
        ErrorCode::NoSession | ErrorCode::SessionExpired => store::Error::NoSession,
        ErrorCode::NoChildrenForEphemerals => store::Error::NoChildrenForEphemerals,
        _ => store::Error::InvalidPath,
    }
}

fn stat(stat: cairn_wire::Stat) -> store::Stat {
    store::Stat {
        version: stat.version,
        cversion: stat.cversion,
        czxid: stat.czxid,
        mzxid: stat.mzxid,
        ephemeral_owner: stat.ephemeral_owner,
        num_children: stat.num_children,
    }
}

impl store::Host for CallState {
    fn get(&mut self, relative: String) -> Result<(Vec<u8>, store::Stat), store::Error> {
        self.charge(relative.len(), 0, 0)?;
        let absolute = self.absolute(&relative)?;
        self.check_read(&absolute)?;
        let (data, found) = {
            let shared = self.lock();
            let (data, found) = shared.tree.get(&absolute).map_err(error)?;
            (data.to_vec(), found)
        };
        self.charge(data.len(), 0, 0)?;
        Ok((data, stat(found)))
    }

    fn children(&mut self, relative: String) -> Result<Vec<String>, store::Error> {
        self.charge(relative.len(), 0, 0)?;
        let absolute = self.absolute(&relative)?;
        self.check_read(&absolute)?;
        let (_, children) = self.lock().tree.children(&absolute, false).map_err(error)?;
        let names: Vec<String> = children.into_iter().map(|child| child.name).collect();
        self.charge(names.iter().map(|name| name.len() + 8).sum(), 0, 0)?;
        Ok(names)
    }

    fn children_with_prefix(
        &mut self,
        relative: String,
        prefix: String,
        limit: u32,
    ) -> Result<Vec<String>, store::Error> {
        self.charge(relative.len() + prefix.len(), 0, 0)?;
        let absolute = self.absolute(&relative)?;
        self.check_read(&absolute)?;
        let names = self.lock().tree.children_with_prefix(&absolute, &prefix, limit as usize);
        let names = names.map_err(error)?;
        self.charge(names.iter().map(|name| name.len() + 8).sum(), 0, 0)?;
        Ok(names)
    }

    fn first_sequential(&mut self, relative: String) -> Result<Option<String>, store::Error> {
        self.charge(relative.len(), 0, 0)?;
        let absolute = self.absolute(&relative)?;
        self.check_read(&absolute)?;
        let first = self.lock().tree.first_sequential(&absolute).map_err(error)?;
        self.charge(first.as_ref().map_or(0, |name| name.len() + 8), 0, 0)?;
        Ok(first)
    }

    fn create(
        &mut self,
        relative: String,
        data: Vec<u8>,
        mode: store::Mode,
        sequential: bool,
    ) -> Result<String, store::Error> {
        let size = relative.len() + data.len();
        self.charge(size, size, 1)?;
        let absolute = self.absolute(&relative)?;
        if sequential {
            path::validate_sequential_prefix(&absolute).map_err(error)?;
        }
        let ephemeral = matches!(mode, store::Mode::Ephemeral);
        let created = {
            let mut shared = self.lock();
            let Shared { tree, txn } = &mut *shared;
            let txn = txn.as_mut().ok_or_else(CallState::txn_error)?;
            txn.create(tree, &absolute, data, ephemeral, sequential)
        };
        let created = created.map_err(|refused| self.write_error(refused))?;
        Ok(self.relative(&created))
    }

    fn set(
        &mut self,
        relative: String,
        data: Vec<u8>,
        version: Option<u32>,
    ) -> Result<store::Stat, store::Error> {
        self.charge(relative.len() + data.len(), data.len(), 0)?;
        let absolute = self.absolute(&relative)?;
        let set = {
            let mut shared = self.lock();
            let Shared { tree, txn } = &mut *shared;
            let txn = txn.as_mut().ok_or_else(CallState::txn_error)?;
            txn.set(tree, &absolute, data, version)
        };
        set.map(stat).map_err(|refused| self.write_error(refused))
    }

    fn delete(&mut self, relative: String, version: Option<u32>) -> Result<(), store::Error> {
        self.charge(relative.len(), 0, 0)?;
        if relative == "/" {
            return Err(store::Error::InvalidPath);
        }
        let absolute = self.absolute(&relative)?;
        let deleted = {
            let mut shared = self.lock();
            let Shared { tree, txn } = &mut *shared;
            let txn = txn.as_mut().ok_or_else(CallState::txn_error)?;
            txn.delete(tree, &absolute, version)
        };
        deleted.map_err(|refused| self.write_error(refused))
    }
}

impl context::Host for CallState {
    fn session(&mut self) -> u64 {
        self.session
    }

    fn zxid(&mut self) -> u64 {
        self.zxid.0
    }

    fn time_ms(&mut self) -> u64 {
        self.time_ms
    }

    fn session_live(&mut self, session: u64) -> bool {
        // A query that cannot fail still counts as a host call.
        let _ = self.charge(0, 0, 0);
        self.lock().tree.session(SessionId(session)).is_some()
    }

    fn fencing_token(&mut self) -> u64 {
        let _ = self.charge(0, 0, 0);
        self.lock().tree.next_fencing_token()
    }
}

impl notify::Host for CallState {
    /// Queues a message for a session with a stake in this recipe: the caller, or a session
    /// owning an ephemeral znode in its namespace (a waiter, a holder, a candidate). Anything
    /// else is dropped, as a hint may be: a recipe must not be able to pass a message off as
    /// another recipe's grant to a session that never called it.
    fn notify(&mut self, session: u64, message: Vec<u8>) {
        if self.charge(message.len(), 0, 0).is_err()
            || self.notifications.len() >= RECIPE_NOTIFICATIONS_PER_CALL_MAX
            || message.len() > RECIPE_NOTIFICATION_BYTES_MAX
        {
            return;
        }
        let target = SessionId(session);
        let stake = session != 0
            && (session == self.session
                || self.lock().tree.owns_ephemeral_below(target, &self.namespace));
        if stake {
            let recipe = self.recipe.clone();
            self.notifications.push(Notification { session: target, recipe, message });
        }
    }
}
