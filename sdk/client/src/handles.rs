//! Typed handles on the built-in election and semaphore recipes.

use serde_json::{Value, json};

use crate::{Client, Error, SessionState};

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
async fn wait_for_grant<F, Fut>(
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

/// A named leader election. See [`Client::election`].
#[derive(Debug, Clone)]
pub struct Election {
    client: Client,
    name: String,
}

/// This session leads the election, for `term` (a fencing token: larger than every earlier
/// leader's). Resign with [`Leadership::resign`]; ending the session resigns too.
#[derive(Debug)]
pub struct Leadership {
    election: Election,
    term: u64,
    resigned: bool,
}

impl Client {
    /// A handle on the leader election `name`.
    pub fn election(&self, name: &str) -> Election {
        Election { client: self.clone(), name: name.to_string() }
    }

    /// A handle on the counting semaphore `name` of `permits` permits.
    pub fn semaphore(&self, name: &str, permits: u64) -> Semaphore {
        Semaphore { client: self.clone(), name: name.to_string(), permits }
    }
}

impl Election {
    /// Stands as a candidate with `data` (an address, say) and waits until elected.
    pub async fn campaign(&self, data: &str) -> Result<Leadership, Error> {
        let notifications = self.client.notifications();
        let reply = call(
            &self.client,
            "election",
            "campaign",
            json!({ "election": self.name, "data": data }),
        )
        .await?;
        if reply["leader"] == true {
            let term = fencing_token(&reply, "term", "election")?;
            return Ok(Leadership { election: self.clone(), term, resigned: false });
        }
        let me = self.client.session_id();
        let elected = wait_for_grant(
            &self.client,
            notifications,
            "election",
            "election",
            &self.name,
            || async {
                let now =
                    call(&self.client, "election", "leader", json!({ "election": self.name }))
                        .await?;
                Ok((now["leader"].as_u64() == Some(me)).then_some(now))
            },
        )
        .await?;
        let term = fencing_token(&elected, "term", "election")?;
        Ok(Leadership { election: self.clone(), term, resigned: false })
    }

    /// The leading session and its term.
    pub async fn leader(&self) -> Result<(Option<u64>, u64, Value), Error> {
        let now =
            call(&self.client, "election", "leader", json!({ "election": self.name })).await?;
        Ok((now["leader"].as_u64(), now["term"].as_u64().unwrap_or(0), now["data"].clone()))
    }
}

impl Leadership {
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Steps down; the next candidate is elected.
    pub async fn resign(mut self) -> Result<(), Error> {
        self.resigned = true;
        call(&self.election.client, "election", "resign", json!({ "election": self.election.name }))
            .await
            .map(|_| ())
    }
}

impl Drop for Leadership {
    /// Resigns in the background.
    fn drop(&mut self) {
        if !self.resigned {
            let args = json!({ "election": self.election.name });
            call_in_background(&self.election.client, "election", "resign", args);
        }
    }
}

/// Who leads an election: the session, its term, and the data it campaigned with.
#[derive(Debug, Clone, PartialEq)]
pub struct Leader {
    pub session: Option<u64>,
    pub term: u64,
    pub data: Value,
}

/// Leader changes of an election, from a watch on its znode. See [`Election::observe`].
#[derive(Debug)]
pub struct LeaderWatch {
    election: Election,
    events: crate::WatchStream,
    last: Option<Leader>,
}

impl Election {
    /// The znode holding the election's leader and term: what observers watch.
    pub fn path(&self) -> String {
        format!("/cairn/recipes/election/{}", self.name)
    }

    /// Follows the leadership: the current leader first, then every change.
    pub async fn observe(&self) -> Result<LeaderWatch, Error> {
        let events = self.client.watch(&self.path(), false).await?;
        Ok(LeaderWatch { election: self.clone(), events, last: None })
    }

    /// The leader as the election's znode says, read without a log entry.
    async fn read_leader(&self) -> Result<Leader, Error> {
        match self.client.get(&self.path()).await {
            Ok((data, _)) => {
                let state = parse(&data)?;
                Ok(Leader {
                    session: state["leader"].as_u64(),
                    term: state["term"].as_u64().unwrap_or(0),
                    data: state["data"].clone(),
                })
            }
            Err(error) if error.code() == Some(cairn_wire::ErrorCode::NoNode) => {
                Ok(Leader { session: None, term: 0, data: Value::Null })
            }
            Err(error) => Err(error),
        }
    }
}

impl LeaderWatch {
    /// The leader now if not reported yet, else waits for the next change of leader or term.
    pub async fn next(&mut self) -> Result<Leader, Error> {
        loop {
            let now = self.election.read_leader().await?;
            if self.last.as_ref() != Some(&now) {
                self.last = Some(now.clone());
                return Ok(now);
            }
            if self.events.next().await.is_none() {
                return Err(Error::Api(
                    cairn_wire::ApiError::new(cairn_wire::ErrorCode::SessionExpired)
                        .with_detail(format!("the session ended observing {}", self.election.name)),
                ));
            }
        }
    }
}

/// A named counting semaphore. See [`Client::semaphore`].
#[derive(Debug, Clone)]
pub struct Semaphore {
    client: Client,
    name: String,
    permits: u64,
}

/// `count` permits held; returned with [`Permits::release`], in the background when dropped, or
/// when the session ends.
#[derive(Debug)]
pub struct Permits {
    semaphore: Semaphore,
    count: u64,
    released: bool,
}

impl Semaphore {
    /// Waits in line for `count` permits.
    pub async fn acquire(&self, count: u64) -> Result<Permits, Error> {
        let args = json!({ "sem": self.name, "permits": self.permits, "count": count });
        let notifications = self.client.notifications();
        let reply = call(&self.client, "semaphore", "acquire", args).await?;
        if reply["granted"] != true {
            let me = self.client.session_id();
            wait_for_grant(&self.client, notifications, "semaphore", "sem", &self.name, || async {
                let status =
                    call(&self.client, "semaphore", "status", json!({ "sem": self.name })).await?;
                let holders = status["holders"].as_array().cloned().unwrap_or_default();
                Ok(holders.iter().any(|s| s.as_u64() == Some(me)).then(|| json!({})))
            })
            .await?;
        }
        Ok(Permits { semaphore: self.clone(), count, released: false })
    }
}

impl Permits {
    pub fn count(&self) -> u64 {
        self.count
    }

    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        call(&self.semaphore.client, "semaphore", "release", json!({ "sem": self.semaphore.name }))
            .await
            .map(|_| ())
    }
}

impl Drop for Permits {
    fn drop(&mut self) {
        if !self.released {
            let args = json!({ "sem": self.semaphore.name });
            call_in_background(&self.semaphore.client, "semaphore", "release", args);
        }
    }
}
