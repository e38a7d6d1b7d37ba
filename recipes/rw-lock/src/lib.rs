//! The read-write lock: many readers or one writer, granted in arrival order so a writer is never
//! starved by a stream of readers, with a fencing token on every grant.
//!
//! State: `/<lock>` holds `{"token": N}`, the last token granted; its children `/<lock>/w-<seq>`
//! are requests in arrival order, each an ephemeral znode of the requesting session holding
//! `{"session": S, "mode": "read"|"write", "count": C, "token": T}` (`count` 0 while waiting).
//! A write is granted when it is first in line; a read when no write is ahead of it. A session
//! that ends leaves the line in the same log entry, and the hook grants whoever can go next.
//!
//! Ops (JSON):
//! - `acquire {"lock": L, "mode": "read"|"write", "wait": true}` → `{"granted": true, "mode": M,
//!   "token": T}` or `{"granted": false, "position": P}`; a waiter is notified
//!   `{"lock": L, "mode": M, "token": T}` when granted. With `"wait": false` nothing is queued.
//!   A holder acquiring again counts one more hold (a writer may also take reads); a reader
//!   asking to write is refused: two readers upgrading would wait for each other forever.
//! - `release {"lock": L}` → `{"released": true, "holds": C}`.
//! - `downgrade {"lock": L}` → `{"mode": "read", "token": T}`: the writer becomes a reader
//!   without letting a writer in between, and the readers behind it are granted.
//! - `status {"lock": L}` → `{"token": T, "holders": [{"session", "mode", "token"}...],
//!   "queue": [{"session", "mode", "token": 0}...]}`.

use cairn_recipe::{Host, Mode, Recipe, StoreError, records};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug)]
pub struct RwLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Access {
    Read,
    Write,
}

#[derive(Deserialize)]
struct Args {
    lock: String,
    #[serde(default)]
    mode: Option<Access>,
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    session: u64,
    mode: Access,
    /// Holds taken (re-entrant acquires); 0 while waiting.
    count: u32,
    /// The fencing token of the grant; 0 while waiting.
    token: u64,
}

fn error(e: StoreError) -> String {
    e.to_string()
}

fn requests(host: &mut dyn Host, lock: &str) -> Result<Vec<(String, Request)>, String> {
    records::children(host, lock)
}

/// The next fencing token, from the host (never from the lock's own record, which another
/// version of this recipe could rewrite), recorded as the lock's last.
fn next_token(host: &mut dyn Host, lock: &str) -> Result<u64, String> {
    let token = host.fencing_token();
    records::write(host, lock, &json!({ "token": token }))?;
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
                let note = json!({ "lock": name, "mode": granted.mode, "token": token });
                host.notify(granted.session, note.to_string().as_bytes());
            }
        }
        if request.mode == Access::Write {
            break;
        }
    }
    Ok(())
}

fn granted_reply(request: &Request) -> Value {
    json!({ "granted": true, "mode": request.mode, "token": request.token, "holds": request.count })
}

impl Recipe for RwLock {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Args = serde_json::from_slice(args).map_err(|e| format!("bad arguments: {e}"))?;
        let lock = records::entity_path("lock", &args.lock)?;
        let session = host.session();
        let line = requests(host, &lock)?;
        let mine = line.iter().position(|(_, r)| r.session == session);
        let reply = match op {
            "acquire" => {
                let Some(mode) = args.mode else {
                    return Err("acquire needs a mode: \"read\" or \"write\"".into());
                };
                let session = host.caller_session("acquire")?;
                match mine {
                    Some(position) => {
                        let (path, held) = &line[position];
                        if held.count == 0 {
                            json!({ "granted": false, "position": position })
                        } else if held.mode == Access::Read && mode == Access::Write {
                            return Err(format!(
                                "session {session:#x} reads {}: release it before writing \
                                 (upgrades can deadlock)",
                                args.lock
                            ));
                        } else {
                            let again = Request { count: held.count + 1, ..held.clone() };
                            records::write(host, path, &again)?;
                            granted_reply(&again)
                        }
                    }
                    None => {
                        let free_now = match mode {
                            Access::Write => line.is_empty(),
                            Access::Read => line.iter().all(|(_, r)| r.mode == Access::Read),
                        };
                        if !free_now && !args.wait {
                            json!({ "granted": false })
                        } else {
                            if host.read(&lock).map_err(error)?.is_none() {
                                records::create(
                                    host,
                                    &lock,
                                    &json!({ "token": 0 }),
                                    Mode::Persistent,
                                    false,
                                )?;
                            }
                            let request = Request { session, mode, count: 0, token: 0 };
                            let path = records::create(
                                host,
                                &format!("{lock}/w-"),
                                &request,
                                Mode::Ephemeral,
                                true,
                            )?;
                            grant(host, &args.lock, &lock, session)?;
                            let now: Request =
                                records::read(host, &path)?.ok_or("lost a request")?;
                            if now.count > 0 {
                                granted_reply(&now)
                            } else {
                                json!({ "granted": false, "position": line.len() })
                            }
                        }
                    }
                }
            }
            "release" => {
                let Some((path, held)) = mine.map(|i| &line[i]).filter(|(_, r)| r.count > 0) else {
                    return Err(format!("session {session:#x} does not hold {}", args.lock));
                };
                if held.count > 1 {
                    let fewer = Request { count: held.count - 1, ..held.clone() };
                    records::write(host, path, &fewer)?;
                    json!({ "released": true, "holds": fewer.count })
                } else {
                    host.delete(path, None).map_err(error)?;
                    grant(host, &args.lock, &lock, 0)?;
                    json!({ "released": true, "holds": 0 })
                }
            }
            "downgrade" => {
                let Some((path, held)) =
                    mine.map(|i| &line[i]).filter(|(_, r)| r.count > 0 && r.mode == Access::Write)
                else {
                    return Err(format!("session {session:#x} does not write {}", args.lock));
                };
                let reader = Request { mode: Access::Read, ..held.clone() };
                records::write(host, path, &reader)?;
                grant(host, &args.lock, &lock, 0)?;
                json!({ "mode": Access::Read, "token": reader.token })
            }
            "status" => {
                let entry = |(_, r): &(String, Request)| json!({ "session": r.session, "mode": r.mode, "token": r.token });
                let holders: Vec<Value> =
                    line.iter().filter(|(_, r)| r.count > 0).map(entry).collect();
                let queue: Vec<Value> =
                    line.iter().filter(|(_, r)| r.count == 0).map(entry).collect();
                let state: Option<Value> = records::read(host, &lock)?;
                let token = state.and_then(|s| s["token"].as_u64()).unwrap_or(0);
                json!({ "token": token, "holders": holders, "queue": queue })
            }
            other => {
                return Err(format!(
                    "unknown op {other:?}; rw-lock knows acquire, release, downgrade, status"
                ));
            }
        };
        Ok(reply.to_string().into_bytes())
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
