//! The node's fjall keyspace: one directory holding the Raft log, the vote and the snapshots.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle};

/// Partition of log entries, keyed by big-endian index so key order is log order.
const LOG_PARTITION: &str = "raft_log";
/// Partition of small Raft records: vote, committed log id, last purged log id.
const META_PARTITION: &str = "raft_meta";
/// Partition holding the current snapshot.
const SNAPSHOT_PARTITION: &str = "snapshot";

/// The open keyspace and its partitions. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    pub(crate) keyspace: Keyspace,
    pub(crate) log: PartitionHandle,
    pub(crate) meta: PartitionHandle,
    pub(crate) snapshot: PartitionHandle,
    pub(crate) counters: Arc<StorageCounters>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("counters", &self.counters).finish_non_exhaustive()
    }
}

/// What the storage has done since the node started: how many entries shared each fsync.
#[derive(Debug, Default)]
pub struct StorageCounters {
    pub log_entries_written: AtomicU64,
    pub log_fsyncs: AtomicU64,
}

impl StorageCounters {
    pub fn entries_written(&self) -> u64 {
        self.log_entries_written.load(Ordering::Relaxed)
    }

    pub fn fsyncs(&self) -> u64 {
        self.log_fsyncs.load(Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open storage in {dir}")]
pub struct StorageOpenError {
    dir: String,
    source: fjall::Error,
}

impl Storage {
    /// Opens (or creates) the keyspace in `dir`.
    pub fn open(dir: &Path) -> Result<Storage, StorageOpenError> {
        let wrap = |source| StorageOpenError { dir: dir.display().to_string(), source };
        // Journal writes are made durable by the log store's explicit fsyncs, never by a timer.
        let keyspace = Config::new(dir).fsync_ms(None).open().map_err(wrap)?;
        let open = |name| keyspace.open_partition(name, PartitionCreateOptions::default());
        Ok(Storage {
            log: open(LOG_PARTITION).map_err(wrap)?,
            meta: open(META_PARTITION).map_err(wrap)?,
            snapshot: open(SNAPSHOT_PARTITION).map_err(wrap)?,
            keyspace,
            counters: Arc::new(StorageCounters::default()),
        })
    }

    /// Makes every write so far durable: `fdatasync` of the journal, which flushes the data and
    /// the metadata needed to read it back (the file's length), as ZooKeeper's and etcd's logs
    /// do; not the timestamps a full `fsync` would also write. An error poisons the keyspace;
    /// the node must stop.
    pub(crate) fn sync(&self) -> Result<(), fjall::Error> {
        self.keyspace.persist(fjall::PersistMode::SyncData)?;
        self.counters.log_fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
