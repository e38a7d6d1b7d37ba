//! An in-memory [`Host`] for testing a recipe's logic natively, without a node.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Host, Mode, Recipe, Stat, StoreError};

#[derive(Debug, Clone)]
struct Node {
    data: Vec<u8>,
    stat: Stat,
}

/// A recipe's namespace in memory, with the call context a test sets.
#[derive(Debug, Clone)]
pub struct MemoryHost {
    nodes: BTreeMap<String, Node>,
    /// The session the next call comes from.
    pub session: u64,
    /// The zxid of the next call; each [`MemoryHost::invoke`] advances it.
    pub zxid: u64,
    pub time_ms: u64,
    /// Sessions that are live.
    pub live_sessions: BTreeSet<u64>,
    /// Notifications sent to sessions with a stake in the recipe, in order: (session, message).
    pub notifications: Vec<(u64, Vec<u8>)>,
    /// The last fencing token given; the next is one more, whatever a call's outcome.
    pub fencing_token: u64,
    /// How many times a recipe listed a znode's children with [`Host::children`]: a test of a
    /// call that should cost the same whatever a list's length checks that it stays put.
    pub listings: u64,
}

impl Default for MemoryHost {
    fn default() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), Node { data: Vec::new(), stat: Stat::default() });
        MemoryHost {
            nodes,
            session: 0,
            zxid: 0,
            time_ms: 0,
            live_sessions: BTreeSet::new(),
            notifications: Vec::new(),
            fencing_token: 0,
            listings: 0,
        }
    }
}

fn parent(path: &str) -> Result<&str, StoreError> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Ok("/"),
        Some(i) if i > 0 => Ok(&path[..i]),
        _ => Err(StoreError::InvalidPath),
    }
}

impl MemoryHost {
    /// The names of `path`'s children, in order.
    fn names(&self, path: &str) -> Result<Vec<String>, StoreError> {
        if !self.nodes.contains_key(path) {
            return Err(StoreError::NoNode);
        }
        let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
        Ok(self
            .nodes
            .keys()
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect())
    }

    /// Runs one operation as the node would: at the next zxid, from `session`, and with every
    /// write undone if it returns an error.
    pub fn invoke<R: Recipe>(
        &mut self,
        session: u64,
        op: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, String> {
        self.zxid += 1;
        self.session = session;
        self.live_sessions.insert(session);
        let before = self.nodes.clone();
        let result = R::invoke(self, op, args);
        if result.is_err() {
            self.nodes = before;
        }
        result
    }

    /// Ends a session as the node would: deletes its ephemerals, then calls the recipe's hook.
    pub fn end_session<R: Recipe>(&mut self, session: u64) {
        self.zxid += 1;
        self.session = 0;
        self.live_sessions.remove(&session);
        let owned: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.stat.ephemeral_owner == session)
            .map(|(p, _)| p.clone())
            .collect();
        for path in owned.iter().rev() {
            let _ = self.delete(path, None);
        }
        R::on_session_ended(self, session, owned);
    }

    /// Every path in the namespace, in order.
    pub fn paths(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }
}

impl Host for MemoryHost {
    fn get(&mut self, path: &str) -> Result<(Vec<u8>, Stat), StoreError> {
        let num_children = self.names(path)?.len() as u32;
        let node = self.nodes.get(path).ok_or(StoreError::NoNode)?;
        Ok((node.data.clone(), Stat { num_children, ..node.stat }))
    }

    fn children(&mut self, path: &str) -> Result<Vec<String>, StoreError> {
        self.listings += 1;
        self.names(path)
    }

    fn children_with_prefix(
        &mut self,
        path: &str,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        Ok(crate::with_prefix(self.names(path)?, prefix, limit))
    }

    fn first_sequential(&mut self, path: &str) -> Result<Option<String>, StoreError> {
        Ok(crate::first_sequential(self.names(path)?))
    }

    fn create(
        &mut self,
        path: &str,
        data: &[u8],
        mode: Mode,
        sequential: bool,
    ) -> Result<String, StoreError> {
        let parent_path = parent(path)?.to_string();
        let parent = self.nodes.get_mut(&parent_path).ok_or(StoreError::NoNode)?;
        if parent.stat.ephemeral_owner != 0 {
            return Err(StoreError::NoChildrenForEphemerals);
        }
        let path = if sequential {
            format!("{path}{:010}", parent.stat.cversion)
        } else {
            path.to_string()
        };
        if self.nodes.contains_key(&path) {
            return Err(StoreError::NodeExists);
        }
        let owner = match mode {
            Mode::Persistent => 0,
            Mode::Ephemeral if self.session == 0 => return Err(StoreError::NoSession),
            Mode::Ephemeral => self.session,
        };
        if let Some(parent) = self.nodes.get_mut(&parent_path) {
            parent.stat.cversion += 1;
        }
        let stat =
            Stat { czxid: self.zxid, mzxid: self.zxid, ephemeral_owner: owner, ..Stat::default() };
        self.nodes.insert(path.clone(), Node { data: data.to_vec(), stat });
        Ok(path)
    }

    fn set(&mut self, path: &str, data: &[u8], version: Option<u32>) -> Result<Stat, StoreError> {
        let zxid = self.zxid;
        let node = self.nodes.get_mut(path).ok_or(StoreError::NoNode)?;
        if version.is_some_and(|v| v != node.stat.version) {
            return Err(StoreError::BadVersion);
        }
        node.data = data.to_vec();
        node.stat.version += 1;
        node.stat.mzxid = zxid;
        Ok(node.stat)
    }

    fn delete(&mut self, path: &str, version: Option<u32>) -> Result<(), StoreError> {
        let node = self.nodes.get(path).ok_or(StoreError::NoNode)?;
        if version.is_some_and(|v| v != node.stat.version) {
            return Err(StoreError::BadVersion);
        }
        if path == "/" {
            return Err(StoreError::InvalidPath);
        }
        if !self.names(path)?.is_empty() {
            return Err(StoreError::NotEmpty);
        }
        self.nodes.remove(path);
        let parent_path = parent(path)?.to_string();
        if let Some(parent) = self.nodes.get_mut(&parent_path) {
            parent.stat.cversion += 1;
        }
        Ok(())
    }

    fn session(&self) -> u64 {
        self.session
    }

    fn zxid(&self) -> u64 {
        self.zxid
    }

    fn time_ms(&self) -> u64 {
        self.time_ms
    }

    fn session_live(&self, session: u64) -> bool {
        self.live_sessions.contains(&session)
    }

    fn fencing_token(&mut self) -> u64 {
        self.fencing_token += 1;
        self.fencing_token
    }

    /// As the node does: only the caller and sessions owning an ephemeral znode here have a
    /// stake in the recipe; a message to any other session is dropped.
    fn notify(&mut self, session: u64, message: &[u8]) {
        let stake = session != 0
            && (session == self.session
                || self.nodes.values().any(|node| node.stat.ephemeral_owner == session));
        if stake {
            self.notifications.push((session, message.to_vec()));
        }
    }
}
