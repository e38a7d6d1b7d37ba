//! Leader election: candidates line up; the first is leader; every new leader gets a larger
//! term (a fencing token from the host), which serves as its fencing token.
//!
//! State: `/<election>` holds `{"term": T, "leader": S or null, "data": D}` — a client that wants
//! to observe leader changes watches this znode (`/cairn/recipes/election/<election>`).
//! Candidates are ephemeral sequential children `/<election>/c-<seq>` holding
//! `{"session": S, "data": D}`; when the leader's session ends, the next candidate is elected in
//! that same log entry and notified.
//!
//! Ops (JSON): `campaign {"election": E, "data": D}` → `{"leader": true, "term": T}` or
//! `{"leader": false, "position": P}` (notified `{"election": E, "term": T}` when elected);
//! `leader {"election": E}` → `{"leader": S or null, "term": T, "data": D}`;
//! `resign {"election": E}` → `{"resigned": true}`.

use cairn_recipe::{Host, Mode, Recipe, StoreError, records};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug)]
pub struct Election;

#[derive(Deserialize)]
struct Args {
    election: String,
    #[serde(default)]
    data: Value,
}

#[derive(Serialize, Deserialize)]
struct Candidate {
    session: u64,
    data: Value,
}

fn error(e: StoreError) -> String {
    e.to_string()
}

fn election_path(name: &str) -> Result<String, String> {
    records::entity_path("election", name)
}

fn candidates(host: &mut dyn Host, election: &str) -> Result<Vec<(String, Candidate)>, String> {
    records::children(host, election)
}

fn state(host: &mut dyn Host, election: &str) -> Result<Value, String> {
    match host.read(election).map_err(error)? {
        Some(data) => serde_json::from_slice(&data).map_err(|e| e.to_string()),
        None => Ok(json!({ "term": 0, "leader": null, "data": null })),
    }
}

/// Makes the first candidate leader if it is not already; returns the term.
fn elect(host: &mut dyn Host, name: &str, election: &str) -> Result<u64, String> {
    let current = state(host, election)?;
    let term = current["term"].as_u64().unwrap_or(0);
    let first = candidates(host, election)?.into_iter().next();
    let leader = first.as_ref().map(|(_, c)| c.session);
    if current["leader"].as_u64() == leader {
        return Ok(term);
    }
    let (term, data) = match &first {
        // The term fences the leader's writes: it comes from the host's counter, which no
        // version of this recipe can rewind, so it only grows.
        Some((_, candidate)) => (host.fencing_token(), candidate.data.clone()),
        None => (term, Value::Null),
    };
    host.put(
        election,
        json!({ "term": term, "leader": leader, "data": data }).to_string().as_bytes(),
    )
    .map_err(error)?;
    if let Some(leader) = leader {
        host.notify(leader, json!({ "election": name, "term": term }).to_string().as_bytes());
    }
    Ok(term)
}

impl Recipe for Election {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Args = serde_json::from_slice(args).map_err(|e| format!("bad arguments: {e}"))?;
        let election = election_path(&args.election)?;
        let session = host.session();
        let reply = match op {
            "campaign" => {
                let session = host.caller_session("campaign")?;
                let mut lined_up = candidates(host, &election)?;
                if !lined_up.iter().any(|(_, c)| c.session == session) {
                    if host.read(&election).map_err(error)?.is_none() {
                        let initial =
                            json!({ "term": 0, "leader": null, "data": null }).to_string();
                        host.create(&election, initial.as_bytes(), Mode::Persistent, false)
                            .map_err(error)?;
                    }
                    let me = serde_json::to_vec(&Candidate { session, data: args.data })
                        .map_err(|e| e.to_string())?;
                    host.create(&format!("{election}/c-"), &me, Mode::Ephemeral, true)
                        .map_err(error)?;
                    lined_up = candidates(host, &election)?;
                }
                let term = elect(host, &args.election, &election)?;
                let position = lined_up.iter().position(|(_, c)| c.session == session).unwrap_or(0);
                if position == 0 {
                    json!({ "leader": true, "term": term })
                } else {
                    json!({ "leader": false, "position": position })
                }
            }
            "leader" => state(host, &election)?,
            "resign" => {
                let mine =
                    candidates(host, &election)?.into_iter().find(|(_, c)| c.session == session);
                let Some((path, _)) = mine else {
                    return Err(format!(
                        "session {session:#x} is not a candidate in {}",
                        args.election
                    ));
                };
                host.delete(&path, None).map_err(error)?;
                elect(host, &args.election, &election)?;
                json!({ "resigned": true })
            }
            other => {
                return Err(format!(
                    "unknown op {other:?}; election knows campaign, leader, resign"
                ));
            }
        };
        Ok(reply.to_string().into_bytes())
    }

    fn on_session_ended(host: &mut dyn Host, _session: u64, deleted: Vec<String>) {
        for election in records::parents(&deleted) {
            let name = election.trim_start_matches('/').to_string();
            let _ = elect(host, &name, &election);
        }
    }
}

cairn_recipe::export!(Election);

#[cfg(test)]
mod tests {
    use cairn_recipe::testing::MemoryHost;

    use super::*;

    fn call(host: &mut MemoryHost, session: u64, op: &str, args: Value) -> Value {
        serde_json::from_slice(
            &host.invoke::<Election>(session, op, args.to_string().as_bytes()).expect(op),
        )
        .expect("json")
    }

    #[test]
    fn terms_grow_with_every_new_leader() {
        let mut host = MemoryHost::default();
        let e = json!({"election": "e", "data": "node-1"});
        assert_eq!(call(&mut host, 1, "campaign", e.clone()), json!({"leader": true, "term": 1}));
        assert_eq!(
            call(&mut host, 2, "campaign", json!({"election": "e", "data": "node-2"})),
            json!({"leader": false, "position": 1})
        );
        assert_eq!(
            call(&mut host, 9, "leader", e.clone()),
            json!({"term": 1, "leader": 1, "data": "node-1"})
        );
        host.end_session::<Election>(1);
        assert_eq!(
            call(&mut host, 9, "leader", e.clone()),
            json!({"term": 2, "leader": 2, "data": "node-2"})
        );
        assert_eq!(host.notifications.last(), Some(&(2, br#"{"election":"e","term":2}"#.to_vec())));
        call(&mut host, 3, "campaign", e.clone());
        assert_eq!(call(&mut host, 2, "resign", e.clone()), json!({"resigned": true}));
        assert_eq!(call(&mut host, 9, "leader", e.clone())["term"], 3);
        assert_eq!(call(&mut host, 9, "leader", e.clone())["leader"], 3);
        assert!(host.invoke::<Election>(7, "resign", e.to_string().as_bytes()).is_err());
    }
}
