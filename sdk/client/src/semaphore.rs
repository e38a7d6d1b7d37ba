//! A typed handle on the built-in `semaphore` recipe (`cairn_builtins::semaphore`): permits
//! taken in line and given back.

use cairn_builtins::semaphore::{Acquire, Granted, Release, Status};

use crate::recipe::{call_op, call_op_in_background, wait_for};
use crate::{Client, Error};

impl Client {
    /// A handle on the counting semaphore `name` of `permits` permits.
    pub fn semaphore(&self, name: &str, permits: u64) -> Semaphore {
        Semaphore { client: self.clone(), name: name.to_string(), permits }
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
        let args =
            Acquire { sem: self.name.clone(), permits: Some(self.permits), count, wait: true };
        let notifications = self.client.notifications();
        let reply = call_op(&self.client, &args).await?;
        if !reply.granted {
            let me = self.client.session_id();
            wait_for(
                &self.client,
                notifications,
                &self.name,
                |note: &Granted| note.sem == self.name,
                || async {
                    let status = call_op(&self.client, &Status { sem: self.name.clone() }).await?;
                    Ok(status.holders.contains(&me).then_some(()))
                },
            )
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
        call_op(&self.semaphore.client, &Release { sem: self.semaphore.name.clone() })
            .await
            .map(|_| ())
    }
}

impl Drop for Permits {
    fn drop(&mut self) {
        if !self.released {
            let args = Release { sem: self.semaphore.name.clone() };
            call_op_in_background(&self.semaphore.client, args);
        }
    }
}
