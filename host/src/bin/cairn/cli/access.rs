//! Who may do what, from the command line: ACLs, tokens, client certificates, administrators
//! and quotas.

use super::*;

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

pub(super) async fn run_acl_command(client: &Client, args: AclArgs) -> anyhow::Result<ExitCode> {
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

pub(super) async fn run_quota_command(
    client: &Client,
    args: QuotaArgs,
) -> anyhow::Result<ExitCode> {
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

pub(super) async fn token(client: &Client, args: TokenArgs) -> anyhow::Result<ExitCode> {
    match args.command {
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
    }
}

pub(super) async fn whoami(client: &Client, args: SessionsArgs) -> anyhow::Result<ExitCode> {
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

pub(super) async fn admin(client: &Client, args: AdminArgs) -> anyhow::Result<ExitCode> {
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
