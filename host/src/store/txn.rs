//! The transaction every write runs in: its mutations of the tree, each recorded with how to
//! undo it, so that a write that fails (or a `multi` whose third operation fails) leaves the
//! tree exactly as it found it.
//!
//! Request path: `apply` (store/apply.rs) opens a [`Txn`] for each write and finishes it with
//! the write's answer; a recipe call carries a [`TxnParts`] between its host calls instead, each
//! of which borrows the tree afresh. The primitives here (create, set, delete, check, removing
//! a znode, the TTL reaper) check paths, rights, quotas and versions, keep the tree's indexes
//! and usage, and note every change for the watches.

use std::sync::Arc;

use cairn_wire::access::{CREATE, DELETE, READ, SYSTEM, WRITE};
use cairn_wire::{
    ApiError, CreateMode, CreateRequest, DeleteRequest, ErrorCode, EventKind, MultiResult,
    PATH_BYTES_MAX, Reply, SetRequest, TTL_MS_MAX, Usage, ZNODE_DATA_BYTES_MAX, path,
};

use super::paths::is_reserved;
use super::{
    Acl, Caller, Change, DataTree, Effects, NodeKind, SessionId, Znode, Zxid, stored_bytes_of,
    ttl_expired,
};

/// A transaction's state without the tree: what a recipe invocation carries between its
/// host calls, each of which borrows the tree afresh.
#[derive(Debug)]
pub(super) struct TxnParts {
    zxid: Zxid,
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
        zxid: Zxid,
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
    Set { path: String, data: Arc<Vec<u8>>, null_data: bool, version: u32, mzxid: Zxid, mtime: u64 },
    /// A child was added to (or removed from) `parent`: take it out (or put it back).
    Child {
        parent: String,
        name: String,
        added: bool,
        cversion: u32,
        children_created: Option<u32>,
        pzxid: Zxid,
    },
}

/// The mutations of one write, undoable until the write ends.
pub(super) struct Txn<'a> {
    pub(super) tree: &'a mut DataTree,
    pub(super) zxid: Zxid,
    pub(super) time_ms: u64,
    /// The session of the stream that sent the write.
    pub(super) session: Option<SessionId>,
    /// Who the write speaks for: its rights, and whose quota what it creates counts against.
    pub(super) caller: Caller,
    /// Whether the write may touch the reserved namespace (a recipe's or the node's own). A
    /// recipe's writes inside its own namespace pass no ACL: invoking it took the right.
    pub(super) privileged: bool,
    undo: Vec<Undo>,
    /// Containers that lost a child in this write: deleted at its end if they are empty.
    pub(super) emptied: Vec<String>,
    /// What changed, for the watches; dropped if the write is undone.
    pub(super) changes: Vec<Change>,
    /// Sessions this write ended. Session writes never fail after they start changing things.
    pub(super) ended_sessions: Vec<SessionId>,
}

impl<'a> Txn<'a> {
    /// A write's transaction over `tree` at `zxid`, as of the tree's clock.
    pub(super) fn new(
        tree: &'a mut DataTree,
        zxid: Zxid,
        session: Option<SessionId>,
        caller: Caller,
    ) -> Txn<'a> {
        let time_ms = tree.clock_ms;
        Txn {
            tree,
            zxid,
            time_ms,
            session,
            caller,
            privileged: false,
            undo: Vec::new(),
            emptied: Vec::new(),
            changes: Vec::new(),
            ended_sessions: Vec::new(),
        }
    }

    /// Ends the write with what it answered: undone if it failed (a `multi` with a failed
    /// operation answers, but is undone all the same), otherwise finished by deleting the
    /// containers it emptied. What it changed goes to `effects`: nothing, once undone.
    pub(super) fn finish(
        mut self,
        reply: Result<Reply, ApiError>,
        effects: &mut Effects,
    ) -> Result<Reply, ApiError> {
        let failed = match &reply {
            Ok(Reply::Multi { results }) => {
                results.iter().any(|result| matches!(result, MultiResult::Error(_)))
            }
            Ok(_) => false,
            Err(_) => true,
        };
        if failed {
            self.rollback();
        } else {
            self.delete_emptied_containers();
        }
        effects.changes.append(&mut self.changes);
        effects.ended_sessions.append(&mut self.ended_sessions);
        reply
    }
}

impl Txn<'_> {
    /// Clients may read the recipes' namespaces but not write them: a forged lock holder or
    /// fencing token would break every recipe's promises.
    pub(super) fn check_reserved(&self, path: &str) -> Result<(), ApiError> {
        if !self.privileged && is_reserved(path) {
            return Err(ApiError::at(ErrorCode::InvalidArgument, path)
                .with_detail("reserved for recipes: invoke the recipe instead"));
        }
        Ok(())
    }

    /// `no-auth` at `path` unless the caller holds `perms` in `acl`. A recipe acts with its
    /// caller's rights, as the ACL of its namespace root grants them (the one that governs
    /// everything the recipe holds).
    pub(super) fn require(&self, acl: &Acl, perms: u32, path: &str) -> Result<(), ApiError> {
        if self.privileged {
            return self.caller.require(self.tree.governing_acl(path, acl), perms, path);
        }
        self.caller.require(acl, perms, path)
    }

    /// `error` (which says whether `path` exists) for a caller who may know that, `no-auth`
    /// for one who may not read what is above it.
    pub(super) fn absent(&self, path: &str, error: ApiError) -> ApiError {
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
    pub(super) fn check_quota(
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
        // As ZooKeeper: the sequence number counts the children ever created under the parent,
        // so a number is never reused under one parent.
        let number = parent.children_created.unwrap_or(parent.cversion);
        let name = if request.sequential {
            format!("{name_prefix}{number:010}")
        } else {
            name_prefix.to_string()
        };
        let exhausted = || {
            ApiError::at(ErrorCode::SequenceOverflow, parent_path)
                .with_detail("the parent's child counter is exhausted")
        };
        let cversion = parent.cversion.checked_add(1).ok_or_else(exhausted)?;
        let created = number.checked_add(1).ok_or_else(exhausted)?;
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

        self.add_child(parent_path, &name, cversion, created);
        let creator = self.caller.name.clone();
        let mut node =
            Znode::new(request.data.clone(), kind, self.zxid, self.time_ms, acl.clone(), creator);
        node.null_data = holds_null_data(&request.data, request.null_data);
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
        let null_data = std::mem::replace(
            &mut node.null_data,
            holds_null_data(&request.data, request.null_data),
        );
        self.undo.push(Undo::Set {
            path: path.to_string(),
            data,
            null_data,
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

    pub(super) fn check(&mut self, path: &str, version: Option<u32>) -> Result<(), ApiError> {
        path::validate(path)?;
        let Some(node) = self.tree.nodes.get(path) else {
            return Err(self.absent(path, ApiError::at(ErrorCode::NoNode, path)));
        };
        self.require(&node.acl, READ, path)?;
        check_version(path, node, version)
    }

    /// Deletes every TTL znode whose time has come. Deepest first, so a TTL parent whose only
    /// children were TTL znodes can go in the same entry.
    pub(super) fn reap_ttl(&mut self) {
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
    pub(super) fn remove_node(&mut self, path: &str) {
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
                children_created: parent.children_created,
                pzxid: parent.pzxid,
            });
            parent.remove_child(name);
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

    /// Adds `name` under `parent_path`, whose cversion and count of children ever created
    /// become `cversion` and `created`.
    pub(super) fn add_child(&mut self, parent_path: &str, name: &str, cversion: u32, created: u32) {
        if let Some(parent) = self.tree.nodes.get_mut(parent_path) {
            self.undo.push(Undo::Child {
                parent: parent_path.to_string(),
                name: name.to_string(),
                added: true,
                cversion: parent.cversion,
                children_created: parent.children_created,
                pzxid: parent.pzxid,
            });
            parent.insert_child(name.to_string());
            parent.cversion = cversion;
            parent.children_created = Some(created);
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
                Undo::Set { path, data, null_data, version, mzxid, mtime } => {
                    if let Some(node) = self.tree.nodes.get_mut(&path) {
                        let (creator, now) = (node.creator.clone(), node.data.len() as u64);
                        node.data = data;
                        node.null_data = null_data;
                        node.version = version;
                        node.mzxid = mzxid;
                        node.mtime = mtime;
                        let before = node.data.len() as u64;
                        self.tree.resize(&creator, now, before);
                    }
                }
                Undo::Child { parent, name, added, cversion, children_created, pzxid } => {
                    if let Some(node) = self.tree.nodes.get_mut(&parent) {
                        if added {
                            node.remove_child(&name);
                        } else {
                            node.insert_child(name);
                        }
                        node.cversion = cversion;
                        node.children_created = children_created;
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
    pub(super) fn index(&mut self, path: &str, node: &Znode) {
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
    pub(super) fn unindex(&mut self, path: &str, node: &Znode) {
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
    pub(super) fn release(&mut self, name: &str, gone: Usage) {
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
    pub(super) fn resize(&mut self, creator: &std::sync::Arc<str>, from: u64, to: u64) {
        self.stored_bytes = (self.stored_bytes + to).saturating_sub(from);
        let held = self.usage.entry(creator.clone()).or_default();
        held.bytes = (held.bytes + to).saturating_sub(from);
    }
}

pub(super) fn node_kind(request: &CreateRequest) -> Result<NodeKind, ApiError> {
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

pub(super) fn check_data_size(path: &str, data: &[u8]) -> Result<(), ApiError> {
    if data.len() > ZNODE_DATA_BYTES_MAX {
        return Err(ApiError::at(ErrorCode::TooLarge, path)
            .with_detail(format!("{} bytes of data, limit {ZNODE_DATA_BYTES_MAX}", data.len())));
    }
    Ok(())
}

/// Whether a write of `data` that asked for null data leaves the znode holding it: only when
/// the data is empty too (data given wins).
fn holds_null_data(data: &[u8], null_data: bool) -> bool {
    null_data && data.is_empty()
}

pub(super) fn check_version(
    path: &str,
    node: &Znode,
    expected: Option<u32>,
) -> Result<(), ApiError> {
    match expected {
        Some(version) if version != node.version => Err(ApiError::at(ErrorCode::BadVersion, path)
            .with_detail(format!("expected version {version}, found {}", node.version))),
        _ => Ok(()),
    }
}
