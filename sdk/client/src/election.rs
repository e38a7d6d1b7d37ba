//! A typed handle on the built-in `election` recipe: campaign, lead, resign, watch the leader.

use serde_json::{Value, json};

use crate::recipe::{
    call, call_in_background, fencing_token, nullable_number, number, parse, wait_for_grant,
};
use crate::{Client, Error};

/// A named leader election. See [`Client::election`].
#[derive(Debug, Clone)]
pub struct Election {
    client: Client,
    name: String,
}

/// This session leads the election, for `term` (a fencing token: larger than every earlier
/// leader's). Resign with [`Leadership::resign`]; ending the session resigns too.
#[derive(Debug)]
pub struct Leadership {
    election: Election,
    term: u64,
    resigned: bool,
}

impl Client {
    /// A handle on the leader election `name`.
    pub fn election(&self, name: &str) -> Election {
        Election { client: self.clone(), name: name.to_string() }
    }
}

impl Election {
    /// Stands as a candidate with `data` (an address, say) and waits until elected.
    pub async fn campaign(&self, data: &str) -> Result<Leadership, Error> {
        let notifications = self.client.notifications();
        let reply = call(
            &self.client,
            "election",
            "campaign",
            json!({ "election": self.name, "data": data }),
        )
        .await?;
        if reply["leader"] == true {
            let term = fencing_token(&reply, "term", "election")?;
            return Ok(Leadership { election: self.clone(), term, resigned: false });
        }
        let me = self.client.session_id();
        let elected = wait_for_grant(
            &self.client,
            notifications,
            "election",
            "election",
            &self.name,
            || async {
                let now =
                    call(&self.client, "election", "leader", json!({ "election": self.name }))
                        .await?;
                Ok((now["leader"].as_u64() == Some(me)).then_some(now))
            },
        )
        .await?;
        let term = fencing_token(&elected, "term", "election")?;
        Ok(Leadership { election: self.clone(), term, resigned: false })
    }

    /// The leading session and its term.
    pub async fn leader(&self) -> Result<(Option<u64>, u64, Value), Error> {
        let now =
            call(&self.client, "election", "leader", json!({ "election": self.name })).await?;
        let leader = nullable_number(&now, "leader", "election")?;
        Ok((leader, number(&now, "term", "election")?, now["data"].clone()))
    }
}

impl Leadership {
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Steps down; the next candidate is elected.
    pub async fn resign(mut self) -> Result<(), Error> {
        self.resigned = true;
        call(&self.election.client, "election", "resign", json!({ "election": self.election.name }))
            .await
            .map(|_| ())
    }
}

impl Drop for Leadership {
    /// Resigns in the background.
    fn drop(&mut self) {
        if !self.resigned {
            let args = json!({ "election": self.election.name });
            call_in_background(&self.election.client, "election", "resign", args);
        }
    }
}

/// Who leads an election: the session, its term, and the data it campaigned with.
#[derive(Debug, Clone, PartialEq)]
pub struct Leader {
    pub session: Option<u64>,
    pub term: u64,
    pub data: Value,
}

/// Leader changes of an election, from a watch on its znode. See [`Election::observe`].
#[derive(Debug)]
pub struct LeaderWatch {
    election: Election,
    events: crate::WatchStream,
    last: Option<Leader>,
}

impl Election {
    /// The znode holding the election's leader and term: what observers watch.
    pub fn path(&self) -> String {
        format!("/cairn/recipes/election/{}", self.name)
    }

    /// Follows the leadership: the current leader first, then every change.
    pub async fn observe(&self) -> Result<LeaderWatch, Error> {
        let events = self.client.watch(&self.path(), false).await?;
        Ok(LeaderWatch { election: self.clone(), events, last: None })
    }

    /// The leader as the election's znode says, read without a log entry.
    async fn read_leader(&self) -> Result<Leader, Error> {
        match self.client.get(&self.path()).await {
            Ok((data, _)) => {
                let state = parse(&data)?;
                Ok(Leader {
                    session: nullable_number(&state, "leader", "election")?,
                    term: number(&state, "term", "election")?,
                    data: state["data"].clone(),
                })
            }
            Err(error) if error.code() == Some(cairn_wire::ErrorCode::NoNode) => {
                Ok(Leader { session: None, term: 0, data: Value::Null })
            }
            Err(error) => Err(error),
        }
    }
}

impl LeaderWatch {
    /// The leader now if not reported yet, else waits for the next change of leader or term.
    pub async fn next(&mut self) -> Result<Leader, Error> {
        loop {
            let now = self.election.read_leader().await?;
            if self.last.as_ref() != Some(&now) {
                self.last = Some(now.clone());
                return Ok(now);
            }
            if self.events.next().await.is_none() {
                return Err(Error::Api(
                    cairn_wire::ApiError::new(cairn_wire::ErrorCode::SessionExpired)
                        .with_detail(format!("the session ended observing {}", self.election.name)),
                ));
            }
        }
    }
}
