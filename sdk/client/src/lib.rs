//! The Rust client library for Cairn: async, typed, pipelined, over QUIC.
//!
//! A [`Client`] holds a session and one QUIC connection to a node with one request stream on
//! it. Any number of tasks may call it at once: each request gets an id, goes out at once, and
//! its reply is matched by id, so requests are pipelined rather than taking turns. The node
//! applies one client's writes in the order they were sent, and a read sees every write sent
//! before it.
//!
//! The session keeps the client's ephemeral znodes and watches. The client pings on its own,
//! and when the connection drops it reconnects and resumes the session, registering its watches
//! again from the last zxid it saw; [`Client::session_state`] tells the application where the
//! session stands.
//!
//! ```no_run
//! # async fn example() -> Result<(), cairn_client::Error> {
//! use cairn_client::{Client, CreateOptions};
//!
//! use cairn_client::Credentials;
//!
//! let credentials = Credentials::from_ca_file("cairn-data/tls/ca.pem")?
//!     .with_certificate_files("cairn-data/tls/admin.pem", "cairn-data/tls/admin-key.pem")?;
//! let client = Client::connect("127.0.0.1:7181", &credentials).await?;
//! client.create("/config", b"v1", CreateOptions::persistent()).await?;
//! let (data, stat) = client.get("/config").await?;
//! client.set("/config", b"v2", Some(stat.version)).await?; // compare-and-set
//! # Ok(()) }
//! ```

mod barrier;
mod connection;
mod credentials;
mod election;
mod error;
mod lock;
pub mod op;
mod queue;
mod recipe;
mod rwlock;
mod semaphore;
mod session;
mod watches;

use std::sync::Arc;
use std::time::Duration;

pub use barrier::{Barrier, BarrierRound};
pub use cairn_wire::access::{ADMIN, ALL, CREATE, DELETE, READ, WRITE};
pub use cairn_wire::{AclEntry, Quota, Usage};
pub use cairn_wire::{
    ApiError, ChildEntry, CreateMode, ErrorCode, EventKind, MemberInfo, MultiOp, OpResult,
    RecipeInfo, RemoveKind, ServerInfo, SessionInfo, Stat,
};
use cairn_wire::{
    CreateRequest, DeleteRequest, MultiResult, Reply, Request, SetRequest, WatchKind, WatchSpec,
};
pub use connection::quic_client_config;
pub use credentials::Credentials;
pub use election::{Election, Leader, LeaderWatch, Leadership};
pub use error::Error;
pub use lock::{Lock, LockGuard, LockStatus, MultiLock, MultiLockGuard};
pub use queue::{Queue, QueueItem, QueueStatus};
pub use rwlock::{Access, RwLock, RwLockGuard, RwLockStatus};
pub use semaphore::{Permits, Semaphore};
use session::Shared;
pub use session::{Notification, SessionState};
pub use watches::{OneShotWatch, WatchEvent, WatchStream};

/// Session timeout a client asks for unless told otherwise.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// A session with a Cairn node. Cheap to clone: clones share the session and its connection.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// How [`Client::create`] makes a znode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateOptions {
    pub mode: CreateMode,
    pub sequential: bool,
    pub ttl: Option<Duration>,
}

impl CreateOptions {
    /// A plain znode that stays until deleted.
    pub fn persistent() -> CreateOptions {
        CreateOptions::default()
    }

    /// A znode deleted once its last child is deleted.
    pub fn container() -> CreateOptions {
        CreateOptions { mode: CreateMode::Container, ..CreateOptions::default() }
    }

    /// A znode deleted once it has had no children and no change for `ttl`.
    pub fn ttl(ttl: Duration) -> CreateOptions {
        CreateOptions { mode: CreateMode::Ttl, ttl: Some(ttl), ..CreateOptions::default() }
    }

    /// A znode owned by this client's session, deleted when the session ends.
    pub fn ephemeral() -> CreateOptions {
        CreateOptions { mode: CreateMode::Ephemeral, ..CreateOptions::default() }
    }

    /// Append the parent's 10-digit sequence number to the name.
    pub fn sequential(self) -> CreateOptions {
        CreateOptions { sequential: true, ..self }
    }

    pub(crate) fn request(self, path: &str, data: Vec<u8>) -> CreateRequest {
        CreateRequest {
            path: path.to_string(),
            data,
            null_data: false,
            mode: self.mode,
            sequential: self.sequential,
            // Durations past u64 milliseconds are far past the TTL limit; the node refuses them.
            ttl_ms: self.ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            acl: None,
        }
    }
}

/// First and longest pause before a request a cluster could not take is sent again.
pub const RETRY_PAUSE_MS_MIN: u64 = 50;
pub const RETRY_PAUSE_MS_MAX: u64 = 1_000;

/// Requests that change nothing, safe to send again.
fn is_read(request: &Request) -> bool {
    matches!(
        request,
        Request::Get { watch: false, .. }
            | Request::Exists { watch: false, .. }
            | Request::Children { watch: false, .. }
            | Request::Sync {}
            | Request::ServerInfo {}
            | Request::StateDigest {}
            | Request::ListSessions {}
            | Request::Ephemerals { .. }
            | Request::ListRecipes {}
            | Request::WhoAmI {}
            | Request::GetAcl { .. }
            | Request::GetQuota { .. }
    )
}

impl Client {
    /// Connects to the node at `server` (`host:port`) with `credentials` (the CA it trusts and
    /// the identity it presents) and opens a session with the default timeout. `server` may
    /// list several nodes of a cluster, `host:port,host:port,...` as ZooKeeper's connect string
    /// does: the session opens on the first that answers, and after a lost connection it
    /// resumes on the next, keeping its ephemerals and watches.
    pub async fn connect(server: &str, credentials: &Credentials) -> Result<Client, Error> {
        Client::connect_with_timeout(server, credentials, DEFAULT_SESSION_TIMEOUT).await
    }

    /// Connects like [`Client::connect`], asking for a session timeout of `session_timeout`.
    pub async fn connect_with_timeout(
        server: &str,
        credentials: &Credentials,
        session_timeout: Duration,
    ) -> Result<Client, Error> {
        Ok(Client { shared: Shared::connect(server, credentials, session_timeout).await? })
    }

    /// This client's session id.
    pub fn session_id(&self) -> u64 {
        self.shared.keys.id
    }

    /// The session timeout the node granted.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.shared.keys.timeout_ms)
    }

    /// Where the session stands now; `changed().await` on it to hear of every change.
    pub fn session_state(&self) -> tokio::sync::watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }

    /// Creates a znode and returns the path it got (with its sequence number, if sequential).
    pub async fn create(
        &self,
        path: &str,
        data: impl Into<Vec<u8>>,
        options: CreateOptions,
    ) -> Result<String, Error> {
        self.create_with_stat(path, data, options).await.map(|(path, _)| path)
    }

    /// Creates a znode and returns its path and stat.
    pub async fn create_with_stat(
        &self,
        path: &str,
        data: impl Into<Vec<u8>>,
        options: CreateOptions,
    ) -> Result<(String, Stat), Error> {
        match self.call(Request::Create(options.request(path, data.into()))).await? {
            Reply::Created { path, stat } => Ok((path, stat)),
            other => Err(unexpected("created", &other)),
        }
    }

    /// A znode's data and stat, linearizably.
    pub async fn get(&self, path: &str) -> Result<(Vec<u8>, Stat), Error> {
        self.read_get(path, false).await
    }

    /// A znode's stat, or `None` when it does not exist, linearizably.
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, Error> {
        self.read_exists(path, false).await
    }

    /// A znode's children's names in order, linearizably.
    pub async fn children(&self, path: &str) -> Result<Vec<String>, Error> {
        let (_, children) = self.read_children(path, false, false).await?;
        Ok(children.into_iter().map(|child| child.name).collect())
    }

    /// A znode's stat and its children with their stats, linearizably.
    pub async fn children_with_stats(&self, path: &str) -> Result<(Stat, Vec<ChildEntry>), Error> {
        self.read_children(path, true, false).await
    }

    /// Reads served from the connected node's state without the linearizability check: faster,
    /// possibly stale, never older than this client's own earlier writes.
    pub fn local(&self) -> LocalReads<'_> {
        LocalReads { client: self }
    }

    /// Replaces a znode's data; with `version`, only if the znode is at that version.
    pub async fn set(
        &self,
        path: &str,
        data: impl Into<Vec<u8>>,
        version: Option<u32>,
    ) -> Result<Stat, Error> {
        let request =
            SetRequest { path: path.to_string(), data: data.into(), null_data: false, version };
        match self.call(Request::Set(request)).await? {
            Reply::Stat { stat } => Ok(stat),
            other => Err(unexpected("stat", &other)),
        }
    }

    /// Deletes a childless znode; with `version`, only if the znode is at that version.
    pub async fn delete(&self, path: &str, version: Option<u32>) -> Result<(), Error> {
        let request = DeleteRequest { path: path.to_string(), version };
        match self.call(Request::Delete(request)).await? {
            Reply::Deleted {} => Ok(()),
            other => Err(unexpected("deleted", &other)),
        }
    }

    /// Applies `ops` all-or-nothing. On failure nothing was applied and the error names the
    /// operation that failed ([`Error::MultiFailed`]).
    pub async fn multi(&self, ops: Vec<MultiOp>) -> Result<Vec<OpResult>, Error> {
        let results = match self.call(Request::Multi { ops }).await? {
            Reply::Multi { results } => results,
            other => return Err(unexpected("multi", &other)),
        };
        let mut done = Vec::with_capacity(results.len());
        let mut failure = None;
        for (index, result) in results.into_iter().enumerate() {
            match result {
                MultiResult::Ok(result) => done.push(result),
                MultiResult::Error(error) if error.code == ErrorCode::RolledBack => {}
                MultiResult::Error(error) => failure = Some(Error::MultiFailed { index, error }),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(done),
        }
    }

    /// Waits until the connected node has applied every write committed before this call;
    /// returns the zxid it has reached.
    pub async fn sync(&self) -> Result<u64, Error> {
        let (zxid, reply) = self.shared.call(Request::Sync {}).await?;
        match reply {
            Reply::Synced {} => Ok(zxid),
            other => Err(unexpected("synced", &other)),
        }
    }

    /// The connected node's description of itself.
    /// Adds a node (started to join) to the cluster: a learner until it has caught up, then a
    /// voter. Returns the members once this node knows of the change.
    pub async fn add_member(
        &self,
        node_id: u64,
        peer_addr: &str,
        client_addr: &str,
    ) -> Result<Vec<MemberInfo>, Error> {
        self.add_node(node_id, peer_addr, client_addr, true).await
    }

    /// Adds a node as a learner for good: an observer that serves reads and forwards writes
    /// but does not vote, so it adds read capacity without slowing commits.
    pub async fn add_learner(
        &self,
        node_id: u64,
        peer_addr: &str,
        client_addr: &str,
    ) -> Result<Vec<MemberInfo>, Error> {
        self.add_node(node_id, peer_addr, client_addr, false).await
    }

    async fn add_node(
        &self,
        node_id: u64,
        peer_addr: &str,
        client_addr: &str,
        voter: bool,
    ) -> Result<Vec<MemberInfo>, Error> {
        let request = Request::AddMember {
            node_id,
            peer_addr: peer_addr.to_string(),
            client_addr: client_addr.to_string(),
            voter,
        };
        match self.call(request).await? {
            Reply::MembershipChanged { members } => Ok(members),
            other => Err(unexpected("membership-changed", &other)),
        }
    }

    /// This node's digest of the replicated state and the zxid it is as of: nodes that have
    /// applied the same log report the same digest.
    pub async fn state_digest(&self) -> Result<(u64, String), Error> {
        match self.call(Request::StateDigest {}).await? {
            Reply::StateDigest { zxid, sha256 } => Ok((zxid, sha256)),
            other => Err(unexpected("state-digest", &other)),
        }
    }

    /// Removes a node from the cluster.
    pub async fn remove_member(&self, node_id: u64) -> Result<Vec<MemberInfo>, Error> {
        match self.call(Request::RemoveMember { node_id }).await? {
            Reply::MembershipChanged { members } => Ok(members),
            other => Err(unexpected("membership-changed", &other)),
        }
    }

    pub async fn server_info(&self) -> Result<ServerInfo, Error> {
        match self.call(Request::ServerInfo {}).await? {
            Reply::ServerInfo(info) => Ok(info),
            other => Err(unexpected("server-info", &other)),
        }
    }

    /// The highest zxid any reply or event has carried.
    pub fn last_zxid(&self) -> u64 {
        self.shared.last_zxid.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the session (its ephemerals are deleted at once) and the connection.
    pub async fn close(&self) -> Result<(), Error> {
        self.shared.close().await
    }

    /// A znode's data and stat, with a one-shot watch for its next data change or deletion.
    pub async fn get_watch(&self, path: &str) -> Result<(Vec<u8>, Stat, OneShotWatch), Error> {
        let spec = WatchSpec { path: path.to_string(), kind: WatchKind::Data };
        let watch = self.shared.watchers().add_one_shot(spec.clone());
        let request = Request::Get { path: path.to_string(), local: false, watch: true };
        match self.watched_call(request, &[&spec]).await? {
            Reply::Data { data, stat, .. } => Ok((data, stat, watch)),
            other => Err(unexpected("data", &other)),
        }
    }

    /// A znode's stat or `None`, with a one-shot watch: for its creation if it does not exist,
    /// else for its next data change or deletion.
    pub async fn exists_watch(&self, path: &str) -> Result<(Option<Stat>, OneShotWatch), Error> {
        // Which watch the node sets depends on what it finds; listen for both, keep one.
        let data = WatchSpec { path: path.to_string(), kind: WatchKind::Data };
        let exists = WatchSpec { path: path.to_string(), kind: WatchKind::Exists };
        let (data_watch, exists_watch) = {
            let mut watchers = self.shared.watchers();
            (watchers.add_one_shot(data.clone()), watchers.add_one_shot(exists.clone()))
        };
        let request = Request::Exists { path: path.to_string(), local: false, watch: true };
        let stat = match self.watched_call(request, &[&data, &exists]).await? {
            Reply::Exists { stat } => stat,
            other => return Err(unexpected("exists", &other)),
        };
        if stat.is_some() {
            self.shared.watchers().forget(&exists);
            Ok((stat, data_watch))
        } else {
            self.shared.watchers().forget(&data);
            Ok((stat, exists_watch))
        }
    }

    /// A znode's children, with a one-shot watch for the next child added or removed (or the
    /// znode's deletion).
    pub async fn children_watch(&self, path: &str) -> Result<(Vec<String>, OneShotWatch), Error> {
        let spec = WatchSpec { path: path.to_string(), kind: WatchKind::Children };
        let watch = self.shared.watchers().add_one_shot(spec.clone());
        let request = Request::Children {
            path: path.to_string(),
            with_stats: false,
            local: false,
            watch: true,
        };
        match self.watched_call(request, &[&spec]).await? {
            Reply::Children { children, .. } => {
                Ok((children.into_iter().map(|child| child.name).collect(), watch))
            }
            other => Err(unexpected("children", &other)),
        }
    }

    /// A persistent watch on `path` (and, if `recursive`, every path below it): every change in
    /// zxid order, kept across reconnects.
    pub async fn watch(&self, path: &str, recursive: bool) -> Result<WatchStream, Error> {
        let kind = if recursive { WatchKind::PersistentRecursive } else { WatchKind::Persistent };
        let spec = WatchSpec { path: path.to_string(), kind };
        let stream = self.shared.watchers().add_persistent(spec.clone());
        let request = Request::AddWatch { path: path.to_string(), recursive };
        match self.watched_call(request, &[&spec]).await? {
            Reply::Watching {} => Ok(stream),
            other => Err(unexpected("watching", &other)),
        }
    }

    /// Removes this session's watches of `kind` on `path`; returns how many the node removed.
    pub async fn remove_watches(&self, path: &str, kind: RemoveKind) -> Result<u32, Error> {
        match self.call(Request::RemoveWatches { path: path.to_string(), kind }).await? {
            Reply::WatchesRemoved { count } => Ok(count),
            other => Err(unexpected("watches-removed", &other)),
        }
    }

    /// The live sessions of the cluster.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        match self.call(Request::ListSessions {}).await? {
            Reply::Sessions { sessions } => Ok(sessions),
            other => Err(unexpected("sessions", &other)),
        }
    }

    /// The ephemeral znodes of a session (this client's when `session_id` is `None`).
    pub async fn ephemerals(&self, session_id: Option<u64>) -> Result<Vec<String>, Error> {
        match self.call(Request::Ephemerals { session_id }).await? {
            Reply::Paths { paths } => Ok(paths),
            other => Err(unexpected("paths", &other)),
        }
    }

    /// Creates a znode with `acl` instead of its parent's ACL; returns the path it got.
    pub async fn create_with_acl(
        &self,
        path: &str,
        data: impl Into<Vec<u8>>,
        options: CreateOptions,
        acl: Vec<AclEntry>,
    ) -> Result<String, Error> {
        let mut request = options.request(path, data.into());
        request.acl = Some(acl);
        match self.call(Request::Create(request)).await? {
            Reply::Created { path, .. } => Ok(path),
            other => Err(unexpected("created", &other)),
        }
    }

    /// A znode's ACL and stat (its `aversion` counts the ACL's changes).
    pub async fn get_acl(&self, path: &str) -> Result<(Vec<AclEntry>, Stat), Error> {
        match self.call(Request::GetAcl { path: path.to_string() }).await? {
            Reply::Acl { acl, stat } => Ok((acl, stat)),
            other => Err(unexpected("acl", &other)),
        }
    }

    /// Replaces a znode's ACL, if its `aversion` is `version` (when given); returns its stat.
    pub async fn set_acl(
        &self,
        path: &str,
        acl: Vec<AclEntry>,
        version: Option<u32>,
    ) -> Result<Stat, Error> {
        match self.call(Request::SetAcl { path: path.to_string(), acl, version }).await? {
            Reply::Stat { stat } => Ok(stat),
            other => Err(unexpected("stat", &other)),
        }
    }

    /// The principal this client speaks for, and whether it administers the cluster.
    pub async fn who_am_i(&self) -> Result<(String, bool), Error> {
        match self.call(Request::WhoAmI {}).await? {
            Reply::Identity { principal, admin } => Ok((principal, admin)),
            other => Err(unexpected("identity", &other)),
        }
    }

    /// Issues a token for principal `name` (administrators only). The cluster keeps only its
    /// hash: this is the one chance to read it.
    pub async fn create_token(&self, name: &str) -> Result<String, Error> {
        match self.call(Request::CreateToken { name: name.to_string() }).await? {
            Reply::Token { token, .. } => Ok(token),
            other => Err(unexpected("token", &other)),
        }
    }

    /// Revokes principal `name`'s token (administrators only).
    pub async fn revoke_token(&self, name: &str) -> Result<(), Error> {
        match self.call(Request::RevokeToken { name: name.to_string() }).await? {
            Reply::TokenRevoked {} => Ok(()),
            other => Err(unexpected("token-revoked", &other)),
        }
    }

    /// Makes principal `name` an administrator or not (administrators only); returns the
    /// administrators now.
    pub async fn set_admin(&self, name: &str, admin: bool) -> Result<Vec<String>, Error> {
        match self.call(Request::SetAdmin { name: name.to_string(), admin }).await? {
            Reply::Admins { admins } => Ok(admins),
            other => Err(unexpected("admins", &other)),
        }
    }

    /// Sets what principal `name` may hold (administrators only).
    pub async fn set_quota(&self, name: &str, quota: Quota) -> Result<(), Error> {
        match self.call(Request::SetQuota { name: name.to_string(), quota }).await? {
            Reply::Quota { .. } => Ok(()),
            other => Err(unexpected("quota", &other)),
        }
    }

    /// What principal `name` (this client's when `None`) may hold and holds now.
    pub async fn quota(&self, name: Option<&str>) -> Result<(String, Quota, Usage), Error> {
        match self.call(Request::GetQuota { name: name.map(String::from) }).await? {
            Reply::Quota { name, quota, usage } => Ok((name, quota, usage)),
            other => Err(unexpected("quota", &other)),
        }
    }

    /// Deploys a new recipe name for `owner` (administrators only): its owner may deploy its
    /// next versions.
    pub async fn deploy_recipe_for(
        &self,
        name: &str,
        owner: &str,
        component: Vec<u8>,
    ) -> Result<(u32, String), Error> {
        let request = Request::DeployRecipe {
            name: name.to_string(),
            version: None,
            component,
            owner: Some(owner.to_string()),
        };
        match self.call(request).await? {
            Reply::RecipeDeployed { version, hash, .. } => Ok((version, hash)),
            other => Err(unexpected("recipe-deployed", &other)),
        }
    }

    /// Deploys a recipe component under `name` (as the next version unless `version` is given);
    /// returns the version and the component's hash.
    pub async fn deploy_recipe(
        &self,
        name: &str,
        version: Option<u32>,
        component: Vec<u8>,
    ) -> Result<(u32, String), Error> {
        let request =
            Request::DeployRecipe { name: name.to_string(), version, component, owner: None };
        match self.call(request).await? {
            Reply::RecipeDeployed { version, hash, .. } => Ok((version, hash)),
            other => Err(unexpected("recipe-deployed", &other)),
        }
    }

    /// Retires one version of a recipe.
    pub async fn retire_recipe(&self, name: &str, version: u32) -> Result<(), Error> {
        match self.call(Request::RetireRecipe { name: name.to_string(), version }).await? {
            Reply::RecipeRetired {} => Ok(()),
            other => Err(unexpected("recipe-retired", &other)),
        }
    }

    /// Stops recipe code cluster-wide for a change of runtime (see `cairn cluster
    /// freeze-recipes`). Returns the cluster's runtime.
    pub async fn freeze_recipes(&self) -> Result<Option<String>, Error> {
        match self.call(Request::FreezeRecipes {}).await? {
            Reply::RecipeRuntime { runtime, .. } => Ok(runtime),
            other => Err(unexpected("recipe-runtime", &other)),
        }
    }

    /// Moves the cluster's recipes to the runtime the node runs, ending a freeze; refused
    /// unless every member runs it. Returns the runtime adopted.
    pub async fn adopt_recipe_runtime(&self) -> Result<Option<String>, Error> {
        match self.call(Request::AdoptRecipeRuntime {}).await? {
            Reply::RecipeRuntime { runtime, .. } => Ok(runtime),
            other => Err(unexpected("recipe-runtime", &other)),
        }
    }

    /// The deployed recipes, by name then version.
    pub async fn recipes(&self) -> Result<Vec<RecipeInfo>, Error> {
        match self.call(Request::ListRecipes {}).await? {
            Reply::Recipes { recipes } => Ok(recipes),
            other => Err(unexpected("recipes", &other)),
        }
    }

    /// Runs one operation of a recipe (the newest version unless `version` is given),
    /// atomically against the replicated state; returns the recipe's result.
    pub async fn invoke(
        &self,
        name: &str,
        version: Option<u32>,
        op: &str,
        args: impl Into<Vec<u8>>,
    ) -> Result<Vec<u8>, Error> {
        let request = Request::Invoke {
            name: name.to_string(),
            version,
            op: op.to_string(),
            args: args.into(),
        };
        match self.call(request).await? {
            Reply::Invoked { result } => Ok(result),
            other => Err(unexpected("invoked", &other)),
        }
    }

    /// Messages recipes send this session, from now on.
    pub fn notifications(&self) -> tokio::sync::broadcast::Receiver<Notification> {
        self.shared.notifications.subscribe()
    }

    /// Sends a request; one a cluster could not take for now (no leader mid-election, the leader
    /// just lost) is sent again after a pause, for up to a session timeout. Only where that is
    /// safe: reads when the node was unavailable or not the leader, and writes only when the
    /// node said it is not the leader (they were not logged); a write that may have been logged
    /// is never repeated behind the application's back.
    async fn call(&self, request: Request) -> Result<Reply, Error> {
        let read = is_read(&request);
        let deadline = tokio::time::Instant::now() + self.session_timeout();
        let mut pause = Duration::from_millis(RETRY_PAUSE_MS_MIN);
        loop {
            match self.shared.call(request.clone()).await {
                Err(error)
                    if matches!(
                        (read, error.code()),
                        (true, Some(ErrorCode::Unavailable | ErrorCode::NotLeader))
                            | (false, Some(ErrorCode::NotLeader))
                    ) && tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(RETRY_PAUSE_MS_MAX));
                }
                other => return other.map(|(_, reply)| reply),
            }
        }
    }

    /// A call that sets a watch whose waiters are already registered (so an event that comes
    /// before the reply is not lost); they are forgotten if the call fails.
    async fn watched_call(&self, request: Request, specs: &[&WatchSpec]) -> Result<Reply, Error> {
        let result = self.call(request).await;
        if result.is_err() {
            let mut watchers = self.shared.watchers();
            for spec in specs {
                watchers.forget(spec);
            }
        }
        result
    }

    async fn read_get(&self, path: &str, local: bool) -> Result<(Vec<u8>, Stat), Error> {
        match self.call(Request::Get { path: path.to_string(), local, watch: false }).await? {
            Reply::Data { data, stat, .. } => Ok((data, stat)),
            other => Err(unexpected("data", &other)),
        }
    }

    async fn read_exists(&self, path: &str, local: bool) -> Result<Option<Stat>, Error> {
        match self.call(Request::Exists { path: path.to_string(), local, watch: false }).await? {
            Reply::Exists { stat } => Ok(stat),
            other => Err(unexpected("exists", &other)),
        }
    }

    async fn read_children(
        &self,
        path: &str,
        with_stats: bool,
        local: bool,
    ) -> Result<(Stat, Vec<ChildEntry>), Error> {
        match self
            .call(Request::Children { path: path.to_string(), with_stats, local, watch: false })
            .await?
        {
            Reply::Children { stat, children } => Ok((stat, children)),
            other => Err(unexpected("children", &other)),
        }
    }
}

/// Reads from the connected node's own state: see [`Client::local`].
#[derive(Debug, Clone, Copy)]
pub struct LocalReads<'a> {
    client: &'a Client,
}

impl LocalReads<'_> {
    pub async fn get(&self, path: &str) -> Result<(Vec<u8>, Stat), Error> {
        self.client.read_get(path, true).await
    }

    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, Error> {
        self.client.read_exists(path, true).await
    }

    pub async fn children(&self, path: &str) -> Result<Vec<String>, Error> {
        let (_, children) = self.client.read_children(path, false, true).await?;
        Ok(children.into_iter().map(|child| child.name).collect())
    }
}

fn unexpected(wanted: &str, got: &Reply) -> Error {
    Error::Protocol(format!("expected a {wanted} reply, got {got:?}"))
}
