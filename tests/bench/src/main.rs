// A command-line tool: its report goes to stdout.
#![allow(clippy::print_stdout)]

//! `cairn-bench`: Cairn's load generator, and the side-by-side benchmark against ZooKeeper and
//! etcd.
//!
//! - `cairn-bench compare` starts each system on loopback (one node, then three), runs the same
//!   workloads against each ([`load`]), and writes `latest.json`, `latest.md` and (with the
//!   `rivals` feature, which brings the ZooKeeper and etcd clients) `latest.png` ([`report`]).
//!   `tests/bench/run` installs what it needs and runs it.
//! - `cairn-bench run` loads a Cairn node or cluster that is already running.
//! - `cairn-bench idle-sessions` opens idle sessions and measures the node's memory.
//! - `cairn-bench failover` kills a three-node cluster's leader again and again and times how
//!   long until a write commits ([`failover`]); `compare` runs it too.
//! - `cairn-bench scale` grows one node's tree to 10k, 100k and 1M znodes, Cairn's and (with
//!   `rivals`) ZooKeeper's, and measures memory, snapshots and restarts at each size
//!   ([`scale`]); then, on a fresh node of each, a fair lock with up to 10,000 waiters and
//!   100,000 watches ([`crowd`]). It writes `scale.json`, `scale.md` and (with `rivals`)
//!   `scale.png`.

mod cairn;
#[cfg(feature = "rivals")]
mod chart;
mod crowd;
#[cfg(feature = "rivals")]
mod etcd;
mod failover;
mod idle;
mod load;
mod report;
mod scale;
#[cfg(feature = "rivals")]
mod zookeeper;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};

use crate::cairn::Cairn;
use crate::load::{System, Timing, Workload};
use crate::report::Record;

#[derive(Debug, Parser)]
#[command(about = "Load Cairn, and compare it with ZooKeeper and etcd")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start each system, run every workload against each, write the results.
    Compare(CompareArgs),
    /// Run one workload against a running Cairn node or cluster; print one JSON record.
    Run(RunArgs),
    /// Open idle sessions against a running node and report its memory per session.
    IdleSessions(IdleArgs),
    /// Start three nodes, kill the leader (SIGKILL) again and again, and time each failover.
    Failover(FailoverArgs),
    /// Grow one node's tree size after size (memory, snapshot and restart at each); then time a
    /// fair lock's hand-offs behind long queues, and fan out events to many watches.
    Scale(ScaleArgs),
    /// Write the table and chart again from the results a comparison left in DIR.
    Render {
        #[arg(default_value = "tests/bench/results")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SystemName {
    Cairn,
    /// Cairn through its ZooKeeper front end, driven by the client that drives ZooKeeper.
    CairnZk,
    Zookeeper,
    Etcd,
}

#[derive(Debug, clap::Args)]
struct TimingArgs {
    /// Seconds measured in each repetition, after the warm-up.
    #[arg(long, default_value_t = 1.5)]
    seconds: f64,
    #[arg(long, default_value_t = 0.3)]
    warmup_seconds: f64,
}

impl TimingArgs {
    fn timing(&self) -> anyhow::Result<Timing> {
        Ok(Timing {
            warmup: Duration::try_from_secs_f64(self.warmup_seconds)?,
            measure: Duration::try_from_secs_f64(self.seconds)?,
        })
    }
}

/// What the systems are started from and where they keep their data.
#[derive(Debug, clap::Args)]
struct StartArgs {
    /// The `cairn` binary (default: next to this one).
    #[arg(long)]
    cairn_bin: Option<PathBuf>,
    /// Where the systems keep their data while they run (a fresh directory is made inside).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
}

impl StartArgs {
    /// The `cairn` binary to start: the one given, or the one next to this program.
    fn cairn_binary(&self) -> anyhow::Result<PathBuf> {
        let binary = match &self.cairn_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("cairn"),
        };
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: build it with cargo build --release",
            binary.display()
        );
        Ok(binary)
    }

    /// A fresh directory for the systems' data, removed when dropped.
    fn work_dir(&self) -> anyhow::Result<tempfile::TempDir> {
        Ok(tempfile::Builder::new().prefix("cairn-bench-").tempdir_in(&self.work_dir)?)
    }
}

#[derive(Debug, clap::Args)]
struct CompareArgs {
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cairn,cairn-zk,zookeeper,etcd"
    )]
    systems: Vec<SystemName>,
    /// Cluster sizes, each system started afresh for each.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    nodes: Vec<usize>,
    /// Repetitions of every workload; the report gives their median and spread.
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    #[command(flatten)]
    timing: TimingArgs,
    /// Idle sessions opened against one Cairn node to measure memory per session (0: skip).
    #[arg(long, default_value_t = 10_000)]
    idle_sessions: usize,
    /// Leader kills timed on three Cairn nodes (0: skip).
    #[arg(long, default_value_t = 10)]
    failover_runs: usize,
    #[command(flatten)]
    start: StartArgs,
    /// Where latest.json, latest.md and latest.png go.
    #[arg(long, default_value = "tests/bench/results")]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long, env = "CAIRN_SERVER", default_value = "127.0.0.1:7181")]
    server: String,
    #[arg(long, env = "CAIRN_CA", default_value = "cairn-data/tls/ca.pem")]
    ca: PathBuf,
    #[arg(long, value_enum, default_value = "write")]
    workload: Workload,
    /// Concurrent clients, each with its own connection and session.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 1)]
    repetitions: usize,
    #[command(flatten)]
    timing: TimingArgs,
}

#[derive(Debug, clap::Args)]
struct IdleArgs {
    #[arg(long, env = "CAIRN_SERVER", default_value = "127.0.0.1:7181")]
    server: String,
    #[arg(long, env = "CAIRN_CA", default_value = "cairn-data/tls/ca.pem")]
    ca: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// The node's process id, to read its memory and CPU from /proc.
    #[arg(long)]
    server_pid: u32,
    #[command(flatten)]
    timing: TimingArgs,
}

#[derive(Debug, clap::Args)]
struct FailoverArgs {
    #[arg(long, default_value_t = 10)]
    runs: usize,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(Debug, clap::Args)]
struct ScaleArgs {
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cairn,zookeeper")]
    systems: Vec<SystemName>,
    /// Tree sizes in znodes, grown one after the other.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<usize>,
    /// Queue lengths behind one fair lock, each timed on the same fresh node (none: skip).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    waiters: Vec<usize>,
    /// Sessions that each watch every one of `--watched-znodes` znodes (0: skip).
    #[arg(long, default_value_t = 1_000)]
    watch_sessions: usize,
    #[arg(long, default_value_t = 100)]
    watched_znodes: usize,
    #[command(flatten)]
    start: StartArgs,
    /// Where scale.json, scale.md and scale.png go.
    #[arg(long, default_value = "tests/bench/results")]
    out: PathBuf,
}

/// The workloads every system runs, with their client counts.
const COMPARED: [(Workload, usize); 7] = [
    (Workload::ContendedLock, 1),
    (Workload::ContendedLock, 8),
    (Workload::ContendedLock, 32),
    (Workload::UncontendedLock, 32),
    (Workload::Write, 32),
    (Workload::Read, 32),
    (Workload::LinearizableRead, 32),
];

/// Cairn's own: what a recipe call costs next to a plain write.
const CAIRN_ONLY: [(Workload, usize); 2] =
    [(Workload::RecipeInvoke, 1), (Workload::RecipeInvoke, 32)];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Compare(args) => compare(args).await,
        Command::Run(args) => {
            let cairn = Cairn::attach(&args.server, &args.ca).await?;
            let record = repeat(
                &cairn,
                args.workload,
                args.clients,
                args.repetitions,
                &args.timing.timing()?,
            )
            .await?;
            println!("{}", serde_json::to_string(&record)?);
            Ok(())
        }
        Command::Render { dir } => {
            let (records, setting) = report::read(&dir)?;
            report::write(&dir, &records, &setting)?;
            #[cfg(feature = "rivals")]
            chart::write(&dir.join("latest.png"), &records)?;
            Ok(())
        }
        Command::Failover(args) => {
            let (binary, work) = (args.start.cairn_binary()?, args.start.work_dir()?);
            let record = failover::measure(&binary, work.path(), args.runs).await?;
            println!("{}", serde_json::to_string(&record)?);
            Ok(())
        }
        Command::Scale(args) => scale_curve(args).await,
        Command::IdleSessions(args) => {
            let record = idle::measure(
                &args.server,
                &cairn_tests::admin_beside(&args.ca),
                args.server_pid,
                args.sessions,
                args.timing.timing()?,
            )
            .await?;
            println!("{}", serde_json::to_string(&record)?);
            Ok(())
        }
    }
}

/// Runs `workload` `repetitions` times; one record of their median and spread.
async fn repeat<S: System>(
    system: &S,
    workload: Workload,
    clients: usize,
    repetitions: usize,
    timing: &Timing,
) -> anyhow::Result<Record> {
    let mut samples = Vec::with_capacity(repetitions);
    for repetition in 0..repetitions {
        let run = format!("{}-{clients}-r{repetition}-{}", workload.name(), std::process::id());
        let sample = load::measure(system, workload, clients, *timing, &run)
            .await
            .with_context(|| format!("{} {} ×{clients}", system.name(), workload.name()))?;
        eprintln!(
            "  {:9} {} node(s) {:17} ×{clients:<2} {:>8.0} ops/s  p50 {:>6} µs  p99 {:>6} µs",
            system.name(),
            system.nodes(),
            workload.name(),
            sample.ops_per_sec,
            sample.p50_us,
            sample.p99_us
        );
        samples.push(sample);
    }
    Ok(Record::from_samples(system.name(), system.nodes(), &workload.name(), clients, &samples))
}

async fn repeat_all<S: System>(
    system: &S,
    matrix: &[(Workload, usize)],
    args: &CompareArgs,
    records: &mut Vec<Record>,
) -> anyhow::Result<()> {
    for (workload, clients) in matrix {
        records.push(
            repeat(system, *workload, *clients, args.repetitions, &args.timing.timing()?).await?,
        );
    }
    Ok(())
}

async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let cairn_bin = args.start.cairn_binary()?;
    #[cfg(not(feature = "rivals"))]
    if args.systems.iter().any(|s| *s != SystemName::Cairn) {
        bail!(
            "ZooKeeper and etcd need cairn-bench built with --features rivals (tests/bench/run does)"
        );
    }
    idle::raise_open_files_limit()?;
    let work = args.start.work_dir()?;
    let started = std::time::Instant::now();
    let mut records = Vec::new();
    for &nodes in &args.nodes {
        for system in &args.systems {
            let dir = work.path().join(format!("{system:?}-{nodes}").to_lowercase());
            std::fs::create_dir_all(&dir)?;
            eprintln!("{system:?}, {nodes} node(s): starting");
            match system {
                SystemName::Cairn => {
                    let cairn = Cairn::start(&cairn_bin, &dir, nodes).await?;
                    repeat_all(&cairn, &COMPARED, &args, &mut records).await?;
                    if nodes == 1 {
                        repeat_all(&cairn, &CAIRN_ONLY, &args, &mut records).await?;
                    }
                    if nodes == 1 && args.idle_sessions > 0 {
                        let (server, admin, pid) = cairn.single_node().context("one node")?;
                        let mut record = idle::measure(
                            &server,
                            &admin,
                            pid,
                            args.idle_sessions,
                            args.timing.timing()?,
                        )
                        .await?;
                        record.nodes = 1;
                        records.push(record);
                    }
                    if nodes == 3 && args.failover_runs > 0 {
                        // On a cluster of its own: the runs kill and restart its nodes.
                        drop(cairn);
                        let dir = dir.join("failover");
                        records
                            .push(failover::measure(&cairn_bin, &dir, args.failover_runs).await?);
                    }
                }
                #[cfg(feature = "rivals")]
                SystemName::CairnZk => {
                    let cairn = Cairn::start(&cairn_bin, &dir, nodes).await?;
                    let servers = cairn.zookeeper_front_end().await?;
                    let zk = zookeeper::ZooKeeper::cairn(servers).await?;
                    repeat_all(&zk, &COMPARED, &args, &mut records).await?;
                }
                #[cfg(feature = "rivals")]
                SystemName::Zookeeper => {
                    let zk = zookeeper::ZooKeeper::start(&dir, nodes).await?;
                    repeat_all(&zk, &COMPARED, &args, &mut records).await?;
                }
                #[cfg(feature = "rivals")]
                SystemName::Etcd => {
                    let etcd = etcd::Etcd::start(&dir, nodes).await?;
                    repeat_all(&etcd, &COMPARED, &args, &mut records).await?;
                }
                #[cfg(not(feature = "rivals"))]
                _ => bail!("built without the rivals feature"),
            }
        }
    }
    let setting = report::Setting {
        machine: machine(),
        versions: versions(&args.systems),
        timing: format!(
            "{} repetitions of {} s measured after {} s of warm-up; every system fsyncs before it acknowledges a write",
            args.repetitions, args.timing.seconds, args.timing.warmup_seconds
        ),
        command: "bash tests/bench/run".to_string(),
    };
    report::write(&args.out, &records, &setting)?;
    #[cfg(feature = "rivals")]
    chart::write(&args.out.join("latest.png"), &records)?;
    eprintln!(
        "done in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        args.out.join("latest.md").display()
    );
    Ok(())
}

async fn scale_curve(args: ScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.sizes.windows(2).all(|pair| pair[0] < pair[1])
            && args.sizes.first().is_none_or(|&first| first > 0),
        "sizes grow the tree: each must be larger than the one before"
    );
    idle::raise_open_files_limit()?;
    let work = args.start.work_dir()?;
    let mut records = Vec::new();
    for system in &args.systems {
        let dir = work.path().join(format!("scale-{system:?}").to_lowercase());
        std::fs::create_dir_all(&dir)?;
        eprintln!("{system:?}: growing to {:?} znodes", args.sizes);
        match system {
            SystemName::Cairn => {
                let binary = args.start.cairn_binary()?;
                records.extend(scale::cairn(&binary, &dir, &args.sizes).await?);
            }
            #[cfg(feature = "rivals")]
            SystemName::Zookeeper => records.extend(scale::zookeeper(&dir, &args.sizes).await?),
            other => bail!("no scale curve for {other:?}"),
        }
    }
    for system in &args.systems {
        let dir = work.path().join(format!("crowd-{system:?}").to_lowercase());
        std::fs::create_dir_all(&dir)?;
        eprintln!("{system:?}: lock waiters {:?}, watches", args.waiters);
        match system {
            SystemName::Cairn => {
                let mut cairn = Cairn::start(&args.start.cairn_binary()?, &dir, 1).await?;
                cairn.set_session_timeout(crowd::SESSION_TIMEOUT);
                let (_, _, pid) = cairn.single_node().context("one node")?;
                crowds(&cairn, pid, &args, &mut records).await?;
            }
            #[cfg(feature = "rivals")]
            SystemName::Zookeeper => {
                let mut zk = zookeeper::ZooKeeper::start(&dir, 1).await?;
                zk.set_session_timeout(crowd::SESSION_TIMEOUT);
                let pid = zk.processes().and_then(|p| p.pid(0)).context("no server")?;
                crowds(&zk, pid, &args, &mut records).await?;
            }
            other => bail!("no crowd rows for {other:?}"),
        }
    }
    report::write_scale(&args.out, &records, &machine())?;
    #[cfg(feature = "rivals")]
    chart::write_scale(&args.out.join("scale.png"), &records)?;
    eprintln!("scale curve: {}", args.out.join("scale.md").display());
    Ok(())
}

/// The crowd rows on one node of `system` (process `pid`): the watches, then each queue of
/// `--waiters`.
async fn crowds<S: System>(
    system: &S,
    pid: u32,
    args: &ScaleArgs,
    records: &mut Vec<Record>,
) -> anyhow::Result<()> {
    // The watches first, on the fresh node: memory freed by the queues' thousands of sessions
    // would hide what the watches take.
    if args.watch_sessions > 0 && args.watched_znodes > 0 {
        let watches = crowd::watches(system, pid, args.watch_sessions, args.watched_znodes).await?;
        records.push(watches);
    }
    for &waiters in &args.waiters {
        // A system that cannot serve a queue this long within the deadlines gets a row that
        // says so, and the curve goes on.
        match crowd::lock_waiters(system, waiters).await {
            Ok(record) => records.push(record),
            Err(error) => {
                eprintln!("  {} {waiters} waiters: {error:#}", system.name());
                records.push(crowd::failed(system.name(), "lock-waiters", waiters, &error));
            }
        }
    }
    Ok(())
}

/// The CPU, its cores, the memory and the kernel, from /proc.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| (kib + (1 << 19)) >> 20);
    let kernel = read("/proc/sys/kernel/osrelease");
    format!(
        "{model}, {cores} cores, {memory_gib} GiB, Linux {}; all processes on this one machine, over loopback",
        kernel.trim()
    )
}

/// The version of each system under test.
fn versions(systems: &[SystemName]) -> String {
    let output = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_default()
    };
    systems
        .iter()
        .map(|system| match system {
            SystemName::Cairn => format!("Cairn {}", env!("CARGO_PKG_VERSION")),
            SystemName::CairnZk => "Cairn through its ZooKeeper front end".to_string(),
            SystemName::Zookeeper => {
                format!(
                    "ZooKeeper {} (Debian)",
                    output("dpkg-query", &["-W", "-f", "${Version}", "zookeeper"])
                )
            }
            SystemName::Etcd => {
                let version = output("etcd", &["--version"]);
                format!("etcd {} (Debian)", version.trim_start_matches("etcd Version:").trim())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
