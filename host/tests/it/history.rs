//! History checking: concurrent clients run random znode and lock operations against a
//! three-node cluster while its leader is killed and restarted; every operation's invocation and
//! completion is recorded and the history checked — linearizability of the znode operations
//! (`cairn_tests::history`, a Wing–Gong search) and the lock's fencing-token properties.
//!
//! CI runs a short seeded history. A longer soak:
//! `CAIRN_HISTORY_OPS=2000 CAIRN_HISTORY_SEED=7 cargo test -p cairn --test it history -- --nocapture`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::{Client, CreateOptions, ErrorCode};
use cairn_tests::history::{Event, Hold, Op, Outcome, check_linearizable, check_lock};

use crate::start_cluster;

/// Operations per client in the short run (CI).
const OPS_PER_CLIENT: u64 = 40;
/// Concurrent clients of the znode workload, and of the lock.
const CLIENTS: u64 = 4;
const LOCK_CLIENTS: usize = 3;
/// Operations per key, at most: the checker's search is exponential in the worst case.
const OPS_PER_KEY: u64 = 40;

/// A small deterministic generator, so a seed names a history's operations.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs one operation and records it; an error that leaves the outcome unknown completes never.
async fn run_op(client: &Client, key: String, op: Op) -> Event {
    let invoked = Instant::now();
    let encode = |value: u64| value.to_string().into_bytes();
    let result: Result<Outcome, cairn_client::Error> = match &op {
        Op::Create(value) => client
            .create(&key, encode(*value), CreateOptions::persistent())
            .await
            .map(|_| Outcome::Done(None)),
        Op::Set(value) => client
            .set(&key, encode(*value), None)
            .await
            .map(|stat| Outcome::Done(Some(stat.version))),
        Op::Cas { version, value } => client
            .set(&key, encode(*value), Some(*version))
            .await
            .map(|stat| Outcome::Done(Some(stat.version))),
        Op::Delete => client.delete(&key, None).await.map(|()| Outcome::Done(None)),
        Op::Get => match client.get(&key).await {
            Ok((data, stat)) => {
                let value = String::from_utf8_lossy(&data).parse().unwrap_or(u64::MAX);
                Ok(Outcome::Read(Some((value, stat.version))))
            }
            Err(error) if error.code() == Some(ErrorCode::NoNode) => Ok(Outcome::Read(None)),
            Err(error) => Err(error),
        },
    };
    let (outcome, completed) = match result {
        Ok(outcome) => (outcome, Some(Instant::now())),
        Err(error) => match error.code() {
            Some(ErrorCode::NoNode) => (Outcome::NoNode, Some(Instant::now())),
            Some(ErrorCode::NodeExists) => (Outcome::NodeExists, Some(Instant::now())),
            Some(ErrorCode::BadVersion) => (Outcome::BadVersion, Some(Instant::now())),
            // Connection lost, unavailable, timed out: it may or may not have happened.
            _ => {
                if std::env::var_os("CAIRN_HISTORY_VERBOSE").is_some() {
                    eprintln!("unknown outcome: {error}");
                }
                (Outcome::Unknown, None)
            }
        },
    };
    Event { key, op, outcome, invoked, completed }
}

#[tokio::test(flavor = "multi_thread")]
async fn histories_under_leader_failures_are_linearizable() -> anyhow::Result<()> {
    let seed = env_u64("CAIRN_HISTORY_SEED", 1);
    let per_client = env_u64("CAIRN_HISTORY_OPS", OPS_PER_CLIENT * CLIENTS) / CLIENTS;
    let keys = (per_client * CLIENTS).div_ceil(OPS_PER_KEY).max(1);
    let dir = tempfile::tempdir()?;
    let mut cluster = start_cluster(dir.path(), 3, &[])?;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr().to_string()).collect();
    let admin = cluster.admin();
    let setup = cluster.client(1).await?;
    setup.create("/h", Vec::new(), CreateOptions::persistent()).await?;

    // Each client starts on another node and may move to any.
    let connect = |first: usize| {
        let mut order: Vec<String> = addrs.clone();
        order.rotate_left(first % addrs.len());
        let admin = admin.clone();
        async move {
            Client::connect_with_timeout(&order.join(","), &admin, Duration::from_secs(8)).await
        }
    };
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let mut workers = Vec::new();
    for worker in 0..CLIENTS {
        let client = connect(worker as usize).await?;
        let events = events.clone();
        workers.push(tokio::spawn(async move {
            let mut random =
                Seeded(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(worker + 1));
            for n in 0..per_client {
                let key = format!("/h/k{}", random.below(keys));
                let value = worker * 1_000_000 + n;
                let op = match random.below(10) {
                    0 | 1 => Op::Create(value),
                    2 | 3 => Op::Set(value),
                    4 | 5 => {
                        Op::Cas { version: u32::try_from(random.below(4)).unwrap_or(0), value }
                    }
                    6 => Op::Delete,
                    _ => Op::Get,
                };
                let event = run_op(&client, key, op).await;
                events.lock().expect("not poisoned").push(event);
            }
        }));
    }
    let holds: Arc<Mutex<Vec<Hold>>> = Arc::default();
    for holder in 0..LOCK_CLIENTS {
        let client = connect(holder + 1).await?;
        let holds = holds.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..per_client / 8 {
                let Ok(guard) = client.lock("history").acquire().await else { continue };
                let granted = Instant::now();
                tokio::time::sleep(Duration::from_millis(5)).await;
                let token = guard.token();
                // The hold ends when its holder stops acting on it, whether or not the release
                // gets through (if not, the session's end releases it).
                let released = Instant::now();
                let _ = guard.release().await;
                holds.lock().expect("not poisoned").push(Hold {
                    holder,
                    token,
                    granted,
                    released: Some(released),
                });
            }
        }));
    }

    // Faults while they run: the leader killed, then brought back, twice.
    let mut faults = 0;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let leader = cluster.leader(&[1, 2, 3], Duration::from_secs(60)).await?;
        if std::env::var_os("CAIRN_HISTORY_VERBOSE").is_some() {
            eprintln!("killing leader {leader} at {:?}", std::time::SystemTime::now());
        }
        cluster.node(leader).kill()?;
        faults += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.node(leader).restart()?;
    }
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(180), worker).await??;
    }

    if std::env::var_os("CAIRN_HISTORY_VERBOSE").is_some() {
        for (i, node) in cluster.nodes.iter().enumerate() {
            for line in node
                .log()
                .lines()
                .filter(|l| l.contains("expired") || l.contains("serving") || l.contains("stopped"))
            {
                eprintln!("node {}: {line}", i + 1);
            }
        }
    }
    let events = events.lock().expect("not poisoned").clone();
    let unknown = events.iter().filter(|e| e.completed.is_none()).count();
    let holds = holds.lock().expect("not poisoned").clone();
    eprintln!(
        "history: seed {seed}, {} znode operations on {keys} keys ({unknown} with unknown outcome), \
         {} lock holds, {faults} leader kills",
        events.len(),
        holds.len()
    );
    if let Err(violation) = check_linearizable(&events) {
        let of_key: Vec<&Event> = events.iter().filter(|e| e.key == violation.key).collect();
        anyhow::bail!("not linearizable: {violation:?}\n{of_key:#?}");
    }
    check_lock(&holds).map_err(|why| anyhow::anyhow!("lock: {why}\n{holds:#?}"))?;
    Ok(())
}
