//! Watches as the application sees them: one-shot watches as futures, persistent watches as
//! streams of events, and the registry that routes the node's events to them.

use std::collections::HashMap;

use cairn_wire::{ApiError, ErrorCode, EventFrame, EventKind, WatchKind, WatchSpec};
use tokio::sync::{mpsc, oneshot};

use crate::Error;

/// A change a watch reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// The znode that changed (for `resync-needed`, the watched path).
    pub path: String,
    /// The zxid of the change.
    pub zxid: u64,
}

/// A one-shot watch, set by a read: resolves with the first change it reports.
#[derive(Debug)]
pub struct OneShotWatch {
    pub(crate) receiver: oneshot::Receiver<WatchEvent>,
}

impl OneShotWatch {
    /// Waits for the change. Fails with `session-expired` if the session ends first.
    pub async fn fired(self) -> Result<WatchEvent, Error> {
        self.receiver.await.map_err(|_| Error::Api(ApiError::new(ErrorCode::SessionExpired)))
    }
}

/// A persistent watch: every change it reports, in zxid order, across reconnects. An event of
/// kind `resync-needed` means changes may have been missed: read the state again.
#[derive(Debug)]
pub struct WatchStream {
    pub(crate) spec: WatchSpec,
    pub(crate) receiver: mpsc::UnboundedReceiver<WatchEvent>,
}

impl WatchStream {
    /// The next event; `None` once the session has ended.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.receiver.recv().await
    }

    /// The next event if one has already arrived.
    pub fn try_next(&mut self) -> Option<WatchEvent> {
        self.receiver.try_recv().ok()
    }

    /// The watched path.
    pub fn path(&self) -> &str {
        &self.spec.path
    }
}

/// Who waits for which watch on this client.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    one_shot: HashMap<WatchSpec, Vec<oneshot::Sender<WatchEvent>>>,
    persistent: HashMap<WatchSpec, Vec<mpsc::UnboundedSender<WatchEvent>>>,
}

impl Watchers {
    pub(crate) fn add_one_shot(&mut self, spec: WatchSpec) -> OneShotWatch {
        let (sender, receiver) = oneshot::channel();
        self.one_shot.entry(spec).or_default().push(sender);
        OneShotWatch { receiver }
    }

    pub(crate) fn add_persistent(&mut self, spec: WatchSpec) -> WatchStream {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.persistent.entry(spec.clone()).or_default().push(sender);
        WatchStream { spec, receiver }
    }

    /// Forgets the waiters of a watch whose registration failed.
    pub(crate) fn forget(&mut self, spec: &WatchSpec) {
        self.one_shot.remove(spec);
        self.persistent.remove(spec);
    }

    /// Routes one event of the node to the watchers of the watch it names.
    pub(crate) fn dispatch(&mut self, event: EventFrame) {
        let Some(spec) = event.watch else { return };
        let watch_event = WatchEvent { kind: event.kind, path: event.path, zxid: event.zxid };
        match spec.kind {
            WatchKind::Data | WatchKind::Exists | WatchKind::Children => {
                for waiter in self.one_shot.remove(&spec).into_iter().flatten() {
                    let _ = waiter.send(watch_event.clone());
                }
            }
            WatchKind::Persistent | WatchKind::PersistentRecursive => {
                if let Some(streams) = self.persistent.get_mut(&spec) {
                    streams.retain(|stream| stream.send(watch_event.clone()).is_ok());
                    if streams.is_empty() {
                        self.persistent.remove(&spec);
                    }
                }
            }
        }
    }

    /// Every watch someone still waits on: what a new stream registers again.
    pub(crate) fn specs(&mut self) -> Vec<WatchSpec> {
        self.one_shot.retain(|_, waiters| {
            waiters.retain(|waiter| !waiter.is_closed());
            !waiters.is_empty()
        });
        self.persistent.retain(|_, streams| {
            streams.retain(|stream| !stream.is_closed());
            !streams.is_empty()
        });
        self.one_shot.keys().chain(self.persistent.keys()).cloned().collect()
    }

    /// The session is over: every watcher learns it (one-shots fail, streams end).
    pub(crate) fn clear(&mut self) {
        self.one_shot.clear();
        self.persistent.clear();
    }
}
