//! A typed handle on the built-in `barrier` recipe (`cairn_builtins::barrier`): a double
//! barrier, entered and left by `count` members a round.

use cairn_builtins::barrier::{Enter, Entered, Leave, Left, Status, StatusReply};

use crate::recipe::{call_op, wait_for};
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
    async fn status(&self) -> Result<StatusReply, Error> {
        call_op(&self.client, &Status { barrier: self.name.clone() }).await
    }

    /// Enters, and waits until all `count` members have.
    pub async fn enter(&self) -> Result<BarrierRound, Error> {
        let notifications = self.client.notifications();
        let args = Enter { barrier: self.name.clone(), count: Some(self.count) };
        let reply = call_op(&self.client, &args).await?;
        let round = reply.round;
        if !reply.entered {
            wait_for(
                &self.client,
                notifications,
                &self.name,
                |note: &Entered| note.barrier == self.name && note.entered,
                || async {
                    let now = self.status().await?;
                    Ok((now.round > round || (now.round == round && now.open)).then_some(()))
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
        let reply = call_op(&barrier.client, &Leave { barrier: barrier.name.clone() }).await?;
        if reply.left {
            return Ok(());
        }
        wait_for(
            &barrier.client,
            notifications,
            &barrier.name,
            |note: &Left| note.barrier == barrier.name && note.left && note.round == self.round,
            || async { Ok((barrier.status().await?.round > self.round).then_some(())) },
        )
        .await
    }
}
