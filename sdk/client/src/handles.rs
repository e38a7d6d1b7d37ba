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

/// Waits for a notification whose `key` is `name`, re-checking with `check` after reconnects
/// (notifications are hints); fails when the session ends.
async fn wait_for_grant<F, Fut>(
    client: &Client,
    notifications: Notifications,
    key: &str,
    name: &str,
    check: F,
) -> Result<Value, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Value>, Error>>,
{
    wait_for_note(client, notifications, name, |note| note[key] == name, check).await
}

/// Notifications, subscribed to before the call whose grant they may bring.
pub(crate) type Notifications = tokio::sync::broadcast::Receiver<crate::Notification>;

/// Waits for a notification that `matches`, re-checking with `check` after every other
/// notification and after reconnects (notifications are hints: what the state says is the
/// truth); fails when the session ends. `what` names the wait in that error.
pub(crate) async fn wait_for_note<M, F, Fut>(
    client: &Client,
    mut notifications: Notifications,
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
    loop {
        tokio::select! {
            note = notifications.recv() => {
                if let Ok(note) = note
                    && let Ok(note) = parse(&note.message)
                    && matches(&note)
                {
                    return Ok(note);
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
        }
        if let Some(granted) = check().await? {
            return Ok(granted);
        }
    }
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
            return Ok(Leadership {
                election: self.clone(),
                term: reply["term"].as_u64().unwrap_or(0),
            });
        }
        let me = self.client.session_id();
        let note = wait_for_grant(&self.client, notifications, "election", &self.name, || async {
            let now = self.leader().await?;
            Ok((now.0 == Some(me)).then(|| json!({ "term": now.1 })))
        })
        .await?;
        Ok(Leadership { election: self.clone(), term: note["term"].as_u64().unwrap_or(0) })
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
    pub async fn resign(self) -> Result<(), Error> {
        call(&self.election.client, "election", "resign", json!({ "election": self.election.name }))
            .await
            .map(|_| ())
    }
}

/// A named counting semaphore. See [`Client::semaphore`].
#[derive(Debug, Clone)]
pub struct Semaphore {
    client: Client,
    name: String,
    permits: u64,
}

/// `count` permits held; returned with [`Permits::release`] or when the session ends.
#[derive(Debug)]
pub struct Permits {
    semaphore: Semaphore,
    count: u64,
}

impl Semaphore {
    /// Waits in line for `count` permits.
    pub async fn acquire(&self, count: u64) -> Result<Permits, Error> {
        let args = json!({ "sem": self.name, "permits": self.permits, "count": count });
        let notifications = self.client.notifications();
        let reply = call(&self.client, "semaphore", "acquire", args).await?;
        if reply["granted"] != true {
            let me = self.client.session_id();
            wait_for_grant(&self.client, notifications, "sem", &self.name, || async {
                let status =
                    call(&self.client, "semaphore", "status", json!({ "sem": self.name })).await?;
                let holders = status["holders"].as_array().cloned().unwrap_or_default();
                Ok(holders.iter().any(|s| s.as_u64() == Some(me)).then(|| json!({})))
            })
            .await?;
        }
        Ok(Permits { semaphore: self.clone(), count })
    }
}

impl Permits {
    pub fn count(&self) -> u64 {
        self.count
    }

    pub async fn release(self) -> Result<(), Error> {
        call(&self.semaphore.client, "semaphore", "release", json!({ "sem": self.semaphore.name }))
            .await
            .map(|_| ())
    }
}
