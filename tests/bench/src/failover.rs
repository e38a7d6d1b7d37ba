//! Failover: how long a three-node cluster takes to commit a write again after its leader is
//! killed with SIGKILL.
//!
//! Each run finds the leader, kills it, and times until a client of a surviving node has a
//! write acknowledged; then it starts the killed node again and waits for every node to hold the
//! same state before the next run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_client::{Client, CreateOptions};
use cairn_tests::cluster::Cluster;

use crate::report::Record;

/// How long one run may take to find a leader, or to converge again after a restart.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a run may wait for a write to commit after the kill before it fails.
const COMMIT_DEADLINE: Duration = Duration::from_secs(30);
/// One write attempt's limit: an attempt that went to the dead leader is abandoned for a new
/// one (under a path of its own, so a late commit of the old one does not count).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(50);
/// Between attempts that failed at once (no leader yet).
const ATTEMPT_PAUSE: Duration = Duration::from_millis(2);

/// Where the runs write.
const ROOT: &str = "/failover";

/// Starts three nodes of `binary` under `dir` and measures `runs` failovers.
pub async fn measure(binary: &Path, dir: &Path, runs: usize) -> anyhow::Result<Record> {
    std::fs::create_dir_all(dir)?;
    let mut cluster = Cluster::start(binary, dir, 3, &[])?;
    let all: Vec<u64> = (1..=3).collect();
    let leader = cluster.leader(&all, SETTLE_DEADLINE).await?;
    let setup = cluster.client(leader).await?;
    setup.create(ROOT, Vec::new(), CreateOptions::persistent()).await?;
    let _ = setup.close().await;

    let mut times = Vec::with_capacity(runs);
    for run in 0..runs {
        let leader = cluster.leader(&all, SETTLE_DEADLINE).await?;
        let mut survivors = Vec::new();
        for id in all.iter().filter(|id| **id != leader) {
            survivors.push(cluster.client(*id).await?);
        }
        let killed_at = Instant::now();
        cluster.node(leader).kill()?;
        let writes = survivors.iter().enumerate().map(|(which, client)| {
            Box::pin(write_until_committed(client, format!("{ROOT}/run{run}-client{which}")))
        });
        let committed = tokio::time::timeout(COMMIT_DEADLINE, futures::future::select_ok(writes))
            .await
            .with_context(|| format!("run {run}: no write committed within {COMMIT_DEADLINE:?}"))?;
        committed.with_context(|| format!("run {run}"))?;
        let took = killed_at.elapsed();
        eprintln!("  failover run {run}: leader {leader} killed → write committed in {took:?}");
        times.push(took);
        for client in survivors {
            let _ = client.close().await;
        }
        cluster.node(leader).restart()?;
        cluster.wait_converged(SETTLE_DEADLINE).await?;
    }
    Ok(record(&times))
}

/// Writes through `client` until a write is acknowledged, each attempt under a path of its own;
/// the caller bounds it in time.
async fn write_until_committed(client: &Client, prefix: String) -> anyhow::Result<()> {
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let path = format!("{prefix}-{attempt}");
        let write = client.create(&path, Vec::new(), CreateOptions::persistent());
        match tokio::time::timeout(ATTEMPT_TIMEOUT, write).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(_)) => tokio::time::sleep(ATTEMPT_PAUSE).await,
            Err(_) => continue,
        }
    }
}

/// The runs' median and maximum, and every run, as a report record.
fn record(times: &[Duration]) -> Record {
    let millis: Vec<u64> = times.iter().map(|t| t.as_millis() as u64).collect();
    // Whole milliseconds, as the runs are.
    let median = crate::report::median(millis.iter().map(|ms| *ms as f64).collect()) as u64;
    let max = millis.iter().copied().max().unwrap_or(0);
    let mut record = Record::from_samples("cairn", 3, "failover", 2, &[]);
    record.extra.insert("median_ms".into(), median.into());
    record.extra.insert("max_ms".into(), max.into());
    record.extra.insert("runs_ms".into(), millis.into());
    record
}
