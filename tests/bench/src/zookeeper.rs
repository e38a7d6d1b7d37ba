//! ZooKeeper under test: Debian's `zookeeper` package (3.8) run as `QuorumPeerMain` processes on
//! loopback, with `forceSync=yes` (every transaction fsynced before it is acknowledged, as
//! Cairn does), and the `zookeeper-client` crate as the client.
//!
//! The lock is Curator's `InterProcessMutex` algorithm, written out: create an ephemeral
//! sequential child of the lock's znode; list the children; the lowest holds the lock; any other
//! sets a watch on the child just before its own and lists again when that one is gone. Release
//! deletes the child.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_tests::cluster::free_tcp_port;
use zookeeper_client as zk;

use crate::load::{Session, System};

/// Debian's package: the server's jar and its dependencies (named in the jar's manifest).
const CLASSPATH: &str = "/usr/share/java/zookeeper.jar";
/// The znode every key and lock of a run lives under.
const ROOT: &str = "/bench";
/// How long the ensemble may take to elect a leader and take a write.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// A ZooKeeper server or ensemble this process started.
#[derive(Debug)]
pub struct ZooKeeper {
    servers: Vec<SocketAddr>,
    processes: Vec<Child>,
    session_timeout: Duration,
}

impl ZooKeeper {
    /// Starts `size` servers with their data under `dir`.
    pub async fn start(dir: &Path, size: usize) -> anyhow::Result<ZooKeeper> {
        anyhow::ensure!(
            Path::new(CLASSPATH).exists(),
            "{CLASSPATH} is missing: install Debian's zookeeper package"
        );
        let mut ports = Vec::new();
        for _ in 0..size {
            ports.push((free_tcp_port()?, free_tcp_port()?, free_tcp_port()?));
        }
        let mut zk = ZooKeeper {
            servers: ports
                .iter()
                .map(|(client, _, _)| SocketAddr::from(([127, 0, 0, 1], *client)))
                .collect(),
            processes: Vec::new(),
            session_timeout: Duration::from_secs(10),
        };
        for (index, (client, _, _)) in ports.iter().enumerate() {
            let id = index + 1;
            let node_dir = dir.join(format!("zk{id}"));
            let data = node_dir.join("data");
            std::fs::create_dir_all(&data)?;
            let mut config = format!(
                "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={client}\n\
                 clientPortAddress=127.0.0.1\nforceSync=yes\nadmin.enableServer=false\n\
                 maxClientCnxns=0\n",
                data.display()
            );
            if size > 1 {
                std::fs::write(data.join("myid"), format!("{id}\n"))?;
                for (peer, (_, quorum, election)) in ports.iter().enumerate() {
                    config
                        .push_str(&format!("server.{}=127.0.0.1:{quorum}:{election}\n", peer + 1));
                }
            }
            let config_file = node_dir.join("zoo.cfg");
            std::fs::write(&config_file, config)?;
            zk.processes.push(spawn(&config_file, &node_dir.join("server.log"))?);
        }
        zk.wait_ready().await?;
        Ok(zk)
    }

    /// Waits until a write goes through, then makes the root znode.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let servers: Vec<String> = self.servers.iter().map(ToString::to_string).collect();
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            let attempt = async {
                let client = zk::Client::connector()
                    .with_session_timeout(self.session_timeout)
                    .connect(&servers.join(","))
                    .await?;
                match client.create(ROOT, b"", &persistent()).await {
                    Ok(_) | Err(zk::Error::NodeExists) => anyhow::Ok(()),
                    Err(error) => Err(error.into()),
                }
            };
            match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                Ok(Ok(())) => return Ok(()),
                _ if tokio::time::Instant::now() > deadline => {
                    bail!("ZooKeeper did not take a write within {START_DEADLINE:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

fn spawn(config: &Path, log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    Command::new("java")
        .args(["-cp", CLASSPATH, "org.apache.zookeeper.server.quorum.QuorumPeerMain"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting java (install Debian's default-jre-headless)")
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

impl System for ZooKeeper {
    type Session = ZkSession;

    fn name(&self) -> &'static str {
        "zookeeper"
    }

    fn nodes(&self) -> usize {
        self.servers.len()
    }

    async fn connect(&self, client: usize) -> anyhow::Result<ZkSession> {
        let server = self.servers[client % self.servers.len()].to_string();
        let client = zk::Client::connector()
            .with_session_timeout(self.session_timeout)
            .connect(&server)
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
        loop {
            let mut children = self.client.list_children(&dir).await?;
            children.retain(|child| child.starts_with(LOCK_CHILD));
            // Sequence numbers have a fixed width: text order is their order.
            children.sort_unstable();
            let position = children
                .binary_search(&mine)
                .map_err(|_| anyhow::anyhow!("{dir}/{mine} vanished while waiting"))?;
            if position == 0 {
                return Ok(PathBuf::from(format!("{dir}/{mine}")));
            }
            let before = format!("{dir}/{}", children[position - 1]);
            match self.client.get_and_watch_data(&before).await {
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

    async fn release(&self, held: PathBuf) -> anyhow::Result<()> {
        let path = held.to_str().context("lock path")?;
        self.client.delete(path, None).await?;
        Ok(())
    }

    async fn close(self) {
        drop(self.client);
    }
}
