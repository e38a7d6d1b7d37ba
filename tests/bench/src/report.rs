//! What a comparison writes: the records as JSON (`latest.json`), a Markdown table
//! (`latest.md`) and, with the `rivals` feature, a chart (`latest.png`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::load::Sample;

/// The systems in the order every table and chart shows them: `cairn-zk` is Cairn driven
/// through its ZooKeeper front end by the client that drives ZooKeeper.
pub const SYSTEMS: [&str; 4] = ["cairn", "cairn-zk", "zookeeper", "etcd"];

/// One workload against one system: the median of its repetitions, and their spread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub system: String,
    pub nodes: usize,
    pub workload: String,
    pub clients: usize,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// The slowest and the fastest repetition's throughput.
    pub ops_per_sec_min: f64,
    pub ops_per_sec_max: f64,
    pub repetitions: usize,
    /// Whatever else the workload measured (idle sessions: memory per session).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    /// The median and spread of `samples`, one per repetition.
    pub fn from_samples(
        system: &str,
        nodes: usize,
        workload: &str,
        clients: usize,
        samples: &[Sample],
    ) -> Record {
        let ops: Vec<f64> = samples.iter().map(|s| s.ops_per_sec).collect();
        Record {
            system: system.to_string(),
            nodes,
            workload: workload.to_string(),
            clients,
            ops_per_sec: median(ops.clone()).round(),
            p50_us: median(samples.iter().map(|s| s.p50_us as f64).collect()) as u64,
            p99_us: median(samples.iter().map(|s| s.p99_us as f64).collect()) as u64,
            ops_per_sec_min: ops.iter().copied().reduce(f64::min).unwrap_or(0.0).round(),
            ops_per_sec_max: ops.iter().copied().fold(0.0, f64::max).round(),
            repetitions: samples.len(),
            extra: serde_json::Map::new(),
        }
    }
}

/// The median of `values`; 0 for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Where and how the records were measured, for the Markdown's heading.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setting {
    pub machine: String,
    pub versions: String,
    pub timing: String,
    pub command: String,
}

/// Writes `latest.json`, `setting.json` and `latest.md` into `dir`.
pub fn write(dir: &Path, records: &[Record], setting: &Setting) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("latest.json"), serde_json::to_string_pretty(records)? + "\n")?;
    std::fs::write(dir.join("setting.json"), serde_json::to_string_pretty(setting)? + "\n")?;
    std::fs::write(dir.join("latest.md"), markdown(records, setting))?;
    Ok(())
}

/// Reads back what [`write`] wrote: to render the table and chart again.
pub fn read(dir: &Path) -> anyhow::Result<(Vec<Record>, Setting)> {
    let records = serde_json::from_slice(&std::fs::read(dir.join("latest.json"))?)?;
    let setting = serde_json::from_slice(&std::fs::read(dir.join("setting.json"))?)?;
    Ok((records, setting))
}

fn display_name(system: &str) -> &str {
    match system {
        "cairn" => "Cairn",
        "cairn-zk" => "Cairn (ZooKeeper protocol)",
        "zookeeper" => "ZooKeeper",
        "etcd" => "etcd",
        other => other,
    }
}

/// `12,345`
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn millis(us: u64) -> String {
    if us < 10_000 {
        format!("{:.2}", us as f64 / 1000.0)
    } else {
        format!("{:.1}", us as f64 / 1000.0)
    }
}

/// The comparison table, one per cluster size, then Cairn's own figures.
pub fn markdown(records: &[Record], setting: &Setting) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Cairn, ZooKeeper and etcd, side by side\n");
    let _ = writeln!(out, "- Machine: {}", setting.machine);
    let _ = writeln!(out, "- Versions: {}", setting.versions);
    let _ = writeln!(out, "- Each figure: {}", setting.timing);
    let _ = writeln!(out, "- Command: `{}`\n", setting.command);
    let _ = writeln!(
        out,
        "Throughput is operations per second (lock workloads: acquire + release cycles, i.e. \
         hand-offs), the median of the repetitions with the slowest and fastest in brackets; \
         latencies are the medians of each repetition's p50 and p99 in milliseconds (lock \
         workloads: the acquire, waiting included).\n"
    );
    // Rows in the order the workloads ran, each with a record per system.
    type Row<'a> = ((usize, &'a str, usize), BTreeMap<&'a str, &'a Record>);
    let mut rows: Vec<Row> = Vec::new();
    for record in records.iter().filter(|r| !cairn_only(&r.workload)) {
        let key = (record.nodes, record.workload.as_str(), record.clients);
        match rows.iter_mut().find(|(k, _)| *k == key) {
            Some((_, by_system)) => drop(by_system.insert(record.system.as_str(), record)),
            None => rows.push((key, BTreeMap::from([(record.system.as_str(), record)]))),
        }
    }
    let systems: Vec<&str> =
        SYSTEMS.into_iter().filter(|s| records.iter().any(|r| r.system == *s)).collect();
    let mut sizes: Vec<usize> = rows.iter().map(|((nodes, _, _), _)| *nodes).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for nodes in sizes {
        let _ = writeln!(out, "## {nodes} node{}\n", if nodes == 1 { "" } else { "s" });
        let mut header = "| workload | clients |".to_string();
        let mut rule = "|---|---:|".to_string();
        for system in &systems {
            let _ = write!(header, " {} ops/s |", display_name(system));
            rule.push_str("---:|");
        }
        for system in systems.iter().filter(|s| !s.starts_with("cairn")) {
            let _ = write!(header, " Cairn ÷ {} |", display_name(system));
            rule.push_str("---:|");
        }
        let front_end = systems.contains(&"cairn-zk") && systems.contains(&"zookeeper");
        if front_end {
            header.push_str(" Cairn (ZooKeeper protocol) ÷ ZooKeeper |");
            rule.push_str("---:|");
        }
        for system in &systems {
            let _ = write!(header, " {} p50 / p99 ms |", display_name(system));
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for ((_, workload, clients), by_system) in rows.iter().filter(|((n, _, _), _)| *n == nodes)
        {
            let mut line = format!("| {workload} | {clients} |");
            for system in &systems {
                match by_system.get(system) {
                    Some(r) => {
                        let _ = write!(
                            line,
                            " {} ({}–{}) |",
                            thousands(r.ops_per_sec),
                            thousands(r.ops_per_sec_min),
                            thousands(r.ops_per_sec_max)
                        );
                    }
                    None => line.push_str(" – |"),
                }
            }
            let ratio = |line: &mut String, ours: &str, theirs: &str| match (
                by_system.get(ours),
                by_system.get(theirs),
            ) {
                (Some(ours), Some(theirs)) if theirs.ops_per_sec > 0.0 => {
                    let _ = write!(line, " {:.1}× |", ours.ops_per_sec / theirs.ops_per_sec);
                }
                _ => line.push_str(" – |"),
            };
            for system in systems.iter().filter(|s| !s.starts_with("cairn")) {
                ratio(&mut line, "cairn", system);
            }
            if front_end {
                ratio(&mut line, "cairn-zk", "zookeeper");
            }
            for system in &systems {
                match by_system.get(system) {
                    Some(r) => {
                        let _ = write!(line, " {} / {} |", millis(r.p50_us), millis(r.p99_us));
                    }
                    None => line.push_str(" – |"),
                }
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out);
    }
    let own: Vec<&Record> =
        records.iter().filter(|r| r.system == "cairn" && cairn_only(&r.workload)).collect();
    if !own.is_empty() {
        let _ = writeln!(out, "## Cairn only\n");
        let _ = writeln!(out, "| nodes | workload | clients | ops/s | p50 / p99 ms | other |");
        let _ = writeln!(out, "|---:|---|---:|---:|---:|---|");
        for r in own {
            let other: Vec<String> = r.extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let (ops, latency) = match r.repetitions {
                0 => ("–".to_string(), "–".to_string()),
                _ => (
                    thousands(r.ops_per_sec),
                    format!("{} / {}", millis(r.p50_us), millis(r.p99_us)),
                ),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {ops} | {latency} | {} |",
                r.nodes,
                r.workload,
                r.clients,
                other.join(", ")
            );
        }
        let _ = writeln!(out);
    }
    out
}

/// Workloads only Cairn runs.
pub fn cairn_only(workload: &str) -> bool {
    matches!(workload, "recipe-invoke" | "idle-sessions" | "failover")
}

/// Writes the scale curve's records as `scale.json` and its table as `scale.md` into `dir`.
pub fn write_scale(dir: &Path, records: &[Record], machine: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("scale.json"), serde_json::to_string_pretty(records)? + "\n")?;
    std::fs::write(dir.join("scale.md"), scale_markdown(records, machine))?;
    Ok(())
}

/// The scale curve's table: one row per system and tree size.
pub fn scale_markdown(records: &[Record], machine: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Cairn and ZooKeeper as the tree grows\n");
    let _ = writeln!(out, "- Machine: {machine}");
    let _ = writeln!(out, "- Command: `bash tests/bench/run` (`cairn-bench scale`)\n");
    let _ = writeln!(
        out,
        "One node of each, its tree grown to each size (znodes of 100 bytes at depth five, a \
         hundred children to each interior znode). Memory is the node's resident set after \
         growing, per znode above the empty node's. The write p99 is eight clients' \
         overwrites while a snapshot is built (ZooKeeper: five seconds with a snapshot every \
         10,000 transactions). Restart: SIGKILL, start again, until a read of the last znode \
         answers.\n"
    );
    let _ = writeln!(out, "![the scale curve](scale.png)\n");
    let _ = writeln!(
        out,
        "| system | znodes | RSS MiB | bytes per znode | snapshot MB | snapshot build ms | write p99 during snapshot ms (writes) | restart ms | grown in s |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let field = |r: &Record, name: &str| {
        r.extra.get(name).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
    };
    for r in records.iter().filter(|r| r.workload == "scale") {
        let field = |name: &str| field(r, name);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {} | {} ({}) | {} | {:.1} |",
            display_name(&r.system),
            thousands(field("znodes")),
            thousands(field("rss_mib")),
            thousands(field("rss_bytes_per_znode")),
            field("snapshot_bytes") / 1e6,
            thousands(field("snapshot_build_ms")),
            millis(r.p99_us),
            thousands(field("writes_during_snapshot")),
            thousands(field("restart_ms")),
            field("grow_secs"),
        );
    }
    let waiters: Vec<&Record> = records.iter().filter(|r| r.workload == "lock-waiters").collect();
    if !waiters.is_empty() {
        let _ = writeln!(out, "\n## A fair lock with a long queue\n");
        let _ = writeln!(
            out,
            "One session holds the lock while the others queue behind it; then each, granted, \
             releases at once. Hand-off: the mean time between grants over the first 500 of a \
             queue (a shorter queue is filled and served again until 500 are timed), with the \
             median and p99. ZooKeeper runs Curator's lock (each waiter watches the one before \
             it).\n"
        );
        let _ = writeln!(
            out,
            "| system | waiters | hand-off µs | p50 µs | p99 µs | hand-offs timed (rounds) | queued in s |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for r in waiters {
            if let Some(error) = r.extra.get("error").and_then(serde_json::Value::as_str) {
                let (system, count) = (display_name(&r.system), thousands(r.clients as f64));
                let _ = writeln!(out, "| {system} | {count} | did not finish: {error} | | | | |");
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} ({}) | {:.1} |",
                display_name(&r.system),
                thousands(r.clients as f64),
                thousands(field(r, "handoff_us")),
                thousands(r.p50_us as f64),
                thousands(r.p99_us as f64),
                thousands(field(r, "handoffs_measured")),
                thousands(field(r, "rounds")),
                field(r, "queued_secs"),
            );
        }
    }
    let watches: Vec<&Record> = records.iter().filter(|r| r.workload == "watches").collect();
    if !watches.is_empty() {
        let _ = writeln!(out, "\n## Many watches\n");
        let _ = writeln!(
            out,
            "Each session sets a one-shot data watch on each of the same znodes; memory is the \
             node's resident set after, per watch, above before. Then one client overwrites the \
             znodes one at a time: fan-out is from the write's request until the last session \
             has its event.\n"
        );
        let _ = writeln!(
            out,
            "| system | watches | sessions | bytes per watch | set per s | fan-out median ms | fan-out max ms |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for r in watches {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                display_name(&r.system),
                thousands(field(r, "watches")),
                thousands(field(r, "sessions")),
                thousands(field(r, "rss_bytes_per_watch")),
                thousands(field(r, "watches_set_per_sec")),
                millis(r.p50_us),
                millis((field(r, "fanout_ms_max") * 1000.0) as u64),
            );
        }
    }
    out
}
