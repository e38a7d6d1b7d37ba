//! Idle sessions: many clients connected to one node doing nothing but keeping their sessions
//! alive, and what they cost the node in memory and CPU (read from /proc).

use std::time::Instant;

use anyhow::Context;
use cairn_client::Client;

use crate::load::Timing;
use crate::report::Record;

/// Sessions opened at once.
const OPEN_AT_ONCE: usize = 64;

/// Every client has a socket of its own: lets this process open as many as the hard limit allows.
pub fn raise_open_files_limit() -> anyhow::Result<()> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the one struct passed.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit");
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit");
        }
    }
    Ok(())
}

/// Resident memory (KiB) and CPU time used so far (seconds) of a process, from /proc.
pub fn process_usage(pid: u32) -> anyhow::Result<(u64, f64)> {
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

/// Opens `sessions` idle sessions against the node at `server` (process `pid`), lets them
/// settle for the warm-up, then measures the node for the measured time.
pub async fn measure(
    server: &str,
    credentials: &cairn_client::Credentials,
    pid: u32,
    sessions: usize,
    timing: Timing,
) -> anyhow::Result<Record> {
    let (rss_before, _) = process_usage(pid)?;
    let mut clients = Vec::with_capacity(sessions);
    let opening = Instant::now();
    while clients.len() < sessions {
        let batch = (clients.len()..sessions.min(clients.len() + OPEN_AT_ONCE))
            .map(|_| Client::connect(server, credentials));
        for client in futures::future::join_all(batch).await {
            clients.push(client.with_context(|| format!("idle session {}", clients.len()))?);
        }
    }
    let opened_in = opening.elapsed();
    // Let the opening burst settle before measuring the idle cost.
    tokio::time::sleep(timing.warmup).await;
    let (rss_after, cpu_before) = process_usage(pid)?;
    tokio::time::sleep(timing.measure).await;
    let (_, cpu_after) = process_usage(pid)?;
    let mut record = Record::from_samples("cairn", 1, "idle-sessions", sessions, &[]);
    let extra = serde_json::json!({
        "sessions_opened_per_sec": (sessions as f64 / opened_in.as_secs_f64()).round(),
        "bytes_per_session": (rss_after.saturating_sub(rss_before) * 1024) / sessions.max(1) as u64,
        "node_rss_mib": rss_after / 1024,
        "node_cpu_percent_idle": ((cpu_after - cpu_before) / timing.measure.as_secs_f64() * 1000.0).round() / 10.0,
    });
    if let serde_json::Value::Object(extra) = extra {
        record.extra = extra;
    }
    futures::future::join_all(clients.iter().map(Client::close)).await;
    Ok(record)
}
