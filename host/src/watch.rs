//! Watches: which session wants to hear of which change, and the delivery of what they hear.
//!
//! Request path: reads with `watch`, `add-watch` and `set-watches` register here (under the
//! state's read lock, so no change slips between the read and the registration). When
//! `raft::state_machine` applies an entry it calls [`WatchHub::publish`] under the state's write
//! lock, before any reply reflecting that entry can be sent; the events go into the bound
//! stream's outbox, the same ordered queue its replies take. So a client sees an event before
//! any reply reflecting a later zxid, and its events arrive in zxid order.
//!
//! Every event is checked against the ACL the changed znode had (for a children change, the
//! parent's): a session hears only of what its principal may read, recursive watches included.
//!
//! Watches are node-local and never logged. They belong to a session while a stream is bound to
//! it; when the stream ends they are dropped, and the client library registers them again on
//! its next stream with `set-watches` and the last zxid it saw.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cairn_wire::{
    ApiError, ErrorCode, EventFrame, EventKind, RemoveKind, WATCH_PATH_BYTES_PER_SESSION_MAX,
    WATCHES_PER_SESSION_MAX, WatchKind, WatchSpec, path,
};
use tokio::sync::mpsc;

use crate::store::{Acl, Caller, DataTree, Effects, Principal, SessionId, Zxid};

/// Changes kept for replay to persistent watches after a reconnect.
pub const CHANGE_HISTORY_MAX: usize = 100_000;

/// Events queued for one stream and not yet written; beyond this the session's watches are
/// dropped and it is told `resync-needed`.
pub const EVENTS_QUEUED_PER_STREAM_MAX: usize = 10_000;

/// Bytes of replies and events queued for one stream and not yet written. While a stream's
/// outbox holds more, the node reads no more of its requests (QUIC's flow control then holds
/// the client back); see [`OUTBOX_DRAIN_MS_MAX`].
pub const OUTBOX_BYTES_PER_STREAM_MAX: usize = 8 * 1024 * 1024;
/// How long a full outbox may go without the client reading anything before the node closes
/// the connection of a client that does not read its replies. (Below the 30 s idle timeout
/// QUIC clients commonly use, so such a client hears why.)
pub const OUTBOX_DRAIN_MS_MAX: u64 = 20_000;

/// What a stream's writer sends, in order.
#[derive(Debug)]
pub enum Outgoing {
    /// An encoded response frame.
    Frame(Vec<u8>),
    Event(EventFrame),
}

impl Outgoing {
    /// What it counts against [`OUTBOX_BYTES_PER_STREAM_MAX`]: a frame's length, or an
    /// event's fields plus room for its encoding.
    pub fn bytes(&self) -> usize {
        match self {
            Outgoing::Frame(frame) => frame.len(),
            Outgoing::Event(event) => {
                64 + event.path.len()
                    + event.message.as_ref().map_or(0, Vec::len)
                    + event.watch.as_ref().map_or(0, |watch| watch.path.len())
                    + event.recipe.as_ref().map_or(0, String::len)
            }
        }
    }
}

/// How full a stream's outbox is: shared by the queuing side and the stream's writer.
#[derive(Debug, Default)]
pub struct OutboxLoad {
    events: AtomicUsize,
    bytes: AtomicUsize,
    /// Woken whenever the writer has written something.
    drained: tokio::sync::Notify,
    /// Set once a reply gave up waiting for room: the client does not read, and the stream's
    /// reader closes the connection (woken through `gave_up`).
    abandoned: std::sync::atomic::AtomicBool,
    gave_up: tokio::sync::Notify,
}

impl OutboxLoad {
    /// The writer is done with an outgoing frame of `bytes` (see [`Outgoing::bytes`]), an event
    /// or not.
    pub fn written(&self, bytes: usize, event: bool) {
        if event {
            self.events.fetch_sub(1, Ordering::Relaxed);
        }
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.drained.notify_waiters();
    }

    fn queued(&self, outgoing: &Outgoing) {
        if matches!(outgoing, Outgoing::Event(_)) {
            self.events.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes.fetch_add(outgoing.bytes(), Ordering::Relaxed);
    }

    /// Bytes queued and not yet written.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Waits until fewer than [`OUTBOX_BYTES_PER_STREAM_MAX`] bytes are queued; false if the
    /// writer writes nothing for [`OUTBOX_DRAIN_MS_MAX`] meanwhile (a client that reads, however
    /// slowly, is waited for; one that does not read is given up on).
    pub async fn wait_for_room(&self) -> bool {
        let stalled = Duration::from_millis(OUTBOX_DRAIN_MS_MAX);
        loop {
            let drained = self.drained.notified();
            if self.bytes() < OUTBOX_BYTES_PER_STREAM_MAX {
                return true;
            }
            if tokio::time::timeout(stalled, drained).await.is_err() {
                let room = self.bytes() < OUTBOX_BYTES_PER_STREAM_MAX;
                if !room {
                    self.abandoned.store(true, Ordering::Relaxed);
                    self.gave_up.notify_waiters();
                }
                return room;
            }
        }
    }

    /// Resolves once a reply has given up waiting for room in the outbox.
    pub async fn abandoned(&self) {
        loop {
            let gave_up = self.gave_up.notified();
            if self.abandoned.load(Ordering::Relaxed) {
                return;
            }
            gave_up.await;
        }
    }
}

/// A stream's queue of outgoing frames, shared by its replies and its session's events.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// Tells bindings of different streams apart.
    id: u64,
    sender: mpsc::UnboundedSender<Outgoing>,
    /// What is queued and not yet written. The channel itself is unbounded; these counts bound
    /// it: events by number (else `resync-needed`), everything by bytes (else the stream stops
    /// reading requests, and the connection is closed if it stays full).
    load: Arc<OutboxLoad>,
    /// Taken by whoever is about to make and queue a reply, after waiting for room: replies are
    /// made one at a time once the outbox is full, so it passes its bound by one reply at most,
    /// however many requests are in flight.
    turn: Arc<tokio::sync::Mutex<()>>,
}

static NEXT_OUTBOX_ID: AtomicU64 = AtomicU64::new(1);

impl Outbox {
    pub fn new() -> (Outbox, mpsc::UnboundedReceiver<Outgoing>, Arc<OutboxLoad>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let load = Arc::new(OutboxLoad::default());
        let id = NEXT_OUTBOX_ID.fetch_add(1, Ordering::Relaxed);
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        (Outbox { id, sender, load: load.clone(), turn }, receiver, load)
    }

    /// Waits until the outbox has room for a reply and returns the turn to make and queue it;
    /// `None` if the client read nothing for [`OUTBOX_DRAIN_MS_MAX`] meanwhile (the stream's
    /// reader closes the connection then).
    pub async fn room_for_reply(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let turn = self.turn.lock().await;
        self.load.wait_for_room().await.then_some(turn)
    }

    fn send(&self, outgoing: Outgoing) -> bool {
        self.load.queued(&outgoing);
        match self.sender.send(outgoing) {
            Ok(()) => true,
            Err(mpsc::error::SendError(outgoing)) => {
                self.load.written(outgoing.bytes(), matches!(outgoing, Outgoing::Event(_)));
                false
            }
        }
    }

    /// Queues a response frame; false once the stream is gone.
    pub fn send_frame(&self, frame: Vec<u8>) -> bool {
        self.send(Outgoing::Frame(frame))
    }

    /// Queues an event; false when the stream is gone or too far behind.
    fn send_event(&self, event: EventFrame) -> bool {
        let metrics = crate::metrics::get();
        if self.load.events.load(Ordering::Relaxed) >= EVENTS_QUEUED_PER_STREAM_MAX {
            metrics.watch_events_dropped.inc();
            return false;
        }
        let sent = self.send(Outgoing::Event(event));
        if sent {
            metrics.watch_events_sent.inc();
        }
        sent
    }
}

/// One session's watches and the stream they are delivered to.
#[derive(Debug)]
struct Binding {
    outbox: Outbox,
    /// Who the stream speaks for, and what that principal is as of the applied state: what
    /// its watches may hear of.
    principal: Principal,
    reader: Caller,
    watches: BTreeSet<WatchSpec>,
    /// Bytes of the watched paths, against [`WATCH_PATH_BYTES_PER_SESSION_MAX`].
    watched_path_bytes: usize,
}

impl Binding {
    fn new(outbox: Outbox, principal: Principal, reader: Caller) -> Binding {
        Binding { outbox, principal, reader, watches: BTreeSet::new(), watched_path_bytes: 0 }
    }

    fn remove(&mut self, spec: &WatchSpec) -> bool {
        let removed = self.watches.remove(spec);
        if removed {
            self.watched_path_bytes -= spec.path.len();
        }
        removed
    }

    /// Drops every watch, returning them.
    fn take_all(&mut self) -> BTreeSet<WatchSpec> {
        self.watched_path_bytes = 0;
        std::mem::take(&mut self.watches)
    }
}

#[derive(Debug, Default)]
struct Hub {
    bindings: HashMap<SessionId, Binding>,
    /// Who watches each (path, kind).
    index: BTreeMap<WatchSpec, BTreeSet<SessionId>>,
    /// Watches held by each principal's sessions, against its quota.
    held: HashMap<Arc<str>, u64>,
    /// Recent changes, oldest first.
    history: VecDeque<(Zxid, EventKind, String, Acl)>,
    /// Every change after this zxid is in `history`.
    history_since: Zxid,
}

/// The node's watch registry. Cheap to share.
#[derive(Debug, Default)]
pub struct WatchHub {
    hub: Mutex<Hub>,
}

impl WatchHub {
    /// A hub whose history starts at `zxid`: the state it begins with needs no replay.
    pub fn new(zxid: Zxid) -> WatchHub {
        WatchHub { hub: Mutex::new(Hub { history_since: zxid, ..Hub::default() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Binds a session to a stream's outbox, dropping the watches of any stream bound before.
    /// Its watches hear only of what `principal` (now `reader`) may read.
    pub fn bind(&self, session: SessionId, outbox: Outbox, principal: Principal, reader: Caller) {
        let mut hub = self.lock();
        hub.unbind(session);
        hub.bindings.insert(session, Binding::new(outbox, principal, reader));
    }

    /// The stream bound to `session` through `outbox` now speaks for `principal`, whose watches
    /// hear what `reader` may read (a ZooKeeper client proved an identity with `auth`). The
    /// watches it holds count against the new principal's quota from now on.
    pub fn speak_for(
        &self,
        session: SessionId,
        outbox: &Outbox,
        principal: Principal,
        reader: Caller,
    ) {
        let mut hub = self.lock();
        let Some(binding) = hub.bindings.get_mut(&session) else { return };
        if binding.outbox.id != outbox.id {
            return;
        }
        let (before, held) = (binding.reader.name.clone(), binding.watches.len() as u64);
        binding.principal = principal;
        binding.reader = reader;
        let after = binding.reader.name.clone();
        hub.release(&before, held);
        if held > 0 {
            *hub.held.entry(after).or_default() += held;
        }
    }

    /// Whether `session` holds a watch on `watch_path` that `kind` would remove.
    pub fn holds(&self, session: SessionId, watch_path: &str, kind: RemoveKind) -> bool {
        let hub = self.lock();
        hub.bindings.get(&session).is_some_and(|binding| {
            binding
                .watches
                .iter()
                .any(|spec| spec.path == watch_path && matches_remove(spec.kind, kind))
        })
    }

    /// How many watches the sessions bound here hold.
    pub fn count(&self) -> u64 {
        self.lock().held.values().sum()
    }

    /// How many watches each session bound to this node holds.
    pub fn per_session(&self) -> HashMap<SessionId, usize> {
        self.lock()
            .bindings
            .iter()
            .map(|(session, binding)| (*session, binding.watches.len()))
            .collect()
    }

    /// How many watches `name`'s sessions hold on this node.
    pub fn held_by(&self, name: &str) -> u64 {
        self.lock().held.get(name).copied().unwrap_or(0)
    }

    /// Unbinds a session from a stream that has ended, if that stream is still the bound one.
    pub fn unbind(&self, session: SessionId, outbox: &Outbox) {
        let mut hub = self.lock();
        if hub.bindings.get(&session).is_some_and(|binding| binding.outbox.id == outbox.id) {
            hub.unbind(session);
        }
    }

    /// Registers a watch for a bound session, if its principal holds fewer than `quota`
    /// watches (`None`: not bounded).
    pub fn register(
        &self,
        session: SessionId,
        spec: WatchSpec,
        quota: Option<u64>,
    ) -> Result<(), ApiError> {
        self.lock().register(session, spec, quota)
    }

    /// Removes a session's watches of `kind` on `path`; returns how many.
    pub fn remove(&self, session: SessionId, watch_path: &str, kind: RemoveKind) -> u32 {
        let mut hub = self.lock();
        let Some(binding) = hub.bindings.get_mut(&session) else { return 0 };
        let removed: Vec<WatchSpec> = binding
            .watches
            .iter()
            .filter(|spec| spec.path == watch_path && matches_remove(spec.kind, kind))
            .cloned()
            .collect();
        for spec in &removed {
            binding.remove(spec);
        }
        let name = binding.reader.name.clone();
        hub.release(&name, removed.len() as u64);
        for spec in &removed {
            hub.unindex(session, spec);
        }
        removed.len() as u32
    }

    /// Registers watches again after a reconnect, against `tree` (the caller holds the state's
    /// read lock, so nothing is applied meanwhile). A one-shot watch whose znode changed after
    /// `since` fires at once, as ZooKeeper's SetWatches does; a persistent watch gets every
    /// change after `since` replayed from the history, or `resync-needed` if the history no
    /// longer reaches back that far. Every watched path must be one the session's principal
    /// may read, and its watches stay within its quota.
    pub fn set_watches(
        &self,
        session: SessionId,
        since: Zxid,
        specs: Vec<WatchSpec>,
        tree: &DataTree,
    ) -> Result<(), ApiError> {
        let mut hub = self.lock();
        let zxid = tree.last_zxid();
        let Some(reader) = hub.bindings.get(&session).map(|binding| binding.reader.clone()) else {
            return Err(ApiError::new(ErrorCode::NoSession).with_detail("no stream bound"));
        };
        let quota = (!reader.admin).then(|| tree.access().quota(&reader.name).watches);
        for spec in &specs {
            tree.check_read(&reader, &spec.path)?;
        }
        for spec in specs {
            let stat = tree.node(&spec.path).map(|node| node.stat());
            let fired = match (spec.kind, stat) {
                (WatchKind::Exists, Some(_)) => Some(EventKind::Created),
                (WatchKind::Data, None) => Some(EventKind::Deleted),
                (WatchKind::Data, Some(stat)) if stat.mzxid > since.0 => {
                    Some(EventKind::DataChanged)
                }
                (WatchKind::Children, None) => Some(EventKind::Deleted),
                (WatchKind::Children, Some(stat)) if stat.pzxid > since.0 => {
                    Some(EventKind::ChildrenChanged)
                }
                (WatchKind::Persistent | WatchKind::PersistentRecursive, _) => {
                    hub.replay(session, &spec, since, zxid);
                    hub.register(session, spec, quota)?;
                    continue;
                }
                _ => None,
            };
            match fired {
                Some(kind) => {
                    let event = EventFrame {
                        kind,
                        path: spec.path.clone(),
                        zxid: zxid.0,
                        watch: Some(spec),
                        message: None,
                        recipe: None,
                    };
                    hub.deliver(session, event);
                }
                None => hub.register(session, spec, quota)?,
            }
        }
        Ok(())
    }

    /// Forgets the history and every watch after the state jumped to `zxid` (a snapshot was
    /// installed), telling every bound stream `resync-needed`.
    pub fn reset(&self, zxid: Zxid, tree: &DataTree) {
        let mut hub = self.lock();
        hub.history.clear();
        hub.history_since = zxid;
        hub.index.clear();
        hub.held.clear();
        for binding in hub.bindings.values_mut() {
            binding.take_all();
            binding.reader = tree
                .caller(&binding.principal)
                .unwrap_or_else(|_| Caller { name: binding.reader.name.clone(), admin: false });
            let event = EventFrame {
                kind: EventKind::ResyncNeeded,
                path: "/".into(),
                zxid: zxid.0,
                watch: None,
                message: None,
                recipe: None,
            };
            binding.outbox.send_event(event);
        }
    }

    /// Delivers the changes of the entry at `zxid` to the watches they fire, and tells the
    /// streams of ended sessions. Called under the state's write lock, with the state `tree`
    /// the entry left.
    pub fn publish(&self, zxid: Zxid, effects: &Effects, tree: &DataTree) {
        if effects.changes.is_empty()
            && effects.ended_sessions.is_empty()
            && effects.notifications.is_empty()
            && !effects.access_changed
        {
            return;
        }
        let mut hub = self.lock();
        if effects.access_changed {
            hub.decide_readers_again(zxid, tree);
        }
        for change in &effects.changes {
            let (kind, changed) = (&change.kind, &change.path);
            hub.record(zxid, *kind, changed, &change.acl);
            for (spec, session) in hub.watchers(*kind, changed) {
                // Only what the session's principal may read.
                let allowed = hub.bindings.get(&session).is_some_and(|binding| {
                    binding.reader.allows(&change.acl, cairn_wire::access::READ)
                });
                if !allowed {
                    continue;
                }
                let event = EventFrame {
                    kind: *kind,
                    path: changed.clone(),
                    zxid: zxid.0,
                    watch: Some(spec.clone()),
                    message: None,
                    recipe: None,
                };
                if matches!(spec.kind, WatchKind::Data | WatchKind::Exists | WatchKind::Children) {
                    hub.unregister(session, &spec);
                }
                hub.deliver(session, event);
            }
        }
        for note in &effects.notifications {
            // Through `deliver`: a stream too far behind to take it hears `resync-needed`.
            let event = EventFrame {
                kind: EventKind::Notification,
                path: String::new(),
                zxid: zxid.0,
                watch: None,
                message: Some(note.message.clone()),
                recipe: Some(note.recipe.clone()),
            };
            hub.deliver(note.session, event);
        }
        for session in &effects.ended_sessions {
            if let Some(binding) = hub.bindings.get(session) {
                let event = EventFrame {
                    kind: EventKind::SessionExpired,
                    path: String::new(),
                    zxid: zxid.0,
                    watch: None,
                    message: None,
                    recipe: None,
                };
                binding.outbox.send_event(event);
            }
            hub.unbind(*session);
        }
    }
}

fn matches_remove(kind: WatchKind, remove: RemoveKind) -> bool {
    matches!(
        (kind, remove),
        (_, RemoveKind::Any)
            | (WatchKind::Data | WatchKind::Exists, RemoveKind::Data)
            | (WatchKind::Children, RemoveKind::Children)
            | (WatchKind::Persistent, RemoveKind::Persistent)
            | (WatchKind::PersistentRecursive, RemoveKind::PersistentRecursive)
    )
}

impl Hub {
    fn register(
        &mut self,
        session: SessionId,
        spec: WatchSpec,
        quota: Option<u64>,
    ) -> Result<(), ApiError> {
        let Some(binding) = self.bindings.get_mut(&session) else {
            return Err(ApiError::new(ErrorCode::NoSession).with_detail("no stream bound"));
        };
        if binding.watches.contains(&spec) {
            return Ok(());
        }
        let held = self.held.get(&binding.reader.name).copied().unwrap_or(0);
        if let Some(quota) = quota
            && held >= quota
        {
            return Err(ApiError::at(ErrorCode::QuotaExceeded, spec.path.clone()).with_detail(
                format!(
                    "{}'s sessions hold {quota} watches on this node, its quota",
                    binding.reader.name
                ),
            ));
        }
        if binding.watches.len() >= WATCHES_PER_SESSION_MAX {
            return Err(ApiError::at(ErrorCode::TooManyWatches, spec.path.clone())
                .with_detail(format!("{WATCHES_PER_SESSION_MAX} watches held")));
        }
        if binding.watched_path_bytes + spec.path.len() > WATCH_PATH_BYTES_PER_SESSION_MAX {
            return Err(ApiError::at(ErrorCode::TooManyWatches, spec.path.clone()).with_detail(
                format!("{WATCH_PATH_BYTES_PER_SESSION_MAX} bytes of watched paths held"),
            ));
        }
        binding.watched_path_bytes += spec.path.len();
        binding.watches.insert(spec.clone());
        *self.held.entry(binding.reader.name.clone()).or_default() += 1;
        self.index.entry(spec).or_default().insert(session);
        Ok(())
    }

    /// Resolves every stream's principal against `tree` again (an administrator was made or
    /// unmade, a token revoked). A stream whose token is no longer good loses its watches and
    /// hears `resync-needed`; its next request fails with `auth-failed`.
    fn decide_readers_again(&mut self, zxid: Zxid, tree: &DataTree) {
        let sessions: Vec<SessionId> = self.bindings.keys().copied().collect();
        for session in sessions {
            let Some(binding) = self.bindings.get_mut(&session) else { continue };
            match tree.caller(&binding.principal) {
                Ok(reader) => binding.reader = reader,
                Err(_) => {
                    binding.reader.admin = false;
                    self.drop_watches(session, zxid);
                }
            }
        }
    }

    /// `count` watches of `name`'s sessions are gone.
    fn release(&mut self, name: &Arc<str>, count: u64) {
        if let Some(held) = self.held.get_mut(name) {
            *held = held.saturating_sub(count);
            if *held == 0 {
                self.held.remove(name);
            }
        }
    }

    fn unregister(&mut self, session: SessionId, spec: &WatchSpec) {
        if let Some(binding) = self.bindings.get_mut(&session)
            && binding.remove(spec)
        {
            let name = binding.reader.name.clone();
            self.release(&name, 1);
        }
        self.unindex(session, spec);
    }

    fn unindex(&mut self, session: SessionId, spec: &WatchSpec) {
        if let Some(sessions) = self.index.get_mut(spec) {
            sessions.remove(&session);
            if sessions.is_empty() {
                self.index.remove(spec);
            }
        }
    }

    fn unbind(&mut self, session: SessionId) {
        if let Some(binding) = self.bindings.remove(&session) {
            self.release(&binding.reader.name, binding.watches.len() as u64);
            for spec in &binding.watches {
                self.unindex(session, spec);
            }
        }
    }

    /// The watches a change of `kind` at `changed` fires, with their sessions.
    fn watchers(&self, kind: EventKind, changed: &str) -> Vec<(WatchSpec, SessionId)> {
        let mut kinds = Vec::with_capacity(3);
        match kind {
            EventKind::Created => kinds.extend([WatchKind::Exists, WatchKind::Persistent]),
            EventKind::DataChanged => kinds.extend([WatchKind::Data, WatchKind::Persistent]),
            EventKind::Deleted => {
                kinds.extend([WatchKind::Data, WatchKind::Children, WatchKind::Persistent]);
            }
            EventKind::ChildrenChanged => {
                kinds.push(WatchKind::Children);
                kinds.push(WatchKind::Persistent);
            }
            EventKind::ResyncNeeded | EventKind::SessionExpired | EventKind::Notification => {}
        }
        let mut found = Vec::new();
        for watch_kind in kinds {
            let spec = WatchSpec { path: changed.to_string(), kind: watch_kind };
            if let Some(sessions) = self.index.get(&spec) {
                found.extend(sessions.iter().map(|session| (spec.clone(), *session)));
            }
        }
        // Recursive watches hear of creations, data changes and deletions at or below them.
        if kind != EventKind::ChildrenChanged {
            let mut ancestor = changed;
            loop {
                let spec =
                    WatchSpec { path: ancestor.to_string(), kind: WatchKind::PersistentRecursive };
                if let Some(sessions) = self.index.get(&spec) {
                    found.extend(sessions.iter().map(|session| (spec.clone(), *session)));
                }
                if ancestor == "/" {
                    break;
                }
                ancestor = path::parent(ancestor);
            }
        }
        found
    }

    fn record(&mut self, zxid: Zxid, kind: EventKind, changed: &str, acl: &Acl) {
        if self.history.len() >= CHANGE_HISTORY_MAX
            && let Some((dropped, _, _, _)) = self.history.pop_front()
        {
            // Changes at the dropped zxid may remain; replay from it is no longer whole.
            self.history_since = dropped;
        }
        self.history.push_back((zxid, kind, changed.to_string(), acl.clone()));
    }

    /// Sends a persistent watch every change after `since` it would have fired for, or
    /// `resync-needed` when the history does not reach back that far.
    fn replay(&mut self, session: SessionId, spec: &WatchSpec, since: Zxid, zxid: Zxid) {
        if since >= zxid {
            return;
        }
        if since < self.history_since {
            let event = EventFrame {
                kind: EventKind::ResyncNeeded,
                path: spec.path.clone(),
                zxid: zxid.0,
                watch: Some(spec.clone()),
                message: None,
                recipe: None,
            };
            self.deliver(session, event);
            return;
        }
        let Some(reader) = self.bindings.get(&session).map(|binding| binding.reader.clone()) else {
            return;
        };
        let missed: Vec<EventFrame> = self
            .history
            .iter()
            .filter(|(change_zxid, kind, changed, acl)| {
                *change_zxid > since
                    && fires(spec, *kind, changed)
                    && reader.allows(acl, cairn_wire::access::READ)
            })
            .map(|(change_zxid, kind, changed, _)| EventFrame {
                kind: *kind,
                path: changed.clone(),
                zxid: change_zxid.0,
                watch: Some(spec.clone()),
                message: None,
                recipe: None,
            })
            .collect();
        for event in missed {
            self.deliver(session, event);
        }
    }

    /// Queues an event for a session's stream. A stream too far behind loses all its watches
    /// and is told `resync-needed` (with no watch: all of them) after what is queued.
    fn deliver(&mut self, session: SessionId, event: EventFrame) {
        let Some(binding) = self.bindings.get_mut(&session) else { return };
        if binding.outbox.send_event(event.clone()) {
            return;
        }
        tracing::warn!(%session, "event queue full; dropping the session's watches");
        self.drop_watches(session, Zxid(event.zxid));
    }

    /// Drops every watch of `session` and tells its stream `resync-needed` (with no watch: all
    /// of them), past the event limit by one if need be: the client must learn they are gone.
    fn drop_watches(&mut self, session: SessionId, zxid: Zxid) {
        let Some(binding) = self.bindings.get_mut(&session) else { return };
        let dropped = binding.take_all();
        let name = binding.reader.name.clone();
        let told = binding.outbox.send(Outgoing::Event(EventFrame {
            kind: EventKind::ResyncNeeded,
            path: "/".into(),
            zxid: zxid.0,
            watch: None,
            message: None,
            recipe: None,
        }));
        if told {
            crate::metrics::get().watch_events_sent.inc();
        }
        self.release(&name, dropped.len() as u64);
        for spec in &dropped {
            self.unindex(session, spec);
        }
    }
}

/// Whether a persistent watch fires for a change.
fn fires(spec: &WatchSpec, kind: EventKind, changed: &str) -> bool {
    match spec.kind {
        WatchKind::Persistent => changed == spec.path,
        WatchKind::PersistentRecursive => {
            kind != EventKind::ChildrenChanged
                && (changed == spec.path
                    || spec.path == "/"
                    || changed
                        .strip_prefix(spec.path.as_str())
                        .is_some_and(|rest| rest.starts_with('/')))
        }
        WatchKind::Data | WatchKind::Exists | WatchKind::Children => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cairn_wire::AclEntry;
    use cairn_wire::access::READ;

    use super::*;
    use crate::store::{Change, Principal};

    /// A hub with one session bound, reading as `reader`, and the receiving end of its stream.
    fn bound(reader: Caller) -> (WatchHub, SessionId, mpsc::UnboundedReceiver<Outgoing>) {
        let hub = WatchHub::new(Zxid::ZERO);
        let (outbox, queue, _load) = Outbox::new();
        let session = SessionId(1);
        let principal = Principal::Certificate(reader.name.to_string());
        hub.bind(session, outbox, principal, reader);
        (hub, session, queue)
    }

    fn admin() -> Caller {
        Caller { name: "admin".into(), admin: true }
    }

    fn watch(hub: &WatchHub, session: SessionId, path: &str, kind: WatchKind) {
        hub.register(session, WatchSpec { path: path.into(), kind }, None).expect("registered");
    }

    fn change(kind: EventKind, path: &str) -> Change {
        Change { kind, path: path.into(), acl: Arc::new(vec![AclEntry::anyone(READ)]) }
    }

    /// Applies one entry's changes at `zxid`.
    fn publish(hub: &WatchHub, zxid: u64, changes: Vec<Change>) {
        let effects = Effects { changes, ..Effects::default() };
        hub.publish(Zxid(zxid), &effects, &DataTree::new());
    }

    /// The events queued so far, as (kind, path, the watch's kind).
    fn events(
        queue: &mut mpsc::UnboundedReceiver<Outgoing>,
    ) -> Vec<(EventKind, String, Option<WatchKind>)> {
        let mut seen = Vec::new();
        while let Ok(outgoing) = queue.try_recv() {
            if let Outgoing::Event(event) = outgoing {
                seen.push((event.kind, event.path, event.watch.map(|w| w.kind)));
            }
        }
        seen
    }

    #[test]
    fn one_shot_watches_fire_once_and_persistent_ones_stay() {
        let (hub, session, mut queue) = bound(admin());
        watch(&hub, session, "/a", WatchKind::Data);
        watch(&hub, session, "/b", WatchKind::Exists);
        watch(&hub, session, "/a", WatchKind::Children);
        watch(&hub, session, "/p", WatchKind::Persistent);
        publish(
            &hub,
            1,
            vec![change(EventKind::DataChanged, "/a"), change(EventKind::Created, "/b")],
        );
        publish(
            &hub,
            2,
            vec![change(EventKind::DataChanged, "/a"), change(EventKind::ChildrenChanged, "/a")],
        );
        publish(
            &hub,
            3,
            vec![change(EventKind::DataChanged, "/p"), change(EventKind::DataChanged, "/p")],
        );
        assert_eq!(
            events(&mut queue),
            vec![
                (EventKind::DataChanged, "/a".into(), Some(WatchKind::Data)),
                (EventKind::Created, "/b".into(), Some(WatchKind::Exists)),
                // The data watch on /a fired already; the children watch fires now.
                (EventKind::ChildrenChanged, "/a".into(), Some(WatchKind::Children)),
                (EventKind::DataChanged, "/p".into(), Some(WatchKind::Persistent)),
                (EventKind::DataChanged, "/p".into(), Some(WatchKind::Persistent)),
            ]
        );
        assert_eq!(hub.held_by("admin"), 1, "only the persistent watch is left");
    }

    #[test]
    fn a_stream_that_proves_an_identity_hears_what_it_may_read() {
        let hub = WatchHub::new(Zxid::ZERO);
        let (outbox, mut queue, _load) = Outbox::new();
        let session = SessionId(1);
        let anonymous = Caller { name: "anonymous".into(), admin: false };
        hub.bind(session, outbox.clone(), Principal::Anonymous, anonymous);
        watch(&hub, session, "/secret", WatchKind::Persistent);
        let alice_only = |kind| Change {
            kind,
            path: "/secret".into(),
            acl: Arc::new(vec![AclEntry::user("alice", READ)]),
        };
        let effects =
            Effects { changes: vec![alice_only(EventKind::DataChanged)], ..Effects::default() };
        hub.publish(Zxid(1), &effects, &DataTree::new());
        assert_eq!(events(&mut queue), vec![], "anonymous may not read /secret");

        let alice = Caller { name: "alice".into(), admin: false };
        let (other, _, _) = Outbox::new();
        hub.speak_for(session, &other, Principal::Certificate("alice".into()), alice.clone());
        assert_eq!(hub.held_by("anonymous"), 1, "another stream's word changes nothing");
        hub.speak_for(session, &outbox, Principal::Certificate("alice".into()), alice);
        assert_eq!((hub.held_by("anonymous"), hub.held_by("alice")), (0, 1), "the watch moved");
        let effects =
            Effects { changes: vec![alice_only(EventKind::Deleted)], ..Effects::default() };
        hub.publish(Zxid(2), &effects, &DataTree::new());
        assert_eq!(
            events(&mut queue),
            vec![(EventKind::Deleted, "/secret".into(), Some(WatchKind::Persistent))]
        );
    }

    #[test]
    fn a_recursive_watch_hears_below_it_but_not_children_changes() {
        let (hub, session, mut queue) = bound(admin());
        watch(&hub, session, "/a", WatchKind::PersistentRecursive);
        publish(
            &hub,
            1,
            vec![
                change(EventKind::Created, "/a/b/c"),
                change(EventKind::ChildrenChanged, "/a/b"),
                change(EventKind::DataChanged, "/ab"),
                change(EventKind::Deleted, "/a"),
            ],
        );
        let kinds: Vec<(EventKind, String)> =
            events(&mut queue).into_iter().map(|(kind, path, _)| (kind, path)).collect();
        assert_eq!(
            kinds,
            vec![(EventKind::Created, "/a/b/c".into()), (EventKind::Deleted, "/a".into())]
        );
    }

    #[test]
    fn events_go_only_to_readers_the_acl_lets_read() {
        let alice = Caller { name: "alice".into(), admin: false };
        let (hub, session, mut queue) = bound(alice);
        watch(&hub, session, "/", WatchKind::PersistentRecursive);
        let secret = Change {
            kind: EventKind::Created,
            path: "/secret".into(),
            acl: Arc::new(vec![AclEntry::user("bob", READ)]),
        };
        let granted = Change {
            kind: EventKind::Created,
            path: "/hers".into(),
            acl: Arc::new(vec![AclEntry::user("alice", READ)]),
        };
        publish(&hub, 1, vec![secret, granted]);
        let paths: Vec<String> = events(&mut queue).into_iter().map(|(_, path, _)| path).collect();
        assert_eq!(paths, ["/hers"]);
    }

    #[test]
    fn set_watches_replays_what_the_history_holds_and_resyncs_past_it() {
        let (hub, session, mut queue) = bound(admin());
        publish(&hub, 5, vec![change(EventKind::Created, "/x")]);
        publish(&hub, 6, vec![change(EventKind::DataChanged, "/x")]);
        // The state as of zxid 6, which the watches are registered against.
        let mut tree = DataTree::new();
        let reap = crate::store::Write::system(crate::store::Action::ReapTtl);
        let command = crate::store::Command { time_ms: 0, writes: vec![reap] };
        let none = crate::store::recipes::NoRecipes;
        tree.apply_command(Zxid(6), &command, &mut Effects::default(), &none).expect("applies");
        let persistent = WatchSpec { path: "/x".into(), kind: WatchKind::Persistent };
        hub.set_watches(session, Zxid(5), vec![persistent.clone()], &tree).expect("set");
        assert_eq!(
            events(&mut queue),
            vec![(EventKind::DataChanged, "/x".into(), Some(WatchKind::Persistent))]
        );

        // A history that starts after `since` cannot say what was missed.
        let late = WatchHub::new(Zxid(10));
        let (outbox, mut queue, _load) = Outbox::new();
        late.bind(session, outbox, Principal::System, admin());
        late.set_watches(session, Zxid(3), vec![persistent], &tree).expect("set");
        assert_eq!(
            events(&mut queue),
            vec![(EventKind::ResyncNeeded, "/x".into(), Some(WatchKind::Persistent))]
        );
    }

    #[test]
    fn a_stream_too_far_behind_loses_its_watches_and_hears_resync_needed() {
        let (hub, session, mut queue) = bound(admin());
        watch(&hub, session, "/p", WatchKind::Persistent);
        for zxid in 1..=(EVENTS_QUEUED_PER_STREAM_MAX as u64 + 1) {
            publish(&hub, zxid, vec![change(EventKind::DataChanged, "/p")]);
        }
        let seen = events(&mut queue);
        assert_eq!(seen.len(), EVENTS_QUEUED_PER_STREAM_MAX + 1);
        assert_eq!(seen.last(), Some(&(EventKind::ResyncNeeded, "/".into(), None)));
        assert_eq!(hub.held_by("admin"), 0, "its watches are gone, and uncounted");
    }
}
