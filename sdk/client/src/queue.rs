//! A typed handle on the built-in `queue` recipe: put, take (waiting in line), ack, release.

use serde_json::{Value, json};

use crate::recipe::{call, call_in_background, wait_for_note};
use crate::{Client, Error};

/// A named work queue: items taken in priority order (lower values first, then arrival), each
/// by one consumer, gone when acked and back in the queue if the consumer's session ends first.
/// See [`Client::queue`].
#[derive(Debug, Clone)]
pub struct Queue {
    client: Client,
    name: String,
}

/// How many items are ready, taken (not acked yet), and how many consumers wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStatus {
    pub ready: u64,
    pub taken: u64,
    pub waiting: u64,
}

/// An item this session took. [`QueueItem::ack`] removes it for good; [`QueueItem::release`]
/// (or dropping it) puts it back.
#[derive(Debug)]
pub struct QueueItem {
    queue: Queue,
    id: String,
    data: String,
    settled: bool,
}

/// A ticket waiting for an item; cancelled in the background if the wait is abandoned.
struct Ticket {
    queue: Queue,
    ticket: Value,
    armed: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.armed {
            let args = json!({ "queue": self.queue.name, "ticket": self.ticket });
            call_in_background(&self.queue.client, "queue", "cancel", args);
        }
    }
}

impl Client {
    /// A handle on the queue `name`.
    pub fn queue(&self, name: &str) -> Queue {
        Queue { client: self.clone(), name: name.to_string() }
    }
}

impl Queue {
    async fn call(&self, op: &str, args: Value) -> Result<Value, Error> {
        let mut args = args;
        args["queue"] = json!(self.name);
        call(&self.client, "queue", op, args).await
    }

    fn item(&self, reply: &Value) -> Option<QueueItem> {
        Some(QueueItem {
            queue: self.clone(),
            id: reply["id"].as_str()?.to_string(),
            data: reply["data"].as_str()?.to_string(),
            settled: false,
        })
    }

    fn malformed(&self, reply: &Value) -> Error {
        Error::Protocol(format!("queue {} answered {reply}", self.name))
    }

    /// Adds an item at priority 0; returns its id.
    pub async fn put(&self, data: &str) -> Result<String, Error> {
        self.put_with_priority(data, 0).await
    }

    /// Adds an item; lower priorities are taken first. Returns its id.
    pub async fn put_with_priority(&self, data: &str, priority: i32) -> Result<String, Error> {
        let reply = self.call("put", json!({ "data": data, "priority": priority })).await?;
        reply["id"].as_str().map(str::to_string).ok_or_else(|| self.malformed(&reply))
    }

    /// Takes the next item, waiting in line with other consumers until there is one.
    pub async fn take(&self) -> Result<QueueItem, Error> {
        let notifications = self.client.notifications();
        let reply = self.call("take", json!({ "wait": true })).await?;
        if let Some(item) = self.item(&reply) {
            return Ok(item);
        }
        let mut ticket =
            Ticket { queue: self.clone(), ticket: reply["ticket"].clone(), armed: true };
        if ticket.ticket.is_null() {
            return Err(self.malformed(&reply));
        }
        let note = wait_for_note(
            &self.client,
            notifications,
            "queue",
            &self.name,
            |note| note["queue"] == self.name.as_str() && note["ticket"] == ticket.ticket,
            || async {
                let now = self.call("poll", json!({ "ticket": ticket.ticket })).await?;
                Ok(now["id"].is_string().then_some(now))
            },
        )
        .await?;
        ticket.armed = false;
        self.item(&note).ok_or_else(|| self.malformed(&note))
    }

    /// Takes the next item if there is one now.
    pub async fn try_take(&self) -> Result<Option<QueueItem>, Error> {
        let reply = self.call("take", json!({ "wait": false })).await?;
        Ok(self.item(&reply))
    }

    pub async fn status(&self) -> Result<QueueStatus, Error> {
        let reply = self.call("status", json!({})).await?;
        let count = |key: &str| crate::recipe::number(&reply, key, "queue");
        Ok(QueueStatus {
            ready: count("ready")?,
            taken: count("taken")?,
            waiting: count("waiting")?,
        })
    }
}

impl QueueItem {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn data(&self) -> &str {
        &self.data
    }

    /// The item is done: it leaves the queue for good.
    pub async fn ack(mut self) -> Result<(), Error> {
        self.settled = true;
        self.queue.call("ack", json!({ "id": self.id })).await.map(|_| ())
    }

    /// Puts the item back, ahead of later items of its priority.
    pub async fn release(mut self) -> Result<(), Error> {
        self.settled = true;
        self.queue.call("release", json!({ "id": self.id })).await.map(|_| ())
    }
}

impl Drop for QueueItem {
    fn drop(&mut self) {
        if !self.settled {
            let args = json!({ "queue": self.queue.name, "id": self.id });
            call_in_background(&self.queue.client, "queue", "release", args);
        }
    }
}
