//! Cairn under test: `cairn serve` processes started by the harness the integration tests use
//! (one node, or a cluster with development certificates), or a node already running.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use cairn_client::{Client, CreateOptions, Credentials, ErrorCode, LockGuard};
use cairn_tests::Server;
use cairn_tests::cluster::Cluster;

use crate::load::{Fired, Session, System};

/// Where every key of a run lives.
const ROOT: &str = "/bench";

/// A Cairn node or cluster.
#[derive(Debug)]
pub struct Cairn {
    servers: Vec<String>,
    credentials: Credentials,
    session_timeout: Duration,
    /// Keeps the processes started here running until dropped (which kills them).
    nodes: Nodes,
}

#[derive(Debug)]
enum Nodes {
    Running,
    One(Server),
    /// Kept to keep its processes running.
    Cluster {
        _running: Cluster,
    },
}

impl Cairn {
    /// Starts `size` nodes of `binary` with their data under `dir`.
    pub async fn start(binary: &Path, dir: &Path, size: usize) -> anyhow::Result<Cairn> {
        Cairn::start_with(binary, dir, size, &[]).await
    }

    /// The same, each node with `args` besides the harness's.
    pub async fn start_with(
        binary: &Path,
        dir: &Path,
        size: usize,
        args: &[&str],
    ) -> anyhow::Result<Cairn> {
        let (servers, ca, nodes) = if size == 1 {
            let server = Server::start(binary, &dir.join("node"), args)?;
            (vec![server.addr().to_string()], server.admin(), Nodes::One(server))
        } else {
            let cluster = Cluster::start(binary, dir, size, args)?;
            let servers = cluster.nodes.iter().map(|node| node.addr().to_string()).collect();
            (servers, cluster.admin(), Nodes::Cluster { _running: cluster })
        };
        Cairn::running(servers, ca, nodes).await
    }

    /// A node or cluster started elsewhere: `servers` as in a connect string, reached as the
    /// first administrator whose certificate is beside the CA file `ca`.
    pub async fn attach(servers: &str, ca: &Path) -> anyhow::Result<Cairn> {
        let servers = servers.split(',').map(str::to_string).collect();
        Cairn::running(servers, cairn_tests::admin_beside(ca), Nodes::Running).await
    }

    /// The address, the administrator's credentials and the process id of a node started
    /// here alone.
    pub fn single_node(&self) -> Option<(String, Credentials, u32)> {
        match &self.nodes {
            Nodes::One(server) => Some((server.addr().to_string(), server.admin(), server.pid()?)),
            _ => None,
        }
    }

    /// Sessions connected from now on ask for `timeout`.
    pub fn set_session_timeout(&mut self, timeout: Duration) {
        self.session_timeout = timeout;
    }

    /// The node started here alone.
    pub fn server(&mut self) -> Option<&mut Server> {
        match &mut self.nodes {
            Nodes::One(server) => Some(server),
            _ => None,
        }
    }

    /// Every node's ZooKeeper address, with the root and the run's root opened to ZooKeeper's
    /// anonymous clients as a fresh ZooKeeper's are (Cairn's are closed).
    #[cfg(feature = "rivals")]
    pub async fn zookeeper_front_end(&self) -> anyhow::Result<Vec<String>> {
        let servers: Vec<&Server> = match &self.nodes {
            Nodes::One(server) => vec![server],
            Nodes::Cluster { _running: cluster } => cluster.nodes.iter().collect(),
            Nodes::Running => {
                anyhow::bail!("a node started elsewhere: its ZooKeeper port is not known")
            }
        };
        let addrs = servers
            .iter()
            .map(|server| server.zk_addr().map(|addr| addr.to_string()))
            .collect::<Option<Vec<_>>>()
            .context("a node serves no ZooKeeper port")?;
        let client = Client::connect(&self.servers.join(","), &self.credentials).await?;
        // The run's root too: it was made before, under the closed root, and took its ACL.
        for path in ["/", ROOT] {
            let anyone = vec![cairn_client::AclEntry::anyone(cairn_client::ALL)];
            client.set_acl(path, anyone, None).await?;
        }
        let _ = client.close().await;
        Ok(addrs)
    }

    async fn running(
        servers: Vec<String>,
        credentials: Credentials,
        nodes: Nodes,
    ) -> anyhow::Result<Cairn> {
        let session_timeout = Duration::from_secs(10);
        let cairn = Cairn { servers, credentials, session_timeout, nodes };
        // Ready once a write goes through (a cluster has elected a leader).
        let client = Client::connect(&cairn.servers.join(","), &cairn.credentials).await?;
        cairn_tests::wait_for("a write to go through", Duration::from_secs(60), || async {
            match client.create(ROOT, Vec::new(), CreateOptions::persistent()).await {
                Ok(_) => true,
                Err(error) => error.code() == Some(ErrorCode::NodeExists),
            }
        })
        .await?;
        let _ = client.close().await;
        Ok(cairn)
    }
}

impl System for Cairn {
    type Session = CairnSession;

    fn name(&self) -> &'static str {
        "cairn"
    }

    fn nodes(&self) -> usize {
        self.servers.len()
    }

    async fn connect(&self, client: usize) -> anyhow::Result<CairnSession> {
        let server = &self.servers[client % self.servers.len()];
        let client = Client::connect_with_timeout(server, &self.credentials, self.session_timeout)
            .await
            .with_context(|| format!("connecting to Cairn at {server}"))?;
        Ok(CairnSession { client })
    }
}

#[derive(Debug)]
pub struct CairnSession {
    client: Client,
}

fn path(key: &str) -> String {
    format!("{ROOT}/{key}")
}

impl Session for CairnSession {
    type Held = LockGuard;

    async fn create(&self, key: &str, value: Vec<u8>) -> anyhow::Result<()> {
        self.client.create(&path(key), value, CreateOptions::persistent()).await?;
        Ok(())
    }

    async fn write(&self, key: &str, value: Vec<u8>) -> anyhow::Result<()> {
        self.client.set(&path(key), value, None).await?;
        Ok(())
    }

    async fn read(&self, key: &str, linearizable: bool) -> anyhow::Result<()> {
        if linearizable {
            self.client.get(&path(key)).await?;
        } else {
            self.client.local().get(&path(key)).await?;
        }
        Ok(())
    }

    async fn acquire(&self, lock: &str) -> anyhow::Result<LockGuard> {
        Ok(self.client.lock(lock).acquire().await?)
    }

    async fn release(&self, held: LockGuard) -> anyhow::Result<()> {
        Ok(held.release().await?)
    }

    async fn waiting(&self, lock: &str) -> anyhow::Result<usize> {
        Ok(self.client.lock(lock).status().await?.queue.len())
    }

    async fn watch(&self, key: &str) -> anyhow::Result<Fired> {
        let (_, _, watch) = self.client.get_watch(&path(key)).await?;
        Ok(Box::pin(async move {
            watch.fired().await?;
            Ok(())
        }))
    }

    async fn invoke(&self, key: &str) -> anyhow::Result<()> {
        use cairn_builtins::Op;
        let add = cairn_builtins::counter::Add { name: key.to_string(), delta: 1 };
        let args = cairn_builtins::encode(&add);
        self.client
            .invoke(cairn_builtins::counter::RECIPE, None, cairn_builtins::counter::Add::NAME, args)
            .await?;
        Ok(())
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}
