//! A typed handle on the built-in `barrier` recipe: a double barrier, entered and left by
//! `count` members a round.

use serde_json::{Value, json};

use crate::recipe::{call, number, wait_for_note};
use crate::{Client, Error};

impl Client {
    /// A handle on the double barrier `name` of `count` members.
    pub fn barrier(&self, name: &str, count: u32) -> Barrier {
        Barrier { client: self.clone(), name: name.to_string(), count }
    }
}

/// A named double barrier: [`Barrier::enter`] returns when `count` members have entered, and
/// [`BarrierRound::leave`] when all of them have left. See [`Client::barrier`].
#[derive(Debug, Clone)]
pub struct Barrier {
    client: Client,
    name: String,
    count: u32,
}

/// This session is inside round `round` of a barrier.
#[derive(Debug)]
pub struct BarrierRound {
    barrier: Barrier,
    round: u64,
}

impl Barrier {
    async fn call(&self, op: &str, args: Value) -> Result<Value, Error> {
        let mut args = args;
        args["barrier"] = json!(self.name);
        call(&self.client, "barrier", op, args).await
    }

    /// Enters, and waits until all `count` members have.
    pub async fn enter(&self) -> Result<BarrierRound, Error> {
        let notifications = self.client.notifications();
        let reply = self.call("enter", json!({ "count": self.count })).await?;
        let round = number(&reply, "round", "barrier")?;
        if reply["entered"] != true {
            wait_for_note(
                &self.client,
                notifications,
                "barrier",
                &self.name,
                |note| note["barrier"] == self.name.as_str() && note["entered"] == true,
                || async {
                    let now = self.call("status", json!({})).await?;
                    let now_round = number(&now, "round", "barrier")?;
                    let started = now_round > round || (now_round == round && now["open"] == true);
                    Ok(started.then_some(now))
                },
            )
            .await?;
        }
        Ok(BarrierRound { barrier: self.clone(), round })
    }
}

impl BarrierRound {
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Leaves, and waits until every member has.
    pub async fn leave(self) -> Result<(), Error> {
        let barrier = &self.barrier;
        let notifications = barrier.client.notifications();
        let reply = barrier.call("leave", json!({})).await?;
        if reply["left"] == true {
            return Ok(());
        }
        wait_for_note(
            &barrier.client,
            notifications,
            "barrier",
            &barrier.name,
            |note| {
                note["barrier"] == barrier.name.as_str()
                    && note["left"] == true
                    && note["round"].as_u64() == Some(self.round)
            },
            || async {
                let now = barrier.call("status", json!({})).await?;
                Ok((number(&now, "round", "barrier")? > self.round).then_some(now))
            },
        )
        .await
        .map(|_| ())
    }
}
