//! etcd under test: Debian's `etcd-server` package (3.4) on loopback (etcd always fsyncs its WAL
//! before acknowledging), and the `etcd-client` crate (gRPC) as the client.
//!
//! The lock is etcd's own lock service (`v3lock`), with a lease per client kept alive in the
//! background: the server puts `NAME/LEASE` and waits until every earlier key under `NAME` is
//! gone; unlock deletes the key.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_tests::cluster::free_tcp_port;
use etcd_client::{Client, ConnectOptions, GetOptions, LockOptions};

use crate::load::{Session, System};

/// How long the cluster may take to elect a leader and take a write.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Every key of a run is under this prefix.
const ROOT: &str = "bench/";
/// A client's lease (its "session"), renewed every third of it.
const LEASE_TTL_SECS: i64 = 10;

/// An etcd member or cluster this process started.
#[derive(Debug)]
pub struct Etcd {
    endpoints: Vec<String>,
    processes: Vec<Child>,
}

impl Etcd {
    /// Starts `size` members with their data under `dir`.
    pub async fn start(dir: &Path, size: usize) -> anyhow::Result<Etcd> {
        let mut ports = Vec::new();
        for _ in 0..size {
            ports.push((free_tcp_port()?, free_tcp_port()?));
        }
        let initial_cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("n{}=http://127.0.0.1:{peer}", i + 1))
            .collect();
        let mut etcd = Etcd {
            endpoints: ports
                .iter()
                .map(|(client, _)| format!("http://127.0.0.1:{client}"))
                .collect(),
            processes: Vec::new(),
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let log = std::fs::File::create(dir.join(format!("etcd-{name}.log")))?;
            let child = Command::new("etcd")
                .arg(format!("--name={name}"))
                .arg(format!("--data-dir={}", dir.join(&name).display()))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!("--initial-cluster={}", initial_cluster.join(",")))
                .args(["--initial-cluster-state=new", "--initial-cluster-token=cairn-bench"])
                .args(["--logger=zap", "--log-level=warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting etcd (install Debian's etcd-server)")?;
            etcd.processes.push(child);
        }
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            let attempt = async {
                let mut client = Client::connect(&self.endpoints, None).await?;
                client.put(format!("{ROOT}ready"), "yes", None).await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                Ok(Ok(())) => return Ok(()),
                _ if tokio::time::Instant::now() > deadline => {
                    bail!("etcd did not take a write within {START_DEADLINE:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl System for Etcd {
    type Session = EtcdSession;

    fn name(&self) -> &'static str {
        "etcd"
    }

    fn nodes(&self) -> usize {
        self.endpoints.len()
    }

    /// One client per logical client, each with its own connection to one member.
    async fn connect(&self, client: usize) -> anyhow::Result<EtcdSession> {
        let endpoint = &self.endpoints[client % self.endpoints.len()];
        let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
        let mut client = Client::connect([endpoint], Some(options))
            .await
            .with_context(|| format!("connecting to etcd at {endpoint}"))?;
        let lease = client.lease_grant(LEASE_TTL_SECS, None).await?.id();
        let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
        let keep_alive = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(LEASE_TTL_SECS as u64 / 3));
            loop {
                every.tick().await;
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                match responses.message().await {
                    Ok(Some(response)) if response.ttl() > 0 => {}
                    _ => return,
                }
            }
        });
        Ok(EtcdSession { client, lease, keep_alive })
    }
}

pub struct EtcdSession {
    client: Client,
    lease: i64,
    keep_alive: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EtcdSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSession").field("lease", &self.lease).finish_non_exhaustive()
    }
}

fn key(key: &str) -> String {
    format!("{ROOT}{key}")
}

impl Session for EtcdSession {
    /// The lock's key for this session's lease.
    type Held = Vec<u8>;

    async fn create(&self, name: &str, value: Vec<u8>) -> anyhow::Result<()> {
        self.write(name, value).await
    }

    async fn write(&self, name: &str, value: Vec<u8>) -> anyhow::Result<()> {
        self.client.clone().put(key(name), value, None).await?;
        Ok(())
    }

    async fn read(&self, name: &str, linearizable: bool) -> anyhow::Result<()> {
        let options = (!linearizable).then(|| GetOptions::new().with_serializable());
        let response = self.client.clone().get(key(name), options).await?;
        anyhow::ensure!(!response.kvs().is_empty(), "{name} is missing");
        Ok(())
    }

    async fn acquire(&self, lock: &str) -> anyhow::Result<Vec<u8>> {
        let options = LockOptions::new().with_lease(self.lease);
        let response = self.client.clone().lock(key(lock), Some(options)).await?;
        Ok(response.key().to_vec())
    }

    async fn release(&self, held: Vec<u8>) -> anyhow::Result<()> {
        self.client.clone().unlock(held).await?;
        Ok(())
    }

    async fn close(self) {
        self.keep_alive.abort();
        let _ = self.client.clone().lease_revoke(self.lease).await;
    }
}
