//! The znode commands: create, get, set, rm, ls, stat, watch, and the session list.

use super::*;

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

pub(super) fn print_children(
    args: &LsArgs,
    children: &[cairn_client::ChildEntry],
) -> anyhow::Result<()> {
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
pub(super) async fn watch_or_signal(
    watch: cairn_client::OneShotWatch,
) -> anyhow::Result<WatchEvent> {
    tokio::select! {
        event = watch.fired() => Ok(event?),
        signal = shutdown_signal() => anyhow::bail!("interrupted by {signal} before the watch fired"),
    }
}

/// One event, one line: `KIND PATH ZXID`, or a JSON object per line.
pub(super) fn print_event(event: &WatchEvent, json: bool) -> anyhow::Result<()> {
    let kind = serde_json::to_value(event.kind)?;
    let kind = kind.as_str().unwrap_or_default();
    if json {
        print_json(&json!({ "kind": kind, "path": event.path, "zxid": event.zxid }))
    } else {
        out!("{kind} {} {}", event.path, event.zxid);
        Ok(())
    }
}

/// Deletes `path` and everything under it, children first. Znodes deleted meanwhile by someone
/// else are fine; a znode created meanwhile makes its parent's delete fail with `not-empty`.
pub(super) async fn remove_recursive(client: &Client, path: &str) -> anyhow::Result<()> {
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

pub(super) fn write_stat(out: &mut impl Write, stat: &Stat) -> std::io::Result<()> {
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

pub(super) async fn create(client: &Client, args: CreateArgs) -> anyhow::Result<ExitCode> {
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

pub(super) async fn get(client: &Client, args: GetArgs) -> anyhow::Result<ExitCode> {
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

pub(super) async fn set(client: &Client, args: SetArgs) -> anyhow::Result<ExitCode> {
    let stat = client.set(&args.path, args.data.into_bytes(), args.version).await?;
    if args.client.json {
        print_json(&json!({ "path": args.path, "stat": stat }))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn rm(client: &Client, args: RmArgs) -> anyhow::Result<ExitCode> {
    if args.recursive {
        remove_recursive(client, &args.path).await?;
    } else {
        client.delete(&args.path, args.version).await?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn ls(client: &Client, args: LsArgs) -> anyhow::Result<ExitCode> {
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

pub(super) async fn stat(client: &Client, args: StatArgs) -> anyhow::Result<ExitCode> {
    let (_, stat) = client.get(&args.path).await?;
    if args.client.json {
        print_json(&json!({ "path": args.path, "stat": stat }))?;
    } else {
        write_stat(&mut std::io::stdout().lock(), &stat)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn watch(client: &Client, args: WatchArgs) -> anyhow::Result<ExitCode> {
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

pub(super) async fn sessions(client: &Client, args: SessionsArgs) -> anyhow::Result<ExitCode> {
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
            let this =
                if session.session_id == client.session_id() { "  (this command)" } else { "" };
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
