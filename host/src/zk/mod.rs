//! The ZooKeeper front end: ZooKeeper's own client protocol over TCP, and over TLS on a port of
//! its own, so that existing ZooKeeper clients (kazoo, Curator, zkCli) work against Cairn.
//!
//! Request path: [`serve`] accepts TCP connections (at most [`ZK_CONNECTIONS_MAX`], and a
//! configured number per IP address); a TLS one completes its handshake first, and its client
//! certificate, if any, names the principal. Each opens with ZooKeeper's connect
//! handshake, which opens or resumes a Cairn session (a ZooKeeper session *is* a Cairn session:
//! ephemerals, expiry, watches and recipes' session hooks are the same whichever protocol made
//! them). Then each frame (`jute`, `proto`) is translated (`translate`) into a write through
//! the cluster layer or a read of this node's state, one request at a time: ZooKeeper clients
//! rely on replies coming in request order. Replies and watch events share the connection's
//! outbox, so a write's event is written before its reply, as ZooKeeper does.

pub mod jute;
pub mod proto;
pub mod system;
pub mod translate;
pub mod words;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cairn_wire::{ApiError, ErrorCode, EventKind, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::api::{Frontend, open_session, resume_session};
use crate::store::{Action, Caller, DataTree, Principal, SessionId, Write, Zxid};
use crate::watch::{Outbox, OutboxLoad, Outgoing};
use jute::Reader;
use proto::{ConnectRequest, FRAME_BYTES_MAX, Request, code};
use translate::Plan;

/// Most ZooKeeper connections a node serves at once; more are closed at once.
pub const ZK_CONNECTIONS_MAX: usize = 20_000;

/// Most ZooKeeper connections a node serves from one IP address at once unless told otherwise
/// (`--zk-connections-per-ip`), as ZooKeeper's `maxClientCnxns` (60 by default); more are
/// closed at once.
pub const ZK_CONNECTIONS_PER_IP_DEFAULT: usize = 60;

/// The session timeouts a ZooKeeper client may have, as a ZooKeeper server with its default
/// 2-second tick gives them (2 and 20 ticks): what a client asks for is brought within them.
pub const ZK_SESSION_TIMEOUT_MS_MIN: u64 = 4_000;
pub const ZK_SESSION_TIMEOUT_MS_MAX: u64 = 40_000;

/// How long a new connection may take to send its handshake.
pub const ZK_HANDSHAKE_MS_MAX: u64 = 10_000;

/// The most bytes of a handshake frame (a ConnectRequest is 45 bytes with a 16-byte password).
pub const ZK_HANDSHAKE_BYTES_MAX: u32 = 1024;

/// Bytes of a session password Cairn hands out: the session's secret (8 bytes) and 8 zero
/// bytes, the 16 ZooKeeper's clients expect.
const PASSWD_BYTES: usize = 16;

/// The reading and the writing half of a client connection, plain or TLS.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Where the front end listens: plain TCP (ZooKeeper's `clientPort`), TLS (its
/// `secureClientPort`), or both.
#[derive(Debug)]
pub struct Listeners {
    pub plain: Option<TcpListener>,
    pub tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    /// Most connections from one IP address at once, both ports together (0: no such limit).
    pub connections_per_ip: usize,
}

/// The next connection on `listener`, or never when there is none.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Completes a connection's TLS handshake (within the handshake's deadline) and names who it
/// speaks for: the principal of its client certificate, or anonymous without one.
async fn tls_handshake(
    socket: TcpStream,
    config: Arc<rustls::ServerConfig>,
    remote: SocketAddr,
) -> Option<(ReadHalf, WriteHalf, Principal)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let deadline = Duration::from_millis(ZK_HANDSHAKE_MS_MAX);
    let stream = match tokio::time::timeout(deadline, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "zookeeper TLS handshake failed");
            return None;
        }
        Err(_) => return None,
    };
    let leaf = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first());
    let principal = match leaf.map(|leaf| crate::tls::certificate_principal(leaf)).transpose() {
        Ok(Some(name)) => Principal::Certificate(name),
        Ok(None) => Principal::Anonymous,
        Err(why) => {
            tracing::info!(%remote, %why, "zookeeper TLS client refused");
            return None;
        }
    };
    let (read, write) = tokio::io::split(stream);
    Some((Box::new(read), Box::new(write), principal))
}

/// One connection's counts, for `stat`.
#[derive(Debug)]
struct Connection {
    remote: SocketAddr,
    session: Mutex<Option<SessionId>>,
    received: AtomicU64,
    sent: AtomicU64,
    /// The client asked to close its session: the end of the session is not news to it, and
    /// the writer goes on to the close's reply.
    closing: AtomicBool,
    /// The error code of the last reply queued, for the request's metrics.
    last_code: std::sync::atomic::AtomicI32,
    /// Woken when another connection to this node resumed the session: this one closes, as
    /// ZooKeeper closes a session's old connection.
    superseded: tokio::sync::Notify,
}

/// What the four-letter words report of this front end: its connections and its requests.
#[derive(Debug)]
struct Stats {
    started: Instant,
    next_connection: AtomicU64,
    connections: Mutex<BTreeMap<u64, Arc<Connection>>>,
    received: AtomicU64,
    /// Shared with each connection's writer.
    sent: Arc<AtomicU64>,
    outstanding: AtomicU64,
    /// Request latency in milliseconds: least, most, total, count.
    latency: Mutex<(u64, u64, u64, u64)>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            started: Instant::now(),
            next_connection: AtomicU64::new(1),
            connections: Mutex::default(),
            received: AtomicU64::new(0),
            sent: Arc::new(AtomicU64::new(0)),
            outstanding: AtomicU64::new(0),
            latency: Mutex::new((u64::MAX, 0, 0, 0)),
        }
    }

    fn served(&self, took: Duration) {
        let ms = took.as_millis() as u64;
        let mut latency = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        *latency = (latency.0.min(ms), latency.1.max(ms), latency.2 + ms, latency.3 + 1);
    }

    /// The facts of `frontend` and these counts.
    fn facts(&self, frontend: &Frontend) -> words::Facts {
        let metrics = frontend.cluster.raft.metrics().borrow().clone();
        let voters = metrics.membership_config.membership().voter_ids().count();
        let mode = match (voters, frontend.cluster.is_leader()) {
            (1, _) => "standalone",
            (_, true) => "leader",
            _ => "follower",
        };
        let state = frontend.cluster.state.read();
        let (znodes, data_bytes) = state.tree.size();
        let ephemerals =
            state.tree.sessions().map(|(id, _)| state.tree.ephemerals_of(id).count()).sum();
        let (min, max, total, count) = *self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        let latency_ms = match count {
            0 => (0, 0.0, 0),
            count => (min, total as f64 / count as f64, max),
        };
        let clients = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|connection| words::Client {
                remote: connection.remote.to_string(),
                session: connection
                    .session
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .map(|id| id.0),
                received: connection.received.load(Ordering::Relaxed),
                sent: connection.sent.load(Ordering::Relaxed),
            })
            .collect();
        words::Facts {
            mode,
            zxid: state.applied_zxid().0,
            znodes,
            data_bytes,
            ephemerals,
            watches: frontend.watches.count(),
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            outstanding: self.outstanding.load(Ordering::Relaxed),
            latency_ms,
            clients,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            host_name: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_string())
                .unwrap_or_default(),
            working_dir: std::env::current_dir()
                .map(|dir| dir.display().to_string())
                .unwrap_or_default(),
        }
    }
}

/// Accepts ZooKeeper connections on `listeners` until `shutdown` turns true.
pub async fn serve(
    listeners: Listeners,
    frontend: Arc<Frontend>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(ZK_CONNECTIONS_MAX));
    let stats = Arc::new(Stats::new());
    let (tls_listener, tls_config) = listeners.tls.unzip();
    loop {
        let (accepted, tls) = tokio::select! {
            accepted = accept(listeners.plain.as_ref()) => (accepted, None),
            accepted = accept(tls_listener.as_ref()) => (accepted, tls_config.clone()),
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (socket, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "zookeeper front end: accept failed");
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "zookeeper connection refused: {ZK_CONNECTIONS_MAX} open");
            continue;
        };
        let id = stats.next_connection.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            remote,
            session: Mutex::new(None),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            last_code: std::sync::atomic::AtomicI32::new(code::OK),
            superseded: tokio::sync::Notify::new(),
        });
        {
            let mut open = stats.connections.lock().unwrap_or_else(PoisonError::into_inner);
            let from_ip = open.values().filter(|open| open.remote.ip() == remote.ip()).count();
            let per_ip = listeners.connections_per_ip;
            if per_ip > 0 && from_ip >= per_ip {
                tracing::warn!(%remote, "zookeeper connection refused: {per_ip} open from its address");
                continue;
            }
            open.insert(id, connection.clone());
        }
        let _ = socket.set_nodelay(true);
        let frontend = frontend.clone();
        let mut stop = shutdown.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _counted = crate::metrics::ConnectionGauge::open("zookeeper");
            let serving = async {
                let (read, write, principal): (ReadHalf, WriteHalf, _) = match tls {
                    None => {
                        let (read, write) = socket.into_split();
                        (Box::new(read), Box::new(write), Principal::Anonymous)
                    }
                    Some(config) => match tls_handshake(socket, config, remote).await {
                        Some(secured) => secured,
                        None => return,
                    },
                };
                let opened = Opened { frontend: &frontend, stats: &stats, id, principal };
                serve_connection(read, write, opened, connection).await;
            };
            tokio::select! {
                () = serving => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
            stats.connections.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            drop(permit);
        });
    }
}

/// Reads one frame: its 4-byte length, then that many bytes. `Ok(None)` at a clean end.
async fn read_frame(read: &mut ReadHalf) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    match read.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    read_body(read, length).await.map(Some)
}

/// Reads the body of a frame whose length came in `length`.
async fn read_body(read: &mut ReadHalf, length: [u8; 4]) -> std::io::Result<Vec<u8>> {
    let length = u32::from_be_bytes(length) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes, over jute.maxbuffer ({FRAME_BYTES_MAX})"),
        ));
    }
    let mut body = vec![0u8; length];
    read.read_exact(&mut body).await?;
    Ok(body)
}

/// The session a handshake opens or resumes, and its answer.
struct Handshake {
    session: SessionId,
    timeout_ms: u64,
    secret: u64,
}

/// A session's password as the client keeps it.
fn passwd(secret: u64) -> Vec<u8> {
    let mut passwd = secret.to_be_bytes().to_vec();
    passwd.resize(PASSWD_BYTES, 0);
    passwd
}

/// The secret a client's password carries, if it is one Cairn handed out.
fn secret_of(passwd: &[u8]) -> Option<u64> {
    if passwd.len() != PASSWD_BYTES || passwd[8..].iter().any(|byte| *byte != 0) {
        return None;
    }
    let mut secret = [0u8; 8];
    secret.copy_from_slice(&passwd[..8]);
    Some(u64::from_be_bytes(secret))
}

/// Opens or resumes the handshake's session, bound to `outbox`; `None` if it has expired (or
/// never was), which the client hears as a timeout of 0.
async fn handshake(
    frontend: &Frontend,
    connect: &ConnectRequest,
    principal: &Principal,
    outbox: &Outbox,
) -> Result<Option<Handshake>, ApiError> {
    if connect.session_id == 0 {
        // ZooKeeper bounds the timeout a client asks for rather than refusing it.
        let timeout_ms = u64::try_from(connect.timeout_ms)
            .unwrap_or(0)
            .clamp(ZK_SESSION_TIMEOUT_MS_MIN, ZK_SESSION_TIMEOUT_MS_MAX);
        let (_, reply) = open_session(frontend, None, principal, timeout_ms, outbox).await;
        return match reply? {
            Reply::Session { session_id, secret, timeout_ms } => {
                Ok(Some(Handshake { session: SessionId(session_id), timeout_ms, secret }))
            }
            other => Err(ApiError::new(ErrorCode::Internal)
                .with_detail(format!("open-session answered {other:?}"))),
        };
    }
    let Some(secret) = secret_of(&connect.passwd) else { return Ok(None) };
    let id = SessionId(connect.session_id as u64);
    let (_, reply) = resume_session(frontend, id, secret, principal, outbox).await;
    match reply {
        Ok(Reply::Session { session_id, secret, timeout_ms }) => {
            Ok(Some(Handshake { session: SessionId(session_id), timeout_ms, secret }))
        }
        Ok(other) => Err(ApiError::new(ErrorCode::Internal)
            .with_detail(format!("resume-session answered {other:?}"))),
        Err(error) if error.code == ErrorCode::SessionExpired => Ok(None),
        Err(error) => Err(error),
    }
}

/// A connection as it was accepted: what serves it, its number and who it speaks for.
struct Opened<'a> {
    frontend: &'a Frontend,
    stats: &'a Stats,
    id: u64,
    /// Anonymous, or the principal of a TLS client's certificate.
    principal: Principal,
}

async fn serve_connection(
    mut read: ReadHalf,
    mut write: WriteHalf,
    opened: Opened<'_>,
    connection: Arc<Connection>,
) {
    let Opened { frontend, stats, id, principal } = opened;
    let remote = connection.remote;
    let handshake_deadline = Duration::from_millis(ZK_HANDSHAKE_MS_MAX);
    let mut opening = [0u8; 4];
    match tokio::time::timeout(handshake_deadline, read.read_exact(&mut opening)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    // A four-letter word instead of a handshake: answer it, then close, as ZooKeeper does.
    if words::is_word(&opening) {
        let answer = words::answer(&opening, &stats.facts(frontend));
        let _ = write.write_all(answer.as_bytes()).await;
        let _ = write.shutdown().await;
        return;
    }
    if u32::from_be_bytes(opening) > ZK_HANDSHAKE_BYTES_MAX {
        tracing::debug!(%remote, "zookeeper handshake over {ZK_HANDSHAKE_BYTES_MAX} bytes");
        return;
    }
    let first = match tokio::time::timeout(handshake_deadline, read_body(&mut read, opening)).await
    {
        Ok(Ok(frame)) => frame,
        _ => return,
    };
    let Ok(connect) = ConnectRequest::decode(&first) else {
        tracing::debug!(%remote, "zookeeper handshake does not decode");
        return;
    };
    // A client that has seen a later state than this node's must not go back in time.
    let applied = frontend.cluster.applied_zxid();
    if connect.last_zxid_seen > applied.0 as i64 {
        tracing::info!(%remote, seen = connect.last_zxid_seen, %applied, "refusing a zookeeper client ahead of this node");
        return;
    }
    let (outbox, queue, load) = Outbox::new();
    let session = match handshake(frontend, &connect, &principal, &outbox).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            let answer = proto::connect_response(0, 0, &[0; PASSWD_BYTES], connect.read_only);
            let _ = write.write_all(&answer).await;
            return;
        }
        Err(error) => {
            tracing::info!(%remote, %error, "zookeeper handshake refused");
            return;
        }
    };
    let answer = proto::connect_response(
        session.timeout_ms as i32,
        session.session.0 as i64,
        &passwd(session.secret),
        connect.read_only,
    );
    if write.write_all(&answer).await.is_err() {
        frontend.watches.unbind(session.session, &outbox);
        return;
    }
    *connection.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(session.session);
    for (other, earlier) in stats.connections.lock().unwrap_or_else(PoisonError::into_inner).iter()
    {
        let same = *earlier.session.lock().unwrap_or_else(PoisonError::into_inner)
            == Some(session.session);
        if *other != id && same {
            earlier.superseded.notify_one();
        }
    }
    let writer = tokio::spawn(write_outgoing(
        write,
        queue,
        load.clone(),
        stats.sent.clone(),
        connection.clone(),
    ));
    let served = Served {
        frontend,
        stats,
        connection: &connection,
        load: &load,
        silence: Duration::from_millis(session.timeout_ms),
    };
    let closed = serve_requests(&mut read, &served, session.session, &principal, &outbox).await;
    if !closed {
        frontend.watches.unbind(session.session, &outbox);
    }
    drop(outbox);
    let _ = writer.await;
}

/// What a connection's requests are served with and counted in.
struct Served<'a> {
    frontend: &'a Frontend,
    stats: &'a Stats,
    connection: &'a Connection,
    /// How full the connection's outbox is.
    load: &'a OutboxLoad,
    /// How long the client may send nothing (its session's timeout; clients ping at a third
    /// of it) before the connection is closed, as ZooKeeper closes it.
    silence: Duration,
}

/// What `Connection::last_code` holds while a request has had no reply: the connection closed
/// without one (a frame that does not decode, a client that does not read). No ZooKeeper error
/// code is this low.
const NO_REPLY: i32 = i32::MIN;

impl Served<'_> {
    /// Queues a reply frame and keeps its error code (bytes 16..20: after the length, the xid
    /// and the zxid) for the request's metrics.
    fn reply(&self, outbox: &Outbox, frame: Vec<u8>) -> bool {
        if let Some(err) = frame.get(16..20).and_then(|b| b.try_into().ok()) {
            self.connection.last_code.store(i32::from_be_bytes(err), Ordering::Relaxed);
        }
        outbox.send_frame(frame)
    }
}

/// Serves requests in order until the client closes its session (true) or goes away (false).
async fn serve_requests(
    read: &mut ReadHalf,
    served: &Served<'_>,
    session: SessionId,
    principal: &Principal,
    outbox: &Outbox,
) -> bool {
    // A connection speaks for the identity it last proved (`auth`); its session stays the
    // principal's that opened it.
    let mut principal = principal.clone();
    loop {
        // A client that does not read its replies: read no more of its requests until it does,
        // and give up on it if it never does.
        if !served.load.wait_for_room().await {
            tracing::info!("closing a zookeeper connection whose client does not read");
            return false;
        }
        let next = tokio::select! {
            next = tokio::time::timeout(served.silence, read_frame(read)) => next,
            () = served.connection.superseded.notified() => {
                tracing::debug!("zookeeper session resumed on another connection; closing this one");
                return false;
            }
        };
        let frame = match next {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return false,
            Ok(Err(error)) => {
                tracing::debug!(%error, "zookeeper connection ends");
                return false;
            }
            Err(_) => {
                tracing::debug!("zookeeper client silent for its session timeout; closing");
                return false;
            }
        };
        served.stats.received.fetch_add(1, Ordering::Relaxed);
        served.connection.received.fetch_add(1, Ordering::Relaxed);
        served.stats.outstanding.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        served.connection.last_code.store(NO_REPLY, Ordering::Relaxed);
        let closed = serve_request(&frame, served, session, &principal, outbox).await;
        served.stats.outstanding.fetch_sub(1, Ordering::Relaxed);
        let took = started.elapsed();
        served.stats.served(took);
        let opcode = frame.get(4..8).and_then(|b| b.try_into().ok()).map_or(-1, i32::from_be_bytes);
        let outcome = match served.connection.last_code.load(Ordering::Relaxed) {
            NO_REPLY => "closed",
            err => proto::code_name(err),
        };
        crate::metrics::get().request("zookeeper", proto::op_name(opcode), outcome, took);
        match closed {
            Next::Continue => {}
            Next::Authenticated(proved) => principal = proved,
            Next::Closed => return true,
            Next::Lost => return false,
        }
    }
}

/// What the connection does after a request.
enum Next {
    Continue,
    /// Later requests speak for this principal.
    Authenticated(Principal),
    /// The client closed its session.
    Closed,
    /// The connection is no use any more.
    Lost,
}

/// Serves one request frame.
async fn serve_request(
    frame: &[u8],
    served: &Served<'_>,
    session: SessionId,
    principal: &Principal,
    outbox: &Outbox,
) -> Next {
    let frontend = served.frontend;
    {
        frontend.cluster.sessions.touch(session);
        let mut reader = Reader::new(frame);
        let (Ok(xid), Ok(opcode)) = (reader.int("xid"), reader.int("type")) else {
            return Next::Lost;
        };
        let request = match Request::decode(opcode, &mut reader) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(%error, "zookeeper request does not decode; closing");
                return Next::Lost;
            }
        };
        let zxid = || frontend.cluster.applied_zxid().0;
        match &request {
            Request::Ping => {
                served.reply(outbox, proto::bare_reply(xid, zxid(), code::OK));
                return Next::Continue;
            }
            // As ZooKeeper: the session's own watches hear of its ephemerals' deletion, then the
            // close is answered and the connection closed.
            Request::CloseSession => {
                served.connection.closing.store(true, Ordering::Relaxed);
                let write = Write {
                    session: Some(session),
                    principal: principal.clone(),
                    action: Action::CloseSession,
                };
                let (zxid, _) = propose(frontend, write).await;
                served.reply(outbox, proto::bare_reply(xid, zxid.0, code::OK));
                return Next::Closed;
            }
            Request::CheckWatches { path, kind, remove: false } => {
                let code = match translate::remove_kind(*kind) {
                    Some(kind) if frontend.watches.holds(session, path, kind) => code::OK,
                    Some(_) => code::NO_WATCHER,
                    None => code::BAD_ARGUMENTS,
                };
                served.reply(outbox, proto::bare_reply(xid, zxid(), code));
                return Next::Continue;
            }
            Request::Auth { scheme, auth } => {
                let proved = match scheme.as_str() {
                    "digest" => translate::digest_identity(auth),
                    _ => None,
                };
                let proved = proved.map(Principal::Digest).and_then(|principal| {
                    let state = frontend.cluster.state.read();
                    let reader = state.tree.caller(&principal).ok()?;
                    // Its watches hear from now on what the identity may read.
                    frontend.watches.speak_for(session, outbox, principal.clone(), reader);
                    Some(principal)
                });
                return match proved {
                    Some(principal) => {
                        served.reply(outbox, proto::bare_reply(xid, zxid(), code::OK));
                        Next::Authenticated(principal)
                    }
                    // ZooKeeper closes the connection after a failed auth; the session stays.
                    None => {
                        served.reply(outbox, proto::bare_reply(xid, zxid(), code::AUTH_FAILED));
                        Next::Lost
                    }
                };
            }
            // No SASL mechanism is offered: as a failed auth, and the connection closes.
            Request::Unimplemented { op: proto::op::SASL } => {
                served.reply(outbox, proto::bare_reply(xid, zxid(), code::AUTH_FAILED));
                return Next::Lost;
            }
            Request::GetAllChildrenNumber { path } => {
                let state = frontend.cluster.state.read();
                let zxid = state.applied_zxid().0;
                let counted = state
                    .tree
                    .caller(principal)
                    .and_then(|caller| state.tree.check_read(&caller, path))
                    .and_then(|()| state.tree.descendants(path));
                let frame = match counted {
                    Ok(count) => {
                        let mut writer = jute::Writer::new();
                        proto::reply_header(&mut writer, xid, zxid, code::OK);
                        writer.int(i32::try_from(count).unwrap_or(i32::MAX));
                        writer.framed()
                    }
                    Err(error) => proto::bare_reply(xid, zxid, proto::zk_code(error.code)),
                };
                served.reply(outbox, frame);
                return Next::Continue;
            }
            Request::GetEphemerals { prefix } => {
                let state = frontend.cluster.state.read();
                let zxid = state.applied_zxid().0;
                let mut paths: Vec<&String> = state
                    .tree
                    .ephemerals_of(session)
                    .filter(|p| p.starts_with(prefix.as_str()))
                    .collect();
                paths.sort();
                let mut writer = jute::Writer::new();
                proto::reply_header(&mut writer, xid, zxid, code::OK);
                writer.strings(&paths);
                served.reply(outbox, writer.framed());
                return Next::Continue;
            }
            Request::Sync { path } => {
                let frame = match frontend.cluster.linearize().await {
                    Ok(()) => {
                        let mut writer = jute::Writer::new();
                        proto::reply_header(&mut writer, xid, zxid(), code::OK);
                        writer.string(path);
                        writer.framed()
                    }
                    Err(error) => proto::bare_reply(xid, zxid(), proto::zk_code(error.code)),
                };
                served.reply(outbox, frame);
                return Next::Continue;
            }
            _ => {}
        }
        if let Some(code) = system::refused_write(&request) {
            served.reply(outbox, proto::bare_reply(xid, zxid(), code));
            return Next::Continue;
        }
        if let Some(reply) = system::read(&request) {
            let Some(_turn) = outbox.room_for_reply().await else { return Next::Lost };
            served.reply(outbox, translate::reply_frame(xid, zxid(), &request, reply));
            return Next::Continue;
        }
        match translate::plan(&request) {
            Plan::Refuse(code) => {
                served.reply(outbox, proto::bare_reply(xid, zxid(), code));
            }
            Plan::Write(action) => {
                let write = Write { session: Some(session), principal: principal.clone(), action };
                let (zxid, reply) = propose(frontend, write).await;
                // Reads after this write are served here: wait to have applied it. A node that
                // cannot catch up drops the client, which reconnects (elsewhere, if need be),
                // rather than answer with a state that may not show the write.
                if let Err(error) =
                    crate::cluster::wait_applied(&frontend.cluster.raft, zxid.0).await
                {
                    tracing::warn!(%error, "zookeeper client's write not applied here; closing");
                    return Next::Lost;
                }
                let Some(_turn) = outbox.room_for_reply().await else { return Next::Lost };
                served.reply(outbox, translate::reply_frame(xid, zxid.0, &request, reply));
            }
            Plan::Reads(reads) => {
                let Some(_turn) = outbox.room_for_reply().await else { return Next::Lost };
                let state = frontend.cluster.state.read();
                let zxid = state.applied_zxid();
                let caller = match state.tree.caller(principal) {
                    Ok(caller) => caller,
                    Err(error) => {
                        served.reply(
                            outbox,
                            proto::bare_reply(xid, zxid.0, proto::zk_code(error.code)),
                        );
                        return Next::Continue;
                    }
                };
                // The reply is bounded as a frame is: past it, the multiRead is refused (a
                // client would refuse so large a reply anyway).
                let mut replies = Vec::with_capacity(reads.len());
                let mut bytes = 0usize;
                for read in &reads {
                    let reply =
                        frontend.local_reply(&state.tree, read, Some(session), &caller, zxid);
                    bytes += match &reply {
                        Ok(cairn_wire::Reply::Data { data, .. }) => data.len() + 80,
                        Ok(cairn_wire::Reply::Children { children, .. }) => {
                            children.iter().map(|child| child.name.len() + 4).sum::<usize>() + 12
                        }
                        _ => 12,
                    };
                    if bytes > FRAME_BYTES_MAX {
                        served.reply(outbox, proto::bare_reply(xid, zxid.0, code::BAD_ARGUMENTS));
                        return Next::Continue;
                    }
                    replies.push(reply);
                }
                served.reply(outbox, translate::multi_read_frame(xid, zxid.0, replies));
            }
            Plan::Read(cairn_request) => {
                let Some(_turn) = outbox.room_for_reply().await else { return Next::Lost };
                // Under the state's lock, so no event of a later change overtakes the reply.
                let state = frontend.cluster.state.read();
                let zxid = state.applied_zxid();
                let reply = state.tree.caller(principal).and_then(|caller| {
                    let read = &cairn_request;
                    let mut reply =
                        frontend.local_reply(&state.tree, read, Some(session), &caller, zxid)?;
                    as_zookeeper_shows(&request, &mut reply, &caller, &state.tree);
                    Ok(reply)
                });
                served.reply(outbox, translate::reply_frame(xid, zxid.0, &request, reply));
            }
        }
    }
    Next::Continue
}

/// A read's answer as a ZooKeeper server shows it: digest hashes only to who may administer
/// the znode, and `zookeeper` among the root's children.
fn as_zookeeper_shows(request: &Request, reply: &mut Reply, caller: &Caller, tree: &DataTree) {
    if let Reply::Acl { acl, .. } = reply
        && !caller.allows(acl, cairn_wire::access::ADMIN)
    {
        translate::redact_digests(acl);
    }
    system::with_root_child(request, reply, tree.node("/zookeeper").is_some());
}

/// Proposes `write` and waits for it to be applied.
async fn propose(frontend: &Frontend, write: Write) -> (Zxid, Result<Reply, ApiError>) {
    match frontend.cluster.propose(write).await {
        Ok(applied) => applied.await,
        Err(error) => (frontend.cluster.applied_zxid(), Err(error)),
    }
}

/// Writes replies and events, in the order they were queued, until the outbox is dropped;
/// counts them in `sent` (the front end's) and in the connection's.
async fn write_outgoing(
    mut write: WriteHalf,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    load: Arc<OutboxLoad>,
    sent: Arc<AtomicU64>,
    connection: Arc<Connection>,
) {
    while let Some(outgoing) = queue.recv().await {
        // The session ended, or its watches were dropped (this connection fell too far
        // behind): close, so the client reconnects and learns which (an expired session, or
        // its watches set again).
        if let Outgoing::Event(event) = &outgoing
            && matches!(event.kind, EventKind::SessionExpired | EventKind::ResyncNeeded)
        {
            let closing = connection.closing.load(Ordering::Relaxed);
            if !(closing && event.kind == EventKind::SessionExpired) {
                break;
            }
        }
        let (bytes, is_event) = (outgoing.bytes(), matches!(outgoing, Outgoing::Event(_)));
        let frame = match outgoing {
            Outgoing::Frame(frame) => Some(frame),
            Outgoing::Event(event) => translate::event_type(event.kind)
                .map(|kind| proto::watcher_event(event.zxid, kind, &event.path)),
        };
        let written = match frame {
            Some(frame) => {
                sent.fetch_add(1, Ordering::Relaxed);
                connection.sent.fetch_add(1, Ordering::Relaxed);
                write.write_all(&frame).await.is_ok()
            }
            None => true,
        };
        load.written(bytes, is_event);
        if !written {
            return;
        }
    }
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::proto::op;
    use super::*;

    #[test]
    fn a_password_carries_the_secret_and_nothing_else_passes() {
        let passwd = passwd(0x0102_0304_0506_0708);
        assert_eq!(passwd.len(), PASSWD_BYTES);
        assert_eq!(secret_of(&passwd), Some(0x0102_0304_0506_0708));
        assert_eq!(secret_of(&passwd[..8]), None, "too short");
        let mut forged = passwd.clone();
        forged[15] = 1;
        assert_eq!(secret_of(&forged), None, "not one Cairn handed out");
    }

    #[test]
    fn an_opcode_cairn_does_not_serve_is_unimplemented_and_reconfig_is_disabled() {
        assert_eq!(
            translate::plan(&Request::Unimplemented { op: op::SASL }),
            Plan::Refuse(code::UNIMPLEMENTED)
        );
        assert_eq!(
            translate::plan(&Request::Unimplemented { op: op::RECONFIG }),
            Plan::Refuse(code::RECONFIG_DISABLED)
        );
    }
}
