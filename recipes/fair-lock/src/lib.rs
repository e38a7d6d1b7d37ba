//! The fair lock: first come, first served, with a fencing token on every grant.
//!
//! State, in the recipe's namespace: `/<lock>` holds `{"token": N}`, the last fencing token
//! granted; its children `/<lock>/w-<seq>` are the waiters in arrival order, each an ephemeral
//! znode of the waiting session holding `{"session": S, "count": C, "token": T}`. The first
//! child holds the lock. Because waiters are ephemeral, a session that ends leaves the queue in
//! the same log entry, and the hook grants the next waiter there and then.
//!
//! Ops (JSON in, JSON out):
//! - `acquire {"lock": L, "wait": true}` → `{"granted": true, "token": T}` or, queued,
//!   `{"granted": false, "position": P}`; the waiter is notified `{"lock": L, "token": T}` when
//!   granted. With `"wait": false` a busy lock answers `{"granted": false}` and queues nothing.
//!   Acquiring a lock the session holds counts one more hold (re-entrant per session).
//! - `release {"lock": L}` → `{"released": true, "holds": C}` (C holds left); the last release
//!   grants the next waiter.
//! - `status {"lock": L}` → `{"holder": S or null, "token": T, "queue": [S...]}`.

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

fn yes() -> bool {
    true
}

/// A waiter's record.
#[derive(Debug, Serialize, Deserialize)]
struct Waiter {
    session: u64,
    /// Holds taken by the session (re-entrant acquires); 0 while waiting.
    count: u32,
    /// The fencing token of the grant; 0 while waiting.
    token: u64,
}

fn error(e: StoreError) -> String {
    e.to_string()
}

fn lock_path(lock: &str) -> Result<String, String> {
    records::entity_path("lock", lock)
}

/// The queue: (path, waiter) in arrival order.
fn queue(host: &mut dyn Host, lock: &str) -> Result<Vec<(String, Waiter)>, String> {
    records::children(host, lock)
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

/// Grants the head of the queue if it is waiting: the next token, recorded and notified.
fn grant_head(host: &mut dyn Host, lock_name: &str, lock: &str) -> Result<Option<u64>, String> {
    let Some((path, mut head)) = queue(host, lock)?.into_iter().next() else { return Ok(None) };
    if head.count > 0 {
        return Ok(Some(head.token));
    }
    let token = last_token(host, lock)? + 1;
    host.set(lock, json!({ "token": token }).to_string().as_bytes(), None).map_err(error)?;
    head.count = 1;
    head.token = token;
    host.set(&path, &serde_json::to_vec(&head).map_err(|e| e.to_string())?, None).map_err(error)?;
    host.notify(head.session, json!({ "lock": lock_name, "token": token }).to_string().as_bytes());
    Ok(Some(token))
}

impl Recipe for FairLock {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Args = serde_json::from_slice(args).map_err(|e| format!("bad arguments: {e}"))?;
        let lock = lock_path(&args.lock)?;
        let session = host.session();
        let reply = match op {
            "acquire" => {
                if session == 0 {
                    return Err("acquire needs a session".into());
                }
                let waiters = queue(host, &lock)?;
                if let Some(position) = waiters.iter().position(|(_, w)| w.session == session) {
                    let (path, waiter) = &waiters[position];
                    if position == 0 && waiter.count > 0 {
                        let again = Waiter { count: waiter.count + 1, ..*waiter };
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
                    if host.read(&lock).map_err(error)?.is_none() {
                        host.create(
                            &lock,
                            json!({ "token": 0 }).to_string().as_bytes(),
                            Mode::Persistent,
                            false,
                        )
                        .map_err(error)?;
                    }
                    let record = Waiter { session, count: 0, token: 0 };
                    let record = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
                    host.create(&format!("{lock}/w-"), &record, Mode::Ephemeral, true)
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
            "release" => {
                let waiters = queue(host, &lock)?;
                match waiters.first() {
                    Some((path, head)) if head.session == session && head.count > 0 => {
                        if head.count > 1 {
                            let fewer = Waiter { count: head.count - 1, ..*head };
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
                }
            }
            "status" => {
                let waiters = queue(host, &lock)?;
                let holder = waiters.first().filter(|(_, w)| w.count > 0).map(|(_, w)| w.session);
                let queue: Vec<u64> = waiters
                    .iter()
                    .skip(usize::from(holder.is_some()))
                    .map(|(_, w)| w.session)
                    .collect();
                json!({ "holder": holder, "token": last_token(host, &lock)?, "queue": queue })
            }
            other => {
                return Err(format!(
                    "unknown op {other:?}; fair-lock knows acquire, release, status"
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
}
