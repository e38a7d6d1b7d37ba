//! A typed handle on the built-in `semaphore` recipe: permits taken in line and given back.

use serde_json::json;

use crate::recipe::{call, call_in_background, wait_for_grant};
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
        let args = json!({ "sem": self.name, "permits": self.permits, "count": count });
        let notifications = self.client.notifications();
        let reply = call(&self.client, "semaphore", "acquire", args).await?;
        if reply["granted"] != true {
            let me = self.client.session_id();
            wait_for_grant(&self.client, notifications, "semaphore", "sem", &self.name, || async {
                let status =
                    call(&self.client, "semaphore", "status", json!({ "sem": self.name })).await?;
                let holders = crate::recipe::list(&status, "holders", "semaphore")?;
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
