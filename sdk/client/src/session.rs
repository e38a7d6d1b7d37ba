//! The session under a [`Client`](crate::Client): opened on connect, kept alive by pings,
//! resumed over a new connection when one drops, and its watches registered again there.
//!
//! A supervisor task per client watches the connection. When it drops, the session is
//! `Suspended`: requests fail fast with `connection lost` while the supervisor reconnects and
//! resumes the session with its id and secret. Within the session timeout that gives
//! `Reconnected`, and every watch is registered again from the last zxid the client saw, so the
//! node replays what was missed (or says `resync-needed`). Past it, or when the node says the
//! session is gone, the state is `Expired` for good: ephemerals are gone, watches end, requests
//! fail with `session-expired`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use cairn_wire::{
    ApiError, ErrorCode, EventFrame, EventKind, Reply, Request, SET_WATCHES_BATCH_MAX, WatchSpec,
};
use tokio::sync::{mpsc, watch};

use crate::connection::{EventRoute, Link};
use crate::watches::Watchers;
use crate::{Credentials, Error};

/// Shortest wait between reconnect attempts, in milliseconds.
const RECONNECT_BACKOFF_MS_MIN: u64 = 50;
/// Notifications kept for a slow listener before the oldest are dropped.
const NOTIFICATIONS_QUEUED_MAX: usize = 1_024;
/// Longest wait between reconnect attempts, in milliseconds.
const RECONNECT_BACKOFF_MS_MAX: u64 = 1_000;

/// Where a client's session stands. Watch it with [`Client::session_state`](crate::Client::session_state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Connected, session live.
    Connected,
    /// The connection dropped; reconnecting. Requests fail with `connection lost` meanwhile,
    /// and nothing held by this session (a lock, a leadership) should be trusted.
    Suspended,
    /// Connected again with the same session; ephemerals and watches kept.
    Reconnected,
    /// The session has ended: ephemerals deleted, watches gone. Final.
    Expired,
    /// Closed by the application. Final.
    Closed,
}

/// The session's keys, as the node gave them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionKeys {
    pub(crate) id: u64,
    pub(crate) secret: u64,
    pub(crate) timeout_ms: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    /// Every node the client may use, tried in turn after a lost connection.
    servers: Vec<String>,
    /// Which of `servers` the session is on (or was on when the connection dropped).
    current: std::sync::atomic::AtomicUsize,
    credentials: Credentials,
    /// The current connection; `None` while suspended and after the end.
    link: Mutex<Option<Link>>,
    pub(crate) keys: SessionKeys,
    pub(crate) state: watch::Sender<SessionState>,
    pub(crate) last_zxid: Arc<AtomicU64>,
    events: EventRoute,
    /// Messages recipes sent this session.
    pub(crate) notifications: tokio::sync::broadcast::Sender<Notification>,
}

/// A message a recipe sent this client's session (a lock granted, say). A hint: re-check the
/// state after a reconnect, since notifications sent while disconnected are not replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub zxid: u64,
    /// The recipe that sent it, as `name@version`.
    pub recipe: String,
    pub message: Vec<u8>,
}

impl Notification {
    /// Whether recipe `name` (any version) sent it.
    pub fn is_from(&self, name: &str) -> bool {
        self.recipe.split_once('@').is_some_and(|(sender, _)| sender == name)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(link) = self.link.lock().unwrap_or_else(PoisonError::into_inner).take() {
            link.close();
        }
    }
}

impl Shared {
    /// Connects, opens a session and starts its supervisor.
    pub(crate) async fn connect(
        server: &str,
        credentials: &Credentials,
        timeout: Duration,
    ) -> Result<Arc<Shared>, Error> {
        let (supervisor, incoming) = mpsc::unbounded_channel();
        let events = EventRoute { watchers: Arc::default(), supervisor };
        let last_zxid = Arc::new(AtomicU64::new(0));
        let servers: Vec<String> =
            server.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        // The first node that opens a session; the error of the last one tried otherwise.
        let mut failure =
            Error::Connect { server: server.to_string(), reason: "no server given".into() };
        let mut opened = None;
        for (index, server) in servers.iter().enumerate() {
            let attempt = async {
                let link =
                    Link::open(server, credentials, events.clone(), last_zxid.clone(), timeout / 2)
                        .await?;
                match link.call(Request::OpenSession { timeout_ms }).await? {
                    (_, Reply::Session { session_id, secret, timeout_ms }) => {
                        Ok((link, SessionKeys { id: session_id, secret, timeout_ms }))
                    }
                    (_, other) => {
                        Err(Error::Protocol(format!("expected a session, got {other:?}")))
                    }
                }
            };
            match attempt.await {
                Ok((link, keys)) => {
                    opened = Some((link, keys, index));
                    break;
                }
                Err(error) => failure = error,
            }
        }
        let Some((link, keys, index)) = opened else { return Err(failure) };
        let shared = Arc::new(Shared {
            servers,
            current: std::sync::atomic::AtomicUsize::new(index),
            credentials: credentials.clone(),
            link: Mutex::new(Some(link)),
            keys,
            state: watch::channel(SessionState::Connected).0,
            last_zxid,
            events,
            notifications: tokio::sync::broadcast::channel(NOTIFICATIONS_QUEUED_MAX).0,
        });
        tokio::spawn(supervise(Arc::downgrade(&shared), incoming));
        Ok(shared)
    }

    fn link(&self) -> Option<Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn watchers(&self) -> std::sync::MutexGuard<'_, Watchers> {
        self.events.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a request on the current connection.
    pub(crate) async fn call(&self, request: Request) -> Result<(u64, Reply), Error> {
        match *self.state.borrow() {
            SessionState::Expired => {
                return Err(Error::Api(ApiError::new(ErrorCode::SessionExpired)));
            }
            SessionState::Closed => {
                return Err(Error::ConnectionLost("the client is closed".into()));
            }
            _ => {}
        }
        let Some(link) = self.link() else {
            return Err(Error::ConnectionLost("reconnecting".into()));
        };
        link.call(request).await
    }

    /// Closes the session (its ephemerals go at once) and the connection.
    pub(crate) async fn close(&self) -> Result<(), Error> {
        let result = self.call(Request::CloseSession {}).await.map(|_| ());
        self.finish(SessionState::Closed);
        result
    }

    /// Ends the session for good.
    fn finish(&self, state: SessionState) {
        self.state.send_replace(state);
        if let Some(link) = self.link.lock().unwrap_or_else(PoisonError::into_inner).take() {
            link.close();
        }
        self.watchers().clear();
    }

    fn is_final(&self) -> bool {
        matches!(*self.state.borrow(), SessionState::Expired | SessionState::Closed)
    }

    /// Handles one event of the node.
    fn event(&self, event: EventFrame) {
        match event.kind {
            EventKind::SessionExpired => self.finish(SessionState::Expired),
            EventKind::Notification => {
                let message = event.message.unwrap_or_default();
                let recipe = event.recipe.unwrap_or_default();
                let _ = self.notifications.send(Notification { zxid: event.zxid, recipe, message });
            }
            _ => self.watchers().dispatch(event),
        }
    }

    /// Reconnects and resumes the session; false when the node says it has ended or the timeout
    /// has passed.
    async fn resume(&self, deadline: Instant) -> bool {
        let mut backoff = Duration::from_millis(RECONNECT_BACKOFF_MS_MIN);
        // What the watches have seen: fixed before the resume, whose own reply already carries
        // the node's latest zxid although none of the missed events came with it.
        let since = self.last_zxid.load(Ordering::Relaxed);
        // Each attempt tries the next node, starting after the one that was lost (it may be
        // down for good); a lone server is tried again and again.
        let count = self.servers.len().max(1);
        let mut next = (self.current.load(Ordering::Relaxed) + usize::from(count > 1)) % count;
        while Instant::now() < deadline {
            let index = next;
            let server = &self.servers[index];
            next = (next + 1) % count;
            let attempt = async {
                let idle_timeout = Duration::from_millis(self.keys.timeout_ms / 2);
                // A dead node does not answer at all: give up on it well inside the timeout.
                let patience = Duration::from_millis(self.keys.timeout_ms / 4);
                let link = tokio::time::timeout(
                    patience,
                    Link::open(
                        server,
                        &self.credentials,
                        self.events.clone(),
                        self.last_zxid.clone(),
                        idle_timeout,
                    ),
                )
                .await
                .map_err(|_| Error::Connect {
                    server: server.clone(),
                    reason: format!("no answer within {patience:?}"),
                })??;
                let request =
                    Request::ResumeSession { session_id: self.keys.id, secret: self.keys.secret };
                link.call(request).await?;
                Ok::<Link, Error>(link)
            };
            match attempt.await {
                Ok(link) => {
                    self.current.store(index, Ordering::Relaxed);
                    let specs = self.watchers().specs();
                    if let Err(error) = register_again(&link, since, specs).await {
                        tracing::warn!(%error, "cannot register watches again");
                    }
                    *self.link.lock().unwrap_or_else(PoisonError::into_inner) = Some(link);
                    return true;
                }
                // Gone, or no longer this principal's to resume (its token was revoked).
                Err(error)
                    if matches!(
                        error.code(),
                        Some(ErrorCode::SessionExpired | ErrorCode::AuthFailed)
                    ) =>
                {
                    return false;
                }
                Err(error) => tracing::debug!(%error, "reconnect failed; retrying"),
            }
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            backoff = (backoff * 2).min(Duration::from_millis(RECONNECT_BACKOFF_MS_MAX));
        }
        false
    }
}

/// Registers watches on a new stream, a batch at a time.
async fn register_again(link: &Link, since: u64, specs: Vec<WatchSpec>) -> Result<(), Error> {
    for batch in specs.chunks(SET_WATCHES_BATCH_MAX) {
        link.call(Request::SetWatches { since_zxid: since, watches: batch.to_vec() }).await?;
    }
    Ok(())
}

/// The supervisor: pings, routes events, and resumes the session when the connection drops.
/// Ends when the client is dropped or the session ends.
async fn supervise(shared: Weak<Shared>, mut incoming: mpsc::UnboundedReceiver<EventFrame>) {
    let Some(timeout_ms) = shared.upgrade().map(|shared| shared.keys.timeout_ms) else { return };
    // Four pings per timeout: the node hears from a live client well within it, and the
    // connection is never idle for the half timeout after which it is given up.
    let mut pings = tokio::time::interval(Duration::from_millis((timeout_ms / 4).max(1)));
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(link) = shared.upgrade().and_then(|shared| shared.link()) else { return };
        tokio::select! {
            event = incoming.recv() => {
                let (Some(event), Some(shared)) = (event, shared.upgrade()) else { return };
                // The node dropped every watch of this session (its events fell too far
                // behind): register them again from just before the first one lost.
                if event.kind == EventKind::ResyncNeeded && event.watch.is_none() {
                    let since = event.zxid.saturating_sub(1);
                    let specs = shared.watchers().specs();
                    if let Err(error) = register_again(&link, since, specs.clone()).await {
                        // The node keeps none of them (its principal may no longer read, say):
                        // each watch hears `resync-needed`, and reading again says why.
                        tracing::warn!(%error, "cannot register watches again");
                        for spec in specs {
                            shared.event(EventFrame {
                                kind: EventKind::ResyncNeeded,
                                path: spec.path.clone(),
                                zxid: event.zxid,
                                watch: Some(spec),
                                message: None,
                                recipe: None,
                            });
                        }
                    }
                } else {
                    shared.event(event);
                }
                if shared.is_final() {
                    return;
                }
            }
            _ = pings.tick() => {
                tokio::spawn(async move {
                    let _ = link.call(Request::Ping {}).await;
                });
            }
            () = link.closed() => {
                let Some(shared) = shared.upgrade() else { return };
                if shared.is_final() {
                    return;
                }
                shared.link.lock().unwrap_or_else(PoisonError::into_inner).take();
                shared.state.send_replace(SessionState::Suspended);
                let deadline = Instant::now() + Duration::from_millis(shared.keys.timeout_ms);
                if shared.resume(deadline).await {
                    shared.state.send_replace(SessionState::Reconnected);
                } else {
                    shared.finish(SessionState::Expired);
                    return;
                }
            }
        }
    }
}
