//! Session liveness: which sessions the leader has heard from lately, and their expiry.
//!
//! Request path: every request on a stream bound to a session touches [`SessionTracker`]; the
//! leader's [`expire_sessions`] loop proposes an expire entry for a session not heard from for
//! its whole timeout, and `store::apply` of that entry deletes the session's ephemerals in the
//! same entry. Liveness is never logged and lives only on the node that tracks it: a node that
//! becomes leader gives every session a full timeout from that moment. A follower passes on
//! what it hears (`raft::peer::Forwarder::heard`) every [`SESSION_RELAY_INTERVAL_MS`], so a
//! client connected to a follower keeps its session.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::api::Frontend;
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

    /// The sessions heard from since the last call.
    fn take_recent(&self) -> Vec<SessionId> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner).drain().collect()
    }

    /// When the session was last heard from; a session never heard from here (opened through
    /// another node, whose relay has not come yet) counts as heard now, when it is first seen.
    fn last_heard_or_now(&self, session: SessionId, now: Instant) -> Instant {
        *self
            .last_heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(session)
            .or_insert(now)
    }

    fn retain(&self, live: &HashSet<SessionId>) {
        self.last_heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, _| live.contains(id));
    }
}

/// While this node leads, proposes the expiry of every session not heard from within its
/// timeout, counting from when this node became leader at the earliest.
pub async fn expire_sessions(frontend: Arc<Frontend>, mut stopped: watch::Receiver<bool>) {
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
        let leading = frontend.raft.metrics().borrow().current_leader == Some(frontend.node_id);
        if !leading {
            leading_since = None;
            let due = relayed.elapsed() >= Duration::from_millis(SESSION_RELAY_INTERVAL_MS);
            if due {
                relayed = Instant::now();
                let heard = frontend.sessions.take_recent();
                if !heard.is_empty() {
                    let frontend = frontend.clone();
                    tokio::spawn(async move {
                        if let Err(error) = frontend.forwarder.heard(&frontend.raft, heard).await {
                            tracing::debug!(%error, "sessions heard not passed to the leader");
                        }
                    });
                }
            }
            continue;
        }
        frontend.sessions.take_recent();
        let now = Instant::now();
        let since = *leading_since.get_or_insert(now);
        let sessions: Vec<(SessionId, u64)> = frontend
            .state
            .read()
            .tree
            .sessions()
            .map(|(id, session)| (id, session.timeout_ms))
            .collect();
        let live: HashSet<SessionId> = sessions.iter().map(|(id, _)| *id).collect();
        frontend.sessions.retain(&live);
        expiring.lock().unwrap_or_else(PoisonError::into_inner).retain(|id| live.contains(id));
        for (id, timeout_ms) in sessions {
            let heard = frontend.sessions.last_heard_or_now(id, now).max(since);
            if now < heard + Duration::from_millis(timeout_ms) {
                continue;
            }
            if !expiring.lock().unwrap_or_else(PoisonError::into_inner).insert(id) {
                continue;
            }
            tracing::info!(session = %id, timeout_ms, "session expired");
            let write = Write::system(Action::ExpireSession { session: id });
            let frontend = frontend.clone();
            let expiring = expiring.clone();
            tokio::spawn(async move {
                let failed = match frontend.propose(write).await {
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
