//! The znode API through the Rust client library: versions, sequential names, multi,
//! pipelining, read consistency.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_client::{CreateOptions, Error, ErrorCode, OpResult, op};
use cairn_tests::wait_for;

use crate::start_node;

#[tokio::test(flavor = "multi_thread")]
async fn versions_and_conditional_updates() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let client = node.client().await?;

    let (path, created) =
        client.create_with_stat("/cfg", b"v0".to_vec(), CreateOptions::persistent()).await?;
    assert_eq!(path, "/cfg");
    assert_eq!(created.version, 0);
    assert_eq!(created.czxid, created.mzxid);

    let after = client.set("/cfg", b"v1".to_vec(), Some(0)).await?;
    assert_eq!(after.version, 1);
    assert!(after.mzxid > created.mzxid);
    assert_eq!(after.czxid, created.czxid);

    let stale = client.set("/cfg", b"lost".to_vec(), Some(0)).await.expect_err("stale version");
    assert_eq!(stale.code(), Some(ErrorCode::BadVersion));
    assert_eq!(client.get("/cfg").await?.0, b"v1");

    // Unconditional set ignores the version.
    assert_eq!(client.set("/cfg", b"v2".to_vec(), None).await?.version, 2);

    let refused = client.delete("/cfg", Some(1)).await.expect_err("stale delete");
    assert_eq!(refused.code(), Some(ErrorCode::BadVersion));
    client.delete("/cfg", Some(2)).await?;
    assert_eq!(client.exists("/cfg").await?, None);
    assert_eq!(client.get("/cfg").await.expect_err("gone").code(), Some(ErrorCode::NoNode));

    let exists = client.create("/cfg", b"".to_vec(), CreateOptions::persistent()).await;
    assert!(exists.is_ok());
    let twice = client.create("/cfg", b"".to_vec(), CreateOptions::persistent()).await;
    assert_eq!(twice.expect_err("exists").code(), Some(ErrorCode::NodeExists));
    Ok(())
}

/// Compare-and-set from many clients at once: no increment is lost.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_compare_and_set_loses_nothing() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let setup = node.client().await?;
    setup.create("/counter", b"0".to_vec(), CreateOptions::persistent()).await?;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let client = node.client().await?;
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 25 {
                let (data, stat) = client.get("/counter").await?;
                let value: u64 = String::from_utf8(data)?.parse()?;
                match client
                    .set("/counter", (value + 1).to_string().into_bytes(), Some(stat.version))
                    .await
                {
                    Ok(_) => done += 1,
                    Err(error) if error.code() == Some(ErrorCode::BadVersion) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let (data, stat) = setup.get("/counter").await?;
    assert_eq!(data, b"100");
    assert_eq!(stat.version, 100);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sequential_names_are_unique_and_ordered() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let client = node.client().await?;
    client.create("/q", b"".to_vec(), CreateOptions::persistent()).await?;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .create(
                    "/q/item-",
                    format!("{i}").into_bytes(),
                    CreateOptions::persistent().sequential(),
                )
                .await
        }));
    }
    let mut names = BTreeSet::new();
    for task in tasks {
        names.insert(task.await??);
    }
    let expected: BTreeSet<String> = (0..40).map(|n| format!("/q/item-{n:010}")).collect();
    assert_eq!(names, expected);

    // The counter is per parent.
    client.create("/r", b"".to_vec(), CreateOptions::persistent()).await?;
    assert_eq!(
        client.create("/r/", b"".to_vec(), CreateOptions::persistent().sequential()).await?,
        "/r/0000000000"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_is_all_or_nothing() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let client = node.client().await?;
    client.create("/acct", b"".to_vec(), CreateOptions::persistent()).await?;

    let results = client
        .multi(vec![
            op::create("/acct/a", b"10".to_vec(), CreateOptions::persistent()),
            op::create("/acct/b", b"20".to_vec(), CreateOptions::persistent()),
            op::check("/acct", 0),
            op::set("/acct", b"opened".to_vec(), Some(0)),
        ])
        .await?;
    assert_eq!(results.len(), 4);
    assert!(matches!(&results[0], OpResult::Created { path, .. } if path == "/acct/a"));
    assert!(matches!(&results[2], OpResult::Checked {}));
    assert!(matches!(&results[3], OpResult::Set { stat } if stat.version == 1));

    // The third operation fails: the first two must not be applied.
    let failed = client
        .multi(vec![
            op::set("/acct/a", b"0".to_vec(), None),
            op::create("/acct/c", b"".to_vec(), CreateOptions::persistent()),
            op::delete("/acct/b", Some(7)),
            op::set("/acct/b", b"30".to_vec(), None),
        ])
        .await
        .expect_err("bad version in op 2");
    match failed {
        Error::MultiFailed { index, error } => {
            assert_eq!(index, 2);
            assert_eq!(error.code, ErrorCode::BadVersion);
        }
        other => panic!("expected a multi failure, got {other:?}"),
    }
    assert_eq!(client.get("/acct/a").await?.0, b"10");
    assert_eq!(client.exists("/acct/c").await?, None);
    assert_eq!(client.get("/acct/b").await?.0, b"20");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_on_one_connection() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let client = node.client().await?;
    client.create("/p", b"".to_vec(), CreateOptions::persistent()).await?;
    let mut tasks = Vec::new();
    for i in 0..300 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/p/n{i}");
            client.create(&path, vec![b'x'; 100], CreateOptions::persistent()).await?;
            // Read-your-writes, even locally.
            let (data, _) = client.local().get(&path).await?;
            anyhow::ensure!(data.len() == 100);
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    assert_eq!(client.children("/p").await?.len(), 300);
    let zxid = client.sync().await?;
    assert!(zxid >= client.last_zxid().saturating_sub(1));

    // Group commit: 301 writes, most of them in flight together, shared fsyncs.
    let info = client.server_info().await?;
    assert!(info.log_fsyncs < 301, "no fsync was shared: {info:?}");
    assert!(info.log_entries_written < 301, "no entry carried several writes: {info:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn children_stats_ttl_and_containers() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let client = node.client().await?;
    client.create("/d", b"".to_vec(), CreateOptions::persistent()).await?;
    client.create("/d/x", b"abc".to_vec(), CreateOptions::persistent()).await?;
    client.create("/d/y", b"".to_vec(), CreateOptions::persistent()).await?;
    let (parent, children) = client.children_with_stats("/d").await?;
    assert_eq!(parent.num_children, 2);
    assert_eq!(children.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["x", "y"]);
    assert_eq!(children[0].stat.map(|s| s.data_length), Some(3));

    client.create("/ttl", b"".to_vec(), CreateOptions::ttl(Duration::from_millis(200))).await?;
    client.create("/box", b"".to_vec(), CreateOptions::container()).await?;
    client.create("/box/item", b"".to_vec(), CreateOptions::persistent()).await?;
    client.delete("/box/item", None).await?;
    assert_eq!(client.exists("/box").await?, None, "container deleted with its last child");
    wait_for("the TTL znode to be reaped", Duration::from_secs(30), || async {
        matches!(client.exists("/ttl").await, Ok(None))
    })
    .await?;

    let bad = client.create("/c2", b"".to_vec(), CreateOptions::container().sequential()).await;
    assert_eq!(bad.expect_err("refused").code(), Some(ErrorCode::InvalidArgument));
    Ok(())
}
