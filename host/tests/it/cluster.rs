//! Three `cairn serve` processes as one cluster: clients on any node, and the leader killed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_client::CreateOptions;
use cairn_tests::cluster::Cluster;
use cairn_tests::wait_for;

use crate::{binary, compiled_dir, compiled_key, start_cluster};

/// Generous: these waits end as soon as their condition holds.
const DEADLINE: Duration = Duration::from_secs(60);

/// Every node takes writes and linearizable reads (followers forward to the leader); the
/// leader is killed with SIGKILL while a writer keeps writing; the two left elect a new leader
/// and serve on; no acknowledged write is lost; the old leader restarts and catches up.
#[tokio::test(flavor = "multi_thread")]
async fn the_leader_dies_and_the_cluster_goes_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = start_cluster(dir.path(), 3, &[])?;
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();

    // A write through each node, read back linearizably through every node.
    for id in 1..=3 {
        let client = cluster.client(id).await?;
        client
            .create(
                &format!("/from-{id}"),
                id.to_string().into_bytes(),
                CreateOptions::persistent(),
            )
            .await?;
    }
    for id in 1..=3 {
        let children = cluster.client(id).await?.children("/").await?;
        assert_eq!(children, ["cairn", "from-1", "from-2", "from-3"], "node {id}");
    }

    // Writers on every node keep writing while the leader is killed.
    let writer = cluster.client(followers[0]).await?;
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for id in 1..=3u64 {
        let client = cluster.client(id).await?;
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let path = format!("/during-{id}-{n}");
                n += 1;
                let created = client.create(&path, Vec::new(), CreateOptions::persistent());
                match tokio::time::timeout(Duration::from_secs(5), created).await {
                    Ok(Ok(_)) => {
                        acknowledged.lock().expect("not poisoned").push(path[1..].to_string())
                    }
                    // The killed node's writer just stops hearing back; the others retry.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    for n in 0..20 {
        writer.create(&format!("/before-{n}"), Vec::new(), CreateOptions::persistent()).await?;
        acknowledged.lock().expect("not poisoned").push(format!("before-{n}"));
    }
    let killed_at = Instant::now();
    cluster.node(leader).kill()?;
    let new_leader = cluster.leader(&followers, DEADLINE).await?;
    assert_ne!(new_leader, leader);
    // Retry until the new leader takes a write: the client sees retries, not wrong answers.
    let mut n = 0;
    wait_for("a write after the failover", DEADLINE, || {
        let writer = &writer;
        let path = format!("/after-{n}");
        n += 1;
        async move { writer.create(&path, Vec::new(), CreateOptions::persistent()).await.is_ok() }
    })
    .await?;
    let failover = killed_at.elapsed();
    eprintln!("failover: leader {leader} killed → write committed again after {failover:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        tokio::time::timeout(DEADLINE, writer).await??;
    }
    let acknowledged = acknowledged.lock().expect("not poisoned").clone();
    eprintln!("{} writes acknowledged around the kill", acknowledged.len());
    let survivor = cluster.client(followers[1]).await?;
    let read = std::sync::Mutex::new(Vec::new());
    wait_for("a linearizable read after the failover", DEADLINE, || async {
        let now = survivor.children("/").await;
        let ok = now.is_ok();
        if let Ok(now) = now {
            *read.lock().expect("not poisoned") = now;
        }
        ok
    })
    .await?;
    let children = read.into_inner().expect("not poisoned");
    for path in &acknowledged {
        assert!(children.contains(path), "{path} acknowledged before the kill, then lost");
    }

    // The old leader comes back as a follower and catches up.
    cluster.node(leader).restart()?;
    let back = cluster.client(leader).await?;
    wait_for("the restarted node to catch up", DEADLINE, || async {
        back.local().children("/").await.is_ok_and(|now| now == children)
    })
    .await?;
    // Every node has the same state: the same digest as of the same zxid.
    cluster.wait_converged(DEADLINE).await?;
    Ok(())
}

/// `cairn cluster status`: every member, its addresses (each node announces its client address
/// to the leader), one leader, and the leader's view of each member's progress.
#[test]
fn cluster_status_lists_members_roles_and_progress() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start_cluster(dir.path(), 3, &[])?;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let output = cluster.nodes[1].cli(&["cluster", "status", "--json"])?;
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let members = status["members"].as_array().cloned().unwrap_or_default();
        let addressed = members.len() == 3
            && members.iter().all(|m| m["client_addr"].as_str().is_some_and(|a| !a.is_empty()));
        if addressed {
            let leaders = members.iter().filter(|m| m["role"] == "leader").count();
            assert_eq!(leaders, 1, "{status}");
            assert!(members.iter().all(|m| m["matched_zxid"].as_u64().is_some()), "{status}");
            for (i, node) in cluster.nodes.iter().enumerate() {
                let id = i as u64 + 1;
                let member = members.iter().find(|m| m["node_id"] == id).expect("listed");
                assert_eq!(member["client_addr"], node.addr().to_string());
            }
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "no full status within 60 s: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Raft timing flags reach Raft: a cluster with slower timing elects a leader and commits
/// through a follower; timing that leaves no room for three heartbeats is refused at start.
#[tokio::test(flavor = "multi_thread")]
async fn raft_timing_is_set_by_flags_and_checked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let slow = ["--heartbeat-ms", "100", "--election-timeout-ms", "500"];
    let cluster = start_cluster(dir.path(), 3, &slow)?;
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let follower = if leader == 1 { 2 } else { 1 };
    let client = cluster.client(follower).await?;
    client.create("/slow", b"ok".to_vec(), CreateOptions::persistent()).await?;
    assert_eq!(client.get("/slow").await?.0, b"ok");

    let tight = ["--heartbeat-ms", "100", "--election-timeout-ms", "200"];
    let refused = cairn_tests::Server::start(binary(), &dir.path().join("tight"), &tight);
    let error = format!("{:#}", refused.expect_err("fewer than three heartbeats"));
    assert!(error.contains("3 heartbeats"), "{error}");
    Ok(())
}

/// A client given every node (`a,b,c`) is connected to the leader when it dies: the session
/// resumes on a survivor, its ephemeral stays, and its watch goes on reporting changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_fails_over_to_another_node_keeping_its_session() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = start_cluster(dir.path(), 3, &[])?;
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    // The leader first, so that is where the session lives when it dies.
    let order = std::iter::once(leader).chain(survivors.iter().copied());
    let servers: Vec<String> =
        order.map(|id| cluster.nodes[id as usize - 1].addr().to_string()).collect();
    let client = cairn_client::Client::connect_with_timeout(
        &servers.join(","),
        &cluster.admin(),
        Duration::from_secs(6),
    )
    .await?;
    client.create("/mine", Vec::new(), CreateOptions::ephemeral()).await?;
    let mut events = client.watch("/jobs", true).await?;
    let mut state = client.session_state();

    cluster.node(leader).kill()?;
    tokio::time::timeout(
        DEADLINE,
        state.wait_for(|s| *s == cairn_client::SessionState::Reconnected),
    )
    .await??;
    // The same session, on another node: its ephemeral is there and it can make another.
    let other = cluster.client(survivors[0]).await?;
    assert_eq!(other.exists("/mine").await?.map(|s| s.ephemeral_owner), Some(client.session_id()));
    wait_for("a write on the resumed session", DEADLINE, || async {
        client.create("/mine-too", Vec::new(), CreateOptions::ephemeral()).await.is_ok()
    })
    .await?;
    // And its watch reports what happens after the failover.
    other.create("/jobs", Vec::new(), CreateOptions::persistent()).await?;
    let event = tokio::time::timeout(DEADLINE, events.next()).await?.expect("an event");
    assert_eq!(event.path, "/jobs");
    Ok(())
}

/// A session opened on a follower long after the leader was elected lives while its client
/// talks to the follower: the leader counts its timeout from when it first sees the session,
/// not from when it began to lead (it used to expire such a session at once).
#[tokio::test(flavor = "multi_thread")]
async fn a_session_opened_on_a_follower_of_an_old_leader_lives() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start_cluster(dir.path(), 3, &[])?;
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let follower = (1..=3).find(|id| *id != leader).context("a follower")?;
    let timeout = Duration::from_secs(1);
    // The leader has led for longer than the session's whole timeout.
    let led_long = cluster.client(leader).await?;
    let led_since = Instant::now();
    led_long.create("/led", Vec::new(), CreateOptions::persistent()).await?;
    tokio::time::sleep_until((led_since + timeout * 2).into()).await;

    let client = cairn_client::Client::connect_with_timeout(
        &cluster.nodes[follower as usize - 1].addr().to_string(),
        &cluster.admin(),
        timeout,
    )
    .await?;
    let state = client.session_state();
    let until = Instant::now() + timeout * 3;
    let mut n = 0;
    while Instant::now() < until {
        client.create(&format!("/f{n}"), Vec::new(), CreateOptions::ephemeral()).await?;
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*state.borrow(), cairn_client::SessionState::Connected);
    Ok(())
}

/// A fourth node started with `--join` is added with `cairn cluster add` (a learner, then a
/// voter once caught up), has the data, and is removed with `cairn cluster remove`.
#[test]
fn a_node_joins_and_leaves() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let compiled = compiled_dir().to_str().unwrap_or_default().to_string();
    let key = compiled_key().to_str().unwrap_or_default().to_string();
    let mut cluster = Cluster::start(
        binary(),
        dir.path(),
        3,
        &["--compiled-dir", &compiled, "--compiled-key", &key],
    )?;
    let written = cluster.nodes[0].cli(&["create", "/before-join", "here"])?;
    assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));

    let (peer, client) =
        (cairn_tests::cluster::free_udp_port()?, cairn_tests::cluster::free_udp_port()?);
    let certs = cluster.certs_dir().to_path_buf();
    let joining = std::thread::spawn({
        let data = dir.path().join("node-4");
        let (compiled, key) = (compiled.clone(), key.clone());
        move || {
            let peer = peer.to_string();
            let args = ["--node-id", "4", "--peer-listen", &peer, "--join", "--dev-certs"];
            let mut args = args.to_vec();
            args.push(certs.to_str().unwrap_or_default());
            args.extend_from_slice(&["--compiled-dir", &compiled, "--compiled-key", &key]);
            cairn_tests::Server::start_on(binary(), &data, client, &args)
        }
    });
    let added = cluster.nodes[1].cli(&[
        "cluster",
        "add",
        "4",
        &peer.to_string(),
        &client.to_string(),
        "--json",
    ])?;
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let status: serde_json::Value = serde_json::from_slice(&added.stdout)?;
    let fourth =
        status["members"].as_array().and_then(|m| m.iter().find(|m| m["node_id"] == 4)).cloned();
    assert_eq!(fourth.map(|m| m["role"].clone()), Some(serde_json::json!("follower")), "{status}");
    let node = joining.join().map_err(|_| anyhow::anyhow!("the start panicked"))??;
    let read = node.cli(&["get", "/before-join"])?;
    assert_eq!(String::from_utf8_lossy(&read.stdout), "here\n");
    cluster.nodes.push(node);

    let removed = cluster.nodes[0].cli(&["cluster", "remove", "4", "--json"])?;
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    let status: serde_json::Value = serde_json::from_slice(&removed.stdout)?;
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3), "{status}");

    // A fifth joins as a learner for good (an observer): it does not vote, yet serves reads
    // and takes writes (forwarded).
    let (peer, client) =
        (cairn_tests::cluster::free_udp_port()?, cairn_tests::cluster::free_udp_port()?);
    let certs = cluster.certs_dir().to_path_buf();
    let joining = std::thread::spawn({
        let data = dir.path().join("node-5");
        let (compiled, key) = (compiled.clone(), key.clone());
        move || {
            let peer = peer.to_string();
            let mut args = vec!["--node-id", "5", "--peer-listen", &peer, "--join", "--dev-certs"];
            args.push(certs.to_str().unwrap_or_default());
            args.extend_from_slice(&["--compiled-dir", &compiled, "--compiled-key", &key]);
            cairn_tests::Server::start_on(binary(), &data, client, &args)
        }
    });
    let added = cluster.nodes[2].cli(&[
        "cluster",
        "add",
        "5",
        &peer.to_string(),
        &client.to_string(),
        "--learner",
        "--json",
    ])?;
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let status: serde_json::Value = serde_json::from_slice(&added.stdout)?;
    let fifth =
        status["members"].as_array().and_then(|m| m.iter().find(|m| m["node_id"] == 5)).cloned();
    assert_eq!(fifth.map(|m| m["role"].clone()), Some(serde_json::json!("learner")), "{status}");
    let observer = joining.join().map_err(|_| anyhow::anyhow!("the start panicked"))??;
    let read = observer.cli(&["get", "/before-join"])?;
    assert_eq!(String::from_utf8_lossy(&read.stdout), "here\n");
    let wrote = observer.cli(&["create", "/from-observer", "x"])?;
    assert!(wrote.status.success(), "{}", String::from_utf8_lossy(&wrote.stderr));
    cluster.nodes.push(observer);
    Ok(())
}

/// The leader is cut off from the others (frozen with SIGSTOP, so it still believes it leads
/// when it wakes): the majority elects a new leader and takes writes; healed, the old leader
/// steps down, and every node converges on the same state with nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_leader_steps_down_when_healed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = start_cluster(dir.path(), 3, &[])?;
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let majority: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let writer = cluster.client(majority[0]).await?;
    writer.create("/before", Vec::new(), CreateOptions::persistent()).await?;

    cluster.node(leader).pause()?;
    let new_leader = cluster.leader(&majority, DEADLINE).await?;
    assert_ne!(new_leader, leader);
    let mut n = 0;
    wait_for("a write in the majority", DEADLINE, || {
        let path = format!("/during-{n}");
        n += 1;
        let writer = &writer;
        async move { writer.create(&path, Vec::new(), CreateOptions::persistent()).await.is_ok() }
    })
    .await?;

    cluster.node(leader).resume()?;
    let healed = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    assert_ne!(healed, leader, "the old leader stepped down");
    cluster.wait_converged(DEADLINE).await?;
    let children = cluster.client(leader).await?.children("/").await?;
    assert!(
        children.contains(&"before".to_string())
            && children.iter().any(|c| c.starts_with("during-")),
        "{children:?}"
    );
    Ok(())
}

/// A follower loses its disk: restarted empty with `--join`, it is sent a snapshot (the log it
/// missed is purged) and ends with the same state as the others.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_lost_its_disk_rejoins_by_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = start_cluster(dir.path(), 3, &["--snapshot-every", "10"])?;
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let lost = (1..=3).find(|id| *id != leader).expect("a follower");
    let writer = cluster.client(leader).await?;
    for n in 0..60 {
        writer.create(&format!("/n-{n}"), vec![b'x'; 100], CreateOptions::persistent()).await?;
    }

    cluster.node(lost).kill()?;
    std::fs::remove_dir_all(cluster.node(lost).data_dir())?;
    // More writes while it is gone: snapshots are taken and the log behind them purged.
    for n in 60..90 {
        writer.create(&format!("/n-{n}"), vec![b'y'; 100], CreateOptions::persistent()).await?;
    }
    let info = writer.server_info().await?;
    assert!(info.purged_zxid.is_some(), "the leader purged its log: {info:?}");
    // Restarted empty, as a member waiting to be caught up rather than a new cluster.
    let rejoin = cluster.node(lost).args();
    let mut rejoin_args: Vec<&str> = Vec::new();
    let mut args = rejoin.iter();
    while let Some(arg) = args.next() {
        if arg == "--initial-cluster" {
            args.next();
        } else {
            rejoin_args.push(arg);
        }
    }
    rejoin_args.push("--join");
    cluster.node(lost).set_args(&rejoin_args);
    cluster.node(lost).restart()?;
    let back = match cluster.client(lost).await {
        Ok(client) => client,
        Err(error) => anyhow::bail!("{error}; its log:\n{}", cluster.node(lost).log()),
    };
    let snapshot = back.server_info().await?.snapshot_zxid;
    assert!(snapshot.is_some(), "it was caught up by a snapshot");
    cluster.wait_converged(DEADLINE).await?;
    assert_eq!(back.local().children("/").await?.len(), 91, "cairn and 90 znodes");
    Ok(())
}

/// Every node restarted in turn (SIGTERM, then started again) while clients keep writing: they
/// see errors that say "try again" and never a wrong answer; every acknowledged write survives.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_under_load_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = start_cluster(dir.path(), 3, &[])?;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr().to_string()).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..3 {
        let mut order = addrs.clone();
        order.rotate_left(writer);
        let client = cairn_client::Client::connect_with_timeout(
            &order.join(","),
            &cluster.admin(),
            Duration::from_secs(8),
        )
        .await?;
        let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            let mut retried = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let path = format!("/w{writer}-{n}");
                n += 1;
                match client.create(&path, Vec::new(), CreateOptions::persistent()).await {
                    Ok(_) => acknowledged.lock().expect("not poisoned").push(path),
                    Err(error) => {
                        // Only "try again" errors: a unique path can never already exist, say.
                        let transient =
                            matches!(
                                error.code(),
                                Some(
                                    cairn_client::ErrorCode::Unavailable
                                        | cairn_client::ErrorCode::NotLeader
                                )
                            ) || matches!(error, cairn_client::Error::ConnectionLost(_));
                        anyhow::ensure!(transient, "writer {writer}: {path}: {error}");
                        retried += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            anyhow::Ok(retried)
        }));
    }
    for id in 1..=3u64 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = cluster.node(id).terminate()?;
        assert!(status.success(), "node {id} stopped cleanly: {status:?}");
        cluster.node(id).restart()?;
        cluster.leader(&[1, 2, 3], DEADLINE).await?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut retried = 0;
    for writer in writers {
        retried += tokio::time::timeout(DEADLINE, writer).await???;
    }
    let acknowledged = acknowledged.lock().expect("not poisoned").clone();
    eprintln!("rolling restart: {} writes acknowledged, {retried} retried", acknowledged.len());
    let reader = cluster.client(1).await?;
    let children = reader.children("/").await?;
    for path in &acknowledged {
        assert!(children.contains(&path[1..].to_string()), "{path} acknowledged, then lost");
    }
    Ok(())
}

/// The leader is cut off from the majority by its network links (it keeps running and believes
/// it leads): it acknowledges no write and answers no linearizable read, the majority elects a
/// leader and takes writes; healed, it steps down and every node converges.
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_leader_acknowledges_nothing_and_rejoins() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (compiled, key) = (compiled_dir(), compiled_key());
    let cluster = Cluster::start_linked(
        binary(),
        dir.path(),
        3,
        &[
            "--compiled-dir",
            compiled.to_str().unwrap_or_default(),
            "--compiled-key",
            key.to_str().unwrap_or_default(),
        ],
    )
    .await?;
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let majority: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let cut_off = cluster.client(leader).await?;
    cut_off.create("/before", Vec::new(), CreateOptions::persistent()).await?;

    cluster.isolate(leader);
    // Through the cut-off leader: no acknowledgement, no linearizable read (it cannot reach a
    // quorum), for as long as we care to wait.
    let write = tokio::time::timeout(
        Duration::from_secs(3),
        cut_off.create("/minority", Vec::new(), CreateOptions::persistent()),
    )
    .await;
    assert!(!matches!(write, Ok(Ok(_))), "the minority acknowledged a write: {write:?}");
    let read = tokio::time::timeout(Duration::from_secs(3), cut_off.children("/")).await;
    assert!(!matches!(read, Ok(Ok(_))), "the minority served a linearizable read: {read:?}");

    let new_leader = cluster.leader(&majority, DEADLINE).await?;
    assert_ne!(new_leader, leader);
    let writer = cluster.client(majority[0]).await?;
    let mut n = 0;
    wait_for("a write in the majority", DEADLINE, || {
        let path = format!("/majority-{n}");
        n += 1;
        let writer = &writer;
        async move { writer.create(&path, Vec::new(), CreateOptions::persistent()).await.is_ok() }
    })
    .await?;

    cluster.heal();
    let healed = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    assert_ne!(healed, leader, "the old leader stepped down");
    cluster.wait_converged(DEADLINE).await?;
    let children = cluster.client(1).await?.children("/").await?;
    assert!(children.contains(&"before".to_string()), "{children:?}");
    assert!(children.iter().any(|c| c.starts_with("majority-")), "{children:?}");
    Ok(())
}

/// Given certificate files, a node uses them (and writes no development CA of its own): a
/// client that trusts that CA reaches it.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_serves_with_the_certificate_files_it_is_given() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let names = ["127.0.0.1".to_string(), "localhost".to_string()];
    let (files, _) = cairn::tls::ensure_dev_certificates(&dir.path().join("pki"), &names, 1)?;
    let compiled = compiled_dir();
    let data = dir.path().join("node");
    let node = cairn_tests::Server::start(
        binary(),
        &data,
        &[
            "--tls-cert",
            files.cert.to_str().unwrap_or_default(),
            "--tls-key",
            files.key.to_str().unwrap_or_default(),
            "--tls-ca",
            files.ca.to_str().unwrap_or_default(),
            "--compiled-dir",
            compiled.to_str().unwrap_or_default(),
            "--compiled-key",
            compiled_key().to_str().unwrap_or_default(),
        ],
    )?;
    assert!(!data.join("tls").exists(), "no development certificates written");
    let admin = cairn_tests::admin_in(&dir.path().join("pki"));
    let client = cairn_client::Client::connect(&node.addr().to_string(), &admin).await?;
    client.create("/signed", Vec::new(), CreateOptions::persistent()).await?;
    Ok(())
}

/// The members `cairn cluster status` lists, as (id, role).
fn members(node: &cairn_tests::Server) -> anyhow::Result<Vec<(u64, String)>> {
    let output = node.cli(&["cluster", "status", "--json"])?;
    anyhow::ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(status["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| (m["node_id"].as_u64().unwrap_or(0), m["role"].as_str().unwrap_or("").into()))
        .collect())
}

fn writable(node: &cairn_tests::Server, path: &str) -> anyhow::Result<()> {
    let written = node.cli(&["create", path, "x"])?;
    anyhow::ensure!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
    Ok(())
}

/// `cluster add` of a node that never starts: the new member never catches up, so it never
/// becomes a voter; the change fails with a clear error, the membership is as it was and the
/// cluster takes writes. (Before, a one-node cluster made the unreachable node a voter and
/// lost its quorum for good.) On one node and on three, asked of a follower.
#[test]
fn adding_a_node_that_never_starts_leaves_the_cluster_writable() -> anyhow::Result<()> {
    let (_dir, node) = crate::start_node(&[])?;
    let added = node.cli(&["cluster", "add", "99", "127.0.0.1:9", "127.0.0.1:9"])?;
    assert!(!added.status.success(), "added a node that never started");
    let error = String::from_utf8_lossy(&added.stderr);
    assert!(error.contains("did not catch up"), "{error}");
    assert_eq!(members(&node)?.iter().map(|m| m.0).collect::<Vec<_>>(), [1]);
    writable(&node, "/after-add")?;

    let dir = tempfile::tempdir()?;
    let cluster = start_cluster(dir.path(), 3, &[])?;
    let added = cluster.nodes[1].cli(&["cluster", "add", "99", "127.0.0.1:9", "127.0.0.1:9"])?;
    assert!(!added.status.success(), "added a node that never started");
    let error = String::from_utf8_lossy(&added.stderr);
    assert!(error.contains("did not catch up"), "{error}");
    let ids: Vec<u64> = members(&cluster.nodes[0])?.iter().map(|m| m.0).collect();
    assert_eq!(ids, [1, 2, 3]);
    for (i, node) in cluster.nodes.iter().enumerate() {
        writable(node, &format!("/after-add-{i}"))?;
    }
    Ok(())
}

/// With one of three nodes down, removing a live one would leave voters of which only one
/// answers: refused. Removing the dead one is fine, and so is going down to one voter; removing
/// the last voter is refused. The cluster takes writes all along.
#[tokio::test(flavor = "multi_thread")]
async fn removals_that_would_lose_the_quorum_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = start_cluster(dir.path(), 3, &[])?;
    cluster.node(3).kill()?;
    let leader = cluster.leader(&[1, 2], DEADLINE).await?;
    let other = if leader == 1 { 2 } else { 1 };

    let removed = cluster.node(leader).cli(&["cluster", "remove", &other.to_string()])?;
    assert!(!removed.status.success(), "removed a live voter with another one down");
    let error = String::from_utf8_lossy(&removed.stderr);
    assert!(error.contains("refused"), "{error}");
    writable(cluster.node(leader), "/after-refusal")?;

    let removed = cluster.node(leader).cli(&["cluster", "remove", "3"])?;
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    let removed = cluster.node(leader).cli(&["cluster", "remove", &other.to_string()])?;
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    let last = cluster.node(leader).cli(&["cluster", "remove", &leader.to_string()])?;
    assert!(!last.status.success(), "removed the last voter");
    let error = String::from_utf8_lossy(&last.stderr);
    assert!(error.contains("no voters"), "{error}");
    assert_eq!(members(cluster.node(leader))?.iter().map(|m| m.0).collect::<Vec<_>>(), [leader]);
    writable(cluster.node(leader), "/after-removals")?;
    Ok(())
}
