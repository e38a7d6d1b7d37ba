//! The `cairn` command line: `serve` runs a node; every other command is a client of one.
//! People read the plain output; programs pass `--json`.

use std::io::Write;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

use anyhow::Context;

use cairn_client::{
    AclEntry, Client, CreateOptions, Credentials, ErrorCode, EventKind, Quota, SessionState, Stat,
    WatchEvent,
};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::config::{DEFAULT_DATA_DIR, DEFAULT_LISTEN, ServeConfig};
use crate::node::RunningNode;

/// Prints one line of output; an error (a reader that went away: `cairn ls / | head -1`) ends
/// the command, and `main` treats a closed pipe as the quiet end it is for other Unix tools.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

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

#[derive(Debug, Args)]
pub struct AclArgs {
    #[command(subcommand)]
    pub command: AclCommand,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Print a znode's ACL, one scheme:id:perms entry a line, and its aversion.
    Get {
        path: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace a znode's ACL: comma-separated scheme:id:perms entries (`user:alice:cdrwa`,
    /// `world:anyone:r`, `auth::cdrwa` for yourself), perms from c d r w a.
    Set {
        path: String,
        acl: String,
        /// Refuse unless the ACL's version (aversion) is this one.
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token for principal NAME and print it (the cluster keeps only its hash).
    Create {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke principal NAME's token.
    Revoke {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct CertArgs {
    #[command(subcommand)]
    pub command: CertCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a client certificate for principal NAME: writes NAME.pem and NAME-key.pem.
    Issue {
        name: String,
        /// Where to write them.
        #[arg(long)]
        out: PathBuf,
        /// The CA certificate; its key (ca-key.pem) must be beside it.
        #[arg(long, default_value_os_t = PathBuf::from(DEFAULT_DATA_DIR).join("tls/ca.pem"))]
        ca: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make principal NAME an administrator.
    Add {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make principal NAME an administrator no longer (the last one stays).
    Remove {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct QuotaArgs {
    #[command(subcommand)]
    pub command: QuotaCommand,
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Print what principal NAME (yours when absent) may hold and holds.
    Get {
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set what principal NAME may hold; limits not given keep their value.
    Set {
        name: String,
        /// Live sessions, across the cluster.
        #[arg(long)]
        sessions: Option<u64>,
        /// Open connections, on each node.
        #[arg(long)]
        connections: Option<u64>,
        /// Watches, on each node.
        #[arg(long)]
        watches: Option<u64>,
        /// Znodes it created.
        #[arg(long)]
        znodes: Option<u64>,
        /// Bytes of path and data of those znodes.
        #[arg(long)]
        bytes: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// What the commands that run a command while holding something share.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Give up when it is not granted within this long: 500ms, 10s, 2m.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The command to run, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name.
    pub name: String,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The election's name.
    pub name: String,
    /// This candidate's id, shown to others as the leader's data (default: the session id).
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct SemArgs {
    /// The semaphore's name.
    pub name: String,
    /// How many permits the semaphore has (fixed by its first user).
    #[arg(long)]
    pub permits: u64,
    /// How many permits to take.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
#[group(id = "access", required = true, multiple = false)]
pub struct RwlockArgs {
    /// The lock's name.
    pub name: String,
    /// Share the lock with other readers.
    #[arg(long, group = "access")]
    pub read: bool,
    /// Hold the lock alone.
    #[arg(long, group = "access")]
    pub write: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct BarrierArgs {
    /// The barrier's name.
    pub name: String,
    /// How many members the barrier waits for (fixed by its first user).
    #[arg(long)]
    pub count: u32,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Add an item and print its id.
    Put {
        name: String,
        data: String,
        /// Lower priorities are taken first.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take the next item (waiting for one), print its data and ack it.
    Take {
        name: String,
        /// Give up when no item comes within this long: 500ms, 10s, 2m.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print how many items are ready and taken, and how many consumers wait.
    Status {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
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

#[derive(Debug, Args)]
pub struct RecipeArgs {
    #[command(subcommand)]
    pub command: RecipeCommand,
}

#[derive(Debug, Subcommand)]
pub enum RecipeCommand {
    /// Deploy a component (FILE.wasm, a `cairn:recipe` world) under a name.
    Deploy {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// The version number; the next one when absent.
        #[arg(long)]
        version: Option<u32>,
        /// For a new name (administrators only): the principal it belongs to, who may then
        /// deploy its next versions. The deployer when absent.
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the deployed recipes.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Retire one version: NAME@VERSION.
    Retire {
        recipe: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run one operation: NAME or NAME@VERSION, the op, and its arguments (the recipe's own
    /// encoding, JSON for the built-ins).
    Invoke {
        recipe: String,
        op: String,
        #[arg(default_value = "")]
        args: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl RecipeCommand {
    fn client(&self) -> &ClientArgs {
        match self {
            RecipeCommand::Deploy { client, .. }
            | RecipeCommand::Ls { client }
            | RecipeCommand::Retire { client, .. }
            | RecipeCommand::Invoke { client, .. } => client,
        }
    }
}

#[derive(Debug, Args)]
pub struct CounterArgs {
    #[command(subcommand)]
    pub command: CounterCommand,
}

#[derive(Debug, Subcommand)]
pub enum CounterCommand {
    /// Add N (default 1, may be negative) and print the new value.
    Add {
        name: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        n: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the value.
    Get {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct DevClusterArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Where the nodes keep their data (DIR/node-N) and the shared CA (DIR/certs).
    #[arg(long, default_value = "cairn-dev-cluster")]
    pub data_dir: PathBuf,
    /// Client port of node 1; node N listens on PORT+N-1, and its peers on PORT+100+N-1.
    #[arg(long, default_value_t = 7181)]
    pub port: u16,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, roles, leader, term, and how far each member has the log (from the leader).
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a node (started with `cairn serve --join`): a learner until it has caught up, then
    /// a voter.
    Add {
        node_id: u64,
        /// Where the other nodes reach it.
        peer_addr: String,
        /// Where clients reach it.
        client_addr: String,
        /// Keep it a learner (an observer: serves reads, forwards writes, does not vote).
        #[arg(long)]
        learner: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a node from the cluster.
    Remove {
        node_id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop running recipe code cluster-wide, before moving to a new recipe runtime (a Cairn
    /// built on another wasmtime): invokes and deploys fail with `unavailable`, and the recipe
    /// hooks of sessions that end wait, until `adopt-runtime`.
    FreezeRecipes {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run recipes on the runtime this node runs from now on, ending a freeze: refused unless
    /// every member runs it.
    AdoptRuntime {
        #[command(flatten)]
        client: ClientArgs,
    },
}

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
    #[arg(long, value_name = "MS", conflicts_with = "ephemeral")]
    pub ttl: Option<u64>,
    /// Make the znode ephemeral: it lives while this command runs, until SIGINT or SIGTERM.
    #[arg(long, conflicts_with = "container")]
    pub ephemeral: bool,
    /// The znode's ACL (as `cairn acl set` takes it); its parent's when absent.
    #[arg(long)]
    pub acl: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub path: String,
    /// Print the stat after the data.
    #[arg(long)]
    pub stat: bool,
    /// Then wait for the znode's next change and print it.
    #[arg(long)]
    pub watch: bool,
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
    /// Then wait for the next child added or removed and print it.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    pub path: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    pub path: String,
    /// Watch every znode below PATH too.
    #[arg(long, conflicts_with = "children")]
    pub recursive: bool,
    /// Report only children added to or removed from PATH.
    #[arg(long)]
    pub children: bool,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
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
            Command::Serve(args) => serve(args).await,
            Command::DevCluster(args) => dev_cluster(args).await,
            Command::Cert(CertArgs { command: CertCommand::Issue { name, out, ca } }) => {
                let (cert, key) = crate::tls::issue_client_certificate(&ca, &name, &out)?;
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
        Command::Acl(args) => run_acl_command(client, args).await,
        Command::Token(args) => match args.command {
            TokenCommand::Create { name, client: client_args } => {
                let token = client.create_token(&name).await?;
                if client_args.json {
                    print_json(&json!({ "name": name, "token": token }))?;
                } else {
                    out!("{token}");
                }
                Ok(ExitCode::SUCCESS)
            }
            TokenCommand::Revoke { name, .. } => {
                client.revoke_token(&name).await?;
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Whoami(args) => {
            let (principal, admin) = client.who_am_i().await?;
            if args.client.json {
                print_json(&json!({ "principal": principal, "admin": admin }))?;
            } else if admin {
                out!("{principal} (administrator)");
            } else {
                out!("{principal}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(args) => {
            let (name, admin, json_out) = match &args.command {
                AdminCommand::Add { name, client } => (name, true, client.json),
                AdminCommand::Remove { name, client } => (name, false, client.json),
            };
            let admins = client.set_admin(name, admin).await?;
            if json_out {
                print_json(&json!({ "admins": admins }))?;
            } else {
                out!("{}", admins.join("\n"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Quota(args) => run_quota_command(client, args).await,
        Command::Create(args) => {
            let options = match (args.container, args.ttl, args.ephemeral) {
                (true, _, _) => CreateOptions::container(),
                (false, Some(ms), _) => CreateOptions::ttl(Duration::from_millis(ms)),
                (false, None, true) => CreateOptions::ephemeral(),
                (false, None, false) => CreateOptions::persistent(),
            };
            let options = if args.sequential { options.sequential() } else { options };
            let path = match &args.acl {
                Some(acl) => {
                    let acl = AclEntry::parse_list(acl).map_err(|why| anyhow::anyhow!(why))?;
                    client.create_with_acl(&args.path, args.data.into_bytes(), options, acl).await?
                }
                None => client.create(&args.path, args.data.into_bytes(), options).await?,
            };
            if args.client.json {
                print_json(&json!({ "path": path }))?;
            } else {
                out!("{path}");
            }
            if args.ephemeral {
                std::io::stdout().flush()?;
                // The znode lives as long as this session: hold it until told to stop.
                let mut state = client.session_state();
                tokio::select! {
                    signal = shutdown_signal() => tracing::debug!(%signal, "releasing the ephemeral znode"),
                    _ = state.wait_for(|state| *state == SessionState::Expired) => {
                        anyhow::bail!("session expired: {path} is gone");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Get(args) => {
            let (data, stat, watch) = if args.watch {
                let (data, stat, watch) = client.get_watch(&args.path).await?;
                (data, stat, Some(watch))
            } else {
                let (data, stat) = client.get(&args.path).await?;
                (data, stat, None)
            };
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
            if let Some(watch) = watch {
                print_event(&watch_or_signal(watch).await?, args.client.json)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Set(args) => {
            let stat = client.set(&args.path, args.data.into_bytes(), args.version).await?;
            if args.client.json {
                print_json(&json!({ "path": args.path, "stat": stat }))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rm(args) => {
            if args.recursive {
                remove_recursive(client, &args.path).await?;
            } else {
                client.delete(&args.path, args.version).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls(args) => {
            let watch = if args.watch {
                let (_, watch) = client.children_watch(&args.path).await?;
                Some(watch)
            } else {
                None
            };
            let (_, children) = client.children_with_stats(&args.path).await?;
            print_children(&args, &children)?;
            if let Some(watch) = watch {
                print_event(&watch_or_signal(watch).await?, args.client.json)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stat(args) => {
            let (_, stat) = client.get(&args.path).await?;
            if args.client.json {
                print_json(&json!({ "path": args.path, "stat": stat }))?;
            } else {
                write_stat(&mut std::io::stdout().lock(), &stat)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch(args) => {
            let mut events = client.watch(&args.path, args.recursive).await?;
            let mut seen = 0u64;
            let mut state = client.session_state();
            while args.count.is_none_or(|count| seen < count) {
                let event = tokio::select! {
                    event = events.next() => event,
                    _ = shutdown_signal() => return Ok(ExitCode::SUCCESS),
                    _ = state.wait_for(|state| *state == SessionState::Expired) => None,
                };
                let Some(event) = event else { anyhow::bail!("session expired; the watch ended") };
                if args.children && event.kind != EventKind::ChildrenChanged {
                    continue;
                }
                print_event(&event, args.client.json)?;
                std::io::stdout().flush()?;
                seen += 1;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Lock(args) => run_locked(client, args).await,
        Command::Elect(args) => run_elected(client, args).await,
        Command::Sem(args) => run_with_permits(client, args).await,
        Command::Rwlock(args) => run_rw_locked(client, args).await,
        Command::Barrier(args) => run_in_barrier(client, args).await,
        Command::Queue(args) => run_queue_command(client, args).await,
        Command::Cluster(args) => match args.command {
            ClusterCommand::Status { client: client_args } => {
                cluster_status(client, &client_args).await
            }
            ClusterCommand::Add {
                node_id,
                peer_addr,
                client_addr,
                learner,
                client: client_args,
            } => {
                if learner {
                    client.add_learner(node_id, &peer_addr, &client_addr).await?;
                } else {
                    client.add_member(node_id, &peer_addr, &client_addr).await?;
                }
                cluster_status(client, &client_args).await
            }
            ClusterCommand::Remove { node_id, client: client_args } => {
                client.remove_member(node_id).await?;
                cluster_status(client, &client_args).await
            }
            ClusterCommand::FreezeRecipes { client: client_args } => {
                client.freeze_recipes().await?;
                cluster_status(client, &client_args).await
            }
            ClusterCommand::AdoptRuntime { client: client_args } => {
                client.adopt_recipe_runtime().await?;
                cluster_status(client, &client_args).await
            }
        },
        Command::Recipe(args) => run_recipe_command(client, args).await,
        Command::Counter(args) => run_counter_command(client, args).await,
        Command::Sessions(args) => {
            let sessions = client.sessions().await?;
            if args.client.json {
                let sessions: Vec<_> = sessions
                    .iter()
                    .map(|s| json!({ "session_id": format!("{:#x}", s.session_id), "timeout_ms": s.timeout_ms, "ephemerals": s.ephemerals, "principal": s.principal }))
                    .collect();
                print_json(&json!({ "sessions": sessions }))?;
            } else {
                out!("{:<20} {:>10} {:>10}  PRINCIPAL", "SESSION", "TIMEOUT_MS", "EPHEMERALS");
                for session in &sessions {
                    let this = if session.session_id == client.session_id() {
                        "  (this command)"
                    } else {
                        ""
                    };
                    out!(
                        "{:<20} {:>10} {:>10}  {}{this}",
                        format!("{:#x}", session.session_id),
                        session.timeout_ms,
                        session.ephemerals,
                        session.principal
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs a command holding a lock; stops it if the session can no longer prove the lock is held.
async fn run_locked(client: &Client, args: LockArgs) -> anyhow::Result<ExitCode> {
    let lock = client.lock(&args.name);
    let guard = within(args.run.timeout, &format!("lock {}", args.name), lock.acquire()).await?;
    let env = [("CAIRN_FENCING_TOKEN", guard.token().to_string())];
    let status = run_holding(client, &format!("lock {}", args.name), &env, &args.run.command).await;
    guard.release().await?;
    exit_code(status?)
}

/// Runs a command while this session leads an election.
async fn run_elected(client: &Client, args: ElectArgs) -> anyhow::Result<ExitCode> {
    let id = args.id.clone().unwrap_or_else(|| format!("session-{:#x}", client.session_id()));
    let election = client.election(&args.name);
    let what = format!("leadership of {}", args.name);
    let leadership = within(args.run.timeout, &what, election.campaign(&id)).await?;
    let env = [("CAIRN_FENCING_TOKEN", leadership.term().to_string()), ("CAIRN_LEADER_ID", id)];
    let status = run_holding(client, &what, &env, &args.run.command).await;
    leadership.resign().await?;
    exit_code(status?)
}

/// Runs a command holding semaphore permits.
async fn run_with_permits(client: &Client, args: SemArgs) -> anyhow::Result<ExitCode> {
    let semaphore = client.semaphore(&args.name, args.permits);
    let what = format!("{} permit(s) of {}", args.count, args.name);
    let permits = within(args.run.timeout, &what, semaphore.acquire(args.count)).await?;
    let status = run_holding(client, &what, &[], &args.run.command).await;
    permits.release().await?;
    exit_code(status?)
}

/// Runs a command holding a read-write lock.
async fn run_rw_locked(client: &Client, args: RwlockArgs) -> anyhow::Result<ExitCode> {
    let lock = client.rw_lock(&args.name);
    let what = format!("{} lock {}", if args.write { "write" } else { "read" }, args.name);
    let guard = if args.write {
        within(args.run.timeout, &what, lock.write()).await?
    } else {
        within(args.run.timeout, &what, lock.read()).await?
    };
    let env = [("CAIRN_FENCING_TOKEN", guard.token().to_string())];
    let status = run_holding(client, &what, &env, &args.run.command).await;
    guard.release().await?;
    exit_code(status?)
}

/// Runs a command inside a double barrier: after all have entered; leaves and waits for the
/// others to finish.
async fn run_in_barrier(client: &Client, args: BarrierArgs) -> anyhow::Result<ExitCode> {
    let barrier = client.barrier(&args.name, args.count);
    let what = format!("barrier {} of {}", args.name, args.count);
    let round = within(args.run.timeout, &what, barrier.enter()).await?;
    let env = [("CAIRN_BARRIER_ROUND", round.round().to_string())];
    let status = run_holding(client, &what, &env, &args.run.command).await;
    round.leave().await?;
    exit_code(status?)
}

/// Prints the membership; progress comes from the leader, asked directly when its client
/// address is known.
async fn cluster_status(client: &Client, args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let mut info = client.server_info().await?;
    let leader_addr = info
        .members
        .iter()
        .find(|m| Some(m.node_id) == info.leader && !m.client_addr.is_empty())
        .map(|m| m.client_addr.clone());
    if info.leader != Some(info.node_id)
        && let Some(addr) = leader_addr
        && let Ok(credentials) = credentials(args)
        && let Ok(leader) = Client::connect(&addr, &credentials).await
    {
        if let Ok(from_leader) = leader.server_info().await {
            info = from_leader;
        }
        let _ = leader.close().await;
    }
    if args.json {
        let members: Vec<_> = info
            .members
            .iter()
            .map(|m| {
                json!({
                    "node_id": m.node_id, "role": role(&info, m), "client_addr": m.client_addr,
                    "peer_addr": m.peer_addr, "matched_zxid": m.matched_zxid,
                    "recipe_runtime": m.recipe_runtime,
                })
            })
            .collect();
        print_json(&json!({
            "leader": info.leader, "term": info.term, "members": members,
            "reported_by": info.node_id, "applied_zxid": info.applied_zxid,
            "recipe_runtime": info.cluster_recipe_runtime, "recipes_frozen": info.recipes_frozen,
        }))?;
    } else {
        out!("{:<6} {:<9} {:<22} {:<22} {:>10}", "NODE", "ROLE", "CLIENT", "PEER", "MATCHED");
        for m in &info.members {
            let matched = m.matched_zxid.map_or("-".to_string(), |z| z.to_string());
            let dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
            out!(
                "{:<6} {:<9} {:<22} {:<22} {:>10}",
                m.node_id,
                role(&info, m),
                dash(&m.client_addr),
                dash(&m.peer_addr),
                matched
            );
        }
        let leader = info.leader.map_or("none".to_string(), |l| l.to_string());
        out!(
            "leader {leader}, term {}; node {} has applied zxid {}",
            info.term,
            info.node_id,
            info.applied_zxid
        );
        let cluster_runtime = info.cluster_recipe_runtime.as_deref().unwrap_or("none yet");
        let frozen = if info.recipes_frozen { ", frozen for a change" } else { "" };
        out!("recipe runtime {} (the cluster's: {cluster_runtime}{frozen})", info.recipe_runtime);
        for m in info.members.iter().filter(|m| m.recipe_runtime != info.recipe_runtime) {
            let runtime = if m.recipe_runtime.is_empty() { "unknown" } else { &m.recipe_runtime };
            out!("node {} runs recipe runtime {runtime}", m.node_id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn role(info: &cairn_client::ServerInfo, member: &cairn_client::MemberInfo) -> &'static str {
    if info.leader == Some(member.node_id) {
        "leader"
    } else if member.voter {
        "follower"
    } else {
        "learner"
    }
}

/// Runs `nodes` copies of this program's `serve` as one cluster on loopback, prints where
/// each serves, and stops them all on Ctrl-C (or when one exits).
async fn dev_cluster(args: DevClusterArgs) -> anyhow::Result<ExitCode> {
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
async fn futures_first_exit(
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

async fn run_queue_command(client: &Client, args: QueueArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        QueueCommand::Put { name, data, priority, client: client_args } => {
            let id = client.queue(&name).put_with_priority(&data, priority).await?;
            if client_args.json {
                print_json(&json!({ "id": id }))?;
            } else {
                out!("{id}");
            }
        }
        QueueCommand::Take { name, timeout, client: client_args } => {
            let queue = client.queue(&name);
            let item = within(timeout, &format!("an item of {name}"), queue.take()).await?;
            if client_args.json {
                print_json(&json!({ "id": item.id(), "data": item.data() }))?;
            } else {
                out!("{}", item.data());
            }
            std::io::stdout().flush()?;
            item.ack().await?;
        }
        QueueCommand::Status { name, client: client_args } => {
            let status = client.queue(&name).status().await?;
            if client_args.json {
                print_json(
                    &json!({ "ready": status.ready, "taken": status.taken, "waiting": status.waiting }),
                )?;
            } else {
                out!("ready {} taken {} waiting {}", status.ready, status.taken, status.waiting);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn within<T>(
    limit: Option<Duration>,
    what: &str,
    wait: impl Future<Output = Result<T, cairn_client::Error>>,
) -> anyhow::Result<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| anyhow::anyhow!("{what} not granted within {limit:?}"))?
            .map_err(Into::into),
        None => Ok(wait.await?),
    }
}

/// Runs `command` with `env` while the session lasts; kills it as soon as the session is
/// suspended or ends (what it holds can no longer be proven), or on SIGINT/SIGTERM.
async fn run_holding(
    client: &Client,
    what: &str,
    env: &[(&str, String)],
    command: &[String],
) -> anyhow::Result<std::process::ExitStatus> {
    let (program, program_args) = command.split_first().context("no command to run")?;
    let mut child = tokio::process::Command::new(program)
        .args(program_args)
        .envs(env.iter().map(|(key, value)| (*key, value)))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let mut state = client.session_state();
    let lost = |state: &SessionState| {
        !matches!(state, SessionState::Connected | SessionState::Reconnected)
    };
    tokio::select! {
        status = child.wait() => Ok(status?),
        now = state.wait_for(lost) => {
            let now = now.map(|state| *state).unwrap_or(SessionState::Closed);
            let _ = child.kill().await;
            anyhow::bail!("{what} lost (session {now:?}): stopped {program}")
        }
        signal = shutdown_signal() => {
            let _ = child.kill().await;
            anyhow::bail!("interrupted by {signal}: stopped {program}")
        }
    }
}

/// The command's exit status as ours; a command killed by a signal has no code: failure.
fn exit_code(status: std::process::ExitStatus) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::from(status.code().map_or(1, |code| u8::try_from(code).unwrap_or(1))))
}

/// Splits `NAME@VERSION` (the version optional unless `required`).
fn recipe_spec(spec: &str, required: bool) -> anyhow::Result<(&str, Option<u32>)> {
    match spec.split_once('@') {
        Some((name, version)) => {
            let version = version.parse().with_context(|| format!("bad version in {spec:?}"))?;
            Ok((name, Some(version)))
        }
        None if required => anyhow::bail!("name the version: {spec}@VERSION"),
        None => Ok((spec, None)),
    }
}

async fn run_recipe_command(client: &Client, args: RecipeArgs) -> anyhow::Result<ExitCode> {
    let json_out = args.command.client().json;
    match args.command {
        RecipeCommand::Deploy { file, name, version, owner, .. } => {
            let component =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let (version, hash) = match (owner, version) {
                (Some(owner), None) => client.deploy_recipe_for(&name, &owner, component).await?,
                (Some(_), Some(_)) => anyhow::bail!("--owner is for a new name's first version"),
                (None, version) => client.deploy_recipe(&name, version, component).await?,
            };
            if json_out {
                print_json(&json!({ "name": name, "version": version, "hash": hash }))?;
            } else {
                out!("{name}@{version} sha256:{hash}");
            }
        }
        RecipeCommand::Ls { .. } => {
            let recipes = client.recipes().await?;
            if json_out {
                print_json(&json!({ "recipes": recipes.iter().map(|r| json!({
                    "name": r.name, "version": r.version, "hash": r.hash, "bytes": r.bytes,
                })).collect::<Vec<_>>() }))?;
            } else {
                out!("{:<24} {:>8} {:>10}  SHA256", "NAME", "VERSION", "BYTES");
                for r in &recipes {
                    out!(
                        "{:<24} {:>8} {:>10}  {}",
                        r.name,
                        r.version,
                        r.bytes,
                        &r.hash[..16.min(r.hash.len())]
                    );
                }
            }
        }
        RecipeCommand::Retire { recipe, .. } => {
            let (name, version) = recipe_spec(&recipe, true)?;
            client.retire_recipe(name, version.unwrap_or_default()).await?;
        }
        RecipeCommand::Invoke { recipe, op, args, .. } => {
            let (name, version) = recipe_spec(&recipe, false)?;
            let result = client.invoke(name, version, &op, args.into_bytes()).await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&result)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_counter_command(client: &Client, args: CounterArgs) -> anyhow::Result<ExitCode> {
    let (op, request, client_args) = match &args.command {
        CounterCommand::Add { name, n, client } => {
            ("add", json!({ "name": name, "delta": n }), client)
        }
        CounterCommand::Get { name, client } => ("get", json!({ "name": name }), client),
    };
    let result = client.invoke("counter", None, op, request.to_string().into_bytes()).await?;
    let reply: serde_json::Value = serde_json::from_slice(&result)
        .context("the counter recipe answered something else than JSON")?;
    if client_args.json {
        print_json(&reply)?;
    } else {
        out!("{}", reply["value"]);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_children(args: &LsArgs, children: &[cairn_client::ChildEntry]) -> anyhow::Result<()> {
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
        out!(
            "{:<32} {:>8} {:>10} {:>9} {:>12}",
            "NAME",
            "VERSION",
            "DATA_BYTES",
            "CHILDREN",
            "MZXID"
        );
        for child in children {
            let stat = child.stat.unwrap_or_default();
            out!(
                "{:<32} {:>8} {:>10} {:>9} {:>12}",
                child.name,
                stat.version,
                stat.data_length,
                stat.num_children,
                stat.mzxid
            );
        }
    } else {
        for child in children {
            out!("{}", child.name);
        }
    }
    Ok(())
}

/// Waits for a one-shot watch to fire, or for SIGINT/SIGTERM.
async fn watch_or_signal(watch: cairn_client::OneShotWatch) -> anyhow::Result<WatchEvent> {
    tokio::select! {
        event = watch.fired() => Ok(event?),
        signal = shutdown_signal() => anyhow::bail!("interrupted by {signal} before the watch fired"),
    }
}

/// One event, one line: `KIND PATH ZXID`, or a JSON object per line.
fn print_event(event: &WatchEvent, json: bool) -> anyhow::Result<()> {
    let kind = serde_json::to_value(event.kind)?;
    let kind = kind.as_str().unwrap_or_default();
    if json {
        print_json(&json!({ "kind": kind, "path": event.path, "zxid": event.zxid }))
    } else {
        out!("{kind} {} {}", event.path, event.zxid);
        Ok(())
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

async fn run_acl_command(client: &Client, args: AclArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AclCommand::Get { path, client: client_args } => {
            let (acl, stat) = client.get_acl(&path).await?;
            let entries: Vec<String> = acl.iter().map(ToString::to_string).collect();
            if client_args.json {
                print_json(&json!({ "path": path, "acl": entries, "aversion": stat.aversion }))?;
            } else {
                for entry in &entries {
                    out!("{entry}");
                }
                out!("aversion = {}", stat.aversion);
            }
        }
        AclCommand::Set { path, acl, version, client: client_args } => {
            let acl = AclEntry::parse_list(&acl).map_err(|why| anyhow::anyhow!(why))?;
            let stat = client.set_acl(&path, acl, version).await?;
            if client_args.json {
                print_json(&json!({ "path": path, "aversion": stat.aversion }))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_quota_command(client: &Client, args: QuotaArgs) -> anyhow::Result<ExitCode> {
    let (name, json_out) = match args.command {
        QuotaCommand::Get { name, client: client_args } => (name, client_args.json),
        QuotaCommand::Set { name, sessions, connections, watches, znodes, bytes, client: c } => {
            let (_, now, _) = client.quota(Some(&name)).await?;
            let quota = Quota {
                sessions: sessions.unwrap_or(now.sessions),
                connections: connections.unwrap_or(now.connections),
                watches: watches.unwrap_or(now.watches),
                znodes: znodes.unwrap_or(now.znodes),
                bytes: bytes.unwrap_or(now.bytes),
            };
            client.set_quota(&name, quota).await?;
            (Some(name), c.json)
        }
    };
    let (name, quota, usage) = client.quota(name.as_deref()).await?;
    if json_out {
        print_json(&json!({ "name": name, "quota": quota, "usage": usage }))?;
    } else {
        out!("{:<12} {:>12} {:>12}", name, "HOLDS", "MAY HOLD");
        for (what, held, most) in [
            ("sessions", usage.sessions, quota.sessions),
            ("connections", usage.connections, quota.connections),
            ("watches", usage.watches, quota.watches),
            ("znodes", usage.znodes, quota.znodes),
            ("bytes", usage.bytes, quota.bytes),
        ] {
            out!("{what:<12} {held:>12} {most:>12}");
        }
    }
    Ok(ExitCode::SUCCESS)
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
    out!("{}", serde_json::to_string(value)?);
    Ok(())
}
