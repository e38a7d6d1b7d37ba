//! Histories of concurrent operations and the checks run on them: linearizability of znode
//! operations (a Wing–Gong search with memoization, as in Porcupine, per key since operations
//! on different znodes commute), and the lock properties fencing tokens promise.
//!
//! An operation is recorded when invoked and when it completed, with the result the client saw.
//! An operation whose outcome the client cannot know (the connection dropped, the request timed
//! out) completes "never": it may have taken effect at any point after its invocation, or not at
//! all.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// What a client asked of one znode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    Create(u64),
    Set(u64),
    /// Set only if the znode is at this version.
    Cas {
        version: u32,
        value: u64,
    },
    Delete,
    Get,
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// create, set, cas and delete that took effect; `Some(version)` for those that report one.
    Done(Option<u32>),
    /// The znode's value and version, or `None` when it did not exist.
    Read(Option<(u64, u32)>),
    /// Refused for a reason the model decides: no node, node exists, bad version.
    NoNode,
    NodeExists,
    BadVersion,
    /// The client cannot know whether it happened.
    Unknown,
}

/// One operation on one key, between its invocation and its completion.
#[derive(Debug, Clone)]
pub struct Event {
    pub key: String,
    pub op: Op,
    pub outcome: Outcome,
    pub invoked: Instant,
    /// `None` for an operation whose outcome is unknown: it may take effect any time after.
    pub completed: Option<Instant>,
}

/// The state of one znode in the model: its value and version, or absent.
type Register = Option<(u64, u32)>;

/// Applies `op` to `state` as the service should; returns the next state and the outcome a
/// client must see.
fn step(state: Register, op: &Op) -> (Register, Outcome) {
    match (op, state) {
        (Op::Create(value), None) => (Some((*value, 0)), Outcome::Done(None)),
        (Op::Create(_), Some(_)) => (state, Outcome::NodeExists),
        (Op::Set(value), Some((_, version))) => {
            (Some((*value, version + 1)), Outcome::Done(Some(version + 1)))
        }
        (Op::Set(_), None) => (state, Outcome::NoNode),
        (Op::Cas { version, value }, Some((_, now))) if *version == now => {
            (Some((*value, now + 1)), Outcome::Done(Some(now + 1)))
        }
        (Op::Cas { .. }, Some(_)) => (state, Outcome::BadVersion),
        (Op::Cas { .. }, None) => (state, Outcome::NoNode),
        (Op::Delete, Some(_)) => (None, Outcome::Done(None)),
        (Op::Delete, None) => (state, Outcome::NoNode),
        (Op::Get, state) => (state, Outcome::Read(state)),
    }
}

/// Why a history is not linearizable, for the test's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    pub events: usize,
}

/// Checks every key's operations for linearizability; `Err` names the first key whose history
/// no order explains. Every key starts absent.
pub fn check_linearizable(events: &[Event]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for event in events {
        by_key.entry(&event.key).or_default().push(event);
    }
    for (key, events) in by_key {
        if !linearizable(&events) {
            return Err(Violation { key: key.to_string(), events: events.len() });
        }
    }
    Ok(())
}

/// Most operations on one key the search takes (a bit set of them is its memo key).
pub const EVENTS_PER_KEY_MAX: usize = 128;

/// Wing–Gong: pick, among the operations not yet placed, one that nothing unplaced must come
/// before (invoked before every unplaced operation completed), apply it to the model, and go on;
/// back up when the model disagrees with what the client saw. States already explored with the
/// same set of placed operations are not explored again.
fn linearizable(events: &[&Event]) -> bool {
    assert!(events.len() <= EVENTS_PER_KEY_MAX, "{} events on one key", events.len());
    let done_mask: u128 = if events.len() == 128 { u128::MAX } else { (1u128 << events.len()) - 1 };
    let mut seen: HashSet<(u128, Register)> = HashSet::new();
    // Depth-first: (placed set, state).
    let mut stack: Vec<(u128, Register)> = vec![(0, None)];
    while let Some((placed, state)) = stack.pop() {
        // Unknown-outcome operations need not be placed at all.
        let required = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.completed.is_some())
            .all(|(i, _)| placed & (1 << i) != 0);
        if placed == done_mask || required {
            return true;
        }
        if !seen.insert((placed, state)) {
            continue;
        }
        // The earliest completion among unplaced operations: nothing invoked after it may go
        // before it.
        let horizon = events
            .iter()
            .enumerate()
            .filter(|(i, _)| placed & (1 << i) == 0)
            .filter_map(|(_, e)| e.completed)
            .min();
        for (i, event) in events.iter().enumerate() {
            if placed & (1 << i) != 0 || horizon.is_some_and(|h| event.invoked > h) {
                continue;
            }
            let (next, outcome) = step(state, &event.op);
            let agrees = match &event.outcome {
                Outcome::Unknown => true,
                // A set reports the version it made; create and delete report none.
                seen_outcome => *seen_outcome == outcome,
            };
            if agrees {
                stack.push((placed | (1 << i), next));
            }
        }
    }
    false
}

/// One grant of a lock as a client saw it: the token, when the grant reached it, and when it
/// began to release (`None` if it never did: its session was lost).
#[derive(Debug, Clone)]
pub struct Hold {
    pub holder: usize,
    pub token: u64,
    pub granted: Instant,
    pub released: Option<Instant>,
}

/// Checks what fencing tokens promise: every grant has its own token (one holder may see its
/// token again, re-entrantly); a grant that began after
/// another had been released has a larger token; and no two holds overlap in time (a hold runs
/// from the grant reaching its holder to the holder starting to release).
pub fn check_lock(holds: &[Hold]) -> Result<(), String> {
    // A token names one grant to one session; the same session may get it again (a re-entrant
    // acquire after a release that did not get through).
    let mut tokens: BTreeMap<u64, usize> = BTreeMap::new();
    for hold in holds {
        if let Some(other) = tokens.insert(hold.token, hold.holder)
            && other != hold.holder
        {
            return Err(format!(
                "token {} granted to holders {other} and {}",
                hold.token, hold.holder
            ));
        }
    }
    for a in holds {
        for b in holds {
            if a.token >= b.token {
                continue;
            }
            // `a` has the smaller token: `b` must not have been released before `a` was
            // granted, and their holds must not overlap (a hold never released lasts forever).
            if b.released.is_some_and(|end| end < a.granted) {
                return Err(format!(
                    "holder {} released token {} before holder {} was granted the smaller {}",
                    b.holder, b.token, a.holder, a.token
                ));
            }
            let a_end_after_b_start = a.released.is_none_or(|end| b.granted < end);
            let b_end_after_a_start = b.released.is_none_or(|end| a.granted < end);
            if a_end_after_b_start && b_end_after_a_start {
                return Err(format!(
                    "holders {} (token {}) and {} (token {}) held the lock at once",
                    a.holder, a.token, b.holder, b.token
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(start: Instant, from_ms: u64, to_ms: Option<u64>, op: Op, outcome: Outcome) -> Event {
        Event {
            key: "k".into(),
            op,
            outcome,
            invoked: start + Duration::from_millis(from_ms),
            completed: to_ms.map(|ms| start + Duration::from_millis(ms)),
        }
    }

    #[test]
    fn overlapping_operations_may_take_either_order() {
        let t = Instant::now();
        let history = [
            at(t, 0, Some(10), Op::Create(1), Outcome::Done(None)),
            at(t, 20, Some(40), Op::Set(2), Outcome::Done(Some(1))),
            // Overlaps the set: may see either value.
            at(t, 25, Some(35), Op::Get, Outcome::Read(Some((1, 0)))),
            at(t, 50, Some(60), Op::Get, Outcome::Read(Some((2, 1)))),
            // Never answered: may or may not have happened.
            at(t, 55, None, Op::Delete, Outcome::Unknown),
            at(t, 70, Some(80), Op::Cas { version: 1, value: 3 }, Outcome::Done(Some(2))),
        ];
        assert_eq!(check_linearizable(&history), Ok(()));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let t = Instant::now();
        let history = [
            at(t, 0, Some(10), Op::Create(1), Outcome::Done(None)),
            at(t, 20, Some(30), Op::Set(2), Outcome::Done(Some(1))),
            // Invoked after the set completed, yet saw the old value.
            at(t, 40, Some(50), Op::Get, Outcome::Read(Some((1, 0)))),
        ];
        assert_eq!(check_linearizable(&history), Err(Violation { key: "k".into(), events: 3 }));
        // A lost write that the history needs is caught too.
        let lost = [
            at(t, 0, Some(10), Op::Create(1), Outcome::Done(None)),
            at(t, 20, Some(30), Op::Get, Outcome::Read(None)),
        ];
        assert!(check_linearizable(&lost).is_err());
    }

    #[test]
    fn the_lock_checker_catches_overlaps_and_backward_tokens() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let fine = [
            Hold { holder: 0, token: 1, granted: ms(0), released: Some(ms(10)) },
            Hold { holder: 1, token: 2, granted: ms(12), released: Some(ms(20)) },
        ];
        assert_eq!(check_lock(&fine), Ok(()));
        let overlapping = [
            Hold { holder: 0, token: 1, granted: ms(0), released: Some(ms(10)) },
            Hold { holder: 1, token: 2, granted: ms(5), released: Some(ms(20)) },
        ];
        assert!(check_lock(&overlapping).is_err());
        let backward = [
            Hold { holder: 0, token: 2, granted: ms(0), released: Some(ms(10)) },
            Hold { holder: 1, token: 1, granted: ms(12), released: Some(ms(20)) },
        ];
        assert!(check_lock(&backward).is_err());
        let shared = [
            Hold { holder: 0, token: 1, granted: ms(0), released: Some(ms(10)) },
            Hold { holder: 1, token: 1, granted: ms(12), released: Some(ms(20)) },
        ];
        assert!(check_lock(&shared).is_err(), "one token, two holders");
        let again = [
            Hold { holder: 0, token: 1, granted: ms(0), released: Some(ms(10)) },
            Hold { holder: 0, token: 1, granted: ms(12), released: Some(ms(20)) },
        ];
        assert_eq!(check_lock(&again), Ok(()), "re-entrant");
    }
}
