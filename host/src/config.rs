//! How a node runs: [`Settings`] given by flags and by an optional TOML file (the same names),
//! made into one [`ServeConfig`] with defaults and validated in one step before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default client address: loopback only, so a first start exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7181";
/// Default address of the ZooKeeper front end for a single node: ZooKeeper's own port, on
/// loopback.
pub const DEFAULT_ZK_LISTEN: &str = "127.0.0.1:2181";
/// Default address of the admin listener (metrics, health checks, the console) for a single
/// node: loopback only. A cluster member that is told nothing serves it on a free loopback port
/// (the members of a cluster on one machine would contend for one port); it says which.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7180";
/// Default data directory, relative to where `cairn serve` runs.
pub const DEFAULT_DATA_DIR: &str = "cairn-data";
/// Log entries between snapshots by default.
pub const DEFAULT_SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// Fewest log entries between snapshots a node accepts.
pub const SNAPSHOT_EVERY_ENTRIES_MIN: u64 = 10;

/// The settings of `cairn serve`, each given by a flag or by the key of the same name (with
/// underscores) in the TOML file of `--config`: a flag wins over the file, the file over the
/// default. [`ServeConfig::load`] turns them into the node's configuration in one step.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the log, snapshots and development certificates live [default: ./cairn-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Client address (QUIC over UDP); port 0 picks a free one [default: 127.0.0.1:7181].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// This node's Raft id [default: 1].
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Build a snapshot and purge the log every this many entries [default: 10000].
    #[arg(long, alias = "snapshot-every")]
    pub snapshot_every_entries: Option<u64>,
    /// How often the Raft leader sends heartbeats, in milliseconds; also each replication
    /// RPC's time limit: raise it for slow disks or links between sites [default: 40].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// A node's election timeout is drawn between this and twice this (milliseconds), and a
    /// failed leader is replaced after about four times this; at least three heartbeats
    /// [default: 120].
    #[arg(long)]
    pub election_timeout_ms: Option<u64>,
    /// Keep compiled recipes here between starts [default: DATA_DIR/compiled].
    #[arg(long)]
    pub compiled_dir: Option<PathBuf>,
    /// The key that signs compiled recipes, made on first start (nodes sharing a compiled dir
    /// share it too; never inside it) [default: DATA_DIR/compiled.key].
    #[arg(long)]
    pub compiled_key: Option<PathBuf>,
    /// Peer address (QUIC over UDP, mutual TLS): where the other nodes reach this one.
    #[arg(long)]
    pub peer_listen: Option<SocketAddr>,
    /// ZooKeeper protocol address (plain TCP), for existing ZooKeeper clients [default for a
    /// single node: 127.0.0.1:2181; a cluster member serves it only where this says].
    #[arg(long)]
    pub zk_listen: Option<SocketAddr>,
    /// ZooKeeper protocol over TLS (ZooKeeper's `secureClientPort`), with the node's certificate;
    /// a client certificate the cluster CA signed names the principal. Given alone, the plain
    /// port is not served unless --zk-listen says where.
    #[arg(long)]
    pub zk_tls_listen: Option<SocketAddr>,
    /// Most ZooKeeper connections from one IP address at once, as ZooKeeper's
    /// `maxClientCnxns` (0: no limit but the node's 20,000) [default: 60].
    #[arg(long)]
    pub zk_connections_per_ip: Option<usize>,
    /// Do not serve ZooKeeper's protocol.
    #[arg(long, conflicts_with_all = ["zk_listen", "zk_tls_listen"])]
    pub no_zk: bool,
    /// Admin listener (HTTP): /metrics, /healthz, /readyz and the web console. Plain HTTP on
    /// loopback; TLS with the node's certificate on any other address, where viewers need a
    /// client certificate or a token [default for a single node: 127.0.0.1:7180; for a cluster
    /// member: a free loopback port].
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Principals, besides the administrators, that may view the console and scrape /metrics
    /// on an admin listener that is not on loopback: NAME,NAME.
    #[arg(long, value_delimiter = ',')]
    pub admin_viewers: Option<Vec<String>>,
    /// Serve the admin listener over TLS even on loopback (it always does elsewhere).
    #[arg(long)]
    pub admin_tls: bool,
    /// Do not serve the admin listener.
    #[arg(long, conflicts_with = "admin_listen")]
    pub no_admin: bool,
    /// The members of a new cluster at their peer addresses: 1=ADDR,2=ADDR,3=ADDR (the same
    /// list on every member; in the file, a table of id = "ADDR").
    #[arg(long)]
    pub initial_cluster: Option<PeerMap>,
    /// Reach these peers at other addresses than the membership says: 2=ADDR,3=ADDR (through a
    /// relay or a NAT).
    #[arg(long)]
    pub peer_routes: Option<PeerMap>,
    /// Start empty and wait to be added to a running cluster with `cairn cluster add`.
    #[arg(long)]
    pub join: bool,
    /// A directory the nodes of a development cluster share: the first to start writes a CA
    /// there, each issues its own certificate from it; clients trust DIR/ca.pem.
    #[arg(long)]
    pub dev_certs: Option<PathBuf>,
    /// This node's certificate (PEM), with --tls-key and --tls-ca instead of --dev-certs.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): peers must present a certificate it signed; clients trust it.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

/// Node ids and peer addresses: `1=ADDR,2=ADDR` on the command line, a table in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMap(pub BTreeMap<u64, String>);

impl std::str::FromStr for PeerMap {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<PeerMap, ConfigError> {
        parse_initial_cluster(text).map(PeerMap)
    }
}

impl<'de> Deserialize<'de> for PeerMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<PeerMap, D::Error> {
        let members = BTreeMap::<u64, String>::deserialize(deserializer)?;
        for (id, addr) in &members {
            addr.parse::<SocketAddr>().map_err(|_| {
                serde::de::Error::custom(format!("bad peer address {addr:?} of node {id}"))
            })?;
        }
        Ok(PeerMap(members))
    }
}

impl Settings {
    /// Reads a TOML file whose keys are the settings' names; an unknown key is an error.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }
}

/// The validated configuration of `cairn serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where the log, snapshots and development certificates live.
    pub data_dir: PathBuf,
    /// Address of the client front end (QUIC/UDP). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// This node's Raft id.
    pub node_id: u64,
    /// Build a snapshot (and purge the log before it) every this many entries.
    pub snapshot_every_entries: u64,
    /// Raft's heartbeat and election timing.
    pub timing: crate::raft::Timing,
    /// Where compiled recipe components are kept between starts (default: `compiled` in the
    /// data directory).
    pub compiled_dir: Option<PathBuf>,
    /// The secret key that signs compiled components (default: `compiled.key` in the data
    /// directory; made on first start). Nodes on one machine that share `compiled_dir` share
    /// compiled components only if they share this key too. Never inside `compiled_dir`.
    pub compiled_key: Option<PathBuf>,
    /// Address of the peer endpoint (QUIC/UDP, mutual TLS); a cluster member needs one.
    pub peer_listen: Option<SocketAddr>,
    /// Address of the ZooKeeper front end (TCP), if it is served.
    pub zk_listen: Option<SocketAddr>,
    /// Address of the ZooKeeper front end over TLS, if it is served.
    pub zk_tls_listen: Option<SocketAddr>,
    /// Most ZooKeeper connections from one IP address at once (0: no such limit).
    pub zk_connections_per_ip: usize,
    /// Address of the admin listener, if it is served.
    pub admin_listen: Option<SocketAddr>,
    /// Who may view on an admin listener that is not on loopback, besides administrators.
    pub admin_viewers: Vec<String>,
    /// TLS on the admin listener even on loopback.
    pub admin_tls: bool,
    /// The members a new cluster starts with, by id, at their peer addresses. Every member is
    /// started with the same list; empty for a single node.
    pub initial_cluster: BTreeMap<u64, String>,
    /// Addresses this node uses to reach some peers instead of the ones in the membership (a
    /// relay, a NAT): node id → peer address. Node-local; the membership is not changed.
    pub peer_routes: BTreeMap<u64, String>,
    /// Start empty and wait to be added to a running cluster (`cairn cluster add`), instead of
    /// starting a cluster of its own.
    pub join: bool,
    /// A directory shared by the nodes of a development cluster: the first node to start writes
    /// a development CA there, and every node issues its own certificate from it.
    pub dev_certs: Option<PathBuf>,
    /// The node's certificate, its key and the cluster CA, as PEM files (instead of `dev_certs`).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            // A constant that always parses.
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| unreachable!()),
            node_id: 1,
            snapshot_every_entries: DEFAULT_SNAPSHOT_EVERY_ENTRIES,
            timing: crate::raft::DEFAULT_TIMING,
            compiled_dir: None,
            compiled_key: None,
            peer_listen: None,
            zk_listen: None,
            zk_tls_listen: None,
            zk_connections_per_ip: crate::zk::ZK_CONNECTIONS_PER_IP_DEFAULT,
            admin_listen: None,
            admin_viewers: Vec::new(),
            admin_tls: false,
            initial_cluster: BTreeMap::new(),
            peer_routes: BTreeMap::new(),
            join: false,
            dev_certs: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{0}")]
    Invalid(String),
}

/// Parses `1=ADDR,2=ADDR,3=ADDR` (node id = peer address).
pub fn parse_initial_cluster(text: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut members = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| ConfigError::Invalid(format!("{part:?} is not ID=PEER_ADDR")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("bad node id in {part:?}")))?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("bad peer address in {part:?}")))?;
        if members.insert(id, addr.to_string()).is_some() {
            return Err(ConfigError::Invalid(format!("node {id} is named twice")));
        }
    }
    Ok(members)
}

impl ServeConfig {
    /// The configuration from `flags`, over the settings of the TOML file `file` if any, over
    /// the defaults; validated.
    pub fn load(flags: Settings, file: Option<&Path>) -> Result<ServeConfig, ConfigError> {
        let file = file.map(Settings::from_file).transpose()?.unwrap_or_default();
        let default = ServeConfig::default();
        let config = ServeConfig {
            data_dir: flags.data_dir.or(file.data_dir).unwrap_or(default.data_dir),
            listen: flags.listen.or(file.listen).unwrap_or(default.listen),
            node_id: flags.node_id.or(file.node_id).unwrap_or(default.node_id),
            snapshot_every_entries: flags
                .snapshot_every_entries
                .or(file.snapshot_every_entries)
                .unwrap_or(default.snapshot_every_entries),
            timing: crate::raft::Timing {
                heartbeat_ms: flags
                    .heartbeat_ms
                    .or(file.heartbeat_ms)
                    .unwrap_or(default.timing.heartbeat_ms),
                election_timeout_ms: flags
                    .election_timeout_ms
                    .or(file.election_timeout_ms)
                    .unwrap_or(default.timing.election_timeout_ms),
            },
            compiled_dir: flags.compiled_dir.or(file.compiled_dir),
            compiled_key: flags.compiled_key.or(file.compiled_key),
            peer_listen: flags.peer_listen.or(file.peer_listen),
            zk_listen: None,
            zk_tls_listen: None,
            zk_connections_per_ip: flags
                .zk_connections_per_ip
                .or(file.zk_connections_per_ip)
                .unwrap_or(default.zk_connections_per_ip),
            admin_listen: None,
            admin_viewers: flags.admin_viewers.or(file.admin_viewers).unwrap_or_default(),
            admin_tls: flags.admin_tls || file.admin_tls,
            initial_cluster: flags.initial_cluster.or(file.initial_cluster).unwrap_or_default().0,
            peer_routes: flags.peer_routes.or(file.peer_routes).unwrap_or_default().0,
            join: flags.join || file.join,
            dev_certs: flags.dev_certs.or(file.dev_certs),
            // The certificate files go together: all three from the flags or from the file.
            tls_cert: flags.tls_cert.or(file.tls_cert),
            tls_key: flags.tls_key.or(file.tls_key),
            tls_ca: flags.tls_ca.or(file.tls_ca),
        };
        // ZooKeeper's protocol is on by default for a single node, which has its port to itself;
        // the members of a cluster on one machine would contend for it.
        // A TLS port alone means only TLS, as ZooKeeper's secureClientPort alone does.
        let zk_tls_listen = flags.zk_tls_listen.or(file.zk_tls_listen);
        let single = config.initial_cluster.is_empty() && !config.join;
        let zk_default = (single && zk_tls_listen.is_none())
            .then(|| DEFAULT_ZK_LISTEN.parse().unwrap_or_else(|_| unreachable!()));
        let zk_listen = flags.zk_listen.or(file.zk_listen).or(zk_default);
        let no_zk = flags.no_zk || file.no_zk;
        let admin_default = if single { DEFAULT_ADMIN_LISTEN } else { "127.0.0.1:0" };
        let admin_listen = flags
            .admin_listen
            .or(file.admin_listen)
            .unwrap_or_else(|| admin_default.parse().unwrap_or_else(|_| unreachable!()));
        let no_admin = flags.no_admin || file.no_admin;
        if no_admin && (flags.admin_listen.is_some() || file.admin_listen.is_some()) {
            return Err(ConfigError::Invalid(
                "no_admin and admin_listen together: serve the admin listener or not".into(),
            ));
        }
        let config = ServeConfig {
            zk_listen: zk_listen.filter(|_| !no_zk),
            zk_tls_listen: zk_tls_listen.filter(|_| !no_zk),
            admin_listen: (!no_admin).then_some(admin_listen),
            ..config
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values together; run once before the node starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let (Some(key), Some(dir)) = (&self.compiled_key, &self.compiled_dir)
            && key.starts_with(dir)
        {
            return Err(ConfigError::Invalid(
                "compiled_key must not be inside compiled_dir: whoever can write the compiled \
                 files must not be able to replace the key that signs them"
                    .into(),
            ));
        }
        for viewer in &self.admin_viewers {
            cairn_wire::access::validate_principal_name(viewer)
                .map_err(|why| ConfigError::Invalid(format!("admin viewer {viewer:?}: {why}")))?;
        }
        if self.node_id == 0 {
            return Err(ConfigError::Invalid("node id 0 is reserved; use 1 or more".into()));
        }
        let tls_files =
            [&self.tls_cert, &self.tls_key, &self.tls_ca].iter().filter(|f| f.is_some()).count();
        if tls_files != 0 && tls_files != 3 {
            return Err(ConfigError::Invalid(
                "give all of tls_cert, tls_key and tls_ca, or none".into(),
            ));
        }
        if tls_files == 3 && self.dev_certs.is_some() {
            return Err(ConfigError::Invalid(
                "give certificate files or dev_certs, not both".into(),
            ));
        }
        if self.join && !self.initial_cluster.is_empty() {
            return Err(ConfigError::Invalid(
                "a node joins a running cluster or starts one with initial_cluster, not both"
                    .into(),
            ));
        }
        if self.join && (self.peer_listen.is_none() || (tls_files == 0 && self.dev_certs.is_none()))
        {
            return Err(ConfigError::Invalid(
                "a joining node needs peer_listen and certificates (tls_* or dev_certs)".into(),
            ));
        }
        if !self.initial_cluster.is_empty() {
            if !self.initial_cluster.contains_key(&self.node_id) {
                return Err(ConfigError::Invalid(format!(
                    "initial_cluster does not name this node ({})",
                    self.node_id
                )));
            }
            if self.peer_listen.is_none() {
                return Err(ConfigError::Invalid("a cluster member needs peer_listen".into()));
            }
            if tls_files == 0 && self.dev_certs.is_none() {
                return Err(ConfigError::Invalid(
                    "a cluster needs certificates: tls_cert, tls_key and tls_ca, or dev_certs"
                        .into(),
                ));
            }
        }
        if self.snapshot_every_entries < SNAPSHOT_EVERY_ENTRIES_MIN {
            return Err(ConfigError::Invalid(format!(
                "snapshot_every_entries of {} is below the minimum {SNAPSHOT_EVERY_ENTRIES_MIN}",
                self.snapshot_every_entries
            )));
        }
        self.timing.check().map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cairn.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nsnapshot_every_entries = 500\n")
            .expect("write");
        let flags = Settings { node_id: Some(4), ..Settings::default() };
        let config = ServeConfig::load(flags, Some(&path)).expect("parses");
        assert_eq!(config.node_id, 4, "a flag");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.snapshot_every_entries, 500);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));

        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n").expect("write");
        let error = ServeConfig::load(Settings::default(), Some(&path)).expect_err("typo refused");
        let chain = format!("{:#}", anyhow::Error::new(error));
        assert!(chain.contains("lisen"), "{chain}");
    }

    #[test]
    fn the_admin_listener_is_on_loopback_by_default_and_said_once() {
        let single = ServeConfig::load(Settings::default(), None).expect("defaults");
        assert_eq!(single.admin_listen, Some(DEFAULT_ADMIN_LISTEN.parse().expect("addr")));
        let member = Settings {
            initial_cluster: Some(PeerMap(BTreeMap::from([(1, "127.0.0.1:7201".into())]))),
            peer_listen: Some("127.0.0.1:7201".parse().expect("addr")),
            dev_certs: Some(PathBuf::from("certs")),
            ..Settings::default()
        };
        let member = ServeConfig::load(member, None).expect("a member");
        assert_eq!(member.admin_listen.map(|addr| addr.port()), Some(0), "a free port");
        let off = ServeConfig::load(Settings { no_admin: true, ..Settings::default() }, None);
        assert_eq!(off.expect("off").admin_listen, None);

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cairn.toml");
        std::fs::write(&path, "no_admin = true\nadmin_listen = \"127.0.0.1:9\"\n").expect("write");
        assert!(ServeConfig::load(Settings::default(), Some(&path)).is_err(), "both");
        let viewers = Settings { admin_viewers: Some(vec!["a b".into()]), ..Settings::default() };
        assert!(ServeConfig::load(viewers, None).is_err(), "not a principal name");
    }

    #[test]
    fn validate_refuses_nonsense() {
        let config = ServeConfig { snapshot_every_entries: 1, ..ServeConfig::default() };
        assert!(config.validate().is_err());
        let config = ServeConfig { node_id: 0, ..ServeConfig::default() };
        assert!(config.validate().is_err());
        ServeConfig::default().validate().expect("defaults are valid");
    }

    #[test]
    fn raft_timing_comes_from_flags_or_the_file_and_must_leave_room_for_heartbeats() {
        use crate::raft::{DEFAULT_TIMING, Timing};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cairn.toml");
        std::fs::write(&path, "heartbeat_ms = 100\nelection_timeout_ms = 1000\n").expect("write");
        let config = ServeConfig::load(Settings::default(), Some(&path)).expect("parses");
        assert_eq!(config.timing, Timing { heartbeat_ms: 100, election_timeout_ms: 1000 });
        assert_eq!(config.timing.config().election_timeout_max, 2000);
        let flags = Settings { election_timeout_ms: Some(600), ..Settings::default() };
        let config = ServeConfig::load(flags, Some(&path)).expect("parses");
        assert_eq!(config.timing.election_timeout_ms, 600, "a flag wins over the file");
        assert_eq!(ServeConfig::default().timing, DEFAULT_TIMING);

        // Fewer than three heartbeats in an election timeout: one lost packet would start one.
        let flags = Settings { election_timeout_ms: Some(250), ..Settings::default() };
        let error = ServeConfig::load(flags, Some(&path)).expect_err("too short");
        assert!(error.to_string().contains("3 heartbeats"), "{error}");
        let flags = Settings { heartbeat_ms: Some(1), ..Settings::default() };
        assert!(ServeConfig::load(flags, None).is_err(), "below the minimum");
        let flags = Settings { election_timeout_ms: Some(600_000), ..Settings::default() };
        assert!(ServeConfig::load(flags, None).is_err(), "above the maximum");
    }

    #[test]
    fn a_cluster_member_needs_its_place_a_peer_address_and_certificates() {
        let members = parse_initial_cluster("1=127.0.0.1:7201, 2=127.0.0.1:7202").expect("parses");
        assert_eq!(members[&2], "127.0.0.1:7202");
        assert!(parse_initial_cluster("1=127.0.0.1:7201,1=127.0.0.1:7202").is_err(), "twice");
        assert!(parse_initial_cluster("one=127.0.0.1:7201").is_err());
        assert!(parse_initial_cluster("1=nowhere").is_err());
        let member = ServeConfig {
            initial_cluster: members,
            peer_listen: Some("127.0.0.1:7201".parse().expect("addr")),
            dev_certs: Some(PathBuf::from("certs")),
            ..ServeConfig::default()
        };
        member.validate().expect("a valid member");
        let stranger = ServeConfig { node_id: 3, ..member.clone() };
        assert!(stranger.validate().is_err(), "not in the list");
        assert!(ServeConfig { peer_listen: None, ..member.clone() }.validate().is_err());
        assert!(ServeConfig { dev_certs: None, ..member.clone() }.validate().is_err());
        let half = ServeConfig { tls_cert: Some(PathBuf::from("c.pem")), ..member };
        assert!(half.validate().is_err(), "some certificate files but not all");
    }

    #[test]
    fn a_file_names_the_initial_cluster() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cairn.toml");
        let text = "peer_listen = \"127.0.0.1:7201\"\ndev_certs = \"certs\"\n\n\
                    [initial_cluster]\n1 = \"127.0.0.1:7201\"\n2 = \"127.0.0.1:7202\"\n";
        std::fs::write(&path, text).expect("write");
        let config = ServeConfig::load(Settings::default(), Some(&path)).expect("parses");
        assert_eq!(config.initial_cluster.len(), 2);
        let flags = Settings {
            listen: Some("127.0.0.1:9000".parse().expect("addr")),
            ..Settings::default()
        };
        let config = ServeConfig::load(flags, Some(&path)).expect("flags over the file");
        assert_eq!((config.listen.port(), config.initial_cluster.len()), (9000, 2));
        std::fs::write(&path, "[initial_cluster]\n1 = \"nowhere\"\n").expect("write");
        assert!(ServeConfig::load(Settings::default(), Some(&path)).is_err(), "a bad address");
    }
}
