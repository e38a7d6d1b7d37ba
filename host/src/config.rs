//! How a node runs: one struct with defaults, filled from an optional TOML file and then from
//! command-line flags, validated once before anything starts.

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
    /// data directory). Nodes on one machine may share it.
    pub compiled_dir: Option<PathBuf>,
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
        if self.node_id == 0 {
            return Err(ConfigError::Invalid("node id 0 is reserved; use 1 or more".into()));
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
}
