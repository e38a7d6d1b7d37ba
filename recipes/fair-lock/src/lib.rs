//! The fair lock: first come, first served, with a fencing token on every grant.
//!
//! State, in the recipe's namespace: `/<lock>` holds `{"token": N}`, the last fencing token
//! granted (tokens come from the host's `fencing-token`, so they only grow, across all
//! locks); its children `/<lock>/w-<session>-<seq>` (the session in 16 hex digits, then the
//! sequence number the store appends) are the waiters in arrival order, each an ephemeral znode
//! of the waiting session holding `{"session": S, "count": C, "token": T}`. The first child holds
//! the lock. The queue's order and every waiter's session come from the names alone, and the
//! host looks up the head (`first-sequential`) and a session's own waiter
//! (`children-with-prefix`) without copying the queue into the recipe, so an acquire, a grant
//! or a release costs the same whatever the length of the queue (only `status`, and an
//! acquire by a session already waiting, list it). Because waiters are
//! ephemeral, a session that ends leaves the queue in the same log entry, and the hook grants
//! the next waiter there and then.
//!
//! Ops, answers, notifications and records are `cairn_builtins::fair_lock`'s types (see
//! `sdk/wire/RECIPES.md` for the protocol in words).

use cairn_builtins::fair_lock::{
    Acquire, AcquireAll, AcquireAllReply, AcquireReply, Granted, GrantedAll, LOCKS_PER_CALL_MAX,
    LockRecord, Release, ReleaseAll, ReleaseAllReply, ReleaseReply, Status, StatusReply, Waiter,
    parse_waiter, waiter_prefix,
};
use cairn_builtins::{Op, encode, serve};
use cairn_recipe::{Host, Mode, Recipe, StoreError, records};

#[derive(Debug)]
pub struct FairLock;

fn error(e: StoreError) -> String {
    e.to_string()
}

fn lock_path(lock: &str) -> Result<String, String> {
    records::entity_path("lock", lock)
}

/// The path prefix of `session`'s waiter in `lock`'s queue; the store appends the sequence.
fn waiter_path(lock: &str, session: u64) -> String {
    format!("{lock}/{}", waiter_prefix(session))
}

/// The queue in arrival order: (path, session) of each waiter, from the names alone.
fn queue(host: &mut dyn Host, lock: &str) -> Result<Vec<(String, u64)>, String> {
    let names = match host.children(lock) {
        Ok(names) => names,
        Err(StoreError::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(error(e)),
    };
    let mut waiters: Vec<(String, String, u64)> = names
        .iter()
        .filter_map(|name| {
            let (session, sequence) = parse_waiter(name)?;
            Some((sequence.to_string(), format!("{lock}/{name}"), session))
        })
        .collect();
    waiters.sort_unstable();
    Ok(waiters.into_iter().map(|(_, path, session)| (path, session)).collect())
}

/// How many waiters `lock` has (every child of a lock is a waiter); 0 for a lock never taken.
fn waiters(host: &mut dyn Host, lock: &str) -> Result<u64, String> {
    match host.get(lock) {
        Ok((_, stat)) => Ok(u64::from(stat.num_children)),
        Err(StoreError::NoNode) => Ok(0),
        Err(e) => Err(error(e)),
    }
}

/// The path of `session`'s waiter in `lock`'s queue, if it has one.
fn own(host: &mut dyn Host, lock: &str, session: u64) -> Result<Option<String>, String> {
    match host.children_with_prefix(lock, &waiter_prefix(session), 1) {
        Ok(names) => Ok(names.into_iter().next().map(|name| format!("{lock}/{name}"))),
        Err(StoreError::NoNode) => Ok(None),
        Err(e) => Err(error(e)),
    }
}

/// A waiter's record.
fn record(host: &mut dyn Host, path: &str) -> Result<Waiter, String> {
    records::read(host, path)?.ok_or_else(|| format!("{path} vanished"))
}

/// The first waiter of `lock`'s queue, with its record.
fn head(host: &mut dyn Host, lock: &str) -> Result<Option<(String, Waiter)>, String> {
    let first = match host.first_sequential(lock) {
        Ok(first) => first,
        Err(StoreError::NoNode) => None,
        Err(e) => return Err(error(e)),
    };
    let Some(name) = first.filter(|name| parse_waiter(name).is_some()) else { return Ok(None) };
    let path = format!("{lock}/{name}");
    let waiter = record(host, &path)?;
    Ok(Some((path, waiter)))
}

/// The last token granted for `lock`: 0 for a lock never taken.
fn last_token(host: &mut dyn Host, lock: &str) -> Result<u64, String> {
    Ok(records::read::<LockRecord>(host, lock)?.map_or(0, |record| record.token))
}

/// Takes the next fencing token and records `waiter` (its head) as holding it. Tokens come from
/// the host, never from the lock's own record: no version of this recipe that rewrites the
/// record can make a later grant's token smaller.
fn take(host: &mut dyn Host, lock: &str, path: &str, mut waiter: Waiter) -> Result<u64, String> {
    let token = host.fencing_token();
    records::write(host, lock, &LockRecord { token })?;
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
    Ok(head(host, lock)?.filter(|(_, waiter)| waiter.session == session))
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
        host.notify(session, &encode(&Granted { lock: lock_name.to_string(), token }));
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
    let mut locks = std::collections::BTreeMap::new();
    for (name, other, path, waiter) in heads {
        locks.insert(name, take(host, &other, &path, waiter)?);
    }
    let token = locks.get(lock_name).copied();
    host.notify(session, &encode(&GrantedAll { locks }));
    Ok(token)
}

/// Creates `lock`'s own znode if it is not there yet.
fn ensure_lock(host: &mut dyn Host, lock: &str) -> Result<(), String> {
    if host.read(lock).map_err(error)?.is_none() {
        records::create(host, lock, &LockRecord { token: 0 }, Mode::Persistent, false)?;
    }
    Ok(())
}

/// `acquire`: the hold, the queue or busy.
fn acquire(host: &mut dyn Host, args: Acquire) -> Result<AcquireReply, String> {
    let lock = lock_path(&args.lock)?;
    let session = host.caller_session(Acquire::NAME)?;
    if let Some(path) = own(host, &lock, session)? {
        let waiter = record(host, &path)?;
        // Only the head is ever granted: a count above 0 is the hold.
        if waiter.count > 0 {
            let again = Waiter { count: waiter.count + 1, ..waiter };
            records::write(host, &path, &again)?;
            return Ok(AcquireReply::granted(again.token, again.count));
        }
        let position = queue(host, &lock)?.iter().position(|(queued, _)| *queued == path);
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        return Ok(AcquireReply::queued(position.unwrap_or_default() as u64, name));
    }
    let waiters = waiters(host, &lock)?;
    if waiters > 0 && !args.wait {
        return Ok(AcquireReply::busy());
    }
    // A queue with waiters has its lock's znode already.
    if waiters == 0 {
        ensure_lock(host, &lock)?;
    }
    let record = Waiter { session, count: 0, token: 0, all: Vec::new() };
    let created =
        records::create(host, &waiter_path(&lock, session), &record, Mode::Ephemeral, true)?;
    if waiters > 0 {
        let name = created.rsplit('/').next().unwrap_or_default().to_string();
        return Ok(AcquireReply::queued(waiters, name));
    }
    let token = grant_head(host, &args.lock, &lock)?.ok_or("granted nothing")?;
    Ok(AcquireReply::granted(token, 1))
}

/// `release`: one hold; the last one hands the lock on.
fn release(host: &mut dyn Host, args: Release) -> Result<ReleaseReply, String> {
    let lock = lock_path(&args.lock)?;
    let session = host.session();
    let Some((path, head)) = own_head(host, &lock, session)?.filter(|(_, head)| head.count > 0)
    else {
        return Err(format!("session {session:#x} does not hold {}", args.lock));
    };
    if head.count > 1 {
        let fewer = Waiter { count: head.count - 1, ..head };
        records::write(host, &path, &fewer)?;
        return Ok(ReleaseReply { released: true, holds: fewer.count });
    }
    host.delete(&path, None).map_err(error)?;
    grant_head(host, &args.lock, &lock)?;
    Ok(ReleaseReply { released: true, holds: 0 })
}

/// `status`: the holder, the last token and the waiters.
fn status(host: &mut dyn Host, args: Status) -> Result<StatusReply, String> {
    let lock = lock_path(&args.lock)?;
    let waiters = queue(host, &lock)?;
    let holder = head(host, &lock)?.filter(|(_, w)| w.count > 0).map(|(_, w)| w.session);
    let queue =
        waiters.iter().skip(usize::from(holder.is_some())).map(|(_, session)| *session).collect();
    Ok(StatusReply { holder, token: last_token(host, &lock)?, queue })
}

/// `acquire-all`: joins every queue in this one entry, and takes all the locks if they are free.
fn acquire_all(host: &mut dyn Host, args: AcquireAll) -> Result<AcquireAllReply, String> {
    let session = host.caller_session(AcquireAll::NAME)?;
    let mut names = args.locks;
    names.sort();
    names.dedup();
    if names.is_empty() || names.len() > LOCKS_PER_CALL_MAX {
        return Err(format!("acquire-all takes 1 to {LOCKS_PER_CALL_MAX} locks"));
    }
    let refused = AcquireAllReply { granted: false, tokens: None };
    let mut free = true;
    for name in &names {
        let lock = lock_path(name)?;
        if own(host, &lock, session)?.is_some() {
            return Err(format!("session {session:#x} already holds or waits for {name}"));
        }
        free &= waiters(host, &lock)? == 0;
    }
    if !free && !args.wait {
        return Ok(refused);
    }
    for name in &names {
        let lock = lock_path(name)?;
        ensure_lock(host, &lock)?;
        let record = Waiter { session, count: 0, token: 0, all: names.clone() };
        records::create(host, &waiter_path(&lock, session), &record, Mode::Ephemeral, true)?;
    }
    let first = &names[0];
    grant_head(host, first, &lock_path(first)?)?;
    let mut tokens = std::collections::BTreeMap::new();
    for name in &names {
        match head(host, &lock_path(name)?)? {
            Some((_, head)) if head.session == session && head.count > 0 => {
                tokens.insert(name.clone(), head.token);
            }
            _ => return Ok(refused),
        }
    }
    // The caller learns from the reply; the notification the grant queued says the same.
    Ok(AcquireAllReply { granted: true, tokens: Some(tokens) })
}

/// `release-all`: one hold of each lock, each handed on.
fn release_all(host: &mut dyn Host, args: ReleaseAll) -> Result<ReleaseAllReply, String> {
    for lock in args.locks {
        release(host, Release { lock })?;
    }
    Ok(ReleaseAllReply { released: true })
}

impl Recipe for FairLock {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        match op {
            Acquire::NAME => serve(args, |args| acquire(host, args)),
            Release::NAME => serve(args, |args| release(host, args)),
            Status::NAME => serve(args, |args| status(host, args)),
            AcquireAll::NAME => serve(args, |args| acquire_all(host, args)),
            ReleaseAll::NAME => serve(args, |args| release_all(host, args)),
            other => Err(format!(
                "unknown op {other:?}; fair-lock knows acquire, release, status, acquire-all, \
                 release-all"
            )),
        }
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
    use serde_json::json;

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
            json!({"granted": false, "position": 1, "waiter": "w-0000000000000002-0000000001"})
        );
        assert_eq!(
            call(&mut host, 3, "acquire", lock.clone()),
            json!({"granted": false, "position": 2, "waiter": "w-0000000000000003-0000000002"})
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
    fn a_long_queue_is_served_in_order_without_being_listed() {
        let mut host = MemoryHost::default();
        let lock = json!({"lock": "l"});
        const WAITERS: u64 = 300;
        for session in 1..=WAITERS {
            let reply = call(&mut host, session, "acquire", lock.clone());
            assert_eq!(reply["granted"], session == 1, "{reply}");
        }
        let last = call(&mut host, WAITERS, "acquire", lock.clone());
        assert_eq!(last["position"], WAITERS - 1, "asked again: still in line");
        let listed = host.listings;
        // Every hand-off reads the head and the holder's own waiter, never the whole line.
        for session in 1..=WAITERS {
            let released = call(&mut host, session, "release", lock.clone());
            assert_eq!(released, json!({"released": true, "holds": 0}));
            if session < WAITERS {
                let granted = &host.notifications.last().expect("a grant").0;
                assert_eq!(*granted, session + 1, "granted in arrival order");
            }
        }
        call(&mut host, 1, "acquire", lock.clone());
        host.end_session::<FairLock>(1);
        assert_eq!(host.listings, listed, "no call listed the queue");
        assert_eq!(
            call(&mut host, 9, "status", lock),
            json!({"holder": null, "token": WAITERS + 1, "queue": []})
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
