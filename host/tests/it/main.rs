//! Integration tests of one node: a real `cairn serve` process on a loopback port picked at run
//! time, with its data in a temporary directory.

mod access;
mod bad_input;
mod cli;
mod cluster;
mod coordination;
mod durability;
mod history;
mod recipes;
mod sessions;
mod watches;
mod znodes;

use std::path::Path;

use cairn_tests::Server;

/// The `cairn` binary cargo built for these tests.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn"))
}

/// A node in a fresh temporary directory, kept alive as long as the returned guard. The nodes
/// share one directory of compiled recipes, so only the first compiles the built-ins.
pub fn start_node(extra_args: &[&str]) -> anyhow::Result<(tempfile::TempDir, Server)> {
    let dir = tempfile::tempdir()?;
    let args = with_shared_compiled(extra_args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(binary(), &dir.path().join("cairn-data"), &args)?;
    Ok((dir, server))
}

/// Where the test nodes keep compiled recipes: one directory for all of them.
pub fn compiled_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled-recipes")
}

/// The key the test nodes sign compiled recipes with: one for all of them, so they share the
/// compiled files.
pub fn compiled_key() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled-recipes.key")
}

/// `extra_args` after the flags that share the compiled recipes of every test node.
fn with_shared_compiled(extra_args: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--compiled-dir".to_string(),
        compiled_dir().to_string_lossy().into_owned(),
        "--compiled-key".to_string(),
        compiled_key().to_string_lossy().into_owned(),
    ];
    args.extend(extra_args.iter().map(|arg| arg.to_string()));
    args
}

/// A cluster of `size` nodes in `dir`, sharing the compiled recipes of every test node.
pub fn start_cluster(
    dir: &Path,
    size: usize,
    extra_args: &[&str],
) -> anyhow::Result<cairn_tests::cluster::Cluster> {
    let args = with_shared_compiled(extra_args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cairn_tests::cluster::Cluster::start(binary(), dir, size, &args)
}

/// Waits until fair lock `lock` has `waiting` sessions queued behind its holder.
pub async fn wait_for_status(
    client: &cairn_client::Client,
    lock: &str,
    waiting: usize,
) -> anyhow::Result<()> {
    let args = serde_json::json!({ "lock": lock }).to_string().into_bytes();
    cairn_tests::wait_for("the lock's queue", std::time::Duration::from_secs(60), || {
        let args = args.clone();
        async move {
            let Ok(reply) = client.invoke("fair-lock", None, "status", args).await else {
                return false;
            };
            let Ok(status) = serde_json::from_slice::<serde_json::Value>(&reply) else {
                return false;
            };
            status["queue"].as_array().is_some_and(|queue| queue.len() == waiting)
        }
    })
    .await
}

/// Waits until election `election` has `count` candidates (the leader among them).
pub async fn wait_for_candidates(
    client: &cairn_client::Client,
    election: &str,
    count: usize,
) -> anyhow::Result<()> {
    let path = client.election(election).path();
    cairn_tests::wait_for("the candidates", std::time::Duration::from_secs(60), || {
        let path = path.clone();
        async move { client.children(&path).await.is_ok_and(|c| c.len() == count) }
    })
    .await
}
