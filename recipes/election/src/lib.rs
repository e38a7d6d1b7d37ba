//! Leader election: candidates line up; the first is leader; every new leader gets a larger
//! term (a fencing token from the host), which serves as its fencing token.
//!
//! State: `/<election>` holds `{"term": T, "leader": S or null, "data": D}` — a client that wants
//! to observe leader changes watches this znode (`/cairn/recipes/election/<election>`).
//! Candidates are ephemeral sequential children `/<election>/c-<seq>` holding
//! `{"session": S, "data": D}`; when the leader's session ends, the next candidate is elected in
//! that same log entry and notified.
//!
//! Ops, answers, notifications and records are `cairn_builtins::election`'s types (see
//! `sdk/wire/RECIPES.md` for the protocol in words).

use cairn_builtins::election::{
    Campaign, CampaignReply, Candidate, Elected, ElectionRecord, Leader, Resign, ResignReply,
};
use cairn_builtins::{Op, encode, serve};
use cairn_recipe::{Host, Mode, Recipe, StoreError, records};

#[derive(Debug)]
pub struct Election;

fn error(e: StoreError) -> String {
    e.to_string()
}

fn election_path(name: &str) -> Result<String, String> {
    records::entity_path("election", name)
}

fn candidates(host: &mut dyn Host, election: &str) -> Result<Vec<(String, Candidate)>, String> {
    records::children(host, election)
}

fn state(host: &mut dyn Host, election: &str) -> Result<ElectionRecord, String> {
    let record: Option<ElectionRecord> = records::read(host, election)?;
    Ok(record.unwrap_or_else(|| ElectionRecord::vacant(0)))
}

/// Makes the first candidate leader if it is not already; returns the term.
fn elect(host: &mut dyn Host, name: &str, election: &str) -> Result<u64, String> {
    let current = state(host, election)?;
    let first = candidates(host, election)?.into_iter().next();
    let leader = first.as_ref().map(|(_, c)| c.session);
    if current.leader == leader {
        return Ok(current.term);
    }
    let record = match first {
        // The term fences the leader's writes: it comes from the host's counter, which no
        // version of this recipe can rewind, so it only grows.
        Some((_, candidate)) => {
            ElectionRecord { term: host.fencing_token(), leader, data: candidate.data }
        }
        None => ElectionRecord::vacant(current.term),
    };
    host.put(election, &encode(&record)).map_err(error)?;
    if let Some(leader) = leader {
        host.notify(leader, &encode(&Elected { election: name.to_string(), term: record.term }));
    }
    Ok(record.term)
}

/// `campaign`: lines the caller up (once) and elects the first candidate.
fn campaign(host: &mut dyn Host, args: Campaign) -> Result<CampaignReply, String> {
    let election = election_path(&args.election)?;
    let session = host.caller_session(Campaign::NAME)?;
    let mut lined_up = candidates(host, &election)?;
    if !lined_up.iter().any(|(_, c)| c.session == session) {
        if host.read(&election).map_err(error)?.is_none() {
            let initial = ElectionRecord::vacant(0);
            records::create(host, &election, &initial, Mode::Persistent, false)?;
        }
        let me = Candidate { session, data: args.data };
        records::create(host, &format!("{election}/c-"), &me, Mode::Ephemeral, true)?;
        lined_up = candidates(host, &election)?;
    }
    let term = elect(host, &args.election, &election)?;
    let position = lined_up.iter().position(|(_, c)| c.session == session).unwrap_or(0);
    if position > 0 {
        return Ok(CampaignReply::queued(position as u64));
    }
    Ok(CampaignReply::elected(term))
}

/// `leader`: the election's record.
fn leader(host: &mut dyn Host, args: Leader) -> Result<ElectionRecord, String> {
    let election = election_path(&args.election)?;
    state(host, &election)
}

/// `resign`: the caller's candidacy goes; the next candidate leads if it led.
fn resign(host: &mut dyn Host, args: Resign) -> Result<ResignReply, String> {
    let election = election_path(&args.election)?;
    let session = host.session();
    let mine = candidates(host, &election)?.into_iter().find(|(_, c)| c.session == session);
    let Some((path, _)) = mine else {
        return Err(format!("session {session:#x} is not a candidate in {}", args.election));
    };
    host.delete(&path, None).map_err(error)?;
    elect(host, &args.election, &election)?;
    Ok(ResignReply { resigned: true })
}

impl Recipe for Election {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        match op {
            Campaign::NAME => serve(args, |args| campaign(host, args)),
            Leader::NAME => serve(args, |args| leader(host, args)),
            Resign::NAME => serve(args, |args| resign(host, args)),
            other => Err(format!("unknown op {other:?}; election knows campaign, leader, resign")),
        }
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
    use serde_json::{Value, json};

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
