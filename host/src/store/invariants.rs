//! The whole-tree invariant check: run after loading a snapshot, and by the tests after every
//! apply.

use cairn_wire::{ZNODE_DATA_BYTES_MAX, path};

use super::{DataTree, NodeKind, SessionId, Znode};

impl DataTree {
    /// Checks every structural rule of the tree; the error names the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        let root = self.nodes.get("/").ok_or("the root is missing")?;
        if root.kind != NodeKind::Persistent || root.ephemeral_owner != 0 {
            return Err("the root is not a plain persistent znode".into());
        }
        for (node_path, node) in &self.nodes {
            path::validate(node_path).map_err(|e| format!("stored path: {e}"))?;
            if node_path != "/" {
                let parent = self
                    .nodes
                    .get(path::parent(node_path))
                    .ok_or_else(|| format!("{node_path} has no parent"))?;
                if !parent.children.contains(path::name(node_path)) {
                    return Err(format!("{node_path} is not among its parent's children"));
                }
            }
            for name in &node.children {
                if !self.nodes.contains_key(&path::join(node_path, name)) {
                    return Err(format!("{node_path} lists child {name:?} that does not exist"));
                }
            }
            if node.sequential != Znode::sequential_of(&node.children) {
                return Err(format!("{node_path}: the index of sequential children is stale"));
            }
            if (node.cversion as usize) < node.children.len() {
                return Err(format!("{node_path}: cversion below the number of children"));
            }
            if node.czxid > node.mzxid || node.czxid > node.pzxid {
                return Err(format!("{node_path}: changed before it was created"));
            }
            if node.mzxid.max(node.pzxid) > self.last_zxid {
                return Err(format!("{node_path}: zxid from the future"));
            }
            if node.ctime > node.mtime || node.mtime > self.clock_ms {
                return Err(format!("{node_path}: times out of order"));
            }
            if node.data.len() > ZNODE_DATA_BYTES_MAX {
                return Err(format!("{node_path}: data over the limit"));
            }
            if node.kind == NodeKind::Ephemeral {
                let owner = SessionId(node.ephemeral_owner);
                if !self.sessions.contains_key(&owner) {
                    return Err(format!("{node_path}: owned by session {owner}, which is gone"));
                }
                if !node.children.is_empty() {
                    return Err(format!("{node_path}: an ephemeral with children"));
                }
                if !self.ephemerals.get(&owner).is_some_and(|paths| paths.contains(node_path)) {
                    return Err(format!("{node_path}: missing from its session's ephemerals"));
                }
            } else if node.ephemeral_owner != 0 {
                return Err(format!("{node_path}: an owner but not ephemeral"));
            }
            let is_ttl = matches!(node.kind, NodeKind::Ttl { .. });
            if is_ttl != self.ttl_nodes.contains(node_path) {
                return Err(format!("{node_path}: TTL index out of step"));
            }
        }
        if let Some(stray) = self.ttl_nodes.iter().find(|p| !self.nodes.contains_key(*p)) {
            return Err(format!("TTL index names {stray}, which does not exist"));
        }
        for (owner, paths) in &self.ephemerals {
            if paths.is_empty() {
                return Err(format!("session {owner} has an empty ephemerals entry"));
            }
            for path in paths {
                let owned =
                    self.nodes.get(path).is_some_and(|node| node.ephemeral_owner == owner.0);
                if !owned {
                    return Err(format!("session {owner} lists {path}, which it does not own"));
                }
            }
        }
        let stored: u64 = self
            .nodes
            .iter()
            .map(|(path, node)| super::stored_bytes_of(path, &node.data, &node.acl))
            .sum();
        if stored != self.stored_bytes {
            return Err(format!("{} stored bytes counted, {stored} held", self.stored_bytes));
        }
        let held = |usage: &std::collections::BTreeMap<std::sync::Arc<str>, cairn_wire::Usage>| {
            usage
                .iter()
                .filter(|(_, usage)| **usage != cairn_wire::Usage::default())
                .map(|(name, usage)| (name.clone(), *usage))
                .collect::<Vec<_>>()
        };
        if held(&self.usage) != held(&super::usage_of(&self.nodes, &self.sessions)) {
            return Err("what principals hold is counted out of step".into());
        }
        for (node_path, node) in &self.nodes {
            cairn_wire::access::validate_acl(&node.acl)
                .map_err(|why| format!("{node_path}: stored ACL: {why}"))?;
        }
        if self.sessions.keys().any(|id| id.0 >= self.next_session_id) {
            return Err("a session id at or above the next one".into());
        }
        Ok(())
    }
}
