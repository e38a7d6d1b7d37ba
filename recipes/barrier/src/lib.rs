//! The double barrier: N members enter before any of them starts, and none leaves before all of
//! them are done (Curator's `DistributedDoubleBarrier`). The barrier then opens for a new round.
//!
//! State: `/<barrier>` holds `{"count": N, "round": R, "open": bool}`; its children
//! `/<barrier>/m-<seq>` are the members of the round, ephemeral znodes of their sessions holding
//! `{"session": S, "leaving": bool}`. A member whose session ends leaves the round in the same
//! log entry; if everyone left is waiting to leave, that releases them.
//!
//! Ops, answers, notifications and records are `cairn_builtins::barrier`'s types (see
//! `sdk/wire/RECIPES.md` for the protocol in words).

use cairn_builtins::barrier::{
    BarrierRecord, Enter, EnterReply, Entered, Leave, LeaveReply, Left, Member, Status, StatusReply,
};
use cairn_builtins::{Op, encode, serve};
use cairn_recipe::{Host, Mode, Recipe, records};

#[derive(Debug)]
pub struct Barrier;

fn barrier_path(name: &str) -> Result<String, String> {
    records::entity_path("barrier", name)
}

fn members(host: &mut dyn Host, barrier: &str) -> Result<Vec<(String, Member)>, String> {
    records::children(host, barrier)
}

fn notify_all(host: &mut dyn Host, members: &[(String, Member)], quiet: u64, message: &[u8]) {
    for (_, member) in members {
        if member.session != quiet {
            host.notify(member.session, message);
        }
    }
}

/// Ends the round if every member left is leaving: they all go, and the barrier closes for the
/// next round. Returns whether it ended.
fn finish_round(
    host: &mut dyn Host,
    name: &str,
    barrier: &str,
    state: &BarrierRecord,
    quiet: u64,
) -> Result<bool, String> {
    let all = members(host, barrier)?;
    if !state.open || !all.iter().all(|(_, m)| m.leaving) {
        return Ok(false);
    }
    // Notified while their member znodes still stand: the host delivers a recipe's messages
    // only to sessions with a stake in it (an ephemeral znode in its namespace, or the caller).
    let note = Left { barrier: name.to_string(), left: true, round: state.round };
    notify_all(host, &all, quiet, &encode(&note));
    for (path, _) in &all {
        host.delete(path, None).map_err(|e| e.to_string())?;
    }
    let next = BarrierRecord { round: state.round + 1, open: false, ..*state };
    records::write(host, barrier, &next)?;
    Ok(true)
}

/// `enter`: the caller's membership (once); opens the round when enough are in.
fn enter(host: &mut dyn Host, args: Enter) -> Result<EnterReply, String> {
    let barrier = barrier_path(&args.barrier)?;
    let state: Option<BarrierRecord> = records::read(host, &barrier)?;
    let session = host.caller_session(Enter::NAME)?;
    let state = match (state, args.count) {
        (Some(state), Some(asked)) if state.count != asked => {
            return Err(format!("{} is a barrier of {}, not {asked}", args.barrier, state.count));
        }
        (Some(state), _) => state,
        (None, Some(count)) if count > 0 => {
            let state = BarrierRecord { count, round: 1, open: false };
            records::create(host, &barrier, &state, Mode::Persistent, false)?;
            state
        }
        (None, _) => {
            return Err(format!("{} is new: say how many it waits for", args.barrier));
        }
    };
    let mut all = members(host, &barrier)?;
    if !all.iter().any(|(_, m)| m.session == session) {
        let me = Member { session, leaving: false };
        let path = records::create(host, &format!("{barrier}/m-"), &me, Mode::Ephemeral, true)?;
        all.push((path, me));
    }
    if !state.open && all.len() >= state.count as usize {
        records::write(host, &barrier, &BarrierRecord { open: true, ..state })?;
        let note = Entered { barrier: args.barrier, entered: true, round: state.round };
        notify_all(host, &all, session, &encode(&note));
        return Ok(EnterReply { entered: true, round: state.round });
    }
    Ok(EnterReply { entered: state.open, round: state.round })
}

/// `leave`: withdraws before the round, or marks the caller leaving and ends the round if all
/// are.
fn leave(host: &mut dyn Host, args: Leave) -> Result<LeaveReply, String> {
    let barrier = barrier_path(&args.barrier)?;
    let session = host.session();
    let state: Option<BarrierRecord> = records::read(host, &barrier)?;
    let state = state.ok_or_else(|| format!("no barrier {}", args.barrier))?;
    let all = members(host, &barrier)?;
    let Some((path, me)) = all.iter().find(|(_, m)| m.session == session) else {
        return Err(format!("session {session:#x} is not in {}", args.barrier));
    };
    if !state.open {
        host.delete(path, None).map_err(|e| e.to_string())?;
        return Ok(LeaveReply { left: true, round: state.round });
    }
    records::write(host, path, &Member { leaving: true, ..me.clone() })?;
    let done = finish_round(host, &args.barrier, &barrier, &state, session)?;
    Ok(LeaveReply { left: done, round: state.round })
}

/// `status`: the record, or its absence, and the members.
fn status(host: &mut dyn Host, args: Status) -> Result<StatusReply, String> {
    let barrier = barrier_path(&args.barrier)?;
    let state: Option<BarrierRecord> = records::read(host, &barrier)?;
    let all = members(host, &barrier)?;
    let leaving = all.iter().filter(|(_, m)| m.leaving).count();
    Ok(match state {
        Some(state) => StatusReply {
            count: Some(state.count),
            round: state.round,
            open: state.open,
            members: all.len() as u64,
            leaving: leaving as u64,
        },
        None => StatusReply { count: None, round: 0, open: false, members: 0, leaving: 0 },
    })
}

impl Recipe for Barrier {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        match op {
            Enter::NAME => serve(args, |args| enter(host, args)),
            Leave::NAME => serve(args, |args| leave(host, args)),
            Status::NAME => serve(args, |args| status(host, args)),
            other => Err(format!("unknown op {other:?}; barrier knows enter, leave, status")),
        }
    }

    fn on_session_ended(host: &mut dyn Host, _session: u64, deleted: Vec<String>) {
        for barrier in records::parents(&deleted) {
            let name = barrier.trim_start_matches('/').to_string();
            if let Ok(Some(state)) = records::read::<BarrierRecord>(host, &barrier) {
                let _ = finish_round(host, &name, &barrier, &state, 0);
            }
        }
    }
}

cairn_recipe::export!(Barrier);

#[cfg(test)]
mod tests {
    use cairn_recipe::testing::MemoryHost;
    use serde_json::{Value, json};

    use super::*;

    fn call(host: &mut MemoryHost, session: u64, op: &str, args: Value) -> Value {
        let reply = host.invoke::<Barrier>(session, op, args.to_string().as_bytes()).expect(op);
        serde_json::from_slice(&reply).expect("json")
    }

    fn enter(host: &mut MemoryHost, session: u64) -> Value {
        call(host, session, "enter", json!({"barrier": "b", "count": 3}))
    }

    fn leave(host: &mut MemoryHost, session: u64) -> Value {
        call(host, session, "leave", json!({"barrier": "b"}))
    }

    #[test]
    fn nobody_starts_before_all_enter_nor_leaves_before_all_are_done() {
        let mut host = MemoryHost::default();
        assert_eq!(enter(&mut host, 1), json!({"entered": false, "round": 1}));
        assert_eq!(enter(&mut host, 2), json!({"entered": false, "round": 1}));
        assert_eq!(enter(&mut host, 3), json!({"entered": true, "round": 1}));
        let told: Vec<u64> = host.notifications.iter().map(|(s, _)| *s).collect();
        assert_eq!(told, [1, 2]);
        assert_eq!(leave(&mut host, 1), json!({"left": false, "round": 1}));
        assert_eq!(leave(&mut host, 3), json!({"left": false, "round": 1}));
        assert_eq!(leave(&mut host, 2), json!({"left": true, "round": 1}));
        assert_eq!(
            host.notifications[2..].to_vec(),
            [1, 3].map(|s| (s, br#"{"barrier":"b","left":true,"round":1}"#.to_vec()))
        );
        assert_eq!(
            call(&mut host, 9, "status", json!({"barrier": "b"})),
            json!({"count": 3, "round": 2, "open": false, "members": 0, "leaving": 0})
        );
        assert!(host.invoke::<Barrier>(4, "enter", br#"{"barrier":"b","count":4}"#).is_err());
    }

    #[test]
    fn a_member_whose_session_ends_does_not_hold_the_others() {
        let mut host = MemoryHost::default();
        enter(&mut host, 1);
        enter(&mut host, 2);
        host.end_session::<Barrier>(2);
        assert_eq!(enter(&mut host, 3), json!({"entered": false, "round": 1}), "2 withdrew");
        assert_eq!(enter(&mut host, 4), json!({"entered": true, "round": 1}));
        leave(&mut host, 1);
        leave(&mut host, 3);
        host.end_session::<Barrier>(4);
        assert_eq!(call(&mut host, 9, "status", json!({"barrier": "b"}))["round"], 2);
    }
}
