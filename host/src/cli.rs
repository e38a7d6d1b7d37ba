//! The `cairn` command line: `serve` runs a node; every other command is a client of one.
//! People read the plain output; programs pass `--json`.

// The command line's job is to print results on stdout.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn_client::{Client, CreateOptions, ErrorCode, Stat};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::config::{DEFAULT_DATA_DIR, DEFAULT_LISTEN, ServeConfig};
use crate::node::RunningNode;

/// Cairn: a replicated coordination service — znodes, sessions and watches, with locks,
/// elections and queues running inside the server.
#[derive(Debug, Parser)]
#[command(name = "cairn", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (a single-node cluster, bootstrapped on first start).
    Serve(ServeArgs),
    /// Create a znode and print the path it got.
    Create(CreateArgs),
    /// Print a znode's data.
    Get(GetArgs),
    /// Replace a znode's data.
    Set(SetArgs),
    /// Delete a znode.
    Rm(RmArgs),
    /// List a znode's children.
    Ls(LsArgs),
    /// Print a znode's stat.
    Stat(StatArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the log, snapshots and development certificates live [default: ./cairn-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Client address (QUIC over UDP); port 0 picks a free one [default: 127.0.0.1:7181].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A TOML file with any of: data_dir, listen, node_id, snapshot_every_entries. Flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's Raft id [default: 1].
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Build a snapshot and purge the log every this many entries [default: 10000].
    #[arg(long)]
    pub snapshot_every: Option<u64>,
}

/// How a client command reaches a node.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Node address, host:port.
    #[arg(long, env = "CAIRN_SERVER", default_value = DEFAULT_LISTEN)]
    pub server: String,
    /// PEM file of the CA that signed the node's certificate.
    #[arg(long, env = "CAIRN_CA", default_value_os_t = PathBuf::from(DEFAULT_DATA_DIR).join("tls/ca.pem"))]
    pub ca: PathBuf,
    /// Print JSON for programs instead of text for people.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub path: String,
    /// The znode's data (UTF-8 text).
    #[arg(default_value = "")]
    pub data: String,
    /// Append the parent's 10-digit sequence number to the name.
    #[arg(long)]
    pub sequential: bool,
    /// Delete the znode once its last child is deleted.
    #[arg(long, conflicts_with = "ttl")]
    pub container: bool,
    /// Delete the znode after this many milliseconds with no change and no children.
    #[arg(long, value_name = "MS")]
    pub ttl: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub path: String,
    /// Print the stat after the data.
    #[arg(long)]
    pub stat: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    pub path: String,
    pub data: String,
    /// Only if the znode is at this version.
    #[arg(long)]
    pub version: Option<u32>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    pub path: String,
    /// Only if the znode is at this version.
    #[arg(long, conflicts_with = "recursive")]
    pub version: Option<u32>,
    /// Delete the znode and everything under it.
    #[arg(long)]
    pub recursive: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    pub path: String,
    /// Show each child's stat.
    #[arg(long)]
    pub stat: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    pub path: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl Cli {
    /// The log level when `RUST_LOG` does not say: a server reports its progress, a client
    /// command only its troubles.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            // openraft narrates every election and shutdown step at info.
            Command::Serve(_) => "info,openraft=warn",
            _ => "warn",
        }
    }
}

/// Runs a command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Create(args) => {
            let client = connect(&args.client).await?;
            let options = match (args.container, args.ttl) {
                (true, _) => CreateOptions::container(),
                (false, Some(ms)) => CreateOptions::ttl(Duration::from_millis(ms)),
                (false, None) => CreateOptions::persistent(),
            };
            let options = if args.sequential { options.sequential() } else { options };
            let path = client.create(&args.path, args.data.into_bytes(), options).await?;
            if args.client.json {
                print_json(&json!({ "path": path }))?;
            } else {
                println!("{path}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Get(args) => {
            let client = connect(&args.client).await?;
            let (data, stat) = client.get(&args.path).await?;
            if args.client.json {
                print_json(&json!({
                    "path": args.path,
                    "data": String::from_utf8_lossy(&data),
                    "stat": stat,
                }))?;
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&data)?;
                out.write_all(b"\n")?;
                if args.stat {
                    write_stat(&mut out, &stat)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Set(args) => {
            let client = connect(&args.client).await?;
            let stat = client.set(&args.path, args.data.into_bytes(), args.version).await?;
            if args.client.json {
                print_json(&json!({ "path": args.path, "stat": stat }))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rm(args) => {
            let client = connect(&args.client).await?;
            if args.recursive {
                remove_recursive(&client, &args.path).await?;
            } else {
                client.delete(&args.path, args.version).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls(args) => {
            let client = connect(&args.client).await?;
            let (_, children) = client.children_with_stats(&args.path).await?;
            if args.client.json {
                let children: Vec<_> = children
                    .iter()
                    .map(|child| match (&child.stat, args.stat) {
                        (Some(stat), true) => json!({ "name": child.name, "stat": stat }),
                        _ => json!({ "name": child.name }),
                    })
                    .collect();
                print_json(&json!({ "path": args.path, "children": children }))?;
            } else if args.stat {
                println!(
                    "{:<32} {:>8} {:>10} {:>9} {:>12}",
                    "NAME", "VERSION", "DATA_BYTES", "CHILDREN", "MZXID"
                );
                for child in &children {
                    let stat = child.stat.unwrap_or_default();
                    println!(
                        "{:<32} {:>8} {:>10} {:>9} {:>12}",
                        child.name, stat.version, stat.data_length, stat.num_children, stat.mzxid
                    );
                }
            } else {
                for child in &children {
                    println!("{}", child.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stat(args) => {
            let client = connect(&args.client).await?;
            let (_, stat) = client.get(&args.path).await?;
            if args.client.json {
                print_json(&json!({ "path": args.path, "stat": stat }))?;
            } else {
                write_stat(&mut std::io::stdout().lock(), &stat)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
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
    let node = RunningNode::start(&config).await?;
    if node.generated_certificates() {
        tracing::info!(ca = %node.ca_file().display(), "wrote development TLS certificates; clients trust the CA file");
    }
    // One line for people and for scripts that wait for the node: where it listens.
    println!(
        "cairn listening on {} (clients trust {})",
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

/// Resolves on SIGINT or SIGTERM with the signal's name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        // Without signal handlers the node runs until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    if !args.ca.exists() {
        anyhow::bail!(
            "CA file {} not found: start a node with `cairn serve` here, or pass --ca (or CAIRN_CA)",
            args.ca.display()
        );
    }
    Ok(Client::connect(&args.server, &args.ca).await?)
}

/// Deletes `path` and everything under it, children first. Znodes deleted meanwhile by someone
/// else are fine; a znode created meanwhile makes its parent's delete fail with `not-empty`.
async fn remove_recursive(client: &Client, path: &str) -> anyhow::Result<()> {
    let mut stack = vec![(path.to_string(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            match client.delete(&node, None).await {
                Err(error) if error.code() == Some(ErrorCode::NoNode) => {}
                other => other?,
            }
            continue;
        }
        let children = match client.children(&node).await {
            Err(error) if error.code() == Some(ErrorCode::NoNode) && node != path => continue,
            other => other?,
        };
        stack.push((node.clone(), true));
        for child in children {
            stack.push((cairn_wire::path::join(&node, &child), false));
        }
    }
    Ok(())
}

fn write_stat(out: &mut impl Write, stat: &Stat) -> std::io::Result<()> {
    writeln!(out, "czxid = {}", stat.czxid)?;
    writeln!(out, "mzxid = {}", stat.mzxid)?;
    writeln!(out, "pzxid = {}", stat.pzxid)?;
    writeln!(out, "ctime = {}", stat.ctime)?;
    writeln!(out, "mtime = {}", stat.mtime)?;
    writeln!(out, "version = {}", stat.version)?;
    writeln!(out, "cversion = {}", stat.cversion)?;
    writeln!(out, "aversion = {}", stat.aversion)?;
    writeln!(out, "ephemeralOwner = {:#x}", stat.ephemeral_owner)?;
    writeln!(out, "dataLength = {}", stat.data_length)?;
    writeln!(out, "numChildren = {}", stat.num_children)
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}
