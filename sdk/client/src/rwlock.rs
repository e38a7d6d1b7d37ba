//! Typed handles on the built-in rw-lock recipe.

use serde_json::{Value, json};

use crate::recipe::{call, call_in_background, fencing_token, wait_for_note};
use crate::{Client, Error};

/// The recipe the handles call.
const RW_LOCK: &str = "rw-lock";

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    fn parse(value: &Value) -> Access {
        if value == "write" { Access::Write } else { Access::Read }
    }
}

/// A named read-write lock: many readers or one writer, granted in arrival order (a waiting
/// writer is not overtaken by later readers), with a fencing token on every grant.
/// See [`Client::rw_lock`].
#[derive(Debug, Clone)]
pub struct RwLock {
    client: Client,
    name: String,
}

/// Who holds a read-write lock and who waits: (session, access) in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RwLockStatus {
    pub holders: Vec<(u64, Access)>,
    pub queue: Vec<(u64, Access)>,
    /// The last fencing token granted.
    pub token: u64,
}

/// A held read or write lock; released with [`RwLockGuard::release`], in the background when
/// dropped, or when the session ends.
#[derive(Debug)]
pub struct RwLockGuard {
    lock: RwLock,
    access: Access,
    token: u64,
    released: bool,
}

impl Client {
    /// A handle on the read-write lock `name`.
    pub fn rw_lock(&self, name: &str) -> RwLock {
        RwLock { client: self.clone(), name: name.to_string() }
    }
}

impl RwLock {
    async fn call(&self, op: &str, args: Value) -> Result<Value, Error> {
        let mut args = args;
        args["lock"] = json!(self.name);
        call(&self.client, RW_LOCK, op, args).await
    }

    fn guard(&self, reply: &Value) -> Result<RwLockGuard, Error> {
        Ok(RwLockGuard {
            lock: self.clone(),
            access: Access::parse(&reply["mode"]),
            token: fencing_token(reply, "token", RW_LOCK)?,
            released: false,
        })
    }

    async fn acquire(&self, access: Access) -> Result<RwLockGuard, Error> {
        let notifications = self.client.notifications();
        let reply = self.call("acquire", json!({ "mode": access.as_str(), "wait": true })).await?;
        if reply["granted"] == true {
            return self.guard(&reply);
        }
        let me = self.client.session_id();
        let granted = wait_for_note(
            &self.client,
            notifications,
            RW_LOCK,
            &self.name,
            |note| note["lock"] == self.name.as_str(),
            || async {
                let status = self.call("status", json!({})).await?;
                let holders = crate::recipe::list(&status, "holders", RW_LOCK)?;
                Ok(holders.iter().find(|h| h["session"].as_u64() == Some(me)).cloned())
            },
        )
        .await?;
        self.guard(&granted)
    }

    async fn try_acquire(&self, access: Access) -> Result<Option<RwLockGuard>, Error> {
        let reply = self.call("acquire", json!({ "mode": access.as_str(), "wait": false })).await?;
        if reply["granted"] != true {
            return Ok(None);
        }
        self.guard(&reply).map(Some)
    }

    /// Waits in line for a shared hold.
    pub async fn read(&self) -> Result<RwLockGuard, Error> {
        self.acquire(Access::Read).await
    }

    /// Waits in line for the exclusive hold.
    pub async fn write(&self) -> Result<RwLockGuard, Error> {
        self.acquire(Access::Write).await
    }

    /// A shared hold if it can be had now, without queueing.
    pub async fn try_read(&self) -> Result<Option<RwLockGuard>, Error> {
        self.try_acquire(Access::Read).await
    }

    /// The exclusive hold if it can be had now, without queueing.
    pub async fn try_write(&self) -> Result<Option<RwLockGuard>, Error> {
        self.try_acquire(Access::Write).await
    }

    /// Who holds the lock and who waits.
    pub async fn status(&self) -> Result<RwLockStatus, Error> {
        let status = self.call("status", json!({})).await?;
        let list = |key: &str| -> Result<Vec<(u64, Access)>, Error> {
            crate::recipe::list(&status, key, RW_LOCK)?
                .iter()
                .map(|e| {
                    Ok((crate::recipe::number(e, "session", RW_LOCK)?, Access::parse(&e["mode"])))
                })
                .collect()
        };
        Ok(RwLockStatus {
            holders: list("holders")?,
            queue: list("queue")?,
            token: crate::recipe::number(&status, "token", RW_LOCK)?,
        })
    }
}

impl RwLockGuard {
    /// The fencing token of this grant: larger than every earlier grant of the lock.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// What this hold allows.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Turns the write hold into a read hold without letting another writer in between; the
    /// readers waiting behind it are let in.
    pub async fn downgrade(&mut self) -> Result<(), Error> {
        self.lock.call("downgrade", json!({})).await?;
        self.access = Access::Read;
        Ok(())
    }

    /// Releases the hold.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        self.lock.call("release", json!({})).await.map(|_| ())
    }
}

impl Drop for RwLockGuard {
    fn drop(&mut self) {
        if !self.released {
            let args = json!({ "lock": self.lock.name });
            call_in_background(&self.lock.client, RW_LOCK, "release", args);
        }
    }
}
