//! Calling the built-in recipes: a typed call (`cairn_builtins`' op types), a call left to run
//! when a grant is dropped, and waiting for a grant (a notification is a hint; the recipe's
//! state confirms it). The typed handles, one file per recipe, are built on these.

use cairn_builtins::{Note, Op};
use serde_json::Value;

use crate::{Client, Error, SessionState};

/// Calls op `O` of its recipe with `args`; an answer that is not `O::Reply` is a protocol
/// error, never a default.
pub(crate) async fn call_op<O: Op>(client: &Client, args: &O) -> Result<O::Reply, Error> {
    let reply = client.invoke(O::RECIPE, None, O::NAME, cairn_builtins::encode(args)).await?;
    cairn_builtins::decode(&reply).map_err(|e| {
        let reply = String::from_utf8_lossy(&reply);
        Error::Protocol(format!("{} answered {} with {reply}: {e}", O::RECIPE, O::NAME))
    })
}

/// Calls op `O` without waiting for the answer: what dropping a held grant does. Needs a
/// running async runtime (there is none while the program shuts down; the session's end then
/// releases everything).
pub(crate) fn call_op_in_background<O: Op + Send + Sync + 'static>(client: &Client, args: O) {
    let client = client.clone();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = call_op(&client, &args).await;
        });
    }
}

/// A grant's fencing token, which is never 0.
pub(crate) fn positive(token: Option<u64>, recipe: &str) -> Result<u64, Error> {
    token
        .filter(|token| *token > 0)
        .ok_or_else(|| Error::Protocol(format!("{recipe} granted without a fencing token")))
}

/// Waits until `check` says the wait is over, and returns what it said. `check` runs after a
/// notification `N` that `matches`, after a lagging receiver lost some, and after a reconnect:
/// a notification is only a hint, never a grant (another recipe may have sent it, or it may be
/// stale), so what the state says is always what ends the wait. Fails when the session ends;
/// `what` names the wait in that error.
pub(crate) async fn wait_for<N, T, M, F, Fut>(
    client: &Client,
    mut notifications: Notifications,
    what: &str,
    matches: M,
    mut check: F,
) -> Result<T, Error>
where
    N: Note,
    M: Fn(&N) -> bool,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Error>>,
{
    let mut state = client.session_state();
    // A notification may never come (a stream too far behind loses some): look anyway, now
    // and then.
    let mut recheck = tokio::time::interval(client.session_timeout());
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.tick().await;
    loop {
        tokio::select! {
            note = notifications.recv() => {
                match note {
                    Ok(note) if note.is_from(N::RECIPE)
                        && cairn_builtins::decode::<N>(&note.message)
                            .is_ok_and(|note| matches(&note)) => {}
                    // Missed notifications: the state tells what they said.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err(Error::ConnectionLost("the client is gone".into()));
                    }
                    Ok(_) => continue,
                }
            }
            changed = state.changed() => {
                let now = *state.borrow();
                if changed.is_err() || matches!(now, SessionState::Expired | SessionState::Closed) {
                    return Err(Error::Api(cairn_wire::ApiError::new(cairn_wire::ErrorCode::SessionExpired)
                        .with_detail(format!("the session ended waiting for {what}"))));
                }
                if now == SessionState::Suspended {
                    continue;
                }
            }
            _ = recheck.tick() => {}
        }
        match check().await {
            Ok(Some(granted)) => return Ok(granted),
            Ok(None) => {}
            // The grant may be there already: only the look failed, not the wait, so it is
            // made again at the next wake-up (the session's end still ends the wait).
            Err(error) if is_transient(&error) => {}
            Err(error) => return Err(error),
        }
    }
}

pub(crate) fn parse(reply: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(reply).map_err(|e| Error::Protocol(format!("recipe answered {e}")))
}

pub(crate) async fn call(
    client: &Client,
    recipe: &str,
    op: &str,
    args: Value,
) -> Result<Value, Error> {
    parse(&client.invoke(recipe, None, op, args.to_string().into_bytes()).await?)
}

/// Calls `op` of `recipe` without waiting for the answer: what dropping a held grant does. Needs
/// a running async runtime (there is none while the program shuts down; the session's end then
/// releases everything).
pub(crate) fn call_in_background(
    client: &Client,
    recipe: &'static str,
    op: &'static str,
    args: Value,
) {
    let client = client.clone();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = call(&client, recipe, op, args).await;
        });
    }
}

/// Waits for a notification of `recipe` whose `key` is `name`, then confirms the grant with
/// `check` (notifications are hints); fails when the session ends.
pub(crate) async fn wait_for_grant<F, Fut>(
    client: &Client,
    notifications: Notifications,
    recipe: &str,
    key: &str,
    name: &str,
    check: F,
) -> Result<Value, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Value>, Error>>,
{
    wait_for_note(client, notifications, recipe, name, |note| note[key] == name, check).await
}

/// The fencing token under `key` of a recipe's answer: a grant without one is an error, never
/// token 0.
pub(crate) fn fencing_token(answer: &Value, key: &str, recipe: &str) -> Result<u64, Error> {
    answer[key].as_u64().filter(|token| *token > 0).ok_or_else(|| {
        Error::Protocol(format!("{recipe} granted without a fencing token: {answer}"))
    })
}

/// The unsigned number `key` of a recipe's answer: an error, never a default, when the answer
/// lacks it (a reply whose shape changed must not pass for a count or a term of 0).
pub(crate) fn number(answer: &Value, key: &str, recipe: &str) -> Result<u64, Error> {
    answer[key].as_u64().ok_or_else(|| malformed(answer, key, recipe))
}

/// A number that may be null (a lock with no holder): `None` for null, an error when the
/// field is missing or not a number.
pub(crate) fn nullable_number(
    answer: &Value,
    key: &str,
    recipe: &str,
) -> Result<Option<u64>, Error> {
    match &answer[key] {
        Value::Null if answer.get(key).is_some() => Ok(None),
        value => value.as_u64().map(Some).ok_or_else(|| malformed(answer, key, recipe)),
    }
}

/// The array `key` of a recipe's answer.
pub(crate) fn list<'a>(answer: &'a Value, key: &str, recipe: &str) -> Result<&'a [Value], Error> {
    answer[key].as_array().map(Vec::as_slice).ok_or_else(|| malformed(answer, key, recipe))
}

fn malformed(answer: &Value, key: &str, recipe: &str) -> Error {
    Error::Protocol(format!("{recipe} answered without a valid {key:?}: {answer}"))
}

/// Notifications, subscribed to before the call whose grant they may bring.
pub(crate) type Notifications = tokio::sync::broadcast::Receiver<crate::Notification>;

/// Waits until `check` says the wait is over, and returns what it said. `check` runs after a
/// notification of `recipe` that `matches`, after a lagging receiver lost some, and after a
/// reconnect: a notification is only a hint, never a grant (another recipe may have sent it, or
/// it may be stale), so what the state says is always what ends the wait. Fails when the
/// session ends; `what` names the wait in that error.
pub(crate) async fn wait_for_note<M, F, Fut>(
    client: &Client,
    mut notifications: Notifications,
    recipe: &str,
    what: &str,
    matches: M,
    mut check: F,
) -> Result<Value, Error>
where
    M: Fn(&Value) -> bool,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Value>, Error>>,
{
    let mut state = client.session_state();
    // A notification may never come (a stream too far behind loses some): look anyway, now
    // and then.
    let mut recheck = tokio::time::interval(client.session_timeout());
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.tick().await;
    loop {
        tokio::select! {
            note = notifications.recv() => {
                match note {
                    Ok(note) if note.is_from(recipe)
                        && parse(&note.message).is_ok_and(|note| matches(&note)) => {}
                    // Missed notifications: the state tells what they said.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err(Error::ConnectionLost("the client is gone".into()));
                    }
                    Ok(_) => continue,
                }
            }
            changed = state.changed() => {
                let now = *state.borrow();
                if changed.is_err() || matches!(now, SessionState::Expired | SessionState::Closed) {
                    return Err(Error::Api(cairn_wire::ApiError::new(cairn_wire::ErrorCode::SessionExpired)
                        .with_detail(format!("the session ended waiting for {what}"))));
                }
                if now == SessionState::Suspended {
                    continue;
                }
            }
            _ = recheck.tick() => {}
        }
        match check().await {
            Ok(Some(granted)) => return Ok(granted),
            Ok(None) => {}
            // The grant may be there already: only the look failed, not the wait, so it is
            // made again at the next wake-up (the session's end still ends the wait).
            Err(error) if is_transient(&error) => {}
            Err(error) => return Err(error),
        }
    }
}

/// Errors after which the same request may simply be made again.
fn is_transient(error: &Error) -> bool {
    matches!(error, Error::ConnectionLost(_))
        || matches!(
            error.code(),
            Some(cairn_wire::ErrorCode::Unavailable | cairn_wire::ErrorCode::NotLeader)
        )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_missing_or_mistyped_field_is_an_error_never_a_zero() {
        let answer = json!({ "term": 7, "leader": null, "queue": [1, 2], "round": "3" });
        assert_eq!(number(&answer, "term", "election").expect("there"), 7);
        assert!(matches!(number(&answer, "token", "election"), Err(Error::Protocol(_))));
        assert!(matches!(number(&answer, "round", "barrier"), Err(Error::Protocol(_))));
        assert_eq!(nullable_number(&answer, "leader", "election").expect("null"), None);
        assert!(nullable_number(&answer, "holder", "fair-lock").is_err(), "missing is not null");
        assert_eq!(list(&answer, "queue", "fair-lock").expect("there").len(), 2);
        assert!(list(&answer, "holders", "rw-lock").is_err());
    }
}
