//! The two crowd rows of the scale curve: many sessions waiting on one lock, and many watches
//! on a few znodes. Both run against any [`System`], so Cairn and ZooKeeper get the same load.
//!
//! - **Lock waiters.** One session holds a fair lock while `waiters` others queue behind it;
//!   once the queue is full the holder releases, and each waiter, granted, releases at once.
//!   The hand-off time is the mean gap between grants over the first [`HANDOFFS_MEASURED`],
//!   while the queue is still at least that much shorter than full; a shorter queue is filled
//!   and served again until as many are timed. A queue that costs nothing to keep shows the
//!   same hand-off time at 10 waiters and at 10,000.
//! - **Watches.** `sessions` sessions each set a one-shot data watch on each of `znodes`
//!   znodes; the node's resident memory before and after gives the bytes per watch. Then one
//!   writer overwrites the znodes one at a time, and the fan-out time of each write is from
//!   its request until the last session has its event.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::load::{self, Fired, Session, System, VALUE_SIZE};
use crate::report::Record;

/// The crowd's sessions' timeout: thousands of clients share two cores with the node, and a
/// client late to answer for a few seconds should not lose its session and its place.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
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
/// How often a slow step says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How many of a round's failed waiters are told as they fail.
const FAILURES_SHOWN: usize = 5;

/// One session holds a lock, `waiters` queue behind it, and the queue is served, round after
/// round until [`HANDOFFS_MEASURED`] hand-offs are timed; a record of the hand-off time.
pub async fn lock_waiters<S: System>(system: &S, waiters: usize) -> anyhow::Result<Record>
where
    S::Session: 'static,
{
    anyhow::ensure!(waiters > 0, "a queue needs a waiter");
    let lock = format!("crowd-lock-{waiters}-{}", std::process::id());
    let connecting = Instant::now();
    let mut sessions = gather(load::connect_all(system, waiters + 1)).await?;
    eprintln!("    {} sessions connected in {:.1?}", waiters + 1, connecting.elapsed());
    let holder = sessions.remove(0);
    holder.prepare_lock(&lock).await?;
    let mut times = Handoffs::default();
    let mut queued_in = Duration::ZERO;
    let mut outcome = Ok(());
    while times.measured < HANDOFFS_MEASURED {
        let round = queue_and_serve(&holder, &lock, sessions).await;
        let (served, round) = round.with_context(|| format!("a queue of {waiters}"))?;
        sessions = served;
        match round {
            Ok((grants, took)) => {
                times.add(&grants);
                queued_in = queued_in.max(took);
            }
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    // Closed only once every round is served: a close is a write too.
    let closing: Vec<_> = sessions.into_iter().map(Session::close).collect();
    futures::future::join_all(closing).await;
    holder.close().await;
    outcome?;

    let mut record = Record::from_samples(system.name(), 1, "lock-waiters", waiters, &[]);
    let (mean_us, p50_us, p99_us) = times.summary();
    record.ops_per_sec = 1e6 / mean_us.max(1.0);
    record.p50_us = p50_us;
    record.p99_us = p99_us;
    record.extra = object(serde_json::json!({
        "waiters": waiters,
        "handoff_us": mean_us.round(),
        "handoffs_measured": times.measured,
        "rounds": times.rounds,
        "queued_secs": (queued_in.as_secs_f64() * 10.0).round() / 10.0,
    }));
    eprintln!(
        "  {} {waiters} waiters: hand-off {mean_us:.0} µs over {} in {} rounds, queued in {queued_in:.1?}",
        system.name(),
        times.measured,
        times.rounds,
    );
    Ok(record)
}

/// What one round gives back: its sessions, and the grants' instants after the release (in
/// order) and how long the queue took to fill, or why it failed.
type Round<T> = (Vec<T>, anyhow::Result<(Vec<Instant>, Duration)>);

/// One round: `holder` takes `lock`, every one of `sessions` queues behind it, and once all
/// wait the holder releases and each, granted, releases at once.
async fn queue_and_serve<T: Session>(
    holder: &T,
    lock: &str,
    sessions: Vec<T>,
) -> anyhow::Result<Round<T>> {
    let waiters = sessions.len();
    let held = holder.acquire(lock).await.context("the holder's acquire")?;
    let queuing = Instant::now();
    let grants = Arc::new(Mutex::new(Vec::with_capacity(waiters)));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(waiters);
    for (n, session) in sessions.into_iter().enumerate() {
        let (lock, grants, failures) = (lock.to_string(), grants.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let served = async {
                let held = session.acquire(&lock).await?;
                grants.lock().unwrap_or_else(PoisonError::into_inner).push(Instant::now());
                session.release(held).await
            }
            .await
            .with_context(|| format!("waiter {n}"));
            // Said at once (the first few): a waiter that fails may hold up the rest.
            if let Err(error) = &served
                && failures.fetch_add(1, Ordering::Relaxed) < FAILURES_SHOWN
            {
                eprintln!("    {error:#}");
            }
            (session, served)
        }));
    }
    let full = async {
        let mut reported = Instant::now();
        loop {
            let queued = holder.waiting(lock).await?;
            if queued >= waiters {
                return anyhow::Ok(());
            }
            // A waiter whose task ended before its grant failed: no use waiting for the rest.
            if tasks.iter().any(|task| task.is_finished()) {
                anyhow::bail!("a waiter stopped waiting while the lock was held");
            }
            if reported.elapsed() >= PROGRESS_EVERY {
                eprintln!("    {queued} of {waiters} waiters queued");
                reported = Instant::now();
            }
            tokio::time::sleep(QUEUE_POLL).await;
        }
    };
    let filled = gather(full).await.with_context(|| format!("queuing {waiters} waiters"));
    let queued_in = queuing.elapsed();
    let released = Instant::now();
    let release = holder.release(held).await;
    let drained = async {
        let mut served = Vec::with_capacity(tasks.len());
        for task in tasks {
            served.push(task.await.context("a waiter's task panicked")?);
        }
        anyhow::Ok(served)
    };
    // A long queue says how far its serving got, so a stall shows where it stalled.
    let progress = {
        let grants = grants.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let granted = grants.lock().unwrap_or_else(PoisonError::into_inner).len();
                eprintln!("    {granted} of {waiters} waiters granted");
            }
        })
    };
    let drained = tokio::time::timeout(DRAIN_DEADLINE, drained)
        .await
        .with_context(|| format!("serving {waiters} waiters took over {DRAIN_DEADLINE:?}"));
    progress.abort();
    let drained = drained??;
    let mut sessions = Vec::with_capacity(waiters);
    let mut first_failure = None;
    for (session, served) in drained {
        if let Err(error) = served {
            first_failure.get_or_insert(error);
        }
        sessions.push(session);
    }
    let served = match first_failure {
        None => Ok(()),
        Some(error) => {
            let failed = failures.load(Ordering::Relaxed);
            Err(error.context(format!("{failed} of {waiters} waiters failed; the first")))
        }
    };
    let outcome = filled.and(release).and(served);
    let mut grants = std::mem::take(&mut *grants.lock().unwrap_or_else(PoisonError::into_inner));
    grants.sort_unstable();
    grants.insert(0, released);
    Ok((sessions, outcome.map(|()| (grants, queued_in))))
}

/// Hand-off times: the gaps between grants, the first of a round from the holder's release,
/// over the first [`HANDOFFS_MEASURED`] of each round (while its queue is still at least that
/// much shorter than full) until that many are timed.
#[derive(Debug, Default, PartialEq)]
struct Handoffs {
    gaps_us: Vec<u64>,
    measured: usize,
    rounds: usize,
}

impl Handoffs {
    /// Adds a round: the release, then each grant, in order.
    fn add(&mut self, instants: &[Instant]) {
        let wanted = HANDOFFS_MEASURED.saturating_sub(self.measured);
        let gaps = instants.windows(2).take(wanted);
        self.gaps_us.extend(gaps.map(|pair| pair[1].duration_since(pair[0]).as_micros() as u64));
        self.measured = self.gaps_us.len();
        self.rounds += 1;
    }

    /// The mean, median and p99 hand-off time, µs.
    fn summary(&self) -> (f64, u64, u64) {
        let mut sorted = self.gaps_us.clone();
        sorted.sort_unstable();
        let mean = sorted.iter().sum::<u64>() as f64 / sorted.len().max(1) as f64;
        (mean, load::percentile(&sorted, 0.50), load::percentile(&sorted, 0.99))
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

/// The record of a crowd row `system` could not finish: why, in `error`.
pub fn failed(system: &str, workload: &str, count: usize, error: &anyhow::Error) -> Record {
    let mut record = Record::from_samples(system, 1, workload, count, &[]);
    record.extra = object(serde_json::json!({ "error": format!("{error:#}") }));
    record
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
        let mut times = Handoffs::default();
        times.add(&[released, at(1), at(2), at(4), at(8)]);
        assert_eq!((times.measured, times.rounds), (4, 1));
        // Gaps 1, 1, 2, 4 ms.
        assert_eq!(times.summary(), (2_000.0, 2_000, 4_000));
    }

    #[test]
    fn short_queues_take_rounds_and_long_ones_only_their_first_hand_offs() {
        let released = Instant::now();
        let round = |grants: u64| -> Vec<Instant> {
            (0..=grants).map(|k| released + Duration::from_micros(k * 10)).collect()
        };
        let mut times = Handoffs::default();
        while times.measured < HANDOFFS_MEASURED {
            times.add(&round(9));
        }
        assert_eq!(times.measured, HANDOFFS_MEASURED);
        assert_eq!(times.rounds, HANDOFFS_MEASURED.div_ceil(9));
        assert_eq!(times.summary().1, 10);
        let mut long = Handoffs::default();
        long.add(&round(HANDOFFS_MEASURED as u64 * 3));
        assert_eq!((long.measured, long.rounds), (HANDOFFS_MEASURED, 1));
        assert_eq!(Handoffs::default().summary(), (0.0, 0, 0));
    }
}
