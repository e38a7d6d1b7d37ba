//! The `cairn` command line: `serve` runs a node; every other command is a client of one.
//! People read the plain output; programs pass `--json`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cairn_client::{
    AclEntry, Client, CreateOptions, Credentials, ErrorCode, EventKind, Quota, SessionState, Stat,
    WatchEvent,
};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use cairn::config::{DEFAULT_DATA_DIR, DEFAULT_LISTEN, ServeConfig, Settings};
use cairn::node::RunningNode;

/// Prints one line of output; an error (a reader that went away: `cairn ls / | head -1`) ends
/// the command, and `main` treats a closed pipe as the quiet end it is for other Unix tools.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

mod access;
mod cluster;
mod dev_cluster;
mod hold;
mod queue;
mod recipe;
mod serve;
mod znode;

pub use access::*;
pub use cluster::*;
pub use dev_cluster::*;
pub use hold::*;
pub use queue::*;
pub use recipe::*;
pub use serve::*;
pub use znode::*;

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
    Serve(Box<ServeArgs>),
    /// Run a local development cluster: N nodes with generated certificates, until Ctrl-C.
    DevCluster(DevClusterArgs),
    /// The cluster's members, roles, leader and progress.
    Cluster(ClusterArgs),
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
    /// Print every change of a znode (or of everything below it) as it happens.
    Watch(WatchArgs),
    /// List the live sessions.
    Sessions(SessionsArgs),
    /// Run a command while holding a fair lock; its fencing token is in CAIRN_FENCING_TOKEN.
    Lock(LockArgs),
    /// Run a command while this process leads an election; the term is in CAIRN_FENCING_TOKEN.
    Elect(ElectArgs),
    /// Run a command while holding permits of a counting semaphore.
    Sem(SemArgs),
    /// Run a command holding a read-write lock, shared (--read) or exclusive (--write).
    Rwlock(RwlockArgs),
    /// Run a command inside a double barrier: it starts when N have entered, and this exits
    /// when all N are done.
    Barrier(BarrierArgs),
    /// Put items on a work queue and take them off.
    Queue(QueueArgs),
    /// Deploy, list, retire and invoke recipes.
    Recipe(RecipeArgs),
    /// Named counters (the built-in counter recipe).
    Counter(CounterArgs),
    /// Read or replace a znode's ACL.
    Acl(AclArgs),
    /// Issue and revoke tokens (administrators only).
    Token(TokenArgs),
    /// Issue client certificates from a development CA (offline: needs the CA's key).
    Cert(CertArgs),
    /// Print the principal this client speaks for.
    Whoami(SessionsArgs),
    /// Make a principal an administrator, or not (administrators only).
    Admin(AdminArgs),
    /// Read or set what a principal may hold.
    Quota(QuotaArgs),
}

/// Parses `500ms`, `10s`, `2m` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) =
        text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration like 500ms, 10s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("{text:?}: the unit is ms, s or m")),
    }
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
    /// Client certificate (PEM) to present; with no --cert, --token or --anonymous, the first
    /// administrator's (admin.pem) beside the CA file, if it is there.
    #[arg(long, env = "CAIRN_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "CAIRN_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// A token to authenticate with (from `cairn token create`).
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Present no certificate and no token: speak as the anonymous principal.
    #[arg(long, conflicts_with_all = ["cert", "token"])]
    pub anonymous: bool,
    /// Print JSON for programs instead of text for people.
    #[arg(long)]
    pub json: bool,
    /// Session timeout to ask for: ephemerals of a command killed without warning last this long.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub session_timeout: u64,
}

impl Cli {
    /// The log level when `RUST_LOG` does not say: a server reports its progress, a client
    /// command only its troubles.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            // openraft narrates every election and shutdown step at info.
            Command::Serve(_) | Command::DevCluster(_) => "info,openraft=warn",
            _ => "warn",
        }
    }
}

/// Runs a command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client_args = match &cli.command {
        Command::Serve(_) => None,
        Command::Create(args) => Some(&args.client),
        Command::Get(args) => Some(&args.client),
        Command::Set(args) => Some(&args.client),
        Command::Rm(args) => Some(&args.client),
        Command::Ls(args) => Some(&args.client),
        Command::Stat(args) => Some(&args.client),
        Command::Watch(args) => Some(&args.client),
        Command::Sessions(args) => Some(&args.client),
        Command::Lock(args) => Some(&args.run.client),
        Command::Elect(args) => Some(&args.run.client),
        Command::Sem(args) => Some(&args.run.client),
        Command::Rwlock(args) => Some(&args.run.client),
        Command::Barrier(args) => Some(&args.run.client),
        Command::Queue(args) => Some(match &args.command {
            QueueCommand::Put { client, .. }
            | QueueCommand::Take { client, .. }
            | QueueCommand::Status { client, .. } => client,
        }),
        Command::Recipe(args) => Some(args.command.client()),
        Command::Counter(args) => Some(match &args.command {
            CounterCommand::Add { client, .. } | CounterCommand::Get { client, .. } => client,
        }),
        Command::Cluster(args) => Some(match &args.command {
            ClusterCommand::Status { client }
            | ClusterCommand::Add { client, .. }
            | ClusterCommand::Remove { client, .. }
            | ClusterCommand::FreezeRecipes { client }
            | ClusterCommand::AdoptRuntime { client } => client,
        }),
        Command::DevCluster(_) | Command::Cert(_) => None,
        Command::Acl(args) => Some(match &args.command {
            AclCommand::Get { client, .. } | AclCommand::Set { client, .. } => client,
        }),
        Command::Token(args) => Some(match &args.command {
            TokenCommand::Create { client, .. } | TokenCommand::Revoke { client, .. } => client,
        }),
        Command::Admin(args) => Some(match &args.command {
            AdminCommand::Add { client, .. } | AdminCommand::Remove { client, .. } => client,
        }),
        Command::Quota(args) => Some(match &args.command {
            QuotaCommand::Get { client, .. } | QuotaCommand::Set { client, .. } => client,
        }),
        Command::Whoami(args) => Some(&args.client),
    };
    let Some(client_args) = client_args else {
        return match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::DevCluster(args) => dev_cluster(args).await,
            Command::Cert(CertArgs { command: CertCommand::Issue { name, out, ca } }) => {
                let (cert, key) = cairn::tls::issue_client_certificate(&ca, &name, &out)?;
                out!("{}\n{}", cert.display(), key.display());
                Ok(ExitCode::SUCCESS)
            }
            _ => unreachable!("only serve, dev-cluster and cert have no client"),
        };
    };
    let client = connect(client_args).await?;
    let result = run_client_command(&client, cli.command).await;
    // Ends the session now rather than at its timeout; a failure here changes nothing for
    // the command, whose own outcome is what matters.
    let _ = client.close().await;
    result
}

async fn run_client_command(client: &Client, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) | Command::DevCluster(_) | Command::Cert(_) => {
            unreachable!("serve, dev-cluster and cert are not client commands")
        }
        Command::Acl(args) => access::run_acl_command(client, args).await,
        Command::Token(args) => access::token(client, args).await,
        Command::Whoami(args) => access::whoami(client, args).await,
        Command::Admin(args) => access::admin(client, args).await,
        Command::Quota(args) => access::run_quota_command(client, args).await,
        Command::Create(args) => znode::create(client, args).await,
        Command::Get(args) => znode::get(client, args).await,
        Command::Set(args) => znode::set(client, args).await,
        Command::Rm(args) => znode::rm(client, args).await,
        Command::Ls(args) => znode::ls(client, args).await,
        Command::Stat(args) => znode::stat(client, args).await,
        Command::Watch(args) => znode::watch(client, args).await,
        Command::Sessions(args) => znode::sessions(client, args).await,
        Command::Lock(args) => hold::run_locked(client, args).await,
        Command::Elect(args) => hold::run_elected(client, args).await,
        Command::Sem(args) => hold::run_with_permits(client, args).await,
        Command::Rwlock(args) => hold::run_rw_locked(client, args).await,
        Command::Barrier(args) => hold::run_in_barrier(client, args).await,
        Command::Queue(args) => queue::run_queue_command(client, args).await,
        Command::Cluster(args) => cluster::run_cluster_command(client, args).await,
        Command::Recipe(args) => recipe::run_recipe_command(client, args).await,
        Command::Counter(args) => recipe::run_counter_command(client, args).await,
    }
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
    let timeout = Duration::from_millis(args.session_timeout);
    Ok(Client::connect_with_timeout(&args.server, &credentials(args)?, timeout).await?)
}

/// What a client command presents: the CA it trusts, and --cert/--key, --token, or (with none
/// of them and no --anonymous) the first administrator's certificate beside the CA file, as a
/// first start writes it.
fn credentials(args: &ClientArgs) -> anyhow::Result<Credentials> {
    let mut credentials = Credentials::from_ca_file(&args.ca)?;
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        credentials = credentials.with_certificate_files(cert, key)?;
    } else if args.token.is_none() && !args.anonymous {
        let dir = args.ca.parent().unwrap_or(Path::new("."));
        let (cert, key) = (dir.join("admin.pem"), dir.join("admin-key.pem"));
        if cert.exists() && key.exists() {
            credentials = credentials.with_certificate_files(cert, key)?;
        }
    }
    if let Some(token) = &args.token {
        credentials = credentials.with_token(token.clone());
    }
    Ok(credentials)
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string(value)?);
    Ok(())
}
