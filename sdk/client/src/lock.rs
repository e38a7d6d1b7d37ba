//! Typed handles on the built-in fair-lock recipe.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::recipe::{
    call_in_background, fencing_token, list, nullable_number, number, wait_for_note,
};
use crate::{Client, Error};

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
        if reply["granted"] != true {
            return Ok(None);
        }
        Ok(Some(self.guard(fencing_token(&reply, "token", FAIR_LOCK)?)))
    }

    /// Waits in line for the lock. A grant's notification only says when to look: the guard
    /// is handed out once the lock's state names this session as the holder (so no other
    /// recipe's message, nor a stale one, can pass for a grant); the state is read again after
    /// a reconnect and now and then, and the wait ends with an error if the session ends.
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        let notifications = self.client.notifications();
        let reply = self.call("acquire", true).await?;
        if reply["granted"] == true {
            return Ok(self.guard(fencing_token(&reply, "token", FAIR_LOCK)?));
        }
        let granted = wait_for_note(
            &self.client,
            notifications,
            FAIR_LOCK,
            &self.name,
            |note| note["lock"] == self.name.as_str(),
            || self.granted_here(),
        )
        .await?;
        Ok(self.guard(fencing_token(&granted, "token", FAIR_LOCK)?))
    }

    /// Whether the lock's state, as the connected node has it, shows this session holding the
    /// lock: `{"token": T}` if so. Read locally, without a log entry: the node delivered the
    /// grant's notification after applying it, so its state has the grant; a state read
    /// elsewhere or earlier can only be behind, and show no grant yet (this session cannot
    /// lose a hold while it waits for one). The layout is fair-lock's (see its crate docs):
    /// the first waiter by sequence number holds the lock, its record's `count` above 0.
    async fn granted_here(&self) -> Result<Option<Value>, Error> {
        let lock = format!("/cairn/recipes/{FAIR_LOCK}/{}", self.name);
        let names = match self.client.local().children(&lock).await {
            Ok(names) => names,
            Err(error) if error.code() == Some(cairn_wire::ErrorCode::NoNode) => return Ok(None),
            Err(error) => return Err(error),
        };
        let head = names
            .iter()
            .filter_map(|name| {
                let (_session, sequence) = name.strip_prefix("w-")?.split_once('-')?;
                Some((sequence, name))
            })
            .min();
        let mine = format!("w-{:016x}-", self.client.session_id());
        let Some((_, head)) = head.filter(|(_, name)| name.starts_with(&mine)) else {
            return Ok(None);
        };
        let (data, _) = self.client.local().get(&format!("{lock}/{head}")).await?;
        let record = parse(&data)?;
        let held = number(&record, "count", FAIR_LOCK)? > 0;
        Ok(held.then(|| json!({ "token": record["token"] })))
    }

    /// Who holds the lock and who waits.
    pub async fn status(&self) -> Result<LockStatus, Error> {
        let reply = self.call("status", true).await?;
        let queue = list(&reply, "queue", FAIR_LOCK)?
            .iter()
            .map(|waiter| {
                waiter
                    .as_u64()
                    .ok_or_else(|| Error::Protocol(format!("{FAIR_LOCK} queue: {reply}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(LockStatus {
            holder: nullable_number(&reply, "holder", FAIR_LOCK)?,
            token: number(&reply, "token", FAIR_LOCK)?,
            queue,
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

/// A fencing token as a grant must carry one: never 0.
fn positive(token: u64) -> Result<u64, Error> {
    if token == 0 {
        return Err(Error::Protocol(format!("{FAIR_LOCK} granted without a fencing token")));
    }
    Ok(token)
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
        if reply["granted"] != true {
            return Ok(None);
        }
        self.granted(&reply["tokens"]).map(Some)
    }

    /// Waits in line at every lock and takes them all at once.
    pub async fn acquire(&self) -> Result<MultiLockGuard, Error> {
        let notifications = self.client.notifications();
        let reply = self.call("acquire-all", true).await?;
        if reply["granted"] == true {
            return self.granted(&reply["tokens"]);
        }
        let me = self.client.session_id();
        let mine = |tokens: &BTreeMap<String, u64>| {
            tokens.len() == self.names.iter().collect::<std::collections::BTreeSet<_>>().len()
                && self.names.iter().all(|name| tokens.contains_key(name))
        };
        let note = wait_for_note(
            &self.client,
            notifications,
            FAIR_LOCK,
            &self.names.join(","),
            |note| mine(&tokens_of(&note["locks"])),
            || async {
                let mut tokens = BTreeMap::new();
                for name in &self.names {
                    let status = self.client.lock(name).status().await?;
                    if status.holder != Some(me) {
                        return Ok(None);
                    }
                    tokens.insert(name.clone(), positive(status.token)?);
                }
                Ok(Some(json!({ "locks": tokens })))
            },
        )
        .await?;
        self.granted(&note["locks"])
    }

    /// The guard of a grant of every lock, each with its fencing token.
    fn granted(&self, tokens: &Value) -> Result<MultiLockGuard, Error> {
        let tokens = tokens_of(tokens);
        for name in &self.names {
            positive(tokens.get(name).copied().unwrap_or(0))?;
        }
        Ok(self.guard(tokens))
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
