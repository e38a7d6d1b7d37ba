//! Watches: one-shot and persistent, their order against replies, and nothing lost across a
//! reconnect.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::{Client, CreateOptions, EventKind, RemoveKind, WatchEvent, op};
use cairn_tests::{Relay, wait_for};

use crate::start_node;

/// Generous bound on every wait for an event that must come.
const DEADLINE: Duration = Duration::from_secs(60);

async fn next(stream: &mut cairn_client::WatchStream) -> anyhow::Result<WatchEvent> {
    tokio::time::timeout(DEADLINE, stream.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("watch ended"))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_shot_watches_fire_exactly_once() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let client = node.client().await?;
    let writer = node.client().await?;
    client.create("/w", b"0".to_vec(), CreateOptions::persistent()).await?;

    let (data, _, watch) = client.get_watch("/w").await?;
    assert_eq!(data, b"0");
    let first = writer.set("/w", b"1".to_vec(), None).await?;
    writer.set("/w", b"2".to_vec(), None).await?;
    let event = tokio::time::timeout(DEADLINE, watch.fired()).await??;
    assert_eq!(
        event,
        WatchEvent { kind: EventKind::DataChanged, path: "/w".into(), zxid: first.mzxid }
    );
    // Fired and gone: the node holds no data watch on /w any more.
    assert_eq!(client.remove_watches("/w", RemoveKind::Data).await?, 0);

    // exists on a missing znode fires on its creation; children fires on a child.
    let (stat, created) = client.exists_watch("/later").await?;
    assert!(stat.is_none());
    let (children, child_added) = client.children_watch("/w").await?;
    assert!(children.is_empty());
    writer.create("/later", b"".to_vec(), CreateOptions::persistent()).await?;
    writer.create("/w/c", b"".to_vec(), CreateOptions::persistent()).await?;
    let created = tokio::time::timeout(DEADLINE, created.fired()).await??;
    assert_eq!((created.kind, created.path.as_str()), (EventKind::Created, "/later"));
    let child_added = tokio::time::timeout(DEADLINE, child_added.fired()).await??;
    assert_eq!((child_added.kind, child_added.path.as_str()), (EventKind::ChildrenChanged, "/w"));

    // A data watch also reports deletion.
    let (_, _, watch) = client.get_watch("/later").await?;
    writer.delete("/later", None).await?;
    assert_eq!(tokio::time::timeout(DEADLINE, watch.fired()).await??.kind, EventKind::Deleted);
    Ok(())
}

/// Concurrent writers under /r; a recursive watch must report every change, in zxid order.
#[tokio::test(flavor = "multi_thread")]
async fn persistent_recursive_watch_reports_every_change_in_zxid_order() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let watcher = node.client().await?;
    watcher.create("/r", b"".to_vec(), CreateOptions::persistent()).await?;
    let mut events = watcher.watch("/r", true).await?;

    // (path, kind) -> zxid, as each writer's replies report them.
    let expected: Arc<Mutex<BTreeMap<(String, String), u64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = node.client().await?;
        let expected = expected.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..15 {
                let path = format!("/r/w{w}-{i}");
                let (_, stat) = client
                    .create_with_stat(&path, b"".to_vec(), CreateOptions::persistent())
                    .await?;
                expected
                    .lock()
                    .expect("not poisoned")
                    .insert((path.clone(), "created".into()), stat.czxid);
                let stat = client.set(&path, b"x".to_vec(), None).await?;
                expected
                    .lock()
                    .expect("not poisoned")
                    .insert((path.clone(), "data-changed".into()), stat.mzxid);
                if i % 3 == 0 {
                    client.delete(&path, None).await?;
                    let zxid = client.last_zxid();
                    expected.lock().expect("not poisoned").insert((path, "deleted".into()), zxid);
                }
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let expected = expected.lock().expect("not poisoned").clone();
    let mut last_zxid = 0;
    let mut seen = BTreeMap::new();
    while seen.len() < expected.len() {
        let event = next(&mut events).await?;
        assert!(event.zxid >= last_zxid, "{event:?} after zxid {last_zxid}");
        last_zxid = event.zxid;
        let kind = serde_json::to_value(event.kind)?.as_str().unwrap_or_default().to_string();
        assert!(seen.insert((event.path.clone(), kind), event.zxid).is_none(), "{event:?} twice");
    }
    // Deletes report the zxid the deleting client saw, which is at least the delete's own.
    for ((path, kind), zxid) in &expected {
        let got = seen.get(&(path.clone(), kind.clone())).copied();
        if kind == "deleted" {
            assert!(got.is_some_and(|got| got <= *zxid), "{path} {kind}: {got:?} vs {zxid}");
        } else {
            assert_eq!(got, Some(*zxid), "{path} {kind}");
        }
    }
    Ok(())
}

/// ZooKeeper's ordering guarantee: a client sees the event of a change before any reply that
/// reflects a later zxid — checked for every read a watcher makes while others write.
#[tokio::test(flavor = "multi_thread")]
async fn events_come_before_replies_that_reflect_them() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let watcher = node.client().await?;
    watcher.create("/o", b"".to_vec(), CreateOptions::persistent()).await?;
    let mut events = watcher.watch("/o", true).await?;

    let mut writers = Vec::new();
    for w in 0..3 {
        let client = node.client().await?;
        writers.push(tokio::spawn(async move {
            for i in 0..30 {
                client
                    .create(&format!("/o/{w}-{i}"), b"".to_vec(), CreateOptions::persistent())
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    // After each reply: drain what has arrived; every change at or below the reply's zxid must
    // already be among the events.
    let mut delivered: Vec<WatchEvent> = Vec::new();
    let mut checks = Vec::new();
    while !writers.iter().all(|w| w.is_finished()) {
        // `sync` answers with the zxid its reply reflects.
        let zxid = watcher.sync().await?;
        while let Some(event) = events.try_next() {
            delivered.push(event);
        }
        checks.push((zxid, delivered.len()));
    }
    for writer in writers {
        writer.await??;
    }
    while delivered.len() < 90 {
        delivered.push(next(&mut events).await?);
    }
    for (zxid, count) in checks {
        let due = delivered.iter().filter(|event| event.zxid <= zxid).count();
        assert!(due <= count, "a reply at zxid {zxid} came before {} of its events", due - count);
    }
    Ok(())
}

/// A watcher cut off from the node while others write gets every change it missed once its
/// connection comes back.
#[tokio::test(flavor = "multi_thread")]
async fn events_missed_while_disconnected_are_delivered() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let relay = Relay::start(node.addr()).await?;
    let watcher = Client::connect_with_timeout(
        &relay.addr().to_string(),
        &node.admin(),
        Duration::from_secs(10),
    )
    .await?;
    let writer = node.client().await?;
    writer.create("/m", b"".to_vec(), CreateOptions::persistent()).await?;
    let mut events = watcher.watch("/m", true).await?;
    let (_, _, one_shot) = watcher.get_watch("/m").await?;

    writer.create("/m/before", b"".to_vec(), CreateOptions::persistent()).await?;
    assert_eq!(next(&mut events).await?.path, "/m/before");

    relay.cut();
    let mut state = watcher.session_state();
    let mut missed = Vec::new();
    for i in 0..5 {
        let (_, stat) = writer
            .create_with_stat(&format!("/m/missed-{i}"), b"".to_vec(), CreateOptions::persistent())
            .await?;
        missed.push(stat.czxid);
    }
    let set = writer.multi(vec![op::set("/m", b"changed".to_vec(), None)]).await?;
    assert_eq!(set.len(), 1);
    tokio::time::timeout(DEADLINE, state.wait_for(|s| *s == cairn_client::SessionState::Suspended))
        .await??;
    relay.heal();
    tokio::time::timeout(
        DEADLINE,
        state.wait_for(|s| *s == cairn_client::SessionState::Reconnected),
    )
    .await??;

    for (i, zxid) in missed.iter().enumerate() {
        let event = next(&mut events).await?;
        assert_eq!(
            (event.kind, event.path.clone(), event.zxid),
            (EventKind::Created, format!("/m/missed-{i}"), *zxid)
        );
    }
    assert_eq!(next(&mut events).await?.kind, EventKind::DataChanged);
    // The one-shot data watch set before the cut fires on re-registration.
    let fired = tokio::time::timeout(DEADLINE, one_shot.fired()).await??;
    assert_eq!((fired.kind, fired.path.as_str()), (EventKind::DataChanged, "/m"));

    // And the watch goes on after the reconnect.
    writer.create("/m/after", b"".to_vec(), CreateOptions::persistent()).await?;
    assert_eq!(next(&mut events).await?.path, "/m/after");
    Ok(())
}

/// When the node can no longer replay what a watcher missed (it restarted from a snapshot taken
/// after the watcher's last zxid), the watcher is told `resync-needed` rather than nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_is_told_to_resync_when_the_node_cannot_replay() -> anyhow::Result<()> {
    let (_dir, mut node) = start_node(&["--snapshot-every", "10"])?;
    let relay = Relay::start(node.addr()).await?;
    let watcher = Client::connect_with_timeout(
        &relay.addr().to_string(),
        &node.admin(),
        Duration::from_secs(6),
    )
    .await?;
    watcher.create("/s", b"".to_vec(), CreateOptions::persistent()).await?;
    let mut events = watcher.watch("/s", false).await?;
    watcher.set("/s", b"1".to_vec(), None).await?;
    assert_eq!(next(&mut events).await?.kind, EventKind::DataChanged);

    let mut state = watcher.session_state();
    relay.cut();
    let writer = node.client().await?;
    writer.set("/s", b"missed".to_vec(), None).await?;
    let missed = writer.server_info().await?.applied_zxid;
    // Enough entries for a snapshot past everything the watcher saw.
    for i in 0..25 {
        writer.create(&format!("/filler-{i}"), b"".to_vec(), CreateOptions::persistent()).await?;
    }
    // The snapshot is built beside the writes: the restart must find it.
    wait_for("a snapshot past the missed write", DEADLINE, || async {
        let info = writer.server_info().await;
        info.is_ok_and(|info| info.snapshot_zxid.is_some_and(|zxid| zxid >= missed))
    })
    .await?;
    drop(writer);
    node.kill()?;
    node.restart()?;
    tokio::time::timeout(DEADLINE, state.wait_for(|s| *s == cairn_client::SessionState::Suspended))
        .await??;
    relay.heal();
    tokio::time::timeout(
        DEADLINE,
        state.wait_for(|s| *s == cairn_client::SessionState::Reconnected),
    )
    .await??;
    let event = next(&mut events).await?;
    assert_eq!((event.kind, event.path.as_str()), (EventKind::ResyncNeeded, "/s"));
    assert_eq!(watcher.get("/s").await?.0, b"missed");
    Ok(())
}

/// A session's watches are bounded by the bytes of their paths as well as by count: with 4 KiB
/// paths it holds 4 MiB of them, not 65,536 × 4 KiB. (Before: about 530 MiB per session.)
#[tokio::test(flavor = "multi_thread")]
async fn a_session_watches_at_most_four_mib_of_paths() -> anyhow::Result<()> {
    use cairn_wire::{PATH_BYTES_MAX, WATCH_PATH_BYTES_PER_SESSION_MAX};
    let (_dir, node) = start_node(&[])?;
    let client = node.client().await?;
    let path = |i: usize| {
        let head = format!("/w{i:05}-");
        format!("{head}{}", "x".repeat(PATH_BYTES_MAX - head.len()))
    };
    let fit = WATCH_PATH_BYTES_PER_SESSION_MAX / PATH_BYTES_MAX;
    let mut held = Vec::new();
    for i in 0..fit {
        held.push(client.watch(&path(i), false).await?);
    }
    let error = client.watch(&path(fit), false).await.expect_err("past the bound");
    assert_eq!(error.code(), Some(cairn_client::ErrorCode::TooManyWatches), "{error}");
    // Another session is not held back by this one's watches.
    let other = node.client().await?;
    other.watch(&path(fit), false).await?;
    Ok(())
}
