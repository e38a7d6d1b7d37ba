//! A typed handle on the built-in `queue` recipe (`cairn_builtins::queue`): put, take (waiting
//! in line), ack, release.

use cairn_builtins::queue::{Ack, Cancel, Handed, Poll, Put, Release, Status, Take, TakeReply};

use crate::recipe::{call_op, call_op_in_background, wait_for};
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
    ticket: String,
    armed: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.armed {
            let args = Cancel { queue: self.queue.name.clone(), ticket: Some(self.ticket.clone()) };
            call_op_in_background(&self.queue.client, args);
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
    fn take_args(&self, wait: bool) -> Take {
        Take { queue: self.name.clone(), wait }
    }

    /// The item of a take's or a poll's answer, if it carries one.
    fn item(&self, reply: &TakeReply) -> Option<QueueItem> {
        Some(QueueItem {
            queue: self.clone(),
            id: reply.id.clone()?,
            data: reply.data.clone()?,
            settled: false,
        })
    }

    fn malformed(&self, reply: &TakeReply) -> Error {
        Error::Protocol(format!("queue {} answered {reply:?}", self.name))
    }

    /// Adds an item at priority 0; returns its id.
    pub async fn put(&self, data: &str) -> Result<String, Error> {
        self.put_with_priority(data, 0).await
    }

    /// Adds an item; lower priorities are taken first. Returns its id.
    pub async fn put_with_priority(&self, data: &str, priority: i32) -> Result<String, Error> {
        let args = Put { queue: self.name.clone(), data: Some(data.to_string()), priority };
        Ok(call_op(&self.client, &args).await?.id)
    }

    /// Takes the next item, waiting in line with other consumers until there is one.
    pub async fn take(&self) -> Result<QueueItem, Error> {
        let notifications = self.client.notifications();
        let reply = call_op(&self.client, &self.take_args(true)).await?;
        if let Some(item) = self.item(&reply) {
            return Ok(item);
        }
        let Some(ticket) = reply.ticket.clone() else { return Err(self.malformed(&reply)) };
        let mut ticket = Ticket { queue: self.clone(), ticket, armed: true };
        let item = wait_for(
            &self.client,
            notifications,
            &self.name,
            |note: &Handed| note.queue == self.name && note.ticket == ticket.ticket,
            || async {
                let args = Poll { queue: self.name.clone(), ticket: Some(ticket.ticket.clone()) };
                let now = call_op(&self.client, &args).await?;
                if now.id.is_none() {
                    return Ok(None);
                }
                self.item(&now).map(Some).ok_or_else(|| self.malformed(&now))
            },
        )
        .await?;
        ticket.armed = false;
        Ok(item)
    }

    /// Takes the next item if there is one now.
    pub async fn try_take(&self) -> Result<Option<QueueItem>, Error> {
        let reply = call_op(&self.client, &self.take_args(false)).await?;
        Ok(self.item(&reply))
    }

    pub async fn status(&self) -> Result<QueueStatus, Error> {
        let reply = call_op(&self.client, &Status { queue: self.name.clone() }).await?;
        Ok(QueueStatus { ready: reply.ready, taken: reply.taken, waiting: reply.waiting })
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
        let args = Ack { queue: self.queue.name.clone(), id: Some(self.id.clone()) };
        call_op(&self.queue.client, &args).await.map(|_| ())
    }

    /// Puts the item back, ahead of later items of its priority.
    pub async fn release(mut self) -> Result<(), Error> {
        self.settled = true;
        call_op(&self.queue.client, &self.release_args()).await.map(|_| ())
    }

    fn release_args(&self) -> Release {
        Release { queue: self.queue.name.clone(), id: Some(self.id.clone()) }
    }
}

impl Drop for QueueItem {
    fn drop(&mut self) {
        if !self.settled {
            call_op_in_background(&self.queue.client, self.release_args());
        }
    }
}
