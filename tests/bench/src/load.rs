//! The closed-loop load every system gets: the same clients, the same operations, the same
//! clock. A system plugs in through [`System`] (how a client connects) and [`Session`] (what one
//! operation is for it); [`measure`] runs one workload and returns one [`Sample`].
//!
//! Each client is its own connection and session and runs one request at a time, as an
//! application thread would. Operations that start inside the measured window count; their
//! latency is the time from the request to its answer (for a lock, to the grant, waiting
//! included).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::ValueEnum;
use serde::Serialize;

/// The size of every written value, in bytes.
pub const VALUE_SIZE: usize = 100;

/// How long connecting all the clients of one run may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Every client loops acquire → check it is alone → release on one lock; an operation is a
    /// hand-off, its latency the acquire's.
    ContendedLock,
    /// The same loop, each client on a lock of its own.
    UncontendedLock,
    /// Each client overwrites a key of its own with a 100-byte value.
    Write,
    /// Each client reads a key of its own, as the system reads by default: from the replica it
    /// is connected to (ZooKeeper, Cairn's local reads; etcd's serializable reads).
    Read,
    /// Each client reads a key of its own, linearizably (ZooKeeper: `sync` then the read).
    LinearizableRead,
    /// Cairn only: each client adds to a counter of its own through the counter recipe.
    RecipeInvoke,
}

impl Workload {
    pub fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

/// One client's connection to the system under test.
pub trait Session: Send + Sync + Sized + 'static {
    /// A granted lock, given back to [`Session::release`].
    type Held: Send;

    /// Creates `key` with `value` before the run (a znode for Cairn and ZooKeeper).
    fn create(&self, key: &str, value: Vec<u8>) -> impl Future<Output = anyhow::Result<()>> + Send;

    fn write(&self, key: &str, value: Vec<u8>) -> impl Future<Output = anyhow::Result<()>> + Send;

    fn read(
        &self,
        key: &str,
        linearizable: bool,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Whatever a lock needs before its first use (ZooKeeper: the lock's parent znode).
    fn prepare_lock(&self, _lock: &str) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Waits until this session holds `lock`.
    fn acquire(&self, lock: &str) -> impl Future<Output = anyhow::Result<Self::Held>> + Send;

    fn release(&self, held: Self::Held) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// How many sessions wait for `lock` behind its holder.
    fn waiting(&self, _lock: &str) -> impl Future<Output = anyhow::Result<usize>> + Send {
        async { anyhow::bail!("this system has no lock queue to count") }
    }

    /// Sets a one-shot watch on `key`'s data; what it returns ends when the watch fires.
    fn watch(&self, _key: &str) -> impl Future<Output = anyhow::Result<Fired>> + Send {
        async { anyhow::bail!("this system has no one-shot watches") }
    }

    /// Cairn only: one counter-recipe call on the counter `key`.
    fn invoke(&self, _key: &str) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { anyhow::bail!("this system runs no recipes") }
    }

    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A set watch: ends when it fires, with an error if the session ends first.
pub type Fired = futures::future::BoxFuture<'static, anyhow::Result<()>>;

/// A running system under test.
pub trait System: Sync {
    type Session: Session;

    /// `cairn`, `zookeeper` or `etcd`.
    fn name(&self) -> &'static str;

    fn nodes(&self) -> usize;

    /// Connects client number `client`: clients are spread over the nodes in turn.
    fn connect(&self, client: usize) -> impl Future<Output = anyhow::Result<Self::Session>> + Send;
}

/// How long a run warms up and then measures.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Runs `workload` with `clients` clients against `system`. `run` names this run's keys and
/// locks, so runs against one system never share them.
pub async fn measure<S: System>(
    system: &S,
    workload: Workload,
    clients: usize,
    timing: Timing,
    run: &str,
) -> anyhow::Result<Sample> {
    let sessions = tokio::time::timeout(CONNECT_DEADLINE, connect_all(system, clients))
        .await
        .with_context(|| format!("connecting {clients} clients to {}", system.name()))??;
    let lock_name = |n: usize| match workload {
        Workload::ContendedLock => format!("{run}-lock"),
        _ => format!("{run}-lock-{n}"),
    };
    for (n, session) in sessions.iter().enumerate() {
        match workload {
            Workload::Write | Workload::Read | Workload::LinearizableRead => {
                let key = format!("{run}-c{n}");
                session
                    .create(&key, vec![b'x'; VALUE_SIZE])
                    .await
                    .with_context(|| format!("client {n} creating {key}"))?
            }
            Workload::ContendedLock if n > 0 => {}
            Workload::ContendedLock | Workload::UncontendedLock => session
                .prepare_lock(&lock_name(n))
                .await
                .with_context(|| format!("client {n} preparing its lock"))?,
            Workload::RecipeInvoke => {}
        }
    }

    let measure_from = Instant::now() + timing.warmup;
    let end = measure_from + timing.measure;
    // Clients holding the contended lock right now, as they see it: never more than one.
    let holding = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for (n, session) in sessions.into_iter().enumerate() {
        let key = format!("{run}-c{n}");
        let lock = lock_name(n);
        let holding = holding.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            let value = vec![b'y'; VALUE_SIZE];
            let result = async {
                loop {
                    let began = Instant::now();
                    if began >= end {
                        return anyhow::Ok(());
                    }
                    let latency = match workload {
                        Workload::Write => {
                            session.write(&key, value.clone()).await?;
                            began.elapsed()
                        }
                        Workload::Read | Workload::LinearizableRead => {
                            session.read(&key, workload == Workload::LinearizableRead).await?;
                            began.elapsed()
                        }
                        Workload::RecipeInvoke => {
                            session.invoke(&key).await?;
                            began.elapsed()
                        }
                        Workload::ContendedLock | Workload::UncontendedLock => {
                            let held = session.acquire(&lock).await?;
                            let granted = began.elapsed();
                            if workload == Workload::ContendedLock {
                                // Held from the grant until the release is sent.
                                let others = holding.fetch_add(1, Ordering::SeqCst);
                                tokio::task::yield_now().await;
                                holding.fetch_sub(1, Ordering::SeqCst);
                                ensure!(others == 0, "{others} other holders of {lock}");
                            }
                            session.release(held).await?;
                            granted
                        }
                    };
                    if began >= measure_from {
                        latencies_us.push(latency.as_micros() as u64);
                    }
                }
            }
            .await
            .with_context(|| format!("client {n}"));
            session.close().await;
            result.map(|()| latencies_us)
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.context("a client task panicked")??);
    }
    latencies_us.sort_unstable();
    Ok(Sample {
        ops_per_sec: latencies_us.len() as f64 / timing.measure.as_secs_f64(),
        p50_us: percentile(&latencies_us, 0.50),
        p99_us: percentile(&latencies_us, 0.99),
    })
}

/// The `p` quantile (0 to 1) of `sorted`, by nearest rank; 0 when it is empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(0)
}

/// Connects `clients` sessions, a few at a time.
pub async fn connect_all<S: System>(system: &S, clients: usize) -> anyhow::Result<Vec<S::Session>> {
    let mut sessions = Vec::with_capacity(clients);
    for first in (0..clients).step_by(16) {
        let batch = (first..clients.min(first + 16)).map(|n| system.connect(n));
        for session in futures::future::join_all(batch).await {
            sessions.push(session?);
        }
    }
    Ok(sessions)
}
