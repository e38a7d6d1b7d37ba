//! A typed handle on the built-in `election` recipe (`cairn_builtins::election`): campaign,
//! lead, resign, watch the leader.

use cairn_builtins::election::{self, Campaign, Elected, ElectionRecord, Resign};
use serde_json::Value;

use crate::recipe::{call_op, call_op_in_background, positive, wait_for};
use crate::{Client, Error};

/// The recipe the handles call.
const ELECTION: &str = election::RECIPE;

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
    fn leadership(&self, term: u64) -> Leadership {
        Leadership { election: self.clone(), term, resigned: false }
    }

    /// The `leader` op's record of the election.
    async fn record(&self) -> Result<ElectionRecord, Error> {
        call_op(&self.client, &election::Leader { election: self.name.clone() }).await
    }

    /// Stands as a candidate with `data` (an address, say) and waits until elected.
    pub async fn campaign(&self, data: &str) -> Result<Leadership, Error> {
        let notifications = self.client.notifications();
        let args = Campaign { election: self.name.clone(), data: Value::from(data) };
        let reply = call_op(&self.client, &args).await?;
        if reply.leader {
            return Ok(self.leadership(positive(reply.term, ELECTION)?));
        }
        let me = self.client.session_id();
        let term = wait_for(
            &self.client,
            notifications,
            &self.name,
            |note: &Elected| note.election == self.name,
            || async {
                let now = self.record().await?;
                Ok((now.leader == Some(me)).then_some(now.term))
            },
        )
        .await?;
        Ok(self.leadership(positive(Some(term), ELECTION)?))
    }

    /// The leading session and its term.
    pub async fn leader(&self) -> Result<(Option<u64>, u64, Value), Error> {
        let now = self.record().await?;
        Ok((now.leader, now.term, now.data))
    }
}

impl Leadership {
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Steps down; the next candidate is elected.
    pub async fn resign(mut self) -> Result<(), Error> {
        self.resigned = true;
        let args = Resign { election: self.election.name.clone() };
        call_op(&self.election.client, &args).await.map(|_| ())
    }
}

impl Drop for Leadership {
    /// Resigns in the background.
    fn drop(&mut self) {
        if !self.resigned {
            let args = Resign { election: self.election.name.clone() };
            call_op_in_background(&self.election.client, args);
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
        format!("/cairn/recipes/{ELECTION}/{}", self.name)
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
                let record: ElectionRecord = cairn_builtins::decode(&data).map_err(|e| {
                    Error::Protocol(format!("{ELECTION} record {}: {e}", self.name))
                })?;
                Ok(Leader { session: record.leader, term: record.term, data: record.data })
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
