//! Apache ZooKeeper itself, beside Cairn: Debian's `zookeeper` package (3.8) run as
//! `QuorumPeerMain` processes on loopback, for the tests that hold Cairn's ZooKeeper front end
//! to what ZooKeeper does and for the benchmark. Every server fsyncs each transaction before
//! it answers (`forceSync=yes`), as Cairn does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cluster::free_tcp_port;

/// Debian's package: the server's jar and its dependencies (named in the jar's manifest).
pub const CLASSPATH: &str = "/usr/share/java/zookeeper.jar";
/// Debian's package: the command-line client.
pub const ZKCLI: &str = "/usr/share/zookeeper/bin/zkCli.sh";
/// How long an ensemble may take to start and elect a leader.
pub const START_DEADLINE: Duration = Duration::from_secs(90);

/// A ZooKeeper server or ensemble this process started; dropping it kills them.
#[derive(Debug)]
pub struct ZooKeeper {
    servers: Vec<SocketAddr>,
    processes: Vec<Child>,
    /// Each server's directory: its `zoo.cfg`, `server.log` and `data`.
    dirs: Vec<PathBuf>,
}

impl ZooKeeper {
    /// Starts `size` servers with their data under `dir`, each with the `settings` lines added
    /// to its `zoo.cfg`, and waits until every one serves (standalone, leader or follower).
    pub fn start(dir: &Path, size: usize, settings: &[&str]) -> anyhow::Result<ZooKeeper> {
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
            dirs: Vec::new(),
        };
        for (index, (client, _, _)) in ports.iter().enumerate() {
            let id = index + 1;
            let node_dir = dir.join(format!("zk{id}"));
            let data = node_dir.join("data");
            std::fs::create_dir_all(&data)?;
            let mut config = format!(
                "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={client}\n\
                 clientPortAddress=127.0.0.1\nforceSync=yes\nadmin.enableServer=false\n\
                 maxClientCnxns=0\n4lw.commands.whitelist=srvr\n",
                data.display()
            );
            for setting in settings {
                config.push_str(setting);
                config.push('\n');
            }
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
            zk.dirs.push(node_dir);
        }
        zk.wait_serving()?;
        Ok(zk)
    }

    /// Where its servers take clients.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Server `index`'s (0-based) directory: its `zoo.cfg`, `server.log` and `data`.
    pub fn dir(&self, index: usize) -> Option<&Path> {
        self.dirs.get(index).map(PathBuf::as_path)
    }

    /// Server `index`'s process id.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.processes.get(index).map(Child::id)
    }

    /// Kills server `index` with SIGKILL, starts it again on the same configuration and data,
    /// and waits until every server serves. Its log goes on in the same file.
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let dir = self.dirs.get(index).context("no such server")?.clone();
        let process = self.processes.get_mut(index).context("no such server")?;
        let _ = process.kill();
        process.wait()?;
        let log = std::fs::OpenOptions::new().append(true).open(dir.join("server.log"))?;
        *process = spawn_logging(&dir.join("zoo.cfg"), log)?;
        self.wait_serving()
    }

    /// Waits until each server's `srvr` names its mode: it has joined a quorum (or stands
    /// alone) and takes requests.
    fn wait_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        for server in &self.servers {
            loop {
                if srvr(*server).is_ok_and(|answer| answer.contains("Mode: ")) {
                    break;
                }
                if let Some(exited) =
                    self.processes.iter_mut().find_map(|process| process.try_wait().ok()?)
                {
                    bail!("a ZooKeeper server exited while starting: {exited}");
                }
                if Instant::now() > deadline {
                    bail!("ZooKeeper at {server} did not serve within {START_DEADLINE:?}");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }
}

/// The answer of `server` to the four-letter word `srvr`.
fn srvr(server: SocketAddr) -> std::io::Result<String> {
    four_letter_word(server, "srvr")
}

/// The answer of `server` to a four-letter word its `4lw.commands.whitelist` allows (`srvr`
/// always; `mntr` where a setting adds it).
pub fn four_letter_word(server: SocketAddr, word: &str) -> std::io::Result<String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&server, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(word.as_bytes())?;
    let mut answer = String::new();
    stream.take(64 * 1024).read_to_string(&mut answer)?;
    Ok(answer)
}

fn spawn(config: &Path, log: &Path) -> anyhow::Result<Child> {
    spawn_logging(config, std::fs::File::create(log)?)
}

fn spawn_logging(config: &Path, log: std::fs::File) -> anyhow::Result<Child> {
    Command::new("java")
        .args(["-cp", CLASSPATH, "org.apache.zookeeper.server.quorum.QuorumPeerMain"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting java (install Debian's zookeeper package, which brings a JRE)")
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}
