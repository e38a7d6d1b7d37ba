//! The fair lock: first come, first served, with a fencing token on every grant.
//!
//! State, in the recipe's namespace: `/<lock>` holds `{"token": N}`, the last fencing token
//! granted (tokens come from the host's `fencing-token`, so they only grow, across all locks); its children `/<lock>/w-<session>-<seq>` (the session in 16 hex digits, then the
//! sequence number the store appends) are the waiters in arrival order, each an ephemeral znode
//! of the waiting session holding `{"session": S, "count": C, "token": T}`. The first child holds
//! the lock. The queue's order and every waiter's session come from the names alone, so a grant
//! or a release reads one or two records whatever the length of the queue. Because waiters are
//! ephemeral, a session that ends leaves the queue in the same log entry, and the hook grants
//! the next waiter there and then.
//!
//! Ops (JSON in, JSON out):
//! - `acquire {"lock": L, "wait": true}` → `{"granted": true, "token": T}` or, queued,
//!   `{"granted": false, "position": P}`; the waiter is notified `{"lock": L, "token": T}` when
//!   granted. With `"wait": false` a busy lock answers `{"granted": false}` and queues nothing.
//!   Acquiring a lock the session holds counts one more hold (re-entrant per session).
//! - `release {"lock": L}` → `{"released": true, "holds": C}` (C holds left); the last release
//!   grants the next waiter.
//! - `status {"lock": L}` → `{"holder": S or null, "token": T, "queue": [S...]}`.
//! - `acquire-all {"locks": [L...], "wait": true}` → `{"granted": true, "tokens": {L: T...}}` or
//!   `{"granted": false}`: several locks in one log entry, all or none. Waiting, the session
//!   joins every lock's queue in that one entry and is granted all of them at once when it is
//!   first in each (notified `{"locks": {L: T...}}`). Joining all queues in one entry keeps every
//!   two waiters in the same order in every queue they share, so waiters for overlapping sets
//!   of locks never wait for each other in a cycle: no deadlock, whatever the order of names.
//!   With `"wait": false` nothing is queued unless all are free.
//! - `release-all {"locks": [L...]}` → `{"released": true}`.

use cairn_recipe::{Host, Mode, Recipe, StoreError, records};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug)]
pub struct FairLock;

#[derive(Deserialize)]
struct Args {
    lock: String,
    #[serde(default = "yes")]
    wait: bool,
}

#[derive(Deserialize)]
struct AllArgs {
    locks: Vec<String>,
    #[serde(default = "yes")]
    wait: bool,
}

/// Locks one `acquire-all` may take.
const LOCKS_PER_CALL_MAX: usize = 64;

fn yes() -> bool {
    true
}

/// A waiter's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Waiter {
    session: u64,
    /// Holds taken by the session (re-entrant acquires); 0 while waiting.
    count: u32,
    /// The fencing token of the grant; 0 while waiting.
    token: u64,
    /// For `acquire-all`: every lock of the group (this one included), granted together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    all: Vec<String>,
}

fn error(e: StoreError) -> String {
    e.to_string()
}

fn lock_path(lock: &str) -> Result<String, String> {
    records::entity_path("lock", lock)
}

/// The path prefix of `session`'s waiter in `lock`'s queue; the store appends the sequence.
fn waiter_prefix(lock: &str, session: u64) -> String {
    format!("{lock}/w-{session:016x}-")
}

/// The queue in arrival order: (path, session) of each waiter, from the names alone.
fn queue(host: &mut dyn Host, lock: &str) -> Result<Vec<(String, u64)>, String> {
    let names = match host.children(lock) {
        Ok(names) => names,
        Err(StoreError::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(error(e)),
    };
    let mut waiters: Vec<(String, String, u64)> = names
        .into_iter()
        .filter_map(|name| {
            let (session, sequence) = name.strip_prefix("w-")?.split_once('-')?;
            let session = u64::from_str_radix(session, 16).ok()?;
            Some((sequence.to_string(), format!("{lock}/{name}"), session))
        })
        .collect();
    // Sequence numbers have a fixed width: their text order is their order.
    waiters.sort_unstable();
    Ok(waiters.into_iter().map(|(_, path, session)| (path, session)).collect())
}

/// A waiter's record.
fn record(host: &mut dyn Host, path: &str) -> Result<Waiter, String> {
    records::read(host, path)?.ok_or_else(|| format!("{path} vanished"))
}

/// The first waiter of `lock`'s queue, with its record.
fn head(host: &mut dyn Host, lock: &str) -> Result<Option<(String, Waiter)>, String> {
    let Some((path, _)) = queue(host, lock)?.into_iter().next() else { return Ok(None) };
    let waiter = record(host, &path)?;
    Ok(Some((path, waiter)))
}

fn last_token(host: &mut dyn Host, lock: &str) -> Result<u64, String> {
    match host.read(lock).map_err(error)? {
        Some(data) if !data.is_empty() => {
            let state: serde_json::Value =
                serde_json::from_slice(&data).map_err(|e| e.to_string())?;
            Ok(state["token"].as_u64().unwrap_or(0))
        }
        _ => Ok(0),
    }
}

/// Takes the next fencing token and records `waiter` (its head) as holding it. Tokens come from
/// the host, never from the lock's own record: no version of this recipe that rewrites the
/// record can make a later grant's token smaller.
fn take(host: &mut dyn Host, lock: &str, path: &str, mut waiter: Waiter) -> Result<u64, String> {
    let token = host.fencing_token();
    host.set(lock, json!({ "token": token }).to_string().as_bytes(), None).map_err(error)?;
    waiter.count = 1;
    waiter.token = token;
    records::write(host, path, &waiter)?;
    Ok(token)
}

/// The head of `lock`'s queue, with its record, if it is `session`'s.
fn own_head(
    host: &mut dyn Host,
    lock: &str,
    session: u64,
) -> Result<Option<(String, Waiter)>, String> {
    match queue(host, lock)?.into_iter().next() {
        Some((path, first)) if first == session => {
            let waiter = record(host, &path)?;
            Ok(Some((path, waiter)))
        }
        _ => Ok(None),
    }
}

/// The head of `lock`'s queue if it is `session`'s waiting record.
fn waiting_head(
    host: &mut dyn Host,
    lock: &str,
    session: u64,
) -> Result<Option<(String, Waiter)>, String> {
    Ok(own_head(host, lock, session)?.filter(|(_, waiter)| waiter.count == 0))
}

/// Grants the head of the queue if it is waiting: the next token, recorded and notified. A head
/// waiting for a group of locks is granted only when it heads every queue of the group, and then
/// all of them at once.
fn grant_head(host: &mut dyn Host, lock_name: &str, lock: &str) -> Result<Option<u64>, String> {
    let Some((path, head)) = head(host, lock)? else { return Ok(None) };
    if head.count > 0 {
        return Ok(Some(head.token));
    }
    if head.all.is_empty() {
        let session = head.session;
        let token = take(host, lock, &path, head)?;
        host.notify(session, json!({ "lock": lock_name, "token": token }).to_string().as_bytes());
        return Ok(Some(token));
    }
    let (session, group) = (head.session, head.all.clone());
    let mut heads = Vec::with_capacity(group.len());
    for name in &group {
        let other = lock_path(name)?;
        match waiting_head(host, &other, session)? {
            Some((path, waiter)) => heads.push((name.clone(), other, path, waiter)),
            None => return Ok(None),
        }
    }
    let mut tokens = serde_json::Map::new();
    for (name, other, path, waiter) in heads {
        tokens.insert(name, json!(take(host, &other, &path, waiter)?));
    }
    let token = tokens.get(lock_name).and_then(|t| t.as_u64());
    host.notify(session, json!({ "locks": tokens }).to_string().as_bytes());
    Ok(token)
}

/// `acquire-all`: joins every queue in this one entry, and takes all the locks if they are free.
fn acquire_all(host: &mut dyn Host, args: &[u8]) -> Result<serde_json::Value, String> {
    let args: AllArgs = serde_json::from_slice(args).map_err(|e| format!("bad arguments: {e}"))?;
    let session = host.caller_session("acquire-all")?;
    let mut names = args.locks;
    names.sort();
    names.dedup();
    if names.is_empty() || names.len() > LOCKS_PER_CALL_MAX {
        return Err(format!("acquire-all takes 1 to {LOCKS_PER_CALL_MAX} locks"));
    }
    let mut free = true;
    for name in &names {
        let lock = lock_path(name)?;
        let waiters = queue(host, &lock)?;
        if waiters.iter().any(|(_, waiter)| *waiter == session) {
            return Err(format!("session {session:#x} already holds or waits for {name}"));
        }
        free &= waiters.is_empty();
    }
    if !free && !args.wait {
        return Ok(json!({ "granted": false }));
    }
    for name in &names {
        let lock = lock_path(name)?;
        if host.read(&lock).map_err(error)?.is_none() {
            records::create(host, &lock, &json!({ "token": 0 }), Mode::Persistent, false)?;
        }
        let record = Waiter { session, count: 0, token: 0, all: names.clone() };
        records::create(host, &waiter_prefix(&lock, session), &record, Mode::Ephemeral, true)?;
    }
    let first = &names[0];
    grant_head(host, first, &lock_path(first)?)?;
    let mut tokens = serde_json::Map::new();
    for name in &names {
        match head(host, &lock_path(name)?)? {
            Some((_, head)) if head.session == session && head.count > 0 => {
                tokens.insert(name.clone(), json!(head.token));
            }
            _ => return Ok(json!({ "granted": false })),
        }
    }
    // The caller learns from the reply; the notification the grant queued says the same.
    Ok(json!({ "granted": true, "tokens": tokens }))
}

/// `release-all`: one hold of each lock, each handed on.
fn release_all(host: &mut dyn Host, args: &[u8]) -> Result<serde_json::Value, String> {
    let args: AllArgs = serde_json::from_slice(args).map_err(|e| format!("bad arguments: {e}"))?;
    for name in &args.locks {
        let one = json!({ "lock": name }).to_string();
        FairLock::invoke(host, "release", one.as_bytes())?;
    }
    Ok(json!({ "released": true }))
}

impl Recipe for FairLock {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        match op {
            "acquire-all" => return Ok(acquire_all(host, args)?.to_string().into_bytes()),
            "release-all" => return Ok(release_all(host, args)?.to_string().into_bytes()),
            _ => {}
        }
        let args: Args = serde_json::from_slice(args).map_err(|e| format!("bad arguments: {e}"))?;
        let lock = lock_path(&args.lock)?;
        let session = host.session();
        let reply = match op {
            "acquire" => {
                let session = host.caller_session("acquire")?;
                let waiters = queue(host, &lock)?;
                if let Some(position) = waiters.iter().position(|(_, waiter)| *waiter == session) {
                    let held = match &waiters[0] {
                        (path, _) if position == 0 => Some((path.clone(), record(host, path)?))
                            .filter(|(_, waiter)| waiter.count > 0),
                        _ => None,
                    };
                    if let Some((path, waiter)) = &held {
                        let again = Waiter { count: waiter.count + 1, ..waiter.clone() };
                        host.set(
                            path,
                            &serde_json::to_vec(&again).map_err(|e| e.to_string())?,
                            None,
                        )
                        .map_err(error)?;
                        json!({ "granted": true, "token": waiter.token, "holds": again.count })
                    } else {
                        json!({ "granted": false, "position": position })
                    }
                } else if !waiters.is_empty() && !args.wait {
                    json!({ "granted": false })
                } else {
                    // A queue with waiters has its lock's znode already.
                    if waiters.is_empty() && host.read(&lock).map_err(error)?.is_none() {
                        host.create(
                            &lock,
                            json!({ "token": 0 }).to_string().as_bytes(),
                            Mode::Persistent,
                            false,
                        )
                        .map_err(error)?;
                    }
                    let record = Waiter { session, count: 0, token: 0, all: Vec::new() };
                    let record = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
                    host.create(&waiter_prefix(&lock, session), &record, Mode::Ephemeral, true)
                        .map_err(error)?;
                    if waiters.is_empty() {
                        let token =
                            grant_head(host, &args.lock, &lock)?.ok_or("granted nothing")?;
                        json!({ "granted": true, "token": token, "holds": 1 })
                    } else {
                        json!({ "granted": false, "position": waiters.len() })
                    }
                }
            }
            "release" => match &own_head(host, &lock, session)? {
                Some((path, head)) if head.count > 0 => {
                    if head.count > 1 {
                        let fewer = Waiter { count: head.count - 1, ..head.clone() };
                        host.set(
                            path,
                            &serde_json::to_vec(&fewer).map_err(|e| e.to_string())?,
                            None,
                        )
                        .map_err(error)?;
                        json!({ "released": true, "holds": fewer.count })
                    } else {
                        host.delete(path, None).map_err(error)?;
                        grant_head(host, &args.lock, &lock)?;
                        json!({ "released": true, "holds": 0 })
                    }
                }
                _ => return Err(format!("session {session:#x} does not hold {}", args.lock)),
            },
            "status" => {
                let waiters = queue(host, &lock)?;
                let holder =
                    head(host, &lock)?.filter(|(_, w)| w.count > 0).map(|(_, w)| w.session);
                let queue: Vec<u64> = waiters
                    .iter()
                    .skip(usize::from(holder.is_some()))
                    .map(|(_, session)| *session)
                    .collect();
                json!({ "holder": holder, "token": last_token(host, &lock)?, "queue": queue })
            }
            other => {
                return Err(format!(
                    "unknown op {other:?}; fair-lock knows acquire, release, status, acquire-all, \
                     release-all"
                ));
            }
        };
        Ok(reply.to_string().into_bytes())
    }

    fn on_session_ended(host: &mut dyn Host, _session: u64, deleted: Vec<String>) {
        // Each lock that lost a waiter may have lost its holder: grant whoever is first now.
        for lock in records::parents(&deleted) {
            let name = lock.trim_start_matches('/').to_string();
            let _ = grant_head(host, &name, &lock);
        }
    }
}

cairn_recipe::export!(FairLock);

#[cfg(test)]
mod tests {
    use cairn_recipe::testing::MemoryHost;

    use super::*;

    fn call(
        host: &mut MemoryHost,
        session: u64,
        op: &str,
        args: serde_json::Value,
    ) -> serde_json::Value {
        let reply = host.invoke::<FairLock>(session, op, args.to_string().as_bytes()).expect(op);
        serde_json::from_slice(&reply).expect("json")
    }

    #[test]
    fn fifo_grants_with_increasing_tokens() {
        let mut host = MemoryHost::default();
        let lock = json!({"lock": "l"});
        assert_eq!(
            call(&mut host, 1, "acquire", lock.clone()),
            json!({"granted": true, "token": 1, "holds": 1})
        );
        assert_eq!(
            call(&mut host, 2, "acquire", lock.clone()),
            json!({"granted": false, "position": 1})
        );
        assert_eq!(
            call(&mut host, 3, "acquire", lock.clone()),
            json!({"granted": false, "position": 2})
        );
        assert_eq!(
            call(&mut host, 4, "acquire", json!({"lock": "l", "wait": false})),
            json!({"granted": false})
        );
        // Re-entrant for the holder's session.
        assert_eq!(
            call(&mut host, 1, "acquire", lock.clone()),
            json!({"granted": true, "token": 1, "holds": 2})
        );
        assert_eq!(
            call(&mut host, 1, "release", lock.clone()),
            json!({"released": true, "holds": 1})
        );
        assert_eq!(
            call(&mut host, 1, "release", lock.clone()),
            json!({"released": true, "holds": 0})
        );
        // Session 2 is next, and told so.
        assert_eq!(host.notifications.last(), Some(&(2, br#"{"lock":"l","token":2}"#.to_vec())));
        assert_eq!(
            call(&mut host, 9, "status", lock.clone()),
            json!({"holder": 2, "token": 2, "queue": [3]})
        );
        assert!(
            host.invoke::<FairLock>(3, "release", lock.to_string().as_bytes()).is_err(),
            "3 does not hold it"
        );
    }

    #[test]
    fn a_holder_whose_session_ends_hands_the_lock_on() {
        let mut host = MemoryHost::default();
        let lock = json!({"lock": "l"});
        call(&mut host, 1, "acquire", lock.clone());
        call(&mut host, 2, "acquire", lock.clone());
        host.end_session::<FairLock>(1);
        assert_eq!(
            call(&mut host, 9, "status", lock.clone()),
            json!({"holder": 2, "token": 2, "queue": []})
        );
        assert_eq!(host.notifications.last(), Some(&(2, br#"{"lock":"l","token":2}"#.to_vec())));
        // A waiter that goes away just leaves the queue.
        call(&mut host, 3, "acquire", lock.clone());
        call(&mut host, 4, "acquire", lock.clone());
        host.end_session::<FairLock>(3);
        assert_eq!(
            call(&mut host, 9, "status", lock),
            json!({"holder": 2, "token": 2, "queue": [4]})
        );
    }

    #[test]
    fn several_locks_at_once_or_none() {
        let mut host = MemoryHost::default();
        call(&mut host, 1, "acquire", json!({"lock": "b"}));
        // b is held: with no waiting, neither a nor b is taken or queued for.
        assert_eq!(
            call(&mut host, 2, "acquire-all", json!({"locks": ["a", "b"], "wait": false})),
            json!({"granted": false})
        );
        assert_eq!(call(&mut host, 9, "status", json!({"lock": "a"}))["holder"], json!(null));
        // Waiting, 2 queues for both and is granted both when b is released.
        assert_eq!(
            call(&mut host, 2, "acquire-all", json!({"locks": ["b", "a"]})),
            json!({"granted": false})
        );
        assert_eq!(call(&mut host, 3, "acquire", json!({"lock": "a"}))["granted"], false);
        call(&mut host, 1, "release", json!({"lock": "b"}));
        // Tokens come from the host's one counter: 1 went to session 1's hold of b.
        assert_eq!(host.notifications.last(), Some(&(2, br#"{"locks":{"a":2,"b":3}}"#.to_vec())));
        assert_eq!(call(&mut host, 9, "status", json!({"lock": "a"}))["holder"], 2);
        assert_eq!(
            call(&mut host, 2, "release-all", json!({"locks": ["a", "b"]})),
            json!({"released": true})
        );
        assert_eq!(call(&mut host, 9, "status", json!({"lock": "a"}))["holder"], 3);
    }

    #[test]
    fn overlapping_groups_never_wait_for_each_other() {
        let mut host = MemoryHost::default();
        call(&mut host, 1, "acquire", json!({"lock": "x"}));
        // 2 wants x and y, 3 wants y and x: both queue in the same order everywhere.
        call(&mut host, 2, "acquire-all", json!({"locks": ["x", "y"]}));
        call(&mut host, 3, "acquire-all", json!({"locks": ["y", "x"]}));
        host.end_session::<FairLock>(1);
        assert_eq!(call(&mut host, 9, "status", json!({"lock": "y"}))["holder"], 2);
        host.end_session::<FairLock>(2);
        assert_eq!(call(&mut host, 9, "status", json!({"lock": "x"}))["holder"], 3);
        assert_eq!(call(&mut host, 9, "status", json!({"lock": "y"}))["holder"], 3);
    }
}
