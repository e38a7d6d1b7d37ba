//! ZooKeeper under test (`cairn_tests::zookeeper`: Debian's package, with every transaction
//! fsynced before it is acknowledged, as Cairn does), and Cairn's ZooKeeper front end, both
//! through the `zookeeper-client` crate.
//!
//! The lock is Curator's `InterProcessMutex` algorithm, written out: create an ephemeral
//! sequential child of the lock's znode; list the children; the lowest holds the lock; any other
//! sets a watch on the child just before its own and lists again when that one is gone. Release
//! deletes the child. As Curator does, a read that loses its connection is tried again (its
//! `RetryLoop`, [`CONNECTION_LOSS_RETRIES`] times), and an acquire that fails deletes its child
//! so that it holds up no one behind it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_tests::zookeeper::ZooKeeper as Servers;
use zookeeper_client as zk;

use crate::load::{Fired, Session, System};

/// The znode every key and lock of a run lives under.
const ROOT: &str = "/bench";
/// How long the ensemble may take to take its first write once it serves.
const WRITE_DEADLINE: Duration = Duration::from_secs(60);
/// How many times a lock's read is tried again after its connection was lost (the client
/// reconnects within the session's timeout), a second apart: Curator's usual
/// `ExponentialBackoffRetry(1000, 3)`.
const CONNECTION_LOSS_RETRIES: usize = 3;
const CONNECTION_LOSS_PAUSE: Duration = Duration::from_secs(1);

/// A ZooKeeper server or ensemble this process started, or Cairn's ZooKeeper front end: both
/// are driven by the same client.
#[derive(Debug)]
pub struct ZooKeeper {
    name: &'static str,
    servers: Vec<String>,
    session_timeout: Duration,
    /// The servers, when this process started them.
    processes: Option<Servers>,
}

impl ZooKeeper {
    /// Starts `size` ZooKeeper servers with their data under `dir`.
    pub async fn start(dir: &Path, size: usize) -> anyhow::Result<ZooKeeper> {
        ZooKeeper::start_with(dir, size, &[]).await
    }

    /// The same, with `settings` lines added to each server's `zoo.cfg`.
    pub async fn start_with(
        dir: &Path,
        size: usize,
        settings: &[&str],
    ) -> anyhow::Result<ZooKeeper> {
        let dir = dir.to_path_buf();
        let settings: Vec<String> = settings.iter().map(ToString::to_string).collect();
        let servers = tokio::task::spawn_blocking(move || {
            let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
            Servers::start(&dir, size, &settings)
        })
        .await??;
        let addrs = servers.servers().iter().map(ToString::to_string).collect();
        ZooKeeper::ready("zookeeper", addrs, Some(servers)).await
    }

    /// Sessions connected from now on ask for `timeout`.
    pub fn set_session_timeout(&mut self, timeout: Duration) {
        self.session_timeout = timeout;
    }

    /// The servers this process started.
    pub fn processes(&mut self) -> Option<&mut Servers> {
        self.processes.as_mut()
    }

    /// Cairn's ZooKeeper front end at `servers`, as a ZooKeeper client sees it.
    pub async fn cairn(servers: Vec<String>) -> anyhow::Result<ZooKeeper> {
        ZooKeeper::ready("cairn-zk", servers, None).await
    }

    /// Waits until a write goes through (the root znode of the run).
    async fn ready(
        name: &'static str,
        servers: Vec<String>,
        processes: Option<Servers>,
    ) -> anyhow::Result<ZooKeeper> {
        let zk = ZooKeeper { name, servers, session_timeout: Duration::from_secs(10), processes };
        let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
        loop {
            let attempt = async {
                let client = zk::Client::connector()
                    .with_session_timeout(zk.session_timeout)
                    .connect(&zk.servers.join(","))
                    .await?;
                match client.create(ROOT, b"", &persistent()).await {
                    Ok(_) | Err(zk::Error::NodeExists) => anyhow::Ok(()),
                    Err(error) => Err(error.into()),
                }
            };
            match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                Ok(Ok(())) => return Ok(zk),
                _ if tokio::time::Instant::now() > deadline => {
                    bail!("{name} did not take a write within {WRITE_DEADLINE:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

impl System for ZooKeeper {
    type Session = ZkSession;

    fn name(&self) -> &'static str {
        self.name
    }

    fn nodes(&self) -> usize {
        self.servers.len()
    }

    async fn connect(&self, client: usize) -> anyhow::Result<ZkSession> {
        let server = &self.servers[client % self.servers.len()];
        let client = zk::Client::connector()
            .with_session_timeout(self.session_timeout)
            .connect(server)
            .await
            .with_context(|| format!("connecting to ZooKeeper at {server}"))?;
        Ok(ZkSession { client })
    }
}

#[derive(Debug)]
pub struct ZkSession {
    client: zk::Client,
}

fn path(key: &str) -> String {
    format!("{ROOT}/{key}")
}

/// The prefix of every lock child's name.
const LOCK_CHILD: &str = "lock-";

impl ZkSession {
    /// Curator's lock loop for the child `mine` of `dir`: the lock is this session's once
    /// `mine` is the lowest child.
    async fn wait_for_turn(&self, dir: &str, mine: &str) -> anyhow::Result<PathBuf> {
        loop {
            let mut children = retrying(|| self.client.list_children(dir)).await?;
            children.retain(|child| child.starts_with(LOCK_CHILD));
            // Sequence numbers have a fixed width: text order is their order.
            children.sort_unstable();
            let position = children
                .binary_search_by(|child| child.as_str().cmp(mine))
                .map_err(|_| anyhow::anyhow!("{dir}/{mine} vanished while waiting"))?;
            if position == 0 {
                return Ok(PathBuf::from(format!("{dir}/{mine}")));
            }
            let before = format!("{dir}/{}", children[position - 1]);
            match retrying(|| self.client.get_and_watch_data(&before)).await {
                // Gone already: look again.
                Err(zk::Error::NoNode) => continue,
                Err(error) => return Err(error.into()),
                Ok((_, _, watcher)) => {
                    let event = watcher.changed().await;
                    if event.event_type == zk::EventType::Session {
                        bail!("the session ended while waiting for {dir}");
                    }
                }
            }
        }
    }
}

/// Runs `read` again while it fails for a lost connection, at most [`CONNECTION_LOSS_RETRIES`]
/// more times.
async fn retrying<T, F: Future<Output = Result<T, zk::Error>>>(
    read: impl Fn() -> F,
) -> Result<T, zk::Error> {
    let mut retries = 0;
    loop {
        match read().await {
            Err(error) if connection_lost(&error) && retries < CONNECTION_LOSS_RETRIES => {
                retries += 1;
                tokio::time::sleep(CONNECTION_LOSS_PAUSE).await;
            }
            done => return done,
        }
    }
}

/// Whether `error` is the connection's loss, which Java's client reports as `CONNECTIONLOSS`
/// and this one, when the server stops answering, by message.
fn connection_lost(error: &zk::Error) -> bool {
    matches!(error, zk::Error::ConnectionLoss)
        || error.to_string().starts_with("no response from connection")
}

impl Session for ZkSession {
    /// The path of this session's child of the lock.
    type Held = PathBuf;

    async fn create(&self, key: &str, value: Vec<u8>) -> anyhow::Result<()> {
        self.client.create(&path(key), &value, &persistent()).await?;
        Ok(())
    }

    async fn write(&self, key: &str, value: Vec<u8>) -> anyhow::Result<()> {
        self.client.set_data(&path(key), &value, None).await?;
        Ok(())
    }

    async fn read(&self, key: &str, linearizable: bool) -> anyhow::Result<()> {
        if linearizable {
            self.client.sync(&path(key)).await?;
        }
        self.client.get_data(&path(key)).await?;
        Ok(())
    }

    async fn prepare_lock(&self, lock: &str) -> anyhow::Result<()> {
        match self.client.create(&path(lock), b"", &persistent()).await {
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn acquire(&self, lock: &str) -> anyhow::Result<PathBuf> {
        let dir = path(lock);
        let ephemeral = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let (_, sequence) =
            self.client.create(&format!("{dir}/{LOCK_CHILD}"), b"", &ephemeral).await?;
        let mine = format!("{LOCK_CHILD}{sequence}");
        let waited = self.wait_for_turn(&dir, &mine).await;
        if waited.is_err() {
            // Best effort, as Curator's: the child's session ends it otherwise.
            let _ = self.client.delete(&format!("{dir}/{mine}"), None).await;
        }
        waited
    }

    async fn waiting(&self, lock: &str) -> anyhow::Result<usize> {
        let children = retrying(|| self.client.list_children(&path(lock))).await?;
        let queued = children.iter().filter(|child| child.starts_with(LOCK_CHILD)).count();
        Ok(queued.saturating_sub(1))
    }

    async fn watch(&self, key: &str) -> anyhow::Result<Fired> {
        let (_, _, watcher) = self.client.get_and_watch_data(&path(key)).await?;
        Ok(Box::pin(async move {
            let event = watcher.changed().await;
            anyhow::ensure!(event.event_type != zk::EventType::Session, "the session ended");
            Ok(())
        }))
    }

    async fn release(&self, held: PathBuf) -> anyhow::Result<()> {
        let path = held.to_str().context("lock path")?;
        self.client.delete(path, None).await?;
        Ok(())
    }

    async fn close(self) {
        drop(self.client);
    }
}
