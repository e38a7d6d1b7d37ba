//! The admin listener: `/metrics` for Prometheus, `/healthz` and `/readyz` for orchestrators,
//! and the web console at `/` with the JSON it reads (`/api/...`), over HTTP/1.1.
//!
//! Request path: [`serve`] accepts a TCP connection (at most [`ADMIN_CONNECTIONS_MAX`] at once),
//! makes the TLS handshake when the listener is not on loopback, and hands it to hyper with the
//! router below; each handler reads the node's state under its read lock (`views`, bounded in
//! what it copies) or, for the console's two writes, proposes through `cluster` like any
//! client's write.
//!
//! Who may do what: `/healthz` and `/readyz` answer anyone (they tell only a status). The rest
//! needs the viewer right: on a loopback listener (plain HTTP) every connection has it, as every
//! local user can reach the port (the Host header must name loopback, so a web page cannot
//! rebind a name to it); on any other address a client certificate the cluster CA signed, or a
//! token (`Authorization: Bearer`), must name an administrator or one of `--admin-viewers`. The
//! console's writes (delete a znode, retire a recipe version) and a snapshot on demand
//! (`POST /api/snapshot`) need an administrator, named by a certificate or a token, and a
//! header a cross-site form cannot send.

pub mod health;
pub mod views;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cairn_wire::{DeleteRequest, ErrorCode};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::api::Frontend;
use crate::cluster::Cluster;
use crate::metrics::{RecipeErrorLabels, RecipeLabels};
use crate::store::{Action, Caller, Principal, TokenHash, Write};

/// Admin connections open at once; more wait in the kernel's backlog.
pub const ADMIN_CONNECTIONS_MAX: usize = 64;
/// How long a connection may take to send a request's head.
pub const ADMIN_HEADER_READ_MS: u64 = 10_000;
/// How long a TLS handshake may take.
pub const ADMIN_HANDSHAKE_MS: u64 = 10_000;
/// How long one connection may stay open (a browser keeps its connection between polls).
pub const ADMIN_CONNECTION_MS_MAX: u64 = 10 * 60_000;
/// Bytes of a request's head hyper buffers.
pub const ADMIN_REQUEST_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Bytes of a request's body (the console's writes are a path or a name).
pub const ADMIN_REQUEST_BODY_BYTES_MAX: usize = 16 * 1024;
/// How long a request's body may take to arrive (read only once the asker may write).
pub const ADMIN_BODY_READ_MS: u64 = 10_000;
/// Admin connections open at once from one address: one client cannot take them all.
pub const ADMIN_CONNECTIONS_PER_IP_MAX: usize = 16;
/// How long the listener waits after it fails to accept (out of file descriptors, say).
const ACCEPT_RETRY_MS: u64 = 100;
/// The header the console's writes carry: a cross-site form cannot set it.
pub const CONSOLE_HEADER: &str = "x-cairn-console";
/// Longest a snapshot on demand is waited for before the request gives up (the build goes on):
/// well within a connection's lifetime, so the asker hears why.
pub const SNAPSHOT_WAIT_MS: u64 = ADMIN_CONNECTION_MS_MAX / 2;
/// How often a snapshot on demand asks again while an older build (one that began before the
/// request) runs: openraft starts no second build meanwhile.
const SNAPSHOT_RETRIGGER_MS: u64 = 1_000;

/// Where and how the admin listener serves.
#[derive(Debug)]
pub struct Listener {
    pub tcp: TcpListener,
    /// TLS, for a listener that is not on loopback.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Listener {
    /// Binds `addr`: plain HTTP on loopback (unless `tls` says otherwise), TLS with the node's
    /// certificate elsewhere.
    pub async fn bind(
        addr: SocketAddr,
        tls: bool,
        tls_files: &crate::tls::TlsFiles,
    ) -> Result<Listener, crate::node::NodeError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| crate::node::NodeError::Listen { addr, source })?;
        let loopback = addr.ip().to_canonical().is_loopback();
        let tls =
            if loopback && !tls { None } else { Some(crate::tls::tcp_server_config(tls_files)?) };
        Ok(Listener { tcp, tls })
    }

    /// The console's URL.
    pub fn url(&self) -> Option<String> {
        let addr = self.tcp.local_addr().ok()?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Some(format!("{scheme}://{addr}/"))
    }
}

/// What the handlers read.
#[derive(Debug)]
pub struct Admin {
    pub cluster: Arc<Cluster>,
    pub frontend: Arc<Frontend>,
    pub data_dir: PathBuf,
    /// Principals with the viewer right on a listener that is not on loopback, besides the
    /// administrators.
    pub viewers: Vec<String>,
    pub started: Instant,
    pub probe: health::StorageProbe,
    /// One scrape at a time: the gauges it sets and the text it encodes go together.
    pub scraping: std::sync::Mutex<()>,
}

/// How a connection came: on a loopback listener, or over TLS with the certificate's name.
#[derive(Debug, Clone)]
enum Connection {
    Loopback,
    Tls { certificate: Option<String> },
}

/// Serves the admin listener until `shutdown`.
pub async fn serve(listener: Listener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    let router = router(admin);
    let connections = Arc::new(Semaphore::new(ADMIN_CONNECTIONS_MAX));
    let per_ip: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else { return };
        let accepted = tokio::select! {
            accepted = listener.tcp.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (socket, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin listener cannot accept");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let Some(from_ip) = IpSlot::take(&per_ip, remote.ip()) else {
            tracing::debug!(%remote, "admin connection refused: {ADMIN_CONNECTIONS_PER_IP_MAX} open from its address");
            continue;
        };
        let (router, tls, mut stop) = (router.clone(), listener.tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            let serving = async {
                match tls {
                    None => serve_connection(socket, router, Connection::Loopback).await,
                    Some(config) => {
                        let handshake = tokio_rustls::TlsAcceptor::from(config).accept(socket);
                        let timeout = Duration::from_millis(ADMIN_HANDSHAKE_MS);
                        let stream = match tokio::time::timeout(timeout, handshake).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%remote, %error, "admin TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                        let certificate = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .and_then(|leaf| crate::tls::certificate_principal(leaf).ok());
                        serve_connection(stream, router, Connection::Tls { certificate }).await;
                    }
                }
            };
            let lifetime = Duration::from_millis(ADMIN_CONNECTION_MS_MAX);
            tokio::select! {
                _ = tokio::time::timeout(lifetime, serving) => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
            drop((permit, from_ip));
        });
    }
}

/// One of an address's admin connections, given back when dropped.
struct IpSlot {
    open: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(open: &Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<IpSlot> {
        let mut counts = open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_default();
        if *count >= ADMIN_CONNECTIONS_PER_IP_MAX {
            return None;
        }
        *count += 1;
        Some(IpSlot { open: open.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

async fn serve_connection<S>(stream: S, router: Router, connection: Connection)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper_util::service::TowerToHyperService::new(router.layer(Extension(connection)));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(ADMIN_HEADER_READ_MS))
        .max_buf_size(ADMIN_REQUEST_HEAD_BYTES_MAX)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "admin connection ended");
    }
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(console))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/cluster", get(cluster))
        .route("/api/znode", get(znode))
        .route("/api/sessions", get(sessions))
        .route("/api/coordination", get(coordination))
        .route("/api/recipes", get(recipes))
        .route("/api/whoami", get(whoami))
        .route("/api/delete", post(delete_znode))
        .route("/api/retire", post(retire_recipe))
        .route("/api/snapshot", post(take_snapshot))
        .layer(axum::middleware::from_fn(loopback_names_only))
        .with_state(admin)
}

/// A loopback listener answers only requests addressed to loopback by name.
async fn loopback_names_only(
    Extension(connection): Extension<Connection>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Connection::Loopback = connection
        && let Err(refused) = check_loopback_host(request.headers())
    {
        return refused.into_response();
    }
    next.run(request).await
}

/// Who asks, and what they may do.
#[derive(Debug)]
struct Viewer {
    principal: Principal,
    /// The principal as the state knows it: what it may read, whether it administers.
    caller: Caller,
}

/// A refusal: its status and why.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let headers = [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ];
        (self.0, headers, self.1 + "\n").into_response()
    }
}

/// The viewer of every view: who asks, resolved before the handler runs.
impl FromRequestParts<Arc<Admin>> for Viewer {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, admin: &Arc<Admin>) -> Result<Self, Refused> {
        let connection = parts.extensions.get::<Connection>().ok_or_else(|| {
            Refused(StatusCode::INTERNAL_SERVER_ERROR, "a request with no connection".into())
        })?;
        admin.viewer(connection, &parts.headers)
    }
}

impl Admin {
    /// The viewer a request speaks for, or why it may not look.
    fn viewer(&self, connection: &Connection, headers: &HeaderMap) -> Result<Viewer, Refused> {
        let state = self.cluster.state.read();
        let principal = match bearer(headers) {
            Some(token) => {
                let hash = TokenHash::of(token);
                let name = state.tree.access().token_owner(&hash).ok_or_else(|| {
                    Refused(
                        StatusCode::UNAUTHORIZED,
                        "the token is not one the cluster keeps".into(),
                    )
                })?;
                Principal::Token { name: name.to_string(), hash }
            }
            None => match connection {
                Connection::Tls { certificate: Some(name) } => Principal::Certificate(name.clone()),
                _ => Principal::Anonymous,
            },
        };
        let caller = state
            .tree
            .caller(&principal)
            .map_err(|error| Refused(StatusCode::UNAUTHORIZED, error.to_string()))?;
        let views = caller.admin
            || matches!(connection, Connection::Loopback)
            || self.viewers.iter().any(|viewer| **viewer == *caller.name);
        if !views {
            let status = match principal {
                Principal::Anonymous => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            return Err(Refused(
                status,
                format!("{} has no viewer right on this listener", caller.name),
            ));
        }
        Ok(Viewer { principal, caller })
    }

    fn commit_index(&self) -> u64 {
        crate::metrics::get().raft_commit_index.get().max(0) as u64
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

/// A loopback listener answers only requests addressed to loopback by name: a page from
/// elsewhere that rebinds its own name to 127.0.0.1 sends its own name.
fn check_loopback_host(headers: &HeaderMap) -> Result<(), Refused> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    if matches!(name, "localhost" | "127.0.0.1" | "[::1]") {
        return Ok(());
    }
    Err(Refused(
        StatusCode::MISDIRECTED_REQUEST,
        format!("this listener serves loopback names, not {host:?}"),
    ))
}

async fn console() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"),
        ],
        include_str!("console.html"),
    )
        .into_response()
}

async fn metrics(State(admin): State<Arc<Admin>>, _viewer: Viewer) -> Response {
    let text = {
        let _one_at_a_time = admin.scraping.lock().unwrap_or_else(PoisonError::into_inner);
        refresh_gauges(&admin);
        crate::metrics::get().encode()
    };
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// Sets the gauges read off the node's state.
fn refresh_gauges(admin: &Admin) {
    use crate::metrics::gauge;
    let metrics = crate::metrics::get();
    let raft = admin.cluster.raft.metrics().borrow().clone();
    metrics.raft_term.set(gauge(raft.current_term));
    metrics.raft_leader.set(gauge(raft.current_leader.unwrap_or(0)));
    metrics.raft_is_leader.set(i64::from(raft.current_leader == Some(raft.id)));
    let last_log_index = raft.last_log_index.unwrap_or(0);
    metrics.raft_last_log_index.set(gauge(last_log_index));
    metrics.raft_applied_index.set(gauge(raft.last_applied.map_or(0, |id| id.index)));
    metrics.snapshot_index.set(gauge(raft.snapshot.map_or(0, |id| id.index)));
    let membership = raft.membership_config.membership();
    metrics.raft_members.set(gauge(membership.nodes().count() as u64));
    metrics.raft_member_match_index.clear();
    metrics.raft_member_lag.clear();
    if let Some(progress) = &raft.replication {
        for (id, _) in membership.nodes() {
            let matched = if *id == raft.id {
                last_log_index
            } else {
                progress.get(id).copied().flatten().map_or(0, |log_id| log_id.index)
            };
            let labels = crate::metrics::MemberLabels { member: id.to_string() };
            metrics.raft_member_match_index.get_or_create(&labels).set(gauge(matched));
            metrics
                .raft_member_lag
                .get_or_create(&labels)
                .set(gauge(last_log_index.saturating_sub(matched)));
        }
    }
    metrics.peer_rtt_seconds.clear();
    for (id, rtt) in crate::raft::peer::round_trips() {
        let labels = crate::metrics::MemberLabels { member: id.to_string() };
        metrics.peer_rtt_seconds.get_or_create(&labels).set(rtt.as_secs_f64());
    }
    {
        let state = admin.cluster.state.read();
        let (znodes, bytes) = state.tree.size();
        metrics.znodes.set(gauge(znodes as u64));
        metrics.znode_data_bytes.set(gauge(bytes));
        metrics.sessions.set(gauge(state.tree.sessions().count() as u64));
        let deployed = state.tree.recipes().deployed.values().map(|v| v.len() as u64).sum();
        metrics.recipes_deployed.set(gauge(deployed));
        // Every deployed recipe's counters, at zero until it runs, so rates over them start at
        // once; bounded by the recipe names the cluster allows.
        for name in state.tree.recipes().deployed.keys() {
            let labels = RecipeLabels { recipe: name.clone() };
            metrics.recipe_calls.get_or_create_owned(&labels);
            metrics.recipe_fuel.get_or_create_owned(&labels);
            for kind in crate::metrics::RECIPE_ERROR_KINDS {
                metrics
                    .recipe_errors
                    .get_or_create_owned(&RecipeErrorLabels { recipe: name.clone(), kind });
            }
        }
    }
    metrics.watches.set(gauge(admin.frontend.watches.count()));
    metrics.uptime_seconds.set(gauge(admin.started.elapsed().as_secs()));
}

async fn healthz(State(admin): State<Arc<Admin>>) -> Response {
    let running = admin.cluster.raft.metrics().borrow().running_state.clone();
    let health = match running {
        Err(fatal) => Err(health::Unhealthy::Stopped(fatal.to_string())),
        Ok(()) => admin.probe.check(&admin.data_dir).await,
    };
    status_text(health)
}

async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    let raft = admin.cluster.raft.metrics().borrow().clone();
    status_text(health::readiness(&raft, admin.commit_index()))
}

/// `200 ok`, or `503` and why not.
fn status_text<E: std::fmt::Display>(outcome: Result<(), E>) -> Response {
    match outcome {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok\n").into_response(),
        Err(why) => Refused(StatusCode::SERVICE_UNAVAILABLE, why.to_string()).into_response(),
    }
}

async fn whoami(State(admin): State<Arc<Admin>>, viewer: Viewer) -> Response {
    Json(serde_json::json!({
        "principal": viewer.principal.name(),
        "admin": viewer.caller.admin,
        "node_id": admin.cluster.node_id,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn cluster(State(admin): State<Arc<Admin>>, _viewer: Viewer) -> Response {
    let raft = admin.cluster.raft.metrics().borrow().clone();
    Json(views::cluster(&raft, admin.commit_index())).into_response()
}

#[derive(Debug, Deserialize)]
struct PathQuery {
    path: String,
}

async fn znode(
    State(admin): State<Arc<Admin>>,
    viewer: Viewer,
    Query(query): Query<PathQuery>,
) -> Response {
    if let Err(error) = cairn_wire::path::validate(&query.path) {
        return Refused(StatusCode::BAD_REQUEST, error.to_string()).into_response();
    }
    // Serialized once the state's lock is let go.
    let view = views::znode(&admin.cluster.state.read().tree, &query.path, &viewer.caller);
    match view {
        Some(view) => Json(view).into_response(),
        None => Refused(StatusCode::NOT_FOUND, format!("no znode {}", query.path)).into_response(),
    }
}

async fn sessions(State(admin): State<Arc<Admin>>, _viewer: Viewer) -> Response {
    let last_heard = admin.cluster.sessions.last_heard();
    let watches = admin.frontend.watches.per_session();
    let view =
        views::sessions(&admin.cluster.state.read().tree, &last_heard, &watches, Instant::now());
    Json(view).into_response()
}

async fn coordination(State(admin): State<Arc<Admin>>, viewer: Viewer) -> Response {
    let view = {
        let state = admin.cluster.state.read();
        serde_json::json!({
            "fencing_token": state.tree.fencing_token(),
            "recipes": views::coordination(&state.tree, &viewer.caller),
        })
    };
    Json(view).into_response()
}

async fn recipes(State(admin): State<Arc<Admin>>, _viewer: Viewer) -> Response {
    let metrics = crate::metrics::get();
    let usage = |name: &str| {
        let labels = RecipeLabels { recipe: name.to_string() };
        views::RecipeUsage {
            name: name.to_string(),
            calls: metrics.recipe_calls.get_or_create(&labels).get(),
            fuel: metrics.recipe_fuel.get_or_create(&labels).get(),
            errors: crate::metrics::RECIPE_ERROR_KINDS
                .iter()
                .map(|kind| {
                    let labels = RecipeErrorLabels { recipe: name.to_string(), kind };
                    (*kind, metrics.recipe_errors.get_or_create(&labels).get())
                })
                .collect(),
        }
    };
    let view = views::recipes(&admin.cluster.state.read().tree, usage);
    Json(view).into_response()
}

/// An administrator asking through the console: the extractor of the console's writes, which
/// runs before their body is read.
#[derive(Debug)]
struct Administrator(Viewer);

impl FromRequestParts<Arc<Admin>> for Administrator {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, admin: &Arc<Admin>) -> Result<Self, Refused> {
        if !parts.headers.contains_key(CONSOLE_HEADER) {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                format!("a console write carries the {CONSOLE_HEADER} header"),
            ));
        }
        let viewer = Viewer::from_request_parts(parts, admin).await?;
        if !viewer.caller.admin {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                format!("{} is not an administrator", viewer.principal.name()),
            ));
        }
        Ok(Administrator(viewer))
    }
}

#[derive(Debug, Deserialize)]
struct DeleteBody {
    path: String,
    version: Option<u32>,
}

async fn delete_znode(
    State(admin): State<Arc<Admin>>,
    Administrator(viewer): Administrator,
    JsonBody(body): JsonBody<DeleteBody>,
) -> Response {
    let action = Action::Delete(DeleteRequest { path: body.path, version: body.version });
    write(&admin, viewer, action).await
}

#[derive(Debug, Deserialize)]
struct RetireBody {
    name: String,
    version: u32,
}

async fn retire_recipe(
    State(admin): State<Arc<Admin>>,
    Administrator(viewer): Administrator,
    JsonBody(body): JsonBody<RetireBody>,
) -> Response {
    let action = Action::RetireRecipe { name: body.name, version: body.version };
    write(&admin, viewer, action).await
}

#[derive(Debug, Deserialize)]
struct SnapshotBody {}

/// Builds a snapshot of this node's state now (as openraft does every
/// `--snapshot-every-entries`) and answers once one covers every entry applied when asked: the
/// zxid it covers, its size, and how long it took to have it (a build already under way when
/// asked counts). One that already covers them is answered at once. What the log before it
/// holds may then be purged, as after any snapshot.
async fn take_snapshot(
    State(admin): State<Arc<Admin>>,
    Administrator(viewer): Administrator,
    JsonBody(SnapshotBody {}): JsonBody<SnapshotBody>,
) -> Response {
    let applied = admin.cluster.applied_zxid().0;
    tracing::info!(principal = viewer.principal.name(), applied, "snapshot asked for");
    let raft = &admin.cluster.raft;
    let started = Instant::now();
    let deadline = started + Duration::from_millis(SNAPSHOT_WAIT_MS);
    let covers = |m: &openraft::RaftMetrics<_, _>| m.snapshot.is_some_and(|id| id.index >= applied);
    loop {
        let covered = covers(&raft.metrics().borrow());
        if !covered && let Err(error) = raft.trigger().snapshot().await {
            return Refused(StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response();
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(SNAPSHOT_RETRIGGER_MS));
        if let Ok(metrics) = raft.wait(Some(wait)).metrics(covers, "a covering snapshot").await {
            let zxid = metrics.snapshot.map_or(0, |id| id.index);
            // The latest snapshot's size: the one just built, as no other is newer.
            let bytes = crate::metrics::get().snapshot_bytes.get();
            let seconds = started.elapsed().as_secs_f64();
            return Json(serde_json::json!({ "zxid": zxid, "bytes": bytes, "seconds": seconds }))
                .into_response();
        }
        if Instant::now() >= deadline {
            let why = format!("no snapshot covering {applied} within {SNAPSHOT_WAIT_MS} ms");
            return Refused(StatusCode::SERVICE_UNAVAILABLE, why).into_response();
        }
    }
}

/// A console write's JSON body, read within [`ADMIN_BODY_READ_MS`] and
/// [`ADMIN_REQUEST_BODY_BYTES_MAX`]: the last extractor, so what checks the asker runs first.
#[derive(Debug)]
struct JsonBody<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Refused;

    async fn from_request(request: axum::extract::Request, _: &S) -> Result<Self, Refused> {
        read_json(request).await.map(JsonBody)
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: axum::extract::Request,
) -> Result<T, Refused> {
    let read = axum::body::to_bytes(request.into_body(), ADMIN_REQUEST_BODY_BYTES_MAX);
    let bytes = match tokio::time::timeout(Duration::from_millis(ADMIN_BODY_READ_MS), read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => return Err(Refused(StatusCode::BAD_REQUEST, error.to_string())),
        Err(_) => {
            let why = format!("the body did not arrive within {ADMIN_BODY_READ_MS} ms");
            return Err(Refused(StatusCode::REQUEST_TIMEOUT, why));
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|error| Refused(StatusCode::BAD_REQUEST, format!("the body: {error}")))
}

/// Proposes an administrator's write and answers with its outcome.
async fn write(admin: &Admin, viewer: Viewer, action: Action) -> Response {
    tracing::info!(principal = viewer.principal.name(), ?action, "console write");
    let write = Write { session: None, principal: viewer.principal, action };
    let (zxid, reply) = match admin.cluster.propose(write).await {
        Ok(applied) => applied.await,
        Err(error) => (admin.cluster.applied_zxid(), Err(error)),
    };
    match reply {
        Ok(_) => Json(serde_json::json!({ "ok": true, "zxid": zxid.0 })).into_response(),
        Err(error) => {
            let status = match error.code {
                ErrorCode::NoNode => StatusCode::NOT_FOUND,
                ErrorCode::NoAuth => StatusCode::FORBIDDEN,
                ErrorCode::BadVersion | ErrorCode::NotEmpty => StatusCode::CONFLICT,
                ErrorCode::Unavailable | ErrorCode::NotLeader => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            Refused(status, error.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, value.parse().expect("a header value"));
        headers
    }

    #[test]
    fn a_loopback_listener_answers_only_loopback_names() {
        for good in ["127.0.0.1:7180", "localhost:7180", "[::1]:7180", "localhost"] {
            assert!(check_loopback_host(&host(good)).is_ok(), "{good}");
        }
        for bad in ["evil.example:7180", "127.0.0.1.evil.example", "", "localhost.:80"] {
            assert!(check_loopback_host(&host(bad)).is_err(), "{bad}");
        }
        assert!(check_loopback_host(&HeaderMap::new()).is_err());
    }

    #[test]
    fn a_bearer_token_is_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("a header value"));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("a header value"));
        assert_eq!(bearer(&headers), None);
    }
}
