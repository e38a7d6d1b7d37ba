//! Several `cairn serve` processes forming one cluster on loopback: peer ports picked at run
//! time, a development CA shared through a directory, each node killed and restarted at will.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use cairn_client::Client;

use crate::{Server, wait_for};

/// A cluster of nodes with ids 1..=n.
#[derive(Debug)]
pub struct Cluster {
    /// `nodes[i]` is node `i + 1`.
    pub nodes: Vec<Server>,
    certs: PathBuf,
    /// With [`Cluster::start_linked`]: the relay each node reaches each other node through,
    /// by (from, to).
    links: std::collections::BTreeMap<(u64, u64), crate::Relay>,
}

/// A loopback UDP port free at the time of asking.
pub fn free_udp_port() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// A loopback TCP port free at the time of asking (for the systems Cairn is measured against).
pub fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    /// Starts `size` nodes under `dir`, each with `extra_args`, and waits until all serve.
    pub fn start(
        binary: &Path,
        dir: &Path,
        size: usize,
        extra_args: &[&str],
    ) -> anyhow::Result<Cluster> {
        let peers: Vec<SocketAddr> =
            (0..size).map(|_| free_udp_port()).collect::<Result<_, _>>()?;
        let routes = vec![String::new(); size];
        Cluster::start_nodes(binary, dir, &peers, &routes, extra_args, Default::default())
    }

    /// Starts `size` nodes whose every peer link (from one node to another) goes through a relay
    /// of its own, so links can be cut: [`Cluster::isolate`], [`Cluster::heal`].
    pub async fn start_linked(
        binary: &Path,
        dir: &Path,
        size: usize,
        extra_args: &[&str],
    ) -> anyhow::Result<Cluster> {
        let peers: Vec<SocketAddr> =
            (0..size).map(|_| free_udp_port()).collect::<Result<_, _>>()?;
        let mut links = std::collections::BTreeMap::new();
        let mut routes = Vec::new();
        for from in 1..=size as u64 {
            let mut route = Vec::new();
            for to in (1..=size as u64).filter(|to| *to != from) {
                let relay = crate::Relay::start(peers[to as usize - 1]).await?;
                route.push(format!("{to}={}", relay.addr()));
                links.insert((from, to), relay);
            }
            routes.push(route.join(","));
        }
        let (binary, dir) = (binary.to_path_buf(), dir.to_path_buf());
        let args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Cluster::start_nodes(&binary, &dir, &peers, &routes, &args, links)
        })
        .await?
    }

    fn start_nodes(
        binary: &Path,
        dir: &Path,
        peers: &[SocketAddr],
        routes: &[String],
        extra_args: &[&str],
        links: std::collections::BTreeMap<(u64, u64), crate::Relay>,
    ) -> anyhow::Result<Cluster> {
        let initial: Vec<String> =
            peers.iter().enumerate().map(|(i, addr)| format!("{}={addr}", i + 1)).collect();
        let initial = initial.join(",");
        let certs = dir.join("certs");
        // Nodes serve only once a leader is known, which takes a majority: start them together.
        let nodes = std::thread::scope(|scope| {
            let starting: Vec<_> = peers
                .iter()
                .enumerate()
                .map(|(i, peer)| {
                    let id = (i + 1).to_string();
                    let peer = peer.to_string();
                    let (initial, certs, route) = (&initial, &certs, &routes[i]);
                    scope.spawn(move || {
                        let mut args = vec![
                            "--node-id",
                            &id,
                            "--peer-listen",
                            &peer,
                            "--initial-cluster",
                            initial,
                            "--dev-certs",
                            certs.to_str().unwrap_or_default(),
                        ];
                        if !route.is_empty() {
                            args.extend_from_slice(&["--peer-routes", route]);
                        }
                        args.extend_from_slice(extra_args);
                        Server::start(binary, &dir.join(format!("node-{id}")), &args)
                    })
                })
                .collect();
            starting
                .into_iter()
                .map(|start| start.join().map_err(|_| anyhow::anyhow!("a start panicked"))?)
                .collect::<anyhow::Result<Vec<Server>>>()
        })?;
        Ok(Cluster { nodes, certs, links })
    }

    /// Cuts every link between node `id` and the others, both ways (needs `start_linked`).
    pub fn isolate(&self, id: u64) {
        for ((from, to), relay) in &self.links {
            if *from == id || *to == id {
                relay.cut();
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        for relay in self.links.values() {
            relay.heal();
        }
    }

    /// The directory of the development CA the nodes share.
    pub fn certs_dir(&self) -> &Path {
        &self.certs
    }

    /// The CA every node's certificate comes from.
    pub fn ca_file(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }

    /// The credentials of the cluster's first administrator.
    pub fn admin(&self) -> cairn_client::Credentials {
        crate::admin_in(&self.certs)
    }

    /// Node `id` (1-based).
    pub fn node(&mut self, id: u64) -> &mut Server {
        &mut self.nodes[usize::try_from(id - 1).unwrap_or(usize::MAX)]
    }

    /// A client of node `id`.
    pub async fn client(&self, id: u64) -> anyhow::Result<Client> {
        let node = &self.nodes[usize::try_from(id - 1).unwrap_or(usize::MAX)];
        Ok(Client::connect(&node.addr().to_string(), &self.admin()).await?)
    }

    /// Waits until every node reports the same state digest as of the same zxid: the nodes
    /// have applied the same log.
    pub async fn wait_converged(&self, deadline: Duration) -> anyhow::Result<()> {
        let mut clients = Vec::new();
        for id in 1..=self.nodes.len() as u64 {
            clients.push(self.client(id).await?);
        }
        wait_for("the same state on every node", deadline, || async {
            let mut digests = Vec::new();
            for client in &clients {
                match client.state_digest().await {
                    Ok(digest) => digests.push(digest),
                    Err(_) => return false,
                }
            }
            digests.windows(2).all(|pair| pair[0] == pair[1])
        })
        .await
    }

    /// The leader, as the running nodes agree on it, waiting up to `deadline` for one. Nodes
    /// that cannot take a client yet (mid-election) are asked again.
    pub async fn leader(&self, running: &[u64], deadline: Duration) -> anyhow::Result<u64> {
        let found = std::sync::Mutex::new(None);
        wait_for("a leader all running nodes agree on", deadline, || async {
            let mut seen = Vec::new();
            for id in running {
                let Ok(client) = self.client(*id).await else { return false };
                let info = client.server_info().await;
                let _ = client.close().await;
                match info {
                    Ok(info) => seen.push(info.leader),
                    Err(_) => return false,
                }
            }
            let agreed = seen
                .first()
                .copied()
                .flatten()
                .filter(|leader| seen.iter().all(|s| *s == Some(*leader)));
            *found.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = agreed;
            agreed.is_some_and(|leader| running.contains(&leader))
        })
        .await?;
        let leader = *found.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        leader.context("no leader")
    }
}
