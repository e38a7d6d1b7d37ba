//! The scale curve: how one node behaves as its tree grows to each size asked for (10k, 100k
//! and 1M znodes of 100 bytes by default), Cairn and ZooKeeper alike.
//!
//! The tree is grown in place, size after size: leaf `i` is `scale/a{i / 10000}/b{i / 100}/n{i}`
//! under the run's root, so every leaf sits at depth five, under interior znodes of a hundred
//! children each. At each size the node's resident memory is read from /proc; a snapshot is
//! taken while eight writers overwrite leaves, and their p99 is what the snapshot costs them;
//! then the node is killed (SIGKILL) and started again, and the restart is timed until a read
//! of the last leaf answers.
//!
//! Cairn builds its snapshot on demand (`POST /api/snapshot` on its admin listener), and only
//! then, and reports its size and build time. ZooKeeper 3.8 builds one only on its own: it runs here with
//! `snapCount=10000`, so a snapshot is under way through most of a five-second write window; its
//! size is the newest `snapshot.*` file's and its build time what `mntr` reports as the longest
//! after the restart (loading its data, the server takes a snapshot of the whole tree).

use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cairn::Cairn;
use crate::load::{self, Session, System, VALUE_SIZE};
use crate::report::Record;

/// Children of every interior znode.
const FANOUT: usize = 100;
/// Cairn's settings here: snapshots only when asked for, so the one measured is the only one
/// under way.
const CAIRN_SETTINGS: [&str; 2] = ["--snapshot-every-entries", "100000000"];
/// Clients that grow the tree.
const GROWERS: usize = 32;
/// Clients that write while a snapshot is built.
const WRITERS: usize = 8;
#[cfg(feature = "rivals")]
/// How long ZooKeeper's writers run: a snapshot of its own is under way through most of it.
const ZOOKEEPER_WINDOW: Duration = Duration::from_secs(5);
#[cfg(feature = "rivals")]
/// ZooKeeper's settings here: fewer transactions between snapshots than its default 100,000,
/// and `mntr`, which tells how long its snapshots took.
const ZOOKEEPER_SETTINGS: [&str; 2] = ["snapCount=10000", "4lw.commands.whitelist=srvr,mntr"];
/// How long a restarted node may take to serve its tree again.
const RESTART_DEADLINE: Duration = Duration::from_secs(600);
/// How long growing the tree by one size step may take.
const GROW_DEADLINE: Duration = Duration::from_secs(1800);

fn leaf(i: usize) -> String {
    format!("scale/a{}/b{}/n{i}", i / (FANOUT * FANOUT), i / FANOUT)
}

/// Interior znodes numbered from 0 whose first leaf is at or past `from`, below `to` leaves.
fn new_interior(from: usize, to: usize, leaves_each: usize) -> Range<usize> {
    from.div_ceil(leaves_each)..to.div_ceil(leaves_each)
}

/// What one size step measured, before it becomes a record.
#[derive(Debug, Default)]
struct Step {
    znodes: usize,
    grow_secs: f64,
    rss_kib: u64,
    snapshot_bytes: u64,
    snapshot_build_ms: f64,
    write_p99_during_snapshot_us: u64,
    writes_during_snapshot: usize,
    restart_ms: u64,
}

impl Step {
    fn record(&self, system: &str, baseline_kib: u64) -> Record {
        let mut record = Record::from_samples(system, 1, "scale", self.znodes, &[]);
        record.p99_us = self.write_p99_during_snapshot_us;
        let per_znode = (self.rss_kib.saturating_sub(baseline_kib) * 1024) / self.znodes as u64;
        let extra = serde_json::json!({
            "znodes": self.znodes,
            "grow_secs": (self.grow_secs * 10.0).round() / 10.0,
            "rss_mib": self.rss_kib / 1024,
            "rss_bytes_per_znode": per_znode,
            "snapshot_bytes": self.snapshot_bytes,
            "snapshot_build_ms": self.snapshot_build_ms.round(),
            "write_p99_during_snapshot_ms": self.write_p99_during_snapshot_us as f64 / 1000.0,
            "writes_during_snapshot": self.writes_during_snapshot,
            "restart_ms": self.restart_ms,
        });
        if let serde_json::Value::Object(extra) = extra {
            record.extra = extra;
        }
        record
    }
}

/// Cairn's curve: one node of `binary` under `dir`, grown to each of `sizes`.
pub async fn cairn(binary: &Path, dir: &Path, sizes: &[usize]) -> anyhow::Result<Vec<Record>> {
    let mut cairn = Cairn::start_with(binary, dir, 1, &CAIRN_SETTINGS).await?;
    let admin = cairn.server().context("one node")?.admin();
    let token = {
        let server = cairn.server().context("one node")?;
        let client = cairn_client::Client::connect(&server.addr().to_string(), &admin).await?;
        let token = client.create_token("admin").await?;
        let _ = client.close().await;
        token
    };
    let pid = |cairn: &mut Cairn| cairn.server().and_then(|s| s.pid()).context("no node process");
    let baseline = rss_kib(pid(&mut cairn)?)?;
    let mut records = Vec::new();
    let mut grown = 0;
    for &size in sizes {
        let mut step = grow(&cairn, grown, size).await?;
        grown = size;
        step.rss_kib = rss_kib(pid(&mut cairn)?)?;
        let url = cairn.server().and_then(|s| s.admin_url().map(str::to_string));
        let url = url.context("no admin listener")?;
        let snapshot = take_snapshot(format!("{url}api/snapshot"), format!("Bearer {token}"));
        let ((bytes, build), p99, writes) = writes_during(&cairn, size, snapshot).await?;
        (step.snapshot_bytes, step.snapshot_build_ms) = (bytes, build.as_secs_f64() * 1000.0);
        (step.write_p99_during_snapshot_us, step.writes_during_snapshot) = (p99, writes);
        let began = Instant::now();
        let server = cairn.server().context("one node")?;
        tokio::task::block_in_place(|| server.restart())?;
        serving(&cairn, size).await?;
        step.restart_ms = began.elapsed().as_millis() as u64;
        eprintln!("  cairn {size} znodes: {step:?}");
        records.push(step.record("cairn", baseline));
    }
    Ok(records)
}

/// ZooKeeper's curve: one server under `dir`, grown to each of `sizes`.
#[cfg(feature = "rivals")]
pub async fn zookeeper(dir: &Path, sizes: &[usize]) -> anyhow::Result<Vec<Record>> {
    use crate::zookeeper::ZooKeeper;
    let mut zk = ZooKeeper::start_with(dir, 1, &ZOOKEEPER_SETTINGS).await?;
    let pid = |zk: &mut ZooKeeper| zk.processes().and_then(|p| p.pid(0)).context("no server");
    let server_dir = zk.processes().and_then(|p| p.dir(0)).context("no server")?.to_path_buf();
    let baseline = rss_kib(pid(&mut zk)?)?;
    let mut records = Vec::new();
    let mut grown = 0;
    for &size in sizes {
        let mut step = grow(&zk, grown, size).await?;
        grown = size;
        step.rss_kib = rss_kib(pid(&mut zk)?)?;
        let window = async {
            tokio::time::sleep(ZOOKEEPER_WINDOW).await;
            anyhow::Ok(())
        };
        let ((), p99, writes) = writes_during(&zk, size, window).await?;
        (step.write_p99_during_snapshot_us, step.writes_during_snapshot) = (p99, writes);
        let began = Instant::now();
        let servers = zk.processes().context("no server")?;
        tokio::task::block_in_place(|| servers.restart(0))?;
        serving(&zk, size).await?;
        step.restart_ms = began.elapsed().as_millis() as u64;
        // Loading its data, the server took a snapshot of the whole tree.
        let server = *zk.processes().context("no server")?.servers().first().context("none")?;
        (step.snapshot_bytes, step.snapshot_build_ms) = zookeeper_snapshot(&server_dir, server)?;
        eprintln!("  zookeeper {size} znodes: {step:?}");
        records.push(step.record("zookeeper", baseline));
    }
    Ok(records)
}

/// The newest snapshot file's size, and the longest snapshot build `mntr` reports (ms).
#[cfg(feature = "rivals")]
fn zookeeper_snapshot(
    server_dir: &Path,
    server: std::net::SocketAddr,
) -> anyhow::Result<(u64, f64)> {
    let mut newest: Option<(std::time::SystemTime, u64)> = None;
    for entry in std::fs::read_dir(server_dir.join("data/version-2"))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("snapshot.") {
            let meta = entry.metadata()?;
            let stamp = (meta.modified()?, meta.len());
            newest = Some(newest.map_or(stamp, |old| old.max(stamp)));
        }
    }
    let bytes = newest.map(|(_, len)| len).context("ZooKeeper wrote no snapshot")?;
    let mntr = cairn_tests::zookeeper::four_letter_word(server, "mntr")?;
    let ms = mntr
        .lines()
        .find_map(|line| line.strip_prefix("zk_max_snapshottime"))
        .and_then(|rest| rest.trim().parse::<f64>().ok())
        .with_context(|| format!("no zk_max_snapshottime in mntr: {mntr}"))?;
    Ok((bytes, ms))
}

/// Grows the tree from `from` leaves to `to`, interior znodes first.
async fn grow<S: System>(system: &S, from: usize, to: usize) -> anyhow::Result<Step> {
    let began = Instant::now();
    let sessions = load::connect_all(system, GROWERS).await?;
    let growing = async {
        if from == 0 {
            sessions[0].create("scale", Vec::new()).await.context("creating scale")?;
        }
        let a_nodes = new_interior(from, to, FANOUT * FANOUT);
        create_each(&sessions, a_nodes, |k| format!("scale/a{k}"), &[]).await?;
        let b_nodes = new_interior(from, to, FANOUT);
        let b_node = |j: usize| format!("scale/a{}/b{j}", j / FANOUT);
        create_each(&sessions, b_nodes, b_node, &[]).await?;
        create_each(&sessions, from..to, leaf, &[b'z'; VALUE_SIZE]).await
    };
    let grown = tokio::time::timeout(GROW_DEADLINE, growing).await;
    for session in sessions {
        session.close().await;
    }
    grown.with_context(|| format!("growing to {to} znodes took over {GROW_DEADLINE:?}"))??;
    Ok(Step { znodes: to, grow_secs: began.elapsed().as_secs_f64(), ..Step::default() })
}

/// Creates the znode `key(i)` holding `value` for every `i` in `range`, each session taking the
/// next one when it is free.
async fn create_each<S: Session>(
    sessions: &[S],
    range: Range<usize>,
    key: impl Fn(usize) -> String,
    value: &[u8],
) -> anyhow::Result<()> {
    let next = AtomicUsize::new(range.start);
    let workers = sessions.iter().map(|session| {
        let (next, key) = (&next, &key);
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= range.end {
                    return anyhow::Ok(());
                }
                let key = key(i);
                session.create(&key, value.to_vec()).await.with_context(|| key)?;
            }
        }
    });
    futures::future::try_join_all(workers).await.map(|_| ())
}

/// Runs `window` while [`WRITERS`] clients overwrite leaves of a tree of `size`; returns what
/// it returned, and the p99 (µs) and number of the writes made meanwhile.
async fn writes_during<S: System, T>(
    system: &S,
    size: usize,
    window: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, u64, usize)> {
    let sessions = load::connect_all(system, WRITERS).await?;
    let done = AtomicBool::new(false);
    let latencies_us = Mutex::new(Vec::new());
    let writers = sessions.iter().enumerate().map(|(n, session)| {
        let (done, latencies_us) = (&done, &latencies_us);
        async move {
            // Strides through the leaves, each writer from its own start.
            let mut i = n * size / WRITERS;
            while !done.load(Ordering::Relaxed) {
                let began = Instant::now();
                session.write(&leaf(i % size), vec![b'w'; VALUE_SIZE]).await?;
                let took = began.elapsed().as_micros() as u64;
                latencies_us.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(took);
                i += 7_919;
            }
            anyhow::Ok(())
        }
    });
    let windowed = async {
        let outcome = window.await;
        done.store(true, Ordering::Relaxed);
        outcome
    };
    let (outcome, written) = tokio::join!(windowed, futures::future::try_join_all(writers));
    for session in sessions {
        session.close().await;
    }
    written?;
    let outcome = outcome?;
    let mut latencies_us =
        latencies_us.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    latencies_us.sort_unstable();
    Ok((outcome, load::percentile(&latencies_us, 0.99), latencies_us.len()))
}

/// Asks Cairn's admin listener for a snapshot; its size and build time.
async fn take_snapshot(url: String, bearer: String) -> anyhow::Result<(u64, Duration)> {
    let headers = [("X-Cairn-Console", "1"), ("Authorization", bearer.as_str())];
    let answer = cairn_tests::http::post_json(&url, &headers, "{}").await?;
    anyhow::ensure!(answer.status == 200, "snapshot refused: {} {}", answer.status, answer.body);
    let taken: serde_json::Value = serde_json::from_str(&answer.body)?;
    let bytes = taken["bytes"].as_u64().context("no bytes")?;
    let seconds = taken["seconds"].as_f64().context("no seconds")?;
    Ok((bytes, Duration::try_from_secs_f64(seconds)?))
}

/// Waits until a client reads the last leaf of a tree of `size` again.
async fn serving<S: System>(system: &S, size: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + RESTART_DEADLINE;
    loop {
        let attempt = async {
            let session = system.connect(0).await?;
            let read = session.read(&leaf(size - 1), false).await;
            session.close().await;
            read
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(())) => return Ok(()),
            _ if Instant::now() > deadline => {
                anyhow::bail!("{} did not serve within {RESTART_DEADLINE:?}", system.name())
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A process's resident memory, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    crate::idle::process_usage(pid).map(|(rss, _)| rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_sit_under_interior_znodes_of_a_hundred() {
        assert_eq!(leaf(0), "scale/a0/b0/n0");
        assert_eq!(leaf(12_345), "scale/a1/b123/n12345");
        assert_eq!(leaf(999_999), "scale/a99/b9999/n999999");
    }

    #[test]
    fn each_step_creates_only_the_interior_znodes_it_adds() {
        assert_eq!(new_interior(0, 10_000, FANOUT), 0..100);
        assert_eq!(new_interior(10_000, 100_000, FANOUT), 100..1_000);
        assert_eq!(new_interior(0, 10_000, FANOUT * FANOUT), 0..1);
        assert_eq!(new_interior(10_000, 100_000, FANOUT * FANOUT), 1..10);
        // A size that is not a multiple: the partly filled parent is not made twice.
        assert_eq!(new_interior(0, 150, FANOUT), 0..2);
        assert_eq!(new_interior(150, 300, FANOUT), 2..3);
    }
}
