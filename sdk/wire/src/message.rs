//! The messages: requests a client sends, responses a node sends back.
//!
//! Every struct encodes as a MessagePack map keyed by field name; every enum as a map of one
//! entry, the kebab-case variant name to the variant's fields. Optional fields may be omitted.

use serde::{Deserialize, Serialize};

use crate::ApiError;
use crate::access::{AclEntry, Quota, Usage};

/// One request, with the id its response will carry. Ids are the client's choice; a client with
/// several requests in flight keeps them distinct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u64,
    pub request: Request,
}

fn yes() -> bool {
    true
}

/// What a client asks of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Request {
    /// Create a znode.
    Create(CreateRequest),
    /// Read a znode's data and stat.
    Get {
        path: String,
        /// Serve from this node's state without the linearizability check (faster, may be
        /// stale; ZooKeeper's sequential consistency).
        #[serde(default)]
        local: bool,
        /// Also set a one-shot data watch on the path (needs a session).
        #[serde(default)]
        watch: bool,
    },
    /// Read a znode's stat, or learn that it does not exist (not an error).
    Exists {
        path: String,
        #[serde(default)]
        local: bool,
        /// Also set a one-shot data watch, which a create fires too (needs a session).
        #[serde(default)]
        watch: bool,
    },
    /// List a znode's children in name order, optionally with each child's stat.
    Children {
        path: String,
        #[serde(default)]
        with_stats: bool,
        #[serde(default)]
        local: bool,
        /// Also set a one-shot children watch on the path (needs a session).
        #[serde(default)]
        watch: bool,
    },
    /// Replace a znode's data.
    Set(SetRequest),
    /// Delete a childless znode.
    Delete(DeleteRequest),
    /// Apply several operations all-or-nothing.
    Multi { ops: Vec<MultiOp> },
    /// Wait until this node has applied every write committed before the request arrived.
    Sync {},
    /// Describe the node: its id, applied zxid and storage counters.
    ServerInfo {},
    /// A digest of this node's replicated state: nodes that applied the same log agree on it.
    StateDigest {},
    /// Add a node to the cluster: a learner first, a voter once it has caught up with the log
    /// — or, with `voter` false, a learner for good (an observer: it serves reads and forwards
    /// writes, but does not vote).
    AddMember {
        node_id: u64,
        peer_addr: String,
        client_addr: String,
        #[serde(default = "yes")]
        voter: bool,
    },
    /// Remove a node from the cluster.
    RemoveMember { node_id: u64 },
    /// Open a session and bind this stream to it.
    OpenSession {
        /// Wanted timeout: the session ends this long after the node last heard from it.
        timeout_ms: u64,
    },
    /// Bind this stream to an existing session (after a reconnect, to any node).
    ResumeSession { session_id: u64, secret: u64 },
    /// End this stream's session now: its ephemeral znodes are deleted at once.
    CloseSession {},
    /// Keep this stream's session alive (any request does; this one does nothing else).
    Ping {},
    /// Set a persistent watch on a path, or on a path and everything below it.
    AddWatch {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    /// Remove this session's watches of `kind` on `path`.
    RemoveWatches { path: String, kind: RemoveKind },
    /// Register watches again after a reconnect. Each fires at once if the watched znode
    /// changed after `since_zxid`; persistent watches get every change after it replayed, or
    /// a `resync-needed` event when the node no longer has them.
    SetWatches { since_zxid: u64, watches: Vec<WatchSpec> },
    /// List the live sessions.
    ListSessions {},
    /// List the ephemeral znodes of a session (this stream's when `session_id` is absent).
    Ephemerals {
        #[serde(default)]
        session_id: Option<u64>,
    },
    /// Deploy a recipe component (a `cairn:recipe` world component) under `name`; as the next
    /// version when `version` is absent. A new name needs an administrator, and belongs to
    /// `owner` (the deployer when absent); a new version needs its owner or an administrator.
    DeployRecipe {
        name: String,
        #[serde(default)]
        version: Option<u32>,
        #[serde(with = "serde_bytes")]
        component: Vec<u8>,
        #[serde(default)]
        owner: Option<String>,
    },
    /// Retire one version of a recipe.
    RetireRecipe { name: String, version: u32 },
    /// Stop running recipe code cluster-wide, to change the recipe runtime: invokes and
    /// deploys fail with `unavailable` and session-end hooks wait, until
    /// `adopt-recipe-runtime`.
    FreezeRecipes {},
    /// Run recipes on the runtime this node runs from now on, ending a freeze. Refused unless
    /// every member has announced that it runs it.
    AdoptRecipeRuntime {},
    /// List the deployed recipes.
    ListRecipes {},
    /// Speak for the principal a token names from now on, on every stream of this connection.
    Authenticate { token: String },
    /// Who this connection speaks for.
    WhoAmI {},
    /// A znode's ACL and stat (needs read, or admin, on the znode).
    GetAcl { path: String },
    /// Replace a znode's ACL (needs admin on the znode). Refused with `bad-version` unless the
    /// znode's `aversion` is `version`, when given.
    SetAcl {
        path: String,
        acl: Vec<AclEntry>,
        #[serde(default)]
        version: Option<u32>,
    },
    /// Issue a token for principal `name` (administrators only). The reply carries the token,
    /// once: the cluster keeps only its hash.
    CreateToken { name: String },
    /// Revoke principal `name`'s token (administrators only): connections that authenticated
    /// with it are refused from their next request on.
    RevokeToken { name: String },
    /// Make principal `name` an administrator, or not (administrators only). The last one
    /// cannot be removed.
    SetAdmin { name: String, admin: bool },
    /// Set what principal `name` may hold (administrators only).
    SetQuota { name: String, quota: Quota },
    /// What principal `name` (this connection's when absent) may hold and holds (its own, or
    /// any for an administrator).
    GetQuota {
        #[serde(default)]
        name: Option<String>,
    },
    /// Run one operation of a recipe, atomically against the replicated state.
    Invoke {
        name: String,
        /// The newest version when absent.
        #[serde(default)]
        version: Option<u32>,
        op: String,
        #[serde(with = "serde_bytes", default)]
        args: Vec<u8>,
    },
}

impl Request {
    /// The request's kind, as its tag on the wire names it: for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Create(_) => "create",
            Request::Get { .. } => "get",
            Request::Exists { .. } => "exists",
            Request::Children { .. } => "children",
            Request::Set(_) => "set",
            Request::Delete(_) => "delete",
            Request::Multi { .. } => "multi",
            Request::Sync { .. } => "sync",
            Request::ServerInfo { .. } => "server-info",
            Request::StateDigest { .. } => "state-digest",
            Request::AddMember { .. } => "add-member",
            Request::RemoveMember { .. } => "remove-member",
            Request::OpenSession { .. } => "open-session",
            Request::ResumeSession { .. } => "resume-session",
            Request::CloseSession { .. } => "close-session",
            Request::Ping { .. } => "ping",
            Request::AddWatch { .. } => "add-watch",
            Request::RemoveWatches { .. } => "remove-watches",
            Request::SetWatches { .. } => "set-watches",
            Request::ListSessions { .. } => "list-sessions",
            Request::Ephemerals { .. } => "ephemerals",
            Request::DeployRecipe { .. } => "deploy-recipe",
            Request::RetireRecipe { .. } => "retire-recipe",
            Request::FreezeRecipes { .. } => "freeze-recipes",
            Request::AdoptRecipeRuntime { .. } => "adopt-recipe-runtime",
            Request::ListRecipes { .. } => "list-recipes",
            Request::Authenticate { .. } => "authenticate",
            Request::WhoAmI { .. } => "who-am-i",
            Request::GetAcl { .. } => "get-acl",
            Request::SetAcl { .. } => "set-acl",
            Request::CreateToken { .. } => "create-token",
            Request::RevokeToken { .. } => "revoke-token",
            Request::SetAdmin { .. } => "set-admin",
            Request::SetQuota { .. } => "set-quota",
            Request::GetQuota { .. } => "get-quota",
            Request::Invoke { .. } => "invoke",
        }
    }
}

/// A deployed recipe version, as `list-recipes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeInfo {
    pub name: String,
    pub version: u32,
    /// SHA-256 of the component, hex.
    pub hash: String,
    pub bytes: u64,
}

/// Which watch: what a client registers, and what each event says it fired for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WatchSpec {
    pub path: String,
    pub kind: WatchKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchKind {
    /// One-shot: the znode's data change or deletion (set by `get`, and by `exists` on a
    /// znode that exists).
    Data,
    /// One-shot: the znode's creation (set by `exists` on a znode that does not exist).
    Exists,
    /// One-shot: a child added or removed, or the znode deleted (set by `children`).
    Children,
    /// Every creation, data change, deletion and children change of the path.
    Persistent,
    /// Every creation, data change and deletion of the path and every path below it.
    PersistentRecursive,
}

/// What `remove-watches` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemoveKind {
    /// Data and exists watches.
    Data,
    Children,
    Persistent,
    PersistentRecursive,
    Any,
}

/// The kind of znode a create makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CreateMode {
    /// Stays until deleted.
    #[default]
    Persistent,
    /// Deleted by the node once its last child is deleted.
    Container,
    /// Deleted by the node once it has had no children and no change for `ttl_ms`.
    Ttl,
    /// Owned by the creating stream's session and deleted when it ends; cannot have children.
    Ephemeral,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub path: String,
    #[serde(with = "serde_bytes", default)]
    pub data: Vec<u8>,
    /// ZooKeeper's null data: no data at all, which its clients tell apart from empty data
    /// (`data` is then empty). Cairn's own clients never need it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub null_data: bool,
    #[serde(default)]
    pub mode: CreateMode,
    /// Append the parent's 10-digit sequence number to the name.
    #[serde(default)]
    pub sequential: bool,
    /// For [`CreateMode::Ttl`] only, and required there.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// The new znode's ACL; its parent's when absent.
    #[serde(default)]
    pub acl: Option<Vec<AclEntry>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRequest {
    pub path: String,
    #[serde(with = "serde_bytes", default)]
    pub data: Vec<u8>,
    /// ZooKeeper's null data, as in [`CreateRequest::null_data`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub null_data: bool,
    /// Refuse with `bad-version` unless the znode's version is this one.
    #[serde(default)]
    pub version: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub path: String,
    /// Refuse with `bad-version` unless the znode's version is this one.
    #[serde(default)]
    pub version: Option<u32>,
}

/// One operation of a `multi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MultiOp {
    Create(CreateRequest),
    Set(SetRequest),
    Delete(DeleteRequest),
    /// Fail the whole `multi` unless the znode exists, at this version if one is given.
    Check {
        path: String,
        #[serde(default)]
        version: Option<u32>,
    },
}

/// One response, carrying the id of its request and the zxid of the state it reflects: for a
/// write the zxid of the write, for a read the last zxid the serving node had applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub id: u64,
    pub zxid: u64,
    pub response: Response,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Ok(Reply),
    Error(ApiError),
}

/// The successful result of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    /// To `create`: the path the znode got (with its sequence number) and its stat.
    Created { path: String, stat: Stat },
    /// To `get`.
    Data {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The znode holds ZooKeeper's null data (`data` is empty).
        #[serde(default, skip_serializing_if = "is_false")]
        null: bool,
        stat: Stat,
    },
    /// To `set`: the znode's new stat.
    Stat { stat: Stat },
    /// To `exists`: the stat, or nil when there is no such znode.
    Exists { stat: Option<Stat> },
    /// To `children`: the parent's stat and the children in name order.
    Children { stat: Stat, children: Vec<ChildEntry> },
    /// To `delete`.
    Deleted {},
    /// To `multi`: one result per operation, in order. When one operation failed, it carries
    /// its error, every other carries `rolled-back`, and nothing was applied.
    Multi { results: Vec<MultiResult> },
    /// To `sync`.
    Synced {},
    /// To `server-info`.
    ServerInfo(ServerInfo),
    /// To `state-digest`: SHA-256 (hex) of the state as of `zxid`.
    StateDigest { zxid: u64, sha256: String },
    /// To `add-member` and `remove-member`: the members now.
    MembershipChanged { members: Vec<MemberInfo> },
    /// To `open-session` and `resume-session`: the session this stream is now bound to.
    Session { session_id: u64, secret: u64, timeout_ms: u64 },
    /// To `close-session`.
    SessionClosed {},
    /// To `ping`.
    Pong {},
    /// To `add-watch` and `set-watches`.
    Watching {},
    /// To `remove-watches`: how many were removed.
    WatchesRemoved { count: u32 },
    /// To `list-sessions`.
    Sessions { sessions: Vec<SessionInfo> },
    /// To `ephemerals`.
    Paths { paths: Vec<String> },
    /// To `deploy-recipe`.
    RecipeDeployed { name: String, version: u32, hash: String },
    /// To `retire-recipe`.
    RecipeRetired {},
    /// To `freeze-recipes` and `adopt-recipe-runtime`: the runtime the cluster's recipes run
    /// on (none before the first deploy) and whether they are frozen for a change of it.
    RecipeRuntime { runtime: Option<String>, frozen: bool },
    /// To `list-recipes`, by name then version.
    Recipes { recipes: Vec<RecipeInfo> },
    /// To `authenticate` and `who-am-i`: the principal this connection speaks for.
    Identity { principal: String, admin: bool },
    /// To `get-acl`.
    Acl { acl: Vec<AclEntry>, stat: Stat },
    /// To `create-token`: the token, which the cluster does not keep.
    Token { name: String, token: String },
    /// To `revoke-token`.
    TokenRevoked {},
    /// To `set-admin`: the administrators now.
    Admins { admins: Vec<String> },
    /// To `set-quota` and `get-quota`.
    Quota { name: String, quota: Quota, usage: Usage },
    /// To `invoke`: the recipe's result, in its own encoding.
    Invoked {
        #[serde(with = "serde_bytes")]
        result: Vec<u8>,
    },
}

/// A live session, as `list-sessions` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub session_id: u64,
    pub timeout_ms: u64,
    pub ephemerals: u32,
    /// The principal that opened it.
    #[serde(default)]
    pub principal: String,
}

/// What a node sends on a stream: a response to a request, or an event nobody asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerFrame {
    Response(ResponseFrame),
    Event(EventFrame),
}

/// A watch event, or news of the stream's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFrame {
    pub kind: EventKind,
    /// The znode that changed (for session events, empty).
    pub path: String,
    /// The zxid of the change (for `resync-needed`, the zxid the node had reached).
    pub zxid: u64,
    /// The watch that fired; absent for session events and notifications.
    #[serde(default)]
    pub watch: Option<WatchSpec>,
    /// For `notification`: the message a recipe addressed to this stream's session.
    #[serde(default, with = "serde_bytes")]
    pub message: Option<Vec<u8>>,
    /// For `notification`: the recipe that sent it, as `name@version`.
    #[serde(default)]
    pub recipe: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Created,
    Deleted,
    DataChanged,
    ChildrenChanged,
    /// The node cannot tell what this watch missed: read the state again.
    ResyncNeeded,
    /// The stream's session has ended.
    SessionExpired,
    /// A recipe sent this session a message (a lock granted, an item for a waiting taker).
    /// A hint: the state is the truth.
    Notification,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildEntry {
    pub name: String,
    /// Present when the request asked `with_stats`.
    #[serde(default)]
    pub stat: Option<Stat>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MultiResult {
    Ok(OpResult),
    Error(ApiError),
}

/// The result of one `multi` operation that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpResult {
    Created { path: String, stat: Stat },
    Set { stat: Stat },
    Deleted {},
    Checked {},
}

/// A znode's metadata, as ZooKeeper's `Stat`. Times are milliseconds since the Unix epoch, as
/// stamped by the leader on the entry that made the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stat {
    /// zxid of the change that created the znode.
    pub czxid: u64,
    /// zxid of the change that last set its data.
    pub mzxid: u64,
    /// zxid of the change that last added or removed a child.
    pub pzxid: u64,
    pub ctime: u64,
    pub mtime: u64,
    /// Number of changes to the data.
    pub version: u32,
    /// Number of changes to the children.
    pub cversion: u32,
    /// Number of changes to the ACL.
    pub aversion: u32,
    /// Session id of the owner of an ephemeral znode, 0 otherwise.
    pub ephemeral_owner: u64,
    pub data_length: u32,
    pub num_children: u32,
}

/// A node's description of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub node_id: u64,
    /// The Raft leader as this node knows it.
    #[serde(default)]
    pub leader: Option<u64>,
    pub term: u64,
    /// The last zxid applied to this node's state.
    pub applied_zxid: u64,
    /// Log entries this node has written to its disk since it started.
    pub log_entries_written: u64,
    /// fsyncs of the log this node has made since it started: fewer than entries written when
    /// concurrent writes share them.
    pub log_fsyncs: u64,
    /// The zxid the latest snapshot covers, if one was built.
    #[serde(default)]
    pub snapshot_zxid: Option<u64>,
    /// The zxid up to which the log has been purged after a snapshot, if it has been.
    #[serde(default)]
    pub purged_zxid: Option<u64>,
    /// The cluster's members as this node knows them.
    #[serde(default)]
    pub members: Vec<MemberInfo>,
    /// The recipe runtime this node runs (engine and fuel accounting).
    #[serde(default)]
    pub recipe_runtime: String,
    /// The recipe runtime the cluster's recipes were deployed for, recorded in the replicated
    /// state by the first deploy; a node whose runtime differs stops rather than apply a recipe
    /// entry.
    #[serde(default)]
    pub cluster_recipe_runtime: Option<String>,
    /// Whether recipes are frozen for a change of runtime.
    #[serde(default)]
    pub recipes_frozen: bool,
}

/// One member of the cluster, as `server-info` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub node_id: u64,
    /// Where clients reach it (empty until the member has announced it).
    pub client_addr: String,
    /// Where the other nodes reach it (empty for a single node).
    pub peer_addr: String,
    /// A voter, or a learner that only replicates.
    pub voter: bool,
    /// On the leader: the last log index known to be on that member.
    #[serde(default)]
    pub matched_zxid: Option<u64>,
    /// The recipe runtime the member announced it runs (empty until it has).
    #[serde(default)]
    pub recipe_runtime: String,
}

/// A request frame whose body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedRequest {
    /// The request id, when the frame had a readable one: the error reply carries it.
    pub id: Option<u64>,
    pub reason: String,
}

impl RequestFrame {
    /// Decodes a frame body, keeping the request id when only the rest is malformed.
    pub fn decode(body: &[u8]) -> Result<RequestFrame, MalformedRequest> {
        #[derive(Deserialize)]
        struct IdOnly {
            id: u64,
        }
        rmp_serde::from_slice::<RequestFrame>(body).map_err(|error| MalformedRequest {
            id: rmp_serde::from_slice::<IdOnly>(body).ok().map(|frame| frame.id),
            reason: error.to_string(),
        })
    }
}

/// For `skip_serializing_if`: a flag that is off is left out of the frame.
fn is_false(flag: &bool) -> bool {
    !flag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, encode_frame};

    #[test]
    fn request_round_trips_as_named_map() {
        let frame = RequestFrame {
            id: 7,
            request: Request::Create(CreateRequest {
                path: "/a".into(),
                data: b"x".to_vec(),
                null_data: false,
                mode: CreateMode::Ttl,
                sequential: true,
                ttl_ms: Some(5),
                acl: None,
            }),
        };
        let bytes = encode_frame(&frame).expect("encodes");
        assert_eq!(RequestFrame::decode(&bytes[4..]), Ok(frame));
        // Field and variant names are on the wire, so other languages can read it.
        let text = String::from_utf8_lossy(&bytes);
        for word in ["id", "request", "create", "path", "mode", "ttl", "sequential", "ttl_ms"] {
            assert!(text.contains(word), "{word} missing from {text:?}");
        }
    }

    #[test]
    fn optional_fields_may_be_omitted() {
        // {"id": 3, "request": {"get": {"path": "/x"}}}, hand-encoded.
        let mut body = vec![0x82, 0xa2, b'i', b'd', 0x03, 0xa7];
        body.extend_from_slice(b"request");
        body.extend_from_slice(&[0x81, 0xa3, b'g', b'e', b't', 0x81, 0xa4]);
        body.extend_from_slice(b"path");
        body.extend_from_slice(&[0xa2, b'/', b'x']);
        let frame = RequestFrame::decode(&body).expect("decodes");
        assert_eq!(frame.request, Request::Get { path: "/x".into(), local: false, watch: false });
    }

    #[test]
    fn unknown_kind_keeps_the_id() {
        #[derive(Serialize)]
        struct Frame {
            id: u64,
            request: std::collections::BTreeMap<String, u8>,
        }
        let body = rmp_serde::to_vec_named(&Frame {
            id: 42,
            request: [("frobnicate".to_string(), 1)].into(),
        })
        .expect("encodes");
        let error = RequestFrame::decode(&body).expect_err("unknown kind");
        assert_eq!(error.id, Some(42));
        assert!(error.reason.contains("frobnicate"), "{}", error.reason);
        assert_eq!(RequestFrame::decode(&[0xc1, 0x00]).expect_err("garbage").id, None);
    }

    #[test]
    fn response_round_trips() {
        let frame = ResponseFrame {
            id: 1,
            zxid: 9,
            response: Response::Error(ApiError::at(ErrorCode::NoNode, "/a")),
        };
        let bytes = encode_frame(&frame).expect("encodes");
        let decoded: ResponseFrame = crate::decode_body(&bytes[4..]).expect("decodes");
        assert_eq!(decoded, frame);
    }
}
