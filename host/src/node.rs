//! A running node: storage, Raft, the state machine, the client front end and the background
//! duties of a leader, started together and stopped together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_wire::ALPN;
use openraft::SnapshotPolicy;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, CONNECTION_IDLE_MS_MAX, Frontend, STREAMS_PER_CONNECTION_MAX};
use crate::cluster::duties::{self, STARTUP_LEADER_WAIT_MS};
use crate::cluster::forward::Forwarder;
use crate::cluster::{Cluster, liveness, service};
use crate::config::ServeConfig;
use crate::raft::log_store::LogStore;
use crate::raft::peer::{self, PEER_ALPN, PeerNetwork};
use crate::raft::state_machine::StateMachineStore;
use crate::raft::{Member, Raft, Storage};
use crate::recipe::{CompiledKey, RUNTIME_VERSION, RecipeRuntime};
use crate::tls;

/// Bytes of snapshot per install-snapshot request to a lagging or new node.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// How long one snapshot chunk may take to reach a node and be written there, in milliseconds.
pub const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 10_000;
/// The file in the data dir holding the key that signs this node's compiled recipes.
const COMPILED_KEY_FILE: &str = "compiled.key";

/// How long shutdown waits for clients to receive their last replies, in milliseconds.
pub const SHUTDOWN_DRAIN_MS: u64 = 3_000;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot create data dir {path}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    StorageOpen(#[from] crate::raft::StorageOpenError),
    #[error("storage: {0}")]
    Storage(#[from] crate::raft::StorageError),
    #[error("cannot start the log syncer: {0}")]
    Syncer(std::io::Error),
    #[error("raft configuration: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("raft stopped: {0}")]
    RaftFatal(#[from] openraft::error::Fatal<crate::raft::NodeId>),
    #[error("cannot initialize the cluster: {0}")]
    RaftInit(
        #[from]
        openraft::error::RaftError<
            crate::raft::NodeId,
            openraft::error::InitializeError<crate::raft::NodeId, Member>,
        >,
    ),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Recipes(#[from] crate::recipe::RuntimeError),
    #[error(transparent)]
    Builtin(#[from] duties::BuiltinError),
    #[error("no leader after {STARTUP_LEADER_WAIT_MS} ms")]
    NoLeader,
    #[error("the node stopped on a fatal error: {0}")]
    Fatal(String),
}

/// A started node. Dropping it does not stop it; call [`RunningNode::shutdown`].
pub struct RunningNode {
    raft: Raft,
    client_addr: SocketAddr,
    /// Where the ZooKeeper front end listens, if it is served.
    zk_addr: Option<SocketAddr>,
    zk_tls_addr: Option<SocketAddr>,
    /// The console's URL, if the admin listener is served.
    admin_url: Option<String>,
    ca_file: PathBuf,
    generated_certificates: bool,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    endpoint: quinn::Endpoint,
    /// The peer endpoint and the task serving it, for a cluster member.
    peers: Option<(quinn::Endpoint, JoinHandle<()>)>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("client_addr", &self.client_addr)
            .finish_non_exhaustive()
    }
}

impl RunningNode {
    /// Starts a node: opens storage (recovering what is there), starts Raft, bootstraps a
    /// single-node cluster on first start, waits for a leader, then serves clients.
    pub async fn start(config: &ServeConfig) -> Result<RunningNode, NodeError> {
        let started = std::time::Instant::now();
        config.validate()?;
        crate::files::private_dir(&config.data_dir)
            .map_err(|source| NodeError::DataDir { path: config.data_dir.clone(), source })?;

        let storage = Storage::open(&config.data_dir.join("store"))?;
        let counters = storage.counters.clone();
        let log_store = LogStore::new(storage.clone()).map_err(NodeError::Syncer)?;
        let compiled_dir =
            config.compiled_dir.clone().unwrap_or_else(|| config.data_dir.join("compiled"));
        // The key that signs compiled recipes lives in the data dir, apart from the compiled
        // files, so whoever can write those cannot sign one.
        let key_file =
            config.compiled_key.clone().unwrap_or_else(|| config.data_dir.join(COMPILED_KEY_FILE));
        let compiled_key = CompiledKey::load_or_create(&key_file)?;
        let recipes =
            Arc::new(RecipeRuntime::new()?.with_compiled_dir(&compiled_dir, compiled_key)?);
        let state_machine = StateMachineStore::open(storage, recipes.clone())?;
        let state = state_machine.state();
        let watches = state_machine.watches();

        let raft_config = openraft::Config {
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            // Keep one snapshot interval of log behind the snapshot for followers that lag.
            max_in_snapshot_log_to_keep: config.snapshot_every_entries,
            // Snapshots carry every deployed recipe's component: chunks of 1 MiB, each given
            // time to cross and be written.
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT_MS,
            ..config.timing.config()
        }
        .validate()?;
        // TLS first: the address the node announces must be the one it serves on.
        let names = certificate_names(config.listen, config.peer_listen);
        let (tls_files, generated_certificates) = node_certificates(config, &names)?;
        let peer_endpoint = match config.peer_listen {
            Some(addr) => {
                // Peers believe what a node's certificate says it is: it must say this node.
                let named = tls::own_node_id(&tls_files)?;
                if named != config.node_id {
                    return Err(NodeError::Tls(tls::TlsError::Config(format!(
                        "the node certificate {} names node {named}, not node {}",
                        tls_files.cert.display(),
                        config.node_id
                    ))));
                }
                let mut server = tls::peer_server_config(&tls_files, PEER_ALPN)?;
                server.transport_config(peer::transport());
                let mut endpoint = quinn::Endpoint::server(server, addr)
                    .map_err(|source| NodeError::Listen { addr, source })?;
                let mut client = tls::peer_client_config(&tls_files, PEER_ALPN)?;
                client.transport_config(peer::transport());
                endpoint.set_default_client_config(client);
                Some(endpoint)
            }
            None => None,
        };
        let routes: peer::Routes = Arc::new(config.peer_routes.clone());
        let network = match peer_endpoint.clone() {
            Some(endpoint) => PeerNetwork::new(endpoint, routes.clone()),
            None => PeerNetwork::none(),
        };
        let raft =
            Raft::new(config.node_id, Arc::new(raft_config), network, log_store, state_machine)
                .await?;
        let forwarder = Arc::new(Forwarder::new(config.node_id, peer_endpoint.clone(), routes));
        let cluster = Arc::new(Cluster::start(
            config.node_id,
            raft.clone(),
            state.clone(),
            counters,
            forwarder,
            recipes,
            config.timing.read_lease(),
        ));
        let peers = peer_endpoint.map(|endpoint| {
            let serving = tokio::spawn(service::serve(endpoint.clone(), cluster.peer_service()));
            (endpoint, serving)
        });

        let mut server_config = tls::server_config(&tls_files, ALPN)?;
        let mut transport = quinn::TransportConfig::default();
        // Sized for coordination traffic, which is small requests and replies, and for many
        // connections that are mostly idle: no unreliable datagrams (Cairn sends none), no
        // probing for a larger packet size, and no send buffer room for ten packets at once
        // (segmentation offload), which quinn keeps per connection once it was used.
        transport
            .max_concurrent_bidi_streams(STREAMS_PER_CONNECTION_MAX.into())
            .max_concurrent_uni_streams(0u32.into())
            .max_idle_timeout(Some(quinn::VarInt::from_u32(CONNECTION_IDLE_MS_MAX).into()))
            .datagram_receive_buffer_size(None)
            .mtu_discovery_config(None)
            .enable_segmentation_offload(false);
        server_config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server_config, config.listen)
            .map_err(|source| NodeError::Listen { addr: config.listen, source })?;
        let client_addr = endpoint
            .local_addr()
            .map_err(|source| NodeError::Listen { addr: config.listen, source })?;
        let zk_listener = match config.zk_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::Listen { addr, source })?,
            ),
            None => None,
        };
        let zk_addr = zk_listener.as_ref().and_then(|listener| listener.local_addr().ok());
        let zk_tls_listener = match config.zk_tls_listen {
            Some(addr) => Some((
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::Listen { addr, source })?,
                tls::tcp_server_config(&tls_files)?,
            )),
            None => None,
        };
        let zk_tls_addr =
            zk_tls_listener.as_ref().and_then(|(listener, _)| listener.local_addr().ok());
        let admin_listener = match config.admin_listen {
            Some(addr) => {
                Some(crate::admin::Listener::bind(addr, config.admin_tls, &tls_files).await?)
            }
            None => None,
        };
        let admin_url = admin_listener.as_ref().and_then(crate::admin::Listener::url);

        let is_initialized = raft.is_initialized().await?;
        if !is_initialized && config.join {
            tracing::info!(node = config.node_id, "waiting to be added to a cluster");
        } else if !is_initialized && config.initial_cluster.is_empty() {
            let members = BTreeMap::from([(
                config.node_id,
                Member {
                    client_addr: client_addr.to_string(),
                    recipe_runtime: RUNTIME_VERSION.to_string(),
                    ..Member::default()
                },
            )]);
            raft.initialize(members).await?;
            tracing::info!(node = config.node_id, "bootstrapped a new single-node cluster");
        } else if !is_initialized {
            // Every member starts with the same list and initializes with it: openraft takes
            // the same membership from several nodes safely, and the first vote wins.
            let members: BTreeMap<_, _> = config
                .initial_cluster
                .iter()
                .map(|(id, peer_addr)| {
                    (*id, Member { peer_addr: peer_addr.clone(), ..Member::default() })
                })
                .collect();
            if let Err(error) = raft.initialize(members).await {
                // Another member's initialization reached this node first: nothing to do.
                tracing::debug!(%error, "initial cluster already formed");
            }
            tracing::info!(
                node = config.node_id,
                members = config.initial_cluster.len(),
                "started as a member of a new cluster"
            );
        }
        // A joining node waits as long as it takes someone to add it.
        let patience =
            (!config.join || is_initialized).then(|| Duration::from_millis(STARTUP_LEADER_WAIT_MS));
        raft.wait(patience)
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(|_| NodeError::NoLeader)?;

        let (stop, stopped) = watch::channel(false);
        let frontend = Arc::new(Frontend {
            cluster: cluster.clone(),
            watches,
            digests: tokio::sync::Semaphore::new(1),
            connections: Arc::default(),
        });
        // A cluster gets the built-ins when it is created: before anything was ever deployed.
        let never_deployed = state.read().tree.recipes().runtime.is_none();
        if never_deployed {
            duties::deploy_builtin_recipes(&cluster).await?;
        }
        let me = Member {
            client_addr: client_addr.to_string(),
            peer_addr: config.peer_listen.map(|addr| addr.to_string()).unwrap_or_default(),
            recipe_runtime: RUNTIME_VERSION.to_string(),
        };
        let mut tasks = Vec::new();
        if let Some(listener) = admin_listener {
            let admin = Arc::new(crate::admin::Admin {
                cluster: cluster.clone(),
                frontend: frontend.clone(),
                data_dir: config.data_dir.clone(),
                viewers: config.admin_viewers.clone(),
                started,
                probe: crate::admin::health::StorageProbe::default(),
                scraping: std::sync::Mutex::default(),
            });
            tasks.push(tokio::spawn(crate::admin::serve(listener, admin, stopped.clone())));
        }
        tasks.extend([
            tokio::spawn(duties::announce(cluster.clone(), me, stopped.clone())),
            tokio::spawn(api::serve(endpoint.clone(), frontend.clone(), stopped.clone())),
            tokio::spawn(duties::reap_ttl_znodes(cluster.clone(), stopped.clone())),
            tokio::spawn(liveness::expire_sessions(cluster, stopped.clone())),
        ]);
        if zk_listener.is_some() || zk_tls_listener.is_some() {
            let listeners = crate::zk::Listeners {
                plain: zk_listener,
                tls: zk_tls_listener,
                connections_per_ip: config.zk_connections_per_ip,
            };
            tasks.push(tokio::spawn(crate::zk::serve(listeners, frontend, stopped)));
        }

        tracing::info!(addr = %client_addr, data_dir = %config.data_dir.display(), "serving clients");
        Ok(RunningNode {
            raft,
            client_addr,
            zk_addr,
            zk_tls_addr,
            admin_url,
            ca_file: tls_files.ca,
            generated_certificates,
            stop,
            tasks,
            endpoint,
            peers,
        })
    }

    /// The address clients connect to.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where ZooKeeper clients connect, if this node serves them.
    pub fn zk_addr(&self) -> Option<SocketAddr> {
        self.zk_addr
    }

    /// Where the ZooKeeper front end listens for TLS clients, if it does.
    pub fn zk_tls_addr(&self) -> Option<SocketAddr> {
        self.zk_tls_addr
    }

    /// The web console's URL (the admin listener's), if it is served.
    pub fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref()
    }

    /// The CA file clients trust.
    pub fn ca_file(&self) -> &std::path::Path {
        &self.ca_file
    }

    /// Whether this start wrote new development certificates.
    pub fn generated_certificates(&self) -> bool {
        self.generated_certificates
    }

    /// Resolves when Raft stops on a fatal error (a failed disk write, say): the node must not
    /// serve on, so the caller shuts it down and exits non-zero.
    pub async fn fatal(&self) -> NodeError {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return NodeError::Fatal(fatal.to_string());
            }
            if metrics.changed().await.is_err() {
                return NodeError::Fatal("raft stopped".into());
            }
        }
    }

    /// Stops serving: no new requests, Raft shut down, clients told the node is going away.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        snapshot_before_stopping(&self.raft).await;
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
        if let Some((endpoint, serving)) = self.peers {
            endpoint.close(quinn::VarInt::from_u32(0), b"node stopped");
            let _ = serving.await;
        }
        let drained = tokio::time::timeout(
            Duration::from_millis(SHUTDOWN_DRAIN_MS),
            self.endpoint.wait_idle(),
        );
        if drained.await.is_err() {
            tracing::warn!("clients still connected after {SHUTDOWN_DRAIN_MS} ms; closing anyway");
        }
        tracing::info!("node stopped");
    }
}

/// How long a stopping node waits for its last snapshot to be written.
const SHUTDOWN_SNAPSHOT_MS: u64 = 10_000;

/// Builds a snapshot of everything applied, if the latest is older: the next start then
/// replays no entry this build applied. That is what lets a node move to another recipe
/// runtime while the recipes are frozen (it never applies a recipe entry of the old runtime
/// again), and it makes the next start quicker. Failing to is only slower.
async fn snapshot_before_stopping(raft: &Raft) {
    let metrics = raft.metrics().borrow().clone();
    let applied = metrics.last_applied.map(|id| id.index);
    if applied.is_none() || metrics.snapshot.map(|id| id.index) >= applied {
        return;
    }
    if let Err(error) = raft.trigger().snapshot().await {
        tracing::warn!(%error, "no snapshot before stopping");
        return;
    }
    let written = raft
        .wait(Some(Duration::from_millis(SHUTDOWN_SNAPSHOT_MS)))
        .metrics(|m| m.snapshot.map(|id| id.index) >= applied, "the snapshot before stopping")
        .await;
    if let Err(error) = written {
        tracing::warn!(%error, "no snapshot before stopping");
    }
}

/// The names a development node certificate covers: loopback always, and the listen address
/// when it is a specific one.
fn certificate_names(listen: SocketAddr, peer_listen: Option<SocketAddr>) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    for ip in std::iter::once(listen.ip()).chain(peer_listen.map(|addr| addr.ip())) {
        if !ip.is_unspecified() && !ip.is_loopback() && !names.contains(&ip.to_string()) {
            names.push(ip.to_string());
        }
    }
    names
}

/// The node's certificate: given as files, issued from a development cluster CA shared by the
/// nodes (`dev_certs`), or — a single node told nothing — from a development CA of its own in
/// its data dir. Returns the files and whether anything was generated.
fn node_certificates(
    config: &ServeConfig,
    names: &[String],
) -> Result<(tls::TlsFiles, bool), tls::TlsError> {
    if let (Some(cert), Some(key), Some(ca)) = (&config.tls_cert, &config.tls_key, &config.tls_ca) {
        let files = tls::TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() };
        return Ok((files, false));
    }
    let own = config.data_dir.join("tls");
    match &config.dev_certs {
        Some(shared) => tls::ensure_cluster_dev_certificates(shared, &own, names, config.node_id),
        None => tls::ensure_dev_certificates(&own, names, config.node_id),
    }
}
