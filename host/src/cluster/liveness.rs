//! Session liveness: which sessions the leader has heard from lately, and their expiry.
//!
//! Request path: every request on a stream bound to a session touches [`SessionTracker`]; the
//! leader's [`expire_sessions`] loop proposes an expire entry for a session not heard from for
//! its whole timeout, and `store::apply` of that entry deletes the session's ephemerals in the
//! same entry. Liveness is never logged and lives only on the node that tracks it: a node that
//! becomes leader gives every session a full timeout from that moment. A follower passes on
//! what it hears (`cluster::forward::Forwarder::heard`) every [`SESSION_RELAY_INTERVAL_MS`], so a
//! client connected to a follower keeps its session.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Cluster;
use crate::store::{Action, SessionId, Write};

/// How often the leader looks for sessions past their timeout, in milliseconds.
pub const SESSION_CHECK_INTERVAL_MS: u64 = 50;

/// How often a follower tells the leader which sessions it heard from, in milliseconds: well
/// inside the shortest session timeout.
pub const SESSION_RELAY_INTERVAL_MS: u64 = 250;

/// When this node last heard from each session.
#[derive(Debug, Default)]
pub struct SessionTracker {
    last_heard: Mutex<HashMap<SessionId, Instant>>,
    /// Heard from since the last relay to the leader.
    recent: Mutex<HashSet<SessionId>>,
}

impl SessionTracker {
    /// Records that a session's client was just heard from.
    pub fn touch(&self, session: SessionId) {
        self.last_heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session, Instant::now());
        self.recent.lock().unwrap_or_else(PoisonError::into_inner).insert(session);
    }

    /// When this node last heard from each session it tracks.
    pub fn last_heard(&self) -> HashMap<SessionId, Instant> {
        self.last_heard.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The sessions heard from since the last call.
    fn take_recent(&self) -> Vec<SessionId> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner).drain().collect()
    }

    /// The live `sessions` (id, timeout) past their timeout at `now`, for a leader since
    /// `leading_since`; forgets sessions no longer live.
    fn due(
        &self,
        now: Instant,
        leading_since: Instant,
        sessions: &[(SessionId, u64)],
    ) -> Vec<SessionId> {
        let mut last_heard = self.last_heard.lock().unwrap_or_else(PoisonError::into_inner);
        due(now, leading_since, sessions, &mut last_heard)
    }
}

/// Which of the live `sessions` (id, timeout in ms) are past their timeout at `now`, given
/// when each was `last_heard`, for a node leading since `leading_since`: a new leader gives
/// every session a full timeout, and a session never heard from here (opened through another
/// node, whose relay has not come yet) counts as heard when it is first seen. Sessions no
/// longer live are forgotten. The liveness rule, apart from clocks and tasks.
pub fn due(
    now: Instant,
    leading_since: Instant,
    sessions: &[(SessionId, u64)],
    last_heard: &mut HashMap<SessionId, Instant>,
) -> Vec<SessionId> {
    let live: HashSet<SessionId> = sessions.iter().map(|(id, _)| *id).collect();
    last_heard.retain(|id, _| live.contains(id));
    sessions
        .iter()
        .filter(|(id, timeout_ms)| {
            let heard = (*last_heard.entry(*id).or_insert(now)).max(leading_since);
            now >= heard + Duration::from_millis(*timeout_ms)
        })
        .map(|(id, _)| *id)
        .collect()
}

/// While this node leads, proposes the expiry of every session not heard from within its
/// timeout, counting from when this node became leader at the earliest.
pub async fn expire_sessions(cluster: Arc<Cluster>, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(Duration::from_millis(SESSION_CHECK_INTERVAL_MS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading_since: Option<Instant> = None;
    let mut relayed = Instant::now();
    let expiring: Arc<Mutex<HashSet<SessionId>>> = Arc::default();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        if !cluster.is_leader() {
            leading_since = None;
            let due = relayed.elapsed() >= Duration::from_millis(SESSION_RELAY_INTERVAL_MS);
            if due {
                relayed = Instant::now();
                let heard = cluster.sessions.take_recent();
                if !heard.is_empty() {
                    let cluster = cluster.clone();
                    tokio::spawn(async move {
                        if let Err(error) = cluster.forwarder.heard(&cluster.raft, heard).await {
                            tracing::debug!(%error, "sessions heard not passed to the leader");
                        }
                    });
                }
            }
            continue;
        }
        cluster.sessions.take_recent();
        let now = Instant::now();
        let since = *leading_since.get_or_insert(now);
        let sessions: Vec<(SessionId, u64)> = cluster
            .state
            .read()
            .tree
            .sessions()
            .map(|(id, session)| (id, session.timeout_ms))
            .collect();
        let live: HashSet<SessionId> = sessions.iter().map(|(id, _)| *id).collect();
        expiring.lock().unwrap_or_else(PoisonError::into_inner).retain(|id| live.contains(id));
        for id in cluster.sessions.due(now, since, &sessions) {
            if !expiring.lock().unwrap_or_else(PoisonError::into_inner).insert(id) {
                continue;
            }
            tracing::info!(session = %id, "session expired");
            let write = Write::system(Action::ExpireSession { session: id });
            let cluster = cluster.clone();
            let expiring = expiring.clone();
            tokio::spawn(async move {
                let failed = match cluster.propose(write).await {
                    Ok(applied) => applied.await.1.is_err(),
                    Err(_) => true,
                };
                if failed {
                    // Not applied (no longer leader, say): let a later tick decide again.
                    expiring.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT_MS: u64 = 1_000;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_session_is_due_only_after_a_whole_timeout_unheard() {
        let start = Instant::now();
        let sessions = [(SessionId(1), TIMEOUT_MS), (SessionId(2), TIMEOUT_MS)];
        let mut heard = HashMap::from([(SessionId(1), start), (SessionId(2), at(start, 600))]);
        assert!(due(at(start, 999), start, &sessions, &mut heard).is_empty());
        assert_eq!(due(at(start, 1_000), start, &sessions, &mut heard), [SessionId(1)]);
        assert_eq!(due(at(start, 1_600), start, &sessions, &mut heard).len(), 2);
    }

    #[test]
    fn a_new_leader_gives_every_session_a_full_timeout() {
        let start = Instant::now();
        let sessions = [(SessionId(1), TIMEOUT_MS)];
        // Last heard long ago, but this node has led only since 5 s in.
        let mut heard = HashMap::from([(SessionId(1), start)]);
        let leading_since = at(start, 5_000);
        assert!(due(at(start, 5_999), leading_since, &sessions, &mut heard).is_empty());
        assert_eq!(due(at(start, 6_000), leading_since, &sessions, &mut heard), [SessionId(1)]);
    }

    #[test]
    fn a_session_first_seen_counts_from_then_and_ended_ones_are_forgotten() {
        let start = Instant::now();
        let mut heard = HashMap::from([(SessionId(9), start)]);
        let sessions = [(SessionId(3), TIMEOUT_MS)];
        assert!(due(at(start, 2_000), start, &sessions, &mut heard).is_empty());
        assert!(!heard.contains_key(&SessionId(9)), "session 9 is no longer live");
        assert_eq!(heard.get(&SessionId(3)), Some(&at(start, 2_000)));
        assert_eq!(due(at(start, 3_000), start, &sessions, &mut heard), [SessionId(3)]);
    }
}
