//! Test harness for Cairn: real `cairn serve` processes on loopback, on ports picked at run
//! time, in temporary directories, killed and restarted at will. Every wait has a deadline.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod browser;
pub mod cluster;
pub mod history;
pub mod http;
pub mod zookeeper;
use cairn_client::{Client, Credentials};

/// How long a node may take to start serving.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// Starts a restart makes when a port the node keeps is taken by another process.
const RESTART_PORT_TRIES: u32 = 20;
/// How long a restart waits before it tries a taken port again.
const RESTART_PORT_RETRY: Duration = Duration::from_millis(500);
/// How long a node may take to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// One `cairn serve` process and what it takes to start it again.
#[derive(Debug)]
pub struct Server {
    binary: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
    addr: SocketAddr,
    /// Where it serves ZooKeeper clients, once it said so.
    zk_addr: Option<SocketAddr>,
    /// Where it serves ZooKeeper clients over TLS, if the test's arguments ask for it.
    zk_tls_addr: Option<SocketAddr>,
    /// The admin listener's URL (metrics, health checks, the console), once it said so.
    admin_url: Option<String>,
}

impl Server {
    /// Starts `binary serve` with `data_dir` on a free loopback port.
    pub fn start(binary: &Path, data_dir: &Path, extra_args: &[&str]) -> anyhow::Result<Server> {
        Server::start_on(binary, data_dir, "127.0.0.1:0".parse()?, extra_args)
    }

    /// Starts `binary serve` with `data_dir`, serving clients on `addr`.
    pub fn start_on(
        binary: &Path,
        data_dir: &Path,
        addr: SocketAddr,
        extra_args: &[&str],
    ) -> anyhow::Result<Server> {
        let mut server = Server {
            binary: binary.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            log_file: data_dir.with_extension("log"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
            addr,
            zk_addr: None,
            zk_tls_addr: None,
            admin_url: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Where ZooKeeper clients connect (the harness has every node serve them, on a free port
    /// kept across restarts, unless the test's arguments say otherwise).
    pub fn zk_addr(&self) -> Option<SocketAddr> {
        self.zk_addr
    }

    /// Where ZooKeeper clients connect over TLS, when the test's arguments asked for it.
    pub fn zk_tls_addr(&self) -> Option<SocketAddr> {
        self.zk_tls_addr
    }

    fn zk_args(&self) -> Vec<String> {
        if self.extra_args.iter().any(|arg| arg == "--zk-listen" || arg == "--no-zk") {
            return Vec::new();
        }
        let addr = self.zk_addr.map_or_else(|| "127.0.0.1:0".to_string(), |addr| addr.to_string());
        vec!["--zk-listen".to_string(), addr]
    }

    /// The admin listener on a free loopback port, unless the test's arguments say otherwise
    /// (a single node's default port would be shared by every test's node).
    fn admin_args(&self) -> Vec<String> {
        if self.extra_args.iter().any(|arg| arg == "--admin-listen" || arg == "--no-admin") {
            return Vec::new();
        }
        vec!["--admin-listen".to_string(), "127.0.0.1:0".to_string()]
    }

    /// The admin listener's URL, ending in `/`, if it serves one.
    pub fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref()
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The development CA the node wrote: what clients trust.
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("tls/ca.pem")
    }

    /// Where the node's development CA and the first administrator's certificate are: its
    /// data dir's `tls/`, or the shared directory a development cluster's nodes were given.
    pub fn certs_dir(&self) -> PathBuf {
        self.extra_args
            .iter()
            .position(|arg| arg == "--dev-certs")
            .and_then(|at| self.extra_args.get(at + 1))
            .map_or_else(|| self.data_dir.join("tls"), PathBuf::from)
    }

    /// The credentials of the cluster's first administrator, as a first start writes them.
    pub fn admin(&self) -> Credentials {
        admin_in(&self.certs_dir())
    }

    /// Credentials that present nothing: the anonymous principal.
    pub fn anonymous(&self) -> Credentials {
        Credentials::from_ca_file(self.ca_file()).expect("the node wrote its CA")
    }

    /// A new client connection to this node, as the first administrator.
    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.addr.to_string(), &self.admin()).await?)
    }

    /// `cairn ARGS` connected to this node: `--server ADDR --ca CA` added before a `--` if
    /// there is one, and no connection settings taken from the environment.
    fn client_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(self.connected_args(args))
            .env_remove("CAIRN_SERVER")
            .env_remove("CAIRN_CA")
            .env_remove("CAIRN_CERT")
            .env_remove("CAIRN_KEY")
            .env_remove("CAIRN_TOKEN")
            .stdin(Stdio::null());
        command
    }

    fn connected_args(&self, args: &[&str]) -> Vec<std::ffi::OsString> {
        let split = args.iter().position(|arg| *arg == "--").unwrap_or(args.len());
        let mut all: Vec<std::ffi::OsString> = args[..split].iter().map(Into::into).collect();
        all.extend([
            "--server".into(),
            self.addr.to_string().into(),
            "--ca".into(),
            self.certs_dir().join("ca.pem").into(),
        ]);
        all.extend(args[split..].iter().map(Into::into));
        all
    }

    /// Runs `cairn ARGS --server ADDR --ca CA` to completion.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.client_command(args).output()?)
    }

    /// Starts `cairn ARGS --server ADDR --ca CA` without waiting for it: for commands that run
    /// until stopped (`create --ephemeral`, `watch`) or that wait (`get --watch`).
    pub fn spawn_cli(&self, args: &[&str]) -> anyhow::Result<CliProcess> {
        let mut child =
            self.client_command(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (sender, lines) = mpsc::channel();
        // Reads the command's stdout until it ends.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(CliProcess { child, lines })
    }

    /// Freezes the node (SIGSTOP): to the others it is gone, as if cut off by a partition,
    /// while it keeps its state and its idea of who leads. [`Server::resume`] heals it.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("the node is not running")?;
        signal(libc::pid_t::try_from(child.id())?, libc::SIGSTOP)
    }

    /// Lets a paused node run again.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("the node is not running")?;
        signal(libc::pid_t::try_from(child.id())?, libc::SIGCONT)
    }

    /// Kills the node with SIGKILL: no shutdown, no flush, as a crash or power cut would.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Sends SIGTERM and waits for the node to exit.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("the node is not running")?;
        let pid = libc::pid_t::try_from(child.id())?;
        signal(pid, libc::SIGTERM)?;
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                bail!("the node did not exit within {STOP_DEADLINE:?} of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The arguments the node is started with after `--data-dir` and `--listen`; a restart
    /// uses the new ones.
    pub fn set_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
    }

    /// The arguments the node is started with after `--data-dir` and `--listen`.
    pub fn args(&self) -> Vec<String> {
        self.extra_args.clone()
    }

    /// Starts the node again on the same data dir and port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        // While it was down, a socket another test bound to port 0 may have taken one of the
        // ports it keeps; such sockets come and go, so it tries again for a while.
        let mut tries = 1;
        loop {
            match self.spawn() {
                Err(error)
                    if tries < RESTART_PORT_TRIES
                        && format!("{error:#}").contains("Address already in use") =>
                {
                    tries += 1;
                    thread::sleep(RESTART_PORT_RETRY);
                }
                started => return started,
            }
        }
    }

    /// The node's log so far, for a failing test to show.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_file)?;
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(self.zk_args())
            .args(self.admin_args())
            .args(&self.extra_args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (lines, ready) = mpsc::channel();
        // Reads the node's stdout until it ends; the first line says where it listens.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => {
                        if lines.send(line).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let line = match ready.recv_timeout(START_DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the node did not start within {START_DEADLINE:?}; its log:\n{}", self.log());
            }
        };
        let addr = line
            .strip_prefix("cairn listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .with_context(|| format!("unexpected first line {line:?}"))?;
        self.addr = addr.parse()?;
        // "...; zookeeper clients on ADDR; zookeeper TLS clients on ADDR"
        let after = |label: &str| {
            line.split(label).nth(1).map(|rest| rest.split(';').next().unwrap_or(rest).trim())
        };
        if let Some(zk) = after("; zookeeper clients on ") {
            self.zk_addr = Some(zk.parse()?);
        }
        if let Some(zk) = after("; zookeeper TLS clients on ") {
            self.zk_tls_addr = Some(zk.parse()?);
        }
        self.admin_url = after("; console on ").map(str::to_string);
        self.child = Some(child);
        Ok(())
    }
}

/// A running `cairn` client command, its stdout a line at a time.
#[derive(Debug)]
pub struct CliProcess {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl CliProcess {
    /// The next line the command prints, waiting up to [`START_DEADLINE`].
    pub fn line(&self) -> anyhow::Result<String> {
        self.lines.recv_timeout(START_DEADLINE).context("no line from the command")
    }

    /// The next line, if the command prints one within `wait`.
    pub fn line_within(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Sends SIGINT and waits for the command to exit.
    pub fn interrupt(&mut self) -> anyhow::Result<ExitStatus> {
        signal(libc::pid_t::try_from(self.child.id())?, libc::SIGINT)?;
        Ok(self.child.wait()?)
    }
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn signal(pid: libc::pid_t, signal: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: kill(2) with a pid of a child this harness started and has not reaped.
    #[allow(unsafe_code)]
    let result = unsafe { libc::kill(pid, signal) };
    if result != 0 {
        bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The first administrator's credentials beside the CA file `ca` (as `cairn`'s client commands
/// find them).
pub fn admin_beside(ca: &Path) -> Credentials {
    admin_in(ca.parent().unwrap_or(Path::new(".")))
}

/// The first administrator's credentials in a directory a first start wrote certificates to.
pub fn admin_in(certs: &Path) -> Credentials {
    Credentials::from_ca_file(certs.join("ca.pem"))
        .and_then(|credentials| {
            credentials.with_certificate_files(certs.join("admin.pem"), certs.join("admin-key.pem"))
        })
        .expect("a first start wrote the CA and the administrator's certificate")
}

/// Waits until `condition` holds, checking every 20 ms, or fails after `deadline`.
pub async fn wait_for<F, Fut>(
    what: &str,
    deadline: Duration,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A UDP relay between clients and a node that can cut the link, to break a connection without
/// stopping either end.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays datagrams between one client (the last to send) and `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Relay> {
        use std::sync::atomic::Ordering;
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        back.connect(target).await?;
        let addr = front.local_addr()?;
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_cut = cut.clone();
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut from_client = vec![0u8; 65_536];
            let mut from_node = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    received = front.recv_from(&mut from_client) => {
                        let Ok((length, sender)) = received else { return };
                        client = Some(sender);
                        if !is_cut.load(Ordering::Relaxed) {
                            let _ = back.send(&from_client[..length]).await;
                        }
                    }
                    received = back.recv(&mut from_node) => {
                        // The node may be down for a moment (ICMP refusals): keep relaying.
                        let Ok(length) = received else { continue };
                        if let (Some(client), false) = (client, is_cut.load(Ordering::Relaxed)) {
                            let _ = front.send_to(&from_node[..length], client).await;
                        }
                    }
                }
            }
        });
        Ok(Relay { addr, cut, task })
    }

    /// Where clients connect to reach the node through the relay.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every datagram in both directions until [`Relay::heal`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
