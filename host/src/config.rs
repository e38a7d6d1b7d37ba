//! How a node runs: one struct with defaults, filled from an optional TOML file and then from
//! command-line flags, validated once before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default client address: loopback only, so a first start exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7181";
/// Default data directory, relative to where `cairn serve` runs.
pub const DEFAULT_DATA_DIR: &str = "cairn-data";
/// Log entries between snapshots by default.
pub const DEFAULT_SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// Fewest log entries between snapshots a node accepts.
pub const SNAPSHOT_EVERY_ENTRIES_MIN: u64 = 10;

/// The validated configuration of `cairn serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Where the log, snapshots and development certificates live.
    pub data_dir: PathBuf,
    /// Address of the client front end (QUIC/UDP). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// This node's Raft id.
    pub node_id: u64,
    /// Build a snapshot (and purge the log before it) every this many entries.
    pub snapshot_every_entries: u64,
    /// Where compiled recipe components are kept between starts (default: `compiled` in the
    /// data directory).
    pub compiled_dir: Option<PathBuf>,
    /// The secret key that signs compiled components (default: `compiled.key` in the data
    /// directory; made on first start). Nodes on one machine that share `compiled_dir` share
    /// compiled components only if they share this key too. Never inside `compiled_dir`.
    pub compiled_key: Option<PathBuf>,
    /// Address of the peer endpoint (QUIC/UDP, mutual TLS); a cluster member needs one.
    pub peer_listen: Option<SocketAddr>,
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
            compiled_dir: None,
            compiled_key: None,
            peer_listen: None,
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
    /// Reads a TOML file whose keys are this struct's fields; missing keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
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
        let config = ServeConfig::from_file(&path).expect("parses");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.snapshot_every_entries, 500);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));

        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n").expect("write");
        let error = ServeConfig::from_file(&path).expect_err("typo refused");
        let chain = format!("{:#}", anyhow::Error::new(error));
        assert!(chain.contains("lisen"), "{chain}");
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
        let config = ServeConfig::from_file(&path).expect("parses");
        assert_eq!(config.initial_cluster.len(), 2);
        config.validate().expect("valid");
    }
}
