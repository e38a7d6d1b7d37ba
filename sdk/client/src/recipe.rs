//! Calling the built-in recipes: a typed call (`cairn_builtins`' op types), a call left to run
//! when a grant is dropped, and waiting for a grant (a notification is a hint; the recipe's
//! state confirms it). The typed handles, one file per recipe, are built on these.

use cairn_builtins::{Note, Op};

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

/// Notifications, subscribed to before the call whose grant they may bring.
pub(crate) type Notifications = tokio::sync::broadcast::Receiver<crate::Notification>;

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
    use super::*;

    #[test]
    fn a_grant_without_a_fencing_token_is_an_error_never_a_zero() {
        assert_eq!(positive(Some(7), "fair-lock").expect("a token"), 7);
        assert!(matches!(positive(Some(0), "fair-lock"), Err(Error::Protocol(_))));
        assert!(matches!(positive(None, "election"), Err(Error::Protocol(_))));
    }
}
