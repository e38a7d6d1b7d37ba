//! The Rust client library for Cairn: async, typed, pipelined, over QUIC.
//!
//! A [`Client`] holds one QUIC connection to a node and one request stream on it. Any number of
//! tasks may call it at once: each request gets an id, goes out at once, and its reply is
//! matched by id, so requests are pipelined rather than taking turns. The node applies one
//! client's writes in the order they were sent, and a read sees every write sent before it.
//!
//! ```no_run
//! # async fn example() -> Result<(), cairn_client::Error> {
//! use cairn_client::{Client, CreateOptions};
//!
//! let client = Client::connect("127.0.0.1:7181", "cairn-data/tls/ca.pem").await?;
//! client.create("/config", b"v1", CreateOptions::persistent()).await?;
//! let (data, stat) = client.get("/config").await?;
//! client.set("/config", b"v2", Some(stat.version)).await?; // compare-and-set
//! # Ok(()) }
//! ```

mod connection;
mod error;
pub mod op;

use std::path::Path;
use std::time::Duration;

pub use cairn_wire::{
    ApiError, ChildEntry, CreateMode, ErrorCode, MultiOp, OpResult, ServerInfo, Stat,
};
use cairn_wire::{CreateRequest, DeleteRequest, MultiResult, Reply, Request, SetRequest};

use connection::Connection;
pub use connection::quic_client_config;
pub use error::Error;

/// A connection to a Cairn node. Cheap to clone: clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    connection: Connection,
}

/// How [`Client::create`] makes a znode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateOptions {
    pub mode: CreateMode,
    pub sequential: bool,
    pub ttl: Option<Duration>,
}

impl CreateOptions {
    /// A plain znode that stays until deleted.
    pub fn persistent() -> CreateOptions {
        CreateOptions::default()
    }

    /// A znode deleted once its last child is deleted.
    pub fn container() -> CreateOptions {
        CreateOptions { mode: CreateMode::Container, ..CreateOptions::default() }
    }

    /// A znode deleted once it has had no children and no change for `ttl`.
    pub fn ttl(ttl: Duration) -> CreateOptions {
        CreateOptions { mode: CreateMode::Ttl, ttl: Some(ttl), ..CreateOptions::default() }
    }

    /// Append the parent's 10-digit sequence number to the name.
    pub fn sequential(self) -> CreateOptions {
        CreateOptions { sequential: true, ..self }
    }

    pub(crate) fn request(self, path: &str, data: Vec<u8>) -> CreateRequest {
        CreateRequest {
            path: path.to_string(),
            data,
            mode: self.mode,
            sequential: self.sequential,
            // Durations past u64 milliseconds are far past the TTL limit; the node refuses them.
            ttl_ms: self.ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

impl Client {
    /// Connects to the node at `server` (`host:port`), trusting the CA certificates in the PEM
    /// file `ca_file`.
    pub async fn connect(server: &str, ca_file: impl AsRef<Path>) -> Result<Client, Error> {
        let ca_pem = std::fs::read(ca_file.as_ref()).map_err(|e| {
            Error::Tls(format!("cannot read CA file {}: {e}", ca_file.as_ref().display()))
        })?;
        Client::connect_with_ca_pem(server, &ca_pem).await
    }

    /// Connects like [`Client::connect`], with the CA certificates given as PEM text.
    pub async fn connect_with_ca_pem(server: &str, ca_pem: &[u8]) -> Result<Client, Error> {
        Ok(Client { connection: Connection::open(server, ca_pem).await? })
    }

    /// Creates a znode and returns the path it got (with its sequence number, if sequential).
    pub async fn create(
        &self,
        path: &str,
        data: impl Into<Vec<u8>>,
        options: CreateOptions,
    ) -> Result<String, Error> {
        self.create_with_stat(path, data, options).await.map(|(path, _)| path)
    }

    /// Creates a znode and returns its path and stat.
    pub async fn create_with_stat(
        &self,
        path: &str,
        data: impl Into<Vec<u8>>,
        options: CreateOptions,
    ) -> Result<(String, Stat), Error> {
        match self.call(Request::Create(options.request(path, data.into()))).await? {
            Reply::Created { path, stat } => Ok((path, stat)),
            other => Err(unexpected("created", &other)),
        }
    }

    /// A znode's data and stat, linearizably.
    pub async fn get(&self, path: &str) -> Result<(Vec<u8>, Stat), Error> {
        self.read_get(path, false).await
    }

    /// A znode's stat, or `None` when it does not exist, linearizably.
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, Error> {
        self.read_exists(path, false).await
    }

    /// A znode's children's names in order, linearizably.
    pub async fn children(&self, path: &str) -> Result<Vec<String>, Error> {
        let (_, children) = self.read_children(path, false, false).await?;
        Ok(children.into_iter().map(|child| child.name).collect())
    }

    /// A znode's stat and its children with their stats, linearizably.
    pub async fn children_with_stats(&self, path: &str) -> Result<(Stat, Vec<ChildEntry>), Error> {
        self.read_children(path, true, false).await
    }

    /// Reads served from the connected node's state without the linearizability check: faster,
    /// possibly stale, never older than this client's own earlier writes.
    pub fn local(&self) -> LocalReads<'_> {
        LocalReads { client: self }
    }

    /// Replaces a znode's data; with `version`, only if the znode is at that version.
    pub async fn set(
        &self,
        path: &str,
        data: impl Into<Vec<u8>>,
        version: Option<u32>,
    ) -> Result<Stat, Error> {
        let request = SetRequest { path: path.to_string(), data: data.into(), version };
        match self.call(Request::Set(request)).await? {
            Reply::Stat { stat } => Ok(stat),
            other => Err(unexpected("stat", &other)),
        }
    }

    /// Deletes a childless znode; with `version`, only if the znode is at that version.
    pub async fn delete(&self, path: &str, version: Option<u32>) -> Result<(), Error> {
        let request = DeleteRequest { path: path.to_string(), version };
        match self.call(Request::Delete(request)).await? {
            Reply::Deleted {} => Ok(()),
            other => Err(unexpected("deleted", &other)),
        }
    }

    /// Applies `ops` all-or-nothing. On failure nothing was applied and the error names the
    /// operation that failed ([`Error::MultiFailed`]).
    pub async fn multi(&self, ops: Vec<MultiOp>) -> Result<Vec<OpResult>, Error> {
        let results = match self.call(Request::Multi { ops }).await? {
            Reply::Multi { results } => results,
            other => return Err(unexpected("multi", &other)),
        };
        let mut done = Vec::with_capacity(results.len());
        let mut failure = None;
        for (index, result) in results.into_iter().enumerate() {
            match result {
                MultiResult::Ok(result) => done.push(result),
                MultiResult::Error(error) if error.code == ErrorCode::RolledBack => {}
                MultiResult::Error(error) => failure = Some(Error::MultiFailed { index, error }),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(done),
        }
    }

    /// Waits until the connected node has applied every write committed before this call;
    /// returns the zxid it has reached.
    pub async fn sync(&self) -> Result<u64, Error> {
        let (zxid, reply) = self.connection.call(Request::Sync {}).await?;
        match reply {
            Reply::Synced {} => Ok(zxid),
            other => Err(unexpected("synced", &other)),
        }
    }

    /// The connected node's description of itself.
    pub async fn server_info(&self) -> Result<ServerInfo, Error> {
        match self.call(Request::ServerInfo {}).await? {
            Reply::ServerInfo(info) => Ok(info),
            other => Err(unexpected("server-info", &other)),
        }
    }

    /// The highest zxid any reply on this connection has carried.
    pub fn last_zxid(&self) -> u64 {
        self.connection.last_zxid()
    }

    /// Closes the connection, failing requests still in flight.
    pub fn close(&self) {
        self.connection.close();
    }

    async fn call(&self, request: Request) -> Result<Reply, Error> {
        self.connection.call(request).await.map(|(_, reply)| reply)
    }

    async fn read_get(&self, path: &str, local: bool) -> Result<(Vec<u8>, Stat), Error> {
        match self.call(Request::Get { path: path.to_string(), local }).await? {
            Reply::Data { data, stat } => Ok((data, stat)),
            other => Err(unexpected("data", &other)),
        }
    }

    async fn read_exists(&self, path: &str, local: bool) -> Result<Option<Stat>, Error> {
        match self.call(Request::Exists { path: path.to_string(), local }).await? {
            Reply::Exists { stat } => Ok(stat),
            other => Err(unexpected("exists", &other)),
        }
    }

    async fn read_children(
        &self,
        path: &str,
        with_stats: bool,
        local: bool,
    ) -> Result<(Stat, Vec<ChildEntry>), Error> {
        match self.call(Request::Children { path: path.to_string(), with_stats, local }).await? {
            Reply::Children { stat, children } => Ok((stat, children)),
            other => Err(unexpected("children", &other)),
        }
    }
}

/// Reads from the connected node's own state: see [`Client::local`].
#[derive(Debug, Clone, Copy)]
pub struct LocalReads<'a> {
    client: &'a Client,
}

impl LocalReads<'_> {
    pub async fn get(&self, path: &str) -> Result<(Vec<u8>, Stat), Error> {
        self.client.read_get(path, true).await
    }

    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, Error> {
        self.client.read_exists(path, true).await
    }

    pub async fn children(&self, path: &str) -> Result<Vec<String>, Error> {
        let (_, children) = self.client.read_children(path, false, true).await?;
        Ok(children.into_iter().map(|child| child.name).collect())
    }
}

fn unexpected(wanted: &str, got: &Reply) -> Error {
    Error::Protocol(format!("expected a {wanted} reply, got {got:?}"))
}
