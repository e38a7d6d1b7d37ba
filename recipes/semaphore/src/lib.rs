//! A counting semaphore: N permits, taken k at a time in arrival order, returned when the
//! holding session ends.
//!
//! State: `/<sem>` holds `{"permits": N}` (set by the first acquire); its children
//! `/<sem>/h-<seq>` are ephemeral records of each session's request
//! `{"session": S, "count": k, "granted": bool}`, in arrival order. Requests are granted in
//! order while they fit (a large request at the head is not overtaken, so it never starves).
//!
//! Ops, answers, notifications and records are `cairn_builtins::semaphore`'s types (see
//! `sdk/wire/RECIPES.md` for the protocol in words).

use cairn_builtins::semaphore::{
    Acquire, AcquireReply, Granted, REQUEST_PREFIX, Release, ReleaseReply, Request,
    SemaphoreRecord, Status, StatusReply,
};
use cairn_builtins::{Op, encode, serve};
use cairn_recipe::{Host, Mode, Recipe, StoreError, records};

#[derive(Debug)]
pub struct Semaphore;

fn error(e: StoreError) -> String {
    e.to_string()
}

fn sem_path(name: &str) -> Result<String, String> {
    records::entity_path("semaphore", name)
}

fn requests(host: &mut dyn Host, sem: &str) -> Result<Vec<(String, Request)>, String> {
    records::children(host, sem)
}

fn permits(host: &mut dyn Host, sem: &str) -> Result<Option<u64>, String> {
    Ok(records::read::<SemaphoreRecord>(host, sem)?.map(|record| record.permits))
}

/// Permits held by the granted requests.
fn permits_used(all: &[(String, Request)]) -> u64 {
    all.iter().filter(|(_, r)| r.granted).map(|(_, r)| r.count).sum()
}

/// Grants waiting requests in order while they fit; notifies each.
fn grant(host: &mut dyn Host, name: &str, sem: &str) -> Result<(), String> {
    let Some(capacity) = permits(host, sem)? else { return Ok(()) };
    let all = requests(host, sem)?;
    let mut used = permits_used(&all);
    for (path, request) in all.into_iter().filter(|(_, r)| !r.granted) {
        if used + request.count > capacity {
            break;
        }
        used += request.count;
        let granted = Request { granted: true, ..request };
        records::write(host, &path, &granted)?;
        host.notify(granted.session, &encode(&Granted { sem: name.to_string() }));
    }
    Ok(())
}

/// `acquire`: the permits, a place in line or busy; the first one fixes the permits.
fn acquire(host: &mut dyn Host, args: Acquire) -> Result<AcquireReply, String> {
    let sem = sem_path(&args.sem)?;
    let session = host.caller_session(Acquire::NAME)?;
    let capacity = match (permits(host, &sem)?, args.permits) {
        (Some(have), Some(asked)) if have != asked => {
            return Err(format!("{} has {have} permits, not {asked}", args.sem));
        }
        (Some(have), _) => have,
        (None, Some(asked)) if asked > 0 => {
            let record = SemaphoreRecord { permits: asked };
            records::create(host, &sem, &record, Mode::Persistent, false)?;
            asked
        }
        (None, _) => {
            return Err(format!("{} is new: say how many permits it has", args.sem));
        }
    };
    if args.count == 0 || args.count > capacity {
        return Err(format!("cannot take {} of {capacity} permits", args.count));
    }
    let all = requests(host, &sem)?;
    if let Some(position) = all.iter().position(|(_, r)| r.session == session) {
        let granted = all[position].1.granted;
        return Ok(AcquireReply { granted, position: Some(position as u64) });
    }
    let free_now =
        all.iter().all(|(_, r)| r.granted) && permits_used(&all) + args.count <= capacity;
    if !free_now && !args.wait {
        return Ok(AcquireReply::busy());
    }
    let request = Request { session, count: args.count, granted: free_now };
    let path = format!("{sem}/{REQUEST_PREFIX}");
    records::create(host, &path, &request, Mode::Ephemeral, true)?;
    if free_now {
        return Ok(AcquireReply::granted());
    }
    Ok(AcquireReply::queued(all.len() as u64))
}

/// `release`: the session's granted request goes, and the waiters that fit now are granted.
fn release(host: &mut dyn Host, args: Release) -> Result<ReleaseReply, String> {
    let sem = sem_path(&args.sem)?;
    let session = host.session();
    let mine = requests(host, &sem)?.into_iter().find(|(_, r)| r.session == session && r.granted);
    let Some((path, request)) = mine else {
        return Err(format!("session {session:#x} holds no permits of {}", args.sem));
    };
    host.delete(&path, None).map_err(error)?;
    grant(host, &args.sem, &sem)?;
    Ok(ReleaseReply { released: request.count })
}

/// `status`: the permits, those in use, the holders and the waiters.
fn status(host: &mut dyn Host, args: Status) -> Result<StatusReply, String> {
    let sem = sem_path(&args.sem)?;
    let all = requests(host, &sem)?;
    let holders = all.iter().filter(|(_, r)| r.granted).map(|(_, r)| r.session).collect();
    let queue = all.iter().filter(|(_, r)| !r.granted).map(|(_, r)| r.session).collect();
    Ok(StatusReply { permits: permits(host, &sem)?, used: permits_used(&all), holders, queue })
}

impl Recipe for Semaphore {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        match op {
            Acquire::NAME => serve(args, |args| acquire(host, args)),
            Release::NAME => serve(args, |args| release(host, args)),
            Status::NAME => serve(args, |args| status(host, args)),
            other => Err(format!("unknown op {other:?}; semaphore knows acquire, release, status")),
        }
    }

    fn on_session_ended(host: &mut dyn Host, _session: u64, deleted: Vec<String>) {
        for sem in records::parents(&deleted) {
            let name = sem.trim_start_matches('/').to_string();
            let _ = grant(host, &name, &sem);
        }
    }
}

cairn_recipe::export!(Semaphore);

#[cfg(test)]
mod tests {
    use cairn_recipe::testing::MemoryHost;
    use serde_json::{Value, json};

    use super::*;

    fn call(host: &mut MemoryHost, session: u64, op: &str, args: Value) -> Value {
        serde_json::from_slice(
            &host.invoke::<Semaphore>(session, op, args.to_string().as_bytes()).expect(op),
        )
        .expect("json")
    }

    #[test]
    fn permits_in_order_and_back_when_a_session_ends() {
        let mut host = MemoryHost::default();
        assert_eq!(
            call(&mut host, 1, "acquire", json!({"sem": "s", "permits": 3, "count": 2})),
            json!({"granted": true})
        );
        assert_eq!(
            call(&mut host, 2, "acquire", json!({"sem": "s", "count": 2})),
            json!({"granted": false, "position": 1})
        );
        // FIFO: a small request does not overtake the waiting large one.
        assert_eq!(
            call(&mut host, 3, "acquire", json!({"sem": "s", "count": 1})),
            json!({"granted": false, "position": 2})
        );
        assert!(
            host.invoke::<Semaphore>(4, "acquire", br#"{"sem":"s","permits":5}"#).is_err(),
            "capacity is fixed"
        );
        host.end_session::<Semaphore>(1);
        assert_eq!(
            call(&mut host, 9, "status", json!({"sem": "s"})),
            json!({"permits": 3, "used": 3, "holders": [2, 3], "queue": []})
        );
        assert_eq!(call(&mut host, 2, "release", json!({"sem": "s"})), json!({"released": 2}));
        assert_eq!(call(&mut host, 9, "status", json!({"sem": "s"}))["used"], 1);
    }
}
