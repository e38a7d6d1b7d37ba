//! Integration tests of one node: a real `cairn serve` process on a loopback port picked at run
//! time, with its data in a temporary directory.

mod access;
mod admin;
mod bad_input;
mod cli;
mod cluster;
mod coordination;
mod durability;
mod history;
mod recipes;
mod sessions;
mod watches;
mod zkcli;
mod znodes;
mod zookeeper;

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

/// Calls op `O` of its built-in recipe directly, not through the client's handles, with the
/// protocol's own types.
pub async fn call<O: cairn_builtins::Op>(
    client: &cairn_client::Client,
    args: &O,
) -> anyhow::Result<O::Reply> {
    let reply = client.invoke(O::RECIPE, None, O::NAME, cairn_builtins::encode(args)).await?;
    Ok(cairn_builtins::decode(&reply)?)
}

/// Waits until fair lock `lock` has `waiting` sessions queued behind its holder.
pub async fn wait_for_status(
    client: &cairn_client::Client,
    lock: &str,
    waiting: usize,
) -> anyhow::Result<()> {
    let status = cairn_builtins::fair_lock::Status { lock: lock.to_string() };
    cairn_tests::wait_for("the lock's queue", std::time::Duration::from_secs(60), || async {
        call(client, &status).await.is_ok_and(|status| status.queue.len() == waiting)
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
