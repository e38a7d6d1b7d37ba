//! A counting semaphore: N permits, taken k at a time in arrival order, returned when the
//! holding session ends.
//!
//! State: `/<sem>` holds `{"permits": N}` (set by the first acquire); its children
//! `/<sem>/h-<seq>` are ephemeral records of each session's request
//! `{"session": S, "count": k, "granted": bool}`, in arrival order. Requests are granted in
//! order while they fit (a large request at the head is not overtaken, so it never starves).
//!
//! Ops (JSON): `acquire {"sem": S, "permits": N, "count": k, "wait": true}` →
//! `{"granted": true}` or `{"granted": false, "position": P}` (notified `{"sem": S}` when
//! granted); `release {"sem": S}` → `{"released": k}`; `status {"sem": S}` →
//! `{"permits": N, "used": U, "holders": [S...], "queue": [S...]}`.

use cairn_recipe::{Host, Mode, Recipe, StoreError, records};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug)]
pub struct Semaphore;

#[derive(Deserialize)]
struct Args {
    sem: String,
    #[serde(default)]
    permits: Option<u64>,
    #[serde(default = "one")]
    count: u64,
    #[serde(default = "yes")]
    wait: bool,
}

fn one() -> u64 {
    1
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    session: u64,
    count: u64,
    granted: bool,
}

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
    match host.read(sem).map_err(error)? {
        Some(data) => {
            let state: serde_json::Value =
                serde_json::from_slice(&data).map_err(|e| e.to_string())?;
            Ok(state["permits"].as_u64())
        }
        None => Ok(None),
    }
}

/// Grants waiting requests in order while they fit; notifies each.
fn grant(host: &mut dyn Host, name: &str, sem: &str) -> Result<(), String> {
    let Some(capacity) = permits(host, sem)? else { return Ok(()) };
    let all = requests(host, sem)?;
    let mut used: u64 = all.iter().filter(|(_, r)| r.granted).map(|(_, r)| r.count).sum();
    for (path, request) in all.into_iter().filter(|(_, r)| !r.granted) {
        if used + request.count > capacity {
            break;
        }
        used += request.count;
        let granted = Request { granted: true, ..request };
        host.set(&path, &serde_json::to_vec(&granted).map_err(|e| e.to_string())?, None)
            .map_err(error)?;
        host.notify(granted.session, json!({ "sem": name }).to_string().as_bytes());
    }
    Ok(())
}

impl Recipe for Semaphore {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Args = serde_json::from_slice(args).map_err(|e| format!("bad arguments: {e}"))?;
        let sem = sem_path(&args.sem)?;
        let session = host.session();
        let reply = match op {
            "acquire" => {
                let session = host.caller_session("acquire")?;
                let capacity = match (permits(host, &sem)?, args.permits) {
                    (Some(have), Some(asked)) if have != asked => {
                        return Err(format!("{} has {have} permits, not {asked}", args.sem));
                    }
                    (Some(have), _) => have,
                    (None, Some(asked)) if asked > 0 => {
                        host.create(
                            &sem,
                            json!({ "permits": asked }).to_string().as_bytes(),
                            Mode::Persistent,
                            false,
                        )
                        .map_err(error)?;
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
                    return Ok(json!({ "granted": all[position].1.granted, "position": position })
                        .to_string()
                        .into_bytes());
                }
                let used: u64 = all.iter().filter(|(_, r)| r.granted).map(|(_, r)| r.count).sum();
                let free_now = all.iter().all(|(_, r)| r.granted) && used + args.count <= capacity;
                if !free_now && !args.wait {
                    json!({ "granted": false })
                } else {
                    let request = Request { session, count: args.count, granted: free_now };
                    let record = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
                    host.create(&format!("{sem}/h-"), &record, Mode::Ephemeral, true)
                        .map_err(error)?;
                    if free_now {
                        json!({ "granted": true })
                    } else {
                        json!({ "granted": false, "position": all.len() })
                    }
                }
            }
            "release" => {
                let mine = requests(host, &sem)?
                    .into_iter()
                    .find(|(_, r)| r.session == session && r.granted);
                let Some((path, request)) = mine else {
                    return Err(format!("session {session:#x} holds no permits of {}", args.sem));
                };
                host.delete(&path, None).map_err(error)?;
                grant(host, &args.sem, &sem)?;
                json!({ "released": request.count })
            }
            "status" => {
                let all = requests(host, &sem)?;
                let used: u64 = all.iter().filter(|(_, r)| r.granted).map(|(_, r)| r.count).sum();
                let holders: Vec<u64> =
                    all.iter().filter(|(_, r)| r.granted).map(|(_, r)| r.session).collect();
                let queue: Vec<u64> =
                    all.iter().filter(|(_, r)| !r.granted).map(|(_, r)| r.session).collect();
                json!({ "permits": permits(host, &sem)?, "used": used, "holders": holders, "queue": queue })
            }
            other => {
                return Err(format!(
                    "unknown op {other:?}; semaphore knows acquire, release, status"
                ));
            }
        };
        Ok(reply.to_string().into_bytes())
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
    use serde_json::Value;

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
