//! What survives a crash: every acknowledged write, across kill -9, snapshots and log purges.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::CreateOptions;
use cairn_tests::wait_for;

use crate::start_node;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_keeps_every_acknowledged_write() -> anyhow::Result<()> {
    let (_dir, mut node) = start_node(&[])?;
    node.client().await?.create("/w", b"".to_vec(), CreateOptions::persistent()).await?;

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for task in 0..8 {
        let client = node.client().await?;
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let path = format!("/w/t{task}-{i}");
                match client
                    .create(&path, format!("{i}").into_bytes(), CreateOptions::persistent())
                    .await
                {
                    Ok(_) => acknowledged.lock().expect("not poisoned").push((path, i)),
                    // The node was killed: whatever was in flight may or may not have landed.
                    Err(_) => return,
                }
            }
        }));
    }
    wait_for("400 acknowledged writes", Duration::from_secs(60), || async {
        acknowledged.lock().expect("not poisoned").len() >= 400
    })
    .await?;
    node.kill()?;
    for writer in writers {
        writer.await?;
    }

    node.restart()?;
    let client = node.client().await?;
    let acknowledged = acknowledged.lock().expect("not poisoned").clone();
    for (path, i) in &acknowledged {
        let (data, _) = client.get(path).await.map_err(|e| anyhow::anyhow!("{path} lost: {e}"))?;
        assert_eq!(data, format!("{i}").into_bytes(), "{path}");
    }
    assert!(client.children("/w").await?.len() >= acknowledged.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_and_log_purge_then_crash_recovers_everything() -> anyhow::Result<()> {
    let (_dir, mut node) = start_node(&["--snapshot-every", "50"])?;
    let client = node.client().await?;
    client.create("/s", b"".to_vec(), CreateOptions::persistent()).await?;
    // One write at a time, so each is its own log entry and snapshots come every 50.
    for i in 0..300 {
        client
            .create("/s/n-", format!("{i}").into_bytes(), CreateOptions::persistent().sequential())
            .await?;
    }
    client.set("/s", b"done".to_vec(), Some(0)).await?;
    wait_for("a snapshot and a log purge", Duration::from_secs(60), || async {
        client
            .server_info()
            .await
            .is_ok_and(|info| info.snapshot_zxid.is_some() && info.purged_zxid.is_some())
    })
    .await?;
    let before = client.server_info().await?;
    drop(client);

    node.kill()?;
    node.restart()?;
    let client = node.client().await?;
    let info = client.server_info().await?;
    assert!(info.applied_zxid >= before.applied_zxid, "{info:?} after {before:?}");
    assert_eq!(client.get("/s").await?.0, b"done");
    let children = client.children("/s").await?;
    assert_eq!(children.len(), 300);
    for (i, name) in children.iter().enumerate() {
        assert_eq!(name, &format!("n-{i:010}"));
        assert_eq!(client.get(&format!("/s/{name}")).await?.0, format!("{i}").into_bytes());
    }
    // The sequence counter was restored with the tree.
    let next =
        client.create("/s/n-", b"".to_vec(), CreateOptions::persistent().sequential()).await?;
    assert_eq!(next, "/s/n-0000000300");
    assert!(client.last_zxid() > before.applied_zxid);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_and_restart_resumes() -> anyhow::Result<()> {
    let (_dir, mut node) = start_node(&[])?;
    let client = node.client().await?;
    let (_, stat) =
        client.create_with_stat("/kept", b"x".to_vec(), CreateOptions::persistent()).await?;
    let status = node.terminate()?;
    assert!(status.success(), "exit status {status:?}; log:\n{}", node.log());
    assert!(node.log().contains("node stopped"), "{}", node.log());

    node.restart()?;
    let client = node.client().await?;
    assert_eq!(client.get("/kept").await?.0, b"x");
    let (_, later) =
        client.create_with_stat("/later", b"".to_vec(), CreateOptions::persistent()).await?;
    assert!(later.czxid > stat.czxid, "zxids never go back across restarts");
    Ok(())
}

/// Everything a node keeps is private to its user, created so: the data directory and every
/// directory in it 0700, every file 0600 — the journal (all data, and the hashes of session
/// secrets), snapshots, keys and compiled recipes. (Before, the journal and compiled files were
/// 0644 and the data directory 0755: any local user could read every session's secret.)
#[tokio::test(flavor = "multi_thread")]
async fn everything_the_node_keeps_is_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (dir, node) = start_node(&["--snapshot-every", "10"])?;
    let client = node.client().await?;
    // Enough writes for a snapshot and a purged log.
    for i in 0..30 {
        client.create(&format!("/f{i}"), vec![1; 100], CreateOptions::persistent()).await?;
    }
    wait_for("a snapshot", Duration::from_secs(60), || async {
        client.server_info().await.is_ok_and(|info| info.snapshot_zxid.is_some())
    })
    .await?;
    let mut checked = 0;
    let mut pending = vec![node.data_dir().to_path_buf(), crate::compiled_dir()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        } else {
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        }
        checked += 1;
    }
    assert!(checked > 5, "only {checked} files and directories");
    drop(dir);
    Ok(())
}
