//! The built-in coordination recipes through the client's typed handles, with many clients at
//! once: what each recipe promises, checked from the outside.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::{Access, Client};
use cairn_tests::wait_for;

use crate::start_node;

/// Generous: these waits end as soon as their condition holds.
const DEADLINE: Duration = Duration::from_secs(60);

async fn short_session(node: &cairn_tests::Server) -> anyhow::Result<Client> {
    Ok(Client::connect_with_timeout(
        &node.addr().to_string(),
        &node.admin(),
        Duration::from_secs(2),
    )
    .await?)
}

/// Waiters are granted in the order they queued, each with a larger token.
#[tokio::test(flavor = "multi_thread")]
async fn fair_lock_grants_in_arrival_order() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let first = node.client().await?;
    let observer = node.client().await?;
    let held = first.lock("fifo").acquire().await?;
    let granted = Arc::new(Mutex::new(Vec::new()));
    let mut queued = Vec::new();
    let mut waiters = Vec::new();
    for position in 1..=8 {
        let client = node.client().await?;
        queued.push(client.session_id());
        let granted = granted.clone();
        waiters.push(tokio::spawn(async move {
            let guard = client.lock("fifo").acquire().await?;
            granted.lock().expect("not poisoned").push((client.session_id(), guard.token()));
            guard.release().await?;
            anyhow::Ok(client)
        }));
        // The next one queues only once this one is in line, so the arrival order is known.
        crate::wait_for_status(&observer, "fifo", position).await?;
    }
    held.release().await?;
    for waiter in waiters {
        tokio::time::timeout(DEADLINE, waiter).await???;
    }
    let granted = granted.lock().expect("not poisoned").clone();
    let order: Vec<u64> = granted.iter().map(|(session, _)| *session).collect();
    assert_eq!(order, queued, "granted in arrival order");
    let tokens: Vec<u64> = granted.iter().map(|(_, token)| *token).collect();
    assert_eq!(tokens, (2..=9).collect::<Vec<u64>>(), "one token per grant, increasing");
    Ok(())
}

/// Ten clients share three permits, taking one or two at a time: never more than three in use.
#[tokio::test(flavor = "multi_thread")]
async fn semaphore_never_exceeds_its_permits() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let in_use = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..10u64 {
        let client = node.client().await?;
        let (in_use, most) = (in_use.clone(), most.clone());
        workers.push(tokio::spawn(async move {
            let count = 1 + worker % 2;
            for _ in 0..4 {
                let permits = client.semaphore("pool", 3).acquire(count).await?;
                let now = in_use.fetch_add(count as usize, Ordering::SeqCst) + count as usize;
                most.fetch_max(now, Ordering::SeqCst);
                anyhow::ensure!(now <= 3, "{now} permits in use");
                tokio::task::yield_now().await;
                in_use.fetch_sub(count as usize, Ordering::SeqCst);
                permits.release().await?;
            }
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        tokio::time::timeout(DEADLINE, worker).await???;
    }
    let most = most.load(Ordering::SeqCst);
    assert!((1..=3).contains(&most), "at most 3 in use, saw {most}");
    Ok(())
}

/// Five candidates lead one after another: never two at once, each term larger than the last.
#[tokio::test(flavor = "multi_thread")]
async fn one_leader_at_a_time_with_increasing_terms() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let leading = Arc::new(AtomicUsize::new(0));
    let terms = Arc::new(Mutex::new(Vec::new()));
    let mut candidates = Vec::new();
    for candidate in 0..5 {
        let client = node.client().await?;
        let (leading, terms) = (leading.clone(), terms.clone());
        candidates.push(tokio::spawn(async move {
            for round in 0..2 {
                let leadership =
                    client.election("chief").campaign(&format!("{candidate}/{round}")).await?;
                anyhow::ensure!(leading.fetch_add(1, Ordering::SeqCst) == 0, "two leaders");
                let (leader, term, _) = client.election("chief").leader().await?;
                anyhow::ensure!(leader == Some(client.session_id()) && term == leadership.term());
                terms.lock().expect("not poisoned").push(leadership.term());
                leading.fetch_sub(1, Ordering::SeqCst);
                leadership.resign().await?;
            }
            anyhow::Ok(())
        }));
    }
    for candidate in candidates {
        tokio::time::timeout(DEADLINE, candidate).await???;
    }
    let terms = terms.lock().expect("not poisoned").clone();
    assert_eq!(terms, (1..=10).collect::<Vec<u64>>(), "terms in leadership order");
    Ok(())
}

/// Readers share, writers are alone, and a waiting writer holds later readers back.
#[tokio::test(flavor = "multi_thread")]
async fn rw_lock_readers_share_and_writers_are_alone() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let (one, two, writer, late) =
        (node.client().await?, node.client().await?, node.client().await?, node.client().await?);
    let read_one = one.rw_lock("doc").read().await?;
    let read_two = two.rw_lock("doc").read().await?;
    assert!(read_two.token() > read_one.token());
    assert!(writer.rw_lock("doc").try_write().await?.is_none(), "readers hold it");
    let writing = tokio::spawn(async move {
        let guard = writer.rw_lock("doc").write().await;
        (guard, writer)
    });
    let observer = node.client().await?;
    wait_for("the writer to queue", DEADLINE, || async {
        observer.rw_lock("doc").status().await.is_ok_and(|s| s.queue.len() == 1)
    })
    .await?;
    assert!(late.rw_lock("doc").try_read().await?.is_none(), "a reader may not pass the writer");
    read_one.release().await?;
    read_two.release().await?;
    let (guard, writer) = tokio::time::timeout(DEADLINE, writing).await??;
    let mut guard = guard?;
    assert_eq!(guard.access(), Access::Write);
    let status = observer.rw_lock("doc").status().await?;
    assert_eq!(status.holders, [(writer.session_id(), Access::Write)]);
    // Downgraded, the writer reads alongside others.
    guard.downgrade().await?;
    let shared = late.rw_lock("doc").read().await?;
    assert_eq!(observer.rw_lock("doc").status().await?.holders.len(), 2);
    shared.release().await?;
    guard.release().await?;
    Ok(())
}

/// Producers put 60 items, consumers take and ack them, and one consumer dies holding items it
/// never acked: every item is acked exactly once, the dead consumer's after it is gone.
#[tokio::test(flavor = "multi_thread")]
async fn queue_loses_nothing_and_redelivers_unacked_items() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let doomed = short_session(&node).await?;
    let producer = node.client().await?;
    for item in 0..10 {
        producer.queue("work").put(&format!("early-{item}")).await?;
    }
    // The doomed consumer takes three items and dies without acking them (raw calls: the typed
    // handle would put them back when dropped).
    let mut lost = BTreeSet::new();
    for _ in 0..3 {
        let take = br#"{"queue":"work","wait":false}"#.to_vec();
        let item: serde_json::Value =
            serde_json::from_slice(&doomed.invoke("queue", None, "take", take).await?)?;
        lost.insert(item["data"].as_str().expect("an item").to_string());
    }
    drop(doomed);

    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let client = node.client().await?;
        let acked = acked.clone();
        consumers.push(tokio::spawn(async move {
            loop {
                let item = client.queue("work").take().await?;
                if item.data() == "stop" {
                    item.ack().await?;
                    return anyhow::Ok(());
                }
                acked.lock().expect("not poisoned").push(item.data().to_string());
                item.ack().await?;
            }
        }));
    }
    let mut producers = Vec::new();
    for producer in 0..2 {
        let client = node.client().await?;
        producers.push(tokio::spawn(async move {
            for item in 0..25 {
                client.queue("work").put(&format!("late-{producer}-{item}")).await?;
            }
            anyhow::Ok(())
        }));
    }
    for producer in producers {
        tokio::time::timeout(DEADLINE, producer).await???;
    }
    let expected: BTreeSet<String> = (0..10)
        .map(|i| format!("early-{i}"))
        .chain((0..2).flat_map(|p| (0..25).map(move |i| format!("late-{p}-{i}"))))
        .collect();
    wait_for("every item acked", DEADLINE, || async {
        acked.lock().expect("not poisoned").len() >= expected.len()
    })
    .await?;
    // Stop the consumers after everything else (priority -1 would jump the line; 0 queues last).
    for _ in 0..3 {
        producer.queue("work").put("stop").await?;
    }
    for consumer in consumers {
        tokio::time::timeout(DEADLINE, consumer).await???;
    }
    let acked = acked.lock().expect("not poisoned").clone();
    let once: BTreeSet<String> = acked.iter().cloned().collect();
    assert_eq!(acked.len(), once.len(), "nothing acked twice");
    assert_eq!(once, expected, "nothing lost");
    assert!(lost.is_subset(&once), "the dead consumer's items were delivered again");
    let status = producer.queue("work").status().await?;
    assert_eq!((status.ready, status.taken), (0, 0));
    Ok(())
}

/// Nobody passes `enter` until all three have entered, nor `leave` until all three leave.
#[tokio::test(flavor = "multi_thread")]
async fn barrier_holds_everyone_until_all_arrive_and_all_finish() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let observer = node.client().await?;
    let status = |field: &'static str, want: u64| {
        let observer = observer.clone();
        async move {
            let reply = observer
                .invoke("barrier", None, "status", br#"{"barrier":"b"}"#.to_vec())
                .await
                .ok()
                .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r).ok());
            reply.is_some_and(|r| r[field] == want)
        }
    };
    let mut members = Vec::new();
    for _ in 0..2 {
        let client = node.client().await?;
        members.push(tokio::spawn(async move {
            let round = client.barrier("b", 3).enter().await?;
            anyhow::Ok((round, client))
        }));
    }
    wait_for("two members in", DEADLINE, || status("members", 2)).await?;
    assert!(members.iter().all(|m| !m.is_finished()), "nobody starts with two of three");
    let last = node.client().await?;
    let last_round = last.barrier("b", 3).enter().await?;
    let mut rounds = Vec::new();
    for member in members {
        rounds.push(tokio::time::timeout(DEADLINE, member).await???);
    }
    assert!(rounds.iter().all(|(round, _)| round.round() == 1));
    let mut leaving = Vec::new();
    for (round, _client) in rounds {
        leaving.push(tokio::spawn(round.leave()));
    }
    wait_for("two members leaving", DEADLINE, || status("leaving", 2)).await?;
    assert!(leaving.iter().all(|l| !l.is_finished()), "nobody leaves before all are done");
    last_round.leave().await?;
    for leaver in leaving {
        tokio::time::timeout(DEADLINE, leaver).await???;
    }
    assert!(status("round", 2).await, "the barrier is ready for another round");
    Ok(())
}

/// An observer follows the leadership without standing: each new leader and term, in order.
#[tokio::test(flavor = "multi_thread")]
async fn observers_see_every_leader_change() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let (first, second, observer) =
        (node.client().await?, node.client().await?, node.client().await?);
    let mut leaders = observer.election("db").observe().await?;
    let none = leaders.next().await?;
    assert_eq!((none.session, none.term), (None, 0));
    let leading = first.election("db").campaign("a").await?;
    let seen = tokio::time::timeout(DEADLINE, leaders.next()).await??;
    assert_eq!((seen.session, seen.term), (Some(first.session_id()), 1));
    assert_eq!(seen.data, "a");
    let next = {
        let second = second.clone();
        tokio::spawn(async move { second.election("db").campaign("b").await })
    };
    crate::wait_for_candidates(&observer, "db", 2).await?;
    drop(leading); // resigns in the background
    let seen = tokio::time::timeout(DEADLINE, leaders.next()).await??;
    assert_eq!(
        (seen.session, seen.term, seen.data.as_str()),
        (Some(second.session_id()), 2, Some("b"))
    );
    assert_eq!(tokio::time::timeout(DEADLINE, next).await???.term(), 2);
    Ok(())
}

/// Several locks in one log entry: all of them or none; and clients taking overlapping sets,
/// named in opposite orders, all get through (no deadlock) without two holders of any lock.
#[tokio::test(flavor = "multi_thread")]
async fn several_locks_at_once_all_or_none_and_no_deadlock() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let blocker = node.client().await?;
    let held_b = blocker.lock("b").acquire().await?;
    let observer = node.client().await?;
    assert!(observer.locks(&["a", "b"]).try_acquire().await?.is_none(), "b is held");
    assert_eq!(observer.lock("a").status().await?.holder, None, "a was not taken alone");

    let holders: Arc<Mutex<std::collections::BTreeMap<String, u64>>> = Arc::default();
    let tokens: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let sets: [&[&str]; 6] =
        [&["a", "b"], &["b", "a"], &["b", "c"], &["c", "a"], &["a", "b", "c"], &["c", "b"]];
    let mut workers = Vec::new();
    for (worker, set) in sets.into_iter().enumerate() {
        let client = node.client().await?;
        let (holders, tokens) = (holders.clone(), tokens.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..4 {
                let guard = client.locks(set).acquire().await?;
                {
                    let mut held = holders.lock().expect("not poisoned");
                    for (name, token) in guard.tokens() {
                        if let Some(other) = held.insert(name.clone(), worker as u64) {
                            anyhow::bail!("{name} granted to {worker} while {other} holds it");
                        }
                        tokens.lock().expect("not poisoned").push((name.clone(), *token));
                    }
                }
                tokio::task::yield_now().await;
                holders.lock().expect("not poisoned").retain(|_, w| *w != worker as u64);
                guard.release().await?;
            }
            anyhow::Ok(())
        }));
    }
    held_b.release().await?;
    for worker in workers {
        tokio::time::timeout(DEADLINE, worker).await???;
    }
    let tokens = tokens.lock().expect("not poisoned").clone();
    for lock in ["a", "b", "c"] {
        let of_lock: Vec<u64> = tokens.iter().filter(|(n, _)| n == lock).map(|(_, t)| *t).collect();
        assert!(of_lock.windows(2).all(|p| p[0] < p[1]), "{lock}: {of_lock:?}");
    }
    Ok(())
}
