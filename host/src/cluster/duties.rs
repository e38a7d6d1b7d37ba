//! The leader's duties, and a node's own: deploying the built-in recipes when a cluster is
//! made, reaping TTL znodes, and having its address recorded in the membership. Each is a loop
//! that decides from the state and proposes through the cluster layer like any client write.
//! (Session expiry, the other duty, is in `liveness`.)

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Cluster;
use crate::raft::Member;
use crate::recipe::builtin::BUILTIN_RECIPES;
use crate::store::{Action, Write};

/// How long a starting node waits to become (or learn) the leader, in milliseconds.
pub const STARTUP_LEADER_WAIT_MS: u64 = 60_000;
/// How often the leader looks for TTL znodes whose time has come, in milliseconds.
pub const TTL_REAP_INTERVAL_MS: u64 = 500;

/// A built-in recipe could not be deployed in time.
#[derive(Debug, thiserror::Error)]
#[error("the built-in recipe {recipe} was not deployed within {STARTUP_LEADER_WAIT_MS} ms: {why}")]
pub struct BuiltinError {
    pub recipe: String,
    pub why: String,
}

/// Deploys the built-in recipes through the log, as any recipe is deployed, each as version 1
/// (so two nodes that both believe they lead cannot deploy one twice). Whichever node leads does
/// it; a node that does not lead waits until it is done.
pub async fn deploy_builtin_recipes(cluster: &Cluster) -> Result<(), BuiltinError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(STARTUP_LEADER_WAIT_MS);
    let mut last_error = String::new();
    loop {
        let missing: Vec<(&str, &[u8])> = {
            let state = cluster.state.read();
            let deployed = &state.tree.recipes().highest;
            BUILTIN_RECIPES
                .iter()
                .filter(|(name, _)| !deployed.contains_key(*name))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BuiltinError { recipe: missing[0].0.to_string(), why: last_error });
        }
        if cluster.is_leader() {
            for (name, component) in missing {
                let action = Action::DeployRecipe {
                    name: name.to_string(),
                    version: Some(1),
                    component: component.to_vec(),
                    runtime: crate::recipe::RUNTIME_VERSION.to_string(),
                    // The built-ins belong to the system: no principal deploys their versions.
                    owner: Some(cairn_wire::access::SYSTEM.to_string()),
                };
                let outcome = match cluster.propose(Write::system(action)).await {
                    Ok(applied) => applied.await.1.map(|_| ()),
                    Err(error) => Err(error),
                };
                match outcome {
                    Ok(()) => tracing::info!(recipe = %name, "deployed built-in recipe"),
                    Err(error) => {
                        // Not leading after all, say: look again shortly.
                        tracing::debug!(recipe = %name, %error, "built-in recipe not deployed yet");
                        last_error = error.to_string();
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(BUILTIN_RETRY_MS)).await;
    }
}

/// Until the membership records where this node serves (its client address, which the initial
/// cluster list does not give), asks the leader to record it.
pub async fn announce(cluster: Arc<Cluster>, me: Member, mut stopped: watch::Receiver<bool>) {
    let metrics = cluster.raft.metrics();
    loop {
        let recorded = metrics
            .borrow()
            .membership_config
            .membership()
            .get_node(&cluster.node_id)
            .is_some_and(|known| *known == me);
        if recorded {
            return;
        }
        let done = if cluster.is_leader() {
            super::service::record_member(&cluster.raft, cluster.node_id, me.clone()).await
        } else {
            cluster.forwarder.announce(&cluster.raft, cluster.node_id, me.clone()).await
        };
        if let Err(error) = done {
            tracing::debug!(%error, "client address not recorded yet");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ANNOUNCE_RETRY_MS)) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// How often a node asks again to have its address recorded.
const ANNOUNCE_RETRY_MS: u64 = 500;

/// How often a starting node looks again whether the built-in recipes are deployed.
const BUILTIN_RETRY_MS: u64 = 100;

/// While this node leads, proposes a reap entry whenever a TTL znode's time has come by the
/// leader's clock. Apply checks again with the entry's own time, so every replica agrees.
pub async fn reap_ttl_znodes(cluster: Arc<Cluster>, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(Duration::from_millis(TTL_REAP_INTERVAL_MS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let leading = cluster.is_leader();
        let now = super::now_ms();
        let due = leading && cluster.state.read().tree.ttl_due(now);
        if due {
            match cluster.propose(Write::system(Action::ReapTtl)).await {
                Ok(applied) => {
                    if let (_, Err(error)) = applied.await {
                        tracing::debug!(%error, "TTL reap not applied; retrying next tick");
                    }
                }
                Err(error) => tracing::debug!(%error, "TTL reap not proposed; retrying next tick"),
            }
        }
    }
}
