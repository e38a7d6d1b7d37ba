//! What the console shows, as JSON: pure functions of the node's state (the tree, Raft's
//! metrics, the session tracker's clock) with no I/O. The admin listener's handlers call them
//! under the state's read lock and serialize what they return after letting it go, so each is
//! bounded in what it reads and copies.
//!
//! What a viewer sees: the shape of everything (znode names and stats, sessions, who holds and
//! who waits, fencing tokens, terms, queue depths, recipes); znode data, ACLs and recipe
//! records beyond those facts only where the viewer's principal may read them, as on the
//! client ports. An administrator sees everything.

use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use cairn_wire::{AclEntry, Stat};
use serde::Serialize;
use serde_json::Value;

use crate::raft::{Member, NodeId};
use crate::store::paths::{RECIPES_ROOT, namespace};
use crate::store::{Caller, DataTree, NodeKind, SessionId};

/// Children of a znode the tree view lists; the rest are counted.
pub const CHILDREN_SHOWN_MAX: usize = 1_000;
/// Bytes of a znode's data the tree view shows.
pub const DATA_SHOWN_BYTES_MAX: usize = 64 * 1024;
/// Sessions the sessions view lists; the rest are counted.
pub const SESSIONS_SHOWN_MAX: usize = 1_000;
/// Ephemeral paths listed per session.
pub const EPHEMERALS_SHOWN_MAX: usize = 20;
/// Instances (locks, queues, ...) listed per recipe.
pub const INSTANCES_SHOWN_MAX: usize = 200;
/// Entries (holders, waiters, candidates, members) listed per instance, in order.
pub const ENTRIES_SHOWN_MAX: usize = 100;
/// Bytes of one recipe record the coordination view reads.
pub const RECORD_SHOWN_BYTES_MAX: usize = 4 * 1024;
/// Bytes of recipe records one coordination view reads in all; past it, records are left out.
pub const RECORDS_SHOWN_BYTES_MAX: usize = 2 * 1024 * 1024;
/// The fields of a built-in recipe's records every viewer sees: who holds and waits, and the
/// tokens, terms and counts. Anything else in a record (an election candidate's data, say) is
/// shown only to a viewer who may read the recipe's namespace.
pub const RECORD_FACTS: [&str; 11] = [
    "token", "count", "session", "mode", "granted", "permits", "term", "leader", "round", "open",
    "leaving",
];

/// The cluster as this node sees it.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub node_id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: &'static str,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: Option<u64>,
    /// Whether this node's own view of each member's progress is known (it leads).
    pub progress_known: bool,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Serialize)]
pub struct MemberView {
    pub id: NodeId,
    pub client_addr: String,
    pub peer_addr: String,
    pub voter: bool,
    /// `leader`, `follower` or `learner`.
    pub role: &'static str,
    /// The last log index the leader knows this member holds (known on the leader only).
    pub match_index: Option<u64>,
    /// How far behind the leader's log it is (known on the leader only).
    pub lag: Option<u64>,
    pub recipe_runtime: String,
}

/// The cluster from Raft's metrics and the commit index this node knows.
pub fn cluster(metrics: &openraft::RaftMetrics<NodeId, Member>, commit_index: u64) -> ClusterView {
    let role = match metrics.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    };
    let last_log_index = metrics.last_log_index.unwrap_or(0);
    let members = crate::cluster::members_of(metrics)
        .into_iter()
        .map(|member| {
            let role = if Some(member.node_id) == metrics.current_leader {
                "leader"
            } else if member.voter {
                "follower"
            } else {
                "learner"
            };
            let progress = metrics.replication.as_ref();
            let match_index = member.matched_zxid.or_else(|| {
                // The leader holds its own log.
                (Some(member.node_id) == metrics.current_leader && progress.is_some())
                    .then_some(last_log_index)
            });
            MemberView {
                id: member.node_id,
                client_addr: member.client_addr,
                peer_addr: member.peer_addr,
                voter: member.voter,
                role,
                lag: progress.map(|_| last_log_index.saturating_sub(match_index.unwrap_or(0))),
                match_index,
                recipe_runtime: member.recipe_runtime,
            }
        })
        .collect();
    ClusterView {
        node_id: metrics.id,
        role,
        leader: metrics.current_leader,
        term: metrics.current_term,
        last_log_index,
        commit_index,
        applied_index: metrics.last_applied.map_or(0, |id| id.index),
        snapshot_index: metrics.snapshot.map(|id| id.index),
        progress_known: metrics.replication.is_some(),
        members,
    }
}

/// One znode.
#[derive(Debug, Serialize)]
pub struct ZnodeView {
    pub path: String,
    pub kind: NodeKind,
    pub stat: Stat,
    /// The session of an ephemeral znode, as `0x…` (a script cannot read every u64 exactly).
    pub ephemeral_owner: Option<String>,
    /// Whether the viewer may read its data and ACL (else they are left out).
    pub readable: bool,
    /// Its data as text, when it is UTF-8 (up to [`DATA_SHOWN_BYTES_MAX`]).
    pub data_text: Option<String>,
    /// Its data in hex (up to [`DATA_SHOWN_BYTES_MAX`]).
    pub data_hex: String,
    pub data_bytes: usize,
    pub data_truncated: bool,
    /// ZooKeeper's null data rather than empty data.
    pub null_data: bool,
    pub acl: Vec<AclEntry>,
    /// The first children in name order, and how many there are.
    pub children: Vec<String>,
    pub children_total: usize,
}

/// The znode at `path`, if there is one, as `viewer` may see it.
pub fn znode(tree: &DataTree, path: &str, viewer: &Caller) -> Option<ZnodeView> {
    let node = tree.node(path)?;
    let readable = tree.check_read(viewer, path).is_ok();
    let data = if readable { node.data() } else { &[] };
    let shown = &data[..data.len().min(DATA_SHOWN_BYTES_MAX)];
    let stat = node.stat();
    Some(ZnodeView {
        path: path.to_string(),
        kind: node.kind(),
        readable,
        data_text: std::str::from_utf8(shown).ok().map(str::to_string),
        data_hex: hex(shown),
        data_bytes: node.data().len(),
        data_truncated: shown.len() < node.data().len(),
        null_data: node.null_data(),
        acl: if readable { node.acl().to_vec() } else { Vec::new() },
        children: tree.child_names(path).take(CHILDREN_SHOWN_MAX).map(str::to_string).collect(),
        children_total: stat.num_children as usize,
        ephemeral_owner: (stat.ephemeral_owner != 0)
            .then(|| SessionId(stat.ephemeral_owner).to_string()),
        stat,
    })
}

/// One session.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// The session id in hex, as clients print it.
    pub id: String,
    pub timeout_ms: u64,
    pub principal: String,
    /// How long ago this node last heard from it, if it has.
    pub last_heard_ms: Option<u64>,
    pub ephemerals: usize,
    pub ephemeral_paths: Vec<String>,
    /// Watches it holds on this node (the node its client is connected to).
    pub watches: usize,
}

#[derive(Debug, Serialize)]
pub struct SessionsView {
    pub sessions: Vec<SessionView>,
    pub total: usize,
}

/// The live sessions, in id order.
pub fn sessions(
    tree: &DataTree,
    last_heard: &HashMap<SessionId, Instant>,
    watches: &HashMap<SessionId, usize>,
    now: Instant,
) -> SessionsView {
    let sessions = tree
        .sessions()
        .take(SESSIONS_SHOWN_MAX)
        .map(|(id, session)| SessionView {
            id: id.to_string(),
            timeout_ms: session.timeout_ms,
            principal: session.principal.clone(),
            last_heard_ms: last_heard
                .get(&id)
                .map(|heard| now.saturating_duration_since(*heard).as_millis() as u64),
            ephemerals: tree.ephemerals_of(id).count(),
            ephemeral_paths: tree.ephemerals_of(id).take(EPHEMERALS_SHOWN_MAX).cloned().collect(),
            watches: watches.get(&id).copied().unwrap_or(0),
        })
        .collect();
    SessionsView { sessions, total: tree.sessions().count() }
}

/// The state of one recipe's instances: its locks, queues, elections...
#[derive(Debug, Serialize)]
pub struct RecipeStateView {
    pub recipe: String,
    pub instances: Vec<InstanceView>,
    pub instances_total: usize,
}

/// One instance (a lock, a queue...): its record and its entries in the order they came.
#[derive(Debug, Serialize)]
pub struct InstanceView {
    pub name: String,
    /// Its record: JSON as the recipe wrote it, else text, else hex.
    pub record: Value,
    pub entries: Vec<EntryView>,
    pub entries_total: usize,
}

/// A znode under an instance: a holder or waiter, a candidate, a member, or (for a queue) one
/// of its lists.
#[derive(Debug, Serialize)]
pub struct EntryView {
    pub name: String,
    /// The sequence number its name ends with, which orders the entries.
    pub sequence: Option<u64>,
    /// The session whose ephemeral it is, as `0x…` (none for a persistent znode).
    pub session: Option<String>,
    pub record: Value,
    /// How many znodes are below it (a queue's items, tickets...).
    pub children: u32,
}

/// Every deployed recipe's instances, read from their namespaces, as `viewer` may see them.
pub fn coordination(tree: &DataTree, viewer: &Caller) -> Vec<RecipeStateView> {
    let mut budget = RECORDS_SHOWN_BYTES_MAX;
    tree.recipes()
        .deployed
        .keys()
        .filter_map(|name| {
            let root = namespace(name);
            tree.node(&root)?;
            let reader = Reader { full: tree.check_read(viewer, &root).is_ok() };
            let instances = tree
                .child_names(&root)
                .take(INSTANCES_SHOWN_MAX)
                .filter_map(|instance| instance_view(tree, &root, instance, reader, &mut budget))
                .collect();
            let instances_total = tree.child_names(&root).count();
            Some(RecipeStateView { recipe: name.clone(), instances, instances_total })
        })
        .collect()
}

/// How much of a recipe's records a viewer reads: all of them, or their facts.
#[derive(Debug, Clone, Copy)]
struct Reader {
    full: bool,
}

fn instance_view(
    tree: &DataTree,
    root: &str,
    name: &str,
    reader: Reader,
    budget: &mut usize,
) -> Option<InstanceView> {
    let path = format!("{root}/{name}");
    let node = tree.node(&path)?;
    // The first entries in sequence (arrival) order, picked by their names alone: a fair
    // lock's names start with the session, so name order is not arrival order. Names without
    // a number come after, in name order.
    let mut first: BinaryHeap<(u64, &str)> = BinaryHeap::with_capacity(ENTRIES_SHOWN_MAX + 1);
    let mut entries_total = 0;
    for entry in tree.child_names(&path) {
        entries_total += 1;
        first.push((sequence_of(entry).unwrap_or(u64::MAX), entry));
        if first.len() > ENTRIES_SHOWN_MAX {
            first.pop();
        }
    }
    let entries = first
        .into_sorted_vec()
        .into_iter()
        .filter_map(|(sequence, entry)| {
            let node = tree.node(&format!("{path}/{entry}"))?;
            let stat = node.stat();
            Some(EntryView {
                name: entry.to_string(),
                sequence: (sequence != u64::MAX).then_some(sequence),
                session: (stat.ephemeral_owner != 0)
                    .then(|| SessionId(stat.ephemeral_owner).to_string()),
                record: record(node.data(), reader, budget),
                children: stat.num_children,
            })
        })
        .collect();
    Some(InstanceView {
        name: name.to_string(),
        record: record(node.data(), reader, budget),
        entries,
        entries_total,
    })
}

/// The number a sequential znode's name ends with (`w-<session>-0000000042` → 42).
pub fn sequence_of(name: &str) -> Option<u64> {
    let digits = name.rsplit(['-', 'p']).next()?;
    (digits.len() >= 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A recipe record as JSON, as `reader` may read it: the recipe's JSON (for a reader of
/// facts only, an object's [`RECORD_FACTS`]), else its text, else hex; null when it is empty,
/// longer than [`RECORD_SHOWN_BYTES_MAX`] or past what is left of `budget`.
fn record(data: &[u8], reader: Reader, budget: &mut usize) -> Value {
    if data.is_empty() || data.len() > RECORD_SHOWN_BYTES_MAX || data.len() > *budget {
        return Value::Null;
    }
    *budget -= data.len();
    match serde_json::from_slice(data) {
        Ok(Value::Object(fields)) if !reader.full => Value::Object(
            fields
                .into_iter()
                .filter(|(key, _)| RECORD_FACTS.contains(&key.as_str()))
                .map(|(key, value)| {
                    let session = matches!(key.as_str(), "session" | "leader");
                    (key, for_scripts(value, session))
                })
                .collect(),
        ),
        _ if !reader.full => Value::Null,
        Ok(value) => for_scripts(value, false),
        Err(_) => match std::str::from_utf8(data) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => Value::String(format!("0x{}", hex(data))),
        },
    }
}

/// Integers a browser's script reads exactly: sessions (fields `session` and `leader`) as
/// their ids are written everywhere else (`0x…`), and other integers past 2^53 as text.
fn for_scripts(value: Value, a_session: bool) -> Value {
    const EXACT_IN_SCRIPTS: u64 = (1 << 53) - 1;
    match value {
        Value::Number(number) => match number.as_u64() {
            Some(id) if a_session => Value::String(SessionId(id).to_string()),
            Some(big) if big > EXACT_IN_SCRIPTS => Value::String(big.to_string()),
            _ => Value::Number(number),
        },
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|item| for_scripts(item, a_session)).collect())
        }
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| {
                    let session = matches!(key.as_str(), "session" | "leader");
                    (key, for_scripts(value, session))
                })
                .collect(),
        ),
        other => other,
    }
}

/// A deployed recipe version, with what this node counted of its calls.
#[derive(Debug, Serialize)]
pub struct RecipeView {
    pub name: String,
    pub version: u32,
    pub hash: String,
    pub bytes: usize,
    pub owner: String,
    pub newest: bool,
}

#[derive(Debug, Serialize)]
pub struct RecipesView {
    pub runtime: Option<String>,
    pub frozen: bool,
    pub versions: Vec<RecipeView>,
    /// By recipe name: calls, fuel and errors by kind, counted on this node since it started.
    pub usage: Vec<RecipeUsage>,
    pub namespace_root: &'static str,
}

#[derive(Debug, Serialize)]
pub struct RecipeUsage {
    pub name: String,
    pub calls: u64,
    pub fuel: u64,
    pub errors: Vec<(&'static str, u64)>,
}

/// The deployed recipes, and their usage as `usage` tells it by name.
pub fn recipes(tree: &DataTree, usage: impl Fn(&str) -> RecipeUsage) -> RecipesView {
    let table = tree.recipes();
    let versions = table
        .deployed
        .iter()
        .flat_map(|(name, versions)| {
            let newest = versions.keys().next_back().copied();
            versions.iter().map(move |(version, deployed)| RecipeView {
                name: name.clone(),
                version: *version,
                hash: deployed.hash.clone(),
                bytes: deployed.component.len(),
                owner: table.owners.get(name).cloned().unwrap_or_default(),
                newest: Some(*version) == newest,
            })
        })
        .collect();
    RecipesView {
        runtime: table.runtime.clone(),
        frozen: table.frozen,
        versions,
        usage: table.deployed.keys().map(|name| usage(name)).collect(),
        namespace_root: RECIPES_ROOT,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_read_off_the_end_of_a_name() {
        assert_eq!(sequence_of("w-00000000000000ab-0000000042"), Some(42));
        assert_eq!(sequence_of("c-0000000007"), Some(7));
        assert_eq!(sequence_of("p2147483648-0000000003"), Some(3));
        assert_eq!(sequence_of("items"), None);
        assert_eq!(sequence_of("w-12"), None);
    }

    fn full(data: &[u8]) -> Value {
        record(data, Reader { full: true }, &mut RECORDS_SHOWN_BYTES_MAX.clone())
    }

    #[test]
    fn records_are_json_else_text_else_hex() {
        assert_eq!(full(br#"{"token":3}"#), serde_json::json!({"token": 3}));
        assert_eq!(full(b"hello"), Value::String("hello".into()));
        assert_eq!(full(&[0xff, 0x00]), Value::String("0xff00".into()));
        assert_eq!(full(b""), Value::Null);
    }

    #[test]
    fn a_viewer_without_read_sees_only_a_records_facts() {
        let facts = Reader { full: false };
        let candidate = br#"{"session":10,"data":"secret endpoint"}"#;
        let shown = record(candidate, facts, &mut RECORDS_SHOWN_BYTES_MAX.clone());
        assert_eq!(shown, serde_json::json!({"session": "0xa"}));
        assert_eq!(record(b"42", facts, &mut 100), Value::Null);
        assert_eq!(record(b"queue item", facts, &mut 100), Value::Null);
    }

    #[test]
    fn records_past_their_bounds_are_left_out() {
        let reader = Reader { full: true };
        let big = vec![b'x'; RECORD_SHOWN_BYTES_MAX + 1];
        let mut unlimited = usize::MAX;
        assert_eq!(record(&big, reader, &mut unlimited), Value::Null);
        let mut budget = 10;
        assert_eq!(record(b"0123456789", reader, &mut budget), Value::String("0123456789".into()));
        assert_eq!(budget, 0);
        assert_eq!(record(b"1", reader, &mut budget), Value::Null);
    }

    #[test]
    fn sessions_and_large_integers_reach_scripts_exactly() {
        let waiter = br#"{"session":18446744073709551615,"token":7,"count":1}"#;
        let shown = full(waiter);
        assert_eq!(shown["session"], Value::String("0xffffffffffffffff".into()));
        assert_eq!(shown["token"], serde_json::json!(7));
        let election = br#"{"term":3,"leader":10,"data":{"big":9007199254740993}}"#;
        let shown = full(election);
        assert_eq!(shown["leader"], Value::String("0xa".into()));
        assert_eq!(shown["data"]["big"], Value::String("9007199254740993".into()));
    }
}
