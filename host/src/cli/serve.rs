//! `cairn serve`: running a node.

use super::*;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the log, snapshots and development certificates live [default: ./cairn-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Client address (QUIC over UDP); port 0 picks a free one [default: 127.0.0.1:7181].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A TOML file with any of: data_dir, listen, node_id, snapshot_every_entries,
    /// compiled_dir, compiled_key, peer_listen, initial_cluster (a table id = "addr"), dev_certs, tls_cert,
    /// tls_key, tls_ca. Flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's Raft id [default: 1].
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Build a snapshot and purge the log every this many entries [default: 10000].
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Keep compiled recipes here between starts [default: DATA_DIR/compiled].
    #[arg(long)]
    pub compiled_dir: Option<PathBuf>,
    /// The key that signs compiled recipes, made on first start (nodes sharing a compiled dir
    /// share it too) [default: DATA_DIR/compiled.key].
    #[arg(long)]
    pub compiled_key: Option<PathBuf>,
    /// Peer address (QUIC over UDP, mutual TLS): where the other nodes reach this one.
    #[arg(long)]
    pub peer_listen: Option<SocketAddr>,
    /// The members of a new cluster at their peer addresses: 1=ADDR,2=ADDR,3=ADDR (the same
    /// list on every member).
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Reach these peers at other addresses than the membership says: 2=ADDR,3=ADDR (through a
    /// relay or a NAT).
    #[arg(long)]
    pub peer_routes: Option<String>,
    /// Start empty and wait to be added to a running cluster with `cairn cluster add`.
    #[arg(long, conflicts_with = "initial_cluster")]
    pub join: bool,
    /// A directory the nodes of a development cluster share: the first to start writes a CA
    /// there, each issues its own certificate from it; clients trust DIR/ca.pem.
    #[arg(long)]
    pub dev_certs: Option<PathBuf>,
    /// This node's certificate (PEM), with --tls-key and --tls-ca instead of --dev-certs.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): peers must present a certificate it signed; clients trust it.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

pub(super) async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => ServeConfig::from_file(path)?,
        None => ServeConfig::default(),
    };
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    if let Some(entries) = args.snapshot_every {
        config.snapshot_every_entries = entries;
    }
    if let Some(dir) = args.compiled_dir {
        config.compiled_dir = Some(dir);
    }
    if let Some(key) = args.compiled_key {
        config.compiled_key = Some(key);
    }
    if let Some(addr) = args.peer_listen {
        config.peer_listen = Some(addr);
    }
    if let Some(members) = &args.initial_cluster {
        config.initial_cluster = crate::config::parse_initial_cluster(members)?;
    }
    if let Some(dir) = args.dev_certs {
        config.dev_certs = Some(dir);
    }
    config.join |= args.join;
    if let Some(routes) = &args.peer_routes {
        config.peer_routes = crate::config::parse_initial_cluster(routes)?;
    }
    if let (Some(cert), Some(key), Some(ca)) = (args.tls_cert, args.tls_key, args.tls_ca) {
        (config.tls_cert, config.tls_key, config.tls_ca) = (Some(cert), Some(key), Some(ca));
    }
    // Everything the node creates — journal, snapshots, keys, compiled code — is its own.
    crate::files::make_private_by_default();
    let node = RunningNode::start(&config).await?;
    if node.generated_certificates() {
        tracing::info!(ca = %node.ca_file().display(), "wrote development TLS certificates and the administrator's client certificate (admin.pem) beside the CA; clients trust the CA file");
    }
    // One line for people and for scripts that wait for the node: where it listens.
    out!("cairn listening on {} (clients trust {})", node.client_addr(), node.ca_file().display());
    std::io::stdout().flush()?;

    let outcome = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(%signal, "shutting down");
            Ok(ExitCode::SUCCESS)
        }
        fatal = node.fatal() => Err(anyhow::Error::new(fatal)),
    };
    node.shutdown().await;
    outcome
}
