//! `cairn cluster`: the members, roles and progress; adding and removing members; moving the
//! recipes to a new runtime.

use super::*;

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

/// Prints the membership; progress comes from the leader, asked directly when its client
/// address is known.
pub(super) async fn cluster_status(client: &Client, args: &ClientArgs) -> anyhow::Result<ExitCode> {
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

pub(super) fn role(
    info: &cairn_client::ServerInfo,
    member: &cairn_client::MemberInfo,
) -> &'static str {
    if info.leader == Some(member.node_id) {
        "leader"
    } else if member.voter {
        "follower"
    } else {
        "learner"
    }
}

pub(super) async fn run_cluster_command(
    client: &Client,
    args: ClusterArgs,
) -> anyhow::Result<ExitCode> {
    match args.command {
        ClusterCommand::Status { client: client_args } => {
            cluster_status(client, &client_args).await
        }
        ClusterCommand::Add { node_id, peer_addr, client_addr, learner, client: client_args } => {
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
    }
}
