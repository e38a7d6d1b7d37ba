//! The imports a recipe calls: its store (mapped onto its namespace), the call's context, and
//! notifications.

use cairn_wire::{ApiError, ErrorCode, path};

use super::RECIPE_NOTIFICATIONS_PER_CALL_MAX;
use super::cairn::recipe::{context, notify, store};
use super::{CallState, Shared};
use crate::store::SessionId;

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
        ErrorCode::TooLarge => store::Error::TooLarge,
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
        let absolute = self.absolute(&relative)?;
        let shared = self.lock();
        let (data, found) = shared.tree.get(&absolute).map_err(error)?;
        Ok((data.to_vec(), stat(found)))
    }

    fn children(&mut self, relative: String) -> Result<Vec<String>, store::Error> {
        let absolute = self.absolute(&relative)?;
        let (_, children) = self.lock().tree.children(&absolute, false).map_err(error)?;
        Ok(children.into_iter().map(|child| child.name).collect())
    }

    fn create(
        &mut self,
        relative: String,
        data: Vec<u8>,
        mode: store::Mode,
        sequential: bool,
    ) -> Result<String, store::Error> {
        let absolute = self.absolute(&relative)?;
        if sequential {
            path::validate_sequential_prefix(&absolute).map_err(error)?;
        }
        let ephemeral = matches!(mode, store::Mode::Ephemeral);
        let created = {
            let mut shared = self.lock();
            let Shared { tree, txn } = &mut *shared;
            let txn = txn.as_mut().ok_or_else(CallState::txn_error)?;
            txn.create(tree, &absolute, data, ephemeral, sequential).map_err(error)?
        };
        Ok(self.relative(&created))
    }

    fn set(
        &mut self,
        relative: String,
        data: Vec<u8>,
        version: Option<u32>,
    ) -> Result<store::Stat, store::Error> {
        let absolute = self.absolute(&relative)?;
        let mut shared = self.lock();
        let Shared { tree, txn } = &mut *shared;
        let txn = txn.as_mut().ok_or_else(CallState::txn_error)?;
        txn.set(tree, &absolute, data, version).map(stat).map_err(error)
    }

    fn delete(&mut self, relative: String, version: Option<u32>) -> Result<(), store::Error> {
        if relative == "/" {
            return Err(store::Error::InvalidPath);
        }
        let absolute = self.absolute(&relative)?;
        let mut shared = self.lock();
        let Shared { tree, txn } = &mut *shared;
        let txn = txn.as_mut().ok_or_else(CallState::txn_error)?;
        txn.delete(tree, &absolute, version).map_err(error)
    }
}

impl context::Host for CallState {
    fn session(&mut self) -> u64 {
        self.session
    }

    fn zxid(&mut self) -> u64 {
        self.zxid
    }

    fn time_ms(&mut self) -> u64 {
        self.time_ms
    }

    fn session_live(&mut self, session: u64) -> bool {
        self.lock().tree.session(SessionId(session)).is_some()
    }
}

impl notify::Host for CallState {
    fn notify(&mut self, session: u64, message: Vec<u8>) {
        if self.notifications.len() < RECIPE_NOTIFICATIONS_PER_CALL_MAX {
            self.notifications.push((SessionId(session), message));
        }
    }
}
