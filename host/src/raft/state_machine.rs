//! The state machine openraft drives: the znode tree plus Raft's own bookkeeping, with
//! snapshots in fjall.
//!
//! Request path: openraft hands committed entries to [`StateMachineStore::apply`], which runs
//! each through `DataTree::apply` under the write lock and returns the replies that go back to
//! the clients. The client front end reads the same [`SharedState`] under the read lock.
//!
//! The tree lives in memory, like ZooKeeper's. What makes it durable is the log plus the latest
//! snapshot: a restarting node loads the snapshot and openraft re-applies the committed entries
//! after it. A snapshot is fsynced before openraft may purge the log entries it covers.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::AnyError;
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::storage::Storage;
use super::{ApplyReply, Entry, LogId, Member, NodeId, StorageError, TypeConfig};
use crate::store::recipes::RecipeRunner;
use crate::store::{Action, Command, DataTree, Effects, Zxid};
use crate::watch::WatchHub;

/// The key of the one snapshot kept in the snapshot partition.
const CURRENT_SNAPSHOT_KEY: &str = "current";

/// The replicated state of one node.
#[derive(Debug, Default)]
pub struct StateMachine {
    pub tree: DataTree,
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership<NodeId, Member>,
}

impl StateMachine {
    /// The zxid of the last entry applied: what a read served now reflects.
    pub fn applied_zxid(&self) -> Zxid {
        Zxid(self.last_applied.map_or(0, |id| id.index))
    }
}

/// The state shared between openraft (which writes it) and the client front end (which reads
/// it).
#[derive(Debug, Clone, Default)]
pub struct SharedState(Arc<RwLock<StateMachine>>);

impl SharedState {
    /// A poisoned lock means a panic inside apply; the state itself is still whole (apply's
    /// writes are undone on failure), so readers go on.
    pub fn read(&self) -> RwLockReadGuard<'_, StateMachine> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, StateMachine> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore").field("state", &self.state).finish_non_exhaustive()
    }
}

/// A snapshot's content: the state machine, encoded.
#[derive(Serialize, Deserialize)]
struct SnapshotImage {
    last_applied: Option<LogId>,
    last_membership: StoredMembership<NodeId, Member>,
    #[serde(with = "serde_bytes")]
    tree: Vec<u8>,
}

/// How a snapshot is kept in fjall.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// openraft's state machine storage. Clones share the state.
#[derive(Clone)]
pub struct StateMachineStore {
    state: SharedState,
    /// Hears of every change as it is applied, for the watches of this node's clients.
    watches: Arc<WatchHub>,
    /// Runs the recipes that invoke entries name.
    recipes: Arc<dyn RecipeRunner + Send + Sync>,
    storage: Storage,
    /// Distinguishes snapshots built at the same log id.
    snapshots_built: Arc<AtomicU64>,
    /// The log id the stored snapshot covers, held while it is compared and replaced: a build
    /// of an older state that finishes after a newer snapshot was installed must not
    /// overwrite it.
    stored_snapshot: Arc<std::sync::Mutex<Option<LogId>>>,
}

impl StateMachineStore {
    /// Opens the state machine, loading the current snapshot if there is one.
    pub fn open(
        storage: Storage,
        recipes: Arc<dyn RecipeRunner + Send + Sync>,
    ) -> Result<StateMachineStore, StorageError> {
        let mut store = StateMachineStore {
            state: SharedState::default(),
            watches: Arc::new(WatchHub::new(Zxid::ZERO)),
            recipes,
            storage,
            snapshots_built: Arc::new(AtomicU64::new(0)),
            stored_snapshot: Arc::new(std::sync::Mutex::new(None)),
        };
        if let Some(stored) = store.read_stored_snapshot()? {
            // When it was built is not kept: from the metrics' side, it was taken now.
            snapshot_taken(stored.data.len());
            let machine = decode_image(&stored.data)
                .map_err(|e| StorageIOError::read_snapshot(Some(stored.meta.signature()), &e))?;
            // A node that cannot run the cluster's recipes exactly must not join in applying,
            // unless they are frozen for a change of runtime: then it may start, announce its
            // runtime and wait for the cluster to adopt it.
            let recipes = machine.tree.recipes();
            if let Some(runtime) = &recipes.runtime
                && runtime != store.recipes.runtime_version()
                && !recipes.frozen
            {
                let fault = crate::store::NodeFault {
                    zxid: machine.applied_zxid(),
                    why: format!(
                        "the cluster runs recipes on runtime {runtime}; this node has {}",
                        store.recipes.runtime_version()
                    ),
                };
                return Err(
                    StorageIOError::read_snapshot(Some(stored.meta.signature()), &fault).into()
                );
            }
            store.recipes.compile_live(machine.applied_zxid(), recipes).map_err(|fault| {
                StorageIOError::read_snapshot(Some(stored.meta.signature()), &fault)
            })?;
            *store.stored_snapshot.lock().unwrap_or_else(PoisonError::into_inner) =
                stored.meta.last_log_id;
            store.watches = Arc::new(WatchHub::new(machine.applied_zxid()));
            *store.state.write() = machine;
        }
        Ok(store)
    }

    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    pub fn watches(&self) -> Arc<WatchHub> {
        self.watches.clone()
    }

    fn read_stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let Some(bytes) = self
            .storage
            .snapshot
            .get(CURRENT_SNAPSHOT_KEY)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
        else {
            return Ok(None);
        };
        let stored =
            rmp_serde::from_slice(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(stored))
    }

    /// Writes a snapshot and fsyncs it: after this, the log it covers may be purged.
    fn save_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, Member>,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let mut stored_id = self.stored_snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        if *stored_id > meta.last_log_id {
            tracing::debug!(stored = ?*stored_id, "a newer snapshot is stored; keeping it");
            return Ok(());
        }
        let stored = StoredSnapshot { meta: meta.clone(), data: data.to_vec() };
        let bytes = rmp_serde::to_vec_named(&stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.storage
            .snapshot
            .insert(CURRENT_SNAPSHOT_KEY, bytes)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.storage
            .sync()
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *stored_id = meta.last_log_id;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum ImageError {
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error(transparent)]
    Tree(#[from] crate::store::ImageError),
}

fn decode_image(data: &[u8]) -> Result<StateMachine, ImageError> {
    let image: SnapshotImage = rmp_serde::from_slice(data)?;
    Ok(StateMachine {
        tree: DataTree::from_image(&image.tree)?,
        last_applied: image.last_applied,
        last_membership: image.last_membership,
    })
}

/// Counts the sessions an applied entry opened and expired.
fn count_sessions(command: &Command, replies: &[ApplyReply]) {
    let metrics = crate::metrics::get();
    for (write, reply) in command.writes.iter().zip(replies) {
        match (&write.action, reply) {
            (Action::OpenSession { .. }, Ok(_)) => metrics.sessions_opened.inc(),
            (Action::ExpireSession { .. }, Ok(_)) => metrics.sessions_expired.inc(),
            _ => continue,
        };
    }
}

/// Records the size and time of the snapshot just built, installed or loaded at start.
fn snapshot_taken(bytes: usize) {
    let metrics = crate::metrics::get();
    metrics.snapshot_bytes.set(crate::metrics::gauge(bytes as u64));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    metrics.snapshot_built_unix_seconds.set(now.map_or(0, |t| t.as_secs() as i64));
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// Copies the state under its lock (a copy shares every znode's data, so it is quick), then
    /// encodes the copy and writes it to disk on a blocking thread: applying entries and
    /// serving requests go on while a snapshot of a large tree is built.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let started = std::time::Instant::now();
        let (tree, last_applied, last_membership) = {
            let state = self.state.read();
            (state.tree.clone(), state.last_applied, state.last_membership.clone())
        };
        let built = self.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{built}", id.leader_id, id.index),
            None => format!("empty-{built}"),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership, snapshot_id };
        let (store, saved_meta) = (self.clone(), meta.clone());
        let saved = tokio::task::spawn_blocking(move || {
            let image = SnapshotImage {
                last_applied,
                last_membership: saved_meta.last_membership.clone(),
                tree: tree.to_image().map_err(|e| StorageIOError::write_snapshot(None, &e))?,
            };
            let data = rmp_serde::to_vec_named(&image)
                .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
            store.save_snapshot(&saved_meta, &data)?;
            Ok::<_, StorageError>(data)
        })
        .await;
        let data = match saved {
            Ok(data) => data?,
            Err(error) => {
                return Err(StorageIOError::write_snapshot(None, AnyError::error(error)).into());
            }
        };
        tracing::info!(
            zxid = last_applied.map_or(0, |id| id.index),
            bytes = data.len(),
            "snapshot built"
        );
        crate::metrics::get().snapshot_build_seconds.observe(started.elapsed().as_secs_f64());
        snapshot_taken(data.len());
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, Member>), StorageError> {
        let state = self.state.read();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<ApplyReply>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let runs_recipes = entries.iter().any(|entry| {
            matches!(&entry.payload, EntryPayload::Normal(command) if command.may_run_recipes())
        });
        let apply_all = || {
            let mut state = self.state.write();
            let mut replies = Vec::new();
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                let reply = match entry.payload {
                    EntryPayload::Normal(command) => {
                        let mut effects = Effects::default();
                        // A fault of this node stops it (openraft treats a storage error as
                        // fatal) before any reply or event of the entry goes out.
                        let zxid = Zxid(entry.log_id.index);
                        let replies = state
                            .tree
                            .apply_command(zxid, &command, &mut effects, &*self.recipes)
                            // What the entry deployed is compiled before the next entry runs.
                            .and_then(|replies| {
                                self.recipes.compile_deployed(zxid, &effects.deployed)?;
                                Ok(replies)
                            })
                            .map_err(|fault| {
                                tracing::error!(%fault, "stopping");
                                StorageIOError::apply(entry.log_id, &fault)
                            })?;
                        // Still under the write lock: no reply reflecting this entry is out yet.
                        self.watches.publish(zxid, &effects, &state.tree);
                        count_sessions(&command, &replies);
                        replies
                    }
                    EntryPayload::Membership(membership) => {
                        state.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        Vec::new()
                    }
                    EntryPayload::Blank => Vec::new(),
                };
                replies.push(reply);
            }
            Ok(replies)
        };
        // Recipe code runs synchronously: leave the async runtime once for the whole batch.
        if runs_recipes { crate::recipe::blocking(apply_all) } else { apply_all() }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let machine = decode_image(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.save_snapshot(meta, &data)?;
        snapshot_taken(data.len());
        let zxid = machine.applied_zxid();
        // The snapshot's recipes are compiled before its state is, so apply finds them ready.
        crate::recipe::blocking(|| self.recipes.compile_live(zxid, machine.tree.recipes()))
            .map_err(|fault| StorageIOError::read_snapshot(Some(meta.signature()), &fault))?;
        let mut state = self.state.write();
        *state = machine;
        // The changes the snapshot skipped over are unknown: every watcher must read again,
        // and who may read what is decided again from the new state.
        self.watches.reset(zxid, &state.tree);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.read_stored_snapshot()?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
