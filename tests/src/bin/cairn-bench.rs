// A command-line tool: its report goes to stdout.
#![allow(clippy::print_stdout)]

//! `cairn-bench`: a load generator for a running Cairn node.
//!
//! Each client is its own connection and runs one request at a time in a closed loop, as an
//! application thread would; the figures are throughput and latency percentiles over the
//! measured window, after a warm-up.

use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_client::{Client, CreateOptions};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Each client sets its own znode with 100-byte values.
    Write,
    /// Each client reads its own znode, linearizably.
    Read,
    /// Each client takes and releases a fair lock of its own: one recipe call per operation
    /// (the release is measured as the next operation).
    Lock,
    /// Every client loops acquire → check it is alone → release on one fair lock; an operation
    /// is a hand-off, its latency the acquire's (waiting included).
    ContendedLock,
    /// Each client loops acquire → release on a lock of its own; the latency is the acquire's.
    UncontendedLock,
    /// Open `--clients` sessions that do nothing but ping; report the node's memory per session
    /// and its CPU while they idle (needs `--server-pid`).
    IdleSessions,
}

/// Load a Cairn node and report operations per second and latency.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long, env = "CAIRN_SERVER", default_value = "127.0.0.1:7181")]
    server: String,
    #[arg(long, env = "CAIRN_CA", default_value = "cairn-data/tls/ca.pem")]
    ca: String,
    #[arg(long, value_enum, default_value = "write")]
    workload: Workload,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    /// Process id of the node, to read its memory and CPU from /proc (idle-sessions).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Session timeout of each client, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
}

/// Resident memory (KiB) and CPU time used so far (seconds) of a process, from /proc.
fn process_usage(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').context("bad stat")?.1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((rss_kib, ticks as f64 / per_second))
}

/// Opens `count` idle sessions and measures the node while they ping.
async fn idle_sessions(args: &Args) -> anyhow::Result<()> {
    let pid = args.server_pid.context("idle-sessions needs --server-pid")?;
    let timeout = Duration::from_millis(args.session_timeout_ms);
    let (rss_before, _) = process_usage(pid)?;
    let mut clients = Vec::with_capacity(args.clients);
    let opening = Instant::now();
    for chunk in (0..args.clients).collect::<Vec<_>>().chunks(64) {
        let mut connecting = Vec::new();
        for _ in chunk {
            let (server, ca) = (args.server.clone(), args.ca.clone());
            connecting.push(tokio::spawn(async move {
                Client::connect_with_timeout(&server, &ca, timeout).await
            }));
        }
        for task in connecting {
            clients.push(task.await??);
        }
    }
    let opened_in = opening.elapsed();
    // Let the opening burst settle before measuring the idle cost.
    tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;
    let (rss_after, cpu_before) = process_usage(pid)?;
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (_, cpu_after) = process_usage(pid)?;
    let report = serde_json::json!({
        "system": "cairn",
        "workload": "idle-sessions",
        "sessions": clients.len(),
        "open_sessions_per_sec": (clients.len() as f64 / opened_in.as_secs_f64()).round(),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "bytes_per_session": ((rss_after.saturating_sub(rss_before)) * 1024) / clients.len().max(1) as u64,
        "pings_per_sec": (clients.len() as f64 * 4.0 / timeout.as_secs_f64()).round(),
        "node_cpu_percent_idle": ((cpu_after - cpu_before) / args.seconds as f64 * 100.0 * 10.0).round() / 10.0,
    });
    println!("{report}");
    for client in &clients {
        let _ = client.close().await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Workload::IdleSessions = args.workload {
        return idle_sessions(&args).await;
    }
    let setup = Client::connect(&args.server, &args.ca).await.context("connecting")?;
    let root = format!("/bench-{}", std::process::id());
    setup.create(&root, Vec::new(), CreateOptions::persistent()).await?;
    let before = setup.server_info().await?;

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup_seconds);
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    // Clients holding the contended lock right now, as they see it: never more than one.
    let holding = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for n in 0..args.clients {
        let client = Client::connect(&args.server, &args.ca).await?;
        let path = format!("{root}/c{n}");
        client.create(&path, vec![b'x'; 100], CreateOptions::persistent()).await?;
        let workload = args.workload;
        let holding = holding.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            let value = vec![b'y'; 100];
            let lock_args = format!(r#"{{"lock":"c{n}"}}"#).into_bytes();
            let root_lock = format!("bench-{}", std::process::id());
            let mut held = false;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                match workload {
                    Workload::Write => drop(client.set(&path, value.clone(), None).await?),
                    Workload::Read => drop(client.get(&path).await?),
                    Workload::Lock => {
                        let op = if held { "release" } else { "acquire" };
                        client.invoke("fair-lock", None, op, lock_args.clone()).await?;
                        held = !held;
                    }
                    Workload::ContendedLock | Workload::UncontendedLock => {
                        let name = if workload == Workload::ContendedLock {
                            root_lock.clone()
                        } else {
                            format!("{root_lock}-{n}")
                        };
                        let guard = client.lock(&name).acquire().await?;
                        let acquired = began.elapsed();
                        if workload == Workload::ContendedLock {
                            use std::sync::atomic::Ordering;
                            let others = holding.fetch_add(1, Ordering::SeqCst);
                            anyhow::ensure!(others == 0, "{others} other holders of {name}");
                            holding.fetch_sub(1, Ordering::SeqCst);
                        }
                        guard.release().await?;
                        if began >= measure_from {
                            latencies_us.push(acquired.as_micros() as u64);
                        }
                        continue;
                    }
                    Workload::IdleSessions => unreachable!("measured apart"),
                }
                if began >= measure_from {
                    latencies_us.push(began.elapsed().as_micros() as u64);
                }
            }
            anyhow::Ok(latencies_us)
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await??);
    }
    let after = setup.server_info().await?;
    latencies_us.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies_us.len() as f64 - 1.0) * p).round() as usize;
        latencies_us.get(index).copied().unwrap_or(0)
    };
    let ops = latencies_us.len() as f64;
    let entries = after.log_entries_written - before.log_entries_written;
    let fsyncs = after.log_fsyncs - before.log_fsyncs;
    let report = serde_json::json!({
        "system": "cairn",
        "nodes": after.members.len().max(1),
        "workload": args.workload.to_possible_value().map(|v| v.get_name().to_string()),
        "clients": args.clients,
        "ops_per_sec": (ops / args.seconds as f64).round(),
        "p50_us": percentile(0.50),
        "p99_us": percentile(0.99),
        "log_entries": entries,
        "log_fsyncs": fsyncs,
    });
    println!("{report}");
    Ok(())
}
