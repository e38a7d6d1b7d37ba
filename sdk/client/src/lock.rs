//! Typed handles on the built-in fair-lock recipe (`cairn_builtins::fair_lock`).

use std::collections::{BTreeMap, BTreeSet};

use cairn_builtins::fair_lock::{
    self, Acquire, AcquireAll, Granted, GrantedAll, Release, ReleaseAll, Status, Waiter,
};

use crate::recipe::{call_op, call_op_in_background, positive, wait_for};
use crate::{Client, Error};

/// The recipe the handles call.
const FAIR_LOCK: &str = fair_lock::RECIPE;

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

impl Client {
    /// A handle on the fair lock `name`.
    pub fn lock(&self, name: &str) -> Lock {
        Lock { client: self.clone(), name: name.to_string() }
    }
}

impl Lock {
    fn acquire_args(&self, wait: bool) -> Acquire {
        Acquire { lock: self.name.clone(), wait }
    }

    fn guard(&self, token: u64) -> LockGuard {
        LockGuard { lock: self.clone(), token, released: false }
    }

    /// Takes the lock if it is free (or already this session's); `None` if someone holds it.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, Error> {
        let reply = call_op(&self.client, &self.acquire_args(false)).await?;
        if !reply.granted {
            return Ok(None);
        }
        Ok(Some(self.guard(positive(reply.token, FAIR_LOCK)?)))
    }

    /// Waits in line for the lock. A grant's notification only says when to look: the guard
    /// is handed out once the lock's state names this session as the holder (so no other
    /// recipe's message, nor a stale one, can pass for a grant); the state is read again after
    /// a reconnect and now and then, and the wait ends with an error if the session ends.
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        let notifications = self.client.notifications();
        let reply = call_op(&self.client, &self.acquire_args(true)).await?;
        if reply.granted {
            return Ok(self.guard(positive(reply.token, FAIR_LOCK)?));
        }
        let waiter = reply.waiter;
        let token = wait_for(
            &self.client,
            notifications,
            &self.name,
            |note: &Granted| note.lock == self.name,
            || self.granted_here(waiter.as_deref()),
        )
        .await?;
        Ok(self.guard(positive(Some(token), FAIR_LOCK)?))
    }

    /// The fencing token of this session's hold of the lock, if the lock's state, as the
    /// connected node has it, shows one. Read locally, without a log entry: the node delivered
    /// the grant's notification after applying it, so its state has the grant; a state read
    /// elsewhere or earlier can only be behind, and show no grant yet (this session cannot
    /// lose a hold while it waits for one). The layout is fair-lock's (`cairn_builtins`): only
    /// the first waiter is ever granted, its record's `count` above 0. With the name of this
    /// session's `waiter` (from the acquire's reply) that is one read whatever the queue's
    /// length; without it (a fair-lock that does not tell) the queue is listed.
    async fn granted_here(&self, waiter: Option<&str>) -> Result<Option<u64>, Error> {
        let lock = format!("/cairn/recipes/{FAIR_LOCK}/{}", self.name);
        let mine = waiter.filter(|name| {
            fair_lock::parse_waiter(name).is_some_and(|(s, _)| s == self.client.session_id())
        });
        if let Some(name) = mine {
            let data = match self.client.local().get(&format!("{lock}/{name}")).await {
                Ok((data, _)) => data,
                // Gone: the session's waiter went with its session; the wait ends with it.
                Err(error) if error.code() == Some(cairn_wire::ErrorCode::NoNode) => {
                    return Ok(None);
                }
                Err(error) => return Err(error),
            };
            let record: Waiter = cairn_builtins::decode(&data)
                .map_err(|e| Error::Protocol(format!("{FAIR_LOCK} waiter {name}: {e}")))?;
            return Ok((record.count > 0).then_some(record.token));
        }
        let names = match self.client.local().children(&lock).await {
            Ok(names) => names,
            Err(error) if error.code() == Some(cairn_wire::ErrorCode::NoNode) => return Ok(None),
            Err(error) => return Err(error),
        };
        let head = names
            .iter()
            .filter_map(|name| {
                let (session, sequence) = fair_lock::parse_waiter(name)?;
                Some((sequence, session, name))
            })
            .min();
        let Some((_, _, head)) =
            head.filter(|(_, session, _)| *session == self.client.session_id())
        else {
            return Ok(None);
        };
        let (data, _) = self.client.local().get(&format!("{lock}/{head}")).await?;
        let record: Waiter = cairn_builtins::decode(&data)
            .map_err(|e| Error::Protocol(format!("{FAIR_LOCK} waiter {head}: {e}")))?;
        Ok((record.count > 0).then_some(record.token))
    }

    /// Who holds the lock and who waits.
    pub async fn status(&self) -> Result<LockStatus, Error> {
        let reply = call_op(&self.client, &Status { lock: self.name.clone() }).await?;
        Ok(LockStatus { holder: reply.holder, token: reply.token, queue: reply.queue })
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
        call_op(&self.lock.client, &Release { lock: self.lock.name.clone() }).await.map(|_| ())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released {
            call_op_in_background(&self.lock.client, Release { lock: self.lock.name.clone() });
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

impl Client {
    /// A handle on several fair locks at once. Waiters for overlapping sets of locks, named in
    /// any order, never deadlock: each joins all its queues in one log entry.
    pub fn locks(&self, names: &[&str]) -> MultiLock {
        MultiLock { client: self.clone(), names: names.iter().map(|n| n.to_string()).collect() }
    }
}

impl MultiLock {
    fn acquire_args(&self, wait: bool) -> AcquireAll {
        AcquireAll { locks: self.names.clone(), wait }
    }

    /// Takes every lock if all are free now; `None` (and nothing taken) otherwise.
    pub async fn try_acquire(&self) -> Result<Option<MultiLockGuard>, Error> {
        let reply = call_op(&self.client, &self.acquire_args(false)).await?;
        if !reply.granted {
            return Ok(None);
        }
        self.granted(reply.tokens.unwrap_or_default()).map(Some)
    }

    /// Waits in line at every lock and takes them all at once.
    pub async fn acquire(&self) -> Result<MultiLockGuard, Error> {
        let notifications = self.client.notifications();
        let reply = call_op(&self.client, &self.acquire_args(true)).await?;
        if reply.granted {
            return self.granted(reply.tokens.unwrap_or_default());
        }
        let me = self.client.session_id();
        let wanted: BTreeSet<&String> = self.names.iter().collect();
        let tokens = wait_for(
            &self.client,
            notifications,
            &self.names.join(","),
            |note: &GrantedAll| note.locks.keys().collect::<BTreeSet<_>>() == wanted,
            || async {
                let mut tokens = BTreeMap::new();
                for name in &self.names {
                    let status = self.client.lock(name).status().await?;
                    if status.holder != Some(me) {
                        return Ok(None);
                    }
                    tokens.insert(name.clone(), status.token);
                }
                Ok(Some(tokens))
            },
        )
        .await?;
        self.granted(tokens)
    }

    /// The guard of a grant of every lock, each with its fencing token.
    fn granted(&self, tokens: BTreeMap<String, u64>) -> Result<MultiLockGuard, Error> {
        for name in &self.names {
            positive(tokens.get(name).copied(), FAIR_LOCK)?;
        }
        Ok(MultiLockGuard { lock: self.clone(), tokens, released: false })
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
        call_op(&self.lock.client, &ReleaseAll { locks: self.lock.names.clone() }).await.map(|_| ())
    }
}

impl Drop for MultiLockGuard {
    fn drop(&mut self) {
        if !self.released {
            let args = ReleaseAll { locks: self.lock.names.clone() };
            call_op_in_background(&self.lock.client, args);
        }
    }
}
