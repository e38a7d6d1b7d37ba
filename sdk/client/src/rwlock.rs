//! Typed handles on the built-in rw-lock recipe (`cairn_builtins::rw_lock`).

use cairn_builtins::rw_lock::{
    self, Acquire, AcquireReply, Downgrade, Granted, Release, Status, StatusEntry,
};

use crate::recipe::{call_op, call_op_in_background, positive, wait_for};
use crate::{Client, Error};

/// The recipe the handles call.
const RW_LOCK: &str = rw_lock::RECIPE;

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn to_wire(self) -> rw_lock::Access {
        match self {
            Access::Read => rw_lock::Access::Read,
            Access::Write => rw_lock::Access::Write,
        }
    }

    fn from_wire(access: rw_lock::Access) -> Access {
        match access {
            rw_lock::Access::Read => Access::Read,
            rw_lock::Access::Write => Access::Write,
        }
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

/// (session, access) of each request, in order.
fn entries(requests: Vec<StatusEntry>) -> Vec<(u64, Access)> {
    requests.into_iter().map(|entry| (entry.session, Access::from_wire(entry.mode))).collect()
}

impl RwLock {
    fn acquire_args(&self, access: Access, wait: bool) -> Acquire {
        Acquire { lock: self.name.clone(), mode: Some(access.to_wire()), wait }
    }

    fn status_args(&self) -> Status {
        Status { lock: self.name.clone() }
    }

    fn guard(&self, mode: rw_lock::Access, token: Option<u64>) -> Result<RwLockGuard, Error> {
        Ok(RwLockGuard {
            lock: self.clone(),
            access: Access::from_wire(mode),
            token: positive(token, RW_LOCK)?,
            released: false,
        })
    }

    /// The guard of a grant `acquire` answered.
    fn granted(&self, reply: AcquireReply) -> Result<RwLockGuard, Error> {
        let mode = reply
            .mode
            .ok_or_else(|| Error::Protocol(format!("{RW_LOCK} granted without a mode")))?;
        self.guard(mode, reply.token)
    }

    async fn acquire(&self, access: Access) -> Result<RwLockGuard, Error> {
        let notifications = self.client.notifications();
        let reply = call_op(&self.client, &self.acquire_args(access, true)).await?;
        if reply.granted {
            return self.granted(reply);
        }
        let me = self.client.session_id();
        let (mode, token) = wait_for(
            &self.client,
            notifications,
            &self.name,
            |note: &Granted| note.lock == self.name,
            || async {
                let status = call_op(&self.client, &self.status_args()).await?;
                let mine = status.holders.into_iter().find(|holder| holder.session == me);
                Ok(mine.map(|holder| (holder.mode, holder.token)))
            },
        )
        .await?;
        self.guard(mode, Some(token))
    }

    async fn try_acquire(&self, access: Access) -> Result<Option<RwLockGuard>, Error> {
        let reply = call_op(&self.client, &self.acquire_args(access, false)).await?;
        if !reply.granted {
            return Ok(None);
        }
        self.granted(reply).map(Some)
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
        let reply = call_op(&self.client, &self.status_args()).await?;
        Ok(RwLockStatus {
            holders: entries(reply.holders),
            queue: entries(reply.queue),
            token: reply.token,
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
        call_op(&self.lock.client, &Downgrade { lock: self.lock.name.clone() }).await?;
        self.access = Access::Read;
        Ok(())
    }

    /// Releases the hold.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        call_op(&self.lock.client, &Release { lock: self.lock.name.clone() }).await.map(|_| ())
    }
}

impl Drop for RwLockGuard {
    fn drop(&mut self) {
        if !self.released {
            call_op_in_background(&self.lock.client, Release { lock: self.lock.name.clone() });
        }
    }
}
