//! The Raft log, vote and commit index in fjall, with group commit.
//!
//! Request path: openraft calls [`LogStore::append`] with every entry proposed since its last
//! call; the entries go into the keyspace's journal in one batch and their flush callback goes
//! to the syncer thread. The syncer takes every callback waiting, makes one fsync, and only
//! then tells openraft the entries are written, so writers that arrive while an fsync runs
//! share the next one. openraft commits (and the client hears back) only after that.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::storage::Storage;
use super::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// Flush callbacks waiting for the syncer. Appends block (backpressure) when it is this far
/// behind.
const SYNC_QUEUE_CALLBACKS_MAX: usize = 4096;

const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const LAST_PURGED_KEY: &str = "last_purged";

/// openraft's log storage on fjall. Clones share the keyspace and the syncer.
#[derive(Clone)]
pub struct LogStore {
    storage: Storage,
    syncer: mpsc::SyncSender<Flush>,
}

/// A batch of entries written and waiting for its fsync: how many, and openraft's callback.
type Flush = (u64, LogFlushed<TypeConfig>);

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens the log store and starts its syncer thread, which ends when the last clone drops.
    pub fn new(storage: Storage) -> io::Result<LogStore> {
        let (syncer, queue) = mpsc::sync_channel(SYNC_QUEUE_CALLBACKS_MAX);
        let sync_storage = storage.clone();
        thread::Builder::new()
            .name("cairn-log-sync".into())
            .spawn(move || run_syncer(&sync_storage, &queue))?;
        Ok(LogStore { storage, syncer })
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let bytes = self.storage.meta.get(key).map_err(io::Error::other)?;
        bytes.map(|bytes| decode(&bytes).map_err(io::Error::other)).transpose()
    }

    fn write_meta<T: Serialize>(&self, key: &str, value: &T) -> io::Result<()> {
        let bytes = encode(value).map_err(io::Error::other)?;
        self.storage.meta.insert(key, bytes).map_err(io::Error::other)
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(LAST_PURGED_KEY).map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

/// The group-commit loop: one fsync for every callback waiting when it starts.
fn run_syncer(storage: &Storage, queue: &mpsc::Receiver<Flush>) {
    let metrics = crate::metrics::get();
    while let Ok(first) = queue.recv() {
        let mut waiting = vec![first];
        waiting.extend(queue.try_iter());
        let started = std::time::Instant::now();
        let result = storage.sync();
        metrics.log_fsync_seconds.observe(started.elapsed().as_secs_f64());
        let entries: u64 = waiting.iter().map(|(count, _)| count).sum();
        metrics.log_entries_per_fsync.observe(entries as f64);
        metrics.log_entries_pending_sync.dec_by(crate::metrics::gauge(entries));
        for (_, callback) in waiting {
            let result = match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(io::Error::other(format!("log fsync failed: {error}"))),
            };
            callback.log_io_completed(result);
        }
    }
}

/// The commit index this node knows, for its metrics (and readiness).
fn commit_index_known(committed: Option<LogId>) {
    let index = committed.map_or(0, |id| id.index);
    crate::metrics::get().raft_commit_index.set(crate::metrics::gauge(index));
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(value)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.storage.log.range((start, end)) {
            let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let entry: Entry = decode(&value).map_err(|e| StorageIOError::read_logs(&e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = self.storage.log.last_key_value().map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = match last {
            Some((_, value)) => {
                let entry: Entry = decode(&value).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        // A vote must be durable before it is acted on: a node that forgot its vote could vote
        // twice in one term.
        self.write_meta(VOTE_KEY, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.storage.sync().map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE_KEY).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced: a lost commit index is learned again from the leader (or, alone, by
        // committing anew); it only lets a restart re-apply committed entries sooner.
        commit_index_known(committed);
        self.write_meta(COMMITTED_KEY, &committed).map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed = self
            .read_meta::<Option<LogId>>(COMMITTED_KEY)
            .map_err(|e| StorageIOError::read(&e))?
            .flatten();
        commit_index_known(committed);
        Ok(committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut batch = self.storage.keyspace.batch();
        let mut count = 0;
        for entry in entries {
            let value =
                encode(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(&self.storage.log, index_key(entry.log_id.index), value);
            count += 1;
        }
        batch.commit().map_err(|e| StorageIOError::write_logs(&e))?;
        self.storage.counters.log_entries_written.fetch_add(count, Ordering::Relaxed);
        let metrics = crate::metrics::get();
        metrics.log_append_seconds.observe(started.elapsed().as_secs_f64());
        metrics.log_entries_written.inc_by(count);
        metrics.log_entries_pending_sync.inc_by(crate::metrics::gauge(count));
        self.syncer.send((count, callback)).map_err(|_| {
            StorageIOError::write_logs(&io::Error::other("the log syncer has stopped"))
        })?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = self.storage.keyspace.batch();
        for item in self.storage.log.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(&self.storage.log, key);
        }
        batch.commit().map_err(|e| StorageIOError::write_logs(&e))?;
        self.storage.sync().map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash midway leaves entries below it, which are
        // ignored, never a gap above it.
        self.write_meta(LAST_PURGED_KEY, &log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        let mut batch = self.storage.keyspace.batch();
        for item in self.storage.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(&self.storage.log, key);
        }
        batch.commit().map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::raft::state_machine::StateMachineStore;

    struct FjallBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for FjallBuilder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let storage = Storage::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
            let log = LogStore::new(storage.clone()).map_err(|e| StorageIOError::write(&e))?;
            let recipes = std::sync::Arc::new(crate::store::recipes::NoRecipes);
            let state_machine = StateMachineStore::open(storage, recipes)?;
            Ok((dir, log, state_machine))
        }
    }

    #[test]
    fn passes_openraft_storage_suite() -> Result<(), StorageError> {
        Suite::test_all(FjallBuilder)
    }

    #[tokio::test]
    async fn entries_survive_reopen_and_purge_leaves_no_gap() -> Result<(), StorageError> {
        use openraft::{CommittedLeaderId, EntryPayload};
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let entry = |index| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        };
        {
            let storage = Storage::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
            let mut log = LogStore::new(storage.clone()).map_err(|e| StorageIOError::write(&e))?;
            // Returns once the syncer has reported the entries durable.
            log.blocking_append((1..=5).map(entry)).await?;
            assert_eq!(storage.counters.entries_written(), 5);
            assert_eq!(storage.counters.fsyncs(), 1, "one append, one fsync");
            log.purge(entry(2).log_id).await?;
        }
        let storage = Storage::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        let mut log = LogStore::new(storage).map_err(|e| StorageIOError::write(&e))?;
        let state = log.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(entry(2).log_id));
        assert_eq!(state.last_log_id, Some(entry(5).log_id));
        let indexes: Vec<u64> =
            log.try_get_log_entries(3..).await?.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![3, 4, 5]);
        Ok(())
    }
}
