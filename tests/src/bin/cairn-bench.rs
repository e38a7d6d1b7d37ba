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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Workload {
    /// Each client sets its own znode with 100-byte values.
    Write,
    /// Each client reads its own znode, linearizably.
    Read,
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let setup = Client::connect(&args.server, &args.ca).await.context("connecting")?;
    let root = format!("/bench-{}", std::process::id());
    setup.create(&root, Vec::new(), CreateOptions::persistent()).await?;
    let before = setup.server_info().await?;

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup_seconds);
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for n in 0..args.clients {
        let client = Client::connect(&args.server, &args.ca).await?;
        let path = format!("{root}/c{n}");
        client.create(&path, vec![b'x'; 100], CreateOptions::persistent()).await?;
        let workload = args.workload;
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            let value = vec![b'y'; 100];
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                match workload {
                    Workload::Write => drop(client.set(&path, value.clone(), None).await?),
                    Workload::Read => drop(client.get(&path).await?),
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
        "workload": format!("{:?}", args.workload).to_lowercase(),
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
