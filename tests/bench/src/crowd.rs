//! The two crowd rows of the scale curve: many sessions waiting on one lock, and many watches
//! on a few znodes. Both run against any [`System`], so Cairn and ZooKeeper get the same load.
//!
//! - **Lock waiters.** One session holds a fair lock while `waiters` others queue behind it;
//!   once the queue is full the holder releases, and each waiter, granted, releases at once.
//!   The hand-off time is the mean gap between grants over the first [`HANDOFFS_MEASURED`],
//!   while the queue is still at least that much shorter than full. A queue that costs nothing
//!   to keep shows the same hand-off time at 10 waiters and at 10,000.
//! - **Watches.** `sessions` sessions each set a one-shot data watch on each of `znodes`
//!   znodes; the node's resident memory before and after gives the bytes per watch. Then one
//!   writer overwrites the znodes one at a time, and the fan-out time of each write is from
//!   its request until the last session has its event.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::load::{self, Fired, Session, System, VALUE_SIZE};
use crate::report::Record;

/// Hand-offs timed at each queue length (fewer when fewer wait).
const HANDOFFS_MEASURED: usize = 500;
/// How long connecting the crowd, filling the queue or setting the watches may take.
const GATHER_DEADLINE: Duration = Duration::from_secs(600);
/// How long the whole queue may take to be served once the holder releases.
const DRAIN_DEADLINE: Duration = Duration::from_secs(600);
/// How long one write's events may take to reach every watcher.
const FANOUT_DEADLINE: Duration = Duration::from_secs(60);
/// How often the queue's length is looked at while it fills.
const QUEUE_POLL: Duration = Duration::from_millis(50);

/// One session holds a lock, `waiters` queue behind it, and the queue is served; a record of
/// the hand-off time.
pub async fn lock_waiters<S: System>(system: &S, waiters: usize) -> anyhow::Result<Record>
where
    S::Session: 'static,
{
    anyhow::ensure!(waiters > 0, "a queue needs a waiter");
    let lock = format!("crowd-lock-{waiters}-{}", std::process::id());
    let mut sessions = gather(load::connect_all(system, waiters + 1)).await?;
    let holder = sessions.remove(0);
    holder.prepare_lock(&lock).await?;
    let held = holder.acquire(&lock).await.context("the holder's acquire")?;

    let queuing = Instant::now();
    let grants = Arc::new(Mutex::new(Vec::with_capacity(waiters)));
    let mut tasks = Vec::with_capacity(waiters);
    for (n, session) in sessions.into_iter().enumerate() {
        let (lock, grants) = (lock.clone(), grants.clone());
        // Each session is closed only once the whole queue is served: a close is a write too,
        // and would share the node with the hand-offs measured.
        tasks.push(tokio::spawn(async move {
            let served = async {
                let held = session.acquire(&lock).await?;
                grants.lock().unwrap_or_else(PoisonError::into_inner).push(Instant::now());
                session.release(held).await
            }
            .await
            .with_context(|| format!("waiter {n}"));
            (session, served)
        }));
    }
    let full = async {
        while holder.waiting(&lock).await? < waiters {
            tokio::time::sleep(QUEUE_POLL).await;
        }
        anyhow::Ok(())
    };
    gather(full).await.with_context(|| format!("queuing {waiters} waiters"))?;
    let queued_in = queuing.elapsed();

    let released = Instant::now();
    holder.release(held).await?;
    let drained = async {
        let mut served = Vec::with_capacity(tasks.len());
        for task in tasks {
            served.push(task.await.context("a waiter's task panicked")?);
        }
        anyhow::Ok(served)
    };
    let drained = tokio::time::timeout(DRAIN_DEADLINE, drained).await;
    holder.close().await;
    let served = drained
        .with_context(|| format!("serving {waiters} waiters took over {DRAIN_DEADLINE:?}"))??;
    let mut outcome = Ok(());
    let closing = served.into_iter().map(|(session, served)| {
        if let Err(error) = served {
            outcome = Err(error);
        }
        session.close()
    });
    futures::future::join_all(closing.collect::<Vec<_>>()).await;
    outcome?;

    let mut grants = std::mem::take(&mut *grants.lock().unwrap_or_else(PoisonError::into_inner));
    grants.sort_unstable();
    let times = Handoffs::from_grants(released, &grants);
    let mut record = Record::from_samples(system.name(), 1, "lock-waiters", waiters, &[]);
    record.ops_per_sec = 1e6 / times.first_us.max(1.0);
    record.p50_us = times.p50_us;
    record.p99_us = times.p99_us;
    record.extra = object(serde_json::json!({
        "waiters": waiters,
        "handoff_us": times.first_us.round(),
        "handoffs_measured": times.measured,
        "drain_handoff_us": times.all_us.round(),
        "queued_secs": (queued_in.as_secs_f64() * 10.0).round() / 10.0,
    }));
    eprintln!(
        "  {} {waiters} waiters: hand-off {:.0} µs (all {:.0} µs), queued in {queued_in:.1?}",
        system.name(),
        times.first_us,
        times.all_us
    );
    Ok(record)
}

/// Hand-off times from the grants' instants, sorted, after the holder's release at `released`.
#[derive(Debug, PartialEq)]
struct Handoffs {
    /// Mean over the first [`HANDOFFS_MEASURED`] hand-offs, µs.
    first_us: f64,
    measured: usize,
    /// Mean over all of them, µs.
    all_us: f64,
    /// The median and the p99 gap between two grants among the first measured, µs.
    p50_us: u64,
    p99_us: u64,
}

impl Handoffs {
    fn from_grants(released: Instant, grants: &[Instant]) -> Handoffs {
        let measured = grants.len().min(HANDOFFS_MEASURED);
        let mean = |count: usize| match count.checked_sub(1).and_then(|last| grants.get(last)) {
            Some(last) => last.duration_since(released).as_secs_f64() * 1e6 / count as f64,
            None => 0.0,
        };
        let mut gaps: Vec<u64> = std::iter::once(released)
            .chain(grants.iter().copied())
            .take(measured + 1)
            .collect::<Vec<_>>()
            .windows(2)
            .map(|pair| pair[1].duration_since(pair[0]).as_micros() as u64)
            .collect();
        gaps.sort_unstable();
        Handoffs {
            first_us: mean(measured),
            measured,
            all_us: mean(grants.len()),
            p50_us: load::percentile(&gaps, 0.50),
            p99_us: load::percentile(&gaps, 0.99),
        }
    }
}

/// `sessions` sessions each watch every one of `znodes` znodes; a record of the memory per
/// watch (from the resident set of `pid`, the node) and of each write's fan-out time.
pub async fn watches<S: System>(
    system: &S,
    pid: u32,
    sessions: usize,
    znodes: usize,
) -> anyhow::Result<Record>
where
    S::Session: 'static,
{
    anyhow::ensure!(sessions > 0 && znodes > 0, "watches need sessions and znodes");
    let key = |j: usize| format!("crowd-watched-{j}-{}", std::process::id());
    let writer = system.connect(0).await?;
    for j in 0..znodes {
        writer.create(&key(j), vec![b'x'; VALUE_SIZE]).await.with_context(|| key(j))?;
    }
    let watchers = gather(load::connect_all(system, sessions)).await?;
    let (rss_before, _) = crate::idle::process_usage(pid)?;

    // Each session sets its watches, then waits for them in the order the writer writes.
    let arrivals: Arc<Vec<Arrivals>> = Arc::new((0..znodes).map(|_| Arrivals::default()).collect());
    let setting = Instant::now();
    let set = watchers.into_iter().map(|session| {
        let keys: Vec<String> = (0..znodes).map(key).collect();
        async move {
            let mut fired: Vec<Fired> = Vec::with_capacity(keys.len());
            for key in &keys {
                fired.push(session.watch(key).await.with_context(|| format!("watching {key}"))?);
            }
            anyhow::Ok((session, fired))
        }
    });
    let set = gather(futures::future::try_join_all(set)).await.context("setting the watches")?;
    let set_in = setting.elapsed();
    let (rss_after, _) = crate::idle::process_usage(pid)?;
    let mut tasks = Vec::with_capacity(sessions);
    for (session, fired) in set {
        let arrivals = arrivals.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcome = Ok(());
            for (j, watch) in fired.into_iter().enumerate() {
                outcome = watch.await.with_context(|| format!("the watch on znode {j}"));
                if outcome.is_err() {
                    break;
                }
                arrivals[j].arrive(sessions);
            }
            session.close().await;
            outcome
        }));
    }

    let mut fanouts_us = Vec::with_capacity(znodes);
    let written = async {
        for (j, arrived) in arrivals.iter().enumerate() {
            let began = Instant::now();
            writer.write(&key(j), vec![b'y'; VALUE_SIZE]).await?;
            let last = tokio::time::timeout(FANOUT_DEADLINE, arrived.all.notified())
                .await
                .with_context(|| format!("write {j}'s events took over {FANOUT_DEADLINE:?}"))
                .map(|()| arrived.last())?;
            fanouts_us.push(last.duration_since(began).as_micros() as u64);
        }
        anyhow::Ok(())
    };
    let written = written.await;
    writer.close().await;
    for task in tasks {
        if written.is_err() {
            task.abort();
        } else {
            task.await.context("a watcher's task panicked")??;
        }
    }
    written?;

    fanouts_us.sort_unstable();
    let watches = sessions * znodes;
    let bytes_per_watch = (rss_after.saturating_sub(rss_before) * 1024) / watches as u64;
    let mut record = Record::from_samples(system.name(), 1, "watches", watches, &[]);
    record.p50_us = load::percentile(&fanouts_us, 0.50);
    record.p99_us = load::percentile(&fanouts_us, 0.99);
    let fanout_max_us = fanouts_us.last().copied().unwrap_or(0);
    record.extra = object(serde_json::json!({
        "watches": watches,
        "sessions": sessions,
        "events_per_write": sessions,
        "rss_bytes_per_watch": bytes_per_watch,
        "watches_set_per_sec": (watches as f64 / set_in.as_secs_f64()).round(),
        "fanout_ms_median": record.p50_us as f64 / 1000.0,
        "fanout_ms_max": fanout_max_us as f64 / 1000.0,
    }));
    eprintln!(
        "  {} {watches} watches: {bytes_per_watch} B each, fan-out to {sessions}: median {} µs, max {fanout_max_us} µs",
        system.name(),
        record.p50_us
    );
    Ok(record)
}

/// Who has had one write's event: a count, the latest arrival, and a signal when all have.
#[derive(Debug, Default)]
struct Arrivals {
    state: Mutex<(usize, Option<Instant>)>,
    all: tokio::sync::Notify,
}

impl Arrivals {
    /// One more session has its event; the last of `expected` signals.
    fn arrive(&self, expected: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += 1;
        state.1 = Some(Instant::now());
        if state.0 == expected {
            // `notify_one` keeps the permit if the writer is not waiting yet.
            self.all.notify_one();
        }
    }

    fn last(&self) -> Instant {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.1.unwrap_or_else(Instant::now)
    }
}

/// Runs `step` within [`GATHER_DEADLINE`].
async fn gather<T>(step: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(GATHER_DEADLINE, step)
        .await
        .with_context(|| format!("took over {GATHER_DEADLINE:?}"))?
}

fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_off_time_is_the_mean_gap_from_the_release() {
        let released = Instant::now();
        let at = |ms: u64| released + Duration::from_millis(ms);
        let grants = [at(1), at(2), at(4), at(8)];
        let times = Handoffs::from_grants(released, &grants);
        assert_eq!(times.measured, 4);
        assert!((times.first_us - 2_000.0).abs() < 1.0, "{times:?}");
        assert!((times.all_us - 2_000.0).abs() < 1.0, "{times:?}");
        // Gaps 1, 1, 2, 4 ms.
        assert_eq!(times.p50_us, 2_000);
        assert_eq!(times.p99_us, 4_000);
    }

    #[test]
    fn only_the_first_hand_offs_are_measured_from_a_long_queue() {
        let released = Instant::now();
        let grants: Vec<Instant> = (1..=HANDOFFS_MEASURED as u64 * 2)
            .map(|k| released + Duration::from_micros(k * k))
            .collect();
        let times = Handoffs::from_grants(released, &grants);
        assert_eq!(times.measured, HANDOFFS_MEASURED);
        assert!(times.first_us < times.all_us, "{times:?}");
        assert_eq!(Handoffs::from_grants(released, &[]).first_us, 0.0);
    }
}
