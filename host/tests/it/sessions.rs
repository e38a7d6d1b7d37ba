//! Sessions and ephemeral znodes: what a crashed, closed, disconnected or restarted client's
//! session does to its znodes.

use std::time::{Duration, Instant};

use cairn_client::{Client, CreateOptions, ErrorCode, SessionState};
use cairn_tests::{Relay, wait_for};

use crate::start_node;

/// Generous bound on every wait for something that must happen.
const DEADLINE: Duration = Duration::from_secs(60);

async fn client_with_timeout(
    node: &cairn_tests::Server,
    timeout: Duration,
) -> anyhow::Result<Client> {
    Ok(Client::connect_with_timeout(&node.addr().to_string(), &node.admin(), timeout).await?)
}

async fn exists(client: &Client, path: &str) -> bool {
    matches!(client.exists(path).await, Ok(Some(_)))
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkilled_holder_loses_its_ephemerals_after_the_timeout_not_before() -> anyhow::Result<()>
{
    let (_dir, node) = start_node(&[])?;
    let observer = node.client().await?;
    observer.create("/svc", b"".to_vec(), CreateOptions::persistent()).await?;

    let timeout_ms: u64 = 3_000;
    let timeout = timeout_ms.to_string();
    let mut holder = node.spawn_cli(&[
        "create",
        "/svc/worker-",
        "w",
        "--ephemeral",
        "--sequential",
        "--session-timeout",
        &timeout,
    ])?;
    let path = holder.line()?;
    assert_eq!(path, "/svc/worker-0000000000");
    assert!(exists(&observer, &path).await);

    holder.child.kill()?;
    let killed = Instant::now();
    holder.child.wait()?;
    wait_for("the ephemeral to go", DEADLINE, || async { !exists(&observer, &path).await }).await?;
    // The holder pinged a quarter timeout before it died at the latest (give or take its
    // scheduling), so the node must not delete the znode within half the timeout of the kill.
    let gone_after = killed.elapsed();
    assert!(
        gone_after >= Duration::from_millis(timeout_ms / 2),
        "deleted {gone_after:?} after the kill, before the {timeout_ms} ms timeout"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_close_removes_ephemerals_at_once() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let observer = node.client().await?;
    let holder = node.client().await?;
    holder.create("/lock", b"".to_vec(), CreateOptions::ephemeral()).await?;
    let held =
        holder.create("/held-", b"".to_vec(), CreateOptions::ephemeral().sequential()).await?;
    assert_eq!(holder.ephemerals(None).await?, vec![held.clone(), "/lock".to_string()]);
    let listed = observer.sessions().await?;
    let mine = listed.iter().find(|s| s.session_id == holder.session_id()).expect("listed");
    assert_eq!(mine.ephemerals, 2);
    assert_eq!(mine.timeout_ms, 10_000);

    holder.close().await?;
    // The close was applied before its reply: a linearizable read sees the znodes gone.
    assert!(!exists(&observer, "/lock").await);
    assert!(!exists(&observer, &held).await);
    assert!(!observer.sessions().await?.iter().any(|s| s.session_id == holder.session_id()));
    assert_eq!(*holder.session_state().borrow(), SessionState::Closed);
    assert!(holder.get("/").await.is_err(), "a closed client refuses requests");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ephemerals_cannot_have_children_and_need_a_live_session() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let client = node.client().await?;
    client.create("/e", b"".to_vec(), CreateOptions::ephemeral()).await?;
    let child = client.create("/e/child", b"".to_vec(), CreateOptions::persistent()).await;
    assert_eq!(child.expect_err("refused").code(), Some(ErrorCode::NoChildrenForEphemerals));
    let stat = client.exists("/e").await?.expect("exists");
    assert_eq!(stat.ephemeral_owner, client.session_id());

    let too_short = Client::connect_with_timeout(
        &node.addr().to_string(),
        &node.admin(),
        Duration::from_millis(1),
    )
    .await;
    assert_eq!(
        too_short.expect_err("timeout out of range").code(),
        Some(ErrorCode::InvalidArgument)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_restart_within_the_timeout_keeps_the_session() -> anyhow::Result<()> {
    let (_dir, mut node) = start_node(&[])?;
    let holder = client_with_timeout(&node, Duration::from_secs(30)).await?;
    holder.create("/kept", b"".to_vec(), CreateOptions::ephemeral()).await?;
    let mut state = holder.session_state();

    node.kill()?;
    tokio::time::timeout(DEADLINE, state.wait_for(|s| *s == SessionState::Suspended)).await??;
    node.restart()?;
    tokio::time::timeout(DEADLINE, state.wait_for(|s| *s == SessionState::Reconnected)).await??;

    let observer = node.client().await?;
    assert!(exists(&observer, "/kept").await);
    assert_eq!(holder.ephemerals(None).await?, vec!["/kept"]);
    // And the resumed session goes on working.
    holder.create("/kept-too", b"".to_vec(), CreateOptions::ephemeral()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_that_comes_back_keeps_the_session() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let relay = Relay::start(node.addr()).await?;
    let holder = Client::connect_with_timeout(
        &relay.addr().to_string(),
        &node.admin(),
        Duration::from_secs(10),
    )
    .await?;
    holder.create("/through-relay", b"".to_vec(), CreateOptions::ephemeral()).await?;
    let mut state = holder.session_state();

    relay.cut();
    tokio::time::timeout(DEADLINE, state.wait_for(|s| *s == SessionState::Suspended)).await??;
    relay.heal();
    tokio::time::timeout(DEADLINE, state.wait_for(|s| *s == SessionState::Reconnected)).await??;
    let observer = node.client().await?;
    assert!(exists(&observer, "/through-relay").await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_survives_a_node_restart() -> anyhow::Result<()> {
    let (_dir, mut node) = start_node(&[])?;
    let timeout = Duration::from_secs(3);
    let holder = client_with_timeout(&node, timeout).await?;
    holder.create("/orphan", b"".to_vec(), CreateOptions::ephemeral()).await?;
    let session = holder.session_id();

    // The node goes down, and the client dies while it is down.
    node.kill()?;
    drop(holder);
    node.restart()?;
    let restarted = Instant::now();
    let observer = node.client().await?;
    assert!(observer.sessions().await?.iter().any(|s| s.session_id == session));
    wait_for("the orphan's session to expire", DEADLINE, || async {
        !exists(&observer, "/orphan").await
    })
    .await?;
    // A restarted leader gives every session a full timeout again, rather than expiring at once
    // a session it has not heard from since before it went down. (Half, for the margin between
    // the node starting its clock and this test starting its own.)
    assert!(restarted.elapsed() >= timeout / 2, "expired {:?} after restart", restarted.elapsed());
    assert!(!observer.sessions().await?.iter().any(|s| s.session_id == session));
    Ok(())
}
