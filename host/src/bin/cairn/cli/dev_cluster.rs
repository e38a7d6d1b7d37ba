//! `cairn dev-cluster`: a local cluster of N nodes with generated certificates.

use super::*;

#[derive(Debug, Args)]
pub struct DevClusterArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Where the nodes keep their data (DIR/node-N) and the shared CA (DIR/certs).
    #[arg(long, default_value = "cairn-dev-cluster")]
    pub data_dir: PathBuf,
    /// Client port of node 1; node N listens on PORT+N-1, its peers on PORT+100+N-1 and its
    /// admin listener (metrics, health checks, the console) on PORT+200+N-1.
    #[arg(long, default_value_t = 7181)]
    pub port: u16,
}

/// Runs `nodes` copies of this program's `serve` as one cluster on loopback, prints where
/// each serves, and stops them all on Ctrl-C (or when one exits).
pub(super) async fn dev_cluster(args: DevClusterArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 || args.nodes > 9 {
        anyhow::bail!("--nodes is 1 to 9");
    }
    let program = std::env::current_exe().context("cannot find this program")?;
    let peer_port = |n: u64| u64::from(args.port) + 100 + n - 1;
    let initial: Vec<String> =
        (1..=args.nodes).map(|n| format!("{n}=127.0.0.1:{}", peer_port(n))).collect();
    let certs = args.data_dir.join("certs");
    let mut children = Vec::new();
    for n in 1..=args.nodes {
        let child = tokio::process::Command::new(&program)
            .arg("serve")
            .args(["--node-id", &n.to_string()])
            .arg("--data-dir")
            .arg(args.data_dir.join(format!("node-{n}")))
            .args(["--listen", &format!("127.0.0.1:{}", u64::from(args.port) + n - 1)])
            .args(["--peer-listen", &format!("127.0.0.1:{}", peer_port(n))])
            // ZooKeeper clients: 2181, 2182, ... beside 7181, 7182, ...
            .args(["--zk-listen", &format!("127.0.0.1:{}", 2181 + n - 1)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", u64::from(args.port) + 200 + n - 1)])
            .args(["--initial-cluster", &initial.join(",")])
            .arg("--dev-certs")
            .arg(&certs)
            .arg("--compiled-dir")
            .arg(args.data_dir.join("compiled"))
            .arg("--compiled-key")
            .arg(args.data_dir.join("compiled.key"))
            // Elections narrate at warn in openraft; a console wants only real trouble.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,openraft=error".into()),
            )
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {n}"))?;
        children.push(child);
    }
    // Each node's first line says where it listens.
    for (n, child) in children.iter_mut().enumerate() {
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        match lines.next_line().await? {
            Some(line) => out!("node {}: {}", n + 1, line.trim_start_matches("cairn ")),
            None => anyhow::bail!("node {} stopped while starting", n + 1),
        }
    }
    out!(
        "clients: --server 127.0.0.1:{} --ca {} (any node; the administrator's certificate, \
         admin.pem, is beside it)",
        args.port,
        certs.join("ca.pem").display()
    );
    std::io::stdout().flush()?;
    let first_exit = futures_first_exit(&mut children);
    tokio::select! {
        signal = shutdown_signal() => tracing::info!(%signal, "stopping the cluster"),
        (n, status) = first_exit => tracing::warn!(node = n + 1, ?status, "a node stopped; stopping the cluster"),
    }
    for child in &mut children {
        if let Some(pid) = child.id() {
            // SIGTERM through kill(1): each node shuts down cleanly.
            let _ = tokio::process::Command::new("kill").arg(pid.to_string()).status().await;
        }
    }
    for child in &mut children {
        let _ = child.wait().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The first of `children` to exit, and how.
pub(super) async fn futures_first_exit(
    children: &mut [tokio::process::Child],
) -> (usize, std::io::Result<std::process::ExitStatus>) {
    loop {
        for (n, child) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                return (n, Ok(status));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
