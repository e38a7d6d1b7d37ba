//! Typed handles on the built-in fair-lock recipe.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::handles::{call_in_background, wait_for_note};
use crate::{Client, Error, SessionState};

/// The recipe the handles call.
const FAIR_LOCK: &str = "fair-lock";

/// A named fair lock: FIFO, with a fencing token on every grant. See [`Client::lock`].
#[derive(Debug, Clone)]
pub struct Lock {
    client: Client,
    name: String,
}

/// Who holds a lock and who waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockStatus {
    /// The holding session.
    pub holder: Option<u64>,
    /// The last fencing token granted.
    pub token: u64,
    /// Waiting sessions, in order.
    pub queue: Vec<u64>,
}

/// A held lock. Release it with [`LockGuard::release`]; dropping it releases in the background.
/// Use [`LockGuard::token`] to fence every write the lock protects.
#[derive(Debug)]
pub struct LockGuard {
    lock: Lock,
    token: u64,
    released: bool,
}

fn parse(reply: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(reply).map_err(|e| Error::Protocol(format!("fair-lock answered {e}")))
}

impl Client {
    /// A handle on the fair lock `name`.
    pub fn lock(&self, name: &str) -> Lock {
        Lock { client: self.clone(), name: name.to_string() }
    }
}

impl Lock {
    async fn call(&self, op: &str, wait: bool) -> Result<Value, Error> {
        let args = json!({ "lock": self.name, "wait": wait }).to_string();
        parse(&self.client.invoke(FAIR_LOCK, None, op, args.into_bytes()).await?)
    }

    fn guard(&self, token: u64) -> LockGuard {
        LockGuard { lock: self.clone(), token, released: false }
    }

    /// Takes the lock if it is free (or already this session's); `None` if someone holds it.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, Error> {
        let reply = self.call("acquire", false).await?;
        Ok(reply["granted"]
            .as_bool()
            .unwrap_or(false)
            .then(|| self.guard(reply["token"].as_u64().unwrap_or(0))))
    }

    /// Waits in line for the lock. The grant's notification is only a hint: after a reconnect,
    /// or if it never comes, the lock's state is read again, and the wait ends with an error if
    /// the session ends.
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        let mut notifications = self.client.notifications();
        let mut state = self.client.session_state();
        let reply = self.call("acquire", true).await?;
        if reply["granted"] == true {
            return Ok(self.guard(reply["token"].as_u64().unwrap_or(0)));
        }
        loop {
            tokio::select! {
                note = notifications.recv() => {
                    if let Ok(note) = note
                        && let Ok(note) = parse(&note.message)
                        && note["lock"] == self.name.as_str()
                    {
                        return Ok(self.guard(note["token"].as_u64().unwrap_or(0)));
                    }
                    // A lagged receiver may have missed the grant: read the state instead.
                }
                changed = state.changed() => {
                    let now = *state.borrow();
                    match now {
                        SessionState::Expired | SessionState::Closed => {
                            return Err(Error::Api(cairn_wire::ApiError::new(cairn_wire::ErrorCode::SessionExpired)
                                .with_detail(format!("the session ended waiting for {}", self.name))));
                        }
                        SessionState::Suspended => continue,
                        _ if changed.is_err() => {
                            return Err(Error::ConnectionLost("the client is gone".into()));
                        }
                        _ => {}
                    }
                }
            }
            // Notifications are hints: what the state says is the truth.
            let status = self.status().await?;
            if status.holder == Some(self.client.session_id()) {
                return Ok(self.guard(status.token));
            }
        }
    }

    /// Who holds the lock and who waits.
    pub async fn status(&self) -> Result<LockStatus, Error> {
        let reply = self.call("status", true).await?;
        Ok(LockStatus {
            holder: reply["holder"].as_u64(),
            token: reply["token"].as_u64().unwrap_or(0),
            queue: reply["queue"]
                .as_array()
                .map(|q| q.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
        })
    }
}

impl LockGuard {
    /// The fencing token of this grant: larger than every earlier grant of the lock.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Releases one hold of the lock.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        self.lock.call("release", true).await.map(|_| ())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released {
            let args = json!({ "lock": self.lock.name });
            call_in_background(&self.lock.client, FAIR_LOCK, "release", args);
        }
    }
}

/// Several fair locks taken together, in one log entry: all of them or none. See
/// [`Client::locks`].
#[derive(Debug, Clone)]
pub struct MultiLock {
    client: Client,
    names: Vec<String>,
}

/// Several held locks, each with its fencing token. Released together with
/// [`MultiLockGuard::release`], in the background when dropped, or when the session ends.
#[derive(Debug)]
pub struct MultiLockGuard {
    lock: MultiLock,
    tokens: BTreeMap<String, u64>,
    released: bool,
}

fn tokens_of(value: &Value) -> BTreeMap<String, u64> {
    value
        .as_object()
        .map(|tokens| {
            tokens.iter().filter_map(|(name, t)| Some((name.clone(), t.as_u64()?))).collect()
        })
        .unwrap_or_default()
}

impl Client {
    /// A handle on several fair locks at once. Waiters for overlapping sets of locks, named in
    /// any order, never deadlock: each joins all its queues in one log entry.
    pub fn locks(&self, names: &[&str]) -> MultiLock {
        MultiLock { client: self.clone(), names: names.iter().map(|n| n.to_string()).collect() }
    }
}

impl MultiLock {
    async fn call(&self, op: &str, wait: bool) -> Result<Value, Error> {
        let args = json!({ "locks": self.names, "wait": wait });
        parse(&self.client.invoke(FAIR_LOCK, None, op, args.to_string().into_bytes()).await?)
    }

    fn guard(&self, tokens: BTreeMap<String, u64>) -> MultiLockGuard {
        MultiLockGuard { lock: self.clone(), tokens, released: false }
    }

    /// Takes every lock if all are free now; `None` (and nothing taken) otherwise.
    pub async fn try_acquire(&self) -> Result<Option<MultiLockGuard>, Error> {
        let reply = self.call("acquire-all", false).await?;
        Ok((reply["granted"] == true).then(|| self.guard(tokens_of(&reply["tokens"]))))
    }

    /// Waits in line at every lock and takes them all at once.
    pub async fn acquire(&self) -> Result<MultiLockGuard, Error> {
        let notifications = self.client.notifications();
        let reply = self.call("acquire-all", true).await?;
        if reply["granted"] == true {
            return Ok(self.guard(tokens_of(&reply["tokens"])));
        }
        let me = self.client.session_id();
        let mine = |tokens: &BTreeMap<String, u64>| {
            tokens.len() == self.names.iter().collect::<std::collections::BTreeSet<_>>().len()
                && self.names.iter().all(|name| tokens.contains_key(name))
        };
        let note = wait_for_note(
            &self.client,
            notifications,
            &self.names.join(","),
            |note| mine(&tokens_of(&note["locks"])),
            || async {
                let mut tokens = BTreeMap::new();
                for name in &self.names {
                    let status = self.client.lock(name).status().await?;
                    if status.holder != Some(me) {
                        return Ok(None);
                    }
                    tokens.insert(name.clone(), status.token);
                }
                Ok(Some(json!({ "locks": tokens })))
            },
        )
        .await?;
        Ok(self.guard(tokens_of(&note["locks"])))
    }
}

impl MultiLockGuard {
    /// The fencing token of each lock.
    pub fn tokens(&self) -> &BTreeMap<String, u64> {
        &self.tokens
    }

    /// Releases every lock.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        self.lock.call("release-all", true).await.map(|_| ())
    }
}

impl Drop for MultiLockGuard {
    fn drop(&mut self) {
        if !self.released {
            let args = json!({ "locks": self.lock.names });
            call_in_background(&self.lock.client, FAIR_LOCK, "release-all", args);
        }
    }
}
