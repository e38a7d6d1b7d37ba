//! The znode tree: the replicated state machine's data, held in memory on every node.
//!
//! Request path: `raft::state_machine` hands each committed entry's [`Command`] to
//! [`DataTree::apply`]; the client front end (`api`) reads through [`DataTree::get`] and friends
//! after the read-index check. Nothing here does I/O or reads a clock: time arrives as the
//! timestamp the leader stamped on the entry, so every replica that applies the same log holds
//! the same tree.

pub mod access;
mod apply;
mod command;
mod invariants;
pub mod paths;
pub mod recipes;
mod txn;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cairn_wire::{ApiError, ChildEntry, ErrorCode, EventKind, Stat, Usage, path};
use serde::{Deserialize, Serialize};

pub use access::{AccessTable, Acl, Caller, Principal, TokenHash};
pub use command::{Action, Command, Write};
use recipes::RecipeTable;

/// A session's id: a counter in the replicated state, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A live session, as the replicated state knows it. Liveness (when the session was last heard
/// from) is not here: only the leader tracks it, and expiry arrives as an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub timeout_ms: u64,
    /// The hash of the secret the node that proposed the open chose at random and gave the
    /// client, which proves a reconnecting client owns the session. Only the hash is in the
    /// state, the log and snapshots: whoever reads them cannot take a session over.
    pub secret_hash: SecretHash,
    /// The principal that opened it: only that principal may resume it, and its sessions
    /// count against its quota.
    pub principal: String,
}

/// The SHA-256 of a session secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    pub fn of(secret: u64) -> SecretHash {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"cairn session secret\0");
        hasher.update(secret.to_le_bytes());
        SecretHash(hasher.finalize().into())
    }
}

/// What applying an entry did that someone outside the tree must hear of: changes for the
/// watches, sessions ended for their connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub changes: Vec<Change>,
    pub ended_sessions: Vec<SessionId>,
    /// Messages recipes addressed to sessions, delivered after commit.
    pub notifications: Vec<Notification>,
    /// Who is an administrator, or which tokens are good, changed: what each stream's
    /// principal may hear must be decided again.
    pub access_changed: bool,
    /// Components deployed by the entry: the node compiles them before it applies the next.
    pub deployed: Vec<recipes::Deployed>,
}

/// One change to the tree, for the watches: what happened, where, and the ACL that decides who
/// may hear of it (the znode's own; for a children change, the parent's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: EventKind,
    pub path: String,
    pub acl: Acl,
}

/// A message a recipe addressed to a session with a stake in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub session: SessionId,
    /// The sender, as `name@version`: clients tell recipes apart by it.
    pub recipe: String,
    pub message: Vec<u8>,
}

/// What kind of znode this is, for the rules that delete znodes on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeKind {
    Persistent,
    /// Deleted in the entry that deletes its last child.
    Container,
    /// Deleted by a reap entry once it has had no children and no change for `ttl_ms`.
    Ttl {
        ttl_ms: u64,
    },
    /// Deleted with its owner session (`Znode::ephemeral_owner`); never has children.
    Ephemeral,
}

/// A position in the replicated log: the index of the entry that made a change, and so the
/// version of the whole state after it. Every write of one entry shares its zxid; they only
/// grow. On the wire (stats, responses, events) it is a plain number.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Zxid(pub u64);

impl Zxid {
    /// The state before any entry.
    pub const ZERO: Zxid = Zxid(0);
}

impl std::fmt::Display for Zxid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One znode: its data, the stat fields that are not derived, and its children's names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Znode {
    /// Shared, so a copy of the tree (for a snapshot or a digest, made under the state's lock)
    /// copies no data.
    #[serde(with = "shared_bytes")]
    data: Arc<Vec<u8>>,
    /// It holds ZooKeeper's null data (`data` is empty), which ZooKeeper's clients read back
    /// as null rather than as empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    null_data: bool,
    kind: NodeKind,
    children: BTreeSet<String>,
    /// The children whose names end in a sequence number ([`path::sequence`]), by that number:
    /// the first of a queue of sequential children without a pass over them all. Derived from
    /// `children`; not part of the snapshot.
    #[serde(skip)]
    sequential: BTreeSet<(u64, String)>,
    czxid: Zxid,
    mzxid: Zxid,
    pzxid: Zxid,
    ctime: u64,
    mtime: u64,
    version: u32,
    cversion: u32,
    /// Children ever created under it, which numbers the next sequential child as ZooKeeper
    /// numbers them (the cversion counts deletions too). `None` in an image written before
    /// Cairn kept it: the cversion, never lower, stands in then.
    #[serde(default)]
    children_created: Option<u32>,
    ephemeral_owner: u64,
    acl: Acl,
    aversion: u32,
    /// The principal that created it, whose quota it counts against.
    creator: Arc<str>,
}

impl Znode {
    fn new(
        data: Vec<u8>,
        kind: NodeKind,
        zxid: Zxid,
        time_ms: u64,
        acl: Acl,
        creator: Arc<str>,
    ) -> Znode {
        Znode {
            data: Arc::new(data),
            null_data: false,
            kind,
            children: BTreeSet::new(),
            sequential: BTreeSet::new(),
            czxid: zxid,
            mzxid: zxid,
            pzxid: zxid,
            ctime: time_ms,
            mtime: time_ms,
            version: 0,
            cversion: 0,
            children_created: Some(0),
            ephemeral_owner: 0,
            acl,
            aversion: 0,
            creator,
        }
    }

    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// Adds a child's name, and indexes it if it ends in a sequence number.
    fn insert_child(&mut self, name: String) {
        if let Some(number) = sequence_number(&name) {
            self.sequential.insert((number, name.clone()));
        }
        self.children.insert(name);
    }

    fn remove_child(&mut self, name: &str) {
        if let Some(number) = sequence_number(name) {
            self.sequential.remove(&(number, name.to_string()));
        }
        self.children.remove(name);
    }

    /// The sequential index of `children`, as it should be.
    fn sequential_of(children: &BTreeSet<String>) -> BTreeSet<(u64, String)> {
        let indexed = children.iter().filter_map(|name| Some((sequence_number(name)?, name)));
        indexed.map(|(number, name)| (number, name.clone())).collect()
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Whether it holds ZooKeeper's null data rather than empty data.
    pub fn null_data(&self) -> bool {
        self.null_data
    }

    pub fn kind(&self) -> NodeKind {
        self.kind
    }

    pub fn stat(&self) -> Stat {
        Stat {
            czxid: self.czxid.0,
            mzxid: self.mzxid.0,
            pzxid: self.pzxid.0,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.cversion,
            aversion: self.aversion,
            ephemeral_owner: self.ephemeral_owner,
            // Both are bounded far below u32::MAX: data by ZNODE_DATA_BYTES_MAX, children by
            // the parent's u32 cversion, which counts every child ever added.
            data_length: self.data.len() as u32,
            num_children: self.children.len() as u32,
        }
    }
}

/// The number a sequential create appended to a child's name, if it ends in one.
fn sequence_number(name: &str) -> Option<u64> {
    path::sequence(name)?.parse().ok()
}

/// The whole znode tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataTree {
    nodes: BTreeMap<String, Znode>,
    /// Paths of TTL znodes, so the reaper does not scan the tree. Derived from `nodes`; not
    /// part of the snapshot.
    ttl_nodes: BTreeSet<String>,
    /// Live sessions.
    sessions: BTreeMap<SessionId, Session>,
    /// The id the next session opened gets.
    next_session_id: u64,
    /// Each session's ephemeral znodes. Derived from `nodes`; not part of the snapshot.
    ephemerals: BTreeMap<SessionId, BTreeSet<String>>,
    /// Deployed recipes.
    recipes: RecipeTable,
    /// Administrators, tokens, quotas.
    access: AccessTable,
    /// What each principal holds (znodes and bytes it created, sessions it opened). Derived
    /// from `nodes` and `sessions`; not part of the snapshot.
    usage: BTreeMap<Arc<str>, Usage>,
    /// The zxid of the last entry applied.
    last_zxid: Zxid,
    /// The latest leader timestamp applied: entries from a leader whose clock is behind never
    /// move time back.
    clock_ms: u64,
    /// The last fencing token the host gave a recipe (`context.fencing-token`). Only the host
    /// writes it, so no recipe version can make tokens go backwards.
    fencing_token: u64,
    /// Bytes of every znode's path, data and ACL. Derived from `nodes`; not part of the snapshot.
    stored_bytes: u64,
    /// The node-wide bounds apply enforces. The same on every replica ([`TreeLimits::DEFAULT`];
    /// tests make smaller ones); not part of the snapshot.
    limits: TreeLimits,
}

/// Znodes the tree may hold. Every replica holds the whole tree in memory.
pub const TREE_ZNODES_MAX: usize = 2_000_000;
/// Bytes of znode paths, data and ACLs the tree may hold (2 GiB, etcd's default quota).
pub const TREE_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;

/// How large the tree may grow; a create or set past either bound is refused with
/// `quota-exceeded`, and deletes always go through, to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    pub znodes_max: usize,
    pub bytes_max: u64,
}

impl TreeLimits {
    pub const DEFAULT: TreeLimits =
        TreeLimits { znodes_max: TREE_ZNODES_MAX, bytes_max: TREE_BYTES_MAX };
}

/// What one znode counts against [`TreeLimits::bytes_max`] and its creator's quota: its path,
/// its data and its ACL (each znode's ACL is in every snapshot, shared or not).
fn stored_bytes_of(path: &str, data: &[u8], acl: &[cairn_wire::AclEntry]) -> u64 {
    (path.len() + data.len() + acl_bytes(acl)) as u64
}

/// What an ACL counts as stored bytes.
fn acl_bytes(acl: &[cairn_wire::AclEntry]) -> usize {
    /// The permissions and the entry's framing.
    const ENTRY_BYTES: usize = 8;
    acl.iter().map(|entry| entry.scheme.len() + entry.id.len() + ENTRY_BYTES).sum()
}

/// The form a tree takes in a snapshot: only what cannot be derived.
#[derive(Serialize, Deserialize)]
struct TreeImage {
    nodes: BTreeMap<String, Znode>,
    sessions: BTreeMap<SessionId, Session>,
    next_session_id: u64,
    recipes: RecipeTable,
    access: AccessTable,
    last_zxid: Zxid,
    clock_ms: u64,
    fencing_token: u64,
}

impl Default for DataTree {
    fn default() -> Self {
        DataTree::new()
    }
}

impl DataTree {
    /// A tree holding only the root.
    pub fn new() -> DataTree {
        let mut nodes = BTreeMap::new();
        let root = Znode::new(
            Vec::new(),
            NodeKind::Persistent,
            Zxid::ZERO,
            0,
            access::root_acl(),
            cairn_wire::access::SYSTEM.into(),
        );
        nodes.insert("/".to_string(), root);
        let usage = [(
            Arc::from(cairn_wire::access::SYSTEM),
            Usage { znodes: 1, bytes: stored_bytes_of("/", &[], &[]), ..Usage::default() },
        )]
        .into();
        DataTree {
            access: AccessTable::default(),
            usage,
            nodes,
            ttl_nodes: BTreeSet::new(),
            sessions: BTreeMap::new(),
            next_session_id: 1,
            ephemerals: BTreeMap::new(),
            recipes: RecipeTable::default(),
            last_zxid: Zxid::ZERO,
            clock_ms: 0,
            fencing_token: 0,
            stored_bytes: stored_bytes_of("/", &[], &[]),
            limits: TreeLimits::DEFAULT,
        }
    }

    /// The same tree, bounded by `limits` instead of the default ones.
    pub fn with_limits(mut self, limits: TreeLimits) -> DataTree {
        self.limits = limits;
        self
    }

    /// How many znodes the tree holds and how many bytes of paths and data.
    pub fn size(&self) -> (usize, u64) {
        (self.nodes.len(), self.stored_bytes)
    }

    /// Whether `more_znodes` znodes and `more_bytes` bytes still fit the node-wide bounds.
    fn check_room(&self, path: &str, more_znodes: usize, more_bytes: u64) -> Result<(), ApiError> {
        if self.nodes.len() + more_znodes > self.limits.znodes_max {
            return Err(ApiError::at(ErrorCode::QuotaExceeded, path).with_detail(format!(
                "the cluster holds {} znodes, its limit",
                self.limits.znodes_max
            )));
        }
        if self.stored_bytes + more_bytes > self.limits.bytes_max {
            return Err(ApiError::at(ErrorCode::QuotaExceeded, path).with_detail(format!(
                "{} more bytes would take the cluster past its {} bytes of znodes",
                more_bytes, self.limits.bytes_max
            )));
        }
        Ok(())
    }

    pub fn last_zxid(&self) -> Zxid {
        self.last_zxid
    }

    /// A fencing token larger than every one given before: the host's, for recipes.
    pub fn next_fencing_token(&mut self) -> u64 {
        // A u64 counted up by one per grant does not wrap in the life of a cluster.
        self.fencing_token = self.fencing_token.saturating_add(1);
        self.fencing_token
    }

    pub fn node(&self, path: &str) -> Option<&Znode> {
        self.nodes.get(path)
    }

    /// The data and stat of the znode at `path`.
    pub fn get(&self, path: &str) -> Result<(&[u8], Stat), ApiError> {
        path::validate(path)?;
        let node = self.nodes.get(path).ok_or_else(|| ApiError::at(ErrorCode::NoNode, path))?;
        Ok((node.data(), node.stat()))
    }

    /// The stat of the znode at `path`, or `None` when there is none.
    pub fn exists(&self, path: &str) -> Result<Option<Stat>, ApiError> {
        path::validate(path)?;
        Ok(self.nodes.get(path).map(Znode::stat))
    }

    /// How many znodes are below `path` (all its descendants, not itself).
    pub fn descendants(&self, path: &str) -> Result<usize, ApiError> {
        path::validate(path)?;
        if !self.nodes.contains_key(path) {
            return Err(ApiError::at(ErrorCode::NoNode, path));
        }
        if path == "/" {
            return Ok(self.nodes.len() - 1);
        }
        let prefix = format!("{path}/");
        Ok(self.nodes.range(prefix.clone()..).take_while(|(p, _)| p.starts_with(&prefix)).count())
    }

    /// The stat of the znode at `path` and its children in name order.
    pub fn children(
        &self,
        path: &str,
        with_stats: bool,
    ) -> Result<(Stat, Vec<ChildEntry>), ApiError> {
        path::validate(path)?;
        let node = self.nodes.get(path).ok_or_else(|| ApiError::at(ErrorCode::NoNode, path))?;
        let children = node
            .children
            .iter()
            .map(|name| ChildEntry {
                name: name.clone(),
                stat: with_stats
                    .then(|| self.nodes.get(&path::join(path, name)).map(Znode::stat))
                    .flatten(),
            })
            .collect();
        Ok((node.stat(), children))
    }

    /// Up to `limit` names of the children of `path` that start with `prefix`, in name order,
    /// found in the children's order without reading the others.
    pub fn children_with_prefix(
        &self,
        path: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, ApiError> {
        path::validate(path)?;
        let node = self.nodes.get(path).ok_or_else(|| ApiError::at(ErrorCode::NoNode, path))?;
        let from = (std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded);
        Ok(node
            .children
            .range::<str, _>(from)
            .take_while(|name| name.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }

    /// The child of `path` whose name ends in the lowest sequence number
    /// ([`path::sequence`]; the lowest name among equal numbers), if any child's does: a
    /// lookup in the znode's index of its sequential children.
    pub fn first_sequential(&self, path: &str) -> Result<Option<String>, ApiError> {
        path::validate(path)?;
        let node = self.nodes.get(path).ok_or_else(|| ApiError::at(ErrorCode::NoNode, path))?;
        Ok(node.sequential.first().map(|(_, name)| name.clone()))
    }

    /// The names of the children of the znode at `path` in name order (none if there is no
    /// such znode), without copying them: for views that show only the first few.
    pub fn child_names(&self, path: &str) -> impl Iterator<Item = &str> {
        self.nodes.get(path).into_iter().flat_map(|node| node.children.iter().map(String::as_str))
    }

    /// The highest fencing token given so far.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The live sessions in id order.
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, &Session)> {
        self.sessions.iter().map(|(id, session)| (*id, session))
    }

    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id)
    }

    /// Deployed recipes.
    pub fn recipes(&self) -> &RecipeTable {
        &self.recipes
    }

    /// Administrators, tokens and quotas.
    pub fn access(&self) -> &AccessTable {
        &self.access
    }

    /// What `name` holds: its sessions, and the znodes and bytes it created.
    pub fn usage(&self, name: &str) -> Usage {
        self.usage.get(name).copied().unwrap_or_default()
    }

    /// Who `principal` is as of this state (`auth-failed` for a revoked token).
    pub fn caller(&self, principal: &Principal) -> Result<Caller, ApiError> {
        self.access.caller(principal)
    }

    /// The ACL that decides who may read `path`, whose own ACL is `own`: its own, but strictly
    /// inside a recipe's namespace the namespace root's. A recipe's state is read as one thing:
    /// what it creates keeps no ACL of its own worth setting, and a grant on the root reaches
    /// what the recipe made before it.
    pub fn governing_acl<'a>(&'a self, path: &str, own: &'a Acl) -> &'a Acl {
        match paths::recipe_path(path) {
            Some((name, relative)) if relative != "/" => {
                self.nodes.get(&paths::namespace(name)).map_or(own, |root| &root.acl)
            }
            _ => own,
        }
    }

    /// Whether `caller` may learn what is at `path`: `no-auth` unless it may read the znode,
    /// or, when there is none, the nearest znode above it (whose children say it is not there).
    pub fn check_read(&self, caller: &Caller, path: &str) -> Result<(), ApiError> {
        path::validate(path)?;
        let mut at = path;
        loop {
            if let Some(node) = self.nodes.get(at) {
                let acl = self.governing_acl(at, &node.acl);
                return caller.require(acl, cairn_wire::access::READ, path);
            }
            if at == "/" {
                return Err(ApiError::at(ErrorCode::NoAuth, path));
            }
            at = path::parent(at);
        }
    }

    /// Whether `session` owns an ephemeral znode below `prefix` (a namespace root): its stake in
    /// that recipe.
    pub fn owns_ephemeral_below(&self, session: SessionId, prefix: &str) -> bool {
        let Some(owned) = self.ephemerals.get(&session) else { return false };
        let below = format!("{prefix}/");
        owned.range(below.clone()..).next().is_some_and(|path| path.starts_with(&below))
    }

    /// A session's ephemeral znodes in path order.
    pub fn ephemerals_of(&self, id: SessionId) -> impl DoubleEndedIterator<Item = &String> {
        self.ephemerals.get(&id).into_iter().flatten()
    }

    /// Whether a reap entry applied at `now_ms` would delete a TTL znode. The leader asks this
    /// of its own state to decide when to propose one.
    pub fn ttl_due(&self, now_ms: u64) -> bool {
        self.ttl_nodes
            .iter()
            .any(|path| self.nodes.get(path).is_some_and(|n| ttl_expired(n, now_ms)))
    }

    /// Encodes the tree for a snapshot.
    pub fn to_image(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        #[derive(Serialize)]
        struct ImageRef<'a> {
            nodes: &'a BTreeMap<String, Znode>,
            sessions: &'a BTreeMap<SessionId, Session>,
            next_session_id: u64,
            recipes: &'a RecipeTable,
            access: &'a AccessTable,
            last_zxid: Zxid,
            clock_ms: u64,
            fencing_token: u64,
        }
        rmp_serde::to_vec_named(&ImageRef {
            nodes: &self.nodes,
            sessions: &self.sessions,
            next_session_id: self.next_session_id,
            recipes: &self.recipes,
            access: &self.access,
            last_zxid: self.last_zxid,
            clock_ms: self.clock_ms,
            fencing_token: self.fencing_token,
        })
    }

    /// Decodes a tree from a snapshot and checks it whole before anyone reads it.
    pub fn from_image(bytes: &[u8]) -> Result<DataTree, ImageError> {
        let mut image: TreeImage = rmp_serde::from_slice(bytes)?;
        // Znodes that shared an ACL before the snapshot share it again.
        let mut shared: std::collections::HashMap<Acl, Acl> = std::collections::HashMap::new();
        for node in image.nodes.values_mut() {
            node.acl = shared.entry(node.acl.clone()).or_insert_with(|| node.acl.clone()).clone();
            node.sequential = Znode::sequential_of(&node.children);
        }
        let ttl_nodes = image
            .nodes
            .iter()
            .filter(|(_, node)| matches!(node.kind, NodeKind::Ttl { .. }))
            .map(|(path, _)| path.clone())
            .collect();
        let mut ephemerals: BTreeMap<SessionId, BTreeSet<String>> = BTreeMap::new();
        for (path, node) in &image.nodes {
            if node.kind == NodeKind::Ephemeral {
                ephemerals.entry(SessionId(node.ephemeral_owner)).or_default().insert(path.clone());
            }
        }
        let stored_bytes = image
            .nodes
            .iter()
            .map(|(path, node)| stored_bytes_of(path, &node.data, &node.acl))
            .sum();
        let usage = usage_of(&image.nodes, &image.sessions);
        let tree = DataTree {
            access: image.access,
            usage,
            stored_bytes,
            limits: TreeLimits::DEFAULT,
            nodes: image.nodes,
            ttl_nodes,
            sessions: image.sessions,
            next_session_id: image.next_session_id,
            ephemerals,
            recipes: image.recipes,
            last_zxid: image.last_zxid,
            clock_ms: image.clock_ms,
            fencing_token: image.fencing_token,
        };
        tree.check_invariants().map_err(ImageError::Invariant)?;
        Ok(tree)
    }
}

/// Applying an entry failed for a reason that is not the entry's own fault: this node's recipe
/// runtime is not the one the cluster runs, or its runtime broke. Another replica may apply the
/// same entry and succeed, so answering would let replicas differ: the node stops instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this node cannot apply entry {zxid}, so it stops rather than differ from the other replicas: {why}"
)]
pub struct NodeFault {
    pub zxid: Zxid,
    pub why: String,
}

/// A snapshot image that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("snapshot image does not decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("snapshot image breaks an invariant: {0}")]
    Invariant(String),
}

/// What each principal holds in `nodes` and `sessions`.
fn usage_of(
    nodes: &BTreeMap<String, Znode>,
    sessions: &BTreeMap<SessionId, Session>,
) -> BTreeMap<Arc<str>, Usage> {
    let mut usage: BTreeMap<Arc<str>, Usage> = BTreeMap::new();
    for (path, node) in nodes {
        let held = usage.entry(node.creator.clone()).or_default();
        held.znodes += 1;
        held.bytes += stored_bytes_of(path, &node.data, &node.acl);
    }
    for session in sessions.values() {
        usage.entry(session.principal.as_str().into()).or_default().sessions += 1;
    }
    usage
}

fn ttl_expired(node: &Znode, now_ms: u64) -> bool {
    match node.kind {
        NodeKind::Ttl { ttl_ms } => {
            node.children.is_empty() && now_ms >= node.mtime.saturating_add(ttl_ms)
        }
        _ => false,
    }
}

/// Serde for shared bytes: encoded as plain bytes, as `serde_bytes` would.
pub(crate) mod shared_bytes {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        bytes: &Arc<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Arc<Vec<u8>>, D::Error> {
        Ok(Arc::new(serde_bytes::ByteBuf::deserialize(deserializer)?.into_vec()))
    }
}
