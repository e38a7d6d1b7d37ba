//! The read-write lock: many readers or one writer, granted in arrival order so a writer is never
//! starved by a stream of readers, with a fencing token on every grant.
//!
//! State: `/<lock>` holds `{"token": N}`, the last token granted; its children `/<lock>/w-<seq>`
//! are requests in arrival order, each an ephemeral znode of the requesting session holding
//! `{"session": S, "mode": "read"|"write", "count": C, "token": T}` (`count` 0 while waiting).
//! A write is granted when it is first in line; a read when no write is ahead of it. A session
//! that ends leaves the line in the same log entry, and the hook grants whoever can go next.
//!
//! Ops, answers, notifications and records are `cairn_builtins::rw_lock`'s types (see
//! `sdk/wire/RECIPES.md` for the protocol in words).

use cairn_builtins::rw_lock::{
    Access, Acquire, AcquireReply, Downgrade, DowngradeReply, Granted, LockRecord, REQUEST_PREFIX,
    Release, ReleaseReply, Request, Status, StatusEntry, StatusReply,
};
use cairn_builtins::{Op, encode, serve};
use cairn_recipe::{Host, Mode, Recipe, StoreError, records};

#[derive(Debug)]
pub struct RwLock;

fn error(e: StoreError) -> String {
    e.to_string()
}

fn lock_path(lock: &str) -> Result<String, String> {
    records::entity_path("lock", lock)
}

fn requests(host: &mut dyn Host, lock: &str) -> Result<Vec<(String, Request)>, String> {
    records::children(host, lock)
}

/// The next fencing token, from the host (never from the lock's own record, which another
/// version of this recipe could rewrite), recorded as the lock's last.
fn next_token(host: &mut dyn Host, lock: &str) -> Result<u64, String> {
    let token = host.fencing_token();
    records::write(host, lock, &LockRecord { token })?;
    Ok(token)
}

/// Grants, in order, every waiting request that can go now; notifies each except `quiet` (the
/// caller, who learns from its reply).
fn grant(host: &mut dyn Host, name: &str, lock: &str, quiet: u64) -> Result<(), String> {
    for (index, (path, request)) in requests(host, lock)?.into_iter().enumerate() {
        let can_go = request.mode == Access::Read || index == 0;
        if !can_go {
            break;
        }
        if request.count == 0 {
            let token = next_token(host, lock)?;
            let granted = Request { count: 1, token, ..request };
            records::write(host, &path, &granted)?;
            if granted.session != quiet {
                let note = Granted { lock: name.to_string(), mode: granted.mode, token };
                host.notify(granted.session, &encode(&note));
            }
        }
        if request.mode == Access::Write {
            break;
        }
    }
    Ok(())
}

fn granted(request: &Request) -> AcquireReply {
    AcquireReply::granted(request.mode, request.token, request.count)
}

/// `acquire`: a hold (again, for a holder), a place in line or busy.
fn acquire(host: &mut dyn Host, args: Acquire) -> Result<AcquireReply, String> {
    let lock = lock_path(&args.lock)?;
    let line = requests(host, &lock)?;
    let Some(mode) = args.mode else {
        return Err("acquire needs a mode: \"read\" or \"write\"".into());
    };
    let session = host.caller_session(Acquire::NAME)?;
    if let Some(position) = line.iter().position(|(_, r)| r.session == session) {
        let (path, held) = &line[position];
        if held.count == 0 {
            return Ok(AcquireReply::queued(position as u64));
        }
        if held.mode == Access::Read && mode == Access::Write {
            return Err(format!(
                "session {session:#x} reads {}: release it before writing (upgrades can deadlock)",
                args.lock
            ));
        }
        let again = Request { count: held.count + 1, ..held.clone() };
        records::write(host, path, &again)?;
        return Ok(granted(&again));
    }
    let free_now = match mode {
        Access::Write => line.is_empty(),
        Access::Read => line.iter().all(|(_, r)| r.mode == Access::Read),
    };
    if !free_now && !args.wait {
        return Ok(AcquireReply::busy());
    }
    if host.read(&lock).map_err(error)?.is_none() {
        records::create(host, &lock, &LockRecord { token: 0 }, Mode::Persistent, false)?;
    }
    let request = Request { session, mode, count: 0, token: 0 };
    let path = records::create(
        host,
        &format!("{lock}/{REQUEST_PREFIX}"),
        &request,
        Mode::Ephemeral,
        true,
    )?;
    grant(host, &args.lock, &lock, session)?;
    let now: Request = records::read(host, &path)?.ok_or("lost a request")?;
    if now.count > 0 {
        return Ok(granted(&now));
    }
    Ok(AcquireReply::queued(line.len() as u64))
}

/// `release`: one hold; the last one lets in whoever can go next.
fn release(host: &mut dyn Host, args: Release) -> Result<ReleaseReply, String> {
    let lock = lock_path(&args.lock)?;
    let session = host.session();
    let line = requests(host, &lock)?;
    let mine = line.iter().find(|(_, r)| r.session == session);
    let Some((path, held)) = mine.filter(|(_, r)| r.count > 0) else {
        return Err(format!("session {session:#x} does not hold {}", args.lock));
    };
    if held.count > 1 {
        let fewer = Request { count: held.count - 1, ..held.clone() };
        records::write(host, path, &fewer)?;
        return Ok(ReleaseReply { released: true, holds: fewer.count });
    }
    host.delete(path, None).map_err(error)?;
    grant(host, &args.lock, &lock, 0)?;
    Ok(ReleaseReply { released: true, holds: 0 })
}

/// `downgrade`: the writer reads on, and the reads behind it go.
fn downgrade(host: &mut dyn Host, args: Downgrade) -> Result<DowngradeReply, String> {
    let lock = lock_path(&args.lock)?;
    let session = host.session();
    let line = requests(host, &lock)?;
    let mine = line.iter().find(|(_, r)| r.session == session);
    let Some((path, held)) = mine.filter(|(_, r)| r.count > 0 && r.mode == Access::Write) else {
        return Err(format!("session {session:#x} does not write {}", args.lock));
    };
    let reader = Request { mode: Access::Read, ..held.clone() };
    records::write(host, path, &reader)?;
    grant(host, &args.lock, &lock, 0)?;
    Ok(DowngradeReply { mode: Access::Read, token: reader.token })
}

/// `status`: the last token, the holders and the waiters.
fn status(host: &mut dyn Host, args: Status) -> Result<StatusReply, String> {
    let lock = lock_path(&args.lock)?;
    let line = requests(host, &lock)?;
    let entry = |(_, r): &(String, Request)| StatusEntry {
        session: r.session,
        mode: r.mode,
        token: r.token,
    };
    let holders = line.iter().filter(|(_, r)| r.count > 0).map(entry).collect();
    let queue = line.iter().filter(|(_, r)| r.count == 0).map(entry).collect();
    let token = records::read::<LockRecord>(host, &lock)?.map_or(0, |record| record.token);
    Ok(StatusReply { token, holders, queue })
}

impl Recipe for RwLock {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        match op {
            Acquire::NAME => serve(args, |args| acquire(host, args)),
            Release::NAME => serve(args, |args| release(host, args)),
            Downgrade::NAME => serve(args, |args| downgrade(host, args)),
            Status::NAME => serve(args, |args| status(host, args)),
            other => Err(format!(
                "unknown op {other:?}; rw-lock knows acquire, release, downgrade, status"
            )),
        }
    }

    fn on_session_ended(host: &mut dyn Host, _session: u64, deleted: Vec<String>) {
        for lock in records::parents(&deleted) {
            let name = lock.trim_start_matches('/').to_string();
            let _ = grant(host, &name, &lock, 0);
        }
    }
}

cairn_recipe::export!(RwLock);

#[cfg(test)]
mod tests {
    use cairn_recipe::testing::MemoryHost;
    use serde_json::{Value, json};

    use super::*;

    fn call(host: &mut MemoryHost, session: u64, op: &str, args: Value) -> Value {
        let reply = host.invoke::<RwLock>(session, op, args.to_string().as_bytes()).expect(op);
        serde_json::from_slice(&reply).expect("json")
    }

    fn acquire(host: &mut MemoryHost, session: u64, mode: &str) -> Value {
        call(host, session, "acquire", json!({"lock": "l", "mode": mode}))
    }

    fn holders(host: &mut MemoryHost) -> Vec<u64> {
        let status = call(host, 99, "status", json!({"lock": "l"}));
        status["holders"]
            .as_array()
            .expect("as the test set up")
            .iter()
            .map(|h| h["session"].as_u64().expect("as the test set up"))
            .collect()
    }

    #[test]
    fn readers_share_and_a_waiting_writer_is_not_overtaken() {
        let mut host = MemoryHost::default();
        assert_eq!(acquire(&mut host, 1, "read")["token"], 1);
        assert_eq!(acquire(&mut host, 2, "read")["token"], 2);
        assert_eq!(acquire(&mut host, 3, "write"), json!({"granted": false, "position": 2}));
        // A reader arriving after the waiting writer waits behind it.
        assert_eq!(acquire(&mut host, 4, "read"), json!({"granted": false, "position": 3}));
        assert_eq!(
            call(&mut host, 5, "acquire", json!({"lock": "l", "mode": "read", "wait": false})),
            json!({"granted": false})
        );
        call(&mut host, 1, "release", json!({"lock": "l"}));
        assert_eq!(holders(&mut host), [2]);
        call(&mut host, 2, "release", json!({"lock": "l"}));
        assert_eq!(holders(&mut host), [3]);
        assert_eq!(
            host.notifications.last(),
            Some(&(3, br#"{"lock":"l","mode":"write","token":3}"#.to_vec()))
        );
        // Downgrading lets the reader behind in, with the writer still holding as a reader.
        assert_eq!(
            call(&mut host, 3, "downgrade", json!({"lock": "l"})),
            json!({"mode": "read", "token": 3})
        );
        assert_eq!(holders(&mut host), [3, 4]);
        assert_eq!(
            host.notifications.last(),
            Some(&(4, br#"{"lock":"l","mode":"read","token":4}"#.to_vec()))
        );
    }

    #[test]
    fn upgrades_are_refused_and_writers_reenter() {
        let mut host = MemoryHost::default();
        acquire(&mut host, 1, "read");
        assert!(host.invoke::<RwLock>(1, "acquire", br#"{"lock":"l","mode":"write"}"#).is_err());
        call(&mut host, 1, "release", json!({"lock": "l"}));
        assert_eq!(acquire(&mut host, 1, "write")["holds"], 1);
        assert_eq!(
            acquire(&mut host, 1, "read"),
            json!({"granted": true, "mode": "write", "token": 2, "holds": 2})
        );
        assert!(
            host.invoke::<RwLock>(2, "release", br#"{"lock":"l"}"#).is_err(),
            "2 holds nothing"
        );
        assert!(host.invoke::<RwLock>(1, "acquire", br#"{"lock":"l"}"#).is_err(), "no mode");
    }

    #[test]
    fn a_writer_whose_session_ends_lets_the_readers_in() {
        let mut host = MemoryHost::default();
        acquire(&mut host, 1, "write");
        acquire(&mut host, 2, "read");
        acquire(&mut host, 3, "read");
        acquire(&mut host, 4, "write");
        host.end_session::<RwLock>(1);
        assert_eq!(holders(&mut host), [2, 3]);
        host.end_session::<RwLock>(2);
        host.end_session::<RwLock>(3);
        assert_eq!(holders(&mut host), [4]);
        let status = call(&mut host, 99, "status", json!({"lock": "l"}));
        assert_eq!(status["token"], 4, "each grant took the next token");
    }
}
