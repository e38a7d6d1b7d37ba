//! `cairn serve`: running a node.

use super::*;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// A TOML file setting any of the flags above, each by its name with underscores
    /// (data_dir = "...", [initial_cluster] 1 = "ADDR"); flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub(super) async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = ServeConfig::load(args.settings, args.config.as_deref())?;
    // Everything the node creates — journal, snapshots, keys, compiled code — is its own.
    cairn::files::make_private_by_default();
    let node = RunningNode::start(&config).await?;
    if node.generated_certificates() {
        tracing::info!(ca = %node.ca_file().display(), "wrote development TLS certificates and the administrator's client certificate (admin.pem) beside the CA; clients trust the CA file");
    }
    // One line for people and for scripts that wait for the node: where it listens.
    let zk =
        node.zk_addr().map(|addr| format!("; zookeeper clients on {addr}")).unwrap_or_default();
    let zk_tls = node
        .zk_tls_addr()
        .map(|addr| format!("; zookeeper TLS clients on {addr}"))
        .unwrap_or_default();
    let console = node.admin_url().map(|url| format!("; console on {url}")).unwrap_or_default();
    out!(
        "cairn listening on {} (clients trust {}){zk}{zk_tls}{console}",
        node.client_addr(),
        node.ca_file().display()
    );
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
